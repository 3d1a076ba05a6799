//! One established peer link over TCP: setup (handshake, identities,
//! verdicts) and the send/receive halves.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use snow::HandshakeState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use uuid::Uuid;

use super::record::{self, Opener, Sealer, HASH_LEN, MAX_HANDSHAKE_RECORD, RECORD_HEADER};
use super::{check_peer, should_connect, IdentityError, LinkConfig, PeerError, Role};
use crate::wire::{self, Auth, Hello, Message};

/// Bytes read from the socket at a time.
const READ_BUF: usize = 64 << 10;
/// Keep at most this much send buffer between frames.
const KEEP_CAPACITY: usize = 256 << 10;
/// How long a refusing side waits for the peer to read its Goodbye.
const LINGER: Duration = Duration::from_millis(500);

/// Who is at the other end of a link, as its `Hello` said and the checks
/// in [`IdentityError`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub node_id: u64,
    pub node_uuid: Uuid,
    pub hostname: String,
    /// The port it listens on (from its Hello).
    pub tcp_port: u16,
    /// Where the TCP connection goes.
    pub addr: SocketAddr,
}

/// An established, authenticated, encrypted link.
#[derive(Debug)]
pub struct PeerLink {
    peer: PeerInfo,
    tx: LinkSender,
    rx: LinkReceiver,
}

/// The sending half of a link.
pub struct LinkSender {
    w: OwnedWriteHalf,
    sealer: Sealer,
    buf: Vec<u8>,
}

/// The receiving half of a link.
pub struct LinkReceiver {
    r: OwnedReadHalf,
    opener: Opener,
    ready: VecDeque<Message>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LinkSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSender").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LinkReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkReceiver")
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl PeerLink {
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    #[cfg(test)]
    pub async fn send(&mut self, m: &Message) -> Result<(), PeerError> {
        self.tx.send(m).await
    }

    /// See [`LinkReceiver::recv`].
    #[cfg(test)]
    pub async fn recv(&mut self) -> Result<Message, PeerError> {
        self.rx.recv().await
    }

    /// The two halves, for a reader task and a writer task.  Reading and
    /// writing must not wait on each other: two peers both blocked in a
    /// large write with nobody reading would deadlock on full TCP buffers.
    pub fn split(self) -> (PeerInfo, LinkSender, LinkReceiver) {
        (self.peer, self.tx, self.rx)
    }
}

impl LinkSender {
    /// Encode and send one message.
    pub async fn send(&mut self, m: &Message) -> Result<(), PeerError> {
        let frame = m.encode()?;
        self.send_frame(&frame).await
    }

    /// Send an already encoded wire frame (from [`Message::encode`]).
    pub(super) async fn send_frame(&mut self, frame: &[u8]) -> Result<(), PeerError> {
        self.buf.clear();
        self.sealer.seal(frame, &mut self.buf)?;
        self.w.write_all(&self.buf).await?;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Say why we close, then close our direction.
    pub async fn goodbye(&mut self, reason: &str) -> Result<(), PeerError> {
        let mut end = reason.len().min(wire::MAX_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.send(&Message::Goodbye {
            reason: reason[..end].to_string(),
        })
        .await?;
        self.w.shutdown().await?;
        Ok(())
    }
}

impl LinkReceiver {
    /// The next message.  `Goodbye` ends the link: it comes back as
    /// [`PeerError::Goodbye`]; the setup messages (`Hello`, `Auth`) are a
    /// protocol violation once the link is up.  A clean end of stream is
    /// [`PeerError::Closed`].  Cancel safe: the only await is one socket
    /// read, and what it read is kept in `self`, so this can sit in a
    /// `select!`.
    pub async fn recv(&mut self) -> Result<Message, PeerError> {
        match self.recv_any().await? {
            Message::Goodbye { reason } => Err(PeerError::Goodbye(reason)),
            Message::Hello(_) | Message::Auth(_) => {
                Err(PeerError::Protocol("setup message on an established link"))
            }
            m => Ok(m),
        }
    }

    async fn recv_any(&mut self) -> Result<Message, PeerError> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Ok(m);
            }
            let n = self.r.read(&mut self.buf).await?;
            if n == 0 {
                return Err(if self.opener.is_idle() {
                    PeerError::Closed
                } else {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the link mid-message",
                    )
                    .into()
                });
            }
            if let Err(e) = self.opener.push(&self.buf[..n], &mut self.ready) {
                // The link dies with this error; messages from the same
                // read are dropped with it, so a caller that polls again
                // gets the error again rather than a stale message.
                self.ready.clear();
                return Err(e.into());
            }
        }
    }
}

/// Dial `addr`, where discovery says node `expected` listens, and set up
/// a link.  Refuses (before dialling) when we are not the side that
/// dials.  Does not log: the caller knows the context ([`super::Connector`]
/// does log).
pub async fn connect_link(
    cfg: &LinkConfig,
    addr: SocketAddr,
    expected: u64,
) -> Result<PeerLink, PeerError> {
    let local = cfg.local().node_id();
    if !should_connect(local, expected) {
        return Err(IdentityError::WrongRole {
            local: expected,
            remote: local,
        }
        .into());
    }
    tokio::time::timeout(cfg.setup_timeout, async {
        let stream = TcpStream::connect(addr).await?;
        let hs = record::initiator(&cfg.psk, cfg.local().volume().as_bytes())?;
        establish(stream, cfg, Role::Initiator { expected }, hs).await
    })
    .await
    .map_err(|_| PeerError::Timeout("link setup"))?
}

/// Set up a link on a connection a listener accepted.  Does not log
/// ([`super::Listener`] does).
pub async fn accept_link(stream: TcpStream, cfg: &LinkConfig) -> Result<PeerLink, PeerError> {
    tokio::time::timeout(cfg.setup_timeout, async {
        let hs = record::responder(&cfg.psk, cfg.local().volume().as_bytes())?;
        establish(stream, cfg, Role::Responder, hs).await
    })
    .await
    .map_err(|_| PeerError::Timeout("link setup"))?
}

async fn establish(
    stream: TcpStream,
    cfg: &LinkConfig,
    role: Role,
    hs: HandshakeState,
) -> Result<PeerLink, PeerError> {
    // Locks and grants are small and latency-bound: no Nagle.
    stream.set_nodelay(true)?;
    let addr = stream.peer_addr()?;
    let (mut r, mut w) = stream.into_split();
    let (cipher, hash) = handshake(&mut r, &mut w, hs).await?;
    let cipher = Arc::new(cipher);
    let mut tx = LinkSender {
        w,
        sealer: Sealer::new(cipher.clone()),
        buf: Vec::new(),
    };
    let mut rx = LinkReceiver {
        r,
        opener: Opener::new(cipher),
        ready: VecDeque::new(),
        buf: vec![0; READ_BUF],
    };

    // Both send first and read second: a Hello is far smaller than the
    // socket buffers, so neither side waits on the other here.
    tx.send(&Message::Hello(hello(cfg)?)).await?;
    let h = match rx.recv_any().await? {
        Message::Hello(h) => h,
        Message::Goodbye { reason } => return Err(PeerError::Goodbye(reason)),
        _ => return Err(PeerError::Protocol("expected Hello")),
    };
    if let Err(e) = check_peer(cfg.local(), role, &h) {
        refuse(tx, rx, &e.to_string()).await;
        return Err(e.into());
    }
    // The verdict "accepted" is the handshake hash, which both sides hold:
    // it shows the peer finished setup on this very session.
    tx.send(&Message::Auth(Auth { mac: hash })).await?;
    match rx.recv_any().await? {
        Message::Auth(a) if a.mac == hash => {}
        Message::Auth(_) => {
            return Err(PeerError::Protocol("verdict does not match the handshake"))
        }
        Message::Goodbye { reason } => return Err(PeerError::Goodbye(reason)),
        _ => return Err(PeerError::Protocol("expected the peer's verdict")),
    }
    Ok(PeerLink {
        peer: PeerInfo {
            node_id: h.node_id,
            node_uuid: Uuid::from_bytes(h.node_uuid),
            hostname: h.hostname,
            tcp_port: h.tcp_port,
            addr,
        },
        tx,
        rx,
    })
}

fn hello(cfg: &LinkConfig) -> Result<Hello, PeerError> {
    let local = cfg.local();
    // Unused by this transport (Noise has its own randomness), sent fresh
    // as the field's contract says.
    let mut nonce = [0u8; 32];
    getrandom::getrandom(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Hello {
        node_id: local.node_id,
        node_uuid: *local.uuid.as_bytes(),
        volume_uuid: *local.volume.as_bytes(),
        tcp_port: local.tcp_port,
        min_version: wire::VERSION,
        max_version: wire::VERSION,
        nonce,
        hostname: local.hostname.clone(),
    })
}

/// Tell the peer why, and give it a moment to read it: closing a socket
/// with unread input sends a reset, which can destroy the Goodbye before
/// the peer reads it.
async fn refuse(mut tx: LinkSender, mut rx: LinkReceiver, reason: &str) {
    let _ = tokio::time::timeout(LINGER, async {
        if tx.goodbye(reason).await.is_ok() {
            // read until the peer closes too (or the linger ends)
            while rx.r.read(&mut rx.buf).await.map(|n| n > 0).unwrap_or(false) {}
        }
    })
    .await;
}

/// Run the two-message NNpsk0 handshake on the raw stream.
async fn handshake(
    r: &mut OwnedReadHalf,
    w: &mut OwnedWriteHalf,
    mut hs: HandshakeState,
) -> Result<(snow::StatelessTransportState, [u8; HASH_LEN]), PeerError> {
    let mut msg = [0u8; RECORD_HEADER + MAX_HANDSHAKE_RECORD];
    let mut payload = [0u8; MAX_HANDSHAKE_RECORD];
    while !hs.is_handshake_finished() {
        if hs.is_my_turn() {
            let n = hs.write_message(&[], &mut msg[RECORD_HEADER..])?;
            let len = u16::try_from(n).map_err(|_| PeerError::Protocol("handshake record size"))?;
            msg[..RECORD_HEADER].copy_from_slice(&len.to_be_bytes());
            w.write_all(&msg[..RECORD_HEADER + n]).await?;
        } else {
            let mut head = [0u8; RECORD_HEADER];
            read_handshake(r, &mut head).await?;
            let len = usize::from(u16::from_be_bytes(head));
            if len == 0 || len > MAX_HANDSHAKE_RECORD {
                return Err(PeerError::Handshake("bad handshake record length"));
            }
            read_handshake(r, &mut msg[..len]).await?;
            hs.read_message(&msg[..len], &mut payload).map_err(|_| {
                PeerError::Handshake("the peer's handshake message failed authentication")
            })?;
        }
    }
    Ok(record::finish(hs)?)
}

/// During the handshake a peer that hangs up is, from here, a peer that
/// refused us: the responder closes without a word when our first message
/// does not authenticate.
async fn read_handshake(r: &mut OwnedReadHalf, buf: &mut [u8]) -> Result<(), PeerError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
            ) =>
        {
            Err(PeerError::Handshake(
                "the peer closed the connection during the handshake",
            ))
        }
        Err(e) => Err(e.into()),
    }
}
