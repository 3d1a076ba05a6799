//! Mounting through the kernel's new mount API (`fsopen`, `fsconfig`,
//! `fsmount`, `move_mount`, Linux 5.2+) instead of `mount(2)`, for one
//! reason: when the mount fails, the filesystem context holds the
//! module's own message (why the device was refused, mxfsd's reason for
//! giving up), which `mount(2)` throws away.  mount.mxfs prints it.
//!
//! Where the API is missing (ENOSYS) the caller falls back to `mount(2)`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// <linux/mount.h>
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
const MOUNT_ATTR_NOATIME: libc::c_uint = 0x10;
const MOUNT_ATTR_STRICTATIME: libc::c_uint = 0x20;
const MOUNT_ATTR_NODIRATIME: libc::c_uint = 0x80;

/// Why the new-API mount failed.
#[derive(Debug)]
pub struct FsMountError {
    /// The failing call.
    pub call: &'static str,
    pub errno: i32,
    /// The filesystem context's error messages (`e ...` lines, prefix
    /// removed), oldest first.
    pub messages: Vec<String>,
}

impl FsMountError {
    /// The API itself is missing: use mount(2).
    pub fn unsupported(&self) -> bool {
        self.errno == libc::ENOSYS
    }
}

/// Superblock flags (set with fsconfig) and mount attributes (given to
/// fsmount) for mount(2) `flags`.  Pure: unit-tested.
pub fn split_flags(flags: libc::c_ulong) -> (Vec<&'static str>, libc::c_uint) {
    let mut sb = Vec::new();
    let mut attr = 0;
    if flags & libc::MS_RDONLY != 0 {
        sb.push("ro");
        attr |= MOUNT_ATTR_RDONLY;
    }
    if flags & libc::MS_SYNCHRONOUS != 0 {
        sb.push("sync");
    }
    if flags & libc::MS_DIRSYNC != 0 {
        sb.push("dirsync");
    }
    if flags & libc::MS_LAZYTIME != 0 {
        sb.push("lazytime");
    }
    if flags & libc::MS_NOSUID != 0 {
        attr |= MOUNT_ATTR_NOSUID;
    }
    if flags & libc::MS_NODEV != 0 {
        attr |= MOUNT_ATTR_NODEV;
    }
    if flags & libc::MS_NOEXEC != 0 {
        attr |= MOUNT_ATTR_NOEXEC;
    }
    if flags & libc::MS_NOATIME != 0 {
        attr |= MOUNT_ATTR_NOATIME;
    } else if flags & libc::MS_STRICTATIME != 0 {
        attr |= MOUNT_ATTR_STRICTATIME;
    }
    // MOUNT_ATTR_RELATIME is 0: the default, as with mount(2).
    if flags & libc::MS_NODIRATIME != 0 {
        attr |= MOUNT_ATTR_NODIRATIME;
    }
    (sb, attr)
}

/// The error lines of what `read(2)` on a filesystem context returned:
/// `e PREFIX: text` lines become `text`.  Pure: unit-tested.
pub fn error_lines(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let line = text.trim_end_matches('\0').trim();
    let msg = line.strip_prefix("e ")?;
    // errorfc() prefixes the filesystem type ("mxfs: ").
    Some(msg.strip_prefix("mxfs: ").unwrap_or(msg).to_string())
}

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn fail(call: &'static str, fs: Option<&OwnedFd>) -> FsMountError {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut messages = Vec::new();
    if let Some(fd) = fs {
        // Each read returns one queued message; ENODATA when none is left.
        let mut buf = [0u8; 1024];
        for _ in 0..16 {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            if let Some(m) = error_lines(&buf[..n as usize]) {
                messages.push(m);
            }
        }
    }
    FsMountError {
        call,
        errno,
        messages,
    }
}

fn fsconfig(
    fd: &OwnedFd,
    cmd: libc::c_uint,
    key: Option<&CString>,
    value: Option<&CString>,
) -> libc::c_long {
    // SAFETY: key and value are NUL-terminated strings (or null) that
    // outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd.as_raw_fd(),
            cmd,
            key.map_or(std::ptr::null(), |k| k.as_ptr()),
            value.map_or(std::ptr::null(), |v| v.as_ptr()),
            0,
        )
    }
}

/// Mount `source` of type mxfs on `target` with mount(2)-style `flags`
/// and comma-separated `data` (`key=value` or `flag`).
pub fn mount(
    source: &[u8],
    target: &[u8],
    flags: libc::c_ulong,
    data: &[u8],
) -> Result<(), FsMountError> {
    let bad = |call| FsMountError {
        call,
        errno: libc::EINVAL,
        messages: vec![],
    };
    let fstype = cstr(b"mxfs").map_err(|_| bad("fsopen"))?;
    // SAFETY: fstype is a NUL-terminated string.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(fail("fsopen", None));
    }
    // SAFETY: fsopen returned a new descriptor that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };

    let src = cstr(source).map_err(|_| bad("fsconfig"))?;
    let key = cstr(b"source").map_err(|_| bad("fsconfig"))?;
    if fsconfig(&fs, FSCONFIG_SET_STRING, Some(&key), Some(&src)) < 0 {
        return Err(fail("fsconfig", Some(&fs)));
    }
    for opt in data.split(|b| *b == b',').filter(|o| !o.is_empty()) {
        let r = match opt.iter().position(|b| *b == b'=') {
            Some(eq) => {
                let k = cstr(&opt[..eq]).map_err(|_| bad("fsconfig"))?;
                let v = cstr(&opt[eq + 1..]).map_err(|_| bad("fsconfig"))?;
                fsconfig(&fs, FSCONFIG_SET_STRING, Some(&k), Some(&v))
            }
            None => {
                let k = cstr(opt).map_err(|_| bad("fsconfig"))?;
                fsconfig(&fs, FSCONFIG_SET_FLAG, Some(&k), None)
            }
        };
        if r < 0 {
            return Err(fail("fsconfig", Some(&fs)));
        }
    }
    let (sb_flags, attr) = split_flags(flags);
    for f in sb_flags {
        let k = cstr(f.as_bytes()).map_err(|_| bad("fsconfig"))?;
        if fsconfig(&fs, FSCONFIG_SET_FLAG, Some(&k), None) < 0 {
            return Err(fail("fsconfig", Some(&fs)));
        }
    }
    if fsconfig(&fs, FSCONFIG_CMD_CREATE, None, None) < 0 {
        return Err(fail("fsconfig", Some(&fs)));
    }
    // SAFETY: fs is a filesystem context descriptor.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attr) };
    if m < 0 {
        return Err(fail("fsmount", Some(&fs)));
    }
    // SAFETY: fsmount returned a new descriptor that nothing else owns.
    let mnt = unsafe { OwnedFd::from_raw_fd(m as i32) };
    let tgt = cstr(target).map_err(|_| bad("move_mount"))?;
    let empty = cstr(b"").map_err(|_| bad("move_mount"))?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            tgt.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(fail("move_mount", None));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_split_into_superblock_flags_and_mount_attributes() {
        assert_eq!(split_flags(0), (vec![], 0));
        let (sb, attr) = split_flags(libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV);
        assert_eq!(sb, vec!["ro"]);
        assert_eq!(
            attr,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
        );
        let (sb, attr) =
            split_flags(libc::MS_SYNCHRONOUS | libc::MS_NOATIME | libc::MS_STRICTATIME);
        assert_eq!(sb, vec!["sync"]);
        assert_eq!(attr, MOUNT_ATTR_NOATIME, "noatime wins over strictatime");
        let (sb, _) = split_flags(libc::MS_DIRSYNC | libc::MS_LAZYTIME);
        assert_eq!(sb, vec!["dirsync", "lazytime"]);
    }

    #[test]
    fn context_messages() {
        assert_eq!(
            error_lines(b"e mxfs: /dev/vdb holds no XFS filesystem\n").as_deref(),
            Some("/dev/vdb holds no XFS filesystem")
        );
        assert_eq!(
            error_lines(b"e Unknown parameter 'x'").as_deref(),
            Some("Unknown parameter 'x'")
        );
        assert_eq!(error_lines(b"w mxfs: a warning"), None);
        assert_eq!(error_lines(b""), None);
        assert_eq!(error_lines(&[0xff, 0xfe]), None);
    }
}
