//! The superblock probe against a real `mkfs.xfs` image (a 320 MiB
//! sparse file in the temp dir; mkfs.xfs refuses images under 300 MB).

use std::path::PathBuf;
use std::process::Command;

use mxfs_core::xfs_probe::{probe_path, ProbeFileError};

fn image(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mxfs-core-{tag}-{}.img", std::process::id()))
}

#[test]
fn probe_reads_what_mkfs_xfs_wrote() {
    let img = image("mkfs");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(320 << 20).unwrap();
    drop(f);
    let uuid = "5c1f0a52-8c7e-4d0b-9a43-7b6e2f1d9e01";
    let out = match Command::new("mkfs.xfs")
        .args(["-f", "-q", "-L", "shared1", "-m", &format!("uuid={uuid}")])
        .arg(&img)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            std::fs::remove_file(&img).unwrap();
            eprintln!("SKIPPED: mkfs.xfs not runnable here: {e}");
            return;
        }
    };
    assert!(
        out.status.success(),
        "mkfs.xfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = probe_path(&img);
    std::fs::remove_file(&img).unwrap();
    let p = p.unwrap();
    assert_eq!(p.uuid.to_string(), uuid);
    assert_eq!(p.label, "shared1");
    assert_eq!(p.version, 5);
    assert_eq!(p.block_size, 4096);
}

#[test]
fn probe_refuses_a_zeroed_image() {
    let img = image("zero");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let r = probe_path(&img);
    std::fs::remove_file(&img).unwrap();
    assert!(matches!(r, Err(ProbeFileError::Probe(_))), "{r:?}");
    let short = image("short");
    std::fs::write(&short, b"XFSB").unwrap();
    let r = probe_path(&short);
    std::fs::remove_file(&short).unwrap();
    assert!(r.unwrap_err().to_string().contains("too short"));
}
