//! The peer table: what verified announcements say about the volume's
//! other members.  Pure (no I/O, no clock): the caller passes the time
//! in, so every rule here is tested without sockets or sleeps.
//!
//! It only ever sees announcements whose MAC checked out, so everything in
//! them comes from a holder of the disk.  The rules guard against the
//! mistakes and accidents of such holders (a cloned node identity, two
//! UUIDs hashing to one node id) and against replays by anyone on the
//! LAN, who can capture and resend an authentic datagram without knowing
//! the secret.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::wire::announce::{AnnouncedRole, Announcement};
use crate::wire::MAX_MEMBERS;

/// Who we are, so that our own announcements (looped back) are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalNode {
    pub node_uuid: Uuid,
    pub node_id: u64,
    pub volume_uuid: [u8; 16],
    /// This daemon's incarnation, as it announces it.
    pub incarnation: u64,
}

/// What we know of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub node_id: u64,
    pub node_uuid: Uuid,
    /// The source address of its announcements with its announced TCP
    /// port: where to reach its peer listener.
    pub addr: SocketAddr,
    pub hostname: String,
    pub incarnation: u64,
    pub role: AnnouncedRole,
    pub owner_epoch: u64,
}

/// What a consumer (the membership layer) hears from discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer we did not know.
    Joined(PeerInfo),
    /// A known peer's daemon restarted (new incarnation): whatever state
    /// it held (locks, links) is gone, as after a death.
    Restarted(PeerInfo),
    /// A known peer, same incarnation, now says something else: address,
    /// TCP port, hostname, role or owner epoch.
    Changed(PeerInfo),
    /// Not heard for the timeout.
    Lost(u64),
}

/// Announcements dropped without harm (logged at debug at most).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// Ours, looped back.
    Own,
    /// Of another volume (the runtime drops those before verifying).
    OtherVolume,
    /// A sequence number we have already seen in this incarnation: a
    /// replay or a duplicate.
    Replay {
        node_id: u64,
        sequence: u64,
        last: u64,
    },
    /// Another incarnation of a peer whose current one is still speaking.
    /// A restarted daemon's old incarnation falls silent, so its new one
    /// is taken once the old has been quiet for `restart_quiet`; until
    /// then this is more likely an old datagram replayed to make the peer
    /// flap.
    OtherIncarnation { node_id: u64, incarnation: u64 },
}

/// Announcements refused because the cluster cannot hold both claimants;
/// worth a warning, since a person has to fix the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("node {claimant} at {from} has our node id {node_id:016x} under another uuid")]
    OurNodeId {
        node_id: u64,
        claimant: Uuid,
        from: SocketAddr,
    },
    #[error(
        "our own node uuid is announced from {from} by another daemon (incarnation \
         {incarnation:016x}): a cloned /etc/mxfs/node.uuid?"
    )]
    OurIdentity { incarnation: u64, from: SocketAddr },
    #[error("node {claimant} at {from} has node id {node_id:016x}, which member {holder} holds")]
    NodeIdTaken {
        node_id: u64,
        holder: Uuid,
        claimant: Uuid,
        from: SocketAddr,
    },
    #[error("node {node_id:016x} at {from} refused: already {MAX_MEMBERS} members")]
    Full { node_id: u64, from: SocketAddr },
}

/// What [`PeerTable::apply`] made of one announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Event(Event),
    /// A known peer, nothing new: its timer restarts.
    Refreshed,
    Ignored(Ignored),
    Refused(Refusal),
}

#[derive(Debug, Clone)]
struct Peer {
    info: PeerInfo,
    sequence: u64,
    last_seen: Instant,
}

#[derive(Debug)]
pub struct PeerTable {
    local: LocalNode,
    restart_quiet: Duration,
    peers: BTreeMap<u64, Peer>,
}

impl PeerTable {
    /// `restart_quiet`: how long a peer's current incarnation must have
    /// been silent before another incarnation replaces it (a little more
    /// than one announcement interval).
    pub fn new(local: LocalNode, restart_quiet: Duration) -> Self {
        PeerTable {
            local,
            restart_quiet,
            peers: BTreeMap::new(),
        }
    }

    /// Apply one verified announcement received from `from` at `now`.
    pub fn apply(&mut self, a: &Announcement, from: SocketAddr, now: Instant) -> Outcome {
        if a.volume_uuid != self.local.volume_uuid {
            return Outcome::Ignored(Ignored::OtherVolume);
        }
        let node_uuid = Uuid::from_bytes(a.node_uuid);
        if a.node_id == self.local.node_id {
            return if node_uuid != self.local.node_uuid {
                Outcome::Refused(Refusal::OurNodeId {
                    node_id: a.node_id,
                    claimant: node_uuid,
                    from,
                })
            } else if a.incarnation != self.local.incarnation {
                Outcome::Refused(Refusal::OurIdentity {
                    incarnation: a.incarnation,
                    from,
                })
            } else {
                Outcome::Ignored(Ignored::Own)
            };
        }
        let info = PeerInfo {
            node_id: a.node_id,
            node_uuid,
            addr: SocketAddr::new(from.ip(), a.tcp_port),
            hostname: a.hostname.clone(),
            incarnation: a.incarnation,
            role: a.role,
            owner_epoch: a.owner_epoch,
        };
        let full = self.peers.len() >= MAX_MEMBERS - 1;
        let Some(peer) = self.peers.get_mut(&a.node_id) else {
            if full {
                return Outcome::Refused(Refusal::Full {
                    node_id: a.node_id,
                    from,
                });
            }
            self.peers.insert(
                a.node_id,
                Peer {
                    info: info.clone(),
                    sequence: a.sequence,
                    last_seen: now,
                },
            );
            return Outcome::Event(Event::Joined(info));
        };
        if peer.info.node_uuid != node_uuid {
            // An FNV-1a collision between two real UUIDs (design section
            // 3: such nodes refuse each other); the member we know stays.
            return Outcome::Refused(Refusal::NodeIdTaken {
                node_id: a.node_id,
                holder: peer.info.node_uuid,
                claimant: node_uuid,
                from,
            });
        }
        if peer.info.incarnation != a.incarnation {
            if now.saturating_duration_since(peer.last_seen) < self.restart_quiet {
                return Outcome::Ignored(Ignored::OtherIncarnation {
                    node_id: a.node_id,
                    incarnation: a.incarnation,
                });
            }
            *peer = Peer {
                info: info.clone(),
                sequence: a.sequence,
                last_seen: now,
            };
            return Outcome::Event(Event::Restarted(info));
        }
        if a.sequence <= peer.sequence {
            return Outcome::Ignored(Ignored::Replay {
                node_id: a.node_id,
                sequence: a.sequence,
                last: peer.sequence,
            });
        }
        peer.sequence = a.sequence;
        peer.last_seen = now;
        if peer.info != info {
            peer.info = info.clone();
            return Outcome::Event(Event::Changed(info));
        }
        Outcome::Refreshed
    }

    /// Forget the peers not heard for more than `timeout`: one `Lost`
    /// each, in node id order.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Event> {
        let mut lost = Vec::new();
        self.peers.retain(|id, p| {
            let alive = now.saturating_duration_since(p.last_seen) <= timeout;
            if !alive {
                lost.push(Event::Lost(*id));
            }
            alive
        });
        lost
    }

    /// The known peers (not us), sorted by node id.
    #[cfg(test)]
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values().map(|p| &p.info)
    }

    #[cfg(test)]
    pub fn get(&self, node_id: u64) -> Option<&PeerInfo> {
        self.peers.get(&node_id).map(|p| &p.info)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(3000);
    const TIMEOUT: Duration = Duration::from_secs(8);

    fn node(n: u8) -> (Uuid, u64) {
        let u = Uuid::from_bytes([n; 16]);
        (u, mxfs_core::identity::node_id(&u).unwrap())
    }

    fn local() -> LocalNode {
        let (node_uuid, node_id) = node(1);
        LocalNode {
            node_uuid,
            node_id,
            volume_uuid: [9; 16],
            incarnation: 100,
        }
    }

    fn ann(n: u8, incarnation: u64, sequence: u64) -> Announcement {
        let (u, id) = node(n);
        Announcement {
            volume_uuid: [9; 16],
            node_uuid: *u.as_bytes(),
            node_id: id,
            tcp_port: 7600,
            incarnation,
            sequence,
            role: AnnouncedRole::Client,
            owner_epoch: 1,
            hostname: format!("node-{n}"),
        }
    }

    fn from(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 7601))
    }

    fn table() -> (PeerTable, Instant) {
        (PeerTable::new(local(), QUIET), Instant::now())
    }

    fn joined(o: Outcome) -> PeerInfo {
        match o {
            Outcome::Event(Event::Joined(p)) => p,
            o => panic!("expected Joined, got {o:?}"),
        }
    }

    #[test]
    fn a_new_peer_joins_and_a_refresh_says_nothing() {
        let (mut t, t0) = table();
        let p = joined(t.apply(&ann(2, 7, 0), from(2), t0));
        assert_eq!(p.node_id, node(2).1);
        assert_eq!(p.addr, SocketAddr::from(([192, 0, 2, 2], 7600)));
        assert_eq!(p.hostname, "node-2");
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(t.apply(&ann(2, 7, 1), from(2), t1), Outcome::Refreshed);
        assert_eq!(t.peers().cloned().collect::<Vec<_>>(), vec![p]);
    }

    #[test]
    fn a_replayed_or_old_sequence_is_ignored_and_does_not_refresh() {
        let (mut t, t0) = table();
        joined(t.apply(&ann(2, 7, 5), from(2), t0));
        for seq in [5, 4, 0] {
            assert!(matches!(
                t.apply(&ann(2, 7, seq), from(2), t0 + TIMEOUT),
                Outcome::Ignored(Ignored::Replay { last: 5, .. })
            ));
        }
        // the replays did not keep it alive
        assert_eq!(
            t.expire(t0 + TIMEOUT + Duration::from_millis(1), TIMEOUT),
            vec![Event::Lost(node(2).1)]
        );
    }

    #[test]
    fn a_new_incarnation_after_silence_is_a_restart() {
        let (mut t, t0) = table();
        joined(t.apply(&ann(2, 7, 40), from(2), t0));
        let mut a = ann(2, 8, 0);
        a.tcp_port = 7602;
        match t.apply(&a, from(2), t0 + QUIET) {
            Outcome::Event(Event::Restarted(p)) => {
                assert_eq!(p.incarnation, 8);
                assert_eq!(p.addr.port(), 7602);
            }
            o => panic!("expected Restarted, got {o:?}"),
        }
        // the new incarnation's sequence counts afresh (1 > 0, not > 40)
        match t.apply(&ann(2, 8, 1), from(2), t0 + QUIET) {
            Outcome::Event(Event::Changed(p)) => {
                assert_eq!((p.incarnation, p.addr.port()), (8, 7600))
            }
            o => panic!("expected Changed, got {o:?}"),
        }
    }

    #[test]
    fn another_incarnation_while_the_current_speaks_is_ignored() {
        let (mut t, t0) = table();
        joined(t.apply(&ann(2, 7, 40), from(2), t0));
        // an old datagram of an earlier incarnation, replayed
        let replay_at = t0 + Duration::from_millis(500);
        assert_eq!(
            t.apply(&ann(2, 6, 99), from(2), replay_at),
            Outcome::Ignored(Ignored::OtherIncarnation {
                node_id: node(2).1,
                incarnation: 6
            })
        );
        assert_eq!(t.get(node(2).1).map(|p| p.incarnation), Some(7));
        // the real one goes on undisturbed
        assert_eq!(
            t.apply(&ann(2, 7, 41), from(2), t0 + Duration::from_secs(2)),
            Outcome::Refreshed
        );
    }

    #[test]
    fn a_changed_address_or_role_is_reported() {
        let (mut t, t0) = table();
        joined(t.apply(&ann(2, 7, 0), from(2), t0));
        match t.apply(&ann(2, 7, 1), from(3), t0) {
            Outcome::Event(Event::Changed(p)) => {
                assert_eq!(p.addr, SocketAddr::from(([192, 0, 2, 3], 7600)))
            }
            o => panic!("expected Changed, got {o:?}"),
        }
        let mut a = ann(2, 7, 2);
        a.role = AnnouncedRole::Owner;
        a.owner_epoch = 2;
        match t.apply(&a, from(3), t0) {
            Outcome::Event(Event::Changed(p)) => {
                assert_eq!((p.role, p.owner_epoch), (AnnouncedRole::Owner, 2))
            }
            o => panic!("expected Changed, got {o:?}"),
        }
    }

    #[test]
    fn silent_peers_are_lost_in_node_id_order() {
        let (mut t, t0) = table();
        for n in [5, 2, 3] {
            joined(t.apply(&ann(n, 7, 0), from(n), t0));
        }
        let ids: Vec<u64> = t.peers().map(|p| p.node_id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted);
        // node 3 keeps talking
        let later = t0 + TIMEOUT;
        assert_eq!(t.apply(&ann(3, 7, 1), from(3), later), Outcome::Refreshed);
        assert!(t.expire(later, TIMEOUT).is_empty(), "exactly the timeout");
        let mut expect = vec![Event::Lost(node(2).1), Event::Lost(node(5).1)];
        expect.sort_by_key(|e| match e {
            Event::Lost(id) => *id,
            _ => 0,
        });
        let lost = t.expire(later + Duration::from_millis(1), TIMEOUT);
        assert_eq!(lost, expect);
        assert_eq!(t.len(), 1);
        // a lost peer that comes back joins again
        joined(t.apply(&ann(2, 7, 9), from(2), later + TIMEOUT));
    }

    #[test]
    fn our_own_announcements_are_ignored() {
        let (mut t, t0) = table();
        let mut a = ann(1, local().incarnation, 0);
        a.node_uuid = *local().node_uuid.as_bytes();
        assert_eq!(t.apply(&a, from(1), t0), Outcome::Ignored(Ignored::Own));
        assert!(t.is_empty());
    }

    #[test]
    fn our_identity_from_another_daemon_is_refused() {
        let (mut t, t0) = table();
        let a = ann(1, local().incarnation + 1, 0);
        assert!(matches!(
            t.apply(&a, from(7), t0),
            Outcome::Refused(Refusal::OurIdentity {
                incarnation: 101,
                ..
            })
        ));
        assert!(t.is_empty());
    }

    #[test]
    fn a_duplicate_node_id_is_refused() {
        // The announcement decoder insists on id == FNV-1a(uuid), so a
        // real duplicate needs an FNV collision; the table must not rely
        // on that and compares the uuids itself.
        let (mut t, t0) = table();
        let mut a = ann(2, 7, 0);
        a.node_id = local().node_id;
        assert!(matches!(
            t.apply(&a, from(2), t0),
            Outcome::Refused(Refusal::OurNodeId { .. })
        ));
        assert!(t.is_empty());
        joined(t.apply(&ann(3, 7, 0), from(3), t0));
        let mut b = ann(4, 7, 1);
        b.node_id = node(3).1;
        match t.apply(&b, from(4), t0) {
            Outcome::Refused(Refusal::NodeIdTaken {
                holder, claimant, ..
            }) => {
                assert_eq!(holder, node(3).0);
                assert_eq!(claimant, node(4).0);
            }
            o => panic!("expected NodeIdTaken, got {o:?}"),
        }
        assert_eq!(t.get(node(3).1).map(|p| p.node_uuid), Some(node(3).0));
    }

    #[test]
    fn another_volume_is_ignored() {
        let (mut t, t0) = table();
        let mut a = ann(2, 7, 0);
        a.volume_uuid = [8; 16];
        assert_eq!(
            t.apply(&a, from(2), t0),
            Outcome::Ignored(Ignored::OtherVolume)
        );
        assert!(t.is_empty());
    }

    #[test]
    fn the_table_holds_at_most_the_other_members() {
        let (mut t, t0) = table();
        for n in 2..=(MAX_MEMBERS as u8) {
            joined(t.apply(&ann(n, 7, 0), from(n), t0));
        }
        assert_eq!(t.len(), MAX_MEMBERS - 1);
        let n = MAX_MEMBERS as u8 + 1;
        assert!(matches!(
            t.apply(&ann(n, 7, 0), from(n), t0),
            Outcome::Refused(Refusal::Full { .. })
        ));
        // known members still refresh when full
        assert_eq!(t.apply(&ann(2, 7, 1), from(2), t0), Outcome::Refreshed);
    }
}
