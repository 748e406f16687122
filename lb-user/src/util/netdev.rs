//! Facts about a network interface of the agent's own network namespace,
//! read with `ioctl`s on a socket of that namespace (netdevice(7)).
//! `/sys/class/net` is not used: it shows the namespace that mounted
//! sysfs, which is not the agent's under `nsenter --net` or in a container
//! sharing the host's `/sys` — an interface of the same name there has
//! another MAC.

use std::{io, os::fd::AsRawFd as _};

/// A `struct ifreq` for `name`, or an error when the name does not fit.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

/// Runs `request` (a `SIOCGIF*`) for `name` on a datagram socket.
fn query(name: &str, request: libc::c_ulong) -> io::Result<libc::ifreq> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut req = ifreq(name)?;
    // SAFETY: `req` is a valid ifreq that the kernel fills for this request.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req)
}

/// The Ethernet address of `name` (`SIOCGIFHWADDR`). An interface that is
/// not Ethernet (a tunnel, loopback) is an error.
pub fn hw_addr(name: &str) -> io::Result<[u8; 6]> {
    let req = query(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR fills the hardware-address member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    if sa.sa_family != libc::ARPHRD_ETHER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name} has no Ethernet address (hardware type {})",
                sa.sa_family
            ),
        ));
    }
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// The MTU of `name` in bytes (`SIOCGIFMTU`).
pub fn mtu(name: &str) -> io::Result<u32> {
    let req = query(name, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU fills the mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// Whether `name` is up and running (`IFF_UP` and `IFF_RUNNING`, the
/// kernel's operational state: a carrier, not dormant), by
/// `SIOCGIFFLAGS`. An interface that cannot be read is not up.
pub fn is_running(name: &str) -> bool {
    let Ok(req) = query(name, libc::SIOCGIFFLAGS) else {
        return false;
    };
    // SAFETY: SIOCGIFFLAGS fills the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags } as libc::c_int;
    flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_no_ethernet_address_and_bad_names_are_refused() {
        assert!(hw_addr("lo").is_err());
        assert!(hw_addr("").is_err());
        assert!(hw_addr("a-name-far-too-long-for-ifreq").is_err());
        assert_eq!(mtu("lo").unwrap(), 65536);
        assert!(hw_addr("no-such-if0").is_err());
        assert!(!is_running("no-such-if0"));
    }
}
