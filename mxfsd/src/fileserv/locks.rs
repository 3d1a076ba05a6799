//! The fcntl and flock locks that clients hold on the owner's files.
//!
//! The owner's kernel arbitrates: each lock owner of a client (a FUSE
//! lock owner id: a process's file table for fcntl locks, an open file
//! for flock and OFD locks) gets an open file description of its own on
//! the owner's XFS inode, and its locks are OFD locks (`F_OFD_SETLK`) or
//! flock(2) locks on that description.  Those conflict with each other
//! and with the locks that the owner's own processes take through its
//! mxfs mount (the module puts them on the same XFS inode), exactly as
//! the kernel's rules say, ranges, upgrades and splits included.
//! Closing a description drops all of its locks at once: that is how a
//! close on the client (FUSE FLUSH, RELEASE), and a client that leaves,
//! give their locks back.
//!
//! Requests never wait here: a lock the kernel cannot grant at once is
//! EAGAIN, and the client's mxfsd retries while its caller waits.
//! Locks live as long as this owner: a change of owner loses them (the
//! DLM-backed lock recovery that would keep them is not built).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use super::sys::{self, proc_path, SysResult};
use crate::wire::fileop::LockSpec;

/// FUSE's "to the end of the file" (`OFFSET_MAX`).
pub const LOCK_EOF: u64 = i64::MAX as u64;

/// One lock owner of one client on one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LockKey {
    client: u64,
    flock: bool,
    owner: u64,
    /// (device major, minor, inode number)
    inode: (u32, u32, u64),
}

/// A lock owner's open file description, and the pid its last lock was
/// taken by (what F_GETLK reports to a process of the same node).
struct Held {
    fd: OwnedFd,
    pid: u32,
}

#[derive(Default)]
struct Inner {
    held: HashMap<LockKey, Held>,
    /// The keys that took a lock through each (client, open id), dropped
    /// when that open is released.
    by_open: HashMap<(u64, u64), HashSet<LockKey>>,
}

#[derive(Default)]
pub struct ClientLocks {
    inner: Mutex<Inner>,
}

impl LockKey {
    /// `owner`'s key of `client` on the inode `file` is open on.
    fn of(client: u64, flock: bool, owner: u64, file: BorrowedFd<'_>) -> SysResult<LockKey> {
        let st = sys::statx(file)?;
        Ok(LockKey {
            client,
            flock,
            owner,
            inode: (st.stx_dev_major, st.stx_dev_minor, st.stx_ino),
        })
    }
}

/// The struct flock of a FUSE range (`end` inclusive, [`LOCK_EOF`] for
/// "to the end").
fn flock_of(l: &LockSpec) -> SysResult<libc::flock> {
    let typ = match l.typ {
        libc::F_RDLCK | libc::F_WRLCK | libc::F_UNLCK => l.typ as libc::c_short,
        _ => return Err(libc::EINVAL),
    };
    if l.start > LOCK_EOF || l.end < l.start {
        return Err(libc::EINVAL);
    }
    let len = if l.end >= LOCK_EOF {
        0
    } else {
        (l.end - l.start + 1) as i64
    };
    Ok(libc::flock {
        l_type: typ,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: l.start as i64,
        l_len: len,
        l_pid: 0,
    })
}

/// A description of its own for one lock owner: read-write when the
/// daemon may (a write lock needs it), else with the client's own
/// access mode.  Never waits (O_NONBLOCK: a lease breaks with EAGAIN).
fn open_for_locks(file: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    let path = proc_path(file);
    let flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    match sys::open_path(&path, libc::O_RDWR | flags) {
        Err(libc::EACCES | libc::EPERM | libc::EROFS | libc::ETXTBSY) => {
            let mode = sys::getfl(file)? & libc::O_ACCMODE;
            sys::open_path(&path, mode | flags)
        }
        r => r,
    }
}

impl Inner {
    /// The pid of the lock owner of `asker`'s client (on the same inode)
    /// that holds `conflict`, an OFD lock F_GETLK found, or 0.  The kernel
    /// does not say which description holds it; the holder is the one
    /// that does not see it (its own locks never conflict with it).
    fn holder_pid(&self, asker: &LockKey, conflict: &libc::flock) -> u32 {
        for (k, h) in &self.held {
            if k.client != asker.client || k.inode != asker.inode || k.flock || k == asker {
                continue;
            }
            let mut probe = libc::flock {
                l_type: libc::F_WRLCK as libc::c_short,
                l_pid: 0, // the OFD calls refuse any other
                ..*conflict
            };
            if sys::ofd_lock(h.fd.as_fd(), true, &mut probe).is_err() {
                continue;
            }
            let same = probe.l_type == conflict.l_type
                && probe.l_start == conflict.l_start
                && probe.l_len == conflict.l_len;
            if !same {
                return h.pid;
            }
        }
        0
    }

    /// Drop a lock owner's description (and so all its locks), and every
    /// note of it, so that a later release of an open it once used does
    /// not drop what it takes again through another.
    fn forget(&mut self, key: &LockKey) {
        if self.held.remove(key).is_some() {
            for keys in self.by_open.values_mut() {
                keys.remove(key);
            }
        }
    }
}

impl ClientLocks {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take, change or drop a lock of `client` through its open `fh`
    /// (`file`, the owner's descriptor of that open).
    pub fn set(
        &self,
        client: u64,
        fh: u64,
        file: BorrowedFd<'_>,
        lock: &LockSpec,
        flock: bool,
    ) -> SysResult<()> {
        let mut fl = flock_of(lock)?;
        if flock && (lock.start != 0 || lock.end < LOCK_EOF) {
            return Err(libc::EINVAL);
        }
        let key = LockKey::of(client, flock, lock.lock_owner, file)?;
        let mut inner = self.inner();
        if lock.typ == libc::F_UNLCK {
            let whole = lock.start == 0 && lock.end >= LOCK_EOF;
            if flock || whole {
                // nothing is left: the description goes, and its locks
                inner.forget(&key);
            } else if let Some(h) = inner.held.get(&key) {
                sys::ofd_lock(h.fd.as_fd(), false, &mut fl)?;
            }
            return Ok(());
        }
        let fresh = !inner.held.contains_key(&key);
        if fresh {
            let fd = open_for_locks(file)?;
            inner.held.insert(key, Held { fd, pid: lock.pid });
        }
        let fd = inner.held[&key].fd.as_fd();
        let r = if flock {
            let op = if lock.typ == libc::F_WRLCK {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            };
            sys::flock(fd, op | libc::LOCK_NB)
        } else {
            sys::ofd_lock(fd, false, &mut fl)
        };
        match r {
            Ok(()) => {
                if let Some(h) = inner.held.get_mut(&key) {
                    h.pid = lock.pid;
                }
                inner.by_open.entry((client, fh)).or_default().insert(key);
                Ok(())
            }
            Err(e) => {
                if fresh {
                    // it holds nothing
                    inner.held.remove(&key);
                }
                // flock's EWOULDBLOCK is EAGAIN on Linux; F_OFD_SETLK may
                // say EACCES: both mean "held by someone else"
                Err(if e == libc::EACCES { libc::EAGAIN } else { e })
            }
        }
    }

    /// The first fcntl lock that would conflict with `lock`, or one of
    /// type F_UNLCK: the client's own locks never conflict.
    pub fn test(&self, client: u64, file: BorrowedFd<'_>, lock: &LockSpec) -> SysResult<LockSpec> {
        let mut fl = flock_of(lock)?;
        if lock.typ == libc::F_UNLCK {
            return Err(libc::EINVAL);
        }
        let key = LockKey::of(client, false, lock.lock_owner, file)?;
        let inner = self.inner();
        let temporary;
        let fd = match inner.held.get(&key) {
            Some(h) => h.fd.as_fd(),
            None => {
                temporary = open_for_locks(file)?;
                temporary.as_fd()
            }
        };
        sys::ofd_lock(fd, true, &mut fl)?;
        if fl.l_type == libc::F_UNLCK as libc::c_short {
            return Ok(LockSpec {
                typ: libc::F_UNLCK,
                ..*lock
            });
        }
        let start = fl.l_start.max(0) as u64;
        let end = if fl.l_len <= 0 {
            LOCK_EOF
        } else {
            start.saturating_add(fl.l_len as u64 - 1).min(LOCK_EOF)
        };
        // A pid means something only to a process of the holder's own
        // node: find which of this client's lock owners holds it.
        let pid = if fl.l_pid == -1 {
            inner.holder_pid(&key, &fl)
        } else {
            0 // a process on the owner
        };
        Ok(LockSpec {
            lock_owner: 0,
            start,
            end,
            typ: i32::from(fl.l_type),
            pid,
        })
    }

    /// A close on the client (FUSE FLUSH): POSIX drops every fcntl lock
    /// that `owner` holds on the file.
    pub fn flush(&self, client: u64, file: BorrowedFd<'_>, owner: u64) -> SysResult<()> {
        let key = LockKey::of(client, false, owner, file)?;
        self.inner().forget(&key);
        Ok(())
    }

    /// The client's last reference to open `fh` went (FUSE RELEASE):
    /// what was locked through it goes too (its flock and OFD locks;
    /// fcntl locks of a process went at its close already).
    pub fn release(&self, client: u64, fh: u64) {
        let mut inner = self.inner();
        if let Some(keys) = inner.by_open.remove(&(client, fh)) {
            for k in keys {
                inner.forget(&k);
            }
        }
    }

    /// A client left or died: all its locks go.  Returns how many lock
    /// owners it had.
    pub fn release_client(&self, client: u64) -> usize {
        let mut inner = self.inner();
        inner.by_open.retain(|(c, _), _| *c != client);
        let before = inner.held.len();
        inner.held.retain(|k, _| k.client != client);
        before - inner.held.len()
    }

    /// How many lock owners hold something (for tests and metrics).
    pub fn owners(&self) -> usize {
        self.inner().held.len()
    }
}
