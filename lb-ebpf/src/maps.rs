//! Every map of the data plane. All are BTF maps so `bpftool map dump pinned …`
//! prints field names; the agent pins them under its bpffs directory by name.
//! Sizes given here are defaults: the agent overrides the connection and
//! persistence table sizes at load time.

use aya_ebpf::{
    btf_maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use lb_common::{
    Conn, FlowKey, FragKey, FragVal, GlobalStats, HostMacs, Locality, LocalityKey, Persist,
    PersistKey, Real, RealConns, RevNat, Service, Stats, SvcKey, SyncEvent, Timeouts,
    DEFAULT_CONNTRACK_SIZE, DEFAULT_PERSIST_SIZE, FRAG_TABLE_SIZE, LOCALITY_TABLE_SIZE, MAX_IFACES,
    MAX_MH_TABLES, MAX_REALS, MAX_SERVICES, MH_TABLE_SIZE, RING_GENS, RING_SIZE, SYNC_RING_BYTES,
};
use lb_ebpf::parse::Packet;

const MAX_SERVICES_U: usize = MAX_SERVICES as usize;
const MAX_REALS_U: usize = MAX_REALS as usize;
const RINGS_U: usize = (MAX_SERVICES * RING_GENS * RING_SIZE) as usize;
const MAGLEV_U: usize = (MAX_MH_TABLES * RING_GENS * MH_TABLE_SIZE) as usize;

/// Virtual services by (VIP, port, protocol).
#[btf_map]
pub static LB_SERVICES: HashMap<SvcKey, Service, MAX_SERVICES_U> = HashMap::new();

/// Real servers by real id.
#[btf_map]
pub static LB_REALS: Array<Real, MAX_REALS_U> = Array::new();

/// Scheduling rings: real ids, `ring_index(svc, gen, pos)`; built by the agent.
#[btf_map]
pub static LB_RINGS: Array<u32, RINGS_U> = Array::new();

/// Position in each service's ring, one counter per service shared by all
/// CPUs (rr / wrr: atomic fetch-and-add, see `sched::ring`).
#[btf_map]
pub static LB_CURSORS: Array<u64, MAX_SERVICES_U> = Array::new();

/// BPF_F_NO_COMMON_LRU: each CPU keeps its own LRU list, so inserting a new
/// flow never takes a lock shared with other CPUs.
const NO_COMMON_LRU: usize = 2;

/// Connection tracking: client 5-tuple to real.
#[btf_map]
pub static LB_CONNTRACK: LruHashMap<
    FlowKey,
    Conn,
    { DEFAULT_CONNTRACK_SIZE as usize },
    NO_COMMON_LRU,
> = LruHashMap::new();

/// Persistence templates: (client address, service) to real.
#[btf_map]
pub static LB_PERSIST: LruHashMap<
    PersistKey,
    Persist,
    { DEFAULT_PERSIST_SIZE as usize },
    NO_COMMON_LRU,
> = LruHashMap::new();

/// Redirect targets by ifindex (reals reached through another attached interface).
#[btf_map]
pub static LB_DEVMAP: DevMapHash<{ MAX_IFACES as usize }> = DevMapHash::new();

/// Per-CPU counters per service.
#[btf_map]
pub static LB_SVC_STATS: PerCpuArray<Stats, MAX_SERVICES_U> = PerCpuArray::new();

/// Per-CPU counters per real.
#[btf_map]
pub static LB_REAL_STATS: PerCpuArray<Stats, MAX_REALS_U> = PerCpuArray::new();

/// Per-CPU counters per verdict and reason.
#[btf_map]
pub static LB_GLOBAL_STATS: PerCpuArray<GlobalStats, 1> = PerCpuArray::new();

/// Idle timeouts (one entry).
#[btf_map]
pub static LB_TIMEOUTS: Array<Timeouts, 1> = Array::new();

/// Feature bits (`FLAG_*`, one entry), set by the agent.
#[btf_map]
pub static LB_FLAGS: Array<u32, 1> = Array::new();

/// Connection-sync events (`SyncEvent`) for the agent (sync.rs).
#[btf_map]
pub static LB_SYNC_EVENTS: RingBuf<SyncEvent, { SYNC_RING_BYTES as usize }> = RingBuf::new();

/// The MACs frames for this host are sent to (one entry, `HostMacs`), set
/// by the agent; others are passed (host_mac.rs).
#[btf_map]
pub static LB_HOST_MACS: Array<HostMacs, 1> = Array::new();

/// Connection counts per real, data-plane side (atomic adds).
#[btf_map]
pub static LB_REAL_CONNS: Array<RealConns, MAX_REALS_U> = Array::new();

/// Connection counts per real, agent side (expired entries it swept).
#[btf_map]
pub static LB_CONN_ADJ: Array<RealConns, MAX_REALS_U> = Array::new();

/// NAT reverse table: the real's reply 5-tuple to the virtual address.
#[btf_map]
pub static LB_NAT_REV: LruHashMap<
    FlowKey,
    RevNat,
    { DEFAULT_CONNTRACK_SIZE as usize },
    NO_COMMON_LRU,
> = LruHashMap::new();

/// Fragment tracking: later fragments follow the first one's real.
#[btf_map]
pub static LB_FRAGS: LruHashMap<FragKey, FragVal, { FRAG_TABLE_SIZE as usize }, NO_COMMON_LRU> =
    LruHashMap::new();

/// Maglev lookup tables (mh): `maglev_index(table, gen, pos)` to real id.
#[btf_map]
pub static LB_MAGLEV: Array<u32, MAGLEV_U> = Array::new();

/// lblc / lblcr: (service, destination address) to its real or set of reals.
#[btf_map]
pub static LB_LOCALITY: LruHashMap<
    LocalityKey,
    Locality,
    { LOCALITY_TABLE_SIZE as usize },
    NO_COMMON_LRU,
> = LruHashMap::new();

/// Overload state per real id (connection thresholds): written only here,
/// by the scheduler, one whole 8-byte word at a time
/// (`lb_common::overload_word`); pinned so a restarted agent keeps it.
#[btf_map]
pub static LB_OVERLOAD: Array<u64, MAX_REALS_U> = Array::new();

/// Per-CPU scratch space for the arguments of lblc / lblcr's global function.
#[btf_map]
pub static LB_LOCALITY_ARGS: PerCpuArray<crate::sched::LocalityArgs, 1> = PerCpuArray::new();

/// Per-CPU scratch space for the parsed packet (keeps it off the BPF stack).
#[btf_map]
pub static LB_SCRATCH: PerCpuArray<Packet, 1> = PerCpuArray::new();
