//! The Debian packages `mxfs` and `mxfs-dkms`, built with Debian's own
//! tooling (debhelper, dh-dkms, dpkg-buildpackage) from a staging tree
//! under `target/deb/`, and checked with lintian.
//!
//! The staging tree is `packaging/debian/` plus what the packages install:
//! the release binaries (built by cargo first, with the workspace's lock
//! file), the module source, units, udev rules and man pages.

use crate::host::{run, say, workspace_root};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The package version: the workspace's, which `packaging/debian/changelog`
/// must name (a unit test checks).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Files copied into the staging tree: (from, relative to the workspace;
/// to, relative to the staging tree).
fn staged_files(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    let release = root.join("target/release");
    let mut v = vec![
        (release.join("mxfsd"), "bin/mxfsd".to_string()),
        (release.join("mount-mxfs"), "bin/mount.mxfs".to_string()),
        (root.join("systemd/mxfs.conf"), "systemd/mxfs.conf".into()),
        (
            root.join("systemd/mxfsd@.service"),
            "systemd/mxfsd@.service".into(),
        ),
        (root.join("udev/64-mxfs.rules"), "udev/64-mxfs.rules".into()),
        (
            root.join("mount-helper/mount.mxfs.8"),
            "man/mount.mxfs.8".into(),
        ),
        (root.join("mxfsd/mxfsd.8"), "man/mxfsd.8".into()),
        (
            root.join("dbus/org.mxfs1.conf"),
            "dbus/org.mxfs1.conf".into(),
        ),
    ];
    for e in std::fs::read_dir(root.join("kmod"))? {
        let p = e?.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".c") || name.ends_with(".h") || name == "Makefile" {
            v.push((p, format!("kmod/{name}")));
        }
    }
    Ok(v)
}

/// Builds both packages from the current release binaries and returns
/// their paths (`mxfs-dkms` first).  Runs lintian over them and fails on
/// any error or warning it does not carry an override for.
pub fn build() -> Result<Vec<PathBuf>> {
    let root = workspace_root();
    let out = root.join("target/deb");
    let stage = out.join(format!("mxfs-{VERSION}"));
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&stage)?;
    run(Command::new("cp")
        .arg("-a")
        .arg(root.join("packaging/debian"))
        .arg(stage.join("debian")))?;
    for (from, to) in staged_files(&root)? {
        if !from.exists() {
            bail!(
                "{} is missing (build the release binaries first: cargo build --release)",
                from.display()
            );
        }
        let dest = stage.join(&to);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::copy(&from, &dest).with_context(|| format!("copying {}", from.display()))?;
    }
    run(Command::new("dpkg-buildpackage")
        .args(["-b", "-us", "-uc", "--no-sign"])
        .current_dir(&stage))
    .context("dpkg-buildpackage")?;
    let debs = vec![
        out.join(format!("mxfs-dkms_{VERSION}_all.deb")),
        out.join(format!("mxfs_{VERSION}_amd64.deb")),
    ];
    for d in &debs {
        if !d.exists() {
            bail!("dpkg-buildpackage made no {}", d.display());
        }
    }
    let changes = out.join(format!("mxfs_{VERSION}_amd64.changes"));
    let lint = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
        .arg(&changes)
        .output()
        .context("running lintian")?;
    let report = String::from_utf8_lossy(&lint.stdout);
    if !lint.status.success() {
        bail!("lintian found errors or warnings:\n{report}");
    }
    say(format!(
        "built {} and {}; lintian: {}",
        debs[0].file_name().unwrap().to_string_lossy(),
        debs[1].file_name().unwrap().to_string_lossy(),
        if report.trim().is_empty() {
            "clean".to_string()
        } else {
            format!("{} note(s)", report.lines().count())
        }
    ));
    Ok(debs)
}

/// The packages as artifacts-disk entries (path, name on the disk).
pub fn artifacts() -> Result<Vec<(PathBuf, String)>> {
    Ok(build()?
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (p, name)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_names_the_workspace_version() {
        let changelog =
            std::fs::read_to_string(workspace_root().join("packaging/debian/changelog")).unwrap();
        let first = changelog.lines().next().unwrap();
        assert_eq!(
            first.split_whitespace().nth(1),
            Some(&*format!("({VERSION})"))
        );
    }

    #[test]
    fn every_staged_source_exists_in_the_tree() {
        let root = workspace_root();
        for (from, _) in staged_files(&root).unwrap() {
            if !from.starts_with(root.join("target")) {
                assert!(from.exists(), "{}", from.display());
            }
        }
    }
}
