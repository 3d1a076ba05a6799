//! `--meta-bench DIR N`: metadata operation rates (create, stat, unlink of
//! N empty files in one directory; stat makes 10 passes), for the
//! benchmark that compares mxfs with raw XFS. Prints one line:
//! `meta create=R stat=R unlink=R` (ops/s).

use std::ffi::CString;
use std::path::Path;
use std::time::Instant;

/// Passes of the stat phase over the N files.
pub const STAT_PASSES: usize = 10;

fn rate(n: usize, f: impl FnMut(usize) -> std::io::Result<()>) -> std::io::Result<f64> {
    let t = Instant::now();
    (0..n).try_for_each(f)?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn run(dir: &Path, n: usize) -> std::io::Result<(f64, f64, f64)> {
    std::fs::create_dir_all(dir)?;
    let names: Vec<CString> = (0..n)
        .map(|i| {
            CString::new(
                dir.join(format!("f{i:07}"))
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        })
        .collect::<Result<_, _>>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    let create = rate(n, |i| {
        // SAFETY: the name is a valid C string; the fd is closed at once.
        let fd = check(unsafe {
            libc::open(
                names[i].as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o644,
            )
        })?;
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        Ok(())
    })?;
    // stat is ~20 times faster than create: several passes, so that the
    // timed span is long enough to mean something on an emulated machine.
    let stat = rate(n * STAT_PASSES, |i| {
        // SAFETY: st is written by stat before it is read.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and a valid stat buffer.
        check(unsafe { libc::stat(names[i % n].as_ptr(), &mut st) }).map(|_| ())
    })?;
    // SAFETY: valid C strings.
    let unlink = rate(n, |i| {
        check(unsafe { libc::unlink(names[i].as_ptr()) }).map(|_| ())
    })?;
    std::fs::remove_dir(dir)?;
    Ok((create, stat, unlink))
}

/// Runs the benchmark; returns the exit status.
pub fn cli(dir: &Path, n: usize) -> i32 {
    match run(dir, n) {
        Ok((c, s, u)) => {
            println!("meta create={c:.0} stat={s:.0} unlink={u:.0}");
            0
        }
        Err(e) => {
            eprintln!("mxfs-opcheck --meta-bench: {e}");
            1
        }
    }
}
