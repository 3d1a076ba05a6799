//! `readdir`: getdents64 over 300 entries, and seek/telldir stability.

use super::*;
use std::collections::{BTreeSet, HashMap};

/// One directory entry as getdents64 returns it.
#[derive(Debug, Clone)]
pub struct Dirent {
    pub ino: u64,
    /// The position after this entry (what telldir would give).
    pub off: i64,
    pub dtype: u8,
    pub name: String,
}

/// One getdents64 call with a buffer of `bufsize`; empty at the end.
pub fn getdents(fd: &Fd, bufsize: usize) -> Result<Vec<Dirent>> {
    let mut buf = vec![0u8; bufsize];
    // SAFETY: valid buffer of that size.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, fd.0, buf.as_mut_ptr(), buf.len()) };
    let n = chk(n, "getdents64")? as usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        ensure(i + 19 <= n, "getdents64: truncated record")?;
        let ino = u64::from_ne_bytes(buf[i..i + 8].try_into()?);
        let off = i64::from_ne_bytes(buf[i + 8..i + 16].try_into()?);
        let reclen = u16::from_ne_bytes(buf[i + 16..i + 18].try_into()?) as usize;
        let dtype = buf[i + 18];
        ensure(
            reclen >= 20 && i + reclen <= n,
            format!("getdents64: bad d_reclen {reclen}"),
        )?;
        let name = &buf[i + 19..i + reclen];
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        out.push(Dirent {
            ino,
            off,
            dtype,
            name: String::from_utf8_lossy(&name[..end]).into_owned(),
        });
        i += reclen;
    }
    Ok(out)
}

/// Reads from the current position to the end.
pub fn read_rest(fd: &Fd, bufsize: usize) -> Result<Vec<Dirent>> {
    let mut all = Vec::new();
    loop {
        let batch = getdents(fd, bufsize)?;
        if batch.is_empty() {
            return Ok(all);
        }
        ensure(all.len() < 1_000_000, "getdents64 never ends")?;
        all.extend(batch);
    }
}

fn seek(fd: &Fd, off: i64) -> Result<()> {
    // SAFETY: plain syscall.
    let r = unsafe { libc::lseek(fd.0, off, libc::SEEK_SET) };
    ensure(
        chk(r, format_args!("lseek dir to {off}"))? == off,
        "lseek returned another offset",
    )
}

fn names(v: &[Dirent]) -> Vec<String> {
    v.iter().map(|d| d.name.clone()).collect()
}

const N: usize = 300;

pub fn run(ctx: &Ctx) -> Result<()> {
    let d = ctx.p("big");
    mkdir(&d, 0o755)?;
    let mut want: BTreeSet<String> = [".", ".."].iter().map(|s| s.to_string()).collect();
    for i in 0..N {
        // Names of varying lengths, so records differ in size.
        let name = format!("entry-{i:03}-{}", "x".repeat(i % 37));
        write_file(&d.join(&name), b"")?;
        want.insert(name);
    }
    mkdir(&d.join("subdir"), 0o755)?;
    want.insert("subdir".into());
    let (cl, ct) = (cpath(&d.join("symlink")), cs("target"));
    // SAFETY: valid C strings.
    chk(
        unsafe { libc::symlink(ct.as_ptr(), cl.as_ptr()) },
        "symlink",
    )?;
    want.insert("symlink".into());

    let fd = Fd::open(&d, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    // A small buffer makes many calls, each resuming from the position.
    let all = read_rest(&fd, 1024)?;
    let got: BTreeSet<String> = all.iter().map(|e| e.name.clone()).collect();
    ensure(got.len() == all.len(), "getdents64 returned a name twice")?;
    if got != want {
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        bail!("readdir set differs: missing {missing:?}, unexpected {extra:?}");
    }
    // Inode numbers and types agree with stat.
    let dot = stat(&d)?;
    let dotdot = stat(&ctx.dir)?;
    let mut unknown_types = 0;
    for e in &all {
        let st = match e.name.as_str() {
            "." => dot,
            ".." => dotdot,
            n => lstat(&d.join(n))?,
        };
        ensure(
            e.ino == st.st_ino,
            format!("d_ino {} of {} != st_ino {}", e.ino, e.name, st.st_ino),
        )?;
        let want_type = match ftype(st.st_mode) {
            libc::S_IFDIR => libc::DT_DIR,
            libc::S_IFLNK => libc::DT_LNK,
            _ => libc::DT_REG,
        };
        if e.dtype == libc::DT_UNKNOWN {
            unknown_types += 1;
        } else {
            ensure(
                e.dtype == want_type,
                format!("d_type {} of {}, expected {want_type}", e.dtype, e.name),
            )?;
        }
    }
    if unknown_types > 0 {
        ctx.note(format!("{unknown_types} entries with DT_UNKNOWN"));
    }
    // Offsets are distinct (each is a resumable position).
    let offs: BTreeSet<i64> = all.iter().map(|e| e.off).collect();
    ensure(offs.len() == all.len(), "two entries share a d_off")?;

    // Rewind: the same sequence again, with a larger buffer.
    seek(&fd, 0)?;
    let again = read_rest(&fd, 32768)?;
    ensure(names(&again) == names(&all), "order differs after lseek(0)")?;

    // Seek to recorded positions: the rest is the same, every time.
    let order = names(&all);
    for k in [1usize, 2, 77, all.len() / 2, all.len() - 3, all.len() - 1] {
        seek(&fd, all[k - 1].off)?;
        let rest = read_rest(&fd, 2048)?;
        if names(&rest) != order[k..] {
            bail!(
                "after seekdir to d_off {} of entry {k} ({}): got {} entries starting {:?}, expected {} starting {:?}",
                all[k - 1].off,
                all[k - 1].name,
                rest.len(),
                rest.first().map(|e| e.name.clone()),
                order.len() - k,
                order.get(k)
            );
        }
    }
    // Positions from a separate open are the same positions.
    let fd2 = Fd::open(&d, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mid = all.len() / 3;
    seek(&fd2, all[mid - 1].off)?;
    ensure(
        names(&read_rest(&fd2, 4096)?) == order[mid..],
        "a d_off used on another open of the directory gave other entries",
    )?;
    drop(fd2);

    // Stability across changes: remove entries already read and add new
    // ones; seeking to a saved position still yields every entry after it
    // that was not removed, exactly once.
    let k = all.len() / 2;
    let pos = all[k - 1].off;
    let removed: BTreeSet<String> = all[..k]
        .iter()
        .filter(|e| e.name.starts_with("entry-"))
        .take(50)
        .map(|e| e.name.clone())
        .collect();
    for n in &removed {
        unlink(&d.join(n))?;
    }
    let mut added = BTreeSet::new();
    for i in 0..50 {
        let name = format!("added-{i:02}");
        write_file(&d.join(&name), b"")?;
        added.insert(name);
    }
    seek(&fd, pos)?;
    let rest = read_rest(&fd, 1024)?;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in &rest {
        *counts.entry(e.name.clone()).or_default() += 1;
    }
    for n in &order[k..] {
        match counts.get(n) {
            Some(1) => {}
            Some(c) => bail!("after changes and seekdir: {n} returned {c} times"),
            None => bail!("after changes and seekdir: {n} (after the saved position) is missing"),
        }
    }
    for (n, c) in &counts {
        ensure(
            *c == 1,
            format!("after changes and seekdir: {n} returned {c} times"),
        )?;
        ensure(
            order[k..].contains(n) || added.contains(n),
            format!("after changes and seekdir: unexpected {n}"),
        )?;
    }
    // And a full listing now has exactly the new set.
    seek(&fd, 0)?;
    let now: BTreeSet<String> = names(&read_rest(&fd, 4096)?).into_iter().collect();
    let mut want_now: BTreeSet<String> = want.difference(&removed).cloned().collect();
    want_now.extend(added);
    ensure(
        now == want_now,
        "full listing after changes differs from the expected set",
    )?;

    // An empty directory has just . and ..; getdents on a file is ENOTDIR.
    let e = ctx.p("empty");
    mkdir(&e, 0o755)?;
    let efd = Fd::open(&e, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut en = names(&read_rest(&efd, 1024)?);
    en.sort();
    ensure(en == [".", ".."], format!("empty directory lists {en:?}"))?;
    let mut buf = [0u8; 256];
    write_file(&ctx.p("plain"), b"")?;
    let pfd = Fd::open(&ctx.p("plain"), libc::O_RDONLY, 0)?;
    // SAFETY: valid buffer.
    let r = unsafe { libc::syscall(libc::SYS_getdents64, pfd.0, buf.as_mut_ptr(), buf.len()) };
    expect_errno(r, &[libc::ENOTDIR], "getdents64 on a regular file")?;
    Ok(())
}
