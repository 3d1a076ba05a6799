//! `mxfs-opcheck`: a guest-side checker of every operation a local
//! filesystem offers, run on plain XFS (the baseline) and on an mxfs mount,
//! so that the testbed can compare the two result sets.
//!
//! `mxfs-opcheck DIR [GROUP...]` runs all (or the named) groups, each in its
//! own directory inside a fresh subdirectory of DIR, and prints per group:
//!
//! - `note NAME: TEXT` for a sub-feature this filesystem does not offer
//!   (say an fallocate mode answering EOPNOTSUPP); zero or more, before the
//!   group's line. A harness comparing XFS and mxfs compares these too.
//! - then exactly one of `group NAME ok`, `group NAME skipped: REASON`
//!   (the kernel or filesystem lacks the whole feature) or
//!   `group NAME FAILED: REASON`.
//!
//! The exit status is 0 only if no group failed (2 for a usage error).
//! The fresh subdirectory is removed at the end unless a group failed, in
//! which case it is kept and named on stderr.
//!
//! `mxfs-opcheck --dio-fsx FILE NUMOPS SEED` runs an fsx-style random
//! exerciser with O_DIRECT (see [`dio_fsx`]); `--meta-bench DIR N` measures
//! create, stat and unlink rates (see [`meta_bench`]).
//!
//! Linux only; the groups use libc syscalls directly. Several need root
//! (the testbed runs the tool as root); run as another user they note what
//! they left out.

use anyhow::{anyhow, bail, Result};
use std::cell::RefCell;
use std::ffi::CString;
use std::fmt;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};

mod attrs;
mod create;
pub mod dio_fsx;
mod fallocate;
mod fiemap;
mod handles;
mod io;
pub mod lock_counter;
mod locks;
pub mod meta_bench;
mod mmap;
mod namespace;
mod perms;
mod readdir;
mod rename;
mod seek;
mod splice;
mod statfs;
mod sync;
mod xattr;

/// One group: checks one family of operations inside `ctx.dir`.
pub type GroupFn = fn(&Ctx) -> Result<()>;

/// Every group, in the order they run.
pub const GROUPS: &[(&str, GroupFn)] = &[
    ("create", create::run),
    ("namespace", namespace::run),
    ("rename", rename::run),
    ("perms", perms::run),
    ("attrs", attrs::run),
    ("xattr", xattr::run),
    ("readdir", readdir::run),
    ("io", io::run),
    ("splice", splice::run),
    ("mmap", mmap::run),
    ("sync", sync::run),
    ("fallocate", fallocate::run),
    ("seek", seek::run),
    ("fiemap", fiemap::run),
    ("statfs", statfs::run),
    ("locks", locks::run),
    ("handles", handles::run),
];

/// The uid and gid the groups use as "somebody else".
pub const OTHER_UID: u32 = 1234;
pub const OTHER_GID: u32 = 1234;
/// A second unprivileged uid, in no ACL entry.
pub const STRANGER_UID: u32 = 1235;

/// What a group gets: its own empty directory, and a place for notes.
pub struct Ctx {
    pub dir: PathBuf,
    pub root: bool,
    notes: RefCell<Vec<String>>,
}

impl Ctx {
    /// A path inside the group's directory.
    pub fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Records a sub-feature this filesystem does not offer.
    pub fn note(&self, text: impl Into<String>) {
        self.notes.borrow_mut().push(text.into());
    }
}

/// The error a group returns when the whole feature is missing.
#[derive(Debug)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

/// Returns from a group as skipped.
pub fn skip<T>(reason: impl Into<String>) -> Result<T> {
    Err(Skip(reason.into()).into())
}

/// How one group ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Skipped(String),
    Failed(String),
}

const USAGE: &str = "usage: mxfs-opcheck DIR [GROUP...]\n       \
                     mxfs-opcheck --dio-fsx FILE NUMOPS SEED\n       \
                     mxfs-opcheck --meta-bench DIR NFILES\n       \
                     mxfs-opcheck --lock-counter FILE flock|fcntl PROCS N\n       \
                     mxfs-opcheck --lock-hold FILE flock|fcntl SECS\n       \
                     mxfs-opcheck --lock-test FILE\n       \
                     mxfs-opcheck --map-follow FILE SIGDIR ROUNDS";

/// The command line (without the program name); returns the exit status.
pub fn main_cli(args: &[String]) -> i32 {
    // SAFETY: umask has no failure mode.
    unsafe { libc::umask(0o022) };
    if let Some(sub @ ("--lock-counter" | "--lock-hold" | "--lock-test")) =
        args.first().map(String::as_str)
    {
        return match lock_counter::cli(sub, &args[1..]) {
            2 => usage(),
            code => code,
        };
    }
    if args.first().map(String::as_str) == Some("--meta-bench") {
        return match args {
            [_, dir, n] => match n.parse() {
                Ok(n) => meta_bench::cli(Path::new(dir), n),
                Err(_) => usage(),
            },
            _ => usage(),
        };
    }
    if args.first().map(String::as_str) == Some("--map-follow") {
        return match args {
            [_, file, sigdir, rounds] => match rounds.parse() {
                Ok(r) => mmap::follow_cli(Path::new(file), Path::new(sigdir), r),
                Err(_) => usage(),
            },
            _ => usage(),
        };
    }
    if args.first().map(String::as_str) == Some("--dio-fsx") {
        return match args {
            [_, file, ops, seed] => match (ops.parse(), parse_u64(seed)) {
                (Ok(ops), Some(seed)) => dio_fsx::cli(Path::new(file), ops, seed),
                _ => usage(),
            },
            _ => usage(),
        };
    }
    let Some(dir) = args.first() else {
        return usage();
    };
    if dir.starts_with('-') {
        return usage();
    }
    let mut selected: Vec<(&str, GroupFn)> = Vec::new();
    for name in &args[1..] {
        match GROUPS.iter().find(|(n, _)| n == name) {
            Some(g) => selected.push(*g),
            None => {
                eprintln!(
                    "mxfs-opcheck: unknown group {name}; groups: {}",
                    GROUPS.iter().map(|g| g.0).collect::<Vec<_>>().join(" ")
                );
                return 2;
            }
        }
    }
    if selected.is_empty() {
        selected = GROUPS.to_vec();
    }
    let base = match fresh_dir(Path::new(dir)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mxfs-opcheck: {e:#}");
            return 2;
        }
    };
    let mut failed = false;
    for (name, f) in selected {
        let (outcome, notes) = run_group(&base, name, f);
        let mut out = std::io::stdout().lock();
        for n in notes {
            let _ = writeln!(out, "note {name}: {}", one_line(&n));
        }
        let _ = match &outcome {
            Outcome::Ok => writeln!(out, "group {name} ok"),
            Outcome::Skipped(r) => writeln!(out, "group {name} skipped: {}", one_line(r)),
            Outcome::Failed(r) => {
                failed = true;
                writeln!(out, "group {name} FAILED: {}", one_line(r))
            }
        };
        let _ = out.flush();
    }
    if failed {
        eprintln!("mxfs-opcheck: kept {} for inspection", base.display());
        1
    } else {
        if let Err(e) = std::fs::remove_dir_all(&base) {
            eprintln!("mxfs-opcheck: removing {}: {e}", base.display());
        }
        0
    }
}

fn usage() -> i32 {
    eprintln!("{USAGE}");
    2
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn fresh_dir(parent: &Path) -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let base = parent.join(format!("opcheck.{}.{nanos:09}", std::process::id()));
    mkdir(&base, 0o755)?;
    Ok(base)
}

/// Runs one group in `base/NAME`, catching panics.
pub fn run_group(base: &Path, name: &str, f: GroupFn) -> (Outcome, Vec<String>) {
    let dir = base.join(name);
    if let Err(e) = mkdir(&dir, 0o755) {
        return (Outcome::Failed(format!("{e:#}")), Vec::new());
    }
    let ctx = Ctx {
        dir,
        // SAFETY: geteuid has no failure mode.
        root: unsafe { libc::geteuid() } == 0,
        notes: RefCell::new(Vec::new()),
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&ctx)));
    let outcome = match r {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(e)) => match e.downcast_ref::<Skip>() {
            Some(s) => Outcome::Skipped(s.0.clone()),
            None => Outcome::Failed(format!("{e:#}")),
        },
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "?".into());
            Outcome::Failed(format!("panic: {msg}"))
        }
    };
    (outcome, ctx.notes.into_inner())
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

// ---------------------------------------------------------------------------
// Syscall helpers.

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A short name for an errno value (`EEXIST`), or its number.
pub fn ename(e: i32) -> String {
    let n = match e {
        0 => "0",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::EDEADLK => "EDEADLK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOTTY => "ENOTTY",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ESTALE => "ESTALE",
        libc::EBADMSG => "EBADMSG",
        _ => return format!("errno {e}"),
    };
    n.to_string()
}

/// True for the errno values that say "this filesystem or kernel does not
/// offer that at all".
pub fn unsupported(e: i32) -> bool {
    matches!(e, libc::EOPNOTSUPP | libc::ENOSYS | libc::ENOTTY)
}

/// Signed syscall return values.
pub trait SysRet: Copy + PartialOrd + Default + fmt::Display {}
impl SysRet for i32 {}
impl SysRet for i64 {}
impl SysRet for isize {}

/// Turns a syscall's negative return into an error naming `what` and errno.
pub fn chk<T: SysRet>(ret: T, what: impl fmt::Display) -> Result<T> {
    if ret < T::default() {
        let e = errno();
        Err(anyhow!(
            "{what}: {} ({})",
            ename(e),
            std::io::Error::from_raw_os_error(e)
        ))
    } else {
        Ok(ret)
    }
}

/// An error with `msg` unless `cond`.
pub fn ensure(cond: bool, msg: impl Into<String>) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(anyhow!(msg.into()))
    }
}

/// Expects a syscall to fail with one of `want`.
pub fn expect_errno<T: SysRet>(ret: T, want: &[i32], what: impl fmt::Display) -> Result<()> {
    if ret >= T::default() {
        bail!("{what}: succeeded ({ret}), expected {}", names(want));
    }
    let e = errno();
    if !want.contains(&e) {
        bail!("{what}: got {}, expected {}", ename(e), names(want));
    }
    Ok(())
}

fn names(want: &[i32]) -> String {
    want.iter()
        .map(|e| ename(*e))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A path as a C string.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with NUL")
}

/// A string as a C string.
pub fn cs(s: &str) -> CString {
    CString::new(s).expect("string with NUL")
}

/// An owned file descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(pub RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: we own the descriptor.
            unsafe { libc::close(self.0) };
        }
    }
}

impl Fd {
    pub fn open(p: &Path, flags: i32, mode: u32) -> Result<Fd> {
        let c = cpath(p);
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
        chk(fd, format_args!("open {}", p.display()))?;
        Ok(Fd(fd))
    }

    /// Opens, returning the raw errno on failure.
    pub fn try_open(p: &Path, flags: i32, mode: u32) -> std::result::Result<Fd, i32> {
        let c = cpath(p);
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
        if fd < 0 {
            Err(errno())
        } else {
            Ok(Fd(fd))
        }
    }

    pub fn raw(&self) -> RawFd {
        self.0
    }

    /// Closes now, checking the result.
    pub fn close(mut self) -> Result<()> {
        let fd = self.0;
        self.0 = -1;
        // SAFETY: we own the descriptor.
        chk(unsafe { libc::close(fd) }, "close")?;
        Ok(())
    }

    /// pwrite of all of `buf` at `off` (loops on short writes).
    pub fn pwrite_all(&self, buf: &[u8], off: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe {
                libc::pwrite(
                    self.0,
                    buf[done..].as_ptr().cast(),
                    buf.len() - done,
                    (off + done as u64) as i64,
                )
            };
            let n = chk(
                n,
                format_args!("pwrite {} bytes at {}", buf.len() - done, off + done as u64),
            )?;
            if n == 0 {
                bail!("pwrite at {}: wrote 0 bytes", off + done as u64);
            }
            done += n as usize;
        }
        Ok(())
    }

    /// pread into `buf` at `off` until full or EOF; returns the byte count.
    pub fn pread_full(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe {
                libc::pread(
                    self.0,
                    buf[done..].as_mut_ptr().cast(),
                    buf.len() - done,
                    (off + done as u64) as i64,
                )
            };
            let n = chk(
                n,
                format_args!("pread {} bytes at {}", buf.len() - done, off + done as u64),
            )?;
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        Ok(done)
    }

    /// Reads `len` bytes at `off`, or fewer at EOF.
    pub fn read_at(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        let n = self.pread_full(&mut v, off)?;
        v.truncate(n);
        Ok(v)
    }

    /// The whole file, from offset 0 to EOF.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        let size = self.stat()?.st_size as usize;
        // Read past the size too: bytes beyond it would be a bug to see.
        self.read_at(0, size + 4096)
    }

    pub fn stat(&self) -> Result<libc::stat> {
        // SAFETY: stat is plain data; fstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer.
        chk(unsafe { libc::fstat(self.0, &mut st) }, "fstat")?;
        Ok(st)
    }

    pub fn size(&self) -> Result<u64> {
        Ok(self.stat()?.st_size as u64)
    }

    pub fn truncate(&self, len: u64) -> Result<()> {
        // SAFETY: plain syscall.
        chk(
            unsafe { libc::ftruncate(self.0, len as i64) },
            format_args!("ftruncate {len}"),
        )?;
        Ok(())
    }

    pub fn fsync(&self) -> Result<()> {
        // SAFETY: plain syscall.
        chk(unsafe { libc::fsync(self.0) }, "fsync")?;
        Ok(())
    }
}

/// Creates (or truncates) a file holding `data`.
pub fn write_file(p: &Path, data: &[u8]) -> Result<()> {
    let fd = Fd::open(p, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644)?;
    fd.pwrite_all(data, 0)?;
    fd.close()
}

/// The whole content of a file.
pub fn read_file(p: &Path) -> Result<Vec<u8>> {
    Fd::open(p, libc::O_RDONLY, 0)?.read_all()
}

pub fn mkdir(p: &Path, mode: u32) -> Result<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    chk(
        unsafe { libc::mkdir(c.as_ptr(), mode) },
        format_args!("mkdir {}", p.display()),
    )?;
    Ok(())
}

pub fn stat(p: &Path) -> Result<libc::stat> {
    let c = cpath(p);
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    chk(
        unsafe { libc::stat(c.as_ptr(), &mut st) },
        format_args!("stat {}", p.display()),
    )?;
    Ok(st)
}

pub fn lstat(p: &Path) -> Result<libc::stat> {
    let c = cpath(p);
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    chk(
        unsafe { libc::lstat(c.as_ptr(), &mut st) },
        format_args!("lstat {}", p.display()),
    )?;
    Ok(st)
}

/// lstat expected to fail with `want`.
pub fn lstat_errno(p: &Path, want: i32) -> Result<()> {
    let c = cpath(p);
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    let r = unsafe { libc::lstat(c.as_ptr(), &mut st) };
    expect_errno(r, &[want], format_args!("lstat {}", p.display()))
}

pub fn unlink(p: &Path) -> Result<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    chk(
        unsafe { libc::unlink(c.as_ptr()) },
        format_args!("unlink {}", p.display()),
    )?;
    Ok(())
}

/// The file type bits of a mode.
pub fn ftype(mode: u32) -> u32 {
    mode & libc::S_IFMT
}

/// Deterministic test data: `len` bytes from a seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut r = XorShift::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Compares two byte strings, naming the first difference.
pub fn same(what: impl fmt::Display, got: &[u8], want: &[u8]) -> Result<()> {
    if got == want {
        return Ok(());
    }
    if got.len() != want.len() {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        bail!(
            "{what}: length {} != expected {} (first differing byte: {first:?})",
            got.len(),
            want.len()
        );
    }
    let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    bail!(
        "{what}: byte {i} is {:#04x}, expected {:#04x}",
        got[i],
        want[i]
    )
}

/// A xorshift64* generator: deterministic per seed, nothing else.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // Mix the seed so that small seeds give unrelated streams.
        let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
        s = (s ^ (s >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        s = (s ^ (s >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        s ^= s >> 31;
        XorShift(if s == 0 { 0x2545_f491_4f6c_dd1d } else { s })
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A zeroed buffer aligned for O_DIRECT.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
    layout: std::alloc::Layout,
}

pub const DIO_ALIGN: usize = 4096;

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len.max(DIO_ALIGN), DIO_ALIGN)
            .expect("aligned layout");
        // SAFETY: the layout has a nonzero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len, layout }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len bytes and uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// The filesystem block size of the filesystem holding `p`.
pub fn fs_block_size(p: &Path) -> Result<u64> {
    let c = cpath(p);
    // SAFETY: statfs is plain data.
    let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    chk(unsafe { libc::statfs(c.as_ptr(), &mut sf) }, "statfs")?;
    Ok(sf.f_bsize as u64)
}

// ---------------------------------------------------------------------------
// Child processes.

/// The child's side of a [`Child`]: a two-way token pipe to the parent.
pub struct ChildSide {
    to_parent: RawFd,
    from_parent: RawFd,
}

impl ChildSide {
    /// Tells the parent to go on.
    pub fn signal(&self) {
        // SAFETY: writing one byte from a valid buffer.
        unsafe { libc::write(self.to_parent, b"x".as_ptr().cast(), 1) };
    }

    /// Waits for the parent's go-ahead; an error if the parent went away.
    pub fn wait(&self) -> Result<()> {
        wait_token(self.from_parent, "parent")
    }
}

fn wait_token(fd: RawFd, who: &str) -> Result<()> {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
        if n == 1 {
            return Ok(());
        }
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        bail!("{who} went away");
    }
}

/// A forked child process running a closure, with a token pipe each way
/// and an error channel. The child gets `alarm(20)` so it never hangs.
pub struct Child {
    pid: libc::pid_t,
    to_child: Fd,
    from_child: Fd,
    err: Fd,
    done: bool,
}

fn pipe() -> Result<(Fd, Fd)> {
    let mut p = [0; 2];
    // SAFETY: valid array of two ints.
    chk(
        unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) },
        "pipe2",
    )?;
    Ok((Fd(p[0]), Fd(p[1])))
}

impl Child {
    /// Forks; the child runs `f` and exits 0 if it returned Ok, else
    /// reports the error to the parent and exits 1.
    pub fn spawn<F: FnOnce(&ChildSide) -> Result<()>>(f: F) -> Result<Child> {
        let (p2c_r, p2c_w) = pipe()?;
        let (c2p_r, c2p_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let _ = std::io::stdout().flush();
        // SAFETY: the process is single-threaded; the child only runs
        // syscalls and the closure, then _exit()s.
        let pid = unsafe { libc::fork() };
        chk(pid, "fork")?;
        if pid == 0 {
            // SAFETY: plain syscall.
            unsafe { libc::alarm(20) };
            let side = ChildSide {
                to_parent: c2p_w.0,
                from_parent: p2c_r.0,
            };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&side)));
            let msg = match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(_) => Some("panic in child".to_string()),
            };
            let code = match msg {
                None => 0,
                Some(m) => {
                    // SAFETY: writing a valid buffer.
                    unsafe { libc::write(err_w.0, m.as_ptr().cast(), m.len()) };
                    1
                }
            };
            // SAFETY: leaves without running destructors or flushing.
            unsafe { libc::_exit(code) };
        }
        drop((p2c_r, c2p_w, err_w));
        Ok(Child {
            pid,
            to_child: p2c_w,
            from_child: c2p_r,
            err: err_r,
            done: false,
        })
    }

    /// Tells the child to go on.
    pub fn signal(&self) {
        // SAFETY: writing one byte from a valid buffer.
        unsafe { libc::write(self.to_child.0, b"x".as_ptr().cast(), 1) };
    }

    /// Waits for the child's token; if the child ended instead, its error.
    pub fn wait(&mut self) -> Result<()> {
        if wait_token(self.from_child.0, "child").is_err() {
            self.finish_inner()?;
            bail!("child exited early without error");
        }
        Ok(())
    }

    /// The child's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Lets the child finish (closing its token pipe) and checks its result.
    pub fn finish(mut self) -> Result<()> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        // Closing our end lets a child blocked in wait() see EOF.
        let old = std::mem::replace(&mut self.to_child, Fd(-1));
        drop(old);
        let mut msg = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            // SAFETY: reading into a valid buffer.
            let n = unsafe { libc::read(self.err.0, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                break;
            }
            msg.extend_from_slice(&buf[..n as usize]);
        }
        let mut status = 0;
        loop {
            // SAFETY: valid pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r < 0 && errno() == libc::EINTR {
                continue;
            }
            chk(r, "waitpid")?;
            break;
        }
        if !msg.is_empty() {
            bail!("in child: {}", String::from_utf8_lossy(&msg));
        }
        if libc::WIFSIGNALED(status) {
            bail!("child killed by signal {}", libc::WTERMSIG(status));
        }
        if libc::WEXITSTATUS(status) != 0 {
            bail!("child exited {}", libc::WEXITSTATUS(status));
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.done {
            // SAFETY: our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Runs `f` in a forked child and returns its result.
pub fn in_child<F: FnOnce() -> Result<()>>(f: F) -> Result<()> {
    Child::spawn(|_| f())?.finish()
}

/// Whether an unprivileged user can search the group's directory (every
/// ancestor needs o+x); the other-uid checks need that.
pub fn others_can_reach(ctx: &Ctx) -> bool {
    in_child(|| {
        become_user(STRANGER_UID, STRANGER_UID)?;
        stat(&ctx.dir)?;
        Ok(())
    })
    .is_ok()
}

/// In a child: drops to `uid`/`gid` with no supplementary groups (and so
/// no capabilities). Never call this in the parent.
pub fn become_user(uid: u32, gid: u32) -> Result<()> {
    // SAFETY: plain syscalls.
    unsafe {
        chk(libc::setgroups(0, std::ptr::null()), "setgroups")?;
        chk(libc::setresgid(gid, gid, gid), "setresgid")?;
        chk(libc::setresuid(uid, uid, uid), "setresuid")?;
    }
    Ok(())
}
