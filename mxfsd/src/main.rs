//! mxfsd: the MXFS volume daemon (one per mounted volume).
//!
//! The mxfs kernel module spawns it at mount time with
//! `--device DEV --mountpoint DIR --uuid HEX --token T`.  It loads (or
//! makes) the node identity, registers the node's PR key
//! ([`fence`]), decides whether this node owns the volume or is a client
//! of its owner and prepares that part ([`join`]), starts the cluster
//! runtime ([`cluster`]: discovery, peer links, forwarding), and on a
//! client mounts the FUSE server the module stacks over
//! ([`fuse_client`]); then it answers DAEMON_READY over generic netlink
//! and exits when the module sends SHUTDOWN at unmount.
//!
//! Where things are: [`discovery`] (multicast announcements), [`peer`]
//! (authenticated links), [`wire`] (every message's bytes),
//! [`fileserv`] (the owner's file service), [`lockstate`] and [`xfs`]
//! (the on-disk lockstate and the raw XFS walk), [`dlm`] (the lock
//! manager), [`dbus`], [`supervision`] (systemd), [`netlink`] and
//! [`uapi`] (the kernel).

mod cluster;
mod dbus;
mod discovery;
mod disk_liveness;
mod dlm;
mod fence;
mod file_locks;
mod fileserv;
mod fuse_client;
#[cfg(test)]
mod fuzz;
mod join;
mod le;
mod lockstate;
mod logging;
mod metrics;
mod netlink;
mod peer;
mod recovery;
mod supervision;
#[cfg(test)]
mod test_support;
mod uapi;
mod volume_keys;
mod wire;
mod xfs;
mod xfs_view;

// The node identity lives in mxfs-core (shared with mount.mxfs); this
// keeps `crate::identity::...` paths working in the modules below.
use mxfs_core::identity;
use std::fs::OpenOptions;
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::fence::{FenceMode, Joined, NodeFence, WATCH_INTERVAL};
use crate::netlink::{check_shutdown, Channel, Session};
use crate::uapi::{cmd_name, Role, MXFS_CMD_SHUTDOWN};
use crate::wire::fileop::{Creds, FileReply, FileRequest, Op};

#[derive(Debug, Parser)]
#[command(
    name = "mxfsd",
    version,
    about = "MXFS volume daemon (started by the mxfs kernel module)"
)]
struct Args {
    /// Block device of the volume.
    #[arg(long)]
    device: PathBuf,
    /// Mount point (empty when the kernel was not told).
    #[arg(long, default_value = "")]
    mountpoint: String,
    /// Volume UUID (the XFS sb_uuid), 32 hex digits, dashes allowed.
    #[arg(long, value_parser = parse_volume_uuid)]
    uuid: Uuid,
    /// One-time token to echo in DAEMON_READY (hex).
    #[arg(long, value_parser = parse_token)]
    token: u64,
    /// Node identity file.
    #[arg(long, default_value = identity::NODE_UUID_PATH)]
    node_uuid_file: PathBuf,
    /// Fencing: SCSI-3 persistent reservations, or none (mount option
    /// fence=none, for devices without PR).
    #[arg(long, value_enum, default_value = "scsi")]
    fence: FenceMode,
    /// Seconds a member may be silent on the network and on disk before
    /// it is declared dead and fenced (mount option dead_interval=).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(3..=300))]
    dead_interval: u64,
}

fn parse_volume_uuid(s: &str) -> Result<Uuid, String> {
    let u = Uuid::parse_str(s).map_err(|e| e.to_string())?;
    if u.is_nil() {
        return Err("the nil UUID is not a volume".to_string());
    }
    Ok(u)
}

fn parse_token(s: &str) -> Result<u64, String> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.is_empty() || hex.len() > 16 {
        return Err("expected 1 to 16 hex digits".to_string());
    }
    match u64::from_str_radix(hex, 16) {
        Ok(0) => Err("the token is never 0".to_string()),
        Ok(t) => Ok(t),
        Err(e) => Err(e.to_string()),
    }
}

/// The kernel's usermode helper starts us with no fds 0-2.  Fill the gaps
/// with /dev/null so that no socket or file of ours lands on them.
/// Returns whether stderr was open.
fn ensure_std_fds() -> bool {
    let mut stderr_open = true;
    loop {
        let Ok(f) = OpenOptions::new().read(true).write(true).open("/dev/null") else {
            return stderr_open;
        };
        let fd = f.into_raw_fd();
        if fd > 2 {
            // SAFETY: we own `fd`, just opened above; closing it via File.
            drop(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
            return stderr_open;
        }
        if fd == 2 {
            stderr_open = false;
        }
        // fds 0..=2 stay open on /dev/null for the life of the process
    }
}

/// Why the daemon stopped: `GaveUp` tells systemd not to restart it
/// (the mount was refused, or is gone).
enum Stop {
    GaveUp(anyhow::Error),
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Failed(e.into())
    }
}

/// What the netlink worker tells the async side (D-Bus).
enum Event {
    /// The first status; the sender is told once the object is on the
    /// bus (or could not be).
    Ready(Box<dbus::VolumeStatus>, std::sync::mpsc::Sender<()>),
    Fenced(String),
    /// The cluster runtime runs: D-Bus follows its status.
    Cluster(cluster::ClusterHandle),
}

type Events = tokio::sync::mpsc::UnboundedSender<Event>;

/// Longest the mount waits for the volume's D-Bus object.
const DBUS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a client waits for its link to the owner before the mount
/// fails.
const OWNER_LINK_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// What runs while the volume is mounted, stopped in this order at
/// SHUTDOWN: the FUSE server (client), the cluster runtime, the file
/// service and the XFS view (owner).
#[derive(Default)]
struct Running {
    fuse: Option<fuse_client::FuseMount>,
    cluster: Option<cluster::Cluster>,
    owner: Option<join::OwnerParts>,
    /// Stopped apart, after the node's key is unregistered: until then
    /// it must go on beating, or the others would judge it dead.
    disk: Option<disk_liveness::DiskLiveness>,
}

impl Running {
    /// Stop the disk heartbeat; `clear`: the node left (its slot is
    /// emptied).
    fn stop_heartbeat(&mut self, clear: bool) {
        if let Some(d) = self.disk.take() {
            d.stop(clear);
        }
    }

    fn stop(&mut self, rt: &tokio::runtime::Handle) {
        if let Some(mut f) = self.fuse.take() {
            if let Err(e) = f.unmount() {
                warn!("unmounting the FUSE client: {e}");
            }
        }
        if let Some(c) = self.cluster.take() {
            rt.block_on(c.shutdown());
        }
        // The service's descriptors first, then the view's unmount: then
        // nothing of ours holds the XFS.
        if let Some(o) = self.owner.take() {
            drop(o.service);
            drop(o.view);
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The FUSE mount a client serves, which the module stacks over: in
/// [`supervision::RUN_DIR`], which only root may enter.
fn fuse_mountpoint(volume: &Uuid) -> PathBuf {
    std::path::Path::new(supervision::RUN_DIR).join(format!("{}.fuse", volume.hyphenated()))
}

/// Start the cluster runtime for `plan`; on a client, wait for the
/// owner's link and mount the FUSE server.
/// How this node joins the cluster: its part, who it follows when its
/// owner leaves (a client), and the FUSE connection it takes over (a
/// restarted client).
struct Joining {
    plan: join::Plan,
    succession: Option<std::sync::Arc<dyn cluster::Succession>>,
    resume: Option<fuse_client::Resume>,
    /// The reply cache's copy a restarted daemon takes back.
    replies: Option<std::os::fd::OwnedFd>,
}

fn start_cluster(
    args: &Args,
    node_uuid: Uuid,
    joining: Joining,
    fence: &std::sync::Arc<NodeFence>,
    rt: &tokio::runtime::Handle,
    running: &mut Running,
) -> anyhow::Result<()> {
    let Joining {
        plan,
        succession,
        resume,
        replies,
    } = joining;
    let mut cfg = cluster::Config::new(node_uuid, args.uuid, hostname(), plan.secret, plan.role);
    cfg.succession = succession;
    cfg.replies = reply_cache(replies);
    cfg.dead_interval = std::time::Duration::from_secs(args.dead_interval);
    // Liveness: this node beats on disk and watches everyone's beats; it
    // fences whom the runtime judges dead.
    if let Some(id) = mxfs_core::identity::node_id(&node_uuid) {
        // The DLM records its grants in this node's partition of the
        // lockstate, once the heartbeat has a slot.
        let (records, recorded) = tokio::sync::watch::channel(lockstate::RecorderState::Opening);
        cfg.lock_records = Some(recorded);
        let disk = disk_liveness::DiskLiveness::start(
            args.device.clone(),
            identity::NodeIdentity {
                uuid: node_uuid,
                id,
            },
            plan.role.epoch(),
            cfg.dead_interval,
            records,
        )
        .context("starting the disk heartbeat")?;
        cfg.disk = Some(disk.view());
        running.disk = Some(disk);
        cfg.fencer = Some(std::sync::Arc::new(recovery::Recovery {
            fence: fence.clone(),
            device: args.device.clone(),
        }));
    }
    let service = plan.owner.as_ref().map(|o| o.service.clone());
    running.owner = plan.owner;
    let c = rt
        .block_on(cluster::start(cfg, service))
        .context("starting the cluster runtime")?;
    let handle = c.handle();
    running.cluster = Some(c);
    match plan.role {
        cluster::Role::Client { owner, .. } => {
            supervision::status(&format!("waiting for the owner, node {owner:016x}"));
            let deadline = std::time::Instant::now() + OWNER_LINK_WAIT;
            while !handle.status().members.contains(&owner) {
                if std::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "no link to the owner (node {owner:016x}) within {} s: is it up and on this network?",
                        OWNER_LINK_WAIT.as_secs()
                    );
                }
                supervision::watchdog();
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        // A client that took the volume over serves its own FUSE
        // requests (its mount still stacks over FUSE): a restart of it
        // goes on serving that connection, now locally.
        cluster::Role::Owner { .. } if resume.is_some() => {}
        cluster::Role::Owner { .. } => return Ok(()),
    }
    let root = match handle.call_blocking(
        FileRequest {
            creds: Creds {
                uid: 0,
                gid: 0,
                pid: std::process::id(),
                groups: Vec::new(),
            },
            op: Op::Root,
        },
        Default::default(),
    ) {
        FileReply::Entry { handle, .. } => handle,
        other => anyhow::bail!("the owner did not give the volume root: {other:?}"),
    };
    let dir = fuse_mountpoint(&args.uuid);
    // Users reach the FUSE mount only through the mxfs mount above: the
    // module's private requests through it rely on that (also on a
    // resume, should an older daemon have left the directory open).
    supervision::private_run_dir()?;
    if resume.is_none() {
        // Not on a resume: the directory is the FUSE mount itself, and
        // looking at it would wait for the server that we are.
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let config = fuse_client::MountConfig::default();
    let fuse = match resume {
        // A restarted daemon: the kernel mount stacks over the FUSE
        // connection the dead one served, which systemd kept.
        Some(kept) => fuse_client::resume(&dir, root, ForwardToOwner(handle), &config, kept)
            .with_context(|| format!("taking over the FUSE client at {}", dir.display()))?,
        None => {
            let fuse = fuse_client::mount(&dir, root, ForwardToOwner(handle), &config)
                .with_context(|| format!("mounting the FUSE client at {}", dir.display()))?;
            let (dev, state) = fuse.kept();
            supervision::keep_fuse(dev, state);
            fuse
        }
    };
    running.fuse = Some(fuse);
    Ok(())
}

/// The owner's reply cache, with its copy in a memfd for a restarted
/// daemon: the one systemd kept (`kept`), or a new one given to systemd.
/// Without a copy the cache is in memory only.
fn reply_cache(kept: Option<std::os::fd::OwnedFd>) -> cluster::replies::ReplyCache {
    use cluster::reply_store::ReplyStore;
    let now = std::time::Instant::now();
    if let Some(fd) = kept {
        match ReplyStore::open(fd, cluster::replies::KEEP) {
            Ok(r) => {
                info!(
                    answers = r.answers.len(),
                    refused = r.refused,
                    "took back the reply cache of the previous mxfsd"
                );
                return cluster::replies::ReplyCache::with_store(r.store, r.answers, now);
            }
            Err(e) => warn!("the kept reply cache cannot be read ({e}); starting an empty one"),
        }
    }
    match ReplyStore::create() {
        Ok(store) => {
            supervision::keep_replies(store.fd());
            cluster::replies::ReplyCache::with_store(store, Vec::new(), now)
        }
        Err(e) => {
            warn!("no memfd for the reply cache ({e}): it will not outlive this daemon");
            Default::default()
        }
    }
}

/// The client's FUSE server forwards through the cluster runtime.
struct ForwardToOwner(cluster::ClusterHandle);

impl fuse_client::Forward for ForwardToOwner {
    fn call(&self, req: FileRequest) -> FileReply {
        self.0.call_blocking(req, Default::default())
    }

    fn call_from(&self, req: FileRequest, origin: wire::Origin) -> FileReply {
        self.0.call_blocking(req, origin)
    }
}

fn serve(
    args: &Args,
    node_id: u64,
    node_uuid: Uuid,
    events: Events,
    rt: tokio::runtime::Handle,
) -> Result<(), Stop> {
    let session = Session {
        token: args.token,
        uuid: *args.uuid.as_bytes(),
    };
    let mut ch = Channel::open().context("opening the netlink channel")?;
    let reattach = supervision::is_reattach(&args.uuid);
    let (fence, joined) = if reattach {
        // systemd restarted us while the mount lives: no new registration.
        info!("restarted while the volume is mounted: re-attaching");
        supervision::status("re-attaching to the mounted volume");
        let f =
            NodeFence::attach(&args.device, node_id, args.fence).context("opening the device")?;
        (f, None)
    } else {
        // Fencing first: this node writes to the device only once its key
        // is registered and the registrants-only reservation is in place.
        supervision::status("registering this node's reservation key");
        match NodeFence::join(&args.device, node_id, args.fence) {
            Ok((f, joined)) => {
                info!(fence = args.fence.as_str(), joined = ?joined, "fencing in place");
                (f, Some(joined))
            }
            Err(e) => {
                let reason = e.to_string();
                // The module fails the mount with this reason.
                if let Err(ne) = ch.daemon_exited(&session, EIO, &reason) {
                    warn!("DAEMON_EXITED not delivered: {ne}");
                }
                return Err(Stop::GaveUp(
                    anyhow::Error::new(e).context("joining the device's reservation"),
                ));
            }
        }
    };

    let fence = std::sync::Arc::new(fence);
    // Which part this node takes (join.rs).  fence=none runs as the lone
    // owner, without the cluster: without PR there is no arbiter of
    // ownership.  A re-attaching owner (it still holds the reservation)
    // rejoins the cluster at its epoch, or its clients would soon judge
    // it dead; a re-attaching client rejoins as a client of the holder
    // and serves the FUSE connection that systemd kept for it.
    let supervision::Kept {
        fuse: mut resume,
        replies: kept_replies,
    } = if reattach {
        supervision::kept()
    } else {
        Default::default()
    };
    let plan = match joined {
        None if reattach => match fence.reservation_holder() {
            Some(holder) if holder == node_id => {
                Some(join::as_owner(&args.device, &args.uuid, node_id, true))
            }
            // A client: it goes on serving the FUSE connection systemd
            // kept for it, as a client of the same owner.
            Some(holder) if resume.is_some() => {
                supervision::status(&format!("re-attaching as a client of {holder:016x}"));
                Some(join::as_client(&args.device, holder, join::LOCKSTATE_WAIT))
            }
            Some(_) => Some(Err(anyhow::anyhow!(
                "this client's FUSE connection was not kept for a restarted mxfsd (nothing in \
                 the unit's file descriptor store): the mount cannot go on"
            ))),
            // fence=none, or no reservation to read: alone, as before
            None => None,
        },
        None | Some(Joined::Unfenced) => None,
        Some(Joined::Reserved) => Some(join::as_owner(&args.device, &args.uuid, node_id, false)),
        // our own reservation, left by a daemon that was killed
        Some(Joined::AlreadyReserved { holder }) if holder == node_id => {
            Some(join::as_owner(&args.device, &args.uuid, node_id, false))
        }
        Some(Joined::AlreadyReserved { holder: 0 }) => Some(Err(anyhow::anyhow!(
            "the device's reservation holder cannot be read (NVMe): clients are not supported there yet"
        ))),
        Some(Joined::AlreadyReserved { holder }) => {
            supervision::status(&format!("waiting for the lockstate of owner {holder:016x}"));
            Some(join::as_client(&args.device, holder, join::LOCKSTATE_WAIT))
        }
    };
    let mut running = Running::default();
    let started = match plan {
        None => Ok(cluster::Role::Owner { epoch: 1 }),
        Some(Err(e)) => Err(e),
        Some(Ok(plan)) => {
            let role = plan.role;
            // A client takes the volume over, or follows whoever does,
            // when its owner leaves.
            let succession: Option<std::sync::Arc<dyn cluster::Succession>> = match role {
                cluster::Role::Client { .. } => Some(std::sync::Arc::new(join::Successor {
                    device: args.device.clone(),
                    volume: args.uuid,
                    node_id,
                    fence: fence.clone(),
                })),
                cluster::Role::Owner { .. } => None,
            };
            let joining = Joining {
                plan,
                succession,
                resume: resume.take(),
                replies: kept_replies,
            };
            start_cluster(args, node_uuid, joining, &fence, &rt, &mut running).map(|()| role)
        }
    };
    let role = match started {
        Ok(r) => r,
        Err(e) => {
            running.stop(&rt);
            let reason = format!("{e:#}");
            if let Err(ne) = ch.daemon_exited(&session, EIO, &reason) {
                warn!("DAEMON_EXITED not delivered: {ne}");
            }
            if !reattach {
                fence.leave();
            }
            running.stop_heartbeat(true);
            return Err(Stop::GaveUp(e.context("joining the volume")));
        }
    };
    let epoch = role.epoch();
    let (role_name, owner_node) = match role {
        cluster::Role::Owner { .. } => ("owner", node_id),
        cluster::Role::Client { owner, .. } => ("client", owner),
    };
    let fenced_meanwhile = reattach && matches!(fence.still_registered(), Some(Ok(false)));
    // The volume is on D-Bus before the mount returns (bounded: without
    // a bus the daemon goes on, and says so).
    let (shown_tx, shown_rx) = std::sync::mpsc::channel();
    let _ = events.send(Event::Ready(
        Box::new(dbus::VolumeStatus {
            volume_uuid: args.uuid.hyphenated().to_string(),
            device: args.device.display().to_string(),
            mountpoint: args.mountpoint.clone(),
            node_id,
            role: role_name.to_string(),
            owner_node,
            epoch,
            members: vec![node_id],
            fencing_state: match args.fence {
                FenceMode::Scsi => "registered",
                FenceMode::None => "unfenced",
            }
            .to_string(),
            fence_reason: String::new(),
            pr_capability: fence.capability().to_string(),
            forwarded_requests: 0,
            lock_requests: 0,
            lock_grant_latency: metrics::LATENCY_BUCKETS_US
                .iter()
                .map(|b| (*b, 0))
                .collect(),
            last_recovery: String::new(),
            heartbeat_age: Vec::new(),
            lock_view: 0,
            lock_members: Vec::new(),
            lock_owner: 0,
            lock_records: -1,
        }),
        shown_tx,
    ));
    if let Some(c) = &running.cluster {
        let _ = events.send(Event::Cluster(c.handle()));
    }
    if shown_rx.recv_timeout(DBUS_WAIT).is_err() {
        warn!("D-Bus: the volume object is not up yet; the mount goes on");
    }
    // Applications' fcntl and flock locks go through the DLM, when there
    // is one (not under fence=none): ready before the module is told.
    let file_locks = match &running.cluster {
        Some(c) => match file_locks::start_answering(session) {
            Ok(answers) => Some(file_locks::FileLockServer::start(
                c.handle().dlm().clone(),
                answers,
                c.handle().lock_metrics(),
                &rt,
            )),
            Err(e) => {
                warn!("no thread for file lock answers ({e}): fcntl and flock locks stay on this node");
                None
            }
        },
        None => None,
    };
    // The module's role of the mount is what it stacks over: FUSE (a
    // client, also one that has since taken the volume over) or XFS.
    let ready = if running.fuse.is_some() {
        ch.daemon_ready_client(
            &session,
            epoch,
            node_id,
            &fuse_mountpoint(&args.uuid),
            file_locks.is_some(),
        )
    } else {
        ch.daemon_ready(&session, Role::Owner, epoch, node_id, file_locks.is_some())
    };
    if let Err(e) = ready {
        running.stop(&rt);
        if !reattach {
            fence.leave();
        }
        running.stop_heartbeat(true);
        supervision::finished(&args.uuid);
        return Err(Stop::GaveUp(anyhow::Error::new(e).context("DAEMON_READY")));
    }
    if reattach {
        info!(role = role_name, epoch, "re-attached to the mounted volume");
    } else if owner_node == node_id {
        info!(role = role_name, epoch, "ready; the module now mounts XFS");
    } else {
        info!(
            role = role_name,
            epoch,
            owner = %format!("{owner_node:016x}"),
            "ready; the module now stacks over the FUSE client"
        );
    }
    supervision::joined(
        &args.uuid,
        &format!("{role_name}, epoch {epoch}, fence={}", args.fence.as_str()),
    );
    if fenced_meanwhile {
        let reason = format!(
            "key 0x{node_id:016x} was removed from {} while mxfsd was restarting (preempted)",
            args.device.display()
        );
        error!(reason = %reason, "this node has been fenced: {reason}");
        ch.fenced(&session, &reason).context("FENCED")?;
        let _ = events.send(Event::Fenced(reason));
    }

    // Self-fencing: a node whose key another node has preempted must not
    // use the device any more.  The watch has its own netlink socket, so
    // it can tell the kernel while this thread waits for commands.
    let (stop_watch, stop_rx) = std::sync::mpsc::channel::<()>();
    let watcher = {
        let fence = fence.clone();
        let events = events.clone();
        std::thread::Builder::new()
            .name("fence-watch".into())
            .spawn(move || {
                let Some(reason) = fence.watch(WATCH_INTERVAL, &stop_rx, supervision::watchdog)
                else {
                    return;
                };
                error!(
                    reason = %reason,
                    "this node has been fenced: {reason}; its mount fails with EIO until it is unmounted"
                );
                if let Err(e) = Channel::open().and_then(|mut ch| ch.fenced(&session, &reason)) {
                    error!("could not tell the kernel that this node is fenced: {e}");
                }
                let _ = events.send(Event::Fenced(reason));
            })
            .context("starting the fence watch")?
    };

    loop {
        let (cmd, attrs) = ch.next_command().context("waiting for the kernel")?;
        if cmd == uapi::MXFS_CMD_FILE_LOCK {
            match (&file_locks, file_locks::decode_call(&attrs, &session)) {
                (Some(server), Ok(call)) => server.submit(call),
                (None, _) => warn!("a FILE_LOCK call, but this daemon does not serve file locks"),
                (_, Err(e)) => warn!("ignoring a FILE_LOCK call: {e}"),
            }
            continue;
        }
        if cmd != MXFS_CMD_SHUTDOWN {
            warn!(
                cmd = cmd_name(cmd),
                "ignoring a command this version does not handle"
            );
            continue;
        }
        match check_shutdown(&attrs, session.token, &session.uuid) {
            Ok(reason) => {
                let reason = reason.unwrap_or_default();
                info!(reason = %reason, "SHUTDOWN from the kernel; exiting");
                // The module has unmounted XFS before SHUTDOWN: nothing of
                // ours writes to the device any more.
                drop(stop_watch);
                if watcher.join().is_err() {
                    warn!("the fence watch panicked");
                }
                // FUSE, links, file service, then our XFS view: after this
                // nothing of ours uses the volume.
                running.stop(&rt);
                // The reservation is the right to mount the XFS: keep it
                // while anything here still has the XFS mounted.
                match xfs_view::device_in_use(&args.device) {
                    Ok(false) => fence.leave(),
                    Ok(true) => error!(
                        device = %args.device.display(),
                        "the XFS is still mounted on this node after the unmount: keeping the \
                         reservation, so that no other node mounts it too"
                    ),
                    Err(e) => {
                        warn!("checking that the XFS is unmounted: {e}; leaving anyway");
                        fence.leave();
                    }
                }
                running.stop_heartbeat(true);
                supervision::finished(&args.uuid);
                if let Err(e) = ch.daemon_exited(&session, 0, "shutdown requested") {
                    // the module also notices our socket closing
                    warn!("DAEMON_EXITED not delivered: {e}");
                }
                return Ok(());
            }
            Err(e) => warn!("ignoring a SHUTDOWN: {e}"),
        }
    }
}

/// EIO: the error a refused join reports to the kernel in DAEMON_EXITED.
const EIO: u32 = 5;

async fn run(args: Args, node_id: u64, node_uuid: Uuid) -> Result<(), Stop> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let volume = args.uuid;
    let (events, mut incoming) = tokio::sync::mpsc::unbounded_channel();
    let rt = tokio::runtime::Handle::current();
    let mut worker =
        tokio::task::spawn_blocking(move || serve(&args, node_id, node_uuid, events, rt));
    let mut cluster: Option<cluster::ClusterHandle> = None;
    let mut refresh = tokio::time::interval(std::time::Duration::from_secs(1));
    const GONE: &str = "exiting while mounted; the mount fails with EIO unless a restarted mxfsd \
                        re-attaches in time (module parameter reattach_timeout)";
    let mut bus: Option<dbus::Bus> = None;
    let mut events_open = true;
    loop {
        tokio::select! {
            r = &mut worker => return r.context("netlink worker")?,
            ev = incoming.recv(), if events_open => match ev {
                None => events_open = false,
                Some(Event::Ready(status, shown)) => {
                    match dbus::Bus::connect(&volume, *status).await {
                        Ok(b) => {
                            info!("D-Bus: serving {} at {}", dbus::bus_name(&volume), dbus::PATH);
                            bus = Some(b);
                        }
                        Err(e) => warn!("D-Bus: not on the system bus ({e}); status is in the journal only"),
                    }
                    let _ = shown.send(());
                }
                Some(Event::Fenced(reason)) => {
                    if let Some(b) = &bus {
                        b.fenced(&reason).await;
                    }
                }
                Some(Event::Cluster(h)) => cluster = Some(h),
            },
            _ = refresh.tick(), if cluster.is_some() && bus.is_some() => {
                if let (Some(h), Some(b)) = (&cluster, &bus) {
                    let st = h.status();
                    b.update(&dbus::ClusterView {
                        role: st.role.name().to_string(),
                        owner_node: st.owner,
                        epoch: st.role.epoch(),
                        members: st.members,
                        forwarded_requests: st.forwarded,
                        lock_requests: st.lock_requests,
                        lock_grant_latency: st.lock_grant_latency,
                        last_recovery: st.last_recovery,
                        heartbeat_age: st.heartbeat_age,
                        lock_view: st.lock_view,
                        lock_members: st.lock_members,
                        lock_owner: st.lock_owner,
                        lock_records: st.lock_records.map_or(-1, i64::from),
                    })
                    .await;
                }
            }
            _ = sigterm.recv() => {
                warn!("SIGTERM: {GONE}");
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => {
                warn!("SIGINT: {GONE}");
                return Ok(());
            }
        }
    }
}

fn main() -> ExitCode {
    let stderr_open = ensure_std_fds();
    let args = Args::parse();
    let volume = args.uuid.hyphenated().to_string();

    let ident = identity::load_or_create(&args.node_uuid_file);
    let node = ident.as_ref().ok().map(|i| format!("{:016x}", i.id));
    let sink = logging::init(&volume, node.as_deref(), stderr_open);

    let span =
        tracing::info_span!("mxfsd", volume = %volume, node = node.as_deref().unwrap_or("?"));
    let _guard = span.enter();

    let ident = match ident {
        Ok(i) => i,
        Err(e) => {
            error!("node identity: {e}");
            return ExitCode::FAILURE;
        }
    };
    info!(
        device = %args.device.display(),
        mountpoint = %args.mountpoint,
        node_uuid = %ident.uuid,
        log = ?sink,
        "mxfsd {} starting",
        env!("CARGO_PKG_VERSION")
    );

    // Paths that the unit's environment file cannot carry run on directly.
    let unit_env = supervision::should_hand_over()
        .then(|| {
            supervision::env_contents(
                &args.device,
                &args.mountpoint,
                args.token,
                args.fence,
                args.dead_interval,
            )
        })
        .flatten();
    if let Some(env) = unit_env {
        match supervision::hand_over(&args.uuid, &env) {
            Ok(code) => return code,
            Err(e) => {
                error!("{e:#}");
                return ExitCode::FAILURE;
            }
        }
    }

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(args, ident.id, ident.uuid));
    // Do not wait for a worker still blocked in recv().
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::GaveUp(e)) => {
            error!("{e:#}");
            ExitCode::from(supervision::EXIT_GAVE_UP)
        }
        Err(Stop::Failed(e)) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(parse_token("00000000000000ff"), Ok(255));
        assert_eq!(parse_token("0xdeadbeef"), Ok(0xdead_beef));
        assert!(parse_token("0").is_err());
        assert!(parse_token("").is_err());
        assert!(parse_token("12345678901234567").is_err());
        assert!(parse_token("xyz").is_err());
    }

    #[test]
    fn volume_uuids() {
        let plain = parse_volume_uuid("00112233445566778899aabbccddeeff").unwrap();
        let dashed = parse_volume_uuid("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(plain, dashed);
        assert!(parse_volume_uuid("00000000000000000000000000000000").is_err());
        assert!(parse_volume_uuid("nope").is_err());
    }

    #[test]
    fn arguments_as_the_kernel_passes_them() {
        let a = Args::try_parse_from([
            "/usr/sbin/mxfsd",
            "--device",
            "/dev/sdb",
            "--mountpoint",
            "",
            "--uuid",
            "00112233445566778899aabbccddeeff",
            "--token",
            "0123456789abcdef",
        ])
        .unwrap();
        assert_eq!(a.device, PathBuf::from("/dev/sdb"));
        assert_eq!(a.token, 0x0123_4567_89ab_cdef);
        assert_eq!(a.node_uuid_file, PathBuf::from(identity::NODE_UUID_PATH));
    }
}
