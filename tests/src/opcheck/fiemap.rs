//! `fiemap`: FS_IOC_FIEMAP on a file with data, a hole, and data.

use super::*;

/// `_IOWR('f', 11, struct fiemap)` with a 32-byte struct fiemap.
const FS_IOC_FIEMAP: u64 = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
const KIB: u64 = 1024;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct Extent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [Extent; 64],
}

/// FIEMAP over [start, start+len) with room for `count` extents (≤ 64).
fn fiemap(
    fd: &Fd,
    start: u64,
    len: u64,
    flags: u32,
    count: u32,
) -> std::result::Result<(u32, Vec<Extent>), i32> {
    let mut fm = Fiemap {
        start,
        length: len,
        flags,
        mapped_extents: 0,
        extent_count: count,
        reserved: 0,
        extents: [Extent::default(); 64],
    };
    // SAFETY: the struct is laid out as the kernel's, with room for 64.
    let r = unsafe { libc::ioctl(fd.0, FS_IOC_FIEMAP as _, &mut fm as *mut Fiemap) };
    if r < 0 {
        return Err(errno());
    }
    let n = fm.mapped_extents.min(count) as usize;
    Ok((fm.mapped_extents, fm.extents[..n].to_vec()))
}

pub fn run(ctx: &Ctx) -> Result<()> {
    ensure(
        std::mem::size_of::<Extent>() == 56,
        "struct fiemap_extent layout",
    )?;
    let f = ctx.p("mapped");
    let fd = Fd::open(&f, libc::O_RDWR | libc::O_CREAT, 0o644)?;
    // data [0, 256K), hole [256K, 1M), data [1M, 1M+256K); size set first.
    let size = 1024 * KIB + 256 * KIB;
    fd.truncate(size)?;
    // The second region first, so that the first one (with an extent after
    // it) gets no speculative preallocation reaching into the hole.
    fd.pwrite_all(&pattern(256 * 1024, 62), 1024 * KIB)?;
    fd.pwrite_all(&pattern(256 * 1024, 61), 0)?;
    let (count, _) = match fiemap(&fd, 0, u64::MAX, FIEMAP_FLAG_SYNC, 0) {
        Ok(v) => v,
        Err(e) if unsupported(e) || e == libc::EINVAL => {
            return skip(format!("FS_IOC_FIEMAP: {}", ename(e)));
        }
        Err(e) => bail!("FS_IOC_FIEMAP (count only): {}", ename(e)),
    };
    ensure(
        count >= 2,
        format!("FIEMAP counts {count} extents, expected at least 2"),
    )?;
    ensure(
        count <= 64,
        format!("FIEMAP counts {count} extents for 512 KiB of data"),
    )?;
    let (n, ext) = fiemap(&fd, 0, u64::MAX, FIEMAP_FLAG_SYNC, 64)
        .map_err(|e| anyhow!("FS_IOC_FIEMAP: {}", ename(e)))?;
    ensure(
        n == count,
        format!("FIEMAP mapped {n} extents, the count query said {count}"),
    )?;
    let mut prev_end = 0;
    for (i, e) in ext.iter().enumerate() {
        let end = e.logical + e.length;
        ensure(e.length > 0, format!("extent {i} has length 0"))?;
        ensure(
            e.logical >= prev_end,
            format!("extent {i} at {} overlaps or is unsorted", e.logical),
        )?;
        ensure(
            end <= 256 * KIB || e.logical >= 1024 * KIB,
            format!(
                "extent {i} [{}, {end}) maps part of the hole [256K, 1M)",
                e.logical
            ),
        )?;
        prev_end = end;
        // Past EOF, preallocation may show in any state; not checked.
        if e.logical >= size {
            continue;
        }
        if e.flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC) == 0 {
            ensure(e.physical > 0, format!("extent {i} has physical address 0"))?;
        }
        ensure(
            e.flags & FIEMAP_EXTENT_DELALLOC == 0,
            format!("extent {i} still delalloc after FIEMAP_FLAG_SYNC"),
        )?;
    }
    // The data ranges are covered.
    let covered = |s: u64, e: u64| {
        let mut at = s;
        for x in &ext {
            if x.logical <= at && at < x.logical + x.length {
                at = x.logical + x.length;
            }
        }
        at >= e
    };
    ensure(covered(0, 256 * KIB), "FIEMAP does not cover [0, 256K)")?;
    ensure(
        covered(1024 * KIB, size),
        "FIEMAP does not cover [1M, 1M+256K)",
    )?;
    let last = ext.last().expect("at least 2 extents");
    ensure(
        last.flags & FIEMAP_EXTENT_LAST != 0,
        "last extent lacks FIEMAP_EXTENT_LAST",
    )?;
    // A range inside the hole maps nothing.
    let (n, _) = fiemap(&fd, 300 * KIB, 500 * KIB, 0, 64)
        .map_err(|e| anyhow!("FS_IOC_FIEMAP of the hole: {}", ename(e)))?;
    ensure(n == 0, format!("FIEMAP of the hole found {n} extents"))?;
    // A range in the second region maps only extents there.
    let (n, ext2) = fiemap(&fd, 1100 * KIB, 10 * KIB, 0, 64)
        .map_err(|e| anyhow!("FS_IOC_FIEMAP of a range: {}", ename(e)))?;
    ensure(n >= 1, "FIEMAP of a data range found nothing")?;
    for e in &ext2 {
        ensure(
            e.logical >= 1024 * KIB,
            "FIEMAP of [1100K, 1110K) returned an extent before 1M",
        )?;
    }
    // An empty file has none; an unknown flag is refused.
    let empty = Fd::open(&ctx.p("empty"), libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let (n, _) = fiemap(&empty, 0, u64::MAX, 0, 64)
        .map_err(|e| anyhow!("FIEMAP of an empty file: {}", ename(e)))?;
    ensure(n == 0, format!("FIEMAP of an empty file found {n} extents"))?;
    match fiemap(&fd, 0, u64::MAX, 0x8000_0000, 64) {
        Err(libc::EBADR) => {}
        r => bail!(
            "FIEMAP with an unknown flag: {:?}, expected EBADR",
            r.map(|v| v.0)
        ),
    }
    Ok(())
}
