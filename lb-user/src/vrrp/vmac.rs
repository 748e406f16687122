//! VMAC interfaces (`use_vmac`): a private-mode macvlan on the instance's
//! interface whose MAC is the virtual router MAC (RFC 5798 7.3). The
//! virtual addresses live on it, so clients keep one MAC for the VIP
//! whichever director is master; a takeover only has to move the switch's
//! forwarding entry (the new master's gratuitous ARP / NA does).
//!
//! As keepalived, the base interface is set to `arp_ignore 1` and
//! `arp_filter 1` while a VMAC is in use, so that it does not answer ARP for
//! the VIP with its own MAC; the previous values are restored when the
//! instance stops. Adverts are sent and received on the base interface
//! (keepalived's `vmac_xmit_base`).

use std::path::PathBuf;

use futures::TryStreamExt as _;

use super::net::{self, Link};
use crate::config::vrrp::Vmac;

/// `MACVLAN_MODE_PRIVATE` (linux/if_link.h): no traffic between macvlans of
/// one interface.
const MACVLAN_MODE_PRIVATE: u32 = 1;

/// A VMAC interface that could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating VMAC interface {name} on {base}")]
    Create {
        name: String,
        base: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("setting VMAC interface {name}'s address and state")]
    Set {
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("removing VMAC interface {name}")]
    Remove {
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("reading VMAC interface {name}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("setting {path}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A sysctl value to put back when the VMAC goes.
#[derive(Clone, Debug)]
pub struct Saved {
    path: PathBuf,
    value: String,
}

/// The index of interface `name`, if there is one.
async fn index_of(nl: &rtnetlink::Handle, name: &str) -> Option<u32> {
    let mut links = nl.link().get().match_name(name.to_string()).execute();
    links
        .try_next()
        .await
        .ok()
        .flatten()
        .map(|m| m.header.index)
}

/// Creates `v` on `base` (replacing an interface of that name an earlier run
/// left), sets its MAC and brings it up; sets the base's ARP sysctls.
/// Returns the new interface and the sysctl values to restore.
pub async fn create(
    nl: &rtnetlink::Handle,
    base: &Link,
    v: &Vmac,
) -> Result<(Link, Vec<Saved>), Error> {
    if let Some(old) = index_of(nl, &v.name).await {
        tracing::warn!(vmac = %v.name, "removing a VMAC interface left from an earlier run");
        remove_index(nl, &v.name, old).await?;
    }
    nl.link()
        .add()
        .macvlan(v.name.clone(), base.index, MACVLAN_MODE_PRIVATE)
        .execute()
        .await
        .map_err(|source| Error::Create {
            name: v.name.clone(),
            base: base.name.clone(),
            source,
        })?;
    let index = index_of(nl, &v.name).await.ok_or_else(|| Error::Read {
        name: v.name.clone(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    nl.link()
        .set(index)
        .address(v.mac.to_vec())
        .up()
        .execute()
        .await
        .map_err(|source| Error::Set {
            name: v.name.clone(),
            source,
        })?;
    let mut saved = Vec::new();
    for (key, value) in [("arp_ignore", "1"), ("arp_filter", "1")] {
        let path = PathBuf::from(format!("/proc/sys/net/ipv4/conf/{}/{key}", base.name));
        let old = std::fs::read_to_string(&path).map_err(|source| Error::Sysctl {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, value).map_err(|source| Error::Sysctl {
            path: path.clone(),
            source,
        })?;
        saved.push(Saved {
            path,
            value: old.trim().to_string(),
        });
    }
    let link = net::link(&v.name).map_err(|source| Error::Read {
        name: v.name.clone(),
        source,
    })?;
    tracing::info!(vmac = %v.name, base = %base.name, mac = %crate::util::fmt_mac(&v.mac), "VMAC interface created");
    Ok((link, saved))
}

async fn remove_index(nl: &rtnetlink::Handle, name: &str, index: u32) -> Result<(), Error> {
    nl.link()
        .del(index)
        .execute()
        .await
        .map_err(|source| Error::Remove {
            name: name.to_string(),
            source,
        })
}

/// Removes the VMAC interface (its addresses go with it) and restores the
/// base's sysctls.
pub async fn remove(nl: &rtnetlink::Handle, link: &Link, saved: &[Saved]) -> Result<(), Error> {
    for s in saved {
        if let Err(source) = std::fs::write(&s.path, &s.value) {
            tracing::warn!(
                "{}",
                crate::util::Chain(&Error::Sysctl {
                    path: s.path.clone(),
                    source,
                })
            );
        }
    }
    remove_index(nl, &link.name, link.index).await
}
