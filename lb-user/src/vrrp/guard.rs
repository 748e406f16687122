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

use anyhow::Context as _;

use super::addr;
use crate::config::vrrp::Vip;

/// The agent's end: one line per change.
pub struct Guard {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
}

impl Guard {
    /// Starts `lb vip-guard` (this executable).
    pub fn spawn() -> anyhow::Result<Guard> {
        let exe = std::env::current_exe().context("locating the lb executable")?;
        let mut child = std::process::Command::new(exe)
            .arg("vip-guard")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("starting lb vip-guard")?;
        let stdin = child.stdin.take().context("guard stdin")?;
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
pub async fn run() -> anyhow::Result<()> {
    // Signals aimed at the agent's process group are not for the guard:
    // only the pipe tells it the agent is gone.
    // SAFETY: setting signal dispositions to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let (conn, nl, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
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
    .await?;
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
            Err(e) => eprintln!("lb vip-guard: removing {ip}/{prefix}: {e:#}"),
        }
    }
    Ok(())
}
