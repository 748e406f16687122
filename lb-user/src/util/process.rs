//! Configured programs (checkers, VRRP scripts, notify_* and quorum_*), run
//! as keepalived runs them: their words as given, never through a shell.

use std::{io, process::ExitStatus, time::Duration};

/// Longest a notify / quorum program may run before it is killed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a bounded run has no exit status.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
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

/// A configured program as keepalived runs it: its words as given (never a
/// shell), an empty environment but PATH, no input or output, optionally as
/// another user, killed if its handle is dropped.
pub fn program(argv: &[String], user: Option<(u32, u32)>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs [`program`] and waits for it, killing it after `timeout`.
pub async fn run_bounded(
    argv: &[String],
    timeout: Duration,
    user: Option<(u32, u32)>,
) -> Result<ExitStatus, RunError> {
    let mut child = program(argv, user)
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: argv[0].clone(),
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
pub fn run_script(argv: Vec<String>, what: String) -> tokio::task::JoinHandle<()> {
    run_script_as(argv, what, None)
}

/// [`run_script`] as the given (uid, gid).
pub fn run_script_as(
    argv: Vec<String>,
    what: String,
    user: Option<(u32, u32)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match run_bounded(&argv, SCRIPT_TIMEOUT, user).await {
            Ok(st) if st.success() => tracing::info!(%what, program = %argv[0], "ran"),
            Ok(st) => tracing::warn!(%what, program = %argv[0], "exited with {st}"),
            Err(RunError::Spawn { source, .. }) => {
                tracing::warn!(%what, program = %argv[0], "cannot run: {source}")
            }
            Err(e) => tracing::warn!(%what, program = %argv[0], "{e}"),
        }
    })
}
