//! This node's disk heartbeat, and its watch over every member's (design
//! section 5, layer 2; issue 5).
//!
//! One thread per mounted volume: it claims a heartbeat slot in the
//! lockstate (a delta lease, [`crate::lockstate::claim_slot`]), starts
//! the writer that beats in it every [`BEAT`], and then reads all slots
//! every [`SCAN`], publishing how long each node's slot has not changed.
//! The cluster runtime reads that through [`DiskView`] to tell a dead
//! member (silent on the network and on disk) from one that is only cut
//! off from the network.  The thread judges nobody itself.
//!
//! A read that fails (the device gone, this node fenced) withdraws the
//! view: with no current view nobody is judged.
//!
//! The same thread opens this node's lock records once it has its slot
//! (the records live in the slot's partition) and offers their writer
//! to the DLM ([`RecorderState`]); it stops the writer before it leaves
//! the slot, clearing what is still recorded when the node leaves
//! cleanly.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use tracing::{error, info, warn};

use crate::cluster::DiskView;
use crate::identity::NodeIdentity;
use crate::lockstate::{
    claim_slot, HeartbeatEvent, HeartbeatMonitor, HeartbeatParams, HeartbeatState, HeartbeatWriter,
    IoFailure, LockstateDevice, Opened, RecordBook, Recorder, RecorderState, RecorderThread,
    SlotContent,
};

/// Time between this node's beats (design: 2 s).
pub const BEAT: Duration = Duration::from_secs(2);
/// Time between reads of every slot.
pub const SCAN: Duration = Duration::from_secs(1);
/// A view older than this is no view (the scans stopped or fail).
const VIEW_FRESH: Duration = Duration::from_secs(4);

/// The last scan: per node id, how long its slot had not changed, and
/// when the scan was made.
#[derive(Default)]
struct Snapshot {
    ages: HashMap<u64, Duration>,
    taken: Option<Instant>,
}

/// The running heartbeat and watch; [`DiskLiveness::stop`] ends both.
pub struct DiskLiveness {
    snapshot: Arc<Mutex<Snapshot>>,
    stop: mpsc::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

/// What the cluster runtime reads.
struct View(Arc<Mutex<Snapshot>>);

impl DiskView for View {
    fn ages(&self) -> Option<HashMap<u64, Duration>> {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let taken = s.taken?;
        let old = taken.elapsed();
        if old > VIEW_FRESH {
            return None;
        }
        Some(s.ages.iter().map(|(n, a)| (*n, *a + old)).collect())
    }
}

impl DiskLiveness {
    /// Start beating and watching on `device` as `me`.  `dead_interval`
    /// is also how long a claimant waits out a slot that looks stale.
    /// `records` learns the lock record writer (or that there is none).
    pub fn start(
        device: PathBuf,
        me: NodeIdentity,
        owner_epoch: u64,
        dead_interval: Duration,
        records: watch::Sender<RecorderState>,
    ) -> std::io::Result<DiskLiveness> {
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let (stop, stop_rx) = mpsc::channel();
        let snap = snapshot.clone();
        let thread = std::thread::Builder::new()
            .name("disk-liveness".into())
            .spawn(move || {
                run(
                    &device,
                    &me,
                    owner_epoch,
                    dead_interval,
                    &snap,
                    &stop_rx,
                    &records,
                );
                // However it ended (also before a slot), lock calls must
                // not wait any more.
                records.send_replace(RecorderState::Off);
            })?;
        Ok(DiskLiveness {
            snapshot,
            stop,
            thread: Some(thread),
        })
    }

    pub fn view(&self) -> Arc<dyn DiskView> {
        Arc::new(View(self.snapshot.clone()))
    }

    /// Stop.  `clear`: leave cleanly (this node's slot is emptied, so
    /// nobody takes it for a dead node's); otherwise the slot is left to
    /// go stale, as a crash would.
    pub fn stop(mut self, clear: bool) {
        let _ = self.stop.send(clear);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DiskLiveness {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.stop.send(false);
            let _ = t.join();
        }
    }
}

/// Open this node's lock records in heartbeat slot `slot`'s partition
/// and start their writer.
fn open_records(
    dev: &Arc<LockstateDevice>,
    me: &NodeIdentity,
    slot: u32,
) -> Result<(Recorder, RecorderThread), String> {
    let (book, leftovers) =
        RecordBook::open(dev.clone(), me.id, slot).map_err(|e| e.to_string())?;
    Recorder::start(book, leftovers, me.id).map_err(|e| e.to_string())
}

fn run(
    device: &std::path::Path,
    me: &NodeIdentity,
    owner_epoch: u64,
    dead_interval: Duration,
    snapshot: &Mutex<Snapshot>,
    stop: &mpsc::Receiver<bool>,
    records: &watch::Sender<RecorderState>,
) {
    let dev = match LockstateDevice::open(device) {
        Ok(Opened::Ready(d)) => Arc::new(d),
        Ok(Opened::Absent(a)) => {
            error!(
                missing = a.missing,
                "disk heartbeat: the lockstate is missing; this node does not beat on disk"
            );
            return;
        }
        Err(e) => {
            error!("disk heartbeat: opening the lockstate: {e}");
            return;
        }
    };
    let params = HeartbeatParams {
        dead_after: dead_interval.max(BEAT + Duration::from_millis(1)),
        ..HeartbeatParams::with_interval(BEAT)
    };
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut recorder = None;
    let writer = match claim_slot(&dev, me, owner_epoch, &params) {
        Ok(claimed) => {
            let slot = claimed.slot;
            match open_records(&dev, me, slot) {
                Ok((r, thread)) => {
                    info!(
                        slot,
                        "lock records: kept in the partition of heartbeat slot {slot}"
                    );
                    records.send_replace(RecorderState::Ready(r));
                    recorder = Some(thread);
                }
                Err(e) => {
                    error!("lock records: not kept: {e}");
                    records.send_replace(RecorderState::Off);
                }
            }
            match HeartbeatWriter::start(dev.clone(), claimed, BEAT, ev_tx) {
                Ok(w) => {
                    w.set_state(HeartbeatState::Member);
                    info!(
                        slot,
                        interval_ms = BEAT.as_millis() as u64,
                        "disk heartbeat: beating in slot {slot}"
                    );
                    Some(w)
                }
                Err(e) => {
                    error!("disk heartbeat: starting the writer: {e}");
                    None
                }
            }
        }
        Err(e) => {
            error!("disk heartbeat: no slot: {e}; the other members will judge this node by its network lease alone");
            None
        }
    };
    let mut monitor = HeartbeatMonitor::new();
    let mut failing = false;
    let clear = loop {
        match monitor.scan(&dev) {
            Ok(views) => {
                let now = Instant::now();
                let mut ages: HashMap<u64, Duration> = HashMap::new();
                for v in &views {
                    // a slot left cleanly is no heartbeat
                    let SlotContent::Node(h) = &v.content else {
                        continue;
                    };
                    if h.state == HeartbeatState::Left {
                        continue;
                    }
                    let age = v.unchanged_for(now);
                    ages.entry(h.node_id)
                        .and_modify(|a| *a = (*a).min(age))
                        .or_insert(age);
                }
                if failing {
                    info!("disk heartbeat: reading the slots works again");
                }
                failing = false;
                let mut s = snapshot.lock().unwrap_or_else(|e| e.into_inner());
                s.ages = ages;
                s.taken = Some(now);
            }
            Err(e) => {
                if !failing {
                    warn!("disk heartbeat: reading the slots failed (nobody is judged meanwhile): {e}");
                }
                failing = true;
                snapshot.lock().unwrap_or_else(|e| e.into_inner()).taken = None;
            }
        }
        while let Ok(ev) = ev_rx.try_recv() {
            match ev {
                HeartbeatEvent::Late { slot, by } => {
                    warn!(slot, late_ms = by.as_millis() as u64, "disk heartbeat: a beat went out late");
                }
                HeartbeatEvent::DeviceError {
                    failure: IoFailure::ReservationConflict,
                    ..
                } => error!("disk heartbeat: the device refused our beat with a reservation conflict: this node has been fenced"),
                other => error!("disk heartbeat stopped: {other:?}"),
            }
        }
        match stop.recv_timeout(SCAN) {
            Ok(clear) => break clear,
            Err(RecvTimeoutError::Disconnected) => break false,
            Err(RecvTimeoutError::Timeout) => {}
        }
    };
    // The records before the slot: they live in its partition.
    records.send_replace(RecorderState::Off);
    if let Some(r) = recorder {
        r.stop(clear);
    }
    if let Some(w) = writer {
        let r = if clear { w.leave() } else { w.abandon() };
        match r {
            Ok(()) if clear => info!("disk heartbeat: left, slot cleared"),
            Ok(()) => {}
            Err(e) => warn!("disk heartbeat: leaving: {e}"),
        }
    }
}
