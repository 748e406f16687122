//! What the engine sends: advertisements and gratuitous ARP / NA.

use std::net::IpAddr;

use super::Engine;
use crate::vrrp::{net, packet::Advert, validate};

impl Engine {
    pub(super) fn send_advert(&mut self, i: usize, priority: u8) {
        let inst = &mut self.insts[i];
        let (auth_type, auth) = validate::auth_of(&inst.cfg);
        let advert = Advert {
            version: inst.cfg.version,
            vrid: inst.cfg.vrid,
            priority,
            interval_cs: inst.cfg.advert_cs,
            addrs: inst.cfg.vips.iter().map(|v| v.addr).collect(),
            auth_type,
            auth,
        };
        let dsts: Vec<IpAddr> = if inst.cfg.unicast_peers.is_empty() {
            vec![if inst.cfg.is_ipv6() {
                IpAddr::V6(net::GROUP_V6)
            } else {
                IpAddr::V4(net::GROUP_V4)
            }]
        } else {
            inst.cfg.unicast_peers.clone()
        };
        for d in dsts {
            let msg = advert.encode(inst.src, d);
            if let Err(e) = inst.tx.send_to(&msg, &net::dest(d, inst.link.index)) {
                *inst.rejects.entry("send-error").or_default() += 1;
                tracing::warn!(instance = %inst.cfg.name, to = %d, "sending the advertisement failed: {e}");
            }
        }
    }

    /// Sends `count` gratuitous ARPs / NAs for every VIP of instance `i`;
    /// spaced bursts run in their own task so adverts are not delayed.
    pub(super) async fn garp_burst(&mut self, i: usize, count: u32) {
        let inst = &self.insts[i];
        let mut targets = Vec::new();
        for v in &inst.cfg.vips {
            match &v.dev {
                None => targets.push((inst.vip_link().clone(), v.addr)),
                Some(d) => match net::link(d) {
                    Ok(l) => targets.push((l, v.addr)),
                    Err(e) => tracing::warn!(instance = %inst.cfg.name, vip = %v.addr, "{e}"),
                },
            }
        }
        let gap = if inst.cfg.is_ipv6() {
            self.cfg.globals.gna_interval
        } else {
            self.cfg.globals.garp_interval
        };
        let name = inst.cfg.name.clone();
        let burst = async move {
            for n in 0..count {
                for (link, addr) in &targets {
                    let r = match addr {
                        IpAddr::V4(a) => net::send_garp(link, *a),
                        IpAddr::V6(a) => net::send_na(link, *a),
                    };
                    if let Err(e) = r {
                        tracing::warn!(instance = %name, vip = %addr, "gratuitous ARP / NA failed: {e}");
                    }
                }
                if n + 1 < count && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
            }
        };
        if gap.is_zero() {
            burst.await;
        } else {
            tokio::spawn(burst);
        }
    }
}
