//! The DLM's membership views: the owner decides them, every member
//! enters them (design section 5).
//!
//! This module owns which members are in the DLM's current view and how
//! views are numbered.  The DLM needs every member of a view to hold the
//! same member list (a resource's master follows from it), and a member
//! without links to all the others cannot take part (its lock messages
//! to them would be dropped).  The owner is the one node every member has
//! a link with, so it coordinates: each client reports to the owner, once
//! a ping and whenever its links change, the view it is in and the peers
//! it has links with; the owner puts in the view itself and the largest
//! set of linked clients that all have links to each other, numbers the
//! view and sends it to them ([`Coordinator`]).
//!
//! View numbers carry the owner epoch in their high 32 bits, so a new
//! owner's views come after every view of the one before.  While the
//! volume has no owner (it left, or was fenced, and nobody has taken over
//! yet) the lowest surviving node coordinates, numbering on within the
//! old epoch ([`Coordinator::succeeding`], [`interim_coordinator`]): its
//! view drops the old owner, whose `owner` lock the rebuild then grants
//! to the next owner.  Within an
//! epoch the owner numbers on from the highest view a member reports, so
//! an owner daemon that was restarted (its DLM starts at view 0) goes on
//! after its old views instead of sending views the members refuse.

use std::collections::{BTreeSet, HashMap};

/// The first view of owner epoch `epoch`.
pub fn first_view(epoch: u64) -> u64 {
    ((epoch & 0xffff_ffff) << 32) | 1
}

/// The owner epoch a view number belongs to.
pub fn epoch_of(view: u64) -> u64 {
    view >> 32
}

/// Who coordinates the views while the volume has no owner: the lowest
/// node id among this node and the peers it has links with, the old
/// owner left out.  That is the node the liveness judge picks to fence a
/// dead owner, and the one whose queued `owner` request the rebuild
/// grants first (lowest lock id), so one node fences, purges and takes
/// over.
pub fn interim_coordinator(me: u64, linked: &BTreeSet<u64>, old_owner: u64) -> u64 {
    linked
        .iter()
        .copied()
        .chain([me])
        .filter(|n| *n != old_owner && *n != 0)
        .min()
        .unwrap_or(me)
}

/// What a client last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Report {
    /// The view its DLM is in.
    view: u64,
    /// The peers it has a link with (the owner among them).
    linked: BTreeSet<u64>,
}

/// The owner's side: from its own links and its clients' reports, the
/// view the members should be in.
#[derive(Debug)]
pub struct Coordinator {
    me: u64,
    epoch: u64,
    /// Coordinating for a volume without an owner ([`Self::succeeding`]).
    interim: bool,
    /// The last view issued (0: none yet), and its members.
    view: u64,
    members: Vec<u64>,
    reports: HashMap<u64, Report>,
}

impl Coordinator {
    pub fn new(me: u64, epoch: u64) -> Self {
        Coordinator {
            me,
            epoch: epoch & 0xffff_ffff,
            interim: false,
            view: 0,
            members: Vec::new(),
            reports: HashMap::new(),
        }
    }

    /// A client that coordinates while the volume has no owner (its
    /// owner left or was fenced, and nobody has taken over yet): it
    /// numbers on from `view`, the view its DLM is in, within that view's
    /// epoch, so its views come after the old owner's and before any new
    /// owner's.  Its first view drops whoever it has no link with, which
    /// purges the old owner's locks and lets `owner` be granted.
    pub fn succeeding(me: u64, view: u64) -> Self {
        Coordinator {
            me,
            epoch: epoch_of(view),
            interim: true,
            view,
            members: Vec::new(),
            reports: HashMap::new(),
        }
    }

    /// Whether this coordinates for a volume without an owner.
    pub fn is_interim(&self) -> bool {
        self.interim
    }

    /// The epoch its views are numbered in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The last view issued and its members.
    pub fn current(&self) -> (u64, &[u64]) {
        (self.view, &self.members)
    }

    /// Client `from` is in view `view` and has links with `linked`.
    pub fn report(&mut self, from: u64, view: u64, linked: &[u64]) {
        if from == self.me || from == 0 {
            return;
        }
        self.reports.insert(
            from,
            Report {
                view,
                linked: linked.iter().copied().filter(|n| *n != from).collect(),
            },
        );
    }

    /// `node`'s link is gone: its report no longer counts.
    pub fn forget(&mut self, node: u64) {
        self.reports.remove(&node);
    }

    /// The members a view should have now: this node, and the clients it
    /// has a link with (`linked`) that have reported and have links with
    /// every other such client.  A client short of a link is left out,
    /// the one with the fewest links first (then the highest id), until
    /// the rest all see each other.
    pub fn wanted(&self, linked: &BTreeSet<u64>) -> Vec<u64> {
        let mut set: BTreeSet<u64> = linked
            .iter()
            .copied()
            .filter(|n| *n != self.me && self.reports.contains_key(n))
            .collect();
        loop {
            let short = set
                .iter()
                .filter_map(|n| {
                    let r = &self.reports[n];
                    let missing = set
                        .iter()
                        .filter(|o| *o != n && !r.linked.contains(o))
                        .count();
                    (missing > 0).then_some((r.linked.len(), std::cmp::Reverse(*n)))
                })
                .min();
            match short {
                Some((_, std::cmp::Reverse(n))) => {
                    set.remove(&n);
                }
                None => break,
            }
        }
        set.insert(self.me);
        set.into_iter().collect()
    }

    /// A new view to issue, when the wanted members differ from the
    /// current view's or a member reports a view of this epoch above the
    /// current one (this daemon restarted and numbers again): (view,
    /// members).
    pub fn next(&mut self, linked: &BTreeSet<u64>) -> Option<(u64, Vec<u64>)> {
        let wanted = self.wanted(linked);
        let reported = self
            .reports
            .values()
            .map(|r| r.view)
            .filter(|v| epoch_of(*v) == self.epoch)
            .max()
            .unwrap_or(0);
        if self.view != 0 && wanted == self.members && reported <= self.view {
            return None;
        }
        let base = self.view.max(reported);
        let view = if epoch_of(base) == self.epoch && base != 0 {
            base + 1
        } else {
            first_view(self.epoch)
        };
        self.view = view;
        self.members = wanted;
        Some((view, self.members.clone()))
    }

    /// The members of the current view whose last report shows another
    /// view: they have not entered it (a lost message, a restart) and
    /// are sent it again.
    pub fn behind(&self) -> Vec<u64> {
        self.members
            .iter()
            .copied()
            .filter(|m| *m != self.me && self.reports.get(m).is_some_and(|r| r.view != self.view))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn the_first_view_of_an_owner_alone_holds_only_it() {
        let mut c = Coordinator::new(1, 3);
        assert_eq!(c.next(&set(&[])), Some((first_view(3), vec![1])));
        assert_eq!(first_view(3), (3 << 32) | 1);
        // nothing changed: no new view
        assert_eq!(c.next(&set(&[])), None);
    }

    #[test]
    fn a_client_joins_once_it_has_reported() {
        let mut c = Coordinator::new(1, 1);
        let v1 = c.next(&set(&[])).unwrap().0;
        // linked, not reported yet: not in
        assert_eq!(c.next(&set(&[5])), None);
        c.report(5, 0, &[1]);
        let (v2, m) = c.next(&set(&[5])).unwrap();
        assert_eq!((v2, m), (v1 + 1, vec![1, 5]));
        assert_eq!(c.behind(), vec![5]);
        c.report(5, v2, &[1]);
        assert!(c.behind().is_empty());
        assert_eq!(c.next(&set(&[5])), None);
    }

    #[test]
    fn clients_without_a_link_to_each_other_are_not_both_in() {
        let mut c = Coordinator::new(1, 1);
        c.report(5, 0, &[1]);
        c.report(7, 0, &[1]);
        // 5 and 7 have no link yet: the higher id waits
        assert_eq!(c.next(&set(&[5, 7])).unwrap().1, vec![1, 5]);
        c.report(5, 0, &[1, 7]);
        c.report(7, 0, &[1, 5]);
        assert_eq!(c.next(&set(&[5, 7])).unwrap().1, vec![1, 5, 7]);
        // a third client linked to only one of them is left out, not them
        c.report(9, 0, &[1, 5]);
        c.report(5, 0, &[1, 7, 9]);
        assert_eq!(c.wanted(&set(&[5, 7, 9])), vec![1, 5, 7]);
    }

    #[test]
    fn a_lost_link_makes_a_view_without_the_node() {
        let mut c = Coordinator::new(1, 1);
        c.report(5, 0, &[1]);
        c.report(7, 0, &[1, 5]);
        c.report(5, 0, &[1, 7]);
        let (v, m) = c.next(&set(&[5, 7])).unwrap();
        assert_eq!(m, vec![1, 5, 7]);
        c.forget(7);
        let (v2, m2) = c.next(&set(&[5])).unwrap();
        assert_eq!((v2, m2), (v + 1, vec![1, 5]));
    }

    #[test]
    fn a_restarted_owner_numbers_on_from_what_members_report() {
        let mut c = Coordinator::new(1, 2);
        let (v, _) = c.next(&set(&[])).unwrap();
        assert_eq!(v, first_view(2));
        // a member is in view 40 of this epoch from before the restart
        let old = first_view(2) + 39;
        c.report(5, old, &[1]);
        let (v2, m) = c.next(&set(&[5])).unwrap();
        assert_eq!((v2, m), (old + 1, vec![1, 5]));
        // a view of an older epoch does not count; a newer one neither
        let mut c = Coordinator::new(1, 2);
        c.report(5, first_view(1) + 500, &[1]);
        c.report(7, first_view(3) + 500, &[1]);
        assert_eq!(c.next(&set(&[])).unwrap().0, first_view(2));
    }

    #[test]
    fn a_new_owners_views_come_after_the_old_ones() {
        let mut old = Coordinator::new(1, 1);
        for i in 0..100 {
            old.forget(5);
            if i % 2 == 0 {
                old.report(5, 0, &[1]);
            }
            let _ = old.next(&set(&[5]));
        }
        let mut new = Coordinator::new(5, 2);
        assert!(new.next(&set(&[])).unwrap().0 > old.current().0);
    }

    #[test]
    fn an_interim_coordinator_numbers_between_the_old_owner_and_the_next() {
        // the old owner (1, epoch 2) issued views up to this one
        let last = first_view(2) + 6;
        let mut interim = Coordinator::succeeding(5, last);
        interim.report(7, last, &[5]);
        let (v, m) = interim.next(&set(&[7])).unwrap();
        assert_eq!((v, m), (last + 1, vec![5, 7]));
        // the next owner's first view (epoch 3) comes after it
        assert!(first_view(3) > v);
    }

    #[test]
    fn the_interim_coordinator_is_the_lowest_survivor() {
        assert_eq!(interim_coordinator(7, &set(&[1, 5]), 1), 5);
        assert_eq!(interim_coordinator(3, &set(&[1, 5]), 1), 3);
        assert_eq!(interim_coordinator(9, &set(&[]), 1), 9);
        assert_eq!(interim_coordinator(9, &set(&[0, 1]), 1), 9);
    }

    #[test]
    fn reports_from_itself_or_node_zero_are_ignored() {
        let mut c = Coordinator::new(1, 1);
        c.report(1, 99, &[5]);
        c.report(0, 99, &[5]);
        assert_eq!(c.next(&set(&[])).unwrap(), (first_view(1), vec![1]));
    }
}
