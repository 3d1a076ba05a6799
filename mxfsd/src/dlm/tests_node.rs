//! An in-process cluster of [`DlmNode`]s over an in-memory bus: FIFO per
//! ordered pair of nodes (as a TCP link), any interleaving between pairs.
//! Every message crosses the bus as its wire frame, encoded and decoded.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::node::{
    covers, glb, Completion, DlmMsg, DlmNode, OpError, Output, OwnLock, RecordedLock, Refusal,
    Started, View, RECOVER_CHUNK,
};
use super::plock::{FileLockCall, Kind};
use super::*;
use crate::wire::{
    self, LockErrorCode, LockGrant, LockRef, LockRequest, Message, PlockAnswer, PlockHeld, PlockOp,
    PlockRecover, PlockRequest, PlockResult,
};
use Mode::*;

const Q: RequestFlags = RequestFlags { noqueue: false };
const NOQ: RequestFlags = RequestFlags { noqueue: true };

struct Bus {
    nodes: BTreeMap<NodeId, DlmNode>,
    links: BTreeMap<(NodeId, NodeId), VecDeque<DlmMsg>>,
    done: BTreeMap<NodeId, Vec<Completion>>,
    view: View,
    /// Views told to the bus but not yet applied at a node (staggered).
    pending_views: BTreeMap<NodeId, VecDeque<(View, Vec<NodeId>)>>,
    delivered: usize,
}

impl Bus {
    fn new(ids: &[NodeId]) -> Bus {
        let mut bus = Bus {
            nodes: ids.iter().map(|&i| (i, DlmNode::new(i))).collect(),
            links: BTreeMap::new(),
            done: BTreeMap::new(),
            view: 0,
            pending_views: BTreeMap::new(),
            delivered: 0,
        };
        bus.change_view(ids, false);
        bus.run();
        bus
    }

    fn node(&mut self, id: NodeId) -> &mut DlmNode {
        self.nodes.get_mut(&id).expect("node in the bus")
    }

    fn collect(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        while let Some(o) = n.poll_output() {
            match o {
                Output::Send { to, msg } => {
                    assert_ne!(to, id, "a node sent itself a message over the bus");
                    let msg = match through_wire(msg.clone()) {
                        Ok(m) => m,
                        // An answer echoing a bad name that a test
                        // injected (no link carries one): kept in memory.
                        Err(wire::WireError::Invalid("resource name")) => msg,
                        Err(e) => panic!("{msg:?} has no wire form: {e}"),
                    };
                    self.links.entry((id, to)).or_default().push_back(msg)
                }
                Output::Local(c) => self.done.entry(id).or_default().push(c),
            }
        }
    }

    fn take_done(&mut self, id: NodeId) -> Vec<Completion> {
        self.done.remove(&id).unwrap_or_default()
    }

    /// Steps that can be taken now: deliveries and pending view changes.
    fn choices(&self) -> Vec<(NodeId, NodeId)> {
        let mut c: Vec<(NodeId, NodeId)> = self
            .links
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        // (n, n): apply the next view at n
        c.extend(
            self.pending_views
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(n, _)| (*n, *n)),
        );
        c
    }

    fn step(&mut self, pick: usize) -> bool {
        for n in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.collect(n);
        }
        let c = self.choices();
        if c.is_empty() {
            return false;
        }
        let (from, to) = c[pick % c.len()];
        if from == to {
            if let Some((v, m)) = self
                .pending_views
                .get_mut(&from)
                .and_then(|q| q.pop_front())
            {
                if let Some(n) = self.nodes.get_mut(&from) {
                    n.set_members(v, &m).expect("views grow");
                }
                self.collect(from);
            }
            return true;
        }
        let msg = self
            .links
            .get_mut(&(from, to))
            .and_then(|q| q.pop_front())
            .expect("chosen link has a message");
        if let Some(n) = self.nodes.get_mut(&to) {
            n.receive(from, msg);
            self.delivered += 1;
            self.collect(to);
        }
        true
    }

    fn run(&mut self) {
        let mut guard = 0;
        while self.step(0) {
            guard += 1;
            assert!(guard < 1_000_000, "the bus does not quiesce");
        }
    }

    /// Tell every node in `members` (and every node leaving) the next
    /// view: at once, or queued to be applied as a step of its own.
    fn change_view(&mut self, members: &[NodeId], staggered: bool) {
        self.view += 1;
        let targets: Vec<NodeId> = self.nodes.keys().copied().collect();
        for n in targets {
            let q = self.pending_views.entry(n).or_default();
            q.push_back((self.view, members.to_vec()));
            if !staggered {
                // in order: views queued earlier at this node first
                while let Some((v, m)) = q.pop_front() {
                    self.nodes
                        .get_mut(&n)
                        .expect("node in the bus")
                        .set_members(v, &m)
                        .unwrap();
                }
                self.collect(n);
            }
        }
    }

    /// `id` crashes: it and everything on its links in either direction
    /// that is not in flight yet vanish; what it had sent stays in flight.
    fn crash(&mut self, id: NodeId) {
        self.nodes.remove(&id);
        self.pending_views.remove(&id);
        self.links.retain(|(_, to), _| *to != id);
    }

    fn depart(&mut self, id: NodeId, staggered: bool) {
        self.crash(id);
        let members: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.change_view(&members, staggered);
    }

    fn join(&mut self, id: NodeId, staggered: bool) {
        let mut n = DlmNode::new(id);
        // a joiner starts at the view before the one that adds it
        if self.view > 0 {
            n.set_members(self.view, &[]).unwrap();
        }
        self.nodes.insert(id, n);
        self.collect(id);
        self.done.remove(&id);
        let members: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.change_view(&members, staggered);
    }

    fn own(&self) -> Vec<(NodeId, OwnLock)> {
        self.nodes
            .iter()
            .flat_map(|(n, d)| d.own_locks().map(move |l| (*n, l)))
            .collect()
    }

    /// Safety: the modes the holders rely on are pairwise compatible.
    fn check_safety(&self) {
        let own = self.own();
        for (i, (na, a)) in own.iter().enumerate() {
            for (nb, b) in &own[i + 1..] {
                if a.resource != b.resource {
                    continue;
                }
                if let (Some(ma), Some(mb)) = (a.granted, b.granted) {
                    assert!(
                        ma.compatible(mb),
                        "node {na} relies on {ma:?} ({:?}) and node {nb} on {mb:?} ({:?}) on {:?}",
                        a.id,
                        b.id,
                        String::from_utf8_lossy(&a.resource)
                    );
                }
            }
        }
    }

    /// Once quiet and recovered, masters and holders agree.
    fn check_agreement(&self) {
        let members: Vec<NodeId> = self.nodes.keys().copied().collect();
        for (n, l) in self.own() {
            let m = master_of(&l.resource, &members).unwrap();
            let st = self.nodes[&m]
                .mastered_lock(l.id)
                .unwrap_or_else(|| panic!("master {m} lacks {:?} of node {n}", l.id));
            if let (Some(_), Some(h)) = (l.requested, l.granted) {
                // converting: the holder relies on no more than the master holds
                let g = st.granted.expect("a converting lock holds a mode");
                assert!(covers(g, h), "{:?}: master {g:?}, holder {h:?}", l.id);
            } else {
                assert_eq!(st.granted, l.granted, "granted of {:?}", l.id);
            }
            assert_eq!(st.requested, l.requested, "requested of {:?}", l.id);
        }
        for d in self.nodes.values() {
            assert!(!d.is_recovering());
        }
    }

    fn granted_modes(done: &[Completion]) -> Vec<(LockId, Mode)> {
        done.iter()
            .filter_map(|c| match c {
                Completion::Granted { lock, mode, .. } => Some((*lock, *mode)),
                _ => None,
            })
            .collect()
    }
}

/// `msg` as a peer receives it: into a wire frame and back.  Encoding
/// errors come back (the decoding of a frame must succeed).
fn through_wire(msg: DlmMsg) -> Result<DlmMsg, wire::WireError> {
    let frame = msg.clone().into_wire().encode()?;
    assert!(frame.len() <= wire::MAX_FRAME);
    let (m, used) = Message::decode_frame(&frame)
        .expect("a DLM frame decodes")
        .expect("a whole frame");
    assert_eq!(used, frame.len());
    let back = DlmMsg::from_wire(m).expect("a DLM message");
    assert_eq!(back, msg, "the wire changed a DLM message");
    Ok(back)
}

fn granted(done: &[Completion], lock: LockId) -> bool {
    done.iter()
        .any(|c| matches!(c, Completion::Granted { lock: l, .. } if *l == lock))
}

/// A resource name mastered by `m` among `members`.
fn name_mastered_by(m: NodeId, members: &[NodeId], tag: &str) -> Vec<u8> {
    (0..)
        .map(|i| format!("{tag}{i}").into_bytes())
        .find(|n| master_of(n, members) == Some(m))
        .unwrap()
}

const A: NodeId = 0xa1;
const B: NodeId = 0xb2;
const C: NodeId = 0xc3;
const ABC: [NodeId; 3] = [A, B, C];

#[test]
fn glb_and_covers() {
    assert_eq!(glb(PR, EX), PR);
    assert_eq!(glb(EX, PR), PR);
    assert_eq!(glb(PR, CW), CR);
    assert_eq!(glb(CW, PW), CW);
    assert_eq!(glb(NL, EX), NL);
    for a in Mode::ALL {
        assert!(covers(EX, a) && covers(a, NL) && covers(a, a));
        for b in Mode::ALL {
            let g = glb(a, b);
            assert!(covers(a, g) && covers(b, g));
        }
    }
    assert!(!covers(PR, CW) && !covers(CW, PR));
}

/// Each node takes EX `rounds` times, holds it for some steps, adds one to
/// a shared counter and releases.  No two ever hold it at once and the
/// counter ends exact.  `picks` chooses the interleaving.
fn ex_counter(picks: &[usize], rounds: usize, staggered_departure: Option<usize>) {
    let res = b"counter".to_vec();
    let mut bus = Bus::new(&ABC);
    let mut left: BTreeMap<NodeId, usize> = ABC.iter().map(|n| (*n, rounds)).collect();
    let mut want: BTreeMap<NodeId, LockId> = BTreeMap::new();
    let mut holder: Option<(NodeId, LockId, usize)> = None;
    let mut counter = 0usize;
    let mut expected = rounds * ABC.len();
    let mut i = 0usize;
    let pick = |i: &mut usize| {
        *i += 1;
        picks.get(*i % picks.len().max(1)).copied().unwrap_or(0)
    };
    loop {
        if let Some(at) = staggered_departure {
            if bus.delivered == at && bus.nodes.contains_key(&C) {
                // C departs with whatever it holds or waits for
                if let Some((n, _, _)) = holder {
                    if n == C {
                        holder = None;
                    }
                }
                expected -= left[&C];
                left.insert(C, 0);
                want.remove(&C);
                bus.depart(C, true);
            }
        }
        for n in bus.nodes.keys().copied().collect::<Vec<_>>() {
            if left[&n] > 0 && !want.contains_key(&n) && holder.map(|h| h.0) != Some(n) {
                let id = bus.node(n).lock(&res, EX, Q).unwrap();
                bus.collect(n);
                want.insert(n, id);
            }
        }
        for n in bus.nodes.keys().copied().collect::<Vec<_>>() {
            for c in bus.take_done(n) {
                if let Completion::Granted { lock, mode, .. } = c {
                    assert_eq!(mode, EX);
                    assert_eq!(want.get(&n), Some(&lock));
                    assert!(holder.is_none(), "{n} granted EX while {holder:?} holds it");
                    want.remove(&n);
                    holder = Some((n, lock, pick(&mut i) % 5));
                }
            }
        }
        bus.check_safety();
        if let Some((n, lock, hold)) = holder {
            if hold == 0 {
                counter += 1;
                *left.get_mut(&n).unwrap() -= 1;
                bus.node(n).unlock(lock).unwrap();
                bus.collect(n);
                holder = None;
                continue;
            }
            holder = Some((n, lock, hold - 1));
        }
        if !bus.step(pick(&mut i)) && holder.is_none() {
            break;
        }
    }
    assert_eq!(counter, expected);
    assert!(left.values().all(|l| *l == 0), "left {left:?}");
    assert!(bus.own().is_empty());
    for d in bus.nodes.values() {
        assert!(d.mastered_resources().is_empty());
    }
}

#[test]
fn exclusive_locks_never_overlap_deterministic() {
    ex_counter(&[0], 10, None);
    ex_counter(&[1, 2, 3, 5, 7], 10, None);
}

#[test]
fn exclusive_locks_with_a_departure_midway() {
    for at in [0, 3, 10, 25, 40] {
        ex_counter(&[0, 1, 4, 2], 6, Some(at));
    }
}

#[test]
fn protected_reads_are_shared_and_basts_reach_holders() {
    let mut bus = Bus::new(&ABC);
    let r = b"shared";
    let ids: Vec<LockId> = ABC
        .iter()
        .map(|&n| bus.node(n).lock(r, PR, Q).unwrap())
        .collect();
    for n in ABC {
        bus.collect(n);
    }
    bus.run();
    for (n, id) in ABC.iter().zip(&ids) {
        assert!(granted(&bus.take_done(*n), *id), "PR at {n}");
        assert_eq!(bus.node(*n).held(*id), Some(PR));
    }
    // A converts to EX: B and C are told, A waits
    assert_eq!(bus.node(A).convert(ids[0], EX, Q), Ok(Started::Pending));
    bus.collect(A);
    bus.run();
    assert!(bus.take_done(A).is_empty());
    for (n, id) in [(B, ids[1]), (C, ids[2])] {
        assert_eq!(
            bus.take_done(n),
            vec![Completion::Blocking {
                lock: id,
                resource: r.to_vec(),
                granted: PR,
                requested: EX
            }]
        );
        bus.node(n).unlock(id).unwrap();
        bus.collect(n);
    }
    bus.run();
    assert_eq!(Bus::granted_modes(&bus.take_done(A)), vec![(ids[0], EX)]);
    bus.check_agreement();
    // Down to PR at once; B's new PR is granted
    assert_eq!(bus.node(A).convert(ids[0], PR, Q), Ok(Started::Done));
    assert_eq!(bus.node(A).held(ids[0]), Some(PR));
    let b2 = bus.node(B).lock(r, PR, Q).unwrap();
    bus.collect(A);
    bus.collect(B);
    bus.run();
    assert!(granted(&bus.take_done(B), b2));
    bus.check_agreement();
}

#[test]
fn noqueue_is_refused_and_leaves_nothing() {
    let mut bus = Bus::new(&ABC);
    let r = b"nq";
    let a = bus.node(A).lock(r, EX, Q).unwrap();
    bus.collect(A);
    bus.run();
    assert!(granted(&bus.take_done(A), a));
    for mode in [EX, PR, CR] {
        let b = bus.node(B).lock(r, mode, NOQ).unwrap();
        bus.collect(B);
        bus.run();
        assert_eq!(
            bus.take_done(B),
            vec![Completion::Refused {
                lock: b,
                resource: r.to_vec(),
                reason: Refusal::NotGranted,
                mode: None
            }]
        );
        assert_eq!(bus.node(B).held(b), None);
    }
    // NL is compatible with EX
    let b = bus.node(B).lock(r, NL, NOQ).unwrap();
    bus.collect(B);
    bus.run();
    assert!(granted(&bus.take_done(B), b));
    // NOQUEUE conversion NL -> PR refused; B keeps NL
    bus.node(B).convert(b, PR, NOQ).unwrap();
    bus.collect(B);
    bus.run();
    assert!(matches!(
        bus.take_done(B)[..],
        [Completion::Refused {
            reason: Refusal::NotGranted,
            mode: Some(NL),
            ..
        }]
    ));
    assert_eq!(bus.node(B).held(b), Some(NL));
    bus.check_agreement();
}

#[test]
fn cancel_a_waiting_request_and_a_conversion() {
    let mut bus = Bus::new(&ABC);
    let r = b"cx";
    let a = bus.node(A).lock(r, PR, Q).unwrap();
    let c = bus.node(C).lock(r, PR, Q).unwrap();
    bus.collect(A);
    bus.collect(C);
    bus.run();
    bus.take_done(A);
    bus.take_done(C);
    let b = bus.node(B).lock(r, EX, Q).unwrap();
    bus.collect(B);
    bus.run();
    assert_eq!(bus.take_done(A).len(), 1, "BAST to A");
    bus.node(B).cancel(b).unwrap();
    bus.collect(B);
    bus.run();
    assert_eq!(
        bus.take_done(B),
        vec![Completion::Cancelled {
            lock: b,
            resource: r.to_vec(),
            mode: None
        }]
    );
    assert_eq!(bus.node(B).cancel(b), Err(OpError::NoSuchLock(b)));
    // A converts PR -> EX (waits for C), then cancels: back to PR
    bus.node(A).convert(a, EX, Q).unwrap();
    bus.collect(A);
    bus.run();
    bus.node(A).cancel(a).unwrap();
    bus.collect(A);
    bus.run();
    assert_eq!(
        bus.take_done(A),
        vec![Completion::Cancelled {
            lock: a,
            resource: r.to_vec(),
            mode: Some(PR)
        }]
    );
    assert_eq!(bus.node(A).held(a), Some(PR));
    // unlock of a waiting lock abandons it
    let b2 = bus.node(B).lock(r, EX, Q).unwrap();
    bus.collect(B);
    bus.run();
    bus.node(B).unlock(b2).unwrap();
    bus.collect(B);
    bus.run();
    assert!(matches!(
        bus.take_done(B)[..],
        [Completion::Cancelled { mode: None, .. }]
    ));
    bus.node(A).unlock(a).unwrap();
    bus.node(C).unlock(c).unwrap();
    bus.collect(A);
    bus.collect(C);
    bus.run();
    assert!(bus.own().is_empty());
    assert!(bus
        .nodes
        .values()
        .all(|d| d.mastered_resources().is_empty()));
}

#[test]
fn a_cancel_that_loses_the_race_is_harmless() {
    let mut bus = Bus::new(&ABC);
    let r = name_mastered_by(C, &ABC, "race");
    let a = bus.node(A).lock(&r, PR, Q).unwrap();
    bus.collect(A);
    bus.run();
    bus.node(A).convert(a, EX, Q).unwrap();
    bus.collect(A);
    // the grant is on its way back when A cancels
    bus.node(A).cancel(a).unwrap();
    bus.collect(A);
    bus.run();
    let done = bus.take_done(A);
    assert!(granted(&done, a), "{done:?}");
    assert_eq!(bus.node(A).held(a), Some(EX));
    // the master's late "nothing to cancel" must not spoil the next request
    bus.node(A).convert(a, NL, Q).unwrap();
    bus.node(A).convert(a, PR, Q).unwrap();
    bus.collect(A);
    bus.run();
    assert_eq!(Bus::granted_modes(&bus.take_done(A)), vec![(a, PR)]);
    bus.check_agreement();
}

#[test]
fn a_departed_nodes_locks_are_purged_and_its_resources_remastered() {
    let mut bus = Bus::new(&ABC);
    // r1: C holds EX, A and B wait; r2: mastered by C, A and B hold PR
    let r1 = name_mastered_by(A, &ABC, "r1-");
    let r2 = name_mastered_by(C, &ABC, "r2-");
    let c1 = bus.node(C).lock(&r1, EX, Q).unwrap();
    bus.collect(C);
    bus.run();
    let a1 = bus.node(A).lock(&r1, EX, Q).unwrap();
    let b1 = bus.node(B).lock(&r1, PR, Q).unwrap();
    let a2 = bus.node(A).lock(&r2, PR, Q).unwrap();
    let b2 = bus.node(B).lock(&r2, PR, Q).unwrap();
    for n in ABC {
        bus.collect(n);
    }
    bus.run();
    assert!(granted(&bus.take_done(C), c1));
    bus.take_done(A);
    bus.take_done(B);
    assert_eq!(bus.node(A).held(a1), None);
    bus.depart(C, false);
    bus.run();
    // A's EX (first in LockId order) is granted; B still waits behind it
    assert!(granted(&bus.take_done(A), a1));
    assert_eq!(bus.node(B).held(b1), None);
    bus.check_agreement();
    // r2 now lives on a survivor, with both PR locks
    let m2 = master_of(&r2, &[A, B]).unwrap();
    assert_eq!(bus.node(m2).mastered_lock(a2).unwrap().granted, Some(PR));
    assert_eq!(bus.node(m2).mastered_lock(b2).unwrap().granted, Some(PR));
    assert_eq!(bus.node(A).held(a2), Some(PR));
    // ... and they still exclude an EX
    let x = bus.node(B).lock(&r2, EX, NOQ).unwrap();
    bus.collect(B);
    bus.run();
    assert!(matches!(
        bus.take_done(B)[..],
        [Completion::Refused { lock, reason: Refusal::NotGranted, .. }] if lock == x
    ));
    bus.node(A).unlock(a1).unwrap();
    bus.collect(A);
    bus.run();
    assert!(granted(&bus.take_done(B), b1));
    bus.check_agreement();
}

#[test]
fn a_join_remasters_and_keeps_every_granted_lock() {
    let mut bus = Bus::new(&ABC);
    let mut held = Vec::new();
    for i in 0..40 {
        let n = ABC[i % 3];
        let r = format!("j{i}").into_bytes();
        let id = bus.node(n).lock(&r, EX, Q).unwrap();
        bus.collect(n);
        held.push((n, id, r));
    }
    bus.run();
    for (n, id, _) in &held {
        assert_eq!(bus.node(*n).held(*id), Some(EX));
    }
    // and one waiter per resource
    let mut waiters = Vec::new();
    for (i, (_, _, r)) in held.iter().enumerate() {
        let n = ABC[(i + 1) % 3];
        let id = bus.node(n).lock(r, PR, Q).unwrap();
        bus.collect(n);
        waiters.push((n, id));
    }
    bus.run();
    for n in ABC {
        bus.take_done(n);
    }
    const D: NodeId = 0xd4;
    let before: Vec<Vec<u8>> = held.iter().map(|h| h.2.clone()).collect();
    let moved = remaster_moves(before.iter().map(|r| r.as_slice()), &ABC, &[A, B, C, D]);
    assert!(!moved.is_empty(), "some resources move to the joiner");
    bus.join(D, false);
    bus.run();
    bus.check_agreement();
    for (n, id, r) in &held {
        assert_eq!(
            bus.node(*n).held(*id),
            Some(EX),
            "{id:?} on {r:?}: {:?}",
            bus.done.get(n)
        );
        // the new master refuses a conflicting NOQUEUE request
        let x = bus.node(D).lock(r, CR, NOQ).unwrap();
        bus.collect(D);
        bus.run();
        assert!(
            matches!(bus.take_done(D)[..], [Completion::Refused { lock, .. }] if lock == x),
            "{r:?}"
        );
    }
    for n in ABC {
        assert!(
            Bus::granted_modes(&bus.take_done(n)).is_empty(),
            "nothing granted by the join"
        );
    }
    // releasing grants the re-queued waiters
    for (n, id, _) in &held {
        bus.node(*n).unlock(*id).unwrap();
        bus.collect(*n);
    }
    bus.run();
    for (n, id) in &waiters {
        assert_eq!(bus.node(*n).held(*id), Some(PR));
    }
    bus.check_agreement();
}

#[test]
fn a_lone_node_and_a_node_left_out() {
    let mut bus = Bus::new(&[A]);
    let a = bus.node(A).lock(b"solo", EX, Q).unwrap();
    bus.run();
    assert!(granted(&bus.take_done(A), a));
    let mut n = DlmNode::new(B);
    assert_eq!(n.lock(b"x", EX, Q), Err(OpError::NotMember));
    assert_eq!(n.lock(b"", EX, Q), Err(OpError::BadName(0)));
    // A is told a view without itself: its locks are lost
    bus.node(A).set_members(5, &[B]).unwrap();
    bus.collect(A);
    assert!(matches!(
        bus.take_done(A)[..],
        [Completion::Refused {
            reason: Refusal::Lost,
            ..
        }]
    ));
    assert_eq!(
        bus.node(A).set_members(5, &[A]),
        Err(OpError::StaleView { got: 5, have: 5 })
    );
}

#[test]
fn unexpected_peer_input_is_dropped_without_panic() {
    let mut bus = Bus::new(&ABC);
    let r = name_mastered_by(A, &ABC, "bad");
    let a = bus.node(A).lock(&r, EX, Q).unwrap();
    bus.run();
    bus.take_done(A);
    let id = |node, local| LockId { node, local };
    let msgs = vec![
        // B acting on A's lock
        DlmMsg::Unlock(LockRef {
            lock: a,
            resource: r.clone(),
        }),
        DlmMsg::Convert(LockRequest {
            lock: a,
            resource: r.clone(),
            mode: NL,
            noqueue: false,
        }),
        // grants for locks that are not A's, or from a non-master
        DlmMsg::Grant(LockGrant {
            lock: id(B, 7),
            resource: r.clone(),
            mode: EX,
        }),
        DlmMsg::Grant(LockGrant {
            lock: id(A, 999),
            resource: r.clone(),
            mode: EX,
        }),
        DlmMsg::Error(crate::wire::LockError {
            lock: a,
            resource: r.clone(),
            code: LockErrorCode::NoSuchLock,
        }),
        // recovery out of place, and for an old view
        DlmMsg::RecoverLocks {
            view: 1,
            locks: vec![RecordedLock {
                lock: id(B, 1),
                resource: r.clone(),
                granted: Some(EX),
                requested: None,
                noqueue: false,
            }],
        },
        DlmMsg::RecoverDone { view: 1 },
        DlmMsg::RecoverDone { view: 0 },
        DlmMsg::Unlock(LockRef {
            lock: id(B, 1),
            resource: vec![0; 300],
        }),
    ];
    for m in msgs {
        bus.node(A).receive(B, m.clone());
        bus.node(A).receive(A, m.clone());
        bus.node(A).receive(0x77, m);
        bus.collect(A);
    }
    bus.run();
    assert_eq!(bus.node(A).held(a), Some(EX));
    bus.check_agreement();
    // a peer far ahead is buffered, not believed
    bus.node(A).receive(
        B,
        DlmMsg::RecoverLocks {
            view: 99,
            locks: vec![],
        },
    );
    bus.node(A).receive(
        B,
        DlmMsg::Request(LockRequest {
            lock: id(B, 50),
            resource: r.clone(),
            mode: EX,
            noqueue: false,
        }),
    );
    bus.collect(A);
    assert!(bus.node(A).mastered_lock(id(B, 50)).is_none());
    assert_eq!(bus.node(A).held(a), Some(EX));
}

/// Every DLM message has a wire form: DLM -> wire -> bytes -> wire -> DLM
/// is the identity, for every variant; other wire messages are not DLM.
#[test]
fn every_dlm_message_crosses_the_wire() {
    let lock = LockId { node: A, local: 1 };
    let resource = b"res".to_vec();
    let full = vec![b'f'; MAX_RESOURCE_NAME];
    let rec = |local, resource: &[u8], granted, requested, noqueue| RecordedLock {
        lock: LockId { node: B, local },
        resource: resource.to_vec(),
        granted,
        requested,
        noqueue,
    };
    let req = LockRequest {
        lock,
        resource: full.clone(),
        mode: PW,
        noqueue: true,
    };
    let lref = LockRef {
        lock,
        resource: resource.clone(),
    };
    let msgs = vec![
        DlmMsg::Request(req.clone()),
        DlmMsg::Convert(LockRequest {
            noqueue: false,
            ..req
        }),
        DlmMsg::Unlock(lref.clone()),
        DlmMsg::Cancel(lref),
        DlmMsg::Grant(LockGrant {
            lock,
            resource: resource.clone(),
            mode: CW,
        }),
        DlmMsg::Blocking(crate::wire::LockBlocking {
            lock,
            resource: resource.clone(),
            granted: PR,
            requested: EX,
        }),
        DlmMsg::Cancelled(crate::wire::LockCancelled {
            lock,
            resource: resource.clone(),
            mode: None,
        }),
        DlmMsg::Cancelled(crate::wire::LockCancelled {
            lock,
            resource: resource.clone(),
            mode: Some(NL),
        }),
        DlmMsg::Error(crate::wire::LockError {
            lock,
            resource: resource.clone(),
            code: LockErrorCode::ConversionDeadlock,
        }),
        DlmMsg::RecoverLocks {
            view: 0,
            locks: vec![],
        },
        DlmMsg::RecoverLocks {
            view: 3,
            locks: vec![
                rec(1, &resource, Some(EX), None, false),
                rec(2, &full, None, Some(CR), true),
                rec(3, b"x", Some(PR), Some(EX), false),
            ],
        },
        // the largest the node sends: a full chunk of full-length names
        DlmMsg::RecoverLocks {
            view: u64::MAX,
            locks: (0..RECOVER_CHUNK as u64)
                .map(|i| rec(i, &full, Some(CW), Some(PR), true))
                .collect(),
        },
        DlmMsg::RecoverDone { view: 0 },
        DlmMsg::RecoverDone { view: u64::MAX },
        DlmMsg::Plock(PlockRequest {
            req: LockId { node: A, local: 7 },
            resource: b"plock:9".to_vec(),
            flock: false,
            owner: 3,
            pid: 4,
            op: PlockOp::Lock {
                kind: Kind::Write,
                wait: true,
            },
            start: 1,
            end: u64::MAX,
        }),
        DlmMsg::PlockAnswer(PlockAnswer {
            req: LockId { node: A, local: 7 },
            resource: b"plock:9".to_vec(),
            result: PlockResult::Granted,
        }),
        DlmMsg::RecoverPlocks(PlockRecover {
            view: 3,
            resource: b"flock:9".to_vec(),
            flock: true,
            held: vec![PlockHeld {
                owner: 3,
                pid: 4,
                kind: Kind::Read,
                start: 0,
                end: u64::MAX,
            }],
        }),
    ];
    let mut variants = std::collections::BTreeSet::new();
    for m in msgs {
        // no wildcard: a new variant must be added to this test
        variants.insert(match &m {
            DlmMsg::Request(_) => 0,
            DlmMsg::Convert(_) => 1,
            DlmMsg::Unlock(_) => 2,
            DlmMsg::Cancel(_) => 3,
            DlmMsg::Grant(_) => 4,
            DlmMsg::Blocking(_) => 5,
            DlmMsg::Cancelled(_) => 6,
            DlmMsg::Error(_) => 7,
            DlmMsg::RecoverLocks { .. } => 8,
            DlmMsg::RecoverDone { .. } => 9,
            DlmMsg::Plock(_) => 10,
            DlmMsg::PlockAnswer(_) => 11,
            DlmMsg::RecoverPlocks(_) => 12,
        });
        assert_eq!(through_wire(m.clone()), Ok(m));
    }
    assert_eq!(variants.len(), 13);
    let bye = Message::Goodbye {
        reason: "bye".into(),
    };
    assert_eq!(DlmMsg::from_wire(bye.clone()), Err(bye));
    assert_eq!(RECOVER_CHUNK, wire::MAX_RECOVER_LOCKS);
}

/// More locks than one recovery message holds: they go in chunks of
/// RECOVER_CHUNK (through the wire, like every bus message) and all
/// survive the view change.
#[test]
fn recovery_records_go_in_chunks() {
    let mut bus = Bus::new(&ABC);
    let names: Vec<Vec<u8>> = (0..)
        .map(|i| format!("chunk{i}").into_bytes())
        .filter(|n| master_of(n, &ABC) == Some(A))
        .take(RECOVER_CHUNK + 10)
        .collect();
    let ids: Vec<LockId> = names
        .iter()
        .map(|n| bus.node(B).lock(n, PR, Q).unwrap())
        .collect();
    bus.collect(B);
    bus.run();
    bus.change_view(&ABC, false);
    let sizes: Vec<usize> = bus.links[&(B, A)]
        .iter()
        .filter_map(|m| match m {
            DlmMsg::RecoverLocks { locks, .. } => Some(locks.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [RECOVER_CHUNK, 10]);
    bus.run();
    bus.check_agreement();
    for id in ids {
        assert_eq!(bus.node(B).held(id), Some(PR));
    }
}

/// Ops for the random-cluster property test.
#[derive(Debug, Clone)]
enum Op {
    Lock(usize, u8, Mode, bool),
    Convert(usize, usize, Mode, bool),
    Cancel(usize, usize),
    Unlock(usize, usize),
    Deliver(usize),
    Depart(usize, bool),
    Join(bool),
}

fn arb_mode() -> impl Strategy<Value = Mode> {
    prop::sample::select(Mode::ALL.to_vec())
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<usize>(), 0u8..3, arb_mode(), any::<bool>())
            .prop_map(|(n, r, m, q)| Op::Lock(n, r, m, q)),
        3 => (any::<usize>(), any::<usize>(), arb_mode(), any::<bool>())
            .prop_map(|(n, l, m, q)| Op::Convert(n, l, m, q)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(n, l)| Op::Cancel(n, l)),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(n, l)| Op::Unlock(n, l)),
        24 => any::<usize>().prop_map(Op::Deliver),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(n, s)| Op::Depart(n, s)),
        1 => any::<bool>().prop_map(Op::Join),
    ]
}

fn nth<T: Copy>(v: &[T], i: usize) -> Option<T> {
    (!v.is_empty()).then(|| v[i % v.len()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Shuffled interleavings of three exclusive lockers.
    #[test]
    fn exclusive_locks_never_overlap_shuffled(picks in prop::collection::vec(any::<usize>(), 1..64)) {
        ex_counter(&picks, 4, None);
    }

    /// Random operations, deliveries and membership changes (applied at
    /// each node at its own moment): the modes relied on never conflict;
    /// once quiet, masters and holders agree; releasing everything drains
    /// every queue and leaves no state.
    #[test]
    fn random_cluster_is_safe_and_drains(ops in prop::collection::vec(arb_op(), 1..250)) {
        let mut bus = Bus::new(&ABC);
        let mut next_id: NodeId = 0xe0;
        let names: [&[u8]; 3] = [b"r0", b"r1", b"owner"];
        for op in ops {
            let nodes: Vec<NodeId> = bus.nodes.keys().copied().collect();
            match op {
                Op::Lock(n, r, m, q) => {
                    let Some(n) = nth(&nodes, n) else { continue };
                    let flags = RequestFlags { noqueue: q };
                    let _ = bus.node(n).lock(names[usize::from(r)], m, flags);
                    bus.collect(n);
                }
                Op::Convert(n, l, m, q) => {
                    let Some(n) = nth(&nodes, n) else { continue };
                    let ids: Vec<LockId> = bus.node(n).own_locks().map(|o| o.id).collect();
                    let Some(l) = nth(&ids, l) else { continue };
                    let _ = bus.node(n).convert(l, m, RequestFlags { noqueue: q });
                    bus.collect(n);
                }
                Op::Cancel(n, l) => {
                    let Some(n) = nth(&nodes, n) else { continue };
                    let ids: Vec<LockId> = bus.node(n).own_locks().map(|o| o.id).collect();
                    let Some(l) = nth(&ids, l) else { continue };
                    let _ = bus.node(n).cancel(l);
                    bus.collect(n);
                }
                Op::Unlock(n, l) => {
                    let Some(n) = nth(&nodes, n) else { continue };
                    let ids: Vec<LockId> = bus.node(n).own_locks().map(|o| o.id).collect();
                    let Some(l) = nth(&ids, l) else { continue };
                    let _ = bus.node(n).unlock(l);
                    bus.collect(n);
                }
                Op::Deliver(p) => { bus.step(p); }
                Op::Depart(n, staggered) => {
                    if nodes.len() > 1 {
                        let n = nth(&nodes, n).unwrap();
                        bus.depart(n, staggered);
                    }
                }
                Op::Join(staggered) => {
                    if nodes.len() < 5 {
                        next_id += 1;
                        bus.join(next_id, staggered);
                    }
                }
            }
            bus.check_safety();
        }
        let mut rounds = 0;
        loop {
            bus.run();
            bus.check_safety();
            bus.check_agreement();
            let own = bus.own();
            if own.is_empty() {
                break;
            }
            rounds += 1;
            prop_assert!(rounds < 100, "does not drain: {own:?}");
            // release every granted lock; what waits must then be granted
            let mut any = false;
            for (n, l) in own {
                if l.granted.is_some() {
                    bus.node(n).unlock(l.id).unwrap();
                    bus.collect(n);
                    any = true;
                }
            }
            prop_assert!(any, "only waiters left, none granted: {:?}", bus.own());
        }
        for d in bus.nodes.values() {
            prop_assert!(d.mastered_resources().is_empty());
        }
    }
}

// ---- file locks (fcntl, flock) through the masters ----

const FILE: &[u8] = b"plock:131";
const FLOCK_FILE: &[u8] = b"flock:131";
const D: NodeId = 0xd4;

fn range(start: u64, end: u64) -> super::plock::Range {
    super::plock::Range::new(start, end).unwrap()
}

/// A call of lock owner `owner` (pid = owner).
fn call(
    file: &[u8],
    flock: bool,
    owner: u64,
    op: PlockOp,
    range: super::plock::Range,
) -> FileLockCall {
    FileLockCall {
        resource: file.to_vec(),
        flock,
        owner,
        pid: owner as u32,
        op,
        range,
    }
}

fn lock_op(kind: Kind, wait: bool) -> PlockOp {
    PlockOp::Lock { kind, wait }
}

/// Node `n`'s lock owner `owner` (pid = owner) asks; the bus runs.
fn plock(bus: &mut Bus, n: NodeId, owner: u64, op: PlockOp, r: (u64, u64)) -> Option<LockId> {
    let id = bus
        .node(n)
        .plock(call(FILE, false, owner, op, range(r.0, r.1)))
        .unwrap();
    bus.run();
    id
}

fn plock_answers(bus: &mut Bus, n: NodeId) -> Vec<(LockId, PlockResult)> {
    bus.take_done(n)
        .into_iter()
        .filter_map(|c| match c {
            Completion::Plock { req, result } => Some((req.req, result)),
            _ => None,
        })
        .collect()
}

/// The file's table at its master, as (node, owner, start, end, kind).
fn table(bus: &mut Bus) -> Vec<(NodeId, u64, u64, u64, Kind)> {
    table_of(bus, FILE)
}

fn table_of(bus: &mut Bus, file: &[u8]) -> Vec<(NodeId, u64, u64, u64, Kind)> {
    let members: Vec<NodeId> = bus.nodes.keys().copied().collect();
    let m = master_of(file, &members).unwrap();
    bus.node(m)
        .mastered_plocks(file)
        .into_iter()
        .map(|h| {
            (
                h.owner.node,
                h.owner.owner,
                h.range.start,
                h.range.end,
                h.kind,
            )
        })
        .collect()
}

#[test]
fn file_locks_exclude_across_nodes_where_their_ranges_overlap() {
    let mut bus = Bus::new(&ABC);
    let a = plock(&mut bus, A, 1, lock_op(Kind::Write, false), (0, 99)).unwrap();
    assert_eq!(plock_answers(&mut bus, A), vec![(a, PlockResult::Granted)]);
    // B is refused where A holds, and told who holds it.
    let b = plock(&mut bus, B, 2, lock_op(Kind::Write, false), (50, 60)).unwrap();
    let got = plock_answers(&mut bus, B);
    assert!(
        matches!(got[..], [(id, PlockResult::Conflict(h))]
            if id == b && (h.node, h.owner, h.pid, h.start, h.end, h.kind) == (A, 1, 1, 0, 99, Kind::Write)),
        "{got:?}"
    );
    // F_GETLK from B says the same; from A (the holder) nothing.
    let t = plock(&mut bus, B, 2, PlockOp::Test { kind: Kind::Read }, (0, 0)).unwrap();
    assert!(matches!(plock_answers(&mut bus, B)[..], [(id, PlockResult::Conflict(_))] if id == t));
    let t = plock(&mut bus, A, 1, PlockOp::Test { kind: Kind::Write }, (0, 0)).unwrap();
    assert_eq!(plock_answers(&mut bus, A), vec![(t, PlockResult::Free)]);
    // Past A's range, B gets its lock; C waits for B's.
    let b2 = plock(&mut bus, B, 2, lock_op(Kind::Read, false), (100, 200)).unwrap();
    assert_eq!(plock_answers(&mut bus, B), vec![(b2, PlockResult::Granted)]);
    let c = plock(&mut bus, C, 3, lock_op(Kind::Write, true), (150, 150)).unwrap();
    assert!(plock_answers(&mut bus, C).is_empty(), "C should wait");
    assert_eq!(plock(&mut bus, B, 2, PlockOp::Unlock, (100, 200)), None);
    assert_eq!(plock_answers(&mut bus, C), vec![(c, PlockResult::Granted)]);
    assert_eq!(
        table(&mut bus),
        vec![(A, 1, 0, 99, Kind::Write), (C, 3, 150, 150, Kind::Write)]
    );
    // Each holder's own copy is what the master holds of it.
    assert_eq!(bus.node(C).own_plocks(FILE).len(), 1);
    assert!(bus.node(B).own_plocks(FILE).is_empty());
    // A close releases everything of the owner.
    assert_eq!(plock(&mut bus, A, 1, PlockOp::Release, (0, u64::MAX)), None);
    assert_eq!(table(&mut bus), vec![(C, 3, 150, 150, Kind::Write)]);
}

#[test]
fn a_cancelled_wait_is_never_granted() {
    let mut bus = Bus::new(&ABC);
    plock(&mut bus, A, 1, lock_op(Kind::Write, false), (0, 9));
    let b = plock(&mut bus, B, 2, lock_op(Kind::Read, true), (5, 5)).unwrap();
    bus.node(B).plock_cancel(b).unwrap();
    bus.run();
    assert_eq!(
        plock_answers(&mut bus, B),
        vec![(b, PlockResult::Cancelled)]
    );
    plock(&mut bus, A, 1, PlockOp::Unlock, (0, 9));
    assert!(plock_answers(&mut bus, B).is_empty());
    assert!(table(&mut bus).is_empty());
}

#[test]
fn file_locks_outlive_a_view_change_and_a_dead_nodes_locks_go() {
    let mut bus = Bus::new(&ABC);
    plock(&mut bus, A, 1, lock_op(Kind::Write, false), (0, 9));
    plock(&mut bus, C, 3, lock_op(Kind::Read, false), (20, 29));
    let b = plock(&mut bus, B, 2, lock_op(Kind::Write, true), (0, 29)).unwrap();
    bus.take_done(A);
    bus.take_done(C);
    // A fourth node joins (staggered views): every table is rebuilt at
    // its new master from the holders' copies, B's wait sent again.
    bus.join(D, true);
    bus.run();
    assert_eq!(
        table(&mut bus),
        vec![(A, 1, 0, 9, Kind::Write), (C, 3, 20, 29, Kind::Read)]
    );
    let d = plock(&mut bus, D, 4, lock_op(Kind::Read, false), (5, 5)).unwrap();
    assert!(
        matches!(plock_answers(&mut bus, D)[..], [(id, PlockResult::Conflict(h))] if id == d && h.node == A)
    );
    assert!(plock_answers(&mut bus, B).is_empty(), "B still waits");
    // A dies: its lock goes with it; C still holds; B still waits for C.
    bus.depart(A, true);
    bus.run();
    assert_eq!(table(&mut bus), vec![(C, 3, 20, 29, Kind::Read)]);
    assert!(plock_answers(&mut bus, B).is_empty());
    plock(&mut bus, C, 3, PlockOp::Release, (0, u64::MAX));
    assert_eq!(plock_answers(&mut bus, B), vec![(b, PlockResult::Granted)]);
    assert_eq!(table(&mut bus), vec![(B, 2, 0, 29, Kind::Write)]);
}

type PlockStep = (usize, u8, u64, u64, usize);

/// Random file-lock calls on four nodes, random view changes and random
/// delivery orders: no two nodes ever rely on conflicting locks (their
/// own copies), and once quiet every copy is what the master holds.
fn run_plock_steps(ops: Vec<PlockStep>, flock: bool) {
    let file: &[u8] = if flock { FLOCK_FILE } else { FILE };
    let ids = [A, B, C, D];
    let mut bus = Bus::new(&ids);
    let mut waiting: BTreeMap<NodeId, LockId> = BTreeMap::new();
    for (who, what, x, y, pick) in ops {
        let n = ids[who];
        if !bus.nodes.contains_key(&n) {
            bus.join(n, true);
        }
        // a few deliveries in some order, then the call
        for k in 0..(pick % 7) {
            bus.step(pick.wrapping_add(k));
        }
        let r = range(x.min(y), x.max(y));
        let owner = who as u64 + 1;
        let op = match what {
            0 => lock_op(Kind::Read, false),
            1 => lock_op(Kind::Write, false),
            2 => lock_op(Kind::Write, true),
            3 => PlockOp::Unlock,
            4 if bus.nodes.len() > 1 => {
                bus.depart(n, pick % 2 == 0);
                waiting.remove(&n);
                continue;
            }
            4 => continue,
            _ => {
                if let Some(id) = waiting.remove(&n) {
                    bus.node(n).plock_cancel(id).unwrap();
                }
                continue;
            }
        };
        // one waiting request per node (its process is blocked)
        if waiting.contains_key(&n) {
            continue;
        }
        match bus.node(n).plock(call(file, flock, owner, op, r)) {
            Ok(Some(id)) if what == 2 => {
                waiting.insert(n, id);
            }
            Ok(_) => {}
            // a joiner that has not applied its first view yet
            Err(OpError::NotMember) => {}
            Err(e) => panic!("{e}"),
        }
        for m in bus.nodes.keys().copied().collect::<Vec<_>>() {
            for (id, _) in plock_answers(&mut bus, m) {
                if waiting.get(&m) == Some(&id) {
                    waiting.remove(&m);
                }
            }
        }
        check_plock_safety(&bus, file);
    }
    bus.run();
    check_plock_safety(&bus, file);
    // quiet: every node's copy is exactly what the master holds of it
    let mut copies: Vec<(NodeId, u64, u64, u64, Kind)> = bus
        .nodes
        .iter()
        .flat_map(|(n, d)| {
            d.own_plocks(file)
                .into_iter()
                .map(move |h| (*n, h.owner.owner, h.range.start, h.range.end, h.kind))
        })
        .collect();
    copies.sort_by_key(|c| (c.2, c.0, c.1));
    let mut t = table_of(&mut bus, file);
    t.sort_by_key(|c| (c.2, c.0, c.1));
    assert_eq!(copies, t);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn file_locks_stay_exclusive_through_views_and_interleavings(
        ops in proptest::collection::vec((0usize..4, 0u8..6, 0u64..8, 0u64..8, any::<usize>()), 1..40)
    ) {
        run_plock_steps(ops, false);
    }

    #[test]
    fn flocks_stay_exclusive_through_views_and_interleavings(
        ops in proptest::collection::vec((0usize..4, 0u8..6, 0u64..8, 0u64..8, any::<usize>()), 1..40)
    ) {
        run_plock_steps(ops, true);
    }
}

/// No two nodes' own copies hold conflicting locks.
fn check_plock_safety(bus: &Bus, file: &[u8]) {
    let all: Vec<(NodeId, super::plock::Held)> = bus
        .nodes
        .iter()
        .flat_map(|(n, d)| d.own_plocks(file).into_iter().map(move |h| (*n, h)))
        .collect();
    for (i, (na, a)) in all.iter().enumerate() {
        for (nb, b) in &all[i + 1..] {
            let overlap = a.range.start <= b.range.end && b.range.start <= a.range.end;
            let conflict = a.kind == Kind::Write || b.kind == Kind::Write;
            assert!(
                na == nb || !overlap || !conflict,
                "node {na} relies on {a:?} and node {nb} on {b:?}"
            );
        }
    }
}
