//! `lb check-config --dump`: the parsed model with every default filled in,
//! as JSON, so that an operator sees the values lb will use.
//!
//! Format `lb-config-dump/1` (stable; new keys may be added, none renamed):
//! one object with `format`, `global_defs`, `virtual_servers`,
//! `vrrp_scripts`, `vrrp_instances`, `vrrp_sync_groups`, `track_files`,
//! `vrrp_track_processes` and `lb_bgp` (null without the block). Keys are
//! keepalived's keyword names; durations are numbers of seconds with the
//! suffix `_s` (µs resolution, keepalived's); absent optional values are
//! `null`. A checker's timing is its effective one (its own value, else its
//! real server's, else its virtual server's, else keepalived's default for
//! that checker kind, as [`crate::health::Schedule::resolve`] computes it).

use std::time::Duration;

use serde_json::{json, Value};

use super::{
    check::{Check, CheckKind},
    track::TrackRef,
    vrrp::{Initial, Instance, Notify, Script, SyncGroup, Track, Vip},
    Config, Fwd, RealServer, VirtualServer,
};
use crate::{health::Schedule, util::process::Program};

/// The dump's format name and version.
pub const FORMAT: &str = "lb-config-dump/1";

/// The whole configuration as `lb check-config --dump` prints it.
pub fn dump(c: &Config) -> Value {
    let g = &c.vrrp.globals;
    json!({
        "format": FORMAT,
        "global_defs": {
            "router_id": g.router_id,
            "vrrp_version": version(g.version),
            "vrrp_strict": g.strict,
            "vrrp_skip_check_adv_addr": g.skip_check_adv_addr,
            "vrrp_garp_interval_s": secs(g.garp_interval),
            "vrrp_gna_interval_s": secs(g.gna_interval),
            "script_user": g.script_user.map(|(u, gid)| json!({"uid": u, "gid": gid})),
            "enable_script_security": g.enable_script_security,
            "notification_email": g.notification_email,
            "notification_email_from": g.notification_email_from,
            "smtp_server": g.smtp_server.map(|(a, p)| json!({"address": a, "port": p})),
            "smtp_helo_name": g.smtp_helo_name,
            "smtp_connect_timeout_s": secs(g.smtp_connect_timeout),
            "vrrp_higher_prio_send_advert": g.higher_prio_send_advert,
            // The defaults filled in as the agent resolves them: the sync id
            // from the instance, maxlen from the interface's MTU at start.
            "lvs_sync_daemon": g.lvs_sync.as_ref().map(|s| json!({
                "interface": s.iface,
                "vrrp_instance": s.instance,
                "id": s.syncid.or_else(|| match &s.instance {
                    Some(n) => c.vrrp.instances.iter().find(|i| &i.name == n).map(|i| i.vrid),
                    None => Some(0),
                }),
                "maxlen": s.maxlen,
                "port": s.port,
                "ttl": s.ttl,
                "group": s.group,
                "location": s.loc.to_string(),
            })),
            // Whether a key is set; never the key.
            "lb_sync_auth_key": g.sync_auth_key.is_some(),
        },
        "virtual_servers": c.services.iter().map(virtual_server).collect::<Vec<_>>(),
        "vrrp_scripts": c.vrrp.scripts.values().map(script).collect::<Vec<_>>(),
        "vrrp_instances": c.vrrp.instances.iter().map(instance).collect::<Vec<_>>(),
        "vrrp_sync_groups": c.vrrp.groups.iter().map(sync_group).collect::<Vec<_>>(),
        "track_files": c.vrrp.files.values().map(|f| json!({
            "name": f.name,
            "file": f.path,
            "weight": f.weight,
            "reverse": f.reverse,
            "init_file": f.init.map(|(v, overwrite)| json!({"value": v, "overwrite": overwrite})),
            "location": f.loc.to_string(),
        })).collect::<Vec<_>>(),
        "lb_bgp": c.bgp.as_ref().map(bgp),
        "vrrp_track_processes": c.vrrp.processes.values().map(|p| json!({
            "name": p.name,
            "process": p.process,
            "params": p.params,
            "param_match": format!("{:?}", p.param_match).to_lowercase(),
            "full_command": p.full_command,
            "quorum": p.quorum,
            "quorum_max": p.quorum_max,
            "fork_delay_s": secs(p.fork_delay),
            "terminate_delay_s": secs(p.terminate_delay),
            "weight": p.weight,
        })).collect::<Vec<_>>(),
    })
}

/// `lb_bgp` with its defaults (`router_id`: the one given to an
/// unconfigured daemon).
fn bgp(b: &super::bgp::Bgp) -> Value {
    json!({
        "daemon": b.daemon.name(),
        "api": b.api.to_string(),
        "local_as": b.local_as,
        "router_id": b.router_id(),
        "neighbors": b.neighbors.iter().map(|n| json!({
            "address": n.addr,
            "as": n.asn,
            "location": n.loc.to_string(),
        })).collect::<Vec<_>>(),
        "next_hop": b.next_hop,
        "next_hop6": b.next_hop6,
        "announce_delay_s": secs(b.announce_delay),
        "withdraw_grace_s": secs(b.withdraw_grace),
        "poll_interval_s": secs(b.poll_interval),
        "timeout_s": secs(b.timeout),
        "gobgp_program": b.program,
        "location": b.loc.to_string(),
    })
}

fn track_refs(t: &[TrackRef]) -> Value {
    t.iter()
        .map(|r| json!({"name": r.name, "weight": r.weight.map(|(w, _)| w), "reverse": r.weight.is_some_and(|(_, rev)| rev)}))
        .collect::<Vec<_>>()
        .into()
}

/// Seconds as a JSON number (µs resolution).
fn secs(d: Duration) -> Value {
    let us = d.as_micros();
    if us.is_multiple_of(1_000_000) {
        json!((us / 1_000_000) as u64)
    } else {
        json!(us as f64 / 1e6)
    }
}

fn version(v: super::vrrp::Version) -> u8 {
    match v {
        super::vrrp::Version::V2 => 2,
        super::vrrp::Version::V3 => 3,
    }
}

fn virtual_server(vs: &VirtualServer) -> Value {
    json!({
        "address": vs.key.addr,
        "port": vs.key.port,
        "protocol": vs.key.proto.name(),
        "lb_algo": vs.sched.name(),
        "lb_kind": match vs.fwd {
            Fwd::Dr => "DR",
            Fwd::Nat => "NAT",
            Fwd::Tun => "TUN",
        },
        "hash_source_port": vs.hash_port,
        "hash_fallback": vs.hash_fallback,
        "persistence_timeout_s": vs.persistence_timeout,
        // Prefix length the persistence template keeps of the client
        // address (null: the whole address).
        "persistence_prefix": vs.persistence_prefix,
        "alpha": vs.alpha,
        "omega": vs.omega,
        "inhibit_on_failure": vs.inhibit_on_failure,
        "quorum": vs.quorum,
        "hysteresis": vs.hysteresis,
        "quorum_up": vs.quorum_up.as_ref().map(program),
        "quorum_down": vs.quorum_down.as_ref().map(program),
        "sorry_server": vs.sorry_server.map(|(a, p)| json!({"address": a, "port": p})),
        "location": vs.loc.to_string(),
        "real_servers": vs.reals.iter().map(|r| real_server(vs, r)).collect::<Vec<_>>(),
    })
}

fn real_server(vs: &VirtualServer, r: &RealServer) -> Value {
    json!({
        "address": r.addr,
        "port": r.port,
        "weight": r.weight,
        // The real's forwarding method: its own `lvs_method`, else the
        // virtual server's `lb_kind` (a runtime real always has its own).
        "lb_kind": r.fwd_in(vs).keepalived_name(),
        "uthreshold": r.u_threshold,
        "lthreshold": r.l_threshold,
        "inhibit_on_failure": r.inhibit_on_failure.unwrap_or(vs.inhibit_on_failure),
        "notify_up": r.notify_up.as_ref().map(program),
        "notify_down": r.notify_down.as_ref().map(program),
        "location": r.loc.to_string(),
        "checkers": r.checks.iter().map(|c| checker(vs, r, c)).collect::<Vec<_>>(),
    })
}

fn checker(vs: &VirtualServer, r: &RealServer, c: &Check) -> Value {
    let s = Schedule::resolve(c, r.timing, vs.timing);
    let mut v = json!({
        "connect_ip": c.connect_ip.unwrap_or(r.addr),
        "connect_port": c.connect_port.unwrap_or(r.port),
        "bindto": c.bindto,
        "fast_recovery": s.fast_recovery,
        "delay_loop_s": secs(s.delay_loop),
        "connect_timeout_s": secs(s.connect_timeout),
        "retry": s.retry,
        "delay_before_retry_s": secs(s.delay_before_retry),
        "warmup_s": secs(s.warmup),
    });
    let extra = match &c.kind {
        CheckKind::Tcp => json!({"type": "TCP_CHECK"}),
        CheckKind::Smtp { helo } => json!({"type": "SMTP_CHECK", "helo_name": helo}),
        CheckKind::Ping => json!({"type": "PING_CHECK"}),
        CheckKind::File(f) => json!({
            "type": "FILE_CHECK",
            "track_file": f.track,
            "file": f.path,
            "weight": f.weight,
            "reverse": f.reverse,
        }),
        CheckKind::Http {
            urls,
            virtualhost,
            tls,
            sni,
            http11,
        } => json!({
            "type": if *tls { "SSL_GET" } else { "HTTP_GET" },
            "virtualhost": virtualhost,
            "enable_sni": sni,
            "http_protocol": if *http11 { "1.1" } else { "1.0" },
            "url": urls.iter().map(|u| json!({
                "path": u.path,
                "status_code": u.status.iter().map(|(a, b)| if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }).collect::<Vec<_>>(),
                "digest": u.digest,
            })).collect::<Vec<_>>(),
        }),
        CheckKind::Udp {
            payload,
            require_reply,
        } => json!({
            "type": "UDP_CHECK",
            "payload": payload.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "require_reply": require_reply,
        }),
        CheckKind::Dns { qtype, name } => json!({
            "type": "DNS_CHECK",
            "query_type": qtype,
            "name": name,
        }),
        CheckKind::Misc {
            program: p,
            timeout,
            dynamic,
        } => json!({
            "type": "MISC_CHECK",
            "misc_path": p.argv,
            // lb: no misc_timeout means the checker's connect_timeout
            // (keepalived 2.2.7 uses the virtual server's delay_loop).
            "misc_timeout_s": secs(timeout.unwrap_or(s.connect_timeout)),
            "misc_dynamic": dynamic,
            "user": p.user.map(|(u, g)| json!({"uid": u, "gid": g})),
        }),
    };
    if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
        v.extend(extra);
    }
    v
}

/// A configured program: its words and the account it runs as (`null`:
/// the agent's own).
fn program(p: &Program) -> Value {
    json!({
        "argv": p.argv,
        "user": p.user.map(|(u, g)| json!({"uid": u, "gid": g})),
    })
}

fn script(s: &Script) -> Value {
    json!({
        "name": s.name,
        "script": s.program.argv,
        "interval_s": secs(s.interval),
        "timeout_s": secs(s.timeout),
        "rise": s.rise,
        "fall": s.fall,
        "weight": s.weight,
        "init_fail": s.init_fail,
        "user": s.program.user.map(|(u, g)| json!({"uid": u, "gid": g})),
        "location": s.loc.to_string(),
    })
}

fn vip(v: &Vip) -> Value {
    json!({
        "address": v.addr,
        "prefix": v.prefix,
        "dev": v.dev,
        "label": v.label,
        "scope": v.scope,
    })
}

fn tracks(t: &[Track]) -> Value {
    json!(t
        .iter()
        .map(|t| json!({"name": t.name, "weight": t.weight}))
        .collect::<Vec<_>>())
}

fn notify(n: &Notify) -> Value {
    json!({
        "notify_master": n.master.as_ref().map(program),
        "notify_backup": n.backup.as_ref().map(program),
        "notify_fault": n.fault.as_ref().map(program),
        "notify_stop": n.stop.as_ref().map(program),
        "notify": n.any.as_ref().map(program),
        "smtp_alert": n.smtp_alert,
    })
}

fn instance(i: &Instance) -> Value {
    json!({
        "name": i.name,
        "state": match i.initial {
            Initial::Master => "MASTER",
            Initial::Backup => "BACKUP",
        },
        "interface": i.iface,
        "virtual_router_id": i.vrid,
        "priority": i.priority,
        "advert_int_s": secs(Duration::from_millis(u64::from(i.advert_cs) * 10)),
        "version": version(i.version),
        "authentication": i.auth.map(|_| "PASS"),
        "virtual_ipaddress": i.vips.iter().map(vip).collect::<Vec<_>>(),
        "virtual_ipaddress_excluded": i.excluded.iter().map(vip).collect::<Vec<_>>(),
        "preempt": i.preempt,
        "preempt_delay_s": secs(i.preempt_delay),
        "track_interface": tracks(&i.track_interfaces),
        "track_script": tracks(&i.track_scripts),
        "notify": notify(&i.notify),
        "garp_master_delay_s": secs(i.garp_master_delay),
        "garp_master_repeat": i.garp_master_repeat,
        "garp_master_refresh_s": secs(i.garp_master_refresh.unwrap_or_default()),
        "garp_master_refresh_repeat": i.garp_master_refresh_repeat,
        "unicast_src_ip": i.unicast_src,
        "unicast_peer": i.unicast_peers,
        "garp_lower_prio_repeat": i.garp_lower_prio_repeat,
        "garp_lower_prio_delay_s": secs(i.garp_lower_prio_delay),
        "lower_prio_no_advert": i.lower_prio_no_advert,
        "higher_prio_send_advert": i.higher_prio_send_advert,
        "use_vmac": i.vmac.as_ref().map(|v| json!({"name": v.name, "mac": crate::util::fmt_mac(&v.mac)})),
        "track_file": track_refs(&i.track_files),
        "track_process": track_refs(&i.track_processes),
        "virtual_routes": i.virtual_routes.iter().map(|r| json!({
            "type": format!("{:?}", r.kind).to_lowercase(),
            "to": format!("{}/{}", r.dest, r.prefix),
            "src": r.src,
            "via": r.via,
            "dev": r.dev,
            "scope": r.scope,
            "table": r.table,
            "metric": r.metric,
            "onlink": r.onlink,
        })).collect::<Vec<_>>(),
        "virtual_rules": i.virtual_rules.iter().map(|r| json!({
            "from": r.from.map(|(a, p)| format!("{a}/{p}")),
            "to": r.to.map(|(a, p)| format!("{a}/{p}")),
            "action": format!("{:?}", r.action).to_lowercase(),
            "table": r.table,
            "priority": r.priority,
            "iif": r.iif,
            "oif": r.oif,
            "fwmark": r.fwmark,
            "tos": r.tos,
        })).collect::<Vec<_>>(),
        "location": i.loc.to_string(),
    })
}

fn sync_group(g: &SyncGroup) -> Value {
    json!({
        "name": g.name,
        "group": g.members,
        "track_script": tracks(&g.track_scripts),
        "track_file": track_refs(&g.track_files),
        "track_process": track_refs(&g.track_processes),
        "notify": notify(&g.notify),
        "location": g.loc.to_string(),
    })
}
