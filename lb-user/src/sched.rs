//! Scheduling rings, built in user space and walked by the data plane.
//!
//! A ring is the sequence of real ids the data plane hands out to new flows,
//! one slot per flow. It is the smooth weighted round robin sequence (as
//! nginx's), so weights interleave: 3:1 gives A A B A, 5:1:1 gives
//! A A B A C A A. Weight 0 reals never appear; `rr` treats every positive
//! weight as 1. Weights are divided by their greatest common divisor; if the
//! sum still exceeds the ring size they are scaled down proportionally (each
//! positive weight keeps at least one slot).

use std::net::IpAddr;

use lb_common::{DH_TABLE_SIZE, MH_TABLE_SIZE, SH_TABLE_SIZE};

use crate::config::{fmt_sock, Sched};

/// What the data plane reads for a service's scheduler: a ring in `LB_RINGS`
/// (rr, wrr: the sequence; lc, wlc, sed, nq, fo, ovf, twos, lblc, lblcr:
/// the member list; sh, dh: the 256-bucket table) or a Maglev table in
/// `LB_MAGLEV` (mh).
///
/// `reals` are the reals that may take new flows, in configuration order;
/// for dh, every real that ipvs would have as a destination (see
/// [`in_dh_table`]), whatever its weight or availability; for mh, every
/// real whose checkers have not failed (see [`in_mh_table`]), whatever this
/// director can reach: the Maglev table ignores their order and ids (see
/// [`maglev_table`]).
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

/// Whether a real with `flags` (`REAL_F_*`) is in an mh service's Maglev
/// table: every configured real except those whose checkers failed
/// (`REAL_F_DOWN`; keepalived removes them from ipvs), as for dh. Whether
/// this director can reach the real (`REAL_F_AVAILABLE`: a DR real's MAC
/// resolved, a TUN real routed) is left out on purpose: it differs between
/// directors and over time, and a table built from it would send the same
/// flow to different reals on different directors. The data plane skips an
/// unreachable real's slots instead (the fallback probe: the next slots),
/// so only that real's flows go elsewhere, and only on the director that
/// cannot reach it. Weight 0 (drained, `inhibit_on_failure`) takes no slot.
pub fn in_mh_table(flags: u32) -> bool {
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
    /// The real's slot in `LB_REALS`: what the tables hold. Each agent
    /// allocates its own (first free slot), so the same real has different
    /// ids on different directors; no table's layout depends on it.
    pub id: u32,
    /// Configured weight (or the checker's dynamic weight); 0 takes no slot.
    pub weight: u32,
    /// The real's address as configured.
    pub addr: IpAddr,
    /// The real's port as configured (host order).
    pub port: u16,
}

impl Member {
    /// The real's identity in a Maglev table: configuration only.
    fn key(&self) -> (IpAddr, u16) {
        (self.addr, self.port)
    }
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

/// FNV-1a, 64 bits, from `seed`: stable across builds, runs and
/// directors, so every agent builds the same Maglev table.
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

/// Seeds of the two FNV-1a hashes that give a real its Maglev permutation
/// (offset, skip): constants, as ipvs mh's fixed `hsiphash` keys, never per
/// boot or per agent. Changing them reshuffles every mh table.
const MAGLEV_OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
/// See [`MAGLEV_OFFSET_SEED`].
const MAGLEV_SKIP_SEED: u64 = 0x6d61_676c_6576_0002;

/// A real's Maglev permutation of a table of `m` slots: (offset, skip),
/// from the FNV-1a hashes of its `address:port` text (`fmt_sock`: IPv4
/// dotted quad, IPv6 in RFC 5952 form in brackets).
fn maglev_permutation(addr: IpAddr, port: u16, m: u64) -> (u64, u64) {
    let name = fmt_sock(addr, port);
    let k = name.as_bytes();
    let offset = fnv1a(MAGLEV_OFFSET_SEED, k) % m;
    let skip = fnv1a(MAGLEV_SKIP_SEED, k) % (m - 1) + 1;
    (offset, skip)
}

/// Maglev lookup table of `m` slots (m prime) for `members`, as in the
/// Maglev paper with weights as turns (ipvs mh's `ip_vs_mh_populate`):
/// each round, every real takes `weight / gcd` slots from its own
/// permutation of the table (offset + j × skip mod m, from its address and
/// port), until every slot is taken. Weight 0 takes no slot.
///
/// **The table is a pure function of the set of (address, port, weight)**:
/// the members are first put in a canonical order — by address (IPv4 before
/// IPv6, then numerically), then port, then weight — so the order the reals
/// were configured or added in (file, `lb adm -a`, runtime or reload) does
/// not decide who wins a contested slot, and the slots hold member indices
/// that become real ids only at the end, so the ids each agent allocated do
/// not matter either. Every director with the same reals and weights builds
/// the same table (ipvs itself walks its destination list in insertion
/// order, so two ipvs directors agree only if the reals were added in the
/// same order). A service's reals are distinct (address, port) pairs.
///
/// Removing one real of N moves its slots plus a small fraction of the
/// others' (Maglev's bound: the permutations of the others are unchanged,
/// only the contested slots they took before it may change); adding one
/// takes about 1/N of the table.
pub fn maglev_table(members: &[Member], m: usize) -> Vec<u32> {
    let mut order: Vec<&Member> = members.iter().filter(|r| r.weight > 0).collect();
    if order.is_empty() {
        return Vec::new();
    }
    order.sort_by_key(|r| (r.key(), r.weight));
    let g = order.iter().fold(0u64, |g, r| gcd(g, r.weight as u64));
    let turns: Vec<u64> = order.iter().map(|r| r.weight as u64 / g).collect();
    let perm: Vec<(u64, u64)> = order
        .iter()
        .map(|r| maglev_permutation(r.addr, r.port, m as u64))
        .collect();
    let mut next = vec![0u64; order.len()];
    // Slot → index into `order`; u32::MAX while free.
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    'fill: loop {
        for i in 0..order.len() {
            let (offset, skip) = perm[i];
            for _ in 0..turns[i] {
                let mut c = ((offset + next[i] * skip) % m as u64) as usize;
                while table[c] != u32::MAX {
                    next[i] += 1;
                    c = ((offset + next[i] * skip) % m as u64) as usize;
                }
                table[c] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    // Only now the agent's own ids.
    table.iter().map(|&i| order[i as usize].id).collect()
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
            addr: IpAddr::from([10, 0, 0, id as u8]),
            port: 80,
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
        v.iter().map(|&(id, weight)| member(id, weight)).collect()
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

    /// Twelve reals of one service as (address, port, weight): IPv4 and
    /// IPv6, two ports on one address, weights 1 to 4 and a drained one.
    fn service_reals() -> Vec<(IpAddr, u16, u32)> {
        let mut v: Vec<(IpAddr, u16, u32)> = (1..=8u8)
            .map(|i| (IpAddr::from([192, 0, 2, i]), 80, u32::from(i % 4) + 1))
            .collect();
        v.push((IpAddr::from([192, 0, 2, 1]), 8080, 2));
        v.push(("2001:db8::10".parse().unwrap(), 80, 3));
        v.push(("2001:db8::9".parse().unwrap(), 80, 1));
        v.push((IpAddr::from([192, 0, 2, 9]), 80, 0));
        v
    }

    /// The reals of `reals` in the order `order` gives, with the ids one
    /// agent might have allocated (`id_of(position in that order)`).
    fn agent_members(
        reals: &[(IpAddr, u16, u32)],
        order: &[usize],
        id_of: impl Fn(usize) -> u32,
    ) -> Vec<Member> {
        order
            .iter()
            .enumerate()
            .map(|(k, &i)| Member {
                id: id_of(k),
                weight: reals[i].2,
                addr: reals[i].0,
                port: reals[i].1,
            })
            .collect()
    }

    /// A table translated from ids to the reals' (address, port).
    fn by_address(table: &[u32], members: &[Member]) -> Vec<(IpAddr, u16)> {
        table
            .iter()
            .map(|id| {
                let m = members.iter().find(|m| m.id == *id).expect("a member");
                (m.addr, m.port)
            })
            .collect()
    }

    /// A fixed shuffle of 0..n (an LCG's order): not sorted, not reversed.
    fn shuffled(n: usize, seed: u64) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        let mut x = seed;
        for i in (1..n).rev() {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            v.swap(i, (x >> 33) as usize % (i + 1));
        }
        v
    }

    #[test]
    fn maglev_is_the_same_whatever_the_order_and_the_ids() {
        let m = MH_TABLE_SIZE as usize;
        let reals = service_reals();
        let n = reals.len();
        // Director A: configuration order, ids 0..n.
        let a = agent_members(&reals, &(0..n).collect::<Vec<_>>(), |k| k as u32);
        let want = by_address(&build(Sched::Mh, &a, 1024), &a);
        assert_eq!(want.len(), m);
        let orders = [
            (0..n).rev().collect::<Vec<_>>(),
            shuffled(n, 7),
            shuffled(n, 1234),
        ];
        for (j, order) in orders.iter().enumerate() {
            // Director B: the reals added in another order, ids from
            // another free list (other services took the low slots).
            let b = agent_members(&reals, order, |k| 1000 + 37 * k as u32 + j as u32);
            let got = by_address(&build(Sched::Mh, &b, 1024), &b);
            let differ = (0..m).filter(|&i| got[i] != want[i]).count();
            assert_eq!(differ, 0, "order {order:?}: {differ} slots differ");
        }
        // The drained real (weight 0) has no slot on either.
        assert!(want.iter().all(|&(a, _)| a != IpAddr::from([192, 0, 2, 9])));
        // Weights still hold: 4 against 1 within half a percent.
        let count = |k: (IpAddr, u16)| want.iter().filter(|&&x| x == k).count() as f64;
        let heavy = count((IpAddr::from([192, 0, 2, 3]), 80)); // weight 4
        let light = count((IpAddr::from([192, 0, 2, 4]), 80)); // weight 1
        assert!(
            (heavy / light - 4.0).abs() < 0.02 * 4.0,
            "{heavy} / {light}"
        );
    }

    #[test]
    fn maglev_changes_with_the_set_only() {
        // Not a constant table: a weight change or another port changes it.
        let m = 4099;
        let reals = service_reals();
        let base = agent_members(&reals, &(0..reals.len()).collect::<Vec<_>>(), |k| k as u32);
        let t0 = by_address(&maglev_table(&base, m), &base);
        let mut heavier = base.clone();
        heavier[0].weight += 1;
        assert_ne!(by_address(&maglev_table(&heavier, m), &heavier), t0);
        let mut moved = base.clone();
        moved[1].port = 81;
        assert_ne!(by_address(&maglev_table(&moved, m), &moved), t0);
    }

    #[test]
    fn maglev_removal_on_another_director_moves_only_that_reals_slots() {
        // Director A holds all reals; director B, whose reals were added in
        // another order with other ids, loses one: B's table differs from
        // A's in the removed real's slots plus Maglev's small bound.
        let m = MH_TABLE_SIZE as usize;
        let reals: Vec<(IpAddr, u16, u32)> = service_reals()
            .into_iter()
            .map(|(a, p, w)| (a, p, w.max(1)))
            .collect();
        let n = reals.len();
        let a = agent_members(&reals, &(0..n).collect::<Vec<_>>(), |k| k as u32);
        let before = by_address(&maglev_table(&a, m), &a);
        let gone = (IpAddr::from([192, 0, 2, 5]), 80);
        let order: Vec<usize> = shuffled(n, 99)
            .into_iter()
            .filter(|&i| (reals[i].0, reals[i].1) != gone)
            .collect();
        let b = agent_members(&reals, &order, |k| 500 - k as u32);
        let after = by_address(&maglev_table(&b, m), &b);
        assert!(after.iter().all(|&x| x != gone));
        let moved = (0..m)
            .filter(|&i| before[i] != gone && before[i] != after[i])
            .count();
        assert!(moved < m / 50, "{moved} slots of other reals moved");
    }
}
