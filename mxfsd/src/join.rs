//! Joining a volume: which part this node takes, and what it needs for
//! that part before it answers DAEMON_READY.
//!
//! This module owns the decision and the preparation; `main.rs` owns the
//! conversation with the kernel.
//!
//! - **Who owns first.**  The device decides, atomically: the node whose
//!   PR RESERVE made the registrants-only reservation is the first owner
//!   ([`crate::fence::Joined::Reserved`]); a node that finds it held is a
//!   client of the holder (the reservation key is the holder's node id).
//!   Two nodes mounting a fresh volume at the same time therefore end
//!   with one owner, and only the owner makes the lockstate.  There is no
//!   DLM between the daemons yet at that point (they have not found each
//!   other), so it cannot decide; from then on the DLM's `owner` resource
//!   does ([`Successor`]), and the reservation follows it.
//! - **Owner.**  Mounts its private view of the XFS ([`XfsView`]), makes
//!   `.mxfs/lockstate` if the volume has none (then freezes and thaws the
//!   XFS once, so the raw walk finds it), bumps the owner epoch in the
//!   header, and serves clients through a [`FileService`] on that view.
//! - **Client.**  Waits for the owner's lockstate to appear on the raw
//!   device (the owner may be making it), takes the volume secret from its
//!   header, and follows the owner.
//! - **Hand-over and failover.**  Every client queues for `owner` EX.  An
//!   owner that unmounts drains its clients' requests, leaves the DLM,
//!   unmounts its XFS view and only then releases the reservation; a dead
//!   owner is fenced by the lowest survivor, which the preempt makes the
//!   reservation's holder.  The old owner's `owner` lock goes with it
//!   (released as its DLM stops, or purged by the view without it that
//!   the lowest survivor then issues), and the DLM grants the lock to the
//!   next in line (at a rebuild, the lowest node id: the fencer).  That
//!   node
//!   ([`Successor::take_over`]) reserves (waiting while a leaving owner
//!   finishes) or finds the reservation already its own, mounts the XFS
//!   (cleanly unmounted, or replaying a dead owner's log), bumps the
//!   epoch and serves; the others follow the reservation's new holder.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::{info, warn};

use crate::cluster::{Role, Succession, Takeover};
use crate::fence::{Joined, NodeFence};
use crate::fileserv::FileService;
use crate::lockstate::{self, Header, Layout, LockstateDevice, Opened};
use crate::volume_keys::VolumeSecret;
use crate::xfs_view::XfsView;

/// How long a client waits for the owner to make the lockstate.
pub const LOCKSTATE_WAIT: Duration = Duration::from_secs(30);

/// What the owner brings to the cluster.
pub struct OwnerParts {
    /// Dropped (unmounted) last, after the service.
    pub view: XfsView,
    pub service: Arc<FileService>,
}

pub struct Plan {
    pub role: Role,
    pub secret: VolumeSecret,
    pub owner: Option<OwnerParts>,
}

/// The owner: view, lockstate (made if missing), a new epoch.
/// `reattach`: a restarted daemon of a live mount keeps the epoch.
pub fn as_owner(
    device: &Path,
    volume: &uuid::Uuid,
    node_id: u64,
    reattach: bool,
) -> anyhow::Result<Plan> {
    let view = XfsView::mount(device, volume).context("mounting the daemon's view of the XFS")?;
    let root = view
        .root()
        .context("the XFS view has no root")?
        .try_clone()
        .context("duplicating the XFS root")?;
    let header = match LockstateDevice::open(device).context("reading the lockstate")? {
        Opened::Ready(dev) => {
            let mut h = dev.header().clone();
            if !reattach {
                h.owner_epoch += 1;
                h.owner_node = node_id;
                dev.write_header(&h)
                    .context("writing the new owner epoch")?;
            }
            h
        }
        Opened::Absent(a) => {
            info!(
                missing = a.missing,
                "a fresh volume: making .mxfs/lockstate"
            );
            let layout = Layout::new(a.block_size).context("lockstate layout")?;
            let h = lockstate::create(
                &root,
                &lockstate::CreateParams {
                    layout,
                    volume: a.volume,
                    owner_epoch: 1,
                    owner_node: node_id,
                },
            )
            .context("making .mxfs/lockstate")?;
            lockstate::freeze_thaw(&root).context("freezing and thawing the XFS once")?;
            h
        }
    };
    let service = Arc::new(
        FileService::from_root_fd(root.into()).context("the file service on the XFS view")?,
    );
    info!(epoch = header.owner_epoch, "owner of the volume");
    Ok(Plan {
        role: Role::Owner {
            epoch: header.owner_epoch,
        },
        secret: VolumeSecret::new(header.secret),
        owner: Some(OwnerParts { view, service }),
    })
}

/// A client of `owner`: the secret from the lockstate the owner made.
pub fn as_client(device: &Path, owner: u64, wait: Duration) -> anyhow::Result<Plan> {
    let header = wait_for_lockstate(device, wait)?;
    Ok(Plan {
        role: Role::Client {
            owner,
            epoch: header.owner_epoch,
        },
        secret: VolumeSecret::new(header.secret),
        owner: None,
    })
}

fn wait_for_lockstate(device: &Path, wait: Duration) -> anyhow::Result<Header> {
    let deadline = Instant::now() + wait;
    loop {
        match LockstateDevice::open(device).context("reading the lockstate")? {
            Opened::Ready(dev) => return Ok(dev.header().clone()),
            Opened::Absent(a) => {
                if Instant::now() >= deadline {
                    bail!(
                        "the owner has not made the volume's lockstate ({} is missing) within {} s",
                        a.missing,
                        wait.as_secs()
                    );
                }
                crate::supervision::watchdog();
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// How long a client granted `owner` waits for the old owner to give the
/// reservation back (it unmounts its XFS first).
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(30);

/// A client's way to the volume when its owner leaves: the DLM's `owner`
/// lock decides who takes it over; the reservation follows (the winner
/// reserves once the old owner has released it, or holds it already
/// because its fence moved it there), and the other clients follow the
/// reservation's holder.
pub struct Successor {
    pub device: std::path::PathBuf,
    pub volume: uuid::Uuid,
    pub node_id: u64,
    pub fence: Arc<NodeFence>,
}

impl Succession for Successor {
    fn holder(&self) -> Option<u64> {
        self.fence.reservation_holder().filter(|h| *h != 0)
    }

    fn take_over(
        &self,
        old_owner: u64,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<Takeover, String> {
        let deadline = Instant::now() + TAKEOVER_WAIT;
        loop {
            if *stop.borrow() {
                return Err("this node is unmounting".into());
            }
            match self.fence.claim() {
                Ok(Joined::Reserved) => break,
                Ok(Joined::AlreadyReserved { holder }) if holder == self.node_id => break,
                Ok(Joined::AlreadyReserved { holder: 0 }) => {
                    return Err("the reservation's holder cannot be read (NVMe)".into())
                }
                Ok(Joined::AlreadyReserved { holder }) if holder != old_owner => {
                    return Err(format!(
                        "node {holder:016x} holds the reservation, not the old owner"
                    ))
                }
                // the old owner is still unmounting its XFS
                Ok(Joined::AlreadyReserved { .. }) => {}
                Ok(Joined::Unfenced) => return Err("no reservation to take (fence=none)".into()),
                Err(e) => warn!("reading the reservation to take the volume over: {e}"),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the old owner {old_owner:016x} still holds the reservation after {} s",
                    TAKEOVER_WAIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        // The reservation is ours: the old owner unmounted its XFS before
        // it released it, or was fenced.
        match as_owner(&self.device, &self.volume, self.node_id, false) {
            Ok(Plan {
                role,
                owner: Some(parts),
                ..
            }) => Ok(Takeover {
                epoch: role.epoch(),
                service: parts.service,
                hold: Box::new(parts.view),
            }),
            other => {
                // Holding the reservation without serving would stall
                // everyone: give it back for the next in line.
                self.fence.release();
                Err(match other {
                    Err(e) => format!("{e:#}"),
                    Ok(_) => "no XFS view".into(),
                })
            }
        }
    }
}
