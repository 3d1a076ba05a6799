//! Peer links over 127.0.0.1: setup, refusals, services.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::backoff::Backoff;
use super::link::{accept_link, connect_link, PeerLink};
use super::*;
use crate::volume_keys::VolumeSecret;
use crate::wire::{FileOp, FileOpReply, Heartbeat, Hello, Message, MAX_FRAME};

const VOLUME: Uuid = Uuid::from_bytes([0x5a; 16]);
/// Generous: a loaded 2-core test machine.
const WAIT: Duration = Duration::from_secs(20);

fn secret() -> VolumeSecret {
    VolumeSecret::new([0x33; 32])
}

fn node(seed: u8, volume: Uuid) -> LocalNode {
    let mut b = [seed; 16];
    b[15] = seed.wrapping_mul(7);
    LocalNode::new(Uuid::from_bytes(b), volume, &format!("node{seed}"), 7600).expect("non-zero id")
}

/// Two nodes of VOLUME, the lower id first.
fn lo_hi() -> (LocalNode, LocalNode) {
    let (a, b) = (node(1, VOLUME), node(2, VOLUME));
    if a.node_id < b.node_id {
        (a, b)
    } else {
        (b, a)
    }
}

fn cfg(n: LocalNode, s: &VolumeSecret) -> LinkConfig {
    LinkConfig::new(n, s)
}

/// `lo` dials `hi` (expecting node `expect`); both results.
async fn link_pair(
    lo: &LinkConfig,
    hi: &LinkConfig,
    expect: u64,
) -> (Result<PeerLink, PeerError>, Result<PeerLink, PeerError>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accept = async {
        let (s, _) = l.accept().await?;
        accept_link(s, hi).await
    };
    tokio::time::timeout(WAIT, async {
        tokio::join!(connect_link(lo, addr, expect), accept)
    })
    .await
    .expect("setup must not hang")
}

fn file_op(len: usize) -> Message {
    Message::FileOp(FileOp {
        owner_epoch: 1,
        request_id: 2,
        origin: Default::default(),
        opcode: 3,
        payload: (0..len).map(|i| (i % 253) as u8).collect(),
    })
}

fn hb(counter: u64) -> Message {
    Message::Heartbeat(Heartbeat {
        node_id: 1,
        generation: 2,
        counter,
        owner_epoch: 4,
    })
}

#[test]
fn lower_id_connects() {
    assert!(should_connect(1, 2));
    assert!(!should_connect(2, 1));
    assert!(!should_connect(5, 5));
}

#[tokio::test]
async fn messages_both_ways_including_a_frame_near_max() {
    let (lo, hi) = lo_hi();
    let (lo_id, hi_id) = (lo.node_id, hi.node_id);
    let (clo, chi) = (cfg(lo.clone(), &secret()), cfg(hi.clone(), &secret()));
    let (a, b) = link_pair(&clo, &chi, hi_id).await;
    let (mut a, mut b) = (a.expect("connector"), b.expect("acceptor"));
    assert_eq!(a.peer().node_id, hi_id);
    assert_eq!(a.peer().node_uuid, hi.uuid);
    assert_eq!(a.peer().hostname, hi.hostname);
    assert_eq!(b.peer().node_id, lo_id);
    assert_eq!(b.peer().node_uuid, lo.uuid);

    // small, then one frame of MAX_FRAME - 100 bytes (32 records), then small
    let big = file_op(MAX_FRAME - 130);
    assert!(big.encode().unwrap().len() > MAX_FRAME - 200);
    let sent = [hb(1), big.clone(), hb(2)];
    let (r1, r2) = tokio::join!(
        async {
            for m in &sent {
                a.send(m).await?;
            }
            Ok::<_, PeerError>(())
        },
        async {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(b.recv().await?);
            }
            Ok::<_, PeerError>(got)
        }
    );
    r1.unwrap();
    assert_eq!(r2.unwrap(), sent.to_vec());

    // the other way, with the halves split into two tasks
    let reply = Message::FileOpReply(FileOpReply {
        owner_epoch: 1,
        request_id: 2,
        errno: 0,
        payload: vec![0xee; MAX_FRAME - 200],
    });
    let (_, mut btx, _brx) = b.split();
    let r = reply.clone();
    let send = tokio::spawn(async move { btx.send(&r).await });
    assert_eq!(a.recv().await.unwrap(), reply);
    send.await.unwrap().unwrap();

    // an oversized message is refused by the sender, not sent
    assert!(matches!(
        a.send(&file_op(MAX_FRAME)).await,
        Err(PeerError::Wire(_))
    ));
}

async fn assert_both_fail_handshake(lo: LinkConfig, hi: LinkConfig, expect: u64) {
    let (a, b) = link_pair(&lo, &hi, expect).await;
    assert!(
        matches!(a, Err(PeerError::Handshake(_))),
        "connector: {a:?}"
    );
    assert!(matches!(b, Err(PeerError::Handshake(_))), "acceptor: {b:?}");
}

#[tokio::test]
async fn wrong_secret_fails_on_both_sides() {
    let (lo, hi) = lo_hi();
    let id = hi.node_id;
    assert_both_fail_handshake(
        cfg(lo, &secret()),
        cfg(hi, &VolumeSecret::new([0x34; 32])),
        id,
    )
    .await;
}

#[tokio::test]
async fn wrong_volume_fails_on_both_sides() {
    let (lo, hi) = lo_hi();
    let other = Uuid::from_bytes([0x5b; 16]);
    let hi = LocalNode::new(hi.uuid, other, "other", 7600).unwrap();
    let id = hi.node_id;
    assert_both_fail_handshake(cfg(lo, &secret()), cfg(hi, &secret()), id).await;
}

async fn garbage_client(addr: SocketAddr, bytes: Vec<u8>, linger: bool) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = s.write_all(&bytes).await;
    if linger {
        let mut sink = [0u8; 1024];
        while s.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
    }
}

#[tokio::test]
async fn garbage_clients_get_errors() {
    let (_, hi) = lo_hi();
    let mut chi = cfg(hi, &secret());
    chi.setup_timeout = Duration::from_secs(1);
    // (bytes, true if the setup should run into its deadline: a record
    // header promising bytes that never come)
    let mut cases: Vec<(Vec<u8>, bool)> = vec![
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false),
        (vec![0, 0], false),
        (vec![0xff, 0xff, 1, 2, 3], false),
        (vec![0, 48], true),
    ];
    // a record of the right size for the first handshake message, but junk
    let mut fake = vec![0, 48];
    fake.extend((0..48u8).map(|i| i.wrapping_mul(37)));
    cases.push((fake, false));
    cases.push((
        (0..5000u32).map(|i| (i * 7919 % 256) as u8).collect(),
        false,
    ));
    for (bytes, times_out) in cases {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(garbage_client(addr, bytes.clone(), true));
        let (s, _) = l.accept().await.unwrap();
        let r = tokio::time::timeout(WAIT, accept_link(s, &chi))
            .await
            .expect("no hang");
        let e = r.expect_err("garbage made a link");
        let ok = if times_out {
            matches!(e, PeerError::Timeout(_))
        } else {
            matches!(e, PeerError::Handshake(_))
        };
        assert!(ok, "{:?}: {e:?}", &bytes[..bytes.len().min(8)]);
        client.abort();
    }
    // a client that says nothing runs into the deadline
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    let e = accept_link(s, &chi).await.expect_err("silence made a link");
    assert!(matches!(e, PeerError::Timeout(_)), "{e:?}");
}

#[tokio::test]
async fn node_id_that_is_not_the_uuid_hash_is_refused_on_both_sides() {
    let (lo, hi) = lo_hi();
    let hi_id = hi.node_id;
    // a node claiming id 1 (lower than anyone) for a uuid that hashes elsewhere
    let forged = LocalNode {
        node_id: 1,
        ..lo.clone()
    };
    let (a, b) = link_pair(&cfg(forged, &secret()), &cfg(hi, &secret()), hi_id).await;
    assert!(
        matches!(
            b,
            Err(PeerError::Identity(IdentityError::NodeIdMismatch {
                claimed: 1,
                ..
            }))
        ),
        "acceptor: {b:?}"
    );
    match a {
        Err(PeerError::Goodbye(reason)) => assert!(reason.contains("FNV-1a"), "{reason}"),
        other => panic!("connector: {other:?}"),
    }
}

#[tokio::test]
async fn wrong_role_and_unexpected_node_are_refused() {
    let (lo, hi) = lo_hi();
    let (lo_id, hi_id) = (lo.node_id, hi.node_id);
    let (clo, chi) = (cfg(lo, &secret()), cfg(hi, &secret()));
    // the higher id does not dial
    let e = connect_link(&chi, "127.0.0.1:9".parse().unwrap(), lo_id).await;
    assert!(matches!(
        e,
        Err(PeerError::Identity(IdentityError::WrongRole { .. }))
    ));
    assert!(Connector::new(Arc::new(chi.clone()), lo_id, "127.0.0.1:9".parse().unwrap()).is_err());

    // the higher dials anyway, claiming to expect an even higher node:
    // the lower refuses the role, the higher refuses whom it reached
    let (a, b) = link_pair(&chi, &clo, u64::MAX).await;
    assert!(
        matches!(
            &b,
            Err(PeerError::Identity(IdentityError::WrongRole { .. }))
        ),
        "acceptor: {b:?}"
    );
    assert!(
        matches!(
            &a,
            Err(PeerError::Identity(IdentityError::UnexpectedNode { .. }) | PeerError::Goodbye(_))
        ),
        "connector: {a:?}"
    );

    // the lower reached another node than discovery said
    let other = node(3, VOLUME);
    let expect = other.node_id.max(lo_id + 1);
    if expect != hi_id {
        let (a, b) = link_pair(&clo, &chi, expect).await;
        assert!(
            matches!(
                a,
                Err(PeerError::Identity(IdentityError::UnexpectedNode { .. }))
            ),
            "connector: {a:?}"
        );
        assert!(matches!(b, Err(PeerError::Goodbye(_))), "acceptor: {b:?}");
    }
}

fn hello_of(n: &LocalNode) -> Hello {
    Hello {
        node_id: n.node_id,
        node_uuid: *n.uuid.as_bytes(),
        volume_uuid: *n.volume.as_bytes(),
        tcp_port: 1,
        min_version: wire::VERSION,
        max_version: wire::VERSION,
        nonce: [0; 32],
        hostname: String::new(),
    }
}

#[test]
fn identity_checks() {
    let (lo, hi) = lo_hi();
    let init = Role::Initiator {
        expected: hi.node_id,
    };
    assert_eq!(check_peer(&lo, init, &hello_of(&hi)), Ok(()));
    assert_eq!(check_peer(&hi, Role::Responder, &hello_of(&lo)), Ok(()));
    assert_eq!(
        check_peer(&hi, Role::Responder, &hello_of(&hi)),
        Err(IdentityError::SelfConnection)
    );
    // same id as ours, another uuid: only an FNV collision makes this, so
    // forge our own id to equal the peer's (consistent) one
    let twin = LocalNode {
        node_id: hi.node_id,
        ..lo.clone()
    };
    assert!(matches!(
        check_peer(&twin, Role::Responder, &hello_of(&hi)),
        Err(IdentityError::DuplicateNodeId { .. })
    ));
    let mut h = hello_of(&lo);
    h.volume_uuid = [0; 16];
    assert!(matches!(
        check_peer(&hi, Role::Responder, &h),
        Err(IdentityError::Volume(_))
    ));
    let mut h = hello_of(&lo);
    h.min_version = wire::VERSION + 1;
    h.max_version = wire::VERSION + 2;
    assert!(matches!(
        check_peer(&hi, Role::Responder, &h),
        Err(IdentityError::Version { .. })
    ));
    let mut h = hello_of(&lo);
    h.node_id ^= 1;
    assert!(matches!(
        check_peer(&hi, Role::Responder, &h),
        Err(IdentityError::NodeIdMismatch { .. })
    ));
}

async fn next(ev: &mut mpsc::Receiver<LinkEvent>) -> LinkEvent {
    tokio::time::timeout(WAIT, ev.recv())
        .await
        .expect("an event in time")
        .expect("the service is still running")
}

async fn expect_up(ev: &mut mpsc::Receiver<LinkEvent>, node_id: u64) -> LinkHandle {
    match next(ev).await {
        LinkEvent::Up { peer, handle } => {
            assert_eq!(peer.node_id, node_id);
            assert_eq!(handle.node_id(), node_id);
            handle
        }
        e => panic!("expected Up, got {e:?}"),
    }
}

async fn expect_down(ev: &mut mpsc::Receiver<LinkEvent>, node_id: u64) -> PeerError {
    match next(ev).await {
        LinkEvent::Down { node_id: n, reason } => {
            assert_eq!(n, node_id);
            reason
        }
        e => panic!("expected Down, got {e:?}"),
    }
}

async fn expect_message(ev: &mut mpsc::Receiver<LinkEvent>, node_id: u64) -> Message {
    match next(ev).await {
        LinkEvent::Message {
            node_id: n,
            message,
        } => {
            assert_eq!(n, node_id);
            message
        }
        e => panic!("expected a message, got {e:?}"),
    }
}

fn spawn_listener(
    l: Listener,
) -> (
    mpsc::Receiver<LinkEvent>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(64);
    let (stop, stop_rx) = watch::channel(false);
    (rx, stop, tokio::spawn(l.run(tx, stop_rx)))
}

#[tokio::test]
async fn connector_reconnects_after_the_listener_restarts() {
    let (lo, hi) = lo_hi();
    let (lo_id, hi_id) = (lo.node_id, hi.node_id);
    let clo = Arc::new(cfg(lo, &secret()));
    let chi = Arc::new(cfg(hi, &secret()));

    let l = Listener::bind(chi.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let (mut hi_ev, hi_stop, hi_task) = spawn_listener(l);

    let (lo_tx, mut lo_ev) = mpsc::channel(64);
    let (lo_stop, lo_stop_rx) = watch::channel(false);
    let fast = Backoff::with_seed(Duration::from_millis(20), Duration::from_millis(300), 7);
    let connector = Connector::new(clo, hi_id, addr).unwrap().with_backoff(fast);
    let lo_task = tokio::spawn(connector.run(lo_tx, lo_stop_rx));

    let to_hi = expect_up(&mut lo_ev, hi_id).await;
    let to_lo = expect_up(&mut hi_ev, lo_id).await;
    to_hi.send(&hb(1)).await.unwrap();
    assert_eq!(expect_message(&mut hi_ev, lo_id).await, hb(1));
    to_lo.send(&hb(2)).await.unwrap();
    assert_eq!(expect_message(&mut lo_ev, hi_id).await, hb(2));

    // the accepting side goes away: both see the link down, with reasons
    hi_stop.send(true).unwrap();
    tokio::time::timeout(WAIT, hi_task).await.unwrap().unwrap();
    assert!(matches!(
        expect_down(&mut hi_ev, lo_id).await,
        PeerError::Stopped(service::SHUTTING_DOWN)
    ));
    match expect_down(&mut lo_ev, hi_id).await {
        PeerError::Goodbye(r) => assert_eq!(r, service::SHUTTING_DOWN),
        e => panic!("{e:?}"),
    }
    assert!(matches!(to_hi.send(&hb(3)).await, Err(PeerError::Closed)));

    // ...and comes back on the same port: the connector finds it again
    let l = Listener::bind(chi, addr).await.unwrap();
    let (mut hi_ev, hi_stop, hi_task) = spawn_listener(l);
    let to_hi = expect_up(&mut lo_ev, hi_id).await;
    let _to_lo = expect_up(&mut hi_ev, lo_id).await;
    to_hi.send(&hb(4)).await.unwrap();
    assert_eq!(expect_message(&mut hi_ev, lo_id).await, hb(4));

    // clean shutdown of the dialling side: it says goodbye and returns
    lo_stop.send(true).unwrap();
    tokio::time::timeout(WAIT, lo_task).await.unwrap().unwrap();
    assert!(matches!(
        expect_down(&mut lo_ev, hi_id).await,
        PeerError::Stopped(service::SHUTTING_DOWN)
    ));
    match expect_down(&mut hi_ev, lo_id).await {
        PeerError::Goodbye(r) => assert_eq!(r, service::SHUTTING_DOWN),
        e => panic!("{e:?}"),
    }
    hi_stop.send(true).unwrap();
    tokio::time::timeout(WAIT, hi_task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_new_link_from_a_node_replaces_its_old_one() {
    let (lo, hi) = lo_hi();
    let (lo_id, hi_id) = (lo.node_id, hi.node_id);
    let clo = cfg(lo, &secret());
    let chi = Arc::new(cfg(hi, &secret()));
    let l = Listener::bind(chi, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let (mut ev, stop, task) = spawn_listener(l);

    let mut first = connect_link(&clo, addr, hi_id).await.unwrap();
    expect_up(&mut ev, lo_id).await;
    let mut second = connect_link(&clo, addr, hi_id).await.unwrap();
    assert!(matches!(
        expect_down(&mut ev, lo_id).await,
        PeerError::Stopped(service::REPLACED)
    ));
    let h = expect_up(&mut ev, lo_id).await;
    match tokio::time::timeout(WAIT, first.recv()).await.unwrap() {
        Err(PeerError::Goodbye(r)) => assert_eq!(r, service::REPLACED),
        r => panic!("{r:?}"),
    }
    h.send(&hb(9)).await.unwrap();
    assert_eq!(second.recv().await.unwrap(), hb(9));
    stop.send(true).unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn listener_survives_garbage_and_still_accepts() {
    let (lo, hi) = lo_hi();
    let (lo_id, hi_id) = (lo.node_id, hi.node_id);
    let clo = cfg(lo, &secret());
    let l = Listener::bind(Arc::new(cfg(hi, &secret())), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let (mut ev, stop, task) = spawn_listener(l);
    for i in 0..5u8 {
        garbage_client(addr, vec![i; 100 * usize::from(i)], false).await;
    }
    // a wrong secret is refused, and reaches nothing
    let bad = cfg(node(1, VOLUME), &VolumeSecret::new([1; 32]));
    if bad.local().node_id() < hi_id {
        assert!(matches!(
            connect_link(&bad, addr, hi_id).await,
            Err(PeerError::Handshake(_))
        ));
    }
    let mut link = connect_link(&clo, addr, hi_id).await.unwrap();
    let h = expect_up(&mut ev, lo_id).await;
    h.send(&hb(5)).await.unwrap();
    assert_eq!(link.recv().await.unwrap(), hb(5));
    stop.send(true).unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(matches!(
        expect_down(&mut ev, lo_id).await,
        PeerError::Stopped(_)
    ));
    assert!(ev.recv().await.is_none(), "no other event");
}
