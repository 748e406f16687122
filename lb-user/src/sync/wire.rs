//! The ipvs connection synchronisation protocol, version 1 (Linux
//! `net/netfilter/ipvs/ip_vs_sync.c`), as lb sends and reads it.
//!
//! A message is one UDP datagram (multicast group 224.0.0.81, port 8848 by
//! default), all fields in network byte order:
//!
//! ```text
//! header (8 bytes):  reserved (u8, 0) | sync id (u8) | size (u16, whole message)
//!                    conn count (u8)  | version (u8, 1) | spare (u16, 0)
//! conn (v4: 36 bytes, v6: 72), padded to 4 bytes:
//!                    type (u8: bit 0 IPv6) | protocol (u8) | ver_size (u16: version << 12 | size)
//!                    flags (u32, IP_VS_CONN_F_*) | state (u16) | cport (u16)
//!                    vport (u16) | dport (u16) | fwmark (u32) | timeout (u32, seconds)
//!                    caddr | vaddr | daddr   (4 or 16 bytes each)
//! ```
//!
//! A persistence template is a conn with `IP_VS_CONN_F_TEMPLATE`, client
//! port 0 and the client's (masked) address, as ipvs's
//! `ip_vs_sched_persist` makes them. lb sends no optional parameters (TCP
//! sequence data, persistence-engine data) and skips those it receives.
//!
//! Two additions, both invisible to an ipvs peer:
//! - Control messages for the bulk copy a starting director asks for
//!   (`BulkRequest` / `BulkEnd`): a header with 0 conns and spare =
//!   [`LB_MAGIC`], followed by 8 bytes. ipvs reads a v1 header with a
//!   non-zero spare as a version 0 message with 0 connections: nothing.
//! - Authentication (optional, a shared key): a 20-byte trailer, [`AUTH_MAGIC`]
//!   and the first 16 bytes of HMAC-SHA-256 over everything before the
//!   trailer, counted in the header's size. ipvs ignores bytes after its
//!   conns, so an ipvs receiver still installs them (it checks nothing).
//!   There is no replay protection: a replayed message re-installs flows
//!   that were true when it was sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{
    CT_CLOSE, CT_ESTABLISHED, CT_FIN_WAIT, CT_SYN_RECV, CT_UDP, FWD_DR, FWD_NAT, FWD_TUN,
    PROTO_TCP, PROTO_UDP,
};

/// `SYNC_PROTO_VER`.
pub const VERSION: u8 = 1;
/// Header length.
pub const HEADER_LEN: usize = 8;
/// Length of a conn without options: IPv4, IPv6.
pub const CONN_V4_LEN: usize = 36;
pub const CONN_V6_LEN: usize = 72;
/// ipvs's default multicast group and port (`IP_VS_SYNC_GROUP`, `IP_VS_SYNC_PORT`).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const DEFAULT_PORT: u16 = 8848;
/// `spare` of an lb control message ("lb").
pub const LB_MAGIC: u16 = 0x6c62;
/// Start of the authentication trailer ("LBH1").
pub const AUTH_MAGIC: [u8; 4] = *b"LBH1";
/// Trailer length: magic and 16 bytes of HMAC-SHA-256.
pub const AUTH_LEN: usize = 20;
/// The most conns one message holds (the count is one byte).
pub const MAX_CONNS: usize = 255;

/// `type` bit: IPv6 addresses (`STYPE_F_INET6`).
const STYPE_F_INET6: u8 = 1;
/// `IP_VS_CONN_F_*`.
const F_MASQ: u32 = 0;
const F_TUNNEL: u32 = 2;
const F_DROUTE: u32 = 3;
const F_FWD_MASK: u32 = 7;
const F_INACTIVE: u32 = 0x0100;
const F_TEMPLATE: u32 = 0x1000;
/// ipvs TCP states (`IP_VS_TCP_S_*`).
const TCP_S_NONE: u16 = 0;
const TCP_S_ESTABLISHED: u16 = 1;
const TCP_S_SYN_SENT: u16 = 2;
const TCP_S_SYN_RECV: u16 = 3;
const TCP_S_FIN_WAIT: u16 = 4;
const TCP_S_TIME_WAIT: u16 = 5;
const TCP_S_CLOSE: u16 = 6;
const TCP_S_CLOSE_WAIT: u16 = 7;
const TCP_S_LAST_ACK: u16 = 8;
const TCP_S_LISTEN: u16 = 9;
const TCP_S_SYNACK: u16 = 10;
/// Option types (`IPVS_OPT_*`): sequence data, persistence-engine data and name.
const OPT_SEQ_DATA: u8 = 1;
const OPT_PE_DATA: u8 = 2;
const OPT_PE_NAME: u8 = 3;

/// One synced connection or persistence template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConn {
    /// A persistence template (client port 0, `client` the client's network).
    pub template: bool,
    /// IP protocol: 6 TCP, 17 UDP.
    pub proto: u8,
    /// `FWD_*` of the real.
    pub fwd: u32,
    /// lb's state (`CT_*`); templates carry `CT_NONE`.
    pub state: u32,
    pub client: IpAddr,
    pub cport: u16,
    pub vaddr: IpAddr,
    pub vport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    /// Seconds the receiver keeps it without news.
    pub timeout_s: u32,
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Conns(Vec<SyncConn>),
    Control(Control),
}

/// lb's control messages (the bulk copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// A starting director asks for the whole table; `nonce` names the request.
    BulkRequest { nonce: u32 },
    /// The answer to request `nonce` is complete: `count` conns were sent.
    BulkEnd { nonce: u32, count: u32 },
}

/// Why a datagram was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("{0} bytes: shorter than the 8-byte header")]
    Short(usize),
    #[error("the header says {said} bytes, the datagram has {got}")]
    Size { said: usize, got: usize },
    #[error("version {0}, not 1 (ipvs sync protocol version 0 is not read)")]
    Version(u8),
    #[error("sync id {got}, this director's is {want}")]
    SyncId { got: u8, want: u8 },
    #[error("unsigned (a key is configured)")]
    Unsigned,
    #[error("bad signature")]
    BadSignature,
    #[error("conn {index}: {why}")]
    Conn { index: usize, why: &'static str },
    #[error("control message: {0}")]
    Control(&'static str),
}

/// lb's state → ipvs's (`state`, whether ipvs counts it inactive).
fn ipvs_state(proto: u8, state: u32) -> u16 {
    if proto != PROTO_TCP {
        return 0; // IP_VS_UDP_S_NORMAL
    }
    match state {
        CT_ESTABLISHED => TCP_S_ESTABLISHED,
        CT_SYN_RECV => TCP_S_SYN_RECV,
        CT_FIN_WAIT => TCP_S_FIN_WAIT,
        CT_CLOSE => TCP_S_CLOSE,
        _ => TCP_S_NONE,
    }
}

/// ipvs's state → lb's (the input-only table has four TCP states).
fn lb_state(proto: u8, s: u16) -> Option<u32> {
    if proto != PROTO_TCP {
        return Some(CT_UDP);
    }
    Some(match s {
        TCP_S_ESTABLISHED => CT_ESTABLISHED,
        TCP_S_NONE | TCP_S_SYN_SENT | TCP_S_SYN_RECV | TCP_S_LISTEN | TCP_S_SYNACK => CT_SYN_RECV,
        TCP_S_FIN_WAIT | TCP_S_TIME_WAIT | TCP_S_CLOSE_WAIT | TCP_S_LAST_ACK => CT_FIN_WAIT,
        TCP_S_CLOSE => CT_CLOSE,
        _ => return None,
    })
}

fn fwd_flags(fwd: u32) -> u32 {
    match fwd {
        FWD_NAT => F_MASQ,
        FWD_TUN => F_TUNNEL,
        _ => F_DROUTE,
    }
}

fn put_addr(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

/// Appends `c` in the v1 conn layout.
fn put_conn(out: &mut Vec<u8>, c: &SyncConn) {
    let v6 = c.client.is_ipv6();
    let len = if v6 { CONN_V6_LEN } else { CONN_V4_LEN };
    out.push(if v6 { STYPE_F_INET6 } else { 0 });
    out.push(c.proto);
    out.extend_from_slice(&(len as u16).to_be_bytes()); // version 0 in the top 4 bits
    let mut flags = fwd_flags(c.fwd);
    if c.template {
        flags |= F_TEMPLATE;
    } else if !(c.proto == PROTO_TCP && c.state == CT_ESTABLISHED) {
        flags |= F_INACTIVE;
    }
    out.extend_from_slice(&flags.to_be_bytes());
    let state = if c.template {
        0
    } else {
        ipvs_state(c.proto, c.state)
    };
    out.extend_from_slice(&state.to_be_bytes());
    out.extend_from_slice(&c.cport.to_be_bytes());
    out.extend_from_slice(&c.vport.to_be_bytes());
    out.extend_from_slice(&c.dport.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes()); // fwmark
    out.extend_from_slice(&c.timeout_s.to_be_bytes());
    put_addr(out, c.client);
    put_addr(out, c.vaddr);
    put_addr(out, c.daddr);
}

fn header(out: &mut Vec<u8>, syncid: u8, count: u8, spare: u16) {
    out.extend_from_slice(&[0, syncid, 0, 0, count, VERSION]);
    out.extend_from_slice(&spare.to_be_bytes());
}

/// Writes the size field and, with a key, the trailer.
fn finish(mut out: Vec<u8>, key: Option<&ring::hmac::Key>) -> Vec<u8> {
    let total = out.len() + if key.is_some() { AUTH_LEN } else { 0 };
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    if let Some(k) = key {
        out.extend_from_slice(&AUTH_MAGIC);
        let tag = ring::hmac::sign(k, &out);
        out.extend_from_slice(&tag.as_ref()[..AUTH_LEN - AUTH_MAGIC.len()]);
    }
    out
}

/// Packs `conns` into as few messages of at most `maxlen` bytes (UDP
/// payload; at least one conn per message whatever `maxlen`) as the
/// one-byte count allows.
pub fn encode_conns(
    syncid: u8,
    conns: &[SyncConn],
    maxlen: usize,
    key: Option<&ring::hmac::Key>,
) -> Vec<Vec<u8>> {
    let trailer = if key.is_some() { AUTH_LEN } else { 0 };
    let mut msgs = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut n = 0usize;
    for c in conns {
        let len = if c.client.is_ipv6() {
            CONN_V6_LEN
        } else {
            CONN_V4_LEN
        };
        if n > 0 && (n == MAX_CONNS || cur.len() + len + trailer > maxlen) {
            cur[4] = n as u8;
            msgs.push(finish(std::mem::take(&mut cur), key));
            n = 0;
        }
        if n == 0 {
            header(&mut cur, syncid, 0, 0);
        }
        put_conn(&mut cur, c);
        n += 1;
    }
    if n > 0 {
        cur[4] = n as u8;
        msgs.push(finish(cur, key));
    }
    msgs
}

/// A control message (bulk request or end).
pub fn encode_control(syncid: u8, msg: &Control, key: Option<&ring::hmac::Key>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 8 + AUTH_LEN);
    header(&mut out, syncid, 0, LB_MAGIC);
    let (kind, nonce, count) = match msg {
        Control::BulkRequest { nonce } => (1u8, *nonce, 0u32),
        Control::BulkEnd { nonce, count } => (2u8, *nonce, *count),
    };
    // kind (u8), 3 bytes 0, nonce (u32), count (u32).
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&nonce.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    finish(out, key)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn addr(b: &[u8], v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        o.copy_from_slice(&b[..16]);
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// Reads one datagram. `syncid`: this director's sync id (ipvs's backup
/// drops messages of another id unless its own is 0; lb always compares).
/// `key`: with a key, a message without a valid trailer is refused.
pub fn decode(buf: &[u8], syncid: u8, key: Option<&ring::hmac::Key>) -> Result<Message, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::Short(buf.len()));
    }
    let size = be16(buf, 2) as usize;
    if size != buf.len() {
        return Err(WireError::Size {
            said: size,
            got: buf.len(),
        });
    }
    if buf[5] != VERSION {
        return Err(WireError::Version(buf[5]));
    }
    let signed =
        buf.len() >= HEADER_LEN + AUTH_LEN && buf[buf.len() - AUTH_LEN..][..4] == AUTH_MAGIC;
    let end = match key {
        Some(k) => {
            if !signed {
                return Err(WireError::Unsigned);
            }
            let body = &buf[..buf.len() - AUTH_LEN + AUTH_MAGIC.len()];
            let tag = ring::hmac::sign(k, body);
            // The truncated tag, compared without an early exit.
            let want = &tag.as_ref()[..AUTH_LEN - AUTH_MAGIC.len()];
            let got = &buf[buf.len() - (AUTH_LEN - AUTH_MAGIC.len())..];
            if want.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
                return Err(WireError::BadSignature);
            }
            buf.len() - AUTH_LEN
        }
        None => buf.len(),
    };
    if buf[1] != syncid {
        return Err(WireError::SyncId {
            got: buf[1],
            want: syncid,
        });
    }
    let spare = be16(buf, 6);
    if buf[0] != 0 || (spare != 0 && spare != LB_MAGIC) {
        return Err(WireError::Control("reserved fields not zero"));
    }
    if spare == LB_MAGIC {
        if buf[4] != 0 || end < HEADER_LEN + 12 {
            return Err(WireError::Control("malformed"));
        }
        let nonce = be32(buf, HEADER_LEN + 4);
        return match buf[HEADER_LEN] {
            1 => Ok(Message::Control(Control::BulkRequest { nonce })),
            2 => Ok(Message::Control(Control::BulkEnd {
                nonce,
                count: be32(buf, HEADER_LEN + 8),
            })),
            _ => Err(WireError::Control("unknown kind")),
        };
    }
    let count = buf[4] as usize;
    let mut conns = Vec::with_capacity(count);
    let mut at = HEADER_LEN;
    for index in 0..count {
        let bad = |why| WireError::Conn { index, why };
        if at + 4 > end {
            return Err(bad("truncated"));
        }
        let ty = buf[at];
        let proto = buf[at + 1];
        let ver_size = be16(buf, at + 2);
        if ver_size >> 12 != 0 {
            return Err(bad("conn version not 0"));
        }
        let size = (ver_size & 0x0fff) as usize;
        let v6 = ty & STYPE_F_INET6 != 0;
        let fixed = if v6 { CONN_V6_LEN } else { CONN_V4_LEN };
        if ty & !STYPE_F_INET6 != 0 {
            return Err(bad("unknown type bits"));
        }
        if size < fixed || at + size > end {
            return Err(bad("size"));
        }
        let c = &buf[at..at + size];
        // Options: type, length, data; skipped, but they must fit.
        let mut o = fixed;
        while o < size {
            if o + 2 > size {
                return Err(bad("option header"));
            }
            let (t, l) = (c[o], c[o + 1] as usize);
            if !matches!(t & 0x7f, OPT_SEQ_DATA | OPT_PE_DATA | OPT_PE_NAME) && t & 0x80 == 0 {
                return Err(bad("unknown option"));
            }
            o += 2 + l;
        }
        if o != size {
            return Err(bad("option length"));
        }
        if proto != PROTO_TCP && proto != PROTO_UDP {
            return Err(bad("protocol not TCP or UDP"));
        }
        let flags = be32(c, 4);
        let template = flags & F_TEMPLATE != 0;
        let state = if template {
            lb_common::CT_NONE
        } else {
            lb_state(proto, be16(c, 8)).ok_or(bad("unknown TCP state"))?
        };
        let fwd = match flags & F_FWD_MASK {
            F_MASQ => FWD_NAT,
            F_TUNNEL => FWD_TUN,
            F_DROUTE => FWD_DR,
            _ => return Err(bad("forwarding method not NAT, TUN or DR")),
        };
        let a = 24;
        let w = if v6 { 16 } else { 4 };
        conns.push(SyncConn {
            template,
            proto,
            fwd,
            state,
            cport: be16(c, 10),
            vport: be16(c, 12),
            dport: be16(c, 14),
            timeout_s: be32(c, 20),
            client: addr(&c[a..], v6),
            vaddr: addr(&c[a + w..], v6),
            daddr: addr(&c[a + 2 * w..], v6),
        });
        at += size.next_multiple_of(4);
    }
    Ok(Message::Conns(conns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(i: u16) -> SyncConn {
        SyncConn {
            template: false,
            proto: PROTO_TCP,
            fwd: FWD_DR,
            state: CT_ESTABLISHED,
            client: "10.0.0.9".parse().unwrap(),
            cport: 40000 + i,
            vaddr: "10.0.0.100".parse().unwrap(),
            vport: 80,
            daddr: "10.0.1.1".parse().unwrap(),
            dport: 80,
            timeout_s: 900,
        }
    }

    /// The exact bytes of a one-conn IPv4 message, field by field as
    /// ip_vs_sync.c lays them out.
    #[test]
    fn one_ipv4_conn_has_ipvs_layout() {
        let m = encode_conns(7, &[conn(1)], 1472, None);
        assert_eq!(m.len(), 1);
        let b = &m[0];
        assert_eq!(b.len(), HEADER_LEN + CONN_V4_LEN);
        assert_eq!(&b[..8], &[0, 7, 0, 44, 1, 1, 0, 0]);
        assert_eq!(&b[8..12], &[0, 6, 0, 36]);
        assert_eq!(&b[12..16], &[0, 0, 0, 3], "DROUTE, active");
        assert_eq!(&b[16..18], &[0, 1], "ESTABLISHED");
        assert_eq!(&b[18..20], &(40001u16).to_be_bytes());
        assert_eq!(&b[20..24], &[0, 80, 0, 80]);
        assert_eq!(&b[24..28], &[0; 4]);
        assert_eq!(&b[28..32], &900u32.to_be_bytes());
        assert_eq!(&b[32..44], &[10, 0, 0, 9, 10, 0, 0, 100, 10, 0, 1, 1]);
        assert_eq!(decode(b, 7, None), Ok(Message::Conns(vec![conn(1)])));
    }

    #[test]
    fn every_state_fwd_family_and_template_round_trip() {
        let mut all = Vec::new();
        for (i, (proto, state)) in [
            (PROTO_TCP, CT_SYN_RECV),
            (PROTO_TCP, CT_ESTABLISHED),
            (PROTO_TCP, CT_FIN_WAIT),
            (PROTO_TCP, CT_CLOSE),
            (PROTO_UDP, CT_UDP),
        ]
        .into_iter()
        .enumerate()
        {
            for fwd in [FWD_DR, FWD_NAT, FWD_TUN] {
                let mut c = conn(i as u16);
                c.proto = proto;
                c.state = state;
                c.fwd = fwd;
                all.push(c.clone());
                c.client = "2001:db8::9".parse().unwrap();
                c.vaddr = "2001:db8::100".parse().unwrap();
                c.daddr = "2001:db8:1::1".parse().unwrap();
                all.push(c);
            }
        }
        let mut t = conn(0);
        t.template = true;
        t.state = lb_common::CT_NONE;
        t.cport = 0;
        t.timeout_s = 300;
        all.push(t);
        let msgs = encode_conns(0, &all, 1472, None);
        let mut back = Vec::new();
        for m in &msgs {
            assert!(m.len() <= 1472);
            match decode(m, 0, None).unwrap() {
                Message::Conns(c) => back.extend(c),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(back, all);
    }

    #[test]
    fn batches_respect_maxlen_and_the_one_byte_count() {
        let conns: Vec<_> = (0..600).map(conn).collect();
        let small = encode_conns(0, &conns, 200, None);
        assert!(small.iter().all(|m| m.len() <= 200));
        assert_eq!(
            small.len(),
            600usize.div_ceil((200 - HEADER_LEN) / CONN_V4_LEN)
        );
        let big = encode_conns(0, &conns, 65000, None);
        assert_eq!(big.len(), 3, "255 conns at most per message");
        // A maxlen below one conn still sends each conn.
        assert_eq!(encode_conns(0, &conns[..2], 10, None).len(), 2);
    }

    #[test]
    fn signed_messages_verify_and_tampering_is_refused() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
        let other = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"other");
        let m = encode_conns(3, &[conn(1)], 1472, Some(&key)).remove(0);
        assert_eq!(m.len(), HEADER_LEN + CONN_V4_LEN + AUTH_LEN);
        assert_eq!(decode(&m, 3, Some(&key)), Ok(Message::Conns(vec![conn(1)])));
        // Read without a key, the trailer is ignored (as ipvs does).
        assert_eq!(decode(&m, 3, None), Ok(Message::Conns(vec![conn(1)])));
        assert_eq!(decode(&m, 3, Some(&other)), Err(WireError::BadSignature));
        let mut t = m.clone();
        t[20] ^= 1;
        assert_eq!(decode(&t, 3, Some(&key)), Err(WireError::BadSignature));
        let plain = encode_conns(3, &[conn(1)], 1472, None).remove(0);
        assert_eq!(decode(&plain, 3, Some(&key)), Err(WireError::Unsigned));
        let req = Control::BulkRequest { nonce: 0xdead_beef };
        let c = encode_control(3, &req, Some(&key));
        assert_eq!(decode(&c, 3, Some(&key)), Ok(Message::Control(req)));
        assert_eq!(decode(&c, 3, Some(&other)), Err(WireError::BadSignature));
    }

    #[test]
    fn control_messages_round_trip_and_look_empty_to_ipvs() {
        for msg in [
            Control::BulkRequest { nonce: 0x1234_5678 },
            Control::BulkEnd {
                nonce: 0x8765_4321,
                count: 70_000,
            },
        ] {
            let b = encode_control(9, &msg, None);
            assert_eq!(decode(&b, 9, None), Ok(Message::Control(msg)));
            // ipvs: spare != 0 makes it a version 0 message whose first
            // byte (the conn count there) is 0.
            assert_eq!(b[0], 0);
            assert_ne!(be16(&b, 6), 0);
        }
    }

    #[test]
    fn malformed_datagrams_are_refused_with_a_reason() {
        let good = encode_conns(0, &[conn(1)], 1472, None).remove(0);
        assert_eq!(decode(&good[..5], 0, None), Err(WireError::Short(5)));
        assert!(matches!(
            decode(&good[..20], 0, None),
            Err(WireError::Size { .. })
        ));
        let mut v = good.clone();
        v[5] = 0;
        assert_eq!(decode(&v, 0, None), Err(WireError::Version(0)));
        assert_eq!(
            decode(&good, 1, None),
            Err(WireError::SyncId { got: 0, want: 1 })
        );
        let mut n = good.clone();
        n[4] = 2;
        assert!(matches!(
            decode(&n, 0, None),
            Err(WireError::Conn { index: 1, .. })
        ));
        let mut p = good.clone();
        p[9] = 1; // ICMP
        assert!(matches!(
            decode(&p, 0, None),
            Err(WireError::Conn { index: 0, .. })
        ));
        let mut s = good.clone();
        s[17] = 99; // TCP state
        assert!(matches!(decode(&s, 0, None), Err(WireError::Conn { .. })));
        let mut f = good.clone();
        f[15] = 1; // LOCALNODE
        assert!(matches!(decode(&f, 0, None), Err(WireError::Conn { .. })));
        let mut ver = good.clone();
        ver[10] = 0x70; // conn version nibble 7 (ipvs drops the buffer)
        assert!(matches!(decode(&ver, 0, None), Err(WireError::Conn { .. })));
        let mut z = good.clone();
        z[11] = 200; // conn size past the end
        assert!(matches!(decode(&z, 0, None), Err(WireError::Conn { .. })));
    }

    /// Every prefix and many byte flips of valid messages decode or fail
    /// cleanly (no panic).
    #[test]
    fn no_input_panics_the_decoder() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        let mut samples = encode_conns(0, &(0..20).map(conn).collect::<Vec<_>>(), 1472, None);
        samples.push(encode_control(
            0,
            &Control::BulkEnd { nonce: 1, count: 2 },
            None,
        ));
        let mut x: u32 = 1;
        for s in &samples {
            for cut in 0..s.len() {
                let _ = decode(&s[..cut], 0, None);
            }
            for _ in 0..2000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let mut m = s.clone();
                let i = x as usize % m.len();
                m[i] = (x >> 8) as u8;
                let _ = decode(&m, 0, None);
                let _ = decode(&m, 0, Some(&key));
            }
        }
    }
}
