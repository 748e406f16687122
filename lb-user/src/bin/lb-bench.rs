//! Per-packet cost of the data plane through BPF_PROG_TEST_RUN with
//! `repeat`, next to an XDP_TX-only reference program in the same run.
//! `cargo xtask bench` builds and runs this; it prints a Markdown table.
//!
//! Usage: lb-bench [--repeat N] [--rounds N] [--out FILE.md]
use std::{fmt::Write as _, path::PathBuf};

use anyhow::{bail, Context as _};
use lb_common::Timeouts;
use lb_user::testing::*;

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
}

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
        "virtual_server {VIP} 80 {{\n lb_algo {algo}\n lb_kind {kind}\n \
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
    let nat_reply = tcp(client_mac_in, "10.1.0.11", 8080, "192.0.2.7", 40000, Flags::Ack, b"");
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
        },
        case("non-VIP pass", "rr", "DR", &other, false, XDP_PASS),
        case("DR established flow", "rr", "DR", &ack, false, XDP_TX),
        case("DR new flow, rr", "rr", "DR", &syn, true, XDP_TX),
        case("DR new flow, wrr", "wrr", "DR", &syn, true, XDP_TX),
        case("DR new flow, wlc (2 reals)", "wlc", "DR", &syn, true, XDP_TX),
        case("DR new flow, sh", "sh", "DR", &syn, true, XDP_TX),
        case("DR new flow, mh", "mh", "DR", &syn, true, XDP_TX),
        case("NAT established flow (client → real)", "rr", "NAT", &ack, false, XDP_REDIRECT),
        Case {
            prime: Some(ack.clone()),
            ..case("NAT reply (real → client)", "rr", "NAT1", &nat_reply, false, XDP_TX)
        },
        case("NAT new flow, rr", "rr", "NAT", &syn, true, XDP_REDIRECT),
        case("TUN established flow", "rr", "TUN", &ack, false, XDP_REDIRECT),
        case("TUN new flow, rr", "rr", "TUN", &syn, true, XDP_REDIRECT),
    ];

    // The harness enters a private network namespace on this thread.
    let single: Vec<bool> = cases.iter().map(|c| c.single).collect();
    let handle = std::thread::spawn(move || -> anyhow::Result<Vec<(String, Vec<f64>)>> {
        let mut h = Harness::new(1 << 16)?;
        h.neighbour("10.0.0.11", MAC1, false);
        h.neighbour("10.0.0.12", MAC2, false);
        h.routed(MAC1, MAC2)?;
        let mut results: Vec<(String, Vec<f64>)> = cases
            .iter()
            .map(|c| (c.name.to_string(), Vec::new()))
            .collect();
        for round in 0..rounds {
            eprintln!("round {}/{rounds}", round + 1);
            for (i, c) in cases.iter().enumerate() {
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
                let before = h.dp.global_sum()?.new_flows;
                let runs = if c.single { singles } else { repeat };
                let ns = if c.single {
                    let mut total = 0.0;
                    for _ in 0..singles {
                        total += h.run_prog(c.prog, &c.pkt, 1).with_context(|| c.name)?.2;
                    }
                    total / f64::from(singles)
                } else {
                    h.run_prog(c.prog, &c.pkt, repeat).with_context(|| c.name)?.2
                };
                let scheduled = h.dp.global_sum()?.new_flows - before;
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
        Ok(results)
    });
    let results = handle
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
    }
    print!("{md}");
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
