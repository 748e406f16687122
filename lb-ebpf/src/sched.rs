//! New-flow scheduling, lock-free.
//!
//! - rr / wrr walk a ring of real ids that the agent builds (smooth weighted
//!   round robin). Each CPU keeps its own cursor in a per-CPU array; every CPU
//!   follows the exact sequence, the aggregate split is exact up to one slot
//!   per CPU. O(1).
//! - lc / wlc / sed / nq scan the service's member list (at most
//!   `MAX_LC_MEMBERS`, as ipvs scans its destination list) and compare the
//!   connection counts with ipvs's formulas; ties go to the earlier member.
//! - sh / mh index a table built by the agent (ipvs's 256-bucket source-hash
//!   table, a Maglev table of a prime size) with a hash of the source; when
//!   the chosen real is unavailable the next slots are probed. O(1).

use lb_common::{
    hash, maglev_index, ring_index, Real, RealConns, Service, HASH_FALLBACK_PROBES, MAX_LC_MEMBERS,
    MH_TABLE_SIZE, REAL_F_AVAILABLE, REAL_F_INUSE, RING_SIZE, SCHED_LC, SCHED_MH, SCHED_NQ,
    SCHED_SED, SCHED_SH, SCHED_WLC, SH_TABLE_SIZE, SVC_F_HASH_PORT,
};

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop};

use crate::maps::{LB_CONN_ADJ, LB_CURSORS, LB_MAGLEV, LB_REALS, LB_REAL_CONNS, LB_RINGS};

/// A real chosen for a flow: its id, the slot generation it had, and its entry.
#[derive(Clone, Copy)]
pub struct Pick {
    pub real_id: u32,
    pub gen: u32,
    pub real: &'static Real,
}

#[inline(always)]
fn usable(real: &Real) -> bool {
    let want = REAL_F_INUSE | REAL_F_AVAILABLE;
    real.flags & want == want
}

/// The real behind `real_id` if it may take traffic and still has generation `gen`.
#[inline(always)]
pub fn real_if_valid(real_id: u32, gen: u32) -> Option<&'static Real> {
    let real = LB_REALS.get(real_id)?;
    if usable(real) && real.gen == gen {
        Some(real)
    } else {
        None
    }
}

#[inline(always)]
fn pick_id(real_id: u32) -> Option<Pick> {
    let real = LB_REALS.get(real_id)?;
    if !usable(real) {
        return None;
    }
    Some(Pick {
        real_id,
        gen: real.gen,
        real,
    })
}

/// Connection counts of a real in effect (data plane minus agent sweep).
#[inline(always)]
pub fn conns(real_id: u32) -> RealConns {
    match (LB_REAL_CONNS.get(real_id), LB_CONN_ADJ.get(real_id)) {
        (Some(c), Some(a)) => c.minus(a),
        _ => RealConns::default(),
    }
}

/// Picks a real of `svc` for a new flow from `src:sport_be`.
#[inline(always)]
pub fn pick(svc: &Service, src: &[u32; 4], sport_be: u16) -> Option<Pick> {
    let port = if svc.flags & SVC_F_HASH_PORT != 0 {
        sport_be
    } else {
        0
    };
    match svc.sched {
        SCHED_LC | SCHED_WLC | SCHED_SED | SCHED_NQ => pick_id(least_conn(svc)),
        SCHED_SH => source_hash(svc, src, port),
        SCHED_MH => maglev(svc, src, port),
        _ => ring(svc),
    }
}

/// rr / wrr: the next slot of the live ring on this CPU.
#[inline(always)]
fn ring(svc: &Service) -> Option<Pick> {
    let len = svc.ring_len;
    if len == 0 || len > RING_SIZE {
        return None;
    }
    let cursor = LB_CURSORS.get_ptr_mut(svc.svc_id)?;
    // SAFETY: per-CPU slot; only this CPU (with preemption disabled in XDP) touches it.
    let pos = unsafe { *cursor } % len;
    unsafe { *cursor = if pos + 1 >= len { 0 } else { pos + 1 } };
    pick_id(*LB_RINGS.get(ring_index(svc.svc_id, svc.ring_gen, pos))?)
}

/// sh: ipvs's bucket for the source; with fallback to the next buckets.
#[inline(always)]
fn source_hash(svc: &Service, src: &[u32; 4], port: u16) -> Option<Pick> {
    if svc.ring_len != SH_TABLE_SIZE {
        return None;
    }
    let mut k = 0;
    while k <= HASH_FALLBACK_PROBES {
        let b = hash::sh_bucket(src, port, k);
        if let Some(id) = LB_RINGS.get(ring_index(svc.svc_id, svc.ring_gen, b)) {
            if let Some(p) = pick_id(*id) {
                return Some(p);
            }
        }
        k += 1;
    }
    None
}

/// mh: Maglev table slot of the source's hash; with fallback to the next slots.
#[inline(always)]
fn maglev(svc: &Service, src: &[u32; 4], port: u16) -> Option<Pick> {
    if svc.ring_len != MH_TABLE_SIZE {
        return None;
    }
    let h = hash::mh_hash(src, port) % MH_TABLE_SIZE;
    let mut k = 0;
    while k <= HASH_FALLBACK_PROBES {
        let mut pos = h + k;
        if pos >= MH_TABLE_SIZE {
            pos -= MH_TABLE_SIZE;
        }
        if let Some(id) = LB_MAGLEV.get(maglev_index(svc.table_id, svc.ring_gen, pos)) {
            if let Some(p) = pick_id(*id) {
                return Some(p);
            }
        }
        k += 1;
    }
    None
}

/// State of a least-connection scan, shared with [`lc_step`].
#[repr(C)]
struct LcScan {
    svc_id: u32,
    ring_gen: u32,
    sched: u32,
    best: u32,
    best_oh: u64,
    best_w: u64,
}

/// lc / wlc / sed / nq over the member list, with ipvs's overheads:
/// lc and wlc: active × 256 + inactive (wlc divided by the weight);
/// sed: active + 1 divided by the weight; nq: an idle real at once, else sed.
///
/// The scan runs in `bpf_loop`: its callback is verified once, where an
/// unrolled loop over hundreds of members exceeds the verifier's budget.
/// Returns a real id (`u32::MAX`: none). Only plain types in the signature:
/// bpf-linker emits BTF the kernel rejects for Rust enums in one.
#[inline(never)]
fn least_conn(svc: &Service) -> u32 {
    let n = svc.ring_len;
    if n == 0 || n > MAX_LC_MEMBERS {
        return u32::MAX;
    }
    let mut scan = LcScan {
        svc_id: svc.svc_id,
        ring_gen: svc.ring_gen,
        sched: svc.sched,
        best: u32::MAX,
        best_oh: 0,
        best_w: 1,
    };
    // SAFETY: lc_step has the callback signature bpf_loop expects and only
    // uses its context as the LcScan passed here.
    unsafe {
        bpf_loop(
            n,
            lc_step as *mut c_void,
            &mut scan as *mut LcScan as *mut c_void,
            0,
        );
    }
    scan.best
}

/// One member of a least-connection scan; 1 stops the loop.
#[inline(never)]
extern "C" fn lc_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the LcScan least_conn passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut LcScan) };
    let Some(id) = LB_RINGS.get(ring_index(scan.svc_id, scan.ring_gen, i as u32)) else {
        return 0;
    };
    let id = *id;
    let Some(p) = pick_id(id) else { return 0 };
    let w = p.real.weight as u64;
    if w == 0 {
        return 0;
    }
    let c = conns(id);
    let oh = match scan.sched {
        SCHED_LC | SCHED_WLC => (c.active << 8) + c.inactive,
        _ => c.active + 1,
    };
    if scan.sched == SCHED_NQ && c.active == 0 {
        scan.best = id;
        return 1;
    }
    let better = if scan.best == u32::MAX {
        true
    } else if scan.sched == SCHED_LC {
        oh < scan.best_oh
    } else {
        // oh / w < best_oh / best_w, cross-multiplied as ipvs does.
        scan.best_oh * w > oh * scan.best_w
    };
    if better {
        scan.best = id;
        scan.best_oh = oh;
        scan.best_w = w;
    }
    0
}
