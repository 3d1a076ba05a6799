//! What the unit tests of several modules share: a scratch directory,
//! the check for xfsprogs, and a DLM transport for a node alone.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory of its own under the temp dir (ext4 on this project's
/// machines: O_DIRECT and file handles work there), mode 0755, removed
/// when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mxfsd-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("scratch dir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("scratch dir mode");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Whether mkfs.xfs and xfs_db run here; says SKIPPED when not.
pub fn have_xfsprogs() -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let have = ok("mkfs.xfs") && ok("xfs_db");
    if !have {
        eprintln!(
            "SKIPPED: mkfs.xfs or xfs_db not found (install xfsprogs to run the XFS image tests)"
        );
    }
    have
}

/// A DLM alone in its view sends nothing.
pub struct Nowhere;

impl crate::dlm::runtime::Transport for Nowhere {
    fn send(&mut self, _to: u64, _msg: crate::dlm::node::DlmMsg) {}
}
