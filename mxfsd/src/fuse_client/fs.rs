//! fuser's [`Filesystem`] over [`Client`]: the caller's credentials of
//! each request, the INIT negotiation, and the replies (TTL 0,
//! `FOPEN_DIRECT_IO`).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, warn};

use super::client::{Client, Xattr};
use super::convert::{time_set, timespec_from_kernel};
use super::Forward;
use crate::wire::fileop::{Creds, SetAttr, MAX_IO};

/// Entry and attribute timeout: nothing is cached (coherence contract).
const TTL: Duration = Duration::ZERO;

/// INIT flags asked for when the kernel has them (fuser adds
/// ASYNC_READ, BIG_WRITES and MAX_PAGES itself).  Left out on purpose:
/// POSIX_LOCKS and FLOCK_LOCKS (fcntl and flock calls on the mxfs mount
/// go through the module's FILE_LOCK to this node's DLM, see
/// `crate::file_locks`, and never reach FUSE; without these flags the
/// FUSE kernel keeps any lock it is asked for locally), DO_READDIRPLUS
/// and WRITEBACK_CACHE (they cache), POSIX_ACL (the owner's XFS checks
/// ACLs; the kernel forwards their xattrs as they are), CACHE_SYMLINKS,
/// DIRECT_IO_ALLOW_MMAP (shared writable mmap would cache).
const WANTED: [(InitFlags, &str); 5] = [
    // The owner applies the caller's umask itself, so a default ACL on
    // the parent wins over it as locally.
    (InitFlags::FUSE_DONT_MASK, "DONT_MASK"),
    // O_TRUNC goes with the open: one request, checked as the open.
    (InitFlags::FUSE_ATOMIC_O_TRUNC, "ATOMIC_O_TRUNC"),
    // The owner's kernel clears setuid/setgid on write, truncate and
    // chown by the caller; the client's must not send a chmod of its own
    // (as a non-owner caller it would fail).
    (InitFlags::FUSE_HANDLE_KILLPRIV, "HANDLE_KILLPRIV"),
    // Lookups and readdirs in one directory in parallel: the owner's XFS
    // does the locking.
    (InitFlags::FUSE_PARALLEL_DIROPS, "PARALLEL_DIROPS"),
    // The only cached data, pages of read-only and private mappings
    // (the module's), go when a getattr finds the file's mtime or size
    // changed: other nodes' writes show in a mapping once this node
    // stats the file, as on NFS.
    (InitFlags::FUSE_AUTO_INVAL_DATA, "AUTO_INVAL_DATA"),
];

impl<F: Forward> Client<F> {
    /// The caller of `req`, and this thread serves `req` from now on
    /// (the origin of what it forwards, [`super::client::serving`]).
    fn creds_of(&self, req: &Request) -> Creds {
        super::client::serving(req.unique().0);
        self.groups.creds(req.uid(), req.gid(), req.pid())
    }
}

fn reply_entry(reply: ReplyEntry, r: Result<(fuser::FileAttr, Generation), Errno>) {
    match r {
        Ok((attr, generation)) => reply.entry(&TTL, &attr, generation),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_attr(reply: ReplyAttr, r: Result<fuser::FileAttr, Errno>) {
    match r {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(e) => reply.error(e),
    }
}

fn reply_xattr(reply: ReplyXattr, r: Result<Xattr, Errno>) {
    match r {
        Ok(Xattr::Size(n)) => reply.size(n),
        Ok(Xattr::Data(d)) => reply.data(&d),
        Err(e) => reply.error(e),
    }
}

// The calls below go to Client's inherent methods of the same names (an
// inherent method wins over a trait's): these only adapt arguments and
// replies.
impl<F: Forward> Filesystem for Client<F> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_IO as u32) {
            // fuser's own limit is 16 MiB: cannot happen, but stay within
            // the frame whatever it says.
            let _ = config.set_max_write(max.min(MAX_IO as u32));
        }
        for (flag, what) in WANTED {
            if config.add_capabilities(flag).is_err() {
                debug!("FUSE kernel lacks {what}");
            }
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.lookup(&self.creds_of(req), parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        Client::forget(self, ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self.getattr(&self.creds_of(req), ino.0, fh.map(|f| f.0));
        reply_attr(reply, r);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            ctime: ctime.map(timespec_from_kernel),
        };
        let r = self.setattr(&self.creds_of(req), ino.0, fh.map(|f| f.0), set);
        reply_attr(reply, r);
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.readlink(&self.creds_of(req), ino.0) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self.mknod(&self.creds_of(req), parent.0, name, mode, umask, rdev);
        reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.mkdir(&self.creds_of(req), parent.0, name, mode, umask);
        reply_entry(reply, r);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.unlink(&self.creds_of(req), parent.0, name));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.rmdir(&self.creds_of(req), parent.0, name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.symlink(&self.creds_of(req), parent.0, link_name, target.as_os_str());
        reply_entry(reply, r);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.rename(
            &self.creds_of(req),
            parent.0,
            name,
            newparent.0,
            newname,
            flags.bits(),
        );
        reply_empty(reply, r);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self.link(&self.creds_of(req), ino.0, newparent.0, newname);
        reply_entry(reply, r);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open(&self.creds_of(req), ino.0, flags.0) {
            // Direct I/O: no page cache, each read and write reaches the
            // owner.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read(&self.creds_of(req), fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write(&self.creds_of(req), fh.0, offset, data, write_flags.bits()) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.flush(&self.creds_of(req), fh.0));
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        flush: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.release(&self.creds_of(req), fh.0, flags.0, flush);
        reply_empty(reply, r);
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.fsync(&self.creds_of(req), fh.0, datasync, false),
        );
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.opendir(&self.creds_of(req), ino.0, flags.0) {
            // No FOPEN_CACHE_DIR: every listing is read from the owner.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.readdir(&self.creds_of(req), ino.0, fh.0, offset) {
            Ok(list) => {
                for e in list {
                    // Full: the rest comes again from the last cookie.
                    if reply.add(INodeNo(e.ino), e.next, e.kind, OsStr::from_bytes(&e.name)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.release(&self.creds_of(req), fh.0, flags.0, false);
        reply_empty(reply, r);
    }

    fn fsyncdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fsync(&self.creds_of(req), fh.0, datasync, true));
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.statfs(&self.creds_of(req), ino.0) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self.setxattr(&self.creds_of(req), ino.0, name, value, flags, position);
        reply_empty(reply, r);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(
            reply,
            self.getxattr(&self.creds_of(req), ino.0, Some(name), size),
        );
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.getxattr(&self.creds_of(req), ino.0, None, size));
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.removexattr(&self.creds_of(req), ino.0, name));
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        reply_empty(reply, self.access(&self.creds_of(req), ino.0, mask.bits()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create(&self.creds_of(req), parent.0, name, mode, umask, flags) {
            Ok((attr, generation, fh)) => reply.created(
                &TTL,
                &attr,
                generation,
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // No ioctl is forwarded (none has a meaning across nodes yet).
        debug!(cmd, "ioctl on the FUSE client; ENOTTY");
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.fallocate(&self.creds_of(req), fh.0, offset, length, mode);
        reply_empty(reply, r);
    }

    fn lseek(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.lseek(&self.creds_of(req), fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let Ok(flags) = u32::try_from(flags.bits()) else {
            warn!("copy_file_range flags beyond 32 bits; EINVAL");
            reply.error(Errno::from_i32(libc::EINVAL));
            return;
        };
        let r = self.copy_file_range(
            &self.creds_of(req),
            fh_in.0,
            offset_in,
            fh_out.0,
            offset_out,
            len,
            flags,
        );
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }
}
