//! Virtual addresses on interfaces, through rtnetlink.

use anyhow::Context as _;
use futures::TryStreamExt as _;
use netlink_packet_route::address::{AddressAttribute, AddressFlag, AddressScope};

use crate::config::vrrp::Vip;

/// Adds `vip` to interface `index` (no duplicate address detection, as
/// keepalived; an existing address is replaced).
pub async fn add(nl: &rtnetlink::Handle, index: u32, vip: &Vip) -> anyhow::Result<()> {
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
    req.execute()
        .await
        .with_context(|| format!("adding {}/{} to ifindex {index}", vip.addr, vip.prefix))
}

/// Removes `vip` from interface `index` if it is there; true when removed.
pub async fn del(nl: &rtnetlink::Handle, index: u32, vip: &Vip) -> anyhow::Result<bool> {
    let mut found = nl
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(vip.addr)
        .execute();
    let mut removed = false;
    while let Some(msg) = found.try_next().await? {
        if msg.header.prefix_len != vip.prefix {
            continue;
        }
        nl.address().del(msg).execute().await.with_context(|| {
            format!("removing {}/{} from ifindex {index}", vip.addr, vip.prefix)
        })?;
        removed = true;
    }
    Ok(removed)
}
