//! Network-namespace labs for the integration tests, `cargo xtask demo` and
//! `cargo xtask bench` (its connection-level stage and `lb-pps`).
//!
//! A [`Lab`] is one L2 segment (a bridge in its own namespace) joining a
//! client, a director and real servers, each in its own namespace, as in an
//! LVS-DR setup: the VIP is on the director's interface (where keepalived's
//! VRRP would put it) and on the reals' `lo` with arp_ignore=1 /
//! arp_announce=2. [`Lab::empty`] is a lab without that topology, for
//! callers that build their own (the benchmark `lb-pps`). Everything a lab
//! makes (namespaces, links, processes, its bpffs mount and files) is
//! removed when it is dropped, also on panic.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};

pub mod browser;

/// lb-lab's pass-everything program, for the far end of a veth ([`Lab::xdp_pass`]).
pub const XDP_PASS: &str = "xdp_pass";
/// lb-lab's XDP_TX reflector (swaps the Ethernet addresses).
pub const XDP_TX_REF: &str = "xdp_tx_ref";

/// Arguments every test agent gets (a connection table sized for tests).
pub const AGENT_ARGS: &[&str] = &["--conntrack-size", "65536"];

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Namespace tests of one binary run one at a time (they share names and
/// the bpffs); a failed test does not poison the lock for the next.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub const SUBNET: &str = "10.200.0";
pub const VIP: &str = "10.200.0.100";
pub const CLIENT_IP: &str = "10.200.0.1";
pub const DIRECTOR_IP: &str = "10.200.0.2";
/// The second director of an HA lab ([`Lab::ha`]).
pub const DIRECTOR2_IP: &str = "10.200.0.3";
pub const SUBNET6: &str = "fd00:200::";
pub const VIP6: &str = "fd00:200::100";

/// The private subnet of a two-subnet (LVS-NAT) lab: the reals and the
/// director's second interface, whose address is the reals' gateway.
pub const PRIVATE_SUBNET: &str = "10.201.0";
pub const PRIVATE_SUBNET6: &str = "fd00:201::";
pub const DIRECTOR_PRIVATE_IP: &str = "10.201.0.2";
pub const DIRECTOR_PRIVATE_IP6: &str = "fd00:201::2";
/// The second director's private side in [`Lab::nat_ha`].
pub const DIRECTOR2_PRIVATE_IP: &str = "10.201.0.3";
pub const DIRECTOR2_PRIVATE_IP6: &str = "fd00:201::3";
/// The reals' gateway in [`Lab::nat_ha`]: a VRRP address the master holds
/// on eth1 (keepalived's classic LVS-NAT pair).
pub const NAT_GATEWAY_IP: &str = "10.201.0.1";
pub const NAT_GATEWAY_IP6: &str = "fd00:201::1";

/// Address of real `i` (1-based) in a two-subnet lab.
pub fn private_ip(i: usize) -> String {
    format!("{PRIVATE_SUBNET}.{}", 10 + i)
}

/// IPv6 address of real `i` (1-based) in a two-subnet lab.
pub fn private_ip6(i: usize) -> String {
    format!("{PRIVATE_SUBNET6}{:x}", 0x10 + i)
}

/// Address of real `i` (1-based).
pub fn real_ip(i: usize) -> String {
    format!("{SUBNET}.{}", 10 + i)
}

/// IPv6 address of real `i` (1-based).
pub fn real_ip6(i: usize) -> String {
    format!("{SUBNET6}{:x}", 0x10 + i)
}

/// Runs a command; fails with its stderr when it exits non-zero.
pub fn run(args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Paths of the binaries a lab runs.
#[derive(Clone, Debug)]
pub struct Bins {
    pub lb: PathBuf,
    pub nsprobe: PathBuf,
    /// `lb-lab`, whose `xdp-pass` gives veth peers an XDP program.
    pub lab: PathBuf,
}

impl Bins {
    /// `lb` and `lb-lab` next to the running test executable
    /// (target/<profile>/deps/..), or from LB_BIN / LB_LAB_BIN; `nsprobe`
    /// as given.
    pub fn from_target_dir(nsprobe: &str) -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_owned();
        let lb = std::env::var_os("LB_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| profile_dir.join("lb"));
        assert!(
            lb.exists(),
            "{} not found: build it first (`cargo build -p lb-user`; `cargo xtask test` does)",
            lb.display()
        );
        let lab = std::env::var_os("LB_LAB_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| profile_dir.join("lb-lab"));
        assert!(
            lab.exists(),
            "{} not found: build it first (`cargo build -p lb-lab`; `cargo xtask test` does)",
            lab.display()
        );
        Self {
            lb,
            nsprobe: PathBuf::from(nsprobe),
            lab,
        }
    }
}

/// One lab. Dropping it removes everything it made.
pub struct Lab {
    pub prefix: String,
    pub bins: Bins,
    namespaces: Vec<String>,
    procs: Vec<(String, Child)>,
    pub workdir: PathBuf,
    pub bpffs_mount: PathBuf,
    pub reals: usize,
    /// Two subnets (classic LVS-NAT): reals behind the director's eth1.
    pub two_subnets: bool,
    /// Two directors (`dir`, `dir2`) sharing the VIP through VRRP: no
    /// static VIP on either.
    pub ha: bool,
}

impl Lab {
    /// Namespace name of a role (`cl`, `dir`, `sw`, `r1`…).
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Builds the topology with `reals` real servers, each serving HTTP on
    /// port 80 (and 8080) and answering with its name (`r1`, `r2`…).
    pub fn dr(prefix: &str, bins: Bins, reals: usize) -> anyhow::Result<Self> {
        Self::new(prefix, bins, reals, false, false)
    }

    /// An LVS-DR lab with two directors, `dir` (10.200.0.2) and `dir2`
    /// (10.200.0.3), neither holding the VIP: VRRP decides which does.
    pub fn ha(prefix: &str, bins: Bins, reals: usize) -> anyhow::Result<Self> {
        Self::new(prefix, bins, reals, false, true)
    }

    /// The classic LVS-NAT topology: client and director's eth0 on the
    /// public bridge; the director's eth1 (10.201.0.2, fd00:201::2) and the
    /// reals on a private bridge, the director being the reals' default
    /// gateway and forwarding. The agent must be given `--iface eth1` too.
    pub fn nat(prefix: &str, bins: Bins, reals: usize) -> anyhow::Result<Self> {
        Self::new(prefix, bins, reals, true, false)
    }

    /// The LVS-NAT topology with two directors, `dir` and `dir2`, each on
    /// both bridges (eth0 public, eth1 private: 10.201.0.2 / .3); the reals'
    /// default gateway is [`NAT_GATEWAY_IP`], which VRRP must place on
    /// the master's eth1, as the VIP on its eth0.
    pub fn nat_ha(prefix: &str, bins: Bins, reals: usize) -> anyhow::Result<Self> {
        Self::new(prefix, bins, reals, true, true)
    }

    /// A lab without topology: its work directory and its bpffs mount
    /// ([`Lab::bpffs_of`]), no namespace yet. The caller adds namespaces
    /// ([`Lab::add_ns`]), links and processes ([`Lab::spawn`],
    /// [`Lab::spawn_agent_on`], [`Lab::xdp_pass`]); dropping it removes
    /// them as for any lab.
    pub fn empty(prefix: &str, bins: Bins) -> anyhow::Result<Self> {
        let lab = Self::create(prefix, bins, 0, false, false)?;
        lab.mount_bpffs().context("mounting the lab's bpffs")?;
        Ok(lab)
    }

    fn new(
        prefix: &str,
        bins: Bins,
        reals: usize,
        two_subnets: bool,
        ha: bool,
    ) -> anyhow::Result<Self> {
        let mut lab = Self::create(prefix, bins, reals, two_subnets, ha)?;
        lab.build().context("building the namespace lab")?;
        Ok(lab)
    }

    fn create(
        prefix: &str,
        bins: Bins,
        reals: usize,
        two_subnets: bool,
        ha: bool,
    ) -> anyhow::Result<Self> {
        let workdir = std::env::temp_dir().join(format!("{prefix}-lab"));
        let _ = std::fs::remove_dir_all(&workdir);
        std::fs::create_dir_all(&workdir)?;
        Ok(Lab {
            prefix: prefix.to_owned(),
            bins,
            namespaces: Vec::new(),
            procs: Vec::new(),
            bpffs_mount: PathBuf::from(format!("/run/{prefix}-bpffs")),
            workdir,
            reals,
            two_subnets,
            ha,
        })
    }

    /// Creates the namespace of `role` (replacing a stale one of the same
    /// name), with `lo` up; it is deleted when the lab drops.
    pub fn add_ns(&mut self, role: &str) -> anyhow::Result<String> {
        let ns = self.ns(role);
        let _ = run(&["ip", "netns", "del", &ns]);
        run(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        self.exec(role, &["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command inside the namespace of `role`.
    pub fn exec(&self, role: &str, args: &[&str]) -> anyhow::Result<Output> {
        let ns = self.ns(role);
        let mut full = vec!["ip", "netns", "exec", ns.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Adds `cidr` to `dev` in `role`'s namespace (IPv6 without duplicate
    /// address detection, so it is usable at once).
    fn add_addr(&self, role: &str, cidr: &str, dev: &str) -> anyhow::Result<()> {
        let mut args = vec!["ip", "addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.exec(role, &args).map(|_| ())
    }

    fn sysctl(&self, role: &str, kv: &str) -> anyhow::Result<()> {
        self.exec(role, &["sysctl", "-qw", kv]).map(|_| ())
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let sw = self.add_ns("sw")?;
        self.exec("sw", &["ip", "link", "add", "br0", "type", "bridge"])?;
        self.exec("sw", &["ip", "link", "set", "br0", "up"])?;
        if self.two_subnets {
            self.exec("sw", &["ip", "link", "add", "br1", "type", "bridge"])?;
            self.exec("sw", &["ip", "link", "set", "br1", "up"])?;
        }
        let mut hosts = vec![
            (
                "cl".to_string(),
                CLIENT_IP.to_string(),
                format!("{SUBNET6}1"),
            ),
            (
                "dir".to_string(),
                DIRECTOR_IP.to_string(),
                format!("{SUBNET6}2"),
            ),
        ];
        if self.ha {
            hosts.push((
                "dir2".to_string(),
                DIRECTOR2_IP.to_string(),
                format!("{SUBNET6}3"),
            ));
        }
        for i in 1..=self.reals {
            if self.two_subnets {
                hosts.push((format!("r{i}"), private_ip(i), private_ip6(i)));
            } else {
                hosts.push((format!("r{i}"), real_ip(i), real_ip6(i)));
            }
        }
        for (role, ip, ip6) in &hosts {
            let ns = self.add_ns(role)?;
            // Switch-side end named after the host; host-side end is eth0.
            self.exec(
                "sw",
                &[
                    "ip", "link", "add", role, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            let bridge = if self.two_subnets && role.starts_with('r') {
                "br1"
            } else {
                "br0"
            };
            self.exec("sw", &["ip", "link", "set", role, "master", bridge, "up"])?;
            self.sysctl(role, "net.ipv6.conf.all.accept_dad=0")?;
            self.sysctl(role, "net.ipv6.conf.eth0.accept_dad=0")?;
            self.add_addr(role, &format!("{ip}/24"), "eth0")?;
            self.add_addr(role, &format!("{ip6}/64"), "eth0")?;
            self.exec(role, &["ip", "link", "set", "eth0", "up"])?;
        }
        let _ = sw;
        // The client's stack leaves TCP/UDP checksums to "hardware"; XDP_TX
        // loses that metadata, so the client computes them itself.
        self.exec("cl", &["ethtool", "-K", "eth0", "tx", "off"])?;
        // VIP on the director (as VRRP would add it), unless VRRP does.
        if !self.ha {
            self.add_addr("dir", &format!("{VIP}/32"), "eth0")?;
            self.add_addr("dir", &format!("{VIP6}/128"), "eth0")?;
        }
        if self.two_subnets {
            self.build_private_side()?;
        }
        // Reals: VIP on lo, never answering ARP for it (DR, TUN); in a
        // two-subnet lab they only serve.
        for i in 1..=self.reals {
            let r = format!("r{i}");
            if self.two_subnets {
                let probe = self.bins.nsprobe.to_string_lossy().into_owned();
                self.spawn(&r, &[&probe, "serve", "80", &r], "httpd80")?;
                self.spawn(&r, &[&probe, "serve", "8080", &r], "httpd8080")?;
                continue;
            }
            self.add_addr(&r, &format!("{VIP}/32"), "lo")?;
            self.add_addr(&r, &format!("{VIP6}/128"), "lo")?;
            for k in ["all", "eth0"] {
                self.sysctl(&r, &format!("net.ipv4.conf.{k}.arp_ignore=1"))?;
                self.sysctl(&r, &format!("net.ipv4.conf.{k}.arp_announce=2"))?;
            }
            let probe = self.bins.nsprobe.to_string_lossy().into_owned();
            self.spawn(&r, &[&probe, "serve", "80", &r], "httpd80")?;
            self.spawn(&r, &[&probe, "serve", "8080", &r], "httpd8080")?;
        }
        // veth delivers the director's XDP_TX frames only if the peer runs XDP too.
        self.xdp_pass("sw", "dir", XDP_PASS, "xdp-pass")?;
        if self.ha {
            self.xdp_pass("sw", "dir2", XDP_PASS, "xdp-pass2")?;
        }
        // The director's own service, to check that non-VIP traffic is untouched.
        let probe = self.bins.nsprobe.to_string_lossy().into_owned();
        self.spawn(
            "dir",
            &[&probe, "serve", "80", "director"],
            "director-httpd",
        )?;
        self.spawn(
            "dir",
            &[&probe, "serve", "8080", "director"],
            "director-httpd8080",
        )?;
        self.mount_bpffs()?;
        // Let servers bind before traffic starts.
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// bpffs for the agents' pins, outside /sys (which `ip netns exec` remounts).
    fn mount_bpffs(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.bpffs_mount)?;
        run(&[
            "mount",
            "-t",
            "bpf",
            "bpf",
            &self.bpffs_mount.to_string_lossy(),
        ])?;
        Ok(())
    }

    /// Attaches lb-lab's `program` ([`XDP_PASS`], or [`XDP_TX_REF`], the
    /// XDP_TX reflector) to `iface` in `role`'s namespace until the lab
    /// drops: `lb-lab xdp-pass`, process `tag`.
    pub fn xdp_pass(
        &mut self,
        role: &str,
        iface: &str,
        program: &str,
        tag: &str,
    ) -> anyhow::Result<()> {
        let lab = self.bins.lab.to_string_lossy().into_owned();
        self.spawn(
            role,
            &[&lab, "xdp-pass", "--iface", iface, "--program", program],
            tag,
        )
    }

    /// Starts a process in `role`'s namespace; it is killed when the lab drops.
    pub fn spawn(&mut self, role: &str, args: &[&str], tag: &str) -> anyhow::Result<()> {
        let ns = self.ns(role);
        self.spawn_with(role, &["ip", "netns", "exec", &ns], args, tag)
    }

    /// Starts `args` in `role`'s network namespace only, as `nsenter
    /// --net=/run/netns/NS` does: unlike [`Lab::spawn`] (`ip netns exec`,
    /// which mounts a sysfs of that namespace), `/sys` stays the host's.
    /// Logged and stopped as [`Lab::spawn`]'s processes.
    pub fn spawn_net_only(&mut self, role: &str, args: &[&str], tag: &str) -> anyhow::Result<()> {
        let net = format!("--net=/run/netns/{}", self.ns(role));
        self.spawn_with(role, &["nsenter", &net, "--"], args, tag)
    }

    /// Runs `enter` followed by `args` (`enter` puts it in `role`'s
    /// namespace), output to `ROLE-TAG.log`, kept to be stopped.
    fn spawn_with(
        &mut self,
        role: &str,
        enter: &[&str],
        args: &[&str],
        tag: &str,
    ) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.workdir.join(format!("{role}-{tag}.log")))?;
        let child = Command::new(enter[0])
            .args(&enter[1..])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", args.join(" ")))?;
        self.procs.push((format!("{role}-{tag}"), child));
        Ok(())
    }

    /// Stops the process started with `tag` in `role` (SIGTERM, then SIGKILL).
    pub fn stop(&mut self, role: &str, tag: &str) -> anyhow::Result<()> {
        let key = format!("{role}-{tag}");
        if let Some(i) = self.procs.iter().position(|(k, _)| *k == key) {
            let (_, mut child) = self.procs.remove(i);
            terminate(&mut child);
        }
        Ok(())
    }

    /// The pid of the process started with `tag` in `role`.
    pub fn pid(&self, role: &str, tag: &str) -> anyhow::Result<u32> {
        let key = format!("{role}-{tag}");
        self.procs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, c)| c.id())
            .ok_or_else(|| anyhow!("no process {key}"))
    }

    /// Sends `sig` to the process started with `tag` in `role`.
    pub fn signal(&self, role: &str, tag: &str, sig: i32) -> anyhow::Result<()> {
        let key = format!("{role}-{tag}");
        let (_, child) = self
            .procs
            .iter()
            .find(|(k, _)| *k == key)
            .ok_or_else(|| anyhow!("no process {key}"))?;
        // SAFETY: plain kill(2) on our own child's pid.
        if unsafe { libc::kill(child.id() as i32, sig) } != 0 {
            bail!("kill {key}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Log of a spawned process.
    pub fn log(&self, role: &str, tag: &str) -> String {
        std::fs::read_to_string(self.workdir.join(format!("{role}-{tag}.log"))).unwrap_or_default()
    }

    /// (resets, changed, failed) of the `nsprobe hold-many` spawned with
    /// `tag` in the client, once it has finished (`None` while it runs): its
    /// summary lines `resets N`, `changed N`, `failed N`.
    pub fn hold_many_summary(&self, tag: &str) -> Option<(u64, u64, u64)> {
        let log = self.log("cl", tag);
        let get = |k: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
        };
        Some((get("resets ")?, get("changed ")?, get("failed ")?))
    }

    /// Waits for [`Lab::hold_many_summary`], printing the run's log; fails
    /// after `limit`.
    pub fn wait_hold_many(&self, tag: &str, limit: Duration) -> (u64, u64, u64) {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.hold_many_summary(tag) {
                eprintln!("{tag}:\n{}", self.log("cl", tag));
                return s;
            }
            assert!(
                t0.elapsed() < limit,
                "{tag} did not finish:\n{}",
                self.log("cl", tag)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn bpffs(&self) -> PathBuf {
        self.bpffs_of("dir")
    }

    pub fn socket(&self) -> PathBuf {
        self.socket_of("dir")
    }

    pub fn config_path(&self) -> PathBuf {
        self.config_path_of("dir")
    }

    /// Pin directory of the agent on director `role`.
    pub fn bpffs_of(&self, role: &str) -> PathBuf {
        match role {
            "dir" => self.bpffs_mount.join("lb"),
            r => self.bpffs_mount.join(r),
        }
    }

    /// Control socket of the agent on director `role`.
    pub fn socket_of(&self, role: &str) -> PathBuf {
        match role {
            "dir" => self.workdir.join("lb.sock"),
            r => self.workdir.join(format!("{r}.sock")),
        }
    }

    /// State directory (`--state-dir`, the saved runtime layer) of the
    /// agent on director `role`.
    pub fn state_dir_of(&self, role: &str) -> PathBuf {
        self.workdir.join(format!("{role}-state"))
    }

    /// Configuration file of the agent on director `role`.
    pub fn config_path_of(&self, role: &str) -> PathBuf {
        match role {
            "dir" => self.workdir.join("keepalived.conf"),
            r => self.workdir.join(format!("{r}.conf")),
        }
    }

    /// Writes the agent's configuration file.
    pub fn write_config(&self, text: &str) -> anyhow::Result<()> {
        std::fs::write(self.config_path(), text)?;
        Ok(())
    }

    /// Starts `lb run` on the director and waits until every real of the
    /// configuration has a resolved MAC (or `timeout`).
    /// The director's second interface on the private bridge, forwarding on,
    /// reals routed through it.
    fn build_private_side(&mut self) -> anyhow::Result<()> {
        let mut directors = vec![("dir", "dir1", DIRECTOR_PRIVATE_IP, DIRECTOR_PRIVATE_IP6)];
        if self.ha {
            directors.push(("dir2", "dir21", DIRECTOR2_PRIVATE_IP, DIRECTOR2_PRIVATE_IP6));
        }
        for (role, sw_end, ip, ip6) in &directors {
            let ns = self.ns(role);
            self.exec(
                "sw",
                &[
                    "ip", "link", "add", sw_end, "type", "veth", "peer", "name", "eth1", "netns",
                    &ns,
                ],
            )?;
            self.exec("sw", &["ip", "link", "set", sw_end, "master", "br1", "up"])?;
            self.sysctl(role, "net.ipv6.conf.eth1.accept_dad=0")?;
            self.add_addr(role, &format!("{ip}/24"), "eth1")?;
            self.add_addr(role, &format!("{ip6}/64"), "eth1")?;
            self.exec(role, &["ip", "link", "set", "eth1", "up"])?;
            for kv in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
                self.sysctl(role, kv)?;
            }
        }
        let (gw, gw6) = if self.ha {
            (NAT_GATEWAY_IP, NAT_GATEWAY_IP6)
        } else {
            (DIRECTOR_PRIVATE_IP, DIRECTOR_PRIVATE_IP6)
        };
        for i in 1..=self.reals {
            let r = format!("r{i}");
            // Onlink: in an HA lab the gateway appears with VRRP's master.
            self.exec(
                &r,
                &[
                    "ip", "route", "add", "default", "via", gw, "dev", "eth0", "onlink",
                ],
            )?;
            self.exec(
                &r,
                &[
                    "ip", "-6", "route", "add", "default", "via", gw6, "dev", "eth0", "onlink",
                ],
            )?;
            // Replies cross the director's XDP_REDIRECT, which loses checksum
            // offload metadata: the reals compute checksums themselves.
            self.exec(&r, &["ethtool", "-K", "eth0", "tx", "off"])?;
        }
        for (i, (_, sw_end, _, _)) in directors.iter().enumerate() {
            self.xdp_pass("sw", sw_end, XDP_PASS, &format!("xdp-pass1{i}"))?;
        }
        Ok(())
    }

    pub fn start_agent(&mut self, config: &str, extra: &[&str]) -> anyhow::Result<()> {
        self.start_agent_on("dir", config, extra)
    }

    /// Starts `lb run` on director `role` (`dir` or `dir2`), process tag `lb`,
    /// and waits until its reals are resolved.
    pub fn start_agent_on(
        &mut self,
        role: &str,
        config: &str,
        extra: &[&str],
    ) -> anyhow::Result<()> {
        self.spawn_agent_on(role, config, extra)?;
        // Generous: a loaded 2-core machine takes seconds to verify the program.
        self.wait_resolved_on(role, Duration::from_secs(30))
    }

    /// Starts `lb run` on director `role` without waiting for anything.
    pub fn spawn_agent_on(
        &mut self,
        role: &str,
        config: &str,
        extra: &[&str],
    ) -> anyhow::Result<()> {
        std::fs::write(self.config_path_of(role), config)?;
        let cfg = self.config_path_of(role).to_string_lossy().into_owned();
        let mut args = vec!["--config", cfg.as_str()];
        args.extend_from_slice(extra);
        self.spawn_agent_args(role, &args)
    }

    /// Starts `lb run` on director `role` with the lab's interfaces, pin
    /// directory, socket and state directory, and `extra` (e.g. no
    /// `--config` at all: the by-hand workflow).
    pub fn spawn_agent_args(&mut self, role: &str, extra: &[&str]) -> anyhow::Result<()> {
        let lb = self.bins.lb.to_string_lossy().into_owned();
        let bpffs = self.bpffs_of(role).to_string_lossy().into_owned();
        let sock = self.socket_of(role).to_string_lossy().into_owned();
        let state = self.state_dir_of(role).to_string_lossy().into_owned();
        let mut args = vec![lb.as_str(), "run", "--iface", "eth0"];
        if self.two_subnets {
            args.extend(["--iface", "eth1"]);
        }
        args.extend([
            "--bpffs",
            bpffs.as_str(),
            "--socket",
            sock.as_str(),
            "--state-dir",
            state.as_str(),
        ]);
        args.extend_from_slice(extra);
        self.spawn(role, &args, "lb")
    }

    /// `lb adm ARGS…` on the host against the agent of director `role`
    /// (LB_SOCKET / LB_BPFFS), with `stdin` fed to it: exit code, stdout,
    /// stderr.
    pub fn adm(
        &self,
        role: &str,
        args: &[&str],
        stdin: &str,
    ) -> anyhow::Result<(i32, String, String)> {
        let mut child = Command::new(&self.bins.lb)
            .arg("adm")
            .args(args)
            .env("LB_SOCKET", self.socket_of(role))
            .env("LB_BPFFS", self.bpffs_of(role))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut input = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        input.write_all(stdin.as_bytes())?;
        drop(input);
        let out = child.wait_with_output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Waits until `lb status` reports no unresolved real.
    pub fn wait_resolved(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_resolved_on("dir", timeout)
    }

    /// [`Lab::wait_resolved`] for the agent on director `role`.
    pub fn wait_resolved_on(&self, role: &str, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(s) = self.lb(&[
                "status",
                "--socket",
                &self.socket_of(role).to_string_lossy(),
            ]) {
                if s.contains("service") && !s.contains("unresolved") {
                    return Ok(());
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "agent did not resolve every real within {timeout:?}; agent log:\n{}",
                    self.log(role, "lb")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One of `lb counters`' global counters, by name.
    pub fn counter(&self, name: &str) -> anyhow::Result<u64> {
        let bpffs = self.bpffs().to_string_lossy().into_owned();
        let out = self.lb(&["counters", "--bpffs", &bpffs])?;
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no counter {name} in:\n{out}"))
    }

    /// Runs the `lb` CLI on the host (maps are pinned on a host-visible bpffs).
    pub fn lb(&self, args: &[&str]) -> anyhow::Result<String> {
        let lb = self.bins.lb.to_string_lossy().into_owned();
        let mut full = vec![lb.as_str()];
        full.extend_from_slice(args);
        Ok(String::from_utf8(run(&full)?.stdout)?)
    }

    /// `count` HTTP requests from the client to `addr` (one connection each):
    /// answers per real and failures.
    pub fn http_get(&self, addr: &str, count: usize) -> anyhow::Result<BTreeMap<String, usize>> {
        let probe = self.bins.nsprobe.to_string_lossy().into_owned();
        let out = self.exec("cl", &[&probe, "get", addr, &count.to_string()])?;
        let mut tally = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut it = line.split_whitespace();
            if let (Some(k), Some(v)) = (it.next(), it.next()) {
                tally.insert(k.to_owned(), v.parse().unwrap_or(0));
            }
        }
        Ok(tally)
    }

    /// Opens a long-lived keep-alive HTTP connection from the client.
    pub fn hold(&self, addr: &str) -> anyhow::Result<Held> {
        let probe = self.bins.nsprobe.to_string_lossy().into_owned();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns("cl"), &probe, "hold", addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let mut held = Held {
            first: String::new(),
            child,
            stdin,
            stdout,
        };
        held.first = held.read_line()?;
        Ok(held)
    }
}

/// A long-lived connection through the VIP.
pub struct Held {
    /// Answer to the first request (which real serves this connection).
    pub first: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Held {
    fn read_line(&mut self) -> anyhow::Result<String> {
        let mut s = String::new();
        self.stdout.read_line(&mut s)?;
        Ok(s.trim().to_owned())
    }

    /// Sends one more request on the same connection; returns the answer.
    pub fn request(&mut self) -> anyhow::Result<String> {
        writeln!(self.stdin)?;
        self.stdin.flush()?;
        self.read_line()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn terminate(child: &mut Child) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Lab {
    fn drop(&mut self) {
        // `ip netns exec` runs the program in place (exec), so the pid we
        // hold is the program itself.
        for (_, mut c) in self.procs.drain(..).rev() {
            terminate(&mut c);
        }
        for ns in self.namespaces.drain(..).rev() {
            // Anything still running in the namespace (e.g. children of a
            // killed test) goes too, so the namespace can really disappear.
            if let Ok(o) = run(&["ip", "netns", "pids", &ns]) {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill(2) on a pid listed in our own namespace.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = run(&["ip", "netns", "del", &ns]);
        }
        let _ = run(&["umount", &self.bpffs_mount.to_string_lossy()]);
        let _ = std::fs::remove_dir(&self.bpffs_mount);
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

/// The operator documents of `../shared/seeds/` and the keepalived
/// configuration inside them (shared by the config tests and the HA tests).
pub mod seeds {
    use std::path::{Path, PathBuf};

    /// Lines of a seed document that form keepalived configuration blocks: a
    /// top-level keyword opening a block, to its matching brace.
    pub fn config_blocks(doc: &str) -> String {
        const TOP: &[&str] = &[
            "global_defs",
            "vrrp_instance",
            "vrrp_script",
            "vrrp_sync_group",
            "virtual_server",
        ];
        let mut out = String::new();
        let mut depth = 0i32;
        for line in doc.lines() {
            let code = line.split(['#', '!']).next().unwrap_or("");
            let first = code.split_whitespace().next().unwrap_or("");
            if depth == 0 && !(TOP.contains(&first) && code.contains('{')) {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
            depth = depth.max(0);
        }
        out
    }

    /// `LB_SEEDS_DIR`, else `../shared/seeds` next to the repository.
    pub fn dir() -> PathBuf {
        std::env::var_os("LB_SEEDS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/seeds"))
    }

    /// The path of the seed whose file name starts with `prefix`, and its
    /// configuration blocks.
    pub fn config_of(prefix: &str) -> (PathBuf, String) {
        let dir = dir();
        let path = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("seeds directory {} ({e}); set LB_SEEDS_DIR", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap_or_else(|| panic!("seed {prefix} not found"));
        let doc = std::fs::read_to_string(&path).unwrap();
        (path.clone(), config_blocks(&doc))
    }
}

/// The scale-out lab (issue 18): active-active directors behind a router
/// that spreads flows over them by ECMP, each director announcing the VIPs
/// over BGP through its own GoBGP daemon, the router (BIRD 2) installing
/// the routes with all their next hops (`merge paths`) into its kernel.
///
/// ```text
///  cl 10.210.0.2 ── rt (BIRD, AS 65000) 10.210.0.1 | 10.200.0.254 ── br0 (sw)
///                                                      ├─ dir1 10.200.0.2  lb + gobgpd (AS 65001)
///                                                      ├─ dir2 10.200.0.3  lb + gobgpd
///                                                      ├─ dir3 10.200.0.4  lb + gobgpd
///                                                      └─ r1 10.200.0.11, r2 …  (VIPs on lo, DR)
/// ```
///
/// The router hashes on the 5-tuple (`fib_multipath_hash_policy=1`); the
/// reals answer the client directly through the router (DR). Used by
/// `tests/bgp.rs`; meant for the flow-spread and director-loss tests and
/// `cargo xtask demo --ecmp` too.
pub mod ecmp {
    use std::{
        net::IpAddr,
        time::{Duration, Instant},
    };

    use anyhow::{bail, Context as _};

    use super::{real_ip, Bins, Lab, XDP_PASS};

    /// The router's address on the directors' segment (the BGP peer).
    pub const ROUTER_IP: &str = "10.200.0.254";
    /// The router's address on the client's network (the client's gateway).
    pub const ROUTER_CLIENT_IP: &str = "10.210.0.1";
    /// The client, on its own network behind the router.
    pub const CLIENT_IP: &str = "10.210.0.2";
    /// The VIPs (on no segment: reached only through the announced routes).
    pub const VIP: &str = "10.220.0.100";
    pub const VIP2: &str = "10.220.0.101";
    /// The router's AS and the directors' (one AS for all of them).
    pub const ROUTER_AS: u32 = 65000;
    pub const DIRECTOR_AS: u32 = 65001;
    /// gobgpd's gRPC address in each director's namespace.
    pub const GOBGP_API: &str = "127.0.0.1:50051";

    /// Role of director `i` (1-based): `dir1`, `dir2`…
    pub fn director(i: usize) -> String {
        format!("dir{i}")
    }

    /// Address of director `i` (1-based): 10.200.0.2, .3…
    pub fn director_ip(i: usize) -> String {
        format!("{}.{}", super::SUBNET, 1 + i)
    }

    /// The `lb_bgp` block of director `i`, with `extra` lines inside
    /// (`poll_interval 0.5`, …).
    pub fn bgp_block(i: usize, extra: &str) -> String {
        format!(
            "lb_bgp {{\n    daemon gobgp\n    api {GOBGP_API}\n    local_as {DIRECTOR_AS}\n    neighbor {ROUTER_IP} {ROUTER_AS}\n    next_hop {}\n{extra}}}\n",
            director_ip(i)
        )
    }

    /// BIRD's configuration: a BGP session per director, ECMP into the
    /// kernel, short timers (a lab, not a network).
    fn bird_conf(directors: usize) -> String {
        let mut c = format!(
            "router id {ROUTER_IP};\n\
             protocol device {{ scan time 1; }}\n\
             protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths on;\n}}\n\
             template bgp directors {{\n  local {ROUTER_IP} as {ROUTER_AS};\n  ipv4 {{ import all; export none; }};\n  hold time 3;\n  keepalive time 1;\n  connect delay time 1;\n  connect retry time 2;\n  error wait time 1, 4;\n}}\n"
        );
        for i in 1..=directors {
            c.push_str(&format!(
                "protocol bgp d{i} from directors {{ neighbor {} as {DIRECTOR_AS}; }}\n",
                director_ip(i)
            ));
        }
        c
    }

    impl Lab {
        /// Builds the scale-out lab with `directors` directors (each with
        /// its gobgpd started, no lb yet) and `reals` reals serving HTTP on
        /// ports 80 and 8080 (process tags `httpd80`, `httpd8080`).
        pub fn ecmp(
            prefix: &str,
            bins: Bins,
            directors: usize,
            reals: usize,
        ) -> anyhow::Result<Lab> {
            let mut lab = Lab::create(prefix, bins, reals, false, false)?;
            lab.build_ecmp(directors)
                .context("building the scale-out (ECMP) lab")?;
            Ok(lab)
        }

        fn build_ecmp(&mut self, directors: usize) -> anyhow::Result<()> {
            self.add_ns("sw")?;
            self.exec("sw", &["ip", "link", "add", "br0", "type", "bridge"])?;
            self.exec("sw", &["ip", "link", "set", "br0", "up"])?;
            // Hosts on the segment: the router, the directors, the reals.
            let mut hosts = vec![("rt".to_string(), ROUTER_IP.to_string())];
            for i in 1..=directors {
                hosts.push((director(i), director_ip(i)));
            }
            for i in 1..=self.reals {
                hosts.push((format!("r{i}"), real_ip(i)));
            }
            for (role, ip) in &hosts {
                let ns = self.add_ns(role)?;
                self.exec(
                    "sw",
                    &[
                        "ip", "link", "add", role, "type", "veth", "peer", "name", "eth0", "netns",
                        &ns,
                    ],
                )?;
                self.exec("sw", &["ip", "link", "set", role, "master", "br0", "up"])?;
                self.add_addr(role, &format!("{ip}/24"), "eth0")?;
                self.exec(role, &["ip", "link", "set", "eth0", "up"])?;
            }
            // The client's network: a veth straight to the router.
            let cl = self.add_ns("cl")?;
            self.exec(
                "rt",
                &[
                    "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns",
                    &cl,
                ],
            )?;
            self.add_addr("rt", &format!("{ROUTER_CLIENT_IP}/24"), "eth1")?;
            self.exec("rt", &["ip", "link", "set", "eth1", "up"])?;
            self.add_addr("cl", &format!("{CLIENT_IP}/24"), "eth0")?;
            self.exec("cl", &["ip", "link", "set", "eth0", "up"])?;
            self.exec(
                "cl",
                &["ip", "route", "add", "default", "via", ROUTER_CLIENT_IP],
            )?;
            // XDP_TX loses checksum-offload metadata: the client computes
            // its checksums itself (as in every lab).
            self.exec("cl", &["ethtool", "-K", "eth0", "tx", "off"])?;
            for kv in [
                "net.ipv4.ip_forward=1",
                "net.ipv4.fib_multipath_hash_policy=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.eth0.rp_filter=0",
            ] {
                self.sysctl("rt", kv)?;
            }
            // Directors: the VIPs on lo (nothing answers ARP for them: the
            // router reaches them by the announced next hops); XDP on the
            // switch side so that XDP_TX frames are delivered.
            for i in 1..=directors {
                let d = director(i);
                for vip in [VIP, VIP2] {
                    self.add_addr(&d, &format!("{vip}/32"), "lo")?;
                }
                self.exec(&d, &["ip", "route", "add", "default", "via", ROUTER_IP])?;
                self.xdp_pass("sw", &d, XDP_PASS, &format!("xdp-pass-{d}"))?;
                self.start_gobgpd(i)?;
            }
            // Reals: the VIPs on lo without ARP, answers to the client
            // through the router.
            let probe = self.bins.nsprobe.to_string_lossy().into_owned();
            for i in 1..=self.reals {
                let r = format!("r{i}");
                for vip in [VIP, VIP2] {
                    self.add_addr(&r, &format!("{vip}/32"), "lo")?;
                }
                for k in ["all", "eth0"] {
                    self.sysctl(&r, &format!("net.ipv4.conf.{k}.arp_ignore=1"))?;
                    self.sysctl(&r, &format!("net.ipv4.conf.{k}.arp_announce=2"))?;
                }
                self.exec(&r, &["ip", "route", "add", "default", "via", ROUTER_IP])?;
                self.spawn(&r, &[&probe, "serve", "80", &r], "httpd80")?;
                self.spawn(&r, &[&probe, "serve", "8080", &r], "httpd8080")?;
            }
            let conf = self.workdir.join("bird.conf");
            std::fs::write(&conf, bird_conf(directors))?;
            let conf = conf.to_string_lossy().into_owned();
            let ctl = self.bird_socket();
            self.spawn(
                "rt",
                &[
                    "bird",
                    "-f",
                    "-c",
                    &conf,
                    "-s",
                    &ctl,
                    "-P",
                    &format!("{ctl}.pid"),
                ],
                "bird",
            )?;
            self.mount_bpffs()?;
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        }

        fn bird_socket(&self) -> String {
            self.workdir.join("bird.ctl").to_string_lossy().into_owned()
        }

        /// Starts director `i`'s gobgpd without a configuration (lb starts
        /// its BGP instance and adds the router as a peer), process tag
        /// `gobgpd`.
        pub fn start_gobgpd(&mut self, i: usize) -> anyhow::Result<()> {
            self.spawn(
                &director(i),
                &[
                    "gobgpd",
                    "--log-plain",
                    "--api-hosts",
                    GOBGP_API,
                    "--pprof-disable",
                ],
                "gobgpd",
            )
        }

        /// `birdc ARGS…` on the router's control socket: its output.
        pub fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
            let ctl = self.bird_socket();
            let mut full = vec!["birdc", "-s", ctl.as_str()];
            full.extend_from_slice(args);
            Ok(String::from_utf8_lossy(&super::run(&full)?.stdout).into_owned())
        }

        /// The router's BGP session state with director `i` (BIRD's
        /// `show protocols` Info column: `Established`, `Active`…).
        pub fn bird_session(&self, i: usize) -> anyhow::Result<String> {
            let out = self.birdc(&["show", "protocols", &format!("d{i}")])?;
            Ok(out
                .lines()
                .find(|l| l.starts_with(&format!("d{i} ")))
                .and_then(|l| l.split_whitespace().nth(5))
                .unwrap_or("")
                .to_owned())
        }

        /// The next hops of the router's kernel route to `vip` (empty:
        /// no route), sorted.
        pub fn router_next_hops(&self, vip: &str) -> anyhow::Result<Vec<IpAddr>> {
            let out = self.exec("rt", &["ip", "-4", "route", "show", &format!("{vip}/32")])?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut hops: Vec<IpAddr> = text
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| w[0] == "via")
                .filter_map(|w| w[1].parse().ok())
                .collect();
            hops.sort();
            Ok(hops)
        }

        /// Waits until the router's route to `vip` has exactly the next
        /// hops of `directors` (1-based; empty: no route); fails after
        /// `timeout` with what the router has and BIRD's view.
        pub fn wait_next_hops(
            &self,
            vip: &str,
            directors: &[usize],
            timeout: Duration,
        ) -> anyhow::Result<Duration> {
            let mut want: Vec<IpAddr> = directors
                .iter()
                .map(|&i| director_ip(i).parse().expect("an address"))
                .collect();
            want.sort();
            let start = Instant::now();
            loop {
                let have = self.router_next_hops(vip)?;
                if have == want {
                    return Ok(start.elapsed());
                }
                if start.elapsed() > timeout {
                    bail!(
                        "the router's route to {vip} has next hops {have:?}, not {want:?}, after {timeout:?}; BIRD:\n{}\n{}",
                        self.birdc(&["show", "protocols"]).unwrap_or_default(),
                        self.birdc(&["show", "route", "all"]).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        /// Starts `lb run` on director `i` with `config` (process tag `lb`)
        /// and waits until its reals are resolved.
        pub fn start_ecmp_agent(&mut self, i: usize, config: &str) -> anyhow::Result<()> {
            self.start_agent_on(&director(i), config, super::AGENT_ARGS)
        }
    }

    // --- Spread and director loss, seen from the directors' tables and the
    // client (`cargo xtask demo --ecmp`). ---

    /// One connection a director tracks (a row of `lb list -c --json`).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Tracked {
        /// The real the director sends it to.
        pub real: String,
        /// The entry's state (`ESTABLISHED`, `SYN_RECV`, `FIN_WAIT`…).
        pub state: String,
        /// Seconds left before the entry expires: the entry of a flow that
        /// moved to another director stops being refreshed, so it has less
        /// left than the live one.
        pub expire_s: u64,
    }

    impl Lab {
        /// The connections director `i` tracks from the client to
        /// `vip:port`, by the client's source port (its connection table,
        /// read from the pinned maps with `lb list -c --json`).
        pub fn director_flows(
            &self,
            i: usize,
            vip: &str,
            port: u16,
        ) -> anyhow::Result<std::collections::BTreeMap<u16, Tracked>> {
            let bpffs = self.bpffs_of(&director(i)).to_string_lossy().into_owned();
            let out = self.lb(&["list", "-c", "--json", "--bpffs", &bpffs])?;
            let v: serde_json::Value = serde_json::from_str(&out)
                .with_context(|| format!("lb list -c --json of {}: {out}", director(i)))?;
            let mut flows = std::collections::BTreeMap::new();
            for c in v["connections"].as_array().into_iter().flatten() {
                if c["source_address"] == CLIENT_IP
                    && c["virtual_address"] == vip
                    && c["virtual_port"] == port
                {
                    let sport = c["source_port"].as_u64().unwrap_or(0) as u16;
                    flows.insert(
                        sport,
                        Tracked {
                            real: c["destination_address"].as_str().unwrap_or("?").to_owned(),
                            state: c["state"].as_str().unwrap_or("?").to_owned(),
                            expire_s: c["expire_s"].as_u64().unwrap_or(0),
                        },
                    );
                }
            }
            Ok(flows)
        }

        /// Starts `nsprobe hold-many ADDR CONNS SECS GAP_MS` in the client
        /// (keep-alive connections, a request on each every `gap_ms`);
        /// [`HoldMany::finish`] waits for its summary.
        pub fn hold_many(
            &self,
            addr: &str,
            conns: usize,
            secs: f64,
            gap_ms: u64,
        ) -> anyhow::Result<HoldMany> {
            let probe = self.bins.nsprobe.to_string_lossy().into_owned();
            let child = std::process::Command::new("ip")
                .args(["netns", "exec", &self.ns("cl"), &probe, "hold-many", addr])
                .args([conns.to_string(), secs.to_string(), gap_ms.to_string()])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .context("starting nsprobe hold-many")?;
            Ok(HoldMany { child: Some(child) })
        }
    }

    /// A running `nsprobe hold-many`; killed if dropped before it finished.
    pub struct HoldMany {
        child: Option<std::process::Child>,
    }

    /// What `nsprobe hold-many` reported at its end.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct HoldSummary {
        /// Connections held.
        pub connections: usize,
        /// Requests sent, over all connections.
        pub requests: u64,
        /// Connections that died (error, RST, EOF, 10 s unanswered).
        pub resets: u64,
        /// Answers from another real than the connection's first.
        pub changed: u64,
        /// Requests not answered within 1 s (answered later).
        pub failed: u64,
        /// Connections per first real (`r1`, `r2`…).
        pub first_real: std::collections::BTreeMap<String, usize>,
        /// What hold-many wrote on stderr (why connections died).
        pub errors: String,
    }

    impl HoldMany {
        /// Waits for the end of the run and parses its summary.
        pub fn finish(mut self) -> anyhow::Result<HoldSummary> {
            let child = self.child.take().context("hold-many already finished")?;
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "nsprobe hold-many failed: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let mut s = HoldSummary {
                errors: String::from_utf8_lossy(&out.stderr).into_owned(),
                ..HoldSummary::default()
            };
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut w = line.split_whitespace();
                match (w.next(), w.next()) {
                    (Some("conn"), Some(_)) => {
                        s.connections += 1;
                        for kv in w {
                            match kv.split_once('=') {
                                Some(("first", r)) => {
                                    *s.first_real.entry(r.to_owned()).or_default() += 1
                                }
                                Some(("requests", n)) => {
                                    s.requests += n.parse::<u64>().unwrap_or(0)
                                }
                                _ => {}
                            }
                        }
                    }
                    (Some("resets"), Some(n)) => s.resets = n.parse()?,
                    (Some("changed"), Some(n)) => s.changed = n.parse()?,
                    (Some("failed"), Some(n)) => s.failed = n.parse()?,
                    _ => {}
                }
            }
            Ok(s)
        }
    }

    impl Drop for HoldMany {
        fn drop(&mut self) {
            if let Some(c) = self.child.as_mut() {
                super::terminate(c);
            }
        }
    }
}
