//! `shardsync user …` logic: directly on the store, and through a running
//! server's admin socket while the store file is locked.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use futures_lite::future::block_on;
use shardsync::admin::{
    add_user, change_password, delete_user, list_users, send_request, socket_path, AdminError, AdminRequest,
    AdminServer,
};
use shardsync::store::{
    Backend, Collection, EmbeddedBackend, ItemScope, ReadRequest, ReadResponse, StoreHandle, UserRecord,
    WriteBatch, WriteOp,
};

fn user(b: &dyn Backend, name: &str) -> Option<UserRecord> {
    match b.read(&ReadRequest::User { name: name.into() }).unwrap() {
        ReadResponse::User(u) => u,
        other => panic!("{other:?}"),
    }
}

/// add, list, passwd, del: the same sequence, wherever the store is.
fn lifecycle(dir: &Path) {
    assert_eq!(list_users(dir).unwrap(), Vec::<String>::new());
    assert_eq!(add_user(dir, "alice", "secret").unwrap(), "user alice added");
    add_user(dir, "bob", "hunter2").unwrap();
    assert!(add_user(dir, "alice", "again").unwrap_err().to_string().contains("already exists"));
    assert!(add_user(dir, "bad:name", "pw").is_err());
    assert!(add_user(dir, "carol", "").is_err());
    assert_eq!(list_users(dir).unwrap(), vec!["alice", "bob"]);
    assert_eq!(change_password(dir, "alice", "newsecret").unwrap(), "password of alice changed");
    assert!(change_password(dir, "nobody", "x").unwrap_err().to_string().contains("no such user"));
    assert!(delete_user(dir, "bob").unwrap().contains("deleted"));
    assert!(delete_user(dir, "bob").unwrap_err().to_string().contains("no such user"));
    assert_eq!(list_users(dir).unwrap(), vec!["alice"]);
}

#[test]
fn user_commands_on_a_closed_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    lifecycle(&dir);
    let b = EmbeddedBackend::open(&dir).unwrap();
    let alice = user(&b, "alice").unwrap();
    assert!(alice.verify_basic("newsecret"));
    assert!(!alice.verify_basic("secret"));
    assert_eq!(alice.md5_b64, shardsync::users::md5_b64("alice", "newsecret"));
    assert!(user(&b, "bob").is_none());
    // Nothing at rest holds the clear password.
    drop(b);
    let raw = std::fs::read(dir.join("shardsync.redb")).unwrap();
    assert!(!raw.windows(9).any(|w| w == b"newsecret"));
}

#[test]
fn user_commands_through_the_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // "The server": holds the store open, so the commands find it locked.
    let backend: Arc<dyn Backend> = Arc::new(EmbeddedBackend::open(dir).unwrap());
    let (store, threads) = StoreHandle::start(backend.clone(), 1).unwrap();
    let server = AdminServer::spawn(store.clone(), socket_path(dir)).unwrap();
    let meta = std::fs::symlink_metadata(socket_path(dir)).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(matches!(EmbeddedBackend::open(dir), Err(shardsync::store::StoreError::Locked(_))));

    // Give bob some data, so `del` has something to remove.
    lifecycle_with_data(dir, &store);

    let alice = user(&*backend, "alice").unwrap();
    assert!(alice.verify_basic("newsecret"));

    // A bad request line gets an error answer, and the server keeps serving.
    {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(socket_path(dir)).unwrap();
        s.write_all(b"{\"op\":\"explode\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        assert!(line.contains("error"), "{line}");
    }
    assert_eq!(send_request(&socket_path(dir), &AdminRequest::List).unwrap(), "alice");

    server.shutdown();
    assert!(!socket_path(dir).exists());
    // With the server gone but the store still locked, the command says why.
    match list_users(dir) {
        Err(AdminError::Socket { path, .. }) => assert_eq!(path, socket_path(dir)),
        other => panic!("{other:?}"),
    }
    threads.shutdown();
    drop(backend);
    // Once the store is free again, the commands open it directly.
    assert_eq!(list_users(dir).unwrap(), vec!["alice"]);
}

fn lifecycle_with_data(dir: &Path, store: &StoreHandle) {
    assert_eq!(list_users(dir).unwrap(), Vec::<String>::new());
    add_user(dir, "alice", "secret").unwrap();
    add_user(dir, "bob", "hunter2").unwrap();
    let put = WriteOp::PutItem {
        user: "bob".into(),
        collection: Collection::Contacts,
        server_id: None,
        content_type: "text/vcard".into(),
        data: b"BEGIN:VCARD".to_vec(),
        origin_device: "phone".into(),
        map_client_id: Some("1".into()),
    };
    block_on(store.commit(WriteBatch { ops: vec![put] })).unwrap();
    assert!(add_user(dir, "alice", "again").unwrap_err().to_string().contains("already exists"));
    assert_eq!(list_users(dir).unwrap(), vec!["alice", "bob"]);
    change_password(dir, "alice", "newsecret").unwrap();
    assert!(change_password(dir, "nobody", "x").is_err());
    delete_user(dir, "bob").unwrap();
    assert_eq!(list_users(dir).unwrap(), vec!["alice"]);
    let snap = block_on(store.read(ReadRequest::Datastore {
        user: "bob".into(),
        device_id: "phone".into(),
        collection: Collection::Contacts,
        scope: ItemScope::Whole,
    }))
    .unwrap();
    assert_eq!(snap, ReadResponse::Datastore(Default::default()));
}

#[test]
fn stale_socket_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = socket_path(dir);
    // A socket file left behind by a server that was killed.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let backend: Arc<dyn Backend> = Arc::new(EmbeddedBackend::open(dir).unwrap());
    let (store, _threads) = StoreHandle::start(backend, 1).unwrap();
    let _server = AdminServer::spawn(store, &path).unwrap();
    assert_eq!(send_request(&path, &AdminRequest::List).unwrap(), "");
    // A regular file in the way is not removed.
    let other = dir.join("not-a-socket");
    std::fs::write(&other, b"keep").unwrap();
    let (store2, _t2) = StoreHandle::start(Arc::new(NullBackend), 1).unwrap();
    assert!(AdminServer::spawn(store2, &other).is_err());
    assert_eq!(std::fs::read(&other).unwrap(), b"keep");
}

struct NullBackend;
impl Backend for NullBackend {
    fn read(&self, _: &ReadRequest) -> Result<ReadResponse, shardsync::store::StoreError> {
        Ok(ReadResponse::Users(vec![]))
    }
    fn commit(
        &self,
        b: &[WriteBatch],
    ) -> Result<Vec<shardsync::store::CommitInfo>, shardsync::store::StoreError> {
        Ok(vec![Default::default(); b.len()])
    }
}
