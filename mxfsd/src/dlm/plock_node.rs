//! File locks between nodes: the part of a [`super::node::DlmNode`] that
//! carries fcntl and flock locks ([`super::plock`]).
//!
//! This module owns the protocol of file locks.  Each file's table lives
//! at the master of the file's resource ([`master_of`] over the view's
//! members, as for the DLM's locks); a node sends its requests there and
//! keeps a copy of its own granted locks, and at a view change the
//! tables are rebuilt from those copies, by the rules of
//! [`super::node`]:
//!
//! - A node's copy of its locks (its own lock owners only) is raised
//!   only when a grant arrives and lowered (unlock, release) before the
//!   master is told, so it never claims more than the master granted.
//!   A flock request drops the owner's flock first (the master does,
//!   whatever it does next, as Linux does).  A read lock over the
//!   owner's own write lock is a downgrade there,
//!   which the master may make at once: the copy is lowered when the
//!   request is sent, and raised back if it is refused before any view
//!   change (after one, the new master only knows the lowered copy, so
//!   it stays lowered, as a DLM conversion keeps only the mode both
//!   sides cover).
//!   The master acknowledges each unlock and release; a grant that
//!   arrives while some are unacknowledged was made before the master
//!   saw them (each link is FIFO), so they are applied again on top of
//!   it, as the master applied them.
//! - At a view change every master drops its tables; every node sends
//!   each master its copies of the files that master now masters
//!   ([`DlmMsg::RecoverPlocks`], before its `RecoverDone`), then sends
//!   its unanswered requests again.  The master defers requests until
//!   its recovery ends, rebuilds each table from the copies, then serves
//!   them.  A departed node sends nothing: its locks and its waiters are
//!   gone, and the rebuilt tables grant what waited for them.
//! - Answers of an older view are dropped with that view's other
//!   messages: a request answered there is simply answered again.  A
//!   cancel that crosses a view change ends as cancelled (the request is
//!   not sent again).
//! - A grant that crosses a cancel is still a grant: the caller gets it
//!   and decides (the module's calls keep it; the runtime unlocks the
//!   range only when nobody is left to take it).

use std::collections::BTreeMap;

use tracing::{debug, warn};

use super::node::{Completion, DlmMsg, Refusal};
use super::plock::{FileLocks, Held, Kind, LockOwner, Outcome, Range, Request, Semantics};
use super::{master_of, LockId, NodeId};
use crate::wire::{
    PlockAnswer, PlockHeld, PlockHolder, PlockOp, PlockRecover, PlockRequest, PlockResult,
    MAX_RECOVER_PLOCKS,
};

/// What the DLM node must do after a call here.
#[derive(Debug, Default)]
pub struct Effects {
    pub send: Vec<(NodeId, DlmMsg)>,
    pub done: Vec<Completion>,
}

#[derive(Debug)]
struct Pending {
    req: PlockRequest,
    cancelling: bool,
    /// A read lock's downgrade of the owner's write locks in its range,
    /// lowered in the copy since the last view change: what to put back
    /// if it is refused.  (What was lowered before is all the new
    /// master knows, so it stays lowered.)
    lowered: Vec<Held>,
}

/// One node's file-lock state: the tables it masters, its own locks,
/// its unanswered requests.
#[derive(Debug, Default)]
pub struct PlockNode {
    mastered: BTreeMap<Vec<u8>, FileLocks>,
    own: BTreeMap<Vec<u8>, FileLocks>,
    /// By the request's local id.
    pending: BTreeMap<u64, Pending>,
    /// Unlocks and releases sent and not yet acknowledged, by id (the
    /// order they were sent in).
    unacked: BTreeMap<u64, PlockRequest>,
    /// Records received during a recovery, from whom.
    recovered: Vec<(NodeId, PlockRecover)>,
}

fn semantics(flock: bool) -> Semantics {
    if flock {
        Semantics::Flock
    } else {
        Semantics::Posix
    }
}

fn range_of(r: &PlockRequest) -> Range {
    Range {
        start: r.start,
        end: r.end,
    }
}

fn holder(h: Held) -> PlockHolder {
    PlockHolder {
        node: h.owner.node,
        owner: h.owner.owner,
        pid: h.pid,
        kind: h.kind,
        start: h.range.start,
        end: h.range.end,
    }
}

/// What sending `req` takes from our copy `t` of `owner`'s locks at
/// once, because the master may take it whatever it answers: an unlock
/// or a release its range; a flock request the old flock; a read lock
/// the write locks it downgrades (returned, to put back should the
/// request be refused).
fn lower_at_send(t: &mut FileLocks, owner: LockOwner, req: &PlockRequest) -> Vec<Held> {
    match req.op {
        PlockOp::Release => {
            t.release_owner(owner);
        }
        PlockOp::Unlock => {
            t.set(Request {
                id: req.req.local,
                owner,
                pid: req.pid,
                kind: None,
                range: range_of(req),
                wait: false,
            });
        }
        PlockOp::Lock { .. } if req.flock => {
            t.release_owner(owner);
        }
        PlockOp::Lock {
            kind: Kind::Read, ..
        } => {
            let r = range_of(req);
            let lowered: Vec<Held> = t
                .held()
                .iter()
                .filter(|h| h.owner == owner && h.kind == Kind::Write)
                .filter_map(|h| {
                    let start = h.range.start.max(r.start);
                    let end = h.range.end.min(r.end);
                    (start <= end).then_some(Held {
                        range: Range { start, end },
                        ..*h
                    })
                })
                .collect();
            for w in &lowered {
                t.restore(Held {
                    kind: Kind::Read,
                    ..*w
                });
            }
            return lowered;
        }
        _ => {}
    }
    Vec::new()
}

impl PlockNode {
    /// A local request (not a cancel: [`PlockNode::cancel`]); returns
    /// whether an answer will come (a lock or a test).  An unlock or a
    /// release takes effect here at once.
    pub fn request(
        &mut self,
        me: NodeId,
        members: &[NodeId],
        req: PlockRequest,
        fx: &mut Effects,
    ) -> bool {
        let Some(master) = master_of(&req.resource, members) else {
            return false;
        };
        let owner = LockOwner {
            node: me,
            owner: req.owner,
        };
        let answered = match req.op {
            PlockOp::Lock { .. } | PlockOp::Test { .. } => {
                let lowered = match self.own.get_mut(&req.resource) {
                    Some(t) => lower_at_send(t, owner, &req),
                    None => Vec::new(),
                };
                self.pending.insert(
                    req.req.local,
                    Pending {
                        req: req.clone(),
                        cancelling: false,
                        lowered,
                    },
                );
                true
            }
            PlockOp::Unlock | PlockOp::Release => {
                if let Some(t) = self.own.get_mut(&req.resource) {
                    lower_at_send(t, owner, &req);
                    if t.is_empty() {
                        self.own.remove(&req.resource);
                    }
                }
                self.unacked.insert(req.req.local, req.clone());
                false
            }
            PlockOp::Cancel => return false,
        };
        fx.send.push((master, DlmMsg::Plock(req)));
        answered
    }

    /// Withdraw unanswered request `id` (a waiting lock).  Its answer
    /// follows: cancelled, or the grant that came first.
    pub fn cancel(&mut self, members: &[NodeId], id: u64, fx: &mut Effects) {
        let Some(p) = self.pending.get_mut(&id).filter(|p| !p.cancelling) else {
            return;
        };
        p.cancelling = true;
        let req = PlockRequest {
            op: PlockOp::Cancel,
            ..p.req.clone()
        };
        if let Some(master) = master_of(&req.resource, members) {
            fx.send.push((master, DlmMsg::Plock(req)));
        }
    }

    /// A master's answer to one of our requests (`from` checked to be
    /// the master by the caller).
    pub fn answer(&mut self, me: NodeId, a: PlockAnswer, fx: &mut Effects) {
        if a.req.node == me
            && self
                .unacked
                .get(&a.req.local)
                .is_some_and(|u| u.resource == a.resource)
        {
            self.unacked.remove(&a.req.local);
            return;
        }
        let known = self
            .pending
            .get(&a.req.local)
            .is_some_and(|p| p.req.resource == a.resource && a.req.node == me);
        let Some(p) = known.then(|| self.pending.remove(&a.req.local)).flatten() else {
            debug!("dlm: file lock answer for no request of ours: {a:?}");
            return;
        };
        let owner = LockOwner {
            node: me,
            owner: p.req.owner,
        };
        // What the master made of it: the lock, or (refused before any
        // view change) the write locks its downgrade lowered.
        let raise: Vec<Held> = match (a.result, p.req.op) {
            (PlockResult::Granted, PlockOp::Lock { kind, .. }) => vec![Held {
                owner,
                pid: p.req.pid,
                kind,
                range: range_of(&p.req),
            }],
            (_, PlockOp::Lock { .. }) => p.lowered.clone(),
            _ => Vec::new(),
        };
        if !raise.is_empty() {
            let t = self
                .own
                .entry(a.resource.clone())
                .or_insert_with(|| FileLocks::new(semantics(p.req.flock)));
            for held in raise {
                if !t.restore(held) {
                    warn!("dlm: a file lock answer conflicts with this node's own locks: {a:?}");
                }
            }
            // The master answered before it saw the owner's later
            // requests, unlocks and releases: lower again as they did
            // when they were sent (each link is FIFO; an unlock
            // acknowledged is already out of `unacked`).
            let mine = |r: &PlockRequest| r.resource == a.resource && r.owner == p.req.owner;
            let mut later: Vec<(u64, bool)> = self
                .pending
                .range(a.req.local + 1..)
                .filter(|(_, q)| mine(&q.req))
                .map(|(id, _)| (*id, true))
                .chain(
                    self.unacked
                        .iter()
                        .filter(|(_, u)| mine(u))
                        .map(|(id, _)| (*id, false)),
                )
                .collect();
            later.sort_unstable();
            for (id, pending) in later {
                if pending {
                    if let Some(q) = self.pending.get_mut(&id) {
                        let more = lower_at_send(t, owner, &q.req);
                        q.lowered.extend(more);
                    }
                } else if let Some(u) = self.unacked.get(&id) {
                    lower_at_send(t, owner, u);
                }
            }
        }
        fx.done.push(Completion::Plock {
            req: p.req,
            result: a.result,
        });
    }

    /// A request to this node as the file's master (`from` and the
    /// mastering checked by the caller).
    pub fn master(&mut self, from: NodeId, r: PlockRequest, fx: &mut Effects) {
        let owner = LockOwner {
            node: from,
            owner: r.owner,
        };
        let range = range_of(&r);
        let t = self
            .mastered
            .entry(r.resource.clone())
            .or_insert_with(|| FileLocks::new(semantics(r.flock)));
        let mut answer = None;
        let grants = match r.op {
            PlockOp::Lock { kind, wait } => {
                let (out, grants) = t.set(Request {
                    id: r.req.local,
                    owner,
                    pid: r.pid,
                    kind: Some(kind),
                    range,
                    wait,
                });
                answer = match out {
                    Outcome::Granted => Some(PlockResult::Granted),
                    Outcome::Conflict(h) => Some(PlockResult::Conflict(holder(h))),
                    Outcome::Deadlock => Some(PlockResult::Deadlock),
                    Outcome::Queued => None,
                };
                grants
            }
            PlockOp::Unlock => {
                answer = Some(PlockResult::Granted);
                t.set(Request {
                    id: r.req.local,
                    owner,
                    pid: r.pid,
                    kind: None,
                    range,
                    wait: false,
                })
                .1
            }
            PlockOp::Test { kind } => {
                answer = Some(
                    t.conflict(owner, kind, range)
                        .map_or(PlockResult::Free, |h| PlockResult::Conflict(holder(h))),
                );
                Vec::new()
            }
            PlockOp::Cancel => {
                if t.cancel(owner, r.req.local).is_some() {
                    answer = Some(PlockResult::Cancelled);
                }
                Vec::new()
            }
            PlockOp::Release => {
                answer = Some(PlockResult::Granted);
                t.release_owner(owner)
            }
        };
        if t.is_empty() {
            self.mastered.remove(&r.resource);
        }
        if let Some(result) = answer {
            fx.send.push((
                from,
                DlmMsg::PlockAnswer(PlockAnswer {
                    req: r.req,
                    resource: r.resource.clone(),
                    result,
                }),
            ));
        }
        for g in grants {
            fx.send.push((
                g.owner.node,
                DlmMsg::PlockAnswer(PlockAnswer {
                    req: LockId {
                        node: g.owner.node,
                        local: g.id,
                    },
                    resource: r.resource.clone(),
                    result: PlockResult::Granted,
                }),
            ));
        }
    }

    /// A view change with this node a member: the tables it mastered
    /// are dropped, cancels in flight end as cancelled, and the result
    /// is each new master's records, to send before its `RecoverDone`.
    pub fn view_change(
        &mut self,
        view: u64,
        members: &[NodeId],
        fx: &mut Effects,
    ) -> BTreeMap<NodeId, Vec<PlockRecover>> {
        self.mastered.clear();
        self.recovered.clear();
        // Answers of the old view are dropped: no grant will come that
        // they would have to be applied on.
        self.unacked.clear();
        let cancelled: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.cancelling)
            .map(|(id, _)| *id)
            .collect();
        for id in cancelled {
            if let Some(p) = self.pending.remove(&id) {
                fx.done.push(Completion::Plock {
                    req: p.req,
                    result: PlockResult::Cancelled,
                });
            }
        }
        for p in self.pending.values_mut() {
            p.lowered.clear();
        }
        let mut out: BTreeMap<NodeId, Vec<PlockRecover>> = BTreeMap::new();
        for (resource, t) in &self.own {
            let Some(m) = master_of(resource, members) else {
                continue;
            };
            let held: Vec<PlockHeld> = t
                .held()
                .iter()
                .map(|h| PlockHeld {
                    owner: h.owner.owner,
                    pid: h.pid,
                    kind: h.kind,
                    start: h.range.start,
                    end: h.range.end,
                })
                .collect();
            for chunk in held.chunks(MAX_RECOVER_PLOCKS) {
                out.entry(m).or_default().push(PlockRecover {
                    view,
                    resource: resource.clone(),
                    flock: t.semantics() == Semantics::Flock,
                    held: chunk.to_vec(),
                });
            }
        }
        out
    }

    /// After the view change's `RecoverDone`s: the unanswered requests,
    /// to send again.
    pub fn resend(&self, members: &[NodeId], fx: &mut Effects) {
        for p in self.pending.values() {
            if let Some(m) = master_of(&p.req.resource, members) {
                fx.send.push((m, DlmMsg::Plock(p.req.clone())));
            }
        }
    }

    /// Records from `from` for a table this node now masters.
    pub fn recover(&mut self, from: NodeId, rec: PlockRecover) {
        self.recovered.push((from, rec));
    }

    /// Rebuild the tables from the records received.
    pub fn finish_recovery(&mut self) {
        let mut records = std::mem::take(&mut self.recovered);
        // the same order on every master, whatever the arrival order
        records.sort_by(|a, b| (a.0, &a.1.resource).cmp(&(b.0, &b.1.resource)));
        for (from, rec) in records {
            let t = self
                .mastered
                .entry(rec.resource.clone())
                .or_insert_with(|| FileLocks::new(semantics(rec.flock)));
            for h in rec.held {
                let held = Held {
                    owner: LockOwner {
                        node: from,
                        owner: h.owner,
                    },
                    pid: h.pid,
                    kind: h.kind,
                    range: Range {
                        start: h.start,
                        end: h.end,
                    },
                };
                if !t.restore(held) {
                    // Cannot happen if every node follows the protocol.
                    warn!("dlm: conflicting file lock records; dropped {held:?}");
                }
            }
        }
    }

    /// This node left the members: its locks are gone.
    pub fn leave(&mut self, fx: &mut Effects) {
        self.mastered.clear();
        self.own.clear();
        self.unacked.clear();
        self.recovered.clear();
        for (_, p) in std::mem::take(&mut self.pending) {
            fx.done.push(Completion::Refused {
                lock: p.req.req,
                resource: p.req.resource,
                reason: Refusal::Lost,
                mode: None,
            });
        }
    }

    /// The locks of this node's copy on `resource` (for inspection).
    #[cfg(test)]
    pub fn own_locks(&self, resource: &[u8]) -> Vec<Held> {
        self.own
            .get(resource)
            .map(|t| t.held().to_vec())
            .unwrap_or_default()
    }

    /// The master's table of `resource`, if this node masters it and it
    /// is not empty (for inspection).
    #[cfg(test)]
    pub fn mastered_locks(&self, resource: &[u8]) -> Vec<Held> {
        self.mastered
            .get(resource)
            .map(|t| t.held().to_vec())
            .unwrap_or_default()
    }
}
