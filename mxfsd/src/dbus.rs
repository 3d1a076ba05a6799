//! The volume's D-Bus object (DESIGN.md §8): one well-known name per
//! volume on the system bus, `org.mxfs1.Volume.U<uuid hex>` (a name
//! element may not start with a digit), object `/org/mxfs1/Volume`,
//! interface `org.mxfs1.Volume`, version 1 in the name.  Read-only
//! properties describe the volume and this node's part in it; the
//! `Fenced` signal tells watchers this node has been fenced.
//!
//! D-Bus is for status only: without a system bus the daemon logs that
//! and runs on.  Who may own the names and call in is set by
//! `dbus/org.mxfs1.conf`.

use tracing::warn;
use uuid::Uuid;
use zbus::object_server::SignalEmitter;

pub const PATH: &str = "/org/mxfs1/Volume";

/// The well-known name of a volume's daemon.
pub fn bus_name(volume: &Uuid) -> String {
    format!("org.mxfs1.Volume.U{}", volume.simple())
}

/// What the object shows.  The cluster fields (owner, epoch, members)
/// describe the one-node volume this version runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeStatus {
    pub volume_uuid: String,
    pub device: String,
    pub mountpoint: String,
    pub node_id: u64,
    pub role: String,
    pub owner_node: u64,
    pub epoch: u64,
    pub members: Vec<u64>,
    /// `registered`, `unfenced` (fence=none) or `fenced`.
    pub fencing_state: String,
    /// Why this node was fenced; empty otherwise.
    pub fence_reason: String,
    /// `scsi`, `nvme` or `none`.
    pub pr_capability: String,
    /// Metric: file requests forwarded to the owner (client) or served
    /// for clients (owner).
    pub forwarded_requests: u64,
    /// Metric: the fcntl/flock lock calls of this node's applications.
    pub lock_requests: u64,
    /// Metric: this node's grants by latency, waiting included, (bucket
    /// upper bound in µs, count).
    pub lock_grant_latency: Vec<(u64, u64)>,
    /// The last recovery this node ran (fence, purge, take-over, with
    /// durations); empty if none.
    pub last_recovery: String,
    /// Metric: (node id, ms since its disk heartbeat last moved).
    pub heartbeat_age: Vec<(u64, u64)>,
    /// The DLM's view number and members on this node, and the member
    /// it shows holding the `owner` resource (0: none found).
    pub lock_view: u64,
    pub lock_members: Vec<u64>,
    pub lock_owner: u64,
    /// This node's lock records in the lockstate (-1: not kept).
    pub lock_records: i64,
}

/// The parts of the status that the cluster runtime changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub role: String,
    pub owner_node: u64,
    pub epoch: u64,
    pub members: Vec<u64>,
    pub forwarded_requests: u64,
    pub lock_requests: u64,
    pub lock_grant_latency: Vec<(u64, u64)>,
    pub last_recovery: String,
    pub heartbeat_age: Vec<(u64, u64)>,
    pub lock_view: u64,
    pub lock_members: Vec<u64>,
    pub lock_owner: u64,
    /// This node's lock records in the lockstate (-1: not kept).
    pub lock_records: i64,
}

struct VolumeObject {
    status: VolumeStatus,
}

#[zbus::interface(name = "org.mxfs1.Volume")]
impl VolumeObject {
    #[zbus(property)]
    fn volume_uuid(&self) -> String {
        self.status.volume_uuid.clone()
    }
    #[zbus(property)]
    fn device(&self) -> String {
        self.status.device.clone()
    }
    #[zbus(property)]
    fn mountpoint(&self) -> String {
        self.status.mountpoint.clone()
    }
    #[zbus(property)]
    fn node_id(&self) -> u64 {
        self.status.node_id
    }
    #[zbus(property)]
    fn role(&self) -> String {
        self.status.role.clone()
    }
    #[zbus(property)]
    fn owner_node(&self) -> u64 {
        self.status.owner_node
    }
    #[zbus(property)]
    fn epoch(&self) -> u64 {
        self.status.epoch
    }
    #[zbus(property)]
    fn members(&self) -> Vec<u64> {
        self.status.members.clone()
    }
    #[zbus(property)]
    fn fencing_state(&self) -> String {
        self.status.fencing_state.clone()
    }
    #[zbus(property)]
    fn fence_reason(&self) -> String {
        self.status.fence_reason.clone()
    }
    #[zbus(property)]
    fn pr_capability(&self) -> String {
        self.status.pr_capability.clone()
    }
    #[zbus(property)]
    fn forwarded_requests(&self) -> u64 {
        self.status.forwarded_requests
    }
    #[zbus(property)]
    fn lock_requests(&self) -> u64 {
        self.status.lock_requests
    }
    /// (upper bound in µs, grants): how long lock grants took.
    #[zbus(property)]
    fn lock_grant_latency(&self) -> Vec<(u64, u64)> {
        self.status.lock_grant_latency.clone()
    }
    /// The last recovery this node ran, with each step's duration.
    #[zbus(property)]
    fn last_recovery(&self) -> String {
        self.status.last_recovery.clone()
    }
    /// (node id, ms): how long ago each node's disk heartbeat last moved.
    #[zbus(property)]
    fn heartbeat_age(&self) -> Vec<(u64, u64)> {
        self.status.heartbeat_age.clone()
    }
    /// The DLM's membership view on this node (the owner numbers them).
    #[zbus(property)]
    fn lock_view(&self) -> u64 {
        self.status.lock_view
    }
    /// The members of that view.
    #[zbus(property)]
    fn lock_members(&self) -> Vec<u64> {
        self.status.lock_members.clone()
    }
    /// The member the DLM shows holding the `owner` resource (0: none).
    #[zbus(property)]
    fn lock_owner(&self) -> u64 {
        self.status.lock_owner
    }
    /// How many of this node's DLM locks have a record in the lockstate
    /// file now (-1: records are not kept, e.g. no heartbeat slot).
    #[zbus(property)]
    fn lock_records(&self) -> i64 {
        self.status.lock_records
    }

    /// A node became a member (its peer link is up).
    #[zbus(signal)]
    async fn member_joined(emitter: &SignalEmitter<'_>, node: u64) -> zbus::Result<()>;
    /// A member left or was lost.
    #[zbus(signal)]
    async fn member_lost(emitter: &SignalEmitter<'_>, node: u64) -> zbus::Result<()>;
    /// Another node owns the volume, at a new epoch.
    #[zbus(signal)]
    async fn owner_changed(emitter: &SignalEmitter<'_>, owner: u64, epoch: u64)
        -> zbus::Result<()>;

    /// This node has been fenced: its mount fails with EIO.
    #[zbus(signal)]
    async fn fenced(emitter: &SignalEmitter<'_>, reason: &str) -> zbus::Result<()>;
}

/// The daemon's connection to the system bus, holding the volume's name.
pub struct Bus {
    conn: zbus::Connection,
}

impl Bus {
    /// Claims the volume's name and serves the object.
    pub async fn connect(volume: &Uuid, status: VolumeStatus) -> zbus::Result<Bus> {
        let conn = zbus::connection::Builder::system()?
            .name(bus_name(volume))?
            .serve_at(PATH, VolumeObject { status })?
            .build()
            .await?;
        Ok(Bus { conn })
    }

    /// Shows the cluster's current view: changed properties and the
    /// membership and owner signals.
    pub async fn update(&self, view: &ClusterView) {
        let r = async {
            let iface = self
                .conn
                .object_server()
                .interface::<_, VolumeObject>(PATH)
                .await?;
            let e = iface.signal_emitter();
            let mut obj = iface.get_mut().await;
            let old = obj.status.clone();
            obj.status.role = view.role.clone();
            obj.status.owner_node = view.owner_node;
            obj.status.epoch = view.epoch;
            obj.status.members = view.members.clone();
            obj.status.forwarded_requests = view.forwarded_requests;
            obj.status.lock_requests = view.lock_requests;
            obj.status.lock_grant_latency = view.lock_grant_latency.clone();
            obj.status.last_recovery = view.last_recovery.clone();
            obj.status.heartbeat_age = view.heartbeat_age.clone();
            obj.status.lock_view = view.lock_view;
            obj.status.lock_members = view.lock_members.clone();
            obj.status.lock_owner = view.lock_owner;
            obj.status.lock_records = view.lock_records;
            for n in view.members.iter().filter(|n| !old.members.contains(n)) {
                VolumeObject::member_joined(e, *n).await?;
            }
            for n in old.members.iter().filter(|n| !view.members.contains(n)) {
                VolumeObject::member_lost(e, *n).await?;
            }
            if old.members != view.members {
                obj.members_changed(e).await?;
            }
            if old.role != view.role {
                obj.role_changed(e).await?;
            }
            if (old.owner_node, old.epoch) != (view.owner_node, view.epoch) {
                obj.owner_node_changed(e).await?;
                obj.epoch_changed(e).await?;
                VolumeObject::owner_changed(e, view.owner_node, view.epoch).await?;
            }
            if old.forwarded_requests != view.forwarded_requests {
                obj.forwarded_requests_changed(e).await?;
            }
            if old.lock_requests != view.lock_requests {
                obj.lock_requests_changed(e).await?;
            }
            if old.lock_grant_latency != view.lock_grant_latency {
                obj.lock_grant_latency_changed(e).await?;
            }
            if old.last_recovery != view.last_recovery {
                obj.last_recovery_changed(e).await?;
            }
            if old.heartbeat_age != view.heartbeat_age {
                obj.heartbeat_age_changed(e).await?;
            }
            if old.lock_view != view.lock_view {
                obj.lock_view_changed(e).await?;
            }
            if old.lock_members != view.lock_members {
                obj.lock_members_changed(e).await?;
            }
            if old.lock_owner != view.lock_owner {
                obj.lock_owner_changed(e).await?;
            }
            if old.lock_records != view.lock_records {
                obj.lock_records_changed(e).await?;
            }
            Ok::<(), zbus::Error>(())
        }
        .await;
        if let Err(e) = r {
            warn!("D-Bus: could not show the cluster's state: {e}");
        }
    }

    /// Shows this node fenced: property change and the `Fenced` signal.
    pub async fn fenced(&self, reason: &str) {
        let r = async {
            let iface = self
                .conn
                .object_server()
                .interface::<_, VolumeObject>(PATH)
                .await?;
            {
                let mut obj = iface.get_mut().await;
                obj.status.fencing_state = "fenced".to_string();
                obj.status.fence_reason = reason.to_string();
                obj.fencing_state_changed(iface.signal_emitter()).await?;
                obj.fence_reason_changed(iface.signal_emitter()).await?;
            }
            VolumeObject::fenced(iface.signal_emitter(), reason).await
        }
        .await;
        if let Err(e) = r {
            warn!("D-Bus: could not show the fence: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_bus_names() {
        let u = Uuid::parse_str("0123456789abcdef0123456789abcdef").unwrap();
        let name = bus_name(&u);
        assert_eq!(name, "org.mxfs1.Volume.U0123456789abcdef0123456789abcdef");
        assert!(zbus::names::WellKnownName::try_from(name.as_str()).is_ok());
        assert!(zbus::names::InterfaceName::try_from("org.mxfs1.Volume").is_ok());
        assert!(zbus::zvariant::ObjectPath::try_from(PATH).is_ok());
    }
}
