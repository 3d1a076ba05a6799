//! Single-node MXFS checks (the kernel-module issue): `mount -t mxfs` on
//! one node stacks over XFS with mxfsd as owner, passes operations
//! through, refuses bad input cleanly, and unmounts leaving XFS clean.
//! They run on node 1 of a booted cluster; the other nodes stay idle.

use crate::bench;
use crate::checks::lun_device;
use crate::host::say;
use crate::node::Node;
use crate::rootfs::GUEST_ARTIFACTS;
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::time::Duration;

pub const MNT: &str = "/mnt/shared";
pub const XFS_MNT: &str = "/mnt/xfs";

/// Installs MXFS the way an admin does, from the project's Debian packages
/// on the artifacts disk (`apt install ./mxfs-dkms_*.deb ./mxfs_*.deb`):
/// DKMS builds the module for the running kernel.  Then loads the module.
/// From here `mount -t mxfs` runs mount.mxfs first; `mount -i -t mxfs`
/// goes to the kernel directly.  Returns what the install printed of DKMS.
pub fn install(node: &mut Node) -> Result<String> {
    let out = node.sh(&install_script(), Duration::from_secs(1200))?;
    install_checked(node, out)
}

fn install_script() -> String {
    let v = crate::deb::VERSION;
    format!(
        "set -e; A={GUEST_ARTIFACTS}; start=$(date +%s); \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
           $A/mxfs-dkms_{v}_all.deb $A/mxfs_{v}_amd64.deb > /var/tmp/mxfs-install.log 2>&1 \
           || {{ tail -n 40 /var/tmp/mxfs-install.log; exit 1; }}; \
         echo \"install took $(( $(date +%s) - start )) s\"; dkms status mxfs; \
         modprobe mxfs; grep -qw mxfs /proc/filesystems; \
         modinfo -n mxfs; mkdir -p {MNT} {XFS_MNT} /mnt/second; \
         id tests >/dev/null 2>&1 || useradd --no-create-home --user-group tests"
    )
}

/// [`install`] started in the background of the guest (the DKMS build
/// takes minutes under TCG): [`finish_install`] waits for it.
pub fn start_install(node: &mut Node) -> Result<()> {
    node.write_file("/var/tmp/mxfs-install.sh", install_script().as_bytes())?;
    node.must(
        "rm -f /var/tmp/mxfs-install.rc; \
         (sh /var/tmp/mxfs-install.sh > /var/tmp/mxfs-install.out 2>&1; echo $? > /var/tmp/mxfs-install.rc) \
         > /dev/null 2>&1 &",
    )
    .map(|_| ())
}

pub fn finish_install(node: &mut Node) -> Result<String> {
    let out = node.sh(
        "for i in $(seq 1 2400); do [ -e /var/tmp/mxfs-install.rc ] && break; sleep 0.5; done; \
         cat /var/tmp/mxfs-install.out; exit $(cat /var/tmp/mxfs-install.rc 2>/dev/null || echo 124)",
        Duration::from_secs(1300),
    )?;
    install_checked(node, out)
}

fn install_checked(node: &mut Node, out: crate::qga::ExecOutput) -> Result<String> {
    ensure!(
        out.ok(),
        "{}: installing the packages failed:\n{}{}",
        node.name(),
        out.stdout,
        out.stderr
    );
    let shown = out.stdout.trim().replace('\n', "; ");
    say(format!("{}: {shown}", node.name()));
    ensure!(
        out.stdout.contains("installed") && out.stdout.contains("/updates/dkms/mxfs.ko"),
        "{}: DKMS did not install mxfs.ko: {shown}",
        node.name()
    );
    Ok(shown)
}

/// The mxfs lines of the kernel log since the last `dmesg -C`.
fn mxfs_kernel_log(node: &mut Node) -> Result<String> {
    node.must("dmesg | grep -i mxfs || true")
}

fn mounted(node: &mut Node, fstype: &str) -> Result<bool> {
    Ok(!node
        .must(&format!("awk '$3 == \"{fstype}\"' /proc/mounts"))?
        .trim()
        .is_empty())
}

/// How many mxfsd run; when some do, waits up to 5 s for them to exit (a
/// unit's daemon that gave up may still be on its way out).
fn daemons(node: &mut Node) -> Result<usize> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = node.must("pgrep -x mxfsd || true")?.lines().count();
        if n == 0 || std::time::Instant::now() > deadline {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// XFS on the LUN is clean: `xfs_repair -n` finds nothing and a plain XFS
/// mount needs no log recovery. Returns what `check` reads in the mounted
/// XFS.
fn xfs_clean(node: &mut Node, dev: &str, check: &str) -> Result<String> {
    let repair = node.sh(&format!("xfs_repair -n {dev}"), Duration::from_secs(300))?;
    ensure!(
        repair.ok(),
        "xfs_repair -n {dev} exited {}:\n{}{}",
        repair.code,
        repair.stdout,
        repair.stderr
    );
    node.must("dmesg -C")?;
    node.must(&format!("mount -t xfs {dev} {XFS_MNT}"))?;
    let log = node.must("dmesg")?;
    let seen = node.sh(check, Duration::from_secs(60));
    node.must(&format!("umount {XFS_MNT}"))?;
    ensure!(
        !log.contains("Starting recovery"),
        "XFS needed log recovery after umount:\n{log}"
    );
    let seen = seen?;
    ensure!(seen.ok(), "`{check}` on plain XFS failed: {}", seen.stderr);
    Ok(seen.stdout)
}

/// mkfs.xfs on the LUN, returning the device.
pub fn fresh_volume(node: &mut Node) -> Result<String> {
    let dev = lun_device(node)?;
    node.must(&format!("mkfs.xfs -f -q {dev}"))?;
    Ok(dev)
}

/// `mount -t mxfs` works and shows as mxfs; `umount` leaves no mxfsd and a
/// clean XFS; inode numbers and st_dev survive a remount.
pub fn mount_and_umount(node: &mut Node) -> Result<()> {
    let dev = fresh_volume(node)?;
    node.must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let line = node.must(&format!("grep ' {MNT} ' /proc/mounts"))?;
    say(format!("/proc/mounts: {}", line.trim()));
    ensure!(
        line.split_whitespace().nth(2) == Some("mxfs"),
        "not an mxfs mount: {line}"
    );
    ensure!(daemons(node)? == 1, "expected one mxfsd while mounted");
    node.must(&format!(
        "echo hello-mxfs > {MNT}/hello && mkdir {MNT}/dir && sync"
    ))?;
    let before = node.must(&format!("stat -c '%i %d' {MNT}/hello {MNT}/dir"))?;
    node.must(&format!("umount {MNT}"))?;
    ensure!(
        daemons(node)? == 0,
        "mxfsd still running after umount returned"
    );
    ensure!(
        !mounted(node, "mxfs")?,
        "an mxfs mount is left after umount"
    );
    node.must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let after = node.must(&format!("stat -c '%i %d' {MNT}/hello {MNT}/dir"))?;
    ensure!(
        before == after,
        "inode numbers or st_dev changed across remount: {before:?} -> {after:?}"
    );
    node.must(&format!("umount {MNT}"))?;
    let seen = xfs_clean(node, &dev, &format!("cat {XFS_MNT}/hello"))?;
    ensure!(seen.trim() == "hello-mxfs", "plain XFS shows {seen:?}");
    say("umount left no mxfsd; xfs_repair -n clean; no log recovery on a plain XFS mount");

    // mxfsd logs to the journal with the volume and node as fields.
    let uuid = node.must(&format!("blkid -s UUID -o value {dev}"))?;
    let uuid = uuid.trim().replace('-', "").to_lowercase();
    let fields = node.must(
        "journalctl --no-pager -o verbose SYSLOG_IDENTIFIER=mxfsd | grep -E '^ *MXFS_(VOLUME|NODE)=' | sort -u",
    )?;
    say(format!(
        "mxfsd journal fields: {}",
        fields.split_whitespace().collect::<Vec<_>>().join(" ")
    ));
    ensure!(
        fields
            .to_lowercase()
            .replace('-', "")
            .contains(&format!("mxfs_volume={uuid}"))
            && fields.contains("MXFS_NODE="),
        "mxfsd's journal records lack MXFS_VOLUME={uuid} or MXFS_NODE=: {fields:?}"
    );
    Ok(())
}

/// `.mxfs/` at the root belongs to the daemon: the mount hides it from
/// readdir and lookup, and nothing can make or change it through the mount.
pub fn hides_dot_mxfs(node: &mut Node) -> Result<()> {
    let dev = fresh_volume(node)?;
    node.must(&format!(
        "mount -t xfs {dev} {XFS_MNT} && mkdir {XFS_MNT}/.mxfs && echo state > {XFS_MNT}/.mxfs/notes \
         && umount {XFS_MNT}"
    ))?;
    node.must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let r = (|| -> Result<()> {
        let listing = node.must(&format!("ls -a {MNT}"))?;
        ensure!(
            !listing.lines().any(|l| l == ".mxfs"),
            "readdir shows .mxfs: {listing:?}"
        );
        for (what, cmd) in [
            ("lookup", format!("stat {MNT}/.mxfs")),
            ("open below it", format!("cat {MNT}/.mxfs/notes")),
            ("mkdir over it", format!("mkdir {MNT}/.mxfs")),
            ("create it", format!("touch {MNT}/.mxfs")),
            (
                "rename onto it",
                format!("touch {MNT}/x && mv {MNT}/x {MNT}/.mxfs"),
            ),
            ("symlink to it", format!("ln -s hello {MNT}/.mxfs")),
        ] {
            let out = node.sh(&cmd, Duration::from_secs(30))?;
            say(format!(".mxfs {what}: {}", out.stderr.trim()));
            ensure!(!out.ok(), ".mxfs: {what} succeeded through the mount");
        }
        Ok(())
    })();
    node.must(&format!("umount {MNT}"))?;
    r?;
    // The daemon made its lockstate next to what was there, and nothing
    // through the mount changed either.
    let seen = xfs_clean(
        node,
        &dev,
        &format!("cat {XFS_MNT}/.mxfs/notes && stat -c %s {XFS_MNT}/.mxfs/lockstate"),
    )?;
    let mut lines = seen.lines();
    ensure!(
        lines.next() == Some("state"),
        "the daemon's .mxfs was changed: {seen:?}"
    );
    let size: u64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    ensure!(
        size > 0,
        "the first owner made no .mxfs/lockstate: {seen:?}"
    );
    Ok(())
}

/// A mount that must fail: it fails, says why, and leaves nothing mounted
/// or running.  `cmd` bypasses mount.mxfs (`mount -i`) when `kernel` is
/// set: then the kernel log must say why; otherwise mount.mxfs's one line
/// on stderr must.
fn refused(node: &mut Node, what: &str, cmd: &str, kernel: bool) -> Result<String> {
    node.must("dmesg -C")?;
    let out = node.sh(cmd, Duration::from_secs(120))?;
    ensure!(!out.ok(), "{what}: `{cmd}` succeeded");
    let klog = mxfs_kernel_log(node)?;
    say(format!(
        "{what}: mount said {:?}; kernel: {:?}",
        out.stderr.trim(),
        klog.trim()
    ));
    if kernel {
        ensure!(
            !klog.trim().is_empty(),
            "{what}: nothing in the kernel log says why"
        );
    } else {
        ensure!(
            out.stderr.trim().starts_with("mount.mxfs: ") && out.stderr.trim().lines().count() == 1,
            "{what}: mount.mxfs should say why in one line: {:?}",
            out.stderr
        );
    }
    ensure!(!mounted(node, "mxfs")?, "{what}: something is mounted");
    ensure!(daemons(node)? == 0, "{what}: an mxfsd is left running");
    Ok(if kernel { klog } else { out.stderr })
}

/// Bad input: a non-XFS device, a missing device, a daemon that fails to
/// start, a second mount of a volume, a daemon killed while mounted.
/// Each refusal is checked through mount.mxfs and, where the helper would
/// catch it first, in the kernel too (`mount -i`).
pub fn bad_input(node: &mut Node) -> Result<()> {
    let dev = fresh_volume(node)?;
    node.must(&format!(
        "mount -t mxfs {dev} {MNT} && echo kept > {MNT}/kept && sync && umount {MNT}"
    ))?;
    let ext4 = node.must("blkid -L mxfs-artifacts")?.trim().to_string();
    refused(
        node,
        "non-XFS device (kernel)",
        &format!("mount -i -t mxfs {ext4} {MNT}"),
        true,
    )?;
    let msg = refused(
        node,
        "non-XFS device (mount.mxfs)",
        &format!("mount -t mxfs {ext4} {MNT}"),
        false,
    )?;
    ensure!(
        msg.contains("XFS"),
        "the message should say it is not XFS: {msg:?}"
    );
    let msg = refused(
        node,
        "unknown option",
        &format!("mount -t mxfs -o bogus=1 {dev} {MNT}"),
        false,
    )?;
    ensure!(
        msg.contains("bogus"),
        "the message should name the option: {msg:?}"
    );
    let missing = node.sh(
        &format!("mount -t mxfs /dev/nonexistent {MNT}"),
        Duration::from_secs(60),
    )?;
    ensure!(
        !missing.ok() && !missing.stderr.trim().is_empty(),
        "a missing device must fail with a message"
    );
    say(format!("missing device: {}", missing.stderr.trim()));
    ensure!(
        !mounted(node, "mxfs")? && daemons(node)? == 0,
        "a missing device left something behind"
    );

    let param = "/sys/module/mxfs/parameters/daemon_path";
    node.must(&format!("echo /bin/false > {param}"))?;
    let r = refused(
        node,
        "daemon fails to start",
        &format!("mount -t mxfs {dev} {MNT}"),
        true,
    );
    node.must(&format!("echo /usr/sbin/mxfsd > {param}"))?;
    r?;

    node.must(&format!("mount -t mxfs {dev} {MNT}"))?;
    node.must("dmesg -C")?;
    let second = node.sh(
        &format!("mount -t mxfs {dev} /mnt/second"),
        Duration::from_secs(60),
    )?;
    let still = node.sh(&format!("cat {MNT}/kept"), Duration::from_secs(30))?;
    let klog = mxfs_kernel_log(node)?;
    say(format!(
        "second mount: {:?}; kernel: {:?}",
        second.stderr.trim(),
        klog.trim()
    ));
    ensure!(!second.ok(), "a second mount of the same volume succeeded");
    ensure!(
        still.ok() && still.stdout.trim() == "kept",
        "the first mount broke after a second mount attempt"
    );
    ensure!(
        daemons(node)? == 1,
        "a second mount attempt left an extra mxfsd"
    );

    // With no grace for a restarted daemon to re-attach (the unit restarts
    // it; supervision checks that path), a killed daemon kills the mount.
    node.must(&format!("echo before-kill > {MNT}/written && sync"))?;
    node.must("echo 0 > /sys/module/mxfs/parameters/reattach_timeout")?;
    node.must("dmesg -C; pkill -9 -x mxfsd")?;
    std::thread::sleep(Duration::from_secs(2));
    let io = node.sh(&format!("ls {MNT}"), Duration::from_secs(60))?;
    let klog = mxfs_kernel_log(node)?;
    say(format!(
        "after kill -9 mxfsd: ls says {:?}; kernel: {:?}",
        io.stderr.trim(),
        klog.trim()
    ));
    ensure!(
        !io.ok() && io.stderr.contains("Input/output error"),
        "operations should fail with EIO: {io:?}"
    );
    ensure!(
        !klog.trim().is_empty(),
        "the kernel log should say why the mount is dead"
    );
    node.must(&format!("umount {MNT}"))?;
    node.must("echo 30 > /sys/module/mxfs/parameters/reattach_timeout")?;
    ensure!(
        !mounted(node, "mxfs")?,
        "umount of a dead mount left it mounted"
    );
    let seen = xfs_clean(node, &dev, &format!("cat {XFS_MNT}/kept {XFS_MNT}/written"))?;
    ensure!(
        seen == "kept\nbefore-kill\n",
        "data written before the kill is lost: {seen:?}"
    );
    Ok(())
}

/// pjdfstest's results: test name → outcome.
fn pjdfstest_results(output: &str) -> BTreeMap<String, String> {
    let strip = |s: &str| {
        let mut out = String::new();
        let mut esc = false;
        for ch in s.chars() {
            match (esc, ch) {
                (false, '\u{1b}') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    };
    output
        .lines()
        .map(strip)
        .filter(|l| !l.starts_with('\t') && !l.starts_with(' '))
        .filter_map(|l| {
            let (name, outcome) = l.split_once(char::is_whitespace)?;
            let outcome = outcome.trim();
            let known = [
                "ok",
                "FAILED",
                "skipped",
                "failed as expected",
                "PASSED UNEXPECTEDLY",
            ];
            (name.contains("::") && known.contains(&outcome))
                .then(|| (name.to_string(), outcome.to_string()))
        })
        .collect()
}

pub fn run_pjdfstest(node: &mut Node, dir: &str) -> Result<BTreeMap<String, String>> {
    let out = node.sh(
        &format!("cd {dir} && NO_COLOR=1 {GUEST_ARTIFACTS}/pjdfstest -c /tmp/pjdfstest.toml -p {dir} 2>&1"),
        Duration::from_secs(1800),
    )?;
    let results = pjdfstest_results(&out.stdout);
    if results.is_empty() {
        bail!(
            "pjdfstest produced no results (exit {}):\n{}",
            out.code,
            out.stdout
        );
    }
    Ok(results)
}

/// pjdfstest on mxfs passes every test it passes on the same XFS mounted
/// directly in the same guest: the two result sets are equal.
pub fn pjdfstest_matches_xfs(node: &mut Node) -> Result<()> {
    node.write_file(
        "/tmp/pjdfstest.toml",
        crate::tools::PJDFSTEST_CONF.as_bytes(),
    )?;
    let (xfs, mxfs) = on_xfs_then_mxfs(node, run_pjdfstest)?;
    let count = |r: &BTreeMap<String, String>, o: &str| r.values().filter(|v| *v == o).count();
    say(format!(
        "pjdfstest: XFS {} ok / {} failed / {} skipped; mxfs {} ok / {} failed / {} skipped",
        count(&xfs, "ok"),
        count(&xfs, "FAILED"),
        count(&xfs, "skipped"),
        count(&mxfs, "ok"),
        count(&mxfs, "FAILED"),
        count(&mxfs, "skipped")
    ));
    let diffs: Vec<String> = xfs
        .keys()
        .chain(mxfs.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| xfs.get(*k) != mxfs.get(*k))
        .map(|k| format!("{k}: xfs {:?}, mxfs {:?}", xfs.get(k), mxfs.get(k)))
        .collect();
    ensure!(
        diffs.is_empty(),
        "pjdfstest differs between XFS and mxfs:\n{}",
        diffs.join("\n")
    );
    Ok(())
}

/// fsx runs `ops` operations on mxfs with buffered I/O and mmap (fsx-rs),
/// and with O_DIRECT (mxfs-opcheck's direct-I/O exerciser).
pub fn fsx(node: &mut Node, ops: u32) -> Result<()> {
    let dev = fresh_volume(node)?;
    node.must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let r = (|| -> Result<()> {
        let out = node.sh(
            &format!(
                "cd {MNT} && start=$(date +%s); timeout 1800 {GUEST_ARTIFACTS}/fsx -N {ops} -S 7 -P /tmp \
                 {MNT}/fsx.file > /tmp/fsx.log 2>&1; rc=$?; tail -n 5 /tmp/fsx.log; \
                 echo \"fsx took $(( $(date +%s) - start )) s\"; exit $rc"
            ),
            Duration::from_secs(3600),
        )?;
        say(format!("fsx: exit {}: {}", out.code, out.stdout.trim()));
        ensure!(out.ok(), "fsx failed on mxfs:\n{}", out.stdout);
        let out = node.sh(
            &format!(
                "{GUEST_ARTIFACTS}/mxfs-opcheck --dio-fsx {MNT}/dio.file {ops} 7 2>&1 | tail -n 5"
            ),
            Duration::from_secs(3600),
        )?;
        say(format!(
            "O_DIRECT exerciser: exit {}: {}",
            out.code,
            out.stdout.trim()
        ));
        ensure!(
            out.ok(),
            "the O_DIRECT exerciser failed on mxfs:\n{}",
            out.stdout
        );
        Ok(())
    })();
    node.must(&format!("umount {MNT}"))
        .context("umount after fsx")?;
    r
}

/// mxfs-opcheck's report: group → outcome line, and group → its notes
/// (smaller features a group found missing).
pub type OpReport = (BTreeMap<String, String>, BTreeMap<String, Vec<String>>);

fn parse_opcheck(out: &str) -> OpReport {
    let mut groups = BTreeMap::new();
    let mut notes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.lines() {
        if let Some((g, rest)) = line.strip_prefix("group ").and_then(|l| l.split_once(' ')) {
            groups.insert(g.to_string(), rest.to_string());
        } else if let Some((g, rest)) = line.strip_prefix("note ").and_then(|l| l.split_once(": "))
        {
            notes
                .entry(g.to_string())
                .or_default()
                .push(rest.to_string());
        }
    }
    (groups, notes)
}

/// `check` on a fresh volume mounted as raw XFS, then on another mounted
/// as mxfs (each unmounted after, whatever the check gave): both results.
fn on_xfs_then_mxfs<T>(
    node: &mut Node,
    check: impl Fn(&mut Node, &str) -> Result<T>,
) -> Result<(T, T)> {
    let on = |node: &mut Node, fstype: &str, dir: &str| -> Result<T> {
        let dev = fresh_volume(node)?;
        node.must(&format!("mount -t {fstype} {dev} {dir}"))?;
        let r = check(node, dir);
        node.must(&format!("umount {dir}"))?;
        r
    };
    let xfs = on(node, "xfs", XFS_MNT)?;
    Ok((xfs, on(node, "mxfs", MNT)?))
}

/// Every mxfs-opcheck group run on `dir` of `node`.
pub fn run_opcheck(node: &mut Node, dir: &str) -> Result<OpReport> {
    let out = node.sh(
        &format!("{GUEST_ARTIFACTS}/mxfs-opcheck {dir} 2>&1"),
        Duration::from_secs(900),
    )?;
    let report = parse_opcheck(&out.stdout);
    ensure!(
        !report.0.is_empty(),
        "mxfs-opcheck printed no groups:\n{}{}",
        out.stdout,
        out.stderr
    );
    Ok(report)
}

/// Prints each group's outcome on XFS and on `label`'s mount, and returns
/// where that mount falls short of XFS: a group that passes on XFS and
/// not there, or a feature noted missing there that XFS has, each as
/// `group: what`.  Fails if a group fails on XFS itself.
pub fn opcheck_shortfalls(xfs: &OpReport, other: &OpReport, label: &str) -> Result<Vec<String>> {
    let ((xfs, xfs_notes), (theirs, their_notes)) = (xfs, other);
    let failed_on_xfs: Vec<_> = xfs
        .iter()
        .filter(|(_, r)| r.starts_with("FAILED"))
        .collect();
    ensure!(
        failed_on_xfs.is_empty(),
        "the checks themselves fail on plain XFS: {failed_on_xfs:?}"
    );
    let mut short = Vec::new();
    for (group, on_xfs) in xfs {
        let on_theirs = theirs.get(group).map(String::as_str).unwrap_or("missing");
        say(format!("group {group}: xfs {on_xfs}; {label} {on_theirs}"));
        if on_xfs == "ok" && on_theirs != "ok" {
            short.push(format!("{group}: {on_theirs}"));
        }
        let none = Vec::new();
        let known = xfs_notes.get(group).unwrap_or(&none);
        for note in their_notes.get(group).unwrap_or(&none) {
            say(format!("  note on {label}: {note}"));
            if !known.contains(note) {
                short.push(format!("{group}: noted on {label} only: {note}"));
            }
        }
    }
    Ok(short)
}

/// Every operation group of mxfs-opcheck: what passes on XFS passes on
/// mxfs, with no feature noted missing on mxfs that XFS has.
pub fn operation_groups(node: &mut Node) -> Result<()> {
    let (xfs, mxfs) = on_xfs_then_mxfs(node, run_opcheck)?;
    let bad = opcheck_shortfalls(&xfs, &mxfs, "mxfs")?;
    ensure!(
        bad.is_empty(),
        "operation groups where mxfs falls short of XFS:\n{}",
        bad.join("\n")
    );
    Ok(())
}

/// Throughput and metadata rates on mxfs as ratios to raw XFS on the same
/// LUN in the same guest, each the median of `rounds` rounds' ratios.
/// Rounds alternate which filesystem goes first, and a round's
/// sequential and metadata figures are the medians of `passes` passes
/// ([`bench::figures`]): the emulated machine's speed drifts, and one
/// pass each gave ratios from 0.5 to 0.9 for the same code.
/// Prints the figures; asserts only that every figure was measured
/// (targets are reported, not enforced: the testbed is an emulated
/// machine).
pub fn bench(
    node: &mut Node,
    files: usize,
    passes: usize,
    rounds: usize,
) -> Result<Vec<bench::Row>> {
    let mut xfs_runs: Vec<Vec<f64>> = Vec::new();
    let mut mxfs_runs: Vec<Vec<f64>> = Vec::new();
    for round in 0..rounds {
        for on_mxfs in [round % 2 == 1, round % 2 == 0] {
            let dev = fresh_volume(node)?;
            let (fstype, dir) = if on_mxfs {
                ("mxfs", MNT)
            } else {
                ("xfs", XFS_MNT)
            };
            node.must(&format!("mount -t {fstype} {dev} {dir}"))?;
            let figures = bench::figures(node, dir, files, passes);
            node.must(&format!("umount {dir}"))?;
            if on_mxfs {
                mxfs_runs.push(figures?);
            } else {
                xfs_runs.push(figures?);
            }
        }
        bench::say_round(round, &xfs_runs[round], &mxfs_runs[round]);
    }
    let rows = bench::rows(&xfs_runs, &mxfs_runs, true);
    bench::print(&rows, "xfs", "mxfs", rounds);
    if std::env::var_os(bench::PROFILE_VAR).is_some() {
        let mut profiles = Vec::new();
        for (fstype, dir) in [("xfs", XFS_MNT), ("mxfs", MNT)] {
            let dev = fresh_volume(node)?;
            node.must(&format!("mount -t {fstype} {dev} {dir}"))?;
            let profiled = bench::profile_meta(node, dir, fstype);
            node.must(&format!("umount {dir}"))?;
            profiles.push(profiled?);
        }
        bench::print_profiles(&profiles[0], &profiles[1]);
    }
    Ok(rows)
}

/// The owner-marker resources (`owner-node:<id>`) that have a lock
/// record in the volume's lockstate, read from the raw device: the file's
/// extents from `xfs_db -r`, their blocks with O_DIRECT (1 MiB reads:
/// 512-byte ones took a minute).  What is on disk, not what a daemon
/// says.
pub fn marker_records_on_disk(node: &mut Node, dev: &str) -> Result<Vec<String>> {
    let script = format!(
        r#"set -e
bs=$(xfs_db -r -c 'sb 0' -c 'p blocksize' {dev} | sed 's/.* = //')
xfs_db -r -c 'path /.mxfs/lockstate' -c bmap {dev} > /tmp/ls.bmap
test -s /tmp/ls.bmap
while read -r _ _ _ _ start _ _ count _; do
  daddr=$(xfs_db -r -c "convert fsblock $start daddr" {dev} | sed 's/.*(\([0-9]*\)).*/\1/')
  dd if={dev} iflag=direct,skip_bytes,count_bytes bs=1M skip=$((daddr * 512)) count=$((count * bs)) status=none
done < /tmp/ls.bmap | grep -a -o 'owner-node:[0-9a-f]\{{16\}}' || true"#
    );
    let out = node.must(&script)?;
    let mut names: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
    names.sort();
    Ok(names)
}

/// The node id mxfsd registers as its PR key: FNV-1a of the node UUID.
pub fn node_key(node: &mut Node) -> Result<u64> {
    let text = node.must(&format!("cat {}", mxfs_core::identity::NODE_UUID_PATH))?;
    mxfs_core::identity::parse_identity(&text)
        .map(|i| i.id)
        .map_err(|e| anyhow::anyhow!("{}: node.uuid: {e}", node.name()))
}

/// `sg_persist`'s view of the LUN: (registered keys, reservation).
fn pr_state(node: &mut Node, dev: &str) -> Result<(String, String)> {
    Ok((
        node.must(&format!("sg_persist --in -k {dev}"))?,
        node.must(&format!("sg_persist --in -r {dev}"))?,
    ))
}

/// Fencing layer 1 as part of a mount: `mount -t mxfs` registers this
/// node's key (its node id) and reserves the LUN Write Exclusive –
/// Registrants Only; umount releases and unregisters.  A device without
/// PR is refused, by mount.mxfs and by mxfsd, unless `-o fence=none`,
/// which mounts with a loud warning and registers nothing.
pub fn pr_registration(node: &mut Node) -> Result<()> {
    let dev = fresh_volume(node)?;
    // The kill -9 of mxfsd in bad_input leaves this node's key behind (a
    // daemon that dies does not unregister); this mount re-registers it
    // and its umount must clean up.  No other key may be there.
    node.must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let r = (|| -> Result<()> {
        let key = node_key(node)?;
        let (keys, resv) = pr_state(node, &dev)?;
        let registered: Vec<&str> = keys
            .split_whitespace()
            .filter(|w| w.starts_with("0x"))
            .collect();
        say(format!(
            "while mounted: node key 0x{key:x}; registered {registered:?}; reservation {:?}",
            resv.lines()
                .filter(|l| l.contains("Key=") || l.contains("type"))
                .map(str::trim)
                .collect::<Vec<_>>()
        ));
        ensure!(
            registered == [format!("0x{key:x}")],
            "exactly the node key 0x{key:x} should be registered:\n{keys}"
        );
        ensure!(
            resv.contains(&format!("Key=0x{key:x}"))
                && resv
                    .to_lowercase()
                    .contains("write exclusive, registrants only"),
            "no Write Exclusive - Registrants Only reservation by 0x{key:x}:\n{resv}"
        );
        node.must(&format!("echo fenced-write > {MNT}/pr && sync"))?;
        Ok(())
    })();
    node.must(&format!("umount {MNT}"))?;
    r?;
    let (keys, resv) = pr_state(node, &dev)?;
    ensure!(
        keys.contains("NO registered") && resv.contains("NO reservation"),
        "umount should unregister and release:\n{keys}\n{resv}"
    );
    say("umount released the reservation and unregistered the key");

    // A device without PR: an XFS on a loop device.
    let lo =
        node.must("truncate -s 512M /var/tmp/nopr.img && losetup -f --show /var/tmp/nopr.img")?;
    let lo = lo.trim().to_string();
    let r = (|| -> Result<()> {
        node.must(&format!("mkfs.xfs -f -q {lo}"))?;
        let msg = refused(
            node,
            "no PR (mount.mxfs)",
            &format!("mount -t mxfs {lo} {MNT}"),
            false,
        )?;
        ensure!(
            msg.contains("persistent reservations") && msg.contains("fence=none"),
            "mount.mxfs should say PR is missing and name fence=none: {msg:?}"
        );
        let klog = refused(
            node,
            "no PR (mxfsd)",
            &format!("mount -i -t mxfs {lo} {MNT}"),
            true,
        )?;
        ensure!(
            klog.contains("persistent reservations") && klog.contains("fence=none"),
            "the kernel log should carry mxfsd's reason: {klog:?}"
        );
        node.must(&format!(
            "journalctl --rotate >/dev/null 2>&1; mount -t mxfs -o fence=none {lo} {MNT} && echo unfenced > {MNT}/f && sync"
        ))?;
        let opts = node.must(&format!("grep ' {MNT} ' /proc/mounts"))?;
        node.must(&format!("umount {MNT}"))?;
        ensure!(
            opts.contains("fence=none"),
            "/proc/mounts should show fence=none: {opts}"
        );
        let warned = node.must(
            "journalctl --no-pager SYSLOG_IDENTIFIER=mxfsd --since -2min | grep -c 'split brain is NOT prevented' || true",
        )?;
        ensure!(
            warned.trim().parse::<u32>().unwrap_or(0) > 0,
            "mxfsd should warn that fence=none does not prevent split brain"
        );
        say("fence=none: mounted, /proc/mounts shows it, mxfsd warned about split brain");
        Ok(())
    })();
    node.must(&format!("losetup -d {lo}; rm -f /var/tmp/nopr.img"))?;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pjdfstest_lines_parse_with_and_without_colour() {
        let out = "chmod::permission_denied                                                  ok\n\
                   \u{1b}[34mrename::ctime\u{1b}[0m                                  \u{1b}[31mFAILED\u{1b}[0m\n\
                   \tdescription line\n\
                   utimensat::birthtime                                         skipped\n\
                   \n\
                   Summary: 1 failed, 1 skipped, 1 passed, 3 total\n";
        let r = pjdfstest_results(out);
        assert_eq!(r.len(), 3);
        assert_eq!(r["chmod::permission_denied"], "ok");
        assert_eq!(r["rename::ctime"], "FAILED");
        assert_eq!(r["utimensat::birthtime"], "skipped");
    }
}
