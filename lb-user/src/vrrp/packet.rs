//! VRRP advertisements on the wire: VRRPv2 (RFC 3768, IPv4, with the PASS
//! authentication keepalived still supports) and VRRPv3 (RFC 5798, IPv4 and
//! IPv6), encoded and validated as keepalived does. The IP header is the
//! kernel's (raw socket, protocol 112); what it carries that matters here —
//! TTL / hop limit and the addresses for the v3 pseudo-header — is passed in.

use std::net::IpAddr;

use lb_common::csum::{fold, sum_be};

/// The version and the PASS authentication data are the configuration's.
pub use crate::config::vrrp::{pass_auth, Version, AUTH_LEN};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// TTL / hop limit every advertisement must carry.
pub const TTL: u8 = 255;
/// Advertisement type (the only one).
const TYPE_ADVERT: u8 = 1;
/// VRRPv2 authentication types.
pub const AUTH_NONE: u8 = 0;
pub const AUTH_PASS: u8 = 1;

/// A decoded advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2 carries whole seconds).
    pub interval_cs: u16,
    pub addrs: Vec<IpAddr>,
    /// v2 only: authentication type and data (PASS: the password, zero padded).
    pub auth_type: u8,
    pub auth: [u8; AUTH_LEN],
}

/// Why a received packet was dropped (each is counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    /// TTL / hop limit not 255 (the packet crossed a router).
    Ttl,
    /// Shorter than its header and addresses say, or not a whole packet.
    Length,
    Version,
    Type,
    Checksum,
    /// Address family of the packet differs from its addresses' count.
    Family,
}

impl Reject {
    pub fn name(self) -> &'static str {
        match self {
            Reject::Ttl => "ttl",
            Reject::Length => "length",
            Reject::Version => "version",
            Reject::Type => "type",
            Reject::Checksum => "checksum",
            Reject::Family => "family",
        }
    }
}

/// The IPv4 / IPv6 pseudo-header sum for VRRPv3 (RFC 5798 §5.2.8).
fn pseudo(src: IpAddr, dst: IpAddr, len: usize) -> u64 {
    let mut acc = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum_be(&s.octets(), acc);
            acc = sum_be(&d.octets(), acc);
            acc += IPPROTO_VRRP as u64 + len as u64;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum_be(&s.octets(), acc);
            acc = sum_be(&d.octets(), acc);
            acc += (len as u64 >> 16) + (len as u64 & 0xffff) + IPPROTO_VRRP as u64;
        }
        _ => {}
    }
    acc
}

/// Checksum of a VRRP message whose checksum field is zero: v2 over the
/// message alone, v3 with the pseudo-header (keepalived's default).
pub fn checksum(version: Version, msg: &[u8], src: IpAddr, dst: IpAddr) -> u16 {
    let acc = match version {
        Version::V2 => 0,
        Version::V3 => pseudo(src, dst, msg.len()),
    };
    !fold(sum_be(msg, acc))
}

impl Advert {
    /// The VRRP message (without IP header) sent from `src` to `dst`.
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let mut m = Vec::with_capacity(8 + self.addrs.len() * 16 + AUTH_LEN);
        match self.version {
            Version::V2 => {
                m.extend_from_slice(&[
                    0x20 | TYPE_ADVERT,
                    self.vrid,
                    self.priority,
                    self.addrs.len() as u8,
                    self.auth_type,
                    // v2 counts whole seconds (at least 1).
                    (self.interval_cs / 100).clamp(1, 255) as u8,
                    0,
                    0,
                ]);
            }
            Version::V3 => {
                let int = self.interval_cs & 0x0fff;
                m.extend_from_slice(&[
                    0x30 | TYPE_ADVERT,
                    self.vrid,
                    self.priority,
                    self.addrs.len() as u8,
                    (int >> 8) as u8,
                    int as u8,
                    0,
                    0,
                ]);
            }
        }
        for a in &self.addrs {
            match a {
                IpAddr::V4(v) => m.extend_from_slice(&v.octets()),
                IpAddr::V6(v) => m.extend_from_slice(&v.octets()),
            }
        }
        if self.version == Version::V2 {
            m.extend_from_slice(&self.auth);
        }
        let c = checksum(self.version, &m, src, dst);
        m[6..8].copy_from_slice(&c.to_be_bytes());
        m
    }

    /// Decodes and validates a received message (TTL, length, version,
    /// type, checksum); the instance checks VRID, authentication and the
    /// interval.
    pub fn decode(msg: &[u8], src: IpAddr, dst: IpAddr, ttl: u8) -> Result<Advert, Reject> {
        if ttl != TTL {
            return Err(Reject::Ttl);
        }
        if msg.len() < 8 {
            return Err(Reject::Length);
        }
        let version = match msg[0] >> 4 {
            2 => Version::V2,
            3 => Version::V3,
            _ => return Err(Reject::Version),
        };
        if msg[0] & 0x0f != TYPE_ADVERT {
            return Err(Reject::Type);
        }
        let count = msg[3] as usize;
        let v6 = src.is_ipv6();
        if v6 && version == Version::V2 {
            return Err(Reject::Version);
        }
        let alen = if v6 { 16 } else { 4 };
        let want = 8 + count * alen + if version == Version::V2 { AUTH_LEN } else { 0 };
        if msg.len() < want {
            return Err(Reject::Length);
        }
        let msg = &msg[..want];
        let mut zeroed = msg.to_vec();
        zeroed[6] = 0;
        zeroed[7] = 0;
        let got = u16::from_be_bytes([msg[6], msg[7]]);
        if checksum(version, &zeroed, src, dst) != got {
            return Err(Reject::Checksum);
        }
        let mut addrs = Vec::with_capacity(count);
        for i in 0..count {
            let o = 8 + i * alen;
            addrs.push(if v6 {
                let mut b = [0u8; 16];
                b.copy_from_slice(&msg[o..o + 16]);
                IpAddr::from(b)
            } else {
                IpAddr::from([msg[o], msg[o + 1], msg[o + 2], msg[o + 3]])
            });
        }
        let (interval_cs, auth_type, mut auth) = match version {
            Version::V2 => (msg[5] as u16 * 100, msg[4], [0u8; AUTH_LEN]),
            Version::V3 => (
                u16::from_be_bytes([msg[4], msg[5]]) & 0x0fff,
                AUTH_NONE,
                [0u8; AUTH_LEN],
            ),
        };
        if version == Version::V2 {
            auth.copy_from_slice(&msg[want - AUTH_LEN..want]);
        }
        Ok(Advert {
            version,
            vrid: msg[1],
            priority: msg[2],
            interval_cs,
            addrs,
            auth_type,
            auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A VRRPv2 advertisement as RFC 3768 lays it out (VRID 51, priority 100,
    /// one address, PASS "1111", interval 1 s), checksum computed by hand.
    #[test]
    fn v2_with_pass_auth_matches_the_rfc_layout() {
        let a = Advert {
            version: Version::V2,
            vrid: 51,
            priority: 100,
            interval_cs: 100,
            addrs: vec![ip("172.16.7.5")],
            auth_type: AUTH_PASS,
            auth: pass_auth("1111"),
        };
        let m = a.encode(ip("172.16.7.3"), ip("224.0.0.18"));
        let mut want = vec![0x21, 51, 100, 1, 1, 1, 0, 0, 172, 16, 7, 5];
        want.extend_from_slice(b"1111\0\0\0\0");
        // Sum of the 16-bit words, folded and complemented.
        let words: u32 = want
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .sum();
        let c = !(((words & 0xffff) + (words >> 16)) as u16);
        want[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(m, want);
        let back = Advert::decode(&m, ip("172.16.7.3"), ip("224.0.0.18"), 255).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn v3_checksums_cover_the_pseudo_header_for_both_families() {
        for (src, dst, vip) in [
            ("10.0.0.2", "224.0.0.18", "10.0.0.100"),
            ("fe80::1", "ff02::12", "2001:db8::100"),
        ] {
            let a = Advert {
                version: Version::V3,
                vrid: 7,
                priority: 150,
                interval_cs: 10,
                addrs: vec![ip(vip)],
                auth_type: AUTH_NONE,
                auth: [0; AUTH_LEN],
            };
            let m = a.encode(ip(src), ip(dst));
            assert_eq!(&m[..6], &[0x31, 7, 150, 1, 0, 10]);
            assert_eq!(Advert::decode(&m, ip(src), ip(dst), 255).unwrap(), a);
            // The same bytes from another source fail: the pseudo-header counts.
            let other = if src.contains(':') {
                "fe80::2"
            } else {
                "10.0.0.3"
            };
            assert_eq!(
                Advert::decode(&m, ip(other), ip(dst), 255),
                Err(Reject::Checksum)
            );
        }
    }

    #[test]
    fn invalid_packets_are_rejected_with_their_reason() {
        let a = Advert {
            version: Version::V3,
            vrid: 1,
            priority: 100,
            interval_cs: 100,
            addrs: vec![ip("10.0.0.100"), ip("10.0.0.101")],
            auth_type: AUTH_NONE,
            auth: [0; AUTH_LEN],
        };
        let (s, d) = (ip("10.0.0.2"), ip("224.0.0.18"));
        let m = a.encode(s, d);
        assert_eq!(Advert::decode(&m, s, d, 254), Err(Reject::Ttl));
        for n in 0..m.len() {
            assert_eq!(
                Advert::decode(&m[..n], s, d, 255),
                Err(Reject::Length),
                "{n} bytes"
            );
        }
        let mut bad = m.clone();
        bad[0] = 0x41;
        assert_eq!(Advert::decode(&bad, s, d, 255), Err(Reject::Version));
        bad[0] = 0x32;
        assert_eq!(Advert::decode(&bad, s, d, 255), Err(Reject::Type));
        let mut bad = m.clone();
        bad[9] ^= 1;
        assert_eq!(Advert::decode(&bad, s, d, 255), Err(Reject::Checksum));
        // Trailing bytes beyond the addresses are ignored (as keepalived).
        let mut long = m.clone();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(Advert::decode(&long, s, d, 255).unwrap(), a);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Advertisements captured from Debian's keepalived 2.2.7 (VRID 51,
    /// priority 150, advert_int 1, VIP 10.77.0.100, from 10.77.0.2), whole IP
    /// packets: ours must decode them and encode the very same bytes.
    #[test]
    fn keepalived_bytes_round_trip() {
        for (captured, version, auth_type, auth) in [
            (
                "45c0002800010000ff70d0430a4d0002e0000012213396010101cf9a0a4d00647365637265743132",
                Version::V2,
                AUTH_PASS,
                pass_auth("secret12"),
            ),
            (
                "45c0002000010000ff70d04b0a4d0002e000001231339601006442d80a4d0064",
                Version::V3,
                AUTH_NONE,
                [0; AUTH_LEN],
            ),
        ] {
            let pkt = hex(captured);
            // TTL 255, protocol 112, TOS 0xc0 in the kernel-built IP header.
            assert_eq!((pkt[1], pkt[8], pkt[9]), (0xc0, TTL, IPPROTO_VRRP));
            let (src, dst) = (ip("10.77.0.2"), ip("224.0.0.18"));
            let a = Advert::decode(&pkt[20..], src, dst, pkt[8]).unwrap();
            assert_eq!(
                a,
                Advert {
                    version,
                    vrid: 51,
                    priority: 150,
                    interval_cs: 100,
                    addrs: vec![ip("10.77.0.100")],
                    auth_type,
                    auth,
                }
            );
            assert_eq!(a.encode(src, dst), &pkt[20..], "{version:?}");
        }
    }
}
