//! The daemon as a systemd unit: the kernel-spawned mxfsd hands itself to
//! `mxfsd@UUID.service`, systemd restarts it when it dies and it
//! re-attaches to the live mount; a daemon that does not come back leaves
//! the mount dead (EIO) after the module's `reattach_timeout`.

use crate::host::say;
use crate::node::Node;
use crate::single::{self, MNT};
use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};

const PARAM: &str = "/sys/module/mxfs/parameters/reattach_timeout";

fn unit_of(node: &mut Node, dev: &str) -> Result<String> {
    let uuid = node.must(&format!("blkid -s UUID -o value {dev}"))?;
    Ok(format!(
        "mxfsd@{}.service",
        uuid.trim().replace('-', "").to_lowercase()
    ))
}

fn main_pid(node: &mut Node, unit: &str) -> Result<u32> {
    node.must(&format!("systemctl show -p MainPID --value {unit}"))?
        .trim()
        .parse()
        .context("MainPID")
}

/// `systemctl status` and `journalctl -u` show the daemon of a mounted
/// volume; `kill -9` of it: systemd restarts it, it re-attaches, and a
/// write loop running meanwhile sees no error.
pub fn restart_and_reattach(node: &mut Node) -> Result<()> {
    let dev = single::fresh_volume(node)?;
    node.must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let unit = unit_of(node, &dev)?;
    let r = (|| -> Result<()> {
        let status = node.must(&format!(
            "systemctl status --no-pager --lines=0 {unit} || true"
        ))?;
        say(format!(
            "systemctl status: {}",
            status
                .lines()
                .take(4)
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" | ")
        ));
        ensure!(
            status.contains("active (running)") && status.contains("@mxfsd"),
            "{unit} should run the daemon (argv[0] @mxfsd):\n{status}"
        );
        let fields = node.must(&format!(
            "journalctl --no-pager -o verbose -u {unit} | grep -E '^ *MXFS_(VOLUME|NODE)=' | sort -u"
        ))?;
        ensure!(
            fields.contains("MXFS_VOLUME=") && fields.contains("MXFS_NODE="),
            "journalctl -u {unit} lacks the structured fields: {fields:?}"
        );
        let before = main_pid(node, &unit)?;
        node.must("dmesg -C")?;
        node.must(&format!(
            "rm -f /tmp/loop.done; setsid sh -c 'e=0; i=0; while [ $i -lt 300 ]; do \
             echo line$i >> {MNT}/loop || e=$((e+1)); i=$((i+1)); sleep 0.02; done; \
             echo $e > /tmp/loop.done' >/dev/null 2>&1 < /dev/null &"
        ))?;
        std::thread::sleep(Duration::from_millis(500));
        node.must(&format!("kill -9 {before}"))?;
        let killed = Instant::now();
        let after = loop {
            let pid = main_pid(node, &unit)?;
            let active = node.must(&format!("systemctl is-active {unit} || true"))?;
            if pid != 0 && pid != before && active.trim() == "active" {
                break pid;
            }
            ensure!(
                killed.elapsed() < Duration::from_secs(30),
                "{unit} was not restarted within 30 s (MainPID {pid}, {})",
                active.trim()
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        let back = killed.elapsed();
        let klog = node.must("dmesg | grep -i mxfs || true")?;
        ensure!(
            klog.contains("re-attached"),
            "the kernel log should say the daemon re-attached: {klog:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        let errors = loop {
            let out = node.must("cat /tmp/loop.done 2>/dev/null || true")?;
            if !out.trim().is_empty() {
                break out.trim().to_string();
            }
            ensure!(Instant::now() < deadline, "the write loop did not finish");
            std::thread::sleep(Duration::from_millis(500));
        };
        let lines = node.must(&format!("wc -l < {MNT}/loop"))?;
        say(format!(
            "kill -9 of mxfsd (pid {before}): restarted as pid {after} and re-attached in {:.1} s; \
             the write loop saw {errors} errors and wrote {} lines",
            back.as_secs_f64(),
            lines.trim()
        ));
        ensure!(
            errors == "0",
            "the write loop saw {errors} errors across the restart"
        );
        ensure!(
            lines.trim() == "300",
            "the write loop lost lines: {}",
            lines.trim()
        );
        Ok(())
    })();
    node.must(&format!("umount {MNT}"))?;
    r?;
    let active = node.must(&format!("systemctl is-active {unit} || true"))?;
    ensure!(
        active.trim() == "inactive",
        "{unit} should stop with the umount, not be restarted: {}",
        active.trim()
    );
    Ok(())
}

/// A daemon stopped for good (`systemctl stop`): after `reattach_timeout`
/// the mount is dead, operations fail with EIO and the kernel says why;
/// umount still works and leaves no daemon.
pub fn no_reattach_means_eio(node: &mut Node) -> Result<()> {
    let dev = single::fresh_volume(node)?;
    node.must(&format!("echo 3 > {PARAM}"))?;
    let r = (|| -> Result<()> {
        node.must(&format!(
            "mount -t mxfs {dev} {MNT} && echo kept > {MNT}/kept && sync"
        ))?;
        let unit = unit_of(node, &dev)?;
        node.must(&format!("dmesg -C; systemctl stop {unit}"))?;
        let io = node.sh(&format!("cat {MNT}/kept"), Duration::from_secs(30))?;
        ensure!(
            io.ok(),
            "operations should go on while the daemon may re-attach: {}",
            io.stderr
        );
        std::thread::sleep(Duration::from_secs(5));
        let io = node.sh(&format!("ls {MNT}"), Duration::from_secs(30))?;
        let klog = node.must("dmesg | grep -i mxfs || true")?;
        say(format!(
            "after systemctl stop + reattach_timeout: ls says {:?}; kernel: {:?}",
            io.stderr.trim(),
            klog.lines().last().unwrap_or("").trim()
        ));
        ensure!(
            !io.ok() && io.stderr.contains("Input/output error"),
            "the mount should be dead once no daemon re-attached: {io:?}"
        );
        ensure!(
            klog.contains("re-attach"),
            "the kernel should say why: {klog:?}"
        );
        Ok(())
    })();
    let umount = node.sh(&format!("umount {MNT}"), Duration::from_secs(120))?;
    node.must(&format!("echo 30 > {PARAM}"))?;
    r?;
    ensure!(
        umount.ok(),
        "umount of a dead mount failed: {}",
        umount.stderr
    );
    Ok(())
}

/// An `/etc/fstab` entry with `_netdev` (naming the volume by its udev
/// link): `systemctl reboot` with the volume mounted unmounts it cleanly
/// (mxfsd, spared by the shutdown, leaves when the kernel unmounts: its
/// journal of the previous boot says so) and the volume is mounted again
/// at boot with no XFS log recovery and the data intact.
pub fn reboot_with_fstab(node: &mut Node) -> Result<()> {
    let dev = single::fresh_volume(node)?;
    node.must(&format!("udevadm trigger --settle {dev} || udevadm settle"))?;
    let uuid = node.must(&format!("blkid -s UUID -o value {dev}"))?;
    let spec = format!("/dev/disk/by-mxfs-uuid/{}", uuid.trim());
    let line = format!("{spec} {MNT} mxfs _netdev 0 0");
    node.must(&format!(
        "echo '{line}' >> /etc/fstab && systemctl daemon-reload && mount {MNT} && \
         echo before-reboot > {MNT}/reboot && sync"
    ))?;
    let r = (|| -> Result<()> {
        let took = node.reboot(Duration::from_secs(300))?;
        let mounted = node.must(&format!("findmnt -n -o FSTYPE,SOURCE {MNT} || true"))?;
        let seen = node.sh(&format!("cat {MNT}/reboot"), Duration::from_secs(30))?;
        // This volume's records only (MXFS_VOLUME=): the previous boot had
        // other mounts too.
        let previous = node.must(&format!(
            "journalctl --no-pager -o cat -b -1 MXFS_VOLUME={} | tail -n 4",
            uuid.trim()
        ))?;
        let recovery = node.must("dmesg | grep -c 'Starting recovery' || true")?;
        say(format!(
            "rebooted in {:.1} s; {MNT}: {}; previous boot's mxfsd: {:?}; XFS log recoveries: {}",
            took.as_secs_f64(),
            mounted.trim(),
            previous.lines().map(str::trim).collect::<Vec<_>>(),
            recovery.trim()
        ));
        ensure!(
            mounted.split_whitespace().next() == Some("mxfs"),
            "{MNT} was not mounted as mxfs at boot: {mounted:?}"
        );
        ensure!(
            seen.ok() && seen.stdout.trim() == "before-reboot",
            "the data written before the reboot: {seen:?}"
        );
        ensure!(
            previous.contains("SHUTDOWN from the kernel") && previous.contains("unregistered"),
            "the previous boot's mxfsd should have left at the unmount: {previous:?}"
        );
        ensure!(
            recovery.trim() == "0",
            "XFS needed log recovery after the reboot"
        );
        Ok(())
    })();
    let clean = node.sh(
        &format!("sed -i '\\#^{spec} #d' /etc/fstab; systemctl daemon-reload; umount {MNT}"),
        Duration::from_secs(120),
    );
    r?;
    let clean = clean?;
    ensure!(clean.ok(), "cleaning up after the reboot: {}", clean.stderr);
    Ok(())
}
