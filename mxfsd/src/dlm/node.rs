//! One node of the distributed lock manager, as a sans-I/O state machine.
//!
//! This module owns the DLM *protocol* between nodes: where a request goes
//! (the resource's master, [`master_of`] over the current members), what a
//! master does with it (it runs the pure [`LockSpace`] for the resources it
//! masters), what a requester remembers about its own locks, and how the
//! cluster rebuilds its lock state when the members change.  It does no
//! I/O: inputs are local calls ([`DlmNode::lock`], `DlmNode::convert`,
//! `DlmNode::cancel`, [`DlmNode::unlock`], [`DlmNode::set_members`]) and
//! peer messages ([`DlmNode::receive`]); outputs ([`DlmNode::poll_output`])
//! are messages to send to a node and local completions (AST, BAST,
//! cancel, refusal).  The async facade in [`super::runtime`] and the tests
//! drive the same code.
//!
//! # Assumptions about the transport and the membership layer
//!
//! - Between two members, messages arrive in the order they were sent
//!   (one TCP link per pair).  Messages to self are queued the same way.
//! - Every member is told every view (`set_members(view, members)`, views
//!   strictly increasing), though not at the same moment.  A link to a
//!   member that drops and comes back may have lost messages: the
//!   membership layer must then issue a new view (even with the same
//!   members), which resynchronises everything (below).
//!
//! # Views and recovery: rebuild from the holders' records
//!
//! A dead master's state is lost, so the state of a re-mastered resource
//! must be rebuilt from what the holders know.  This node does that for
//! *every* resource at *every* view change, not only for the moved ones:
//!
//! 1. On `set_members(v, ..)` a node drops its whole [`LockSpace`], then
//!    sends every member (itself included) the records of its own locks on
//!    the resources that member masters in `v` (`RecoverLocks`), and then
//!    `RecoverDone{v}`, to every member even when it has nothing for it.
//! 2. A master is *recovering* until it has every member's `RecoverDone`
//!    for `v`; meanwhile lock requests to it are deferred.  Then it
//!    rebuilds each resource in a deterministic order: the granted modes
//!    (imported), then the conversions, then the waiting requests, each
//!    group in [`LockId`] order, through the engine's own `convert` and
//!    `request` (so conversion deadlocks and NOQUEUE are handled as in
//!    normal operation).  Departed nodes send nothing: their locks are
//!    purged by construction, and the rebuild grants their waiters.
//! 3. Because each link is FIFO and the recovery messages carry the view,
//!    every message is known to belong to the view in which its sender
//!    sent it (the last `Recover*` view seen from that sender).  Messages
//!    of an older view are dropped; messages of a newer view wait until
//!    this node reaches it.
//!
//! Why this is safe: a requester's record of a lock never claims more than
//! its master has granted.  It raises its granted mode only when a grant
//! arrives, and lowers it (unlock, down-conversion) *before* telling the
//! master; while a conversion is in flight it claims only the strongest
//! mode both the old and the new mode cover (`glb`: the old mode for an
//! up-conversion, CR for PR↔CW), because the master may grant the new mode
//! at any time.  Records taken at each node's own view change are then
//! pairwise compatible (each is covered by what the old master last
//! granted), grants of the old view arriving later are ignored, and the
//! new master rebuilds from compatible records.  Doing it for every
//! resource costs a resend of every lock at each membership change, which
//! is rare; in exchange there is no "did this resource move?" case, no
//! view history, and nested view changes need nothing special (a view
//! change during a recovery simply starts a new one).  Re-sending only the
//! moved resources is an optimisation for later, measured first.
//!
//! # What a requester may rely on
//!
//! [`DlmNode::held`] is the mode the caller may rely on.  A down-conversion
//! and an unlock take effect locally at once (the master always grants a
//! down-conversion at once), so they complete immediately; the master's
//! acknowledgement is ignored.  During a PR↔CW conversion only CR is
//! relied on, as said above.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tracing::{debug, warn};

use super::plock::FileLockCall;
use super::plock_node::{Effects, PlockNode};
use super::{
    master_of, DlmError, Event, LockId, LockSpace, LockState, Mode, NodeId, RequestFlags,
    MAX_RESOURCE_NAME,
};
/// A requester's record of one of its locks, as re-sent to the master at
/// a view change; it travels as it is in [`wire::LockRecover`].
pub use crate::wire::RecordedLock;
use crate::wire::{
    self, LockBlocking, LockCancelled, LockErrorCode, LockGrant, LockRecover, LockRef, LockRequest,
    Message, PlockAnswer, PlockOp, PlockRecover, PlockRequest, PlockResult,
};

/// A membership view number (as in [`wire::Membership::view`]).
pub type View = u64;

/// Most locks in one `RecoverLocks` message: what the wire accepts
/// ([`wire::MAX_RECOVER_LOCKS`]; with full-length names a chunk stays far
/// below [`wire::MAX_FRAME`]).
pub const RECOVER_CHUNK: usize = wire::MAX_RECOVER_LOCKS;

/// Most messages kept from a peer that is in a newer view than us.  A
/// member is trusted, but a bug there must not exhaust our memory.
pub const MAX_FUTURE: usize = 1 << 16;

/// Messages between DLM nodes.  Each is one [`wire`] lock message
/// ([`DlmMsg::into_wire`], [`DlmMsg::from_wire`]): the recovery messages
/// are [`Message::LockRecover`] and [`Message::LockRecoverDone`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlmMsg {
    Request(LockRequest),
    Convert(LockRequest),
    Unlock(LockRef),
    Cancel(LockRef),
    Grant(LockGrant),
    Blocking(LockBlocking),
    Cancelled(LockCancelled),
    Error(wire::LockError),
    /// Some of the sender's own locks on resources the receiver masters in
    /// `view`.
    RecoverLocks {
        view: View,
        locks: Vec<RecordedLock>,
    },
    /// The sender has sent all its records for `view`; everything it sends
    /// from now on belongs to `view` (or a later one).
    RecoverDone {
        view: View,
    },
    /// A file-lock request to the file's master ([`super::plock_node`]).
    Plock(PlockRequest),
    PlockAnswer(PlockAnswer),
    /// The sender's file locks on a file the receiver masters in the
    /// view it names (sent before the sender's `RecoverDone`).
    RecoverPlocks(PlockRecover),
}

impl DlmMsg {
    /// The wire message.
    pub fn into_wire(self) -> Message {
        match self {
            DlmMsg::Request(r) => Message::LockRequest(r),
            DlmMsg::Convert(r) => Message::LockConvert(r),
            DlmMsg::Unlock(r) => Message::LockUnlock(r),
            DlmMsg::Cancel(r) => Message::LockCancel(r),
            DlmMsg::Grant(g) => Message::LockGrant(g),
            DlmMsg::Blocking(b) => Message::LockBlocking(b),
            DlmMsg::Cancelled(c) => Message::LockCancelled(c),
            DlmMsg::Error(e) => Message::LockError(e),
            DlmMsg::RecoverLocks { view, locks } => {
                Message::LockRecover(LockRecover { view, locks })
            }
            DlmMsg::RecoverDone { view } => Message::LockRecoverDone { view },
            DlmMsg::Plock(r) => Message::PlockRequest(r),
            DlmMsg::PlockAnswer(a) => Message::PlockAnswer(a),
            DlmMsg::RecoverPlocks(r) => Message::PlockRecover(r),
        }
    }

    /// The DLM message a wire message carries, or the message back if it
    /// is not a DLM one.
    pub fn from_wire(m: Message) -> Result<DlmMsg, Message> {
        Ok(match m {
            Message::LockRequest(r) => DlmMsg::Request(r),
            Message::LockConvert(r) => DlmMsg::Convert(r),
            Message::LockUnlock(r) => DlmMsg::Unlock(r),
            Message::LockCancel(r) => DlmMsg::Cancel(r),
            Message::LockGrant(g) => DlmMsg::Grant(g),
            Message::LockBlocking(b) => DlmMsg::Blocking(b),
            Message::LockCancelled(c) => DlmMsg::Cancelled(c),
            Message::LockError(e) => DlmMsg::Error(e),
            Message::LockRecover(LockRecover { view, locks }) => {
                DlmMsg::RecoverLocks { view, locks }
            }
            Message::LockRecoverDone { view } => DlmMsg::RecoverDone { view },
            Message::PlockRequest(r) => DlmMsg::Plock(r),
            Message::PlockAnswer(a) => DlmMsg::PlockAnswer(a),
            Message::PlockRecover(r) => DlmMsg::RecoverPlocks(r),
            other => return Err(other),
        })
    }

    fn recovery_view(&self) -> Option<View> {
        match self {
            DlmMsg::RecoverLocks { view, .. } | DlmMsg::RecoverDone { view } => Some(*view),
            DlmMsg::RecoverPlocks(r) => Some(r.view),
            _ => None,
        }
    }

    /// The lock and resource a lock message is about.
    fn lock_ref(&self) -> Option<(LockId, &[u8])> {
        match self {
            DlmMsg::Request(r) | DlmMsg::Convert(r) => Some((r.lock, &r.resource)),
            DlmMsg::Unlock(r) | DlmMsg::Cancel(r) => Some((r.lock, &r.resource)),
            DlmMsg::Grant(g) => Some((g.lock, &g.resource)),
            DlmMsg::Blocking(b) => Some((b.lock, &b.resource)),
            DlmMsg::Cancelled(c) => Some((c.lock, &c.resource)),
            DlmMsg::Error(e) => Some((e.lock, &e.resource)),
            DlmMsg::Plock(r) => Some((r.req, &r.resource)),
            DlmMsg::PlockAnswer(a) => Some((a.req, &a.resource)),
            DlmMsg::RecoverLocks { .. } | DlmMsg::RecoverDone { .. } | DlmMsg::RecoverPlocks(_) => {
                None
            }
        }
    }

    fn is_for_master(&self) -> bool {
        matches!(
            self,
            DlmMsg::Request(_)
                | DlmMsg::Convert(_)
                | DlmMsg::Unlock(_)
                | DlmMsg::Cancel(_)
                | DlmMsg::Plock(_)
        )
    }
}

/// Why a request or conversion was refused (or a lock lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// NOQUEUE was asked and the mode was not grantable at once.
    NotGranted,
    /// The conversion would have waited for itself (engine rule 3).
    ConversionDeadlock,
    /// The lock is gone: this node left the members, or the master does
    /// not know the lock (it could not be rebuilt).
    Lost,
    /// The master answered with another error (a bug somewhere).
    Protocol(LockErrorCode),
}

/// A local completion, for the caller that owns the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// AST: the request or conversion is granted; the lock holds `mode`.
    Granted {
        lock: LockId,
        resource: Vec<u8>,
        mode: Mode,
    },
    /// BAST: the lock, held in `granted`, blocks a request for `requested`.
    Blocking {
        lock: LockId,
        resource: Vec<u8>,
        granted: Mode,
        requested: Mode,
    },
    /// The pending request is withdrawn.  `mode` is what the lock still
    /// holds (a conversion was cancelled), None if the lock is gone.
    Cancelled {
        lock: LockId,
        resource: Vec<u8>,
        mode: Option<Mode>,
    },
    /// The pending request failed; `mode` as for `Cancelled`.
    Refused {
        lock: LockId,
        resource: Vec<u8>,
        reason: Refusal,
        mode: Option<Mode>,
    },
    /// The answer to a file-lock request (its id is `req.req`).
    Plock {
        req: PlockRequest,
        result: PlockResult,
    },
}

impl Completion {
    pub fn lock(&self) -> LockId {
        match self {
            Completion::Granted { lock, .. }
            | Completion::Blocking { lock, .. }
            | Completion::Cancelled { lock, .. }
            | Completion::Refused { lock, .. } => *lock,
            Completion::Plock { req, .. } => req.req,
        }
    }

    /// After this completion the lock (or file-lock request) no longer
    /// exists.
    pub fn ends_lock(&self) -> bool {
        matches!(
            self,
            Completion::Cancelled { mode: None, .. }
                | Completion::Refused { mode: None, .. }
                | Completion::Plock { .. }
        )
    }
}

/// What the caller of a [`DlmNode`] must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send { to: NodeId, msg: DlmMsg },
    Local(Completion),
}

/// Errors of local calls (nothing is sent when one is returned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("resource name of {0} bytes (1 to {MAX_RESOURCE_NAME})")]
    BadName(usize),
    #[error("this node is not a member (no view yet, or it was left out)")]
    NotMember,
    #[error("no lock {0:?} here")]
    NoSuchLock(LockId),
    #[cfg(test)]
    #[error("lock {0:?} has a request pending")]
    Busy(LockId),
    #[cfg(test)]
    #[error("lock {0:?} is not granted yet")]
    NotGranted(LockId),
    #[cfg(test)]
    #[error("lock {0:?} has nothing to cancel")]
    NothingToCancel(LockId),
    #[error("view {got} is not newer than view {have}")]
    StaleView { got: View, have: View },
    #[error("invalid file lock request: {0}")]
    BadFileLock(&'static str),
}

/// How a local conversion started.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Already done (same mode, or a down-conversion): no completion follows.
    Done,
    /// A `Granted`, `Cancelled` or `Refused` completion follows.
    Pending,
}

/// A request of ours that the master has not answered yet.
#[derive(Debug, Clone)]
struct Pending {
    mode: Mode,
    noqueue: bool,
    /// For a conversion, the mode before it (restored if it is refused
    /// before any rebuild).
    from: Option<Mode>,
    cancelling: bool,
    /// `unlock` of a lock still waiting: cancel it, and release it if the
    /// grant wins the race.
    abandon: bool,
    /// Re-sent to a master at a view change: the master now only knows
    /// the conservative mode.
    rebuilt: bool,
}

#[derive(Debug, Clone)]
struct Own {
    resource: Vec<u8>,
    granted: Option<Mode>,
    pending: Option<Pending>,
    /// Cancels that lost the race with a grant: the master answers each
    /// with a `WrongState` error, which must not be taken for the answer
    /// to a later request of this lock.
    stale_cancels: u32,
}

/// One of this node's own locks, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnLock {
    pub id: LockId,
    pub resource: Vec<u8>,
    pub granted: Option<Mode>,
    pub requested: Option<Mode>,
}

#[derive(Debug, Default)]
struct Peer {
    /// The view the peer was in when it sent its latest message.
    view: View,
    /// Its messages of views newer than ours, in order, with their view.
    future: VecDeque<(View, DlmMsg)>,
}

#[derive(Debug)]
struct Recovery {
    waiting_for: BTreeSet<NodeId>,
    records: Vec<RecordedLock>,
}

/// The DLM state of one node.  See the module docs.
#[derive(Debug)]
pub struct DlmNode {
    me: NodeId,
    view: View,
    members: Vec<NodeId>,
    next_local: u64,
    /// The resources this node masters in the current view.
    space: LockSpace,
    own: BTreeMap<LockId, Own>,
    peers: BTreeMap<NodeId, Peer>,
    recovery: Option<Recovery>,
    /// Requests to us as master that arrived during recovery.
    deferred: VecDeque<(NodeId, DlmMsg)>,
    /// Messages from this node to itself, delivered in order like a link.
    selfq: VecDeque<DlmMsg>,
    out: VecDeque<Output>,
    /// File locks ([`super::plock_node`]).
    plocks: PlockNode,
}

/// `a` protects at least what `b` protects: every mode compatible with
/// `a` is compatible with `b`.
#[cfg(test)]
pub fn covers(a: Mode, b: Mode) -> bool {
    Mode::ALL
        .into_iter()
        .all(|m| !a.compatible(m) || b.compatible(m))
}

/// The strongest mode that both `a` and `b` cover: what a holder may rely
/// on while converting between them.
#[cfg(test)]
pub fn glb(a: Mode, b: Mode) -> Mode {
    let strength = |m: Mode| Mode::ALL.into_iter().filter(|o| !m.compatible(*o)).count();
    Mode::ALL
        .into_iter()
        .filter(|m| covers(a, *m) && covers(b, *m))
        .max_by_key(|m| strength(*m))
        .unwrap_or(Mode::NL)
}

fn error_code(e: &DlmError) -> LockErrorCode {
    match e {
        DlmError::BadName(_) => LockErrorCode::BadName,
        DlmError::Exists(_) => LockErrorCode::Exists,
        DlmError::NoSuchLock(_) => LockErrorCode::NoSuchLock,
        DlmError::NotGranted => LockErrorCode::NotGranted,
        DlmError::ConversionDeadlock => LockErrorCode::ConversionDeadlock,
        DlmError::WrongState(..) | DlmError::BadImport(_) => LockErrorCode::WrongState,
    }
}

fn check_name(name: &[u8]) -> Result<(), OpError> {
    if name.is_empty() || name.len() > MAX_RESOURCE_NAME {
        return Err(OpError::BadName(name.len()));
    }
    Ok(())
}

impl DlmNode {
    /// A node that is not a member yet: call [`DlmNode::set_members`].
    pub fn new(me: NodeId) -> Self {
        DlmNode {
            me,
            view: 0,
            members: Vec::new(),
            next_local: 1,
            space: LockSpace::new(),
            own: BTreeMap::new(),
            peers: BTreeMap::new(),
            recovery: None,
            deferred: VecDeque::new(),
            selfq: VecDeque::new(),
            out: VecDeque::new(),
            plocks: PlockNode::default(),
        }
    }

    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// Still waiting for members' records of the current view.
    #[cfg(test)]
    pub fn is_recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The mode the caller may rely on for one of its locks.
    pub fn held(&self, lock: LockId) -> Option<Mode> {
        self.own.get(&lock).and_then(|o| o.granted)
    }

    pub fn own_locks(&self) -> impl Iterator<Item = OwnLock> + '_ {
        self.own.iter().map(|(id, o)| OwnLock {
            id: *id,
            resource: o.resource.clone(),
            granted: o.granted,
            requested: o.pending.as_ref().map(|p| p.mode),
        })
    }

    /// The master's view of a lock on a resource this node masters.
    #[cfg(test)]
    pub fn mastered_lock(&self, lock: LockId) -> Option<LockState> {
        self.space.lock_state(lock)
    }

    #[cfg(test)]
    pub fn mastered_resources(&self) -> Vec<Vec<u8>> {
        self.space.resource_names().map(|n| n.to_vec()).collect()
    }

    fn check_member(&self) -> Result<(), OpError> {
        if self.members.contains(&self.me) {
            Ok(())
        } else {
            Err(OpError::NotMember)
        }
    }

    /// Ask for a new lock.  A `Granted` or `Refused` completion follows
    /// (or `Cancelled`, after `DlmNode::cancel`).
    pub fn lock(
        &mut self,
        resource: &[u8],
        mode: Mode,
        flags: RequestFlags,
    ) -> Result<LockId, OpError> {
        check_name(resource)?;
        self.check_member()?;
        let id = LockId {
            node: self.me,
            local: self.next_local,
        };
        self.next_local += 1;
        self.own.insert(
            id,
            Own {
                resource: resource.to_vec(),
                granted: None,
                stale_cancels: 0,
                pending: Some(Pending {
                    mode,
                    noqueue: flags.noqueue,
                    from: None,
                    cancelling: false,
                    abandon: false,
                    rebuilt: false,
                }),
            },
        );
        self.route_to_master(
            resource,
            DlmMsg::Request(LockRequest {
                lock: id,
                resource: resource.to_vec(),
                mode,
                noqueue: flags.noqueue,
            }),
        );
        self.run_selfq();
        Ok(id)
    }

    /// Change the mode of a granted lock with nothing pending.
    #[cfg(test)]
    pub fn convert(
        &mut self,
        lock: LockId,
        mode: Mode,
        flags: RequestFlags,
    ) -> Result<Started, OpError> {
        self.check_member()?;
        let own = self.own.get_mut(&lock).ok_or(OpError::NoSuchLock(lock))?;
        if own.pending.is_some() {
            return Err(OpError::Busy(lock));
        }
        let g = own.granted.ok_or(OpError::NotGranted(lock))?;
        if g == mode {
            return Ok(Started::Done);
        }
        let started = if covers(g, mode) {
            // Down: the master grants it at once, so stop relying on the
            // higher mode now (before the master hears of it).
            own.granted = Some(mode);
            Started::Done
        } else {
            own.granted = Some(glb(g, mode));
            own.pending = Some(Pending {
                mode,
                noqueue: flags.noqueue,
                from: Some(g),
                cancelling: false,
                abandon: false,
                rebuilt: false,
            });
            Started::Pending
        };
        let resource = own.resource.clone();
        self.route_to_master(
            &resource.clone(),
            DlmMsg::Convert(LockRequest {
                lock,
                resource,
                mode,
                // a down-conversion is always granted; NOQUEUE cannot matter
                noqueue: flags.noqueue && started == Started::Pending,
            }),
        );
        self.run_selfq();
        Ok(started)
    }

    /// Withdraw the pending request or conversion of a lock.
    #[cfg(test)]
    pub fn cancel(&mut self, lock: LockId) -> Result<(), OpError> {
        self.check_member()?;
        let own = self.own.get_mut(&lock).ok_or(OpError::NoSuchLock(lock))?;
        let p = own.pending.as_mut().ok_or(OpError::NothingToCancel(lock))?;
        if p.cancelling {
            return Ok(());
        }
        p.cancelling = true;
        let resource = own.resource.clone();
        self.route_to_master(
            &resource.clone(),
            DlmMsg::Cancel(LockRef { lock, resource }),
        );
        self.run_selfq();
        Ok(())
    }

    /// Release a lock.  Immediate for a granted lock (a pending conversion
    /// goes with it, without completion).  A lock still waiting for its
    /// first grant is cancelled, and released should the grant win the
    /// race; a `Cancelled` completion follows then.
    pub fn unlock(&mut self, lock: LockId) -> Result<(), OpError> {
        self.check_member()?;
        let own = self.own.get_mut(&lock).ok_or(OpError::NoSuchLock(lock))?;
        let resource = own.resource.clone();
        if own.granted.is_some() {
            self.own.remove(&lock);
            self.route_to_master(
                &resource.clone(),
                DlmMsg::Unlock(LockRef { lock, resource }),
            );
        } else if let Some(p) = own.pending.as_mut() {
            p.abandon = true;
            if !p.cancelling {
                p.cancelling = true;
                self.route_to_master(
                    &resource.clone(),
                    DlmMsg::Cancel(LockRef { lock, resource }),
                );
            }
        }
        self.run_selfq();
        Ok(())
    }

    /// A file-lock call: a lock or a test is answered by a
    /// [`Completion::Plock`] for the returned id; an unlock or a release
    /// takes effect at once (None).  Cancel a waiting lock with
    /// [`DlmNode::plock_cancel`].
    pub fn plock(&mut self, call: FileLockCall) -> Result<Option<LockId>, OpError> {
        check_name(&call.resource)?;
        self.check_member()?;
        if call.op == PlockOp::Cancel {
            return Err(OpError::BadFileLock("cancel a request with plock_cancel"));
        }
        if call.range.start > call.range.end {
            return Err(OpError::BadFileLock("range ends before it starts"));
        }
        let id = LockId {
            node: self.me,
            local: self.next_local,
        };
        self.next_local += 1;
        let req = PlockRequest {
            req: id,
            resource: call.resource,
            flock: call.flock,
            owner: call.owner,
            pid: call.pid,
            op: call.op,
            start: call.range.start,
            end: call.range.end,
        };
        let mut fx = Effects::default();
        let answered = self.plocks.request(self.me, &self.members, req, &mut fx);
        self.apply(fx);
        self.run_selfq();
        Ok(answered.then_some(id))
    }

    /// Withdraw waiting file-lock request `req`: its answer follows
    /// (cancelled, or a grant that came first).
    pub fn plock_cancel(&mut self, req: LockId) -> Result<(), OpError> {
        self.check_member()?;
        let mut fx = Effects::default();
        self.plocks.cancel(&self.members, req.local, &mut fx);
        self.apply(fx);
        self.run_selfq();
        Ok(())
    }

    /// This node's own file locks on `resource`, as it records them.
    #[cfg(test)]
    pub fn own_plocks(&self, resource: &[u8]) -> Vec<super::plock::Held> {
        self.plocks.own_locks(resource)
    }

    /// The file locks on `resource` if this node masters it.
    #[cfg(test)]
    pub fn mastered_plocks(&self, resource: &[u8]) -> Vec<super::plock::Held> {
        self.plocks.mastered_locks(resource)
    }

    fn apply(&mut self, fx: Effects) {
        for (to, msg) in fx.send {
            self.send(to, msg);
        }
        for c in fx.done {
            self.complete(c);
        }
    }

    /// Enter view `view` with `members` (any order; 0 is ignored).  See the
    /// module docs for what happens.
    pub fn set_members(&mut self, view: View, members: &[NodeId]) -> Result<(), OpError> {
        if view <= self.view {
            return Err(OpError::StaleView {
                got: view,
                have: self.view,
            });
        }
        let mut members: Vec<NodeId> = members.iter().copied().filter(|m| *m != 0).collect();
        members.sort_unstable();
        members.dedup();
        self.view = view;
        self.members = members;
        // Everything mastered is rebuilt from the holders' records.
        self.space = LockSpace::new();
        self.deferred.clear();
        self.recovery = None;
        if !self.members.contains(&self.me) {
            self.leave();
            return Ok(());
        }
        let records = self.settle_and_record();
        let mut fx = Effects::default();
        let mut plock_records = self.plocks.view_change(view, &self.members, &mut fx);
        self.apply(fx);
        let mut per_master: BTreeMap<NodeId, Vec<RecordedLock>> = BTreeMap::new();
        for r in records {
            if let Some(m) = master_of(&r.resource, &self.members) {
                per_master.entry(m).or_default().push(r);
            }
        }
        let others: Vec<NodeId> = self
            .members
            .iter()
            .copied()
            .filter(|m| *m != self.me)
            .collect();
        for &m in &others {
            let locks = per_master.remove(&m).unwrap_or_default();
            for chunk in locks.chunks(RECOVER_CHUNK) {
                self.send(
                    m,
                    DlmMsg::RecoverLocks {
                        view,
                        locks: chunk.to_vec(),
                    },
                );
            }
            for rec in plock_records.remove(&m).unwrap_or_default() {
                self.send(m, DlmMsg::RecoverPlocks(rec));
            }
            self.send(m, DlmMsg::RecoverDone { view });
        }
        for rec in plock_records.remove(&self.me).unwrap_or_default() {
            self.plocks.recover(self.me, rec);
        }
        self.recovery = Some(Recovery {
            waiting_for: others.into_iter().collect(),
            records: per_master.remove(&self.me).unwrap_or_default(),
        });
        // Unanswered file-lock requests again, now that every member has
        // our RecoverDone (a master defers them until its rebuild).
        let mut fx = Effects::default();
        self.plocks.resend(&self.members, &mut fx);
        self.apply(fx);
        self.maybe_finish_recovery();
        // What peers already sent us in this view, in each peer's order.
        let mut ready = Vec::new();
        for (&from, peer) in self.peers.iter_mut() {
            while peer.future.front().is_some_and(|(v, _)| *v <= view) {
                if let Some((v, msg)) = peer.future.pop_front() {
                    if v == view && self.members.contains(&from) {
                        ready.push((from, msg));
                    }
                }
            }
        }
        for (from, msg) in ready {
            self.handle_current(from, msg);
        }
        self.run_selfq();
        Ok(())
    }

    /// A message from peer `from`.  Never panics; what makes no sense is
    /// logged and dropped.
    pub fn receive(&mut self, from: NodeId, msg: DlmMsg) {
        if from == self.me {
            warn!("dlm: a message claims to come from this node; dropped");
            return;
        }
        let peer = self.peers.entry(from).or_default();
        if let Some(v) = msg.recovery_view() {
            if v < peer.view {
                warn!(
                    node = format_args!("{from:#x}"),
                    "dlm: recovery message for view {v} after view {}; dropped", peer.view
                );
                return;
            }
            peer.view = v;
        }
        let tag = peer.view;
        if tag > self.view {
            if peer.future.len() >= MAX_FUTURE {
                warn!(
                    node = format_args!("{from:#x}"),
                    "dlm: too many messages from a newer view; dropped"
                );
            } else {
                peer.future.push_back((tag, msg));
            }
            return;
        }
        if tag < self.view || !self.members.contains(&from) {
            debug!(
                node = format_args!("{from:#x}"),
                "dlm: message of view {tag} (now {}), dropped: {msg:?}", self.view
            );
            return;
        }
        self.handle_current(from, msg);
        self.run_selfq();
    }

    // ---- internals ----

    fn send(&mut self, to: NodeId, msg: DlmMsg) {
        if to == self.me {
            self.selfq.push_back(msg);
        } else {
            self.out.push_back(Output::Send { to, msg });
        }
    }

    fn complete(&mut self, c: Completion) {
        self.out.push_back(Output::Local(c));
    }

    fn route_to_master(&mut self, resource: &[u8], msg: DlmMsg) {
        match master_of(resource, &self.members) {
            Some(m) => self.send(m, msg),
            None => warn!("dlm: no members to master a resource"),
        }
    }

    fn run_selfq(&mut self) {
        while let Some(msg) = self.selfq.pop_front() {
            self.handle_current(self.me, msg);
        }
    }

    /// This node is not a member any more: its locks are gone.
    fn leave(&mut self) {
        let mut fx = Effects::default();
        self.plocks.leave(&mut fx);
        self.apply(fx);
        for (id, own) in std::mem::take(&mut self.own) {
            self.complete(Completion::Refused {
                lock: id,
                resource: own.resource,
                reason: Refusal::Lost,
                mode: None,
            });
        }
        self.selfq.clear();
    }

    /// At a view change: finish what cancelling would have finished (the
    /// request is simply not re-sent), then the records to re-send.
    fn settle_and_record(&mut self) -> Vec<RecordedLock> {
        let mut records = Vec::new();
        let mut done = Vec::new();
        self.own.retain(|&id, own| {
            // answers of the old view are dropped, so none will come
            own.stale_cancels = 0;
            if let Some(p) = own.pending.as_mut() {
                if p.abandon || (p.cancelling && own.granted.is_none()) {
                    done.push(Completion::Cancelled {
                        lock: id,
                        resource: own.resource.clone(),
                        mode: None,
                    });
                    return false;
                }
                if p.cancelling {
                    own.pending = None;
                    done.push(Completion::Cancelled {
                        lock: id,
                        resource: own.resource.clone(),
                        mode: own.granted,
                    });
                } else {
                    p.rebuilt = true;
                }
            }
            records.push(RecordedLock {
                lock: id,
                resource: own.resource.clone(),
                granted: own.granted,
                requested: own.pending.as_ref().map(|p| p.mode),
                noqueue: own.pending.as_ref().is_some_and(|p| p.noqueue),
            });
            true
        });
        for c in done {
            self.complete(c);
        }
        records
    }

    fn handle_current(&mut self, from: NodeId, msg: DlmMsg) {
        if msg.is_for_master() {
            self.master_input(from, msg);
            return;
        }
        match msg {
            DlmMsg::RecoverLocks { locks, .. } => self.recover_locks(from, locks),
            DlmMsg::RecoverPlocks(rec) => {
                let expected = self
                    .recovery
                    .as_ref()
                    .is_some_and(|r| r.waiting_for.contains(&from));
                if expected && master_of(&rec.resource, &self.members) == Some(self.me) {
                    self.plocks.recover(from, rec);
                } else {
                    warn!(
                        node = format_args!("{from:#x}"),
                        "dlm: file lock records outside recovery or for a file mastered elsewhere; ignored"
                    );
                }
            }
            DlmMsg::RecoverDone { .. } => {
                let removed = self
                    .recovery
                    .as_mut()
                    .is_some_and(|r| r.waiting_for.remove(&from));
                if removed {
                    self.maybe_finish_recovery();
                } else {
                    warn!(
                        node = format_args!("{from:#x}"),
                        "dlm: unexpected RecoverDone; ignored"
                    );
                }
            }
            msg => {
                let Some((lock, resource)) = msg.lock_ref() else {
                    return;
                };
                if master_of(resource, &self.members) != Some(from) || lock.node != self.me {
                    warn!(
                        node = format_args!("{from:#x}"),
                        "dlm: lock answer from a node that is not the master, or for \
                         another node's lock; dropped: {msg:?}"
                    );
                    return;
                }
                if let DlmMsg::PlockAnswer(a) = msg {
                    let mut fx = Effects::default();
                    self.plocks.answer(self.me, a, &mut fx);
                    self.apply(fx);
                    return;
                }
                self.holder_input(msg);
            }
        }
    }

    fn recover_locks(&mut self, from: NodeId, locks: Vec<RecordedLock>) {
        let me = self.me;
        let Some(rec) = self
            .recovery
            .as_mut()
            .filter(|r| r.waiting_for.contains(&from))
        else {
            warn!(
                node = format_args!("{from:#x}"),
                "dlm: lock records outside recovery; ignored"
            );
            return;
        };
        for l in locks {
            let ok = l.lock.node == from
                && !l.resource.is_empty()
                && l.resource.len() <= MAX_RESOURCE_NAME
                && (l.granted.is_some() || l.requested.is_some())
                && master_of(&l.resource, &self.members) == Some(me);
            if ok {
                rec.records.push(l);
            } else {
                warn!(
                    node = format_args!("{from:#x}"),
                    "dlm: invalid lock record {l:?}; ignored"
                );
            }
        }
    }

    fn maybe_finish_recovery(&mut self) {
        if !self
            .recovery
            .as_ref()
            .is_some_and(|r| r.waiting_for.is_empty())
        {
            return;
        }
        let Some(rec) = self.recovery.take() else {
            return;
        };
        let mut by_resource: BTreeMap<Vec<u8>, Vec<RecordedLock>> = BTreeMap::new();
        for r in rec.records {
            by_resource.entry(r.resource.clone()).or_default().push(r);
        }
        for (name, locks) in by_resource {
            self.rebuild(&name, locks);
        }
        self.plocks.finish_recovery();
        for (from, msg) in std::mem::take(&mut self.deferred) {
            self.master_input(from, msg);
        }
    }

    /// Rebuild one resource from its holders' records (module docs, 2).
    fn rebuild(&mut self, name: &[u8], mut locks: Vec<RecordedLock>) {
        locks.sort_by_key(|l| l.lock);
        locks.dedup_by_key(|l| l.lock);
        let mut held: Vec<LockState> = Vec::new();
        let mut lost = Vec::new();
        for l in &locks {
            let Some(g) = l.granted else { continue };
            if held
                .iter()
                .all(|h| h.granted.is_some_and(|hm| hm.compatible(g)))
            {
                held.push(LockState {
                    id: l.lock,
                    granted: Some(g),
                    requested: None,
                });
            } else {
                // Cannot happen if every node follows the protocol.
                warn!("dlm: conflicting records for {:?}; dropping it", l.lock);
                lost.push(l.lock);
            }
        }
        match self.space.import_resource(name, held) {
            Ok(events) => self.dispatch(events),
            Err(e) => {
                warn!("dlm: rebuild of a resource failed: {e}");
                lost.extend(locks.iter().filter(|l| l.granted.is_some()).map(|l| l.lock));
            }
        }
        for lock in lost {
            self.send(
                lock.node,
                DlmMsg::Error(wire::LockError {
                    lock,
                    resource: name.to_vec(),
                    code: LockErrorCode::NoSuchLock,
                }),
            );
        }
        let pending = |conv: bool| {
            locks
                .iter()
                .filter(move |l| l.requested.is_some() && l.granted.is_some() == conv)
        };
        let converting: Vec<RecordedLock> = pending(true).cloned().collect();
        let waiting: Vec<RecordedLock> = pending(false).cloned().collect();
        for l in converting.into_iter().chain(waiting) {
            let Some(mode) = l.requested else { continue };
            let flags = RequestFlags { noqueue: l.noqueue };
            let r = if l.granted.is_some() {
                if self.space.lock_state(l.lock).is_none() {
                    continue; // dropped above
                }
                self.space.convert(l.lock, mode, flags)
            } else {
                self.space.request(name, l.lock, mode, flags)
            };
            match r {
                Ok(events) => self.dispatch(events),
                Err(e) => self.send(
                    l.lock.node,
                    DlmMsg::Error(wire::LockError {
                        lock: l.lock,
                        resource: name.to_vec(),
                        code: error_code(&e),
                    }),
                ),
            }
        }
    }

    /// A request to this node as the resource's master.
    fn master_input(&mut self, from: NodeId, msg: DlmMsg) {
        if self.recovery.is_some() {
            self.deferred.push_back((from, msg));
            return;
        }
        if let DlmMsg::Plock(r) = msg {
            if r.req.node != from || master_of(&r.resource, &self.members) != Some(self.me) {
                // The requester sends it again at the next view.
                warn!(
                    node = format_args!("{from:#x}"),
                    "dlm: file lock request for another node, or for a file mastered elsewhere; dropped: {r:?}"
                );
                return;
            }
            let mut fx = Effects::default();
            self.plocks.master(from, r, &mut fx);
            self.apply(fx);
            return;
        }
        let Some((lock, resource)) = msg.lock_ref() else {
            return;
        };
        let resource = resource.to_vec();
        if lock.node != from {
            warn!(
                node = format_args!("{from:#x}"),
                "dlm: request for another node's lock; dropped: {msg:?}"
            );
            return;
        }
        if master_of(&resource, &self.members) != Some(self.me) {
            warn!(
                node = format_args!("{from:#x}"),
                "dlm: request for a resource mastered elsewhere: {msg:?}"
            );
            self.send(
                from,
                DlmMsg::Error(wire::LockError {
                    lock,
                    resource,
                    code: LockErrorCode::NotMaster,
                }),
            );
            return;
        }
        let result = match &msg {
            DlmMsg::Request(r) => self.space.request(
                &r.resource,
                r.lock,
                r.mode,
                RequestFlags { noqueue: r.noqueue },
            ),
            DlmMsg::Convert(r) => {
                self.space
                    .convert(r.lock, r.mode, RequestFlags { noqueue: r.noqueue })
            }
            DlmMsg::Unlock(r) => self.space.unlock(r.lock),
            DlmMsg::Cancel(r) => self.space.cancel(r.lock),
            _ => return,
        };
        match result {
            Ok(events) => self.dispatch(events),
            Err(e) => {
                // An unlock's error has nobody waiting; the requester
                // ignores answers for locks it no longer has.
                debug!("dlm: {msg:?} refused: {e}");
                self.send(
                    from,
                    DlmMsg::Error(wire::LockError {
                        lock,
                        resource,
                        code: error_code(&e),
                    }),
                );
            }
        }
    }

    /// Send the engine's events to the holders (through the self queue for
    /// our own locks, so they arrive in order like any other).
    fn dispatch(&mut self, events: Vec<Event>) {
        for ev in events {
            let (to, msg) = match ev {
                Event::Grant {
                    lock,
                    resource,
                    mode,
                } => (
                    lock.node,
                    DlmMsg::Grant(LockGrant {
                        lock,
                        resource,
                        mode,
                    }),
                ),
                Event::Blocking {
                    lock,
                    resource,
                    granted,
                    requested,
                } => (
                    lock.node,
                    DlmMsg::Blocking(LockBlocking {
                        lock,
                        resource,
                        granted,
                        requested,
                    }),
                ),
                Event::Cancelled {
                    lock,
                    resource,
                    mode,
                } => (
                    lock.node,
                    DlmMsg::Cancelled(LockCancelled {
                        lock,
                        resource,
                        mode,
                    }),
                ),
            };
            self.send(to, msg);
        }
    }

    /// An answer from the master about one of our locks.
    fn holder_input(&mut self, msg: DlmMsg) {
        let Some((lock, resource)) = msg.lock_ref() else {
            return;
        };
        let resource = resource.to_vec();
        let Some(own) = self.own.get_mut(&lock) else {
            // unlocked or cancelled meanwhile: nothing to do
            debug!("dlm: answer for a lock we no longer have: {msg:?}");
            return;
        };
        if own.resource != resource {
            warn!("dlm: answer names the wrong resource for {lock:?}; dropped");
            return;
        }
        match msg {
            DlmMsg::Grant(g) => {
                // No pending request, or another mode: the acknowledgement
                // of a down-conversion, which took effect when asked.
                let Some(p) = own.pending.as_ref().filter(|p| p.mode == g.mode) else {
                    return;
                };
                if p.abandon {
                    self.own.remove(&lock);
                    self.route_to_master(
                        &resource,
                        DlmMsg::Unlock(LockRef {
                            lock,
                            resource: resource.clone(),
                        }),
                    );
                    self.complete(Completion::Cancelled {
                        lock,
                        resource,
                        mode: None,
                    });
                    return;
                }
                if p.cancelling {
                    own.stale_cancels += 1;
                }
                own.granted = Some(g.mode);
                own.pending = None;
                self.complete(Completion::Granted {
                    lock,
                    resource,
                    mode: g.mode,
                });
            }
            DlmMsg::Blocking(b) if own.granted.is_some() => {
                self.complete(Completion::Blocking {
                    lock,
                    resource,
                    granted: b.granted,
                    requested: b.requested,
                });
            }
            DlmMsg::Cancelled(c) => {
                let Some(p) = own.pending.take() else {
                    return;
                };
                if own.granted.is_none() || p.abandon {
                    self.own.remove(&lock);
                    self.complete(Completion::Cancelled {
                        lock,
                        resource,
                        mode: None,
                    });
                } else {
                    // The master says what the lock still holds.
                    own.granted = c.mode.or(own.granted);
                    let mode = own.granted;
                    self.complete(Completion::Cancelled {
                        lock,
                        resource,
                        mode,
                    });
                }
            }
            DlmMsg::Error(e) => {
                if e.code == LockErrorCode::NoSuchLock {
                    // The master does not know the lock at all.
                    warn!("dlm: master lost {lock:?}");
                    self.own.remove(&lock);
                    self.complete(Completion::Refused {
                        lock,
                        resource,
                        reason: Refusal::Lost,
                        mode: None,
                    });
                    return;
                }
                if e.code == LockErrorCode::WrongState && own.stale_cancels > 0 {
                    own.stale_cancels -= 1;
                    return;
                }
                let Some(p) = own.pending.take() else {
                    return;
                };
                let reason = match e.code {
                    LockErrorCode::NotGranted => Refusal::NotGranted,
                    LockErrorCode::ConversionDeadlock => Refusal::ConversionDeadlock,
                    code => {
                        warn!("dlm: master refused {lock:?} with {code:?}");
                        Refusal::Protocol(code)
                    }
                };
                if own.granted.is_none() {
                    self.own.remove(&lock);
                    self.complete(Completion::Refused {
                        lock,
                        resource,
                        reason,
                        mode: None,
                    });
                } else {
                    // Refused before any rebuild: the master still holds
                    // the old mode.  After one it only knows the
                    // conservative mode we re-sent.
                    if !p.rebuilt {
                        own.granted = p.from.or(own.granted);
                    }
                    let mode = own.granted;
                    self.complete(Completion::Refused {
                        lock,
                        resource,
                        reason,
                        mode,
                    });
                }
            }
            _ => {}
        }
    }
}
