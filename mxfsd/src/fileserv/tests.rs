//! The file service against a temporary directory of the host (ext4 or
//! any filesystem with file handles).  The tests run as root, as the
//! daemon does, and act as other users through request credentials.

use super::*;
use crate::test_support::TempDir;
use crate::wire::fileop::opcode;
use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

fn root_creds() -> Creds {
    Creds {
        uid: 0,
        gid: 0,
        pid: 1,
        groups: vec![],
    }
}

fn user(uid: u32, groups: &[u32]) -> Creds {
    Creds {
        uid,
        gid: uid,
        pid: 2,
        groups: groups.to_vec(),
    }
}

struct Fx {
    dir: Arc<TempDir>,
    fs: FileService,
}

impl Fx {
    fn new(tag: &str) -> Fx {
        Fx::on(Arc::new(TempDir::new(tag)))
    }
    /// A new service (a new owner) on the same directory.
    fn on(dir: Arc<TempDir>) -> Fx {
        let fs = FileService::open(&dir.0).unwrap();
        Fx { dir, fs }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.0.join(rel)
    }
    fn root(&self) -> Handle {
        self.fs.root_handle().clone()
    }
    fn call_as(&self, creds: Creds, op: Op) -> FileReply {
        self.fs.handle(FileRequest { creds, op })
    }
    fn call(&self, op: Op) -> FileReply {
        self.call_as(root_creds(), op)
    }
    fn ok(&self, op: Op) {
        let r = self.call(op.clone());
        assert_eq!(r, FileReply::Ok, "{op:?}");
    }
    fn errno(&self, creds: Creds, op: Op) -> i32 {
        match self.call_as(creds, op.clone()) {
            FileReply::Errno(e) => e,
            r => panic!("{op:?}: expected an error, got {r:?}"),
        }
    }
    fn entry(&self, op: Op) -> (Handle, Attr) {
        match self.call(op.clone()) {
            FileReply::Entry { handle, attr } => (handle, attr),
            r => panic!("{op:?}: {r:?}"),
        }
    }
    fn lookup(&self, parent: &Handle, name: &str) -> (Handle, Attr) {
        self.entry(Op::Lookup {
            parent: parent.clone(),
            name: name.into(),
        })
    }
    fn lookup_err(&self, parent: &Handle, name: &str) -> i32 {
        self.errno(
            root_creds(),
            Op::Lookup {
                parent: parent.clone(),
                name: name.into(),
            },
        )
    }
    fn mkdir(&self, parent: &Handle, name: &str, mode: u32) -> (Handle, Attr) {
        self.entry(Op::Mkdir {
            parent: parent.clone(),
            name: name.into(),
            mode,
            umask: 0,
        })
    }
    fn create_as(&self, creds: Creds, parent: &Handle, name: &str, flags: i32) -> FileReply {
        self.call_as(
            creds,
            Op::Create {
                parent: parent.clone(),
                name: name.into(),
                mode: 0o666,
                umask: 0o022,
                flags,
            },
        )
    }
    fn create(&self, parent: &Handle, name: &str, flags: i32) -> (Handle, Attr, u64) {
        match self.create_as(root_creds(), parent, name, flags) {
            FileReply::Created { handle, attr, fh } => (handle, attr, fh),
            r => panic!("create {name}: {r:?}"),
        }
    }
    fn open(&self, h: &Handle, flags: i32) -> u64 {
        match self.call(Op::Open {
            handle: h.clone(),
            flags,
        }) {
            FileReply::Opened { fh } => fh,
            r => panic!("open: {r:?}"),
        }
    }
    fn write(&self, fh: u64, offset: u64, data: &[u8]) -> u32 {
        match self.call(Op::Write {
            fh,
            offset,
            data: data.to_vec(),
            write_flags: 0,
        }) {
            FileReply::Written(n) => n,
            r => panic!("write: {r:?}"),
        }
    }
    fn read(&self, fh: u64, offset: u64, size: u32) -> Vec<u8> {
        match self.call(Op::Read { fh, offset, size }) {
            FileReply::Data(d) => d,
            r => panic!("read: {r:?}"),
        }
    }
    fn getattr(&self, h: &Handle) -> Attr {
        match self.call(Op::Getattr {
            handle: h.clone(),
            fh: None,
        }) {
            FileReply::Attr(a) => a,
            r => panic!("getattr: {r:?}"),
        }
    }
    fn release(&self, fh: u64) {
        self.ok(Op::Release {
            fh,
            flags: 0,
            flush: true,
        });
    }
    fn opendir(&self, h: &Handle) -> u64 {
        match self.call(Op::Opendir {
            handle: h.clone(),
            flags: 0,
        }) {
            FileReply::Opened { fh } => fh,
            r => panic!("opendir: {r:?}"),
        }
    }
    fn readdir(&self, fh: u64, offset: u64, size: u32) -> Vec<Dirent> {
        match self.call(Op::Readdir { fh, offset, size }) {
            FileReply::Dirents(d) => d,
            r => panic!("readdir: {r:?}"),
        }
    }
    /// Every entry from `cookie` on, in batches of about `size` bytes.
    fn list_from(&self, fh: u64, mut cookie: u64, size: u32) -> Vec<Dirent> {
        let mut all = Vec::new();
        loop {
            let batch = self.readdir(fh, cookie, size);
            let Some(last) = batch.last() else {
                return all;
            };
            cookie = last.next;
            all.extend(batch);
        }
    }
    fn names(&self, dir: &Handle) -> Vec<String> {
        let fh = self.opendir(dir);
        let mut n: Vec<String> = self
            .list_from(fh, 0, 4096)
            .into_iter()
            .map(|d| String::from_utf8(d.name).unwrap())
            .collect();
        self.ok(Op::Releasedir { fh });
        n.sort();
        n
    }
}

fn kind(a: &Attr) -> u32 {
    a.mode & libc::S_IFMT
}

#[test]
fn lookup_getattr_create_write_read_round_trip() {
    let fx = Fx::new("rt");
    let root = fx.root();
    let ra = fx.getattr(&root);
    assert_eq!(kind(&ra), libc::S_IFDIR);
    assert_eq!(ra.ino, std::fs::metadata(&fx.dir.0).unwrap().ino());

    let (h, a, fh) = fx.create(&root, "f", libc::O_RDWR);
    assert_eq!(a.mode, libc::S_IFREG | 0o644, "mode 0666 less umask 022");
    assert_eq!(fx.write(fh, 0, b"hello, "), 7);
    assert_eq!(fx.write(fh, 7, b"world"), 5);
    assert_eq!(fx.read(fh, 0, 100), b"hello, world");
    assert_eq!(fx.read(fh, 7, 3), b"wor");
    assert_eq!(fx.read(fh, 100, 10), b"");
    fx.release(fh);
    assert_eq!(fx.fs.open_count(), 0);

    let (h2, a2) = fx.lookup(&root, "f");
    assert_eq!(h2, h, "lookup gives the handle create gave");
    assert_eq!((a2.ino, a2.size), (a.ino, 12));
    assert_eq!(a2.generation, a.generation);
    assert_eq!(fx.getattr(&h).size, 12);
    assert_eq!(std::fs::read(fx.path("f")).unwrap(), b"hello, world");
    assert_eq!(fx.lookup_err(&root, "missing"), libc::ENOENT);
    // create without O_EXCL opens an existing file; with it, EEXIST
    let (_, _, fh) = fx.create(&root, "f", libc::O_RDONLY);
    fx.release(fh);
    assert_eq!(
        fx.create_as(root_creds(), &root, "f", libc::O_RDWR | libc::O_EXCL),
        FileReply::Errno(libc::EEXIST)
    );
    // lookup of a non-directory's child
    assert_eq!(fx.lookup_err(&h, "x"), libc::ENOTDIR);
}

#[test]
fn handles_stay_valid_on_a_new_service() {
    let first = Fx::new("owner");
    let root = first.root();
    let (sub, _) = first.mkdir(&root, "sub", 0o755);
    let (file, _, fh) = first.create(&sub, "data", libc::O_WRONLY);
    first.write(fh, 0, b"kept across owners");
    first.release(fh);
    let dir = first.dir.clone();
    drop(first);
    // a new owner: new process state, same filesystem
    let fx = Fx::on(dir);
    assert_eq!(fx.root(), root);
    assert_eq!(fx.getattr(&file).size, 18);
    let fh = fx.open(&file, libc::O_RDONLY);
    assert_eq!(fx.read(fh, 0, 64), b"kept across owners");
    fx.release(fh);
    assert_eq!(fx.lookup(&sub, "data").0, file);
    assert_eq!(fx.lookup(&root, "sub").0, sub);
}

#[test]
fn namespace_operations() {
    let fx = Fx::new("ns");
    let root = fx.root();
    let (d, da) = fx.mkdir(&root, "d", 0o750);
    assert_eq!(da.mode, libc::S_IFDIR | 0o750);
    let (f, _, fh) = fx.create(&root, "f", libc::O_WRONLY);
    fx.release(fh);
    let (_, _, fh) = fx.create(&d, "g", libc::O_WRONLY);
    fx.release(fh);
    let rename = |name: &str, np: &Handle, newname: &str, flags: u32| Op::Rename {
        parent: root.clone(),
        name: name.into(),
        newparent: np.clone(),
        newname: newname.into(),
        flags,
    };
    // NOREPLACE refuses an existing target, then moves to a free one
    assert_eq!(
        fx.errno(root_creds(), rename("f", &d, "g", libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    fx.ok(rename("f", &d, "f2", libc::RENAME_NOREPLACE));
    assert_eq!(fx.lookup(&d, "f2").0, f, "a rename keeps the handle");
    assert_eq!(fx.lookup_err(&root, "f"), libc::ENOENT);
    // EXCHANGE swaps two names
    let (_, _, fh) = fx.create(&root, "h", libc::O_WRONLY);
    fx.release(fh);
    let h = fx.lookup(&root, "h").0;
    let g = fx.lookup(&d, "g").0;
    fx.ok(rename("h", &d, "g", libc::RENAME_EXCHANGE));
    assert_eq!(fx.lookup(&root, "h").0, g);
    assert_eq!(fx.lookup(&d, "g").0, h);
    // WHITEOUT leaves a 0:0 character device at the old name
    fx.ok(rename("h", &root, "w", libc::RENAME_WHITEOUT));
    let (_, wa) = fx.lookup(&root, "h");
    assert_eq!((kind(&wa), wa.rdev), (libc::S_IFCHR, 0));
    // plain rename over an existing file
    fx.ok(rename("w", &d, "g", 0));
    assert_eq!(fx.lookup(&d, "g").0, g);

    // link
    let (lh, la) = fx.entry(Op::Link {
        handle: f.clone(),
        newparent: root.clone(),
        newname: "f-link".into(),
    });
    assert_eq!((lh, la.nlink), (f.clone(), 2));
    fx.ok(Op::Unlink {
        parent: d.clone(),
        name: "f2".into(),
    });
    assert_eq!(fx.getattr(&f).nlink, 1);

    // symlink, readlink
    let (s, sa) = fx.entry(Op::Symlink {
        parent: root.clone(),
        name: "s".into(),
        target: "d/g".into(),
    });
    assert_eq!((kind(&sa), sa.size), (libc::S_IFLNK, 3));
    assert_eq!(fx.lookup(&root, "s").0, s, "lookup does not follow");
    assert_eq!(
        fx.call(Op::Readlink { handle: s.clone() }),
        FileReply::Data(b"d/g".to_vec())
    );
    assert_eq!(
        std::fs::read_link(fx.path("s")).unwrap(),
        PathBuf::from("d/g")
    );

    // mknod of a fifo
    let (_, na) = fx.entry(Op::Mknod {
        parent: root.clone(),
        name: "p".into(),
        mode: libc::S_IFIFO | 0o640,
        umask: 0,
        rdev: 0,
    });
    assert_eq!(na.mode, libc::S_IFIFO | 0o640);
    // a fifo is served by the client's kernel, never opened here
    assert_eq!(
        fx.errno(
            root_creds(),
            Op::Open {
                handle: fx.lookup(&root, "p").0,
                flags: libc::O_RDONLY
            }
        ),
        libc::ENXIO
    );

    // rmdir refuses a non-empty directory, unlink a directory
    let rmdir = |p: &Handle, n: &str| Op::Rmdir {
        parent: p.clone(),
        name: n.into(),
    };
    assert_eq!(fx.errno(root_creds(), rmdir(&root, "d")), libc::ENOTEMPTY);
    assert_eq!(
        fx.errno(
            root_creds(),
            Op::Unlink {
                parent: root.clone(),
                name: "d".into()
            }
        ),
        libc::EISDIR
    );
    fx.ok(Op::Unlink {
        parent: d.clone(),
        name: "g".into(),
    });
    fx.ok(rmdir(&root, "d"));
    assert_eq!(fx.lookup_err(&root, "d"), libc::ENOENT);
    assert!(!fx.path("d").exists());
}

#[test]
fn setattr_truncate_chmod_chown_utimens() {
    let fx = Fx::new("setattr");
    let root = fx.root();
    let (h, _, fh) = fx.create(&root, "f", libc::O_RDWR);
    fx.write(fh, 0, b"0123456789");
    let set = |fh: Option<u64>, set: SetAttr| Op::Setattr {
        handle: h.clone(),
        fh,
        set,
    };
    let attr = |r: FileReply| match r {
        FileReply::Attr(a) => a,
        r => panic!("setattr: {r:?}"),
    };
    // truncate by handle (truncate(2)) and by open file (ftruncate(2))
    let a = attr(fx.call(set(
        None,
        SetAttr {
            size: Some(4),
            ..SetAttr::default()
        },
    )));
    assert_eq!(a.size, 4);
    let a = attr(fx.call(set(
        Some(fh),
        SetAttr {
            size: Some(2),
            ..SetAttr::default()
        },
    )));
    assert_eq!(a.size, 2);
    assert_eq!(fx.read(fh, 0, 10), b"01");
    fx.release(fh);

    let a = attr(fx.call(set(
        None,
        SetAttr {
            mode: Some(0o4711),
            ..SetAttr::default()
        },
    )));
    assert_eq!(a.mode, libc::S_IFREG | 0o4711);
    let a = attr(fx.call(set(
        None,
        SetAttr {
            uid: Some(1000),
            gid: Some(1001),
            ..SetAttr::default()
        },
    )));
    assert_eq!((a.uid, a.gid), (1000, 1001));
    let md = std::fs::metadata(fx.path("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1001));

    let t = Timespec {
        sec: 1_000_000_000,
        nsec: 123_456_789,
    };
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let a = attr(fx.call(set(
        None,
        SetAttr {
            atime: Some(TimeSet::At(t)),
            mtime: Some(TimeSet::Now),
            ctime: Some(t), // ignored: Linux cannot set it
            ..SetAttr::default()
        },
    )));
    assert_eq!(a.atime, t);
    assert!(a.mtime.sec >= before && a.mtime.sec <= before + 5, "{a:?}");
    assert!(a.ctime.sec >= before, "ctime is now");

    // the owner (1000) may chmod; another user may not, nor set times
    let as_user = |uid: u32, s: SetAttr| fx.call_as(user(uid, &[]), set(None, s));
    assert!(matches!(
        as_user(
            1000,
            SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            }
        ),
        FileReply::Attr(a) if a.mode == libc::S_IFREG | 0o600
    ));
    assert_eq!(
        as_user(
            1002,
            SetAttr {
                mode: Some(0o777),
                ..SetAttr::default()
            }
        ),
        FileReply::Errno(libc::EPERM)
    );
    assert_eq!(
        as_user(
            1002,
            SetAttr {
                mtime: Some(TimeSet::At(t)),
                ..SetAttr::default()
            }
        ),
        FileReply::Errno(libc::EPERM)
    );
    assert_eq!(
        as_user(
            1002,
            SetAttr {
                size: Some(0),
                ..SetAttr::default()
            }
        ),
        FileReply::Errno(libc::EACCES)
    );
}

#[test]
fn proc_path_calls_on_a_symlink_stay_on_the_symlink() {
    // chmod, xattrs and utimes reach objects through /proc/self/fd/N; a
    // symlink's target (here a file, in real life anything on the owner)
    // must never be what they change.
    let fx = Fx::new("symlink");
    let root = fx.root();
    let (_, _, fh) = fx.create(&root, "target", libc::O_WRONLY);
    fx.release(fh);
    let target = fx.path("target");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (s, _) = fx.entry(Op::Symlink {
        parent: root.clone(),
        name: "s".into(),
        target: target.as_os_str().as_bytes().to_vec(),
    });
    let set = |set: SetAttr| Op::Setattr {
        handle: s.clone(),
        fh: None,
        set,
    };
    assert_eq!(
        fx.call(set(SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        })),
        FileReply::Errno(libc::EOPNOTSUPP)
    );
    let old = Timespec { sec: 1000, nsec: 0 };
    assert!(matches!(
        fx.call(set(SetAttr {
            mtime: Some(TimeSet::At(old)),
            ..SetAttr::default()
        })),
        FileReply::Attr(a) if a.mtime == old
    ));
    fx.ok(Op::Setxattr {
        handle: s.clone(),
        name: "trusted.mxfs-test".into(),
        value: b"on the link".to_vec(),
        flags: 0,
        position: 0,
    });
    let md = std::fs::metadata(&target).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o644);
    assert_ne!(md.mtime(), 1000);
    assert_eq!(
        fx.errno(
            root_creds(),
            Op::Getxattr {
                handle: fx.lookup(&root, "target").0,
                name: "trusted.mxfs-test".into(),
                size: 64,
            }
        ),
        libc::ENODATA
    );
    assert_eq!(
        fx.call(Op::Getxattr {
            handle: s,
            name: "trusted.mxfs-test".into(),
            size: 64,
        }),
        FileReply::Data(b"on the link".to_vec())
    );
}

#[test]
fn user_xattrs() {
    let fx = Fx::new("xattr");
    let root = fx.root();
    let (h, _, fh) = fx.create(&root, "f", libc::O_WRONLY);
    fx.release(fh);
    let setx = |name: &str, value: &[u8], flags: i32| Op::Setxattr {
        handle: h.clone(),
        name: name.into(),
        value: value.to_vec(),
        flags,
        position: 0,
    };
    let getx = |name: &str, size: u32| Op::Getxattr {
        handle: h.clone(),
        name: name.into(),
        size,
    };
    fx.ok(setx("user.a", b"alpha", 0));
    fx.ok(setx("user.b", b"", libc::XATTR_CREATE));
    assert_eq!(
        fx.errno(root_creds(), setx("user.a", b"x", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(
        fx.errno(root_creds(), setx("user.c", b"x", libc::XATTR_REPLACE)),
        libc::ENODATA
    );
    assert_eq!(fx.call(getx("user.a", 0)), FileReply::XattrSize(5));
    assert_eq!(
        fx.call(getx("user.a", 64)),
        FileReply::Data(b"alpha".to_vec())
    );
    assert_eq!(fx.errno(root_creds(), getx("user.a", 2)), libc::ERANGE);
    let FileReply::XattrSize(n) = fx.call(Op::Listxattr {
        handle: h.clone(),
        size: 0,
    }) else {
        panic!("listxattr size");
    };
    let FileReply::Data(list) = fx.call(Op::Listxattr {
        handle: h.clone(),
        size: n,
    }) else {
        panic!("listxattr");
    };
    let names: HashSet<&[u8]> = list.split(|&c| c == 0).filter(|n| !n.is_empty()).collect();
    assert!(names.contains(&b"user.a"[..]) && names.contains(&b"user.b"[..]));
    fx.ok(Op::Removexattr {
        handle: h.clone(),
        name: "user.a".into(),
    });
    assert_eq!(fx.errno(root_creds(), getx("user.a", 64)), libc::ENODATA);
    // user.* needs write permission: a stranger on a 0644 root file
    assert_eq!(
        fx.errno(user(1000, &[]), setx("user.b", b"x", 0)),
        libc::EACCES
    );
    // the value is still the old one, visible to the host
    assert_eq!(
        fx.call(getx("user.b", 8)),
        FileReply::Data(Vec::new()),
        "{:?}",
        fx.path("f")
    );
}

#[test]
fn readdir_cookies_resume_exactly() {
    let fx = Fx::new("readdir");
    let root = fx.root();
    let (d, _) = fx.mkdir(&root, "d", 0o755);
    let want: Vec<String> = (0..200)
        .map(|i| format!("entry-{i:03}-{}", "x".repeat(i % 40)))
        .collect();
    for n in &want {
        let (_, _, fh) = fx.create(&d, n, libc::O_WRONLY);
        fx.release(fh);
    }
    let fh = fx.opendir(&d);
    // small batches: many calls, each resuming from the last cookie
    let all = fx.list_from(fh, 0, 1024);
    let mut names: Vec<String> = all
        .iter()
        .map(|e| String::from_utf8(e.name.clone()).unwrap())
        .collect();
    let distinct: HashSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "no entry twice");
    names.sort();
    let mut expect = want.clone();
    expect.extend([".".to_string(), "..".to_string()]);
    expect.sort();
    assert_eq!(names, expect);
    // kinds and inode numbers are the filesystem's
    let e = all.iter().find(|e| e.name == b"entry-007-xxxxxxx").unwrap();
    assert_eq!(e.kind, libc::DT_REG);
    assert_eq!(e.ino, fx.lookup(&d, "entry-007-xxxxxxx").1.ino);

    // resuming from a middle cookie gives the rest, exactly once, even
    // on another open of the directory (a client's seekdir)
    let mid = all.len() / 2;
    let fh2 = fx.opendir(&d);
    let rest = fx.list_from(fh2, all[mid - 1].next, 4096);
    assert_eq!(rest, all[mid..].to_vec());
    // and a rewind starts again
    assert_eq!(fx.list_from(fh, 0, 65536), all);
    fx.ok(Op::Releasedir { fh });
    fx.ok(Op::Releasedir { fh: fh2 });
    assert_eq!(
        fx.errno(
            root_creds(),
            Op::Readdir {
                fh,
                offset: 0,
                size: 4096
            }
        ),
        libc::EBADF
    );
}

#[test]
fn statfs_reports_the_filesystem() {
    let fx = Fx::new("statfs");
    let FileReply::Statfs(s) = fx.call(Op::Statfs { handle: fx.root() }) else {
        panic!("statfs");
    };
    assert!(
        s.blocks > 0 && s.bfree <= s.blocks && s.bavail <= s.bfree,
        "{s:?}"
    );
    assert!(s.bsize >= 512 && s.frsize >= 512, "{s:?}");
    assert_eq!(s.namelen, 255);
    assert!(s.files > 0 && s.ffree <= s.files);
}

#[test]
fn append_from_two_open_ids_loses_no_record() {
    let fx = Fx::new("append");
    let root = fx.root();
    let (h, _, fh) = fx.create(&root, "log", libc::O_WRONLY);
    fx.release(fh);
    const RECORDS: usize = 300;
    const LEN: usize = 64;
    let a = fx.open(&h, libc::O_WRONLY | libc::O_APPEND);
    let b = fx.open(&h, libc::O_WRONLY | libc::O_APPEND);
    std::thread::scope(|s| {
        for (tag, fh) in [('a', a), ('b', b)] {
            let fx = &fx;
            s.spawn(move || {
                for i in 0..RECORDS {
                    let mut rec = format!("{tag}{i:05}").into_bytes();
                    rec.resize(LEN - 1, b'.');
                    rec.push(b'\n');
                    // the offset is a lie on purpose: O_APPEND ignores it
                    assert_eq!(fx.write(fh, 0, &rec), LEN as u32);
                }
            });
        }
    });
    fx.release(a);
    fx.release(b);
    let data = std::fs::read(fx.path("log")).unwrap();
    assert_eq!(data.len(), 2 * RECORDS * LEN);
    let mut seen = HashSet::new();
    for rec in data.chunks(LEN) {
        assert_eq!(rec[LEN - 1], b'\n', "a torn record");
        assert!(seen.insert(rec[..6].to_vec()), "a record twice");
    }
    assert_eq!(seen.len(), 2 * RECORDS);
}

/// What pjdfstest's ftruncate and posix_fallocate "create flags only"
/// cases ask of a client: a file created with mode 0 and opened for
/// writing can be truncated and allocated through the creating open file
/// by its unprivileged creator, not by path; a read-only open file
/// truncates by path, as the caller.
#[test]
fn the_creating_open_file_truncates_a_mode_0_file() {
    let fx = Fx::new("mode0");
    let root = fx.root();
    let (rw, _) = fx.mkdir(&root, "rw", 0o777);
    let alice = user(1000, &[]);
    let FileReply::Created { handle, fh, .. } = fx.call_as(
        alice.clone(),
        Op::Create {
            parent: rw.clone(),
            name: "f".into(),
            mode: 0,
            umask: 0o022,
            flags: libc::O_RDWR,
        },
    ) else {
        panic!("create with mode 0");
    };
    let truncate = |fh: Option<u64>, size: u64| Op::Setattr {
        handle: handle.clone(),
        fh,
        set: SetAttr {
            size: Some(size),
            ..SetAttr::default()
        },
    };
    match fx.call_as(alice.clone(), truncate(Some(fh), 4096)) {
        FileReply::Attr(a) => assert_eq!(a.size, 4096),
        r => panic!("ftruncate through the creating file: {r:?}"),
    }
    assert_eq!(
        fx.errno(alice.clone(), truncate(None, 0)),
        libc::EACCES,
        "truncate by path is checked against mode 0"
    );
    match fx.call_as(
        alice.clone(),
        Op::Fallocate {
            fh,
            offset: 0,
            length: 8192,
            mode: 0,
        },
    ) {
        FileReply::Ok => {}
        r => panic!("fallocate through the creating file: {r:?}"),
    }
    assert_eq!(std::fs::metadata(fx.path("rw/f")).unwrap().len(), 8192);
    fx.release(fh);

    // a read-only open file is no licence to truncate: by path, as root here
    let ro = fx.open(&handle, libc::O_RDONLY);
    match fx.call(truncate(Some(ro), 1)) {
        FileReply::Attr(a) => assert_eq!(a.size, 1),
        r => panic!("truncate with a read-only open file: {r:?}"),
    }
    fx.release(ro);
}

#[test]
fn requests_run_with_the_callers_credentials() {
    let fx = Fx::new("creds");
    let root = fx.root();
    let (ro, _) = fx.mkdir(&root, "ro", 0o755);
    let (rw, _) = fx.mkdir(&root, "rw", 0o777);
    let (grp, _) = fx.mkdir(&root, "grp", 0o770);
    std::os::unix::fs::chown(fx.path("grp"), Some(0), Some(2000)).unwrap();

    assert_eq!(
        fx.create_as(user(1000, &[]), &ro, "f", libc::O_WRONLY),
        FileReply::Errno(libc::EACCES)
    );
    assert_eq!(
        fx.errno(
            user(1000, &[]),
            Op::Mkdir {
                parent: ro.clone(),
                name: "d".into(),
                mode: 0o755,
                umask: 0
            }
        ),
        libc::EACCES
    );
    let FileReply::Created { attr, fh, .. } =
        fx.create_as(user(1000, &[]), &rw, "f", libc::O_WRONLY)
    else {
        panic!("create in a 0777 directory");
    };
    fx.release(fh);
    assert_eq!((attr.uid, attr.gid), (1000, 1000));
    let md = std::fs::metadata(fx.path("rw/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));

    // supplementary groups count
    assert_eq!(
        fx.create_as(user(1000, &[]), &grp, "f", libc::O_WRONLY),
        FileReply::Errno(libc::EACCES)
    );
    match fx.create_as(user(1000, &[2000]), &grp, "f", libc::O_WRONLY) {
        FileReply::Created { fh, .. } => fx.release(fh),
        r => panic!("create with group 2000: {r:?}"),
    }
    // so does search permission on a lookup's directory
    std::fs::set_permissions(fx.path("grp"), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        fx.errno(
            user(1000, &[2000]),
            Op::Lookup {
                parent: grp.clone(),
                name: "f".into()
            }
        ),
        libc::EACCES
    );

    // open checks the file's permission for the caller
    std::fs::write(fx.path("secret"), b"s").unwrap();
    std::fs::set_permissions(fx.path("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret = fx.lookup(&root, "secret").0;
    let open = |flags| Op::Open {
        handle: secret.clone(),
        flags,
    };
    assert_eq!(
        fx.errno(user(1000, &[]), open(libc::O_RDONLY)),
        libc::EACCES
    );
    let access = |mask| Op::Access {
        handle: secret.clone(),
        mask,
    };
    assert_eq!(fx.errno(user(1000, &[]), access(libc::R_OK)), libc::EACCES);
    assert_eq!(
        fx.call_as(user(1000, &[]), access(libc::F_OK)),
        FileReply::Ok
    );
    assert_eq!(fx.call(access(libc::R_OK | libc::W_OK)), FileReply::Ok);

    // and the worker is root again afterwards
    let (_, _, fh) = fx.create(&ro, "by-root", libc::O_WRONLY);
    fx.release(fh);
    assert_eq!(sys::setfsuid(u32::MAX), 0);
    assert_eq!(sys::setfsgid(u32::MAX), 0);
}

#[test]
fn the_daemon_directory_is_hidden_and_protected() {
    let fx = Fx::new("mxfs");
    let root = fx.root();
    std::fs::create_dir(fx.path(".mxfs")).unwrap();
    std::fs::write(fx.path(".mxfs/lockstate"), b"").unwrap();
    let (_, _, fh) = fx.create(&root, "f", libc::O_WRONLY);
    fx.release(fh);
    let (sub, _) = fx.mkdir(&root, "sub", 0o755);

    assert_eq!(fx.lookup_err(&root, ".mxfs"), libc::ENOENT);
    assert_eq!(fx.names(&root), [".", "..", "f", "sub"]);
    let eperm = |op: Op| assert_eq!(fx.errno(root_creds(), op.clone()), libc::EPERM, "{op:?}");
    let name = || b".mxfs".to_vec();
    eperm(Op::Mkdir {
        parent: root.clone(),
        name: name(),
        mode: 0o755,
        umask: 0,
    });
    eperm(Op::Create {
        parent: root.clone(),
        name: name(),
        mode: 0o644,
        umask: 0,
        flags: libc::O_WRONLY,
    });
    eperm(Op::Rmdir {
        parent: root.clone(),
        name: name(),
    });
    eperm(Op::Unlink {
        parent: root.clone(),
        name: name(),
    });
    eperm(Op::Symlink {
        parent: root.clone(),
        name: name(),
        target: b"f".to_vec(),
    });
    eperm(Op::Mknod {
        parent: root.clone(),
        name: name(),
        mode: libc::S_IFIFO | 0o644,
        umask: 0,
        rdev: 0,
    });
    eperm(Op::Link {
        handle: fx.lookup(&root, "f").0,
        newparent: root.clone(),
        newname: name(),
    });
    for (from, fp, to, tp) in [("f", &root, ".mxfs", &root), (".mxfs", &root, "x", &sub)] {
        for flags in [0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE] {
            eperm(Op::Rename {
                parent: fp.clone(),
                name: from.into(),
                newparent: tp.clone(),
                newname: to.into(),
                flags,
            });
        }
    }
    assert!(fx.path(".mxfs/lockstate").exists());
    // the name is only special at the volume root
    fx.mkdir(&sub, ".mxfs", 0o755);
    assert!(fx.lookup(&sub, ".mxfs").0 != root);
    assert_eq!(fx.names(&sub), [".", "..", ".mxfs"]);
    // ".." of the root is the root, never what it is mounted on
    assert_eq!(fx.lookup(&root, "..").0, root);
    assert_eq!(fx.lookup(&sub, "..").0, root);
}

#[test]
fn a_deleted_files_handle_is_stale() {
    let fx = Fx::new("stale");
    let root = fx.root();
    let (h, _, fh) = fx.create(&root, "f", libc::O_WRONLY);
    fx.write(fh, 0, b"x");
    fx.release(fh);
    let (d, _) = fx.mkdir(&root, "d", 0o755);
    fx.ok(Op::Unlink {
        parent: root.clone(),
        name: "f".into(),
    });
    fx.ok(Op::Rmdir {
        parent: root.clone(),
        name: "d".into(),
    });
    for h in [&h, &d] {
        let getattr = Op::Getattr {
            handle: h.clone(),
            fh: None,
        };
        assert_eq!(fx.errno(root_creds(), getattr), libc::ESTALE);
        let open = Op::Open {
            handle: h.clone(),
            flags: libc::O_RDONLY,
        };
        assert_eq!(fx.errno(root_creds(), open), libc::ESTALE);
    }
    assert_eq!(fx.lookup_err(&d, "x"), libc::ESTALE);
    // a handle that never was
    let mut bogus = h.clone();
    bogus.bytes.iter_mut().for_each(|b| *b = 0xff);
    assert!(matches!(
        fx.call(Op::Statfs { handle: bogus }),
        FileReply::Errno(libc::ESTALE | libc::EINVAL)
    ));
}

#[test]
fn open_ids_belong_to_their_client() {
    let fx = Fx::new("ids");
    let root = fx.root();
    let (h, _, fh) = fx.create(&root, "f", libc::O_RDWR);
    fx.release(fh);
    let req = |op| FileRequest {
        creds: root_creds(),
        op,
    };
    let FileReply::Opened { fh } = fx.fs.handle_from(
        7,
        req(Op::Open {
            handle: h.clone(),
            flags: libc::O_RDWR,
        }),
    ) else {
        panic!("open as client 7");
    };
    let read = || {
        req(Op::Read {
            fh,
            offset: 0,
            size: 1,
        })
    };
    assert_eq!(fx.fs.handle_from(7, read()), FileReply::Data(vec![]));
    assert_eq!(fx.fs.handle_from(8, read()), FileReply::Errno(libc::EBADF));
    assert_eq!(fx.fs.handle(read()), FileReply::Errno(libc::EBADF));
    // a directory id is not a file id
    let dfh = fx.opendir(&root);
    assert_eq!(
        fx.errno(
            root_creds(),
            Op::Read {
                fh: dfh,
                offset: 0,
                size: 1
            }
        ),
        libc::EISDIR
    );
    assert_eq!(fx.fs.release_client(7), 1);
    assert_eq!(fx.fs.handle_from(7, read()), FileReply::Errno(libc::EBADF));
    assert_eq!(fx.fs.open_count(), 1);
    assert_eq!(
        fx.errno(
            root_creds(),
            Op::Release {
                fh: 12345,
                flags: 0,
                flush: false
            }
        ),
        libc::EBADF
    );
    // forget is accepted and does nothing
    fx.ok(Op::Forget {
        handle: h,
        nlookup: 3,
    });
}

#[test]
fn fallocate_lseek_copy_tmpfile_and_direct_io() {
    let fx = Fx::new("fileops");
    let root = fx.root();
    let (_, _, fh) = fx.create(&root, "sparse", libc::O_RDWR);
    fx.write(fh, 0, &[7u8; 4096]);
    fx.write(fh, 1 << 20, &[8u8; 4096]);
    let blocks = fx.getattr(&fx.lookup(&root, "sparse").0).blocks;
    // preallocation past the end (unwritten extents: holes to SEEK_DATA)
    fx.ok(Op::Fallocate {
        fh,
        offset: 2 << 20,
        length: 1 << 16,
        mode: libc::FALLOC_FL_KEEP_SIZE,
    });
    let a = fx.getattr(&fx.lookup(&root, "sparse").0);
    assert_eq!(a.size, (1 << 20) + 4096);
    // (at least: the filesystem may add an extent block)
    assert!(a.blocks >= blocks + (1 << 16) / 512, "{a:?}");
    let seek = |offset, whence| match fx.call(Op::Lseek { fh, offset, whence }) {
        FileReply::Offset(o) => o,
        r => panic!("lseek: {r:?}"),
    };
    assert_eq!(seek(0, libc::SEEK_HOLE), 4096);
    assert_eq!(seek(8192, libc::SEEK_DATA), 1 << 20);
    assert_eq!(
        fx.errno(
            root_creds(),
            Op::Lseek {
                fh,
                offset: 0,
                whence: libc::SEEK_CUR
            }
        ),
        libc::EINVAL
    );
    // copy_file_range within the owner
    let (_, _, out) = fx.create(&root, "copy", libc::O_RDWR);
    assert_eq!(
        fx.call(Op::CopyFileRange {
            fh_in: fh,
            offset_in: 0,
            fh_out: out,
            offset_out: 10,
            len: 100,
            flags: 0
        }),
        FileReply::Written(100)
    );
    assert_eq!(fx.read(out, 0, 200), [&[0u8; 10][..], &[7u8; 100]].concat());
    fx.release(fh);
    fx.release(out);

    // an unnamed file
    let FileReply::Created { attr, fh, .. } = fx.call(Op::Tmpfile {
        parent: root.clone(),
        mode: 0o600,
        umask: 0,
        flags: libc::O_RDWR,
    }) else {
        panic!("tmpfile");
    };
    assert_eq!((attr.nlink, attr.mode), (0, libc::S_IFREG | 0o600));
    fx.write(fh, 0, b"tmp");
    assert_eq!(fx.read(fh, 0, 10), b"tmp");
    fx.release(fh);

    // O_DIRECT passes through (with aligned bounce buffers)
    let (h, _, fh) = fx.create(&root, "direct", libc::O_RDWR);
    fx.release(fh);
    let fh = fx.open(&h, libc::O_RDWR | libc::O_DIRECT);
    let block: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(fx.write(fh, 4096, &block), 8192);
    assert_eq!(fx.read(fh, 4096, 8192), block);
    fx.ok(Op::Fsync { fh, datasync: true });
    fx.release(fh);
    assert_eq!(fx.getattr(&h).size, 4096 + 8192);
}

#[test]
fn through_the_wire_and_back() {
    // what the peer layer will do: bytes in, bytes out
    let fx = Fx::new("wire");
    let req = FileRequest {
        creds: root_creds(),
        op: Op::Mkdir {
            parent: fx.root(),
            name: b"over-the-wire".to_vec(),
            mode: 0o700,
            umask: 0,
        },
    };
    let f = req.to_file_op(3, 99).unwrap();
    assert_eq!(f.opcode, opcode::MKDIR);
    let reply = fx.fs.handle(FileRequest::from_file_op(&f).unwrap());
    let back = reply.to_file_op_reply(f.owner_epoch, f.request_id).unwrap();
    let FileReply::Entry { attr, .. } = FileReply::from_file_op_reply(&back).unwrap() else {
        panic!("mkdir reply");
    };
    assert_eq!(attr.mode, libc::S_IFDIR | 0o700);
    let again = fx.fs.handle(FileRequest::from_file_op(&f).unwrap());
    let e = again.to_file_op_reply(3, 99).unwrap();
    assert_eq!((e.errno, e.payload.len()), (libc::EEXIST, 0));
}

#[test]
fn the_service_is_shared_by_worker_threads() {
    // the runtime calls handle() from a blocking pool, several at once
    fn shared<T: Send + Sync>() {}
    shared::<FileService>();
}

/// Whether the fixtures' directory is on tmpfs, which has no FIEMAP.
fn on_tmpfs(fx: &Fx) -> bool {
    let s = sys::fstatfs(fx.fs.root.as_fd()).unwrap();
    // their types differ between targets
    #[allow(clippy::unnecessary_cast)]
    let tmpfs = s.f_type as i64 == libc::TMPFS_MAGIC as i64;
    tmpfs
}

#[test]
fn fiemap_maps_the_extents_of_an_open_file() {
    const FIEMAP_FLAG_SYNC: u32 = 1;
    const FIEMAP_EXTENT_LAST: u32 = 1;
    let fx = Fx::new("fiemap");
    let root = fx.root();
    let (h, _, fh) = fx.create(&root, "mapped", libc::O_RDWR);
    // three pieces of data with holes between (written synchronously, so
    // allocated at once)
    for i in 0..3u64 {
        assert_eq!(fx.write(fh, i << 20, &[i as u8 + 1; 8192]), 8192);
    }
    fx.release(fh);
    // a file open for reading will do
    let fh = fx.open(&h, libc::O_RDONLY);
    let fiemap = |start, length, flags, max_extents| {
        fx.call(Op::Fiemap {
            fh,
            start,
            length,
            flags,
            max_extents,
        })
    };
    let all = match fiemap(0, u64::MAX, FIEMAP_FLAG_SYNC, 16) {
        FileReply::Extents(x) => x,
        // The fixtures' directory is the host's temp_dir(): tmpfs has no
        // fiemap and answers EOPNOTSUPP, which is accepted there only.
        FileReply::Errno(libc::EOPNOTSUPP) if on_tmpfs(&fx) => {
            eprintln!("SKIPPED: the temporary directory is on tmpfs, which has no FIEMAP");
            return;
        }
        r => panic!("fiemap: {r:?}"),
    };
    assert!(!all.is_empty());
    for i in 0..3u64 {
        let (from, to) = (i << 20, (i << 20) + 8192);
        assert!(
            all.iter()
                .any(|e| e.logical <= from && to <= e.logical + e.length),
            "{from}..{to} is not mapped: {all:?}"
        );
    }
    assert!(
        all.windows(2).all(|w| w[0].logical < w[1].logical),
        "{all:?}"
    );
    assert!(
        all.last().unwrap().flags & FIEMAP_EXTENT_LAST != 0,
        "{all:?}"
    );
    // at most as many as asked for; none asked, none given
    let FileReply::Extents(one) = fiemap(0, u64::MAX, 0, 1) else {
        panic!("fiemap of one extent");
    };
    assert_eq!(one, all[..1]);
    assert_eq!(fiemap(0, u64::MAX, 0, 0), FileReply::Extents(vec![]));
    // from a later start: what overlaps it on
    let FileReply::Extents(late) = fiemap(2 << 20, 4096, 0, 16) else {
        panic!("fiemap from 2 MiB");
    };
    assert!(
        !late.is_empty() && late.iter().all(|e| e.logical + e.length > 2 << 20),
        "{late:?}"
    );
    // more than a reply may carry is capped, not refused
    assert_eq!(fiemap(0, u64::MAX, 0, u32::MAX), FileReply::Extents(all));
    // flags the filesystem does not know: the kernel's EBADR
    assert_eq!(
        fiemap(0, u64::MAX, 0x8000_0000, 16),
        FileReply::Errno(libc::EBADR)
    );
    // only through an open file of this client
    assert_eq!(
        fx.errno(
            root_creds(),
            Op::Fiemap {
                fh: fh.wrapping_add(1),
                start: 0,
                length: 1,
                flags: 0,
                max_extents: 1
            }
        ),
        libc::EBADF
    );
    let req = FileRequest {
        creds: root_creds(),
        op: Op::Fiemap {
            fh,
            start: 0,
            length: 1,
            flags: 0,
            max_extents: 1,
        },
    };
    assert_eq!(fx.fs.handle_from(7, req), FileReply::Errno(libc::EBADF));
    let d = fx.opendir(&root);
    assert_eq!(
        fx.errno(
            root_creds(),
            Op::Fiemap {
                fh: d,
                start: 0,
                length: 1,
                flags: 0,
                max_extents: 1
            }
        ),
        libc::EISDIR
    );
    fx.release(fh);
}

#[test]
fn birthtime_is_the_files_creation_time() {
    let fx = Fx::new("btime");
    let root = fx.root();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (h, _, fh) = fx.create(&root, "born", libc::O_RDWR);
    fx.release(fh);
    match fx.call(Op::Birthtime { handle: h }) {
        FileReply::Birthtime(t) => {
            assert!(t.nsec < 1_000_000_000);
            assert!(
                (before - 1..=before + 60).contains(&t.sec),
                "born at {t:?}, created at about {before}"
            );
        }
        // a filesystem that keeps no birth time (tmpfs before 6.x)
        FileReply::Errno(libc::ENODATA) if on_tmpfs(&fx) => {
            eprintln!("SKIPPED: the temporary directory's tmpfs keeps no birth time");
        }
        r => panic!("birthtime: {r:?}"),
    }
    // a handle that names nothing
    let (gone, _) = fx.mkdir(&root, "gone", 0o755);
    fx.ok(Op::Rmdir {
        parent: root.clone(),
        name: b"gone".to_vec(),
    });
    assert!(matches!(
        fx.call(Op::Birthtime { handle: gone }),
        FileReply::Errno(libc::ESTALE)
    ));
}
