//! The reply cache's copy that outlives the daemon: a memfd that systemd
//! keeps in the unit's file descriptor store, so that an owner daemon
//! restarted after `kill -9` still knows what it answered, and a client
//! that sends a request again after the restart gets the first answer
//! instead of a second run ([`super::replies`]).
//!
//! This module owns the memfd's bytes: a ring of [`SLOTS`] fixed slots,
//! one answer each, each written with one positioned write, after the
//! request ran and before its answer is sent.  Read back, a slot goes
//! through [`decode_slot`], which refuses what is torn or foreign (a
//! checksum over the whole slot); an answer older than the cache keeps
//! answers is dropped.  Answers too large for a slot are kept in memory
//! only (none of the kinds kept comes near: a create's is a few hundred
//! bytes).
//!
//! Slot layout, little endian: magic `MXRC`, checksum (FNV-1a of bytes
//! 8.. up to the payload's end, low 32 bits), sequence number, written at
//! (seconds since the Unix epoch), client node, origin session, origin
//! unique, opcode, payload length, payload.  The sequence number orders
//! the ring: a restart goes on after the highest.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::identity::fnv1a64;
use crate::wire::Origin;

const MAGIC: [u8; 4] = *b"MXRC";
/// Bytes per slot.
pub const SLOT: usize = 1024;
/// Slots in the ring: as many as the cache keeps answers.
pub const SLOTS: u64 = super::replies::MAX_ENTRIES as u64;
const HEAD: usize = 56;
/// The largest answer payload a slot holds.
pub const MAX_PAYLOAD: usize = SLOT - HEAD;

/// One kept answer (its errno is 0: only successes are kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptReply {
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub written: u64,
    pub node: u64,
    pub origin: Origin,
    pub opcode: u32,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    #[error("not a reply slot")]
    Magic,
    #[error("reply slot: {0}")]
    Corrupt(&'static str),
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, SlotError> {
    crate::le::u32_at(b, at).ok_or(SlotError::Corrupt("short"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, SlotError> {
    crate::le::u64_at(b, at).ok_or(SlotError::Corrupt("short"))
}

/// A slot's bytes; None if the payload does not fit.
pub fn encode_slot(r: &KeptReply) -> Option<Vec<u8>> {
    if r.payload.len() > MAX_PAYLOAD {
        return None;
    }
    let mut b = Vec::with_capacity(HEAD + r.payload.len());
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&[0; 4]);
    for v in [r.seq, r.written, r.node, r.origin.session, r.origin.unique] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&r.opcode.to_le_bytes());
    b.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
    b.extend_from_slice(&r.payload);
    let sum = fnv1a64(&b[8..]) as u32;
    b[4..8].copy_from_slice(&sum.to_le_bytes());
    Some(b)
}

/// A slot read back: None if it is empty (all zeros at the start).
pub fn decode_slot(b: &[u8]) -> Result<Option<KeptReply>, SlotError> {
    let head = b.get(..HEAD).ok_or(SlotError::Corrupt("short"))?;
    if head.iter().all(|x| *x == 0) {
        return Ok(None);
    }
    if head[..4] != MAGIC {
        return Err(SlotError::Magic);
    }
    let len = u32_at(b, 52)? as usize;
    if len > MAX_PAYLOAD {
        return Err(SlotError::Corrupt("payload length"));
    }
    let body = b
        .get(8..HEAD + len)
        .ok_or(SlotError::Corrupt("short payload"))?;
    if fnv1a64(body) as u32 != u32_at(b, 4)? {
        return Err(SlotError::Corrupt("checksum"));
    }
    let origin = Origin {
        session: u64_at(b, 32)?,
        unique: u64_at(b, 40)?,
    };
    if origin.is_none() {
        return Err(SlotError::Corrupt("no origin"));
    }
    Ok(Some(KeptReply {
        seq: u64_at(b, 8)?,
        written: u64_at(b, 16)?,
        node: u64_at(b, 24)?,
        origin,
        opcode: u32_at(b, 48)?,
        payload: b[HEAD..HEAD + len].to_vec(),
    }))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A ring taken over from a dead daemon.
#[derive(Debug)]
pub struct Reopened {
    pub store: ReplyStore,
    /// The answers young enough to keep, oldest first, with their age.
    pub answers: Vec<(KeptReply, Duration)>,
    /// Slots refused (torn or foreign).
    pub refused: usize,
}

/// The ring in its memfd.
#[derive(Debug)]
pub struct ReplyStore {
    file: File,
    next: u64,
}

impl ReplyStore {
    /// A new, empty ring (sparse: only written slots take memory).
    pub fn create() -> io::Result<ReplyStore> {
        // SAFETY: a valid NUL-terminated name; memfd_create returns a new
        // descriptor that we own, or -1.
        let fd = unsafe { libc::memfd_create(c"mxfs-replies".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(SLOTS * SLOT as u64)?;
        Ok(ReplyStore { file, next: 1 })
    }

    /// Take over the ring a dead daemon left, with the answers in it
    /// younger than `keep`.
    pub fn open(fd: OwnedFd, keep: Duration) -> io::Result<Reopened> {
        let file = File::from(fd);
        if file.metadata()?.len() != SLOTS * SLOT as u64 {
            return Err(io::Error::other("not a reply store (size)"));
        }
        let now = unix_now();
        let (mut kept, mut refused, mut last) = (Vec::new(), 0, 0);
        let mut buf = vec![0; SLOT];
        for i in 0..SLOTS {
            file.read_exact_at(&mut buf, i * SLOT as u64)?;
            match decode_slot(&buf) {
                Ok(Some(r)) => {
                    last = last.max(r.seq);
                    let age = Duration::from_secs(now.saturating_sub(r.written));
                    if age < keep {
                        kept.push((r, age));
                    }
                }
                Ok(None) => {}
                Err(_) => refused += 1,
            }
        }
        kept.sort_by_key(|(r, _)| r.seq);
        Ok(Reopened {
            store: ReplyStore {
                file,
                next: last + 1,
            },
            answers: kept,
            refused,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Keep the answer `payload` to `opcode` from `node`, `origin`.
    /// False if it was not kept (too large, or the write failed).
    pub fn put(&mut self, node: u64, origin: Origin, opcode: u32, payload: &[u8]) -> bool {
        let r = KeptReply {
            seq: self.next,
            written: unix_now(),
            node,
            origin,
            opcode,
            payload: payload.to_vec(),
        };
        let Some(mut b) = encode_slot(&r) else {
            return false;
        };
        b.resize(SLOT, 0);
        let at = (self.next % SLOTS) * SLOT as u64;
        self.next += 1;
        self.file.write_all_at(&b, at).is_ok()
    }
}

#[cfg(test)]
/// Fuzz entry point: decoding never panics, and what decodes encodes
/// back to the same bytes.
pub fn fuzz_decode(b: &[u8]) -> bool {
    match decode_slot(b) {
        Ok(Some(r)) => {
            let again = encode_slot(&r).expect("a decoded slot encodes");
            assert_eq!(again[..], b[..again.len()], "not canonical");
            true
        }
        _ => false,
    }
}

#[cfg(test)]
/// Seeds for the fuzz target: a slot of each size class.
pub fn fuzz_seeds() -> Vec<Vec<u8>> {
    [0usize, 4, 300, MAX_PAYLOAD]
        .iter()
        .map(|n| {
            encode_slot(&KeptReply {
                seq: 7,
                written: 1_700_000_000,
                node: 0x1234,
                origin: Origin {
                    session: 99,
                    unique: 42,
                },
                opcode: 15,
                payload: vec![0x5a; *n],
            })
            .expect("fits")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(seq: u64, n: usize) -> KeptReply {
        KeptReply {
            seq,
            written: unix_now(),
            node: 5,
            origin: Origin {
                session: 0xabc,
                unique: seq * 2,
            },
            opcode: 15,
            payload: vec![seq as u8; n],
        }
    }

    #[test]
    fn slots_round_trip_and_refuse_damage() {
        for n in [0, 1, 200, MAX_PAYLOAD] {
            let r = reply(3, n);
            let mut b = encode_slot(&r).unwrap();
            assert_eq!(decode_slot(&b).unwrap(), Some(r.clone()));
            b.resize(SLOT, 0);
            assert_eq!(decode_slot(&b).unwrap(), Some(r.clone()));
            // every flipped byte of the slot's used part is refused
            for i in 0..HEAD + n {
                let mut c = b.clone();
                c[i] ^= 0x10;
                assert!(decode_slot(&c).is_err(), "byte {i} of {n}");
            }
        }
        assert_eq!(encode_slot(&reply(1, MAX_PAYLOAD + 1)), None);
        assert_eq!(decode_slot(&[0; SLOT]).unwrap(), None);
        assert!(decode_slot(&[1, 2, 3]).is_err());
        let mut no_origin = reply(1, 1);
        no_origin.origin = Origin::default();
        assert!(decode_slot(&encode_slot(&no_origin).unwrap()).is_err());
    }

    #[test]
    fn a_restart_reads_back_the_young_answers_in_order() {
        let mut s = ReplyStore::create().unwrap();
        for i in 1..=5u64 {
            assert!(s.put(5, reply(i, 0).origin, 15, &[i as u8; 8]));
        }
        assert!(!s.put(5, reply(9, 0).origin, 15, &[0; MAX_PAYLOAD + 1]));
        // a torn slot
        s.file
            .write_all_at(b"MXRC garbage", 3 * SLOT as u64)
            .unwrap();
        let fd = s.fd().try_clone_to_owned().unwrap();
        drop(s);
        let Reopened {
            store: mut s2,
            answers: kept,
            refused,
        } = ReplyStore::open(fd, Duration::from_secs(120)).unwrap();
        assert_eq!(refused, 1);
        let seqs: Vec<u64> = kept.iter().map(|(r, _)| r.seq).collect();
        assert_eq!(seqs, [1, 2, 4, 5]);
        assert_eq!(kept[0].0.payload, [1; 8]);
        assert!(kept.iter().all(|(_, age)| *age < Duration::from_secs(5)));
        // it goes on after the highest
        assert_eq!(s2.next, 6);
        assert!(s2.put(5, reply(6, 0).origin, 15, b"x"));
        // nothing is young enough for a zero keep
        let fd = s2.fd().try_clone_to_owned().unwrap();
        let none = ReplyStore::open(fd, Duration::ZERO).unwrap();
        assert!(none.answers.is_empty());
        // a file of another size is not a store
        let f = ReplyStore::create().unwrap();
        f.file.set_len(4096).unwrap();
        assert!(ReplyStore::open(f.file.into(), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn fuzz_seeds_decode() {
        for s in fuzz_seeds() {
            assert!(fuzz_decode(&s));
        }
    }
}
