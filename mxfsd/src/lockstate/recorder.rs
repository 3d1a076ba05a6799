//! The writer of this node's lock records for its DLM grants.
//!
//! This module owns when records are written: one thread per node owns
//! the [`RecordBook`] and does its I/O in the order it is asked, so the
//! DLM's driver never waits on the disk and a record is never cleared
//! before it was written.  The DLM ([`crate::dlm::Dlm`]) asks for a
//! record after a grant reaches this node and answers the grant only
//! once [`Recorder::write`] returns: a lock this node holds is on disk
//! before anyone acts on it.  A conversion rewrites the record in place
//! with the new mode.  A release clears it without waiting (a record of
//! a lock already released only makes a purge clear one more slot).
//!
//! [`RecorderState`] is how the DLM learns whether records are kept:
//! `Opening` until this node has a heartbeat slot (whose partition its
//! records live in), then `Ready`, or `Off` when there is no lockstate
//! or no slot (logged where that is decided).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::records::{Leftovers, RecordBook};
use super::LockRecord;
use crate::dlm::Mode;

/// Whether the DLM records its grants, as it learns it.
#[derive(Debug, Clone)]
pub enum RecorderState {
    /// Waiting for this node's heartbeat slot: lock calls wait.
    Opening,
    Ready(Recorder),
    /// Nothing is recorded (no lockstate, no slot, or stopped).
    Off,
}

enum Op {
    Write {
        lock: u64,
        record: LockRecord,
        done: oneshot::Sender<Result<(), String>>,
    },
    Clear {
        lock: u64,
    },
    /// Stop; `clear`: clear every record still written (the node left
    /// cleanly, so it holds nothing).
    Stop {
        clear: bool,
    },
}

/// A handle on the record writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    node_id: u64,
    tx: mpsc::Sender<Op>,
    in_use: Arc<AtomicUsize>,
}

/// The writer thread; [`RecorderThread::stop`] ends it.
pub struct RecorderThread {
    tx: mpsc::Sender<Op>,
    thread: Option<JoinHandle<()>>,
}

/// Why a record could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lock record not written: {0}")]
pub struct RecordFailed(pub String);

impl Recorder {
    /// Start the writer over `book` (this node's partition).  Records
    /// left in it by an earlier run of this node are cleared first: this
    /// node's locks died with that run's DLM state.  Records of other
    /// holders found there are left for a purge, and reported.
    pub fn start(
        mut book: RecordBook,
        leftovers: Leftovers,
        node_id: u64,
    ) -> std::io::Result<(Recorder, RecorderThread)> {
        let mut kept = 0;
        for (slot, r) in &leftovers.records {
            if r.holder == node_id {
                if let Err(e) = book.clear_record(*slot) {
                    warn!(
                        slot,
                        "lock records: clearing a record of our earlier run: {e}"
                    );
                }
            } else {
                kept += 1;
            }
        }
        let ours = leftovers.records.len() - kept;
        if ours > 0 || kept > 0 || !leftovers.corrupt.is_empty() {
            info!(
                cleared = ours,
                others = kept,
                unreadable = leftovers.corrupt.len(),
                "lock records: cleared {ours} of this node's earlier run; {kept} of other holders and {} unreadable slots left for a purge",
                leftovers.corrupt.len()
            );
        }
        let (tx, rx) = mpsc::channel();
        let in_use = Arc::new(AtomicUsize::new(0));
        let count = in_use.clone();
        let thread = std::thread::Builder::new()
            .name("lock-records".into())
            .spawn(move || run(book, rx, &count))?;
        Ok((
            Recorder {
                node_id,
                tx: tx.clone(),
                in_use,
            },
            RecorderThread {
                tx,
                thread: Some(thread),
            },
        ))
    }

    /// Write (or rewrite, for a conversion) the record of this node's
    /// lock `lock` on `name` in `mode`, granted at owner epoch `epoch`;
    /// returns once it is on the medium.
    pub async fn write(
        &self,
        lock: u64,
        name: &[u8],
        mode: Mode,
        epoch: u64,
    ) -> Result<(), RecordFailed> {
        let (done, rx) = oneshot::channel();
        let record = LockRecord {
            name: name.to_vec(),
            holder: self.node_id,
            lock_id: lock,
            mode,
            epoch,
        };
        self.tx
            .send(Op::Write { lock, record, done })
            .map_err(|_| RecordFailed("the record writer has stopped".into()))?;
        rx.await
            .map_err(|_| RecordFailed("the record writer has stopped".into()))?
            .map_err(RecordFailed)
    }

    /// Clear the record of lock `lock` (after its release); does not wait.
    pub fn clear(&self, lock: u64) {
        let _ = self.tx.send(Op::Clear { lock });
    }

    /// Records of this node's locks on disk now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }
}

impl RecorderThread {
    /// Stop after the queued writes; `clear`: also clear every record
    /// still on disk.
    pub fn stop(mut self, clear: bool) {
        let _ = self.tx.send(Op::Stop { clear });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RecorderThread {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(Op::Stop { clear: false });
            let _ = t.join();
        }
    }
}

fn run(mut book: RecordBook, rx: mpsc::Receiver<Op>, in_use: &AtomicUsize) {
    // lock id -> its lock slot
    let mut slots: HashMap<u64, u32> = HashMap::new();
    let clear_all = loop {
        let Ok(op) = rx.recv() else { break false };
        match op {
            Op::Write { lock, record, done } => {
                let r = match slots.get(&lock) {
                    Some(&slot) => book.write_record(slot, &record),
                    None => book.record(&record).map(|slot| {
                        slots.insert(lock, slot);
                    }),
                };
                let _ = done.send(r.map_err(|e| e.to_string()));
            }
            Op::Clear { lock } => {
                if let Some(slot) = slots.remove(&lock) {
                    if let Err(e) = book.clear_record(slot) {
                        warn!(slot, "lock records: clearing a released lock's record: {e}");
                    }
                }
            }
            Op::Stop { clear } => break clear,
        }
        in_use.store(slots.len(), Ordering::Relaxed);
    };
    if clear_all {
        for (_, slot) in slots.drain() {
            if let Err(e) = book.clear_record(slot) {
                warn!(slot, "lock records: clearing at leave: {e}");
            }
        }
    }
    in_use.store(slots.len(), Ordering::Relaxed);
}
