//! GoBGP driven through its supported interface: `gobgpd`'s gRPC API, with
//! the `gobgp` client of the same Debian package run as a program (its
//! words as given, never a shell), `-j` for JSON answers. Every request is
//! bounded by the configured timeout and the client is killed past it.
//! Nothing in the daemon's files is read or written.
//!
//! What the client prints (gobgp 3.10, the JSON of the API's messages as
//! Go's encoding/json writes them, zero values left out):
//! - `gobgp -j global`: `{"asn":65001,"router_id":"10.0.0.2",…}`, `{}` when
//!   the daemon was started without a configuration and nobody started BGP;
//! - `gobgp -j neighbor`: `[{"conf":{"neighbor_address":…,"peer_asn":…},
//!   "state":{"session_state":6,…},…}]` (session states as in the API:
//!   1 idle, 2 connect, 3 active, 4 opensent, 5 openconfirm, 6 established);
//! - `gobgp -j global rib -a ipv4`: `{"10.0.1.100/32":[{"nlri":…,
//!   "attrs":[{"type":1,…},{"type":3,"nexthop":"10.0.0.2"}],…}]}`; paths
//!   learnt from a peer carry `neighbor-ip`, those added locally do not.
//!
//! A failed request exits non-zero with an `rpc error` on stderr; a usage
//! error exits 0 with cobra's `Error:` on stderr, so anything on stderr is
//! a failure too.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use serde_json::Value;

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum GobgpError {
    #[error("starting {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`gobgp {args}` did not answer within {after:?}")]
    Timeout { args: String, after: Duration },
    #[error("`gobgp {args}` failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("`gobgp {args}` printed what lb does not read ({why})")]
    Output { args: String, why: String },
    #[error("not running {program}")]
    Refused {
        program: String,
        #[source]
        source: crate::util::security::Refused,
    },
}

/// The state of a BGP session (the API's `PeerState.SessionState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Session {
    Unknown,
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl Session {
    fn from_number(n: u64) -> Session {
        match n {
            1 => Session::Idle,
            2 => Session::Connect,
            3 => Session::Active,
            4 => Session::OpenSent,
            5 => Session::OpenConfirm,
            6 => Session::Established,
            _ => Session::Unknown,
        }
    }

    /// The name `lb list --bgp` prints.
    pub fn name(self) -> &'static str {
        match self {
            Session::Unknown => "unknown",
            Session::Idle => "idle",
            Session::Connect => "connect",
            Session::Active => "active",
            Session::OpenSent => "opensent",
            Session::OpenConfirm => "openconfirm",
            Session::Established => "established",
        }
    }
}

/// One of the daemon's peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub addr: IpAddr,
    pub asn: u32,
    pub session: Session,
}

/// The daemon's BGP instance (`None` from [`Client::global`]: not started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    pub asn: u32,
    pub router_id: String,
}

/// A client of one daemon.
#[derive(Clone, Debug)]
pub struct Client {
    /// `gobgp_program`: checked before each run by keepalived's script
    /// security rule as root (see [`crate::util::security`]), the resolved
    /// file executed with an empty environment but PATH.
    pub program: PathBuf,
    pub api: SocketAddr,
    pub timeout: Duration,
    /// `enable_script_security`: a program a non-root user could change is
    /// refused ([`GobgpError::Refused`]) rather than run.
    pub script_security: bool,
}

/// The address family argument of `gobgp … -a`.
fn family(vip: IpAddr) -> &'static str {
    if vip.is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// The host prefix of `vip` (`/32`, `/128`), as the RIB names it.
pub fn host_prefix(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

impl Client {
    /// The client of the daemon `b` configures.
    pub fn of(b: &crate::config::bgp::Bgp) -> Client {
        Client {
            program: b.program.clone(),
            api: b.api,
            timeout: b.timeout,
            script_security: b.script_security,
        }
    }

    /// Runs `gobgp -u HOST -p PORT ARGS…` within the timeout; its stdout.
    /// The program is checked first, as every configured program is
    /// (`util::process::command`): an insecure one is refused under
    /// `enable_script_security` and logged at debug level otherwise (the
    /// load warned).
    async fn run(&self, args: &[&str]) -> Result<String, GobgpError> {
        use crate::util::security;
        let shown = args.join(" ");
        let name = self.program.to_string_lossy();
        let checked =
            security::authorize(&name, (0, 0), self.script_security).map_err(|source| {
                GobgpError::Refused {
                    program: name.to_string(),
                    source,
                }
            })?;
        if let Some(i) = &checked.insecure {
            tracing::debug!(program = %name, "{i}: runs as root anyway (enable_script_security is not set)");
        }
        let mut cmd = tokio::process::Command::new(&checked.path);
        cmd.arg0(name.as_ref())
            .env_clear()
            .env("PATH", security::SEARCH_PATH)
            .arg("-u")
            .arg(self.api.ip().to_string())
            .arg("-p")
            .arg(self.api.port().to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| GobgpError::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| GobgpError::Timeout {
                args: shown.clone(),
                after: self.timeout,
            })?
            .map_err(|source| GobgpError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !out.status.success() || !stderr.is_empty() {
            // The first line says it; the usage text that follows does not.
            let first = stderr.lines().next().unwrap_or("").to_owned();
            let stdout = String::from_utf8_lossy(&out.stdout);
            return Err(GobgpError::Failed {
                args: shown,
                status: out.status.to_string(),
                stderr: if first.is_empty() {
                    stdout.trim().to_owned()
                } else {
                    first
                },
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn json(&self, args: &[&str]) -> Result<Value, GobgpError> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let text = self.run(&full).await?;
        serde_json::from_str(&text).map_err(|e| GobgpError::Output {
            args: full.join(" "),
            why: e.to_string(),
        })
    }

    /// The daemon's BGP instance; `None` when it is not started.
    pub async fn global(&self) -> Result<Option<Global>, GobgpError> {
        parse_global(&self.json(&["global"]).await?)
    }

    /// Starts the daemon's BGP instance (`gobgp global as … router-id …`).
    pub async fn start(&self, asn: u32, router_id: std::net::Ipv4Addr) -> Result<(), GobgpError> {
        self.run(&[
            "global",
            "as",
            &asn.to_string(),
            "router-id",
            &router_id.to_string(),
        ])
        .await
        .map(drop)
    }

    /// The daemon's peers and their sessions.
    pub async fn neighbors(&self) -> Result<Vec<Peer>, GobgpError> {
        let v = self.json(&["neighbor"]).await?;
        parse_neighbors(&v).map_err(|why| GobgpError::Output {
            args: "-j neighbor".into(),
            why,
        })
    }

    /// Adds a peer (`gobgp neighbor add ADDR as AS`).
    pub async fn add_neighbor(&self, addr: IpAddr, asn: u32) -> Result<(), GobgpError> {
        self.run(&["neighbor", "add", &addr.to_string(), "as", &asn.to_string()])
            .await
            .map(drop)
    }

    /// `gobgp neighbor del ADDR`: ends the session and forgets the peer.
    pub async fn del_neighbor(&self, addr: IpAddr) -> Result<(), GobgpError> {
        self.run(&["neighbor", "del", &addr.to_string()])
            .await
            .map(drop)
    }

    /// Host prefixes of `vip`'s family in the global RIB that were added
    /// locally (not learnt from a peer), with their next hops.
    pub async fn local_paths(
        &self,
        vip_family: IpAddr,
    ) -> Result<BTreeMap<IpAddr, Vec<IpAddr>>, GobgpError> {
        let fam = family(vip_family);
        let v = self.json(&["global", "rib", "-a", fam]).await?;
        parse_rib(&v).map_err(|why| GobgpError::Output {
            args: format!("-j global rib -a {fam}"),
            why,
        })
    }

    /// Announces `vip`/32 (or /128) with `next_hop`, replacing a local path
    /// of the same prefix.
    pub async fn announce(&self, vip: IpAddr, next_hop: IpAddr) -> Result<(), GobgpError> {
        self.run(&[
            "global",
            "rib",
            "add",
            "-a",
            family(vip),
            &host_prefix(vip),
            "nexthop",
            &next_hop.to_string(),
            "origin",
            "igp",
        ])
        .await
        .map(drop)
    }

    /// Withdraws the local path of `vip`.
    pub async fn withdraw(&self, vip: IpAddr) -> Result<(), GobgpError> {
        self.run(&["global", "rib", "del", "-a", family(vip), &host_prefix(vip)])
            .await
            .map(drop)
    }
}

/// `gobgp -j global`'s answer.
pub fn parse_global(v: &Value) -> Result<Option<Global>, GobgpError> {
    let asn = v.get("asn").and_then(Value::as_u64).unwrap_or(0);
    if asn == 0 {
        return Ok(None);
    }
    Ok(Some(Global {
        asn: u32::try_from(asn).map_err(|_| GobgpError::Output {
            args: "-j global".into(),
            why: format!("AS {asn} out of range"),
        })?,
        router_id: v
            .get("router_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    }))
}

/// `gobgp -j neighbor`'s answer.
pub fn parse_neighbors(v: &Value) -> Result<Vec<Peer>, String> {
    let list = v.as_array().ok_or("not a list")?;
    let mut out = Vec::new();
    for p in list {
        let state = p.get("state");
        let conf = p.get("conf");
        let field = |k: &str| {
            state
                .and_then(|s| s.get(k))
                .or_else(|| conf.and_then(|c| c.get(k)))
        };
        let addr = field("neighbor_address")
            .and_then(Value::as_str)
            .ok_or("a neighbor without neighbor_address")?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("neighbor address '{addr}'"))?;
        let asn = field("peer_asn").and_then(Value::as_u64).unwrap_or(0);
        let session = state
            .and_then(|s| s.get("session_state"))
            .and_then(Value::as_u64)
            .map_or(Session::Unknown, Session::from_number);
        out.push(Peer {
            addr,
            asn: u32::try_from(asn).unwrap_or(0),
            session,
        });
    }
    Ok(out)
}

/// `gobgp -j global rib -a FAMILY`'s answer: host prefixes of locally added
/// paths and their next hops (other prefixes and learnt paths left out).
pub fn parse_rib(v: &Value) -> Result<BTreeMap<IpAddr, Vec<IpAddr>>, String> {
    let map = v.as_object().ok_or("not an object")?;
    let mut out = BTreeMap::new();
    for (prefix, paths) in map {
        let Some((addr, len)) = prefix.split_once('/') else {
            continue;
        };
        let Ok(addr) = addr.parse::<IpAddr>() else {
            continue;
        };
        let host = if addr.is_ipv4() { "32" } else { "128" };
        if len != host {
            continue;
        }
        let mut hops = Vec::new();
        for p in paths.as_array().ok_or("a prefix without a list of paths")? {
            let learnt = p
                .get("neighbor-ip")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
                .is_some_and(|a| !a.is_unspecified());
            if learnt {
                continue;
            }
            let attrs = p.get("attrs").and_then(Value::as_array);
            let hop = attrs.into_iter().flatten().find_map(|a| {
                a.get("nexthop")
                    .and_then(Value::as_str)
                    .or_else(|| {
                        a.get("nexthops")
                            .and_then(Value::as_array)
                            .and_then(|l| l.first())
                            .and_then(Value::as_str)
                    })
                    .and_then(|s| s.parse::<IpAddr>().ok())
            });
            if let Some(h) = hop {
                hops.push(h);
            }
        }
        if !hops.is_empty() {
            out.insert(addr, hops);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gobgp 3.10's answers, recorded from the lab.
    #[test]
    fn reads_what_gobgp_prints() {
        let g: Value = serde_json::from_str(r#"{"asn":65001,"router_id":"10.200.0.2","listen_port":179,"listen_addresses":["0.0.0.0","::"]}"#).unwrap();
        assert_eq!(
            parse_global(&g).unwrap(),
            Some(Global {
                asn: 65001,
                router_id: "10.200.0.2".into()
            })
        );
        assert_eq!(parse_global(&serde_json::json!({})).unwrap(), None);

        let n: Value = serde_json::from_str(r#"[{"apply_policy":{},"conf":{"local_asn":65001,"neighbor_address":"10.200.0.254","peer_asn":65000,"type":1},"state":{"messages":{"received":{},"sent":{}},"neighbor_address":"10.200.0.254","peer_asn":65000,"type":1,"queues":{},"session_state":6},"timers":{}}]"#).unwrap();
        assert_eq!(
            parse_neighbors(&n).unwrap(),
            [Peer {
                addr: "10.200.0.254".parse().unwrap(),
                asn: 65000,
                session: Session::Established
            }]
        );
        // A peer just added: no session_state yet (zero values are left out).
        let n: Value = serde_json::from_str(
            r#"[{"conf":{"neighbor_address":"10.200.0.254","peer_asn":65000},"state":{}}]"#,
        )
        .unwrap();
        assert_eq!(parse_neighbors(&n).unwrap()[0].session, Session::Unknown);
        assert!(parse_neighbors(&serde_json::json!({})).is_err());

        let r: Value = serde_json::from_str(r#"{"10.220.0.100/32":[{"nlri":{"prefix":"10.220.0.100/32"},"age":1796092648,"best":true,"attrs":[{"type":1,"value":2},{"type":3,"nexthop":"10.200.0.2"}],"stale":false}],"10.9.0.0/16":[{"nlri":{"prefix":"10.9.0.0/16"},"attrs":[{"type":3,"nexthop":"10.200.0.2"}]}],"10.220.0.101/32":[{"nlri":{"prefix":"10.220.0.101/32"},"attrs":[{"type":3,"nexthop":"10.200.0.254"}],"neighbor-ip":"10.200.0.254"}]}"#).unwrap();
        let paths = parse_rib(&r).unwrap();
        assert_eq!(
            paths.into_iter().collect::<Vec<_>>(),
            [(
                "10.220.0.100".parse().unwrap(),
                vec!["10.200.0.2".parse().unwrap()]
            )]
        );
        assert!(parse_rib(&serde_json::json!({})).unwrap().is_empty());
    }
}
