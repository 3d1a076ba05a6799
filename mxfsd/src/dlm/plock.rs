//! File locks (fcntl record locks and flock) as their master keeps them,
//! as pure state.
//!
//! This module owns the semantics of the locks applications take on one
//! file: which are held, which wait, who is granted when something is
//! released, and what F_GETLK reports.  Its unit is one file's table
//! ([`FileLocks`]); the table is kept by the master of the file's
//! resource, as the lock engine's queues are ([`super::LockSpace`]), so
//! it does no I/O and returns the grants the caller must deliver.
//!
//! Why not the engine's modes: a record lock covers a byte range, and
//! two locks on one file conflict only where their ranges overlap, so one
//! resource per file with PR/EX would make a lock on bytes 0..9 block one
//! on bytes 100..199.  The rules here are Linux's (`fs/locks.c`):
//!
//! - **Record locks** ([`Semantics::Posix`]): a lock owner (a process's
//!   file table, or an open file for OFD locks) holds at most one lock
//!   on each byte.  A new lock replaces the owner's own locks where it
//!   overlaps them (an upgrade or downgrade, in place), splitting them
//!   as needed, and merges with the owner's adjacent or overlapping
//!   locks of the same kind; an unlock removes the owner's locks from the
//!   range.  Locks of different owners conflict where they overlap and
//!   one of them is a write lock.  A blocked upgrade keeps the lock it
//!   has while it waits.
//! - **flock** ([`Semantics::Flock`]): whole-file locks, shared (read)
//!   or exclusive (write), owned by an open file.  A conversion gives up
//!   the lock it had first, as Linux's does, also when it is then
//!   refused (so two shared holders that both upgrade do not deadlock).
//! - **Waiting**: a request that may wait (F_SETLKW, flock without
//!   LOCK_NB) is queued; after every change the queue is served in
//!   order, each waiter granted as soon as nothing held conflicts.  A
//!   record lock whose wait would close a cycle of owners waiting on
//!   each other in this file is refused ([`Outcome::Deadlock`], EDEADLK).
//!   Cycles through several files are not detected.
//! - **Departures**: closing a file releases its owner's locks
//!   ([`FileLocks::release_owner`]); a dead node's locks and waiters go
//!   at once (`FileLocks::purge_node`).

use std::collections::VecDeque;

use super::NodeId;

/// Who holds a lock: the node, and that node's kernel's lock owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockOwner {
    pub node: NodeId,
    pub owner: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// F_RDLCK, LOCK_SH.
    Read,
    /// F_WRLCK, LOCK_EX.
    Write,
}

/// Bytes `start..=end` (`end` = `u64::MAX`: to the end of the file, as
/// the kernel's `OFFSET_MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub const WHOLE: Range = Range {
        start: 0,
        end: u64::MAX,
    };

    /// None if `end < start`.
    pub fn new(start: u64, end: u64) -> Option<Range> {
        (start <= end).then_some(Range { start, end })
    }

    fn overlaps(self, other: Range) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// Overlapping or adjacent: one range could cover both.
    fn touches(self, other: Range) -> bool {
        self.overlaps(other)
            || self.end.checked_add(1) == Some(other.start)
            || other.end.checked_add(1) == Some(self.start)
    }
}

/// A file-lock call of one of this node's lock owners, as the daemon
/// makes it ([`super::Dlm::plock_withdrawable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLockCall {
    /// The file's resource (one per file for record locks, another for
    /// its flock locks).
    pub resource: Vec<u8>,
    /// flock locks (whole file) rather than record locks.
    pub flock: bool,
    /// The kernel's lock owner (a process's file table, or an open file).
    pub owner: u64,
    pub pid: u32,
    pub op: crate::wire::PlockOp,
    pub range: Range,
}

/// A granted lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub owner: LockOwner,
    /// The process that took it (F_GETLK reports it).
    pub pid: u32,
    pub kind: Kind,
    pub range: Range,
}

impl Held {
    /// Does this lock stand in the way of a `kind` lock of `owner` on
    /// `range`?
    fn blocks(&self, owner: LockOwner, kind: Kind, range: Range) -> bool {
        self.owner != owner
            && self.range.overlaps(range)
            && (kind == Kind::Write || self.kind == Kind::Write)
    }
}

/// A lock or unlock request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The requester's id for it (to answer it, and to cancel it).
    pub id: u64,
    pub owner: LockOwner,
    pub pid: u32,
    /// None: unlock.
    pub kind: Option<Kind>,
    pub range: Range,
    /// Queue when blocked (F_SETLKW, flock without LOCK_NB).
    pub wait: bool,
}

/// The answer to [`FileLocks::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (an unlock always is).
    Granted,
    /// Blocked and not allowed to wait: this lock is in the way.
    Conflict(Held),
    /// Blocked; granted later through the grants of some other call.
    Queued,
    /// Waiting would deadlock (record locks only).
    Deadlock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantics {
    Posix,
    Flock,
}

/// One file's locks.
#[derive(Debug, Clone)]
pub struct FileLocks {
    semantics: Semantics,
    held: Vec<Held>,
    waiting: VecDeque<Request>,
}

impl FileLocks {
    pub fn new(semantics: Semantics) -> Self {
        FileLocks {
            semantics,
            held: Vec::new(),
            waiting: VecDeque::new(),
        }
    }

    pub fn semantics(&self) -> Semantics {
        self.semantics
    }

    pub fn held(&self) -> &[Held] {
        &self.held
    }

    #[cfg(test)]
    pub fn waiting(&self) -> impl Iterator<Item = &Request> {
        self.waiting.iter()
    }

    /// Nothing held and nobody waiting: the table can go.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.waiting.is_empty()
    }

    /// F_GETLK: the first lock of another owner that a `kind` lock of
    /// `owner` on `range` would conflict with.
    pub fn conflict(&self, owner: LockOwner, kind: Kind, range: Range) -> Option<Held> {
        let range = self.scope(range);
        self.held
            .iter()
            .find(|h| h.blocks(owner, kind, range))
            .copied()
    }

    /// Lock or unlock.  Returns the answer to `req` and the waiting
    /// requests granted by this change, in the order they were granted.
    pub fn set(&mut self, req: Request) -> (Outcome, Vec<Request>) {
        let req = Request {
            range: self.scope(req.range),
            ..req
        };
        let Some(kind) = req.kind else {
            self.apply(req.owner, req.pid, None, req.range);
            return (Outcome::Granted, self.serve_queue());
        };
        let mut granted = Vec::new();
        if self.semantics == Semantics::Flock
            && self
                .held
                .iter()
                .any(|h| h.owner == req.owner && h.kind != kind)
        {
            // Linux drops the old flock first, whatever comes next.
            self.apply(req.owner, req.pid, None, req.range);
            granted = self.serve_queue();
        }
        let Some(blocker) = self.conflict(req.owner, kind, req.range) else {
            self.apply(req.owner, req.pid, Some(kind), req.range);
            // A downgrade can let others in.
            granted.extend(self.serve_queue());
            return (Outcome::Granted, granted);
        };
        if !req.wait {
            return (Outcome::Conflict(blocker), granted);
        }
        if self.semantics == Semantics::Posix && self.would_deadlock(&req) {
            return (Outcome::Deadlock, granted);
        }
        self.waiting.push_back(req);
        // Dropping our own lock may have let this very request in.
        granted.extend(self.serve_queue());
        if let Some(i) = granted
            .iter()
            .position(|g| g.id == req.id && g.owner == req.owner)
        {
            granted.remove(i);
            return (Outcome::Granted, granted);
        }
        (Outcome::Queued, granted)
    }

    /// Put back a lock from a holder's record (a rebuild after a view
    /// change).  Refused (false) if it conflicts with a lock already put
    /// back, which only a protocol bug can cause.
    pub fn restore(&mut self, h: Held) -> bool {
        let h = Held {
            range: self.scope(h.range),
            ..h
        };
        if self.conflict(h.owner, h.kind, h.range).is_some() {
            return false;
        }
        self.apply(h.owner, h.pid, Some(h.kind), h.range);
        true
    }

    /// Withdraw a waiting request (a signal, a timeout).  None if it is
    /// not waiting (granted meanwhile, or unknown).
    pub fn cancel(&mut self, owner: LockOwner, id: u64) -> Option<Request> {
        let i = self
            .waiting
            .iter()
            .position(|w| w.owner == owner && w.id == id)?;
        self.waiting.remove(i)
    }

    /// Release every lock of `owner` and withdraw its waiting requests
    /// (its file was closed).  Returns the waiting requests this grants.
    pub fn release_owner(&mut self, owner: LockOwner) -> Vec<Request> {
        self.remove_where(|o| o == owner)
    }

    /// Drop every lock and waiting request of `node` (it died, or left).
    #[cfg(test)]
    pub fn purge_node(&mut self, node: NodeId) -> Vec<Request> {
        self.remove_where(|o| o.node == node)
    }

    fn remove_where(&mut self, gone: impl Fn(LockOwner) -> bool) -> Vec<Request> {
        self.held.retain(|h| !gone(h.owner));
        self.waiting.retain(|w| !gone(w.owner));
        self.serve_queue()
    }

    /// flock locks always cover the whole file.
    fn scope(&self, range: Range) -> Range {
        match self.semantics {
            Semantics::Posix => range,
            Semantics::Flock => Range::WHOLE,
        }
    }

    /// Set `owner`'s locks on `range` to `kind` (None: none), splitting
    /// and merging its own locks; other owners' locks are not looked at.
    fn apply(&mut self, owner: LockOwner, pid: u32, kind: Option<Kind>, range: Range) {
        let mut out = Vec::with_capacity(self.held.len() + 2);
        for h in self.held.drain(..) {
            if h.owner != owner || !h.range.overlaps(range) {
                out.push(h);
                continue;
            }
            if h.range.start < range.start {
                out.push(Held {
                    range: Range {
                        start: h.range.start,
                        end: range.start - 1,
                    },
                    ..h
                });
            }
            if h.range.end > range.end {
                out.push(Held {
                    range: Range {
                        start: range.end + 1,
                        end: h.range.end,
                    },
                    ..h
                });
            }
        }
        if let Some(kind) = kind {
            let mut new = Held {
                owner,
                pid,
                kind,
                range,
            };
            // Merge with the owner's locks of the same kind it touches.
            out.retain(|h| {
                if h.owner == owner && h.kind == kind && h.range.touches(new.range) {
                    new.range = Range {
                        start: new.range.start.min(h.range.start),
                        end: new.range.end.max(h.range.end),
                    };
                    false
                } else {
                    true
                }
            });
            out.push(new);
        }
        out.sort_by_key(|h| (h.range.start, h.owner));
        self.held = out;
    }

    /// Grant, in order, every waiting request nothing held blocks any
    /// more; again until a pass grants nothing (a granted conversion can
    /// unblock an earlier waiter).
    fn serve_queue(&mut self) -> Vec<Request> {
        let mut granted = Vec::new();
        loop {
            let mut progress = false;
            let mut i = 0;
            while i < self.waiting.len() {
                let w = self.waiting[i];
                let kind = w.kind.unwrap_or(Kind::Read);
                if self.conflict(w.owner, kind, w.range).is_none() {
                    self.waiting.remove(i);
                    self.apply(w.owner, w.pid, w.kind, w.range);
                    granted.push(w);
                    progress = true;
                } else {
                    i += 1;
                }
            }
            if !progress {
                return granted;
            }
        }
    }

    /// Would `req` (blocked) waiting close a cycle: does an owner it
    /// waits for wait, directly or through others, for `req`'s owner?
    fn would_deadlock(&self, req: &Request) -> bool {
        let blockers = |owner: LockOwner, kind: Kind, range: Range| -> Vec<LockOwner> {
            self.held
                .iter()
                .filter(|h| h.blocks(owner, kind, range))
                .map(|h| h.owner)
                .collect()
        };
        let Some(kind) = req.kind else { return false };
        let mut seen: Vec<LockOwner> = Vec::new();
        let mut todo = blockers(req.owner, kind, req.range);
        while let Some(o) = todo.pop() {
            if o == req.owner {
                return true;
            }
            if seen.contains(&o) {
                continue;
            }
            seen.push(o);
            for w in self.waiting.iter().filter(|w| w.owner == o) {
                todo.extend(blockers(w.owner, w.kind.unwrap_or(Kind::Read), w.range));
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: LockOwner = LockOwner { node: 1, owner: 10 };
    const B: LockOwner = LockOwner { node: 2, owner: 20 };
    const C: LockOwner = LockOwner { node: 2, owner: 21 };

    fn r(start: u64, end: u64) -> Range {
        Range::new(start, end).unwrap()
    }

    fn req(id: u64, owner: LockOwner, kind: Option<Kind>, range: Range, wait: bool) -> Request {
        Request {
            id,
            owner,
            pid: owner.owner as u32,
            kind,
            range,
            wait,
        }
    }

    fn ranges_of(t: &FileLocks, owner: LockOwner) -> Vec<(u64, u64, Kind)> {
        t.held()
            .iter()
            .filter(|h| h.owner == owner)
            .map(|h| (h.range.start, h.range.end, h.kind))
            .collect()
    }

    #[test]
    fn ranges_split_merge_and_conflict_only_where_they_overlap() {
        let mut t = FileLocks::new(Semantics::Posix);
        let w = Some(Kind::Write);
        let rd = Some(Kind::Read);
        assert_eq!(t.set(req(1, A, w, r(0, 99), false)).0, Outcome::Granted);
        // B may lock bytes A does not hold, not those it does.
        assert_eq!(t.set(req(2, B, w, r(100, 199), false)).0, Outcome::Granted);
        assert!(matches!(
            t.set(req(3, B, rd, r(50, 150), false)).0,
            Outcome::Conflict(h) if h.owner == A && h.range == r(0, 99)
        ));
        // A downgrades the middle: split into three.
        t.set(req(4, A, rd, r(40, 59), false));
        assert_eq!(
            ranges_of(&t, A),
            vec![
                (0, 39, Kind::Write),
                (40, 59, Kind::Read),
                (60, 99, Kind::Write)
            ]
        );
        // B can now read-lock 40..59 but not write it.
        assert_eq!(t.set(req(5, B, rd, r(40, 59), false)).0, Outcome::Granted);
        assert!(matches!(
            t.set(req(6, C, w, r(45, 45), false)).0,
            Outcome::Conflict(_)
        ));
        // F_GETLK from C: the first conflicting lock.
        assert_eq!(t.conflict(C, Kind::Read, r(0, 10)).unwrap().owner, A);
        assert_eq!(t.conflict(A, Kind::Write, r(0, 10)), None);
        // A unlocks the middle of its first range; the write lock merges
        // back when re-taken over all of it.
        t.set(req(7, A, None, r(10, 19), false));
        assert_eq!(
            ranges_of(&t, A)[..2],
            [(0, 9, Kind::Write), (20, 39, Kind::Write)]
        );
        t.set(req(8, B, None, Range::WHOLE, false));
        t.set(req(9, A, w, r(0, 99), false));
        assert_eq!(ranges_of(&t, A), vec![(0, 99, Kind::Write)]);
        // Adjacent ranges of one kind merge; to EOF works.
        t.set(req(10, A, w, r(100, u64::MAX), false));
        assert_eq!(ranges_of(&t, A), vec![(0, u64::MAX, Kind::Write)]);
    }

    #[test]
    fn waiters_are_served_in_order_when_the_way_clears() {
        let mut t = FileLocks::new(Semantics::Posix);
        t.set(req(1, A, Some(Kind::Write), r(0, 9), false));
        assert_eq!(
            t.set(req(2, B, Some(Kind::Read), r(5, 5), true)).0,
            Outcome::Queued
        );
        assert_eq!(
            t.set(req(3, C, Some(Kind::Read), r(0, 0), true)).0,
            Outcome::Queued
        );
        // A downgrades: both readers go in, in order.
        let (o, g) = t.set(req(4, A, Some(Kind::Read), r(0, 9), false));
        assert_eq!(o, Outcome::Granted);
        assert_eq!(g.iter().map(|w| w.id).collect::<Vec<_>>(), vec![2, 3]);
        // A writer waits for all readers; cancel withdraws it.
        let wr = LockOwner { node: 3, owner: 30 };
        assert_eq!(
            t.set(req(5, wr, Some(Kind::Write), r(0, 9), true)).0,
            Outcome::Queued
        );
        assert!(t.cancel(wr, 5).is_some());
        assert!(t.cancel(wr, 5).is_none());
        assert_eq!(
            t.set(req(6, wr, Some(Kind::Write), r(0, 9), true)).0,
            Outcome::Queued
        );
        assert!(t.release_owner(A).is_empty());
        assert!(t.purge_node(1).is_empty());
        // node 2 holds B's and C's: its purge lets the writer in
        let g = t.purge_node(2);
        assert_eq!(g.iter().map(|w| w.id).collect::<Vec<_>>(), vec![6]);
        assert_eq!(ranges_of(&t, wr), vec![(0, 9, Kind::Write)]);
        t.release_owner(wr);
        assert!(t.is_empty());
    }

    #[test]
    fn a_wait_that_closes_a_cycle_is_a_deadlock() {
        let mut t = FileLocks::new(Semantics::Posix);
        let w = Some(Kind::Write);
        t.set(req(1, A, w, r(0, 0), false));
        t.set(req(2, B, w, r(1, 1), false));
        assert_eq!(t.set(req(3, A, w, r(1, 1), true)).0, Outcome::Queued);
        assert_eq!(t.set(req(4, B, w, r(0, 0), true)).0, Outcome::Deadlock);
        // Through a third owner too.
        t.set(req(5, C, w, r(2, 2), false));
        assert_eq!(t.set(req(6, B, w, r(2, 2), true)).0, Outcome::Queued);
        assert_eq!(t.set(req(7, C, w, r(0, 0), true)).0, Outcome::Deadlock);
        // A blocked request that may not wait is a conflict, not a deadlock.
        assert!(matches!(
            t.set(req(8, C, w, r(0, 0), false)).0,
            Outcome::Conflict(_)
        ));
    }

    #[test]
    fn flock_is_whole_file_and_a_waiting_upgrade_gives_its_lock_up() {
        let mut t = FileLocks::new(Semantics::Flock);
        let (sh, ex) = (Some(Kind::Read), Some(Kind::Write));
        assert_eq!(t.set(req(1, A, sh, r(5, 5), false)).0, Outcome::Granted);
        assert_eq!(ranges_of(&t, A), vec![(0, u64::MAX, Kind::Read)]);
        assert_eq!(
            t.set(req(2, B, sh, Range::WHOLE, false)).0,
            Outcome::Granted
        );
        // Both upgrade: A waits (its shared lock dropped); B's upgrade
        // drops B's, which lets A in, and B waits for A.
        assert_eq!(t.set(req(3, A, ex, Range::WHOLE, true)).0, Outcome::Queued);
        assert!(ranges_of(&t, A).is_empty());
        let (o, g) = t.set(req(4, B, ex, Range::WHOLE, true));
        assert_eq!(o, Outcome::Queued);
        assert_eq!(g.iter().map(|w| w.id).collect::<Vec<_>>(), vec![3]);
        assert_eq!(ranges_of(&t, A), vec![(0, u64::MAX, Kind::Write)]);
        let g = t.set(req(5, A, None, Range::WHOLE, false)).1;
        assert_eq!(g.iter().map(|w| w.id).collect::<Vec<_>>(), vec![4]);
        assert_eq!(ranges_of(&t, B), vec![(0, u64::MAX, Kind::Write)]);
        t.set(req(6, B, None, Range::WHOLE, false));
        // A LOCK_NB conversion that is refused has dropped the old lock.
        t.set(req(6, A, sh, Range::WHOLE, false));
        assert_eq!(
            t.set(req(7, C, sh, Range::WHOLE, false)).0,
            Outcome::Granted
        );
        assert!(matches!(
            t.set(req(8, C, ex, Range::WHOLE, false)).0,
            Outcome::Conflict(_)
        ));
        assert!(ranges_of(&t, C).is_empty());
        assert_eq!(ranges_of(&t, A), vec![(0, u64::MAX, Kind::Read)]);
    }

    // ---- against a model: one lock state per owner per byte ----

    /// Requests start below this; ranges end below it or at EOF.  The
    /// model's last cell, index BYTES, stands for all bytes from BYTES on.
    const BYTES: u64 = 12;
    const CELLS: usize = BYTES as usize + 1;
    const OWNERS: [LockOwner; 3] = [A, B, C];

    type Model = [[Option<Kind>; CELLS]; 3];

    fn cells(range: Range) -> std::ops::RangeInclusive<usize> {
        range.start.min(BYTES) as usize..=range.end.min(BYTES) as usize
    }

    fn model_conflicts(m: &Model, who: usize, kind: Kind, range: Range) -> bool {
        (0..3).filter(|o| *o != who).any(|o| {
            cells(range).any(|b| match m[o][b] {
                Some(Kind::Write) => true,
                Some(Kind::Read) => kind == Kind::Write,
                None => false,
            })
        })
    }

    fn expand(t: &FileLocks) -> Model {
        let mut m: Model = [[None; CELLS]; 3];
        for h in t.held() {
            let o = OWNERS.iter().position(|x| *x == h.owner).unwrap();
            for b in cells(h.range) {
                assert!(m[o][b].is_none(), "owner {o} holds byte {b} twice");
                m[o][b] = Some(h.kind);
            }
        }
        m
    }

    fn op() -> impl Strategy<Value = (usize, Option<Kind>, u64, u64, bool)> {
        (
            0..3usize,
            prop_oneof![Just(None), Just(Some(Kind::Read)), Just(Some(Kind::Write))],
            0..BYTES,
            0..BYTES,
            any::<bool>(),
        )
    }

    proptest! {
        /// Non-blocking requests: the table grants exactly what a
        /// byte-by-byte model grants, holds exactly its bytes, keeps each
        /// owner's locks merged, and never lets two owners conflict.
        #[test]
        fn the_table_matches_a_byte_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut t = FileLocks::new(Semantics::Posix);
            let mut m: Model = [[None; CELLS]; 3];
            for (i, (who, kind, a, b, to_eof)) in ops.into_iter().enumerate() {
                let range = Range { start: a.min(b), end: if to_eof { u64::MAX } else { a.max(b) } };
                let conflicted = kind.is_some_and(|k| model_conflicts(&m, who, k, range));
                let (out, granted) = t.set(req(i as u64, OWNERS[who], kind, range, false));
                prop_assert!(granted.is_empty());
                if conflicted {
                    prop_assert!(matches!(out, Outcome::Conflict(_)), "{out:?}");
                } else {
                    prop_assert_eq!(out, Outcome::Granted);
                    for byte in cells(range) {
                        m[who][byte] = kind;
                    }
                }
                prop_assert_eq!(expand(&t), m);
                for x in t.held() {
                    for y in t.held() {
                        if x == y { continue; }
                        if x.owner == y.owner {
                            prop_assert!(!(x.kind == y.kind && x.range.touches(y.range)), "unmerged {x:?} {y:?}");
                        }
                    }
                }
            }
        }

        /// With waiting: after every call nothing held conflicts, no
        /// waiter could be granted, and each request is answered once
        /// (at once, or later as a grant) unless still waiting.
        #[test]
        fn waiters_never_starve_behind_nothing(ops in proptest::collection::vec(op(), 1..60)) {
            let mut t = FileLocks::new(Semantics::Posix);
            let mut answered = std::collections::HashSet::new();
            for (i, (who, kind, a, b, wait)) in ops.into_iter().enumerate() {
                let id = i as u64;
                let owner = OWNERS[who];
                // an owner with a waiting request is blocked in the kernel
                if t.waiting().any(|w| w.owner == owner) {
                    continue;
                }
                let range = Range { start: a.min(b), end: a.max(b) };
                let (out, granted) = t.set(req(id, owner, kind, range, wait));
                if out != Outcome::Queued {
                    prop_assert!(answered.insert(id));
                }
                for g in granted {
                    prop_assert!(answered.insert(g.id), "granted twice: {g:?}");
                }
                for x in t.held() {
                    for y in t.held() {
                        prop_assert!(x.owner == y.owner || !x.range.overlaps(y.range) || (x.kind == Kind::Read && y.kind == Kind::Read));
                    }
                }
                for w in t.waiting() {
                    prop_assert!(t.conflict(w.owner, w.kind.unwrap_or(Kind::Read), w.range).is_some());
                }
            }
        }
    }
}
