//! Scheduling rings, built in user space and walked by the data plane.
//!
//! A ring is the sequence of real ids the data plane hands out to new flows,
//! one slot per flow. It is the smooth weighted round robin sequence (as
//! nginx's), so weights interleave: 3:1 gives A A B A, 5:1:1 gives
//! A A B A C A A. Weight 0 reals never appear; `rr` treats every positive
//! weight as 1. Weights are divided by their greatest common divisor; if the
//! sum still exceeds the ring size they are scaled down proportionally (each
//! positive weight keeps at least one slot).

use crate::config::Sched;

/// Builds the ring for `reals` = (real id, weight), at most `cap` slots.
pub fn build_ring(sched: Sched, reals: &[(u32, u32)], cap: usize) -> Vec<u32> {
    let mut ws: Vec<(u32, u64)> = reals
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|&(id, w)| (id, if sched == Sched::Rr { 1 } else { w as u64 }))
        .collect();
    if ws.is_empty() || cap == 0 {
        return Vec::new();
    }
    let g = ws.iter().fold(0, |g, &(_, w)| gcd(g, w));
    for (_, w) in ws.iter_mut() {
        *w /= g;
    }
    let total: u64 = ws.iter().map(|&(_, w)| w).sum();
    if total > cap as u64 {
        let n = ws.len() as u64;
        // Reserve one slot per real, share the rest proportionally.
        let spare = (cap as u64).saturating_sub(n);
        for (_, w) in ws.iter_mut() {
            *w = 1 + (*w - 1) * spare / (total - n).max(1);
        }
    }
    let total: i64 = ws.iter().map(|&(_, w)| w as i64).sum();
    let mut current = vec![0i64; ws.len()];
    let mut ring = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &(_, w)) in ws.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        ring.push(ws[best].0);
    }
    ring
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ring: &[u32]) -> String {
        ring.iter().map(|&i| (b'A' + i as u8) as char).collect()
    }

    #[test]
    fn wrr_three_to_one_interleaves() {
        assert_eq!(
            names(&build_ring(Sched::Wrr, &[(0, 3), (1, 1)], 1024)),
            "AABA"
        );
    }

    #[test]
    fn wrr_five_one_one() {
        assert_eq!(
            names(&build_ring(Sched::Wrr, &[(0, 5), (1, 1), (2, 1)], 1024)),
            "AABACAA"
        );
    }

    #[test]
    fn wrr_reduces_by_gcd() {
        assert_eq!(build_ring(Sched::Wrr, &[(0, 300), (1, 100)], 1024).len(), 4);
    }

    #[test]
    fn rr_ignores_positive_weights() {
        assert_eq!(
            names(&build_ring(Sched::Rr, &[(0, 3), (1, 1), (2, 7)], 1024)),
            "ABC"
        );
    }

    #[test]
    fn weight_zero_gets_no_slots() {
        assert_eq!(
            names(&build_ring(Sched::Wrr, &[(0, 2), (1, 0), (2, 1)], 1024)),
            "ACA"
        );
        assert_eq!(names(&build_ring(Sched::Rr, &[(0, 1), (1, 0)], 1024)), "A");
        assert!(build_ring(Sched::Wrr, &[(0, 0), (1, 0)], 1024).is_empty());
    }

    #[test]
    fn weight_change_changes_sequence() {
        let before = build_ring(Sched::Wrr, &[(0, 1), (1, 1)], 1024);
        let after = build_ring(Sched::Wrr, &[(0, 1), (1, 3)], 1024);
        assert_eq!(names(&before), "AB");
        assert_eq!(names(&after), "BABB");
    }

    #[test]
    fn large_weights_are_scaled_into_the_ring() {
        let ring = build_ring(Sched::Wrr, &[(0, 65535), (1, 1), (2, 30000)], 1024);
        assert!(ring.len() <= 1024);
        let count = |id| ring.iter().filter(|&&r| r == id).count();
        assert_eq!(count(1), 1, "every positive weight keeps a slot");
        let ratio = count(0) as f64 / count(2) as f64;
        assert!((ratio - 65535.0 / 30000.0).abs() < 0.05, "ratio {ratio}");
    }

    #[test]
    fn proportions_exact_over_one_ring() {
        let ring = build_ring(Sched::Wrr, &[(0, 7), (1, 3), (2, 2)], 1024);
        assert_eq!(ring.len(), 12);
        assert_eq!(ring.iter().filter(|&&r| r == 0).count(), 7);
        assert_eq!(ring.iter().filter(|&&r| r == 1).count(), 3);
    }
}
