//! The embedded backend: one redb file, `<data dir>/shardsync.redb`.
//!
//! redb gives ACID transactions with one writer at a time, which is exactly
//! the store's shape (one writer thread group-committing, many readers on
//! MVCC snapshots). Every commit is fsynced ([`Durability::Immediate`]).
//! redb locks the file (flock), so a second process opening the same data
//! directory gets [`StoreError::Locked`].
//!
//! Tables (every user-data key leads with the user name):
//! - `users`: name → user record
//! - `devices`: (user, device) → device record
//! - `item_blocks`: (user, collection, server id >> 4) → the records (or
//!   tombstones) of up to 16 consecutive server ids, in id order. A slow
//!   sync's hundred adds per message are a handful of B-tree writes, not a
//!   hundred; a datastore read that needs items whole scans these blocks.
//! - `item_meta`: the same keys → (server id, seq, tombstone) of each record
//!   of the block: a read that needs most items bare (a two-way sync) walks
//!   these small values and fetches only the blocks of changed items.
//! - `counters`: (user, collection) → (next server id, highest seq)
//! - `sync_states`: (user, device, collection) → sync state
//! - `mapping_buckets`: (user, device, collection, bucket) → that device's
//!   (client id, server id) pairs whose client id hashes (xxh64, seed 0) to
//!   the bucket, one of 32; a message's hundred new mappings are at most 32
//!   B-tree writes
//! - `sessions`: session key → session record
//! - `meta`: "schema" → schema version

use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, Durability, ReadTransaction, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};

use super::codec::{
    dec_device, dec_item, dec_item_id, dec_item_meta, dec_item_seq, dec_session, dec_session_meta, dec_state,
    dec_user, enc_device, enc_item_block, enc_item_fields, enc_item_meta, enc_session, enc_state, enc_user,
    item_block_records, item_meta_entries, read_map_pairs, MapBucket,
};
use super::{
    bare_item, Backend, Collection, CommitInfo, DatastoreSnapshot, DeviceSummary, ItemScope, ReadRequest,
    ReadResponse, StoreError, WriteBatch, WriteOp,
};

/// The file name of the store inside the data directory.
pub const FILE_NAME: &str = "shardsync.redb";

/// The schema version this code writes.
/// 2: the reverse mapping index `mappings_by_server_id` is gone (deletes
/// name the device's client id instead).
/// 3: the `changes` index (seq → server id) is gone: every datastore read
/// scans the collection's items, which carry their seq, so nothing read it;
/// items are stored in blocks (`item_blocks`) and mappings in buckets
/// (`mapping_buckets`) instead of one row each.
/// 4: `item_meta` beside `item_blocks` (see the module doc).
/// Opening a version 1, 2 or 3 file converts it.
const SCHEMA_VERSION: u64 = 4;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");
/// Server ids per item block: 1 << ITEM_BLOCK_BITS. Small enough that changing
/// one item rewrites little (a block of contacts with photos is ~20 KiB).
const ITEM_BLOCK_BITS: u32 = 4;
const ITEM_BLOCKS: TableDefinition<(&str, u8, u64), &[u8]> = TableDefinition::new("item_blocks");
/// The meta of each item block (same key): see the module doc.
const ITEM_META: TableDefinition<(&str, u8, u64), &[u8]> = TableDefinition::new("item_meta");
/// Schema 1 and 2's one row per item, moved into blocks by the upgrade to 3.
const ITEMS_V2: TableDefinition<(&str, u8, u64), &[u8]> = TableDefinition::new("items");
const COUNTERS: TableDefinition<(&str, u8), (u64, u64)> = TableDefinition::new("counters");
const STATES: TableDefinition<(&str, &str, u8), &[u8]> = TableDefinition::new("sync_states");
/// Buckets per (user, device, collection): a bulk insert touches at most this
/// many values, and changing one mapping rewrites 1/32 of the device's.
const MAP_BUCKET_COUNT: u64 = 32;
const MAP_BUCKETS: TableDefinition<(&str, &str, u8, u8), &[u8]> = TableDefinition::new("mapping_buckets");
/// Schema 1 and 2's one row per mapping, moved into buckets by the upgrade to 3.
const MAPS_V2: TableDefinition<(&str, &str, u8, &str), u64> = TableDefinition::new("mappings");
/// Schema 1's reverse mapping index, dropped by the upgrade to 2.
const MAPS_BY_ID_V1: TableDefinition<(&str, u8, u64, &str, &str), ()> =
    TableDefinition::new("mappings_by_server_id");
/// Schema 1 and 2's seq index, dropped by the upgrade to 3.
const CHANGES_V2: TableDefinition<(&str, u8, u64), u64> = TableDefinition::new("changes");
/// Sessions in progress. Completed ones move to [`FINISHED_SESSIONS`], so this
/// table holds only about as many records as there are sessions in flight,
/// and each message's session write touches few pages.
const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
/// Records of completed sessions, kept to answer a resend of their last
/// message until they expire. A read looks in [`SESSIONS`] first.
const FINISHED_SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("finished_sessions");

/// Options for [`EmbeddedBackend::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// redb page cache size in bytes.
    pub cache_size: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        // redb's own default is 1 GiB; a sync server's hot set (sessions,
        // counters, recent items) is far smaller, and memory is shared.
        EmbeddedOptions { cache_size: 256 << 20 }
    }
}

/// The embedded (redb) store backend.
pub struct EmbeddedBackend {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBackend").field("path", &self.path).finish()
    }
}

fn be(e: impl Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The key byte of a collection.
fn coll(c: Collection) -> u8 {
    match c {
        Collection::Contacts => 0,
        Collection::Calendar => 1,
        Collection::Tasks => 2,
        Collection::Notes => 3,
    }
}

/// The smallest string greater than every key component equal to `s`
/// (an exclusive upper bound for a prefix scan on `s`).
fn after(s: &str) -> String {
    let mut next = String::with_capacity(s.len() + 1);
    next.push_str(s);
    next.push('\0');
    next
}

impl EmbeddedBackend {
    /// Opens (or creates) the store in `data_dir`, creating the directory
    /// (mode 0700; the store file 0600; looser existing ones are tightened).
    ///
    /// Fails with [`StoreError::Locked`] if another process (or another open
    /// handle) holds the file.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<EmbeddedBackend, StoreError> {
        EmbeddedBackend::open_with(data_dir, EmbeddedOptions::default())
    }

    /// Like [`EmbeddedBackend::open`], with explicit options.
    pub fn open_with(
        data_dir: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<EmbeddedBackend, StoreError> {
        let dir = data_dir.as_ref();
        // 0700 / 0600 whatever the umask: the store holds the users' auth-md5 digests.
        super::private::private_dir(dir).map_err(|e| {
            StoreError::Backend(format!("cannot create a private data directory {}: {e}", dir.display()))
        })?;
        let path = dir.join(FILE_NAME);
        let file = super::private::private_file(&path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        let db = Database::builder().set_cache_size(options.cache_size).create_file(file).map_err(
            |e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(format!(
                    "{} is open in another process (is `shardsync serve` running on this data directory?)",
                    path.display()
                )),
                other => StoreError::Backend(format!("cannot open {}: {other}", path.display())),
            },
        )?;
        let backend = EmbeddedBackend { db, path };
        backend.init_schema()?;
        Ok(backend)
    }

    /// The path of the store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(be)?;
        {
            let mut meta = txn.open_table(META).map_err(be)?;
            let found = meta.get("schema").map_err(be)?.map(|v| v.value());
            match found {
                None => {
                    meta.insert("schema", SCHEMA_VERSION).map_err(be)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(old @ 1..=3) => {
                    meta.insert("schema", SCHEMA_VERSION).map_err(be)?;
                    if old <= 2 {
                        // Both indexes cost an insert per item or mapping; nothing reads them now.
                        if old == 1 {
                            txn.delete_table(MAPS_BY_ID_V1).map_err(be)?;
                        }
                        txn.delete_table(CHANGES_V2).map_err(be)?;
                        let moved = move_items_into_blocks(&txn)?;
                        txn.delete_table(ITEMS_V2).map_err(be)?;
                        let mappings = move_mappings_into_buckets(&txn)?;
                        txn.delete_table(MAPS_V2).map_err(be)?;
                        tracing::info!(
                            items = moved,
                            mappings,
                            "items moved into blocks, mappings into buckets"
                        );
                    }
                    let blocks = write_item_meta(&txn)?;
                    tracing::info!(blocks, "item meta written for every item block");
                    tracing::info!(
                        path = %self.path.display(),
                        "store upgraded from schema version {old} to {SCHEMA_VERSION}"
                    );
                }
                Some(v) => {
                    return Err(StoreError::Backend(format!(
                        "{} has schema version {v}; this build reads version {SCHEMA_VERSION}",
                        self.path.display()
                    )))
                }
            }
            // Creating every table up front lets readers open them unconditionally.
            txn.open_table(USERS).map_err(be)?;
            txn.open_table(DEVICES).map_err(be)?;
            txn.open_table(ITEM_BLOCKS).map_err(be)?;
            txn.open_table(ITEM_META).map_err(be)?;
            txn.open_table(COUNTERS).map_err(be)?;
            txn.open_table(STATES).map_err(be)?;
            txn.open_table(MAP_BUCKETS).map_err(be)?;
            txn.open_table(SESSIONS).map_err(be)?;
            // Added within schema 3 (older schema 3 builds ignore it).
            txn.open_table(FINISHED_SESSIONS).map_err(be)?;
        }
        txn.commit().map_err(be)
    }
}

impl EmbeddedBackend {}

/// Answers one read within `txn`.
fn read_in(txn: &ReadTransaction, request: &ReadRequest) -> Result<ReadResponse, StoreError> {
    match request {
        ReadRequest::User { name } => {
            let t = txn.open_table(USERS).map_err(be)?;
            let v = t.get(name.as_str()).map_err(be)?;
            Ok(ReadResponse::User(v.map(|v| dec_user(v.value())).transpose()?))
        }
        ReadRequest::Device { user, device_id } => {
            let t = txn.open_table(DEVICES).map_err(be)?;
            let v = t.get((user.as_str(), device_id.as_str())).map_err(be)?;
            Ok(ReadResponse::Device(v.map(|v| dec_device(v.value())).transpose()?))
        }
        ReadRequest::Datastore { user, device_id, collection, scope } => {
            Ok(ReadResponse::Datastore(snapshot_in(txn, user, device_id, *collection, *scope)?))
        }
        ReadRequest::Session { key } => {
            let mut v = txn.open_table(SESSIONS).map_err(be)?.get(*key).map_err(be)?;
            if v.is_none() {
                v = txn.open_table(FINISHED_SESSIONS).map_err(be)?.get(*key).map_err(be)?;
            }
            Ok(ReadResponse::Session(v.map(|v| dec_session(v.value())).transpose()?))
        }
        ReadRequest::ListUsers => {
            let t = txn.open_table(USERS).map_err(be)?;
            let mut names = Vec::new();
            for entry in t.iter().map_err(be)? {
                let (k, _) = entry.map_err(be)?;
                names.push(k.value().to_owned());
            }
            Ok(ReadResponse::Users(names))
        }
        ReadRequest::ListDevices { user } => Ok(ReadResponse::Devices(devices_in(txn, user)?)),
    }
}

fn snapshot_in(
    txn: &ReadTransaction,
    user: &str,
    device: &str,
    c: Collection,
    scope: ItemScope,
) -> Result<DatastoreSnapshot, StoreError> {
    let c = coll(c);
    let state = match txn.open_table(STATES).map_err(be)?.get((user, device, c)).map_err(be)? {
        Some(v) => Some(dec_state(v.value())?),
        None => None,
    };
    let mut mappings = Vec::new();
    let maps = txn.open_table(MAP_BUCKETS).map_err(be)?;
    for entry in maps.range((user, device, c, 0u8)..=(user, device, c, u8::MAX)).map_err(be)? {
        let (_, v) = entry.map_err(be)?;
        // Bucket by bucket: the snapshot promises no order (sorting a
        // thousand client ids cost more than reading them).
        read_map_pairs(v.value(), &mut mappings)?;
    }
    // Without a state the device has seen nothing: every tombstone counts.
    let reached = state.as_ref().map_or(0, |s| s.seq_reached);
    let bare_up_to = scope.bare_up_to(state.as_ref());
    let mut items = Vec::new();
    let blocks = txn.open_table(ITEM_BLOCKS).map_err(be)?;
    if bare_up_to == 0 {
        for entry in blocks.range((user, c, 0u64)..=(user, c, u64::MAX)).map_err(be)? {
            let (_, v) = entry.map_err(be)?;
            for record in item_block_records(v.value())? {
                let (seq, deleted) = dec_item_seq(record)?;
                if !deleted || seq > reached {
                    items.push(dec_item(record)?);
                }
            }
        }
    } else {
        // Mostly bare: walk the meta; fetch a block only for its changed items.
        let meta = txn.open_table(ITEM_META).map_err(be)?;
        for entry in meta.range((user, c, 0u64)..=(user, c, u64::MAX)).map_err(be)? {
            let (k, v) = entry.map_err(be)?;
            let block_id = k.value().2;
            let mut block = None;
            for (server_id, seq, deleted) in item_meta_entries(v.value())? {
                if deleted && seq <= reached {
                    continue;
                }
                if seq <= bare_up_to {
                    items.push(bare_item(server_id, seq, deleted));
                    continue;
                }
                if block.is_none() {
                    block = blocks.get((user, c, block_id)).map_err(be)?;
                }
                let Some(b) = &block else { return Err(be("item meta names a missing item block")) };
                let record = item_block_records(b.value())?
                    .into_iter()
                    .find(|r| dec_item_id(r).is_ok_and(|id| id == server_id))
                    .ok_or_else(|| be("item meta names an item its block lacks"))?;
                items.push(dec_item(record)?);
            }
        }
    }
    let max_seq =
        txn.open_table(COUNTERS).map_err(be)?.get((user, c)).map_err(be)?.map_or(0, |v| v.value().1);
    Ok(DatastoreSnapshot { state, mappings, items, bare_up_to, max_seq })
}

/// Every device of `user` with its sync states and mapping count, in one snapshot.
fn devices_in(txn: &ReadTransaction, user: &str) -> Result<Vec<DeviceSummary>, StoreError> {
    let devices = txn.open_table(DEVICES).map_err(be)?;
    let states = txn.open_table(STATES).map_err(be)?;
    let maps = txn.open_table(MAP_BUCKETS).map_err(be)?;
    let next = after(user);
    let mut out = Vec::new();
    for entry in devices.range((user, "")..(next.as_str(), "")).map_err(be)? {
        let (_, v) = entry.map_err(be)?;
        out.push(DeviceSummary { device: dec_device(v.value())?, ..Default::default() });
    }
    for d in &mut out {
        let id = d.device.device_id.as_str();
        let id_next = after(id);
        for entry in states.range((user, id, 0u8)..(user, id_next.as_str(), 0u8)).map_err(be)? {
            let (k, v) = entry.map_err(be)?;
            let Some(c) = Collection::ALL.get(usize::from(k.value().2)).copied() else {
                return Err(StoreError::Backend(format!("bad collection byte {}", k.value().2)));
            };
            d.states.push((c, dec_state(v.value())?));
        }
        let range = (user, id, 0u8, 0u8)..(user, id_next.as_str(), 0u8, 0u8);
        for entry in maps.range(range).map_err(be)? {
            let (_, v) = entry.map_err(be)?;
            d.mappings += MapBucket::decode(v.value())?.len() as u64;
        }
    }
    Ok(out)
}

impl Backend for EmbeddedBackend {
    fn read(&self, request: &ReadRequest) -> Result<ReadResponse, StoreError> {
        read_in(&self.db.begin_read().map_err(be)?, request)
    }

    /// All answers from one read transaction: one MVCC snapshot, and one
    /// transaction set-up instead of one per read (a new session's first
    /// message reads its session, user, device and datastores together).
    fn read_many(&self, requests: &[ReadRequest]) -> Result<Vec<ReadResponse>, StoreError> {
        let txn = self.db.begin_read().map_err(be)?;
        requests.iter().map(|r| read_in(&txn, r)).collect()
    }

    fn commit(&self, batches: &[WriteBatch]) -> Result<Vec<CommitInfo>, StoreError> {
        if batches.iter().all(|b| b.ops.is_empty()) {
            return Ok(vec![CommitInfo::default(); batches.len()]);
        }
        let mut txn = self.db.begin_write().map_err(be)?;
        txn.set_durability(Durability::Immediate);
        // On any error `txn` is dropped uncommitted: redb rolls it back whole.
        let infos = {
            let mut w = Writer::open(&txn)?;
            let infos = batches.iter().map(|b| w.apply_batch(b)).collect::<Result<Vec<_>, _>>()?;
            w.flush_blocks()?;
            w.flush_buckets()?;
            w.flush_counters()?;
            infos
        };
        txn.commit().map_err(be)?;
        Ok(infos)
    }
}

/// The open tables of one write transaction.
struct Writer<'t> {
    users: Table<'t, &'static str, &'static [u8]>,
    devices: Table<'t, (&'static str, &'static str), &'static [u8]>,
    item_blocks: Table<'t, (&'static str, u8, u64), &'static [u8]>,
    item_meta: Table<'t, (&'static str, u8, u64), &'static [u8]>,
    counters: Table<'t, (&'static str, u8), (u64, u64)>,
    states: Table<'t, (&'static str, &'static str, u8), &'static [u8]>,
    maps: Table<'t, (&'static str, &'static str, u8, u8), &'static [u8]>,
    sessions: Table<'t, u64, &'static [u8]>,
    finished: Table<'t, u64, &'static [u8]>,
    /// (next server id, highest seq) per (user, collection), written back once per commit.
    counters_cache: CommitCache<(String, u8), (u64, u64)>,
    /// The item blocks this commit touched, written back once at its end.
    blocks: CommitCache<BlockKey, Block>,
    /// The mapping buckets this commit touched, written back at its end (or
    /// before an op that works on the table's ranges).
    buckets: CommitCache<BucketKey, MapBucket>,
}

/// A mapping bucket's key with owned strings: (user, device, collection byte, bucket).
type BucketKey = (String, String, u8, u8);

/// Values a commit reads from a table once, changes in memory and writes back
/// once at its end (counters, item blocks, mapping buckets).
struct CommitCache<K, V> {
    entries: Vec<(K, Cached<V>)>,
    /// Where each key's entry is.
    index: HashMap<K, usize>,
    /// The entry the last lookup found: consecutive ops mostly share one, and
    /// checking it first needs no owned key.
    last: usize,
}

/// A cached value and whether the commit changed it.
struct Cached<V> {
    value: V,
    dirty: bool,
}

impl<V> Cached<V> {
    /// The value, to be changed (it will be written back).
    fn changed(&mut self) -> &mut V {
        self.dirty = true;
        &mut self.value
    }
}

impl<K: Eq + std::hash::Hash + Clone, V> CommitCache<K, V> {
    fn new() -> Self {
        CommitCache { entries: Vec::new(), index: HashMap::new(), last: 0 }
    }

    /// The entry `is` recognizes; `key` names it and `load` reads it on its
    /// first use in the commit.
    fn get_or_load(
        &mut self,
        is: impl Fn(&K) -> bool,
        key: impl FnOnce() -> K,
        load: impl FnOnce() -> Result<V, StoreError>,
    ) -> Result<&mut Cached<V>, StoreError> {
        let at = match self.entries.get(self.last) {
            Some((k, _)) if is(k) => self.last,
            _ => {
                let key = key();
                match self.index.get(&key) {
                    Some(&at) => at,
                    None => {
                        let value = load()?;
                        self.index.insert(key.clone(), self.entries.len());
                        self.entries.push((key, Cached { value, dirty: false }));
                        self.entries.len() - 1
                    }
                }
            }
        };
        self.last = at;
        self.entries.get_mut(at).map(|(_, c)| c).ok_or_else(|| StoreError::Backend("commit cache".into()))
    }

    /// Every entry, emptying the cache.
    fn drain(&mut self) -> impl Iterator<Item = (K, Cached<V>)> + '_ {
        self.index.clear();
        self.entries.drain(..)
    }

    /// Drops the entries whose key fails `keep`, changed or not.
    fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.entries.retain(|(k, _)| keep(k));
        self.index = self.entries.iter().enumerate().map(|(at, (k, _))| (k.clone(), at)).collect();
    }
}

/// The bucket of a client id (stable: stored data depends on it).
fn bucket_of(client_id: &str) -> u8 {
    (xxhash_rust::xxh64::xxh64(client_id.as_bytes(), 0) % MAP_BUCKET_COUNT) as u8
}

/// Moves schema 1/2's one-row-per-mapping table into buckets (same transaction).
fn move_mappings_into_buckets(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let old = txn.open_table(MAPS_V2).map_err(be)?;
    let mut table = txn.open_table(MAP_BUCKETS).map_err(be)?;
    // The old table is ordered by (user, device, collection): one group's
    // buckets are in memory at a time, whatever the store's size.
    let mut group: Option<(String, String, u8)> = None;
    let mut buckets: HashMap<u8, MapBucket> = HashMap::new();
    let mut write = |group: &(String, String, u8), buckets: &mut HashMap<u8, MapBucket>| {
        for (b, bucket) in buckets.drain() {
            table.insert((group.0.as_str(), group.1.as_str(), group.2, b), bucket.bytes()).map_err(be)?;
        }
        Ok::<(), StoreError>(())
    };
    let mut moved = 0u64;
    for entry in old.iter().map_err(be)? {
        let (k, v) = entry.map_err(be)?;
        let (user, device, c, client_id) = k.value();
        let same = group.as_ref().is_some_and(|(u, d, gc)| *gc == c && u == user && d == device);
        if !same {
            if let Some(done) = group.take() {
                write(&done, &mut buckets)?;
            }
            group = Some((user.to_owned(), device.to_owned(), c));
        }
        buckets.entry(bucket_of(client_id)).or_insert_with(MapBucket::new).set(client_id, v.value());
        moved += 1;
    }
    if let Some(done) = group {
        write(&done, &mut buckets)?;
    }
    Ok(moved)
}

/// An item block being changed by a commit: its records by server id.
struct Block {
    records: Vec<(u64, Vec<u8>)>,
}

impl Block {
    fn get(&self, sid: u64) -> Option<&[u8]> {
        let at = self.records.binary_search_by_key(&sid, |(id, _)| *id).ok()?;
        self.records.get(at).map(|(_, r)| r.as_slice())
    }

    fn put(&mut self, sid: u64, record: Vec<u8>) {
        match self.records.binary_search_by_key(&sid, |(id, _)| *id) {
            Ok(at) => self.records[at].1 = record,
            Err(at) => self.records.insert(at, (sid, record)),
        }
    }
}

/// The `item_meta` value of a block holding `records`.
fn block_meta<'r>(records: impl Iterator<Item = &'r [u8]>, count: usize) -> Result<Vec<u8>, StoreError> {
    let entries = records.map(dec_item_meta).collect::<Result<Vec<_>, StoreError>>()?;
    Ok(enc_item_meta(entries.into_iter(), count))
}

/// Writes `item_meta` for every item block (upgrade to schema 4, same
/// transaction). Returns the number of blocks.
fn write_item_meta(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let blocks = txn.open_table(ITEM_BLOCKS).map_err(be)?;
    let mut meta = txn.open_table(ITEM_META).map_err(be)?;
    let mut n = 0u64;
    for entry in blocks.iter().map_err(be)? {
        let (k, v) = entry.map_err(be)?;
        let records = item_block_records(v.value())?;
        let value = block_meta(records.iter().copied(), records.len())?;
        meta.insert(k.value(), value.as_slice()).map_err(be)?;
        n += 1;
    }
    Ok(n)
}

/// An item block's key with owned strings: (user, collection byte, block id).
type BlockKey = (String, u8, u64);

/// Moves schema 1/2's one-row-per-item table into blocks (same transaction).
fn move_items_into_blocks(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let old = txn.open_table(ITEMS_V2).map_err(be)?;
    let mut blocks = txn.open_table(ITEM_BLOCKS).map_err(be)?;
    let mut current: Option<(BlockKey, Vec<Vec<u8>>)> = None;
    let mut moved = 0u64;
    let mut write = |key: &BlockKey, records: &[Vec<u8>]| {
        let size = records.iter().map(|r| r.len() + 8).sum();
        let value = enc_item_block(records.iter().map(Vec::as_slice), size);
        blocks.insert((key.0.as_str(), key.1, key.2), value.as_slice()).map(|_| ()).map_err(be)
    };
    for entry in old.iter().map_err(be)? {
        let (k, v) = entry.map_err(be)?;
        let (user, c, sid) = k.value();
        let key = (user.to_owned(), c, sid >> ITEM_BLOCK_BITS);
        match &mut current {
            Some((at, records)) if *at == key => records.push(v.value().to_vec()),
            _ => {
                if let Some((at, records)) = current.take() {
                    write(&at, &records)?;
                }
                current = Some((key, vec![v.value().to_vec()]));
            }
        }
        moved += 1;
    }
    if let Some((at, records)) = current {
        write(&at, &records)?;
    }
    Ok(moved)
}

impl<'t> Writer<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Writer<'t>, StoreError> {
        Ok(Writer {
            users: txn.open_table(USERS).map_err(be)?,
            devices: txn.open_table(DEVICES).map_err(be)?,
            item_blocks: txn.open_table(ITEM_BLOCKS).map_err(be)?,
            item_meta: txn.open_table(ITEM_META).map_err(be)?,
            counters: txn.open_table(COUNTERS).map_err(be)?,
            states: txn.open_table(STATES).map_err(be)?,
            maps: txn.open_table(MAP_BUCKETS).map_err(be)?,
            sessions: txn.open_table(SESSIONS).map_err(be)?,
            finished: txn.open_table(FINISHED_SESSIONS).map_err(be)?,
            counters_cache: CommitCache::new(),
            blocks: CommitCache::new(),
            buckets: CommitCache::new(),
        })
    }

    fn counter(&mut self, user: &str, c: u8) -> Result<&mut (u64, u64), StoreError> {
        let counters = &self.counters;
        let entry = self.counters_cache.get_or_load(
            |(u, cc)| *cc == c && u == user,
            || (user.to_owned(), c),
            || Ok(counters.get((user, c)).map_err(be)?.map_or((1, 0), |v| v.value())),
        )?;
        // Every counter looked up is advanced: all are written back.
        Ok(entry.changed())
    }

    /// The block holding `sid`, read from the table on its first use in this commit.
    fn block(&mut self, user: &str, c: u8, sid: u64) -> Result<&mut Cached<Block>, StoreError> {
        let id = sid >> ITEM_BLOCK_BITS;
        let table = &self.item_blocks;
        self.blocks.get_or_load(
            |(u, bc, bid)| *bid == id && *bc == c && u == user,
            || (user.to_owned(), c, id),
            || {
                let records = match table.get((user, c, id)).map_err(be)? {
                    Some(v) => item_block_records(v.value())?
                        .into_iter()
                        .map(|r| Ok((dec_item_id(r)?, r.to_vec())))
                        .collect::<Result<Vec<_>, StoreError>>()?,
                    None => Vec::new(),
                };
                Ok(Block { records })
            },
        )
    }

    /// The bucket `client_id` of (user, device, collection) falls in, read from
    /// the table on its first use in this commit.
    fn bucket(
        &mut self,
        user: &str,
        device: &str,
        c: u8,
        client_id: &str,
    ) -> Result<&mut Cached<MapBucket>, StoreError> {
        let n = bucket_of(client_id);
        let maps = &self.maps;
        self.buckets.get_or_load(
            |(u, d, bc, bn)| *bn == n && *bc == c && u == user && d == device,
            || (user.to_owned(), device.to_owned(), c, n),
            || match maps.get((user, device, c, n)).map_err(be)? {
                Some(v) => MapBucket::decode(v.value()),
                None => Ok(MapBucket::new()),
            },
        )
    }

    /// Writes the changed buckets back and empties the cache, so the table is
    /// whole again (at the end of a commit, and before range operations).
    fn flush_buckets(&mut self) -> Result<(), StoreError> {
        for ((user, device, c, n), b) in self.buckets.drain().filter(|(_, b)| b.dirty) {
            let key = (user.as_str(), device.as_str(), c, n);
            if b.value.is_empty() {
                self.maps.remove(key).map_err(be)?;
            } else {
                self.maps.insert(key, b.value.bytes()).map_err(be)?;
            }
        }
        Ok(())
    }

    /// Writes the changed blocks and their meta back (once per commit).
    fn flush_blocks(&mut self) -> Result<(), StoreError> {
        for ((user, c, id), b) in self.blocks.drain().filter(|(_, b)| b.dirty) {
            let records = &b.value.records;
            let size = records.iter().map(|(_, r)| r.len() + 8).sum();
            let value = enc_item_block(records.iter().map(|(_, r)| r.as_slice()), size);
            let meta = block_meta(records.iter().map(|(_, r)| r.as_slice()), records.len())?;
            self.item_blocks.insert((user.as_str(), c, id), value.as_slice()).map_err(be)?;
            self.item_meta.insert((user.as_str(), c, id), meta.as_slice()).map_err(be)?;
        }
        Ok(())
    }

    fn flush_counters(&mut self) -> Result<(), StoreError> {
        for ((user, c), counter) in self.counters_cache.drain() {
            self.counters.insert((user.as_str(), c), counter.value).map_err(be)?;
        }
        Ok(())
    }

    fn apply_batch(&mut self, batch: &WriteBatch) -> Result<CommitInfo, StoreError> {
        let mut info = CommitInfo::default();
        if let Some((key, last)) = batch.expected_session() {
            let mut found = self.sessions.get(key).map_err(be)?;
            if found.is_none() {
                found = self.finished.get(key).map_err(be)?;
            }
            let stored = match found {
                Some(v) => Some(dec_session_meta(v.value())?.0),
                None => None,
            };
            // 0: the batch starts a session and expects none under its key.
            if stored.unwrap_or(0) != last {
                info.session_conflict = true;
                return Ok(info);
            }
        }
        for op in &batch.ops {
            self.apply(op, &mut info)?;
        }
        Ok(info)
    }

    fn apply(&mut self, op: &WriteOp, info: &mut CommitInfo) -> Result<(), StoreError> {
        match op {
            WriteOp::PutUser(u) => {
                self.users.insert(u.name.as_str(), enc_user(u).as_slice()).map_err(be)?;
            }
            WriteOp::DeleteUser { name } => self.delete_user(name)?,
            WriteOp::PutDevice { user, device } => {
                let key = (user.as_str(), device.device_id.as_str());
                self.devices.insert(key, enc_device(device).as_slice()).map_err(be)?;
            }
            WriteOp::PutItem {
                user,
                collection,
                server_id,
                content_type,
                data,
                origin_device,
                map_client_id,
            } => {
                let c = coll(*collection);
                let counter = self.counter(user, c)?;
                let sid = match server_id {
                    Some(id) => {
                        // Keep allocation above any id the engine chose itself.
                        counter.0 = counter.0.max(id.saturating_add(1));
                        *id
                    }
                    None => {
                        let id = counter.0;
                        counter.0 += 1;
                        info.new_server_ids.push(id);
                        id
                    }
                };
                counter.1 += 1;
                let seq = counter.1;
                let record = enc_item_fields(sid, seq, content_type, data, origin_device, false);
                self.block(user, c, sid)?.changed().put(sid, record);
                if let Some(client_id) = map_client_id {
                    self.set_mapping(user, origin_device, c, client_id, sid)?;
                }
            }
            WriteOp::DeleteItem { user, collection, server_id, origin_device, client_id } => {
                let c = coll(*collection);
                let old =
                    self.block(user, c, *server_id)?.value.get(*server_id).map(dec_item_seq).transpose()?;
                // Deleting a missing item or a tombstone changes nothing but mappings.
                if let Some((_, false)) = old {
                    let counter = self.counter(user, c)?;
                    counter.1 += 1;
                    let seq = counter.1;
                    let record = enc_item_fields(*server_id, seq, "", &[], origin_device, true);
                    self.block(user, c, *server_id)?.changed().put(*server_id, record);
                }
                // Other devices keep their mapping until the delete reaches them.
                self.drop_mapping_to(user, origin_device, c, *server_id, client_id.as_deref())?;
            }
            WriteOp::SetMapping { user, device_id, collection, client_id, server_id } => {
                self.set_mapping(user, device_id, coll(*collection), client_id, *server_id)?;
            }
            WriteOp::RemoveMapping { user, device_id, collection, client_id } => {
                let b = self.bucket(user, device_id, coll(*collection), client_id)?;
                if b.value.remove(client_id) {
                    b.dirty = true;
                }
            }
            WriteOp::ClearMappings { user, device_id, collection } => {
                self.flush_buckets()?;
                let (u, d, c) = (user.as_str(), device_id.as_str(), coll(*collection));
                self.maps.retain_in((u, d, c, 0u8)..=(u, d, c, u8::MAX), |_, _| false).map_err(be)?;
            }
            WriteOp::PutSyncState { user, device_id, collection, state } => {
                let key = (user.as_str(), device_id.as_str(), coll(*collection));
                self.states.insert(key, enc_state(state).as_slice()).map_err(be)?;
            }
            WriteOp::PutSession(s) => {
                self.sessions.insert(s.key, enc_session(s).as_slice()).map_err(be)?;
            }
            WriteOp::FinishSession(s) => {
                self.sessions.remove(s.key).map_err(be)?;
                self.finished.insert(s.key, enc_session(s).as_slice()).map_err(be)?;
            }
            WriteOp::DeleteSession { key } => {
                // Both: a finished record of an earlier session with the same key
                // must not come back once the newer one is gone.
                self.sessions.remove(*key).map_err(be)?;
                self.finished.remove(*key).map_err(be)?;
            }
            WriteOp::ForgetDevice { user, device_id } => self.forget_device(user, device_id)?,
            WriteOp::PurgeSessions { expired_before } => {
                // A record that does not decode is dropped too: it can never be continued.
                let live = |v: &[u8]| dec_session_meta(v).is_ok_and(|(_, exp)| exp >= *expired_before);
                self.sessions.retain(|_, v| live(v)).map_err(be)?;
                self.finished.retain(|_, v| live(v)).map_err(be)?;
            }
            // Checked by `apply_batch` before anything of the batch is applied.
            WriteOp::ExpectSession { .. } => {}
        }
        Ok(())
    }

    fn set_mapping(
        &mut self,
        user: &str,
        device: &str,
        c: u8,
        client_id: &str,
        sid: u64,
    ) -> Result<(), StoreError> {
        self.bucket(user, device, c, client_id)?.changed().set(client_id, sid);
        Ok(())
    }

    /// Drops `device`'s mapping(s) to `sid`. `client_id`, when the caller
    /// knows it, finds the mapping directly; otherwise (or if it names
    /// another item) the device's mappings of the collection are scanned.
    fn drop_mapping_to(
        &mut self,
        user: &str,
        device: &str,
        c: u8,
        sid: u64,
        client_id: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(cid) = client_id {
            let b = self.bucket(user, device, c, cid)?;
            if b.value.get(cid) == Some(sid) {
                b.changed().remove(cid);
                return Ok(());
            }
        }
        self.flush_buckets()?;
        let mut changed = Vec::new();
        for entry in self.maps.range((user, device, c, 0u8)..=(user, device, c, u8::MAX)).map_err(be)? {
            let (k, v) = entry.map_err(be)?;
            let mut bucket = MapBucket::decode(v.value())?;
            if bucket.remove_server_id(sid) {
                changed.push((k.value().3, bucket));
            }
        }
        for (n, bucket) in changed {
            if bucket.is_empty() {
                self.maps.remove((user, device, c, n)).map_err(be)?;
            } else {
                self.maps.insert((user, device, c, n), bucket.bytes()).map_err(be)?;
            }
        }
        Ok(())
    }

    fn forget_device(&mut self, user: &str, device: &str) -> Result<(), StoreError> {
        let (u, d) = (user, device);
        let next = after(d);
        let n = next.as_str();
        self.devices.remove((u, d)).map_err(be)?;
        self.states.retain_in((u, d, 0u8)..(u, n, 0u8), |_, _| false).map_err(be)?;
        self.flush_buckets()?;
        self.maps.retain_in((u, d, 0u8, 0u8)..(u, n, 0u8, 0u8), |_, _| false).map_err(be)?;
        Ok(())
    }

    fn delete_user(&mut self, user: &str) -> Result<(), StoreError> {
        let next = after(user);
        let n = next.as_str();
        self.users.remove(user).map_err(be)?;
        self.devices.retain_in((user, "")..(n, ""), |_, _| false).map_err(be)?;
        self.item_blocks.retain_in((user, 0u8, 0u64)..(n, 0u8, 0u64), |_, _| false).map_err(be)?;
        self.item_meta.retain_in((user, 0u8, 0u64)..(n, 0u8, 0u64), |_, _| false).map_err(be)?;
        // Changes cached for the user are gone with it.
        self.blocks.retain(|(u, _, _)| u != user);
        self.counters.retain_in((user, 0u8)..(n, 0u8), |_, _| false).map_err(be)?;
        self.states.retain_in((user, "", 0u8)..(n, "", 0u8), |_, _| false).map_err(be)?;
        self.flush_buckets()?;
        self.maps.retain_in((user, "", 0u8, 0u8)..(n, "", 0u8, 0u8), |_, _| false).map_err(be)?;
        // Forget cached counters too, so a re-created user starts from scratch.
        self.counters_cache.retain(|(u, _)| u != user);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schema 1 and 2 files open as the current schema: the indexes nothing
    /// reads any more are dropped and the data stays.
    #[test]
    fn older_schema_files_are_upgraded() {
        for old in [1u64, 2] {
            let dir = tempfile::tempdir().expect("tempdir");
            {
                let db = Database::create(dir.path().join(FILE_NAME)).expect("create");
                let txn = db.begin_write().expect("txn");
                {
                    txn.open_table(META).expect("meta").insert("schema", old).expect("insert");
                    let mut maps = txn.open_table(MAPS_V2).expect("maps");
                    for (device, client_id, sid) in [("d", "L1", 7u64), ("d", "L2", 40), ("e", "L1", 7)] {
                        maps.insert(("u", device, 1u8, client_id), sid).expect("insert");
                    }
                    drop(maps);
                    txn.open_table(CHANGES_V2)
                        .expect("changes")
                        .insert(("u", 1u8, 3u64), 7u64)
                        .expect("insert");
                    let mut items = txn.open_table(ITEMS_V2).expect("items");
                    for (user, sid, deleted) in [("u", 7u64, false), ("u", 40, true), ("v", 7, false)] {
                        let record =
                            enc_item_fields(sid, sid + 1, "text/vcard", b"BEGIN:VCARD", "d", deleted);
                        items.insert((user, 1u8, sid), record.as_slice()).expect("insert");
                    }
                    if old == 1 {
                        let mut rev = txn.open_table(MAPS_BY_ID_V1).expect("reverse index");
                        rev.insert(("u", 1u8, 7u64, "d", "L1"), ()).expect("insert");
                    }
                }
                txn.commit().expect("commit");
            }
            let b = EmbeddedBackend::open(dir.path()).expect("an older schema file opens");
            let txn = b.db.begin_read().expect("read");
            let schema = txn.open_table(META).expect("meta").get("schema").expect("get").map(|v| v.value());
            assert_eq!(schema, Some(SCHEMA_VERSION));
            use redb::TableHandle;
            let tables: Vec<String> =
                txn.list_tables().expect("tables").map(|t| t.name().to_string()).collect();
            for dropped in ["mappings_by_server_id", "changes", "items", "mappings"] {
                assert!(!tables.iter().any(|t| t == dropped), "schema {old}: {dropped} dropped: {tables:?}");
            }
            drop(txn);
            for (device, want) in [("d", vec![("L1", 7u64), ("L2", 40)]), ("e", vec![("L1", 7)])] {
                let request = ReadRequest::Datastore {
                    user: "u".into(),
                    device_id: device.into(),
                    collection: Collection::Calendar,
                    scope: ItemScope::Whole,
                };
                let Ok(ReadResponse::Datastore(snap)) = b.read(&request) else { panic!("datastore read") };
                let mut got = snap.mappings.clone();
                got.sort();
                let want: Vec<(String, u64)> = want.iter().map(|(c, s)| (c.to_string(), *s)).collect();
                assert_eq!(got, want, "schema {old}: mappings of {device} moved into buckets");
            }
            for (user, want) in [("u", vec![(7u64, false), (40, true)]), ("v", vec![(7, false)])] {
                let request = ReadRequest::Datastore {
                    user: user.into(),
                    device_id: "other".into(),
                    collection: Collection::Calendar,
                    scope: ItemScope::Whole,
                };
                let Ok(ReadResponse::Datastore(snap)) = b.read(&request) else { panic!("datastore read") };
                let got: Vec<(u64, bool)> = snap.items.iter().map(|i| (i.server_id, i.deleted)).collect();
                assert_eq!(got, want, "schema {old}: items of {user} moved into blocks");
                assert!(snap.items.iter().all(|i| i.data == b"BEGIN:VCARD" || i.deleted));
            }
            assert_bare_reads_match(&b, "u", Collection::Calendar);
        }
    }

    /// Reads `user`'s collection bare above every seq it holds and checks
    /// the answer against the whole read: the same items, bare where they
    /// should be (so the meta of every block is there).
    fn assert_bare_reads_match(b: &EmbeddedBackend, user: &str, collection: Collection) {
        let read = |scope| {
            let request =
                ReadRequest::Datastore { user: user.into(), device_id: "other".into(), collection, scope };
            match b.read(&request) {
                Ok(ReadResponse::Datastore(snap)) => snap,
                other => panic!("datastore read: {other:?}"),
            }
        };
        let whole = read(ItemScope::Whole);
        assert!(!whole.items.is_empty());
        let mut seqs: Vec<u64> = whole.items.iter().map(|i| i.seq).collect();
        seqs.insert(0, 0);
        for bare_up_to in seqs {
            let snap = read(ItemScope::ChangedSince(bare_up_to));
            assert_eq!(snap.items.len(), whole.items.len(), "bare up to {bare_up_to}");
            for (got, full) in snap.items.iter().zip(&whole.items) {
                if full.seq > bare_up_to {
                    assert_eq!(got, full);
                } else {
                    assert_eq!(got, &crate::store::bare_item(full.server_id, full.seq, full.deleted));
                }
            }
        }
    }

    /// Schema 3 files (blocks, no meta) get the meta of every block.
    #[test]
    fn schema_3_files_get_item_meta() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = Database::create(dir.path().join(FILE_NAME)).expect("create");
            let txn = db.begin_write().expect("txn");
            {
                txn.open_table(META).expect("meta").insert("schema", 3u64).expect("insert");
                let mut blocks = txn.open_table(ITEM_BLOCKS).expect("blocks");
                for block in 0..3u64 {
                    let records: Vec<Vec<u8>> = (0..16u64)
                        .map(|i| {
                            let sid = (block << ITEM_BLOCK_BITS) + i + 1;
                            enc_item_fields(sid, 100 - sid, "text/vcard", b"BEGIN:VCARD", "d", sid % 5 == 0)
                        })
                        .collect();
                    let value = enc_item_block(records.iter().map(Vec::as_slice), 1024);
                    blocks.insert(("u", 0u8, block), value.as_slice()).expect("insert");
                }
            }
            txn.commit().expect("commit");
        }
        let b = EmbeddedBackend::open(dir.path()).expect("a schema 3 file opens");
        assert_bare_reads_match(&b, "u", Collection::Contacts);
        // New writes keep the meta up to date.
        b.commit(&[WriteBatch {
            ops: vec![WriteOp::PutItem {
                user: "u".into(),
                collection: Collection::Contacts,
                server_id: Some(3),
                content_type: "text/vcard".into(),
                data: b"BEGIN:VCARD changed".to_vec(),
                origin_device: "d2".into(),
                map_client_id: None,
            }],
        }])
        .expect("commit");
        assert_bare_reads_match(&b, "u", Collection::Contacts);
    }

    /// A file from a newer build is refused, not rewritten.
    #[test]
    fn newer_schema_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = Database::create(dir.path().join(FILE_NAME)).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META).expect("meta").insert("schema", SCHEMA_VERSION + 1).expect("insert");
            txn.commit().expect("commit");
        }
        let err = EmbeddedBackend::open(dir.path()).expect_err("a newer schema is refused");
        assert!(err.to_string().contains("schema version"), "{err}");
    }
}
