//! `xattr`: user, trusted and security namespaces; POSIX ACLs.

use super::*;

fn set(p: &Path, name: &str, val: &[u8], flags: i32) -> i32 {
    let (c, n) = (cpath(p), cs(name));
    // SAFETY: valid C strings and buffer.
    unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            val.as_ptr().cast(),
            val.len(),
            flags,
        )
    }
}

fn set_ok(p: &Path, name: &str, val: &[u8], flags: i32) -> Result<()> {
    chk(set(p, name, val, flags), format_args!("setxattr {name}"))?;
    Ok(())
}

/// getxattr: the value, or the errno.
fn get(p: &Path, name: &str) -> std::result::Result<Vec<u8>, i32> {
    let (c, n) = (cpath(p), cs(name));
    let mut buf = vec![0u8; 70000];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(errno());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

fn get_ok(p: &Path, name: &str) -> Result<Vec<u8>> {
    get(p, name).map_err(|e| anyhow!("getxattr {name}: {}", ename(e)))
}

fn get_missing(p: &Path, name: &str) -> Result<()> {
    match get(p, name) {
        Err(libc::ENODATA) => Ok(()),
        Err(e) => bail!("getxattr of missing {name}: {}, expected ENODATA", ename(e)),
        Ok(v) => bail!("getxattr of missing {name} returned {} bytes", v.len()),
    }
}

fn list(p: &Path) -> Result<Vec<String>> {
    let c = cpath(p);
    // SAFETY: a NULL buffer of size 0 asks for the size.
    let n = unsafe { libc::listxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    let n = chk(n, "listxattr size")?;
    let mut buf = vec![0u8; n as usize + 256];
    // SAFETY: valid buffer.
    let m = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let m = chk(m, "listxattr")?;
    // The size query may overestimate (names filtered later), never under.
    ensure(
        m <= n,
        format!("listxattr size query {n} < listxattr result {m}"),
    )?;
    buf.truncate(m as usize);
    ensure(
        buf.is_empty() || buf.ends_with(&[0]),
        "listxattr list not NUL-terminated",
    )?;
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

fn remove(p: &Path, name: &str) -> i32 {
    let (c, n) = (cpath(p), cs(name));
    // SAFETY: valid C strings.
    unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) }
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("f");
    write_file(&f, b"data")?;
    let mut any = false;
    if namespace(ctx, &f, "user")? {
        any = true;
        user_extras(ctx, &f)?;
    }
    if ctx.root {
        any |= namespace(ctx, &f, "trusted")?;
        if any && others_can_reach(ctx) {
            // Trusted attributes are invisible to unprivileged users.
            set_ok(&f, "trusted.hidden", b"h", 0)?;
            let f2 = f.clone();
            in_child(move || {
                become_user(OTHER_UID, OTHER_GID)?;
                let names = list(&f2)?;
                ensure(
                    !names.iter().any(|n| n.starts_with("trusted.")),
                    format!("unprivileged listxattr shows trusted names: {names:?}"),
                )?;
                match get(&f2, "trusted.hidden") {
                    Err(libc::ENODATA) | Err(libc::EPERM) => Ok(()),
                    Err(e) => bail!("unprivileged getxattr trusted.*: {}", ename(e)),
                    Ok(_) => bail!("unprivileged getxattr read a trusted attribute"),
                }
            })?;
        }
    } else {
        ctx.note("not root: trusted namespace not tried");
    }
    if ctx.root {
        any |= namespace(ctx, &f, "security")?;
    } else {
        ctx.note("not root: security namespace not tried");
    }
    let acl = acls(ctx)?;
    if !any && !acl {
        return skip("no extended attribute namespace is supported");
    }
    Ok(())
}

/// The generic checks in one namespace; false if it is not supported.
fn namespace(ctx: &Ctx, f: &Path, ns: &str) -> Result<bool> {
    let k1 = format!("{ns}.mxfs_k1");
    let k2 = format!("{ns}.mxfs_k2");
    let r = set(f, &k1, b"v1", libc::XATTR_CREATE);
    if r < 0 && unsupported(errno()) {
        ctx.note(format!("{ns}.* xattrs: {}", ename(errno())));
        return Ok(false);
    }
    chk(r, format_args!("setxattr {k1} XATTR_CREATE"))?;
    same(format!("getxattr {k1}"), &get_ok(f, &k1)?, b"v1")?;
    let r = set(f, &k1, b"again", libc::XATTR_CREATE);
    expect_errno(
        r,
        &[libc::EEXIST],
        format_args!("XATTR_CREATE of existing {k1}"),
    )?;
    let r = set(f, &k2, b"x", libc::XATTR_REPLACE);
    expect_errno(
        r,
        &[libc::ENODATA],
        format_args!("XATTR_REPLACE of missing {k2}"),
    )?;
    get_missing(f, &k2)?;
    set_ok(f, &k1, b"v1-replaced", libc::XATTR_REPLACE)?;
    same(
        format!("{k1} after replace"),
        &get_ok(f, &k1)?,
        b"v1-replaced",
    )?;
    // Size query and a too-small buffer.
    let (c, n) = (cpath(f), cs(&k1));
    // SAFETY: NULL buffer with size 0 asks for the size.
    let sz = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    ensure(
        sz == 11,
        format!("getxattr size query of {k1}: {sz}, expected 11"),
    )?;
    let mut small = [0u8; 4];
    // SAFETY: valid buffer.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), small.as_mut_ptr().cast(), 4) };
    expect_errno(
        r,
        &[libc::ERANGE],
        format_args!("getxattr {k1} into 4 bytes"),
    )?;
    // An empty value and a large one.
    set_ok(f, &k2, b"", 0)?;
    ensure(
        get_ok(f, &k2)?.is_empty(),
        format!("empty value of {k2} read back non-empty"),
    )?;
    let big = pattern(2000, 9);
    set_ok(f, &k2, &big, 0)?;
    same(format!("2000-byte value of {k2}"), &get_ok(f, &k2)?, &big)?;
    let names = list(f)?;
    for k in [&k1, &k2] {
        ensure(names.contains(k), format!("listxattr {names:?} lacks {k}"))?;
    }
    // Through a descriptor.
    let fd = Fd::open(f, libc::O_RDONLY, 0)?;
    let k3 = format!("{ns}.mxfs_fd");
    let n3 = cs(&k3);
    // SAFETY: valid pointers.
    let r = unsafe { libc::fsetxattr(fd.0, n3.as_ptr(), b"fd".as_ptr().cast(), 2, 0) };
    chk(r, format_args!("fsetxattr {k3}"))?;
    let mut buf = [0u8; 16];
    // SAFETY: valid pointers.
    let r = unsafe { libc::fgetxattr(fd.0, n3.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    same(
        format!("fgetxattr {k3}"),
        &buf[..chk(r, "fgetxattr")? as usize],
        b"fd",
    )?;
    // SAFETY: valid pointers.
    chk(
        unsafe { libc::fremovexattr(fd.0, n3.as_ptr()) },
        "fremovexattr",
    )?;
    get_missing(f, &k3)?;
    // Remove; then it is gone, and removing again is ENODATA.
    chk(remove(f, &k1), format_args!("removexattr {k1}"))?;
    get_missing(f, &k1)?;
    let r = remove(f, &k1);
    expect_errno(
        r,
        &[libc::ENODATA],
        format_args!("removexattr of removed {k1}"),
    )?;
    ensure(
        !list(f)?.contains(&k1),
        format!("{k1} still listed after removal"),
    )?;
    // Many attributes on one file (beyond inline storage).
    for i in 0..40 {
        set_ok(
            f,
            &format!("{ns}.many{i:02}"),
            format!("value {i}").as_bytes(),
            0,
        )?;
    }
    let names = list(f)?;
    for i in 0..40 {
        let k = format!("{ns}.many{i:02}");
        ensure(names.contains(&k), format!("{k} not listed"))?;
        same(&k, &get_ok(f, &k)?, format!("value {i}").as_bytes())?;
    }
    for i in 0..40 {
        chk(remove(f, &format!("{ns}.many{i:02}")), "removexattr")?;
    }
    chk(remove(f, &k2), "removexattr")?;
    Ok(true)
}

fn user_extras(ctx: &Ctx, f: &Path) -> Result<()> {
    // user.* on a directory is allowed; on a symlink it is not.
    set_ok(&ctx.dir, "user.mxfs_dir", b"d", 0)?;
    same(
        "user xattr on a directory",
        &get_ok(&ctx.dir, "user.mxfs_dir")?,
        b"d",
    )?;
    let l = ctx.p("link");
    let (t, cl) = (cs("f"), cpath(&l));
    // SAFETY: valid C strings.
    chk(unsafe { libc::symlink(t.as_ptr(), cl.as_ptr()) }, "symlink")?;
    let n = cs("user.mxfs_l");
    // SAFETY: valid pointers.
    let r = unsafe { libc::lsetxattr(cl.as_ptr(), n.as_ptr(), b"l".as_ptr().cast(), 1, 0) };
    expect_errno(r, &[libc::EPERM], "lsetxattr user.* on a symlink")?;
    // setxattr through the symlink reaches the file.
    set_ok(&l, "user.mxfs_via", b"via", 0)?;
    same(
        "user xattr set through a symlink",
        &get_ok(f, "user.mxfs_via")?,
        b"via",
    )?;
    // An unknown namespace.
    let r = set(f, "bogus.name", b"x", 0);
    expect_errno(r, &[libc::EOPNOTSUPP], "setxattr in an unknown namespace")?;
    // Name length limit: 255 bytes.
    let long = format!("user.{}", "n".repeat(251));
    let r = set(f, &long, b"x", 0);
    expect_errno(r, &[libc::ERANGE], "setxattr with a 256-byte name")?;
    // Values survive a rename and a hard link.
    let g = ctx.p("g");
    let (cf, cg) = (cpath(f), cpath(&g));
    // SAFETY: valid C strings.
    chk(unsafe { libc::link(cf.as_ptr(), cg.as_ptr()) }, "link")?;
    same(
        "xattr through a hard link",
        &get_ok(&g, "user.mxfs_via")?,
        b"via",
    )?;
    chk(remove(f, "user.mxfs_via"), "removexattr")?;
    unlink(&g)?;
    Ok(())
}

// POSIX ACLs in the kernel's xattr format (include/uapi/linux/posix_acl_xattr.h).
const ACL_VERSION: u32 = 2;
pub const USER_OBJ: u16 = 0x01;
pub const USER: u16 = 0x02;
pub const GROUP_OBJ: u16 = 0x04;
pub const GROUP: u16 = 0x08;
pub const MASK: u16 = 0x10;
pub const OTHER: u16 = 0x20;
const UNDEF: u32 = u32::MAX;
const ACCESS: &str = "system.posix_acl_access";
const DEFAULT: &str = "system.posix_acl_default";

/// One ACL entry: (tag, perm, id).
type Entry = (u16, u16, u32);

fn acl_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut v = ACL_VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn acl_parse(b: &[u8]) -> Result<Vec<Entry>> {
    ensure(
        b.len() >= 4 && (b.len() - 4).is_multiple_of(8),
        format!("ACL of {} bytes", b.len()),
    )?;
    let v = u32::from_le_bytes(b[..4].try_into()?);
    ensure(v == ACL_VERSION, format!("ACL version {v}"))?;
    Ok(b[4..]
        .chunks(8)
        .map(|e| {
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        })
        .collect())
}

fn entries_eq(what: &str, got: &[Entry], want: &[Entry]) -> Result<()> {
    ensure(
        got == want,
        format!("{what}: ACL {got:?}, expected {want:?}"),
    )
}

/// The ACL checks; false if this filesystem has no POSIX ACLs.
fn acls(ctx: &Ctx) -> Result<bool> {
    let f = ctx.p("acl-file");
    write_file(&f, b"acl data")?;
    let c = cpath(&f);
    // SAFETY: valid C string.
    chk(unsafe { libc::chmod(c.as_ptr(), 0o644) }, "chmod")?;
    let acl = [
        (USER_OBJ, 7, UNDEF),
        (USER, 6, OTHER_UID),
        (GROUP_OBJ, 4, UNDEF),
        (MASK, 6, UNDEF),
        (OTHER, 0, UNDEF),
    ];
    let r = set(&f, ACCESS, &acl_bytes(&acl), 0);
    if r < 0 && unsupported(errno()) {
        ctx.note(format!("POSIX ACLs: {}", ename(errno())));
        return Ok(false);
    }
    chk(r, "setxattr system.posix_acl_access")?;
    entries_eq(
        "access ACL read back",
        &acl_parse(&get_ok(&f, ACCESS)?)?,
        &acl,
    )?;
    // Mode follows: owner = USER_OBJ, group = MASK, other = OTHER.
    let m = stat(&f)?.st_mode & 0o777;
    ensure(
        m == 0o760,
        format!("mode {m:o} after setting the ACL, expected 760"),
    )?;
    ensure(
        list(&f)?.iter().any(|n| n == ACCESS),
        "access ACL not listed by listxattr",
    )?;
    // The ACL is enforced: uid 1234 may read and write, 1235 may not.
    if ctx.root && others_can_reach(ctx) {
        let f2 = f.clone();
        in_child(move || {
            become_user(OTHER_UID, OTHER_GID)?;
            let fd = Fd::open(&f2, libc::O_RDWR, 0)
                .map_err(|e| e.context("open O_RDWR as the ACL's named user"))?;
            same("read as the ACL's named user", &fd.read_all()?, b"acl data")?;
            Ok(())
        })?;
        let f2 = f.clone();
        in_child(move || {
            become_user(STRANGER_UID, STRANGER_UID)?;
            match Fd::try_open(&f2, libc::O_RDONLY, 0) {
                Err(libc::EACCES) => Ok(()),
                Err(e) => bail!(
                    "open as a user outside the ACL: {}, expected EACCES",
                    ename(e)
                ),
                Ok(_) => bail!("a user outside the ACL (other ---) opened the file"),
            }
        })?;
    }
    // chmod rewrites the mask entry (and USER_OBJ, OTHER).
    // SAFETY: valid C string.
    chk(unsafe { libc::chmod(c.as_ptr(), 0o740) }, "chmod 740")?;
    let want = [
        (USER_OBJ, 7, UNDEF),
        (USER, 6, OTHER_UID),
        (GROUP_OBJ, 4, UNDEF),
        (MASK, 4, UNDEF),
        (OTHER, 0, UNDEF),
    ];
    entries_eq(
        "ACL after chmod 740",
        &acl_parse(&get_ok(&f, ACCESS)?)?,
        &want,
    )?;
    // A minimal ACL is just a mode: the attribute goes away.
    let minimal = [
        (USER_OBJ, 6, UNDEF),
        (GROUP_OBJ, 4, UNDEF),
        (OTHER, 4, UNDEF),
    ];
    set_ok(&f, ACCESS, &acl_bytes(&minimal), 0)?;
    let m = stat(&f)?.st_mode & 0o777;
    ensure(
        m == 0o644,
        format!("mode {m:o} after a minimal ACL rw-r--r--"),
    )?;
    match get(&f, ACCESS) {
        Err(libc::ENODATA) => {}
        Err(e) => bail!("getxattr of a minimal ACL: {}", ename(e)),
        Ok(b) => {
            // Some filesystems keep it; it must then still be the minimal one.
            entries_eq("minimal ACL", &acl_parse(&b)?, &minimal)?;
            ctx.note("a minimal access ACL is kept as an xattr");
        }
    }
    // A malformed ACL (no MASK with a named user) is refused.
    let bad = [
        (USER_OBJ, 7, UNDEF),
        (USER, 6, 5),
        (GROUP_OBJ, 4, UNDEF),
        (OTHER, 0, UNDEF),
    ];
    let r = set(&f, ACCESS, &acl_bytes(&bad), 0);
    expect_errno(
        r,
        &[libc::EINVAL],
        "setting an ACL with a named user and no mask",
    )?;

    // Default ACL on a directory: inherited by new files and directories,
    // and the umask (022) is ignored.
    let d = ctx.p("acl-dir");
    mkdir(&d, 0o755)?;
    let def = [
        (USER_OBJ, 7, UNDEF),
        (USER, 5, OTHER_UID),
        (GROUP_OBJ, 5, UNDEF),
        (GROUP, 7, 777),
        (MASK, 7, UNDEF),
        (OTHER, 6, UNDEF),
    ];
    set_ok(&d, DEFAULT, &acl_bytes(&def), 0)?;
    entries_eq(
        "default ACL read back",
        &acl_parse(&get_ok(&d, DEFAULT)?)?,
        &def,
    )?;
    let nf = d.join("new-file");
    let fd = Fd::open(&nf, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o666)?;
    drop(fd);
    // Create mode 666 masks USER_OBJ, MASK and OTHER: rw-, rw-, rw-.
    let want = [
        (USER_OBJ, 6, UNDEF),
        (USER, 5, OTHER_UID),
        (GROUP_OBJ, 5, UNDEF),
        (GROUP, 7, 777),
        (MASK, 6, UNDEF),
        (OTHER, 6, UNDEF),
    ];
    entries_eq(
        "ACL inherited by a new file",
        &acl_parse(&get_ok(&nf, ACCESS)?)?,
        &want,
    )?;
    let m = stat(&nf)?.st_mode & 0o777;
    ensure(
        m == 0o666,
        format!("inherited file mode {m:o}, expected 666 (umask ignored)"),
    )?;
    get_missing(&nf, DEFAULT)?;
    let nd = d.join("new-dir");
    mkdir(&nd, 0o777)?;
    entries_eq(
        "default ACL inherited by a subdirectory",
        &acl_parse(&get_ok(&nd, DEFAULT)?)?,
        &def,
    )?;
    entries_eq(
        "access ACL of a new subdirectory",
        &acl_parse(&get_ok(&nd, ACCESS)?)?,
        &def,
    )?;
    let m = stat(&nd)?.st_mode & 0o777;
    ensure(
        m == 0o776,
        format!("inherited directory mode {m:o}, expected 776"),
    )?;
    // Removing the default ACL.
    chk(remove(&d, DEFAULT), "removexattr system.posix_acl_default")?;
    get_missing(&d, DEFAULT)?;
    let plain = d.join("plain");
    write_file(&plain, b"")?;
    get_missing(&plain, ACCESS)?;
    let m = stat(&plain)?.st_mode & 0o777;
    ensure(
        m == 0o644,
        format!("file mode {m:o} after removing the default ACL"),
    )?;
    // A default ACL on a file is refused.
    let r = set(&f, DEFAULT, &acl_bytes(&def), 0);
    expect_errno(
        r,
        &[libc::EACCES, libc::EINVAL],
        "default ACL on a regular file",
    )?;
    Ok(true)
}
