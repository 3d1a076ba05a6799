//! Directory formats: short-form (entries inside the inode) and block form
//! (one directory block holding entries, a hash leaf and a tail).

use super::inode::Inode;
use super::sb::{check_crc, Superblock};
use super::{be16, be32, be64, byte, corrupt, slice, Result};

/// "XD2B": v4 single-block directory.
const XD2B: u32 = 0x5844_3242;
/// "XDB3": v5 single-block directory (CRC, owner, UUID in its header).
const XDB3: u32 = 0x5844_4233;
/// Data blocks of leaf/node directories, recognised only to say so.
const XD2D: u32 = 0x5844_3244;
const XDD3: u32 = 0x5844_4433;
const HDR_V4: usize = 16;
const HDR_V5: usize = 64;
const DIR3_CRC_OFF: usize = 4;
const FREE_TAG: u16 = 0xffff;
/// `xfs_dir2_block_tail`: leaf count and stale count.
const TAIL_LEN: usize = 8;
const LEAF_ENTRY_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// `XFS_DIR3_FT_*` when the filesystem records file types.
    pub ftype: Option<u8>,
}

/// Parse a short-form directory (`xfs_dir2_sf_hdr` + entries) from the
/// inode's data fork.  "." and ".." are not stored; we report them first.
pub fn decode_shortform(sb: &Superblock, dir: &Inode) -> Result<Vec<DirEntry>> {
    let bad = |why: String| corrupt("short-form directory", format!("inode {}: {why}", dir.ino));
    let size = usize::try_from(dir.size).unwrap_or(usize::MAX);
    let b = dir.data_fork.get(..size).ok_or_else(|| {
        bad(format!(
            "size {} exceeds its {}-byte fork",
            dir.size,
            dir.data_fork.len()
        ))
    })?;
    let count = usize::from(byte(b, 0)?);
    let i8count = byte(b, 1)?;
    // All inode numbers are 8 bytes wide as soon as one needs it.
    let ino_len = if i8count == 0 { 4 } else { 8 };
    let read_ino = |off: usize| -> Result<u64> {
        if ino_len == 4 {
            be32(b, off).map(u64::from)
        } else {
            be64(b, off)
        }
    };
    let parent = read_ino(2)?;
    let mut out = vec![
        DirEntry {
            name: b".".to_vec(),
            ino: dir.ino,
            ftype: None,
        },
        DirEntry {
            name: b"..".to_vec(),
            ino: parent,
            ftype: None,
        },
    ];
    let mut p = 2 + ino_len;
    for i in 0..count {
        let namelen = usize::from(byte(b, p)?);
        if namelen == 0 {
            return Err(bad(format!("entry {i} has an empty name")));
        }
        // namelen, then a 2-byte offset tag (only meaningful when the
        // directory is converted to block form), then the name.
        let name = slice(b, p + 3, namelen)?.to_vec();
        let mut q = p + 3 + namelen;
        let ftype = if sb.has_ftype {
            q += 1;
            Some(byte(b, q - 1)?)
        } else {
            None
        };
        let ino = read_ino(q)?;
        p = q + ino_len;
        out.push(DirEntry { name, ino, ftype });
    }
    if p != b.len() {
        return Err(bad(format!(
            "{} entries end at byte {p} but the directory is {} bytes",
            count,
            b.len()
        )));
    }
    Ok(out)
}

/// Parse a single-block directory.  `daddr_bytes` is the device byte
/// offset the block was read from, checked against a v5 header's `blkno`.
pub fn decode_block(
    sb: &Superblock,
    dir: &Inode,
    b: &[u8],
    daddr_bytes: u64,
) -> Result<Vec<DirEntry>> {
    let bad = |why: String| corrupt("directory block", format!("inode {}: {why}", dir.ino));
    let magic = be32(b, 0)?;
    let hdr = match (magic, sb.is_v5()) {
        (XDB3, true) => {
            check_crc(b, DIR3_CRC_OFF, "directory block")?;
            let blkno = be64(b, 8)?;
            if blkno != daddr_bytes >> 9 {
                return Err(bad(format!(
                    "header says sector {blkno}, read from sector {}",
                    daddr_bytes >> 9
                )));
            }
            if slice(b, 24, 16)? != sb.meta_uuid {
                return Err(bad("belongs to another filesystem (UUID)".to_string()));
            }
            let owner = be64(b, 40)?;
            if owner != dir.ino {
                return Err(bad(format!("owned by inode {owner}")));
            }
            HDR_V5
        }
        (XD2B, false) => HDR_V4,
        (XD2D | XDD3, _) => {
            return Err(super::XfsError::Unsupported(format!(
                "directory inode {} is in leaf or node form",
                dir.ino
            )))
        }
        (m, _) => {
            return Err(bad(format!(
                "magic {m:#010x} is not a single-block directory"
            )))
        }
    };
    let tail = b
        .len()
        .checked_sub(TAIL_LEN)
        .ok_or_else(|| bad("shorter than its tail".to_string()))?;
    let leaf_count = be32(b, tail)? as usize;
    let end = leaf_count
        .checked_mul(LEAF_ENTRY_LEN)
        .and_then(|leaf| tail.checked_sub(leaf))
        .filter(|end| *end >= hdr)
        .ok_or_else(|| bad(format!("{leaf_count} leaf entries do not fit the block")))?;

    let mut out = Vec::new();
    let mut p = hdr;
    while p < end {
        if be16(b, p)? == FREE_TAG {
            let len = usize::from(be16(b, p + 2)?);
            if len < 8 || len % 8 != 0 || p + len > end {
                return Err(bad(format!("free space of {len} bytes at {p}")));
            }
            p += len;
            continue;
        }
        let ino = be64(b, p)?;
        let namelen = usize::from(byte(b, p + 8)?);
        if namelen == 0 {
            return Err(bad(format!("entry at {p} has an empty name")));
        }
        let name = slice(b, p + 9, namelen)?.to_vec();
        let ftype = if sb.has_ftype {
            Some(byte(b, p + 9 + namelen)?)
        } else {
            None
        };
        // inumber, namelen, name, [ftype], 2-byte tag; 8-byte aligned.
        let raw = 8 + 1 + namelen + usize::from(sb.has_ftype) + 2;
        let len = (raw + 7) & !7;
        if p + len > end {
            return Err(bad(format!("entry at {p} runs past the data area")));
        }
        let tag = usize::from(be16(b, p + len - 2)?);
        if tag != p {
            return Err(bad(format!("entry at {p} has tag {tag}")));
        }
        out.push(DirEntry { name, ino, ftype });
        p += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xfs::inode::{Format, S_IFDIR};
    use proptest::prelude::*;

    fn dir_inode(size: u64, fork: Vec<u8>) -> Inode {
        Inode {
            ino: 128,
            version: 2,
            mode: S_IFDIR | 0o755,
            format: Format::Local,
            size,
            nblocks: 0,
            nextents: 0,
            flags: 0,
            flags2: 0,
            data_fork: fork,
        }
    }

    /// A short-form directory with 4-byte inode numbers and ftype.
    fn shortform(entries: &[(&[u8], u32)]) -> Vec<u8> {
        let mut b = vec![entries.len() as u8, 0];
        b.extend_from_slice(&100u32.to_be_bytes());
        for (i, (name, ino)) in entries.iter().enumerate() {
            b.push(name.len() as u8);
            b.extend_from_slice(&(i as u16 * 16).to_be_bytes());
            b.extend_from_slice(name);
            b.push(1);
            b.extend_from_slice(&ino.to_be_bytes());
        }
        b
    }

    #[test]
    fn shortform_entries() {
        let sb = Superblock::for_tests(false, true);
        let b = shortform(&[(b"a", 131), (b"lockstate", 132)]);
        let d = dir_inode(b.len() as u64, b);
        let e = decode_shortform(&sb, &d).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!((e[1].name.as_slice(), e[1].ino), (&b".."[..], 100));
        assert_eq!(
            (e[3].name.as_slice(), e[3].ino, e[3].ftype),
            (&b"lockstate"[..], 132, Some(1))
        );
        // Truncated by one byte: an error, not a short list.
        let b = shortform(&[(b"a", 131)]);
        let d = dir_inode(b.len() as u64 - 1, b);
        assert!(decode_shortform(&sb, &d).is_err());
    }

    #[test]
    fn block_form_entries_v4() {
        let sb = Superblock::for_tests(false, false);
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(&XD2B.to_be_bytes());
        // one entry "x" -> 200 at 16 (8+1+1+2 = 12, rounded to 16)
        b[16..24].copy_from_slice(&200u64.to_be_bytes());
        b[24] = 1;
        b[25] = b'x';
        b[30..32].copy_from_slice(&16u16.to_be_bytes());
        // free space from 32 to the leaf (1 entry) and tail
        let end = 4096 - 8 - 8;
        b[32..34].copy_from_slice(&FREE_TAG.to_be_bytes());
        b[34..36].copy_from_slice(&((end - 32) as u16).to_be_bytes());
        b[4088..4092].copy_from_slice(&1u32.to_be_bytes());
        let d = dir_inode(4096, vec![]);
        let e = decode_block(&sb, &d, &b, 0).unwrap();
        assert_eq!(
            e,
            vec![DirEntry {
                name: b"x".to_vec(),
                ino: 200,
                ftype: None
            }]
        );
        b[30] = 9; // wrong tag
        assert!(decode_block(&sb, &d, &b, 0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn shortform_garbage_never_panics(fork in proptest::collection::vec(any::<u8>(), 0..400),
                                          size in 0u64..500, ftype: bool) {
            let sb = Superblock::for_tests(false, ftype);
            let _ = decode_shortform(&sb, &dir_inode(size, fork));
        }

        #[test]
        fn block_garbage_never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..4096),
                                      magic in 0usize..4, ftype: bool, v5: bool) {
            let sb = Superblock::for_tests(v5, ftype);
            if b.len() >= 4 {
                let m = [XD2B, XDB3, XD2D, 0][magic];
                b[..4].copy_from_slice(&m.to_be_bytes());
            }
            let _ = decode_block(&sb, &dir_inode(4096, vec![]), &b, 0);
        }

        #[test]
        fn valid_shortform_round_trips(names in proptest::collection::vec(("[a-z]{1,20}", any::<u32>()), 0..12)) {
            let sb = Superblock::for_tests(false, true);
            let ents: Vec<(&[u8], u32)> = names.iter().map(|(n, i)| (n.as_bytes(), *i)).collect();
            let b = shortform(&ents);
            let e = decode_shortform(&sb, &dir_inode(b.len() as u64, b)).unwrap();
            prop_assert_eq!(e.len(), names.len() + 2);
            for (got, (n, i)) in e[2..].iter().zip(&names) {
                prop_assert_eq!(&got.name, n.as_bytes());
                prop_assert_eq!(got.ino, u64::from(*i));
            }
        }
    }
}
