//! Test harness for the data plane through BPF_PROG_TEST_RUN, shared by the
//! fixture tests (`tests/`) and the benchmark `lb-bench` (the same packets
//! are timed).
//!
//! A harness lives in a private network namespace of the calling thread
//! (unshare(CLONE_NEWNET)) with two veth pairs, so redirect targets exist and
//! nothing touches the host's interfaces. The maps are filled through the
//! agent's own code ([`Tables::sync`]).

pub mod fuzz;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};
use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use etherparse::PacketBuilder;
use lb_common::{GlobalStats, SyncEvent};

use lb_user::{
    config,
    dataplane::{self, Dataplane, LoadOptions, PROGRAM},
    health::Health,
    state::{Tables, L2},
};

/// Name of the XDP_TX reference program (in lb-lab's object).
pub use lb_lab::REFERENCE_PROGRAM;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "unknown",
    }
}

/// Moves the calling thread into a new, empty network namespace.
pub fn enter_private_netns() -> anyhow::Result<()> {
    // SAFETY: affects only the calling thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET) (needs root)");
    }
    Ok(())
}

/// Keeps the calling thread on the CPU it runs on: the data plane's per-CPU
/// state (counters' slots, scratch space) then behaves as one sequence.
pub fn pin_to_current_cpu() -> anyhow::Result<()> {
    // SAFETY: sched_getcpu has no arguments; the cpu_set_t is ours.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return Err(std::io::Error::last_os_error()).context("sched_getcpu");
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}

/// Lets the calling thread run on `cpus` only.
fn allow_cpus(cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: the cpu_set_t is ours.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sched_setaffinity to CPUs {cpus:?}"));
        }
    }
    Ok(())
}

/// Moves the calling thread to CPU `cpu` and keeps it there: the runs it
/// makes next execute on that CPU (BPF_PROG_TEST_RUN runs an XDP program
/// on the caller's CPU; its `cpu` field is for raw tracepoints only).
/// Checks with `sched_getcpu` that the move took place.
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: the cpu_set_t is ours; sched_getcpu has no arguments.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sched_setaffinity to CPU {cpu}"));
        }
        let now = libc::sched_getcpu();
        if now != cpu as i32 {
            bail!("pinned to CPU {cpu} but running on {now}");
        }
    }
    Ok(())
}

/// The online CPUs (`/sys/devices/system/cpu/online`, e.g. "0-3,5"), in
/// order; not this thread's affinity, which [`Harness::new`] narrows to one.
pub fn online_cpus() -> anyhow::Result<Vec<usize>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .context("reading /sys/devices/system/cpu/online")?;
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
        cpus.extend(a..=b);
    }
    Ok(cpus)
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !st.success() {
        bail!("{} failed: {st}", args.join(" "));
    }
    Ok(())
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(anyhow!("no interface {name}")),
        i => Ok(i),
    }
}

/// An interface of the harness.
#[derive(Clone, Copy, Debug)]
pub struct TestIface {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// The data plane loaded in a private namespace, ready for test runs.
pub struct Harness {
    ebpf: Ebpf,
    /// The lab object holding [`REFERENCE_PROGRAM`].
    lab: Ebpf,
    pub dp: Dataplane,
    pub tables: Tables,
    /// The connection-sync ring (`LB_SYNC_EVENTS`), taken out of the object;
    /// `None` while a [`SyncDrain`] thread holds it.
    sync_ring: Option<RingBuf<MapData>>,
    /// Interface packets arrive on (XDP_TX target).
    pub a: TestIface,
    /// Second attached interface (redirect target).
    pub b: TestIface,
    pub l2: BTreeMap<IpAddr, L2>,
    /// Health-checker verdicts to apply (reals not listed are up).
    pub health: BTreeMap<IpAddr, Health>,
}

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa1];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb1];

impl Harness {
    /// Enters a private netns, creates two veth pairs and loads the program
    /// with small tables (`conntrack_size` flows).
    pub fn new(conntrack_size: u32) -> anyhow::Result<Self> {
        enter_private_netns()?;
        pin_to_current_cpu()?;
        sh(&[
            "ip",
            "link",
            "add",
            "lbta",
            "address",
            "02:00:00:00:00:a1",
            "type",
            "veth",
            "peer",
            "name",
            "lbta-p",
        ])?;
        sh(&[
            "ip",
            "link",
            "add",
            "lbtb",
            "address",
            "02:00:00:00:00:b1",
            "type",
            "veth",
            "peer",
            "name",
            "lbtb-p",
        ])?;
        for i in ["lbta", "lbta-p", "lbtb", "lbtb-p"] {
            sh(&["ip", "link", "set", i, "up"])?;
        }
        let mut ebpf = dataplane::load(&LoadOptions {
            pin_dir: None,
            conntrack_size,
            persist_size: conntrack_size,
        })?;
        let mut lab = lb_lab::load(lb_lab::XDP_OBJECT, "lab-xdp")?;
        let reference: &mut Xdp = lab
            .program_mut(REFERENCE_PROGRAM)
            .ok_or_else(|| anyhow!("{REFERENCE_PROGRAM} missing"))?
            .try_into()?;
        dataplane::load_program(reference)?;
        let mut dp = Dataplane::from_ebpf(&mut ebpf)?;
        let ring = ebpf
            .take_map(lb_common::maps::SYNC_EVENTS)
            .ok_or_else(|| anyhow!("{} missing", lb_common::maps::SYNC_EVENTS))?;
        let sync_ring = RingBuf::try_from(ring)?;
        let a = TestIface {
            ifindex: ifindex("lbta")?,
            mac: MAC_A,
        };
        let b = TestIface {
            ifindex: ifindex("lbtb")?,
            mac: MAC_B,
        };
        dp.add_iface(a.ifindex)?;
        dp.add_iface(b.ifindex)?;
        Ok(Self {
            ebpf,
            lab,
            dp,
            tables: Tables::default(),
            sync_ring: Some(sync_ring),
            a,
            b,
            l2: BTreeMap::new(),
            health: BTreeMap::new(),
        })
    }

    /// Declares `ip` reachable with `mac` through interface `a` (or `b`).
    pub fn neighbour(&mut self, ip: &str, mac: [u8; 6], via_b: bool) {
        let via = if via_b { self.b } else { self.a };
        let l2 = L2 {
            ifindex: via.ifindex,
            mac,
            src_mac: via.mac,
        };
        self.l2.insert(ip.parse().expect("test address"), l2);
    }

    /// Forgets a neighbour (its real becomes unavailable).
    pub fn forget(&mut self, ip: &str) {
        self.l2.remove(&ip.parse::<IpAddr>().expect("test address"));
    }

    /// Applies a keepalived.conf text through the agent's code.
    pub fn apply(&mut self, conf: &str) -> anyhow::Result<()> {
        let loaded = config::load_str(conf, std::path::Path::new("fixture.conf"));
        if loaded.has_errors() {
            let errs: Vec<String> = loaded.errors().map(|d| d.to_string()).collect();
            bail!("fixture configuration has errors: {}", errs.join("; "));
        }
        let l2 = self.l2.clone();
        let health = self.health.clone();
        self.tables.sync(
            &mut self.dp,
            &loaded.config,
            &|ip| l2.get(&ip).copied(),
            &|_, ip, _| {
                health
                    .get(&ip)
                    .copied()
                    .unwrap_or(Health::Up { weight: None })
            },
        )?;
        Ok(())
    }

    /// Turns connection sync's reports on or off (`FLAG_SYNC`, written by
    /// the agent's own code with the next [`Harness::apply`]).
    pub fn set_sync(&mut self, on: bool) {
        self.tables.sync = on;
    }

    /// Takes every record waiting in the connection-sync ring, oldest
    /// first (the ring is then empty).
    pub fn sync_events(&mut self) -> anyhow::Result<Vec<SyncEvent>> {
        let ring = self
            .sync_ring
            .as_mut()
            .ok_or_else(|| anyhow!("the sync ring is held by a SyncDrain"))?;
        let mut out = Vec::new();
        drain_sync_ring(ring, &mut |ev| out.push(ev))?;
        Ok(out)
    }

    /// Starts a thread that empties the connection-sync ring every `every`,
    /// as the agent's sync task does (lb-user `sync::POLL`), until
    /// [`Harness::stop_sync_drain`]. The thread runs on the other online
    /// CPUs when there are any (a new thread inherits the caller's
    /// one-CPU affinity, and would take turns with the test runs there).
    pub fn start_sync_drain(&mut self, every: Duration) -> anyhow::Result<SyncDrain> {
        // SAFETY: sched_getcpu has no arguments.
        let home = unsafe { libc::sched_getcpu() };
        let others: Vec<usize> = online_cpus()?
            .into_iter()
            .filter(|&c| c as i32 != home)
            .collect();
        let mut ring = self
            .sync_ring
            .take()
            .ok_or_else(|| anyhow!("the sync ring is already held by a SyncDrain"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            if !others.is_empty() {
                allow_cpus(&others)?;
            }
            let mut n = 0u64;
            loop {
                // Read the flag first: the last pass runs after the caller's
                // last packet.
                let last = stopped.load(Ordering::Acquire);
                drain_sync_ring(&mut ring, &mut |_| n += 1)?;
                if last {
                    return Ok((ring, n));
                }
                std::thread::sleep(every);
            }
        });
        Ok(SyncDrain { stop, thread })
    }

    /// Stops `drain` once it has emptied the ring a last time, takes the
    /// ring back, and returns how many records it read.
    pub fn stop_sync_drain(&mut self, drain: SyncDrain) -> anyhow::Result<u64> {
        drain.stop.store(true, Ordering::Release);
        let (ring, n) = drain
            .thread
            .join()
            .map_err(|_| anyhow!("sync drain thread panicked"))??;
        self.sync_ring = Some(ring);
        Ok(n)
    }

    /// A program of the balancer's object, or the lab's reference.
    fn prog(&self, name: &str) -> anyhow::Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .or_else(|| self.lab.program(name))
            .ok_or_else(|| anyhow!("{name} missing"))?
            .try_into()?)
    }

    /// Runs the balancer once on `pkt` arriving on interface `a`: (verdict, output bytes).
    pub fn run(&self, pkt: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
        self.run_prog(PROGRAM, pkt, 1).map(|(v, out, _)| (v, out))
    }

    /// Runs the balancer once on `pkt` arriving on interface `b`.
    pub fn run_on_b(&self, pkt: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
        self.run_on(PROGRAM, pkt, 1, self.b.ifindex)
            .map(|(v, out, _)| (v, out))
    }

    /// Gives the harness namespace routes and neighbours for the FIB-based
    /// methods (NAT, TUN): interface `a` is the clients' side
    /// (192.0.2.0/24, 2001:db8:c::/64, client [`CLIENT_MAC`] at .7 / ::7),
    /// interface `b` the reals' (10.1.0.0/24, 2001:db8:1::/64, reals at
    /// .11 / ::11 with `mac1` and .12 / ::12 with `mac2`), forwarding on.
    pub fn routed(&mut self, mac1: [u8; 6], mac2: [u8; 6]) -> anyhow::Result<()> {
        let fmt = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        for (addr, dev) in [
            ("192.0.2.1/24", "lbta"),
            ("2001:db8:c::1/64", "lbta"),
            ("10.1.0.1/24", "lbtb"),
            ("2001:db8:1::1/64", "lbtb"),
        ] {
            let mut cmd = vec!["ip", "addr", "add", addr, "dev", dev];
            if addr.contains(':') {
                cmd.push("nodad");
            }
            sh(&cmd)?;
        }
        let client = fmt(CLIENT_MAC);
        let (m1, m2) = (fmt(mac1), fmt(mac2));
        for (ip, mac, dev) in [
            ("192.0.2.7", &client, "lbta"),
            ("2001:db8:c::7", &client, "lbta"),
            ("10.1.0.11", &m1, "lbtb"),
            ("10.1.0.12", &m2, "lbtb"),
            ("2001:db8:1::11", &m1, "lbtb"),
            ("2001:db8:1::12", &m2, "lbtb"),
        ] {
            sh(&[
                "ip",
                "neigh",
                "replace",
                ip,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
        }
        for k in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            sh(&["sysctl", "-qw", k])?;
        }
        Ok(())
    }

    /// Sets the MTU of interface `b` (too-big fixtures).
    pub fn set_mtu_b(&self, mtu: u32) -> anyhow::Result<()> {
        sh(&["ip", "link", "set", "lbtb", "mtu", &mtu.to_string()])
    }

    /// Runs `prog` `repeat` times on `pkt`; returns the verdict, the output
    /// and the kernel's average nanoseconds per run.
    pub fn run_prog(
        &self,
        prog: &str,
        pkt: &[u8],
        repeat: u32,
    ) -> anyhow::Result<(u32, Vec<u8>, f64)> {
        self.run_on(prog, pkt, repeat, self.a.ifindex)
    }

    /// The balancer once on `pkt` arriving on interface `a` (or `b`),
    /// without the counters' check: for callers that check the counters
    /// themselves with one read per run ([`fuzz::run`]).
    pub fn run_raw(&self, pkt: &[u8], on_b: bool) -> anyhow::Result<(u32, Vec<u8>)> {
        let ifindex = if on_b { self.b.ifindex } else { self.a.ifindex };
        run_xdp(self.prog(PROGRAM)?, pkt, 1, ifindex).map(|(v, out, _)| (v, out))
    }

    /// [`Harness::run_prog`] without the counters' check (profiling loops).
    pub fn run_unchecked(
        &self,
        prog: &str,
        pkt: &[u8],
        repeat: u32,
    ) -> anyhow::Result<(u32, Vec<u8>, f64)> {
        run_xdp(self.prog(prog)?, pkt, repeat, self.a.ifindex)
    }

    /// Runs `prog` on `pkt` arriving on `ifindex`. For the balancer, also
    /// checks that the runs were counted exactly once each ([`check_counted`]).
    fn run_on(
        &self,
        prog: &str,
        pkt: &[u8],
        repeat: u32,
        ifindex: u32,
    ) -> anyhow::Result<(u32, Vec<u8>, f64)> {
        if prog != PROGRAM {
            return run_xdp(self.prog(prog)?, pkt, repeat, ifindex);
        }
        let before = self.dp.global_sum()?;
        let r = run_xdp(self.prog(prog)?, pkt, repeat, ifindex)?;
        let after = self.dp.global_sum()?;
        check_counted(&before, &after, repeat.max(1), r.0)?;
        Ok(r)
    }
}

/// A thread emptying the connection-sync ring ([`Harness::start_sync_drain`]).
pub struct SyncDrain {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<(RingBuf<MapData>, u64)>>,
}

/// Hands each record waiting in `ring` to `each`, oldest first; a record
/// of another size than [`SyncEvent`]'s is an error (the data plane and
/// this build disagree on the layout).
pub fn drain_sync_ring(
    ring: &mut RingBuf<MapData>,
    each: &mut dyn FnMut(SyncEvent),
) -> anyhow::Result<()> {
    while let Some(item) = ring.next() {
        if item.len() != size_of::<SyncEvent>() {
            bail!(
                "sync ring record of {} bytes, SyncEvent has {}",
                item.len(),
                size_of::<SyncEvent>()
            );
        }
        // SAFETY: the record holds a SyncEvent written by the data plane
        // (size checked; read unaligned, the ring aligns records to 8).
        each(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
    }
    Ok(())
}

/// Checks how the global counters moved from `before` to `after` over `runs`
/// runs of the balancer: one verdict per run, every pass counted with one
/// reason (the `pass_*` counters add up to `pass`), every drop with one
/// (`drop_*` add up to `drop`), so forwarded packets (XDP_TX / XDP_REDIRECT)
/// with none; a single run counted with the verdict it returned.
pub fn check_counted(
    before: &GlobalStats,
    after: &GlobalStats,
    runs: u32,
    verdict: u32,
) -> anyhow::Result<()> {
    let delta: Vec<(&str, u64)> = GlobalStats::FIELDS
        .iter()
        .zip(after.values().iter().zip(before.values()))
        .map(|((name, _), (a, b))| (*name, a.wrapping_sub(b)))
        .collect();
    let sum = |pick: &dyn Fn(&str) -> bool| -> u64 {
        delta.iter().filter(|(n, _)| pick(n)).map(|(_, d)| d).sum()
    };
    let d = |name: &str| sum(&|n| n == name);
    let verdicts = ["pass", "tx", "redirect", "drop", "aborted"];
    let moved = || {
        delta
            .iter()
            .filter(|(_, d)| *d != 0)
            .map(|(n, d)| format!("{n} +{d}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let counted = sum(&|n| verdicts.contains(&n));
    if counted != u64::from(runs) {
        bail!("{runs} run(s) counted {counted} verdicts: {}", moved());
    }
    let pass_reasons = sum(&|n| n.starts_with("pass_"));
    if pass_reasons != d("pass") {
        bail!(
            "{} pass(es) counted with {pass_reasons} pass reasons: {}",
            d("pass"),
            moved()
        );
    }
    let drop_reasons = sum(&|n| n.starts_with("drop_"));
    if drop_reasons != d("drop") {
        bail!(
            "{} drop(s) counted with {drop_reasons} drop reasons: {}",
            d("drop"),
            moved()
        );
    }
    let name = match verdict {
        XDP_PASS => "pass",
        XDP_TX => "tx",
        XDP_REDIRECT => "redirect",
        XDP_DROP => "drop",
        _ => "aborted",
    };
    if runs == 1 && d(name) != 1 {
        bail!(
            "a run that returned {} was counted as: {}",
            verdict_name(verdict),
            moved()
        );
    }
    Ok(())
}

/// BPF_PROG_TEST_RUN of an XDP program on `pkt` arriving on `ifindex`:
/// the verdict, the output and the kernel's average nanoseconds per run.
pub fn run_xdp(
    prog: &Xdp,
    pkt: &[u8],
    repeat: u32,
    ifindex: u32,
) -> anyhow::Result<(u32, Vec<u8>, f64)> {
    let mut out = vec![0u8; pkt.len() + 256];
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
    let md: [u32; 6] = [0, pkt.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
    // The kernel stops a repeated run with EINTR when a signal is pending on
    // the thread (bpf_test_timer_continue), after running part of it: a
    // SIGCHLD of a command another test spawned made a ring-filling test
    // flaky. Signals are blocked on this thread for the call (the process's
    // other threads take them meanwhile), so a run is whole or fails.
    let _mask = SignalsBlocked::new();
    let r = prog.test_run(TestRunOptions {
        data_in: Some(pkt),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        repeat,
        ..Default::default()
    })?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out, r.duration.as_nanos() as f64))
}

/// Every signal blocked on the calling thread until dropped (the previous
/// mask restored).
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> Self {
        // SAFETY: sigset_t is plain data, initialised by sigfillset /
        // pthread_sigmask before use.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on the same thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

/// Ethernet addresses used by the fixtures.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x01];
pub const ROUTER_MAC: [u8; 6] = [0x02, 0xd0, 0, 0, 0, 0x01];

/// TCP flags for [`tcp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flags {
    Syn,
    Ack,
    Fin,
    Rst,
}

/// Where a test packet's Ethernet header points.
#[derive(Clone, Copy, Debug)]
pub struct Eth {
    pub src: [u8; 6],
    pub dst: [u8; 6],
    pub vlan: Option<u16>,
}

impl Eth {
    /// From a client to the director's interface `a`.
    pub fn inbound() -> Self {
        Self {
            src: CLIENT_MAC,
            dst: MAC_A,
            vlan: None,
        }
    }
}

fn builder(
    eth: Eth,
    src: IpAddr,
    dst: IpAddr,
) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    let b = PacketBuilder::ethernet2(eth.src, eth.dst);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => match eth.vlan {
            Some(v) => b
                .single_vlan(etherparse::VlanId::try_new(v).expect("vlan id"))
                .ipv4(s.octets(), d.octets(), 64),
            None => b.ipv4(s.octets(), d.octets(), 64),
        },
        (IpAddr::V6(s), IpAddr::V6(d)) => match eth.vlan {
            Some(v) => b
                .single_vlan(etherparse::VlanId::try_new(v).expect("vlan id"))
                .ipv6(s.octets(), d.octets(), 64),
            None => b.ipv6(s.octets(), d.octets(), 64),
        },
        _ => panic!("mixed address families in a test packet"),
    }
}

/// A TCP segment `src:sport → dst:dport` with `payload`.
pub fn tcp(
    eth: Eth,
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let b = builder(eth, src.parse().expect("src"), dst.parse().expect("dst"))
        .tcp(sport, dport, 1000, 64240);
    let b = match flags {
        Flags::Syn => b.syn(),
        Flags::Ack => b.ack(1),
        Flags::Fin => b.fin().ack(1),
        Flags::Rst => b.rst(),
    };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("write packet");
    out
}

/// A UDP datagram `src:sport → dst:dport` with `payload`.
pub fn udp(eth: Eth, src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = builder(eth, src.parse().expect("src"), dst.parse().expect("dst")).udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("write packet");
    out
}

/// `pkt` as direct routing must emit it: the two MAC addresses change, and
/// the TTL / hop limit is one less (IPv4: header checksum recomputed), as
/// ipvs-DR does (`decrement_ttl`, ip_vs_xmit.c).
pub fn dr_rewrite(pkt: &[u8], real_mac: [u8; 6], egress_mac: [u8; 6]) -> Vec<u8> {
    let mut out = pkt.to_vec();
    out[..6].copy_from_slice(&real_mac);
    out[6..12].copy_from_slice(&egress_mac);
    decrement_ttl(&mut out);
    out
}

/// Offset of the IP header and the ethertype of an Ethernet frame (at most
/// one 802.1Q tag).
fn l3_of(frame: &[u8]) -> (usize, u16) {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x8100 => (18, u16::from_be_bytes([frame[16], frame[17]])),
        t => (14, t),
    }
}

/// Recomputes in full the checksum of the IPv4 header at `l3` of `frame`,
/// options included (the IHL's length).
pub fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    frame[l3 + 10] = 0;
    frame[l3 + 11] = 0;
    let c = !lb_common::csum::fold(lb_common::csum::sum_be(&frame[l3..l3 + ihl], 0));
    frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// Sets the TTL / hop limit of the IP packet in an Ethernet frame (at most
/// one 802.1Q tag) to `ttl`, an IPv4 header checksum recomputed; a frame
/// that is not IPv4 / IPv6 is left alone.
pub fn set_ttl(frame: &mut [u8], ttl: u8) {
    match l3_of(frame) {
        (l3, 0x0800) => {
            frame[l3 + 8] = ttl;
            fix_ipv4_checksum(frame, l3);
        }
        (l3, 0x86dd) => frame[l3 + 7] = ttl,
        _ => {}
    }
}

/// Decrements the TTL / hop limit of the IP packet in an Ethernet frame
/// (at most one 802.1Q tag), recomputing an IPv4 header checksum in full.
pub fn decrement_ttl(frame: &mut [u8]) {
    let ttl = match l3_of(frame) {
        (l3, 0x0800) => frame[l3 + 8],
        (l3, 0x86dd) => frame[l3 + 7],
        _ => panic!("not an IP frame"),
    };
    set_ttl(frame, ttl - 1);
}

/// A hex dump of two packets side by side, marking differing bytes.
pub fn hex_diff(got: &[u8], want: &[u8]) -> String {
    let mut s = String::new();
    let n = got.len().max(want.len());
    for row in (0..n).step_by(16) {
        let line = |p: &[u8]| {
            (row..row + 16)
                .map(|i| {
                    p.get(i)
                        .map(|b| format!("{b:02x}"))
                        .unwrap_or_else(|| "  ".into())
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mark = if (row..row + 16).any(|i| got.get(i) != want.get(i)) {
            " <<"
        } else {
            ""
        };
        s.push_str(&format!(
            "{row:04x}  got {}  want {}{mark}\n",
            line(got),
            line(want)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(f: impl FnOnce(&mut GlobalStats)) -> GlobalStats {
        let mut g = GlobalStats::default();
        f(&mut g);
        g
    }

    #[test]
    fn one_verdict_and_one_reason_per_run_pass_the_check() {
        let zero = GlobalStats::default();
        let dropped = after(|g| {
            g.drop = 1;
            g.drop_unroutable = 1;
            g.new_flows = 1;
        });
        check_counted(&zero, &dropped, 1, XDP_DROP).unwrap();
        let sent = after(|g| {
            g.tx = 2;
            g.nat_reverse = 2;
        });
        check_counted(&zero, &sent, 2, XDP_TX).unwrap();
    }

    #[test]
    fn double_counts_fail_the_check() {
        let zero = GlobalStats::default();
        let twice = after(|g| {
            g.drop = 1;
            g.drop_unroutable = 1;
            g.drop_no_egress = 1;
        });
        let e = check_counted(&zero, &twice, 1, XDP_DROP).unwrap_err();
        assert!(e.to_string().contains("2 drop reasons"), "{e}");
        let no_reason = after(|g| g.pass = 1);
        assert!(check_counted(&zero, &no_reason, 1, XDP_PASS).is_err());
        let reason_on_tx = after(|g| {
            g.tx = 1;
            g.pass_no_neigh = 1;
        });
        assert!(check_counted(&zero, &reason_on_tx, 1, XDP_TX).is_err());
        let wrong_verdict = after(|g| {
            g.pass = 1;
            g.pass_not_vip = 1;
        });
        assert!(check_counted(&zero, &wrong_verdict, 1, XDP_TX).is_err());
        let two_verdicts = after(|g| {
            g.tx = 1;
            g.redirect = 1;
        });
        assert!(check_counted(&zero, &two_verdicts, 1, XDP_TX).is_err());
    }
}
