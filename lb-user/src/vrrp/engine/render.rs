//! `lb list --vrrp`.

use std::fmt::Write as _;

use super::Engine;
use crate::vrrp::machine::State;

impl Engine {
    pub(super) fn render(&self) -> String {
        let mut s = String::new();
        if self.insts.is_empty() {
            return "no VRRP instances configured\n".into();
        }
        let _ = writeln!(
            s,
            "{:<12} {:<7} {:>4} {:<8} {:>9} {:<6} {:<26} {:>7} {:>9} {:>9}",
            "Instance",
            "State",
            "VRID",
            "Iface",
            "Prio(cfg)",
            "Vers",
            "Master",
            "Advert",
            "Sent",
            "Received"
        );
        for i in &self.insts {
            let m = &i.machine;
            let master = match (m.state, m.master) {
                (State::Master, _) => format!("{} (this node)", i.src),
                (_, Some(a)) => a.to_string(),
                (_, None) => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<12} {:<7} {:>4} {:<8} {:>9} {:<6} {:<26} {:>6.2}s {:>9} {:>9}",
                i.cfg.name,
                m.state.name(),
                i.cfg.vrid,
                i.cfg.iface,
                format!("{}({})", m.priority, i.cfg.priority),
                i.cfg.version.name(),
                master,
                m.master_adver_cs as f64 / 100.0,
                m.counters.adverts_sent,
                m.counters.adverts_received,
            );
            let vips: Vec<String> = i
                .cfg
                .vips
                .iter()
                .map(|v| format!("{}/{}", v.addr, v.prefix))
                .collect();
            let _ = writeln!(
                s,
                "  vips {} {}; became master {}; priority 0 sent {} received {}; other master seen {}",
                vips.join(" "),
                if i.vips_held { "(held)" } else { "(not held)" },
                m.counters.became_master,
                m.counters.priority_zero_sent,
                m.counters.priority_zero_received,
                m.counters.other_master_seen,
            );
            if !i.rejects.is_empty() {
                let r: Vec<String> = i.rejects.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(s, "  dropped: {}", r.join(", "));
            }
            if !i.faults.is_empty() {
                let _ = writeln!(s, "  fault: {}", i.faults.join("; "));
            }
            let since = i.since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
            let _ = writeln!(s, "  in this state for {since}s");
        }
        for g in &self.cfg.groups {
            let _ = writeln!(s, "sync group {}: {}", g.name, g.members.join(" "));
        }
        for sc in self.scripts.values() {
            let _ = writeln!(
                s,
                "script {}: {} (last run {}; weight {})",
                sc.cfg.name,
                if sc.up { "good" } else { "bad" },
                match sc.last {
                    None => "pending",
                    Some(true) => "ok",
                    Some(false) => "failed",
                },
                sc.cfg.weight
            );
        }
        self.render_trackers(&mut s);
        if !self.unclaimed.is_empty() {
            let r: Vec<String> = self
                .unclaimed
                .iter()
                .map(|((ifc, k), v)| format!("{ifc} {k} {v}"))
                .collect();
            let _ = writeln!(s, "dropped, no instance: {}", r.join(", "));
        }
        s
    }
}
