//! Tests against real XFS images made by `mkfs.xfs -p PROTOFILE` (no
//! mount needed), cross-checked against `xfs_db -r`.  Skipped, saying
//! why, when xfsprogs is not installed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::test_support::{have_xfsprogs, TempDir as Scratch};

/// Builds a mkfs.xfs protofile; file contents are written to host files.
struct Proto {
    text: String,
    dir: PathBuf,
    n: usize,
}

impl Proto {
    fn new(dir: &Path) -> Proto {
        Proto {
            text: "mxfsd-test\n0 0\nd--755 0 0\n".to_string(),
            dir: dir.to_path_buf(),
            n: 0,
        }
    }
    fn file(&mut self, name: &str, contents: &[u8]) -> &mut Self {
        self.n += 1;
        let src = self.dir.join(format!("src-{}", self.n));
        fs::write(&src, contents).unwrap();
        self.text
            .push_str(&format!("{name} ---644 0 0 {}\n", src.display()));
        self
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.text.push_str(&format!("{name} d--755 0 0\n"));
        self
    }
    fn end(&mut self) -> &mut Self {
        self.text.push_str("$\n");
        self
    }
}

/// mkfs.xfs an 80 MiB image (4 AGs of 5120 blocks: not a power of two,
/// so a wrong fsblock conversion shows) populated from `proto`.
fn mkfs(dir: &Path, proto: &mut Proto, extra: &[&str]) -> PathBuf {
    proto.end();
    let proto_path = dir.join("proto");
    fs::write(&proto_path, &proto.text).unwrap();
    let img = dir.join("img");
    let run = |size: &str, small_ok: bool| {
        let mut c = Command::new("mkfs.xfs");
        c.arg("-q").arg("-f").arg("-p").arg(&proto_path).args(extra);
        c.arg("-d")
            .arg(format!("file,name={},size={size},agcount=4", img.display()));
        if small_ok {
            // xfsprogs refuses filesystems under 300 MB unless run by
            // fstests, which it recognises by these variables.
            c.env("TEST_DIR", dir)
                .env("TEST_DEV", &img)
                .env("QA_CHECK_FS", "1");
        }
        c.output().unwrap()
    };
    let out = run("80m", true);
    let out = if out.status.success() {
        out
    } else {
        run("320m", false)
    };
    assert!(
        out.status.success(),
        "mkfs.xfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

fn xfs_db(img: &Path, expert: bool, cmds: &[&str]) -> String {
    let mut c = Command::new("xfs_db");
    c.arg(if expert { "-x" } else { "-r" });
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    let out = c.arg(img).output().unwrap();
    assert!(
        out.status.success(),
        "xfs_db {cmds:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn db_ino(img: &Path, path: &str) -> u64 {
    let out = xfs_db(img, false, &[&format!("path {path}"), "inode"]);
    out.trim()
        .strip_prefix("current inode number is ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("xfs_db inode: {out:?}"))
}

fn db_fields(img: &Path, cmds: &[&str]) -> BTreeMap<String, String> {
    xfs_db(img, false, cmds)
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// xfs_db's `bmap` as (startoff, agno, agbno, count, unwritten).
fn db_bmap(img: &Path, path: &str) -> Vec<(u64, u64, u64, u64, bool)> {
    xfs_db(img, false, &[&format!("path {path}"), "bmap"])
        .lines()
        .map(|l| {
            // data offset 0 startblock 24 (0/24) count 4072 flag 0
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 10, "bmap line {l:?}");
            let (ag, agb) = w[5]
                .trim_matches(|c| c == '(' || c == ')')
                .split_once('/')
                .unwrap();
            (
                w[2].parse().unwrap(),
                ag.parse().unwrap(),
                agb.parse().unwrap(),
                w[7].parse().unwrap(),
                w[9] == "1",
            )
        })
        .collect()
}

/// xfs_db's `ls` as (name, ino), sorted.
fn db_ls(img: &Path, path: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = xfs_db(img, false, &[&format!("path {path}"), "ls"])
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[5].to_string(), w[1].parse().unwrap())
        })
        .collect();
    v.sort();
    v
}

fn sorted(entries: Vec<DirEntry>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = entries
        .into_iter()
        .map(|e| (String::from_utf8(e.name).unwrap(), e.ino))
        .collect();
    v.sort();
    v
}

fn open(img: &Path) -> Volume<fs::File> {
    Volume::open(fs::File::open(img).unwrap()).unwrap()
}

/// Our extents against xfs_db's bmap, converting xfs_db's (agno/agbno)
/// with the superblock geometry xfs_db reports.
fn check_extents(img: &Path, vol: &Volume<fs::File>, path: &[&str]) -> Vec<Extent> {
    let inode = vol.lookup_path(path).unwrap();
    let dbpath = format!("/{}", path.join("/"));
    assert_eq!(inode.ino, db_ino(img, &dbpath));
    let f = db_fields(img, &["sb 0", "p blocksize agblocks"]);
    let bs: u64 = f["blocksize"].parse().unwrap();
    let agblocks: u64 = f["agblocks"].parse().unwrap();
    let ours = vol.extents(&inode).unwrap();
    let theirs: Vec<Extent> = db_bmap(img, &dbpath)
        .into_iter()
        .map(|(off, ag, agb, count, unwritten)| Extent {
            file_offset_blocks: off,
            disk_byte_offset: (ag * agblocks + agb) * bs,
            len_blocks: count,
            unwritten,
        })
        .collect();
    assert_eq!(ours, theirs, "extents of {dbpath}");
    ours
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn v5_short_form_root() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("v5sf");
    let data = pattern(300_000, 7);
    let mut p = Proto::new(&s.0);
    p.dir(".mxfs").file("lockstate", &data).end();
    p.file("hello", b"hello\n");
    let img = mkfs(&s.0, &mut p, &[]);
    let vol = open(&img);

    let f = db_fields(
        &img,
        &[
            "sb 0",
            "p blocksize sectsize inodesize agblocks agcount rootino uuid",
        ],
    );
    let sb = vol.superblock();
    assert!(sb.is_v5());
    assert_eq!(sb.block_size.to_string(), f["blocksize"]);
    assert_eq!(sb.sector_size.to_string(), f["sectsize"]);
    assert_eq!(sb.inode_size.to_string(), f["inodesize"]);
    assert_eq!(sb.ag_blocks.to_string(), f["agblocks"]);
    assert_eq!(sb.ag_count.to_string(), f["agcount"]);
    assert_eq!(sb.root_ino.to_string(), f["rootino"]);
    assert_eq!(uuid::Uuid::from_bytes(vol.uuid()).to_string(), f["uuid"]);

    let root = vol.root().unwrap();
    assert_eq!(root.format, Format::Local);
    assert_eq!(sorted(vol.read_dir(&root).unwrap()), db_ls(&img, "/"));
    let mxfs = vol.lookup_path(&[".mxfs"]).unwrap();
    assert!(mxfs.is_dir());
    assert_eq!(sorted(vol.read_dir(&mxfs).unwrap()), db_ls(&img, "/.mxfs"));

    let ls = vol.lookup_path(&[".mxfs", "lockstate"]).unwrap();
    assert!(ls.is_regular());
    assert_eq!(ls.size, data.len() as u64);
    assert_eq!(ls.format, Format::Extents);
    let ext = check_extents(&img, &vol, &[".mxfs", "lockstate"]);
    // Read the file back through the extents from the raw image.
    let raw = fs::read(&img).unwrap();
    let mut back = Vec::new();
    for e in &ext {
        let start = e.disk_byte_offset as usize;
        back.extend_from_slice(&raw[start..start + (e.len_blocks * 4096) as usize]);
    }
    assert_eq!(&back[..data.len()], &data[..]);

    // ".." of the subdirectory is the root.
    assert_eq!(vol.lookup(&mxfs, b"..").unwrap(), sb.root_ino);
    // Errors: missing names, paths through files.
    assert!(matches!(
        vol.lookup_path(&[".mxfs", "nope"]),
        Err(XfsError::NotFound(p)) if p == "/.mxfs/nope"
    ));
    assert!(matches!(
        vol.lookup_path(&["hello", "x"]),
        Err(XfsError::NotADirectory(p)) if p == "/hello"
    ));
    assert!(matches!(vol.extents(&root), Err(XfsError::Unsupported(_))));
}

#[test]
fn v5_block_form_root_and_subdir() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("v5blk");
    let mut p = Proto::new(&s.0);
    for i in 0..60 {
        p.file(&format!("root-file-{i:03}"), b"x");
    }
    p.dir(".mxfs");
    for i in 0..40 {
        p.file(&format!("other-{i:03}"), b"y");
    }
    p.file("lockstate", &pattern(70_000, 3)).end();
    p.dir("huge");
    for i in 0..400 {
        p.file(
            &format!("a-rather-long-file-name-to-fill-blocks-{i:04}"),
            b"z",
        );
    }
    p.end();
    let img = mkfs(&s.0, &mut p, &[]);
    let vol = open(&img);

    let root = vol.root().unwrap();
    assert_eq!(root.format, Format::Extents, "root should be block form");
    assert_eq!(
        db_fields(&img, &["path /", "p core.format"])["core.format"],
        "2 (extents)"
    );
    assert_eq!(sorted(vol.read_dir(&root).unwrap()), db_ls(&img, "/"));
    let mxfs = vol.lookup_path(&[".mxfs"]).unwrap();
    assert_eq!(mxfs.format, Format::Extents);
    assert_eq!(sorted(vol.read_dir(&mxfs).unwrap()), db_ls(&img, "/.mxfs"));
    check_extents(&img, &vol, &[".mxfs", "lockstate"]);
    let f = vol.lookup_path(&["root-file-059"]).unwrap();
    assert_eq!(f.ino, db_ino(&img, "/root-file-059"));

    // Leaf-form directories are refused clearly, not misread.
    let err = vol.lookup_path(&["huge", "x"]).unwrap_err();
    assert!(matches!(err, XfsError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("leaf or node form"), "{err}");
}

#[test]
fn v4_filesystem_without_ftype() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("v4");
    let mut p = Proto::new(&s.0);
    p.dir(".mxfs").file("lockstate", &pattern(50_000, 1)).end();
    p.dir("blockdir");
    for i in 0..50 {
        p.file(&format!("entry-{i:03}"), b"q");
    }
    p.end();
    let img = mkfs(&s.0, &mut p, &["-m", "crc=0", "-n", "ftype=0"]);
    let vol = open(&img);
    let sb = vol.superblock();
    assert_eq!(sb.version, 4);
    assert!(!sb.has_ftype);
    assert_eq!(sb.inode_size, 256);
    let root = vol.root().unwrap();
    assert_eq!(sorted(vol.read_dir(&root).unwrap()), db_ls(&img, "/"));
    let bd = vol.lookup_path(&["blockdir"]).unwrap();
    assert_eq!(bd.format, Format::Extents);
    assert_eq!(sorted(vol.read_dir(&bd).unwrap()), db_ls(&img, "/blockdir"));
    check_extents(&img, &vol, &[".mxfs", "lockstate"]);
}

#[test]
fn several_extents_across_ags_with_holes_and_unwritten() {
    if !have_xfsprogs() {
        return;
    }
    let s = Scratch::new("ext");
    let mut p = Proto::new(&s.0);
    p.dir(".mxfs")
        .file("lockstate", &pattern(1_000_000, 9))
        .end();
    let img = mkfs(&s.0, &mut p, &[]);
    // mkfs.xfs -p writes each file as one extent, so rewrite the inode's
    // extent list with xfs_db (expert mode, which recomputes the inode
    // CRC): extents in AGs 1 and 3 with holes between them, one
    // unwritten.  Free-space btrees do not match, which a reader of the
    // extent list does not look at.
    xfs_db(
        &img,
        true,
        &[
            "path /.mxfs/lockstate",
            "write core.nextents 4",
            "write u3.bmx[0].blockcount 100",
            "write u3.bmx[1].startoff 150",
            "write u3.bmx[1].startblock 8300",
            "write u3.bmx[1].blockcount 7",
            "write u3.bmx[1].extentflag 1",
            "write u3.bmx[2].startoff 157",
            "write u3.bmx[2].startblock 24700",
            "write u3.bmx[2].blockcount 50",
            "write u3.bmx[3].startoff 1000000",
            "write u3.bmx[3].startblock 16390",
            "write u3.bmx[3].blockcount 1",
        ],
    );
    let vol = open(&img);
    let ext = check_extents(&img, &vol, &[".mxfs", "lockstate"]);
    assert_eq!(ext.len(), 4);
    assert!(ext[1].unwritten && !ext[2].unwritten);
    let sb = vol.superblock();
    // fsblock 8300 is AG 1 block 108 (agblklog 13): linear 5120 + 108.
    assert_eq!(sb.ag_block_log, 13);
    assert_eq!(ext[1].disk_byte_offset, (5120 + 108) * 4096);
}

#[test]
fn non_xfs_images_are_refused() {
    assert!(matches!(
        Volume::open(vec![0u8; 1 << 20]),
        Err(XfsError::NotXfs(_))
    ));
    assert!(matches!(
        Volume::open(vec![0u8; 100]),
        Err(XfsError::NotXfs(_))
    ));
    let mut ext4ish = vec![0u8; 4096];
    ext4ish[1080] = 0x53;
    ext4ish[1081] = 0xef;
    let err = Volume::open(ext4ish).err().unwrap();
    assert!(
        err.to_string().starts_with("not an XFS filesystem"),
        "{err}"
    );
    // An image file too.
    let s = Scratch::new("notxfs");
    let path = s.0.join("zeros");
    fs::write(&path, vec![0xa5u8; 65536]).unwrap();
    let f = fs::File::open(&path).unwrap();
    assert!(matches!(Volume::open(&f), Err(XfsError::NotXfs(_))));
    // Read + Seek sources work the same.
    let cur = SeekReader::new(std::io::Cursor::new(vec![0u8; 8192]));
    assert!(matches!(Volume::open(cur), Err(XfsError::NotXfs(_))));
}

#[test]
fn aligned_reader_reads_the_same_bytes() {
    // A device is a whole number of logical blocks.
    let data = pattern(5 * 4096, 5);
    let r = AlignedReader::new(data.clone(), 4096).unwrap();
    for (off, len) in [
        (0usize, 1usize),
        (1, 4096),
        (4095, 2),
        (5000, 9000),
        (20_479, 1),
    ] {
        let mut buf = vec![0u8; len];
        r.read_exact_at(&mut buf, off as u64).unwrap();
        assert_eq!(buf, data[off..off + len]);
    }
    let mut buf = vec![0u8; 2];
    assert!(r.read_exact_at(&mut buf, 20_479).is_err());
    assert!(AlignedReader::new(data, 1000).is_err());
}

// ---- fuzzing the decoders with mutated real images ----

/// An image held in memory with byte overrides on top.
struct Mutated<'a> {
    base: &'a [u8],
    patches: &'a BTreeMap<u64, u8>,
}

impl ReadAt for Mutated<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.base.read_exact_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        for (&at, &v) in self.patches.range(offset..end) {
            buf[(at - offset) as usize] = v;
        }
        Ok(())
    }
}

/// Records which byte ranges a walk reads.
struct Recorder<'a> {
    base: &'a [u8],
    seen: std::cell::RefCell<Vec<(u64, usize)>>,
}

impl ReadAt for Recorder<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.seen.borrow_mut().push((offset, buf.len()));
        self.base.read_exact_at(buf, offset)
    }
}

fn walk<D: ReadAt>(dev: D) -> std::result::Result<Vec<Extent>, XfsError> {
    let vol = Volume::open(dev)?;
    let root = vol.root()?;
    vol.read_dir(&root)?;
    let ls = vol.lookup_path(&[".mxfs", "lockstate"])?;
    vol.lookup_path(&["sub", "f"]).ok();
    vol.extents(&ls)
}

/// A small v5 image (short-form root, block-form subdirectory) and the
/// byte ranges its walk reads: the metadata worth mutating.
/// An image's bytes and the (offset, length) ranges a clean walk reads.
type FuzzImage = (Vec<u8>, Vec<(u64, usize)>);

fn fuzz_image(v4: bool) -> Option<&'static FuzzImage> {
    static V5: OnceLock<Option<FuzzImage>> = OnceLock::new();
    static V4: OnceLock<Option<FuzzImage>> = OnceLock::new();
    // v4 has no CRCs, so mutations reach the structure decoders instead of
    // stopping at a checksum.
    let (cell, extra): (_, &[&str]) = if v4 {
        (&V4, &["-m", "crc=0"])
    } else {
        (&V5, &[])
    };
    cell.get_or_init(|| {
        if !have_xfsprogs() {
            return None;
        }
        let s = Scratch::new(if v4 { "fuzz4" } else { "fuzz5" });
        let mut p = Proto::new(&s.0);
        p.dir(".mxfs").file("lockstate", &pattern(40_000, 2)).end();
        p.dir("sub");
        for i in 0..30 {
            p.file(&format!("file-{i}"), b"f");
        }
        p.file("f", b"f").end();
        let img = mkfs(&s.0, &mut p, extra);
        let bytes = fs::read(img).unwrap();
        let rec = Recorder {
            base: &bytes,
            seen: Default::default(),
        };
        walk(&rec).expect("clean image walks");
        let seen = rec.seen.into_inner();
        Some((bytes, seen))
    })
    .as_ref()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn garbage_devices_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = walk(bytes);
    }

    #[test]
    fn garbage_superblocks_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 512..1024),
                                       magic: bool) {
        if magic {
            bytes[..4].copy_from_slice(b"XFSB");
        }
        let _ = Superblock::decode(&bytes);
    }

    #[test]
    fn mutated_images_never_panic(v4: bool, picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<u16>(), any::<u8>()), 1..8)) {
        let Some((base, seen)) = fuzz_image(v4) else { return Ok(()); };
        let mut patches = BTreeMap::new();
        for (which, at, v) in picks {
            let (off, len) = seen[which.index(seen.len())];
            patches.insert(off + u64::from(at) % len as u64, v);
        }
        let _ = walk(Mutated { base, patches: &patches });
    }
}
