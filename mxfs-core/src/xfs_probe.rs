//! The XFS superblock probe: is this device XFS, and which volume is it?
//!
//! Only the first sector is read: magic `"XFSB"` at offset 0, the block
//! size at 4 and the volume UUID (`sb_uuid`, the volume's identity in
//! MXFS) at 32..48, plus the label (`sb_fname`, 108..120) for messages.
//! The kernel module re-reads and fully validates the superblock at mount
//! time; this probe exists so that `mount.mxfs` can say "not XFS" clearly
//! before anything is touched.  Every input gives a result or an error,
//! never a panic.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use uuid::Uuid;

/// "XFSB".
pub const XFS_SB_MAGIC: [u8; 4] = *b"XFSB";
/// How many bytes the probe needs: one 512-byte sector.
pub const PROBE_LEN: usize = 512;

const BLOCKSIZE_OFF: usize = 4;
const UUID_OFF: usize = 32;
const VERSIONNUM_OFF: usize = 100;
const FNAME_OFF: usize = 108;
const FNAME_LEN: usize = 12;

/// What the probe found in an XFS superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfsProbe {
    /// `sb_uuid`: the volume UUID.
    pub uuid: Uuid,
    /// `sb_blocksize` in bytes.
    pub block_size: u32,
    /// Superblock version (`sb_versionnum & 0xf`): 4 or 5.
    pub version: u8,
    /// `sb_fname`, NUL-trimmed; empty when the volume has no label.
    pub label: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("too short for an XFS superblock ({0} bytes, need {PROBE_LEN})")]
    Short(usize),
    #[error("no XFS superblock (magic {0:02x?}, expected \"XFSB\")")]
    BadMagic([u8; 4]),
    #[error("XFS superblock with an invalid block size {0}")]
    BadBlockSize(u32),
    #[error("XFS superblock version {0} (only 4 and 5 exist)")]
    BadVersion(u8),
    #[error("XFS superblock with the nil UUID")]
    NilUuid,
}

/// Decode the first sector of a device.
pub fn parse(sector: &[u8]) -> Result<XfsProbe, ProbeError> {
    if sector.len() < PROBE_LEN {
        return Err(ProbeError::Short(sector.len()));
    }
    let magic: [u8; 4] = sector[0..4].try_into().expect("4 bytes");
    if magic != XFS_SB_MAGIC {
        return Err(ProbeError::BadMagic(magic));
    }
    let block_size = u32::from_be_bytes(
        sector[BLOCKSIZE_OFF..BLOCKSIZE_OFF + 4]
            .try_into()
            .expect("4 bytes"),
    );
    if !(512..=65536).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(ProbeError::BadBlockSize(block_size));
    }
    let versionnum = u16::from_be_bytes(
        sector[VERSIONNUM_OFF..VERSIONNUM_OFF + 2]
            .try_into()
            .expect("2 bytes"),
    );
    let version = (versionnum & 0xf) as u8;
    if !(4..=5).contains(&version) {
        return Err(ProbeError::BadVersion(version));
    }
    let uuid = Uuid::from_bytes(
        sector[UUID_OFF..UUID_OFF + 16]
            .try_into()
            .expect("16 bytes"),
    );
    if uuid.is_nil() {
        return Err(ProbeError::NilUuid);
    }
    let fname = &sector[FNAME_OFF..FNAME_OFF + FNAME_LEN];
    let end = fname.iter().position(|&b| b == 0).unwrap_or(FNAME_LEN);
    let label = String::from_utf8_lossy(&fname[..end]).into_owned();
    Ok(XfsProbe {
        uuid,
        block_size,
        version,
        label,
    })
}

/// Why probing a path failed: reading it, or what was read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFileError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Probe(#[from] ProbeError),
}

/// Read the first sector of `path` (a block device or an image file) and
/// decode it.
pub fn probe_path(path: &Path) -> Result<XfsProbe, ProbeFileError> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; PROBE_LEN];
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(parse(&buf[..got])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let mut s = vec![0u8; PROBE_LEN];
        s[0..4].copy_from_slice(b"XFSB");
        s[4..8].copy_from_slice(&4096u32.to_be_bytes());
        s[32..48].copy_from_slice(&[
            0x3f, 0x25, 0x04, 0xe0, 0x4f, 0x89, 0x41, 0xd3, 0x9a, 0x0c, 0x03, 0x05, 0xe8, 0x2c,
            0x33, 0x01,
        ]);
        s[100..102].copy_from_slice(&0xb4a5u16.to_be_bytes());
        s[108..113].copy_from_slice(b"data1");
        s
    }

    #[test]
    fn decodes_a_superblock() {
        let p = parse(&sample()).unwrap();
        assert_eq!(p.uuid.to_string(), "3f2504e0-4f89-41d3-9a0c-0305e82c3301");
        assert_eq!(p.block_size, 4096);
        assert_eq!(p.version, 5);
        assert_eq!(p.label, "data1");
    }

    #[test]
    fn refuses_what_is_not_xfs() {
        assert_eq!(parse(&[]), Err(ProbeError::Short(0)));
        assert_eq!(parse(&sample()[..511]), Err(ProbeError::Short(511)));
        let mut s = sample();
        s[0] = b'Y';
        assert!(matches!(parse(&s), Err(ProbeError::BadMagic(_))));
        let mut s = sample();
        s[4..8].copy_from_slice(&4095u32.to_be_bytes());
        assert_eq!(parse(&s), Err(ProbeError::BadBlockSize(4095)));
        let mut s = sample();
        s[100..102].copy_from_slice(&0xb4a3u16.to_be_bytes());
        assert_eq!(parse(&s), Err(ProbeError::BadVersion(3)));
        let mut s = sample();
        s[32..48].fill(0);
        assert_eq!(parse(&s), Err(ProbeError::NilUuid));
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let e = probe_path(Path::new("/nonexistent/mxfs-probe")).unwrap_err();
        assert!(matches!(e, ProbeFileError::Io(_)), "{e}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_the_magic_never_panic(
            rest in proptest::collection::vec(any::<u8>(), 0..1024)
        ) {
            let mut s = b"XFSB".to_vec();
            s.extend(rest);
            if let Ok(p) = parse(&s) {
                prop_assert!(p.block_size.is_power_of_two());
                prop_assert!(!p.uuid.is_nil());
            }
        }
    }
}
