//! `io`: buffered pread/pwrite across page boundaries, readv/writev,
//! O_DIRECT round trips and coherency with the page cache, O_APPEND.

use super::*;
use sha2::{Digest, Sha256};

pub fn run(ctx: &Ctx) -> Result<()> {
    buffered(ctx)?;
    vectored(ctx)?;
    large(ctx)?;
    direct(ctx)?;
    append(ctx)?;
    Ok(())
}

fn apply(model: &mut Vec<u8>, off: usize, data: &[u8]) {
    if model.len() < off + data.len() {
        model.resize(off + data.len(), 0);
    }
    model[off..off + data.len()].copy_from_slice(data);
}

fn buffered(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("buffered");
    let fd = Fd::open(&f, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o644)?;
    let mut model = Vec::new();
    // (offset, length): inside a page, across one boundary, across several,
    // a hole before, one byte at the very start, overwrites.
    let writes: [(usize, usize); 10] = [
        (4090, 20),
        (8190, 5000),
        (0, 1),
        (65535, 3),
        (100, 4000),
        (12287, 2),
        (20000, 70000),
        (4096, 4096),
        (1 << 20, 1),
        (30001, 9999),
    ];
    for (i, (off, len)) in writes.iter().enumerate() {
        let data = pattern(*len, 100 + i as u64);
        fd.pwrite_all(&data, *off as u64)?;
        apply(&mut model, *off, &data);
        ensure(
            fd.size()? == model.len() as u64,
            format!(
                "size {} after write {i}, expected {}",
                fd.size()?,
                model.len()
            ),
        )?;
    }
    same("whole file after buffered writes", &fd.read_all()?, &model)?;
    // Reads at awkward places, on a fresh descriptor too.
    let fd2 = Fd::open(&f, libc::O_RDONLY, 0)?;
    for (off, len) in [
        (0, 1),
        (4095, 2),
        (4000, 9000),
        (65530, 10),
        (8191, 1),
        (90000, 5),
    ] {
        let got = fd2.read_at(off as u64, len)?;
        same(
            format_args!("pread {len} at {off}"),
            &got,
            &model[off..off + len],
        )?;
    }
    // At and past EOF.
    let end = model.len() as u64;
    ensure(
        fd2.read_at(end, 10)?.is_empty(),
        "pread at EOF returned data",
    )?;
    ensure(
        fd2.read_at(end + 4096, 10)?.is_empty(),
        "pread past EOF returned data",
    )?;
    same(
        "pread straddling EOF",
        &fd2.read_at(end - 3, 10)?,
        &model[model.len() - 3..],
    )?;
    // The hole between writes reads as zeros.
    ensure(
        model[90000..100000].iter().all(|b| *b == 0),
        "model: no hole",
    )?;
    same("hole", &fd2.read_at(90000, 10000)?, &model[90000..100000])?;
    // read/write through the file position.
    // SAFETY: plain syscall.
    chk(unsafe { libc::lseek(fd.0, 4094, libc::SEEK_SET) }, "lseek")?;
    let data = pattern(10, 7);
    // SAFETY: valid buffer.
    let n = unsafe { libc::write(fd.0, data.as_ptr().cast(), data.len()) };
    ensure(chk(n, "write")? == 10, "short write")?;
    apply(&mut model, 4094, &data);
    // SAFETY: plain syscall.
    let pos = unsafe { libc::lseek(fd.0, 0, libc::SEEK_CUR) };
    ensure(
        pos == 4104,
        format!("file position {pos} after write of 10 at 4094"),
    )?;
    same(
        "after write(2) at the file position",
        &fd2.read_all()?,
        &model,
    )?;
    // A write to a read-only descriptor.
    // SAFETY: valid buffer.
    let r = unsafe { libc::write(fd2.0, data.as_ptr().cast(), 1) };
    expect_errno(r, &[libc::EBADF], "write to an O_RDONLY fd")?;
    Ok(())
}

fn vectored(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("vectored");
    let fd = Fd::open(&f, libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let parts = [pattern(100, 1), pattern(5000, 2), pattern(3, 3)];
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: iovecs point to live buffers.
    let n = unsafe { libc::pwritev(fd.0, iov.as_ptr(), iov.len() as i32, 4000) };
    ensure(chk(n, "pwritev")? == 5103, format!("pwritev wrote {n}"))?;
    let mut bufs = [vec![0u8; 50], vec![0u8; 5053]];
    let riov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: iovecs point to live buffers.
    let n = unsafe { libc::preadv(fd.0, riov.as_ptr(), riov.len() as i32, 4000) };
    ensure(chk(n, "preadv")? == 5103, format!("preadv read {n}"))?;
    let want: Vec<u8> = parts.concat();
    let got: Vec<u8> = bufs.concat();
    same("preadv after pwritev", &got, &want)?;
    ensure(
        fd.read_at(0, 4000)? == vec![0u8; 4000],
        "zeros before a pwritev",
    )?;
    Ok(())
}

fn large(ctx: &Ctx) -> Result<()> {
    // 8 MiB in odd-sized chunks, checked by hash and in pieces.
    let f = ctx.p("large");
    let fd = Fd::open(&f, libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let data = pattern(8 << 20, 42);
    let mut off = 0;
    let mut i = 0;
    while off < data.len() {
        let len = [1 << 20, 12345, 4096, 777777, 1][i % 5].min(data.len() - off);
        fd.pwrite_all(&data[off..off + len], off as u64)?;
        off += len;
        i += 1;
    }
    fd.fsync()?;
    let got = Fd::open(&f, libc::O_RDONLY, 0)?.read_all()?;
    ensure(
        Sha256::digest(&got) == Sha256::digest(&data),
        "sha256 of an 8 MiB file differs from what was written",
    )?;
    Ok(())
}

fn direct(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("direct");
    let fd = match Fd::try_open(&f, libc::O_RDWR | libc::O_CREAT | libc::O_DIRECT, 0o644) {
        Ok(fd) => fd,
        Err(libc::EINVAL) => {
            ctx.note("O_DIRECT: EINVAL on open (not supported)");
            return Ok(());
        }
        Err(e) => bail!("open O_DIRECT: {}", ename(e)),
    };
    let len = 64 * 1024;
    let mut wbuf = AlignedBuf::new(len);
    wbuf.copy_from_slice(&pattern(len, 77));
    let off = 3 * 4096u64;
    fd.pwrite_all(&wbuf, off)?;
    ensure(fd.size()? == off + len as u64, "size after O_DIRECT write")?;
    let mut rbuf = AlignedBuf::new(len);
    let n = fd.pread_full(&mut rbuf, off)?;
    ensure(n == len, format!("O_DIRECT read {n} of {len}"))?;
    same("O_DIRECT read back", &rbuf, &wbuf)?;
    // The hole before it, through O_DIRECT.
    let mut hbuf = AlignedBuf::new(3 * 4096);
    fd.pread_full(&mut hbuf, 0)?;
    ensure(
        hbuf.iter().all(|b| *b == 0),
        "O_DIRECT read of the hole: not zeros",
    )?;
    // Coherency: buffered reads see O_DIRECT writes...
    let b = Fd::open(&f, libc::O_RDWR, 0)?;
    same(
        "buffered read of O_DIRECT data",
        &b.read_at(off, len)?,
        &wbuf,
    )?;
    // ...and O_DIRECT reads see buffered writes (still dirty in the cache).
    let newer = pattern(8192, 78);
    b.pwrite_all(&newer, off + 4096)?;
    fd.pread_full(&mut rbuf, off)?;
    same(
        "O_DIRECT read of dirty buffered data",
        &rbuf[4096..4096 + 8192],
        &newer,
    )?;
    // An O_DIRECT write over cached pages replaces what buffered reads see.
    let _ = b.read_at(0, len + off as usize)?;
    wbuf.copy_from_slice(&pattern(len, 79));
    fd.pwrite_all(&wbuf, off)?;
    same(
        "buffered read after O_DIRECT overwrite of cached pages",
        &b.read_at(off, len)?,
        &wbuf,
    )?;
    // Extending with O_DIRECT past EOF.
    let end = fd.size()?;
    fd.pwrite_all(&wbuf[..4096], end + 8192)?;
    ensure(
        fd.size()? == end + 8192 + 4096,
        "size after extending O_DIRECT write",
    )?;
    same(
        "gap left by an extending O_DIRECT write",
        &b.read_at(end, 8192)?,
        &[0u8; 8192],
    )?;
    // O_DIRECT read at EOF: short or zero.
    let mut tail = AlignedBuf::new(8192);
    let n = fd.pread_full(&mut tail, end + 8192)?;
    ensure(
        n == 4096,
        format!("O_DIRECT read across EOF returned {n}, expected 4096"),
    )?;
    // Misaligned offset and buffer.
    // SAFETY: valid buffer.
    let r = unsafe { libc::pwrite(fd.0, wbuf.as_ptr().cast(), 4096, 1) };
    if r >= 0 {
        ctx.note("O_DIRECT write at a misaligned offset succeeded");
    } else if errno() != libc::EINVAL {
        bail!(
            "O_DIRECT write at offset 1: {}, expected EINVAL",
            ename(errno())
        );
    }
    // SAFETY: valid buffer (4096 bytes from offset 1 of a 64 KiB buffer).
    let r = unsafe { libc::pread(fd.0, rbuf[1..].as_mut_ptr().cast(), 4096, 0) };
    if r >= 0 {
        ctx.note("O_DIRECT read into a misaligned buffer succeeded");
    } else if errno() != libc::EINVAL {
        bail!(
            "O_DIRECT read into a misaligned buffer: {}, expected EINVAL",
            ename(errno())
        );
    }
    // fcntl can turn O_DIRECT off and on.
    // SAFETY: plain syscalls.
    let fl = chk(unsafe { libc::fcntl(b.0, libc::F_GETFL) }, "F_GETFL")?;
    // SAFETY: plain syscall.
    chk(
        unsafe { libc::fcntl(b.0, libc::F_SETFL, fl | libc::O_DIRECT) },
        "F_SETFL O_DIRECT",
    )?;
    // SAFETY: plain syscall.
    let fl2 = chk(unsafe { libc::fcntl(b.0, libc::F_GETFL) }, "F_GETFL")?;
    ensure(fl2 & libc::O_DIRECT != 0, "F_SETFL O_DIRECT did not stick")?;
    let n = b.pread_full(&mut rbuf, off)?;
    ensure(n == len, "O_DIRECT read after F_SETFL")?;
    same("read after F_SETFL O_DIRECT", &rbuf, &wbuf)?;
    Ok(())
}

fn append(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("append");
    write_file(&f, b"hello")?;
    let a = Fd::open(&f, libc::O_WRONLY | libc::O_APPEND, 0)?;
    let w = |fd: &Fd, d: &[u8]| -> Result<()> {
        // SAFETY: valid buffer.
        let n = unsafe { libc::write(fd.0, d.as_ptr().cast(), d.len()) };
        ensure(
            chk(n, "write O_APPEND")? as usize == d.len(),
            "short O_APPEND write",
        )
    };
    w(&a, b"abc")?;
    same("after O_APPEND write", &read_file(&f)?, b"helloabc")?;
    // lseek does not matter for O_APPEND writes.
    // SAFETY: plain syscall.
    chk(unsafe { libc::lseek(a.0, 0, libc::SEEK_SET) }, "lseek")?;
    w(&a, b"X")?;
    same(
        "O_APPEND write after lseek(0)",
        &read_file(&f)?,
        b"helloabcX",
    )?;
    // Linux: pwrite on an O_APPEND descriptor appends regardless of offset.
    // SAFETY: valid buffer.
    let n = unsafe { libc::pwrite(a.0, b"P".as_ptr().cast(), 1, 0) };
    ensure(chk(n, "pwrite O_APPEND")? == 1, "short pwrite")?;
    same("pwrite on an O_APPEND fd", &read_file(&f)?, b"helloabcXP")?;
    // Two appenders interleave without overwriting each other, even when
    // another descriptor extends the file in between.
    let a2 = Fd::open(&f, libc::O_WRONLY | libc::O_APPEND, 0)?;
    let plain = Fd::open(&f, libc::O_WRONLY, 0)?;
    w(&a2, b"12")?;
    w(&a, b"34")?;
    plain.pwrite_all(b"5", 14)?;
    w(&a2, b"67")?;
    same(
        "interleaved appenders",
        &read_file(&f)?,
        b"helloabcXP1234567",
    )?;
    // Extended by truncate: appends go after the new end.
    a.truncate(20)?;
    w(&a, b"!")?;
    let got = read_file(&f)?;
    ensure(
        got.len() == 21 && got[20] == b'!',
        "O_APPEND after ftruncate to 20",
    )?;
    ensure(
        got[17..20] == [0, 0, 0],
        "zeros between old end and ftruncate size",
    )?;
    Ok(())
}
