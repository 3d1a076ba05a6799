//! Builds `kmod/` (mxfs.ko) against an unpacked Debian kernel's headers,
//! with the kernel's W=1 warnings and -Werror. The sources are copied to
//! `target/testbed/kmod/<release>/` first, so kbuild's objects never land in
//! the work tree.

use crate::host::{run, testbed_dir, workspace_root};
use crate::kernel::{Kernel, Series};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Builds mxfs.ko for `kernel` and returns its path.
pub fn build(kernel: &Kernel) -> Result<PathBuf> {
    let src = workspace_root().join("kmod");
    let dir = testbed_dir().join("kmod").join(&kernel.release);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&src).context("reading kmod/")? {
        let p = entry?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name == "Makefile" || name.ends_with(".c") || name.ends_with(".h") {
            std::fs::copy(&p, dir.join(&name))?;
        }
    }
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(kernel.headers_dir())
        .arg(format!("M={}", dir.display()))
        .arg("W=1")
        .arg(format!(
            "-j{}",
            std::thread::available_parallelism().map_or(2, |n| n.get())
        ))
        .arg("modules");
    // Bullseye's kernel Makefile names gcc-10, which bookworm lacks; gcc-12
    // builds it clean.
    if kernel.series == Series::V5_10 {
        make.arg("CC=gcc-12");
    }
    let out = run(&mut make).with_context(|| format!("building mxfs.ko for {}", kernel.release))?;
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    std::fs::write(dir.join("build.log"), &log)?;
    let ko = dir.join("mxfs.ko");
    anyhow::ensure!(ko.exists(), "kbuild finished but made no mxfs.ko: {log}");
    // -Werror catches compiler warnings; kbuild's own (modpost) are only
    // printed, and count as failures too.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("warning:") || l.contains("WARNING:"))
        .collect();
    anyhow::ensure!(
        warnings.is_empty(),
        "mxfs.ko for {} built with warnings:\n{}",
        kernel.release,
        warnings.join("\n")
    );
    Ok(ko)
}
