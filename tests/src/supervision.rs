//! The daemon as a systemd unit: the kernel-spawned mxfsd hands itself to
//! `mxfsd@UUID.service`, systemd restarts it when it dies and it
//! re-attaches to the live mount; a daemon that does not come back leaves
//! the mount dead (EIO) after the module's `reattach_timeout`.

use crate::cluster::Cluster;
use crate::dbus;
use crate::host::say;
use crate::multinode::{prop, stopped_and_clean};
use crate::node::Node;
use crate::single::{self, MNT};
use anyhow::{bail, ensure, Context, Result};
use std::time::{Duration, Instant};

const PARAM: &str = "/sys/module/mxfs/parameters/reattach_timeout";

pub(crate) fn unit_of(node: &mut Node, dev: &str) -> Result<String> {
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

/// `kill -9` of `unit`'s daemon (MainPID `before`); waits, 30 s at
/// most, for systemd to have restarted it (a new MainPID, active).
/// Returns the new MainPID and how long the restart took.
fn kill_and_restart(node: &mut Node, unit: &str, before: u32) -> Result<(u32, Duration)> {
    node.must(&format!("kill -9 {before}"))?;
    let killed = Instant::now();
    loop {
        let pid = main_pid(node, unit)?;
        let active = node.must(&format!("systemctl is-active {unit} || true"))?;
        if pid != 0 && pid != before && active.trim() == "active" {
            return Ok((pid, killed.elapsed()));
        }
        ensure!(
            killed.elapsed() < Duration::from_secs(30),
            "{unit} was not restarted within 30 s (MainPID {pid}, {})",
            active.trim()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
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
        let (after, back) = kill_and_restart(node, &unit, before)?;
        let klog = node.must("dmesg | grep -i mxfs || true")?;
        // The success line, not the timeout's ("no restarted mxfsd
        // re-attached in time ...").
        ensure!(
            klog.contains("mxfsd re-attached (pid") && !klog.contains("the mount stays dead"),
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

/// Lines each write loop of the cluster step appends.
const LOOP_LINES: u32 = 1000;
/// In the loops' command line, for the clean-up's `pkill -f`.
const LOOP_MARK: &str = "mxfs-restart-loop";
/// The Role property as `busctl get-property` prints it.
const OWNER: &str = "s \"owner\"";
const CLIENT: &str = "s \"client\"";

/// Starts, in the background on node `n`, a loop appending
/// [`LOOP_LINES`] lines to `{MNT}/loop.node{n}`, one every 0.02 s; at the
/// end it writes "errors longest-write-in-ms" to `/tmp/loop.done`.
fn start_timed_loop(c: &mut Cluster, n: usize) -> Result<()> {
    c.node(n)
        .must(&format!(
            "rm -f /tmp/loop.done; setsid sh -c 'f=$1; e=0; m=0; i=0; \
             while [ $i -lt {LOOP_LINES} ]; do \
             s=$(date +%s%N); echo line$i >> \"$f\" || e=$((e+1)); \
             d=$(( ($(date +%s%N) - $s) / 1000000 )); [ $d -gt $m ] && m=$d; \
             i=$((i+1)); sleep 0.02; done; echo \"$e $m\" > /tmp/loop.done' \
             {LOOP_MARK} {MNT}/loop.node{n} > /dev/null 2>&1 < /dev/null &"
        ))
        .map(|_| ())
}

/// Whether node `n`'s loop of [`start_timed_loop`] is still writing.
fn loop_running(c: &mut Cluster, n: usize) -> Result<bool> {
    let out = c
        .node(n)
        .must("[ -e /tmp/loop.done ] && echo done || echo running")?;
    Ok(out.trim() == "running")
}

/// Phase of [`cluster_daemons_restart_and_reattach`] on node `n`:
/// `kill -9` of its daemon, systemd restarts it (30 s at most), and the
/// kernel log says the new one re-attached to the live mount.  Returns
/// the old and new MainPID and how long the restart took.
pub(crate) fn kill_restart_reattach(
    c: &mut Cluster,
    n: usize,
    unit: &str,
) -> Result<(u32, u32, Duration)> {
    let node = c.node(n);
    let before = main_pid(node, unit)?;
    ensure!(before != 0, "node{n}: {unit} has no MainPID");
    node.must("dmesg -C")?;
    let (after, took) = kill_and_restart(node, unit, before).with_context(|| format!("node{n}"))?;
    // the unit may be active a moment before the module has logged it
    let deadline = Instant::now() + Duration::from_secs(10);
    let klog = loop {
        let klog = node.must("dmesg | grep -i mxfs || true")?;
        if klog.contains("mxfsd re-attached (pid") || Instant::now() >= deadline {
            break klog;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    ensure!(
        klog.contains("mxfsd re-attached (pid") && !klog.contains("the mount stays dead"),
        "node{n}'s kernel log should say the restarted daemon re-attached: {klog:?}"
    );
    Ok((before, after, took))
}

/// Waits, 30 s at most, for node `n`'s D-Bus properties to read as
/// `want` (a restarted daemon takes its bus name and rejoins a moment
/// after systemd sees it ready); fails naming what they read last.
pub(crate) fn props_become(
    c: &mut Cluster,
    n: usize,
    object: &str,
    want: &[(&str, &str)],
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<String> = want
            .iter()
            .map(|(name, _)| {
                prop(c, n, object, name).unwrap_or_else(|e| format!("unreadable ({e:#})"))
            })
            .collect();
        if want.iter().zip(&got).all(|((_, w), g)| g == w) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = want
                .iter()
                .zip(&got)
                .map(|((name, w), g)| format!("{name} {g} (want {w})"))
                .collect();
            bail!(
                "node{n}'s D-Bus properties 30 s after its daemon's restart: {}",
                seen.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Two nodes on one volume, node 1 the owner, node 2 its client, each
/// running a write loop: `kill -9` of the client's daemon, then of the
/// owner's; systemd restarts each, it re-attaches to the live mount,
/// both keep their roles, owner and epoch; neither loop sees an error
/// (the longest single write is the stall, reported), both files are
/// whole on both nodes, and a write after both restarts is seen across
/// nodes.  The unmounts leave no daemon and a clean XFS.
pub fn cluster_daemons_restart_and_reattach(c: &mut Cluster) -> Result<()> {
    let dev = single::fresh_volume(c.node(1))?;
    let dev2 = crate::checks::lun_device(c.node(2))?;
    let object = dbus::object_of(c.node(1), &dev)?;
    // the same volume: the same unit name on both nodes
    let unit = unit_of(c.node(1), &dev)?;
    c.node(1).must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let r = (|| -> Result<()> {
        c.node(2).must(&format!("mount -t mxfs {dev2} {MNT}"))?;
        let r1 = prop(c, 1, &object, "Role")?;
        let r2 = prop(c, 2, &object, "Role")?;
        ensure!(r1 == OWNER && r2 == CLIENT, "roles: node1 {r1}, node2 {r2}");
        let id1 = prop(c, 1, &object, "NodeId")?;
        let owner = prop(c, 2, &object, "OwnerNode")?;
        ensure!(
            owner == id1,
            "node2's OwnerNode {owner}, node1's NodeId {id1}"
        );
        let epoch = prop(c, 1, &object, "Epoch")?;
        let epoch2 = prop(c, 2, &object, "Epoch")?;
        ensure!(epoch == epoch2, "Epoch: node1 {epoch}, node2 {epoch2}");

        for n in [1, 2] {
            start_timed_loop(c, n)?;
        }
        std::thread::sleep(Duration::from_millis(500));

        // A: the client's daemon
        let live_a = [loop_running(c, 1)?, loop_running(c, 2)?];
        let (old2, new2, took2) = kill_restart_reattach(c, 2, &unit)?;
        props_become(
            c,
            2,
            &object,
            &[("Role", CLIENT), ("OwnerNode", &id1), ("Epoch", &epoch)],
        )?;
        props_become(c, 1, &object, &[("Role", OWNER), ("Epoch", &epoch)])?;
        say(format!(
            "node2 (client): mxfsd pid {old2} killed, restarted as pid {new2} in {:.1} s, \
             re-attached; still a client of {} at epoch {}",
            took2.as_secs_f64(),
            dbus::shown(&id1),
            dbus::shown(&epoch)
        ));

        // B: the owner's daemon
        let live_b = [loop_running(c, 1)?, loop_running(c, 2)?];
        let (old1, new1, took1) = kill_restart_reattach(c, 1, &unit)?;
        props_become(
            c,
            1,
            &object,
            &[("Role", OWNER), ("NodeId", &id1), ("Epoch", &epoch)],
        )?;
        props_become(
            c,
            2,
            &object,
            &[("Role", CLIENT), ("OwnerNode", &id1), ("Epoch", &epoch)],
        )?;
        // it took back its reply cache from the unit's descriptor store
        // (what a client's repeat of an in-flight request is answered from)
        let mut cache = String::new();
        for _ in 0..20 {
            cache = c.node(1).must(&format!(
                "journalctl -o json _PID={new1} | grep 'took back the reply cache' \
                 | grep -o '\"ANSWERS\":\"[0-9]*\"' || true"
            ))?;
            if !cache.trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        ensure!(
            !cache.trim().is_empty(),
            "node1's restarted mxfsd (pid {new1}) did not take back its reply cache"
        );
        say(format!(
            "node1 (owner): mxfsd pid {old1} killed, restarted as pid {new1} in {:.1} s, \
             re-attached; still the owner at epoch {}, node2 still its client; \
             reply cache taken back ({})",
            took1.as_secs_f64(),
            dbus::shown(&epoch),
            cache.trim()
        ));

        // both loops to their end: "errors longest-write-ms"
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut done: [Option<(u32, u64)>; 2] = [None, None];
        while done.iter().any(Option::is_none) {
            for n in [1, 2] {
                if done[n - 1].is_some() {
                    continue;
                }
                let out = c.node(n).must("cat /tmp/loop.done 2>/dev/null || true")?;
                if let [e, m] = out.split_whitespace().collect::<Vec<_>>()[..] {
                    done[n - 1] = Some((
                        e.parse()
                            .with_context(|| format!("node{n}'s loop: {out:?}"))?,
                        m.parse()
                            .with_context(|| format!("node{n}'s loop: {out:?}"))?,
                    ));
                }
            }
            if done.iter().any(Option::is_none) {
                ensure!(
                    Instant::now() < deadline,
                    "the write loops did not finish within 180 s (node1 {:?}, node2 {:?})",
                    done[0],
                    done[1]
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        let [(e1, m1), (e2, m2)] = done.map(|d| d.unwrap_or_default());
        // each file whole, and the same, on both nodes
        let script =
            format!("for f in {MNT}/loop.node1 {MNT}/loop.node2; do wc -l < $f; md5sum < $f; done");
        let seen1 = c.node(1).must(&script)?;
        let seen2 = c.node(2).must(&script)?;
        let lines: Vec<&str> = seen1.lines().step_by(2).map(str::trim).collect();
        say(format!(
            "kill -9 of both daemons under write loops: client's restarted in {:.1} s, \
             owner's in {:.1} s (loops running at the kills: {live_a:?}, {live_b:?}); \
             node1's loop: {e1} errors, longest write {m1} ms; node2's: {e2} errors, \
             longest write {m2} ms; lines per file {lines:?}",
            took2.as_secs_f64(),
            took1.as_secs_f64()
        ));
        ensure!(
            e1 == 0 && e2 == 0,
            "the write loops saw errors across the restarts: node1 {e1}, node2 {e2}"
        );
        let want = LOOP_LINES.to_string();
        ensure!(
            lines == [want.as_str(), want.as_str()],
            "node1 reads {lines:?} lines of loop.node1, loop.node2 (want {want} each)"
        );
        ensure!(
            seen1 == seen2,
            "the loop files differ between the nodes: node1 {seen1:?}, node2 {seen2:?}"
        );

        // the mount keeps working: written on one node, read on the other
        for (writer, reader, file, text) in [
            (2, 1, "after", "client, after both restarts"),
            (1, 2, "after1", "owner, after both restarts"),
        ] {
            c.node(writer)
                .must(&format!("echo '{text}' > {MNT}/{file}"))?;
            let got = c.node(reader).must(&format!("cat {MNT}/{file}"))?;
            ensure!(
                got == format!("{text}\n"),
                "node{reader} read {got:?} of node{writer}'s file after the restarts"
            );
        }
        Ok(())
    })();
    // the loops, should a check have failed while they ran (the bracket
    // keeps pkill from matching the shell that runs it)
    let mark = format!("[{}]{}", &LOOP_MARK[..1], &LOOP_MARK[1..]);
    for n in [1, 2] {
        let _ = c.node(n).sh(
            &format!("pkill -f '{mark}' || true"),
            Duration::from_secs(30),
        );
    }
    // the client first, then the owner
    let u2 = c
        .node(2)
        .sh(&format!("umount {MNT}"), Duration::from_secs(60));
    let u1 = c
        .node(1)
        .sh(&format!("umount {MNT}"), Duration::from_secs(60));
    r?;
    let u2 = u2?;
    ensure!(u2.ok(), "umount on node2 (client) failed: {}", u2.stderr);
    let u1 = u1?;
    ensure!(u1.ok(), "umount on node1 (owner) failed: {}", u1.stderr);
    // the daemons leave with the unmounts (a few seconds allowed), and
    // systemd does not restart them
    for n in [1, 2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = c.node(n).must("pgrep -c -x mxfsd || true")?;
            let active = c
                .node(n)
                .must(&format!("systemctl is-active {unit} || true"))?;
            if left.trim() == "0" && active.trim() == "inactive" {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "node{n} 10 s after umount: {} mxfsd left, {unit} {}",
                left.trim(),
                active.trim()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    stopped_and_clean(c, 1..=2, &dev)?;
    say("both unmounted: no mxfsd left, xfs_repair -n clean");
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
        // other mounts too.  The last dozen: a disk heartbeat still
        // claiming its slot (it waits out stale ones) logs its start
        // after the SHUTDOWN when the reboot comes that soon.
        let previous = node.must(&format!(
            "journalctl --no-pager -o cat -b -1 MXFS_VOLUME={} | tail -n 12",
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
