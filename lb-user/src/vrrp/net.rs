//! VRRP on the wire: raw IP sockets for protocol 112 (multicast group
//! joined on the instance's interface, TTL / hop limit 255, no loopback of
//! our own adverts), gratuitous ARP and unsolicited neighbour advertisements.

use std::{
    io,
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    os::fd::AsRawFd,
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};

use super::packet::{IPPROTO_VRRP, TTL};

pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// A received VRRP message with what the IP header said.
#[derive(Clone, Debug)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub msg: Vec<u8>,
}

/// An interface's index, MAC and the addresses VRRP sends from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// First IPv4 address (keepalived's default source).
    pub v4: Option<Ipv4Addr>,
    /// Link-local IPv6 address (the source of VRRPv3 over IPv6).
    pub v6_ll: Option<Ipv6Addr>,
}

/// Reads `name`'s index, MAC and addresses.
pub fn link(name: &str) -> io::Result<Link> {
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {name}"),
        ));
    }
    // In this network namespace (not sysfs's: see util::netdev); an
    // interface without an Ethernet address gets zeros.
    let mac = crate::util::netdev::hw_addr(name).unwrap_or([0; 6]);
    let mut l = Link {
        name: name.to_string(),
        index,
        mac,
        v4: None,
        v6_ll: None,
    };
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below; every pointer is
    // checked before it is read.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut p = ifap;
        while !p.is_null() {
            let a = &*p;
            p = a.ifa_next;
            if a.ifa_addr.is_null()
                || std::ffi::CStr::from_ptr(a.ifa_name).to_bytes() != name.as_bytes()
            {
                continue;
            }
            match (*a.ifa_addr).sa_family as i32 {
                libc::AF_INET if l.v4.is_none() => {
                    let sin = &*(a.ifa_addr as *const libc::sockaddr_in);
                    l.v4 = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                }
                libc::AF_INET6 => {
                    let sin6 = &*(a.ifa_addr as *const libc::sockaddr_in6);
                    let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    if ip.segments()[0] & 0xffc0 == 0xfe80 && l.v6_ll.is_none() {
                        l.v6_ll = Some(ip);
                    }
                }
                _ => {}
            }
        }
        libc::freeifaddrs(ifap);
    }
    Ok(l)
}

/// Is the interface administratively up with a carrier? (In this network
/// namespace: see util::netdev.)
pub fn link_up(name: &str) -> bool {
    crate::util::netdev::is_running(name)
}

fn raw(domain: Domain, proto: i32) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::RAW, Some(Protocol::from(proto)))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The receiving socket of one interface and family: every protocol-112
/// packet arriving there (multicast group joined unless unicast only).
pub fn rx_socket(link: &Link, v6: bool, multicast: bool) -> io::Result<Socket> {
    let dom = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = raw(dom, IPPROTO_VRRP as i32)?;
    s.bind_device(Some(link.name.as_bytes()))?;
    if v6 {
        s.set_recv_hoplimit_v6(true)?;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int option.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVPKTINFO,
                &one as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if multicast {
            s.join_multicast_v6(&GROUP_V6, link.index)?;
        }
    } else if multicast {
        s.join_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(link.index))?;
    }
    Ok(s)
}

/// The sending socket of an instance: bound to its source address, TTL /
/// hop limit 255, TOS "internetwork control" as keepalived, no loopback.
pub fn tx_socket(link: &Link, src: IpAddr) -> io::Result<Socket> {
    let v6 = src.is_ipv6();
    let s = raw(
        if v6 { Domain::IPV6 } else { Domain::IPV4 },
        IPPROTO_VRRP as i32,
    )?;
    s.bind_device(Some(link.name.as_bytes()))?;
    match src {
        IpAddr::V4(a) => {
            s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
            s.set_multicast_if_v4(&a)?;
            s.set_multicast_ttl_v4(TTL as u32)?;
            s.set_ttl_v4(TTL as u32)?;
            s.set_multicast_loop_v4(false)?;
            s.set_tos_v4(0xc0)?;
        }
        IpAddr::V6(a) => {
            let scope = if a.segments()[0] & 0xffc0 == 0xfe80 {
                link.index
            } else {
                0
            };
            s.bind(&SockAddr::from(SocketAddrV6::new(a, 0, 0, scope)))?;
            s.set_multicast_if_v6(link.index)?;
            s.set_multicast_hops_v6(TTL as u32)?;
            s.set_unicast_hops_v6(TTL as u32)?;
            s.set_multicast_loop_v6(false)?;
        }
    }
    Ok(s)
}

/// Where an advert goes: the group, or a unicast peer.
pub fn dest(dst: IpAddr, ifindex: u32) -> SockAddr {
    match dst {
        IpAddr::V4(_) => SockAddr::from(SocketAddr::new(dst, 0)),
        IpAddr::V6(a) => {
            let scope = if a.segments()[0] & 0xffc0 == 0xfe80 || a.segments()[0] == 0xff02 {
                ifindex
            } else {
                0
            };
            SockAddr::from(SocketAddrV6::new(a, 0, 0, scope))
        }
    }
}

/// Reads one packet (non-blocking; `WouldBlock` when none is queued).
pub fn recv(s: &Socket, v6: bool) -> io::Result<Received> {
    if v6 {
        recv_v6(s)
    } else {
        recv_v4(s)
    }
}

fn recv_v4(s: &Socket) -> io::Result<Received> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    let (n, _) = s.recv_from(&mut buf)?;
    // SAFETY: recv_from initialised the first n bytes.
    let b: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, n) };
    let short = || io::Error::new(io::ErrorKind::InvalidData, "short IPv4 packet");
    if b.len() < 20 {
        return Err(short());
    }
    let ihl = (b[0] & 0x0f) as usize * 4;
    let total = (u16::from_be_bytes([b[2], b[3]]) as usize).min(b.len());
    if ihl < 20 || total < ihl {
        return Err(short());
    }
    Ok(Received {
        src: IpAddr::from([b[12], b[13], b[14], b[15]]),
        dst: IpAddr::from([b[16], b[17], b[18], b[19]]),
        ttl: b[8],
        msg: b[ihl..total].to_vec(),
    })
}

fn recv_v6(s: &Socket) -> io::Result<Received> {
    let mut buf = [0u8; 2048];
    let mut ctrl = [0u64; 32];
    // SAFETY: zeroed sockaddr storage is valid.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: zeroed msghdr, then every pointer set to live buffers.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_name = &mut from as *mut _ as *mut libc::c_void;
    mh.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctrl.as_mut_ptr() as *mut libc::c_void;
    mh.msg_controllen = size_of_val(&ctrl);
    // SAFETY: mh points at buffers that outlive the call.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut mh, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ttl = 0u8;
    let mut dst = Ipv6Addr::UNSPECIFIED;
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within
    // msg_controllen; each payload is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    ttl = std::ptr::read_unaligned(data as *const libc::c_int) as u8;
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let pi = std::ptr::read_unaligned(data as *const libc::in6_pktinfo);
                    dst = Ipv6Addr::from(pi.ipi6_addr.s6_addr);
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    Ok(Received {
        src: IpAddr::V6(Ipv6Addr::from(from.sin6_addr.s6_addr)),
        dst: IpAddr::V6(dst),
        ttl,
        msg: buf[..n as usize].to_vec(),
    })
}

/// A gratuitous ARP request for `ip` from `mac` (sender = target = ip), as
/// keepalived sends them, broadcast on the interface.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    let eth = etherparse::Ethernet2Header {
        destination: [0xff; 6],
        source: mac,
        ether_type: etherparse::EtherType::ARP,
    };
    f.extend_from_slice(&eth.to_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// Sends one gratuitous ARP on the interface.
pub fn send_garp(link: &Link, ip: Ipv4Addr) -> io::Result<()> {
    let frame = garp_frame(link.mac, ip);
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket call; the fd is closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_ll, fields set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = link.index as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: frame and sll are valid for the call.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
            &sll as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An unsolicited neighbour advertisement for `ip` (override flag, target
/// link-layer address option), RFC 4861 §7.2.6; the checksum is the kernel's.
pub fn na_message(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![136, 0, 0, 0, 0x20, 0, 0, 0]; // type NA, flags: Override
    m.extend_from_slice(&ip.octets());
    m.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    m.extend_from_slice(&mac);
    m
}

/// Sends one unsolicited NA to all nodes on the interface.
pub fn send_na(link: &Link, ip: Ipv6Addr) -> io::Result<()> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.bind_device(Some(link.name.as_bytes()))?;
    s.set_multicast_if_v6(link.index)?;
    s.set_multicast_hops_v6(255)?;
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    s.send_to(
        &na_message(link.mac, ip),
        &SockAddr::from(SocketAddrV6::new(all_nodes, 0, 0, link.index)),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_bytes() {
        let f = garp_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[8, 6]);
        // sender and target protocol addresses are both the VIP.
        assert_eq!(&f[28..32], &[10, 0, 0, 100]);
        assert_eq!(&f[38..42], &[10, 0, 0, 100]);
        assert_eq!(&f[22..28], &[2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn na_bytes() {
        let ip: Ipv6Addr = "fd00::64".parse().unwrap();
        let m = na_message([2, 0, 0, 0, 0, 1], ip);
        assert_eq!(m.len(), 32);
        assert_eq!(m[0], 136);
        assert_eq!(m[4], 0x20);
        assert_eq!(&m[8..24], &ip.octets());
        assert_eq!(&m[24..32], &[2, 1, 2, 0, 0, 0, 0, 1]);
    }
}
