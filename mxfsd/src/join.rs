//! Joining a volume: which part this node takes, and what it needs for
//! that part before it answers DAEMON_READY.
//!
//! This module owns the decision and the preparation; `main.rs` owns the
//! conversation with the kernel.
//!
//! - **Who owns.**  The device decides, atomically: the node whose PR
//!   RESERVE made the registrants-only reservation is the owner
//!   ([`crate::fence::Joined::Reserved`]); a node that finds it held is a
//!   client of the holder (the reservation key is the holder's node id).
//!   Two nodes mounting a fresh volume at the same time therefore end
//!   with one owner, and only the owner makes the lockstate.  (The design
//!   has the DLM's `owner` resource decide once members exist; until the
//!   DLM runs between daemons, the reservation is the only arbiter, at
//!   the first mount and at each hand-over.)
//! - **Owner.**  Mounts its private view of the XFS ([`XfsView`]), makes
//!   `.mxfs/lockstate` if the volume has none (then freezes and thaws the
//!   XFS once, so the raw walk finds it), bumps the owner epoch in the
//!   header, and serves clients through a [`FileService`] on that view.
//! - **Client.**  Waits for the owner's lockstate to appear on the raw
//!   device (the owner may be making it), takes the volume secret from its
//!   header, and follows the owner.
//! - **Hand-over.**  An owner that unmounts drains its clients' requests,
//!   unmounts its XFS view and only then releases the reservation.  Its
//!   clients ([`Successor`]) keep trying the reservation meanwhile: the
//!   first whose RESERVE succeeds mounts the XFS (cleanly unmounted, so
//!   no log recovery), bumps the epoch and serves; the others follow the
//!   new holder.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::{info, warn};

use crate::cluster::{Claim, Role, Succession, Takeover};
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

/// A client's way to the volume when its owner leaves: the reservation
/// decides who is next, as it decided the first owner.
pub struct Successor {
    pub device: std::path::PathBuf,
    pub volume: uuid::Uuid,
    pub node_id: u64,
    pub fence: Arc<NodeFence>,
}

impl Succession for Successor {
    fn claim(&self) -> Claim {
        let holder = match self.fence.claim() {
            Ok(Joined::Reserved) => self.node_id,
            Ok(Joined::AlreadyReserved { holder }) => holder,
            Ok(Joined::Unfenced) => return Claim::Wait,
            Err(e) => {
                warn!("reading the reservation for a new owner: {e}");
                return Claim::Wait;
            }
        };
        if holder == 0 {
            return Claim::Wait; // NVMe: the holder cannot be read
        }
        if holder != self.node_id {
            return Claim::Follow(holder);
        }
        // The reservation is ours: the old owner unmounted its XFS
        // before it released it.
        match as_owner(&self.device, &self.volume, self.node_id, false) {
            Ok(Plan {
                role,
                owner: Some(parts),
                ..
            }) => Claim::Owner(Takeover {
                epoch: role.epoch(),
                service: parts.service,
                hold: Box::new(parts.view),
            }),
            Ok(_) => Claim::Wait,
            Err(e) => {
                // Holding the reservation without serving would stall
                // everyone: give it back for another node to try.
                warn!("taking the volume over failed: {e:#}; releasing the reservation");
                self.fence.release();
                Claim::Wait
            }
        }
    }
}
