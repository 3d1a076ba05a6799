//! Exit codes (as mount(8) documents them) and the one-line failure.

use std::fmt;

/// The exit codes mount(8) documents that mount.mxfs uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Success = 0,
    /// 1: incorrect invocation or permissions.
    Usage = 1,
    /// 2: system error (for example the module cannot be loaded).
    System = 2,
    /// 32: mount failure (device checks, mount(2) errors).
    MountFailure = 32,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// A failure: an exit code and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub msg: String,
}

impl Failure {
    pub fn new(exit: Exit, msg: impl Into<String>) -> Self {
        Failure {
            exit,
            msg: msg.into(),
        }
    }
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::new(Exit::Usage, msg)
    }
    pub fn system(msg: impl Into<String>) -> Self {
        Self::new(Exit::System, msg)
    }
    pub fn mount(msg: impl Into<String>) -> Self {
        Self::new(Exit::MountFailure, msg)
    }

    /// The line printed on stderr: `mount.mxfs: ...`, one line whatever
    /// the message holds.
    pub fn line(&self) -> String {
        format!("mount.mxfs: {}", one_line(&self.msg))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

/// Fold any line breaks (from an OS or tool message) into spaces.
pub fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `strerror` text of an errno, without the "(os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The failure for an errno from mount(2) (always exit 32, as mount(8)).
pub fn mount_errno(errno: i32, source: &str, target: &str) -> Failure {
    let see = "`dmesg | tail` says why";
    let msg = match errno {
        libc::EBUSY => format!(
            "{source} already mounted or {target} busy (each volume can be mounted once per node)"
        ),
        libc::ENODEV => "the kernel has no mxfs filesystem type: the module is not loaded; \
             load it with `modprobe mxfs` (install mxfs-dkms if that fails)"
            .to_string(),
        libc::ENOTBLK => format!("{source} is not a block device"),
        libc::ENOENT => format!("{source} or {target} does not exist (any more)"),
        libc::EPERM | libc::EACCES => {
            format!("permission denied mounting {source} on {target}: run it as root")
        }
        libc::ETIMEDOUT => format!(
            "mxfsd did not report ready in time; see `journalctl -t mxfsd` and {see}, \
             or raise -o daemon_timeout=SECONDS"
        ),
        libc::EINTR => "interrupted while waiting for mxfsd".to_string(),
        libc::EUCLEAN => format!("the XFS on {source} needs repair: run `xfs_repair {source}`"),
        libc::EIO => format!("mxfsd failed or exited during the mount: see `journalctl -t mxfsd` and {see}"),
        libc::EOPNOTSUPP => format!("the kernel module refused this volume or option: {see}"),
        libc::EINVAL => format!(
            "mount(2) of {source} refused (invalid argument): bad device, option or superblock; {see}"
        ),
        libc::EROFS => format!("{source} is write-protected: mount it with -o ro"),
        libc::ENOMEM => "out of memory".to_string(),
        _ => format!("mount(2) of {source} on {target} failed: {}; {see}", strerror(errno)),
    };
    Failure::mount(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_mount8s() {
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::Usage.code(), 1);
        assert_eq!(Exit::System.code(), 2);
        assert_eq!(Exit::MountFailure.code(), 32);
    }

    #[test]
    fn lines_are_one_line_and_prefixed() {
        let f = Failure::system("modprobe said:\nFATAL: x\n\n");
        assert_eq!(f.line(), "mount.mxfs: modprobe said:; FATAL: x");
        assert_eq!(f.to_string(), f.line());
    }

    #[test]
    fn mount_errnos_map_to_32_with_a_hint() {
        for e in [
            libc::EBUSY,
            libc::ENODEV,
            libc::EINVAL,
            libc::ETIMEDOUT,
            libc::EIO,
            libc::EPERM,
            libc::E2BIG,
        ] {
            let f = mount_errno(e, "/dev/sdb", "/mnt");
            assert_eq!(f.exit, Exit::MountFailure, "{e}");
            assert!(!f.line().contains('\n'));
        }
        assert!(mount_errno(libc::EBUSY, "/dev/sdb", "/mnt")
            .msg
            .contains("already mounted or /mnt busy"));
        assert!(mount_errno(libc::ENODEV, "/dev/sdb", "/mnt")
            .msg
            .contains("mxfs-dkms"));
        assert!(mount_errno(libc::E2BIG, "/dev/sdb", "/mnt")
            .msg
            .contains("Argument list too long"));
    }
}
