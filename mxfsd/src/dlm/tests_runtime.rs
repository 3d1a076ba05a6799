//! The tokio facade and the owner election over in-memory channels, and
//! the DLM over real peer links ([`LinkTransport`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::election::{OwnerElection, Role};
use super::node::{DlmMsg, View};
use super::plock::{FileLockCall, Kind, Range};
use super::runtime::{Dlm, LinkTransport, LockError, Transport};
use super::*;
use crate::wire::{PlockOp, PlockResult};
use Mode::*;

const Q: RequestFlags = RequestFlags { noqueue: false };
const NOQ: RequestFlags = RequestFlags { noqueue: true };
const T: Duration = Duration::from_secs(10);

type Routes = Arc<Mutex<HashMap<NodeId, Dlm>>>;
/// Messages to a node held back (in order) until it is let through.
type Held = Arc<Mutex<HashMap<NodeId, Vec<(NodeId, DlmMsg)>>>>;

/// Delivers straight into the destination's driver: FIFO per pair.
struct Chan {
    me: NodeId,
    routes: Routes,
    held: Held,
}

impl Transport for Chan {
    fn send(&mut self, to: NodeId, msg: DlmMsg) {
        let routes = self.routes.lock().unwrap();
        // a killed node (no route any more) sends nothing either
        if !routes.contains_key(&self.me) {
            return;
        }
        let dst = routes.get(&to).cloned();
        drop(routes);
        if let Some(queue) = self.held.lock().unwrap().get_mut(&to) {
            queue.push((self.me, msg));
            return;
        }
        if let Some(d) = dst {
            d.deliver(self.me, msg);
        }
    }
}

struct Cluster {
    routes: Routes,
    held: Held,
    dlms: Vec<Dlm>,
    tasks: Vec<JoinHandle<()>>,
    view: View,
}

impl Cluster {
    async fn new(ids: &[NodeId]) -> Cluster {
        let routes: Routes = Arc::default();
        let held: Held = Arc::default();
        let mut dlms = Vec::new();
        let mut tasks = Vec::new();
        for &id in ids {
            let (d, t) = Dlm::spawn(
                id,
                Chan {
                    me: id,
                    routes: routes.clone(),
                    held: held.clone(),
                },
            );
            routes.lock().unwrap().insert(id, d.clone());
            dlms.push(d);
            tasks.push(t);
        }
        let mut c = Cluster {
            routes,
            held,
            dlms,
            tasks,
            view: 0,
        };
        c.set_members(ids).await;
        c
    }

    async fn set_members(&mut self, ids: &[NodeId]) {
        self.view += 1;
        for d in &self.dlms {
            if ids.contains(&d.node_id()) {
                d.set_members(self.view, ids).await.unwrap();
            }
        }
    }

    /// Messages to node `i` wait until [`Cluster::let_through`].
    fn hold_back(&self, i: usize) {
        let id = self.dlms[i].node_id();
        self.held.lock().unwrap().insert(id, Vec::new());
    }

    /// Deliver what was held back for node `i`, in order, and stop
    /// holding.
    fn let_through(&self, i: usize) {
        let id = self.dlms[i].node_id();
        let queue = self.held.lock().unwrap().remove(&id).unwrap_or_default();
        for (from, msg) in queue {
            self.dlms[i].deliver(from, msg);
        }
    }

    /// Node `i` dies: its driver stops without telling anyone (no
    /// unlocks reach the others), then the survivors change view.
    async fn kill(&mut self, i: usize) {
        let id = self.dlms[i].node_id();
        self.routes.lock().unwrap().remove(&id);
        self.dlms[i].shutdown();
        let _ = (&mut self.tasks[i]).await;
        let ids: Vec<NodeId> = self
            .dlms
            .iter()
            .map(|d| d.node_id())
            .filter(|n| *n != id)
            .collect();
        self.set_members(&ids).await;
    }
}

const IDS: [NodeId; 3] = [0x11, 0x22, 0x33];

#[tokio::test]
async fn exclusive_counter_across_three_nodes() {
    let c = Cluster::new(&IDS).await;
    let inside = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let mut jobs = Vec::new();
    for d in c.dlms.clone() {
        let (inside, counter) = (inside.clone(), counter.clone());
        jobs.push(tokio::spawn(async move {
            for _ in 0..20 {
                let h = d.lock(b"counter", EX, Q).await.unwrap();
                assert!(!inside.swap(true, Ordering::SeqCst), "two EX holders");
                let v = counter.load(Ordering::SeqCst);
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                counter.store(v + 1, Ordering::SeqCst);
                inside.store(false, Ordering::SeqCst);
                h.unlock();
            }
        }));
    }
    for j in jobs {
        timeout(T, j).await.unwrap().unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 60);
}

#[tokio::test]
async fn basts_noqueue_cancel_and_conversion() {
    let c = Cluster::new(&IDS).await;
    let (a, b, x) = (c.dlms[0].clone(), c.dlms[1].clone(), c.dlms[2].clone());
    // shared PR
    let mut ha = a.lock(b"r", PR, Q).await.unwrap();
    let hb = b.lock(b"r", PR, Q).await.unwrap();
    // NOQUEUE EX refused
    assert_eq!(
        x.lock(b"r", EX, NOQ).await.unwrap_err(),
        LockError::NotGranted
    );
    // a queued EX that gives up (timeout) leaves nothing behind
    assert!(timeout(Duration::from_millis(50), x.lock(b"r", EX, Q))
        .await
        .is_err());
    // A converts to EX: B is told, releases, A gets it
    let conv = tokio::spawn(async move {
        let m = ha.convert(EX, Q).await;
        (ha, m)
    });
    let mut hb = hb;
    let bast = timeout(T, hb.blocked()).await.unwrap().unwrap();
    assert_eq!((bast.granted, bast.requested), (PR, EX));
    hb.unlock();
    let (mut ha, m) = timeout(T, conv).await.unwrap().unwrap();
    assert_eq!(m, Ok(EX));
    assert_eq!(ha.mode(), EX);
    // X queues for PR; A sees the BAST and down-converts, which grants X
    let xw = tokio::spawn(async move { x.lock(b"r", PR, Q).await });
    let bast = timeout(T, ha.blocked()).await.unwrap().unwrap();
    assert_eq!(bast.requested, PR);
    assert_eq!(ha.convert(PR, Q).await, Ok(PR));
    let hx = timeout(T, xw).await.unwrap().unwrap().unwrap();
    assert_eq!(hx.mode(), PR);
    // the abandoned EX request above did not get in anyone's way: B's
    // NOQUEUE PR is granted now
    let hb2 = b.lock(b"r", PR, NOQ).await.unwrap();
    drop((ha, hx, hb2));
    // everything released (drops): EX is free again
    let h = timeout(T, b.lock(b"r", EX, NOQ)).await.unwrap();
    assert!(h.is_ok(), "{h:?}");
}

#[tokio::test]
async fn shutdown_fails_waiters_and_releases_locks() {
    let mut c = Cluster::new(&IDS).await;
    let (a, b) = (c.dlms[0].clone(), c.dlms[1].clone());
    // mastered by the node that stays, so the leavers' last words reach it
    let r = (0..)
        .map(|i| format!("s{i}").into_bytes())
        .find(|n| master_of(n, &IDS) == Some(IDS[2]))
        .unwrap();
    let _ha = a.lock(&r, EX, Q).await.unwrap();
    let bw = tokio::spawn({
        let (b, r) = (b.clone(), r.clone());
        async move { b.lock(&r, EX, Q).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.shutdown();
    let res = timeout(T, bw).await.unwrap().unwrap();
    assert_eq!(res.unwrap_err(), LockError::Shutdown);
    assert_eq!(b.lock(&r, EX, Q).await.unwrap_err(), LockError::Shutdown);
    // a graceful shutdown releases A's lock, and B's withdrawn request
    // is not in the way: C gets EX at once
    a.shutdown();
    let _ = (&mut c.tasks[0]).await;
    let _ = (&mut c.tasks[1]).await;
    let h = timeout(T, c.dlms[2].lock(&r, EX, NOQ)).await.unwrap();
    assert!(h.is_ok(), "{h:?}");
}

#[tokio::test]
async fn a_departed_holder_is_purged_and_waiters_granted() {
    let mut c = Cluster::new(&IDS).await;
    let (a, b, x) = (c.dlms[0].clone(), c.dlms[1].clone(), c.dlms[2].clone());
    let ha = a.lock(b"d", EX, Q).await.unwrap();
    let hb = b.lock(b"held-by-b", PR, Q).await.unwrap();
    let xw = tokio::spawn(async move { x.lock(b"d", EX, Q).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::mem::forget(ha); // A dies holding it
    c.kill(0).await;
    let hx = timeout(T, xw).await.unwrap().unwrap().unwrap();
    assert_eq!(hx.mode(), EX);
    // B's lock survived the re-mastering
    assert_eq!(
        c.dlms[2].lock(b"held-by-b", EX, NOQ).await.unwrap_err(),
        LockError::NotGranted
    );
    drop(hb);
}

async fn elect(dlms: &[Dlm], disk: &Arc<AtomicU64>) -> Vec<(NodeId, Role, OwnerElection)> {
    let mut jobs = Vec::new();
    for d in dlms {
        let (d, disk) = (d.clone(), disk.clone());
        jobs.push(tokio::spawn(async move {
            let mut e = OwnerElection::new(d.clone());
            let role = e.try_acquire(|| disk.load(Ordering::SeqCst)).await.unwrap();
            if let Role::Owner { epoch } = role {
                disk.store(epoch, Ordering::SeqCst);
            }
            (d.node_id(), role, e)
        }));
    }
    let mut out = Vec::new();
    for j in jobs {
        out.push(timeout(T, j).await.unwrap().unwrap());
    }
    out
}

#[tokio::test]
async fn owner_election_one_owner_then_takeover_with_epoch_plus_one() {
    let mut c = Cluster::new(&IDS).await;
    let disk = Arc::new(AtomicU64::new(7));
    let mut res = elect(&c.dlms, &disk).await;
    let owners: Vec<_> = res
        .iter()
        .filter_map(|(n, r, _)| matches!(r, Role::Owner { .. }).then_some((*n, *r)))
        .collect();
    assert_eq!(owners.len(), 1, "{res:?}");
    let (owner, role) = owners[0];
    assert_eq!(role, Role::Owner { epoch: 8 });
    assert_eq!(disk.load(Ordering::SeqCst), 8);
    // clients find the owner (retry: the winner takes its marker just
    // after `owner`)
    for (_, r, e) in &res {
        if let Role::Client { .. } = r {
            let mut found = None;
            for _ in 0..50 {
                found = e.find_owner().await.unwrap();
                if found.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(found, Some(owner));
        }
    }
    // clients queue for a takeover; the owner is told
    let oi = res.iter().position(|(n, _, _)| *n == owner).unwrap();
    let (_, _, mut oe) = res.remove(oi);
    let mut waits = Vec::new();
    for (n, _, mut e) in res {
        let disk = disk.clone();
        waits.push(tokio::spawn(async move {
            let epoch = e.wait_for_ownership(|| disk.load(Ordering::SeqCst)).await;
            (n, epoch, e)
        }));
    }
    assert_eq!(timeout(T, oe.contested()).await.unwrap(), Some(EX));
    // the owner dies
    std::mem::forget(oe);
    let di = c.dlms.iter().position(|d| d.node_id() == owner).unwrap();
    c.kill(di).await;
    // exactly one survivor wins, with epoch + 1
    let mut winner = None;
    let mut rest = Vec::new();
    for w in waits {
        match timeout(Duration::from_millis(500), w).await {
            Ok(r) => {
                let (n, epoch, e) = r.unwrap();
                assert!(winner.is_none(), "two new owners");
                assert_eq!(epoch, Ok(9));
                winner = Some((n, e));
            }
            Err(_) => rest.push(()),
        }
    }
    let (n, e) = winner.expect("a survivor became owner");
    assert_ne!(n, owner);
    assert_eq!(e.epoch(), Some(9));
    assert_eq!(rest.len(), 1);
}

/// Nodes whose DLMs talk over authenticated peer links on 127.0.0.1
/// ([`LinkTransport`]), each linked to every other; sorted by node id.
/// Dropping the returned sender stops the links.
async fn linked_nodes(n: u8) -> (Vec<Dlm>, tokio::sync::watch::Sender<bool>) {
    use crate::peer::{should_connect, Connector, LinkConfig, LinkEvent, Listener, LocalNode};
    let volume = uuid::Uuid::from_bytes([0x5a; 16]);
    let secret = crate::volume_keys::VolumeSecret::new([0x33; 32]);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut nodes = Vec::new();
    for seed in 1..=n {
        let local = LocalNode::new(uuid::Uuid::from_bytes([seed; 16]), volume, "n", 7600).unwrap();
        let cfg = Arc::new(LinkConfig::new(local, &secret));
        let l = Listener::bind(cfg.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        nodes.push((cfg, l));
    }
    nodes.sort_by_key(|(c, _)| c.local().node_id());
    let addrs: Vec<_> = nodes
        .iter()
        .map(|(c, l)| (c.local().node_id(), l.local_addr().unwrap()))
        .collect();
    let (mut dlms, mut ups) = (Vec::new(), Vec::new());
    for (cfg, l) in nodes {
        let me = cfg.local().node_id();
        let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(l.run(ev_tx.clone(), stop_rx.clone()));
        for &(id, addr) in addrs.iter().filter(|(id, _)| should_connect(me, *id)) {
            let c = Connector::new(cfg.clone(), id, addr).unwrap();
            tokio::spawn(c.run(ev_tx.clone(), stop_rx.clone()));
        }
        let (dlm, _) = Dlm::spawn(me, LinkTransport::new());
        let (up_tx, up_rx) = tokio::sync::mpsc::unbounded_channel();
        let d = dlm.clone();
        tokio::spawn(async move {
            while let Some(ev) = ev_rx.recv().await {
                // the DLM has the link before anyone hears it is up
                if let Some(LinkEvent::Up { peer, .. }) = d.link_event(ev) {
                    let _ = up_tx.send(peer.node_id);
                }
            }
        });
        dlms.push(dlm);
        ups.push(up_rx);
    }
    for up in &mut ups {
        let mut peers = std::collections::BTreeSet::new();
        while peers.len() + 1 < usize::from(n) {
            peers.insert(timeout(T, up.recv()).await.unwrap().unwrap());
        }
    }
    (dlms, stop)
}

#[tokio::test]
async fn locks_survive_a_view_change_over_peer_links() {
    let (d, _stop) = linked_nodes(3).await;
    let ids: Vec<NodeId> = d.iter().map(|d| d.node_id()).collect();
    let (a, b, c) = (&d[0], &d[1], &d[2]);
    // both resources move to the joiner C, so the records cross the links
    let mastered_by_c = |tag: &str| {
        (0..)
            .map(|i| format!("{tag}{i}").into_bytes())
            .find(|n| master_of(n, &ids) == Some(ids[2]))
            .unwrap()
    };
    let (r, s) = (mastered_by_c("r"), mastered_by_c("s"));
    for x in [a, b] {
        x.set_members(1, &ids[..2]).await.unwrap();
    }
    let ha = timeout(T, a.lock(&r, EX, Q)).await.unwrap().unwrap();
    let hb = timeout(T, b.lock(&s, PR, Q)).await.unwrap().unwrap();
    let waiter = tokio::spawn({
        let (b, r) = (b.clone(), r.clone());
        async move { b.lock(&r, PR, Q).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    for x in &d {
        x.set_members(2, &ids).await.unwrap();
    }
    // C, the new master, knows both locks in their modes
    async fn noq(d: &Dlm, r: &[u8], m: Mode) -> Result<LockHandle, LockError> {
        timeout(T, d.lock(r, m, NOQ)).await.unwrap()
    }
    assert_eq!(noq(c, &r, CR).await.unwrap_err(), LockError::NotGranted);
    assert_eq!(noq(c, &s, EX).await.unwrap_err(), LockError::NotGranted);
    drop(noq(c, &s, PR).await.unwrap());
    assert_eq!((ha.mode(), hb.mode()), (EX, PR));
    assert!(!waiter.is_finished(), "granted while A holds EX");
    // A releases: the queued waiter is granted, through C
    ha.unlock();
    let hw = timeout(T, waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(hw.mode(), PR);
    assert_eq!(noq(c, &r, EX).await.unwrap_err(), LockError::NotGranted);
    drop(noq(c, &r, PR).await.unwrap());
}

// ---- file locks through the runtime ----

/// Lock owner `owner` (pid = owner) of a node on `resource`.
fn file_call(resource: &[u8], flock: bool, owner: u64, op: PlockOp, range: Range) -> FileLockCall {
    FileLockCall {
        resource: resource.to_vec(),
        flock,
        owner,
        pid: owner as u32,
        op,
        range,
    }
}

#[tokio::test]
async fn a_counter_under_record_locks_from_three_nodes_is_exact() {
    let c = Cluster::new(&IDS).await;
    let inside = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let mut jobs = Vec::new();
    for (i, d) in c.dlms.clone().into_iter().enumerate() {
        for p in 0..2u64 {
            let (inside, counter, d) = (inside.clone(), counter.clone(), d.clone());
            let owner = 100 * i as u64 + p;
            jobs.push(tokio::spawn(async move {
                let lock = PlockOp::Lock {
                    kind: Kind::Write,
                    wait: true,
                };
                // the counter's bytes
                let call = |op| file_call(b"plock:9", false, owner, op, Range::new(0, 7).unwrap());
                for _ in 0..15 {
                    assert_eq!(d.plock(call(lock)).await, Ok(PlockResult::Granted));
                    assert!(!inside.swap(true, Ordering::SeqCst), "two writers");
                    let v = counter.load(Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    counter.store(v + 1, Ordering::SeqCst);
                    inside.store(false, Ordering::SeqCst);
                    d.plock(call(PlockOp::Unlock)).await.unwrap();
                }
            }));
        }
    }
    for j in jobs {
        timeout(T, j).await.unwrap().unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 3 * 2 * 15);
}

#[tokio::test]
async fn a_dropped_wait_for_a_file_lock_is_withdrawn() {
    let c = Cluster::new(&IDS).await;
    let (a, b) = (c.dlms[0].clone(), c.dlms[1].clone());
    let w = |wait| PlockOp::Lock {
        kind: Kind::Write,
        wait,
    };
    let call = |owner, op| file_call(b"flock:3", true, owner, op, Range::WHOLE);
    assert_eq!(a.plock(call(1, w(false))).await, Ok(PlockResult::Granted));
    // B waits, gives up; A lets go: nobody holds it, C gets it at once.
    let waiting = b.plock(call(2, w(true)));
    assert!(timeout(Duration::from_millis(200), waiting).await.is_err());
    // (the withdrawal reaches the master before A's unlock)
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.plock(call(1, PlockOp::Unlock)).await.unwrap();
    let got = timeout(T, c.dlms[2].plock(call(3, w(false))))
        .await
        .unwrap();
    assert_eq!(got, Ok(PlockResult::Granted));
    // A test from A names C.
    let t = a
        .plock(call(1, PlockOp::Test { kind: Kind::Read }))
        .await
        .unwrap();
    assert!(
        matches!(t, PlockResult::Conflict(h) if h.node == IDS[2] && h.owner == 3),
        "{t:?}"
    );
}

/// A file resource mastered by node 2 (`IDS[2]`, C), so that what
/// node 0 (A) sends and receives about it crosses the transport.
fn resource_mastered_by_c(tag: &str) -> Vec<u8> {
    (0..)
        .map(|i| format!("plock:{tag}{i}").into_bytes())
        .find(|r| master_of(r, &IDS) == Some(IDS[2]))
        .unwrap()
}

/// What a test from node C sees of `resource` over `range`: a holder of
/// anything that blocks `kind`.
async fn seen_from_c(c: &Cluster, resource: &[u8], kind: Kind, range: Range) -> PlockResult {
    let test = file_call(resource, false, 99, PlockOp::Test { kind }, range);
    c.dlms[2].plock(test).await.unwrap()
}

fn held_by_a(p: &PlockResult, kind: Kind) -> bool {
    matches!(p, PlockResult::Conflict(h) if h.node == IDS[0] && h.owner == 1 && h.kind == kind)
}

/// A's owner 1 holds a read lock on 0..=99 and B's owner 2 a write lock
/// on 150..=199; the returned call is owner 1's upgrade to a write lock
/// on 0..=199, which must wait for B.
async fn a_reads_b_writes(c: &Cluster, resource: &[u8]) -> FileLockCall {
    let lock = |kind| PlockOp::Lock { kind, wait: false };
    let read = file_call(
        resource,
        false,
        1,
        lock(Kind::Read),
        Range::new(0, 99).unwrap(),
    );
    assert_eq!(c.dlms[0].plock(read).await, Ok(PlockResult::Granted));
    let write = file_call(
        resource,
        false,
        2,
        lock(Kind::Write),
        Range::new(150, 199).unwrap(),
    );
    assert_eq!(c.dlms[1].plock(write).await, Ok(PlockResult::Granted));
    let op = PlockOp::Lock {
        kind: Kind::Write,
        wait: true,
    };
    file_call(resource, false, 1, op, Range::new(0, 199).unwrap())
}

#[tokio::test]
async fn a_withdrawn_upgrade_ends_cancelled_and_keeps_the_read_lock() {
    let c = Cluster::new(&IDS).await;
    let r = resource_mastered_by_c("w");
    let upgrade = a_reads_b_writes(&c, &r).await;
    let (waiting, withdraw) = c.dlms[0].plock_withdrawable(upgrade);
    let waiting = tokio::spawn(waiting);
    withdraw.withdraw();
    let got = timeout(T, waiting).await.unwrap().unwrap();
    assert_eq!(got, Ok(PlockResult::Cancelled));
    // A still holds its read lock at the master, and nothing more
    let low = Range::new(0, 99).unwrap();
    let seen = seen_from_c(&c, &r, Kind::Write, low).await;
    assert!(held_by_a(&seen, Kind::Read), "{seen:?}");
    let seen = seen_from_c(&c, &r, Kind::Read, low).await;
    assert_eq!(seen, PlockResult::Free);
}

#[tokio::test]
async fn a_grant_that_crosses_a_withdrawal_stands() {
    let c = Cluster::new(&IDS).await;
    let r = resource_mastered_by_c("x");
    let upgrade = a_reads_b_writes(&c, &r).await;
    let (waiting, withdraw) = c.dlms[0].plock_withdrawable(upgrade);
    let waiting = tokio::spawn(waiting);
    // The master grants the upgrade when B lets go, but the grant is held
    // on its way to A while A withdraws: the two cross.
    let whole = Range::new(0, 199).unwrap();
    assert!(held_by_a(
        &seen_from_c(&c, &r, Kind::Write, whole).await,
        Kind::Read
    ));
    c.hold_back(0);
    let unlock = file_call(&r, false, 2, PlockOp::Unlock, Range::new(150, 199).unwrap());
    c.dlms[1].plock(unlock).await.unwrap();
    let mut granted = false;
    for _ in 0..200 {
        if held_by_a(&seen_from_c(&c, &r, Kind::Read, whole).await, Kind::Write) {
            granted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(granted, "the master never granted the upgrade");
    withdraw.withdraw();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "answered before the grant arrived");
    c.let_through(0);
    // the call's answer is the grant, and the lock is held over the
    // whole range (undoing the grant by unlocking its range would have
    // taken the read lock on 0..=99 with it)
    let got = timeout(T, waiting).await.unwrap().unwrap();
    assert_eq!(got, Ok(PlockResult::Granted));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for range in [Range::new(0, 99).unwrap(), Range::new(100, 199).unwrap()] {
        let seen = seen_from_c(&c, &r, Kind::Read, range).await;
        assert!(held_by_a(&seen, Kind::Write), "{range:?}: {seen:?}");
    }
}
