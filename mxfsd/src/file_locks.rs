//! The module's file-lock calls (FILE_LOCK), served through the DLM.
//!
//! This module owns the path of an application's fcntl or flock lock on
//! a regular file of this node's mount: the kernel module sends each
//! call over netlink (`kmod/mxfs_locks.c`), it is decoded here
//! ([`decode_call`]), made a [`FileLockCall`] on the file's resource
//! (`plock:<ino in hex>` for record locks, `flock:<ino in hex>` for
//! flock: the two kinds never conflict), and the DLM's answer goes back
//! as FILE_LOCK_DONE.  Owner and clients alike: the locks live in the
//! DLM's tables, so they outlast a change of owner.  After a restart the
//! module sends its node's locks again as plain LOCK calls (its
//! reclaim): nothing here tells them apart.
//!
//! Order matters (an unlock and the lock after it, by one owner): calls
//! are handed to the DLM one at a time in the order the kernel sent them
//! ([`Dlm::plock_withdrawable`] hands its call over before it is
//! awaited); only the waiting for answers runs side by side.  A CANCEL
//! from the kernel (a signal reached a waiting caller) asks the DLM to
//! withdraw that call, and the call's last answer still goes back: EINTR
//! if it was withdrawn, or the grant that crossed the withdrawal, which
//! the module records as a grant that came first (undoing it instead
//! would mean unlocking its range, dropping with it the locks the owner
//! held there before).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::dlm::plock::{FileLockCall, Kind, Range};
use crate::dlm::{Dlm, LockError, Withdraw};
use crate::metrics::LockMetrics;
use crate::netlink::{Attrs, Session, WireError};
use crate::uapi::*;
use crate::wire::{PlockOp, PlockResult};

/// How long a call waits for this node to be in the DLM's view (a
/// daemon that has just started, a view change) before it fails ENOLCK.
const MEMBER_WAIT: Duration = Duration::from_secs(30);

/// The kernel's `OFFSET_MAX`: the last byte a lock can cover.
const OFFSET_MAX: u64 = i64::MAX as u64;

const F_RDLCK: u32 = libc::F_RDLCK as u32;
const F_WRLCK: u32 = libc::F_WRLCK as u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOp {
    /// F_SETLK(W) or flock: take a lock of `kind`.
    Lock {
        kind: Kind,
        wait: bool,
    },
    Unlock,
    /// F_GETLK for a `kind` lock.
    Test {
        kind: Kind,
    },
    /// Withdraw the waiting call of the same id.
    Cancel,
}

/// One FILE_LOCK call of the module, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLockCall {
    pub id: u64,
    pub op: CallOp,
    pub ino: u64,
    pub owner: u64,
    pub pid: u32,
    pub flock: bool,
    pub range: Range,
}

/// FILE_LOCK_DONE's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelLockAnswer {
    Done,
    /// A positive errno: EAGAIN, EDEADLK, EINTR, ENOLCK.
    Errno(i32),
    /// F_GETLK: this lock is in the way (`typ` F_RDLCK or F_WRLCK).
    Conflict {
        typ: u32,
        start: u64,
        end: u64,
        pid: u32,
        node: u64,
    },
}

fn kind_of(typ: Option<u32>) -> Result<Kind, WireError> {
    match typ.ok_or(WireError::Missing("LOCK_TYPE"))? {
        F_RDLCK => Ok(Kind::Read),
        F_WRLCK => Ok(Kind::Write),
        _ => Err(WireError::Invalid("LOCK_TYPE")),
    }
}

/// A FILE_LOCK command's attributes, for our volume and token.
pub fn decode_call(attrs: &Attrs, session: &Session) -> Result<KernelLockCall, WireError> {
    crate::netlink::check_session(attrs, session.token, &session.uuid)?;
    let id = attrs.lock_id.ok_or(WireError::Missing("LOCK_ID"))?;
    let flags = attrs.lock_flags.unwrap_or(0);
    if flags & !(MXFS_FILE_LOCK_FLOCK | MXFS_FILE_LOCK_WAIT) != 0 {
        return Err(WireError::Invalid("LOCK_FLAGS"));
    }
    let op = match attrs.lock_op.ok_or(WireError::Missing("LOCK_OP"))? {
        MXFS_FILE_LOCK_CANCEL => {
            return Ok(KernelLockCall {
                id,
                op: CallOp::Cancel,
                ino: 0,
                owner: 0,
                pid: 0,
                flock: false,
                range: Range::WHOLE,
            })
        }
        MXFS_FILE_LOCK_LOCK => CallOp::Lock {
            kind: kind_of(attrs.lock_type)?,
            wait: flags & MXFS_FILE_LOCK_WAIT != 0,
        },
        MXFS_FILE_LOCK_UNLOCK => CallOp::Unlock,
        MXFS_FILE_LOCK_TEST => CallOp::Test {
            kind: kind_of(attrs.lock_type)?,
        },
        _ => return Err(WireError::Invalid("LOCK_OP")),
    };
    let start = attrs.offset.ok_or(WireError::Missing("OFFSET"))?;
    let end = attrs.lock_end.ok_or(WireError::Missing("LOCK_END"))?;
    if end > OFFSET_MAX {
        return Err(WireError::Invalid("LOCK_END"));
    }
    let range = Range::new(start, end).ok_or(WireError::Invalid("OFFSET"))?;
    Ok(KernelLockCall {
        id,
        op,
        ino: attrs.inode.ok_or(WireError::Missing("INODE"))?,
        owner: attrs.lock_owner.ok_or(WireError::Missing("LOCK_OWNER"))?,
        pid: attrs.lock_pid.ok_or(WireError::Missing("LOCK_PID"))?,
        flock: flags & MXFS_FILE_LOCK_FLOCK != 0,
        range,
    })
}

/// The DLM call of a kernel call (not a cancel).
pub fn dlm_call(c: &KernelLockCall) -> FileLockCall {
    let kind = if c.flock { "flock" } else { "plock" };
    FileLockCall {
        resource: format!("{kind}:{:x}", c.ino).into_bytes(),
        flock: c.flock,
        owner: c.owner,
        pid: c.pid,
        op: match c.op {
            CallOp::Lock { kind, wait } => PlockOp::Lock { kind, wait },
            CallOp::Test { kind } => PlockOp::Test { kind },
            CallOp::Unlock | CallOp::Cancel => PlockOp::Unlock,
        },
        range: c.range,
    }
}

/// What the kernel is told of the DLM's answer to `op`.
pub fn answer_of(op: CallOp, r: Result<PlockResult, LockError>) -> KernelLockAnswer {
    use KernelLockAnswer as A;
    match r {
        Ok(PlockResult::Cancelled) => A::Errno(libc::EINTR),
        Ok(PlockResult::Granted | PlockResult::Free) => A::Done,
        Ok(PlockResult::Deadlock) => A::Errno(libc::EDEADLK),
        Ok(PlockResult::Conflict(h)) => match op {
            CallOp::Test { .. } => {
                // what the module takes: a range within OFFSET_MAX, a pid
                // that is positive as an i32
                let end = h.end.min(OFFSET_MAX);
                A::Conflict {
                    typ: match h.kind {
                        Kind::Read => F_RDLCK,
                        Kind::Write => F_WRLCK,
                    },
                    start: h.start.min(end),
                    end,
                    pid: if h.pid > i32::MAX as u32 { 0 } else { h.pid },
                    node: h.node,
                }
            }
            _ => A::Errno(libc::EAGAIN),
        },
        Err(e) => {
            warn!("a file lock call failed in the DLM: {e}");
            A::Errno(libc::ENOLCK)
        }
    }
}

/// Where answers go: FILE_LOCK_DONE on a netlink socket of its own (the
/// main one waits for the kernel's commands), from a thread of its own.
pub type Answers = std::sync::mpsc::Sender<(u64, KernelLockAnswer)>;

/// Send answers to the kernel until every sender is gone.
pub fn start_answering(session: Session) -> std::io::Result<Answers> {
    let (tx, rx) = std::sync::mpsc::channel::<(u64, KernelLockAnswer)>();
    std::thread::Builder::new()
        .name("lock-answers".into())
        .spawn(move || {
            let mut ch = None;
            for (id, answer) in rx {
                if ch.is_none() {
                    match crate::netlink::Channel::open() {
                        Ok(c) => ch = Some(c),
                        Err(e) => {
                            warn!("no netlink channel for file lock answers: {e}");
                            continue;
                        }
                    }
                }
                if let Some(c) = ch.as_mut() {
                    if let Err(e) = c.file_lock_done(&session, id, &answer) {
                        // the caller gave up, or the module is going
                        debug!(id, "FILE_LOCK_DONE not taken: {e}");
                    }
                }
            }
        })?;
    Ok(tx)
}

/// Serves the module's FILE_LOCK calls through one DLM.
pub struct FileLockServer {
    calls: mpsc::UnboundedSender<KernelLockCall>,
}

impl FileLockServer {
    /// `metrics`: each call is a lock request; each grant of a lock
    /// (waiting included) goes into the grant latencies.
    pub fn start(
        dlm: Dlm,
        answers: Answers,
        metrics: Arc<LockMetrics>,
        rt: &tokio::runtime::Handle,
    ) -> Self {
        let (calls, rx) = mpsc::unbounded_channel();
        rt.spawn(serve(dlm, rx, answers, metrics));
        FileLockServer { calls }
    }

    /// A call, in the order the kernel sent it.
    pub fn submit(&self, call: KernelLockCall) {
        let _ = self.calls.send(call);
    }
}

/// Wait (bounded) until this node is in the DLM's view.
async fn member(dlm: &Dlm) -> bool {
    let me = dlm.node_id();
    let mut view = dlm.watch_members();
    let is_member = view.borrow().1.contains(&me);
    if is_member {
        return true;
    }
    let wait = view.wait_for(|(_, members)| members.contains(&me));
    let joined = matches!(tokio::time::timeout(MEMBER_WAIT, wait).await, Ok(Ok(_)));
    joined
}

async fn serve(
    dlm: Dlm,
    mut calls: mpsc::UnboundedReceiver<KernelLockCall>,
    answers: Answers,
    metrics: Arc<LockMetrics>,
) {
    let waiting: Arc<Mutex<HashMap<u64, Withdraw>>> = Arc::default();
    while let Some(call) = calls.recv().await {
        if call.op == CallOp::Cancel {
            // The call's task still answers: cancelled, or the grant
            // that came first (which the module then records).
            let withdraw = waiting.lock().ok().and_then(|mut w| w.remove(&call.id));
            if let Some(withdraw) = withdraw {
                withdraw.withdraw();
            }
            continue;
        }
        if !member(&dlm).await {
            warn!("a file lock call failed: this node is not in the DLM's view");
            let _ = answers.send((call.id, KernelLockAnswer::Errno(libc::ENOLCK)));
            continue;
        }
        metrics.request();
        debug!(call = ?call, "file lock call");
        let asked = Instant::now();
        let (answer, withdraw) = dlm.plock_withdrawable(dlm_call(&call));
        if let Ok(mut w) = waiting.lock() {
            w.insert(call.id, withdraw);
        }
        let waiting = waiting.clone();
        let answers = answers.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let r = answer.await;
            if let Ok(mut w) = waiting.lock() {
                w.remove(&call.id);
            }
            let answer = answer_of(call.op, r);
            debug!(id = call.id, answer = ?answer, "file lock answer");
            if matches!(call.op, CallOp::Lock { .. }) && answer == KernelLockAnswer::Done {
                metrics.granted(asked.elapsed());
            }
            let _ = answers.send((call.id, answer));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Session = Session {
        token: 7,
        uuid: [3; 16],
    };

    fn lock_attrs() -> Attrs {
        Attrs {
            token: Some(7),
            volume_uuid: Some([3; 16]),
            lock_id: Some(42),
            lock_op: Some(MXFS_FILE_LOCK_LOCK),
            lock_flags: Some(MXFS_FILE_LOCK_WAIT),
            lock_type: Some(F_WRLCK),
            inode: Some(131),
            lock_owner: Some(0xfeed),
            lock_pid: Some(900),
            offset: Some(10),
            lock_end: Some(19),
            ..Default::default()
        }
    }

    #[test]
    fn a_lock_call_decodes_and_names_the_file_resource_by_kind() {
        let c = decode_call(&lock_attrs(), &S).unwrap();
        assert_eq!(
            c.op,
            CallOp::Lock {
                kind: Kind::Write,
                wait: true
            }
        );
        assert_eq!(c.range, Range { start: 10, end: 19 });
        assert_eq!(dlm_call(&c).resource, b"plock:83");
        let f = decode_call(
            &Attrs {
                lock_flags: Some(MXFS_FILE_LOCK_FLOCK),
                ..lock_attrs()
            },
            &S,
        )
        .unwrap();
        assert!(f.flock);
        assert_eq!(dlm_call(&f).resource, b"flock:83");
        assert_eq!(
            dlm_call(&f).op,
            PlockOp::Lock {
                kind: Kind::Write,
                wait: false
            }
        );
    }

    #[test]
    fn bad_calls_are_refused() {
        let bad = [
            Attrs {
                token: Some(8),
                ..lock_attrs()
            },
            Attrs {
                lock_op: Some(9),
                ..lock_attrs()
            },
            Attrs {
                lock_type: Some(libc::F_UNLCK as u32),
                ..lock_attrs()
            },
            Attrs {
                lock_flags: Some(0x80),
                ..lock_attrs()
            },
            Attrs {
                offset: Some(20),
                ..lock_attrs()
            },
            Attrs {
                lock_end: Some(u64::MAX),
                ..lock_attrs()
            },
            Attrs {
                inode: None,
                ..lock_attrs()
            },
            Attrs {
                lock_id: None,
                ..lock_attrs()
            },
        ];
        for a in bad {
            assert!(decode_call(&a, &S).is_err(), "{a:?}");
        }
        // a cancel needs only its id
        let c = decode_call(
            &Attrs {
                token: Some(7),
                volume_uuid: Some([3; 16]),
                lock_id: Some(5),
                lock_op: Some(MXFS_FILE_LOCK_CANCEL),
                ..Default::default()
            },
            &S,
        )
        .unwrap();
        assert_eq!((c.id, c.op), (5, CallOp::Cancel));
    }

    #[test]
    fn answers_say_what_the_kernel_expects() {
        let lock = CallOp::Lock {
            kind: Kind::Read,
            wait: false,
        };
        let test = CallOp::Test { kind: Kind::Read };
        let holder = crate::wire::PlockHolder {
            node: 2,
            owner: 3,
            pid: 77,
            kind: Kind::Write,
            start: 0,
            end: u64::MAX,
        };
        assert_eq!(
            answer_of(lock, Ok(PlockResult::Granted)),
            KernelLockAnswer::Done
        );
        assert_eq!(
            answer_of(lock, Ok(PlockResult::Conflict(holder))),
            KernelLockAnswer::Errno(libc::EAGAIN)
        );
        assert_eq!(
            answer_of(test, Ok(PlockResult::Conflict(holder))),
            KernelLockAnswer::Conflict {
                typ: F_WRLCK,
                start: 0,
                end: OFFSET_MAX,
                pid: 77,
                node: 2
            }
        );
        assert_eq!(
            answer_of(test, Ok(PlockResult::Free)),
            KernelLockAnswer::Done
        );
        assert_eq!(
            answer_of(lock, Ok(PlockResult::Deadlock)),
            KernelLockAnswer::Errno(libc::EDEADLK)
        );
        assert_eq!(
            answer_of(lock, Ok(PlockResult::Cancelled)),
            KernelLockAnswer::Errno(libc::EINTR)
        );
        assert_eq!(
            answer_of(lock, Err(LockError::Shutdown)),
            KernelLockAnswer::Errno(libc::ENOLCK)
        );
    }

    /// The server over a DLM alone in its view: calls are served in
    /// order, a waiting lock is granted on the unlock, a cancel withdraws
    /// a wait, F_GETLK names the holder, and a call made before the node
    /// is in a view waits for it.
    // multi-threaded: the test blocks on the answers' std channel
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_are_served_in_order_through_the_dlm() {
        const ME: u64 = 0x51;
        let (dlm, _task) = Dlm::spawn(ME, crate::test_support::Nowhere);
        let (answers, rx) = std::sync::mpsc::channel();
        let metrics = Arc::new(LockMetrics::default());
        let server = FileLockServer::start(
            dlm.clone(),
            answers,
            metrics.clone(),
            &tokio::runtime::Handle::current(),
        );
        let next = || {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("an answer within 10 s")
        };
        let call = |id, owner, op| KernelLockCall {
            id,
            op,
            ino: 131,
            owner,
            pid: 1000 + owner as u32,
            flock: false,
            range: Range { start: 0, end: 99 },
        };
        let write = |wait| CallOp::Lock {
            kind: Kind::Write,
            wait,
        };
        // before any view: the call waits for one
        server.submit(call(1, 1, write(false)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            rx.try_recv().is_err(),
            "answered before this node was in a view"
        );
        dlm.set_members(1, &[ME]).await.unwrap();
        assert_eq!(next(), (1, KernelLockAnswer::Done));

        server.submit(call(2, 2, write(false)));
        assert_eq!(next(), (2, KernelLockAnswer::Errno(libc::EAGAIN)));
        server.submit(call(3, 2, CallOp::Test { kind: Kind::Read }));
        assert_eq!(
            next(),
            (
                3,
                KernelLockAnswer::Conflict {
                    typ: F_WRLCK,
                    start: 0,
                    end: 99,
                    pid: 1001,
                    node: ME
                }
            )
        );
        // a wait, withdrawn by a cancel: EINTR
        server.submit(call(4, 2, write(true)));
        server.submit(KernelLockCall {
            op: CallOp::Cancel,
            ..call(4, 0, CallOp::Cancel)
        });
        assert_eq!(next(), (4, KernelLockAnswer::Errno(libc::EINTR)));
        // a wait granted by the holder's unlock, sent right after it:
        // the unlock is answered, then the waiter
        server.submit(call(5, 3, write(true)));
        server.submit(call(6, 1, CallOp::Unlock));
        let mut got = vec![next(), next()];
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(
            got,
            vec![(5, KernelLockAnswer::Done), (6, KernelLockAnswer::Done)]
        );
        // flock and record locks of one file do not meet
        server.submit(KernelLockCall {
            flock: true,
            ..call(7, 4, write(false))
        });
        assert_eq!(next(), (7, KernelLockAnswer::Done));
        assert_eq!(metrics.requests(), 7);
    }
}
