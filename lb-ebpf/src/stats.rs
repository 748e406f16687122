//! Per-CPU counters: global verdicts and reasons, per service, per real.

use lb_common::{GlobalStats, Stats};

use crate::maps::{LB_GLOBAL_STATS, LB_REAL_STATS, LB_SVC_STATS};

/// Adds one to a global counter chosen by `f`.
#[inline(always)]
pub fn count(f: impl FnOnce(&mut GlobalStats) -> &mut u64) {
    if let Some(p) = LB_GLOBAL_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it.
        let g = unsafe { &mut *p };
        *f(g) += 1;
    }
}

#[inline(always)]
fn add(stats: Option<*mut Stats>, new_conn: bool, out: bool, len: u32) {
    if let Some(p) = stats {
        // SAFETY: per-CPU value, only this CPU writes it.
        let s = unsafe { &mut *p };
        if out {
            s.out_packets += 1;
            s.out_bytes += len as u64;
        } else {
            s.packets += 1;
            s.bytes += len as u64;
        }
        if new_conn {
            s.conns += 1;
        }
    }
}

/// Counts a forwarded packet for its service and real; `out` for NAT replies.
#[inline(always)]
pub fn forwarded(svc_id: u32, real_id: u32, new_conn: bool, out: bool, len: u32) {
    add(LB_SVC_STATS.get_ptr_mut(svc_id), new_conn, out, len);
    add(LB_REAL_STATS.get_ptr_mut(real_id), new_conn, out, len);
}
