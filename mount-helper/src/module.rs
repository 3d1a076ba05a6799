//! Loading the kernel module when the kernel has no `mxfs` type yet.

use std::fs;
use std::process::Command;

use crate::error::{one_line, Failure};

pub const PROC_FILESYSTEMS: &str = "/proc/filesystems";

/// Does `/proc/filesystems` text list the filesystem type `name`?
/// (Lines are `nodev\tNAME` or `\tNAME`.)
pub fn fs_listed(proc_filesystems: &str, name: &str) -> bool {
    proc_filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some(name))
}

/// Is the mxfs type registered right now?
pub fn mxfs_registered() -> Result<bool, Failure> {
    let text = fs::read_to_string(PROC_FILESYSTEMS)
        .map_err(|e| Failure::system(format!("cannot read {PROC_FILESYSTEMS}: {e}")))?;
    Ok(fs_listed(&text, "mxfs"))
}

/// The one-line message when the module cannot be loaded.
pub fn load_failure(detail: &str) -> Failure {
    Failure::system(format!(
        "cannot load the mxfs kernel module ({}); install mxfs-dkms for this kernel: \
         `apt install mxfs-dkms`",
        one_line(detail)
    ))
}

/// Where kmod installs modprobe; mount(8) may run us with a PATH without
/// the sbin directories (from a unit, a cron job, an agent).
const MODPROBE: &[&str] = &["/sbin/modprobe", "/usr/sbin/modprobe"];

fn modprobe() -> &'static str {
    MODPROBE
        .iter()
        .copied()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("modprobe")
}

/// Run `modprobe mxfs` and check that the type appeared.
pub fn load() -> Result<(), Failure> {
    let out = Command::new(modprobe())
        .arg("mxfs")
        .output()
        .map_err(|e| load_failure(&format!("cannot run modprobe: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(load_failure(&format!(
            "modprobe mxfs: {} {first}",
            out.status
        )));
    }
    if !mxfs_registered()? {
        return Err(load_failure(
            "modprobe mxfs succeeded but the kernel lists no mxfs filesystem type",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    #[test]
    fn proc_filesystems_parsing() {
        let text = "nodev\tsysfs\nnodev\ttmpfs\n\text4\n\txfs\nnodev\tfuse\n";
        assert!(fs_listed(text, "xfs"));
        assert!(fs_listed(text, "tmpfs"));
        assert!(!fs_listed(text, "mxfs"));
        assert!(fs_listed(&format!("{text}\tmxfs\n"), "mxfs"));
        assert!(!fs_listed("nodev\tmxfs2\n", "mxfs"));
        assert!(!fs_listed("", "mxfs"));
    }

    #[test]
    fn load_failure_is_one_line_exit_2_naming_the_package() {
        let f =
            load_failure("modprobe mxfs: exit status: 1 modprobe: FATAL: Module mxfs not found\n");
        assert_eq!(f.exit, Exit::System);
        assert!(!f.line().contains('\n'));
        assert!(f.msg.contains("install mxfs-dkms"));
        assert!(f.msg.contains("Module mxfs not found"));
    }

    #[test]
    fn this_machine_answers() {
        // Reads only; whether mxfs is loaded here does not matter.
        assert!(mxfs_registered().is_ok());
    }
}
