//! `attrs`: stat/statx, truncate, utimensat.

use super::*;

pub fn statx(dirfd: i32, p: &Path, flags: i32, mask: u32) -> Result<libc::statx> {
    let c = cpath(p);
    // SAFETY: statx is plain data.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    let r = unsafe { libc::statx(dirfd, c.as_ptr(), flags, mask, &mut sx) };
    chk(r, format_args!("statx {}", p.display()))?;
    Ok(sx)
}

pub fn run(ctx: &Ctx) -> Result<()> {
    stats(ctx)?;
    truncates(ctx)?;
    times(ctx)?;
    Ok(())
}

fn stats(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("f");
    let data = pattern(20000, 3);
    write_file(&f, &data)?;
    let fd = Fd::open(&f, libc::O_RDONLY, 0)?;
    fd.fsync()?;
    let st = stat(&f)?;
    ensure(st.st_size == 20000, format!("size {}", st.st_size))?;
    ensure(st.st_blksize > 0, "st_blksize 0")?;
    ensure(
        st.st_blocks * 512 >= 20000,
        format!(
            "st_blocks {} too small for 20000 synced bytes",
            st.st_blocks
        ),
    )?;
    let sx = statx(
        libc::AT_FDCWD,
        &f,
        0,
        libc::STATX_BASIC_STATS | libc::STATX_BTIME,
    )?;
    let basic = libc::STATX_BASIC_STATS;
    ensure(
        sx.stx_mask & basic == basic,
        format!("statx mask {:#x} lacks basic stats {basic:#x}", sx.stx_mask),
    )?;
    ensure(sx.stx_ino == st.st_ino, "statx ino != stat ino")?;
    ensure(sx.stx_size as i64 == st.st_size, "statx size != stat size")?;
    ensure(sx.stx_mode as u32 == st.st_mode, "statx mode != stat mode")?;
    ensure(
        sx.stx_nlink as u64 == st.st_nlink,
        "statx nlink != stat nlink",
    )?;
    ensure(
        sx.stx_uid == st.st_uid && sx.stx_gid == st.st_gid,
        "statx owner != stat owner",
    )?;
    ensure(
        sx.stx_blocks as i64 == st.st_blocks,
        "statx blocks != stat blocks",
    )?;
    ensure(
        sx.stx_blksize as i64 == st.st_blksize,
        "statx blksize != stat blksize",
    )?;
    ensure(
        libc::makedev(sx.stx_dev_major, sx.stx_dev_minor) == st.st_dev,
        "statx dev != stat st_dev",
    )?;
    ensure(
        (sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec as i64) == (st.st_mtime, st.st_mtime_nsec),
        "statx mtime != stat mtime",
    )?;
    ensure(
        (sx.stx_ctime.tv_sec, sx.stx_ctime.tv_nsec as i64) == (st.st_ctime, st.st_ctime_nsec),
        "statx ctime != stat ctime",
    )?;
    if sx.stx_mask & libc::STATX_BTIME != 0 {
        let b = (sx.stx_btime.tv_sec, sx.stx_btime.tv_nsec);
        let m = (sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec);
        ensure(b.0 > 0, "statx btime is 0")?;
        ensure(
            b <= m,
            format!("btime {b:?} after mtime {m:?} of a new file"),
        )?;
    } else {
        ctx.note("statx: no STATX_BTIME");
    }
    // Through the descriptor (AT_EMPTY_PATH) and without sync.
    let sx2 = statx(
        fd.0,
        Path::new(""),
        libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
        libc::STATX_BASIC_STATS,
    )?;
    ensure(
        sx2.stx_ino == sx.stx_ino && sx2.stx_size == sx.stx_size,
        "statx(AT_EMPTY_PATH)",
    )?;
    // A directory and a symlink.
    let sd = statx(libc::AT_FDCWD, &ctx.dir, 0, libc::STATX_BASIC_STATS)?;
    ensure(
        sd.stx_mode as u32 & libc::S_IFMT == libc::S_IFDIR,
        "statx of a directory: no S_IFDIR",
    )?;
    let l = ctx.p("l");
    let (t, cl) = (cs("f"), cpath(&l));
    // SAFETY: valid C strings.
    chk(unsafe { libc::symlink(t.as_ptr(), cl.as_ptr()) }, "symlink")?;
    let sl = statx(
        libc::AT_FDCWD,
        &l,
        libc::AT_SYMLINK_NOFOLLOW,
        libc::STATX_BASIC_STATS,
    )?;
    ensure(
        sl.stx_mode as u32 & libc::S_IFMT == libc::S_IFLNK,
        "statx NOFOLLOW: no S_IFLNK",
    )?;
    ensure(sl.stx_size == 1, "statx size of a symlink to 'f' != 1")?;
    let sf = statx(libc::AT_FDCWD, &l, 0, libc::STATX_BASIC_STATS)?;
    ensure(
        sf.stx_ino == sx.stx_ino,
        "statx through a symlink: wrong inode",
    )?;
    Ok(())
}

fn truncates(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("t");
    let data = pattern(10000, 4);
    write_file(&f, &data)?;
    let c = cpath(&f);
    // Shrink and grow by path.
    // SAFETY: valid C string.
    chk(
        unsafe { libc::truncate(c.as_ptr(), 3000) },
        "truncate to 3000",
    )?;
    ensure(stat(&f)?.st_size == 3000, "size after truncate to 3000")?;
    same("after shrink", &read_file(&f)?, &data[..3000])?;
    // SAFETY: valid C string.
    chk(
        unsafe { libc::truncate(c.as_ptr(), 20000) },
        "truncate to 20000",
    )?;
    ensure(stat(&f)?.st_size == 20000, "size after truncate to 20000")?;
    let mut want = data[..3000].to_vec();
    want.resize(20000, 0);
    same("after shrink then grow (zero fill)", &read_file(&f)?, &want)?;

    // Shrink inside a page that stays cached, then grow: the tail of that
    // page must read as zeros, not as the old data.
    let fd = Fd::open(&f, libc::O_RDWR, 0)?;
    let full = pattern(3 * 4096, 5);
    fd.pwrite_all(&full, 0)?;
    fd.truncate(100)?;
    fd.truncate(3 * 4096)?;
    let mut want = full[..100].to_vec();
    want.resize(3 * 4096, 0);
    same(
        "shrink to 100 then grow, before sync",
        &fd.read_all()?,
        &want,
    )?;
    fd.fsync()?;
    fd.pwrite_all(&full, 0)?;
    fd.fsync()?;
    fd.truncate(5000)?;
    fd.fsync()?;
    fd.truncate(3 * 4096)?;
    let mut want = full[..5000].to_vec();
    want.resize(3 * 4096, 0);
    same("shrink to 5000 then grow, synced", &fd.read_all()?, &want)?;
    // Growing far leaves a sparse file of zeros.
    fd.truncate(1 << 30)?;
    ensure(fd.size()? == 1 << 30, "ftruncate to 1 GiB")?;
    ensure(
        fd.read_at((1 << 30) - 10, 100)? == vec![0u8; 10],
        "tail of a 1 GiB sparse file",
    )?;
    let st = fd.stat()?;
    ensure(
        st.st_blocks * 512 < 1 << 24,
        format!("ftruncate to 1 GiB allocated {} blocks", st.st_blocks),
    )?;
    fd.truncate(0)?;
    ensure(fd.read_all()?.is_empty(), "ftruncate to 0 left data")?;

    // Truncate of a size changes mtime and ctime.
    set_times(&f, ts(1_000_000_000, 0), ts(1_000_000_000, 0), 0)?;
    fd.truncate(10)?;
    let st = fd.stat()?;
    ensure(
        st.st_mtime > 1_000_000_000,
        "ftruncate did not update mtime",
    )?;
    ensure(
        st.st_ctime > 1_000_000_000,
        "ftruncate did not update ctime",
    )?;
    // EINVAL for a negative length, EISDIR for a directory.
    // SAFETY: plain syscall.
    let r = unsafe { libc::ftruncate(fd.0, -1) };
    expect_errno(r, &[libc::EINVAL], "ftruncate to -1")?;
    let cd = cpath(&ctx.dir);
    // SAFETY: valid C string.
    let r = unsafe { libc::truncate(cd.as_ptr(), 0) };
    expect_errno(r, &[libc::EISDIR], "truncate of a directory")?;
    // A read-only descriptor may not ftruncate.
    let ro = Fd::open(&f, libc::O_RDONLY, 0)?;
    // SAFETY: plain syscall.
    let r = unsafe { libc::ftruncate(ro.0, 0) };
    expect_errno(
        r,
        &[libc::EINVAL, libc::EBADF],
        "ftruncate of an O_RDONLY fd",
    )?;
    Ok(())
}

pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

pub fn set_times(p: &Path, atime: libc::timespec, mtime: libc::timespec, flags: i32) -> Result<()> {
    let c = cpath(p);
    let t = [atime, mtime];
    // SAFETY: valid pointers.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), flags) };
    chk(r, "utimensat")?;
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn times(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("times");
    write_file(&f, b"x")?;
    let (a, m) = (
        ts(1_000_000_000, 123_456_789),
        ts(1_200_000_000, 987_654_321),
    );
    set_times(&f, a, m, 0)?;
    let st = stat(&f)?;
    ensure(
        (st.st_atime, st.st_atime_nsec) == (a.tv_sec, a.tv_nsec),
        format!(
            "atime {}.{:09} after utimensat",
            st.st_atime, st.st_atime_nsec
        ),
    )?;
    ensure(
        (st.st_mtime, st.st_mtime_nsec) == (m.tv_sec, m.tv_nsec),
        format!(
            "mtime {}.{:09} after utimensat",
            st.st_mtime, st.st_mtime_nsec
        ),
    )?;
    ensure(
        st.st_ctime >= now() - 60,
        "utimensat did not set ctime to now",
    )?;

    // UTIME_OMIT keeps, UTIME_NOW sets to now.
    let t0 = now();
    set_times(&f, ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_NOW), 0)?;
    let st = stat(&f)?;
    ensure(
        (st.st_atime, st.st_atime_nsec) == (a.tv_sec, a.tv_nsec),
        "UTIME_OMIT changed atime",
    )?;
    ensure(
        st.st_mtime >= t0 - 2 && st.st_mtime <= now() + 2,
        format!("UTIME_NOW gave mtime {}, now is {}", st.st_mtime, now()),
    )?;
    set_times(&f, ts(0, libc::UTIME_NOW), ts(0, libc::UTIME_OMIT), 0)?;
    let st2 = stat(&f)?;
    ensure(st2.st_atime >= t0 - 2, "UTIME_NOW did not set atime")?;
    ensure(
        (st2.st_mtime, st2.st_mtime_nsec) == (st.st_mtime, st.st_mtime_nsec),
        "UTIME_OMIT changed mtime",
    )?;
    // A time before 1970.
    set_times(&f, ts(-1000, 5), ts(-86400, 0), 0)?;
    let st = stat(&f)?;
    ensure(
        (st.st_atime, st.st_atime_nsec, st.st_mtime) == (-1000, 5, -86400),
        format!(
            "pre-1970 times read back as {} / {}",
            st.st_atime, st.st_mtime
        ),
    )?;
    // futimens through a descriptor.
    let fd = Fd::open(&f, libc::O_RDONLY, 0)?;
    let t = [ts(1_300_000_000, 1), ts(1_300_000_001, 2)];
    // SAFETY: valid pointers.
    chk(unsafe { libc::futimens(fd.0, t.as_ptr()) }, "futimens")?;
    let st = fd.stat()?;
    ensure(
        (st.st_atime, st.st_atime_nsec, st.st_mtime, st.st_mtime_nsec)
            == (1_300_000_000, 1, 1_300_000_001, 2),
        "futimens times not read back",
    )?;
    // AT_SYMLINK_NOFOLLOW sets the link's times, not the target's.
    let l = ctx.p("tl");
    let (t, cl) = (cs("times"), cpath(&l));
    // SAFETY: valid C strings.
    chk(unsafe { libc::symlink(t.as_ptr(), cl.as_ptr()) }, "symlink")?;
    set_times(
        &l,
        ts(1_100_000_000, 0),
        ts(1_100_000_000, 0),
        libc::AT_SYMLINK_NOFOLLOW,
    )?;
    ensure(
        lstat(&l)?.st_mtime == 1_100_000_000,
        "AT_SYMLINK_NOFOLLOW: link mtime",
    )?;
    ensure(
        stat(&f)?.st_mtime == 1_300_000_001,
        "AT_SYMLINK_NOFOLLOW changed the target",
    )?;
    // A write updates mtime and ctime.
    let w = Fd::open(&f, libc::O_WRONLY, 0)?;
    w.pwrite_all(b"y", 0)?;
    let st = w.stat()?;
    ensure(st.st_mtime >= t0 - 2, "write did not update mtime")?;
    ensure(st.st_ctime >= t0 - 2, "write did not update ctime")?;
    // Invalid nanoseconds.
    let c = cpath(&f);
    let bad = [ts(0, 1_000_000_000), ts(0, 0)];
    // SAFETY: valid pointers.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), bad.as_ptr(), 0) };
    expect_errno(r, &[libc::EINVAL], "utimensat with tv_nsec 1e9")?;
    Ok(())
}
