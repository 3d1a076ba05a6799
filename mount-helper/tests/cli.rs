//! The built `mount-mxfs` binary with bad input: exit codes and the
//! one-line messages.  None of these gets past the checks, so nothing on
//! the machine is changed even when the tests run as root.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_mount-mxfs");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run mount-mxfs")
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Exit code and the stderr line; checks that it is one prefixed line.
fn fails(args: &[&str]) -> (i32, String) {
    let out = run(args);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err:?}");
    assert!(err.starts_with("mount.mxfs: "), "{args:?}: {err:?}");
    (out.status.code().unwrap(), err)
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mount-mxfs-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn unknown_option_exit_1_naming_it_before_any_device_check() {
    let (code, err) = fails(&["/dev/nonexistent-mxfs", "/tmp", "-o", "rw,bogus_opt"]);
    assert_eq!(code, 1);
    assert!(err.contains("\"bogus_opt\""), "{err}");
}

#[test]
fn bad_option_values_exit_1() {
    let (code, err) = fails(&["/dev/x", "/tmp", "-o", "daemon_timeout=0"]);
    assert_eq!(code, 1);
    assert!(err.contains("1..3600"), "{err}");
    let (code, err) = fails(&["/dev/x", "/tmp", "-o", "mountpoint=/elsewhere"]);
    assert_eq!(code, 1);
    assert!(err.contains("mountpoint="), "{err}");
    let (code, err) = fails(&["/dev/x", "/tmp", "-o", "fence=sbd"]);
    assert_eq!(code, 1);
    assert!(err.contains("fence=none"), "{err}");
    for bad in [
        "dead_interval=2",
        "dead_interval=301",
        "dead_interval=abc",
        "dead_interval",
        "dead_interval=6,dead_interval=7",
    ] {
        let (code, err) = fails(&["/dev/x", "/tmp", "-o", bad]);
        assert_eq!(code, 1, "{bad}");
        assert!(
            err.contains("dead_interval") && err.contains("3..300"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn unknown_flag_and_missing_arguments_exit_1() {
    let (code, err) = fails(&["/dev/x", "/tmp", "-N", "netns"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown flag -N"), "{err}");
    let (code, err) = fails(&["/dev/x"]);
    assert_eq!(code, 1);
    assert!(err.contains("usage"), "{err}");
}

#[test]
fn missing_device_exit_32() {
    if !is_root() {
        eprintln!("SKIPPED: not root (the root check comes first)");
        return;
    }
    let (code, err) = fails(&["/dev/nonexistent-mxfs", "/tmp", "-o", "_netdev"]);
    assert_eq!(code, 32);
    assert!(
        err.contains("/dev/nonexistent-mxfs does not exist"),
        "{err}"
    );
    let (code, err) = fails(&["LABEL=no-such-mxfs-label", "/tmp"]);
    assert_eq!(code, 32);
    assert!(
        err.contains("no device with LABEL=no-such-mxfs-label"),
        "{err}"
    );
}

#[test]
fn regular_file_and_char_device_are_not_block_devices_exit_32() {
    if !is_root() {
        eprintln!("SKIPPED: not root (the root check comes first)");
        return;
    }
    let d = tmp("file");
    let img = d.join("disk.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let (code, err) = fails(&[img.to_str().unwrap(), "/tmp", "-o", "fence=none"]);
    assert_eq!(code, 32);
    assert!(
        err.contains("is not a block device but a regular file"),
        "{err}"
    );
    assert!(err.contains("losetup"), "{err}");
    let (code, err) = fails(&["/dev/null", "/tmp"]);
    assert_eq!(code, 32);
    assert!(err.contains("character device"), "{err}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn missing_mount_point_exit_32() {
    if !is_root() {
        eprintln!("SKIPPED: not root (the root check comes first)");
        return;
    }
    let d = tmp("dir");
    let missing = d.join("nope");
    let (code, err) = fails(&["/dev/null", missing.to_str().unwrap()]);
    assert_eq!(code, 32);
    assert!(
        err.contains("mount point") && err.contains("mkdir -p"),
        "{err}"
    );
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn not_root_exit_1() {
    if !is_root() {
        let (code, err) = fails(&["/dev/x", "/tmp"]);
        assert_eq!(code, 1);
        assert!(err.contains("must be run as root"), "{err}");
        return;
    }
    // As root: drop to nobody with setpriv, if it is there.
    let out = match Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "/dev/x",
            "/tmp",
        ])
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED: no setpriv: {e}");
            return;
        }
    };
    let err = String::from_utf8(out.stderr).unwrap();
    if err.contains("setpriv:") {
        eprintln!("SKIPPED: setpriv cannot drop privileges here: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("must be run as root"), "{err}");
}

#[test]
fn help_and_version_exit_0() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("daemon_timeout=N") && text.contains("fence=none"));
    let out = run(&["-V"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("mount.mxfs"));
}
