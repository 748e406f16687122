//! Every program the configuration runs — `vrrp_script`, `MISC_CHECK`,
//! `notify_up` / `notify_down`, `quorum_up` / `quorum_down`, the notify
//! programs of `vrrp_instance` and `vrrp_sync_group`, and lb_bgp's
//! `gobgp_program` (always root) — prepared as
//! keepalived 2.2.7 prepares them (`get_default_script_user` in
//! lib/notify.c, `check_vrrp_script_security` in vrrp/vrrp.c,
//! `check_check_script_security` in check/check_data.c): the account it runs
//! as, and the script security rule of [`crate::util::security`] checked at
//! load, with a located diagnostic. The rule is checked again before each
//! run (`util::process`).

use super::{check::CheckKind, value::lookup_user, Config, Diag, Loc};
use crate::util::{
    process::Program,
    security::{self, Account},
};

/// The account keepalived runs programs as when neither the program nor
/// `script_user` names one, if it exists.
pub const DEFAULT_USER: &str = "keepalived_script";

/// The account of a program that names none (keepalived's
/// `get_default_script_user`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultUser {
    /// `script_user`, else the `keepalived_script` account.
    Account(Account),
    /// Neither exists: the agent's own account (root).
    Agent,
    /// Neither exists and `enable_script_security` is set: keepalived 2.2.7
    /// then refuses to run such programs ("Unable to set default user
    /// keepalived_script for script").
    Missing,
}

/// keepalived's default account: `script_user`, else [`DEFAULT_USER`] as
/// `lookup` finds it, else root unless `script_security`.
pub fn default_user(
    script_user: Option<Account>,
    script_security: bool,
    lookup: impl Fn(&str) -> Option<Account>,
) -> DefaultUser {
    match script_user.or_else(|| lookup(DEFAULT_USER)) {
        Some(a) => DefaultUser::Account(a),
        None if script_security => DefaultUser::Missing,
        None => DefaultUser::Agent,
    }
}

/// Gives every program its account and policy and checks it where it is
/// configured: a program that cannot run (missing, not executable by its
/// account) is a warning, as it fails each time it is due (keepalived
/// disables it); one run as root that a non-root user could change is an
/// error with `enable_script_security` (keepalived refuses it: `keepalived
/// -t` fails) and a warning without (keepalived runs it, reporting a
/// "SECURITY VIOLATION"); a bare name found by PATH search is a warning
/// (keepalived asks for the full path).
pub fn secure(cfg: &mut Config, diags: &mut Vec<Diag>) {
    let g = &cfg.vrrp.globals;
    let on = g.enable_script_security;
    let default = default_user(g.script_user, on, lookup_user);
    let mut missing_reported = false;
    for (loc, keyword, p) in programs(cfg) {
        p.script_security = on;
        if p.user.is_none() {
            match default {
                DefaultUser::Account(a) => p.user = Some(a),
                DefaultUser::Agent => {}
                DefaultUser::Missing => {
                    if !missing_reported {
                        diags.push(Diag::error(
                            &loc,
                            Some(keyword),
                            format!(
                                "enable_script_security without script_user, and no user '{DEFAULT_USER}': \
                                 keepalived refuses to run programs as root by default; set script_user \
                                 (root to run them as root) or create {DEFAULT_USER}"
                            ),
                        ));
                        missing_reported = true;
                    }
                    continue;
                }
            }
        }
        let name = p.argv.first().map(String::as_str).unwrap_or("");
        match security::check(name, p.account()) {
            Err(e) => diags.push(Diag::warning(
                &loc,
                Some(keyword),
                format!("{e}; it fails each time it is due (keepalived disables it)"),
            )),
            Ok(c) => {
                if c.searched {
                    diags.push(Diag::warning(
                        &loc,
                        Some(keyword),
                        format!(
                            "'{name}' found by PATH search as {}; give the full path (as keepalived asks)",
                            c.path.display()
                        ),
                    ));
                }
                if let Some(i) = c.insecure {
                    diags.push(insecure(&loc, keyword, &i, on));
                }
            }
        }
    }
    if let Some(b) = &mut cfg.bgp {
        b.script_security = on;
        gobgp_program(b, on, diags);
    }
}

/// The diagnostic of a program run as root that a non-root user could
/// change: an error with `enable_script_security` (`on`), else a warning.
fn insecure(loc: &Loc, keyword: &'static str, i: &security::Insecure, on: bool) -> Diag {
    if on {
        Diag::error(
            loc,
            Some(keyword),
            format!("{i}: a non-root user could change what runs as root; refused (enable_script_security)"),
        )
    } else {
        Diag::warning(
            loc,
            Some(keyword),
            format!("{i}: a non-root user could change what runs as root; run anyway as enable_script_security is not set (keepalived: SECURITY VIOLATION)"),
        )
    }
}

/// `lb_bgp`'s `gobgp_program`, which the agent runs as root to talk to the
/// daemon: the same rule as the other programs (a missing one is a
/// warning: nothing is announced until it is installed; an insecure one an
/// error under `enable_script_security`). The default, a bare `gobgp`, is
/// found in [`security::SEARCH_PATH`] without a warning; a bare name the
/// file gives is reported as the other programs' are.
fn gobgp_program(b: &super::bgp::Bgp, on: bool, diags: &mut Vec<Diag>) {
    let (loc, keyword) = match &b.program_at {
        Some(at) => (at, "gobgp_program"),
        None => (&b.loc, super::bgp::KEYWORD),
    };
    let name = b.program.to_string_lossy();
    match security::check(&name, (0, 0)) {
        Err(e) => diags.push(Diag::warning(
            loc,
            Some(keyword),
            format!(
                "{e}; every request to the BGP daemon fails and no VIP is announced until it is there (Debian's gobgpd package)"
            ),
        )),
        Ok(c) => {
            if c.searched && b.program_at.is_some() {
                diags.push(Diag::warning(
                    loc,
                    Some(keyword),
                    format!(
                        "'{name}' found by PATH search as {}; give the full path (as keepalived asks)",
                        c.path.display()
                    ),
                ));
            }
            if let Some(i) = c.insecure {
                diags.push(insecure(loc, keyword, &i, on));
            }
        }
    }
}

/// Every program of `cfg` with where it is configured (its block) and its
/// keyword.
fn programs(cfg: &mut Config) -> Vec<(Loc, &'static str, &mut Program)> {
    let mut out = Vec::new();
    let v = &mut cfg.vrrp;
    for s in v.scripts.values_mut() {
        out.push((s.loc.clone(), "script", &mut s.program));
    }
    let notifies = v
        .instances
        .iter_mut()
        .map(|i| (&i.loc, &mut i.notify))
        .chain(v.groups.iter_mut().map(|g| (&g.loc, &mut g.notify)));
    for (loc, n) in notifies {
        let named = [
            ("notify_master", &mut n.master),
            ("notify_backup", &mut n.backup),
            ("notify_fault", &mut n.fault),
            ("notify_stop", &mut n.stop),
            ("notify", &mut n.any),
        ];
        for (k, p) in named {
            if let Some(p) = p {
                out.push((loc.clone(), k, p));
            }
        }
    }
    for vs in &mut cfg.services {
        for (k, p) in [
            ("quorum_up", &mut vs.quorum_up),
            ("quorum_down", &mut vs.quorum_down),
        ] {
            if let Some(p) = p {
                out.push((vs.loc.clone(), k, p));
            }
        }
        for r in &mut vs.reals {
            for c in &mut r.checks {
                if let CheckKind::Misc { program, .. } = &mut c.kind {
                    out.push((r.loc.clone(), "MISC_CHECK", program));
                }
            }
            for (k, p) in [
                ("notify_up", &mut r.notify_up),
                ("notify_down", &mut r.notify_down),
            ] {
                if let Some(p) = p {
                    out.push((r.loc.clone(), k, p));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_account_is_keepalived_2_2_7s() {
        let none = |_: &str| None;
        let exists = |n: &str| (n == DEFAULT_USER).then_some((990, 990));
        // script_user first, whatever exists.
        assert_eq!(
            default_user(Some((5, 6)), true, exists),
            DefaultUser::Account((5, 6))
        );
        assert_eq!(
            default_user(None, false, exists),
            DefaultUser::Account((990, 990))
        );
        assert_eq!(default_user(None, false, none), DefaultUser::Agent);
        assert_eq!(default_user(None, true, none), DefaultUser::Missing);
    }
}
