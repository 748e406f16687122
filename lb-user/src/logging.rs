//! Where `lb`'s log goes and how it looks: `--log-level`, `--log-format`,
//! colour only on a terminal, and journald's conventions under systemd.
//!
//! Rules (README: Logs):
//! - `--log-level LEVEL` decides what is logged; without it `RUST_LOG` is read
//!   (any `tracing_subscriber::EnvFilter` directive, e.g.
//!   `lb_user::vrrp=debug,info`), and without either it is `info`. The option
//!   wins over the environment: a `RUST_LOG` left in a shell or a unit's
//!   environment never silently changes what an explicit `--log-level` asks.
//! - ANSI colours only when stderr is a terminal and `NO_COLOR` is unset or
//!   empty (<https://no-color.org>); a pipe, a file or the journal gets plain
//!   text.
//! - When stderr is the journal's stream (systemd sets `JOURNAL_STREAM` to
//!   the `DEVICE:INODE` of that socket, systemd.exec(5)), every line starts
//!   with its syslog priority as `<N>` (sd-daemon(3): journald stores it as
//!   the entry's PRIORITY and strips it) and carries no timestamp of its own
//!   (the journal stamps each entry). The check compares stderr's own device
//!   and inode, so a program started by the agent with its stderr elsewhere
//!   never takes it up.
use std::{fmt, io::IsTerminal as _};

use tracing::{Event, Level as TLevel, Subscriber};
use tracing_subscriber::{
    filter::EnvFilter,
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    layer::SubscriberExt as _,
    registry::LookupSpan,
    util::SubscriberInitExt as _,
    Layer as _,
};

/// `--log-level`: the least severe level logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    /// The directive an `EnvFilter` takes for this level.
    pub fn directive(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

/// `--log-format`: one line of text per event, or one JSON object per line
/// (tracing-subscriber's JSON format: `timestamp`, `level`, `fields` with
/// `message` and the event's own fields, `target`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// The filter directives in force: `--log-level` if given, else a
/// non-empty `RUST_LOG`, else `info`. Below `debug`, the netlink crates'
/// own warnings are left out: they report attributes of newer kernels
/// they do not parse (e.g. `IFLA_INET6_CONF` of 240 bytes on 6.18, twice a
/// second with the host-MAC watch), which says nothing about lb.
pub fn directives(level: Option<Level>, rust_log: Option<&str>) -> String {
    let quiet = |l: Level| match l {
        Level::Error | Level::Warn | Level::Info => {
            format!(
                "{},netlink_packet_route=error,netlink_packet_core=error",
                l.directive()
            )
        }
        _ => l.directive().to_owned(),
    };
    match (level, rust_log.map(str::trim)) {
        (Some(l), _) => quiet(l),
        (None, Some(env)) if !env.is_empty() => env.to_owned(),
        (None, _) => quiet(Level::Info),
    }
}

/// True when `journal_stream` (the value of `JOURNAL_STREAM`, `DEV:INODE` in
/// decimal) names the file with device `dev` and inode `ino`.
pub fn is_journal_stream(journal_stream: Option<&str>, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.and_then(|v| v.trim().split_once(':')) else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// Is stderr connected to the journal (systemd.exec(5), `$JOURNAL_STREAM`)?
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // SAFETY: fstat fills the zeroed struct for the valid descriptor 2.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    is_journal_stream(v.to_str(), st.st_dev, st.st_ino)
}

/// sd-daemon(3) priority of a tracing level: LOG_ERR 3, LOG_WARNING 4,
/// LOG_INFO 6, LOG_DEBUG 7 (trace has no syslog level of its own).
pub fn syslog_priority(level: &TLevel) -> u8 {
    match *level {
        TLevel::ERROR => 3,
        TLevel::WARN => 4,
        TLevel::INFO => 6,
        _ => 7,
    }
}

/// An event format that starts each line with `<N>`, the event's syslog
/// priority, then hands over to `F`.
struct Prioritised<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber on stderr (see the module's rules).
pub fn init(level: Option<Level>, format: Format) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let wanted = directives(level, rust_log.as_deref());
    // A RUST_LOG that does not parse is reported, not fatal.
    let (filter, bad) = match EnvFilter::try_new(&wanted) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(Level::Info.directive()), Some((wanted, e))),
    };
    let journal = stderr_is_journal();
    let colour = !journal
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let base = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let layer = match (format, journal) {
        (Format::Text, false) => base.boxed(),
        (Format::Text, true) => base
            .event_format(Prioritised(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .boxed(),
        (Format::Json, false) => base.json().boxed(),
        (Format::Json, true) => base
            .json()
            .event_format(Prioritised(
                tracing_subscriber::fmt::format().json().without_time(),
            ))
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .init();
    if let Some((wanted, e)) = bad {
        tracing::warn!("log filter {wanted:?} ignored ({e}); logging at info");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_wins_over_rust_log_which_wins_over_the_default() {
        assert_eq!(
            directives(Some(Level::Warn), Some("debug")),
            "warn,netlink_packet_route=error,netlink_packet_core=error"
        );
        assert_eq!(directives(Some(Level::Trace), None), "trace");
        assert_eq!(
            directives(None, Some("lb_user::vrrp=debug,info")),
            "lb_user::vrrp=debug,info"
        );
        let info = "info,netlink_packet_route=error,netlink_packet_core=error";
        assert_eq!(directives(None, Some("  ")), info);
        assert_eq!(directives(None, None), info);
    }

    #[test]
    fn journal_stream_must_name_this_very_file() {
        assert!(is_journal_stream(Some("8:12345"), 8, 12345));
        assert!(!is_journal_stream(Some("8:12345"), 8, 12346));
        assert!(!is_journal_stream(Some("9:12345"), 8, 12345));
        assert!(!is_journal_stream(Some("garbage"), 8, 12345));
        assert!(!is_journal_stream(Some(""), 0, 0));
        assert!(!is_journal_stream(None, 8, 12345));
    }

    #[test]
    fn priorities_are_sd_daemon_levels() {
        assert_eq!(syslog_priority(&TLevel::ERROR), 3);
        assert_eq!(syslog_priority(&TLevel::WARN), 4);
        assert_eq!(syslog_priority(&TLevel::INFO), 6);
        assert_eq!(syslog_priority(&TLevel::DEBUG), 7);
        assert_eq!(syslog_priority(&TLevel::TRACE), 7);
    }

    #[test]
    fn a_journal_line_starts_with_its_priority_and_has_no_timestamp() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .event_format(Prioritised(
                tracing_subscriber::fmt::format().without_time(),
            ));
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(iface = "eth0", "no carrier");
            tracing::info!("running");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("<4> WARN ") && lines[0].ends_with("no carrier iface=\"eth0\""),
            "{text}"
        );
        assert!(lines[1].starts_with("<6> INFO "), "{text}");
        assert!(!text.contains('\u{1b}'), "colour codes in {text:?}");
    }
}
