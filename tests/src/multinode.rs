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

/// On a client: the O_DIRECT exerciser passes; two nodes appending to
/// one file through O_APPEND lose and tear no record; pjdfstest gives
/// what it gives on the same XFS mounted directly but for two known cases
/// (below).
pub fn client_conformance(c: &mut Cluster) -> Result<()> {
    use std::collections::BTreeMap;
    let conf = crate::tools::PJDFSTEST_CONF.as_bytes();
    c.node(2).write_file("/tmp/pjdfstest.toml", conf)?;
    c.node(1).write_file("/tmp/pjdfstest.toml", conf)?;
    let dev = single::fresh_volume(c.node(1))?;
    c.node(1)
        .must(&format!("mount -t xfs {dev} {}", single::XFS_MNT))?;
    let xfs = single::run_pjdfstest(c.node(1), single::XFS_MNT);
    c.node(1).must(&format!("umount {}", single::XFS_MNT))?;
    let xfs = xfs?;

    let dev = single::fresh_volume(c.node(1))?;
    let dev2 = crate::checks::lun_device(c.node(2))?;
    c.node(1).must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let r = (|| -> Result<()> {
        c.node(2).must(&format!("mount -t mxfs {dev2} {MNT}"))?;
        let out = c.node(2).sh(
            &format!(
                "{}/mxfs-opcheck --dio-fsx {MNT}/dio.file 3000 7 2>&1 | tail -n 3",
                crate::rootfs::GUEST_ARTIFACTS
            ),
            std::time::Duration::from_secs(1800),
        )?;
        say(format!("client O_DIRECT exerciser: {}", out.stdout.trim()));
        ensure!(
            out.ok(),
            "the O_DIRECT exerciser failed on a client:\n{}",
            out.stdout
        );

        // both nodes append 500 records of 64 bytes at once
        let append = |n: usize| {
            format!(
                "for i in $(seq 1 500); do printf 'node{n} record %05d %047d\\n' $i 0 >> {MNT}/log; done"
            )
        };
        c.node(1).must(&format!(
            "rm -f /tmp/append.done; ({}; touch /tmp/append.done) > /dev/null 2>&1 & echo started",
            append(1)
        ))?;
        c.node(2).must(&append(2))?;
        c.node(1).must(
            "for i in $(seq 1 120); do [ -e /tmp/append.done ] && exit 0; sleep 1; done; exit 1",
        )?;
        let summary = c.node(2).must(&format!(
            "wc -l < {MNT}/log; grep -c '^node1 record [0-9]\\{{5\\}} 0\\{{47\\}}$' {MNT}/log; \
             grep -c '^node2 record [0-9]\\{{5\\}} 0\\{{47\\}}$' {MNT}/log"
        ))?;
        let v: Vec<&str> = summary.split_whitespace().collect();
        ensure!(
            v == ["1000", "500", "500"],
            "O_APPEND from two nodes: lines, node1 records, node2 records = {v:?}"
        );
        say("O_APPEND from both nodes: 1000 whole records, 500 from each");
        let client = single::run_pjdfstest(c.node(2), MNT)?;
        let count = |r: &BTreeMap<String, String>, o: &str| r.values().filter(|v| *v == o).count();
        say(format!(
            "pjdfstest: XFS {} ok / {} failed; client {} ok / {} failed / {} skipped",
            count(&xfs, "ok"),
            count(&xfs, "FAILED"),
            count(&client, "ok"),
            count(&client, "FAILED"),
            count(&client, "skipped")
        ));
        let diffs: Vec<String> = xfs
            .keys()
            .chain(client.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| xfs.get(*k) != client.get(*k))
            .map(|k| format!("{k}: xfs {:?}, client {:?}", xfs.get(k), client.get(k)))
            .collect();
        // Known: a file created with O_CREAT and a mode without write
        // permission, then ftruncate/fallocate on the creating fd.  The
        // client's kernel creates it with FUSE MKNOD and opens it with a
        // separate FUSE OPEN, which the owner runs as the caller, and the
        // truncate travels as a path-based SETATTR: the owner's permission
        // check refuses what a local fd would allow.  Listed exactly, so
        // that a fix (or a new difference) fails this test.
        let known = [
            "ftruncate::affected_create_flags_only: xfs Some(\"ok\"), client Some(\"FAILED\")",
            "posix_fallocate::affected_only_create_flags: xfs Some(\"ok\"), client Some(\"FAILED\")",
        ];
        ensure!(
            diffs == known,
            "pjdfstest on a client differs from XFS other than in the {} known cases:\n{}",
            known.len(),
            diffs.join("\n")
        );
        say(format!(
            "pjdfstest differences, all known: {}",
            diffs.join("; ")
        ));

        Ok(())
    })();
    let u2 = c
        .node(2)
        .sh(&format!("umount {MNT}"), std::time::Duration::from_secs(60));
    let u1 = c
        .node(1)
        .sh(&format!("umount {MNT}"), std::time::Duration::from_secs(60));
    r?;
    ensure!(u2?.ok() && u1?.ok(), "umount failed");
    c.node(1)
        .must(&format!("xfs_repair -n {dev}"))
        .context("xfs_repair -n")?;
    Ok(())
}
