//! The lockstate file on the raw device: opening, locating, slot I/O.
//!
//! This module owns the daemon's file descriptor on the shared device and
//! every byte of lockstate I/O through it.  [`LockstateDevice::open`]
//! reads the device's logical block size (`BLKSSZGET`), opens it
//! `O_DIRECT | O_SYNC`, walks XFS's on-disk structures to the extents of
//! `.mxfs/lockstate` (through the same descriptor, so the walk sees what is
//! on disk now, not what this host's page cache remembers), builds the
//! [`DeviceMap`] and reads and checks the header.  After that every slot is
//! read and written by one aligned `pread`/`pwrite` of exactly one logical
//! block from an aligned buffer, so each write is atomic on the device and
//! lands on the medium before the call returns.
//!
//! A volume without a lockstate yet (`.mxfs` or `.mxfs/lockstate` missing
//! from the on-disk directories) is [`Opened::Absent`], not an error: it
//! is the fresh volume whose first owner will make the file.  Anything
//! else that is wrong (corrupt XFS, a header that fails its checks, a file
//! made for another slot size, holes or unwritten extents) is an error.
//! Note that `Absent` can be transient: while the first owner is creating
//! the file, the on-disk directories change only at its freeze/thaw.
//!
//! Image files stand in for block devices in tests and tools, but only
//! through `LockstateDevice::open_image`, which takes the logical block
//! size explicitly: [`LockstateDevice::open`] refuses anything that is not
//! a block device, so a path mix-up in production fails loudly.
//!
//! All methods take `&self` (positional I/O on one descriptor), so one
//! device is shared by the heartbeat thread, the lock-record writer and
//! monitors through an `Arc`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{
    decode, encode, DeviceMap, Header, Layout, LockstateError, Slot, SlotId, FORMAT_VERSION, MAGIC,
};
use crate::xfs::{AlignedReader, Extent, Volume, XfsError};

/// Path of the file inside the filesystem, as walked on disk.
pub const LOCKSTATE_PATH: [&str; 2] = [".mxfs", "lockstate"];

/// Longest run of contiguous slots read by one I/O in bulk reads (purge,
/// heartbeat scans): large enough to make a scan of all 65536 lock slots
/// a few dozen reads, small enough not to pin much memory.
const MAX_RUN_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: not a block device (image files are opened with \
         LockstateDevice::open_image, giving the block size)"
    )]
    NotBlockDevice { path: PathBuf },
    #[error("{path}: reading the logical block size (BLKSSZGET): {source}")]
    BlockSize {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: logical block size {size} is not usable for lockstate slots")]
    BadBlockSize { path: PathBuf, size: u32 },
    #[error("{path}: walking XFS to .mxfs/lockstate: {source}")]
    Xfs {
        path: PathBuf,
        #[source]
        source: XfsError,
    },
    #[error("{path}: /.mxfs/lockstate is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path}: /.mxfs/lockstate is {size} bytes, the layout needs {need}")]
    TooShort { path: PathBuf, size: u64, need: u64 },
    #[error(
        "lockstate was made for {file}-byte slots but the device's logical block size is \
         {device}: this node sees the LUN with another block size and must not use it"
    )]
    SlotSizeMismatch { file: u32, device: u32 },
    #[error("lockstate header: {0}")]
    Header(#[source] LockstateError),
    #[error(transparent)]
    Lockstate(#[from] LockstateError),
}

/// What [`LockstateDevice::open`] found.
#[derive(Debug)]
pub enum Opened {
    Ready(LockstateDevice),
    /// A fresh volume: no lockstate file yet.
    Absent(Absent),
}

/// The facts a would-be creator needs about a volume without a lockstate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absent {
    /// The first path component missing on disk: `/.mxfs` or
    /// `/.mxfs/lockstate`.
    pub missing: &'static str,
    /// The XFS `sb_uuid`.
    pub volume: [u8; 16],
    /// The device's logical block size, which is the slot size to create.
    pub block_size: u32,
}

/// Slots read in bulk, each with its own decode result.
pub type SlotReads = Vec<(SlotId, Result<Slot, LockstateError>)>;

/// The lockstate file of one volume, opened on the raw device.
#[derive(Debug)]
pub struct LockstateDevice {
    file: File,
    block_size: u32,
    volume: [u8; 16],
    map: DeviceMap,
    #[cfg(test)]
    extents: Vec<Extent>,
    header: Header,
    /// Fault injection for tests: an errno every I/O fails with when set.
    #[cfg(test)]
    fault: std::sync::atomic::AtomicI32,
}

/// A heap buffer whose start is aligned to the device's logical block
/// size, as `O_DIRECT` requires of memory as well as of offsets.  Made by
/// over-allocating and starting at the first aligned byte, so no unsafe
/// allocation is needed.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize, align: usize) -> io::Result<AlignedBuf> {
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, "cannot align I/O buffer");
        let total = len.checked_add(align).ok_or_else(bad)?;
        let raw = vec![0u8; total];
        // align_offset may answer usize::MAX ("cannot"); any answer of
        // `align` or more would run the slice past the allocation.
        let start = raw.as_ptr().align_offset(align);
        if start >= align {
            return Err(bad());
        }
        Ok(AlignedBuf { raw, start, len })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// The logical block size of an open block device.
fn logical_block_size(file: &File) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one `int` through the pointer, which points
    // at a live, properly aligned c_int for the duration of the call; the
    // descriptor is open (borrowed from `file`).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::BLKSSZGET, &mut size as *mut _) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(size).map_err(|_| io::Error::other(format!("block size {size}")))
}

fn open_direct(path: &Path) -> Result<File, DeviceError> {
    // O_SYNC as well as O_DIRECT: O_DIRECT alone skips the page cache but
    // not the device's volatile write cache; O_SYNC makes each write a FUA
    // (or a flush), so a beat or record is on the medium when we go on.
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_SYNC)
        .open(path)
        .map_err(|source| DeviceError::Open {
            path: path.to_path_buf(),
            source,
        })
}

impl LockstateDevice {
    /// Open the lockstate of the XFS on block device `dev_path`.
    pub fn open(dev_path: &Path) -> Result<Opened, DeviceError> {
        let file = open_direct(dev_path)?;
        let meta = file.metadata().map_err(|source| DeviceError::Open {
            path: dev_path.to_path_buf(),
            source,
        })?;
        if !meta.file_type().is_block_device() {
            return Err(DeviceError::NotBlockDevice {
                path: dev_path.to_path_buf(),
            });
        }
        let size = logical_block_size(&file).map_err(|source| DeviceError::BlockSize {
            path: dev_path.to_path_buf(),
            source,
        })?;
        Self::from_file(file, dev_path, size)
    }

    /// Open the lockstate of an XFS image in a regular file, treating it
    /// as a device with logical block size `block_size` (tests, tools).
    /// The file must be on a filesystem that supports `O_DIRECT`.
    #[cfg(test)]
    pub fn open_image(path: &Path, block_size: u32) -> Result<Opened, DeviceError> {
        let file = open_direct(path)?;
        Self::from_file(file, path, block_size)
    }

    fn from_file(file: File, path: &Path, block_size: u32) -> Result<Opened, DeviceError> {
        let layout = Layout::new(block_size).map_err(|_| DeviceError::BadBlockSize {
            path: path.to_path_buf(),
            size: block_size,
        })?;
        let xfs_err = |source| DeviceError::Xfs {
            path: path.to_path_buf(),
            source,
        };
        // The walk reads through the O_DIRECT descriptor, so it needs
        // whole aligned blocks: AlignedReader turns its reads into those.
        let reader =
            AlignedReader::new(&file, block_size as usize).map_err(|source| DeviceError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let vol = Volume::open(reader).map_err(xfs_err)?;
        let volume = vol.uuid();
        let absent = |missing| {
            Ok(Opened::Absent(Absent {
                missing,
                volume,
                block_size,
            }))
        };
        match vol.lookup_path(&LOCKSTATE_PATH[..1]) {
            Err(XfsError::NotFound(_)) => return absent("/.mxfs"),
            Err(e) => return Err(xfs_err(e)),
            Ok(_) => {}
        }
        let inode = match vol.lookup_path(&LOCKSTATE_PATH) {
            Err(XfsError::NotFound(_)) => return absent("/.mxfs/lockstate"),
            Err(e) => return Err(xfs_err(e)),
            Ok(i) => i,
        };
        if !inode.is_regular() {
            return Err(DeviceError::NotRegular {
                path: path.to_path_buf(),
            });
        }
        let extents = vol.extents(&inode).map_err(xfs_err)?;
        let fs_block_size = vol.block_size();

        // Before mapping the whole file: a file made for another slot size
        // would fail the map or the CRC with a misleading message, so look
        // at the header's own slot-size field first.
        check_slot_size(&file, block_size, &extents)?;
        if inode.size < layout.file_len() {
            return Err(DeviceError::TooShort {
                path: path.to_path_buf(),
                size: inode.size,
                need: layout.file_len(),
            });
        }
        let map = DeviceMap::new(layout, &extents, fs_block_size)?;
        let offset = map.device_offset(SlotId::Header)?;
        let buf = pread_at(&file, block_size, offset, block_size as usize)
            .map_err(|source| DeviceError::Header(LockstateError::Io { offset, source }))?;
        let header = match decode(buf.as_slice(), 0, &volume).map_err(DeviceError::Header)? {
            Slot::Header(h) => h,
            Slot::Empty => {
                return Err(DeviceError::Header(LockstateError::Invalid {
                    index: 0,
                    why: "the header slot is empty".into(),
                }))
            }
            // decode(.., 0, ..) only returns headers or Empty.
            other => {
                return Err(DeviceError::Header(LockstateError::Invalid {
                    index: 0,
                    why: format!("header slot decodes as {other:?}"),
                }))
            }
        };
        Ok(Opened::Ready(LockstateDevice {
            file,
            block_size,
            volume,
            map,
            #[cfg(test)]
            extents,
            header,
            #[cfg(test)]
            fault: std::sync::atomic::AtomicI32::new(0),
        }))
    }

    /// The device's logical block size, which is the slot size.
    #[cfg(test)]
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    #[cfg(test)]
    pub fn map(&self) -> &DeviceMap {
        &self.map
    }

    /// The XFS extents of the file, as walked at open.
    #[cfg(test)]
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// The volume UUID (XFS `sb_uuid`), checked against the header.
    #[cfg(test)]
    pub fn volume(&self) -> [u8; 16] {
        self.volume
    }

    /// The header as read at open (the secret does not change; the owner
    /// epoch does: `Self::read_header` for the current one).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Read and check the header now.
    #[cfg(test)]
    pub fn read_header(&self) -> Result<Header, LockstateError> {
        match self.read_slot(SlotId::Header)? {
            Slot::Header(h) => Ok(h),
            Slot::Empty => Err(LockstateError::Invalid {
                index: 0,
                why: "the header slot is empty".into(),
            }),
            other => Err(LockstateError::Invalid {
                index: 0,
                why: format!("header slot decodes as {other:?}"),
            }),
        }
    }

    /// Rewrite the header (the owner, at a takeover, to bump the epoch).
    pub fn write_header(&self, header: &Header) -> Result<(), LockstateError> {
        self.write_slot(SlotId::Header, &Slot::Header(header.clone()))
    }

    /// Read and decode one slot.
    pub fn read_slot(&self, slot: SlotId) -> Result<Slot, LockstateError> {
        let offset = self.map.device_offset(slot)?;
        let buf = self
            .pread(offset, self.block_size as usize)
            .map_err(|source| LockstateError::Io { offset, source })?;
        decode(buf.as_slice(), slot.index(), &self.volume)
    }

    /// Encode and write one slot: one aligned O_DIRECT|O_SYNC write.
    pub fn write_slot(&self, slot: SlotId, content: &Slot) -> Result<(), LockstateError> {
        let offset = self.map.device_offset(slot)?;
        let bytes = encode(content, slot.index(), &self.volume, self.block_size)?;
        self.pwrite(offset, &bytes)
            .map_err(|source| LockstateError::Io { offset, source })
    }

    /// Read many slots with as few I/Os as their placement allows (runs of
    /// slots contiguous on the device, up to 1 MiB each).  The outer error
    /// is an I/O or mapping failure (nothing was decided); each slot's
    /// decode result is separate, so one torn slot does not hide the rest.
    pub fn read_slots(&self, slots: &[SlotId]) -> Result<SlotReads, LockstateError> {
        let ss = u64::from(self.block_size);
        let offsets = slots
            .iter()
            .map(|s| self.map.device_offset(*s))
            .collect::<Result<Vec<u64>, _>>()?;
        let mut out = Vec::with_capacity(slots.len());
        let mut i = 0;
        while i < slots.len() {
            let start = offsets[i];
            let mut n = 1;
            while i + n < slots.len()
                && offsets[i + n] == start + n as u64 * ss
                && (n as u64 + 1) * ss <= MAX_RUN_BYTES
            {
                n += 1;
            }
            let buf = self
                .pread(start, n * self.block_size as usize)
                .map_err(|source| LockstateError::Io {
                    offset: start,
                    source,
                })?;
            for (k, chunk) in buf.as_slice().chunks_exact(ss as usize).enumerate() {
                let slot = slots[i + k];
                out.push((slot, decode(chunk, slot.index(), &self.volume)));
            }
            i += n;
        }
        Ok(out)
    }

    #[cfg(test)]
    pub(crate) fn inject_fault(&self, errno: i32) {
        self.fault.store(errno, std::sync::atomic::Ordering::SeqCst);
    }

    fn check_fault(&self) -> io::Result<()> {
        #[cfg(test)]
        {
            let errno = self.fault.load(std::sync::atomic::Ordering::SeqCst);
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        Ok(())
    }

    fn pread(&self, offset: u64, len: usize) -> io::Result<AlignedBuf> {
        self.check_fault()?;
        pread_at(&self.file, self.block_size, offset, len)
    }

    fn pwrite(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_fault()?;
        pwrite_at(&self.file, self.block_size, offset, data)
    }
}

fn check_aligned(align: u32, offset: u64, len: usize) -> io::Result<()> {
    let a = u64::from(align);
    if !offset.is_multiple_of(a) || !(len as u64).is_multiple_of(a) || len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unaligned lockstate I/O: {len} bytes at {offset}"),
        ));
    }
    Ok(())
}

/// One aligned read of whole blocks into an aligned buffer.
fn pread_at(file: &File, align: u32, offset: u64, len: usize) -> io::Result<AlignedBuf> {
    check_aligned(align, offset, len)?;
    let mut buf = AlignedBuf::new(len, align as usize)?;
    file.read_exact_at(buf.as_mut_slice(), offset)?;
    Ok(buf)
}

/// One aligned write of whole blocks from an aligned copy of `data`.
fn pwrite_at(file: &File, align: u32, offset: u64, data: &[u8]) -> io::Result<()> {
    check_aligned(align, offset, data.len())?;
    let mut buf = AlignedBuf::new(data.len(), align as usize)?;
    buf.as_mut_slice().copy_from_slice(data);
    file.write_all_at(buf.as_slice(), offset)
}

/// Peek at the (not yet verified) slot-size field of the header block and
/// refuse a file made for another slot size, naming both sizes.
fn check_slot_size(file: &File, block_size: u32, extents: &[Extent]) -> Result<(), DeviceError> {
    let Some(first) = extents
        .first()
        .filter(|e| e.file_offset_blocks == 0 && !e.unwritten)
    else {
        // No data at file offset 0: DeviceMap::new names the problem.
        return Ok(());
    };
    if !first.disk_byte_offset.is_multiple_of(u64::from(block_size)) {
        return Ok(()); // likewise reported by DeviceMap::new
    }
    let offset = first.disk_byte_offset;
    let buf = pread_at(file, block_size, offset, block_size as usize)
        .map_err(|source| DeviceError::Header(LockstateError::Io { offset, source }))?;
    let b = buf.as_slice();
    if b[0..4] != MAGIC || b[4..6] != FORMAT_VERSION.to_le_bytes() || b[6] != 1 {
        return Ok(()); // not a header at all: the full decode reports it
    }
    let made = u32::from_le_bytes([b[32], b[33], b[34], b[35]]);
    if made != block_size && Layout::new(made).is_ok() {
        return Err(DeviceError::SlotSizeMismatch {
            file: made,
            device: block_size,
        });
    }
    Ok(())
}

/// How a failed lockstate I/O should be read by its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoFailure {
    /// `EBADE`: the kernel's mapping of a SCSI RESERVATION CONFLICT
    /// (`BLK_STS_NEXUS`): our PR key was preempted, we are fenced.
    ReservationConflict,
    /// `EIO` and everything else: the device failed the I/O (on older
    /// kernels and some transports a reservation conflict also shows up
    /// as plain EIO, so callers should check their PR key before retrying).
    Other,
}

/// Classify an error from lockstate I/O (see [`IoFailure`]).  Errors that
/// are not device I/O (decode, mapping) are `None`.
pub fn io_failure(e: &LockstateError) -> Option<(IoFailure, Option<i32>)> {
    match e {
        LockstateError::Io { source, .. } => {
            let errno = source.raw_os_error();
            let kind = if errno == Some(libc::EBADE) {
                IoFailure::ReservationConflict
            } else {
                IoFailure::Other
            };
            Some((kind, errno))
        }
        _ => None,
    }
}
