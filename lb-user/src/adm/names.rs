//! Names as ipvsadm reads and prints them: addresses by the C library's
//! `inet_aton` and resolver, ports by /etc/services (`getservbyname`,
//! `getservbyport`). Listings without `-n` print names where they exist.

use std::{
    ffi::{CStr, CString},
    net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs as _},
};

use crate::config::Proto;

fn proto_word(proto: Proto) -> &'static CStr {
    match proto {
        Proto::Tcp => c"tcp",
        Proto::Udp => c"udp",
    }
}

extern "C" {
    // glibc's <arpa/inet.h>; the libc crate does not declare it.
    fn inet_aton(cp: *const libc::c_char, inp: *mut libc::in_addr) -> libc::c_int;
}

/// `inet_aton`: also the short forms (`10.1` = 10.0.0.1, `0x7f.1`).
pub fn parse_inet_aton(text: &str) -> Option<Ipv4Addr> {
    let c = CString::new(text).ok()?;
    let mut out = libc::in_addr { s_addr: 0 };
    // SAFETY: valid C string and out-pointer.
    let ok = unsafe { inet_aton(c.as_ptr(), &mut out) };
    (ok != 0).then(|| Ipv4Addr::from(u32::from_be(out.s_addr)))
}

/// A host name's first IPv4 address (ipvsadm's `gethostbyname`).
pub fn host_v4(name: &str) -> Option<Ipv4Addr> {
    if name.is_empty() || name.contains(['/', ' ']) {
        return None;
    }
    (name, 0u16).to_socket_addrs().ok()?.find_map(|a| match a {
        SocketAddr::V4(v4) => Some(*v4.ip()),
        SocketAddr::V6(_) => None,
    })
}

/// The port of a service name for `proto` in /etc/services.
pub fn service_port(name: &str, proto: Proto) -> Option<u16> {
    let c = CString::new(name).ok()?;
    // SAFETY: valid C strings; the result points into libc's static
    // storage and is read at once (the CLI is single-threaded here).
    unsafe {
        let s = libc::getservbyname(c.as_ptr(), proto_word(proto).as_ptr());
        (!s.is_null()).then(|| u16::from_be((*s).s_port as u16))
    }
}

/// The service name of `port` for `proto`, or the number.
pub fn port_name(port: u16, proto: Proto) -> String {
    // SAFETY: as in service_port.
    unsafe {
        let s = libc::getservbyport(i32::from(port.to_be()), proto_word(proto).as_ptr());
        if s.is_null() {
            return port.to_string();
        }
        CStr::from_ptr((*s).s_name).to_string_lossy().into_owned()
    }
}

/// The host name of `addr` (reverse lookup), or the address.
pub fn host_name(addr: IpAddr) -> String {
    let sa: SocketAddr = (addr, 0).into();
    let (storage, len) = sockaddr(&sa);
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: storage holds a sockaddr of `len` bytes; host is writable.
    let rc = unsafe {
        libc::getnameinfo(
            &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return addr.to_string();
    }
    // SAFETY: getnameinfo wrote a NUL-terminated string.
    unsafe { CStr::from_ptr(host.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn sockaddr(sa: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match sa {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write(&mut st as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write(&mut st as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ports_as_the_c_library_reads_them() {
        assert_eq!(parse_inet_aton("10.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            parse_inet_aton("192.168.1.2"),
            Some(Ipv4Addr::new(192, 168, 1, 2))
        );
        assert_eq!(parse_inet_aton("no"), None);
        assert_eq!(host_v4("localhost"), Some(Ipv4Addr::LOCALHOST));
        if std::path::Path::new("/etc/services").exists() {
            assert_eq!(service_port("http", Proto::Tcp), Some(80));
            assert_eq!(port_name(80, Proto::Tcp), "http");
        }
        assert_eq!(port_name(64999, Proto::Udp), "64999");
    }
}
