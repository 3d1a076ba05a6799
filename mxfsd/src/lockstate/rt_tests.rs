//! Tests of the lockstate runtime against real XFS images (mkfs.xfs -p
//! PROTOFILE, cross-checked with xfs_db -r) and a real ext4 temp
//! directory.  The image tests are skipped, saying so, without xfsprogs.

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::create::{CreateError, FreezeError};
use super::device::{Absent, DeviceError};
use super::heartbeat::{ClaimError, Claimed, LeaveError, Pick};
use super::records::{partition, RecordError};
use super::*;
use crate::dlm::Mode;
use crate::identity::{fnv1a64, NodeIdentity};
use crate::test_support::{have_xfsprogs, TempDir as Scratch};
use crate::xfs::Extent;

const VOL: [u8; 16] = [
    0x0b, 0x6c, 0x3a, 0x2e, 0x11, 0x11, 0x42, 0x22, 0x83, 0x33, 0x44, 0x44, 0x55, 0x55, 0x66, 0x66,
];
const BS: u32 = 512;

fn header() -> Header {
    Header {
        slot_size: BS,
        owner_epoch: 3,
        owner_node: 0x1234,
        secret: [0x5a; 32],
        created_ns: 99,
    }
}

/// The bytes of a fresh lockstate file, made with the format code.
fn file_bytes(layout: Layout, vol: &[u8; 16], h: &Header) -> Vec<u8> {
    let mut b = vec![0u8; layout.file_len() as usize];
    let first = encode(&Slot::Header(h.clone()), 0, vol, layout.slot_size()).unwrap();
    b[..first.len()].copy_from_slice(&first);
    b
}

/// What goes into the image's root.
enum Content<'a> {
    Nothing,
    EmptyMxfsDir,
    Lockstate(&'a [u8]),
    LockstateIsADir,
}

/// A 160 MiB image (at 80 MiB, mkfs.xfs 6.1 -p makes an AGF that fails
/// its CRC when the file nearly fills AG 0) with volume UUID `vol`.
fn mkfs(s: &Scratch, vol: &[u8; 16], content: Content) -> PathBuf {
    let mut proto = String::from("mxfsd-lsrt\n0 0\nd--755 0 0\nhello ---644 0 0 ");
    let hello = s.path("hello-src");
    fs::write(&hello, b"hello\n").unwrap();
    proto.push_str(&format!("{}\n", hello.display()));
    match content {
        Content::Nothing => {}
        Content::EmptyMxfsDir => proto.push_str(".mxfs d--700 0 0\n$\n"),
        Content::Lockstate(bytes) => {
            let src = s.path("lockstate-src");
            fs::write(&src, bytes).unwrap();
            proto.push_str(&format!(
                ".mxfs d--700 0 0\nlockstate ---600 0 0 {}\n$\n",
                src.display()
            ));
        }
        Content::LockstateIsADir => {
            proto.push_str(".mxfs d--700 0 0\nlockstate d--700 0 0\n$\n$\n")
        }
    }
    proto.push_str("$\n");
    let proto_path = s.path("proto");
    fs::write(&proto_path, proto).unwrap();
    let img = s.path("img");
    let out = Command::new("mkfs.xfs")
        .args(["-q", "-f", "-p"])
        .arg(&proto_path)
        .arg("-m")
        .arg(format!("uuid={}", Uuid::from_bytes(*vol)))
        .arg("-d")
        .arg(format!("file,name={},size=160m,agcount=4", img.display()))
        // xfsprogs refuses filesystems under 300 MB unless run by fstests,
        // which it recognises by these variables.
        .env("TEST_DIR", &s.0)
        .env("TEST_DEV", &img)
        .env("QA_CHECK_FS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.xfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

fn xfs_db(img: &Path, cmds: &[&str]) -> String {
    let mut c = Command::new("xfs_db");
    c.arg("-r");
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    let out = c.arg(img).output().unwrap();
    assert!(out.status.success(), "xfs_db {cmds:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("CRC error"), "xfs_db {cmds:?}: {err}");
    String::from_utf8(out.stdout).unwrap()
}

/// xfs_db's `bmap` of `path`, in device bytes.
fn db_extents(img: &Path, path: &str) -> Vec<Extent> {
    let sb = xfs_db(img, &["sb 0", "p blocksize agblocks"]);
    let field = |name: &str| -> u64 {
        sb.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (bs, agblocks) = (field("blocksize"), field("agblocks"));
    xfs_db(img, &[&format!("path {path}"), "bmap"])
        .lines()
        .map(|l| {
            // data offset 0 startblock 16408 (1/24) count 8201 flag 0
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 10, "bmap line {l:?}");
            let (ag, agb) = w[5]
                .trim_matches(|c| c == '(' || c == ')')
                .split_once('/')
                .unwrap();
            let (ag, agb): (u64, u64) = (ag.parse().unwrap(), agb.parse().unwrap());
            Extent {
                file_offset_blocks: w[2].parse().unwrap(),
                disk_byte_offset: (ag * agblocks + agb) * bs,
                len_blocks: w[7].parse().unwrap(),
                unwritten: w[9] == "1",
            }
        })
        .collect()
}

fn ready(img: &Path) -> LockstateDevice {
    match LockstateDevice::open_image(img, BS).unwrap() {
        Opened::Ready(d) => d,
        Opened::Absent(a) => panic!("no lockstate: {a:?}"),
    }
}

/// An image holding a fresh lockstate file (512-byte slots).
fn fresh(s: &Scratch) -> PathBuf {
    let bytes = file_bytes(Layout::new(BS).unwrap(), &VOL, &header());
    mkfs(s, &VOL, Content::Lockstate(&bytes))
}

fn node(n: u8) -> NodeIdentity {
    let b = [n; 16];
    NodeIdentity {
        uuid: Uuid::from_bytes(b),
        id: fnv1a64(&b),
    }
}

fn fast() -> HeartbeatParams {
    HeartbeatParams::with_interval(Duration::from_millis(40))
}

/// Overwrite bytes of the image behind the runtime's back (buffered, then
/// synced, so the O_DIRECT reads see them).
fn poke(img: &Path, offset: u64, bytes: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

fn heartbeat_of(content: &SlotContent) -> &Heartbeat {
    match content {
        SlotContent::Node(h) => h,
        other => panic!("not a node slot: {other:?}"),
    }
}

// ---- opening on the raw device ----

#[test]
fn open_reads_header_and_extents_match_xfs_db() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("open");
    let img = fresh(&s);
    let dev = ready(&img);
    assert_eq!(dev.header(), &header());
    assert_eq!(dev.volume(), VOL);
    assert_eq!(dev.block_size(), BS);
    assert_eq!(
        dev.extents(),
        db_extents(&img, "/.mxfs/lockstate").as_slice()
    );
    assert!(!dev.extents().is_empty());

    // Slots land where the extents say: the bytes at the mapped offset in
    // the raw image are the encoded slot.
    let hb = Heartbeat {
        node_id: node(1).id,
        node_uuid: [1; 16],
        generation: 1,
        counter: 7,
        timestamp_ns: 0,
        state: HeartbeatState::Member,
        owner_epoch: 3,
    };
    dev.write_slot(SlotId::Heartbeat(9), &Slot::Heartbeat(hb.clone()))
        .unwrap();
    assert_eq!(
        dev.read_slot(SlotId::Heartbeat(9)).unwrap(),
        Slot::Heartbeat(hb.clone())
    );
    let off = dev.map().device_offset(SlotId::Heartbeat(9)).unwrap();
    let e = &dev.extents()[0];
    assert_eq!(off, e.disk_byte_offset + 10 * u64::from(BS));
    let raw = fs::read(&img).unwrap();
    let want = encode(&Slot::Heartbeat(hb), 10, &VOL, BS).unwrap();
    assert_eq!(&raw[off as usize..off as usize + BS as usize], &want[..]);
    assert_eq!(dev.read_slot(SlotId::Lock(65535)).unwrap(), Slot::Empty);

    // The header can be rewritten (epoch bump) and reads back.
    let mut h = dev.read_header().unwrap();
    h.owner_epoch += 1;
    dev.write_header(&h).unwrap();
    assert_eq!(dev.read_header().unwrap().owner_epoch, 4);
    drop(dev);
    assert_eq!(ready(&img).header().owner_epoch, 4);
}

#[test]
fn fresh_volumes_are_absent_not_errors() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("absent");
    let img = mkfs(&s, &VOL, Content::Nothing);
    match LockstateDevice::open_image(&img, BS).unwrap() {
        Opened::Absent(a) => assert_eq!(
            a,
            Absent {
                missing: "/.mxfs",
                volume: VOL,
                block_size: BS
            }
        ),
        Opened::Ready(_) => panic!("found a lockstate"),
    }
    let s = Scratch::new("absent2");
    let img = mkfs(&s, &VOL, Content::EmptyMxfsDir);
    match LockstateDevice::open_image(&img, 4096).unwrap() {
        Opened::Absent(a) => {
            assert_eq!(a.missing, "/.mxfs/lockstate");
            assert_eq!(a.block_size, 4096);
        }
        Opened::Ready(_) => panic!("found a lockstate"),
    }
}

#[test]
fn bad_lockstate_files_are_errors() {
    if !have_xfsprogs() {
        return;
    }
    let layout = Layout::new(BS).unwrap();
    let expect = |content: Content, name: &str, bs: u32, check: &dyn Fn(&DeviceError) -> bool| {
        let s = Scratch::new(name);
        let img = mkfs(&s, &VOL, content);
        let err = LockstateDevice::open_image(&img, bs).err();
        let err = err.unwrap_or_else(|| panic!("{name}: opened"));
        assert!(check(&err), "{name}: {err}");
    };
    // garbage header
    let mut b = file_bytes(layout, &VOL, &header());
    for (i, x) in b[..512].iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(77) | 1;
    }
    expect(Content::Lockstate(&b), "garbage", BS, &|e| {
        matches!(
            e,
            DeviceError::Header(LockstateError::Checksum { index: 0 })
        )
    });
    // a torn header: the right magic, half of it from another write
    let mut b = file_bytes(layout, &VOL, &header());
    b[64..96].fill(0xee);
    expect(Content::Lockstate(&b), "torn", BS, &|e| {
        matches!(e, DeviceError::Header(LockstateError::Checksum { .. }))
    });
    // another volume's file
    let b = file_bytes(layout, &[7; 16], &header());
    expect(Content::Lockstate(&b), "foreign", BS, &|e| {
        matches!(e, DeviceError::Header(LockstateError::WrongVolume { .. }))
    });
    // an empty header slot
    let b = vec![0u8; layout.file_len() as usize];
    expect(Content::Lockstate(&b), "zeros", BS, &|e| {
        e.to_string().contains("header slot is empty")
    });
    // too short
    let b = file_bytes(layout, &VOL, &header());
    expect(Content::Lockstate(&b[..b.len() - 512]), "short", BS, &|e| {
        matches!(e, DeviceError::TooShort { .. })
    });
    // made for 512-byte slots, opened on a 4096-byte device
    expect(Content::Lockstate(&b), "mismatch", 4096, &|e| {
        matches!(
            e,
            DeviceError::SlotSizeMismatch {
                file: 512,
                device: 4096
            }
        )
    });
    expect(Content::LockstateIsADir, "isdir", BS, &|e| {
        matches!(e, DeviceError::NotRegular { .. })
    });

    // Not XFS at all; a regular file given to open(); a bad block size.
    let s = Scratch::new("notxfs");
    let p = s.path("zeros");
    fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    assert!(matches!(
        LockstateDevice::open_image(&p, BS),
        Err(DeviceError::Xfs { .. })
    ));
    assert!(matches!(
        LockstateDevice::open(&p),
        Err(DeviceError::NotBlockDevice { .. })
    ));
    assert!(matches!(
        LockstateDevice::open_image(&p, 1000),
        Err(DeviceError::BadBlockSize { size: 1000, .. })
    ));
    assert!(matches!(
        LockstateDevice::open(&s.path("missing")),
        Err(DeviceError::Open { .. })
    ));
}

// ---- creating ----

fn params() -> CreateParams {
    CreateParams {
        layout: Layout::new(BS).unwrap(),
        volume: VOL,
        owner_epoch: 1,
        owner_node: node(1).id,
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn create_then_raw_open_finds_the_same_header() {
    let s = Scratch::new("create");
    let root_path = s.path("root");
    fs::create_dir(&root_path).unwrap();
    let root = fs::File::open(&root_path).unwrap();
    let h = create(&root, &params()).unwrap();
    assert_eq!(h.owner_epoch, 1);
    assert_eq!(h.owner_node, node(1).id);
    assert_eq!(h.slot_size, BS);
    assert_ne!(h.secret, [0; 32]);

    let mxfs = root_path.join(".mxfs");
    let mode = fs::metadata(&mxfs).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode & !0o700, 0, "mode {mode:o}");
    assert_eq!(leftovers(&mxfs), vec!["lockstate".to_string()]);
    let bytes = fs::read(mxfs.join("lockstate")).unwrap();
    let layout = Layout::new(BS).unwrap();
    assert_eq!(bytes.len() as u64, layout.file_len());
    assert_eq!(
        decode(&bytes[..512], 0, &VOL).unwrap(),
        Slot::Header(h.clone())
    );
    assert!(bytes[512..].iter().all(|&b| b == 0));

    // Never replaced.
    assert!(matches!(create(&root, &params()), Err(CreateError::Exists)));
    assert_eq!(fs::read(mxfs.join("lockstate")).unwrap(), bytes);
    assert_eq!(leftovers(&mxfs), vec!["lockstate".to_string()]);
    // Each volume gets its own secret.
    let other = s.path("other");
    fs::create_dir(&other).unwrap();
    let h2 = create(&fs::File::open(&other).unwrap(), &params()).unwrap();
    assert_ne!(h2.secret, h.secret);
    // A file named .mxfs is refused.
    let third = s.path("third");
    fs::create_dir(&third).unwrap();
    fs::write(third.join(".mxfs"), b"x").unwrap();
    assert!(matches!(
        create(&fs::File::open(&third).unwrap(), &params()),
        Err(CreateError::NotADirectory)
    ));

    // The created file, put into an XFS image, is found by the raw walk.
    if !have_xfsprogs() {
        return;
    }
    let img = mkfs(&s, &VOL, Content::Lockstate(&bytes));
    let dev = ready(&img);
    assert_eq!(dev.header(), &h);
    assert_eq!(
        dev.extents(),
        db_extents(&img, "/.mxfs/lockstate").as_slice()
    );
}

#[test]
fn racing_creators_make_one_lockstate() {
    let s = Scratch::new("race");
    let root_path = s.path("root");
    fs::create_dir(&root_path).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let results: Vec<_> = (0..2)
        .map(|_| {
            let (b, p) = (barrier.clone(), root_path.clone());
            thread::spawn(move || {
                let root = fs::File::open(&p).unwrap();
                b.wait();
                create(&root, &params())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let won: Vec<&Header> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(results
        .iter()
        .any(|r| matches!(r, Err(CreateError::Exists))));
    let mxfs = root_path.join(".mxfs");
    assert_eq!(leftovers(&mxfs), vec!["lockstate".to_string()]);
    let bytes = fs::read(mxfs.join("lockstate")).unwrap();
    assert_eq!(
        decode(&bytes[..512], 0, &VOL).unwrap(),
        Slot::Header(won[0].clone())
    );
}

#[test]
fn freeze_thaw_where_it_can_run() {
    // procfs has no freeze support: a clear error, nothing thawed.
    let proc = fs::File::open("/proc").unwrap();
    let err = freeze_thaw(&proc).unwrap_err();
    assert!(matches!(err, FreezeError::Freeze(_)), "{err}");
    assert!(err.unsupported(), "{err}");
    // A real freeze needs a filesystem of our own: freezing the shared
    // root filesystem of a build machine would stall everyone on it.
    match std::env::var_os("MXFS_TEST_FREEZE_DIR") {
        None => eprintln!(
            "SKIPPED: real FIFREEZE/FITHAW (set MXFS_TEST_FREEZE_DIR to a directory on a \
             scratch filesystem that may be frozen, as root)"
        ),
        Some(dir) => {
            let d = fs::File::open(&dir).unwrap();
            freeze_thaw(&d).unwrap();
            // Thawed: writes go through.
            fs::write(Path::new(&dir).join(".mxfs-freeze-test"), b"x").unwrap();
            fs::remove_file(Path::new(&dir).join(".mxfs-freeze-test")).unwrap();
        }
    }
}

// ---- heartbeats ----

fn claim_all(img: &Path, ids: &[u8], params: &HeartbeatParams) -> Vec<(u8, Claimed)> {
    let barrier = Arc::new(Barrier::new(ids.len()));
    ids.iter()
        .map(|&n| {
            let (b, img, p) = (barrier.clone(), img.to_path_buf(), params.clone());
            thread::spawn(move || {
                let dev = ready(&img);
                b.wait();
                (n, claim_slot(&dev, &node(n), 0, &p).unwrap())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect()
}

fn assert_distinct(img: &Path, claims: &[(u8, Claimed)]) {
    let mut slots: Vec<u32> = claims.iter().map(|(_, c)| c.slot).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), claims.len(), "{claims:?}");
    let dev = ready(img);
    for (n, c) in claims {
        assert_eq!(c.beat.node_id, node(*n).id);
        assert_eq!(
            dev.read_slot(SlotId::Heartbeat(c.slot)).unwrap(),
            Slot::Heartbeat(c.beat.clone())
        );
    }
}

#[test]
fn racing_claims_end_in_distinct_slots() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("claims");
    let img = fresh(&s);
    // Lowest-first: every node goes for slot 0 at once, so the protocol,
    // not luck, must separate them.
    let p = HeartbeatParams {
        pick: Pick::Lowest,
        ..fast()
    };
    let claims = claim_all(&img, &[1, 2, 3, 4], &p);
    assert_distinct(&img, &claims);
    let mut slots: Vec<u32> = claims.iter().map(|(_, c)| c.slot).collect();
    slots.sort();
    assert_eq!(slots, vec![0, 1, 2, 3]);
    // Spread, with more nodes joining the same volume.
    let more = claim_all(&img, &[5, 6, 7, 8, 9, 10], &fast());
    let mut all = claims;
    all.extend(more);
    assert_distinct(&img, &all);
}

#[test]
fn beats_advance_and_a_stopped_node_goes_stale() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("beats");
    let img = fresh(&s);
    let dev = Arc::new(ready(&img));
    let p = fast();
    let c = claim_slot(&dev, &node(1), 5, &p).unwrap();
    let slot = c.slot;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = HeartbeatWriter::start(dev.clone(), c, p.interval, tx).unwrap();

    let watcher = ready(&img);
    let mut mon = HeartbeatMonitor::new();
    let v0 = mon.scan(&watcher).unwrap();
    assert_eq!(v0.len(), 64);
    let c0 = v0[slot as usize].counter().unwrap();
    thread::sleep(Duration::from_millis(400));
    let v1 = mon.scan(&watcher).unwrap();
    let h1 = heartbeat_of(&v1[slot as usize].content).clone();
    assert!(h1.counter >= c0 + 4, "{c0} -> {}", h1.counter);
    assert_eq!(h1.state, HeartbeatState::Joining);
    w.set_state(HeartbeatState::Member);
    assert_eq!(h1.owner_epoch, 5);
    assert!(v1[slot as usize].unchanged_for(Instant::now()) < Duration::from_millis(200));
    // The writer counts a beat once its write has returned, so a scan can
    // see the disk one beat ahead.
    assert!(
        w.counter() + 1 >= h1.counter,
        "{} vs {}",
        w.counter(),
        h1.counter
    );
    w.set_owner_epoch(6);
    thread::sleep(Duration::from_millis(100));
    let v = mon.scan(&watcher).unwrap();
    assert_eq!(heartbeat_of(&v[slot as usize].content).owner_epoch, 6);
    assert_eq!(
        heartbeat_of(&v[slot as usize].content).state,
        HeartbeatState::Member
    );
    // The other slots are empty and seen as such.
    assert!(v
        .iter()
        .filter(|v| v.index != slot)
        .all(|v| v.content == SlotContent::Empty));

    // Stop without clearing (as a crash would).
    w.abandon().unwrap();
    let v2 = mon.scan(&watcher).unwrap();
    let (c2, t2) = (v2[slot as usize].counter(), v2[slot as usize].last_change);
    thread::sleep(Duration::from_millis(300));
    let v3 = mon.scan(&watcher).unwrap();
    let now = Instant::now();
    assert_eq!(v3[slot as usize].counter(), c2, "counter moved after stop");
    assert!(v3[slot as usize].last_change <= t2);
    assert!(v3[slot as usize].unchanged_for(now) >= Duration::from_millis(300));
    assert!(v3[slot as usize].is_stale(now, Duration::from_millis(250)));
    assert!(!v3[slot as usize].is_stale(now, Duration::from_secs(10)));
    // Empty slots are never stale.
    assert!(!v3[(slot as usize + 1) % 64].is_stale(now, Duration::ZERO));
    // A healthy writer reports nothing but, on a loaded machine, `Late`.
    while let Ok(ev) = rx.try_recv() {
        assert!(matches!(ev, HeartbeatEvent::Late { .. }), "{ev:?}");
    }
}

#[test]
fn leave_clears_and_a_restart_reuses_its_slot() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("leave");
    let img = fresh(&s);
    let dev = Arc::new(ready(&img));
    let p = fast();
    // The wait must exceed a beat, and staleness must take longer than one.
    for bad in [
        HeartbeatParams {
            claim_wait: p.interval,
            ..p.clone()
        },
        HeartbeatParams {
            dead_after: p.interval,
            ..p.clone()
        },
    ] {
        assert!(matches!(
            claim_slot(&dev, &node(1), 0, &bad),
            Err(ClaimError::BadParams(_))
        ));
    }
    let c = claim_slot(&dev, &node(1), 0, &p).unwrap();
    let (slot, gen) = (c.slot, c.beat.generation);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let w = HeartbeatWriter::start(dev.clone(), c, p.interval, tx.clone()).unwrap();
    thread::sleep(Duration::from_millis(100));
    w.abandon().unwrap();
    // A restart of the same node finds its own slot again (not another
    // free one), with a higher generation.
    let c2 = claim_slot(&dev, &node(1), 0, &p).unwrap();
    assert_eq!(c2.slot, slot);
    assert!(c2.beat.generation > gen);
    let w = HeartbeatWriter::start(dev.clone(), c2, p.interval, tx).unwrap();
    thread::sleep(Duration::from_millis(100));
    w.leave().unwrap();
    assert_eq!(dev.read_slot(SlotId::Heartbeat(slot)).unwrap(), Slot::Empty);

    // Two old slots carry our UUID (an abandoned claim and an old slot):
    // the claim keeps one and clears the other, so no stale slot with our
    // id is left for monitors to call dead.
    let mut old = match fake_beat(1, 50) {
        Slot::Heartbeat(h) => h,
        _ => unreachable!(),
    };
    old.node_uuid = [1; 16];
    old.node_id = node(1).id;
    dev.write_slot(SlotId::Heartbeat(20), &Slot::Heartbeat(old.clone()))
        .unwrap();
    dev.write_slot(SlotId::Heartbeat(40), &Slot::Heartbeat(old))
        .unwrap();
    let c3 = claim_slot(&dev, &node(1), 0, &p).unwrap();
    let mut mon = HeartbeatMonitor::new();
    let ours: Vec<u32> = mon
        .scan(&dev)
        .unwrap()
        .into_iter()
        .filter(|v| v.node_id() == Some(node(1).id))
        .map(|v| v.index)
        .collect();
    assert_eq!(ours, vec![c3.slot]);
    assert!(c3.slot == 20 || c3.slot == 40);
}

fn fake_beat(n: u8, counter: u64) -> Slot {
    Slot::Heartbeat(Heartbeat {
        node_id: node(n).id,
        node_uuid: [n; 16],
        generation: 1,
        counter,
        timestamp_ns: 0,
        state: HeartbeatState::Member,
        owner_epoch: 0,
    })
}

#[test]
fn a_full_table_waits_for_a_stale_slot() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("full");
    let img = fresh(&s);
    let dev = Arc::new(ready(&img));
    for i in 0..64u32 {
        dev.write_slot(SlotId::Heartbeat(i), &fake_beat(100 + i as u8, 1))
            .unwrap();
    }
    // 63 live nodes beating, one (slot 17) dead.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beater = {
        let (dev, stop) = (dev.clone(), stop.clone());
        thread::spawn(move || {
            let mut k = 2;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for i in (0..64u32).filter(|i| *i != 17) {
                    dev.write_slot(SlotId::Heartbeat(i), &fake_beat(100 + i as u8, k))
                        .unwrap();
                }
                k += 1;
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let p = HeartbeatParams {
        dead_after: Duration::from_millis(600),
        ..fast()
    };
    let t = Instant::now();
    let c = claim_slot(&dev, &node(1), 0, &p).unwrap();
    assert_eq!(c.slot, 17);
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    // With every slot live, the claim gives up.
    dev.write_slot(SlotId::Heartbeat(17), &fake_beat(117, 1))
        .unwrap();
    let taken = {
        let (dev, stop) = (dev.clone(), stop.clone());
        thread::spawn(move || {
            let mut k = 2;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                dev.write_slot(SlotId::Heartbeat(17), &fake_beat(117, k))
                    .unwrap();
                k += 1;
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let r = claim_slot(&dev, &node(2), 0, &p);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    beater.join().unwrap();
    taken.join().unwrap();
    assert!(matches!(r, Err(ClaimError::Full)), "{r:?}");
}

/// The next event but `Late` (a loaded test machine makes beats late;
/// that is reported and is not what these tests look for).
fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<HeartbeatEvent>) -> HeartbeatEvent {
    loop {
        let ev = rx
            .blocking_recv()
            .expect("the writer's event channel closed");
        if !matches!(ev, HeartbeatEvent::Late { .. }) {
            return ev;
        }
    }
}

#[test]
fn lost_slots_and_device_errors_are_events() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("events");
    let img = fresh(&s);
    let dev = Arc::new(ready(&img));
    let p = fast();
    let c = claim_slot(&dev, &node(1), 0, &p).unwrap();
    let slot = c.slot;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = HeartbeatWriter::start(dev.clone(), c, p.interval, tx).unwrap();
    thread::sleep(Duration::from_millis(100));
    // Another node writes into our slot (it judged us dead).
    let other = ready(&img);
    other
        .write_slot(SlotId::Heartbeat(slot), &fake_beat(2, 1))
        .unwrap();
    let ev = next_event(&mut rx);
    assert!(
        matches!(&ev, HeartbeatEvent::SlotLost { slot: s, found } if *s == slot && found.contains("counter 1")),
        "{ev:?}"
    );
    // The writer stopped and left the other node's beat alone.
    assert!(matches!(w.leave(), Err(LeaveError::Stopped)));
    assert_eq!(
        other.read_slot(SlotId::Heartbeat(slot)).unwrap(),
        fake_beat(2, 1)
    );

    // Fenced: the device fails our I/O with EBADE.  One event, no retry.
    for (errno, failure) in [
        (libc::EBADE, IoFailure::ReservationConflict),
        (libc::EIO, IoFailure::Other),
    ] {
        let dev = Arc::new(ready(&img));
        let c = claim_slot(&dev, &node(3), 0, &p).unwrap();
        let slot = c.slot;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let w = HeartbeatWriter::start(dev.clone(), c, p.interval, tx).unwrap();
        thread::sleep(Duration::from_millis(100));
        dev.inject_fault(errno);
        let ev = next_event(&mut rx);
        match &ev {
            HeartbeatEvent::DeviceError {
                slot: s,
                failure: f,
                errno: e,
                ..
            } => {
                assert_eq!((*s, *f, *e), (slot, failure, Some(errno)));
            }
            other => panic!("{other:?}"),
        }
        // Nothing more: the writer has stopped, the counter stays.
        dev.inject_fault(0);
        let before = dev.read_slot(SlotId::Heartbeat(slot)).unwrap();
        thread::sleep(Duration::from_millis(200));
        assert_eq!(dev.read_slot(SlotId::Heartbeat(slot)).unwrap(), before);
        assert!(rx.try_recv().is_err());
        assert!(matches!(w.abandon(), Err(LeaveError::Stopped)));
        // Clean up for the next round (node 3 again).
        dev.write_slot(SlotId::Heartbeat(slot), &Slot::Empty)
            .unwrap();
    }
}

#[test]
fn torn_and_garbage_slots_are_errors_not_panics() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("torn");
    let img = fresh(&s);
    let dev = ready(&img);
    let off5 = dev.map().device_offset(SlotId::Heartbeat(5)).unwrap();
    poke(&img, off5, &[0xa5; 512]);
    // A torn heartbeat: slot 6 holds beat 4 with the counter (and
    // nothing else) of beat 5 over it.
    let old = encode(&fake_beat(9, 4), 7, &VOL, BS).unwrap();
    let new = encode(&fake_beat(9, 5), 7, &VOL, BS).unwrap();
    let off6 = dev.map().device_offset(SlotId::Heartbeat(6)).unwrap();
    let mut torn = old.clone();
    torn[64..72].copy_from_slice(&new[64..72]);
    assert_ne!(torn, old);
    poke(&img, off6, &torn);
    // A valid heartbeat in a lock slot.
    let lock_off = dev.map().device_offset(SlotId::Lock(40)).unwrap();
    let hb = encode(&fake_beat(9, 4), 7, &VOL, BS).unwrap();
    poke(&img, lock_off, &hb);

    let mut mon = HeartbeatMonitor::new();
    let v = mon.scan(&dev).unwrap();
    assert!(
        matches!(&v[5].content, SlotContent::Corrupt(e) if e.contains("checksum")),
        "{:?}",
        v[5]
    );
    assert!(
        matches!(&v[6].content, SlotContent::Corrupt(e) if e.contains("checksum")),
        "{:?}",
        v[6]
    );
    assert!(v
        .iter()
        .filter(|v| v.index != 5 && v.index != 6)
        .all(|v| v.content == SlotContent::Empty));
    assert!(matches!(
        dev.read_slot(SlotId::Heartbeat(5)),
        Err(LockstateError::Checksum { index: 6 })
    ));
    assert!(matches!(
        dev.read_slot(SlotId::Lock(40)),
        Err(LockstateError::WrongIndex { .. })
    ));
    // A claimant skips fresh corrupt slots (they may be a node's torn
    // write) and takes a free one.
    let p = HeartbeatParams {
        pick: Pick::Lowest,
        ..fast()
    };
    let c = claim_slot(&dev, &node(1), 0, &p).unwrap();
    assert_eq!(c.slot, 0);
    // Garbage everywhere in the heartbeat area and a random lock area:
    // scans and purges return, never panic.
    let mut x = 0x1234_5678u32;
    let mut junk = vec![0u8; 512 * 64];
    for b in junk.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let hb0 = dev.map().device_offset(SlotId::Heartbeat(0)).unwrap();
    poke(&img, hb0, &junk);
    let v = mon.scan(&dev).unwrap();
    assert!(v
        .iter()
        .all(|v| matches!(v.content, SlotContent::Corrupt(_))));
    let r = purge(&dev, node(1).id).unwrap();
    assert_eq!(r.total(), 0);
    assert_eq!(r.corrupt_elsewhere.len(), 1); // the heartbeat in lock slot 40
}

// ---- lock records ----

fn rec(name: &str, holder: u64, lock_id: u64) -> LockRecord {
    LockRecord {
        name: name.as_bytes().to_vec(),
        holder,
        lock_id,
        mode: Mode::PR,
        epoch: 3,
    }
}

#[test]
fn records_are_written_cleared_and_purged() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("records");
    let img = fresh(&s);
    let p = HeartbeatParams {
        pick: Pick::Lowest,
        ..fast()
    };
    let (a, b) = (node(1), node(2));
    let dev_a = Arc::new(ready(&img));
    let dev_b = Arc::new(ready(&img));
    let ca = claim_slot(&dev_a, &a, 0, &p).unwrap();
    let cb = claim_slot(&dev_b, &b, 0, &p).unwrap();
    let (mut book_a, left) = RecordBook::open(dev_a.clone(), a.id, ca.slot).unwrap();
    assert_eq!(left, Default::default());
    let (mut book_b, _) = RecordBook::open(dev_b.clone(), b.id, cb.slot).unwrap();
    assert_eq!(book_a.partition(), partition(ca.slot));
    assert!(
        book_a.partition().end <= book_b.partition().start
            || book_b.partition().end <= book_a.partition().start
    );

    let mut a_slots = Vec::new();
    for i in 0..5 {
        let r = rec(&format!("inode:{}", 100 + i), a.id, i);
        let slot = book_a.record(&r).unwrap();
        assert!(book_a.partition().contains(&slot));
        assert_eq!(dev_b.read_slot(SlotId::Lock(slot)).unwrap(), Slot::Lock(r));
        a_slots.push(slot);
    }
    // The same resource twice (two locks on it) gets two slots.
    let s1 = book_a.record(&rec("owner", a.id, 10)).unwrap();
    let s2 = book_a.record(&rec("owner", a.id, 11)).unwrap();
    assert_ne!(s1, s2);
    a_slots.extend([s1, s2]);
    // Released: cleared on disk.
    let released = a_slots.remove(0);
    book_a.clear_record(released).unwrap();
    assert_eq!(
        dev_a.read_slot(SlotId::Lock(released)).unwrap(),
        Slot::Empty
    );
    assert_eq!(book_a.in_use(), 6);

    let mut b_recs = Vec::new();
    for i in 0..3 {
        let r = rec(&format!("inode:{}", 100 + i), b.id, i);
        b_recs.push((book_b.record(&r).unwrap(), r));
    }
    // The rules: only our partition, only our locks.
    let theirs = book_b.partition().start;
    assert!(matches!(
        book_a.write_record(theirs, &rec("x", a.id, 1)),
        Err(RecordError::NotOurs { .. })
    ));
    assert!(matches!(
        book_a.clear_record(theirs),
        Err(RecordError::NotOurs { .. })
    ));
    assert!(matches!(
        book_a.write_record(book_a.partition().start + 1000, &rec("x", b.id, 1)),
        Err(RecordError::NotHolder { .. })
    ));

    // A reopened book reports what was left.
    let (_, left) = RecordBook::open(dev_a.clone(), a.id, ca.slot).unwrap();
    assert_eq!(left.records.len(), 6);
    assert!(left.corrupt.is_empty());

    // A dies mid-write (a torn slot in its partition); B has a torn slot
    // too (which purge of A must not touch).
    let torn = |slot: u32| {
        let mut b = encode(&Slot::Lock(rec("torn", a.id, 99)), slot + 65, &VOL, BS).unwrap();
        b[300] ^= 0xff;
        b
    };
    let a_torn = book_a.partition().start + 1023;
    let b_torn = book_b.partition().start + 1023;
    poke(
        &img,
        dev_a.map().device_offset(SlotId::Lock(a_torn)).unwrap(),
        &torn(a_torn),
    );
    poke(
        &img,
        dev_a.map().device_offset(SlotId::Lock(b_torn)).unwrap(),
        &torn(b_torn),
    );

    let t = Instant::now();
    let r = purge(&dev_b, a.id).unwrap();
    eprintln!("purge of 65536 slots took {:?}", t.elapsed());
    assert_eq!(r.cleared, 6, "{r:?}");
    assert_eq!(r.torn_cleared, 1, "{r:?}");
    assert_eq!(r.corrupt_elsewhere.len(), 1);
    assert_eq!(r.corrupt_elsewhere[0].0, b_torn);
    for s in a_slots.iter().chain([&a_torn]) {
        assert_eq!(dev_b.read_slot(SlotId::Lock(*s)).unwrap(), Slot::Empty);
    }
    for (s, r) in &b_recs {
        assert_eq!(
            dev_b.read_slot(SlotId::Lock(*s)).unwrap(),
            Slot::Lock(r.clone())
        );
    }
    // Idempotent.
    let again = purge(&dev_b, a.id).unwrap();
    assert_eq!(again.total(), 0);
}

// ---- the DLM's grants recorded ----

/// The lock records in `range` on the device, by lock slot.
fn records_in(dev: &LockstateDevice, range: std::ops::Range<u32>) -> Vec<(u32, LockRecord)> {
    let ids: Vec<SlotId> = range.map(SlotId::Lock).collect();
    dev.read_slots(&ids)
        .unwrap()
        .into_iter()
        .filter_map(|(id, r)| match (id, r.unwrap()) {
            (SlotId::Lock(i), Slot::Lock(rec)) => Some((i, rec)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_dlm_records_each_grant_before_answering_and_clears_it_on_release() {
    use crate::dlm::{Dlm, LockError, RequestFlags};
    use tokio::sync::watch;

    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("dlm-records");
    let img = fresh(&s);
    let (a, b) = (node(1), node(2));
    let dev = Arc::new(ready(&img));
    let disk = ready(&img);
    let claimed = claim_slot(&dev, &a, 0, &fast()).unwrap();
    let range = partition(claimed.slot);
    // Left in the partition: a record of this node's earlier run, and one
    // of another holder (a node that had the slot before).
    let (mut book, _) = RecordBook::open(dev.clone(), a.id, claimed.slot).unwrap();
    book.write_record(range.start + 5, &rec("stale", a.id, 1))
        .unwrap();
    drop(book);
    let foreign = LockRecord {
        holder: b.id,
        ..rec("theirs", b.id, 2)
    };
    dev.write_slot(SlotId::Lock(range.start + 6), &Slot::Lock(foreign.clone()))
        .unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (records, recorded) = watch::channel(RecorderState::Opening);
        let (dlm, _task) = Dlm::spawn_recorded(a.id, crate::test_support::Nowhere, recorded);
        let view = (5u64 << 32) | 1;
        dlm.set_members(view, &[a.id]).await.unwrap();
        let q = RequestFlags { noqueue: false };

        // While the records are opening, a lock call waits.
        let pending = tokio::spawn({
            let dlm = dlm.clone();
            async move { dlm.lock(b"inode:7", Mode::PR, q).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !pending.is_finished(),
            "a lock was answered before its record could be written"
        );

        let (book, left) = RecordBook::open(dev.clone(), a.id, claimed.slot).unwrap();
        assert_eq!(left.records.len(), 2, "{left:?}");
        let (recorder, thread) = Recorder::start(book, left, a.id).unwrap();
        // The earlier run's record is cleared, the other holder's kept.
        assert_eq!(
            records_in(&disk, range.clone()),
            vec![(range.start + 6, foreign.clone())]
        );
        records.send_replace(RecorderState::Ready(recorder.clone()));

        let mut h = pending.await.unwrap().unwrap();
        // On disk when the grant is answered: this node's lock, its mode
        // and the epoch of the view.
        let on_disk = |name: &str| -> Vec<LockRecord> {
            records_in(&disk, range.clone())
                .into_iter()
                .map(|(_, r)| r)
                .filter(|r| r.name == name.as_bytes())
                .collect()
        };
        let want = LockRecord {
            name: b"inode:7".to_vec(),
            holder: a.id,
            lock_id: h.id().local,
            mode: Mode::PR,
            epoch: 5,
        };
        assert_eq!(on_disk("inode:7"), vec![want.clone()]);
        assert_eq!(dlm.records_in_use(), Some(1));

        // A conversion rewrites the same record.
        h.convert(Mode::EX, q).await.unwrap();
        assert_eq!(
            on_disk("inode:7"),
            vec![LockRecord {
                mode: Mode::EX,
                ..want.clone()
            }]
        );

        // A release clears it (without waiting: poll).
        h.unlock();
        let mut cleared = false;
        for _ in 0..100 {
            if on_disk("inode:7").is_empty() && recorder.in_use() == 0 {
                cleared = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            cleared,
            "the released lock's record stayed: {:?}",
            on_disk("inode:7")
        );

        // Leaving cleanly clears what is still recorded.
        let held = dlm.lock(b"inode:8", Mode::EX, q).await.unwrap();
        assert_eq!(on_disk("inode:8").len(), 1);
        thread.stop(true);
        assert!(on_disk("inode:8").is_empty());
        assert_eq!(
            records_in(&disk, range.clone()),
            vec![(range.start + 6, foreign.clone())]
        );
        drop(held);

        // A record that cannot be written fails the call and gives the
        // lock back: with records off, the same lock is free at once.
        let failed = dlm.lock(b"inode:9", Mode::EX, q).await;
        assert!(matches!(failed, Err(LockError::Record(_))), "{failed:?}");
        records.send_replace(RecorderState::Off);
        let again = dlm
            .lock(b"inode:9", Mode::EX, RequestFlags { noqueue: true })
            .await;
        assert!(
            again.is_ok(),
            "the lock whose record failed was kept: {again:?}"
        );
    });
}
