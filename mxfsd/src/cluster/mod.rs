//! The cluster runtime: membership over discovery and peer links, and the
//! forwarding of clients' file operations to the owner (design sections
//! 3, 4 and 6).
//!
//! This module owns the daemon's view of the other members of its
//! volume: which peers discovery has heard ([`crate::discovery`]), which
//! of them have an authenticated link up ([`crate::peer`]), who the owner
//! is and at what epoch, and the requests in flight between a client and
//! the owner.  The caller passes the first [`Role`] in (see `main.rs` and
//! `join.rs` for how the first owner of a volume is chosen); from then on
//! the DLM's `owner` resource decides who takes the volume over (below).
//! It does not run file operations itself: on the owner they
//! go to a [`FileService`], on a client they come from the FUSE server
//! through [`ClusterHandle::call_blocking`].
//!
//! Links: every pair of members keeps one link, dialled by the lower node
//! id ([`crate::peer::should_connect`]).  The members are this node and
//! every peer whose link is up.
//!
//! A client request waits for the owner's link (queued) and then for the
//! reply, for at most [`Config::request_timeout`] in all, then fails with
//! EIO.  A request sent to an owner whose link is lost goes back to the
//! queue and is sent again to the next owner: an application blocked in
//! `write` or `fsync` when the owner dies sees its call finish.  A
//! request that changes the filesystem carries its [`Origin`], and an
//! owner that gets it twice (a link that dropped and came back, a
//! client daemon restarted) answers the repeat from its reply cache
//! ([`replies`]).  A new owner cannot know whether the dead one ran it,
//! so there such a request (an exclusive create, an unlink, an
//! `O_APPEND` write) may run twice; reads, writes at an offset, fsync,
//! getattr and setattr are the same run once or twice.
//!
//! Liveness and failover ([`liveness`]): every member pings its links
//! every [`PING_INTERVAL`]; a link not heard from for the dead interval
//! has lost its lease and is dropped.  With the disk heartbeats
//! ([`DiskView`]) the runtime judges the silent members, and the lowest
//! survivor fences the dead ones through its [`Fencer`].  An owner that
//! is fenced loses the reservation to the fencer, which then coordinates
//! a DLM view without it, is granted `owner` and takes the volume over
//! like a hand-over's successor (its XFS mount replays the dead owner's
//! log); the other clients follow.
//!
//! The DLM ([`crate::dlm`]): every member runs one over its peer links.
//! The owner decides its membership views ([`lockview`]) and holds the
//! `owner` resource in EX; every member finds the holder by probing
//! (D-Bus LockOwner).  Every client queues for `owner`
//! ([`contend_for_owner`]): when the owner goes, the lowest survivor
//! coordinates the views until a new owner does
//! ([`lockview::Coordinator::succeeding`]), its first view purges the
//! old owner's locks, and the node granted `owner` (the lowest survivor,
//! by the rebuild's order) takes the volume over; the lock, not a race
//! for the reservation, decides.  Its grants are recorded on disk
//! ([`crate::lockstate::Recorder`], D-Bus LockRecords).  Applications'
//! fcntl and flock locks go through it too ([`crate::file_locks`]): the
//! module sends them to their node's mxfsd, never to the owner.
//!
//! Hand-over: an owner told to shut down while it has clients first
//! drains (requests it has started are answered; new ones get
//! [`OWNER_LEAVING`], which a client queues again for the next owner),
//! then stops.  A client whose owner leaves (that errno, or its link
//! down) asks its [`Succession`] every [`PROBE_INTERVAL`] who holds the
//! volume now and follows that node; the client granted `owner` instead
//! takes the volume over ([`Succession::take_over`]) and from then serves
//! its own requests and everyone else's.

pub mod liveness;
pub mod lockview;
pub mod replies;
pub mod reply_store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::discovery;
use crate::dlm::{
    Dlm, LinkTransport, LockError, LockHandle, Mode, OwnerElection, RequestFlags, OWNER_RESOURCE,
};
use crate::fileserv::FileService;
use crate::lockstate::RecorderState;
use crate::metrics::LockMetrics;
use crate::peer::{self, LinkConfig, LinkEvent, LinkHandle, Listener, PeerError};
use crate::volume_keys::VolumeSecret;
use crate::wire::announce::AnnouncedRole;
use crate::wire::fileop::{FileReply, FileRequest};
use crate::wire::{FileOp, FileOpReply, Membership, Message, Origin};

/// The first TCP port tried for the peer listener; the next ones are
/// tried when several volumes are mounted on one node (design 6).
pub const FIRST_PORT: u16 = 7600;
/// How many ports from [`FIRST_PORT`] are tried.
pub const PORTS: u16 = 64;

/// A reply errno that says "not run here: find the owner and send it
/// there": what an owner that is leaving answers, and a node that is not
/// (or not yet) the owner, such as a client still taking the volume over
/// when another client already follows it.  (No file operation answers
/// ERESTART to userspace.)
pub const OWNER_LEAVING: i32 = libc::ERESTART;

/// How often a client whose owner left asks who owns now.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// How often every member pings its links (the network lease).
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// The default dead interval (mount option `dead_interval=`): a member
/// silent this long on the network and on disk is dead.
pub const DEFAULT_DEAD_INTERVAL: Duration = Duration::from_secs(6);

/// What the disk heartbeats show (see `disk_liveness.rs`).
pub trait DiskView: Send + Sync + 'static {
    /// Per node id with a heartbeat slot, how long the slot has not
    /// changed; `None` when the disk cannot be read now.
    fn ages(&self) -> Option<HashMap<u64, Duration>>;
}

/// How a member is fenced (see `recovery.rs`).  Blocking: called on a
/// blocking thread.
pub trait Fencer: Send + Sync + 'static {
    fn fence(&self, victim: u64) -> FenceOutcome;
}

/// What fencing one member did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceOutcome {
    /// Its key is preempted and its lock records cleared.
    Fenced {
        was_owner: bool,
        preempt: Duration,
        records: Duration,
        /// Its lock records cleared (slots, torn ones included).
        records_cleared: usize,
    },
    /// It holds no key (it left cleanly, or was fenced already).
    NotRegistered,
    Failed(String),
}

/// Longest a leaving owner waits for the requests it has started.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leaving owner goes on answering [`OWNER_LEAVING`] after it
/// told its clients, for the requests already on their way.
const LEAVING_QUIET: Duration = Duration::from_secs(1);
/// The request id of a leaving owner's notice (ids start at 1).
const NOTICE_ID: u64 = 0;

/// What a node that took the volume over serves with.
pub struct Takeover {
    pub epoch: u64,
    pub service: Arc<FileService>,
    /// Kept until the runtime stops, dropped after the service (the XFS
    /// view the service runs on).
    pub hold: Box<dyn Send>,
}

/// How a client follows, or becomes, the next owner when its owner goes
/// (see `join::Successor`).  Who becomes it is the DLM's decision: the
/// node granted `owner` ([`contend_for_owner`]).  Blocking: called on a
/// blocking thread.
pub trait Succession: Send + Sync + 'static {
    /// The node that holds the volume now, as the device says (read
    /// only); None: nobody does, or it cannot be read.
    fn holder(&self) -> Option<u64>;
    /// This node was granted `owner`: take the volume over from
    /// `old_owner` (waiting while it finishes leaving, unless `stop`
    /// turns true: this node is unmounting).  Err: why not; the caller
    /// then gives `owner` back to the next in line.
    fn take_over(&self, old_owner: u64, stop: &watch::Receiver<bool>) -> Result<Takeover, String>;
}

/// This node's part in the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Mounts the XFS and serves every other member.
    Owner { epoch: u64 },
    /// Forwards its file operations to `owner`.
    Client { owner: u64, epoch: u64 },
}

impl Role {
    pub fn epoch(self) -> u64 {
        match self {
            Role::Owner { epoch } | Role::Client { epoch, .. } => epoch,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Owner { .. } => "owner",
            Role::Client { .. } => "client",
        }
    }
}

pub struct Config {
    pub node_uuid: Uuid,
    pub volume: Uuid,
    pub hostname: String,
    pub secret: VolumeSecret,
    pub role: Role,
    pub discovery: discovery::Config,
    /// Address the peer listener binds (all interfaces by default).
    pub listen: Ipv4Addr,
    pub first_port: u16,
    pub ports: u16,
    /// Longest a client request waits for the owner's link and reply.
    pub request_timeout: Duration,
    /// Owner: how long a client's link may stay down before its open
    /// files are closed (a link that comes back sooner keeps them).
    pub client_grace: Duration,
    /// Client: how it finds (or becomes) the next owner.  None: it does
    /// not, and its requests fail once the owner is gone.
    pub succession: Option<Arc<dyn Succession>>,
    /// Where this node's applications' fcntl and flock lock calls are
    /// counted: each node counts its own ([`crate::file_locks`]).
    pub lock_metrics: Arc<LockMetrics>,
    /// A member silent this long on the network and on disk is dead.
    pub dead_interval: Duration,
    /// The disk heartbeats; None: nobody is ever judged dead.
    pub disk: Option<Arc<dyn DiskView>>,
    /// Owner: the answers to changing requests ([`replies`]).
    pub replies: replies::ReplyCache,
    /// How this node fences a member it judged dead; None: it does not.
    pub fencer: Option<Arc<dyn Fencer>>,
    /// Where the DLM records this node's grants on disk; None: nowhere.
    pub lock_records: Option<watch::Receiver<RecorderState>>,
}

impl Config {
    pub fn new(
        node_uuid: Uuid,
        volume: Uuid,
        hostname: String,
        secret: VolumeSecret,
        role: Role,
    ) -> Self {
        Config {
            node_uuid,
            volume,
            hostname,
            secret,
            role,
            discovery: discovery::Config::default(),
            listen: Ipv4Addr::UNSPECIFIED,
            first_port: FIRST_PORT,
            ports: PORTS,
            // Long enough to ride out a failover (dead interval plus the
            // take-over) with room to spare.
            request_timeout: Duration::from_secs(90),
            client_grace: Duration::from_secs(10),
            succession: None,
            lock_metrics: Default::default(),
            dead_interval: DEFAULT_DEAD_INTERVAL,
            disk: None,
            fencer: None,
            replies: Default::default(),
            lock_records: None,
        }
    }
}

/// What the rest of the daemon (D-Bus, the journal) sees of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub node_id: u64,
    pub role: Role,
    /// This node and every peer with a link up, sorted.
    pub members: Vec<u64>,
    pub owner: u64,
    pub tcp_port: u16,
    /// Requests forwarded to the owner (client) or served (owner).
    pub forwarded: u64,
    /// Lock requests, and the grant-latency histogram
    /// ([`LockMetrics::grant_latency`]).
    pub lock_requests: u64,
    pub lock_grant_latency: Vec<(u64, u64)>,
    /// The last recovery this node ran, one line; empty if none.
    pub last_recovery: String,
    /// (node id, ms since its disk heartbeat last moved), sorted.
    pub heartbeat_age: Vec<(u64, u64)>,
    /// The DLM's view number and members on this node.
    pub lock_view: u64,
    pub lock_members: Vec<u64>,
    /// The member the DLM shows holding `owner` (0: none found).
    pub lock_owner: u64,
    /// This node's lock records on disk (None: not kept).
    pub lock_records: Option<u32>,
}

/// A client's request: queued, then sent (and kept to send again should
/// the owner go or answer [`OWNER_LEAVING`]).
struct Outgoing {
    req: FileRequest,
    /// For the owner's reply cache ([`replies`]).
    origin: Origin,
    reply: oneshot::Sender<FileReply>,
    deadline: Instant,
}

struct Shared {
    requests: mpsc::Sender<Outgoing>,
    status: Mutex<Status>,
    timeout: Duration,
    lock_metrics: Arc<LockMetrics>,
    dlm: Dlm,
}

impl Shared {
    /// The status, also after a panic elsewhere while it was held (it is
    /// plain data, valid at every point).
    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request to queue, and where its reply will come.
    fn outgoing(
        &self,
        req: FileRequest,
        origin: Origin,
    ) -> (Outgoing, oneshot::Receiver<FileReply>) {
        let (tx, rx) = oneshot::channel();
        let out = Outgoing {
            req,
            origin,
            reply: tx,
            deadline: Instant::now() + self.timeout,
        };
        (out, rx)
    }
}

/// A cheap, cloneable handle for the FUSE threads and D-Bus.
#[derive(Clone)]
pub struct ClusterHandle {
    shared: Arc<Shared>,
}

impl ClusterHandle {
    /// Forward one request to the owner and wait for its reply (from
    /// async code: the tests, and later the D-Bus layer).
    #[allow(dead_code)]
    pub async fn call(&self, req: FileRequest) -> FileReply {
        self.call_from(req, Origin::default()).await
    }

    /// [`ClusterHandle::call`] from `origin` (see [`Origin`]).
    pub async fn call_from(&self, req: FileRequest, origin: Origin) -> FileReply {
        let (out, rx) = self.shared.outgoing(req, origin);
        if self.shared.requests.send(out).await.is_err() {
            return FileReply::Errno(libc::EIO);
        }
        rx.await.unwrap_or(FileReply::Errno(libc::EIO))
    }

    /// [`ClusterHandle::call`] from a thread outside the runtime (the
    /// FUSE server's), from `origin` (see [`Origin`]).  Must not be
    /// called from inside the runtime.
    pub fn call_blocking(&self, req: FileRequest, origin: Origin) -> FileReply {
        let (out, rx) = self.shared.outgoing(req, origin);
        if self.shared.requests.blocking_send(out).is_err() {
            return FileReply::Errno(libc::EIO);
        }
        rx.blocking_recv().unwrap_or(FileReply::Errno(libc::EIO))
    }

    pub fn status(&self) -> Status {
        let mut st = self.shared.status().clone();
        st.lock_requests = self.shared.lock_metrics.requests();
        st.lock_grant_latency = self.shared.lock_metrics.grant_latency();
        (st.lock_view, st.lock_members) = self.shared.dlm.members();
        st.lock_records = self
            .shared
            .dlm
            .records_in_use()
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        st
    }

    /// This node's DLM (the module's file locks go through it).
    pub fn dlm(&self) -> &Dlm {
        &self.shared.dlm
    }

    /// Where this node's file-lock calls are counted (D-Bus).
    pub fn lock_metrics(&self) -> Arc<LockMetrics> {
        self.shared.lock_metrics.clone()
    }
}

/// The running cluster runtime; [`Cluster::shutdown`] stops it.
pub struct Cluster {
    handle: ClusterHandle,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Cluster {
    pub fn handle(&self) -> ClusterHandle {
        self.handle.clone()
    }

    /// Stop discovery, close every link (peers hear Goodbye) and fail
    /// whatever is still waiting with EIO.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if self.task.await.is_err() {
            warn!("the cluster task panicked");
        }
    }
}

/// What discovery announces for `role`: the role and its owner epoch.
fn announced(role: Role) -> (AnnouncedRole, u64) {
    match role {
        Role::Owner { epoch } => (AnnouncedRole::Owner, epoch),
        Role::Client { epoch, .. } => (AnnouncedRole::Client, epoch),
    }
}

/// Bind the peer listener on the first free port, start discovery and
/// run the cluster in a task of the current runtime.  `service` is the
/// owner's file service (None on a client).
pub async fn start(cfg: Config, service: Option<Arc<FileService>>) -> anyhow::Result<Cluster> {
    let (listener, link_cfg) = bind_listener(&cfg).await?;
    let port = link_cfg.local().tcp_port();
    let node_id = link_cfg.local().node_id();
    let (disc_tx, disc_rx) = mpsc::channel(256);
    let (announced_role, epoch) = announced(cfg.role);
    let disc = discovery::start(
        cfg.discovery.clone(),
        discovery::Local {
            node_uuid: cfg.node_uuid,
            volume_uuid: *cfg.volume.as_bytes(),
            tcp_port: port,
            hostname: cfg.hostname.clone(),
            role: announced_role,
            owner_epoch: epoch,
        },
        &cfg.secret,
        disc_tx,
    )
    .await
    .context("starting discovery")?;

    let owner = match cfg.role {
        Role::Owner { .. } => node_id,
        Role::Client { owner, .. } => owner,
    };
    let (req_tx, req_rx) = mpsc::channel(1024);
    let (dlm, dlm_task) = match cfg.lock_records.clone() {
        Some(records) => Dlm::spawn_recorded(node_id, LinkTransport::new(), records),
        None => Dlm::spawn(node_id, LinkTransport::new()),
    };
    let shared = Arc::new(Shared {
        requests: req_tx,
        status: Mutex::new(Status {
            node_id,
            role: cfg.role,
            members: vec![node_id],
            owner,
            tcp_port: port,
            forwarded: 0,
            lock_requests: 0,
            lock_grant_latency: Vec::new(),
            last_recovery: String::new(),
            heartbeat_age: Vec::new(),
            lock_view: 0,
            lock_members: Vec::new(),
            lock_owner: 0,
            lock_records: None,
        }),
        timeout: cfg.request_timeout,
        lock_metrics: cfg.lock_metrics.clone(),
        dlm: dlm.clone(),
    });
    let (dlm_stop, _) = watch::channel(false);
    tokio::spawn(watch_lock_owner(
        dlm.clone(),
        shared.clone(),
        dlm_stop.subscribe(),
    ));
    let (stop, stop_rx) = watch::channel(false);
    let (link_tx, link_rx) = mpsc::channel(1024);
    let (served_tx, served_rx) = mpsc::channel(1024);
    let (claim_tx, claim_rx) = mpsc::channel(4);
    let (granted_tx, granted_rx) = mpsc::channel(1);
    let (takeover_tx, takeover_rx) = mpsc::channel(1);
    let (fenced_tx, fenced_rx) = mpsc::channel(16);
    // The listener's links stay up until the runtime ends, not only until
    // it is told to stop: a leaving owner tells its clients over them.
    let (listener_stop, listener_stop_rx) = watch::channel(false);
    let listener_task = tokio::spawn(listener.run(link_tx.clone(), listener_stop_rx));
    info!(
        port,
        role = cfg.role.name(),
        owner = %format!("{owner:016x}"),
        epoch,
        "cluster: peer listener and discovery started"
    );
    let mut runtime = Runtime {
        node_id,
        role: cfg.role,
        owner,
        link_cfg,
        service,
        shared: shared.clone(),
        links: HashMap::new(),
        connectors: HashMap::new(),
        pending: HashMap::new(),
        waiting: VecDeque::new(),
        departed: HashMap::new(),
        client_grace: cfg.client_grace,
        succession: cfg.succession,
        probe: None,
        owner_leaving: false,
        said_leaving: None,
        leaving: None,
        in_flight: 0,
        held: None,
        next_request: 1,
        link_tx,
        served_tx,
        claim_tx,
        granted_tx,
        owner_grant: None,
        takeover_tx,
        takeover: None,
        peer_reports: HashMap::new(),
        stop_rx,
        listener_stop,
        dead_interval: cfg.dead_interval,
        disk: cfg.disk,
        fencer: cfg.fencer,
        last_heard: HashMap::new(),
        fencing: false,
        fenced_tx,
        recovery: None,
        pings: 0,
        dlm,
        dlm_task,
        dlm_stop,
        coordinator: None,
        replies: cfg.replies,
    };
    match cfg.role {
        Role::Owner { epoch } => runtime.coordinate(epoch, None),
        Role::Client { .. } if runtime.succession.is_some() => runtime.contend(Duration::ZERO),
        Role::Client { .. } => {}
    }
    let channels = Channels {
        disc_rx,
        link_rx,
        req_rx,
        served_rx,
        claim_rx,
        granted_rx,
        takeover_rx,
        fenced_rx,
    };
    let task = tokio::spawn(runtime.run(disc, channels, listener_task));
    Ok(Cluster {
        handle: ClusterHandle { shared },
        stop,
        task,
    })
}

async fn bind_listener(cfg: &Config) -> anyhow::Result<(Listener, Arc<LinkConfig>)> {
    let mut last = None;
    for i in 0..cfg.ports.max(1) {
        let Some(port) = cfg.first_port.checked_add(i) else {
            break;
        };
        let local = peer::LocalNode::new(cfg.node_uuid, cfg.volume, &cfg.hostname, port)
            .context("this node's uuid hashes to node id 0")?;
        let link_cfg = Arc::new(LinkConfig::new(local, &cfg.secret));
        let addr = SocketAddr::V4(SocketAddrV4::new(cfg.listen, port));
        match Listener::bind(link_cfg.clone(), addr).await {
            Ok(l) => return Ok((l, link_cfg)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("peer listener on {addr}")),
        }
    }
    Err(anyhow::anyhow!(
        "no free peer port in {}..{} ({})",
        cfg.first_port,
        cfg.first_port.saturating_add(cfg.ports),
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// A reply that carries only an errno (no payload to encode, so it
/// cannot fail as an encoding can).
fn error_reply(owner_epoch: u64, request_id: u64, errno: i32) -> FileOpReply {
    FileOpReply {
        owner_epoch,
        request_id,
        errno,
        payload: Vec::new(),
    }
}

/// A recovery's steps as they end; the take-over may end before the
/// purge does (the preempt already moved the reservation).
struct RecoveryLine {
    victim: u64,
    victim_owned: bool,
    started: Instant,
    preempt: Option<Duration>,
    /// (lock records cleared, how long the purge took)
    records: Option<(usize, Duration)>,
    /// From the start of the fence to serving the volume.
    takeover: Option<Duration>,
}

impl RecoveryLine {
    fn render(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = self.preempt {
            parts.push(format!(" preempt {} ms", d.as_millis()));
        }
        if let Some((n, d)) = self.records {
            parts.push(format!(" {n} lock records cleared in {} ms", d.as_millis()));
        }
        if let Some(d) = self.takeover {
            parts.push(format!(" owner after {} ms", d.as_millis()));
        }
        format!("fenced {:016x}:{}", self.victim, parts.join(","))
    }
}

/// The task that asks the device who holds the volume now; cancelled,
/// it stops between tries.
struct Probe {
    cancel: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A reply for a client; `started`: the end of a request that counted
/// in [`Runtime::in_flight`].
struct Served {
    node: u64,
    reply: FileOpReply,
    started: bool,
    /// The request's origin, when the reply cache waits for its end.
    origin: Origin,
    /// Told once the reply is in the reply cache (this node's own
    /// requests, answered by the sender).
    kept: Option<oneshot::Sender<()>>,
}

struct ConnectorTask {
    addr: SocketAddr,
    /// Dropping it stops the connector.
    _stop: watch::Sender<bool>,
}

struct Runtime {
    node_id: u64,
    role: Role,
    owner: u64,
    link_cfg: Arc<LinkConfig>,
    service: Option<Arc<FileService>>,
    shared: Arc<Shared>,
    links: HashMap<u64, LinkHandle>,
    connectors: HashMap<u64, ConnectorTask>,
    /// Client: requests sent to the owner, by request id.
    pending: HashMap<u64, Outgoing>,
    /// Client: requests waiting for the owner's link.
    waiting: VecDeque<Outgoing>,
    /// Owner: clients whose link went down, and when their open files
    /// go unless the link is back.
    departed: HashMap<u64, Instant>,
    client_grace: Duration,
    succession: Option<Arc<dyn Succession>>,
    /// Client: the task asking who owns now, while the owner is gone.
    probe: Option<Probe>,
    /// Client: the owner said it is leaving; nothing more goes to it.
    owner_leaving: bool,
    /// Client: the last owner that said it is leaving (a probe that
    /// finds it still holding the volume does not make it stay).
    said_leaving: Option<u64>,
    /// Owner: shutting down: (give up draining at, answer
    /// [`OWNER_LEAVING`] at least until).
    leaving: Option<(Instant, Instant)>,
    /// Owner: forwarded requests started and not yet answered.
    in_flight: usize,
    /// A node that took over: what its service runs on.
    held: Option<Box<dyn Send>>,
    next_request: u64,
    link_tx: mpsc::Sender<LinkEvent>,
    /// Owner: replies to send to node (and whether a started request
    /// ends with it).
    served_tx: mpsc::Sender<Served>,
    /// Client: the owner the probe found.
    claim_tx: mpsc::Sender<u64>,
    /// Client: where [`contend_for_owner`] hands the `owner` grant.
    granted_tx: mpsc::Sender<LockHandle>,
    /// Client taking the volume over: the `owner` grant, held meanwhile.
    owner_grant: Option<LockHandle>,
    /// How the take-over ended.
    takeover_tx: mpsc::Sender<Result<Takeover, String>>,
    /// The take-over, on a blocking thread: never aborted (it may hold
    /// the reservation and a mounted XFS), waited for at the end.
    takeover: Option<JoinHandle<()>>,
    /// Client: the last report each peer sent (its DLM view and links),
    /// for the views this node may have to coordinate.
    peer_reports: HashMap<u64, (u64, Vec<u64>)>,
    stop_rx: watch::Receiver<bool>,
    /// Stops the peer listener and the links it accepted, at the end.
    listener_stop: watch::Sender<bool>,
    dead_interval: Duration,
    disk: Option<Arc<dyn DiskView>>,
    fencer: Option<Arc<dyn Fencer>>,
    /// Every peer this node has had a link with, and when it last heard
    /// from it (the network lease); a fenced peer is forgotten.
    last_heard: HashMap<u64, Instant>,
    /// A fence is running (one at a time).
    fencing: bool,
    fenced_tx: mpsc::Sender<(u64, FenceOutcome)>,
    /// The recovery this node runs or ran last (D-Bus LastRecovery).
    recovery: Option<RecoveryLine>,
    pings: u64,
    dlm: Dlm,
    dlm_task: JoinHandle<()>,
    /// Ends the DLM's helper tasks (the owner lock, the holder probe).
    dlm_stop: watch::Sender<bool>,
    /// Owner: the DLM's membership views.
    coordinator: Option<lockview::Coordinator>,
    /// Owner: the answers to requests that change the filesystem.
    replies: replies::ReplyCache,
}

/// What the runtime's loop listens to.
struct Channels {
    disc_rx: mpsc::Receiver<discovery::Event>,
    link_rx: mpsc::Receiver<LinkEvent>,
    req_rx: mpsc::Receiver<Outgoing>,
    served_rx: mpsc::Receiver<Served>,
    claim_rx: mpsc::Receiver<u64>,
    granted_rx: mpsc::Receiver<LockHandle>,
    takeover_rx: mpsc::Receiver<Result<Takeover, String>>,
    fenced_rx: mpsc::Receiver<(u64, FenceOutcome)>,
}

impl Runtime {
    async fn run(
        mut self,
        disc: discovery::Discovery,
        mut ch: Channels,
        listener_task: JoinHandle<()>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut ping = tokio::time::interval(PING_INTERVAL);
        let mut stop_rx = self.stop_rx.clone();
        let mut stopping = false;
        loop {
            // A take-over or a new owner followed changes the role or the
            // epoch: the announcements say so from the next one on.
            let (role, epoch) = announced(self.role);
            disc.set_role(role, epoch);
            tokio::select! {
                _ = stop_rx.changed(), if !stopping => {
                    stopping = true;
                    if !self.begin_leaving().await {
                        break;
                    }
                }
                Some(ev) = ch.disc_rx.recv() => self.on_discovery(ev),
                Some(ev) = ch.link_rx.recv() => self.on_link(ev).await,
                Some(out) = ch.req_rx.recv() => self.on_request(out).await,
                Some(s) = ch.served_rx.recv() => {
                    let repeats = self.replies.end(s.node, s.origin, &s.reply, Instant::now());
                    if let Some(kept) = s.kept {
                        let _ = kept.send(());
                    }
                    if let Some(l) = self.links.get(&s.node) {
                        for request_id in repeats {
                            let again = FileOpReply { request_id, ..s.reply.clone() };
                            if let Err(e) = l.send(&Message::FileOpReply(again)).await {
                                debug!(node = %format!("{:016x}", s.node), "reply not sent: {e}");
                            }
                        }
                        if let Err(e) = l.send(&Message::FileOpReply(s.reply)).await {
                            debug!(node = %format!("{:016x}", s.node), "reply not sent: {e}");
                        }
                    }
                    if s.started {
                        self.in_flight = self.in_flight.saturating_sub(1);
                    }
                    if self.drained(Instant::now()) {
                        break;
                    }
                }
                Some(owner) = ch.claim_rx.recv() => self.on_follow(owner).await,
                Some(h) = ch.granted_rx.recv() => self.on_owner_granted(h),
                Some(r) = ch.takeover_rx.recv() => self.on_takeover(r),
                Some((victim, outcome)) = ch.fenced_rx.recv() => self.on_fenced(victim, outcome),
                _ = ping.tick() => self.ping(),
                _ = tick.tick() => {
                    let now = Instant::now();
                    if self.drained(now) {
                        break;
                    }
                    self.expire(now);
                    self.expire_leases(now);
                    self.judge(now);
                }
            }
        }
        if let Some(p) = self.probe.take() {
            let _ = p.cancel.send(true);
            await_ending(p.task, "the next-owner probe").await;
        }
        if let Some(t) = self.takeover.take() {
            // ends on its own (the reservation wait is bounded); what it
            // took is undone as it finds the runtime gone
            await_ending(t, "the take-over").await;
        }
        // Stop dialling and accepting, then drain the links' last events
        // so their tasks can finish.
        let _ = self.listener_stop.send(true);
        self.connectors.clear();
        disc.shutdown().await;
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(FileReply::Errno(libc::EIO));
        }
        for o in self.waiting.drain(..) {
            let _ = o.reply.send(FileReply::Errno(libc::EIO));
        }
        drop(self.link_tx);
        let drain = async { while ch.link_rx.recv().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        let _ = listener_task.await;
        // The DLM last: its locks go (the owner lock with the rest).
        let _ = self.dlm_stop.send(true);
        self.dlm.shutdown();
        if tokio::time::timeout(Duration::from_secs(2), &mut self.dlm_task)
            .await
            .is_err()
        {
            warn!("cluster: the DLM did not stop");
        }
        // A node that took over: its service's descriptors, then its XFS
        // view (the caller releases the reservation after this).
        self.service = None;
        drop(self.held.take());
    }

    /// Owner with clients: tell them it is leaving, stop taking requests
    /// and answer the started ones first.  Returns whether there is
    /// anything to wait for.
    async fn begin_leaving(&mut self) -> bool {
        if !matches!(self.role, Role::Owner { .. }) || self.service.is_none() {
            return false;
        }
        if self.links.is_empty() {
            return false;
        }
        info!(
            in_flight = self.in_flight,
            "cluster: the owner is leaving; its clients go to the next owner"
        );
        let now = Instant::now();
        self.leaving = Some((now + DRAIN_TIMEOUT, now + LEAVING_QUIET));
        let notice = Message::FileOpReply(error_reply(self.role.epoch(), NOTICE_ID, OWNER_LEAVING));
        for (node, l) in &self.links {
            if let Err(e) = l.send(&notice).await {
                debug!(node = %format!("{node:016x}"), "leaving notice not sent: {e}");
            }
        }
        true
    }

    /// Owner leaving: whether it may stop now.
    fn drained(&self, now: Instant) -> bool {
        let Some((give_up, quiet)) = self.leaving else {
            return false;
        };
        if now >= give_up {
            warn!(
                in_flight = self.in_flight,
                "cluster: requests still running after the drain timeout; leaving anyway"
            );
            return true;
        }
        if self.in_flight == 0 && now >= quiet {
            info!("cluster: every started request answered; the owner leaves");
            return true;
        }
        false
    }

    /// Client: the owner said it is leaving (or not the owner): nothing
    /// more goes to it until the probe says who owns.
    fn owner_gone(&mut self) {
        self.owner_leaving = true;
        self.start_probe(true);
    }

    /// Client: the owner is gone or going; ask the device who holds the
    /// volume until another node does.  `news`: say so in the log (not
    /// when asking again).
    fn start_probe(&mut self, news: bool) {
        let (Role::Client { owner, .. }, Some(succession)) = (self.role, self.succession.clone())
        else {
            return;
        };
        if self.probe.as_ref().is_some_and(|p| !p.task.is_finished()) {
            return;
        }
        if news {
            info!(owner = %format!("{owner:016x}"), "cluster: the owner is gone or leaving; looking for the next owner");
        }
        let me = self.node_id;
        let tx = self.claim_tx.clone();
        let (cancel, mut cancel_rx) = watch::channel(false);
        let mut stop_rx = self.stop_rx.clone();
        let task = tokio::spawn(async move {
            loop {
                if *cancel_rx.borrow() || *stop_rx.borrow() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                    _ = cancel_rx.changed() => return,
                    _ = stop_rx.changed() => return,
                }
                let s = succession.clone();
                // This node holding it (a fence moved it here) is no
                // answer: the `owner` grant decides whether it serves.
                match tokio::task::spawn_blocking(move || s.holder()).await {
                    Ok(Some(holder)) if holder != me => {
                        let _ = tx.send(holder).await;
                        return;
                    }
                    _ => continue,
                }
            }
        });
        self.probe = Some(Probe { cancel, task });
    }

    /// Client: the probe found who holds the volume now.
    async fn on_follow(&mut self, owner: u64) {
        self.probe = None; // it has ended: it sends one answer
        if !matches!(self.role, Role::Client { .. }) {
            return;
        }
        self.owner_leaving = false;
        let epoch = self.role.epoch();
        if owner != self.owner {
            info!(owner = %format!("{owner:016x}"), "cluster: following the new owner");
            self.said_leaving = None;
            // the new owner coordinates the views from now on
            if self.coordinator.as_ref().is_some_and(|c| c.is_interim()) {
                self.coordinator = None;
            }
        }
        self.owner = owner;
        self.role = Role::Client { owner, epoch };
        {
            let mut st = self.shared.status();
            st.owner = owner;
            st.role = self.role;
        }
        if self.links.contains_key(&owner) {
            // It answers, or says OWNER_LEAVING again (still leaving, or
            // not serving yet) and we ask again.
            while let Some(out) = self.waiting.pop_front() {
                self.send_request(out).await;
            }
        } else {
            self.start_probe(false);
        }
    }

    /// Client: queue for `owner` after `delay` (at the start, and after
    /// a grant this node gave back: the task that queued ended with it).
    fn contend(&mut self, delay: Duration) {
        tokio::spawn(contend_for_owner(
            self.dlm.clone(),
            self.granted_tx.clone(),
            delay,
            self.dlm_stop.subscribe(),
        ));
    }

    /// Client: the DLM granted this node `owner`.  It takes the volume
    /// over, unless its owner is still there and serving (a restarted
    /// owner daemon's lock was lost with it, and the rebuild granted a
    /// waiter): then it gives the lock back at once.
    fn on_owner_granted(&mut self, grant: LockHandle) {
        let (Role::Client { owner, .. }, Some(succession)) = (self.role, self.succession.clone())
        else {
            return; // dropped: released
        };
        if self.links.contains_key(&owner) && self.said_leaving != Some(owner) {
            info!(
                owner = %format!("{owner:016x}"),
                "dlm: granted the owner lock while the owner still serves; given back"
            );
            drop(grant);
            self.contend(OWNER_GIVEN_BACK_DELAY);
            return;
        }
        if *self.stop_rx.borrow() || self.takeover.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        info!(
            old_owner = %format!("{owner:016x}"),
            "dlm: this node was granted the owner lock; it takes the volume over"
        );
        self.owner_grant = Some(grant);
        let tx = self.takeover_tx.clone();
        let stop = self.stop_rx.clone();
        self.takeover = Some(tokio::task::spawn_blocking(move || {
            let r = succession.take_over(owner, &stop);
            if let Err(unsent) = tx.blocking_send(r) {
                // The runtime is gone: a take-over made meanwhile is
                // undone here (its XFS view unmounted) before the daemon
                // gives the reservation back.
                drop(unsent);
            }
        }));
    }

    /// Client: how taking the volume over ended.
    fn on_takeover(&mut self, r: Result<Takeover, String>) {
        let grant = self.owner_grant.take();
        let t = match r {
            Ok(t) => t,
            Err(why) => {
                warn!("cluster: taking the volume over failed: {why}; the owner lock goes to the next in line");
                drop(grant);
                self.contend(OWNER_GIVEN_BACK_DELAY);
                return;
            }
        };
        info!(
            epoch = t.epoch,
            "cluster: this node took the volume over and serves it"
        );
        if let Some(p) = self.probe.take() {
            let _ = p.cancel.send(true);
        }
        self.owner = self.node_id;
        self.owner_leaving = false;
        self.said_leaving = None;
        self.role = Role::Owner { epoch: t.epoch };
        self.service = Some(t.service);
        self.held = Some(t.hold);
        self.coordinate(t.epoch, grant);
        {
            let mut st = self.shared.status();
            st.owner = self.node_id;
            st.role = self.role;
            if let Some(r) = self
                .recovery
                .as_mut()
                .filter(|r| r.victim_owned && r.takeover.is_none())
            {
                r.takeover = Some(r.started.elapsed());
                let line = r.render();
                info!(
                    epoch = t.epoch,
                    "recovery step 4: this node owns the volume after the old owner's death ({line})"
                );
                st.last_recovery = line;
            }
        }
        // Requests sent to the old owner and never answered get their EIO
        // at their deadline; the queued ones run here.
        while let Some(out) = self.waiting.pop_front() {
            self.serve_local(out);
        }
    }

    /// Client: its owner is gone for good (it left, or this node fenced
    /// it).  The lowest survivor coordinates the DLM's views until a new
    /// owner does: its first view drops the old owner, whose `owner` lock
    /// the rebuild then grants to the next in line (lockview module docs).
    fn owner_departed(&mut self) {
        if !matches!(self.role, Role::Client { .. }) || self.coordinator.is_some() {
            return;
        }
        let linked: BTreeSet<u64> = self.links.keys().copied().collect();
        if lockview::interim_coordinator(self.node_id, &linked, self.owner) != self.node_id {
            return;
        }
        let (view, _) = self.dlm.members();
        let mut c = lockview::Coordinator::succeeding(self.node_id, view);
        for (from, (v, linked)) in &self.peer_reports {
            if *from != self.owner {
                c.report(*from, *v, linked);
            }
        }
        info!(
            old_owner = %format!("{:016x}", self.owner),
            view = %format!("{view:#x}"),
            "dlm: the owner is gone; this node coordinates the lock views until the next owner does"
        );
        self.coordinator = Some(c);
        self.views_changed();
    }

    /// A node that took over runs its own FUSE server's requests itself,
    /// through the reply cache as it does a client's: its restarted
    /// daemon serves again what the killed one left unanswered, and what
    /// changed the filesystem must not run twice.
    fn serve_local(&mut self, out: Outgoing) {
        let Some(service) = self.service.clone() else {
            let _ = out.reply.send(FileReply::Errno(libc::EIO));
            return;
        };
        let node = self.node_id;
        let opcode = out.req.opcode();
        let origin = replies::kept_origin(opcode, out.origin);
        // (a repeat while the first runs cannot come from one daemon:
        // each FUSE request is served once per daemon; it would run)
        if let replies::Begin::Answer(r) =
            self.replies.begin(node, origin, opcode, 0, Instant::now())
        {
            info!(
                unique = origin.unique,
                "cluster: a request of this node's own FUSE connection served again is answered from the reply cache"
            );
            let reply = FileReply::from_file_op_reply(&r).unwrap_or(FileReply::Errno(libc::EIO));
            let _ = out.reply.send(reply);
            return;
        }
        self.count_forwarded();
        let epoch = self.role.epoch();
        let tx = self.served_tx.clone();
        tokio::task::spawn_blocking(move || {
            let reply = service.handle_from(node, out.req);
            if !origin.is_none() {
                // in the cache (and its copy) before the answer goes out
                let wire = reply
                    .to_file_op_reply(epoch, 0)
                    .unwrap_or_else(|_| error_reply(epoch, 0, libc::EIO));
                let (kept, is_kept) = oneshot::channel();
                let served = Served {
                    node,
                    reply: wire,
                    started: false,
                    origin,
                    kept: Some(kept),
                };
                if tx.blocking_send(served).is_ok() {
                    let _ = is_kept.blocking_recv();
                }
            }
            let _ = out.reply.send(reply);
        });
    }

    fn publish(&self) {
        let mut members: BTreeSet<u64> = self.links.keys().copied().collect();
        members.insert(self.node_id);
        self.shared.status().members = members.into_iter().collect();
    }

    fn count_forwarded(&self) {
        self.shared.status().forwarded += 1;
    }

    fn on_discovery(&mut self, ev: discovery::Event) {
        use discovery::Event as E;
        match ev {
            E::Joined(p) | E::Restarted(p) | E::Changed(p) => {
                if !peer::should_connect(self.node_id, p.node_id) {
                    return; // it dials us
                }
                if self.connectors.get(&p.node_id).map(|c| c.addr) == Some(p.addr) {
                    return;
                }
                match peer::Connector::new(self.link_cfg.clone(), p.node_id, p.addr) {
                    Ok(c) => {
                        let (stop, stop_rx) = watch::channel(false);
                        tokio::spawn(c.run(self.link_tx.clone(), stop_rx));
                        info!(
                            peer = %format!("{:016x}", p.node_id),
                            host = %p.hostname,
                            addr = %p.addr,
                            "cluster: dialling a discovered member"
                        );
                        self.connectors.insert(
                            p.node_id,
                            ConnectorTask {
                                addr: p.addr,
                                _stop: stop,
                            },
                        );
                    }
                    Err(e) => warn!("cluster: not dialling {:016x}: {e}", p.node_id),
                }
            }
            E::Lost(id) => {
                info!(peer = %format!("{id:016x}"), "cluster: member no longer announces");
                self.connectors.remove(&id);
            }
        }
    }

    async fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Up { peer, handle } => {
                let _ = self.dlm.link_event(LinkEvent::Up {
                    peer: peer.clone(),
                    handle: handle.clone(),
                });
                info!(
                    peer = %format!("{:016x}", peer.node_id),
                    host = %peer.hostname,
                    "cluster: link up"
                );
                self.last_heard.insert(peer.node_id, Instant::now());
                self.links.insert(peer.node_id, handle);
                self.departed.remove(&peer.node_id);
                self.publish();
                if peer.node_id == self.owner && !self.owner_leaving {
                    if let Some(p) = &self.probe {
                        // the link only dropped; a claim it makes still
                        // comes
                        let _ = p.cancel.send(true);
                    }
                    while let Some(out) = self.waiting.pop_front() {
                        self.send_request(out).await;
                    }
                }
                self.views_changed();
            }
            LinkEvent::Down { node_id, reason } => {
                if self.links.remove(&node_id).is_none() {
                    // a link whose lease had expired, already dropped
                    debug!(peer = %format!("{node_id:016x}"), "cluster: dropped link down: {reason}");
                    return;
                }
                info!(peer = %format!("{node_id:016x}"), "cluster: link down: {reason}");
                self.link_lost(node_id);
                if let Some(c) = self.coordinator.as_mut() {
                    c.forget(node_id);
                }
                self.views_changed();
            }
            LinkEvent::Message { node_id, message } => {
                if !self.links.contains_key(&node_id) {
                    // a link dropped for its lease, still delivering
                    debug!(peer = %format!("{node_id:016x}"), "cluster: message on a dropped link, ignored");
                    return;
                }
                self.last_heard.insert(node_id, Instant::now());
                if let Some(LinkEvent::Message { node_id, message }) =
                    self.dlm.link_event(LinkEvent::Message { node_id, message })
                {
                    self.on_message(node_id, message);
                }
            }
        }
    }

    /// A peer's link is gone (down, or its lease expired): a client
    /// whose owner it was sends what it had in flight again to the next
    /// owner; an owner gives a client's open files the grace.
    fn link_lost(&mut self, node_id: u64) {
        if node_id == self.owner && matches!(self.role, Role::Client { .. }) {
            let mut ids: Vec<u64> = self.pending.keys().copied().collect();
            ids.sort_unstable();
            for id in ids.into_iter().rev() {
                if let Some(p) = self.pending.remove(&id) {
                    self.waiting.push_front(p);
                }
            }
            if !self.waiting.is_empty() {
                info!(
                    queued = self.waiting.len(),
                    "cluster: requests in flight to the lost owner go to the next owner"
                );
            }
            self.start_probe(true);
            if self.said_leaving == Some(node_id) {
                // it said it was leaving: gone, nothing to fence
                self.owner_departed();
            }
        }
        self.peer_reports.remove(&node_id);
        if self.service.is_some() {
            self.departed
                .insert(node_id, Instant::now() + self.client_grace);
        }
        self.publish();
    }

    /// Every member pings its links: the network lease.  Never waits on
    /// a link (a paused peer's queue may be full).
    fn ping(&mut self) {
        self.pings += 1;
        let m = Message::Heartbeat(crate::wire::Heartbeat {
            node_id: self.node_id,
            generation: 0,
            counter: self.pings,
            owner_epoch: self.role.epoch(),
        });
        for l in self.links.values() {
            let _ = l.try_send(&m);
        }
        self.views_changed();
    }

    /// Owner: become the DLM's view coordinator at `epoch` and hold the
    /// `owner` resource: `grant`, when the DLM granted it to this node
    /// before it took over; else queue for it (a first owner).
    fn coordinate(&mut self, epoch: u64, grant: Option<LockHandle>) {
        self.coordinator = Some(lockview::Coordinator::new(self.node_id, epoch));
        tokio::spawn(hold_owner_lock(
            self.dlm.clone(),
            epoch,
            grant,
            self.dlm_stop.subscribe(),
        ));
        self.views_changed();
    }

    /// Links changed or a ping is due.  Owner: issue a new DLM view if
    /// the members changed, or send the current one to whoever has not
    /// entered it.  Client: report its view and links to the owner.
    fn views_changed(&mut self) {
        let linked: BTreeSet<u64> = self.links.keys().copied().collect();
        let epoch = self.role.epoch();
        if let Some(c) = self.coordinator.as_mut() {
            let (to, view, members) = match c.next(&linked) {
                Some((view, members)) => {
                    info!(
                        view = %format!("{view:#x}"),
                        members = ?members.iter().map(|m| format!("{m:016x}")).collect::<Vec<_>>(),
                        "dlm: new membership view"
                    );
                    self.dlm.enter_view(view, &members);
                    (members.clone(), view, members)
                }
                None => {
                    let (view, members) = c.current();
                    (c.behind(), view, members.to_vec())
                }
            };
            let m = Message::Membership(Membership {
                view,
                owner: self.node_id,
                owner_epoch: epoch,
                members,
            });
            for n in to.iter().filter(|n| **n != self.node_id) {
                if let Some(l) = self.links.get(n) {
                    let _ = l.try_send(&m);
                }
            }
        } else {
            // A client's report goes to every peer, not only its owner:
            // whoever coordinates next (the lowest survivor, or the next
            // owner) has it when it starts.
            let mut members = linked;
            members.insert(self.node_id);
            let report = Message::Membership(Membership {
                view: self.dlm.members().0,
                owner: self.owner,
                owner_epoch: epoch,
                members: members.into_iter().collect(),
            });
            for l in self.links.values() {
                let _ = l.try_send(&report);
            }
        }
    }

    /// A Membership message: a view when its sender names itself as the
    /// coordinator (`owner`), else a client's report.  A coordinator
    /// takes reports; a client keeps them (it may coordinate next) and
    /// enters the views of its owner, or of whoever coordinates once its
    /// owner is gone.
    fn on_membership(&mut self, from: u64, m: Membership) {
        let is_view = m.owner == from;
        if let Some(c) = self.coordinator.as_mut() {
            if !is_view {
                c.report(from, m.view, &m.members);
                self.views_changed();
                return;
            }
            // Another coordinator: only a new owner's views end an
            // interim coordination.
            if !c.is_interim() || lockview::epoch_of(m.view) <= c.epoch() {
                debug!(peer = %format!("{from:016x}"), "dlm: a view from another coordinator, ignored");
                return;
            }
            info!(peer = %format!("{from:016x}"), "dlm: a new owner coordinates the lock views; this node stops");
            self.coordinator = None;
        } else if !is_view {
            self.peer_reports.insert(from, (m.view, m.members));
            return;
        }
        let owner_gone = self.said_leaving == Some(self.owner)
            || self.owner_leaving
            || !self.links.contains_key(&self.owner);
        if (from != self.owner && !owner_gone) || m.owner_epoch < self.role.epoch() {
            debug!(peer = %format!("{from:016x}"), "dlm: a view not from our owner, ignored");
            return;
        }
        if m.view > self.dlm.members().0 {
            debug!(view = %format!("{:#x}", m.view), "dlm: entering the owner's view");
            self.dlm.enter_view(m.view, &m.members);
        }
    }

    /// Drop the links of peers not heard from for the dead interval.
    fn expire_leases(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .links
            .keys()
            .copied()
            .filter(|n| {
                self.last_heard
                    .get(n)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= self.dead_interval)
            })
            .collect();
        for node in expired {
            warn!(
                peer = %format!("{node:016x}"),
                dead_interval_s = self.dead_interval.as_secs_f64(),
                "cluster: nothing heard from this member for the dead interval: its lease expired"
            );
            if let Some(l) = self.links.remove(&node) {
                tokio::spawn(async move { l.close("lease expired").await });
            }
            self.link_lost(node);
        }
    }

    /// Judge the silent members; fence the dead ones if this node is the
    /// one to (see [`liveness`]).
    fn judge(&mut self, now: Instant) {
        let Some(disk) = &self.disk else { return };
        let ages = disk.ages();
        {
            let mut st = self.shared.status();
            st.heartbeat_age = ages
                .as_ref()
                .map(|a| {
                    let mut v: Vec<(u64, u64)> =
                        a.iter().map(|(n, d)| (*n, d.as_millis() as u64)).collect();
                    v.sort_unstable();
                    v
                })
                .unwrap_or_default();
        }
        if self.fencing || self.fencer.is_none() {
            return;
        }
        let reachable: BTreeSet<u64> = self.links.keys().copied().collect();
        let silent: BTreeMap<u64, Duration> = self
            .last_heard
            .iter()
            .filter(|(n, _)| !reachable.contains(n))
            .map(|(n, t)| (*n, now.saturating_duration_since(*t)))
            .collect();
        if silent.is_empty() {
            return;
        }
        let v = liveness::judge(&liveness::Inputs {
            me: self.node_id,
            reachable: &reachable,
            silent: &silent,
            disk: ages.as_ref(),
            dead_interval: self.dead_interval,
        });
        if v.losing {
            debug!(cut_off = ?v.cut_off, "cluster: on the smaller side of a split; the other side fences");
        }
        let Some(victim) = v.fence.first().copied() else {
            return;
        };
        let Some(fencer) = self.fencer.clone() else {
            return;
        };
        let dead = v.dead.contains(&victim);
        warn!(
            victim = %format!("{victim:016x}"),
            silent_s = silent.get(&victim).map(|d| d.as_secs_f64()).unwrap_or_default(),
            cause = if dead { "dead: silent on the network and on disk" } else { "cut off: the other side of a network split" },
            "cluster: fencing a member"
        );
        self.fencing = true;
        self.recovery = Some(RecoveryLine {
            victim,
            victim_owned: victim == self.owner && matches!(self.role, Role::Client { .. }),
            started: now,
            preempt: None,
            records: None,
            takeover: None,
        });
        let tx = self.fenced_tx.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = fencer.fence(victim);
            let _ = tx.blocking_send((victim, outcome));
        });
    }

    /// A fence ended: forget the victim, close its files (on the owner),
    /// and if it owned the volume let the probe take over.
    fn on_fenced(&mut self, victim: u64, outcome: FenceOutcome) {
        self.fencing = false;
        let who = format!("{victim:016x}");
        match outcome {
            FenceOutcome::Failed(e) => {
                warn!(victim = %who, "cluster: fencing failed (will try again): {e}");
            }
            FenceOutcome::NotRegistered => {
                info!(victim = %who, "cluster: member gone and not registered (it left): nothing to fence");
                self.last_heard.remove(&victim);
                if victim == self.owner {
                    self.owner_departed();
                }
            }
            FenceOutcome::Fenced {
                was_owner,
                preempt,
                records,
                records_cleared,
            } => {
                self.last_heard.remove(&victim);
                let summary = match self.recovery.as_mut().filter(|r| r.victim == victim) {
                    Some(r) => {
                        r.preempt = Some(preempt);
                        r.records = Some((records_cleared, records));
                        r.victim_owned |= was_owner;
                        r.render()
                    }
                    None => RecoveryLine {
                        victim,
                        victim_owned: was_owner,
                        started: Instant::now(),
                        preempt: Some(preempt),
                        records: Some((records_cleared, records)),
                        takeover: None,
                    }
                    .render(),
                };
                if self.service.is_some() {
                    // step 3: the victim's open files, at once (its file
                    // locks go with the DLM's purge of it)
                    self.departed.remove(&victim);
                    self.release_client(victim, "recovery step 3: its open files closed".into());
                }
                if (was_owner || victim == self.owner) && !matches!(self.role, Role::Owner { .. }) {
                    info!(victim = %who, "recovery: the owner was fenced; its locks go at the next lock view, and the owner lock to the next in line");
                    self.start_probe(true);
                    self.owner_departed();
                }
                self.shared.status().last_recovery = summary;
            }
        }
    }

    fn on_message(&mut self, from: u64, m: Message) {
        match m {
            Message::FileOp(op) => self.serve(from, op),
            Message::FileOpReply(r) => {
                if from != self.owner {
                    warn!(peer = %format!("{from:016x}"), "cluster: file reply from a non-owner, dropped");
                    return;
                }
                // Replies of a stale owner are refused; a newer epoch is
                // the owner's own bump after we read the header.
                let known = self.role.epoch();
                if r.owner_epoch < known {
                    warn!(
                        theirs = r.owner_epoch,
                        ours = known,
                        "cluster: reply from a stale owner epoch, dropped"
                    );
                    return;
                }
                if r.owner_epoch > known {
                    if let Role::Client { owner, .. } = self.role {
                        self.role = Role::Client {
                            owner,
                            epoch: r.owner_epoch,
                        };
                        self.shared.status().role = self.role;
                    }
                }
                if r.errno == OWNER_LEAVING && r.request_id == NOTICE_ID {
                    info!("cluster: the owner says it is leaving");
                    self.said_leaving = Some(from);
                    self.owner_gone();
                    return;
                }
                let Some(p) = self.pending.remove(&r.request_id) else {
                    debug!(
                        id = r.request_id,
                        "cluster: reply to a request no longer waiting"
                    );
                    return;
                };
                if r.errno == OWNER_LEAVING {
                    // not run: it goes to the next owner
                    self.waiting.push_front(p);
                    self.owner_gone();
                    return;
                }
                let reply = FileReply::from_file_op_reply(&r).unwrap_or_else(|e| {
                    warn!("cluster: undecodable file reply from the owner: {e}");
                    FileReply::Errno(libc::EIO)
                });
                let _ = p.reply.send(reply);
            }
            // the lease: hearing it was enough
            Message::Heartbeat(_) => {}
            Message::Membership(m) => self.on_membership(from, m),
            other => debug!(
                peer = %format!("{from:016x}"),
                kind = other.type_code(),
                "cluster: message not handled yet"
            ),
        }
    }

    /// Owner: run a forwarded operation on a blocking thread.
    fn serve(&mut self, from: u64, op: FileOp) {
        let epoch = self.role.epoch();
        let reply_err = |errno: i32| Served {
            node: from,
            reply: error_reply(epoch, op.request_id, errno),
            started: false,
            origin: Origin::default(),
            kept: None,
        };
        let (Role::Owner { .. }, Some(service)) = (self.role, self.service.clone()) else {
            debug!(peer = %format!("{from:016x}"), "cluster: a file request, but this node is not the owner (yet)");
            let _ = self.served_tx.try_send(reply_err(OWNER_LEAVING));
            return;
        };
        if self.leaving.is_some() {
            let _ = self.served_tx.try_send(reply_err(OWNER_LEAVING));
            return;
        }
        // A client that knows a newer epoch has seen a newer owner: this
        // one is stale and must not serve.  An older epoch is a client
        // that read the lockstate header before this owner bumped it.
        if op.owner_epoch > epoch {
            warn!(
                peer = %format!("{from:016x}"),
                theirs = op.owner_epoch,
                ours = epoch,
                "cluster: file request for a newer owner epoch: this owner is stale, refused"
            );
            let _ = self.served_tx.try_send(reply_err(libc::ESTALE));
            return;
        }
        let req = match FileRequest::from_file_op(&op) {
            Ok(r) => r,
            Err(e) => {
                warn!(peer = %format!("{from:016x}"), "cluster: undecodable file request: {e}");
                let _ = self.served_tx.try_send(reply_err(libc::EIO));
                return;
            }
        };
        // A request that changes the filesystem and was sent before runs
        // once: its repeat is answered from the reply cache.
        let origin = replies::kept_origin(op.opcode, op.origin);
        match self
            .replies
            .begin(from, origin, op.opcode, op.request_id, Instant::now())
        {
            replies::Begin::Run => {}
            replies::Begin::Answer(reply) => {
                info!(
                    peer = %format!("{from:016x}"),
                    unique = origin.unique,
                    "cluster: a request sent again is answered from the reply cache, not run twice"
                );
                let _ = self.served_tx.try_send(Served {
                    node: from,
                    reply: FileOpReply {
                        owner_epoch: epoch,
                        ..reply
                    },
                    started: false,
                    origin: Origin::default(),
                    kept: None,
                });
                return;
            }
            replies::Begin::Wait => {
                info!(
                    peer = %format!("{from:016x}"),
                    unique = origin.unique,
                    "cluster: a request sent again while it runs: both get its answer"
                );
                return;
            }
        }
        self.count_forwarded();
        self.in_flight += 1;
        let tx = self.served_tx.clone();
        let id = op.request_id;
        tokio::task::spawn_blocking(move || {
            let reply = service.handle_from(from, req);
            let wire = reply
                .to_file_op_reply(epoch, id)
                .unwrap_or_else(|_| error_reply(epoch, id, libc::EIO));
            let _ = tx.blocking_send(Served {
                node: from,
                reply: wire,
                started: true,
                origin,
                kept: None,
            });
        });
    }

    async fn on_request(&mut self, out: Outgoing) {
        match self.role {
            // A first owner's own operations never come here (its mount
            // stacks over XFS); a node that took over serves its own FUSE
            // server's.
            Role::Owner { .. } => self.serve_local(out),
            Role::Client { .. } => {
                if self.links.contains_key(&self.owner) && !self.owner_leaving {
                    self.send_request(out).await;
                } else {
                    self.waiting.push_back(out);
                }
            }
        }
    }

    async fn send_request(&mut self, out: Outgoing) {
        let id = self.next_request;
        self.next_request += 1;
        let op = match out.req.to_file_op(self.role.epoch(), id) {
            Ok(op) => FileOp {
                origin: out.origin,
                ..op
            },
            Err(e) => {
                warn!("cluster: request not encodable: {e}");
                let _ = out.reply.send(FileReply::Errno(libc::EINVAL));
                return;
            }
        };
        let Some(link) = self.links.get(&self.owner).filter(|_| !self.owner_leaving) else {
            self.waiting.push_back(out);
            return;
        };
        match link.send(&Message::FileOp(op)).await {
            Ok(()) => {}
            Err(PeerError::Closed) => {
                // The link is going and link_lost() has not run yet: the
                // request never left, so it waits for the next owner as
                // those in flight do (its deadline still holds).
                debug!("cluster: the owner's link closed before a request was sent: queued");
                self.waiting.push_back(out);
                return;
            }
            Err(e) => {
                debug!("cluster: request not sent: {e}");
                let _ = out.reply.send(FileReply::Errno(libc::EIO));
                return;
            }
        }
        self.count_forwarded();
        self.pending.insert(id, out);
    }

    /// Owner: close what clients gone for longer than the grace had
    /// open.
    fn release_departed(&mut self, now: Instant) {
        if self.service.is_none() {
            return;
        }
        let gone: Vec<u64> = self
            .departed
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for node in gone {
            self.departed.remove(&node);
            self.release_client(
                node,
                format!(
                    "cluster: member gone for {} s: its open files are closed",
                    self.client_grace.as_secs()
                ),
            );
        }
    }

    /// Owner: close `node`'s open files, on a blocking thread, and log
    /// `what` with the count and the time it took.
    fn release_client(&self, node: u64, what: String) {
        let Some(service) = self.service.clone() else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let files = service.release_client(node);
            info!(
                peer = %format!("{node:016x}"),
                files,
                ms = t.elapsed().as_millis() as u64,
                "{what}"
            );
        });
    }

    fn expire(&mut self, now: Instant) {
        self.release_departed(now);
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(p) = self.pending.remove(&id) {
                warn!(id, "cluster: no reply from the owner in time: EIO");
                let _ = p.reply.send(FileReply::Errno(libc::EIO));
            }
        }
        while self.waiting.front().is_some_and(|o| o.deadline <= now) {
            if let Some(o) = self.waiting.pop_front() {
                warn!("cluster: no link to the owner in time: EIO");
                let _ = o.reply.send(FileReply::Errno(libc::EIO));
            }
        }
    }
}

/// Wait for a blocking task of the runtime's (the probe, a take-over) to
/// end as the runtime stops; each has bounded waits, so two minutes
/// means it is stuck: say so and go on.
async fn await_ending<T>(task: JoinHandle<T>, what: &str) {
    if tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .is_err()
    {
        warn!("cluster: {what} did not end");
    }
}

/// Owner: hold `owner` EX until the runtime stops: `grant`, the lock the
/// DLM granted this node before it took over, or else (a first owner,
/// chosen by the reservation) a request queued now, granted once any
/// earlier holder's lock is gone from the view.
async fn hold_owner_lock(
    dlm: Dlm,
    epoch: u64,
    grant: Option<LockHandle>,
    mut stop: watch::Receiver<bool>,
) {
    let granted_before = grant.is_some();
    let owner = match grant {
        Some(h) => h,
        None => match queue_for_owner(&dlm, &mut stop).await {
            Some(h) => h,
            None => return,
        },
    };
    let mut election = OwnerElection::new(dlm);
    let r = tokio::select! {
        r = election.adopt(owner, epoch) => r,
        _ = stop.changed() => return,
    };
    match r {
        Ok(()) if granted_before => {
            info!(epoch, "dlm: this node holds the owner lock it was granted")
        }
        Ok(()) => info!(epoch, "dlm: this node holds the owner lock"),
        Err(e) => {
            warn!("dlm: the owner marker was not granted: {e}");
            return;
        }
    }
    let _ = stop.changed().await;
    election.release();
}

/// Queue for `owner` EX until it is granted (retrying a refused request
/// every [`PROBE_INTERVAL`]); `None` once the DLM or the runtime stops.
async fn queue_for_owner(dlm: &Dlm, stop: &mut watch::Receiver<bool>) -> Option<LockHandle> {
    loop {
        let r = tokio::select! {
            r = dlm.lock(OWNER_RESOURCE, Mode::EX, RequestFlags::default()) => r,
            _ = stop.changed() => return None,
        };
        match r {
            Ok(h) => return Some(h),
            Err(LockError::Shutdown) => return None,
            Err(e) => {
                debug!("dlm: queueing for the owner lock: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                    _ = stop.changed() => return None,
                }
            }
        }
    }
}

/// How long a client waits before it queues for `owner` again after
/// giving it back (a grant it could not use): the holder it gave way to
/// gets it first.
const OWNER_GIVEN_BACK_DELAY: Duration = Duration::from_secs(2);

/// How long a client waits to find an owner holding `owner` before it
/// queues anyway (the owner may have died before this node ever saw it
/// hold the lock).
const OWNER_FIND_WAIT: Duration = Duration::from_secs(10);

/// Client: after `delay`, queue for `owner` EX and hand the grant to the
/// runtime, which takes the volume over ([`Runtime::on_owner_granted`]).
/// It queues once it sees an owner holding the lock (or after
/// [`OWNER_FIND_WAIT`]), so that a client that joins does not get it
/// ahead of the owner it joined.  Every survivor is queued when the
/// owner goes: the rebuild of the view that drops the owner grants the
/// lowest node id, which is also the survivor that fenced it.
async fn contend_for_owner(
    dlm: Dlm,
    granted: mpsc::Sender<LockHandle>,
    delay: Duration,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.changed() => return,
    }
    let give_up = Instant::now() + OWNER_FIND_WAIT;
    while Instant::now() < give_up {
        match tokio::time::timeout(Duration::from_secs(2), OwnerElection::holder(&dlm)).await {
            Ok(Ok(Some(_))) => break,
            Ok(Err(LockError::Shutdown)) => return,
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
    if let Some(h) = queue_for_owner(&dlm, &mut stop).await {
        // a runtime that has stopped drops it: released
        let _ = granted.send(h).await;
    }
}

/// After each DLM view, find who holds `owner` (it is granted a moment
/// after the view that lets it go) for D-Bus LockOwner.
async fn watch_lock_owner(dlm: Dlm, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut views = dlm.watch_members();
    loop {
        for _ in 0..40 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.changed() => return,
            }
            match tokio::time::timeout(Duration::from_secs(2), OwnerElection::holder(&dlm)).await {
                Ok(Ok(Some(n))) => {
                    shared.status().lock_owner = n;
                    break;
                }
                Ok(Ok(None)) => shared.status().lock_owner = 0,
                Ok(Err(LockError::Shutdown)) => return,
                Ok(Err(e)) => debug!("dlm: probing the owner lock: {e}"),
                Err(_) => debug!("dlm: probing the owner lock timed out"),
            }
        }
        // again at the next view, or in a while (a grant can come
        // later than the probes above)
        tokio::select! {
            r = views.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    }
}
