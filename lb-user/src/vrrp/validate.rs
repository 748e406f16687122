//! Whether a received advertisement, decoded and checked on its own by
//! [`super::packet`], is acceptable to the instance it is for (RFC 3768
//! §7.1, RFC 5798 §7.1, as keepalived): version, sender, authentication,
//! interval and addresses. Pure: the engine counts what is refused.

use std::net::IpAddr;

use super::packet::{Advert, AUTH_LEN, AUTH_NONE, AUTH_PASS};
use crate::config::vrrp::{Instance, Version};

/// Why an advertisement was refused by its instance (each is counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mismatch {
    /// Another VRRP version than the instance's.
    Version,
    /// Unicast instance: the sender is not one of its peers.
    UnknownPeer,
    /// VRRPv2: another authentication type or password.
    Auth,
    /// VRRPv2: another advertisement interval.
    Interval,
    /// Not the instance's virtual addresses.
    Addresses,
}

impl Mismatch {
    /// The name counted and listed (`lb list --vrrp`, "dropped:").
    pub fn name(self) -> &'static str {
        match self {
            Mismatch::Version => "version",
            Mismatch::UnknownPeer => "unknown-peer",
            Mismatch::Auth => "auth",
            Mismatch::Interval => "interval",
            Mismatch::Addresses => "addresses",
        }
    }
}

/// The authentication type and data `inst` sends and expects (VRRPv2).
pub fn auth_of(inst: &Instance) -> (u8, [u8; AUTH_LEN]) {
    match inst.auth {
        Some(a) => (AUTH_PASS, a),
        None => (AUTH_NONE, [0; AUTH_LEN]),
    }
}

/// Checks `advert` from `src` against `inst`; `check_addrs`: the addresses
/// must be the instance's (unless the sender gives up, priority 0).
pub fn check(
    advert: &Advert,
    inst: &Instance,
    src: IpAddr,
    check_addrs: bool,
) -> Result<(), Mismatch> {
    if advert.version != inst.version {
        return Err(Mismatch::Version);
    }
    if !inst.unicast_peers.is_empty() && !inst.unicast_peers.contains(&src) {
        return Err(Mismatch::UnknownPeer);
    }
    if advert.version == Version::V2 {
        let (ty, data) = auth_of(inst);
        if advert.auth_type != ty || (ty == AUTH_PASS && advert.auth != data) {
            return Err(Mismatch::Auth);
        }
        if advert.interval_cs != inst.advert_cs {
            return Err(Mismatch::Interval);
        }
    }
    if check_addrs && advert.priority != 0 {
        let mut want: Vec<IpAddr> = inst.vips.iter().map(|v| v.addr).collect();
        let mut got = advert.addrs.clone();
        want.sort();
        got.sort();
        if want != got {
            return Err(Mismatch::Addresses);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, vrrp::pass_auth};

    fn instance(extra: &str) -> Instance {
        let text = format!(
            "vrrp_instance VI_1 {{\n interface lo\n virtual_router_id 51\n advert_int 1\n{extra}\n virtual_ipaddress {{\n  10.0.0.100\n  10.0.0.101\n }}\n}}\n"
        );
        let l = load_str(&text, std::path::Path::new("t.conf"));
        assert!(!l.has_errors(), "{:?}", l.diags);
        l.config.vrrp.instances[0].clone()
    }

    fn advert(inst: &Instance) -> Advert {
        let (auth_type, auth) = auth_of(inst);
        Advert {
            version: inst.version,
            vrid: inst.vrid,
            priority: 100,
            interval_cs: inst.advert_cs,
            addrs: inst.vips.iter().rev().map(|v| v.addr).collect(),
            auth_type,
            auth,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_instances_own_advert_passes_in_any_address_order() {
        let i = instance(" authentication {\n  auth_type PASS\n  auth_pass secret\n }");
        assert_eq!(i.auth, Some(pass_auth("secret")));
        assert_eq!(check(&advert(&i), &i, ip("10.0.0.2"), true), Ok(()));
    }

    #[test]
    fn each_mismatch_is_named() {
        let i = instance(" authentication {\n  auth_type PASS\n  auth_pass secret\n }");
        let src = ip("10.0.0.2");
        let a = Advert {
            version: Version::V3,
            ..advert(&i)
        };
        assert_eq!(check(&a, &i, src, true), Err(Mismatch::Version));
        let a = Advert {
            auth: pass_auth("other"),
            ..advert(&i)
        };
        assert_eq!(check(&a, &i, src, true), Err(Mismatch::Auth));
        let a = Advert {
            interval_cs: 200,
            ..advert(&i)
        };
        assert_eq!(check(&a, &i, src, true), Err(Mismatch::Interval));
        let a = Advert {
            addrs: vec![ip("10.0.0.100")],
            ..advert(&i)
        };
        assert_eq!(check(&a, &i, src, true), Err(Mismatch::Addresses));
        // Not checked when told so, nor in a priority-0 goodbye.
        assert_eq!(check(&a, &i, src, false), Ok(()));
        let a = Advert { priority: 0, ..a };
        assert_eq!(check(&a, &i, src, true), Ok(()));
        let u = instance(" unicast_peer {\n  10.0.0.3\n }");
        assert_eq!(
            check(&advert(&u), &u, src, true),
            Err(Mismatch::UnknownPeer)
        );
        assert_eq!(check(&advert(&u), &u, ip("10.0.0.3"), true), Ok(()));
        assert_eq!(Mismatch::UnknownPeer.name(), "unknown-peer");
    }
}
