//! Per-packet cost of the data plane through BPF_PROG_TEST_RUN with
//! `repeat`, next to an XDP_TX-only reference program in the same run, and
//! DR new and established flows with connection sync on (`sync on: ` paths,
//! the sync ring drained every 10 ms by a thread meanwhile) next to off.
//! `cargo xtask bench` builds and runs this; it prints Markdown tables.
//!
//! Usage: lb-bench [--repeat N] [--rounds N] [--out FILE.md]
//!        lb-bench --loop PATH-NAME [--seconds S] [--repeat N]   (for `perf record`)
use std::{fmt::Write as _, path::PathBuf};

use anyhow::{bail, Context as _};
use lb_common::Timeouts;
use lb_testkit::*;

const VIP: &str = "10.0.0.100";
const MAC1: [u8; 6] = [0x02, 0x11, 0, 0, 0, 0x11];
const MAC2: [u8; 6] = [0x02, 0x12, 0, 0, 0, 0x12];

struct Case {
    name: &'static str,
    prog: &'static str,
    algo: &'static str,
    /// lb_kind: DR, NAT or TUN.
    kind: &'static str,
    /// Sent once before measuring (creates the flow a reply belongs to).
    prime: Option<Vec<u8>>,
    pkt: Vec<u8>,
    /// Expire entries at once, so every repetition schedules a new flow.
    new_flow: bool,
    /// The program rewrites the packet's addresses or headers: a kernel
    /// repetition would run on its own output, so each run is a separate
    /// BPF_PROG_TEST_RUN with a fresh packet (kernel-timed, averaged).
    single: bool,
    verdict: u32,
    /// Connection sync on (`FLAG_SYNC`): every new flow and state change
    /// writes a record into the sync ring, which a thread drains every
    /// `sync::POLL` (10 ms) meanwhile, as the agent does.
    sync: bool,
}

/// Prefix of the paths measured with connection sync on; each is compared
/// with the path of the same name without it.
const SYNC_ON: &str = "sync on: ";

fn conf(algo: &str, kind: &str) -> String {
    // DR reals are resolved through the harness's neighbour list; NAT and
    // TUN reals sit behind interface b, routed by the FIB.
    // "NAT1": NAT with one real, so that the measured reply's flow is known.
    let (net, port, kind, second) = match kind {
        "DR" => ("10.0.0", 80, kind, true),
        "NAT" => ("10.1.0", 8080, kind, true),
        "NAT1" => ("10.1.0", 8080, "NAT", false),
        _ => ("10.1.0", 80, kind, true),
    };
    let mut c = format!(
        "virtual_server {VIP} 80 {{\n protocol TCP\n lb_algo {algo}\n lb_kind {kind}\n \
         real_server {net}.11 {port} {{ weight 3 }}\n"
    );
    if second {
        c += &format!(" real_server {net}.12 {port} {{ weight 1 }}\n");
    }
    c + "}\n"
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let repeat: u32 = get("--repeat")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let rounds: usize = get("--rounds").map(|s| s.parse()).transpose()?.unwrap_or(5);
    let out: Option<PathBuf> = get("--out").map(PathBuf::from);
    let json: Option<PathBuf> = get("--json").map(PathBuf::from);
    // Single-run cases: this many separate test runs per round.
    let singles: u32 = (repeat / 50).clamp(1000, 20_000);

    let syn = tcp(Eth::inbound(), "192.0.2.7", 40001, VIP, 80, Flags::Syn, b"");
    let ack = tcp(Eth::inbound(), "192.0.2.7", 40000, VIP, 80, Flags::Ack, b"");
    let other = tcp(
        Eth::inbound(),
        "192.0.2.7",
        40000,
        "10.0.0.1",
        80,
        Flags::Syn,
        b"",
    );
    let client_mac_in = Eth {
        src: MAC1,
        dst: MAC_A,
        vlan: None,
    };
    // The NAT real's reply (arrives on a here; the cost is the same on b).
    let nat_reply = tcp(
        client_mac_in,
        "10.1.0.11",
        8080,
        "192.0.2.7",
        40000,
        Flags::Ack,
        b"",
    );
    let case = |name, algo, kind: &'static str, pkt: &Vec<u8>, new_flow, verdict| Case {
        name,
        prog: "lb_xdp",
        algo,
        kind,
        prime: None,
        pkt: pkt.clone(),
        new_flow,
        single: kind != "DR",
        verdict,
        sync: false,
    };
    let cases = [
        Case {
            name: "XDP_TX reference (swap MACs)",
            prog: REFERENCE_PROGRAM,
            algo: "rr",
            kind: "DR",
            prime: None,
            pkt: syn.clone(),
            new_flow: false,
            single: false,
            verdict: XDP_TX,
            sync: false,
        },
        Case {
            name: "XDP_TX reference, single runs",
            prog: REFERENCE_PROGRAM,
            algo: "rr",
            kind: "DR",
            prime: None,
            pkt: syn.clone(),
            new_flow: false,
            single: true,
            verdict: XDP_TX,
            sync: false,
        },
        case("non-VIP pass", "rr", "DR", &other, false, XDP_PASS),
        case("DR established flow", "rr", "DR", &ack, false, XDP_TX),
        Case {
            sync: true,
            ..case(
                "sync on: DR established flow",
                "rr",
                "DR",
                &ack,
                false,
                XDP_TX,
            )
        },
        case("DR new flow, rr", "rr", "DR", &syn, true, XDP_TX),
        Case {
            sync: true,
            ..case("sync on: DR new flow, rr", "rr", "DR", &syn, true, XDP_TX)
        },
        case("DR new flow, wrr", "wrr", "DR", &syn, true, XDP_TX),
        case(
            "DR new flow, wlc (2 reals)",
            "wlc",
            "DR",
            &syn,
            true,
            XDP_TX,
        ),
        case("DR new flow, sh", "sh", "DR", &syn, true, XDP_TX),
        case("DR new flow, mh", "mh", "DR", &syn, true, XDP_TX),
        case(
            "NAT established flow (client → real)",
            "rr",
            "NAT",
            &ack,
            false,
            XDP_REDIRECT,
        ),
        Case {
            prime: Some(ack.clone()),
            ..case(
                "NAT reply (real → client)",
                "rr",
                "NAT1",
                &nat_reply,
                false,
                XDP_TX,
            )
        },
        case("NAT new flow, rr", "rr", "NAT", &syn, true, XDP_REDIRECT),
        case(
            "TUN established flow",
            "rr",
            "TUN",
            &ack,
            false,
            XDP_REDIRECT,
        ),
        case("TUN new flow, rr", "rr", "TUN", &syn, true, XDP_REDIRECT),
    ];

    // Profiling: one path, run for a while (`perf record` meanwhile).
    if let Some(name) = get("--loop") {
        let seconds: f64 = get("--seconds")
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(5.0);
        // The path of that exact name, else the first whose name contains it.
        let pos = cases
            .iter()
            .position(|c| c.name == name)
            .or_else(|| cases.iter().position(|c| c.name.contains(name.as_str())))
            .with_context(|| format!("--loop {name}: no such path"))?;
        let c = cases.into_iter().nth(pos).expect("position in range");
        return std::thread::spawn(move || run_loop(&c, repeat, seconds))
            .join()
            .map_err(|_| anyhow::anyhow!("loop thread panicked"))?;
    }
    // The harness enters a private network namespace on this thread.
    let single: Vec<bool> = cases.iter().map(|c| c.single).collect();
    let handle = std::thread::spawn(move || -> anyhow::Result<Measured> {
        let mut h = Harness::new(1 << 16)?;
        h.neighbour("10.0.0.11", MAC1, false);
        h.neighbour("10.0.0.12", MAC2, false);
        h.routed(MAC1, MAC2)?;
        let mut results: Vec<(String, Vec<f64>)> = cases
            .iter()
            .map(|c| (c.name.to_string(), Vec::new()))
            .collect();
        let mut synced = vec![SyncCount::default(); cases.len()];
        for round in 0..rounds {
            eprintln!("round {}/{rounds}", round + 1);
            for (i, c) in cases.iter().enumerate() {
                h.set_sync(c.sync);
                h.apply(&conf(c.algo, c.kind))?;
                if let Some(p) = &c.prime {
                    h.run_prog(c.prog, p, 1)?;
                }
                let t = if c.new_flow {
                    Timeouts {
                        tcp_syn_s: 0,
                        ..Default::default()
                    }
                } else {
                    Timeouts::default()
                };
                h.dp.set_timeouts(t)?;
                // Prime (creates the flow for the established case) and check the path.
                let (v, _, _) = h.run_prog(c.prog, &c.pkt, 1)?;
                if v != c.verdict {
                    bail!(
                        "{}: verdict {} instead of {}",
                        c.name,
                        verdict_name(v),
                        verdict_name(c.verdict)
                    );
                }
                let before = h.dp.global_sum()?;
                let runs = if c.single { singles } else { repeat };
                // Records of the priming runs are not the measurement's.
                h.sync_events()?;
                let drain = if c.sync {
                    Some(h.start_sync_drain(lb_user::sync::POLL)?)
                } else {
                    None
                };
                let ns = if c.single {
                    let mut total = 0.0;
                    for _ in 0..singles {
                        total += h.run_prog(c.prog, &c.pkt, 1).with_context(|| c.name)?.2;
                    }
                    total / f64::from(singles)
                } else {
                    timed(&h, c.prog, &c.pkt, repeat).with_context(|| c.name)?.2
                };
                let read = match drain {
                    Some(d) => h.stop_sync_drain(d)?,
                    None => h.sync_events()?.len() as u64,
                };
                let after = h.dp.global_sum()?;
                let scheduled = after.new_flows - before.new_flows;
                let lost = after.sync_lost - before.sync_lost;
                // Guard: with sync on, one record per new flow (read or
                // lost) and none for an established flow; none with it off.
                let want = if c.sync && c.new_flow { scheduled } else { 0 };
                if read + lost != want {
                    bail!(
                        "{}: {read} sync records read and {lost} lost in {runs} runs, expected {want}",
                        c.name
                    );
                }
                synced[i].read += read;
                synced[i].lost += lost;
                // Guard: the new-flow cases must schedule every repetition,
                // the others none.
                let want = if c.new_flow { u64::from(runs) } else { 0 };
                if scheduled != want {
                    bail!(
                        "{}: {scheduled} new flows in {runs} runs, expected {want}",
                        c.name
                    );
                }
                results[i].1.push(ns);
            }
        }
        let g = h.dp.global_sum()?;
        if g.aborted != 0 {
            bail!("XDP_ABORTED seen during the benchmark");
        }
        Ok((results, synced))
    });
    let (results, synced) = handle
        .join()
        .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))??;

    let reference = median(&mut results[0].1.clone());
    let reference_single = median(&mut results[1].1.clone());
    let mut md = String::new();
    writeln!(
        md,
        "| path | ns/packet (median) | min–max | ratio to XDP_TX reference |"
    )?;
    writeln!(md, "|---|---:|---:|---:|")?;
    let mut paths = Vec::new();
    for (i, (name, v)) in results.iter().enumerate() {
        let mut s = v.clone();
        let m = median(&mut s);
        let reference = if single[i] {
            reference_single
        } else {
            reference
        };
        writeln!(
            md,
            "| {name} | {m:.1} | {:.1}–{:.1} | {:.2}× |",
            s[0],
            s[s.len() - 1],
            m / reference
        )?;
        paths.push(serde_json::json!({
            "name": name,
            "single_runs": single[i],
            "ns": v,
            "median": m,
            "ratio": m / reference,
        }));
    }
    let mut sync_rows = Vec::new();
    md.push_str(
        "\n### Connection sync on / off (DR; a thread drains the sync ring every 10 ms, as the agent does)\n\n\
         | path | sync off, ns | sync on, ns | on / off | records read | records lost |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for (i, (name, on)) in results.iter().enumerate() {
        let Some(base) = name.strip_prefix(SYNC_ON) else {
            continue;
        };
        let off = results
            .iter()
            .find(|(n, _)| n == base)
            .with_context(|| format!("{name}: no path {base} to compare with"))?;
        let (off_m, on_m) = (median(&mut off.1.clone()), median(&mut on.clone()));
        let SyncCount { read, lost } = synced[i];
        writeln!(
            md,
            "| {base} | {off_m:.1} | {on_m:.1} | {:.2}× | {read} | {lost} |",
            on_m / off_m
        )?;
        sync_rows.push(serde_json::json!({
            "path": base,
            "off": off_m,
            "on": on_m,
            "ratio": on_m / off_m,
            "records_read": read,
            "records_lost": lost,
        }));
    }
    let rows = scaling(repeat, rounds)?;
    let reals = reals_scaling(repeat, rounds)?;
    let maglev = maglev_build(rounds)?;
    md.push_str(
        "\n### Cost versus tracked flows (DR, conntrack 2,097,152 entries)\n\n\
         | tracked flows | established flow, ns | new flow, ns |\n|---:|---:|---:|\n",
    );
    for (n, e, f) in &rows {
        writeln!(md, "| {n} | {e:.1} | {f:.1} |")?;
    }
    md.push_str(
        "\n### Cost versus the number of reals (DR)\n\n\
         | reals | established flow, ns | new flow rr, ns | new flow mh, ns | Maglev table build, ms |\n\
         |---:|---:|---:|---:|---:|\n",
    );
    for ((n, e, rr, mh), (_, ms)) in reals.iter().zip(&maglev) {
        writeln!(md, "| {n} | {e:.1} | {rr:.1} | {mh:.1} | {ms:.2} |")?;
    }
    print!("{md}");
    if let Some(path) = &json {
        let scaling: Vec<_> = rows
            .iter()
            .map(|(n, e, f)| serde_json::json!({"flows": n, "established": e, "new": f}))
            .collect();
        let reals: Vec<_> = reals
            .iter()
            .zip(&maglev)
            .map(|((n, e, rr, mh), (_, ms))| {
                serde_json::json!({"reals": n, "established": e, "new_rr": rr, "new_mh": mh, "maglev_build_ms": ms})
            })
            .collect();
        let doc = serde_json::json!({
            "repeat": repeat,
            "rounds": rounds,
            "paths": paths,
            "sync": sync_rows,
            "scaling": scaling,
            "reals": reals,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    if let Some(path) = out {
        let head = format!(
            "BPF_PROG_TEST_RUN, {repeat} repetitions per run, {rounds} interleaved rounds; \
             kernel-reported average per repetition. Paths that rewrite addresses or \
             headers (NAT, TUN) cannot be repeated on their own output: they are timed \
             as {singles} separate single runs (the kernel's time per run, which includes \
             its timer reads) and compared with the XDP_TX reference timed the same way.\n\n"
        );
        std::fs::write(&path, format!("{head}{md}"))?;
    }
    Ok(())
}

/// Each path's name and ns per packet of each round, and its sync records.
type Measured = (Vec<(String, Vec<f64>)>, Vec<SyncCount>);

/// Sync records of a path over all rounds: read from the ring by the drain
/// thread, and lost (the ring was full: `sync_lost`).
#[derive(Clone, Copy, Default)]
struct SyncCount {
    read: u64,
    lost: u64,
}

/// Runs path `c` for `seconds` (BPF_PROG_TEST_RUN with `repeat`, or single
/// runs for the paths that rewrite their own input), then prints the runs
/// and the kernel's average ns per run: the workload `perf record` samples
/// to split a path's cost between the program's functions and the map
/// helpers (README: Performance, where the nanoseconds go). A `sync on: `
/// path drains the sync ring from a thread meanwhile and prints the records
/// read and lost.
fn run_loop(c: &Case, repeat: u32, seconds: f64) -> anyhow::Result<()> {
    let mut h = Harness::new(1 << 16)?;
    h.neighbour("10.0.0.11", MAC1, false);
    h.neighbour("10.0.0.12", MAC2, false);
    h.routed(MAC1, MAC2)?;
    h.set_sync(c.sync);
    h.apply(&conf(c.algo, c.kind))?;
    if let Some(p) = &c.prime {
        h.run_prog(c.prog, p, 1)?;
    }
    if c.new_flow {
        h.dp.set_timeouts(Timeouts {
            tcp_syn_s: 0,
            ..Default::default()
        })?;
    }
    let (v, _, _) = h.run_prog(c.prog, &c.pkt, 1)?;
    if v != c.verdict {
        bail!("{}: verdict {}", c.name, verdict_name(v));
    }
    h.sync_events()?;
    let drain = if c.sync {
        Some(h.start_sync_drain(lb_user::sync::POLL)?)
    } else {
        None
    };
    let lost_before = h.dp.global_sum()?.sync_lost;
    let start = std::time::Instant::now();
    let (mut runs, mut ns) = (0u64, 0.0);
    let per = if c.single { 1 } else { repeat.min(100_000) };
    while start.elapsed().as_secs_f64() < seconds {
        let r = run_xdp_prog(&h, c.prog, &c.pkt, per)?;
        runs += u64::from(per);
        ns += r * f64::from(per);
    }
    let sync = match drain {
        Some(d) => format!(
            "; sync records read {}, lost {}",
            h.stop_sync_drain(d)?,
            h.dp.global_sum()?.sync_lost - lost_before
        ),
        None => String::new(),
    };
    println!(
        "{}: {runs} runs, {:.1} ns/run{sync}",
        c.name,
        ns / runs as f64
    );
    Ok(())
}

/// BPF_PROG_TEST_RUN without the counters' check (less user-space time
/// in a profile): the kernel's average ns per repetition, in chunks as
/// [`timed`].
fn run_xdp_prog(h: &Harness, prog: &str, pkt: &[u8], repeat: u32) -> anyhow::Result<f64> {
    let pkt = ttl_max(pkt);
    let (mut left, mut total) = (repeat.max(1), 0.0);
    while left > 0 {
        let n = left.min(CHUNK);
        total += h.run_unchecked(prog, &pkt, n)?.2 * f64::from(n);
        left -= n;
    }
    Ok(total / f64::from(repeat.max(1)))
}

/// Repetitions per BPF_PROG_TEST_RUN call. The kernel runs the program on
/// the same buffer each repetition, so the balancer's TTL decrement (every
/// method decrements it, as ipvs does) would bring a repeated packet to
/// TTL 1 and the time-exceeded path after 63 runs: packets start at TTL
/// 255 ([`ttl_max`]) and no call repeats more than this.
const CHUNK: u32 = 250;

/// `pkt` with TTL / hop limit 255 (IPv4 header checksum recomputed).
fn ttl_max(pkt: &[u8]) -> Vec<u8> {
    let mut p = pkt.to_vec();
    set_ttl(&mut p, 255);
    p
}

/// `Harness::run_prog` for `repeat` repetitions, in calls of at most
/// [`CHUNK`] on the packet at TTL 255: (verdict of the last call, its
/// output, the mean ns per repetition).
fn timed(h: &Harness, prog: &str, pkt: &[u8], repeat: u32) -> anyhow::Result<(u32, Vec<u8>, f64)> {
    let pkt = ttl_max(pkt);
    let (mut left, mut total, mut last) = (repeat.max(1), 0.0, (0, Vec::new()));
    while left > 0 {
        let n = left.min(CHUNK);
        let (v, out, ns) = h.run_prog(prog, &pkt, n)?;
        total += ns * f64::from(n);
        last = (v, out);
        left -= n;
    }
    Ok((last.0, last.1, total / f64::from(repeat.max(1))))
}

/// Cost versus tracked flows: the table is filled with N established flows
/// (written through the map, as a restarted agent finds them), then an
/// established flow and new flows are timed. Flat is the goal (O(1) hash
/// lookups); a full table makes every new flow evict its least recently
/// used entry.
fn scaling(repeat: u32, rounds: usize) -> anyhow::Result<Vec<(u32, f64, f64)>> {
    const SIZES: [u32; 4] = [1, 1_000, 100_000, 1_000_000];
    let handle = std::thread::spawn(move || -> anyhow::Result<Vec<(u32, f64, f64)>> {
        // Per-CPU LRU lists split the table between CPUs, and the filling
        // runs on one: twice the entries keep 1M flows on 2 CPUs.
        let mut h = Harness::new(1 << 21)?;
        h.neighbour("10.0.0.11", MAC1, false);
        h.neighbour("10.0.0.12", MAC2, false);
        h.apply(&conf("rr", "DR"))?;
        let ack = tcp(Eth::inbound(), "192.0.2.7", 40000, VIP, 80, Flags::Ack, b"");
        let svc = lb_user::config::ServiceAddr {
            addr: VIP.parse()?,
            port: 80,
            proto: lb_user::config::Proto::Tcp,
        };
        let real_id = h
            .tables
            .real_id(&svc, "10.0.0.11".parse()?, 80)
            .context("real id")?;
        let gen = h.dp.reals.get(&real_id, 0)?.gen;
        let (vip, family) = lb_user::state::addr_words(VIP.parse()?);
        let now = lb_user::list::monotonic_ns();
        let mut filled = 0u32;
        let mut out = Vec::new();
        for n in SIZES {
            eprintln!("scaling: {n} tracked flows");
            let key_of = |i: u32| {
                // Clients 100.64.0.0/10 (never the measured client), port 1000+.
                let src = u32::from_be_bytes([
                    100,
                    64 + (i >> 22) as u8 % 64,
                    (i >> 14) as u8,
                    (i >> 6) as u8,
                ]);
                lb_common::FlowKey {
                    src: [src.to_be(), 0, 0, 0],
                    dst: vip,
                    sport_be: (1000 + (i & 63) as u16).to_be(),
                    dport_be: 80u16.to_be(),
                    proto: lb_common::PROTO_TCP,
                    family,
                    _pad: [0; 2],
                }
            };
            while filled < n {
                let key = key_of(filled);
                let conn = lb_common::Conn {
                    real_id,
                    real_gen: gen,
                    svc_id: 0,
                    state: lb_common::CT_ESTABLISHED,
                    last_ns: now,
                };
                h.dp.conntrack.insert(key, conn, 0)?;
                filled += 1;
            }
            // Guard: nothing was evicted while filling.
            if h.dp.conntrack.get(&key_of(0), 0).is_err() {
                bail!("the first tracked flow was evicted while filling {n} flows");
            }
            let mut est = Vec::new();
            let mut new = Vec::new();
            for _ in 0..rounds {
                h.dp.set_timeouts(Timeouts::default())?;
                h.run_prog("lb_xdp", &ack, 1)?;
                est.push(timed(&h, "lb_xdp", &ack, repeat)?.2);
                // New flows: the measured SYN expires at once (SYN timeout 0),
                // so each repetition inserts; the filled flows stay established.
                h.dp.set_timeouts(Timeouts {
                    tcp_syn_s: 0,
                    ..Default::default()
                })?;
                let syn = tcp(Eth::inbound(), "192.0.2.7", 40001, VIP, 80, Flags::Syn, b"");
                new.push(timed(&h, "lb_xdp", &syn, repeat / 4)?.2);
            }
            out.push((n, median(&mut est), median(&mut new)));
        }
        Ok(out)
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("scaling thread panicked"))?
}

const REAL_COUNTS: [u32; 3] = [2, 100, 1000];

/// Address of real `i` of a large DR service (10.0.0.0/16 is the harness's).
fn many_real(i: u32) -> String {
    format!("10.0.{}.{}", 1 + i / 250, 1 + i % 250)
}

fn many_conf(algo: &str, n: u32) -> String {
    let mut c =
        format!("virtual_server {VIP} 80 {{\n protocol TCP\n lb_algo {algo}\n lb_kind DR\n");
    for i in 0..n {
        c += &format!(" real_server {} 80 {{ weight 1 }}\n", many_real(i));
    }
    c + "}\n"
}

/// Per-packet cost with 2, 100 and 1,000 reals: an established flow, and
/// new flows with rr and mh (both O(1) in the number of reals).
fn reals_scaling(repeat: u32, rounds: usize) -> anyhow::Result<Vec<(u32, f64, f64, f64)>> {
    let handle = std::thread::spawn(move || -> anyhow::Result<Vec<(u32, f64, f64, f64)>> {
        let mut h = Harness::new(1 << 16)?;
        for i in 0..*REAL_COUNTS.iter().max().unwrap() {
            h.neighbour(&many_real(i), MAC1, false);
        }
        let ack = tcp(Eth::inbound(), "192.0.2.7", 40000, VIP, 80, Flags::Ack, b"");
        let syn = tcp(Eth::inbound(), "192.0.2.7", 40001, VIP, 80, Flags::Syn, b"");
        let mut out = Vec::new();
        for n in REAL_COUNTS {
            eprintln!("reals: {n}");
            let (mut est, mut rr, mut mh) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                for (algo, into) in [("rr", &mut rr), ("mh", &mut mh)] {
                    h.apply(&many_conf(algo, n))?;
                    h.dp.set_timeouts(Timeouts {
                        tcp_syn_s: 0,
                        ..Default::default()
                    })?;
                    let before = h.dp.global_sum()?.new_flows;
                    into.push(timed(&h, "lb_xdp", &syn, repeat / 4)?.2);
                    if h.dp.global_sum()?.new_flows - before != u64::from(repeat / 4) {
                        bail!("{algo} with {n} reals: not every repetition scheduled");
                    }
                }
                h.dp.set_timeouts(Timeouts::default())?;
                h.run_prog("lb_xdp", &ack, 1)?;
                est.push(timed(&h, "lb_xdp", &ack, repeat)?.2);
            }
            out.push((n, median(&mut est), median(&mut rr), median(&mut mh)));
        }
        Ok(out)
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("reals thread panicked"))?
}

/// Time to build a Maglev table (65,537 slots) for 2, 100 and 1,000 reals,
/// as the agent does on every change of a mh service.
fn maglev_build(rounds: usize) -> anyhow::Result<Vec<(u32, f64)>> {
    let mut out = Vec::new();
    for n in REAL_COUNTS {
        let members: Vec<lb_user::sched::Member> = (0..n)
            .map(|i| lb_user::sched::Member {
                id: i,
                weight: 1,
                addr: many_real(i).parse().expect("an address"),
                port: 80,
            })
            .collect();
        let mut t = Vec::new();
        for _ in 0..rounds.max(3) {
            let start = std::time::Instant::now();
            let table = lb_user::sched::maglev_table(&members, lb_common::MH_TABLE_SIZE as usize);
            t.push(start.elapsed().as_secs_f64() * 1000.0);
            if table.len() != lb_common::MH_TABLE_SIZE as usize {
                bail!("Maglev table of {} slots", table.len());
            }
        }
        out.push((n, median(&mut t)));
    }
    Ok(out)
}
