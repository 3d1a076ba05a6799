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
