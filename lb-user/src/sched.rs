//! Scheduling rings, built in user space and walked by the data plane.
//!
//! A ring is the sequence of real ids the data plane hands out to new flows,
//! one slot per flow. It is the smooth weighted round robin sequence (as
//! nginx's), so weights interleave: 3:1 gives A A B A, 5:1:1 gives
//! A A B A C A A. Weight 0 reals never appear; `rr` treats every positive
//! weight as 1. Weights are divided by their greatest common divisor; if the
//! sum still exceeds the ring size they are scaled down proportionally (each
//! positive weight keeps at least one slot).

use lb_common::{DH_TABLE_SIZE, MH_TABLE_SIZE, SH_TABLE_SIZE};

use crate::config::Sched;

/// What the data plane reads for a service's scheduler: a ring in `LB_RINGS`
/// (rr, wrr: the sequence; lc, wlc, sed, nq, fo, ovf, twos, lblc, lblcr:
/// the member list; sh, dh: the 256-bucket table) or a Maglev table in
/// `LB_MAGLEV` (mh).
///
/// `reals` are the reals that may take new flows, in configuration order;
/// for dh, every real that ipvs would have as a destination (see
/// [`in_dh_table`]), whatever its weight or availability.
pub fn build(sched: Sched, reals: &[Member], ring_cap: usize) -> Vec<u32> {
    if sched == Sched::Dh {
        let ids: Vec<u32> = reals.iter().map(|m| m.id).collect();
        return dh_table(&ids);
    }
    let members: Vec<Member> = reals.iter().filter(|m| m.weight > 0).cloned().collect();
    let pairs: Vec<(u32, u32)> = members.iter().map(|m| (m.id, m.weight)).collect();
    match sched {
        Sched::Rr | Sched::Wrr => build_ring(sched, &pairs, ring_cap),
        s if s.scans_members() => pairs.iter().map(|&(id, _)| id).collect(),
        Sched::Sh => sh_table(&pairs),
        Sched::Mh => maglev_table(&members, MH_TABLE_SIZE as usize),
        other => unreachable!("{other:?} has a table above"),
    }
}

/// Whether a real with `flags` (`REAL_F_*`) is in a dh service's table:
/// every configured real except those whose checkers failed (keepalived
/// removes those from ipvs; with `inhibit_on_failure` they stay, weight 0).
/// A bucket whose real is unavailable or has weight 0 then has no real, as
/// in ipvs, where dh has no fallback.
pub fn in_dh_table(flags: u32) -> bool {
    flags & lb_common::REAL_F_DOWN == 0
}

/// ipvs dh's table (`ip_vs_dh_reassign`): the 256 buckets dealt out to the
/// reals in order, one bucket each per turn, whatever their weights.
pub fn dh_table(ids: &[u32]) -> Vec<u32> {
    if ids.is_empty() {
        return Vec::new();
    }
    (0..DH_TABLE_SIZE as usize)
        .map(|i| ids[i % ids.len()])
        .collect()
}

/// A real that can take new flows, as the table builders see it.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: u32,
    pub weight: u32,
    /// Stable name (address and port) that places the real in a Maglev table.
    pub name: String,
}

/// ipvs sh's table (`ip_vs_sh_reassign`): the buckets are dealt out in
/// member order, each real taking `weight` consecutive buckets per turn.
pub fn sh_table(members: &[(u32, u32)]) -> Vec<u32> {
    if members.is_empty() {
        return Vec::new();
    }
    let mut t = Vec::with_capacity(SH_TABLE_SIZE as usize);
    let (mut i, mut d) = (0, 0);
    while t.len() < SH_TABLE_SIZE as usize {
        let (id, w) = members[i];
        t.push(id);
        d += 1;
        if d >= w {
            i = (i + 1) % members.len();
            d = 0;
        }
    }
    t
}

/// FNV-1a, 64 bits, from `seed`: stable across builds and runs, so a
/// restarted agent builds the same Maglev table.
fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (FNV alone mixes the last bytes weakly).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Maglev lookup table of `m` slots (m prime) for `members` = (real id,
/// weight), as in the Maglev paper with weights as turns: each round, a real
/// takes `weight / gcd` slots from its own permutation of the table
/// (offset + j × skip mod m), until every slot is taken. The permutation
/// depends only on the real's id, so adding or removing one real of N moves
/// about 1/N of the slots.
pub fn maglev_table(members: &[Member], m: usize) -> Vec<u32> {
    if members.is_empty() {
        return Vec::new();
    }
    let g = members.iter().fold(0u64, |g, r| gcd(g, r.weight as u64));
    let turns: Vec<u64> = members.iter().map(|r| r.weight as u64 / g).collect();
    let perm: Vec<(u64, u64)> = members
        .iter()
        .map(|r| {
            let k = r.name.as_bytes();
            let offset = fnv1a(0x6d61_676c_6576_0001, k) % m as u64;
            let skip = fnv1a(0x6d61_676c_6576_0002, k) % (m as u64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; members.len()];
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    'fill: loop {
        for (i, r) in members.iter().enumerate() {
            let id = r.id;
            for _ in 0..turns[i] {
                let (offset, skip) = perm[i];
                let mut c = ((offset + next[i] * skip) % m as u64) as usize;
                while table[c] != u32::MAX {
                    next[i] += 1;
                    c = ((offset + next[i] * skip) % m as u64) as usize;
                }
                table[c] = id;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    table
}

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

/// The rr / wrr cursor (`LB_CURSORS`, one counter per service that the
/// data plane advances by one per new connection: slot `cursor % len`)
/// to store when the service's ring changes from `old` (scheduler
/// `old_sched`, read at `cursor`) to `new` (scheduler `sched`).
///
/// As ipvs keeps its position across a change of destinations:
/// - rr (ip_vs_rr.c keeps a pointer to the last destination served; when
///   that one is removed, `ip_vs_rr_del_dest` steps back so that the one
///   after it comes next): the new ring continues after the real served
///   last; if that real left the ring, with the first real that followed it
///   in the old ring and is still in the new one.
/// - wrr (ip_vs_wrr.c's `ip_vs_wrr_dest_changed` restarts its walk at the
///   head of the destination list on every change): the start of the new
///   ring.
/// - any other scheduler, a switch from a scheduler without a ring walk, or
///   nothing served yet: 0.
pub fn carry_cursor(old_sched: Sched, old: &[u32], cursor: u64, sched: Sched, new: &[u32]) -> u64 {
    let walked = matches!(old_sched, Sched::Rr | Sched::Wrr);
    if sched != Sched::Rr || !walked || old.is_empty() || new.is_empty() || cursor == 0 {
        return 0;
    }
    let n = old.len() as u64;
    let last = ((cursor - 1) % n) as usize;
    if let Some(j) = new.iter().position(|&id| id == old[last]) {
        return ((j + 1) % new.len()) as u64;
    }
    (1..old.len())
        .map(|k| old[(last + k) % old.len()])
        .find_map(|id| new.iter().position(|&x| x == id))
        .map_or(0, |j| j as u64)
}

pub fn gcd(a: u64, b: u64) -> u64 {
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

    #[test]
    fn rr_cursor_continues_after_the_real_served_last() {
        // Ring [1, 2, 3], cursor 5: slot 4 % 3 = 1 (real 2) was served last.
        let old = [1, 2, 3];
        // A real added: the walk goes on after real 2 in the new ring,
        // whatever comes there (the new real 4, or real 3).
        let new = [1, 2, 4, 3];
        let c = carry_cursor(Sched::Rr, &old, 5, Sched::Rr, &new);
        assert_eq!((c, new[c as usize]), (2, 4));
        let new = [4, 1, 2, 3];
        let c = carry_cursor(Sched::Rr, &old, 5, Sched::Rr, &new);
        assert_eq!(new[c as usize], 3);
        // The real served last removed: the one after it comes next.
        let new = [1, 3];
        let c = carry_cursor(Sched::Rr, &old, 5, Sched::Rr, &new);
        assert_eq!(new[c as usize], 3);
        // Served last was the end of the new ring: wraps to its start.
        let c = carry_cursor(Sched::Rr, &old, 6, Sched::Rr, &[1, 2, 3, 4][..3]);
        assert_eq!(c, 0);
        // The real after it also removed: the next remaining one.
        let c = carry_cursor(Sched::Rr, &[1, 2, 3, 4], 2, Sched::Rr, &[4, 1]);
        assert_eq!(c, 0);
        // Nothing served yet, or no ring before: the start.
        assert_eq!(carry_cursor(Sched::Rr, &old, 0, Sched::Rr, &new), 0);
        assert_eq!(carry_cursor(Sched::Rr, &[], 7, Sched::Rr, &old), 0);
    }

    #[test]
    fn wrr_and_other_schedulers_restart_their_ring() {
        // ipvs's wrr restarts at the head of its list on any change.
        assert_eq!(
            carry_cursor(Sched::Wrr, &[1, 1, 2], 2, Sched::Wrr, &[1, 2]),
            0
        );
        assert_eq!(carry_cursor(Sched::Lc, &[1, 2], 1, Sched::Rr, &[1, 2]), 0);
        // wrr to rr: the real served last is known, rr continues after it.
        assert_eq!(
            carry_cursor(Sched::Wrr, &[1, 1, 2], 2, Sched::Rr, &[1, 2]),
            1
        );
    }
}

#[cfg(test)]
mod hash_tables {
    use super::*;

    fn member(id: u32, weight: u32) -> Member {
        Member {
            id,
            weight,
            name: format!("10.0.0.{id}:80"),
        }
    }

    #[test]
    fn dh_table_deals_one_bucket_per_real_whatever_the_weight() {
        let t = build(Sched::Dh, &[member(4, 3), member(5, 0), member(6, 1)], 1024);
        assert_eq!(t.len(), 256);
        assert_eq!(&t[..7], &[4, 5, 6, 4, 5, 6, 4]);
        assert_eq!(t[255], 4); // 255 = 3 × 85
        assert!(build(Sched::Dh, &[], 1024).is_empty());
        assert!(in_dh_table(lb_common::REAL_F_INUSE));
        assert!(!in_dh_table(
            lb_common::REAL_F_INUSE | lb_common::REAL_F_DOWN
        ));
    }

    #[test]
    fn scanning_schedulers_get_the_weighted_members_in_order() {
        let reals = [member(1, 2), member(2, 0), member(3, 5)];
        for s in [
            Sched::Fo,
            Sched::Ovf,
            Sched::Twos,
            Sched::Lblc,
            Sched::Lblcr,
            Sched::Wlc,
        ] {
            assert_eq!(build(s, &reals, 1024), vec![1, 3], "{s:?}");
        }
    }

    #[test]
    fn sh_table_deals_weighted_runs() {
        let t = sh_table(&[(7, 2), (9, 1)]);
        assert_eq!(t.len(), 256);
        assert_eq!(&t[..6], &[7, 7, 9, 7, 7, 9]);
        assert!(sh_table(&[]).is_empty());
    }

    fn members(v: &[(u32, u32)]) -> Vec<Member> {
        v.iter()
            .map(|&(id, weight)| Member {
                id,
                weight,
                name: format!("10.0.0.{id}:80"),
            })
            .collect()
    }

    #[test]
    fn maglev_is_balanced_and_weighted() {
        let m = 65537;
        let t = maglev_table(&members(&[(1, 1), (2, 1), (3, 1)]), m);
        let c = |id| t.iter().filter(|&&x| x == id).count();
        for id in 1..=3 {
            assert!((c(id) as i64 - m as i64 / 3).abs() <= 1, "{id}: {}", c(id));
        }
        let t = maglev_table(&members(&[(1, 3), (2, 1)]), m);
        let c1 = t.iter().filter(|&&x| x == 1).count();
        assert!((c1 as f64 / m as f64 - 0.75).abs() < 0.001, "{c1}");
    }

    #[test]
    fn maglev_removal_moves_only_the_removed_reals_slots() {
        let m = 65537;
        let reals = members(&(0..10).map(|i| (i, 1)).collect::<Vec<_>>());
        let before = maglev_table(&reals, m);
        let after = maglev_table(&reals[..9], m);
        let moved = (0..m)
            .filter(|&i| before[i] != 9 && before[i] != after[i])
            .count();
        // Maglev's bound: a small fraction of the others' slots move.
        assert!(moved < m / 50, "{moved} slots of other reals moved");
        assert!(after.iter().all(|&x| x != 9));
        // Adding it back: it takes about 1/10 of the slots, nearly all from others
        // in proportion, and the table is the one before (deterministic).
        let again = maglev_table(&reals, m);
        assert_eq!(again, before);
        let taken = (0..m).filter(|&i| after[i] != again[i]).count();
        let share = before.iter().filter(|&&x| x == 9).count();
        assert!(
            taken < share + m / 50,
            "adding moved {taken} slots for a share of {share}"
        );
    }
}
