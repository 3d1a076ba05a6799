//! Peer messages between mxfsd daemons: framing, versioning, encoding.
//!
//! This module owns the bytes on a peer link (design section 6; issue 4's
//! "framed, versioned messages in their own module").  Transport, the
//! Noise handshake and encryption wrap these frames and are not here.
//!
//! A frame, all integers big-endian:
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 4    | length of what follows (version + type + payload) |
//! | 4      | 1    | protocol version ([`VERSION`]) |
//! | 5      | 1    | message type ([`Message::type_code`]) |
//! | 6      | ...  | payload |
//!
//! A frame is at most [`MAX_FRAME`] bytes, checked from the length prefix
//! before anything is buffered or allocated, so a peer cannot make us
//! hold more.  Byte strings inside payloads carry their own length and
//! limits.  Decoding never panics: any truncation, unknown type, bad
//! value or trailing byte is a [`WireError`] (proptest feeds the decoder
//! arbitrary bytes and mutated valid frames).
//!
//! Forwarded file operations ([`FileOp`]) carry an opcode and a payload
//! that [`fileop`] defines, and their [`Origin`] for the owner's reply
//! cache.
//!
//! Version 2 added [`FileOp::origin`], version 3 the file-lock messages
//! ([`PlockRequest`], [`PlockAnswer`], [`PlockRecover`]), version 4
//! dropped the forwarded lock operations (GETLK, SETLK, the getlk reply
//! and the lock owners of FLUSH and RELEASE: fcntl and flock locks go
//! through the DLM only), version 5 added the FIEMAP and BIRTHTIME file
//! operations and their replies; a peer of another version is refused at
//! the handshake.

pub mod announce;
pub mod fileop;

use crate::dlm::plock::Kind;
use crate::dlm::{LockId, Mode, MAX_RESOURCE_NAME};

/// The protocol version this daemon speaks.
pub const VERSION: u8 = 5;
/// Largest frame, length prefix included: room for a 1 MiB FUSE write
/// and its header.
pub const MAX_FRAME: usize = 2 << 20;
const PREFIX: usize = 4;
const HEAD: usize = 2;
/// Most members a cluster has (one per lockstate heartbeat slot).
pub const MAX_MEMBERS: usize = 64;
pub const MAX_HOSTNAME: usize = 255;
pub const MAX_REASON: usize = 1024;
/// Request flag bits.
pub const FLAG_NOQUEUE: u32 = 1;
/// Most lock records in one [`LockRecover`] message (the DLM sends its
/// records in chunks of this many).  With full-length names such a
/// message stays far below [`MAX_FRAME`] (checked at compile time below).
pub const MAX_RECOVER_LOCKS: usize = 1024;
/// Bytes of one [`RecordedLock`] on the wire: lock id, name length, name,
/// granted and requested mode, flags.
const RECORD_FIXED: usize = 16 + 2 + 1 + 1 + 4;
const _: () = assert!(
    PREFIX + HEAD + 8 + 2 + MAX_RECOVER_LOCKS * (RECORD_FIXED + MAX_RESOURCE_NAME) <= MAX_FRAME
);

/// Most file locks in one [`PlockRecover`] message.
pub const MAX_RECOVER_PLOCKS: usize = 1024;
/// Bytes of one [`PlockHeld`] on the wire: owner, pid, kind, start, end.
const PLOCK_HELD: usize = 8 + 4 + 1 + 8 + 8;
const _: () = assert!(
    PREFIX + HEAD + 8 + 2 + MAX_RESOURCE_NAME + 4 + 2 + MAX_RECOVER_PLOCKS * PLOCK_HELD
        <= MAX_FRAME
);
/// File-lock flag bits: the request may wait; the file's locks are
/// flock locks (whole file) rather than record locks.
pub const PLOCK_WAIT: u32 = 1;
pub const PLOCK_FLOCK: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("frame length {0} is too short for a header")]
    TooShort(usize),
    #[error("protocol version {0}, this mxfsd speaks {VERSION}")]
    Version(u8),
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("message truncated in {0}")]
    Truncated(&'static str),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

pub type Result<T> = std::result::Result<T, WireError>;

/// First message each way on a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub node_id: u64,
    pub node_uuid: [u8; 16],
    pub volume_uuid: [u8; 16],
    pub tcp_port: u16,
    /// Protocol versions the sender speaks (for a later negotiation).
    pub min_version: u8,
    pub max_version: u8,
    /// Fresh randomness for the authentication transcript.
    pub nonce: [u8; 32],
    pub hostname: String,
}

/// Proof of the volume secret over the handshake transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub mac: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub node_id: u64,
    pub generation: u64,
    pub counter: u64,
    pub owner_epoch: u64,
}

/// A member's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub view: u64,
    pub owner: u64,
    pub owner_epoch: u64,
    /// Sorted, distinct, non-zero node ids.
    pub members: Vec<u64>,
}

/// A new lock or a conversion, sent to the resource's master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    pub lock: LockId,
    pub resource: Vec<u8>,
    pub mode: Mode,
    pub noqueue: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGrant {
    pub lock: LockId,
    pub resource: Vec<u8>,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockBlocking {
    pub lock: LockId,
    pub resource: Vec<u8>,
    pub granted: Mode,
    pub requested: Mode,
}

/// Unlock or cancel of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRef {
    pub lock: LockId,
    pub resource: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockCancelled {
    pub lock: LockId,
    pub resource: Vec<u8>,
    /// The mode still held (a conversion was cancelled), or None.
    pub mode: Option<Mode>,
}

/// A requester's record of one of its locks, as re-sent to the
/// resource's master at a view change (see [`crate::dlm::node`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedLock {
    pub lock: LockId,
    pub resource: Vec<u8>,
    /// The mode the holder relies on; None while waiting for a first grant.
    pub granted: Option<Mode>,
    /// The mode asked for, while a request or conversion is pending.
    pub requested: Option<Mode>,
    pub noqueue: bool,
}

/// Some of the sender's own locks on resources the receiver masters in
/// `view` (at most [`MAX_RECOVER_LOCKS`]); the sender ends its records
/// for a view with [`Message::LockRecoverDone`] (payload: the view, u64).
/// Payload: view (u64), count (u16), then per lock: lock id and name as
/// in the other lock messages, granted and requested mode (one byte
/// each, 0xff for none), flags (u32, [`FLAG_NOQUEUE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRecover {
    pub view: u64,
    pub locks: Vec<RecordedLock>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockErrorCode {
    NotGranted = 1,
    ConversionDeadlock = 2,
    NoSuchLock = 3,
    WrongState = 4,
    Exists = 5,
    BadName = 6,
    /// Sent to the wrong node: it does not master the resource.
    NotMaster = 7,
}

impl LockErrorCode {
    fn from_u8(v: u8) -> Option<Self> {
        use LockErrorCode::*;
        [
            NotGranted,
            ConversionDeadlock,
            NoSuchLock,
            WrongState,
            Exists,
            BadName,
            NotMaster,
        ]
        .into_iter()
        .find(|c| *c as u8 == v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockError {
    pub lock: LockId,
    pub resource: Vec<u8>,
    pub code: LockErrorCode,
}

/// What a file-lock request asks of the file's master
/// ([`crate::dlm::plock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlockOp {
    /// Take a lock of `kind` on the range; `wait`: queue when blocked.
    Lock { kind: Kind, wait: bool },
    /// Remove the owner's locks from the range.
    Unlock,
    /// F_GETLK: what would block a `kind` lock on the range.
    Test { kind: Kind },
    /// Withdraw the waiting request whose id this one carries.
    Cancel,
    /// Release every lock of the owner on the file (a close).
    Release,
}

/// A file-lock request, sent to the master of the file's resource.
/// Payload: request id and name as a lock message's, op (u8: 1 lock,
/// 2 unlock, 3 test, 4 cancel, 5 release), kind (u8: 0 none, 1 read,
/// 2 write; present for lock and test only), flags (u32,
/// [`PLOCK_WAIT`] for a lock only, [`PLOCK_FLOCK`]), owner (u64),
/// pid (u32), start and end (u64, start <= end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlockRequest {
    /// The requesting node and its id for the request.
    pub req: LockId,
    pub resource: Vec<u8>,
    pub flock: bool,
    /// The requesting node's kernel lock owner.
    pub owner: u64,
    pub pid: u32,
    pub op: PlockOp,
    pub start: u64,
    pub end: u64,
}

/// A lock that stands in the way, as F_GETLK reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlockHolder {
    pub node: u64,
    pub owner: u64,
    pub pid: u32,
    pub kind: Kind,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlockResult {
    /// The lock is held now.
    Granted,
    /// F_GETLK: nothing would block it.
    Free,
    /// Blocked, by this lock among others.
    Conflict(PlockHolder),
    /// Waiting would deadlock (EDEADLK).
    Deadlock,
    /// The waiting request was withdrawn.
    Cancelled,
}

/// The master's answer to a request: to a lock or a test its result, to
/// an unlock or a release `Granted` (done), to a cancel none (the
/// cancelled request's answer says what happened).  Payload: request id and name, result (u8: 1 granted, 2 free,
/// 3 conflict, 4 deadlock, 5 cancelled), then for a conflict node, owner
/// (u64), pid (u32), kind (u8), start, end (u64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlockAnswer {
    pub req: LockId,
    pub resource: Vec<u8>,
    pub result: PlockResult,
}

/// One of the sender's file locks, as re-sent at a view change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlockHeld {
    pub owner: u64,
    pub pid: u32,
    pub kind: Kind,
    pub start: u64,
    pub end: u64,
}

/// The sender's locks on one file whose resource the receiver masters in
/// `view`, sent before the sender's [`Message::LockRecoverDone`].
/// Payload: view (u64), name (u16 length, bytes), flags (u32,
/// [`PLOCK_FLOCK`]), count (u16, at most [`MAX_RECOVER_PLOCKS`]), then
/// per lock owner (u64), pid (u32), kind (u8), start, end (u64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlockRecover {
    pub view: u64,
    pub resource: Vec<u8>,
    pub flock: bool,
    pub held: Vec<PlockHeld>,
}

/// A file operation forwarded from a client to the owner (stub: opaque).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOp {
    /// The owner epoch the client believes in; the owner refuses others.
    pub owner_epoch: u64,
    pub request_id: u64,
    pub origin: Origin,
    pub opcode: u32,
    pub payload: Vec<u8>,
}

/// Where a forwarded request comes from: the client's FUSE connection
/// (a random id that outlives a restart of the client's daemon) and the
/// kernel's id of the request on it.  The same request sent again (by a
/// restarted daemon, or after a lost link) has the same origin, so the
/// owner answers it from its reply cache instead of running it twice.
/// Zero: none (a request that is safe to run twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    pub session: u64,
    pub unique: u64,
}

impl Origin {
    pub fn is_none(&self) -> bool {
        self.session == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOpReply {
    pub owner_epoch: u64,
    pub request_id: u64,
    /// 0 or a positive errno.
    pub errno: i32,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Auth(Auth),
    Heartbeat(Heartbeat),
    Membership(Membership),
    LockRequest(LockRequest),
    LockConvert(LockRequest),
    LockGrant(LockGrant),
    LockBlocking(LockBlocking),
    LockUnlock(LockRef),
    LockCancel(LockRef),
    LockCancelled(LockCancelled),
    LockError(LockError),
    LockRecover(LockRecover),
    // the sender has sent all its lock records for `view`
    LockRecoverDone { view: u64 },
    FileOp(FileOp),
    FileOpReply(FileOpReply),
    PlockRequest(PlockRequest),
    PlockAnswer(PlockAnswer),
    PlockRecover(PlockRecover),
    Goodbye { reason: String },
}

const T_HELLO: u8 = 1;
const T_AUTH: u8 = 2;
const T_HEARTBEAT: u8 = 3;
const T_MEMBERSHIP: u8 = 4;
const T_LOCK_REQUEST: u8 = 10;
const T_LOCK_CONVERT: u8 = 11;
const T_LOCK_GRANT: u8 = 12;
const T_LOCK_BLOCKING: u8 = 13;
const T_LOCK_UNLOCK: u8 = 14;
const T_LOCK_CANCEL: u8 = 15;
const T_LOCK_CANCELLED: u8 = 16;
const T_LOCK_ERROR: u8 = 17;
const T_LOCK_RECOVER: u8 = 18;
const T_LOCK_RECOVER_DONE: u8 = 19;
const T_FILE_OP: u8 = 20;
const T_FILE_OP_REPLY: u8 = 21;
const T_PLOCK_REQUEST: u8 = 25;
const T_PLOCK_ANSWER: u8 = 26;
const T_PLOCK_RECOVER: u8 = 27;
const T_GOODBYE: u8 = 30;
const NO_MODE: u8 = 0xff;

impl Message {
    pub fn type_code(&self) -> u8 {
        match self {
            Message::Hello(_) => T_HELLO,
            Message::Auth(_) => T_AUTH,
            Message::Heartbeat(_) => T_HEARTBEAT,
            Message::Membership(_) => T_MEMBERSHIP,
            Message::LockRequest(_) => T_LOCK_REQUEST,
            Message::LockConvert(_) => T_LOCK_CONVERT,
            Message::LockGrant(_) => T_LOCK_GRANT,
            Message::LockBlocking(_) => T_LOCK_BLOCKING,
            Message::LockUnlock(_) => T_LOCK_UNLOCK,
            Message::LockCancel(_) => T_LOCK_CANCEL,
            Message::LockCancelled(_) => T_LOCK_CANCELLED,
            Message::LockError(_) => T_LOCK_ERROR,
            Message::LockRecover(_) => T_LOCK_RECOVER,
            Message::LockRecoverDone { .. } => T_LOCK_RECOVER_DONE,
            Message::FileOp(_) => T_FILE_OP,
            Message::FileOpReply(_) => T_FILE_OP_REPLY,
            Message::PlockRequest(_) => T_PLOCK_REQUEST,
            Message::PlockAnswer(_) => T_PLOCK_ANSWER,
            Message::PlockRecover(_) => T_PLOCK_RECOVER,
            Message::Goodbye { .. } => T_GOODBYE,
        }
    }

    /// One whole frame.  Refuses what the decoder would refuse (oversized
    /// frames, bad names, unsorted member lists), so we never send a
    /// frame our peers must drop.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Vec::with_capacity(64);
        w.extend_from_slice(&[0; PREFIX]);
        w.push(VERSION);
        w.push(self.type_code());
        match self {
            Message::Hello(h) => {
                put_u64(&mut w, h.node_id);
                w.extend_from_slice(&h.node_uuid);
                w.extend_from_slice(&h.volume_uuid);
                put_u16(&mut w, h.tcp_port);
                w.push(h.min_version);
                w.push(h.max_version);
                w.extend_from_slice(&h.nonce);
                put_str(&mut w, &h.hostname, MAX_HOSTNAME, "hostname")?;
            }
            Message::Auth(a) => w.extend_from_slice(&a.mac),
            Message::Heartbeat(h) => {
                for v in [h.node_id, h.generation, h.counter, h.owner_epoch] {
                    put_u64(&mut w, v);
                }
            }
            Message::Membership(m) => {
                check_members(&m.members)?;
                for v in [m.view, m.owner, m.owner_epoch] {
                    put_u64(&mut w, v);
                }
                w.push(m.members.len() as u8);
                for id in &m.members {
                    put_u64(&mut w, *id);
                }
            }
            Message::LockRequest(r) | Message::LockConvert(r) => {
                put_lock(&mut w, r.lock, &r.resource)?;
                w.push(r.mode as u8);
                put_u32(&mut w, if r.noqueue { FLAG_NOQUEUE } else { 0 });
            }
            Message::LockGrant(g) => {
                put_lock(&mut w, g.lock, &g.resource)?;
                w.push(g.mode as u8);
            }
            Message::LockBlocking(b) => {
                put_lock(&mut w, b.lock, &b.resource)?;
                w.push(b.granted as u8);
                w.push(b.requested as u8);
            }
            Message::LockUnlock(r) | Message::LockCancel(r) => {
                put_lock(&mut w, r.lock, &r.resource)?
            }
            Message::LockCancelled(c) => {
                put_lock(&mut w, c.lock, &c.resource)?;
                w.push(opt_mode(c.mode));
            }
            Message::LockError(e) => {
                put_lock(&mut w, e.lock, &e.resource)?;
                w.push(e.code as u8);
            }
            Message::LockRecover(rec) => {
                if rec.locks.len() > MAX_RECOVER_LOCKS {
                    return Err(WireError::Invalid("recovered lock count"));
                }
                put_u64(&mut w, rec.view);
                put_u16(&mut w, rec.locks.len() as u16);
                for l in &rec.locks {
                    put_lock(&mut w, l.lock, &l.resource)?;
                    w.push(opt_mode(l.granted));
                    w.push(opt_mode(l.requested));
                    put_u32(&mut w, if l.noqueue { FLAG_NOQUEUE } else { 0 });
                }
            }
            Message::LockRecoverDone { view } => put_u64(&mut w, *view),
            Message::FileOp(f) => {
                put_u64(&mut w, f.owner_epoch);
                put_u64(&mut w, f.request_id);
                put_u64(&mut w, f.origin.session);
                put_u64(&mut w, f.origin.unique);
                put_u32(&mut w, f.opcode);
                put_bytes32(&mut w, &f.payload)?;
            }
            Message::FileOpReply(f) => {
                put_u64(&mut w, f.owner_epoch);
                put_u64(&mut w, f.request_id);
                if f.errno < 0 {
                    return Err(WireError::Invalid("negative errno"));
                }
                put_u32(&mut w, f.errno as u32);
                put_bytes32(&mut w, &f.payload)?;
            }
            Message::PlockRequest(p) => {
                put_lock(&mut w, p.req, &p.resource)?;
                let (op, kind, wait) = match p.op {
                    PlockOp::Lock { kind, wait } => (1, Some(kind), wait),
                    PlockOp::Unlock => (2, None, false),
                    PlockOp::Test { kind } => (3, Some(kind), false),
                    PlockOp::Cancel => (4, None, false),
                    PlockOp::Release => (5, None, false),
                };
                w.push(op);
                w.push(kind.map_or(0, kind_code));
                let mut flags = 0;
                if wait {
                    flags |= PLOCK_WAIT;
                }
                if p.flock {
                    flags |= PLOCK_FLOCK;
                }
                put_u32(&mut w, flags);
                put_u64(&mut w, p.owner);
                put_u32(&mut w, p.pid);
                put_range(&mut w, p.start, p.end)?;
            }
            Message::PlockAnswer(a) => {
                put_lock(&mut w, a.req, &a.resource)?;
                match a.result {
                    PlockResult::Granted => w.push(1),
                    PlockResult::Free => w.push(2),
                    PlockResult::Conflict(h) => {
                        w.push(3);
                        put_u64(&mut w, h.node);
                        put_u64(&mut w, h.owner);
                        put_u32(&mut w, h.pid);
                        w.push(kind_code(h.kind));
                        put_range(&mut w, h.start, h.end)?;
                    }
                    PlockResult::Deadlock => w.push(4),
                    PlockResult::Cancelled => w.push(5),
                }
            }
            Message::PlockRecover(rec) => {
                if rec.held.len() > MAX_RECOVER_PLOCKS {
                    return Err(WireError::Invalid("recovered file lock count"));
                }
                put_u64(&mut w, rec.view);
                put_name(&mut w, &rec.resource)?;
                put_u32(&mut w, if rec.flock { PLOCK_FLOCK } else { 0 });
                put_u16(&mut w, rec.held.len() as u16);
                for h in &rec.held {
                    put_u64(&mut w, h.owner);
                    put_u32(&mut w, h.pid);
                    w.push(kind_code(h.kind));
                    put_range(&mut w, h.start, h.end)?;
                }
            }
            Message::Goodbye { reason } => put_str(&mut w, reason, MAX_REASON, "reason")?,
        }
        if w.len() > MAX_FRAME {
            return Err(WireError::TooLarge(w.len()));
        }
        let body = (w.len() - PREFIX) as u32;
        w[..PREFIX].copy_from_slice(&body.to_be_bytes());
        Ok(w)
    }

    /// Decode one message from the start of `buf`: `Ok(None)` when more
    /// bytes are needed, else the message and the bytes it used.  An
    /// oversized length prefix is an error as soon as it is seen.
    pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>> {
        let Some(prefix) = buf.get(..PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > MAX_FRAME - PREFIX {
            return Err(WireError::TooLarge(len.saturating_add(PREFIX)));
        }
        if len < HEAD {
            return Err(WireError::TooShort(len));
        }
        let Some(body) = buf.get(PREFIX..PREFIX + len) else {
            return Ok(None);
        };
        Ok(Some((Message::decode_body(body)?, PREFIX + len)))
    }

    /// Decode a frame body (version, type, payload).
    pub fn decode_body(body: &[u8]) -> Result<Message> {
        let mut r = Rd { b: body, pos: 0 };
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let t = r.u8("type")?;
        let m = match t {
            T_HELLO => Message::Hello(Hello {
                node_id: r.u64("hello")?,
                node_uuid: r.arr("hello")?,
                volume_uuid: r.arr("hello")?,
                tcp_port: r.u16("hello")?,
                min_version: r.u8("hello")?,
                max_version: r.u8("hello")?,
                nonce: r.arr("hello")?,
                hostname: r.str(MAX_HOSTNAME, "hostname")?,
            }),
            T_AUTH => Message::Auth(Auth {
                mac: r.arr("auth")?,
            }),
            T_HEARTBEAT => Message::Heartbeat(Heartbeat {
                node_id: r.u64("heartbeat")?,
                generation: r.u64("heartbeat")?,
                counter: r.u64("heartbeat")?,
                owner_epoch: r.u64("heartbeat")?,
            }),
            T_MEMBERSHIP => {
                let view = r.u64("membership")?;
                let owner = r.u64("membership")?;
                let owner_epoch = r.u64("membership")?;
                let n = usize::from(r.u8("membership")?);
                if n > MAX_MEMBERS {
                    return Err(WireError::Invalid("member count"));
                }
                let members = (0..n)
                    .map(|_| r.u64("members"))
                    .collect::<Result<Vec<u64>>>()?;
                check_members(&members)?;
                Message::Membership(Membership {
                    view,
                    owner,
                    owner_epoch,
                    members,
                })
            }
            T_LOCK_REQUEST | T_LOCK_CONVERT => {
                let (lock, resource) = r.lock()?;
                let mode = r.mode()?;
                let flags = r.u32("flags")?;
                if flags & !FLAG_NOQUEUE != 0 {
                    return Err(WireError::Invalid("request flags"));
                }
                let req = LockRequest {
                    lock,
                    resource,
                    mode,
                    noqueue: flags & FLAG_NOQUEUE != 0,
                };
                if t == T_LOCK_REQUEST {
                    Message::LockRequest(req)
                } else {
                    Message::LockConvert(req)
                }
            }
            T_LOCK_GRANT => {
                let (lock, resource) = r.lock()?;
                Message::LockGrant(LockGrant {
                    lock,
                    resource,
                    mode: r.mode()?,
                })
            }
            T_LOCK_BLOCKING => {
                let (lock, resource) = r.lock()?;
                Message::LockBlocking(LockBlocking {
                    lock,
                    resource,
                    granted: r.mode()?,
                    requested: r.mode()?,
                })
            }
            T_LOCK_UNLOCK | T_LOCK_CANCEL => {
                let (lock, resource) = r.lock()?;
                let l = LockRef { lock, resource };
                if t == T_LOCK_UNLOCK {
                    Message::LockUnlock(l)
                } else {
                    Message::LockCancel(l)
                }
            }
            T_LOCK_CANCELLED => {
                let (lock, resource) = r.lock()?;
                Message::LockCancelled(LockCancelled {
                    lock,
                    resource,
                    mode: r.opt_mode()?,
                })
            }
            T_LOCK_ERROR => {
                let (lock, resource) = r.lock()?;
                let code = LockErrorCode::from_u8(r.u8("error code")?)
                    .ok_or(WireError::Invalid("lock error code"))?;
                Message::LockError(LockError {
                    lock,
                    resource,
                    code,
                })
            }
            T_LOCK_RECOVER => {
                let view = r.u64("lock recover")?;
                let n = usize::from(r.u16("lock recover")?);
                if n > MAX_RECOVER_LOCKS {
                    return Err(WireError::Invalid("recovered lock count"));
                }
                // A count the frame cannot hold fails here, before any
                // record is read; the records are not pre-allocated.
                if n * RECORD_FIXED > r.b.len() - r.pos {
                    return Err(WireError::Truncated("recovered locks"));
                }
                let mut locks = Vec::new();
                for _ in 0..n {
                    let (lock, resource) = r.lock()?;
                    let granted = r.opt_mode()?;
                    let requested = r.opt_mode()?;
                    let flags = r.u32("flags")?;
                    if flags & !FLAG_NOQUEUE != 0 {
                        return Err(WireError::Invalid("recovered lock flags"));
                    }
                    locks.push(RecordedLock {
                        lock,
                        resource,
                        granted,
                        requested,
                        noqueue: flags & FLAG_NOQUEUE != 0,
                    });
                }
                Message::LockRecover(LockRecover { view, locks })
            }
            T_LOCK_RECOVER_DONE => Message::LockRecoverDone {
                view: r.u64("lock recover done")?,
            },
            T_FILE_OP => Message::FileOp(FileOp {
                owner_epoch: r.u64("file op")?,
                request_id: r.u64("file op")?,
                origin: Origin {
                    session: r.u64("file op origin")?,
                    unique: r.u64("file op origin")?,
                },
                opcode: r.u32("file op")?,
                payload: r.bytes32("file op payload")?,
            }),
            T_FILE_OP_REPLY => {
                let owner_epoch = r.u64("file op reply")?;
                let request_id = r.u64("file op reply")?;
                let errno =
                    i32::try_from(r.u32("errno")?).map_err(|_| WireError::Invalid("errno"))?;
                Message::FileOpReply(FileOpReply {
                    owner_epoch,
                    request_id,
                    errno,
                    payload: r.bytes32("file op reply payload")?,
                })
            }
            T_PLOCK_REQUEST => {
                let (req, resource) = r.lock()?;
                let op = r.u8("file lock op")?;
                let kind = r.u8("file lock kind")?;
                let flags = r.u32("file lock flags")?;
                if flags & !(PLOCK_WAIT | PLOCK_FLOCK) != 0 {
                    return Err(WireError::Invalid("file lock flags"));
                }
                let wait = flags & PLOCK_WAIT != 0;
                let op = match (op, kind) {
                    (1, k) => PlockOp::Lock {
                        kind: kind_of(k)?,
                        wait,
                    },
                    (3, k) if !wait => PlockOp::Test { kind: kind_of(k)? },
                    (2, 0) if !wait => PlockOp::Unlock,
                    (4, 0) if !wait => PlockOp::Cancel,
                    (5, 0) if !wait => PlockOp::Release,
                    _ => return Err(WireError::Invalid("file lock op")),
                };
                let owner = r.u64("file lock owner")?;
                let pid = r.u32("file lock pid")?;
                let (start, end) = r.range()?;
                Message::PlockRequest(PlockRequest {
                    req,
                    resource,
                    flock: flags & PLOCK_FLOCK != 0,
                    owner,
                    pid,
                    op,
                    start,
                    end,
                })
            }
            T_PLOCK_ANSWER => {
                let (req, resource) = r.lock()?;
                let result = match r.u8("file lock result")? {
                    1 => PlockResult::Granted,
                    2 => PlockResult::Free,
                    3 => {
                        let node = r.u64("file lock holder")?;
                        let owner = r.u64("file lock holder")?;
                        let pid = r.u32("file lock holder")?;
                        let kind = kind_of(r.u8("file lock kind")?)?;
                        let (start, end) = r.range()?;
                        PlockResult::Conflict(PlockHolder {
                            node,
                            owner,
                            pid,
                            kind,
                            start,
                            end,
                        })
                    }
                    4 => PlockResult::Deadlock,
                    5 => PlockResult::Cancelled,
                    _ => return Err(WireError::Invalid("file lock result")),
                };
                Message::PlockAnswer(PlockAnswer {
                    req,
                    resource,
                    result,
                })
            }
            T_PLOCK_RECOVER => {
                let view = r.u64("file lock recover")?;
                let resource = r.resource_name()?;
                let flags = r.u32("file lock recover flags")?;
                if flags & !PLOCK_FLOCK != 0 {
                    return Err(WireError::Invalid("file lock recover flags"));
                }
                let n = usize::from(r.u16("file lock recover")?);
                if n > MAX_RECOVER_PLOCKS {
                    return Err(WireError::Invalid("recovered file lock count"));
                }
                if n * PLOCK_HELD > r.b.len() - r.pos {
                    return Err(WireError::Truncated("recovered file locks"));
                }
                let mut held = Vec::with_capacity(n);
                for _ in 0..n {
                    let owner = r.u64("recovered file lock")?;
                    let pid = r.u32("recovered file lock")?;
                    let kind = kind_of(r.u8("file lock kind")?)?;
                    let (start, end) = r.range()?;
                    held.push(PlockHeld {
                        owner,
                        pid,
                        kind,
                        start,
                        end,
                    });
                }
                Message::PlockRecover(PlockRecover {
                    view,
                    resource,
                    flock: flags & PLOCK_FLOCK != 0,
                    held,
                })
            }
            T_GOODBYE => Message::Goodbye {
                reason: r.str(MAX_REASON, "reason")?,
            },
            t => return Err(WireError::UnknownType(t)),
        };
        match r.b.len() - r.pos {
            0 => Ok(m),
            n => Err(WireError::Trailing(n)),
        }
    }
}

/// Accumulates bytes from a stream and hands out whole messages.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

#[cfg(test)]
impl FrameBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` until one is complete.  After an
    /// error the stream is out of step: the connection must be dropped.
    pub fn next_message(&mut self) -> Result<Option<Message>> {
        match Message::decode_frame(&self.buf)? {
            None => Ok(None),
            Some((m, used)) => {
                self.buf.drain(..used);
                Ok(Some(m))
            }
        }
    }
}

fn check_members(m: &[u64]) -> Result<()> {
    if m.len() > MAX_MEMBERS {
        return Err(WireError::Invalid("member count"));
    }
    if m.contains(&0) || m.windows(2).any(|w| w[0] >= w[1]) {
        return Err(WireError::Invalid(
            "member list (sorted, distinct, non-zero)",
        ));
    }
    Ok(())
}

fn put_u16(w: &mut Vec<u8>, v: u16) {
    w.extend_from_slice(&v.to_be_bytes());
}
fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_be_bytes());
}
fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_be_bytes());
}
fn put_str(w: &mut Vec<u8>, s: &str, max: usize, what: &'static str) -> Result<()> {
    if s.len() > max {
        return Err(WireError::Invalid(what));
    }
    put_u16(w, s.len() as u16);
    w.extend_from_slice(s.as_bytes());
    Ok(())
}
fn put_bytes32(w: &mut Vec<u8>, b: &[u8]) -> Result<()> {
    if b.len() > MAX_FRAME {
        return Err(WireError::TooLarge(b.len()));
    }
    put_u32(w, b.len() as u32);
    w.extend_from_slice(b);
    Ok(())
}
fn opt_mode(m: Option<Mode>) -> u8 {
    m.map_or(NO_MODE, |m| m as u8)
}
fn put_lock(w: &mut Vec<u8>, lock: LockId, resource: &[u8]) -> Result<()> {
    put_u64(w, lock.node);
    put_u64(w, lock.local);
    put_name(w, resource)
}
fn put_name(w: &mut Vec<u8>, resource: &[u8]) -> Result<()> {
    if resource.is_empty() || resource.len() > MAX_RESOURCE_NAME {
        return Err(WireError::Invalid("resource name"));
    }
    put_u16(w, resource.len() as u16);
    w.extend_from_slice(resource);
    Ok(())
}
fn put_range(w: &mut Vec<u8>, start: u64, end: u64) -> Result<()> {
    if start > end {
        return Err(WireError::Invalid("file lock range"));
    }
    put_u64(w, start);
    put_u64(w, end);
    Ok(())
}
fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::Read => 1,
        Kind::Write => 2,
    }
}
fn kind_of(v: u8) -> Result<Kind> {
    match v {
        1 => Ok(Kind::Read),
        2 => Ok(Kind::Write),
        _ => Err(WireError::Invalid("file lock kind")),
    }
}

/// Bounds-checked reader over a frame body.
struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.b.get(self.pos..end))
            .ok_or(WireError::Truncated(what))?;
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.arr::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16> {
        self.arr(what).map(u16::from_be_bytes)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        self.arr(what).map(u32::from_be_bytes)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64> {
        self.arr(what).map(u64::from_be_bytes)
    }
    fn str(&mut self, max: usize, what: &'static str) -> Result<String> {
        let n = usize::from(self.u16(what)?);
        if n > max {
            return Err(WireError::Invalid(what));
        }
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Invalid(what))
    }
    fn bytes32(&mut self, what: &'static str) -> Result<Vec<u8>> {
        let n = self.u32(what)? as usize;
        // the frame bounds this already; take() checks it against the rest
        Ok(self.take(n, what)?.to_vec())
    }
    fn mode(&mut self) -> Result<Mode> {
        Mode::from_u8(self.u8("mode")?).ok_or(WireError::Invalid("lock mode"))
    }
    /// A mode or [`NO_MODE`].
    fn opt_mode(&mut self) -> Result<Option<Mode>> {
        match self.u8("mode")? {
            NO_MODE => Ok(None),
            m => Mode::from_u8(m)
                .map(Some)
                .ok_or(WireError::Invalid("lock mode")),
        }
    }
    fn lock(&mut self) -> Result<(LockId, Vec<u8>)> {
        let node = self.u64("lock id")?;
        let local = self.u64("lock id")?;
        Ok((LockId { node, local }, self.resource_name()?))
    }
    fn resource_name(&mut self) -> Result<Vec<u8>> {
        let n = usize::from(self.u16("resource name")?);
        if n == 0 || n > MAX_RESOURCE_NAME {
            return Err(WireError::Invalid("resource name"));
        }
        Ok(self.take(n, "resource name")?.to_vec())
    }
    /// A file lock's byte range: start <= end.
    fn range(&mut self) -> Result<(u64, u64)> {
        let start = self.u64("file lock range")?;
        let end = self.u64("file lock range")?;
        if start > end {
            return Err(WireError::Invalid("file lock range"));
        }
        Ok((start, end))
    }
}

#[cfg(test)]
mod tests;
