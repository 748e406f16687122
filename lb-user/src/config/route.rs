//! `virtual_routes { … }` and `virtual_rules { … }` of a `vrrp_instance`:
//! routes and policy-routing rules the master adds with its virtual
//! addresses and removes when it leaves MASTER (keepalived.conf(5)).
//!
//! One route per line, in `ip route`'s words: `[src ADDR] [TYPE] [to]
//! PREFIX [via|gw ADDR] [dev IFNAME] [scope SCOPE] [table ID]
//! [metric|preference|priority N] [onlink] [no_track]`, where TYPE is
//! `blackhole`, `unreachable` or `prohibit`. The other attributes
//! keepalived passes to the kernel (`mtu`, `advmss`, `realms`, `nexthop`,
//! …) are located errors here, never dropped silently.

use std::net::IpAddr;

use super::{syntax::Node, Diag, Loc};

/// The kind of a route (rtnetlink `RTN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
}

/// One virtual route. Addresses are of the destination's family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualRoute {
    pub kind: RouteKind,
    pub dest: IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
    /// Preferred source address (`src`).
    pub src: Option<IpAddr>,
    /// Gateway (`via` / `gw`).
    pub via: Option<IpAddr>,
    /// Output interface; `None`: the instance's interface for a unicast
    /// route without a gateway, none otherwise.
    pub dev: Option<String>,
    /// `RT_SCOPE_*` value; `None`: the kernel's choice.
    pub scope: Option<u8>,
    /// Routing table id (`main` = 254).
    pub table: Option<u32>,
    pub metric: Option<u32>,
    pub onlink: bool,
    pub loc: Loc,
}

/// Reads one line of a `virtual_routes` block.
pub fn route(c: &Node, diags: &mut Vec<Diag>) -> Option<VirtualRoute> {
    let words: Vec<&str> = std::iter::once(c.keyword.as_str())
        .chain(c.args.iter().map(String::as_str))
        .collect();
    let err = |diags: &mut Vec<Diag>, msg: String| {
        diags.push(Diag::error(&c.loc, Some("virtual_routes"), msg));
        None
    };
    if c.children.is_some() {
        return err(diags, "a route takes no '{ … }' block".into());
    }
    let mut kind = RouteKind::Unicast;
    let (mut dest, mut src, mut via, mut dev) = (None, None, None, None);
    let (mut scope, mut table, mut metric, mut onlink) = (None, None, None, false);
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let value = words.get(i + 1).copied();
        let need = |diags: &mut Vec<Diag>| {
            if value.is_none() {
                diags.push(Diag::error(
                    &c.loc,
                    Some("virtual_routes"),
                    format!("'{w}' needs a value"),
                ));
            }
            value
        };
        let addr = |diags: &mut Vec<Diag>| -> Option<IpAddr> {
            let v = need(diags)?;
            match v.parse() {
                Ok(a) => Some(a),
                Err(_) => {
                    diags.push(Diag::error(
                        &c.loc,
                        Some("virtual_routes"),
                        format!("'{w}': invalid address '{v}'"),
                    ));
                    None
                }
            }
        };
        let number = |diags: &mut Vec<Diag>| -> Option<u32> {
            let v = need(diags)?;
            match v.parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    diags.push(Diag::error(
                        &c.loc,
                        Some("virtual_routes"),
                        format!("'{w}': '{v}' is not a number (0-4294967295)"),
                    ));
                    None
                }
            }
        };
        let mut step = 2;
        match w {
            "src" => src = Some(addr(diags)?),
            "via" | "gw" => via = Some(addr(diags)?),
            "dev" | "oif" => dev = Some(need(diags)?.to_string()),
            "metric" | "preference" | "priority" => metric = Some(number(diags)?),
            "table" => {
                table = Some(match need(diags)? {
                    "main" => 254,
                    "local" => 255,
                    "default" => 253,
                    _ => number(diags)?,
                })
            }
            "scope" => {
                scope = Some(match need(diags)? {
                    "global" | "universe" => 0,
                    "site" => 200,
                    "link" => 253,
                    "host" => 254,
                    "nowhere" => 255,
                    v => return err(diags, format!("unknown scope '{v}'")),
                })
            }
            "onlink" => {
                onlink = true;
                step = 1;
            }
            "no_track" => step = 1,
            "blackhole" | "unreachable" | "prohibit" if dest.is_none() => {
                kind = match w {
                    "blackhole" => RouteKind::Blackhole,
                    "unreachable" => RouteKind::Unreachable,
                    _ => RouteKind::Prohibit,
                };
                step = 1;
            }
            "to" if dest.is_none() => step = 1,
            _ if dest.is_none() => {
                match prefix(w) {
                    Some(p) => dest = Some(p),
                    None => {
                        return err(diags, format!("'{w}': expected a destination ADDRESS[/PREFIX]"))
                    }
                }
                step = 1;
            }
            _ => {
                return err(
                    diags,
                    format!("route option '{w}' is not supported (supported: src, via, dev, scope, table, metric, onlink, no_track)"),
                )
            }
        }
        i += step;
    }
    let Some((dest, prefix)) = dest else {
        return err(diags, "missing destination".into());
    };
    for (what, a) in [("src", src), ("via", via)] {
        if a.is_some_and(|a| a.is_ipv4() != dest.is_ipv4()) {
            return err(
                diags,
                format!("'{what}' is not of the destination's address family"),
            );
        }
    }
    if kind != RouteKind::Unicast && (via.is_some() || dev.is_some()) {
        return err(
            diags,
            "a blackhole / unreachable / prohibit route takes no 'via' or 'dev'".into(),
        );
    }
    Some(VirtualRoute {
        kind,
        dest,
        prefix,
        src,
        via,
        dev,
        scope,
        table,
        metric,
        onlink,
        loc: c.loc.clone(),
    })
}

/// What a rule does (rtnetlink `FR_ACT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Look up the rule's table (`table ID`).
    Table,
    Blackhole,
    Unreachable,
    Prohibit,
}

/// One virtual rule, in `ip rule`'s words: `[from PREFIX] [to PREFIX]
/// [table ID | blackhole | unreachable | prohibit] [priority|preference|pref N]
/// [iif IFNAME] [oif IFNAME] [fwmark N] [tos N] [no_track]`. `goto`, `nop`,
/// masks and the other selectors are located errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualRule {
    pub from: Option<(IpAddr, u8)>,
    pub to: Option<(IpAddr, u8)>,
    pub action: RuleAction,
    /// Table id for [`RuleAction::Table`] (`main` = 254).
    pub table: u32,
    pub priority: Option<u32>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub fwmark: Option<u32>,
    pub tos: Option<u8>,
    /// IPv6 rule (from `from` / `to`; a rule with neither is IPv4).
    pub v6: bool,
    pub loc: Loc,
}

/// The preference keepalived gives a rule that names none.
pub const DEFAULT_RULE_PRIORITY: u32 = 16384;

/// Reads one line of a `virtual_rules` block.
pub fn rule(c: &Node, diags: &mut Vec<Diag>) -> Option<VirtualRule> {
    let words: Vec<&str> = std::iter::once(c.keyword.as_str())
        .chain(c.args.iter().map(String::as_str))
        .collect();
    let err = |diags: &mut Vec<Diag>, msg: String| {
        diags.push(Diag::error(&c.loc, Some("virtual_rules"), msg));
        None
    };
    if c.children.is_some() {
        return err(diags, "a rule takes no '{ … }' block".into());
    }
    let mut r = VirtualRule {
        from: None,
        to: None,
        action: RuleAction::Table,
        table: 254,
        priority: None,
        iif: None,
        oif: None,
        fwmark: None,
        tos: None,
        v6: false,
        loc: c.loc.clone(),
    };
    let mut has_table = false;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let v = match words.get(i + 1) {
            Some(v) => *v,
            None => match w {
                "no_track" | "blackhole" | "unreachable" | "prohibit" => "",
                _ => return err(diags, format!("'{w}' needs a value")),
            },
        };
        let num = |diags: &mut Vec<Diag>, max: u64| -> Option<u64> {
            match v.parse::<u64>() {
                Ok(n) if n <= max => Some(n),
                _ => {
                    diags.push(Diag::error(
                        &c.loc,
                        Some("virtual_rules"),
                        format!("'{w}': '{v}' is not a number (0-{max})"),
                    ));
                    None
                }
            }
        };
        let mut step = 2;
        match w {
            "from" | "to" => {
                let p = if v == "all" {
                    None
                } else {
                    match prefix(v) {
                        Some(p) => Some(p),
                        None => return err(diags, format!("'{w}': expected ADDRESS[/PREFIX] or all, not '{v}'")),
                    }
                };
                if w == "from" {
                    r.from = p;
                } else {
                    r.to = p;
                }
            }
            "table" | "lookup" => {
                has_table = true;
                r.table = match v {
                    "main" => 254,
                    "local" => 255,
                    "default" => 253,
                    _ => num(diags, u64::from(u32::MAX))? as u32,
                }
            }
            "priority" | "preference" | "pref" => r.priority = Some(num(diags, u64::from(u32::MAX))? as u32),
            "iif" => r.iif = Some(v.to_string()),
            "oif" => r.oif = Some(v.to_string()),
            "fwmark" => r.fwmark = Some(num(diags, u64::from(u32::MAX))? as u32),
            "tos" | "dsfield" => r.tos = Some(num(diags, 255)? as u8),
            "blackhole" | "unreachable" | "prohibit" => {
                r.action = match w {
                    "blackhole" => RuleAction::Blackhole,
                    "unreachable" => RuleAction::Unreachable,
                    _ => RuleAction::Prohibit,
                };
                step = 1;
            }
            "no_track" => step = 1,
            _ => {
                return err(
                    diags,
                    format!("rule option '{w}' is not supported (supported: from, to, table, priority, iif, oif, fwmark, tos, blackhole, unreachable, prohibit, no_track)"),
                )
            }
        }
        i += step;
    }
    let fams: Vec<bool> = [r.from, r.to]
        .iter()
        .flatten()
        .map(|(a, _)| a.is_ipv6())
        .collect();
    if fams.windows(2).any(|f| f[0] != f[1]) {
        return err(
            diags,
            "'from' and 'to' are of different address families".into(),
        );
    }
    r.v6 = fams.first().copied().unwrap_or(false);
    if has_table && r.action != RuleAction::Table {
        return err(
            diags,
            "a blackhole / unreachable / prohibit rule takes no table".into(),
        );
    }
    if r.priority.is_none() {
        // keepalived (vrrp_iprule.c) gives a rule without one this
        // preference rather than leaving the kernel to choose.
        diags.push(Diag::warning(
            &c.loc,
            Some("virtual_rules"),
            format!("no priority given; using {DEFAULT_RULE_PRIORITY}, as keepalived"),
        ));
        r.priority = Some(DEFAULT_RULE_PRIORITY);
    }
    Some(r)
}

/// `ADDR[/PREFIX]` or `default`, as `ip route` reads a destination.
fn prefix(s: &str) -> Option<(IpAddr, u8)> {
    if s == "default" {
        return Some(("0.0.0.0".parse().ok()?, 0));
    }
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let p = match p {
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
        None => max,
    };
    Some((addr, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> (Option<VirtualRoute>, Vec<String>) {
        let text = format!("virtual_routes {{\n {line}\n}}\n");
        let mut d = Vec::new();
        let nodes = crate::config::syntax::parse_str(&text, std::path::Path::new("r.conf"), &mut d);
        let r = route(&nodes.nodes[0].children.as_ref().unwrap()[0], &mut d);
        (r, d.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn routes_in_ip_route_words() {
        let (r, d) =
            parse("src 10.0.0.100 to 10.99.0.0/24 via 10.0.0.1 dev eth0 table 100 metric 5");
        assert!(d.is_empty(), "{d:?}");
        let r = r.unwrap();
        assert_eq!(
            (
                r.dest.to_string(),
                r.prefix,
                r.src,
                r.via,
                r.dev.as_deref(),
                r.table,
                r.metric
            ),
            (
                "10.99.0.0".into(),
                24,
                "10.0.0.100".parse().ok(),
                "10.0.0.1".parse().ok(),
                Some("eth0"),
                Some(100),
                Some(5)
            )
        );
        let (r, d) = parse("blackhole 2001:db8:9::/48 table main");
        assert!(d.is_empty(), "{d:?}");
        let r = r.unwrap();
        assert_eq!(
            (r.kind, r.prefix, r.table),
            (RouteKind::Blackhole, 48, Some(254))
        );
        let (r, _) = parse("10.1.2.3 dev eth1 scope link onlink no_track");
        let r = r.unwrap();
        assert_eq!((r.prefix, r.scope, r.onlink), (32, Some(253), true));
    }

    fn parse_rule(line: &str) -> (Option<VirtualRule>, Vec<String>) {
        let text = format!("virtual_rules {{\n {line}\n}}\n");
        let mut d = Vec::new();
        let nodes = crate::config::syntax::parse_str(&text, std::path::Path::new("r.conf"), &mut d);
        let r = rule(&nodes.nodes[0].children.as_ref().unwrap()[0], &mut d);
        (r, d.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn rules_in_ip_rule_words() {
        let (r, d) = parse_rule(
            "from 10.0.0.100/32 to 10.99.0.0/24 table 100 priority 1000 iif eth0 fwmark 3 tos 16",
        );
        assert!(d.is_empty(), "{d:?}");
        let r = r.unwrap();
        assert_eq!(
            (
                r.from,
                r.to.map(|t| t.1),
                r.table,
                r.priority,
                r.iif.as_deref(),
                r.fwmark,
                r.tos,
                r.v6
            ),
            (
                Some(("10.0.0.100".parse().unwrap(), 32)),
                Some(24),
                100,
                Some(1000),
                Some("eth0"),
                Some(3),
                Some(16),
                false
            )
        );
        let (r, d) = parse_rule("to 2001:db8::/32 prohibit no_track");
        assert_eq!(
            d,
            ["r.conf:2:2: warning: virtual_rules: no priority given; using 16384, as keepalived"]
        );
        let r = r.unwrap();
        assert_eq!(
            (r.action, r.v6, r.priority),
            (RuleAction::Prohibit, true, Some(16384))
        );
        for (line, want) in [
            (
                "from 10.0.0.1 goto 5",
                "rule option 'goto' is not supported",
            ),
            ("from 10.0.0.1 to 2001:db8::1", "different address families"),
            (
                "from 10.0.0.1 tos 300",
                "'tos': '300' is not a number (0-255)",
            ),
            ("from 10.0.0.1 table", "'table' needs a value"),
            ("blackhole table 5", "takes no table"),
        ] {
            let (r, d) = parse_rule(line);
            assert!(r.is_none(), "{line}");
            assert_eq!(d.len(), 1, "{line}: {d:?}");
            assert!(
                d[0].starts_with("r.conf:2:2: error: virtual_rules: ") && d[0].contains(want),
                "{line}: {d:?}"
            );
        }
    }

    #[test]
    fn route_mistakes_are_located_errors() {
        for (line, want) in [
            (
                "10.99.0.0/24 mtu 1400",
                "route option 'mtu' is not supported",
            ),
            ("10.99.0.0/33", "expected a destination"),
            (
                "10.99.0.0/24 via 2001:db8::1",
                "'via' is not of the destination's address family",
            ),
            ("10.99.0.0/24 metric x", "'metric': 'x' is not a number"),
            ("10.99.0.0/24 via", "'via' needs a value"),
            ("blackhole 10.99.0.0/24 dev eth0", "takes no 'via' or 'dev'"),
            ("src 10.0.0.1", "missing destination"),
        ] {
            let (r, d) = parse(line);
            assert!(r.is_none(), "{line}");
            assert_eq!(d.len(), 1, "{line}: {d:?}");
            assert!(
                d[0].starts_with("r.conf:2:2: error: virtual_routes: "),
                "{d:?}"
            );
            assert!(d[0].contains(want), "{line}: {d:?}");
        }
    }
}
