//! `mmap`: shared mappings, read-only and writable, coherent with
//! read/write; private mappings.  Also `--map-follow`, a read-only shared
//! mapping kept while another node writes the file.

use super::*;

const PAGE: usize = 4096;
const SIZE: usize = 3 * PAGE + 100;

/// A mapping, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn try_new(fd: &Fd, len: usize, prot: i32, flags: i32) -> std::result::Result<Map, i32> {
        // SAFETY: a fresh mapping of a valid descriptor.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.0, 0) };
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(Map { ptr: p.cast(), len })
    }

    fn new(fd: &Fd, len: usize, prot: i32, flags: i32) -> Result<Map> {
        Self::try_new(fd, len, prot, flags).map_err(|e| anyhow!("mmap: {}", ename(e)))
    }

    fn slice(&self) -> &[u8] {
        // SAFETY: mapped for len bytes; reads inside EOF's page are valid.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len);
        // SAFETY: inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) };
    }

    fn sync(&self) -> Result<()> {
        // SAFETY: our mapping.
        chk(
            unsafe { libc::msync(self.ptr.cast(), self.len, libc::MS_SYNC) },
            "msync",
        )?;
        Ok(())
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("mapped");
    let fd = Fd::open(&f, libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let init = pattern(SIZE, 21);
    fd.pwrite_all(&init, 0)?;
    read_only_shared(ctx, &f, &fd, &init)?;
    crate::opcheck::attrs::set_times(
        &f,
        crate::opcheck::attrs::ts(1_000_000_000, 0),
        crate::opcheck::attrs::ts(1_000_000_000, 0),
        0,
    )?;
    // The mapping covers 4 pages; the file ends 100 bytes into the 4th.
    let mut model = init.clone();
    match Map::try_new(
        &fd,
        4 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
    ) {
        Ok(m) => {
            shared_writes(ctx, &f, &fd, m, &mut model)?;
            big_shared_write(ctx)?;
        }
        Err(libc::ENODEV) => ctx.note("shared writable mmap: ENODEV"),
        Err(e) => bail!("mmap: {}", ename(e)),
    }
    private_and_read_only(&f, &fd, &model)
}

/// Read-only shared mappings of `f` (content `init`, left so): through
/// the O_RDWR `fd` and through an O_RDONLY descriptor, each showing the
/// file, and a pwrite and a growing write through `fd` showing in them at
/// once.  ENODEV (a filesystem without shared mappings, as FUSE for
/// direct-I/O files before 6.6) is noted.
fn read_only_shared(ctx: &Ctx, f: &Path, fd: &Fd, init: &[u8]) -> Result<()> {
    let m = match Map::try_new(fd, 4 * PAGE, libc::PROT_READ, libc::MAP_SHARED) {
        Ok(m) => m,
        Err(libc::ENODEV) => {
            ctx.note("read-only shared mmap: ENODEV");
            return Ok(());
        }
        Err(e) => bail!("read-only shared mmap: {}", ename(e)),
    };
    same("read-only mapping shows the file", &m.slice()[..SIZE], init)?;
    let ro = Fd::open(f, libc::O_RDONLY, 0)?;
    let rm = Map::new(&ro, 4 * PAGE, libc::PROT_READ, libc::MAP_SHARED)?;
    same(
        "read-only mapping of an O_RDONLY descriptor shows the file",
        &rm.slice()[..SIZE],
        init,
    )?;
    // across the first page boundary, and past EOF in the last page
    let mut model = init.to_vec();
    let p = pattern(300, 25);
    fd.pwrite_all(&p, 4000)?;
    model[4000..4300].copy_from_slice(&p);
    let tail = pattern(50, 26);
    fd.pwrite_all(&tail, SIZE as u64)?;
    model.extend_from_slice(&tail);
    for (what, map) in [("O_RDWR", &m), ("O_RDONLY", &rm)] {
        same(
            format!("read-only shared mapping ({what} descriptor) sees pwrite at once"),
            &map.slice()[..model.len()],
            &model,
        )?;
    }
    drop((m, rm));
    fd.truncate(SIZE as u64)?;
    fd.pwrite_all(init, 0)?;
    same(
        "file restored after the read-only mappings",
        &read_file(f)?,
        init,
    )
}

/// `--map-follow FILE SIGDIR ROUNDS`: maps FILE read-only shared and
/// creates SIGDIR/mapped; then for each round r waits for SIGDIR/go.r
/// (another node has written FILE), prints `before r: TEXT` (the mapping
/// up to its first newline), revalidates (round 1: fstat; 2: an fcntl
/// read lock of the whole file; 3: flock LOCK_SH; then in turn), prints
/// `round r: TEXT` and creates SIGDIR/done.r.  Exits 1 if a go file does not come in 300 s.
pub fn follow_cli(file: &Path, sigdir: &Path, rounds: u32) -> i32 {
    match follow(file, sigdir, rounds) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mxfs-opcheck --map-follow: {e:#}");
            1
        }
    }
}

fn follow(file: &Path, sigdir: &Path, rounds: u32) -> Result<()> {
    let fd = Fd::open(file, libc::O_RDONLY, 0)?;
    let len = usize::try_from(fd.size()?)?.max(1);
    let m = Map::new(&fd, len, libc::PROT_READ, libc::MAP_SHARED)?;
    let text = |m: &Map| {
        let s = m.slice();
        let end = s.iter().position(|b| *b == b'\n').unwrap_or(s.len());
        String::from_utf8_lossy(&s[..end]).into_owned()
    };
    println!("mapped: {}", text(&m));
    signal(&sigdir.join("mapped"))?;
    for r in 1..=rounds {
        let go = sigdir.join(format!("go.{r}"));
        let t0 = std::time::Instant::now();
        while !go.exists() {
            ensure(
                t0.elapsed() < std::time::Duration::from_secs(300),
                format!("no {} after 300 s", go.display()),
            )?;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        println!("before {r}: {}", text(&m));
        match r % 3 {
            1 => {
                fd.stat()?;
            }
            2 => {
                let mut l = libc::flock {
                    l_type: libc::F_RDLCK as libc::c_short,
                    l_whence: libc::SEEK_SET as libc::c_short,
                    l_start: 0,
                    l_len: 0,
                    l_pid: 0,
                };
                // SAFETY: a lock call on our fd with a valid struct.
                chk(unsafe { libc::fcntl(fd.0, libc::F_SETLKW, &l) }, "F_SETLKW")?;
                l.l_type = libc::F_UNLCK as libc::c_short;
                // SAFETY: as above.
                chk(unsafe { libc::fcntl(fd.0, libc::F_SETLK, &l) }, "F_UNLCK")?;
            }
            _ => {
                // SAFETY: plain calls on our fd.
                chk(unsafe { libc::flock(fd.0, libc::LOCK_SH) }, "flock")?;
                // SAFETY: as above.
                chk(unsafe { libc::flock(fd.0, libc::LOCK_UN) }, "flock")?;
            }
        }
        println!("round {r}: {}", text(&m));
        signal(&sigdir.join(format!("done.{r}")))?;
    }
    Ok(())
}

fn signal(p: &Path) -> Result<()> {
    std::fs::write(p, b"").map_err(|e| anyhow!("create {}: {e}", p.display()))
}

/// Writes through shared mapping `m` of `fd` (file `f`, content `model`
/// before, after on return) and their coherence with read and write.
fn shared_writes(ctx: &Ctx, f: &Path, fd: &Fd, m: Map, model: &mut Vec<u8>) -> Result<()> {
    let init = model.clone();
    same("mapping shows the file", &m.slice()[..SIZE], &init)?;
    ensure(
        m.slice()[SIZE..].iter().all(|b| *b == 0),
        "bytes past EOF in the last page are not zero",
    )?;
    // Write through the mapping, across a page boundary.
    let w = pattern(6000, 22);
    m.write(1000, &w);
    model[1000..7000].copy_from_slice(&w);
    let other = Fd::open(f, libc::O_RDONLY, 0)?;
    same(
        "pread sees mapping writes before msync",
        &other.read_all()?,
        model,
    )?;
    m.sync()?;
    same("pread after msync", &other.read_all()?, model)?;
    ensure(fd.size()? == SIZE as u64, "mapping writes changed the size")?;
    let st = fd.stat()?;
    if st.st_mtime == 1_000_000_000 {
        ctx.note("mtime not updated by writes through a shared mapping");
    }
    // After msync the data is on disk: an O_DIRECT read sees it.
    match Fd::try_open(f, libc::O_RDONLY | libc::O_DIRECT, 0) {
        Ok(d) => {
            let mut buf = AlignedBuf::new(4 * PAGE);
            let n = d.pread_full(&mut buf, 0)?;
            ensure(
                n == SIZE,
                format!("O_DIRECT read of {n} bytes, expected {SIZE}"),
            )?;
            same("O_DIRECT read after msync", &buf[..SIZE], model)?;
        }
        Err(libc::EINVAL) => ctx.note("O_DIRECT not supported: disk check after msync not done"),
        Err(e) => bail!("open O_DIRECT: {}", ename(e)),
    }
    // pwrite through a descriptor shows in the mapping at once.
    let p = pattern(300, 23);
    fd.pwrite_all(&p, 4000)?;
    model[4000..4300].copy_from_slice(&p);
    same("mapping sees pwrite", &m.slice()[..SIZE], model)?;
    // Writing past EOF inside the last page does not grow the file.
    m.write(SIZE + 10, b"beyond");
    m.sync()?;
    ensure(
        fd.size()? == SIZE as u64,
        "a mapping write past EOF grew the file",
    )?;
    same(
        "file after a mapping write past EOF",
        &fd.read_all()?,
        model,
    )?;
    // Growing the file by ftruncate makes the rest of that page readable as
    // zeros (the bytes written past EOF are not file data).
    fd.truncate(4 * PAGE as u64)?;
    model.resize(4 * PAGE, 0);
    same(
        "file after ftruncate grow under a mapping",
        &fd.read_all()?,
        model,
    )?;
    same("mapping after ftruncate grow", m.slice(), model)?;
    drop(m);

    // Data written through a mapping survives munmap and a fresh open.
    same("after munmap", &read_file(f)?, model)
}

/// MAP_PRIVATE writes stay private; a read-only descriptor cannot be
/// mapped shared-writable.
fn private_and_read_only(f: &Path, fd: &Fd, model: &[u8]) -> Result<()> {
    // MAP_PRIVATE writes stay private.
    let pm = Map::new(
        fd,
        4 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE,
    )?;
    pm.write(0, b"private");
    same("file after a MAP_PRIVATE write", &read_file(f)?, model)?;
    drop(pm);

    // A read-only descriptor cannot be mapped shared-writable.
    let ro = Fd::open(f, libc::O_RDONLY, 0)?;
    // SAFETY: a mapping attempt that must fail.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            ro.0,
            0,
        )
    };
    if p != libc::MAP_FAILED {
        // SAFETY: our mapping.
        unsafe { libc::munmap(p, PAGE) };
        bail!("PROT_WRITE MAP_SHARED mapping of an O_RDONLY fd succeeded");
    }
    ensure(
        errno() == libc::EACCES,
        format!("mmap of O_RDONLY fd: {}", ename(errno())),
    )
}

/// A big file mapped and written everywhere, then read back.
fn big_shared_write(ctx: &Ctx) -> Result<()> {
    let big = ctx.p("big");
    let bfd = Fd::open(&big, libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let blen = 4 << 20;
    bfd.truncate(blen as u64)?;
    let bm = Map::new(
        &bfd,
        blen,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
    )?;
    let data = pattern(blen, 24);
    bm.write(0, &data);
    bm.sync()?;
    drop(bm);
    same("4 MiB written through a mapping", &read_file(&big)?, &data)?;
    Ok(())
}
