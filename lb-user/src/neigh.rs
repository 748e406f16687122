//! Reals' MAC addresses from the kernel's neighbour table (rtnetlink).
//!
//! Direct routing needs the real on a subnet of an attached interface: the
//! interface is the one holding an address whose prefix contains the real.
//! A real without a usable neighbour entry is asked for (NTF_USE makes the
//! kernel send an ARP request / neighbour solicitation) and gets no traffic
//! until its MAC is known. The table is read again every second, so a
//! changed entry is picked up.

use std::{collections::BTreeMap, net::IpAddr};

use futures::TryStreamExt as _;
use netlink_packet_route::{
    address::AddressAttribute,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlag, NeighbourState},
};
use rtnetlink::Handle;

use crate::state::L2;

/// The kernel's addresses or neighbours could not be read or asked for.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing interface addresses")]
    Addresses(#[source] rtnetlink::Error),
    #[error("listing neighbours")]
    Neighbours(#[source] rtnetlink::Error),
    #[error("soliciting {ip} on ifindex {ifindex}")]
    Solicit {
        ip: IpAddr,
        ifindex: u32,
        #[source]
        source: rtnetlink::Error,
    },
}

/// An address configured on an interface.
#[derive(Clone, Debug)]
pub struct IfAddr {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Whether `ip` lies in `net/prefix`.
pub fn in_prefix(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let p = prefix.min(32) as u32;
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let p = prefix.min(128) as u32;
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The attached interface a real is on-link through, if any (longest prefix wins).
pub fn iface_for(ip: IpAddr, addrs: &[IfAddr]) -> Option<u32> {
    addrs
        .iter()
        .filter(|a| a.addr != ip && in_prefix(ip, a.addr, a.prefix))
        .max_by_key(|a| a.prefix)
        .map(|a| a.ifindex)
}

/// Addresses of the given interfaces.
pub async fn addresses(handle: &Handle, ifindexes: &[u32]) -> Result<Vec<IfAddr>, Error> {
    let mut out = Vec::new();
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(Error::Addresses)? {
        if !ifindexes.contains(&msg.header.index) {
            continue;
        }
        for attr in &msg.attributes {
            if let AddressAttribute::Address(a) = attr {
                out.push(IfAddr {
                    ifindex: msg.header.index,
                    addr: *a,
                    prefix: msg.header.prefix_len,
                });
            }
        }
    }
    Ok(out)
}

/// Usable neighbour entries: (ifindex, address) → MAC.
pub async fn neighbours(handle: &Handle) -> Result<BTreeMap<(u32, IpAddr), [u8; 6]>, Error> {
    let mut out = BTreeMap::new();
    let mut stream = handle.neighbours().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(Error::Neighbours)? {
        let usable = matches!(
            msg.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp
        );
        if !usable {
            continue;
        }
        let mut dst = None;
        let mut mac = None;
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    dst = Some(IpAddr::V4(*a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    dst = Some(IpAddr::V6(*a))
                }
                NeighbourAttribute::LinkLocalAddress(l) if l.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(l);
                    mac = Some(m);
                }
                _ => {}
            }
        }
        if let (Some(d), Some(m)) = (dst, mac) {
            out.insert((msg.header.ifindex, d), m);
        }
    }
    Ok(out)
}

/// Asks the kernel to resolve `ip` on `ifindex` (ARP / neighbour solicitation).
pub async fn solicit(handle: &Handle, ifindex: u32, ip: IpAddr) -> Result<(), Error> {
    let mut req = handle
        .neighbours()
        .add(ifindex, ip)
        .state(NeighbourState::None)
        .flags(vec![NeighbourFlag::Use])
        .replace();
    req.message_mut().header.state = NeighbourState::None;
    req.execute().await.map_err(|source| Error::Solicit {
        ip,
        ifindex,
        source,
    })
}

/// Where each of `reals` is reachable now through the `attached` interfaces
/// (ifindex, MAC); unresolved ones are solicited.
pub async fn resolve(
    handle: &Handle,
    attached: &[(u32, [u8; 6])],
    reals: &[IpAddr],
) -> Result<(BTreeMap<IpAddr, L2>, Vec<IpAddr>), Error> {
    let ifindexes: Vec<u32> = attached.iter().map(|a| a.0).collect();
    let addrs = addresses(handle, &ifindexes).await?;
    let neigh = neighbours(handle).await?;
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    for &ip in reals {
        let Some(ifindex) = iface_for(ip, &addrs) else {
            missing.push(ip);
            continue;
        };
        match neigh.get(&(ifindex, ip)) {
            Some(mac) => {
                let src_mac = attached
                    .iter()
                    .find(|a| a.0 == ifindex)
                    .map(|a| a.1)
                    .unwrap_or_default();
                found.insert(
                    ip,
                    L2 {
                        ifindex,
                        mac: *mac,
                        src_mac,
                    },
                );
            }
            None => {
                if let Err(e) = solicit(handle, ifindex, ip).await {
                    tracing::debug!(%ip, error = %crate::util::Chain(&e), "neighbour solicitation request failed");
                }
                missing.push(ip);
            }
        }
    }
    Ok((found, missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_match() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_prefix(a("10.1.2.3"), a("10.1.0.1"), 16));
        assert!(!in_prefix(a("10.2.2.3"), a("10.1.0.1"), 16));
        assert!(in_prefix(a("2001:db8::5"), a("2001:db8::1"), 64));
        assert!(!in_prefix(a("2001:db8:1::5"), a("2001:db8::1"), 64));
        let addrs = vec![
            IfAddr {
                ifindex: 2,
                addr: a("10.0.0.1"),
                prefix: 8,
            },
            IfAddr {
                ifindex: 3,
                addr: a("10.1.0.1"),
                prefix: 16,
            },
        ];
        assert_eq!(iface_for(a("10.1.0.9"), &addrs), Some(3));
        assert_eq!(iface_for(a("10.9.0.9"), &addrs), Some(2));
        assert_eq!(iface_for(a("192.0.2.1"), &addrs), None);
    }
}
