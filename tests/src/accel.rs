//! Choosing QEMU's accelerator. `/dev/kvm` may exist and still hang (nested
//! KVM on some hosts), so KVM is used only when a short probe boot under it
//! finishes: the guest kernel, with no root, panics and exits at once.
//! `MXFS_TB_ACCEL=kvm|tcg` overrides the probe.

use crate::host::say;
use crate::net::supervise;
use anyhow::{bail, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// QEMU arguments for this accelerator.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

pub fn choose(vmlinuz: &Path) -> Result<Accel> {
    match std::env::var("MXFS_TB_ACCEL").as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        Ok(other) => bail!("MXFS_TB_ACCEL={other:?}: expected kvm or tcg"),
        Err(_) => {}
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        say("no usable /dev/kvm: using TCG");
        return Ok(Accel::Tcg);
    }
    let t = Instant::now();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
    ])
    .args([
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
    ])
    .arg(vmlinuz)
    .args(["-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    supervise(&mut cmd, None);
    let mut child = cmd.spawn()?;
    let works = loop {
        match child.try_wait()? {
            Some(st) => break st.success(),
            None if t.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                // A QEMU stuck inside KVM may not die at once; do not wait
                // on it forever (it dies with us in any case).
                let gone = Instant::now() + Duration::from_secs(5);
                while child.try_wait()?.is_none() && Instant::now() < gone {
                    std::thread::sleep(Duration::from_millis(100));
                }
                break false;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    if works {
        say(format!(
            "KVM works (probe boot took {:.1} s): using KVM",
            t.elapsed().as_secs_f64()
        ));
        Ok(Accel::Kvm)
    } else {
        say(format!(
            "KVM probe did not finish in {} s (nested KVM hangs here): using TCG",
            PROBE_TIMEOUT.as_secs()
        ));
        Ok(Accel::Tcg)
    }
}
