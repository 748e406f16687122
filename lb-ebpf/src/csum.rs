//! Internet checksum arithmetic (RFC 1071 / RFC 1624).
//!
//! Values are used exactly as loaded from the packet (network-order bytes in
//! a native integer): one's complement sums are byte-order independent as
//! long as every operand and the result are treated the same way.

/// Folds a 64-bit accumulator of 16/32-bit one's complement terms to 16 bits
/// (the agent's definition, shared through lb-common).
pub use lb_common::csum::fold;

/// The changes made to the fields a checksum covers, to be applied to the
/// checksum field incrementally: HC' = ~(~HC + ~m + m') (RFC 1624, eqn. 3).
#[derive(Clone, Copy, Default)]
pub struct Delta(u64);

impl Delta {
    #[inline(always)]
    pub fn new() -> Self {
        Delta(0)
    }

    /// A 32-bit word changed from `old` to `new`.
    #[inline(always)]
    pub fn u32(&mut self, old: u32, new: u32) {
        self.0 += (!old) as u64 + new as u64;
    }

    /// A 16-bit word changed from `old` to `new`.
    #[inline(always)]
    pub fn u16(&mut self, old: u16, new: u16) {
        self.0 += (!old) as u64 + new as u64;
    }

    /// An address of `words` 32-bit words (1 for IPv4, 4 for IPv6) changed.
    #[inline(always)]
    pub fn addr(&mut self, old: &[u32; 4], new: &[u32; 4], words: usize) {
        let mut i = 0;
        while i < 4 {
            if i < words {
                self.u32(old[i], new[i]);
            }
            i += 1;
        }
    }

    /// Adds the changes recorded in `o`.
    #[inline(always)]
    pub fn merge(&mut self, o: &Delta) {
        self.0 += o.0;
    }

    /// The checksum field after the changes.
    #[inline(always)]
    pub fn apply(&self, field: u16) -> u16 {
        !fold((!field) as u64 + self.0)
    }
}

/// Sum of the 16-bit words of a 20-byte IPv4 header given as 5 native words,
/// checksum field included as it is.
#[inline(always)]
pub fn ipv4_header(words: &[u32; 5]) -> u16 {
    let mut s = 0u64;
    let mut i = 0;
    while i < 5 {
        s += words[i] as u64;
        i += 1;
    }
    !fold(s)
}
