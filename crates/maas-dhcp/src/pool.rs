//! Free addresses, found in O(log n) instead of by walking the ranges.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::config::FailoverRole;

/// The addresses this server may hand out, and which of them are free.
///
/// Architecture Invariant: an address in `free` is bound to nobody (no
/// lease that holds, no live offer). The handler removes an address when it
/// offers, leases or sees it declined, and puts it back when the binding
/// ends; bindings that lapse by time (an offer never taken up, a lease that
/// expired) come back in [`Pool::reclaim`] sweeps.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// Owned ranges, inclusive, sorted.
    owned: Vec<(u32, u32)>,
    free: BTreeSet<u32>,
}

impl Pool {
    /// The pool for `ranges`: all of them, or this server's half of each
    /// under failover (the primary the lower half, the secondary the upper).
    pub(crate) fn new(ranges: &[(Ipv4Addr, Ipv4Addr)], role: Option<FailoverRole>) -> Self {
        let mut owned: Vec<(u32, u32)> = ranges
            .iter()
            .filter_map(|&(a, b)| {
                let (a, b) = (u32::from(a), u32::from(b));
                let mid = a + (b - a) / 2;
                match role {
                    None => Some((a, b)),
                    Some(FailoverRole::Primary) => Some((a, mid)),
                    Some(FailoverRole::Secondary) => (mid < b).then_some((mid + 1, b)),
                }
            })
            .collect();
        owned.sort_unstable();
        let free = owned.iter().flat_map(|&(a, b)| a..=b).collect();
        Pool { owned, free }
    }

    /// Whether this server may hand out `ip`.
    pub(crate) fn owns(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        let i = self.owned.partition_point(|&(_, b)| b < n);
        self.owned.get(i).is_some_and(|&(a, _)| a <= n)
    }

    /// Marks `ip` bound.
    pub(crate) fn take(&mut self, ip: Ipv4Addr) {
        self.free.remove(&u32::from(ip));
    }

    /// Marks `ip` free again, if it is ours.
    pub(crate) fn give_back(&mut self, ip: Ipv4Addr) {
        if self.owns(ip) {
            self.free.insert(u32::from(ip));
        }
    }

    /// The lowest free address in `[a, b]`, not yet taken.
    pub(crate) fn first_free_in(&self, a: Ipv4Addr, b: Ipv4Addr) -> Option<Ipv4Addr> {
        self.free
            .range(u32::from(a)..=u32::from(b))
            .next()
            .map(|&n| Ipv4Addr::from(n))
    }

    /// Puts back every owned address for which `bound` says no. Called when
    /// a subnet runs dry, so lapsed offers and leases are found only when
    /// they are needed; O(pool size).
    pub(crate) fn reclaim(&mut self, mut bound: impl FnMut(Ipv4Addr) -> bool) -> usize {
        let mut n = 0;
        for &(a, b) in &self.owned {
            for x in a..=b {
                if !self.free.contains(&x) && !bound(Ipv4Addr::from(x)) {
                    self.free.insert(x);
                    n += 1;
                }
            }
        }
        n
    }

    /// How many addresses are free.
    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn failover_halves_are_disjoint_and_cover_the_range() {
        let ranges = [
            (ip("10.0.0.10"), ip("10.0.0.19")),
            (ip("10.0.1.1"), ip("10.0.1.1")),
        ];
        let p = Pool::new(&ranges, Some(FailoverRole::Primary));
        let s = Pool::new(&ranges, Some(FailoverRole::Secondary));
        let all = Pool::new(&ranges, None);
        assert_eq!(all.free_count(), 11);
        assert_eq!(p.free_count() + s.free_count(), 11);
        for n in u32::from(ip("10.0.0.0"))..u32::from(ip("10.0.2.0")) {
            let a = Ipv4Addr::from(n);
            assert!(!(p.owns(a) && s.owns(a)), "{a} owned by both");
            assert_eq!(all.owns(a), p.owns(a) || s.owns(a), "{a}");
        }
        assert!(
            p.owns(ip("10.0.1.1")),
            "a one-address range goes to the primary"
        );
    }

    #[test]
    fn take_give_back_and_reclaim() {
        let mut p = Pool::new(&[(ip("10.0.0.1"), ip("10.0.0.3"))], None);
        assert_eq!(
            p.first_free_in(ip("10.0.0.0"), ip("10.0.0.255")),
            Some(ip("10.0.0.1"))
        );
        p.take(ip("10.0.0.1"));
        p.take(ip("10.0.0.2"));
        assert_eq!(
            p.first_free_in(ip("10.0.0.0"), ip("10.0.0.255")),
            Some(ip("10.0.0.3"))
        );
        p.give_back(ip("10.9.9.9"));
        assert_eq!(p.free_count(), 1, "foreign addresses are not adopted");
        let n = p.reclaim(|a| a == ip("10.0.0.1"));
        assert_eq!(n, 1);
        assert_eq!(
            p.first_free_in(ip("10.0.0.0"), ip("10.0.0.255")),
            Some(ip("10.0.0.2"))
        );
    }
}
