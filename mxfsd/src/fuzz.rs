//! Bounded-time fuzzing of every decoder of untrusted input (issue 4:
//! "the wire decoders each have a fuzz target that runs in CI for a
//! bounded time without a crash").
//!
//! The project builds with stable Rust only, so libFuzzer (cargo-fuzz,
//! nightly sanitizer flags) is out; AFL-style crates need their own
//! compiler wrapper.  What the decoders need is modest: they are pure
//! functions of a byte slice, so a small mutation fuzzer without coverage
//! feedback, seeded with valid encodings made by the encoders, reaches
//! them well.  It is written here (a few hundred lines, no dependency)
//! rather than taken from a crate: `arbitrary` builds structured values,
//! which proptest already does in each module's own tests; the point here
//! is the opposite, bytes that no encoder would make.
//!
//! Each target ([`TARGETS`]) has seeds (valid encodings), a decoding
//! function and a size bound.  One run of a target, for `MXFS_FUZZ_SECS`
//! seconds (default 3), runs the empty input and every seed, then loops:
//! now and then random bytes, otherwise a corpus entry with one to eight
//! stacked mutations (bit flips; bytes set to 0/0x7f/0x80/0xff and other
//! interesting values, or to random ones; small additions; 2/4/8-byte
//! big- or little-endian fields set to boundary values; length-field
//! tweaks, a 1/2/4-byte field set to the bytes that follow it, plus or
//! minus a few; insertion, deletion, duplication and overwriting of
//! ranges; truncation; splicing with another corpus entry).  The only
//! feedback is crude: an input the target accepts may join the corpus
//! (at most [`MAX_CORPUS`] entries), so the walk stays near valid inputs.
//!
//! The PRNG is seeded from `MXFS_FUZZ_SEED` (decimal or 0x-hex) or from
//! the clock, and each target's stream from that seed and the target's
//! name, so a seed replays a target's inputs.  A panic in a decoder (or in
//! a property check below) fails the test, printing the target, the seed,
//! the execution number and the input in hex; the input is also saved,
//! and `MXFS_FUZZ_INPUT=HEX` (or `@FILE` holding the hex) runs that one
//! input instead of fuzzing.  A single execution that takes over
//! [`HANG_SECS`] seconds aborts the process with the same report: a
//! decoder that loops forever is a denial of service too.
//!
//! Properties checked beyond "no panic":
//! - peer frames ([`Message`]): an accepted frame re-encodes to the same
//!   bytes (the format is canonical), and the streaming [`FrameBuffer`]
//!   fed in pieces yields the same messages and errors as one-shot
//!   decoding;
//! - announcements and forwarded file operations: their `fuzz_*` entry
//!   points check byte-exact re-encoding themselves;
//! - lockstate slots: an accepted slot re-encodes to bytes that decode to
//!   the same value.  Not to the same bytes: the decoder ignores the
//!   padding after each body, which the encoder writes as zeros;
//! - SCSI READ KEYS / READ RESERVATION answers: as lockstate (value round
//!   trip; READ RESERVATION ignores its reserved bytes);
//! - the module's private requests (fiemap name, extents, birth time,
//!   fallocate): an accepted value re-encodes to the same bytes, a fiemap
//!   name to the same numbers (leading zeros parse);
//! - the XFS reader, netlink and the peer record layer have no encoder
//!   for what they decode (XFS is written by mkfs and the kernel, netlink
//!   messages by the module, records are checked by their AEAD): there,
//!   accepted values are checked against the invariants the decoders
//!   promise (a superblock's geometry, extents inside the filesystem).
//!
//! Targets that sit behind a checksum or MAC (announcements, lockstate
//! slots, v5 XFS metadata) also decode the input with the checksum
//! recomputed, so mutations reach the field parsers.
//!
//! The peer record target does what `peer::fuzz_decode` does on a Noise
//! session made once (that entry point handshakes on every call, which
//! limits it to about a thousand executions a second), and calls the
//! entry point itself on one input in 128.
//!
//! The tests are `#[ignore]`d, so a plain `cargo test` stays fast; `cargo
//! xtask test` runs them in release mode after the unit tests
//! (`cargo test --release -p mxfsd fuzz:: -- --ignored`), sharing that
//! step's build.  Release code has no overflow checks, so an arithmetic
//! overflow wraps there instead of panicking; the same command without
//! `--release` catches those too, at a fraction of the speed.  The
//! `seeds_are_accepted`, `harness_smoke` and regression tests run always.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use snow::StatelessTransportState;
use std::time::{Duration, Instant, SystemTime};

use crate::dlm::plock::Kind;
use crate::dlm::{LockId, Mode};
use crate::identity::fnv1a64;
use crate::lockstate::{self, Slot};
use crate::netlink;
use crate::uapi::*;
use crate::wire::announce::{self, AnnouncedRole, Announcement};
use crate::wire::fileop::{self, *};
use crate::wire::*;
use crate::xfs::{ReadAt, Superblock, Volume};

/// Default seconds per target.
const DEFAULT_SECS: f64 = 3.0;
/// One execution longer than this is reported as a hang.
const HANG_SECS: u64 = 10;
/// Most inputs kept per target (seeds included).
const MAX_CORPUS: usize = 512;

// ---------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------

/// splitmix64: tiny, fast, and good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform-ish in 0..n (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    /// A length biased towards small values, at most `max`.
    fn small(&mut self, max: usize) -> usize {
        let cap = [4usize, 16, 64, 256][self.below(4)].min(max);
        1 + self.below(cap.max(1))
    }
}

const INTERESTING8: [u8; 14] = [
    0, 1, 2, 7, 8, 16, 32, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xfe, 0xff,
];
const INTERESTING: [u64; 30] = [
    0,
    1,
    2,
    3,
    4,
    8,
    16,
    31,
    32,
    63,
    64,
    127,
    128,
    255,
    256,
    511,
    512,
    1024,
    4095,
    4096,
    32767,
    32768,
    65535,
    65536,
    1 << 20,
    2 << 20,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    u64::MAX,
];

/// Write the low `width` bytes of `v` at `at`, big- or little-endian.
fn put_int(v: &mut [u8], at: usize, width: usize, val: u64, big: bool) {
    let bytes = if big {
        val.to_be_bytes()[8 - width..].to_vec()
    } else {
        val.to_le_bytes()[..width].to_vec()
    };
    v[at..at + width].copy_from_slice(&bytes);
}

fn get_int(v: &[u8], at: usize, width: usize, big: bool) -> u64 {
    let mut b = [0u8; 8];
    if big {
        b[8 - width..].copy_from_slice(&v[at..at + width]);
        u64::from_be_bytes(b)
    } else {
        b[..width].copy_from_slice(&v[at..at + width]);
        u64::from_le_bytes(b)
    }
}

/// One to eight stacked mutations of `v`.
fn mutate(rng: &mut Rng, v: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
    let n = 1 << rng.below(4);
    for _ in 0..n {
        let len = v.len();
        // headers are where most fields are: half the time, the first
        // 256 bytes
        let pos = if rng.one_in(2) {
            rng.below(len.min(256))
        } else {
            rng.below(len)
        };
        match rng.below(15) {
            0 if len > 0 => v[pos] ^= 1 << rng.below(8),
            1 if len > 0 => v[pos] = INTERESTING8[rng.below(INTERESTING8.len())],
            2 if len > 0 => v[pos] = rng.next() as u8,
            3 if len > 0 => {
                let d = rng.small(16) as u8;
                v[pos] = if rng.one_in(2) {
                    v[pos].wrapping_add(d)
                } else {
                    v[pos].wrapping_sub(d)
                };
            }
            4 | 5 => {
                // a 2-, 4- or 8-byte field set to a boundary value, or
                // nudged by a few
                let w = [2, 4, 8][rng.below(3)];
                if len >= w {
                    let at = rng.below(len - w + 1);
                    let big = rng.one_in(2);
                    let val = if rng.one_in(2) {
                        let i = INTERESTING[rng.below(INTERESTING.len())];
                        if rng.one_in(4) {
                            i.wrapping_neg()
                        } else {
                            i
                        }
                    } else {
                        let d = rng.small(16) as u64;
                        let cur = get_int(v, at, w, big);
                        if rng.one_in(2) {
                            cur.wrapping_add(d)
                        } else {
                            cur.wrapping_sub(d)
                        }
                    };
                    put_int(v, at, w, val, big);
                }
            }
            6 => {
                // length-field tweak: the bytes after the field, +-4
                let w = [1, 2, 4][rng.below(3)];
                if len >= w {
                    let at = rng.below(len - w + 1);
                    let rest = (len - at - w) as i64;
                    let val = (rest + rng.below(9) as i64 - 4).max(0) as u64;
                    put_int(v, at, w, val, rng.one_in(2));
                }
            }
            7 => {
                // insert random bytes, or one byte repeated
                let k = rng.small(64);
                let fill = rng.next() as u8;
                let bytes: Vec<u8> = if rng.one_in(2) {
                    (0..k).map(|_| rng.next() as u8).collect()
                } else {
                    vec![fill; k]
                };
                let at = rng.below(len + 1);
                v.splice(at..at, bytes);
            }
            8 if len > 0 => {
                let k = rng.small(len - pos);
                v.drain(pos..pos + k);
            }
            9 if len > 0 => {
                // duplicate a range somewhere else
                let k = rng.small(len - pos);
                let chunk = v[pos..pos + k].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            10 if len > 1 => {
                // overwrite a range with a copy of another
                let k = rng.small(len - pos);
                let to = rng.below(len - k + 1);
                v.copy_within(pos..pos + k, to);
            }
            11 => v.truncate(rng.below(len + 1)),
            12 | 13 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if rng.one_in(2) {
                    // splice: our head, its tail
                    let from = rng.below(other.len() + 1);
                    v.truncate(pos);
                    v.extend_from_slice(&other[from..]);
                } else if !other.is_empty() {
                    // insert a chunk of it
                    let from = rng.below(other.len());
                    let k = rng.small(other.len() - from);
                    let at = rng.below(len + 1);
                    v.splice(at..at, other[from..from + k].iter().copied());
                }
            }
            _ => {
                // set a byte to the value of another
                if len > 1 {
                    v[pos] = v[rng.below(len)];
                }
            }
        }
        v.truncate(max_len);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        s.len().is_multiple_of(2),
        "MXFS_FUZZ_INPUT: odd number of hex digits"
    );
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("MXFS_FUZZ_INPUT: not hex"))
        .collect()
}

fn env_seed() -> u64 {
    match std::env::var("MXFS_FUZZ_SEED") {
        Ok(s) => {
            let s = s.trim();
            let v = match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            };
            v.unwrap_or_else(|_| panic!("MXFS_FUZZ_SEED={s}: not a number"))
        }
        Err(_) => {
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
        }
    }
}

fn env_secs() -> f64 {
    std::env::var("MXFS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| *s >= 0.0)
        .unwrap_or(DEFAULT_SECS)
}

/// A fuzz target: seeds, a size bound, and what to run.  `exec` returns
/// whether the input was accepted (for the corpus); it panics on a bug.
pub struct Target {
    pub name: &'static str,
    pub max_len: usize,
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub exec: fn(&[u8]) -> bool,
}

/// What one run did.
pub struct Stats {
    pub execs: u64,
    pub secs: f64,
    pub seed: u64,
}

fn report(t: &Target, seed: u64, exec: u64, input: &[u8], what: &str) -> String {
    let path = std::env::temp_dir().join(format!("mxfs-fuzz-{}-{seed:x}-{exec}.hex", t.name));
    let saved = match std::fs::write(&path, hex(input)) {
        Ok(()) => format!("saved to {}", path.display()),
        Err(e) => format!("not saved ({e})"),
    };
    format!(
        "fuzz {}: {what} at execution {exec}, seed {seed:#x}\n\
         input ({} bytes, {saved}): {}\n\
         replay: MXFS_FUZZ_INPUT=@{} cargo test --release -p mxfsd fuzz::fuzz_{} -- --ignored",
        t.name,
        input.len(),
        hex(input),
        path.display(),
        t.name,
    )
}

/// Fuzz `t` for `secs` seconds (or a fixed number of executions, for the
/// smoke test) from `seed`.  Panics, with a replayable report, when the
/// target panics.
pub fn run(t: &Target, seed: u64, secs: f64, max_execs: Option<u64>) -> Stats {
    let mut rng = Rng(seed ^ fnv1a64(t.name.as_bytes()));
    let seeds = (t.seeds)();
    let mut corpus = seeds.clone();
    let n_seeds = corpus.len();
    if n_seeds == 0 {
        return Stats {
            execs: 0,
            secs: 0.0,
            seed,
        };
    }
    let budget = Duration::from_secs_f64(secs);
    let done = AtomicU64::new(0);
    let current = Mutex::new(Vec::new());
    let (stop, stopped) = mpsc::channel::<()>();
    let start = Instant::now();
    let mut execs = 0u64;
    let mut input = Vec::new();
    std::thread::scope(|s| {
        // The watchdog: a hung execution aborts the process with a report
        // (a test cannot be interrupted otherwise).
        let (done, current) = (&done, &current);
        s.spawn(move || {
            let mut last = (0, Instant::now());
            loop {
                match stopped.recv_timeout(Duration::from_millis(500)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let n = done.load(Ordering::Relaxed);
                if n != last.0 {
                    last = (n, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(HANG_SECS) {
                    let input = current.lock().map(|c| c.clone()).unwrap_or_default();
                    let what = format!("HANG (one execution over {HANG_SECS} s)");
                    eprintln!("{}", report(t, seed, n, &input, &what));
                    std::process::abort();
                }
            }
        });
        loop {
            if max_execs.is_some_and(|m| execs >= m)
                || (max_execs.is_none() && execs.is_multiple_of(16) && start.elapsed() >= budget)
            {
                break;
            }
            input.clear();
            let i = execs as usize;
            if i == 0 {
                // the empty input
            } else if i <= n_seeds {
                input.extend_from_slice(&seeds[i - 1]);
            } else if rng.one_in(64) {
                let n = rng.below(t.max_len.min(4096) + 1);
                input.extend((0..n).map(|_| rng.next() as u8));
            } else {
                // half the time an original seed, so that the corpus
                // drifting towards whatever is accepted most (short
                // inputs, usually) does not starve the rest
                let from = if rng.one_in(2) {
                    &seeds[rng.below(n_seeds)]
                } else {
                    &corpus[rng.below(corpus.len())]
                };
                input.extend_from_slice(from);
                mutate(&mut rng, &mut input, &corpus, t.max_len);
            }
            if let Ok(mut c) = current.lock() {
                c.clone_from(&input);
            }
            let r = panic::catch_unwind(AssertUnwindSafe(|| (t.exec)(&input)));
            execs += 1;
            done.store(execs, Ordering::Relaxed);
            match r {
                Ok(true) if i > n_seeds => {
                    if corpus.len() < MAX_CORPUS {
                        corpus.push(input.clone());
                    } else if corpus.len() > n_seeds && rng.one_in(8) {
                        let victim = n_seeds + rng.below(MAX_CORPUS - n_seeds);
                        corpus[victim].clone_from(&input);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    drop(stop);
                    // the panic message itself was printed by the hook
                    panic!("{}", report(t, seed, execs, &input, "PANIC"));
                }
            }
        }
        drop(stop);
    });
    Stats {
        execs,
        secs: start.elapsed().as_secs_f64(),
        seed,
    }
}

/// The `#[test]` body: replay `MXFS_FUZZ_INPUT`, or fuzz for the
/// configured time and print the counts.
fn fuzz_target(name: &str) {
    let t = TARGETS
        .iter()
        .find(|t| t.name == name)
        .expect("a fuzz target of that name");
    if let Ok(s) = std::env::var("MXFS_FUZZ_INPUT") {
        let input = match s.strip_prefix('@') {
            Some(path) => unhex(&std::fs::read_to_string(path).expect("MXFS_FUZZ_INPUT file")),
            None => unhex(&s),
        };
        let accepted = (t.exec)(&input);
        println!(
            "fuzz {name}: replayed {} bytes, no panic ({})",
            input.len(),
            if accepted { "accepted" } else { "refused" }
        );
        return;
    }
    if (t.seeds)().is_empty() {
        println!("fuzz {name}: SKIPPED (no seeds: see above)");
        return;
    }
    let st = run(t, env_seed(), env_secs(), None);
    println!(
        "fuzz {name}: {} execs in {:.1} s, seed {:#x} ({:.0} execs/s)",
        st.execs,
        st.secs,
        st.seed,
        st.execs as f64 / st.secs.max(1e-9)
    );
}

// ---------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------

pub const TARGETS: &[Target] = &[
    Target {
        name: "wire_frame",
        max_len: 4096,
        seeds: wire_seeds,
        exec: wire_frame,
    },
    Target {
        name: "wire_stream",
        max_len: 8192,
        seeds: stream_seeds,
        exec: wire_stream,
    },
    Target {
        name: "announce",
        max_len: 1024,
        seeds: announce_seeds,
        exec: announce_exec,
    },
    Target {
        name: "fileop_request",
        max_len: 8192,
        seeds: request_seeds,
        exec: |b| fileop::fuzz_decode_request(b).is_some(),
    },
    Target {
        name: "fileop_reply",
        max_len: 8192,
        seeds: reply_seeds,
        exec: |b| fileop::fuzz_decode_reply(b).is_some(),
    },
    Target {
        name: "peer_record",
        max_len: 4096,
        seeds: record_seeds,
        exec: record_exec,
    },
    Target {
        name: "lockstate_slot",
        max_len: 8192,
        seeds: slot_seeds,
        exec: slot_exec,
    },
    Target {
        name: "netlink",
        max_len: 2048,
        seeds: netlink_seeds,
        exec: netlink_exec,
    },
    Target {
        name: "xfs_superblock",
        max_len: 8192,
        seeds: sb_seeds,
        exec: sb_exec,
    },
    Target {
        name: "xfs_image",
        max_len: 64 << 10,
        seeds: image_seeds,
        exec: image_exec,
    },
    Target {
        name: "client_keep",
        max_len: 2048,
        seeds: crate::fuse_client::keep::fuzz_seeds,
        exec: crate::fuse_client::keep::fuzz_decode,
    },
    Target {
        name: "reply_store",
        max_len: 2048,
        seeds: crate::cluster::reply_store::fuzz_seeds,
        exec: crate::cluster::reply_store::fuzz_decode,
    },
    Target {
        name: "device_answers",
        max_len: 1024,
        seeds: device_seeds,
        exec: device_exec,
    },
    Target {
        name: "private_requests",
        max_len: 1024,
        seeds: crate::fuse_client::private::fuzz_seeds,
        exec: crate::fuse_client::private::fuzz_decode,
    },
];

// ---- peer frames ----

fn lock_id() -> LockId {
    LockId {
        node: 0x0102_0304_0506_0708,
        local: 42,
    }
}

fn messages() -> Vec<Message> {
    let lock = lock_id();
    let res = b"inode/131".to_vec();
    let req = request_values().remove(0);
    vec![
        Message::Hello(Hello {
            node_id: 77,
            node_uuid: [1; 16],
            volume_uuid: [2; 16],
            tcp_port: 7600,
            min_version: 1,
            max_version: 1,
            nonce: [3; 32],
            hostname: "node-a".into(),
        }),
        Message::Auth(Auth { mac: [9; 32] }),
        Message::Heartbeat(Heartbeat {
            node_id: 1,
            generation: 2,
            counter: 3,
            owner_epoch: 4,
        }),
        Message::Membership(Membership {
            view: 5,
            owner: 10,
            owner_epoch: 6,
            members: vec![10, 20, 30],
        }),
        Message::LockRequest(LockRequest {
            lock,
            resource: res.clone(),
            mode: Mode::PR,
            noqueue: true,
        }),
        Message::LockConvert(LockRequest {
            lock,
            resource: res.clone(),
            mode: Mode::EX,
            noqueue: false,
        }),
        Message::LockGrant(LockGrant {
            lock,
            resource: res.clone(),
            mode: Mode::CW,
        }),
        Message::LockBlocking(LockBlocking {
            lock,
            resource: res.clone(),
            granted: Mode::PR,
            requested: Mode::EX,
        }),
        Message::LockUnlock(LockRef {
            lock,
            resource: res.clone(),
        }),
        Message::LockCancel(LockRef {
            lock,
            resource: res.clone(),
        }),
        Message::LockCancelled(LockCancelled {
            lock,
            resource: res.clone(),
            mode: None,
        }),
        Message::LockCancelled(LockCancelled {
            lock,
            resource: res.clone(),
            mode: Some(Mode::NL),
        }),
        Message::LockError(LockError {
            lock,
            resource: res.clone(),
            code: LockErrorCode::NotMaster,
        }),
        Message::LockRecover(LockRecover {
            view: 7,
            locks: vec![
                RecordedLock {
                    lock,
                    resource: res,
                    granted: Some(Mode::PR),
                    requested: Some(Mode::EX),
                    noqueue: false,
                },
                RecordedLock {
                    lock: LockId { node: 1, local: 2 },
                    resource: b"x".to_vec(),
                    granted: None,
                    requested: Some(Mode::CW),
                    noqueue: true,
                },
            ],
        }),
        Message::LockRecoverDone { view: 7 },
        Message::PlockRequest(PlockRequest {
            req: lock,
            resource: b"plock:131".to_vec(),
            flock: false,
            owner: 0xfeed,
            pid: 4321,
            op: PlockOp::Lock {
                kind: Kind::Write,
                wait: true,
            },
            start: 0,
            end: 31,
        }),
        Message::PlockRequest(PlockRequest {
            req: lock,
            resource: b"flock:131".to_vec(),
            flock: true,
            owner: 0xfeed,
            pid: 4321,
            op: PlockOp::Release,
            start: 0,
            end: u64::MAX,
        }),
        Message::PlockAnswer(PlockAnswer {
            req: lock,
            resource: b"plock:131".to_vec(),
            result: PlockResult::Conflict(PlockHolder {
                node: 10,
                owner: 11,
                pid: 12,
                kind: Kind::Read,
                start: 5,
                end: 9,
            }),
        }),
        Message::PlockRecover(PlockRecover {
            view: 7,
            resource: b"plock:131".to_vec(),
            flock: false,
            held: vec![PlockHeld {
                owner: 1,
                pid: 2,
                kind: Kind::Write,
                start: 0,
                end: u64::MAX,
            }],
        }),
        Message::FileOp(req.to_file_op(3, 99).expect("a file op")),
        Message::FileOpReply(
            reply_values()[1]
                .to_file_op_reply(3, 99)
                .expect("a file op reply"),
        ),
        Message::Goodbye {
            reason: "unmounting".into(),
        },
    ]
}

fn frames() -> Vec<Vec<u8>> {
    messages()
        .iter()
        .map(|m| m.encode().expect("a seed message encodes"))
        .collect()
}

fn wire_seeds() -> Vec<Vec<u8>> {
    frames()
}

fn wire_frame(b: &[u8]) -> bool {
    // the body decoder on its own, too
    if let Ok(m) = Message::decode_body(b) {
        let again = m.encode().expect("a decoded message encodes");
        assert_eq!(&again[4..], b, "peer message encoding is not canonical");
    }
    match Message::decode_frame(b) {
        Ok(Some((m, used))) => {
            let again = m.encode().expect("a decoded message encodes");
            assert_eq!(again, b[..used], "peer frame encoding is not canonical");
            true
        }
        Ok(None) | Err(_) => false,
    }
}

fn stream_seeds() -> Vec<Vec<u8>> {
    let f = frames();
    let all: Vec<u8> = f.concat();
    let mut seeds = vec![];
    for step in [0u8, 1, 3, 7, 64, 255] {
        let mut s = vec![step];
        s.extend_from_slice(&all[..all.len().min(3000)]);
        seeds.push(s);
    }
    let mut two = vec![5];
    two.extend_from_slice(&f[0]);
    two.extend_from_slice(&f[2]);
    seeds.push(two);
    seeds
}

/// First byte: the size of the pieces the stream arrives in (0: all at
/// once); the rest: the stream.  The buffer must give what one-shot
/// decoding of the whole stream gives.
fn wire_stream(b: &[u8]) -> bool {
    let Some((&step, stream)) = b.split_first() else {
        return false;
    };
    let mut expect = Vec::new();
    let mut rest = stream;
    let expect_err = loop {
        match Message::decode_frame(rest) {
            Ok(Some((m, used))) => {
                expect.push(m);
                rest = &rest[used..];
            }
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    let mut fb = FrameBuffer::new();
    let mut got = Vec::new();
    let mut err = false;
    let step = if step == 0 {
        stream.len().max(1)
    } else {
        step.into()
    };
    'feed: for piece in stream.chunks(step) {
        fb.push(piece);
        loop {
            match fb.next_message() {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(_) => {
                    err = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(got, expect, "streamed and one-shot decoding differ");
    assert_eq!(err, expect_err, "streamed and one-shot errors differ");
    !expect.is_empty()
}

// ---- announcements ----

fn announce_seeds() -> Vec<Vec<u8>> {
    const KEY: [u8; 32] = [0x5a; 32]; // the key of announce::fuzz_decode
    let mut seeds = vec![];
    for (i, role) in [
        AnnouncedRole::Joining,
        AnnouncedRole::Client,
        AnnouncedRole::Owner,
    ]
    .into_iter()
    .enumerate()
    {
        let node_uuid = [0x11 + i as u8; 16];
        let a = Announcement {
            volume_uuid: [0x22; 16],
            node_uuid,
            node_id: crate::identity::node_id(&uuid::Uuid::from_bytes(node_uuid))
                .expect("non-zero id"),
            tcp_port: 7600 + i as u16,
            incarnation: 0x1122_3344_5566_7788,
            sequence: i as u64,
            role,
            owner_epoch: 3,
            hostname: ["a", "node-b.example", "ünïcode"][i].into(),
        };
        let d = announce::encode(&a, &KEY).expect("a seed announcement encodes");
        // the body alone: fuzz_decode seals it with the key
        seeds.push(d[..d.len() - announce::MAC_LEN].to_vec());
        seeds.push(d);
    }
    seeds
}

fn announce_exec(b: &[u8]) -> bool {
    announce::fuzz_decode(b);
    announce::peek(b).is_ok()
}

// ---- forwarded file operations ----

fn handle(n: u8) -> Handle {
    Handle {
        handle_type: 0x81,
        bytes: vec![n; 12],
    }
}

fn request_values() -> Vec<FileRequest> {
    let creds = Creds {
        uid: 1000,
        gid: 1000,
        pid: 4242,
        groups: vec![4, 24, 1000],
    };
    let t = Timespec {
        sec: 1_700_000_000,
        nsec: 5,
    };
    let ops = vec![
        Op::Lookup {
            parent: handle(1),
            name: b"file.txt".to_vec(),
        },
        Op::Forget {
            handle: handle(2),
            nlookup: 3,
        },
        Op::Getattr {
            handle: handle(2),
            fh: Some(9),
        },
        Op::Setattr {
            handle: handle(2),
            fh: None,
            set: SetAttr {
                mode: Some(0o644),
                uid: Some(1),
                gid: None,
                size: Some(4096),
                atime: Some(TimeSet::Now),
                mtime: Some(TimeSet::At(t)),
                ctime: Some(t),
            },
        },
        Op::Mknod {
            parent: handle(1),
            name: b"fifo".to_vec(),
            mode: 0o10644,
            umask: 0o22,
            rdev: 0,
        },
        Op::Symlink {
            parent: handle(1),
            name: b"link".to_vec(),
            target: b"../some/where".to_vec(),
        },
        Op::Rename {
            parent: handle(1),
            name: b"a".to_vec(),
            newparent: handle(3),
            newname: b"b".to_vec(),
            flags: 1,
        },
        Op::Link {
            handle: handle(2),
            newparent: handle(1),
            newname: b"hard".to_vec(),
        },
        Op::Write {
            fh: 5,
            offset: 8192,
            data: b"hello, world\n".repeat(8),
            write_flags: 0,
        },
        Op::Release {
            fh: 5,
            flags: 0o2,
            flush: true,
        },
        Op::Readdir {
            fh: 6,
            offset: 0,
            size: 4096,
        },
        Op::Setxattr {
            handle: handle(2),
            name: b"user.test".to_vec(),
            value: vec![0xab; 40],
            flags: 0,
            position: 0,
        },
        Op::Getxattr {
            handle: handle(2),
            name: b"user.test".to_vec(),
            size: 0,
        },
        Op::Create {
            parent: handle(1),
            name: b"new".to_vec(),
            mode: 0o100644,
            umask: 0o22,
            flags: 0o101,
        },
        Op::CopyFileRange {
            fh_in: 1,
            offset_in: 2,
            fh_out: 3,
            offset_out: 4,
            len: 5,
            flags: 0,
        },
        Op::Tmpfile {
            parent: handle(1),
            mode: 0o100600,
            umask: 0o77,
            flags: 0o2,
        },
        Op::Fiemap {
            fh: 5,
            start: 0,
            length: u64::MAX,
            flags: 1,
            max_extents: 128,
        },
        Op::Birthtime { handle: handle(2) },
    ];
    ops.into_iter()
        .map(|op| FileRequest {
            creds: creds.clone(),
            op,
        })
        .collect()
}

fn attr() -> Attr {
    let t = Timespec { sec: -1, nsec: 999 };
    Attr {
        ino: 131,
        size: 1 << 40,
        blocks: 8,
        atime: t,
        mtime: t,
        ctime: t,
        mode: 0o100644,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        generation: 7,
    }
}

fn reply_values() -> Vec<FileReply> {
    vec![
        FileReply::Ok,
        FileReply::Entry {
            handle: handle(4),
            attr: attr(),
        },
        FileReply::Attr(attr()),
        FileReply::Data(b"contents".repeat(10)),
        FileReply::Written(4096),
        FileReply::Opened { fh: 12 },
        FileReply::Created {
            handle: handle(5),
            attr: attr(),
            fh: 13,
        },
        FileReply::Dirents(vec![
            Dirent {
                ino: 128,
                next: 1,
                kind: 4,
                name: b".".to_vec(),
            },
            Dirent {
                ino: 131,
                next: 2,
                kind: 8,
                name: b"lockstate".to_vec(),
            },
        ]),
        FileReply::Statfs(Statfs {
            blocks: 20480,
            bfree: 100,
            bavail: 90,
            files: 64,
            ffree: 60,
            bsize: 4096,
            namelen: 255,
            frsize: 4096,
        }),
        FileReply::XattrSize(40),
        FileReply::Offset(-1),
        FileReply::Extents(vec![
            Extent {
                logical: 0,
                physical: 1 << 20,
                length: 4096,
                flags: 0,
            },
            Extent {
                logical: 1 << 20,
                physical: 1 << 30,
                length: 1 << 16,
                flags: 0x801, // UNWRITTEN | LAST
            },
        ]),
        FileReply::Birthtime(Timespec {
            sec: 1_700_000_000,
            nsec: 5,
        }),
        FileReply::Errno(2),
    ]
}

fn request_seeds() -> Vec<Vec<u8>> {
    request_values()
        .iter()
        .map(|r| {
            let p = r.encode_payload().expect("a seed request encodes");
            [&r.opcode().to_be_bytes()[..], &p].concat()
        })
        .collect()
}

fn reply_seeds() -> Vec<Vec<u8>> {
    reply_values()
        .iter()
        .map(|r| {
            let p = r.encode_payload().expect("a seed reply encodes");
            [&(r.errno() as u32).to_be_bytes()[..], &p].concat()
        })
        .collect()
}

// ---- peer records ----

fn record_seeds() -> Vec<Vec<u8>> {
    use crate::peer::record::{session_pair, Sealer};
    let f = frames();
    let mut seeds = vec![];
    // odd first byte: the rest is sealed by the entry point, in pieces
    for step in [1u8, 7, 255] {
        let mut s = vec![step];
        s.extend_from_slice(&f[0]);
        s.extend_from_slice(&f[4]);
        seeds.push(s);
    }
    // even first byte: records as a peer with the session keys sends them
    // (the same fixed keys as peer::fuzz_decode)
    if let Ok((tx, _)) = session_pair(&[0x42; 32], &[0x17; 16], true) {
        let mut sealer = Sealer::new(Arc::new(tx));
        let mut out = Vec::new();
        if sealer.seal(&f[2], &mut out).is_ok() && out.first().is_some_and(|b| b % 2 == 0) {
            seeds.push(out.clone());
            if sealer.seal(&f[3], &mut out).is_ok() {
                seeds.push(out);
            }
        }
    }
    seeds
}

/// The session of `peer::fuzz_decode` (same fixed keys), made once:
/// that entry point runs a Noise handshake per call, about 1 ms, which
/// would leave a few thousand executions per run.
fn record_session() -> Option<&'static (Arc<StatelessTransportState>, Arc<StatelessTransportState>)>
{
    static PAIR: OnceLock<Option<(Arc<StatelessTransportState>, Arc<StatelessTransportState>)>> =
        OnceLock::new();
    PAIR.get_or_init(|| {
        crate::peer::record::session_pair(&[0x42; 32], &[0x17; 16], true)
            .ok()
            .map(|(tx, rx)| (Arc::new(tx), Arc::new(rx)))
    })
    .as_ref()
}

/// What `peer::fuzz_decode` does (odd first byte: the rest is sealed and
/// fed in pieces of `first >> 1` bytes; else the bytes are fed raw), on a
/// session made once, and checked: the messages that come out of sealed
/// records are those that one-shot decoding of the frames gives, and the
/// stream fails exactly when that decoding does.  The entry point itself
/// runs too, on one input in 128.
fn record_exec(b: &[u8]) -> bool {
    use crate::peer::record::{Opener, Sealer};
    if fnv1a64(b).is_multiple_of(128) {
        crate::peer::record::fuzz_decode(b);
    }
    let Some((tx, rx)) = record_session() else {
        return false;
    };
    let mut opener = Opener::new(rx.clone());
    let mut out = VecDeque::new();
    match b.split_first() {
        Some((&mode, rest)) if mode & 1 == 1 => {
            let mut records = Vec::new();
            if Sealer::new(tx.clone()).seal(rest, &mut records).is_err() {
                return false;
            }
            let mut expect = Vec::new();
            let mut left = rest;
            let expect_err = loop {
                match Message::decode_frame(left) {
                    Ok(Some((m, used))) => {
                        expect.push(m);
                        left = &left[used..];
                    }
                    Ok(None) => break false,
                    Err(_) => break true,
                }
            };
            let mut err = false;
            for piece in records.chunks(usize::from(mode >> 1).max(1)) {
                if opener.push(piece, &mut out).is_err() {
                    err = true;
                    break;
                }
            }
            let got: Vec<Message> = out.into_iter().collect();
            assert_eq!(
                got, expect,
                "messages through records differ from the frames'"
            );
            assert_eq!(err, expect_err, "record stream and frame errors differ");
            !got.is_empty()
        }
        _ => opener.push(b, &mut out).is_ok() && !out.is_empty(),
    }
}

// ---- lockstate slots ----

const VOLUME: [u8; 16] = [0x3c; 16];

fn slot_values() -> Vec<(Slot, u32)> {
    let node_uuid = [0x44; 16];
    vec![
        (
            Slot::Header(lockstate::Header {
                slot_size: 512,
                owner_epoch: 3,
                owner_node: 77,
                secret: [0x99; 32],
                created_ns: 1_700_000_000_000_000_000,
            }),
            0,
        ),
        (
            Slot::Heartbeat(lockstate::Heartbeat {
                node_id: fnv1a64(&node_uuid),
                node_uuid,
                generation: 2,
                counter: 1000,
                timestamp_ns: 1,
                state: lockstate::HeartbeatState::Member,
                owner_epoch: 3,
            }),
            7,
        ),
        (
            Slot::Lock(lockstate::LockRecord {
                name: b"inode/131".to_vec(),
                holder: 77,
                lock_id: 5,
                mode: Mode::PW,
                epoch: 3,
            }),
            65 + 100,
        ),
        (
            Slot::Lock(lockstate::LockRecord {
                name: vec![b'x'; lockstate::MAX_NAME],
                holder: 78,
                lock_id: 6,
                mode: Mode::EX,
                epoch: 4,
            }),
            lockstate::TOTAL_SLOTS - 1,
        ),
    ]
}

fn slot_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = slot_values()
        .iter()
        .map(|(s, i)| lockstate::encode(s, *i, &VOLUME, 512).expect("a seed slot encodes"))
        .collect();
    let mut big = slot_values().remove(0).0;
    if let Slot::Header(h) = &mut big {
        h.slot_size = 4096;
    }
    seeds.push(lockstate::encode(&big, 0, &VOLUME, 4096).expect("a 4 KiB header encodes"));
    seeds
}

/// The lockstate CRC (CRC-32C of the slot with its CRC field as zero).
fn fix_slot_crc(b: &mut [u8]) {
    let c = crc32c::crc32c(&b[..12]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    let c = crc32c::crc32c_append(c, &b[16..]);
    b[12..16].copy_from_slice(&c.to_le_bytes());
}

fn slot_exec(b: &[u8]) -> bool {
    // As read from the device; index and volume as the slot claims, so
    // those checks pass and the rest is reached.
    let index = b
        .get(8..12)
        .map_or(0, |i| u32::from_le_bytes([i[0], i[1], i[2], i[3]]));
    let mut volume = [0u8; 16];
    if let Some(v) = b.get(16..32) {
        volume.copy_from_slice(v);
    }
    let _ = lockstate::decode(b, index, &volume);
    // Resized to a slot size and with its CRC right, as a key holder with
    // a buggy encoder could write it.
    let size = b.len().clamp(512, 65536).next_power_of_two();
    let mut s = b.to_vec();
    s.resize(size, 0);
    fix_slot_crc(&mut s);
    match lockstate::decode(&s, index, &volume) {
        Ok(slot) => {
            let again = lockstate::encode(&slot, index, &volume, size as u32)
                .expect("a decoded slot encodes");
            let back =
                lockstate::decode(&again, index, &volume).expect("a re-encoded slot decodes");
            assert_eq!(back, slot, "lockstate slot does not round-trip");
            true
        }
        Err(_) => false,
    }
}

// ---- netlink ----

const FAMILY: u16 = 0x1a;
const TOKEN: u64 = 0x1234_5678_9abc_def0;
const NL_UUID: [u8; 16] = [0x66; 16];

fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

fn nlmsg(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = ((16 + payload.len()) as u32).to_ne_bytes().to_vec();
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(payload);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

fn netlink_seeds() -> Vec<Vec<u8>> {
    let mut shutdown = vec![MXFS_CMD_SHUTDOWN, MXFS_GENL_VERSION, 0, 0];
    shutdown.extend(nla(MXFS_A_TOKEN, &TOKEN.to_ne_bytes()));
    shutdown.extend(nla(MXFS_A_VOLUME_UUID, &NL_UUID));
    shutdown.extend(nla(MXFS_A_REASON, b"unmount\0"));
    let mut all = vec![MXFS_CMD_RECOVERY_START, MXFS_GENL_VERSION, 0, 0];
    all.extend(nla(MXFS_A_ROLE, &MXFS_ROLE_OWNER.to_ne_bytes()));
    all.extend(nla(MXFS_A_EPOCH, &9u64.to_ne_bytes()));
    all.extend(nla(MXFS_A_NODE_ID, &77u64.to_ne_bytes()));
    all.extend(nla(MXFS_A_ERROR, &0u32.to_ne_bytes()));
    all.extend(nla(MXFS_A_LOWER_PATH, b"/mnt/lower\0"));
    all.extend(nla(MXFS_A_MAX + 5, b"unknown"));
    let mut file_lock = vec![MXFS_CMD_FILE_LOCK, MXFS_GENL_VERSION, 0, 0];
    file_lock.extend(nla(MXFS_A_TOKEN, &TOKEN.to_ne_bytes()));
    file_lock.extend(nla(MXFS_A_VOLUME_UUID, &NL_UUID));
    file_lock.extend(nla(MXFS_A_LOCK_ID, &3u64.to_ne_bytes()));
    file_lock.extend(nla(MXFS_A_LOCK_OP, &MXFS_FILE_LOCK_LOCK.to_ne_bytes()));
    file_lock.extend(nla(MXFS_A_LOCK_FLAGS, &MXFS_FILE_LOCK_WAIT.to_ne_bytes()));
    file_lock.extend(nla(MXFS_A_LOCK_TYPE, &1u32.to_ne_bytes()));
    file_lock.extend(nla(MXFS_A_LOCK_PID, &321u32.to_ne_bytes()));
    file_lock.extend(nla(MXFS_A_INODE, &131u64.to_ne_bytes()));
    file_lock.extend(nla(MXFS_A_LOCK_OWNER, &99u64.to_ne_bytes()));
    file_lock.extend(nla(MXFS_A_OFFSET, &0u64.to_ne_bytes()));
    file_lock.extend(nla(MXFS_A_LOCK_END, &(i64::MAX as u64).to_ne_bytes()));
    let ack = nlmsg(2, 5, &[0u8; 20]);
    let err = nlmsg(2, 6, &(-22i32).to_ne_bytes());
    vec![
        nlmsg(FAMILY, 7, &file_lock),
        nlmsg(FAMILY, 1, &shutdown),
        nlmsg(FAMILY, 2, &all),
        ack.clone(),
        err,
        [ack, nlmsg(FAMILY, 3, &shutdown), nlmsg(3, 4, &[])].concat(),
        shutdown[4..].to_vec(), // a bare attribute stream
    ]
}

fn netlink_exec(b: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(msgs) = netlink::split_messages(b) {
        for m in &msgs {
            if let Ok(Some(inc)) = netlink::decode_message(m, FAMILY) {
                accepted = true;
                if let netlink::Incoming::Command { attrs, .. } = inc {
                    let _ = netlink::check_shutdown(&attrs, TOKEN, &NL_UUID);
                    let session = netlink::Session {
                        token: TOKEN,
                        uuid: NL_UUID,
                    };
                    let _ = crate::file_locks::decode_call(&attrs, &session);
                }
            }
        }
    }
    if let Ok(attrs) = netlink::split_attrs(b) {
        accepted |= netlink::decode_attrs(attrs).is_ok();
    }
    accepted
}

// ---- XFS superblock ----

/// Geometry of a superblock made in code.
struct Geo {
    v5: bool,
    block_log: u8,
    sect_log: u8,
    inode_log: u8,
    ag_blocks: u32,
    ag_count: u32,
    dir_log: u8,
    meta_uuid: bool,
}

fn sb_bytes(g: &Geo) -> Vec<u8> {
    let bs = 1u32 << g.block_log;
    let isz = 1u16 << g.inode_log;
    let inopb = (bs / u32::from(isz)) as u16;
    let inopblog = inopb.trailing_zeros() as u8;
    let agblklog = (32 - (g.ag_blocks - 1).leading_zeros()) as u8;
    let sect = 1usize << g.sect_log;
    let mut s = vec![0u8; sect];
    let dblocks = u64::from(g.ag_count) * u64::from(g.ag_blocks) - 1;
    s[0..4].copy_from_slice(b"XFSB");
    s[4..8].copy_from_slice(&bs.to_be_bytes());
    s[8..16].copy_from_slice(&dblocks.to_be_bytes());
    s[32..48].copy_from_slice(&[0x5a; 16]);
    let root: u64 = 8 << inopblog;
    s[56..64].copy_from_slice(&root.to_be_bytes());
    s[84..88].copy_from_slice(&g.ag_blocks.to_be_bytes());
    s[88..92].copy_from_slice(&g.ag_count.to_be_bytes());
    let version: u16 = if g.v5 { 0xb4a5 } else { 0xb4a4 };
    s[100..102].copy_from_slice(&version.to_be_bytes());
    s[102..104].copy_from_slice(&(sect as u16).to_be_bytes());
    s[104..106].copy_from_slice(&isz.to_be_bytes());
    s[106..108].copy_from_slice(&inopb.to_be_bytes());
    s[120] = g.block_log;
    s[121] = g.sect_log;
    s[122] = g.inode_log;
    s[123] = inopblog;
    s[124] = agblklog;
    s[192] = g.dir_log;
    if g.v5 {
        let mut incompat: u32 = 1; // FTYPE
        if g.meta_uuid {
            incompat |= 1 << 2;
            s[248..264].copy_from_slice(&[0xa5; 16]);
        }
        s[216..220].copy_from_slice(&incompat.to_be_bytes());
    } else {
        s[200..204].copy_from_slice(&0x0000_028au32.to_be_bytes()); // ftype, attr2, ...
    }
    fix_sb_crc(&mut s);
    s
}

/// Recompute a v5 superblock's CRC (over its sector, stored LE at 224).
fn fix_sb_crc(s: &mut [u8]) {
    if s.len() < 228 {
        return;
    }
    let sect = usize::from(u16::from_be_bytes([s[102], s[103]])).clamp(228, s.len());
    fix_xfs_crc(&mut s[..sect], 224);
}

/// XFS metadata CRC: CRC-32C with the field as zero, little-endian.
fn fix_xfs_crc(b: &mut [u8], off: usize) {
    if b.len() < off + 4 {
        return;
    }
    let c = crc32c::crc32c(&b[..off]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    let c = crc32c::crc32c_append(c, &b[off + 4..]);
    b[off..off + 4].copy_from_slice(&c.to_le_bytes());
}

fn sb_seeds() -> Vec<Vec<u8>> {
    let g = |v5, block_log, sect_log, inode_log, ag_blocks, ag_count, dir_log, meta_uuid| Geo {
        v5,
        block_log,
        sect_log,
        inode_log,
        ag_blocks,
        ag_count,
        dir_log,
        meta_uuid,
    };
    let mut seeds: Vec<Vec<u8>> = [
        g(true, 12, 9, 9, 5120, 4, 0, false),
        g(true, 16, 12, 11, 64, 4, 0, false),
        g(false, 9, 9, 8, 64, 8, 3, false),
        g(true, 10, 9, 9, 1000, 2, 2, true),
        g(false, 12, 12, 8, 100_000, 1, 0, false),
    ]
    .iter()
    .map(sb_bytes)
    .collect();
    if let Some(images) = images() {
        for img in images {
            seeds.push(img.bytes[..img.regions[0].1].to_vec());
        }
    }
    seeds
}

fn check_sb(sb: &Superblock, b: &[u8]) {
    // what Superblock::decode promises of what it accepts
    assert!(sb.ino_to_byte(sb.root_ino).is_ok(), "root inode outside");
    let dbs = sb.dir_block_size();
    assert!(
        dbs >= sb.block_size && dbs <= 65536,
        "directory block of {dbs} bytes accepted (block size {}, dir block log {})",
        sb.block_size,
        sb.dir_block_log
    );
    assert!(sb.dblocks.checked_mul(u64::from(sb.block_size)).is_some());
    // the geometry conversions, on numbers from the input
    let mut nums = vec![
        0,
        1,
        u64::MAX,
        sb.root_ino,
        sb.dblocks,
        sb.dblocks.saturating_sub(1),
    ];
    nums.extend(b.chunks_exact(8).take(8).map(|c| {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        u64::from_be_bytes(a)
    }));
    for n in nums {
        if let Ok(off) = sb.fsb_to_byte(n) {
            assert!(off < sb.dblocks << sb.block_log, "block past the end");
        }
        if let Ok(off) = sb.ino_to_byte(n) {
            assert!(off < sb.dblocks << sb.block_log, "inode past the end");
        }
    }
}

fn sb_exec(b: &[u8]) -> bool {
    if let Ok(sb) = Superblock::decode(b) {
        check_sb(&sb, b);
    }
    let mut s = b.to_vec();
    fix_sb_crc(&mut s);
    match Superblock::decode(&s) {
        Ok(sb) => {
            check_sb(&sb, &s);
            true
        }
        Err(_) => false,
    }
}

// ---- XFS image: superblock, inodes, directories, extent lists ----

/// The metadata of a real image that a walk of it reads: the regions
/// (device offset, length) and their bytes, concatenated.  A fuzz input
/// is one byte choosing the image, then bytes for its regions (missing
/// bytes are zeros); the rest of the device reads as zeros.
struct Image {
    size: u64,
    regions: Vec<(u64, usize)>,
    bytes: Vec<u8>,
}

/// A device made of a few regions, zeros elsewhere.
struct SparseDev<'a> {
    size: u64,
    regions: Vec<(u64, &'a [u8])>,
}

impl ReadAt for SparseDev<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.size)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.fill(0);
        for (at, bytes) in &self.regions {
            let r_end = at + bytes.len() as u64;
            if r_end <= offset || *at >= end {
                continue;
            }
            let from = offset.max(*at);
            let to = end.min(r_end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
        }
        Ok(())
    }
}

/// Records what a walk reads.
struct Recorder<'a> {
    file: &'a std::fs::File,
    reads: std::cell::RefCell<Vec<(u64, usize)>>,
}

impl ReadAt for Recorder<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.reads.borrow_mut().push((offset, buf.len()));
        self.file.read_exact_at(buf, offset)
    }
}

/// Walk what the daemon walks, and more: every directory reachable in a
/// few steps, the inodes of their first entries, the extents of files.
fn walk<D: ReadAt>(dev: D) -> bool {
    let Ok(vol) = Volume::open(dev) else {
        return false;
    };
    let sb = vol.superblock().clone();
    let _ = vol.lookup_path(&[".mxfs", "lockstate"]);
    let Ok(root) = vol.root() else {
        return true;
    };
    let mut queue = VecDeque::from([(root, 0)]);
    let mut visited = 0;
    while let Some((ino, depth)) = queue.pop_front() {
        visited += 1;
        if visited > 24 {
            break;
        }
        if ino.is_dir() {
            let Ok(entries) = vol.read_dir(&ino) else {
                continue;
            };
            for e in entries.iter().skip(2).take(6) {
                if depth < 3 {
                    if let Ok(child) = vol.read_inode(e.ino) {
                        queue.push_back((child, depth + 1));
                    }
                }
            }
        } else if let Ok(ext) = vol.extents(&ino) {
            let end = sb.dblocks << sb.block_log;
            for (i, e) in ext.iter().enumerate() {
                let len = e.len_blocks << sb.block_log;
                assert!(
                    e.disk_byte_offset
                        .checked_add(len)
                        .is_some_and(|x| x <= end),
                    "extent {e:?} past the end of the filesystem"
                );
                if i > 0 {
                    let p = ext[i - 1];
                    assert!(
                        e.file_offset_blocks >= p.file_offset_blocks + p.len_blocks,
                        "extents overlap"
                    );
                }
            }
        }
    }
    true
}

fn mkfs_image(dir: &std::path::Path, name: &str, extra: &[&str], entries: usize) -> Option<Image> {
    use std::process::Command;
    let src = dir.join(format!("{name}-data"));
    std::fs::write(&src, vec![0x6d; 40 << 10]).ok()?;
    // lockstate first, so a walk of the first entries reaches it
    let mut proto = format!(
        "mxfs-fuzz\n0 0\nd--755 0 0\n.mxfs d--755 0 0\nlockstate ---644 0 0 {}\n",
        src.display()
    );
    for i in 0..entries {
        proto.push_str(&format!(
            "file-with-a-longish-name-{i} ---644 0 0 {}\n",
            src.display()
        ));
    }
    proto.push_str("$\nsmall ---644 0 0 ");
    proto.push_str(&format!("{}\n$\n", src.display()));
    let proto_path = dir.join(format!("{name}-proto"));
    std::fs::write(&proto_path, proto).ok()?;
    let img = dir.join(format!("{name}.img"));
    let out = Command::new("mkfs.xfs")
        .arg("-q")
        .arg("-f")
        .arg("-p")
        .arg(&proto_path)
        .args(extra)
        .arg("-d")
        .arg(format!("file,name={},size=80m,agcount=4", img.display()))
        // xfsprogs refuses filesystems under 300 MB unless run by fstests
        .env("TEST_DIR", dir)
        .env("TEST_DEV", &img)
        .env("QA_CHECK_FS", "1")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "fuzz: mkfs.xfs {extra:?} failed, image {name} not used: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let file = std::fs::File::open(&img).ok()?;
    let size = file.metadata().ok()?.len();
    let rec = Recorder {
        file: &file,
        reads: Default::default(),
    };
    assert!(walk(&rec), "the walk of a fresh image {name} failed");
    let mut reads = rec.reads.into_inner();
    reads.sort();
    reads.dedup();
    // merge overlapping and touching reads
    let mut regions: Vec<(u64, usize)> = vec![];
    for (off, len) in reads {
        match regions.last_mut() {
            Some((o, l)) if off <= *o + *l as u64 => {
                *l = (*l).max((off - *o) as usize + len);
            }
            _ => regions.push((off, len)),
        }
    }
    let mut bytes = vec![];
    for (off, len) in &regions {
        let mut b = vec![0u8; *len];
        file.read_exact_at(&mut b, *off).ok()?;
        bytes.extend_from_slice(&b);
    }
    Some(Image {
        size,
        regions,
        bytes,
    })
}

/// Images made by mkfs.xfs from protofiles (no mount needed): v5 with
/// short-form directories, v5 and v4 with a single-block directory.
/// None when xfsprogs is not installed.
fn images() -> Option<&'static [Image]> {
    static IMAGES: OnceLock<Vec<Image>> = OnceLock::new();
    let v = IMAGES.get_or_init(|| {
        let have = std::process::Command::new("mkfs.xfs")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            eprintln!("fuzz: SKIPPED the XFS image seeds: mkfs.xfs not found (install xfsprogs)");
            return vec![];
        }
        let dir = std::env::temp_dir().join(format!("mxfsd-fuzz-xfs-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let v: Vec<Image> = [
            ("sf", &[][..], 2),
            ("block", &[][..], 40),
            ("v4", &["-m", "crc=0"][..], 40),
        ]
        .iter()
        .filter_map(|(name, extra, n)| mkfs_image(&dir, name, extra, *n))
        .collect();
        let _ = std::fs::remove_dir_all(&dir);
        v
    });
    (!v.is_empty()).then_some(v.as_slice())
}

fn image_seeds() -> Vec<Vec<u8>> {
    images()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, img)| [&[i as u8][..], &img.bytes].concat())
        .collect()
}

fn image_exec(b: &[u8]) -> bool {
    let Some(images) = images() else {
        return false;
    };
    let Some((&sel, rest)) = b.split_first() else {
        return false;
    };
    let img = &images[usize::from(sel) % images.len()];
    let mut bytes = rest.to_vec();
    bytes.resize(img.bytes.len(), 0);
    // CRCs recomputed, so that mutations reach the field checks: the
    // superblock, each v3 inode, each v5 directory block
    let mut at = 0;
    for (i, (_, len)) in img.regions.iter().enumerate() {
        let r = &mut bytes[at..at + len];
        if i == 0 {
            fix_sb_crc(r);
        } else if r.starts_with(b"XDB3") {
            fix_xfs_crc(r, 4);
        } else {
            for inode in r.chunks_mut(512) {
                if inode.starts_with(b"IN") && inode[4] == 3 {
                    fix_xfs_crc(inode, 100);
                }
            }
        }
        at += len;
    }
    let mut regions = vec![];
    let mut at = 0;
    for (off, len) in &img.regions {
        regions.push((*off, &bytes[at..at + len]));
        at += len;
    }
    walk(SparseDev {
        size: img.size,
        regions,
    })
}

// ---- SCSI answers and the mount-time probe (mxfs-core) ----

fn device_seeds() -> Vec<Vec<u8>> {
    use mxfs_core::reservation::{encode_read_reservation, Holder, Reservation};
    use mxfs_core::sgio::encode_read_keys;
    let mut sense_fixed = vec![0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x00];
    sense_fixed.resize(18, 0);
    let mut seeds = vec![
        encode_read_keys(5, &[]),
        encode_read_keys(6, &[0x1111, 0x2222, u64::MAX]),
        encode_read_reservation(&Reservation {
            generation: 3,
            holder: None,
        }),
        encode_read_reservation(&Reservation {
            generation: 4,
            holder: Some(Holder {
                key: 0x77,
                pr_type: 5,
                scope: 0,
            }),
        }),
        sense_fixed,
        vec![0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0],
        b"7f3c4d2e-0000-4000-8000-123456789abc\n".to_vec(),
    ];
    seeds.push(sb_bytes(&Geo {
        v5: true,
        block_log: 12,
        sect_log: 9,
        inode_log: 9,
        ag_blocks: 5120,
        ag_count: 4,
        dir_log: 0,
        meta_uuid: false,
    }));
    seeds
}

fn device_exec(b: &[u8]) -> bool {
    use mxfs_core::reservation::{decode_read_reservation, encode_read_reservation};
    use mxfs_core::sgio::{decode_read_keys, encode_read_keys, parse_sense};
    let mut accepted = false;
    if let Ok(k) = decode_read_keys(b) {
        accepted = true;
        let whole = 8 + 8 * k.keys.len();
        if !k.truncated() && k.additional_length as usize == 8 * k.keys.len() {
            assert_eq!(
                encode_read_keys(k.generation, &k.keys),
                b[..whole],
                "READ KEYS does not round-trip"
            );
        }
    }
    if let Ok(r) = decode_read_reservation(b) {
        let again = encode_read_reservation(&r);
        assert_eq!(
            decode_read_reservation(&again).ok(),
            Some(r),
            "READ RESERVATION does not round-trip"
        );
    }
    accepted |= parse_sense(b).is_some();
    accepted |= mxfs_core::xfs_probe::parse(b).is_ok();
    if let Ok(s) = std::str::from_utf8(b) {
        accepted |= mxfs_core::identity::parse_identity(s).is_ok();
    }
    accepted
}

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

/// Every seed is a valid input of its target (else the fuzzer would
/// start from refused inputs and a decoder change went unnoticed).
#[test]
fn seeds_are_accepted() {
    for t in TARGETS {
        let seeds = (t.seeds)();
        if t.name == "xfs_image" && images().is_none() {
            continue;
        }
        assert!(!seeds.is_empty(), "{}: no seeds", t.name);
        for (i, s) in seeds.iter().enumerate() {
            assert!(s.len() <= t.max_len, "{} seed {i} is over max_len", t.name);
            assert!((t.exec)(s), "{} seed {i} refused: {}", t.name, hex(s));
            if t.name == "peer_record" {
                crate::peer::record::fuzz_decode(s);
            }
        }
    }
}

/// The harness itself, briefly and deterministically, on every target.
#[test]
fn harness_smoke() {
    for t in TARGETS {
        let st = run(t, 0x5eed, 0.0, Some(300));
        if !(t.seeds)().is_empty() {
            assert_eq!(st.execs, 300, "{}", t.name);
        }
    }
}

#[test]
fn mutations_stay_in_bounds() {
    let mut rng = Rng(1);
    let corpus = vec![vec![1, 2, 3], vec![], vec![0xff; 100]];
    let mut v = vec![];
    for _ in 0..20000 {
        if rng.one_in(10) {
            v = corpus[rng.below(3)].clone();
        }
        mutate(&mut rng, &mut v, &corpus, 64);
        assert!(v.len() <= 64);
    }
}

macro_rules! fuzz_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        #[ignore = "bounded-time fuzzing, run by cargo xtask test"]
        fn $name() {
            fuzz_target(&stringify!($name)["fuzz_".len()..]);
        }
    )*};
}

fuzz_tests!(
    fuzz_wire_frame,
    fuzz_wire_stream,
    fuzz_announce,
    fuzz_fileop_request,
    fuzz_fileop_reply,
    fuzz_peer_record,
    fuzz_lockstate_slot,
    fuzz_netlink,
    fuzz_xfs_superblock,
    fuzz_xfs_image,
    fuzz_device_answers,
    fuzz_client_keep,
    fuzz_reply_store,
    fuzz_private_requests,
);

/// Found by `fuzz_xfs_superblock`: 64 KiB blocks with a directory block
/// log of 16 wrapped the decoder's u32 size check to 0, and reading a
/// directory of such a filesystem then panicked on an empty block.
#[test]
fn regression_directory_block_size_wrap() {
    let geo = Geo {
        v5: false,
        block_log: 16,
        sect_log: 9,
        inode_log: 8,
        ag_blocks: 1 << 17,
        ag_count: 1,
        dir_log: 16,
        meta_uuid: false,
    };
    let sb = sb_bytes(&geo);
    assert!(Superblock::decode(&sb).is_err());
    // and one directory block of 64 KiB is fine
    let sb = sb_bytes(&Geo { dir_log: 0, ..geo });
    assert_eq!(Superblock::decode(&sb).unwrap().dir_block_size(), 65536);
}
