//! Bounds-checked packet access: every read and write of packet memory in
//! the eBPF programs of this crate goes through [`ptr_at`] and the helpers
//! built on it. Parsing (parse.rs) and rewriting (the balancer's fwd/) use
//! them; they know nothing of headers.

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use lb_common::FAMILY_V6;

/// An access that would reach past the end of the packet (or past
/// [`MAX_HDR_OFF`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds;

/// The ingress interface index.
///
/// Verifier workaround: the context may only be dereferenced at a constant
/// offset from its original pointer; LLVM likes to keep `ctx + 12` in a
/// register across calls, which the verifier rejects. Reading the field once
/// per packet, volatile, keeps the access a direct `*(u32 *)(ctx + 12)`.
#[inline(always)]
pub fn ingress_ifindex(ctx: &XdpContext) -> u32 {
    // SAFETY: ctx points to the kernel's xdp_md for this program run.
    unsafe { core::ptr::read_volatile(&(*ctx.ctx).ingress_ifindex) }
}

/// `data_end`, loaded afresh each time.
///
/// Verifier workaround: the verifier learns a packet pointer's range only from
/// a pointer comparison with `data_end`. If LLVM can relate two bounds checks
/// (e.g. a length check on scalars that implies a later pointer check), it
/// drops the later one and the verifier rejects the access. A volatile load
/// gives every check its own `data_end` that LLVM cannot reason about.
#[inline(always)]
pub fn data_end(ctx: &XdpContext) -> usize {
    // SAFETY: ctx points to the kernel's xdp_md for this program run.
    unsafe { core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize }
}

/// Number of bytes in the frame.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    data_end(ctx) - ctx.data()
}

/// Headers are only ever read or written this far into a frame.
pub const MAX_HDR_OFF: usize = 512;

/// Bounds-checked pointer to a `T` at `off` bytes into the packet.
///
/// The explicit bound on `off` is for the verifier: an offset that went
/// through the stack (a field of `parse::Packet`) comes back as an unbounded
/// scalar, and packet pointer arithmetic needs a bounded one.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*mut T, OutOfBounds> {
    if off > MAX_HDR_OFF {
        return Err(OutOfBounds);
    }
    let start = ctx.data();
    let end = data_end(ctx);
    if start + off + size_of::<T>() > end {
        return Err(OutOfBounds);
    }
    Ok((start + off) as *mut T)
}

#[inline(always)]
pub fn read_u8(ctx: &XdpContext, off: usize) -> Result<u8, OutOfBounds> {
    // SAFETY: ptr_at checked that the byte lies inside the packet.
    Ok(unsafe { *ptr_at::<u8>(ctx, off)? })
}

/// Reads a 16-bit field as stored (network order).
#[inline(always)]
pub fn read_u16_raw(ctx: &XdpContext, off: usize) -> Result<u16, OutOfBounds> {
    // SAFETY: bounds checked by ptr_at; packet data has no alignment guarantee.
    Ok(unsafe { ptr_at::<u16>(ctx, off)?.read_unaligned() })
}

/// Reads a 32-bit field as stored (network order is kept: the value is only
/// compared with and copied to other network-order fields).
#[inline(always)]
pub fn read_u32_raw(ctx: &XdpContext, off: usize) -> Result<u32, OutOfBounds> {
    // SAFETY: bounds checked by ptr_at; packet data has no alignment guarantee.
    Ok(unsafe { ptr_at::<u32>(ctx, off)?.read_unaligned() })
}

/// Writes a 16-bit field as given (network order).
#[inline(always)]
pub fn write_u16_raw(ctx: &XdpContext, off: usize, v: u16) -> Result<(), OutOfBounds> {
    // SAFETY: bounds checked by ptr_at.
    unsafe { ptr_at::<u16>(ctx, off)?.write_unaligned(v) };
    Ok(())
}

/// Writes a 32-bit field as given (network order).
#[inline(always)]
pub fn write_u32_raw(ctx: &XdpContext, off: usize, v: u32) -> Result<(), OutOfBounds> {
    // SAFETY: bounds checked by ptr_at.
    unsafe { ptr_at::<u32>(ctx, off)?.write_unaligned(v) };
    Ok(())
}

/// Reads an address of `family` at `off` (IPv4: one word).
#[inline(always)]
pub fn read_addr(ctx: &XdpContext, off: usize, family: u8) -> Result<[u32; 4], OutOfBounds> {
    let mut a = [0u32; 4];
    a[0] = read_u32_raw(ctx, off)?;
    if family == FAMILY_V6 {
        a[1] = read_u32_raw(ctx, off + 4)?;
        a[2] = read_u32_raw(ctx, off + 8)?;
        a[3] = read_u32_raw(ctx, off + 12)?;
    }
    Ok(a)
}

/// Writes an address of `family` at `off`.
#[inline(always)]
pub fn write_addr(
    ctx: &XdpContext,
    off: usize,
    a: &[u32; 4],
    family: u8,
) -> Result<(), OutOfBounds> {
    write_u32_raw(ctx, off, a[0])?;
    if family == FAMILY_V6 {
        write_u32_raw(ctx, off + 4, a[1])?;
        write_u32_raw(ctx, off + 8, a[2])?;
        write_u32_raw(ctx, off + 12, a[3])?;
    }
    Ok(())
}
