//! The daemon's own view of the volume's XFS: a mount of the device in a
//! mount namespace that only one thread of this daemon lives in.
//!
//! The owner's file service runs clients' requests against the XFS
//! through file handles, and the first owner makes `.mxfs/lockstate`,
//! which the mxfs mount hides.  Both need the XFS itself, but nothing but
//! the `mxfs` mount may be visible to users (design section 3).  One
//! kernel mounting one device twice gets one superblock, so this view and
//! the module's lower mount are the same XFS, with one log.
//!
//! A dedicated thread unshares its filesystem context and mount namespace
//! (`unshare(CLONE_FS | CLONE_NEWNS)` affects only the calling thread),
//! makes everything there a slave (so the mount never propagates back,
//! while unmounts made outside still reach the namespace's copies: a
//! copy of a mount keeps its superblock alive, and a copy of an mxfs
//! mount would keep that mount's daemon from ever hearing SHUTDOWN),
//! detaches the copies of mxfs and FUSE-client mounts in any case (a
//! node that takes a volume over makes its view while its own mxfs
//! mount exists),
//! mounts the device on a directory under `/run/mxfs`, opens the root,
//! and parks.  The root's descriptor works from every thread.  Dropping
//! the view wakes the thread, which unmounts and exits: the XFS is then
//! unmounted for real once the module has dropped its own mount too.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{bail, Context};
use tracing::{info, warn};

pub struct XfsView {
    /// Closed before the unmount, so that nothing of ours holds the XFS.
    root: Option<File>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn cvt(r: libc::c_int, what: &str) -> anyhow::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error()).with_context(|| what.to_string())
    } else {
        Ok(())
    }
}

fn cstr(p: &Path) -> anyhow::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("path with a NUL byte")
}

/// A mountinfo path field: `\040` and the like are octal escapes.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The mount points of mxfs and mxfs FUSE-client mounts in a mountinfo
/// text.
fn mxfs_mount_points(mountinfo: &str) -> Vec<Vec<u8>> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            if fstype != "mxfs" && fstype != "fuse.mxfs" {
                return None;
            }
            left.split(' ').nth(4).map(unescape_mountinfo)
        })
        .collect()
}

/// Detach, in this thread's namespace, the copies of mxfs mounts (this
/// volume's and others') that unshare made.
fn drop_copied_mxfs_mounts() {
    let Ok(info) = std::fs::read_to_string("/proc/thread-self/mountinfo") else {
        warn!(
            "reading the view's mountinfo: {}",
            std::io::Error::last_os_error()
        );
        return;
    };
    // innermost first: the mxfs mount sits over nothing of ours, but a
    // FUSE mount may sit under an mxfs one of another volume
    for point in mxfs_mount_points(&info).into_iter().rev() {
        let Ok(c) = CString::new(point) else { continue };
        // SAFETY: valid C string.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } < 0 {
            warn!(
                "detaching the view's copy of {:?}: {}",
                c,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The namespace thread: returns the root fd, then waits for `stop`.
fn namespace_thread(
    device: &Path,
    dir: &Path,
    ready: &mpsc::Sender<anyhow::Result<File>>,
    stop: &mpsc::Receiver<()>,
) {
    let mounted = (|| -> anyhow::Result<File> {
        // SAFETY: plain syscalls on this thread's own context.
        cvt(
            unsafe { libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) },
            "unshare(CLONE_NEWNS)",
        )?;
        let root = cstr(Path::new("/"))?;
        // SAFETY: valid C strings; null fstype/data are allowed for
        // a propagation change.
        cvt(
            unsafe {
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                )
            },
            "making the private namespace's mounts slaves",
        )?;
        drop_copied_mxfs_mounts();
        crate::supervision::private_run_dir()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dev = cstr(device)?;
        let target = cstr(dir)?;
        let fstype = CString::new("xfs")?;
        // SAFETY: valid C strings; no data.
        cvt(
            unsafe {
                libc::mount(
                    dev.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    libc::MS_NOATIME,
                    std::ptr::null(),
                )
            },
            &format!("mounting {} (xfs) at {}", device.display(), dir.display()),
        )?;
        let path = cstr(dir)?;
        // SAFETY: valid C string; the fd returned is ours.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: valid C string.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            return Err(e).context("opening the XFS root");
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    })();
    let ok = mounted.is_ok();
    let _ = ready.send(mounted);
    if !ok {
        return;
    }
    // Park until the view is dropped (or its owner is gone).
    let _ = stop.recv();
    if let Ok(target) = cstr(dir) {
        // SAFETY: valid C string.  A plain unmount when nothing holds the
        // XFS (it is then really unmounted before this returns, if the
        // module's mount is gone too); lazy when something still does.
        if unsafe { libc::umount2(target.as_ptr(), 0) } < 0
            // SAFETY: as above.
            && unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } < 0
        {
            warn!(
                "unmounting the daemon's XFS view at {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl XfsView {
    /// Mount `device` (XFS) privately for volume `volume`.
    pub fn mount(device: &Path, volume: &uuid::Uuid) -> anyhow::Result<XfsView> {
        let dir =
            Path::new(crate::supervision::RUN_DIR).join(format!("{}.xfs", volume.hyphenated()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel();
        let device = device.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("xfs-view".into())
            .spawn(move || namespace_thread(&device, &dir, &ready_tx, &stop_rx))
            .context("starting the XFS view thread")?;
        let root = match ready_rx.recv() {
            Ok(r) => r,
            Err(_) => {
                let _ = thread.join();
                bail!("the XFS view thread ended without an answer");
            }
        };
        match root {
            Ok(root) => {
                info!("the daemon's private view of the XFS is mounted");
                Ok(XfsView {
                    root: Some(root),
                    stop: Some(stop_tx),
                    thread: Some(thread),
                })
            }
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    /// The XFS root directory, open.
    pub fn root(&self) -> Option<&File> {
        self.root.as_ref()
    }
}

impl Drop for XfsView {
    fn drop(&mut self) {
        drop(self.root.take());
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                warn!("the XFS view thread panicked");
            }
        }
    }
}

/// Whether a filesystem mounted on this node still holds `device` (an
/// exclusive open of a block device fails with EBUSY while one does).
/// An owner checks this before it gives up the reservation: the next
/// owner mounts the XFS, and two mounts of it on two nodes would
/// corrupt it.
pub fn device_in_use(device: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(device)
    {
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mxfs_and_its_fuse_mounts_are_found_in_mountinfo() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:50 / /run/mxfs/v.fuse rw,nosuid shared:40 - fuse.mxfs mxfs-client rw,user_id=0
91 22 0:51 / /mnt/my\\040share rw shared:41 - mxfs /dev/sda rw
92 22 0:52 / /mnt/other rw shared:42 - xfs /dev/sdb rw
";
        let points = mxfs_mount_points(info);
        assert_eq!(
            points,
            vec![b"/run/mxfs/v.fuse".to_vec(), b"/mnt/my share".to_vec()]
        );
        assert_eq!(unescape_mountinfo("a\\134b"), b"a\\b".to_vec());
        assert_eq!(unescape_mountinfo("tail\\04"), b"tail\\04".to_vec());
    }
}
