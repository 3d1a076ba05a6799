//! On-disk inodes (`struct xfs_dinode`) and extent lists (bmbt records).

use super::sb::{check_crc, incompat, Superblock};
use super::{be16, be32, be64, byte, corrupt, slice, Result, XfsError};

/// "IN".
const DINODE_MAGIC: u16 = 0x494e;
/// Core sizes: v1/v2 inodes end at `di_next_unlinked`, v3 at `di_uuid`.
const CORE_V2: usize = 100;
const CORE_V3: usize = 176;
const DI_CRC_OFF: usize = 100;
/// `di_flags`: the file's data lives on the realtime device.
const DIFLAG_REALTIME: u16 = 0x0001;
/// `di_flags2`: 64-bit data extent counter in `di_big_nextents`.
const DIFLAG2_NREXT64: u64 = 1 << 4;
/// One bmbt record is two big-endian u64 words.
const BMBT_REC_LEN: usize = 16;

pub const S_IFMT: u16 = 0o170000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFREG: u16 = 0o100000;

/// Data fork format (`di_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Dev,
    /// Data inside the inode (short-form directory, short symlink).
    Local,
    /// An array of extent records inside the inode.
    Extents,
    /// A bmap btree rooted in the inode.
    Btree,
    Other(u8),
}

impl Format {
    fn from_u8(v: u8) -> Format {
        match v {
            0 => Format::Dev,
            1 => Format::Local,
            2 => Format::Extents,
            3 => Format::Btree,
            v => Format::Other(v),
        }
    }
}

/// A decoded inode: the core fields and the raw bytes of its data fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub ino: u64,
    pub version: u8,
    pub mode: u16,
    pub format: Format,
    pub size: u64,
    pub nblocks: u64,
    /// Data fork extent count (`di_nextents` or `di_big_nextents`).
    pub nextents: u64,
    pub flags: u16,
    pub flags2: u64,
    /// The data fork's literal area, as stored in the inode.
    pub(crate) data_fork: Vec<u8>,
}

/// One mapping of file blocks to device bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First file block (filesystem blocks from offset 0) it maps.
    pub file_offset_blocks: u64,
    /// Byte offset on the device of its first block.
    pub disk_byte_offset: u64,
    pub len_blocks: u64,
    /// Preallocated but never written: XFS reads it as zeros, while the raw
    /// device holds whatever was there before.
    pub unwritten: bool,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    pub fn is_regular(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    /// Decode inode `ino` from its `sb.inode_size` bytes.
    pub fn decode(sb: &Superblock, ino: u64, buf: &[u8]) -> Result<Inode> {
        let bad = |why: String| corrupt("inode", format!("inode {ino}: {why}"));
        if buf.len() != usize::from(sb.inode_size) {
            return Err(bad(format!(
                "{} bytes, expected {}",
                buf.len(),
                sb.inode_size
            )));
        }
        let magic = be16(buf, 0)?;
        if magic != DINODE_MAGIC {
            return Err(bad(format!("magic {magic:#06x}, not IN")));
        }
        let version = byte(buf, 4)?;
        let core = match (version, sb.is_v5()) {
            (3, true) => CORE_V3,
            (1 | 2, false) => CORE_V2,
            (v, v5) => {
                return Err(bad(format!(
                    "version {v} inode on a v{} filesystem",
                    if v5 { 5 } else { 4 }
                )))
            }
        };
        let mut flags2 = 0;
        if version == 3 {
            check_crc(buf, DI_CRC_OFF, "inode")?;
            let di_ino = be64(buf, 152)?;
            if di_ino != ino {
                return Err(bad(format!("records itself as inode {di_ino}")));
            }
            if slice(buf, 160, 16)? != sb.meta_uuid {
                return Err(bad("belongs to another filesystem (UUID)".to_string()));
            }
            flags2 = be64(buf, 120)?;
        }
        let mode = be16(buf, 2)?;
        let format = Format::from_u8(byte(buf, 5)?);
        let size = be64(buf, 56)?;
        if size > i64::MAX as u64 {
            return Err(bad(format!("negative size {}", size as i64)));
        }
        let nblocks = be64(buf, 64)?;
        let nextents = if flags2 & DIFLAG2_NREXT64 != 0 {
            if !sb.has_incompat(incompat::NREXT64) {
                return Err(bad("NREXT64 inode on a filesystem without it".to_string()));
            }
            be64(buf, 24)?
        } else {
            u64::from(be32(buf, 76)?)
        };
        let forkoff = usize::from(byte(buf, 82)?) * 8;
        let flags = be16(buf, 90)?;
        let literal = buf.len() - core;
        // di_forkoff (in 8-byte units) is where the attr fork starts; 0
        // means no attr fork and the data fork has the whole literal area.
        let dsize = if forkoff == 0 { literal } else { forkoff };
        if dsize > literal {
            return Err(bad(format!(
                "attr fork offset {forkoff} past the {literal}-byte literal area"
            )));
        }
        let data_fork = slice(buf, core, dsize)?.to_vec();
        Ok(Inode {
            ino,
            version,
            mode,
            format,
            size,
            nblocks,
            nextents,
            flags,
            flags2,
            data_fork,
        })
    }

    /// Decode the data fork's extent records (`xfs_bmbt_rec`) and map them
    /// to device bytes.  Records must be sorted and not overlap, as the
    /// kernel's `xfs_iextents_verify` requires.
    pub fn extents(&self, sb: &Superblock) -> Result<Vec<Extent>> {
        let bad = |why: String| corrupt("extent list", format!("inode {}: {why}", self.ino));
        match self.format {
            Format::Extents => {}
            Format::Btree => {
                return Err(XfsError::Unsupported(format!(
                    "inode {} has {} extents in a bmap btree (btree format); only \
                     extent lists stored in the inode are read",
                    self.ino, self.nextents
                )))
            }
            f => {
                return Err(XfsError::Unsupported(format!(
                    "inode {} has data fork format {f:?}, not an extent list",
                    self.ino
                )))
            }
        }
        if self.flags & DIFLAG_REALTIME != 0 {
            return Err(XfsError::Unsupported(format!(
                "inode {} is a realtime file (its blocks are on the realtime device)",
                self.ino
            )));
        }
        let fits = self.data_fork.len() / BMBT_REC_LEN;
        if self.nextents > fits as u64 {
            return Err(bad(format!(
                "{} extents do not fit a {}-byte data fork",
                self.nextents,
                self.data_fork.len()
            )));
        }
        let mut out: Vec<Extent> = Vec::with_capacity(self.nextents as usize);
        for i in 0..self.nextents as usize {
            let rec = decode_bmbt(
                be64(&self.data_fork, i * BMBT_REC_LEN)?,
                be64(&self.data_fork, i * BMBT_REC_LEN + 8)?,
            );
            if rec.blockcount == 0 {
                return Err(bad(format!("extent {i} has length 0")));
            }
            let agbno = rec.startblock & ((1u64 << sb.ag_block_log) - 1);
            if agbno + rec.blockcount > u64::from(sb.ag_blocks) {
                return Err(bad(format!("extent {i} runs past the end of its AG")));
            }
            if let Some(prev) = out.last() {
                if rec.startoff < prev.file_offset_blocks + prev.len_blocks {
                    return Err(bad(format!(
                        "extent {i} overlaps or precedes extent {}",
                        i - 1
                    )));
                }
            }
            let in_fs = |fsb: u64| {
                sb.fsb_to_byte(fsb).map_err(|e| match e {
                    XfsError::Corrupt { why, .. } => bad(format!("extent {i}: {why}")),
                    e => e,
                })
            };
            let disk_byte_offset = in_fs(rec.startblock)?;
            // Same AG (checked above), so the last block must be inside too.
            in_fs(rec.startblock + rec.blockcount - 1)?;
            out.push(Extent {
                file_offset_blocks: rec.startoff,
                disk_byte_offset,
                len_blocks: rec.blockcount,
                unwritten: rec.unwritten,
            });
        }
        Ok(out)
    }
}

/// The fields of one packed bmbt record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BmbtRec {
    pub unwritten: bool,
    /// 54 bits: file offset in blocks.
    pub startoff: u64,
    /// 52 bits: AG-encoded filesystem block number.
    pub startblock: u64,
    /// 21 bits: length in blocks.
    pub blockcount: u64,
}

/// Unpack a bmbt record: bit 127 is the unwritten flag, bits 126..73 the
/// file offset, 72..21 the start block, 20..0 the length (`l0` holds bits
/// 127..64, `l1` bits 63..0).
pub fn decode_bmbt(l0: u64, l1: u64) -> BmbtRec {
    BmbtRec {
        unwritten: l0 >> 63 != 0,
        startoff: (l0 & ((1u64 << 63) - 1)) >> 9,
        startblock: ((l0 & 0x1ff) << 43) | (l1 >> 21),
        blockcount: l1 & ((1u64 << 21) - 1),
    }
}

/// Pack a bmbt record (the inverse of [`decode_bmbt`]; for tests).
#[cfg(test)]
pub fn encode_bmbt(r: BmbtRec) -> (u64, u64) {
    let l0 = (u64::from(r.unwritten) << 63)
        | ((r.startoff & ((1u64 << 54) - 1)) << 9)
        | ((r.startblock >> 43) & 0x1ff);
    let l1 = ((r.startblock & ((1u64 << 43) - 1)) << 21) | (r.blockcount & ((1u64 << 21) - 1));
    (l0, l1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bmbt_known_record() {
        // startoff 150, startblock 4200, count 7, unwritten
        let (l0, l1) = encode_bmbt(BmbtRec {
            unwritten: true,
            startoff: 150,
            startblock: 4200,
            blockcount: 7,
        });
        assert_eq!(l0, (1 << 63) | (150 << 9));
        assert_eq!(l1, (4200 << 21) | 7);
        let r = decode_bmbt(l0, l1);
        assert_eq!(
            (r.startoff, r.startblock, r.blockcount, r.unwritten),
            (150, 4200, 7, true)
        );
    }

    fn inode_bytes(sb: &Superblock, ino: u64, recs: &[BmbtRec]) -> Vec<u8> {
        let mut b = vec![0u8; usize::from(sb.inode_size)];
        b[0..2].copy_from_slice(&DINODE_MAGIC.to_be_bytes());
        b[2..4].copy_from_slice(&(S_IFREG | 0o644).to_be_bytes());
        b[4] = 2;
        b[5] = 2; // extents
        b[56..64].copy_from_slice(&1_000_000u64.to_be_bytes());
        b[76..80].copy_from_slice(&(recs.len() as u32).to_be_bytes());
        for (i, r) in recs.iter().enumerate() {
            let (l0, l1) = encode_bmbt(*r);
            let at = CORE_V2 + i * 16;
            b[at..at + 8].copy_from_slice(&l0.to_be_bytes());
            b[at + 8..at + 16].copy_from_slice(&l1.to_be_bytes());
        }
        let _ = ino;
        b
    }

    fn rec(startoff: u64, startblock: u64, blockcount: u64) -> BmbtRec {
        BmbtRec {
            unwritten: false,
            startoff,
            startblock,
            blockcount,
        }
    }

    #[test]
    fn v2_inode_extents() {
        let sb = Superblock::for_tests(false, false);
        let b = inode_bytes(&sb, 131, &[rec(0, 100, 10), rec(20, (3 << 13) | 7, 5)]);
        let ino = Inode::decode(&sb, 131, &b).unwrap();
        assert!(ino.is_regular());
        assert_eq!(ino.size, 1_000_000);
        let e = ino.extents(&sb).unwrap();
        assert_eq!(e[1].disk_byte_offset, (3 * 5120 + 7) * 4096);
        assert_eq!(e[1].file_offset_blocks, 20);
        // Overlapping, zero-length, past-the-AG and too many extents.
        for bad in [
            vec![rec(0, 100, 10), rec(5, 200, 1)],
            vec![rec(0, 100, 0)],
            vec![rec(0, 5119, 2)],
            vec![rec(0, 4 << 13, 1)],
        ] {
            let b = inode_bytes(&sb, 131, &bad);
            assert!(
                Inode::decode(&sb, 131, &b).unwrap().extents(&sb).is_err(),
                "{bad:?}"
            );
        }
        let mut b = inode_bytes(&sb, 131, &[]);
        b[76..80].copy_from_slice(&10u32.to_be_bytes()); // 10 * 16 > 156
        assert!(Inode::decode(&sb, 131, &b).unwrap().extents(&sb).is_err());
        b[5] = 3; // btree
        let err = Inode::decode(&sb, 131, &b)
            .unwrap()
            .extents(&sb)
            .unwrap_err();
        assert!(matches!(err, XfsError::Unsupported(_)), "{err}");
        // v2 inode on a v5 filesystem, bad magic.
        assert!(Inode::decode(&Superblock::for_tests(true, true), 131, &[0u8; 512]).is_err());
        b[0] = 0;
        assert!(Inode::decode(&sb, 131, &b).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn garbage_inodes_never_panic(mut b in proptest::collection::vec(any::<u8>(), 256..=256),
                                      magic: bool, fmt in 0u8..5) {
            let sb = Superblock::for_tests(false, false);
            if magic {
                b[0..2].copy_from_slice(&DINODE_MAGIC.to_be_bytes());
                b[4] = 2;
                b[5] = fmt;
            }
            if let Ok(ino) = Inode::decode(&sb, 131, &b) {
                let _ = ino.extents(&sb);
            }
        }

        #[test]
        fn garbage_v3_inodes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let sb = Superblock::for_tests(true, true);
            let _ = Inode::decode(&sb, 131, &b);
        }

        #[test]
        fn bmbt_round_trip(unwritten: bool, startoff in 0u64..1 << 54,
                           startblock in 0u64..1 << 52, blockcount in 0u64..1 << 21) {
            let r = BmbtRec { unwritten, startoff, startblock, blockcount };
            let (l0, l1) = encode_bmbt(r);
            prop_assert_eq!(decode_bmbt(l0, l1), r);
        }
    }
}
