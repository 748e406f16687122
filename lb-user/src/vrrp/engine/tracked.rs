//! Tracked files and processes of the instances (`track_file`,
//! `track_process`): one task per tracked object reads it on a blocking
//! thread every [`track::FILE_POLL`] / [`track::PROCESS_POLL`] and sends
//! the engine what changed; [`Engine::tracked`](super::Engine) turns the
//! values into priority and faults with [`track::file_vrrp_effect`] and
//! [`track::process_effect`].

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::{Engine, Task};
use crate::{
    config::{
        track::{TrackFile, TrackProcess, TrackRef},
        vrrp::Vrrp,
    },
    track::{self, Effect, Quorum},
};

/// A change a tracker task reports.
pub(super) enum Tracked {
    /// A file's new value.
    File(String, i64),
    /// A process tracker's quorum and the matching processes counted.
    Process(String, bool, usize),
}

pub(super) struct FileState {
    pub(super) cfg: TrackFile,
    pub(super) value: i64,
    _task: Task,
}

pub(super) struct ProcState {
    pub(super) cfg: TrackProcess,
    pub(super) up: bool,
    pub(super) count: usize,
    _task: Task,
}

impl Engine {
    /// Starts, keeps or stops the trackers of `cfg`; new ones are read
    /// before this returns, so the instances start with their real
    /// priority. `init_file` is written at the first start only (on a
    /// reload an existing file is kept, as keepalived does).
    pub(super) async fn apply_trackers(&mut self, cfg: &Vrrp, first: bool) {
        let mut files = BTreeMap::new();
        for (name, f) in &cfg.files {
            if let Some(old) = self.files.remove(name).filter(|o| o.cfg == *f) {
                files.insert(name.clone(), old);
                continue;
            }
            let (path, init) = (f.path.clone(), f.init);
            let value = tokio::task::spawn_blocking(move || {
                if let Some((v, overwrite)) = init {
                    if let Err(e) = track::init_file(&path, v, overwrite && first) {
                        tracing::warn!(file = %path.display(), "track_file init_file: {e}");
                    }
                }
                track::read_file_value(&path)
            })
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
            let task = self.start_file_tracker(f.clone(), value);
            files.insert(
                name.clone(),
                FileState {
                    cfg: f.clone(),
                    value,
                    _task: task,
                },
            );
        }
        self.files = files;
        let new: Vec<&TrackProcess> = cfg
            .processes
            .iter()
            .filter(|(n, p)| self.procs.get(*n).is_none_or(|o| o.cfg != **p))
            .map(|(_, p)| p)
            .collect();
        let cmdline = new.iter().any(|p| p.full_command);
        let procs = if new.is_empty() {
            Vec::new()
        } else {
            tokio::task::spawn_blocking(move || track::scan_proc(cmdline))
                .await
                .unwrap_or_default()
        };
        let mut kept = BTreeMap::new();
        for (name, p) in &cfg.processes {
            if let Some(old) = self.procs.remove(name).filter(|o| o.cfg == *p) {
                kept.insert(name.clone(), old);
                continue;
            }
            let count = procs.iter().filter(|x| track::matches(p, x)).count();
            let up = track::has_quorum(p, count);
            let task = self.start_process_tracker(p.clone(), up, count);
            kept.insert(
                name.clone(),
                ProcState {
                    cfg: p.clone(),
                    up,
                    count,
                    _task: task,
                },
            );
        }
        self.procs = kept;
    }

    fn start_file_tracker(&self, f: TrackFile, mut value: i64) -> Task {
        let tx = self.track_tx.clone();
        Task(tokio::spawn(async move {
            let mut tick = tokio::time::interval(track::FILE_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let path = f.path.clone();
                let read = tokio::task::spawn_blocking(move || track::read_file_value(&path)).await;
                let Ok(Some(v)) = read else {
                    // Out of range: keepalived keeps the last value.
                    continue;
                };
                if v != value {
                    value = v;
                    tracing::info!(track_file = %f.name, value = v, "tracked file changed");
                    if tx.send(Tracked::File(f.name.clone(), v)).await.is_err() {
                        return;
                    }
                }
            }
        }))
    }

    fn start_process_tracker(&self, p: TrackProcess, up: bool, mut count: usize) -> Task {
        let tx = self.track_tx.clone();
        let start = tokio::time::Instant::now();
        Task(tokio::spawn(async move {
            let mut q = Quorum::new(up);
            let mut tick = tokio::time::interval(track::PROCESS_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let full = p.full_command;
                let Ok(procs) = tokio::task::spawn_blocking(move || track::scan_proc(full)).await
                else {
                    continue;
                };
                let n = procs.iter().filter(|x| track::matches(&p, x)).count();
                let changed = q.observe(&p, start.elapsed(), track::has_quorum(&p, n));
                if changed {
                    tracing::info!(track_process = %p.name, processes = n, "quorum {}", if q.up { "gained" } else { "lost" });
                }
                if changed || n != count {
                    count = n;
                    if tx
                        .send(Tracked::Process(p.name.clone(), q.up, n))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }))
    }

    /// Records a tracker's report; the caller re-evaluates the instances.
    pub(super) fn on_tracked(&mut self, t: Tracked) {
        match t {
            Tracked::File(name, v) => {
                if let Some(f) = self.files.get_mut(&name) {
                    f.value = v;
                }
            }
            Tracked::Process(name, up, n) => {
                if let Some(p) = self.procs.get_mut(&name) {
                    (p.up, p.count) = (up, n);
                }
            }
        }
    }

    /// What the tracked files and processes in `files` / `procs` do to an
    /// instance: fault reasons and the priority added.
    pub(super) fn tracked_objects<'a>(
        &self,
        files: impl Iterator<Item = &'a TrackRef>,
        procs: impl Iterator<Item = &'a TrackRef>,
    ) -> (Vec<String>, i32) {
        let mut faults = Vec::new();
        let mut prio = 0;
        for t in files {
            let Some(f) = self.files.get(&t.name) else {
                continue;
            };
            let (w, rev) = t.weight.unwrap_or((f.cfg.weight, f.cfg.reverse));
            match track::file_vrrp_effect(f.value, w, rev) {
                Effect::Fault => faults.push(format!("tracked file {} holds {}", t.name, f.value)),
                Effect::Priority(p) => prio += p,
            }
        }
        for t in procs {
            let Some(p) = self.procs.get(&t.name) else {
                continue;
            };
            let (w, rev) = t.weight.unwrap_or((p.cfg.weight, p.cfg.reverse));
            match track::process_effect(p.up, w, rev) {
                Effect::Fault => faults.push(format!(
                    "tracked process {} {} quorum ({} running)",
                    t.name,
                    if p.up { "has" } else { "lacks" },
                    p.count
                )),
                Effect::Priority(x) => prio += x,
            }
        }
        (faults, prio)
    }
}

/// The engine's receiving side for tracker reports (sized like the
/// scripts' channel).
pub(super) fn channel() -> (mpsc::Sender<Tracked>, mpsc::Receiver<Tracked>) {
    mpsc::channel(256)
}
