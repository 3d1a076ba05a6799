//! Where slots are: in the file ([`Layout`]) and on the device
//! ([`DeviceMap`], from the file's XFS extents).

#[cfg(test)]
use std::io;

use super::{LockstateError, Result, HEARTBEAT_SLOTS, LOCK_SLOTS, TOTAL_SLOTS};
use crate::xfs::Extent;

/// A slot of the lockstate file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotId {
    Header,
    /// 0..64
    Heartbeat(u32),
    /// 0..65536
    Lock(u32),
}

impl SlotId {
    /// The slot's number in the file (0 = header).  Out-of-range ids map
    /// past the end of the file, which `Layout`/`DeviceMap` refuse.
    pub fn index(self) -> u32 {
        match self {
            SlotId::Header => 0,
            SlotId::Heartbeat(i) => 1u32.saturating_add(i.min(HEARTBEAT_SLOTS)),
            SlotId::Lock(i) => (1 + HEARTBEAT_SLOTS).saturating_add(i.min(LOCK_SLOTS)),
        }
    }

    fn check(self) -> Result<Self> {
        match self {
            SlotId::Heartbeat(i) if i >= HEARTBEAT_SLOTS => {}
            SlotId::Lock(i) if i >= LOCK_SLOTS => {}
            s => return Ok(s),
        }
        Err(LockstateError::NoSuchSlot(format!("{self:?}")))
    }
}

/// Lock slots to try, in order, for a resource whose FNV-1a 64 hash is
/// `hash`: linear probing from `hash mod 65536`, so a reader finds a
/// resource's record without scanning all slots in the common case.
#[cfg(test)]
pub fn probe_sequence(hash: u64) -> impl Iterator<Item = SlotId> {
    let start = (hash % u64::from(LOCK_SLOTS)) as u32;
    (0..LOCK_SLOTS).map(move |i| SlotId::Lock((start + i) % LOCK_SLOTS))
}

/// Slot geometry inside the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    slot_size: u32,
}

impl Layout {
    /// `slot_size` is the device's logical block size (512 or 4096; any
    /// power of two from 512 to 64 KiB is accepted).
    pub fn new(slot_size: u32) -> Result<Layout> {
        if !slot_size.is_power_of_two() || !(512..=65536).contains(&slot_size) {
            return Err(LockstateError::BadSlotSize(slot_size));
        }
        Ok(Layout { slot_size })
    }

    pub fn slot_size(&self) -> u32 {
        self.slot_size
    }

    /// Bytes of the whole file: 65601 slots.
    pub fn file_len(&self) -> u64 {
        u64::from(TOTAL_SLOTS) * u64::from(self.slot_size)
    }

    /// Byte offset of a slot inside the file.
    pub fn file_offset(&self, slot: SlotId) -> Result<u64> {
        Ok(u64::from(slot.check()?.index()) * u64::from(self.slot_size))
    }
}

/// One piece of the file on the device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    file_off: u64,
    dev_off: u64,
    len: u64,
}

/// File slots → device byte offsets, built from the file's extent list
/// (from [`crate::xfs::Volume::extents`]) and checked once, up front, so
/// that every later lookup of a valid slot succeeds.
#[derive(Debug, Clone)]
pub struct DeviceMap {
    layout: Layout,
    pieces: Vec<Piece>,
}

impl DeviceMap {
    /// Refuses, naming the problem: a hole or an unwritten extent inside
    /// the file's slots, a slot that would span two extents, and a slot
    /// whose device offset is not aligned to the slot size (O_DIRECT).
    pub fn new(layout: Layout, extents: &[Extent], fs_block_size: u32) -> Result<DeviceMap> {
        let err = |why: String| Err(LockstateError::Mapping(why));
        if !fs_block_size.is_power_of_two() {
            return err(format!("filesystem block size {fs_block_size}"));
        }
        let bs = u64::from(fs_block_size);
        let need = layout.file_len();
        let ss = u64::from(layout.slot_size);
        let mut pieces = Vec::new();
        let mut covered = 0u64;
        for e in extents {
            let file_off = e.file_offset_blocks.checked_mul(bs);
            let len = e.len_blocks.checked_mul(bs);
            let (Some(file_off), Some(len)) = (file_off, len) else {
                return err(format!("extent {e:?} overflows"));
            };
            if file_off >= need {
                break;
            }
            if file_off != covered {
                return err(format!(
                    "hole at file bytes {covered}..{file_off}: the file must be fully written"
                ));
            }
            if e.unwritten {
                return err(format!(
                    "unwritten (preallocated) extent at file byte {file_off}: raw reads of it \
                     return stale blocks; the file must be zero-filled, not fallocated"
                ));
            }
            let len = len.min(need - file_off);
            if file_off % ss != 0 || len % ss != 0 {
                return err(format!(
                    "slot {} spans an extent boundary (extent at file bytes {file_off}..{})",
                    (file_off + len) / ss,
                    file_off + len
                ));
            }
            if e.disk_byte_offset % ss != 0 {
                return err(format!(
                    "extent at device byte {} is not aligned to {ss}-byte slots",
                    e.disk_byte_offset
                ));
            }
            pieces.push(Piece {
                file_off,
                dev_off: e.disk_byte_offset,
                len,
            });
            covered = file_off + len;
        }
        if covered < need {
            return err(format!(
                "the extents map {covered} of the {need} bytes the lockstate file needs"
            ));
        }
        Ok(DeviceMap { layout, pieces })
    }

    #[cfg(test)]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Device byte offset of a slot.
    pub fn device_offset(&self, slot: SlotId) -> Result<u64> {
        let off = self.layout.file_offset(slot)?;
        let end = off + u64::from(self.layout.slot_size);
        let p = self
            .pieces
            .iter()
            .find(|p| p.file_off <= off && off < p.file_off + p.len)
            .ok_or_else(|| LockstateError::Mapping(format!("{slot:?} is not mapped")))?;
        if end > p.file_off + p.len {
            return Err(LockstateError::Mapping(format!(
                "{slot:?} spans an extent boundary"
            )));
        }
        Ok(p.dev_off + (off - p.file_off))
    }
}

/// Block reads and writes of whole slots at device byte offsets, for
/// tests of the slot helpers over memory (the daemon's own device I/O,
/// `O_DIRECT | O_SYNC` with aligned buffers, does not go through it).
#[cfg(test)]
pub trait BlockIo {
    fn read_block(&mut self, dev_offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_block(&mut self, dev_offset: u64, buf: &[u8]) -> io::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::dlm::Mode;
    use proptest::prelude::*;

    fn ext(file_block: u64, dev_block: u64, len: u64) -> Extent {
        Extent {
            file_offset_blocks: file_block,
            disk_byte_offset: dev_block * 4096,
            len_blocks: len,
            unwritten: false,
        }
    }

    impl BlockIo for Vec<u8> {
        fn read_block(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
            let off = off as usize;
            let src = self
                .get(off..off + buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write_block(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
            let off = off as usize;
            self.get_mut(off..off + buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?
                .copy_from_slice(buf);
            Ok(())
        }
    }

    #[test]
    fn layout_offsets() {
        let l = Layout::new(512).unwrap();
        assert_eq!(l.file_len(), 65601 * 512);
        assert_eq!(l.file_offset(SlotId::Header).unwrap(), 0);
        assert_eq!(l.file_offset(SlotId::Heartbeat(0)).unwrap(), 512);
        assert_eq!(l.file_offset(SlotId::Heartbeat(63)).unwrap(), 64 * 512);
        assert_eq!(l.file_offset(SlotId::Lock(0)).unwrap(), 65 * 512);
        assert_eq!(l.file_offset(SlotId::Lock(65535)).unwrap(), 65600 * 512);
        assert!(l.file_offset(SlotId::Heartbeat(64)).is_err());
        assert!(l.file_offset(SlotId::Lock(65536)).is_err());
        assert!(Layout::new(1000).is_err());
        assert!(Layout::new(256).is_err());
        let p: Vec<SlotId> = probe_sequence(65535 + 65536 * 3).take(2).collect();
        assert_eq!(p, vec![SlotId::Lock(65535), SlotId::Lock(0)]);
    }

    #[test]
    fn device_map_follows_extents() {
        let l = Layout::new(4096).unwrap(); // 65601 blocks of 4 KiB
        let m = DeviceMap::new(l, &[ext(0, 1000, 10), ext(10, 50_000, 70_000)], 4096).unwrap();
        assert_eq!(m.device_offset(SlotId::Header).unwrap(), 1000 * 4096);
        assert_eq!(m.device_offset(SlotId::Heartbeat(8)).unwrap(), 1009 * 4096);
        assert_eq!(
            m.device_offset(SlotId::Heartbeat(9)).unwrap(),
            50_000 * 4096
        );
        assert_eq!(
            m.device_offset(SlotId::Lock(0)).unwrap(),
            (50_000 + 55) * 4096
        );
        // holes, short files, unwritten extents
        assert!(DeviceMap::new(l, &[ext(0, 1000, 10), ext(11, 5, 70_000)], 4096).is_err());
        assert!(DeviceMap::new(l, &[ext(0, 1000, 65_600)], 4096).is_err());
        let mut u = ext(0, 1000, 70_000);
        u.unwritten = true;
        let e = DeviceMap::new(l, &[u], 4096).unwrap_err();
        assert!(e.to_string().contains("unwritten"), "{e}");
        // 1 KiB filesystem blocks: an extent boundary inside a 4 KiB slot.
        let e = DeviceMap::new(l, &[ext(0, 0, 3), ext(3, 9, 300_000)], 1024).unwrap_err();
        assert!(e.to_string().contains("spans an extent boundary"), "{e}");
        // ...but fine for 512-byte slots.
        let l512 = Layout::new(512).unwrap();
        let m = DeviceMap::new(l512, &[ext(0, 0, 3), ext(3, 9, 300_000)], 1024).unwrap();
        // Heartbeat(6) is slot 7, file byte 3584: 512 into the second extent.
        assert_eq!(
            m.device_offset(SlotId::Heartbeat(6)).unwrap(),
            9 * 4096 + 512
        );
        assert_eq!(m.device_offset(SlotId::Heartbeat(4)).unwrap(), 2560);
    }

    #[test]
    fn read_and_write_slots_through_the_map() {
        let l = Layout::new(512).unwrap();
        let bs = 4096u64;
        let blocks = l.file_len().div_ceil(bs);
        // the file in two pieces, the second before the first on the device
        let m = DeviceMap::new(l, &[ext(0, blocks, 3), ext(3, 1, blocks - 3)], bs as u32).unwrap();
        let mut dev = vec![0u8; ((2 * blocks + 1) * bs) as usize];
        let vol = [9u8; 16];
        assert_eq!(
            read_slot(&mut dev, &m, SlotId::Lock(17), &vol).unwrap(),
            Slot::Empty
        );
        let rec = Slot::Lock(LockRecord {
            name: b"inode:131".to_vec(),
            holder: 5,
            lock_id: 8,
            mode: Mode::PR,
            epoch: 2,
        });
        for s in [SlotId::Lock(17), SlotId::Heartbeat(63), SlotId::Lock(65535)] {
            let content = match s {
                SlotId::Heartbeat(_) => {
                    let uuid = [3u8; 16];
                    Slot::Heartbeat(Heartbeat {
                        node_id: crate::identity::fnv1a64(&uuid),
                        node_uuid: uuid,
                        generation: 1,
                        counter: 2,
                        timestamp_ns: 3,
                        state: HeartbeatState::Joining,
                        owner_epoch: 0,
                    })
                }
                _ => rec.clone(),
            };
            write_slot(&mut dev, &m, s, &content, &vol).unwrap();
            assert_eq!(read_slot(&mut dev, &m, s, &vol).unwrap(), content);
        }
        // the neighbours are untouched
        assert_eq!(
            read_slot(&mut dev, &m, SlotId::Lock(16), &vol).unwrap(),
            Slot::Empty
        );
        assert_eq!(
            read_slot(&mut dev, &m, SlotId::Lock(18), &vol).unwrap(),
            Slot::Empty
        );
        // clearing
        write_slot(&mut dev, &m, SlotId::Lock(17), &Slot::Empty, &vol).unwrap();
        assert_eq!(
            read_slot(&mut dev, &m, SlotId::Lock(17), &vol).unwrap(),
            Slot::Empty
        );
    }

    proptest! {
        /// Every slot of a valid map lies inside one extent, at the right
        /// distance from the extent's start.
        #[test]
        fn device_map_is_consistent(cuts in proptest::collection::btree_set(1u64..8200, 0..6),
                                    slot_size in prop_oneof![Just(512u32), Just(4096u32)],
                                    probe in 0u32..TOTAL_SLOTS) {
            let l = Layout::new(slot_size).unwrap();
            let bs = 4096u64;
            let blocks = l.file_len().div_ceil(bs);
            let mut bounds: Vec<u64> = cuts.into_iter().filter(|c| *c < blocks).collect();
            bounds.insert(0, 0);
            bounds.push(blocks);
            let extents: Vec<Extent> = bounds.windows(2).enumerate()
                .map(|(i, w)| ext(w[0], 1_000_000 * (i as u64 + 1), w[1] - w[0]))
                .collect();
            let m = DeviceMap::new(l, &extents, bs as u32).unwrap();
            let slot = match probe {
                0 => SlotId::Header,
                i if i <= HEARTBEAT_SLOTS => SlotId::Heartbeat(i - 1),
                i => SlotId::Lock(i - 1 - HEARTBEAT_SLOTS),
            };
            let dev = m.device_offset(slot).unwrap();
            let file = l.file_offset(slot).unwrap();
            let e = extents.iter().find(|e| {
                e.file_offset_blocks * bs <= file && file < (e.file_offset_blocks + e.len_blocks) * bs
            }).unwrap();
            prop_assert_eq!(dev, e.disk_byte_offset + file - e.file_offset_blocks * bs);
            prop_assert!(file + u64::from(slot_size) <= (e.file_offset_blocks + e.len_blocks) * bs);
            prop_assert_eq!(dev % u64::from(slot_size), 0);
        }
    }
}
