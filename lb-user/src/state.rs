//! What the agent has written to the data plane, and how a new configuration
//! is applied as a difference.
//!
//! Ids are stable: a service keeps its id and a real its id and generation as
//! long as they stay configured, so established flows (which remember the real
//! id and generation) are untouched by a reload. A removed real's slot is
//! cleared, which makes its flows reschedule on their next packet (ipvs
//! `expire_nodest_conn`). Rings are double buffered: the new ring is written to
//! the idle generation, then the service entry is replaced whole, so the data
//! plane switches in one map update.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lb_common::{
    maglev_index, ring_index, Real, Service, SvcKey, FAMILY_V4, FAMILY_V6, FLAG_NAT, MAX_MH_TABLES,
    MAX_REALS, MAX_SERVICES, REAL_F_AVAILABLE, REAL_F_DOWN, REAL_F_INHIBITED, REAL_F_INUSE,
    RING_SIZE, SCHED_MH, SVC_F_HASH_PORT, SVC_F_PERSISTENT, SVC_F_PERSIST_NET,
};

use crate::{
    config::{fmt_sock, Config, Fwd, Proto, Sched, ServiceAddr, VirtualServer},
    dataplane::Dataplane,
    health::Health,
    sched::{self, Member},
};

/// Why a configuration could not be written to the tables.
#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    /// More than the data plane holds (services, Maglev tables).
    #[error("{count} {what}; the data plane holds {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: u32,
    },
    /// Every slot of a kind is in use.
    #[error("no free {0}")]
    NoSlot(&'static str),
    #[error("applying virtual_server {service}")]
    Service {
        service: String,
        #[source]
        source: Box<TablesError>,
    },
    #[error(transparent)]
    Dataplane(#[from] crate::dataplane::DataplaneError),
    #[error("map operation failed")]
    Map(#[source] Box<aya::maps::MapError>),
}

impl From<aya::maps::MapError> for TablesError {
    fn from(e: aya::maps::MapError) -> Self {
        TablesError::Map(Box::new(e))
    }
}

type Result<T> = std::result::Result<T, TablesError>;

/// A real's health as the health checkers see it.
pub type HealthOf<'a> = &'a dyn Fn(&ServiceAddr, IpAddr, u16) -> Health;

/// Every real up (no checkers, or tests that do not exercise them).
pub fn all_up(_: &ServiceAddr, _: IpAddr, _: u16) -> Health {
    Health::Up { weight: None }
}

/// The director's source address toward `real`, as the kernel's routing
/// would choose it (a connected UDP socket sends nothing). TUN's outer source.
pub fn source_toward(real: IpAddr) -> Option<IpAddr> {
    let bind: std::net::SocketAddr = match real {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect((real, 9)).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// Address in the maps' layout: network-order words, IPv4 in word 0.
pub fn addr_words(a: IpAddr) -> ([u32; 4], u8) {
    match a {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], FAMILY_V6)
        }
    }
}

/// Inverse of [`addr_words`].
pub fn words_addr(w: [u32; 4], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::from(w[0].to_ne_bytes()))
    } else {
        let mut o = [0u8; 16];
        for i in 0..4 {
            o[i * 4..i * 4 + 4].copy_from_slice(&w[i].to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(o))
    }
}

pub fn svc_key(s: &ServiceAddr) -> SvcKey {
    let (addr, family) = addr_words(s.addr);
    SvcKey {
        addr,
        port_be: s.port.to_be(),
        proto: s.proto.number(),
        family,
    }
}

/// Where and how a real is reached, from the neighbour table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2 {
    pub ifindex: u32,
    /// The real's MAC.
    pub mac: [u8; 6],
    /// The MAC of interface `ifindex` (source of forwarded frames).
    pub src_mac: [u8; 6],
}

#[derive(Clone, Debug)]
struct RealSlot {
    id: u32,
    entry: Real,
}

#[derive(Clone, Debug)]
struct SvcSlot {
    entry: Service,
    reals: BTreeMap<(IpAddr, u16), RealSlot>,
    /// Real ids in ring order as last written.
    ring: Vec<u32>,
}

/// The agent's view of the service and real tables.
#[derive(Default)]
pub struct Tables {
    services: BTreeMap<ServiceAddr, SvcSlot>,
    /// Connection sync runs: the data plane reports flows (`FLAG_SYNC`).
    pub sync: bool,
}

impl Tables {
    /// Rebuilds the view from maps an earlier agent left pinned, so that ids
    /// (and therefore established flows) survive a restart.
    pub fn recover(dp: &Dataplane) -> Result<Self> {
        let mut by_svc: BTreeMap<u32, Vec<(u32, Real)>> = BTreeMap::new();
        for (id, r) in dp.reals.iter().enumerate() {
            let r = r?;
            if r.flags & REAL_F_INUSE != 0 {
                by_svc.entry(r.svc_id).or_default().push((id as u32, r));
            }
        }
        let mut services = BTreeMap::new();
        for item in dp.services.iter() {
            let (k, s) = item?;
            let proto = match k.proto {
                lb_common::PROTO_TCP => Proto::Tcp,
                lb_common::PROTO_UDP => Proto::Udp,
                _ => continue,
            };
            let addr = ServiceAddr {
                addr: words_addr(k.addr, k.family),
                port: u16::from_be(k.port_be),
                proto,
            };
            let mut reals = BTreeMap::new();
            for (id, r) in by_svc.remove(&s.svc_id).unwrap_or_default() {
                let a = words_addr(r.addr, r.family);
                reals.insert((a, u16::from_be(r.port_be)), RealSlot { id, entry: r });
            }
            let mut ring = Vec::new();
            if s.sched == SCHED_MH {
                for pos in 0..s.ring_len.min(lb_common::MH_TABLE_SIZE) {
                    ring.push(
                        dp.maglev
                            .get(&maglev_index(s.table_id, s.ring_gen, pos), 0)?,
                    );
                }
            } else {
                for pos in 0..s.ring_len.min(RING_SIZE) {
                    ring.push(dp.rings.get(&ring_index(s.svc_id, s.ring_gen, pos), 0)?);
                }
            }
            services.insert(
                addr,
                SvcSlot {
                    entry: s,
                    reals,
                    ring,
                },
            );
        }
        Ok(Self {
            services,
            sync: false,
        })
    }

    /// The health checkers' verdict on each real, as the pinned tables
    /// show it (true: up; false: down, [`REAL_F_DOWN`] or
    /// [`REAL_F_INHIBITED`]): what a restarted agent starts its checkers
    /// from instead of keepalived's initial state, so that it neither marks
    /// a healthy real down (`alpha`) nor sends traffic to a failed one
    /// before its checker has run.
    pub fn recovered_health(&self) -> BTreeMap<crate::config::RealKey, bool> {
        self.services
            .iter()
            .flat_map(|(svc, s)| {
                s.reals.iter().map(move |((addr, port), r)| {
                    let down = r.entry.flags & (REAL_F_DOWN | REAL_F_INHIBITED) != 0;
                    ((*svc, *addr, *port), !down)
                })
            })
            .collect()
    }

    /// Generation of every real id in use.
    pub fn real_gens(&self) -> BTreeMap<u32, u32> {
        self.services
            .values()
            .flat_map(|s| s.reals.values().map(|r| (r.id, r.entry.gen)))
            .collect()
    }

    /// What connection sync needs to name flows by address and port and
    /// to find this director's ids for a peer's flows.
    pub fn sync_index(&self) -> crate::sync::Index {
        let mut ix = crate::sync::Index::default();
        for (k, s) in &self.services {
            let key = (k.addr, k.port, k.proto.number());
            let mut reals = std::collections::HashMap::new();
            for (&(addr, port), r) in &s.reals {
                reals.insert((addr, port), r.id);
                ix.reals.insert(
                    r.id,
                    crate::sync::RealEntry {
                        addr,
                        port,
                        fwd: r.entry.fwd,
                        gen: r.entry.gen,
                        svc_id: s.entry.svc_id,
                    },
                );
            }
            ix.by_id.insert(s.entry.svc_id, key);
            ix.services.insert(
                key,
                crate::sync::SvcEntry {
                    id: s.entry.svc_id,
                    flags: s.entry.flags,
                    persist_timeout_s: s.entry.persist_timeout_s,
                    persist_prefix: s.entry.persist_prefix,
                    reals,
                },
            );
        }
        ix
    }

    /// Services currently applied, with their ids.
    pub fn service_ids(&self) -> impl Iterator<Item = (&ServiceAddr, u32)> {
        self.services.iter().map(|(k, s)| (k, s.entry.svc_id))
    }

    /// Id of a real of a service.
    pub fn real_id(&self, svc: &ServiceAddr, addr: IpAddr, port: u16) -> Option<u32> {
        self.services
            .get(svc)?
            .reals
            .get(&(addr, port))
            .map(|r| r.id)
    }

    /// Applies `cfg`, with `l2` telling where each real address is reachable
    /// (reals without an entry are configured but get no traffic yet) and
    /// `health` what the checkers found. Only differences are written.
    pub fn sync(
        &mut self,
        dp: &mut Dataplane,
        cfg: &Config,
        l2: &dyn Fn(IpAddr) -> Option<L2>,
        health: HealthOf,
    ) -> Result<()> {
        let wanted: BTreeSet<ServiceAddr> = cfg.services.iter().map(|v| v.key).collect();
        if wanted.len() > MAX_SERVICES as usize {
            return Err(TablesError::TooMany {
                what: "virtual services configured",
                count: wanted.len(),
                max: MAX_SERVICES,
            });
        }
        // Removed services: delete the entry first (no new flows), then free the reals.
        let gone: Vec<ServiceAddr> = self
            .services
            .keys()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        for k in gone {
            let slot = self.services.remove(&k).expect("key listed above");
            let _ = dp.services.remove(&svc_key(&k));
            for r in slot.reals.values() {
                clear_real(dp, r)?;
            }
        }
        let mh = cfg.services.iter().filter(|v| v.sched == Sched::Mh).count();
        if mh > MAX_MH_TABLES as usize {
            return Err(TablesError::TooMany {
                what: "virtual services use mh (one Maglev table each)",
                count: mh,
                max: MAX_MH_TABLES,
            });
        }
        // Services leaving mh free their table first, so others can take it.
        for vs in &cfg.services {
            if let Some(slot) = self.services.get_mut(&vs.key) {
                if vs.sched != Sched::Mh && slot.entry.sched == SCHED_MH {
                    slot.entry.table_id = u32::MAX;
                }
            }
        }
        for vs in &cfg.services {
            self.sync_service(dp, vs, l2, health)
                .map_err(|e| TablesError::Service {
                    service: vs.key.to_string(),
                    source: Box::new(e),
                })?;
        }
        let flags = if cfg
            .services
            .iter()
            .any(|v| v.reals.iter().any(|r| r.fwd_in(v) == Fwd::Nat))
        {
            FLAG_NAT
        } else {
            0
        };
        let flags = if self.sync {
            flags | lb_common::FLAG_SYNC
        } else {
            flags
        };
        dp.flags.set(0, flags, 0)?;
        Ok(())
    }

    /// Zeroes the counters of `only` (and its reals), or of every service
    /// (`ipvsadm -Z [SERVICE]`).
    pub fn zero_stats(&self, dp: &mut Dataplane, only: Option<&ServiceAddr>) -> Result<()> {
        for (key, slot) in &self.services {
            if only.is_some_and(|o| o != key) {
                continue;
            }
            let reals: Vec<u32> = slot.reals.values().map(|r| r.id).collect();
            dp.zero_stats(slot.entry.svc_id, &reals)?;
        }
        Ok(())
    }

    fn used_tables(&self) -> BTreeSet<u32> {
        self.services
            .values()
            .filter(|s| s.entry.sched == SCHED_MH && s.entry.table_id != u32::MAX)
            .map(|s| s.entry.table_id)
            .collect()
    }

    fn used_svc_ids(&self) -> BTreeSet<u32> {
        self.services.values().map(|s| s.entry.svc_id).collect()
    }

    fn used_real_ids(&self) -> BTreeSet<u32> {
        self.services
            .values()
            .flat_map(|s| s.reals.values().map(|r| r.id))
            .collect()
    }

    fn sync_service(
        &mut self,
        dp: &mut Dataplane,
        vs: &VirtualServer,
        l2: &dyn Fn(IpAddr) -> Option<L2>,
        health: HealthOf,
    ) -> Result<()> {
        let mut fresh = false;
        if !self.services.contains_key(&vs.key) {
            let used = self.used_svc_ids();
            let id = (0..MAX_SERVICES)
                .find(|i| !used.contains(i))
                .ok_or(TablesError::NoSlot("service slot"))?;
            dp.reset_svc_slot(id)?;
            let entry = Service {
                svc_id: id,
                ring_gen: 1, // the first ring goes to generation 0
                table_id: u32::MAX,
                ..Default::default()
            };
            self.services.insert(
                vs.key,
                SvcSlot {
                    entry,
                    reals: BTreeMap::new(),
                    ring: Vec::new(),
                },
            );
            fresh = true;
        }
        // The slots in use are collected only when this service needs a new
        // one: a health change or a reload that adds nothing here costs
        // O(this service), not O(every real of every service).
        let known = &self.services[&vs.key];
        let adds_real = vs
            .reals
            .iter()
            .any(|r| !known.reals.contains_key(&(r.addr, r.port)));
        let adds_table = vs.sched == Sched::Mh && known.entry.table_id == u32::MAX;
        let mut used_reals = if adds_real {
            self.used_real_ids()
        } else {
            BTreeSet::new()
        };
        let used_tables = if adds_table {
            self.used_tables()
        } else {
            BTreeSet::new()
        };
        let slot = self.services.get_mut(&vs.key).expect("inserted above");
        let svc_id = slot.entry.svc_id;

        // Reals: add or update the wanted ones, remember the removed ones.
        let wanted: BTreeSet<(IpAddr, u16)> = vs.reals.iter().map(|r| (r.addr, r.port)).collect();
        let removed: Vec<RealSlot> = slot
            .reals
            .iter()
            .filter(|(k, _)| !wanted.contains(k))
            .map(|(_, r)| r.clone())
            .collect();
        slot.reals.retain(|k, _| wanted.contains(k));
        for rs in &vs.reals {
            let (addr, family) = addr_words(rs.addr);
            let key = (rs.addr, rs.port);
            let id = match slot.reals.get(&key) {
                Some(r) => r.id,
                None => {
                    let id = (0..MAX_REALS)
                        .find(|i| !used_reals.contains(i))
                        .ok_or(TablesError::NoSlot("real slot"))?;
                    used_reals.insert(id);
                    let old = dp.reals.get(&id, 0)?;
                    dp.reset_real_slot(id)?;
                    let entry = Real {
                        gen: old.gen.wrapping_add(1),
                        ..Default::default()
                    };
                    slot.reals.insert(key, RealSlot { id, entry });
                    id
                }
            };
            let cur = slot.reals.get_mut(&key).expect("present");
            // The sorry server is never checked, even where a real of the
            // same address and port failed its checks (keepalived).
            let checked = if rs.sorry {
                Health::Up { weight: None }
            } else {
                health(&vs.key, rs.addr, rs.port)
            };
            let weight = match checked {
                // inhibit_on_failure: stays, with weight 0 (no new flows).
                Health::Down { inhibit: true } => 0,
                Health::Up { weight: Some(w) } => w,
                _ => rs.weight,
            };
            let fwd = rs.fwd_in(vs);
            let mut entry = Real {
                addr,
                // Only NAT changes the port on the wire.
                port_be: if fwd == Fwd::Nat {
                    rs.port
                } else {
                    vs.key.port
                }
                .to_be(),
                family,
                _pad0: 0,
                flags: REAL_F_INUSE,
                gen: cur.entry.gen,
                svc_id,
                weight,
                fwd: fwd.id(),
                ifindex: 0,
                mac: [0; 6],
                src_mac: [0; 6],
                tun_src: [0; 4],
                u_threshold: rs.u_threshold,
                l_threshold: rs.l_threshold,
            };
            match fwd {
                // DR needs the real's MAC; NAT and TUN route with the FIB.
                Fwd::Dr => {
                    if let Some(w) = l2(rs.addr) {
                        entry.flags |= REAL_F_AVAILABLE;
                        entry.ifindex = w.ifindex;
                        entry.mac = w.mac;
                        entry.src_mac = w.src_mac;
                    }
                }
                Fwd::Nat => entry.flags |= REAL_F_AVAILABLE,
                Fwd::Tun => match source_toward(rs.addr) {
                    Some(src) => {
                        entry.flags |= REAL_F_AVAILABLE;
                        entry.tun_src = addr_words(src).0;
                    }
                    None => tracing::warn!(
                        real = %fmt_sock(rs.addr, rs.port),
                        "no route to the real server: it gets no tunnelled traffic"
                    ),
                },
            }
            if checked == (Health::Down { inhibit: true }) {
                // Kept at weight 0 because its checks failed, not drained:
                // its persistence templates no longer hold (see
                // REAL_F_INHIBITED).
                entry.flags |= REAL_F_INHIBITED;
            }
            if checked == (Health::Down { inhibit: false }) {
                // Failed: out of scheduling; its flows are rescheduled on
                // their next packet (ipvs removes the destination).
                entry.flags = (entry.flags & !REAL_F_AVAILABLE) | REAL_F_DOWN;
            }
            if fresh || entry != cur.entry {
                dp.reals.set(id, entry, 0)?;
                cur.entry = entry;
            }
        }

        // Scheduler table over available reals, in configuration order;
        // dh and mh: over the reals not failed (sched::in_dh_table,
        // sched::in_mh_table), so that mh's table is the same on every
        // director whatever each one can reach.
        let members: Vec<Member> = vs
            .reals
            .iter()
            .filter_map(|r| {
                let s = slot.reals.get(&(r.addr, r.port))?;
                let member = match vs.sched {
                    Sched::Dh => sched::in_dh_table(s.entry.flags),
                    Sched::Mh => sched::in_mh_table(s.entry.flags),
                    _ => s.entry.flags & REAL_F_AVAILABLE != 0,
                };
                member.then_some(Member {
                    id: s.id,
                    weight: s.entry.weight,
                    addr: r.addr,
                    port: r.port,
                })
            })
            .collect();
        let ring = sched::build(vs.sched, &members, RING_SIZE as usize);
        let mut entry = slot.entry;
        entry.sched = vs.sched.id();
        entry.flags = if vs.persistence_timeout.is_some() {
            SVC_F_PERSISTENT
        } else {
            0
        };
        if vs.hash_port {
            entry.flags |= SVC_F_HASH_PORT;
        }
        if vs.hash_fallback {
            entry.flags |= lb_common::SVC_F_FALLBACK;
        }
        entry.persist_timeout_s = vs.persistence_timeout.unwrap_or(0);
        // ipvs's persistence netmask: templates per client network.
        match vs.persistence_prefix {
            Some(p) if vs.persistence_timeout.is_some() => {
                entry.flags |= SVC_F_PERSIST_NET;
                entry.persist_prefix = u32::from(p);
            }
            _ => entry.persist_prefix = 0,
        }
        let mut table_changed = false;
        if vs.sched == Sched::Mh && entry.table_id == u32::MAX {
            entry.table_id = (0..MAX_MH_TABLES)
                .find(|t| !used_tables.contains(t))
                .ok_or(TablesError::NoSlot("Maglev table"))?;
            table_changed = true;
        } else if vs.sched != Sched::Mh {
            entry.table_id = u32::MAX;
        }
        let ring_switched =
            ring != slot.ring || fresh || table_changed || entry.sched != slot.entry.sched;
        if ring_switched {
            let gen = entry.ring_gen ^ 1;
            for (pos, id) in ring.iter().enumerate() {
                let pos = pos as u32;
                if vs.sched == Sched::Mh {
                    dp.maglev
                        .set(maglev_index(entry.table_id, gen, pos), *id, 0)?;
                } else {
                    dp.rings.set(ring_index(svc_id, gen, pos), *id, 0)?;
                }
            }
            entry.ring_gen = gen;
            entry.ring_len = ring.len() as u32;
        }
        let old_sched = Sched::from_id(slot.entry.sched);
        if entry != slot.entry || fresh {
            dp.services.insert(svc_key(&vs.key), entry, 0)?;
            slot.entry = entry;
        }
        if ring_switched && matches!(vs.sched, Sched::Rr | Sched::Wrr) {
            // The data plane now walks the new ring: place the shared cursor
            // as ipvs keeps its position (sched::carry_cursor). Read and
            // written after the switch, so that at most the connections
            // arriving between the two calls take a slot of their own.
            let cursor = if fresh {
                0
            } else {
                dp.cursors.get(&svc_id, 0)?
            };
            let old_sched = old_sched.filter(|_| !fresh).unwrap_or(vs.sched);
            let next = sched::carry_cursor(old_sched, &slot.ring, cursor, vs.sched, &ring);
            dp.cursors.set(svc_id, next, 0)?;
        }
        slot.ring = ring;
        // Only now that no ring refers to them: free the removed reals.
        for r in &removed {
            clear_real(dp, r)?;
        }
        Ok(())
    }
}

fn clear_real(dp: &mut Dataplane, r: &RealSlot) -> Result<()> {
    // Keep the generation so the next owner of the slot gets a new one.
    let cleared = Real {
        gen: r.entry.gen,
        ..Default::default()
    };
    dp.reals.set(r.id, cleared, 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: plain-old-data types without padding.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()).to_vec() }
    }

    #[test]
    fn service_key_encoding_matches_the_wire() {
        let k = svc_key(&ServiceAddr {
            addr: "10.0.0.1".parse().unwrap(),
            port: 80,
            proto: Proto::Tcp,
        });
        let mut want = vec![10, 0, 0, 1];
        want.extend([0; 12]);
        want.extend([0, 80, 6, 4]);
        assert_eq!(bytes(&k), want);
        let k6 = svc_key(&ServiceAddr {
            addr: "2001:db8::1".parse().unwrap(),
            port: 443,
            proto: Proto::Udp,
        });
        let mut want6: Vec<u8> = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        want6.extend([0x01, 0xbb, 17, 6]);
        assert_eq!(bytes(&k6), want6);
    }

    #[test]
    fn address_words_round_trip() {
        for a in [
            "192.0.2.1",
            "255.255.255.255",
            "::1",
            "2001:db8::ff00:42:8329",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            let (w, f) = addr_words(ip);
            assert_eq!(words_addr(w, f), ip);
        }
    }
}
