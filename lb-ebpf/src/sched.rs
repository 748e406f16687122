//! New-flow scheduling: O(1), lock-free.
//!
//! rr and wrr both walk a ring of real ids that the agent builds (smooth
//! weighted round robin, so a 3:1 weighting interleaves A A B A rather than
//! bursting). Each CPU keeps its own cursor in a per-CPU array, so no two CPUs
//! ever write the same memory; every CPU follows the exact sequence, and the
//! aggregate split is exact up to one slot per CPU.

use lb_common::{ring_index, Real, Service, REAL_F_AVAILABLE, REAL_F_INUSE, RING_SIZE};

use crate::maps::{LB_CURSORS, LB_REALS, LB_RINGS};

/// A real chosen for a flow: its id, the slot generation it had, and its entry.
#[derive(Clone, Copy)]
pub struct Pick {
    pub real_id: u32,
    pub gen: u32,
    pub real: &'static Real,
}

/// The real behind `real_id` if it may take traffic and still has generation `gen`.
#[inline(always)]
pub fn real_if_valid(real_id: u32, gen: u32) -> Option<&'static Real> {
    let real = LB_REALS.get(real_id)?;
    let want = REAL_F_INUSE | REAL_F_AVAILABLE;
    if real.flags & want == want && real.gen == gen {
        Some(real)
    } else {
        None
    }
}

/// Picks the next real of `svc`'s live ring on this CPU.
#[inline(always)]
pub fn pick(svc: &Service) -> Option<Pick> {
    let len = svc.ring_len;
    if len == 0 || len > RING_SIZE {
        return None;
    }
    let cursor = LB_CURSORS.get_ptr_mut(svc.svc_id)?;
    // SAFETY: per-CPU slot; only this CPU (with preemption disabled in XDP) touches it.
    let pos = unsafe { *cursor } % len;
    unsafe { *cursor = if pos + 1 >= len { 0 } else { pos + 1 } };
    let real_id = *LB_RINGS.get(ring_index(svc.svc_id, svc.ring_gen, pos))?;
    let real = LB_REALS.get(real_id)?;
    let want = REAL_F_INUSE | REAL_F_AVAILABLE;
    if real.flags & want != want {
        return None;
    }
    Some(Pick {
        real_id,
        gen: real.gen,
        real,
    })
}
