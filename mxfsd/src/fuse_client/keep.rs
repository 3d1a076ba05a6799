//! What a client's FUSE server keeps for a daemon that systemd restarts
//! (issue 6: `kill -9` of a client's mxfsd).
//!
//! A client's mount lives on one FUSE connection.  For a restarted daemon
//! to carry on with it, the connection must outlive the process (systemd
//! holds its `/dev/fuse` descriptor in the unit's file descriptor store)
//! and the new daemon must know what the dead one knew:
//! - the kernel's INIT request, so that fuser can start again on a
//!   connection that will never send INIT again ([`super::conn`]);
//! - which FUSE node id stands for which owner handle;
//! - which FUSE file handle (`fh`) is which open on the owner, and how to
//!   open it again;
//! - the requests read from the kernel and not answered yet: their callers
//!   wait in the kernel, and the new daemon answers them.
//!
//! This module owns that state: one memfd, kept in the fd store too, laid
//! out in fixed slots so that each change is one positioned write of a
//! slot (a node, an open, a request) and nothing is ever rewritten as a
//! whole.  Read back, every slot goes through a decoder that refuses what
//! is malformed (a torn or foreign slot is skipped and counted, never
//! trusted).
//!
//! Layout, little endian, sparse (only written pages take memory):
//! - header, 4 KiB: magic, version, how many node and open slots were ever
//!   used (so a restart reads only those), the connection's session id
//!   (the origin of its requests, `wire::Origin`; 0 in state written
//!   before it existed: a new one is chosen), the INIT request;
//! - node slots, 256 B each: node id → handle;
//! - open slots, 1 KiB each: fh → owner open id, flags, opener, handle;
//! - request slots, [`REQ_SLOT`] each: one unanswered request.
//!
//! A node or open slot is one write within one page, with a checksum.  A
//! request slot is written body first and header last, so a daemon killed
//! in between leaves a free slot.  A request is lost to the new daemon
//! only when the kill falls between the kernel handing it over and this
//! write (its caller then waits until the mount goes); one answered just
//! before the kill, and not yet marked answered, is served twice, the
//! second answer being refused by the kernel; the owner runs it once
//! (its reply cache knows the request by its origin: the session kept
//! here and the kernel's request id).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard};

use tracing::warn;

use crate::identity::fnv1a64;
use crate::wire::fileop::{Creds, Handle, MAX_HANDLE, MAX_IO};

const MAGIC: [u8; 8] = *b"MXFSKEEP";
const VERSION: u32 = 1;

const HEADER: u64 = 4096;
/// Where the INIT request starts in the header, and its largest size.
const INIT_AT: usize = 64;
/// Where the session id is in the header.
const SESSION_AT: usize = 32;
pub const INIT_MAX: usize = HEADER as usize - INIT_AT;

const NODE_SLOT: u64 = 256;
pub const NODE_SLOTS: u32 = 1 << 20;
const OPEN_SLOT: u64 = 1024;
pub const OPEN_SLOTS: u32 = 1 << 16;
/// A request: its header and the largest request FUSE sends us (a write
/// of [`MAX_IO`], or a setxattr of 64 KiB, with their headers).
pub const REQ_MAX: usize = MAX_IO + (128 << 10);
const REQ_HEAD: u64 = 24;
const REQ_SLOT: u64 = REQ_HEAD + REQ_MAX as u64;
pub const REQ_SLOTS: u32 = 64;

const NODES_AT: u64 = HEADER;
const OPENS_AT: u64 = NODES_AT + NODE_SLOT * NODE_SLOTS as u64;
const REQS_AT: u64 = OPENS_AT + OPEN_SLOT * OPEN_SLOTS as u64;
const FILE_SIZE: u64 = REQS_AT + REQ_SLOT * REQ_SLOTS as u64;

const USED: u32 = 1;
/// An open slot's body up to its groups: ids, flags, opener, handle.
const OPEN_BODY_FIXED: usize = 42 + MAX_HANDLE;
/// Most supplementary groups an open slot holds.
pub const OPEN_GROUPS: usize = (OPEN_SLOT as usize - 8 - OPEN_BODY_FIXED) / 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeepError {
    #[error("not an mxfs client state file (bad magic)")]
    Magic,
    #[error("client state version {0}, this mxfsd reads {VERSION}")]
    Version(u32),
    #[error("client state: {0}")]
    Corrupt(&'static str),
}

fn check32(b: &[u8]) -> u32 {
    fnv1a64(b) as u32
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, KeepError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(KeepError::Corrupt("short slot"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, KeepError> {
    crate::le::u32_at(b, at).ok_or(KeepError::Corrupt("short slot"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, KeepError> {
    crate::le::u64_at(b, at).ok_or(KeepError::Corrupt("short slot"))
}

/// The header's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub init: Vec<u8>,
    pub node_hwm: u32,
    pub open_hwm: u32,
    pub session: u64,
}

pub fn decode_header(b: &[u8]) -> Result<Header, KeepError> {
    if b.get(..8) != Some(&MAGIC[..]) {
        return Err(KeepError::Magic);
    }
    let version = u32_at(b, 8)?;
    if version != VERSION {
        return Err(KeepError::Version(version));
    }
    let init_len = u32_at(b, 12)? as usize;
    let node_hwm = u32_at(b, 16)?;
    let open_hwm = u32_at(b, 20)?;
    if init_len > INIT_MAX || node_hwm > NODE_SLOTS || open_hwm > OPEN_SLOTS {
        return Err(KeepError::Corrupt("header out of range"));
    }
    let init = b
        .get(INIT_AT..INIT_AT + init_len)
        .ok_or(KeepError::Corrupt("short header"))?;
    if check32(init) != u32_at(b, 24)? {
        return Err(KeepError::Corrupt("INIT checksum"));
    }
    Ok(Header {
        init: init.to_vec(),
        node_hwm,
        open_hwm,
        session: u64_at(b, SESSION_AT)?,
    })
}

fn encode_handle(out: &mut Vec<u8>, h: &Handle) {
    out.extend_from_slice(&h.handle_type.to_le_bytes());
    out.extend_from_slice(&(h.bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(&h.bytes);
    out.resize(out.len() + MAX_HANDLE - h.bytes.len(), 0);
}

fn decode_handle(b: &[u8], at: usize) -> Result<Handle, KeepError> {
    let handle_type = u32_at(b, at)? as i32;
    let len = u16_at(b, at + 4)? as usize;
    if len == 0 || len > MAX_HANDLE {
        return Err(KeepError::Corrupt("handle length"));
    }
    let bytes = b
        .get(at + 6..at + 6 + len)
        .ok_or(KeepError::Corrupt("short slot"))?;
    Ok(Handle {
        handle_type,
        bytes: bytes.to_vec(),
    })
}

/// A used slot: state, checksum of the body, body.
fn seal(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&USED.to_le_bytes());
    out.extend_from_slice(&check32(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The body of a used slot of `size` bytes whose body is `body_len` long;
/// `None` for a free slot.
fn unseal(b: &[u8], body_len: usize) -> Result<Option<&[u8]>, KeepError> {
    match u32_at(b, 0)? {
        0 => return Ok(None),
        USED => {}
        _ => return Err(KeepError::Corrupt("slot state")),
    }
    let body = b
        .get(8..8 + body_len)
        .ok_or(KeepError::Corrupt("short slot"))?;
    if check32(body) != u32_at(b, 4)? {
        return Err(KeepError::Corrupt("slot checksum"));
    }
    Ok(Some(body))
}

pub fn encode_node(node: u64, h: &Handle) -> Vec<u8> {
    let mut body = node.to_le_bytes().to_vec();
    encode_handle(&mut body, h);
    seal(body)
}

/// A node slot: `None` when free.
pub fn decode_node(b: &[u8]) -> Result<Option<(u64, Handle)>, KeepError> {
    let Some(body) = unseal(b, 14 + MAX_HANDLE)? else {
        return Ok(None);
    };
    Ok(Some((u64_at(body, 0)?, decode_handle(body, 8)?)))
}

/// What reopens a client's open file on the owner, and finds it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRecord {
    pub fh: u64,
    pub owner_fh: u64,
    pub flags: i32,
    pub dir: bool,
    pub creds: Creds,
    pub handle: Handle,
}

/// `None` when the opener has more groups than a slot holds.
pub fn encode_open(r: &OpenRecord) -> Option<Vec<u8>> {
    if r.creds.groups.len() > OPEN_GROUPS {
        return None;
    }
    let mut body = Vec::with_capacity(OPEN_SLOT as usize);
    body.extend_from_slice(&r.fh.to_le_bytes());
    body.extend_from_slice(&r.owner_fh.to_le_bytes());
    body.extend_from_slice(&r.flags.to_le_bytes());
    body.push(u8::from(r.dir));
    body.push(0);
    body.extend_from_slice(&(r.creds.groups.len() as u16).to_le_bytes());
    body.extend_from_slice(&r.creds.uid.to_le_bytes());
    body.extend_from_slice(&r.creds.gid.to_le_bytes());
    body.extend_from_slice(&r.creds.pid.to_le_bytes());
    encode_handle(&mut body, &r.handle);
    for g in &r.creds.groups {
        body.extend_from_slice(&g.to_le_bytes());
    }
    Some(seal(body))
}

/// An open slot: `None` when free.
pub fn decode_open(b: &[u8]) -> Result<Option<OpenRecord>, KeepError> {
    // The body's length depends on the group count: read it first (at
    // 8 + 22), then check the whole.
    if u32_at(b, 0)? == 0 {
        return Ok(None);
    }
    let ngroups = u16_at(b, 8 + 22)? as usize;
    if ngroups > OPEN_GROUPS {
        return Err(KeepError::Corrupt("group count"));
    }
    let Some(body) = unseal(b, OPEN_BODY_FIXED + ngroups * 4)? else {
        return Ok(None);
    };
    let dir = match body.get(20) {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(KeepError::Corrupt("dir flag")),
    };
    let groups = (0..ngroups)
        .map(|i| u32_at(body, OPEN_BODY_FIXED + i * 4))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(OpenRecord {
        fh: u64_at(body, 0)?,
        owner_fh: u64_at(body, 8)?,
        flags: u32_at(body, 16)? as i32,
        dir,
        creds: Creds {
            uid: u32_at(body, 24)?,
            gid: u32_at(body, 28)?,
            pid: u32_at(body, 32)?,
            groups,
        },
        handle: decode_handle(body, 36)?,
    }))
}

/// A request slot's header: its body follows it.
pub fn encode_request_head(unique: u64, len: usize) -> Vec<u8> {
    let mut body = (len as u32).to_le_bytes().to_vec();
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&unique.to_le_bytes());
    seal(body)
}

/// A request slot's header: `(unique, length)`, `None` when free.
pub fn decode_request_head(b: &[u8]) -> Result<Option<(u64, usize)>, KeepError> {
    let Some(body) = unseal(b, 16)? else {
        return Ok(None);
    };
    let len = u32_at(body, 0)? as usize;
    if len > REQ_MAX {
        return Err(KeepError::Corrupt("request length"));
    }
    Ok(Some((u64_at(body, 8)?, len)))
}

/// What a restarted daemon reads back.
#[derive(Debug, Default)]
pub struct Kept {
    pub init: Vec<u8>,
    /// (slot, node id, handle)
    pub nodes: Vec<(u32, u64, Handle)>,
    /// (slot, open)
    pub opens: Vec<(u32, OpenRecord)>,
    /// (unique, request), in the order the kernel numbered them.
    pub requests: Vec<(u64, Vec<u8>)>,
    /// Slots that did not decode (skipped).
    pub corrupt: usize,
}

#[derive(Default)]
struct Alloc {
    node_free: Vec<u32>,
    node_hwm: u32,
    open_free: Vec<u32>,
    open_hwm: u32,
    req_free: Vec<u32>,
    req_of: HashMap<u64, u32>,
    /// The header's length and checksum of the INIT request.
    init_len: u32,
    init_check: u32,
    /// One warning per kind of trouble, not one per request.
    warned_full: bool,
    warned_io: bool,
}

/// The kept state of one client mount.
pub struct Keep {
    file: File,
    alloc: Mutex<Alloc>,
    session: u64,
}

/// A new session id: random, never 0 (no origin).
fn new_session() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 | 1
}

impl std::fmt::Debug for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keep").field("file", &self.file).finish()
    }
}

fn memfd() -> io::Result<File> {
    // SAFETY: a valid NUL-terminated name; memfd_create returns a new fd
    // that we own, or -1.
    let fd = unsafe { libc::memfd_create(c"mxfs-client-state".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

impl Keep {
    /// A new, empty state file.
    pub fn create() -> io::Result<Keep> {
        let file = memfd()?;
        file.set_len(FILE_SIZE)?;
        let keep = Keep {
            file,
            alloc: Mutex::new(Alloc {
                req_free: (0..REQ_SLOTS).rev().collect(),
                ..Alloc::default()
            }),
            session: new_session(),
        };
        keep.set_init(&[])?;
        Ok(keep)
    }

    /// Take over the state a dead daemon left in `fd`.
    pub fn open(fd: OwnedFd) -> io::Result<(Keep, Kept)> {
        let file = File::from(fd);
        let mut head = vec![0; HEADER as usize];
        file.read_exact_at(&mut head, 0)?;
        let h = decode_header(&head).map_err(io::Error::other)?;
        let mut kept = Kept {
            init: h.init,
            ..Kept::default()
        };
        let mut alloc = Alloc {
            node_hwm: h.node_hwm,
            open_hwm: h.open_hwm,
            init_len: kept.init.len() as u32,
            init_check: check32(&kept.init),
            ..Alloc::default()
        };
        let mut buf = vec![0; NODE_SLOT as usize];
        for i in (0..h.node_hwm).rev() {
            file.read_exact_at(&mut buf, Region::Nodes.at(i))?;
            match decode_node(&buf) {
                Ok(Some((node, handle))) => kept.nodes.push((i, node, handle)),
                Ok(None) => alloc.node_free.push(i),
                Err(_) => {
                    kept.corrupt += 1;
                    alloc.node_free.push(i);
                }
            }
        }
        let mut buf = vec![0; OPEN_SLOT as usize];
        for i in (0..h.open_hwm).rev() {
            file.read_exact_at(&mut buf, Region::Opens.at(i))?;
            match decode_open(&buf) {
                Ok(Some(r)) => kept.opens.push((i, r)),
                Ok(None) => alloc.open_free.push(i),
                Err(_) => {
                    kept.corrupt += 1;
                    alloc.open_free.push(i);
                }
            }
        }
        let mut head = vec![0; REQ_HEAD as usize];
        for i in (0..REQ_SLOTS).rev() {
            let at = Region::Requests.at(i);
            file.read_exact_at(&mut head, at)?;
            match decode_request_head(&head) {
                Ok(Some((unique, len))) => {
                    let mut body = vec![0; len];
                    file.read_exact_at(&mut body, at + REQ_HEAD)?;
                    alloc.req_of.insert(unique, i);
                    kept.requests.push((unique, body));
                }
                Ok(None) => alloc.req_free.push(i),
                Err(_) => {
                    kept.corrupt += 1;
                    alloc.req_free.push(i);
                }
            }
        }
        kept.requests.sort_by_key(|(u, _)| *u);
        let keep = Keep {
            file,
            alloc: Mutex::new(alloc),
            session: if h.session == 0 {
                new_session()
            } else {
                h.session
            },
        };
        if h.session == 0 {
            keep.write_header(&keep.lock())?;
        }
        Ok((keep, kept))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The connection's session id: the same after a restart.
    pub fn session(&self) -> u64 {
        self.session
    }

    fn lock(&self) -> MutexGuard<'_, Alloc> {
        self.alloc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write the header's fields (not the INIT request) from `a`.
    fn write_header(&self, a: &Alloc) -> io::Result<()> {
        let mut b = Vec::with_capacity(28);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&a.init_len.to_le_bytes());
        b.extend_from_slice(&a.node_hwm.to_le_bytes());
        b.extend_from_slice(&a.open_hwm.to_le_bytes());
        b.extend_from_slice(&a.init_check.to_le_bytes());
        b.resize(SESSION_AT, 0);
        b.extend_from_slice(&self.session.to_le_bytes());
        self.file.write_all_at(&b, 0)
    }

    /// The kernel's INIT request of this connection.
    pub fn set_init(&self, init: &[u8]) -> io::Result<()> {
        if init.len() > INIT_MAX {
            return Err(io::Error::other("FUSE INIT request larger than its slot"));
        }
        let mut a = self.lock();
        // the INIT first: the header that names it comes after
        self.file.write_all_at(init, INIT_AT as u64)?;
        a.init_len = init.len() as u32;
        a.init_check = check32(init);
        self.write_header(&a)
    }

    fn trouble(&self, a: &mut Alloc, e: io::Error) {
        if !a.warned_io {
            a.warned_io = true;
            warn!("FUSE client: cannot keep state for a restarted daemon: {e}");
        }
    }

    /// Write node `node` → `h` into `slot`, or a new slot; the slot used,
    /// `None` when nothing could be kept.
    pub fn put_node(&self, slot: Option<u32>, node: u64, h: &Handle) -> Option<u32> {
        let mut a = self.lock();
        self.put(&mut a, Region::Nodes, slot, &encode_node(node, h))
    }

    /// Write `bytes` into `slot` of `region`, or into a new slot; the slot
    /// used, `None` (and the slot freed) when the write failed.
    fn put(&self, a: &mut Alloc, region: Region, slot: Option<u32>, bytes: &[u8]) -> Option<u32> {
        let slot = match slot {
            Some(s) => s,
            None => self.take(a, region)?,
        };
        match self.file.write_all_at(bytes, region.at(slot)) {
            Ok(()) => Some(slot),
            Err(e) => {
                self.trouble(a, e);
                self.free(a, region, slot);
                None
            }
        }
    }

    pub fn drop_node(&self, slot: u32) {
        let mut a = self.lock();
        self.free(&mut a, Region::Nodes, slot);
    }

    /// Write `r` into `slot`, or a new slot; the slot used.
    pub fn put_open(&self, slot: Option<u32>, r: &OpenRecord) -> Option<u32> {
        let mut a = self.lock();
        let Some(bytes) = encode_open(r) else {
            if !a.warned_full {
                a.warned_full = true;
                warn!(
                    groups = r.creds.groups.len(),
                    "FUSE client: an opener with more than {OPEN_GROUPS} groups: its open file \
                     does not survive a restart of mxfsd"
                );
            }
            if let Some(s) = slot {
                self.free(&mut a, Region::Opens, s);
            }
            return None;
        };
        self.put(&mut a, Region::Opens, slot, &bytes)
    }

    pub fn drop_open(&self, slot: u32) {
        let mut a = self.lock();
        self.free(&mut a, Region::Opens, slot);
    }

    /// A request read from the kernel, before it is served.
    pub fn request_read(&self, unique: u64, req: &[u8]) {
        let mut a = self.lock();
        if req.len() > REQ_MAX {
            return;
        }
        let Some(slot) = a.req_free.pop() else {
            if !a.warned_full {
                a.warned_full = true;
                warn!(
                    "FUSE client: more than {REQ_SLOTS} requests in flight: the others would \
                     not be answered after a restart of mxfsd"
                );
            }
            return;
        };
        let at = Region::Requests.at(slot);
        let r = self.file.write_all_at(req, at + REQ_HEAD).and_then(|()| {
            self.file
                .write_all_at(&encode_request_head(unique, req.len()), at)
        });
        match r {
            Ok(()) => {
                a.req_of.insert(unique, slot);
            }
            Err(e) => {
                a.req_free.push(slot);
                self.trouble(&mut a, e);
            }
        }
    }

    /// A request's answer went to the kernel.
    pub fn request_answered(&self, unique: u64) {
        let mut a = self.lock();
        if let Some(slot) = a.req_of.remove(&unique) {
            self.free(&mut a, Region::Requests, slot);
        }
    }

    /// Requests kept and not answered yet.
    #[cfg(test)]
    pub fn requests_in_flight(&self) -> usize {
        self.lock().req_of.len()
    }

    fn take(&self, a: &mut Alloc, region: Region) -> Option<u32> {
        let (free, hwm, max) = match region {
            Region::Nodes => (&mut a.node_free, &mut a.node_hwm, NODE_SLOTS),
            Region::Opens => (&mut a.open_free, &mut a.open_hwm, OPEN_SLOTS),
            Region::Requests => return a.req_free.pop(),
        };
        if let Some(s) = free.pop() {
            return Some(s);
        }
        if *hwm >= max {
            if !a.warned_full {
                a.warned_full = true;
                warn!(
                    "FUSE client: the state kept for a restart is full ({} slots): newer \
                     nodes and open files would be lost by a restart of mxfsd",
                    max
                );
            }
            return None;
        }
        let s = *hwm;
        *hwm += 1;
        // The header counts the slot before the slot is written, so that
        // a restart reads it.
        if let Err(e) = self.write_header(a) {
            self.trouble(a, e);
            return None;
        }
        Some(s)
    }

    fn free(&self, a: &mut Alloc, region: Region, slot: u32) {
        if let Err(e) = self.file.write_all_at(&0u32.to_le_bytes(), region.at(slot)) {
            // the slot stays out of use rather than be trusted again
            self.trouble(a, e);
            return;
        }
        match region {
            Region::Nodes => a.node_free.push(slot),
            Region::Opens => a.open_free.push(slot),
            Region::Requests => a.req_free.push(slot),
        }
    }
}

#[derive(Clone, Copy)]
enum Region {
    Nodes,
    Opens,
    Requests,
}

impl Region {
    /// Where slot `slot` of this region starts in the file.
    fn at(self, slot: u32) -> u64 {
        let (base, size) = match self {
            Region::Nodes => (NODES_AT, NODE_SLOT),
            Region::Opens => (OPENS_AT, OPEN_SLOT),
            Region::Requests => (REQS_AT, REQ_SLOT),
        };
        base + size * u64::from(slot)
    }
}

/// Fuzzing: every decoder of a kept slot, on any bytes.
#[cfg(test)]
pub fn fuzz_decode(b: &[u8]) -> bool {
    let h = decode_header(b).is_ok();
    let n = decode_node(b).is_ok();
    let o = decode_open(b).is_ok();
    let r = decode_request_head(b).is_ok();
    h || n || o || r
}

/// Seeds for the fuzzer: one slot of each kind, and a header.
#[cfg(test)]
pub fn fuzz_seeds() -> Vec<Vec<u8>> {
    let handle = Handle {
        handle_type: 0x81,
        bytes: vec![7; 20],
    };
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&5u32.to_le_bytes());
    header.extend_from_slice(&6u32.to_le_bytes());
    header.extend_from_slice(&check32(b"abc").to_le_bytes());
    header.resize(INIT_AT, 0);
    header.extend_from_slice(b"abc");
    let open = encode_open(&OpenRecord {
        fh: 3,
        owner_fh: 9,
        flags: libc::O_RDWR,
        dir: false,
        creds: Creds {
            uid: 1000,
            gid: 100,
            pid: 42,
            groups: vec![4, 24],
        },
        handle: handle.clone(),
    })
    .unwrap_or_default();
    vec![
        header,
        encode_node(12, &handle),
        open,
        encode_request_head(0x10, 80),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(n: u8, len: usize) -> Handle {
        Handle {
            handle_type: 0x81,
            bytes: vec![n; len],
        }
    }

    fn open_record(fh: u64, groups: usize) -> OpenRecord {
        OpenRecord {
            fh,
            owner_fh: fh + 100,
            flags: libc::O_WRONLY | libc::O_APPEND,
            dir: fh.is_multiple_of(2),
            creds: Creds {
                uid: 1000,
                gid: 1000,
                pid: 4242,
                groups: (0..groups as u32).collect(),
            },
            handle: handle(fh as u8, 1 + fh as usize % MAX_HANDLE),
        }
    }

    #[test]
    fn slots_round_trip() {
        let h = handle(3, MAX_HANDLE);
        assert_eq!(decode_node(&encode_node(77, &h)), Ok(Some((77, h))));
        for groups in [0, 1, OPEN_GROUPS] {
            let r = open_record(5, groups);
            let b = encode_open(&r).unwrap();
            assert!(b.len() <= OPEN_SLOT as usize);
            assert_eq!(decode_open(&b), Ok(Some(r)));
        }
        assert_eq!(encode_open(&open_record(5, OPEN_GROUPS + 1)), None);
        assert_eq!(
            decode_request_head(&encode_request_head(0x1234, 4096)),
            Ok(Some((0x1234, 4096)))
        );
        assert_eq!(decode_node(&[0; 256]), Ok(None));
        assert_eq!(decode_open(&[0; 1024]), Ok(None));
        assert_eq!(decode_request_head(&[0; 24]), Ok(None));
    }

    #[test]
    fn a_flipped_byte_is_refused() {
        let b = encode_node(77, &handle(3, 20));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            // Padding past the handle is not covered by anything a reader
            // uses; everything else must be refused or read unchanged.
            match decode_node(&c) {
                Err(_) | Ok(None) => {}
                Ok(Some((n, h))) => assert!(n == 77 && h == handle(3, 20), "byte {i}"),
            }
        }
        assert!(decode_header(b"NOTMXFS!").is_err());
        assert!(decode_request_head(&[1, 0, 0, 0]).is_err());
    }

    #[test]
    fn a_restart_reads_back_what_was_kept() {
        let k = Keep::create().unwrap();
        k.set_init(b"init request").unwrap();
        let s1 = k.put_node(None, 10, &handle(1, 16)).unwrap();
        let s2 = k.put_node(None, 11, &handle(2, 16)).unwrap();
        let s3 = k.put_node(None, 12, &handle(3, 16)).unwrap();
        k.drop_node(s2);
        // an update in place
        assert_eq!(k.put_node(Some(s3), 12, &handle(4, 16)), Some(s3));
        let o1 = k.put_open(None, &open_record(1, 2)).unwrap();
        let o2 = k.put_open(None, &open_record(2, 0)).unwrap();
        k.drop_open(o1);
        k.request_read(0x20, b"first");
        k.request_read(0x22, &vec![9; REQ_MAX]);
        k.request_read(0x24, b"third");
        k.request_answered(0x20);
        assert_eq!(k.requests_in_flight(), 2);

        let session = k.session();
        assert_ne!(session, 0);
        let fd = k.fd().try_clone_to_owned().unwrap();
        drop(k);
        let (k2, kept) = Keep::open(fd).unwrap();
        assert_eq!(kept.init, b"init request");
        // the same session after the restart: a repeated request has
        // the same origin
        assert_eq!(k2.session(), session);
        assert_ne!(Keep::create().unwrap().session(), session);
        let mut nodes: Vec<_> = kept.nodes.iter().map(|(s, n, _)| (*s, *n)).collect();
        nodes.sort();
        assert_eq!(nodes, vec![(s1, 10), (s3, 12)]);
        assert!(kept
            .nodes
            .iter()
            .any(|(_, n, h)| *n == 12 && *h == handle(4, 16)));
        assert_eq!(kept.opens.len(), 1);
        assert_eq!(kept.opens[0], (o2, open_record(2, 0)));
        let uniques: Vec<u64> = kept.requests.iter().map(|(u, _)| *u).collect();
        assert_eq!(uniques, vec![0x22, 0x24]);
        assert_eq!(kept.requests[0].1.len(), REQ_MAX);
        assert_eq!(kept.corrupt, 0);
        // the new daemon answers them, and reuses the freed slots
        k2.request_answered(0x22);
        k2.request_answered(0x24);
        assert_eq!(k2.requests_in_flight(), 0);
        assert_eq!(k2.put_node(None, 13, &handle(5, 8)), Some(s2));
    }

    #[test]
    fn requests_beyond_the_slots_are_not_kept() {
        let k = Keep::create().unwrap();
        for u in 0..u64::from(REQ_SLOTS) + 5 {
            k.request_read(u * 2, b"r");
        }
        assert_eq!(k.requests_in_flight(), REQ_SLOTS as usize);
        k.request_answered(0);
        k.request_read(1000, b"r");
        assert_eq!(k.requests_in_flight(), REQ_SLOTS as usize);
    }

    #[test]
    fn a_file_that_is_not_ours_is_refused() {
        let f = memfd().unwrap();
        f.set_len(8192).unwrap();
        let e = Keep::open(OwnedFd::from(f)).unwrap_err();
        assert!(e.to_string().contains("bad magic"), "{e}");
    }
}
