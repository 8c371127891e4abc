//! A sans-IO SyncML client session: builds each message of a DS 1.2 client
//! with the crate's model and encoders, and checks every reply: the Status of
//! each command it sent, the server's Alerts and anchors, the package flow
//! (1–2 init, 3–4 sync, 5–6 map), multi-message packages (Alert 222) and
//! MaxMsgSize both ways, large objects both ways (digest §8: an item that
//! does not fit goes in chunks with MoreData, Meta Size on the first, 213 for
//! each non-final chunk; chunks the server sends are reassembled, answered
//! with 213 and checked against their Size), MaxObjSize, auth (basic, or md5
//! with the server's nonce) and RespURI.
//!
//! The caller moves bytes: [`Session::start`] gives the first message, each
//! reply goes to [`Session::on_reply`], which gives the next message or says
//! the session is over. A [`Device`] is the client's state that outlives a
//! session: its items per datastore, anchors and nonce, like a phone's.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::data::{self, DataKind, Rng};
use crate::engine::auth;
use crate::model::{
    Alert, Anchor, Command, ContentTypeVersion, Cred, Data, DataStore, DevInf, Encoding, Item, ItemCommand,
    Location, Map, MapItem, Meta, PutGet, Results, Status, Sync, SyncHdr, SyncMl, Text,
};

/// The MaxObjSize the devices announce: the largest object they reassemble.
pub const MAX_OBJ_SIZE: usize = 4 * 1024 * 1024;

/// The smallest piece of data worth a chunk: with less room left, the
/// message closes and the item starts in the next one.
const MIN_CHUNK: usize = 256;

/// Non-final server messages in a row that carry no item (while the client
/// only asks for more) before the session is given up as looping.
const MAX_IDLE_REPLIES: u32 = 5;

/// How the client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// `syncml:auth-basic`.
    Basic,
    /// `syncml:auth-md5` with the nonce the server gave last.
    Md5,
}

/// Settings shared by every session of a run.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's SyncML URL (the first message of a session goes here).
    pub url: String,
    /// Wire encoding.
    pub encoding: Encoding,
    /// Auth scheme.
    pub auth: AuthKind,
    /// The MaxMsgSize the client announces (and the largest reply it accepts).
    pub max_msg_size: usize,
}

/// One item as the device holds it: which generated item, at which revision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Local {
    /// Index into the device's generated item stream (`None`: received from the server).
    index: Option<u64>,
    /// Revision (bumped by each local Replace).
    rev: u32,
    /// What the server sent (`None`: generated here).
    received: Option<Received>,
}

/// An item the device received, kept as a phone keeps it: a later slow sync
/// sends exactly this data back (so the server can match it to its twin).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    /// xxh64 of the data as received.
    hash: u64,
    /// The data (item kinds are text; invalid UTF-8 is counted as an error
    /// when received and kept with replacement characters).
    data: std::sync::Arc<str>,
}

/// One datastore of a device.
#[derive(Debug, Clone)]
pub struct Store {
    /// What it holds.
    pub kind: DataKind,
    /// The anchor of the last successful sync.
    pub last_anchor: Option<String>,
    items: BTreeMap<String, Local>,
    next_luid: u64,
    next_index: u64,
}

impl Store {
    /// Number of items the device holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if the device holds no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn new_luid(&mut self) -> String {
        self.next_luid += 1;
        format!("L{}", self.next_luid)
    }
}

/// A simulated device: its identity, credentials and replica.
#[derive(Debug, Clone)]
pub struct Device {
    /// Device id (`SyncHdr/Source/LocURI`).
    pub id: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// The server's last nonce for md5 (raw bytes).
    pub nonce: Vec<u8>,
    /// Datastores.
    pub stores: Vec<Store>,
    /// Sessions started (the next SessionID).
    pub sessions: u64,
    /// Whether the server has our DevInf (sent with the first session).
    pub devinf_sent: bool,
    seed: u64,
    rng: Rng,
}

impl Device {
    /// A device with `items` generated items in each of `kinds`.
    pub fn new(id: &str, user: &str, password: &str, kinds: &[DataKind], items: usize, seed: u64) -> Device {
        let seed = seed ^ xxhash_rust::xxh64::xxh64(id.as_bytes(), 0);
        let mut stores = Vec::new();
        for &kind in kinds {
            let mut s =
                Store { kind, last_anchor: None, items: BTreeMap::new(), next_luid: 0, next_index: 0 };
            for _ in 0..items {
                let luid = s.new_luid();
                let index = s.next_index;
                s.next_index += 1;
                s.items.insert(luid, Local { index: Some(index), rev: 0, received: None });
            }
            stores.push(s);
        }
        Device {
            id: id.to_string(),
            user: user.to_string(),
            password: password.to_string(),
            nonce: Vec::new(),
            stores,
            sessions: 0,
            devinf_sent: false,
            seed,
            rng: Rng::new(seed),
        }
    }

    /// An order-independent digest of every item the device holds (the
    /// wrapping sum of the xxh64 of each item's data): two sets of devices
    /// hold the same data exactly when their digests match.
    pub fn content_digest(&self) -> u64 {
        let mut sum = 0u64;
        for s in &self.stores {
            for local in s.items.values() {
                let h = match (&local.received, local.index) {
                    (Some(r), _) => r.hash,
                    (None, index) => xxhash_rust::xxh64::xxh64(
                        data::item(s.kind, self.seed, index.unwrap_or(0), local.rev).as_bytes(),
                        0,
                    ),
                };
                sum = sum.wrapping_add(h);
            }
        }
        sum
    }

    fn devinf(&self) -> DevInf<'static> {
        let stores = self
            .stores
            .iter()
            .map(|s| {
                let ct = ContentTypeVersion {
                    ct_type: t(s.kind.content_type()),
                    ver_ct: Some(t(s.kind.content_version())),
                };
                DataStore {
                    source_ref: t(s.kind.local_uri()),
                    display_name: Some(t(s.kind.name())),
                    max_guid_size: Some(t("64")),
                    rx_pref: Some(ct.clone()),
                    tx_pref: Some(ct),
                    sync_cap: (1..=7).map(|n| t(n.to_string())).collect(),
                    ..Default::default()
                }
            })
            .collect();
        DevInf {
            ver_dtd: t("1.2"),
            man: Some(t("shardsync")),
            model: Some(t("load generator")),
            sw_v: Some(t(env!("CARGO_PKG_VERSION"))),
            dev_id: t(self.id.clone()),
            dev_typ: t("phone"),
            utc: true,
            support_large_objs: true,
            support_number_of_changes: true,
            data_stores: stores,
            ..Default::default()
        }
    }
}

/// What a session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The sync type the client alerts (200 two-way, 201 slow, 203/205 refresh, ...).
    pub alert: u16,
    /// Local changes to send per datastore in a two-way or one-way sync.
    pub changes: usize,
    /// Stop after the server answered message 1 (the session stays open on the server).
    pub hold: bool,
}

/// Item counts by operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Adds.
    pub add: u64,
    /// Replaces.
    pub replace: u64,
    /// Deletes.
    pub delete: u64,
}

impl OpCounts {
    /// All operations.
    pub fn total(&self) -> u64 {
        self.add + self.replace + self.delete
    }

    /// Adds `other` to these counts.
    pub fn merge(&mut self, other: &OpCounts) {
        self.add += other.add;
        self.replace += other.replace;
        self.delete += other.delete;
    }
}

/// Large objects (items sent or received in chunks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LobCounts {
    /// Items the device sent in chunks.
    pub objects_sent: u64,
    /// Chunks sent (every piece, the last included).
    pub chunks_sent: u64,
    /// Items the device received in chunks and reassembled.
    pub objects_received: u64,
    /// Chunks received.
    pub chunks_received: u64,
}

impl LobCounts {
    /// Adds `other` to these counts.
    pub fn merge(&mut self, other: &LobCounts) {
        self.objects_sent += other.objects_sent;
        self.chunks_sent += other.chunks_sent;
        self.objects_received += other.objects_received;
        self.chunks_received += other.chunks_received;
    }
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where to POST it (the URL, or the server's RespURI).
    pub url: String,
    /// The encoded message.
    pub body: Vec<u8>,
}

/// What the session does after a reply.
#[derive(Debug)]
pub enum Next {
    /// Send this message.
    Send(Outgoing),
    /// The session completed (check [`Session::errors`] for what went wrong on the way).
    Done,
    /// Hold plan: message 1 was answered; the session is left open.
    Held,
    /// The session cannot go on (the last error says why).
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitInit,
    SendingSync,
    AwaitServerSync,
    SendingMap,
    AwaitEnd,
    Over,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SentKind {
    Alert,
    Put,
    Sync,
    Add,
    Replace,
    Delete,
    Map,
    /// A non-final chunk of an Add or Replace (answered with 213).
    Chunk,
}

impl SentKind {
    fn name(self) -> &'static str {
        match self {
            SentKind::Alert => "Alert",
            SentKind::Put => "Put",
            SentKind::Sync => "Sync",
            SentKind::Add => "Add",
            SentKind::Replace => "Replace",
            SentKind::Delete => "Delete",
            SentKind::Map => "Map",
            SentKind::Chunk => "Chunk",
        }
    }

    /// The codes that mean success for this command.
    fn ok(self, code: u16) -> bool {
        match self {
            SentKind::Add => matches!(code, 200 | 201),
            SentKind::Replace => matches!(code, 200 | 201),
            // 211: the item was already gone on the server (deleted by another device).
            SentKind::Delete => matches!(code, 200 | 211),
            SentKind::Chunk => code == 213,
            _ => code == 200,
        }
    }
}

/// One change the client sends; `sent` counts the bytes of its data already
/// sent in chunks.
#[derive(Debug, Clone)]
enum Change {
    Add { luid: String, data: String, sent: usize },
    Replace { luid: String, data: String, sent: usize },
    Delete { luid: String },
}

impl Change {
    fn add(luid: String, data: String) -> Change {
        Change::Add { luid, data, sent: 0 }
    }

    fn replace(luid: String, data: String) -> Change {
        Change::Replace { luid, data, sent: 0 }
    }

    /// The item's data and how much of it went out already.
    fn data(&self) -> Option<(&str, usize)> {
        match self {
            Change::Add { data, sent, .. } | Change::Replace { data, sent, .. } => Some((data, *sent)),
            Change::Delete { .. } => None,
        }
    }

    /// An upper bound of what the rest of this change adds to a message.
    fn cost(&self, enc: Encoding) -> usize {
        let data = self.data().map_or(0, |(d, sent)| data_cost(enc, &d.as_bytes()[sent..]));
        cmd_overhead(enc) + data
    }
}

/// An upper bound of the encoded size of an item command without its data
/// (CmdID, Meta Type, Source, Meta Size, MoreData, tags); checked by a test.
fn cmd_overhead(enc: Encoding) -> usize {
    match enc {
        Encoding::Xml => 300,
        Encoding::Wbxml => 110,
    }
}

/// An upper bound of a Sync command's encoded size without its items.
fn sync_overhead(enc: Encoding) -> usize {
    match enc {
        Encoding::Xml => 260,
        Encoding::Wbxml => 90,
    }
}

/// An upper bound of the encoded size of `data` as an item's `Data`: in XML
/// raw, in CDATA (12 bytes) or with `&<>` and CR escaped (at most 5 more
/// each); in WBXML an inline string or OPAQUE with its length.
fn data_cost(enc: Encoding, data: &[u8]) -> usize {
    match enc {
        Encoding::Xml => data.len() + 12 + 5 * data.iter().filter(|b| is_xml_special(**b)).count(),
        Encoding::Wbxml => data.len() + 8,
    }
}

fn is_xml_special(b: u8) -> bool {
    matches!(b, b'&' | b'<' | b'>' | b'\r')
}

/// The end of a chunk of `data` starting at `start` whose [`data_cost`]
/// stays within `room`: on a character boundary, and not next to white
/// space (SyncML toolkits trim the white space at the ends of a `Data`
/// element, and XML parsers fold a CR that ends one into a newline: the
/// reassembled object would then be short, a 424). Returns `start` when no
/// such end fits.
fn chunk_end(enc: Encoding, data: &str, start: usize, room: usize) -> usize {
    let b = data.as_bytes();
    let fixed = data_cost(enc, &[]);
    let mut budget = room.saturating_sub(fixed);
    let mut end = start;
    while end < b.len() {
        let cost = if enc == Encoding::Xml && is_xml_special(b[end]) { 6 } else { 1 };
        if cost > budget {
            break;
        }
        budget -= cost;
        end += 1;
    }
    if end == b.len() {
        return end;
    }
    while end > start
        && (!data.is_char_boundary(end) || b[end].is_ascii_whitespace() || b[end - 1].is_ascii_whitespace())
    {
        end -= 1;
    }
    end
}

/// A large object the server is sending in chunks.
#[derive(Debug)]
struct Incoming {
    /// Index into the session's datastores.
    ds: usize,
    /// `Add` or `Replace`.
    cmd: &'static str,
    /// The item's id (Source of an Add, Target of a Replace).
    id: String,
    /// The announced total size.
    size: usize,
    data: Vec<u8>,
}

/// What the receiving side made of one item of the server.
enum Piece<'a> {
    /// Answer with this code; nothing to apply (a buffered chunk: 213, or an error).
    Answer(u16),
    /// A complete item: apply it.
    Whole(Option<Cow<'a, [u8]>>),
}

/// A datastore in this session.
#[derive(Debug)]
struct DsRun {
    store: usize,
    next_anchor: String,
    /// The sync type the server alerted (0 until it did).
    mode: u16,
    queue: VecDeque<Change>,
    total_changes: usize,
    sync_sent: bool,
    maps: Vec<(String, String)>,
}

/// One SyncML session of a device.
#[derive(Debug)]
pub struct Session {
    cfg: ClientConfig,
    plan: Plan,
    session_id: String,
    msg_id: u32,
    cmd_id: u32,
    url: String,
    target_uri: String,
    phase: Phase,
    stores: Vec<DsRun>,
    authenticated: bool,
    auth_attempts: u32,
    server_max_msg: usize,
    /// The server's MaxObjSize (0: not announced).
    server_max_obj: usize,
    /// The chunked object being received.
    incoming: Option<Incoming>,
    /// Alerts for our next message (223: a chunked object was cut short).
    alerts: Vec<Command<'static>>,
    /// Server messages in a row without an item command.
    idle_replies: u32,
    responses: Vec<Command<'static>>,
    expected: HashMap<(u32, u32), SentKind>,
    errors: Vec<String>,
    /// Items sent (acknowledged or not).
    pub sent: OpCounts,
    /// Items received from the server.
    pub received: OpCounts,
    /// Messages the server rejected auth on and the client retried with its new nonce.
    pub auth_retries: u64,
    /// Large objects and chunks, both ways.
    pub lob: LobCounts,
}

fn t(s: impl Into<String>) -> Text<'static> {
    Cow::Owned(s.into())
}

fn code_of(s: &Status<'_>) -> u16 {
    s.data.trim().parse().unwrap_or(0)
}

fn num(s: &str) -> Option<u32> {
    s.trim().parse().ok()
}

impl Session {
    /// A session of `dev` following `plan`.
    pub fn new(cfg: &ClientConfig, plan: Plan, dev: &mut Device) -> Session {
        dev.sessions += 1;
        let stores = (0..dev.stores.len())
            .map(|store| DsRun {
                store,
                next_anchor: format!("{}-{}", dev.sessions, store),
                mode: 0,
                queue: VecDeque::new(),
                total_changes: 0,
                sync_sent: false,
                maps: Vec::new(),
            })
            .collect();
        Session {
            cfg: cfg.clone(),
            plan,
            session_id: dev.sessions.to_string(),
            msg_id: 0,
            cmd_id: 0,
            url: cfg.url.clone(),
            target_uri: cfg.url.clone(),
            phase: Phase::AwaitInit,
            stores,
            authenticated: false,
            auth_attempts: 0,
            server_max_msg: 0,
            server_max_obj: 0,
            incoming: None,
            alerts: Vec::new(),
            idle_replies: 0,
            responses: Vec::new(),
            expected: HashMap::new(),
            errors: Vec::new(),
            sent: OpCounts::default(),
            received: OpCounts::default(),
            auth_retries: 0,
            lob: LobCounts::default(),
        }
    }

    /// The errors so far, by kind (e.g. `status_Add_500`, `auth_401`, `decode`).
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Records an error the I/O side saw (HTTP status, connection loss).
    pub fn fail(&mut self, kind: impl Into<String>) {
        self.errors.push(kind.into());
        self.phase = Phase::Over;
    }

    fn error(&mut self, kind: impl Into<String>) {
        self.errors.push(kind.into());
    }

    /// Message 1: credentials, DevInf on a device's first session, one Alert per datastore.
    pub fn start(&mut self, dev: &mut Device) -> Outgoing {
        self.init_message(dev)
    }

    fn next_cmd(&mut self, kind: Option<SentKind>) -> Text<'static> {
        self.cmd_id += 1;
        if let Some(kind) = kind {
            self.expected.insert((self.msg_id, self.cmd_id), kind);
        }
        t(self.cmd_id.to_string())
    }

    /// The statuses for the server's last message (and Results, Alerts of our
    /// own), numbered as this message's first commands.
    fn take_responses(&mut self) -> Vec<Command<'static>> {
        let mut body = std::mem::take(&mut self.responses);
        for cmd in &mut body {
            match cmd {
                Command::Status(s) => s.cmd_id = self.next_cmd(None),
                Command::Results(r) => r.cmd_id = self.next_cmd(None),
                Command::Alert(a) => a.cmd_id = self.next_cmd(Some(SentKind::Alert)),
                _ => {}
            }
        }
        body
    }

    fn begin_message(&mut self) {
        self.msg_id += 1;
        self.cmd_id = 0;
    }

    fn cred(&self, dev: &Device) -> Cred<'static> {
        match self.cfg.auth {
            AuthKind::Basic => Cred {
                meta: Some(Meta {
                    type_: Some(t(auth::AUTH_BASIC)),
                    format: Some(t("b64")),
                    ..Default::default()
                }),
                data: Data::Text(t(B64.encode(format!("{}:{}", dev.user, dev.password)))),
            },
            AuthKind::Md5 => {
                let inner = auth::md5_user_pass_b64(&dev.user, &dev.password);
                Cred {
                    meta: Some(Meta {
                        type_: Some(t(auth::AUTH_MD5)),
                        format: Some(t("b64")),
                        ..Default::default()
                    }),
                    data: Data::Text(t(auth::md5_cred_from_digest(&inner, &dev.nonce))),
                }
            }
        }
    }

    fn finish_message(&mut self, dev: &Device, body: Vec<Command<'static>>, final_: bool) -> Outgoing {
        let msg = self.message(dev, body, final_);
        let mut out = Vec::with_capacity(4096);
        crate::codec::encode(self.cfg.encoding, &msg, &mut out);
        if self.server_max_msg != 0 && out.len() > self.server_max_msg {
            // The packing's size bounds failed: a flaw of this client, counted.
            self.error("message_exceeds_server_max_msg_size");
        }
        Outgoing { url: self.url.clone(), body: out }
    }

    /// The encoded size of a message of `body` (the part that packing does not estimate).
    fn encoded_len(&self, dev: &Device, body: &[Command<'static>], final_: bool) -> usize {
        let mut out = Vec::with_capacity(4096);
        crate::codec::encode(self.cfg.encoding, &self.message(dev, body.to_vec(), final_), &mut out);
        out.len()
    }

    /// The largest message this client sends: the server's MaxMsgSize, and
    /// not more than its own (a device sends what it could take itself).
    fn send_limit(&self) -> usize {
        match self.server_max_msg {
            0 => self.cfg.max_msg_size,
            s => s.min(self.cfg.max_msg_size),
        }
    }

    /// Whether items may go in chunks: the server announced a MaxObjSize
    /// (DS 1.1+: its limit on objects after reassembly of chunks). The
    /// client does not Get the server's DevInf for its SupportLargeObjs: that
    /// reply alone can exceed a small MaxMsgSize (our server then sends it in
    /// chunks; other servers may not).
    fn server_takes_chunks(&self) -> bool {
        self.server_max_obj != 0
    }

    fn message(&self, dev: &Device, body: Vec<Command<'static>>, final_: bool) -> SyncMl<'static> {
        let hdr = SyncHdr {
            ver_dtd: t("1.2"),
            ver_proto: t("SyncML/1.2"),
            session_id: t(self.session_id.clone()),
            msg_id: t(self.msg_id.to_string()),
            target: Location::uri(t(self.target_uri.clone())),
            source: Location {
                loc_uri: t(dev.id.clone()),
                loc_name: Some(t(dev.user.clone())),
                filter: None,
            },
            resp_uri: None,
            no_resp: false,
            cred: (!self.authenticated).then(|| self.cred(dev)),
            meta: Some(Meta {
                max_msg_size: Some(t(self.cfg.max_msg_size.to_string())),
                max_obj_size: Some(t(MAX_OBJ_SIZE.to_string())),
                ..Default::default()
            }),
        };
        SyncMl { hdr, body, final_ }
    }

    fn init_message(&mut self, dev: &mut Device) -> Outgoing {
        self.begin_message();
        let mut body = self.take_responses();
        if !dev.devinf_sent {
            let cmd_id = self.next_cmd(Some(SentKind::Put));
            let (meta, items) = devinf_payload(dev);
            body.push(Command::Put(PutGet { cmd_id, meta: Some(meta), items, ..Default::default() }));
        }

        for i in 0..self.stores.len() {
            let store = &dev.stores[self.stores[i].store];
            let (kind, last) = (store.kind, store.last_anchor.clone());
            let next = self.stores[i].next_anchor.clone();
            let cmd_id = self.next_cmd(Some(SentKind::Alert));
            body.push(Command::Alert(Alert {
                cmd_id,
                data: Some(t(self.plan.alert.to_string())),
                items: vec![Item {
                    target: Some(Location::uri(t(kind.server_uri()))),
                    source: Some(Location::uri(t(kind.local_uri()))),
                    meta: Some(Meta {
                        type_: Some(t(kind.content_type())),
                        anchor: Some(Anchor { last: last.map(t), next: Some(t(next)) }),
                        max_obj_size: None,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }));
        }
        self.finish_message(dev, body, true)
    }

    /// Processes a reply body; returns what to do next.
    pub fn on_reply(&mut self, dev: &mut Device, body: &[u8]) -> Next {
        if self.phase == Phase::Over {
            return Next::Failed;
        }
        if body.len() > self.cfg.max_msg_size {
            tracing::debug!(device = %dev.id, len = body.len(), msg = self.msg_id, "reply over our MaxMsgSize");
            self.error("reply_exceeds_max_msg_size");
        }
        let msg = match crate::codec::decode(self.cfg.encoding, body) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(device = %dev.id, error = %e, "undecodable reply");
                self.fail("decode");
                return Next::Failed;
            }
        };
        if msg.hdr.session_id.trim() != self.session_id {
            self.error("reply_session_id");
        }
        if let Some(uri) = msg.hdr.resp_uri.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            self.url = uri.to_string();
            self.target_uri = uri.to_string();
        }
        if let Some(meta) = &msg.hdr.meta {
            if let Some(max) = meta.max_msg_size.as_deref().and_then(num) {
                self.server_max_msg = max as usize;
            }
            if let Some(max) = meta.max_obj_size.as_deref().and_then(num) {
                self.server_max_obj = max as usize;
            }
        }
        let server_msg = msg.hdr.msg_id.trim().to_string();
        let sent_msg = self.msg_id;

        // The SyncHdr status first: it decides whether anything else counts.
        let hdr_status = msg.body.iter().find_map(|c| match c {
            Command::Status(s) if s.cmd_ref.trim() == "0" => Some(s),
            _ => None,
        });
        match hdr_status {
            Some(st) => {
                if let Some(nonce) = st.chal.as_ref().and_then(|m| m.next_nonce.as_deref()) {
                    match B64.decode(nonce.trim()) {
                        Ok(n) => dev.nonce = n,
                        Err(_) => self.error("bad_nonce"),
                    }
                }
                let code = code_of(st);
                match code {
                    200 | 212 => self.authenticated = true,
                    401 | 407 if !self.authenticated => {
                        self.auth_attempts += 1;
                        // One retry, with the nonce of the challenge (a real client's move
                        // when its stored nonce was stale or it had none).
                        if self.auth_attempts == 1 && self.phase == Phase::AwaitInit {
                            self.auth_retries += 1;
                            self.expected.clear();
                            self.responses.clear();
                            return Next::Send(self.init_message(dev));
                        }
                        self.fail(format!("auth_{code}"));
                        return Next::Failed;
                    }
                    _ => {
                        self.fail(format!("status_SyncHdr_{code}"));
                        return Next::Failed;
                    }
                }
            }
            None if msg.hdr.no_resp => {}
            None => self.error("missing_status_SyncHdr"),
        }

        // Statuses for the server's header and commands go into our next message.
        let mut responses: Vec<Command<'static>> = Vec::new();
        let answer = |responses: &mut Vec<Command<'static>>,
                      cmd_ref: &str,
                      cmd: &str,
                      target: Option<&str>,
                      source: Option<&str>,
                      code: u16| {
            responses.push(Command::Status(Status {
                cmd_id: t(""),
                msg_ref: Some(t(server_msg.clone())),
                cmd_ref: t(cmd_ref.trim()),
                cmd: t(cmd),
                target_refs: target.map(|s| vec![t(s.trim())]).unwrap_or_default(),
                source_refs: source.map(|s| vec![t(s.trim())]).unwrap_or_default(),
                data: t(code.to_string()),
                ..Default::default()
            }));
        };
        if !msg.hdr.no_resp {
            answer(
                &mut responses,
                "0",
                "SyncHdr",
                Some(&msg.hdr.target.loc_uri),
                Some(&msg.hdr.source.loc_uri),
                200,
            );
        }
        let mut results: Vec<Command<'static>> = Vec::new();
        for cmd in &msg.body {
            let respond = !msg.hdr.no_resp;
            match cmd {
                Command::Status(st) => {
                    if st.cmd_ref.trim() == "0" {
                        continue;
                    }
                    let msg_ref = st.msg_ref.as_deref().and_then(num).unwrap_or(sent_msg);
                    let Some(cmd_ref) = num(&st.cmd_ref) else {
                        self.error("bad_status");
                        continue;
                    };
                    let code = code_of(st);
                    match self.expected.remove(&(msg_ref, cmd_ref)) {
                        Some(kind) if kind.ok(code) => {}
                        Some(kind) => self.error(format!("status_{}_{code}", kind.name())),
                        None => self.error("unexpected_status"),
                    }
                }
                Command::Alert(a) => {
                    let code = a.data.as_deref().and_then(num).unwrap_or(0) as u16;
                    let mut status = 200;
                    if (200..=210).contains(&code) {
                        status = self.server_alert(dev, a, code);
                    } else if code != 222 {
                        self.error(format!("unexpected_alert_{code}"));
                        status = 406;
                    }
                    if respond && !a.no_resp {
                        let item = a.items.first();
                        let target = item.and_then(|i| i.target.as_ref()).map(|l| l.loc_uri.to_string());
                        let source = item.and_then(|i| i.source.as_ref()).map(|l| l.loc_uri.to_string());
                        answer(
                            &mut responses,
                            &a.cmd_id,
                            "Alert",
                            target.as_deref(),
                            source.as_deref(),
                            status,
                        );
                        if (200..=210).contains(&code) {
                            let next = item
                                .and_then(|i| i.meta.as_ref())
                                .and_then(|m| m.anchor.as_ref())
                                .and_then(|x| x.next.clone())
                                .map(|n| t(n.into_owned()));
                            if let (Some(Command::Status(s)), Some(next)) = (responses.last_mut(), next) {
                                s.items.push(Item {
                                    data: Some(Data::Anchor(Anchor { last: None, next: Some(next) })),
                                    ..Default::default()
                                });
                            }
                        }
                    }
                }
                Command::Put(p) => {
                    if respond && !p.no_resp {
                        answer(&mut responses, &p.cmd_id, "Put", None, Some("./devinf12"), 200);
                    }
                }
                Command::Get(g) => {
                    let uri =
                        g.items.first().and_then(|i| i.target.as_ref()).map(|l| l.loc_uri.trim().to_string());
                    let is_devinf = uri.as_deref().is_some_and(|u| u.starts_with("./devinf"));
                    answer(
                        &mut responses,
                        &g.cmd_id,
                        "Get",
                        uri.as_deref(),
                        None,
                        if is_devinf { 200 } else { 404 },
                    );
                    if is_devinf {
                        let (meta, items) = devinf_payload(dev);
                        results.push(Command::Results(Results {
                            cmd_id: t(""),
                            msg_ref: Some(t(server_msg.clone())),
                            cmd_ref: t(g.cmd_id.trim()),
                            meta: Some(meta),
                            items,
                            ..Default::default()
                        }));
                        dev.devinf_sent = true;
                    } else {
                        self.error("unexpected_get");
                    }
                }
                Command::Results(r) => {
                    answer(&mut responses, &r.cmd_id, "Results", None, None, 200);
                }
                Command::Sync(s) => {
                    let st = self.server_sync(dev, s, &mut responses, &server_msg, respond);
                    if respond && !s.no_resp {
                        let target = s.target.as_ref().map(|l| l.loc_uri.to_string());
                        let source = s.source.as_ref().map(|l| l.loc_uri.to_string());
                        // The Sync's own status goes before its items' statuses.
                        let at = responses.len() - st;
                        let mut tmp = Vec::new();
                        answer(&mut tmp, &s.cmd_id, "Sync", target.as_deref(), source.as_deref(), 200);
                        responses.splice(at..at, tmp);
                    }
                }
                other => {
                    self.error(format!("unexpected_{}", other.name()));
                    if respond {
                        answer(&mut responses, other.cmd_id(), other.name(), None, None, 406);
                    }
                }
            }
        }
        responses.extend(results);
        responses.append(&mut self.alerts);
        let items = msg.body.iter().any(|c| matches!(c, Command::Sync(s) if !s.commands.is_empty()));
        let waiting = self.phase == Phase::AwaitServerSync;
        self.idle_replies = if items || !waiting { 0 } else { self.idle_replies + 1 };
        if msg.final_ {
            if let Some(inc) = self.incoming.take() {
                // A package cannot end inside a chunked object.
                tracing::debug!(device = %dev.id, id = %inc.id, "package ended inside a chunked item");
                self.error("lob_incomplete");
            }
        }
        // Every command we sent must have its status by the end of the
        // server's package: in the reply to its message, or, when that reply
        // was full, in a following message of the package (digest §2.6).
        if msg.final_ {
            let missing: Vec<SentKind> = self.expected.values().copied().collect();
            for kind in missing {
                self.error(format!("missing_status_{}", kind.name()));
            }
            self.expected.clear();
        }
        self.responses = responses;
        self.advance(dev, msg.final_)
    }

    /// Which of our datastores a server command addresses: its Target is our
    /// local URI, or its Source the server's URI for it.
    fn find_store(
        &self,
        dev: &Device,
        target: Option<&Location<'_>>,
        source: Option<&Location<'_>>,
    ) -> Option<usize> {
        let ours = target.map(|l| l.loc_uri.trim()).unwrap_or("");
        let theirs = source.map(|l| l.loc_uri.trim()).unwrap_or("");
        self.stores.iter().position(|d| {
            let kind = dev.stores[d.store].kind;
            ours == kind.local_uri() || theirs == kind.server_uri()
        })
    }

    /// The server's Alert for one of our datastores; returns the status to answer.
    fn server_alert(&mut self, dev: &mut Device, a: &Alert<'_>, code: u16) -> u16 {
        let Some(item) = a.items.first() else {
            self.error("alert_without_item");
            return 400;
        };
        let Some(i) = self.find_store(dev, item.target.as_ref(), item.source.as_ref()) else {
            self.error("alert_unknown_datastore");
            return 404;
        };
        if self.stores[i].mode != 0 {
            self.error("alert_twice");
        }
        if let Some(max) = item.meta.as_ref().and_then(|m| m.max_obj_size.as_deref()).and_then(num) {
            // DS 1.1 servers give their MaxObjSize here.
            self.server_max_obj = max as usize;
        }
        let has_next = item.meta.as_ref().and_then(|m| m.anchor.as_ref()).is_some_and(|x| x.next.is_some());
        if !has_next {
            self.error("alert_without_anchor");
        }
        // The server answers our sync type, or the type it maps it to when the
        // anchors do not match: a mismatch after a completed sync is an error.
        let expected = self.plan.alert;
        if code != expected {
            self.error(format!("alert_{}_got_{code}", self.plan.alert));
        }
        self.stores[i].mode = code;
        200
    }

    /// Applies the server's Sync; pushes one status per item command; returns how many.
    fn server_sync(
        &mut self,
        dev: &mut Device,
        s: &Sync<'_>,
        responses: &mut Vec<Command<'static>>,
        server_msg: &str,
        respond: bool,
    ) -> usize {
        let Some(i) = self.find_store(dev, s.target.as_ref(), s.source.as_ref()) else {
            self.error("sync_unknown_datastore");
            return 0;
        };
        let si = self.stores[i].store;
        let before = responses.len();
        for cmd in &s.commands {
            let (name, ic) = match cmd {
                Command::Add(ic) => ("Add", ic),
                Command::Replace(ic) => ("Replace", ic),
                Command::Delete(ic) => ("Delete", ic),
                other => {
                    self.error(format!("unexpected_in_sync_{}", other.name()));
                    if respond {
                        push_status(responses, server_msg, other.cmd_id(), other.name(), None, None, 406);
                    }
                    continue;
                }
            };
            let code = match self.assemble(i, name, ic) {
                Piece::Answer(code) => code,
                Piece::Whole(data) => {
                    let item = ic.items.first();
                    match name {
                        "Add" => self.apply_add(dev, si, i, item, data.as_deref()),
                        "Replace" => self.apply_replace(dev, si, i, item, data.as_deref()),
                        _ => self.apply_delete(dev, si, item),
                    }
                }
            };
            if respond && !ic.no_resp {
                let item = ic.items.first();
                let target = item.and_then(|i| i.target.as_ref()).map(|l| l.loc_uri.to_string());
                let source = item.and_then(|i| i.source.as_ref()).map(|l| l.loc_uri.to_string());
                push_status(
                    responses,
                    server_msg,
                    &ic.cmd_id,
                    name,
                    target.as_deref(),
                    source.as_deref(),
                    code,
                );
            }
        }
        responses.len() - before
    }

    /// The receiving side of large objects (digest §8): buffers a chunk
    /// (213), completes an object with its last chunk (checking the announced
    /// Size: 424 if it differs), and voids an object cut short by another
    /// item (Alert 223). Items that are not chunked pass through whole.
    fn assemble<'a>(&mut self, ds: usize, name: &'static str, ic: &'a ItemCommand<'_>) -> Piece<'a> {
        let Some(item) = ic.items.first() else {
            self.error("item_command_without_item");
            return Piece::Answer(400);
        };
        if ic.items.len() > 1 {
            // One item per command is what servers send; a chunk must be the last item anyway.
            self.error("item_command_with_several_items");
        }
        let id = match name {
            "Add" => item.source.as_ref().or(item.target.as_ref()),
            _ => item.target.as_ref().or(item.source.as_ref()),
        }
        .map(|l| l.loc_uri.trim().to_string())
        .unwrap_or_default();
        if self.incoming.as_ref().is_some_and(|inc| inc.ds != ds || inc.cmd != name || inc.id != id) {
            if let Some(inc) = self.incoming.take() {
                self.error("lob_interrupted");
                self.alerts.push(Command::Alert(Alert {
                    cmd_id: t(""),
                    data: Some(t("223")),
                    items: vec![Item {
                        target: Some(Location::uri(t(inc.id.clone()))),
                        source: Some(Location::uri(t(inc.id))),
                        ..Default::default()
                    }],
                    ..Default::default()
                }));
            }
        }
        let data = item.data.as_ref().and_then(Data::as_bytes);
        if !item.more_data && self.incoming.is_none() {
            return Piece::Whole(data.map(Cow::Borrowed));
        }
        let Some(data) = data else {
            self.incoming = None;
            self.error("lob_chunk_without_data");
            return Piece::Answer(412);
        };
        self.lob.chunks_received += 1;
        let Some(inc) = &mut self.incoming else {
            // The first chunk: it carries the total size.
            let size = item
                .meta
                .as_ref()
                .and_then(|m| m.size.as_deref())
                .or(ic.meta.as_ref().and_then(|m| m.size.as_deref()))
                .and_then(num);
            let Some(size) = size.map(|s| s as usize) else {
                self.error("lob_without_size");
                return Piece::Answer(411);
            };
            if size > MAX_OBJ_SIZE {
                self.error("lob_exceeds_max_obj_size");
                return Piece::Answer(413);
            }
            if data.len() > size {
                self.error("lob_size_mismatch");
                return Piece::Answer(424);
            }
            let mut buf = Vec::with_capacity(size);
            buf.extend_from_slice(data);
            self.incoming = Some(Incoming { ds, cmd: name, id, size, data: buf });
            return Piece::Answer(213);
        };
        if inc.data.len() + data.len() > inc.size {
            self.incoming = None;
            self.error("lob_size_mismatch");
            return Piece::Answer(424);
        }
        inc.data.extend_from_slice(data);
        if item.more_data {
            return Piece::Answer(213);
        }
        let Some(inc) = self.incoming.take() else { return Piece::Answer(500) };
        if inc.data.len() != inc.size {
            self.error("lob_size_mismatch");
            return Piece::Answer(424);
        }
        self.lob.objects_received += 1;
        Piece::Whole(Some(Cow::Owned(inc.data)))
    }

    fn apply_add(
        &mut self,
        dev: &mut Device,
        si: usize,
        i: usize,
        item: Option<&Item<'_>>,
        data: Option<&[u8]>,
    ) -> u16 {
        let Some(guid) = item
            .and_then(|it| it.source.as_ref())
            .map(|l| l.loc_uri.trim().to_string())
            .filter(|g| !g.is_empty())
        else {
            self.error("add_without_source");
            return 400;
        };
        let Some(data) = data.filter(|d| !d.is_empty()) else {
            self.error("add_without_data");
            return 400;
        };
        let local = self.received_item(data);
        let store = &mut dev.stores[si];
        let luid = store.new_luid();
        store.items.insert(luid.clone(), local);
        self.stores[i].maps.push((guid, luid));
        self.received.add += 1;
        201
    }

    fn apply_replace(
        &mut self,
        dev: &mut Device,
        si: usize,
        i: usize,
        item: Option<&Item<'_>>,
        data: Option<&[u8]>,
    ) -> u16 {
        self.received.replace += 1;
        let local = self.received_item(data.unwrap_or_default());
        let store = &mut dev.stores[si];
        match item.and_then(|it| it.target.as_ref()).map(|l| l.loc_uri.trim().to_string()) {
            Some(luid) if store.items.contains_key(&luid) => {
                store.items.insert(luid, local);
                200
            }
            _ => {
                // A Replace of an item the device never mapped: the server lost a Map.
                self.error("replace_unknown_item");
                let Some(guid) = item.and_then(|it| it.source.as_ref()).map(|l| l.loc_uri.trim().to_string())
                else {
                    return 404;
                };
                let luid = store.new_luid();
                store.items.insert(luid.clone(), local);
                self.stores[i].maps.push((guid, luid));
                201
            }
        }
    }

    fn apply_delete(&mut self, dev: &mut Device, si: usize, item: Option<&Item<'_>>) -> u16 {
        self.received.delete += 1;
        let luid =
            item.and_then(|it| it.target.as_ref()).map(|l| l.loc_uri.trim().to_string()).unwrap_or_default();
        if dev.stores[si].items.remove(&luid).is_some() {
            200
        } else {
            self.error("delete_unknown_item");
            211
        }
    }

    /// The package flow after a reply was processed.
    fn advance(&mut self, dev: &mut Device, server_final: bool) -> Next {
        match self.phase {
            Phase::AwaitInit => {
                if !server_final {
                    return Next::Send(self.continue_message(dev));
                }
                if let Some(d) = self.stores.iter().find(|d| d.mode == 0) {
                    let kind = dev.stores[d.store].kind;
                    self.fail(format!("no_server_alert_{}", kind.name()));
                    return Next::Failed;
                }
                if self.plan.hold {
                    self.phase = Phase::Over;
                    return Next::Held;
                }
                self.plan_changes(dev);
                Next::Send(self.sync_message(dev))
            }
            Phase::SendingSync => Next::Send(self.sync_message(dev)),
            Phase::AwaitServerSync => {
                if server_final {
                    return Next::Send(self.map_message(dev));
                }
                if self.idle_replies > MAX_IDLE_REPLIES {
                    // Like Synthesis: a server that keeps its package open
                    // without sending anything is looping.
                    self.fail("flow_no_progress");
                    return Next::Failed;
                }
                Next::Send(self.continue_message(dev))
            }
            Phase::SendingMap => Next::Send(self.map_message(dev)),
            Phase::AwaitEnd => {
                self.phase = Phase::Over;
                if !server_final {
                    self.error("flow_final_package_not_final");
                    return Next::Failed;
                }
                for d in &self.stores {
                    dev.stores[d.store].last_anchor = Some(d.next_anchor.clone());
                }
                Next::Done
            }
            Phase::Over => Next::Failed,
        }
    }

    /// Statuses and an Alert 222: "send your next message".
    fn continue_message(&mut self, dev: &Device) -> Outgoing {
        self.begin_message();
        let mut body = self.take_responses();
        let cmd_id = self.next_cmd(Some(SentKind::Alert));
        body.push(Command::Alert(Alert {
            cmd_id,
            data: Some(t("222")),
            items: vec![Item {
                target: Some(Location::uri(t(self.target_uri.clone()))),
                source: Some(Location::uri(t(dev.id.clone()))),
                ..Default::default()
            }],
            ..Default::default()
        }));
        self.finish_message(dev, body, false)
    }

    /// Queues what each datastore sends in package 3, for the mode the server alerted.
    fn plan_changes(&mut self, dev: &mut Device) {
        for d in &mut self.stores {
            let store = &mut dev.stores[d.store];
            let kind = store.kind;
            let mut queue = VecDeque::new();
            match d.mode {
                // Slow sync and refresh from client: every item.
                201 | 203 => {
                    for (luid, local) in &store.items {
                        let data = match &local.received {
                            Some(r) => r.data.to_string(),
                            None => data::item(kind, dev.seed, local.index.unwrap_or(0), local.rev),
                        };
                        queue.push_back(Change::add(luid.clone(), data));
                    }
                }
                // Refresh from server: the device drops its items and takes the server's.
                205 => store.items.clear(),
                // Two-way and one-way from client: this session's local changes.
                200 | 202 => {
                    let mut touched = std::collections::HashSet::new();
                    for n in 0..self.plan.changes {
                        // A device edits and deletes only items it created: the
                        // devices of one user then never conflict, so what each
                        // receives is exactly what the others sent.
                        let own: Vec<&String> = store
                            .items
                            .iter()
                            .filter(|(luid, local)| local.index.is_some() && !touched.contains(*luid))
                            .map(|(luid, _)| luid)
                            .collect();
                        let existing = if own.is_empty() {
                            None
                        } else {
                            Some(own[dev.rng.below(own.len() as u64) as usize].clone())
                        };
                        match (n % 3, existing) {
                            (1, Some(luid)) => {
                                touched.insert(luid.clone());
                                let (index, rev) =
                                    store.items.get(&luid).map_or((None, 1), |l| (l.index, l.rev + 1));
                                store.items.insert(luid.clone(), Local { index, rev, received: None });
                                let data = data::item(kind, dev.seed, index.unwrap_or(0), rev);
                                queue.push_back(Change::replace(luid, data));
                            }
                            (2, Some(luid)) => {
                                touched.insert(luid.clone());
                                store.items.remove(&luid);
                                queue.push_back(Change::Delete { luid });
                            }
                            _ => {
                                let luid = store.new_luid();
                                let index = store.next_index;
                                store.next_index += 1;
                                touched.insert(luid.clone());
                                store.items.insert(
                                    luid.clone(),
                                    Local { index: Some(index), rev: 0, received: None },
                                );
                                let data = data::item(kind, dev.seed, index, 0);
                                queue.push_back(Change::add(luid, data));
                            }
                        }
                    }
                }
                _ => {}
            }
            d.total_changes = queue.len();
            d.queue = queue;
        }
    }

    /// The next message of package 3: statuses and as many changes as fit
    /// the server's MaxMsgSize (and our own). The header and statuses are
    /// measured by encoding them; each change adds at most its
    /// [`Change::cost`]. A change that no message could hold whole goes in
    /// chunks (when the server takes them): the first carries Meta Size,
    /// each but the last MoreData; a chunk ends its Sync and the message,
    /// which then has no Final, and the rest follows in the next message.
    fn sync_message(&mut self, dev: &mut Device) -> Outgoing {
        self.begin_message();
        let mut body = self.take_responses();
        let enc = self.cfg.encoding;
        let limit = self.send_limit();
        let chunks_ok = self.server_takes_chunks();
        let mut room = limit.saturating_sub(self.encoded_len(dev, &body, true));
        // The room of a message without statuses: when the statuses of the
        // last reply fill this one, the items wait for the next message.
        let bare = limit.saturating_sub(self.encoded_len(dev, &[], true)).saturating_sub(sync_overhead(enc));
        let mut packed_any = false;
        let mut ended = false;
        for i in 0..self.stores.len() {
            if self.stores[i].sync_sent && self.stores[i].queue.is_empty() {
                continue;
            }
            if packed_any && room < sync_overhead(enc) + cmd_overhead(enc) {
                break;
            }
            room = room.saturating_sub(sync_overhead(enc));
            let kind = dev.stores[self.stores[i].store].kind;
            let sync_id = self.next_cmd(Some(SentKind::Sync));
            let mut sync = Sync {
                cmd_id: sync_id,
                target: Some(Location::uri(t(kind.server_uri()))),
                source: Some(Location::uri(t(kind.local_uri()))),
                number_of_changes: (!self.stores[i].sync_sent)
                    .then(|| t(self.stores[i].total_changes.to_string())),
                ..Default::default()
            };
            while let Some(change) = self.stores[i].queue.front() {
                let need = change.cost(enc);
                let min_piece = change.data().map_or(0, |(d, sent)| MIN_CHUNK.min(d.len() - sent));
                let statuses_only_fit = room < bare
                    && (need <= bare
                        || (chunks_ok && cmd_overhead(enc) + data_cost(enc, &[]) + min_piece <= bare));
                let whole = change.data().map_or(0, |(d, _)| d.len());
                if self.server_max_obj != 0 && whole > self.server_max_obj {
                    // Never send what the server cannot take (digest §8 rule 6).
                    self.error("item_exceeds_server_max_obj_size");
                    self.stores[i].queue.pop_front();
                    continue;
                }
                if need <= room {
                    room -= need;
                    packed_any = true;
                    if let Some(change) = self.stores[i].queue.pop_front() {
                        let cmd = self.change_cmd(kind, change, None);
                        sync.commands.push(cmd);
                    }
                    continue;
                }
                // It does not fit whole. Like common clients, only an item that no
                // message could hold whole (or one already begun) goes in chunks
                // filling the room; any other waits for the next message.
                let end = match change.data() {
                    Some((data, sent)) if chunks_ok && (sent > 0 || need > bare) => {
                        let end = chunk_end(enc, data, sent, room.saturating_sub(cmd_overhead(enc)));
                        (end >= sent + MIN_CHUNK.min(data.len() - sent)).then_some(end)
                    }
                    _ => None,
                };
                match end {
                    Some(end) => {
                        if let Some(change) = self.stores[i].queue.pop_front() {
                            let cmd = self.change_cmd(kind, change, Some((i, end)));
                            sync.commands.push(cmd);
                        }
                        ended = true;
                    }
                    None if !packed_any && !statuses_only_fit => {
                        // Not even a message without statuses holds it, nor a chunk of it.
                        self.error(if chunks_ok {
                            "item_exceeds_max_msg_size"
                        } else {
                            "item_needs_large_objects"
                        });
                        self.stores[i].queue.pop_front();
                        continue;
                    }
                    None => ended = true,
                }
                break;
            }
            self.stores[i].sync_sent = true;
            body.push(Command::Sync(sync));
            if ended || !self.stores[i].queue.is_empty() {
                break;
            }
        }
        let done = self.stores.iter().all(|d| d.sync_sent && d.queue.is_empty());
        self.phase = if done { Phase::AwaitServerSync } else { Phase::SendingSync };
        self.finish_message(dev, body, done)
    }

    /// The command for `change`, whole or (with `chunk: Some((datastore,
    /// end))`) its data up to `end`, the rest going back to the front of that
    /// datastore's queue.
    fn change_cmd(
        &mut self,
        kind: DataKind,
        change: Change,
        chunk: Option<(usize, usize)>,
    ) -> Command<'static> {
        let meta = Some(Meta { type_: Some(t(kind.content_type())), ..Default::default() });
        let (name, luid, data, sent) = match change {
            Change::Delete { luid } => {
                self.sent.delete += 1;
                let cmd_id = self.next_cmd(Some(SentKind::Delete));
                return Command::Delete(item_cmd(cmd_id, None, Some(luid), None, None));
            }
            Change::Add { luid, data, sent } => ("Add", luid, data, sent),
            Change::Replace { luid, data, sent } => ("Replace", luid, data, sent),
        };
        let end = chunk.map_or(data.len(), |(_, end)| end);
        let more = end < data.len();
        if sent == 0 {
            if name == "Add" {
                self.sent.add += 1;
            } else {
                self.sent.replace += 1;
            }
            if more {
                self.lob.objects_sent += 1;
            }
        }
        if more || sent > 0 {
            self.lob.chunks_sent += 1;
        }
        let kind_sent = match (more, name) {
            (true, _) => SentKind::Chunk,
            (false, "Add") => SentKind::Add,
            (false, _) => SentKind::Replace,
        };
        let cmd_id = self.next_cmd(Some(kind_sent));
        let mut ic = item_cmd(cmd_id, meta, Some(luid.clone()), None, Some(data[sent..end].to_string()));
        if let Some(item) = ic.items.first_mut() {
            item.more_data = more;
            if more && sent == 0 {
                item.meta = Some(Meta { size: Some(t(data.len().to_string())), ..Default::default() });
            }
        }
        if let (true, Some((ds, _))) = (more, chunk) {
            let rest = match name {
                "Add" => Change::Add { luid, data, sent: end },
                _ => Change::Replace { luid, data, sent: end },
            };
            self.stores[ds].queue.push_front(rest);
        }
        if name == "Add" {
            Command::Add(ic)
        } else {
            Command::Replace(ic)
        }
    }

    /// The next message of package 5: statuses and the Map of the server's Adds.
    fn map_message(&mut self, dev: &mut Device) -> Outgoing {
        self.begin_message();
        let mut body = self.take_responses();
        let enc = self.cfg.encoding;
        let mut room = self.send_limit().saturating_sub(self.encoded_len(dev, &body, true));
        // Upper bounds of a Map without items and of a MapItem without its ids.
        let (map_cost, item_cost) = match enc {
            Encoding::Xml => (220, 90),
            Encoding::Wbxml => (70, 16),
        };
        for i in 0..self.stores.len() {
            let first = self.stores[i].maps.last().map_or(0, |(g, l)| item_cost + g.len() + l.len());
            if first == 0 || room < map_cost + first {
                continue;
            }
            room -= map_cost;
            let kind = dev.stores[self.stores[i].store].kind;
            let cmd_id = self.next_cmd(Some(SentKind::Map));
            let mut map = Map {
                cmd_id,
                target: Location::uri(t(kind.server_uri())),
                source: Location::uri(t(kind.local_uri())),
                ..Default::default()
            };
            while let Some((guid, luid)) = self.stores[i].maps.last() {
                let need = item_cost + guid.len() + luid.len();
                if need > room {
                    break;
                }
                room -= need;
                let Some((guid, luid)) = self.stores[i].maps.pop() else { break };
                map.map_items
                    .push(MapItem { target: Location::uri(t(guid)), source: Location::uri(t(luid)) });
            }
            body.push(Command::Map(map));
        }
        if !body.iter().any(|c| matches!(c, Command::Map(_)))
            && self.stores.iter().any(|d| !d.maps.is_empty())
        {
            // The statuses leave no room for a single map item: give up the maps
            // rather than loop (the server resends those items as Adds).
            self.error("map_does_not_fit");
            for d in &mut self.stores {
                d.maps.clear();
            }
        }
        let done = self.stores.iter().all(|d| d.maps.is_empty());
        self.phase = if done { Phase::AwaitEnd } else { Phase::SendingMap };
        self.finish_message(dev, body, done)
    }
}

impl Session {
    /// A device's record of an item it received.
    fn received_item(&mut self, data: &[u8]) -> Local {
        let text = match std::str::from_utf8(data) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => {
                self.error("received_data_not_utf8");
                String::from_utf8_lossy(data)
            }
        };
        let received =
            Received { hash: xxhash_rust::xxh64::xxh64(data, 0), data: std::sync::Arc::from(text.as_ref()) };
        Local { index: None, rev: 0, received: Some(received) }
    }
}

fn item_cmd(
    cmd_id: Text<'static>,
    meta: Option<Meta<'static>>,
    source: Option<String>,
    target: Option<String>,
    data: Option<String>,
) -> ItemCommand<'static> {
    ItemCommand {
        cmd_id,
        meta,
        items: vec![Item {
            source: source.map(|s| Location::uri(t(s))),
            target: target.map(|s| Location::uri(t(s))),
            data: data.map(|d| Data::Text(t(d))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn push_status(
    responses: &mut Vec<Command<'static>>,
    msg_ref: &str,
    cmd_ref: &str,
    cmd: &str,
    target: Option<&str>,
    source: Option<&str>,
    code: u16,
) {
    let (target, source) = (target.map(str::trim), source.map(str::trim));
    responses.push(Command::Status(Status::answer(msg_ref, cmd_ref.trim(), cmd, target, source, code)));
}

/// The device's DevInf as sent in a Put or in the Results to the server's Get.
fn devinf_payload(dev: &Device) -> (Meta<'static>, Vec<Item<'static>>) {
    let meta = Meta { type_: Some(t("application/vnd.syncml-devinf+xml")), ..Default::default() };
    let item = Item {
        source: Some(Location::uri(t("./devinf12"))),
        data: Some(Data::DevInf(Box::new(dev.devinf()))),
        ..Default::default()
    };
    (meta, vec![item])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ClientConfig {
        ClientConfig {
            url: "http://127.0.0.1:1/sync".into(),
            encoding: Encoding::Xml,
            auth: AuthKind::Md5,
            max_msg_size: 150_000,
        }
    }

    fn decode(out: &Outgoing) -> SyncMl<'static> {
        crate::codec::decode(Encoding::Xml, &out.body).expect("our message decodes").into_owned()
    }

    /// A refresh from server (205) of a one-datastore device, answered up to
    /// the client's message 2: the device, the session and that message.
    fn refresh_started(cfg: &ClientConfig) -> (Device, Session, SyncMl<'static>) {
        let enc = cfg.encoding;
        let mut dev = Device::new("dev-0", "alice", "secret", &[DataKind::Contacts], 0, 1);
        let mut s = Session::new(cfg, Plan { alert: 205, changes: 0, hold: false }, &mut dev);
        let m1 = crate::codec::decode(enc, &s.start(&mut dev).body).expect("decodes").into_owned();
        let mut body = statuses_for(&m1);
        body[0] = status(1, "0", "SyncHdr", 212);
        body.push(server_alert(205));
        let Next::Send(m2) = s.on_reply(&mut dev, &server_reply(1, body, true, enc)) else { panic!() };
        let m2 = crate::codec::decode(enc, &m2.body).expect("decodes").into_owned();
        (dev, s, m2)
    }

    fn status(msg_ref: u32, cmd_ref: &str, cmd: &str, code: u16) -> Command<'static> {
        Command::Status(Status {
            cmd_id: t("1"),
            msg_ref: Some(t(msg_ref.to_string())),
            cmd_ref: t(cmd_ref),
            cmd: t(cmd),
            data: t(code.to_string()),
            ..Default::default()
        })
    }

    /// The header of a scripted server's message `msg_id` in session 1.
    fn reply_hdr(msg_id: u32) -> SyncHdr<'static> {
        SyncHdr {
            ver_dtd: t("1.2"),
            ver_proto: t("SyncML/1.2"),
            session_id: t("1"),
            msg_id: t(msg_id.to_string()),
            target: Location::uri(t("dev-0")),
            source: Location::uri(t("http://127.0.0.1:1/sync")),
            ..Default::default()
        }
    }

    fn encode_reply(
        hdr: SyncHdr<'static>,
        body: Vec<Command<'static>>,
        final_: bool,
        enc: Encoding,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        crate::codec::encode(enc, &SyncMl { hdr, body, final_ }, &mut out);
        out
    }

    fn reply(msg_id: u32, body: Vec<Command<'static>>, final_: bool, resp_uri: Option<&str>) -> Vec<u8> {
        let hdr = SyncHdr { resp_uri: resp_uri.map(t), ..reply_hdr(msg_id) };
        encode_reply(hdr, body, final_, Encoding::Xml)
    }

    fn cmd_ids(m: &SyncMl<'_>, name: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for c in &m.body {
            if c.name() == name {
                ids.push(c.cmd_id().to_string());
            }
            if let Command::Sync(s) = c {
                ids.extend(s.commands.iter().filter(|x| x.name() == name).map(|x| x.cmd_id().to_string()));
            }
        }
        ids
    }

    /// Message 1, the server's answer with a challenge nonce and RespURI, then
    /// a package-3 reply with a failed Add and a missing Sync status: both
    /// are counted by kind.
    #[test]
    fn checks_statuses_and_follows_resp_uri() {
        let mut dev = Device::new("dev-0", "alice", "secret", &[DataKind::Contacts], 3, 1);
        let plan = Plan { alert: 201, changes: 0, hold: false };
        let mut s = Session::new(&cfg(), plan, &mut dev);
        let m1 = s.start(&mut dev);
        let msg = decode(&m1);
        let cred = msg.hdr.cred.as_ref().expect("credentials in message 1");
        let expected = auth::md5_cred_from_digest(&auth::md5_user_pass_b64("alice", "secret"), b"");
        assert_eq!(cred.data.as_text(), Some(expected.as_str()));
        assert_eq!(cmd_ids(&msg, "Put").len(), 1, "DevInf on the first session");
        let alert = cmd_ids(&msg, "Alert");
        assert_eq!(alert.len(), 1);

        let mut hdr_ok = status(1, "0", "SyncHdr", 212);
        if let Command::Status(st) = &mut hdr_ok {
            st.chal = Some(Meta { next_nonce: Some(t(B64.encode(b"N0NCE"))), ..Default::default() });
        }
        let r1 = reply(
            1,
            vec![hdr_ok, status(1, "1", "Put", 200), status(1, &alert[0], "Alert", 200), server_alert(201)],
            true,
            Some("http://127.0.0.1:1/sync?s=abc"),
        );
        let Next::Send(m2) = s.on_reply(&mut dev, &r1) else { panic!("package 3 follows: {:?}", s.errors()) };
        assert!(s.errors().is_empty(), "{:?}", s.errors());
        assert_eq!(dev.nonce, b"N0NCE", "the challenge's nonce is kept for the next session");
        assert_eq!(m2.url, "http://127.0.0.1:1/sync?s=abc", "RespURI followed");
        let msg2 = decode(&m2);
        assert_eq!(msg2.hdr.target.loc_uri, "http://127.0.0.1:1/sync?s=abc");
        assert!(msg2.hdr.cred.is_none(), "no credentials once authenticated");
        assert!(msg2.final_);
        let adds = cmd_ids(&msg2, "Add");
        assert_eq!(adds.len(), 3, "slow sync sends every item");
        assert_eq!(s.sent.add, 3);

        // The server fails one Add and forgets the Sync's status.
        let r2 = reply(
            2,
            vec![
                status(2, "0", "SyncHdr", 200),
                status(2, &adds[0], "Add", 201),
                status(2, &adds[1], "Add", 500),
                status(2, &adds[2], "Add", 201),
            ],
            true,
            None,
        );
        let Next::Send(m3) = s.on_reply(&mut dev, &r2) else { panic!("map package follows") };
        let mut errors = s.errors().to_vec();
        errors.sort();
        assert_eq!(errors, vec!["missing_status_Sync".to_string(), "status_Add_500".to_string()]);
        assert_eq!(m3.url, "http://127.0.0.1:1/sync?s=abc", "RespURI kept");
        let r3 = reply(3, vec![status(3, "0", "SyncHdr", 200)], false, None);
        assert!(
            matches!(s.on_reply(&mut dev, &r3), Next::Failed),
            "a non-final last package is a flow error"
        );
        assert!(s.errors().iter().any(|e| e == "flow_final_package_not_final"));
        assert!(dev.stores[0].last_anchor.is_none(), "no anchor after a failed session");
    }

    /// A server package 2 over two messages (the init reply did not fit the
    /// device's MaxMsgSize): the client answers part 1 with its statuses and
    /// Alert 222, takes the status of its Alert from part 2, and starts
    /// package 3 only after the server's Final; no error.
    #[test]
    fn waits_for_a_package_2_over_several_messages() {
        let mut dev = Device::new("dev-0", "alice", "secret", &[DataKind::Contacts], 2, 1);
        let mut s = Session::new(&cfg(), Plan { alert: 201, changes: 0, hold: false }, &mut dev);
        let m1 = decode(&s.start(&mut dev));
        let (put, alert) = (cmd_ids(&m1, "Put"), cmd_ids(&m1, "Alert"));
        // Part 1: the statuses that fit, no Alert yet, no Final.
        let part1 =
            reply(1, vec![status(1, "0", "SyncHdr", 212), status(1, &put[0], "Put", 200)], false, None);
        let Next::Send(m2) = s.on_reply(&mut dev, &part1) else {
            panic!("asks for part 2: {:?}", s.errors())
        };
        let m2 = decode(&m2);
        assert!(s.errors().is_empty(), "the Alert's status may come later: {:?}", s.errors());
        assert!(!m2.final_);
        assert!(cmd_ids(&m2, "Sync").is_empty(), "no package 3 before the server's Final");
        let next = cmd_ids(&m2, "Alert");
        assert_eq!(next.len(), 1);
        assert!(m2.body.iter().any(|c| matches!(c, Command::Alert(a) if a.data.as_deref() == Some("222"))));
        // Part 2: the carried status, the status for the 222, the server's Alert, Final.
        let part2 = reply(
            2,
            vec![
                status(2, "0", "SyncHdr", 200),
                status(1, &alert[0], "Alert", 200),
                status(2, &next[0], "Alert", 200),
                server_alert(201),
            ],
            true,
            None,
        );
        let Next::Send(m3) = s.on_reply(&mut dev, &part2) else { panic!("package 3: {:?}", s.errors()) };
        assert!(s.errors().is_empty(), "{:?}", s.errors());
        let m3 = decode(&m3);
        assert_eq!(cmd_ids(&m3, "Sync").len(), 1);
        assert_eq!(cmd_ids(&m3, "Add").len(), 2);

        // A status that never comes is counted once the server's package ends.
        let mut dev = Device::new("dev-1", "alice", "secret", &[DataKind::Contacts], 0, 1);
        let mut s = Session::new(&cfg(), Plan { alert: 201, changes: 0, hold: false }, &mut dev);
        let m1 = decode(&s.start(&mut dev));
        let put = cmd_ids(&m1, "Put");
        let part1 =
            reply(1, vec![status(1, "0", "SyncHdr", 212), status(1, &put[0], "Put", 200)], false, None);
        let Next::Send(m2) = s.on_reply(&mut dev, &part1) else { panic!() };
        let next = cmd_ids(&decode(&m2), "Alert");
        let part2 = reply(
            2,
            vec![status(2, "0", "SyncHdr", 200), status(2, &next[0], "Alert", 200), server_alert(201)],
            true,
            None,
        );
        let _ = s.on_reply(&mut dev, &part2);
        assert_eq!(s.errors(), ["missing_status_Alert".to_string()]);
    }

    /// A 401 with a challenge is retried once with the new nonce; a second 401 fails the session.
    #[test]
    fn auth_retry_then_failure() {
        let mut dev = Device::new("dev-0", "alice", "wrong", &[DataKind::Contacts], 0, 1);
        let mut s = Session::new(&cfg(), Plan { alert: 200, changes: 0, hold: false }, &mut dev);
        let _ = s.start(&mut dev);
        let mut denied = status(1, "0", "SyncHdr", 401);
        if let Command::Status(st) = &mut denied {
            st.chal = Some(Meta { next_nonce: Some(t(B64.encode(b"fresh"))), ..Default::default() });
        }
        let Next::Send(retry) = s.on_reply(&mut dev, &reply(1, vec![denied.clone()], true, None)) else {
            panic!("one retry")
        };
        let msg = decode(&retry);
        assert_eq!(msg.hdr.msg_id, "2");
        let expected = auth::md5_cred_from_digest(&auth::md5_user_pass_b64("alice", "wrong"), b"fresh");
        assert_eq!(msg.hdr.cred.as_ref().and_then(|c| c.data.as_text()), Some(expected.as_str()));
        assert_eq!(s.auth_retries, 1);
        if let Command::Status(st) = &mut denied {
            st.msg_ref = Some(t("2"));
        }
        assert!(matches!(s.on_reply(&mut dev, &reply(2, vec![denied], true, None)), Next::Failed));
        assert_eq!(s.errors(), ["auth_401".to_string()]);
    }

    /// A scripted server's reply carrying its MaxMsgSize and MaxObjSize.
    fn server_reply(msg_id: u32, body: Vec<Command<'static>>, final_: bool, enc: Encoding) -> Vec<u8> {
        encode_reply(SyncHdr { meta: Some(server_meta()), ..reply_hdr(msg_id) }, body, final_, enc)
    }

    /// The scripted server's MaxMsgSize and MaxObjSize.
    fn server_meta() -> Meta<'static> {
        Meta {
            max_msg_size: Some(t(SERVER_MAX_MSG.to_string())),
            max_obj_size: Some(t("1000000")),
            ..Default::default()
        }
    }

    const SERVER_MAX_MSG: usize = 2500;

    /// The statuses a server gives for every command of a client message:
    /// 213 for a chunk (MoreData), 201 for a complete Add, 200 otherwise.
    fn statuses_for(m: &SyncMl<'_>) -> Vec<Command<'static>> {
        let msg = m.hdr.msg_id.trim().parse().expect("numeric MsgID");
        let mut out = vec![status(msg, "0", "SyncHdr", 200)];
        for c in &m.body {
            match c {
                Command::Status(_) => {}
                Command::Sync(sync) => {
                    out.push(status(msg, &sync.cmd_id, "Sync", 200));
                    for ic in &sync.commands {
                        let code = match ic {
                            Command::Add(a) if a.items.iter().any(|i| i.more_data) => 213,
                            Command::Replace(a) if a.items.iter().any(|i| i.more_data) => 213,
                            Command::Add(_) => 201,
                            _ => 200,
                        };
                        out.push(status(msg, ic.cmd_id(), ic.name(), code));
                    }
                }
                other => out.push(status(msg, other.cmd_id(), other.name(), 200)),
            }
        }
        out
    }

    fn server_alert(code: u16) -> Command<'static> {
        Command::Alert(Alert {
            cmd_id: t("9"),
            data: Some(t(code.to_string())),
            items: vec![Item {
                target: Some(Location::uri(t("./contacts"))),
                source: Some(Location::uri(t("addressbook"))),
                meta: Some(Meta {
                    anchor: Some(Anchor { last: None, next: Some(t("S1")) }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    /// Package 3 of a slow sync at a small MaxMsgSize, in XML and WBXML: each
    /// message stays within the server's limit; an item that does not fit
    /// goes in chunks (Meta Size on the first, MoreData on all but the last,
    /// the chunk last in its message, which has no Final), every 213 is
    /// expected, and the pieces join to exactly the device's items.
    #[test]
    fn sends_items_that_do_not_fit_in_chunks() {
        for enc in [Encoding::Xml, Encoding::Wbxml] {
            let mut cfg = cfg();
            cfg.encoding = enc;
            cfg.max_msg_size = 3000;
            let mut dev = Device::new("dev-0", "alice", "secret", &[DataKind::Contacts], 40, 7);
            let expected: BTreeMap<String, String> = dev.stores[0]
                .items
                .iter()
                .map(|(luid, l)| {
                    (luid.clone(), data::item(DataKind::Contacts, dev.seed, l.index.unwrap_or(0), 0))
                })
                .collect();
            assert!(expected.values().any(|d| d.len() > 3 * SERVER_MAX_MSG), "a photo needs several chunks");
            let mut s = Session::new(&cfg, Plan { alert: 201, changes: 0, hold: false }, &mut dev);
            let m1 = crate::codec::decode(enc, &s.start(&mut dev).body).expect("decodes").into_owned();
            let mut body = statuses_for(&m1);
            body[0] = status(1, "0", "SyncHdr", 212);
            body.push(server_alert(201));
            let mut next = s.on_reply(&mut dev, &server_reply(1, body, true, enc));
            let mut pieces: BTreeMap<String, Vec<(String, Option<String>, bool)>> = BTreeMap::new();
            let mut server_msg = 1;
            let mut finals = 0;
            while let Next::Send(out) = next {
                assert!(out.body.len() <= SERVER_MAX_MSG, "{enc:?}: {} bytes", out.body.len());
                let m = crate::codec::decode(enc, &out.body).expect("decodes").into_owned();
                let mut open_chunk = false;
                for (ci, c) in m.body.iter().enumerate() {
                    let Command::Sync(sync) = c else { continue };
                    for (i, ic) in sync.commands.iter().enumerate() {
                        let Command::Add(add) = ic else { panic!("slow sync sends Adds") };
                        assert_eq!(add.items.len(), 1);
                        let item = &add.items[0];
                        let luid = item.source.as_ref().map(|l| l.loc_uri.to_string()).unwrap_or_default();
                        let size = item.meta.as_ref().and_then(|m| m.size.as_ref()).map(|x| x.to_string());
                        let data = item.data.as_ref().and_then(|d| d.as_text()).unwrap_or("").to_string();
                        if item.more_data {
                            assert!(
                                i + 1 == sync.commands.len() && ci + 1 == m.body.len(),
                                "a chunk ends the message"
                            );
                            open_chunk = true;
                        }
                        pieces.entry(luid).or_default().push((data, size, item.more_data));
                    }
                }
                assert!(!(open_chunk && m.final_), "no Final with an incomplete object");
                finals += m.final_ as u32;
                server_msg += 1;
                // After package 3 the server has nothing to send: its package 4 is statuses only.
                let body = statuses_for(&m);
                next = s.on_reply(&mut dev, &server_reply(server_msg, body, m.final_, enc));
            }
            assert!(matches!(next, Next::Done), "{enc:?}: {:?}", s.errors());
            assert!(s.errors().is_empty(), "{enc:?}: {:?}", s.errors());
            assert_eq!(finals, 2, "package 3 and package 5 end with Final");
            assert_eq!(pieces.len(), expected.len());
            let mut chunked = 0;
            let mut chunks = 0;
            for (luid, ps) in &pieces {
                let joined: String = ps.iter().map(|p| p.0.as_str()).collect();
                assert_eq!(&joined, &expected[luid], "{enc:?}: {luid} arrives whole");
                let (last, rest) = ps.split_last().expect("one piece at least");
                assert!(!last.2, "the last piece has no MoreData");
                assert!(rest.iter().all(|p| p.2), "every other piece has MoreData");
                if ps.len() > 1 {
                    chunked += 1;
                    chunks += ps.len() as u64;
                    assert_eq!(
                        ps[0].1.as_deref(),
                        Some(joined.len().to_string().as_str()),
                        "Size on the first"
                    );
                    assert!(ps[1..].iter().all(|p| p.1.is_none()), "Size only on the first");
                }
            }
            assert!(chunked >= 2, "{enc:?}: {chunked} items chunked");
            assert_eq!(s.sent.add, 40, "an item counts once, however many chunks");
            assert_eq!((s.lob.objects_sent, s.lob.chunks_sent), (chunked, chunks));
        }
    }

    fn server_add(id: &str, data: &str, size: Option<usize>, more: bool) -> Command<'static> {
        Command::Add(ItemCommand {
            cmd_id: t("20"),
            meta: Some(Meta { type_: Some(t("text/vcard")), ..Default::default() }),
            items: vec![Item {
                source: Some(Location::uri(t(id))),
                meta: size.map(|n| Meta { size: Some(t(n.to_string())), ..Default::default() }),
                data: Some(Data::Text(t(data))),
                more_data: more,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn server_sync(cmds: Vec<Command<'static>>) -> Command<'static> {
        Command::Sync(Sync {
            cmd_id: t("19"),
            target: Some(Location::uri(t("./contacts"))),
            source: Some(Location::uri(t("addressbook"))),
            commands: cmds,
            ..Default::default()
        })
    }

    /// Codes the client gave for the server's item commands, and its Alerts.
    fn answers(m: &SyncMl<'_>) -> (Vec<u16>, Vec<String>) {
        let codes = m
            .body
            .iter()
            .filter_map(|c| match c {
                Command::Status(st) if matches!(st.cmd.as_ref(), "Add" | "Replace") => Some(code_of(st)),
                _ => None,
            })
            .collect();
        let alerts = m
            .body
            .iter()
            .filter_map(|c| match c {
                Command::Alert(a) => a.data.as_ref().map(|d| d.to_string()),
                _ => None,
            })
            .collect();
        (codes, alerts)
    }

    /// A refresh whose server package 4 carries a large object in three
    /// chunks over three messages: the client answers 213 and Alert 222 to
    /// each non-final one, keeps the reassembled item and maps it.
    #[test]
    fn reassembles_chunks_the_server_sends() {
        let enc = Encoding::Wbxml;
        let mut cfg = cfg();
        cfg.encoding = enc;
        let (mut dev, mut s, m2) = refresh_started(&cfg);
        assert!(m2.final_);

        let big =
            format!("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Big\r\nNOTE:{}\r\nEND:VCARD\r\n", "x".repeat(9000));
        let small = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Small\r\nEND:VCARD\r\n";
        let (a, rest) = big.split_at(4000);
        let (b, c) = rest.split_at(3000);
        let steps = [
            (vec![server_add("g1", a, Some(big.len()), true)], false),
            (vec![server_add("g1", b, None, true)], false),
            (vec![server_add("g1", c, None, false), server_add("g2", small, None, false)], true),
        ];
        let mut last = m2;
        for (n, (cmds, fin)) in steps.into_iter().enumerate() {
            let mut body = statuses_for(&last);
            body.push(server_sync(cmds));
            let Next::Send(out) = s.on_reply(&mut dev, &server_reply(2 + n as u32, body, fin, enc)) else {
                panic!("{:?}", s.errors())
            };
            last = crate::codec::decode(enc, &out.body).expect("decodes").into_owned();
            let (codes, alerts) = answers(&last);
            if fin {
                assert_eq!(codes, vec![201, 201]);
                assert!(last.final_, "package 5");
                let maps: Vec<&Map> = last
                    .body
                    .iter()
                    .filter_map(|c| match c {
                        Command::Map(m) => Some(m),
                        _ => None,
                    })
                    .collect();
                assert_eq!(maps.len(), 1);
                assert_eq!(maps[0].map_items.len(), 2);
            } else {
                assert_eq!(codes, vec![213], "chunk {n}");
                assert_eq!(alerts, vec!["222".to_string()], "asks for the next message");
                assert!(!last.final_);
            }
        }
        let body = statuses_for(&last);
        assert!(matches!(s.on_reply(&mut dev, &server_reply(5, body, true, enc)), Next::Done));
        assert!(s.errors().is_empty(), "{:?}", s.errors());
        assert_eq!(s.received.add, 2, "an item counts once, however many chunks");
        assert_eq!((s.lob.objects_received, s.lob.chunks_received), (1, 3));
        let want = xxhash_rust::xxh64::xxh64(big.as_bytes(), 0)
            .wrapping_add(xxhash_rust::xxh64::xxh64(small.as_bytes(), 0));
        assert_eq!(dev.content_digest(), want, "the device holds both items byte for byte");
    }

    /// A device sends back what it received, as it received it, when it
    /// later slow-syncs (so the server can match each item to its twin), and
    /// its own items as generated.
    #[test]
    fn a_later_slow_sync_sends_received_items_as_received() {
        let enc = Encoding::Xml;
        let (mut dev, mut s, last) = refresh_started(&cfg());
        let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:From The Server\r\nN:Server;From;;;\r\nEND:VCARD\r\n";
        let mut body = statuses_for(&last);
        body.push(server_sync(vec![server_add("g1", card, None, false)]));
        let Next::Send(_) = s.on_reply(&mut dev, &server_reply(2, body, true, enc)) else {
            panic!("{:?}", s.errors())
        };
        assert_eq!(s.received.add, 1);
        let digest = dev.content_digest();

        let mut slow = Session::new(&cfg(), Plan { alert: 201, changes: 0, hold: false }, &mut dev);
        let m1 = crate::codec::decode(enc, &slow.start(&mut dev).body).expect("decodes").into_owned();
        let mut body = statuses_for(&m1);
        body[0] = status(1, "0", "SyncHdr", 212);
        body.push(server_alert(201));
        // The second session has its own SessionID; the server echoes it.
        let hdr =
            SyncHdr { session_id: m1.hdr.session_id.clone(), meta: Some(server_meta()), ..reply_hdr(1) };
        let Next::Send(m2) = slow.on_reply(&mut dev, &encode_reply(hdr, body, true, enc)) else {
            panic!("{:?}", slow.errors())
        };
        let m2 = decode(&m2);
        let mut sent = Vec::new();
        for c in &m2.body {
            if let Command::Sync(sync) = c {
                for ic in &sync.commands {
                    let Command::Add(add) = ic else { panic!("a slow sync sends Adds: {ic:?}") };
                    for item in &add.items {
                        if let Some(Data::Text(text)) = &item.data {
                            sent.push(text.to_string());
                        }
                    }
                }
            }
        }
        assert_eq!(sent, vec![card.to_string()], "the received card, byte for byte");
        assert!(slow.errors().is_empty(), "{:?}", slow.errors());
        assert_eq!(dev.content_digest(), digest, "the device still holds what it received");
    }

    /// A server that keeps package 4 open without sending anything is
    /// given up after a few rounds (`flow_no_progress`), not followed for ever.
    #[test]
    fn a_server_package_without_progress_fails_the_session() {
        let enc = Encoding::Xml;
        let (mut dev, mut s, mut last) = refresh_started(&cfg());
        for n in 0..=MAX_IDLE_REPLIES {
            let mut body = statuses_for(&last);
            body.push(server_sync(Vec::new()));
            match s.on_reply(&mut dev, &server_reply(2 + n, body, false, enc)) {
                Next::Send(out) => last = decode(&out),
                Next::Failed => {
                    assert_eq!(n, MAX_IDLE_REPLIES, "{:?}", s.errors());
                    assert_eq!(s.errors(), ["flow_no_progress".to_string()]);
                    return;
                }
                other => panic!("{other:?}"),
            }
        }
        panic!("still following an idle server: {:?}", s.errors());
    }

    /// Broken large objects from the server are answered and counted by kind:
    /// no Size (411), a size mismatch (424), an object cut short by another
    /// item (Alert 223, the new item still taken), a package ending inside one.
    #[test]
    fn broken_chunks_from_the_server_are_counted_by_kind() {
        let enc = Encoding::Xml;
        let (mut dev, mut s, mut last) = refresh_started(&cfg());
        // (server commands, Final, the client's codes for them, its Alerts)
        type Step = (Vec<Command<'static>>, bool, Vec<u16>, Vec<&'static str>);
        let steps: Vec<Step> = vec![
            (vec![server_add("g1", "abc", None, true)], false, vec![411], vec!["222"]),
            (vec![server_add("g2", "abcde", Some(8), true)], false, vec![213], vec!["222"]),
            (vec![server_add("g2", "fghij", None, false)], false, vec![424], vec!["222"]),
            (vec![server_add("g3", "abcde", Some(8), true)], false, vec![213], vec!["222"]),
            (vec![server_add("g4", "whole", None, false)], false, vec![201], vec!["223", "222"]),
            (vec![server_add("g5", "abcde", Some(8), true)], true, vec![213], vec![]),
        ];
        for (n, (cmds, fin, codes, alerts)) in steps.into_iter().enumerate() {
            let mut body = statuses_for(&last);
            body.push(server_sync(cmds));
            let Next::Send(out) = s.on_reply(&mut dev, &server_reply(2 + n as u32, body, fin, enc)) else {
                panic!("{:?}", s.errors())
            };
            last = decode(&out);
            let (got_codes, got_alerts) = answers(&last);
            assert_eq!(got_codes, codes, "step {n}");
            assert_eq!(got_alerts, alerts, "step {n}");
            if let Some(Command::Alert(a)) =
                last.body.iter().find(|c| matches!(c, Command::Alert(a) if a.data.as_deref() == Some("223")))
            {
                assert_eq!(
                    a.items[0].target.as_ref().map(|l| l.loc_uri.as_ref()),
                    Some("g3"),
                    "names the voided item"
                );
            }
        }
        let mut errors = s.errors().to_vec();
        errors.sort();
        assert_eq!(errors, ["lob_incomplete", "lob_interrupted", "lob_size_mismatch", "lob_without_size"]);
        assert_eq!(s.received.add, 1, "only the whole item counts");
    }

    /// The packing's size bounds hold: a Sync with one chunked Add (Size,
    /// MoreData, long ids, data with markup and CRs) costs no more than
    /// `sync_overhead + cmd_overhead + data_cost`, in both encodings.
    #[test]
    fn size_bounds_hold() {
        let data = "BEGIN:VCARD\r\nNOTE:a <b> & c ]]> d\r\nPHOTO;ENCODING=b:QUJD\r\nEND:VCARD\r\n".repeat(20);
        for enc in [Encoding::Xml, Encoding::Wbxml] {
            let mut dev = Device::new("dev-0", "alice", "secret", &[DataKind::Contacts], 0, 1);
            let mut c = cfg();
            c.encoding = enc;
            let s = Session::new(&c, Plan { alert: 201, changes: 0, hold: false }, &mut dev);
            let empty = s.encoded_len(&dev, &[], true);
            let mut ic = item_cmd(
                t("99999"),
                Some(Meta { type_: Some(t("text/x-vcalendar")), ..Default::default() }),
                Some("L123456789".into()),
                None,
                Some(data.clone()),
            );
            ic.items[0].more_data = true;
            ic.items[0].meta = Some(Meta { size: Some(t("4194304")), ..Default::default() });
            let sync = Command::Sync(Sync {
                cmd_id: t("99998"),
                target: Some(Location::uri(t("calendar"))),
                source: Some(Location::uri(t("calendar"))),
                number_of_changes: Some(t("100000")),
                commands: vec![Command::Replace(ic)],
                ..Default::default()
            });
            let full = s.encoded_len(&dev, &[sync], true);
            let bound = sync_overhead(enc) + cmd_overhead(enc) + data_cost(enc, data.as_bytes());
            assert!(full - empty <= bound, "{enc:?}: {} > {bound}", full - empty);
            // chunk_end keeps within its room and never splits CR LF.
            let end = chunk_end(enc, &data, 0, 500);
            assert!(data_cost(enc, &data.as_bytes()[..end]) <= 500);
            assert!(end > 0 && !data[..end].ends_with(char::is_whitespace));
            assert!(!data[end..].starts_with(char::is_whitespace));
        }
    }
}
