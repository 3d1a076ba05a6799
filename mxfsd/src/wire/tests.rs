use super::*;
use crate::dlm::plock::Kind;
use proptest::prelude::*;

fn lock() -> LockId {
    LockId {
        node: 0x0102_0304_0506_0708,
        local: 9,
    }
}

#[test]
fn the_frame_format_is_pinned() {
    let m = Message::LockGrant(LockGrant {
        lock: lock(),
        resource: b"owner".to_vec(),
        mode: Mode::EX,
    });
    let b = m.encode().unwrap();
    let expect: Vec<u8> = [
        &[0, 0, 0, 2 + 16 + 2 + 5 + 1][..], // length
        &[VERSION, 12],                     // version, LockGrant
        &[1, 2, 3, 4, 5, 6, 7, 8],          // lock.node
        &[0, 0, 0, 0, 0, 0, 0, 9],          // lock.local
        &[0, 5],
        b"owner",
        &[5], // EX
    ]
    .concat();
    assert_eq!(b, expect);
    assert_eq!(Message::decode_frame(&b).unwrap(), Some((m, b.len())));
}

#[test]
fn the_file_op_format_is_pinned() {
    let m = Message::FileOp(FileOp {
        owner_epoch: 2,
        request_id: 3,
        origin: Origin {
            session: 0x1112_1314_1516_1718,
            unique: 0x2122_2324_2526_2728,
        },
        opcode: 15,
        payload: vec![0xaa, 0xbb],
    });
    let b = m.encode().unwrap();
    let expect: Vec<u8> = [
        &[0, 0, 0, 2 + 8 + 8 + 16 + 4 + 4 + 2][..], // length
        &[VERSION, 20],                             // version, FileOp
        &[0, 0, 0, 0, 0, 0, 0, 2],                  // owner epoch
        &[0, 0, 0, 0, 0, 0, 0, 3],                  // request id
        &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18], // origin session
        &[0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28], // origin unique
        &[0, 0, 0, 15],                             // opcode
        &[0, 0, 0, 2, 0xaa, 0xbb],                  // payload
    ]
    .concat();
    assert_eq!(b, expect);
    assert_eq!(Message::decode_frame(&b).unwrap(), Some((m, b.len())));
    // 2 added the origin, 3 the file-lock messages, 4 dropped the
    // forwarded lock operations, 5 added FIEMAP and BIRTHTIME
    assert_eq!(VERSION, 5);
}

fn recorded(
    local: u64,
    name: &[u8],
    granted: Option<Mode>,
    requested: Option<Mode>,
) -> RecordedLock {
    RecordedLock {
        lock: LockId { node: 3, local },
        resource: name.to_vec(),
        granted,
        requested,
        noqueue: false,
    }
}

fn round_trips(m: &Message) -> Vec<u8> {
    let b = m.encode().unwrap();
    assert!(b.len() <= MAX_FRAME);
    assert_eq!(
        Message::decode_frame(&b).unwrap(),
        Some((m.clone(), b.len()))
    );
    b
}

#[test]
fn the_lock_recover_format_is_pinned() {
    let mut l = recorded(9, b"ab", None, Some(Mode::PW));
    l.lock = lock();
    l.noqueue = true;
    let m = Message::LockRecover(LockRecover {
        view: 0x0a0b,
        locks: vec![l],
    });
    let b = round_trips(&m);
    let expect: Vec<u8> = [
        &[0, 0, 0, 2 + 8 + 2 + 16 + 2 + 2 + 1 + 1 + 4][..], // length
        &[VERSION, 18],                                     // version, LockRecover
        &[0, 0, 0, 0, 0, 0, 0x0a, 0x0b],                    // view
        &[0, 1],                                            // lock count
        &[1, 2, 3, 4, 5, 6, 7, 8],                          // lock.node
        &[0, 0, 0, 0, 0, 0, 0, 9],                          // lock.local
        &[0, 2],
        b"ab",
        &[0xff],       // granted: none
        &[4],          // requested: PW
        &[0, 0, 0, 1], // flags: NOQUEUE
    ]
    .concat();
    assert_eq!(b, expect);
    let done = round_trips(&Message::LockRecoverDone { view: 5 });
    assert_eq!(
        done,
        [&[0, 0, 0, 10, VERSION, 19][..], &[0, 0, 0, 0, 0, 0, 0, 5]].concat()
    );
}

#[test]
fn lock_recover_round_trips() {
    let full = vec![0xa5; MAX_RESOURCE_NAME];
    for locks in [
        vec![],
        vec![recorded(1, b"r", Some(Mode::EX), None)],
        vec![
            recorded(1, b"r", None, Some(Mode::NL)),
            recorded(2, &full, Some(Mode::CR), Some(Mode::PR)),
            recorded(3, b"s", None, None),
            RecordedLock {
                noqueue: true,
                ..recorded(4, &full, Some(Mode::NL), Some(Mode::EX))
            },
        ],
    ] {
        round_trips(&Message::LockRecover(LockRecover { view: 7, locks }));
    }
    for view in [0, 1, u64::MAX] {
        round_trips(&Message::LockRecoverDone { view });
        round_trips(&Message::LockRecover(LockRecover {
            view,
            locks: vec![],
        }));
    }
}

/// The largest message the DLM sends: a full chunk of records, each with
/// a full-length name.  It fits a frame; one record more is refused.
#[test]
fn a_full_lock_recover_chunk_fits_a_frame() {
    let locks: Vec<RecordedLock> = (0..MAX_RECOVER_LOCKS as u64)
        .map(|i| RecordedLock {
            lock: LockId {
                node: u64::MAX,
                local: i,
            },
            resource: vec![b'n'; MAX_RESOURCE_NAME],
            granted: Some(Mode::PR),
            requested: Some(Mode::EX),
            noqueue: true,
        })
        .collect();
    let mut m = LockRecover { view: 9, locks };
    let b = round_trips(&Message::LockRecover(m.clone()));
    assert_eq!(
        b.len(),
        PREFIX + HEAD + 8 + 2 + MAX_RECOVER_LOCKS * (RECORD_FIXED + MAX_RESOURCE_NAME)
    );
    assert!(b.len() < MAX_FRAME / 4, "{} bytes", b.len());
    m.locks.push(m.locks[0].clone());
    assert_eq!(
        Message::LockRecover(m).encode(),
        Err(WireError::Invalid("recovered lock count"))
    );
}

#[test]
fn bad_lock_recover_payloads_are_refused() {
    // body: version, type, view, count, then one record named "ab"
    let one = Message::LockRecover(LockRecover {
        view: 1,
        locks: vec![recorded(1, b"ab", Some(Mode::PR), Some(Mode::EX))],
    });
    let good = one.encode().unwrap()[PREFIX..].to_vec();
    let (count, name_len, granted, requested, flags) = (10, 28, 32, 33, 34);
    assert_eq!(good.len(), flags + 4);
    assert_eq!(Message::decode_body(&good), Ok(one));
    let with = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        Message::decode_body(&b)
    };
    let invalid = |what| Err(WireError::Invalid(what));
    // unknown modes (6..0xfe), granted or requested
    for m in [6, 7, 0x80, 0xfe] {
        assert_eq!(with(granted, &[m]), invalid("lock mode"));
        assert_eq!(with(requested, &[m]), invalid("lock mode"));
    }
    assert_eq!(with(flags, &[0, 0, 0, 2]), invalid("recovered lock flags"));
    assert_eq!(
        with(flags, &[0x80, 0, 0, 1]),
        invalid("recovered lock flags")
    );
    // names: empty, or over the limit (even with the bytes present)
    assert_eq!(with(name_len, &[0, 0]), invalid("resource name"));
    let mut long = good[..name_len].to_vec();
    long.extend_from_slice(&((MAX_RESOURCE_NAME + 1) as u16).to_be_bytes());
    long.extend_from_slice(&[b'x'; MAX_RESOURCE_NAME + 1]);
    long.extend_from_slice(&good[granted..]);
    assert_eq!(Message::decode_body(&long), invalid("resource name"));
    // counts: over the limit (with that many records present), and more
    // records than the frame holds
    let rec = &good[count + 2..];
    let mut over = good[..count].to_vec();
    over.extend_from_slice(&((MAX_RECOVER_LOCKS + 1) as u16).to_be_bytes());
    for _ in 0..=MAX_RECOVER_LOCKS {
        over.extend_from_slice(rec);
    }
    assert_eq!(Message::decode_body(&over), invalid("recovered lock count"));
    assert_eq!(
        with(count, &(MAX_RECOVER_LOCKS as u16).to_be_bytes()),
        Err(WireError::Truncated("recovered locks"))
    );
    assert!(matches!(with(count, &[0, 2]), Err(WireError::Truncated(_))));
    assert_eq!(with(count, &[0, 0]), Err(WireError::Trailing(rec.len())));
    // missing and trailing bytes
    for n in 2..good.len() {
        assert!(
            matches!(
                Message::decode_body(&good[..n]),
                Err(WireError::Truncated(_))
            ),
            "cut at {n}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(Message::decode_body(&trailing), Err(WireError::Trailing(1)));
    // the same for LockRecoverDone
    let done = Message::LockRecoverDone { view: 3 }.encode().unwrap()[PREFIX..].to_vec();
    assert!(matches!(
        Message::decode_body(&done[..done.len() - 1]),
        Err(WireError::Truncated(_))
    ));
    let mut trailing = done.clone();
    trailing.push(0);
    assert_eq!(Message::decode_body(&trailing), Err(WireError::Trailing(1)));
    // a bad record in the encoder is refused there, too
    let bad = Message::LockRecover(LockRecover {
        view: 1,
        locks: vec![recorded(1, &[0; MAX_RESOURCE_NAME + 1], None, None)],
    });
    assert_eq!(bad.encode(), Err(WireError::Invalid("resource name")));
}

#[test]
fn bad_frames_are_errors() {
    let good = Message::Auth(Auth { mac: [7; 32] }).encode().unwrap();
    // incomplete: wait for more
    for n in 0..good.len() {
        assert_eq!(
            Message::decode_frame(&good[..n]).unwrap(),
            None,
            "prefix {n}"
        );
    }
    // an oversized length is refused before the bytes arrive
    let huge = ((MAX_FRAME - PREFIX + 1) as u32).to_be_bytes();
    assert!(matches!(
        Message::decode_frame(&huge),
        Err(WireError::TooLarge(_))
    ));
    assert!(matches!(
        Message::decode_frame(&[0, 0, 0, 1, 1]),
        Err(WireError::TooShort(1))
    ));
    let mut v = good.clone();
    v[4] = VERSION + 1;
    assert_eq!(
        Message::decode_frame(&v),
        Err(WireError::Version(VERSION + 1))
    );
    // version 1 (before FileOp had its origin) is refused too
    v[4] = 1;
    assert_eq!(Message::decode_frame(&v), Err(WireError::Version(1)));
    // and 3, whose peers still forward fcntl and flock locks to the owner
    v[4] = 3;
    assert_eq!(Message::decode_frame(&v), Err(WireError::Version(3)));
    // and 4, which would answer a client's FIEMAP with EIO
    v[4] = 4;
    assert_eq!(Message::decode_frame(&v), Err(WireError::Version(4)));
    let mut t = good.clone();
    t[5] = 99;
    assert_eq!(Message::decode_frame(&t), Err(WireError::UnknownType(99)));
    // one byte more inside the frame: trailing; one less: truncated
    let mut long = good.clone();
    long.push(0);
    long[3] += 1;
    assert_eq!(Message::decode_frame(&long), Err(WireError::Trailing(1)));
    let mut short = good.clone();
    short.pop();
    short[3] -= 1;
    assert!(matches!(
        Message::decode_frame(&short),
        Err(WireError::Truncated(_))
    ));
    // encoders refuse what decoders would refuse
    let bad_name = Message::LockUnlock(LockRef {
        lock: lock(),
        resource: vec![],
    });
    assert!(bad_name.encode().is_err());
    let unsorted = Message::Membership(Membership {
        view: 1,
        owner: 2,
        owner_epoch: 3,
        members: vec![5, 4],
    });
    assert!(unsorted.encode().is_err());
    let big = Message::FileOp(FileOp {
        owner_epoch: 1,
        request_id: 1,
        origin: Default::default(),
        opcode: 1,
        payload: vec![0; MAX_FRAME],
    });
    assert!(matches!(big.encode(), Err(WireError::TooLarge(_))));
    let fits = Message::FileOp(FileOp {
        owner_epoch: 1,
        request_id: 1,
        origin: Default::default(),
        opcode: 1,
        payload: vec![0; 1 << 20],
    });
    assert!(fits.encode().is_ok());
}

#[test]
fn frame_buffer_reassembles_a_stream() {
    let msgs = vec![
        Message::Heartbeat(Heartbeat {
            node_id: 1,
            generation: 2,
            counter: 3,
            owner_epoch: 4,
        }),
        Message::Goodbye {
            reason: "unmount".into(),
        },
        Message::LockCancelled(LockCancelled {
            lock: lock(),
            resource: b"r".to_vec(),
            mode: None,
        }),
    ];
    let stream: Vec<u8> = msgs.iter().flat_map(|m| m.encode().unwrap()).collect();
    for chunk in [1, 3, 7, 1000] {
        let mut fb = FrameBuffer::new();
        let mut out = Vec::new();
        for c in stream.chunks(chunk) {
            fb.push(c);
            while let Some(m) = fb.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, msgs);
    }
}

fn arb_mode() -> impl Strategy<Value = Mode> {
    (0u8..6).prop_map(|m| Mode::from_u8(m).unwrap())
}

fn arb_lock() -> impl Strategy<Value = (LockId, Vec<u8>)> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 1..=MAX_RESOURCE_NAME),
    )
        .prop_map(|(node, local, name)| (LockId { node, local }, name))
}

fn arb_recorded() -> impl Strategy<Value = RecordedLock> {
    (
        arb_lock(),
        proptest::option::of(arb_mode()),
        proptest::option::of(arb_mode()),
        any::<bool>(),
    )
        .prop_map(
            |((lock, resource), granted, requested, noqueue)| RecordedLock {
                lock,
                resource,
                granted,
                requested,
                noqueue,
            },
        )
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Read), Just(Kind::Write)]
}

fn arb_range() -> impl Strategy<Value = (u64, u64)> {
    (any::<u64>(), any::<u64>()).prop_map(|(a, b)| (a.min(b), a.max(b)))
}

fn arb_plock_op() -> impl Strategy<Value = PlockOp> {
    prop_oneof![
        (arb_kind(), any::<bool>()).prop_map(|(kind, wait)| PlockOp::Lock { kind, wait }),
        Just(PlockOp::Unlock),
        arb_kind().prop_map(|kind| PlockOp::Test { kind }),
        Just(PlockOp::Cancel),
        Just(PlockOp::Release),
    ]
}

fn arb_plock_message() -> impl Strategy<Value = Message> {
    let held = (any::<u64>(), any::<u32>(), arb_kind(), arb_range()).prop_map(
        |(owner, pid, kind, (start, end))| PlockHeld {
            owner,
            pid,
            kind,
            start,
            end,
        },
    );
    let result = prop_oneof![
        Just(PlockResult::Granted),
        Just(PlockResult::Free),
        Just(PlockResult::Deadlock),
        Just(PlockResult::Cancelled),
        (any::<(u64, u64, u32)>(), arb_kind(), arb_range()).prop_map(
            |((node, owner, pid), kind, (start, end))| PlockResult::Conflict(PlockHolder {
                node,
                owner,
                pid,
                kind,
                start,
                end,
            })
        ),
    ];
    prop_oneof![
        (
            arb_lock(),
            any::<bool>(),
            any::<(u64, u32)>(),
            arb_plock_op(),
            arb_range()
        )
            .prop_map(|((req, resource), flock, (owner, pid), op, (start, end))| {
                Message::PlockRequest(PlockRequest {
                    req,
                    resource,
                    flock,
                    owner,
                    pid,
                    op,
                    start,
                    end,
                })
            }),
        (arb_lock(), result).prop_map(|((req, resource), result)| {
            Message::PlockAnswer(PlockAnswer {
                req,
                resource,
                result,
            })
        }),
        (
            any::<u64>(),
            arb_lock(),
            any::<bool>(),
            proptest::collection::vec(held, 0..6)
        )
            .prop_map(|(view, (_, resource), flock, held)| {
                Message::PlockRecover(PlockRecover {
                    view,
                    resource,
                    flock,
                    held,
                })
            }),
    ]
}

#[test]
fn file_lock_messages_refuse_what_makes_no_sense() {
    let req = PlockRequest {
        req: lock(),
        resource: b"plock:7".to_vec(),
        flock: false,
        owner: 3,
        pid: 4,
        op: PlockOp::Lock {
            kind: Kind::Write,
            wait: true,
        },
        start: 10,
        end: 20,
    };
    let b = round_trips(&Message::PlockRequest(req.clone()));
    // the op byte follows lock id (16) and name (2 + 7), after the header
    let op_at = PREFIX + HEAD + 16 + 2 + 7;
    let with = |at: usize, v: u8| {
        let mut c = b.clone();
        c[at] = v;
        Message::decode_frame(&c)
    };
    // an unlock with a kind, or that waits; an unknown op; no kind
    assert!(with(op_at, 2).is_err(), "unlock with a kind");
    assert!(with(op_at, 9).is_err(), "unknown op");
    assert!(with(op_at + 1, 0).is_err(), "lock without a kind");
    assert!(with(op_at + 1, 3).is_err(), "unknown kind");
    assert!(with(op_at + 5, 4).is_err(), "unknown flag");
    // start after end, on either side
    assert!(Message::PlockRequest(PlockRequest {
        start: 21,
        ..req.clone()
    })
    .encode()
    .is_err());
    let start_at = op_at + 2 + 4 + 8 + 4;
    assert!(with(start_at + 7, 21).is_err(), "start 21 > end 20");
    // a recover count the frame cannot hold
    let rec = round_trips(&Message::PlockRecover(PlockRecover {
        view: 1,
        resource: b"plock:7".to_vec(),
        flock: true,
        held: vec![],
    }));
    let mut c = rec.clone();
    let n = c.len();
    c[n - 1] = 5;
    assert!(Message::decode_frame(&c).is_err());
}

fn arb_message() -> impl Strategy<Value = Message> {
    let payload = || proptest::collection::vec(any::<u8>(), 0..2000);
    prop_oneof![
        arb_plock_message(),
        (
            any::<u64>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<[u8; 32]>(),
            "[a-z0-9.-]{0,64}"
        )
            .prop_map(
                |(
                    node_id,
                    node_uuid,
                    volume_uuid,
                    tcp_port,
                    min_version,
                    max_version,
                    nonce,
                    hostname,
                )| Message::Hello(Hello {
                    node_id,
                    node_uuid,
                    volume_uuid,
                    tcp_port,
                    min_version,
                    max_version,
                    nonce,
                    hostname
                })
            ),
        any::<[u8; 32]>().prop_map(|mac| Message::Auth(Auth { mac })),
        any::<[u64; 4]>().prop_map(|v| Message::Heartbeat(Heartbeat {
            node_id: v[0],
            generation: v[1],
            counter: v[2],
            owner_epoch: v[3]
        })),
        (
            any::<[u64; 3]>(),
            proptest::collection::btree_set(1u64.., 0..=MAX_MEMBERS)
        )
            .prop_map(|(v, m)| Message::Membership(Membership {
                view: v[0],
                owner: v[1],
                owner_epoch: v[2],
                members: m.into_iter().collect()
            })),
        (arb_lock(), arb_mode(), any::<bool>(), any::<bool>()).prop_map(
            |((lock, resource), mode, noqueue, conv)| {
                let r = LockRequest {
                    lock,
                    resource,
                    mode,
                    noqueue,
                };
                if conv {
                    Message::LockConvert(r)
                } else {
                    Message::LockRequest(r)
                }
            }
        ),
        (arb_lock(), arb_mode()).prop_map(|((lock, resource), mode)| Message::LockGrant(
            LockGrant {
                lock,
                resource,
                mode
            }
        )),
        (arb_lock(), arb_mode(), arb_mode()).prop_map(|((lock, resource), granted, requested)| {
            Message::LockBlocking(LockBlocking {
                lock,
                resource,
                granted,
                requested,
            })
        }),
        (arb_lock(), any::<bool>()).prop_map(|((lock, resource), u)| {
            let r = LockRef { lock, resource };
            if u {
                Message::LockUnlock(r)
            } else {
                Message::LockCancel(r)
            }
        }),
        (arb_lock(), proptest::option::of(arb_mode())).prop_map(|((lock, resource), mode)| {
            Message::LockCancelled(LockCancelled {
                lock,
                resource,
                mode,
            })
        }),
        (arb_lock(), 1u8..=7).prop_map(|((lock, resource), c)| Message::LockError(LockError {
            lock,
            resource,
            code: LockErrorCode::from_u8(c).unwrap()
        })),
        (
            any::<u64>(),
            proptest::collection::vec(arb_recorded(), 0..6)
        )
            .prop_map(|(view, locks)| Message::LockRecover(LockRecover { view, locks })),
        any::<u64>().prop_map(|view| Message::LockRecoverDone { view }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<(u64, u64)>(),
            any::<u32>(),
            payload()
        )
            .prop_map(
                |(owner_epoch, request_id, (session, unique), opcode, payload)| {
                    Message::FileOp(FileOp {
                        owner_epoch,
                        request_id,
                        origin: Origin { session, unique },
                        opcode,
                        payload,
                    })
                }
            ),
        (any::<u64>(), any::<u64>(), 0i32.., payload()).prop_map(
            |(owner_epoch, request_id, errno, payload)| Message::FileOpReply(FileOpReply {
                owner_epoch,
                request_id,
                errno,
                payload
            })
        ),
        "\\PC{0,200}"
            .prop_filter("fits", |s| s.len() <= MAX_REASON)
            .prop_map(|reason| Message::Goodbye { reason }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(m in arb_message()) {
        let b = m.encode().unwrap();
        prop_assert!(b.len() <= MAX_FRAME);
        prop_assert_eq!(Message::decode_frame(&b).unwrap(), Some((m, b.len())));
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::decode_frame(&b);
        let _ = Message::decode_body(&b);
        let mut fb = FrameBuffer::new();
        fb.push(&b);
        while let Ok(Some(_)) = fb.next_message() {}
    }

    /// Headers that look right and garbage payloads, for every type.
    #[test]
    fn garbage_payloads_never_panic(t in 0u8..32, payload in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut body = vec![VERSION, t];
        body.extend_from_slice(&payload);
        let _ = Message::decode_body(&body);
    }

    /// Mutated valid frames decode to an error or to some valid message
    /// that encodes back to the same bytes: never a panic, never garbage.
    #[test]
    fn mutated_frames(m in arb_message(),
                      edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..5),
                      cut in any::<prop::sample::Index>(), truncate: bool) {
        let mut b = m.encode().unwrap();
        for (at, v) in edits {
            let i = at.index(b.len());
            b[i] = v;
        }
        if truncate {
            b.truncate(cut.index(b.len()));
        }
        if let Ok(Some((m2, used))) = Message::decode_frame(&b) {
            prop_assert_eq!(m2.encode().unwrap(), b[..used].to_vec());
        }
    }
}
