//! Backend conformance suite: every [`Backend`] must pass it.
//!
//! Use it from an integration test with `mod suite;` and call
//! [`run_suite`] with a backend. Checks use user names under `prefix`, so
//! the suite can run on a store that already holds data (e.g. a shared
//! PostgreSQL database) and several times on one backend.

#![allow(dead_code)]

use std::sync::Arc;

use futures_lite::future::block_on;
use shardsync::store::{
    Backend, Collection, CommitInfo, DatastoreSnapshot, DeviceRecord, DeviceSummary, ItemRecord, ItemScope,
    ReadRequest, ReadResponse, SessionRecord, StoreError, StoreHandle, SyncState, UserRecord, WriteBatch,
    WriteOp,
};

/// A [`StoreHandle`] seen as a [`Backend`]: the suite through the store's
/// threads (queues, group-committing writer). A batch the handle answers
/// with [`StoreError::SessionConflict`] reads as a `session_conflict` info,
/// which is what the backend said.
pub struct ViaHandle(pub StoreHandle);

impl Backend for ViaHandle {
    fn read(&self, request: &ReadRequest) -> Result<ReadResponse, StoreError> {
        block_on(self.0.read(request.clone()))
    }
    fn commit(&self, batches: &[WriteBatch]) -> Result<Vec<CommitInfo>, StoreError> {
        // Submit all at once so they may share one transaction.
        let futures: Vec<_> = batches.iter().map(|b| self.0.commit(b.clone())).collect();
        futures
            .into_iter()
            .map(|f| match block_on(f) {
                Err(StoreError::SessionConflict(_)) => {
                    Ok(CommitInfo { session_conflict: true, ..Default::default() })
                }
                other => other,
            })
            .collect()
    }
}

/// Runs every check against `backend`, with user names starting with `prefix`.
pub fn run_suite(backend: Arc<dyn Backend>, prefix: &str) {
    let b = &*backend;
    users_and_devices(b, &format!("{prefix}users"));
    item_lifecycle(b, &format!("{prefix}life"));
    seq_and_ids_are_monotonic(b, &format!("{prefix}seq"));
    tombstones_in_snapshot(b, &format!("{prefix}tomb"));
    bare_items_by_scope(b, &format!("{prefix}bare"));
    mappings(b, &format!("{prefix}map"));
    explicit_server_ids(b, &format!("{prefix}explicit"));
    delete_user(b, &format!("{prefix}del"));
    sessions(b, prefix);
    session_guard(b, &format!("{prefix}guard"));
    purge_sessions(b, &format!("{prefix}purge"));
    finished_sessions(b, &format!("{prefix}finished"));
    read_many_matches_single_reads(b, &format!("{prefix}many"));
    group_commit_infos(b, &format!("{prefix}group"));
    list_and_forget_devices(b, &format!("{prefix}forget"));
}

/// Lists a user's devices.
pub fn devices(b: &dyn Backend, user: &str) -> Vec<DeviceSummary> {
    match b.read(&ReadRequest::ListDevices { user: user.into() }).expect("list devices") {
        ReadResponse::Devices(d) => d,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// `ListDevices` shows each device with its states and mapping count, sorted;
/// `ForgetDevice` drops record, states and mappings of that device only, and
/// keeps the user's items (so its next sync is slow).
fn list_and_forget_devices(b: &dyn Backend, u: &str) {
    assert!(devices(b, u).is_empty());
    let dev = |id: &str, seen: u64| DeviceRecord {
        device_id: id.into(),
        devinf_xml: Vec::new(),
        nonce: vec![7],
        first_seen: seen,
        last_seen: seen + 1,
    };
    let other_user = format!("{u}-other");
    let info = commit1(
        b,
        vec![
            WriteOp::PutUser(user_rec(u)),
            WriteOp::PutDevice { user: u.into(), device: dev("zz-tablet", 5) },
            WriteOp::PutDevice { user: u.into(), device: dev("aa-phone", 3) },
            WriteOp::PutDevice { user: other_user.clone(), device: dev("aa-phone", 9) },
            put(u, Collection::Contacts, None, "c1", "aa-phone", Some("L1")),
            put(u, Collection::Contacts, None, "c2", "aa-phone", Some("L2")),
            put(u, Collection::Notes, None, "n1", "aa-phone", Some("N1")),
            put(u, Collection::Notes, None, "n2", "zz-tablet", Some("T1")),
            put(&other_user, Collection::Notes, None, "o1", "aa-phone", Some("O1")),
            put_state(u, "aa-phone", Collection::Notes, 1),
            put_state(u, "aa-phone", Collection::Contacts, 2),
            put_state(u, "zz-tablet", Collection::Notes, 2),
            put_state(&other_user, "aa-phone", Collection::Notes, 1),
        ],
    );
    assert_eq!(info.new_server_ids.len(), 5);
    let list = devices(b, u);
    let ids: Vec<&str> = list.iter().map(|d| d.device.device_id.as_str()).collect();
    assert_eq!(ids, ["aa-phone", "zz-tablet"]);
    assert_eq!(list[0].device, dev("aa-phone", 3));
    let colls: Vec<Collection> = list[0].states.iter().map(|(c, _)| *c).collect();
    assert_eq!(colls, [Collection::Contacts, Collection::Notes]);
    assert_eq!(list[0].states[0].1, state(2));
    assert_eq!(list[0].mappings, 3);
    assert_eq!((list[1].states.len(), list[1].mappings), (1, 1));

    commit1(b, vec![WriteOp::ForgetDevice { user: u.into(), device_id: "aa-phone".into() }]);
    let list = devices(b, u);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].device.device_id, "zz-tablet");
    assert_eq!((list[0].states.len(), list[0].mappings), (1, 1));
    // The forgotten device has no state and no mapping left, but the items stay.
    let s = snapshot(b, u, "aa-phone", Collection::Contacts);
    assert_eq!(s.state, None);
    assert!(s.mappings.is_empty());
    assert_eq!(s.items.len(), 2);
    assert_eq!(
        b.read(&ReadRequest::Device { user: u.into(), device_id: "aa-phone".into() }).unwrap(),
        ReadResponse::Device(None)
    );
    // Another user's device of the same id is untouched.
    let theirs = devices(b, &other_user);
    assert_eq!((theirs.len(), theirs[0].states.len(), theirs[0].mappings), (1, 1, 1));
    // Forgetting an unknown device is no error; a forget after writes in the same group applies after them.
    commit1(
        b,
        vec![
            WriteOp::PutSyncState {
                user: u.into(),
                device_id: "zz-tablet".into(),
                collection: Collection::Tasks,
                state: state(0),
            },
            WriteOp::ForgetDevice { user: u.into(), device_id: "zz-tablet".into() },
            WriteOp::ForgetDevice { user: u.into(), device_id: "never-seen".into() },
        ],
    );
    assert!(devices(b, u).is_empty());
    assert_eq!(snapshot(b, u, "zz-tablet", Collection::Tasks).state, None);
}

/// One batch.
pub fn batch(ops: Vec<WriteOp>) -> WriteBatch {
    WriteBatch { ops }
}

/// Commits one batch and returns its info.
pub fn commit1(b: &dyn Backend, ops: Vec<WriteOp>) -> CommitInfo {
    let mut infos = b.commit(&[batch(ops)]).expect("commit");
    assert_eq!(infos.len(), 1);
    infos.remove(0)
}

/// A `PutItem` op.
pub fn put(user: &str, c: Collection, sid: Option<u64>, data: &str, dev: &str, map: Option<&str>) -> WriteOp {
    WriteOp::PutItem {
        user: user.into(),
        collection: c,
        server_id: sid,
        content_type: "text/vcard".into(),
        data: data.as_bytes().to_vec(),
        origin_device: dev.into(),
        map_client_id: map.map(str::to_owned),
    }
}

/// A `DeleteItem` op that does not name the device's client id.
pub fn del(user: &str, c: Collection, sid: u64, dev: &str) -> WriteOp {
    WriteOp::DeleteItem {
        user: user.into(),
        collection: c,
        server_id: sid,
        origin_device: dev.into(),
        client_id: None,
    }
}

/// A `DeleteItem` op naming the device's client id (as the engine does).
pub fn del_with(user: &str, c: Collection, sid: u64, dev: &str, client_id: &str) -> WriteOp {
    WriteOp::DeleteItem {
        user: user.into(),
        collection: c,
        server_id: sid,
        origin_device: dev.into(),
        client_id: Some(client_id.into()),
    }
}

/// Reads a datastore snapshot.
pub fn snapshot(b: &dyn Backend, user: &str, dev: &str, c: Collection) -> DatastoreSnapshot {
    let req = ReadRequest::Datastore {
        user: user.into(),
        device_id: dev.into(),
        collection: c,
        scope: ItemScope::Whole,
    };
    match b.read(&req).expect("read datastore") {
        ReadResponse::Datastore(s) => s,
        other => panic!("unexpected answer {other:?}"),
    }
}

fn state(seq_reached: u64) -> SyncState {
    SyncState {
        client_anchor: "c1".into(),
        server_anchor: "s1".into(),
        seq_reached,
        client_uri: "addressbook".into(),
        last_sync_type: 200,
    }
}

fn put_state(user: &str, dev: &str, c: Collection, seq_reached: u64) -> WriteOp {
    WriteOp::PutSyncState {
        user: user.into(),
        device_id: dev.into(),
        collection: c,
        state: state(seq_reached),
    }
}

fn item(s: &DatastoreSnapshot, sid: u64) -> Option<&ItemRecord> {
    s.items.iter().find(|i| i.server_id == sid)
}

fn sorted(mut v: Vec<(String, u64)>) -> Vec<(String, u64)> {
    v.sort();
    v
}

fn user_rec(name: &str) -> UserRecord {
    UserRecord { name: name.into(), md5_b64: "digest".into(), password_hash: "$argon2id$x".into() }
}

fn users_and_devices(b: &dyn Backend, u: &str) {
    assert_eq!(b.read(&ReadRequest::User { name: u.into() }).unwrap(), ReadResponse::User(None));
    commit1(b, vec![WriteOp::PutUser(user_rec(u))]);
    assert_eq!(b.read(&ReadRequest::User { name: u.into() }).unwrap(), ReadResponse::User(Some(user_rec(u))));
    let replaced = UserRecord { md5_b64: "other".into(), ..user_rec(u) };
    commit1(b, vec![WriteOp::PutUser(replaced.clone())]);
    assert_eq!(b.read(&ReadRequest::User { name: u.into() }).unwrap(), ReadResponse::User(Some(replaced)));
    match b.read(&ReadRequest::ListUsers).unwrap() {
        ReadResponse::Users(names) => assert!(names.iter().any(|n| n == u), "{names:?}"),
        other => panic!("{other:?}"),
    }

    let dev_req = ReadRequest::Device { user: u.into(), device_id: "phone".into() };
    assert_eq!(b.read(&dev_req).unwrap(), ReadResponse::Device(None));
    let dev = DeviceRecord {
        device_id: "phone".into(),
        devinf_xml: b"<DevInf/>".to_vec(),
        nonce: vec![1, 2, 3],
        first_seen: 10,
        last_seen: 20,
    };
    commit1(b, vec![WriteOp::PutDevice { user: u.into(), device: dev.clone() }]);
    assert_eq!(b.read(&dev_req).unwrap(), ReadResponse::Device(Some(dev.clone())));
    let later = DeviceRecord { last_seen: 30, ..dev };
    commit1(b, vec![WriteOp::PutDevice { user: u.into(), device: later.clone() }]);
    assert_eq!(b.read(&dev_req).unwrap(), ReadResponse::Device(Some(later)));
    // Devices are per user.
    let other = ReadRequest::Device { user: format!("{u}x"), device_id: "phone".into() };
    assert_eq!(b.read(&other).unwrap(), ReadResponse::Device(None));
}

fn item_lifecycle(b: &dyn Backend, u: &str) {
    let c = Collection::Contacts;
    let empty = snapshot(b, u, "dev", c);
    assert_eq!(empty, DatastoreSnapshot::default());

    let info = commit1(b, vec![put(u, c, None, "v1", "dev", None)]);
    assert_eq!(info.new_server_ids.len(), 1);
    let sid = info.new_server_ids[0];
    let s = snapshot(b, u, "dev", c);
    assert_eq!(s.items.len(), 1);
    let it = &s.items[0];
    assert_eq!((it.server_id, it.data.as_slice(), it.deleted), (sid, &b"v1"[..], false));
    assert_eq!(it.content_type, "text/vcard");
    assert_eq!(it.origin_device, "dev");
    assert_eq!(s.max_seq, it.seq);
    assert!(s.state.is_none());

    // Replace: same id, new data, new seq, new origin; no id allocated.
    let info = commit1(b, vec![put(u, c, Some(sid), "v2", "other", None)]);
    assert!(info.new_server_ids.is_empty());
    let s2 = snapshot(b, u, "dev", c);
    assert_eq!(s2.items.len(), 1);
    assert_eq!(s2.items[0].data, b"v2");
    assert_eq!(s2.items[0].origin_device, "other");
    assert!(s2.items[0].seq > it.seq);
    assert_eq!(s2.max_seq, s2.items[0].seq);

    // Delete: tombstone with a new seq and the deleting device as origin.
    commit1(b, vec![del(u, c, sid, "dev")]);
    let s3 = snapshot(b, u, "dev", c);
    assert_eq!(s3.items.len(), 1);
    let t = &s3.items[0];
    assert!(t.deleted);
    assert!(t.data.is_empty());
    assert_eq!(t.origin_device, "dev");
    assert!(t.seq > s2.items[0].seq);
    assert_eq!(s3.max_seq, t.seq);

    // Deleting again, or deleting an unknown id, changes nothing.
    commit1(b, vec![del(u, c, sid, "dev"), del(u, c, 999_999, "dev")]);
    assert_eq!(snapshot(b, u, "dev", c), s3);

    // Other collections are untouched.
    assert_eq!(snapshot(b, u, "dev", Collection::Calendar), DatastoreSnapshot::default());
}

fn seq_and_ids_are_monotonic(b: &dyn Backend, u: &str) {
    let c = Collection::Calendar;
    let mut last_seq = 0;
    let mut all_ids = Vec::new();
    for round in 0..3 {
        let ops = (0..5).map(|i| put(u, c, None, &format!("r{round}i{i}"), "dev", None)).collect();
        let info = commit1(b, ops);
        assert_eq!(info.new_server_ids.len(), 5);
        assert!(info.new_server_ids.windows(2).all(|w| w[0] < w[1]), "{:?}", info.new_server_ids);
        all_ids.extend(info.new_server_ids);
        let s = snapshot(b, u, "dev", c);
        assert!(s.max_seq >= last_seq + 5);
        last_seq = s.max_seq;
    }
    let mut dedup = all_ids.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 15);
    let s = snapshot(b, u, "dev", c);
    let mut seqs: Vec<u64> = s.items.iter().map(|i| i.seq).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 15, "every change has its own seq");
    assert_eq!(seqs.last().copied(), Some(s.max_seq));
    // Item data follows op order: the ids were allocated in op order.
    for (n, sid) in all_ids.iter().enumerate() {
        let expect = format!("r{}i{}", n / 5, n % 5);
        assert_eq!(item(&s, *sid).map(|i| i.data.clone()), Some(expect.into_bytes()));
    }
    // Ids and seqs are per (user, collection): another collection starts over.
    commit1(b, vec![put(u, Collection::Tasks, None, "t", "dev", None)]);
    let t = snapshot(b, u, "dev", Collection::Tasks);
    assert_eq!(t.max_seq, 1);
}

/// Stores new items from device "d1" in one commit; their server ids.
fn put_new(b: &dyn Backend, u: &str, c: Collection, data: &[&str]) -> Vec<u64> {
    commit1(b, data.iter().map(|d| put(u, c, None, d, "d1", None)).collect()).new_server_ids
}

fn tombstones_in_snapshot(b: &dyn Backend, u: &str) {
    let c = Collection::Notes;
    let ids = put_new(b, u, c, &["a", "b", "c"]);
    commit1(b, vec![del(u, c, ids[0], "d1")]);
    let after_first_delete = snapshot(b, u, "d1", c).max_seq;
    commit1(b, vec![del(u, c, ids[1], "d2")]);

    // No state: all tombstones.
    let s = snapshot(b, u, "d1", c);
    assert_eq!(s.items.len(), 3);
    assert_eq!(s.items.iter().filter(|i| i.deleted).count(), 2);

    // The device reached the first delete: only the newer tombstone.
    commit1(b, vec![put_state(u, "d1", c, after_first_delete)]);
    let s = snapshot(b, u, "d1", c);
    assert_eq!(s.state, Some(state(after_first_delete)));
    let mut got: Vec<(u64, bool)> = s.items.iter().map(|i| (i.server_id, i.deleted)).collect();
    got.sort();
    assert_eq!(got, vec![(ids[1], true), (ids[2], false)]);

    // Reached everything: live items only.
    commit1(b, vec![put_state(u, "d1", c, s.max_seq)]);
    let s = snapshot(b, u, "d1", c);
    assert_eq!(s.items.iter().map(|i| i.server_id).collect::<Vec<_>>(), vec![ids[2]]);

    // Another device without state still gets both tombstones.
    assert_eq!(snapshot(b, u, "d2", c).items.len(), 3);
}

/// Reads a datastore snapshot with `scope`.
pub fn snapshot_in(
    b: &dyn Backend,
    user: &str,
    dev: &str,
    c: Collection,
    scope: ItemScope,
) -> DatastoreSnapshot {
    let req = ReadRequest::Datastore { user: user.into(), device_id: dev.into(), collection: c, scope };
    match b.read(&req).expect("read datastore") {
        ReadResponse::Datastore(s) => s,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// (server id, seq, deleted, whole?) of every item, sorted; a whole item
/// must carry exactly what was stored.
fn shape(s: &DatastoreSnapshot, whole: &[ItemRecord]) -> Vec<(u64, u64, bool, bool)> {
    let mut out: Vec<(u64, u64, bool, bool)> = s
        .items
        .iter()
        .map(|i| {
            let full = whole.iter().find(|w| w.server_id == i.server_id).expect("item of the whole read");
            let is_whole = i == full;
            if !is_whole {
                // Bare: only id, seq and tombstone flag.
                assert_eq!(
                    (i.content_type.as_str(), i.data.as_slice(), i.origin_device.as_str()),
                    ("", &[][..], ""),
                    "a bare item carries nothing else: {i:?}"
                );
                assert_eq!((i.seq, i.deleted), (full.seq, full.deleted));
            }
            (i.server_id, i.seq, i.deleted, is_whole)
        })
        .collect();
    out.sort();
    out
}

fn bare_items_by_scope(b: &dyn Backend, u: &str) {
    let c = Collection::Tasks;
    let ids = put_new(b, u, c, &["one", "two", "three"]);
    let whole_before = snapshot(b, u, "d1", c);
    assert_eq!(whole_before.bare_up_to, 0);
    let reached = whole_before.max_seq;
    // After the device's last sync: one change, one delete.
    commit1(b, vec![put(u, c, Some(ids[0]), "one, changed", "d2", None), del(u, c, ids[1], "d2")]);
    // No state yet: every scope reads whole (the next sync is a slow one).
    for scope in [ItemScope::Whole, ItemScope::ChangedSinceLastSync] {
        let s = snapshot_in(b, u, "d1", c, scope);
        assert_eq!(s.bare_up_to, 0);
        assert!(shape(&s, &snapshot(b, u, "d1", c).items).iter().all(|x| x.3), "{scope:?}");
    }

    commit1(b, vec![put_state(u, "d1", c, reached)]);
    let whole = snapshot(b, u, "d1", c);
    let s = snapshot_in(b, u, "d1", c, ItemScope::ChangedSinceLastSync);
    assert_eq!(s.bare_up_to, reached);
    assert_eq!(
        (s.state.clone(), s.max_seq, s.mappings.clone()),
        (whole.state.clone(), whole.max_seq, whole.mappings.clone())
    );
    let got = shape(&s, &whole.items);
    // The changed item and the new tombstone are whole; the untouched one is bare.
    let seq_of = |id: u64| item(&whole, id).map(|i| i.seq).expect("item");
    assert_eq!(got, {
        let mut v = vec![
            (ids[0], seq_of(ids[0]), false, true),
            (ids[1], seq_of(ids[1]), true, true),
            (ids[2], seq_of(ids[2]), false, false),
        ];
        v.sort();
        v
    });
    // An explicit seq: only what is above it is whole.
    let s = snapshot_in(b, u, "d1", c, ItemScope::ChangedSince(whole.max_seq));
    assert_eq!(s.bare_up_to, whole.max_seq);
    assert!(shape(&s, &whole.items).iter().all(|x| !x.3));
    let s = snapshot_in(b, u, "d1", c, ItemScope::ChangedSince(0));
    assert!(shape(&s, &whole.items).iter().all(|x| x.3));

    // A state without a client anchor (a slow sync was started): whole.
    commit1(
        b,
        vec![WriteOp::PutSyncState {
            user: u.into(),
            device_id: "d1".into(),
            collection: c,
            state: SyncState { seq_reached: reached, ..Default::default() },
        }],
    );
    let s = snapshot_in(b, u, "d1", c, ItemScope::ChangedSinceLastSync);
    assert_eq!(s.bare_up_to, 0);
    assert!(shape(&s, &snapshot(b, u, "d1", c).items).iter().all(|x| x.3));
}

fn mappings(b: &dyn Backend, u: &str) {
    let c = Collection::Contacts;
    let ids = commit1(
        b,
        vec![put(u, c, None, "x", "phone", Some("L1")), put(u, c, None, "y", "phone", Some("L2"))],
    )
    .new_server_ids;
    let (x, y) = (ids[0], ids[1]);
    assert_eq!(sorted(snapshot(b, u, "phone", c).mappings), vec![("L1".into(), x), ("L2".into(), y)]);
    // Mappings are per device and per collection.
    assert!(snapshot(b, u, "laptop", c).mappings.is_empty());
    assert!(snapshot(b, u, "phone", Collection::Calendar).mappings.is_empty());

    let set = |dev: &str, cid: &str, sid: u64| WriteOp::SetMapping {
        user: u.into(),
        device_id: dev.into(),
        collection: c,
        client_id: cid.into(),
        server_id: sid,
    };
    commit1(b, vec![set("laptop", "A", x), set("laptop", "B", y)]);
    assert_eq!(sorted(snapshot(b, u, "laptop", c).mappings), vec![("A".into(), x), ("B".into(), y)]);

    // Remap a client id to another item.
    commit1(b, vec![set("laptop", "B", x)]);
    assert_eq!(sorted(snapshot(b, u, "laptop", c).mappings), vec![("A".into(), x), ("B".into(), x)]);

    // Deleting y drops phone's L2; laptop's B was remapped away from y ...
    commit1(b, vec![del(u, c, y, "phone")]);
    assert_eq!(snapshot(b, u, "phone", c).mappings, vec![("L1".into(), x)]);
    assert_eq!(sorted(snapshot(b, u, "laptop", c).mappings), vec![("A".into(), x), ("B".into(), x)]);

    // ... and deleting x drops the deleting device's mappings to x; the
    // phone keeps its own until the engine has sent it the Delete. A client
    // id that names no mapping to x changes nothing about that.
    commit1(b, vec![del_with(u, c, x, "laptop", "no-such-id")]);
    assert_eq!(snapshot(b, u, "phone", c).mappings, vec![("L1".into(), x)]);
    assert!(snapshot(b, u, "laptop", c).mappings.is_empty());
    commit1(
        b,
        vec![WriteOp::RemoveMapping {
            user: u.into(),
            device_id: "phone".into(),
            collection: c,
            client_id: "L1".into(),
        }],
    );
    assert!(snapshot(b, u, "phone", c).mappings.is_empty());

    // RemoveMapping and ClearMappings.
    let z = commit1(b, vec![put(u, c, None, "z", "phone", Some("L3"))]).new_server_ids[0];
    commit1(b, vec![set("laptop", "C", z), set("laptop", "D", z), set("tablet", "E", z)]);
    commit1(
        b,
        vec![WriteOp::RemoveMapping {
            user: u.into(),
            device_id: "laptop".into(),
            collection: c,
            client_id: "C".into(),
        }],
    );
    assert_eq!(snapshot(b, u, "laptop", c).mappings, vec![("D".into(), z)]);
    commit1(b, vec![WriteOp::ClearMappings { user: u.into(), device_id: "laptop".into(), collection: c }]);
    assert!(snapshot(b, u, "laptop", c).mappings.is_empty());
    assert_eq!(snapshot(b, u, "phone", c).mappings, vec![("L3".into(), z)]);
    assert_eq!(snapshot(b, u, "tablet", c).mappings, vec![("E".into(), z)]);
    // A cleared mapping stays gone when the item is deleted later; the
    // deleting device's mapping goes by the client id it names.
    commit1(b, vec![del_with(u, c, z, "phone", "L3")]);
    assert_eq!(snapshot(b, u, "tablet", c).mappings, vec![("E".into(), z)]);
    assert!(snapshot(b, u, "phone", c).mappings.is_empty());
}

fn explicit_server_ids(b: &dyn Backend, u: &str) {
    let c = Collection::Tasks;
    // An item created with an id the engine chose; allocation stays above it.
    commit1(b, vec![put(u, c, Some(41), "chosen", "dev", None)]);
    let next = commit1(b, vec![put(u, c, None, "allocated", "dev", None)]).new_server_ids[0];
    assert!(next > 41, "{next}");
    let s = snapshot(b, u, "dev", c);
    assert_eq!(item(&s, 41).map(|i| i.data.clone()), Some(b"chosen".to_vec()));
    // Re-putting a tombstoned id revives it.
    commit1(b, vec![del(u, c, 41, "dev")]);
    commit1(b, vec![put(u, c, Some(41), "back", "dev", None)]);
    let s = snapshot(b, u, "dev", c);
    let revived = item(&s, 41).expect("revived");
    assert!(!revived.deleted);
    assert_eq!(revived.data, b"back");
}

fn delete_user(b: &dyn Backend, u: &str) {
    // Users whose names share a prefix with `u` must survive.
    let neighbors = [format!("{u}x"), u[..u.len() - 1].to_owned()];
    for name in std::iter::once(u.to_owned()).chain(neighbors.iter().cloned()) {
        let n = name.as_str();
        commit1(
            b,
            vec![
                WriteOp::PutUser(user_rec(n)),
                WriteOp::PutDevice {
                    user: n.into(),
                    device: DeviceRecord { device_id: "d".into(), ..Default::default() },
                },
                put(n, Collection::Contacts, None, "a", "d", Some("1")),
                put(n, Collection::Notes, None, "b", "d", Some("2")),
                put_state(n, "d", Collection::Contacts, 1),
            ],
        );
        let x = commit1(b, vec![put(n, Collection::Contacts, None, "gone", "d", None)]).new_server_ids[0];
        commit1(b, vec![del(n, Collection::Contacts, x, "d")]);
    }
    let before: Vec<_> = neighbors.iter().map(|n| snapshot(b, n, "d", Collection::Contacts)).collect();
    commit1(b, vec![WriteOp::DeleteUser { name: u.into() }]);

    assert_eq!(b.read(&ReadRequest::User { name: u.into() }).unwrap(), ReadResponse::User(None));
    let dev = ReadRequest::Device { user: u.into(), device_id: "d".into() };
    assert_eq!(b.read(&dev).unwrap(), ReadResponse::Device(None));
    for c in Collection::ALL {
        assert_eq!(snapshot(b, u, "d", c), DatastoreSnapshot::default(), "{c:?}");
    }
    match b.read(&ReadRequest::ListUsers).unwrap() {
        ReadResponse::Users(names) => {
            assert!(!names.iter().any(|n| n == u));
            assert!(neighbors.iter().all(|nb| names.contains(nb)));
        }
        other => panic!("{other:?}"),
    }
    for (n, s) in neighbors.iter().zip(before) {
        assert_eq!(snapshot(b, n, "d", Collection::Contacts), s, "neighbor {n} changed");
        let dev = ReadRequest::Device { user: n.clone(), device_id: "d".into() };
        assert!(matches!(b.read(&dev).unwrap(), ReadResponse::Device(Some(_))));
    }

    // A re-created user starts from scratch (ids and seqs restart).
    let info =
        commit1(b, vec![WriteOp::PutUser(user_rec(u)), put(u, Collection::Contacts, None, "new", "d", None)]);
    assert_eq!(info.new_server_ids, vec![1]);
    assert_eq!(snapshot(b, u, "d", Collection::Contacts).max_seq, 1);
}

fn sessions(b: &dyn Backend, prefix: &str) {
    // Session keys are global; derive one from the prefix to stay apart.
    let key = prefix
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3));
    let req = ReadRequest::Session { key };
    assert_eq!(b.read(&req).unwrap(), ReadResponse::Session(None));
    let s = SessionRecord {
        key,
        state: vec![9; 100],
        last_msg_id: 3,
        last_reply: b"<SyncML/>".to_vec(),
        expires_at: 99,
    };
    commit1(b, vec![WriteOp::PutSession(s.clone())]);
    assert_eq!(b.read(&req).unwrap(), ReadResponse::Session(Some(s.clone())));
    let s2 = SessionRecord { last_msg_id: 4, ..s };
    commit1(b, vec![WriteOp::PutSession(s2.clone())]);
    assert_eq!(b.read(&req).unwrap(), ReadResponse::Session(Some(s2)));
    commit1(b, vec![WriteOp::DeleteSession { key }]);
    assert_eq!(b.read(&req).unwrap(), ReadResponse::Session(None));
}

/// A session key of its own for each check (keys are global, not per user).
fn key_of(prefix: &str) -> u64 {
    prefix.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3))
}

fn session_rec(key: u64, last_msg_id: u64, expires_at: u64) -> SessionRecord {
    SessionRecord {
        key,
        state: vec![last_msg_id as u8; 40],
        last_msg_id,
        last_reply: vec![7; 10],
        expires_at,
    }
}

/// `ExpectSession` makes its batch all-or-nothing on the stored MsgID,
/// without failing the other batches of the group.
fn session_guard(b: &dyn Backend, u: &str) {
    let c = Collection::Contacts;
    let (k, absent) = (key_of(u), key_of(&format!("{u}-absent")));
    commit1(b, vec![WriteOp::PutSession(session_rec(k, 3, u64::MAX / 2))]);
    let expect = |key, last_msg_id| WriteOp::ExpectSession { key, last_msg_id };
    let batches = vec![
        batch(vec![
            expect(k, 3),
            put(u, c, None, "x", "d", Some("X")),
            WriteOp::PutSession(session_rec(k, 4, u64::MAX / 2)),
        ]),
        // A second node with the same stale copy: the first one moved the session on.
        batch(vec![
            expect(k, 3),
            put(u, c, None, "y", "d", Some("Y")),
            WriteOp::PutSession(session_rec(k, 5, u64::MAX / 2)),
        ]),
        batch(vec![put(u, c, None, "z", "d", None)]),
        batch(vec![expect(absent, 1), put(u, c, None, "w", "d", None)]),
    ];
    let infos = b.commit(&batches).expect("group commit");
    let conflicts: Vec<bool> = infos.iter().map(|i| i.session_conflict).collect();
    assert_eq!(conflicts, vec![false, true, false, true]);
    assert_eq!(infos[0].new_server_ids.len(), 1);
    assert!(infos[1].new_server_ids.is_empty());
    let s = snapshot(b, u, "d", c);
    let mut data: Vec<&[u8]> = s.items.iter().map(|i| i.data.as_slice()).collect();
    data.sort();
    assert_eq!(data, vec![b"x".as_slice(), b"z".as_slice()]);
    assert_eq!(s.mappings.len(), 1);
    assert_eq!(
        b.read(&ReadRequest::Session { key: k }).unwrap(),
        ReadResponse::Session(Some(session_rec(k, 4, u64::MAX / 2)))
    );
    assert_eq!(b.read(&ReadRequest::Session { key: absent }).unwrap(), ReadResponse::Session(None));
    // The next message of the node that won goes on.
    let info = commit1(b, vec![expect(k, 4), WriteOp::PutSession(session_rec(k, 5, u64::MAX / 2))]);
    assert!(!info.session_conflict);
    commit1(b, vec![WriteOp::DeleteSession { key: k }]);
}

/// `PurgeSessions` drops expired sessions only.
fn purge_sessions(b: &dyn Backend, u: &str) {
    let (old, live) = (key_of(&format!("{u}-old")), key_of(&format!("{u}-live")));
    commit1(
        b,
        vec![
            WriteOp::PutSession(session_rec(old, 1, 1_000)),
            WriteOp::PutSession(session_rec(live, 1, 3_000)),
        ],
    );
    commit1(b, vec![WriteOp::PurgeSessions { expired_before: 2_000 }]);
    assert_eq!(b.read(&ReadRequest::Session { key: old }).unwrap(), ReadResponse::Session(None));
    assert_eq!(
        b.read(&ReadRequest::Session { key: live }).unwrap(),
        ReadResponse::Session(Some(session_rec(live, 1, 3_000)))
    );
    commit1(b, vec![WriteOp::DeleteSession { key: live }]);
}

/// `FinishSession` replaces the session's record: it reads back, guards the
/// next batch like any record, expires with `PurgeSessions` and goes with
/// `DeleteSession`; a new session with the same key shadows it.
fn finished_sessions(b: &dyn Backend, u: &str) {
    let (k, gone) = (key_of(u), key_of(&format!("{u}-gone")));
    let read = |key| b.read(&ReadRequest::Session { key }).unwrap();
    commit1(b, vec![WriteOp::PutSession(session_rec(k, 2, u64::MAX / 2))]);
    let info = commit1(
        b,
        vec![
            WriteOp::ExpectSession { key: k, last_msg_id: 2 },
            WriteOp::FinishSession(session_rec(k, 3, u64::MAX / 2)),
        ],
    );
    assert!(!info.session_conflict);
    assert_eq!(read(k), ReadResponse::Session(Some(session_rec(k, 3, u64::MAX / 2))));
    // A message after the last one is checked against the finished record.
    let stale = commit1(b, vec![WriteOp::ExpectSession { key: k, last_msg_id: 2 }]);
    assert!(stale.session_conflict);
    let next = commit1(b, vec![WriteOp::ExpectSession { key: k, last_msg_id: 3 }]);
    assert!(!next.session_conflict);
    // A new session with the same key shadows the finished record; deleting it removes both.
    commit1(b, vec![WriteOp::PutSession(session_rec(k, 1, u64::MAX / 2))]);
    assert_eq!(read(k), ReadResponse::Session(Some(session_rec(k, 1, u64::MAX / 2))));
    commit1(b, vec![WriteOp::DeleteSession { key: k }]);
    assert_eq!(read(k), ReadResponse::Session(None));
    // Finished records expire like the others.
    commit1(b, vec![WriteOp::FinishSession(session_rec(gone, 3, 1_000))]);
    commit1(b, vec![WriteOp::PurgeSessions { expired_before: 2_000 }]);
    assert_eq!(read(gone), ReadResponse::Session(None));
}

/// `read_many` answers what the single reads answer, in order.
fn read_many_matches_single_reads(b: &dyn Backend, u: &str) {
    let c = Collection::Contacts;
    commit1(b, vec![WriteOp::PutUser(user_rec(u)), put(u, c, None, "x", "d", Some("X"))]);
    commit1(b, vec![WriteOp::PutSession(session_rec(key_of(u), 2, u64::MAX / 2))]);
    let requests = vec![
        ReadRequest::Session { key: key_of(u) },
        ReadRequest::User { name: u.to_string() },
        ReadRequest::Device { user: u.to_string(), device_id: "d".into() },
        ReadRequest::Datastore {
            user: u.to_string(),
            device_id: "d".into(),
            collection: c,
            scope: ItemScope::Whole,
        },
        ReadRequest::Session { key: key_of(&format!("{u}-absent")) },
    ];
    let single: Vec<ReadResponse> = requests.iter().map(|r| b.read(r).unwrap()).collect();
    assert_eq!(b.read_many(&requests).unwrap(), single);
    assert!(matches!(single[3], ReadResponse::Datastore(ref s) if s.items.len() == 1));
    commit1(b, vec![WriteOp::DeleteSession { key: key_of(u) }]);
}

fn group_commit_infos(b: &dyn Backend, u: &str) {
    let c = Collection::Contacts;
    let batches = vec![
        batch(vec![put(u, c, None, "a", "d", None), put(u, c, None, "b", "d", None)]),
        batch(vec![]),
        batch(vec![put(u, c, None, "c", "d", Some("C"))]),
        batch(vec![WriteOp::PutUser(user_rec(u))]),
    ];
    let infos = b.commit(&batches).expect("group commit");
    assert_eq!(infos.len(), 4);
    assert_eq!(infos[0].new_server_ids.len(), 2);
    assert!(infos[1].new_server_ids.is_empty());
    assert_eq!(infos[2].new_server_ids.len(), 1);
    assert!(infos[3].new_server_ids.is_empty());
    // Later batches in a group see the effects of earlier ones (one id sequence).
    assert!(infos[0].new_server_ids[1] < infos[2].new_server_ids[0]);
    let s = snapshot(b, u, "d", c);
    assert_eq!(s.items.len(), 3);
    assert_eq!(s.mappings, vec![("C".into(), infos[2].new_server_ids[0])]);
    // Within a batch, a later op sees an earlier one: create then delete.
    let info = commit1(b, vec![put(u, c, None, "short", "d", Some("S"))]);
    let sid = info.new_server_ids[0];
    commit1(b, vec![put(u, c, Some(sid), "shorter", "d", None), del(u, c, sid, "d")]);
    let s = snapshot(b, u, "d", c);
    assert!(item(&s, sid).is_some_and(|i| i.deleted));
    assert!(!s.mappings.iter().any(|(_, m)| *m == sid));
    // An empty group is fine.
    assert!(b.commit(&[]).expect("empty").is_empty());
}
