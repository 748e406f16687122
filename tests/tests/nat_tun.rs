//! End to end in network namespaces: LVS-NAT (one-interface variant: the
//! reals route the client through the director) and LVS-TUN with the
//! project's decapsulation program on the reals (this kernel has no ipip
//! device). Real HTTP over TCP. Needs root; tests run one at a time.

use lb_tests::{
    private_ip, private_ip6, real_ip, Bins, Lab, AGENT_ARGS, CLIENT_IP, DIRECTOR_IP, VIP, VIP6,
};

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(&format!("lbn{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// Every one of `total` requests answered, by both reals.
fn both_answered(t: &std::collections::BTreeMap<String, usize>, total: usize, what: &str) {
    let (r1, r2) = (
        t.get("r1").copied().unwrap_or(0),
        t.get("r2").copied().unwrap_or(0),
    );
    assert_eq!(r1 + r2, total, "{what}: {t:?}");
    assert!(r1 > 0 && r2 > 0, "{what}: both reals answer: {t:?}");
}

fn service(kind: &str, port: u16) -> String {
    format!(
        "virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind {kind}\n  protocol TCP\n\
           real_server {r1} {port} {{ weight 1 }}\n  real_server {r2} {port} {{ weight 1 }}\n}}\n",
        r1 = real_ip(1),
        r2 = real_ip(2),
    )
}

#[test]
fn nat_rewrites_both_directions_with_port_translation() {
    let _g = lb_tests::serial();
    let mut lab = lab("nat");
    // The director forwards (and must not redirect the reals to the client).
    for kv in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.eth0.send_redirects=0",
    ] {
        lab.exec("dir", &["sysctl", "-qw", kv]).unwrap();
    }
    // Reals: the client is reached through the director (its gateway in
    // classic LVS-NAT); their stack computes checksums itself, as the
    // director's XDP_TX loses checksum offload metadata.
    for r in ["r1", "r2"] {
        lab.exec(
            r,
            &[
                "ip",
                "route",
                "add",
                &format!("{CLIENT_IP}/32"),
                "via",
                DIRECTOR_IP,
            ],
        )
        .unwrap();
        lab.exec(
            r,
            &["sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0"],
        )
        .unwrap();
        lab.exec(r, &["ethtool", "-K", "eth0", "tx", "off"])
            .unwrap();
    }
    // Virtual port 80, reals' port 8080.
    lab.start_agent(&service("NAT", 8080), AGENT_ARGS).unwrap();
    let t = lab.http_get(&format!("{VIP}:80"), 40).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}\n{}", lab.log("dir", "lb"));
    both_answered(&t, 40, "HTTP through the VIP");

    let bpffs = lab.bpffs().to_string_lossy().into_owned();
    let list = lab.lb(&["list", "--bpffs", &bpffs]).unwrap();
    assert!(
        list.contains(&format!("  -> {}:8080", real_ip(1))),
        "{list}"
    );
    assert!(list.contains("Masq"), "{list}");
    // Replies were translated by the data plane (OutPkts counted).
    let stats = lab
        .lb(&["list", "--stats", "--exact", "--bpffs", &bpffs])
        .unwrap();
    let svc_line = stats.lines().find(|l| l.starts_with("TCP")).unwrap();
    let cols: Vec<u64> = svc_line
        .split_whitespace()
        .skip(2)
        .map(|c| c.parse().unwrap())
        .collect();
    assert_eq!(cols[0], 40, "{stats}");
    assert!(cols[2] > 0, "OutPkts: {stats}");
    assert_eq!(lab.counter("aborted").unwrap(), 0);
}

#[test]
fn tun_reaches_reals_through_the_decapsulation_program() {
    let _g = lb_tests::serial();
    let mut lab = lab("tun");
    // The FIB lookup that routes the tunnel answers only where forwarding is on.
    lab.exec("dir", &["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let lb = lab.bins.lb.to_string_lossy().into_owned();
    for r in ["r1", "r2"] {
        lab.spawn(r, &[&lb, "decap", "--iface", "eth0", "--vip", VIP], "decap")
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    lab.start_agent(&service("TUN", 80), AGENT_ARGS).unwrap();
    let t = lab.http_get(&format!("{VIP}:80"), 40).unwrap();
    // On failure: the director's counters and the decapsulation program's.
    if t.get("fail") != Some(&0) {
        let bpffs = lab.bpffs().to_string_lossy().into_owned();
        let counters = lab.lb(&["counters", "--bpffs", &bpffs]).unwrap_or_default();
        let _ = lab.stop("r1", "decap");
        std::thread::sleep(std::time::Duration::from_millis(300));
        panic!(
            "{t:?}\ndirector counters:\n{counters}\nagent log:\n{}\nr1 decap:\n{}",
            lab.log("dir", "lb"),
            lab.log("r1", "decap")
        );
    }
    both_answered(&t, 40, "HTTP through the VIP");
    let bpffs = lab.bpffs().to_string_lossy().into_owned();
    let list = lab.lb(&["list", "--bpffs", &bpffs]).unwrap();
    assert!(list.contains("Tunnel"), "{list}");
    let encap = lab.counter("encap").unwrap();
    assert!(encap >= 40, "{encap} packets tunnelled");
}

/// NAT services VIP:80 and [VIP6]:80 of the two-subnet lab's two reals on
/// `port`, rr.
fn two_subnet_services(port: u16) -> String {
    format!(
        "virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n\
           real_server {a} {port} {{ weight 1 }}\n  real_server {b} {port} {{ weight 1 }}\n}}\n\
         virtual_server {VIP6} 80 {{\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n\
           real_server {a6} {port} {{ weight 1 }}\n  real_server {b6} {port} {{ weight 1 }}\n}}\n",
        a = private_ip(1),
        b = private_ip(2),
        a6 = private_ip6(1),
        b6 = private_ip6(2),
    )
}

#[test]
fn nat_with_two_subnets_director_as_gateway_ipv4_and_ipv6() {
    let _g = lb_tests::serial();
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    let mut lab = Lab::nat(&format!("lbn{}two", std::process::id() % 1000), bins, 2).expect("lab");
    let conf = two_subnet_services(8080);
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    for (what, addr) in [
        ("IPv4", format!("{VIP}:80")),
        ("IPv6", format!("[{VIP6}]:80")),
    ] {
        let t = lab.http_get(&addr, 30).unwrap();
        assert_eq!(
            t.get("fail"),
            Some(&0),
            "{what}: {t:?}\n{}",
            lab.log("dir", "lb")
        );
        both_answered(&t, 30, what);
    }
    // Both directions crossed the director's XDP between its two interfaces.
    let get = |name: &str| lab.counter(name).unwrap();
    assert!(get("redirect") > 0 && get("nat_reverse") > 0);
    assert_eq!(get("aborted"), 0);
}

/// issue 15, input 1's whole kind (replies XDP builds itself): the client
/// side's MTU (1280 on the director's public interface) is smaller than the
/// real's (1500), and each answer is 6,000 bytes. The reals' full-size
/// segments are too big for the client side: the director answers each
/// real with "fragmentation needed" / "packet too big" quoting the segment
/// as the real sent it, the real lowers its path MTU and sends again, and
/// every transfer completes (IPv4 and IPv6). Before, the translated segment
/// went to the kernel, which dropped it (its source is the VIP), and the
/// transfer stalled.
#[test]
fn nat_replies_larger_than_the_client_side_mtu_get_through() {
    let _g = lb_tests::serial();
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    let mut lab = Lab::nat(&format!("lbn{}mtu", std::process::id() % 1000), bins, 2).expect("lab");
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    for r in ["r1", "r2"] {
        let status = lab.workdir.join(format!("{r}-big"));
        let mut body = format!("{r}\n");
        body.push_str(&" ".repeat(6000));
        std::fs::write(format!("{}.body", status.display()), body).unwrap();
        lab.spawn(
            r,
            &[&probe, "serve", "8081", r, &status.to_string_lossy()],
            "big",
        )
        .unwrap();
    }
    lab.exec("dir", &["ip", "link", "set", "dev", "eth0", "mtu", "1280"])
        .unwrap();
    let conf = two_subnet_services(8081);
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    for (what, addr) in [
        ("IPv4", format!("{VIP}:80")),
        ("IPv6", format!("[{VIP6}]:80")),
    ] {
        let t = lab.http_get(&addr, 6).unwrap();
        assert_eq!(
            t.get("fail"),
            Some(&0),
            "{what}: {t:?}\n{}",
            lab.lb(&["counters", "--bpffs", &lab.bpffs().to_string_lossy()])
                .unwrap_or_default()
        );
        both_answered(&t, 6, what);
    }
    // At least one error per real and family (the reals cache the path MTU).
    let sent = lab.counter("icmp_too_big_sent").unwrap();
    assert!(sent >= 4, "icmp_too_big_sent {sent}");
    assert_eq!(lab.counter("aborted").unwrap(), 0);
}
