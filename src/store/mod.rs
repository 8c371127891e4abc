//! The store: what the engine reads before it runs and the writes it returns.
//!
//! The engine never calls the store. The shard shell loads a [`ReadRequest`]
//! through the store's reader threads, runs the engine, and submits the
//! engine's [`WriteBatch`] to the writer thread, which group-commits every
//! batch queued when a commit starts. A reply is released only after the
//! commit holding its batch is durable.
//!
//! Backends implement [`Backend`] (blocking, used only on store threads);
//! [`StoreHandle`] is the cheap, cloneable, non-blocking face that shards use.
//!
//! Data model (every key starts with the user, so a store can be partitioned by user):
//! - users: name → [`UserRecord`]
//! - devices: (user, device id) → [`DeviceRecord`]
//! - items: (user, collection, server id) → [`ItemRecord`]; a per-user,
//!   per-collection change sequence orders changes; deletes are tombstones.
//! - sync state: (user, device, collection) → [`SyncState`]
//! - mappings: (user, device, collection, client id) ↔ server id
//! - sessions: session key → [`SessionRecord`]

use serde::{Deserialize, Serialize};

mod codec;
pub mod embedded;
pub mod handle;
pub mod memory;
pub mod postgres;
pub mod private;

pub use embedded::EmbeddedBackend;
pub use handle::{StoreHandle, StoreStats, StoreThreads, WriterLimits};
pub use memory::MemoryBackend;
pub use postgres::{PgStoreError, PostgresBackend};

/// A user's collection (what device datastores map to).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum Collection {
    /// Contacts (vCard).
    Contacts,
    /// Calendar events (iCalendar / vCalendar).
    Calendar,
    /// Tasks (VTODO).
    Tasks,
    /// Notes (text/plain).
    Notes,
}

impl Collection {
    /// Every collection.
    pub const ALL: [Collection; 4] =
        [Collection::Contacts, Collection::Calendar, Collection::Tasks, Collection::Notes];

    /// Stable name used in keys and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Collection::Contacts => "contacts",
            Collection::Calendar => "calendar",
            Collection::Tasks => "tasks",
            Collection::Notes => "notes",
        }
    }

    /// Parses [`Collection::as_str`].
    pub fn parse(s: &str) -> Option<Collection> {
        Collection::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Credentials kept for a user; never the clear password.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct UserRecord {
    /// User name.
    pub name: String,
    /// `B64(MD5("user:password"))`: what syncml:auth-md5 (1.1/1.2) needs.
    pub md5_b64: String,
    /// A slow hash (PHC string, argon2id) of the password for syncml:auth-basic.
    pub password_hash: String,
}

/// What the server keeps about one device of a user.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct DeviceRecord {
    /// Device id (`SyncHdr/Source/LocURI`).
    pub device_id: String,
    /// The device's DevInf as received, re-encoded as XML (empty if none yet).
    pub devinf_xml: Vec<u8>,
    /// The nonce last sent to this device (raw bytes), for syncml:auth-md5.
    pub nonce: Vec<u8>,
    /// First contact, seconds since the Unix epoch.
    pub first_seen: u64,
    /// Last contact, seconds since the Unix epoch.
    pub last_seen: u64,
}

/// One item of a collection (or its tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// Server id (GUID), unique within (user, collection).
    pub server_id: u64,
    /// Change sequence number of the last change; increases per (user, collection).
    pub seq: u64,
    /// MIME type the data was stored with (e.g. `text/vcard`).
    pub content_type: String,
    /// The item as sent by its origin (empty for tombstones).
    pub data: Vec<u8>,
    /// The device whose change produced this version.
    pub origin_device: String,
    /// Tombstone: the item was deleted at `seq`.
    pub deleted: bool,
}

/// Per (user, device, collection) synchronization state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncState {
    /// The client's `Next` anchor from the last successful session.
    pub client_anchor: String,
    /// The server's `Next` anchor sent in the last successful session.
    pub server_anchor: String,
    /// The collection's change sequence this device has received up to.
    pub seq_reached: u64,
    /// The device datastore URI as the client addressed it.
    pub client_uri: String,
    /// Alert code of the last successful session.
    pub last_sync_type: u16,
}

/// A stored session, for resends and for continuing a session elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session routing key (see [`crate::routing`]).
    pub key: u64,
    /// Serialized engine session state (rkyv).
    pub state: Vec<u8>,
    /// MsgID of the last client message answered.
    pub last_msg_id: u64,
    /// The encoded reply to that message.
    pub last_reply: Vec<u8>,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A read the shell performs before running the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRequest {
    /// A user's credentials.
    User {
        /// User name.
        name: String,
    },
    /// A device record.
    Device {
        /// User name.
        user: String,
        /// Device id.
        device_id: String,
    },
    /// Everything the engine needs to sync one collection with one device.
    Datastore {
        /// User name.
        user: String,
        /// Device id.
        device_id: String,
        /// The collection.
        collection: Collection,
        /// Which items come whole; the others come bare (see [`ItemScope`]).
        scope: ItemScope,
    },
    /// A stored session.
    Session {
        /// Session key.
        key: u64,
    },
    /// All user names (admin).
    ListUsers,
    /// A user's devices with their per-collection sync states (admin), sorted by device id.
    ListDevices {
        /// User name.
        user: String,
    },
}

/// Which items of a [`ReadRequest::Datastore`] come whole (with content
/// type, data and origin device); the others come *bare*: server id, seq
/// and tombstone flag only.
///
/// A two-way or one-way sync sends only what changed since the device's
/// last sync, and needs the other items only to know they exist: reading
/// and copying a whole address book for every such session made its cost
/// grow with the address book. A slow sync (twin matching, sending all)
/// and a refresh from the server need every item whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ItemScope {
    /// Every item whole.
    #[default]
    Whole,
    /// Whole: items changed after the device's `seq_reached`. Every item
    /// is whole when the device has no sync state or its state has no
    /// client anchor (its next sync is a slow one).
    ChangedSinceLastSync,
    /// Whole: items with a seq above this one (a session continued from the
    /// store knows the seq its sync started from).
    ChangedSince(u64),
}

impl ItemScope {
    /// The snapshot's [`DatastoreSnapshot::bare_up_to`] for this scope,
    /// given the device's sync state (the same for every backend).
    pub fn bare_up_to(self, state: Option<&SyncState>) -> u64 {
        match self {
            ItemScope::Whole => 0,
            ItemScope::ChangedSinceLastSync => {
                state.filter(|s| !s.client_anchor.is_empty()).map_or(0, |s| s.seq_reached)
            }
            ItemScope::ChangedSince(seq) => seq,
        }
    }
}

/// An item with only its server id, seq and tombstone flag (see [`ItemScope`]).
pub fn bare_item(server_id: u64, seq: u64, deleted: bool) -> ItemRecord {
    ItemRecord {
        server_id,
        seq,
        content_type: String::new(),
        data: Vec::new(),
        origin_device: String::new(),
        deleted,
    }
}

/// A snapshot of one collection for one device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatastoreSnapshot {
    /// The device's sync state for the collection, if it ever synced it.
    pub state: Option<SyncState>,
    /// Mappings client id → server id for this device, in no particular
    /// order (the embedded store hands them out bucket by bucket).
    pub mappings: Vec<(String, u64)>,
    /// Live items of the collection, plus tombstones newer than `state.seq_reached`.
    pub items: Vec<ItemRecord>,
    /// Items with `seq <= bare_up_to` are bare: their content type, data and
    /// origin device are empty (see [`ItemScope`]). 0: every item is whole.
    pub bare_up_to: u64,
    /// The highest change sequence number of the collection at snapshot time.
    pub max_seq: u64,
}

/// The answer to a [`ReadRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResponse {
    /// Answer to [`ReadRequest::User`].
    User(Option<UserRecord>),
    /// Answer to [`ReadRequest::Device`].
    Device(Option<DeviceRecord>),
    /// Answer to [`ReadRequest::Datastore`].
    Datastore(DatastoreSnapshot),
    /// Answer to [`ReadRequest::Session`].
    Session(Option<SessionRecord>),
    /// Answer to [`ReadRequest::ListUsers`].
    Users(Vec<String>),
    /// Answer to [`ReadRequest::ListDevices`].
    Devices(Vec<DeviceSummary>),
}

/// One device of a user as the admin commands show it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceSummary {
    /// The device record.
    pub device: DeviceRecord,
    /// The device's sync state per collection it synced, in [`Collection::ALL`] order.
    pub states: Vec<(Collection, SyncState)>,
    /// How many client id → server id mappings the device has, over all collections.
    pub mappings: u64,
}

/// One write. A [`WriteBatch`] is applied atomically, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Create or replace a user.
    PutUser(UserRecord),
    /// Delete a user and all of its data.
    DeleteUser {
        /// User name.
        name: String,
    },
    /// Create or update a device record.
    PutDevice {
        /// User name.
        user: String,
        /// The record.
        device: DeviceRecord,
    },
    /// Store an item version. `server_id: None` creates a new item (the
    /// writer allocates the id); the writer always allocates the next `seq`.
    /// With `map_client_id`, the mapping client id → server id is written for
    /// `origin_device` in the same transaction.
    ///
    /// Details every backend follows (see `tests/suite`): server ids and seqs
    /// are per (user, collection), starting at 1; `Some(id)` of an unknown or
    /// tombstoned id (re)creates the item, and later allocations stay above it.
    PutItem {
        /// User name.
        user: String,
        /// Collection.
        collection: Collection,
        /// Existing server id, or `None` for a new item.
        server_id: Option<u64>,
        /// MIME type.
        content_type: String,
        /// Item data.
        data: Vec<u8>,
        /// The device the change came from.
        origin_device: String,
        /// Client id to map to the item for `origin_device`.
        map_client_id: Option<String>,
    },
    /// Turn an item into a tombstone (new seq) and drop the origin device's mapping
    /// to it: the one `client_id` names when it maps to the item (the engine
    /// keeps one client id per item and device, and names it), else every
    /// mapping of the device to the item (PostgreSQL drops every one in both
    /// cases). Other devices keep theirs until the engine sends them the Delete.
    ///
    /// For an unknown id or an item that is already a tombstone, only that
    /// mapping is dropped (no new seq).
    DeleteItem {
        /// User name.
        user: String,
        /// Collection.
        collection: Collection,
        /// Server id.
        server_id: u64,
        /// The device the delete came from.
        origin_device: String,
        /// That device's client id for the item, when the caller knows it:
        /// lets a backend drop the mapping without a reverse index.
        client_id: Option<String>,
    },
    /// Map a client id to a server id for one device.
    SetMapping {
        /// User name.
        user: String,
        /// Device id.
        device_id: String,
        /// Collection.
        collection: Collection,
        /// Client id (LUID).
        client_id: String,
        /// Server id (GUID).
        server_id: u64,
    },
    /// Remove one mapping (soft delete).
    RemoveMapping {
        /// User name.
        user: String,
        /// Device id.
        device_id: String,
        /// Collection.
        collection: Collection,
        /// Client id (LUID).
        client_id: String,
    },
    /// Remove all of a device's mappings for a collection (slow sync, refresh).
    ClearMappings {
        /// User name.
        user: String,
        /// Device id.
        device_id: String,
        /// Collection.
        collection: Collection,
    },
    /// Store the sync state of (user, device, collection).
    PutSyncState {
        /// User name.
        user: String,
        /// Device id.
        device_id: String,
        /// Collection.
        collection: Collection,
        /// The state.
        state: SyncState,
    },
    /// Store a session (state and last reply).
    PutSession(SessionRecord),
    /// Store the record of a session that has completed. It replaces the
    /// session's record and is read only to answer a resend of its last
    /// message, until it expires; a store may keep such records apart from
    /// those of sessions in progress (the embedded store does: its table of
    /// sessions in progress stays small, which keeps each message's session
    /// write cheap).
    FinishSession(SessionRecord),
    /// Forget a session.
    DeleteSession {
        /// Session key.
        key: u64,
    },
    /// Forget a device (admin): its record, its sync states and its
    /// mappings, so that its next sync is a slow sync. The user's items stay.
    ForgetDevice {
        /// User name.
        user: String,
        /// Device id.
        device_id: String,
    },
    /// Forget every session that expired before this time (seconds since the Unix epoch).
    PurgeSessions {
        /// Sessions with `expires_at` below this go.
        expired_before: u64,
    },
    /// A precondition, valid only as the first op of a batch: the batch is
    /// applied only if the stored session `key` exists and last answered
    /// `last_msg_id`. Otherwise nothing of the batch is written and its
    /// [`CommitInfo::session_conflict`] is set (other batches of the same
    /// group commit are not affected). This is how a node notices that its
    /// cached copy of a session is stale: another node went on with it.
    ExpectSession {
        /// Session key.
        key: u64,
        /// The MsgID the stored session must have answered last; 0: no
        /// session may be stored under the key (the batch starts one).
        last_msg_id: u64,
    },
}

/// The writes of one engine step; committed atomically.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteBatch {
    /// The operations, applied in order.
    pub ops: Vec<WriteOp>,
}

/// What a commit reports back for one batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitInfo {
    /// Server ids allocated for `PutItem { server_id: None }` ops, in op order.
    pub new_server_ids: Vec<u64>,
    /// The batch's [`WriteOp::ExpectSession`] did not hold: nothing of it was written.
    pub session_conflict: bool,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, connection loss); retryable.
    #[error("store backend error: {0}")]
    Backend(String),
    /// The store's threads are gone (shutdown).
    #[error("store is shut down")]
    Closed,
    /// The data directory is in use by another process.
    #[error("store is locked by another process: {0}")]
    Locked(String),
    /// A batch's [`WriteOp::ExpectSession`] did not hold: the session moved on
    /// elsewhere. Nothing of the batch was written.
    #[error("session {0:016x} was continued elsewhere")]
    SessionConflict(u64),
    /// The backend refused the data of a batch (PostgreSQL: invalid text
    /// such as a NUL byte, a constraint violation, an id too long for an
    /// index; SQLSTATE classes 22, 23 and 54). Retrying the same batch fails again; nothing of it was written.
    /// The writer commits the other batches of its group without it.
    #[error("store refused the batch: {0}")]
    Rejected(String),
}

impl WriteBatch {
    /// The `(key, last_msg_id)` of the batch's leading [`WriteOp::ExpectSession`], if any.
    pub fn expected_session(&self) -> Option<(u64, u64)> {
        match self.ops.first() {
            Some(WriteOp::ExpectSession { key, last_msg_id }) => Some((*key, *last_msg_id)),
            _ => None,
        }
    }
}

/// A blocking storage backend, used only on the store's own threads.
pub trait Backend: Send + Sync + 'static {
    /// Answers one read.
    fn read(&self, request: &ReadRequest) -> Result<ReadResponse, StoreError>;
    /// Answers several reads, in order, or fails with the first error (a
    /// backend may answer them from one snapshot; by default each is a
    /// [`Backend::read`] of its own).
    fn read_many(&self, requests: &[ReadRequest]) -> Result<Vec<ReadResponse>, StoreError> {
        requests.iter().map(|r| self.read(r)).collect()
    }
    /// Applies several batches in one durable transaction (group commit);
    /// returns one [`CommitInfo`] per batch, in order. Either all batches
    /// are committed or none. A failure caused by one batch's data must be
    /// [`StoreError::Rejected`]: the writer then commits the group again in
    /// parts, so that only that batch fails.
    fn commit(&self, batches: &[WriteBatch]) -> Result<Vec<CommitInfo>, StoreError>;
}
