//! `splice`: splice file→pipe→file, sendfile, copy_file_range.

use super::*;

const LEN: usize = 300_000;

pub fn run(ctx: &Ctx) -> Result<()> {
    let src_path = ctx.p("src");
    let data = pattern(LEN, 11);
    write_file(&src_path, &data)?;
    let src = Fd::open(&src_path, libc::O_RDONLY, 0)?;
    splice_copy(ctx, &src, &data)?;
    sendfile_copy(ctx, &src, &data)?;
    copy_range(ctx, &src, &data)?;
    Ok(())
}

/// Copies `len` bytes from `src` at `off_in` to `dst` at `off_out`
/// through a pipe with splice(2).
fn splice_through_pipe(src: &Fd, off_in: i64, dst: &Fd, off_out: i64, len: usize) -> Result<()> {
    let mut p = [0; 2];
    // SAFETY: valid array.
    chk(
        unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) },
        "pipe2",
    )?;
    let (pr, pw) = (Fd(p[0]), Fd(p[1]));
    let (mut oi, mut oo) = (off_in, off_out);
    let mut left = len;
    while left > 0 {
        // SAFETY: valid offset pointers.
        let n = unsafe {
            libc::splice(
                src.0,
                &mut oi,
                pw.0,
                std::ptr::null_mut(),
                left.min(65536),
                0,
            )
        };
        let n = chk(n, "splice file -> pipe")? as usize;
        ensure(
            n > 0,
            format!("splice file -> pipe hit EOF with {left} bytes left"),
        )?;
        let mut m = n;
        while m > 0 {
            // SAFETY: valid offset pointers.
            let k = unsafe { libc::splice(pr.0, std::ptr::null_mut(), dst.0, &mut oo, m, 0) };
            let k = chk(k, "splice pipe -> file")? as usize;
            ensure(k > 0, "splice pipe -> file moved nothing")?;
            m -= k;
        }
        left -= n;
    }
    ensure(
        oi == off_in + len as i64,
        "splice did not advance the input offset",
    )?;
    ensure(
        oo == off_out + len as i64,
        "splice did not advance the output offset",
    )?;
    Ok(())
}

fn splice_copy(ctx: &Ctx, src: &Fd, data: &[u8]) -> Result<()> {
    let dst = Fd::open(&ctx.p("spliced"), libc::O_RDWR | libc::O_CREAT, 0o644)?;
    splice_through_pipe(src, 0, &dst, 0, LEN)?;
    same("spliced copy", &dst.read_all()?, data)?;
    // SAFETY: plain syscall.
    let pos = unsafe { libc::lseek(src.0, 0, libc::SEEK_CUR) };
    ensure(
        pos == 0,
        "splice with an offset pointer moved the file position",
    )?;
    // A middle range to a middle offset of another file.
    let dst2 = Fd::open(&ctx.p("spliced2"), libc::O_RDWR | libc::O_CREAT, 0o644)?;
    splice_through_pipe(src, 1000, &dst2, 3000, 50_000)?;
    let mut want = vec![0u8; 3000];
    want.extend_from_slice(&data[1000..51_000]);
    same("spliced range", &dst2.read_all()?, &want)?;
    // From EOF: nothing.
    let mut p = [0; 2];
    // SAFETY: valid array.
    chk(
        unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) },
        "pipe2",
    )?;
    let (_pr, pw) = (Fd(p[0]), Fd(p[1]));
    let mut off = LEN as i64;
    // SAFETY: valid offset pointer.
    let n = unsafe { libc::splice(src.0, &mut off, pw.0, std::ptr::null_mut(), 4096, 0) };
    ensure(
        chk(n, "splice at EOF")? == 0,
        format!("splice at EOF returned {n}"),
    )?;
    Ok(())
}

fn sendfile_copy(ctx: &Ctx, src: &Fd, data: &[u8]) -> Result<()> {
    let dst = Fd::open(&ctx.p("sent"), libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let mut off: libc::off_t = 0;
    while (off as usize) < LEN {
        // SAFETY: valid offset pointer.
        let n = unsafe { libc::sendfile(dst.0, src.0, &mut off, LEN - off as usize) };
        ensure(chk(n, "sendfile")? > 0, "sendfile moved nothing before EOF")?;
    }
    same("sendfile copy", &dst.read_all()?, data)?;
    // To a file position: sendfile without an offset uses and moves the
    // input's position.
    let dst2 = Fd::open(&ctx.p("sent2"), libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let src2 = Fd::open(&ctx.p("src"), libc::O_RDONLY, 0)?;
    // SAFETY: plain syscall.
    chk(
        unsafe { libc::lseek(src2.0, 7000, libc::SEEK_SET) },
        "lseek",
    )?;
    let mut done = 0;
    while done < 20_000 {
        // SAFETY: NULL offset: use the file position.
        let n = unsafe { libc::sendfile(dst2.0, src2.0, std::ptr::null_mut(), 20_000 - done) };
        let n = chk(n, "sendfile from the file position")?;
        ensure(n > 0, "sendfile moved nothing")?;
        done += n as usize;
    }
    // SAFETY: plain syscall.
    let pos = unsafe { libc::lseek(src2.0, 0, libc::SEEK_CUR) };
    ensure(
        pos == 27_000,
        format!("input position {pos} after sendfile, expected 27000"),
    )?;
    same(
        "sendfile from a position",
        &dst2.read_all()?,
        &data[7000..27_000],
    )?;
    Ok(())
}

fn cfr(src: &Fd, off_in: &mut i64, dst: &Fd, off_out: &mut i64, len: usize) -> isize {
    // SAFETY: valid offset pointers.
    unsafe { libc::copy_file_range(src.0, off_in, dst.0, off_out, len, 0) }
}

fn copy_range(ctx: &Ctx, src: &Fd, data: &[u8]) -> Result<()> {
    let dst = Fd::open(&ctx.p("copied"), libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let (mut oi, mut oo) = (0i64, 0i64);
    while (oi as usize) < LEN {
        let left = LEN - oi as usize;
        let n = cfr(src, &mut oi, &dst, &mut oo, left);
        if n < 0 && unsupported(errno()) {
            ctx.note(format!("copy_file_range: {}", ename(errno())));
            return Ok(());
        }
        ensure(
            chk(n, "copy_file_range")? > 0,
            "copy_file_range moved nothing before EOF",
        )?;
    }
    same("copy_file_range copy", &dst.read_all()?, data)?;
    // Unaligned ranges into the middle of a file with data.
    let dst2 = Fd::open(&ctx.p("copied2"), libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let base = pattern(100_000, 12);
    dst2.pwrite_all(&base, 0)?;
    let (mut oi, mut oo) = (12_345i64, 5_001i64);
    let mut left = 70_000usize;
    while left > 0 {
        let n = chk(
            cfr(src, &mut oi, &dst2, &mut oo, left),
            "copy_file_range of a range",
        )?;
        ensure(n > 0, "copy_file_range moved nothing")?;
        left -= n as usize;
    }
    let mut want = base.clone();
    want[5_001..75_001].copy_from_slice(&data[12_345..82_345]);
    same("copy_file_range into the middle", &dst2.read_all()?, &want)?;
    // Within one file, non-overlapping.
    let (mut oi, mut oo) = (0i64, 200_000i64);
    let n = chk(
        cfr(&dst2, &mut oi, &dst2, &mut oo, 4096),
        "copy_file_range within a file",
    )?;
    ensure(
        n == 4096,
        format!("copy_file_range within a file copied {n}"),
    )?;
    let mut want2 = want.clone();
    want2.resize(204_096, 0);
    want2[200_000..].copy_from_slice(&want[..4096]);
    same("copy_file_range within a file", &dst2.read_all()?, &want2)?;
    // Overlapping ranges in one file are refused.
    let (mut oi, mut oo) = (0i64, 100i64);
    let r = cfr(&dst2, &mut oi, &dst2, &mut oo, 4096);
    expect_errno(
        r,
        &[libc::EINVAL],
        "copy_file_range with overlapping ranges",
    )?;
    // Past the source's EOF: 0.
    let (mut oi, mut oo) = (LEN as i64 + 10, 0i64);
    let n = chk(
        cfr(src, &mut oi, &dst2, &mut oo, 100),
        "copy_file_range past EOF",
    )?;
    ensure(n == 0, format!("copy_file_range past EOF returned {n}"))?;
    Ok(())
}
