//! Making `.mxfs/lockstate`: done once per volume, by the first owner,
//! through its mounted XFS.
//!
//! This module owns the creation of the file and the freeze/thaw that puts
//! its metadata in place on disk.  The sequence, and why each step:
//!
//! 1. `mkdirat(root, ".mxfs", 0700)` (an existing directory is fine).
//! 2. Refuse if `.mxfs/lockstate` exists: the file is never replaced (its
//!    secret is the volume's membership, its extents are where every node
//!    writes).
//! 3. Write the whole file under a temporary name: `fallocate` first, so
//!    XFS allocates it in as few extents as it can, then the header and
//!    zeros over every byte, so all extents are *written* (a raw write
//!    into an unwritten extent would not be visible through XFS, and raw
//!    reads of one return stale blocks); `fsync`.
//! 4. `renameat2(RENAME_NOREPLACE)` to `lockstate` (or `link` + `unlink`
//!    where the filesystem lacks it): atomic, so no node ever finds a
//!    half-made file, and a rival creator cannot replace a published one;
//!    then `fsync` the directories.
//! 5. [`freeze_thaw`] the filesystem once (separate, because it needs
//!    CAP_SYS_ADMIN and a real filesystem): `fsync` puts the new inodes in
//!    the XFS log, but the raw walker reads the in-place inodes and
//!    directory blocks, which only a log checkpoint writes; freezing forces
//!    it.
//!
//! The file never moves afterwards: XFS does not relocate a file's blocks
//! unless asked (defragmentation, `xfs_fsr`, must never be run on it).
//!
//! Two nodes must never both create: only a node that holds the XFS
//! mounted can, and only one node at a time may mount it (the owner).
//! `RENAME_NOREPLACE` makes a second creator on the same mount fail
//! cleanly (tested), but cannot help two kernels that mount one XFS.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{encode, Header, Layout, LockstateError, Slot};

pub const MXFS_DIR: &str = ".mxfs";
pub const LOCKSTATE_NAME: &str = "lockstate";

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` from linux/fs.h
/// (the libc crate does not define them).
const FIFREEZE: libc::c_ulong = 0xc004_5877;
const FITHAW: libc::c_ulong = 0xc004_5878;

/// Zeros are written in chunks of this size.
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(".mxfs/lockstate already exists; it is never replaced")]
    Exists,
    #[error(".mxfs exists and is not a directory")]
    NotADirectory,
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("making the volume secret: {0}")]
    Random(String),
    #[error(transparent)]
    Lockstate(#[from] LockstateError),
}

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("FIFREEZE: {0}")]
    Freeze(#[source] io::Error),
    /// The filesystem may be left frozen: every writer on it blocks.
    #[error("FITHAW failed, the filesystem may still be frozen: {0}")]
    Thaw(#[source] io::Error),
}

impl FreezeError {
    /// The filesystem cannot be frozen at all (not the caller's fault):
    /// no freeze support, or not permitted.
    #[cfg(test)]
    pub fn unsupported(&self) -> bool {
        matches!(self, FreezeError::Freeze(e)
            if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY)
                | Some(libc::EPERM) | Some(libc::EINVAL)))
    }
}

/// What to put in the new header.
#[derive(Debug, Clone, Copy)]
pub struct CreateParams {
    /// Slot size = the device's logical block size.
    pub layout: Layout,
    /// XFS `sb_uuid` of the volume.
    pub volume: [u8; 16],
    /// The creator's owner epoch and node id.
    pub owner_epoch: u64,
    pub owner_node: u64,
}

fn cstr(s: &str) -> CString {
    // Only called with the constant names of this module and hex.
    CString::new(s).unwrap_or_default()
}

fn io_err(step: &'static str) -> impl FnOnce(io::Error) -> CreateError {
    move |source| CreateError::Io { step, source }
}

fn last(step: &'static str) -> CreateError {
    CreateError::Io {
        step,
        source: io::Error::last_os_error(),
    }
}

/// `openat(dir, name, flags, mode)` as an owned file.
fn openat(dir: &File, name: &CString, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
    // SAFETY: `name` is a NUL-terminated string alive for the call; `dir`
    // is an open descriptor borrowed for the call.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat, is valid and owned by
    // nobody else, so OwnedFd may take it (and close it once).
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn exists_at(dir: &File, name: &CString) -> io::Result<bool> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstatat writes one `struct stat` into `st`, which is large
    // enough and alive for the call; `name` is NUL-terminated; we never
    // read `st` (only the return code matters).
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn unlink_at(dir: &File, name: &CString) -> io::Result<()> {
    // SAFETY: as for openat: a live NUL-terminated name and an open dir fd.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes the temporary file unless disarmed.
struct TempGuard<'a> {
    dir: &'a File,
    name: CString,
    armed: bool,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = unlink_at(self.dir, &self.name);
        }
    }
}

/// Publish `tmp` as `name` in `dir`, never replacing an existing `name`.
fn publish(dir: &File, tmp: &CString, name: &CString) -> Result<(), CreateError> {
    // SAFETY: both names are live NUL-terminated strings, `dir` an open
    // directory descriptor; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(
            dir.as_raw_fd(),
            tmp.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Err(CreateError::Exists),
        // No RENAME_NOREPLACE here: link() also fails if the name exists,
        // and is as atomic; the temporary name is removed by the guard.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            // SAFETY: as above; linkat only reads the names.
            let rc = unsafe {
                libc::linkat(
                    dir.as_raw_fd(),
                    tmp.as_ptr(),
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    0,
                )
            };
            if rc == 0 {
                Ok(())
            } else if io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
                Err(CreateError::Exists)
            } else {
                Err(last("linking .mxfs/lockstate"))
            }
        }
        _ => Err(CreateError::Io {
            step: "renaming into .mxfs/lockstate",
            source: e,
        }),
    }
}

/// Make `.mxfs/lockstate` under the XFS root directory `root` (see the
/// module docs; [`freeze_thaw`] comes next).  Returns the header written,
/// with its fresh random secret.
pub fn create(root: &File, p: &CreateParams) -> Result<Header, CreateError> {
    let mxfs = cstr(MXFS_DIR);
    // SAFETY: a live NUL-terminated name and an open dir fd; mkdirat only
    // reads them.
    if unsafe { libc::mkdirat(root.as_raw_fd(), mxfs.as_ptr(), 0o700) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(CreateError::Io {
                step: "making .mxfs",
                source: e,
            });
        }
    }
    let dir = openat(
        root,
        &mxfs,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTDIR) | Some(libc::ELOOP) => CreateError::NotADirectory,
        _ => CreateError::Io {
            step: "opening .mxfs",
            source: e,
        },
    })?;
    let name = cstr(LOCKSTATE_NAME);
    if exists_at(&dir, &name).map_err(io_err("looking for .mxfs/lockstate"))? {
        return Err(CreateError::Exists);
    }

    let mut secret = [0u8; 32];
    let mut tag = [0u8; 8];
    getrandom::getrandom(&mut secret).map_err(|e| CreateError::Random(e.to_string()))?;
    getrandom::getrandom(&mut tag).map_err(|e| CreateError::Random(e.to_string()))?;
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = cstr(&format!(".{LOCKSTATE_NAME}.tmp-{hex}"));
    let file = openat(
        &dir,
        &tmp,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
    )
    .map_err(io_err("creating the temporary lockstate file"))?;
    let mut guard = TempGuard {
        dir: &dir,
        name: tmp.clone(),
        armed: true,
    };

    let header = Header {
        slot_size: p.layout.slot_size(),
        owner_epoch: p.owner_epoch,
        owner_node: p.owner_node,
        secret,
        created_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0),
    };
    let len = p.layout.file_len();
    let first = encode(
        &Slot::Header(header.clone()),
        0,
        &p.volume,
        p.layout.slot_size(),
    )?;
    let off_len = libc::off_t::try_from(len).map_err(|_| CreateError::Io {
        step: "sizing the lockstate file",
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: plain syscall on an open descriptor we own; no memory passed.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, off_len) } < 0 {
        let e = io::Error::last_os_error();
        // Only an allocation hint: the zero-fill below allocates anyway.
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(CreateError::Io {
                step: "preallocating the lockstate file",
                source: e,
            });
        }
    }
    file.write_all_at(&first, 0)
        .map_err(io_err("writing the lockstate header"))?;
    let zeros = vec![0u8; CHUNK];
    let mut at = first.len() as u64;
    while at < len {
        let n = (len - at).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)
            .map_err(io_err("zero-filling the lockstate file"))?;
        at += n as u64;
    }
    file.sync_all()
        .map_err(io_err("syncing the lockstate file"))?;
    // Every node reads and writes the file on the raw device from now
    // on, never through XFS: drop its pages (a quarter GiB of them) from
    // the page cache, where they would only crowd the owner's working set
    // and go stale.  Advice only: its failure changes nothing on disk.
    // SAFETY: plain syscall on an open descriptor we own; no memory passed.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    drop(file);

    publish(&dir, &tmp, &name)?;
    if exists_at(&dir, &tmp).unwrap_or(false) {
        // link() fallback: drop the temporary name (the guard would too,
        // but a failure here is worth the error).
        unlink_at(&dir, &tmp).map_err(io_err("removing the temporary lockstate name"))?;
    }
    guard.armed = false;
    dir.sync_all().map_err(io_err("syncing .mxfs"))?;
    root.sync_all()
        .map_err(io_err("syncing the root directory"))?;
    Ok(header)
}

/// Freeze and at once thaw the filesystem holding `root`, so that XFS
/// writes its metadata in place (a log checkpoint) for raw readers.
/// Needs CAP_SYS_ADMIN; if the freeze fails nothing is thawed.
pub fn freeze_thaw(root: &File) -> Result<(), FreezeError> {
    // SAFETY: FIFREEZE takes no memory argument (the int is ignored); the
    // descriptor is open for the call.
    if unsafe { libc::ioctl(root.as_raw_fd(), FIFREEZE as _, 0) } < 0 {
        return Err(FreezeError::Freeze(io::Error::last_os_error()));
    }
    // A thaw can fail transiently (EINTR is not returned by it in 6.1, but
    // be tolerant): try a few times, since a frozen fs blocks every writer.
    let mut err = None;
    for _ in 0..3 {
        // SAFETY: as above, for FITHAW.
        if unsafe { libc::ioctl(root.as_raw_fd(), FITHAW as _, 0) } == 0 {
            return Ok(());
        }
        err = Some(io::Error::last_os_error());
    }
    Err(FreezeError::Thaw(
        err.unwrap_or_else(|| io::Error::other("FITHAW failed")),
    ))
}
