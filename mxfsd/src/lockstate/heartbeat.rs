//! Disk heartbeats: claiming a slot, beating in it, watching all slots.
//!
//! This module owns the 64 heartbeat slots at run time: which one is this
//! node's ([`claim_slot`]), the writer that beats in it
//! ([`HeartbeatWriter`]), and the observer that tells live slots from
//! stale ones ([`HeartbeatMonitor`]).  It decides nothing about
//! membership: it reports what the disk shows, timed by this node's own
//! monotonic clock, and callers (failover) decide who is dead.
//!
//! # Claiming a slot without a lock manager
//!
//! Nodes claim slots before any network or DLM exists, so two nodes may
//! race for one slot.  The claim is a delta lease (as in sanlock's and
//! Chockler/Malkhi's "delta" algorithms):
//!
//! 1. Read all slots.  A slot is a candidate if it holds this node's UUID
//!    (a restart), is empty, says `Left`, or has not changed for
//!    `dead_after` as observed by this node (a dead node's slot; a slot
//!    this node has just started watching counts as changed at its first
//!    read, so judging it dead always takes a full `dead_after`).
//! 2. Re-read the chosen slot; if it changed, choose again.  Otherwise
//!    write the claim (our UUID, a new generation, state `Joining`).
//! 3. Wait `claim_wait` (more than one heartbeat interval), re-read.  If
//!    the slot still holds exactly our claim, it is ours; if not, someone
//!    wrote after us: choose again.
//!
//! Why at most one node ends with a slot: say A and B both claim slot s,
//! B's write landing after A's.  B read s as a candidate before A's write
//! landed (had it read A's fresh `Joining` claim, s would not have been a
//! candidate: a fresh claim has not been unchanged for `dead_after`).  So
//! B's write landed less than δ after A's, where δ is B's time from that
//! read to its write's completion.  A re-reads `claim_wait` after its own
//! write, later than B's write as long as δ < `claim_wait`, sees B's claim
//! and backs off; only the last writer can see its own claim.  δ is
//! bounded by measuring it: a claimant whose read-to-written time exceeds
//! half of `claim_wait` abandons that attempt.  Waiting more than one
//! beat also means a live owner of the slot (misjudged as gone) would
//! have written in the window.  Only wait times are trusted, measured on
//! the claimant's own clock; no clocks are compared across nodes.
//!
//! A claimant that wins also clears any other slot still carrying its
//! UUID (an attempt it abandoned, an older slot), so no stale slot with a
//! live node's id is left for monitors to report as dead.
//!
//! After the claim, the writer re-reads its slot before every beat and
//! stops with [`HeartbeatEvent::SlotLost`] if anything but its own last
//! beat is there, so the one case the protocol cannot prevent (a node
//! judged dead that was only paused, resuming between its read and its
//! write) is detected at the next beat instead of leaving two nodes
//! writing one slot; with SCSI PR fencing a node judged dead has been
//! preempted and its writes fail anyway.
//!
//! # Beating and watching
//!
//! The writer is a plain thread (the I/O is blocking `O_DIRECT|O_SYNC`,
//! which does not belong on async workers): every `interval` it adds one
//! to the counter.  A failed write is reported once as
//! [`HeartbeatEvent::DeviceError`] (distinguishing a reservation
//! conflict, i.e. fenced) and the writer stops: it never retries silently,
//! since a node that cannot beat must know it is about to be declared
//! dead.  The monitor keeps, per slot, the last content seen and the local
//! `Instant` it first saw that content; a slot is stale when its content
//! has not changed for the dead interval.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedSender;

use super::device::{io_failure, IoFailure, LockstateDevice};
use super::{Heartbeat, HeartbeatState, LockstateError, Slot, SlotId, HEARTBEAT_SLOTS};
use crate::identity::NodeIdentity;

/// Timing of heartbeats and claims.
#[derive(Debug, Clone)]
pub struct HeartbeatParams {
    /// Time between beats (design: 2 s).
    pub interval: Duration,
    /// A slot whose content has not changed for this long, by the
    /// observer's clock, is stale (its node dead or gone).
    pub dead_after: Duration,
    /// How long a claimant waits before re-reading its claim; must be more
    /// than `interval` (see the module docs).
    pub claim_wait: Duration,
    /// How a claimant orders candidate slots.
    pub pick: Pick,
    /// Claim attempts (each lost race is one) before giving up.
    pub max_attempts: u32,
}

impl Default for HeartbeatParams {
    fn default() -> Self {
        let interval = Duration::from_secs(2);
        HeartbeatParams {
            interval,
            // Five missed beats: long enough to ride out a slow SAN path
            // failover, short enough for failover to start within ~10 s.
            dead_after: interval * 5,
            claim_wait: interval * 3 / 2,
            pick: Pick::Spread,
            max_attempts: 32,
        }
    }
}

impl HeartbeatParams {
    /// Shorter times for tests (the relations between them kept).
    pub fn with_interval(interval: Duration) -> Self {
        HeartbeatParams {
            interval,
            dead_after: interval * 5,
            claim_wait: interval * 3 / 2,
            ..HeartbeatParams::default()
        }
    }

    fn check(&self) -> Result<(), ClaimError> {
        if self.interval.is_zero() || self.claim_wait <= self.interval {
            return Err(ClaimError::BadParams(format!(
                "claim_wait {:?} must be more than the interval {:?}",
                self.claim_wait, self.interval
            )));
        }
        if self.dead_after <= self.interval {
            return Err(ClaimError::BadParams(format!(
                "dead_after {:?} must be more than the interval {:?}",
                self.dead_after, self.interval
            )));
        }
        Ok(())
    }
}

/// Order in which a claimant tries candidate slots of the same kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// From a random starting slot, so nodes joining together rarely
    /// choose the same one.
    Spread,
    /// Lowest first: nodes joining together collide (tests use this to
    /// exercise the race).
    #[cfg(test)]
    Lowest,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("all {HEARTBEAT_SLOTS} heartbeat slots are held by live nodes")]
    Full,
    #[error("lost the race for a heartbeat slot {0} times in a row")]
    Contended(u32),
    #[error("heartbeat parameters: {0}")]
    BadParams(String),
    #[error("heartbeat slot I/O: {0}")]
    Lockstate(#[from] LockstateError),
}

/// A slot this node holds, with the beat last written in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// 0..64
    pub slot: u32,
    pub beat: Heartbeat,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // A failed getrandom only makes the spread less random, not unsafe.
    let _ = getrandom::getrandom(&mut b);
    u32::from_le_bytes(b)
}

/// Candidate classes, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Own,
    Free,
    Stale,
}

fn classify(v: &SlotView, me: &NodeIdentity, now: Instant, dead_after: Duration) -> Option<Class> {
    match &v.content {
        SlotContent::Node(h) if h.node_uuid == *me.uuid.as_bytes() => Some(Class::Own),
        SlotContent::Empty => Some(Class::Free),
        SlotContent::Node(h) if h.state == HeartbeatState::Left => Some(Class::Free),
        _ if now.saturating_duration_since(v.last_change) >= dead_after => Some(Class::Stale),
        _ => None,
    }
}

/// Claim a heartbeat slot for `me` (see the module docs for the protocol).
/// Blocks for at least `claim_wait`, and up to `dead_after` more when
/// every slot is taken and stale ones must be waited out.
pub fn claim_slot(
    dev: &LockstateDevice,
    me: &NodeIdentity,
    owner_epoch: u64,
    params: &HeartbeatParams,
) -> Result<Claimed, ClaimError> {
    params.check()?;
    let mut monitor = HeartbeatMonitor::new();
    let started = Instant::now();
    let mut lost = 0u32;
    loop {
        let views = monitor.scan(dev)?;
        let now = Instant::now();
        let mut cands: Vec<(Class, u32)> = views
            .iter()
            .filter_map(|v| classify(v, me, now, params.dead_after).map(|c| (c, v.index)))
            .collect();
        let start = match params.pick {
            #[cfg(test)]
            Pick::Lowest => 0,
            Pick::Spread => random_u32() % HEARTBEAT_SLOTS,
        };
        cands.sort_by_key(|(c, i)| (*c, (i + HEARTBEAT_SLOTS - start) % HEARTBEAT_SLOTS));
        let Some(&(class, slot)) = cands.first() else {
            // Everything is held: wait for stale slots to show, but not
            // for ever (a little over dead_after of observation).
            if now.duration_since(started) > params.dead_after + params.interval {
                return Err(ClaimError::Full);
            }
            thread::sleep(params.interval);
            continue;
        };
        let previous = &views[slot as usize];
        let prev_generation = match (&previous.content, class) {
            (SlotContent::Node(h), Class::Own) => h.generation,
            _ => 0,
        };
        let claim = Heartbeat {
            node_id: me.id,
            node_uuid: *me.uuid.as_bytes(),
            // Grows at every start: past the old slot's, and past any
            // generation a lost slot of ours may have had (wall clock).
            generation: prev_generation.saturating_add(1).max(now_ns()),
            counter: 0,
            timestamp_ns: now_ns(),
            state: HeartbeatState::Joining,
            owner_epoch,
        };
        let id = SlotId::Heartbeat(slot);
        let read_at = Instant::now();
        let current = read_content(dev, id)?;
        if current != previous.content {
            // It moved since the scan: look again (bounded like a loss).
            lost += 1;
            if lost >= params.max_attempts {
                return Err(ClaimError::Contended(lost));
            }
            continue;
        }
        dev.write_slot(id, &Slot::Heartbeat(claim.clone()))?;
        let delta = read_at.elapsed();
        if delta >= params.claim_wait / 2 {
            // Our write may have landed after a rival verified its claim
            // (see the module docs): do not count this attempt as a win.
            tracing::warn!(
                slot,
                ?delta,
                "heartbeat claim write was too slow to be safe; choosing again"
            );
        } else {
            thread::sleep(params.claim_wait);
            if read_content(dev, id)? == SlotContent::Node(claim.clone()) {
                clear_other_slots_of(dev, me, slot, &views)?;
                return Ok(Claimed { slot, beat: claim });
            }
        }
        lost += 1;
        if lost >= params.max_attempts {
            return Err(ClaimError::Contended(lost));
        }
        // Jitter so that two losers do not march in step.
        let jitter = params.interval.as_micros() as u64 / 4 + 1;
        thread::sleep(Duration::from_micros(u64::from(random_u32()) % jitter));
    }
}

/// Once a slot is ours, clear any other slot still carrying our UUID (a
/// claim abandoned as too slow, or an older slot of ours): left alone, it
/// would go stale and make monitors report this live node as dead.  Only
/// this node writes its UUID, so such a slot is ours to clear; a claimant
/// that judged it stale meanwhile either wrote after our re-read (we see
/// the change and leave it) or has its claim erased by our clear and backs
/// off at its re-read.
fn clear_other_slots_of(
    dev: &LockstateDevice,
    me: &NodeIdentity,
    ours: u32,
    views: &[SlotView],
) -> Result<(), LockstateError> {
    for v in views.iter().filter(|v| v.index != ours) {
        if !matches!(&v.content, SlotContent::Node(h) if h.node_uuid == *me.uuid.as_bytes()) {
            continue;
        }
        let id = SlotId::Heartbeat(v.index);
        if read_content(dev, id)? == v.content {
            tracing::info!(slot = v.index, "clearing an old heartbeat slot of ours");
            dev.write_slot(id, &Slot::Empty)?;
        }
    }
    Ok(())
}

fn read_content(dev: &LockstateDevice, id: SlotId) -> Result<SlotContent, LockstateError> {
    match dev.read_slot(id) {
        Ok(s) => Ok(SlotContent::from_slot(s)),
        Err(e @ LockstateError::Io { .. }) | Err(e @ LockstateError::Mapping(_)) => Err(e),
        Err(e) => Ok(SlotContent::Corrupt(e.to_string())),
    }
}

/// What the heartbeat writer reports.  After any of these but `Late` the
/// writer has stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatEvent {
    /// A read or write of our slot failed; no retry was made.
    DeviceError {
        slot: u32,
        failure: IoFailure,
        errno: Option<i32>,
        message: String,
    },
    /// Our slot holds something other than our last beat: another node
    /// took it (it judged us dead), or it was overwritten or corrupted.
    SlotLost { slot: u32, found: String },
    /// A beat went out more than one interval late (this node was stalled;
    /// others may be about to judge it dead).
    Late { slot: u32, by: Duration },
}

struct Shared {
    counter: AtomicU64,
    owner_epoch: AtomicU64,
    state: AtomicU8,
}

enum Ctl {
    Stop {
        clear: bool,
        done: mpsc::Sender<Result<(), LeaveError>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LeaveError {
    #[error("the heartbeat writer had already stopped (see its events)")]
    Stopped,
    #[error("our heartbeat slot no longer holds our beat ({0}); left it alone")]
    SlotLost(String),
    #[error("clearing our heartbeat slot: {0}")]
    Lockstate(#[from] LockstateError),
}

/// The thread that beats in this node's slot.  Dropping it stops the
/// thread and leaves the slot as it is (as a crash would); [`Self::leave`]
/// clears it.
pub struct HeartbeatWriter {
    shared: Arc<Shared>,
    ctl: mpsc::Sender<Ctl>,
    thread: Option<thread::JoinHandle<()>>,
}

fn state_from_u8(v: u8) -> HeartbeatState {
    match v {
        1 => HeartbeatState::Joining,
        3 => HeartbeatState::Left,
        4 => HeartbeatState::Fenced,
        _ => HeartbeatState::Member,
    }
}

impl HeartbeatWriter {
    /// Start beating in `claimed.slot`, first beat at once.  Events go to
    /// `events` (an unbounded channel: the writer sends at most one event
    /// per beat, and stops after any but `Late`).
    pub fn start(
        dev: Arc<LockstateDevice>,
        claimed: Claimed,
        interval: Duration,
        events: UnboundedSender<HeartbeatEvent>,
    ) -> std::io::Result<HeartbeatWriter> {
        let shared = Arc::new(Shared {
            counter: AtomicU64::new(claimed.beat.counter),
            owner_epoch: AtomicU64::new(claimed.beat.owner_epoch),
            // The claim's state (Joining) until the caller says Member.
            state: AtomicU8::new(claimed.beat.state as u8),
        });
        let (ctl, ctl_rx) = mpsc::channel();
        let slot = claimed.slot;
        let sh = shared.clone();
        let thread = thread::Builder::new()
            .name(format!("mxfs-hb{slot}"))
            .spawn(move || beat_loop(&dev, claimed, interval, &sh, &ctl_rx, &events))?;
        Ok(HeartbeatWriter {
            shared,
            ctl,
            thread: Some(thread),
        })
    }

    /// The counter of the last beat written.
    #[cfg(test)]
    pub fn counter(&self) -> u64 {
        self.shared.counter.load(Ordering::SeqCst)
    }

    /// Carried in the next beats.
    #[cfg(test)]
    pub fn set_owner_epoch(&self, epoch: u64) {
        self.shared.owner_epoch.store(epoch, Ordering::SeqCst);
    }

    /// Carried in the next beats: `Member` once joined, `Fenced` before
    /// stopping after a fence.
    pub fn set_state(&self, state: HeartbeatState) {
        self.shared.state.store(state as u8, Ordering::SeqCst);
    }

    /// Clean leave: stop beating and clear our slot (only if it still
    /// holds our last beat).
    pub fn leave(mut self) -> Result<(), LeaveError> {
        self.stop(true)
    }

    /// Stop beating, leaving the slot as it is (it goes stale).
    pub fn abandon(mut self) -> Result<(), LeaveError> {
        self.stop(false)
    }

    fn stop(&mut self, clear: bool) -> Result<(), LeaveError> {
        let (done, done_rx) = mpsc::channel();
        let sent = self.ctl.send(Ctl::Stop { clear, done }).is_ok();
        let result = if sent {
            done_rx.recv().unwrap_or(Err(LeaveError::Stopped))
        } else {
            Err(LeaveError::Stopped)
        };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        result
    }
}

impl Drop for HeartbeatWriter {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop(false);
        }
    }
}

fn beat_loop(
    dev: &LockstateDevice,
    claimed: Claimed,
    interval: Duration,
    shared: &Shared,
    ctl: &mpsc::Receiver<Ctl>,
    events: &UnboundedSender<HeartbeatEvent>,
) {
    let slot = claimed.slot;
    let id = SlotId::Heartbeat(slot);
    let mut last = claimed.beat;
    let mut next = Instant::now();
    let device_error = |e: &LockstateError| {
        let (failure, errno) = io_failure(e).unwrap_or((IoFailure::Other, None));
        let _ = events.send(HeartbeatEvent::DeviceError {
            slot,
            failure,
            errno,
            message: e.to_string(),
        });
    };
    // Is the slot still ours?  None: yes.  Some: the event was sent.
    let check = |last: &Heartbeat| -> Option<()> {
        match read_content(dev, id) {
            Ok(SlotContent::Node(h)) if h == *last => None,
            Ok(other) => {
                let _ = events.send(HeartbeatEvent::SlotLost {
                    slot,
                    found: other.describe(),
                });
                Some(())
            }
            Err(e) => {
                device_error(&e);
                Some(())
            }
        }
    };
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match ctl.recv_timeout(wait) {
            Ok(Ctl::Stop { clear, done }) => {
                let r = if !clear {
                    Ok(())
                } else {
                    match read_content(dev, id) {
                        Ok(SlotContent::Node(h)) if h == last => dev
                            .write_slot(id, &Slot::Empty)
                            .map_err(LeaveError::Lockstate),
                        Ok(other) => Err(LeaveError::SlotLost(other.describe())),
                        Err(e) => Err(LeaveError::Lockstate(e)),
                    }
                };
                let _ = done.send(r);
                return;
            }
            // The handle is gone without a stop: leave the slot as is.
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if check(&last).is_some() {
            return;
        }
        let beat = Heartbeat {
            counter: last.counter.wrapping_add(1),
            timestamp_ns: now_ns(),
            state: state_from_u8(shared.state.load(Ordering::SeqCst)),
            owner_epoch: shared.owner_epoch.load(Ordering::SeqCst),
            ..last.clone()
        };
        if let Err(e) = dev.write_slot(id, &Slot::Heartbeat(beat.clone())) {
            device_error(&e);
            return;
        }
        shared.counter.store(beat.counter, Ordering::SeqCst);
        last = beat;
        // Keep to the schedule (no drift from I/O time); after a stall of
        // more than a beat, say so and restart the schedule from now.
        next += interval;
        let now = Instant::now();
        if now > next {
            let by = now - next;
            if by >= interval {
                let _ = events.send(HeartbeatEvent::Late { slot, by });
            }
            next = now;
        }
    }
}

/// A heartbeat slot's content as the monitor compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotContent {
    Empty,
    Node(Heartbeat),
    /// Failed to decode (torn, garbage, wrong kind): the error text.
    Corrupt(String),
}

impl SlotContent {
    fn from_slot(s: Slot) -> SlotContent {
        match s {
            Slot::Empty => SlotContent::Empty,
            Slot::Heartbeat(h) => SlotContent::Node(h),
            other => SlotContent::Corrupt(format!("not a heartbeat: {other:?}")),
        }
    }

    fn describe(&self) -> String {
        match self {
            SlotContent::Empty => "an empty slot".into(),
            SlotContent::Node(h) => format!(
                "node {:016x} generation {} counter {} ({:?})",
                h.node_id, h.generation, h.counter, h.state
            ),
            SlotContent::Corrupt(e) => format!("a corrupt slot: {e}"),
        }
    }
}

/// One heartbeat slot as last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    /// 0..64
    pub index: u32,
    pub content: SlotContent,
    /// When this observer first saw the current content (its own clock).
    pub last_change: Instant,
}

impl SlotView {
    #[cfg(test)]
    pub fn node_id(&self) -> Option<u64> {
        match &self.content {
            SlotContent::Node(h) => Some(h.node_id),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn counter(&self) -> Option<u64> {
        match &self.content {
            SlotContent::Node(h) => Some(h.counter),
            _ => None,
        }
    }

    /// How long the content has stayed the same, by our clock.
    pub fn unchanged_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_change)
    }

    /// A node's slot (not one that left cleanly) that has not changed for
    /// `dead_after`: its node is dead or cut off from the disk.
    #[cfg(test)]
    pub fn is_stale(&self, now: Instant, dead_after: Duration) -> bool {
        matches!(&self.content, SlotContent::Node(h) if h.state != HeartbeatState::Left)
            && self.unchanged_for(now) >= dead_after
    }
}

/// Watches all heartbeat slots across scans.
#[derive(Debug, Default)]
pub struct HeartbeatMonitor {
    seen: Vec<Option<(SlotContent, Instant)>>,
}

impl HeartbeatMonitor {
    pub fn new() -> HeartbeatMonitor {
        HeartbeatMonitor {
            seen: vec![None; HEARTBEAT_SLOTS as usize],
        }
    }

    /// Read every heartbeat slot (in as few I/Os as their placement
    /// allows) and return each one's view.  An I/O error is an error (the
    /// caller may be fenced); a slot that fails to decode is
    /// [`SlotContent::Corrupt`], tracked like any other content.
    pub fn scan(&mut self, dev: &LockstateDevice) -> Result<Vec<SlotView>, LockstateError> {
        let ids: Vec<SlotId> = (0..HEARTBEAT_SLOTS).map(SlotId::Heartbeat).collect();
        let slots = dev.read_slots(&ids)?;
        let now = Instant::now();
        if self.seen.len() != HEARTBEAT_SLOTS as usize {
            self.seen = vec![None; HEARTBEAT_SLOTS as usize];
        }
        let mut out = Vec::with_capacity(slots.len());
        for (i, (_, res)) in slots.into_iter().enumerate() {
            let content = match res {
                Ok(s) => SlotContent::from_slot(s),
                Err(e) => SlotContent::Corrupt(e.to_string()),
            };
            let entry = &mut self.seen[i];
            let last_change = match entry {
                Some((old, at)) if *old == content => *at,
                _ => now,
            };
            *entry = Some((content.clone(), last_change));
            out.push(SlotView {
                index: i as u32,
                content,
                last_change,
            });
        }
        Ok(out)
    }
}
