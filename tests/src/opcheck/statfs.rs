//! `statfs`: statfs/fstatfs/statvfs fields, consistent with each other.

use super::*;

pub fn run(ctx: &Ctx) -> Result<()> {
    let c = cpath(&ctx.dir);
    // SAFETY: plain data.
    let mut a: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    chk(unsafe { libc::statfs(c.as_ptr(), &mut a) }, "statfs")?;
    write_file(&ctx.p("f"), b"x")?;
    let fd = Fd::open(&ctx.p("f"), libc::O_RDONLY, 0)?;
    // SAFETY: plain data.
    let mut b: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    chk(unsafe { libc::fstatfs(fd.0, &mut b) }, "fstatfs")?;
    // SAFETY: plain data.
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    chk(unsafe { libc::statvfs(c.as_ptr(), &mut v) }, "statvfs")?;

    for (what, s) in [("statfs", &a), ("fstatfs", &b)] {
        ensure(s.f_bsize > 0, format!("{what}: f_bsize 0"))?;
        ensure(s.f_blocks > 0, format!("{what}: f_blocks 0"))?;
        ensure(
            s.f_bfree <= s.f_blocks,
            format!("{what}: f_bfree {} > f_blocks {}", s.f_bfree, s.f_blocks),
        )?;
        ensure(
            s.f_bavail <= s.f_bfree,
            format!("{what}: f_bavail {} > f_bfree {}", s.f_bavail, s.f_bfree),
        )?;
        ensure(s.f_files > 0, format!("{what}: f_files 0"))?;
        ensure(
            s.f_ffree <= s.f_files,
            format!("{what}: f_ffree {} > f_files {}", s.f_ffree, s.f_files),
        )?;
        ensure(
            s.f_namelen >= 255,
            format!("{what}: f_namelen {}", s.f_namelen),
        )?;
        ensure(s.f_frsize > 0, format!("{what}: f_frsize 0"))?;
        ensure(s.f_type != 0, format!("{what}: f_type 0"))?;
    }
    // The two agree on what does not move.
    ensure(
        a.f_type == b.f_type,
        "statfs and fstatfs disagree on f_type",
    )?;
    ensure(
        a.f_bsize == b.f_bsize,
        "statfs and fstatfs disagree on f_bsize",
    )?;
    ensure(
        a.f_blocks == b.f_blocks,
        "statfs and fstatfs disagree on f_blocks",
    )?;
    ensure(
        a.f_files == b.f_files,
        "statfs and fstatfs disagree on f_files",
    )?;
    ensure(
        format!("{:?}", a.f_fsid) == format!("{:?}", b.f_fsid),
        "statfs and fstatfs disagree on f_fsid",
    )?;
    ensure(
        v.f_blocks as u64 * v.f_frsize == a.f_blocks as u64 * a.f_frsize as u64,
        "statvfs size differs from statfs size",
    )?;
    ensure(v.f_namemax >= 255, "statvfs f_namemax")?;
    // A fresh 8 MiB file, synced, shows in f_bfree (allow others' activity
    // to muddle it: only check that free space is not above the total).
    let fd = Fd::open(&ctx.p("big"), libc::O_RDWR | libc::O_CREAT, 0o644)?;
    fd.pwrite_all(&pattern(8 << 20, 71), 0)?;
    fd.fsync()?;
    // SAFETY: valid pointers.
    chk(unsafe { libc::fstatfs(fd.0, &mut b) }, "fstatfs")?;
    ensure(b.f_bfree <= b.f_blocks, "f_bfree > f_blocks after a write")?;
    ensure(
        (b.f_blocks - b.f_bfree) * b.f_bsize as u64 >= 8 << 20,
        format!(
            "used space {} bytes is below the 8 MiB file just synced",
            (b.f_blocks - b.f_bfree) * b.f_bsize as u64
        ),
    )?;
    // The read-only flag is clear on a writable mount.
    ensure(
        v.f_flag & libc::ST_RDONLY == 0,
        "statvfs: ST_RDONLY on a writable mount",
    )?;
    Ok(())
}
