//! Persistence templates and real health (BPF_PROG_TEST_RUN), issue 15:
//! a real whose checks failed gets no new connection through a template,
//! whether `inhibit_on_failure` keeps it at weight 0 (ipvs with
//! `expire_quiescent_template` on) or it is out of the table; a real
//! drained to weight 0 by the operator keeps its persistent clients (ipvs's
//! default). Established connections stay on their real in every case
//! (ipvs's `expire_nodest_conn` = 0 for a quiescent destination).
use lb_testkit::*;
use lb_user::{
    config::{Proto, ServiceAddr},
    health::Health,
};

const VIP: &str = "10.0.0.100";
const RIP1: &str = "10.0.0.11";
const RIP2: &str = "10.0.0.12";
const CLIENT: &str = "192.0.2.7";
const MAC1: [u8; 6] = [0x02, 0x11, 0, 0, 0, 0x11];
const MAC2: [u8; 6] = [0x02, 0x12, 0, 0, 0, 0x12];

/// Two reals of weights `w1`, `w2` (`None`: not configured), persistent.
fn conf(w1: Option<u32>, w2: u32) -> String {
    let r1 = w1.map_or(String::new(), |w| {
        format!(" real_server {RIP1} 80 {{ weight {w}\n  inhibit_on_failure\n }}\n")
    });
    format!(
        "virtual_server {VIP} 80 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n \
         persistence_timeout 300\n{r1} real_server {RIP2} 80 {{ weight {w2}\n  inhibit_on_failure\n }}\n}}\n"
    )
}

fn harness() -> Harness {
    let mut h = Harness::new(4096).expect("harness (needs root and a BPF-capable kernel)");
    h.neighbour(RIP1, MAC1, false);
    h.neighbour(RIP2, MAC2, false);
    h.apply(&conf(Some(1), 1)).expect("apply");
    h
}

/// The real (1 or 2) a packet of the client's connection from `port` went to.
fn send(h: &Harness, port: u16, flags: Flags) -> u8 {
    let pkt = tcp(Eth::inbound(), CLIENT, port, VIP, 80, flags, b"");
    let (v, out) = h.run(&pkt).expect("test run");
    assert_eq!(verdict_name(v), "XDP_TX", "connection from port {port}");
    assert_eq!(
        &out[..],
        &dr_rewrite(&pkt, if out[..6] == MAC1 { MAC1 } else { MAC2 }, MAC_A)[..],
        "DR rewrite only"
    );
    match &out[..6] {
        m if m == MAC1 => 1,
        m if m == MAC2 => 2,
        m => panic!("unexpected destination MAC {m:02x?}"),
    }
}

fn svc() -> ServiceAddr {
    ServiceAddr {
        addr: VIP.parse().unwrap(),
        port: 80,
        proto: Proto::Tcp,
    }
}

/// The real id the client's persistence template names (one template).
fn template_real(h: &Harness) -> u32 {
    let all: Vec<u32> =
        h.dp.persist
            .iter()
            .map(|r| r.expect("persistence table").1.real_id)
            .collect();
    assert_eq!(all.len(), 1, "one client, one template: {all:?}");
    all[0]
}

fn id(h: &Harness, ip: &str) -> u32 {
    h.tables.real_id(&svc(), ip.parse().unwrap(), 80).unwrap()
}

#[test]
fn a_real_inhibited_by_its_checks_gets_no_new_connection_through_a_template() {
    let mut h = harness();
    assert_eq!(send(&h, 1000, Flags::Syn), 1);
    assert_eq!(send(&h, 1000, Flags::Ack), 1);
    assert_eq!(send(&h, 1001, Flags::Syn), 1, "the template holds");
    assert_eq!(template_real(&h), id(&h, RIP1));
    // R1 fails its check; inhibit_on_failure keeps it at weight 0.
    h.health
        .insert(RIP1.parse().unwrap(), Health::Down { inhibit: true });
    h.apply(&conf(Some(1), 1)).unwrap();
    for port in 1002..1008 {
        assert_eq!(send(&h, port, Flags::Syn), 2, "new connection {port}");
    }
    assert_eq!(
        template_real(&h),
        id(&h, RIP2),
        "the template was rewritten"
    );
    // The established connection stays where it is (expire_nodest_conn = 0),
    // and its packets do not take the template back.
    assert_eq!(send(&h, 1000, Flags::Ack), 1);
    assert_eq!(template_real(&h), id(&h, RIP2));
    // R1 recovers: the client stays with its new template's real.
    h.health.clear();
    h.apply(&conf(Some(1), 1)).unwrap();
    assert_eq!(send(&h, 1010, Flags::Syn), 2);
}

#[test]
fn a_real_drained_to_weight_0_keeps_its_persistent_clients() {
    // ipvs's default (expire_quiescent_template = 0): an operator's drain
    // stops new clients, not the persistent ones.
    let mut h = harness();
    assert_eq!(send(&h, 2000, Flags::Syn), 1);
    h.apply(&conf(Some(0), 1)).unwrap();
    for port in 2001..2005 {
        assert_eq!(send(&h, port, Flags::Syn), 1, "new connection {port}");
    }
    assert_eq!(template_real(&h), id(&h, RIP1));
    // Another client gets the live real.
    let other = tcp(Eth::inbound(), "192.0.2.8", 2000, VIP, 80, Flags::Syn, b"");
    let (_, out) = h.run(&other).unwrap();
    assert_eq!(&out[..6], &MAC2);
}

#[test]
fn a_template_of_a_real_down_or_removed_is_rescheduled() {
    // Checks failed without inhibit_on_failure: the real is out.
    let mut h = harness();
    assert_eq!(send(&h, 3000, Flags::Syn), 1);
    h.health
        .insert(RIP1.parse().unwrap(), Health::Down { inhibit: false });
    h.apply(&conf(Some(1), 1)).unwrap();
    assert_eq!(send(&h, 3001, Flags::Syn), 2);
    assert_eq!(template_real(&h), id(&h, RIP2));

    // Removed from the configuration, then added again (a new slot
    // generation): the template moved to R2 and stays there.
    let mut h = harness();
    assert_eq!(send(&h, 4000, Flags::Syn), 1);
    let r1 = id(&h, RIP1);
    h.apply(&conf(None, 1)).unwrap();
    assert_eq!(send(&h, 4001, Flags::Syn), 2);
    h.apply(&conf(Some(1), 1)).unwrap();
    assert_eq!(send(&h, 4002, Flags::Syn), 2);
    assert_eq!(template_real(&h), id(&h, RIP2));
    assert_ne!(template_real(&h), r1);
}
