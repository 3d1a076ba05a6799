//! Tests without a mount: status parsing, the node table, conversions,
//! and the client's operations against a scripted owner.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{Errno, FileType};

use super::client::{Client, DirEntry, Xattr};
use super::convert::{self, errno, file_attr, system_time, timespec};
use super::creds::{groups_for, parse_status, Groups, StatusIds};
use super::nodes::{Nodes, ROOT};
use super::Forward;
use crate::wire::fileop::{
    Attr, Creds, Dirent, Extent, FileReply, FileRequest, Handle, Op, Timespec, MAX_IO,
};

// ---- /proc/<pid>/status ----

const STATUS: &str = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t4242\n\
Uid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2001\t2002\t2003\nFDSize:\t256\n\
Groups:\t4 24 27 1000 \nNStgid:\t4242\n";

#[test]
fn status_gives_fs_ids_and_groups() {
    let s = parse_status(STATUS).unwrap();
    assert_eq!(
        s,
        StatusIds {
            fsuid: 1003,
            fsgid: 2003,
            groups: vec![4, 24, 27, 1000],
        }
    );
}

#[test]
fn status_without_groups_or_with_junk_is_refused() {
    assert_eq!(parse_status("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"), None);
    let junk = STATUS.replace("Groups:\t4 24", "Groups:\t4 x24");
    assert_eq!(parse_status(&junk), None);
    let short = STATUS.replace("Uid:\t1000\t1001\t1002\t1003", "Uid:\t1000\t1001");
    assert_eq!(parse_status(&short), None);
    // empty list: no supplementary groups, a valid answer
    let none = STATUS.replace("Groups:\t4 24 27 1000 ", "Groups:\t");
    assert_eq!(parse_status(&none).unwrap().groups, Vec::<u32>::new());
}

#[test]
fn groups_only_from_a_status_of_the_same_identity() {
    let s = parse_status(STATUS).unwrap();
    assert_eq!(groups_for(Some(&s), 1003, 2003), vec![4, 24, 27, 1000]);
    // pid reused by someone else, or the caller changed identity
    assert!(groups_for(Some(&s), 1000, 2003).is_empty());
    assert!(groups_for(Some(&s), 1003, 2000).is_empty());
    assert!(groups_for(None, 1003, 2003).is_empty());
}

fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

#[test]
fn groups_of_a_live_thread_and_of_the_kernel() {
    let g = Groups::default();
    assert!(g.creds(0, 0, 0).groups.is_empty(), "pid 0 is the kernel");
    // A thread of our own with groups set for it alone (the raw syscall
    // changes only the calling thread).
    std::thread::spawn(move || {
        let groups: [libc::gid_t; 2] = [4242, 4343];
        // SAFETY: a valid array of 2 gids; affects this thread only.
        let rc = unsafe { libc::syscall(libc::SYS_setgroups, 2, groups.as_ptr()) };
        assert_eq!(rc, 0);
        let c = g.creds(0, 0, gettid());
        assert_eq!(c.groups, vec![4242, 4343]);
        assert_eq!((c.uid, c.gid, c.pid), (0, 0, gettid()));
        // asked as another identity than the thread's: no groups
        assert!(g.creds(1000, 0, gettid()).groups.is_empty());
    })
    .join()
    .unwrap();
}

// ---- node table ----

fn h(b: u8) -> Handle {
    Handle {
        handle_type: 0x81,
        bytes: vec![b; 12],
    }
}

#[test]
fn node_ids_are_owner_inodes_with_root_and_1_swapped() {
    let n = Nodes::new(h(0), 128);
    assert_eq!(n.fuse_ino(128), ROOT);
    assert_eq!(n.fuse_ino(1), 128);
    assert_eq!(n.fuse_ino(4711), 4711);
    for i in [1, 128, 4711] {
        assert_eq!(n.fuse_ino(n.fuse_ino(i)), i);
    }
    // a root numbered 1 changes nothing
    let n = Nodes::new(h(0), 1);
    assert_eq!(n.fuse_ino(1), ROOT);
    assert_eq!(n.fuse_ino(5), 5);
}

#[test]
fn nodes_count_lookups_and_go_at_zero() {
    let n = Nodes::new(h(0), 128);
    assert_eq!(n.handle(ROOT), Some(h(0)));
    assert_eq!(n.handle(200), None);
    n.remember(200, &h(1));
    n.remember(200, &h(1));
    assert_eq!(n.nlookup(200), 2);
    n.forget(200, 1);
    assert_eq!(n.handle(200), Some(h(1)));
    n.forget(200, 1);
    assert_eq!(n.handle(200), None);
    assert_eq!(n.len(), 0);
    // a forget racing ahead of a lookup's reply: the reply recreates it
    n.forget(300, 1);
    n.remember(300, &h(3));
    assert_eq!(n.nlookup(300), 1);
    // the root is never counted nor forgotten
    n.remember(ROOT, &h(9));
    n.forget(ROOT, 100);
    assert_eq!(n.handle(ROOT), Some(h(0)));
}

#[test]
fn a_new_generation_replaces_the_handle_and_keeps_the_count() {
    let n = Nodes::new(h(0), 128);
    n.remember(200, &h(1));
    n.remember(200, &h(2));
    assert_eq!(n.handle(200), Some(h(2)));
    assert_eq!(n.nlookup(200), 2);
    n.forget(200, 5);
    assert_eq!(n.len(), 0);
}

// ---- conversions ----

#[test]
fn errnos_the_kernel_must_not_get_become_eio() {
    assert_eq!(errno(libc::ENOENT), Errno::from_i32(libc::ENOENT));
    assert_eq!(errno(libc::EACCES), Errno::from_i32(libc::EACCES));
    for bad in [0, -1, libc::ENOSYS, 512, 100_000, i32::MIN] {
        assert_eq!(errno(bad), Errno::EIO, "{bad}");
    }
}

fn attr(ino: u64, mode: u32) -> Attr {
    Attr {
        ino,
        size: 5,
        blocks: 8,
        atime: Timespec { sec: 10, nsec: 1 },
        mtime: Timespec { sec: 20, nsec: 2 },
        ctime: Timespec { sec: 30, nsec: 3 },
        mode,
        nlink: 1,
        uid: 1000,
        gid: 100,
        rdev: 0,
        blksize: 4096,
        generation: 7,
    }
}

#[test]
fn attributes_map_and_bad_ones_are_eio() {
    let a = file_attr("t", 42, &attr(999, libc::S_IFREG | 0o4755)).unwrap();
    assert_eq!(a.ino.0, 42, "the node id, not the owner's number");
    assert_eq!(a.kind, FileType::RegularFile);
    assert_eq!(a.perm, 0o4755);
    assert_eq!(
        (a.size, a.blocks, a.uid, a.gid, a.blksize),
        (5, 8, 1000, 100, 4096)
    );
    assert_eq!(a.mtime, UNIX_EPOCH + Duration::new(20, 2));
    let mut dev = attr(1, libc::S_IFCHR | 0o600);
    dev.rdev = (8 << 8) | 17; // makedev(8, 17)
    assert_eq!(file_attr("t", 1, &dev).unwrap().rdev, (8 << 8) | 17);
    dev.rdev = 1 << 40; // a major no kernel has
    assert_eq!(file_attr("t", 1, &dev).unwrap_err(), Errno::EIO);
    assert_eq!(file_attr("t", 1, &attr(1, 0o644)).unwrap_err(), Errno::EIO);
    for (m, k) in [
        (libc::S_IFDIR, FileType::Directory),
        (libc::S_IFLNK, FileType::Symlink),
        (libc::S_IFIFO, FileType::NamedPipe),
        (libc::S_IFSOCK, FileType::Socket),
        (libc::S_IFBLK, FileType::BlockDevice),
    ] {
        assert_eq!(file_attr("t", 1, &attr(1, m)).unwrap().kind, k);
    }
}

#[test]
fn times_round_trip_also_before_1970() {
    for t in [
        Timespec { sec: 0, nsec: 0 },
        Timespec {
            sec: 1_700_000_000,
            nsec: 123,
        },
        Timespec {
            sec: -1,
            nsec: 500_000_000,
        },
        Timespec { sec: -100, nsec: 0 },
    ] {
        assert_eq!(timespec(system_time(t)), t);
    }
    assert_eq!(
        system_time(Timespec {
            sec: -1,
            nsec: 500_000_000
        }),
        UNIX_EPOCH - Duration::from_millis(500)
    );
    // out of SystemTime's range: the epoch rather than a panic
    let _ = system_time(Timespec {
        sec: i64::MIN,
        nsec: 999_999_999,
    });
}

#[test]
fn dirent_types() {
    assert_eq!(
        convert::dirent_type(libc::DT_DIR),
        Some(FileType::Directory)
    );
    assert_eq!(convert::dirent_type(libc::DT_UNKNOWN), None);
    assert_eq!(convert::dirent_type(200), None);
}

// ---- the client against a scripted owner ----

/// Answers each request with the next scripted reply (EIO when out),
/// and keeps the requests.
#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<FileReply>>,
    seen: Mutex<Vec<FileRequest>>,
}

impl Forward for &'static Script {
    fn call(&self, req: FileRequest) -> FileReply {
        self.seen.lock().unwrap().push(req);
        self.replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(FileReply::Errno(libc::EIO))
    }
}

impl Script {
    fn push(&self, r: FileReply) {
        self.replies.lock().unwrap().push_back(r);
    }
    fn ops(&self) -> Vec<Op> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.op.clone())
            .collect()
    }
    fn last(&self) -> FileRequest {
        self.seen.lock().unwrap().last().unwrap().clone()
    }
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// A client whose root (owner inode 128) answered its getattr.
fn client() -> (&'static Script, Client<&'static Script>) {
    let s: &'static Script = Box::leak(Box::default());
    s.push(FileReply::Attr(attr(128, libc::S_IFDIR | 0o755)));
    let c = Client::new(s, h(0), None).unwrap();
    (s, c)
}

fn who() -> Creds {
    Creds {
        uid: 1000,
        gid: 1000,
        pid: 77,
        groups: vec![5, 6],
    }
}

#[test]
fn start_needs_a_root_directory() {
    let s: &'static Script = Box::leak(Box::default());
    s.push(FileReply::Attr(attr(128, libc::S_IFREG | 0o644)));
    assert!(Client::new(s, h(0), None).is_err());
    s.push(FileReply::Errno(libc::ESTALE));
    let e = Client::new(s, h(0), None).err().unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::ESTALE));
    s.push(FileReply::Ok);
    assert!(Client::new(s, h(0), None).is_err());
    assert!(matches!(&s.ops()[0], Op::Getattr { handle, fh: None } if *handle == h(0)));
}

#[test]
fn lookup_forwards_the_caller_and_remembers_the_node() {
    let (s, c) = client();
    s.push(FileReply::Entry {
        handle: h(1),
        attr: attr(500, libc::S_IFREG | 0o644),
    });
    let (a, generation) = c.lookup(&who(), ROOT, OsStr::new("f")).unwrap();
    assert_eq!((a.ino.0, generation.0), (500, 7));
    let req = s.last();
    assert_eq!(req.creds, who());
    assert_eq!(
        req.op,
        Op::Lookup {
            parent: h(0),
            name: b"f".to_vec()
        }
    );
    assert_eq!(c.nodes.handle(500), Some(h(1)));
    // an entry naming the owner's root is node 1, not 128
    s.push(FileReply::Entry {
        handle: h(0),
        attr: attr(128, libc::S_IFDIR | 0o755),
    });
    let (a, _) = c.lookup(&who(), 500, OsStr::new("..")).unwrap();
    assert_eq!(a.ino.0, ROOT);
    assert_eq!(c.nodes.len(), 1, "the root is not counted");
}

#[test]
fn unknown_nodes_and_bad_names_fail_before_forwarding() {
    let (s, c) = client();
    let n = s.count();
    assert_eq!(
        c.lookup(&who(), 999, OsStr::new("x")).unwrap_err(),
        Errno::from_i32(libc::ESTALE)
    );
    let long = "x".repeat(256);
    assert_eq!(
        c.lookup(&who(), ROOT, OsStr::new(&long)).unwrap_err(),
        Errno::from_i32(libc::ENAMETOOLONG)
    );
    assert_eq!(
        c.symlink(&who(), ROOT, OsStr::new("l"), OsStr::new(&"t".repeat(4096)))
            .unwrap_err(),
        Errno::from_i32(libc::ENAMETOOLONG)
    );
    assert_eq!(
        c.rename(&who(), ROOT, OsStr::new("a"), ROOT, OsStr::new("b"), 8)
            .unwrap_err(),
        Errno::from_i32(libc::EINVAL)
    );
    assert_eq!(
        c.setxattr(&who(), ROOT, OsStr::new("user.x"), &vec![0; 65537], 0, 0)
            .unwrap_err(),
        Errno::from_i32(libc::E2BIG)
    );
    assert_eq!(s.count(), n, "nothing forwarded");
}

#[test]
fn malformed_replies_are_eio_never_a_panic() {
    let (s, c) = client();
    let bad_entries = [
        FileReply::Data(vec![1]),
        FileReply::Ok,
        FileReply::Entry {
            handle: Handle {
                handle_type: 1,
                bytes: vec![],
            },
            attr: attr(5, libc::S_IFREG),
        },
        FileReply::Entry {
            handle: Handle {
                handle_type: 1,
                bytes: vec![0; 129],
            },
            attr: attr(5, libc::S_IFREG),
        },
        FileReply::Entry {
            handle: h(1),
            attr: attr(0, libc::S_IFREG),
        },
        FileReply::Entry {
            handle: h(1),
            attr: attr(5, 0),
        },
        FileReply::Errno(libc::ENOSYS),
        FileReply::Errno(0),
        FileReply::Errno(-5),
        FileReply::Errno(4096),
    ];
    for r in bad_entries {
        s.push(r.clone());
        assert_eq!(
            c.lookup(&who(), ROOT, OsStr::new("f")).unwrap_err(),
            Errno::EIO,
            "{r:?}"
        );
    }
    assert_eq!(c.nodes.len(), 0, "nothing remembered from a bad reply");
    s.push(FileReply::Errno(libc::ENOENT));
    assert_eq!(
        c.lookup(&who(), ROOT, OsStr::new("f")).unwrap_err(),
        Errno::from_i32(libc::ENOENT)
    );
    s.push(FileReply::Attr(attr(128, libc::S_IFDIR)));
    assert_eq!(c.readlink(&who(), ROOT).unwrap_err(), Errno::EIO);
    s.push(FileReply::Data(vec![]));
    assert_eq!(c.readlink(&who(), ROOT).unwrap_err(), Errno::EIO);
    s.push(FileReply::Written(1));
    assert_eq!(c.statfs(&who(), ROOT).unwrap_err(), Errno::EIO);
    // getxattr: a size asked, data given, and the reverse, and too much
    s.push(FileReply::Data(vec![1]));
    assert_eq!(
        c.getxattr(&who(), ROOT, Some(OsStr::new("user.a")), 0)
            .unwrap_err(),
        Errno::EIO
    );
    s.push(FileReply::XattrSize(3));
    assert_eq!(c.getxattr(&who(), ROOT, None, 10).unwrap_err(), Errno::EIO);
    s.push(FileReply::Data(vec![1; 11]));
    assert_eq!(c.getxattr(&who(), ROOT, None, 10).unwrap_err(), Errno::EIO);
    s.push(FileReply::XattrSize(3));
    assert_eq!(c.getxattr(&who(), ROOT, None, 0), Ok(Xattr::Size(3)));
}

/// An open file (owner id 10) of node 500.
fn opened(s: &Script, c: &Client<&'static Script>, flags: i32) -> u64 {
    s.push(FileReply::Entry {
        handle: h(5),
        attr: attr(500, libc::S_IFREG | 0o644),
    });
    c.lookup(&who(), ROOT, OsStr::new("f")).unwrap();
    s.push(FileReply::Opened { fh: 10 });
    c.open(&who(), 500, flags).unwrap()
}

#[test]
fn io_goes_to_the_owners_open_id_and_checks_sizes() {
    let (s, c) = client();
    let fh = opened(s, &c, libc::O_RDWR);
    s.push(FileReply::Data(b"abc".to_vec()));
    assert_eq!(c.read(&who(), fh, 7, 3).unwrap(), b"abc");
    assert_eq!(
        s.last().op,
        Op::Read {
            fh: 10,
            offset: 7,
            size: 3
        }
    );
    s.push(FileReply::Data(b"abcd".to_vec()));
    assert_eq!(c.read(&who(), fh, 0, 3).unwrap_err(), Errno::EIO);
    // the kernel should not ask for more than max_read; we never do
    s.push(FileReply::Data(vec![]));
    c.read(&who(), fh, 0, u32::MAX).unwrap();
    assert!(matches!(s.last().op, Op::Read { size, .. } if size as usize == MAX_IO));
    s.push(FileReply::Written(2));
    assert_eq!(c.write(&who(), fh, 4, b"xy", 0).unwrap(), 2);
    s.push(FileReply::Written(3));
    assert_eq!(c.write(&who(), fh, 4, b"xy", 0).unwrap_err(), Errno::EIO);
    s.push(FileReply::Offset(-1));
    assert_eq!(
        c.lseek(&who(), fh, 0, libc::SEEK_DATA).unwrap_err(),
        Errno::EIO
    );
    // getattr with a file handle passes the owner's id
    s.push(FileReply::Attr(attr(500, libc::S_IFREG | 0o644)));
    c.getattr(&who(), 500, Some(fh)).unwrap();
    assert!(matches!(s.last().op, Op::Getattr { fh: Some(10), .. }));
    assert_eq!(
        c.read(&who(), fh + 1, 0, 1).unwrap_err(),
        Errno::from_i32(libc::EBADF)
    );
}

#[test]
fn ebadf_reopens_with_the_openers_flags_and_credentials() {
    let (s, c) = client();
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_TRUNC;
    let fh = opened(s, &c, flags);
    let other = Creds { uid: 2000, ..who() };
    s.push(FileReply::Errno(libc::EBADF)); // a new owner
    s.push(FileReply::Opened { fh: 11 });
    s.push(FileReply::Written(1));
    assert_eq!(c.write(&other, fh, 0, b"z", 0).unwrap(), 1);
    let seen = s.seen.lock().unwrap().clone();
    let n = seen.len();
    assert_eq!(
        seen[n - 2].op,
        Op::Open {
            handle: h(5),
            flags: libc::O_WRONLY | libc::O_APPEND,
        },
        "no second truncation"
    );
    assert_eq!(seen[n - 2].creds, who(), "the opener's credentials");
    assert!(matches!(&seen[n - 1].op, Op::Write { fh: 11, .. }));
    assert_eq!(
        seen[n - 1].creds,
        other,
        "the caller's for the write itself"
    );
    // from now on the new id
    s.push(FileReply::Ok);
    c.fsync(&who(), fh, false, false).unwrap();
    assert_eq!(
        s.last().op,
        Op::Fsync {
            fh: 11,
            datasync: false
        }
    );
    // a reopen that fails gives its errno; EBADF after a reopen is EIO
    s.push(FileReply::Errno(libc::EBADF));
    s.push(FileReply::Errno(libc::EACCES));
    assert_eq!(
        c.read(&who(), fh, 0, 1).unwrap_err(),
        Errno::from_i32(libc::EACCES)
    );
    s.push(FileReply::Errno(libc::EBADF));
    s.push(FileReply::Opened { fh: 12 });
    s.push(FileReply::Errno(libc::EBADF));
    assert_eq!(c.read(&who(), fh, 0, 1).unwrap_err(), Errno::EIO);
}

#[test]
fn flush_and_release_take_ebadf_as_done() {
    let (s, c) = client();
    let fh = opened(s, &c, libc::O_RDONLY);
    s.push(FileReply::Errno(libc::EBADF));
    c.flush(&who(), fh).unwrap();
    assert_eq!(c.open_count(), 1);
    s.push(FileReply::Errno(libc::EBADF));
    c.release(&who(), fh, libc::O_RDONLY, false).unwrap();
    assert_eq!(c.open_count(), 0);
    assert_eq!(
        s.last().op,
        Op::Release {
            fh: 10,
            flags: libc::O_RDONLY,
            flush: false
        }
    );
    assert_eq!(
        c.release(&who(), fh, 0, false).unwrap_err(),
        Errno::from_i32(libc::EBADF)
    );
}

#[test]
fn create_with_a_bad_entry_releases_the_owners_open() {
    let (s, c) = client();
    s.push(FileReply::Created {
        handle: h(6),
        attr: attr(0, libc::S_IFREG | 0o644),
        fh: 33,
    });
    s.push(FileReply::Ok);
    assert_eq!(
        c.create(&who(), ROOT, OsStr::new("n"), 0o644, 0o022, libc::O_RDWR)
            .unwrap_err(),
        Errno::EIO
    );
    assert!(matches!(s.last().op, Op::Release { fh: 33, .. }));
    assert_eq!(c.open_count(), 0);
    s.push(FileReply::Created {
        handle: h(6),
        attr: attr(600, libc::S_IFREG | 0o644),
        fh: 34,
    });
    let (a, g, fh) = c
        .create(&who(), ROOT, OsStr::new("n"), 0o644, 0o022, libc::O_RDWR)
        .unwrap();
    assert_eq!((a.ino.0, g.0), (600, 7));
    assert_eq!(c.nodes.nlookup(600), 1);
    s.push(FileReply::Data(vec![]));
    c.read(&who(), fh, 0, 1).unwrap();
    assert!(matches!(s.last().op, Op::Read { fh: 34, .. }));
}

#[test]
fn readdir_maps_dot_entries_and_asks_for_unknown_types() {
    let (s, c) = client();
    s.push(FileReply::Opened { fh: 20 });
    let fh = c.opendir(&who(), ROOT, libc::O_RDONLY).unwrap();
    let de = |ino, next, kind, name: &str| Dirent {
        ino,
        next,
        kind,
        name: name.as_bytes().to_vec(),
    };
    s.push(FileReply::Dirents(vec![
        de(128, 1, libc::DT_DIR, "."),
        de(64, 2, libc::DT_DIR, ".."),
        de(1, 3, libc::DT_REG, "one"),
        de(700, 4, libc::DT_UNKNOWN, "what"),
    ]));
    s.push(FileReply::Entry {
        handle: h(7),
        attr: attr(700, libc::S_IFLNK | 0o777),
    });
    let list = c.readdir(&who(), ROOT, fh, 0).unwrap();
    let want = |ino, next, kind, name: &str| DirEntry {
        ino,
        next,
        kind,
        name: name.as_bytes().to_vec(),
    };
    assert_eq!(
        list,
        vec![
            want(ROOT, 1, FileType::Directory, "."),
            want(ROOT, 2, FileType::Directory, ".."),
            want(128, 3, FileType::RegularFile, "one"),
            want(700, 4, FileType::Symlink, "what"),
        ]
    );
    assert_eq!(c.nodes.len(), 0, "the type lookup is not a FUSE lookup");
    s.push(FileReply::Dirents(vec![de(5, 1, libc::DT_REG, "a/b")]));
    assert_eq!(c.readdir(&who(), ROOT, fh, 3).unwrap_err(), Errno::EIO);
    s.push(FileReply::Ok);
    c.release(&who(), fh, 0, false).unwrap();
    assert_eq!(s.last().op, Op::Releasedir { fh: 20 });
}

#[test]
fn copy_file_range_reopens_both_files() {
    let (s, c) = client();
    let a = opened(s, &c, libc::O_RDONLY);
    s.push(FileReply::Opened { fh: 40 });
    let b = c.open(&who(), 500, libc::O_WRONLY).unwrap();
    s.push(FileReply::Errno(libc::EBADF));
    s.push(FileReply::Opened { fh: 41 });
    s.push(FileReply::Opened { fh: 42 });
    s.push(FileReply::Written(9));
    assert_eq!(c.copy_file_range(&who(), a, 0, b, 0, 9, 0).unwrap(), 9);
    assert!(matches!(
        s.last().op,
        Op::CopyFileRange {
            fh_in: 41,
            fh_out: 42,
            ..
        }
    ));
    s.push(FileReply::Written(10));
    assert_eq!(
        c.copy_file_range(&who(), a, 0, b, 0, 9, 0).unwrap_err(),
        Errno::EIO
    );
}

// ---- the module's private requests ----

/// An extent (also for the tests of `super::private`).
pub(super) fn ext(logical: u64, physical: u64, length: u64, flags: u32) -> Extent {
    Extent {
        logical,
        physical,
        length,
        flags,
    }
}

#[test]
fn fiemap_names_go_to_the_owner_through_an_open_file() {
    let (s, c) = client();
    let fh = opened(s, &c, libc::O_RDONLY);
    let get = |name: &str, size| c.getxattr(&who(), 500, Some(OsStr::new(name)), size);
    s.push(FileReply::Extents(vec![
        ext(0, 1 << 20, 8192, 0),
        ext(1 << 20, 1 << 30, 4096, 0x801),
    ]));
    let Ok(Xattr::Data(v)) = get("mxfs.fiemap.0.18446744073709551615.1", 64) else {
        panic!("fiemap");
    };
    assert_eq!(
        super::private::decode_extents(&v),
        Some(vec![
            ext(0, 1 << 20, 8192, 0),
            ext(1 << 20, 1 << 30, 4096, 0x801)
        ])
    );
    let req = s.last();
    assert_eq!(req.creds, who());
    assert_eq!(
        req.op,
        Op::Fiemap {
            fh: 10,
            start: 0,
            length: u64::MAX,
            flags: 1,
            max_extents: 2,
        }
    );
    // as many as the buffer holds (and a value may be)
    s.push(FileReply::Extents(vec![]));
    assert_eq!(get("mxfs.fiemap.4096.100.0", 100), Ok(Xattr::Data(vec![])));
    assert!(matches!(
        s.last().op,
        Op::Fiemap {
            start: 4096,
            length: 100,
            flags: 0,
            max_extents: 3,
            ..
        }
    ));
    s.push(FileReply::Extents(vec![]));
    get("mxfs.fiemap.0.1.4294967295", u32::MAX).unwrap();
    assert!(matches!(
        s.last().op,
        Op::Fiemap {
            flags: u32::MAX,
            max_extents: 2048,
            ..
        }
    ));
    // an owner's errno passes; more extents than asked for is EIO
    s.push(FileReply::Errno(libc::EBADR));
    assert_eq!(
        get("mxfs.fiemap.0.1.8", 32).unwrap_err(),
        Errno::from_i32(libc::EBADR)
    );
    s.push(FileReply::Extents(vec![ext(0, 0, 1, 0); 2]));
    assert_eq!(get("mxfs.fiemap.0.1.0", 32).unwrap_err(), Errno::EIO);
    s.push(FileReply::Data(vec![0; 32]));
    assert_eq!(get("mxfs.fiemap.0.1.0", 32).unwrap_err(), Errno::EIO);
    // a new owner: reopened, and asked again
    s.push(FileReply::Errno(libc::EBADF));
    s.push(FileReply::Opened { fh: 11 });
    s.push(FileReply::Extents(vec![ext(0, 4096, 4096, 1)]));
    let Ok(Xattr::Data(v)) = get("mxfs.fiemap.0.4096.0", 32) else {
        panic!("fiemap after a reopen");
    };
    assert_eq!(
        super::private::decode_extents(&v),
        Some(vec![ext(0, 4096, 4096, 1)])
    );
    assert!(matches!(s.last().op, Op::Fiemap { fh: 11, .. }));

    let n = s.count();
    // names that do not parse
    for bad in [
        "mxfs.fiemap.",
        "mxfs.fiemap.1.2",
        "mxfs.fiemap.1.2.3.4",
        "mxfs.fiemap.1.2.3.",
        "mxfs.fiemap.1..3",
        "mxfs.fiemap.+1.2.3",
        "mxfs.fiemap.-1.2.3",
        "mxfs.fiemap. 1.2.3",
        "mxfs.fiemap.0x10.2.3",
        "mxfs.fiemap.18446744073709551616.2.3",
        "mxfs.fiemap.1.2.4294967296",
    ] {
        assert_eq!(
            get(bad, 64).unwrap_err(),
            Errno::from_i32(libc::EINVAL),
            "{bad}"
        );
    }
    // the module always gives a buffer; one too small for an extent
    assert_eq!(
        get("mxfs.fiemap.0.1.0", 0).unwrap_err(),
        Errno::from_i32(libc::EINVAL)
    );
    assert_eq!(
        get("mxfs.fiemap.0.1.0", 31).unwrap_err(),
        Errno::from_i32(libc::ERANGE)
    );
    // no file of the node open through this mount: a directory's open
    // does not count
    s.push(FileReply::Opened { fh: 20 });
    c.opendir(&who(), ROOT, libc::O_RDONLY).unwrap();
    let n2 = s.count();
    assert_eq!(
        c.getxattr(&who(), ROOT, Some(OsStr::new("mxfs.fiemap.0.1.0")), 32)
            .unwrap_err(),
        Errno::from_i32(libc::EBADF)
    );
    assert_eq!(
        c.getxattr(&who(), 999, Some(OsStr::new("mxfs.fiemap.0.1.0")), 32)
            .unwrap_err(),
        Errno::from_i32(libc::ESTALE)
    );
    assert_eq!(s.count(), n2, "nothing forwarded");
    // once the file is closed, none either
    s.push(FileReply::Ok);
    c.release(&who(), fh, libc::O_RDONLY, false).unwrap();
    let n3 = s.count();
    assert_eq!(
        get("mxfs.fiemap.0.1.0", 32).unwrap_err(),
        Errno::from_i32(libc::EBADF)
    );
    assert_eq!(s.count(), n3);
    assert_eq!(n2, n + 1, "only the opendir was forwarded");
}

#[test]
fn other_private_names_are_not_xattrs() {
    let (s, c) = client();
    opened(s, &c, libc::O_RDWR);
    let n = s.count();
    let eopnotsupp = Errno::from_i32(libc::EOPNOTSUPP);
    for name in [
        "mxfs.",
        "mxfs.fallocate",
        "mxfs.fiemap",
        "mxfs.other",
        "mxfs.fallocate.x",
    ] {
        assert_eq!(
            c.getxattr(&who(), 500, Some(OsStr::new(name)), 64)
                .unwrap_err(),
            eopnotsupp,
            "getxattr {name}"
        );
        assert_eq!(
            c.getxattr(&who(), 500, Some(OsStr::new(name)), 0)
                .unwrap_err(),
            eopnotsupp,
            "getxattr {name} size"
        );
        assert_eq!(
            c.removexattr(&who(), 500, OsStr::new(name)).unwrap_err(),
            eopnotsupp,
            "removexattr {name}"
        );
    }
    for name in ["mxfs.", "mxfs.fiemap.0.1.0", "mxfs.fallocatex", "mxfs.x"] {
        assert_eq!(
            c.setxattr(&who(), 500, OsStr::new(name), &[0; 24], 0, 0)
                .unwrap_err(),
            eopnotsupp,
            "setxattr {name}"
        );
    }
    assert_eq!(s.count(), n, "nothing forwarded");
    // other names are xattrs as before, also ones that merely look alike
    s.push(FileReply::Data(b"v".to_vec()));
    assert_eq!(
        c.getxattr(&who(), 500, Some(OsStr::new("user.mxfs.fiemap.0.1.0")), 8),
        Ok(Xattr::Data(b"v".to_vec()))
    );
    assert!(matches!(&s.last().op, Op::Getxattr { name, size: 8, .. }
        if name == b"user.mxfs.fiemap.0.1.0"));
    s.push(FileReply::Ok);
    c.setxattr(&who(), 500, OsStr::new("user.mxfs"), b"v", 0, 0)
        .unwrap();
    assert!(matches!(&s.last().op, Op::Setxattr { name, .. } if name == b"user.mxfs"));
}

fn fallocate_value(offset: u64, length: u64, mode: u32, zero: u32) -> Vec<u8> {
    [
        &offset.to_ne_bytes()[..],
        &length.to_ne_bytes(),
        &mode.to_ne_bytes(),
        &zero.to_ne_bytes(),
    ]
    .concat()
}

#[test]
fn fallocate_goes_through_a_file_open_for_writing() {
    let (s, c) = client();
    let set = |value: &[u8]| c.setxattr(&who(), 500, OsStr::new("mxfs.fallocate"), value, 0, 0);
    // no open file of the node at all
    s.push(FileReply::Entry {
        handle: h(5),
        attr: attr(500, libc::S_IFREG | 0o644),
    });
    c.lookup(&who(), ROOT, OsStr::new("f")).unwrap();
    let n = s.count();
    let v = fallocate_value(4096, 8192, libc::FALLOC_FL_COLLAPSE_RANGE as u32, 0);
    assert_eq!(set(&v).unwrap_err(), Errno::from_i32(libc::EBADF));
    // open for reading only: still none
    s.push(FileReply::Opened { fh: 10 });
    let ro = c.open(&who(), 500, libc::O_RDONLY).unwrap();
    assert_eq!(set(&v).unwrap_err(), Errno::from_i32(libc::EBADF));
    assert_eq!(s.count(), n + 1, "only the open was forwarded");
    // open for writing (with flags beside the access mode)
    s.push(FileReply::Opened { fh: 40 });
    let wo = c
        .open(&who(), 500, libc::O_WRONLY | libc::O_APPEND)
        .unwrap();
    s.push(FileReply::Ok);
    set(&v).unwrap();
    let req = s.last();
    assert_eq!(req.creds, who());
    assert_eq!(
        req.op,
        Op::Fallocate {
            fh: 40,
            offset: 4096,
            length: 8192,
            mode: libc::FALLOC_FL_COLLAPSE_RANGE,
        }
    );
    // any mode is passed on; the owner's errno comes back
    s.push(FileReply::Errno(libc::EINVAL));
    let v2 = fallocate_value(0, 1, libc::FALLOC_FL_INSERT_RANGE as u32, 0);
    assert_eq!(set(&v2).unwrap_err(), Errno::from_i32(libc::EINVAL));
    assert!(matches!(
        s.last().op,
        Op::Fallocate {
            fh: 40,
            mode: libc::FALLOC_FL_INSERT_RANGE,
            ..
        }
    ));
    // a value of the wrong size, or with its last u32 not zero
    let n = s.count();
    for bad in [
        &v[..23],
        &[&v[..], &[0][..]].concat()[..],
        &[][..],
        &fallocate_value(0, 1, 0, 1)[..],
    ] {
        assert_eq!(set(bad).unwrap_err(), Errno::from_i32(libc::EINVAL));
    }
    assert_eq!(s.count(), n, "nothing forwarded");
    // read-write does as well; a new owner reopens it
    s.push(FileReply::Ok);
    c.release(&who(), wo, 0, false).unwrap();
    s.push(FileReply::Opened { fh: 50 });
    c.open(&who(), 500, libc::O_RDWR).unwrap();
    s.push(FileReply::Errno(libc::EBADF));
    s.push(FileReply::Opened { fh: 51 });
    s.push(FileReply::Ok);
    set(&v).unwrap();
    assert!(matches!(s.last().op, Op::Fallocate { fh: 51, .. }));
    // the read-only file is never the one
    assert!(s
        .ops()
        .iter()
        .all(|op| !matches!(op, Op::Fallocate { fh: 10, .. })));
    let _ = ro;
}
