//! Connection tracking and persistence.
//!
//! The director sees only the client-to-server direction in DR mode, so TCP
//! state follows ipvs's input-only table: SYN opens (SYN_RECV, inactive), the
//! next ACK establishes, FIN moves to FIN_WAIT, RST to CLOSE. Entries are never
//! deleted from the data plane: an entry idle for longer than its state's
//! timeout is treated as absent and overwritten, and the LRU evicts the oldest
//! when the table is full.

use lb_common::{
    persist_client, Conn, FlowKey, Persist, PersistKey, Service, Timeouts, CT_CLOSE,
    CT_ESTABLISHED, CT_FIN_WAIT, CT_NONE, CT_SYN_RECV, CT_UDP, PROTO_TCP, REAL_F_INHIBITED,
    SVC_F_PERSISTENT,
};

use lb_ebpf::parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

use crate::{
    maps::{LB_CONNTRACK, LB_PERSIST, LB_REALS, LB_REAL_CONNS, LB_TIMEOUTS},
    sched::{self, Pick},
};

/// Nanoseconds in a second (timestamps are bpf_ktime_get_coarse_ns).
pub use lb_common::NS_PER_SEC as NS;
/// An established flow's timestamp is written at most this often (keeps the
/// conntrack cache line mostly read-only on the fast path).
const TOUCH_NS: u64 = NS;

/// How a flow got its real.
pub enum Outcome {
    /// Existing entry, same real.
    Established(Pick),
    /// Newly scheduled.
    New(Pick),
}

/// Why no real could be found.
pub enum NoReal {
    /// The service has no real that can take new flows.
    Empty,
}

/// Counters the caller adds for reschedules, and whether the entry was written.
pub struct Events {
    pub resched: bool,
    pub expired: bool,
    /// The entry's state or timestamp was written (at most once a second for
    /// an established flow): the moment to refresh what depends on it.
    pub touched: bool,
    /// The flow's state (`CT_*`) when it is new or its state changed (the
    /// moments connection sync reports, sync.rs); `CT_NONE` otherwise.
    pub sync_state: u32,
}

/// `f` of the idle timeouts in effect (the defaults until the agent sets
/// them), read in place: no copy of the record on the BPF stack, whose 512
/// bytes the deepest call chain shares (older verifiers round every frame
/// up to 32 bytes).
#[inline(always)]
pub fn with_timeouts<R>(f: impl FnOnce(&Timeouts) -> R) -> R {
    match LB_TIMEOUTS.get(0) {
        Some(t) if t.tcp_s != 0 => f(t),
        _ => f(&Timeouts::default()),
    }
}

/// TCP state after `pkt` on a flow in `state` (`CT_NONE` for a new flow),
/// following ipvs's table for the input-only direction.
#[inline(always)]
fn next_state(state: u32, pkt: &Packet) -> u32 {
    if pkt.proto != PROTO_TCP {
        return CT_UDP;
    }
    let f = pkt.tcp_flags;
    let syn_only = f & TCP_SYN != 0 && f & TCP_ACK == 0;
    if f & TCP_RST != 0 {
        CT_CLOSE
    } else if f & TCP_FIN != 0 {
        if state == CT_CLOSE {
            CT_CLOSE
        } else {
            CT_FIN_WAIT
        }
    } else if state == CT_NONE {
        // A mid-stream packet of a flow we have no entry for (agent restarted
        // without its pinned table, or a takeover) keeps the flow going.
        if syn_only {
            CT_SYN_RECV
        } else {
            CT_ESTABLISHED
        }
    } else if state == CT_SYN_RECV && f & TCP_ACK != 0 && f & TCP_SYN == 0 {
        CT_ESTABLISHED
    } else {
        state
    }
}

/// Which ipvs counter a connection in `state` is counted in: 1 active,
/// 2 inactive, 0 none.
#[inline(always)]
fn class(state: u32) -> u32 {
    match state {
        CT_NONE => 0,
        CT_ESTABLISHED => 1,
        _ => 2,
    }
}

/// Adds `delta` (wrapping) to the active (class 1) or inactive (class 2)
/// count of `real_id`: an atomic add, as a connection may be opened on one
/// CPU and closed on another.
#[inline(always)]
fn count_conn(real_id: u32, class: u32, delta: u64) {
    if class == 0 {
        return;
    }
    if let Some(c) = LB_REAL_CONNS.get_ptr_mut(real_id) {
        // SAFETY: the pointer is valid for this program run and aligned for
        // u64; all writers use atomic operations on these fields.
        unsafe {
            let field = if class == 1 {
                &raw mut (*c).active
            } else {
                &raw mut (*c).inactive
            };
            atomic_add(field, delta);
        }
    }
}

/// Atomic add without fetching the old value (BPF_ATOMIC BPF_ADD).
///
/// # Safety
/// `p` must be valid and 8-byte aligned, and only accessed atomically.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, v: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: as required by the caller.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, v,
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: as required by the caller.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(p)
            .fetch_add(v, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Moves a live connection of `real_id` from the class of `old` to that of `new`.
#[inline(always)]
fn recount(real_id: u32, old: u32, new: u32) {
    let (a, b) = (class(old), class(new));
    if a != b {
        count_conn(real_id, a, u64::MAX);
        count_conn(real_id, b, 1);
    }
}

/// Releases a live connection being replaced, if its real slot still
/// belongs to the real it was counted for.
#[inline(always)]
fn release(c: &Conn) {
    if let Some(r) = LB_REALS.get(c.real_id) {
        if r.gen == c.real_gen {
            count_conn(c.real_id, class(c.state), u64::MAX);
        }
    }
}

/// A SYN on a flow that was closing reuses the port: schedule it anew
/// (ipvs conn_reuse_mode).
#[inline(always)]
fn is_reuse(state: u32, pkt: &Packet) -> bool {
    pkt.proto == PROTO_TCP
        && pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
        && (state == CT_FIN_WAIT || state == CT_CLOSE)
}

/// [`schedule`]'s answers.
pub const SCHED_NONE: u32 = 0;
pub const SCHED_ESTABLISHED: u32 = 1;
pub const SCHED_NEW: u32 = 2;

/// [`lookup_or_schedule`] as a function of its own in the object (its stack
/// is then not part of the forwarding call chain), with plain types only in
/// its signature: the real chosen goes to `pick` = [real id, generation].
#[inline(never)]
pub fn schedule(
    pkt: &Packet,
    svc: &Service,
    now: u64,
    ev: &mut Events,
    pick: &mut [u32; 2],
) -> u32 {
    match lookup_or_schedule(pkt, svc, now, ev) {
        Ok(Outcome::Established(p)) => {
            *pick = [p.real_id, p.gen];
            SCHED_ESTABLISHED
        }
        Ok(Outcome::New(p)) => {
            *pick = [p.real_id, p.gen];
            SCHED_NEW
        }
        Err(NoReal::Empty) => SCHED_NONE,
    }
}

/// Finds the real for `pkt` of service `svc`: the tracked one, else the
/// persistent one, else the scheduler's next; records the result.
#[inline(always)]
fn lookup_or_schedule(
    pkt: &Packet,
    svc: &Service,
    now: u64,
    ev: &mut Events,
) -> Result<Outcome, NoReal> {
    let key = flow_key(pkt);
    // The entry of this 5-tuple that is not taken over as it is (expired,
    // reused, or its real gone): the new flow is written over it in place.
    let mut stale: *mut Conn = core::ptr::null_mut();
    if let Some(ct) = LB_CONNTRACK.get_ptr_mut(key) {
        stale = ct;
        // SAFETY: the pointer is valid for this program run; concurrent
        // writers only store whole fields of the same flow (benign races).
        let c = unsafe { &mut *ct };
        let idle = now.saturating_sub(c.last_ns);
        // A 0 s timeout expires at once (idle counts in clock ticks).
        // An expired entry's count is released by the agent's sweep.
        if with_timeouts(|t| t.time_left_ns(c.state, c.last_ns, now)).is_none() {
            ev.expired = true;
        } else if c.svc_id != svc.svc_id || is_reuse(c.state, pkt) {
            // Same 5-tuple but another service (reconfigured) or a reused port.
            release(c);
        } else if let Some(real) = sched::real_if_valid(c.real_id, c.real_gen) {
            let st = next_state(c.state, pkt);
            if st != c.state || idle > TOUCH_NS {
                recount(c.real_id, c.state, st);
                ev.touched = true;
                if st != c.state {
                    ev.sync_state = st;
                }
                c.state = st;
                c.last_ns = now;
                // ipvs keeps a persistence template alive while connections
                // it scheduled are alive: refresh it at the same pace.
                if svc.flags & SVC_F_PERSISTENT != 0 {
                    touch_persist(pkt, svc, c.real_id, now);
                }
            }
            return Ok(Outcome::Established(Pick {
                real_id: c.real_id,
                gen: c.real_gen,
                real,
            }));
        } else {
            // Its real was removed or became unavailable: expire_nodest_conn.
            release(c);
            ev.resched = true;
        }
    }

    let pick = match persistent_pick(pkt, svc, now) {
        Some(p) => p,
        None => sched::pick(svc, pkt, now).ok_or(NoReal::Empty)?,
    };
    ev.touched = true;
    ev.sync_state = next_state(CT_NONE, pkt);
    record_new(
        pkt,
        svc,
        pick.real_id as u64 | (pick.gen as u64) << 32,
        now,
        stale,
    );
    Ok(Outcome::New(pick))
}

/// The tracked real of the flow `pkt` describes, without scheduling or
/// changing anything (ICMP errors about a flow).
#[inline(always)]
pub fn lookup(pkt: &Packet, svc: &Service, now: u64) -> Option<Pick> {
    let key = flow_key(pkt);
    // SAFETY: read in place (valid for this program run), not copied: the
    // copy's 24 bytes put the ICMP path's call chain over the 512-byte stack
    // of Debian 12's 6.1 verifier, which rounds every frame up to 32 bytes.
    let c = unsafe { LB_CONNTRACK.get(key)? };
    if c.svc_id != svc.svc_id
        || with_timeouts(|t| t.time_left_ns(c.state, c.last_ns, now)).is_none()
    {
        return None;
    }
    let real = sched::real_if_valid(c.real_id, c.real_gen)?;
    Some(Pick {
        real_id: c.real_id,
        gen: c.real_gen,
        real,
    })
}

/// The connection-table key of `pkt`: its 5-tuple as seen on ingress.
#[inline(always)]
pub fn flow_key(pkt: &Packet) -> FlowKey {
    FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport_be: pkt.sport_be,
        dport_be: pkt.dport_be,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    }
}

#[inline(always)]
fn persist_key(pkt: &Packet, svc: &Service) -> PersistKey {
    PersistKey {
        // ipvs keys the template on the client's network (`svc->netmask`).
        client: persist_client(&pkt.src, pkt.family, svc.flags, svc.persist_prefix),
        svc_id: svc.svc_id,
        family: pkt.family,
        _pad: [0; 3],
    }
}

/// Records the new flow `pkt` of `svc` on the real `pick` (real id in the
/// low 32 bits, its generation in the high 32: a BPF function takes at most
/// five arguments): counts it, enters it in the connection table and, for a
/// persistent service, its template. `stale` is this 5-tuple's entry when
/// one is there (expired, a reused port, its real gone): overwritten in
/// place, which costs a store where a map update allocates a new LRU
/// element, links it and frees the old one. (The per-real counts need
/// nothing more: the agent's sweep corrects them from the live entries,
/// whatever became of the old one.) Null: a new entry is inserted. Not
/// inlined (see [`remember_persist`]): a leaf of `schedule`, off the
/// schedulers' call chain.
#[inline(never)]
fn record_new(pkt: &Packet, svc: &Service, pick: u64, now: u64, stale: *mut Conn) {
    let (real_id, gen) = (pick as u32, (pick >> 32) as u32);
    let conn = Conn {
        real_id,
        real_gen: gen,
        svc_id: svc.svc_id,
        state: next_state(CT_NONE, pkt),
        last_ns: now,
    };
    count_conn(real_id, class(conn.state), 1);
    if stale.is_null() {
        // A full table evicts its least recently used entry; an insert
        // failure only means this flow is scheduled again on its next packet.
        let _ = LB_CONNTRACK.insert(flow_key(pkt), conn, 0);
    } else {
        // SAFETY: a value of LB_CONNTRACK found in this program run: its
        // memory stays a Conn until the run ends. Another CPU's packet of
        // the same flow may read a mix of the old and new fields, and an
        // LRU element evicted meanwhile (a full table, another CPU) may
        // already hold another 5-tuple; either reader then finds another
        // service or generation and schedules again, as with the field
        // writes of the established path above.
        unsafe { stale.write(conn) };
    }
    if svc.flags & SVC_F_PERSISTENT != 0 {
        remember_persist(pkt, svc, real_id, gen, now);
    }
}

/// A new persistence template: the client's network to `real_id` of
/// generation `gen`. Inlined into [`record_new`]; the other template
/// functions are not inlined: their keys then live in their own frames,
/// not in `schedule`'s, which is part of the deepest call chain (into the
/// schedulers' bpf_loop callbacks) and must leave it within the
/// verifier's 512 bytes.
#[inline(always)]
fn remember_persist(pkt: &Packet, svc: &Service, real_id: u32, gen: u32, now: u64) {
    let p = Persist {
        real_id,
        real_gen: gen,
        last_ns: now,
    };
    let _ = LB_PERSIST.insert(persist_key(pkt, svc), p, 0);
}

/// Refreshes the client's persistence template if it still points at `real_id`.
#[inline(never)]
fn touch_persist(pkt: &Packet, svc: &Service, real_id: u32, now: u64) {
    if let Some(p) = LB_PERSIST.get_ptr_mut(persist_key(pkt, svc)) {
        // SAFETY: valid for this run; a racing writer stores the same kind of value.
        let p = unsafe { &mut *p };
        if p.real_id == real_id {
            p.last_ns = now;
        }
    }
}

/// The real a persistent service already gave this client, if the template
/// is still fresh and its real still valid. An overloaded real (connection
/// thresholds) still gets its template's clients: ipvs's
/// `ip_vs_sched_persist` follows a template whose destination is
/// available (`ip_vs_check_template`) without looking at its overload.
///
/// A template is not followed (the client is scheduled anew and the
/// template rewritten by [`record_new`]) when its real:
/// - was removed, or its slot reused (generation changed), or is
///   unavailable (checks failed without inhibit: `REAL_F_DOWN`): ipvs's
///   `ip_vs_check_template` on a destination that is gone or not available;
/// - failed its checks and is kept at weight 0 by `inhibit_on_failure`
///   (`REAL_F_INHIBITED`): ipvs's `ip_vs_check_template` with the
///   `expire_quiescent_template` sysctl on, which operators set so that a
///   persistent client is not held on a dead real. A real drained to
///   weight 0 by the operator keeps ipvs's default: its templates hold.
#[inline(always)]
fn persistent_pick(pkt: &Packet, svc: &Service, now: u64) -> Option<Pick> {
    if svc.flags & SVC_F_PERSISTENT == 0 {
        return None;
    }
    let mut found = [0u32; 2];
    if persist_lookup(pkt, svc, now, &mut found) == 0 {
        return None;
    }
    let real = sched::real_if_valid(found[0], found[1])?;
    if real.flags & REAL_F_INHIBITED != 0 {
        return None;
    }
    Some(Pick {
        real_id: found[0],
        gen: found[1],
        real,
    })
}

/// The client's fresh persistence template: 1 with `found` = [real id,
/// generation], else 0. Not inlined (see [`remember_persist`]).
#[inline(never)]
fn persist_lookup(pkt: &Packet, svc: &Service, now: u64, found: &mut [u32; 2]) -> u32 {
    // SAFETY: read-only copy of the value.
    let Some(p) = (unsafe { LB_PERSIST.get(persist_key(pkt, svc)) }).copied() else {
        return 0;
    };
    if now.saturating_sub(p.last_ns) >= svc.persist_timeout_s as u64 * NS {
        return 0;
    }
    *found = [p.real_id, p.real_gen];
    1
}
