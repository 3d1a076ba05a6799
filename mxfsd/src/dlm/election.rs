//! Owner election on top of the DLM (design section 3).
//!
//! This module owns who the owner is: the member holding the resource
//! [`OWNER_RESOURCE`] in EX.  It does no disk I/O: the owner epoch's
//! persistent copy is in the lockstate header, which someone else reads
//! and writes, so the epoch goes in (a function that reads the header's
//! epoch, called once the lock is won, after the old owner is fenced) and
//! comes out (the new epoch, header + 1, for the caller to write).
//!
//! A client learns *who* the owner is without any new message: the owner
//! also holds its own marker resource `owner-node:<id>` in EX, and a
//! client probes the members' markers with NOQUEUE PR; the refused one is
//! the owner's.  The answer can be stale at once (ownership moves), which
//! the epoch carried in owner messages catches.
//!
//! Every client queues for `owner` EX once it has found the owner
//! (`cluster::contend_for_owner`); the request is granted when the owner
//! releases it or departs (its locks are purged at the view that drops
//! it), in the deterministic order of the rebuild (the lowest node id
//! first), so exactly one survivor wins.  The winner takes the volume
//! over and then [`OwnerElection::adopt`]s the grant.  The owner hands
//! over at unmount; the BASTs that tell it of queued clients
//! (`OwnerElection::contested`) are not acted on yet, and only tests
//! read them.

use super::runtime::{Dlm, LockError, LockHandle};
use super::{Mode, NodeId, RequestFlags};

pub const OWNER_RESOURCE: &[u8] = b"owner";

/// The marker resource the owner `node` holds in EX while it is owner.
pub fn owner_marker(node: NodeId) -> Vec<u8> {
    format!("owner-node:{node:016x}").into_bytes()
}

#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This node is the owner; write `epoch` to the lockstate header.
    Owner { epoch: u64 },
    /// Another node owns the volume (None: not found by the probe, e.g.
    /// while ownership is changing hands).
    Client { owner_node: Option<NodeId> },
}

/// One node's part in the election.
#[derive(Debug)]
pub struct OwnerElection {
    dlm: Dlm,
    owner: Option<LockHandle>,
    marker: Option<LockHandle>,
    epoch: Option<u64>,
}

impl OwnerElection {
    pub fn new(dlm: Dlm) -> Self {
        OwnerElection {
            dlm,
            owner: None,
            marker: None,
            epoch: None,
        }
    }

    /// The epoch while this node is the owner.
    #[cfg(test)]
    pub fn epoch(&self) -> Option<u64> {
        self.epoch.filter(|_| self.owner.is_some())
    }

    /// Try for `owner` EX without queueing.  `header_epoch` reads the
    /// epoch in the lockstate header; it is called only if we win.
    #[cfg(test)]
    pub async fn try_acquire(
        &mut self,
        header_epoch: impl FnOnce() -> u64,
    ) -> Result<Role, LockError> {
        if let Some(epoch) = self.epoch() {
            return Ok(Role::Owner { epoch });
        }
        match self
            .dlm
            .lock(OWNER_RESOURCE, Mode::EX, RequestFlags { noqueue: true })
            .await
        {
            Ok(h) => Ok(Role::Owner {
                epoch: self.won(h, header_epoch).await?,
            }),
            Err(LockError::NotGranted) => Ok(Role::Client {
                owner_node: self.find_owner().await?,
            }),
            Err(e) => Err(e),
        }
    }

    /// Queue for `owner` EX and wait until this node is the owner; the new
    /// epoch.  Dropping the future leaves the queue.
    #[cfg(test)]
    pub async fn wait_for_ownership(
        &mut self,
        header_epoch: impl FnOnce() -> u64,
    ) -> Result<u64, LockError> {
        if let Some(epoch) = self.epoch() {
            return Ok(epoch);
        }
        let h = self
            .dlm
            .lock(OWNER_RESOURCE, Mode::EX, RequestFlags::default())
            .await?;
        self.won(h, header_epoch).await
    }

    #[cfg(test)]
    async fn won(
        &mut self,
        owner: LockHandle,
        header_epoch: impl FnOnce() -> u64,
    ) -> Result<u64, LockError> {
        let marker = self.take_marker().await?;
        let epoch = header_epoch().wrapping_add(1);
        self.owner = Some(owner);
        self.marker = Some(marker);
        self.epoch = Some(epoch);
        Ok(epoch)
    }

    /// Hold `owner`, granted to a contender that has since taken the
    /// volume over at `epoch` (the caller wrote it to the header): take
    /// the marker too, so that members find this node as the owner.
    pub async fn adopt(&mut self, owner: LockHandle, epoch: u64) -> Result<(), LockError> {
        let marker = self.take_marker().await?;
        self.owner = Some(owner);
        self.marker = Some(marker);
        self.epoch = Some(epoch);
        Ok(())
    }

    async fn take_marker(&self) -> Result<LockHandle, LockError> {
        // Probes hold the marker only for an instant: queue behind them.
        self.dlm
            .lock(
                &owner_marker(self.dlm.node_id()),
                Mode::EX,
                RequestFlags::default(),
            )
            .await
    }

    /// Who holds `owner`, by probing the members' markers.
    #[cfg(test)]
    pub async fn find_owner(&self) -> Result<Option<NodeId>, LockError> {
        if self.owner.is_some() {
            return Ok(Some(self.dlm.node_id()));
        }
        Self::holder(&self.dlm).await
    }

    /// Who holds `owner`, seen from any member, this one included: the
    /// member whose marker a NOQUEUE PR probe is refused.
    pub async fn holder(dlm: &Dlm) -> Result<Option<NodeId>, LockError> {
        let (_, members) = dlm.members();
        for m in members {
            match dlm
                .lock(&owner_marker(m), Mode::PR, RequestFlags { noqueue: true })
                .await
            {
                Ok(probe) => probe.unlock(),
                Err(LockError::NotGranted) => return Ok(Some(m)),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// As owner: wait until someone queues for `owner`; the mode asked
    /// for.  None if this node is not the owner (or the DLM stopped).
    #[cfg(test)]
    pub async fn contested(&mut self) -> Option<Mode> {
        let h = self.owner.as_mut()?;
        h.blocked().await.map(|b| b.requested)
    }

    /// Give up ownership (after the XFS is unmounted cleanly): the marker
    /// first, so nobody finds an owner that is no longer one.
    pub fn release(&mut self) {
        if let Some(m) = self.marker.take() {
            m.unlock();
        }
        if let Some(o) = self.owner.take() {
            o.unlock();
        }
        self.epoch = None;
    }
}
