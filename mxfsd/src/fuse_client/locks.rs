//! fcntl and flock locks on a client: FUSE GETLK/SETLK/SETLKW forwarded
//! to the owner, whose kernel arbitrates (see `fileserv::locks`).
//!
//! The owner never waits on a lock.  A SETLKW that the owner answers
//! with EAGAIN is retried here, on a thread of its own so that the FUSE
//! workers stay free for the holder's unlock, until the lock is granted
//! or the caller has a signal to take: FUSE's INTERRUPT does not reach
//! us (fuser answers it ENOSYS), so the waiter looks at the caller's
//! pending signals in `/proc` instead, and answers EINTR (which the
//! kernel restarts, as it does a local wait).
//!
//! A client's flock(2) arrives as a whole-file lock whose type carries
//! [`MXFS_FUSE_LK_FLOCK`] (the module's marking).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::Errno;

use super::client::{Client, R};
use super::convert::unexpected;
use super::Forward;
use crate::metrics::LockMetrics;
use crate::uapi::MXFS_FUSE_LK_FLOCK;
use crate::wire::fileop::{Creds, FileReply, FileRequest, LockSpec, Op};

/// First and longest pause between tries of a waiting lock.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

/// A lock type from FUSE: (the fcntl type, whether it is a flock).
pub fn lock_kind(typ: i32) -> R<(i32, bool)> {
    let flock = typ & MXFS_FUSE_LK_FLOCK != 0;
    let typ = typ & !MXFS_FUSE_LK_FLOCK;
    match typ {
        libc::F_RDLCK | libc::F_WRLCK | libc::F_UNLCK => Ok((typ, flock)),
        _ => Err(Errno::from_i32(libc::EINVAL)),
    }
}

/// Whether thread `tid` has a signal pending that it does not block
/// (or is gone): from `/proc/<tid>/status`, as the kernel would see it
/// on a local wait.
pub fn has_signal(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = field("SigPnd:") | field("ShdPnd:");
    pending & !field("SigBlk:") & !field("SigIgn:") != 0
}

/// A SETLKW that must wait: moved onto a thread of its own.
pub struct LockWaiter<F> {
    fwd: Arc<F>,
    creds: Creds,
    op: Op,
    asked: Instant,
    metrics: Arc<LockMetrics>,
}

impl<F: Forward> LockWaiter<F> {
    /// Try until granted, refused for good, or the caller is signalled.
    pub fn wait(self) -> R<()> {
        let mut pause = FIRST_PAUSE;
        loop {
            let r = self.fwd.call(FileRequest {
                creds: self.creds.clone(),
                op: self.op.clone(),
            });
            match r {
                FileReply::Ok => {
                    self.metrics.granted(self.asked.elapsed());
                    return Ok(());
                }
                FileReply::Errno(libc::EAGAIN) => {}
                FileReply::Errno(e) => return Err(Errno::from_i32(e)),
                r => return Err(unexpected("setlkw", &r)),
            }
            if has_signal(self.creds.pid) {
                return Err(Errno::from_i32(libc::EINTR));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }
}

/// What a SETLK(W) came to: done, or a waiter to run elsewhere.
pub enum SetLk<F> {
    Done(R<()>),
    Wait(Box<LockWaiter<F>>),
}

impl<F: Forward> Client<F> {
    pub fn getlk(&self, c: &Creds, fh: u64, lock: LockSpec) -> R<LockSpec> {
        self.lock_metrics.request();
        let (typ, flock) = lock_kind(lock.typ)?;
        if flock {
            return Err(Errno::from_i32(libc::EINVAL));
        }
        let lock = LockSpec { typ, ..lock };
        match self.on_open(c, fh, |fh| Op::Getlk { fh, lock })? {
            FileReply::Lock(l) => lock_kind(l.typ).map(|_| l),
            r => Err(unexpected("getlk", &r)),
        }
    }

    /// One try at the owner; when that is EAGAIN and the caller waits,
    /// the waiter that goes on trying.
    pub fn setlk(&self, c: &Creds, fh: u64, lock: LockSpec, sleep: bool) -> SetLk<F> {
        let asked = Instant::now();
        self.lock_metrics.request();
        let (typ, flock) = match lock_kind(lock.typ) {
            Ok(k) => k,
            Err(e) => return SetLk::Done(Err(e)),
        };
        let lock = LockSpec { typ, ..lock };
        let op = |fh| Op::Setlk {
            fh,
            lock,
            sleep,
            flock,
        };
        match self.on_open(c, fh, op) {
            Ok(FileReply::Ok) => {
                if typ != libc::F_UNLCK {
                    self.lock_metrics.granted(asked.elapsed());
                }
                SetLk::Done(Ok(()))
            }
            Ok(FileReply::Errno(libc::EAGAIN)) if sleep => {
                let owner_fh = match self.open_file(fh) {
                    Ok(f) => f.owner_fh.load(Ordering::Acquire),
                    Err(e) => return SetLk::Done(Err(e)),
                };
                SetLk::Wait(Box::new(LockWaiter {
                    fwd: self.fwd.clone(),
                    creds: c.clone(),
                    op: op(owner_fh),
                    asked,
                    metrics: self.lock_metrics.clone(),
                }))
            }
            Ok(FileReply::Errno(e)) => SetLk::Done(Err(Errno::from_i32(e))),
            Ok(r) => SetLk::Done(Err(unexpected("setlk", &r))),
            Err(e) => SetLk::Done(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_kinds_split_the_flock_mark_and_refuse_other_types() {
        assert_eq!(lock_kind(libc::F_WRLCK).unwrap(), (libc::F_WRLCK, false));
        assert_eq!(
            lock_kind(libc::F_RDLCK | MXFS_FUSE_LK_FLOCK).unwrap(),
            (libc::F_RDLCK, true)
        );
        assert_eq!(
            lock_kind(libc::F_UNLCK | MXFS_FUSE_LK_FLOCK).unwrap(),
            (libc::F_UNLCK, true)
        );
        assert!(lock_kind(7).is_err());
        assert!(lock_kind(-1).is_err());
    }

    #[test]
    fn a_thread_of_ours_has_no_signal_and_a_missing_one_has() {
        assert!(!has_signal(std::process::id()));
        // pid_max is at most 2^22: this thread cannot exist
        assert!(has_signal(u32::MAX - 1));
    }
}
