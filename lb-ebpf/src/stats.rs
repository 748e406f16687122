//! Per-CPU counters: global verdicts, reasons and events, per service, per
//! real. Only the entry point counts, once per packet, from the packet's
//! [`Code`].

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use lb_common::{GlobalStats, Stats};

use crate::{
    code::{self, counter, Code, COUNTERS, EVENTS, FIRST_EVENT},
    maps::{LB_GLOBAL_STATS, LB_REAL_STATS, LB_SVC_STATS},
};

/// Counts one packet of `len` bytes (as received) with outcome `c`: its
/// verdict, its reason, its events and, when it was forwarded, its service
/// and real.
#[inline(always)]
pub fn count(c: Code, len: u32) {
    if let Some(g) = LB_GLOBAL_STATS.get_ptr_mut(0) {
        let verdict = match code::action(c) {
            XDP_PASS => counter!(pass),
            XDP_TX => counter!(tx),
            XDP_REDIRECT => counter!(redirect),
            XDP_DROP => counter!(drop),
            _ => counter!(aborted),
        };
        bump(g, verdict);
        let reason = code::reason(c);
        if reason != 0 {
            bump(g, reason);
        }
        let events = code::events(c);
        if events != 0 {
            let mut k = 0;
            while k < EVENTS {
                if events & (1 << k) != 0 {
                    bump(g, FIRST_EVENT + k);
                }
                k += 1;
            }
        }
    }
    if c & code::FORWARDED != 0 {
        let new_conn = c & code::EV_NEW_FLOW != 0;
        let out = c & code::OUT != 0;
        add(
            LB_SVC_STATS.get_ptr_mut(code::svc_id(c)),
            new_conn,
            out,
            len,
        );
        add(
            LB_REAL_STATS.get_ptr_mut(code::real_id(c)),
            new_conn,
            out,
            len,
        );
    }
}

/// Adds one to counter `i` of `g` (`GlobalStats` is `repr(C)`, all u64).
#[inline(always)]
fn bump(g: *mut GlobalStats, i: usize) {
    // The bound check is for the verifier (and against a bad code). The
    // index is read back through the stack first so that LLVM cannot fold
    // this check into the caller's `reason != 0` as one `i - 1 < N` range
    // test on a copy: older verifiers (Debian 12's 6.1) do not carry that
    // copy's bound over to `i` and refuse the access.
    // SAFETY: reads a local.
    let i = unsafe { core::ptr::read_volatile(&i) };
    if i < COUNTERS {
        // SAFETY: per-CPU value, only this CPU writes it; i is in bounds.
        unsafe { *(g as *mut u64).add(i) += 1 };
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
