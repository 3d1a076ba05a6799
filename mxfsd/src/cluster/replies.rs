//! The owner's reply cache: the answers to clients' requests that change
//! the filesystem, kept so that a request that arrives twice runs once.
//!
//! A client sends a request again when its daemon was restarted before
//! it passed the answer to the kernel (the new daemon serves what the
//! kernel had asked the old one), and when its link to the owner dropped
//! with the request in flight.  For what changes state, running it twice
//! is wrong: an `O_APPEND` write appends twice, an exclusive create
//! answers EEXIST, an unlink ENOENT.  Such a request carries its
//! [`Origin`] (the client's FUSE connection and the kernel's id for the
//! request); the owner keeps the answer under (client node, origin) and
//! answers a repeat from it, or, while the first run is still going,
//! answers the repeat too when it ends.  A node that took the volume
//! over serves its own FUSE connection's requests through the cache as
//! well (its restarted daemon serves again what the killed one left).
//!
//! Only successful answers are kept: a request that failed changed
//! nothing, so running it again answers the same.  Answers are kept for
//! [`KEEP`], at most [`MAX_ENTRIES`] of them; a repeat later than that
//! runs again.  A copy of the kept answers goes to a memfd that systemd
//! keeps for a restarted daemon ([`super::reply_store`]), so a repeat
//! sent to an owner whose daemon was restarted is answered too; a new
//! owner (another node) has no copy, and there a repeat runs again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::reply_store::{KeptReply, ReplyStore};
use crate::wire::{FileOpReply, Origin};

/// How long an answer is kept: a restarted client daemon (back within
/// seconds) or a client whose link came back (within the owner's grace)
/// repeats well within this.
pub const KEEP: Duration = Duration::from_secs(120);
/// Most answers kept (a write's answer is a few bytes; a create's a few
/// hundred).
pub const MAX_ENTRIES: usize = 16384;

type Key = (u64, Origin);

/// The origin a request of kind `opcode` is kept under: its own if it
/// changes the filesystem, none otherwise (running it again is harmless,
/// and its answer may be large).
pub fn kept_origin(opcode: u32, origin: Origin) -> Origin {
    if crate::wire::fileop::opcode::changes_state(opcode) {
        origin
    } else {
        Origin::default()
    }
}

#[derive(Debug)]
struct Entry {
    opcode: u32,
    /// When the first run began (the entry's place in the order).
    at: Instant,
    state: State,
}

#[derive(Debug)]
enum State {
    /// The first run is going; the request ids of repeats to answer
    /// when it ends.
    Running(Vec<u64>),
    Done(FileOpReply),
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// Run it (the first time, or it is not one to keep).
    Run,
    /// A repeat of a request that was answered: send this.
    Answer(FileOpReply),
    /// A repeat of a request that is still running: it is answered when
    /// that one ends ([`ReplyCache::end`]).
    Wait,
}

#[derive(Debug, Default)]
pub struct ReplyCache {
    entries: HashMap<Key, Entry>,
    /// Keys by the time their entry was made, oldest first.
    order: VecDeque<(Instant, Key)>,
    /// Where kept answers are copied for a restarted daemon.
    store: Option<ReplyStore>,
}

impl ReplyCache {
    /// A cache that copies its answers to `store`, starting with the
    /// answers a dead daemon left there (`kept`: each with its age).
    pub fn with_store(store: ReplyStore, kept: Vec<(KeptReply, Duration)>, now: Instant) -> Self {
        let mut c = ReplyCache::default();
        for (r, age) in kept {
            let at = now.checked_sub(age).unwrap_or(now);
            let key = (r.node, r.origin);
            let reply = FileOpReply {
                owner_epoch: 0,
                request_id: 0,
                errno: 0,
                payload: r.payload,
            };
            c.entries.insert(
                key,
                Entry {
                    opcode: r.opcode,
                    at,
                    state: State::Done(reply),
                },
            );
            c.order.push_back((at, key));
        }
        c.store = Some(store);
        c
    }

    /// Request `request_id` of kind `opcode` from `node`, from `origin`,
    /// arrives at `now`.  A request without an origin always runs.
    pub fn begin(
        &mut self,
        node: u64,
        origin: Origin,
        opcode: u32,
        request_id: u64,
        now: Instant,
    ) -> Begin {
        if origin.is_none() {
            return Begin::Run;
        }
        self.expire(now);
        let key = (node, origin);
        match self.entries.get_mut(&key) {
            // The same origin with another kind of request is not a
            // repeat (a client bug, or a reused id): run it, unkept.
            Some(e) if e.opcode != opcode => Begin::Run,
            Some(Entry {
                state: State::Running(repeats),
                ..
            }) => {
                repeats.push(request_id);
                Begin::Wait
            }
            Some(Entry {
                state: State::Done(reply),
                ..
            }) => Begin::Answer(FileOpReply {
                request_id,
                ..reply.clone()
            }),
            None => {
                while self.entries.len() >= MAX_ENTRIES {
                    let Some((at, old)) = self.order.pop_front() else {
                        break;
                    };
                    if self.entries.get(&old).is_some_and(|e| e.at == at) {
                        self.entries.remove(&old);
                    }
                }
                self.entries.insert(
                    key,
                    Entry {
                        opcode,
                        at: now,
                        state: State::Running(Vec::new()),
                    },
                );
                self.order.push_back((now, key));
                Begin::Run
            }
        }
    }

    /// The first run of the request from `node`, `origin` ended with
    /// `reply`: the request ids of the repeats that waited for it (answer
    /// them with the same reply).
    pub fn end(
        &mut self,
        node: u64,
        origin: Origin,
        reply: &FileOpReply,
        now: Instant,
    ) -> Vec<u64> {
        if origin.is_none() {
            return Vec::new();
        }
        let key = (node, origin);
        let Some(e) = self.entries.get_mut(&key) else {
            return Vec::new();
        };
        let State::Running(repeats) = &mut e.state else {
            return Vec::new();
        };
        let repeats = std::mem::take(repeats);
        // (one that ran longer than KEEP has left the order: not kept)
        if reply.errno == 0 && now.duration_since(e.at) < KEEP {
            e.state = State::Done(reply.clone());
            if let Some(s) = &mut self.store {
                // Best effort: an answer not copied is kept in memory.
                let _ = s.put(node, origin, e.opcode, &reply.payload);
            }
        } else {
            self.entries.remove(&key);
        }
        repeats
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            if now.duration_since(at) < KEEP {
                break;
            }
            self.order.pop_front();
            // A running entry this old is a request still stuck in the
            // file system: kept until it ends.  An entry made again since
            // has a later place in the order.
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.at == at && matches!(e.state, State::Done(_)))
            {
                self.entries.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fileop::opcode;

    fn origin(unique: u64) -> Origin {
        Origin {
            session: 0xabc,
            unique,
        }
    }

    fn reply(request_id: u64, errno: i32) -> FileOpReply {
        FileOpReply {
            owner_epoch: 1,
            request_id,
            errno,
            payload: vec![1, 2, 3],
        }
    }

    #[test]
    fn a_repeat_after_the_answer_gets_the_same_answer_without_running() {
        let mut c = ReplyCache::default();
        let t = Instant::now();
        assert_eq!(c.begin(5, origin(9), opcode::WRITE, 100, t), Begin::Run);
        assert!(c.end(5, origin(9), &reply(100, 0), t).is_empty());
        // the repeat has its own request id, the first one's answer
        assert_eq!(
            c.begin(5, origin(9), opcode::WRITE, 101, t),
            Begin::Answer(reply(101, 0))
        );
        // another request, another node, another session: they run
        assert_eq!(c.begin(5, origin(10), opcode::WRITE, 102, t), Begin::Run);
        assert_eq!(c.begin(6, origin(9), opcode::WRITE, 103, t), Begin::Run);
        let other_session = Origin {
            session: 0xabd,
            unique: 9,
        };
        assert_eq!(c.begin(5, other_session, opcode::WRITE, 104, t), Begin::Run);
    }

    #[test]
    fn a_repeat_while_running_waits_for_the_first_answer() {
        let mut c = ReplyCache::default();
        let t = Instant::now();
        assert_eq!(c.begin(5, origin(1), opcode::CREATE, 10, t), Begin::Run);
        assert_eq!(c.begin(5, origin(1), opcode::CREATE, 11, t), Begin::Wait);
        assert_eq!(c.begin(5, origin(1), opcode::CREATE, 12, t), Begin::Wait);
        assert_eq!(c.end(5, origin(1), &reply(10, 0), t), vec![11, 12]);
    }

    #[test]
    fn failures_are_not_kept_and_requests_without_origin_always_run() {
        let mut c = ReplyCache::default();
        let t = Instant::now();
        assert_eq!(c.begin(5, origin(1), opcode::UNLINK, 10, t), Begin::Run);
        assert_eq!(c.begin(5, origin(1), opcode::UNLINK, 11, t), Begin::Wait);
        // the waiting repeat still gets the failure; a later one runs
        assert_eq!(c.end(5, origin(1), &reply(10, libc::ENOENT), t), vec![11]);
        assert_eq!(c.begin(5, origin(1), opcode::UNLINK, 12, t), Begin::Run);
        let none = Origin::default();
        for id in 0..3 {
            assert_eq!(c.begin(5, none, opcode::WRITE, id, t), Begin::Run);
            assert!(c.end(5, none, &reply(id, 0), t).is_empty());
        }
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn another_kind_of_request_with_the_same_origin_is_no_repeat() {
        let mut c = ReplyCache::default();
        let t = Instant::now();
        assert_eq!(c.begin(5, origin(1), opcode::WRITE, 10, t), Begin::Run);
        c.end(5, origin(1), &reply(10, 0), t);
        assert_eq!(c.begin(5, origin(1), opcode::MKDIR, 11, t), Begin::Run);
    }

    #[test]
    fn a_restarted_cache_answers_what_the_dead_one_kept() {
        let t = Instant::now();
        let mut c = ReplyCache::with_store(ReplyStore::create().unwrap(), Vec::new(), t);
        assert_eq!(c.begin(5, origin(1), opcode::WRITE, 10, t), Begin::Run);
        c.end(5, origin(1), &reply(10, 0), t);
        assert_eq!(c.begin(5, origin(2), opcode::UNLINK, 11, t), Begin::Run);
        c.end(5, origin(2), &reply(11, libc::ENOENT), t);
        let fd = c.store.as_ref().unwrap().fd().try_clone_to_owned().unwrap();
        drop(c);
        let r = ReplyStore::open(fd, KEEP).unwrap();
        assert_eq!((r.answers.len(), r.refused), (1, 0));
        let mut c = ReplyCache::with_store(r.store, r.answers, t);
        // the answered write is answered again, with the new request id
        match c.begin(5, origin(1), opcode::WRITE, 20, t) {
            Begin::Answer(r) => {
                assert_eq!((r.request_id, r.errno, r.payload), (20, 0, vec![1, 2, 3]))
            }
            other => panic!("{other:?}"),
        }
        // the failed unlink was not kept: it runs
        assert_eq!(c.begin(5, origin(2), opcode::UNLINK, 21, t), Begin::Run);
    }

    #[test]
    fn answers_expire_and_the_cache_is_bounded() {
        let mut c = ReplyCache::default();
        let t = Instant::now();
        assert_eq!(c.begin(5, origin(1), opcode::WRITE, 1, t), Begin::Run);
        c.end(5, origin(1), &reply(1, 0), t);
        // still running long after: kept until it ends
        assert_eq!(c.begin(5, origin(2), opcode::WRITE, 2, t), Begin::Run);
        let later = t + KEEP + Duration::from_secs(1);
        assert_eq!(c.begin(5, origin(1), opcode::WRITE, 3, later), Begin::Run);
        assert_eq!(c.begin(5, origin(2), opcode::WRITE, 4, later), Begin::Wait);

        let mut c = ReplyCache::default();
        for u in 0..(MAX_ENTRIES as u64 + 10) {
            assert_eq!(c.begin(5, origin(u), opcode::WRITE, u, t), Begin::Run);
            c.end(5, origin(u), &reply(u, 0), t);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        // the oldest went first
        assert_eq!(c.begin(5, origin(0), opcode::WRITE, 1, t), Begin::Run);
        assert!(matches!(
            c.begin(5, origin(MAX_ENTRIES as u64 + 9), opcode::WRITE, 2, t),
            Begin::Answer(_)
        ));
    }
}
