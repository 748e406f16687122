//! Configured programs (checkers, VRRP scripts, notify_* and quorum_*), run
//! as keepalived runs them: their words as given, never through a shell,
//! each run checked by [`security`](super::security) first and the resolved
//! file executed (not the name again).

use std::{io, process::ExitStatus, time::Duration};

use super::security::{self, Account, Refused};

/// A configured program: what to run, as whom, under which policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The program and its arguments (keepalived's quoting rules, no shell).
    pub argv: Vec<String>,
    /// The account it runs as; `None`: the agent's own (root).
    pub user: Option<Account>,
    /// `enable_script_security`: a program that would run as root but that
    /// a non-root user could change is refused (else it runs, with a
    /// warning, as keepalived runs it).
    pub script_security: bool,
}

impl Program {
    /// `argv` as the agent's account, no script security (the
    /// configuration's pass sets both).
    pub fn new(argv: Vec<String>) -> Program {
        Program {
            argv,
            user: None,
            script_security: false,
        }
    }

    /// The same program with `extra` arguments appended (keepalived's
    /// `notify` gets TYPE NAME STATE PRIORITY).
    pub fn with_args(&self, extra: impl IntoIterator<Item = String>) -> Program {
        let mut p = self.clone();
        p.argv.extend(extra);
        p
    }

    /// The account the security rule judges: the agent runs as root.
    pub fn account(&self) -> Account {
        self.user.unwrap_or((0, 0))
    }
}

/// Longest a notify / quorum program may run before it is killed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a bounded run has no exit status.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("not run")]
    Refused(#[source] Refused),
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("killed after {0:?}")]
    Killed(Duration),
    #[error(transparent)]
    Wait(io::Error),
}

/// A configured program as keepalived runs it: checked at once (see
/// [`security`]) and, unless refused, the resolved file with the words as
/// given (never a shell; `argv[0]` as configured), an empty environment but
/// PATH, no input or output, as its account, killed if its handle is
/// dropped. An insecure program allowed (no `enable_script_security`) was
/// warned about at load; each run logs it at debug level only (a
/// vrrp_script runs every interval).
pub fn command(p: &Program) -> Result<tokio::process::Command, Refused> {
    let argv0 = p.argv.first().map(String::as_str).unwrap_or("");
    let checked = security::authorize(argv0, p.account(), p.script_security)?;
    if let Some(i) = &checked.insecure {
        tracing::debug!(program = %argv0, "{i}: runs as root anyway (enable_script_security is not set)");
    }
    let mut cmd = tokio::process::Command::new(&checked.path);
    cmd.arg0(argv0);
    if let Some((uid, gid)) = p.user {
        cmd.uid(uid).gid(gid);
    }
    cmd.args(&p.argv[1..])
        .env_clear()
        .env("PATH", security::SEARCH_PATH)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    Ok(cmd)
}

/// Runs [`command`] and waits for it, killing it after `timeout`.
pub async fn run_bounded(p: &Program, timeout: Duration) -> Result<ExitStatus, RunError> {
    let mut child = command(p)
        .map_err(RunError::Refused)?
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: p.argv.first().cloned().unwrap_or_default(),
            source,
        })?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Err(_) => {
            let _ = child.kill().await;
            Err(RunError::Killed(timeout))
        }
        Ok(r) => r.map_err(RunError::Wait),
    }
}

/// Runs a notify_* / quorum_* program in the background: output
/// discarded, killed after [`SCRIPT_TIMEOUT`], the outcome logged.
pub fn run_script(p: Program, what: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let program = p.argv.first().cloned().unwrap_or_default();
        match run_bounded(&p, SCRIPT_TIMEOUT).await {
            Ok(st) if st.success() => tracing::info!(%what, %program, "ran"),
            Ok(st) => tracing::warn!(%what, %program, "exited with {st}"),
            Err(RunError::Spawn { source, .. }) => {
                tracing::warn!(%what, %program, "cannot run: {source}")
            }
            Err(e) => tracing::warn!(%what, %program, "{}", super::chain(&e)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("lb-process-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn words_never_reach_a_shell() {
        let d = dir("noshell");
        let m = d.join("m");
        // Shell syntax in an argument is one literal word for the program.
        let p = Program::new(vec![
            "/bin/echo".into(),
            format!("x; touch {}", m.display()),
            format!("$(touch {})", m.display()),
        ]);
        assert!(run_bounded(&p, SCRIPT_TIMEOUT).await.unwrap().success());
        // Nor as the program: no such file, refused before anything runs.
        let p = Program::new(vec![format!("touch {}; true", m.display())]);
        assert!(matches!(
            run_bounded(&p, SCRIPT_TIMEOUT).await,
            Err(RunError::Refused(Refused::Unusable(_)))
        ));
        assert!(!m.exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn the_resolved_file_runs_with_argv0_as_configured() {
        let d = dir("argv0");
        let out = d.join("out");
        let prog = d.join("show.sh");
        std::fs::write(
            &prog,
            format!("#!/bin/sh\necho \"$0 $1\" > '{}'\n", out.display()),
        )
        .unwrap();
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink("show.sh", &link).unwrap();
        let p = Program::new(vec![link.display().to_string(), "a b".into()]);
        assert!(run_bounded(&p, SCRIPT_TIMEOUT).await.unwrap().success());
        // A script's $0 is the file the kernel executed: the resolved one.
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("{} a b\n", prog.display())
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
