//! Connection-sync events (issue 16) through BPF_PROG_TEST_RUN: with
//! `FLAG_SYNC` on, the data plane writes one [`SyncEvent`] into the ring
//! `LB_SYNC_EVENTS` for each new flow (its first state) and each TCP state
//! change, none for a packet that changes nothing, none with the flag off;
//! the packet is forwarded the same either way, and a full ring counts
//! `sync_lost` and still forwards.
//!
//! Each case runs the same packets through two harnesses, one with sync on
//! and one with it off (each on its own thread: a harness owns its thread's
//! network namespace), and compares verdicts, output bytes, global counters
//! and the records read back from the ring. The maps are filled through the
//! agent's own code, which also writes `FLAG_SYNC`. Needs root (BPF).
use lb_common::{
    FlowKey, GlobalStats, SyncEvent, Timeouts, CT_CLOSE, CT_ESTABLISHED, CT_FIN_WAIT, CT_SYN_RECV,
    CT_UDP, PROTO_TCP, PROTO_UDP, SYNC_RING_BYTES,
};
use lb_testkit::*;
use lb_user::state::addr_words;

const MAC1: [u8; 6] = [0x02, 0x11, 0, 0, 0, 0x11];
const MAC2: [u8; 6] = [0x02, 0x12, 0, 0, 0, 0x12];
/// The client's source port of every case.
const SPORT: u16 = 40000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Dr,
    Nat,
    Tun,
}

/// One forwarding method, address family and protocol.
#[derive(Clone, Copy, Debug)]
struct Case {
    method: Method,
    v6: bool,
    tcp: bool,
}

impl Case {
    fn vip(&self) -> &'static str {
        if self.v6 {
            "2001:db8::100"
        } else {
            "10.0.0.100"
        }
    }

    /// On interface a's subnet ([`Harness::routed`]): NAT replies go back to it.
    fn client(&self) -> &'static str {
        if self.v6 {
            "2001:db8:c::7"
        } else {
            "192.0.2.7"
        }
    }

    /// DR reals share the VIP's subnet and are found through the harness's
    /// neighbour list; NAT and TUN reals sit behind interface b (the FIB).
    fn real(&self) -> &'static str {
        match (self.method, self.v6) {
            (Method::Dr, false) => "10.0.0.11",
            (Method::Dr, true) => "2001:db8::11",
            (_, false) => "10.1.0.11",
            (_, true) => "2001:db8:1::11",
        }
    }

    fn vport(&self) -> u16 {
        if self.tcp {
            80
        } else {
            53
        }
    }

    /// NAT translates the port too; DR and TUN keep it.
    fn rport(&self) -> u16 {
        match (self.method, self.tcp) {
            (Method::Nat, true) => 8080,
            (Method::Nat, false) => 5353,
            _ => self.vport(),
        }
    }

    fn proto(&self) -> u8 {
        if self.tcp {
            PROTO_TCP
        } else {
            PROTO_UDP
        }
    }

    /// The service of this case with its one real.
    fn service(&self) -> String {
        let kind = match self.method {
            Method::Dr => "DR",
            Method::Nat => "NAT",
            Method::Tun => "TUN",
        };
        format!(
            "virtual_server {} {} {{\n lb_algo rr\n lb_kind {kind}\n protocol {}\n \
             real_server {} {} {{ weight 1 }}\n}}\n",
            self.vip(),
            self.vport(),
            if self.tcp { "TCP" } else { "UDP" },
            self.real(),
            self.rport()
        )
    }

    /// The TCP and the UDP service of this method and family.
    fn conf(&self) -> String {
        let (t, u) = self.both();
        t.service() + &u.service()
    }

    /// This method and family, TCP and UDP.
    fn both(&self) -> (Case, Case) {
        (
            Case { tcp: true, ..*self },
            Case {
                tcp: false,
                ..*self
            },
        )
    }

    fn harness(&self, sync: bool) -> Harness {
        let mut h = Harness::new(4096).expect("harness (needs root and a BPF-capable kernel)");
        match self.method {
            Method::Dr => h.neighbour(self.real(), MAC1, false),
            _ => h.routed(MAC1, MAC2).expect("routes"),
        }
        h.set_sync(sync);
        h.apply(&self.conf()).expect("apply");
        h
    }

    /// The verdict of a packet toward the real.
    fn verdict(&self) -> u32 {
        match self.method {
            Method::Dr => XDP_TX,
            _ => XDP_REDIRECT,
        }
    }

    /// A packet of the flow: the client's toward the VIP, or (`from_real`)
    /// the NAT real's answer arriving on interface b. `flags` `None`: UDP.
    fn packet(&self, flags: Option<Flags>, payload: &[u8], from_real: bool) -> Vec<u8> {
        let (eth, src, sport, dst, dport) = if from_real {
            let eth = Eth {
                src: MAC1,
                dst: MAC_B,
                vlan: None,
            };
            (eth, self.real(), self.rport(), self.client(), SPORT)
        } else {
            (
                Eth::inbound(),
                self.client(),
                SPORT,
                self.vip(),
                self.vport(),
            )
        };
        match flags {
            Some(f) => tcp(eth, src, sport, dst, dport, f, payload),
            None => udp(eth, src, sport, dst, dport, payload),
        }
    }

    /// What DR and NAT must emit for a client packet (`None` for TUN,
    /// whose exact frames forwarding.rs checks): DR rewrites the MACs, NAT
    /// the destination address and port, out of b; both decrement the TTL.
    fn expected(&self, flags: Option<Flags>, payload: &[u8]) -> Option<Vec<u8>> {
        let pkt = self.packet(flags, payload, false);
        match self.method {
            Method::Dr => Some(dr_rewrite(&pkt, MAC1, MAC_A)),
            Method::Nat => {
                let eth = Eth {
                    src: MAC_B,
                    dst: MAC1,
                    vlan: None,
                };
                let (c, r, rp) = (self.client(), self.real(), self.rport());
                let mut out = match flags {
                    Some(f) => tcp(eth, c, SPORT, r, rp, f, payload),
                    None => udp(eth, c, SPORT, r, rp, payload),
                };
                decrement_ttl(&mut out);
                Some(out)
            }
            Method::Tun => None,
        }
    }

    /// The packets of the case: (what, TCP flags or UDP, payload, from the
    /// real, the state the flow reports or `None`).
    fn steps(&self) -> Vec<Step> {
        let step = |what, flags, payload: &'static [u8], from_real, state| Step {
            what,
            flags,
            payload,
            from_real,
            state,
        };
        if !self.tcp {
            return vec![
                step("first datagram", None, b"query", false, Some(CT_UDP)),
                step("second datagram", None, b"query", false, None),
            ];
        }
        let mut s = vec![
            step("SYN", Some(Flags::Syn), b"", false, Some(CT_SYN_RECV)),
            step("SYN again", Some(Flags::Syn), b"", false, None),
        ];
        if self.method == Method::Nat {
            // Replies take the reverse translation, not the flow's state.
            s.push(step("real's answer", Some(Flags::Ack), b"", true, None));
        }
        s.extend([
            step(
                "ACK that establishes",
                Some(Flags::Ack),
                b"",
                false,
                Some(CT_ESTABLISHED),
            ),
            step("data", Some(Flags::Ack), b"GET /", false, None),
            step("FIN", Some(Flags::Fin), b"", false, Some(CT_FIN_WAIT)),
            step("RST", Some(Flags::Rst), b"", false, Some(CT_CLOSE)),
        ]);
        s
    }
}

struct Step {
    what: &'static str,
    flags: Option<Flags>,
    payload: &'static [u8],
    from_real: bool,
    state: Option<u32>,
}

/// What one packet did in one harness.
struct Seen {
    verdict: u32,
    out: Vec<u8>,
    events: Vec<SyncEvent>,
}

/// One case's run in a harness: each packet's result and the event a
/// report of the flow must carry but for its state (key and ids from the
/// agent's tables).
struct Run {
    seen: Vec<Seen>,
    flow: SyncEvent,
}

/// Runs the steps of the TCP and then the UDP case of `method` and
/// family in a fresh harness on its own thread; the global counters at the end.
fn run(method: Method, v6: bool, sync: bool) -> (Vec<Run>, GlobalStats) {
    std::thread::spawn(move || {
        let (t, u) = case(method, v6, true).both();
        let mut h = t.harness(sync);
        let runs = [t, u].map(|case| run_case(&mut h, case)).into();
        (runs, h.dp.global_sum().expect("counters"))
    })
    .join()
    .expect("harness thread")
}

fn run_case(h: &mut Harness, case: Case) -> Run {
    let ix = h.tables.sync_index();
    let svc = &ix.services[&(case.vip().parse().unwrap(), case.vport(), case.proto())];
    let real_id = svc.reals[&(case.real().parse().unwrap(), case.rport())];
    let (src, family) = addr_words(case.client().parse().unwrap());
    let flow = SyncEvent {
        key: FlowKey {
            src,
            dst: addr_words(case.vip().parse().unwrap()).0,
            sport_be: SPORT.to_be(),
            dport_be: case.vport().to_be(),
            proto: case.proto(),
            family,
            _pad: [0; 2],
        },
        svc_id: svc.id,
        real_id,
        real_gen: ix.reals[&real_id].gen,
        state: 0,
    };
    let mut seen = Vec::new();
    for s in case.steps() {
        let pkt = case.packet(s.flags, s.payload, s.from_real);
        let r = if s.from_real {
            h.run_on_b(&pkt)
        } else {
            h.run(&pkt)
        };
        let (verdict, out) = r.unwrap_or_else(|e| panic!("{case:?} {}: {e:#}", s.what));
        let events = h.sync_events().expect("sync ring");
        seen.push(Seen {
            verdict,
            out,
            events,
        });
    }
    Run { seen, flow }
}

/// The whole check of a method and family, TCP and UDP, sync on against
/// sync off.
fn check(method: Method, v6: bool) {
    let (on_runs, on_counters) = run(method, v6, true);
    let (off_runs, off_counters) = run(method, v6, false);
    let (t, u) = case(method, v6, true).both();
    for ((case, on), off) in [t, u].into_iter().zip(&on_runs).zip(&off_runs) {
        assert_eq!(
            on.flow, off.flow,
            "{case:?}: the same ids in both harnesses"
        );
        for ((s, a), b) in case.steps().iter().zip(&on.seen).zip(&off.seen) {
            let what = format!("{case:?} {}", s.what);
            assert_eq!(
                verdict_name(a.verdict),
                verdict_name(case.verdict()),
                "{what}: verdict"
            );
            assert_eq!(
                verdict_name(a.verdict),
                verdict_name(b.verdict),
                "{what}: verdict on / off"
            );
            assert!(
                a.out == b.out,
                "{what}: output with sync on (got) and off (want) differ\n{}",
                hex_diff(&a.out, &b.out)
            );
            if !s.from_real {
                if let Some(want) = case.expected(s.flags, s.payload) {
                    assert!(
                        a.out == want,
                        "{what}: output bytes\n{}",
                        hex_diff(&a.out, &want)
                    );
                }
            }
            let want: Vec<SyncEvent> = s
                .state
                .map(|state| SyncEvent { state, ..on.flow })
                .into_iter()
                .collect();
            assert_eq!(a.events, want, "{what}: records in the sync ring");
            assert_eq!(b.events, [], "{what}: records with sync off");
        }
    }
    assert_eq!(on_counters.sync_lost, 0, "{method:?} v6 {v6}: sync_lost");
    // Sync adds no counter of its own besides sync_lost: every counter
    // moved alike with it on and off.
    let names = GlobalStats::FIELDS.iter().map(|(n, _)| *n);
    let a: Vec<_> = names.clone().zip(on_counters.values()).collect();
    let b: Vec<_> = names.zip(off_counters.values()).collect();
    assert_eq!(a, b, "{method:?} v6 {v6}: global counters on / off");
}

fn case(method: Method, v6: bool, tcp: bool) -> Case {
    Case { method, v6, tcp }
}

#[test]
fn sync_dr_v4_tcp_and_udp() {
    check(Method::Dr, false);
}

#[test]
fn sync_dr_v6_tcp_and_udp() {
    check(Method::Dr, true);
}

#[test]
fn sync_nat_v4_tcp_and_udp() {
    check(Method::Nat, false);
}

#[test]
fn sync_nat_v6_tcp_and_udp() {
    check(Method::Nat, true);
}

#[test]
fn sync_tun_v4_tcp_and_udp() {
    check(Method::Tun, false);
}

#[test]
fn sync_tun_v6_tcp_and_udp() {
    check(Method::Tun, true);
}

/// Bytes one record takes in a BPF ring buffer: the kernel's 8-byte header
/// (BPF_RINGBUF_HDR_SZ) and the [`SyncEvent`] rounded up to 8.
const RECORD_BYTES: u32 = 8 + (size_of::<SyncEvent>() as u32).next_multiple_of(8);

/// Records the ring holds unread: the kernel keeps the producer at most
/// size − 1 bytes ahead of the consumer (`__bpf_ringbuf_reserve`,
/// kernel/bpf/ringbuf.c), so one record short of size / record.
const RING_RECORDS: u32 = (SYNC_RING_BYTES - 1) / RECORD_BYTES;

/// Runs `pkt` (at TTL 255) `n` times in calls of at most 250 repetitions
/// (every method decrements the TTL of the buffer the kernel repeats on),
/// each checked to be forwarded and counted once per run.
fn repeat(h: &Harness, pkt: &[u8], n: u32) {
    let mut p = pkt.to_vec();
    set_ttl(&mut p, 255);
    let mut left = n;
    while left > 0 {
        let k = left.min(250);
        let (v, _, _) = h
            .run_prog(lb_user::dataplane::PROGRAM, &p, k)
            .expect("test run");
        assert_eq!(verdict_name(v), "XDP_TX");
        left -= k;
    }
}

/// The real 4 MiB ring, filled without draining: every SYN is a new flow
/// (SYN timeout 0 expires the previous one at once), so each run writes a
/// record. The record that does not fit is counted in `sync_lost`; its
/// packet is forwarded as usual. Once drained, the ring takes records again.
#[test]
fn sync_full_ring_counts_lost_and_still_forwards() {
    let case = case(Method::Dr, false, true);
    let mut h = case.harness(true);
    h.dp.set_timeouts(Timeouts {
        tcp_syn_s: 0,
        ..Default::default()
    })
    .unwrap();
    let syn = case.packet(Some(Flags::Syn), b"", false);
    repeat(&h, &syn, RING_RECORDS);
    let g = h.dp.global_sum().unwrap();
    assert_eq!(g.new_flows, u64::from(RING_RECORDS));
    assert_eq!(g.sync_lost, 0, "{RING_RECORDS} records fit");

    let (v, out) = h.run(&syn).expect("run on a full ring");
    assert_eq!(
        verdict_name(v),
        "XDP_TX",
        "forwarded though the ring is full"
    );
    let want = case.expected(Some(Flags::Syn), b"").unwrap();
    assert!(out == want, "output bytes\n{}", hex_diff(&out, &want));
    let g = h.dp.global_sum().unwrap();
    assert_eq!((g.new_flows, g.sync_lost), (u64::from(RING_RECORDS) + 1, 1));

    let events = h.sync_events().unwrap();
    assert_eq!(events.len(), RING_RECORDS as usize);
    let ix = h.tables.sync_index();
    let real_id = ix.services[&(case.vip().parse().unwrap(), 80, PROTO_TCP)].reals
        [&(case.real().parse().unwrap(), 80)];
    let first = events[0];
    assert_eq!(
        (first.real_id, first.real_gen, first.state),
        (real_id, ix.reals[&real_id].gen, CT_SYN_RECV)
    );
    assert!(
        events.iter().all(|e| *e == first),
        "one flow, scheduled anew each run"
    );

    // Drained: the next new flow is reported again, nothing more lost.
    let (v, _) = h.run(&syn).unwrap();
    assert_eq!(verdict_name(v), "XDP_TX");
    assert_eq!(h.sync_events().unwrap(), [first]);
    assert_eq!(h.dp.global_sum().unwrap().sync_lost, 1);
}

/// Turning sync off on a running data plane (the agent's next apply)
/// stops the reports at once: a state change after it writes nothing.
#[test]
fn sync_turned_off_stops_reports() {
    let case = case(Method::Dr, false, true);
    let mut h = case.harness(true);
    h.run(&case.packet(Some(Flags::Syn), b"", false)).unwrap();
    assert_eq!(h.sync_events().unwrap().len(), 1);
    h.set_sync(false);
    h.apply(&case.conf()).unwrap();
    let (v, _) = h.run(&case.packet(Some(Flags::Ack), b"", false)).unwrap();
    assert_eq!(verdict_name(v), "XDP_TX");
    assert_eq!(h.sync_events().unwrap(), []);
    // And on again: the next change is reported.
    h.set_sync(true);
    h.apply(&case.conf()).unwrap();
    h.run(&case.packet(Some(Flags::Fin), b"", false)).unwrap();
    let ev = h.sync_events().unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].state, CT_FIN_WAIT);
}
