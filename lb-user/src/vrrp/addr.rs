//! Virtual addresses on interfaces, through rtnetlink.

use std::net::IpAddr;

use futures::TryStreamExt as _;
use netlink_packet_route::address::{AddressAttribute, AddressFlag, AddressScope};

use crate::config::vrrp::Vip;

/// A virtual address that could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("adding {addr}/{prefix} to ifindex {index}")]
    Add {
        addr: IpAddr,
        prefix: u8,
        index: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("removing {addr}/{prefix} from ifindex {index}")]
    Del {
        addr: IpAddr,
        prefix: u8,
        index: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("listing the addresses of ifindex {index}")]
    List {
        index: u32,
        #[source]
        source: rtnetlink::Error,
    },
}

/// Adds `vip` to interface `index` (no duplicate address detection, as
/// keepalived; an existing address is replaced).
pub async fn add(nl: &rtnetlink::Handle, index: u32, vip: &Vip) -> Result<(), Error> {
    let mut req = nl.address().add(index, vip.addr, vip.prefix).replace();
    let m = req.message_mut();
    m.header.scope = AddressScope::from(vip.scope);
    if let Some(l) = &vip.label {
        m.attributes.push(AddressAttribute::Label(l.clone()));
    }
    if vip.addr.is_ipv6() {
        m.attributes
            .push(AddressAttribute::Flags(vec![AddressFlag::Nodad]));
    }
    req.execute().await.map_err(|source| Error::Add {
        addr: vip.addr,
        prefix: vip.prefix,
        index,
        source,
    })
}

/// Removes `vip` from interface `index` if it is there; true when removed.
pub async fn del(nl: &rtnetlink::Handle, index: u32, vip: &Vip) -> Result<bool, Error> {
    let mut found = nl
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(vip.addr)
        .execute();
    let mut removed = false;
    while let Some(msg) = found
        .try_next()
        .await
        .map_err(|source| Error::List { index, source })?
    {
        if msg.header.prefix_len != vip.prefix {
            continue;
        }
        nl.address()
            .del(msg)
            .execute()
            .await
            .map_err(|source| Error::Del {
                addr: vip.addr,
                prefix: vip.prefix,
                index,
                source,
            })?;
        removed = true;
    }
    Ok(removed)
}
