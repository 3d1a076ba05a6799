//! The client's FUSE connection: `/dev/fuse`, its mount, and the relay
//! between the kernel and fuser that lets a restarted daemon take the
//! connection over (issue 6).
//!
//! fuser serves a session that starts with the kernel's INIT and cannot
//! be handed a connection that is already running.  So fuser never talks
//! to `/dev/fuse` here: it reads and writes one end of a `SOCK_SEQPACKET`
//! socket pair (one message per request or reply, as on the device), and
//! two pumps carry the messages between the device and the other end:
//! - the request pump reads the device, notes each request that expects
//!   an answer in the [`Keep`] (and the INIT once), and passes it on;
//! - the reply pump passes fuser's answers to the device and marks their
//!   requests answered.
//!
//! A daemon started on a kept connection gives fuser the INIT the kernel
//! sent the first daemon (and drops fuser's answer: the kernel has its
//! answer already), then the requests the dead daemon left unanswered,
//! whose callers still wait in the kernel, then everything new.
//!
//! FUSE_INTERRUPT stays here: fuser answers it ENOSYS, which would turn
//! the kernel's interrupts off for good.  An interrupt for a request this
//! relay never passed to fuser (one a killed daemon read but had not kept
//! yet, whose caller would otherwise wait until the mount goes) is
//! answered for it: that request fails with EINTR.  Others are left to
//! their answer.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tracing::{debug, info, warn};

use super::keep::{Keep, REQ_MAX};

/// `struct fuse_in_header`: len u32, opcode u32, unique u64, nodeid u64,
/// uid, gid, pid u32, total_extlen u16, padding u16.
const IN_HEADER: usize = 40;
/// `struct fuse_out_header`: len u32, error i32, unique u64.
const OUT_HEADER: usize = 16;

const FUSE_FORGET: u32 = 2;
const FUSE_CREATE: u32 = 35;
const FUSE_TMPFILE: u32 = 51;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_DESTROY: u32 = 38;
const FUSE_NOTIFY_REPLY: u32 = 41;
const FUSE_BATCH_FORGET: u32 = 42;

/// Uniques the relay makes up itself (the kernel's count up from 1 and
/// never get near): answers to them go nowhere.
const OWN_UNIQUE: u64 = 0xffff_ffff_ffff_0000;

/// Room for any message either way: a request of [`REQ_MAX`], a read
/// reply of `MAX_IO`.
const BUF: usize = REQ_MAX;

/// The header of a request from the kernel: (opcode, unique).
pub fn request_header(b: &[u8]) -> Option<(u32, u64)> {
    if b.len() < IN_HEADER {
        return None;
    }
    let len = u32::from_ne_bytes(b[0..4].try_into().ok()?) as usize;
    if len != b.len() {
        return None;
    }
    let opcode = u32::from_ne_bytes(b[4..8].try_into().ok()?);
    let unique = u64::from_ne_bytes(b[8..16].try_into().ok()?);
    Some((opcode, unique))
}

/// The unique of a reply (or 0 for a notification).
pub fn reply_unique(b: &[u8]) -> Option<u64> {
    if b.len() < OUT_HEADER {
        return None;
    }
    Some(u64::from_ne_bytes(b[8..16].try_into().ok()?))
}

/// FUSE_TMPFILE (from 6.1) carries what FUSE_CREATE does, a
/// `fuse_create_in` and a name ("/" for a tmpfile), and takes the same
/// answer; fuser has no TMPFILE.  So fuser gets it as a CREATE of "/", a
/// name no real CREATE can have, which the client makes an `O_TMPFILE`
/// open (`Client::create`).
fn tmpfile_as_create(msg: &mut [u8]) {
    if request_header(msg).map(|(opcode, _)| opcode) == Some(FUSE_TMPFILE) {
        msg[4..8].copy_from_slice(&FUSE_CREATE.to_ne_bytes());
    }
}

/// Whether the kernel waits for an answer to this request.
fn expects_answer(opcode: u32) -> bool {
    !matches!(
        opcode,
        FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT | FUSE_NOTIFY_REPLY
    )
}

/// The request an interrupt is for (`struct fuse_interrupt_in`).
pub fn interrupted_unique(b: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(
        b.get(IN_HEADER..IN_HEADER + 8)?.try_into().ok()?,
    ))
}

/// The answer that fails request `unique` with `errno`.
fn error_reply(unique: u64, errno: i32) -> Vec<u8> {
    let mut b = vec![0; OUT_HEADER];
    b[0..4].copy_from_slice(&(OUT_HEADER as u32).to_ne_bytes());
    b[4..8].copy_from_slice(&(-errno).to_ne_bytes());
    b[8..16].copy_from_slice(&unique.to_ne_bytes());
    b
}

/// The requests this relay passed to fuser and fuser has not answered.
#[derive(Default)]
struct Passed(Mutex<HashSet<u64>>);

impl Passed {
    fn lock(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A DESTROY request of our own: it ends one fuser worker.
fn destroy_request(unique: u64) -> Vec<u8> {
    let mut b = vec![0; IN_HEADER];
    b[0..4].copy_from_slice(&(IN_HEADER as u32).to_ne_bytes());
    b[4..8].copy_from_slice(&FUSE_DESTROY.to_ne_bytes());
    b[8..16].copy_from_slice(&unique.to_ne_bytes());
    b
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn write_fd(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<()> {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != buf.len() {
        return Err(io::Error::other("short write of a FUSE message"));
    }
    Ok(())
}

/// One message to the socket (blocking; EINTR retried).
fn send_msg(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<()> {
    loop {
        // SAFETY: buf is valid for reads of buf.len() bytes.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A `SOCK_SEQPACKET` pair whose messages may be as large as FUSE's.
fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors socketpair returns.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both are fresh descriptors owned by nobody else.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A message must fit the sender's buffer whole; the default (about
    // 200 KiB) is less than a 1 MiB write.  SO_SNDBUFFORCE passes
    // net.core.wmem_max (root only: mxfsd is).
    let size: libc::c_int = 4 * BUF as libc::c_int;
    for fd in [&pair.0, &pair.1] {
        // SAFETY: a valid socket and a c_int option value.
        cvt(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
        .map_err(|e| io::Error::new(e.kind(), format!("sizing the FUSE relay socket: {e}")))?;
    }
    Ok(pair)
}

/// Open `/dev/fuse` and mount it on `mountpoint` (an existing directory)
/// with `options` (the mount data after `fd=`, `rootmode=` and the ids).
pub fn open_and_mount(mountpoint: &Path, source: &str, options: &str) -> io::Result<File> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| io::Error::new(e.kind(), format!("opening /dev/fuse: {e}")))?;
    let data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,{options}",
        dev.as_raw_fd()
    );
    let c = |s: &str| std::ffi::CString::new(s).map_err(io::Error::other);
    let (src, target, fstype, data) = (
        c(source)?,
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
            mountpoint.as_os_str(),
        ))
        .map_err(io::Error::other)?,
        c("fuse")?,
        c(&data)?,
    );
    // SAFETY: all four are valid NUL-terminated strings that outlive the
    // call.
    cvt(unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    })
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("mounting FUSE on {}: {e}", mountpoint.display()),
        )
    })?;
    Ok(dev)
}

/// The running relay: its two pumps.
pub struct Relay {
    pumps: Vec<JoinHandle<()>>,
}

impl Relay {
    pub fn join(self) {
        for p in self.pumps {
            let _ = p.join();
        }
    }
}

/// What a dead daemon's session leaves for the next one.
pub struct Replay {
    /// The kernel's INIT request.
    pub init: Vec<u8>,
    /// The requests it left unanswered: (unique, request).
    pub requests: Vec<(u64, Vec<u8>)>,
}

/// Start a session on `dev`: `replay` is `None` for a new mount (the
/// kernel's INIT is read from the device and answered by fuser), or what
/// a dead daemon left (the INIT comes from the keep and fuser's answer to
/// it is dropped; the requests are served first).  `start` builds fuser's
/// session on the socket end it is given (it reads and answers the INIT
/// before returning); `workers` is how many fuser threads read it.
pub fn start<S>(
    dev: Arc<File>,
    keep: Arc<Keep>,
    replay: Option<Replay>,
    workers: usize,
    start: impl FnOnce(OwnedFd) -> io::Result<S>,
) -> io::Result<(S, Relay)> {
    let (ours, theirs) = socket_pair()?;
    let mut buf = vec![0u8; BUF];
    let resumed = replay.is_some();
    let (init, requests) = match replay {
        Some(Replay { init, requests }) => (init, requests),
        None => {
            let n = loop {
                match read_fd(dev.as_fd(), &mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            let init = buf[..n].to_vec();
            keep.set_init(&init)?;
            (init, Vec::new())
        }
    };
    if request_header(&init).is_none() {
        return Err(io::Error::other("the FUSE INIT request is malformed"));
    }
    send_msg(ours.as_fd(), &init)?;
    let session = start(theirs)?;
    let n = read_fd(ours.as_fd(), &mut buf)?;
    if !resumed {
        write_fd(dev.as_fd(), &buf[..n])
            .map_err(|e| io::Error::new(e.kind(), format!("answering FUSE INIT: {e}")))?;
    }
    if !requests.is_empty() {
        info!(
            requests = requests.len(),
            "FUSE client: serving the requests the previous mxfsd left unanswered"
        );
    }
    let ours = Arc::new(ours);
    let passed = Arc::new(Passed::default());
    let to_fuser = {
        let (dev, keep, ours, passed) = (dev.clone(), keep.clone(), ours.clone(), passed.clone());
        std::thread::Builder::new()
            .name("fuse-requests".into())
            .spawn(move || {
                // From this thread: fuser's workers start after this
                // function returns, and the socket holds only a few.
                for (unique, r) in &requests {
                    passed.lock().insert(*unique);
                    if let Err(e) = send_msg(ours.as_fd(), r) {
                        warn!("FUSE client: replaying a kept request: {e}");
                    }
                }
                pump_requests(&dev, &keep, &ours, &passed, buf);
                // The connection is gone (unmounted): end every worker.
                for i in 0..workers as u64 {
                    let _ = send_msg(ours.as_fd(), &destroy_request(OWN_UNIQUE + i));
                }
            })?
    };
    let to_kernel = std::thread::Builder::new()
        .name("fuse-replies".into())
        .spawn(move || pump_replies(&dev, &keep, &ours, &passed))?;
    Ok((
        session,
        Relay {
            pumps: vec![to_fuser, to_kernel],
        },
    ))
}

fn pump_requests(dev: &File, keep: &Keep, ours: &OwnedFd, passed: &Passed, mut buf: Vec<u8>) {
    loop {
        let n = match read_fd(dev.as_fd(), &mut buf) {
            Ok(n) => n,
            // ENOENT: the request was interrupted before we read it
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::ENOENT)
                ) =>
            {
                continue
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return,
            Err(e) => {
                warn!("FUSE client: reading /dev/fuse: {e}");
                return;
            }
        };
        tmpfile_as_create(&mut buf[..n]);
        let msg = &buf[..n];
        match request_header(msg) {
            Some((FUSE_INTERRUPT, _)) => {
                interrupt(dev, passed, msg);
                continue;
            }
            Some((opcode, unique)) if expects_answer(opcode) => {
                keep.request_read(unique, msg);
                passed.lock().insert(unique);
            }
            Some(_) => {}
            None => {
                warn!(
                    len = n,
                    "FUSE client: a malformed request from the kernel; dropped"
                );
                continue;
            }
        }
        if let Err(e) = send_msg(ours.as_fd(), msg) {
            debug!("FUSE client: the session is gone: {e}");
            return;
        }
    }
}

/// An interrupt: fail its request with EINTR when nobody here will ever
/// answer it (see the module docs); otherwise its answer comes.
fn interrupt(dev: &File, passed: &Passed, msg: &[u8]) {
    let Some(target) = interrupted_unique(msg) else {
        warn!("FUSE client: a malformed interrupt from the kernel; dropped");
        return;
    };
    if passed.lock().contains(&target) {
        return;
    }
    match write_fd(dev.as_fd(), &error_reply(target, libc::EINTR)) {
        Ok(()) => info!(
            unique = target,
            "FUSE client: a request the previous mxfsd read but never kept was interrupted: \
             failed with EINTR"
        ),
        // answered meanwhile
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => warn!(
            unique = target,
            "FUSE client: failing an interrupted request: {e}"
        ),
    }
}

fn pump_replies(dev: &File, keep: &Keep, ours: &OwnedFd, passed: &Passed) {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match read_fd(ours.as_fd(), &mut buf) {
            Ok(0) => return, // fuser has ended
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("FUSE client: reading fuser's answers: {e}");
                return;
            }
        };
        let msg = &buf[..n];
        let Some(unique) = reply_unique(msg) else {
            warn!(
                len = n,
                "FUSE client: a malformed answer from fuser; dropped"
            );
            continue;
        };
        if unique >= OWN_UNIQUE {
            continue;
        }
        match write_fd(dev.as_fd(), msg) {
            Ok(()) => {}
            // ENOENT: the caller was interrupted, or the request was
            // answered before a restart; ENODEV: the mount is gone.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) => {}
            Err(e) => warn!(unique, "FUSE client: answering the kernel: {e}"),
        }
        if unique != 0 {
            passed.lock().remove(&unique);
            keep.request_answered(unique);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked() {
        let d = destroy_request(7);
        assert_eq!(request_header(&d), Some((FUSE_DESTROY, 7)));
        assert_eq!(request_header(&d[..39]), None);
        let mut long = d.clone();
        long.push(0);
        assert_eq!(request_header(&long), None, "length must match the message");
        assert_eq!(reply_unique(&[0; 15]), None);
        let mut r = vec![0; 16];
        r[8..16].copy_from_slice(&9u64.to_ne_bytes());
        assert_eq!(reply_unique(&r), Some(9));
        assert!(!expects_answer(FUSE_FORGET) && !expects_answer(FUSE_BATCH_FORGET));
        assert!(expects_answer(16));
        let mut i = destroy_request(11);
        assert_eq!(interrupted_unique(&i), None);
        i.extend_from_slice(&42u64.to_ne_bytes());
        assert_eq!(interrupted_unique(&i), Some(42));
        let r = error_reply(42, libc::EINTR);
        assert_eq!(reply_unique(&r), Some(42));
        assert_eq!(
            i32::from_ne_bytes(r[4..8].try_into().unwrap()),
            -libc::EINTR
        );
    }

    #[test]
    fn large_messages_cross_the_socket_whole() {
        let Ok((a, b)) = socket_pair() else {
            // SO_SNDBUFFORCE needs CAP_NET_ADMIN
            eprintln!("skipped: not root");
            return;
        };
        let big = vec![5u8; REQ_MAX];
        let t = std::thread::spawn(move || send_msg(a.as_fd(), &big));
        let mut buf = vec![0u8; BUF + 10];
        let n = read_fd(b.as_fd(), &mut buf).unwrap();
        assert_eq!(n, REQ_MAX);
        t.join().unwrap().unwrap();
    }
}
