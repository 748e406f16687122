//! Types shared by the XDP program (`lb-ebpf`) and the agent (`lb-user`).
//!
//! Every map key, map value and constant that crosses the kernel/user boundary
//! is defined here, once. Each type is `#[repr(C)]`, has explicit padding
//! fields (no implicit padding, no `bool`), and its size is asserted so the two
//! sides cannot drift apart. Byte order is part of the field name (`_be`) where
//! a field is kept in network order.
//!
//! Addresses are stored as `[u32; 4]` in network byte order: an IPv6 address
//! as its four words, an IPv4 address in word 0 with words 1..3 zero and the
//! `family` field telling which one it is.
#![no_std]

use core::mem::size_of;

/// Default bpffs directory for pinned maps.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/lb";

/// Capacity of the service table (and of the per-service counter arrays).
pub const MAX_SERVICES: u32 = 1024;
/// Capacity of the real-server table; a real id is an index into it.
pub const MAX_REALS: u32 = 16384;
/// Slots in one scheduling ring (one generation of one service).
pub const RING_SIZE: u32 = 1024;
/// Number of ring generations per service (double buffering for atomic swaps).
pub const RING_GENS: u32 = 2;
/// Default connection-table size (overridable at load time).
pub const DEFAULT_CONNTRACK_SIZE: u32 = 1 << 20;
/// Default persistence-table size (overridable at load time).
pub const DEFAULT_PERSIST_SIZE: u32 = 1 << 18;
/// Capacity of the redirect table (attached interfaces).
pub const MAX_IFACES: u32 = 64;

/// Address families, as used in the `family` fields.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Scheduler identifiers stored in [`Service::sched`].
pub const SCHED_RR: u32 = 1;
pub const SCHED_WRR: u32 = 2;

/// [`Service::flags`]: clients stick to one real for `persist_timeout_s`.
pub const SVC_F_PERSISTENT: u32 = 1;

/// [`Real::flags`]: slot is in use (configured).
pub const REAL_F_INUSE: u32 = 1;
/// [`Real::flags`]: the real's MAC is known and it may receive packets.
pub const REAL_F_AVAILABLE: u32 = 2;

/// Forwarding methods stored in [`Real::fwd`] (`lb list` prints them as ipvsadm).
pub const FWD_DR: u32 = 1;

/// Connection states kept in [`Conn::state`]; names follow ipvs.
/// `CT_NONE` stands for "no entry yet" and is never stored.
pub const CT_NONE: u32 = 0;
pub const CT_SYN_RECV: u32 = 1;
pub const CT_ESTABLISHED: u32 = 2;
pub const CT_FIN_WAIT: u32 = 3;
pub const CT_CLOSE: u32 = 4;
pub const CT_UDP: u32 = 5;

/// Key of the service map: (VIP, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SvcKey {
    /// Virtual address, network order (IPv4 in word 0).
    pub addr: [u32; 4],
    /// Virtual port, network order.
    pub port_be: u16,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
}
const _: () = assert!(size_of::<SvcKey>() == 20);

/// Value of the service map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service {
    /// Index into the per-service arrays (counters, rings, cursors).
    pub svc_id: u32,
    /// `SCHED_*`.
    pub sched: u32,
    /// `SVC_F_*`.
    pub flags: u32,
    /// Persistence timeout in seconds (when `SVC_F_PERSISTENT`).
    pub persist_timeout_s: u32,
    /// Which ring generation is live (0 or 1).
    pub ring_gen: u32,
    /// Number of valid slots in the live ring; 0 means no real can take new flows.
    pub ring_len: u32,
}
const _: () = assert!(size_of::<Service>() == 24);

/// A real server; the map is an array indexed by real id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Real {
    /// Real address, network order (IPv4 in word 0).
    pub addr: [u32; 4],
    /// Real port, network order (DR: equal to the virtual port).
    pub port_be: u16,
    /// 4 or 6.
    pub family: u8,
    pub _pad0: u8,
    /// `REAL_F_*`.
    pub flags: u32,
    /// Bumped each time the slot is (re)assigned; conntrack entries remember it.
    pub gen: u32,
    /// Service this real belongs to.
    pub svc_id: u32,
    /// Configured weight (for listing; scheduling uses the ring).
    pub weight: u32,
    /// `FWD_*`.
    pub fwd: u32,
    /// Interface the real is reached through.
    pub ifindex: u32,
    /// Real's MAC address (destination of rewritten frames).
    pub mac: [u8; 6],
    /// MAC of the interface `ifindex` (source of rewritten frames).
    pub src_mac: [u8; 6],
}
const _: () = assert!(size_of::<Real>() == 56);

/// Key of the connection table: the client's 5-tuple as seen on ingress.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// Value of the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Conn {
    pub real_id: u32,
    /// `Real::gen` at the time the flow was scheduled.
    pub real_gen: u32,
    pub svc_id: u32,
    /// `CT_*`.
    pub state: u32,
    /// Last packet seen, bpf_ktime_get_ns (CLOCK_MONOTONIC).
    pub last_ns: u64,
}
const _: () = assert!(size_of::<Conn>() == 24);

/// Key of the persistence table: (client address, service).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PersistKey {
    pub client: [u32; 4],
    pub svc_id: u32,
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<PersistKey>() == 24);

/// Value of the persistence table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Persist {
    pub real_id: u32,
    pub real_gen: u32,
    pub last_ns: u64,
}
const _: () = assert!(size_of::<Persist>() == 16);

/// Per-CPU traffic counters of a service or a real.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    /// New connections scheduled.
    pub conns: u64,
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (whole frames as received).
    pub bytes: u64,
}
const _: () = assert!(size_of::<Stats>() == 24);

/// Idle timeouts, in seconds; one entry, set by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_s: u32,
    pub tcp_fin_s: u32,
    pub udp_s: u32,
    pub tcp_syn_s: u32,
    pub tcp_close_s: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Timeouts>() == 24);

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_s: 900,
            tcp_fin_s: 120,
            udp_s: 300,
            tcp_syn_s: 60,
            tcp_close_s: 10,
            _pad: 0,
        }
    }
}

impl Timeouts {
    /// Idle timeout in seconds for a connection in `state`.
    #[inline(always)]
    pub fn for_state(&self, state: u32) -> u32 {
        match state {
            CT_ESTABLISHED => self.tcp_s,
            CT_FIN_WAIT => self.tcp_fin_s,
            CT_UDP => self.udp_s,
            CT_SYN_RECV => self.tcp_syn_s,
            _ => self.tcp_close_s,
        }
    }
}

/// Global per-CPU counters: one per verdict and one per reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GlobalStats {
    /// Verdict XDP_PASS (all reasons below summed).
    pub pass: u64,
    /// Verdict XDP_TX.
    pub tx: u64,
    /// Verdict XDP_REDIRECT.
    pub redirect: u64,
    /// Verdict XDP_DROP.
    pub drop: u64,
    /// Verdict XDP_ABORTED (must stay 0).
    pub aborted: u64,
    /// Passed: not IPv4/IPv6 (ARP, LLDP, ...).
    pub pass_not_ip: u64,
    /// Passed: destination is not a virtual service.
    pub pass_not_vip: u64,
    /// Passed: neither TCP nor UDP.
    pub pass_other_proto: u64,
    /// Passed: IPv4 fragment or IPv6 fragment header.
    pub pass_fragment: u64,
    /// Passed: IPv4 options or IPv6 extension headers.
    pub pass_ip_options: u64,
    /// Passed: truncated or inconsistent headers.
    pub pass_malformed: u64,
    /// Dropped: service has no real that can take new flows.
    pub drop_no_real: u64,
    /// Dropped: egress interface unknown or redirect failed.
    pub drop_no_egress: u64,
    /// New flows scheduled.
    pub new_flows: u64,
    /// Flows rescheduled because their real was removed or unavailable.
    pub resched: u64,
    /// Flows rescheduled because their entry had expired.
    pub expired: u64,
}
const _: () = assert!(size_of::<GlobalStats>() == 16 * 8);

/// Map names, as pinned under the bpffs directory.
pub mod maps {
    pub const SERVICES: &str = "LB_SERVICES";
    pub const REALS: &str = "LB_REALS";
    pub const RINGS: &str = "LB_RINGS";
    pub const CURSORS: &str = "LB_CURSORS";
    pub const CONNTRACK: &str = "LB_CONNTRACK";
    pub const PERSIST: &str = "LB_PERSIST";
    pub const DEVMAP: &str = "LB_DEVMAP";
    pub const SVC_STATS: &str = "LB_SVC_STATS";
    pub const REAL_STATS: &str = "LB_REAL_STATS";
    pub const GLOBAL_STATS: &str = "LB_GLOBAL_STATS";
    pub const TIMEOUTS: &str = "LB_TIMEOUTS";
    /// Every map, for pinning and listing.
    pub const ALL: [&str; 11] = [
        SERVICES,
        REALS,
        RINGS,
        CURSORS,
        CONNTRACK,
        PERSIST,
        DEVMAP,
        SVC_STATS,
        REAL_STATS,
        GLOBAL_STATS,
        TIMEOUTS,
    ];
}

/// Index of slot `pos` of ring generation `gen` of service `svc_id` in `LB_RINGS`.
#[inline(always)]
pub fn ring_index(svc_id: u32, gen: u32, pos: u32) -> u32 {
    (svc_id * RING_GENS + (gen & 1)) * RING_SIZE + pos
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all these types are repr(C), Copy, have no padding and accept any bit pattern.
    unsafe impl aya::Pod for SvcKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for Real {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Conn {}
    unsafe impl aya::Pod for PersistKey {}
    unsafe impl aya::Pod for Persist {}
    unsafe impl aya::Pod for Stats {}
    unsafe impl aya::Pod for Timeouts {}
    unsafe impl aya::Pod for GlobalStats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn layouts_are_pinned() {
        // The kernel side reads these offsets; a change here is a change of ABI.
        assert_eq!(offset_of!(SvcKey, port_be), 16);
        assert_eq!(offset_of!(SvcKey, proto), 18);
        assert_eq!(offset_of!(SvcKey, family), 19);
        assert_eq!(offset_of!(Real, flags), 20);
        assert_eq!(offset_of!(Real, gen), 24);
        assert_eq!(offset_of!(Real, mac), 44);
        assert_eq!(offset_of!(FlowKey, sport_be), 32);
        assert_eq!(offset_of!(FlowKey, proto), 36);
        assert_eq!(offset_of!(Conn, last_ns), 16);
        assert_eq!(offset_of!(Persist, last_ns), 8);
    }

    #[test]
    fn ring_index_separates_services_and_generations() {
        assert_eq!(ring_index(0, 0, 0), 0);
        assert_eq!(ring_index(0, 1, 0), RING_SIZE);
        assert_eq!(ring_index(1, 0, 5), 2 * RING_SIZE + 5);
        assert_eq!(
            ring_index(MAX_SERVICES - 1, 1, RING_SIZE - 1),
            MAX_SERVICES * RING_GENS * RING_SIZE - 1
        );
    }

    #[test]
    fn timeouts_per_state() {
        let t = Timeouts::default();
        assert_eq!(
            [CT_ESTABLISHED, CT_FIN_WAIT, CT_UDP, CT_SYN_RECV, CT_CLOSE].map(|s| t.for_state(s)),
            [900, 120, 300, 60, 10]
        );
    }
}
