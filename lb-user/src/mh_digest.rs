//! `lb list --mh-digest`: a digest of each `mh` service's live Maglev
//! table, read from the pinned maps, to compare directors (README
//! "Scale-out"): directors whose digests are equal send every flow of the
//! service to the same real.
//!
//! The table's slots hold real ids, which each agent allocates on its own;
//! the digest is taken over the slots with each id resolved to the real's
//! (address, port), so directors that added the same reals in another order
//! compare equal, and any difference in the reals, their weights or the
//! table-building code shows. SHA-256 over, per slot in order, the address
//! (16 bytes, IPv4 mapped into IPv6) and the port (2 bytes, network byte
//! order); an empty slot or a slot naming an unknown real hashes as 18 zero
//! bytes.

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{maglev_index, MH_TABLE_SIZE, REAL_F_INUSE, SCHED_MH};

use crate::{dataplane::Dataplane, list::Error, state::words_addr};

/// One `mh` service's table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MhTable {
    pub protocol: String,
    pub virtual_address: IpAddr,
    pub virtual_port: u16,
    /// Slots in the table (65537, the prime ipvs's mh uses by default).
    pub slots: u32,
    /// The first 16 bytes of the SHA-256, in hex (32 characters).
    pub digest: String,
    /// Slots per real, as `ADDRESS:PORT` (`[ADDRESS]:PORT` for IPv6).
    pub reals: BTreeMap<String, u32>,
}

/// The digests of every `mh` service in the maps, by virtual address and
/// port. Reads each table slot by slot (65537 lookups per service: tens of
/// milliseconds), so only on request.
pub fn read(dp: &Dataplane) -> Result<Vec<MhTable>, Error> {
    let mut real_of: BTreeMap<u32, (IpAddr, u16)> = BTreeMap::new();
    for (id, r) in dp.reals.iter().enumerate() {
        let r = r?;
        if r.flags & REAL_F_INUSE != 0 {
            real_of.insert(
                id as u32,
                (words_addr(r.addr, r.family), u16::from_be(r.port_be)),
            );
        }
    }
    let mut out = Vec::new();
    for item in dp.services.iter() {
        let (k, s) = item?;
        if s.sched != SCHED_MH {
            continue;
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut reals: BTreeMap<String, u32> = BTreeMap::new();
        for pos in 0..MH_TABLE_SIZE {
            let id = dp
                .maglev
                .get(&maglev_index(s.table_id, s.ring_gen, pos), 0)?;
            ctx.update(&slot_bytes(real_of.get(&id).copied()));
            if let Some((a, p)) = real_of.get(&id) {
                *reals
                    .entry(std::net::SocketAddr::new(*a, *p).to_string())
                    .or_default() += 1;
            }
        }
        let d = ctx.finish();
        out.push(MhTable {
            protocol: crate::list::proto_name(k.proto).to_owned(),
            virtual_address: words_addr(k.addr, k.family),
            virtual_port: u16::from_be(k.port_be),
            slots: MH_TABLE_SIZE,
            digest: hex(&d.as_ref()[..16]),
            reals,
        });
    }
    out.sort_by_key(|t| (t.virtual_address, t.virtual_port, t.protocol.clone()));
    Ok(out)
}

/// The 18 bytes a slot contributes (see the module's documentation).
fn slot_bytes(real: Option<(IpAddr, u16)>) -> [u8; 18] {
    let mut b = [0u8; 18];
    if let Some((a, p)) = real {
        let v6 = match a {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        b[..16].copy_from_slice(&v6.octets());
        b[16..].copy_from_slice(&p.to_be_bytes());
    }
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text `lb list --mh-digest` prints: one line per service.
pub fn render(tables: &[MhTable]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("Prot LocalAddress:Port            Slots  Digest (SHA-256, 128 bits)        Slots per real\n");
    if tables.is_empty() {
        s.push_str("(no mh service)\n");
    }
    for t in tables {
        let vip = std::net::SocketAddr::new(t.virtual_address, t.virtual_port).to_string();
        let per: Vec<String> = t.reals.iter().map(|(r, n)| format!("{r}={n}")).collect();
        let _ = writeln!(
            s,
            "{:<4} {vip:<29} {:<6} {} {}",
            t.protocol,
            t.slots,
            t.digest,
            per.join(" ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Input: a slot's real. Output: the mapped address and the port in
    /// network byte order; an empty slot is all zeros.
    #[test]
    fn slot_bytes_are_address_and_port() {
        let b = slot_bytes(Some(("10.0.0.2".parse().unwrap(), 8080)));
        assert_eq!(
            &b[..16],
            &"::ffff:10.0.0.2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(&b[16..], &[0x1f, 0x90]);
        assert_eq!(slot_bytes(None), [0u8; 18]);
        let b6 = slot_bytes(Some(("2001:db8::1".parse().unwrap(), 443)));
        assert_eq!(b6[0..2], [0x20, 0x01]);
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
    }

    /// Input: one IPv4 and one IPv6 table. Output: one line each, the
    /// reals as ADDRESS:PORT=SLOTS.
    #[test]
    fn rendered_one_line_per_service() {
        let t = |vip: &str, real: &str| MhTable {
            protocol: "TCP".into(),
            virtual_address: vip.parse().unwrap(),
            virtual_port: 80,
            slots: MH_TABLE_SIZE,
            digest: "00".repeat(16),
            reals: [(real.to_string(), MH_TABLE_SIZE)].into(),
        };
        let text = render(&[
            t("10.0.0.1", "10.0.0.2:80"),
            t("2001:db8::1", "[2001:db8::2]:80"),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("TCP  10.0.0.1:80 "), "{text}");
        assert!(
            lines[1].ends_with(&format!("{} 10.0.0.2:80=65537", "00".repeat(16))),
            "{text}"
        );
        assert!(
            lines[2].contains("[2001:db8::1]:80") && lines[2].ends_with("[2001:db8::2]:80=65537"),
            "{text}"
        );
        assert_eq!(render(&[]).lines().nth(1), Some("(no mh service)"));
    }
}
