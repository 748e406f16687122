//! Drains in the agent (`POST /v1/drain`, `lb drain`): each runs in its own
//! task, so a CLI that goes away (Ctrl-C, a lost SSH session) leaves the
//! drain running, and `GET /v1/drain`, `lb list` and the metrics show it.
//!
//! A drain sets the real's weight to 0 through the runtime layer (the path
//! of `lb adm -e -w 0`), reads its connection counts from the pinned maps
//! every [`POLL`] on a blocking thread with handles of its own (as the
//! metrics do), and removes it (the path of `lb adm -d`) once no
//! connection is left or the timeout passed. The state machine is
//! [`crate::drain::Drain`]; this module only does the I/O.
//!
//! Cancelled: by a reload that is applied ([`Registry::cancel_all`]), by a
//! runtime change giving the real a non-zero weight
//! ([`Registry::cancel_real`], called before the change is applied), and
//! at the next poll when the real's weight is no longer 0 or the real left
//! the table through another change.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use crate::{
    config::RealKey,
    drain::{Cancel, Drain, DrainInfo, DrainList, DrainRequest, Observation, Step, POLL},
    runtime::{Change, ChangeError},
};

/// How long an ended drain stays listed (`GET /v1/drain`), so that a
/// client following it learns its outcome.
pub const KEEP_ENDED: Duration = Duration::from_secs(3600);
/// Ended drains listed at most (the oldest go first).
pub const MAX_ENDED: usize = 256;
/// Longest a poll waits for the reconciler's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The drains of this agent; cheap to clone. Its lock is held only to
/// read or change the table, never across an await.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// One drain per real: the running one, or the last ended.
    drains: BTreeMap<RealKey, Drain>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every drain listed (`GET /v1/drain`), ordered by service and real.
    pub fn list(&self) -> DrainList {
        let now = Instant::now();
        let mut g = self.lock();
        prune(&mut g.drains, now);
        DrainList {
            drains: g.drains.values().map(|d| d.info(now)).collect(),
        }
    }

    /// The running drain of `key`, if any.
    pub fn running(&self, key: &RealKey) -> Option<DrainInfo> {
        let g = self.lock();
        g.drains
            .get(key)
            .filter(|d| d.running())
            .map(|d| d.info(Instant::now()))
    }

    /// Cancels the drain of `key` if it is still waiting (a runtime change
    /// gives the real a weight again).
    pub fn cancel_real(&self, key: &RealKey, why: Cancel) {
        let now = Instant::now();
        if let Some(d) = self.lock().drains.get_mut(key) {
            if d.cancel(why.clone(), now) {
                tracing::info!("{}: {why}", name(key));
            }
        }
    }

    /// Cancels every waiting drain (an applied reload).
    pub fn cancel_all(&self, why: Cancel) {
        let now = Instant::now();
        for (key, d) in self.lock().drains.iter_mut() {
            if d.cancel(why.clone(), now) {
                tracing::info!("{}: {why}", name(key));
            }
        }
    }

    /// Applies `f` to the drain `id` of `key` (not a newer one of the same
    /// real); `None` when it is gone.
    fn with<T>(&self, key: &RealKey, id: u64, f: impl FnOnce(&mut Drain) -> T) -> Option<T> {
        self.lock()
            .drains
            .get_mut(key)
            .filter(|d| d.id == id)
            .map(f)
    }
}

/// `drain of real IP:PORT of service PROTO VIP:PORT`, for the log.
fn name(key: &RealKey) -> String {
    format!(
        "drain of real {} of service {}",
        crate::util::fmt_sock(key.1, key.2),
        key.0
    )
}

fn prune(drains: &mut BTreeMap<RealKey, Drain>, now: Instant) {
    drains.retain(|_, d| {
        d.ended
            .is_none_or(|e| now.saturating_duration_since(e) < KEEP_ENDED)
    });
    let mut ended: Vec<(Instant, RealKey)> = drains
        .iter()
        .filter_map(|(k, d)| d.ended.map(|e| (e, *k)))
        .collect();
    if ended.len() > MAX_ENDED {
        ended.sort();
        for (_, k) in &ended[..ended.len() - MAX_ENDED] {
            drains.remove(k);
        }
    }
}

/// Starts a drain (`POST /v1/drain`): checks the real exists, sets its
/// weight to 0, and spawns the task that follows it. A real already being
/// drained gives that drain back (`joined`: true) and changes nothing.
pub async fn start(
    registry: &Registry,
    changer: &super::change::Changer,
    bpffs: PathBuf,
    req: DrainRequest,
) -> Result<(DrainInfo, bool), ChangeError> {
    let key: RealKey = (req.service, req.addr, req.port);
    if let Some(d) = registry.running(&key) {
        return Ok((d, true));
    }
    let spec = changer
        .core
        .real(key)
        .await
        .map_err(|e| ChangeError::Refused(e.to_string()))??;
    // Registered before the weight changes: a second request for the same
    // real joins this one instead of starting another.
    let started_unix_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = {
        let mut g = registry.lock();
        if let Some(d) = g.drains.get(&key).filter(|d| d.running()) {
            return Ok((d.info(Instant::now()), true));
        }
        g.next_id += 1;
        let id = g.next_id;
        let d = Drain::new(
            id,
            key,
            req.timeout_s,
            spec.weight,
            Instant::now(),
            started_unix_s,
        );
        g.drains.insert(key, d);
        prune(&mut g.drains, Instant::now());
        id
    };
    let mut zero = spec.clone();
    zero.weight = 0;
    if let Err(e) = changer
        .apply(Change::EditReal {
            service: req.service,
            real: zero,
        })
        .await
    {
        registry.lock().drains.remove(&key);
        return Err(e);
    }
    tracing::info!(
        "{}: weight {} → 0, {}",
        name(&key),
        spec.weight,
        if req.timeout_s == 0 {
            "no timeout".to_string()
        } else {
            format!("timeout {}s", req.timeout_s)
        }
    );
    let info = registry
        .with(&key, id, |d| d.info(Instant::now()))
        .ok_or_else(|| ChangeError::Refused("the drain ended at once".into()))?;
    tokio::spawn(follow(registry.clone(), changer.clone(), bpffs, key, id));
    Ok((info, false))
}

/// Reads the real's weight (reconciler) and counts (maps); `Ok(None)`: the
/// real is no longer in the table.
async fn observe(
    changer: &super::change::Changer,
    bpffs: &std::path::Path,
    key: RealKey,
) -> Result<Option<Observation>, String> {
    let spec = match tokio::time::timeout(ASK_TIMEOUT, changer.core.real(key)).await {
        Err(_) => return Err("the reconciler did not answer".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(Err(_))) => return Ok(None),
        Ok(Ok(Ok(spec))) => spec,
    };
    let dir = bpffs.to_path_buf();
    let counts = tokio::task::spawn_blocking(move || {
        let dp =
            crate::dataplane::Dataplane::from_pins(&dir).map_err(|e| crate::util::chain(&e))?;
        crate::list::real_counts(&dp, &key).map_err(|e| crate::util::chain(&e))
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(counts.map(|(active, inactive)| Observation {
        weight: spec.weight,
        active,
        inactive,
    }))
}

/// The drain's task: polls every [`POLL`] until the state machine stops.
async fn follow(
    registry: Registry,
    changer: super::change::Changer,
    bpffs: PathBuf,
    key: RealKey,
    id: u64,
) {
    let name = name(&key);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if registry.with(&key, id, |d| d.running()) != Some(true) {
            return;
        }
        let step = match observe(&changer, &bpffs, key).await {
            Ok(obs) => registry.with(&key, id, |d| d.observe(obs, Instant::now())),
            Err(e) => {
                // A passing failure (a busy reconciler): the next poll
                // tries again, unless the timeout has passed.
                tracing::warn!("{name}: reading its connections: {e}");
                registry.with(&key, id, |d| d.unreadable(Instant::now()))
            }
        };
        match step {
            None | Some(Step::Stop) => {
                if let Some(info) = registry.with(&key, id, |d| d.info(Instant::now())) {
                    tracing::info!("{name}: {}", info.outcome_text());
                }
                return;
            }
            Some(Step::Wait) => {}
            Some(Step::Remove) => {
                let result = changer
                    .apply(Change::DeleteReal {
                        service: key.0,
                        addr: key.1,
                        port: key.2,
                    })
                    .await
                    .map_err(|e| e.to_string());
                if let Some(info) = registry.with(&key, id, |d| {
                    d.removed(result, Instant::now());
                    d.info(Instant::now())
                }) {
                    tracing::info!("{name}: {}", info.outcome_text());
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Proto, ServiceAddr};

    fn key(last: u8) -> RealKey {
        (
            ServiceAddr {
                addr: "10.0.0.1".parse().unwrap(),
                port: 80,
                proto: Proto::Tcp,
            },
            std::net::IpAddr::from([10, 0, 0, last]),
            80,
        )
    }

    /// Input: two drains, a weight change on one, a reload. Output: only
    /// waiting drains are cancelled; each once; the list shows both.
    #[test]
    fn registry_cancels_waiting_drains() {
        let r = Registry::default();
        let now = Instant::now();
        for (i, k) in [key(2), key(3)].into_iter().enumerate() {
            r.lock()
                .drains
                .insert(k, Drain::new(i as u64 + 1, k, 300, 1, now, 0));
        }
        r.cancel_real(&key(2), Cancel::Weight { weight: 5 });
        assert!(r.running(&key(2)).is_none());
        assert!(r.running(&key(3)).is_some());
        r.cancel_all(Cancel::Reload);
        let l = r.list();
        assert_eq!(l.drains.len(), 2);
        assert!(l.drains.iter().all(|d| !d.running()));
        assert!(l.running_of(&key(3).0, key(3).1, key(3).2).is_none());
        assert!(matches!(
            &l.drains[0].phase,
            crate::drain::Phase::Done {
                outcome: crate::drain::Outcome::Cancelled(Cancel::Weight { weight: 5 })
            }
        ));
    }

    /// Ended drains are dropped after [`KEEP_ENDED`] and beyond
    /// [`MAX_ENDED`]; running ones never.
    #[test]
    fn ended_drains_are_pruned() {
        let t0 = Instant::now();
        let mut m = BTreeMap::new();
        for i in 0..(MAX_ENDED as u32 + 10) {
            let k = (key(1).0, std::net::IpAddr::from(i.to_be_bytes()), 80);
            let mut d = Drain::new(u64::from(i), k, 1, 1, t0, 0);
            d.cancel(Cancel::Reload, t0 + Duration::from_millis(u64::from(i)));
            m.insert(k, d);
        }
        m.insert(key(2), Drain::new(9999, key(2), 1, 1, t0, 0));
        prune(&mut m, t0 + Duration::from_secs(1));
        assert_eq!(m.len(), MAX_ENDED + 1);
        assert!(m.contains_key(&key(2)));
        prune(&mut m, t0 + KEEP_ENDED + Duration::from_secs(2));
        assert_eq!(m.len(), 1, "only the running drain");
    }
}
