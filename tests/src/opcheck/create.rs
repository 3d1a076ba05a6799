//! `create`: O_CREAT/O_EXCL, lookup, O_TMPFILE + linkat.

use super::*;

pub fn run(ctx: &Ctx) -> Result<()> {
    let a = ctx.p("a");
    let ca = cpath(&a);
    // SAFETY: valid C strings throughout.
    let fd = unsafe {
        libc::open(
            ca.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            0o640,
        )
    };
    let fd = Fd(chk(fd, "open O_CREAT|O_EXCL of a new name")?);
    fd.pwrite_all(b"hello", 0)?;
    let fst = fd.stat()?;
    drop(fd);

    // SAFETY: valid C string.
    let r = unsafe {
        libc::open(
            ca.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            0o640,
        )
    };
    expect_errno(r, &[libc::EEXIST], "second open O_CREAT|O_EXCL")?;

    let st = stat(&a)?;
    ensure(
        ftype(st.st_mode) == libc::S_IFREG,
        "new file is not S_IFREG",
    )?;
    ensure(
        st.st_mode & 0o7777 == 0o640,
        format!(
            "new file mode {:o}, expected 640 (umask 022)",
            st.st_mode & 0o7777
        ),
    )?;
    ensure(
        st.st_size == 5,
        format!("size {} after writing 5 bytes", st.st_size),
    )?;
    ensure(
        st.st_nlink == 1,
        format!("nlink {} of a new file", st.st_nlink),
    )?;
    ensure(
        st.st_ino == fst.st_ino,
        "stat and fstat give different inode numbers",
    )?;
    ensure(
        st.st_dev == fst.st_dev,
        "stat and fstat give different st_dev",
    )?;
    // SAFETY: plain syscalls.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    ensure(
        st.st_uid == uid && st.st_gid == gid,
        format!("owner {}:{}, expected {uid}:{gid}", st.st_uid, st.st_gid),
    )?;

    // Lookup relative to a directory descriptor.
    let dfd = Fd::open(&ctx.dir, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    // SAFETY: stat is plain data; valid pointers.
    let mut st2: libc::stat = unsafe { std::mem::zeroed() };
    let name = cs("a");
    chk(
        unsafe { libc::fstatat(dfd.0, name.as_ptr(), &mut st2, 0) },
        "fstatat(dirfd, a)",
    )?;
    ensure(
        st2.st_ino == st.st_ino,
        "fstatat and stat disagree on the inode",
    )?;
    let missing = cs("missing");
    // SAFETY: valid pointers.
    let r = unsafe { libc::fstatat(dfd.0, missing.as_ptr(), &mut st2, 0) };
    expect_errno(r, &[libc::ENOENT], "fstatat of a missing name")?;

    // O_CREAT without O_EXCL opens the existing file, keeping its data.
    let fd = Fd::open(&a, libc::O_CREAT | libc::O_RDONLY, 0o600)?;
    ensure(
        fd.stat()?.st_ino == st.st_ino,
        "O_CREAT reopen gave another inode",
    )?;
    same("content after O_CREAT reopen", &fd.read_all()?, b"hello")?;
    drop(fd);
    // O_TRUNC empties it.
    let fd = Fd::open(&a, libc::O_CREAT | libc::O_TRUNC | libc::O_WRONLY, 0o600)?;
    ensure(fd.size()? == 0, "O_TRUNC did not empty the file")?;
    drop(fd);

    // Creation under a missing parent and through a file.
    match Fd::try_open(&ctx.p("nodir/x"), libc::O_CREAT | libc::O_WRONLY, 0o644) {
        Err(libc::ENOENT) => {}
        Err(e) => bail!(
            "create under a missing directory: {}, expected ENOENT",
            ename(e)
        ),
        Ok(_) => bail!("create under a missing directory succeeded"),
    }
    match Fd::try_open(&ctx.p("a/x"), libc::O_CREAT | libc::O_WRONLY, 0o644) {
        Err(libc::ENOTDIR) => {}
        Err(e) => bail!(
            "create under a regular file: {}, expected ENOTDIR",
            ename(e)
        ),
        Ok(_) => bail!("create under a regular file succeeded"),
    }
    let long = "n".repeat(256);
    match Fd::try_open(&ctx.p(&long), libc::O_CREAT | libc::O_WRONLY, 0o644) {
        Err(libc::ENAMETOOLONG) => {}
        Err(e) => bail!(
            "create of a 256-byte name: {}, expected ENAMETOOLONG",
            ename(e)
        ),
        Ok(_) => bail!("create of a 256-byte name succeeded"),
    }
    let max = "m".repeat(255);
    Fd::open(
        &ctx.p(&max),
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        0o644,
    )
    .map_err(|e| e.context("create of a 255-byte name"))?;
    stat(&ctx.p(&max))?;

    tmpfile(ctx)
}

fn tmpfile(ctx: &Ctx) -> Result<()> {
    let t = match Fd::try_open(&ctx.dir, libc::O_TMPFILE | libc::O_RDWR, 0o600) {
        Ok(fd) => fd,
        Err(e) if unsupported(e) || e == libc::EISDIR => {
            ctx.note(format!("O_TMPFILE: {}", ename(e)));
            return Ok(());
        }
        Err(e) => bail!("open O_TMPFILE: {}", ename(e)),
    };
    let data = pattern(10000, 1);
    t.pwrite_all(&data, 0)?;
    let st = t.stat()?;
    ensure(
        st.st_nlink == 0,
        format!("O_TMPFILE nlink {}, expected 0", st.st_nlink),
    )?;
    ensure(
        ftype(st.st_mode) == libc::S_IFREG,
        "O_TMPFILE is not S_IFREG",
    )?;
    // Not visible in the directory.
    let names: Vec<_> = std::fs::read_dir(&ctx.dir)?.collect::<std::io::Result<Vec<_>>>()?;
    let before = names.len();

    let proc = cs(&format!("/proc/self/fd/{}", t.0));
    let dst = cpath(&ctx.p("linked"));
    // SAFETY: valid C strings.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    chk(r, "linkat /proc/self/fd/N of an O_TMPFILE")?;
    let lst = stat(&ctx.p("linked"))?;
    ensure(
        lst.st_ino == st.st_ino,
        "linked O_TMPFILE has another inode",
    )?;
    ensure(
        lst.st_nlink == 1,
        format!("linked O_TMPFILE nlink {}", lst.st_nlink),
    )?;
    ensure(
        t.stat()?.st_nlink == 1,
        "fstat of the O_TMPFILE fd after linkat: nlink != 1",
    )?;
    same(
        "linked O_TMPFILE content",
        &read_file(&ctx.p("linked"))?,
        &data,
    )?;
    let after = std::fs::read_dir(&ctx.dir)?.count();
    ensure(after == before + 1, "linkat name not listed in readdir")?;
    drop(t);

    // O_TMPFILE | O_EXCL can never be linked.
    let t = Fd::open(
        &ctx.dir,
        libc::O_TMPFILE | libc::O_EXCL | libc::O_RDWR,
        0o600,
    )?;
    let proc = cs(&format!("/proc/self/fd/{}", t.0));
    let dst = cpath(&ctx.p("never"));
    // SAFETY: valid C strings.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    expect_errno(r, &[libc::ENOENT], "linkat of an O_TMPFILE|O_EXCL file")?;
    Ok(())
}
