//! `GET /v1/vrrp` (`lb list --vrrp`): the engine's state as
//! [`crate::api::views::Vrrp`].

use super::Engine;
use crate::{
    api::views::{
        Vrrp, VrrpInstance, VrrpScript, VrrpSyncGroup, VrrpTrackFile, VrrpTrackProcess,
        VrrpUnclaimed,
    },
    vrrp::machine::State,
};

impl Engine {
    pub(super) fn info(&self) -> Vrrp {
        let instances = self
            .insts
            .iter()
            .map(|i| {
                let m = &i.machine;
                VrrpInstance {
                    name: i.cfg.name.clone(),
                    interface: i.cfg.iface.clone(),
                    vrid: i.cfg.vrid,
                    state: m.state.name().to_string(),
                    priority: m.priority,
                    configured_priority: i.cfg.priority,
                    version: i.cfg.version.name().to_string(),
                    source_address: i.src.to_string(),
                    master_address: match (m.state, m.master) {
                        (State::Master, _) => Some(i.src.to_string()),
                        (_, a) => a.map(|a| a.to_string()),
                    },
                    advert_interval_s: f64::from(m.master_adver_cs) / 100.0,
                    vips: i
                        .cfg
                        .vips
                        .iter()
                        .map(|v| format!("{}/{}", v.addr, v.prefix))
                        .collect(),
                    vips_held: i.vips_held,
                    adverts_sent: m.counters.adverts_sent,
                    adverts_received: m.counters.adverts_received,
                    became_master: m.counters.became_master,
                    released_master: i.released_master,
                    transitions: i.transitions,
                    priority_zero_sent: m.counters.priority_zero_sent,
                    priority_zero_received: m.counters.priority_zero_received,
                    other_master_seen: m.counters.other_master_seen,
                    dropped: i.rejects.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                    faults: i.faults.clone(),
                    in_state_s: i.since.elapsed().map(|d| d.as_secs()).unwrap_or(0),
                }
            })
            .collect();
        Vrrp {
            running: true,
            instances,
            sync_groups: self
                .cfg
                .groups
                .iter()
                .map(|g| VrrpSyncGroup {
                    name: g.name.clone(),
                    members: g.members.clone(),
                })
                .collect(),
            scripts: self
                .scripts
                .values()
                .map(|sc| VrrpScript {
                    name: sc.cfg.name.clone(),
                    good: sc.up,
                    last_ok: sc.last,
                    weight: sc.cfg.weight,
                })
                .collect(),
            track_files: self
                .files
                .values()
                .map(|f| VrrpTrackFile {
                    name: f.cfg.name.clone(),
                    file: f.cfg.path.display().to_string(),
                    value: f.value,
                    weight: f.cfg.weight,
                    reverse: f.cfg.reverse,
                })
                .collect(),
            track_processes: self
                .procs
                .values()
                .map(|p| VrrpTrackProcess {
                    name: p.cfg.name.clone(),
                    running: p.count as u64,
                    quorum_up: p.up,
                    weight: p.cfg.weight,
                    reverse: p.cfg.reverse,
                })
                .collect(),
            unclaimed: self
                .unclaimed
                .iter()
                .map(|((ifc, k), v)| VrrpUnclaimed {
                    interface: ifc.clone(),
                    reason: k.to_string(),
                    count: *v,
                })
                .collect(),
            sync: None,
        }
    }
}
