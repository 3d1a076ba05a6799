//! SPEC and DIR: resolve `UUID=`/`LABEL=` tags, check that the device
//! exists, is a block device and holds XFS; check the mount point.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use mxfs_core::xfs_probe::{self, ProbeError, ProbeFileError, XfsProbe};

use crate::error::Failure;

/// Where udev keeps the persistent device links.
pub const DISK_DIR: &str = "/dev/disk";

/// A SPEC turned into a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The path to check (for a tag: the udev link).
    pub path: PathBuf,
    /// What the admin wrote (for messages).
    pub spec: String,
    /// For `UUID=`: the UUID the superblock must carry.
    pub want_uuid: Option<String>,
}

/// udev's encoding of a name in `/dev/disk/by-label/` (blkid's
/// `blkid_encode_string`): ASCII letters, digits and `#+-.:=@_` and any
/// non-ASCII UTF-8 stay; every other byte becomes `\xNN`.
pub fn udev_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) || !c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
    }
    out
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// Resolve SPEC: `UUID=`, `LABEL=`, `PARTUUID=`, `PARTLABEL=` through
/// `disk_dir` (`/dev/disk` in real use), anything else is a path.
pub fn resolve_spec(spec: &OsStr, disk_dir: &Path) -> Result<Resolved, Failure> {
    let text = spec.to_string_lossy().into_owned();
    const TAGS: &[(&str, &str)] = &[
        ("UUID=", "by-uuid"),
        ("LABEL=", "by-label"),
        ("PARTUUID=", "by-partuuid"),
        ("PARTLABEL=", "by-partlabel"),
    ];
    let Some((tag, sub, value)) = TAGS.iter().find_map(|(tag, sub)| {
        spec.as_bytes()
            .strip_prefix(tag.as_bytes())
            .map(|_| (*tag, *sub, unquote(&text[tag.len()..]).to_string()))
    }) else {
        return Ok(Resolved {
            path: PathBuf::from(spec),
            spec: text,
            want_uuid: None,
        });
    };
    if value.is_empty() {
        return Err(Failure::usage(format!("{text}: empty {tag} value")));
    }
    let dir = disk_dir.join(sub);
    let encoded = if sub.ends_with("label") {
        udev_encode(&value)
    } else {
        value.clone()
    };
    let mut candidates = vec![dir.join(&encoded)];
    if sub.ends_with("uuid") && encoded.to_ascii_lowercase() != encoded {
        candidates.push(dir.join(encoded.to_ascii_lowercase()));
    }
    let path = candidates
        .iter()
        .find(|p| p.symlink_metadata().is_ok())
        .cloned()
        .ok_or_else(|| {
            Failure::mount(format!(
                "no device with {tag}{value} ({} does not exist); `blkid` lists the devices and their {}",
                candidates[0].display(),
                tag.trim_end_matches('=')
            ))
        })?;
    Ok(Resolved {
        path,
        spec: text,
        want_uuid: (tag == "UUID=").then_some(value),
    })
}

/// A device that passed the checks.
#[derive(Debug, Clone)]
pub struct Device {
    /// Canonical path (what mount(2) gets).
    pub path: PathBuf,
    pub rdev: u64,
    pub probe: XfsProbe,
}

fn file_kind(ft: fs::FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a device"
    }
}

/// Check the resolved device: exists, is a block device, holds XFS (and
/// the UUID asked for).  Reads only.
pub fn check_device(r: &Resolved) -> Result<Device, Failure> {
    let shown = r.path.display();
    let meta = fs::metadata(&r.path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Failure::mount(format!(
            "{shown} does not exist; check the device name (`lsblk` lists block devices)"
        )),
        io::ErrorKind::PermissionDenied => {
            Failure::usage(format!("{shown}: permission denied; run it as root"))
        }
        _ => Failure::mount(format!("{shown}: {e}")),
    })?;
    if !meta.file_type().is_block_device() {
        let hint = if meta.file_type().is_file() {
            " (for an image file, attach it first: `losetup --find --show FILE`)"
        } else {
            ""
        };
        return Err(Failure::mount(format!(
            "{shown} is not a block device but {}; mxfs mounts a shared block device{hint}",
            file_kind(meta.file_type())
        )));
    }
    let path = fs::canonicalize(&r.path).unwrap_or_else(|_| r.path.clone());
    let probe = xfs_probe::probe_path(&path).map_err(|e| match e {
        ProbeFileError::Io(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            Failure::usage(format!("{shown}: permission denied; run it as root"))
        }
        ProbeFileError::Io(e) => Failure::mount(format!("cannot read {shown}: {e}")),
        ProbeFileError::Probe(ProbeError::BadMagic(_) | ProbeError::Short(_)) => {
            Failure::mount(format!(
                "{shown} holds no XFS filesystem; make one with `mkfs.xfs {shown}` \
                 (once, on one node) — mxfs shares a plain XFS volume"
            ))
        }
        ProbeFileError::Probe(e) => Failure::mount(format!(
            "{shown}: {e}; check it with `xfs_repair -n {shown}`"
        )),
    })?;
    if let Some(want) = &r.want_uuid {
        if !probe.uuid.to_string().eq_ignore_ascii_case(want) {
            return Err(Failure::mount(format!(
                "{} points to {} whose XFS UUID is {}, not {want}; check `blkid`",
                r.spec,
                path.display(),
                probe.uuid
            )));
        }
    }
    Ok(Device {
        path,
        rdev: meta.rdev(),
        probe,
    })
}

/// The mount point: must exist and be a directory; returned canonical.
pub fn check_dir(dir: &OsStr) -> Result<PathBuf, Failure> {
    let shown = Path::new(dir).display();
    let canon = fs::canonicalize(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Failure::mount(format!(
            "mount point {shown} does not exist; create it with `mkdir -p {shown}`"
        )),
        _ => Failure::mount(format!("mount point {shown}: {e}")),
    })?;
    if !canon.is_dir() {
        return Err(Failure::mount(format!(
            "mount point {shown} is not a directory"
        )));
    }
    Ok(canon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;
    use std::os::unix::fs::symlink;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mount-mxfs-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn udev_encoding() {
        assert_eq!(udev_encode("data1"), "data1");
        assert_eq!(udev_encode("my disk/1"), "my\\x20disk\\x2f1");
        assert_eq!(udev_encode("a#+-.:=@_z"), "a#+-.:=@_z");
        assert_eq!(udev_encode("daten-ü"), "daten-ü");
        assert_eq!(udev_encode("a\\b"), "a\\x5cb");
    }

    #[test]
    fn plain_paths_pass_through() {
        let r = resolve_spec(OsStr::new("/dev/sdb"), Path::new("/nonexistent")).unwrap();
        assert_eq!(r.path, PathBuf::from("/dev/sdb"));
        assert_eq!(r.want_uuid, None);
        // a path that merely contains '=' is a path
        let r = resolve_spec(OsStr::new("/dev/x=y"), Path::new("/nonexistent")).unwrap();
        assert_eq!(r.path, PathBuf::from("/dev/x=y"));
    }

    #[test]
    fn tags_resolve_through_the_disk_dir() {
        let d = tempdir("tags");
        for sub in ["by-uuid", "by-label", "by-partuuid", "by-partlabel"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let target = d.join("sdz");
        fs::write(&target, b"").unwrap();
        let uuid = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
        symlink(&target, d.join("by-uuid").join(uuid)).unwrap();
        symlink(&target, d.join("by-label").join("my\\x20data")).unwrap();
        symlink(&target, d.join("by-partlabel").join("p1")).unwrap();

        let r = resolve_spec(OsStr::new(&format!("UUID={uuid}")), &d).unwrap();
        assert_eq!(r.path, d.join("by-uuid").join(uuid));
        assert_eq!(r.want_uuid.as_deref(), Some(uuid));
        // upper case and quotes, as fstab may have them
        let r = resolve_spec(OsStr::new(&format!("UUID=\"{}\"", uuid.to_uppercase())), &d).unwrap();
        assert_eq!(r.path, d.join("by-uuid").join(uuid));
        let r = resolve_spec(OsStr::new("LABEL=my data"), &d).unwrap();
        assert_eq!(fs::canonicalize(&r.path).unwrap(), target);
        assert_eq!(r.want_uuid, None);
        assert!(resolve_spec(OsStr::new("PARTLABEL=p1"), &d).is_ok());

        let e = resolve_spec(OsStr::new("UUID=0000"), &d).unwrap_err();
        assert_eq!(e.exit, Exit::MountFailure);
        assert!(e.msg.contains("no device with UUID=0000"), "{}", e.msg);
        assert!(e.msg.contains("blkid"));
        let e = resolve_spec(OsStr::new("LABEL=nope"), &d).unwrap_err();
        assert!(e.msg.contains("by-label/nope"), "{}", e.msg);
        let e = resolve_spec(OsStr::new("UUID="), &d).unwrap_err();
        assert_eq!(e.exit, Exit::Usage);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn device_checks() {
        let d = tempdir("dev");
        let missing = Resolved {
            path: d.join("nope"),
            spec: "x".into(),
            want_uuid: None,
        };
        let e = check_device(&missing).unwrap_err();
        assert_eq!(e.exit, Exit::MountFailure);
        assert!(e.msg.contains("does not exist"), "{}", e.msg);

        let file = d.join("image");
        fs::write(&file, [0u8; 4096]).unwrap();
        let e = check_device(&Resolved {
            path: file,
            spec: "x".into(),
            want_uuid: None,
        })
        .unwrap_err();
        assert!(
            e.msg.contains("not a block device but a regular file"),
            "{}",
            e.msg
        );
        assert!(e.msg.contains("losetup"));

        let e = check_device(&Resolved {
            path: d.clone(),
            spec: "x".into(),
            want_uuid: None,
        })
        .unwrap_err();
        assert!(e.msg.contains("a directory"), "{}", e.msg);

        let e = check_device(&Resolved {
            path: PathBuf::from("/dev/null"),
            spec: "x".into(),
            want_uuid: None,
        })
        .unwrap_err();
        assert!(e.msg.contains("a character device"), "{}", e.msg);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn mount_point_checks() {
        let d = tempdir("dir");
        let canon = check_dir(d.as_os_str()).unwrap();
        assert_eq!(canon, fs::canonicalize(&d).unwrap());
        let dotted = d.join("sub/..");
        fs::create_dir(d.join("sub")).unwrap();
        assert_eq!(check_dir(dotted.as_os_str()).unwrap(), canon);
        let e = check_dir(d.join("missing").as_os_str()).unwrap_err();
        assert_eq!(e.exit, Exit::MountFailure);
        assert!(e.msg.contains("mkdir -p"), "{}", e.msg);
        fs::write(d.join("f"), b"").unwrap();
        let e = check_dir(d.join("f").as_os_str()).unwrap_err();
        assert!(e.msg.contains("not a directory"));
        fs::remove_dir_all(d).unwrap();
    }
}
