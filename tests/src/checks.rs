//! Checks of the testbed itself, run by the scenario tests and shown by
//! the demo: the nodes boot, share one LUN, honour SCSI-3 PR fencing, talk
//! multicast and TCP, and survive a peer's power-off.

use crate::cluster::Cluster;
use crate::host::say;
use crate::node::Node;
use crate::rootfs::node_ip;
use anyhow::{bail, ensure, Context, Result};
use std::time::{Duration, Instant};

/// The shared LUN's device node in a guest: the SCSI disk whose vendor is
/// tgt's (`IET`).
pub fn lun_device(node: &mut Node) -> Result<String> {
    let out = node.must(
        "for d in /sys/block/sd*; do [ \"$(cat $d/device/vendor 2>/dev/null | tr -d ' ')\" = IET ] \
         && echo /dev/${d##*/}; done",
    )?;
    out.lines().next().map(str::to_string).with_context(|| {
        format!(
            "{}: no iSCSI LUN (vendor IET) among the SCSI disks",
            node.name()
        )
    })
}

fn random_block(len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes `data` at 4 KiB block `block` of the LUN with O_DIRECT.
fn write_block(
    node: &mut Node,
    dev: &str,
    block: u64,
    data: &[u8],
) -> Result<crate::qga::ExecOutput> {
    node.write_file("/tmp/block.bin", data)?;
    node.sh(
        &format!("dd if=/tmp/block.bin of={dev} bs=4096 count=1 seek={block} oflag=direct conv=notrunc,fsync"),
        Duration::from_secs(60),
    )
}

/// Reads 4 KiB block `block` of the LUN with O_DIRECT.
fn read_block(node: &mut Node, dev: &str, block: u64) -> Result<Vec<u8>> {
    node.must(&format!(
        "dd if={dev} of=/tmp/read.bin bs=4096 count=1 skip={block} iflag=direct status=none"
    ))?;
    node.read_file("/tmp/read.bin")
}

/// Every node is at systemd's multi-user target.
pub fn all_booted(c: &mut Cluster) -> Result<()> {
    for n in 1..=c.len() {
        let node = c.node(n);
        let state = node.must("systemctl is-active multi-user.target; uname -r")?;
        say(format!("{}: {}", node.name(), state.replace('\n', " ")));
        ensure!(
            state.starts_with("active"),
            "{}: multi-user.target is {state:?}",
            node.name()
        );
        if let Some(t) = node.last_boot {
            say(format!(
                "{}: booted in {:.1} s",
                node.name(),
                t.as_secs_f64()
            ));
        }
    }
    Ok(())
}

/// Both nodes see one LUN: same serial, and a block written by node 1 with
/// O_DIRECT reads back identical on node 2.
pub fn same_lun(c: &mut Cluster) -> Result<()> {
    let mut serials = Vec::new();
    for n in 1..=2 {
        let node = c.node(n);
        let dev = lun_device(node)?;
        let serial = node.must(&format!(
            "sg_inq -p 0x80 {dev} | sed -n 's/.*Unit serial number: *//p'"
        ))?;
        say(format!(
            "{}: LUN {dev}, serial {}",
            node.name(),
            serial.trim()
        ));
        ensure!(
            !serial.trim().is_empty(),
            "{}: no unit serial number",
            node.name()
        );
        serials.push(serial.trim().to_string());
    }
    ensure!(
        serials[0] == serials[1],
        "the nodes see different LUNs: {serials:?}"
    );
    let data = random_block(4096)?;
    let dev1 = lun_device(c.node(1))?;
    let w = write_block(c.node(1), &dev1, 100, &data)?;
    ensure!(w.ok(), "node1 write failed: {}", w.stderr);
    let dev2 = lun_device(c.node(2))?;
    let back = read_block(c.node(2), &dev2, 100)?;
    ensure!(
        back == data,
        "node2 read different data from block 100 than node1 wrote"
    );
    say("node1 wrote 4 KiB with O_DIRECT; node2 read the same bytes");
    Ok(())
}

const KEY1: &str = "0x6d78667301";
const KEY2: &str = "0x6d78667302";

/// Real SCSI-3 PR: register, reserve type 5 (Write Exclusive – Registrants
/// Only), preempt; the preempted node's writes fail with RESERVATION
/// CONFLICT (EBADE in the guest) while its reads and the holder's writes
/// work.
pub fn pr_fencing(c: &mut Cluster) -> Result<()> {
    let dev1 = lun_device(c.node(1))?;
    let dev2 = lun_device(c.node(2))?;
    c.node(1).must(&format!(
        "sg_persist --out --register --param-sark={KEY1} {dev1}"
    ))?;
    c.node(1).must(&format!(
        "sg_persist --out --reserve --param-rk={KEY1} --prout-type=5 {dev1}"
    ))?;
    c.node(2).must(&format!(
        "sg_persist --out --register --param-sark={KEY2} {dev2}"
    ))?;
    let keys = c.node(2).must(&format!("sg_persist --in -k {dev2}"))?;
    say(format!(
        "registered keys, seen from node2:\n{}",
        keys.trim()
    ));
    ensure!(
        keys.contains(KEY1) && keys.contains(KEY2),
        "both keys should be registered: {keys}"
    );
    let resv = c.node(2).must(&format!("sg_persist --in -r {dev2}"))?;
    say(format!("reservation, seen from node2:\n{}", resv.trim()));
    ensure!(
        resv.contains(KEY1)
            && resv
                .to_lowercase()
                .contains("write exclusive, registrants only"),
        "expected a type 5 reservation held by {KEY1}: {resv}"
    );
    // A registrant may write under a type 5 reservation.
    let data = random_block(4096)?;
    let w = write_block(c.node(2), &dev2, 200, &data)?;
    ensure!(w.ok(), "node2, registered, should write: {}", w.stderr);

    c.node(1).must(&format!(
        "sg_persist --out --preempt --param-rk={KEY1} --param-sark={KEY2} --prout-type=5 {dev1}"
    ))?;
    let keys = c.node(1).must(&format!("sg_persist --in -k {dev1}"))?;
    ensure!(
        !keys.contains(KEY2),
        "node2's key should be gone after the preempt: {keys}"
    );
    say("node1 preempted node2's key");

    let w = write_block(c.node(2), &dev2, 201, &data)?;
    say(format!(
        "node2 write after preempt: exit {}, {}",
        w.code,
        w.stderr.trim()
    ));
    ensure!(!w.ok(), "node2's write should fail after it was preempted");
    ensure!(
        w.stderr.contains("Invalid exchange"),
        "node2's write should fail with EBADE (RESERVATION CONFLICT), got: {}",
        w.stderr
    );
    let dmesg = c
        .node(2)
        .must("dmesg | grep -i 'reservation conflict' | tail -n 1 || true")?;
    say(format!("node2 kernel: {}", dmesg.trim()));
    let w = write_block(c.node(1), &dev1, 201, &data)?;
    ensure!(
        w.ok(),
        "node1, the holder, should still write: {}",
        w.stderr
    );
    let back = read_block(c.node(2), &dev2, 201)?;
    ensure!(
        back == data,
        "node2 should still read, and see node1's write"
    );

    // Leave the LUN without registrations for later checks.
    c.node(1).must(&format!(
        "sg_persist --out --clear --param-rk={KEY1} {dev1}"
    ))?;
    let keys = c.node(1).must(&format!("sg_persist --in -k {dev1}"))?;
    ensure!(
        keys.contains("NO registered reservation keys"),
        "no key should remain after CLEAR: {keys}"
    );
    Ok(())
}

/// Runs `send` on one node until `path` on another has content (or 30 s
/// pass); returns that content.
fn deliver(c: &mut Cluster, from: usize, send: &str, to: usize, path: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = c.node(from).sh(send, Duration::from_secs(20))?;
        let got = c
            .node(to)
            .must(&format!("cat {path} 2>/dev/null || true"))?;
        if !got.trim().is_empty() {
            return Ok(got);
        }
        if Instant::now() > deadline {
            bail!(
                "nothing from node{from} reached node{to}:{path}; last send said: {}",
                out.stderr.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Starts a one-shot `socat` receiver in the background on a node.
fn listen(node: &mut Node, address: &str, out: &str) -> Result<()> {
    node.must(&format!(
        "rm -f {out}; setsid timeout 60 socat -u {address} OPEN:{out},creat,trunc \
         </dev/null >/dev/null 2>&1 &"
    ))
    .map(|_| ())
}

fn tcp_between(c: &mut Cluster, from: usize, to: usize) -> Result<()> {
    let msg = format!("mxfs-tcp-{from}-to-{to}-{}", std::process::id());
    listen(c.node(to), "TCP4-LISTEN:7600,reuseaddr", "/tmp/tcp.out")?;
    let send = format!("echo {msg} | socat -u STDIN TCP4:{}:7600", node_ip(to));
    let got = deliver(c, from, &send, to, "/tmp/tcp.out")?;
    ensure!(
        got.trim() == msg,
        "node{to} received {got:?}, expected {msg:?}"
    );
    say(format!("TCP node{from} -> node{to}:7600: ok"));
    Ok(())
}

/// A multicast datagram from node 1 reaches node 2 (the discovery group and
/// port), and TCP works both ways.
pub fn network(c: &mut Cluster) -> Result<()> {
    let msg = format!("mxfs-mcast-{}", std::process::id());
    listen(
        c.node(2),
        "UDP4-RECVFROM:7601,ip-add-membership=239.66.83.1:eth0,reuseaddr",
        "/tmp/mc.out",
    )?;
    // Resent until it arrives: the receiver may not have joined yet.
    let send = format!(
        "echo {msg} | socat -u STDIN UDP4-DATAGRAM:239.66.83.1:7601,ip-multicast-if={}",
        node_ip(1)
    );
    let got = deliver(c, 1, &send, 2, "/tmp/mc.out")?;
    ensure!(
        got.trim() == msg,
        "node2 received {got:?}, expected {msg:?}"
    );
    say("multicast 239.66.83.1:7601 node1 -> node2: ok");
    tcp_between(c, 1, 2)?;
    tcp_between(c, 2, 1)?;
    Ok(())
}

/// Node 2 hard-powered-off: node 1 carries on with the LUN; node 2 boots
/// again and reads what node 1 wrote meanwhile.
pub fn power_cycle(c: &mut Cluster) -> Result<()> {
    c.power_off(2)?;
    ensure!(!c.node(2).is_running(), "node2 should be off");
    let dev1 = lun_device(c.node(1))?;
    let data = random_block(4096)?;
    let w = write_block(c.node(1), &dev1, 300, &data)?;
    ensure!(
        w.ok(),
        "node1 should carry on writing while node2 is off: {}",
        w.stderr
    );
    c.node(1).must("systemctl is-active multi-user.target")?;
    say("node1 carries on while node2 is off");
    let took = c.boot(2, Duration::from_secs(240))?;
    say(format!("node2 rebooted in {:.1} s", took.as_secs_f64()));
    let dev2 = lun_device(c.node(2))?;
    let back = read_block(c.node(2), &dev2, 300)?;
    ensure!(
        back == data,
        "node2, back, should read what node1 wrote while it was off"
    );
    Ok(())
}

/// Cutting node 2's network stops TCP between the nodes while node 2 stays
/// up (its disk path is separate); restoring it brings TCP back.
pub fn network_cut(c: &mut Cluster) -> Result<()> {
    listen(c.node(2), "TCP4-LISTEN:7600,reuseaddr", "/tmp/cut.out")?;
    c.cut_network(2)?;
    let send = format!(
        "echo cut | socat -u STDIN TCP4:{}:7600,connect-timeout=3",
        node_ip(2)
    );
    let out = c.node(1).sh(&send, Duration::from_secs(30))?;
    ensure!(
        !out.ok(),
        "node1 reached node2 although node2's network was cut"
    );
    say(format!("node1 -> node2 while cut: {}", out.stderr.trim()));
    let dev2 = lun_device(c.node(2))?;
    read_block(c.node(2), &dev2, 0).context("node2 should still reach the LUN while cut off")?;
    c.restore_network(2)?;
    let got = deliver(c, 1, &send, 2, "/tmp/cut.out")?;
    ensure!(
        got.trim() == "cut",
        "node2 received {got:?} after the network came back"
    );
    say("node1 -> node2 after restore: ok");
    Ok(())
}

/// A paused node stops answering; resumed, it carries on where it was.
pub fn pause_resume(c: &mut Cluster) -> Result<()> {
    let before = c.node(2).must("cat /proc/sys/kernel/random/boot_id")?;
    c.node(2).pause()?;
    ensure!(!c.node(2).responds(), "node2 still answers while paused");
    say("node2 paused: its agent is silent");
    c.node(2).resume()?;
    let after = c.node(2).must("cat /proc/sys/kernel/random/boot_id")?;
    ensure!(before == after, "node2 rebooted instead of resuming");
    say("node2 resumed without a reboot");
    Ok(())
}
