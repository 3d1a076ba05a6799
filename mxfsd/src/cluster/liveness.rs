//! Who is dead, who is only cut off, and who fences them (design section
//! 4, issue 5).  Pure: the runtime gathers what the network and the disk
//! show and acts on the [`Verdict`].
//!
//! A member is **dead** when its network lease has expired (nothing heard
//! on its link for the dead interval) and its disk heartbeat has not
//! moved for the dead interval either (or it has no heartbeat slot).  A
//! member whose lease expired but who still beats on disk is **cut off**:
//! the network split.  Then the side with more members wins, a tie going
//! to the side with the lowest node id, and the winners fence the others,
//! but only after twice the dead interval: a loaded network is more often
//! slow than split, and a wrong verdict costs a live node its mount.  The
//! losers do nothing: they are about to find their keys preempted.
//!
//! Of the winning side, only its lowest node id fences (once, not once
//! per survivor); the others wait for the reservation to change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// What this node knows, at one moment.
pub struct Inputs<'a> {
    pub me: u64,
    /// Peers whose lease is current (link up, heard within the dead
    /// interval).
    pub reachable: &'a BTreeSet<u64>,
    /// Known peers whose lease has expired, with how long since they
    /// were last heard.
    pub silent: &'a BTreeMap<u64, Duration>,
    /// For each node with a heartbeat slot: how long the slot has not
    /// changed, by this node's clock.  `None`: the disk cannot be read
    /// now, so nobody is judged.
    pub disk: Option<&'a HashMap<u64, Duration>>,
    pub dead_interval: Duration,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Members to fence now, sorted (empty unless this node fences).
    pub fence: Vec<u64>,
    /// Silent members judged dead.
    pub dead: Vec<u64>,
    /// Silent members still beating on disk (the network split).
    pub cut_off: Vec<u64>,
    /// This node is on the losing side of a split: it fences nobody.
    pub losing: bool,
    /// Who fences, when it is another node of this side.
    pub fencer: Option<u64>,
}

/// Judge the silent members (see the module docs).
pub fn judge(i: &Inputs<'_>) -> Verdict {
    let mut v = Verdict::default();
    let Some(disk) = i.disk else {
        return v;
    };
    for (&node, &silent_for) in i.silent {
        if silent_for < i.dead_interval || node == i.me || i.reachable.contains(&node) {
            continue;
        }
        match disk.get(&node) {
            Some(age) if *age < i.dead_interval => v.cut_off.push(node),
            _ => v.dead.push(node),
        }
    }
    if v.dead.is_empty() && v.cut_off.is_empty() {
        return v;
    }
    let mut ours: BTreeSet<u64> = i.reachable.clone();
    ours.insert(i.me);
    if !v.cut_off.is_empty() {
        let theirs: BTreeSet<u64> = v.cut_off.iter().copied().collect();
        let win = match ours.len().cmp(&theirs.len()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => ours.first() < theirs.first(),
        };
        if !win {
            v.losing = true;
            return v;
        }
    }
    let fencer = ours.first().copied().unwrap_or(i.me);
    if fencer != i.me {
        v.fencer = Some(fencer);
        return v;
    }
    let split_wait = i.dead_interval * 2;
    v.fence = v
        .dead
        .iter()
        .copied()
        .chain(
            v.cut_off
                .iter()
                .copied()
                .filter(|n| i.silent.get(n).is_some_and(|s| *s >= split_wait)),
        )
        .collect();
    v.fence.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEAD: Duration = Duration::from_secs(6);

    fn run(
        me: u64,
        reachable: &[u64],
        silent: &[(u64, u64)],
        disk: Option<&[(u64, u64)]>,
    ) -> Verdict {
        let reachable: BTreeSet<u64> = reachable.iter().copied().collect();
        let silent: BTreeMap<u64, Duration> = silent
            .iter()
            .map(|(n, s)| (*n, Duration::from_secs(*s)))
            .collect();
        let disk: Option<HashMap<u64, Duration>> = disk.map(|d| {
            d.iter()
                .map(|(n, s)| (*n, Duration::from_secs(*s)))
                .collect()
        });
        judge(&Inputs {
            me,
            reachable: &reachable,
            silent: &silent,
            disk: disk.as_ref(),
            dead_interval: DEAD,
        })
    }

    #[test]
    fn a_dead_owner_is_fenced_by_the_lowest_survivor() {
        // nodes 2 and 3 survive node 9; 2 fences, 3 waits for it
        let v2 = run(2, &[3], &[(9, 7)], Some(&[(2, 0), (3, 1), (9, 8)]));
        assert_eq!(v2.fence, vec![9]);
        assert_eq!(v2.dead, vec![9]);
        let v3 = run(3, &[2], &[(9, 7)], Some(&[(2, 0), (3, 1), (9, 8)]));
        assert!(v3.fence.is_empty());
        assert_eq!(v3.fencer, Some(2));
    }

    #[test]
    fn nobody_is_judged_before_the_dead_interval_on_both_paths() {
        // lease not expired yet
        assert_eq!(run(2, &[], &[(9, 5)], Some(&[(9, 60)])), Verdict::default());
        // lease expired, disk still beating: cut off, not yet fenced
        let v = run(2, &[3], &[(9, 7)], Some(&[(9, 1)]));
        assert_eq!(v.cut_off, vec![9]);
        assert!(v.fence.is_empty() && v.dead.is_empty());
    }

    #[test]
    fn an_unreadable_disk_judges_nobody() {
        assert_eq!(run(2, &[], &[(9, 600)], None), Verdict::default());
    }

    #[test]
    fn a_node_without_a_heartbeat_slot_is_dead_once_silent() {
        assert_eq!(run(2, &[], &[(9, 6)], Some(&[])).fence, vec![9]);
    }

    #[test]
    fn the_bigger_side_fences_a_cut_off_node_after_twice_the_interval() {
        let v = run(1, &[2], &[(3, 11)], Some(&[(3, 0)]));
        assert!(v.fence.is_empty() && !v.losing);
        let v = run(1, &[2], &[(3, 12)], Some(&[(3, 0)]));
        assert_eq!(v.fence, vec![3]);
        // the cut-off node sees two live nodes it cannot reach: it loses
        let v = run(3, &[], &[(1, 60), (2, 60)], Some(&[(1, 0), (2, 0)]));
        assert!(v.losing && v.fence.is_empty());
    }

    #[test]
    fn a_tie_goes_to_the_side_with_the_lowest_node_id() {
        let low = run(4, &[], &[(7, 30)], Some(&[(7, 0)]));
        assert_eq!(low.fence, vec![7]);
        let high = run(7, &[], &[(4, 30)], Some(&[(4, 0)]));
        assert!(high.losing && high.fence.is_empty());
    }

    #[test]
    fn a_losing_side_fences_its_dead_too_never() {
        // 5 is cut off from 1 and 2 (both beating) and 9 is dead: 5
        // leaves 9 to the winners
        let v = run(
            5,
            &[],
            &[(1, 60), (2, 60), (9, 60)],
            Some(&[(1, 0), (2, 0)]),
        );
        assert!(v.losing && v.fence.is_empty());
    }

    proptest! {
        /// Two sides that cannot hear each other but all beat on disk:
        /// never both fence the other.
        #[test]
        fn two_sides_never_fence_each_other(
            a in 1u64..1000, b in 1u64..1000,
            a_peers in proptest::collection::btree_set(1000u64..1010, 0..4),
            b_peers in proptest::collection::btree_set(2000u64..2010, 0..4),
            silent in 12u64..100,
        ) {
            prop_assume!(a != b);
            let disk: Vec<(u64, u64)> = [a, b]
                .iter()
                .chain(a_peers.iter())
                .chain(b_peers.iter())
                .map(|n| (*n, 0))
                .collect();
            let other = |peers: &BTreeSet<u64>, n: u64| -> Vec<(u64, u64)> {
                peers.iter().chain(std::iter::once(&n)).map(|x| (*x, silent)).collect()
            };
            let ra: Vec<u64> = a_peers.iter().copied().collect();
            let rb: Vec<u64> = b_peers.iter().copied().collect();
            let va = run(a, &ra, &other(&b_peers, b), Some(&disk));
            let vb = run(b, &rb, &other(&a_peers, a), Some(&disk));
            prop_assert!(!(va.fence.contains(&b) && vb.fence.contains(&a)));
            // and exactly one side wins
            prop_assert!(va.losing != vb.losing);
        }
    }
}
