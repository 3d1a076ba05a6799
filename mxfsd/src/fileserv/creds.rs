//! Running one request as its caller, on the executing thread only.
//!
//! This module owns the switch of a worker thread's filesystem identity
//! (fsuid, fsgid, supplementary groups) and umask to the client caller's,
//! and its restoration.  The rest of the daemon's threads keep root: the
//! kernel keeps credentials per thread, and we use the raw syscalls
//! (glibc's setgroups() signals every thread to change them all).
//!
//! With a non-zero fsuid the kernel also drops the filesystem
//! capabilities (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_DAC_READ_SEARCH, ...)
//! from the thread's effective set, and gives them back when fsuid
//! returns to 0; so XFS checks permissions exactly as for a local process
//! of that user.  That is also why handles are opened *before* entering
//! (open_by_handle_at needs CAP_DAC_READ_SEARCH).

use super::sys::{self, SysResult};
use crate::wire::fileop::Creds;

/// While alive, the thread's fs credentials are the caller's.
pub struct AsCaller {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

/// `(uid_t)-1`: "no change" to setfsuid, so never a caller's id.
const NO_ID: u32 = u32::MAX;

impl AsCaller {
    pub fn enter(c: &Creds) -> SysResult<AsCaller> {
        if c.uid == NO_ID || c.gid == NO_ID || c.groups.contains(&NO_ID) {
            return Err(libc::EINVAL);
        }
        let saved = AsCaller {
            uid: sys::setfsuid(NO_ID),
            gid: sys::setfsgid(NO_ID),
            groups: sys::getgroups()?,
        };
        // Groups and fsgid first, while fsuid (and so our capabilities)
        // are still the daemon's.  From here on `saved` restores on drop,
        // whatever step fails.
        sys::setgroups(&c.groups)?;
        sys::setfsgid(c.gid);
        if sys::setfsgid(NO_ID) != c.gid {
            return Err(libc::EPERM);
        }
        sys::setfsuid(c.uid);
        if sys::setfsuid(NO_ID) != c.uid {
            return Err(libc::EPERM);
        }
        Ok(saved)
    }
}

impl Drop for AsCaller {
    fn drop(&mut self) {
        // fsuid first: it gives back the capabilities that setfsgid and
        // setgroups need.
        sys::setfsuid(self.uid);
        sys::setfsgid(self.gid);
        let ok = sys::setfsuid(NO_ID) == self.uid
            && sys::setfsgid(NO_ID) == self.gid
            && sys::setgroups(&self.groups).is_ok();
        if !ok {
            // A worker thread left with a client's identity would run the
            // next request with it: never continue.
            tracing::error!("cannot restore the daemon's credentials on a worker thread");
            std::process::abort();
        }
    }
}

/// While alive, the thread's umask is the caller's, so a create applies
/// it exactly as the kernel does locally (not at all under a default
/// ACL).  umask lives in the fs_struct that threads share, hence the
/// per-thread copy first.
pub struct Umask {
    old: libc::mode_t,
}

impl Umask {
    pub fn set(mask: u32) -> SysResult<Umask> {
        sys::unshare_fs()?;
        Ok(Umask {
            old: sys::umask(mask & 0o777),
        })
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        sys::umask(self.old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Creds {
        Creds {
            uid: 1000,
            gid: 1001,
            pid: 1,
            groups: vec![2000, 2001],
        }
    }

    fn ids() -> (u32, u32, SysResult<Vec<libc::gid_t>>) {
        (sys::setfsuid(NO_ID), sys::setfsgid(NO_ID), sys::getgroups())
    }

    #[test]
    fn enter_and_restore_on_this_thread_only() {
        let before = ids();
        // A thread made while a guard is held would inherit the caller's
        // identity (clone copies the creating thread's credentials), so
        // the witness thread starts first.
        let (ask_tx, ask_rx) = std::sync::mpsc::channel::<()>();
        let (ans_tx, ans_rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            while ask_rx.recv().is_ok() {
                ans_tx.send(ids()).unwrap();
            }
        });
        {
            let _c = AsCaller::enter(&caller()).unwrap();
            assert_eq!(ids(), (1000, 1001, Ok(vec![2000, 2001])));
            ask_tx.send(()).unwrap();
            assert_eq!(ans_rx.recv().unwrap(), before, "another thread changed too");
        }
        assert_eq!(ids(), before);
        drop(ask_tx);
        other.join().unwrap();
    }

    #[test]
    fn the_no_change_id_is_refused() {
        for c in [
            Creds {
                uid: NO_ID,
                ..caller()
            },
            Creds {
                gid: NO_ID,
                ..caller()
            },
            Creds {
                groups: vec![NO_ID],
                ..caller()
            },
        ] {
            assert_eq!(AsCaller::enter(&c).err(), Some(libc::EINVAL));
        }
        assert_eq!(sys::setfsuid(NO_ID), 0);
    }

    #[test]
    fn umask_is_per_thread_and_restored() {
        let shared = current_umask();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let u = Umask::set(0o077).unwrap();
            held_tx.send(current_umask()).unwrap();
            go_rx.recv().unwrap();
            drop(u);
            current_umask()
        });
        assert_eq!(held_rx.recv().unwrap(), 0o077);
        // the other threads' umask is untouched while the worker holds one
        assert_eq!(current_umask(), shared);
        go_tx.send(()).unwrap();
        assert_eq!(worker.join().unwrap(), shared);
    }

    fn current_umask() -> libc::mode_t {
        let m = sys::umask(0o022);
        sys::umask(m);
        m
    }
}
