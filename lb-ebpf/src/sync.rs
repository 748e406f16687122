//! Connection-sync events: each new flow and each TCP state change of a
//! flow, handed to the agent through a BPF ring buffer (`LB_SYNC_EVENTS`)
//! when the agent turned sync on (`FLAG_SYNC`). The agent batches them into
//! ipvs sync protocol messages for the peer director.
//!
//! Cost: one array read on the paths that write a connection entry anyway
//! (new flow, state change), nothing on established packets; with sync on,
//! a ring-buffer reserve and commit without wakeup (the agent polls the
//! ring every 10 ms), so no interrupt work per event. A full ring drops the
//! event and counts it (`sync_lost`): the flow is forwarded regardless.

use lb_common::FLAG_SYNC;
use lb_ebpf::parse::Packet;

use crate::{
    code::{self, Code},
    conntrack,
    maps::{LB_FLAGS, LB_SYNC_EVENTS},
};

/// bpf_ringbuf_submit flag: do not wake the reader.
const BPF_RB_NO_WAKEUP: u64 = 1;

/// Reports flow `pkt` of service `svc_id` on real `ids` = [id, generation]
/// in `state` (`CT_*`) when sync is on. Returns the `sync_lost` event when
/// the ring is full, else 0. Not inlined: off the forwarding call chain.
#[inline(never)]
pub fn report(pkt: &Packet, svc_id: u32, ids: &[u32; 2], state: u32) -> Code {
    if !matches!(LB_FLAGS.get(0), Some(f) if f & FLAG_SYNC != 0) {
        return 0;
    }
    let Some(mut entry) = LB_SYNC_EVENTS.reserve(0) else {
        return code::EV_SYNC_LOST;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` points into the reserved ring record, valid and
    // exclusively ours until submit; every field is written before it.
    unsafe {
        (*p).key = conntrack::flow_key(pkt);
        (*p).svc_id = svc_id;
        (*p).real_id = ids[0];
        (*p).real_gen = ids[1];
        (*p).state = state;
    }
    entry.submit(BPF_RB_NO_WAKEUP);
    0
}
