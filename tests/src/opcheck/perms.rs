//! `perms`: chmod, chown, and permission checks as another uid.

use super::*;

fn chmod(p: &Path, mode: u32) -> Result<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    chk(
        unsafe { libc::chmod(c.as_ptr(), mode) },
        format_args!("chmod {mode:o}"),
    )?;
    Ok(())
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    chk(
        unsafe { libc::chown(c.as_ptr(), uid, gid) },
        format_args!("chown {uid}:{gid}"),
    )?;
    Ok(())
}

fn mode(p: &Path) -> Result<u32> {
    Ok(lstat(p)?.st_mode & 0o7777)
}

fn access(p: &Path, how: i32) -> i32 {
    let c = cpath(p);
    // SAFETY: valid C string.
    unsafe { libc::access(c.as_ptr(), how) }
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("f");
    write_file(&f, b"secret")?;
    chmod(&f, 0o640)?;
    ensure(
        mode(&f)? == 0o640,
        format!("mode {:o} after chmod 640", mode(&f)?),
    )?;
    let fd = Fd::open(&f, libc::O_RDONLY, 0)?;
    // SAFETY: plain syscall.
    chk(unsafe { libc::fchmod(fd.0, 0o604) }, "fchmod")?;
    ensure(mode(&f)? == 0o604, "mode after fchmod 604")?;
    ensure(
        fd.stat()?.st_mode & 0o7777 == 0o604,
        "fstat disagrees after fchmod",
    )?;
    drop(fd);
    // chmod changes ctime, not mtime.
    let before = stat(&f)?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    chmod(&f, 0o600)?;
    let after = stat(&f)?;
    ensure(
        (after.st_ctime, after.st_ctime_nsec) > (before.st_ctime, before.st_ctime_nsec),
        "chmod did not advance ctime",
    )?;
    ensure(
        (after.st_mtime, after.st_mtime_nsec) == (before.st_mtime, before.st_mtime_nsec),
        "chmod changed mtime",
    )?;
    let d = ctx.p("d");
    mkdir(&d, 0o755)?;
    chmod(&d, 0o1777)?;
    ensure(
        mode(&d)? == 0o1777,
        "sticky bit not kept by chmod 1777 on a directory",
    )?;

    if !ctx.root {
        ctx.note("not root: chown and other-uid checks not tried");
        return Ok(());
    }
    owners(ctx)?;
    as_other(ctx)
}

fn owners(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("owned");
    write_file(&f, b"data")?;
    chown(&f, OTHER_UID, 5678)?;
    let st = stat(&f)?;
    ensure(
        st.st_uid == OTHER_UID && st.st_gid == 5678,
        format!(
            "owner {}:{} after chown {OTHER_UID}:5678",
            st.st_uid, st.st_gid
        ),
    )?;
    // -1 leaves a field alone.
    chown(&f, u32::MAX, 4321)?;
    let st = stat(&f)?;
    ensure(
        st.st_uid == OTHER_UID && st.st_gid == 4321,
        "chown -1:4321 changed the uid",
    )?;
    let fd = Fd::open(&f, libc::O_RDONLY, 0)?;
    // SAFETY: plain syscall.
    chk(unsafe { libc::fchown(fd.0, 42, u32::MAX) }, "fchown")?;
    let st = fd.stat()?;
    ensure(st.st_uid == 42 && st.st_gid == 4321, "fchown 42:-1")?;
    drop(fd);
    // chown of a setuid file clears setuid (even for root).
    chmod(&f, 0o4755)?;
    ensure(mode(&f)? == 0o4755, "chmod 4755 not kept")?;
    chown(&f, 7, 7)?;
    let m = mode(&f)?;
    ensure(
        m & libc::S_ISUID == 0,
        format!("chown kept setuid: mode {m:o}"),
    )?;
    // lchown changes the link, not its target.
    let l = ctx.p("link");
    let (t, cl) = (cs("owned"), cpath(&l));
    // SAFETY: valid C strings.
    chk(unsafe { libc::symlink(t.as_ptr(), cl.as_ptr()) }, "symlink")?;
    // SAFETY: valid C string.
    chk(unsafe { libc::lchown(cl.as_ptr(), 99, 98) }, "lchown")?;
    let ls = lstat(&l)?;
    ensure(
        ls.st_uid == 99 && ls.st_gid == 98,
        "lchown did not change the link",
    )?;
    ensure(stat(&f)?.st_uid == 7, "lchown changed the target")?;
    Ok(())
}

/// Permission checks made by a child that became OTHER_UID (and, for
/// contrast, STRANGER_UID), each in its own forked process.
fn as_other(ctx: &Ctx) -> Result<()> {
    if !others_can_reach(ctx) {
        ctx.note("the test directory is not searchable by other users: other-uid checks not tried");
        return Ok(());
    }
    // The group's directory is 0755 root: others may search it.
    let mine = ctx.p("mine"); // OTHER_UID's, 0600
    write_file(&mine, b"mine")?;
    chown(&mine, OTHER_UID, OTHER_GID)?;
    chmod(&mine, 0o600)?;
    let roots = ctx.p("roots"); // root's, 0600
    write_file(&roots, b"roots")?;
    chmod(&roots, 0o600)?;
    let public = ctx.p("public"); // root's, 0644
    write_file(&public, b"public")?;
    chmod(&public, 0o644)?;
    let grp = ctx.p("grp"); // root:OTHER_GID, 0060
    write_file(&grp, b"grp")?;
    chown(&grp, 0, OTHER_GID)?;
    chmod(&grp, 0o060)?;
    let closed = ctx.p("closed"); // root's directory 0700 with a file
    mkdir(&closed, 0o700)?;
    write_file(&closed.join("inside"), b"in")?;
    chmod(&closed.join("inside"), 0o666)?;
    let sticky = ctx.p("sticky"); // 1777 with a file of root's
    mkdir(&sticky, 0o755)?;
    chmod(&sticky, 0o1777)?;
    write_file(&sticky.join("roots"), b"r")?;
    chmod(&sticky.join("roots"), 0o666)?;
    let ro_dir = ctx.p("rodir"); // root's 0755: no creating inside
    mkdir(&ro_dir, 0o755)?;

    in_child(|| {
        become_user(OTHER_UID, OTHER_GID)?;
        chk(
            access(&mine, libc::R_OK | libc::W_OK),
            "access(own 0600 file, R|W)",
        )?;
        expect_errno(
            access(&mine, libc::X_OK),
            &[libc::EACCES],
            "access(own 0600 file, X)",
        )?;
        same("read own file", &read_file(&mine)?, b"mine")?;
        expect_errno(
            access(&roots, libc::R_OK),
            &[libc::EACCES],
            "access(root 0600, R)",
        )?;
        match Fd::try_open(&roots, libc::O_RDONLY, 0) {
            Err(libc::EACCES) => {}
            Err(e) => bail!("open of root's 0600 file: {}, expected EACCES", ename(e)),
            Ok(_) => bail!("opened root's 0600 file as uid {OTHER_UID}"),
        }
        chk(access(&public, libc::R_OK), "access(root 0644, R)")?;
        expect_errno(
            access(&public, libc::W_OK),
            &[libc::EACCES],
            "access(root 0644, W)",
        )?;
        match Fd::try_open(&public, libc::O_WRONLY, 0) {
            Err(libc::EACCES) => {}
            Err(e) => bail!(
                "open for write of root's 0644: {}, expected EACCES",
                ename(e)
            ),
            Ok(_) => bail!("opened root's 0644 file for writing"),
        }
        chk(
            access(&grp, libc::R_OK | libc::W_OK),
            "access(group rw file as member, R|W)",
        )?;
        // faccessat with AT_EACCESS (effective ids; here the same).
        let c = cpath(&grp);
        // SAFETY: valid C string.
        let r =
            unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::R_OK, libc::AT_EACCESS) };
        chk(r, "faccessat(AT_EACCESS) on a group-readable file")?;
        // No search permission on a 0700 directory.
        let inside = closed.join("inside");
        let ci = cpath(&inside);
        // SAFETY: stat is plain data; valid pointers.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::stat(ci.as_ptr(), &mut st) };
        expect_errno(r, &[libc::EACCES], "stat inside a 0700 directory of root's")?;
        expect_errno(
            access(&inside, libc::R_OK),
            &[libc::EACCES],
            "access inside 0700 dir",
        )?;
        match std::fs::read_dir(&closed) {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {}
            Err(e) => bail!("opendir of a 0700 directory of root's: {e}, expected EACCES"),
            Ok(_) => bail!("opendir of a 0700 directory of root's succeeded"),
        }
        // No creating in root's 0755 directory, no unlinking there.
        match Fd::try_open(&ro_dir.join("new"), libc::O_CREAT | libc::O_WRONLY, 0o644) {
            Err(libc::EACCES) => {}
            Err(e) => bail!(
                "create in root's 0755 directory: {}, expected EACCES",
                ename(e)
            ),
            Ok(_) => bail!("created a file in root's 0755 directory"),
        }
        let cp = cpath(&public);
        // SAFETY: valid C string.
        let r = unsafe { libc::unlink(cp.as_ptr()) };
        expect_errno(r, &[libc::EACCES], "unlink in root's 0755 directory")?;
        // Sticky directory: may create, may not remove root's file.
        write_file(&sticky.join("theirs"), b"t")?;
        let cr = cpath(&sticky.join("roots"));
        // SAFETY: valid C string.
        let r = unsafe { libc::unlink(cr.as_ptr()) };
        expect_errno(
            r,
            &[libc::EPERM],
            "unlink of root's file in a sticky directory",
        )?;
        unlink(&sticky.join("theirs"))?;
        // chmod/chown of files one does not own.
        let cr = cpath(&roots);
        // SAFETY: valid C string.
        let r = unsafe { libc::chmod(cr.as_ptr(), 0o777) };
        expect_errno(r, &[libc::EPERM], "chmod of root's file")?;
        let cm = cpath(&mine);
        // SAFETY: valid C string.
        let r = unsafe { libc::chown(cm.as_ptr(), 0, 0) };
        expect_errno(r, &[libc::EPERM], "chown of own file to root")?;
        chmod(&mine, 0o640)?;
        // utimensat with explicit times on a file one does not own.
        let ts = [libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        }; 2];
        let c = cpath(&public);
        // SAFETY: valid pointers.
        let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) };
        expect_errno(
            r,
            &[libc::EPERM],
            "utimensat of root's file with explicit times",
        )?;
        Ok(())
    })?;
    ensure(
        mode(&mine)? == 0o640,
        "chmod by the owner (in the child) not visible",
    )?;
    // Someone else in no group at all.
    in_child(|| {
        become_user(STRANGER_UID, STRANGER_UID)?;
        expect_errno(
            access(&grp, libc::R_OK),
            &[libc::EACCES],
            "access(0060 file, R) as other",
        )?;
        expect_errno(
            access(&mine, libc::R_OK),
            &[libc::EACCES],
            "access(0640 file, R) as other",
        )?;
        Ok(())
    })?;
    Ok(())
}
