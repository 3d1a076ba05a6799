//! `namespace`: mkdir, mknod, symlink/readlink, link, unlink, rmdir.

use super::*;

pub fn run(ctx: &Ctx) -> Result<()> {
    dirs(ctx)?;
    nodes(ctx)?;
    symlinks(ctx)?;
    links(ctx)?;
    Ok(())
}

fn dirs(ctx: &Ctx) -> Result<()> {
    let parent_nlink = stat(&ctx.dir)?.st_nlink;
    let d = ctx.p("d");
    mkdir(&d, 0o750)?;
    let st = stat(&d)?;
    ensure(
        ftype(st.st_mode) == libc::S_IFDIR,
        "mkdir made no directory",
    )?;
    ensure(
        st.st_mode & 0o7777 == 0o750,
        format!("mkdir mode {:o}, expected 750", st.st_mode & 0o7777),
    )?;
    ensure(
        st.st_nlink == 2,
        format!("new directory nlink {}, expected 2", st.st_nlink),
    )?;
    let pn = stat(&ctx.dir)?.st_nlink;
    ensure(
        pn == parent_nlink + 1,
        format!("parent nlink {parent_nlink} -> {pn} after mkdir, expected +1"),
    )?;
    let dot = stat(&d.join("."))?;
    let dotdot = stat(&d.join(".."))?;
    ensure(dot.st_ino == st.st_ino, "d/. is not d")?;
    ensure(
        dotdot.st_ino == stat(&ctx.dir)?.st_ino,
        "d/.. is not the parent",
    )?;

    let c = cpath(&d);
    // SAFETY: valid C string.
    let r = unsafe { libc::mkdir(c.as_ptr(), 0o755) };
    expect_errno(r, &[libc::EEXIST], "mkdir of an existing name")?;

    // rmdir of a non-empty directory, of a file, then of the empty one.
    write_file(&d.join("f"), b"x")?;
    mkdir(&d.join("sub"), 0o755)?;
    ensure(
        stat(&d)?.st_nlink == 3,
        "nlink of a directory with one subdirectory != 3",
    )?;
    // SAFETY: valid C string.
    let r = unsafe { libc::rmdir(c.as_ptr()) };
    expect_errno(
        r,
        &[libc::ENOTEMPTY, libc::EEXIST],
        "rmdir of a non-empty directory",
    )?;
    let f = cpath(&d.join("f"));
    // SAFETY: valid C string.
    let r = unsafe { libc::rmdir(f.as_ptr()) };
    expect_errno(r, &[libc::ENOTDIR], "rmdir of a regular file")?;
    // SAFETY: valid C string.
    let r = unsafe { libc::unlink(c.as_ptr()) };
    expect_errno(r, &[libc::EISDIR], "unlink of a directory")?;
    unlink(&d.join("f"))?;
    let sub = cpath(&d.join("sub"));
    // SAFETY: valid C string.
    chk(
        unsafe { libc::rmdir(sub.as_ptr()) },
        "rmdir of an empty subdirectory",
    )?;
    ensure(
        stat(&d)?.st_nlink == 2,
        "nlink after rmdir of the subdirectory != 2",
    )?;
    // SAFETY: valid C string.
    chk(
        unsafe { libc::rmdir(c.as_ptr()) },
        "rmdir of an empty directory",
    )?;
    lstat_errno(&d, libc::ENOENT)?;
    let pn = stat(&ctx.dir)?.st_nlink;
    ensure(
        pn == parent_nlink,
        format!("parent nlink {pn} after rmdir, expected {parent_nlink}"),
    )?;
    // SAFETY: valid C string.
    let r = unsafe { libc::rmdir(c.as_ptr()) };
    expect_errno(r, &[libc::ENOENT], "rmdir of a removed directory")?;
    Ok(())
}

fn nodes(ctx: &Ctx) -> Result<()> {
    let fifo = ctx.p("fifo");
    let c = cpath(&fifo);
    // SAFETY: valid C string.
    chk(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFIFO | 0o644, 0) },
        "mknod S_IFIFO",
    )?;
    let st = lstat(&fifo)?;
    ensure(
        ftype(st.st_mode) == libc::S_IFIFO,
        "mknod S_IFIFO made no FIFO",
    )?;
    ensure(
        st.st_mode & 0o777 == 0o644,
        format!("FIFO mode {:o}", st.st_mode & 0o777),
    )?;
    // Data goes through the FIFO, not the filesystem.
    let fd = Fd::open(&fifo, libc::O_RDWR | libc::O_NONBLOCK, 0)?;
    // SAFETY: valid buffers.
    let n = unsafe { libc::write(fd.0, b"ping".as_ptr().cast(), 4) };
    ensure(chk(n, "write to FIFO")? == 4, "short write to FIFO")?;
    let mut buf = [0u8; 8];
    // SAFETY: valid buffer.
    let n = unsafe { libc::read(fd.0, buf.as_mut_ptr().cast(), buf.len()) };
    same(
        "read from FIFO",
        &buf[..chk(n, "read from FIFO")? as usize],
        b"ping",
    )?;
    ensure(lstat(&fifo)?.st_size == 0, "FIFO size is not 0")?;
    drop(fd);
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFIFO | 0o644, 0) };
    expect_errno(r, &[libc::EEXIST], "mknod of an existing name")?;
    unlink(&fifo)?;

    let reg = ctx.p("reg");
    let c = cpath(&reg);
    // SAFETY: valid C string.
    chk(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFREG | 0o600, 0) },
        "mknod S_IFREG",
    )?;
    let st = lstat(&reg)?;
    ensure(
        ftype(st.st_mode) == libc::S_IFREG && st.st_size == 0,
        "mknod S_IFREG",
    )?;

    if !ctx.root {
        ctx.note("not root: character device not tried");
        return Ok(());
    }
    let null = ctx.p("null");
    let c = cpath(&null);
    let dev = libc::makedev(1, 3);
    // SAFETY: valid C string.
    chk(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, dev) },
        "mknod S_IFCHR 1:3",
    )?;
    let st = lstat(&null)?;
    ensure(
        ftype(st.st_mode) == libc::S_IFCHR,
        "mknod S_IFCHR made no char device",
    )?;
    ensure(
        st.st_rdev == dev,
        format!(
            "char device rdev {}:{}, expected 1:3",
            libc::major(st.st_rdev),
            libc::minor(st.st_rdev)
        ),
    )?;
    // Opening it reaches /dev/null's driver unless the mount is nodev.
    match Fd::try_open(&null, libc::O_RDWR, 0) {
        Ok(fd) => {
            // SAFETY: valid buffers.
            let n = unsafe { libc::write(fd.0, b"gone".as_ptr().cast(), 4) };
            ensure(n == 4, "write to the 1:3 node did not return 4")?;
            let mut b = [0u8; 4];
            // SAFETY: valid buffer.
            let n = unsafe { libc::read(fd.0, b.as_mut_ptr().cast(), 4) };
            ensure(
                n == 0,
                format!("read of the 1:3 node returned {n}, expected 0 (EOF)"),
            )?;
        }
        Err(libc::EACCES) => ctx.note("device node open: EACCES (nodev mount)"),
        Err(e) => bail!("open of the 1:3 device node: {}", ename(e)),
    }
    unlink(&null)?;
    Ok(())
}

fn readlink(p: &Path) -> Result<Vec<u8>> {
    let c = cpath(p);
    let mut buf = vec![0u8; 8192];
    // SAFETY: valid buffer.
    let n = unsafe { libc::readlink(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = chk(n, format_args!("readlink {}", p.display()))?;
    buf.truncate(n as usize);
    Ok(buf)
}

fn symlink(target: &str, p: &Path) -> Result<()> {
    let t = cs(target);
    let c = cpath(p);
    // SAFETY: valid C strings.
    chk(
        unsafe { libc::symlink(t.as_ptr(), c.as_ptr()) },
        format_args!("symlink {target}"),
    )?;
    Ok(())
}

fn symlinks(ctx: &Ctx) -> Result<()> {
    let l = ctx.p("dangling");
    let target = "some/where/not-there";
    symlink(target, &l)?;
    let st = lstat(&l)?;
    ensure(
        ftype(st.st_mode) == libc::S_IFLNK,
        "symlink made no S_IFLNK",
    )?;
    ensure(
        st.st_size == target.len() as i64,
        format!("symlink size {}, expected {}", st.st_size, target.len()),
    )?;
    same("readlink", &readlink(&l)?, target.as_bytes())?;
    let c = cpath(&l);
    // SAFETY: stat is plain data; valid pointers.
    let mut s2: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::stat(c.as_ptr(), &mut s2) };
    expect_errno(r, &[libc::ENOENT], "stat through a dangling symlink")?;

    // A long target (beyond any inline/short-form storage).
    let long: String = (0..1000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let ll = ctx.p("long");
    symlink(&long, &ll)?;
    same(
        "readlink of a 1000-byte target",
        &readlink(&ll)?,
        long.as_bytes(),
    )?;

    // A symlink to a file resolves to it; to a directory, too.
    write_file(&ctx.p("file"), b"through the link")?;
    let fl = ctx.p("to-file");
    symlink("file", &fl)?;
    ensure(
        stat(&fl)?.st_ino == stat(&ctx.p("file"))?.st_ino,
        "symlink resolves elsewhere",
    )?;
    same(
        "read through a symlink",
        &read_file(&fl)?,
        b"through the link",
    )?;
    mkdir(&ctx.p("dir"), 0o755)?;
    symlink("dir", &ctx.p("to-dir"))?;
    write_file(&ctx.p("to-dir/inner"), b"i")?;
    stat(&ctx.p("dir/inner"))?;
    // O_NOFOLLOW refuses the link.
    match Fd::try_open(&fl, libc::O_RDONLY | libc::O_NOFOLLOW, 0) {
        Err(libc::ELOOP) => {}
        Err(e) => bail!("O_NOFOLLOW open of a symlink: {}, expected ELOOP", ename(e)),
        Ok(_) => bail!("O_NOFOLLOW open of a symlink succeeded"),
    }
    let t = cs("x");
    // SAFETY: valid C strings.
    let r = unsafe { libc::symlink(t.as_ptr(), c.as_ptr()) };
    expect_errno(r, &[libc::EEXIST], "symlink over an existing name")?;
    unlink(&l)?;
    lstat_errno(&l, libc::ENOENT)?;
    // The target of an unlinked symlink is untouched.
    stat(&ctx.p("file"))?;
    unlink(&fl)?;
    stat(&ctx.p("file"))?;
    Ok(())
}

fn links(ctx: &Ctx) -> Result<()> {
    let a = ctx.p("la");
    let b = ctx.p("lb");
    write_file(&a, b"one")?;
    let (ca, cb) = (cpath(&a), cpath(&b));
    // SAFETY: valid C strings.
    chk(unsafe { libc::link(ca.as_ptr(), cb.as_ptr()) }, "link")?;
    let (sa, sb) = (stat(&a)?, stat(&b)?);
    ensure(sa.st_ino == sb.st_ino, "link: different inodes")?;
    ensure(
        sa.st_nlink == 2 && sb.st_nlink == 2,
        format!("nlink {} after link", sa.st_nlink),
    )?;
    // Data is shared.
    let fd = Fd::open(&a, libc::O_WRONLY, 0)?;
    fd.pwrite_all(b"two", 3)?;
    drop(fd);
    same("data through the other link", &read_file(&b)?, b"onetwo")?;
    // An open descriptor keeps working after its name goes.
    let fd = Fd::open(&b, libc::O_RDWR, 0)?;
    // SAFETY: valid C strings.
    let r = unsafe { libc::link(ca.as_ptr(), cb.as_ptr()) };
    expect_errno(r, &[libc::EEXIST], "link over an existing name")?;
    mkdir(&ctx.p("ldir"), 0o755)?;
    let cd = cpath(&ctx.p("ldir"));
    let cdl = cpath(&ctx.p("ldir-link"));
    // SAFETY: valid C strings.
    let r = unsafe { libc::link(cd.as_ptr(), cdl.as_ptr()) };
    expect_errno(r, &[libc::EPERM], "link of a directory")?;

    unlink(&a)?;
    lstat_errno(&a, libc::ENOENT)?;
    ensure(
        stat(&b)?.st_nlink == 1,
        "nlink after unlinking one link != 1",
    )?;
    unlink(&b)?;
    lstat_errno(&b, libc::ENOENT)?;
    let st = fd.stat()?;
    ensure(
        st.st_nlink == 0,
        format!("nlink {} of an open, fully unlinked file", st.st_nlink),
    )?;
    fd.pwrite_all(b"!", 6)?;
    same("open unlinked file", &fd.read_all()?, b"onetwo!")?;
    // SAFETY: valid C string.
    let r = unsafe { libc::unlink(ca.as_ptr()) };
    expect_errno(r, &[libc::ENOENT], "unlink of a missing name")?;
    Ok(())
}
