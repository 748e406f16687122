//! What a reload or a runtime change did to the table, one line per
//! difference, for the log (`old → new` for each changed value).

use std::collections::BTreeMap;

use crate::{
    config::{Config, RealServer, VirtualServer},
    util::fmt_sock,
};

fn persistence(vs: &VirtualServer) -> String {
    match (vs.persistence_timeout, vs.persistence_prefix) {
        (None, _) => "not persistent".into(),
        (Some(t), None) => format!("persistent {t}s"),
        (Some(t), Some(p)) => format!("persistent {t}s per /{p}"),
    }
}

fn real_words(vs: &VirtualServer, r: &RealServer) -> String {
    let mut s = format!("{} weight {}", r.fwd_in(vs).keepalived_name(), r.weight);
    if r.u_threshold != 0 || r.l_threshold != 0 {
        s.push_str(&format!(" thresholds {}/{}", r.u_threshold, r.l_threshold));
    }
    s
}

/// The differences between two tables, in service order: services and
/// reals added and removed (with what they are), and every changed value as
/// `old → new`. Checker changes are the health monitor's to log.
pub fn describe(old: &Config, new: &Config) -> Vec<String> {
    let olds: BTreeMap<_, _> = old.services.iter().map(|v| (v.key, v)).collect();
    let news: BTreeMap<_, _> = new.services.iter().map(|v| (v.key, v)).collect();
    let mut out = Vec::new();
    for (k, o) in &olds {
        if !news.contains_key(k) {
            out.push(format!(
                "service {k} removed (was {} with {} real(s))",
                o.sched.name(),
                o.reals.len()
            ));
        }
    }
    for (k, n) in &news {
        let Some(o) = olds.get(k) else {
            out.push(format!(
                "service {k} added: {}, {}, {} real(s)",
                n.sched.name(),
                persistence(n),
                n.reals.len()
            ));
            for r in &n.reals {
                out.push(format!(
                    "real {} of service {k} added: {}",
                    fmt_sock(r.addr, r.port),
                    real_words(n, r)
                ));
            }
            continue;
        };
        let mut field = |what: &str, a: String, b: String| {
            if a != b {
                out.push(format!("service {k}: {what} {a} → {b}"));
            }
        };
        field("lb_algo", o.sched.name().into(), n.sched.name().into());
        field(
            "lb_kind",
            o.fwd.keepalived_name().into(),
            n.fwd.keepalived_name().into(),
        );
        field("persistence", persistence(o), persistence(n));
        field(
            "hash port",
            o.hash_port.to_string(),
            n.hash_port.to_string(),
        );
        field("quorum", o.quorum.to_string(), n.quorum.to_string());
        field(
            "sorry_server",
            o.sorry_server
                .map_or("none".into(), |(a, p)| fmt_sock(a, p)),
            n.sorry_server
                .map_or("none".into(), |(a, p)| fmt_sock(a, p)),
        );
        let oreals: BTreeMap<_, _> = o.reals.iter().map(|r| ((r.addr, r.port), r)).collect();
        let nreals: BTreeMap<_, _> = n.reals.iter().map(|r| ((r.addr, r.port), r)).collect();
        for ((a, p), r) in &oreals {
            if !nreals.contains_key(&(*a, *p)) {
                out.push(format!(
                    "real {} of service {k} removed (was {})",
                    fmt_sock(*a, *p),
                    real_words(o, r)
                ));
            }
        }
        for ((a, p), r) in &nreals {
            let name = fmt_sock(*a, *p);
            match oreals.get(&(*a, *p)) {
                None => out.push(format!(
                    "real {name} of service {k} added: {}",
                    real_words(n, r)
                )),
                Some(or) => {
                    let (ow, nw) = (real_words(o, or), real_words(n, r));
                    if ow != nw {
                        out.push(format!("real {name} of service {k}: {ow} → {nw}"));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Config {
        let l = crate::config::load_str(text, std::path::Path::new("/k.conf"));
        assert!(!l.has_errors(), "{:?}", l.diags);
        l.config
    }

    #[test]
    fn every_difference_is_one_line_with_old_and_new() {
        let a = conf(
            "virtual_server 10.0.0.1 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.0.1.1 80 {\n  weight 1\n }\n real_server 10.0.1.2 80 {\n }\n}\nvirtual_server 10.0.0.9 53 {\n lb_algo rr\n lb_kind NAT\n protocol UDP\n}\n",
        );
        let b = conf(
            "virtual_server 10.0.0.1 80 {\n lb_algo wrr\n lb_kind DR\n protocol TCP\n persistence_timeout 60\n real_server 10.0.1.1 80 {\n  weight 3\n }\n real_server 10.0.1.3 80 {\n }\n}\nvirtual_server 10.0.0.2 80 {\n lb_algo sh\n lb_kind TUN\n protocol TCP\n real_server 10.0.2.1 80 {\n }\n}\n",
        );
        assert_eq!(
            describe(&a, &b),
            [
                "service UDP 10.0.0.9:53 removed (was rr with 0 real(s))",
                "service TCP 10.0.0.1:80: lb_algo rr → wrr",
                "service TCP 10.0.0.1:80: persistence not persistent → persistent 60s",
                "real 10.0.1.2:80 of service TCP 10.0.0.1:80 removed (was DR weight 1)",
                "real 10.0.1.1:80 of service TCP 10.0.0.1:80: DR weight 1 → DR weight 3",
                "real 10.0.1.3:80 of service TCP 10.0.0.1:80 added: DR weight 1",
                "service TCP 10.0.0.2:80 added: sh, not persistent, 1 real(s)",
                "real 10.0.2.1:80 of service TCP 10.0.0.2:80 added: TUN weight 1",
            ]
        );
        assert!(describe(&b, &b).is_empty());
    }
}
