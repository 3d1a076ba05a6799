//! The discovery socket and the task that drives the peer table.
//!
//! One task owns the socket, the table and the counters' writers: it
//! announces every interval, receives, and delivers [`Event`]s on an mpsc
//! channel.  No locks: the only shared state is the [`Stats`] atomics and
//! two watch channels (shutdown, role).
//!
//! The socket (design section 6): UDP bound to the group address and port
//! (239.66.83.1:7601), with SO_REUSEADDR and SO_REUSEPORT, because every
//! mxfsd on a node (one per mounted volume) binds the same port; for
//! multicast the kernel gives each of those sockets its own copy, where
//! for unicast it would hand each datagram to one of them only, which is
//! why the group must be a multicast address.  Binding to the group
//! address (not INADDR_ANY) and IP_MULTICAST_ALL off keep unicast and
//! other groups' datagrams to that port away from us.  IP_MULTICAST_LOOP
//! is on so that daemons on one node hear each other (other volumes'
//! daemons, and the test's instances); TTL 1 keeps announcements on the
//! local network segment.
//!
//! Which interface: by default the group is joined with INADDR_ANY, which
//! lets the kernel pick the interface by routing the group address, and
//! sends go out of that same route, so we listen where we speak.  Joining
//! every interface that has an IPv4 address would receive where we do not
//! send (peers there would see us never, we would see them), and would
//! need the interface list and its changes.  A node whose cluster network
//! is not the route to 239.0.0.0/8 (or that has no default route, where a
//! join on INADDR_ANY fails with ENODEV) sets [`Config::interface`], which
//! pins both the join and IP_MULTICAST_IF to the interface with that
//! address.
//!
//! What arrives is sorted before anything is verified: not an
//! announcement (malformed), another volume's (dropped silently: several
//! volumes share the group), another format version of ours (a warning),
//! then verified with our key: a bad MAC is forged, a good MAC over bad
//! fields is a broken member.  Those are logged as warnings with their
//! source, at most one line per source per `log_period`, and counted.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::ratelimit::LogLimiter;
use super::table::{Event, Ignored, LocalNode, Outcome, PeerTable};
use crate::volume_keys::{KeyPurpose, VolumeSecret};
use crate::wire::announce::{self, AnnounceError, AnnouncedRole, Announcement};

/// Design section 6.
pub const DEFAULT_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 66, 83, 1), 7601);
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Sources tracked per kind of bad datagram, for the log rate limit.
const LOG_SOURCES: usize = 256;
/// Bigger than any announcement, so an oversized one is seen as such
/// (recv truncates silently) instead of as a shorter one.
const RECV_BUF: usize = 2048;

#[derive(Debug, Clone)]
pub struct Config {
    /// Multicast group and port.
    pub group: SocketAddrV4,
    /// Address of the interface to join and send on; None: the route's.
    pub interface: Option<Ipv4Addr>,
    pub interval: Duration,
    /// A peer not heard for this long is lost.
    pub timeout: Duration,
    /// See [`PeerTable::new`].
    pub restart_quiet: Duration,
    /// At most one warning per source and kind per period.
    pub log_period: Duration,
}

impl Config {
    /// Defaults scaled to one interval: a peer is lost after missing three
    /// announcements and most of a fourth, and a new incarnation replaces
    /// a silent one after one and a half intervals.
    pub fn with_interval(interval: Duration) -> Self {
        Config {
            group: DEFAULT_GROUP,
            interface: None,
            interval,
            timeout: interval * 4,
            restart_quiet: interval * 3 / 2,
            log_period: Duration::from_secs(60),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::with_interval(DEFAULT_INTERVAL)
    }
}

/// What this daemon announces about itself.
#[derive(Debug, Clone)]
pub struct Local {
    pub node_uuid: Uuid,
    pub volume_uuid: [u8; 16],
    /// Our peer listener's port.
    pub tcp_port: u16,
    pub hostname: String,
    pub role: AnnouncedRole,
    pub owner_epoch: u64,
}

/// Counters, for the D-Bus metrics.  Written by the discovery task only.
#[derive(Debug, Default)]
pub struct Stats {
    pub sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub received: AtomicU64,
    pub recv_errors: AtomicU64,
    /// Announcements of other volumes (normal with several mounts).
    pub other_volume: AtomicU64,
    /// Not an announcement at all.
    pub malformed: AtomicU64,
    /// Our volume, a format version we do not speak.
    pub other_version: AtomicU64,
    /// Our volume, bad MAC: made without the volume's secret.
    pub forged: AtomicU64,
    /// Good MAC, invalid fields: a member with a broken encoder.
    pub invalid: AtomicU64,
    /// Refused by the table (duplicate node id, cloned identity, full).
    pub refused: AtomicU64,
    /// Sequence numbers seen before, or an old incarnation.
    pub replayed: AtomicU64,
}

/// The counters at one moment.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    pub recv_errors: u64,
    pub other_volume: u64,
    pub malformed: u64,
    pub other_version: u64,
    pub forged: u64,
    pub invalid: u64,
    pub refused: u64,
    pub replayed: u64,
}

#[cfg(test)]
impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            sent: g(&self.sent),
            send_errors: g(&self.send_errors),
            received: g(&self.received),
            recv_errors: g(&self.recv_errors),
            other_volume: g(&self.other_volume),
            malformed: g(&self.malformed),
            other_version: g(&self.other_version),
            forged: g(&self.forged),
            invalid: g(&self.invalid),
            refused: g(&self.refused),
            replayed: g(&self.replayed),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A running discovery.  Dropping it stops the task too (at its next
/// wake-up); [`Discovery::shutdown`] also waits for it.
#[derive(Debug)]
pub struct Discovery {
    #[cfg(test)]
    stats: Arc<Stats>,
    #[cfg(test)]
    node_id: u64,
    #[cfg(test)]
    incarnation: u64,
    role: watch::Sender<(AnnouncedRole, u64)>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Discovery {
    #[cfg(test)]
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    #[cfg(test)]
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    #[cfg(test)]
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Announce this role and owner epoch from now on; when they are new,
    /// also at once.  The same ones again change nothing.
    pub fn set_role(&self, role: AnnouncedRole, owner_epoch: u64) {
        self.role.send_if_modified(|now| {
            let changed = *now != (role, owner_epoch);
            *now = (role, owner_epoch);
            changed
        });
    }

    /// Stop announcing and receiving, and wait for the task to end.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        if let Err(e) = self.task.await {
            warn!("discovery task ended badly: {e}");
        }
    }
}

/// A fresh incarnation: random and non-zero, so that a restarted daemon is
/// told from its previous run without any state kept across runs.
fn new_incarnation() -> anyhow::Result<u64> {
    loop {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("random incarnation: {e}"))?;
        let v = u64::from_be_bytes(b);
        if v != 0 {
            return Ok(v);
        }
    }
}

fn open_socket(config: &Config) -> io::Result<std::net::UdpSocket> {
    let group = *config.group.ip();
    if !group.is_multicast() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("discovery group {group} is not a multicast address"),
        ));
    }
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::V4(config.group).into())?;
    let iface = config.interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
    s.join_multicast_v4(&group, &iface)?;
    if let Some(ifa) = config.interface {
        s.set_multicast_if_v4(&ifa)?;
    }
    s.set_multicast_all_v4(false)?;
    s.set_multicast_loop_v4(true)?;
    s.set_multicast_ttl_v4(1)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Start discovery: open and join the socket, then announce and listen in
/// a task of the current tokio runtime.  Events go to `events`; the
/// consumer must keep draining it, since the task waits for room (losing
/// a `Lost` would be worse than a late one).
pub async fn start(
    config: Config,
    local: Local,
    secret: &VolumeSecret,
    events: mpsc::Sender<Event>,
) -> anyhow::Result<Discovery> {
    let node_id =
        mxfs_core::identity::node_id(&local.node_uuid).context("node uuid hashes to node id 0")?;
    let incarnation = new_incarnation()?;
    let key = secret.derive(KeyPurpose::Announce, &local.volume_uuid);
    let template = Announcement {
        volume_uuid: local.volume_uuid,
        node_uuid: *local.node_uuid.as_bytes(),
        node_id,
        tcp_port: local.tcp_port,
        incarnation,
        sequence: 0,
        role: local.role,
        owner_epoch: local.owner_epoch,
        hostname: local.hostname.clone(),
    };
    // refuse a bad hostname or port here, not at every tick
    announce::encode(&template, &key).context("our own announcement")?;
    let std_sock =
        open_socket(&config).with_context(|| format!("discovery socket on {}", config.group))?;
    let sock = UdpSocket::from_std(std_sock).context("discovery socket")?;
    let table = PeerTable::new(
        LocalNode {
            node_uuid: local.node_uuid,
            node_id,
            volume_uuid: local.volume_uuid,
            incarnation,
        },
        config.restart_quiet,
    );
    let stats = Arc::new(Stats::default());
    let (role_tx, role_rx) = watch::channel((local.role, local.owner_epoch));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let limit = || LogLimiter::new(config.log_period, LOG_SOURCES);
    let runner = Runner {
        sock,
        dest: SocketAddr::V4(config.group),
        key,
        volume: Uuid::from_bytes(local.volume_uuid),
        template,
        table,
        stats: Arc::clone(&stats),
        events,
        forged_log: limit(),
        bad_log: limit(),
        refused_log: limit(),
        io_log: limit(),
        config,
        shutdown: shutdown_rx,
        stopping: false,
    };
    info!(
        node_id = format_args!("{node_id:016x}"),
        incarnation = format_args!("{incarnation:016x}"),
        "discovery: announcing volume {} on {} every {:?}",
        runner.volume,
        runner.dest,
        runner.config.interval
    );
    let task = tokio::spawn(runner.run(role_rx));
    Ok(Discovery {
        #[cfg(test)]
        stats,
        #[cfg(test)]
        node_id,
        #[cfg(test)]
        incarnation,
        role: role_tx,
        shutdown: shutdown_tx,
        task,
    })
}

struct Runner {
    sock: UdpSocket,
    dest: SocketAddr,
    key: [u8; 32],
    volume: Uuid,
    /// Our announcement; its sequence is the last one sent.
    template: Announcement,
    table: PeerTable,
    stats: Arc<Stats>,
    events: mpsc::Sender<Event>,
    forged_log: LogLimiter,
    /// Malformed, other versions, invalid fields.
    bad_log: LogLimiter,
    refused_log: LogLimiter,
    /// Send and receive errors (one "source": ourselves).
    io_log: LogLimiter,
    config: Config,
    shutdown: watch::Receiver<bool>,
    /// Shutdown came while we waited for room on the event channel.
    stopping: bool,
}

impl Runner {
    async fn run(mut self, mut role: watch::Receiver<(AnnouncedRole, u64)>) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; RECV_BUF];
        let mut shutdown = self.shutdown.clone();
        while !self.stopping {
            tokio::select! {
                // shutdown first: a dropped handle closes both channels
                biased;
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                r = role.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let (new_role, epoch) = *role.borrow_and_update();
                    self.template.role = new_role;
                    self.template.owner_epoch = epoch;
                    self.announce().await;
                }
                _ = tick.tick() => {
                    self.announce().await;
                    let lost = self.table.expire(Instant::now(), self.config.timeout);
                    for ev in lost {
                        self.deliver(ev).await;
                    }
                }
                r = self.sock.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let bytes = buf.get(..n).unwrap_or(&buf);
                        self.on_datagram(bytes, from).await;
                    }
                    Err(e) => {
                        bump(&self.stats.recv_errors);
                        self.io_warn("receive", &e);
                        // do not spin on an error that repeats at once
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        debug!("discovery for volume {} stopped", self.volume);
    }

    async fn announce(&mut self) {
        self.template.sequence += 1;
        let datagram = match announce::encode(&self.template, &self.key) {
            Ok(d) => d,
            // start() encoded the same fields; only role/epoch change since
            Err(e) => {
                warn!("discovery: cannot encode our announcement: {e}");
                return;
            }
        };
        match self.sock.send_to(&datagram, self.dest).await {
            Ok(_) => bump(&self.stats.sent),
            Err(e) => {
                bump(&self.stats.send_errors);
                self.io_warn("send", &e);
            }
        }
    }

    fn io_warn(&mut self, what: &str, e: &io::Error) {
        let ours = SocketAddr::V4(self.config.group).ip();
        if let Some(p) = self.io_log.check(ours, Instant::now()) {
            warn!(
                "discovery: {what} on {} failed: {e} ({} similar suppressed)",
                self.dest, p.suppressed
            );
        }
    }

    async fn deliver(&mut self, ev: Event) {
        match &ev {
            Event::Joined(p) | Event::Restarted(p) | Event::Changed(p) => info!(
                node_id = format_args!("{:016x}", p.node_id),
                "discovery: {} {} ({}) at {}, {:?} epoch {}",
                match ev {
                    Event::Joined(_) => "joined",
                    Event::Restarted(_) => "restarted",
                    _ => "changed",
                },
                p.hostname,
                p.node_uuid,
                p.addr,
                p.role,
                p.owner_epoch
            ),
            Event::Lost(id) => info!(node_id = format_args!("{id:016x}"), "discovery: lost"),
        }
        // A consumer that stopped draining must not make shutdown hang.
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            r = self.events.send(ev) => if r.is_err() {
                debug!("discovery: nobody takes events any more");
            },
            _ = shutdown.wait_for(|stop| *stop) => self.stopping = true,
        }
    }

    async fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        bump(&self.stats.received);
        let now = Instant::now();
        let header = match announce::peek(bytes) {
            Ok(h) => h,
            Err(e) => {
                bump(&self.stats.malformed);
                if let Some(p) = self.bad_log.check(from.ip(), now) {
                    info!(
                        "discovery: not an announcement from {from}: {e} ({} suppressed{})",
                        p.suppressed,
                        overflow_note(p.overflow)
                    );
                }
                return;
            }
        };
        if header.volume_uuid != *self.volume.as_bytes() {
            // several volumes share the group: not an event, not a warning
            bump(&self.stats.other_volume);
            return;
        }
        let a = match announce::decode(bytes, &self.key) {
            Ok(a) => a,
            Err(e) => {
                let (counter, log) = match e {
                    AnnounceError::Mac => (&self.stats.forged, &mut self.forged_log),
                    AnnounceError::Version(_) => (&self.stats.other_version, &mut self.bad_log),
                    _ => (&self.stats.invalid, &mut self.bad_log),
                };
                bump(counter);
                if let Some(p) = log.check(from.ip(), now) {
                    let what = match e {
                        AnnounceError::Mac => "forged announcement",
                        AnnounceError::Version(_) => "announcement of another format version",
                        _ => "invalid announcement (from a holder of the secret)",
                    };
                    warn!(
                        "discovery: {what} for volume {} from {from}: {e} ({} more suppressed{})",
                        self.volume,
                        p.suppressed,
                        overflow_note(p.overflow)
                    );
                }
                return;
            }
        };
        match self.table.apply(&a, from, now) {
            Outcome::Event(ev) => {
                let newcomer = matches!(ev, Event::Joined(_) | Event::Restarted(_));
                self.deliver(ev).await;
                if newcomer {
                    // Answer at once: a mounting node learns the members
                    // within a round trip, not an interval.
                    self.announce().await;
                }
            }
            Outcome::Refreshed | Outcome::Ignored(Ignored::Own | Ignored::OtherVolume) => {}
            Outcome::Ignored(i) => {
                bump(&self.stats.replayed);
                debug!("discovery: from {from}: ignored {i:?}");
            }
            Outcome::Refused(r) => {
                bump(&self.stats.refused);
                if let Some(p) = self.refused_log.check(from.ip(), now) {
                    warn!(
                        "discovery: refused: {r} ({} more suppressed{})",
                        p.suppressed,
                        overflow_note(p.overflow)
                    );
                }
            }
        }
    }
}

fn overflow_note(overflow: bool) -> &'static str {
    if overflow {
        ", from many sources"
    } else {
        ""
    }
}
