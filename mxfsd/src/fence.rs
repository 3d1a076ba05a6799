//! This node's part of fencing layer 1 (DESIGN.md §5): its SCSI-3
//! persistent reservation key on the volume's device.
//!
//! A mount joins by registering key = node id (REGISTER AND IGNORE
//! EXISTING KEY, without APTPL); the first owner reserves the LUN Write
//! Exclusive – Registrants Only, so that once a node's key is preempted
//! the array rejects its writes.  Unmount releases what this node holds
//! and unregisters.  Registration happens only here, at join: a running
//! daemon that finds its key gone never registers again (that would undo
//! a fence); it reports itself fenced instead.
//!
//! `fence=none` (mount option, passed as `--fence none`) skips all of it
//! for devices without PR, and says loudly that split brain is then not
//! prevented.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use mxfs_core::reservation::{PrDevice, PrError, Route, SCSI_TYPE_WRITE_EXCLUSIVE_REG_ONLY};
use tracing::{error, info, warn};

/// How this mount is fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FenceMode {
    /// SCSI-3 persistent reservations (SG_IO, or `linux/pr.h` on NVMe).
    Scsi,
    /// No fencing: only for devices without PR, at the admin's risk.
    None,
}

impl FenceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FenceMode::Scsi => "scsi",
            FenceMode::None => "none",
        }
    }
}

/// Why joining the reservation failed.  Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("cannot open {0} for persistent reservations: {1}")]
    Open(PathBuf, std::io::Error),
    // The kernel keeps 255 bytes of a reason: what to do comes first.
    #[error(
        "{0} has no SCSI-3 persistent reservations, so MXFS cannot fence: use a device with PR, \
         or mount with -o fence=none to accept the risk of split brain ({1})"
    )]
    NoPr(PathBuf, PrError),
    #[error(
        "{dev} is reserved by key 0x{key:016x} with PR type {pr_type}, not Write Exclusive - \
         Registrants Only: another cluster stack may be using this LUN; stop it, or clear the \
         reservation (sg_persist --out --clear) if it is stale"
    )]
    ForeignReservation { dev: PathBuf, key: u64, pr_type: u8 },
    #[error("persistent reservation on {0}: {1}")]
    Pr(PathBuf, PrError),
    #[error("fence=none: this node has no reservation key to fence others with")]
    Disabled,
}

/// What preempting another node's key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preempted {
    /// Its key is gone now; `was_holder`: it held the reservation (it was
    /// the owner), which this node now holds.
    Done { was_holder: bool },
    /// It was not registered (it left cleanly, or someone fenced it
    /// first): nothing to do.
    NotRegistered,
}

/// How often a mounted node checks that its key is still registered:
/// the heartbeat interval (DESIGN.md §5).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// What the reservation looked like when this node joined, for the log
/// and D-Bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// This node made the reservation.
    Reserved,
    /// A registrants-only reservation was already held (by `holder`).
    AlreadyReserved { holder: u64 },
    /// fence=none.
    Unfenced,
}

/// This node's registration on the device.
#[derive(Debug)]
pub struct NodeFence {
    dev: Option<PrDevice>,
    path: PathBuf,
    key: u64,
}

impl NodeFence {
    /// Register `key` on `path` and make sure the registrants-only
    /// reservation is in place.  On any failure after registering, the
    /// registration is taken back: a refused mount leaves no key behind.
    pub fn join(path: &Path, key: u64, mode: FenceMode) -> Result<(NodeFence, Joined), FenceError> {
        if mode == FenceMode::None {
            warn!(
                device = %path.display(),
                "fence=none: no persistent reservation is taken; a failed or partitioned node \
                 cannot be fenced and split brain is NOT prevented"
            );
            let f = NodeFence {
                dev: None,
                path: path.to_path_buf(),
                key,
            };
            return Ok((f, Joined::Unfenced));
        }
        let dev = PrDevice::open(path).map_err(|e| FenceError::Open(path.to_path_buf(), e))?;
        match dev.register(key) {
            Ok(()) => {}
            Err(e @ (PrError::NoRoute(_) | PrError::Unsupported(_))) => {
                return Err(FenceError::NoPr(path.to_path_buf(), e))
            }
            Err(e) => return Err(FenceError::Pr(path.to_path_buf(), e)),
        }
        let fence = NodeFence {
            dev: Some(dev),
            path: path.to_path_buf(),
            key,
        };
        match fence.reserve() {
            Ok(j) => {
                info!(key = %format!("0x{key:016x}"), joined = ?j, "registered on the device");
                Ok((fence, j))
            }
            Err(e) => {
                fence.unregister();
                Err(e)
            }
        }
    }

    /// A restarted daemon re-attaching to a live mount: open the device
    /// but register nothing (a key removed meanwhile stays removed; the
    /// caller checks [`NodeFence::still_registered`]).
    pub fn attach(path: &Path, key: u64, mode: FenceMode) -> Result<NodeFence, FenceError> {
        let dev = match mode {
            FenceMode::None => None,
            FenceMode::Scsi => {
                Some(PrDevice::open(path).map_err(|e| FenceError::Open(path.to_path_buf(), e))?)
            }
        };
        Ok(NodeFence {
            dev,
            path: path.to_path_buf(),
            key,
        })
    }

    /// Take the reservation if nobody holds it, else say who does: what
    /// a client does when its owner leaves (the first to reserve is the
    /// next owner).
    pub fn claim(&self) -> Result<Joined, FenceError> {
        if self.dev.is_none() {
            return Ok(Joined::Unfenced);
        }
        self.reserve()
    }

    fn reserve(&self) -> Result<Joined, FenceError> {
        let dev = self.dev.as_ref().expect("reserve without a device");
        let pr = |e| FenceError::Pr(self.path.clone(), e);
        if dev.route() == Route::LinuxPr {
            // No way to read the holder: reserve, and a conflict means
            // another registrant already holds it.
            return match dev.reserve(self.key) {
                Ok(()) => Ok(Joined::Reserved),
                Err(PrError::Conflict) => Ok(Joined::AlreadyReserved { holder: 0 }),
                Err(e) => Err(pr(e)),
            };
        }
        match dev.read_reservation().map_err(pr)?.holder {
            None => match dev.reserve(self.key) {
                Ok(()) => Ok(Joined::Reserved),
                // Another node reserved between our read and our reserve
                // (two nodes mounting at once): the target decided, and
                // the holder is whoever it chose.
                Err(PrError::Conflict) => match dev.read_reservation().map_err(pr)?.holder {
                    Some(h) if h.pr_type == SCSI_TYPE_WRITE_EXCLUSIVE_REG_ONLY => {
                        Ok(Joined::AlreadyReserved { holder: h.key })
                    }
                    Some(h) => Err(FenceError::ForeignReservation {
                        dev: self.path.clone(),
                        key: h.key,
                        pr_type: h.pr_type,
                    }),
                    None => Err(pr(PrError::Conflict)),
                },
                Err(e) => Err(pr(e)),
            },
            Some(h) if h.pr_type == SCSI_TYPE_WRITE_EXCLUSIVE_REG_ONLY => {
                Ok(Joined::AlreadyReserved { holder: h.key })
            }
            Some(h) => Err(FenceError::ForeignReservation {
                dev: self.path.clone(),
                key: h.key,
                pr_type: h.pr_type,
            }),
        }
    }

    fn unregister(&self) {
        if let Some(dev) = &self.dev {
            if let Err(e) = dev.register(0) {
                error!(device = %self.path.display(), "could not unregister key 0x{:016x}: {e}", self.key);
            }
        }
    }

    /// The PR route, for D-Bus: `scsi`, `nvme`, or `none` (fence=none).
    pub fn capability(&self) -> &'static str {
        match self.dev.as_ref().map(|d| d.route()) {
            None => "none",
            Some(Route::Scsi) => "scsi",
            Some(Route::LinuxPr) => "nvme",
        }
    }

    /// Whether this node's key is still registered (`None` where the
    /// route cannot tell, or with fence=none).
    pub fn still_registered(&self) -> Option<Result<bool, PrError>> {
        let dev = self.dev.as_ref()?;
        if dev.route() != Route::Scsi {
            return None;
        }
        Some(dev.read_keys().map(|k| k.keys.contains(&self.key)))
    }

    /// Check every `interval` that this node's key is still registered,
    /// until `stop` is signalled or dropped (`None`) or the key is gone
    /// (`Some(reason)`: this node has been fenced and must stop using the
    /// device).  Never registers again.  Where the key cannot be read
    /// (fence=none, NVMe) it only waits for `stop`.
    /// `tick` runs at every interval (the systemd watchdog ping).
    pub fn watch(
        &self,
        interval: Duration,
        stop: &Receiver<()>,
        tick: impl Fn(),
    ) -> Option<String> {
        let mut failing = false;
        loop {
            match stop.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => tick(),
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return None,
            }
            match self.still_registered() {
                None => {}
                Some(Ok(true)) => {
                    if failing {
                        info!("reading the registered keys works again");
                    }
                    failing = false;
                }
                Some(Ok(false)) => {
                    return Some(format!(
                        "key 0x{:016x} was removed from {} (preempted by another node)",
                        self.key,
                        self.path.display()
                    ))
                }
                Some(Err(e)) => {
                    if !failing {
                        warn!("cannot read the registered keys (will retry): {e}");
                    }
                    failing = true;
                }
            }
        }
    }

    /// Fence `victim`: PREEMPT AND ABORT its key (plain PREEMPT where the
    /// device lacks the abort), so that the device rejects its writes
    /// and drops the ones it has queued.  A preempt that fails but whose
    /// key is gone afterwards (another survivor, or our own earlier try)
    /// counts as done.  When the victim held the reservation, this node
    /// holds it afterwards (the preempt moves it; where a device only
    /// drops it, this node reserves).
    pub fn preempt(&self, victim: u64) -> Result<Preempted, FenceError> {
        let Some(dev) = &self.dev else {
            return Err(FenceError::Disabled);
        };
        let pr = |e| FenceError::Pr(self.path.clone(), e);
        if dev.route() == Route::Scsi && !dev.read_keys().map_err(pr)?.keys.contains(&victim) {
            return Ok(Preempted::NotRegistered);
        }
        let was_holder = match dev.route() {
            Route::Scsi => {
                dev.read_reservation().map_err(pr)?.holder.map(|h| h.key) == Some(victim)
            }
            Route::LinuxPr => false,
        };
        let r = match dev.preempt(self.key, victim, true) {
            Err(PrError::Unsupported(why)) => {
                info!("PREEMPT AND ABORT not supported ({why}); plain PREEMPT");
                dev.preempt(self.key, victim, false)
            }
            other => other,
        };
        if let Err(e) = r {
            let gone = dev.route() == Route::Scsi
                && dev.read_keys().is_ok_and(|k| !k.keys.contains(&victim));
            if !gone {
                return Err(pr(e));
            }
            info!(victim = %format!("0x{victim:016x}"), "the preempt failed ({e}) but the key is gone: done");
        }
        if was_holder {
            match dev.read_reservation().map_err(pr)?.holder {
                Some(h) if h.key == self.key => {}
                Some(h) => {
                    info!(holder = %format!("0x{:016x}", h.key), "after the preempt another node holds the reservation")
                }
                None => match dev.reserve(self.key) {
                    Ok(()) | Err(PrError::Conflict) => {}
                    Err(e) => return Err(pr(e)),
                },
            }
        }
        Ok(Preempted::Done { was_holder })
    }

    /// The key (node id) holding the reservation now (SCSI only; `None`
    /// where there is none or it cannot be read).
    pub fn reservation_holder(&self) -> Option<u64> {
        self.dev
            .as_ref()
            .filter(|d| d.route() == Route::Scsi)
            .and_then(|d| d.read_reservation().ok())
            .and_then(|r| r.holder)
            .map(|h| h.key)
    }

    /// Give the reservation back, staying registered (a take-over that
    /// failed).
    pub fn release(&self) {
        if let Some(dev) = &self.dev {
            if let Err(e) = dev.release(self.key) {
                warn!("releasing the reservation: {e}");
            }
        }
    }

    /// Leave at unmount: release the reservation if this node holds it,
    /// then unregister.  A key already gone (this node was fenced) is not
    /// registered again.
    pub fn leave(&self) {
        if self.dev.is_none() {
            return;
        }
        if let Some(Ok(false)) = self.still_registered() {
            warn!(
                "key 0x{:016x} was already removed from the device (fenced?)",
                self.key
            );
            return;
        }
        self.release();
        self.unregister();
        info!(key = %format!("0x{:016x}", self.key), "unregistered from the device");
    }
}
