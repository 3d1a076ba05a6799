//! Two nodes mount one volume: one owner, one client (issue 4).  Each
//! check writes on one node and reads on the other right after the write
//! returns.

use crate::cluster::Cluster;
use crate::dbus;
use crate::host::say;
use crate::single::{self, MNT};
use anyhow::{ensure, Context, Result};

/// A property of the volume's D-Bus object on node `n`.
fn prop(c: &mut Cluster, n: usize, object: &str, name: &str) -> Result<String> {
    dbus::property(c.node(n), object, name)
}

fn both_see(c: &mut Cluster, what: &str, script: &str) -> Result<String> {
    let a = c.node(1).must(script)?;
    let b = c.node(2).must(script)?;
    ensure!(a == b, "{what} differs: node1 {a:?}, node2 {b:?}");
    Ok(a)
}

/// Node 1 mounts first and owns the volume; node 2 mounts with no
/// options and becomes its client; both show the same owner, epoch and
/// members on D-Bus; files, directories, renames, unlinks, modes, owners,
/// xattrs and O_DIRECT data written on either node are there on the other
/// at once; unmounting the client and then the owner leaves no daemon and
/// a clean XFS.
pub fn two_nodes_share_files(c: &mut Cluster) -> Result<()> {
    let dev = single::fresh_volume(c.node(1))?;
    let dev2 = crate::checks::lun_device(c.node(2))?;
    c.node(1).must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let r = (|| -> Result<()> {
        c.node(2).must(&format!("mount -t mxfs {dev2} {MNT}"))?;
        let object = dbus::object_of(c.node(1), &dev)?;
        let r1 = prop(c, 1, &object, "Role")?;
        let r2 = prop(c, 2, &object, "Role")?;
        ensure!(
            r1 == "s \"owner\"" && r2 == "s \"client\"",
            "roles: node1 {r1}, node2 {r2}"
        );
        for p in ["OwnerNode", "Epoch", "Members"] {
            let a = prop(c, 1, &object, p)?;
            let b = prop(c, 2, &object, p)?;
            ensure!(a == b, "{p}: node1 {a}, node2 {b}");
            say(format!("both nodes: {p} {a}"));
        }
        let members = prop(c, 1, &object, "Members")?;
        ensure!(
            members.starts_with("at 2 "),
            "two members expected: {members}"
        );

        // contents, both ways
        c.node(1)
            .must(&format!("echo 'written on the owner' > {MNT}/a"))?;
        let got = c.node(2).must(&format!("cat {MNT}/a"))?;
        ensure!(got == "written on the owner\n", "client read {got:?}");
        c.node(2)
            .must(&format!("echo 'written on the client' > {MNT}/b"))?;
        let got = c.node(1).must(&format!("cat {MNT}/b"))?;
        ensure!(got == "written on the client\n", "owner read {got:?}");

        // O_DIRECT: 1 MiB of random data written on the client
        c.node(2).must(&format!(
            "head -c 1048576 /dev/urandom > /tmp/blob && \
             dd if=/tmp/blob of={MNT}/direct bs=1M oflag=direct status=none && \
             sha256sum < /tmp/blob > /tmp/blob.sum"
        ))?;
        let want = c.node(2).must("cat /tmp/blob.sum")?;
        let got = c.node(1).must(&format!(
            "dd if={MNT}/direct bs=1M iflag=direct status=none | sha256sum"
        ))?;
        ensure!(want == got, "O_DIRECT data: client {want:?}, owner {got:?}");

        // namespace and attributes, made on the client, seen on the owner
        c.node(2).must(&format!(
            "set -e; mkdir {MNT}/d; touch {MNT}/d/x {MNT}/d/y; mv {MNT}/d/x {MNT}/d/z; \
             rm {MNT}/d/y; chmod 0640 {MNT}/d/z; chown 1234:5678 {MNT}/d/z; \
             setfattr -n user.colour -v blue {MNT}/d/z; ln -s z {MNT}/d/link"
        ))?;
        let listing = both_see(
            c,
            "the directory listing",
            &format!(
                "cd {MNT}/d && ls -la --time-style=+ | awk '{{print $1, $3, $4, $NF}}' | sort"
            ),
        )?;
        say(format!(
            "both nodes list {MNT}/d as:\n{}",
            listing.trim_end()
        ));
        let st = c.node(1).must(&format!("stat -c '%a %u %g' {MNT}/d/z"))?;
        ensure!(st.trim() == "640 1234 5678", "owner sees z as {st:?}");
        let x = c
            .node(1)
            .must(&format!("getfattr --only-values -n user.colour {MNT}/d/z"))?;
        ensure!(x == "blue", "owner sees user.colour {x:?}");
        ensure!(
            !listing.contains(" x\n") && !listing.contains(" y\n"),
            "renamed/removed names still listed:\n{listing}"
        );
        // and back: removed on the owner, gone on the client
        c.node(1).must(&format!("rm -r {MNT}/d"))?;
        let gone = c
            .node(2)
            .sh(&format!("ls {MNT}/d"), std::time::Duration::from_secs(30))?;
        ensure!(!gone.ok(), "the client still lists a removed directory");
        Ok(())
    })();
    // clients first, then the owner (hand-over is not built yet)
    let u2 = c
        .node(2)
        .sh(&format!("umount {MNT}"), std::time::Duration::from_secs(60));
    let u1 = c
        .node(1)
        .sh(&format!("umount {MNT}"), std::time::Duration::from_secs(60));
    r?;
    ensure!(u2?.ok(), "umount on the client failed");
    ensure!(u1?.ok(), "umount on the owner failed");
    for n in [1, 2] {
        let left = c.node(n).must("pgrep -c -x mxfsd || true")?;
        ensure!(
            left.trim() == "0",
            "node{n}: mxfsd still running after umount"
        );
    }
    c.node(1)
        .must(&format!("xfs_repair -n {dev}"))
        .context("xfs_repair -n after both unmounts")?;
    say("both unmounted; no mxfsd left; xfs_repair -n clean");
    Ok(())
}
