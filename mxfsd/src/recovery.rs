//! Fencing a dead or cut-off member, as the cluster runtime decides
//! (design section 4, failover steps 1 and 2; issue 5).
//!
//! This module owns the storage side of a recovery: the SCSI preempt of
//! the victim's key ([`NodeFence::preempt`]) and the purge of its lock
//! records in the lockstate.  The runtime owns the rest: who is dead
//! ([`crate::cluster::liveness`]), dropping the victim's open files and
//! locks on the owner, and the take-over when the victim owned the
//! volume (the reservation, which the preempt moved to this node, makes
//! this node the next owner through the usual [`crate::join::Successor`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::cluster::{FenceOutcome, Fencer};
use crate::fence::{NodeFence, Preempted};
use crate::lockstate::{purge, LockstateDevice, Opened};

pub struct Recovery {
    pub fence: Arc<NodeFence>,
    pub device: PathBuf,
}

impl Fencer for Recovery {
    fn fence(&self, victim: u64) -> FenceOutcome {
        let who = format!("{victim:016x}");
        let t = Instant::now();
        let was_holder = match self.fence.preempt(victim) {
            Ok(Preempted::Done { was_holder }) => was_holder,
            Ok(Preempted::NotRegistered) => return FenceOutcome::NotRegistered,
            Err(e) => return FenceOutcome::Failed(e.to_string()),
        };
        let preempt = t.elapsed();
        info!(
            victim = %who,
            was_owner = was_holder,
            ms = preempt.as_millis() as u64,
            "recovery step 1: key 0x{who} preempted; the device rejects its writes"
        );
        // Step 2: its lock records (its DLM grants: `owner` and its
        // marker when it owned the volume).  File locks have none (they
        // live in the DLM's file-lock tables, which drop a dead node's
        // when the DLM purges it); the purge does not hold up the
        // take-over.
        let t = Instant::now();
        let records = match LockstateDevice::open(&self.device) {
            Ok(Opened::Ready(dev)) => match purge(&dev, victim) {
                Ok(r) => r.total(),
                Err(e) => {
                    warn!(victim = %who, "recovery step 2: purging its lock records: {e}");
                    0
                }
            },
            Ok(Opened::Absent(_)) => 0,
            Err(e) => {
                warn!(victim = %who, "recovery step 2: opening the lockstate: {e}");
                0
            }
        };
        let records_took = t.elapsed();
        info!(
            victim = %who,
            cleared = records,
            ms = records_took.as_millis() as u64,
            "recovery step 2: lock records of {who} cleared"
        );
        FenceOutcome::Fenced {
            was_owner: was_holder,
            preempt,
            records: records_took,
            records_cleared: records,
        }
    }
}
