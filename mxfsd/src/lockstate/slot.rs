//! Encoding and decoding of single slots (see the module docs for the
//! envelope).

use super::{
    LockstateError, Result, FORMAT_VERSION, HEARTBEAT_SLOTS, LOCK_SLOTS, MAGIC, MAX_NAME,
    TOTAL_SLOTS,
};
use crate::dlm::Mode;
use crate::identity::fnv1a64;

const ENVELOPE: usize = 32;
const CRC_OFF: usize = 12;
const KIND_HEADER: u8 = 1;
const KIND_HEARTBEAT: u8 = 2;
const KIND_LOCK: u8 = 3;

/// Slot 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Slot size the file was made with; a node whose device reports
    /// another logical block size must not use the file.
    pub slot_size: u32,
    /// Grows at every change of owner (design section 3).
    pub owner_epoch: u64,
    /// Node id of the owner of that epoch (0: none yet).
    pub owner_node: u64,
    /// The volume's peer-authentication secret (design section 6).
    pub secret: [u8; 32],
    /// When the file was created, ns since the Unix epoch (informative).
    pub created_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatState {
    Joining = 1,
    Member = 2,
    /// Left cleanly; the slot may be reused.
    Left = 3,
    /// Found its PR key preempted and fenced itself.
    Fenced = 4,
}

impl HeartbeatState {
    fn from_u8(v: u8) -> Option<HeartbeatState> {
        Some(match v {
            1 => HeartbeatState::Joining,
            2 => HeartbeatState::Member,
            3 => HeartbeatState::Left,
            4 => HeartbeatState::Fenced,
            _ => return None,
        })
    }
}

/// Slots 1..=64: one per node, rewritten every beat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// FNV-1a 64 of `node_uuid` (checked on decode).
    pub node_id: u64,
    pub node_uuid: [u8; 16],
    /// Grows each time the node's daemon starts, so a restarted node is
    /// not mistaken for one whose counter went backwards.
    pub generation: u64,
    /// Grows by one every beat: liveness is "counter moved", not clocks.
    pub counter: u64,
    /// Wall clock at the beat, ns since the Unix epoch (informative only:
    /// nodes' clocks are not trusted to agree).
    pub timestamp_ns: u64,
    pub state: HeartbeatState,
    /// The owner epoch this node last saw.
    pub owner_epoch: u64,
}

/// Slots 65..: one granted lock, written before the grant is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRecord {
    /// Resource name (1..=MAX_NAME bytes); its FNV-1a 64 hash is stored
    /// too and checked, and chooses the slot (`probe_sequence`).
    pub name: Vec<u8>,
    pub holder: u64,
    /// The holder's own id for the lock.
    pub lock_id: u64,
    pub mode: Mode,
    /// Owner epoch at the grant.
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// All zeros: never written, or cleared.
    Empty,
    Header(Header),
    Heartbeat(Heartbeat),
    Lock(LockRecord),
}

fn kind_of_index(index: u32) -> Option<(u8, &'static str)> {
    match index {
        0 => Some((KIND_HEADER, "header")),
        i if i <= HEARTBEAT_SLOTS => Some((KIND_HEARTBEAT, "heartbeat")),
        i if i < TOTAL_SLOTS => Some((KIND_LOCK, "lock record")),
        _ => None,
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_HEADER => "header",
        KIND_HEARTBEAT => "heartbeat",
        KIND_LOCK => "lock record",
        _ => "unknown",
    }
}

fn check_size(slot_size: u32) -> Result<()> {
    if !slot_size.is_power_of_two() || !(512..=65536).contains(&slot_size) {
        return Err(LockstateError::BadSlotSize(slot_size));
    }
    Ok(())
}

/// Encode `slot` for slot number `index` (0 = header, see [`super::SlotId`]).
pub fn encode(slot: &Slot, index: u32, volume: &[u8; 16], slot_size: u32) -> Result<Vec<u8>> {
    check_size(slot_size)?;
    let invalid = |why: String| LockstateError::Invalid { index, why };
    let (expected, expected_name) =
        kind_of_index(index).ok_or_else(|| LockstateError::NoSuchSlot(format!("slot {index}")))?;
    let mut b = vec![0u8; slot_size as usize];
    let kind = match slot {
        Slot::Empty => return Ok(b),
        Slot::Header(h) => {
            if h.slot_size != slot_size {
                return Err(invalid(format!(
                    "header says slot size {}, encoding {slot_size}",
                    h.slot_size
                )));
            }
            put32(&mut b, 32, h.slot_size);
            put32(&mut b, 36, HEARTBEAT_SLOTS);
            put32(&mut b, 40, LOCK_SLOTS);
            put64(&mut b, 48, h.owner_epoch);
            put64(&mut b, 56, h.owner_node);
            b[64..96].copy_from_slice(&h.secret);
            put64(&mut b, 96, h.created_ns);
            KIND_HEADER
        }
        Slot::Heartbeat(h) => {
            if h.node_id == 0 || h.node_id != fnv1a64(&h.node_uuid) {
                return Err(invalid("node id is not FNV-1a of the node UUID".into()));
            }
            put64(&mut b, 32, h.node_id);
            b[40..56].copy_from_slice(&h.node_uuid);
            put64(&mut b, 56, h.generation);
            put64(&mut b, 64, h.counter);
            put64(&mut b, 72, h.timestamp_ns);
            b[80] = h.state as u8;
            put64(&mut b, 88, h.owner_epoch);
            KIND_HEARTBEAT
        }
        Slot::Lock(l) => {
            if l.name.is_empty() || l.name.len() > MAX_NAME {
                return Err(invalid(format!("resource name of {} bytes", l.name.len())));
            }
            if l.holder == 0 {
                return Err(invalid("holder node id 0".into()));
            }
            put64(&mut b, 32, fnv1a64(&l.name));
            put64(&mut b, 40, l.holder);
            put64(&mut b, 48, l.lock_id);
            put64(&mut b, 56, l.epoch);
            b[64] = l.mode as u8;
            b[66..68].copy_from_slice(&(l.name.len() as u16).to_le_bytes());
            b[68..68 + l.name.len()].copy_from_slice(&l.name);
            KIND_LOCK
        }
    };
    if kind != expected {
        return Err(LockstateError::WrongKind {
            index,
            found: kind_name(kind),
            expected: expected_name,
        });
    }
    b[0..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[6] = kind;
    put32(&mut b, 8, index);
    b[16..32].copy_from_slice(volume);
    let crc = slot_crc(&b);
    put32(&mut b, CRC_OFF, crc);
    Ok(b)
}

/// Decode slot number `index` of the volume `volume` from exactly one
/// slot's bytes (the slot size is the buffer's length).
pub fn decode(b: &[u8], index: u32, volume: &[u8; 16]) -> Result<Slot> {
    let slot_size = u32::try_from(b.len()).map_err(|_| LockstateError::BadSlotSize(u32::MAX))?;
    check_size(slot_size).map_err(|_| LockstateError::Invalid {
        index,
        why: format!("{} bytes is not a slot size", b.len()),
    })?;
    let (expected, expected_name) =
        kind_of_index(index).ok_or_else(|| LockstateError::NoSuchSlot(format!("slot {index}")))?;
    if b.iter().all(|&x| x == 0) {
        return Ok(Slot::Empty);
    }
    // Check the CRC first: a torn slot is reported as such whatever its
    // magic or kind bytes happen to hold.
    if get32(b, CRC_OFF) != slot_crc(b) {
        return Err(LockstateError::Checksum { index });
    }
    let magic = [b[0], b[1], b[2], b[3]];
    if magic != MAGIC {
        return Err(LockstateError::BadMagic { index, magic });
    }
    let version = u16::from_le_bytes([b[4], b[5]]);
    if version != FORMAT_VERSION {
        return Err(LockstateError::Version { index, version });
    }
    let found = get32(b, 8);
    if found != index {
        return Err(LockstateError::WrongIndex { index, found });
    }
    if b[6] != expected || b[7] != 0 {
        return Err(LockstateError::WrongKind {
            index,
            found: kind_name(b[6]),
            expected: expected_name,
        });
    }
    if &b[16..32] != volume {
        return Err(LockstateError::WrongVolume { index });
    }
    let invalid = |why: String| LockstateError::Invalid { index, why };
    match expected {
        KIND_HEADER => {
            let size = get32(b, 32);
            if size != slot_size {
                return Err(invalid(format!(
                    "made with slot size {size}, read as {slot_size}"
                )));
            }
            let (hb, locks) = (get32(b, 36), get32(b, 40));
            if hb != HEARTBEAT_SLOTS || locks != LOCK_SLOTS {
                return Err(invalid(format!("{hb} heartbeat and {locks} lock slots")));
            }
            let mut secret = [0u8; 32];
            secret.copy_from_slice(&b[64..96]);
            Ok(Slot::Header(Header {
                slot_size: size,
                owner_epoch: get64(b, 48),
                owner_node: get64(b, 56),
                secret,
                created_ns: get64(b, 96),
            }))
        }
        KIND_HEARTBEAT => {
            let mut node_uuid = [0u8; 16];
            node_uuid.copy_from_slice(&b[40..56]);
            let node_id = get64(b, 32);
            if node_id == 0 || node_id != fnv1a64(&node_uuid) {
                return Err(invalid("node id is not FNV-1a of the node UUID".into()));
            }
            let state = HeartbeatState::from_u8(b[80])
                .ok_or_else(|| invalid(format!("heartbeat state {}", b[80])))?;
            Ok(Slot::Heartbeat(Heartbeat {
                node_id,
                node_uuid,
                generation: get64(b, 56),
                counter: get64(b, 64),
                timestamp_ns: get64(b, 72),
                state,
                owner_epoch: get64(b, 88),
            }))
        }
        _ => {
            let len = usize::from(u16::from_le_bytes([b[66], b[67]]));
            if len == 0 || len > MAX_NAME {
                return Err(invalid(format!("resource name of {len} bytes")));
            }
            let name = b[68..68 + len].to_vec();
            if get64(b, 32) != fnv1a64(&name) {
                return Err(invalid("resource name does not match its hash".into()));
            }
            let holder = get64(b, 40);
            if holder == 0 {
                return Err(invalid("holder node id 0".into()));
            }
            let mode =
                Mode::from_u8(b[64]).ok_or_else(|| invalid(format!("lock mode {}", b[64])))?;
            Ok(Slot::Lock(LockRecord {
                name,
                holder,
                lock_id: get64(b, 48),
                mode,
                epoch: get64(b, 56),
            }))
        }
    }
}

// The envelope and bodies fit in the minimum slot size (512), which both
// functions check before any fixed offset is used.
const _: () = assert!(68 + MAX_NAME <= 512 && ENVELOPE + 72 <= 512);

fn slot_crc(b: &[u8]) -> u32 {
    let c = crc32c::crc32c(&b[..CRC_OFF]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, &b[CRC_OFF + 4..])
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
fn get32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn get64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VOL: [u8; 16] = [0x42; 16];

    fn node(uuid: [u8; 16]) -> Heartbeat {
        Heartbeat {
            node_id: fnv1a64(&uuid),
            node_uuid: uuid,
            generation: 3,
            counter: 12345,
            timestamp_ns: 1_700_000_000_000_000_000,
            state: HeartbeatState::Member,
            owner_epoch: 7,
        }
    }

    fn header(slot_size: u32) -> Header {
        Header {
            slot_size,
            owner_epoch: 9,
            owner_node: 0xdead_beef,
            secret: [0x5a; 32],
            created_ns: 1,
        }
    }

    fn lock() -> LockRecord {
        LockRecord {
            name: b"owner".to_vec(),
            holder: 77,
            lock_id: 1,
            mode: Mode::EX,
            epoch: 9,
        }
    }

    #[test]
    fn round_trips_at_both_slot_sizes() {
        for size in [512, 4096] {
            for (slot, index) in [
                (Slot::Header(header(size)), 0),
                (Slot::Heartbeat(node([1; 16])), 1),
                (Slot::Heartbeat(node([2; 16])), HEARTBEAT_SLOTS),
                (Slot::Lock(lock()), 65),
                (Slot::Lock(lock()), TOTAL_SLOTS - 1),
                (Slot::Empty, 0),
                (Slot::Empty, 100),
            ] {
                let b = encode(&slot, index, &VOL, size).unwrap();
                assert_eq!(b.len(), size as usize);
                assert_eq!(decode(&b, index, &VOL).unwrap(), slot);
            }
        }
    }

    #[test]
    fn misplaced_foreign_and_torn_slots_are_errors() {
        let b = encode(&Slot::Heartbeat(node([1; 16])), 3, &VOL, 512).unwrap();
        assert!(matches!(
            decode(&b, 4, &VOL),
            Err(LockstateError::WrongIndex { .. })
        ));
        assert!(matches!(
            decode(&b, 3, &[0; 16]),
            Err(LockstateError::WrongVolume { .. })
        ));
        // torn: the second half of the slot from an older write
        let old = encode(
            &Slot::Heartbeat(Heartbeat {
                counter: 1,
                ..node([1; 16])
            }),
            3,
            &VOL,
            512,
        )
        .unwrap();
        let mut torn = b.clone();
        torn[256..].copy_from_slice(&old[256..]);
        torn[64] ^= 0xff;
        assert!(matches!(
            decode(&torn, 3, &VOL),
            Err(LockstateError::Checksum { .. })
        ));
        // a header encoded at 4096 read with 512-byte slots
        let h = encode(&Slot::Header(header(4096)), 0, &VOL, 4096).unwrap();
        assert!(decode(&h[..512], 0, &VOL).is_err());
        // wrong kind for the index, both ways
        assert!(matches!(
            encode(&Slot::Lock(lock()), 5, &VOL, 512),
            Err(LockstateError::WrongKind { .. })
        ));
        assert!(encode(&Slot::Lock(lock()), TOTAL_SLOTS, &VOL, 512).is_err());
        assert!(decode(&[0u8; 100], 0, &VOL).is_err());
        // names too long, node ids that are not the hash of the UUID
        let long = LockRecord {
            name: vec![b'x'; MAX_NAME + 1],
            ..lock()
        };
        assert!(encode(&Slot::Lock(long), 65, &VOL, 512).is_err());
        let forged = Heartbeat {
            node_id: 5,
            ..node([1; 16])
        };
        assert!(encode(&Slot::Heartbeat(forged), 1, &VOL, 512).is_err());
    }

    fn arb_mode() -> impl Strategy<Value = Mode> {
        (0u8..6).prop_map(|m| Mode::from_u8(m).unwrap())
    }

    fn arb_slot(size: u32) -> impl Strategy<Value = (Slot, u32)> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), any::<[u8; 32]>(), any::<u64>()).prop_map(
                move |(e, o, secret, c)| (
                    Slot::Header(Header {
                        slot_size: size,
                        owner_epoch: e,
                        owner_node: o,
                        secret,
                        created_ns: c
                    }),
                    0
                )
            ),
            (
                any::<[u8; 16]>(),
                any::<[u64; 4]>(),
                1u8..5,
                1..=HEARTBEAT_SLOTS
            )
                .prop_filter_map("node id 0", |(uuid, v, st, idx)| {
                    let id = fnv1a64(&uuid);
                    (id != 0).then(|| {
                        (
                            Slot::Heartbeat(Heartbeat {
                                node_id: id,
                                node_uuid: uuid,
                                generation: v[0],
                                counter: v[1],
                                timestamp_ns: v[2],
                                state: HeartbeatState::from_u8(st).unwrap(),
                                owner_epoch: v[3],
                            }),
                            idx,
                        )
                    })
                }),
            (
                proptest::collection::vec(any::<u8>(), 1..=MAX_NAME),
                1..u64::MAX,
                any::<u64>(),
                arb_mode(),
                any::<u64>(),
                HEARTBEAT_SLOTS + 1..TOTAL_SLOTS
            )
                .prop_map(|(name, holder, lock_id, mode, epoch, idx)| (
                    Slot::Lock(LockRecord {
                        name,
                        holder,
                        lock_id,
                        mode,
                        epoch
                    }),
                    idx
                )),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn encode_decode_round_trip(size in prop_oneof![Just(512u32), Just(4096u32)]
                                        .prop_flat_map(|s| (Just(s), arb_slot(s)))) {
            let (size, (slot, index)) = size;
            let b = encode(&slot, index, &VOL, size).unwrap();
            prop_assert_eq!(decode(&b, index, &VOL).unwrap(), slot);
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..1100),
                                index in 0..TOTAL_SLOTS + 2) {
            let _ = decode(&b, index, &VOL);
        }

        /// Any change to a valid slot is an error (the CRC), never a
        /// different valid record.
        #[test]
        fn mutated_slots_are_errors(s in arb_slot(512),
                                    flips in proptest::collection::vec((0usize..512, 1u8..=255), 1..6)) {
            let (slot, index) = s;
            let mut b = encode(&slot, index, &VOL, 512).unwrap();
            for (at, x) in flips {
                b[at] ^= x;
            }
            match decode(&b, index, &VOL) {
                Ok(Slot::Empty) | Err(_) => {}
                Ok(other) => prop_assert_eq!(other, slot),
            }
        }

        /// Mutations that also fix the CRC reach the field checks.
        #[test]
        fn mutated_slots_with_fixed_crc_never_panic(s in arb_slot(512),
                                    flips in proptest::collection::vec((0usize..512, any::<u8>()), 1..6)) {
            let (slot, index) = s;
            let mut b = encode(&slot, index, &VOL, 512).unwrap();
            for (at, x) in flips {
                b[at] = x;
            }
            let crc = slot_crc(&b);
            put32(&mut b, CRC_OFF, crc);
            let _ = decode(&b, index, &VOL);
        }
    }
}
