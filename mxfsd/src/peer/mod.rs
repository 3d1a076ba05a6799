//! Peer links between mxfsd daemons: layer 3 transport (issue 4; design
//! sections 3 and 6).
//!
//! This module owns the TCP connections between the daemons of one
//! volume: who dials whom, the authenticated and encrypted channel, the
//! identity check of the peer, reconnecting, and the events that tell the
//! cluster runtime a link came up or went down.  It does not own the
//! messages ([`crate::wire`] does), nor what they mean (membership, DLM,
//! file service: the runtime), nor liveness (heartbeats are messages; a
//! link only goes down when TCP or the peer says so).
//!
//! # Security: why `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`
//!
//! Possession of the disk is membership (design 6): the only credential a
//! node has is the volume secret in the lockstate header, and nodes have
//! no long-term key pairs that anyone distributes.  So the pattern is
//! `NN` (ephemeral keys only) with the PSK, derived per volume by
//! [`VolumeSecret::derive`]`(PeerPsk, volume)`, mixed in from the very
//! first message (`psk0`):
//! - mutual authentication: the responder cannot decrypt the initiator's
//!   first message without the PSK, and the initiator cannot decrypt the
//!   reply; a peer without the secret (or of another volume, whose PSK
//!   and prologue differ) fails the handshake, on both sides, before any
//!   application byte is sent.  The responder, failing first, sends
//!   nothing back: an outsider learns nothing but "not accepted".
//! - forward secrecy from the ephemeral-ephemeral DH: a secret that leaks
//!   later does not decrypt recorded traffic.
//! - the known limit: whoever has the secret can impersonate any member
//!   (there are no per-node keys).  That is the design's trust model, not
//!   a gap of this layer; the node identity exchanged below is a claim by
//!   a member, checked for consistency, not proof.
//! - handshake payloads stay empty: the `psk0` first payload would have no
//!   forward secrecy and could be replayed.  Identities travel afterwards.
//! - ChaChaPoly and BLAKE2s: fast without AES instructions, constant time
//!   in software, the usual Noise choice.
//!
//! The prologue is [`record::PROLOGUE_LABEL`] + the volume UUID, so the
//! transcript is bound to this protocol and this volume as well.
//!
//! # A link's life
//!
//! 1. TCP: the node with the lower node id dials ([`should_connect`]).
//! 2. Noise handshake (two records), then every record is encrypted; see
//!    [`record`] for the record layer (2-byte length + ciphertext, a wire
//!    frame cut into records of at most 65535 bytes).
//! 3. Both send [`wire::Hello`] (node UUID, node id,
//!    volume UUID, port, versions, hostname) and check the other's
//!    ([`IdentityError`]).  Both then send a verdict: `Auth` carrying the
//!    handshake hash (accepted) or `Goodbye` with the reason (refused), so
//!    a refusal fails on both sides with a reason.  Only then is the link
//!    up.  Steps 2 and 3 have one deadline ([`LinkConfig::setup_timeout`]).
//! 4. Messages both ways; `Goodbye` closes.
//!
//! # API
//!
//! - [`PeerLink`](link::PeerLink), made by [`connect_link`](link::connect_link)
//!   / [`accept_link`](link::accept_link): one established link, with
//!   `send`/`recv`, or [`PeerLink::split`](link::PeerLink::split) into a
//!   [`LinkSender`](link::LinkSender) and a
//!   [`LinkReceiver`](link::LinkReceiver) for two tasks.
//! - [`Listener`] and [`Connector`]: the accepting and the dialling
//!   services, which run links and report [`LinkEvent`]s (`Up` with a
//!   [`LinkHandle`] to send, `Message`, `Down` with the reason) on one
//!   channel; the connector redials with [`Backoff`](backoff::Backoff).
//!   Both stop when a `watch<bool>` shutdown flag becomes true (or its
//!   sender is dropped).
//! - `record::fuzz_decode`: the receive path of an established session, for a
//!   fuzzer.

mod backoff;
mod link;
pub mod record;
mod service;

#[cfg(test)]
mod tests;

use std::time::Duration;

use uuid::Uuid;

use crate::identity;
use crate::volume_keys::{KeyPurpose, VolumeSecret};
use crate::wire::{self, WireError};

pub use record::RecordError;
pub use service::{Connector, LinkEvent, LinkHandle, Listener};

/// Deadline for the handshake and identity exchange of a new link: long
/// enough for a loaded host, short enough that a silent client does not
/// hold a setup slot for long.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The lower node id dials, the higher accepts: exactly one TCP
/// connection per pair, with no tie to break (ids of distinct members
/// differ; see [`IdentityError::DuplicateNodeId`]).
pub fn should_connect(local_id: u64, remote_id: u64) -> bool {
    local_id < remote_id
}

/// Why a link failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The Noise handshake failed: the peer lacks this volume's secret, is
    /// of another volume, or is not an mxfsd at all.
    #[error("handshake failed: {0} (wrong volume secret, another volume, or not an mxfsd peer)")]
    Handshake(&'static str),
    #[error("encrypted records: {0}")]
    Record(#[from] RecordError),
    #[error("message: {0}")]
    Wire(#[from] WireError),
    #[error("peer identity refused: {0}")]
    Identity(#[from] IdentityError),
    /// The peer sent `Goodbye`: during setup it refused us, later it left.
    #[error("the peer closed the link: {0}")]
    Goodbye(String),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("the link is closed")]
    Closed,
    /// Our side stopped the link (shutdown, or a newer link replaced it).
    #[error("stopped: {0}")]
    Stopped(&'static str),
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    #[error("link task failed: {0}")]
    Task(String),
}

impl PeerError {
    /// Worth a warning: the peer (or someone posing as one) did something
    /// wrong, as opposed to an ordinary network failure or a shutdown.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PeerError::Handshake(_)
                | PeerError::Record(_)
                | PeerError::Wire(_)
                | PeerError::Identity(_)
                | PeerError::Goodbye(_)
                | PeerError::Protocol(_)
                | PeerError::Timeout(_)
        )
    }
}

/// What a peer's `Hello` may be refused for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("node id {claimed:#018x} is not the FNV-1a of node uuid {uuid}")]
    NodeIdMismatch { claimed: u64, uuid: Uuid },
    #[error("node id {node_id:#018x} is ours, but uuid {uuid} is not (design 3: refuse to join)")]
    DuplicateNodeId { node_id: u64, uuid: Uuid },
    #[error("connected to ourselves")]
    SelfConnection,
    #[error("peer is of volume {0}, not ours")]
    Volume(Uuid),
    #[error("peer speaks versions {min}..={max}, we speak {}", wire::VERSION)]
    Version { min: u8, max: u8 },
    #[error("expected node {expected:#018x}, reached {got:#018x}")]
    UnexpectedNode { expected: u64, got: u64 },
    #[error("node {remote:#018x} dialled node {local:#018x}, but the lower id dials")]
    WrongRole { local: u64, remote: u64 },
}

/// This node as its peers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    uuid: Uuid,
    node_id: u64,
    volume: Uuid,
    hostname: String,
    tcp_port: u16,
}

impl LocalNode {
    /// None if the uuid's node id would be 0 (never a valid id).  The
    /// hostname is cut to what `Hello` carries.
    pub fn new(uuid: Uuid, volume: Uuid, hostname: &str, tcp_port: u16) -> Option<Self> {
        let node_id = identity::node_id(&uuid)?;
        let mut end = hostname.len().min(wire::MAX_HOSTNAME);
        while !hostname.is_char_boundary(end) {
            end -= 1;
        }
        Some(LocalNode {
            uuid,
            node_id,
            volume,
            hostname: hostname[..end].to_string(),
            tcp_port,
        })
    }
    pub fn node_id(&self) -> u64 {
        self.node_id
    }
    pub fn volume(&self) -> Uuid {
        self.volume
    }
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }
}

/// Everything a link endpoint needs: who we are and the volume's key.
#[derive(Clone)]
pub struct LinkConfig {
    local: LocalNode,
    psk: [u8; 32],
    /// Deadline of the handshake and identity exchange.
    pub setup_timeout: Duration,
    /// Frames queued per link behind a [`LinkHandle`] before `send` waits.
    pub send_queue: usize,
}

impl LinkConfig {
    pub fn new(local: LocalNode, secret: &VolumeSecret) -> Self {
        let psk = secret.derive(KeyPurpose::PeerPsk, local.volume.as_bytes());
        LinkConfig {
            local,
            psk,
            setup_timeout: SETUP_TIMEOUT,
            send_queue: 256,
        }
    }
    pub fn local(&self) -> &LocalNode {
        &self.local
    }
}

/// Never print the key.
impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("local", &self.local)
            .field("setup_timeout", &self.setup_timeout)
            .finish_non_exhaustive()
    }
}

/// Which end of the handshake we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// We dialled `expected`.
    Initiator {
        expected: u64,
    },
    Responder,
}

/// Check a peer's `Hello` against us (design 3 and 6).  The order matters
/// only for which reason is reported.
fn check_peer(local: &LocalNode, role: Role, h: &wire::Hello) -> Result<(), IdentityError> {
    let uuid = Uuid::from_bytes(h.node_uuid);
    if h.volume_uuid != *local.volume.as_bytes() {
        return Err(IdentityError::Volume(Uuid::from_bytes(h.volume_uuid)));
    }
    if !(h.min_version <= wire::VERSION && wire::VERSION <= h.max_version) {
        return Err(IdentityError::Version {
            min: h.min_version,
            max: h.max_version,
        });
    }
    if identity::node_id(&uuid) != Some(h.node_id) {
        return Err(IdentityError::NodeIdMismatch {
            claimed: h.node_id,
            uuid,
        });
    }
    if h.node_id == local.node_id {
        return Err(if uuid == local.uuid {
            IdentityError::SelfConnection
        } else {
            IdentityError::DuplicateNodeId {
                node_id: h.node_id,
                uuid,
            }
        });
    }
    match role {
        Role::Initiator { expected } if expected != h.node_id => {
            Err(IdentityError::UnexpectedNode {
                expected,
                got: h.node_id,
            })
        }
        Role::Responder if !should_connect(h.node_id, local.node_id) => {
            Err(IdentityError::WrongRole {
                local: local.node_id,
                remote: h.node_id,
            })
        }
        _ => Ok(()),
    }
}
