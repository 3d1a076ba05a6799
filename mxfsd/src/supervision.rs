//! Supervision by systemd (DESIGN.md §8): the process the kernel spawns
//! hands itself to `mxfsd@UUID.service` when systemd runs the machine, so
//! that the daemon is a supervised unit with its own journal, restarted
//! when it dies; without systemd (or without the unit installed) it runs
//! on directly.
//!
//! The hand-over: the spawned process writes the kernel's arguments to
//! `/run/mxfs/UUID.env` (root only) and runs `systemctl start` for the
//! unit, which returns once the unit's daemon has joined and sent READY=1;
//! the module meanwhile waits for that daemon's DAEMON_READY and takes it
//! as the volume's daemon.  After a first successful join the daemon marks
//! `/run/mxfs/UUID.attached`: a daemon that systemd restarts while the
//! mount lives finds it and re-attaches instead of joining anew.

use std::io::Write;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use tracing::{info, warn};
use uuid::Uuid;

use crate::fence::FenceMode;

/// Where the hand-over leaves the kernel's arguments for the unit, and
/// where a client's FUSE mount and the daemon's XFS view are mounted:
/// root's alone ([`private_run_dir`]).
pub const RUN_DIR: &str = "/run/mxfs";
/// Exit status that tells systemd not to restart (`RestartPreventExitStatus=`):
/// the daemon gave up on purpose.
pub const EXIT_GAVE_UP: u8 = 3;

/// The unit template, where the `mxfs` package installs it.
const UNIT_TEMPLATES: &[&str] = &[
    "/lib/systemd/system/mxfsd@.service",
    "/usr/lib/systemd/system/mxfsd@.service",
    "/etc/systemd/system/mxfsd@.service",
];

/// Make [`RUN_DIR`] a directory only root may enter (mode 0700): made
/// so, or narrowed to it when an earlier daemon left it wider.  A
/// client's FUSE mount lives there, and users must reach it only through
/// the mxfs mount above (the module holds the FUSE mount's path), never
/// directly: the module's private requests through it (see
/// `crate::fuse_client`) rely on that.
pub fn private_run_dir() -> anyhow::Result<()> {
    private_dir(Path::new(RUN_DIR))
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let md = std::fs::symlink_metadata(dir).with_context(|| format!("{}", dir.display()))?;
    if !md.is_dir() {
        // a symlink included: a chmod would follow it
        bail!("{} is not a directory", dir.display());
    }
    if md.permissions().mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} root's alone (0700)", dir.display()))?;
    }
    Ok(())
}

/// The unit of a volume.
pub fn unit_name(volume: &Uuid) -> String {
    format!("mxfsd@{}.service", volume.simple())
}

fn env_file(volume: &Uuid) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{}.env", volume.simple()))
}

fn attached_marker(volume: &Uuid) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{}.attached", volume.simple()))
}

/// Running as the unit's main process (systemd sets INVOCATION_ID).
pub fn under_unit() -> bool {
    std::env::var_os("INVOCATION_ID").is_some() && std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Whether this process should hand itself to the unit: systemd runs the
/// machine, the unit is installed, and we are not the unit already.
pub fn should_hand_over() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && !under_unit()
        && UNIT_TEMPLATES.iter().any(|p| Path::new(p).exists())
}

/// The contents of the environment file: what the unit's ExecStart needs,
/// single-quoted for systemd's EnvironmentFile parser.  `None` for values
/// that quoting cannot carry safely (a quote, a backslash, a newline): the
/// daemon then runs on without the unit.
pub fn env_contents(
    device: &Path,
    mountpoint: &str,
    token: u64,
    fence: FenceMode,
    dead_interval: u64,
) -> Option<String> {
    let device = device.to_str()?;
    let plain = |s: &str| !s.contains(['\'', '\\', '\n']);
    if !plain(device) || !plain(mountpoint) {
        return None;
    }
    Some(format!(
        "MXFSD_DEVICE='{device}'\nMXFSD_MOUNTPOINT='{mountpoint}'\nMXFSD_TOKEN={token:016x}\nMXFSD_FENCE={}\nMXFSD_DEAD_INTERVAL={dead_interval}\n",
        fence.as_str()
    ))
}

/// Hand over to `mxfsd@UUID.service`, whose environment file gets `env`
/// (from [`env_contents`]); returns the exit code for this process (that
/// of `systemctl start`).
pub fn hand_over(volume: &Uuid, env: &str) -> anyhow::Result<ExitCode> {
    private_run_dir()?;
    let path = env_file(volume);
    let tmp = path.with_extension("env.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(env.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    // A new mount: whatever an earlier one left is not ours to re-attach to.
    let _ = std::fs::remove_file(attached_marker(volume));
    let unit = unit_name(volume);
    let _ = Command::new("systemctl")
        .args(["reset-failed", &unit])
        .status();
    info!(unit = %unit, "handing over to {unit}");
    let st = Command::new("systemctl")
        .args(["start", &unit])
        .status()
        .context("running systemctl start")?;
    if !st.success() {
        bail!("systemctl start {unit} failed ({st}); see journalctl -u {unit}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A restarted unit daemon: the mount this unit joined for is still there.
pub fn is_reattach(volume: &Uuid) -> bool {
    under_unit() && attached_marker(volume).exists()
}

/// After a successful join: later restarts re-attach; tell systemd.
pub fn joined(volume: &Uuid, status: &str) {
    if !under_unit() {
        return;
    }
    if let Err(e) = std::fs::write(attached_marker(volume), b"") {
        warn!("cannot mark {}: {e}", attached_marker(volume).display());
    }
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// A STATUS= line for `systemctl status`.
pub fn status(text: &str) {
    if under_unit() {
        notify(&[sd_notify::NotifyState::Status(text)]);
    }
}

/// WATCHDOG=1.
pub fn watchdog() {
    if under_unit() {
        notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

/// The names a client's FUSE connection and its kept state have in the
/// unit's file descriptor store.
const FD_FUSE: &str = "fuse";
const FD_FUSE_STATE: &str = "fuse-state";
/// The name of the owner's reply cache copy (`cluster::reply_store`).
const FD_REPLIES: &str = "replies";

/// Give systemd a client's FUSE connection to keep while the daemon is
/// restarted (the unit's `FileDescriptorStoreMax=`): without it the
/// connection, and the client's mount, would die with the daemon.
pub fn keep_fuse(dev: BorrowedFd<'_>, state: BorrowedFd<'_>) {
    if !under_unit() {
        return;
    }
    for (name, fd) in [(FD_FUSE, dev), (FD_FUSE_STATE, state)] {
        store_fd(name, fd);
    }
}

/// Give systemd the reply cache's copy to keep for a restarted daemon.
pub fn keep_replies(fd: BorrowedFd<'_>) {
    if under_unit() {
        store_fd(FD_REPLIES, fd);
    }
}

fn store_fd(name: &str, fd: BorrowedFd<'_>) {
    let r = sd_notify::notify_with_fds(
        false,
        &[
            sd_notify::NotifyState::FdStore,
            sd_notify::NotifyState::FdName(name),
        ],
        &[fd],
    );
    if let Err(e) = r {
        warn!("sd_notify FDSTORE {name}: {e}; a restarted mxfsd cannot carry it over");
    }
}

/// What systemd kept for this restarted daemon.
#[derive(Default)]
pub struct Kept {
    /// A client's FUSE connection.
    pub fuse: Option<crate::fuse_client::Resume>,
    /// The reply cache's copy.
    pub replies: Option<OwnedFd>,
}

/// What systemd kept for this restarted daemon (nothing when it kept
/// nothing).  Other descriptors passed are closed.
pub fn kept() -> Kept {
    let fds = match sd_notify::listen_fds_with_names(true) {
        Ok(f) => f,
        Err(e) => {
            warn!("reading the descriptors systemd kept: {e}");
            return Kept::default();
        }
    };
    let (mut dev, mut state, mut replies) = (None, None, None);
    for (fd, name) in fds {
        // SAFETY: systemd passed us this descriptor (LISTEN_FDS, checked
        // against our pid); nothing else in the process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        match name.as_str() {
            FD_FUSE => dev = Some(fd),
            FD_FUSE_STATE => state = Some(fd),
            FD_REPLIES => replies = Some(fd),
            other => warn!(
                name = other,
                "closing a kept descriptor this version does not use"
            ),
        }
    }
    let fuse = match (dev, state) {
        (Some(dev), Some(state)) => Some(crate::fuse_client::Resume { dev, state }),
        (None, None) => None,
        _ => {
            warn!("systemd kept only half of the FUSE connection's descriptors");
            None
        }
    };
    Kept { fuse, replies }
}

/// The mount is gone (SHUTDOWN): no restart may re-attach.
pub fn finished(volume: &Uuid) {
    let _ = std::fs::remove_file(attached_marker(volume));
    let _ = std::fs::remove_file(env_file(volume));
    if under_unit() {
        notify(&[sd_notify::NotifyState::Stopping]);
    }
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        warn!("sd_notify: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_use_the_simple_uuid() {
        let u = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(
            unit_name(&u),
            "mxfsd@00112233445566778899aabbccddeeff.service"
        );
    }

    #[test]
    fn env_file_quotes_what_systemd_would_split() {
        let e = env_contents(
            Path::new("/dev/sdb"),
            "/mnt/my share",
            0xab,
            FenceMode::Scsi,
            6,
        );
        assert_eq!(
            e.as_deref(),
            Some("MXFSD_DEVICE='/dev/sdb'\nMXFSD_MOUNTPOINT='/mnt/my share'\nMXFSD_TOKEN=00000000000000ab\nMXFSD_FENCE=scsi\nMXFSD_DEAD_INTERVAL=6\n")
        );
        let e = env_contents(Path::new("/dev/x"), "", 1, FenceMode::None, 9).unwrap();
        assert!(
            e.contains("MXFSD_MOUNTPOINT=''\n")
                && e.contains("MXFSD_FENCE=none")
                && e.contains("MXFSD_DEAD_INTERVAL=9\n")
        );
        for bad in ["/a'b", "/a\\b", "/a\nb"] {
            assert_eq!(
                env_contents(Path::new("/dev/x"), bad, 1, FenceMode::None, 6),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_run_directory_is_made_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = crate::test_support::TempDir::new("rundir");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // made 0700, whatever the umask
        let dir = tmp.path("mxfs");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // one left wider (by an earlier daemon) is narrowed, its contents kept
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("x.env"), "k").unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert!(dir.join("x.env").exists());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // a symlink or a file in its place is refused, not followed
        let elsewhere = tmp.path("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = tmp.path("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(private_dir(&link).is_err());
        assert_eq!(mode(&elsewhere), 0o755);
        let file = tmp.path("file");
        std::fs::write(&file, "").unwrap();
        assert!(private_dir(&file).is_err());
    }
}
