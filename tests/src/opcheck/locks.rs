//! `locks`: flock, fcntl POSIX record locks, OFD locks.

use super::*;

fn flock(fd: &Fd, op: i32) -> i32 {
    // SAFETY: plain syscall.
    unsafe { libc::flock(fd.0, op) }
}

fn lk(kind: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: plain data.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as i16;
    l.l_whence = libc::SEEK_SET as i16;
    l.l_start = start;
    l.l_len = len;
    l
}

fn fcntl_lock(fd: &Fd, cmd: i32, l: &mut libc::flock) -> i32 {
    // SAFETY: valid pointer to a struct flock.
    unsafe { libc::fcntl(fd.0, cmd, l as *mut libc::flock) }
}

fn setlk(fd: &Fd, cmd: i32, kind: i32, start: i64, len: i64) -> i32 {
    let mut l = lk(kind, start, len);
    fcntl_lock(fd, cmd, &mut l)
}

fn getlk(fd: &Fd, cmd: i32, kind: i32, start: i64, len: i64) -> Result<libc::flock> {
    let mut l = lk(kind, start, len);
    chk(fcntl_lock(fd, cmd, &mut l), "F_GETLK")?;
    Ok(l)
}

const CONFLICT: &[i32] = &[libc::EAGAIN, libc::EACCES];

pub fn run(ctx: &Ctx) -> Result<()> {
    let f = ctx.p("locked");
    write_file(&f, &[0u8; 4096])?;
    flocks(&f)?;
    posix(&f)?;
    interrupted_upgrade(&f)?;
    ofd(ctx, &f)?;
    Ok(())
}

fn flocks(f: &Path) -> Result<()> {
    let fd1 = Fd::open(f, libc::O_RDWR, 0)?;
    let fd2 = Fd::open(f, libc::O_RDWR, 0)?;
    chk(flock(&fd1, libc::LOCK_EX), "flock LOCK_EX")?;
    // Another open file description conflicts, even in this process.
    let r = flock(&fd2, libc::LOCK_EX | libc::LOCK_NB);
    expect_errno(
        r,
        &[libc::EWOULDBLOCK],
        "flock LOCK_EX|LOCK_NB on a second description",
    )?;
    let r = flock(&fd2, libc::LOCK_SH | libc::LOCK_NB);
    expect_errno(
        r,
        &[libc::EWOULDBLOCK],
        "flock LOCK_SH|LOCK_NB against LOCK_EX",
    )?;
    // And in a child with its own open.
    let fp = f.to_path_buf();
    in_child(move || {
        let c = Fd::open(&fp, libc::O_RDWR, 0)?;
        let r = flock(&c, libc::LOCK_EX | libc::LOCK_NB);
        expect_errno(r, &[libc::EWOULDBLOCK], "child's flock LOCK_EX|LOCK_NB")
    })?;
    // An inherited descriptor shares the lock: no conflict with itself.
    let raw = fd1.0;
    in_child(move || {
        // SAFETY: the inherited descriptor.
        let r = unsafe { libc::flock(raw, libc::LOCK_EX | libc::LOCK_NB) };
        chk(r, "flock on an inherited descriptor of the holder")?;
        Ok(())
    })?;
    // A blocked waiter gets the lock when the holder lets go.
    let fp = f.to_path_buf();
    let mut child = Child::spawn(move |side| {
        let c = Fd::open(&fp, libc::O_RDWR, 0)?;
        side.signal();
        chk(flock(&c, libc::LOCK_EX), "child's blocking flock")?;
        side.signal();
        side.wait()?;
        Ok(())
    })?;
    child.wait()?;
    std::thread::sleep(std::time::Duration::from_millis(100));
    chk(flock(&fd1, libc::LOCK_UN), "flock LOCK_UN")?;
    child.wait()?; // the child holds it now
    let r = flock(&fd2, libc::LOCK_EX | libc::LOCK_NB);
    expect_errno(r, &[libc::EWOULDBLOCK], "flock while the child holds it")?;
    child.signal();
    child.finish()?;
    // Shared locks coexist; the child's lock went with its exit.
    chk(flock(&fd1, libc::LOCK_SH | libc::LOCK_NB), "flock LOCK_SH")?;
    chk(
        flock(&fd2, libc::LOCK_SH | libc::LOCK_NB),
        "second flock LOCK_SH",
    )?;
    let r = flock(&fd2, libc::LOCK_EX | libc::LOCK_NB);
    expect_errno(
        r,
        &[libc::EWOULDBLOCK],
        "upgrade to LOCK_EX against another LOCK_SH",
    )?;
    chk(flock(&fd1, libc::LOCK_UN), "unlock")?;
    chk(
        flock(&fd2, libc::LOCK_EX | libc::LOCK_NB),
        "upgrade once alone",
    )?;
    // Closing the description releases it.
    drop(fd2);
    chk(
        flock(&fd1, libc::LOCK_EX | libc::LOCK_NB),
        "flock after the holder closed",
    )?;
    Ok(())
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// SIGALRM every `every_ms` (0: never) with a handler that does not
/// restart system calls (`SIG_DFL` again when stopped).
fn alarms(every_ms: i64) -> Result<()> {
    // SAFETY: plain data, then plain syscalls with valid pointers.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = if every_ms > 0 {
            on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t
        } else {
            libc::SIG_DFL
        };
        sa.sa_flags = 0; // no SA_RESTART: F_SETLKW gives EINTR
        chk(
            libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()),
            "sigaction(SIGALRM)",
        )?;
        let tv = libc::timeval {
            tv_sec: every_ms / 1000,
            tv_usec: (every_ms % 1000) * 1000,
        };
        let it = libc::itimerval {
            it_interval: tv,
            it_value: tv,
        };
        chk(
            libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()),
            "setitimer",
        )?;
    }
    Ok(())
}

/// A waiting F_SETLKW interrupted by a signal gives EINTR and leaves the
/// caller's locks as they were: here a read lock it was upgrading to a
/// write lock over a wider range.  (On mxfs the wait is withdrawn from
/// the cluster's lock manager, and a grant that crossed the withdrawal
/// would stand; it must never take the read lock away.)
fn interrupted_upgrade(f: &Path) -> Result<()> {
    let fd = Fd::open(f, libc::O_RDWR, 0)?;
    chk(
        setlk(&fd, libc::F_SETLK, libc::F_RDLCK, 0, 100),
        "F_SETLK F_RDLCK [0,100)",
    )?;
    // SAFETY: plain syscall.
    let me = unsafe { libc::getpid() };
    let fp = f.to_path_buf();
    let mut child = Child::spawn(move |side| {
        let c = Fd::open(&fp, libc::O_RDWR, 0)?;
        chk(
            setlk(&c, libc::F_SETLK, libc::F_WRLCK, 150, 50),
            "child's F_SETLK F_WRLCK [150,200)",
        )?;
        side.signal();
        // The parent's upgrade waits for us and is interrupted.
        side.wait()?;
        let l = getlk(&c, libc::F_GETLK, libc::F_WRLCK, 0, 100)?;
        ensure(
            l.l_type == libc::F_RDLCK as i16 && l.l_pid == me,
            format!(
                "after an interrupted upgrade F_GETLK [0,100) gives type {} pid {}, expected the parent's read lock (pid {me})",
                l.l_type, l.l_pid
            ),
        )?;
        let l = getlk(&c, libc::F_GETLK, libc::F_WRLCK, 100, 50)?;
        ensure(
            l.l_type == libc::F_UNLCK as i16,
            format!(
                "after an interrupted upgrade [100,150) is locked (type {} pid {})",
                l.l_type, l.l_pid
            ),
        )?;
        Ok(())
    })?;
    child.wait()?;
    alarms(300)?;
    let r = setlk(&fd, libc::F_SETLKW, libc::F_WRLCK, 0, 200);
    let err = errno();
    alarms(0)?;
    ensure(
        r < 0 && err == libc::EINTR,
        format!("F_SETLKW upgrade blocked by another process and interrupted: returned {r} errno {err}, expected EINTR"),
    )?;
    child.signal();
    child.finish()?;
    chk(
        setlk(&fd, libc::F_SETLK, libc::F_UNLCK, 0, 0),
        "F_UNLCK of the whole file",
    )?;
    Ok(())
}

fn posix(f: &Path) -> Result<()> {
    let fd = Fd::open(f, libc::O_RDWR, 0)?;
    chk(
        setlk(&fd, libc::F_SETLK, libc::F_WRLCK, 100, 100),
        "F_SETLK F_WRLCK [100,200)",
    )?;
    chk(
        setlk(&fd, libc::F_SETLK, libc::F_RDLCK, 1000, 10),
        "F_SETLK F_RDLCK [1000,1010)",
    )?;
    // Our own locks never conflict with us.
    let l = getlk(&fd, libc::F_GETLK, libc::F_WRLCK, 0, 0)?;
    ensure(
        l.l_type == libc::F_UNLCK as i16,
        "F_GETLK reports our own lock as a conflict",
    )?;
    // SAFETY: plain syscall.
    let me = unsafe { libc::getpid() };
    let fp = f.to_path_buf();
    let mut child = Child::spawn(move |side| {
        let c = Fd::open(&fp, libc::O_RDWR, 0)?;
        let r = setlk(&c, libc::F_SETLK, libc::F_WRLCK, 150, 10);
        expect_errno(
            r,
            CONFLICT,
            "child's F_SETLK inside the parent's write lock",
        )?;
        let r = setlk(&c, libc::F_SETLK, libc::F_RDLCK, 199, 1);
        expect_errno(
            r,
            CONFLICT,
            "child's F_RDLCK on the last byte of the parent's write lock",
        )?;
        chk(
            setlk(&c, libc::F_SETLK, libc::F_WRLCK, 200, 100),
            "child's F_SETLK [200,300)",
        )?;
        chk(
            setlk(&c, libc::F_SETLK, libc::F_RDLCK, 0, 100),
            "child's F_SETLK [0,100)",
        )?;
        chk(
            setlk(&c, libc::F_SETLK, libc::F_RDLCK, 1000, 10),
            "child's read lock over a read lock",
        )?;
        let r = setlk(&c, libc::F_SETLK, libc::F_WRLCK, 1005, 1);
        expect_errno(
            r,
            CONFLICT,
            "child's write lock over the parent's read lock",
        )?;
        let l = getlk(&c, libc::F_GETLK, libc::F_WRLCK, 0, 500)?;
        ensure(
            l.l_type == libc::F_WRLCK as i16,
            format!("F_GETLK type {}, expected F_WRLCK", l.l_type),
        )?;
        ensure(
            l.l_pid == me,
            format!("F_GETLK pid {}, expected the parent's {me}", l.l_pid),
        )?;
        ensure(
            (l.l_start, l.l_len) == (100, 100),
            format!(
                "F_GETLK range ({}, {}), expected (100, 100)",
                l.l_start, l.l_len
            ),
        )?;
        let l = getlk(&c, libc::F_GETLK, libc::F_RDLCK, 1000, 10)?;
        ensure(
            l.l_type == libc::F_UNLCK as i16,
            "F_GETLK F_RDLCK over a read lock reports a conflict",
        )?;
        side.signal();
        // The parent checks our lock, then releases its own.
        side.wait()?;
        // Now free: a blocking F_SETLKW returns at once.
        chk(
            setlk(&c, libc::F_SETLKW, libc::F_WRLCK, 100, 100),
            "child's F_SETLKW after release",
        )?;
        side.signal();
        side.wait()?;
        Ok(())
    })?;
    child.wait()?;
    let l = getlk(&fd, libc::F_GETLK, libc::F_WRLCK, 250, 1)?;
    ensure(
        l.l_type == libc::F_WRLCK as i16,
        "parent's F_GETLK does not see the child's lock",
    )?;
    ensure(
        l.l_pid == child.pid(),
        format!(
            "F_GETLK pid {}, expected the child's {}",
            l.l_pid,
            child.pid()
        ),
    )?;
    ensure(
        (l.l_start, l.l_len) == (200, 100),
        "F_GETLK range of the child's lock",
    )?;
    let r = setlk(&fd, libc::F_SETLK, libc::F_WRLCK, 50, 1);
    expect_errno(r, CONFLICT, "parent's F_WRLCK over the child's read lock")?;
    // Closing ANY descriptor of the file drops all our POSIX locks on it.
    let other = Fd::open(f, libc::O_RDONLY, 0)?;
    drop(other);
    child.signal();
    child.wait()?;
    let l = getlk(&fd, libc::F_GETLK, libc::F_WRLCK, 100, 100)?;
    ensure(
        l.l_type == libc::F_WRLCK as i16 && l.l_pid == child.pid(),
        "after our close the child's F_SETLKW lock is not visible",
    )?;
    child.signal();
    child.finish()?;
    // The child's exit released its locks.
    let l = getlk(&fd, libc::F_GETLK, libc::F_WRLCK, 0, 0)?;
    ensure(
        l.l_type == libc::F_UNLCK as i16,
        "locks of an exited process still reported",
    )?;
    // Unlock in the middle splits a lock.
    chk(
        setlk(&fd, libc::F_SETLK, libc::F_WRLCK, 0, 300),
        "F_SETLK [0,300)",
    )?;
    chk(
        setlk(&fd, libc::F_SETLK, libc::F_UNLCK, 100, 100),
        "F_UNLCK [100,200)",
    )?;
    let fp = f.to_path_buf();
    in_child(move || {
        let c = Fd::open(&fp, libc::O_RDWR, 0)?;
        chk(
            setlk(&c, libc::F_SETLK, libc::F_WRLCK, 100, 100),
            "lock in the unlocked middle",
        )?;
        let r = setlk(&c, libc::F_SETLK, libc::F_WRLCK, 99, 1);
        expect_errno(r, CONFLICT, "lock on the first piece of a split lock")?;
        let r = setlk(&c, libc::F_SETLK, libc::F_WRLCK, 200, 1);
        expect_errno(r, CONFLICT, "lock on the second piece of a split lock")
    })?;
    // A write lock needs a writable descriptor.
    let ro = Fd::open(f, libc::O_RDONLY, 0)?;
    let r = setlk(&ro, libc::F_SETLK, libc::F_WRLCK, 0, 1);
    expect_errno(r, &[libc::EBADF], "F_WRLCK through an O_RDONLY descriptor")?;
    Ok(())
}

fn ofd(ctx: &Ctx, f: &Path) -> Result<()> {
    let fd1 = Fd::open(f, libc::O_RDWR, 0)?;
    let fd2 = Fd::open(f, libc::O_RDWR, 0)?;
    let r = setlk(&fd1, libc::F_OFD_SETLK, libc::F_WRLCK, 0, 100);
    if r < 0 && errno() == libc::EINVAL {
        ctx.note("F_OFD_SETLK: EINVAL (no OFD locks)");
        return Ok(());
    }
    chk(r, "F_OFD_SETLK [0,100)")?;
    // Unlike POSIX locks, OFD locks conflict between descriptions of one process.
    let r = setlk(&fd2, libc::F_OFD_SETLK, libc::F_WRLCK, 50, 10);
    expect_errno(r, CONFLICT, "F_OFD_SETLK on a second description")?;
    let l = getlk(&fd2, libc::F_OFD_GETLK, libc::F_WRLCK, 0, 0)?;
    ensure(
        l.l_type == libc::F_WRLCK as i16,
        "F_OFD_GETLK sees no conflict",
    )?;
    ensure(
        l.l_pid == -1,
        format!("F_OFD_GETLK l_pid {}, expected -1", l.l_pid),
    )?;
    ensure((l.l_start, l.l_len) == (0, 100), "F_OFD_GETLK range")?;
    // l_pid must be 0 when setting.
    let mut bad = lk(libc::F_WRLCK, 500, 1);
    // SAFETY: plain syscall.
    bad.l_pid = unsafe { libc::getpid() };
    let r = fcntl_lock(&fd1, libc::F_OFD_SETLK, &mut bad);
    expect_errno(r, &[libc::EINVAL], "F_OFD_SETLK with nonzero l_pid")?;
    // POSIX locks of this very process conflict with the OFD lock.
    let r = setlk(&fd2, libc::F_SETLK, libc::F_WRLCK, 10, 1);
    expect_errno(r, CONFLICT, "POSIX F_SETLK over an OFD lock")?;
    // Closing another description does not drop it (unlike POSIX locks).
    let other = Fd::open(f, libc::O_RDONLY, 0)?;
    drop(other);
    let fp = f.to_path_buf();
    in_child(move || {
        let c = Fd::open(&fp, libc::O_RDWR, 0)?;
        let r = setlk(&c, libc::F_OFD_SETLK, libc::F_RDLCK, 99, 1);
        expect_errno(
            r,
            CONFLICT,
            "child's F_OFD_SETLK after the parent closed another fd",
        )
    })?;
    // An inherited description shares the lock.
    let raw = fd1.0;
    in_child(move || {
        let mut l = lk(libc::F_WRLCK, 0, 100);
        // SAFETY: valid pointer; the inherited descriptor.
        let r = unsafe { libc::fcntl(raw, libc::F_OFD_SETLK, &mut l as *mut libc::flock) };
        chk(r, "F_OFD_SETLK through the inherited holder description")?;
        Ok(())
    })?;
    chk(
        setlk(&fd1, libc::F_OFD_SETLK, libc::F_UNLCK, 0, 100),
        "F_OFD_SETLK F_UNLCK",
    )?;
    chk(
        setlk(&fd2, libc::F_OFD_SETLK, libc::F_WRLCK, 50, 10),
        "F_OFD_SETLK after unlock",
    )?;
    // Closing the holding description releases.
    drop(fd2);
    chk(
        setlk(&fd1, libc::F_OFD_SETLK, libc::F_WRLCK, 0, 0),
        "F_OFD_SETLK whole file after close",
    )?;
    Ok(())
}
