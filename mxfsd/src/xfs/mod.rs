//! Read-only access to XFS on-disk structures from a raw device or image.
//!
//! This module owns walking XFS without mounting it: superblock → inode →
//! directory → extent list.  The daemon uses it to find the physical
//! extents of `.mxfs/lockstate` on the shared device before any node has
//! the XFS mounted (design section 5, layer 2).  It reads only what that
//! walk needs:
//!
//! - the primary superblock, v4 and v5 (CRC-checked on v5);
//! - inodes, v3 (CRC-, number- and UUID-checked) and v1/v2;
//! - directories in short-form (in the inode) and single-block form
//!   (`XD2B`/`XDB3`); leaf, node and btree directories are a clear
//!   [`XfsError::Unsupported`];
//! - extent lists of extents-format inodes (the packed 128-bit bmbt
//!   records); btree-format (very fragmented) files are `Unsupported`.
//!
//! Every decoder validates lengths and offsets and returns an error on any
//! inconsistency; none panics on any input (property tests feed them
//! garbage and mutated real images).  Sizes read from disk are checked
//! against the superblock's before anything is allocated, so a corrupt
//! field cannot make us allocate gigabytes.
//!
//! Reads go through [`ReadAt`], so tests use image files and byte vectors.
//! Metadata on a shared device may be cached by the kernel's page cache
//! for the block device; callers that need the latest on-disk state (after
//! another node created the file) open the device with `O_DIRECT` and
//! wrap it in [`AlignedReader`].

mod dir;
mod inode;
mod sb;

#[cfg(test)]
mod image_tests;

#[cfg(test)]
use std::cell::RefCell;
use std::io;
#[cfg(test)]
use std::io::{Read, Seek, SeekFrom};

pub use dir::DirEntry;
pub use inode::{Extent, Format, Inode};
pub use sb::Superblock;

#[derive(Debug, thiserror::Error)]
pub enum XfsError {
    #[error("reading {len} bytes at byte {offset}: {source}")]
    Io {
        offset: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("not an XFS filesystem: {0}")]
    NotXfs(String),
    #[error("corrupt XFS {what}: {why}")]
    Corrupt { what: &'static str, why: String },
    #[error("not supported by mxfsd's XFS reader: {0}")]
    Unsupported(String),
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// Internal to `Volume::open`: the superblock sector is larger than
    /// the bytes given to `Superblock::decode`.
    #[error("superblock sector needs {needed} bytes")]
    ShortSector { needed: usize },
}

pub type Result<T> = std::result::Result<T, XfsError>;

pub(crate) fn corrupt(what: &'static str, why: impl Into<String>) -> XfsError {
    XfsError::Corrupt {
        what,
        why: why.into(),
    }
}

// Bounds-checked field readers: every on-disk field goes through these, so
// a short or truncated buffer is an error, never an index panic.
fn short(off: usize, len: usize) -> XfsError {
    corrupt(
        "structure",
        format!("field at byte {off} (+{len}) is past the end of its block"),
    )
}

pub(crate) fn slice(b: &[u8], off: usize, len: usize) -> Result<&[u8]> {
    off.checked_add(len)
        .and_then(|end| b.get(off..end))
        .ok_or_else(|| short(off, len))
}

fn arr<const N: usize>(b: &[u8], off: usize) -> Result<[u8; N]> {
    let s = slice(b, off, N)?;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok(a)
}

pub(crate) fn byte(b: &[u8], off: usize) -> Result<u8> {
    b.get(off).copied().ok_or_else(|| short(off, 1))
}
pub(crate) fn be16(b: &[u8], off: usize) -> Result<u16> {
    arr(b, off).map(u16::from_be_bytes)
}
pub(crate) fn be32(b: &[u8], off: usize) -> Result<u32> {
    arr(b, off).map(u32::from_be_bytes)
}
pub(crate) fn be64(b: &[u8], off: usize) -> Result<u64> {
    arr(b, off).map(u64::from_be_bytes)
}
pub(crate) fn le32(b: &[u8], off: usize) -> Result<u32> {
    arr(b, off).map(u32::from_le_bytes)
}

/// A source of bytes at absolute offsets: a block device, an image file,
/// or bytes in memory.  `&self` so one device can be shared by readers.
pub trait ReadAt {
    /// Fill `buf` from `offset`, or fail (short reads are errors).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| Some(o..o.checked_add(buf.len())?))
            .and_then(|r| self.get(r))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

/// Adapts any `Read + Seek` (seek, then read) to [`ReadAt`].
#[cfg(test)]
pub struct SeekReader<R>(RefCell<R>);

#[cfg(test)]
impl<R: Read + Seek> SeekReader<R> {
    pub fn new(inner: R) -> Self {
        SeekReader(RefCell::new(inner))
    }
}

#[cfg(test)]
impl<R: Read + Seek> ReadAt for SeekReader<R> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut r = self.0.borrow_mut();
        r.seek(SeekFrom::Start(offset))?;
        r.read_exact(buf)
    }
}

/// Turns arbitrary reads into reads of whole, aligned blocks into an
/// aligned buffer, as `O_DIRECT` on a block device requires.  `align` is
/// the device's logical block size (a power of two, at most 64 KiB).
pub struct AlignedReader<D> {
    inner: D,
    align: usize,
}

impl<D: ReadAt> AlignedReader<D> {
    pub fn new(inner: D, align: usize) -> io::Result<Self> {
        if !align.is_power_of_two() || !(512..=65536).contains(&align) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("alignment {align} is not a power of two in 512..=65536"),
            ));
        }
        Ok(AlignedReader { inner, align })
    }
}

impl<D: ReadAt> ReadAt for AlignedReader<D> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let a = self.align as u64;
        let start = offset & !(a - 1);
        let end = offset
            .checked_add(buf.len() as u64)
            .and_then(|e| e.checked_add(a - 1))
            .map(|e| e & !(a - 1))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let len = usize::try_from(end - start)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // Over-allocate and start at the first aligned address: the
        // buffer's memory must be aligned too, not only the offset.
        let mut raw = vec![0u8; len + self.align];
        let skip = raw.as_ptr().align_offset(self.align);
        let bounce = skip
            .checked_add(len)
            .and_then(|end| raw.get_mut(skip..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.inner.read_exact_at(bounce, start)?;
        let from = (offset - start) as usize;
        buf.copy_from_slice(&bounce[from..from + buf.len()]);
        Ok(())
    }
}

/// An XFS filesystem opened for reading its on-disk structures.
pub struct Volume<D> {
    dev: D,
    sb: Superblock,
}

impl<D: ReadAt> Volume<D> {
    /// Read and validate the superblock.  A device that is not XFS is
    /// [`XfsError::NotXfs`].
    pub fn open(dev: D) -> Result<Volume<D>> {
        let mut first = vec![0u8; 512];
        dev.read_exact_at(&mut first, 0).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                XfsError::NotXfs("the device is smaller than one 512-byte sector".into())
            } else {
                XfsError::Io {
                    offset: 0,
                    len: 512,
                    source: e,
                }
            }
        })?;
        let sb = match Superblock::decode(&first) {
            Err(XfsError::ShortSector { needed }) => {
                let mut sector = vec![0u8; needed];
                read(&dev, &mut sector, 0)?;
                Superblock::decode(&sector)?
            }
            other => other?,
        };
        Ok(Volume { dev, sb })
    }

    #[cfg(test)]
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The volume's identity (`sb_uuid`, bytes 32..48 of the superblock).
    pub fn uuid(&self) -> [u8; 16] {
        self.sb.uuid
    }

    pub fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    pub fn read_inode(&self, ino: u64) -> Result<Inode> {
        let off = self.sb.ino_to_byte(ino)?;
        let mut buf = vec![0u8; usize::from(self.sb.inode_size)];
        read(&self.dev, &mut buf, off)?;
        Inode::decode(&self.sb, ino, &buf)
    }

    pub fn root(&self) -> Result<Inode> {
        let root = self.read_inode(self.sb.root_ino)?;
        if !root.is_dir() {
            return Err(corrupt("root inode", "is not a directory"));
        }
        Ok(root)
    }

    /// The extents of a regular file or directory in extents format,
    /// sorted by file offset, with device byte offsets.
    pub fn extents(&self, inode: &Inode) -> Result<Vec<Extent>> {
        inode.extents(&self.sb)
    }

    /// All entries of a directory, "." and ".." included.
    pub fn read_dir(&self, dirino: &Inode) -> Result<Vec<DirEntry>> {
        if !dirino.is_dir() {
            return Err(XfsError::NotADirectory(format!("inode {}", dirino.ino)));
        }
        match dirino.format {
            Format::Local => dir::decode_shortform(&self.sb, dirino),
            Format::Extents => {
                let block = self.read_single_dir_block(dirino)?;
                dir::decode_block(&self.sb, dirino, &block.0, block.1)
            }
            Format::Btree => Err(XfsError::Unsupported(format!(
                "directory inode {} is in btree format (a very large directory)",
                dirino.ino
            ))),
            other => Err(corrupt(
                "directory inode",
                format!("inode {} has data fork format {other:?}", dirino.ino),
            )),
        }
    }

    /// Look `name` up in directory `dirino`: the inode number, or
    /// [`XfsError::NotFound`].  Names compare byte for byte (an ASCII-CI
    /// filesystem's case folding is not applied).
    pub fn lookup(&self, dirino: &Inode, name: &[u8]) -> Result<u64> {
        self.read_dir(dirino)?
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.ino)
            .ok_or_else(|| XfsError::NotFound(String::from_utf8_lossy(name).into_owned()))
    }

    /// Walk `path` (components, no slashes) from the root directory.
    pub fn lookup_path(&self, path: &[&str]) -> Result<Inode> {
        let mut cur = self.root()?;
        let mut walked = String::new();
        for comp in path {
            if comp.is_empty() || comp.contains('/') {
                return Err(XfsError::NotFound(format!("{walked}/{comp}")));
            }
            if !cur.is_dir() {
                return Err(XfsError::NotADirectory(if walked.is_empty() {
                    "/".to_string()
                } else {
                    walked
                }));
            }
            walked.push('/');
            walked.push_str(comp);
            let ino = self.lookup(&cur, comp.as_bytes()).map_err(|e| match e {
                XfsError::NotFound(_) => XfsError::NotFound(walked.clone()),
                e => e,
            })?;
            cur = self.read_inode(ino)?;
        }
        Ok(cur)
    }

    /// The one directory block of a single-block ("block form") directory,
    /// with the device byte offset of its first filesystem block.  A
    /// directory with more than one block is in leaf or node form.
    fn read_single_dir_block(&self, dirino: &Inode) -> Result<(Vec<u8>, u64)> {
        let dir_fsbs = 1u64 << self.sb.dir_block_log;
        let extents = self.extents(dirino)?;
        // xfs_dir2_isblock(): the last mapped block ends at one dir block.
        let end = extents
            .iter()
            .map(|e| e.file_offset_blocks + e.len_blocks)
            .max()
            .unwrap_or(0);
        if end != dir_fsbs {
            return Err(XfsError::Unsupported(format!(
                "directory inode {} spans {end} blocks: leaf or node form (more than one \
                 directory block); only short-form and single-block directories are read",
                dirino.ino
            )));
        }
        if dirino.size != u64::from(self.sb.dir_block_size()) {
            return Err(corrupt(
                "directory inode",
                format!(
                    "inode {} is one directory block but its size is {}",
                    dirino.ino, dirino.size
                ),
            ));
        }
        let bs = self.sb.block_size as usize;
        let mut block = vec![0u8; self.sb.dir_block_size() as usize];
        let mut first = None;
        for i in 0..dir_fsbs {
            let ext = extents
                .iter()
                .find(|e| e.file_offset_blocks <= i && i < e.file_offset_blocks + e.len_blocks)
                .ok_or_else(|| {
                    corrupt(
                        "directory inode",
                        format!("inode {} has a hole in its directory block", dirino.ino),
                    )
                })?;
            let off = ext.disk_byte_offset + ((i - ext.file_offset_blocks) << self.sb.block_log);
            first.get_or_insert(off);
            let at = i as usize * bs;
            read(&self.dev, &mut block[at..at + bs], off)?;
        }
        Ok((block, first.unwrap_or(0)))
    }
}

fn read<D: ReadAt + ?Sized>(dev: &D, buf: &mut [u8], offset: u64) -> Result<()> {
    dev.read_exact_at(buf, offset)
        .map_err(|source| XfsError::Io {
            offset,
            len: buf.len(),
            source,
        })
}
