//! `sync`: fsync, fdatasync, syncfs, sync_file_range.

use super::*;

pub fn run(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("synced");
    let fd = Fd::open(&f, libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let data = pattern(1 << 20, 31);
    fd.pwrite_all(&data, 0)?;
    // SAFETY: plain syscalls on a valid descriptor.
    unsafe {
        chk(libc::fsync(fd.0), "fsync")?;
        fd.pwrite_all(&data[..4096], 8192)?;
        chk(libc::fdatasync(fd.0), "fdatasync")?;
        chk(libc::syncfs(fd.0), "syncfs")?;
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        chk(libc::sync_file_range(fd.0, 0, 0, flags), "sync_file_range")?;
    }
    // Directories and read-only descriptors can be synced too.
    let d = Fd::open(&ctx.dir, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let ro = Fd::open(&f, libc::O_RDONLY, 0)?;
    // SAFETY: plain syscalls on valid descriptors.
    unsafe {
        chk(libc::fsync(d.0), "fsync of a directory")?;
        chk(libc::fdatasync(d.0), "fdatasync of a directory")?;
        chk(libc::syncfs(d.0), "syncfs through a directory")?;
        chk(libc::fsync(ro.0), "fsync of an O_RDONLY descriptor")?;
    }
    // O_SYNC and O_DSYNC writes.
    for (name, flag) in [("osync", libc::O_SYNC), ("odsync", libc::O_DSYNC)] {
        let s = Fd::open(&ctx.p(name), libc::O_RDWR | libc::O_CREAT | flag, 0o644)?;
        s.pwrite_all(&data[..10000], 0)?;
        same(name, &s.read_all()?, &data[..10000])?;
    }
    // The data is all there after the syncs; on disk too (O_DIRECT reads
    // come from the device once the page cache is clean).
    let mut want = data.clone();
    want[8192..12288].copy_from_slice(&data[..4096]);
    same("after syncs", &ro.read_all()?, &want)?;
    if let Ok(dio) = Fd::try_open(&f, libc::O_RDONLY | libc::O_DIRECT, 0) {
        let mut buf = AlignedBuf::new(1 << 20);
        dio.pread_full(&mut buf, 0)?;
        same("O_DIRECT read after fsync", &buf, &want)?;
    }
    // Bad descriptors.
    // SAFETY: plain syscall with an invalid descriptor.
    let r = unsafe { libc::fsync(-1) };
    expect_errno(r, &[libc::EBADF], "fsync(-1)")?;
    // sync(2) has no result; it must simply return.
    // SAFETY: plain syscall.
    unsafe { libc::sync() };
    Ok(())
}
