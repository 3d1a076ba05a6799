//! `handles`: name_to_handle_at / open_by_handle_at (what NFS export needs).

use super::*;

const MAX_HANDLE: usize = 128;

/// struct file_handle with room for MAX_HANDLE bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct Handle {
    bytes: u32,
    kind: i32,
    data: [u8; MAX_HANDLE],
}

impl Handle {
    fn key(&self) -> (u32, i32, Vec<u8>) {
        (
            self.bytes,
            self.kind,
            self.data[..self.bytes as usize].to_vec(),
        )
    }
}

fn to_handle(p: &Path, flags: i32) -> std::result::Result<(Handle, i32), i32> {
    let c = cpath(p);
    let mut h = Handle {
        bytes: MAX_HANDLE as u32,
        kind: 0,
        data: [0; MAX_HANDLE],
    };
    let mut mount_id = 0;
    // SAFETY: the handle has room for `bytes` bytes.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            (&mut h as *mut Handle).cast(),
            &mut mount_id,
            flags,
        )
    };
    if r < 0 {
        return Err(errno());
    }
    Ok((h, mount_id))
}

fn open_handle(mount: &Fd, h: &Handle, flags: i32) -> std::result::Result<Fd, i32> {
    let mut h = *h;
    // SAFETY: a valid handle buffer.
    let r = unsafe {
        libc::open_by_handle_at(
            mount.0,
            (&mut h as *mut Handle).cast(),
            flags | libc::O_CLOEXEC,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(Fd(r))
    }
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("file");
    let data = pattern(5000, 81);
    write_file(&f, &data)?;
    let ino = stat(&f)?.st_ino;
    let (h, mount_id) = match to_handle(&f, 0) {
        Ok(v) => v,
        Err(e) if unsupported(e) => return skip(format!("name_to_handle_at: {}", ename(e))),
        Err(e) => bail!("name_to_handle_at: {}", ename(e)),
    };
    ensure(h.bytes > 0, "empty file handle")?;
    // Stable: the same handle twice, and after a rename.
    let (h2, m2) =
        to_handle(&f, 0).map_err(|e| anyhow!("name_to_handle_at again: {}", ename(e)))?;
    ensure(
        h2.key() == h.key() && m2 == mount_id,
        "two handles of one file differ",
    )?;
    // The size query: handle_bytes 0 gives EOVERFLOW and the needed size.
    let c = cpath(&f);
    let mut small = Handle {
        bytes: 0,
        kind: 0,
        data: [0; MAX_HANDLE],
    };
    let mut mid = 0;
    // SAFETY: handle_bytes 0: the kernel writes only the header.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            (&mut small as *mut Handle).cast(),
            &mut mid,
            0,
        )
    };
    expect_errno(
        r,
        &[libc::EOVERFLOW],
        "name_to_handle_at with handle_bytes 0",
    )?;
    ensure(
        small.bytes == h.bytes,
        format!(
            "size query said {}, the handle has {}",
            small.bytes, h.bytes
        ),
    )?;
    // statx's mount id agrees with the handle's.
    let sx = crate::opcheck::attrs::statx(libc::AT_FDCWD, &f, 0, libc::STATX_MNT_ID)?;
    if sx.stx_mask & libc::STATX_MNT_ID != 0 {
        ensure(
            sx.stx_mnt_id == mount_id as u64,
            format!(
                "statx mount id {} != handle mount id {mount_id}",
                sx.stx_mnt_id
            ),
        )?;
    }

    if !ctx.root {
        ctx.note("not root: open_by_handle_at not tried");
        return Ok(());
    }
    let mount = Fd::open(&ctx.dir, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let fd = open_handle(&mount, &h, libc::O_RDONLY)
        .map_err(|e| anyhow!("open_by_handle_at: {}", ename(e)))?;
    ensure(
        fd.stat()?.st_ino == ino,
        "open_by_handle_at opened another inode",
    )?;
    same("read through open_by_handle_at", &fd.read_all()?, &data)?;
    drop(fd);
    // Writable, and the write shows through the name.
    let w = open_handle(&mount, &h, libc::O_RDWR)
        .map_err(|e| anyhow!("open_by_handle_at O_RDWR: {}", ename(e)))?;
    w.pwrite_all(b"HANDLE", 0)?;
    drop(w);
    let mut want = data.clone();
    want[..6].copy_from_slice(b"HANDLE");
    same(
        "write through a handle, read by name",
        &read_file(&f)?,
        &want,
    )?;

    // After a rename into another directory, the same handle still works.
    mkdir(&ctx.p("sub"), 0o755)?;
    let moved = ctx.p("sub/moved");
    std::fs::rename(&f, &moved)?;
    let fd = open_handle(&mount, &h, libc::O_RDONLY)
        .map_err(|e| anyhow!("open_by_handle_at after rename: {}", ename(e)))?;
    same("read through a handle after rename", &fd.read_all()?, &want)?;
    drop(fd);
    let (h3, _) = to_handle(&moved, 0)
        .map_err(|e| anyhow!("name_to_handle_at after rename: {}", ename(e)))?;
    ensure(h3.key() == h.key(), "handle changed with the rename")?;

    // Directories: a handle opens the directory.
    let (dh, _) = to_handle(&ctx.p("sub"), 0)
        .map_err(|e| anyhow!("name_to_handle_at of a directory: {}", ename(e)))?;
    let dfd = open_handle(&mount, &dh, libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(|e| anyhow!("open_by_handle_at of a directory: {}", ename(e)))?;
    let st = dfd.stat()?;
    ensure(
        ftype(st.st_mode) == libc::S_IFDIR,
        "directory handle opened a non-directory",
    )?;
    ensure(
        st.st_ino == stat(&ctx.p("sub"))?.st_ino,
        "directory handle opened another directory",
    )?;
    let name = cs("moved");
    // SAFETY: plain data; valid pointers.
    let mut s2: libc::stat = unsafe { std::mem::zeroed() };
    chk(
        unsafe { libc::fstatat(dfd.0, name.as_ptr(), &mut s2, 0) },
        "lookup through a handle-opened directory",
    )?;
    ensure(
        s2.st_ino == ino,
        "lookup through a handle-opened directory found another inode",
    )?;
    // Symlinks: AT_SYMLINK_FOLLOW decides what the handle names.
    let l = ctx.p("link");
    let (t, cl) = (cs("sub/moved"), cpath(&l));
    // SAFETY: valid C strings.
    chk(unsafe { libc::symlink(t.as_ptr(), cl.as_ptr()) }, "symlink")?;
    let (lh, _) = to_handle(&l, libc::AT_SYMLINK_FOLLOW)
        .map_err(|e| anyhow!("name_to_handle_at FOLLOW: {}", ename(e)))?;
    ensure(
        lh.key() == h.key(),
        "AT_SYMLINK_FOLLOW handle is not the target's",
    )?;
    match to_handle(&l, 0) {
        Ok((nh, _)) => ensure(
            nh.key() != h.key(),
            "a symlink's own handle equals its target's",
        )?,
        Err(e) => bail!("name_to_handle_at of a symlink itself: {}", ename(e)),
    }

    // Unprivileged callers may not open by handle.
    let hh = h;
    let mfd = mount.0;
    in_child(move || {
        become_user(OTHER_UID, OTHER_GID)?;
        let m = Fd(mfd);
        let r = open_handle(&m, &hh, libc::O_RDONLY);
        std::mem::forget(m);
        match r {
            Err(libc::EPERM) => Ok(()),
            Err(e) => bail!(
                "unprivileged open_by_handle_at: {}, expected EPERM",
                ename(e)
            ),
            Ok(_) => bail!("unprivileged open_by_handle_at succeeded"),
        }
    })?;

    // A handle of an unlinked (and closed, and evicted) file is stale.
    let gone = ctx.p("gone");
    write_file(&gone, b"soon gone")?;
    let (gh, _) = to_handle(&gone, 0).map_err(|e| anyhow!("name_to_handle_at: {}", ename(e)))?;
    unlink(&gone)?;
    // Reuse the inode number if the filesystem wants to: create some files.
    for i in 0..8 {
        write_file(&ctx.p(&format!("filler{i}")), b"")?;
    }
    match open_handle(&mount, &gh, libc::O_RDONLY) {
        Err(libc::ESTALE) => {}
        Err(e) => bail!(
            "open_by_handle_at of an unlinked file: {}, expected ESTALE",
            ename(e)
        ),
        Ok(fd) => {
            let got = fd.read_all()?;
            bail!(
                "open_by_handle_at of an unlinked file succeeded (nlink {}, {} bytes)",
                fd.stat()?.st_nlink,
                got.len()
            );
        }
    }
    // A corrupted handle does not open anything else.
    let mut bad = h;
    for b in bad.data[..bad.bytes as usize].iter_mut() {
        *b ^= 0x5a;
    }
    match open_handle(&mount, &bad, libc::O_RDONLY) {
        Err(libc::ESTALE) | Err(libc::EINVAL) | Err(libc::ENOENT) | Err(libc::EIO) => {}
        Err(e) => bail!("open_by_handle_at of a garbled handle: {}", ename(e)),
        Ok(fd) => {
            ensure(
                fd.stat()?.st_ino != ino,
                "a garbled handle opened the original file",
            )?;
            ctx.note("a garbled handle opened some file");
        }
    }
    Ok(())
}
