//! New-flow scheduling, lock-free.
//!
//! - rr / wrr walk a ring of real ids that the agent builds (smooth weighted
//!   round robin). One cursor per service, shared by every CPU and advanced
//!   with an atomic fetch-and-add (BPF_ATOMIC | BPF_FETCH, kernel 5.12+), so
//!   the service has one order whatever CPU a connection arrives on, as
//!   ipvs's one `sched_data` per service, without ipvs's `sched_lock`. O(1).
//! - lc / wlc / sed / nq scan the service's member list (at most
//!   `MAX_LC_MEMBERS`, as ipvs scans its destination list) and compare the
//!   connection counts with ipvs's formulas; ties go to the earlier member.
//! - fo / ovf scan the member list for the highest weight (ovf: among the
//!   reals whose active connections do not exceed their weight); twos draws
//!   two members weighted at random and takes the less loaded (ipvs's
//!   ip_vs_fo.c, ip_vs_ovf.c, ip_vs_twos.c).
//! - sh / mh index a table built by the agent (ipvs's 256-bucket source-hash
//!   table, a Maglev table of a prime size) with a hash of the source; when
//!   the chosen real is unavailable the next slots are probed. O(1).
//! - dh indexes ipvs's 256-bucket destination-hash table with a hash of the
//!   destination address; no fallback, as ipvs (ip_vs_dh.c). O(1).
//! - lblc / lblcr remember per destination address the real (lblc) or set
//!   of reals (lblcr) that served it, in `LB_LOCALITY`, and keep using it
//!   while it is not overloaded; else wlc over the members (ipvs's
//!   ip_vs_lblc.c, ip_vs_lblcr.c). Entries are updated in place without
//!   locks: each member is one 8-byte word, so a racing reader sees a whole
//!   member; two CPUs changing one set at once may lose one change, which
//!   the next overload repeats.
//! - Connection thresholds (ipvs's `IP_VS_DEST_F_OVERLOAD`): a real with an
//!   upper threshold is overloaded from the moment its active + inactive
//!   connections reach it until they fall below the lower threshold (3/4 of
//!   the upper without one). Every scheduler passes over an overloaded real
//!   for a new connection as its ipvs counterpart does: rr / wrr take the
//!   next slot of the ring, sh / mh the next probe, dh has no real, the
//!   scans leave it out, lblcr's set leaves it out; lblc keeps its
//!   remembered real (ipvs's `ip_vs_lblc_schedule` does not test the flag
//!   there). The hysteresis state is `LB_OVERLOAD`, written only here.

use lb_common::{
    hash, locality_member, maglev_index, overload_next, ring_index, Locality, LocalityKey, Real,
    RealConns, Service, DH_TABLE_SIZE, HASH_FALLBACK_PROBES, LOCALITY_SET_MAX, MAX_LC_MEMBERS,
    MH_TABLE_SIZE, REAL_F_AVAILABLE, REAL_F_INUSE, RING_SIZE, SCHED_DH, SCHED_FO, SCHED_LBLC,
    SCHED_LBLCR, SCHED_LC, SCHED_MH, SCHED_NQ, SCHED_OVF, SCHED_SED, SCHED_SH, SCHED_TWOS,
    SCHED_WLC, SH_TABLE_SIZE, SVC_F_HASH_PORT,
};

use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_get_prandom_u32, bpf_loop},
};
use lb_ebpf::parse::Packet;

use crate::{
    conntrack::with_timeouts,
    maps::{
        LB_CONN_ADJ, LB_CURSORS, LB_LOCALITY, LB_LOCALITY_ARGS, LB_MAGLEV, LB_OVERLOAD, LB_REALS,
        LB_REAL_CONNS, LB_RINGS,
    },
};

/// No real (scans answer a real id or this).
const NONE: u32 = u32::MAX;

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

/// The real behind `real_id` if it may take a new connection: usable and
/// not overloaded ([`takes_new`]).
#[inline(always)]
fn pick_new(real_id: u32) -> Option<Pick> {
    let p = pick_id(real_id)?;
    if takes_new(real_id, p.real) {
        Some(p)
    } else {
        None
    }
}

/// Whether real `id` (entry `real`) is below its connection thresholds, so
/// that a scheduler may give it a new connection (ipvs: not
/// `IP_VS_DEST_F_OVERLOAD`). Without an upper threshold, at once.
#[inline(always)]
fn takes_new(id: u32, real: &Real) -> bool {
    real.u_threshold == 0 || overloaded_now(id, real.gen, real.u_threshold, real.l_threshold) == 0
}

/// Decides whether real `id` of generation `gen` with thresholds `u` / `l`
/// is overloaded now (1) or not (0), from its connection counts and its
/// `LB_OVERLOAD` word, which it rewrites when the state changes
/// (`lb_common::overload_next`). CPUs racing here each store a whole
/// 8-byte word computed from counts they read; the last one stands, and
/// the next decision reads the counts again. Inlined, with scalars only:
/// it runs in the schedulers' bpf_loop callbacks, at the end of the
/// deepest call chain, which must stay within the verifier's 512 bytes.
#[inline(always)]
fn overloaded_now(id: u32, gen: u32, u: u32, l: u32) -> u32 {
    let (Some(slot), Some(c), Some(a)) = (
        LB_OVERLOAD.get_ptr_mut(id),
        LB_REAL_CONNS.get_ptr(id),
        LB_CONN_ADJ.get_ptr(id),
    ) else {
        return 0;
    };
    // SAFETY: valid for this program run; the counts are read whole
    // (8-byte loads), as RealConns::minus does, and so is the word.
    let (total, word) = unsafe {
        let active = (*c).active.wrapping_sub((*a).active) as i64;
        let inactive = (*c).inactive.wrapping_sub((*a).inactive) as i64;
        (
            active.max(0) as u64 + inactive.max(0) as u64,
            core::ptr::read_volatile(slot),
        )
    };
    let next = overload_next(total, u, l, gen, word);
    if next != word {
        // SAFETY: as above; one 8-byte store.
        unsafe { core::ptr::write_volatile(slot, next) };
    }
    (next != 0) as u32
}

/// Connection counts of a real in effect (data plane minus agent sweep).
#[inline(always)]
pub fn conns(real_id: u32) -> RealConns {
    match (LB_REAL_CONNS.get(real_id), LB_CONN_ADJ.get(real_id)) {
        (Some(c), Some(a)) => c.minus(a),
        _ => RealConns::default(),
    }
}

/// ipvs's connection overhead of a real (`ip_vs_dest_conn_overhead`):
/// active × 256 + inactive.
#[inline(always)]
fn overhead(c: &RealConns) -> u64 {
    (c.active << 8) + c.inactive
}

/// Picks a real of `svc` for the new flow `pkt` at `now` (ns).
#[inline(always)]
pub fn pick(svc: &Service, pkt: &Packet, now: u64) -> Option<Pick> {
    let port = if svc.flags & SVC_F_HASH_PORT != 0 {
        pkt.sport_be
    } else {
        0
    };
    match svc.sched {
        SCHED_LC | SCHED_WLC | SCHED_SED | SCHED_NQ => pick_id(least_conn(svc, svc.sched)),
        SCHED_FO | SCHED_OVF => pick_id(heaviest(svc)),
        SCHED_TWOS => pick_id(two_choices(svc)),
        SCHED_LBLC | SCHED_LBLCR => {
            // The arguments in a per-CPU map, not on the stack: the call
            // chain into lb_locality's set walks must stay within 512 bytes.
            let args = LB_LOCALITY_ARGS.get_ptr_mut(0)?;
            // SAFETY: this CPU's slot, used only for this call.
            unsafe {
                (*args).svc = *svc;
                (*args).key = LocalityKey {
                    dst: pkt.dst,
                    svc_id: svc.svc_id,
                    family: pkt.family,
                    _pad: [0; 3],
                };
                (*args).now = now;
            }
            pick_id(lb_locality(args))
        }
        SCHED_SH => source_hash(svc, &pkt.src, port),
        SCHED_DH => dest_hash(svc, &pkt.dst),
        SCHED_MH => maglev(svc, &pkt.src, port),
        _ => ring(svc),
    }
}

/// Member `i` of the live member list of `svc_id` (generation `ring_gen`)
/// if it may take new flows: its id and entry.
#[inline(always)]
fn member(svc_id: u32, ring_gen: u32, i: u32) -> Option<(u32, &'static Real)> {
    let id = *LB_RINGS.get(ring_index(svc_id, ring_gen, i))?;
    let real = LB_REALS.get(id)?;
    if usable(real) {
        Some((id, real))
    } else {
        None
    }
}

/// Member `i` as [`member`] gives it, if it may also take a new connection
/// (not overloaded): what ipvs's schedulers scan.
#[inline(always)]
fn candidate(svc_id: u32, ring_gen: u32, i: u32) -> Option<(u32, &'static Real)> {
    let (id, real) = member(svc_id, ring_gen, i)?;
    if takes_new(id, real) {
        Some((id, real))
    } else {
        None
    }
}

/// Runs `step` over the first `n` members with `scan` as its context.
///
/// # Safety
/// `step` must be an `extern "C" fn(u64, *mut c_void) -> i64` that uses
/// its context only as a `T`.
#[inline(always)]
unsafe fn scan_members<T>(n: u32, step: *mut c_void, scan: &mut T) {
    // SAFETY: as required by the caller; bpf_loop calls step at most n times.
    unsafe {
        bpf_loop(n, step, scan as *mut T as *mut c_void, 0);
    }
}

/// rr / wrr: the next slot of the service's live ring. The cursor is one
/// 8-byte counter per service in `LB_CURSORS`, shared by all CPUs: each new
/// connection takes `fetch_add(cursor, 1) % len`, so concurrent connections
/// on different CPUs take different slots and the service follows one order
/// (ipvs: one position per service, `svc->sched_data`). When the slot's real
/// cannot take the connection (overloaded, or unavailable since the ring
/// was built) the following slots are tried in ring order, as ipvs's rr and
/// wrr go on to the next destination, and the cursor is advanced past the
/// one taken by a second fetch-and-add (a racing connection may then skip
/// one slot: no lock, as the module says). A 64-bit counter does not wrap
/// in practice, so `% len` never jumps.
#[inline(always)]
fn ring(svc: &Service) -> Option<Pick> {
    let len = svc.ring_len;
    if len == 0 || len > RING_SIZE {
        return None;
    }
    let cursor = LB_CURSORS.get_ptr_mut(svc.svc_id)?;
    // SAFETY: an 8-byte aligned map value, valid for this program run; every
    // writer in the data plane uses atomic adds (the agent stores it whole).
    let n = unsafe { fetch_add(cursor, 1) };
    // checked_rem: the compiler does not carry `len != 0` across the asm
    // block and would keep a panic call, which the verifier refuses.
    let pos = n.checked_rem(len as u64)? as u32;
    if let Some(p) = pick_new(*LB_RINGS.get(ring_index(svc.svc_id, svc.ring_gen, pos))?) {
        return Some(p);
    }
    let next = ring_skip(svc, pos, len);
    if next == NONE {
        return None;
    }
    let skipped = if next > pos {
        next - pos
    } else {
        next + len - pos
    };
    // SAFETY: as above.
    unsafe { fetch_add(cursor, skipped as u64) };
    pick_id(*LB_RINGS.get(ring_index(svc.svc_id, svc.ring_gen, next))?)
}

/// Atomic fetch-and-add: adds `v` to `*p` and answers the value before
/// (BPF_ATOMIC | BPF_FETCH | BPF_ADD, kernel 5.12+). Written as the
/// instruction itself: the object is built for the `generic` (v1) BPF CPU,
/// for which LLVM emits only the add without fetch and refuses a use of its
/// result ("Invalid usage of the XADD return value"); the instruction is
/// the kernel's, whatever CPU the compiler targets.
///
/// # Safety
/// `p` must be valid and 8-byte aligned, and only written atomically.
#[inline(always)]
unsafe fn fetch_add(p: *mut u64, v: u64) -> u64 {
    #[cfg(target_arch = "bpf")]
    // SAFETY: as required by the caller; the instruction reads and writes
    // only *p and the register holding v, which then holds the old value.
    unsafe {
        let mut v = v;
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) p,
            v = inout(reg) v,
            options(nostack),
        );
        v
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: as required by the caller.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(p)
            .fetch_add(v, core::sync::atomic::Ordering::Relaxed)
    }
}

/// State of a walk along a ring, shared with [`ring_step`].
#[repr(C)]
struct RingScan {
    svc_id: u32,
    ring_gen: u32,
    start: u32,
    len: u32,
    found: u32,
    _pad: u32,
}

/// The first slot after `start` (in ring order, wrapping, `start` itself
/// last) whose real may take a new connection, or [`NONE`]. In `bpf_loop`:
/// a ring has up to `RING_SIZE` slots.
#[inline(never)]
fn ring_skip(svc: &Service, start: u32, len: u32) -> u32 {
    let mut scan = RingScan {
        svc_id: svc.svc_id,
        ring_gen: svc.ring_gen,
        start,
        len,
        found: NONE,
        _pad: 0,
    };
    // SAFETY: ring_step is a bpf_loop callback over a RingScan.
    unsafe { scan_members(len - 1, ring_step as *mut c_void, &mut scan) };
    scan.found
}

/// Slot `start + 1 + k` of a ring walk; 1 stops it.
#[inline(never)]
extern "C" fn ring_step(k: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the RingScan ring_skip passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut RingScan) };
    let mut pos = scan.start + 1 + k as u32;
    if pos >= scan.len {
        pos -= scan.len;
    }
    match candidate(scan.svc_id, scan.ring_gen, pos) {
        Some(_) => {
            scan.found = pos;
            1
        }
        None => 0,
    }
}

/// sh: ipvs's bucket for the source; with fallback to the next buckets
/// (also past an overloaded real, as ipvs's `ip_vs_sh_get_fallback`).
#[inline(always)]
fn source_hash(svc: &Service, src: &[u32; 4], port: u16) -> Option<Pick> {
    if svc.ring_len != SH_TABLE_SIZE {
        return None;
    }
    // ipvs adds the fallback offset before masking: bucket k is base + k.
    let base = hash::sh_bucket(src, port, 0);
    pick_id(hash_probe(svc, base, SH_TABLE_SIZE, PROBE_RING))
}

/// mh: Maglev table slot of the source's hash; with fallback to the next
/// slots (also past an overloaded real, as ipvs's `ip_vs_mh_get_fallback`).
#[inline(always)]
fn maglev(svc: &Service, src: &[u32; 4], port: u16) -> Option<Pick> {
    if svc.ring_len != MH_TABLE_SIZE {
        return None;
    }
    let base = hash::mh_hash(src, port) % MH_TABLE_SIZE;
    pick_id(hash_probe(svc, base, MH_TABLE_SIZE, PROBE_MAGLEV))
}

/// [`hash_probe`]: the table is the service's ring (sh).
const PROBE_RING: u32 = 0;
/// [`hash_probe`]: the table is the service's Maglev table (mh).
const PROBE_MAGLEV: u32 = 1;

/// State of a hash table probe, shared with [`probe_step`].
#[repr(C)]
struct ProbeScan {
    svc_id: u32,
    ring_gen: u32,
    table_id: u32,
    table: u32,
    base: u32,
    size: u32,
    found: u32,
    _pad: u32,
}

/// The real of slot `base` of a hash table of `size` slots if it may take
/// a new connection, else of the first of the next `HASH_FALLBACK_PROBES`
/// slots whose real may; [`NONE`] if none. In `bpf_loop`: the callback is
/// verified once, where 17 unrolled probes, each with its availability and
/// threshold tests, multiplied the verifier's states.
#[inline(never)]
fn hash_probe(svc: &Service, base: u32, size: u32, table: u32) -> u32 {
    let mut scan = ProbeScan {
        svc_id: svc.svc_id,
        ring_gen: svc.ring_gen,
        table_id: svc.table_id,
        table,
        base,
        size,
        found: NONE,
        _pad: 0,
    };
    // SAFETY: probe_step is a bpf_loop callback over a ProbeScan.
    unsafe {
        scan_members(
            HASH_FALLBACK_PROBES + 1,
            probe_step as *mut c_void,
            &mut scan,
        )
    };
    scan.found
}

/// Probe `k` (slot `base + k`, wrapping); 1 stops the loop.
#[inline(never)]
extern "C" fn probe_step(k: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the ProbeScan hash_probe passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut ProbeScan) };
    let mut pos = scan.base.wrapping_add(k as u32);
    if pos >= scan.size {
        pos -= scan.size;
    }
    let slot = if scan.table == PROBE_MAGLEV {
        LB_MAGLEV.get(maglev_index(scan.table_id, scan.ring_gen, pos))
    } else {
        LB_RINGS.get(ring_index(scan.svc_id, scan.ring_gen, pos))
    };
    let Some(&id) = slot else {
        return 0;
    };
    let Some(real) = LB_REALS.get(id) else {
        return 0;
    };
    if usable(real) && takes_new(id, real) {
        scan.found = id;
        return 1;
    }
    0
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
/// `sched` is the formula (lblc / lblcr pass wlc, as ipvs's
/// `__ip_vs_lblc_schedule` is wlc).
#[inline(never)]
fn least_conn(svc: &Service, sched: u32) -> u32 {
    let n = svc.ring_len;
    if n == 0 || n > MAX_LC_MEMBERS {
        return NONE;
    }
    let mut scan = LcScan {
        svc_id: svc.svc_id,
        ring_gen: svc.ring_gen,
        sched,
        best: NONE,
        best_oh: 0,
        best_w: 1,
    };
    // SAFETY: lc_step is a bpf_loop callback over an LcScan.
    unsafe { scan_members(n, lc_step as *mut c_void, &mut scan) };
    scan.best
}

/// One member of a least-connection scan; 1 stops the loop.
#[inline(never)]
extern "C" fn lc_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the LcScan least_conn passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut LcScan) };
    let Some((id, real)) = candidate(scan.svc_id, scan.ring_gen, i as u32) else {
        return 0;
    };
    let w = real.weight as u64;
    if w == 0 {
        return 0;
    }
    let c = conns(id);
    let oh = match scan.sched {
        SCHED_LC | SCHED_WLC => overhead(&c),
        _ => c.active + 1,
    };
    if scan.sched == SCHED_NQ && c.active == 0 {
        scan.best = id;
        return 1;
    }
    let better = if scan.best == NONE {
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

/// State of an fo / ovf scan, shared with [`heavy_step`].
#[repr(C)]
struct HeavyScan {
    svc_id: u32,
    ring_gen: u32,
    sched: u32,
    best: u32,
    best_w: u64,
}

/// fo / ovf: the member with the highest weight, ties to the earlier one
/// (ipvs: `w > hw`); ovf leaves out members whose active connections
/// exceed their weight. Returns a real id or [`NONE`].
#[inline(never)]
fn heaviest(svc: &Service) -> u32 {
    let n = svc.ring_len;
    if n == 0 || n > MAX_LC_MEMBERS {
        return NONE;
    }
    let mut scan = HeavyScan {
        svc_id: svc.svc_id,
        ring_gen: svc.ring_gen,
        sched: svc.sched,
        best: NONE,
        best_w: 0,
    };
    // SAFETY: heavy_step is a bpf_loop callback over a HeavyScan.
    unsafe { scan_members(n, heavy_step as *mut c_void, &mut scan) };
    scan.best
}

/// One member of an fo / ovf scan.
#[inline(never)]
extern "C" fn heavy_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the HeavyScan heaviest passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut HeavyScan) };
    let Some((id, real)) = candidate(scan.svc_id, scan.ring_gen, i as u32) else {
        return 0;
    };
    let w = real.weight as u64;
    if w == 0 || (scan.sched == SCHED_OVF && conns(id).active > w) {
        return 0;
    }
    if w > scan.best_w {
        scan.best = id;
        scan.best_w = w;
    }
    0
}

/// State of a twos draw, shared with [`twos_sum_step`] and [`twos_pick_step`].
/// 32-bit fields (weights are at most 65,535, a sum of 256 of them fits)
/// and no overheads: the scan lives on the stack of [`two_choices`], in
/// the deepest call chain of the program (512 bytes for all of it).
#[repr(C)]
struct TwosScan {
    svc_id: u32,
    ring_gen: u32,
    /// Sum of the members' weights (first pass).
    total: u32,
    /// The two random weights, counted down (second pass).
    r1: i32,
    r2: i32,
    c1: u32,
    c2: u32,
    w1: u32,
    w2: u32,
    _pad: u32,
}

/// twos (ip_vs_twos.c): two members drawn at random with probability by
/// weight, the one with the lower overhead / weight taken (ties: the first
/// draw). As ipvs, each draw is uniform in [0, total weight] and walks the
/// members subtracting weights, so the first member gets one extra chance
/// in total + 1. Returns a real id or [`NONE`].
#[inline(never)]
fn two_choices(svc: &Service) -> u32 {
    let n = svc.ring_len;
    if n == 0 || n > MAX_LC_MEMBERS {
        return NONE;
    }
    let mut scan = TwosScan {
        svc_id: svc.svc_id,
        ring_gen: svc.ring_gen,
        total: 0,
        r1: 0,
        r2: 0,
        c1: NONE,
        c2: NONE,
        w1: 0,
        w2: 0,
        _pad: 0,
    };
    // SAFETY: twos_sum_step is a bpf_loop callback over a TwosScan.
    unsafe { scan_members(n, twos_sum_step as *mut c_void, &mut scan) };
    if scan.total == 0 || scan.total > i32::MAX as u32 {
        return NONE;
    }
    let span = scan.total + 1;
    // SAFETY: helpers without side effects on program state.
    let (a, b) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    scan.r1 = (a % span) as i32;
    scan.r2 = (b % span) as i32;
    // SAFETY: twos_pick_step is a bpf_loop callback over a TwosScan.
    unsafe { scan_members(n, twos_pick_step as *mut c_void, &mut scan) };
    if scan.c1 == NONE {
        // Weights changed between the passes: take what was drawn.
        return scan.c2;
    }
    if scan.c2 == NONE {
        return scan.c1;
    }
    // The overheads are read once both are drawn.
    let (oh1, oh2) = (overhead(&conns(scan.c1)), overhead(&conns(scan.c2)));
    if scan.w2 as u64 * oh1 > scan.w1 as u64 * oh2 {
        scan.c2
    } else {
        scan.c1
    }
}

/// First twos pass: the total weight of the members that may take flows.
#[inline(never)]
extern "C" fn twos_sum_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the TwosScan two_choices passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut TwosScan) };
    if let Some((_, real)) = candidate(scan.svc_id, scan.ring_gen, i as u32) {
        scan.total = scan.total.saturating_add(real.weight);
    }
    0
}

/// Second twos pass: where each random weight falls; 1 stops the loop.
#[inline(never)]
extern "C" fn twos_pick_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the TwosScan two_choices passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut TwosScan) };
    let Some((id, real)) = candidate(scan.svc_id, scan.ring_gen, i as u32) else {
        return 0;
    };
    let w = real.weight;
    if w == 0 || w > i32::MAX as u32 {
        return 0;
    }
    scan.r1 -= w as i32;
    scan.r2 -= w as i32;
    if scan.r1 <= 0 && scan.c1 == NONE {
        scan.c1 = id;
        scan.w1 = w;
    }
    if scan.r2 <= 0 && scan.c2 == NONE {
        scan.c2 = id;
        scan.w2 = w;
    }
    (scan.c1 != NONE && scan.c2 != NONE) as i64
}

/// dh: ipvs's bucket for the destination address. Without fallback, as
/// ipvs: a bucket whose real is unavailable, overloaded or has weight 0
/// has no real.
#[inline(always)]
fn dest_hash(svc: &Service, dst: &[u32; 4]) -> Option<Pick> {
    if svc.ring_len != DH_TABLE_SIZE {
        return None;
    }
    let id = *LB_RINGS.get(ring_index(svc.svc_id, svc.ring_gen, hash::dh_bucket(dst)))?;
    let p = pick_new(id)?;
    if p.real.weight == 0 {
        return None;
    }
    Some(p)
}

/// The real a locality member names if it still is that real, belongs to
/// service `svc_id` and may take flows.
#[inline(always)]
fn member_real(m: u64, svc_id: u32) -> Option<&'static Real> {
    let real = real_if_valid(m as u32, (m >> 32) as u32)?;
    if real.svc_id == svc_id {
        Some(real)
    } else {
        None
    }
}

/// State of the search for a lightly loaded member, shared with [`light_step`].
#[repr(C)]
struct LightScan {
    svc_id: u32,
    ring_gen: u32,
    found: u32,
    _pad: u32,
}

/// ipvs's lblc / lblcr `is_overloaded`: the real has more active
/// connections than its weight while some member has fewer than half its
/// weight. Not inlined: its scan state stays out of lb_locality's frame.
#[inline(never)]
fn overloaded(svc: &Service, id: u32, real: &Real) -> bool {
    if conns(id).active <= real.weight as u64 {
        return false;
    }
    let n = svc.ring_len;
    if n == 0 || n > MAX_LC_MEMBERS {
        return false;
    }
    let mut scan = LightScan {
        svc_id: svc.svc_id,
        ring_gen: svc.ring_gen,
        found: 0,
        _pad: 0,
    };
    // SAFETY: light_step is a bpf_loop callback over a LightScan.
    unsafe { scan_members(n, light_step as *mut c_void, &mut scan) };
    scan.found != 0
}

/// One member of the search: active × 2 < weight stops it.
#[inline(never)]
extern "C" fn light_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the LightScan overloaded passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut LightScan) };
    let Some((id, real)) = member(scan.svc_id, scan.ring_gen, i as u32) else {
        return 0;
    };
    if conns(id).active * 2 < real.weight as u64 {
        scan.found = 1;
        return 1;
    }
    0
}

/// What [`lb_locality`] needs of the service and the packet (plain C types:
/// the kernel checks the BTF of a global function's arguments).
#[repr(C)]
pub struct LocalityArgs {
    pub svc: Service,
    pub key: LocalityKey,
    pub now: u64,
    /// A new entry is built here, not on the stack (see [`remember`]).
    pub fresh: Locality,
}

/// lblc / lblcr as a global BPF function: exported (`--export` in
/// build.rs), so its BTF linkage is global and the verifier checks it once,
/// on its own, instead of at every path of the program that reaches the
/// scheduler. Inlined, its set walks and overload scans multiplied the
/// program's states past the verifier's budget (960,000 of 1,000,000
/// instructions, a 560-byte call chain). Returns a real id or [`NONE`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn lb_locality(args: *const LocalityArgs) -> u32 {
    if args.is_null() {
        return NONE;
    }
    // `args` is this CPU's slot of LB_LOCALITY_ARGS, which the caller
    // filled. Read through the map instead: inside a global function the
    // argument is plain memory, which kernels before 6.3 refuse as a map
    // key (Debian 12's 6.1 among them), while a map value they take; a copy
    // on the stack would pass the 512-byte limit of the call chain.
    let Some(a) = LB_LOCALITY_ARGS.get_ptr_mut(0) else {
        return NONE;
    };
    // SAFETY: this CPU's slot, filled by the caller for this call.
    let a = unsafe { &*a };
    locality(&a.svc, &a.key, a.now)
}

/// lblc / lblcr for the destination of `key`: the remembered real
/// (lblc) or the least loaded of the remembered set (lblcr) while it is not
/// overloaded, else wlc over the members, remembered. An entry unused for
/// the locality lifetime is forgotten (ipvs collects it); `lastuse` is
/// written at most once a second. Returns a real id or [`NONE`].
#[inline(always)]
fn locality(svc: &Service, key: &LocalityKey, now: u64) -> u32 {
    let life = with_timeouts(|t| t.locality_ns());
    if let Some(e) = LB_LOCALITY.get_ptr_mut(key) {
        // SAFETY: valid for this program run; other CPUs write whole
        // 8-byte fields of it (benign races, see the module comment).
        let e = unsafe { &mut *e };
        if now.saturating_sub(e.lastuse_ns) < life {
            if now.saturating_sub(e.lastuse_ns) > crate::conntrack::NS {
                e.lastuse_ns = now;
            }
            if svc.sched == SCHED_LBLCR {
                return replicated(svc, key, e, now, life);
            }
            let m = e.members[0];
            if e.len >= 1 {
                if let Some(real) = member_real(m, svc.svc_id) {
                    if real.weight > 0 && !overloaded(svc, m as u32, real) {
                        return m as u32;
                    }
                }
            }
            let id = least_conn(svc, SCHED_WLC);
            if let Some(real) = LB_REALS.get(id) {
                e.members[0] = locality_member(id, real.gen);
                e.len = 1;
                e.lastmod_ns = now;
            }
            return id;
        }
    }
    let id = least_conn(svc, SCHED_WLC);
    if let Some(real) = LB_REALS.get(id) {
        remember(key, locality_member(id, real.gen), now);
    }
    id
}

/// A new locality entry for `key` with one member (replaces an expired one),
/// built in this CPU's [`LocalityArgs::fresh`] to keep the call chain's stack
/// within the verifier's 512 bytes.
#[inline(never)]
fn remember(key: &LocalityKey, m: u64, now: u64) {
    let Some(a) = LB_LOCALITY_ARGS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot, used only during this call.
    let e = unsafe { &mut (*a).fresh };
    let mut k = 0;
    while k < LOCALITY_SET_MAX as usize {
        e.members[k] = 0;
        k += 1;
    }
    e.members[0] = m;
    e.len = 1;
    e._pad = 0;
    e.lastmod_ns = now;
    e.lastuse_ns = now;
    // By reference: a value would be copied onto the stack. A full table
    // evicts its least recently used entry; a failed insert only means the
    // next connection schedules anew.
    let fresh: &Locality = e;
    let _ = LB_LOCALITY.insert(key, fresh, 0);
}

/// lblcr with the live entry `e` of `key` (ip_vs_lblcr_schedule).
#[inline(always)]
fn replicated(svc: &Service, key: &LocalityKey, e: &mut Locality, now: u64, life: u64) -> u32 {
    let min = set_scan(key, e, SET_MIN);
    // More than one real and the set unchanged for a lifetime: the most
    // loaded one leaves it.
    if e.len > 1 && now.saturating_sub(e.lastmod_ns) > life {
        let i = set_scan(key, e, SET_DROP);
        set_remove(key, e, i);
        e.lastmod_ns = now;
    }
    if let Some(real) = LB_REALS.get(min) {
        if !overloaded(svc, min, real) {
            return min;
        }
    }
    let id = least_conn(svc, SCHED_WLC);
    if let Some(real) = LB_REALS.get(id) {
        set_insert(key, e, locality_member(id, real.gen), now);
    }
    id
}

/// Members in use of `e` (bounded against a racing writer).
#[inline(always)]
fn set_len(e: &Locality) -> u32 {
    if e.len > LOCALITY_SET_MAX {
        LOCALITY_SET_MAX
    } else {
        e.len
    }
}

/// [`set_scan`]: the least loaded member's real id.
const SET_MIN: u32 = 0;
/// [`set_scan`]: the index of the member to drop.
const SET_DROP: u32 = 1;

/// State of a walk over an lblcr set, shared with [`set_step`]. The
/// callback finds the entry again by its key: a map pointer cannot be
/// handed to it through the context.
#[repr(C)]
struct SetScan {
    key: LocalityKey,
    mode: u32,
    len: u32,
    best: u32,
    _pad: u32,
    best_oh: u64,
    best_w: u64,
}

/// Walks the set of `e` newest first (ipvs adds to the head of its list):
/// [`SET_MIN`] answers the least loaded member by wlc that may take flows
/// (ipvs's `ip_vs_dest_set_min`) or [`NONE`]; [`SET_DROP`] the index of a
/// member that no longer is a real of the service, else of the most loaded
/// one with weight > 0 (`ip_vs_dest_set_max`), else 0. In `bpf_loop`: the
/// verifier checks the callback once.
#[inline(never)]
fn set_scan(key: &LocalityKey, e: &Locality, mode: u32) -> u32 {
    let len = set_len(e);
    let mut scan = SetScan {
        key: *key,
        mode,
        len,
        best: NONE,
        _pad: 0,
        best_oh: 0,
        best_w: 1,
    };
    // SAFETY: set_step is a bpf_loop callback over a SetScan.
    unsafe { scan_members(len, set_step as *mut c_void, &mut scan) };
    if mode == SET_DROP && scan.best == NONE {
        0
    } else {
        scan.best
    }
}

/// Member `len - 1 - k` of a set walk; 1 stops it.
#[inline(never)]
extern "C" fn set_step(k: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the SetScan set_scan passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut SetScan) };
    let Some(e) = LB_LOCALITY.get_ptr(scan.key) else {
        return 1;
    };
    let i = scan.len.wrapping_sub(1).wrapping_sub(k as u32) & (LOCALITY_SET_MAX - 1);
    // SAFETY: valid for this program run; a member is read whole.
    let m = unsafe { (*e).members[i as usize] };
    let id = m as u32;
    let Some(real) = LB_REALS.get(id) else {
        return 0;
    };
    let of_service = real.gen == (m >> 32) as u32 && real.svc_id == scan.key.svc_id;
    if scan.mode == SET_DROP && !of_service {
        scan.best = i;
        return 1;
    }
    let w = real.weight as u64;
    // ipvs's ip_vs_dest_set_min passes over an overloaded real.
    if !of_service || w == 0 || (scan.mode == SET_MIN && (!usable(real) || !takes_new(id, real))) {
        return 0;
    }
    let oh = overhead(&conns(id));
    let better = scan.best == NONE
        || if scan.mode == SET_MIN {
            scan.best_oh * w > oh * scan.best_w
        } else {
            scan.best_oh * w < oh * scan.best_w
        };
    if better {
        scan.best = if scan.mode == SET_MIN { id } else { i };
        scan.best_oh = oh;
        scan.best_w = w;
    }
    0
}

/// State of a shift in an lblcr set, shared with [`shift_step`].
#[repr(C)]
struct ShiftScan {
    key: LocalityKey,
    from: u32,
    len: u32,
}

/// Removes member `i` of `key`'s set, keeping the order of the others.
#[inline(never)]
fn set_remove(key: &LocalityKey, e: &mut Locality, i: u32) {
    let len = set_len(e);
    if i >= len {
        return;
    }
    let mut scan = ShiftScan {
        key: *key,
        from: i,
        len,
    };
    // SAFETY: shift_step is a bpf_loop callback over a ShiftScan.
    unsafe { scan_members(len - 1 - i, shift_step as *mut c_void, &mut scan) };
    e.len = len - 1;
}

/// Moves member `from + k + 1` down one place.
#[inline(never)]
extern "C" fn shift_step(k: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the ShiftScan set_remove passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut ShiftScan) };
    let Some(e) = LB_LOCALITY.get_ptr_mut(scan.key) else {
        return 1;
    };
    let to = (scan.from + k as u32) & (LOCALITY_SET_MAX - 1);
    let from = (scan.from + k as u32 + 1) & (LOCALITY_SET_MAX - 1);
    // SAFETY: valid for this program run; members are written whole.
    unsafe { (*e).members[to as usize] = (*e).members[from as usize] };
    0
}

/// Adds `m` to `key`'s set unless present; a full set first drops a member
/// (the [`SET_DROP`] choice). Inlined: one frame less in the call chain.
#[inline(always)]
fn set_insert(key: &LocalityKey, e: &mut Locality, m: u64, now: u64) {
    let mut k = 0;
    while k < LOCALITY_SET_MAX as usize {
        if e.members[k] == m && (k as u32) < set_len(e) {
            return;
        }
        k += 1;
    }
    if set_len(e) >= LOCALITY_SET_MAX {
        let i = set_scan(key, e, SET_DROP);
        set_remove(key, e, i);
    }
    let len = set_len(e);
    // Verifier workaround: the compiler folds the bound check into earlier
    // arithmetic on len, after which the verifier no longer knows the index
    // is below 8; a volatile read makes the check apply to the index itself.
    // SAFETY: reads a local.
    let i = unsafe { core::ptr::read_volatile(&len) } as usize;
    if i < LOCALITY_SET_MAX as usize {
        e.members[i] = m;
        e.len = i as u32 + 1;
    }
    e.lastmod_ns = now;
}
