//! The accepting and dialling services: they set links up, run each link
//! in a reader and a writer task, and report [`LinkEvent`]s.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::link::{accept_link, connect_link, PeerInfo, PeerLink};
use super::{should_connect, IdentityError, LinkConfig, PeerError};
use crate::wire::Message;

/// Connections in handshake at once on a listener; more are dropped at
/// once, so a flood of idle TCP clients costs little and cannot starve
/// the members (a cluster has at most 64).
const MAX_PENDING_SETUPS: usize = 16;
/// How long a closing link waits to put its Goodbye on the wire.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// Why a service stopped a link: the Goodbye to the peer, and our `Down`
/// reason ([`PeerError::Stopped`]).
pub const SHUTTING_DOWN: &str = "shutting down";
pub const REPLACED: &str = "replaced by a newer link from the same node";

/// What the services report, in order per link: one `Up`, its messages,
/// one `Down`.  A listener that gets a new link from a node it already
/// has a link with closes the old one first, so the old link's `Down`
/// comes before the new one's `Up`.
#[derive(Debug)]
pub enum LinkEvent {
    Up { peer: PeerInfo, handle: LinkHandle },
    Message { node_id: u64, message: Message },
    Down { node_id: u64, reason: PeerError },
}

enum Outbound {
    Frame(Vec<u8>),
    Close(String),
}

/// Sends on one link; cheap to clone.  Dropping every handle does not
/// close the link (a consumer that only watches events keeps it); use
/// [`LinkHandle::close`].
#[derive(Debug, Clone)]
pub struct LinkHandle {
    node_id: u64,
    tx: mpsc::Sender<Outbound>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outbound::Frame(b) => write!(f, "Frame({} bytes)", b.len()),
            Outbound::Close(r) => write!(f, "Close({r:?})"),
        }
    }
}

impl LinkHandle {
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Queue a message.  Encoding errors come back at once; `Closed` if
    /// the link is down.  Waits while the link's queue is full.
    pub async fn send(&self, m: &Message) -> Result<(), PeerError> {
        let frame = m.encode()?;
        self.tx
            .send(Outbound::Frame(frame))
            .await
            .map_err(|_| PeerError::Closed)
    }

    /// Queue a message if there is room now; never waits (a ping must
    /// not hold up its sender behind a peer that stopped reading).
    pub fn try_send(&self, m: &Message) -> Result<(), PeerError> {
        let frame = m.encode()?;
        self.tx
            .try_send(Outbound::Frame(frame))
            .map_err(|_| PeerError::Closed)
    }

    /// Close the link after what is queued, telling the peer why.
    pub async fn close(&self, reason: &str) {
        let _ = self.tx.send(Outbound::Close(reason.to_string())).await;
    }
}

/// Resolves once `rx` says stop, or its sender is gone (nobody can ever
/// say stop then, and a service without an owner should not run on).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// How a service stops one of its links: `None` while it runs, then the
/// reason, which goes to the peer in the Goodbye and into our `Down`.
type StopLink = watch::Receiver<Option<&'static str>>;

/// The reason, once there is one ("stopped" if the sender is gone).
async fn link_stopped(rx: &mut StopLink) -> &'static str {
    match rx.wait_for(|why| why.is_some()).await {
        Ok(why) => why.unwrap_or("stopped"),
        Err(_) => "stopped",
    }
}

fn is_stopped(rx: &watch::Receiver<bool>) -> bool {
    *rx.borrow() || rx.has_changed().is_err()
}

fn log_failure(addr: SocketAddr, e: &PeerError, what: &str) {
    if e.is_refusal() {
        warn!(peer = %addr, reason = %e, "peer link {what} refused");
    } else {
        debug!(peer = %addr, reason = %e, "peer link {what} failed");
    }
}

/// Run one link until it fails, the peer leaves, a handle closes it or
/// `stop` is set; `Up` first, `Down` last.
async fn drive(
    link: PeerLink,
    cfg: &LinkConfig,
    events: mpsc::Sender<LinkEvent>,
    mut stop: StopLink,
) {
    let (peer, mut tx, mut rx) = link.split();
    let node_id = peer.node_id;
    let addr = peer.addr;
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(cfg.send_queue.max(1));
    let handle = LinkHandle {
        node_id,
        tx: out_tx,
    };
    info!(peer = %addr, node_id = format_args!("{node_id:#018x}"), host = %peer.hostname, "peer link up");
    if events.send(LinkEvent::Up { peer, handle }).await.is_err() {
        return; // nobody listens any more
    }

    let ev = events.clone();
    let mut writer_stop = stop.clone();
    let mut reader: JoinHandle<PeerError> = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(message) => {
                    if ev
                        .send(LinkEvent::Message { node_id, message })
                        .await
                        .is_err()
                    {
                        return PeerError::Stopped("nobody receives the link events");
                    }
                }
                Err(e) => return e,
            }
        }
    });
    let mut writer: JoinHandle<PeerError> = tokio::spawn(async move {
        let mut handles_gone = false;
        loop {
            tokio::select! {
                // stop wins over queued frames: shutting down should not
                // wait for a long queue
                biased;
                why = link_stopped(&mut writer_stop) => {
                    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, tx.goodbye(why)).await;
                    return PeerError::Stopped(why);
                }
                out = out_rx.recv(), if !handles_gone => match out {
                    Some(Outbound::Frame(f)) => {
                        if let Err(e) = tx.send_frame(&f).await {
                            return e;
                        }
                    }
                    Some(Outbound::Close(reason)) => {
                        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, tx.goodbye(&reason)).await;
                        return PeerError::Closed;
                    }
                    None => handles_gone = true,
                },
            }
        }
    });

    let joined = tokio::select! {
        r = &mut reader => r,
        w = &mut writer => w,
        why = link_stopped(&mut stop) => {
            // The writer sees the same stop and says Goodbye, unless it is
            // stuck in a write to a dead peer: then it is cut short.
            match tokio::time::timeout(2 * GOODBYE_TIMEOUT, &mut writer).await {
                Ok(w) => w,
                Err(_) => Ok(PeerError::Stopped(why)),
            }
        }
    };
    // Whichever half ended first decides the reason; the other has no
    // more work on a dead link.
    reader.abort();
    writer.abort();
    let reason = joined.unwrap_or_else(|e| PeerError::Task(e.to_string()));
    match &reason {
        // ordinary ends: we stopped it, or the peer closed or left saying why
        PeerError::Stopped(_) | PeerError::Closed | PeerError::Goodbye(_) => {
            info!(peer = %addr, node_id = format_args!("{node_id:#018x}"), reason = %reason, "peer link down")
        }
        _ => {
            warn!(peer = %addr, node_id = format_args!("{node_id:#018x}"), reason = %reason, "peer link down")
        }
    }
    let _ = events.send(LinkEvent::Down { node_id, reason }).await;
}

/// A running link of the listener.
struct Running {
    stop: watch::Sender<Option<&'static str>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self, why: &'static str) {
        let _ = self.stop.send(Some(why));
        let _ = self.task.await;
    }
}

/// Accepts links from peers with lower node ids.
pub struct Listener {
    cfg: Arc<LinkConfig>,
    tcp: TcpListener,
}

impl Listener {
    pub async fn bind(cfg: Arc<LinkConfig>, addr: SocketAddr) -> io::Result<Self> {
        Ok(Listener {
            cfg,
            tcp: TcpListener::bind(addr).await?,
        })
    }

    #[cfg(test)]
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accept until `shutdown`; then close every link (each says
    /// Goodbye and reports `Down`) and return.  Keep draining `events`
    /// until this returns, or drop the receiver.
    pub async fn run(self, events: mpsc::Sender<LinkEvent>, mut shutdown: watch::Receiver<bool>) {
        let pending = Arc::new(Semaphore::new(MAX_PENDING_SETUPS));
        let (est_tx, mut est_rx) = mpsc::channel::<PeerLink>(MAX_PENDING_SETUPS);
        let mut setups = JoinSet::new();
        let mut links: HashMap<u64, Running> = HashMap::new();
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let Ok(permit) = pending.clone().try_acquire_owned() else {
                            warn!(peer = %addr, "too many peer links in setup, dropping the connection");
                            continue;
                        };
                        let cfg = self.cfg.clone();
                        let est_tx = est_tx.clone();
                        setups.spawn(async move {
                            let _permit = permit;
                            match accept_link(stream, &cfg).await {
                                Ok(link) => {
                                    let _ = est_tx.send(link).await;
                                }
                                Err(e) => log_failure(addr, &e, "from"),
                            }
                        });
                    }
                    Err(e) => {
                        // e.g. out of descriptors: do not spin on it
                        warn!(error = %e, "peer listener accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(link) = est_rx.recv() => {
                    let node_id = link.peer().node_id;
                    // A node that dials again (it restarted, or saw its
                    // link die before we did) replaces its old link.
                    if let Some(old) = links.remove(&node_id) {
                        old.stop(REPLACED).await;
                    }
                    links.retain(|_, r| !r.task.is_finished());
                    let (stop, stop_rx) = watch::channel(None);
                    let cfg = self.cfg.clone();
                    let events = events.clone();
                    let task = tokio::spawn(async move { drive(link, &cfg, events, stop_rx).await });
                    links.insert(node_id, Running { stop, task });
                }
                Some(_) = setups.join_next(), if !setups.is_empty() => {}
            }
        }
        setups.abort_all();
        for (_, link) in links.drain() {
            link.stop(SHUTTING_DOWN).await;
        }
    }
}

/// Dials one peer and keeps a link to it, redialling with [`Backoff`].
pub struct Connector {
    cfg: Arc<LinkConfig>,
    remote: u64,
    addr: SocketAddr,
    backoff: Backoff,
}

impl Connector {
    /// A connector to node `remote` at `addr`; refused if we are the
    /// higher id (the other side dials).
    pub fn new(cfg: Arc<LinkConfig>, remote: u64, addr: SocketAddr) -> Result<Self, IdentityError> {
        let local = cfg.local().node_id();
        if !should_connect(local, remote) {
            return Err(IdentityError::WrongRole {
                local: remote,
                remote: local,
            });
        }
        Ok(Connector {
            cfg,
            remote,
            addr,
            backoff: Backoff::default(),
        })
    }

    /// Use other backoff delays (tests, or a runtime that knows better).
    #[cfg(test)]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Dial, run the link, redial when it goes down, until `shutdown`.
    pub async fn run(
        mut self,
        events: mpsc::Sender<LinkEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        while !is_stopped(&shutdown) && !events.is_closed() {
            let attempt = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                r = connect_link(&self.cfg, self.addr, self.remote) => r,
            };
            match attempt {
                Ok(link) => {
                    self.backoff.reset();
                    let (stop, stop_rx) = watch::channel(None);
                    let run = drive(link, &self.cfg, events.clone(), stop_rx);
                    tokio::pin!(run);
                    tokio::select! {
                        _ = &mut run => {}
                        _ = stopped(&mut shutdown) => {
                            let _ = stop.send(Some(SHUTTING_DOWN));
                            run.await;
                            break;
                        }
                    }
                }
                Err(e) => log_failure(self.addr, &e, "to"),
            }
            let delay = self.backoff.next_delay();
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}
