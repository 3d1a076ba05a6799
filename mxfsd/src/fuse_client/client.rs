//! The FUSE operations as forwarded calls: each takes the caller's
//! [`Creds`] and FUSE's arguments, builds the [`Op`], forwards it and
//! checks the reply, giving a value or the errno for the kernel.  Kept
//! apart from fuser's reply objects (which only fuser can make) so that
//! it can be tested without a mount.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{Errno, FileAttr, FileType, Generation};
use tracing::{info, warn};

use super::convert::{self, check_handle, unexpected};
use super::creds::Groups;
use super::keep::{Keep, Kept, OpenRecord};
use super::nodes::{Nodes, ROOT};
use super::private::{self, FallocateRequest, FiemapRequest};
use super::Forward;
use crate::uapi::{
    MXFS_BTIME_SIZE, MXFS_FIEMAP_EXTENT_SIZE, MXFS_PRIVATE_XATTR_PREFIX, MXFS_XATTR_BTIME,
    MXFS_XATTR_FALLOCATE, MXFS_XATTR_FIEMAP,
};
use crate::wire::fileop::{
    opcode, Creds, FileReply, FileRequest, Handle, Op, SetAttr, Statfs, MAX_EXTENTS, MAX_IO,
    MAX_NAME, MAX_SYMLINK, MAX_XATTR, MAX_XATTR_NAME, RENAME_FLAGS,
};
use crate::wire::Origin;

// The largest getxattr value holds as many extents as a reply may carry.
const _: () = assert!(MAX_EXTENTS * MXFS_FIEMAP_EXTENT_SIZE == MAX_XATTR);

pub type R<T> = Result<T, Errno>;

/// How many bytes of entries to ask the owner for per readdir.  fuser
/// does not tell the kernel's buffer size; entries that do not fit are
/// fetched again from their cookie by the next readdir.
pub const READDIR_SIZE: u32 = 4096;

/// Flags that must not be repeated when reopening on a new owner.
const NOT_ON_REOPEN: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC;

/// A file or directory open through the FUSE mount.
struct OpenFile {
    handle: Handle,
    /// The open's flags, less [`NOT_ON_REOPEN`].
    flags: i32,
    dir: bool,
    /// The opener: a reopen repeats its permission check, not the
    /// caller's of the moment (the descriptor may have been passed on).
    creds: Creds,
    /// The owner's open id.
    owner_fh: AtomicU64,
    /// One reopen at a time.
    reopen: Mutex<()>,
    /// Our `fh` of it, and its slot in the keep.
    fh: u64,
    slot: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub next: u64,
    pub kind: FileType,
    pub name: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Xattr {
    Size(u32),
    Data(Vec<u8>),
}

pub struct Client<F> {
    fwd: F,
    pub(super) nodes: Nodes,
    opens: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    pub(super) groups: Groups,
    /// What a restarted daemon needs (none in tests).
    keep: Option<Arc<Keep>>,
    /// The origin session of this connection's requests: the kept one,
    /// so that a restarted daemon's repeats match (see [`Forward::call_from`]).
    session: u64,
}

thread_local! {
    /// The kernel's id of the FUSE request this worker thread serves:
    /// set when the request's caller is read ([`serving`]), taken by the
    /// first forwarded call that changes the filesystem (its origin), so
    /// that no later call of the same request, nor of another, reuses it.
    static SERVING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// This thread now serves FUSE request `unique`.
pub(super) fn serving(unique: u64) {
    SERVING.with(|s| s.set(unique));
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one map operation, or (reopen) guards no
    // data at all.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn name(n: &OsStr) -> R<Vec<u8>> {
    let b = n.as_bytes();
    if b.len() > MAX_NAME {
        return Err(Errno::from_i32(libc::ENAMETOOLONG));
    }
    if b.is_empty() || b.contains(&b'/') || b.contains(&0) {
        return Err(Errno::from_i32(libc::EINVAL));
    }
    Ok(b.to_vec())
}

fn xattr_name(n: &OsStr) -> R<Vec<u8>> {
    let b = n.as_bytes();
    if b.is_empty() || b.len() > MAX_XATTR_NAME || b.contains(&0) {
        // what the VFS answers for a name it cannot take
        return Err(Errno::from_i32(libc::ERANGE));
    }
    Ok(b.to_vec())
}

/// A name of the module's private requests (`mxfs.`): never an xattr.
fn is_private(n: &OsStr) -> bool {
    n.as_bytes()
        .starts_with(MXFS_PRIVATE_XATTR_PREFIX.as_bytes())
}

fn ok(op: &'static str, r: FileReply) -> R<()> {
    match r {
        FileReply::Ok => Ok(()),
        r => Err(unexpected(op, &r)),
    }
}

impl<F: Forward> Client<F> {
    /// A client of the volume whose root handle is `root`: one getattr of
    /// it (as root), which must answer a directory.
    pub fn new(fwd: F, root: Handle, keep: Option<Arc<Keep>>) -> io::Result<Client<F>> {
        let creds = Creds {
            uid: 0,
            gid: 0,
            pid: std::process::id(),
            groups: Vec::new(),
        };
        let r = fwd.call(FileRequest {
            creds,
            op: Op::Getattr {
                handle: root.clone(),
                fh: None,
            },
        });
        let attr = match r {
            FileReply::Attr(a) => a,
            FileReply::Errno(e) => return Err(io::Error::from_raw_os_error(e)),
            r => {
                return Err(io::Error::other(format!(
                    "owner answered {} to the root's getattr",
                    convert::reply_kind(&r)
                )))
            }
        };
        if attr.mode & libc::S_IFMT != libc::S_IFDIR || attr.ino == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        Ok(Client {
            fwd,
            nodes: Nodes::with_keep(root, attr.ino, keep.clone()),
            opens: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            groups: Groups::default(),
            session: keep
                .as_ref()
                .map_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0 | 1, |k| k.session()),
            keep,
        })
    }

    /// Take over the nodes and open files a dead daemon kept.
    pub fn restore(&self, kept: &Kept) {
        self.nodes.restore(kept);
        let mut t = lock(&self.opens);
        for (slot, r) in &kept.opens {
            t.insert(
                r.fh,
                Arc::new(OpenFile {
                    handle: r.handle.clone(),
                    flags: r.flags,
                    dir: r.dir,
                    creds: r.creds.clone(),
                    owner_fh: AtomicU64::new(r.owner_fh),
                    reopen: Mutex::new(()),
                    fh: r.fh,
                    slot: Some(*slot),
                }),
            );
        }
        let next = t.keys().max().map_or(1, |m| m + 1);
        self.next_fh.store(next, Ordering::Relaxed);
    }

    /// Keep (or update) an open file for a restarted daemon.
    fn keep_open(&self, f: &OpenFile) -> Option<u32> {
        self.keep.as_ref()?.put_open(
            f.slot,
            &OpenRecord {
                fh: f.fh,
                owner_fh: f.owner_fh.load(Ordering::Acquire),
                flags: f.flags,
                dir: f.dir,
                creds: f.creds.clone(),
                handle: f.handle.clone(),
            },
        )
    }

    fn call(&self, creds: &Creds, op: Op) -> FileReply {
        let changes = opcode::changes_state(op.opcode());
        let req = FileRequest {
            creds: creds.clone(),
            op,
        };
        let unique = if changes {
            SERVING.with(|s| s.replace(0))
        } else {
            0
        };
        if unique == 0 {
            return self.fwd.call(req);
        }
        self.fwd.call_from(
            req,
            Origin {
                session: self.session,
                unique,
            },
        )
    }

    fn handle(&self, node: u64) -> R<Handle> {
        self.nodes.handle(node).ok_or_else(|| {
            // The kernel only names nodes we gave it and have not been
            // told to forget.
            warn!(node, "request for an unknown FUSE node; ESTALE");
            Errno::from_i32(libc::ESTALE)
        })
    }

    /// An entry reply: the node is remembered (one lookup more) before
    /// the kernel hears of it.
    fn entry(&self, op: &'static str, r: FileReply) -> R<(FileAttr, Generation)> {
        match r {
            FileReply::Entry { handle, attr } => self.new_node(op, handle, &attr),
            r => Err(unexpected(op, &r)),
        }
    }

    fn new_node(
        &self,
        op: &'static str,
        handle: Handle,
        attr: &crate::wire::fileop::Attr,
    ) -> R<(FileAttr, Generation)> {
        check_handle(op, &handle)?;
        if attr.ino == 0 {
            // node id 0 is a negative entry to FUSE
            warn!(op, "owner sent inode number 0; EIO");
            return Err(Errno::EIO);
        }
        let node = self.nodes.fuse_ino(attr.ino);
        let fattr = convert::file_attr(op, node, attr)?;
        self.nodes.remember(node, &handle);
        Ok((fattr, Generation(attr.generation)))
    }

    fn attr(&self, op: &'static str, node: u64, r: FileReply) -> R<FileAttr> {
        match r {
            FileReply::Attr(a) => convert::file_attr(op, node, &a),
            r => Err(unexpected(op, &r)),
        }
    }

    // ---- open files ----

    fn add_open(&self, handle: Handle, flags: i32, dir: bool, creds: &Creds, owner_fh: u64) -> u64 {
        let mut f = OpenFile {
            handle,
            flags: flags & !NOT_ON_REOPEN,
            dir,
            creds: creds.clone(),
            owner_fh: AtomicU64::new(owner_fh),
            reopen: Mutex::new(()),
            fh: 0,
            slot: None,
        };
        let mut t = lock(&self.opens);
        let mut fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        while fh == 0 || t.contains_key(&fh) {
            fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        }
        f.fh = fh;
        f.slot = self.keep_open(&f);
        t.insert(fh, Arc::new(f));
        fh
    }

    fn open_file(&self, fh: u64) -> R<Arc<OpenFile>> {
        lock(&self.opens).get(&fh).cloned().ok_or_else(|| {
            warn!(fh, "request for an unknown FUSE file handle");
            Errno::from_i32(libc::EBADF)
        })
    }

    /// The owner's open id of our `fh`, for getattr/setattr (which do
    /// without one).
    fn owner_fh(&self, fh: Option<u64>) -> Option<u64> {
        let fh = fh?;
        lock(&self.opens)
            .get(&fh)
            .map(|f| f.owner_fh.load(Ordering::Acquire))
    }

    /// Open again on the owner, unless someone did since `stale` failed.
    fn reopen(&self, f: &OpenFile, stale: u64) -> R<u64> {
        let _one = lock(&f.reopen);
        let cur = f.owner_fh.load(Ordering::Acquire);
        if cur != stale {
            return Ok(cur);
        }
        let op = if f.dir {
            Op::Opendir {
                handle: f.handle.clone(),
                flags: f.flags,
            }
        } else {
            Op::Open {
                handle: f.handle.clone(),
                flags: f.flags,
            }
        };
        match self.call(&f.creds, op) {
            FileReply::Opened { fh } => {
                info!(old = stale, new = fh, "reopened a file on the owner");
                f.owner_fh.store(fh, Ordering::Release);
                if f.slot.is_some() {
                    // the slot stays the file's: an update in place
                    self.keep_open(f);
                }
                Ok(fh)
            }
            r => Err(unexpected("reopen", &r)),
        }
    }

    /// Forward `op(owner open id)` for our `fh`; on EBADF (the owner does
    /// not know the id: a new owner) reopen and try once more.
    fn on_open(&self, creds: &Creds, fh: u64, op: impl Fn(u64) -> Op) -> R<FileReply> {
        let f = self.open_file(fh)?;
        let used = f.owner_fh.load(Ordering::Acquire);
        let r = self.call(creds, op(used));
        if r != FileReply::Errno(libc::EBADF) {
            return Ok(r);
        }
        let new = self.reopen(&f, used)?;
        match self.call(creds, op(new)) {
            FileReply::Errno(libc::EBADF) => {
                // Our descriptor is valid: EBADF would be a lie.
                warn!(fh, "owner refused a just reopened file; EIO");
                Err(Errno::EIO)
            }
            r => Ok(r),
        }
    }

    // ---- the operations ----

    pub fn lookup(&self, c: &Creds, parent: u64, n: &OsStr) -> R<(FileAttr, Generation)> {
        let op = Op::Lookup {
            parent: self.handle(parent)?,
            name: name(n)?,
        };
        self.entry("lookup", self.call(c, op))
    }

    pub fn forget(&self, node: u64, nlookup: u64) {
        self.nodes.forget(node, nlookup);
    }

    pub fn getattr(&self, c: &Creds, node: u64, fh: Option<u64>) -> R<FileAttr> {
        let op = Op::Getattr {
            handle: self.handle(node)?,
            fh: self.owner_fh(fh),
        };
        self.attr("getattr", node, self.call(c, op))
    }

    pub fn setattr(&self, c: &Creds, node: u64, fh: Option<u64>, set: SetAttr) -> R<FileAttr> {
        let op = Op::Setattr {
            handle: self.handle(node)?,
            fh: self.owner_fh(fh),
            set,
        };
        self.attr("setattr", node, self.call(c, op))
    }

    pub fn readlink(&self, c: &Creds, node: u64) -> R<Vec<u8>> {
        let op = Op::Readlink {
            handle: self.handle(node)?,
        };
        match self.call(c, op) {
            FileReply::Data(d) if !d.is_empty() && d.len() <= MAX_SYMLINK => Ok(d),
            r => Err(unexpected("readlink", &r)),
        }
    }

    pub fn mknod(
        &self,
        c: &Creds,
        parent: u64,
        n: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> R<(FileAttr, Generation)> {
        let op = Op::Mknod {
            parent: self.handle(parent)?,
            name: name(n)?,
            mode,
            umask,
            // FUSE's new_encode_dev number is glibc's dev_t for every
            // device the kernel can name.
            rdev: u64::from(rdev),
        };
        self.entry("mknod", self.call(c, op))
    }

    pub fn mkdir(
        &self,
        c: &Creds,
        parent: u64,
        n: &OsStr,
        mode: u32,
        umask: u32,
    ) -> R<(FileAttr, Generation)> {
        let op = Op::Mkdir {
            parent: self.handle(parent)?,
            name: name(n)?,
            mode,
            umask,
        };
        self.entry("mkdir", self.call(c, op))
    }

    pub fn unlink(&self, c: &Creds, parent: u64, n: &OsStr) -> R<()> {
        let op = Op::Unlink {
            parent: self.handle(parent)?,
            name: name(n)?,
        };
        ok("unlink", self.call(c, op))
    }

    pub fn rmdir(&self, c: &Creds, parent: u64, n: &OsStr) -> R<()> {
        let op = Op::Rmdir {
            parent: self.handle(parent)?,
            name: name(n)?,
        };
        ok("rmdir", self.call(c, op))
    }

    pub fn symlink(
        &self,
        c: &Creds,
        parent: u64,
        n: &OsStr,
        target: &OsStr,
    ) -> R<(FileAttr, Generation)> {
        let t = target.as_bytes();
        if t.len() > MAX_SYMLINK {
            return Err(Errno::from_i32(libc::ENAMETOOLONG));
        }
        if t.is_empty() || t.contains(&0) {
            return Err(Errno::from_i32(libc::ENOENT));
        }
        let op = Op::Symlink {
            parent: self.handle(parent)?,
            name: name(n)?,
            target: t.to_vec(),
        };
        self.entry("symlink", self.call(c, op))
    }

    pub fn rename(
        &self,
        c: &Creds,
        parent: u64,
        n: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> R<()> {
        if flags & !RENAME_FLAGS != 0 {
            return Err(Errno::from_i32(libc::EINVAL));
        }
        let op = Op::Rename {
            parent: self.handle(parent)?,
            name: name(n)?,
            newparent: self.handle(newparent)?,
            newname: name(newname)?,
            flags,
        };
        ok("rename", self.call(c, op))
    }

    pub fn link(
        &self,
        c: &Creds,
        node: u64,
        newparent: u64,
        newname: &OsStr,
    ) -> R<(FileAttr, Generation)> {
        let op = Op::Link {
            handle: self.handle(node)?,
            newparent: self.handle(newparent)?,
            newname: name(newname)?,
        };
        self.entry("link", self.call(c, op))
    }

    pub fn open(&self, c: &Creds, node: u64, flags: i32) -> R<u64> {
        let handle = self.handle(node)?;
        let op = Op::Open {
            handle: handle.clone(),
            flags,
        };
        match self.call(c, op) {
            FileReply::Opened { fh } => Ok(self.add_open(handle, flags, false, c, fh)),
            r => Err(unexpected("open", &r)),
        }
    }

    pub fn opendir(&self, c: &Creds, node: u64, flags: i32) -> R<u64> {
        let handle = self.handle(node)?;
        let op = Op::Opendir {
            handle: handle.clone(),
            flags,
        };
        match self.call(c, op) {
            FileReply::Opened { fh } => Ok(self.add_open(handle, flags, true, c, fh)),
            r => Err(unexpected("opendir", &r)),
        }
    }

    pub fn create(
        &self,
        c: &Creds,
        parent: u64,
        n: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> R<(FileAttr, Generation, u64)> {
        // "/": a FUSE_TMPFILE, passed to fuser as a CREATE (conn.rs)
        let op = if n.as_bytes() == b"/" {
            Op::Tmpfile {
                parent: self.handle(parent)?,
                mode,
                umask,
                flags: flags & !libc::O_TMPFILE,
            }
        } else {
            Op::Create {
                parent: self.handle(parent)?,
                name: name(n)?,
                mode,
                umask,
                flags,
            }
        };
        match self.call(c, op) {
            FileReply::Created { handle, attr, fh } => {
                let (fattr, generation) = match self.new_node("create", handle.clone(), &attr) {
                    Ok(e) => e,
                    Err(e) => {
                        // Do not leave the owner's open behind.
                        self.call(
                            c,
                            Op::Release {
                                fh,
                                flags,
                                flush: false,
                            },
                        );
                        return Err(e);
                    }
                };
                Ok((
                    fattr,
                    generation,
                    self.add_open(handle, flags, false, c, fh),
                ))
            }
            r => Err(unexpected("create", &r)),
        }
    }

    pub fn read(&self, c: &Creds, fh: u64, offset: u64, size: u32) -> R<Vec<u8>> {
        // max_read keeps the kernel within MAX_IO; a short read is legal
        // should it ask for more.
        let size = size.min(MAX_IO as u32);
        match self.on_open(c, fh, |fh| Op::Read { fh, offset, size })? {
            FileReply::Data(d) if d.len() <= size as usize => Ok(d),
            r => Err(unexpected("read", &r)),
        }
    }

    pub fn write(&self, c: &Creds, fh: u64, offset: u64, data: &[u8], write_flags: u32) -> R<u32> {
        // max_write keeps the kernel within MAX_IO; a short write is
        // legal should it send more.
        let data = &data[..data.len().min(MAX_IO)];
        let r = self.on_open(c, fh, |fh| Op::Write {
            fh,
            offset,
            data: data.to_vec(),
            write_flags,
        })?;
        match r {
            FileReply::Written(n) if n as usize <= data.len() => Ok(n),
            r => Err(unexpected("write", &r)),
        }
    }

    pub fn flush(&self, c: &Creds, fh: u64) -> R<()> {
        let f = self.open_file(fh)?;
        let op = Op::Flush {
            fh: f.owner_fh.load(Ordering::Acquire),
        };
        match self.call(c, op) {
            // A new owner that does not know the file has nothing of it
            // to flush: writes went through as they were made.
            FileReply::Ok | FileReply::Errno(libc::EBADF) => Ok(()),
            r => Err(unexpected("flush", &r)),
        }
    }

    /// release and releasedir: the file leaves our table whatever the
    /// owner says (the kernel ignores release errors).
    pub fn release(&self, c: &Creds, fh: u64, flags: i32, flush: bool) -> R<()> {
        let Some(f) = lock(&self.opens).remove(&fh) else {
            warn!(fh, "release of an unknown FUSE file handle");
            return Err(Errno::from_i32(libc::EBADF));
        };
        if let (Some(k), Some(slot)) = (&self.keep, f.slot) {
            k.drop_open(slot);
        }
        let owner_fh = f.owner_fh.load(Ordering::Acquire);
        let op = if f.dir {
            Op::Releasedir { fh: owner_fh }
        } else {
            Op::Release {
                fh: owner_fh,
                flags,
                flush,
            }
        };
        match self.call(c, op) {
            // EBADF: a new owner never had it open
            FileReply::Ok | FileReply::Errno(libc::EBADF) => Ok(()),
            r => Err(unexpected("release", &r)),
        }
    }

    pub fn fsync(&self, c: &Creds, fh: u64, datasync: bool, dir: bool) -> R<()> {
        let r = self.on_open(c, fh, |fh| {
            if dir {
                Op::Fsyncdir { fh, datasync }
            } else {
                Op::Fsync { fh, datasync }
            }
        })?;
        ok("fsync", r)
    }

    pub fn readdir(&self, c: &Creds, node: u64, fh: u64, offset: u64) -> R<Vec<DirEntry>> {
        let r = self.on_open(c, fh, |fh| Op::Readdir {
            fh,
            offset,
            size: READDIR_SIZE,
        })?;
        let FileReply::Dirents(list) = r else {
            return Err(unexpected("readdir", &r));
        };
        let mut out = Vec::with_capacity(list.len());
        for e in list {
            if e.name.is_empty() || e.name.len() > MAX_NAME || e.name.contains(&b'/') {
                warn!("owner sent a malformed directory entry; EIO");
                return Err(Errno::EIO);
            }
            let ino = match e.name.as_slice() {
                b"." => node,
                b".." if node == ROOT => ROOT,
                _ => self.nodes.fuse_ino(e.ino),
            };
            let kind = match convert::dirent_type(e.kind) {
                Some(k) => k,
                // DT_UNKNOWN (a filesystem without d_type): ask.  A plain
                // lookup on the owner, not a FUSE one: no node to count.
                None => self.kind_of(c, node, &e.name),
            };
            out.push(DirEntry {
                ino,
                next: e.next,
                kind,
                name: e.name,
            });
        }
        Ok(out)
    }

    fn kind_of(&self, c: &Creds, dir: u64, n: &[u8]) -> FileType {
        let found = self.handle(dir).ok().and_then(|parent| {
            match self.call(
                c,
                Op::Lookup {
                    parent,
                    name: n.to_vec(),
                },
            ) {
                FileReply::Entry { attr, .. } => convert::file_type(attr.mode),
                _ => None,
            }
        });
        // Gone since the listing: any type will do, a lookup will fail.
        found.unwrap_or(FileType::RegularFile)
    }

    pub fn statfs(&self, c: &Creds, node: u64) -> R<Statfs> {
        let op = Op::Statfs {
            handle: self.handle(node)?,
        };
        match self.call(c, op) {
            FileReply::Statfs(s) => Ok(s),
            r => Err(unexpected("statfs", &r)),
        }
    }

    pub fn setxattr(
        &self,
        c: &Creds,
        node: u64,
        n: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
    ) -> R<()> {
        if is_private(n) {
            if n.as_bytes() == MXFS_XATTR_FALLOCATE.as_bytes() {
                return self.fallocate_request(c, node, value);
            }
            return Err(Errno::from_i32(libc::EOPNOTSUPP));
        }
        if value.len() > MAX_XATTR {
            return Err(Errno::from_i32(libc::E2BIG));
        }
        let op = Op::Setxattr {
            handle: self.handle(node)?,
            name: xattr_name(n)?,
            value: value.to_vec(),
            flags,
            position,
        };
        ok("setxattr", self.call(c, op))
    }

    /// getxattr and listxattr (`name` None): size 0 asks for the size.
    /// A name of the module's private requests (`mxfs.`) is answered
    /// here, never forwarded as an xattr.
    pub fn getxattr(&self, c: &Creds, node: u64, n: Option<&OsStr>, size: u32) -> R<Xattr> {
        if let Some(n) = n.filter(|n| is_private(n)) {
            if n.as_bytes() == MXFS_XATTR_BTIME.as_bytes() {
                return self.btime_request(c, node, size);
            }
            return match n.as_bytes().strip_prefix(MXFS_XATTR_FIEMAP.as_bytes()) {
                Some(args) => self.fiemap_request(c, node, args, size),
                None => Err(Errno::from_i32(libc::EOPNOTSUPP)),
            };
        }
        let handle = self.handle(node)?;
        let size = size.min(MAX_XATTR as u32);
        let (what, op) = match n {
            Some(n) => (
                "getxattr",
                Op::Getxattr {
                    handle,
                    name: xattr_name(n)?,
                    size,
                },
            ),
            None => ("listxattr", Op::Listxattr { handle, size }),
        };
        match self.call(c, op) {
            FileReply::XattrSize(s) if size == 0 => Ok(Xattr::Size(s)),
            FileReply::Data(d) if size > 0 && d.len() <= size as usize => Ok(Xattr::Data(d)),
            r => Err(unexpected(what, &r)),
        }
    }

    pub fn removexattr(&self, c: &Creds, node: u64, n: &OsStr) -> R<()> {
        if is_private(n) {
            return Err(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let op = Op::Removexattr {
            handle: self.handle(node)?,
            name: xattr_name(n)?,
        };
        ok("removexattr", self.call(c, op))
    }

    // ---- the module's private requests ----

    /// Our `fh` of a file of `node` open through this mount (not a
    /// directory) that `want` accepts: the lowest, so the choice is
    /// stable.  EBADF when there is none.
    fn open_of(&self, node: u64, want: impl Fn(&OpenFile) -> bool) -> R<u64> {
        let handle = self.handle(node)?;
        lock(&self.opens)
            .values()
            .filter(|f| !f.dir && f.handle == handle && want(f))
            .map(|f| f.fh)
            .min()
            .ok_or(Errno::from_i32(libc::EBADF))
    }

    /// getxattr `mxfs.fiemap.START.LENGTH.FLAGS` (`args` is what follows
    /// the prefix): as many extents as `size` bytes hold, from the owner's
    /// FIEMAP through an open file of the node.
    fn fiemap_request(&self, c: &Creds, node: u64, args: &[u8], size: u32) -> R<Xattr> {
        let einval = Errno::from_i32(libc::EINVAL);
        let FiemapRequest {
            start,
            length,
            flags,
        } = FiemapRequest::parse(args).ok_or(einval)?;
        // The module always gives a buffer: the size alone means nothing.
        if size == 0 {
            return Err(einval);
        }
        let max = (size as usize).min(MAX_XATTR) / MXFS_FIEMAP_EXTENT_SIZE;
        if max == 0 {
            // what getxattr answers for a buffer too small for the value
            return Err(Errno::from_i32(libc::ERANGE));
        }
        let fh = self.open_of(node, |_| true)?;
        let r = self.on_open(c, fh, |fh| Op::Fiemap {
            fh,
            start,
            length,
            flags,
            max_extents: max as u32,
        })?;
        match r {
            FileReply::Extents(x) if x.len() <= max => Ok(Xattr::Data(private::encode_extents(&x))),
            r => Err(unexpected("fiemap", &r)),
        }
    }

    /// getxattr `mxfs.btime`: the owner's birth time of the node.
    fn btime_request(&self, c: &Creds, node: u64, size: u32) -> R<Xattr> {
        if size == 0 {
            return Ok(Xattr::Size(MXFS_BTIME_SIZE as u32));
        }
        if (size as usize) < MXFS_BTIME_SIZE {
            return Err(Errno::from_i32(libc::ERANGE));
        }
        let op = Op::Birthtime {
            handle: self.handle(node)?,
        };
        match self.call(c, op) {
            FileReply::Birthtime(t) => Ok(Xattr::Data(private::encode_btime(t))),
            r => Err(unexpected("birthtime", &r)),
        }
    }

    /// setxattr `mxfs.fallocate`: fallocate through an open file of the
    /// node that was opened for writing.
    fn fallocate_request(&self, c: &Creds, node: u64, value: &[u8]) -> R<()> {
        let FallocateRequest {
            offset,
            length,
            mode,
        } = FallocateRequest::decode(value).ok_or(Errno::from_i32(libc::EINVAL))?;
        let fh = self.open_of(node, |f| {
            matches!(f.flags & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR)
        })?;
        self.fallocate(c, fh, offset, length, mode)
    }

    pub fn access(&self, c: &Creds, node: u64, mask: i32) -> R<()> {
        let op = Op::Access {
            handle: self.handle(node)?,
            mask,
        };
        ok("access", self.call(c, op))
    }

    pub fn fallocate(&self, c: &Creds, fh: u64, offset: u64, length: u64, mode: i32) -> R<()> {
        let r = self.on_open(c, fh, |fh| Op::Fallocate {
            fh,
            offset,
            length,
            mode,
        })?;
        ok("fallocate", r)
    }

    pub fn lseek(&self, c: &Creds, fh: u64, offset: i64, whence: i32) -> R<i64> {
        match self.on_open(c, fh, |fh| Op::Lseek { fh, offset, whence })? {
            FileReply::Offset(o) if o >= 0 => Ok(o),
            r => Err(unexpected("lseek", &r)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn copy_file_range(
        &self,
        c: &Creds,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
        flags: u32,
    ) -> R<u32> {
        let fin = self.open_file(fh_in)?;
        let fout = self.open_file(fh_out)?;
        let op = |a: u64, b: u64| Op::CopyFileRange {
            fh_in: a,
            offset_in,
            fh_out: b,
            offset_out,
            len,
            flags,
        };
        let (a, b) = (
            fin.owner_fh.load(Ordering::Acquire),
            fout.owner_fh.load(Ordering::Acquire),
        );
        let mut r = self.call(c, op(a, b));
        if r == FileReply::Errno(libc::EBADF) {
            // Either may be unknown to a new owner: reopen both (a no-op
            // for one someone else reopened already).
            let a = self.reopen(&fin, a)?;
            let b = self.reopen(&fout, b)?;
            r = self.call(c, op(a, b));
            if r == FileReply::Errno(libc::EBADF) {
                warn!("owner refused just reopened files; EIO");
                return Err(Errno::EIO);
            }
        }
        match r {
            FileReply::Written(n) if u64::from(n) <= len => Ok(n),
            r => Err(unexpected("copy_file_range", &r)),
        }
    }

    #[cfg(test)]
    pub fn open_count(&self) -> usize {
        lock(&self.opens).len()
    }
}
