//! `seek`: SEEK_DATA/SEEK_HOLE on a sparse file with known regions.

use super::*;

const MIB: u64 = 1 << 20;

fn lseek(fd: &Fd, off: u64, whence: i32) -> std::result::Result<u64, i32> {
    // SAFETY: plain syscall.
    let r = unsafe { libc::lseek(fd.0, off as i64, whence) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as u64)
    }
}

/// Checks SEEK_DATA/SEEK_HOLE from many starting points against `regions`
/// (sorted, disjoint data ranges) in a file of `size`, at block size `bs`.
fn check_regions(fd: &Fd, regions: &[(u64, u64)], size: u64, bs: u64, when: &str) -> Result<()> {
    let down = |x: u64| x / bs * bs;
    let up = |x: u64| x.div_ceil(bs) * bs;
    // Data as the filesystem can see it: whole blocks.
    let blocks: Vec<(u64, u64)> = regions
        .iter()
        .map(|(s, e)| (down(*s), up(*e).min(size)))
        .collect();
    let mut points = vec![0, size - 1, size, size + 1];
    for (s, e) in &blocks {
        for p in [*s, s + 1, e - 1, *e] {
            points.push(p);
            points.push(p.saturating_sub(1));
        }
        points.push((s + e) / 2);
    }
    points.sort();
    points.dedup();
    for p in points {
        let want_data = if p >= size {
            None
        } else {
            blocks
                .iter()
                .find(|(_, e)| *e > p)
                .map(|(s, _)| (*s).max(p))
        };
        let want_hole = if p >= size {
            None
        } else {
            Some(match blocks.iter().find(|(s, e)| *s <= p && p < *e) {
                Some((_, e)) => *e,
                None => p,
            })
        };
        let got_data = lseek(fd, p, libc::SEEK_DATA);
        let got_hole = lseek(fd, p, libc::SEEK_HOLE);
        match (want_data, got_data) {
            (Some(w), Ok(g)) if w == g => {}
            (None, Err(libc::ENXIO)) => {}
            (w, g) => bail!(
                "{when}: SEEK_DATA from {p}: got {}, expected {}",
                g.map_or_else(ename, |v| v.to_string()),
                w.map_or("ENXIO".into(), |v| v.to_string())
            ),
        }
        match (want_hole, got_hole) {
            (Some(w), Ok(g)) if w == g => {}
            (None, Err(libc::ENXIO)) => {}
            (w, g) => bail!(
                "{when}: SEEK_HOLE from {p}: got {}, expected {}",
                g.map_or_else(ename, |v| v.to_string()),
                w.map_or("ENXIO".into(), |v| v.to_string())
            ),
        }
    }
    Ok(())
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let bs = fs_block_size(&ctx.dir)?.max(1);
    let f = ctx.p("sparse");
    let fd = Fd::open(&f, libc::O_RDWR | libc::O_CREAT, 0o644)?;
    let size = 10 * MIB;
    // The size first, so writes land inside EOF (no speculative
    // preallocation past EOF muddles anything).
    fd.truncate(size)?;
    let mut regions = vec![(MIB, MIB + 8192), (5 * MIB, 6 * MIB), (size - 4096, size)];
    // Last region first: a write with no extent after it may get
    // speculative preallocation (XFS), which would then reach into the
    // hole that follows it.
    for (i, (s, e)) in regions.iter().enumerate().rev() {
        fd.pwrite_all(&pattern((e - s) as usize, 50 + i as u64), *s)?;
    }
    // SEEK_DATA of a fully sparse file says so at once.
    let empty = Fd::open(&ctx.p("empty-sparse"), libc::O_RDWR | libc::O_CREAT, 0o644)?;
    empty.truncate(MIB)?;
    match lseek(&empty, 0, libc::SEEK_DATA) {
        Err(libc::ENXIO) => {}
        Ok(v) => {
            if v == 0 {
                bail!("SEEK_DATA on a fully sparse file returned 0: SEEK_DATA/SEEK_HOLE not implemented (generic fallback)");
            }
            bail!("SEEK_DATA on a fully sparse file returned {v}, expected ENXIO");
        }
        Err(e) => bail!("SEEK_DATA on a fully sparse file: {}", ename(e)),
    }
    match lseek(&empty, 0, libc::SEEK_HOLE) {
        Ok(0) => {}
        r => bail!("SEEK_HOLE at 0 of a sparse file: {r:?}, expected 0"),
    }
    check_regions(&fd, &regions, size, bs, "dirty pages")?;
    fd.fsync()?;
    check_regions(&fd, &regions, size, bs, "after fsync")?;
    // Punch a hole in the middle region (if the filesystem can).
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    let (ps, pe) = (5 * MIB + 256 * 1024, 5 * MIB + 512 * 1024);
    // SAFETY: plain syscall.
    let r = unsafe { libc::fallocate(fd.0, mode, ps as i64, (pe - ps) as i64) };
    if r == 0 {
        regions = vec![regions[0], (5 * MIB, ps), (pe, 6 * MIB), regions[2]];
        check_regions(&fd, &regions, size, bs, "after PUNCH_HOLE")?;
    } else if unsupported(errno()) {
        ctx.note("PUNCH_HOLE not supported: punched-hole seek not checked");
    } else {
        chk(r, "fallocate PUNCH_HOLE")?;
    }
    // Beyond EOF both give ENXIO; a file ending in a hole has a hole at EOF.
    match lseek(&fd, size + 4096, libc::SEEK_HOLE) {
        Err(libc::ENXIO) => {}
        r => bail!("SEEK_HOLE past EOF: {r:?}, expected ENXIO"),
    }
    fd.truncate(size + MIB)?;
    match lseek(&fd, size, libc::SEEK_HOLE) {
        Ok(v) if v == size => {}
        r => bail!("SEEK_HOLE at the start of a trailing hole: {r:?}, expected {size}"),
    }
    match lseek(&fd, size - 100, libc::SEEK_DATA) {
        Ok(v) if v == size - 100 => {}
        r => bail!("SEEK_DATA inside the last data block: {r:?}"),
    }
    match lseek(&fd, size, libc::SEEK_DATA) {
        Err(libc::ENXIO) => {}
        r => bail!("SEEK_DATA in a trailing hole: {r:?}, expected ENXIO"),
    }
    // The file position moves to the result.
    let got = lseek(&fd, 0, libc::SEEK_DATA).map_err(|e| anyhow!("SEEK_DATA: {}", ename(e)))?;
    ensure(
        lseek(&fd, 0, libc::SEEK_CUR) == Ok(got),
        "SEEK_DATA did not move the file position",
    )?;
    Ok(())
}
