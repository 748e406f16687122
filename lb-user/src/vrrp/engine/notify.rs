//! Notifications of state changes: the notify programs, as keepalived
//! runs them, and mail.

use std::sync::Arc;

use super::Engine;
use crate::{
    config::vrrp::Notify,
    util::{
        process::{self, Program},
        Chain,
    },
    vrrp::{machine::State, smtp},
};

impl Engine {
    /// Runs the notify programs and sends mail for a state change.
    pub(super) fn notify(&self, n: &Notify, kind: &str, who: &str, st: State, prio: u8) {
        for (what, program) in notify_programs(n, kind, who, st, prio) {
            process::run_script(program, what);
        }
        let sname = if st == State::Init { "STOP" } else { st.name() };
        let g = &self.cfg.globals;
        if g.smtp_server.is_some()
            && !g.notification_email.is_empty()
            && n.smtp_alert != Some(false)
        {
            let subject = format!(
                "[{}] VRRP {} {who} - Entering {sname} state",
                g.router_id.clone().unwrap_or_else(hostname),
                if kind == "GROUP" { "Group" } else { "Instance" },
            );
            let g = Arc::new(g.clone());
            tokio::spawn(async move {
                if let Err(e) = smtp::send(&g, &subject, &format!("=> {subject} <=")).await {
                    tracing::warn!("mail notification failed: {}", Chain(&e));
                }
            });
        }
    }
}

/// The programs a state change runs, as keepalived: the state's own
/// (`notify_master` …, `notify_stop` on shutdown) as configured, and
/// `notify` with TYPE NAME STATE PRIORITY appended; each as its account.
pub fn notify_programs(
    n: &Notify,
    kind: &str,
    who: &str,
    st: State,
    prio: u8,
) -> Vec<(String, Program)> {
    let specific = match st {
        State::Master => &n.master,
        State::Backup => &n.backup,
        State::Fault => &n.fault,
        State::Init => &n.stop,
    };
    let sname = if st == State::Init { "STOP" } else { st.name() };
    let mut out = Vec::new();
    if let Some(p) = specific {
        out.push((format!("notify_{} {who}", sname.to_lowercase()), p.clone()));
    }
    if let Some(p) = &n.any {
        let a = p.with_args([
            kind.to_string(),
            who.to_string(),
            sname.to_string(),
            prio.to_string(),
        ]);
        out.push((format!("notify {who}"), a));
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "lb".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_programs_get_keepalived_arguments() {
        let p = |argv: &[&str]| Some(Program::new(argv.iter().map(|a| a.to_string()).collect()));
        let n = Notify {
            master: p(&["/bin/to-master", "x"]),
            stop: p(&["/bin/stopped"]),
            any: p(&["/bin/notify"]),
            ..Default::default()
        };
        let p = notify_programs(&n, "INSTANCE", "VI_1", State::Master, 150);
        assert_eq!(p[0].1.argv, ["/bin/to-master", "x"]);
        assert_eq!(
            p[1].1.argv,
            ["/bin/notify", "INSTANCE", "VI_1", "MASTER", "150"]
        );
        let p = notify_programs(&n, "GROUP", "G1", State::Init, 0);
        assert_eq!(p[0].1.argv, ["/bin/stopped"]);
        assert_eq!(p[1].1.argv, ["/bin/notify", "GROUP", "G1", "STOP", "0"]);
        // No notify_backup: only the generic one.
        let p = notify_programs(&n, "INSTANCE", "VI_1", State::Backup, 100);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].1.argv[3], "BACKUP");
    }
}
