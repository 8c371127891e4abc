//! Model-based check: random group commits applied to the embedded backend
//! and to the in-memory reference backend give the same answers everywhere.

use proptest::prelude::*;
use shardsync::store::{
    Backend, Collection, DeviceRecord, EmbeddedBackend, ItemScope, MemoryBackend, ReadRequest, ReadResponse,
    SessionRecord, SyncState, UserRecord, WriteBatch, WriteOp,
};

const USERS: [&str; 3] = ["u", "uu", "v"];
const DEVICES: [&str; 2] = ["d1", "d2"];
const COLLS: [Collection; 2] = [Collection::Contacts, Collection::Notes];
const CLIENT_IDS: [&str; 3] = ["a", "b", "c"];

fn user() -> impl Strategy<Value = String> {
    prop::sample::select(&USERS[..]).prop_map(str::to_owned)
}
fn device() -> impl Strategy<Value = String> {
    prop::sample::select(&DEVICES[..]).prop_map(str::to_owned)
}
fn coll() -> impl Strategy<Value = Collection> {
    prop::sample::select(&COLLS[..])
}
fn client_id() -> impl Strategy<Value = String> {
    prop::sample::select(&CLIENT_IDS[..]).prop_map(str::to_owned)
}

fn op() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        4 => (user(), coll(), prop::option::of(1u64..6), "[a-z]{0,8}", device(), prop::option::of(client_id()))
            .prop_map(|(user, collection, server_id, data, origin_device, map_client_id)| WriteOp::PutItem {
                user,
                collection,
                server_id,
                content_type: "text/plain".into(),
                data: data.into_bytes(),
                origin_device,
                map_client_id,
            }),
        // The client id may be absent, right or wrong: every backend must drop
        // exactly the origin device's mapping(s) to the item either way.
        2 => (user(), coll(), 1u64..6, device(), prop::option::of(client_id())).prop_map(
            |(user, collection, server_id, origin_device, client_id)| WriteOp::DeleteItem {
                user,
                collection,
                server_id,
                origin_device,
                client_id
            }
        ),
        1 => (user(), device(), coll(), client_id(), 1u64..6).prop_map(
            |(user, device_id, collection, client_id, server_id)| WriteOp::SetMapping {
                user,
                device_id,
                collection,
                client_id,
                server_id
            }
        ),
        1 => (user(), device(), coll(), client_id()).prop_map(|(user, device_id, collection, client_id)| {
            WriteOp::RemoveMapping { user, device_id, collection, client_id }
        }),
        1 => (user(), device(), coll())
            .prop_map(|(user, device_id, collection)| WriteOp::ClearMappings { user, device_id, collection }),
        // With and without a client anchor: bare reads depend on it.
        1 => (user(), device(), coll(), 0u64..12, any::<bool>()).prop_map(
            |(user, device_id, collection, seq_reached, anchored)| WriteOp::PutSyncState {
                user,
                device_id,
                collection,
                state: SyncState {
                    seq_reached,
                    client_anchor: if anchored { "a".into() } else { String::new() },
                    ..SyncState::default()
                },
            }
        ),
        1 => user().prop_map(|name| WriteOp::PutUser(UserRecord {
            name,
            md5_b64: "m".into(),
            password_hash: "h".into()
        })),
        1 => user().prop_map(|name| WriteOp::DeleteUser { name }),
        1 => (user(), device(), 0u64..5).prop_map(|(user, device_id, last_seen)| WriteOp::PutDevice {
            user,
            device: DeviceRecord { device_id, last_seen, ..DeviceRecord::default() }
        }),
        1 => (1u64..4, 0u64..4).prop_map(|(key, last_msg_id)| WriteOp::PutSession(session(key, last_msg_id, 1))),
        1 => (1u64..4, 0u64..4).prop_map(|(key, last_msg_id)| WriteOp::FinishSession(session(key, last_msg_id, 3))),
        1 => (1u64..4).prop_map(|key| WriteOp::DeleteSession { key }),
    ]
}

/// A session record whose state and reply tell which op wrote it.
fn session(key: u64, last_msg_id: u64, tag: u8) -> SessionRecord {
    SessionRecord { key, state: vec![tag], last_msg_id, last_reply: vec![tag + 1], expires_at: 0 }
}

fn groups() -> impl Strategy<Value = Vec<Vec<WriteBatch>>> {
    let batch = prop::collection::vec(op(), 0..5).prop_map(|ops| WriteBatch { ops });
    prop::collection::vec(prop::collection::vec(batch, 1..4), 1..7)
}

fn every_read() -> Vec<ReadRequest> {
    let mut reads = vec![ReadRequest::ListUsers];
    for key in 1..4 {
        reads.push(ReadRequest::Session { key });
    }
    for u in USERS {
        reads.push(ReadRequest::User { name: u.into() });
        for d in DEVICES {
            reads.push(ReadRequest::Device { user: u.into(), device_id: d.into() });
            for c in COLLS {
                for scope in [ItemScope::Whole, ItemScope::ChangedSinceLastSync, ItemScope::ChangedSince(2)] {
                    reads.push(ReadRequest::Datastore {
                        user: u.into(),
                        device_id: d.into(),
                        collection: c,
                        scope,
                    });
                }
            }
        }
    }
    reads
}

/// A read's answer with its mappings sorted (snapshots promise no order).
fn in_order(mut response: ReadResponse) -> ReadResponse {
    if let ReadResponse::Datastore(s) = &mut response {
        s.mappings.sort();
    }
    response
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn embedded_matches_the_memory_model(groups in groups()) {
        let dir = tempfile::tempdir().unwrap();
        let real = EmbeddedBackend::open(dir.path()).unwrap();
        let model = MemoryBackend::new();
        let reads = every_read();
        for group in &groups {
            let got = real.commit(group).unwrap();
            let want = model.commit(group).unwrap();
            prop_assert_eq!(got, want);
            for r in &reads {
                prop_assert_eq!(in_order(real.read(r).unwrap()), in_order(model.read(r).unwrap()), "{:?}", r);
            }
        }
    }
}
