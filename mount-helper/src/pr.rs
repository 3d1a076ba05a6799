//! Does the device support SCSI-3 persistent reservations, the fencing
//! MXFS relies on to stop a failed node from writing (DESIGN.md §5)?
//!
//! - NVMe: PR goes through the `linux/pr.h` ioctls, which mxfsd uses and
//!   checks itself; mount.mxfs does not fail here.
//! - Anything else: PERSISTENT RESERVE IN / READ KEYS over SG_IO.  A
//!   device that rejects it (ILLEGAL REQUEST) or does not take SG_IO at
//!   all (virtio-blk, loop, ...) has no PR.

use std::fs::{self, File};
use std::path::Path;

use crate::error::strerror;
use crate::sgio::{self, PrProbe, ReadKeys};

pub const SYSFS: &str = "/sys";

/// What sysfs says the device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// Has `device/scsi_device` (sd, including iSCSI and SAS LUNs).
    Scsi,
    /// An NVMe namespace (or a partition of one).
    Nvme,
    /// Something else (virtio-blk, loop, dm, md, ...): its sysfs name.
    Other(String),
    /// No sysfs entry for the device number.
    Unknown,
}

/// Classify device MAJ:MIN from sysfs (`sysfs` is `/sys`; tests pass a
/// stand-in tree).
pub fn sysfs_kind(sysfs: &Path, major: u32, minor: u32) -> DeviceKind {
    let link = sysfs.join(format!("dev/block/{major}:{minor}"));
    let Ok(mut dir) = fs::canonicalize(&link) else {
        return DeviceKind::Unknown;
    };
    // A partition's disk is its parent directory.
    if dir.join("partition").exists() {
        if let Some(parent) = dir.parent() {
            dir = parent.to_path_buf();
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("nvme") {
        DeviceKind::Nvme
    } else if dir.join("device/scsi_device").is_dir() {
        DeviceKind::Scsi
    } else {
        DeviceKind::Other(name)
    }
}

/// The answer for the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrSupport {
    /// READ KEYS worked.
    Scsi(ReadKeys),
    /// NVMe: mxfsd checks.
    Nvme,
    /// No PR, and why.
    No(String),
    /// Could not tell, and why.
    Unknown(String),
}

fn not_sg_io(errno: Option<i32>) -> bool {
    const ENOIOCTLCMD: i32 = 515;
    matches!(
        errno,
        Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(ENOIOCTLCMD)
    )
}

/// Check PR support of `dev` (device number `rdev`).
pub fn check(dev: &Path, rdev: u64, sysfs: &Path) -> PrSupport {
    let kind = sysfs_kind(sysfs, libc::major(rdev), libc::minor(rdev));
    if kind == DeviceKind::Nvme {
        return PrSupport::Nvme;
    }
    let f = match File::open(dev) {
        Ok(f) => f,
        Err(e) => return PrSupport::Unknown(format!("cannot open it: {e}")),
    };
    match sgio::read_keys(&f) {
        Ok(PrProbe::Keys(k)) => PrSupport::Scsi(k),
        Ok(PrProbe::Unsupported(why)) => PrSupport::No(why),
        Ok(PrProbe::Failed(why)) | Ok(PrProbe::Retry(why)) => {
            PrSupport::Unknown(format!("PERSISTENT RESERVE IN failed: {why}"))
        }
        Err(e) if not_sg_io(e.raw_os_error()) => {
            let e = strerror(e.raw_os_error().unwrap_or(0));
            PrSupport::No(match kind {
                DeviceKind::Scsi => format!("the SCSI device does not take SG_IO: {e}"),
                DeviceKind::Other(name) => format!("{name} is not a SCSI device (SG_IO: {e})"),
                _ => format!("not a SCSI device (SG_IO: {e})"),
            })
        }
        Err(e) => PrSupport::Unknown(format!("SG_IO failed: {e}")),
    }
}

/// The failure text when PR is missing or unknown.
pub fn refusal(dev: &Path, support: &PrSupport) -> Option<String> {
    let dev = dev.display();
    match support {
        PrSupport::Scsi(_) | PrSupport::Nvme => None,
        PrSupport::No(why) => Some(format!(
            "{dev} does not support SCSI-3 persistent reservations ({why}): MXFS could not fence \
             a failed node, so split brain (two nodes writing the volume) would not be prevented; \
             use a device with PR, or mount with -o fence=none to accept that risk"
        )),
        PrSupport::Unknown(why) => Some(format!(
            "cannot tell whether {dev} supports SCSI-3 persistent reservations ({why}); without \
             them split brain would not be prevented; check the device, or mount with \
             -o fence=none to accept that risk"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("mount-mxfs-sysfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sysfs_classification() {
        let s = tempdir();
        let block = s.join("dev/block");
        fs::create_dir_all(&block).unwrap();
        let dev = |rel: &str, majmin: &str| {
            let p = s.join(rel);
            fs::create_dir_all(&p).unwrap();
            symlink(&p, block.join(majmin)).unwrap();
            p
        };
        // sdb and its partition sdb1, with a SCSI device
        let sdb = dev("devices/platform/host0/target0/0:0:0:1/block/sdb", "8:16");
        fs::create_dir_all(sdb.join("device/scsi_device/0:0:0:1")).unwrap();
        let sdb1 = dev(
            "devices/platform/host0/target0/0:0:0:1/block/sdb/sdb1",
            "8:17",
        );
        fs::write(sdb1.join("partition"), "1\n").unwrap();
        // an NVMe namespace partition, a virtio disk, a loop device
        let n1 = dev("devices/pci0000:00/nvme/nvme0/nvme0n1", "259:0");
        let p1 = dev("devices/pci0000:00/nvme/nvme0/nvme0n1/nvme0n1p1", "259:1");
        fs::write(p1.join("partition"), "1\n").unwrap();
        let _ = n1;
        dev("devices/pci0000:00/virtio1/block/vdb", "254:16");
        dev("devices/virtual/block/loop0", "7:0");

        assert_eq!(sysfs_kind(&s, 8, 16), DeviceKind::Scsi);
        assert_eq!(sysfs_kind(&s, 8, 17), DeviceKind::Scsi);
        assert_eq!(sysfs_kind(&s, 259, 0), DeviceKind::Nvme);
        assert_eq!(sysfs_kind(&s, 259, 1), DeviceKind::Nvme);
        assert_eq!(sysfs_kind(&s, 254, 16), DeviceKind::Other("vdb".into()));
        assert_eq!(sysfs_kind(&s, 7, 0), DeviceKind::Other("loop0".into()));
        assert_eq!(sysfs_kind(&s, 1, 99), DeviceKind::Unknown);
        fs::remove_dir_all(s).unwrap();
    }

    #[test]
    fn regular_file_has_no_pr() {
        let f = std::env::temp_dir().join(format!("mount-mxfs-pr-{}", std::process::id()));
        fs::write(&f, [0u8; 512]).unwrap();
        let s = check(&f, 0, Path::new("/nonexistent"));
        assert!(
            matches!(&s, PrSupport::No(w) if w.contains("not a SCSI device")),
            "{s:?}"
        );
        let msg = refusal(&f, &s).unwrap();
        assert!(msg.contains("split brain"));
        assert!(msg.contains("-o fence=none"));
        fs::remove_file(f).unwrap();
    }

    #[test]
    fn refusal_only_without_pr() {
        let p = Path::new("/dev/sdb");
        assert!(refusal(p, &PrSupport::Nvme).is_none());
        let keys = ReadKeys {
            generation: 1,
            keys: vec![],
            additional_length: 0,
        };
        assert!(refusal(p, &PrSupport::Scsi(keys)).is_none());
        let u = refusal(p, &PrSupport::Unknown("x".into())).unwrap();
        assert!(u.contains("cannot tell") && u.contains("fence=none"));
    }
}
