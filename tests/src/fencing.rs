//! Fencing checks that need two nodes: node 1 mounts MXFS, node 2 plays
//! the survivors that preempt its key.

use crate::checks::lun_device;
use crate::cluster::Cluster;
use crate::host::say;
use crate::single::{self, MNT};
use anyhow::{ensure, Result};
use std::time::{Duration, Instant};

/// The key node 2 registers to preempt with (it runs no mxfsd).
const SURVIVOR_KEY: &str = "0x6d7866735302";

/// A node whose key is preempted fences itself: within a few heartbeat
/// intervals every operation on its mount fails with EIO, the kernel log
/// and mxfsd's journal say it was fenced and why, its writes to the LUN
/// fail with RESERVATION CONFLICT, and an unmount still works.  Data it
/// had synced before is intact when the volume is mounted again.
pub fn self_fence_when_preempted(c: &mut Cluster) -> Result<()> {
    let dev1 = single::fresh_volume(c.node(1))?;
    let dev2 = lun_device(c.node(2))?;
    c.node(1).must(&format!(
        "mount -t mxfs {dev1} {MNT} && echo before-fence > {MNT}/kept && sync && dmesg -C"
    ))?;
    let key1 = single::node_key(c.node(1))?;
    c.node(2).must(&format!(
        "sg_persist --out --register --param-sark={SURVIVOR_KEY} {dev2} >/dev/null && \
         sg_persist --out --preempt --param-rk={SURVIVOR_KEY} --param-sark=0x{key1:x} \
         --prout-type=5 {dev2} >/dev/null"
    ))?;
    let preempted = Instant::now();
    say(format!("node2 preempted node1's key 0x{key1:x}"));
    let r = (|| -> Result<()> {
        let fenced_after = loop {
            let out = c
                .node(1)
                .sh(&format!("ls {MNT}"), Duration::from_secs(30))?;
            if !out.ok() && out.stderr.contains("Input/output error") {
                break preempted.elapsed();
            }
            ensure!(
                preempted.elapsed() < Duration::from_secs(20),
                "node1's mount still works 20 s after its key was preempted: {} {}",
                out.stdout.trim(),
                out.stderr.trim()
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        say(format!(
            "node1 fenced itself {:.1} s after the preempt",
            fenced_after.as_secs_f64()
        ));
        let klog = c.node(1).must("dmesg | grep -i mxfs || true")?;
        ensure!(
            klog.contains("fenced"),
            "the kernel log should say the node was fenced: {klog:?}"
        );
        let journal = c.node(1).must(
            "journalctl --no-pager SYSLOG_IDENTIFIER=mxfsd --since -2min | grep -i 'fenc' || true",
        )?;
        ensure!(
            journal.contains("preempted"),
            "mxfsd's journal should say the key was preempted: {journal:?}"
        );
        let object = crate::dbus::object_of(c.node(1), &dev1)?;
        let state = crate::dbus::property(c.node(1), &object, "FencingState")?;
        let why = crate::dbus::property(c.node(1), &object, "FenceReason")?;
        say(format!("D-Bus: FencingState {state}, FenceReason {why}"));
        ensure!(
            state == "s \"fenced\"" && why.contains("preempted"),
            "D-Bus should show the node fenced and why: {state} {why}"
        );
        let write = c.node(1).sh(
            &format!("dd if=/dev/zero of={dev1} bs=4096 count=1 seek=100000 oflag=direct"),
            Duration::from_secs(30),
        )?;
        ensure!(
            !write.ok(),
            "node1 could still write the LUN after it was preempted"
        );
        say(format!(
            "kernel: {}; node1's own write to the LUN: {}",
            klog.lines().last().unwrap_or("").trim(),
            write.stderr.lines().next().unwrap_or("").trim()
        ));
        Ok(())
    })();
    let umount = c
        .node(1)
        .sh(&format!("umount {MNT}"), Duration::from_secs(120))?;
    let left = c.node(1).must("pgrep -c -x mxfsd || true")?;
    // Let node 1 back in: clear every registration from node 2.
    c.node(2).must(&format!(
        "sg_persist --out --clear --param-rk={SURVIVOR_KEY} {dev2} >/dev/null"
    ))?;
    r?;
    ensure!(
        umount.ok(),
        "umount of a fenced mount failed: {}",
        umount.stderr
    );
    ensure!(
        left.trim() == "0",
        "mxfsd still running after umount of a fenced mount"
    );
    let seen = c.node(1).must(&format!(
        "mount -t mxfs {dev1} {MNT} && cat {MNT}/kept; umount {MNT}"
    ))?;
    ensure!(
        seen.trim() == "before-fence",
        "data synced before the fence is lost: {seen:?}"
    );
    say("umount of the fenced mount worked; remounted after the clear, the synced data is there");
    Ok(())
}

/// A LUN reserved by someone else with another reservation type (another
/// cluster stack) is refused: mxfsd gives up before it is ready, the mount
/// fails with its reason on mount.mxfs's one line (read from the kernel's
/// filesystem context), and node 1's key is not left behind.
pub fn refuses_foreign_reservation(c: &mut Cluster) -> Result<()> {
    let dev1 = single::fresh_volume(c.node(1))?;
    let dev2 = lun_device(c.node(2))?;
    // PR type 1: Write Exclusive, held by node 2.
    c.node(2).must(&format!(
        "sg_persist --out --register --param-sark={SURVIVOR_KEY} {dev2} >/dev/null && \
         sg_persist --out --reserve --param-rk={SURVIVOR_KEY} --prout-type=1 {dev2} >/dev/null"
    ))?;
    let r = (|| -> Result<()> {
        let out = c.node(1).sh(
            &format!("mount -t mxfs {dev1} {MNT}"),
            Duration::from_secs(120),
        )?;
        let err = out.stderr.trim().to_string();
        say(format!("foreign reservation: mount said {err:?}"));
        ensure!(!out.ok(), "mount succeeded on a LUN another stack reserved");
        ensure!(
            err.starts_with("mount.mxfs: ")
                && err.lines().count() == 1
                && err.contains("another cluster stack"),
            "mount.mxfs should print mxfsd's reason in one line: {err:?}"
        );
        let keys = c.node(2).must(&format!("sg_persist --in -k {dev2}"))?;
        let registered: Vec<&str> = keys
            .split_whitespace()
            .filter(|w| w.starts_with("0x"))
            .collect();
        ensure!(
            registered == [SURVIVOR_KEY],
            "a refused mount should leave no key of node 1: {registered:?}"
        );
        let left = c.node(1).must("pgrep -c -x mxfsd || true")?;
        ensure!(left.trim() == "0", "an mxfsd is left after the refusal");
        Ok(())
    })();
    c.node(2).must(&format!(
        "sg_persist --out --clear --param-rk={SURVIVOR_KEY} {dev2} >/dev/null"
    ))?;
    r
}
