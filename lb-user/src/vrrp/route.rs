//! Virtual routes (`virtual_routes`), added and removed with the virtual
//! addresses, through rtnetlink (`RTM_NEWROUTE` / `RTM_DELROUTE`).

use std::net::IpAddr;

use netlink_packet_route::route::{RouteFlag, RouteMessage, RouteScope, RouteType};

use crate::config::route::{RouteKind, VirtualRoute};

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
