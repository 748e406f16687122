//! Virtual routes and rules (`virtual_routes`, `virtual_rules`), added and
//! removed with the virtual addresses, through rtnetlink (`RTM_NEWROUTE` /
//! `RTM_DELROUTE`, `RTM_NEWRULE` / `RTM_DELRULE`).

use std::net::IpAddr;

use netlink_packet_route::{
    route::{RouteFlag, RouteMessage, RouteScope, RouteType},
    rule::{self, RuleAttribute, RuleMessage},
    AddressFamily,
};

use crate::config::route::{RouteKind, RuleAction, VirtualRoute, VirtualRule};

/// `RT_TABLE_COMPAT`: the header's table when the id needs the attribute.
const TABLE_COMPAT: u8 = 252;

/// `RT_SCOPE_LINK`: what `ip route` gives a route through a device without
/// a gateway.
const SCOPE_LINK: u8 = 253;

/// A route the kernel refused to add or remove.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("adding the route to {dest}/{prefix} ({at})")]
    Add {
        dest: IpAddr,
        prefix: u8,
        at: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("removing the route to {dest}/{prefix} ({at})")]
    Del {
        dest: IpAddr,
        prefix: u8,
        at: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// A rule the kernel refused to add or remove.
#[derive(Debug, thiserror::Error)]
#[error("{what} the rule at {at}")]
pub struct RuleError {
    what: &'static str,
    at: String,
    #[source]
    source: rtnetlink::Error,
}

/// The rule as the kernel gets it.
fn rule_message(r: &VirtualRule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = if r.v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.action = match r.action {
        RuleAction::Table => rule::RuleAction::ToTable,
        RuleAction::Blackhole => rule::RuleAction::Blackhole,
        RuleAction::Unreachable => rule::RuleAction::Unreachable,
        RuleAction::Prohibit => rule::RuleAction::Prohibit,
    };
    if r.action == RuleAction::Table {
        match u8::try_from(r.table) {
            Ok(t) if t != TABLE_COMPAT => m.header.table = t,
            _ => {
                m.header.table = TABLE_COMPAT;
                m.attributes.push(RuleAttribute::Table(r.table));
            }
        }
    }
    m.header.tos = r.tos.unwrap_or(0);
    if let Some((a, p)) = r.from {
        m.header.src_len = p;
        m.attributes.push(RuleAttribute::Source(a));
    }
    if let Some((a, p)) = r.to {
        m.header.dst_len = p;
        m.attributes.push(RuleAttribute::Destination(a));
    }
    if let Some(p) = r.priority {
        m.attributes.push(RuleAttribute::Priority(p));
    }
    if let Some(i) = &r.iif {
        m.attributes.push(RuleAttribute::Iifname(i.clone()));
    }
    if let Some(o) = &r.oif {
        m.attributes.push(RuleAttribute::Oifname(o.clone()));
    }
    if let Some(f) = r.fwmark {
        m.attributes.push(RuleAttribute::FwMark(f));
    }
    m
}

/// Adds rule `r`; one already there (`EEXIST`, e.g. left by an agent that
/// was killed) is kept.
pub async fn add_rule(nl: &rtnetlink::Handle, r: &VirtualRule) -> Result<(), RuleError> {
    let mut q = nl.rule().add();
    *q.message_mut() = rule_message(r);
    match q.execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
        other => other.map_err(|source| RuleError {
            what: "adding",
            at: r.loc.to_string(),
            source,
        }),
    }
}

/// Removes rule `r`; a rule already gone (`ENOENT`) is not an error.
pub async fn del_rule(nl: &rtnetlink::Handle, r: &VirtualRule) -> Result<(), RuleError> {
    match nl.rule().del(rule_message(r)).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT => Ok(()),
        other => other.map_err(|source| RuleError {
            what: "removing",
            at: r.loc.to_string(),
            source,
        }),
    }
}

/// The route as the kernel gets it; `oif`: the resolved output interface.
fn message(nl: &rtnetlink::Handle, r: &VirtualRoute, oif: Option<u32>) -> RouteMessage {
    let mut q = nl.route().add();
    if let Some(i) = oif {
        q = q.output_interface(i);
    }
    if let Some(m) = r.metric {
        q = q.priority(m);
    }
    if let Some(t) = r.table {
        q = q.table_id(t);
    }
    let scope = r
        .scope
        .unwrap_or(if r.kind == RouteKind::Unicast && r.via.is_none() {
            SCOPE_LINK
        } else {
            0
        });
    q = q.scope(RouteScope::from(scope)).kind(match r.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Unreachable => RouteType::Unreachable,
        RouteKind::Prohibit => RouteType::Prohibit,
    });
    let mut msg = match r.dest {
        IpAddr::V4(d) => {
            let mut q = q.v4().destination_prefix(d, r.prefix);
            if let Some(IpAddr::V4(g)) = r.via {
                q = q.gateway(g);
            }
            if let Some(IpAddr::V4(s)) = r.src {
                q = q.pref_source(s);
            }
            q.message_mut().clone()
        }
        IpAddr::V6(d) => {
            let mut q = q.v6().destination_prefix(d, r.prefix);
            if let Some(IpAddr::V6(g)) = r.via {
                q = q.gateway(g);
            }
            if let Some(IpAddr::V6(s)) = r.src {
                q = q.pref_source(s);
            }
            q.message_mut().clone()
        }
    };
    if r.onlink {
        msg.header.flags.push(RouteFlag::Onlink);
    }
    msg
}

/// Adds (or replaces) route `r` through `oif`.
pub async fn add(nl: &rtnetlink::Handle, r: &VirtualRoute, oif: Option<u32>) -> Result<(), Error> {
    let mut q = nl.route().add().replace();
    *q.message_mut() = message(nl, r, oif);
    q.execute().await.map_err(|source| Error::Add {
        dest: r.dest,
        prefix: r.prefix,
        at: r.loc.to_string(),
        source,
    })
}

/// Removes route `r`; a route already gone (`ESRCH`) is not an error.
pub async fn del(nl: &rtnetlink::Handle, r: &VirtualRoute, oif: Option<u32>) -> Result<(), Error> {
    match nl.route().del(message(nl, r, oif)).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
        other => other.map_err(|source| Error::Del {
            dest: r.dest,
            prefix: r.prefix,
            at: r.loc.to_string(),
            source,
        }),
    }
}
