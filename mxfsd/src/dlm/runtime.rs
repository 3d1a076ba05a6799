//! The DLM for the daemon: one task runs a [`DlmNode`], callers await
//! their locks.
//!
//! This module owns the glue between the sans-I/O [`DlmNode`] and tokio:
//! the driver task (the only owner of the node's state, so there are no
//! locks around it), the commands callers send it, the delivery of
//! completions to the right waiter, and the [`Transport`] that carries
//! the node's messages (real peer links with [`LinkTransport`], channels
//! in tests).  Membership comes from outside ([`Dlm::enter_view`]): the
//! layer that watches heartbeats decides who is in.
//!
//! Cancellation: dropping a [`Dlm::lock`] future or a conversion future
//! withdraws the request; a file lock call is withdrawn by dropping its
//! future or, keeping its last answer, with [`Withdraw`]; dropping a
//! [`LockHandle`] releases the lock; [`Dlm::shutdown`] releases every
//! lock of this node, fails every pending call with
//! [`LockError::Shutdown`] and ends the task.

use std::collections::{HashMap, VecDeque};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

#[cfg(test)]
use super::node::Started;
use super::node::{Completion, DlmMsg, DlmNode, OpError, Output, Refusal, View};
use super::plock::{FileLockCall, Range};
use super::{LockId, Mode, NodeId, RequestFlags};
use crate::lockstate::{Recorder, RecorderState};
use crate::peer::{LinkEvent, LinkHandle, PeerError};
use crate::wire::{PlockOp, PlockResult};

/// Where the driver sends the node's messages.  `send` must not wait (the
/// driver serves every lock of the node) and must keep the order of the
/// messages to one destination.
pub trait Transport: Send + 'static {
    fn send(&mut self, to: NodeId, msg: DlmMsg);
    /// A link to `handle.node_id()` is up (replacing any older one).
    fn link_up(&mut self, _handle: LinkHandle) {}
}

/// [`Transport`] over the authenticated peer links: one sender task per
/// peer, fed by an unbounded queue, so the driver never waits on a slow
/// link (the queue holds at most a few messages per lock).
#[derive(Debug, Default)]
pub struct LinkTransport {
    links: HashMap<NodeId, mpsc::UnboundedSender<DlmMsg>>,
}

impl LinkTransport {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Transport for LinkTransport {
    fn send(&mut self, to: NodeId, msg: DlmMsg) {
        match self.links.get(&to) {
            Some(tx) if tx.send(msg).is_ok() => {}
            // The membership layer must start a new view when a member's
            // link is lost: that view resends every lock.
            _ => warn!(
                node = format_args!("{to:#x}"),
                "dlm: no link, message dropped"
            ),
        }
    }

    fn link_up(&mut self, handle: LinkHandle) {
        let (tx, mut rx) = mpsc::unbounded_channel::<DlmMsg>();
        let node = handle.node_id();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match handle.send(&msg.into_wire()).await {
                    Ok(()) => {}
                    // Only an answer that echoes a bad name fails to
                    // encode; the link stays usable for the rest.
                    Err(PeerError::Wire(e)) => {
                        warn!(node = format_args!("{node:#x}"), "dlm: not sent: {e}")
                    }
                    Err(e) => {
                        debug!(node = format_args!("{node:#x}"), "dlm: link gone: {e}");
                        break;
                    }
                }
            }
        });
        self.links.insert(node, tx);
    }
}

/// Why a lock call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("{0}")]
    Op(#[from] OpError),
    #[error("not grantable now (NOQUEUE)")]
    NotGranted,
    #[error("the conversion would deadlock")]
    ConversionDeadlock,
    #[error("the lock was lost")]
    Lost,
    #[error("the request was cancelled")]
    Cancelled,
    #[error("the master refused the request: {0:?}")]
    Protocol(crate::wire::LockErrorCode),
    #[error("the DLM is shut down")]
    Shutdown,
    /// The grant came, but its lock record could not be written, so the
    /// lock was released again.
    #[error("{0}")]
    Record(String),
}

impl From<Refusal> for LockError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotGranted => LockError::NotGranted,
            Refusal::ConversionDeadlock => LockError::ConversionDeadlock,
            Refusal::Lost => LockError::Lost,
            Refusal::Protocol(c) => LockError::Protocol(c),
        }
    }
}

/// A blocking AST: our lock, held in `granted`, blocks someone's request
/// for `requested`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bast {
    pub granted: Mode,
    pub requested: Mode,
}

enum Cmd {
    Lock {
        resource: Vec<u8>,
        mode: Mode,
        flags: RequestFlags,
        events: mpsc::UnboundedSender<Completion>,
        reply: oneshot::Sender<Result<LockId, OpError>>,
    },
    #[cfg(test)]
    Convert {
        lock: LockId,
        mode: Mode,
        flags: RequestFlags,
        reply: oneshot::Sender<Result<Started, OpError>>,
    },
    #[cfg(test)]
    Cancel(LockId),
    Unlock(LockId),
    Plock {
        call: FileLockCall,
        events: mpsc::UnboundedSender<Completion>,
        reply: oneshot::Sender<Result<Option<LockId>, OpError>>,
    },
    PlockCancel(LockId),
    Members {
        view: View,
        members: Vec<NodeId>,
        reply: oneshot::Sender<Result<(), OpError>>,
    },
    Peer {
        from: NodeId,
        msg: DlmMsg,
    },
    LinkUp(LinkHandle),
    Shutdown,
}

/// A handle on this node's DLM; cheap to clone.
#[derive(Clone)]
pub struct Dlm {
    me: NodeId,
    tx: mpsc::UnboundedSender<Cmd>,
    members: watch::Receiver<(View, Vec<NodeId>)>,
    /// Where this node's grants are recorded on disk.
    records: watch::Receiver<RecorderState>,
}

impl std::fmt::Debug for Dlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dlm")
            .field("me", &format_args!("{:#x}", self.me))
            .finish_non_exhaustive()
    }
}

impl Dlm {
    /// Start the driver task for node `me` (not a member until
    /// [`Dlm::enter_view`]), keeping no lock records.
    pub fn spawn(me: NodeId, transport: impl Transport) -> (Dlm, JoinHandle<()>) {
        Self::spawn_recorded(me, transport, watch::channel(RecorderState::Off).1)
    }

    /// [`Dlm::spawn`], recording every grant of this node through the
    /// recorder `records` offers (lock calls wait while it is opening).
    pub fn spawn_recorded(
        me: NodeId,
        transport: impl Transport,
        records: watch::Receiver<RecorderState>,
    ) -> (Dlm, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (mtx, mrx) = watch::channel((0, Vec::new()));
        let driver = Driver {
            node: DlmNode::new(me),
            transport,
            waiters: HashMap::new(),
            members: mtx,
        };
        let task = tokio::spawn(driver.run(rx));
        (
            Dlm {
                me,
                tx,
                members: mrx,
                records,
            },
            task,
        )
    }

    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The current view and its members, as the driver last applied them.
    pub fn members(&self) -> (View, Vec<NodeId>) {
        self.members.borrow().clone()
    }

    /// Enter a new membership view.
    #[cfg(test)]
    pub async fn set_members(&self, view: View, members: &[NodeId]) -> Result<(), LockError> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Members {
            view,
            members: members.to_vec(),
            reply,
        })?;
        Ok(rx.await.map_err(|_| LockError::Shutdown)??)
    }

    /// Enter a new membership view without waiting: the command is
    /// queued in order with everything else sent to the driver, and a
    /// refusal (a view not newer than the current one) is logged.
    pub fn enter_view(&self, view: View, members: &[NodeId]) {
        let (reply, rx) = oneshot::channel();
        if self
            .cmd(Cmd::Members {
                view,
                members: members.to_vec(),
                reply,
            })
            .is_err()
        {
            return;
        }
        tokio::spawn(async move {
            if let Ok(Err(e)) = rx.await {
                debug!("dlm: view {view:#x} not entered: {e}");
            }
        });
    }

    /// How many of this node's locks have a record on disk now (None:
    /// records are not kept, or not yet).
    pub fn records_in_use(&self) -> Option<usize> {
        match &*self.records.borrow() {
            RecorderState::Ready(r) => Some(r.in_use()),
            _ => None,
        }
    }

    /// The record writer, once it is known whether there is one.
    async fn recorder(&self) -> Option<Recorder> {
        let mut rx = self.records.clone();
        loop {
            match &*rx.borrow_and_update() {
                RecorderState::Ready(r) => return Some(r.clone()),
                RecorderState::Off => return None,
                RecorderState::Opening => {}
            }
            if rx.changed().await.is_err() {
                // Its sender gone while opening: nothing will be recorded.
                return match &*rx.borrow() {
                    RecorderState::Ready(r) => Some(r.clone()),
                    _ => None,
                };
            }
        }
    }

    /// The owner epoch a record carries: the coordinator numbers views
    /// with the epoch in their high 32 bits (`cluster::lockview`).
    fn record_epoch(&self) -> u64 {
        self.members.borrow().0 >> 32
    }

    /// The view and members as the driver applies them, to wait on.
    pub fn watch_members(&self) -> watch::Receiver<(View, Vec<NodeId>)> {
        self.members.clone()
    }

    /// A DLM message from a peer.
    pub fn deliver(&self, from: NodeId, msg: DlmMsg) {
        let _ = self.cmd(Cmd::Peer { from, msg });
    }

    /// Take what the DLM needs from a peer link event: lock messages are
    /// consumed, link handles noted.  Everything else (and `Up`, `Down`,
    /// which the membership layer also needs) is handed back.
    pub fn link_event(&self, ev: LinkEvent) -> Option<LinkEvent> {
        match ev {
            LinkEvent::Up { peer, handle } => {
                let _ = self.cmd(Cmd::LinkUp(handle.clone()));
                Some(LinkEvent::Up { peer, handle })
            }
            LinkEvent::Message { node_id, message } => match DlmMsg::from_wire(message) {
                Ok(msg) => {
                    self.deliver(node_id, msg);
                    None
                }
                Err(message) => Some(LinkEvent::Message { node_id, message }),
            },
            down @ LinkEvent::Down { .. } => Some(down),
        }
    }

    /// Ask for `resource` in `mode` and wait for the grant (or the
    /// refusal, with NOQUEUE).  Dropping the future withdraws the request.
    pub async fn lock(
        &self,
        resource: &[u8],
        mode: Mode,
        flags: RequestFlags,
    ) -> Result<LockHandle, LockError> {
        let recorder = self.recorder().await;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Lock {
            resource: resource.to_vec(),
            mode,
            flags,
            events: events_tx,
            reply,
        })?;
        let id = rx.await.map_err(|_| LockError::Shutdown)??;
        // Until the answer comes, dropping this future must withdraw it.
        let mut guard = Guard {
            dlm: self,
            cmd: Some(Cmd::Unlock(id)),
        };
        let mut basts = VecDeque::new();
        loop {
            match events.recv().await {
                None => return Err(LockError::Shutdown),
                Some(Completion::Granted { mode, .. }) => {
                    guard.cmd = None;
                    // From here dropping the handle releases the lock and
                    // clears its record (queued after the write).
                    let handle = LockHandle {
                        dlm: self.clone(),
                        id,
                        resource: resource.to_vec(),
                        mode,
                        events,
                        #[cfg(test)]
                        basts,
                        released: false,
                        recorder,
                    };
                    handle.record().await?;
                    return Ok(handle);
                }
                Some(Completion::Blocking {
                    granted, requested, ..
                }) => basts.push_back(Bast { granted, requested }),
                Some(Completion::Refused { reason, .. }) => {
                    guard.cmd = None;
                    return Err(reason.into());
                }
                Some(Completion::Cancelled { .. }) => {
                    guard.cmd = None;
                    return Err(LockError::Cancelled);
                }
                Some(Completion::Plock { .. }) => {}
            }
        }
    }

    /// A file lock call ([`DlmNode::plock`]): the master's answer (an
    /// unlock or a release is done at once: `Granted`).  Dropping the
    /// future while a lock waits withdraws it; a grant that comes anyway
    /// is unlocked over its range (nobody is left to take it).  A caller
    /// that can still take an answer withdraws with
    /// [`Dlm::plock_withdrawable`] instead.
    ///
    /// The call is handed to the driver now, before the future is first
    /// polled: calls made one after the other reach their masters in
    /// that order, however their futures are then awaited.
    #[cfg(test)]
    pub fn plock(
        &self,
        call: FileLockCall,
    ) -> impl std::future::Future<Output = Result<PlockResult, LockError>> + Send + 'static {
        self.plock_until(call, std::future::pending())
    }

    /// `Dlm::plock`, and a [`Withdraw`] that asks the master to drop
    /// the call if it still waits.  The future then ends with the call's
    /// last answer: `Cancelled`, or the grant (or refusal) that came
    /// first, which stands.  A waiting fcntl lock interrupted by a
    /// signal needs this: its grant may already be on its way, and
    /// undoing one by unlocking its range would also drop the locks the
    /// owner held there before (a read lock it was upgrading).
    pub fn plock_withdrawable(
        &self,
        call: FileLockCall,
    ) -> (
        impl std::future::Future<Output = Result<PlockResult, LockError>> + Send + 'static,
        Withdraw,
    ) {
        let (tx, rx) = oneshot::channel();
        let asked = async move {
            // a Withdraw dropped unused never asks
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        (self.plock_until(call, asked), Withdraw(tx))
    }

    fn plock_until(
        &self,
        call: FileLockCall,
        withdraw: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<PlockResult, LockError>> + Send + 'static {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (reply, rx) = oneshot::channel();
        let sent = self.cmd(Cmd::Plock {
            call,
            events: events_tx,
            reply,
        });
        let dlm = self.clone();
        async move {
            sent?;
            let Some(id) = rx.await.map_err(|_| LockError::Shutdown)?? else {
                return Ok(PlockResult::Granted);
            };
            let mut guard = Guard {
                dlm: &dlm,
                cmd: Some(Cmd::PlockCancel(id)),
            };
            tokio::pin!(withdraw);
            let mut withdrawn = false;
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    () = &mut withdraw, if !withdrawn => {
                        // keep waiting: the last answer still comes here
                        withdrawn = true;
                        dlm.cmd(Cmd::PlockCancel(id))?;
                        continue;
                    }
                };
                match event {
                    None => return Err(LockError::Shutdown),
                    Some(Completion::Plock { result, .. }) => {
                        guard.cmd = None;
                        return Ok(result);
                    }
                    Some(Completion::Refused { reason, .. }) => {
                        guard.cmd = None;
                        return Err(reason.into());
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Release every lock of this node and stop the driver.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Cmd::Shutdown);
    }

    fn cmd(&self, c: Cmd) -> Result<(), LockError> {
        self.tx.send(c).map_err(|_| LockError::Shutdown)
    }
}

/// Asks for a waiting file lock call to be withdrawn
/// ([`Dlm::plock_withdrawable`]).
#[derive(Debug)]
pub struct Withdraw(oneshot::Sender<()>);

impl Withdraw {
    pub fn withdraw(self) {
        let _ = self.0.send(());
    }
}

/// Sends its command when dropped, unless disarmed.
struct Guard<'a> {
    dlm: &'a Dlm,
    cmd: Option<Cmd>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.cmd.take() {
            let _ = self.dlm.cmd(c);
        }
    }
}

/// A granted lock.  Dropping it releases it.
#[derive(Debug)]
pub struct LockHandle {
    dlm: Dlm,
    id: LockId,
    resource: Vec<u8>,
    mode: Mode,
    // Held even where unread: dropping it tells the driver the lock's owner is gone.
    #[allow(dead_code)]
    events: mpsc::UnboundedReceiver<Completion>,
    #[cfg(test)]
    basts: VecDeque<Bast>,
    released: bool,
    recorder: Option<Recorder>,
}

impl LockHandle {
    #[cfg(test)]
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The mode held (during a PR↔CW conversion rely on CR only: see
    /// [`super::node`]).
    #[cfg(test)]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Change the mode; waits for the grant unless it is a down-conversion.
    /// On error the lock keeps the mode [`LockHandle::mode`] then says
    /// (unless it is [`LockError::Lost`]).  Dropping the future cancels
    /// the conversion.  The lock record is rewritten with the new mode
    /// before this returns.
    #[cfg(test)]
    pub async fn convert(&mut self, mode: Mode, flags: RequestFlags) -> Result<Mode, LockError> {
        let before = self.mode;
        let r = self.convert_in_dlm(mode, flags).await;
        if self.mode != before {
            self.record().await?;
        }
        r
    }

    /// Write this lock's record in its current mode, if records are kept.
    async fn record(&self) -> Result<(), LockError> {
        let Some(r) = &self.recorder else {
            return Ok(());
        };
        r.write(
            self.id.local,
            &self.resource,
            self.mode,
            self.dlm.record_epoch(),
        )
        .await
        .map_err(|e| LockError::Record(e.to_string()))
    }

    #[cfg(test)]
    async fn convert_in_dlm(&mut self, mode: Mode, flags: RequestFlags) -> Result<Mode, LockError> {
        self.absorb_ready();
        let (reply, rx) = oneshot::channel();
        self.dlm.cmd(Cmd::Convert {
            lock: self.id,
            mode,
            flags,
            reply,
        })?;
        match rx.await.map_err(|_| LockError::Shutdown)?? {
            Started::Done => {
                self.mode = mode;
                return Ok(mode);
            }
            Started::Pending => {}
        }
        let dlm = self.dlm.clone();
        let mut guard = Guard {
            dlm: &dlm,
            cmd: Some(Cmd::Cancel(self.id)),
        };
        loop {
            let Some(c) = self.events.recv().await else {
                guard.cmd = None;
                return Err(LockError::Shutdown);
            };
            let done = self.absorb(c);
            if let Some(r) = done {
                guard.cmd = None;
                return r;
            }
        }
    }

    /// The next blocking AST for this lock; None once the DLM is gone.
    /// BASTs about a mode the lock no longer holds are skipped: they
    /// were about a request that the mode change has already served.
    #[cfg(test)]
    pub async fn blocked(&mut self) -> Option<Bast> {
        self.absorb_ready();
        loop {
            while let Some(b) = self.basts.pop_front() {
                if b.granted == self.mode {
                    return Some(b);
                }
            }
            let c = self.events.recv().await?;
            // a completion of an abandoned conversion only updates the mode
            let _ = self.absorb(c);
        }
    }

    /// Release the lock (takes effect at once).
    pub fn unlock(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if !self.released {
            self.released = true;
            let _ = self.dlm.cmd(Cmd::Unlock(self.id));
            if let Some(r) = &self.recorder {
                r.clear(self.id.local);
            }
        }
    }

    #[cfg(test)]
    fn absorb_ready(&mut self) {
        while let Ok(c) = self.events.try_recv() {
            let _ = self.absorb(c);
        }
    }

    /// Apply a completion; Some(result) if it ends a conversion.
    #[cfg(test)]
    fn absorb(&mut self, c: Completion) -> Option<Result<Mode, LockError>> {
        match c {
            Completion::Blocking {
                granted, requested, ..
            } => {
                self.basts.push_back(Bast { granted, requested });
                None
            }
            Completion::Granted { mode, .. } => {
                self.mode = mode;
                Some(Ok(mode))
            }
            Completion::Cancelled { mode, .. } => {
                if let Some(m) = mode {
                    self.mode = m;
                }
                Some(Err(LockError::Cancelled))
            }
            Completion::Refused { reason, mode, .. } => {
                if let Some(m) = mode {
                    self.mode = m;
                }
                Some(Err(reason.into()))
            }
            // file-lock answers go to their own waiters, never to a lock
            Completion::Plock { .. } => None,
        }
    }
}

impl Drop for LockHandle {
    fn drop(&mut self) {
        self.release();
    }
}

struct Driver<T> {
    node: DlmNode,
    transport: T,
    /// Where each lock's completions go.
    waiters: HashMap<LockId, mpsc::UnboundedSender<Completion>>,
    members: watch::Sender<(View, Vec<NodeId>)>,
}

impl<T: Transport> Driver<T> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Lock {
                    resource,
                    mode,
                    flags,
                    events,
                    reply,
                } => {
                    let r = self.node.lock(&resource, mode, flags);
                    if let Ok(id) = r {
                        self.waiters.insert(id, events);
                    }
                    let _ = reply.send(r);
                }
                #[cfg(test)]
                Cmd::Convert {
                    lock,
                    mode,
                    flags,
                    reply,
                } => {
                    let _ = reply.send(self.node.convert(lock, mode, flags));
                }
                #[cfg(test)]
                Cmd::Cancel(lock) => {
                    // nothing pending any more: the conversion ended meanwhile
                    let _ = self.node.cancel(lock);
                }
                Cmd::Unlock(lock) => self.unlock(lock),
                Cmd::Plock {
                    call,
                    events,
                    reply,
                } => {
                    let r = self.node.plock(call);
                    if let Ok(Some(id)) = r {
                        self.waiters.insert(id, events);
                    }
                    let _ = reply.send(r);
                }
                Cmd::PlockCancel(id) => {
                    let _ = self.node.plock_cancel(id);
                }
                Cmd::Members {
                    view,
                    members,
                    reply,
                } => {
                    let r = self.node.set_members(view, &members);
                    if r.is_ok() {
                        self.members
                            .send_replace((view, self.node.members().to_vec()));
                    }
                    let _ = reply.send(r);
                }
                Cmd::Peer { from, msg } => self.node.receive(from, msg),
                Cmd::LinkUp(h) => self.transport.link_up(h),
                Cmd::Shutdown => break,
            }
            self.flush();
        }
        // Leave cleanly: release what we hold and withdraw what we wait
        // for, so peers need not wait for our departure to be noticed.
        let ids: Vec<LockId> = self.node.own_locks().map(|l| l.id).collect();
        for id in ids {
            let _ = self.node.unlock(id);
        }
        self.waiters.clear();
        self.flush();
        debug!("dlm: driver stopped");
    }

    fn unlock(&mut self, lock: LockId) {
        let gone_now = self.node.held(lock).is_some();
        if self.node.unlock(lock).is_ok() && gone_now {
            self.waiters.remove(&lock);
        }
    }

    fn flush(&mut self) {
        while let Some(o) = self.node.poll_output() {
            match o {
                Output::Send { to, msg } => self.transport.send(to, msg),
                Output::Local(c) => {
                    let lock = c.lock();
                    let ends = c.ends_lock();
                    let Some(w) = self.waiters.get(&lock) else {
                        continue;
                    };
                    if let Err(mpsc::error::SendError(c)) = w.send(c) {
                        // Its owner is gone without releasing it.
                        self.waiters.remove(&lock);
                        match c {
                            Completion::Plock {
                                req,
                                result: PlockResult::Granted,
                            } if matches!(req.op, PlockOp::Lock { .. }) => {
                                let _ = self.node.plock(FileLockCall {
                                    resource: req.resource,
                                    flock: req.flock,
                                    owner: req.owner,
                                    pid: req.pid,
                                    op: PlockOp::Unlock,
                                    range: Range {
                                        start: req.start,
                                        end: req.end,
                                    },
                                });
                            }
                            Completion::Plock { .. } => {}
                            _ => {
                                let _ = self.node.unlock(lock);
                            }
                        }
                    } else if ends {
                        self.waiters.remove(&lock);
                    }
                }
            }
        }
    }
}
