//! mount.mxfs: what `mount -t mxfs SPEC DIR` runs first.
//!
//! In this order, and nothing on the system changes before every check
//! has passed:
//! 1. parse the arguments and validate every option ([`options`]);
//! 2. check that it runs as root, that DIR is a directory, that SPEC
//!    (`UUID=`/`LABEL=` resolved) is a block device holding XFS
//!    ([`spec`]), and that it supports SCSI-3 persistent reservations
//!    unless `-o fence=none` ([`pr`], [`sgio`]); check that an existing
//!    node identity file is valid;
//! 3. load the module if the kernel has no `mxfs` type ([`module`]);
//! 4. make the node identity if it is missing ([`mxfs_core::identity`]);
//! 5. mount with type `mxfs`, the translated flags and the data
//!    `daemon_timeout=N,fence=none,mountpoint=DIR` (only what the module
//!    accepts), through the new mount API ([`fsmount`]) so that a refusal
//!    prints the module's own reason, or `mount(2)` where that API is
//!    missing.
//!
//! Exit codes are mount(8)'s ([`error::Exit`]).

pub mod args;
pub mod error;
pub mod fsmount;
pub mod module;
pub mod options;
pub mod pr;
pub use mxfs_core::sgio;
pub mod spec;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use mxfs_core::identity::{self, NODE_UUID_PATH};

use crate::args::{Invocation, Parsed, USAGE};
use crate::error::Failure;
use crate::options::MountOptions;
use crate::pr::PrSupport;

pub const HELP: &str = "\
Options (-o, comma-separated):
  daemon_timeout=N   seconds mount waits for mxfsd (1..3600, default 30)
  dead_interval=N    seconds a silent member lives before the others
                     fence it (3..300, default 6)
  fence=none         allow a device without SCSI-3 persistent reservations
                     (split brain is then not prevented)
  fence=scsi         fence with SCSI-3 persistent reservations (the default)
  ro rw defaults nosuid suid nodev dev noexec exec sync async dirsync
  noatime atime relatime norelatime strictatime nostrictatime nodiratime
  diratime lazytime nolazytime remount       mount(2) flags (last one wins)
  _netdev auto noauto nofail user users nouser owner group user=NAME
  x-* X-* comment=*                          for mount(8)/systemd; ignored
Flags: -s sloppy (ignore unknown options)  -f fake (check only)
       -n no mtab  -v verbose  -h help  -V version
Exit: 0 success, 1 usage or permissions, 2 system error, 32 mount failure.
See mount.mxfs(8).";

/// Entry point: the arguments after `argv[0]`; returns the exit code.
pub fn main_with<I>(args: I) -> i32
where
    I: IntoIterator<Item = OsString>,
{
    match args::parse_args(args) {
        Ok(Parsed::Help) => {
            println!("{USAGE}\n{HELP}");
            0
        }
        Ok(Parsed::Version) => {
            println!("mount.mxfs (mxfs) {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Ok(Parsed::UdevProbe(dev)) => {
            print!("{}", udev_probe(Path::new(&dev)));
            0
        }
        Ok(Parsed::Run(inv)) => match run(&inv) {
            Ok(()) => 0,
            Err(f) => {
                eprintln!("{}", f.line());
                f.exit.code()
            }
        },
        Err(f) => {
            eprintln!("{}", f.line());
            f.exit.code()
        }
    }
}

/// udev properties for a block device (IMPORT{program} format): `MXFS_PR=1`
/// when PERSISTENT RESERVE IN answered (what the mount relies on),
/// `MXFS_PR=0` when the device has none; nothing when it cannot tell
/// (NVMe: mxfsd checks at mount) or the device is gone.
pub fn udev_probe(dev: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dev) else {
        return String::new();
    };
    match pr::check(dev, meta.rdev(), Path::new(pr::SYSFS)) {
        PrSupport::Scsi(_) => "MXFS_PR=1\n".to_string(),
        PrSupport::No(_) => "MXFS_PR=0\n".to_string(),
        PrSupport::Nvme | PrSupport::Unknown(_) => String::new(),
    }
}

struct Say {
    verbose: bool,
}

impl Say {
    fn v(&self, msg: impl AsRef<str>) {
        if self.verbose {
            println!("mount.mxfs: {}", msg.as_ref());
        }
    }
    fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("mount.mxfs: warning: {}", msg.as_ref());
    }
}

fn cstring(what: &str, b: &[u8]) -> Result<CString, Failure> {
    CString::new(b).map_err(|_| Failure::usage(format!("{what} contains a NUL byte")))
}

/// mount(2).  `data` empty means no data.
fn sys_mount(
    source: &[u8],
    target: &Path,
    flags: libc::c_ulong,
    data: &[u8],
) -> Result<(), Failure> {
    let src = cstring("the device path", source)?;
    let tgt = cstring("the mount point", target.as_os_str().as_bytes())?;
    let fstype = CString::new("mxfs").expect("no NUL");
    let data_c = if data.is_empty() {
        None
    } else {
        Some(cstring("the mount options", data)?)
    };
    // The new mount API first: when the module refuses, its reason is in
    // the filesystem context and can be shown here.
    if flags & libc::MS_REMOUNT == 0 {
        match fsmount::mount(source, tgt.as_bytes(), flags, data) {
            Ok(()) => return Ok(()),
            Err(e) if e.unsupported() => {}
            Err(e) if !e.messages.is_empty() => {
                let mut msg = e.messages.join("; ");
                if e.errno == libc::ETIMEDOUT {
                    msg.push_str("; raise -o daemon_timeout=SECONDS if mxfsd needs longer");
                }
                return Err(Failure::mount(msg));
            }
            Err(e) => {
                return Err(error::mount_errno(
                    e.errno,
                    &String::from_utf8_lossy(source),
                    &target.display().to_string(),
                ))
            }
        }
    }
    let data_ptr = data_c
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call (or null for no data).
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fstype.as_ptr(), flags, data_ptr) };
    if rc == 0 {
        Ok(())
    } else {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Err(error::mount_errno(
            errno,
            &String::from_utf8_lossy(source),
            &target.display().to_string(),
        ))
    }
}

fn describe_data(data: &[u8]) -> String {
    if data.is_empty() {
        "(none)".to_string()
    } else {
        String::from_utf8_lossy(data).into_owned()
    }
}

/// Everything after argument parsing.
pub fn run(inv: &Invocation) -> Result<(), Failure> {
    let say = Say {
        verbose: inv.verbose,
    };

    // 1. options: all validated before anything else.
    let opts = options::parse_options(&inv.options, inv.sloppy)?;
    for o in &opts.ignored {
        say.warn(format!("ignoring unknown mount option {o:?} (-s)"));
    }
    if !opts.dropped.is_empty() {
        say.v(format!(
            "not passed to the kernel (for mount(8)/systemd): {}",
            opts.dropped.join(",")
        ));
    }

    // 2. checks (read only).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Failure::usage(
            "must be run as root (mounting needs CAP_SYS_ADMIN): use `sudo mount -t mxfs ...`",
        ));
    }
    let dir = spec::check_dir(&inv.dir)?;

    if opts.remount {
        return remount(inv, &opts, &dir, &say);
    }

    let data = opts.kernel_data(Some(dir.as_os_str()))?;
    let resolved = spec::resolve_spec(&inv.spec, Path::new(spec::DISK_DIR))?;
    let dev = spec::check_device(&resolved)?;
    let label = if dev.probe.label.is_empty() {
        String::new()
    } else {
        format!(", label {:?}", dev.probe.label)
    };
    say.v(format!(
        "{}: XFS v{} volume {}{label}, block size {}",
        dev.path.display(),
        dev.probe.version,
        dev.probe.uuid,
        dev.probe.block_size
    ));

    if opts.fence_none {
        say.v("fence=none: persistent reservations not checked; split brain is not prevented");
    } else {
        let support = pr::check(&dev.path, dev.rdev, Path::new(pr::SYSFS));
        if let Some(msg) = pr::refusal(&dev.path, &support) {
            return Err(Failure::mount(msg));
        }
        match &support {
            PrSupport::Scsi(k) => {
                say.v(format!(
                "SCSI-3 persistent reservations supported (generation {}, {} key(s) registered{})",
                k.generation,
                k.keys.len(),
                if k.truncated() { ", list truncated" } else { "" }
            ))
            }
            PrSupport::Nvme => {
                say.v("NVMe device: mxfsd checks its persistent reservation support")
            }
            _ => {}
        }
    }

    let ident_path = Path::new(NODE_UUID_PATH);
    let existing =
        identity::load(ident_path).map_err(|e| Failure::system(format!("node identity: {e}")))?;
    let loaded = module::mxfs_registered()?;
    let flags = opts.flags;

    if inv.fake {
        if !loaded {
            say.v("would load the module: modprobe mxfs");
        }
        match &existing {
            Some(id) => say.v(format!(
                "node identity {} (node id {:016x})",
                id.uuid, id.id
            )),
            None => say.v(format!("would make the node identity {NODE_UUID_PATH}")),
        }
        say.v(format!(
            "would mount(2) {} on {} type mxfs, flags {}, data {} (-f: not mounted)",
            dev.path.display(),
            dir.display(),
            options::describe_flags(flags),
            describe_data(&data)
        ));
        return Ok(());
    }

    // 3. module.
    if loaded {
        say.v("module mxfs is loaded");
    } else {
        say.v("loading the module: modprobe mxfs");
        module::load()?;
    }

    // 4. node identity.
    let ident = match existing {
        Some(id) => id,
        None => {
            let id = identity::load_or_create(ident_path)
                .map_err(|e| Failure::system(format!("node identity: {e}")))?;
            say.v(format!("made the node identity {NODE_UUID_PATH}"));
            id
        }
    };
    say.v(format!(
        "node identity {} (node id {:016x})",
        ident.uuid, ident.id
    ));

    // 5. mount(2).
    say.v(format!(
        "mount(2) {} on {} type mxfs, flags {}, data {}",
        dev.path.display(),
        dir.display(),
        options::describe_flags(flags),
        describe_data(&data)
    ));
    sys_mount(dev.path.as_os_str().as_bytes(), &dir, flags, &data)?;
    say.v(format!(
        "{} mounted on {}",
        dev.path.display(),
        dir.display()
    ));
    Ok(())
}

/// `-o remount,...`: change the flags of a mounted volume (the module
/// accepts ro; rw of a volume mounted ro is refused by it).  No device
/// checks: the volume is mounted already.
fn remount(inv: &Invocation, opts: &MountOptions, dir: &Path, say: &Say) -> Result<(), Failure> {
    if opts.remount_mountpoint_ignored {
        say.v("remount: ignoring mountpoint= (it cannot change)");
    }
    let data = opts.kernel_data(None)?;
    say.v(format!(
        "mount(2) remount {} flags {}, data {}",
        dir.display(),
        options::describe_flags(opts.flags),
        describe_data(&data)
    ));
    if inv.fake {
        return Ok(());
    }
    sys_mount(inv.spec.as_bytes(), dir, opts.flags, &data)
}

#[cfg(test)]
mod tests {
    /// `--help` names every option of the module's own (the parser's
    /// `daemon_timeout`, `dead_interval`, `fence`).
    #[test]
    fn help_names_the_module_options() {
        for opt in [
            "daemon_timeout=N",
            "dead_interval=N",
            "fence=none",
            "fence=scsi",
        ] {
            assert!(super::HELP.contains(opt), "--help lacks {opt}");
        }
    }
}
