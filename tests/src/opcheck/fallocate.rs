//! `fallocate`: every mode, with data checks.

use super::*;

/// The unit for ranges that must be block-aligned: a multiple of any
/// plausible block size.
const U: usize = 64 * 1024;

fn falloc(fd: &Fd, mode: i32, off: usize, len: usize) -> i32 {
    // SAFETY: plain syscall.
    unsafe { libc::fallocate(fd.0, mode, off as i64, len as i64) }
}

/// Runs one mode; Ok(false) (with a note) if the filesystem lacks it.
fn mode_ok(ctx: &Ctx, fd: &Fd, mode: i32, name: &str, off: usize, len: usize) -> Result<bool> {
    let r = falloc(fd, mode, off, len);
    if r < 0 && unsupported(errno()) {
        ctx.note(format!("fallocate {name}: {}", ename(errno())));
        return Ok(false);
    }
    chk(r, format_args!("fallocate {name} at {off} len {len}"))?;
    Ok(true)
}

/// A file of `units` units, unit i filled with a pattern of seed 1000+i.
fn units_file(ctx: &Ctx, name: &str, units: usize) -> Result<(Fd, Vec<u8>)> {
    let fd = Fd::open(
        &ctx.p(name),
        libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
        0o644,
    )?;
    let mut data = Vec::new();
    for i in 0..units {
        data.extend(pattern(U, 1000 + i as u64));
    }
    fd.pwrite_all(&data, 0)?;
    fd.fsync()?;
    Ok((fd, data))
}

fn check(fd: &Fd, what: &str, want: &[u8]) -> Result<()> {
    ensure(
        fd.size()? == want.len() as u64,
        format!("{what}: size {}, expected {}", fd.size()?, want.len()),
    )?;
    same(what, &fd.read_all()?, want)?;
    // Again from disk.
    fd.fsync()?;
    same(format!("{what} (after fsync)"), &fd.read_all()?, want)
}

pub fn run(ctx: &Ctx) -> Result<()> {
    // Default mode: allocates and grows the size.
    let fd = Fd::open(&ctx.p("alloc"), libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let r = falloc(&fd, 0, 0, 16 * U);
    if r < 0 && unsupported(errno()) {
        return skip(format!("fallocate: {}", ename(errno())));
    }
    chk(r, "fallocate mode 0")?;
    let st = fd.stat()?;
    ensure(
        st.st_size == 16 * U as i64,
        format!("size {} after fallocate", st.st_size),
    )?;
    ensure(
        st.st_blocks * 512 >= 16 * U as i64,
        format!("fallocate of {} bytes gave {} blocks", 16 * U, st.st_blocks),
    )?;
    ensure(
        fd.read_all()? == vec![0u8; 16 * U],
        "preallocated range does not read as zeros",
    )?;
    // Writing into the preallocated range.
    let w = pattern(5000, 5);
    fd.pwrite_all(&w, 3 * U as u64 + 10)?;
    let mut want = vec![0u8; 16 * U];
    want[3 * U + 10..3 * U + 5010].copy_from_slice(&w);
    check(&fd, "writes into preallocated space", &want)?;
    // Mode 0 inside the file changes neither size nor data.
    chk(falloc(&fd, 0, U, 2 * U), "fallocate mode 0 over data")?;
    check(&fd, "fallocate over existing data", &want)?;

    // KEEP_SIZE: blocks past EOF, size unchanged.
    let before = fd.stat()?.st_blocks;
    if mode_ok(
        ctx,
        &fd,
        libc::FALLOC_FL_KEEP_SIZE,
        "KEEP_SIZE",
        16 * U,
        16 * U,
    )? {
        let st = fd.stat()?;
        ensure(st.st_size == 16 * U as i64, "KEEP_SIZE changed the size")?;
        ensure(
            st.st_blocks * 512 >= (before * 512) + 16 * U as i64,
            format!("KEEP_SIZE: blocks {} -> {}", before, st.st_blocks),
        )?;
        ensure(
            fd.read_at(16 * U as u64, 10)?.is_empty(),
            "data past EOF after KEEP_SIZE",
        )?;
        // A write past EOF into that space reads back, with zeros between.
        fd.pwrite_all(b"tail", 20 * U as u64)?;
        want.resize(20 * U, 0);
        want.extend_from_slice(b"tail");
        check(&fd, "write into KEEP_SIZE space", &want)?;
    }
    drop(fd);

    punch(ctx)?;
    zero(ctx)?;
    collapse_insert(ctx)?;
    Ok(())
}

fn punch(ctx: &Ctx) -> Result<()> {
    let (fd, mut want) = units_file(ctx, "punch", 4)?;
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    let before = fd.stat()?.st_blocks;
    if !mode_ok(ctx, &fd, mode, "PUNCH_HOLE", U, U)? {
        return Ok(());
    }
    want[U..2 * U].fill(0);
    check(&fd, "after PUNCH_HOLE of unit 1", &want)?;
    let after = fd.stat()?.st_blocks;
    ensure(
        after < before,
        format!("PUNCH_HOLE freed no blocks ({before} -> {after})"),
    )?;
    // Unaligned: partial blocks are zeroed, neighbours intact.
    chk(
        falloc(&fd, mode, 2 * U + 1000, 9000),
        "unaligned PUNCH_HOLE",
    )?;
    want[2 * U + 1000..2 * U + 10_000].fill(0);
    check(&fd, "after unaligned PUNCH_HOLE", &want)?;
    // Past EOF: nothing changes.
    chk(falloc(&fd, mode, 8 * U, U), "PUNCH_HOLE past EOF")?;
    check(&fd, "after PUNCH_HOLE past EOF", &want)?;
    // Over the end of the file: size kept.
    chk(falloc(&fd, mode, 3 * U + U / 2, U), "PUNCH_HOLE across EOF")?;
    want[3 * U + U / 2..].fill(0);
    check(&fd, "after PUNCH_HOLE across EOF", &want)?;
    // Without KEEP_SIZE the VFS refuses.
    let r = falloc(&fd, libc::FALLOC_FL_PUNCH_HOLE, 0, U);
    expect_errno(r, &[libc::EOPNOTSUPP], "PUNCH_HOLE without KEEP_SIZE")?;
    Ok(())
}

fn zero(ctx: &Ctx) -> Result<()> {
    let (fd, mut want) = units_file(ctx, "zero", 4)?;
    if !mode_ok(ctx, &fd, libc::FALLOC_FL_ZERO_RANGE, "ZERO_RANGE", 1000, U)? {
        return Ok(());
    }
    want[1000..1000 + U].fill(0);
    check(&fd, "after unaligned ZERO_RANGE", &want)?;
    chk(
        falloc(&fd, libc::FALLOC_FL_ZERO_RANGE, 2 * U, U),
        "aligned ZERO_RANGE",
    )?;
    want[2 * U..3 * U].fill(0);
    check(&fd, "after aligned ZERO_RANGE", &want)?;
    // Past EOF without KEEP_SIZE grows the file.
    chk(
        falloc(&fd, libc::FALLOC_FL_ZERO_RANGE, 4 * U, U),
        "ZERO_RANGE past EOF",
    )?;
    want.resize(5 * U, 0);
    check(&fd, "after ZERO_RANGE past EOF", &want)?;
    // With KEEP_SIZE it does not.
    let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
    chk(falloc(&fd, mode, 5 * U, U), "ZERO_RANGE|KEEP_SIZE past EOF")?;
    check(&fd, "after ZERO_RANGE|KEEP_SIZE past EOF", &want)?;
    Ok(())
}

fn collapse_insert(ctx: &Ctx) -> Result<()> {
    let (fd, data) = units_file(ctx, "collapse", 4)?;
    let have_collapse = mode_ok(
        ctx,
        &fd,
        libc::FALLOC_FL_COLLAPSE_RANGE,
        "COLLAPSE_RANGE",
        U,
        U,
    )?;
    let mut want = data.clone();
    if have_collapse {
        // Units 0, 2, 3.
        want.drain(U..2 * U);
        check(&fd, "after COLLAPSE_RANGE of unit 1", &want)?;
        let r = falloc(&fd, libc::FALLOC_FL_COLLAPSE_RANGE, 1000, U);
        expect_errno(r, &[libc::EINVAL], "unaligned COLLAPSE_RANGE")?;
        let r = falloc(&fd, libc::FALLOC_FL_COLLAPSE_RANGE, 2 * U, U);
        expect_errno(r, &[libc::EINVAL], "COLLAPSE_RANGE reaching EOF")?;
        let r = falloc(
            &fd,
            libc::FALLOC_FL_COLLAPSE_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            U,
        );
        expect_errno(
            r,
            &[libc::EINVAL, libc::EOPNOTSUPP],
            "COLLAPSE_RANGE|KEEP_SIZE",
        )?;
        check(&fd, "after refused COLLAPSE_RANGE calls", &want)?;
    }
    // INSERT_RANGE: a hole of one unit at unit 1.
    if mode_ok(ctx, &fd, libc::FALLOC_FL_INSERT_RANGE, "INSERT_RANGE", U, U)? {
        let zeros = vec![0u8; U];
        want.splice(U..U, zeros);
        check(&fd, "after INSERT_RANGE at unit 1", &want)?;
        let end = want.len();
        let r = falloc(&fd, libc::FALLOC_FL_INSERT_RANGE, end, U);
        expect_errno(r, &[libc::EINVAL], "INSERT_RANGE at EOF")?;
        let r = falloc(&fd, libc::FALLOC_FL_INSERT_RANGE, 1000, U);
        expect_errno(r, &[libc::EINVAL], "unaligned INSERT_RANGE")?;
        // Data written into the inserted hole.
        let w = pattern(U, 2000);
        fd.pwrite_all(&w, U as u64)?;
        want[U..2 * U].copy_from_slice(&w);
        check(&fd, "write into an inserted range", &want)?;
    }
    // Both, on a file with a hole in it: extents move, holes too.
    if have_collapse {
        let fd = Fd::open(&ctx.p("mixed"), libc::O_RDWR | libc::O_CREAT, 0o644)?;
        let a = pattern(U, 3000);
        let b = pattern(U, 3001);
        fd.pwrite_all(&a, 0)?;
        fd.pwrite_all(&b, 4 * U as u64)?;
        fd.fsync()?;
        let mut want = a.clone();
        want.resize(4 * U, 0);
        want.extend_from_slice(&b);
        chk(
            falloc(&fd, libc::FALLOC_FL_COLLAPSE_RANGE, 2 * U, U),
            "COLLAPSE_RANGE of a hole",
        )?;
        want.drain(2 * U..3 * U);
        check(&fd, "after COLLAPSE_RANGE of a hole", &want)?;
    }
    Ok(())
}
