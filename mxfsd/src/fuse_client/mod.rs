//! The client's FUSE server: on a client node the mxfs kernel mount
//! stacks over a FUSE mount served here, and every FUSE request becomes a
//! [`FileRequest`] forwarded to the owner through a [`Forward`].
//!
//! This module owns the client side of the client path: the FUSE session
//! (mount options, INIT flags, worker threads, unmount), the caller's
//! credentials of each request, the table FUSE node id → owner file
//! handle, the table of open files (client `fh` → owner open id, with what
//! is needed to reopen it on a new owner), and the mapping of each
//! [`FileReply`] onto the FUSE reply.  Transport, epochs and the choice of
//! owner are the [`Forward`] implementation's; the owner's side is
//! [`crate::fileserv`].
//!
//! Rules, from the design's coherence contract (DESIGN.md §3):
//! - **No caching.**  Entry and attribute timeouts are 0, every open file
//!   is `FOPEN_DIRECT_IO`, no readdirplus, no writeback cache, no cached
//!   symlinks or directories: the owner's XFS is the one truth and each
//!   system call on a client reaches it.  The one exception is mapped
//!   pages (read-only shared and private mappings, which the module makes
//!   on the FUSE inode's page cache): the module drops them after this
//!   node's writes and when a lock is granted, and `AUTO_INVAL_DATA` has
//!   the kernel drop them when an open or getattr finds the file changed.
//! - **Permissions are the owner's.**  No `default_permissions`: the owner
//!   runs each request as its caller (fsuid, fsgid, supplementary groups
//!   read from `/proc/<pid>/status`, umask with `FUSE_DONT_MASK`), so XFS
//!   checks modes and ACLs exactly as for a local process.  `allow_other`,
//!   since every user works through the mxfs mount above.
//! - **Locks are not ours**: no `FUSE_POSIX_LOCKS` or `FUSE_FLOCK_LOCKS`,
//!   so no lock request reaches us; the module sends the fcntl and flock
//!   calls on the mxfs mount's regular files to this node's mxfsd over
//!   netlink (FILE_LOCK), which serves them through the DLM
//!   ([`crate::file_locks`]).
//! - **Node ids are the owner's inode numbers** (the root excepted, which
//!   FUSE numbers 1), with the generation from the handle: `st_ino` is the
//!   same on every node, hard links share one kernel inode, and a reused
//!   inode number is told apart by its generation (the kernel marks the
//!   old inode stale).
//! - **Open files survive a change of owner**: an owner answers EBADF for
//!   an open id it does not know; we reopen from the handle with the
//!   opener's credentials and flags (less O_CREAT/O_EXCL/O_TRUNC) and
//!   retry once.
//! - **No panics on a reply**: a reply of the wrong kind or out of bounds
//!   becomes EIO with a warning.
//! - Requests fit the peer wire: reads and writes are at most
//!   [`MAX_IO`] (1 MiB; the frame limit is 2 MiB).
//! - **The module's private requests.**  FUSE has no request for FIEMAP,
//!   and the FUSE kernel refuses fallocate modes other than KEEP_SIZE,
//!   PUNCH_HOLE and ZERO_RANGE, so the module sends those calls as
//!   extended-attribute calls with reserved names (`kmod/mxfs_uapi.h`):
//!   getxattr `mxfs.fiemap.START.LENGTH.FLAGS` (the extents, as many as
//!   the buffer holds) and setxattr `mxfs.fallocate` (offset, length,
//!   mode).  No file can hold an `mxfs.` name, so these are answered
//!   here, never forwarded as xattrs: through a file of the node open on
//!   this mount (for writing, for fallocate), as the owner's
//!   [`Op::Fiemap`](crate::wire::fileop::Op::Fiemap) or fallocate.
//!   getxattr `mxfs.btime` is the birth time FUSE before 6.6 does not
//!   carry ([`Op::Birthtime`](crate::wire::fileop::Op::Birthtime)).
//!   Other `mxfs.` names are EOPNOTSUPP.  The mount lives in `/run/mxfs`,
//!   which only root may enter, so that users reach it (and these names)
//!   only through the mxfs mount above.
//! - **O_TMPFILE**: fuser has no FUSE_TMPFILE, so the relay hands it over
//!   as a CREATE of "/" (conn.rs), made an
//!   [`Op::Tmpfile`](crate::wire::fileop::Op::Tmpfile) here.

mod client;
mod conn;
mod convert;
mod creds;
mod fs;
pub mod keep;
mod nodes;
pub mod private;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mount;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use fuser::SessionACL;
use tracing::{info, warn};

use crate::wire::fileop::{FileReply, FileRequest, Handle, MAX_IO};
use client::Client;
use keep::Keep;

/// How a client's FUSE server reaches the owner.  `call` blocks until the
/// owner answers (a network implementation may wait on a tokio channel);
/// it is called from several FUSE worker threads at once.
pub trait Forward: Send + Sync + 'static {
    fn call(&self, req: FileRequest) -> FileReply;

    /// A request that changes the filesystem, with its origin (this
    /// mount's session and the kernel's request id), so that the owner
    /// runs it once however often it is sent.
    fn call_from(&self, req: FileRequest, origin: crate::wire::Origin) -> FileReply {
        let _ = origin;
        self.call(req)
    }
}

/// The filesystem name the FUSE mount shows (`/proc/mounts` source).
pub const FSNAME: &str = "mxfs-client";
/// The FUSE subtype: the mount's type is `fuse.mxfs`.
pub const SUBTYPE: &str = "mxfs";

#[derive(Debug, Clone)]
pub struct MountConfig {
    /// FUSE worker threads: each blocks on one forwarded request, so this
    /// is how many requests can be in flight to the owner.
    pub threads: usize,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig { threads: 8 }
    }
}

/// A mounted FUSE server.  [`FuseMount::unmount`] ends it cleanly; a
/// handle dropped while still mounted detaches the mount lazily (the
/// server threads then run until its last user is gone).
#[derive(Debug)]
pub struct FuseMount {
    mountpoint: PathBuf,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// The connection and what a restarted daemon needs to go on with it
    /// ([`FuseMount::kept`]).
    dev: Arc<File>,
    keep: Arc<Keep>,
}

/// What a daemon that systemd restarts takes over: the connection's
/// `/dev/fuse` descriptor and the kept state (see [`keep`]).
pub struct Resume {
    pub dev: OwnedFd,
    pub state: OwnedFd,
}

/// Mount the FUSE server on `mountpoint` (an existing directory) and serve
/// it on worker threads.  `root` is the owner's handle of the volume root;
/// it is checked first with a getattr through `forward` (as root), so a
/// mount only happens with an owner that answers.
pub fn mount<F: Forward>(
    mountpoint: &Path,
    root: Handle,
    forward: F,
    config: &MountConfig,
) -> io::Result<FuseMount> {
    let keep = Arc::new(Keep::create()?);
    let client = Client::new(forward, root, Some(keep.clone()))?;
    let dev = Arc::new(conn::open_and_mount(mountpoint, FSNAME, &kernel_options())?);
    // From here a failure unmounts again.
    serve(mountpoint, client, dev, keep, None, config).inspect_err(|_| {
        let _ = umount2(mountpoint, libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW);
    })
}

/// Serve the FUSE mount at `mountpoint` that a dead daemon served, on its
/// kept connection: the nodes and open files it knew go on, and the
/// requests it left unanswered are answered now.
pub fn resume<F: Forward>(
    mountpoint: &Path,
    root: Handle,
    forward: F,
    config: &MountConfig,
    from: Resume,
) -> io::Result<FuseMount> {
    let (keep, kept) = Keep::open(from.state)?;
    if kept.corrupt > 0 {
        warn!(
            slots = kept.corrupt,
            "FUSE client: kept state slots that did not read back were skipped"
        );
    }
    let keep = Arc::new(keep);
    let client = Client::new(forward, root, Some(keep.clone()))?;
    client.restore(&kept);
    info!(
        nodes = kept.nodes.len(),
        open_files = kept.opens.len(),
        unanswered = kept.requests.len(),
        "FUSE client: taking over the connection of the previous mxfsd"
    );
    let dev = Arc::new(File::from(from.dev));
    serve(
        mountpoint,
        client,
        dev,
        keep,
        Some(conn::Replay {
            init: kept.init,
            requests: kept.requests,
        }),
        config,
    )
}

fn serve<F: Forward>(
    mountpoint: &Path,
    client: Client<F>,
    dev: Arc<File>,
    keep: Arc<Keep>,
    replay: Option<conn::Replay>,
    config: &MountConfig,
) -> io::Result<FuseMount> {
    let workers = config.threads.max(1);
    let fuser_config = session_config(config);
    let (session, relay) = conn::start(dev.clone(), keep.clone(), replay, workers, |fd| {
        fuser::Session::from_fd(client, fd, SessionACL::All, fuser_config)
    })?;
    let thread = std::thread::Builder::new()
        .name("fuse-client".into())
        .spawn(move || {
            let r = session.run();
            relay.join();
            r
        })?;
    info!(mountpoint = %mountpoint.display(), "FUSE client serving");
    Ok(FuseMount {
        mountpoint: mountpoint.to_path_buf(),
        thread: Some(thread),
        dev,
        keep,
    })
}

/// The mount data after `fd=`, `rootmode=` and the ids.
fn kernel_options() -> String {
    // allow_other: the mxfs mount above is used by every user.  No
    // default_permissions: the owner checks permissions as the caller.
    // Reads, like writes (max_write, set at INIT), fit one peer frame.
    // dev and suid (no MS_NODEV/MS_NOSUID): the mxfs mount above decides
    // those for its users, as a local XFS mount would.
    format!("allow_other,max_read={MAX_IO},subtype={SUBTYPE}")
}

fn session_config(config: &MountConfig) -> fuser::Config {
    let mut c = fuser::Config::default();
    c.acl = SessionACL::All;
    c.n_threads = Some(config.threads.max(1));
    c
}

fn umount2(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // umount2 does not keep the pointer.
    if unsafe { libc::umount2(c.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl FuseMount {
    /// What systemd should keep for a restarted daemon: the `/dev/fuse`
    /// descriptor and the kept state.
    pub fn kept(&self) -> (BorrowedFd<'_>, BorrowedFd<'_>) {
        (self.dev.as_fd(), self.keep.fd())
    }

    /// Whether the server still runs (it stops when the mount goes away,
    /// also by someone else's umount).
    #[cfg(test)]
    pub fn is_serving(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Unmount and wait for the server threads to end.  EBUSY (files open
    /// on the FUSE mount itself) leaves everything running: try again, or
    /// drop the handle to detach.  The server runs until the kernel lets
    /// go of the FUSE superblock, so also until a stacked mxfs mount that
    /// holds it is gone.
    pub fn unmount(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        if let Err(e) = umount2(&self.mountpoint, libc::UMOUNT_NOFOLLOW) {
            // EINVAL: not a mount point any more; fine when our server has
            // stopped, i.e. someone else unmounted it.
            if !(e.raw_os_error() == Some(libc::EINVAL) && thread.is_finished()) {
                self.thread = Some(thread);
                return Err(e);
            }
        }
        let r = thread
            .join()
            .map_err(|_| io::Error::other("FUSE client thread panicked"))?;
        info!(mountpoint = %self.mountpoint.display(), "FUSE client unmounted");
        r
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if self.thread.take().is_some_and(|t| !t.is_finished()) {
            // Detach, do not wait: a drop must not block on the users of
            // the mount.
            if let Err(e) = umount2(&self.mountpoint, libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) {
                warn!(mountpoint = %self.mountpoint.display(), "FUSE client detach: {e}");
            }
        }
    }
}
