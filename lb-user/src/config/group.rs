//! `virtual_server_group NAME { … }` and `virtual_server group NAME { … }`:
//! one virtual server block applied to several VIP:port pairs.
//!
//! keepalived.conf(5): a group lists `ADDR PORT` lines, address ranges
//! `A.B.C.D-E PORT` (the last IPv4 byte, or the last 16-bit group of an IPv6
//! address in hex, both ends included) and `fwmark N` lines. Every
//! `virtual_server group NAME` block is then applied to each member, as
//! ipvs gets one service per member from keepalived. Firewall marks are set
//! by netfilter, after XDP has seen the packet, so an XDP data plane cannot
//! select a service by mark: `fwmark` members are an error naming that
//! reason rather than a service silently missing.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{
    syntax::Node,
    value::{block, errors},
    Diag,
};

/// Most addresses one range line may name (a /24's worth): the data plane
/// holds `lb_common::MAX_SERVICES` services in all, and every member of a
/// group is a service of its own.
pub const MAX_RANGE: u32 = 256;

/// The members of one group, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub members: Vec<(IpAddr, u16)>,
}

/// Every `virtual_server_group` of the file, by name; a group with an error
/// is left out (its users then report it missing).
pub fn groups(nodes: &[Node], diags: &mut Vec<Diag>) -> BTreeMap<String, Group> {
    let mut out: BTreeMap<String, Group> = BTreeMap::new();
    for n in nodes.iter().filter(|n| n.keyword == "virtual_server_group") {
        let before = errors(diags);
        let Some(name) = n.args.first() else {
            diags.push(Diag::error(
                &n.loc,
                Some("virtual_server_group"),
                "missing group name",
            ));
            continue;
        };
        if n.args.len() > 1 {
            diags.push(Diag::error(
                &n.loc,
                Some("virtual_server_group"),
                "one name expected before '{'",
            ));
        }
        let mut members = Vec::new();
        for m in block(n, diags) {
            member(m, &mut members, diags);
        }
        if members.is_empty() && errors(diags) == before {
            diags.push(Diag::warning(
                &n.loc,
                Some("virtual_server_group"),
                format!("group '{name}' has no members; its virtual servers serve nothing"),
            ));
        }
        if out.contains_key(name) {
            diags.push(Diag::error(
                &n.loc,
                Some("virtual_server_group"),
                format!("'{name}' is defined twice"),
            ));
        } else if errors(diags) == before {
            out.insert(name.clone(), Group { members });
        }
    }
    out
}

/// One line of a group: `ADDR PORT`, `ADDR-END PORT` or `fwmark N`.
fn member(m: &Node, out: &mut Vec<(IpAddr, u16)>, diags: &mut Vec<Diag>) {
    if m.keyword == "fwmark" {
        diags.push(Diag::error(
            &m.loc,
            Some("fwmark"),
            "firewall-mark services are not supported: netfilter sets the mark after the XDP \
             program has chosen the service; list the VIP:port pairs instead",
        ));
        return;
    }
    if m.children.is_some() {
        diags.push(Diag::error(
            &m.loc,
            Some(&m.keyword),
            "a group member takes no '{ … }' block",
        ));
        return;
    }
    let port = match m.args.as_slice() {
        [p] => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => {
                diags.push(Diag::error(
                    &m.loc,
                    Some(&m.keyword),
                    format!("invalid port '{p}' (0-65535)"),
                ));
                return;
            }
        },
        [] => {
            diags.push(Diag::error(&m.loc, Some(&m.keyword), "missing port"));
            return;
        }
        _ => {
            diags.push(Diag::error(
                &m.loc,
                Some(&m.keyword),
                "expected ADDRESS[-LAST] PORT",
            ));
            return;
        }
    };
    match range(&m.keyword) {
        Ok(addrs) => out.extend(addrs.into_iter().map(|a| (a, port))),
        Err(why) => diags.push(Diag::error(&m.loc, Some(&m.keyword), why.to_string())),
    }
}

/// What is wrong with an address range ([`range`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum RangeError {
    #[error("invalid address '{text}'")]
    Address {
        text: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("range end '{end}' must be {radix}")]
    End { end: String, radix: &'static str },
    #[error("range end {end} is below its start {start}")]
    Reversed { start: u32, end: u32 },
    #[error("range of {count} addresses; at most {MAX_RANGE} per line")]
    TooLong { count: u32 },
}

/// `A.B.C.D`, `A.B.C.D-E` (last byte, decimal) or `X::Y-Z` (last group, hex).
fn range(s: &str) -> Result<Vec<IpAddr>, RangeError> {
    let (first, last) = match s.rsplit_once('-') {
        Some((a, e)) => (a, Some(e)),
        None => (s, None),
    };
    let addr: IpAddr = first.parse().map_err(|source| RangeError::Address {
        text: first.to_owned(),
        source,
    })?;
    let Some(end) = last else {
        return Ok(vec![addr]);
    };
    let (start, end_value, radix) = match addr {
        IpAddr::V4(a) => (
            u32::from(a.octets()[3]),
            end.parse::<u32>().ok().filter(|e| *e <= 255),
            "a decimal byte",
        ),
        IpAddr::V6(a) => (
            u32::from(a.segments()[7]),
            u32::from_str_radix(end, 16).ok().filter(|e| *e <= 0xffff),
            "a hexadecimal 16-bit group",
        ),
    };
    let end = end_value.ok_or_else(|| RangeError::End {
        end: end.to_owned(),
        radix,
    })?;
    if end < start {
        return Err(RangeError::Reversed { start, end });
    }
    if end - start + 1 > MAX_RANGE {
        return Err(RangeError::TooLong {
            count: end - start + 1,
        });
    }
    Ok((start..=end)
        .map(|v| match addr {
            IpAddr::V4(a) => {
                let o = a.octets();
                IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], v as u8))
            }
            IpAddr::V6(a) => {
                let mut g = a.segments();
                g[7] = v as u16;
                IpAddr::V6(Ipv6Addr::from(g))
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_include_both_ends() {
        let r = range("192.168.200.1-3").unwrap();
        assert_eq!(
            r,
            ["192.168.200.1", "192.168.200.2", "192.168.200.3"]
                .map(|a| a.parse::<IpAddr>().unwrap())
        );
        let r = range("2001:db8::a-c").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[2], "2001:db8::c".parse::<IpAddr>().unwrap());
        assert_eq!(range("10.0.0.9").unwrap().len(), 1);
        assert!(range("10.0.0.9-3")
            .unwrap_err()
            .to_string()
            .contains("below its start"));
        assert!(range("10.0.0.1-256")
            .unwrap_err()
            .to_string()
            .contains("decimal byte"));
        assert!(range("2001:db8::1-1ffff")
            .unwrap_err()
            .to_string()
            .contains("hexadecimal"));
        assert!(range("2001:db8::0-ffff")
            .unwrap_err()
            .to_string()
            .contains("at most 256"));
        assert!(range("10.0.0.x")
            .unwrap_err()
            .to_string()
            .contains("invalid address"));
    }

    fn load(text: &str) -> (Vec<String>, Vec<String>) {
        let l = crate::config::load_str(text, std::path::Path::new("g.conf"));
        let keys = l
            .config
            .services
            .iter()
            .map(|v| v.key.to_string())
            .collect();
        (keys, l.diags.iter().map(ToString::to_string).collect())
    }

    /// issue 13, input 6: a group's block serves every member, each with the
    /// block's settings and reals; a problem of the block is reported once.
    #[test]
    fn a_group_block_serves_every_member() {
        let text = "virtual_server group WEB {\n lb_algo rr\n lb_kind DR\n protocol TCP\n \
                    real_server 10.0.1.2 80 {\n  weight 3\n }\n bogus 1\n}\n\
                    virtual_server_group WEB {\n 10.0.0.1 80\n 10.0.0.5-6 443\n 2001:db8::1 80\n}\n";
        let l = crate::config::load_str(text, std::path::Path::new("g.conf"));
        let keys: Vec<String> = l
            .config
            .services
            .iter()
            .map(|v| v.key.to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "TCP 10.0.0.1:80",
                "TCP 10.0.0.5:443",
                "TCP 10.0.0.6:443",
                "TCP [2001:db8::1]:80"
            ]
        );
        let v4 = &l.config.services[1];
        assert_eq!(
            (v4.sched.name(), v4.reals.len(), v4.reals[0].weight),
            ("rr", 1, 3)
        );
        // Said once each: the :443 members' port warning, the IPv6 member's
        // family error.
        let d: Vec<String> = l.diags.iter().map(ToString::to_string).collect();
        assert_eq!(
            d,
            [
                "g.conf:8:2: warning: bogus: unknown keyword in virtual_server; ignored",
                "g.conf:5:2: warning: real_server: direct routing cannot change ports (only NAT \
                 can): packets reach the real on port 443",
                "g.conf:5:2: error: real_server: address family differs from the virtual server's \
                 (forwarding stays within one family)",
            ]
        );
    }

    #[test]
    fn group_mistakes_are_located_errors() {
        let (keys, d) = load("virtual_server group NONE {\n real_server 10.0.1.2 80 {\n }\n}\n");
        assert!(keys.is_empty());
        assert_eq!(
            d,
            ["g.conf:1:1: error: virtual_server: no usable virtual_server_group 'NONE'"]
        );
        let (keys, d) = load(
            "virtual_server_group G {\n fwmark 7\n 10.0.0.1\n 10.0.0.2 http\n}\n\
             virtual_server fwmark 7 {\n}\n",
        );
        assert!(keys.is_empty());
        assert!(
            d[0].starts_with("g.conf:2:2: error: fwmark: firewall-mark services are not supported"),
            "{d:?}"
        );
        assert_eq!(d[1], "g.conf:3:2: error: 10.0.0.1: missing port");
        assert_eq!(
            d[2],
            "g.conf:4:2: error: 10.0.0.2: invalid port 'http' (0-65535)"
        );
        assert!(
            d[3].starts_with("g.conf:6:1: error: virtual_server: firewall-mark services"),
            "{d:?}"
        );
    }
}
