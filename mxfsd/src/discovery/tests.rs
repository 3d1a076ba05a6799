//! The runtime on loopback: real sockets, multicast on `lo` (the group
//! joined on 127.0.0.1, IP_MULTICAST_IF 127.0.0.1, so nothing leaves the
//! host), a 100 ms interval.  Each test has its own port and a random
//! volume, so tests running at once do not hear each other.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};
use uuid::Uuid;

use super::runtime::DEFAULT_GROUP;
use super::table::PeerInfo;
use super::*;
use crate::volume_keys::{KeyPurpose, VolumeSecret};
use crate::wire::announce::{self, AnnouncedRole, Announcement};

const INTERVAL: Duration = Duration::from_millis(100);
/// Generous: two shared cores, other builds running.
const WITHIN: Duration = Duration::from_secs(5);

fn config(port: u16) -> Config {
    Config {
        group: SocketAddrV4::new(*DEFAULT_GROUP.ip(), port),
        interface: Some(Ipv4Addr::LOCALHOST),
        // a loaded test machine may miss a few ticks: losing a peer is
        // tested on purpose only
        timeout: Duration::from_secs(1),
        ..Config::with_interval(INTERVAL)
    }
}

fn volume() -> [u8; 16] {
    *Uuid::new_v4().as_bytes()
}

fn local(name: &str, volume: [u8; 16], tcp_port: u16) -> Local {
    Local {
        node_uuid: Uuid::new_v4(),
        volume_uuid: volume,
        tcp_port,
        hostname: name.into(),
        role: AnnouncedRole::Joining,
        owner_epoch: 0,
    }
}

struct Node {
    d: Discovery,
    rx: mpsc::Receiver<Event>,
    local: Local,
}

async fn node(port: u16, local: Local, secret: &VolumeSecret) -> Node {
    let (tx, rx) = mpsc::channel(64);
    let d = start(config(port), local.clone(), secret, tx)
        .await
        .expect("discovery starts on loopback");
    Node { d, rx, local }
}

fn id_of(l: &Local) -> u64 {
    mxfs_core::identity::node_id(&l.node_uuid).unwrap()
}

/// The first event that `pred` takes, skipping others, within `within`.
async fn wait_for(
    rx: &mut mpsc::Receiver<Event>,
    within: Duration,
    pred: impl Fn(&Event) -> bool,
) -> Option<Event> {
    let deadline = Instant::now() + within;
    loop {
        let ev = timeout(
            deadline.saturating_duration_since(Instant::now()),
            rx.recv(),
        )
        .await
        .ok()??;
        if pred(&ev) {
            return Some(ev);
        }
    }
}

/// Every event that arrives within `within`.
async fn drain(rx: &mut mpsc::Receiver<Event>, within: Duration) -> Vec<Event> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while let Ok(Some(ev)) = timeout(
        deadline.saturating_duration_since(Instant::now()),
        rx.recv(),
    )
    .await
    {
        out.push(ev);
    }
    out
}

async fn eventually(within: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        sleep(Duration::from_millis(20)).await;
    }
    f()
}

fn about(ev: &Event) -> Option<&PeerInfo> {
    match ev {
        Event::Joined(p) | Event::Restarted(p) | Event::Changed(p) => Some(p),
        Event::Lost(_) => None,
    }
}

/// Sends raw datagrams to the group on loopback, like a host on the LAN.
fn injector() -> Socket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    s.set_multicast_loop_v4(true).unwrap();
    s.set_multicast_ttl_v4(1).unwrap();
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    s
}

fn inject(s: &Socket, port: u16, bytes: &[u8]) {
    let to = SocketAddr::V4(SocketAddrV4::new(*DEFAULT_GROUP.ip(), port));
    s.send_to(bytes, &to.into()).unwrap();
}

#[tokio::test]
async fn members_with_the_secret_find_each_other_and_see_role_changes() {
    const PORT: u16 = 47611;
    let secret = VolumeSecret::new([1; 32]);
    let vol = volume();
    let mut a = node(PORT, local("node-a", vol, 7600), &secret).await;
    let mut b = node(PORT, local("node-b", vol, 7602), &secret).await;
    let (ida, idb) = (id_of(&a.local), id_of(&b.local));
    assert_eq!(a.d.node_id(), ida);

    let seen = wait_for(
        &mut a.rx,
        WITHIN,
        |e| matches!(e, Event::Joined(p) if p.node_id == idb),
    )
    .await
    .expect("a hears b join");
    let p = about(&seen).unwrap();
    assert_eq!(p.addr, SocketAddr::from((Ipv4Addr::LOCALHOST, 7602)));
    assert_eq!(p.hostname, "node-b");
    assert_eq!(p.node_uuid, b.local.node_uuid);
    assert_eq!(p.incarnation, b.d.incarnation());
    wait_for(
        &mut b.rx,
        WITHIN,
        |e| matches!(e, Event::Joined(p) if p.node_id == ida),
    )
    .await
    .expect("b hears a join");

    a.d.set_role(AnnouncedRole::Owner, 5);
    // Changed, or Joined again if a loaded machine made b lose a meanwhile
    wait_for(&mut b.rx, WITHIN, |e| {
        about(e).is_some_and(|p| {
            p.node_id == ida && p.role == AnnouncedRole::Owner && p.owner_epoch == 5
        })
    })
    .await
    .expect("b sees a become owner");

    let s = a.d.stats();
    assert!(s.sent > 0 && s.received > 0, "{s:?}");
    assert_eq!((s.forged, s.invalid, s.malformed, s.refused), (0, 0, 0, 0));
    a.d.shutdown().await;
    b.d.shutdown().await;
}

#[tokio::test]
async fn a_restarted_daemon_is_seen_and_a_stopped_one_lost() {
    const PORT: u16 = 47612;
    let secret = VolumeSecret::new([2; 32]);
    let vol = volume();
    let mut a = node(PORT, local("node-a", vol, 7600), &secret).await;
    let b = node(PORT, local("node-b", vol, 7602), &secret).await;
    let idb = id_of(&b.local);
    wait_for(
        &mut a.rx,
        WITHIN,
        |e| matches!(e, Event::Joined(p) if p.node_id == idb),
    )
    .await
    .expect("a hears b join");

    // same node identity, new daemon (new incarnation, new port)
    let mut again = b.local.clone();
    again.tcp_port = 7604;
    b.d.shutdown().await;
    let b2 = node(PORT, again, &secret).await;
    let inc = b2.d.incarnation();
    // Restarted once the old incarnation is quiet; Lost then Joined if the
    // machine was slow enough for the timeout to pass first
    let ev = wait_for(&mut a.rx, WITHIN, |e| {
        about(e).is_some_and(|p| p.node_id == idb && p.incarnation == inc)
    })
    .await
    .expect("a sees b's new incarnation");
    assert_eq!(about(&ev).unwrap().addr.port(), 7604);

    b2.d.shutdown().await;
    wait_for(&mut a.rx, WITHIN, |e| *e == Event::Lost(idb))
        .await
        .expect("a loses b");
    assert_eq!(a.d.stats().forged, 0);
    a.d.shutdown().await;
}

/// Log lines, captured by one process-wide subscriber.  A thread-local
/// one (`set_default`) missed lines now and then: tracing caches each
/// call site's interest globally, and tests running on other threads
/// without that subscriber could cache "not interested".  Lines are told
/// apart by the volume UUID each test makes at random.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

fn captured_log() -> Captured {
    static LOG: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let log = log.clone();
                move || log.clone()
            })
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the test binary");
        log
    })
    .clone()
}

impl io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, with: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(with))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn a_node_without_the_secret_is_not_admitted_and_counted_as_forged() {
    const PORT: u16 = 47613;
    let log = captured_log();
    let secret = VolumeSecret::new([3; 32]);
    let vol = volume();
    let mut a = node(PORT, local("node-a", vol, 7600), &secret).await;
    let c = node(PORT, local("node-c", vol, 7602), &secret).await;
    let mut m = node(
        PORT,
        local("mallory", vol, 7666),
        &VolumeSecret::new([4; 32]),
    )
    .await;
    let (idc, idm) = (id_of(&c.local), id_of(&m.local));

    // the control: a does hear members on this port
    wait_for(
        &mut a.rx,
        WITHIN,
        |e| matches!(e, Event::Joined(p) if p.node_id == idc),
    )
    .await
    .expect("a hears c join");
    assert!(
        eventually(WITHIN, || a.d.stats().forged >= 3
            && m.d.stats().forged >= 3)
        .await,
        "a: {:?}, m: {:?}",
        a.d.stats(),
        m.d.stats()
    );
    // several intervals more: still nothing about mallory
    let evs = drain(&mut a.rx, INTERVAL * 5).await;
    assert!(
        evs.iter()
            .all(|e| about(e).is_none_or(|p| p.node_id != idm) && *e != Event::Lost(idm)),
        "{evs:?}"
    );
    // and mallory admitted nobody either
    let evs = drain(&mut m.rx, Duration::ZERO).await;
    assert!(evs.is_empty(), "{evs:?}");
    assert_eq!(a.d.stats().other_volume, 0);
    // logged as warnings with the source, one line per source per minute
    // in each of the three daemons (all of them send from 127.0.0.1),
    // although each counted several
    let vol_text = Uuid::from_bytes(vol).to_string();
    let forged: Vec<String> = log
        .lines("forged announcement")
        .into_iter()
        .filter(|l| l.contains(&vol_text))
        .collect();
    assert_eq!(forged.len(), 3, "{forged:#?}");
    let source = format!("from 127.0.0.1:{PORT}");
    assert!(
        forged.iter().all(|l| l.contains("WARN")
            && l.contains(&source)
            && l.contains(&Uuid::from_bytes(vol).to_string())),
        "{forged:#?}"
    );
    for n in [a, c, m] {
        n.d.shutdown().await;
    }
}

#[tokio::test]
async fn other_volumes_are_dropped_silently_and_injected_datagrams_sorted() {
    const PORT: u16 = 47614;
    let secret = VolumeSecret::new([5; 32]);
    let vol = volume();
    let mut a = node(PORT, local("node-a", vol, 7600), &secret).await;
    // another volume mounted on the same node: same port, its own key
    let mut d = node(PORT, local("node-a", volume(), 7601), &secret).await;

    assert!(
        eventually(WITHIN, || a.d.stats().other_volume >= 3
            && d.d.stats().other_volume >= 3)
        .await,
        "{:?}",
        a.d.stats()
    );
    let s = a.d.stats();
    assert_eq!((s.forged, s.invalid, s.malformed), (0, 0, 0), "{s:?}");
    assert!(drain(&mut a.rx, Duration::ZERO).await.is_empty());

    let raw = injector();
    let key = secret.derive(KeyPurpose::Announce, &vol);
    let fake = Uuid::new_v4();
    let fake_id = mxfs_core::identity::node_id(&fake).unwrap();
    let ann = Announcement {
        volume_uuid: vol,
        node_uuid: *fake.as_bytes(),
        node_id: fake_id,
        tcp_port: 7700,
        incarnation: 42,
        sequence: 1,
        role: AnnouncedRole::Client,
        owner_epoch: 0,
        hostname: "fake".into(),
    };

    // made with the wrong key: forged, for our volume
    let forged = announce::encode(&ann, &[0xee; 32]).unwrap();
    inject(&raw, PORT, &forged);
    assert!(eventually(WITHIN, || a.d.stats().forged == 1).await);
    // garbage: malformed
    inject(&raw, PORT, b"hello, is anybody there?");
    assert!(eventually(WITHIN, || a.d.stats().malformed == 1).await);
    // made with the volume's key: admitted, once
    let good = announce::encode(&ann, &key).unwrap();
    inject(&raw, PORT, &good);
    wait_for(
        &mut a.rx,
        WITHIN,
        |e| matches!(e, Event::Joined(p) if p.node_id == fake_id),
    )
    .await
    .expect("the authentic announcement is admitted");
    inject(&raw, PORT, &good);
    assert!(eventually(WITHIN, || a.d.stats().replayed == 1).await);
    // d never counted any of this: another volume's
    let s = d.d.stats();
    assert_eq!((s.forged, s.invalid), (0, 0), "{s:?}");
    assert!(
        drain(&mut d.rx, Duration::ZERO).await.is_empty(),
        "d admitted something"
    );
    a.d.shutdown().await;
    d.d.shutdown().await;
}

#[tokio::test]
async fn a_unicast_group_is_refused() {
    let (tx, _rx) = mpsc::channel(1);
    let mut c = config(47615);
    c.group = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 47615);
    let r = start(
        c,
        local("x", volume(), 7600),
        &VolumeSecret::new([6; 32]),
        tx,
    )
    .await;
    assert!(r.is_err());
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_consumer_that_stopped_draining() {
    const PORT: u16 = 47616;
    let secret = VolumeSecret::new([7; 32]);
    let vol = volume();
    // room for one event, never read: the second Joined blocks the task
    let (tx, _rx) = mpsc::channel(1);
    let a = start(config(PORT), local("node-a", vol, 7600), &secret, tx)
        .await
        .unwrap();
    let mut b = node(PORT, local("node-b", vol, 7602), &secret).await;
    let mut c = node(PORT, local("node-c", vol, 7604), &secret).await;
    for n in [&mut b, &mut c] {
        wait_for(
            &mut n.rx,
            WITHIN,
            |e| matches!(e, Event::Joined(p) if p.node_id == a.node_id()),
        )
        .await
        .expect("a announces");
    }
    sleep(INTERVAL * 3).await;
    timeout(WITHIN, a.shutdown())
        .await
        .expect("shutdown returns although a's events are not read");
    b.d.shutdown().await;
    c.d.shutdown().await;
}
