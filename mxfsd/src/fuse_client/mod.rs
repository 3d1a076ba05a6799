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
//!   system call on a client reaches it.
//! - **Permissions are the owner's.**  No `default_permissions`: the owner
//!   runs each request as its caller (fsuid, fsgid, supplementary groups
//!   read from `/proc/<pid>/status`, umask with `FUSE_DONT_MASK`), so XFS
//!   checks modes and ACLs exactly as for a local process.  `allow_other`,
//!   since every user works through the mxfs mount above.
//! - **Locks are the owner's**: `FUSE_POSIX_LOCKS` sends fcntl locks to
//!   us, and the module sends flock as a marked POSIX lock (FUSE's own
//!   flock flag does not reach fuser's API); both go to the owner, whose
//!   kernel arbitrates ([`locks`], `fileserv::locks`).
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

mod client;
mod convert;
mod creds;
mod fs;
mod locks;
mod nodes;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mount;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use fuser::{MountOption, SessionACL};
use tracing::{info, warn};

use crate::wire::fileop::{FileReply, FileRequest, Handle, MAX_IO};
use client::Client;

/// How a client's FUSE server reaches the owner.  `call` blocks until the
/// owner answers (a network implementation may wait on a tokio channel);
/// it is called from several FUSE worker threads at once.
pub trait Forward: Send + Sync + 'static {
    fn call(&self, req: FileRequest) -> FileReply;
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
    /// Where lock requests and their grant latency are counted.
    pub lock_metrics: std::sync::Arc<crate::metrics::LockMetrics>,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            threads: 8,
            lock_metrics: Default::default(),
        }
    }
}

/// A mounted FUSE server.  [`FuseMount::unmount`] ends it cleanly; a
/// handle dropped while still mounted detaches the mount lazily (the
/// server threads then run until its last user is gone).
#[derive(Debug)]
pub struct FuseMount {
    mountpoint: PathBuf,
    thread: Option<JoinHandle<io::Result<()>>>,
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
    let client = Client::new(forward, root, config.lock_metrics.clone())?;
    let session = fuser::Session::new(client, mountpoint, &session_config(config))?;
    // From here the session owns the mount: dropping it (a failed spawn)
    // unmounts.
    let thread = std::thread::Builder::new()
        .name("fuse-client".into())
        .spawn(move || session.run())?;
    info!(mountpoint = %mountpoint.display(), "FUSE client mounted");
    Ok(FuseMount {
        mountpoint: mountpoint.to_path_buf(),
        thread: Some(thread),
    })
}

fn session_config(config: &MountConfig) -> fuser::Config {
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        MountOption::FSName(FSNAME.into()),
        // fuser's own mount (no fusermount) uses Subtype only for the
        // source name: give the kernel the option itself.
        MountOption::CUSTOM(format!("subtype={SUBTYPE}")),
        // Reads, like writes (max_write, set at INIT), fit one peer frame.
        MountOption::CUSTOM(format!("max_read={MAX_IO}")),
        // fuser defaults to nodev,nosuid; the mxfs mount above decides
        // those for its users, as a local XFS mount would.
        MountOption::Dev,
        MountOption::Suid,
    ];
    // allow_other: the mxfs mount above is used by every user.  No
    // default_permissions: the owner checks permissions as the caller.
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
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the server still runs (it stops when the mount goes away,
    /// also by someone else's umount).
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
