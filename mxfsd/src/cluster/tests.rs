//! Two cluster runtimes in one process, over loopback: real discovery
//! (multicast on lo), real authenticated peer links, the owner's real
//! file service on a temp dir.

use super::*;
use crate::test_support::TempDir;
use crate::wire::fileop::{Creds, Op};
use std::net::SocketAddrV4;

fn node_uuid() -> Uuid {
    loop {
        let u = Uuid::new_v4();
        if mxfs_core::identity::node_id(&u).is_some() {
            return u;
        }
    }
}

fn config(node: Uuid, volume: Uuid, secret: [u8; 32], role: Role, disc_port: u16) -> Config {
    let mut c = Config::new(
        node,
        volume,
        "test".to_string(),
        VolumeSecret::new(secret),
        role,
    );
    c.discovery = discovery::Config {
        group: SocketAddrV4::new(*discovery::runtime::DEFAULT_GROUP.ip(), disc_port),
        interface: Some(Ipv4Addr::LOCALHOST),
        timeout: Duration::from_secs(2),
        ..discovery::Config::with_interval(Duration::from_millis(100))
    };
    c.listen = Ipv4Addr::LOCALHOST;
    // ports away from the daemon's and from other tests'
    c.first_port = 20000 + (std::process::id() % 20000) as u16;
    c.request_timeout = Duration::from_secs(5);
    c
}

/// An owner at `epoch` serving `dir`: the runtime and its node id.
async fn start_owner(
    dir: &TempDir,
    volume: Uuid,
    secret: [u8; 32],
    epoch: u64,
    disc_port: u16,
) -> (Cluster, u64) {
    let service = Arc::new(FileService::open(&dir.0).unwrap());
    let owner_uuid = node_uuid();
    let owner_id = mxfs_core::identity::node_id(&owner_uuid).unwrap();
    let cfg = config(owner_uuid, volume, secret, Role::Owner { epoch }, disc_port);
    (start(cfg, Some(service)).await.unwrap(), owner_id)
}

/// A client of `owner` at `epoch`.
async fn start_client(
    volume: Uuid,
    secret: [u8; 32],
    owner: u64,
    epoch: u64,
    disc_port: u16,
) -> Cluster {
    let role = Role::Client { owner, epoch };
    let cfg = config(node_uuid(), volume, secret, role, disc_port);
    start(cfg, None).await.unwrap()
}

fn root_creds() -> Creds {
    Creds {
        uid: 0,
        gid: 0,
        pid: 1,
        groups: vec![],
    }
}

async fn call_as_root(ch: &ClusterHandle, op: Op) -> FileReply {
    ch.call(FileRequest {
        creds: root_creds(),
        op,
    })
    .await
}

async fn wait_members(h: &ClusterHandle, n: usize) -> Vec<u64> {
    for _ in 0..100 {
        let m = h.status().members;
        if m.len() == n {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.status().members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reaches_the_owners_files_and_an_outsider_does_not_join() {
    let dir = TempDir::new("cluster");
    std::fs::write(dir.path("hello"), b"from the owner").unwrap();
    let service = Arc::new(FileService::open(&dir.0).unwrap());

    let volume = Uuid::new_v4();
    let secret = [0x42; 32];
    let disc_port = 17000 + (std::process::id() % 1000) as u16;
    let owner_uuid = node_uuid();
    let owner_id = mxfs_core::identity::node_id(&owner_uuid).unwrap();
    let client_uuid = node_uuid();
    let owner = start(
        config(
            owner_uuid,
            volume,
            secret,
            Role::Owner { epoch: 3 },
            disc_port,
        ),
        Some(service),
    )
    .await
    .unwrap();
    let client = start(
        config(
            client_uuid,
            volume,
            secret,
            Role::Client {
                owner: owner_id,
                epoch: 3,
            },
            disc_port,
        ),
        None,
    )
    .await
    .unwrap();
    // a node of the same volume with another secret: never a member
    let outsider = start(
        config(
            node_uuid(),
            volume,
            [0x43; 32],
            Role::Client {
                owner: owner_id,
                epoch: 3,
            },
            disc_port,
        ),
        None,
    )
    .await
    .unwrap();

    let ch = client.handle();
    let members = wait_members(&ch, 2).await;
    assert_eq!(members.len(), 2, "client members: {members:?}");
    assert!(members.contains(&owner_id));
    assert_eq!(wait_members(&owner.handle(), 2).await, members);

    // root, lookup, read, create+write: all through the owner
    let FileReply::Entry { handle: root, .. } = ch
        .call(FileRequest {
            creds: root_creds(),
            op: Op::Root,
        })
        .await
    else {
        panic!("no root entry");
    };
    let r = ch
        .call(FileRequest {
            creds: root_creds(),
            op: Op::Lookup {
                parent: root.clone(),
                name: b"hello".to_vec(),
            },
        })
        .await;
    let FileReply::Entry { attr, .. } = r else {
        panic!("lookup: {r:?}");
    };
    assert_eq!(attr.size, 14);
    let r = ch
        .call(FileRequest {
            creds: root_creds(),
            op: Op::Lookup {
                parent: root.clone(),
                name: b"absent".to_vec(),
            },
        })
        .await;
    assert_eq!(r, FileReply::Errno(libc::ENOENT));
    assert!(owner.handle().status().forwarded >= 3);

    // the outsider's requests never reach the owner: EIO after its timeout
    let oh = outsider.handle();
    assert_eq!(oh.status().members, vec![oh.status().node_id]);
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        oh.call(FileRequest {
            creds: root_creds(),
            op: Op::Root,
        }),
    )
    .await
    .unwrap();
    assert_eq!(r, FileReply::Errno(libc::EIO));
    assert_eq!(wait_members(&owner.handle(), 2).await.len(), 2);

    client.shutdown().await;
    outsider.shutdown().await;
    owner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_clients_files_go_after_the_grace() {
    let dir = TempDir::new("cluster-grace");
    std::fs::write(dir.path("f"), b"x").unwrap();
    let service = Arc::new(FileService::open(&dir.0).unwrap());
    let volume = Uuid::new_v4();
    let secret = [0x44; 32];
    let disc_port = 18000 + (std::process::id() % 1000) as u16;
    let owner_uuid = node_uuid();
    let owner_id = mxfs_core::identity::node_id(&owner_uuid).unwrap();
    let mut owner_cfg = config(
        owner_uuid,
        volume,
        secret,
        Role::Owner { epoch: 1 },
        disc_port,
    );
    owner_cfg.client_grace = Duration::from_millis(500);
    let owner = start(owner_cfg, Some(service.clone())).await.unwrap();
    let client = start(
        config(
            node_uuid(),
            volume,
            secret,
            Role::Client {
                owner: owner_id,
                epoch: 1,
            },
            disc_port,
        ),
        None,
    )
    .await
    .unwrap();
    let ch = client.handle();
    assert_eq!(wait_members(&ch, 2).await.len(), 2);
    let call = |op| call_as_root(&ch, op);
    let FileReply::Entry { handle: root, .. } = call(Op::Root).await else {
        panic!("no root");
    };
    let FileReply::Entry { handle, .. } = call(Op::Lookup {
        parent: root,
        name: b"f".to_vec(),
    })
    .await
    else {
        panic!("no f");
    };
    let FileReply::Opened { .. } = call(Op::Open {
        handle,
        flags: libc::O_RDWR,
    })
    .await
    else {
        panic!("no open");
    };
    assert_eq!(service.open_count(), 1);

    // the client goes without closing anything
    client.shutdown().await;
    let mut released = false;
    for _ in 0..100 {
        if service.open_count() == 0 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(released, "after the grace: {} open", service.open_count());
    owner.shutdown().await;
}

/// The disk as a test sets it: every node's heartbeat is this old.
struct FixedDisk(Mutex<HashMap<u64, Duration>>);

impl DiskView for FixedDisk {
    fn ages(&self) -> Option<HashMap<u64, Duration>> {
        Some(self.0.lock().unwrap().clone())
    }
}

/// Records whom it fenced; says the victim owned the volume.
struct RecordingFencer(Mutex<Vec<u64>>);

impl Fencer for RecordingFencer {
    fn fence(&self, victim: u64) -> FenceOutcome {
        self.0.lock().unwrap().push(victim);
        FenceOutcome::Fenced {
            was_owner: true,
            preempt: Duration::from_millis(1),
            records: Duration::from_millis(1),
            records_cleared: 0,
        }
    }
}

/// The device as a test sets it: the old owner holds the volume until
/// this node has fenced it; then a take-over (on the owner lock's grant)
/// serves the same directory.
struct TakeOverWhenFenced {
    old_owner: u64,
    fenced: Arc<RecordingFencer>,
    dir: std::path::PathBuf,
    /// Take-overs asked for.
    taken: Mutex<usize>,
}

impl Succession for TakeOverWhenFenced {
    fn holder(&self) -> Option<u64> {
        self.fenced
            .0
            .lock()
            .unwrap()
            .is_empty()
            .then_some(self.old_owner)
    }

    fn take_over(&self, old_owner: u64, _: &watch::Receiver<bool>) -> Result<Takeover, String> {
        assert_eq!(old_owner, self.old_owner);
        if self.fenced.0.lock().unwrap().is_empty() {
            return Err("granted the owner lock before the fence".into());
        }
        *self.taken.lock().unwrap() += 1;
        Ok(Takeover {
            epoch: 2,
            service: Arc::new(FileService::open(&self.dir).unwrap()),
            hold: Box::new(()),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_fences_its_dead_owner_once_takes_over_and_resends() {
    let dir = TempDir::new("cluster-failover");
    std::fs::write(dir.path("kept"), b"before the death").unwrap();
    let volume = Uuid::new_v4();
    let secret = [0x45; 32];
    let disc_port = 19000 + (std::process::id() % 1000) as u16;
    let (owner, owner_id) = start_owner(&dir, volume, secret, 1, disc_port).await;
    let fencer = Arc::new(RecordingFencer(Mutex::new(Vec::new())));
    // the owner's heartbeat has stopped on disk
    let disk = Arc::new(FixedDisk(Mutex::new(HashMap::from([(
        owner_id,
        Duration::from_secs(60),
    )]))));
    let mut cfg = config(
        node_uuid(),
        volume,
        secret,
        Role::Client {
            owner: owner_id,
            epoch: 1,
        },
        disc_port,
    );
    cfg.dead_interval = Duration::from_secs(1);
    cfg.request_timeout = Duration::from_secs(20);
    cfg.disk = Some(disk);
    cfg.fencer = Some(fencer.clone());
    let succession = Arc::new(TakeOverWhenFenced {
        old_owner: owner_id,
        fenced: fencer.clone(),
        dir: dir.0.clone(),
        taken: Mutex::new(0),
    });
    cfg.succession = Some(succession.clone());
    let client = start(cfg, None).await.unwrap();
    let ch = client.handle();
    assert_eq!(wait_members(&ch, 2).await.len(), 2);
    let call = |op| call_as_root(&ch, op);
    let FileReply::Entry { handle: root, .. } = call(Op::Root).await else {
        panic!("no root");
    };
    assert!(fencer.0.lock().unwrap().is_empty(), "fenced a live owner");

    // the owner goes; a request made meanwhile waits for the next owner
    owner.shutdown().await;
    let r = call(Op::Lookup {
        parent: root.clone(),
        name: b"kept".to_vec(),
    })
    .await;
    let FileReply::Entry { attr, .. } = r else {
        panic!("lookup after the owner's death: {r:?}");
    };
    assert_eq!(attr.size, 16);
    // the take-over may end before the fence's purge does
    let mut st = ch.status();
    for _ in 0..50 {
        if st.last_recovery.contains("records") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        st = ch.status();
    }
    assert_eq!(st.role, Role::Owner { epoch: 2 });
    assert!(
        st.last_recovery
            .starts_with(&format!("fenced {owner_id:016x}: preempt "))
            && st.last_recovery.contains("records")
            && st.last_recovery.contains("owner after"),
        "last recovery: {:?}",
        st.last_recovery
    );
    assert_eq!(st.heartbeat_age.len(), 1);
    // fenced once, not at every tick; taken over once, on the owner
    // lock's grant, which this node now holds
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(*fencer.0.lock().unwrap(), vec![owner_id]);
    assert_eq!(*succession.taken.lock().unwrap(), 1);
    let mut st = ch.status();
    for _ in 0..50 {
        if st.lock_owner == st.node_id {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        st = ch.status();
    }
    assert_eq!(st.lock_owner, st.node_id, "the DLM shows another owner");

    // the node that took over serves its own requests through the reply
    // cache too: a changing request served twice (as its restarted
    // daemon would) runs once
    let req = |op: Op| FileRequest {
        creds: root_creds(),
        op,
    };
    let origin = |unique| Origin {
        session: 0x7a,
        unique,
    };
    let create = Op::Create {
        parent: root,
        name: b"log".to_vec(),
        mode: 0o644,
        umask: 0,
        flags: libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_EXCL,
    };
    let first = ch.call_from(req(create.clone()), origin(1)).await;
    let FileReply::Created { fh, .. } = first.clone() else {
        panic!("create on the node that took over: {first:?}");
    };
    assert_eq!(ch.call_from(req(create), origin(1)).await, first);
    let write = Op::Write {
        fh,
        offset: 0,
        data: b"once\n".to_vec(),
        write_flags: 0,
    };
    for _ in 0..2 {
        assert_eq!(
            ch.call_from(req(write.clone()), origin(2)).await,
            FileReply::Written(5)
        );
    }
    assert_eq!(std::fs::read(dir.path("log")).unwrap(), b"once\n");
    client.shutdown().await;
}

/// Waits until every runtime shows the same DLM view with `n` members
/// and the same lock owner (non-zero); that (view, members, owner).
async fn wait_lock_view(hs: &[&ClusterHandle], n: usize) -> (u64, Vec<u64>, u64) {
    let seen = || {
        hs.iter()
            .map(|h| {
                let st = h.status();
                (st.lock_view, st.lock_members, st.lock_owner)
            })
            .collect::<Vec<_>>()
    };
    for _ in 0..150 {
        let s = seen();
        if s[0].0 != 0 && s[0].1.len() == n && s[0].2 != 0 && s.iter().all(|x| *x == s[0]) {
            return s[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no common DLM view of {n} members: {:?}", seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_leads_the_dlm_views_and_holds_the_owner_lock() {
    use crate::dlm::{LockError, Mode, RequestFlags};

    let dir = TempDir::new("cluster-dlm");
    let volume = Uuid::new_v4();
    let secret = [0x44; 32];
    let disc_port = 16000 + (std::process::id() % 1000) as u16;
    let (owner, owner_id) = start_owner(&dir, volume, secret, 7, disc_port).await;
    let a = start_client(volume, secret, owner_id, 7, disc_port).await;
    let b = start_client(volume, secret, owner_id, 7, disc_port).await;
    let (oh, ah, bh) = (owner.handle(), a.handle(), b.handle());

    // one view on all three, numbered in the owner's epoch, the owner
    // holding `owner`
    let (view, members, lock_owner) = wait_lock_view(&[&oh, &ah, &bh], 3).await;
    assert_eq!(view >> 32, 7, "view {view:#x}");
    assert_eq!(lock_owner, owner_id);
    let mut all = vec![owner_id, ah.status().node_id, bh.status().node_id];
    all.sort_unstable();
    assert_eq!(members, all);
    // and it stays: reports and pings (every second) change nothing
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for h in [&oh, &ah, &bh] {
        assert_eq!(h.status().lock_view, view);
    }

    // a lock held on one client is refused to the other, then granted
    // once released
    let held = ah
        .dlm()
        .lock(b"test-resource", Mode::EX, RequestFlags::default())
        .await
        .unwrap();
    let r = bh
        .dlm()
        .lock(b"test-resource", Mode::PR, RequestFlags { noqueue: true })
        .await;
    assert_eq!(r.err(), Some(LockError::NotGranted));
    let waiter = {
        let dlm = bh.dlm().clone();
        tokio::spawn(async move {
            dlm.lock(b"test-resource", Mode::PR, RequestFlags::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "granted while EX was held");
    held.unlock();
    let granted = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("not granted after the unlock")
        .unwrap()
        .unwrap();
    granted.unlock();

    // a lock held across a view change: a fourth member joins, the
    // resources are re-mastered over four, and the lock still excludes
    let held = ah
        .dlm()
        .lock(b"kept", Mode::EX, RequestFlags::default())
        .await
        .unwrap();
    let c = start_client(volume, secret, owner_id, 7, disc_port).await;
    let ch = c.handle();
    let (view4, members4, lock_owner4) = wait_lock_view(&[&oh, &ah, &bh, &ch], 4).await;
    assert!(view4 > view, "{view4:#x} after {view:#x}");
    assert!(members4.contains(&ch.status().node_id));
    assert_eq!(lock_owner4, owner_id);
    let r = ch
        .dlm()
        .lock(b"kept", Mode::PR, RequestFlags { noqueue: true })
        .await;
    assert_eq!(r.err(), Some(LockError::NotGranted));
    held.unlock();
    let mut got = None;
    for _ in 0..50 {
        match ch
            .dlm()
            .lock(b"kept", Mode::PR, RequestFlags { noqueue: true })
            .await
        {
            Ok(h) => {
                got = Some(h);
                break;
            }
            Err(LockError::NotGranted) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    got.expect("never granted after the unlock").unlock();

    c.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
    owner.shutdown().await;
}

/// A request that changes the filesystem, sent again with the same
/// origin (a restarted client daemon, a resend after a lost link), runs
/// once: an O_APPEND write appends once, an exclusive create answers as
/// the first did.  Another origin runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_twice_with_one_origin_runs_once() {
    let dir = TempDir::new("cluster-replies");
    let volume = Uuid::new_v4();
    let secret = [0x46; 32];
    let disc_port = 15000 + (std::process::id() % 1000) as u16;
    let (owner, owner_id) = start_owner(&dir, volume, secret, 1, disc_port).await;
    let client = start_client(volume, secret, owner_id, 1, disc_port).await;
    let ch = client.handle();
    assert_eq!(wait_members(&ch, 2).await.len(), 2);
    let FileReply::Entry { handle: root, .. } = call_as_root(&ch, Op::Root).await else {
        panic!("no root entry");
    };
    let origin = |unique| Origin {
        session: 0x5e55,
        unique,
    };
    let create = Op::Create {
        parent: root.clone(),
        name: b"log".to_vec(),
        mode: 0o644,
        umask: 0,
        flags: libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_EXCL,
    };
    let req = |op: Op| FileRequest {
        creds: root_creds(),
        op,
    };
    let first = ch.call_from(req(create.clone()), origin(1)).await;
    let FileReply::Created { fh, .. } = first.clone() else {
        panic!("create: {first:?}");
    };
    // the repeat answers what the first did, not EEXIST
    assert_eq!(ch.call_from(req(create.clone()), origin(1)).await, first);
    // without an origin, or with another, it runs again
    assert_eq!(
        ch.call(req(create.clone())).await,
        FileReply::Errno(libc::EEXIST)
    );
    assert_eq!(
        ch.call_from(req(create), origin(2)).await,
        FileReply::Errno(libc::EEXIST)
    );

    let write = Op::Write {
        fh,
        offset: 0,
        data: b"one record\n".to_vec(),
        write_flags: 0,
    };
    for _ in 0..3 {
        assert_eq!(
            ch.call_from(req(write.clone()), origin(3)).await,
            FileReply::Written(11)
        );
    }
    assert_eq!(
        std::fs::read(dir.path("log")).unwrap(),
        b"one record\n",
        "a write sent three times with one origin appended more than once"
    );
    // two sent at once: one runs, both are answered
    let (a, b) = tokio::join!(
        ch.call_from(req(write.clone()), origin(4)),
        ch.call_from(req(write.clone()), origin(4))
    );
    assert_eq!((a, b), (FileReply::Written(11), FileReply::Written(11)));
    ch.call_from(req(write), origin(5)).await;
    assert_eq!(
        std::fs::read(dir.path("log")).unwrap(),
        b"one record\none record\none record\n"
    );
    client.shutdown().await;
    owner.shutdown().await;
}

/// The device as a test sets it: who holds the reservation, shared by the
/// clients, and the take-overs they made.
struct SharedDevice {
    holder: Mutex<Option<u64>>,
    dir: std::path::PathBuf,
    takeovers: Mutex<Vec<u64>>,
}

/// One client's view of [`SharedDevice`].
struct DeviceSuccessor {
    me: u64,
    device: Arc<SharedDevice>,
}

impl Succession for DeviceSuccessor {
    fn holder(&self) -> Option<u64> {
        *self.device.holder.lock().unwrap()
    }

    fn take_over(&self, old_owner: u64, stop: &watch::Receiver<bool>) -> Result<Takeover, String> {
        // as `join::Successor`: reserve once the old owner has released
        for _ in 0..100 {
            if *stop.borrow() {
                return Err("stopping".into());
            }
            {
                let mut holder = self.device.holder.lock().unwrap();
                match *holder {
                    None => *holder = Some(self.me),
                    Some(h) if h == self.me => {}
                    Some(h) if h == old_owner => {
                        drop(holder);
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    Some(h) => return Err(format!("{h:016x} holds it")),
                }
            }
            self.device.takeovers.lock().unwrap().push(self.me);
            return Ok(Takeover {
                epoch: 8,
                service: Arc::new(FileService::open(&self.device.dir).unwrap()),
                hold: Box::new(()),
            });
        }
        Err("the old owner kept the reservation".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_lock_decides_which_client_takes_over_and_the_other_follows() {
    let dir = TempDir::new("cluster-succession");
    std::fs::write(dir.path("kept"), b"handed over").unwrap();
    let volume = Uuid::new_v4();
    let secret = [0x46; 32];
    let disc_port = 17000 + (std::process::id() % 1000) as u16;
    let (owner, owner_id) = start_owner(&dir, volume, secret, 7, disc_port).await;
    let device = Arc::new(SharedDevice {
        holder: Mutex::new(Some(owner_id)),
        dir: dir.0.clone(),
        takeovers: Mutex::new(Vec::new()),
    });
    let mut clients = Vec::new();
    for _ in 0..2 {
        let uuid = node_uuid();
        let me = mxfs_core::identity::node_id(&uuid).unwrap();
        let mut cfg = config(
            uuid,
            volume,
            secret,
            Role::Client {
                owner: owner_id,
                epoch: 7,
            },
            disc_port,
        );
        cfg.request_timeout = Duration::from_secs(30);
        cfg.succession = Some(Arc::new(DeviceSuccessor {
            me,
            device: device.clone(),
        }));
        clients.push((me, start(cfg, None).await.unwrap()));
    }
    let (oh, ah, bh) = (owner.handle(), clients[0].1.handle(), clients[1].1.handle());
    let (_, _, lock_owner) = wait_lock_view(&[&oh, &ah, &bh], 3).await;
    assert_eq!(lock_owner, owner_id);
    // hears the volume's announcements, as a node that is joining does
    let (heard_tx, mut heard) = mpsc::channel(256);
    // (only its discovery settings and secret are used)
    let listener_cfg = config(
        node_uuid(),
        volume,
        secret,
        Role::Owner { epoch: 0 },
        disc_port,
    );
    let listener = discovery::start(
        listener_cfg.discovery.clone(),
        discovery::Local {
            node_uuid: listener_cfg.node_uuid,
            volume_uuid: *volume.as_bytes(),
            tcp_port: 9,
            hostname: "listener".to_string(),
            role: AnnouncedRole::Joining,
            owner_epoch: 0,
        },
        &listener_cfg.secret,
        heard_tx,
    )
    .await
    .unwrap();
    // both clients queue for `owner` behind the owner
    tokio::time::sleep(Duration::from_secs(2)).await;

    // the owner hands over: it leaves, then releases the reservation
    owner.shutdown().await;
    *device.holder.lock().unwrap() = None;

    // exactly one client takes over, the one the DLM granted `owner`;
    // the other follows it, and a request made there reaches the files
    let mut new_owner = None;
    for _ in 0..300 {
        let roles: Vec<Role> = [&ah, &bh].iter().map(|h| h.status().role).collect();
        if let [Role::Owner { .. }, Role::Client { owner, .. }] = roles[..] {
            if owner == clients[0].0 {
                new_owner = Some(0);
                break;
            }
        }
        if let [Role::Client { owner, .. }, Role::Owner { .. }] = roles[..] {
            if owner == clients[1].0 {
                new_owner = Some(1);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(n) = new_owner else {
        panic!(
            "no single new owner followed by the other: {:?} {:?}",
            ah.status(),
            bh.status()
        );
    };
    let (winner, follower) = if n == 0 { (&ah, &bh) } else { (&bh, &ah) };
    assert_eq!(*device.takeovers.lock().unwrap(), vec![clients[n].0]);
    assert_eq!(*device.holder.lock().unwrap(), Some(clients[n].0));
    assert_eq!(winner.status().role, Role::Owner { epoch: 8 });
    let (_, members, lock_owner) = wait_lock_view(&[winner, follower], 2).await;
    assert_eq!(
        lock_owner, clients[n].0,
        "the DLM's owner is not the new owner"
    );
    assert_eq!(members.len(), 2);
    let FileReply::Entry { handle: root, .. } = call_as_root(follower, Op::Root).await else {
        panic!("no root through the new owner");
    };
    let r = call_as_root(
        follower,
        Op::Lookup {
            parent: root,
            name: b"kept".to_vec(),
        },
    )
    .await;
    assert!(matches!(r, FileReply::Entry { .. }), "lookup: {r:?}");
    // the new owner announces itself as owner at its epoch
    let announced_owner = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = heard.recv().await {
            if let discovery::Event::Joined(p)
            | discovery::Event::Restarted(p)
            | discovery::Event::Changed(p) = ev
            {
                if p.node_id == clients[n].0 && p.role == AnnouncedRole::Owner && p.owner_epoch == 8
                {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(
        announced_owner,
        Ok(true),
        "no announcement of the new owner as owner at epoch 8"
    );
    listener.shutdown().await;
    // nobody else took over meanwhile
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(device.takeovers.lock().unwrap().len(), 1);
    for (_, c) in clients {
        c.shutdown().await;
    }
}
