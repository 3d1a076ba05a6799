//! Thin, safe wrappers over the Linux calls the file service makes.
//!
//! This module owns every `unsafe` block of the file service.  Each
//! wrapper takes borrowed fds and checked C strings, returns owned fds,
//! and turns failure into a positive errno ([`Errno`]).  Raw `syscall()`
//! is used where glibc's wrapper would do something else (setgroups
//! broadcasts to every thread) or may be missing (renameat2, faccessat2,
//! getdents64 on older glibc).

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::wire::fileop::{Extent, Handle, MAX_HANDLE};

/// A positive errno.
pub type Errno = i32;
pub type SysResult<T> = Result<T, Errno>;

pub fn last_errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .filter(|e| *e > 0)
        .unwrap_or(libc::EIO)
}

fn cvt(r: libc::c_int) -> SysResult<libc::c_int> {
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: isize) -> SysResult<usize> {
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as usize)
    }
}

fn cvt_long(r: libc::c_long) -> SysResult<libc::c_long> {
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r)
    }
}

/// A checked C string of wire bytes (names were checked for NULs on the
/// wire; this is the second line).
pub fn cstr(b: &[u8]) -> SysResult<CString> {
    CString::new(b).map_err(|_| libc::EINVAL)
}

/// `/proc/self/fd/N`: reaches the inode of an O_PATH fd for calls that
/// take no fd that O_PATH allows (open, xattrs, chmod, truncate, utimes,
/// link).  The kernel lets a thread follow its own process's fd links
/// whatever its fsuid (`proc_fd_permission`, same thread group).
pub fn proc_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

fn own(fd: libc::c_int) -> SysResult<OwnedFd> {
    let fd = cvt(fd)?;
    // SAFETY: the kernel just returned this fd to us and nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct RawHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE],
}

/// The handle of `name` in `dir` (or of `dir` itself with an empty name
/// and AT_EMPTY_PATH), and its mount id.
pub fn name_to_handle(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
) -> SysResult<(Handle, libc::c_int)> {
    let mut h = RawHandle {
        handle_bytes: MAX_HANDLE as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `h` is a file_handle whose handle_bytes says how much room
    // f_handle has; name is NUL-terminated; mount_id is a valid int.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut h as *mut RawHandle,
            &mut mount_id as *mut libc::c_int,
            flags,
        )
    };
    cvt_long(r)?;
    let n = h.handle_bytes as usize;
    if n == 0 || n > MAX_HANDLE {
        return Err(libc::EOVERFLOW);
    }
    Ok((
        Handle {
            handle_type: h.handle_type,
            bytes: h.f_handle[..n].to_vec(),
        },
        mount_id,
    ))
}

/// Needs CAP_DAC_READ_SEARCH: call with the daemon's own credentials.
pub fn open_by_handle(mount: BorrowedFd<'_>, h: &Handle, flags: libc::c_int) -> SysResult<OwnedFd> {
    if h.bytes.is_empty() || h.bytes.len() > MAX_HANDLE {
        return Err(libc::EINVAL);
    }
    let mut raw = RawHandle {
        handle_bytes: h.bytes.len() as libc::c_uint,
        handle_type: h.handle_type,
        f_handle: [0; MAX_HANDLE],
    };
    raw.f_handle[..h.bytes.len()].copy_from_slice(&h.bytes);
    // SAFETY: `raw` is a file_handle with handle_bytes within f_handle.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            &mut raw as *mut RawHandle,
            flags | libc::O_CLOEXEC,
        )
    };
    own(cvt_long(r)? as libc::c_int)
}

pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> SysResult<OwnedFd> {
    // SAFETY: name is NUL-terminated; the result is checked by own().
    own(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    })
}

/// Open by path (the `/proc/self/fd/N` reopen).
pub fn open_path(path: &CStr, flags: libc::c_int) -> SysResult<OwnedFd> {
    // SAFETY: path is NUL-terminated.
    own(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0) })
}

/// statx of the fd itself (never follows a symlink).
pub fn statx(fd: BorrowedFd<'_>) -> SysResult<libc::statx> {
    statx_of(fd, libc::STATX_BASIC_STATS)
}

/// statx asking for `mask` (`stx_mask` says what the filesystem gave).
pub fn statx_of(fd: BorrowedFd<'_>, mask: u32) -> SysResult<libc::statx> {
    // SAFETY: statx is plain data; all-zero is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is an empty NUL-terminated string, `st` is valid
    // for writes.
    cvt(unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            mask,
            &mut st,
        )
    })?;
    Ok(st)
}

pub fn fstatfs(fd: BorrowedFd<'_>) -> SysResult<libc::statfs64> {
    // SAFETY: statfs64 is plain data.
    let mut st: libc::statfs64 = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes; fstatfs accepts O_PATH fds.
    cvt(unsafe { libc::fstatfs64(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> SysResult<()> {
    // SAFETY: name is NUL-terminated.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn mknodat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
    rdev: libc::dev_t,
) -> SysResult<()> {
    // SAFETY: name is NUL-terminated.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> SysResult<()> {
    // SAFETY: both strings are NUL-terminated.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> SysResult<()> {
    // SAFETY: name is NUL-terminated.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn renameat2(
    dir: BorrowedFd<'_>,
    name: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
    flags: libc::c_uint,
) -> SysResult<()> {
    // SAFETY: names are NUL-terminated; the raw call avoids depending on
    // glibc's renameat2 wrapper (2.28+).
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            flags,
        )
    };
    cvt_long(r).map(drop)
}

/// A new link of the inode behind `path` (a `/proc/self/fd/N` path:
/// linkat with AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH, which a
/// non-root fsuid does not have).
pub fn link_path(path: &CStr, newdir: BorrowedFd<'_>, newname: &CStr) -> SysResult<()> {
    // SAFETY: strings are NUL-terminated.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            path.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// The target of the symlink `fd` (an O_PATH fd of it).
pub fn readlink(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is valid for buf.len() bytes; empty path = the fd.
    let n = cvt_size(unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn fchown(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> SysResult<()> {
    // SAFETY: empty path with AT_EMPTY_PATH = the fd (O_PATH allowed).
    cvt(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid.unwrap_or(u32::MAX),
            gid.unwrap_or(u32::MAX),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn chmod(path: &CStr, mode: libc::mode_t) -> SysResult<()> {
    // SAFETY: path is NUL-terminated.
    cvt(unsafe { libc::chmod(path.as_ptr(), mode) }).map(drop)
}

pub fn truncate(path: &CStr, size: u64) -> SysResult<()> {
    let size = i64::try_from(size).map_err(|_| libc::EFBIG)?;
    // SAFETY: path is NUL-terminated.
    cvt(unsafe { libc::truncate64(path.as_ptr(), size) }).map(drop)
}

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    let size = i64::try_from(size).map_err(|_| libc::EFBIG)?;
    // SAFETY: plain call on a valid fd.
    cvt(unsafe { libc::ftruncate64(fd.as_raw_fd(), size) }).map(drop)
}

pub fn utimens(path: &CStr, times: &[libc::timespec; 2]) -> SysResult<()> {
    // SAFETY: path is NUL-terminated, times points at two timespecs.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) }).map(drop)
}

/// access(2) on the fd for the thread's fs credentials (AT_EACCESS:
/// plain access() would switch to the real uid, which we never change).
pub fn faccess(fd: BorrowedFd<'_>, mask: libc::c_int) -> SysResult<()> {
    // SAFETY: empty NUL-terminated path with AT_EMPTY_PATH = the fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mask,
            libc::AT_EMPTY_PATH | libc::AT_EACCESS,
        )
    };
    cvt_long(r).map(drop)
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> SysResult<usize> {
    let offset = i64::try_from(offset).map_err(|_| libc::EINVAL)?;
    // SAFETY: buf is valid for buf.len() bytes.
    cvt_size(unsafe { libc::pread64(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) })
}

/// A write that is on stable storage when it returns (`RWF_DSYNC`: the
/// data and what reading it back needs, such as a grown size), at
/// `offset`, or at the fd's position (appending, for O_APPEND fds) when
/// `offset` is None.
pub fn write_dsync(fd: BorrowedFd<'_>, buf: &[u8], offset: Option<u64>) -> SysResult<usize> {
    let offset = match offset {
        Some(o) => i64::try_from(o).map_err(|_| libc::EINVAL)?,
        None => -1,
    };
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one iovec describing buf, valid for buf.len() bytes, which
    // the kernel only reads.
    cvt_size(unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, offset, libc::RWF_DSYNC) })
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> SysResult<()> {
    // SAFETY: plain calls on a valid fd.
    cvt(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: libc::c_int, offset: u64, len: u64) -> SysResult<()> {
    let offset = i64::try_from(offset).map_err(|_| libc::EINVAL)?;
    let len = i64::try_from(len).map_err(|_| libc::EINVAL)?;
    // SAFETY: plain call on a valid fd.
    cvt(unsafe { libc::fallocate64(fd.as_raw_fd(), mode, offset, len) }).map(drop)
}

pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: libc::c_int) -> SysResult<i64> {
    // SAFETY: plain call on a valid fd.
    let r = unsafe { libc::lseek64(fd.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r)
    }
}

pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
    flags: u32,
) -> SysResult<usize> {
    let mut off_in = i64::try_from(off_in).map_err(|_| libc::EINVAL)?;
    let mut off_out = i64::try_from(off_out).map_err(|_| libc::EINVAL)?;
    // SAFETY: the offsets are valid i64s we own; fds are valid.
    cvt_size(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut off_in,
            fd_out.as_raw_fd(),
            &mut off_out,
            len,
            flags,
        )
    })
}

/// `FS_IOC_FIEMAP`: `_IOWR('f', 11, struct fiemap)` (libc has no name
/// for it).
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
/// `struct fiemap` without its extents: fm_start, fm_length, fm_flags,
/// fm_mapped_extents, fm_extent_count, fm_reserved.
const FIEMAP_HEAD: usize = 8 + 8 + 4 + 4 + 4 + 4;
/// `struct fiemap_extent`: fe_logical, fe_physical, fe_length,
/// `fe_reserved64[2]`, fe_flags, `fe_reserved[3]`.
const FIEMAP_EXTENT: usize = 8 + 8 + 8 + 16 + 4 + 12;

/// The extents of the file `fd` is open on from `start`, within
/// `length` bytes, at most `max` of them (`FIEMAP_FLAG_*` `flags` passed
/// on: the kernel answers EBADR for those the filesystem does not
/// support).  A filesystem without fiemap answers EOPNOTSUPP.
pub fn fiemap(
    fd: BorrowedFd<'_>,
    start: u64,
    length: u64,
    flags: u32,
    max: usize,
) -> SysResult<Vec<Extent>> {
    let count = u32::try_from(max).map_err(|_| libc::EINVAL)?;
    let size = max
        .checked_mul(FIEMAP_EXTENT)
        .and_then(|n| n.checked_add(FIEMAP_HEAD))
        .ok_or(libc::EINVAL)?;
    // The header and room for `max` extents, as bytes read and written
    // field by field (no pointer casts; the kernel copies the structure
    // in and out with copy_{from,to}_user, which needs no alignment).
    let mut buf = vec![0u8; size];
    buf[0..8].copy_from_slice(&start.to_ne_bytes());
    buf[8..16].copy_from_slice(&length.to_ne_bytes());
    buf[16..20].copy_from_slice(&flags.to_ne_bytes());
    buf[24..28].copy_from_slice(&count.to_ne_bytes());
    // SAFETY: `buf` is a `struct fiemap` whose fm_extent_count (`count`)
    // extents fit in it after the header, valid for reads and writes of
    // its whole length: the kernel writes at most that many extents and
    // the header's fm_flags and fm_mapped_extents.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FIEMAP as _, buf.as_mut_ptr()) })?;
    let u32_at = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    // With room for none the kernel counts the extents instead.
    let mapped = if max == 0 { 0 } else { u32_at(20) as usize };
    if mapped > max {
        return Err(libc::EIO);
    }
    Ok((0..mapped)
        .map(|i| {
            let at = FIEMAP_HEAD + i * FIEMAP_EXTENT;
            Extent {
                logical: u64_at(at),
                physical: u64_at(at + 8),
                length: u64_at(at + 16),
                flags: u32_at(at + 40),
            }
        })
        .collect())
}

/// One getdents64 batch into `buf`; 0 at the end of the directory.
pub fn getdents(fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    cvt_long(r).map(|n| n as usize)
}

/// A parsed `linux_dirent64`.
pub struct RawDirent<'a> {
    pub ino: u64,
    pub off: i64,
    pub kind: u8,
    pub name: &'a [u8],
}

/// Parse a getdents64 buffer without trusting it further than its
/// bounds (no pointer casts: every field is read from the byte slice).
pub fn parse_dirents(buf: &[u8]) -> SysResult<Vec<RawDirent<'_>>> {
    const HEAD: usize = 19; // d_ino 8, d_off 8, d_reclen 2, d_type 1
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let rec = buf.get(pos..pos + HEAD).ok_or(libc::EIO)?;
        let ino = u64::from_ne_bytes(rec[0..8].try_into().expect("8 bytes"));
        let off = i64::from_ne_bytes(rec[8..16].try_into().expect("8 bytes"));
        let reclen = usize::from(u16::from_ne_bytes([rec[16], rec[17]]));
        let kind = rec[18];
        let body = buf.get(pos + HEAD..pos + reclen).ok_or(libc::EIO)?;
        let name_len = body.iter().position(|&c| c == 0).ok_or(libc::EIO)?;
        out.push(RawDirent {
            ino,
            off,
            kind,
            name: &body[..name_len],
        });
        pos += reclen;
    }
    Ok(out)
}

pub fn setxattr(path: &CStr, name: &CStr, value: &[u8], flags: libc::c_int) -> SysResult<()> {
    // SAFETY: strings are NUL-terminated, value is valid for its length.
    cvt(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// getxattr into `buf` (empty: ask for the size).
pub fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: strings are NUL-terminated, buf is valid for its length
    // (a null pointer with length 0 asks for the size).
    cvt_size(unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            if buf.is_empty() {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            buf.len(),
        )
    })
}

pub fn listxattr(path: &CStr, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: as getxattr.
    cvt_size(unsafe {
        libc::listxattr(
            path.as_ptr(),
            if buf.is_empty() {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            buf.len(),
        )
    })
}

pub fn removexattr(path: &CStr, name: &CStr) -> SysResult<()> {
    // SAFETY: strings are NUL-terminated.
    cvt(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

// ---- per-thread credentials and umask ----

/// The thread's fsuid after setting it to `uid` (u32::MAX only reads it).
/// setfsuid never fails visibly: the caller compares the result.
pub fn setfsuid(uid: u32) -> u32 {
    // SAFETY: changes only the calling thread's credentials (the raw
    // syscall, not a glibc wrapper that could broadcast to all threads).
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) as u32 }
}

pub fn setfsgid(gid: u32) -> u32 {
    // SAFETY: as setfsuid.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) as u32 }
}

/// The calling thread's supplementary groups.
pub fn getgroups() -> SysResult<Vec<libc::gid_t>> {
    loop {
        // SAFETY: size 0 only asks for the count.
        let n = cvt_long(unsafe {
            libc::syscall(
                libc::SYS_getgroups,
                0 as libc::c_int,
                std::ptr::null_mut::<libc::gid_t>(),
            )
        })? as usize;
        let mut g = vec![0 as libc::gid_t; n];
        // SAFETY: g has room for n gids.
        let r = unsafe { libc::syscall(libc::SYS_getgroups, n as libc::c_int, g.as_mut_ptr()) };
        match cvt_long(r) {
            Ok(m) => {
                g.truncate(m as usize);
                return Ok(g);
            }
            // the list grew in between (another thread cannot change ours,
            // but be safe): ask again
            Err(libc::EINVAL) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Set the calling thread's supplementary groups (raw syscall: glibc's
/// setgroups() changes every thread of the process).
pub fn setgroups(groups: &[libc::gid_t]) -> SysResult<()> {
    // SAFETY: groups is valid for groups.len() gids; thread-local effect.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    cvt_long(r).map(drop)
}

/// Give the calling thread its own fs_struct, so umask() is its own.
/// Cheap when it already has one (the kernel returns at once).
pub fn unshare_fs() -> SysResult<()> {
    // SAFETY: CLONE_FS needs no privilege and affects only this thread.
    cvt(unsafe { libc::unshare(libc::CLONE_FS) }).map(drop)
}

pub fn umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: plain call; after unshare_fs() it affects only this thread.
    unsafe { libc::umask(mask) }
}

/// `makedev` / `major` / `minor` of userspace dev_t.
pub fn makedev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor)
}

/// A buffer aligned for O_DIRECT (4096 covers every XFS sector size),
/// made from a plain Vec so that no unsafe allocation is needed.
pub struct AlignedBuf {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

const DIO_ALIGN: usize = 4096;

impl AlignedBuf {
    pub fn new(len: usize) -> SysResult<Self> {
        let buf = vec![0u8; len + DIO_ALIGN];
        let start = buf.as_ptr().align_offset(DIO_ALIGN);
        if start >= DIO_ALIGN {
            return Err(libc::ENOMEM);
        }
        Ok(AlignedBuf { buf, start, len })
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}
