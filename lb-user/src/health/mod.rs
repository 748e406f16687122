//! Health checking with keepalived's checker semantics.
//!
//! Each checker runs on its own schedule: every `delay_loop`; after a
//! failure it is retried `retry` times, `delay_before_retry` apart, and only
//! when all of those fail too does the checker go down. One success brings
//! it back up. A real is up when all its checkers are up. `alpha` starts
//! the checkers down (the real gets traffic only after passing), otherwise
//! they start up. The state machine here is pure (time is passed in), so it
//! is tested with a controllable clock; [`monitor`] runs it with tokio and
//! [`probe`] does the network and process work.

pub mod monitor;
pub mod probe;
pub mod quorum;

use std::time::Duration;

use crate::{
    config::check::{Check, CheckKind, Timing},
    util::{fmt_sock, process},
};

/// keepalived's defaults.
pub const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A checker's effective timing (its own, else the real's, else the
/// virtual server's, else keepalived's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub delay_loop: Duration,
    pub connect_timeout: Duration,
    pub retry: u32,
    pub delay_before_retry: Duration,
    pub warmup: Duration,
    /// While down, probe every delay_before_retry (`fast_recovery`).
    pub fast_recovery: bool,
}

impl Schedule {
    /// keepalived 2.2.7's resolution (check_data.c, check_api.c and each
    /// checker's defaults): retry 1, delay_before_retry 1 s, except
    /// HTTP_GET / SSL_GET (3 s), MISC_CHECK (retry 0) and DNS_CHECK (retry
    /// 3, delay_before_retry = delay_loop); warmup defaults to delay_loop
    /// (the first probe comes at a random time within it).
    pub fn resolve(check: &Check, real: Timing, service: Timing) -> Schedule {
        if let CheckKind::File(_) = check.kind {
            // FILE_CHECK has no timing keywords (check_file.c): the file
            // is read every FILE_POLL and a change applies at once.
            return Schedule {
                delay_loop: crate::track::FILE_POLL,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                retry: 0,
                delay_before_retry: crate::track::FILE_POLL,
                warmup: Duration::ZERO,
                fast_recovery: false,
            };
        }
        let t = check.timing.or(real).or(service);
        let delay_loop = t.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP);
        let (retry, before) = match check.kind {
            CheckKind::Misc { .. } => (0, Duration::from_secs(1)),
            CheckKind::Http { .. } => (1, Duration::from_secs(3)),
            CheckKind::Dns { .. } => (3, delay_loop),
            _ => (1, Duration::from_secs(1)),
        };
        Schedule {
            delay_loop,
            connect_timeout: t.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            retry: t.retry.unwrap_or(retry),
            delay_before_retry: t.delay_before_retry.unwrap_or(before),
            warmup: t.warmup.unwrap_or(delay_loop),
            fast_recovery: check.fast_recovery,
        }
    }
}

/// Result of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Up,
    /// MISC_CHECK with misc_dynamic: up, with this weight.
    UpWeight(u32),
    Down(String),
}

/// One checker's state. Times are offsets on a monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckState {
    pub up: bool,
    /// Weight set by a dynamic MISC_CHECK (None: the configured one).
    pub weight: Option<u32>,
    /// Failures in a row in the current round (retries used + 1).
    pub failures: u32,
    /// When the next probe is due.
    pub next: Duration,
    pub last: Option<Outcome>,
    pub last_change: Option<Duration>,
    pub probes: u64,
    /// How long the last probe took (set by the monitor, which times it).
    pub last_duration: Option<Duration>,
}

impl CheckState {
    /// A checker configured at `now`; the first probe after `first_delay`.
    pub fn new(alpha: bool, now: Duration, first_delay: Duration) -> Self {
        CheckState {
            up: !alpha,
            weight: None,
            failures: 0,
            next: now + first_delay,
            last: None,
            last_change: None,
            probes: 0,
            last_duration: None,
        }
    }

    /// Records a probe's outcome at `now` and schedules the next one.
    /// Returns true when the checker changed state (up/down or weight).
    pub fn record(&mut self, s: &Schedule, now: Duration, outcome: Outcome) -> bool {
        self.probes += 1;
        let before = (self.up, self.weight);
        match &outcome {
            Outcome::Up | Outcome::UpWeight(_) => {
                self.failures = 0;
                self.up = true;
                self.weight = match outcome {
                    Outcome::UpWeight(w) => Some(w),
                    _ => None,
                };
                self.next = now + s.delay_loop;
            }
            Outcome::Down(_) => {
                self.failures += 1;
                if self.failures <= s.retry {
                    self.next = now + s.delay_before_retry;
                } else {
                    self.failures = 0;
                    self.up = false;
                    self.next = now
                        + if s.fast_recovery {
                            s.delay_before_retry
                        } else {
                            s.delay_loop
                        };
                }
            }
        }
        self.last = Some(outcome);
        let changed = before != (self.up, self.weight);
        if changed {
            self.last_change = Some(now);
        }
        changed
    }
}

/// What the data plane does with a real, from its checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Schedulable, with the configured weight or a dynamic one.
    Up { weight: Option<u32> },
    /// Failed: removed from scheduling (its flows are rescheduled), or kept
    /// with weight 0 when `inhibit_on_failure`.
    Down { inhibit: bool },
}

/// Logs a quorum / real event and runs its program, if any.
pub fn handle_event(e: quorum::Event) -> Option<tokio::task::JoinHandle<()>> {
    use quorum::Event::*;
    let (what, argv) = match e {
        QuorumUp(s, a) => {
            tracing::info!(service = %s, "quorum gained");
            (format!("quorum_up {s}"), a)
        }
        QuorumDown(s, a) => {
            tracing::warn!(service = %s, "quorum lost");
            (format!("quorum_down {s}"), a)
        }
        RealUp(k, a) => (format!("notify_up {} {}", k.0, fmt_sock(k.1, k.2)), a),
        RealDown(k, a) => (format!("notify_down {} {}", k.0, fmt_sock(k.1, k.2)), a),
    };
    argv.map(|a| process::run_script(a, what))
}

/// A real's health from its checkers' states (all must be up).
pub fn combine<'a>(states: impl IntoIterator<Item = &'a CheckState>, inhibit: bool) -> Health {
    let mut weight = None;
    for s in states {
        if !s.up {
            return Health::Down { inhibit };
        }
        if s.weight.is_some() {
            weight = s.weight;
        }
    }
    Health::Up { weight }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::process::Program;

    const S: u64 = 1;

    fn sched(retry: u32) -> Schedule {
        Schedule {
            delay_loop: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(3),
            retry,
            delay_before_retry: Duration::from_secs(2),
            warmup: Duration::ZERO,
            fast_recovery: false,
        }
    }

    fn t(s: u64) -> Duration {
        Duration::from_secs(s * S)
    }

    fn down() -> Outcome {
        Outcome::Down("connection refused".into())
    }

    #[test]
    fn retries_before_going_down_then_one_success_brings_it_back() {
        let s = sched(2);
        let mut c = CheckState::new(false, t(0), t(0));
        assert!(c.up);
        assert!(!c.record(&s, t(0), Outcome::Up));
        assert_eq!(c.next, t(6));
        // First failure at 6: retry at 8, then 10; the third failure is final.
        assert!(!c.record(&s, t(6), down()));
        assert_eq!((c.up, c.next), (true, t(8)));
        assert!(!c.record(&s, t(8), down()));
        assert_eq!((c.up, c.next), (true, t(10)));
        assert!(c.record(&s, t(10), down()));
        assert_eq!((c.up, c.next, c.last_change), (false, t(16), Some(t(10))));
        // Still failing: stays down, checked every delay_loop.
        assert!(!c.record(&s, t(16), down()));
        assert_eq!(c.next, t(18));
        // One success: up again at once.
        assert!(c.record(&s, t(18), Outcome::Up));
        assert!(c.up);
    }

    #[test]
    fn fast_recovery_probes_a_down_real_every_delay_before_retry() {
        let s = Schedule {
            fast_recovery: true,
            ..sched(0)
        };
        let mut c = CheckState::new(false, t(0), t(0));
        assert!(c.record(&s, t(0), down()));
        assert_eq!(c.next, t(2));
        assert!(!c.record(&s, t(2), down()));
        assert_eq!(c.next, t(4));
        assert!(c.record(&s, t(4), Outcome::Up));
        assert_eq!(c.next, t(10), "up again: back to delay_loop");
    }

    #[test]
    fn a_success_between_failures_resets_the_retries() {
        let s = sched(1);
        let mut c = CheckState::new(false, t(0), t(0));
        c.record(&s, t(0), down());
        c.record(&s, t(2), Outcome::Up);
        c.record(&s, t(8), down());
        assert!(c.up, "one failure of a new round is retried");
        assert!(c.record(&s, t(10), down()));
        assert!(!c.up);
    }

    #[test]
    fn retry_zero_goes_down_on_the_first_failure() {
        let s = sched(0);
        let mut c = CheckState::new(false, t(0), t(0));
        assert!(c.record(&s, t(0), down()));
        assert_eq!(c.next, t(6));
    }

    #[test]
    fn alpha_starts_down_until_a_pass() {
        let s = sched(1);
        let mut c = CheckState::new(true, t(0), t(3));
        assert!(!c.up);
        assert_eq!(c.next, t(3));
        assert!(!c.record(&s, t(3), down()));
        assert!(c.record(&s, t(5), Outcome::Up));
    }

    #[test]
    fn dynamic_weight_is_a_change_and_all_checkers_must_pass() {
        let s = sched(0);
        let mut a = CheckState::new(false, t(0), t(0));
        let mut b = CheckState::new(false, t(0), t(0));
        assert!(a.record(&s, t(0), Outcome::UpWeight(5)));
        assert!(!a.record(&s, t(6), Outcome::UpWeight(5)));
        assert_eq!(combine([&a, &b], false), Health::Up { weight: Some(5) });
        b.record(&s, t(0), down());
        assert_eq!(combine([&a, &b], true), Health::Down { inhibit: true });
    }

    #[test]
    fn timing_inherits_and_defaults_per_checker_kind() {
        use crate::config::check::{Check, CheckKind, Timing};
        let tcp = Check {
            kind: CheckKind::Tcp,
            fast_recovery: false,
            connect_ip: None,
            connect_port: None,
            bindto: None,
            timing: Timing {
                retry: Some(3),
                ..Default::default()
            },
        };
        let real = Timing {
            connect_timeout: Some(Duration::from_secs(2)),
            retry: Some(9),
            ..Default::default()
        };
        let vs = Timing {
            delay_loop: Some(Duration::from_secs(6)),
            ..Default::default()
        };
        let s = Schedule::resolve(&tcp, real, vs);
        assert_eq!(
            (
                s.delay_loop,
                s.connect_timeout,
                s.retry,
                s.delay_before_retry
            ),
            (t(6), t(2), 3, t(1))
        );
        assert_eq!(s.warmup, t(6), "warmup defaults to delay_loop");
        let http = Check {
            kind: CheckKind::Http {
                urls: vec![],
                virtualhost: None,
                tls: false,
                sni: false,
                http11: false,
            },
            timing: Timing::default(),
            ..tcp.clone()
        };
        let s = Schedule::resolve(&http, Timing::default(), Timing::default());
        assert_eq!(
            (
                s.delay_loop,
                s.connect_timeout,
                s.retry,
                s.delay_before_retry
            ),
            (t(60), t(5), 1, t(3))
        );
        let misc = Check {
            kind: CheckKind::Misc {
                program: Program::new(vec!["/bin/true".into()]),
                timeout: None,
                dynamic: false,
            },
            timing: Timing::default(),
            ..tcp
        };
        assert_eq!(
            Schedule::resolve(&misc, Timing::default(), Timing::default()).retry,
            0
        );
        let dns = Check {
            kind: CheckKind::Dns {
                qtype: 6,
                name: ".".into(),
            },
            ..misc
        };
        let s = Schedule::resolve(&dns, Timing::default(), vs);
        assert_eq!(
            (s.retry, s.delay_before_retry, s.warmup),
            (3, t(6), t(6)),
            "DNS_CHECK: retry 3, delay_before_retry and warmup = delay_loop"
        );
    }
}
