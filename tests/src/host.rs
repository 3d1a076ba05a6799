//! The host side: where the testbed keeps its files, how it runs host
//! commands, and how it installs the Debian packages it needs.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// Debian packages the host needs to run the testbed.
pub const HOST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-block-extra",
    "qemu-utils",
    "tgt",
    "debootstrap",
    "busybox-static",
    "e2fsprogs",
    "xfsprogs",
    "xz-utils",
    "iproute2",
    "util-linux",
    "kmod",
    "make",
    "gcc",
    "dwarves",
    // the Debian packages (cargo xtask deb)
    "dpkg-dev",
    "debhelper",
    "dh-dkms",
    "lintian",
];

/// Makes sure the sbin directories are on PATH: the testbed runs tools that
/// live there (tgtd, debootstrap, mkfs.ext4, depmod, chroot).
pub fn ensure_sbin_path() {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut dirs: Vec<&str> = path.split(':').filter(|d| !d.is_empty()).collect();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    std::env::set_var("PATH", dirs.join(":"));
}

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Everything the testbed caches or writes lives below `target/testbed`.
pub fn testbed_dir() -> PathBuf {
    workspace_root().join("target").join("testbed")
}

/// Prints one progress line, prefixed so it stands out in cargo's output.
pub fn say(msg: impl AsRef<str>) {
    eprintln!("[testbed] {}", msg.as_ref());
}

/// Times a long step and says when it starts and ends.
pub fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    say(format!("{what} ..."));
    let t = Instant::now();
    let r = f().with_context(|| format!("step failed: {what}"));
    if r.is_ok() {
        say(format!(
            "{what}: done in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
    }
    r
}

/// Runs a command, capturing output; fails with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Runs a command and returns its stdout as text.
pub fn run_text(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8_lossy(&run(cmd)?.stdout).into_owned())
}

/// Runs a command with its output shown to the user (for long steps whose
/// own output is the progress report, like debootstrap or apt-get).
pub fn run_shown(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have_all(pkgs: &[&str]) -> Result<Vec<String>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Status}\n"])
        .args(pkgs)
        .output()
        .context("dpkg-query")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with(" installed"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    Ok(pkgs
        .iter()
        .filter(|p| !installed.contains(p))
        .map(|p| p.to_string())
        .collect())
}

const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/mxfs-testbed-backports.sources";

/// Installs the host packages that are missing.
///
/// QEMU comes from bookworm-backports: some Debian 12 images ship a
/// backported `qemu-utils`, which bookworm's own `qemu-system-x86` cannot be
/// installed beside, and the backported QEMU is newer anyway.
pub fn ensure_host_packages() -> Result<()> {
    let missing = have_all(HOST_PACKAGES)?;
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the testbed needs these Debian packages, and installing them needs root: {}",
            missing.join(" ")
        );
    }
    step(
        &format!("installing host packages: {}", missing.join(" ")),
        || {
            if !Path::new(BACKPORTS_SOURCES).exists() {
                std::fs::write(
                    BACKPORTS_SOURCES,
                    format!(
                        "Types: deb\nURIs: {}\nSuites: bookworm-backports\nComponents: main\n\
                     Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
                        debian_mirror()
                    ),
                )
                .context("writing the bookworm-backports apt source")?;
            }
            run_shown(Command::new("apt-get").args(["update", "-q"]))?;
            let (qemu, rest): (Vec<String>, Vec<String>) =
                missing.into_iter().partition(|p| p.starts_with("qemu"));
            let apt = |target: Option<&str>, pkgs: &[String]| -> Result<()> {
                if pkgs.is_empty() {
                    return Ok(());
                }
                let mut c = Command::new("apt-get");
                c.env("DEBIAN_FRONTEND", "noninteractive").args([
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                ]);
                if let Some(t) = target {
                    c.args(["-t", t]);
                }
                run_shown(c.args(pkgs))
            };
            apt(Some("bookworm-backports"), &qemu)?;
            apt(None, &rest)
        },
    )
}

/// The Debian mirror this host's apt uses (so the testbed fetches from the
/// same place the machine is allowed to reach).
pub fn debian_mirror() -> String {
    let mut candidates = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        v.sort();
        candidates.extend(v);
    }
    for path in candidates {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if line.starts_with("deb ") {
                line.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(uri) = uri {
                if uri.contains("debian") && !uri.contains("security") {
                    return uri.trim_end_matches('/').to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// SHA-256 of some strings, as hex: the testbed's cache keys.
pub fn hash_key(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Marks a cached artifact complete; its absence means "rebuild".
pub struct Stamp(PathBuf);

impl Stamp {
    pub fn new(dir: &Path) -> Self {
        Stamp(dir.join(".complete"))
    }
    pub fn done(&self) -> bool {
        self.0.exists()
    }
    pub fn mark(&self) -> Result<()> {
        std::fs::write(&self.0, b"").with_context(|| format!("writing {}", self.0.display()))
    }
}

/// The project's built binaries that exist under `target/release`, as
/// (host path, name on the guests' artifacts disk).
pub fn project_artifacts() -> Vec<(PathBuf, String)> {
    let release = workspace_root().join("target").join("release");
    [
        ("mxfsd", "mxfsd"),
        ("mount-mxfs", "mount.mxfs"),
        ("mxfs-opcheck", "mxfs-opcheck"),
    ]
    .iter()
    .map(|(built, name)| (release.join(built), name.to_string()))
    .filter(|(p, _)| p.exists())
    .collect()
}
