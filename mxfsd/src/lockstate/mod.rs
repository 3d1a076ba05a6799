//! The on-disk format of `.mxfs/lockstate` (design section 5, layer 2).
//!
//! This module owns the bytes of that file and where they are on the
//! device; it does no I/O policy (when to beat, whom to purge).
//!
//! The file is an array of slots, one per device logical block (512 or
//! 4096 bytes, [`Layout::new`]), so each slot is written by one aligned
//! `O_DIRECT` write and no two nodes ever write the same block:
//!
//! | slots          | content                                  |
//! |----------------|------------------------------------------|
//! | 0              | [`Header`]: magic, version, volume UUID, owner epoch, 32-byte secret |
//! | 1 ..= 64       | [`Heartbeat`] slots, one per node         |
//! | 65 ..= 65600   | [`LockRecord`] slots (65536)              |
//!
//! Every slot starts with the same envelope, little-endian:
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 4    | magic `MXLS` |
//! | 4      | 2    | format version (1) |
//! | 6      | 1    | kind: 1 header, 2 heartbeat, 3 lock record |
//! | 7      | 1    | 0 |
//! | 8      | 4    | slot index (a slot found at another index is refused) |
//! | 12     | 4    | CRC-32C of the whole slot with this field taken as 0 |
//! | 16     | 16   | volume UUID (XFS `sb_uuid`) |
//! | 32     | ...  | body of the kind, then zeros to the end of the slot |
//!
//! A slot of all zeros is [`Slot::Empty`]: never written (the file is
//! created zero-filled) or cleared.  Anything else must carry a valid
//! CRC, so a torn write (half old, half new) or garbage decodes as an
//! error, never as a plausible record.
//!
//! The byte offsets of slots on the raw device come from the file's XFS
//! extent list ([`DeviceMap`]); a slot that would span two extents, and any
//! unwritten (preallocated) extent, is an error: raw writes into an
//! unwritten extent would be invisible through XFS and reads of it return
//! stale blocks, so the creator must zero-fill the file, not fallocate it.

mod layout;
mod slot;

// The runtime on top of the format: creating the file (first owner),
// opening it on the raw device, heartbeats, lock records.
pub mod create;
pub mod device;
pub mod heartbeat;
pub mod recorder;
pub mod records;
#[cfg(test)]
mod rt_tests;

pub use create::{create, freeze_thaw, CreateParams};
pub use device::{IoFailure, LockstateDevice, Opened};
pub use heartbeat::{
    claim_slot, HeartbeatEvent, HeartbeatMonitor, HeartbeatParams, HeartbeatWriter, SlotContent,
};
#[cfg(test)]
use layout::BlockIo;
pub use layout::{DeviceMap, Layout, SlotId};
pub use recorder::{Recorder, RecorderState, RecorderThread};
pub use records::{purge, RecordBook};
pub use slot::{decode, encode, Header, Heartbeat, HeartbeatState, LockRecord, Slot};

pub const MAGIC: [u8; 4] = *b"MXLS";
pub const FORMAT_VERSION: u16 = 1;
pub const HEARTBEAT_SLOTS: u32 = 64;
pub const LOCK_SLOTS: u32 = 65536;
pub const TOTAL_SLOTS: u32 = 1 + HEARTBEAT_SLOTS + LOCK_SLOTS;
/// Longest resource name a lock record holds (the DLM's limit too).
pub const MAX_NAME: usize = crate::dlm::MAX_RESOURCE_NAME;

#[derive(Debug, thiserror::Error)]
pub enum LockstateError {
    #[error("slot {index}: checksum mismatch (torn write or garbage)")]
    Checksum { index: u32 },
    #[error("slot {index}: not a lockstate slot (magic {magic:02x?})")]
    BadMagic { index: u32, magic: [u8; 4] },
    #[error("slot {index}: format version {version}, this mxfsd reads {FORMAT_VERSION}")]
    Version { index: u32, version: u16 },
    #[error("slot {index}: records itself as slot {found}")]
    WrongIndex { index: u32, found: u32 },
    #[error("slot {index}: holds a {found} slot where a {expected} slot belongs")]
    WrongKind {
        index: u32,
        found: &'static str,
        expected: &'static str,
    },
    #[error("slot {index}: belongs to another volume")]
    WrongVolume { index: u32 },
    #[error("slot {index}: {why}")]
    Invalid { index: u32, why: String },
    #[error("slot size {0}: must be a power of two from 512 to 65536")]
    BadSlotSize(u32),
    #[error("{0} is not a slot of the lockstate file")]
    NoSuchSlot(String),
    #[error("lockstate file mapping: {0}")]
    Mapping(String),
    #[error("lockstate I/O at device byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, LockstateError>;

/// Read and decode one slot from the device.
#[cfg(test)]
pub fn read_slot<D: BlockIo + ?Sized>(
    dev: &mut D,
    map: &DeviceMap,
    slot: SlotId,
    volume: &[u8; 16],
) -> Result<Slot> {
    let offset = map.device_offset(slot)?;
    let mut buf = vec![0u8; map.layout().slot_size() as usize];
    dev.read_block(offset, &mut buf)
        .map_err(|source| LockstateError::Io { offset, source })?;
    decode(&buf, slot.index(), volume)
}

/// Encode and write one slot to the device.
#[cfg(test)]
pub fn write_slot<D: BlockIo + ?Sized>(
    dev: &mut D,
    map: &DeviceMap,
    slot: SlotId,
    content: &Slot,
    volume: &[u8; 16],
) -> Result<()> {
    let offset = map.device_offset(slot)?;
    let buf = encode(content, slot.index(), volume, map.layout().slot_size())?;
    dev.write_block(offset, &buf)
        .map_err(|source| LockstateError::Io { offset, source })
}
