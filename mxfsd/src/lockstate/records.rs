//! Lock records: one slot per granted lock, on disk before the grant is
//! answered, cleared on release, purged when the holder dies.
//!
//! This module owns which lock slots a node may write and the bookkeeping
//! of the ones it uses.  The rules, and why:
//!
//! - **A node records the locks it holds**, in its own records: the
//!   holder writes the record when the grant reaches it and before it
//!   answers the grant to its caller, and clears it on release.  So
//!   `record.holder` is always the writer (checked).
//! - **Each heartbeat slot owns a fixed partition of the lock slots**:
//!   heartbeat slot `h` owns lock slots `h*1024 .. (h+1)*1024`
//!   ([`partition`]).  The claim protocol gives each live node a distinct
//!   heartbeat slot, so no two live nodes ever write the same lock slot,
//!   with no locking and no read-before-write.  A hash over all 65536
//!   slots with probing (what `probe_sequence` offers) would let
//!   two nodes probe into the same free slot at once and lose a record;
//!   the price of partitions is a limit of 1024 records per node.
//! - **Within its partition a node allocates in memory**: first free slot
//!   probing linearly from the FNV-1a hash of the resource name, so the
//!   record of a resource tends to sit at a predictable place.  Memory is
//!   authoritative because nobody else writes the partition; the partition
//!   is read once when the book is opened, and slots found occupied then
//!   (records of a previous run of this node) are reported and left
//!   occupied until purged.
//! - **Purge** ([`purge`]) runs after the dead node has been fenced
//!   (failover step 1, so it cannot write any more): it clears every
//!   record whose holder is the dead node, wherever it is, and every slot
//!   that fails to decode in a partition owned by the dead node's
//!   heartbeat slot (a write it died in the middle of).  Because of the
//!   holder = writer rule, no live node writes a slot holding the dead
//!   node's record, so clearing it races with nobody.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::device::LockstateDevice;
use super::{LockRecord, LockstateError, Slot, SlotId, HEARTBEAT_SLOTS, LOCK_SLOTS};
use crate::identity::fnv1a64;

/// Lock slots per heartbeat slot.
pub const RECORDS_PER_NODE: u32 = LOCK_SLOTS / HEARTBEAT_SLOTS;

/// The lock slots heartbeat slot `hb_slot` owns.
pub fn partition(hb_slot: u32) -> std::ops::Range<u32> {
    let start = hb_slot.min(HEARTBEAT_SLOTS) * RECORDS_PER_NODE;
    start
        ..start
            + if hb_slot < HEARTBEAT_SLOTS {
                RECORDS_PER_NODE
            } else {
                0
            }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("lock slot {slot} is not in this node's partition {range:?}")]
    NotOurs {
        slot: u32,
        range: std::ops::Range<u32>,
    },
    #[error("a node writes only its own lock records (holder {holder:016x}, we are {us:016x})")]
    NotHolder { holder: u64, us: u64 },
    #[error("all {RECORDS_PER_NODE} lock record slots of this node are in use")]
    Full,
    #[error(transparent)]
    Lockstate(#[from] LockstateError),
}

/// What the book found in its partition when it was opened.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leftovers {
    /// Records left by an earlier run (of this node or of a node that had
    /// this heartbeat slot before): (lock slot, record).
    pub records: Vec<(u32, LockRecord)>,
    /// Lock slots that failed to decode, with the error text.
    pub corrupt: Vec<(u32, String)>,
}

/// This node's lock records.
#[derive(Debug)]
pub struct RecordBook {
    dev: Arc<LockstateDevice>,
    node_id: u64,
    range: std::ops::Range<u32>,
    /// Occupied lock slots of our partition and what is in them (`None`:
    /// occupied by something we did not write, see [`Leftovers`]).
    used: BTreeMap<u32, Option<LockRecord>>,
}

impl RecordBook {
    /// The book of node `node_id`, which holds heartbeat slot `hb_slot`.
    /// Reads the partition once.
    pub fn open(
        dev: Arc<LockstateDevice>,
        node_id: u64,
        hb_slot: u32,
    ) -> Result<(RecordBook, Leftovers), RecordError> {
        let range = partition(hb_slot);
        if range.is_empty() {
            return Err(LockstateError::NoSuchSlot(format!("heartbeat slot {hb_slot}")).into());
        }
        let ids: Vec<SlotId> = range.clone().map(SlotId::Lock).collect();
        let mut left = Leftovers::default();
        let mut used = BTreeMap::new();
        for (id, res) in dev.read_slots(&ids)? {
            let SlotId::Lock(i) = id else { continue };
            match res {
                Ok(Slot::Empty) => {}
                Ok(Slot::Lock(r)) => {
                    used.insert(i, None);
                    left.records.push((i, r));
                }
                Ok(other) => {
                    used.insert(i, None);
                    left.corrupt
                        .push((i, format!("not a lock record: {other:?}")));
                }
                Err(e) => {
                    used.insert(i, None);
                    left.corrupt.push((i, e.to_string()));
                }
            }
        }
        Ok((
            RecordBook {
                dev,
                node_id,
                range,
                used,
            },
            left,
        ))
    }

    #[cfg(test)]
    pub fn partition(&self) -> std::ops::Range<u32> {
        self.range.clone()
    }

    /// Records in use (ours and leftovers).
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    /// A free lock slot for a record of resource `name`: linear probing
    /// within our partition from the name's hash.
    pub fn free_slot_for(&self, name: &[u8]) -> Option<u32> {
        let n = u64::from(RECORDS_PER_NODE);
        let start = fnv1a64(name) % n;
        (0..n)
            .map(|k| self.range.start + ((start + k) % n) as u32)
            .find(|s| !self.used.contains_key(s))
    }

    /// Allocate a slot for `record` and write it; returns the lock slot.
    pub fn record(&mut self, record: &LockRecord) -> Result<u32, RecordError> {
        let slot = self.free_slot_for(&record.name).ok_or(RecordError::Full)?;
        self.write_record(slot, record)?;
        Ok(slot)
    }

    /// Write `record` into lock slot `slot` (0..65536, in our partition):
    /// one aligned O_DIRECT|O_SYNC write, on the medium when this returns.
    pub fn write_record(&mut self, slot: u32, record: &LockRecord) -> Result<(), RecordError> {
        self.check(slot)?;
        if record.holder != self.node_id {
            return Err(RecordError::NotHolder {
                holder: record.holder,
                us: self.node_id,
            });
        }
        // Mark the slot used before the write: if the write fails, whether
        // it reached the disk is unknown, so the slot must not be reused
        // until it is cleared.
        self.used.insert(slot, Some(record.clone()));
        self.dev
            .write_slot(SlotId::Lock(slot), &Slot::Lock(record.clone()))?;
        Ok(())
    }

    /// Clear lock slot `slot` (in our partition) and free it.
    pub fn clear_record(&mut self, slot: u32) -> Result<(), RecordError> {
        self.check(slot)?;
        self.dev.write_slot(SlotId::Lock(slot), &Slot::Empty)?;
        self.used.remove(&slot);
        Ok(())
    }

    fn check(&self, slot: u32) -> Result<(), RecordError> {
        if !self.range.contains(&slot) {
            return Err(RecordError::NotOurs {
                slot,
                range: self.range.clone(),
            });
        }
        Ok(())
    }
}

/// What [`purge`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PurgeReport {
    /// Records of the dead node cleared.
    pub cleared: usize,
    /// Undecodable slots cleared in the dead node's partitions.
    pub torn_cleared: usize,
    /// Undecodable slots elsewhere, left alone (lock slot, error).
    pub corrupt_elsewhere: Vec<(u32, String)>,
}

impl PurgeReport {
    /// Slots cleared in all.
    pub fn total(&self) -> usize {
        self.cleared + self.torn_cleared
    }
}

/// Clear every lock record of dead node `node_id` (see the module docs;
/// call only once it is fenced).  Reads all 65536 lock slots in runs of
/// up to 1 MiB, then writes each slot to clear.
pub fn purge(dev: &LockstateDevice, node_id: u64) -> Result<PurgeReport, LockstateError> {
    // The dead node's partitions: those of heartbeat slots that carry its
    // id (normally one; the slot is still there, a dead node does not
    // clear it).
    let hb_ids: Vec<SlotId> = (0..HEARTBEAT_SLOTS).map(SlotId::Heartbeat).collect();
    let mut theirs: Vec<std::ops::Range<u32>> = Vec::new();
    for (id, res) in dev.read_slots(&hb_ids)? {
        if let (SlotId::Heartbeat(h), Ok(Slot::Heartbeat(hb))) = (id, res) {
            if hb.node_id == node_id {
                theirs.push(partition(h));
            }
        }
    }
    let ids: Vec<SlotId> = (0..LOCK_SLOTS).map(SlotId::Lock).collect();
    let mut report = PurgeReport::default();
    for chunk in ids.chunks(RECORDS_PER_NODE as usize) {
        for (id, res) in dev.read_slots(chunk)? {
            let SlotId::Lock(i) = id else { continue };
            let why = match res {
                Ok(Slot::Lock(r)) if r.holder == node_id => {
                    dev.write_slot(id, &Slot::Empty)?;
                    report.cleared += 1;
                    continue;
                }
                Ok(Slot::Lock(_)) | Ok(Slot::Empty) => continue,
                Ok(other) => format!("not a lock record: {other:?}"),
                Err(e) => e.to_string(),
            };
            if theirs.iter().any(|r| r.contains(&i)) {
                dev.write_slot(id, &Slot::Empty)?;
                report.torn_cleared += 1;
            } else {
                report.corrupt_elsewhere.push((i, why));
            }
        }
    }
    Ok(report)
}
