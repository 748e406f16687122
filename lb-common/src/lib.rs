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

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_ICMPV6: u8 = 58;

/// Scheduler identifiers stored in [`Service::sched`] (names as ipvs).
pub const SCHED_RR: u32 = 1;
pub const SCHED_WRR: u32 = 2;
pub const SCHED_LC: u32 = 3;
pub const SCHED_WLC: u32 = 4;
pub const SCHED_SED: u32 = 5;
pub const SCHED_NQ: u32 = 6;
pub const SCHED_SH: u32 = 7;
pub const SCHED_MH: u32 = 8;
pub const SCHED_DH: u32 = 9;
pub const SCHED_FO: u32 = 10;
pub const SCHED_OVF: u32 = 11;
pub const SCHED_TWOS: u32 = 12;
pub const SCHED_LBLC: u32 = 13;
pub const SCHED_LBLCR: u32 = 14;

/// Most reals a service whose scheduler scans its member list per new flow
/// (lc, wlc, sed, nq, fo, ovf, twos, lblc, lblcr) may have; the agent
/// refuses more.
pub const MAX_LC_MEMBERS: u32 = 256;
/// Buckets of a source-hash table (ipvs: IP_VS_SH_TAB_SIZE).
pub const SH_TABLE_SIZE: u32 = 256;
/// Slots of a Maglev lookup table: a prime (ipvs mh's default, 65537).
pub const MH_TABLE_SIZE: u32 = 65537;
/// Maglev tables the data plane holds (services using `mh`).
pub const MAX_MH_TABLES: u32 = 16;
/// Slots probed after the hashed one when its real is unavailable (sh / mh).
pub const HASH_FALLBACK_PROBES: u32 = 16;
/// Buckets of a destination-hash table (ipvs: IP_VS_DH_TAB_SIZE).
pub const DH_TABLE_SIZE: u32 = 256;
/// Capacity of the locality table (lblc / lblcr: one entry per service and
/// destination address). ipvs keeps up to 16,384 entries per service
/// (IP_VS_LBLC_TAB_SIZE × 16) before collecting idle ones; here the LRU
/// evicts the least recently used entry of all services when it is full.
pub const LOCALITY_TABLE_SIZE: u32 = 65536;
/// Most reals in an lblcr destination's server set (ipvs: unbounded; the set
/// grows by one real each time all of its reals are overloaded).
pub const LOCALITY_SET_MAX: u32 = 8;
/// Default lifetime in seconds of an unused lblc / lblcr entry and of an
/// lblcr set's extra reals: ipvs's `lblc_expiration` / `lblcr_expiration`
/// sysctls (24 hours).
pub const DEFAULT_LOCALITY_EXPIRATION_S: u32 = 24 * 60 * 60;

/// [`Service::flags`]: clients stick to one real for `persist_timeout_s`.
pub const SVC_F_PERSISTENT: u32 = 1;
/// [`Service::flags`]: sh / mh hash the source port too (`sh-port`, `mh-port`).
pub const SVC_F_HASH_PORT: u32 = 2;
/// [`Service::flags`]: persistence templates key on the client's network,
/// its first [`Service::persist_prefix`] bits (ipvsadm `-M`, keepalived
/// `persistence_granularity`); without it, on the whole address.
pub const SVC_F_PERSIST_NET: u32 = 4;
/// [`Service::flags`]: the operator asked for ipvs's `sh-fallback` /
/// `mh-fallback` (flag-1). Informational: lb's sh / mh always fall back to
/// the next available real; kept so that listings show what was asked.
pub const SVC_F_FALLBACK: u32 = 8;

/// [`Real::flags`]: slot is in use (configured).
pub const REAL_F_INUSE: u32 = 1;
/// [`Real::flags`]: the real's MAC is known and it may receive packets.
pub const REAL_F_AVAILABLE: u32 = 2;
/// [`Real::flags`]: its health checkers failed (not available; `lb list`
/// leaves it out, as ipvsadm does with a removed destination).
pub const REAL_F_DOWN: u32 = 4;
/// [`Real::flags`]: its health checkers failed and `inhibit_on_failure`
/// keeps it in the table at weight 0 (keepalived's inhibit). It takes no
/// new connection, not even through a persistence template: the data plane
/// treats its templates as expired and schedules the client anew, as ipvs
/// does with the `expire_quiescent_template` sysctl on. A real at weight 0
/// without this flag (an operator's drain) keeps ipvs's default: its
/// templates still hold. Its established connections stay in both cases
/// (ipvs's `expire_nodest_conn` = 0).
pub const REAL_F_INHIBITED: u32 = 8;

/// Forwarding methods stored in [`Real::fwd`] (`lb list` prints them as ipvsadm).
pub const FWD_DR: u32 = 1;
/// LVS-NAT: destination rewritten to the real, replies rewritten back.
pub const FWD_NAT: u32 = 2;
/// LVS-TUN: IPIP (IPv6-in-IPv6) encapsulation to the real.
pub const FWD_TUN: u32 = 3;

/// Bits of the single `LB_FLAGS` entry.
/// Some service uses NAT: look up replies of reals in the reverse table.
pub const FLAG_NAT: u32 = 1;
/// [`maps::FLAGS`] bit: connection sync is on; the data plane reports new
/// flows and their state changes in [`maps::SYNC_EVENTS`] ([`SyncEvent`]).
pub const FLAG_SYNC: u32 = 2;

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
    /// Maglev table slot (mh only).
    pub table_id: u32,
    /// With [`SVC_F_PERSIST_NET`]: how many leading bits of the client
    /// address its persistence template keeps, 0 to 32 (IPv4) or 0 to 128
    /// (IPv6); the rest are zeroed ([`persist_client`]). Ignored otherwise.
    pub persist_prefix: u32,
}
const _: () = assert!(size_of::<Service>() == 32);

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
    /// Real's MAC address (destination of rewritten frames; DR only, NAT
    /// and TUN take the next hop from the kernel's FIB).
    pub mac: [u8; 6],
    /// MAC of the interface `ifindex` (source of rewritten frames).
    pub src_mac: [u8; 6],
    /// TUN: outer source address (the director's address toward the real).
    pub tun_src: [u32; 4],
    /// ipvs's upper connection threshold: with active + inactive
    /// connections at or above it the real takes no new connection
    /// (`IP_VS_DEST_F_OVERLOAD`). 0: no limit.
    pub u_threshold: u32,
    /// ipvs's lower threshold: an overloaded real takes new connections
    /// again once below it; 0: below 3/4 of `u_threshold`.
    pub l_threshold: u32,
}
const _: () = assert!(size_of::<Real>() == 80);
const _: () = assert!(size_of::<Real>().is_multiple_of(8));

/// The overload state of a real, as the data plane keeps it in
/// `LB_OVERLOAD` (written only by the XDP program, one u64 per real id):
/// `gen << 32 | u_threshold`, the real's slot generation and its upper
/// threshold at the last decision; 0, or another generation, means not
/// overloaded. One 8-byte word, so CPUs racing on it each store a whole
/// state. The threshold is kept for ipvs's rule on a changed threshold
/// (`__ip_vs_update_dest`): raising it or setting it to 0 ends the
/// overload.
#[inline(always)]
pub fn overload_word(gen: u32, u_threshold: u32) -> u64 {
    ((gen as u64) << 32) | u_threshold as u64
}

/// The overload word of a real after a decision (see [`overload_word`]):
/// non-zero while the real is overloaded. Its connections in effect are
/// `conns` (active + inactive), its thresholds `u` / `l`, its generation
/// `gen`, and `word` the word so far. ipvs (ip_vs_conn.c `ip_vs_bind_dest`
/// / `ip_vs_unbind_dest`): overloaded from `conns >= u` until `conns < l`,
/// or with `l` = 0 until `conns * 4 < u * 3`; without an upper threshold,
/// never; an upper threshold raised above the one the overload started
/// with ends it (`__ip_vs_update_dest`). ipvs decides when a connection is
/// bound or unbound; the data plane when it considers the real for a new
/// connection, which sees the same counts. One scalar in, one out: this
/// runs inside the schedulers' `bpf_loop` callbacks, whose call chain has
/// no stack to spare.
#[inline(always)]
pub fn overload_next(conns: u64, u: u32, l: u32, gen: u32, word: u64) -> u64 {
    if u == 0 {
        return 0;
    }
    let now = overload_word(gen, u);
    if conns >= u as u64 {
        return now;
    }
    let held = word as u32;
    let was = (word >> 32) as u32 == gen && held != 0 && held >= u;
    if !was {
        return 0;
    }
    let below = if l != 0 {
        conns < l as u64
    } else {
        conns.saturating_mul(4) < u as u64 * 3
    };
    if below {
        0
    } else {
        now
    }
}

/// The persistence template's client address for `addr` (maps' layout,
/// network-order words) of family `family` under service flags `flags` and
/// prefix `prefix`: the first `prefix` bits kept, the rest zeroed (ipvs's
/// `svc->netmask`: `saddr & netmask` for IPv4, `ipv6_addr_prefix` for IPv6).
#[inline(always)]
pub fn persist_client(addr: &[u32; 4], family: u8, flags: u32, prefix: u32) -> [u32; 4] {
    if flags & SVC_F_PERSIST_NET == 0 {
        return *addr;
    }
    let width = if family == FAMILY_V4 { 32 } else { 128 };
    let p = if prefix > width { width } else { prefix };
    let mut out = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        let start = i as u32 * 32;
        let bits = if p <= start {
            0
        } else if p - start >= 32 {
            32
        } else {
            p - start
        };
        let mask: u32 = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        out[i] = addr[i] & mask.to_be();
        i += 1;
    }
    out
}

/// Connection counts of a real, as ipvs's activeconns / inactconns.
///
/// `LB_REAL_CONNS` is written by the data plane only, with atomic adds (a
/// connection may open on one CPU and close on another). `LB_CONN_ADJ` is
/// written by the agent only: what its periodic sweep found counted but
/// expired. The count in effect is the difference (wrapping arithmetic).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RealConns {
    pub active: u64,
    pub inactive: u64,
}
const _: () = assert!(size_of::<RealConns>() == 16);

impl RealConns {
    /// Counts in effect: `self` (data plane) minus `adj` (agent), never below 0.
    #[inline(always)]
    pub fn minus(&self, adj: &RealConns) -> RealConns {
        let f = |a: u64, b: u64| {
            let d = a.wrapping_sub(b) as i64;
            if d < 0 {
                0
            } else {
                d as u64
            }
        };
        RealConns {
            active: f(self.active, adj.active),
            inactive: f(self.inactive, adj.inactive),
        }
    }
}

/// Value of the NAT reverse table, keyed by the real's reply 5-tuple
/// (real → client): what to write back as the source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RevNat {
    /// Virtual address, network order.
    pub vaddr: [u32; 4],
    pub vport_be: u16,
    pub family: u8,
    pub _pad: u8,
    pub svc_id: u32,
    pub real_id: u32,
    pub real_gen: u32,
    /// Last packet in either direction (refreshed at most once a second).
    pub last_ns: u64,
}
const _: () = assert!(size_of::<RevNat>() == 40);

/// Key of the fragment table: the fields that identify one datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// IPv4 identification (16 bits) or IPv6 fragment identification.
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FragKey>() == 40);

/// Where the later fragments of a datagram go (the first fragment's real).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragVal {
    pub real_id: u32,
    pub real_gen: u32,
    pub svc_id: u32,
    pub _pad: u32,
    pub last_ns: u64,
}
const _: () = assert!(size_of::<FragVal>() == 24);

/// Key of the decapsulation program's address set (`lb decap --vip`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: [u32; 4],
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<VipKey>() == 20);

/// Per-CPU counters of the decapsulation program.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DecapStats {
    /// Tunnel packets to a configured address, decapsulated and passed on.
    pub decapsulated: u64,
    /// Not an IPIP / IPv6-in-IPv6 packet: passed untouched.
    pub pass_not_tunnel: u64,
    /// A tunnel packet whose inner destination is not configured: passed untouched.
    pub pass_not_vip: u64,
    /// Truncated or inconsistent headers: passed untouched.
    pub pass_malformed: u64,
}
const _: () = assert!(size_of::<DecapStats>() == 32);

/// Maps of the decapsulation program.
pub const DECAP_VIPS: &str = "LB_DECAP_VIPS";
pub const DECAP_STATS: &str = "LB_DECAP_STATS";
/// Capacity of the decapsulation address set.
pub const MAX_DECAP_VIPS: u32 = 1024;

/// Capacity of the fragment table (datagrams in flight).
pub const FRAG_TABLE_SIZE: u32 = 65536;
/// A fragment-table entry is used for at most this long (the kernel's ipfrag_time).
pub const FRAG_TIMEOUT_S: u32 = 30;

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

/// Key of the locality table (lblc / lblcr): a destination address of a
/// service, as ipvs keys its per-service lblc / lblcr tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LocalityKey {
    /// Destination address, network order (IPv4 in word 0).
    pub dst: [u32; 4],
    pub svc_id: u32,
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<LocalityKey>() == 24);

/// Value of the locality table: the real (lblc) or the set of reals (lblcr)
/// serving a destination.
///
/// Each member is one u64, `gen << 32 | real_id` (see [`locality_member`]),
/// so that a CPU reading while another writes sees a whole member or the
/// previous one, never an id with another real's generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Locality {
    /// Members in the order added (lblc: only `members[0]`).
    pub members: [u64; LOCALITY_SET_MAX as usize],
    /// Members in use.
    pub len: u32,
    pub _pad: u32,
    /// Last time the set changed (lblcr's `lastmod`), coarse monotonic ns.
    pub lastmod_ns: u64,
    /// Last time the entry scheduled a connection (ipvs's `lastuse`).
    pub lastuse_ns: u64,
}
const _: () = assert!(size_of::<Locality>() == 88);

/// A [`Locality`] member: real `id` with slot generation `gen`.
#[inline(always)]
pub fn locality_member(id: u32, gen: u32) -> u64 {
    ((gen as u64) << 32) | id as u64
}

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
    /// NAT replies translated back (real → client).
    pub out_packets: u64,
    pub out_bytes: u64,
}
const _: () = assert!(size_of::<Stats>() == 40);

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.conns += o.conns;
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.out_packets += o.out_packets;
        self.out_bytes += o.out_bytes;
    }
}

/// Idle timeouts, in seconds; one entry, set by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_s: u32,
    pub tcp_fin_s: u32,
    pub udp_s: u32,
    pub tcp_syn_s: u32,
    pub tcp_close_s: u32,
    /// lblc / lblcr: an entry unused this long is forgotten, and an lblcr
    /// set unchanged this long drops its most loaded real (ipvs's
    /// `lblc_expiration` / `lblcr_expiration`); 0 means the default,
    /// [`DEFAULT_LOCALITY_EXPIRATION_S`].
    pub locality_s: u32,
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
            locality_s: DEFAULT_LOCALITY_EXPIRATION_S,
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

    /// Lifetime of unused lblc / lblcr state in nanoseconds (0 in the map:
    /// the default).
    #[inline(always)]
    pub fn locality_ns(&self) -> u64 {
        let s = if self.locality_s == 0 {
            DEFAULT_LOCALITY_EXPIRATION_S
        } else {
            self.locality_s
        };
        s as u64 * NS_PER_SEC
    }

    /// Nanoseconds left to a flow in `state` last seen at `last_ns`, at
    /// `now_ns`; `None` once it has been idle for its state's timeout (a
    /// 0 s timeout expires at once). The one test of "a flow is live".
    #[inline(always)]
    pub fn time_left_ns(&self, state: u32, last_ns: u64, now_ns: u64) -> Option<u64> {
        let limit = self.for_state(state) as u64 * NS_PER_SEC;
        let idle = now_ns.saturating_sub(last_ns);
        if idle >= limit {
            None
        } else {
            Some(limit - idle)
        }
    }
}

/// Nanoseconds in a second (timestamps are bpf_ktime_get_coarse_ns).
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// Internet checksum arithmetic (RFC 1071), one definition for the data
/// plane and the agent.
pub mod csum {
    /// Folds a 64-bit accumulator of 16/32-bit one's complement terms to 16
    /// bits (not complemented).
    #[inline(always)]
    pub fn fold(mut s: u64) -> u16 {
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s as u16
    }

    /// Adds the big-endian 16-bit words of `data` to `acc` (an odd last
    /// byte is padded with zero).
    pub fn sum_be(data: &[u8], mut acc: u64) -> u64 {
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            acc += u16::from_be_bytes([c[0], c[1]]) as u64;
        }
        if let [last] = chunks.remainder() {
            acc += (*last as u64) << 8;
        }
        acc
    }
}

macro_rules! global_stats {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Global per-CPU counters, all u64, in three groups: the verdicts;
        /// the reasons, one per pass (`pass_*`) or drop (`drop_*`) of a
        /// packet, so that they add up to `pass` and `drop`; and from
        /// `new_flows` on, events (any number per packet). The data plane
        /// indexes them by position (lb-ebpf's code.rs).
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
        pub struct GlobalStats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl GlobalStats {
            /// (name, description) of every counter, in field order.
            pub const FIELDS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($name), concat!($($doc),*)),)*];

            /// The counters in field order.
            pub fn values(&self) -> [u64; Self::FIELDS.len()] {
                [$(self.$name,)*]
            }

            pub fn add(&mut self, o: &GlobalStats) {
                $(self.$name += o.$name;)*
            }
        }
    };
}

global_stats! {
    /// verdict XDP_PASS (to the kernel)
    pass,
    /// verdict XDP_TX (forwarded out of the ingress interface)
    tx,
    /// verdict XDP_REDIRECT (forwarded through another interface)
    redirect,
    /// verdict XDP_DROP
    drop,
    /// verdict XDP_ABORTED (a bug if not 0)
    aborted,
    /// passed: not IPv4/IPv6 (ARP, ...)
    pass_not_ip,
    /// passed: not for a virtual service
    pass_not_vip,
    /// passed: protocol not balanced (not TCP/UDP, ICMP not about a flow)
    pass_other_proto,
    /// passed: fragment of a datagram whose first fragment was not seen
    pass_fragment,
    /// passed: IPv4 options / IPv6 extension headers
    pass_ip_options,
    /// passed: truncated or inconsistent headers
    pass_malformed,
    /// passed: next hop not resolved yet; handed to lb's tc program, which resolves it and sends the packet (see neigh_handoff)
    pass_no_neigh,
    /// passed: egress interface not attached; handed to lb's tc program, which sends the packet (see neigh_handoff)
    pass_no_devmap,
    /// passed: IPv4 header checksum wrong (the kernel drops it, as it does before ipvs)
    pass_bad_csum,
    /// passed: Ethernet destination broadcast or multicast (ipvs balances only frames to this host)
    pass_not_unicast,
    /// passed: Ethernet destination another host's unicast MAC (the kernel drops it as PACKET_OTHERHOST); see HostMacs
    pass_other_host,
    /// dropped: service has no real that can take new flows
    drop_no_real,
    /// dropped: egress interface unknown or redirect failed
    drop_no_egress,
    /// dropped: no route to the real / client (FIB lookup failed)
    drop_unroutable,
    /// dropped: IP forwarding disabled on the ingress interface (NAT, TUN need it)
    drop_fwd_disabled,
    /// dropped: too big to encapsulate and DF not set
    drop_too_big,
    /// dropped: IPv6 UDP with checksum 0 (invalid, RFC 8200 section 8.1; the kernel drops it too)
    drop_udp_zero_csum,
    /// dropped: TTL / hop limit 0 or 1 where no ICMP time exceeded is sent (ICMP errors, NAT replies, or the error could not be built)
    drop_ttl,
    /// new flows scheduled
    new_flows,
    /// flows rescheduled (their real was removed or unavailable)
    resched,
    /// flows rescheduled (their entry had expired)
    expired,
    /// NAT replies translated back to the virtual address
    nat_reverse,
    /// first fragments tracked
    frag_first,
    /// later fragments forwarded to the first one's real
    frag_forwarded,
    /// ICMP errors forwarded / translated for a tracked flow
    icmp_forwarded,
    /// ICMP fragmentation-needed / packet-too-big sent (TUN: to clients; NAT: to clients and to reals)
    icmp_too_big_sent,
    /// packets sent into an IPIP / IPv6 tunnel
    encap,
    /// packets handed to lb's tc program with their egress and next hop (XDP metadata, NeighHandoff)
    neigh_handoff,
    /// packets the tc program sent with bpf_redirect_neigh (the kernel resolves the next hop)
    neigh_sent,
    /// ICMP time exceeded sent to clients (TTL / hop limit 0 or 1 on arrival)
    icmp_time_exceeded_sent,
    /// connection-sync events lost: the ring buffer toward the agent was full (the flow is still forwarded; the peer learns it at the next periodic refresh)
    sync_lost,
}
const _: () = assert!(size_of::<GlobalStats>() == 36 * 8);

/// One record of [`maps::SYNC_EVENTS`]: a flow the data plane scheduled
/// (`state` its first state) or whose TCP state changed (`CT_*`). The
/// agent's connection sync (lb-user `sync`) turns these into ipvs sync
/// protocol messages. Addresses and ports in network order, as in
/// [`FlowKey`]; the rest native.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SyncEvent {
    /// The client's 5-tuple as seen on ingress (client → VIP).
    pub key: FlowKey,
    pub svc_id: u32,
    pub real_id: u32,
    pub real_gen: u32,
    /// `CT_*` after the packet.
    pub state: u32,
}
const _: () = assert!(size_of::<SyncEvent>() == 56);

/// Size of the [`maps::SYNC_EVENTS`] ring buffer in bytes (a power of two
/// and a multiple of the page size), read by the agent every 10 ms. A
/// record takes 64 bytes (the 56-byte event and the ring's 8-byte header);
/// the kernel keeps the writer at most size − 1 bytes ahead of the reader,
/// so 65,535 unread events fit (testkit `tests/sync.rs` fills it).
pub const SYNC_RING_BYTES: u32 = 1 << 22;

/// What the XDP program writes in front of a packet it cannot finish
/// (XDP metadata, `bpf_xdp_adjust_meta`) before it passes the packet up: the
/// egress interface and next hop of its FIB lookup. lb's tc program
/// (clsact ingress, on the same interfaces) reads it from
/// `__sk_buff->data_meta` and sends the packet with `bpf_redirect_neigh`,
/// so the kernel resolves the neighbour (queueing the packet while ARP /
/// ND runs) instead of routing the rewritten packet itself (it drops a NAT
/// reply, whose source is the director's own VIP).
///
/// Words as the kernel's `struct bpf_redir_neigh` after the first two:
/// native byte order except `nexthop`, which is network order (IPv4 in
/// word 0). 28 bytes: XDP metadata is at most 32 and a multiple of 4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NeighHandoff {
    /// [`NEIGH_HANDOFF_MAGIC`]: metadata written by lb-xdp, not by anyone else.
    pub magic: u32,
    /// Egress interface index (the FIB's answer).
    pub ifindex: u32,
    /// Address family of `nexthop`: AF_INET (2) or AF_INET6 (10).
    pub family: u32,
    /// The next hop (the gateway, or the destination when on-link).
    pub nexthop: [u32; 4],
}
const _: () = assert!(size_of::<NeighHandoff>() == 28);

/// [`NeighHandoff::magic`] ("lbnh" in ASCII).
pub const NEIGH_HANDOFF_MAGIC: u32 = 0x6c62_6e68;

/// Most MAC addresses [`HostMacs`] holds: the attached interfaces' own and
/// those of the devices stacked on them (VRRP VMACs, VLANs).
pub const MAX_HOST_MACS: usize = 31;

/// The Ethernet addresses frames for this host are sent to: the single
/// entry of `LB_HOST_MACS`, written by the agent. The XDP program balances
/// only frames whose destination is one of them (or a group address, passed
/// before); a frame to any other unicast MAC, which a NIC in promiscuous
/// mode or a bridge port delivers, is passed untouched, and the kernel
/// drops it (`PACKET_OTHERHOST`), as it would before ipvs.
///
/// `count` 0 (no agent wrote the entry) accepts every destination.
/// Each address is in the low 48 bits of its word, its first byte lowest
/// (the 6 bytes as they are on the wire, read as a little-endian integer):
/// see [`mac_word`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HostMacs {
    /// How many of `macs` are in use (at most [`MAX_HOST_MACS`]).
    pub count: u32,
    pub _pad: u32,
    pub macs: [u64; MAX_HOST_MACS],
}
const _: () = assert!(size_of::<HostMacs>() == 256);

/// A MAC address as [`HostMacs`] stores it.
#[inline(always)]
pub const fn mac_word(mac: [u8; 6]) -> u64 {
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

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
    pub const FLAGS: &str = "LB_FLAGS";
    pub const HOST_MACS: &str = "LB_HOST_MACS";
    pub const REAL_CONNS: &str = "LB_REAL_CONNS";
    pub const CONN_ADJ: &str = "LB_CONN_ADJ";
    pub const NAT_REV: &str = "LB_NAT_REV";
    pub const FRAGS: &str = "LB_FRAGS";
    pub const MAGLEV: &str = "LB_MAGLEV";
    pub const LOCALITY: &str = "LB_LOCALITY";
    /// Overload state per real (connection thresholds), written by the
    /// data plane only; see [`super::overload_word`].
    pub const OVERLOAD: &str = "LB_OVERLOAD";
    /// Connection-sync events ([`super::SyncEvent`], a BPF ring buffer).
    pub const SYNC_EVENTS: &str = "LB_SYNC_EVENTS";
    /// Every map, for pinning and listing.
    pub const ALL: [&str; 21] = [
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
        FLAGS,
        REAL_CONNS,
        CONN_ADJ,
        NAT_REV,
        FRAGS,
        MAGLEV,
        LOCALITY,
        OVERLOAD,
        HOST_MACS,
        SYNC_EVENTS,
    ];
}

/// Index of slot `pos` of Maglev table `table` generation `gen` in `LB_MAGLEV`.
#[inline(always)]
pub fn maglev_index(table: u32, gen: u32, pos: u32) -> u32 {
    (table * RING_GENS + (gen & 1)) * MH_TABLE_SIZE + pos
}

/// Hashes that the data plane computes and the agent's tests predict.
pub mod hash {
    /// ipvs's `hash_32`: multiplicative hash, top `bits` bits.
    #[inline(always)]
    pub fn hash_32(val: u32, bits: u32) -> u32 {
        val.wrapping_mul(0x61C8_8647) >> (32 - bits)
    }

    /// Source-hash bucket as ipvs sh computes it (`ip_vs_sh_hashkey`): the
    /// address words XOR-folded, host order, plus the port when hashed.
    /// `addr` is in the maps' layout (network-order words).
    #[inline(always)]
    pub fn sh_bucket(addr: &[u32; 4], port_be: u16, offset: u32) -> u32 {
        let fold = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
        let v = u16::from_be(port_be) as u32 + u32::from_be(fold);
        (offset + hash_32(v, 8)) & (super::SH_TABLE_SIZE - 1)
    }

    /// Destination-hash bucket as ipvs dh computes it (`ip_vs_dh_hashkey`):
    /// the address words XOR-folded, host order, `hash_32` to 8 bits.
    /// `addr` is in the maps' layout (network-order words).
    #[inline(always)]
    pub fn dh_bucket(addr: &[u32; 4]) -> u32 {
        let fold = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
        hash_32(u32::from_be(fold), 8) & (super::DH_TABLE_SIZE - 1)
    }

    /// murmur3's finaliser: a cheap, well-mixing 32-bit permutation.
    #[inline(always)]
    pub fn fmix32(mut h: u32) -> u32 {
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        h
    }

    /// Seed of [`mh_hash`]: a constant, never drawn per boot or per agent
    /// (as ipvs mh's fixed `hsiphash` keys), so that every director — and
    /// every version of lb that keeps this value — hashes a flow to the same
    /// Maglev slot. Changing it changes which real every mh flow gets.
    pub const MH_HASH_SEED: u32 = 0x9747_b28c;

    /// Flow hash for Maglev: source address (and port when hashed).
    ///
    /// `addr` is in the maps' layout (network-order words, IPv4 in word 0,
    /// the rest 0); `port_be` is the source port in network order, or 0
    /// when the service does not hash the port (`mh-port` unset). The result
    /// depends on these two and [`MH_HASH_SEED`] only: nothing of the
    /// director (interface, MAC, boot, CPU) enters it, which is half of what
    /// makes mh identical on every director (the other half: the agent's
    /// table is a pure function of the configured reals and weights).
    #[inline(always)]
    pub fn mh_hash(addr: &[u32; 4], port_be: u16) -> u32 {
        let mut h = MH_HASH_SEED;
        let mut i = 0;
        while i < 4 {
            h = fmix32(h ^ addr[i]);
            i += 1;
        }
        fmix32(h ^ port_be as u32)
    }
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
    unsafe impl aya::Pod for LocalityKey {}
    unsafe impl aya::Pod for Locality {}
    unsafe impl aya::Pod for Stats {}
    unsafe impl aya::Pod for HostMacs {}
    unsafe impl aya::Pod for Timeouts {}
    unsafe impl aya::Pod for GlobalStats {}
    unsafe impl aya::Pod for RealConns {}
    unsafe impl aya::Pod for RevNat {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragVal {}
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for DecapStats {}
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
        assert_eq!(offset_of!(Real, tun_src), 56);
        assert_eq!(offset_of!(Real, u_threshold), 72);
        assert_eq!(offset_of!(Real, l_threshold), 76);
        assert_eq!(offset_of!(Service, persist_prefix), 28);
        assert_eq!(offset_of!(RevNat, last_ns), 32);
        assert_eq!(offset_of!(FragKey, id), 32);
        assert_eq!(offset_of!(FlowKey, sport_be), 32);
        assert_eq!(offset_of!(FlowKey, proto), 36);
        assert_eq!(offset_of!(Conn, last_ns), 16);
        assert_eq!(offset_of!(Persist, last_ns), 8);
        assert_eq!(offset_of!(LocalityKey, svc_id), 16);
        assert_eq!(offset_of!(Locality, len), 64);
        assert_eq!(offset_of!(Locality, lastuse_ns), 80);
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
    fn sh_bucket_matches_ipvs() {
        // ipvs: hash_32(ntohl(addr), 8) for 192.0.2.7 without port.
        let a = [u32::from_ne_bytes([192, 0, 2, 7]), 0, 0, 0];
        let want = (0xc000_0207u32.wrapping_mul(0x61C8_8647)) >> 24;
        assert_eq!(hash::sh_bucket(&a, 0, 0), want);
        assert_eq!(hash::sh_bucket(&a, 0, 1), (want + 1) & 255);
    }

    /// [`hash::mh_hash`] of the three inputs of `mh_hash_is_pinned`,
    /// computed once by an independent (Python) copy of the function.
    const MH_PIN: [u32; 3] = [0xd605_8b47, 0xe12f_bbc3, 0x77e1_3cd1];

    #[test]
    fn mh_hash_is_pinned() {
        // Directors running different builds must agree on every flow's
        // slot: these values change only with MH_HASH_SEED or the mixing.
        let a = [u32::from_ne_bytes([192, 0, 2, 7]), 0, 0, 0];
        assert_eq!(hash::mh_hash(&a, 0), MH_PIN[0]);
        assert_eq!(hash::mh_hash(&a, 40000u16.to_be()), MH_PIN[1]);
        let b = [1u32.to_be(), 2u32.to_be(), 4u32.to_be(), 8u32.to_be()];
        assert_eq!(hash::mh_hash(&b, 443u16.to_be()), MH_PIN[2]);
    }

    #[test]
    fn dh_bucket_matches_ipvs() {
        // ipvs: hash_32(ntohl(addr), 8) for 10.0.0.100; IPv6 folds its words.
        let a = [u32::from_ne_bytes([10, 0, 0, 100]), 0, 0, 0];
        assert_eq!(
            hash::dh_bucket(&a),
            0x0a00_0064u32.wrapping_mul(0x61C8_8647) >> 24
        );
        let b = [1u32.to_be(), 2u32.to_be(), 4u32.to_be(), 8u32.to_be()];
        assert_eq!(hash::dh_bucket(&b), 15u32.wrapping_mul(0x61C8_8647) >> 24);
    }

    #[test]
    fn locality_lifetime_defaults_to_a_day() {
        let t = Timeouts {
            locality_s: 0,
            ..Timeouts::default()
        };
        assert_eq!(t.locality_ns(), 86_400 * NS_PER_SEC);
        assert_eq!(Timeouts::default().locality_ns(), 86_400 * NS_PER_SEC);
        let one = Timeouts {
            locality_s: 1,
            ..Timeouts::default()
        };
        assert_eq!(one.locality_ns(), NS_PER_SEC);
        assert_eq!(locality_member(7, 3), (3 << 32) | 7);
    }

    #[test]
    fn real_conns_never_negative() {
        let c = RealConns {
            active: 3,
            inactive: 1,
        };
        let adj = RealConns {
            active: 1,
            inactive: 2,
        };
        assert_eq!(
            c.minus(&adj),
            RealConns {
                active: 2,
                inactive: 0
            }
        );
        let wrapped = RealConns {
            active: 1,
            inactive: 0,
        };
        let adj = RealConns {
            active: u64::MAX,
            inactive: 0,
        };
        assert_eq!(wrapped.minus(&adj).active, 2);
    }

    #[test]
    fn overload_follows_ipvs_thresholds() {
        let g = 7;
        let mut w = 0u64;
        let step = |c: u64, u: u32, l: u32, w: &mut u64| {
            *w = overload_next(c, u, l, g, *w);
            *w != 0
        };
        // u = 4, l = 0: overloaded at 4, until below 3 (4 * 3 / 4).
        let seq: [bool; 6] = [3, 4, 5, 3, 2, 3].map(|c| step(c, 4, 0, &mut w));
        assert_eq!(seq, [false, true, true, true, false, false]);
        // l = 2: overloaded at 4 until below 2.
        let seq: [bool; 5] = [4, 3, 2, 1, 3].map(|c| step(c, 4, 2, &mut w));
        assert_eq!(seq, [true, true, true, false, false]);
        // u = 0 never overloads; a raised threshold ends the overload, a
        // lowered one keeps it (ipvs __ip_vs_update_dest).
        assert!(!step(100, 0, 0, &mut w));
        assert!(step(5, 5, 0, &mut w));
        assert!(!step(4, 6, 0, &mut w));
        assert!(step(5, 5, 0, &mut w));
        assert!(step(4, 4, 0, &mut w));
        assert!(step(3, 3, 0, &mut w));
        assert_eq!(w, overload_word(g, 3));
        // Another generation of the slot starts not overloaded.
        assert_eq!(overload_next(4, 5, 0, g + 1, overload_word(g, 5)), 0);
        // u * 3 with u near u32::MAX does not overflow.
        let top = overload_word(g, u32::MAX);
        assert_eq!(overload_next(u32::MAX as u64 - 1, u32::MAX, 0, g, top), top);
    }

    #[test]
    fn persist_client_masks_to_the_prefix() {
        let v4 = [u32::from_ne_bytes([192, 0, 2, 77]), 0, 0, 0];
        assert_eq!(persist_client(&v4, FAMILY_V4, 0, 24), v4);
        assert_eq!(
            persist_client(&v4, FAMILY_V4, SVC_F_PERSIST_NET, 24)[0],
            u32::from_ne_bytes([192, 0, 2, 0])
        );
        assert_eq!(persist_client(&v4, FAMILY_V4, SVC_F_PERSIST_NET, 32), v4);
        assert_eq!(persist_client(&v4, FAMILY_V4, SVC_F_PERSIST_NET, 0), [0; 4]);
        assert_eq!(
            persist_client(&v4, FAMILY_V4, SVC_F_PERSIST_NET, 20)[0],
            u32::from_ne_bytes([192, 0, 0, 0])
        );
        let v6 = [
            0x2001_0db8u32.to_be(),
            0x0001_0002u32.to_be(),
            5u32.to_be(),
            6u32.to_be(),
        ];
        assert_eq!(
            persist_client(&v6, FAMILY_V6, SVC_F_PERSIST_NET, 64),
            [v6[0], v6[1], 0, 0]
        );
        assert_eq!(
            persist_client(&v6, FAMILY_V6, SVC_F_PERSIST_NET, 48),
            [v6[0], 0x0001_0000u32.to_be(), 0, 0]
        );
        assert_eq!(persist_client(&v6, FAMILY_V6, SVC_F_PERSIST_NET, 128), v6);
    }

    #[test]
    fn timeouts_per_state() {
        let t = Timeouts::default();
        assert_eq!(
            [CT_ESTABLISHED, CT_FIN_WAIT, CT_UDP, CT_SYN_RECV, CT_CLOSE].map(|s| t.for_state(s)),
            [900, 120, 300, 60, 10]
        );
    }

    #[test]
    fn a_flow_is_live_until_idle_for_its_timeout() {
        let t = Timeouts {
            tcp_close_s: 0,
            ..Timeouts::default()
        };
        let s = NS_PER_SEC;
        assert_eq!(t.time_left_ns(CT_FIN_WAIT, 10 * s, 10 * s), Some(120 * s));
        assert_eq!(t.time_left_ns(CT_FIN_WAIT, 10 * s, 129 * s), Some(s));
        assert_eq!(t.time_left_ns(CT_FIN_WAIT, 10 * s, 130 * s), None);
        // A clock read before the timestamp is no idle time.
        assert_eq!(t.time_left_ns(CT_UDP, 10 * s, 5 * s), Some(300 * s));
        assert_eq!(t.time_left_ns(CT_CLOSE, 10 * s, 10 * s), None);
    }

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(csum::fold(csum::sum_be(&data, 0)), 0xddf2);
        assert_eq!(csum::sum_be(&[0x12], 0), 0x1200);
    }
}
