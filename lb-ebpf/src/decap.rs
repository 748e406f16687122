//! Tunnel endpoint for real servers whose kernel has no ipip / ip6tnl device
//! (`lb decap --iface IF --vip VIP`): an IPIP (or IPv6-in-IPv6) packet whose
//! inner destination is one of the configured virtual addresses loses its
//! outer header and goes to the kernel as if it had arrived unencapsulated.
//! Everything else is passed untouched. The real answers the client directly
//! from the virtual address (configured on its loopback), as with LVS-TUN.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS,
    btf_maps::{HashMap, PerCpuArray},
    helpers::generated::bpf_xdp_adjust_head,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use lb_common::{DecapStats, VipKey, FAMILY_V4, FAMILY_V6, MAX_DECAP_VIPS, PROTO_IPIP, PROTO_IPV6};
use lb_ebpf::{
    packet::{frame_len, ptr_at, read_addr, read_u16_raw, read_u8, OutOfBounds},
    parse::{ipv4_header, l3_of, Skip, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPV4_HLEN, IPV6_HLEN},
};

/// Virtual addresses this real accepts tunnelled traffic for.
#[btf_map]
static LB_DECAP_VIPS: HashMap<VipKey, u32, { MAX_DECAP_VIPS as usize }> = HashMap::new();

#[btf_map]
static LB_DECAP_STATS: PerCpuArray<DecapStats, 1> = PerCpuArray::new();

#[inline(always)]
fn count(f: impl FnOnce(&mut DecapStats) -> &mut u64) {
    if let Some(p) = LB_DECAP_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it.
        *f(unsafe { &mut *p }) += 1;
    }
}

enum Not {
    Tunnel,
    Vip,
    Malformed,
}

impl From<OutOfBounds> for Not {
    fn from(_: OutOfBounds) -> Self {
        Not::Malformed
    }
}

impl From<Skip> for Not {
    fn from(s: Skip) -> Self {
        match s {
            Skip::Malformed => Not::Malformed,
            _ => Not::Tunnel,
        }
    }
}

#[xdp]
pub fn lb_decap(ctx: XdpContext) -> u32 {
    match decap(&ctx) {
        Ok(()) => count(|s| &mut s.decapsulated),
        Err(Not::Tunnel) => count(|s| &mut s.pass_not_tunnel),
        Err(Not::Vip) => count(|s| &mut s.pass_not_vip),
        Err(Not::Malformed) => count(|s| &mut s.pass_malformed),
    }
    XDP_PASS
}

#[inline(always)]
fn decap(ctx: &XdpContext) -> Result<(), Not> {
    let (l3, ethertype) = l3_of(ctx)?;
    let (outer, family, inner_dst) = match ethertype {
        ETH_P_IP => {
            let (tot, proto) = ipv4_header(ctx, l3)?;
            if proto != PROTO_IPIP {
                return Err(Not::Tunnel);
            }
            if u16::from_be(read_u16_raw(ctx, l3 + 6)?) & 0x3fff != 0 {
                // A fragmented tunnel packet: the kernel would have to reassemble it.
                return Err(Not::Tunnel);
            }
            // Both headers whole and their lengths consistent with the frame.
            let (inner_tot, _) = ipv4_header(ctx, l3 + IPV4_HLEN)?;
            if l3 + tot > frame_len(ctx) || inner_tot + IPV4_HLEN != tot {
                return Err(Not::Malformed);
            }
            (IPV4_HLEN, FAMILY_V4, l3 + IPV4_HLEN + 16)
        }
        ETH_P_IPV6 => {
            if read_u8(ctx, l3)? >> 4 != 6 {
                return Err(Not::Malformed);
            }
            if read_u8(ctx, l3 + 6)? != PROTO_IPV6 {
                return Err(Not::Tunnel);
            }
            let inner = l3 + IPV6_HLEN;
            if read_u8(ctx, inner)? >> 4 != 6 {
                return Err(Not::Malformed);
            }
            let plen = u16::from_be(read_u16_raw(ctx, l3 + 4)?) as usize;
            let inner_plen = u16::from_be(read_u16_raw(ctx, inner + 4)?) as usize;
            if inner + plen > frame_len(ctx) || inner_plen + IPV6_HLEN != plen {
                return Err(Not::Malformed);
            }
            (IPV6_HLEN, FAMILY_V6, inner + 24)
        }
        _ => return Err(Not::Tunnel),
    };
    let key = VipKey {
        addr: read_addr(ctx, inner_dst, family)?,
        family,
        _pad: [0; 3],
    };
    // SAFETY: presence check only.
    if unsafe { LB_DECAP_VIPS.get(key) }.is_none() {
        return Err(Not::Vip);
    }
    // Move the Ethernet header (and VLAN tag) forward over the outer IP
    // header; the inner packet has the same family, so the ethertype holds.
    if l3 == ETH_HLEN {
        let h = ptr_at::<[u8; ETH_HLEN]>(ctx, 0)?;
        let to = ptr_at::<[u8; ETH_HLEN]>(ctx, outer)?;
        // SAFETY: both ranges are inside the packet (checked).
        unsafe { to.write_unaligned(h.read_unaligned()) };
    } else {
        let h = ptr_at::<[u8; ETH_HLEN + 4]>(ctx, 0)?;
        let to = ptr_at::<[u8; ETH_HLEN + 4]>(ctx, outer)?;
        // SAFETY: as above.
        unsafe { to.write_unaligned(h.read_unaligned()) };
    }
    // SAFETY: ctx is this program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer as i32) } != 0 {
        return Err(Not::Malformed);
    }
    Ok(())
}

lb_ebpf::ebpf_object!("lb-decap", "lb-user");
