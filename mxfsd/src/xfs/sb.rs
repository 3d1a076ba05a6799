//! The XFS primary superblock (`struct xfs_dsb`, sector 0 of AG 0).
//!
//! Only the fields that locating a file needs are decoded; each is checked
//! the way the kernel's `xfs_validate_sb_common()` checks it, so that an
//! image whose geometry would make later offsets nonsense is refused here
//! rather than producing reads at garbage offsets.

use super::{be16, be32, be64, corrupt, XfsError};

/// "XFSB".
pub const XFS_SB_MAGIC: u32 = 0x5846_5342;
/// Offset of `sb_crc` (little-endian, unlike everything else).
const SB_CRC_OFF: usize = 224;

const VERSION_NUMBITS: u16 = 0x000f;
const VERSION_DIRV2BIT: u16 = 0x2000;
const VERSION_MOREBITSBIT: u16 = 0x8000;
const VERSION2_FTYPE: u32 = 0x0000_0200;

/// `sb_features_incompat` bits (v5).
pub mod incompat {
    pub const FTYPE: u32 = 1 << 0;
    pub const SPINODES: u32 = 1 << 1;
    pub const META_UUID: u32 = 1 << 2;
    pub const BIGTIME: u32 = 1 << 3;
    pub const NEEDSREPAIR: u32 = 1 << 4;
    pub const NREXT64: u32 = 1 << 5;
    pub const EXCHRANGE: u32 = 1 << 6;
    pub const PARENT: u32 = 1 << 7;
    pub const METADIR: u32 = 1 << 8;
    /// Every bit this reader knows does not change the structures it
    /// reads (or handles the change, as for NREXT64).  Any other bit is
    /// refused, as the kernel refuses unknown incompat features.
    pub const KNOWN: u32 = FTYPE
        | SPINODES
        | META_UUID
        | BIGTIME
        | NEEDSREPAIR
        | NREXT64
        | EXCHRANGE
        | PARENT
        | METADIR;
}

/// The decoded, validated superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u32,
    pub block_log: u8,
    pub sector_size: u16,
    pub inode_size: u16,
    pub inode_log: u8,
    pub inodes_per_block_log: u8,
    pub dblocks: u64,
    pub ag_blocks: u32,
    pub ag_block_log: u8,
    pub ag_count: u32,
    pub root_ino: u64,
    /// `sb_uuid`, bytes 32..48: the volume's identity in MXFS.
    pub uuid: [u8; 16],
    /// The UUID stamped into v5 metadata blocks: `sb_meta_uuid` when the
    /// META_UUID feature is set (the user changed `sb_uuid`), else `uuid`.
    pub meta_uuid: [u8; 16],
    /// 4 or 5.  5 means CRCs on metadata, v3 inodes, XDB3 directory blocks.
    pub version: u8,
    pub version_num: u16,
    pub features2: u32,
    pub features_compat: u32,
    pub features_ro_compat: u32,
    pub features_incompat: u32,
    pub dir_block_log: u8,
    /// Directory entries carry a file-type byte.
    pub has_ftype: bool,
}

impl Superblock {
    pub fn is_v5(&self) -> bool {
        self.version == 5
    }

    pub fn has_incompat(&self, bit: u32) -> bool {
        self.is_v5() && self.features_incompat & bit != 0
    }

    /// Bytes of one directory block (`blocksize << dirblklog`).
    pub fn dir_block_size(&self) -> u32 {
        self.block_size << self.dir_block_log
    }

    /// Byte offset on the device of an AG-encoded filesystem block number
    /// (`XFS_FSB_TO_DADDR` in bytes).  fsbno is `agno << agblklog | agbno`,
    /// and AGs are `agblocks` long, which need not be a power of two: the
    /// linear block is `agno * agblocks + agbno`, not `fsbno`.
    pub fn fsb_to_byte(&self, fsbno: u64) -> Result<u64, XfsError> {
        let agno = fsbno >> self.ag_block_log;
        let agbno = fsbno & ((1u64 << self.ag_block_log) - 1);
        if agno >= u64::from(self.ag_count) || agbno >= u64::from(self.ag_blocks) {
            return Err(corrupt(
                "block number",
                format!(
                    "fsblock {fsbno:#x} is AG {agno} block {agbno}, outside the {} AGs of {} blocks",
                    self.ag_count, self.ag_blocks
                ),
            ));
        }
        let linear = agno * u64::from(self.ag_blocks) + agbno;
        // The last AG may be shorter than agblocks.  Below dblocks, the
        // shift cannot overflow (decode checked dblocks << blocklog).
        if linear >= self.dblocks {
            return Err(corrupt(
                "block number",
                format!("fsblock {fsbno:#x} is past the end of the filesystem"),
            ));
        }
        Ok(linear << self.block_log)
    }

    /// Byte offset of inode `ino` on the device.  ino is
    /// `agno << (agblklog + inopblog) | agbno << inopblog | index`.
    pub fn ino_to_byte(&self, ino: u64) -> Result<u64, XfsError> {
        let ino_bits = u32::from(self.ag_block_log) + u32::from(self.inodes_per_block_log);
        if ino_bits >= 64 {
            return Err(corrupt("superblock", "inode number geometry over 64 bits"));
        }
        let agno = ino >> ino_bits;
        let agino = ino & ((1u64 << ino_bits) - 1);
        let agbno = agino >> self.inodes_per_block_log;
        let index = agino & ((1u64 << self.inodes_per_block_log) - 1);
        if agno >= u64::from(self.ag_count) || agbno >= u64::from(self.ag_blocks) {
            return Err(corrupt(
                "inode number",
                format!("inode {ino} is AG {agno} block {agbno}, outside the filesystem"),
            ));
        }
        let linear = agno * u64::from(self.ag_blocks) + agbno;
        if linear >= self.dblocks {
            return Err(corrupt(
                "inode number",
                format!("inode {ino} is past the end of the filesystem"),
            ));
        }
        Ok((linear << self.block_log) + (index << self.inode_log))
    }

    /// Decode and validate.  `sector` is the first sector of the device
    /// (at least 512 bytes, and `sb_sectsize` bytes when the caller can, so
    /// the v5 CRC, which covers the whole sector, can be checked: when it
    /// is shorter than the sector size the caller gets `ShortSector`).
    pub fn decode(sector: &[u8]) -> Result<Superblock, XfsError> {
        if sector.len() < 512 {
            return Err(XfsError::NotXfs(format!(
                "only {} bytes, too small for a superblock",
                sector.len()
            )));
        }
        let magic = be32(sector, 0)?;
        if magic != XFS_SB_MAGIC {
            return Err(XfsError::NotXfs(format!(
                "superblock magic is {magic:#010x}, not XFSB"
            )));
        }
        let bad = |why: String| corrupt("superblock", why);

        let block_size = be32(sector, 4)?;
        let dblocks = be64(sector, 8)?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(super::slice(sector, 32, 16)?);
        let root_ino = be64(sector, 56)?;
        let ag_blocks = be32(sector, 84)?;
        let ag_count = be32(sector, 88)?;
        let version_num = be16(sector, 100)?;
        let sector_size = be16(sector, 102)?;
        let inode_size = be16(sector, 104)?;
        let inopblock = be16(sector, 106)?;
        let block_log = super::byte(sector, 120)?;
        let sect_log = super::byte(sector, 121)?;
        let inode_log = super::byte(sector, 122)?;
        let inodes_per_block_log = super::byte(sector, 123)?;
        let ag_block_log = super::byte(sector, 124)?;
        let in_progress = super::byte(sector, 126)?;
        let dir_block_log = super::byte(sector, 192)?;
        let features2 = be32(sector, 200)?;
        let features_compat = be32(sector, 208)?;
        let features_ro_compat = be32(sector, 212)?;
        let features_incompat = be32(sector, 216)?;

        let version = (version_num & VERSION_NUMBITS) as u8;
        if version != 4 && version != 5 {
            return Err(XfsError::Unsupported(format!(
                "XFS superblock version {version} (only 4 and 5 are read)"
            )));
        }
        if version == 4 && version_num & VERSION_DIRV2BIT == 0 {
            return Err(XfsError::Unsupported(
                "version 1 directories (a pre-2003 XFS)".to_string(),
            ));
        }
        if in_progress != 0 {
            return Err(bad("mkfs did not finish (sb_inprogress is set)".to_string()));
        }
        let pow2 = |v: u64, log: u8| log < 64 && v == 1u64 << log;
        if !(512..=65536).contains(&block_size) || !pow2(block_size.into(), block_log) {
            return Err(bad(format!("block size {block_size} with log {block_log}")));
        }
        if !(512..=32768).contains(&sector_size)
            || !pow2(sector_size.into(), sect_log)
            || u32::from(sector_size) > block_size
        {
            return Err(bad(format!(
                "sector size {sector_size} with log {sect_log}"
            )));
        }
        if !(256..=2048).contains(&inode_size)
            || !pow2(inode_size.into(), inode_log)
            || u32::from(inode_size) > block_size
            || u32::from(inopblock) != block_size / u32::from(inode_size)
            || !pow2(inopblock.into(), inodes_per_block_log)
        {
            return Err(bad(format!(
                "inode size {inode_size} (log {inode_log}), {inopblock} per block (log {inodes_per_block_log})"
            )));
        }
        if version == 5 && inode_size < 512 {
            return Err(bad(format!("v5 filesystem with {inode_size}-byte inodes")));
        }
        // agblklog is the log2 of agblocks rounded up.
        if ag_blocks < 64
            || ag_block_log > 31
            || u64::from(ag_blocks) > 1u64 << ag_block_log
            || (ag_block_log > 0 && u64::from(ag_blocks) <= 1u64 << (ag_block_log - 1))
        {
            return Err(bad(format!(
                "AG size {ag_blocks} blocks with log {ag_block_log}"
            )));
        }
        if ag_count == 0
            || dblocks > u64::from(ag_count) * u64::from(ag_blocks)
            || dblocks <= u64::from(ag_count - 1) * u64::from(ag_blocks)
        {
            return Err(bad(format!(
                "{dblocks} blocks do not fit {ag_count} AGs of {ag_blocks} blocks"
            )));
        }
        // Byte offsets of every block must fit in 64 bits.
        if dblocks.checked_mul(u64::from(block_size)).is_none() {
            return Err(bad(format!(
                "{dblocks} blocks of {block_size} bytes overflow 64 bits"
            )));
        }
        // In u64: 64 KiB blocks shifted by 16 wrap a u32 to 0 (found by
        // the fuzzer; Volume::read_dir then indexed an empty block).
        if u32::from(dir_block_log) > 16 || (u64::from(block_size) << dir_block_log) > 65536 {
            return Err(bad(format!(
                "directory block log {dir_block_log} over 64 KiB"
            )));
        }
        let mut meta_uuid = uuid;
        if version == 5 {
            if features_incompat & !incompat::KNOWN != 0 {
                return Err(XfsError::Unsupported(format!(
                    "incompatible XFS features {:#x}",
                    features_incompat & !incompat::KNOWN
                )));
            }
            if features_incompat & incompat::META_UUID != 0 {
                meta_uuid.copy_from_slice(super::slice(sector, 248, 16)?);
            }
            let sect = usize::from(sector_size);
            if sector.len() < sect {
                return Err(XfsError::ShortSector { needed: sect });
            }
            check_crc(&sector[..sect], SB_CRC_OFF, "superblock")?;
        }
        let has_ftype = if version == 5 {
            features_incompat & incompat::FTYPE != 0
        } else {
            version_num & VERSION_MOREBITSBIT != 0 && features2 & VERSION2_FTYPE != 0
        };

        let sb = Superblock {
            block_size,
            block_log,
            sector_size,
            inode_size,
            inode_log,
            inodes_per_block_log,
            dblocks,
            ag_blocks,
            ag_block_log,
            ag_count,
            root_ino,
            uuid,
            meta_uuid,
            version,
            version_num,
            features2,
            features_compat,
            features_ro_compat,
            features_incompat,
            dir_block_log,
            has_ftype,
        };
        if root_ino == 0 {
            return Err(bad("root inode number is 0".to_string()));
        }
        sb.ino_to_byte(root_ino)
            .map_err(|_| bad(format!("root inode {root_ino} is outside the filesystem")))?;
        Ok(sb)
    }
}

/// XFS metadata CRC: CRC-32C over the buffer with the 4-byte CRC field
/// taken as zero, stored little-endian (`xfs_update_cksum`).
pub fn xfs_crc(buf: &[u8], crc_off: usize) -> Option<u32> {
    let head = buf.get(..crc_off)?;
    let tail = buf.get(crc_off + 4..)?;
    let c = crc32c::crc32c_append(crc32c::crc32c(head), &[0u8; 4]);
    Some(crc32c::crc32c_append(c, tail))
}

pub fn check_crc(buf: &[u8], crc_off: usize, what: &'static str) -> Result<(), XfsError> {
    let stored = super::le32(buf, crc_off)?;
    let computed = xfs_crc(buf, crc_off).ok_or_else(|| corrupt(what, "too short for a CRC"))?;
    if stored != computed {
        return Err(corrupt(
            what,
            format!("CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
impl Superblock {
    /// A plausible geometry (4 KiB blocks, 4 AGs of 5120 blocks) for
    /// decoder tests that do not need a real image.
    pub fn for_tests(v5: bool, has_ftype: bool) -> Superblock {
        Superblock {
            block_size: 4096,
            block_log: 12,
            sector_size: 512,
            inode_size: if v5 { 512 } else { 256 },
            inode_log: if v5 { 9 } else { 8 },
            inodes_per_block_log: if v5 { 3 } else { 4 },
            dblocks: 20480,
            ag_blocks: 5120,
            ag_block_log: 13,
            ag_count: 4,
            root_ino: 128,
            uuid: [7; 16],
            meta_uuid: [7; 16],
            version: if v5 { 5 } else { 4 },
            version_num: if v5 { 0xb4a5 } else { 0xb4a4 },
            features2: 0,
            features_compat: 0,
            features_ro_compat: 0,
            features_incompat: if v5 && has_ftype { incompat::FTYPE } else { 0 },
            dir_block_log: 0,
            has_ftype,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsblock_and_inode_conversion_uses_agblocks_not_agblklog() {
        let sb = Superblock::for_tests(true, true);
        // AG 1 block 108 is linear block 5120 + 108, not 8192 + 108.
        assert_eq!(
            sb.fsb_to_byte((1 << 13) | 108).unwrap(),
            (5120 + 108) * 4096
        );
        assert!(sb.fsb_to_byte(5120).is_err(), "agbno past agblocks");
        assert!(sb.fsb_to_byte(4 << 13).is_err(), "agno past agcount");
        // A short last AG: blocks past dblocks are refused.
        let short = Superblock {
            dblocks: 20000,
            ..sb.clone()
        };
        assert!(short.fsb_to_byte((3 << 13) | 4999).is_err());
        assert!(short.fsb_to_byte((3 << 13) | 4639).is_ok());
        // The largest geometry: no arithmetic overflow anywhere.
        let huge = Superblock {
            block_size: 65536,
            block_log: 16,
            ag_blocks: 1 << 31,
            ag_block_log: 31,
            ag_count: u32::MAX,
            dblocks: u64::MAX >> 16,
            ..sb.clone()
        };
        for f in [
            u64::MAX,
            u64::MAX >> 1,
            (u64::from(u32::MAX - 1) << 31) | ((1 << 31) - 1),
        ] {
            let _ = huge.fsb_to_byte(f);
            let _ = huge.ino_to_byte(f);
        }
        // inode 128: AG 0, block 16, index 0.
        assert_eq!(sb.ino_to_byte(128).unwrap(), 16 * 4096);
        // AG 2, block 3, index 5 (inopblog 3).
        let ino = (2u64 << 16) | (3 << 3) | 5;
        assert_eq!(
            sb.ino_to_byte(ino).unwrap(),
            (2 * 5120 + 3) * 4096 + 5 * 512
        );
    }

    #[test]
    fn crc_matches_the_standard_crc32c_with_the_field_zeroed() {
        let mut b = vec![0x5au8; 64];
        b[8..12].copy_from_slice(&[1, 2, 3, 4]);
        let c = xfs_crc(&b, 8).unwrap();
        b[8..12].copy_from_slice(&[0; 4]);
        assert_eq!(c, crc32c::crc32c(&b));
        b[8..12].copy_from_slice(&c.to_le_bytes());
        check_crc(&b, 8, "test").unwrap();
        b[20] ^= 1;
        assert!(check_crc(&b, 8, "test").is_err());
    }
}
