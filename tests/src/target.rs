//! The shared LUN: Debian's `tgtd` (userspace iSCSI target) serving a
//! sparse file inside the testbed's network namespace, so each node's QEMU
//! reaches it as its own iSCSI initiator (its own I_T nexus) and SCSI-3
//! Persistent Reservations pass through for real.
//!
//! Known limits of tgt: no PR IN READ FULL STATUS, APTPL rejected,
//! registrations lost when `tgtd` restarts, SIGTERM ignored (it is taken
//! down with `tgtadm`).

use crate::host::run;
use crate::net::{supervise, Network};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TARGET_IQN: &str = "iqn.2026-11.org.mxfs.testbed:shared";
pub const PORTAL: &str = "127.0.0.1:3260";
const TID: &str = "1";

/// The initiator name node `n` uses.
pub fn initiator_iqn(n: usize) -> String {
    format!("iqn.2026-11.org.mxfs.testbed:node{n}")
}

pub struct Target {
    tgtd: Option<Child>,
    control_port: u16,
    pub lun_file: PathBuf,
}

impl Target {
    /// Starts `tgtd` in the namespace and exports `lun_file` (created sparse
    /// with `size` bytes if missing) as LUN 1.
    pub fn start(net: &Network, lun_file: &Path, size: u64, log: &Path) -> Result<Target> {
        if !lun_file.exists() {
            let f = std::fs::File::create(lun_file)?;
            f.set_len(size)?;
        }
        // A control port of our own, so a system tgtd (socket.0) or another
        // testbed run never answers our tgtadm calls.
        let control_port = control_port_for(std::process::id());
        std::fs::create_dir_all("/var/run/tgtd")?;
        let sock = PathBuf::from(format!("/var/run/tgtd/socket.{control_port}"));
        let _ = std::fs::remove_file(&sock);
        let logf = std::fs::File::create(log)?;
        let mut cmd = Command::new("tgtd");
        cmd.args(["-f", "-C", &control_port.to_string()])
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        supervise(&mut cmd, Some(net.ns()));
        let child = cmd.spawn().context("starting tgtd")?;
        let t = Target {
            tgtd: Some(child),
            control_port,
            lun_file: lun_file.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.adm(&["--op", "show", "--mode", "sys"]).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "tgtd did not answer on control port {control_port}; see {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        t.adm(&[
            "--op", "new", "--mode", "target", "--tid", TID, "-T", TARGET_IQN,
        ])?;
        t.adm(&[
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            TID,
            "--lun",
            "1",
            "-b",
            &lun_file.display().to_string(),
        ])?;
        t.adm(&[
            "--op", "bind", "--mode", "target", "--tid", TID, "-I", "ALL",
        ])?;
        Ok(t)
    }

    pub fn adm(&self, args: &[&str]) -> Result<String> {
        let out = run(Command::new("tgtadm")
            .args(["-C", &self.control_port.to_string(), "--lld", "iscsi"])
            .args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What tgtd says about the target (connections, LUNs).
    pub fn show(&self) -> Result<String> {
        self.adm(&["--op", "show", "--mode", "target"])
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // tgtd ignores SIGTERM: take it down the way tgtadm documents.
        let _ = self.adm(&[
            "--op", "update", "--mode", "sys", "--name", "State", "-v", "offline",
        ]);
        let _ = self.adm(&[
            "--op", "delete", "--mode", "target", "--tid", TID, "--force",
        ]);
        let _ = self.adm(&["--op", "delete", "--mode", "system"]);
        if let Some(mut child) = self.tgtd.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}", self.control_port));
        let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}.lock", self.control_port));
    }
}

/// tgtd's `-C` takes 0..=32767 ("argument value out of range" above it,
/// and then tgtd never starts): a port in 1000..=30999 from the PID.
fn control_port_for(pid: u32) -> u16 {
    1000 + (pid % 30000) as u16
}

#[cfg(test)]
mod control_port_tests {
    use super::control_port_for;

    #[test]
    fn control_ports_stay_in_tgtds_range() {
        // 31841 gave 32841 before, which tgtd refused.
        for pid in [0, 1, 29_999, 30_000, 31_841, 4_194_303, u32::MAX] {
            let p = control_port_for(pid);
            assert!((1000..=32767).contains(&p), "{pid} -> {p}");
        }
    }
}
