//! Forwarding rate in network namespaces, every method side by side in one
//! run (`cargo xtask bench` runs this after lb-bench).
//!
//! One generator namespace holds a veth end per method; each method's
//! device under test is its own namespace at the other end:
//!
//! - `floor`: the XDP_TX reflector (`xdp_tx_ref`), the least any XDP
//!   program that sends a frame back can cost on this path;
//! - `dr`, `nat`, `tun`: `lb run` with a UDP virtual service of two reals;
//! - `nft`: the kernel forwarding with nftables DNAT (round robin) and
//!   conntrack, the netfilter path ipvs-NAT resembles.
//!
//! The generator (`lab-ebpf/src/gen.rs`) runs through BPF_PROG_RUN with
//! BPF_F_TEST_XDP_LIVE_FRAMES: 64-byte UDP frames, the source port cycling
//! over `--flows` values, transmitted into the method's veth. The reals'
//! MAC addresses are the generator's, so whatever a method forwards comes
//! back to the generator's end, where `xdp_count` counts and drops it. The
//! rate is the frames counted back per second of generation; each method is
//! measured once per round, rounds interleaved, medians and ranges reported.
//!
//! `ipvs-dr` and `ipvs-nat` (ipvsadm, a UDP service of the same two reals)
//! are methods too where the kernel has ipvs.
//!
//! With `--scaling`, lb DR is also measured with 1 to 1,000,000 tracked
//! flows and with 100 and 1,000 reals.
//!
//! With `--ecmp` (instead of the methods), the scale-out capacity: three
//! lb DR directors with identical `mh` services, each behind its own veth,
//! fed at once by one generator thread per active director with the flows
//! split between them (as a router's ECMP splits them); the aggregate rate
//! of 1, 2 and 3 directors, interleaved, medians, and the directors' own
//! count of frames forwarded next to the frames counted back.
//!
//! The namespaces and processes are a [`lb_tests::Lab`] (an empty one this
//! program builds its topology in), removed when the run ends or fails.
//!
//! Usage: lb-pps --lb PATH [--lab PATH] [--seconds S] [--rounds N] [--flows N]
//!               [--scaling] [--methods floor,dr,nat,tun,nft] [--ecmp] [--json FILE]
//!               [--out FILE.md]
//! (`--lab`: the lb-lab binary, by default next to this one.)
use std::{
    fmt::Write as _,
    os::fd::AsRawFd as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use aya::{
    maps::{Array, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use etherparse::PacketBuilder;
use lb_lab::{GenConfig, GEN_CONFIG, GEN_FRAME_LEN, GEN_OBJECT, GEN_SINK, GEN_SINK_SLOTS};
use lb_tests::{run, Bins, Lab, XDP_PASS, XDP_TX_REF};

/// The namespace lab's prefix: namespaces `lbpps-gen`, `lbpps-<method>`.
const PREFIX: &str = "lbpps";
/// Role of the generator's namespace.
const GEN: &str = "gen";
/// The device under test's end of its veth (`lb run --iface eth0`).
const DUT_IF: &str = "eth0";
const VIP: &str = "10.0.0.100";
const CLIENT: &str = "10.0.0.1";
const DIRECTOR: &str = "10.0.0.2";
const REALS: [&str; 2] = ["10.0.0.11", "10.0.0.12"];
const ALL: [&str; 5] = ["floor", "dr", "nat", "tun", "nft"];
/// ipvs, for kernels that have it (`cargo xtask bench --ipvs` boots one).
const IPVS: [&str; 2] = ["ipvs-dr", "ipvs-nat"];
/// Extra devices under test of `--scaling`: lb DR with 100 and 1,000 reals.
const MANY: [&str; 2] = ["dr100", "dr1000"];
/// Tracked flows of `--scaling` (lb DR).
const FLOW_COUNTS: [u32; 4] = [1, 1_000, 100_000, 1_000_000];
/// Directors of `--ecmp` (lb DR, `mh`, identical configurations).
const DIRECTORS: [&str; 3] = ["d1", "d2", "d3"];

/// (lb_kind, reals) of an lb device under test.
fn lb_kind(name: &str) -> Option<(&'static str, u32)> {
    Some(match name {
        "dr" => ("DR", 2),
        "nat" => ("NAT", 2),
        "tun" => ("TUN", 2),
        "dr100" => ("DR", 100),
        "dr1000" => ("DR", 1000),
        "d1" | "d2" | "d3" => ("DR", 2),
        _ => return None,
    })
}

/// Address of real `i` of `n`.
fn real(i: u32, n: u32) -> String {
    if n <= 2 {
        REALS[i as usize].to_string()
    } else {
        format!("10.0.{}.{}", 1 + i / 250, 1 + i % 250)
    }
}

/// stdout of a command in `role`'s namespace.
fn in_ns(lab: &Lab, role: &str, args: &[&str]) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&lab.exec(role, args)?.stdout).into_owned())
}

fn mac_of(lab: &Lab, role: &str, dev: &str) -> anyhow::Result<[u8; 6]> {
    let text = in_ns(
        lab,
        role,
        &["cat", &format!("/sys/class/net/{dev}/address")],
    )?;
    let mut mac = [0u8; 6];
    for (i, p) in text.trim().split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(p, 16)?;
    }
    Ok(mac)
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One method's device under test.
struct Dut {
    name: &'static str,
    /// The generator's end (in the generator namespace).
    gen_if: String,
    gen_index: u32,
    frame: Vec<u8>,
    /// Frames per second counted back, one per round.
    rates: Vec<f64>,
    /// Share of the generated frames that came back, one per round.
    delivered: Vec<f64>,
}

/// The UDP virtual service of `n` reals by `kind`, scheduled by `sched`.
fn service(kind: &str, sched: &str, n: u32) -> String {
    let port = if kind == "NAT" { 8080 } else { 80 };
    let mut c = format!(
        "virtual_server {VIP} 80 {{\n  lb_algo {sched}\n  lb_kind {kind}\n  protocol UDP\n"
    );
    for i in 0..n {
        c += &format!(
            "  real_server {} {port} {{\n    weight 1\n  }}\n",
            real(i, n)
        );
    }
    c + "}\n"
}

fn setup_dut(lab: &mut Lab, name: &'static str) -> anyhow::Result<Dut> {
    let ns = lab.add_ns(name)?;
    let gen_ns = lab.ns(GEN);
    let gen_if = format!("g-{name}");
    run(&[
        "ip", "-n", &gen_ns, "link", "add", &gen_if, "type", "veth", "peer", "name", DUT_IF,
        "netns", &ns,
    ])?;
    run(&["ip", "-n", &gen_ns, "link", "set", &gen_if, "up"])?;
    lab.exec(
        name,
        &[
            "ip",
            "addr",
            "add",
            &format!("{DIRECTOR}/16"),
            "dev",
            DUT_IF,
        ],
    )?;
    lab.exec(name, &["ip", "link", "set", DUT_IF, "up"])?;
    let gen_mac = mac_of(lab, GEN, &gen_if)?;
    let dut_mac = mac_of(lab, name, DUT_IF)?;
    // The client and the reals are all the generator's end.
    let n = lb_kind(name).map(|k| k.1).unwrap_or(2);
    let mut batch = String::new();
    for ip in (0..n).map(|i| real(i, n)).chain([CLIENT.to_string()]) {
        batch += &format!(
            "neigh replace {ip} lladdr {} dev {DUT_IF} nud permanent\n",
            fmt_mac(&gen_mac)
        );
    }
    let batch_file = lab.workdir.join(format!("{name}.neigh"));
    std::fs::write(&batch_file, batch)?;
    lab.exec(name, &["ip", "-batch", &batch_file.to_string_lossy()])?;
    for kv in [
        "net.ipv4.ip_forward=1".to_string(),
        "net.ipv4.conf.all.send_redirects=0".to_string(),
        format!("net.ipv4.conf.{DUT_IF}.send_redirects=0"),
        "net.ipv4.conf.all.rp_filter=0".to_string(),
        format!("net.ipv4.conf.{DUT_IF}.rp_filter=0"),
    ] {
        lab.exec(name, &["sysctl", "-qw", &kv])?;
    }
    match name {
        "floor" => lab.xdp_pass(name, DUT_IF, XDP_TX_REF, "floor")?,
        "nft" => {
            let rules = format!(
                "table ip lbbench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat;\n    \
                 ip daddr {VIP} udp dport 80 dnat to numgen inc mod 2 map {{ 0 : {}, 1 : {} }}\n  }}\n}}\n",
                REALS[0], REALS[1]
            );
            let f = lab.workdir.join("nft.rules");
            std::fs::write(&f, rules)?;
            lab.exec(name, &["nft", "-f", &f.to_string_lossy()])?;
            // veth hands frames sent by an XDP program to its peer only
            // when the peer runs XDP too.
            lab.xdp_pass(name, DUT_IF, XDP_PASS, "xdp")?;
        }
        "ipvs-dr" | "ipvs-nat" => {
            // ipvs takes the VIP's packets at LOCAL_IN: the VIP is local.
            lab.exec(
                name,
                &["ip", "addr", "add", &format!("{VIP}/32"), "dev", DUT_IF],
            )?;
            let svc = format!("{VIP}:80");
            lab.exec(name, &["ipvsadm", "-A", "-u", &svc, "-s", "rr"])?;
            let (flag, port) = if name == "ipvs-dr" {
                ("-g", 80)
            } else {
                ("-m", 8080)
            };
            for r in REALS {
                lab.exec(
                    name,
                    &[
                        "ipvsadm",
                        "-a",
                        "-u",
                        &svc,
                        "-r",
                        &format!("{r}:{port}"),
                        flag,
                        "-w",
                        "1",
                    ],
                )?;
            }
            lab.xdp_pass(name, DUT_IF, XDP_PASS, "xdp")?;
        }
        kind => {
            let (lb_kind, n) = lb_kind(kind).ok_or_else(|| anyhow!("unknown method {kind}"))?;
            // `lb run --iface eth0`, pins under the lab's bpffs, control
            // socket and configuration in its work directory.
            // The scale-out directors run `mh`, as an ECMP deployment
            // must (every director sends a flow to the same real).
            let (sched, conntrack) = if DIRECTORS.contains(&kind) {
                ("mh", "2097152")
            } else {
                // Room for the 1M-flow scaling run on 2 CPUs.
                ("rr", "2097152")
            };
            lab.spawn_agent_on(
                kind,
                &service(lb_kind, sched, n),
                &["--conntrack-size", conntrack],
            )?;
            lab.wait_resolved_on(kind, Duration::from_secs(15))?;
        }
    }
    let frame = {
        let b = PacketBuilder::ethernet2(gen_mac, dut_mac)
            .ipv4(
                CLIENT.parse::<std::net::Ipv4Addr>()?.octets(),
                VIP.parse::<std::net::Ipv4Addr>()?.octets(),
                64,
            )
            .udp(10000, 80);
        let payload = [0u8; GEN_FRAME_LEN - 14 - 20 - 8];
        let mut f = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut f, &payload)?;
        // No UDP checksum (allowed for IPv4): the generator changes the
        // source port of every frame without recomputing it.
        f[14 + 20 + 6] = 0;
        f[14 + 20 + 7] = 0;
        f
    };
    let gen_index: u32 = in_ns(
        lab,
        GEN,
        &["cat", &format!("/sys/class/net/{gen_if}/ifindex")],
    )?
    .trim()
    .parse()?;
    Ok(Dut {
        name,
        gen_if,
        gen_index,
        frame,
        rates: Vec::new(),
        delivered: Vec::new(),
    })
}

/// The generator side, in its namespace (the thread entered it).
struct Gen {
    ebpf: Ebpf,
}

impl Gen {
    fn new(duts: &[Dut]) -> anyhow::Result<Gen> {
        let mut ebpf = lb_lab::load(GEN_OBJECT, "generator")?;
        let gen: &mut Xdp = ebpf
            .program_mut("xdp_gen")
            .ok_or_else(|| anyhow!("xdp_gen missing"))?
            .try_into()?;
        lb_lab::load_program(gen)?;
        let count: &mut Xdp = ebpf
            .program_mut("xdp_count")
            .ok_or_else(|| anyhow!("xdp_count missing"))?
            .try_into()?;
        lb_lab::load_program(count)?;
        for d in duts {
            count
                .attach(&d.gen_if, XdpMode::Driver)
                .with_context(|| format!("attaching xdp_count to {}", d.gen_if))?;
        }
        Ok(Gen { ebpf })
    }

    fn counted(&self, ifindex: u32) -> anyhow::Result<u64> {
        let sink: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(GEN_SINK)
                .ok_or_else(|| anyhow!("{GEN_SINK} missing"))?,
        )?;
        Ok(sink.get(&(ifindex % GEN_SINK_SLOTS), 0)?.iter().sum())
    }

    /// Generates `n` frames of `flows` flows into `d`'s veth; returns
    /// (seconds, frames counted back).
    fn burst(&mut self, d: &Dut, n: u32, flows: u32) -> anyhow::Result<(f64, u64)> {
        self.generate(d, n, flows, 1024, |_, runs| runs == 0)
    }

    /// Generates frames of `flows` flows from source port `base_port` into
    /// `d`'s veth for `seconds`, in runs of `chunk` frames; returns
    /// (seconds, frames counted back).
    fn run_for(
        &mut self,
        d: &Dut,
        seconds: f64,
        chunk: u32,
        flows: u32,
        base_port: u32,
    ) -> anyhow::Result<(f64, u64)> {
        self.generate(d, chunk, flows, base_port, |start, _| {
            start.elapsed().as_secs_f64() < seconds
        })
    }

    /// Runs of `chunk` live frames of `flows` flows from `base_port` into
    /// `d`'s veth while `more(start, runs done)`; returns (seconds, frames
    /// counted back).
    fn generate(
        &mut self,
        d: &Dut,
        chunk: u32,
        flows: u32,
        base_port: u32,
        more: impl Fn(Instant, u32) -> bool,
    ) -> anyhow::Result<(f64, u64)> {
        let mut frame = [0u8; GEN_FRAME_LEN];
        frame.copy_from_slice(&d.frame);
        let mut cfg: Array<_, GenConfig> = Array::try_from(
            self.ebpf
                .map_mut(GEN_CONFIG)
                .ok_or_else(|| anyhow!("{GEN_CONFIG} missing"))?,
        )?;
        cfg.set(
            0,
            GenConfig {
                flows,
                base_port,
                frame,
            },
            0,
        )?;
        let before = self.counted(d.gen_index)?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let ctx: Vec<u8> = [0, d.frame.len() as u32, 0, d.gen_index, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let gen: &mut Xdp = self
            .ebpf
            .program_mut("xdp_gen")
            .ok_or_else(|| anyhow!("xdp_gen missing"))?
            .try_into()?;
        let start = Instant::now();
        let mut runs = 0;
        while more(start, runs) {
            gen.test_run(TestRunOptions {
                data_in: Some(&d.frame),
                ctx_in: Some(&ctx),
                repeat: chunk,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_RUN with live frames")?;
            runs += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        // Frames still in flight through the method's NAPI.
        std::thread::sleep(Duration::from_millis(30));
        Ok((secs, self.counted(d.gen_index)? - before))
    }
}

fn enter_ns(ns: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening namespace {ns}"))?;
    // SAFETY: setns on an open namespace file; affects this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("{name} needs a value")),
    }
}

/// One measurement of `--ecmp`: the first `directors` directors forwarding
/// at once, each fed by its own generator thread.
struct ScaleSample {
    directors: usize,
    /// Frames per second counted back, summed over the directors.
    pps: f64,
    /// Each director's share of it, frames per second.
    per_director: Vec<f64>,
    /// Frames counted back by the generators, in all.
    counted: u64,
    /// Frames the directors' data planes forwarded (`tx` + `redirect` of
    /// `lb counters`) over the same runs, in all.
    lb_forwarded: u64,
}

/// Frames director `name`'s data plane forwarded so far (`lb counters`:
/// `tx` + `redirect`, summed over CPUs).
fn lb_forwarded(lab: &Lab, name: &str) -> anyhow::Result<u64> {
    let bpffs = lab.bpffs_of(name).to_string_lossy().into_owned();
    let out = lab.lb(&["counters", "--json", "--bpffs", &bpffs])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let c = |k: &str| {
        v["counters"][k]
            .as_u64()
            .ok_or_else(|| anyhow!("no counter {k} in {out}"))
    };
    Ok(c("tx")? + c("redirect")?)
}

/// `--ecmp`: the aggregate forwarding rate of 1, 2 and 3 directors. Each
/// active director gets its own generator thread (its own generator
/// object, pinned to CPU `i % CPUs`) sending into its veth, as a router's
/// ECMP hands each director its share of the flows: `flows` source ports
/// split in disjoint ranges between the active directors. The threads
/// start together and generate for `seconds`; the rate is the sum of each
/// director's frames counted back per second. The director counts are
/// interleaved within each round (the order turns each round).
fn scale_out(
    lab: &Lab,
    gen_ns: &str,
    duts: &[Dut],
    seconds: f64,
    rounds: usize,
    flows: u32,
) -> anyhow::Result<Vec<ScaleSample>> {
    let cpus = lb_testkit::online_cpus()?;
    // One generator object per director, loaded in the generator namespace.
    let mut gens: Vec<Gen> = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<Vec<Gen>> {
            enter_ns(gen_ns)?;
            duts.iter()
                .map(|d| Gen::new(std::slice::from_ref(d)))
                .collect()
        })
        .join()
        .map_err(|_| anyhow!("generator thread panicked"))?
    })?;
    // Calibration (frames per run of a twentieth of `seconds`) and warm-up:
    // every flow known to every director.
    let chunk = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<u32> {
            enter_ns(gen_ns)?;
            lb_testkit::pin_to_cpu(cpus[0])?;
            let (t, _) = gens[0].burst(&duts[0], 200_000, flows)?;
            for (g, d) in gens.iter_mut().zip(duts) {
                g.burst(d, flows * 4, flows)?;
            }
            let chunk = ((200_000.0 / t) * seconds / 20.0).clamp(10_000.0, 5_000_000.0) as u32;
            eprintln!(
                "lb-pps: calibration {:.3} Mpps, runs of {chunk} frames",
                0.2 / t
            );
            Ok(chunk)
        })
        .join()
        .map_err(|_| anyhow!("generator thread panicked"))?
    })?;
    let mut samples = Vec::new();
    for r in 0..rounds {
        eprintln!("lb-pps: scale-out round {}/{rounds}", r + 1);
        for j in 0..duts.len() {
            let k = 1 + (j + r) % duts.len();
            let per = flows / k as u32;
            let before: Vec<u64> = duts[..k]
                .iter()
                .map(|d| lb_forwarded(lab, d.name))
                .collect::<anyhow::Result<_>>()?;
            let barrier = std::sync::Barrier::new(k);
            let results: Vec<(f64, u64)> = std::thread::scope(|s| {
                let handles: Vec<_> = gens[..k]
                    .iter_mut()
                    .zip(&duts[..k])
                    .enumerate()
                    .map(|(i, (g, d))| {
                        let barrier = &barrier;
                        let cpu = cpus[i % cpus.len()];
                        s.spawn(move || -> anyhow::Result<(f64, u64)> {
                            enter_ns(gen_ns)?;
                            lb_testkit::pin_to_cpu(cpu)?;
                            barrier.wait();
                            g.run_for(d, seconds, chunk, per, 1024 + i as u32 * per)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().map_err(|_| anyhow!("generator thread panicked"))?)
                    .collect::<anyhow::Result<_>>()
            })?;
            let mut lb_total = 0;
            for (d, b) in duts[..k].iter().zip(before) {
                lb_total += lb_forwarded(lab, d.name)? - b;
            }
            let per_director: Vec<f64> = results.iter().map(|(t, n)| *n as f64 / t).collect();
            let s = ScaleSample {
                directors: k,
                pps: per_director.iter().sum(),
                per_director,
                counted: results.iter().map(|(_, n)| n).sum(),
                lb_forwarded: lb_total,
            };
            eprintln!(
                "lb-pps:   {k} director(s): {:.3} Mpps ({})",
                s.pps / 1e6,
                s.per_director
                    .iter()
                    .map(|p| format!("{:.3}", p / 1e6))
                    .collect::<Vec<_>>()
                    .join(" + ")
            );
            samples.push(s);
        }
    }
    Ok(samples)
}

/// The `--ecmp` table (Markdown) and JSON document of `samples`.
fn scale_out_report(
    samples: &[ScaleSample],
    flows: u32,
    seconds: f64,
    rounds: usize,
) -> (String, serde_json::Value) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let rates = |k: usize| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.directors == k)
            .map(|s| s.pps)
            .collect()
    };
    let one = median(&rates(1));
    let mut md = String::from(
        "| directors | Mpps, all directors (median) | min–max | per director (median) | × one director | lb forwarded / counted back |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut doc = Vec::new();
    for k in 1..=DIRECTORS.len() {
        let v = rates(k);
        if v.is_empty() {
            continue;
        }
        let of_k: Vec<&ScaleSample> = samples.iter().filter(|s| s.directors == k).collect();
        let per: Vec<f64> = (0..k)
            .map(|i| median(&of_k.iter().map(|s| s.per_director[i]).collect::<Vec<_>>()))
            .collect();
        let counted: u64 = of_k.iter().map(|s| s.counted).sum();
        let forwarded: u64 = of_k.iter().map(|s| s.lb_forwarded).sum();
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "| {k} | {:.3} | {:.3}–{:.3} | {} | {:.2} | {:.3} |",
            median(&v) / 1e6,
            lo / 1e6,
            hi / 1e6,
            per.iter()
                .map(|p| format!("{:.3}", p / 1e6))
                .collect::<Vec<_>>()
                .join(" / "),
            median(&v) / one,
            forwarded as f64 / counted.max(1) as f64
        );
        doc.push(serde_json::json!({
            "directors": k,
            "pps": v,
            "median_pps": median(&v),
            "ratio_to_one": median(&v) / one,
            "per_director_median_pps": per,
            "counted": counted,
            "lb_forwarded": forwarded,
        }));
    }
    let doc = serde_json::json!({
        "frame_bytes": GEN_FRAME_LEN,
        "flows": flows,
        "seconds": seconds,
        "rounds": rounds,
        "cpus": cpus,
        "directors": doc,
    });
    (md, doc)
}

/// Rates of one flow count: (method, flows, rates per round).
type FlowRates = (&'static str, u32, Vec<f64>);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let lb = PathBuf::from(arg::<String>(&args, "--lb", String::new())?);
    if !lb.exists() {
        bail!("--lb PATH: the lb binary to run the agents with");
    }
    let seconds: f64 = arg(&args, "--seconds", 1.0)?;
    let rounds: usize = arg(&args, "--rounds", 3)?;
    let flows: u32 = arg(&args, "--flows", 1024)?;
    let methods: String = arg(&args, "--methods", ALL.join(","))?;
    let scaling = args.iter().any(|a| a == "--scaling");
    let ecmp = args.iter().any(|a| a == "--ecmp");
    let json: Option<PathBuf> = arg::<String>(&args, "--json", String::new())
        .ok()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let out: Option<PathBuf> = arg::<String>(&args, "--out", String::new())
        .ok()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let mut methods: Vec<&'static str> = methods
        .split(',')
        .map(|m| {
            ALL.iter()
                .chain(IPVS.iter())
                .copied()
                .find(|a| *a == m)
                .ok_or_else(|| {
                    anyhow!(
                        "unknown method {m} (methods: {}, {})",
                        ALL.join(", "),
                        IPVS.join(", ")
                    )
                })
        })
        .collect::<anyhow::Result<_>>()?;
    if scaling {
        for m in ["floor", "dr"] {
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
        methods.extend(MANY);
    }

    // lb-lab (its `xdp-pass`), next to this binary unless given.
    let lab_bin = match arg::<String>(&args, "--lab", String::new())? {
        p if p.is_empty() => std::env::current_exe()?.with_file_name("lb-lab"),
        p => PathBuf::from(p),
    };
    if !lab_bin.exists() {
        bail!(
            "{} not found: build lb-lab (`cargo build -p lb-lab`) or give --lab PATH",
            lab_bin.display()
        );
    }
    let bins = Bins {
        // No HTTP server runs here.
        nsprobe: lb.with_file_name("nsprobe"),
        lab: lab_bin,
        lb: lb.clone(),
    };
    let mut lab = Lab::empty(PREFIX, bins)?;
    lab.add_ns(GEN)?;
    let gen_ns = lab.ns(GEN);
    if ecmp {
        let mut duts = Vec::new();
        for d in DIRECTORS {
            eprintln!("lb-pps: setting up director {d}");
            duts.push(setup_dut(&mut lab, d)?);
        }
        let samples = scale_out(&lab, &gen_ns, &duts, seconds, rounds, flows)?;
        let (md, doc) = scale_out_report(&samples, flows, seconds, rounds);
        print!("{md}");
        if let Some(p) = out {
            std::fs::write(p, &md)?;
        }
        if let Some(p) = json {
            std::fs::write(p, serde_json::to_string_pretty(&doc)?)?;
        }
        drop(lab);
        return Ok(());
    }
    let mut duts = Vec::new();
    for m in &methods {
        eprintln!("lb-pps: setting up {m}");
        duts.push(setup_dut(&mut lab, m)?);
    }

    // The generator thread lives in the generator namespace, on one CPU.
    let (flow_rates, duts) = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<(Vec<FlowRates>, Vec<Dut>)> {
            enter_ns(&gen_ns)?;
            lb_testkit::pin_to_current_cpu()?;
            let mut gen = Gen::new(&duts)?;
            // Calibration: frames per `seconds` on the first method.
            let (t, _) = gen.burst(&duts[0], 200_000, flows)?;
            let per_run = ((200_000.0 / t) * seconds).clamp(100_000.0, 50_000_000.0) as u32;
            // Warm-up: every flow known to every method.
            for d in &duts {
                gen.burst(d, flows * 4, flows)?;
            }
            for r in 0..rounds {
                eprintln!(
                    "lb-pps: round {}/{rounds} ({per_run} frames per method)",
                    r + 1
                );
                for d in duts.iter_mut() {
                    let (secs, back) = gen.burst(d, per_run, flows)?;
                    d.rates.push(back as f64 / secs);
                    d.delivered.push(back as f64 / per_run as f64);
                }
            }
            // Rate versus tracked flows (lb DR), every flow created first;
            // the reflector alongside shows what more flows cost the
            // generator itself (beyond 60,000 flows it also rewrites the
            // source address and the IPv4 checksum).
            let mut flow_rates = Vec::new();
            if scaling {
                for name in ["floor", "dr"] {
                    let Some(d) = duts.iter().find(|d| d.name == name) else {
                        continue;
                    };
                    for n in FLOW_COUNTS {
                        eprintln!("lb-pps: {name} with {n} flows");
                        gen.burst(d, n.max(1000), n)?;
                        let mut v = Vec::new();
                        for _ in 0..rounds {
                            let (secs, back) = gen.burst(d, per_run, n)?;
                            v.push(back as f64 / secs);
                        }
                        flow_rates.push((name, n, v));
                    }
                }
            }
            Ok((flow_rates, duts))
        })
        .join()
        .map_err(|_| anyhow!("generator thread panicked"))?
    })?;

    let floor = duts
        .iter()
        .find(|d| d.name == "floor")
        .map(|d| median(&d.rates));
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| method | Mpps (median) | min–max | frames back | × floor |\n|---|---:|---:|---:|---:|"
    );
    for d in duts.iter().filter(|d| !MANY.contains(&d.name)) {
        let m = median(&d.rates);
        let lo = d.rates.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = d.rates.iter().cloned().fold(0.0, f64::max);
        let ratio = floor.map(|f| format!("{:.2}", m / f)).unwrap_or("—".into());
        let label = match d.name {
            "floor" => "XDP_TX reflector (floor)",
            "dr" => "lb DR",
            "nat" => "lb NAT",
            "tun" => "lb TUN",
            "ipvs-dr" => "ipvs DR",
            "ipvs-nat" => "ipvs NAT",
            _ => "nftables DNAT + conntrack",
        };
        let _ = writeln!(
            md,
            "| {label} | {:.3} | {:.3}–{:.3} | {:.1}% | {ratio} |",
            m / 1e6,
            lo / 1e6,
            hi / 1e6,
            median(&d.delivered) * 100.0
        );
    }
    // A method that returned few frames: show why (its data-plane counters).
    for d in &duts {
        if median(&d.delivered) < 0.5 && matches!(d.name, "dr" | "nat" | "tun") {
            let bpffs = lab.bpffs_of(d.name);
            let c = lab
                .lb(&["counters", "--bpffs", &bpffs.to_string_lossy()])
                .unwrap_or_else(|e| e.to_string());
            eprintln!(
                "lb-pps: {} returned {:.1}% of the frames; its counters:\n{c}",
                d.name,
                median(&d.delivered) * 100.0
            );
        }
    }
    if scaling {
        let _ = writeln!(
            md,
            "\n### Versus flows (lb DR tracks each; the reflector shows the generator's own cost)\n\n\
             | flows | reflector Mpps | lb DR Mpps (median) | lb DR min–max | × reflector |\n|---:|---:|---:|---:|---:|"
        );
        for n in FLOW_COUNTS {
            let of = |name: &str| {
                flow_rates
                    .iter()
                    .find(|(m, k, _)| *m == name && *k == n)
                    .map(|(_, _, v)| v.clone())
            };
            let (Some(f), Some(v)) = (of("floor"), of("dr")) else {
                continue;
            };
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            let _ = writeln!(
                md,
                "| {n} | {:.3} | {:.3} | {:.3}–{:.3} | {:.2} |",
                median(&f) / 1e6,
                median(&v) / 1e6,
                lo / 1e6,
                hi / 1e6,
                median(&v) / median(&f)
            );
        }
        let _ = writeln!(
            md,
            "\n### lb DR versus reals\n\n| reals | Mpps (median) | min–max |\n|---:|---:|---:|"
        );
        for d in duts.iter().filter(|d| d.name.starts_with("dr")) {
            let n = lb_kind(d.name).map(|k| k.1).unwrap_or(0);
            let lo = d.rates.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = d.rates.iter().cloned().fold(0.0, f64::max);
            let _ = writeln!(
                md,
                "| {n} | {:.3} | {:.3}–{:.3} |",
                median(&d.rates) / 1e6,
                lo / 1e6,
                hi / 1e6
            );
        }
    }
    print!("{md}");
    if let Some(p) = out {
        std::fs::write(p, &md)?;
    }
    if let Some(p) = json {
        let methods: Vec<_> = duts
            .iter()
            .filter(|d| !MANY.contains(&d.name))
            .map(|d| {
                serde_json::json!({
                    "method": d.name,
                    "pps": d.rates,
                    "median_pps": median(&d.rates),
                    "delivered": d.delivered,
                })
            })
            .collect();
        let flows_doc: Vec<_> = flow_rates
            .iter()
            .map(|(m, n, v)| {
                serde_json::json!({"method": m, "flows": n, "pps": v, "median_pps": median(v)})
            })
            .collect();
        let reals_doc: Vec<_> = duts
            .iter()
            .filter(|d| d.name.starts_with("dr"))
            .map(|d| {
                serde_json::json!({
                    "reals": lb_kind(d.name).map(|k| k.1).unwrap_or(0),
                    "pps": d.rates,
                    "median_pps": median(&d.rates),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "flows_scaling": flows_doc,
            "reals_scaling": reals_doc,
            "frame_bytes": GEN_FRAME_LEN,
            "flows": flows,
            "seconds": seconds,
            "rounds": rounds,
            "methods": methods,
        });
        std::fs::write(p, serde_json::to_string_pretty(&doc)?)?;
    }
    drop(lab);
    Ok(())
}
