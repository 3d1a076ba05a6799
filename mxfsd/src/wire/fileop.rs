//! Forwarded file operations: the typed requests a client's mxfsd sends
//! to the owner and the owner's replies, and their bytes inside the
//! [`FileOp`] / [`FileOpReply`] container of the peer wire.
//!
//! This module owns the *meaning* of the container's `opcode` and
//! `payload` (and of the reply's `errno`); the container, framing, epoch
//! and request id belong to [`super`].  The request set maps one-to-one
//! onto the FUSE low-level operations (fuser 0.18's `Filesystem`), so a
//! client's FUSE server forwards each call as it comes; fcntl and flock
//! locks are not among them (they go through the DLM, see
//! `crate::file_locks`).  Two requests are not FUSE calls: [`Op::Root`],
//! and [`Op::Fiemap`], which the kernel module asks a client's mxfsd for
//! through a private getxattr (see `crate::fuse_client`).
//!
//! Objects are named by [`Handle`]: the owner's XFS file handle
//! (`name_to_handle_at`), opaque to the client and valid on any owner of
//! the same filesystem.  Open files and directories are named by an
//! owner-side open id (`fh`); those die with the owner that made them.
//!
//! Request payload, all integers big-endian: the caller's [`Creds`]
//! (uid, gid, pid, group count u32, groups), then the op's fields in
//! declaration order.  Reply: `errno` 0 and a payload starting with a
//! reply kind byte, or a positive `errno` and an empty payload
//! ([`FileReply::Errno`]).  Byte strings carry a u16 (names, targets,
//! xattr values) or u32 (data) length; options a 0/1 byte.  Every
//! length, count and flag is checked on decode, before allocating, and
//! the encoding is canonical: decoding then encoding gives back the same
//! bytes (the fuzz entry points check this).

use super::{put_u16, put_u32, put_u64, FileOp, FileOpReply, Rd, Result, WireError};

/// Largest file handle (the kernel's `MAX_HANDLE_SZ`).
pub const MAX_HANDLE: usize = 128;
/// Longest name in a directory (`NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Longest symlink target (`PATH_MAX` less its NUL).
pub const MAX_SYMLINK: usize = 4095;
/// Longest xattr name (`XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest xattr value and xattr name list (`XATTR_SIZE_MAX`,
/// `XATTR_LIST_MAX`).
pub const MAX_XATTR: usize = 65536;
/// Largest read or write: FUSE's max_write with 256 pages.  A frame
/// (2 MiB) holds it with room to spare.
pub const MAX_IO: usize = 1 << 20;
/// Most supplementary groups (`NGROUPS_MAX`).
pub const MAX_GROUPS: usize = 65536;
/// Most entries in one readdir reply.
pub const MAX_DIRENTS: usize = 65536;
/// Most extents in one fiemap reply: as many as the largest getxattr
/// value holds ([`MAX_XATTR`] at `MXFS_FIEMAP_EXTENT_SIZE`, 32 bytes, each),
/// the module's way of asking (see `crate::fuse_client`).
pub const MAX_EXTENTS: usize = 2048;

/// `rename` flags the owner accepts (`RENAME_NOREPLACE | EXCHANGE | WHITEOUT`).
pub const RENAME_FLAGS: u32 = 1 | 2 | 4;

/// The caller of a forwarded operation, as the client's kernel saw it.
/// FUSE requests carry uid, gid and pid only: the client reads the
/// supplementary groups from `/proc/<pid>/status`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub groups: Vec<u32>,
}

/// An XFS file handle: `struct file_handle`'s type and bytes (native
/// endian inside, interpreted only by the owner's kernel).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle {
    pub handle_type: i32,
    /// 1 to [`MAX_HANDLE`] bytes.
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timespec {
    pub sec: i64,
    /// Below 1e9.
    pub nsec: u32,
}

/// A time to set: the owner's clock now, or a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(Timespec),
}

/// What a setattr changes (FUSE's `setattr` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    /// Linux cannot set a ctime: any change sets it to now.  Carried so
    /// the mapping is one-to-one; the owner ignores it.
    pub ctime: Option<Timespec>,
}

const SA_MODE: u32 = 1;
const SA_UID: u32 = 2;
const SA_GID: u32 = 4;
const SA_SIZE: u32 = 8;
const SA_ATIME: u32 = 16;
const SA_ATIME_NOW: u32 = 32;
const SA_MTIME: u32 = 64;
const SA_MTIME_NOW: u32 = 128;
const SA_CTIME: u32 = 256;
const SA_ALL: u32 = 511;

/// One forwarded call: who asks, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRequest {
    pub creds: Creds,
    pub op: Op,
}

/// The operations, one per FUSE low-level call.  `name`s are single
/// path components (no `/`, no NUL, 1 to [`MAX_NAME`] bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Lookup {
        parent: Handle,
        name: Vec<u8>,
    },
    /// Handles are stateless: the owner only acknowledges.  A client
    /// need not send it at all.
    Forget {
        handle: Handle,
        nlookup: u64,
    },
    Getattr {
        handle: Handle,
        fh: Option<u64>,
    },
    Setattr {
        handle: Handle,
        fh: Option<u64>,
        set: SetAttr,
    },
    Readlink {
        handle: Handle,
    },
    Mknod {
        parent: Handle,
        name: Vec<u8>,
        mode: u32,
        umask: u32,
        /// Userspace `dev_t` (glibc `makedev`; FUSE's 32-bit rdev is the
        /// same number for majors below 4096).
        rdev: u64,
    },
    Mkdir {
        parent: Handle,
        name: Vec<u8>,
        mode: u32,
        umask: u32,
    },
    Unlink {
        parent: Handle,
        name: Vec<u8>,
    },
    Rmdir {
        parent: Handle,
        name: Vec<u8>,
    },
    Symlink {
        parent: Handle,
        name: Vec<u8>,
        /// 1 to [`MAX_SYMLINK`] bytes, no NUL.
        target: Vec<u8>,
    },
    Rename {
        parent: Handle,
        name: Vec<u8>,
        newparent: Handle,
        newname: Vec<u8>,
        /// Within [`RENAME_FLAGS`].
        flags: u32,
    },
    Link {
        handle: Handle,
        newparent: Handle,
        newname: Vec<u8>,
    },
    Open {
        handle: Handle,
        flags: i32,
    },
    Read {
        fh: u64,
        offset: u64,
        /// At most [`MAX_IO`].
        size: u32,
    },
    Write {
        fh: u64,
        offset: u64,
        /// At most [`MAX_IO`] bytes.
        data: Vec<u8>,
        write_flags: u32,
    },
    Flush {
        fh: u64,
    },
    Release {
        fh: u64,
        flags: i32,
        flush: bool,
    },
    Fsync {
        fh: u64,
        datasync: bool,
    },
    Opendir {
        handle: Handle,
        flags: i32,
    },
    Readdir {
        fh: u64,
        /// 0, or a [`Dirent::next`] from an earlier reply.
        offset: u64,
        /// At most [`MAX_IO`]: roughly the bytes of entries wanted.
        size: u32,
    },
    Releasedir {
        fh: u64,
    },
    Fsyncdir {
        fh: u64,
        datasync: bool,
    },
    Statfs {
        handle: Handle,
    },
    /// The volume root's handle and attributes: how a client's FUSE root
    /// learns the handle that names it (not a FUSE call of its own).
    Root,
    Setxattr {
        handle: Handle,
        name: Vec<u8>,
        /// At most [`MAX_XATTR`] bytes.
        value: Vec<u8>,
        flags: i32,
        position: u32,
    },
    /// `size` 0 asks for the value's size ([`FileReply::XattrSize`]).
    Getxattr {
        handle: Handle,
        name: Vec<u8>,
        size: u32,
    },
    Listxattr {
        handle: Handle,
        size: u32,
    },
    Removexattr {
        handle: Handle,
        name: Vec<u8>,
    },
    Access {
        handle: Handle,
        mask: i32,
    },
    Create {
        parent: Handle,
        name: Vec<u8>,
        mode: u32,
        umask: u32,
        flags: i32,
    },
    Fallocate {
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    },
    Lseek {
        fh: u64,
        offset: i64,
        whence: i32,
    },
    CopyFileRange {
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
        flags: u32,
    },
    /// An unnamed file in `parent` (O_TMPFILE).
    Tmpfile {
        parent: Handle,
        mode: u32,
        umask: u32,
        flags: i32,
    },
    /// The extents of an open file (`FS_IOC_FIEMAP`), which FUSE has no
    /// request for: the module asks through a private getxattr.
    Fiemap {
        fh: u64,
        start: u64,
        length: u64,
        /// `FIEMAP_FLAG_*`, passed on as they are (the owner's kernel
        /// answers EBADR for those it does not support).
        flags: u32,
        /// At most [`MAX_EXTENTS`].
        max_extents: u32,
    },
    /// A file's birth time (statx `STATX_BTIME`), which FUSE before 6.6
    /// does not carry: the module asks through a private getxattr.
    /// ENODATA when the owner's filesystem has none.
    Birthtime {
        handle: Handle,
    },
}

/// What FUSE needs of an inode (and `generation`, from the handle, for
/// FUSE entry replies; 0 when the handle type is not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// Userspace `dev_t`.
    pub rdev: u64,
    pub blksize: u32,
    pub generation: u64,
}

/// One extent of a fiemap reply (`struct fiemap_extent` less its
/// reserved fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    /// `FIEMAP_EXTENT_*`.
    pub flags: u32,
}

/// One directory entry of a readdir reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirent {
    pub ino: u64,
    /// The cookie that resumes the listing after this entry.
    pub next: u64,
    /// `d_type` (DT_*).
    pub kind: u8,
    /// 1 to [`MAX_NAME`] bytes, no `/` or NUL.
    pub name: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileReply {
    /// Done, nothing to return (unlink, rename, release, fsync, ...).
    Ok,
    /// lookup, mknod, mkdir, symlink, link.
    Entry {
        handle: Handle,
        attr: Attr,
    },
    /// getattr, setattr.
    Attr(Attr),
    /// read, readlink, getxattr, listxattr: at most [`MAX_IO`] bytes.
    Data(Vec<u8>),
    /// write, copy_file_range.
    Written(u32),
    /// open, opendir.
    Opened {
        fh: u64,
    },
    /// create, tmpfile.
    Created {
        handle: Handle,
        attr: Attr,
        fh: u64,
    },
    /// readdir; empty at the end of the directory.
    Dirents(Vec<Dirent>),
    Statfs(Statfs),
    /// getxattr or listxattr with size 0.
    XattrSize(u32),
    /// lseek.
    Offset(i64),
    /// fiemap: at most the `max_extents` asked for (and [`MAX_EXTENTS`]);
    /// fewer means there are no more.
    Extents(Vec<Extent>),
    /// birthtime.
    Birthtime(Timespec),
    /// A positive errno, carried in the container's `errno` field.
    Errno(i32),
}

/// Request opcodes (the container's `opcode`).  Numbers are the wire
/// format: never reuse one.
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const MKNOD: u32 = 6;
    pub const MKDIR: u32 = 7;
    pub const UNLINK: u32 = 8;
    pub const RMDIR: u32 = 9;
    pub const SYMLINK: u32 = 10;
    pub const RENAME: u32 = 11;
    pub const LINK: u32 = 12;
    pub const OPEN: u32 = 13;
    pub const READ: u32 = 14;
    pub const WRITE: u32 = 15;
    pub const FLUSH: u32 = 16;
    pub const RELEASE: u32 = 17;
    pub const FSYNC: u32 = 18;
    pub const OPENDIR: u32 = 19;
    pub const READDIR: u32 = 20;
    pub const RELEASEDIR: u32 = 21;
    pub const FSYNCDIR: u32 = 22;
    pub const STATFS: u32 = 23;
    pub const SETXATTR: u32 = 24;
    pub const GETXATTR: u32 = 25;
    pub const LISTXATTR: u32 = 26;
    pub const REMOVEXATTR: u32 = 27;
    pub const ACCESS: u32 = 28;
    pub const CREATE: u32 = 29;
    // 30 and 31 were GETLK and SETLK (peer protocol version 3 and
    // earlier): fcntl and flock locks now go through the DLM.
    pub const FALLOCATE: u32 = 32;
    pub const LSEEK: u32 = 33;
    pub const COPY_FILE_RANGE: u32 = 34;
    pub const TMPFILE: u32 = 35;
    pub const ROOT: u32 = 36;
    /// Peer protocol version 5.
    pub const FIEMAP: u32 = 37;
    /// Peer protocol version 5.
    pub const BIRTHTIME: u32 = 38;

    /// Whether a request of this kind changes the filesystem, so that
    /// running it twice differs from running it once (an O_APPEND write
    /// appends twice, a create answers EEXIST): what a client sends with
    /// an origin and the owner keeps the answer of (`wire::Origin`).
    /// Reads, lookups, opens and releases are left out: running them
    /// again is harmless.
    pub fn changes_state(opcode: u32) -> bool {
        matches!(
            opcode,
            SETATTR
                | MKNOD
                | MKDIR
                | UNLINK
                | RMDIR
                | SYMLINK
                | RENAME
                | LINK
                | WRITE
                | SETXATTR
                | REMOVEXATTR
                | CREATE
                | FALLOCATE
                | COPY_FILE_RANGE
                | TMPFILE
        )
    }
}

// Reply kinds (first payload byte of a successful reply).
const R_OK: u8 = 0;
const R_ENTRY: u8 = 1;
const R_ATTR: u8 = 2;
const R_DATA: u8 = 3;
const R_WRITTEN: u8 = 4;
const R_OPENED: u8 = 5;
const R_CREATED: u8 = 6;
const R_DIRENTS: u8 = 7;
const R_STATFS: u8 = 8;
const R_XATTR_SIZE: u8 = 9;
const R_OFFSET: u8 = 10;
// 11 was a getlk's lock (peer protocol version 3 and earlier).
const R_EXTENTS: u8 = 12;
const R_BIRTHTIME: u8 = 13;

/// Smallest encoded dirent (ino, next, kind, name length, one byte),
/// for bounding a count before allocating.
const MIN_DIRENT: usize = 8 + 8 + 1 + 2 + 1;
/// An encoded extent: logical, physical, length, flags.
const EXTENT: usize = 8 + 8 + 8 + 4;

// ---- checks shared by encoder and decoder ----

fn check_handle(h: &Handle) -> Result<()> {
    if h.bytes.is_empty() || h.bytes.len() > MAX_HANDLE {
        return Err(WireError::Invalid("file handle"));
    }
    Ok(())
}

/// A single path component.
fn check_name(n: &[u8]) -> Result<()> {
    if n.is_empty() || n.len() > MAX_NAME || n.iter().any(|&c| c == b'/' || c == 0) {
        return Err(WireError::Invalid("file name"));
    }
    Ok(())
}

fn check_xattr_name(n: &[u8]) -> Result<()> {
    if n.is_empty() || n.len() > MAX_XATTR_NAME || n.contains(&0) {
        return Err(WireError::Invalid("xattr name"));
    }
    Ok(())
}

fn check_target(t: &[u8]) -> Result<()> {
    if t.is_empty() || t.len() > MAX_SYMLINK || t.contains(&0) {
        return Err(WireError::Invalid("symlink target"));
    }
    Ok(())
}

fn check_io(n: usize) -> Result<()> {
    if n > MAX_IO {
        return Err(WireError::Invalid("I/O size"));
    }
    Ok(())
}

fn check_extent_count(n: usize) -> Result<()> {
    if n > MAX_EXTENTS {
        return Err(WireError::Invalid("extent count"));
    }
    Ok(())
}

fn check_time(t: &Timespec) -> Result<()> {
    if t.nsec >= 1_000_000_000 {
        return Err(WireError::Invalid("nanoseconds"));
    }
    Ok(())
}

// ---- encoding ----

struct Wr(Vec<u8>);

impl Wr {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        put_u32(&mut self.0, v);
    }
    fn i32(&mut self, v: i32) {
        put_u32(&mut self.0, v as u32);
    }
    fn u64(&mut self, v: u64) {
        put_u64(&mut self.0, v);
    }
    fn i64(&mut self, v: i64) {
        put_u64(&mut self.0, v as u64);
    }
    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
        }
    }
    /// A u16-length byte string; callers checked its bound.
    fn bytes16(&mut self, b: &[u8]) {
        put_u16(&mut self.0, b.len() as u16);
        self.0.extend_from_slice(b);
    }
    /// A u32-length byte string; callers checked its bound.
    fn bytes32(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn handle(&mut self, h: &Handle) -> Result<()> {
        check_handle(h)?;
        self.i32(h.handle_type);
        self.u8(h.bytes.len() as u8);
        self.0.extend_from_slice(&h.bytes);
        Ok(())
    }
    fn name(&mut self, n: &[u8]) -> Result<()> {
        check_name(n)?;
        self.bytes16(n);
        Ok(())
    }
    fn xattr_name(&mut self, n: &[u8]) -> Result<()> {
        check_xattr_name(n)?;
        self.bytes16(n);
        Ok(())
    }
    fn time(&mut self, t: &Timespec) -> Result<()> {
        check_time(t)?;
        self.i64(t.sec);
        self.u32(t.nsec);
        Ok(())
    }
    fn attr(&mut self, a: &Attr) -> Result<()> {
        for v in [a.ino, a.size, a.blocks] {
            self.u64(v);
        }
        for t in [&a.atime, &a.mtime, &a.ctime] {
            self.time(t)?;
        }
        for v in [a.mode, a.nlink, a.uid, a.gid] {
            self.u32(v);
        }
        self.u64(a.rdev);
        self.u32(a.blksize);
        self.u64(a.generation);
        Ok(())
    }
}

// ---- decoding: extensions of the wire's bounds-checked reader ----

impl Rd<'_> {
    fn i32(&mut self, what: &'static str) -> Result<i32> {
        self.u32(what).map(|v| v as i32)
    }
    fn i64(&mut self, what: &'static str) -> Result<i64> {
        self.u64(what).map(|v| v as i64)
    }
    fn bool(&mut self, what: &'static str) -> Result<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid(what)),
        }
    }
    fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>> {
        Ok(if self.bool(what)? {
            Some(self.u64(what)?)
        } else {
            None
        })
    }
    fn bytes16_max(&mut self, max: usize, what: &'static str) -> Result<Vec<u8>> {
        let n = usize::from(self.u16(what)?);
        if n > max {
            return Err(WireError::Invalid(what));
        }
        Ok(self.take(n, what)?.to_vec())
    }
    fn bytes32_max(&mut self, max: usize, what: &'static str) -> Result<Vec<u8>> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(WireError::Invalid(what));
        }
        Ok(self.take(n, what)?.to_vec())
    }
    /// A count of items at least `min_each` bytes long, refused when the
    /// rest of the payload could not hold them (before allocating).
    fn count(&mut self, max: usize, min_each: usize, what: &'static str) -> Result<usize> {
        let n = self.u32(what)? as usize;
        if n > max || n.saturating_mul(min_each) > self.b.len() - self.pos {
            return Err(WireError::Invalid(what));
        }
        Ok(n)
    }
    fn handle(&mut self) -> Result<Handle> {
        let handle_type = self.i32("file handle")?;
        let n = usize::from(self.u8("file handle")?);
        let h = Handle {
            handle_type,
            bytes: self.take(n, "file handle")?.to_vec(),
        };
        check_handle(&h)?;
        Ok(h)
    }
    fn name(&mut self) -> Result<Vec<u8>> {
        let n = self.bytes16_max(MAX_NAME, "file name")?;
        check_name(&n)?;
        Ok(n)
    }
    fn xattr_name(&mut self) -> Result<Vec<u8>> {
        let n = self.bytes16_max(MAX_XATTR_NAME, "xattr name")?;
        check_xattr_name(&n)?;
        Ok(n)
    }
    fn time(&mut self) -> Result<Timespec> {
        let t = Timespec {
            sec: self.i64("time")?,
            nsec: self.u32("time")?,
        };
        check_time(&t)?;
        Ok(t)
    }
    fn attr(&mut self) -> Result<Attr> {
        Ok(Attr {
            ino: self.u64("attr")?,
            size: self.u64("attr")?,
            blocks: self.u64("attr")?,
            atime: self.time()?,
            mtime: self.time()?,
            ctime: self.time()?,
            mode: self.u32("attr")?,
            nlink: self.u32("attr")?,
            uid: self.u32("attr")?,
            gid: self.u32("attr")?,
            rdev: self.u64("attr")?,
            blksize: self.u32("attr")?,
            generation: self.u64("attr")?,
        })
    }
    fn end(&self) -> Result<()> {
        match self.b.len() - self.pos {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

fn set_bits(s: &SetAttr) -> u32 {
    let mut m = 0;
    let mut bit = |on: bool, b: u32| {
        if on {
            m |= b
        }
    };
    bit(s.mode.is_some(), SA_MODE);
    bit(s.uid.is_some(), SA_UID);
    bit(s.gid.is_some(), SA_GID);
    bit(s.size.is_some(), SA_SIZE);
    bit(matches!(s.atime, Some(TimeSet::At(_))), SA_ATIME);
    bit(matches!(s.atime, Some(TimeSet::Now)), SA_ATIME_NOW);
    bit(matches!(s.mtime, Some(TimeSet::At(_))), SA_MTIME);
    bit(matches!(s.mtime, Some(TimeSet::Now)), SA_MTIME_NOW);
    bit(s.ctime.is_some(), SA_CTIME);
    m
}

impl Op {
    pub fn opcode(&self) -> u32 {
        use opcode::*;
        match self {
            Op::Lookup { .. } => LOOKUP,
            Op::Forget { .. } => FORGET,
            Op::Getattr { .. } => GETATTR,
            Op::Setattr { .. } => SETATTR,
            Op::Readlink { .. } => READLINK,
            Op::Mknod { .. } => MKNOD,
            Op::Mkdir { .. } => MKDIR,
            Op::Unlink { .. } => UNLINK,
            Op::Rmdir { .. } => RMDIR,
            Op::Symlink { .. } => SYMLINK,
            Op::Rename { .. } => RENAME,
            Op::Link { .. } => LINK,
            Op::Open { .. } => OPEN,
            Op::Read { .. } => READ,
            Op::Write { .. } => WRITE,
            Op::Flush { .. } => FLUSH,
            Op::Release { .. } => RELEASE,
            Op::Fsync { .. } => FSYNC,
            Op::Opendir { .. } => OPENDIR,
            Op::Readdir { .. } => READDIR,
            Op::Releasedir { .. } => RELEASEDIR,
            Op::Fsyncdir { .. } => FSYNCDIR,
            Op::Statfs { .. } => STATFS,
            Op::Root => ROOT,
            Op::Setxattr { .. } => SETXATTR,
            Op::Getxattr { .. } => GETXATTR,
            Op::Listxattr { .. } => LISTXATTR,
            Op::Removexattr { .. } => REMOVEXATTR,
            Op::Access { .. } => ACCESS,
            Op::Create { .. } => CREATE,
            Op::Fallocate { .. } => FALLOCATE,
            Op::Lseek { .. } => LSEEK,
            Op::CopyFileRange { .. } => COPY_FILE_RANGE,
            Op::Tmpfile { .. } => TMPFILE,
            Op::Fiemap { .. } => FIEMAP,
            Op::Birthtime { .. } => BIRTHTIME,
        }
    }

    fn encode(&self, w: &mut Wr) -> Result<()> {
        match self {
            Op::Lookup { parent, name }
            | Op::Unlink { parent, name }
            | Op::Rmdir { parent, name } => {
                w.handle(parent)?;
                w.name(name)?;
            }
            Op::Forget { handle, nlookup } => {
                w.handle(handle)?;
                w.u64(*nlookup);
            }
            Op::Getattr { handle, fh } => {
                w.handle(handle)?;
                w.opt_u64(*fh);
            }
            Op::Setattr { handle, fh, set } => {
                w.handle(handle)?;
                w.opt_u64(*fh);
                w.u32(set_bits(set));
                for v in [set.mode, set.uid, set.gid].into_iter().flatten() {
                    w.u32(v);
                }
                if let Some(s) = set.size {
                    w.u64(s);
                }
                for t in [set.atime, set.mtime] {
                    if let Some(TimeSet::At(t)) = t {
                        w.time(&t)?;
                    }
                }
                if let Some(t) = &set.ctime {
                    w.time(t)?;
                }
            }
            Op::Readlink { handle } | Op::Statfs { handle } => w.handle(handle)?,
            Op::Root => {}
            Op::Mknod {
                parent,
                name,
                mode,
                umask,
                rdev,
            } => {
                w.handle(parent)?;
                w.name(name)?;
                w.u32(*mode);
                w.u32(*umask);
                w.u64(*rdev);
            }
            Op::Mkdir {
                parent,
                name,
                mode,
                umask,
            } => {
                w.handle(parent)?;
                w.name(name)?;
                w.u32(*mode);
                w.u32(*umask);
            }
            Op::Symlink {
                parent,
                name,
                target,
            } => {
                w.handle(parent)?;
                w.name(name)?;
                check_target(target)?;
                w.bytes16(target);
            }
            Op::Rename {
                parent,
                name,
                newparent,
                newname,
                flags,
            } => {
                if flags & !RENAME_FLAGS != 0 {
                    return Err(WireError::Invalid("rename flags"));
                }
                w.handle(parent)?;
                w.name(name)?;
                w.handle(newparent)?;
                w.name(newname)?;
                w.u32(*flags);
            }
            Op::Link {
                handle,
                newparent,
                newname,
            } => {
                w.handle(handle)?;
                w.handle(newparent)?;
                w.name(newname)?;
            }
            Op::Open { handle, flags } | Op::Opendir { handle, flags } => {
                w.handle(handle)?;
                w.i32(*flags);
            }
            Op::Read { fh, offset, size } | Op::Readdir { fh, offset, size } => {
                check_io(*size as usize)?;
                w.u64(*fh);
                w.u64(*offset);
                w.u32(*size);
            }
            Op::Write {
                fh,
                offset,
                data,
                write_flags,
            } => {
                check_io(data.len())?;
                w.u64(*fh);
                w.u64(*offset);
                w.bytes32(data);
                w.u32(*write_flags);
            }
            Op::Flush { fh } => w.u64(*fh),
            Op::Release { fh, flags, flush } => {
                w.u64(*fh);
                w.i32(*flags);
                w.bool(*flush);
            }
            Op::Fsync { fh, datasync } | Op::Fsyncdir { fh, datasync } => {
                w.u64(*fh);
                w.bool(*datasync);
            }
            Op::Releasedir { fh } => w.u64(*fh),
            Op::Setxattr {
                handle,
                name,
                value,
                flags,
                position,
            } => {
                if value.len() > MAX_XATTR {
                    return Err(WireError::Invalid("xattr value"));
                }
                w.handle(handle)?;
                w.xattr_name(name)?;
                w.bytes32(value);
                w.i32(*flags);
                w.u32(*position);
            }
            Op::Getxattr { handle, name, size } => {
                w.handle(handle)?;
                w.xattr_name(name)?;
                w.u32(*size);
            }
            Op::Listxattr { handle, size } => {
                w.handle(handle)?;
                w.u32(*size);
            }
            Op::Removexattr { handle, name } => {
                w.handle(handle)?;
                w.xattr_name(name)?;
            }
            Op::Access { handle, mask } => {
                w.handle(handle)?;
                w.i32(*mask);
            }
            Op::Create {
                parent,
                name,
                mode,
                umask,
                flags,
            } => {
                w.handle(parent)?;
                w.name(name)?;
                w.u32(*mode);
                w.u32(*umask);
                w.i32(*flags);
            }
            Op::Fallocate {
                fh,
                offset,
                length,
                mode,
            } => {
                w.u64(*fh);
                w.u64(*offset);
                w.u64(*length);
                w.i32(*mode);
            }
            Op::Lseek { fh, offset, whence } => {
                w.u64(*fh);
                w.i64(*offset);
                w.i32(*whence);
            }
            Op::CopyFileRange {
                fh_in,
                offset_in,
                fh_out,
                offset_out,
                len,
                flags,
            } => {
                for v in [*fh_in, *offset_in, *fh_out, *offset_out, *len] {
                    w.u64(v);
                }
                w.u32(*flags);
            }
            Op::Tmpfile {
                parent,
                mode,
                umask,
                flags,
            } => {
                w.handle(parent)?;
                w.u32(*mode);
                w.u32(*umask);
                w.i32(*flags);
            }
            Op::Fiemap {
                fh,
                start,
                length,
                flags,
                max_extents,
            } => {
                check_extent_count(*max_extents as usize)?;
                w.u64(*fh);
                w.u64(*start);
                w.u64(*length);
                w.u32(*flags);
                w.u32(*max_extents);
            }
            Op::Birthtime { handle } => w.handle(handle)?,
        }
        Ok(())
    }

    fn decode(opcode: u32, r: &mut Rd<'_>) -> Result<Op> {
        use opcode::*;
        Ok(match opcode {
            LOOKUP => Op::Lookup {
                parent: r.handle()?,
                name: r.name()?,
            },
            FORGET => Op::Forget {
                handle: r.handle()?,
                nlookup: r.u64("forget")?,
            },
            GETATTR => Op::Getattr {
                handle: r.handle()?,
                fh: r.opt_u64("fh")?,
            },
            SETATTR => {
                let handle = r.handle()?;
                let fh = r.opt_u64("fh")?;
                let m = r.u32("setattr mask")?;
                if m & !SA_ALL != 0
                    || m & (SA_ATIME | SA_ATIME_NOW) == SA_ATIME | SA_ATIME_NOW
                    || m & (SA_MTIME | SA_MTIME_NOW) == SA_MTIME | SA_MTIME_NOW
                {
                    return Err(WireError::Invalid("setattr mask"));
                }
                let mut opt32 = |bit: u32| -> Result<Option<u32>> {
                    if m & bit != 0 {
                        r.u32("setattr").map(Some)
                    } else {
                        Ok(None)
                    }
                };
                let mode = opt32(SA_MODE)?;
                let uid = opt32(SA_UID)?;
                let gid = opt32(SA_GID)?;
                let size = if m & SA_SIZE != 0 {
                    Some(r.u64("setattr")?)
                } else {
                    None
                };
                let mut time = |at: u32, now: u32| -> Result<Option<TimeSet>> {
                    Ok(if m & at != 0 {
                        Some(TimeSet::At(r.time()?))
                    } else if m & now != 0 {
                        Some(TimeSet::Now)
                    } else {
                        None
                    })
                };
                let atime = time(SA_ATIME, SA_ATIME_NOW)?;
                let mtime = time(SA_MTIME, SA_MTIME_NOW)?;
                let ctime = if m & SA_CTIME != 0 {
                    Some(r.time()?)
                } else {
                    None
                };
                Op::Setattr {
                    handle,
                    fh,
                    set: SetAttr {
                        mode,
                        uid,
                        gid,
                        size,
                        atime,
                        mtime,
                        ctime,
                    },
                }
            }
            READLINK => Op::Readlink {
                handle: r.handle()?,
            },
            MKNOD => Op::Mknod {
                parent: r.handle()?,
                name: r.name()?,
                mode: r.u32("mknod")?,
                umask: r.u32("mknod")?,
                rdev: r.u64("mknod")?,
            },
            MKDIR => Op::Mkdir {
                parent: r.handle()?,
                name: r.name()?,
                mode: r.u32("mkdir")?,
                umask: r.u32("mkdir")?,
            },
            UNLINK => Op::Unlink {
                parent: r.handle()?,
                name: r.name()?,
            },
            RMDIR => Op::Rmdir {
                parent: r.handle()?,
                name: r.name()?,
            },
            SYMLINK => {
                let parent = r.handle()?;
                let name = r.name()?;
                let target = r.bytes16_max(MAX_SYMLINK, "symlink target")?;
                check_target(&target)?;
                Op::Symlink {
                    parent,
                    name,
                    target,
                }
            }
            RENAME => {
                let op = Op::Rename {
                    parent: r.handle()?,
                    name: r.name()?,
                    newparent: r.handle()?,
                    newname: r.name()?,
                    flags: r.u32("rename flags")?,
                };
                if let Op::Rename { flags, .. } = &op {
                    if flags & !RENAME_FLAGS != 0 {
                        return Err(WireError::Invalid("rename flags"));
                    }
                }
                op
            }
            LINK => Op::Link {
                handle: r.handle()?,
                newparent: r.handle()?,
                newname: r.name()?,
            },
            OPEN => Op::Open {
                handle: r.handle()?,
                flags: r.i32("open flags")?,
            },
            READ | READDIR => {
                let fh = r.u64("fh")?;
                let offset = r.u64("offset")?;
                let size = r.u32("size")?;
                check_io(size as usize)?;
                if opcode == READ {
                    Op::Read { fh, offset, size }
                } else {
                    Op::Readdir { fh, offset, size }
                }
            }
            WRITE => Op::Write {
                fh: r.u64("fh")?,
                offset: r.u64("offset")?,
                data: r.bytes32_max(MAX_IO, "write data")?,
                write_flags: r.u32("write flags")?,
            },
            FLUSH => Op::Flush { fh: r.u64("fh")? },
            RELEASE => Op::Release {
                fh: r.u64("fh")?,
                flags: r.i32("flags")?,
                flush: r.bool("flush")?,
            },
            FSYNC => Op::Fsync {
                fh: r.u64("fh")?,
                datasync: r.bool("datasync")?,
            },
            OPENDIR => Op::Opendir {
                handle: r.handle()?,
                flags: r.i32("open flags")?,
            },
            RELEASEDIR => Op::Releasedir { fh: r.u64("fh")? },
            FSYNCDIR => Op::Fsyncdir {
                fh: r.u64("fh")?,
                datasync: r.bool("datasync")?,
            },
            STATFS => Op::Statfs {
                handle: r.handle()?,
            },
            ROOT => Op::Root,
            SETXATTR => Op::Setxattr {
                handle: r.handle()?,
                name: r.xattr_name()?,
                value: r.bytes32_max(MAX_XATTR, "xattr value")?,
                flags: r.i32("xattr flags")?,
                position: r.u32("xattr position")?,
            },
            GETXATTR => Op::Getxattr {
                handle: r.handle()?,
                name: r.xattr_name()?,
                size: r.u32("size")?,
            },
            LISTXATTR => Op::Listxattr {
                handle: r.handle()?,
                size: r.u32("size")?,
            },
            REMOVEXATTR => Op::Removexattr {
                handle: r.handle()?,
                name: r.xattr_name()?,
            },
            ACCESS => Op::Access {
                handle: r.handle()?,
                mask: r.i32("access mask")?,
            },
            CREATE => Op::Create {
                parent: r.handle()?,
                name: r.name()?,
                mode: r.u32("create")?,
                umask: r.u32("create")?,
                flags: r.i32("create")?,
            },
            FALLOCATE => Op::Fallocate {
                fh: r.u64("fh")?,
                offset: r.u64("offset")?,
                length: r.u64("length")?,
                mode: r.i32("mode")?,
            },
            LSEEK => Op::Lseek {
                fh: r.u64("fh")?,
                offset: r.i64("offset")?,
                whence: r.i32("whence")?,
            },
            COPY_FILE_RANGE => Op::CopyFileRange {
                fh_in: r.u64("copy")?,
                offset_in: r.u64("copy")?,
                fh_out: r.u64("copy")?,
                offset_out: r.u64("copy")?,
                len: r.u64("copy")?,
                flags: r.u32("copy")?,
            },
            TMPFILE => Op::Tmpfile {
                parent: r.handle()?,
                mode: r.u32("tmpfile")?,
                umask: r.u32("tmpfile")?,
                flags: r.i32("tmpfile")?,
            },
            FIEMAP => {
                let op = Op::Fiemap {
                    fh: r.u64("fh")?,
                    start: r.u64("fiemap")?,
                    length: r.u64("fiemap")?,
                    flags: r.u32("fiemap")?,
                    max_extents: r.u32("extent count")?,
                };
                if let Op::Fiemap { max_extents, .. } = &op {
                    check_extent_count(*max_extents as usize)?;
                }
                op
            }
            BIRTHTIME => Op::Birthtime {
                handle: r.handle()?,
            },
            _ => return Err(WireError::Invalid("file op opcode")),
        })
    }
}

impl FileRequest {
    pub fn opcode(&self) -> u32 {
        self.op.opcode()
    }

    /// The container payload.  Refuses what the decoder would refuse.
    pub fn encode_payload(&self) -> Result<Vec<u8>> {
        let c = &self.creds;
        if c.groups.len() > MAX_GROUPS {
            return Err(WireError::Invalid("group count"));
        }
        let mut w = Wr(Vec::with_capacity(64));
        w.u32(c.uid);
        w.u32(c.gid);
        w.u32(c.pid);
        w.u32(c.groups.len() as u32);
        for g in &c.groups {
            w.u32(*g);
        }
        self.op.encode(&mut w)?;
        Ok(w.0)
    }

    pub fn decode(opcode: u32, payload: &[u8]) -> Result<Self> {
        let mut r = Rd { b: payload, pos: 0 };
        let uid = r.u32("creds")?;
        let gid = r.u32("creds")?;
        let pid = r.u32("creds")?;
        let n = r.count(MAX_GROUPS, 4, "group count")?;
        let groups = (0..n)
            .map(|_| r.u32("groups"))
            .collect::<Result<Vec<u32>>>()?;
        let op = Op::decode(opcode, &mut r)?;
        r.end()?;
        Ok(FileRequest {
            creds: Creds {
                uid,
                gid,
                pid,
                groups,
            },
            op,
        })
    }

    /// This request in its peer-message container.
    pub fn to_file_op(&self, owner_epoch: u64, request_id: u64) -> Result<FileOp> {
        Ok(FileOp {
            owner_epoch,
            request_id,
            origin: Default::default(),
            opcode: self.opcode(),
            payload: self.encode_payload()?,
        })
    }

    pub fn from_file_op(f: &FileOp) -> Result<Self> {
        Self::decode(f.opcode, &f.payload)
    }
}

impl FileReply {
    /// The container's errno: 0 unless this is [`FileReply::Errno`].
    pub fn errno(&self) -> i32 {
        match self {
            FileReply::Errno(e) => *e,
            _ => 0,
        }
    }

    /// The container payload (empty for an errno).
    pub fn encode_payload(&self) -> Result<Vec<u8>> {
        let mut w = Wr(Vec::with_capacity(64));
        match self {
            FileReply::Errno(e) => {
                if *e <= 0 {
                    return Err(WireError::Invalid("errno"));
                }
                return Ok(Vec::new());
            }
            FileReply::Ok => w.u8(R_OK),
            FileReply::Entry { handle, attr } => {
                w.u8(R_ENTRY);
                w.handle(handle)?;
                w.attr(attr)?;
            }
            FileReply::Attr(a) => {
                w.u8(R_ATTR);
                w.attr(a)?;
            }
            FileReply::Data(d) => {
                check_io(d.len())?;
                w.u8(R_DATA);
                w.bytes32(d);
            }
            FileReply::Written(n) => {
                w.u8(R_WRITTEN);
                w.u32(*n);
            }
            FileReply::Opened { fh } => {
                w.u8(R_OPENED);
                w.u64(*fh);
            }
            FileReply::Created { handle, attr, fh } => {
                w.u8(R_CREATED);
                w.handle(handle)?;
                w.attr(attr)?;
                w.u64(*fh);
            }
            FileReply::Dirents(d) => {
                if d.len() > MAX_DIRENTS {
                    return Err(WireError::Invalid("dirent count"));
                }
                w.u8(R_DIRENTS);
                w.u32(d.len() as u32);
                for e in d {
                    w.u64(e.ino);
                    w.u64(e.next);
                    w.u8(e.kind);
                    w.name(&e.name)?;
                }
            }
            FileReply::Statfs(s) => {
                w.u8(R_STATFS);
                for v in [s.blocks, s.bfree, s.bavail, s.files, s.ffree] {
                    w.u64(v);
                }
                for v in [s.bsize, s.namelen, s.frsize] {
                    w.u32(v);
                }
            }
            FileReply::XattrSize(n) => {
                w.u8(R_XATTR_SIZE);
                w.u32(*n);
            }
            FileReply::Offset(o) => {
                w.u8(R_OFFSET);
                w.i64(*o);
            }
            FileReply::Extents(x) => {
                check_extent_count(x.len())?;
                w.u8(R_EXTENTS);
                w.u32(x.len() as u32);
                for e in x {
                    w.u64(e.logical);
                    w.u64(e.physical);
                    w.u64(e.length);
                    w.u32(e.flags);
                }
            }
            FileReply::Birthtime(t) => {
                w.u8(R_BIRTHTIME);
                w.time(t)?;
            }
        }
        Ok(w.0)
    }

    pub fn decode(errno: i32, payload: &[u8]) -> Result<Self> {
        if errno != 0 {
            if errno < 0 {
                return Err(WireError::Invalid("errno"));
            }
            if !payload.is_empty() {
                return Err(WireError::Trailing(payload.len()));
            }
            return Ok(FileReply::Errno(errno));
        }
        let mut r = Rd { b: payload, pos: 0 };
        let reply = match r.u8("reply kind")? {
            R_OK => FileReply::Ok,
            R_ENTRY => FileReply::Entry {
                handle: r.handle()?,
                attr: r.attr()?,
            },
            R_ATTR => FileReply::Attr(r.attr()?),
            R_DATA => FileReply::Data(r.bytes32_max(MAX_IO, "data")?),
            R_WRITTEN => FileReply::Written(r.u32("written")?),
            R_OPENED => FileReply::Opened { fh: r.u64("fh")? },
            R_CREATED => FileReply::Created {
                handle: r.handle()?,
                attr: r.attr()?,
                fh: r.u64("fh")?,
            },
            R_DIRENTS => {
                let n = r.count(MAX_DIRENTS, MIN_DIRENT, "dirent count")?;
                let mut d = Vec::with_capacity(n);
                for _ in 0..n {
                    d.push(Dirent {
                        ino: r.u64("dirent")?,
                        next: r.u64("dirent")?,
                        kind: r.u8("dirent")?,
                        name: r.name()?,
                    });
                }
                FileReply::Dirents(d)
            }
            R_STATFS => FileReply::Statfs(Statfs {
                blocks: r.u64("statfs")?,
                bfree: r.u64("statfs")?,
                bavail: r.u64("statfs")?,
                files: r.u64("statfs")?,
                ffree: r.u64("statfs")?,
                bsize: r.u32("statfs")?,
                namelen: r.u32("statfs")?,
                frsize: r.u32("statfs")?,
            }),
            R_XATTR_SIZE => FileReply::XattrSize(r.u32("xattr size")?),
            R_OFFSET => FileReply::Offset(r.i64("offset")?),
            R_EXTENTS => {
                let n = r.count(MAX_EXTENTS, EXTENT, "extent count")?;
                let mut x = Vec::with_capacity(n);
                for _ in 0..n {
                    x.push(Extent {
                        logical: r.u64("extent")?,
                        physical: r.u64("extent")?,
                        length: r.u64("extent")?,
                        flags: r.u32("extent")?,
                    });
                }
                FileReply::Extents(x)
            }
            R_BIRTHTIME => FileReply::Birthtime(r.time()?),
            _ => return Err(WireError::Invalid("reply kind")),
        };
        r.end()?;
        Ok(reply)
    }

    /// This reply in its peer-message container.
    pub fn to_file_op_reply(&self, owner_epoch: u64, request_id: u64) -> Result<FileOpReply> {
        Ok(FileOpReply {
            owner_epoch,
            request_id,
            errno: self.errno(),
            payload: self.encode_payload()?,
        })
    }

    pub fn from_file_op_reply(f: &FileOpReply) -> Result<Self> {
        Self::decode(f.errno, &f.payload)
    }
}

/// Fuzz entry point: `bytes` = opcode (u32, big-endian) + payload.
/// Decoding never panics; a decoded request must encode back to the
/// same bytes (the encoding is canonical), else this panics so the fuzz
/// runner reports it.
#[cfg(test)]
pub fn fuzz_decode_request(bytes: &[u8]) -> Option<FileRequest> {
    let (op, payload) = split_u32(bytes)?;
    let req = FileRequest::decode(op, payload).ok()?;
    let again = req.encode_payload().expect("a decoded request encodes");
    assert_eq!(again, payload, "file request encoding is not canonical");
    Some(req)
}

/// Fuzz entry point: `bytes` = errno (u32, big-endian) + payload; as
/// [`fuzz_decode_request`] for replies.
#[cfg(test)]
pub fn fuzz_decode_reply(bytes: &[u8]) -> Option<FileReply> {
    let (errno, payload) = split_u32(bytes)?;
    let reply = FileReply::decode(i32::try_from(errno).ok()?, payload).ok()?;
    let again = reply.encode_payload().expect("a decoded reply encodes");
    assert_eq!(again, payload, "file reply encoding is not canonical");
    Some(reply)
}

#[cfg(test)]
fn split_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let head = bytes.get(..4)?;
    Some((
        u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
        &bytes[4..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn handle() -> impl Strategy<Value = Handle> {
        (any::<i32>(), vec(any::<u8>(), 1..=MAX_HANDLE))
            .prop_map(|(handle_type, bytes)| Handle { handle_type, bytes })
    }
    fn name() -> impl Strategy<Value = Vec<u8>> {
        vec(
            any::<u8>().prop_filter("component", |c| *c != b'/' && *c != 0),
            1..=MAX_NAME,
        )
    }
    fn xname() -> impl Strategy<Value = Vec<u8>> {
        vec(1u8..=255, 1..=MAX_XATTR_NAME)
    }
    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        // mostly short, sometimes at the bound
        prop_oneof![vec(any::<u8>(), 0..64), Just(vec![0xa5; max])]
    }
    fn time() -> impl Strategy<Value = Timespec> {
        (any::<i64>(), 0u32..1_000_000_000).prop_map(|(sec, nsec)| Timespec { sec, nsec })
    }
    fn timeset() -> impl Strategy<Value = TimeSet> {
        prop_oneof![Just(TimeSet::Now), time().prop_map(TimeSet::At)]
    }
    fn setattr() -> impl Strategy<Value = SetAttr> {
        (
            any::<Option<u32>>(),
            any::<Option<u32>>(),
            any::<Option<u32>>(),
            any::<Option<u64>>(),
            proptest::option::of(timeset()),
            proptest::option::of(timeset()),
            proptest::option::of(time()),
        )
            .prop_map(|(mode, uid, gid, size, atime, mtime, ctime)| SetAttr {
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                ctime,
            })
    }
    fn attr() -> impl Strategy<Value = Attr> {
        (
            any::<(u64, u64, u64)>(),
            (time(), time(), time()),
            any::<(u32, u32, u32, u32, u64, u32, u64)>(),
        )
            .prop_map(
                |(
                    (ino, size, blocks),
                    (atime, mtime, ctime),
                    (mode, nlink, uid, gid, rdev, blksize, generation),
                )| Attr {
                    ino,
                    size,
                    blocks,
                    atime,
                    mtime,
                    ctime,
                    mode,
                    nlink,
                    uid,
                    gid,
                    rdev,
                    blksize,
                    generation,
                },
            )
    }
    fn creds() -> impl Strategy<Value = Creds> {
        (any::<(u32, u32, u32)>(), vec(any::<u32>(), 0..40)).prop_map(
            |((uid, gid, pid), groups)| Creds {
                uid,
                gid,
                pid,
                groups,
            },
        )
    }

    fn op() -> impl Strategy<Value = Op> {
        let a = prop_oneof![
            (handle(), name()).prop_map(|(parent, name)| Op::Lookup { parent, name }),
            (handle(), any::<u64>()).prop_map(|(handle, nlookup)| Op::Forget { handle, nlookup }),
            (handle(), any::<Option<u64>>()).prop_map(|(handle, fh)| Op::Getattr { handle, fh }),
            (handle(), any::<Option<u64>>(), setattr()).prop_map(|(handle, fh, set)| Op::Setattr {
                handle,
                fh,
                set
            }),
            handle().prop_map(|handle| Op::Readlink { handle }),
            (handle(), name(), any::<(u32, u32, u64)>()).prop_map(
                |(parent, name, (mode, umask, rdev))| Op::Mknod {
                    parent,
                    name,
                    mode,
                    umask,
                    rdev
                }
            ),
            (handle(), name(), any::<(u32, u32)>()).prop_map(|(parent, name, (mode, umask))| {
                Op::Mkdir {
                    parent,
                    name,
                    mode,
                    umask,
                }
            }),
            (handle(), name()).prop_map(|(parent, name)| Op::Unlink { parent, name }),
            (handle(), name()).prop_map(|(parent, name)| Op::Rmdir { parent, name }),
            (handle(), name(), vec(1u8..=255, 1..=MAX_SYMLINK)).prop_map(
                |(parent, name, target)| Op::Symlink {
                    parent,
                    name,
                    target
                }
            ),
            (handle(), name(), handle(), name(), 0u32..8).prop_map(
                |(parent, name, newparent, newname, flags)| Op::Rename {
                    parent,
                    name,
                    newparent,
                    newname,
                    flags
                }
            ),
            (handle(), handle(), name()).prop_map(|(handle, newparent, newname)| Op::Link {
                handle,
                newparent,
                newname
            }),
        ];
        let b =
            prop_oneof![
                (handle(), any::<i32>()).prop_map(|(handle, flags)| Op::Open { handle, flags }),
                (any::<(u64, u64)>(), 0..=MAX_IO as u32)
                    .prop_map(|((fh, offset), size)| Op::Read { fh, offset, size }),
                (any::<(u64, u64, u32)>(), bytes(MAX_IO)).prop_map(
                    |((fh, offset, write_flags), data)| Op::Write {
                        fh,
                        offset,
                        data,
                        write_flags
                    }
                ),
                any::<u64>().prop_map(|fh| Op::Flush { fh }),
                any::<(u64, i32, bool)>().prop_map(|(fh, flags, flush)| Op::Release {
                    fh,
                    flags,
                    flush
                }),
                any::<(u64, bool)>().prop_map(|(fh, datasync)| Op::Fsync { fh, datasync }),
                (handle(), any::<i32>()).prop_map(|(handle, flags)| Op::Opendir { handle, flags }),
                (any::<(u64, u64)>(), 0..=MAX_IO as u32)
                    .prop_map(|((fh, offset), size)| Op::Readdir { fh, offset, size }),
                any::<u64>().prop_map(|fh| Op::Releasedir { fh }),
                any::<(u64, bool)>().prop_map(|(fh, datasync)| Op::Fsyncdir { fh, datasync }),
                handle().prop_map(|handle| Op::Statfs { handle }),
                Just(Op::Root),
                (handle(), xname(), bytes(MAX_XATTR), any::<(i32, u32)>()).prop_map(
                    |(handle, name, value, (flags, position))| Op::Setxattr {
                        handle,
                        name,
                        value,
                        flags,
                        position
                    }
                ),
            ];
        let c = prop_oneof![
            (handle(), xname(), any::<u32>()).prop_map(|(handle, name, size)| Op::Getxattr {
                handle,
                name,
                size
            }),
            (handle(), any::<u32>()).prop_map(|(handle, size)| Op::Listxattr { handle, size }),
            (handle(), xname()).prop_map(|(handle, name)| Op::Removexattr { handle, name }),
            (handle(), any::<i32>()).prop_map(|(handle, mask)| Op::Access { handle, mask }),
            (handle(), name(), any::<(u32, u32, i32)>()).prop_map(
                |(parent, name, (mode, umask, flags))| Op::Create {
                    parent,
                    name,
                    mode,
                    umask,
                    flags
                }
            ),
            any::<(u64, u64, u64, i32)>().prop_map(|(fh, offset, length, mode)| Op::Fallocate {
                fh,
                offset,
                length,
                mode
            }),
            any::<(u64, i64, i32)>().prop_map(|(fh, offset, whence)| Op::Lseek {
                fh,
                offset,
                whence
            }),
            any::<(u64, u64, u64, u64, u64, u32)>().prop_map(
                |(fh_in, offset_in, fh_out, offset_out, len, flags)| Op::CopyFileRange {
                    fh_in,
                    offset_in,
                    fh_out,
                    offset_out,
                    len,
                    flags
                }
            ),
            (handle(), any::<(u32, u32, i32)>()).prop_map(|(parent, (mode, umask, flags))| {
                Op::Tmpfile {
                    parent,
                    mode,
                    umask,
                    flags,
                }
            }),
            (any::<(u64, u64, u64, u32)>(), 0..=MAX_EXTENTS as u32).prop_map(
                |((fh, start, length, flags), max_extents)| Op::Fiemap {
                    fh,
                    start,
                    length,
                    flags,
                    max_extents
                }
            ),
            handle().prop_map(|handle| Op::Birthtime { handle }),
        ];
        prop_oneof![a, b, c]
    }

    fn request() -> impl Strategy<Value = FileRequest> {
        (creds(), op()).prop_map(|(creds, op)| FileRequest { creds, op })
    }

    fn dirent() -> impl Strategy<Value = Dirent> {
        (any::<(u64, u64, u8)>(), name()).prop_map(|((ino, next, kind), name)| Dirent {
            ino,
            next,
            kind,
            name,
        })
    }

    fn extent() -> impl Strategy<Value = Extent> {
        any::<(u64, u64, u64, u32)>().prop_map(|(logical, physical, length, flags)| Extent {
            logical,
            physical,
            length,
            flags,
        })
    }

    fn extents() -> impl Strategy<Value = Vec<Extent>> {
        // mostly short, sometimes at the bound
        prop_oneof![
            vec(extent(), 0..20),
            extent().prop_map(|e| vec![e; MAX_EXTENTS]),
        ]
    }

    fn reply() -> impl Strategy<Value = FileReply> {
        prop_oneof![
            Just(FileReply::Ok),
            (handle(), attr()).prop_map(|(handle, attr)| FileReply::Entry { handle, attr }),
            attr().prop_map(FileReply::Attr),
            bytes(MAX_IO).prop_map(FileReply::Data),
            any::<u32>().prop_map(FileReply::Written),
            any::<u64>().prop_map(|fh| FileReply::Opened { fh }),
            (handle(), attr(), any::<u64>()).prop_map(|(handle, attr, fh)| FileReply::Created {
                handle,
                attr,
                fh
            }),
            vec(dirent(), 0..20).prop_map(FileReply::Dirents),
            any::<(u64, u64, u64, u64, u64, u32, u32, u32)>().prop_map(
                |(blocks, bfree, bavail, files, ffree, bsize, namelen, frsize)| {
                    FileReply::Statfs(Statfs {
                        blocks,
                        bfree,
                        bavail,
                        files,
                        ffree,
                        bsize,
                        namelen,
                        frsize,
                    })
                }
            ),
            any::<u32>().prop_map(FileReply::XattrSize),
            any::<i64>().prop_map(FileReply::Offset),
            extents().prop_map(FileReply::Extents),
            time().prop_map(FileReply::Birthtime),
            (1..=i32::MAX).prop_map(FileReply::Errno),
        ]
    }

    fn req_bytes(r: &FileRequest) -> Vec<u8> {
        [&r.opcode().to_be_bytes()[..], &r.encode_payload().unwrap()].concat()
    }
    fn reply_bytes(r: &FileReply) -> Vec<u8> {
        [
            &(r.errno() as u32).to_be_bytes()[..],
            &r.encode_payload().unwrap(),
        ]
        .concat()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_request_round_trips(req in request(), epoch: u64, id: u64) {
            let f = req.to_file_op(epoch, id).unwrap();
            prop_assert_eq!((f.owner_epoch, f.request_id), (epoch, id));
            // through the whole peer frame, not just the payload
            // (the largest write fits a frame)
            let frame = crate::wire::Message::FileOp(f).encode().unwrap();
            let (m, used) = crate::wire::Message::decode_frame(&frame).unwrap().unwrap();
            prop_assert_eq!(used, frame.len());
            let crate::wire::Message::FileOp(back) = m else { panic!("not a FileOp") };
            prop_assert_eq!(FileRequest::from_file_op(&back).unwrap(), req.clone());
            prop_assert_eq!(fuzz_decode_request(&req_bytes(&req)), Some(req));
        }

        #[test]
        fn every_reply_round_trips(reply in reply(), epoch: u64, id: u64) {
            let f = reply.to_file_op_reply(epoch, id).unwrap();
            prop_assert_eq!(f.errno, reply.errno());
            let frame = crate::wire::Message::FileOpReply(f).encode().unwrap();
            let (m, _) = crate::wire::Message::decode_frame(&frame).unwrap().unwrap();
            let crate::wire::Message::FileOpReply(back) = m else { panic!("not a reply") };
            prop_assert_eq!(FileReply::from_file_op_reply(&back).unwrap(), reply.clone());
            prop_assert_eq!(fuzz_decode_reply(&reply_bytes(&reply)), Some(reply));
        }

        #[test]
        fn garbage_never_panics(bytes in vec(any::<u8>(), 0..600)) {
            let _ = fuzz_decode_request(&bytes);
            let _ = fuzz_decode_reply(&bytes);
        }

        #[test]
        fn mutated_requests_never_panic(req in request(), at: usize, byte: u8, cut: usize) {
            let mut b = req_bytes(&req);
            let i = at % b.len();
            b[i] = byte;
            let _ = fuzz_decode_request(&b);
            b.truncate(cut % (b.len() + 1));
            let _ = fuzz_decode_request(&b);
        }

        #[test]
        fn mutated_replies_never_panic(reply in reply(), at: usize, byte: u8, cut: usize) {
            let mut b = reply_bytes(&reply);
            let i = at % b.len();
            b[i] = byte;
            let _ = fuzz_decode_reply(&b);
            b.truncate(cut % (b.len() + 1));
            let _ = fuzz_decode_reply(&b);
        }

        #[test]
        fn truncation_is_an_error(req in request()) {
            let p = req.encode_payload().unwrap();
            for n in 0..p.len() {
                prop_assert!(FileRequest::decode(req.opcode(), &p[..n]).is_err());
            }
            let mut long = p.clone();
            long.push(0);
            prop_assert_eq!(FileRequest::decode(req.opcode(), &long), Err(WireError::Trailing(1)));
        }
    }

    fn root() -> Handle {
        Handle {
            handle_type: 1,
            bytes: vec![2, 0, 0, 0, 7, 0, 0, 0],
        }
    }
    fn creds0() -> Creds {
        Creds {
            uid: 1000,
            gid: 100,
            pid: 42,
            groups: vec![10],
        }
    }

    #[test]
    fn the_lookup_encoding_is_pinned() {
        let req = FileRequest {
            creds: creds0(),
            op: Op::Lookup {
                parent: root(),
                name: b"a".to_vec(),
            },
        };
        let expect: Vec<u8> = [
            &[0, 0, 3, 0xe8][..], // uid
            &[0, 0, 0, 100],      // gid
            &[0, 0, 0, 42],       // pid
            &[0, 0, 0, 1],        // one group
            &[0, 0, 0, 10],
            &[0, 0, 0, 1], // handle type
            &[8, 2, 0, 0, 0, 7, 0, 0, 0],
            &[0, 1],
            b"a",
        ]
        .concat();
        assert_eq!(req.opcode(), opcode::LOOKUP);
        assert_eq!(req.encode_payload().unwrap(), expect);
        assert_eq!(FileRequest::decode(opcode::LOOKUP, &expect).unwrap(), req);
        // an errno reply is the container's errno and nothing else
        let e = FileReply::Errno(2).to_file_op_reply(1, 2).unwrap();
        assert_eq!((e.errno, e.payload.len()), (2, 0));
    }

    #[test]
    fn encoders_refuse_what_decoders_refuse() {
        let with = |op: Op| FileRequest {
            creds: creds0(),
            op,
        };
        let bad = [
            Op::Lookup {
                parent: root(),
                name: b"a/b".to_vec(),
            },
            Op::Lookup {
                parent: root(),
                name: vec![],
            },
            Op::Unlink {
                parent: root(),
                name: vec![b'x'; MAX_NAME + 1],
            },
            Op::Statfs {
                handle: Handle {
                    handle_type: 1,
                    bytes: vec![0; MAX_HANDLE + 1],
                },
            },
            Op::Statfs {
                handle: Handle {
                    handle_type: 1,
                    bytes: vec![],
                },
            },
            Op::Rename {
                parent: root(),
                name: b"a".to_vec(),
                newparent: root(),
                newname: b"b".to_vec(),
                flags: 8,
            },
            Op::Read {
                fh: 1,
                offset: 0,
                size: MAX_IO as u32 + 1,
            },
            Op::Write {
                fh: 1,
                offset: 0,
                data: vec![0; MAX_IO + 1],
                write_flags: 0,
            },
            Op::Symlink {
                parent: root(),
                name: b"l".to_vec(),
                target: b"a\0b".to_vec(),
            },
            Op::Setxattr {
                handle: root(),
                name: b"user.x".to_vec(),
                value: vec![0; MAX_XATTR + 1],
                flags: 0,
                position: 0,
            },
            Op::Setattr {
                handle: root(),
                fh: None,
                set: SetAttr {
                    atime: Some(TimeSet::At(Timespec {
                        sec: 0,
                        nsec: 1_000_000_000,
                    })),
                    ..SetAttr::default()
                },
            },
            Op::Fiemap {
                fh: 1,
                start: 0,
                length: u64::MAX,
                flags: 0,
                max_extents: MAX_EXTENTS as u32 + 1,
            },
        ];
        for op in bad {
            assert!(with(op.clone()).encode_payload().is_err(), "{op:?}");
        }
        assert!(FileReply::Errno(0).encode_payload().is_err());
        assert!(FileReply::Errno(-1).encode_payload().is_err());
        assert!(FileReply::Data(vec![0; MAX_IO + 1])
            .encode_payload()
            .is_err());
        assert!(FileReply::Extents(vec![Extent::default(); MAX_EXTENTS + 1])
            .encode_payload()
            .is_err());
        // decoders: unknown opcode and reply kind, an errno with a payload,
        // both "now" and a time for one field, a non-0/1 bool
        let p = with(Op::Releasedir { fh: 1 }).encode_payload().unwrap();
        assert!(FileRequest::decode(999, &p).is_err());
        // retired: GETLK, SETLK and the getlk reply
        assert!(FileRequest::decode(30, &p).is_err());
        assert!(FileRequest::decode(31, &p).is_err());
        assert!(FileReply::decode(0, &[11]).is_err());
        assert!(FileReply::decode(0, &[99]).is_err());
        assert!(FileReply::decode(5, &[0]).is_err());
        let mut sa = with(Op::Setattr {
            handle: root(),
            fh: None,
            set: SetAttr {
                atime: Some(TimeSet::Now),
                ..SetAttr::default()
            },
        })
        .encode_payload()
        .unwrap();
        let mask_at = sa.len() - 4;
        sa[mask_at..].copy_from_slice(&(SA_ATIME | SA_ATIME_NOW).to_be_bytes());
        sa.extend_from_slice(&[0; 12]);
        assert_eq!(
            FileRequest::decode(opcode::SETATTR, &sa),
            Err(WireError::Invalid("setattr mask"))
        );
        let mut fs = with(Op::Fsync {
            fh: 1,
            datasync: true,
        })
        .encode_payload()
        .unwrap();
        *fs.last_mut().unwrap() = 2;
        assert!(FileRequest::decode(opcode::FSYNC, &fs).is_err());
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        // a group count of 65536 with no groups behind it
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&(MAX_GROUPS as u32).to_be_bytes());
        assert_eq!(
            FileRequest::decode(opcode::STATFS, &p),
            Err(WireError::Invalid("group count"))
        );
        let mut d = vec![R_DIRENTS];
        d.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            FileReply::decode(0, &d),
            Err(WireError::Invalid("dirent count"))
        );
        let mut data = vec![R_DATA];
        data.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(FileReply::decode(0, &data), Err(WireError::Invalid("data")));
    }

    #[test]
    fn the_fiemap_encoding_is_pinned() {
        let req = FileRequest {
            creds: Creds::default(),
            op: Op::Fiemap {
                fh: 0x0102_0304_0506_0708,
                start: 4096,
                length: u64::MAX,
                flags: 1,
                max_extents: 2,
            },
        };
        let expect: Vec<u8> = [
            &[0u8; 16][..],               // uid, gid, pid, no groups
            &[1, 2, 3, 4, 5, 6, 7, 8],    // fh
            &[0, 0, 0, 0, 0, 0, 0x10, 0], // start
            &[0xff; 8],                   // length
            &[0, 0, 0, 1],                // flags (FIEMAP_FLAG_SYNC)
            &[0, 0, 0, 2],                // max_extents
        ]
        .concat();
        assert_eq!(req.opcode(), opcode::FIEMAP);
        assert_eq!(opcode::FIEMAP, 37);
        assert!(!opcode::changes_state(opcode::FIEMAP));
        assert_eq!(req.encode_payload().unwrap(), expect);
        assert_eq!(FileRequest::decode(opcode::FIEMAP, &expect).unwrap(), req);

        let reply = FileReply::Extents(vec![Extent {
            logical: 0,
            physical: 1 << 20,
            length: 8192,
            flags: 1, // FIEMAP_EXTENT_LAST
        }]);
        let bytes: Vec<u8> = [
            &[R_EXTENTS, 0, 0, 0, 1][..],
            &[0; 8],
            &[0, 0, 0, 0, 0, 0x10, 0, 0],
            &[0, 0, 0, 0, 0, 0, 0x20, 0],
            &[0, 0, 0, 1],
        ]
        .concat();
        assert_eq!(reply.encode_payload().unwrap(), bytes);
        assert_eq!(FileReply::decode(0, &bytes).unwrap(), reply);
        // no extents: the file has none from there on
        assert_eq!(
            FileReply::decode(0, &[R_EXTENTS, 0, 0, 0, 0]).unwrap(),
            FileReply::Extents(vec![])
        );
    }

    #[test]
    fn fiemap_decoding_refuses_bad_counts() {
        // a request for more extents than a reply may carry
        let mut p = FileRequest {
            creds: Creds::default(),
            op: Op::Fiemap {
                fh: 1,
                start: 0,
                length: 1,
                flags: 0,
                max_extents: MAX_EXTENTS as u32,
            },
        }
        .encode_payload()
        .unwrap();
        assert!(FileRequest::decode(opcode::FIEMAP, &p).is_ok());
        let n = p.len();
        p[n - 4..].copy_from_slice(&(MAX_EXTENTS as u32 + 1).to_be_bytes());
        assert_eq!(
            FileRequest::decode(opcode::FIEMAP, &p),
            Err(WireError::Invalid("extent count"))
        );
        p[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(FileRequest::decode(opcode::FIEMAP, &p).is_err());
        // a reply count above the bound, or above what the bytes hold,
        // is refused before allocating
        let head = |n: u32| [&[R_EXTENTS][..], &n.to_be_bytes()].concat();
        for n in [u32::MAX, MAX_EXTENTS as u32 + 1] {
            assert_eq!(
                FileReply::decode(0, &head(n)),
                Err(WireError::Invalid("extent count"))
            );
        }
        let mut two = head(2);
        two.extend_from_slice(&[0; EXTENT * 2 - 1]);
        assert_eq!(
            FileReply::decode(0, &two),
            Err(WireError::Invalid("extent count"))
        );
        two.push(0);
        assert!(FileReply::decode(0, &two).is_ok());
        two.push(0);
        assert_eq!(FileReply::decode(0, &two), Err(WireError::Trailing(1)));
        // the most extents there may be, in one frame
        let full = FileReply::Extents(vec![
            Extent {
                logical: u64::MAX,
                physical: u64::MAX,
                length: u64::MAX,
                flags: u32::MAX,
            };
            MAX_EXTENTS
        ]);
        let f = full.to_file_op_reply(1, 2).unwrap();
        let frame = crate::wire::Message::FileOpReply(f).encode().unwrap();
        assert!(frame.len() <= crate::wire::MAX_FRAME);
    }
}
