//! End to end: the FUSE server mounted under the temp dir, forwarding
//! in-process to a [`FileService`] over another temp dir (the owner), used
//! with ordinary system calls; results are checked on both sides.  Needs
//! root and /dev/fuse, as the daemon does.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::{mount, Forward, FuseMount, MountConfig};
use crate::fileserv::FileService;
use crate::test_support::TempDir;
use crate::wire::fileop::{opcode, FileReply, FileRequest, Handle};
use crate::wire::Origin;

/// The owner, in-process; [`Loopback::new_owner`] replaces it by a fresh
/// service on the same directory, as a change of owner does (its open
/// table is empty).
struct Loopback {
    dir: PathBuf,
    svc: RwLock<Arc<FileService>>,
    /// Every request's opcode and origin (none: the default), in order.
    origins: Mutex<Vec<(u32, Origin)>>,
}

impl Loopback {
    /// An owner serving `dir`, and its root handle.
    fn open(dir: &Path) -> (Arc<Loopback>, Handle) {
        let svc = FileService::open(dir).unwrap();
        let root = svc.root_handle().clone();
        let owner = Arc::new(Loopback {
            dir: dir.to_path_buf(),
            svc: RwLock::new(Arc::new(svc)),
            origins: Mutex::default(),
        });
        (owner, root)
    }

    fn new_owner(&self) {
        let fresh = Arc::new(FileService::open(&self.dir).unwrap());
        *self.svc.write().unwrap() = fresh;
    }
}

impl Forward for Arc<Loopback> {
    fn call(&self, req: FileRequest) -> FileReply {
        self.call_from(req, Origin::default())
    }

    fn call_from(&self, req: FileRequest, origin: Origin) -> FileReply {
        self.origins.lock().unwrap().push((req.opcode(), origin));
        let svc = self.svc.read().unwrap().clone();
        svc.handle_from(7, req)
    }
}

/// Field order is drop order: unmount first, then remove the dirs.
struct Fx {
    mount: FuseMount,
    owner: Arc<Loopback>,
    mnt: TempDir,
    back: TempDir,
}

impl Fx {
    fn new(tag: &str) -> Fx {
        let back = TempDir::new(&format!("{tag}-back"));
        let mnt = TempDir::new(&format!("{tag}-mnt"));
        let (owner, root) = Loopback::open(&back.0);
        let config = MountConfig { threads: 4 };
        let mount = mount(&mnt.0, root, owner.clone(), &config)
            .expect("FUSE mount (needs root and /dev/fuse)");
        Fx {
            mount,
            owner,
            mnt,
            back,
        }
    }
    /// A path on the FUSE mount.
    fn m(&self, rel: &str) -> PathBuf {
        self.mnt.0.join(rel)
    }
    /// The same path on the owner's side.
    fn b(&self, rel: &str) -> PathBuf {
        self.back.0.join(rel)
    }
    fn done(mut self) {
        self.mount.unmount().unwrap();
        assert!(!self.mount.is_serving());
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn mountinfo_line(p: &Path) -> Option<String> {
    let canon = p.canonicalize().ok()?;
    let want = canon.to_str()?.to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .map(str::to_string)
}

#[test]
fn mount_options_and_clean_unmount() {
    let fx = Fx::new("opts");
    let line = mountinfo_line(&fx.mnt.0).expect("mounted");
    assert!(line.contains(" - fuse.mxfs mxfs-client "), "{line}");
    assert!(line.contains("allow_other"), "{line}");
    assert!(line.contains("max_read=1048576"), "{line}");
    assert!(!line.contains("default_permissions"), "{line}");
    assert!(fx.mount.is_serving());
    let mnt = fx.mnt.0.clone();
    fx.done();
    assert_eq!(mountinfo_line(&mnt), None);
}

/// What changes the filesystem goes to the owner with its origin: one
/// session for the mount, the kernel's request id (distinct, never 0);
/// nothing else has one.
#[test]
fn changing_requests_carry_their_fuse_origin() {
    let fx = Fx::new("origin");
    fs::write(fx.m("f"), b"data").unwrap();
    assert_eq!(fs::read(fx.m("f")).unwrap(), b"data");
    fs::rename(fx.m("f"), fx.m("g")).unwrap();
    fs::create_dir(fx.m("d")).unwrap();
    fs::remove_file(fx.m("g")).unwrap();
    let seen = fx.owner.origins.lock().unwrap().clone();
    let keyed: Vec<(u32, Origin)> = seen.iter().copied().filter(|(_, o)| !o.is_none()).collect();
    let ops: Vec<u32> = keyed.iter().map(|(op, _)| *op).collect();
    assert_eq!(
        ops,
        [
            opcode::CREATE,
            opcode::WRITE,
            opcode::RENAME,
            opcode::MKDIR,
            opcode::UNLINK
        ],
        "{seen:?}"
    );
    let session = keyed[0].1.session;
    let mut uniques: Vec<u64> = keyed.iter().map(|(_, o)| o.unique).collect();
    assert!(keyed
        .iter()
        .all(|(_, o)| o.session == session && o.unique != 0));
    uniques.dedup();
    assert_eq!(uniques.len(), keyed.len(), "{keyed:?}");
    for (op, o) in &seen {
        assert!(
            opcode::changes_state(*op) || o.is_none(),
            "opcode {op} has an origin"
        );
    }
    fx.done();
}

#[test]
fn busy_unmount_keeps_serving() {
    let mut fx = Fx::new("busy");
    let f = File::create(fx.m("f")).unwrap();
    let e = fx.mount.unmount().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
    assert!(fx.mount.is_serving());
    assert!(fx.m("f").exists());
    drop(f);
    fx.done();
}

#[test]
fn files_create_write_read_stat() {
    let fx = Fx::new("files");
    fs::write(fx.m("a"), b"hello").unwrap();
    assert_eq!(fs::read(fx.m("a")).unwrap(), b"hello");
    assert_eq!(fs::read(fx.b("a")).unwrap(), b"hello");
    let (m, b) = (
        fs::metadata(fx.m("a")).unwrap(),
        fs::metadata(fx.b("a")).unwrap(),
    );
    assert_eq!(m.len(), 5);
    assert_eq!(m.ino(), b.ino(), "node ids are the owner's inode numbers");
    assert_eq!((m.mode(), m.uid(), m.nlink()), (b.mode(), b.uid(), 1));
    assert_eq!(m.mtime_nsec(), b.mtime_nsec());
    // exclusive create of an existing name
    let r = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(fx.m("a"));
    assert_eq!(errno_of(r), libc::EEXIST);
    assert_eq!(errno_of(fs::read(fx.m("missing"))), libc::ENOENT);
    // larger than one request (1 MiB each way)
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 123)
        .map(|i| (i % 251) as u8)
        .collect();
    fs::write(fx.m("big"), &big).unwrap();
    assert_eq!(fs::read(fx.m("big")).unwrap(), big);
    assert_eq!(fs::read(fx.b("big")).unwrap(), big);
    // O_TRUNC on open (ATOMIC_O_TRUNC or a setattr, either way)
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(fx.m("big"))
        .unwrap();
    assert_eq!(fs::metadata(fx.b("big")).unwrap().len(), 0);
    // a change on the owner's side is seen at once (no cache)
    fs::write(fx.b("a"), b"changed on the owner").unwrap();
    assert_eq!(fs::read(fx.m("a")).unwrap(), b"changed on the owner");
    assert_eq!(fs::metadata(fx.m("a")).unwrap().len(), 20);
    fs::remove_file(fx.b("a")).unwrap();
    assert!(!fx.m("a").exists());
    fx.done();
}

#[test]
fn directories_readdir_rename_unlink_rmdir() {
    let fx = Fx::new("dirs");
    fs::create_dir(fx.m("d")).unwrap();
    fs::create_dir(fx.m("e")).unwrap();
    for i in 0..300 {
        // more entries than one readdir reply holds
        fs::write(fx.m(&format!("d/file-with-a-longish-name-{i:04}")), b"x").unwrap();
    }
    assert!(fs::metadata(fx.b("d")).unwrap().is_dir());
    let mut names: Vec<String> = fs::read_dir(fx.m("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 300);
    assert_eq!(names[0], "file-with-a-longish-name-0000");
    assert_eq!(names[299], "file-with-a-longish-name-0299");
    {
        // (a DirEntry keeps its directory open)
        let e = fs::read_dir(fx.m("d")).unwrap().next().unwrap().unwrap();
        assert!(e.file_type().unwrap().is_file(), "d_type passes");
        assert_eq!(e.ino(), fs::metadata(e.path()).unwrap().ino());
    }
    fs::rename(fx.m("d/file-with-a-longish-name-0000"), fx.m("e/moved")).unwrap();
    assert!(fx.b("e/moved").exists());
    assert!(!fx.b("d/file-with-a-longish-name-0000").exists());
    assert_eq!(errno_of(fs::remove_dir(fx.m("d"))), libc::ENOTEMPTY);
    fs::remove_file(fx.m("e/moved")).unwrap();
    fs::remove_dir(fx.m("e")).unwrap();
    assert!(!fx.b("e").exists());
    // rename over an existing directory entry, and RENAME_NOREPLACE
    fs::write(fx.m("x"), b"1").unwrap();
    fs::write(fx.m("y"), b"2").unwrap();
    let (x, y) = (cpath(&fx.m("x")), cpath(&fx.m("y")));
    // SAFETY: valid paths; AT_FDCWD with absolute paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            x.as_ptr(),
            libc::AT_FDCWD,
            y.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!((rc, last_errno()), (-1, libc::EEXIST));
    fs::rename(fx.m("x"), fx.m("y")).unwrap();
    assert_eq!(fs::read(fx.b("y")).unwrap(), b"1");
    fx.done();
}

#[test]
fn symlinks_and_hard_links() {
    let fx = Fx::new("links");
    fs::write(fx.m("t"), b"target").unwrap();
    std::os::unix::fs::symlink("t", fx.m("s")).unwrap();
    assert_eq!(fs::read_link(fx.m("s")).unwrap(), Path::new("t"));
    assert_eq!(fs::read_link(fx.b("s")).unwrap(), Path::new("t"));
    assert_eq!(fs::read(fx.m("s")).unwrap(), b"target", "followed");
    assert!(fs::symlink_metadata(fx.m("s")).unwrap().is_symlink());
    fs::hard_link(fx.m("t"), fx.m("h")).unwrap();
    let (t, h) = (
        fs::metadata(fx.m("t")).unwrap(),
        fs::metadata(fx.m("h")).unwrap(),
    );
    assert_eq!((t.ino(), t.nlink(), h.nlink()), (h.ino(), 2, 2));
    assert_eq!(fs::metadata(fx.b("h")).unwrap().ino(), t.ino());
    fs::remove_file(fx.m("t")).unwrap();
    assert_eq!(fs::metadata(fx.m("h")).unwrap().nlink(), 1);
    fx.done();
}

#[test]
fn chmod_chown_truncate_utimes() {
    let fx = Fx::new("attrs");
    fs::write(fx.m("f"), b"0123456789").unwrap();
    fs::set_permissions(fx.m("f"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(fx.b("f")).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::chown(fx.m("f"), Some(1000), Some(1001)).unwrap();
    let b = fs::metadata(fx.b("f")).unwrap();
    assert_eq!((b.uid(), b.gid()), (1000, 1001));
    let m = fs::metadata(fx.m("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1001));
    // truncate by path and through an open file
    let f = OpenOptions::new().write(true).open(fx.m("f")).unwrap();
    f.set_len(4).unwrap();
    assert_eq!(fs::metadata(fx.b("f")).unwrap().len(), 4);
    drop(f);
    let p = cpath(&fx.m("f"));
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::truncate(p.as_ptr(), 100) }, 0);
    assert_eq!(fs::metadata(fx.b("f")).unwrap().len(), 100);
    // utimes: a given time and "now"
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 5,
        },
        libc::timespec {
            tv_sec: 1_234_567_890,
            tv_nsec: 123_456_789,
        },
    ];
    // SAFETY: valid path and array of two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) },
        0
    );
    let b = fs::metadata(fx.b("f")).unwrap();
    assert_eq!((b.atime(), b.atime_nsec()), (1_000_000_000, 5));
    assert_eq!((b.mtime(), b.mtime_nsec()), (1_234_567_890, 123_456_789));
    let m = fs::metadata(fx.m("f")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 123_456_789));
    // SAFETY: valid path; a null times pointer means "now".
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), std::ptr::null(), 0) },
        0
    );
    assert!(fs::metadata(fx.b("f")).unwrap().mtime() > 1_234_567_890);
    fx.done();
}

#[test]
fn xattrs() {
    let fx = Fx::new("xattr");
    fs::write(fx.m("f"), b"").unwrap();
    let (m, b) = (cpath(&fx.m("f")), cpath(&fx.b("f")));
    let name = c"user.mxfs";
    // SAFETY (all calls below): valid NUL-terminated paths and names, and
    // buffers with their true lengths.
    unsafe {
        let v = b"value";
        assert_eq!(
            libc::setxattr(m.as_ptr(), name.as_ptr(), v.as_ptr().cast(), v.len(), 0),
            0,
            "{}",
            last_errno()
        );
        let mut buf = [0u8; 64];
        let n = libc::getxattr(
            b.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        );
        assert_eq!(&buf[..n as usize], v, "on the owner");
        let n = libc::getxattr(m.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0);
        assert_eq!(n, 5, "size query");
        let n = libc::getxattr(
            m.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        );
        assert_eq!(&buf[..n as usize], v);
        let n = libc::getxattr(m.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 2);
        assert_eq!((n, last_errno()), (-1, libc::ERANGE));
        let n = libc::listxattr(m.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        assert_eq!(&buf[..n as usize], b"user.mxfs\0");
        // XATTR_CREATE on an existing name
        let rc = libc::setxattr(
            m.as_ptr(),
            name.as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            libc::XATTR_CREATE,
        );
        assert_eq!((rc, last_errno()), (-1, libc::EEXIST));
        assert_eq!(libc::removexattr(m.as_ptr(), name.as_ptr()), 0);
        let n = libc::getxattr(
            b.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        );
        assert_eq!((n, last_errno()), (-1, libc::ENODATA));
        let n = libc::getxattr(
            m.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        );
        assert_eq!((n, last_errno()), (-1, libc::ENODATA));
    }
    fx.done();
}

#[test]
fn append_from_two_descriptors() {
    let fx = Fx::new("append");
    let open = || {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(fx.m("log"))
            .unwrap()
    };
    let (mut a, mut b) = (open(), open());
    for i in 0..20 {
        let w = if i % 2 == 0 { &mut a } else { &mut b };
        w.write_all(format!("line {i:02}\n").as_bytes()).unwrap();
    }
    drop((a, b));
    let want: String = (0..20).map(|i| format!("line {i:02}\n")).collect();
    assert_eq!(fs::read_to_string(fx.b("log")).unwrap(), want);
    assert_eq!(fs::read_to_string(fx.m("log")).unwrap(), want);
    fx.done();
}

#[test]
fn statfs_is_the_owners() {
    let fx = Fx::new("statfs");
    let stat = |p: &Path| {
        let c = cpath(p);
        // SAFETY: zeroed statvfs is a valid out buffer; valid path.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        s
    };
    let (m, b) = (stat(&fx.mnt.0), stat(&fx.back.0));
    assert_eq!(
        (m.f_blocks, m.f_bsize, m.f_files),
        (b.f_blocks, b.f_bsize, b.f_files)
    );
    assert_eq!(m.f_namemax, b.f_namemax);
    fx.done();
}

#[test]
fn seek_data_hole_and_fallocate() {
    let fx = Fx::new("seek");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.m("sparse"))
        .unwrap();
    f.write_all(&[1u8; 4096]).unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(&[2u8; 4096]).unwrap();
    let back = File::open(fx.b("sparse")).unwrap();
    let (fd, bfd) = (f.as_raw_fd(), back.as_raw_fd());
    // The owner's filesystem decides what a hole is (ext4 and XFS count
    // unwritten extents as holes): the mount must answer as the owner.
    let both = |off: i64, whence: i32| {
        // SAFETY: lseek on descriptors we own.
        let m = unsafe { libc::lseek(fd, off, whence) };
        let me = last_errno();
        // SAFETY: as above.
        let b = unsafe { libc::lseek(bfd, off, whence) };
        let be = last_errno();
        assert_eq!(
            (m, if m < 0 { me } else { 0 }),
            (b, if b < 0 { be } else { 0 })
        );
        m
    };
    assert_eq!(both(4096, libc::SEEK_DATA), 1 << 20);
    assert_eq!(both(0, libc::SEEK_HOLE), 4096);
    assert_eq!(both(0, libc::SEEK_END), (1 << 20) + 4096);
    assert_eq!(both((1 << 20) + 4096, libc::SEEK_DATA), -1);
    // SAFETY: fallocate on a descriptor we own.
    unsafe {
        // fill the hole (unwritten blocks), then punch one
        assert_eq!(libc::fallocate(fd, 0, 4096, (1 << 20) - 4096), 0);
        let blocks = fs::metadata(fx.b("sparse")).unwrap().blocks();
        assert!(blocks >= 2 * 1024, "{blocks} blocks after fallocate");
        both(0, libc::SEEK_HOLE);
        both(4096, libc::SEEK_DATA);
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        assert_eq!(libc::fallocate(fd, punch, 0, 4096), 0);
        assert_eq!(both(0, libc::SEEK_DATA), 1 << 20);
        // beyond the size with KEEP_SIZE: size unchanged
        assert_eq!(
            libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 4 << 20, 4096),
            0
        );
    }
    assert!(fs::metadata(fx.b("sparse")).unwrap().blocks() > 2 * 1024);
    assert_eq!(
        fs::metadata(fx.m("sparse")).unwrap().len(),
        (1 << 20) + 4096
    );
    let mut data = vec![0u8; 4096];
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.read_exact(&mut data).unwrap();
    assert_eq!(data, vec![2u8; 4096]);
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_exact(&mut data).unwrap();
    assert_eq!(data, vec![0u8; 4096], "punched");
    drop((f, back));
    fx.done();
}

#[test]
fn copy_file_range_between_files() {
    let fx = Fx::new("copy");
    fs::write(fx.m("src"), b"0123456789").unwrap();
    let src = File::open(fx.m("src")).unwrap();
    let dst = File::create(fx.m("dst")).unwrap();
    let (mut off_in, mut off_out): (i64, i64) = (2, 0);
    // SAFETY: descriptors we own, offsets as valid pointers.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            5,
            0,
        )
    };
    assert_eq!(n, 5, "{}", last_errno());
    drop((src, dst));
    assert_eq!(fs::read(fx.b("dst")).unwrap(), b"23456");
    fx.done();
}

/// The module's private requests, as it makes them: extended-attribute
/// calls on the FUSE mount (here by root on the mount directly, which
/// users cannot reach: `/run/mxfs` is root's alone).
#[test]
fn private_requests_through_the_mount() {
    let fx = Fx::new("private");
    let path = cpath(&fx.m("f"));
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.m("f"))
        .unwrap();
    f.write_all(&[1u8; 4096]).unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(&[2u8; 4096]).unwrap();
    let on_tmpfs = {
        // SAFETY: statfs is plain data, filled by the call below.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid statfs to fill.
        assert_eq!(
            unsafe { libc::statfs(cpath(&fx.back.0).as_ptr(), &mut st) },
            0
        );
        // their types differ between targets
        #[allow(clippy::unnecessary_cast)]
        let tmpfs = st.f_type as i64 == libc::TMPFS_MAGIC as i64;
        tmpfs
    };
    let get = |name: &str, buf: &mut [u8]| -> Result<usize, i32> {
        let name = CString::new(name).unwrap();
        // SAFETY: NUL-terminated strings; buf is valid for its length.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            Err(last_errno())
        } else {
            Ok(n as usize)
        }
    };
    let set = |name: &str, value: &[u8]| -> Result<(), i32> {
        let name = CString::new(name).unwrap();
        // SAFETY: NUL-terminated strings; value is valid for its length.
        let r = unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r < 0 {
            Err(last_errno())
        } else {
            Ok(())
        }
    };

    // fiemap: 32-byte extents covering what was written
    let mut buf = vec![0u8; 4096];
    match get("mxfs.fiemap.0.18446744073709551615.1", &mut buf) {
        Ok(n) => {
            assert!(n > 0 && n % 32 == 0, "{n}");
            let x: Vec<(u64, u64)> = buf[..n]
                .chunks(32)
                .map(|e| {
                    let at = |i: usize| u64::from_ne_bytes(e[i..i + 8].try_into().unwrap());
                    (at(0), at(16))
                })
                .collect();
            for from in [0u64, 1 << 20] {
                assert!(
                    x.iter()
                        .any(|&(l, len)| l <= from && from + 4096 <= l + len),
                    "{from} not mapped: {x:?}"
                );
            }
        }
        Err(libc::EOPNOTSUPP) if on_tmpfs => {}
        r => panic!("fiemap: {r:?}"),
    }
    assert_eq!(get("mxfs.fiemap.0.1", &mut buf), Err(libc::EINVAL));
    assert_eq!(get("mxfs.other", &mut buf), Err(libc::EOPNOTSUPP));

    // fallocate in a mode FUSE does not carry: the hole collapses
    let value = [
        &4096u64.to_ne_bytes()[..],
        &((1u64 << 20) - 4096).to_ne_bytes(),
        &(libc::FALLOC_FL_COLLAPSE_RANGE as u32).to_ne_bytes(),
        &0u32.to_ne_bytes(),
    ]
    .concat();
    match set("mxfs.fallocate", &value) {
        Ok(()) => {
            assert_eq!(fs::metadata(fx.b("f")).unwrap().len(), 8192);
            let back = fs::read(fx.b("f")).unwrap();
            assert_eq!(back, [[1u8; 4096], [2u8; 4096]].concat());
        }
        Err(libc::EOPNOTSUPP) if on_tmpfs => {}
        r => panic!("fallocate: {r:?}"),
    }
    assert_eq!(set("mxfs.fallocate", &value[..23]), Err(libc::EINVAL));
    assert_eq!(set("mxfs.other", &value), Err(libc::EOPNOTSUPP));

    // birth time: the owner's statx btime of the file
    let mut bt = [0u8; 16];
    match get("mxfs.btime", &mut bt) {
        Ok(16) => {
            let sec = i64::from_ne_bytes(bt[0..8].try_into().unwrap());
            let nsec = u32::from_ne_bytes(bt[8..12].try_into().unwrap());
            let mtime = fs::metadata(fx.b("f")).unwrap().mtime();
            assert!(
                sec > 0 && sec <= mtime && nsec < 1_000_000_000,
                "btime {sec}.{nsec}, mtime {mtime}"
            );
        }
        Err(libc::ENODATA) if on_tmpfs => {}
        r => panic!("btime: {r:?}"),
    }
    assert_eq!(get("mxfs.btime", &mut bt[..15]), Err(libc::ERANGE));
    drop(f);
    fx.done();
}

/// Runs `f` on a thread of its own as fsuid/fsgid `id` with supplementary
/// groups `groups` (raw syscalls: that thread only), as a user process
/// would reach the mount.
fn as_user<T: Send>(id: u32, groups: &[u32], f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a valid gid array with its length; setfsgid and
            // setfsuid take plain ids; all affect this thread only, and
            // it ends with the scope.
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
                    0
                );
                libc::syscall(libc::SYS_setfsgid, id);
                libc::syscall(libc::SYS_setfsuid, id);
            }
            f()
        })
        .join()
        .unwrap()
    })
}

fn current_umask() -> u32 {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line[6..].trim(), 8).unwrap()
}

#[test]
fn the_owner_checks_permissions_as_the_caller_with_groups() {
    let fx = Fx::new("perm");
    fs::create_dir(fx.b("shared")).unwrap();
    std::os::unix::fs::chown(fx.b("shared"), Some(0), Some(4242)).unwrap();
    fs::set_permissions(fx.b("shared"), fs::Permissions::from_mode(0o770)).unwrap();
    fs::create_dir(fx.b("private")).unwrap();
    fs::set_permissions(fx.b("private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(fx.b("private-file"), b"secret").unwrap();
    fs::set_permissions(fx.b("private-file"), fs::Permissions::from_mode(0o600)).unwrap();

    let (ok, denied_dir, denied_read, denied_access, denied_chown) = as_user(1000, &[4242], || {
        let ok = fs::write(fx.m("shared/mine"), b"x").is_ok();
        let denied_dir = errno_of(fs::write(fx.m("private/x"), b"x"));
        let denied_read = errno_of(fs::read(fx.m("private-file")));
        let p = cpath(&fx.m("private-file"));
        // AT_EACCESS: as the fs ids (plain access() takes the real ids,
        // root's here).
        // SAFETY: valid path.
        let denied_access =
            unsafe { libc::faccessat(libc::AT_FDCWD, p.as_ptr(), libc::R_OK, libc::AT_EACCESS) }
                == -1;
        let denied_chown = errno_of(std::os::unix::fs::chown(fx.m("shared/mine"), Some(0), None));
        (ok, denied_dir, denied_read, denied_access, denied_chown)
    });
    assert!(ok, "the supplementary group 4242 opens 'shared'");
    assert_eq!(denied_dir, libc::EACCES);
    assert_eq!(denied_read, libc::EACCES);
    assert!(denied_access);
    assert_eq!(denied_chown, libc::EPERM);
    let b = fs::metadata(fx.b("shared/mine")).unwrap();
    assert_eq!((b.uid(), b.gid()), (1000, 1000));
    assert_eq!(
        b.mode() & 0o777,
        0o666 & !current_umask(),
        "umask applied once"
    );
    // without the group: refused
    let denied = as_user(1000, &[], || {
        errno_of(fs::write(fx.m("shared/other"), b"x"))
    });
    assert_eq!(denied, libc::EACCES);
    fx.done();
}

#[test]
fn open_files_survive_a_new_owner() {
    let fx = Fx::new("reopen");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.m("f"))
        .unwrap();
    f.write_all(b"before ").unwrap();
    let mut d = fs::read_dir(fx.m("")).unwrap();
    fx.owner.new_owner();
    // write, read, fsync through descriptors opened on the old owner
    f.write_all(b"after").unwrap();
    f.sync_all().unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "before after", "not truncated again by the reopen");
    assert_eq!(fs::read(fx.b("f")).unwrap(), b"before after");
    assert!(d.next().is_some(), "a directory listing goes on too");
    drop((f, d));
    fx.done();
}

#[test]
fn a_write_by_another_user_clears_setuid_on_the_owner() {
    let fx = Fx::new("killpriv");
    fs::write(fx.b("suid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(fx.b("suid"), fs::Permissions::from_mode(0o4777)).unwrap();
    // HANDLE_KILLPRIV: the owner's kernel clears the bit (the caller has
    // no CAP_FSETID there); the client's must not send a chmod of its own,
    // which a non-owner would be refused.
    let r = as_user(1000, &[], || {
        let mut f = OpenOptions::new().write(true).open(fx.m("suid"))?;
        f.write_all(b"echo hi\n")
    });
    r.unwrap();
    assert_eq!(fs::metadata(fx.b("suid")).unwrap().mode() & 0o7777, 0o777);
    // truncate by a non-owner too
    fs::set_permissions(fx.b("suid"), fs::Permissions::from_mode(0o4777)).unwrap();
    let r = as_user(1000, &[], || {
        OpenOptions::new()
            .write(true)
            .open(fx.m("suid"))?
            .set_len(1)
    });
    r.unwrap();
    let b = fs::metadata(fx.b("suid")).unwrap();
    assert_eq!((b.len(), b.mode() & 0o7777), (1, 0o777));
    fx.done();
}

#[test]
fn a_default_acl_wins_over_the_umask() {
    let fx = Fx::new("acl");
    fs::create_dir(fx.b("d")).unwrap();
    // system.posix_acl_default = user::rwx group::rwx other::rwx (version
    // 2 header, then tag, perm, id per entry, little endian)
    let mut acl = 2u32.to_le_bytes().to_vec();
    for tag in [0x01u16, 0x04, 0x20] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&7u16.to_le_bytes());
        acl.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    let d = cpath(&fx.b("d"));
    // SAFETY: valid path, name and buffer with its length.
    let rc = unsafe {
        libc::setxattr(
            d.as_ptr(),
            c"system.posix_acl_default".as_ptr(),
            acl.as_ptr().cast(),
            acl.len(),
            0,
        )
    };
    if rc != 0 {
        eprintln!("no POSIX ACLs on the temp dir ({}): skipped", last_errno());
        return fx.done();
    }
    fs::write(fx.m("d/f"), b"").unwrap();
    // DONT_MASK: the client's kernel leaves the mode alone and the owner's
    // applies the umask only where no default ACL is.
    assert_eq!(fs::metadata(fx.b("d/f")).unwrap().mode() & 0o777, 0o666);
    fs::write(fx.m("g"), b"").unwrap();
    assert_eq!(
        fs::metadata(fx.b("g")).unwrap().mode() & 0o777,
        0o666 & !current_umask()
    );
    fx.done();
}

// ---- a daemon killed with -9, and the next one on its connection ----

/// The environment variable that makes [`resume_child`] run: the owner's
/// directory and the mountpoint, separated by a newline.
const RESUME_CHILD: &str = "MXFS_TEST_RESUME_CHILD";

/// An owner that takes its time over writes of data starting with
/// "slow", so that one is in flight when the daemon is killed.
struct SlowWrites(Arc<Loopback>);

impl Forward for SlowWrites {
    fn call(&self, req: FileRequest) -> FileReply {
        if let crate::wire::fileop::Op::Write { data, .. } = &req.op {
            if data.starts_with(b"slow") {
                std::thread::sleep(std::time::Duration::from_secs(30));
            }
        }
        self.0.call(req)
    }
}

/// Not a test of its own: the "daemon" that [`a_killed_daemon_is_replaced_on_its_connection`]
/// runs in a process of its own and kills.  It mounts, prints the
/// descriptors systemd would keep, and serves until killed.
#[test]
#[ignore]
fn resume_child() {
    let Ok(spec) = std::env::var(RESUME_CHILD) else {
        return;
    };
    let (back, mnt) = spec.split_once('\n').unwrap();
    let (owner, root) = Loopback::open(Path::new(back));
    let mount = mount(
        Path::new(mnt),
        root,
        SlowWrites(owner),
        &MountConfig::default(),
    )
    .unwrap();
    let (dev, state) = mount.kept();
    println!("KEPT {} {}", dev.as_raw_fd(), state.as_raw_fd());
    std::thread::sleep(std::time::Duration::from_secs(120));
}

/// A copy of descriptor `fd` of process `pid` (as systemd's fd store holds
/// the daemon's).
fn take_fd(pid: u32, fd: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system calls; the results are checked, and the fd
    // pidfd_getfd returns is new and ours.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) as i32;
        assert!(pidfd >= 0, "pidfd_open: {}", last_errno());
        let got = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
        let e = last_errno();
        libc::close(pidfd);
        assert!(got >= 0, "pidfd_getfd: {e}");
        std::os::fd::OwnedFd::from_raw_fd(got)
    }
}

/// Abort FUSE connection `n` (fusectl), failing every request it has.
fn abort_connection(n: u32) {
    let dir = Path::new("/sys/fs/fuse/connections");
    if !dir.join(n.to_string()).exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(dir)
            .status();
    }
    let _ = fs::write(dir.join(format!("{n}/abort")), b"1");
}

/// Start [`resume_child`] serving `mnt` for the owner directory `back`;
/// returns it and copies of the descriptors systemd would keep.
fn start_child(back: &TempDir, mnt: &TempDir) -> (std::process::Child, super::Resume) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fuse_client::tests_mount::resume_child",
            "--ignored",
            "--nocapture",
        ])
        .env(
            RESUME_CHILD,
            format!("{}\n{}", back.0.display(), mnt.0.display()),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (dev_fd, state_fd) = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child ended");
        if let Some(rest) = line.strip_prefix("KEPT ") {
            let mut it = rest.split_whitespace().map(|s| s.parse::<i32>().unwrap());
            break (it.next().unwrap(), it.next().unwrap());
        }
    };
    let kept = super::Resume {
        dev: take_fd(child.id(), dev_fd),
        state: take_fd(child.id(), state_fd),
    };
    (child, kept)
}

/// kill -9 of the serving daemon: a file opened before stays usable, a
/// write the dead daemon had read but not answered completes, and the
/// nodes it knew are known to the next one, which serves the same
/// connection (the mount never goes away).
#[test]
fn a_killed_daemon_is_replaced_on_its_connection() {
    let back = TempDir::new("resume-back");
    let mnt = TempDir::new("resume-mnt");
    let (mut child, kept) = start_child(&back, &mnt);

    fs::create_dir(mnt.0.join("d")).unwrap();
    let mut before = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(mnt.0.join("d/f"))
        .unwrap();
    before.write_all(b"before ").unwrap();
    // A write the child reads and holds: in flight at the kill.
    let slow_path = mnt.0.join("d/slow");
    let slow = std::thread::spawn(move || fs::write(slow_path, b"slow write"));
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let conn = libc::minor(fs::metadata(&mnt.0).unwrap().dev());
    child.kill().unwrap();
    child.wait().unwrap();

    // The next daemon: a new owner service too (the child's died with it).
    let (owner, root) = Loopback::open(&back.0);
    let mut resumed = super::resume(&mnt.0, root, owner, &MountConfig::default(), kept).unwrap();
    // Bounded: unanswered, the write would wait for ever, and this test
    // process could not even exit (it holds the connection), so the
    // connection is aborted first.
    let t = std::time::Instant::now();
    while !slow.is_finished() {
        if t.elapsed() > std::time::Duration::from_secs(20) {
            abort_connection(conn);
            panic!("the write in flight at the kill was never answered");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    slow.join()
        .unwrap()
        .expect("the write in flight at the kill");
    assert_eq!(fs::read(back.0.join("d/slow")).unwrap(), b"slow write");
    // the descriptor opened before the kill goes on (reopened on the owner)
    before.write_all(b"after").unwrap();
    assert_eq!(before.metadata().unwrap().len(), 12);
    drop(before);
    assert_eq!(fs::read(back.0.join("d/f")).unwrap(), b"before after");
    assert_eq!(fs::read_dir(mnt.0.join("d")).unwrap().count(), 2);
    resumed.unmount().unwrap();
    assert!(!resumed.is_serving());
}

extern "C" fn no_op(_: libc::c_int) {}

/// A write the killed daemon read but did not keep (as when the kill falls
/// between the two system calls): the next daemon cannot answer it, but a
/// signal to its caller fails it with EINTR (the kernel's interrupt for a
/// request this daemon never saw), and the caller goes on.
#[test]
fn a_request_the_killed_daemon_never_kept_fails_on_a_signal() {
    use std::os::unix::thread::JoinHandleExt;
    let back = TempDir::new("lost-back");
    let mnt = TempDir::new("lost-mnt");
    let (mut child, kept) = start_child(&back, &mnt);
    // Before the write: this stat is a request of its own, and one
    // answered just before the kill may still count as unanswered.
    let conn = libc::minor(fs::metadata(&mnt.0).unwrap().dev());
    // SAFETY: installs a handler that does nothing, without SA_RESTART,
    // for SIGUSR1 (which nothing else in the tests uses).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = no_op as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let path = mnt.0.join("slow");
    let writer = std::thread::spawn(move || {
        let mut f = File::create(path).unwrap();
        // one write(2): its EINTR is the caller's to see
        f.write(b"slow write")
    });
    std::thread::sleep(std::time::Duration::from_millis(1000));
    child.kill().unwrap();
    child.wait().unwrap();
    // The state as if the kill had come before the write was kept.
    let (keep, left) = super::keep::Keep::open(kept.state).unwrap();
    assert_eq!(left.requests.len(), 1, "the child kept its write");
    keep.request_answered(left.requests[0].0);
    let kept = super::Resume {
        dev: kept.dev,
        state: keep.fd().try_clone_to_owned().unwrap(),
    };
    drop(keep);

    let (owner, root) = Loopback::open(&back.0);
    let mut resumed = super::resume(&mnt.0, root, owner, &MountConfig::default(), kept).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !writer.is_finished(),
        "nobody could have answered the write"
    );
    // SAFETY: the writer thread is alive (checked just above).
    unsafe { libc::pthread_kill(writer.as_pthread_t(), libc::SIGUSR1) };
    let t = std::time::Instant::now();
    while !writer.is_finished() {
        if t.elapsed() > std::time::Duration::from_secs(20) {
            abort_connection(conn);
            panic!("the interrupted write was never failed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let e = writer.join().unwrap().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINTR), "{e}");
    // the mount goes on
    fs::write(mnt.0.join("after"), b"ok").unwrap();
    assert_eq!(fs::read(back.0.join("after")).unwrap(), b"ok");
    resumed.unmount().unwrap();
}

/// O_TMPFILE through the kernel's FUSE_TMPFILE (6.1+), which the relay
/// gives fuser as a CREATE of "/": a nameless file, written, then linked
/// into the tree (linkat through /proc/self/fd); with O_EXCL it can
/// never be linked.
#[test]
fn tmpfile_through_the_mount() {
    let fx = Fx::new("tmpfile");
    let dir = cpath(&fx.m(""));
    let open_tmp = |extra: libc::c_int| {
        // SAFETY: a NUL-terminated path; the mode is a plain integer.
        let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | extra, 0o640) };
        assert!(fd >= 0, "open(O_TMPFILE): errno {}", last_errno());
        // SAFETY: a fresh descriptor nobody else owns.
        unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    };
    let link = |f: &File, name: &str| -> Result<(), i32> {
        let from = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
        let to = cpath(&fx.m(name));
        // SAFETY: NUL-terminated paths.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if r < 0 {
            Err(last_errno())
        } else {
            Ok(())
        }
    };

    let mut f = open_tmp(0);
    f.write_all(b"nameless until linked").unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    assert!(fs::read_dir(fx.b("")).unwrap().next().is_none());
    link(&f, "named").unwrap();
    assert_eq!(fs::read(fx.b("named")).unwrap(), b"nameless until linked");
    assert_eq!(f.metadata().unwrap().mode() & 0o7777, 0o640);
    drop(f);

    let f = open_tmp(libc::O_EXCL);
    assert_eq!(link(&f, "never"), Err(libc::ENOENT));
    assert!(!fx.b("never").exists());
    drop(f);
    fx.done();
}

/// Times before 1970 with nanoseconds survive the trip through the
/// kernel, fuser and the owner (fuser 0.18 misreads the kernel's negative
/// times: `convert::timespec_from_kernel`).
#[test]
fn pre_1970_times_through_the_mount() {
    let fx = Fx::new("pre1970");
    File::create(fx.m("old")).unwrap();
    let path = cpath(&fx.m("old"));
    for (sec, nsec) in [(-1000i64, 5i64), (-86400, 0), (-1, 999_999_999), (1, 7)] {
        let times = [
            libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            },
            libc::timespec {
                tv_sec: sec - 1,
                tv_nsec: nsec,
            },
        ];
        // SAFETY: a NUL-terminated path and two valid timespecs.
        let r = unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) };
        assert_eq!(r, 0, "utimensat: errno {}", last_errno());
        for st in [
            fs::metadata(fx.b("old")).unwrap(),
            fs::metadata(fx.m("old")).unwrap(),
        ] {
            assert_eq!(
                (st.atime(), st.atime_nsec(), st.mtime(), st.mtime_nsec()),
                (sec, nsec, sec - 1, nsec),
                "set {sec}.{nsec}"
            );
        }
    }
    fx.done();
}
