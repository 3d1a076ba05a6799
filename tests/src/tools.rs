//! Test tools from crates.io that run inside the guests: `pjdfstest` (the
//! POSIX suite) and `fsx` (the file system exerciser), built once on the
//! host at pinned versions into `target/testbed/tools/`.

use crate::host::{run_shown, step, testbed_dir, Stamp};
use anyhow::Result;
use std::path::PathBuf;
use std::process::Command;

/// (crate, version) pairs; changing one rebuilds.
pub const TOOLS: &[(&str, &str)] = &[("pjdfstest", "0.2.2"), ("fsx", "0.3.2")];

/// pjdfstest's configuration for Linux filesystems: the features Linux
/// has, no secondary filesystem, and the two users it switches to (Debian
/// names nobody's group `nogroup`; the testbed creates `tests`).
pub const PJDFSTEST_CONF: &str = "[features]\nposix_fallocate = {}\nutime_now = {}\nutimensat = {}\n\n\
                                  [settings]\nnaptime = 0.01\n\n\
                                  [dummy_auth]\nentries = [[\"nobody\", \"nogroup\"], [\"tests\", \"tests\"]]\n";

/// Builds the tools if needed; returns (path, name) pairs for the guests'
/// artifacts disk.
pub fn ensure() -> Result<Vec<(PathBuf, String)>> {
    let key: Vec<String> = TOOLS.iter().map(|(c, v)| format!("{c}-{v}")).collect();
    let root = testbed_dir().join("tools").join(key.join("_"));
    if !Stamp::new(&root).done() {
        step(
            "building test tools from crates.io (pjdfstest, fsx)",
            || {
                for (krate, version) in TOOLS {
                    run_shown(
                        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                            .args([
                                "install",
                                "--quiet",
                                "--locked",
                                "--version",
                                version,
                                "--root",
                            ])
                            .arg(&root)
                            .arg(krate)
                            .env(
                                "CARGO_TARGET_DIR",
                                testbed_dir().join("tools").join("build"),
                            ),
                    )?;
                }
                Stamp::new(&root).mark()
            },
        )?;
    }
    Ok(TOOLS
        .iter()
        .map(|(krate, _)| (root.join("bin").join(krate), krate.to_string()))
        .collect())
}
