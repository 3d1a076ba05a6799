//! The distributed lock manager's lock engine, as pure state.
//!
//! This module owns the semantics of cluster locks (design section 5,
//! layer 3): the six VMS/Linux DLM modes and their compatibility matrix,
//! per-resource queues, the granting rules, and which node masters which
//! resource.  It does no I/O: every operation returns the [`Event`]s
//! (grants/ASTs, blocking ASTs) the caller must deliver, so the network
//! runtime, the lockstate writer and the tests all drive the same code.
//!
//! One [`LockSpace`] holds the resources a node masters.  Lock ids are
//! chosen by the requesting node ([`LockId`]: node id + that node's own
//! counter), so when a resource changes master the new master can take
//! the locks over with their ids ([`LockSpace::import_resource`]).
//!
//! Above the engine: [`node`] is the protocol between nodes (routing to
//! masters, requester records, rebuild at membership changes) as a
//! sans-I/O state machine; [`runtime`] runs it in a tokio task for the
//! daemon ([`Dlm`], [`LockHandle`]); [`election`] decides the owner.
//! File locks (fcntl with byte ranges, flock) do not fit the six modes:
//! [`plock`] is the table a master keeps for one file, and
//! `plock_node` carries them between nodes inside [`node`], mastered
//! and rebuilt at view changes like the locks ([`Dlm::plock_withdrawable`]).

pub mod election;
mod engine;
pub mod node;
// File locks (fcntl, flock) through the DLM: the tables, and the
// protocol.
pub mod plock;
mod plock_node;
pub mod runtime;
#[cfg(test)]
mod tests_node;
#[cfg(test)]
mod tests_runtime;

pub use election::{OwnerElection, OWNER_RESOURCE};
pub use engine::{DlmError, Event, LockSpace, LockState, RequestFlags};
pub use runtime::{Dlm, LinkTransport, LockError, LockHandle, Withdraw};

use crate::identity::fnv1a64;

/// Longest resource name, in bytes (it must fit a lockstate lock record).
pub const MAX_RESOURCE_NAME: usize = 256;

pub type NodeId = u64;

/// Lock modes, numbered as `MXFS_LOCK_*` in the kernel interface and as
/// in Linux's DLM (`DLM_LOCK_NL` = 0 .. `DLM_LOCK_EX` = 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Mode {
    /// Null: holds a place, conflicts with nothing.
    NL = 0,
    /// Concurrent read.
    CR = 1,
    /// Concurrent write.
    CW = 2,
    /// Protected read.
    PR = 3,
    /// Protected write.
    PW = 4,
    /// Exclusive.
    EX = 5,
}

/// `COMPAT[a][b]`: a lock in mode `a` may be granted while another is
/// granted in mode `b`.  The standard VMS/Linux DLM matrix.
const COMPAT: [[bool; 6]; 6] = [
    //  NL     CR     CW     PR     PW     EX
    [true, true, true, true, true, true],      // NL
    [true, true, true, true, true, false],     // CR
    [true, true, true, false, false, false],   // CW
    [true, true, false, true, false, false],   // PR
    [true, true, false, false, false, false],  // PW
    [true, false, false, false, false, false], // EX
];

impl Mode {
    pub const ALL: [Mode; 6] = [Mode::NL, Mode::CR, Mode::CW, Mode::PR, Mode::PW, Mode::EX];

    pub fn from_u8(v: u8) -> Option<Mode> {
        Mode::ALL.get(usize::from(v)).copied()
    }

    pub fn compatible(self, other: Mode) -> bool {
        COMPAT[self as usize][other as usize]
    }
}

/// Holder of a lock: the requesting node and its own id for the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockId {
    pub node: NodeId,
    pub local: u64,
}

/// The master of `resource` among `members`: rendezvous hashing with
/// FNV-1a 64.  Exactly:
///
/// ```text
/// score(m) = fnv1a64(resource ‖ be64(m))        for m in sort(dedup(members))
/// master   = the m with the highest score; on equal scores, the lowest m
/// ```
///
/// Every node computes the same answer from the same member set whatever
/// order it learned the members in (the list is sorted first).  Unlike
/// `hash mod n`, a change of members moves only the resources whose
/// master left or whose new best score belongs to a joining node, so a
/// departure re-masters only the departed node's resources.
/// `None` when there are no members.
pub fn master_of(resource: &[u8], members: &[NodeId]) -> Option<NodeId> {
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut buf = Vec::with_capacity(resource.len() + 8);
    let mut best: Option<(u64, NodeId)> = None;
    for m in sorted {
        buf.clear();
        buf.extend_from_slice(resource);
        buf.extend_from_slice(&m.to_be_bytes());
        let score = fnv1a64(&buf);
        // strictly greater: on a tie the earlier (lower) node id stays
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, m));
        }
    }
    best.map(|(_, m)| m)
}

/// The resources whose master changes when the members go from `old` to
/// `new`: `(name, old master, new master)`.
#[cfg(test)]
pub fn remaster_moves<'a>(
    names: impl IntoIterator<Item = &'a [u8]>,
    old: &[NodeId],
    new: &[NodeId],
) -> Vec<(Vec<u8>, Option<NodeId>, Option<NodeId>)> {
    names
        .into_iter()
        .filter_map(|n| {
            let (a, b) = (master_of(n, old), master_of(n, new));
            (a != b).then(|| (n.to_vec(), a, b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_is_the_standard_one() {
        use Mode::*;
        let grantable_with =
            |m: Mode| -> Vec<Mode> { Mode::ALL.into_iter().filter(|o| m.compatible(*o)).collect() };
        assert_eq!(grantable_with(NL), vec![NL, CR, CW, PR, PW, EX]);
        assert_eq!(grantable_with(CR), vec![NL, CR, CW, PR, PW]);
        assert_eq!(grantable_with(CW), vec![NL, CR, CW]);
        assert_eq!(grantable_with(PR), vec![NL, CR, PR]);
        assert_eq!(grantable_with(PW), vec![NL, CR]);
        assert_eq!(grantable_with(EX), vec![NL]);
        for a in Mode::ALL {
            for b in Mode::ALL {
                assert_eq!(a.compatible(b), b.compatible(a), "symmetric {a:?} {b:?}");
            }
            assert_eq!(Mode::from_u8(a as u8), Some(a));
        }
        assert_eq!(Mode::from_u8(6), None);
        // the numbering the kernel interface uses
        assert_eq!(EX as u32, crate::uapi::MXFS_LOCK_EX);
        assert_eq!(CW as u32, crate::uapi::MXFS_LOCK_CW);
    }

    #[test]
    fn mastering_is_order_independent_and_spreads() {
        let members = [0x9e37_79b9_7f4a_7c15u64, 0x1234, 0xffff_0000_ffff_0000];
        let mut counts = std::collections::HashMap::new();
        for i in 0..3000 {
            let name = format!("inode:{i}");
            let m = master_of(name.as_bytes(), &members).unwrap();
            let mut rev = members;
            rev.reverse();
            assert_eq!(master_of(name.as_bytes(), &rev), Some(m));
            assert_eq!(master_of(name.as_bytes(), &[m, m]), Some(m));
            *counts.entry(m).or_insert(0) += 1;
        }
        for m in members {
            let c = counts.get(&m).copied().unwrap_or(0);
            assert!(
                (700..1300).contains(&c),
                "node {m:#x} masters {c} of 3000: {counts:?}"
            );
        }
        assert_eq!(master_of(b"x", &[]), None);
        // the documented function, spelled out once
        let score = |m: u64| {
            let mut b = b"owner".to_vec();
            b.extend_from_slice(&m.to_be_bytes());
            fnv1a64(&b)
        };
        let expect = members
            .into_iter()
            .max_by_key(|m| (score(*m), std::cmp::Reverse(*m)));
        assert_eq!(master_of(b"owner", &members), expect);
    }

    #[test]
    fn a_departure_moves_only_the_departed_nodes_resources() {
        let old = [11u64, 22, 33, 44];
        let new = [11u64, 22, 44];
        let names: Vec<Vec<u8>> = (0..2000).map(|i| format!("r{i}").into_bytes()).collect();
        let moves = remaster_moves(names.iter().map(|n| n.as_slice()), &old, &new);
        assert!(!moves.is_empty());
        for (_, from, to) in &moves {
            assert_eq!(*from, Some(33));
            assert!(to.is_some() && *to != Some(33));
        }
        let owned_by_33 = names
            .iter()
            .filter(|n| master_of(n, &old) == Some(33))
            .count();
        assert_eq!(moves.len(), owned_by_33);
    }
}
