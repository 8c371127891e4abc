//! The StoreHandle's futures resolve on a glommio executor (as on a shard):
//! the one-shot replies wake the executor through its Waker.

use std::sync::Arc;

use shardsync::store::{
    Backend, Collection, EmbeddedBackend, ItemScope, ReadRequest, ReadResponse, StoreHandle, WriteBatch,
    WriteOp,
};

#[test]
fn commit_and_read_from_a_glommio_executor() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(EmbeddedBackend::open(dir.path()).unwrap());
    let (store, threads) = StoreHandle::start(backend, 1).unwrap();
    let shard_store = store.clone();
    let executor = glommio::LocalExecutorBuilder::default().name("test-shard").spawn(move || async move {
        // Several sessions of one shard committing at once.
        let commits = (0..8u64).map(|i| {
            let store = shard_store.clone();
            glommio::spawn_local(async move {
                let op = WriteOp::PutItem {
                    user: "g".into(),
                    collection: Collection::Notes,
                    server_id: None,
                    content_type: "text/plain".into(),
                    data: format!("note {i}").into_bytes(),
                    origin_device: "dev".into(),
                    map_client_id: None,
                };
                store.commit(WriteBatch { ops: vec![op] }).await
            })
        });
        let mut ids = Vec::new();
        for task in commits.collect::<Vec<_>>() {
            ids.extend(task.await.expect("commit").new_server_ids);
        }
        let snap = shard_store
            .read(ReadRequest::Datastore {
                user: "g".into(),
                device_id: "dev".into(),
                collection: Collection::Notes,
                scope: ItemScope::Whole,
            })
            .await
            .expect("read");
        (ids, snap)
    });
    let handle = match executor {
        Ok(h) => h,
        Err(e) => {
            // Sandboxes without io_uring cannot start glommio at all.
            eprintln!("skipping: glommio executor unavailable here: {e}");
            return;
        }
    };
    let (mut ids, snap) = handle.join().expect("executor");
    ids.sort();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>());
    match snap {
        ReadResponse::Datastore(s) => assert_eq!(s.items.len(), 8),
        other => panic!("{other:?}"),
    }
    threads.shutdown();
}
