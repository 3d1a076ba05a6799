//! `rename`: rename(2) and renameat2(2) with NOREPLACE, EXCHANGE, WHITEOUT.

use super::*;

/// renameat2 through the raw syscall; returns the syscall's result.
pub fn renameat2(from: &Path, to: &Path, flags: u32) -> i64 {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: valid C strings.
    unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    chk(
        renameat2(from, to, 0),
        format_args!("rename {} -> {}", from.display(), to.display()),
    )?;
    Ok(())
}

pub fn run(ctx: &Ctx) -> Result<()> {
    plain(ctx)?;
    dirs(ctx)?;
    noreplace(ctx)?;
    exchange(ctx)?;
    whiteout(ctx)?;
    Ok(())
}

fn plain(ctx: &Ctx) -> Result<()> {
    let (a, b) = (ctx.p("a"), ctx.p("b"));
    write_file(&a, b"from a")?;
    write_file(&b, b"old b")?;
    let ino_a = stat(&a)?.st_ino;
    // An open descriptor on the replaced file keeps its data.
    let old_b = Fd::open(&b, libc::O_RDONLY, 0)?;
    rename(&a, &b)?;
    lstat_errno(&a, libc::ENOENT)?;
    let st = stat(&b)?;
    ensure(
        st.st_ino == ino_a,
        "rename over a file: target is not the source inode",
    )?;
    ensure(
        st.st_nlink == 1,
        format!("renamed file nlink {}", st.st_nlink),
    )?;
    same("renamed content", &read_file(&b)?, b"from a")?;
    same(
        "replaced file through an open fd",
        &old_b.read_all()?,
        b"old b",
    )?;
    ensure(old_b.stat()?.st_nlink == 0, "replaced file still has links")?;
    // Rename onto itself is a no-op; a missing source is ENOENT.
    rename(&b, &b)?;
    same("content after self-rename", &read_file(&b)?, b"from a")?;
    let r = renameat2(&a, &ctx.p("c"), 0);
    expect_errno(r, &[libc::ENOENT], "rename of a missing name")?;
    // Hard links to the same inode: rename(2) does nothing.
    let (cb, cl) = (cpath(&b), cpath(&ctx.p("b-link")));
    // SAFETY: valid C strings.
    chk(unsafe { libc::link(cb.as_ptr(), cl.as_ptr()) }, "link")?;
    rename(&b, &ctx.p("b-link"))?;
    ensure(
        stat(&b)?.st_nlink == 2,
        "rename between two links of one inode changed something",
    )?;
    Ok(())
}

fn dirs(ctx: &Ctx) -> Result<()> {
    let (d1, d2) = (ctx.p("d1"), ctx.p("d2"));
    mkdir(&d1, 0o755)?;
    mkdir(&d2, 0o755)?;
    mkdir(&d1.join("moved"), 0o755)?;
    write_file(&d1.join("moved/f"), b"inside")?;
    let ino = stat(&d1.join("moved"))?.st_ino;
    let (n1, n2) = (stat(&d1)?.st_nlink, stat(&d2)?.st_nlink);
    // Across directories: '..' follows, the link counts of both parents too.
    rename(&d1.join("moved"), &d2.join("here"))?;
    let st = stat(&d2.join("here"))?;
    ensure(st.st_ino == ino, "moved directory changed inode")?;
    let dd = stat(&d2.join("here/.."))?;
    ensure(
        dd.st_ino == stat(&d2)?.st_ino,
        "'..' of a moved directory is not its new parent",
    )?;
    same(
        "file in moved directory",
        &read_file(&d2.join("here/f"))?,
        b"inside",
    )?;
    ensure(
        stat(&d1)?.st_nlink == n1 - 1,
        "old parent nlink not decremented",
    )?;
    ensure(
        stat(&d2)?.st_nlink == n2 + 1,
        "new parent nlink not incremented",
    )?;
    // Over an empty directory: fine; over a non-empty one: ENOTEMPTY.
    mkdir(&d1.join("empty"), 0o755)?;
    rename(&d2.join("here"), &d1.join("empty"))?;
    same(
        "after rename over an empty dir",
        &read_file(&d1.join("empty/f"))?,
        b"inside",
    )?;
    mkdir(&d2.join("x"), 0o755)?;
    let r = renameat2(&d2.join("x"), &d1.join("empty"), 0);
    expect_errno(
        r,
        &[libc::ENOTEMPTY, libc::EEXIST],
        "rename over a non-empty directory",
    )?;
    // Type mismatches.
    write_file(&d2.join("file"), b"")?;
    let r = renameat2(&d2.join("x"), &d2.join("file"), 0);
    expect_errno(r, &[libc::ENOTDIR], "rename of a directory over a file")?;
    let r = renameat2(&d2.join("file"), &d2.join("x"), 0);
    expect_errno(r, &[libc::EISDIR], "rename of a file over a directory")?;
    // Into its own subdirectory.
    let r = renameat2(&d1, &d1.join("empty/inside"), 0);
    expect_errno(r, &[libc::EINVAL], "rename of a directory into itself")?;
    Ok(())
}

fn noreplace(ctx: &Ctx) -> Result<()> {
    let (x, y, z) = (ctx.p("nx"), ctx.p("ny"), ctx.p("nz"));
    write_file(&x, b"x")?;
    write_file(&y, b"y")?;
    let r = renameat2(&x, &y, libc::RENAME_NOREPLACE);
    if r < 0 && errno() == libc::EINVAL {
        ctx.note("RENAME_NOREPLACE: EINVAL (not supported)");
        return Ok(());
    }
    expect_errno(r, &[libc::EEXIST], "RENAME_NOREPLACE onto an existing name")?;
    same("source after refused NOREPLACE", &read_file(&x)?, b"x")?;
    same("target after refused NOREPLACE", &read_file(&y)?, b"y")?;
    chk(
        renameat2(&x, &z, libc::RENAME_NOREPLACE),
        "RENAME_NOREPLACE onto a free name",
    )?;
    lstat_errno(&x, libc::ENOENT)?;
    same("RENAME_NOREPLACE result", &read_file(&z)?, b"x")?;
    Ok(())
}

fn exchange(ctx: &Ctx) -> Result<()> {
    let (x, y) = (ctx.p("ex"), ctx.p("ey"));
    write_file(&x, b"content of x")?;
    write_file(&y, b"y")?;
    let (ix, iy) = (stat(&x)?.st_ino, stat(&y)?.st_ino);
    let r = renameat2(&x, &y, libc::RENAME_EXCHANGE);
    if r < 0 && errno() == libc::EINVAL {
        ctx.note("RENAME_EXCHANGE: EINVAL (not supported)");
        return Ok(());
    }
    chk(r, "RENAME_EXCHANGE of two files")?;
    same("x after exchange", &read_file(&x)?, b"y")?;
    same("y after exchange", &read_file(&y)?, b"content of x")?;
    ensure(
        stat(&x)?.st_ino == iy && stat(&y)?.st_ino == ix,
        "inodes not swapped",
    )?;
    // A file with a directory, across parents: '..' follows.
    mkdir(&ctx.p("ed"), 0o755)?;
    mkdir(&ctx.p("ed/sub"), 0o755)?;
    write_file(&ctx.p("ed/sub/f"), b"f")?;
    let sub_ino = stat(&ctx.p("ed/sub"))?.st_ino;
    chk(
        renameat2(&x, &ctx.p("ed/sub"), libc::RENAME_EXCHANGE),
        "RENAME_EXCHANGE of a file and a directory",
    )?;
    let st = lstat(&x)?;
    ensure(
        ftype(st.st_mode) == libc::S_IFDIR && st.st_ino == sub_ino,
        "exchanged directory not at the file's name",
    )?;
    ensure(
        stat(&x.join(".."))?.st_ino == stat(&ctx.dir)?.st_ino,
        "'..' of an exchanged directory not updated",
    )?;
    same(
        "file after exchange with a directory",
        &read_file(&ctx.p("ed/sub"))?,
        b"y",
    )?;
    let r = renameat2(&y, &ctx.p("missing"), libc::RENAME_EXCHANGE);
    expect_errno(r, &[libc::ENOENT], "RENAME_EXCHANGE with a missing name")?;
    let r = renameat2(
        &y,
        &ctx.p("ed"),
        libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE,
    );
    expect_errno(r, &[libc::EINVAL], "RENAME_EXCHANGE|RENAME_NOREPLACE")?;
    Ok(())
}

fn whiteout(ctx: &Ctx) -> Result<()> {
    if !ctx.root {
        ctx.note("not root: RENAME_WHITEOUT not tried");
        return Ok(());
    }
    let (s, d) = (ctx.p("ws"), ctx.p("wd"));
    write_file(&s, b"whited")?;
    let ino = stat(&s)?.st_ino;
    let r = renameat2(&s, &d, libc::RENAME_WHITEOUT);
    if r < 0 && errno() == libc::EINVAL {
        ctx.note("RENAME_WHITEOUT: EINVAL (not supported)");
        return Ok(());
    }
    chk(r, "RENAME_WHITEOUT")?;
    let st = stat(&d)?;
    ensure(
        st.st_ino == ino,
        "RENAME_WHITEOUT target is not the source inode",
    )?;
    same("RENAME_WHITEOUT target content", &read_file(&d)?, b"whited")?;
    let w = lstat(&s)?;
    ensure(
        ftype(w.st_mode) == libc::S_IFCHR,
        format!("whiteout has mode {:o}, expected a char device", w.st_mode),
    )?;
    ensure(
        w.st_rdev == libc::makedev(0, 0),
        format!(
            "whiteout rdev {}:{}, expected 0:0",
            libc::major(w.st_rdev),
            libc::minor(w.st_rdev)
        ),
    )?;
    // Over an existing target too.
    write_file(&s.with_file_name("ws2"), b"second")?;
    chk(
        renameat2(&s.with_file_name("ws2"), &d, libc::RENAME_WHITEOUT),
        "RENAME_WHITEOUT over an existing target",
    )?;
    same(
        "target after second whiteout rename",
        &read_file(&d)?,
        b"second",
    )?;
    ensure(
        ftype(lstat(&ctx.p("ws2"))?.st_mode) == libc::S_IFCHR,
        "second whiteout missing",
    )?;
    unlink(&s)?;
    unlink(&ctx.p("ws2"))?;
    Ok(())
}
