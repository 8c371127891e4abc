//! The SyncML server engine: a deterministic state machine with no I/O.
//!
//! One [`Session`] per SyncML session (key: device id + SessionID). The
//! shell drives it per message:
//!
//! 1. [`Session::pending_reads`] lists what must be loaded from the store
//!    (user, device, datastore snapshots); the shell loads each and hands it
//!    over with [`Session::provide`], repeating until nothing is pending;
//! 2. [`Session::handle`] processes the message with the time and some
//!    entropy given as values, and returns a [`Step`]: the encoded reply and
//!    the [`WriteBatch`] that must be durable before the reply is released;
//! 3. after the commit, [`Session::committed`] feeds back the server ids the
//!    store allocated.
//!
//! Unit tests, fuzzers and benches drive it exactly like that, without sockets.

pub mod auth;
pub mod content;
pub mod devinf;
pub mod endpoint;
mod init_reply;
mod process;
pub mod reply;
pub mod report;
mod scope;

use std::collections::{HashMap, HashSet, VecDeque};

use crate::model::{Encoding, SyncMl, Version};
use crate::store::{
    Collection, CommitInfo, DatastoreSnapshot, DeviceRecord, ItemRecord, ItemScope, ReadRequest,
    ReadResponse, SessionRecord, UserRecord, WriteBatch,
};

pub use devinf::ClientCaps;
pub use process::challenge;

/// How a conflict (an item changed on both sides since the last sync) is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Field-by-field merge where the format allows (vCard, iCalendar), else server wins.
    Merge,
    /// The server's version is kept and sent to the client (status 419).
    ServerWins,
    /// The client's version is stored (status 208).
    ClientWins,
    /// Both are kept: the client's as a new item, the server's sent as an Add (status 209).
    Duplicate,
}

/// Engine settings (from the server configuration).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Public URL of the sync endpoint; RespURI is this plus `?s=<token>`.
    /// Empty: derived from the URL the client used.
    pub public_url: String,
    /// The largest message the server accepts (announced as MaxMsgSize).
    pub max_msg_size: usize,
    /// The largest object the server accepts (announced as MaxObjSize).
    pub max_obj_size: usize,
    /// Assumed client MaxMsgSize when the client announces none.
    pub default_client_max_msg_size: usize,
    /// Device datastore names (lower case, without `./`) and their collections.
    pub aliases: Vec<(String, Collection)>,
    /// Conflict policy per collection (contacts, calendar, tasks, notes).
    pub conflict_policy: [ConflictPolicy; 4],
    /// The key of the stateless challenge nonces (see [`auth`]).
    pub auth_key: auth::AuthKey,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let aliases = [
            ("contacts", Collection::Contacts),
            ("contact", Collection::Contacts),
            ("addressbook", Collection::Contacts),
            ("card", Collection::Contacts),
            ("con", Collection::Contacts),
            ("scard", Collection::Contacts),
            ("calendar", Collection::Calendar),
            ("cal", Collection::Calendar),
            ("event", Collection::Calendar),
            ("events", Collection::Calendar),
            ("scal", Collection::Calendar),
            ("tasks", Collection::Tasks),
            ("task", Collection::Tasks),
            ("todo", Collection::Tasks),
            ("stask", Collection::Tasks),
            ("notes", Collection::Notes),
            ("note", Collection::Notes),
            ("memo", Collection::Notes),
            ("snote", Collection::Notes),
        ];
        EngineConfig {
            public_url: String::new(),
            max_msg_size: 4 * 1024 * 1024,
            max_obj_size: 4 * 1024 * 1024,
            default_client_max_msg_size: 100_000,
            aliases: aliases.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            conflict_policy: [ConflictPolicy::Merge; 4],
            // A node without a key file: random per process (see `auth_key_file`).
            auth_key: auth::AuthKey::random(),
        }
    }
}

impl EngineConfig {
    /// Resolves a device datastore URI (`./Contacts?x`, `addressbook/private`) to a collection.
    pub fn resolve(&self, uri: &str) -> Option<Collection> {
        let base = devinf::strip_dot_slash(uri);
        let base = base.split('/').next().unwrap_or(base).to_ascii_lowercase();
        self.aliases.iter().find(|(n, _)| *n == base).map(|(_, c)| *c)
    }

    /// The conflict policy of a collection.
    pub fn policy(&self, c: Collection) -> ConflictPolicy {
        let i = Collection::ALL.iter().position(|x| *x == c).unwrap_or(0);
        self.conflict_policy[i]
    }
}

/// Leads every stored session state: the layout's version. Bump it whenever
/// a type inside [`Session`] changes, so that nodes of another build refuse
/// the record (the client's session then starts over) instead of misreading it.
const STATE_TAG: &[u8] = b"ssync-session-v4";

/// Why a session's state could not be stored or restored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Serializing the state failed.
    #[error("session state could not be encoded: {0}")]
    Encode(String),
    /// A stored state does not decode (or does not belong to its record).
    #[error("stored session state is unusable: {0}")]
    Corrupt(String),
}

/// What the session's last message left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The session goes on; keep it.
    Continue,
    /// The session ended successfully (or was suspended); anchors were written if due.
    Complete,
    /// The session was aborted (e.g. too many auth failures).
    Aborted,
}

/// The result of handling one message.
#[derive(Debug)]
pub struct Step {
    /// The encoded reply.
    pub reply: Vec<u8>,
    /// Writes that must be durable before the reply is released.
    pub writes: WriteBatch,
    /// Whether the session continues.
    pub outcome: Outcome,
    /// Counters for the session log.
    pub summary: String,
}

/// Where the session is in the package flow (digest §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum Phase {
    /// Receiving the client's initialization package (1).
    Init,
    /// The client's package 1 is complete; sending the rest of package 2,
    /// one message per Alert 222 of the client. `then_sync`: package 1
    /// carried the client's Sync too, so the server's Sync follows.
    InitReply { then_sync: bool },
    /// Receiving the client's modifications (package 3).
    ClientSync,
    /// Sending the server's modifications (package 4).
    ServerSync,
    /// Receiving the client's map package (5).
    Map,
    /// Done.
    Done,
}

/// One server operation queued for the client.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct OutOp {
    collection: Collection,
    kind: OutKind,
    /// Bytes of the data already sent in earlier chunks.
    offset: usize,
}

#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum OutKind {
    Add { server_id: u64, content_type: String, data: Vec<u8> },
    Replace { server_id: u64, client_id: String, content_type: String, data: Vec<u8> },
    Delete { server_id: u64, client_id: String },
}

/// A server command sent to the client, kept until the session ends so that
/// the client's Status for it can be matched.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum SentCmd {
    /// An Add or Replace (or one chunk of it).
    Item { collection: Collection },
    /// A Delete. The device's mapping of `client_id` to `server_id` is dropped
    /// only when the client's Status confirms it: a Delete whose Status never
    /// came (reply lost, session cut) is then sent again by the next session.
    Delete { collection: Collection, server_id: u64, client_id: String },
}

/// A large object being received in chunks.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct IncomingChunk {
    collection: Collection,
    cmd: String,
    client_id: String,
    content_type: String,
    declared_size: usize,
    data: Vec<u8>,
}

/// The maps a datastore holds one entry per item or mapping in (a whole
/// collection, rebuilt for every session): keyed with aHash, which is much
/// cheaper than std's SipHash for these keys and still seeded per process,
/// so a client cannot precompute colliding ids.
type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// A datastore's items from its snapshot, sorted by server id: looked up
/// by binary search. Stores hand them out in that order, so building this
/// costs no hashing, for a table rebuilt for every session and only read.
#[derive(Debug, Clone, Default)]
struct Items(Vec<ItemRecord>);

impl Items {
    fn new(mut items: Vec<ItemRecord>) -> Items {
        if !items.is_sorted_by_key(|i| i.server_id) {
            items.sort_by_key(|i| i.server_id);
        }
        Items(items)
    }

    fn get(&self, server_id: &u64) -> Option<&ItemRecord> {
        let at = self.0.binary_search_by_key(server_id, |i| i.server_id).ok()?;
        self.0.get(at)
    }

    fn contains_key(&self, server_id: &u64) -> bool {
        self.get(server_id).is_some()
    }

    fn values(&self) -> impl Iterator<Item = &ItemRecord> {
        self.0.iter()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The per-datastore part of a session.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct DsSession {
    collection: Collection,
    /// The client's datastore URI (Alert Source).
    client_uri: String,
    /// The server datastore URI as the client addressed it (Alert Target).
    server_uri: String,
    /// Effective sync type (alert code 200–205).
    mode: u16,
    client_next: String,
    server_next: String,
    /// Change sequence the device had reached before this session.
    prev_seq: u64,
    /// Snapshot of the collection. Not part of the stored session state:
    /// reloaded from the store when a session is continued elsewhere.
    /// Items the mode does not use whole may be bare (see `scope`).
    #[rkyv(with = rkyv::with::Skip)]
    items: Items,
    /// `items`, `map`, `rmap`, `twins` and `uids` are in memory (false right
    /// after a session was restored from its stored state).
    #[rkyv(with = rkyv::with::Skip)]
    loaded: bool,
    max_seq: u64,
    /// client id → server id (mirrors the store's mappings after each commit,
    /// so a restored session reloads it from there).
    #[rkyv(with = rkyv::with::Skip)]
    map: FastMap<String, u64>,
    /// server id → client id.
    #[rkyv(with = rkyv::with::Skip)]
    rmap: FastMap<u64, String>,
    /// Server items the client's changes of this session already covered.
    handled: HashSet<u64>,
    /// Twin index for slow syncs: content key → unmatched server ids.
    #[rkyv(with = rkyv::with::Skip)]
    twins: FastMap<u64, Vec<u64>>,
    /// UID index, (UID, RECURRENCE-ID) → server id, over the whole server
    /// items no client item has claimed: twin matching by identity in slow
    /// syncs, and of a client's Add of an item the server already holds in
    /// two-way syncs.
    #[rkyv(with = rkyv::with::Skip)]
    uids: FastMap<content::UidKey, u64>,
    /// Ops forced by conflict resolution (sent in package 4).
    forced: Vec<OutKind>,
    /// The client's Sync for this datastore started (once-only setup done).
    client_sync_started: bool,
    /// Server changes were queued.
    queued: bool,
    /// A server operation failed on the client: keep changes pending.
    failed: bool,
    /// Temporary ids for clients with a small MaxGUIDSize: `#n` → server id.
    temp_ids: HashMap<String, u64>,
    /// Number of server ops in this package (NumberOfChanges).
    number_of_changes: usize,
    counts: Counts,
}

/// Per-datastore counters for the session log.
#[derive(Debug, Clone, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Counts {
    from_client_add: u32,
    from_client_replace: u32,
    from_client_delete: u32,
    to_client_add: u32,
    to_client_replace: u32,
    to_client_delete: u32,
    conflicts: u32,
    twins: u32,
}

/// A SyncML session's state.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Session {
    key: u64,
    /// Proves a request belongs to this session (see [`endpoint`]).
    secret: endpoint::SessionSecret,
    /// Keyed digest of the body of the last message handled (resends repeat it).
    last_body_digest: u64,
    /// Keyed digest of the basic credential that verified (argon2id) in this
    /// session, so a client that repeats it costs no second slow hash.
    basic_ok: Option<u64>,
    /// The shell's argon2id verdict on this message's basic credential:
    /// (digest of the credential, verified). Per message, never stored.
    #[rkyv(with = rkyv::with::Skip)]
    basic_verdict: Option<(u64, bool)>,
    device_id: String,
    session_id: String,
    encoding: Encoding,
    version: Option<Version>,
    user: Option<String>,
    /// Not in the stored state (it is read again when needed): a session
    /// is stored with every message, and these records, the DevInf above
    /// all, were most of its size.
    #[rkyv(with = rkyv::with::Skip)]
    user_record: Option<Option<UserRecord>>,
    /// Not in the stored state either; a session continued from the store
    /// reads it again (see [`Session::pending_reads`]).
    #[rkyv(with = rkyv::with::Skip)]
    device_record: Option<DeviceRecord>,
    authenticated: bool,
    auth_failures: u32,
    /// Nonce sent with the last challenge of this session.
    session_nonce: Option<Vec<u8>>,
    /// The URI the client addressed first (the server's identity in replies).
    server_uri: String,
    last_msg_in: u64,
    /// Stored beside the state in [`SessionRecord::last_reply`], not in it.
    #[rkyv(with = rkyv::with::Skip)]
    last_reply: Vec<u8>,
    out_msg_id: u64,
    client_max_msg: usize,
    client_max_obj: usize,
    caps: ClientCaps,
    phase: Phase,
    stores: Vec<DsSession>,
    /// Reads handed over for the current message; consumed by it.
    #[rkyv(with = rkyv::with::Skip)]
    snapshots: HashMap<Collection, DatastoreSnapshot>,
    incoming: Option<IncomingChunk>,
    /// Package 2 commands not sent yet (Statuses carried over, the DevInf
    /// Results, the server's Alerts), in send order.
    pkg2: Vec<init_reply::Pending>,
    queue: VecDeque<OutOp>,
    /// Adds written in the current step: (collection, client id), in op order.
    /// Empty between messages (the commit's ids land in the store's mappings).
    #[rkyv(with = rkyv::with::Skip)]
    pending_new: Vec<(Collection, String)>,
    /// Server commands sent: (msg id, cmd id) → what the command was.
    sent: HashMap<(u64, u64), SentCmd>,
    next_temp_id: u64,
    started_at: u64,
    last_activity: u64,
    suspended: bool,
}

impl Session {
    /// A new session for the routing key and the first message's header,
    /// bound to `secret` (≥128 bits from the OS's random source, drawn by the
    /// caller so that the engine stays deterministic).
    pub fn new(
        key: u64,
        msg: &SyncMl<'_>,
        encoding: Encoding,
        now: u64,
        secret: endpoint::SessionSecret,
    ) -> Session {
        Session {
            key,
            secret,
            last_body_digest: 0,
            basic_ok: None,
            basic_verdict: None,
            device_id: msg.hdr.source.loc_uri.trim().to_string(),
            session_id: msg.hdr.session_id.trim().to_string(),
            encoding,
            version: msg.version(),
            user: None,
            user_record: None,
            device_record: None,
            authenticated: false,
            auth_failures: 0,
            session_nonce: None,
            server_uri: msg.hdr.target.loc_uri.trim().to_string(),
            last_msg_in: 0,
            last_reply: Vec::new(),
            out_msg_id: 0,
            client_max_msg: 0,
            client_max_obj: 0,
            caps: ClientCaps::default(),
            phase: Phase::Init,
            stores: Vec::new(),
            snapshots: HashMap::new(),
            incoming: None,
            pkg2: Vec::new(),
            queue: VecDeque::new(),
            pending_new: Vec::new(),
            sent: HashMap::new(),
            next_temp_id: 1,
            started_at: now,
            last_activity: now,
            suspended: false,
        }
    }

    /// The session's routing key.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The client's SessionID.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        if self.authenticated {
            self.user.as_deref()
        } else {
            None
        }
    }

    /// Seconds since the Unix epoch of the last message.
    pub fn last_activity(&self) -> u64 {
        self.last_activity
    }

    /// Seconds since the Unix epoch of the first message.
    pub fn started_at(&self) -> u64 {
        self.started_at
    }

    /// The reply to the last message answered, for a resend that
    /// [`endpoint::admit`] accepted.
    pub fn stored_reply(&self) -> &[u8] {
        &self.last_reply
    }

    /// Whether the session's user is authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The MsgID of the last client message answered (0 before the first).
    pub fn last_msg_in(&self) -> u64 {
        self.last_msg_in
    }

    /// The session as a store record: its state (rkyv) and its last reply,
    /// to be committed with the writes of the message just handled.
    pub fn to_record(&self, expires_at: u64) -> Result<SessionRecord, StateError> {
        let archived =
            rkyv::to_bytes::<rkyv::rancor::Error>(self).map_err(|e| StateError::Encode(e.to_string()))?;
        let mut state = Vec::with_capacity(STATE_TAG.len() + archived.len());
        state.extend_from_slice(STATE_TAG);
        state.extend_from_slice(&archived);
        Ok(SessionRecord {
            key: self.key,
            state,
            last_msg_id: self.last_msg_in,
            last_reply: self.last_reply.clone(),
            expires_at,
        })
    }

    /// A session continued from its stored record (on any shard or node).
    ///
    /// What the state leaves out (item snapshots, mappings, twin indexes) is
    /// listed by the next [`Session::pending_reads`] and refilled by
    /// [`Session::provide`] from the store.
    pub fn from_record(record: &SessionRecord) -> Result<Session, StateError> {
        let Some(archived) = record.state.strip_prefix(STATE_TAG) else {
            // Another build's layout (e.g. during a rolling upgrade): not ours to read.
            return Err(StateError::Corrupt("unknown session state format".into()));
        };
        // rkyv wants its buffer aligned; a stored blob is not.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(archived.len());
        aligned.extend_from_slice(archived);
        let mut s = rkyv::from_bytes::<Session, rkyv::rancor::Error>(&aligned)
            .map_err(|e| StateError::Corrupt(e.to_string()))?;
        if s.key != record.key || s.last_msg_in != record.last_msg_id {
            return Err(StateError::Corrupt(format!(
                "record of key {:016x} / MsgID {} holds key {:016x} / MsgID {}",
                record.key, record.last_msg_id, s.key, s.last_msg_in
            )));
        }
        s.last_reply = record.last_reply.clone();
        Ok(s)
    }

    /// The reads needed before [`Session::handle`] can process `msg`.
    pub fn pending_reads(&self, cfg: &EngineConfig, msg: &SyncMl<'_>) -> Vec<ReadRequest> {
        let mut out = Vec::new();
        if let (Some(user), true) = (&self.user, self.authenticated) {
            // A restored session: its device record (left out of the stored
            // state) and its datastores come back from the store first.
            if self.device_record.is_none() {
                out.push(ReadRequest::Device { user: user.clone(), device_id: self.device_id.clone() });
            }
            for ds in self.stores.iter().filter(|d| !d.loaded && !self.snapshots.contains_key(&d.collection))
            {
                out.push(ReadRequest::Datastore {
                    user: user.clone(),
                    device_id: self.device_id.clone(),
                    collection: ds.collection,
                    scope: scope::reload_scope(ds.mode, ds.prev_seq, ds.max_seq),
                });
            }
        }
        let user = match (&self.user, self.authenticated) {
            (Some(u), true) => Some(u.clone()),
            _ => process::claimed_user(msg),
        };
        let Some(user) = user else { return out };
        if !self.authenticated {
            if self.user_record.is_none() || self.user.as_deref() != Some(user.as_str()) {
                out.push(ReadRequest::User { name: user.clone() });
                out.push(ReadRequest::Device { user: user.clone(), device_id: self.device_id.clone() });
                return out;
            }
            // Load datastores only for a message whose credentials verify.
            if !self.precheck_auth(cfg, msg) {
                return out;
            }
        }
        for a in scope::alerted(cfg, msg) {
            if self.stores.iter().any(|d| d.collection == a.collection) {
                continue;
            }
            // A snapshot read with only the changes whole is read again
            // whole when its sync turns out to need that (e.g. a slow sync
            // forced by anchors that do not match).
            let scope = match self.snapshots.get(&a.collection) {
                None => a.first_scope(),
                Some(snap) if !a.served_by(snap) => ItemScope::Whole,
                Some(_) => continue,
            };
            out.push(ReadRequest::Datastore {
                user: user.clone(),
                device_id: self.device_id.clone(),
                collection: a.collection,
                scope,
            });
        }
        out
    }

    /// Reads worth doing in the same store round trip as the first ones of a
    /// new session ([`Session::pending_reads`]: user and device): the
    /// datastores the message alerts, for the user it claims. Their answers
    /// go through [`Session::provide_if_authentic`], which keeps them only
    /// once the credentials verify, so an unauthenticated session never
    /// holds a user's data.
    pub fn speculative_reads(&self, cfg: &EngineConfig, msg: &SyncMl<'_>) -> Vec<ReadRequest> {
        if self.authenticated {
            return Vec::new();
        }
        let Some(user) = process::claimed_user(msg) else { return Vec::new() };
        scope::alerted(cfg, msg)
            .into_iter()
            .map(|a| ReadRequest::Datastore {
                user: user.clone(),
                device_id: self.device_id.clone(),
                collection: a.collection,
                scope: a.first_scope(),
            })
            .collect()
    }

    /// Hands over the answer to a read from [`Session::speculative_reads`]:
    /// kept only when the user and device records are loaded, the read was
    /// for that user, and the message's credentials verify against them.
    /// Returns whether it was kept.
    pub fn provide_if_authentic(
        &mut self,
        cfg: &EngineConfig,
        msg: &SyncMl<'_>,
        request: &ReadRequest,
        response: ReadResponse,
    ) -> bool {
        let ReadRequest::Datastore { user, .. } = request else { return false };
        let loaded = matches!(self.user_record, Some(Some(_))) && self.device_record.is_some();
        if !loaded || self.user.as_deref() != Some(user.as_str()) || !self.precheck_auth(cfg, msg) {
            return false;
        }
        self.provide(request, response);
        true
    }

    /// Hands over the answer to a read from [`Session::pending_reads`].
    pub fn provide(&mut self, request: &ReadRequest, response: ReadResponse) {
        match (request, response) {
            (ReadRequest::User { name }, ReadResponse::User(u)) => {
                self.user = Some(name.clone());
                self.user_record = Some(u);
            }
            (ReadRequest::Device { .. }, ReadResponse::Device(d)) => {
                let d = d.unwrap_or_else(|| DeviceRecord {
                    device_id: self.device_id.clone(),
                    ..Default::default()
                });
                // The DevInf stored from an earlier session stands until the
                // client sends a new one (clients need not send it every time).
                if !d.devinf_xml.is_empty() && self.caps == ClientCaps::default() {
                    if let Some(devinf) = crate::codec::decode_devinf_xml(&d.devinf_xml) {
                        self.caps = ClientCaps::from_devinf(&devinf);
                    }
                }
                self.device_record = Some(d);
            }
            (ReadRequest::Datastore { collection, .. }, ReadResponse::Datastore(s)) => {
                match self.stores.iter_mut().find(|d| d.collection == *collection && !d.loaded) {
                    Some(ds) => process::reload_datastore(ds, s),
                    None => {
                        self.snapshots.insert(*collection, s);
                    }
                }
            }
            _ => {}
        }
    }

    /// Feeds back what the store allocated for the step's writes.
    pub fn committed(&mut self, info: &CommitInfo) {
        for ((collection, client_id), server_id) in self.pending_new.drain(..).zip(&info.new_server_ids) {
            if let Some(ds) = self.stores.iter_mut().find(|d| d.collection == collection) {
                ds.map.insert(client_id.clone(), *server_id);
                ds.rmap.insert(*server_id, client_id);
            }
        }
        self.pending_new.clear();
    }

    /// Forgets the writes of a step whose commit failed: the session can't go
    /// on consistently, so the caller drops it.
    pub fn commit_failed(&mut self) {
        self.pending_new.clear();
    }

    /// Processes one message. `now` is seconds since the Unix epoch;
    /// `entropy` seeds nonces.
    pub fn handle(&mut self, cfg: &EngineConfig, msg: &SyncMl<'_>, now: u64, entropy: u64) -> Step {
        process::handle(self, cfg, msg, now, entropy)
    }
}

#[cfg(test)]
mod tests;
