//! The guest root filesystem: Debian bookworm made with `debootstrap`,
//! set up to boot fast with real systemd, and turned into a raw ext4 image
//! with `mkfs.ext4 -d` (no loop mounts). Cached under
//! `target/testbed/rootfs/` and rebuilt when its package list or set-up
//! changes; each node boots a copy-on-write overlay of the image.

use crate::host::{debian_mirror, hash_key, run, run_shown, step, testbed_dir, Stamp};
use crate::kernel::Kernel;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Packages in the guest beyond debootstrap's minbase.
pub const GUEST_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "iproute2",
    "procps",
    "e2fsprogs",
    "xfsprogs",
    "attr",
    "sg3-utils",
    "fio",
    "socat",
    "qemu-guest-agent",
    // DKMS builds mxfs.ko in the guest from the mxfs-dkms package; the
    // kernel's headers come from the testbed's own kernel download.
    "dkms",
    "linux-compiler-gcc-12-x86",
    // perf, for the benchmark's profiled pass (MXFS_BENCH_PROFILE)
    "linux-perf",
];

/// Addresses of the testbed's private network (inside its own network
/// namespace; nothing leaves the machine).
pub const NET_PREFIX: &str = "10.83.0";
pub const MAX_NODES: usize = 4;

/// Guest MAC address of node `n` (1-based).
pub fn node_mac(n: usize) -> String {
    format!("52:54:00:83:00:{n:02x}")
}

/// Guest IP address of node `n` (1-based).
pub fn node_ip(n: usize) -> String {
    format!("{NET_PREFIX}.{}", 10 + n)
}

/// Where the per-run artifacts disk is mounted in the guest.
pub const GUEST_ARTIFACTS: &str = "/opt/mxfs";
/// The label of that disk.
pub const ARTIFACTS_LABEL: &str = "mxfs-artifacts";

/// Files written into the guest tree after debootstrap. Part of the cache
/// key, so editing them rebuilds the image.
fn guest_files() -> Vec<(String, String)> {
    let mut files = vec![
        ("etc/hostname".into(), "mxfs-node\n".into()),
        (
            "etc/fstab".into(),
            "# root is mounted by the testbed's initramfs; the artifacts disk by the testbed\n"
                .into(),
        ),
        (
            "etc/systemd/system.conf.d/testbed.conf".into(),
            "[Manager]\nDefaultTimeoutStopSec=15s\nDefaultTimeoutStartSec=60s\n".into(),
        ),
        (
            "etc/systemd/journald.conf.d/testbed.conf".into(),
            "[Journal]\nStorage=persistent\nForwardToConsole=no\n".into(),
        ),
    ];
    let mut hosts = String::from("127.0.0.1 localhost\n");
    for n in 1..=MAX_NODES {
        hosts += &format!("{} node{n}\n", node_ip(n));
        files.push((
            format!("etc/systemd/network/10-testbed-node{n}.network"),
            format!(
                "[Match]\nMACAddress={}\n\n[Network]\nAddress={}/24\nGateway={NET_PREFIX}.1\n\
                 LinkLocalAddressing=no\nIPv6AcceptRA=no\n",
                node_mac(n),
                node_ip(n)
            ),
        ));
    }
    files.push(("etc/hosts".into(), hosts));
    files
}

/// Units the testbed enables or masks in the guest (masked ones only slow
/// the boot of a throwaway VM).
const ENABLE_UNITS: &[&str] = &["systemd-networkd.service"];
const MASK_UNITS: &[&str] = &[
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "getty-static.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "systemd-networkd-wait-online.service",
];

fn cache_key() -> String {
    let files: Vec<String> = guest_files().into_iter().map(|(p, c)| p + &c).collect();
    let mut parts: Vec<&str> = vec!["bookworm", "minbase"];
    parts.extend(GUEST_PACKAGES);
    parts.extend(ENABLE_UNITS);
    parts.extend(MASK_UNITS);
    parts.extend(files.iter().map(String::as_str));
    hash_key(&parts)
}

/// Makes (once) the debootstrap tree and returns its directory.
fn ensure_tree() -> Result<PathBuf> {
    let dir = testbed_dir().join("rootfs").join(cache_key());
    let tree = dir.join("tree");
    if Stamp::new(&dir).done() {
        return Ok(tree);
    }
    // Trees and images of earlier package lists are dead weight.
    remove_all_but(&testbed_dir().join("rootfs"), &cache_key());
    remove_all_but(
        &testbed_dir().join("images"),
        &format!("root-{}-", cache_key()),
    );
    step(
        "building the guest root filesystem with debootstrap (about a minute)",
        || {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
            run_shown(
                Command::new("debootstrap")
                    .arg("--variant=minbase")
                    .arg(format!("--include={}", GUEST_PACKAGES.join(",")))
                    .arg("bookworm")
                    .arg(&tree)
                    .arg(debian_mirror()),
            )?;
            for (path, content) in guest_files() {
                let p = tree.join(path);
                std::fs::create_dir_all(p.parent().unwrap())?;
                std::fs::write(&p, content)?;
            }
            std::fs::create_dir_all(tree.join("var/log/journal"))?;
            std::fs::create_dir_all(tree.join(GUEST_ARTIFACTS.trim_start_matches('/')))?;
            run(Command::new("chroot")
                .arg(&tree)
                .args(["passwd", "-d", "root"]))?;
            run(Command::new("chroot")
                .arg(&tree)
                .args(["systemctl", "enable"])
                .args(ENABLE_UNITS))?;
            run(Command::new("chroot")
                .arg(&tree)
                .args(["systemctl", "mask"])
                .args(MASK_UNITS))?;
            // apt's caches are dead weight in every node's image.
            let _ = std::fs::remove_dir_all(tree.join("var/cache/apt/archives"));
            let _ = std::fs::remove_dir_all(tree.join("var/lib/apt/lists"));
            Stamp::new(&dir).mark()?;
            Ok(())
        },
    )?;
    Ok(tree)
}

/// Returns the base image for a kernel: the tree plus that kernel's
/// modules, as a raw ext4 image.
pub fn ensure_image(kernel: &Kernel) -> Result<PathBuf> {
    let tree = ensure_tree()?;
    let images = testbed_dir().join("images");
    std::fs::create_dir_all(&images)?;
    let image = images.join(format!("root-{}-{}.img", cache_key(), kernel.release));
    if image.exists() {
        return Ok(image);
    }
    step(
        &format!("making the guest image for {}", kernel.release),
        || {
            let modules = tree.join("lib/modules");
            std::fs::create_dir_all(&modules)?;
            let dest = modules.join(&kernel.release);
            if !dest.exists() {
                run(Command::new("cp")
                    .arg("-a")
                    .arg(kernel.modules_dir())
                    .arg(&dest))?;
                // `build` points at the host's unpacked headers: meaningless in
                // the guest.
                let _ = std::fs::remove_file(dest.join("build"));
                let _ = std::fs::remove_file(dest.join("source"));
            }
            install_headers(&tree, kernel)?;
            let tmp = image.with_extension("tmp");
            make_ext4(&tree, &tmp, "mxfs-root", "4G")?;
            std::fs::rename(&tmp, &image)?;
            Ok(())
        },
    )?;
    Ok(image)
}

/// Installs the kernel's header packages into the tree with dpkg, so that
/// DKMS in the guest can build for it (`/lib/modules/REL/build`).
fn install_headers(tree: &Path, kernel: &Kernel) -> Result<()> {
    let debs = kernel.header_debs()?;
    let inbox = tree.join("var/tmp/mxfs-kernel-debs");
    std::fs::create_dir_all(&inbox)?;
    let mut names = Vec::new();
    for d in &debs {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(d, inbox.join(&name))?;
        names.push(format!("/var/tmp/mxfs-kernel-debs/{name}"));
    }
    let r = run(Command::new("chroot")
        .arg(tree)
        .args(["dpkg", "-i"])
        .args(&names));
    let _ = std::fs::remove_dir_all(&inbox);
    r.context("installing the kernel headers into the guest tree")?;
    Ok(())
}

/// Removes the entries of `dir` whose names do not start with `keep`.
fn remove_all_but(dir: &Path, keep: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with(keep) {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// `mkfs.ext4 -d`: an ext4 image holding a directory, without mounting.
pub fn make_ext4(from: &Path, image: &Path, label: &str, size: &str) -> Result<()> {
    let _ = std::fs::remove_file(image);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-E", "root_owner=0:0", "-d"])
        .arg(from)
        .arg(image)
        .arg(size))
    .with_context(|| format!("mkfs.ext4 -d {}", from.display()))?;
    Ok(())
}
