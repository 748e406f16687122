//! `lb vip-guard`: a helper process the agent starts with a pipe on its
//! stdin. The agent tells it each virtual address it adds or removes; when
//! the pipe closes without a clean goodbye — the agent was killed, even with
//! SIGKILL — the guard removes the addresses still held, so a dead director
//! never keeps answering ARP / ND for a VIP its peer has taken over.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, Write as _},
    net::IpAddr,
    process::Stdio,
};

use super::addr;
use crate::{config::vrrp::Vip, util::Chain};

/// The guard could not start (agent side) or run (guard side).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("locating the lb executable")]
    Exe(#[source] std::io::Error),
    #[error("starting lb vip-guard")]
    Start(#[source] std::io::Error),
    #[error("guard stdin")]
    Stdin,
    #[error("opening rtnetlink")]
    Netlink(#[source] std::io::Error),
    #[error("reading the agent's pipe")]
    Pipe(#[source] tokio::task::JoinError),
}

/// The agent's end: one line per change.
pub struct Guard {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
}

impl Guard {
    /// Starts `lb vip-guard` (this executable).
    pub fn spawn() -> Result<Guard, Error> {
        let exe = std::env::current_exe().map_err(Error::Exe)?;
        let mut child = std::process::Command::new(exe)
            .arg("vip-guard")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(Error::Start)?;
        let stdin = child.stdin.take().ok_or(Error::Stdin)?;
        Ok(Guard { child, stdin })
    }

    pub fn held(&mut self, index: u32, vip: &Vip, on: bool) {
        let verb = if on { "add" } else { "del" };
        if let Err(e) = writeln!(self.stdin, "{verb} {index} {} {}", vip.addr, vip.prefix) {
            tracing::warn!("VIP guard: {e}");
        }
    }

    /// Clean stop: the agent released everything itself.
    pub fn finish(mut self) {
        let _ = writeln!(self.stdin, "bye");
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

/// The guard process itself.
pub async fn run() -> Result<(), Error> {
    // Signals aimed at the agent's process group are not for the guard:
    // only the pipe tells it the agent is gone.
    // SAFETY: setting signal dispositions to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let (conn, nl, _) = rtnetlink::new_connection().map_err(Error::Netlink)?;
    tokio::spawn(conn);
    let held = tokio::task::spawn_blocking(|| {
        let mut held: BTreeSet<(u32, IpAddr, u8)> = BTreeSet::new();
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.first() == Some(&"bye") {
                return BTreeSet::new();
            }
            if let [verb, idx, ip, prefix] = w[..] {
                let (Ok(idx), Ok(ip), Ok(prefix)) = (idx.parse(), ip.parse(), prefix.parse())
                else {
                    continue;
                };
                if verb == "add" {
                    held.insert((idx, ip, prefix));
                } else {
                    held.remove(&(idx, ip, prefix));
                }
            }
        }
        held
    })
    .await
    .map_err(Error::Pipe)?;
    for (idx, ip, prefix) in held {
        let vip = Vip {
            addr: ip,
            prefix,
            dev: None,
            label: None,
            scope: 0,
        };
        match addr::del(&nl, idx, &vip).await {
            Ok(true) => eprintln!("lb vip-guard: agent gone; removed {ip}/{prefix}"),
            Ok(false) => {}
            Err(e) => eprintln!("lb vip-guard: removing {ip}/{prefix}: {}", Chain(&e)),
        }
    }
    Ok(())
}
