//! The owner's file service: runs the file operations that clients
//! forward ([`crate::wire::fileop`]) against the owner's XFS.
//!
//! This module owns the owner side of the client path: turning a
//! [`FileRequest`] into system calls on the XFS and the result into a
//! [`FileReply`], the table of files and directories clients have open
//! here, and the rules below.  Transport, epochs and request ids are the
//! peer layer's; the FUSE side is the client's.
//!
//! - Objects are reached only through file handles: `open_by_handle_at`
//!   on the root's fd (O_PATH), then `*at` calls on that fd, or its
//!   `/proc/self/fd/N` path where the kernel takes no O_PATH fd (open,
//!   xattrs, chmod, truncate, utimes, link).  Nothing depends on a path
//!   from the root, so a client's handles stay valid on any owner of the
//!   same filesystem; a handle whose inode is gone gives ESTALE.
//! - Each request runs with the caller's fsuid, fsgid, supplementary
//!   groups and (for creates) umask on the executing thread only
//!   ([`creds`]), so XFS checks permissions as for a local process.
//!   Handles are opened before that, with the daemon's identity: it
//!   takes CAP_DAC_READ_SEARCH, like nfsd's handle decoding.
//! - `/.mxfs`, the daemon's directory at the volume root, is invisible
//!   (lookup ENOENT, left out of readdir) and cannot be made, removed or
//!   renamed (EPERM), as the kernel module does on the owner.
//! - Open files and directories live in a table: open id → fd opened with
//!   the client's flags, tagged with the client that opened it, until
//!   Release/Releasedir or [`FileService::release_client`].  Ids start at
//!   a random number, so an id from an earlier owner is unlikely to name
//!   one of ours: it gets EBADF and the client reopens.
//! - Errors are positive errnos in the reply, never a panic.
//!
//! [`FileService::handle_from`] is synchronous: the runtime calls it from a
//! blocking thread pool, one request per call.

mod creds;
mod sys;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
#[cfg(test)]
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
#[cfg(test)]
use std::os::unix::ffi::OsStrExt;
#[cfg(test)]
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::wire::fileop::{
    Attr, Creds, Dirent, FileReply, FileRequest, Handle, Op, SetAttr, Statfs, TimeSet, Timespec,
    MAX_EXTENTS, MAX_IO, MAX_XATTR,
};
use creds::{AsCaller, Umask};
use sys::{cstr, proc_path, SysResult};

/// The daemon's directory at the volume root.
pub const MXFS_DIR: &[u8] = b".mxfs";
/// The client of requests made through [`FileService::handle`] (the
/// owner's own, and tests).
#[cfg(test)]
pub const LOCAL_CLIENT: u64 = 0;
/// Largest copy_file_range done in one request (the reply is a u32).
const MAX_COPY: usize = 1 << 30;

pub struct FileService {
    /// The XFS root: the mount fd for open_by_handle_at (not O_PATH).
    root: OwnedFd,
    root_handle: Handle,
    /// (device major, minor, inode) of the root, to recognise it.
    root_id: (u32, u32, u64),
    /// Handles from another mount (something mounted over a directory)
    /// are not the volume's.
    mount_id: libc::c_int,
    table: Mutex<OpenTable>,
}

struct OpenTable {
    next: u64,
    files: HashMap<u64, Arc<OpenFile>>,
}

struct OpenFile {
    client: u64,
    fd: OwnedFd,
    kind: Kind,
}

enum Kind {
    File {
        append: bool,
        direct: bool,
        /// Opened for writing: ftruncate through it works.
        writable: bool,
    },
    Dir {
        /// The volume root: its listing hides `.mxfs`.
        root: bool,
        /// Seek and read of one listing go together.
        cursor: Mutex<()>,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves consistent data
    // (every critical section is a single map operation or syscall).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_err(e: sys::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e)
}

impl FileService {
    /// Serve the filesystem whose root directory is `root`.
    #[cfg(test)]
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let path = CString::new(root.as_os_str().as_bytes())?;
        let fd = sys::open_path(&path, libc::O_RDONLY | libc::O_DIRECTORY).map_err(io_err)?;
        Self::from_root_fd(fd)
    }

    /// Serve the filesystem whose root directory `root` is open on (the
    /// descriptor the kernel module installs, or one of our own mount).
    pub fn from_root_fd(root: OwnedFd) -> std::io::Result<Self> {
        // open_by_handle_at refuses an O_PATH mount fd (EBADF): take a
        // real open of the same directory, whatever we were given.
        let root = sys::open_path(&proc_path(root.as_fd()), libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(io_err)?;
        let st = sys::statx(root.as_fd()).map_err(io_err)?;
        if u32::from(st.stx_mode) & libc::S_IFMT != libc::S_IFDIR {
            return Err(io_err(libc::ENOTDIR));
        }
        let (root_handle, mount_id) =
            sys::name_to_handle(root.as_fd(), c"", libc::AT_EMPTY_PATH).map_err(io_err)?;
        // Fail now, not at the first request, when handles cannot be
        // opened (no CAP_DAC_READ_SEARCH, or a filesystem without them).
        sys::open_by_handle(root.as_fd(), &root_handle, libc::O_PATH).map_err(io_err)?;
        let mut seed = [0u8; 8];
        let next = match getrandom::getrandom(&mut seed) {
            Ok(()) => u64::from_be_bytes(seed),
            Err(_) => 1,
        };
        Ok(FileService {
            root,
            root_handle,
            root_id: (st.stx_dev_major, st.stx_dev_minor, st.stx_ino),
            mount_id,
            table: Mutex::new(OpenTable {
                next,
                files: HashMap::new(),
            }),
        })
    }

    /// The handle of the volume root: the client's FUSE root inode.
    #[cfg(test)]
    pub fn root_handle(&self) -> &Handle {
        &self.root_handle
    }

    /// Run one request of the owner's own (client [`LOCAL_CLIENT`]).
    #[cfg(test)]
    pub fn handle(&self, req: FileRequest) -> FileReply {
        self.handle_from(LOCAL_CLIENT, req)
    }

    /// Run one request from client node `client`: open ids are that
    /// client's alone.
    pub fn handle_from(&self, client: u64, req: FileRequest) -> FileReply {
        match self.run(client, &req.creds, req.op) {
            Ok(r) => r,
            Err(e) if e > 0 => FileReply::Errno(e),
            Err(_) => FileReply::Errno(libc::EIO),
        }
    }

    /// Close everything `client` has open (it left or died).  Returns
    /// how many opens were closed.
    pub fn release_client(&self, client: u64) -> usize {
        let mut t = lock(&self.table);
        let before = t.files.len();
        t.files.retain(|_, f| f.client != client);
        before - t.files.len()
    }

    /// How many files and directories clients have open.
    #[cfg(test)]
    pub fn open_count(&self) -> usize {
        lock(&self.table).files.len()
    }

    // ---- the open table ----

    fn insert(&self, client: u64, fd: OwnedFd, kind: Kind) -> u64 {
        let mut t = lock(&self.table);
        let mut id = t.next;
        while id == 0 || t.files.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        t.next = id.wrapping_add(1);
        t.files.insert(id, Arc::new(OpenFile { client, fd, kind }));
        id
    }

    fn get(&self, client: u64, fh: u64) -> SysResult<Arc<OpenFile>> {
        match lock(&self.table).files.get(&fh) {
            Some(f) if f.client == client => Ok(f.clone()),
            _ => Err(libc::EBADF),
        }
    }

    /// An open regular file: (fd holder, append, direct).
    fn file(&self, client: u64, fh: u64) -> SysResult<(Arc<OpenFile>, bool, bool)> {
        let f = self.get(client, fh)?;
        match f.kind {
            Kind::File { append, direct, .. } => Ok((f, append, direct)),
            Kind::Dir { .. } => Err(libc::EISDIR),
        }
    }

    fn remove(&self, client: u64, fh: u64) -> SysResult<()> {
        let mut t = lock(&self.table);
        match t.files.get(&fh) {
            Some(f) if f.client == client => {
                t.files.remove(&fh);
                Ok(())
            }
            _ => Err(libc::EBADF),
        }
    }

    // ---- objects ----

    /// The object a handle names, as an O_PATH fd.  Call before entering
    /// the caller's credentials.
    fn resolve(&self, h: &Handle) -> SysResult<OwnedFd> {
        // exportfs turns every decoding failure into ESTALE except ENOMEM,
        // which it passes on as "try again" (nfsd's jukebox).  Seen here
        // under load for a handle whose inode was just deleted, the next
        // call answering ESTALE: so retry a little before giving it up.
        let mut tries = 0;
        loop {
            match sys::open_by_handle(self.root.as_fd(), h, libc::O_PATH) {
                Err(libc::ENOMEM) if tries < 3 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(tries));
                }
                r => return r,
            }
        }
    }

    fn is_root(&self, fd: BorrowedFd<'_>) -> SysResult<bool> {
        let st = sys::statx(fd)?;
        Ok((st.stx_dev_major, st.stx_dev_minor, st.stx_ino) == self.root_id)
    }

    /// EPERM for `.mxfs` in the root: the name clients may not touch.
    fn protect(&self, parent: BorrowedFd<'_>, name: &[u8]) -> SysResult<()> {
        if name == MXFS_DIR && self.is_root(parent)? {
            return Err(libc::EPERM);
        }
        Ok(())
    }

    /// Handle and attributes of the object `fd` is open on.
    fn entry_of(&self, fd: BorrowedFd<'_>) -> SysResult<(Handle, Attr)> {
        let (h, mount_id) = sys::name_to_handle(fd, c"", libc::AT_EMPTY_PATH)?;
        if mount_id != self.mount_id {
            return Err(libc::EXDEV);
        }
        let a = attr_of(fd, &h)?;
        Ok((h, a))
    }

    /// Handle and attributes of `name` in `dir`: one lookup (O_PATH does
    /// not follow a final symlink, and checks only search permission on
    /// `dir`), so handle and attributes are of the same object.
    fn entry_at(&self, dir: BorrowedFd<'_>, name: &[u8]) -> SysResult<FileReply> {
        let fd = sys::openat(dir, &cstr(name)?, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let (handle, attr) = self.entry_of(fd.as_fd())?;
        Ok(FileReply::Entry { handle, attr })
    }

    fn run(&self, client: u64, creds: &Creds, op: Op) -> SysResult<FileReply> {
        use FileReply as R;
        match op {
            Op::Forget { .. } => Ok(R::Ok),
            Op::Lookup { parent, name } => {
                let p = self.resolve(&parent)?;
                let at_root = (name == MXFS_DIR || name == b"..") && self.is_root(p.as_fd())?;
                if at_root && name == MXFS_DIR {
                    return Err(libc::ENOENT);
                }
                let _c = AsCaller::enter(creds)?;
                if at_root {
                    // ".." of the volume root is the root: never a handle
                    // of whatever the root is mounted on.
                    sys::faccess(p.as_fd(), libc::X_OK)?;
                    let (handle, attr) = self.entry_of(p.as_fd())?;
                    return Ok(R::Entry { handle, attr });
                }
                self.entry_at(p.as_fd(), &name)
            }
            Op::Getattr { handle, fh } => {
                // An open file's own fd when we have it: it works on an
                // unlinked file too (fstat).
                if let Some(f) = fh.and_then(|fh| self.get(client, fh).ok()) {
                    return Ok(R::Attr(attr_of(f.fd.as_fd(), &handle)?));
                }
                let f = self.resolve(&handle)?;
                Ok(R::Attr(attr_of(f.as_fd(), &handle)?))
            }
            Op::Setattr { handle, fh, set } => {
                let f = self.resolve(&handle)?;
                let open = match fh {
                    Some(fh) => self.get(client, fh).ok(),
                    None => None,
                };
                let _c = AsCaller::enter(creds)?;
                self.setattr(f.as_fd(), open.as_deref(), &set)?;
                Ok(R::Attr(attr_of(f.as_fd(), &handle)?))
            }
            Op::Readlink { handle } => {
                let f = self.resolve(&handle)?;
                let _c = AsCaller::enter(creds)?;
                Ok(R::Data(sys::readlink(f.as_fd())?))
            }
            Op::Mknod {
                parent,
                name,
                mode,
                umask,
                rdev,
            } => {
                let p = self.resolve(&parent)?;
                self.protect(p.as_fd(), &name)?;
                let _u = Umask::set(umask)?;
                let _c = AsCaller::enter(creds)?;
                sys::mknodat(p.as_fd(), &cstr(&name)?, mode, rdev)?;
                self.entry_at(p.as_fd(), &name)
            }
            Op::Mkdir {
                parent,
                name,
                mode,
                umask,
            } => {
                let p = self.resolve(&parent)?;
                self.protect(p.as_fd(), &name)?;
                let _u = Umask::set(umask)?;
                let _c = AsCaller::enter(creds)?;
                sys::mkdirat(p.as_fd(), &cstr(&name)?, mode & 0o7777)?;
                self.entry_at(p.as_fd(), &name)
            }
            Op::Unlink { parent, name } => self.remove_name(creds, &parent, &name, 0),
            Op::Rmdir { parent, name } => {
                self.remove_name(creds, &parent, &name, libc::AT_REMOVEDIR)
            }
            Op::Symlink {
                parent,
                name,
                target,
            } => {
                let p = self.resolve(&parent)?;
                self.protect(p.as_fd(), &name)?;
                let _c = AsCaller::enter(creds)?;
                sys::symlinkat(&cstr(&target)?, p.as_fd(), &cstr(&name)?)?;
                self.entry_at(p.as_fd(), &name)
            }
            Op::Rename {
                parent,
                name,
                newparent,
                newname,
                flags,
            } => {
                let p = self.resolve(&parent)?;
                let np = self.resolve(&newparent)?;
                self.protect(p.as_fd(), &name)?;
                self.protect(np.as_fd(), &newname)?;
                let _c = AsCaller::enter(creds)?;
                sys::renameat2(
                    p.as_fd(),
                    &cstr(&name)?,
                    np.as_fd(),
                    &cstr(&newname)?,
                    flags,
                )?;
                Ok(R::Ok)
            }
            Op::Link {
                handle,
                newparent,
                newname,
            } => {
                let f = self.resolve(&handle)?;
                let np = self.resolve(&newparent)?;
                self.protect(np.as_fd(), &newname)?;
                let _c = AsCaller::enter(creds)?;
                sys::link_path(&proc_path(f.as_fd()), np.as_fd(), &cstr(&newname)?)?;
                let (handle, attr) = self.entry_of(f.as_fd())?;
                Ok(R::Entry { handle, attr })
            }
            Op::Open { handle, flags } => {
                let f = self.resolve(&handle)?;
                // FUSE opens regular files only (the client's kernel
                // serves fifos and devices); refusing the rest also
                // keeps a fifo's open from blocking a worker.
                match u32::from(sys::statx(f.as_fd())?.stx_mode) & libc::S_IFMT {
                    libc::S_IFREG => {}
                    libc::S_IFDIR => return Err(libc::EISDIR),
                    libc::S_IFLNK => return Err(libc::ELOOP),
                    _ => return Err(libc::ENXIO),
                }
                let flags = open_flags(flags)?;
                let _c = AsCaller::enter(creds)?;
                let fd = sys::open_path(&proc_path(f.as_fd()), flags)?;
                Ok(R::Opened {
                    fh: self.insert(client, fd, file_kind(flags)),
                })
            }
            Op::Create {
                parent,
                name,
                mode,
                umask,
                flags,
            } => {
                let p = self.resolve(&parent)?;
                self.protect(p.as_fd(), &name)?;
                // O_NOFOLLOW: a symlink planted under the name must not
                // make us create or truncate a file outside the volume.
                let flags =
                    open_flags(flags)? | (flags & libc::O_EXCL) | libc::O_CREAT | libc::O_NOFOLLOW;
                let _u = Umask::set(umask)?;
                let _c = AsCaller::enter(creds)?;
                let fd = sys::openat(p.as_fd(), &cstr(&name)?, flags, mode & 0o7777)?;
                let (handle, attr) = self.entry_of(fd.as_fd())?;
                let fh = self.insert(client, fd, file_kind(flags));
                Ok(R::Created { handle, attr, fh })
            }
            Op::Tmpfile {
                parent,
                mode,
                umask,
                flags,
            } => {
                let p = self.resolve(&parent)?;
                // O_EXCL: a tmpfile that may never be linked
                let flags = open_flags(flags)? | (flags & libc::O_EXCL) | libc::O_TMPFILE;
                let _u = Umask::set(umask)?;
                let _c = AsCaller::enter(creds)?;
                let fd = sys::openat(p.as_fd(), c".", flags, mode & 0o7777)?;
                let (handle, attr) = self.entry_of(fd.as_fd())?;
                let fh = self.insert(client, fd, file_kind(flags));
                Ok(R::Created { handle, attr, fh })
            }
            Op::Read { fh, offset, size } => {
                let (f, _, direct) = self.file(client, fh)?;
                let size = (size as usize).min(MAX_IO);
                let _c = AsCaller::enter(creds)?;
                if direct {
                    let mut buf = sys::AlignedBuf::new(size)?;
                    let n = sys::pread(f.fd.as_fd(), buf.as_mut_slice(), offset)?;
                    Ok(R::Data(buf.as_slice()[..n].to_vec()))
                } else {
                    let mut buf = vec![0u8; size];
                    let n = sys::pread(f.fd.as_fd(), &mut buf, offset)?;
                    buf.truncate(n);
                    Ok(R::Data(buf))
                }
            }
            Op::Write {
                fh, offset, data, ..
            } => {
                let (f, append, direct) = self.file(client, fh)?;
                // As the caller: a write by a non-owner clears setuid
                // bits only without CAP_FSETID, which the daemon has.
                let _c = AsCaller::enter(creds)?;
                let aligned;
                let buf: &[u8] = if direct {
                    let mut a = sys::AlignedBuf::new(data.len())?;
                    a.as_mut_slice().copy_from_slice(&data);
                    aligned = a;
                    aligned.as_slice()
                } else {
                    &data
                };
                // O_APPEND: at the fd's position, which appends
                // atomically under the inode lock; the client's offset
                // means nothing then.  Durable before the reply: should
                // this owner die, the client's fsync goes to the next
                // owner, which never had this write in its cache, so a
                // write a client was told is done must already be on disk
                // (the price: a client's writes are synchronous).
                let n = sys::write_dsync(f.fd.as_fd(), buf, (!append).then_some(offset))?;
                Ok(R::Written(n as u32))
            }
            Op::Flush { fh } => {
                // Writes went straight to the owner's XFS: nothing to
                // push.
                self.get(client, fh)?;
                Ok(R::Ok)
            }
            Op::Release { fh, .. } => {
                self.remove(client, fh)?;
                Ok(R::Ok)
            }
            Op::Releasedir { fh } => {
                self.remove(client, fh)?;
                Ok(R::Ok)
            }
            Op::Fsync { fh, datasync } | Op::Fsyncdir { fh, datasync } => {
                let f = self.get(client, fh)?;
                let _c = AsCaller::enter(creds)?;
                sys::fsync(f.fd.as_fd(), datasync)?;
                Ok(R::Ok)
            }
            Op::Opendir { handle, .. } => {
                let f = self.resolve(&handle)?;
                let root = self.is_root(f.as_fd())?;
                let _c = AsCaller::enter(creds)?;
                let fd = sys::open_path(
                    &proc_path(f.as_fd()),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOCTTY,
                )?;
                let kind = Kind::Dir {
                    root,
                    cursor: Mutex::new(()),
                };
                Ok(R::Opened {
                    fh: self.insert(client, fd, kind),
                })
            }
            Op::Readdir { fh, offset, size } => {
                let d = self.get(client, fh)?;
                let Kind::Dir { root, cursor } = &d.kind else {
                    return Err(libc::ENOTDIR);
                };
                let _c = AsCaller::enter(creds)?;
                let _pos = lock(cursor);
                readdir(d.fd.as_fd(), *root, offset, size).map(R::Dirents)
            }
            Op::Root => Ok(R::Entry {
                handle: self.root_handle.clone(),
                attr: attr_of(self.root.as_fd(), &self.root_handle)?,
            }),
            Op::Statfs { handle } => {
                let f = self.resolve(&handle)?;
                let s = sys::fstatfs(f.as_fd())?;
                Ok(R::Statfs(Statfs {
                    blocks: s.f_blocks,
                    bfree: s.f_bfree,
                    bavail: s.f_bavail,
                    files: s.f_files,
                    ffree: s.f_ffree,
                    bsize: s.f_bsize as u32,
                    namelen: s.f_namelen as u32,
                    frsize: s.f_frsize as u32,
                }))
            }
            Op::Setxattr {
                handle,
                name,
                value,
                flags,
                position,
            } => {
                // position is macOS's resource forks
                if position != 0 || flags & !(libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
                    return Err(libc::EINVAL);
                }
                let f = self.resolve(&handle)?;
                let _c = AsCaller::enter(creds)?;
                sys::setxattr(&proc_path(f.as_fd()), &cstr(&name)?, &value, flags)?;
                Ok(R::Ok)
            }
            Op::Getxattr { handle, name, size } => {
                let f = self.resolve(&handle)?;
                let _c = AsCaller::enter(creds)?;
                let path = proc_path(f.as_fd());
                let name = cstr(&name)?;
                if size == 0 {
                    let n = sys::getxattr(&path, &name, &mut [])?;
                    return Ok(R::XattrSize(n as u32));
                }
                let mut buf = vec![0u8; (size as usize).min(MAX_XATTR)];
                let n = sys::getxattr(&path, &name, &mut buf)?;
                buf.truncate(n);
                Ok(R::Data(buf))
            }
            Op::Listxattr { handle, size } => {
                let f = self.resolve(&handle)?;
                let _c = AsCaller::enter(creds)?;
                let path = proc_path(f.as_fd());
                if size == 0 {
                    return Ok(R::XattrSize(sys::listxattr(&path, &mut [])? as u32));
                }
                let mut buf = vec![0u8; (size as usize).min(MAX_XATTR)];
                let n = sys::listxattr(&path, &mut buf)?;
                buf.truncate(n);
                Ok(R::Data(buf))
            }
            Op::Removexattr { handle, name } => {
                let f = self.resolve(&handle)?;
                let _c = AsCaller::enter(creds)?;
                sys::removexattr(&proc_path(f.as_fd()), &cstr(&name)?)?;
                Ok(R::Ok)
            }
            Op::Access { handle, mask } => {
                if mask & !(libc::R_OK | libc::W_OK | libc::X_OK) != 0 {
                    return Err(libc::EINVAL);
                }
                let f = self.resolve(&handle)?;
                let _c = AsCaller::enter(creds)?;
                sys::faccess(f.as_fd(), mask)?;
                Ok(R::Ok)
            }
            Op::Fallocate {
                fh,
                offset,
                length,
                mode,
            } => {
                let (f, _, _) = self.file(client, fh)?;
                let _c = AsCaller::enter(creds)?;
                sys::fallocate(f.fd.as_fd(), mode, offset, length)?;
                // durable before the reply, as a write (above)
                sys::fsync(f.fd.as_fd(), true)?;
                Ok(R::Ok)
            }
            Op::Lseek { fh, offset, whence } => {
                // FUSE forwards only SEEK_DATA and SEEK_HOLE; SEEK_CUR of
                // our fd's position would mean nothing to the client.
                if ![
                    libc::SEEK_SET,
                    libc::SEEK_END,
                    libc::SEEK_DATA,
                    libc::SEEK_HOLE,
                ]
                .contains(&whence)
                {
                    return Err(libc::EINVAL);
                }
                let (f, _, _) = self.file(client, fh)?;
                let _c = AsCaller::enter(creds)?;
                Ok(R::Offset(sys::lseek(f.fd.as_fd(), offset, whence)?))
            }
            Op::CopyFileRange {
                fh_in,
                offset_in,
                fh_out,
                offset_out,
                len,
                flags,
            } => {
                let (fin, _, _) = self.file(client, fh_in)?;
                let (fout, _, _) = self.file(client, fh_out)?;
                let len = usize::try_from(len).unwrap_or(MAX_COPY).min(MAX_COPY);
                let _c = AsCaller::enter(creds)?;
                let n = sys::copy_file_range(
                    fin.fd.as_fd(),
                    offset_in,
                    fout.fd.as_fd(),
                    offset_out,
                    len,
                    flags,
                )?;
                sys::fsync(fout.fd.as_fd(), true)?;
                Ok(R::Written(n as u32))
            }
            Op::Birthtime { handle } => {
                let f = self.resolve(&handle)?;
                let st = sys::statx_of(f.as_fd(), libc::STATX_BTIME)?;
                if st.stx_mask & libc::STATX_BTIME == 0 {
                    return Err(libc::ENODATA);
                }
                Ok(R::Birthtime(ts(st.stx_btime)))
            }
            Op::Fiemap {
                fh,
                start,
                length,
                flags,
                max_extents,
            } => {
                let (f, _, _) = self.file(client, fh)?;
                let max = (max_extents as usize).min(MAX_EXTENTS);
                let _c = AsCaller::enter(creds)?;
                Ok(R::Extents(sys::fiemap(
                    f.fd.as_fd(),
                    start,
                    length,
                    flags,
                    max,
                )?))
            }
        }
    }

    fn remove_name(
        &self,
        creds: &Creds,
        parent: &Handle,
        name: &[u8],
        flags: libc::c_int,
    ) -> SysResult<FileReply> {
        let p = self.resolve(parent)?;
        self.protect(p.as_fd(), name)?;
        let _c = AsCaller::enter(creds)?;
        sys::unlinkat(p.as_fd(), &cstr(name)?, flags)?;
        Ok(FileReply::Ok)
    }

    /// setattr's changes in the order that keeps each visible: mode,
    /// owner, size, then times (a truncate would move mtime again).
    /// Runs as the caller: the kernel checks ownership and permissions.
    fn setattr(&self, f: BorrowedFd<'_>, open: Option<&OpenFile>, set: &SetAttr) -> SysResult<()> {
        let path = proc_path(f);
        if let Some(mode) = set.mode {
            if u32::from(sys::statx(f)?.stx_mode) & libc::S_IFMT == libc::S_IFLNK {
                // what fchmodat(AT_SYMLINK_NOFOLLOW) answers
                return Err(libc::EOPNOTSUPP);
            }
            sys::chmod(&path, mode & 0o7777)?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            sys::fchown(f, set.uid, set.gid)?;
        }
        if let Some(size) = set.size {
            match open {
                // ftruncate: permission was checked at open (a file
                // created with mode 0 and opened for writing by its
                // creator can be truncated through that open file)
                Some(o) if matches!(o.kind, Kind::File { writable: true, .. }) => {
                    sys::ftruncate(o.fd.as_fd(), size)?
                }
                _ => sys::truncate(&path, size)?,
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let ts = |t: Option<TimeSet>| match t {
                None => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                Some(TimeSet::Now) => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
                Some(TimeSet::At(t)) => libc::timespec {
                    tv_sec: t.sec,
                    tv_nsec: i64::from(t.nsec),
                },
            };
            sys::utimens(&path, &[ts(set.atime), ts(set.mtime)])?;
        }
        // ctime: Linux sets it to now on each change above; it cannot be
        // given.
        Ok(())
    }
}

/// The client's open flags, less what must not reach our open: creation
/// (create() adds it back), a controlling tty, SIGIO to the daemon, and
/// O_NOFOLLOW/O_DIRECTORY (we open through a /proc magic link).
fn open_flags(flags: i32) -> SysResult<i32> {
    if flags & libc::O_PATH != 0 || flags & libc::O_TMPFILE & !libc::O_DIRECTORY != 0 {
        return Err(libc::EINVAL);
    }
    let drop = libc::O_CREAT
        | libc::O_EXCL
        | libc::O_NOCTTY
        | libc::O_ASYNC
        | libc::O_NOFOLLOW
        | libc::O_DIRECTORY;
    Ok(flags & !drop | libc::O_NOCTTY)
}

fn file_kind(flags: i32) -> Kind {
    Kind::File {
        append: flags & libc::O_APPEND != 0,
        direct: flags & libc::O_DIRECT != 0,
        writable: flags & libc::O_ACCMODE != libc::O_RDONLY,
    }
}

fn ts(t: libc::statx_timestamp) -> Timespec {
    Timespec {
        sec: t.tv_sec,
        nsec: t.tv_nsec,
    }
}

/// The inode generation inside handles of the kernel's common layouts
/// (cheaper than an ioctl on a real open): FILEID_INO32_GEN(_PARENT)
/// (ext4, XFS with 32-bit inode numbers) and XFS's 64-bit variants.
fn generation(h: &Handle) -> u64 {
    let at = match h.handle_type {
        1 | 2 => 4,
        0x81 | 0x82 => 8,
        _ => return 0,
    };
    h.bytes.get(at..at + 4).map_or(0, |b| {
        u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    })
}

fn attr_of(fd: BorrowedFd<'_>, h: &Handle) -> SysResult<Attr> {
    let st = sys::statx(fd)?;
    Ok(Attr {
        ino: st.stx_ino,
        size: st.stx_size,
        blocks: st.stx_blocks,
        atime: ts(st.stx_atime),
        mtime: ts(st.stx_mtime),
        ctime: ts(st.stx_ctime),
        mode: u32::from(st.stx_mode),
        nlink: st.stx_nlink,
        uid: st.stx_uid,
        gid: st.stx_gid,
        rdev: sys::makedev(st.stx_rdev_major, st.stx_rdev_minor),
        blksize: st.stx_blksize,
        generation: generation(h),
    })
}

/// One batch of a listing from `cookie` (0: the start; else a
/// [`Dirent::next`]), each entry carrying the cookie after it, the
/// filesystem's own `d_off`, so a client's telldir/seekdir works.  Empty
/// only at the end: a batch that held only `.mxfs` is followed by the
/// next.
fn readdir(fd: BorrowedFd<'_>, root: bool, cookie: u64, size: u32) -> SysResult<Vec<Dirent>> {
    let pos = i64::try_from(cookie).map_err(|_| libc::EINVAL)?;
    sys::lseek(fd, pos, libc::SEEK_SET)?;
    // at least room for one entry of the longest name
    let mut buf = vec![0u8; (size as usize).clamp(1024, MAX_IO)];
    loop {
        let n = sys::getdents(fd, &mut buf)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let out: Vec<Dirent> = sys::parse_dirents(&buf[..n])?
            .into_iter()
            .filter(|e| !(root && e.name == MXFS_DIR))
            .map(|e| Dirent {
                ino: e.ino,
                next: e.off as u64,
                kind: e.kind,
                name: e.name.to_vec(),
            })
            .collect();
        if !out.is_empty() {
            return Ok(out);
        }
    }
}
