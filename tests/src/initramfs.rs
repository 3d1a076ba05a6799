//! A small initramfs for the guests: static busybox, the few modules needed
//! to reach the root disk (resolved from the kernel's `modules.dep`), and an
//! `/init` that mounts the root and hands over to systemd. Written as a
//! `newc` cpio archive directly, so no `cpio` tool is needed.

use crate::host::{run, Stamp};
use crate::kernel::Kernel;
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Modules the initramfs loads (with their dependencies), where the kernel
/// builds them as modules. ext4 asks for crc32c through the crypto API,
/// which modules.dep does not record, so it is named here.
const ROOT_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod /modules/$m || echo "initramfs: insmod $m failed"; done
# The root disk is the virtio disk whose serial is mxfs-root (the order of
# virtio disks is not fixed).
root=
i=0
while [ -z "$root" ] && [ $i -lt 200 ]; do
    for d in /sys/block/vd*; do
        [ "$(cat $d/serial 2>/dev/null)" = mxfs-root ] && root=/dev/${d##*/}
    done
    [ -z "$root" ] && sleep 0.05
    i=$((i+1))
done
if [ -z "$root" ] || ! mount -t ext4 -o rw "$root" /newroot; then
    echo "initramfs: cannot mount the root disk (serial mxfs-root: ${root:-not found})"
    poweroff -f
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"#;

/// newc aligns headers and file data to 4 bytes.
fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Appends one entry to a newc cpio archive.
fn newc_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        0,
        0,
        name.len() + 1,
        0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

/// A newc archive builder.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    pub fn dir(&mut self, name: &str) {
        self.ino += 1;
        newc_entry(&mut self.buf, self.ino, name, 0o040755, &[]);
    }
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        newc_entry(&mut self.buf, self.ino, name, 0o100000 | mode, data);
    }
    pub fn finish(mut self) -> Vec<u8> {
        newc_entry(&mut self.buf, 0, "TRAILER!!!", 0, &[]);
        self.buf
    }
}

/// Normalises a module name as modprobe does.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Parses `modules.dep` into name → (path, dependency paths).
fn parse_modules_dep(text: &str) -> HashMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let (path, deps) = line.split_once(':')?;
            let deps = deps.split_whitespace().map(str::to_string).collect();
            Some((module_name(path), (path.to_string(), deps)))
        })
        .collect()
}

/// The module files to load, dependencies first.
fn load_order(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<String>> {
    let dep = std::fs::read_to_string(modules_dir.join("modules.dep"))?;
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: HashSet<String> = builtin.lines().map(module_name).collect();
    let deps = parse_modules_dep(&dep);
    let by_path: HashMap<&str, &Vec<String>> =
        deps.values().map(|(p, d)| (p.as_str(), d)).collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    fn visit<'a>(
        path: &'a str,
        by_path: &HashMap<&'a str, &'a Vec<String>>,
        seen: &mut HashSet<&'a str>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(path) {
            return;
        }
        if let Some(ds) = by_path.get(path) {
            for d in ds.iter() {
                visit(d, by_path, seen, order);
            }
        }
        order.push(path.to_string());
    }
    for w in wanted {
        match deps.get(*w) {
            Some((path, _)) => visit(path, &by_path, &mut seen, &mut order),
            None if builtin.contains(*w) => {}
            None => bail!("module {w} is neither built in nor in modules.dep"),
        }
    }
    Ok(order)
}

/// Builds (once per kernel) and returns the initramfs.
pub fn ensure(kernel: &Kernel) -> Result<PathBuf> {
    let key = crate::host::hash_key(&[INIT, &ROOT_MODULES.join(",")]);
    let dir = kernel.root.join(format!("testbed-initramfs-{key}"));
    let path = dir.join("initramfs.cpio");
    let stamp = Stamp::new(&dir);
    if stamp.done() && path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)?;
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "newroot", "modules"] {
        cpio.dir(d);
    }
    let busybox = std::fs::read("/bin/busybox").context("reading /bin/busybox (busybox-static)")?;
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.file("init", 0o755, INIT.as_bytes());
    let mut names = Vec::new();
    for rel in load_order(&kernel.modules_dir(), ROOT_MODULES)? {
        let src = kernel.modules_dir().join(&rel);
        let (name, data) = if rel.ends_with(".xz") {
            let out = run(Command::new("xz").arg("-dc").arg(&src))?;
            (module_name(&rel) + ".ko", out.stdout)
        } else {
            (module_name(&rel) + ".ko", std::fs::read(&src)?)
        };
        cpio.file(&format!("modules/{name}"), 0o644, &data);
        names.push(name);
    }
    cpio.file("modules/order", 0o644, (names.join("\n") + "\n").as_bytes());
    std::fs::write(&path, cpio.finish())?;
    stamp.mark()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let buf = c.finish();
        assert_eq!(buf.len() % 4, 0);
        assert!(buf.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains("TRAILER!!!"));
        // The file's size field (7th field) is 10 bytes.
        let second = text.match_indices("070701").nth(1).unwrap().0;
        assert_eq!(&text[second + 6 + 6 * 8..second + 6 + 7 * 8], "0000000a");
    }

    #[test]
    fn dependencies_come_first() {
        let dir = std::env::temp_dir().join(format!("mxfs-tb-moddep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko\n\
             kernel/fs/jbd2/jbd2.ko:\nkernel/fs/mbcache.ko:\n\
             kernel/drivers/block/virtio_blk.ko:\nkernel/crypto/crc32c_generic.ko:\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )
        .unwrap();
        let order = load_order(&dir, ROOT_MODULES).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/crypto/crc32c_generic.ko",
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/fs/mbcache.ko",
                "kernel/fs/ext4/ext4.ko"
            ]
        );
    }

    #[test]
    fn unknown_module_is_an_error() {
        let dir = std::env::temp_dir().join(format!("mxfs-tb-moddep2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("modules.dep"), "").unwrap();
        let r = load_order(&dir, &["nosuch"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(r.is_err());
    }
}
