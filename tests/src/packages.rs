//! Checks of the Debian packages once installed in a node: the udev rules
//! and removal.

use crate::host::say;
use crate::node::Node;
use crate::single::{self, MNT};
use anyhow::{ensure, Result};
use std::time::Duration;

/// The udev rules: an XFS device gets `/dev/disk/by-mxfs-uuid/UUID` and
/// `MXFS_PR=1` (the LUN answers PERSISTENT RESERVE IN); a loop device with
/// XFS gets the link and `MXFS_PR=0`.
pub fn udev_rules(node: &mut Node) -> Result<()> {
    let dev = single::fresh_volume(node)?;
    node.must(&format!("udevadm trigger --settle {dev} || udevadm settle"))?;
    let uuid = node.must(&format!("blkid -s UUID -o value {dev}"))?;
    let uuid = uuid.trim();
    let link = node.must(&format!(
        "readlink -f /dev/disk/by-mxfs-uuid/{uuid} || true"
    ))?;
    let props = node.must(&format!("udevadm info --query=property --name={dev}"))?;
    let pr: Vec<&str> = props.lines().filter(|l| l.starts_with("MXFS_")).collect();
    say(format!(
        "udev: /dev/disk/by-mxfs-uuid/{uuid} -> {}; {pr:?}",
        link.trim()
    ));
    ensure!(
        link.trim() == dev,
        "by-mxfs-uuid link should point at {dev}: {link:?}"
    );
    ensure!(pr == ["MXFS_PR=1"], "the LUN should have MXFS_PR=1: {pr:?}");
    let test = node.must(&format!(
        "udevadm test $(udevadm info --query=path --name={dev}) 2>&1 | grep -E 'MXFS_PR|by-mxfs-uuid' || true"
    ))?;
    ensure!(
        test.contains("MXFS_PR=1") && test.contains("by-mxfs-uuid"),
        "udevadm test should show the rules at work: {test:?}"
    );
    let lo =
        node.must("truncate -s 512M /var/tmp/udev.img && losetup -f --show /var/tmp/udev.img")?;
    let lo = lo.trim().to_string();
    let r = (|| -> Result<()> {
        node.must(&format!(
            "mkfs.xfs -f -q {lo} && udevadm trigger --settle {lo} || udevadm settle"
        ))?;
        let props = node.must(&format!("udevadm info --query=property --name={lo}"))?;
        let pr: Vec<&str> = props.lines().filter(|l| l.starts_with("MXFS_")).collect();
        say(format!("udev on {lo}: {pr:?}"));
        ensure!(
            pr == ["MXFS_PR=0"],
            "a loop device should have MXFS_PR=0: {pr:?}"
        );
        Ok(())
    })();
    node.must(&format!("losetup -d {lo}; rm -f /var/tmp/udev.img"))?;
    r
}

/// `dpkg -r` refuses while a volume is mounted, and once unmounted removes
/// everything the packages installed, the DKMS-built module included.  On
/// the way: umount of a busy mount says it is busy, and a mount without
/// the module says to install mxfs-dkms.
pub fn removal(node: &mut Node) -> Result<()> {
    let dev = single::fresh_volume(node)?;
    node.must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let refused = node.sh("dpkg -r mxfs mxfs-dkms", Duration::from_secs(300))?;
    let still = node.must("dpkg-query -W -f='${Status}\\n' mxfs mxfs-dkms")?;
    node.must(&format!("umount {MNT}"))?;
    say(format!(
        "dpkg -r while mounted: exit {}: {}",
        refused.code,
        refused
            .stderr
            .lines()
            .find(|l| l.contains("mounted"))
            .unwrap_or("")
            .trim()
    ));
    ensure!(
        !refused.ok(),
        "dpkg -r succeeded while a volume was mounted"
    );
    ensure!(
        still.lines().all(|l| l.contains("install ok installed")),
        "a refused removal should leave both packages installed: {still:?}"
    );
    // A busy mount: umount says so and leaves it mounted.
    node.must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let busy = node.sh(
        &format!("cd {MNT} && sleep 20 & sleep 1; umount {MNT}"),
        Duration::from_secs(60),
    )?;
    let still_mounted = node.must(&format!("grep -c ' {MNT} mxfs ' /proc/mounts || true"))?;
    node.must(&format!("pkill -x sleep; sleep 1; umount {MNT}"))?;
    say(format!("umount of a busy mount: {}", busy.stderr.trim()));
    ensure!(
        !busy.ok() && busy.stderr.contains("busy") && still_mounted.trim() == "1",
        "umount of a busy mount should fail saying it is busy: {busy:?}"
    );

    // Without the module: mount.mxfs says what to install, in one line.
    let out = node.sh("rmmod mxfs; dpkg -r mxfs-dkms", Duration::from_secs(300))?;
    ensure!(
        out.ok(),
        "dpkg -r mxfs-dkms failed: {}{}",
        out.stdout,
        out.stderr
    );
    let nomod = node.sh(
        &format!("mount -t mxfs {dev} {MNT}"),
        Duration::from_secs(60),
    )?;
    let msg = nomod.stderr.trim().to_string();
    say(format!("mount without the module: {msg}"));
    ensure!(
        !nomod.ok()
            && msg.starts_with("mount.mxfs: ")
            && msg.lines().count() == 1
            && msg.contains("mxfs-dkms"),
        "mount without the module should say, in one line, to install mxfs-dkms: {msg:?}"
    );
    let out = node.sh("dpkg -r mxfs", Duration::from_secs(300))?;
    ensure!(
        out.ok(),
        "dpkg -r mxfs failed: {}{}",
        out.stdout,
        out.stderr
    );
    let left = node.must(
        "for f in /usr/sbin/mxfsd /sbin/mount.mxfs /lib/udev/rules.d/64-mxfs.rules \
         /usr/lib/modules-load.d/mxfs.conf /lib/systemd/system/mxfsd@.service \
         /usr/share/dbus-1/system.d/org.mxfs1.conf /usr/src/mxfs-*; do [ -e $f ] && echo $f; done; \
         find /lib/modules -name 'mxfs.ko*'; dkms status mxfs 2>/dev/null; true",
    )?;
    ensure!(
        left.trim().is_empty(),
        "dpkg -r left files behind: {left:?}"
    );
    say("dpkg -r refused while mounted; after umount it removed binaries, rules, units and the DKMS module");
    Ok(())
}
