//! Cross-node lock checks, run on several nodes at once.
//!
//! - `--lock-counter FILE flock|fcntl PROCS N`: PROCS processes each add
//!   1 to the number in FILE, N times, each time under an exclusive lock
//!   of the kind named (blocking; fcntl locks bytes 0..32, where the
//!   number is).  Run on every node at once: the final number is exact
//!   only if the locks exclude each other across nodes.  Prints
//!   `counter done N*PROCS increments`.
//! - `--lock-hold FILE flock|fcntl SECS`: takes an exclusive lock (not
//!   waiting), creates FILE.held, holds the lock SECS seconds, releases.
//! - `--lock-test FILE`: F_GETLK for a write lock of bytes 0..32; prints
//!   `unlocked`, or `locked TYPE START LEN` of the first conflicting lock.

use std::path::Path;
use std::time::Duration;

use super::{chk, Fd};
use anyhow::{anyhow, Result};

/// The counter's bytes, and the fcntl lock's range.
const WIDTH: usize = 32;

fn open(path: &Path) -> Result<Fd> {
    Fd::open(path, libc::O_RDWR | libc::O_CREAT, 0o644)
}

#[derive(Clone, Copy)]
enum Kind {
    Flock,
    Fcntl,
}

fn kind(s: &str) -> Option<Kind> {
    match s {
        "flock" => Some(Kind::Flock),
        "fcntl" => Some(Kind::Fcntl),
        _ => None,
    }
}

fn range(typ: i32) -> libc::flock {
    libc::flock {
        l_type: typ as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: WIDTH as i64,
        l_pid: 0,
    }
}

/// Lock (exclusive) or unlock; `wait` blocks for the lock.
fn lock(fd: &Fd, kind: Kind, on: bool, wait: bool) -> Result<()> {
    let r = match kind {
        Kind::Flock => {
            let op = if on { libc::LOCK_EX } else { libc::LOCK_UN };
            let op = if wait { op } else { op | libc::LOCK_NB };
            // SAFETY: plain call on our fd.
            unsafe { libc::flock(fd.0, op) }
        }
        Kind::Fcntl => {
            let mut fl = range(if on { libc::F_WRLCK } else { libc::F_UNLCK });
            let cmd = if wait { libc::F_SETLKW } else { libc::F_SETLK };
            // SAFETY: valid struct flock.
            unsafe { libc::fcntl(fd.0, cmd, &mut fl) }
        }
    };
    chk(r, if on { "lock" } else { "unlock" }).map(|_| ())
}

fn bump(fd: &Fd) -> Result<()> {
    let mut buf = [0u8; WIDTH];
    // SAFETY: buf is valid for WIDTH bytes.
    let n = chk(
        unsafe { libc::pread(fd.0, buf.as_mut_ptr().cast(), WIDTH, 0) },
        "pread",
    )?;
    let text = std::str::from_utf8(&buf[..n as usize])?;
    let value: u64 = match text.trim() {
        "" => 0,
        t => t.parse().map_err(|_| anyhow!("counter holds {t:?}"))?,
    };
    let out = format!("{:<width$}", value + 1, width = WIDTH - 1) + "\n";
    // SAFETY: out is valid for WIDTH bytes.
    let w = chk(
        unsafe { libc::pwrite(fd.0, out.as_ptr().cast(), WIDTH, 0) },
        "pwrite",
    )?;
    if w != WIDTH as isize {
        return Err(anyhow!("pwrite wrote {w} of {WIDTH} bytes"));
    }
    Ok(())
}

fn counter(path: &Path, kind: Kind, procs: usize, n: usize) -> Result<()> {
    let mut children = Vec::new();
    for _ in 0..procs {
        // SAFETY: the child only makes syscalls and exits.
        let pid = chk(unsafe { libc::fork() }, "fork")?;
        if pid == 0 {
            // its own open file: flock locks belong to open files
            let code = match open(path).and_then(|fd| {
                (0..n).try_for_each(|_| {
                    lock(&fd, kind, true, true)?;
                    let r = bump(&fd);
                    lock(&fd, kind, false, false)?;
                    r
                })
            }) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("mxfs-opcheck --lock-counter: {e:#}");
                    1
                }
            };
            // SAFETY: leave the child without running the parent's
            // destructors.
            unsafe { libc::_exit(code) };
        }
        children.push(pid);
    }
    let mut failed = 0;
    for pid in children {
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(anyhow!("{failed} of {procs} processes failed"));
    }
    println!("counter done {} increments", n * procs);
    Ok(())
}

fn hold(path: &Path, kind: Kind, secs: u64) -> Result<()> {
    let fd = open(path)?;
    lock(&fd, kind, true, false)?;
    let mut held = path.as_os_str().to_owned();
    held.push(".held");
    std::fs::write(&held, b"")?;
    std::thread::sleep(Duration::from_secs(secs));
    lock(&fd, kind, false, false)?;
    println!("held and released");
    Ok(())
}

fn test(path: &Path) -> Result<()> {
    let fd = open(path)?;
    let mut fl = range(libc::F_WRLCK);
    // SAFETY: valid struct flock.
    chk(
        unsafe { libc::fcntl(fd.0, libc::F_GETLK, &mut fl) },
        "F_GETLK",
    )?;
    match i32::from(fl.l_type) {
        libc::F_UNLCK => println!("unlocked"),
        t => println!(
            "locked {} {} {}",
            if t == libc::F_WRLCK { "write" } else { "read" },
            fl.l_start,
            fl.l_len
        ),
    }
    Ok(())
}

/// `args` after the subcommand; returns the exit status.
pub fn cli(sub: &str, args: &[String]) -> i32 {
    let r = match (sub, args) {
        ("--lock-counter", [file, k, procs, n]) => match (kind(k), procs.parse(), n.parse()) {
            (Some(k), Ok(p), Ok(n)) => counter(Path::new(file), k, p, n),
            _ => return 2,
        },
        ("--lock-hold", [file, k, secs]) => match (kind(k), secs.parse()) {
            (Some(k), Ok(s)) => hold(Path::new(file), k, s),
            _ => return 2,
        },
        ("--lock-test", [file]) => test(Path::new(file)),
        _ => return 2,
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mxfs-opcheck {sub}: {e:#}");
            1
        }
    }
}
