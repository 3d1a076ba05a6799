use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use Mode::*;

const R: &[u8] = b"res";
const Q: RequestFlags = RequestFlags { noqueue: false };
const NOQ: RequestFlags = RequestFlags { noqueue: true };

fn id(node: u64, local: u64) -> LockId {
    LockId { node, local }
}

fn grant(lock: LockId, mode: Mode) -> Event {
    Event::Grant {
        lock,
        resource: R.to_vec(),
        mode,
    }
}

fn bast(lock: LockId, granted: Mode, requested: Mode) -> Event {
    Event::Blocking {
        lock,
        resource: R.to_vec(),
        granted,
        requested,
    }
}

impl LockSpace {
    /// Everything the module docs promise about a quiescent lock space.
    fn check_invariants(&self) {
        let mut ids = BTreeSet::new();
        for (name, res) in &self.resources {
            assert!(!res.is_empty(), "empty resource kept");
            let holders: Vec<&Held> = res.holders().collect();
            for (i, a) in holders.iter().enumerate() {
                for b in &holders[i + 1..] {
                    assert!(
                        a.mode.compatible(b.mode),
                        "{:?} {:?} and {:?} {:?} both granted",
                        a.id,
                        a.mode,
                        b.id,
                        b.mode
                    );
                }
            }
            for l in export(res) {
                assert!(ids.insert(l.id), "{:?} twice", l.id);
                assert_eq!(self.index.get(&l.id), Some(name), "index of {:?}", l.id);
            }
            // Nothing grantable is left queued.
            for c in &res.converting {
                assert!(
                    !res.compatible_with_holders(c.requested, Some(c.held.id)),
                    "{:?} could be granted",
                    c.held.id
                );
                assert!(
                    !res.conversion_cycle(c.held.id, None),
                    "cycle at {:?}",
                    c.held.id
                );
            }
            if res.converting.is_empty() {
                if let Some(w) = res.waiting.first() {
                    assert!(!res.compatible_with_holders(w.requested, None));
                }
            }
        }
        assert_eq!(ids.len(), self.index.len());
    }
}

#[test]
fn compatible_requests_are_granted_at_once() {
    let mut ls = LockSpace::new();
    assert_eq!(
        ls.request(R, id(1, 1), PR, Q).unwrap(),
        vec![grant(id(1, 1), PR)]
    );
    assert_eq!(
        ls.request(R, id(2, 1), PR, Q).unwrap(),
        vec![grant(id(2, 1), PR)]
    );
    assert_eq!(
        ls.request(R, id(3, 1), CR, Q).unwrap(),
        vec![grant(id(3, 1), CR)]
    );
    assert_eq!(
        ls.request(R, id(3, 2), NL, Q).unwrap(),
        vec![grant(id(3, 2), NL)]
    );
    assert_eq!(
        ls.request(R, id(1, 1), NL, Q),
        Err(DlmError::Exists(id(1, 1)))
    );
    assert_eq!(ls.request(b"", id(9, 9), NL, Q), Err(DlmError::BadName(0)));
    ls.check_invariants();
}

#[test]
fn waiters_queue_in_order_and_blockers_get_basts() {
    let mut ls = LockSpace::new();
    ls.request(R, id(1, 1), PR, Q).unwrap();
    // EX waits; the PR holder is told once.
    assert_eq!(
        ls.request(R, id(2, 1), EX, Q).unwrap(),
        vec![bast(id(1, 1), PR, EX)]
    );
    // A compatible PR does not overtake the waiting EX.
    assert_eq!(ls.request(R, id(3, 1), PR, Q).unwrap(), vec![]);
    assert_eq!(
        ls.lock_state(id(3, 1)),
        Some(LockState {
            id: id(3, 1),
            granted: None,
            requested: Some(PR)
        })
    );
    // Release: EX granted; the PR behind it stays queued and EX is told.
    assert_eq!(
        ls.unlock(id(1, 1)).unwrap(),
        vec![grant(id(2, 1), EX), bast(id(2, 1), EX, PR)]
    );
    assert_eq!(ls.unlock(id(2, 1)).unwrap(), vec![grant(id(3, 1), PR)]);
    ls.check_invariants();
    ls.unlock(id(3, 1)).unwrap();
    assert_eq!(
        ls.resource_names().count(),
        0,
        "empty resources are dropped"
    );
}

#[test]
fn noqueue_fails_at_once_and_leaves_nothing() {
    let mut ls = LockSpace::new();
    ls.request(R, id(1, 1), EX, Q).unwrap();
    assert_eq!(ls.request(R, id(2, 1), CR, NOQ), Err(DlmError::NotGranted));
    assert_eq!(ls.lock_state(id(2, 1)), None);
    assert_eq!(ls.request(b"other", id(2, 2), EX, NOQ).unwrap().len(), 1);
    ls.request(R, id(3, 1), NL, NOQ).unwrap();
    assert_eq!(ls.convert(id(3, 1), PR, NOQ), Err(DlmError::NotGranted));
    assert_eq!(ls.lock_state(id(3, 1)).unwrap().granted, Some(NL));
    ls.check_invariants();
}

#[test]
fn conversions_up_down_and_ahead_of_waiters() {
    let mut ls = LockSpace::new();
    ls.request(R, id(1, 1), PR, Q).unwrap();
    ls.request(R, id(2, 1), PR, Q).unwrap();
    ls.request(R, id(3, 1), EX, Q).unwrap(); // waits
                                             // Down-conversion is immediate; CR still blocks the EX waiter, and the
                                             // holder, whose mode changed, is told so again.
    assert_eq!(
        ls.convert(id(1, 1), CR, Q).unwrap(),
        vec![grant(id(1, 1), CR), bast(id(1, 1), CR, EX)]
    );
    // Up-conversion waits for the other PR; it goes before the EX waiter.
    let ev = ls.convert(id(1, 1), PW, Q).unwrap();
    assert_eq!(ev, vec![bast(id(2, 1), PR, PW)]);
    assert_eq!(ls.unlock(id(2, 1)).unwrap()[0], grant(id(1, 1), PW));
    assert_eq!(ls.lock_state(id(3, 1)).unwrap().granted, None);
    // Converting a lock that is already converting or waiting is refused.
    assert!(matches!(
        ls.convert(id(3, 1), NL, Q),
        Err(DlmError::WrongState(..))
    ));
    assert_eq!(ls.unlock(id(1, 1)).unwrap()[0], grant(id(3, 1), EX));
    ls.check_invariants();
}

#[test]
fn the_classic_conversion_deadlock_is_refused() {
    let mut ls = LockSpace::new();
    ls.request(R, id(1, 1), PR, Q).unwrap();
    ls.request(R, id(2, 1), PR, Q).unwrap();
    ls.convert(id(1, 1), EX, Q).unwrap(); // waits for 2's PR
                                          // 2 converting to EX would wait for 1's PR while 1 waits for 2.
    assert_eq!(
        ls.convert(id(2, 1), EX, Q),
        Err(DlmError::ConversionDeadlock)
    );
    assert_eq!(ls.lock_state(id(2, 1)).unwrap().granted, Some(PR));
    ls.check_invariants();
    // 2 steps aside (down to NL): 1 gets EX.
    let ev = ls.convert(id(2, 1), NL, Q).unwrap();
    assert_eq!(ev, vec![grant(id(2, 1), NL), grant(id(1, 1), EX)]);
    ls.check_invariants();
}

#[test]
fn cancel_waiting_and_converting() {
    let mut ls = LockSpace::new();
    ls.request(R, id(1, 1), PR, Q).unwrap();
    ls.request(R, id(2, 1), EX, Q).unwrap();
    ls.request(R, id(3, 1), PR, Q).unwrap(); // behind the EX
                                             // Cancelling the head lets the compatible PR through.
    assert_eq!(
        ls.cancel(id(2, 1)).unwrap(),
        vec![
            Event::Cancelled {
                lock: id(2, 1),
                resource: R.to_vec(),
                mode: None
            },
            grant(id(3, 1), PR)
        ]
    );
    ls.convert(id(1, 1), EX, Q).unwrap();
    assert_eq!(
        ls.cancel(id(1, 1)).unwrap(),
        vec![Event::Cancelled {
            lock: id(1, 1),
            resource: R.to_vec(),
            mode: Some(PR)
        }]
    );
    assert_eq!(ls.lock_state(id(1, 1)).unwrap().granted, Some(PR));
    assert!(matches!(ls.cancel(id(1, 1)), Err(DlmError::WrongState(..))));
    assert_eq!(ls.cancel(id(8, 8)), Err(DlmError::NoSuchLock(id(8, 8))));
    // unlock of a waiting request is refused (cancel it)
    ls.request(R, id(4, 1), EX, Q).unwrap();
    assert!(matches!(ls.unlock(id(4, 1)), Err(DlmError::WrongState(..))));
    ls.check_invariants();
}

#[test]
fn purge_promotes_waiters() {
    let mut ls = LockSpace::new();
    ls.request(R, id(1, 1), EX, Q).unwrap();
    ls.request(b"other", id(1, 2), PR, Q).unwrap();
    ls.request(R, id(2, 1), PR, Q).unwrap();
    ls.request(R, id(3, 1), PR, Q).unwrap();
    ls.request(R, id(1, 3), EX, Q).unwrap(); // node 1 also waits
    let ev = ls.purge_node(1);
    assert_eq!(ev, vec![grant(id(2, 1), PR), grant(id(3, 1), PR)]);
    assert_eq!(ls.lock_state(id(1, 2)), None);
    assert_eq!(ls.resource_names().collect::<Vec<_>>(), vec![R]);
    ls.check_invariants();
}

#[test]
fn export_and_import_move_a_resource_between_masters() {
    let mut a = LockSpace::new();
    a.request(R, id(1, 1), PR, Q).unwrap();
    a.request(R, id(2, 1), PR, Q).unwrap();
    a.convert(id(1, 1), EX, Q).unwrap();
    a.request(R, id(3, 1), CR, Q).unwrap();
    let locks = a.export_resource(R).unwrap();
    assert_eq!(locks.len(), 3);
    assert_eq!(a.lock_state(id(1, 1)), None);
    let mut b = LockSpace::new();
    // The new master re-announces blockers (its BAST memory is fresh).
    let ev = b.import_resource(R, locks.clone()).unwrap();
    assert_eq!(ev, vec![bast(id(2, 1), PR, EX)]);
    assert_eq!(b.lock_state(id(1, 1)), Some(locks[1].clone()));
    b.check_invariants();
    assert_eq!(b.unlock(id(2, 1)).unwrap()[0], grant(id(1, 1), EX));
    // Inconsistent state is refused.
    let bad = vec![
        LockState {
            id: id(5, 1),
            granted: Some(EX),
            requested: None,
        },
        LockState {
            id: id(6, 1),
            granted: Some(PR),
            requested: None,
        },
    ];
    assert!(matches!(
        LockSpace::new().import_resource(R, bad),
        Err(DlmError::BadImport(_))
    ));
    let cyc = vec![
        LockState {
            id: id(5, 1),
            granted: Some(PR),
            requested: Some(EX),
        },
        LockState {
            id: id(6, 1),
            granted: Some(PR),
            requested: Some(EX),
        },
    ];
    assert!(matches!(
        LockSpace::new().import_resource(R, cyc),
        Err(DlmError::BadImport(_))
    ));
}

// ---- property: random operation sequences ----

#[derive(Debug, Clone)]
enum Op {
    Request {
        res: u8,
        node: u64,
        mode: Mode,
        noqueue: bool,
    },
    Convert {
        pick: prop::sample::Index,
        mode: Mode,
        noqueue: bool,
    },
    Cancel(prop::sample::Index),
    Unlock(prop::sample::Index),
    Purge(u64),
}

fn arb_mode() -> impl Strategy<Value = Mode> {
    (0u8..6).prop_map(|m| Mode::from_u8(m).unwrap())
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..2, 1u64..4, arb_mode(), prop::bool::weighted(0.2))
            .prop_map(|(res, node, mode, noqueue)| Op::Request { res, node, mode, noqueue }),
        3 => (any::<prop::sample::Index>(), arb_mode(), prop::bool::weighted(0.2))
            .prop_map(|(pick, mode, noqueue)| Op::Convert { pick, mode, noqueue }),
        1 => any::<prop::sample::Index>().prop_map(Op::Cancel),
        3 => any::<prop::sample::Index>().prop_map(Op::Unlock),
        1 => (1u64..4).prop_map(Op::Purge),
    ]
}

/// Replays events into what each lock holds, checking they make sense.
fn apply(events: &[Event], held: &mut HashMap<LockId, Mode>, pending: &mut BTreeSet<LockId>) {
    for e in events {
        match e {
            Event::Grant { lock, mode, .. } => {
                held.insert(*lock, *mode);
                pending.remove(lock);
            }
            Event::Cancelled { lock, mode, .. } => {
                pending.remove(lock);
                match mode {
                    Some(m) => assert_eq!(held.get(lock), Some(m)),
                    None => assert!(!held.contains_key(lock)),
                }
            }
            Event::Blocking {
                lock,
                granted,
                requested,
                ..
            } => {
                assert_eq!(held.get(lock), Some(granted), "BAST to a non-holder");
                assert!(!granted.compatible(*requested));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_invariants_and_drain(ops in proptest::collection::vec(arb_op(), 1..60)) {
        let mut ls = LockSpace::new();
        let mut next = 0u64;
        let mut live: Vec<LockId> = Vec::new();
        // what the events said each lock holds, and requests not answered yet
        let mut held: HashMap<LockId, Mode> = HashMap::new();
        let mut pending: BTreeSet<LockId> = BTreeSet::new();
        for op in ops {
            let events = match op {
                Op::Request { res, node, mode, noqueue } => {
                    next += 1;
                    let lock = id(node, next);
                    let name = [b'r', res];
                    match ls.request(&name, lock, mode, RequestFlags { noqueue }) {
                        Ok(ev) => {
                            live.push(lock);
                            pending.insert(lock);
                            ev
                        }
                        Err(e) => {
                            prop_assert_eq!(e, DlmError::NotGranted);
                            prop_assert!(noqueue);
                            vec![]
                        }
                    }
                }
                Op::Convert { pick, mode, noqueue } if !live.is_empty() => {
                    let lock = live[pick.index(live.len())];
                    match ls.convert(lock, mode, RequestFlags { noqueue }) {
                        Ok(ev) => {
                            pending.insert(lock);
                            ev
                        }
                        Err(DlmError::NotGranted) => { prop_assert!(noqueue); vec![] }
                        Err(DlmError::ConversionDeadlock) | Err(DlmError::WrongState(..)) => vec![],
                        Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                    }
                }
                Op::Cancel(pick) if !live.is_empty() => {
                    let lock = live[pick.index(live.len())];
                    match ls.cancel(lock) {
                        Ok(ev) => {
                            if ls.lock_state(lock).is_none() {
                                live.retain(|l| *l != lock);
                            }
                            ev
                        }
                        Err(_) => vec![],
                    }
                }
                Op::Unlock(pick) if !live.is_empty() => {
                    let lock = live[pick.index(live.len())];
                    match ls.unlock(lock) {
                        Ok(ev) => {
                            live.retain(|l| *l != lock);
                            held.remove(&lock);
                            pending.remove(&lock);
                            ev
                        }
                        Err(_) => vec![],
                    }
                }
                Op::Purge(node) => {
                    live.retain(|l| l.node != node);
                    held.retain(|l, _| l.node != node);
                    pending.retain(|l| l.node != node);
                    let ev = ls.purge_node(node);
                    for e in &ev {
                        if let Event::Grant { lock, .. } | Event::Blocking { lock, .. } = e {
                            prop_assert_ne!(lock.node, node, "event for a purged node");
                        }
                    }
                    ev
                }
                _ => vec![],
            };
            apply(&events, &mut held, &mut pending);
            ls.check_invariants();
            // The events agree with the engine's state.
            for l in &live {
                let st = ls.lock_state(*l).unwrap();
                prop_assert_eq!(st.granted, held.get(l).copied(), "{:?}", l);
                prop_assert_eq!(st.requested.is_some(), pending.contains(l), "{:?}", l);
            }
        }
        // Drain: release plain granted locks one by one; every queued
        // request must end up granted, and there must always be a plain
        // granted lock to release while anything is queued.
        loop {
            let plain = live.iter().copied().find(|l| {
                let st = ls.lock_state(*l).unwrap();
                st.granted.is_some() && st.requested.is_none()
            });
            let Some(lock) = plain else { break };
            let ev = ls.unlock(lock).unwrap();
            live.retain(|l| *l != lock);
            held.remove(&lock);
            apply(&ev, &mut held, &mut pending);
            ls.check_invariants();
        }
        prop_assert!(pending.is_empty(), "never granted: {:?}", pending);
        prop_assert!(live.is_empty());
        prop_assert_eq!(ls.resource_names().count(), 0);
    }
}
