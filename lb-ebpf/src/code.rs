//! A packet's outcome as one number, as Cilium's drop reasons: every step of
//! the pipeline returns a [`Code`], and only the entry point counts it
//! (stats.rs). So each packet is counted exactly once: one verdict, at most
//! one reason (every pass and every drop has one), and the events that
//! happened on its way.
//!
//! A code is a plain `u64` because it crosses calls between separate BPF
//! functions, where bpf-linker emits BTF the kernel rejects for Rust enums.
//!
//! | bits   | meaning                                                         |
//! |--------|-----------------------------------------------------------------|
//! | 0..8   | the XDP action                                                  |
//! | 8..16  | the reason: index of its counter in `GlobalStats` (0: none)     |
//! | 16..29 | events: bit k counts the counter `new_flows` + k                |
//! | 29     | [`FORWARDED`]: counted for a service and a real (bits 32..64)   |
//! | 30     | [`OUT`]: … as the service's outgoing traffic (NAT replies)      |
//! | 31     | [`SEND_TOO_BIG`]: answer with an ICMP error (a drop until then): too big, or time exceeded when bits 32..48 are 0 ([`time_exceeded`]) |
//! | 32..48 | the real id ([`FORWARDED`]) or the MTU left ([`SEND_TOO_BIG`])  |
//! | 48..64 | the service id ([`FORWARDED`])                                  |

use core::mem::size_of;

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use lb_common::{GlobalStats, MAX_REALS, MAX_SERVICES};
use lb_ebpf::parse::Skip;

/// See the module documentation.
pub type Code = u64;

/// Index of a counter in `GlobalStats` (seen as an array of u64).
macro_rules! counter {
    ($field:ident) => {
        core::mem::offset_of!(lb_common::GlobalStats, $field) / core::mem::size_of::<u64>()
    };
}
pub(crate) use counter;

/// Number of counters in `GlobalStats`.
pub const COUNTERS: usize = size_of::<GlobalStats>() / size_of::<u64>();
const _: () = assert!(size_of::<GlobalStats>().is_multiple_of(size_of::<u64>()));

const REASON_SHIFT: u32 = 8;
const EVENT_SHIFT: u32 = 16;
const EVENT_BITS: usize = 13;
/// The event counters are `new_flows` and every counter after it.
pub const FIRST_EVENT: usize = counter!(new_flows);
pub const EVENTS: usize = COUNTERS - FIRST_EVENT;
const _: () = assert!(EVENTS <= EVENT_BITS);

pub const FORWARDED: Code = 1 << 29;
pub const OUT: Code = 1 << 30;
pub const SEND_TOO_BIG: Code = 1 << 31;
const DETAIL_SHIFT: u32 = 32;
const SVC_SHIFT: u32 = 48;
const _: () = assert!(MAX_REALS <= 1 << 16 && MAX_SERVICES <= 1 << 16);

/// `action` with the reason counted by counter `counter` (one of those between
/// the verdicts and the events).
const fn with_reason(action: u32, counter: usize) -> Code {
    assert!(counter > counter!(aborted) && counter < FIRST_EVENT);
    action as Code | (counter as Code) << REASON_SHIFT
}

/// The event bit of counter `counter`.
const fn event(counter: usize) -> Code {
    assert!(counter >= FIRST_EVENT && counter < COUNTERS);
    1 << (EVENT_SHIFT as usize + counter - FIRST_EVENT)
}

/// Forwarded: no reason; what was done shows in the events and, with
/// [`forwarded`], in the service's and real's counters.
pub const TX: Code = XDP_TX as Code;
pub const REDIRECT: Code = XDP_REDIRECT as Code;

pub const PASS_NOT_IP: Code = with_reason(XDP_PASS, counter!(pass_not_ip));
pub const PASS_NOT_VIP: Code = with_reason(XDP_PASS, counter!(pass_not_vip));
pub const PASS_OTHER_PROTO: Code = with_reason(XDP_PASS, counter!(pass_other_proto));
pub const PASS_FRAGMENT: Code = with_reason(XDP_PASS, counter!(pass_fragment));
pub const PASS_IP_OPTIONS: Code = with_reason(XDP_PASS, counter!(pass_ip_options));
pub const PASS_MALFORMED: Code = with_reason(XDP_PASS, counter!(pass_malformed));
pub const PASS_NO_NEIGH: Code = with_reason(XDP_PASS, counter!(pass_no_neigh));
pub const PASS_NO_DEVMAP: Code = with_reason(XDP_PASS, counter!(pass_no_devmap));
pub const PASS_BAD_CSUM: Code = with_reason(XDP_PASS, counter!(pass_bad_csum));
pub const PASS_NOT_UNICAST: Code = with_reason(XDP_PASS, counter!(pass_not_unicast));
pub const PASS_OTHER_HOST: Code = with_reason(XDP_PASS, counter!(pass_other_host));

pub const DROP_NO_REAL: Code = with_reason(XDP_DROP, counter!(drop_no_real));
pub const DROP_NO_EGRESS: Code = with_reason(XDP_DROP, counter!(drop_no_egress));
pub const DROP_UNROUTABLE: Code = with_reason(XDP_DROP, counter!(drop_unroutable));
pub const DROP_FWD_DISABLED: Code = with_reason(XDP_DROP, counter!(drop_fwd_disabled));
pub const DROP_TOO_BIG: Code = with_reason(XDP_DROP, counter!(drop_too_big));
pub const DROP_UDP_ZERO_CSUM: Code = with_reason(XDP_DROP, counter!(drop_udp_zero_csum));
pub const DROP_TTL: Code = with_reason(XDP_DROP, counter!(drop_ttl));

pub const EV_NEW_FLOW: Code = event(counter!(new_flows));
pub const EV_RESCHED: Code = event(counter!(resched));
pub const EV_EXPIRED: Code = event(counter!(expired));
pub const EV_NAT_REVERSE: Code = event(counter!(nat_reverse));
pub const EV_FRAG_FIRST: Code = event(counter!(frag_first));
pub const EV_FRAG_FORWARDED: Code = event(counter!(frag_forwarded));
pub const EV_ICMP_FORWARDED: Code = event(counter!(icmp_forwarded));
pub const EV_ICMP_TOO_BIG_SENT: Code = event(counter!(icmp_too_big_sent));
pub const EV_ENCAP: Code = event(counter!(encap));
pub const EV_NEIGH_HANDOFF: Code = event(counter!(neigh_handoff));
pub const EV_ICMP_TIME_EXCEEDED_SENT: Code = event(counter!(icmp_time_exceeded_sent));
pub const EV_SYNC_LOST: Code = event(counter!(sync_lost));

/// The XDP action of `c`.
#[inline(always)]
pub fn action(c: Code) -> u32 {
    c as u32 & 0xff
}

#[inline(always)]
pub fn is_drop(c: Code) -> bool {
    action(c) == XDP_DROP
}

/// The counter index of `c`'s reason (0: none).
#[inline(always)]
pub fn reason(c: Code) -> usize {
    (c >> REASON_SHIFT) as usize & 0xff
}

/// `c`'s event bits, bit k for the counter `FIRST_EVENT + k`.
#[inline(always)]
pub fn events(c: Code) -> u32 {
    (c >> EVENT_SHIFT) as u32 & ((1 << EVENT_BITS) - 1)
}

/// `c` (a forwarding verdict) counted for `svc_id`'s and `real_id`'s traffic.
#[inline(always)]
pub fn forwarded(c: Code, svc_id: u32, real_id: u32) -> Code {
    c | FORWARDED
        | (real_id as Code & 0xffff) << DETAIL_SHIFT
        | (svc_id as Code & 0xffff) << SVC_SHIFT
}

/// As [`forwarded`], as the service's outgoing traffic (a NAT reply).
#[inline(always)]
pub fn forwarded_out(c: Code, svc_id: u32, real_id: u32) -> Code {
    forwarded(c | OUT, svc_id, real_id)
}

/// The service id of a [`FORWARDED`] code.
#[inline(always)]
pub fn svc_id(c: Code) -> u32 {
    (c >> SVC_SHIFT) as u32 & 0xffff
}

/// The real id of a [`FORWARDED`] code.
#[inline(always)]
pub fn real_id(c: Code) -> u32 {
    (c >> DETAIL_SHIFT) as u32 & 0xffff
}

/// Too big for the tunnel with `mtu` bytes left for the inner packet: a drop
/// unless the caller answers with an ICMP error ([`SEND_TOO_BIG`]).
#[inline(always)]
pub fn too_big(mtu: usize) -> Code {
    DROP_TOO_BIG | SEND_TOO_BIG | (mtu as Code & 0xffff) << DETAIL_SHIFT
}

/// TTL / hop limit exceeded: a drop unless the caller answers with an ICMP
/// time exceeded ([`SEND_TOO_BIG`] with no MTU: `too_big::icmp_error`
/// sends time exceeded for MTU 0, which no path has: IPv4's minimum is 68).
#[inline(always)]
pub fn time_exceeded() -> Code {
    DROP_TTL | SEND_TOO_BIG
}

/// The MTU of a [`SEND_TOO_BIG`] code.
#[inline(always)]
pub fn mtu(c: Code) -> usize {
    (c >> DETAIL_SHIFT) as usize & 0xffff
}

/// A packet the parser does not hand to the balancer: passed, with its reason.
#[inline(always)]
pub fn skipped(s: Skip) -> Code {
    match s {
        Skip::NotIp => PASS_NOT_IP,
        Skip::OtherProto => PASS_OTHER_PROTO,
        Skip::IpOptions => PASS_IP_OPTIONS,
        Skip::Malformed => PASS_MALFORMED,
        Skip::BadChecksum => PASS_BAD_CSUM,
        Skip::NotUnicast => PASS_NOT_UNICAST,
    }
}
