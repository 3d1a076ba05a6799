//! The Noise handshake and the encrypted record layer under a peer link.
//!
//! On TCP everything is a *record*: a 2-byte big-endian length and that
//! many bytes of Noise message.  The two handshake messages are records;
//! after them every record is one Noise transport message (ciphertext and
//! a 16-byte tag), at most 65535 bytes as Noise allows.  A wire frame (up
//! to [`MAX_FRAME`]) is cut into as many records as it needs; the
//! plaintexts of the records, in order, are the byte stream of wire
//! frames, and [`Message::decode_frame`] finds the frame boundaries in it.
//!
//! Nonces are implicit (one counter per direction, starting at 0), which
//! TCP's ordering allows; a dropped, replayed, reordered or altered record
//! fails authentication.  snow's *stateless* transport state takes the
//! nonce as an argument and `&self`, so the two directions can live in
//! different tasks sharing one `Arc` and no lock.
//!
//! The decoder ([`Opener`]) is fed untrusted bytes.  It never panics, and
//! it bounds what it holds: one partial record (at most 2 + 65535 bytes),
//! one record's plaintext, and less than one wire frame of plaintext
//! between frames (the frame's length prefix is checked against
//! `MAX_FRAME` by the wire decoder as soon as it is seen).  After any error
//! it stays failed: the stream is out of step and must be dropped.

use std::collections::VecDeque;
use std::sync::Arc;

use snow::{Builder, HandshakeState, StatelessTransportState};

use crate::wire::{Message, WireError, MAX_FRAME};

/// The Noise protocol of a peer link; see the module doc of `peer` for why.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Start of the prologue; the volume UUID follows.  Bumped if the record
/// layer or the link setup ever changes incompatibly (the wire version,
/// negotiated in `Hello`, is separate).
pub const PROLOGUE_LABEL: &[u8] = b"mxfs peer link 1\0";
/// Bytes of a record's length prefix.
pub const RECORD_HEADER: usize = 2;
/// Largest Noise message, hence largest record body.
pub const MAX_RECORD: usize = 65535;
/// Bytes of the AEAD tag in each transport record.
pub const TAG_LEN: usize = 16;
/// Most plaintext bytes in one transport record.
pub const MAX_CHUNK: usize = MAX_RECORD - TAG_LEN;
/// A transport record carries at least one byte: an empty one is never
/// sent, so a shorter length is an error rather than a way to spin us.
const MIN_RECORD: usize = TAG_LEN + 1;
/// Handshake records: with our empty payloads each is an ephemeral key
/// (32 bytes) and a tag (16).  Anything much larger is not ours, and the
/// limit keeps an unauthenticated client from making us read 64 KiB.
pub const MAX_HANDSHAKE_RECORD: usize = 256;
/// Length of the handshake hash (BLAKE2s).
pub const HASH_LEN: usize = 32;
/// Keep at most this much spare buffer capacity between frames, so one
/// 2 MiB frame does not pin 2 MiB per link for the life of the link.
const KEEP_CAPACITY: usize = 256 << 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record length {0} is below the {MIN_RECORD}-byte minimum")]
    Length(usize),
    #[error("record failed authentication (wrong key, altered, replayed or out of order)")]
    Decrypt,
    #[error("record nonces exhausted")]
    NonceExhausted,
    #[error("encryption failed")]
    Encrypt,
    #[error("the stream failed earlier and is out of step")]
    Poisoned,
    #[error("bad frame inside the records: {0}")]
    Wire(#[from] WireError),
}

/// The prologue both sides mix into the handshake: a peer of another
/// volume (or of another protocol) computes a different transcript and
/// fails the first message.
pub fn prologue(volume: &[u8; 16]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_LABEL.len() + volume.len());
    p.extend_from_slice(PROLOGUE_LABEL);
    p.extend_from_slice(volume);
    p
}

fn builder<'a>(psk: &'a [u8; 32], prologue: &'a [u8]) -> Result<Builder<'a>, snow::Error> {
    Builder::new(NOISE_PARAMS.parse()?)
        .psk(0, psk)?
        .prologue(prologue)
}

/// Handshake state of the connecting side.
pub fn initiator(psk: &[u8; 32], volume: &[u8; 16]) -> Result<HandshakeState, snow::Error> {
    builder(psk, &prologue(volume))?.build_initiator()
}

/// Handshake state of the accepting side.
pub fn responder(psk: &[u8; 32], volume: &[u8; 16]) -> Result<HandshakeState, snow::Error> {
    builder(psk, &prologue(volume))?.build_responder()
}

/// The transport state and the handshake hash of a finished handshake.
pub fn finish(
    hs: HandshakeState,
) -> Result<(StatelessTransportState, [u8; HASH_LEN]), snow::Error> {
    let mut hash = [0u8; HASH_LEN];
    let h = hs.get_handshake_hash();
    // BLAKE2s gives 32 bytes; copy what is there rather than assume.
    let n = h.len().min(HASH_LEN);
    hash[..n].copy_from_slice(&h[..n]);
    Ok((hs.into_stateless_transport_mode()?, hash))
}

/// Both ends of a session, handshaken in memory: for tests and the fuzz
/// entry.  Fixed ephemeral keys make it deterministic when asked.
#[cfg(test)]
pub fn session_pair(
    psk: &[u8; 32],
    volume: &[u8; 16],
    fixed_keys: bool,
) -> Result<(StatelessTransportState, StatelessTransportState), snow::Error> {
    let p = prologue(volume);
    let (ki, kr) = ([0x11u8; 32], [0x22u8; 32]);
    let mut bi = builder(psk, &p)?;
    let mut br = builder(psk, &p)?;
    if fixed_keys {
        bi = bi.fixed_ephemeral_key_for_testing_only(&ki);
        br = br.fixed_ephemeral_key_for_testing_only(&kr);
    }
    let mut i = bi.build_initiator()?;
    let mut r = br.build_responder()?;
    let mut msg = [0u8; MAX_HANDSHAKE_RECORD];
    let mut payload = [0u8; MAX_HANDSHAKE_RECORD];
    let n = i.write_message(&[], &mut msg)?;
    r.read_message(&msg[..n], &mut payload)?;
    let n = r.write_message(&[], &mut msg)?;
    i.read_message(&msg[..n], &mut payload)?;
    Ok((
        i.into_stateless_transport_mode()?,
        r.into_stateless_transport_mode()?,
    ))
}

/// The sending direction: cuts frames into records and encrypts them.
pub struct Sealer {
    cipher: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Sealer {
    pub fn new(cipher: Arc<StatelessTransportState>) -> Self {
        Sealer { cipher, nonce: 0 }
    }

    /// Append the records carrying `frame` to `out`.
    pub fn seal(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        for piece in frame.chunks(MAX_CHUNK) {
            // Noise reserves the last nonce; reaching it would take 2^64
            // records, but a wrapped nonce would repeat a keystream.
            if self.nonce == u64::MAX {
                return Err(RecordError::NonceExhausted);
            }
            let start = out.len();
            out.resize(start + RECORD_HEADER + piece.len() + TAG_LEN, 0);
            let n = self
                .cipher
                .write_message(self.nonce, piece, &mut out[start + RECORD_HEADER..])
                .map_err(|_| RecordError::Encrypt)?;
            let len = u16::try_from(n).map_err(|_| RecordError::Encrypt)?;
            out[start..start + RECORD_HEADER].copy_from_slice(&len.to_be_bytes());
            out.truncate(start + RECORD_HEADER + n);
            self.nonce += 1;
        }
        Ok(())
    }
}

/// The receiving direction: untrusted bytes in, authenticated messages out.
pub struct Opener {
    cipher: Arc<StatelessTransportState>,
    nonce: u64,
    /// A partial record, its length prefix included.
    pending: Vec<u8>,
    /// One record's plaintext (scratch).
    plain: Vec<u8>,
    /// Decrypted bytes not yet making a whole frame.
    frames: Vec<u8>,
    poisoned: bool,
}

impl Opener {
    pub fn new(cipher: Arc<StatelessTransportState>) -> Self {
        Opener {
            cipher,
            nonce: 0,
            pending: Vec::new(),
            plain: vec![0; MAX_RECORD],
            frames: Vec::new(),
            poisoned: false,
        }
    }

    /// True when no partial record or frame is buffered: an end of stream
    /// here is a clean close, anywhere else a truncation.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.frames.is_empty()
    }

    /// Consume `input`, appending every message it completes to `out`.
    /// Messages completed before an error are still appended.
    pub fn push(&mut self, input: &[u8], out: &mut VecDeque<Message>) -> Result<(), RecordError> {
        if self.poisoned {
            return Err(RecordError::Poisoned);
        }
        let r = self.push_inner(input, out);
        if r.is_err() {
            self.poisoned = true;
            // nothing buffered is worth keeping
            self.pending = Vec::new();
            self.frames = Vec::new();
        }
        r
    }

    fn push_inner(
        &mut self,
        mut input: &[u8],
        out: &mut VecDeque<Message>,
    ) -> Result<(), RecordError> {
        while !input.is_empty() {
            if self.pending.len() < RECORD_HEADER {
                let take = (RECORD_HEADER - self.pending.len()).min(input.len());
                self.pending.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.pending.len() == RECORD_HEADER {
                    // checked as soon as it is whole, before any body byte
                    let len = record_len(&self.pending);
                    if len < MIN_RECORD {
                        return Err(RecordError::Length(len));
                    }
                }
                continue;
            }
            let total = RECORD_HEADER + record_len(&self.pending);
            // Fast path: a whole record straight from the input, no copy.
            if self.pending.len() == RECORD_HEADER && input.len() >= total - RECORD_HEADER {
                let (body, rest) = input.split_at(total - RECORD_HEADER);
                self.open(body, out)?;
                self.pending.clear();
                input = rest;
                continue;
            }
            let take = (total - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == total {
                let body = std::mem::take(&mut self.pending);
                let r = self.open(&body[RECORD_HEADER..], out);
                // keep the allocation for the next partial record
                self.pending = body;
                self.pending.clear();
                r?;
            }
        }
        Ok(())
    }

    /// Decrypt one record body and decode the frames it completes.
    fn open(&mut self, body: &[u8], out: &mut VecDeque<Message>) -> Result<(), RecordError> {
        if self.nonce == u64::MAX {
            return Err(RecordError::NonceExhausted);
        }
        let n = self
            .cipher
            .read_message(self.nonce, body, &mut self.plain)
            .map_err(|_| RecordError::Decrypt)?;
        self.nonce += 1;
        self.frames.extend_from_slice(&self.plain[..n]);
        let mut used = 0;
        while let Some((m, len)) = Message::decode_frame(&self.frames[used..])? {
            out.push_back(m);
            used += len;
        }
        // Invariant: what stays is a prefix of one frame, so less than
        // MAX_FRAME (decode_frame refused a larger length prefix).
        self.frames.drain(..used);
        debug_assert!(self.frames.len() < MAX_FRAME);
        if self.frames.is_empty() && self.frames.capacity() > KEEP_CAPACITY {
            self.frames = Vec::new();
        }
        Ok(())
    }
}

fn record_len(header: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([header[0], header[1]]))
}

/// Fuzz entry: feed arbitrary bytes to the receive path of an established
/// session.  Never panics (that is what a fuzzer checks).
///
/// If the first byte is odd, the rest is sealed by the session's valid
/// sender first, so the fuzzer reaches the wire decoder behind the AEAD,
/// and the records are fed in pieces of `first >> 1` bytes (1..=127) to
/// exercise partial records.  Otherwise the bytes are fed raw, as a
/// hostile peer without the key would send them.  Keys are fixed, so
/// every input replays the same way.
#[cfg(test)]
pub fn fuzz_decode(bytes: &[u8]) {
    let Ok((tx, rx)) = session_pair(&[0x42; 32], &[0x17; 16], true) else {
        return;
    };
    let mut opener = Opener::new(Arc::new(rx));
    let mut out = VecDeque::new();
    match bytes.split_first() {
        Some((&mode, rest)) if mode & 1 == 1 => {
            let mut sealer = Sealer::new(Arc::new(tx));
            let mut records = Vec::new();
            if sealer.seal(rest, &mut records).is_err() {
                return;
            }
            let step = usize::from(mode >> 1).max(1);
            for piece in records.chunks(step) {
                if opener.push(piece, &mut out).is_err() {
                    break;
                }
                out.clear();
            }
        }
        _ => {
            let _ = opener.push(bytes, &mut out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FileOp, Heartbeat};
    use proptest::prelude::*;

    fn pair() -> (Sealer, Opener) {
        let (a, b) = session_pair(&[7; 32], &[9; 16], false).expect("handshake");
        (Sealer::new(Arc::new(a)), Opener::new(Arc::new(b)))
    }

    fn file_op(len: usize) -> Message {
        Message::FileOp(FileOp {
            owner_epoch: 3,
            request_id: 77,
            origin: Default::default(),
            opcode: 9,
            payload: (0..len).map(|i| (i * 31 % 251) as u8).collect(),
        })
    }

    /// Largest FileOp payload that still fits a frame: prefix, version,
    /// type, epoch, request id, origin, opcode, payload length.
    const MAX_PAYLOAD: usize = MAX_FRAME - (4 + 1 + 1 + 8 + 8 + 16 + 4 + 4);

    fn feed_in_pieces(
        o: &mut Opener,
        bytes: &[u8],
        cuts: &[usize],
    ) -> Result<Vec<Message>, RecordError> {
        let mut out = VecDeque::new();
        let mut pos = 0;
        for &c in cuts {
            let end = (pos + c).min(bytes.len());
            o.push(&bytes[pos..end], &mut out)?;
            pos = end;
        }
        o.push(&bytes[pos..], &mut out)?;
        Ok(out.into_iter().collect())
    }

    #[test]
    fn largest_frame_takes_several_records_and_round_trips() {
        let (mut s, mut o) = pair();
        let m = file_op(MAX_PAYLOAD);
        let frame = m.encode().expect("fits");
        assert_eq!(frame.len(), MAX_FRAME);
        let mut rec = Vec::new();
        s.seal(&frame, &mut rec).expect("seal");
        let records = MAX_FRAME.div_ceil(MAX_CHUNK);
        assert!(records > 30);
        assert_eq!(rec.len(), MAX_FRAME + records * (RECORD_HEADER + TAG_LEN));
        assert_eq!(feed_in_pieces(&mut o, &rec, &[]).expect("open"), vec![m]);
        assert!(o.is_idle());
    }

    #[test]
    fn short_record_length_is_refused_at_once() {
        let (_, mut o) = pair();
        let mut out = VecDeque::new();
        assert_eq!(o.push(&[0, 16], &mut out), Err(RecordError::Length(16)));
        assert_eq!(o.push(&[0, 40], &mut out), Err(RecordError::Poisoned));
        let (_, mut o) = pair();
        assert_eq!(o.push(&[0, 0, 1, 2], &mut out), Err(RecordError::Length(0)));
    }

    #[test]
    fn replayed_or_reordered_record_fails() {
        let (mut s, mut o) = pair();
        let mut a = Vec::new();
        let mut b = Vec::new();
        let hb = |counter| {
            Message::Heartbeat(Heartbeat {
                node_id: 1,
                generation: 1,
                counter,
                owner_epoch: 1,
            })
        };
        s.seal(&hb(1).encode().unwrap(), &mut a).unwrap();
        s.seal(&hb(2).encode().unwrap(), &mut b).unwrap();
        let mut out = VecDeque::new();
        // b before a: b was sealed under nonce 1, the opener expects 0
        assert_eq!(o.push(&b, &mut out), Err(RecordError::Decrypt));
        let (mut s, mut o) = pair();
        a.clear();
        s.seal(&hb(1).encode().unwrap(), &mut a).unwrap();
        o.push(&a, &mut out).unwrap();
        assert_eq!(out.pop_front(), Some(hb(1)));
        assert_eq!(o.push(&a, &mut out), Err(RecordError::Decrypt));
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_frame_prefix_is_refused_from_the_first_record() {
        let (mut s, mut o) = pair();
        let mut rec = Vec::new();
        // a 4-byte prefix claiming more than MAX_FRAME, then a little
        let mut bogus = ((MAX_FRAME as u32) * 2).to_be_bytes().to_vec();
        bogus.extend_from_slice(&[1, 3, 0, 0]);
        s.seal(&bogus, &mut rec).unwrap();
        let mut out = VecDeque::new();
        assert!(matches!(
            o.push(&rec, &mut out),
            Err(RecordError::Wire(WireError::TooLarge(_)))
        ));
    }

    #[test]
    fn sessions_of_other_keys_or_volumes_do_not_interoperate() {
        // A handshake across different PSKs or prologues fails.
        let p1 = prologue(&[1; 16]);
        let p2 = prologue(&[2; 16]);
        for (k2, pr2) in [([8u8; 32], &p1), ([7u8; 32], &p2)] {
            let mut i = builder(&[7; 32], &p1).unwrap().build_initiator().unwrap();
            let mut r = builder(&k2, pr2).unwrap().build_responder().unwrap();
            let mut msg = [0u8; MAX_HANDSHAKE_RECORD];
            let mut pl = [0u8; MAX_HANDSHAKE_RECORD];
            let n = i.write_message(&[], &mut msg).unwrap();
            assert!(n <= MAX_HANDSHAKE_RECORD);
            assert!(r.read_message(&msg[..n], &mut pl).is_err());
        }
    }

    #[test]
    fn fuzz_entry_smoke() {
        fuzz_decode(&[]);
        fuzz_decode(&[0]);
        fuzz_decode(&[0, 0x40, 1, 2, 3]);
        let frame = file_op(1000).encode().unwrap();
        for mode in [1u8, 3, 255] {
            let mut v = vec![mode];
            v.extend_from_slice(&frame);
            fuzz_decode(&v);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Bytes from someone without the key: errors or silence, never
        /// a message, never a panic.
        #[test]
        fn arbitrary_bytes_never_yield_a_message(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            cut in 0usize..4096,
        ) {
            let (_, mut o) = pair();
            let cut = cut.min(bytes.len());
            let r = feed_in_pieces(&mut o, &bytes, &[cut]);
            prop_assert!(r.map(|m| m.is_empty()).unwrap_or(true));
        }

        /// The fuzz entry itself, both modes (raw and sealed).
        #[test]
        fn fuzz_entry_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            fuzz_decode(&bytes);
        }

        /// One flipped byte anywhere in valid records: never the message,
        /// never another message.
        #[test]
        fn mutated_records_are_refused(
            len in 0usize..150_000,
            at in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let (mut s, mut o) = pair();
            let mut rec = Vec::new();
            s.seal(&file_op(len).encode().unwrap(), &mut rec).unwrap();
            let i = at.index(rec.len());
            rec[i] ^= flip;
            match feed_in_pieces(&mut o, &rec, &[]) {
                Err(_) => {}
                // a longer record length just waits for more bytes
                Ok(m) => prop_assert!(m.is_empty()),
            }
        }
    }

    proptest! {
        // Frames of up to 2 MiB are encrypted and decrypted in a debug
        // build here: few cases, each of them large.
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Record and frame boundaries do not matter: any frame size, any
        /// way the TCP stream is cut, the same messages come out.
        #[test]
        fn chunking_round_trips(
            sizes in proptest::collection::vec(
                prop_oneof![0usize..200, 65_400usize..65_700, 0usize..=MAX_PAYLOAD], 1..4),
            cuts in proptest::collection::vec(1usize..100_000, 0..8),
        ) {
            let (mut s, mut o) = pair();
            let msgs: Vec<Message> = sizes.iter().map(|&n| file_op(n)).collect();
            let mut rec = Vec::new();
            for m in &msgs {
                s.seal(&m.encode().unwrap(), &mut rec).unwrap();
            }
            prop_assert_eq!(feed_in_pieces(&mut o, &rec, &cuts).unwrap(), msgs);
            prop_assert!(o.is_idle());
        }
    }
}
