//! End to end in network namespaces: packets XDP cannot finish (next hop not
//! resolved yet) are handed to lb's tc program, which sends them with
//! `bpf_redirect_neigh` (issue 15, input 1). Real HTTP over TCP, with a
//! connect timeout shorter than TCP's first retransmission (1 s): the first
//! packet toward an unresolved neighbour must arrive, not a retransmission.
//! Needs root and curl; tests run one at a time.

use lb_tests::{private_ip, real_ip, Bins, Lab, AGENT_ARGS, VIP};

/// A second address of the client, on the director's public subnet.
const CLIENT2: &str = "10.200.0.50";

/// The director's neighbour entry for `ip` on `dev` (empty: none).
fn neigh(lab: &Lab, ip: &str, dev: &str) -> String {
    let out = lab
        .exec("dir", &["ip", "neigh", "show", ip, "dev", dev])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One HTTP request from the client to the VIP (source `src` if given),
/// with a 0.9 s connect timeout: the body (the real's name), or why not.
fn get(lab: &Lab, src: Option<&str>) -> Result<String, String> {
    let url = format!("http://{VIP}:80/");
    let mut args = vec!["curl", "-sS", "--connect-timeout", "0.9", "--max-time", "3"];
    if let Some(s) = src {
        args.extend(["--interface", s]);
    }
    args.push(&url);
    let ns = lab.ns("cl");
    let mut full = vec!["netns", "exec", ns.as_str()];
    full.extend(args);
    let out = std::process::Command::new("ip")
        .args(&full)
        .output()
        .map_err(|e| format!("running curl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "curl exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn counters(lab: &Lab) -> String {
    let bpffs = lab.bpffs().to_string_lossy().into_owned();
    lab.lb(&["counters", "--bpffs", &bpffs]).unwrap_or_default()
}

/// Issue 15, input 1, exactly: a NAT service, the director with a public and
/// a private interface, a client on the director's public subnet connecting
/// from a second address the director has never resolved. The real's reply
/// is translated (source: the VIP) and needs the client's MAC; before the
/// neighbour path the kernel dropped it (a local source from outside) and
/// every connection failed. The director's entry for that address is flushed
/// before each connection, so each one starts unresolved.
#[test]
fn nat_replies_reach_a_client_address_the_director_never_resolved() {
    nat_replies_reach_an_unresolved_client("nat", &[]);
}

/// The same with XDP in generic (skb) mode: the metadata survives
/// XDP_PASS there too (`bpf_prog_run_generic_xdp`).
#[test]
fn nat_replies_reach_an_unresolved_client_in_generic_xdp_mode() {
    nat_replies_reach_an_unresolved_client("skb", &["--xdp-mode", "skb"]);
}

fn nat_replies_reach_an_unresolved_client(tag: &str, extra: &[&str]) {
    let _g = lb_tests::serial();
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    let mut lab =
        Lab::nat(&format!("lbg{}{tag}", std::process::id() % 1000), bins, 2).expect("lab");
    // The client's second address; it reaches the VIP through a static
    // entry, so no ARP request of its own teaches the director its MAC.
    lab.exec(
        "cl",
        &["ip", "addr", "add", &format!("{CLIENT2}/24"), "dev", "eth0"],
    )
    .unwrap();
    let dir_mac = String::from_utf8(
        lab.exec("dir", &["cat", "/sys/class/net/eth0/address"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    lab.exec(
        "cl",
        &[
            "ip",
            "neigh",
            "replace",
            VIP,
            "lladdr",
            dir_mac.trim(),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    )
    .unwrap();
    let conf = format!(
        "virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n\
           real_server {a} 8080 {{ weight 1 }}\n  real_server {b} 8080 {{ weight 1 }}\n}}\n",
        a = private_ip(1),
        b = private_ip(2),
    );
    let mut args = AGENT_ARGS.to_vec();
    args.extend_from_slice(extra);
    lab.start_agent(&conf, &args).unwrap();
    let mut answered = Vec::new();
    for i in 0..6 {
        lab.exec(
            "dir",
            &["ip", "neigh", "flush", "to", CLIENT2, "dev", "eth0"],
        )
        .unwrap();
        assert_eq!(
            neigh(&lab, CLIENT2, "eth0"),
            "",
            "connection {i}: entry left"
        );
        match get(&lab, Some(CLIENT2)) {
            Ok(body) => answered.push(body),
            Err(e) => panic!(
                "connection {i} from {CLIENT2}: {e}\ncounters:\n{}\nagent log:\n{}",
                counters(&lab),
                lab.log("dir", "lb")
            ),
        }
    }
    assert!(
        answered.iter().any(|b| b.contains("r1")) && answered.iter().any(|b| b.contains("r2")),
        "both reals answer: {answered:?}"
    );
    // Each connection's first reply went through the neighbour path.
    let c = |n: &str| lab.counter(n).unwrap();
    assert!(c("neigh_handoff") >= 6, "{}", counters(&lab));
    assert!(c("neigh_sent") >= 6, "{}", counters(&lab));
    assert_eq!(c("aborted"), 0);
}

/// TUN toward reals whose neighbour entries were flushed on the director:
/// the first SYN of each connection is encapsulated, handed to the tc
/// program and sent once ARP resolves the real; the connection completes
/// within the 0.9 s connect timeout (no retransmission needed).
#[test]
fn tun_first_packet_to_an_unresolved_real_arrives() {
    let _g = lb_tests::serial();
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    let mut lab = Lab::dr(&format!("lbg{}tun", std::process::id() % 1000), bins, 2).expect("lab");
    lab.exec("dir", &["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let lb = lab.bins.lb.to_string_lossy().into_owned();
    for r in ["r1", "r2"] {
        lab.spawn(r, &[&lb, "decap", "--iface", "eth0", "--vip", VIP], "decap")
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let conf = format!(
        "virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind TUN\n  protocol TCP\n\
           real_server {a} 80 {{ weight 1 }}\n  real_server {b} 80 {{ weight 1 }}\n}}\n",
        a = real_ip(1),
        b = real_ip(2),
    );
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    let mut answered = Vec::new();
    for i in 0..4 {
        for r in [real_ip(1), real_ip(2)] {
            lab.exec("dir", &["ip", "neigh", "flush", "to", &r, "dev", "eth0"])
                .unwrap();
            assert_eq!(
                neigh(&lab, &r, "eth0"),
                "",
                "connection {i}: entry for {r} left"
            );
        }
        match get(&lab, None) {
            Ok(body) => answered.push(body),
            Err(e) => panic!(
                "connection {i}: {e}\ncounters:\n{}\nagent log:\n{}",
                counters(&lab),
                lab.log("dir", "lb")
            ),
        }
    }
    assert!(
        answered.iter().any(|b| b.contains("r1")) && answered.iter().any(|b| b.contains("r2")),
        "both reals answer: {answered:?}"
    );
    let c = |n: &str| lab.counter(n).unwrap();
    assert!(c("neigh_sent") >= 4, "{}", counters(&lab));
    assert_eq!(c("aborted"), 0);
}
