//! Loading the XDP program and the typed handles on its maps.
//!
//! Everything that writes to the data plane goes through [`Dataplane`]; the
//! agent, the fixture tests and the benchmark all fill the maps through it.

use std::path::{Path, PathBuf};

use aya::{
    maps::{Array, DevMapHash, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{tc::SchedClassifier, ProgramError, Xdp, XdpMode},
    Ebpf, EbpfError, EbpfLoader,
};
use lb_common::{
    mac_word, maps, Conn, FlowKey, FragKey, FragVal, GlobalStats, HostMacs, Locality, LocalityKey,
    Persist, PersistKey, Real, RealConns, RevNat, Service, Stats, SvcKey, Timeouts, MAX_HOST_MACS,
};

/// The XDP object built by build.rs (empty when built with AYA_BUILD_SKIP=1).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-xdp"));

/// The real servers' decapsulation object (`lb decap`).
pub static DECAP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-decap"));

/// Name of the XDP program in the object.
pub const PROGRAM: &str = "lb_xdp";

/// Name of the tc program in the object: it sends what XDP hands over
/// (unresolved next hop, egress without XDP) with `bpf_redirect_neigh`.
pub const TC_PROGRAM: &str = "lb_tc";

/// Why the data plane could not be loaded, attached, opened or written.
/// aya's errors are boxed: they are large and travel up through every call.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("this `lb` was built with AYA_BUILD_SKIP=1 and has no XDP program; rebuild without it (cargo xtask setup installs what the build needs)")]
    NoProgram,
    #[error("loading the XDP object (maps)")]
    Load(#[source] Box<EbpfError>),
    #[error("{0} missing from the XDP object")]
    Missing(String),
    #[error("loading the XDP program into the kernel (verifier)")]
    Verifier(#[source] Box<ProgramError>),
    #[error("attaching XDP to {iface}{hint}")]
    Attach {
        iface: String,
        /// What to try, for the usual causes.
        hint: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("opening pinned map {} (is an agent running with --bpffs {}?)", path.display(), dir.display())]
    Pin {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: Box<MapError>,
    },
    #[error("pinned map {} holds {what} of {found} bytes where this lb needs {want}: it was left by an lb of another version. Stop that lb, then remove the pinned maps in {} (established flows are then scheduled anew) and start again", path.display(), dir.display())]
    PinLayout {
        path: PathBuf,
        dir: PathBuf,
        /// "keys" or "values".
        what: &'static str,
        found: u32,
        want: u32,
    },
    #[error("removing the pinned map {} of an older lb", path.display())]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} MAC addresses on the attached interfaces and the devices on them, more than the {MAX_HOST_MACS} the data plane compares: frames to other hosts' MACs are balanced too")]
    TooManyHostMacs(usize),
    #[error("{0} has an unexpected map type")]
    MapType(&'static str),
    #[error("map operation failed")]
    Map(#[source] Box<MapError>),
    #[error("devmap operation failed")]
    DevMap(#[source] Box<aya::maps::xdp::XdpMapError>),
    #[error("program operation failed")]
    Program(#[source] Box<ProgramError>),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<MapError> for DataplaneError {
    fn from(e: MapError) -> Self {
        DataplaneError::Map(Box::new(e))
    }
}

impl From<aya::maps::xdp::XdpMapError> for DataplaneError {
    fn from(e: aya::maps::xdp::XdpMapError) -> Self {
        DataplaneError::DevMap(Box::new(e))
    }
}

impl From<ProgramError> for DataplaneError {
    fn from(e: ProgramError) -> Self {
        DataplaneError::Program(Box::new(e))
    }
}

type Result<T> = std::result::Result<T, DataplaneError>;

/// Options that shape the maps at load time.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Pin every map here (reusing maps already pinned there), or pin nothing.
    pub pin_dir: Option<PathBuf>,
    pub conntrack_size: u32,
    pub persist_size: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pin_dir: None,
            conntrack_size: lb_common::DEFAULT_CONNTRACK_SIZE,
            persist_size: lb_common::DEFAULT_PERSIST_SIZE,
        }
    }
}

/// Loads the XDP object (maps created or reused from the pin directory) and
/// the program into the kernel, without attaching it.
pub fn load(opts: &LoadOptions) -> Result<Ebpf> {
    if EBPF_OBJECT.is_empty() {
        return Err(DataplaneError::NoProgram);
    }
    let paths: Vec<(&str, PathBuf)> = match &opts.pin_dir {
        Some(dir) => maps::ALL.iter().map(|m| (*m, dir.join(m))).collect(),
        None => Vec::new(),
    };
    if let Some(dir) = &opts.pin_dir {
        check_pinned_layouts(dir)?;
    }
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(maps::CONNTRACK, opts.conntrack_size)
        .map_max_entries(maps::NAT_REV, opts.conntrack_size)
        .map_max_entries(maps::PERSIST, opts.persist_size);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(EBPF_OBJECT)
        .map_err(|e| DataplaneError::Load(Box::new(e)))?;
    load_program(xdp(&mut ebpf)?).map_err(|e| DataplaneError::Verifier(Box::new(e)))?;
    let tc = tc_program(&mut ebpf)?;
    retry_eagain(|| tc.load()).map_err(|e| DataplaneError::Verifier(Box::new(e)))?;
    Ok(ebpf)
}

/// (key size, value size) in bytes of each map of the object, from the
/// shared types; `None` for the device map, whose value is the kernel's.
fn layout(name: &str) -> Option<(usize, usize)> {
    use std::mem::size_of;
    let u = size_of::<u32>();
    Some(match name {
        maps::SERVICES => (size_of::<SvcKey>(), size_of::<Service>()),
        maps::REALS => (u, size_of::<Real>()),
        maps::RINGS | maps::FLAGS | maps::MAGLEV => (u, u),
        maps::CURSORS => (u, size_of::<u64>()),
        maps::CONNTRACK => (size_of::<FlowKey>(), size_of::<Conn>()),
        maps::PERSIST => (size_of::<PersistKey>(), size_of::<Persist>()),
        maps::SVC_STATS | maps::REAL_STATS => (u, size_of::<Stats>()),
        maps::GLOBAL_STATS => (u, size_of::<GlobalStats>()),
        maps::TIMEOUTS => (u, size_of::<Timeouts>()),
        maps::REAL_CONNS | maps::CONN_ADJ => (u, size_of::<RealConns>()),
        maps::NAT_REV => (size_of::<FlowKey>(), size_of::<RevNat>()),
        maps::FRAGS => (size_of::<FragKey>(), size_of::<FragVal>()),
        maps::LOCALITY => (size_of::<LocalityKey>(), size_of::<Locality>()),
        maps::OVERLOAD => (u, size_of::<u64>()),
        maps::HOST_MACS => (u, size_of::<HostMacs>()),
        _ => return None,
    })
}

/// Refuses maps pinned in `dir` whose key or value size differs from this
/// build's (an lb of another version left them). aya reuses a pinned map
/// by name without comparing its shape, and the kernel then refuses the
/// program (an access past the value) or every write to the map; this
/// says which map and what to do instead. Pins that are absent are
/// created by the load as usual. The maps that hold no flows
/// ([`replaceable`]) are replaced instead, once every other pin has passed.
fn check_pinned_layouts(dir: &Path) -> Result<()> {
    let mut stale = Vec::new();
    for name in maps::ALL {
        let path = dir.join(name);
        let Some((key, value)) = layout(name) else {
            continue;
        };
        if !path.exists() {
            continue;
        }
        let data = MapData::from_pin(&path).map_err(|source| DataplaneError::Pin {
            path: path.clone(),
            dir: dir.into(),
            source: Box::new(source),
        })?;
        let info = data.info()?;
        if name == maps::CURSORS {
            if !cursors_shaped(&info) {
                stale.push((name, path));
            }
            continue;
        }
        for (what, found, want) in [
            ("keys", info.key_size(), key as u32),
            ("values", info.value_size(), value as u32),
        ] {
            if found == want {
                continue;
            }
            if replaceable(name).is_some() {
                stale.push((name, path));
                break;
            }
            return Err(DataplaneError::PinLayout {
                path,
                dir: dir.into(),
                what,
                found,
                want,
            });
        }
    }
    // Only once every other pin passed: a refused start removes nothing.
    for (name, path) in stale {
        std::fs::remove_file(&path).map_err(|source| DataplaneError::Unpin {
            path: path.clone(),
            source,
        })?;
        tracing::warn!(
            map = %path.display(),
            "pinned map of an older lb replaced: {}",
            replaceable(name).unwrap_or_default()
        );
    }
    Ok(())
}

/// Whether a pinned `LB_CURSORS` has this build's shape: an array of
/// 8-byte counters. One pinned by an lb before the shared cursor is a
/// per-CPU array of 4-byte positions.
fn cursors_shaped(info: &aya::maps::MapInfo) -> bool {
    matches!(info.map_type(), Ok(aya::maps::MapType::Array))
        && info.key_size() as usize == size_of::<u32>()
        && info.value_size() as usize == size_of::<u64>()
}

/// The maps an upgrade may replace when their pinned shape is an older
/// lb's, with what that costs (said in the log): they hold no flows, so
/// the load creates them anew rather than refusing to start as it does for
/// the maps with connections in them.
fn replaceable(name: &str) -> Option<&'static str> {
    Some(match name {
        maps::CURSORS => {
            "rr / wrr restart at the start of their rings (the old cursors were one per CPU)"
        }
        maps::GLOBAL_STATS => "the global counters (lb counters) restart from 0",
        maps::HOST_MACS => "the agent writes this host's MACs again",
        _ => return None,
    })
}

/// How many times [`load_program`] submits a program the kernel answered
/// with `EAGAIN` (libbpf's `sys_bpf_prog_load` makes the same 5 attempts).
const PROG_LOAD_ATTEMPTS: u32 = 5;

/// Loads an XDP program into the kernel (`BPF_PROG_LOAD`, the verifier),
/// submitting it again when the kernel answers `EAGAIN`.
///
/// The verifier gives up with `EAGAIN` whenever a signal is pending for the
/// loading thread (`signal_pending()` in `do_check`), whatever the signal and
/// whether or not it is blocked elsewhere in the process; the load itself was
/// fine. libbpf retries for this reason, and so does this function, up to
/// [`PROG_LOAD_ATTEMPTS`] times. Any other error (a real verifier rejection)
/// is returned at once.
pub fn load_program(prog: &mut Xdp) -> std::result::Result<(), ProgramError> {
    retry_eagain(|| prog.load())
}

/// Runs `load` (a program load) again while it fails with `EAGAIN`, at most
/// [`PROG_LOAD_ATTEMPTS`] times in all (see [`load_program`]).
fn retry_eagain(
    mut load: impl FnMut() -> std::result::Result<(), ProgramError>,
) -> std::result::Result<(), ProgramError> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN)
                    && attempt < PROG_LOAD_ATTEMPTS =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The XDP program of a loaded object.
pub(crate) fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| DataplaneError::Missing(format!("program {PROGRAM}")))?
        .try_into()?)
}

/// [`DataplaneError::Attach`] for a failed XDP attach of `iface` in `mode`,
/// with what to try for the usual causes.
pub(crate) fn attach_error(iface: &str, mode: XdpMode, source: ProgramError) -> DataplaneError {
    let text = format!("{source:?}");
    let hint = if text.contains("busy") || text.contains("exists") {
        format!(": another XDP program is attached to it (`ip link show {iface}`); detach it first")
    } else if mode == XdpMode::Driver {
        ": native mode failed; the driver may lack native XDP: try --xdp-mode skb".into()
    } else {
        String::new()
    };
    DataplaneError::Attach {
        iface: iface.into(),
        hint,
        source: Box::new(source),
    }
}

/// The tc program (neighbour path) of a loaded object.
pub(crate) fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    Ok(ebpf
        .program_mut(TC_PROGRAM)
        .ok_or_else(|| DataplaneError::Missing(format!("program {TC_PROGRAM}")))?
        .try_into()?)
}

/// Removes the `clsact` qdisc of interface `ifindex` (one
/// `agent::attach` added on a kernel before 6.6), with the filters in it. Errors are the caller's to log.
pub async fn remove_clsact(
    nl: &rtnetlink::Handle,
    ifindex: u32,
) -> std::result::Result<(), rtnetlink::Error> {
    use netlink_packet_route::tc::TcHandle;
    let mut req = nl.qdisc().del(ifindex as i32);
    req.message_mut().header.parent = TcHandle::CLSACT;
    req.message_mut().header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    req.execute().await
}

/// Whether `path` is on a bpffs mount.
pub fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Typed handles on every map.
pub struct Dataplane {
    pub services: HashMap<MapData, SvcKey, Service>,
    pub reals: Array<MapData, Real>,
    pub rings: Array<MapData, u32>,
    /// rr / wrr position per service, shared by all CPUs (the data plane
    /// adds to it atomically).
    pub cursors: Array<MapData, u64>,
    pub conntrack: HashMap<MapData, FlowKey, Conn>,
    pub persist: HashMap<MapData, PersistKey, Persist>,
    pub devmap: DevMapHash<MapData>,
    pub svc_stats: PerCpuArray<MapData, Stats>,
    pub real_stats: PerCpuArray<MapData, Stats>,
    pub global: PerCpuArray<MapData, GlobalStats>,
    pub timeouts: Array<MapData, Timeouts>,
    pub flags: Array<MapData, u32>,
    /// The MACs frames for this host are sent to (one entry).
    pub host_macs: Array<MapData, HostMacs>,
    pub real_conns: Array<MapData, RealConns>,
    pub conn_adj: Array<MapData, RealConns>,
    pub nat_rev: HashMap<MapData, FlowKey, RevNat>,
    pub frags: HashMap<MapData, FragKey, FragVal>,
    pub maglev: Array<MapData, u32>,
    /// lblc / lblcr: the real or set of reals per (service, destination).
    pub locality: HashMap<MapData, LocalityKey, Locality>,
    /// Capacity of the connection table.
    conntrack_max: u32,
}

impl Dataplane {
    /// Takes the maps out of a loaded object (the program keeps using them).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self> {
        Self::build(|name| {
            ebpf.take_map(name)
                .ok_or_else(|| DataplaneError::Missing(format!("map {name}")))
        })
    }

    /// Opens the maps pinned in `dir` (works while an agent runs, or after it stopped).
    pub fn from_pins(dir: &Path) -> Result<Self> {
        Self::build(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|source| DataplaneError::Pin {
                path: path.clone(),
                dir: dir.into(),
                source: Box::new(source),
            })?;
            Ok(Map::from_map_data(data)?)
        })
    }

    fn build(mut take: impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        let ct = take(maps::CONNTRACK)?;
        let conntrack_max = match &ct {
            Map::LruHashMap(d) | Map::HashMap(d) => d.info()?.max_entries(),
            _ => return Err(DataplaneError::MapType(maps::CONNTRACK)),
        };
        Ok(Self {
            conntrack_max,
            services: take(maps::SERVICES)?.try_into()?,
            reals: take(maps::REALS)?.try_into()?,
            rings: take(maps::RINGS)?.try_into()?,
            cursors: take(maps::CURSORS)?.try_into()?,
            conntrack: ct.try_into()?,
            persist: take(maps::PERSIST)?.try_into()?,
            devmap: take(maps::DEVMAP)?.try_into()?,
            svc_stats: take(maps::SVC_STATS)?.try_into()?,
            real_stats: take(maps::REAL_STATS)?.try_into()?,
            global: take(maps::GLOBAL_STATS)?.try_into()?,
            timeouts: take(maps::TIMEOUTS)?.try_into()?,
            flags: take(maps::FLAGS)?.try_into()?,
            host_macs: take(maps::HOST_MACS)?.try_into()?,
            real_conns: take(maps::REAL_CONNS)?.try_into()?,
            conn_adj: take(maps::CONN_ADJ)?.try_into()?,
            nat_rev: take(maps::NAT_REV)?.try_into()?,
            frags: take(maps::FRAGS)?.try_into()?,
            maglev: take(maps::MAGLEV)?.try_into()?,
            locality: take(maps::LOCALITY)?.try_into()?,
        })
    }

    /// Registers an attached interface as a redirect target, so reals behind
    /// it can be reached from the other attached interfaces.
    pub fn add_iface(&mut self, ifindex: u32) -> Result<()> {
        self.devmap.insert(ifindex, ifindex, None, 0)?;
        Ok(())
    }

    /// Capacity of the connection table.
    pub fn conntrack_size(&self) -> u32 {
        self.conntrack_max
    }

    /// Timeouts in effect (the data plane uses the defaults until set).
    pub fn timeouts_in_effect(&self) -> Timeouts {
        self.timeouts
            .get(&0, 0)
            .ok()
            .filter(|t| t.tcp_s != 0)
            .unwrap_or_default()
    }

    pub fn set_timeouts(&mut self, t: Timeouts) -> Result<()> {
        self.timeouts.set(0, t, 0)?;
        Ok(())
    }

    /// Sets the MACs frames for this host are sent to ([`HostMacs`]); the
    /// data plane passes frames to any other unicast MAC. An empty list
    /// accepts every destination. Beyond [`MAX_HOST_MACS`] addresses the
    /// check is switched off (every destination accepted) rather than
    /// refusing frames to a MAC of this host, and an error says so.
    pub fn set_host_macs(&mut self, macs: &[[u8; 6]]) -> Result<()> {
        let mut set = HostMacs::default();
        let fits = macs.len() <= MAX_HOST_MACS;
        if fits {
            for (slot, mac) in set.macs.iter_mut().zip(macs) {
                *slot = mac_word(*mac);
            }
            set.count = macs.len() as u32;
        }
        self.host_macs.set(0, set, 0)?;
        if !fits {
            return Err(DataplaneError::TooManyHostMacs(macs.len()));
        }
        Ok(())
    }

    /// Per-CPU counters of service `id`, summed.
    pub fn svc_stats_sum(&self, id: u32) -> Result<Stats> {
        Ok(sum_stats(&self.svc_stats.get(&id, 0)?))
    }

    /// Per-CPU counters of real `id`, summed.
    pub fn real_stats_sum(&self, id: u32) -> Result<Stats> {
        Ok(sum_stats(&self.real_stats.get(&id, 0)?))
    }

    /// Global counters summed over CPUs.
    pub fn global_sum(&self) -> Result<GlobalStats> {
        let v = self.global.get(&0, 0)?;
        let mut g = GlobalStats::default();
        for c in v.iter() {
            g.add(c);
        }
        Ok(g)
    }

    /// Connection counts of real `id` in effect (data plane minus sweep).
    pub fn real_conns(&self, id: u32) -> Result<RealConns> {
        let c = self.real_conns.get(&id, 0)?;
        let a = self.conn_adj.get(&id, 0)?;
        Ok(c.minus(&a))
    }

    /// Zeroes the per-CPU counters of a service slot (when the slot is reused).
    pub fn reset_svc_slot(&mut self, id: u32) -> Result<()> {
        let n = nr_cpus()?;
        self.svc_stats
            .set(id, PerCpuValues::try_from(vec![Stats::default(); n])?, 0)?;
        self.cursors.set(id, 0, 0)?;
        Ok(())
    }

    /// Zeroes the packet, byte and connection counters of service `svc` and
    /// of the reals `reals` (`ipvsadm -Z`); connection counts and
    /// scheduling state are left alone, as ipvs's zero leaves them.
    pub fn zero_stats(&mut self, svc: u32, reals: &[u32]) -> Result<()> {
        let n = nr_cpus()?;
        self.svc_stats
            .set(svc, PerCpuValues::try_from(vec![Stats::default(); n])?, 0)?;
        for id in reals {
            self.real_stats
                .set(*id, PerCpuValues::try_from(vec![Stats::default(); n])?, 0)?;
        }
        Ok(())
    }

    /// Zeroes the per-CPU counters of a real slot (when the slot is reused).
    pub fn reset_real_slot(&mut self, id: u32) -> Result<()> {
        let n = nr_cpus()?;
        self.real_stats
            .set(id, PerCpuValues::try_from(vec![Stats::default(); n])?, 0)?;
        // Counts start at zero with the new owner (data plane and agent side
        // together, so they stay consistent).
        self.real_conns.set(id, RealConns::default(), 0)?;
        self.conn_adj.set(id, RealConns::default(), 0)?;
        Ok(())
    }
}

fn nr_cpus() -> Result<usize> {
    aya::util::nr_cpus()
        .map_err(|(what, e)| std::io::Error::new(e.kind(), format!("{what}: {e}")).into())
}

fn sum_stats(v: &PerCpuValues<Stats>) -> Stats {
    let mut sum = Stats::default();
    for s in v.iter() {
        sum.add(s);
    }
    sum
}
