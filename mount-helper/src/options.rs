//! Mount options: every one is classified and validated before anything
//! on the system is touched.
//!
//! Four classes:
//! - **mxfs options** the kernel module accepts: `daemon_timeout=N`
//!   (1..3600), passed on in the mount data, normalised to decimal; and
//!   `fence=scsi|none` (`none`: mount a device without SCSI-3 persistent
//!   reservations; mount.mxfs then skips its PR check and the module tells
//!   mxfsd not to fence), passed on only as `fence=none`; and
//!   `dead_interval=N` (3..300: how long a silent member lives before it is
//!   declared dead and fenced), passed on normalised to decimal.
//!   `mountpoint=` is the module's too, but mount.mxfs adds it from DIR:
//!   a user-given one is an error.
//! - **VFS flags**, translated to mount(2) flags.  Conflicting ones follow
//!   mount(8)'s rule: the last one wins (`ro,rw` is read-write).
//! - **userspace-only options** (`_netdev`, `nofail`, `x-*`, ...): for
//!   mount(8) and systemd, dropped here.
//!
//! Anything else is an error naming it (with `-s`: a warning, and the
//! option is ignored).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use libc::c_ulong;

use crate::error::Failure;

/// `daemon_timeout` bounds, as the module checks them
/// (`MXFS_MAX_DAEMON_TIMEOUT` in kmod).
pub const DAEMON_TIMEOUT_MIN: u32 = 1;
pub const DAEMON_TIMEOUT_MAX: u32 = 3600;
/// `dead_interval` bounds, as the module checks them
/// (`MXFS_MIN_DEAD_INTERVAL`, `MXFS_MAX_DEAD_INTERVAL` in kmod): more than
/// the 2 s disk heartbeat interval, at most five minutes.
pub const DEAD_INTERVAL_MIN: u32 = 3;
pub const DEAD_INTERVAL_MAX: u32 = 300;
/// mount(2) copies at most one page of data; keep below it.
pub const MAX_DATA_LEN: usize = 4095;

/// What a VFS flag option does to the mount(2) flags: clear then set.
#[derive(Debug, Clone, Copy)]
struct FlagOp {
    name: &'static str,
    set: c_ulong,
    clear: c_ulong,
}

const fn op(name: &'static str, set: c_ulong, clear: c_ulong) -> FlagOp {
    FlagOp { name, set, clear }
}

const ATIME_MODES: c_ulong = libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME;

/// Every VFS flag option mount.mxfs translates (mount(8)'s meanings).
const FLAG_OPS: &[FlagOp] = &[
    op(
        "defaults",
        0,
        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_SYNCHRONOUS,
    ),
    op("ro", libc::MS_RDONLY, 0),
    op("rw", 0, libc::MS_RDONLY),
    op("nosuid", libc::MS_NOSUID, 0),
    op("suid", 0, libc::MS_NOSUID),
    op("nodev", libc::MS_NODEV, 0),
    op("dev", 0, libc::MS_NODEV),
    op("noexec", libc::MS_NOEXEC, 0),
    op("exec", 0, libc::MS_NOEXEC),
    op("sync", libc::MS_SYNCHRONOUS, 0),
    op("async", 0, libc::MS_SYNCHRONOUS),
    op("dirsync", libc::MS_DIRSYNC, 0),
    op("noatime", libc::MS_NOATIME, ATIME_MODES),
    op("atime", 0, libc::MS_NOATIME),
    op("relatime", libc::MS_RELATIME, ATIME_MODES),
    op("norelatime", 0, libc::MS_RELATIME),
    op("strictatime", libc::MS_STRICTATIME, ATIME_MODES),
    op("nostrictatime", 0, libc::MS_STRICTATIME),
    op("nodiratime", libc::MS_NODIRATIME, 0),
    op("diratime", 0, libc::MS_NODIRATIME),
    op("lazytime", libc::MS_LAZYTIME, 0),
    op("nolazytime", 0, libc::MS_LAZYTIME),
    op("remount", libc::MS_REMOUNT, 0),
];

/// Userspace-only options, dropped: exact names.
const USERSPACE_NAMES: &[&str] = &[
    "_netdev", "auto", "noauto", "nofail", "user", "users", "nouser", "owner", "group",
];
/// Userspace-only options, dropped: prefixes (`x-*`, `X-*`, `comment=*`,
/// `user=NAME` as mount(8) passes it for a user mount).
const USERSPACE_PREFIXES: &[&str] = &["x-", "X-", "comment=", "user="];

/// The validated options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountOptions {
    /// mount(2) flags.
    pub flags: c_ulong,
    /// `daemon_timeout=N`, if given.
    pub daemon_timeout: Option<u32>,
    /// `fence=none`: do not require SCSI-3 PR support.
    pub fence_none: bool,
    /// `dead_interval=N`, if given (the module's default is 6).
    pub dead_interval: Option<u32>,
    /// `remount`: change the flags of a mounted volume.
    pub remount: bool,
    /// A `mountpoint=` given on a remount (mount(8) may repeat the
    /// options the kernel shows); ignored.
    pub remount_mountpoint_ignored: bool,
    /// Userspace-only options that were dropped.
    pub dropped: Vec<String>,
    /// Unknown options ignored because of `-s`.
    pub ignored: Vec<String>,
}

fn split_opt(item: &str) -> (&str, Option<&str>) {
    match item.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (item, None),
    }
}

/// A whole number of seconds in `min..=max` (`daemon_timeout=`,
/// `dead_interval=`), decimal digits only; `prev` is the value an earlier
/// occurrence gave, which a different one contradicts.
fn parse_seconds(
    name: &str,
    value: Option<&str>,
    (min, max): (u32, u32),
    prev: Option<u32>,
) -> Result<u32, Failure> {
    let Some(v) = value else {
        return Err(Failure::usage(format!(
            "{name} needs a value: {name}=SECONDS ({min}..{max})"
        )));
    };
    let bad = || {
        Failure::usage(format!(
            "{name}={v}: must be a whole number of seconds, {min}..{max}"
        ))
    };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u32 = v.parse().map_err(|_| bad())?;
    if !(min..=max).contains(&n) {
        return Err(bad());
    }
    match prev {
        Some(p) if p != n => Err(Failure::usage(format!(
            "{name} given twice with different values ({p} and {n}); keep one ({min}..{max})"
        ))),
        _ => Ok(n),
    }
}

/// Parse and validate a comma-separated option string.  `sloppy` (`-s`)
/// turns an unknown option into an ignored one (the caller warns).
pub fn parse_options(s: &str, sloppy: bool) -> Result<MountOptions, Failure> {
    let mut o = MountOptions::default();
    let mut mountpoint_given = false;
    for item in s.split(',') {
        if item.is_empty() {
            continue;
        }
        let (name, value) = split_opt(item);
        if let Some(fop) = FLAG_OPS.iter().find(|f| f.name == name) {
            if value.is_some() {
                return Err(Failure::usage(format!(
                    "option {item}: {name} takes no value"
                )));
            }
            o.flags = (o.flags & !fop.clear) | fop.set;
            if name == "remount" {
                o.remount = true;
            }
            continue;
        }
        match (name, value) {
            ("daemon_timeout", _) => {
                let range = (DAEMON_TIMEOUT_MIN, DAEMON_TIMEOUT_MAX);
                o.daemon_timeout = Some(parse_seconds(name, value, range, o.daemon_timeout)?);
            }
            ("dead_interval", _) => {
                let range = (DEAD_INTERVAL_MIN, DEAD_INTERVAL_MAX);
                o.dead_interval = Some(parse_seconds(name, value, range, o.dead_interval)?);
            }
            ("fence", Some("none")) => o.fence_none = true,
            ("fence", Some("scsi")) => o.fence_none = false,
            ("fence", _) => {
                return Err(Failure::usage(format!(
                    "option {item}: fence is fence=scsi (the default: SCSI-3 persistent \
                     reservations) or fence=none (no fencing)"
                )))
            }
            ("mountpoint", _) => mountpoint_given = true,
            _ if USERSPACE_NAMES.contains(&item)
                || USERSPACE_PREFIXES.iter().any(|p| item.starts_with(p)) =>
            {
                o.dropped.push(item.to_string());
            }
            _ if sloppy => o.ignored.push(item.to_string()),
            _ => {
                return Err(Failure::usage(format!(
                    "unknown mount option {item:?}; see mount.mxfs(8) for the options mxfs accepts \
                     (-s ignores unknown ones)"
                )))
            }
        }
    }
    if mountpoint_given {
        if o.remount {
            o.remount_mountpoint_ignored = true;
        } else {
            return Err(Failure::usage(
                "option mountpoint= is set by mount.mxfs itself from DIR; remove it",
            ));
        }
    }
    Ok(o)
}

impl MountOptions {
    /// The data string for mount(2): the options the module accepts
    /// (`daemon_timeout=N`, `fence=none` unless remounting,
    /// `dead_interval=N`, then `mountpoint=DIR` unless remounting).
    pub fn kernel_data(&self, mountpoint: Option<&OsStr>) -> Result<Vec<u8>, Failure> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        if let Some(t) = self.daemon_timeout {
            parts.push(format!("daemon_timeout={t}").into_bytes());
        }
        if self.fence_none && mountpoint.is_some() {
            parts.push(b"fence=none".to_vec());
        }
        if let Some(d) = self.dead_interval {
            parts.push(format!("dead_interval={d}").into_bytes());
        }
        if let Some(dir) = mountpoint {
            let b = dir.as_bytes();
            if b.contains(&b',') {
                return Err(Failure::mount(format!(
                    "mount point {}: a path with a comma cannot be passed to the kernel module; \
                     use a directory without ','",
                    dir.to_string_lossy()
                )));
            }
            if b.contains(&0) {
                return Err(Failure::mount("mount point path contains a NUL byte"));
            }
            let mut p = b"mountpoint=".to_vec();
            p.extend_from_slice(b);
            parts.push(p);
        }
        let data = parts.join(&b","[..]);
        if data.len() > MAX_DATA_LEN {
            return Err(Failure::mount(format!(
                "mount options are {} bytes, more than the kernel takes ({MAX_DATA_LEN}); \
                 use a shorter mount point path",
                data.len()
            )));
        }
        Ok(data)
    }
}

/// The mount(2) flags as text, for `-v`.
pub fn describe_flags(flags: c_ulong) -> String {
    const NAMES: &[(c_ulong, &str)] = &[
        (libc::MS_RDONLY, "ro"),
        (libc::MS_NOSUID, "nosuid"),
        (libc::MS_NODEV, "nodev"),
        (libc::MS_NOEXEC, "noexec"),
        (libc::MS_SYNCHRONOUS, "sync"),
        (libc::MS_REMOUNT, "remount"),
        (libc::MS_DIRSYNC, "dirsync"),
        (libc::MS_NOATIME, "noatime"),
        (libc::MS_NODIRATIME, "nodiratime"),
        (libc::MS_RELATIME, "relatime"),
        (libc::MS_STRICTATIME, "strictatime"),
        (libc::MS_LAZYTIME, "lazytime"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "rw".to_string()
    } else {
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    fn ok(s: &str) -> MountOptions {
        parse_options(s, false).unwrap_or_else(|e| panic!("{s}: {}", e.msg))
    }

    fn err(s: &str) -> Failure {
        let e = parse_options(s, false).unwrap_err();
        assert_eq!(e.exit, Exit::Usage, "{s}");
        e
    }

    #[test]
    fn empty_and_defaults() {
        assert_eq!(ok(""), MountOptions::default());
        assert_eq!(ok(",,"), MountOptions::default());
        assert_eq!(ok("defaults").flags, 0);
        assert_eq!(ok("ro,nosuid,defaults").flags, 0);
    }

    #[test]
    fn every_vfs_flag_translates() {
        for (opt, flag) in [
            ("ro", libc::MS_RDONLY),
            ("nosuid", libc::MS_NOSUID),
            ("nodev", libc::MS_NODEV),
            ("noexec", libc::MS_NOEXEC),
            ("sync", libc::MS_SYNCHRONOUS),
            ("dirsync", libc::MS_DIRSYNC),
            ("noatime", libc::MS_NOATIME),
            ("relatime", libc::MS_RELATIME),
            ("strictatime", libc::MS_STRICTATIME),
            ("nodiratime", libc::MS_NODIRATIME),
            ("lazytime", libc::MS_LAZYTIME),
            ("remount", libc::MS_REMOUNT),
        ] {
            assert_eq!(ok(opt).flags, flag, "{opt}");
        }
        for (set, unset) in [
            ("ro", "rw"),
            ("nosuid", "suid"),
            ("nodev", "dev"),
            ("noexec", "exec"),
            ("sync", "async"),
            ("noatime", "atime"),
            ("relatime", "norelatime"),
            ("strictatime", "nostrictatime"),
            ("nodiratime", "diratime"),
            ("lazytime", "nolazytime"),
        ] {
            assert_eq!(ok(&format!("{set},{unset}")).flags, 0, "{set},{unset}");
            assert_ne!(ok(&format!("{unset},{set}")).flags, 0, "{unset},{set}");
        }
        assert_eq!(
            ok("ro,nosuid,nodev,noexec,noatime").flags,
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOATIME
        );
    }

    #[test]
    fn conflicting_flags_last_one_wins() {
        assert_eq!(ok("rw,ro").flags, libc::MS_RDONLY);
        assert_eq!(ok("ro,rw").flags, 0);
        assert_eq!(ok("noatime,relatime").flags, libc::MS_RELATIME);
        assert_eq!(ok("relatime,strictatime").flags, libc::MS_STRICTATIME);
        assert_eq!(ok("strictatime,noatime").flags, libc::MS_NOATIME);
        assert_eq!(ok("ro,ro").flags, libc::MS_RDONLY);
    }

    #[test]
    fn flags_take_no_value() {
        assert!(err("ro=1").msg.contains("takes no value"));
        assert!(err("noatime=yes").msg.contains("noatime"));
    }

    #[test]
    fn daemon_timeout() {
        assert_eq!(ok("daemon_timeout=1").daemon_timeout, Some(1));
        assert_eq!(ok("daemon_timeout=3600").daemon_timeout, Some(3600));
        // decimal, normalised: the module would read "010" as octal
        assert_eq!(ok("daemon_timeout=010").daemon_timeout, Some(10));
        assert_eq!(
            ok("daemon_timeout=5,daemon_timeout=5").daemon_timeout,
            Some(5)
        );
        for bad in [
            "daemon_timeout=0",
            "daemon_timeout=3601",
            "daemon_timeout=-1",
            "daemon_timeout=+5",
            "daemon_timeout=0x10",
            "daemon_timeout= 5",
            "daemon_timeout=",
            "daemon_timeout=99999999999999999999",
        ] {
            assert!(err(bad).msg.contains("1..3600"), "{bad}");
        }
        assert!(err("daemon_timeout").msg.contains("needs a value"));
        assert!(err("daemon_timeout=5,daemon_timeout=6")
            .msg
            .contains("twice"));
    }

    #[test]
    fn dead_interval() {
        assert_eq!(ok("").dead_interval, None, "the module's default (6)");
        assert_eq!(ok("dead_interval=3").dead_interval, Some(3));
        assert_eq!(ok("dead_interval=6").dead_interval, Some(6));
        assert_eq!(ok("dead_interval=300").dead_interval, Some(300));
        // decimal, normalised
        assert_eq!(ok("dead_interval=010").dead_interval, Some(10));
        assert_eq!(ok("dead_interval=9,dead_interval=9").dead_interval, Some(9));
        assert_eq!(
            ok("dead_interval=9,dead_interval=09").dead_interval,
            Some(9)
        );
        // independent of daemon_timeout
        let o = ok("daemon_timeout=60,dead_interval=20");
        assert_eq!((o.daemon_timeout, o.dead_interval), (Some(60), Some(20)));
        // out of range: not above the 2 s heartbeat, or beyond five minutes
        for bad in [
            "dead_interval=0",
            "dead_interval=1",
            "dead_interval=2",
            "dead_interval=301",
            "dead_interval=3600",
            "dead_interval=99999999999999999999",
        ] {
            let e = err(bad);
            assert!(
                e.msg.contains("dead_interval=") && e.msg.contains("3..300"),
                "{bad}: {}",
                e.msg
            );
            assert!(
                e.msg.contains("whole number of seconds"),
                "{bad}: {}",
                e.msg
            );
        }
        // not a number
        for bad in [
            "dead_interval=",
            "dead_interval=-5",
            "dead_interval=+5",
            "dead_interval=0x10",
            "dead_interval= 6",
            "dead_interval=6s",
            "dead_interval=6.5",
            "dead_interval=six",
        ] {
            let e = err(bad);
            assert!(
                e.msg.contains("dead_interval=") && e.msg.contains("3..300"),
                "{bad}: {}",
                e.msg
            );
        }
        // missing value
        let e = err("dead_interval");
        assert!(e.msg.contains("dead_interval needs a value"), "{}", e.msg);
        assert!(e.msg.contains("3..300"), "{}", e.msg);
        // two different values
        let e = err("dead_interval=6,dead_interval=10");
        assert!(e.msg.contains("dead_interval given twice"), "{}", e.msg);
        assert!(
            e.msg.contains("6 and 10") && e.msg.contains("3..300"),
            "{}",
            e.msg
        );
        // every message is one line
        for bad in [
            "dead_interval",
            "dead_interval=2",
            "dead_interval=6,dead_interval=7",
        ] {
            assert!(!err(bad).msg.contains('\n'), "{bad}");
        }
        // sloppy does not excuse a bad value of a known option
        assert!(parse_options("dead_interval=2", true).is_err());
        assert!(parse_options("dead_interval", true).is_err());
    }

    #[test]
    fn fence() {
        assert!(ok("fence=none").fence_none);
        assert!(ok("fence=none,fence=none").fence_none);
        assert!(!ok("ro").fence_none);
        assert!(!ok("fence=none,fence=scsi").fence_none, "the last one wins");
        for bad in ["fence", "fence=", "fence=sbd", "fence=NONE"] {
            assert!(err(bad).msg.contains("fence=none"), "{bad}");
        }
    }

    #[test]
    fn mountpoint_is_the_helpers() {
        assert!(err("mountpoint=/mnt").msg.contains("set by mount.mxfs"));
        assert!(err("mountpoint").msg.contains("set by mount.mxfs"));
        // ... but a remount may carry what the kernel shows
        let o = ok("mountpoint=/mnt,remount,ro");
        assert!(o.remount && o.remount_mountpoint_ignored);
        assert_eq!(o.flags, libc::MS_REMOUNT | libc::MS_RDONLY);
    }

    #[test]
    fn userspace_options_are_dropped() {
        let o = ok("_netdev,auto,noauto,nofail,user,users,nouser,owner,group,\
                    x-systemd.requires=iscsi.service,X-mount.mkdir,comment=hi,user=bob");
        assert_eq!(o.flags, 0);
        assert_eq!(o.dropped.len(), 13);
        assert!(o
            .dropped
            .contains(&"x-systemd.requires=iscsi.service".to_string()));
    }

    #[test]
    fn unknown_options_are_errors_naming_them_unless_sloppy() {
        let e = err("ro,discard,_netdev");
        assert!(e.msg.contains("\"discard\""), "{}", e.msg);
        assert!(err("context=system_u:object_r:x").msg.contains("context="));
        assert!(err("Ro").msg.contains("\"Ro\""));
        let o = parse_options("ro,discard,inode64,daemon_timeout=9", true).unwrap();
        assert_eq!(o.ignored, vec!["discard", "inode64"]);
        assert_eq!(o.flags, libc::MS_RDONLY);
        assert_eq!(o.daemon_timeout, Some(9));
        // sloppy does not excuse a bad value of a known option
        assert!(parse_options("daemon_timeout=0", true).is_err());
        assert!(parse_options("mountpoint=/x", true).is_err());
    }

    #[test]
    fn kernel_data_is_exactly_what_the_module_accepts() {
        let o = ok("ro,_netdev,fence=none,daemon_timeout=060");
        assert_eq!(
            o.kernel_data(Some(OsStr::new("/mnt/shared"))).unwrap(),
            b"daemon_timeout=60,fence=none,mountpoint=/mnt/shared"
        );
        assert_eq!(
            ok("").kernel_data(Some(OsStr::new("/m"))).unwrap(),
            b"mountpoint=/m"
        );
        assert_eq!(ok("remount").kernel_data(None).unwrap(), b"");
        assert_eq!(
            ok("dead_interval=012,ro")
                .kernel_data(Some(OsStr::new("/m")))
                .unwrap(),
            b"dead_interval=12,mountpoint=/m"
        );
        assert_eq!(
            ok("fence=none,dead_interval=30,daemon_timeout=5")
                .kernel_data(Some(OsStr::new("/m")))
                .unwrap(),
            b"daemon_timeout=5,fence=none,dead_interval=30,mountpoint=/m"
        );
        // a remount passes it like daemon_timeout (the module checks it
        // and keeps the running daemon's value)
        assert_eq!(
            ok("remount,ro,dead_interval=10").kernel_data(None).unwrap(),
            b"dead_interval=10"
        );
        let e = ok("")
            .kernel_data(Some(OsStr::new("/mnt/a,b")))
            .unwrap_err();
        assert_eq!(e.exit, Exit::MountFailure);
        assert!(e.msg.contains("comma"));
        let long = format!("/{}", "d".repeat(5000));
        assert!(ok("").kernel_data(Some(OsStr::new(&long))).is_err());
    }

    #[test]
    fn flags_describe() {
        assert_eq!(describe_flags(0), "rw");
        assert_eq!(
            describe_flags(libc::MS_RDONLY | libc::MS_NOATIME),
            "ro,noatime"
        );
    }
}
