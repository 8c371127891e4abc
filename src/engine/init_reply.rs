//! Package 2, the answer to the client's initialization, in as many messages
//! as the client's MaxMsgSize needs (digest §1.5, §2.6, §2.7).
//!
//! The Statuses are made while the client's commands are processed; the
//! Results with the server's DevInf and the server's sync Alerts are queued
//! as [`Pending`] commands and only made when the message is packed. Packing
//! measures the message by encoding it: what does not fit stays queued in
//! the session (part of its stored state, so the next message may be
//! handled by any shard or node), the message goes without Final, and the
//! client answers with its statuses and Alert 222; each following message
//! carries the next part, the last one Final. Order: Statuses first (those
//! carried over from an earlier message right after the SyncHdr status),
//! then Results, then Alerts. A DevInf too large for any message goes as a
//! large object (MoreData chunks) to clients that announced SupportLargeObjs.

use std::borrow::Cow;
use std::collections::VecDeque;

use super::devinf;
use super::reply::{anchor_item, t, type_meta, Reply};
use super::{EngineConfig, Session};
use crate::model::{
    Alert, Anchor, Command, Data, Encoding, Item, Location, Meta, PutGet, Results, Status, SyncMl, Version,
};
use crate::store::Collection;

/// The smallest MaxMsgSize the server packs its replies to: below it a
/// reply cannot hold its header and the statuses for a typical message.
pub(super) const MIN_CLIENT_MAX_MSG: usize = 2048;

/// Room kept, when judging whether a command fits a message of its own, for
/// the statuses of the client's next message (the Status for its Alert 222).
const NEXT_STATUS_ROOM: usize = 160;

/// Smallest DevInf chunk worth sending next to other commands.
const MIN_CHUNK: usize = 512;

/// Smallest DevInf chunk sent in a message that carries nothing else of the
/// package (progress over a too small MaxMsgSize).
const MIN_PROGRESS_CHUNK: usize = 64;

/// A package 2 command not sent yet.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) enum Pending {
    /// A Status that did not fit in the reply to the message it answers.
    Status(PendingStatus),
    /// The Results with the server's DevInf, answering the client's Get.
    DevInf(PendingDevInf),
    /// A Get for the client's DevInf: the server knows none (the client
    /// sent none in this session nor an earlier one). A client whose first
    /// message was challenged (401) may not repeat its Put in the retry
    /// (SyncEvolution does not), and the server needs the client's types
    /// and large-object support before it sends items.
    GetDevInf,
    /// The server's sync Alert for one datastore (its URIs, mode and next
    /// anchor are in the datastore's session).
    Alert {
        /// The datastore.
        collection: Collection,
        /// The server's anchor of the last sync (empty: none).
        server_last: String,
    },
}

/// A Status carried over to a later message.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct PendingStatus {
    msg_ref: Option<String>,
    cmd_ref: String,
    cmd: String,
    target_refs: Vec<String>,
    source_refs: Vec<String>,
    code: String,
    /// The anchors echoed in its items (`Next`), in order.
    anchors: Vec<String>,
}

/// The server's DevInf as the answer to a Get.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct PendingDevInf {
    /// The client message and command (Get) it answers.
    pub msg_ref: String,
    pub cmd_ref: String,
    /// The URI the client asked for (`./devinf12`).
    pub target: String,
    /// Per collection the datastore URI to advertise.
    pub names: Vec<(Collection, String)>,
    /// Bytes of the encoded DevInf already sent in chunks.
    pub offset: usize,
}

impl PendingStatus {
    /// The carry-over form of a Status the engine made (no Chal: the
    /// SyncHdr status never moves).
    fn from_status(st: Status<'static>) -> PendingStatus {
        PendingStatus {
            msg_ref: st.msg_ref.map(Cow::into_owned),
            cmd_ref: st.cmd_ref.into_owned(),
            cmd: st.cmd.into_owned(),
            target_refs: st.target_refs.into_iter().map(Cow::into_owned).collect(),
            source_refs: st.source_refs.into_iter().map(Cow::into_owned).collect(),
            code: st.data.into_owned(),
            anchors: st
                .items
                .into_iter()
                .filter_map(|i| match i.data {
                    Some(Data::Anchor(Anchor { next: Some(n), .. })) => Some(n.into_owned()),
                    _ => None,
                })
                .collect(),
        }
    }

    fn to_status(&self) -> Status<'static> {
        Status {
            cmd_id: t("0"),
            msg_ref: self.msg_ref.clone().map(t),
            cmd_ref: t(self.cmd_ref.clone()),
            cmd: t(self.cmd.clone()),
            target_refs: self.target_refs.iter().cloned().map(t).collect(),
            source_refs: self.source_refs.iter().cloned().map(t).collect(),
            data: t(self.code.clone()),
            items: self.anchors.iter().map(|n| anchor_item(n)).collect(),
            ..Default::default()
        }
    }
}

/// The encoding of a reply exactly as packed (with the Alert 222 a
/// non-final status-only reply gets), so it need not be encoded twice; valid
/// as long as nothing is added to the reply and its Final is `final_`.
pub(super) struct Encoded {
    /// Whether it was encoded with Final.
    pub final_: bool,
    /// The message.
    pub bytes: Vec<u8>,
}

/// One entry of the send order while a message is packed (short-lived, a
/// few per message: the size difference of the variants does not matter).
#[allow(clippy::large_enum_variant)]
enum Out {
    /// A Status of this message, made already.
    Ready(Command<'static>),
    /// A queued command.
    Later(Pending),
}

/// Makes every queued command at once (outside package 2, where replies
/// are not split this way, and for a suspended session).
pub(super) fn emit_all(s: &mut Session, cfg: &EngineConfig, r: &mut Reply, version: Version) {
    for p in std::mem::take(&mut s.pkg2) {
        if let Some(cmd) = make(s, cfg, version, &p, None) {
            place(r, cmd);
        }
    }
}

/// Packs as much of package 2 as fits the client's MaxMsgSize into `r`,
/// after the statuses it holds. `may_final`: the message may end the package
/// (nothing else follows it). `continuation`: the client asked for this part
/// (Alert 222), so the message must make progress even over the limit.
/// Returns true when nothing of package 2 is left, and, when the whole
/// reply was measured as it stands, its encoding (see [`Encoded`]).
pub(super) fn pack(
    s: &mut Session,
    cfg: &EngineConfig,
    r: &mut Reply,
    version: Version,
    may_final: bool,
    continuation: bool,
) -> (bool, Option<Encoded>) {
    let limit = s.client_max_msg.max(MIN_CLIENT_MAX_MSG);
    let (own, peer) = (s.server_uri.clone(), s.device_id.clone());
    let enc = s.encoding;
    let probe = |r: &mut Reply, final_: bool, buf: &mut Vec<u8>| -> usize {
        r.renumber();
        let next_alert = !final_ && r.only_statuses();
        if next_alert {
            r.alert_next_message(&own, &peer);
        }
        buf.clear();
        r.encode_into(enc, final_, buf);
        if next_alert {
            r.commands.pop();
        }
        buf.len()
    };
    let mut buf = Vec::with_capacity(4096);

    // The send order: carried statuses, this message's statuses, the rest.
    let hdr_n =
        usize::from(matches!(r.responses.first(), Some(Command::Status(st)) if st.cmd_ref.trim() == "0"));
    let mine = r.responses.split_off(hdr_n);
    let mut queue: VecDeque<Out> = VecDeque::new();
    let mut rest = Vec::new();
    for p in std::mem::take(&mut s.pkg2) {
        match p {
            Pending::Status(_) => queue.push_back(Out::Later(p)),
            other => rest.push(Out::Later(other)),
        }
    }
    queue.extend(mine.into_iter().map(Out::Ready));
    // Results before the Get and the Alerts whatever the order of the
    // client's Get and Alerts: a DevInf chunk must end its message (digest §8).
    rest.sort_by_key(|o| match o {
        Out::Later(Pending::Alert { .. }) => 2,
        Out::Later(Pending::GetDevInf) => 1,
        _ => 0,
    });
    queue.extend(rest);

    // Usually everything fits: one encode.
    let all: Vec<Command<'static>> = queue.iter().filter_map(|o| make_out(s, cfg, version, o)).collect();
    let before = (r.responses.len(), r.commands.len());
    for cmd in all {
        place(r, cmd);
    }
    if probe(r, may_final, &mut buf) <= limit {
        // The probe's Alert 222 is gone again: its CmdID is free.
        r.renumber();
        return (true, Some(Encoded { final_: may_final, bytes: buf }));
    }
    r.responses.truncate(before.0);
    r.commands.truncate(before.1);
    tracing::debug!(device = %s.device_id, limit, size = buf.len(), "package 2 split over messages");

    let mut progress = false;
    while let Some(out) = queue.pop_front() {
        let Some(cmd) = make_out(s, cfg, version, &out) else { continue };
        let is_later = matches!(out, Out::Later(_));
        let into_commands = matches!(cmd, Command::Alert(_) | Command::Get(_));
        place(r, cmd);
        if probe(r, queue.is_empty() && may_final, &mut buf) <= limit {
            progress |= is_later;
            continue;
        }
        // It does not fit: take it out again.
        if into_commands {
            r.commands.pop();
        } else {
            r.responses.pop();
        }
        let Out::Later(p) = out else {
            queue.push_front(out);
            break;
        };
        let alone = alone_len(s, cfg, version, r, &p);
        let fits_alone = alone + NEXT_STATUS_ROOM <= limit;
        let must_progress = continuation && !progress;
        let chunkable = matches!(p, Pending::DevInf(_)) && s.caps.large_objects && version >= Version::V1_1;
        if let (true, Pending::DevInf(d)) = (chunkable && (must_progress || !fits_alone), &p) {
            let mut d = d.clone();
            match chunk(s, cfg, r, version, &d, limit, must_progress, &mut buf, &probe) {
                // A chunk ends its message (digest §8).
                Some(Some(next)) => {
                    d.offset = next;
                    queue.push_front(Out::Later(Pending::DevInf(d)));
                }
                Some(None) => {}
                None => queue.push_front(Out::Later(p)),
            }
            break;
        }
        if must_progress {
            // It cannot fit any message: send it anyway rather than stall.
            tracing::warn!(device = %s.device_id, limit, size = alone, "package 2 command larger than the client's MaxMsgSize");
            if let Some(cmd) = make(s, cfg, version, &p, None) {
                place(r, cmd);
            }
            progress = true;
            continue;
        }
        queue.push_front(Out::Later(p));
        break;
    }
    r.renumber();
    for out in queue {
        s.pkg2.push(match out {
            Out::Later(p) => p,
            Out::Ready(Command::Status(st)) => Pending::Status(PendingStatus::from_status(st)),
            Out::Ready(other) => {
                // Only statuses are made ahead; anything else is kept in this message.
                place(r, other);
                continue;
            }
        });
    }
    (s.pkg2.is_empty(), None)
}

/// Puts a command where it belongs: Status and Results among the
/// responses, the server's own commands after them.
fn place(r: &mut Reply, cmd: Command<'static>) {
    match cmd {
        Command::Status(_) | Command::Results(_) => r.responses.push(cmd),
        other => r.commands.push(other),
    }
}

fn make_out(s: &Session, cfg: &EngineConfig, version: Version, out: &Out) -> Option<Command<'static>> {
    match out {
        Out::Ready(c) => Some(c.clone()),
        Out::Later(p) => make(s, cfg, version, p, None),
    }
}

/// The encoded size of a message with just the SyncHdr status (the one in
/// `r`) and `p`.
fn alone_len(s: &Session, cfg: &EngineConfig, version: Version, r: &Reply, p: &Pending) -> usize {
    let mut body: Vec<Command<'static>> = r.responses.iter().take(1).cloned().collect();
    body.extend(make(s, cfg, version, p, None));
    let msg = SyncMl { hdr: r.hdr.clone(), body, final_: false };
    let mut out = Vec::new();
    crate::codec::encode(s.encoding, &msg, &mut out);
    out.len()
}

/// Makes a queued command (CmdID set later). `piece`: for the DevInf, the
/// byte range of its encoded document to send as one chunk.
fn make(
    s: &Session,
    cfg: &EngineConfig,
    version: Version,
    p: &Pending,
    piece: Option<usize>,
) -> Option<Command<'static>> {
    match p {
        Pending::Status(st) => Some(Command::Status(st.to_status())),
        Pending::Alert { collection, server_last } => {
            let ds = s.stores.iter().find(|d| d.collection == *collection)?;
            let mut meta = Meta {
                anchor: Some(Anchor {
                    last: if server_last.is_empty() { None } else { Some(t(server_last.clone())) },
                    next: Some(t(ds.server_next.clone())),
                }),
                ..Default::default()
            };
            if version >= Version::V1_1 {
                meta.max_obj_size = Some(t(cfg.max_obj_size.to_string()));
            }
            Some(Command::Alert(Alert {
                cmd_id: t("0"),
                data: Some(t(ds.mode.to_string())),
                items: vec![Item {
                    target: Some(Location::uri(t(ds.client_uri.clone()))),
                    source: Some(Location::uri(t(ds.server_uri.clone()))),
                    meta: Some(meta),
                    ..Default::default()
                }],
                ..Default::default()
            }))
        }
        Pending::GetDevInf => Some(Command::Get(PutGet {
            cmd_id: t("0"),
            meta: Some(type_meta(devinf_type(s.encoding))),
            items: vec![Item { target: Some(Location::uri(t(version.devinf_uri()))), ..Default::default() }],
            ..Default::default()
        })),
        Pending::DevInf(d) => {
            let devinf = devinf::server_devinf(version, &s.server_uri, &d.names);
            let ty = devinf_type(s.encoding);
            let mut item = Item { source: Some(Location::uri(t(d.target.clone()))), ..Default::default() };
            if d.offset == 0 && piece.is_none() {
                item.data = Some(Data::DevInf(Box::new(devinf)));
            } else {
                // A chunk (digest §8): the encoded document's bytes [offset, end).
                let doc = devinf_doc(s.encoding, &devinf);
                let end = piece.unwrap_or(doc.len()).min(doc.len());
                let start = d.offset.min(end);
                let bytes = &doc[start..end];
                item.data = Some(match s.encoding {
                    Encoding::Xml => Data::Text(t(String::from_utf8_lossy(bytes).into_owned())),
                    Encoding::Wbxml => Data::Binary(Cow::Owned(bytes.to_vec())),
                });
                item.more_data = end < doc.len();
                if start == 0 {
                    item.meta = Some(Meta { size: Some(t(doc.len().to_string())), ..Default::default() });
                }
            }
            Some(Command::Results(Results {
                cmd_id: t("0"),
                msg_ref: Some(t(d.msg_ref.clone())),
                cmd_ref: t(d.cmd_ref.clone()),
                meta: Some(type_meta(ty)),
                target_ref: None,
                source_ref: None,
                items: vec![item],
            }))
        }
    }
}

/// The MIME type of a DevInf document in the session's encoding.
fn devinf_type(enc: Encoding) -> &'static str {
    match enc {
        Encoding::Xml => "application/vnd.syncml-devinf+xml",
        Encoding::Wbxml => "application/vnd.syncml-devinf+wbxml",
    }
}

/// The server's DevInf as the document a Results item carries.
fn devinf_doc(enc: Encoding, devinf: &crate::model::DevInf<'_>) -> Vec<u8> {
    let mut doc = Vec::with_capacity(2048);
    match enc {
        Encoding::Xml => crate::codec::encode_devinf_xml(devinf, &mut doc),
        Encoding::Wbxml => crate::wbxml::encode_devinf(devinf, &mut doc),
    }
    doc
}

/// Places the largest chunk of the DevInf from `d.offset` that keeps the
/// message within `limit` (at least [`MIN_PROGRESS_CHUNK`] bytes when
/// `must_progress`). Returns where the next chunk starts (`Some(None)`: the
/// chunk placed was the last), or None when no chunk worth sending fits (the
/// DevInf waits for the next message).
#[allow(clippy::too_many_arguments)]
fn chunk(
    s: &Session,
    cfg: &EngineConfig,
    r: &mut Reply,
    version: Version,
    d: &PendingDevInf,
    limit: usize,
    must_progress: bool,
    buf: &mut Vec<u8>,
    probe: &dyn Fn(&mut Reply, bool, &mut Vec<u8>) -> usize,
) -> Option<Option<usize>> {
    let devinf = devinf::server_devinf(version, &s.server_uri, &d.names);
    let doc = devinf_doc(s.encoding, &devinf);
    if d.offset >= doc.len() {
        return Some(None);
    }
    let p = Pending::DevInf(d.clone());
    let fits = |r: &mut Reply, end: usize, buf: &mut Vec<u8>| -> bool {
        let Some(cmd) = make(s, cfg, version, &p, Some(end)) else { return false };
        r.responses.push(cmd);
        let ok = probe(r, false, buf) <= limit;
        r.responses.pop();
        ok
    };
    // Binary search the longest piece that fits (size grows with the end).
    let (mut lo, mut hi) = (d.offset, doc.len().saturating_sub(1).max(d.offset));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(r, cut(&doc, d.offset, mid), buf) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut end = cut(&doc, d.offset, lo);
    let min = if must_progress { MIN_PROGRESS_CHUNK } else { MIN_CHUNK };
    if end < d.offset + min {
        if !must_progress {
            return None;
        }
        end = cut(&doc, d.offset, d.offset + min);
        tracing::warn!(device = %s.device_id, limit, "DevInf chunk over the client's MaxMsgSize");
    }
    let cmd = make(s, cfg, version, &p, Some(end))?;
    r.responses.push(cmd);
    Some((end < doc.len()).then_some(end))
}

/// A chunk end at or before `end` that keeps UTF-8 sequences whole and no
/// white space at either side of the cut (toolkits trim it from `Data`).
fn cut(doc: &[u8], start: usize, end: usize) -> usize {
    let mut e = end.min(doc.len());
    while e > start + 1
        && e < doc.len()
        && (doc[e] & 0xC0 == 0x80 || doc[e].is_ascii_whitespace() || doc[e - 1].is_ascii_whitespace())
    {
        e -= 1;
    }
    e.max(start + 1).min(doc.len())
}
