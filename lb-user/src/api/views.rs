//! The structured answers of `GET /v1/checks` and `GET /v1/vrrp`, and the
//! text tables `lb list --checks` / `--vrrp` render from them.
//!
//! Field names are stable snake_case (README "JSON output"); durations are
//! seconds with the suffix `_s`; addresses are strings (`IP:PORT`, IPv6 in
//! brackets, as ipvsadm prints them); counters are exact integers.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

/// The last probe of a checker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ProbeResult {
    /// The probe passed.
    Ok,
    /// A MISC_CHECK with `misc_dynamic` passed and set this weight
    /// (keepalived: exit code − 2).
    OkWeight { weight: u32 },
    /// The probe failed, with the checker's reason (`connect: …`,
    /// `status 500`, `timed out`, `digest …`).
    Failed { error: String },
}

/// One health checker (`GET /v1/checks`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Checker {
    /// The virtual service, `TCP 10.0.0.1:80` (keepalived's `virtual_server`).
    pub service: String,
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// The virtual address and port.
    pub service_address: String,
    pub service_port: u16,
    /// The real server, `IP:PORT`.
    pub real: String,
    pub real_address: String,
    pub real_port: u16,
    /// `TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `MISC_CHECK`, `UDP_CHECK`,
    /// `DNS_CHECK`, `SMTP_CHECK`, `PING_CHECK` or `FILE_CHECK`.
    pub check: String,
    /// Its position among the real's checkers (0-based, file order).
    pub index: usize,
    /// Whether the checker passes (after keepalived's `retry` rule).
    pub up: bool,
    /// Probes run since it started.
    pub probes: u64,
    /// Seconds since it last went up or down (or changed its dynamic
    /// weight); `null`: never since it started.
    pub last_change_ago_s: Option<f64>,
    /// `null`: not probed yet.
    pub last: Option<ProbeResult>,
    /// How long the last probe took, seconds (`null`: none yet).
    pub last_duration_s: Option<f64>,
}

/// `GET /v1/checks`: every checker of the running configuration, ordered by
/// service, real and index.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Checks {
    pub checkers: Vec<Checker>,
}

impl Checks {
    /// The table `lb list --checks` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:<10} {:<5} {:>7} {:>10}  last result",
            "service", "real", "check", "state", "probes", "changed"
        );
        for c in &self.checkers {
            let changed = c
                .last_change_ago_s
                .map(|s| format!("{}s ago", s as u64))
                .unwrap_or_else(|| "never".into());
            let last = match &c.last {
                None => "not probed yet".to_string(),
                Some(ProbeResult::Ok) => "ok".into(),
                Some(ProbeResult::OkWeight { weight }) => format!("ok, weight {weight}"),
                Some(ProbeResult::Failed { error }) => format!("failed: {error}"),
            };
            let _ = writeln!(
                out,
                "{:<24} {:<24} {:<10} {:<5} {:>7} {:>10}  {last}",
                c.service,
                c.real,
                c.check,
                if c.up { "UP" } else { "DOWN" },
                c.probes,
                changed
            );
        }
        out
    }
}

/// One VRRP instance (`GET /v1/vrrp`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VrrpInstance {
    /// `vrrp_instance` name.
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    /// `INIT`, `BACKUP`, `MASTER` or `FAULT` (keepalived's names).
    pub state: String,
    /// Priority in effect (configured, adjusted by tracked scripts,
    /// interfaces, files and processes).
    pub priority: u8,
    pub configured_priority: u8,
    /// `v2` or `v3`.
    pub version: String,
    /// The address this node sends its adverts from.
    pub source_address: String,
    /// The current master: this node's source address when MASTER, the
    /// advert's sender when known, else `null`.
    pub master_address: Option<String>,
    /// The master's advert interval in effect (own when MASTER), seconds.
    pub advert_interval_s: f64,
    /// Virtual addresses, `ADDR/PREFIX`.
    pub vips: Vec<String>,
    /// Whether this node holds them now.
    pub vips_held: bool,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Times it became MASTER (keepalived's `become_master`).
    pub became_master: u64,
    /// Times it left MASTER (keepalived's `release_master`).
    pub released_master: u64,
    /// State changes since the instance started.
    pub transitions: u64,
    pub priority_zero_sent: u64,
    pub priority_zero_received: u64,
    /// Adverts from another master while master (split brain).
    pub other_master_seen: u64,
    /// Received adverts dropped, by reason (`version`, `unknown-peer`,
    /// `auth`, `interval`, `addresses`, and `send-error` for adverts this
    /// node could not send).
    pub dropped: BTreeMap<String, u64>,
    /// Why it is in FAULT (empty when it is not faulty on its own).
    pub faults: Vec<String>,
    /// Seconds in the current state.
    pub in_state_s: u64,
}

/// A `vrrp_sync_group`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VrrpSyncGroup {
    pub name: String,
    pub members: Vec<String>,
}

/// A `vrrp_script`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VrrpScript {
    pub name: String,
    /// After `rise` / `fall`: good (true) or bad.
    pub good: bool,
    /// The last run's result; `null`: not run yet.
    pub last_ok: Option<bool>,
    pub weight: i32,
}

/// A `track_file`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VrrpTrackFile {
    pub name: String,
    pub file: String,
    /// The number the file holds.
    pub value: i64,
    pub weight: i32,
    pub reverse: bool,
}

/// A `vrrp_track_process`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VrrpTrackProcess {
    pub name: String,
    /// Matching processes running.
    pub running: u64,
    pub quorum_up: bool,
    pub weight: i32,
    pub reverse: bool,
}

/// Adverts that no instance took, per interface and reason.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VrrpUnclaimed {
    pub interface: String,
    pub reason: String,
    pub count: u64,
}

/// `GET /v1/vrrp`: the VRRP engine's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Vrrp {
    /// `false` when the engine has stopped (the agent is shutting down).
    pub running: bool,
    pub instances: Vec<VrrpInstance>,
    pub sync_groups: Vec<VrrpSyncGroup>,
    pub scripts: Vec<VrrpScript>,
    pub track_files: Vec<VrrpTrackFile>,
    pub track_processes: Vec<VrrpTrackProcess>,
    pub unclaimed: Vec<VrrpUnclaimed>,
    /// Connection sync (`lvs_sync_daemon`), when on.
    #[serde(default)]
    pub sync: Option<crate::sync::Status>,
}

impl Vrrp {
    /// The text `lb list --vrrp` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if !self.running {
            return "VRRP engine stopped\n".into();
        }
        // Connection sync runs without VRRP too (active-active directors):
        // its lines follow.
        if self.instances.is_empty() {
            s.push_str("no VRRP instances configured\n");
        } else {
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
        }
        for i in &self.instances {
            let master = match &i.master_address {
                Some(a) if i.state == "MASTER" => format!("{a} (this node)"),
                Some(a) => a.clone(),
                None => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<12} {:<7} {:>4} {:<8} {:>9} {:<6} {:<26} {:>6.2}s {:>9} {:>9}",
                i.name,
                i.state,
                i.vrid,
                i.interface,
                format!("{}({})", i.priority, i.configured_priority),
                i.version,
                master,
                i.advert_interval_s,
                i.adverts_sent,
                i.adverts_received,
            );
            let _ = writeln!(
                s,
                "  vips {} {}; became master {}; priority 0 sent {} received {}; other master seen {}",
                i.vips.join(" "),
                if i.vips_held { "(held)" } else { "(not held)" },
                i.became_master,
                i.priority_zero_sent,
                i.priority_zero_received,
                i.other_master_seen,
            );
            if !i.dropped.is_empty() {
                let r: Vec<String> = i.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(s, "  dropped: {}", r.join(", "));
            }
            if !i.faults.is_empty() {
                let _ = writeln!(s, "  fault: {}", i.faults.join("; "));
            }
            let _ = writeln!(s, "  in this state for {}s", i.in_state_s);
        }
        for g in &self.sync_groups {
            let _ = writeln!(s, "sync group {}: {}", g.name, g.members.join(" "));
        }
        if let Some(c) = &self.sync {
            let _ = writeln!(
                s,
                "connection sync: {} ({} {}:{}, sync id {}{})",
                c.state,
                c.iface,
                c.group,
                c.port,
                c.syncid,
                if c.authenticated { ", signed" } else { "" }
            );
            let _ = writeln!(
                s,
                "  sent {} conns in {} messages (lag {:.1} ms); received {} conns in {} messages, {} installed{}",
                c.sent_conns,
                c.sent_messages,
                c.send_lag_ms,
                c.received_conns,
                c.received_messages,
                c.installed,
                match c.last_received_ms {
                    Some(ms) => format!(", last {:.1}s ago", ms as f64 / 1000.0),
                    None => String::new(),
                }
            );
            let _ = writeln!(
                s,
                "  bulk copy: {} conns received{}; {} sent to peers",
                c.bulk_received,
                c.bulk_ms.map(|m| format!(" in {m} ms")).unwrap_or_default(),
                c.bulk_served
            );
            if !c.dropped.is_empty() {
                let r: Vec<String> = c.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(s, "  dropped: {}", r.join(", "));
            }
        }
        for sc in &self.scripts {
            let _ = writeln!(
                s,
                "script {}: {} (last run {}; weight {})",
                sc.name,
                if sc.good { "good" } else { "bad" },
                match sc.last_ok {
                    None => "pending",
                    Some(true) => "ok",
                    Some(false) => "failed",
                },
                sc.weight
            );
        }
        for f in &self.track_files {
            let _ = writeln!(
                s,
                "track_file {}: {} holds {} (weight {}{})",
                f.name,
                f.file,
                f.value,
                f.weight,
                if f.reverse { " reverse" } else { "" }
            );
        }
        for p in &self.track_processes {
            let _ = writeln!(
                s,
                "track_process {}: {} running, quorum {} (weight {}{})",
                p.name,
                p.running,
                if p.quorum_up { "up" } else { "down" },
                p.weight,
                if p.reverse { " reverse" } else { "" }
            );
        }
        if !self.unclaimed.is_empty() {
            let r: Vec<String> = self
                .unclaimed
                .iter()
                .map(|u| format!("{} {} {}", u.interface, u.reason, u.count))
                .collect();
            let _ = writeln!(s, "dropped, no instance: {}", r.join(", "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker() -> Checker {
        Checker {
            service: "TCP 10.0.0.1:80".into(),
            protocol: "TCP".into(),
            service_address: "10.0.0.1".into(),
            service_port: 80,
            real: "10.0.1.1:80".into(),
            real_address: "10.0.1.1".into(),
            real_port: 80,
            check: "HTTP_GET".into(),
            index: 0,
            up: false,
            probes: 12,
            last_change_ago_s: Some(7.9),
            last: Some(ProbeResult::Failed {
                error: "status 500".into(),
            }),
            last_duration_s: Some(0.0021),
        }
    }

    #[test]
    fn checks_render_as_before() {
        let c = Checks {
            checkers: vec![checker()],
        };
        let text = c.render();
        let row = text.lines().nth(1).unwrap();
        assert_eq!(
            row,
            "TCP 10.0.0.1:80          10.0.1.1:80              HTTP_GET   DOWN       12     7s ago  failed: status 500"
        );
    }

    #[test]
    fn checker_json_shape() {
        let v = serde_json::to_value(checker()).unwrap();
        assert_eq!(v["last"]["result"], "failed");
        assert_eq!(v["last"]["error"], "status 500");
        assert_eq!(v["last_duration_s"], 0.0021);
        assert_eq!(v["real_port"], 80);
        assert_eq!(v["up"], false);
        let back: Checker = serde_json::from_value(v).unwrap();
        assert_eq!(back, checker());
    }

    #[test]
    fn vrrp_render_master_and_drops() {
        let mut dropped = BTreeMap::new();
        dropped.insert("auth".to_string(), 3);
        let v = Vrrp {
            running: true,
            instances: vec![VrrpInstance {
                name: "VI_1".into(),
                interface: "eth0".into(),
                vrid: 51,
                state: "MASTER".into(),
                priority: 90,
                configured_priority: 150,
                version: "v2".into(),
                source_address: "10.0.0.2".into(),
                master_address: Some("10.0.0.2".into()),
                advert_interval_s: 1.0,
                vips: vec!["10.0.0.100/32".into()],
                vips_held: true,
                adverts_sent: 10,
                adverts_received: 0,
                became_master: 1,
                released_master: 0,
                transitions: 2,
                priority_zero_sent: 0,
                priority_zero_received: 0,
                other_master_seen: 0,
                dropped,
                faults: vec![],
                in_state_s: 5,
            }],
            ..Default::default()
        };
        let t = v.render();
        assert!(t.contains("10.0.0.2 (this node)"), "{t}");
        assert!(t.contains("90(150)"), "{t}");
        assert!(t.contains("  dropped: auth 3\n"), "{t}");
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["instances"][0]["dropped"]["auth"], 3);
        assert_eq!(j["instances"][0]["advert_interval_s"], 1.0);
    }

    /// Input: connection sync on, no VRRP instance (active-active
    /// directors). Output: the sync lines are shown after the note.
    #[test]
    fn vrrp_render_sync_without_instances() {
        let v = Vrrp {
            running: true,
            sync: Some(crate::sync::Status {
                iface: "eth0".into(),
                group: "224.0.0.81".into(),
                port: 8848,
                syncid: 18,
                state: "in sync".into(),
                installed: 45,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = v.render();
        assert!(t.starts_with("no VRRP instances configured\n"), "{t}");
        assert!(
            t.contains("connection sync: in sync (eth0 224.0.0.81:8848, sync id 18)"),
            "{t}"
        );
        assert!(t.contains("45 installed"), "{t}");
        let none = Vrrp {
            running: true,
            ..Default::default()
        };
        assert_eq!(none.render(), "no VRRP instances configured\n");
    }
}
