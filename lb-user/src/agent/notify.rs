//! The agent's side of systemd's `Type=notify` (sd_notify(3), through the
//! sd-notify crate): `READY=1` once XDP is attached and the configuration
//! applied, `RELOADING=1` … `READY=1` around each reload (with
//! `MONOTONIC_USEC`, as systemd.service(5) asks of reload notifications),
//! `STOPPING=1` when a stop begins, and `STATUS=` lines that
//! `systemctl status lb` shows. Without `$NOTIFY_SOCKET` (not started by
//! systemd) every call does nothing. A failed send is logged at debug level
//! only: the service manager going away must not disturb forwarding.
use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Start-up done: XDP attached, configuration applied, API listening.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading the configuration"),
        ]),
    }
}

/// A reload ended (applied, refused or failed: the agent runs on either
/// way); `status` says which.
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A stop begins (SIGTERM / SIGINT).
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// A status line only.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}
