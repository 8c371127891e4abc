//! Message processing: header, authentication, commands, package flow.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::auth::{self, Presented};
use super::content;
use super::devinf::{self, ClientCaps};
use super::init_reply::{self, Pending, PendingDevInf, MIN_CLIENT_MAX_MSG};
use super::reply::{anchor_item, t, type_meta, Reply};
use super::scope;
use super::{
    ConflictPolicy, Counts, DsSession, EngineConfig, FastMap, IncomingChunk, Items, OutKind, OutOp, Outcome,
    Phase, SentCmd, Session, Step,
};
use crate::codec;
use crate::model::{
    Alert, Command, Data, DevInf, Item, ItemCommand, Location, Map, Meta, PutGet, SyncHdr, SyncMl, Version,
};
use crate::routing;
use crate::store::{Collection, DeviceRecord, ReadRequest, SyncState, WriteBatch, WriteOp};

/// Margin kept free in every reply for closing tags and Final.
const SIZE_MARGIN: usize = 400;
/// Estimated encoded overhead of one item operation besides its data.
const ITEM_OVERHEAD: usize = 260;
/// Estimated encoded size of one (empty) server Sync.
const SYNC_OVERHEAD: usize = 200;
/// Smallest chunk worth sending of a large object next to other items.
const MIN_CHUNK: usize = 1024;
/// Smallest chunk sent in a message that carries no other item: a small
/// MaxMsgSize with many datastores leaves less than [`MIN_CHUNK`] room, and
/// a message without any item would only be answered with Alert 222, again
/// and again.
const MIN_PROGRESS_CHUNK: usize = 128;

/// The user a message claims to be (LocName, or the name inside basic credentials).
pub(super) fn claimed_user(msg: &SyncMl<'_>) -> Option<String> {
    if let Some(cred) = &msg.hdr.cred {
        if let Presented::Basic { user, .. } = auth::parse_cred(cred) {
            return Some(user);
        }
    }
    msg.hdr.source.loc_name.as_ref().map(|n| n.trim().to_string()).filter(|n| !n.is_empty())
}

pub(super) fn alert_collection(cfg: &EngineConfig, item: &Item<'_>) -> Option<Collection> {
    // Some phones omit the Target (digest §14 quirk 7): fall back to Source.
    item.target
        .as_ref()
        .and_then(|t| cfg.resolve(&t.loc_uri))
        .or_else(|| item.source.as_ref().and_then(|s| cfg.resolve(&s.loc_uri)))
}

fn num(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

impl Session {
    /// Verifies the message's credentials against the loaded records without
    /// changing state.
    pub(super) fn precheck_auth(&self, cfg: &EngineConfig, msg: &SyncMl<'_>) -> bool {
        matches!(self.check_cred_with(cfg, msg, self.last_activity), Ok(()))
    }

    /// The nonces an md5 credential may be computed over: in an
    /// authenticated session, the one this session sent; before, the
    /// device's stored nonce (from its last successful login) and the
    /// window nonces of now and the window before. Never an empty one.
    fn accepted_nonces(&self, cfg: &EngineConfig, now: u64) -> Vec<Vec<u8>> {
        if self.authenticated {
            return self.session_nonce.iter().filter(|n| !n.is_empty()).cloned().collect();
        }
        let mut out = Vec::with_capacity(3);
        if let Some(d) = self.device_record.as_ref().filter(|d| !d.nonce.is_empty()) {
            out.push(d.nonce.clone());
        }
        out.push(cfg.auth_key.window_nonce(&self.device_id, now, 0));
        out.push(cfg.auth_key.window_nonce(&self.device_id, now, 1));
        out
    }

    /// Ok, or the status code to answer (401 wrong, 407 missing, 406 scheme, 400 malformed).
    fn check_cred_with(&self, cfg: &EngineConfig, msg: &SyncMl<'_>, now: u64) -> Result<(), u16> {
        let Some(cred) = &msg.hdr.cred else { return Err(407) };
        let record = match &self.user_record {
            Some(Some(r)) => r,
            _ => return Err(401),
        };
        match auth::parse_cred(cred) {
            Presented::Basic { user, .. } => {
                // The password was checked against the argon2id hash off the
                // shard ([`Session::basic_to_verify`]); here only its verdict counts.
                let digest = self.cred_digest(cred);
                let verified = self.basic_ok == Some(digest) || self.basic_verdict == Some((digest, true));
                if user == record.name && verified {
                    Ok(())
                } else {
                    Err(401)
                }
            }
            Presented::Md5 { digest_b64 } => {
                // Compare against every accepted nonce, all of them, so the
                // time taken does not say which one (if any) matched.
                let ok = self.accepted_nonces(cfg, now).iter().fold(false, |ok, nonce| {
                    let expected = auth::md5_cred_from_digest(&record.md5_b64, nonce);
                    auth::constant_time_eq(&expected, &digest_b64) | ok
                });
                if ok {
                    Ok(())
                } else {
                    Err(401)
                }
            }
            Presented::Unsupported(_) => Err(406),
            Presented::Malformed => Err(400),
        }
    }

    /// Whether a credential that failed holds the right password over a nonce
    /// that is merely missing or old: the empty nonce (a device the server
    /// never challenged) or a window nonce of the last hour. Such a login is
    /// answered with a challenge like any failure, but it is no guess at the
    /// password, so the back-off does not count it.
    pub fn stale_nonce(&self, cfg: &EngineConfig, msg: &SyncMl<'_>, now: u64) -> bool {
        let (Some(cred), Some(Some(record))) = (&msg.hdr.cred, &self.user_record) else { return false };
        let Presented::Md5 { digest_b64 } = auth::parse_cred(cred) else { return false };
        let old_windows = (2..=3600 / auth::NONCE_WINDOW_SECS)
            .map(|back| cfg.auth_key.window_nonce(&self.device_id, now, back));
        std::iter::once(Vec::new()).chain(old_windows).any(|nonce| {
            auth::constant_time_eq(&auth::md5_cred_from_digest(&record.md5_b64, &nonce), &digest_b64)
        })
    }

    /// A digest of a credential element's data, keyed with the session's secret.
    fn cred_digest(&self, cred: &crate::model::Cred<'_>) -> u64 {
        match &cred.data {
            crate::model::Data::Text(t) => self.body_digest(t.trim().as_bytes()),
            crate::model::Data::Binary(b) => self.body_digest(b),
            _ => 0,
        }
    }

    /// A basic credential in `msg` that must be checked against the user's
    /// argon2id hash before [`Session::handle`] (or [`Session::verify_presented`])
    /// can accept it: (password, the user's PHC string, or `None` for a user
    /// that does not exist — the caller still spends the same work on a dummy
    /// hash, so the answer time does not tell). `None`: nothing to check.
    pub fn basic_to_verify(&self, msg: &SyncMl<'_>) -> Option<(String, Option<String>)> {
        let cred = msg.hdr.cred.as_ref()?;
        let Presented::Basic { user, password } = auth::parse_cred(cred) else { return None };
        let digest = self.cred_digest(cred);
        if self.basic_ok == Some(digest) || self.basic_verdict.is_some_and(|(d, _)| d == digest) {
            return None;
        }
        match &self.user_record {
            Some(Some(r)) if r.name == user => Some((password, Some(r.password_hash.clone()))),
            Some(_) => Some((password, None)),
            None => None,
        }
    }

    /// Hands over the verdict on the credential [`Session::basic_to_verify`] named.
    pub fn basic_verified(&mut self, msg: &SyncMl<'_>, ok: bool) {
        if let Some(cred) = &msg.hdr.cred {
            self.basic_verdict = Some((self.cred_digest(cred), ok));
        }
    }

    /// The reads needed before [`Session::verify_presented`]: the session
    /// user's record (left out of the stored state).
    pub fn credential_reads(&self) -> Vec<ReadRequest> {
        match (&self.user, &self.user_record) {
            (Some(name), None) => vec![ReadRequest::User { name: name.clone() }],
            _ => Vec::new(),
        }
    }

    /// For a request that reached this authenticated session without its
    /// secret ([`endpoint::Admission::Prove`]): Ok when the message carries
    /// valid credentials of the session's user, else the status code for
    /// [`challenge`]. Changes nothing but the per-message basic verdict.
    pub fn verify_presented(&self, cfg: &EngineConfig, msg: &SyncMl<'_>, now: u64) -> Result<(), u16> {
        if !self.authenticated {
            return Err(401);
        }
        if let Some(cred) = &msg.hdr.cred {
            if let Presented::Basic { user, .. } = auth::parse_cred(cred) {
                if self.user.as_deref() != Some(user.as_str()) {
                    return Err(401);
                }
            }
        }
        self.check_cred_with(cfg, msg, now)
    }
}

/// The answer to a message whose credentials did not verify, built from the
/// message alone so that it costs no state and no write: SyncHdr status
/// `code` with a challenge (md5, the device's window nonce of `now`), the
/// same status for every other command, Final, no RespURI.
pub fn challenge(
    cfg: &EngineConfig,
    msg: &SyncMl<'_>,
    encoding: crate::model::Encoding,
    code: u16,
    now: u64,
) -> Vec<u8> {
    let msg_id = msg.hdr.msg_id.trim();
    let mut r = Reply::answering(msg);
    let nonce = cfg.auth_key.window_nonce(msg.hdr.source.loc_uri.trim(), now, 0);
    hdr_status(&mut r, msg, msg_id, code).chal = Some(chal(&nonce));
    for cmd in &msg.body {
        if !matches!(cmd, Command::Status(_)) {
            r.status(msg_id, cmd.cmd_id(), cmd.name(), None, None, code);
        }
    }
    let mut out = Vec::with_capacity(1024);
    codec::encode(encoding, &r.into_message(true), &mut out);
    out
}

/// The Status for the client's SyncHdr (always the first command of a reply).
fn hdr_status<'r>(
    r: &'r mut Reply,
    msg: &SyncMl<'_>,
    msg_id: &str,
    code: u16,
) -> &'r mut crate::model::Status<'static> {
    r.status(msg_id, "0", "SyncHdr", Some(&msg.hdr.target.loc_uri), Some(&msg.hdr.source.loc_uri), code)
}

/// A fresh nonce: 16 printable characters. Printable on purpose: some
/// clients (the Synthesis engine in SyncEvolution) handle the decoded nonce
/// as a C string, so a NUL byte in a binary nonce breaks their digest.
fn new_nonce(entropy: u64, now: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = entropy ^ now.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
    (0..16)
        .map(|_| {
            // splitmix64 steps spread the entropy over every character.
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ALPHABET[((z ^ (z >> 31)) % 64) as usize]
        })
        .collect()
}

fn chal(nonce: &[u8]) -> Meta<'static> {
    Meta {
        type_: Some(t(auth::AUTH_MD5)),
        format: Some(t("b64")),
        next_nonce: Some(t(auth::nonce_b64(nonce))),
        ..Default::default()
    }
}

fn resp_uri(cfg: &EngineConfig, server_uri: &str, key: u64, secret: &routing::SessionSecret) -> String {
    let base = if cfg.public_url.is_empty() {
        server_uri.split('?').next().unwrap_or(server_uri)
    } else {
        &cfg.public_url
    };
    let mut uri = String::with_capacity(base.len() + routing::TOKEN_PARAM.len() + 51);
    uri.push_str(base);
    uri.push(if base.contains('?') { '&' } else { '?' });
    uri.push_str(routing::TOKEN_PARAM);
    uri.push('=');
    routing::session_token_into(&mut uri, key, secret);
    uri
}

/// Processes one message (see [`Session::handle`]).
pub(super) fn handle(s: &mut Session, cfg: &EngineConfig, msg: &SyncMl<'_>, now: u64, entropy: u64) -> Step {
    s.last_activity = now;
    s.out_msg_id += 1;
    let msg_id = msg.hdr.msg_id.trim().to_string();
    let mut batch = WriteBatch::default();
    let version = s.version.or(msg.version()).unwrap_or(Version::V1_2);

    if let Some(m) = &msg.hdr.meta {
        if let Some(v) = m.max_msg_size.as_deref().and_then(num) {
            s.client_max_msg = v as usize;
        }
        if let Some(v) = m.max_obj_size.as_deref().and_then(num) {
            s.client_max_obj = v as usize;
        }
    }
    if s.client_max_msg == 0 {
        s.client_max_msg = cfg.default_client_max_msg_size;
    }

    let hdr = SyncHdr {
        ver_dtd: t(version.ver_dtd()),
        ver_proto: t(version.ver_proto()),
        session_id: t(msg.hdr.session_id.trim()),
        msg_id: t(s.out_msg_id.to_string()),
        target: Location {
            loc_uri: t(msg.hdr.source.loc_uri.trim()),
            loc_name: msg.hdr.source.loc_name.as_ref().map(|n| t(n.trim())),
            filter: None,
        },
        source: Location::uri(t(s.server_uri.clone())),
        resp_uri: Some(t(resp_uri(cfg, &s.server_uri, s.key, &s.secret))),
        no_resp: false,
        cred: None,
        meta: Some(Meta {
            max_msg_size: Some(t(cfg.max_msg_size.to_string())),
            max_obj_size: Some(t(cfg.max_obj_size.to_string())),
            ..Default::default()
        }),
    };
    let mut r = Reply::new(hdr);
    let no_resp = msg.hdr.no_resp;

    // Version checks (digest §0): VerDTD must match VerProto; only 1.0–1.2.
    let dtd = Version::from_ver_dtd(&msg.hdr.ver_dtd);
    let proto = Version::from_ver_proto(&msg.hdr.ver_proto);
    let version_error = match (dtd, proto) {
        (Some(a), Some(b)) if a == b => None,
        (Some(_), Some(_)) => Some(505),
        _ => Some(513),
    };
    if let Some(code) = version_error {
        let st = hdr_status(&mut r, msg, &msg_id, code);
        let text = if code == 505 { version.ver_dtd() } else { "SyncML/1.2 SyncML/1.1 SyncML/1.0" };
        st.items.push(Item { data: Some(Data::Text(t(text))), ..Default::default() });
        return finish(s, cfg, r, batch, true, Outcome::Aborted, &msg_id);
    }

    // Authentication. A message that fails it is answered from the message
    // alone (a challenge with the window nonce) and writes nothing: no
    // session, no device record, no nonce (the caller stores nothing of an
    // unauthenticated session).
    let mut hdr_code = 200u16;
    let mut hdr_chal = None;
    if !s.authenticated {
        match s.check_cred_with(cfg, msg, now) {
            Ok(()) => {
                s.authenticated = true;
                hdr_code = 212;
                // The nonce for the device's next session: random, kept in
                // its record (the user is authenticated now, so it may be written).
                let nonce = new_nonce(entropy, now);
                hdr_chal = Some(chal(&nonce));
                s.session_nonce = Some(nonce.clone());
                s.basic_ok =
                    msg.hdr.cred.as_ref().filter(|_| s.basic_verdict.is_some()).map(|c| s.cred_digest(c));
                if let (Some(user), Some(dev)) = (&s.user, &s.device_record) {
                    let mut dev = dev.clone();
                    dev.nonce = nonce;
                    if dev.first_seen == 0 {
                        dev.first_seen = now;
                    }
                    dev.last_seen = now;
                    s.device_record = Some(dev.clone());
                    batch.ops.push(WriteOp::PutDevice { user: user.clone(), device: dev });
                }
            }
            Err(code) => {
                s.auth_failures += 1;
                tracing::info!(device = %crate::logs::Trunc(&s.device_id), code, "authentication failed");
                let reply = challenge(cfg, msg, s.encoding, code, now);
                s.last_msg_in = msg_id.parse().unwrap_or(0);
                return Step {
                    reply,
                    writes: WriteBatch::default(),
                    outcome: Outcome::Aborted,
                    summary: String::from("authentication failed"),
                };
            }
        }
    }
    if !no_resp {
        let st = hdr_status(&mut r, msg, &msg_id, hdr_code);
        st.chal = hdr_chal;
    }

    // Datastore names the client alerts in this message, for the DevInf we advertise.
    let alerted: Vec<(Collection, String)> = msg
        .body
        .iter()
        .filter_map(|c| match c {
            Command::Alert(a) => a.items.first(),
            _ => None,
        })
        .filter_map(|i| {
            let c = alert_collection(cfg, i)?;
            let uri = i.target.as_ref().map(|l| l.loc_uri.trim().to_string()).filter(|u| !u.is_empty())?;
            Some((c, uri))
        })
        .collect();
    let mut ctx = Ctx { msg_id: &msg_id, no_resp, version, saw_sync: false, suspend: false, alerted };
    for cmd in &msg.body {
        process_command(s, cfg, &mut r, &mut batch, &mut ctx, cmd);
    }

    let in_pkg2 = matches!(s.phase, Phase::Init | Phase::InitReply { .. });
    if !in_pkg2 || ctx.suspend {
        init_reply::emit_all(s, cfg, &mut r, version);
    }
    if ctx.suspend {
        s.suspended = true;
        s.phase = Phase::Done;
        return finish(s, cfg, r, batch, true, Outcome::Complete, &msg_id);
    }

    // Package flow.
    let client_final = msg.final_;
    if matches!(s.phase, Phase::Init) && client_final && !devinf_known(s) {
        s.pkg2.push(Pending::GetDevInf);
    }
    let mut reply_final = false;
    let mut outcome = Outcome::Continue;
    // Package 2 as measured when it was packed (it is sent as is).
    let mut encoded: Option<init_reply::Encoded> = None;
    match s.phase {
        Phase::Init => {
            let combined = client_final && ctx.saw_sync;
            if combined {
                // Combined init + sync package: the server's Sync follows package 2.
                start_server_sync(s, cfg);
            }
            let (done, enc) = init_reply::pack(s, cfg, &mut r, version, client_final && !combined, false);
            // The server's Sync is still to come in a combined package.
            encoded = enc.filter(|_| !combined);
            if client_final {
                if done {
                    (reply_final, outcome) = package2_done(s, cfg, &mut r, &mut batch, combined);
                } else {
                    s.phase = Phase::InitReply { then_sync: combined };
                }
            }
        }
        Phase::InitReply { then_sync } => {
            let (done, enc) = init_reply::pack(s, cfg, &mut r, version, !then_sync, true);
            encoded = enc.filter(|_| !then_sync);
            if done {
                (reply_final, outcome) = package2_done(s, cfg, &mut r, &mut batch, then_sync);
            }
        }
        Phase::ClientSync => {
            if client_final {
                start_server_sync(s, cfg);
                if syncs_fit(s, &mut r) {
                    reply_final = fill(s, cfg, &mut r, &mut batch);
                    s.phase = if reply_final { Phase::Map } else { Phase::ServerSync };
                } else {
                    // The statuses for the client's package leave no room for
                    // the server's Syncs: they start in the next message.
                    s.phase = Phase::ServerSync;
                }
            }
        }
        Phase::ServerSync => {
            reply_final = fill(s, cfg, &mut r, &mut batch);
            if reply_final {
                s.phase = Phase::Map;
            }
        }
        Phase::Map | Phase::Done => {
            if client_final {
                reply_final = true;
                complete(s, &mut batch);
                outcome = Outcome::Complete;
            }
        }
    }
    if !reply_final && r.only_statuses() {
        // A non-final, status-only reply would read as "nothing more to say".
        let (own, peer) = (s.server_uri.clone(), s.device_id.clone());
        r.alert_next_message(&own, &peer);
    }
    match encoded.filter(|e| e.final_ == reply_final) {
        Some(e) => {
            // Engine tests check that the reuse sends what encoding the reply would.
            #[cfg(test)]
            {
                let mut fresh = Vec::new();
                codec::encode(s.encoding, &r.into_message(reply_final), &mut fresh);
                assert!(fresh == e.bytes, "package 2 sent as measured differs from the reply");
            }
            finish_encoded(s, e.bytes, batch, outcome, &msg_id)
        }
        None => finish(s, cfg, r, batch, reply_final, outcome, &msg_id),
    }
}

/// Package 2 is out (its last part is in `r`): the next phase. Returns
/// whether `r` ends the package (Final) and the session's outcome.
fn package2_done(
    s: &mut Session,
    cfg: &EngineConfig,
    r: &mut Reply,
    batch: &mut WriteBatch,
    then_sync: bool,
) -> (bool, Outcome) {
    if then_sync {
        if !syncs_fit(s, r) {
            // The last part of package 2 leaves no room for the server's
            // Syncs: they start in the next message (the client asks with 222).
            s.phase = Phase::ServerSync;
            return (false, Outcome::Continue);
        }
        let reply_final = fill(s, cfg, r, batch);
        s.phase = if reply_final { Phase::Map } else { Phase::ServerSync };
        return (reply_final, Outcome::Continue);
    }
    if !s.stores.is_empty() {
        s.phase = Phase::ClientSync;
        return (true, Outcome::Continue);
    }
    // Nothing to sync (e.g. a DevInf exchange): the session ends here.
    if r.only_statuses() {
        s.phase = Phase::Done;
        (true, Outcome::Complete)
    } else {
        s.phase = Phase::Map;
        (true, Outcome::Continue)
    }
}

/// Whether the server's Syncs (one per datastore, as [`fill`] reckons
/// them) fit next to what `r` holds.
fn syncs_fit(s: &Session, r: &mut Reply) -> bool {
    let syncs = s.stores.iter().filter(|d| d.queued).count();
    let (reply_len, limit) = measure_reply(s, r);
    reply_len + SIZE_MARGIN + SYNC_OVERHEAD * syncs <= limit
}

/// Sizes for packing server commands next to `r`: its encoded length
/// (with Final) and the client's MaxMsgSize as the server honours it.
fn measure_reply(s: &Session, r: &mut Reply) -> (usize, usize) {
    let mut probe = Vec::new();
    r.encode_into(s.encoding, true, &mut probe);
    (probe.len(), s.client_max_msg.max(MIN_CLIENT_MAX_MSG))
}

struct Ctx<'m> {
    msg_id: &'m str,
    no_resp: bool,
    version: Version,
    saw_sync: bool,
    suspend: bool,
    alerted: Vec<(Collection, String)>,
}

fn finish(
    s: &mut Session,
    _cfg: &EngineConfig,
    r: Reply,
    batch: WriteBatch,
    final_: bool,
    outcome: Outcome,
    msg_id: &str,
) -> Step {
    let msg = r.into_message(final_);
    let mut out = Vec::with_capacity(4096);
    codec::encode(s.encoding, &msg, &mut out);
    finish_encoded(s, out, batch, outcome, msg_id)
}

/// [`finish`] for a reply already encoded.
fn finish_encoded(s: &mut Session, out: Vec<u8>, batch: WriteBatch, outcome: Outcome, msg_id: &str) -> Step {
    s.last_msg_in = num(msg_id).unwrap_or(s.last_msg_in + 1);
    s.last_reply = out.clone();
    let summary = summary(s);
    Step { reply: out, writes: batch, outcome, summary }
}

fn summary(s: &Session) -> String {
    let mut parts = Vec::new();
    for d in &s.stores {
        let c: &Counts = &d.counts;
        parts.push(format!(
            "{}:{} in(+{} ~{} -{}) out(+{} ~{} -{}) conflicts={} twins={}",
            d.collection.as_str(),
            d.mode,
            c.from_client_add,
            c.from_client_replace,
            c.from_client_delete,
            c.to_client_add,
            c.to_client_replace,
            c.to_client_delete,
            c.conflicts,
            c.twins
        ));
    }
    parts.join(" ")
}

fn process_command(
    s: &mut Session,
    cfg: &EngineConfig,
    r: &mut Reply,
    batch: &mut WriteBatch,
    ctx: &mut Ctx<'_>,
    cmd: &Command<'_>,
) {
    let msg_id = ctx.msg_id;
    if ctx.suspend {
        // Everything after a suspend is cancelled (digest §9.1).
        if !matches!(cmd, Command::Status(_)) {
            r.status(msg_id, cmd.cmd_id(), cmd.name(), None, None, 514);
        }
        return;
    }
    match cmd {
        Command::Status(st) => handle_status(s, batch, st),
        Command::Alert(a) => handle_alert(s, cfg, r, batch, ctx, a),
        Command::Put(p) => {
            let code = store_devinf(s, batch, &p.items, p.meta.as_ref());
            if !ctx.no_resp && !p.no_resp {
                let src = p.items.first().and_then(|i| i.source.as_ref()).map(|l| l.loc_uri.to_string());
                r.status(msg_id, &p.cmd_id, "Put", None, src.as_deref(), code);
            }
        }
        Command::Results(res) => {
            let code = store_devinf(s, batch, &res.items, res.meta.as_ref());
            if !ctx.no_resp {
                r.status(msg_id, &res.cmd_id, "Results", None, res.source_ref.as_deref(), code);
            }
        }
        Command::Get(g) => handle_get(s, cfg, r, ctx, g, msg_id),
        Command::Sync(sync) => {
            ctx.saw_sync = true;
            handle_sync(s, cfg, r, batch, ctx, sync);
        }
        Command::Map(m) => handle_map(s, cfg, r, batch, ctx, m),
        Command::Add(_) | Command::Replace(_) | Command::Delete(_) => {
            // Item commands outside a Sync: not a DS operation.
            if !ctx.no_resp {
                r.status(msg_id, cmd.cmd_id(), cmd.name(), None, None, 403);
            }
        }
        _ => {
            // Copy, Move, Atomic, Sequence, Exec, Search, unknown commands.
            if !ctx.no_resp {
                r.status(msg_id, cmd.cmd_id(), cmd.name(), None, None, 406);
            }
        }
    }
}

fn handle_status(s: &mut Session, batch: &mut WriteBatch, st: &crate::model::Status<'_>) {
    let (Some(mref), Some(cref)) = (st.msg_ref.as_deref().and_then(num), num(&st.cmd_ref)) else { return };
    let code = num(&st.data).unwrap_or(0);
    if st.cmd.trim() == "Alert" && code == 508 {
        // The client lost the server's anchors: the next session must be slow.
        for d in &mut s.stores {
            d.failed = true;
        }
        return;
    }
    let (collection, delete) = match s.sent.get(&(mref, cref)) {
        None => return,
        Some(SentCmd::Item { collection }) => (*collection, false),
        Some(SentCmd::Delete { collection, .. }) => (*collection, true),
    };
    // 211 and 404 to a Delete: the client no longer has the item, which is
    // what the Delete wanted.
    if delete && (code < 300 || code == 404) {
        deleted_on_client(s, batch, mref, cref);
        return;
    }
    if code < 300 || code == 419 || code == 418 {
        return;
    }
    tracing::warn!(device = %s.device_id, code, cmd = %st.cmd, "client rejected a server change");
    if let Some(d) = s.stores.iter_mut().find(|d| d.collection == collection) {
        d.failed = true;
    }
}

/// The client confirmed the server's Delete sent as command `cref` of
/// message `mref`: only now the device's mapping to the item goes, in the
/// batch of the message carrying that Status. Until then the mapping stays,
/// so a session that ends without the Status sends the Delete again.
fn deleted_on_client(s: &mut Session, batch: &mut WriteBatch, mref: u64, cref: u64) {
    let Some(SentCmd::Delete { collection, server_id, client_id }) = s.sent.remove(&(mref, cref)) else {
        return;
    };
    // Statuses are handled only in authenticated sessions; never write under no user.
    let Some(user) = s.user.clone() else { return };
    let device_id = s.device_id.clone();
    let Some(ds) = s.stores.iter_mut().find(|d| d.collection == collection) else { return };
    // Unless the client id names another item by now (then it is not this
    // Delete's mapping to drop; a stale one costs at most a repeated Delete).
    if ds.map.get(&client_id).is_some_and(|g| *g != server_id) {
        return;
    }
    ds.map.remove(&client_id);
    if ds.rmap.get(&server_id) == Some(&client_id) {
        ds.rmap.remove(&server_id);
    }
    batch.ops.push(WriteOp::RemoveMapping { user, device_id, collection, client_id });
}

fn handle_alert(
    s: &mut Session,
    cfg: &EngineConfig,
    r: &mut Reply,
    batch: &mut WriteBatch,
    ctx: &mut Ctx<'_>,
    a: &Alert<'_>,
) {
    let msg_id = ctx.msg_id;
    let respond = !ctx.no_resp && !a.no_resp;
    // A code beyond u16 is no alert code (a cast would wrap 65736 to 200).
    let Some(code) = a.data.as_deref().and_then(num).and_then(|c| u16::try_from(c).ok()) else {
        if respond {
            r.status(msg_id, &a.cmd_id, "Alert", None, None, 400);
        }
        return;
    };
    match code {
        200..=210 | 225 => {}
        222 | 100 => {
            if respond {
                r.status(msg_id, &a.cmd_id, "Alert", None, None, 200);
            }
            return;
        }
        223 => {
            // The client says our chunked item was interrupted: drop its rest.
            if let Some(op) = s.queue.front() {
                if op.offset > 0 {
                    s.queue.pop_front();
                }
            }
            if respond {
                r.status(msg_id, &a.cmd_id, "Alert", None, None, 200);
            }
            return;
        }
        224 => {
            if respond {
                let code = if ctx.version >= Version::V1_2 { 200 } else { 406 };
                r.status(msg_id, &a.cmd_id, "Alert", None, None, code);
            }
            ctx.suspend = true;
            return;
        }
        _ => {
            if respond {
                r.status(msg_id, &a.cmd_id, "Alert", None, None, 406);
            }
            return;
        }
    }
    let Some(item) = a.items.first() else {
        if respond {
            r.status(msg_id, &a.cmd_id, "Alert", None, None, 400);
        }
        return;
    };
    let target = item.target.as_ref().map(|l| l.loc_uri.trim().to_string()).unwrap_or_default();
    let source = item.source.as_ref().map(|l| l.loc_uri.trim().to_string()).unwrap_or_default();
    let anchor = item.meta.as_ref().and_then(|m| m.anchor.as_ref());
    let last = anchor.and_then(|a| a.last.as_deref()).unwrap_or("").trim().to_string();
    let next = anchor.and_then(|a| a.next.as_deref()).unwrap_or("").trim().to_string();
    if let Some(v) = item.meta.as_ref().and_then(|m| m.max_obj_size.as_deref()).and_then(num) {
        // DS 1.1 clients give their MaxObjSize in the sync Alert's item (digest §1.5).
        s.client_max_obj = v as usize;
    }
    let status_item = anchor_item(&next);
    let Some(collection) = alert_collection(cfg, item) else {
        if respond {
            r.status(msg_id, &a.cmd_id, "Alert", Some(&target), Some(&source), 404);
        }
        return;
    };
    if code == 225 && ctx.version < Version::V1_2 {
        if respond {
            r.status(msg_id, &a.cmd_id, "Alert", Some(&target), Some(&source), 406);
        }
        return;
    }
    if s.stores.iter().any(|d| d.collection == collection) {
        // A second alert for the same datastore in one session.
        if respond {
            r.status(msg_id, &a.cmd_id, "Alert", Some(&target), Some(&source), 403);
        }
        return;
    }
    let Some(snap) = s.snapshots.remove(&collection) else {
        tracing::error!(collection = collection.as_str(), "datastore snapshot missing");
        if respond {
            r.status(msg_id, &a.cmd_id, "Alert", Some(&target), Some(&source), 500);
        }
        return;
    };
    let requested = scope::plain_code(code);
    let state = snap.state.clone();
    let (status_code, mode) = scope::alert_mode(requested, scope::anchors_match(state.as_ref(), &last));
    let prev_seq = scope::prev_seq(state.as_ref(), mode);
    if !scope::serves(snap.bare_up_to, mode, prev_seq) {
        // `pending_reads` reads it again whole when the mode needs that;
        // a caller that skipped it gets an error, not a sync without data.
        tracing::error!(
            collection = collection.as_str(),
            mode,
            bare_up_to = snap.bare_up_to,
            "datastore snapshot lacks the item data this sync needs"
        );
        if respond {
            r.status(msg_id, &a.cmd_id, "Alert", Some(&target), Some(&source), 500);
        }
        return;
    }
    if respond {
        let st = r.status(msg_id, &a.cmd_id, "Alert", Some(&target), Some(&source), status_code);
        st.items.push(status_item);
    }
    let server_last = state.as_ref().map(|st| st.server_anchor.clone()).unwrap_or_default();
    let server_next = format!("{}-{}", s.last_activity, snap.max_seq);
    let mappings = snap.mappings.len();
    let mut ds = DsSession {
        collection,
        client_uri: source.clone(),
        server_uri: if target.is_empty() { collection.as_str().to_string() } else { target.clone() },
        mode,
        client_next: next,
        server_next: server_next.clone(),
        prev_seq,
        items: Items::new(snap.items),
        loaded: true,
        max_seq: snap.max_seq,
        map: FastMap::with_capacity_and_hasher(mappings, Default::default()),
        rmap: FastMap::with_capacity_and_hasher(mappings, Default::default()),
        handled: HashSet::new(),
        twins: FastMap::default(),
        uids: FastMap::default(),
        forced: Vec::new(),
        client_sync_started: false,
        queued: false,
        failed: false,
        temp_ids: HashMap::new(),
        number_of_changes: 0,
        counts: Counts::default(),
    };
    for (luid, guid) in snap.mappings {
        ds.rmap.insert(guid, luid.clone());
        ds.map.insert(luid, guid);
    }
    if matches!(mode, 201 | 203 | 205) {
        // Old mappings are void. Reset the stored anchors in the same commit,
        // so that a session that dies from here on forces another slow sync
        // instead of a two-way sync without mappings.
        ds.map.clear();
        ds.rmap.clear();
        batch.ops.push(WriteOp::ClearMappings {
            user: s.user.clone().unwrap_or_default(),
            device_id: s.device_id.clone(),
            collection,
        });
        batch.ops.push(WriteOp::PutSyncState {
            user: s.user.clone().unwrap_or_default(),
            device_id: s.device_id.clone(),
            collection,
            state: SyncState { client_uri: source.clone(), ..Default::default() },
        });
    }
    if matches!(mode, 200 | 201) {
        index_twins(&mut ds);
    }
    s.stores.push(ds);
    // The server's Alert (effective code, swapped URIs, its anchors) goes
    // out with package 2, as far as the client's MaxMsgSize allows.
    s.pkg2.push(Pending::Alert { collection, server_last });
}

/// Whether the server has the client's DevInf: from this session's Put or
/// Results, or stored from an earlier session.
fn devinf_known(s: &Session) -> bool {
    s.caps != ClientCaps::default() || s.device_record.as_ref().is_some_and(|d| !d.devinf_xml.is_empty())
}

fn store_devinf(
    s: &mut Session,
    batch: &mut WriteBatch,
    items: &[Item<'_>],
    _meta: Option<&Meta<'_>>,
) -> u16 {
    let Some(item) = items.first() else { return 400 };
    let devinf: Option<DevInf<'static>> = match &item.data {
        Some(Data::DevInf(d)) => Some((**d).clone().into_owned()),
        Some(Data::Text(txt)) => codec::decode_devinf_xml(txt.as_bytes()),
        Some(Data::Binary(b)) => codec::decode_devinf_wbxml(b),
        _ => None,
    };
    let Some(devinf) = devinf else { return 400 };
    s.caps = ClientCaps::from_devinf(&devinf);
    if let (Some(user), Some(dev)) = (&s.user, &s.device_record) {
        let mut xml = Vec::new();
        codec::encode_devinf_xml(&devinf, &mut xml);
        if dev.devinf_xml != xml {
            let dev = DeviceRecord { devinf_xml: xml, ..dev.clone() };
            s.device_record = Some(dev.clone());
            batch.ops.push(WriteOp::PutDevice { user: user.clone(), device: dev });
        }
    }
    200
}

fn handle_get(
    s: &mut Session,
    cfg: &EngineConfig,
    r: &mut Reply,
    ctx: &Ctx<'_>,
    g: &PutGet<'_>,
    msg_id: &str,
) {
    let target = g.items.first().and_then(|i| i.target.as_ref()).map(|l| l.loc_uri.trim().to_string());
    let Some(target) = target else {
        r.status(msg_id, &g.cmd_id, "Get", None, None, 400);
        return;
    };
    let name = devinf::strip_dot_slash(&target).to_ascii_lowercase();
    if !matches!(name.as_str(), "devinf10" | "devinf11" | "devinf12") {
        if !ctx.no_resp && !g.no_resp {
            r.status(msg_id, &g.cmd_id, "Get", Some(&target), None, 404);
        }
        return;
    }
    if !ctx.no_resp && !g.no_resp {
        r.status(msg_id, &g.cmd_id, "Get", Some(&target), None, 200);
    }
    // Advertise each collection under the name the client alerted it with.
    let mut names: Vec<(Collection, String)> =
        Collection::ALL.iter().map(|c| (*c, c.as_str().to_string())).collect();
    for (c, n) in names.iter_mut() {
        if let Some(d) = s.stores.iter().find(|d| d.collection == *c) {
            *n = d.server_uri.clone();
        } else if let Some((_, uri)) = ctx.alerted.iter().find(|(x, _)| x == c) {
            *n = uri.clone();
        }
    }
    let _ = cfg;
    s.pkg2.push(Pending::DevInf(PendingDevInf {
        msg_ref: msg_id.to_string(),
        cmd_ref: g.cmd_id.trim().to_string(),
        target,
        names,
        offset: 0,
    }));
}

fn find_ds<'s>(s: &'s mut Session, target: Option<&str>, source: Option<&str>) -> Option<&'s mut DsSession> {
    let t_norm = target.map(|x| devinf::strip_dot_slash(x).to_ascii_lowercase());
    let s_norm = source.map(|x| devinf::strip_dot_slash(x).to_ascii_lowercase());
    s.stores.iter_mut().find(|d| {
        t_norm.as_deref().is_some_and(|t| devinf::strip_dot_slash(&d.server_uri).eq_ignore_ascii_case(t))
            || s_norm
                .as_deref()
                .is_some_and(|x| devinf::strip_dot_slash(&d.client_uri).eq_ignore_ascii_case(x))
    })
}

fn handle_sync(
    s: &mut Session,
    cfg: &EngineConfig,
    r: &mut Reply,
    batch: &mut WriteBatch,
    ctx: &mut Ctx<'_>,
    sync: &crate::model::Sync<'_>,
) {
    let msg_id = ctx.msg_id;
    let respond = !ctx.no_resp && !sync.no_resp;
    let target = sync.target.as_ref().map(|l| l.loc_uri.trim().to_string());
    let source = sync.source.as_ref().map(|l| l.loc_uri.trim().to_string());
    let user = s.user.clone().unwrap_or_default();
    let device = s.device_id.clone();
    let Some(idx) = ({
        let found = find_ds(s, target.as_deref(), source.as_deref()).map(|d| d.collection);
        found.and_then(|c| s.stores.iter().position(|d| d.collection == c))
    }) else {
        if respond {
            r.status(msg_id, &sync.cmd_id, "Sync", target.as_deref(), source.as_deref(), 404);
            for c in &sync.commands {
                r.status(msg_id, c.cmd_id(), c.name(), None, None, 404);
            }
        }
        return;
    };
    if respond {
        r.status(msg_id, &sync.cmd_id, "Sync", target.as_deref(), source.as_deref(), 200);
    }
    {
        let ds = &mut s.stores[idx];
        if !ds.client_sync_started {
            ds.client_sync_started = true;
            if ds.mode == 203 {
                // Refresh from client: the client's items replace the server's.
                let mut ids: Vec<u64> =
                    ds.items.values().filter(|i| !i.deleted).map(|i| i.server_id).collect();
                ids.sort_unstable();
                for id in ids {
                    batch.ops.push(WriteOp::DeleteItem {
                        user: user.clone(),
                        collection: ds.collection,
                        server_id: id,
                        origin_device: device.clone(),
                        client_id: ds.rmap.get(&id).cloned(),
                    });
                }
                ds.items.clear();
            }
        }
    }
    let sync_type = sync.meta.as_ref().and_then(|m| m.type_.as_deref()).map(str::to_string);
    for cmd in &sync.commands {
        match cmd {
            Command::Add(c) | Command::Replace(c) | Command::Delete(c) => {
                item_command(s, cfg, r, batch, ctx, idx, cmd.name(), c, sync_type.as_deref());
            }
            _ => {
                if respond {
                    r.status(msg_id, cmd.cmd_id(), cmd.name(), None, None, 406);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn item_command(
    s: &mut Session,
    cfg: &EngineConfig,
    r: &mut Reply,
    batch: &mut WriteBatch,
    ctx: &mut Ctx<'_>,
    idx: usize,
    name: &'static str,
    c: &ItemCommand<'_>,
    sync_type: Option<&str>,
) {
    let msg_id = ctx.msg_id;
    let respond = !ctx.no_resp && !c.no_resp;
    let cmd_type = c.meta.as_ref().and_then(|m| m.type_.as_deref()).or(sync_type);
    for item in &c.items {
        let luid = item
            .source
            .as_ref()
            .or(item.target.as_ref())
            .map(|l| l.loc_uri.trim().to_string())
            .unwrap_or_default();
        let collection = s.stores[idx].collection;
        let default_type = devinf::accepted_types(collection)[0].0;
        let content_type = item
            .meta
            .as_ref()
            .and_then(|m| m.type_.as_deref())
            .or(cmd_type)
            .unwrap_or(default_type)
            .trim()
            .to_string();
        let mut code = 500u16;
        let raw = item.data.as_ref().and_then(|d| d.as_bytes()).unwrap_or(&[]);

        // Large objects (digest §8).
        let mut assembled: Option<Vec<u8>> = None;
        if let Some(inc) = &s.incoming {
            if inc.client_id != luid || inc.cmd != name || inc.collection != collection {
                // A new item before the last chunk: the partial object is void.
                let inc = s.incoming.take();
                if let Some(inc) = inc {
                    let id = r.cmd_id();
                    r.command(Command::Alert(Alert {
                        cmd_id: id,
                        data: Some(t("223")),
                        items: vec![Item {
                            target: Some(Location::uri(t(inc.client_id.clone()))),
                            source: Some(Location::uri(t(inc.client_id))),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }));
                }
            }
        }
        if item.more_data {
            let first = s.incoming.is_none();
            if first {
                let size = item.meta.as_ref().and_then(|m| m.size.as_deref()).and_then(num);
                match size {
                    None => code = 411,
                    Some(sz) if sz as usize > cfg.max_obj_size => code = 413,
                    Some(sz) => {
                        s.incoming = Some(IncomingChunk {
                            collection,
                            cmd: name.to_string(),
                            client_id: luid.clone(),
                            content_type: content_type.clone(),
                            declared_size: sz as usize,
                            data: raw.to_vec(),
                        });
                        code = 213;
                    }
                }
            } else if let Some(inc) = &mut s.incoming {
                if item.data.is_none() {
                    code = 412;
                } else if inc.data.len() + raw.len() > inc.declared_size {
                    s.incoming = None;
                    code = 424;
                } else {
                    inc.data.extend_from_slice(raw);
                    code = 213;
                }
            }
            if respond {
                r.status(msg_id, &c.cmd_id, name, None, Some(&luid), code);
            }
            continue;
        }
        if s.incoming.as_ref().is_some_and(|inc| inc.client_id == luid && inc.cmd == name) {
            if let Some(mut inc) = s.incoming.take() {
                inc.data.extend_from_slice(raw);
                if inc.data.len() != inc.declared_size {
                    if respond {
                        r.status(msg_id, &c.cmd_id, name, None, Some(&luid), 424);
                    }
                    continue;
                }
                assembled = Some(inc.data);
                let _ = inc.content_type;
            }
        }
        let data: Vec<u8> = assembled.unwrap_or_else(|| raw.to_vec());
        if let Some(max) = Some(cfg.max_obj_size) {
            if data.len() > max {
                if respond {
                    r.status(msg_id, &c.cmd_id, name, None, Some(&luid), 413);
                }
                continue;
            }
        }
        code = apply_item(s, cfg, batch, idx, name, c, &luid, content_type, data);
        if respond {
            r.status(msg_id, &c.cmd_id, name, None, Some(&luid), code);
        }
    }
}

/// Applies one complete client item to the store; returns its status code.
#[allow(clippy::too_many_arguments)]
fn apply_item(
    s: &mut Session,
    cfg: &EngineConfig,
    batch: &mut WriteBatch,
    idx: usize,
    name: &str,
    c: &ItemCommand<'_>,
    luid: &str,
    content_type: String,
    data: Vec<u8>,
) -> u16 {
    let user = s.user.clone().unwrap_or_default();
    let device = s.device_id.clone();
    let ds = &mut s.stores[idx];
    let collection = ds.collection;
    if matches!(ds.mode, 204 | 205) {
        // One-way/refresh from server: client changes are not accepted here.
        return 403;
    }
    if luid.is_empty() {
        return 412;
    }
    let put = |server_id: Option<u64>, data: Vec<u8>, map: bool| WriteOp::PutItem {
        user: user.clone(),
        collection,
        server_id,
        content_type: content_type.clone(),
        data,
        origin_device: device.clone(),
        map_client_id: if map { Some(luid.to_string()) } else { None },
    };
    match name {
        "Add" | "Replace" => {
            if name == "Add" {
                ds.counts.from_client_add += 1;
            } else {
                ds.counts.from_client_replace += 1;
            }
            if let Some(&guid) = ds.map.get(luid) {
                if name == "Add" && ds.mode != 201 {
                    // Add for an id we already map: the client resent an item.
                    batch.ops.push(put(Some(guid), data, false));
                    ds.handled.insert(guid);
                    return 201;
                }
                let server = ds.items.get(&guid).cloned();
                ds.handled.insert(guid);
                match server {
                    Some(item) if item.deleted => {
                        // Replace beats a server delete: revive the item.
                        batch.ops.push(put(Some(guid), data, true));
                        return 201;
                    }
                    Some(item)
                        if ds.mode == 200 && item.seq > ds.prev_seq && item.origin_device != device =>
                    {
                        ds.counts.conflicts += 1;
                        return resolve_conflict(
                            ds,
                            cfg.policy(collection),
                            batch,
                            put,
                            guid,
                            luid,
                            item,
                            data,
                        );
                    }
                    _ => {
                        batch.ops.push(put(Some(guid), data, false));
                        return 200;
                    }
                }
            }
            // Unmapped: a new item, unless a slow sync finds its twin.
            // (A first slow sync against an empty collection has nothing to match.)
            if ds.mode == 201 && !(ds.twins.is_empty() && ds.uids.is_empty()) {
                let key = twin_key_of(&content_type, &data);
                // `same`: found by content (the key was computed from that very item),
                // not only by UID.
                let twin = match ds.twins.get_mut(&key).and_then(|v| v.pop()) {
                    Some(guid) => Some((guid, true)),
                    None => content::uid_key(&data)
                        .and_then(|u| ds.uids.get(&u).copied())
                        .filter(|g| !ds.rmap.contains_key(g))
                        .map(|guid| {
                            let same = ds
                                .items
                                .get(&guid)
                                .is_some_and(|i| twin_key_of(&i.content_type, &i.data) == key);
                            (guid, same)
                        }),
                };
                if let Some((guid, same)) = twin {
                    if !ds.rmap.contains_key(&guid) {
                        ds.counts.twins += 1;
                        ds.map.insert(luid.to_string(), guid);
                        ds.rmap.insert(guid, luid.to_string());
                        ds.handled.insert(guid);
                        if same {
                            batch.ops.push(WriteOp::SetMapping {
                                user: user.clone(),
                                device_id: device.clone(),
                                collection,
                                client_id: luid.to_string(),
                                server_id: guid,
                            });
                        } else {
                            // Same UID, different content: the client's copy is stored.
                            batch.ops.push(put(Some(guid), data, true));
                        }
                        return 201;
                    }
                }
            }
            // Two-way: an Add of an item the server already holds (another
            // device added the same event) is that item, not a second copy.
            if ds.mode == 200 && name == "Add" {
                let twin = content::uid_key(&data)
                    .and_then(|k| ds.uids.get(&k).copied())
                    .filter(|g| !ds.rmap.contains_key(g) && !ds.handled.contains(g))
                    .and_then(|g| ds.items.get(&g).filter(|i| !i.deleted).cloned());
                if let Some(server) = twin {
                    let held =
                        HeldItem { server, user: &user, device: &device, luid, content_type: &content_type };
                    if let Some(code) = add_of_held_item(ds, cfg.policy(collection), batch, put, held, &data)
                    {
                        return code;
                    }
                }
            }
            batch.ops.push(put(None, data, true));
            s.pending_new.push((collection, luid.to_string()));
            201
        }
        "Delete" => {
            ds.counts.from_client_delete += 1;
            let Some(&guid) = ds.map.get(luid) else { return 211 };
            ds.handled.insert(guid);
            if c.sft_del {
                ds.map.remove(luid);
                ds.rmap.remove(&guid);
                batch.ops.push(WriteOp::RemoveMapping {
                    user,
                    device_id: device,
                    collection,
                    client_id: luid.to_string(),
                });
                return 200;
            }
            let server = ds.items.get(&guid).cloned();
            if let Some(item) = server {
                if ds.mode == 200 && !item.deleted && item.seq > ds.prev_seq && item.origin_device != device {
                    // Changed on the server, deleted on the client: the change
                    // wins and the item goes back to the client.
                    ds.counts.conflicts += 1;
                    ds.map.remove(luid);
                    ds.rmap.remove(&guid);
                    batch.ops.push(WriteOp::RemoveMapping {
                        user,
                        device_id: device,
                        collection,
                        client_id: luid.to_string(),
                    });
                    ds.forced.push(OutKind::Add {
                        server_id: guid,
                        content_type: item.content_type.clone(),
                        data: item.data.clone(),
                    });
                    return 419;
                }
            }
            ds.map.remove(luid);
            ds.rmap.remove(&guid);
            batch.ops.push(WriteOp::DeleteItem {
                user,
                collection,
                server_id: guid,
                origin_device: device,
                client_id: Some(luid.to_string()),
            });
            200
        }
        _ => 406,
    }
}

/// A client's Add (under `luid`, of `content_type`) of an item the server
/// holds as `server`, found by its (UID, RECURRENCE-ID).
struct HeldItem<'a> {
    server: crate::store::ItemRecord,
    user: &'a str,
    device: &'a str,
    luid: &'a str,
    content_type: &'a str,
}

/// Resolves a two-way sync's Add of an item the server already holds (the
/// same event added on two devices): the client's id is mapped to the
/// server item, which is neither duplicated nor sent back as an Add. The
/// two versions are reconciled by the datastore's conflict policy: Merge
/// takes the version modified later (`content::newer`; the client's on a
/// tie or without stamps, as for a conflict) and adds the other's missing
/// properties (`content::merge`, same format only); the store gets the
/// result if it differs from the server's copy, the client a Replace if it
/// differs from what the client sent. Returns the Add's status, or `None`
/// under the Duplicate policy (the Add becomes a new item).
fn add_of_held_item(
    ds: &mut DsSession,
    policy: ConflictPolicy,
    batch: &mut WriteBatch,
    put: impl Fn(Option<u64>, Vec<u8>, bool) -> WriteOp,
    held: HeldItem<'_>,
    data: &[u8],
) -> Option<u16> {
    let HeldItem { server, user, device, luid, content_type } = held;
    let guid = server.server_id;
    let client_key = twin_key_of(content_type, data);
    let server_key = twin_key_of(&server.content_type, &server.data);
    // (store the client's version, send the server's version back)
    let (store_client, send_server) = match policy {
        ConflictPolicy::Duplicate => return None,
        _ if client_key == server_key => (false, false),
        ConflictPolicy::ClientWins => (true, false),
        ConflictPolicy::ServerWins => (false, true),
        ConflictPolicy::Merge => {
            let client_newer = content::newer(data, &server.data) != Some(std::cmp::Ordering::Less);
            let same_format = {
                use crate::convert::Format;
                let format = |t: &str, d: &[u8]| Format::from_type(t, None, Some(d));
                format(content_type, data) == format(&server.content_type, &server.data)
            };
            let merged = match (same_format, client_newer) {
                (true, true) => content::merge(data, &server.data),
                (true, false) => content::merge(&server.data, data),
                (false, _) => None,
            };
            match merged {
                // The merge is one of the two versions (the other had
                // nothing of its own): keep that version as it was written.
                Some(m) if twin_key_of(content_type, &m) == client_key => (true, false),
                Some(m) if twin_key_of(&server.content_type, &m) == server_key => (false, true),
                Some(m) => {
                    ds.counts.twins += 1;
                    ds.counts.conflicts += 1;
                    map_client_id(ds, guid, luid);
                    batch.ops.push(put(Some(guid), m.clone(), true));
                    ds.forced.push(OutKind::Replace {
                        server_id: guid,
                        client_id: luid.to_string(),
                        content_type: content_type.to_string(),
                        data: m,
                    });
                    return Some(201);
                }
                None => (client_newer, !client_newer),
            }
        }
    };
    ds.counts.twins += 1;
    if store_client || send_server {
        ds.counts.conflicts += 1;
    }
    map_client_id(ds, guid, luid);
    if store_client {
        batch.ops.push(put(Some(guid), data.to_vec(), true));
    } else {
        batch.ops.push(WriteOp::SetMapping {
            user: user.to_string(),
            device_id: device.to_string(),
            collection: ds.collection,
            client_id: luid.to_string(),
            server_id: guid,
        });
    }
    if send_server {
        ds.forced.push(OutKind::Replace {
            server_id: guid,
            client_id: luid.to_string(),
            content_type: server.content_type,
            data: server.data,
        });
    }
    Some(201)
}

/// Records in the session that the client's `luid` is server item `guid`
/// (the store's mapping is written by the caller's op), and that the item
/// is covered, so it is not sent back in this session.
fn map_client_id(ds: &mut DsSession, guid: u64, luid: &str) {
    ds.map.insert(luid.to_string(), guid);
    ds.rmap.insert(guid, luid.to_string());
    ds.handled.insert(guid);
}

#[allow(clippy::too_many_arguments)]
fn resolve_conflict(
    ds: &mut DsSession,
    policy: ConflictPolicy,
    batch: &mut WriteBatch,
    put: impl Fn(Option<u64>, Vec<u8>, bool) -> WriteOp,
    guid: u64,
    luid: &str,
    server: crate::store::ItemRecord,
    client_data: Vec<u8>,
) -> u16 {
    let policy = match policy {
        ConflictPolicy::Merge if content::merge(&client_data, &server.data).is_none() => {
            ConflictPolicy::ServerWins
        }
        p => p,
    };
    match policy {
        ConflictPolicy::Merge => {
            let merged = content::merge(&client_data, &server.data).unwrap_or(client_data);
            batch.ops.push(put(Some(guid), merged.clone(), false));
            ds.forced.push(OutKind::Replace {
                server_id: guid,
                client_id: luid.to_string(),
                content_type: server.content_type,
                data: merged,
            });
            207
        }
        ConflictPolicy::ServerWins => {
            ds.forced.push(OutKind::Replace {
                server_id: guid,
                client_id: luid.to_string(),
                content_type: server.content_type,
                data: server.data,
            });
            419
        }
        ConflictPolicy::ClientWins => {
            batch.ops.push(put(Some(guid), client_data, false));
            208
        }
        ConflictPolicy::Duplicate => {
            // The client's item becomes a new server item under its id; the
            // server's version goes to the client as a new item.
            ds.map.remove(luid);
            ds.rmap.remove(&guid);
            batch.ops.push(put(None, client_data, true));
            ds.forced.push(OutKind::Add {
                server_id: guid,
                content_type: server.content_type,
                data: server.data,
            });
            209
        }
    }
}

fn handle_map(
    s: &mut Session,
    _cfg: &EngineConfig,
    r: &mut Reply,
    batch: &mut WriteBatch,
    ctx: &Ctx<'_>,
    m: &Map<'_>,
) {
    let msg_id = ctx.msg_id;
    let target = m.target.loc_uri.trim().to_string();
    let source = m.source.loc_uri.trim().to_string();
    let user = s.user.clone().unwrap_or_default();
    let device = s.device_id.clone();
    let Some(ds) = find_ds(s, Some(&target), Some(&source)) else {
        if !ctx.no_resp {
            r.status(msg_id, &m.cmd_id, "Map", Some(&target), Some(&source), 404);
        }
        return;
    };
    let mut code = 200;
    for mi in &m.map_items {
        let gid = mi.target.loc_uri.trim();
        let luid = mi.source.loc_uri.trim().to_string();
        let guid = ds.temp_ids.get(gid).copied().or_else(|| gid.parse::<u64>().ok());
        let Some(guid) = guid.filter(|g| ds.items.contains_key(g)) else {
            code = 404;
            continue;
        };
        if let Some(old) = ds.rmap.insert(guid, luid.clone()) {
            ds.map.remove(&old);
        }
        ds.map.insert(luid.clone(), guid);
        batch.ops.push(WriteOp::SetMapping {
            user: user.clone(),
            device_id: device.clone(),
            collection: ds.collection,
            client_id: luid,
            server_id: guid,
        });
    }
    if !ctx.no_resp {
        r.status(msg_id, &m.cmd_id, "Map", Some(&target), Some(&source), code);
    }
}

/// The version of an item a client gets: converted to the client's preferred
/// receive format (DevInf Rx-Pref) when the stored format is not among the
/// formats its datastore receives. Without DevInf, or when a conversion is
/// impossible, the item goes as stored.
fn for_client(caps: &ClientCaps, client_uri: &str, content_type: &str, data: &[u8]) -> (String, Vec<u8>) {
    use crate::convert::{convert, Format};
    let as_stored = || (content_type.to_string(), data.to_vec());
    let Some(ds) = caps.datastore(client_uri) else { return as_stored() };
    let Some(from) = Format::from_type(content_type, None, Some(data)) else { return as_stored() };
    let accepted: Vec<Format> = ds
        .rx
        .iter()
        .filter_map(|(t, v)| Format::from_type(t, Some(v.as_str()).filter(|v| !v.is_empty()), None))
        .collect();
    if accepted.is_empty() || accepted.contains(&from) {
        return as_stored();
    }
    let target = ds
        .rx_pref
        .as_ref()
        .and_then(|(t, v)| Format::from_type(t, Some(v.as_str()).filter(|v| !v.is_empty()), None))
        .into_iter()
        .chain(accepted.iter().copied())
        .find(|f| {
            convert(b"", from, *f)
                .map_or_else(|e| !matches!(e, crate::convert::ConvertError::Unsupported { .. }), |_| true)
        });
    let Some(target) = target else { return as_stored() };
    match convert(data, from, target) {
        Ok(out) => (target.content_type().0.to_string(), out.into_owned()),
        Err(e) => {
            tracing::warn!(error = %e, "item sent unconverted");
            as_stored()
        }
    }
}

/// The twin-matching key of an item, computed on a common format (vCard 3.0,
/// iCalendar 2.0) so a vCard 2.1 device's copy matches a stored 3.0 item.
pub(super) fn twin_key_of(content_type: &str, data: &[u8]) -> u64 {
    use crate::convert::{convert, Format};
    let common = match Format::from_type(content_type, None, Some(data)) {
        Some(Format::VCard21) => convert(data, Format::VCard21, Format::VCard30).ok(),
        Some(Format::VCalendar10) => convert(data, Format::VCalendar10, Format::ICalendar20).ok(),
        _ => None,
    };
    match common {
        Some(c) => content::twin_key(&c),
        None => content::twin_key(data),
    }
}

/// Computes the server's changes for every datastore (package 4).
fn start_server_sync(s: &mut Session, _cfg: &EngineConfig) {
    let device = s.device_id.clone();
    let mut queue = Vec::new();
    let caps = &s.caps;
    for ds in s.stores.iter_mut() {
        if ds.queued {
            continue;
        }
        ds.queued = true;
        let mut ops: Vec<(u64, OutKind)> = Vec::new();
        match ds.mode {
            202 | 203 => {}
            201 | 205 => {
                for item in ds.items.values() {
                    // Newer than the session's snapshot (only after a
                    // restore): left for the next sync, see `reload_datastore`.
                    if item.deleted
                        || item.seq > ds.max_seq
                        || ds.rmap.contains_key(&item.server_id)
                        || ds.handled.contains(&item.server_id)
                    {
                        continue;
                    }
                    ops.push((
                        item.seq,
                        OutKind::Add {
                            server_id: item.server_id,
                            content_type: item.content_type.clone(),
                            data: item.data.clone(),
                        },
                    ));
                }
            }
            _ => {
                for item in ds.items.values() {
                    if item.seq <= ds.prev_seq
                        || item.seq > ds.max_seq
                        || item.origin_device == device
                        || ds.handled.contains(&item.server_id)
                    {
                        continue;
                    }
                    let luid = ds.rmap.get(&item.server_id).cloned();
                    let kind = match (item.deleted, luid) {
                        // The mapping stays until the client confirms the
                        // Delete (see `deleted_on_client`).
                        (true, Some(luid)) => OutKind::Delete { server_id: item.server_id, client_id: luid },
                        (true, None) => continue,
                        (false, Some(luid)) => OutKind::Replace {
                            server_id: item.server_id,
                            client_id: luid,
                            content_type: item.content_type.clone(),
                            data: item.data.clone(),
                        },
                        (false, None) => OutKind::Add {
                            server_id: item.server_id,
                            content_type: item.content_type.clone(),
                            data: item.data.clone(),
                        },
                    };
                    ops.push((item.seq, kind));
                }
            }
        }
        ops.sort_by_key(|(seq, _)| *seq);
        let forced = std::mem::take(&mut ds.forced);
        ds.number_of_changes = ops.len() + forced.len();
        let max_obj = s.client_max_obj;
        for kind in ops.into_iter().map(|(_, k)| k).chain(forced) {
            let kind = match kind {
                OutKind::Add { server_id, content_type, data } => {
                    let (content_type, data) = for_client(caps, &ds.client_uri, &content_type, &data);
                    OutKind::Add { server_id, content_type, data }
                }
                OutKind::Replace { server_id, client_id, content_type, data } => {
                    let (content_type, data) = for_client(caps, &ds.client_uri, &content_type, &data);
                    OutKind::Replace { server_id, client_id, content_type, data }
                }
                k => k,
            };
            let size = match &kind {
                OutKind::Add { data, .. } | OutKind::Replace { data, .. } => data.len(),
                OutKind::Delete { .. } => 0,
            };
            if max_obj != 0 && size > max_obj {
                // Never send an object larger than the client's MaxObjSize
                // (digest §8): the item is skipped for this device.
                tracing::warn!(
                    device = %device,
                    collection = ds.collection.as_str(),
                    size,
                    max_obj,
                    "item larger than the client's MaxObjSize not sent"
                );
                ds.number_of_changes -= 1;
                continue;
            }
            queue.push(OutOp { collection: ds.collection, kind, offset: 0 });
        }
    }
    s.queue.extend(queue);
}

fn xml_growth(data: &[u8]) -> usize {
    data.iter().filter(|b| matches!(b, b'\r' | b'&' | b'<' | b'>')).count() * 5
}

fn op_data(op: &OutOp) -> &[u8] {
    match &op.kind {
        OutKind::Add { data, .. } | OutKind::Replace { data, .. } => data,
        OutKind::Delete { .. } => &[],
    }
}

/// Adds as many queued server operations as fit in the client's MaxMsgSize,
/// one Sync per datastore. Returns true when the package is complete (Final).
fn fill(s: &mut Session, _cfg: &EngineConfig, r: &mut Reply, _batch: &mut WriteBatch) -> bool {
    let (reply_len, limit) = measure_reply(s, r);
    let xml = s.encoding == crate::model::Encoding::Xml;
    // One Sync per datastore, an empty one for datastores without changes.
    let mut syncs: Vec<(Collection, crate::model::Sync<'static>)> = Vec::new();
    for ds in s.stores.iter().filter(|d| d.queued) {
        syncs.push((ds.collection, new_sync(r, ds, s.caps.number_of_changes)));
    }
    let mut used = reply_len + SIZE_MARGIN + SYNC_OVERHEAD * syncs.len();
    let mut added_any = false;
    let mut chunk_of: Option<Collection> = None;
    while let Some(op) = s.queue.front() {
        let data = op_data(op);
        let start = op.offset.min(data.len());
        let rest = &data[start..];
        let growth = if xml { xml_growth(rest) } else { 0 };
        let need = rest.len() + growth + ITEM_OVERHEAD;
        if used + need <= limit {
            let Some(op) = s.queue.pop_front() else { break };
            let len = op_data(&op).len();
            used += need;
            push_op(s, r, &mut syncs, &op, start, len);
            added_any = true;
            continue;
        }
        let room = limit.saturating_sub(used + ITEM_OVERHEAD);
        let can_chunk = s.caps.large_objects && !rest.is_empty();
        // Chunk what would not fit in a message of its own, or fill an
        // otherwise empty message; else wait for the next message.
        let too_big_alone = need + reply_len + SIZE_MARGIN + SYNC_OVERHEAD > limit;
        // A message crowded with the statuses for a whole client message
        // has no room even for a progress chunk: it goes without item, and
        // the client's Alert 222 brings a message with just two statuses.
        let crowded = r.responses.len() > 2 && used + ITEM_OVERHEAD + MIN_PROGRESS_CHUNK > limit;
        let progress = !added_any && !crowded;
        if can_chunk && ((room >= MIN_CHUNK && too_big_alone) || progress) {
            // The size margins above cover a progress chunk beyond `room`.
            let end = chunk_end(data, start, room.max(MIN_PROGRESS_CHUNK), xml);
            let Some(mut op) = s.queue.pop_front() else { break };
            let len = op_data(&op).len();
            push_op(s, r, &mut syncs, &op, start, end);
            chunk_of = Some(op.collection);
            if end < len {
                op.offset = end;
                s.queue.push_front(op);
            }
        } else if progress && !can_chunk {
            // Cannot fit and cannot chunk: send it anyway rather than stall.
            let Some(op) = s.queue.pop_front() else { break };
            let len = op_data(&op).len();
            push_op(s, r, &mut syncs, &op, start, len);
        }
        break;
    }
    // A chunked item must end the message: put its Sync last.
    if let Some(c) = chunk_of {
        if let Some(pos) = syncs.iter().position(|(x, _)| *x == c) {
            let sync = syncs.remove(pos);
            syncs.push(sync);
        }
    }
    for (_, sync) in syncs {
        r.command(Command::Sync(sync));
    }
    s.queue.is_empty()
}

fn new_sync(r: &mut Reply, ds: &DsSession, noc: bool) -> crate::model::Sync<'static> {
    crate::model::Sync {
        cmd_id: r.cmd_id(),
        target: Some(Location::uri(t(ds.client_uri.clone()))),
        source: Some(Location::uri(t(ds.server_uri.clone()))),
        number_of_changes: if noc { Some(t(ds.number_of_changes.to_string())) } else { None },
        ..Default::default()
    }
}

/// The end of a chunk starting at `start` whose encoded size fits in `room`;
/// never splits a UTF-8 sequence, and avoids white space at either side of
/// the cut: SyncML toolkits (Synthesis, so SyncEvolution) trim it from the
/// ends of a `Data` element, which shortens the reassembled object (424).
fn chunk_end(data: &[u8], start: usize, room: usize, xml: bool) -> usize {
    let end = chunk_end_fit(data, start, room, xml);
    let mut cut = end;
    while cut > start + 1
        && cut < data.len()
        && (data[cut].is_ascii_whitespace()
            || data[cut - 1].is_ascii_whitespace()
            || !is_char_start(data[cut]))
    {
        cut -= 1;
    }
    // Only white space in reach: progress matters more than the trim.
    if cut > start + 1 || end >= data.len() {
        cut
    } else {
        end
    }
}

fn is_char_start(b: u8) -> bool {
    b & 0xC0 != 0x80
}

/// The longest chunk from `start` whose encoded size fits in `room`, on a
/// UTF-8 boundary.
fn chunk_end_fit(data: &[u8], start: usize, room: usize, xml: bool) -> usize {
    let rest = &data[start..];
    let Ok(text) = std::str::from_utf8(rest) else {
        return (start + room).min(data.len());
    };
    let mut end = start;
    let mut budget = room;
    for ch in text.chars() {
        let cost = if xml && matches!(ch, '\r' | '&' | '<' | '>') { 6 } else { ch.len_utf8() };
        if cost > budget {
            break;
        }
        budget -= cost;
        end += ch.len_utf8();
    }
    end.max(start + 1).min(data.len())
}

/// Appends bytes `[start, end)` of an op's data to its datastore's Sync.
/// A piece that does not reach the end carries MoreData; the first piece of
/// a chunked item carries the total Size. Every piece of a chunked item is
/// `Data::Chunk`, so encoders write them all in one representation.
fn push_op(
    s: &mut Session,
    r: &mut Reply,
    syncs: &mut [(Collection, crate::model::Sync<'static>)],
    op: &OutOp,
    start: usize,
    end: usize,
) {
    let Some(pos) = syncs.iter().position(|(c, _)| *c == op.collection) else { return };
    let Some(ds) = s.stores.iter_mut().find(|d| d.collection == op.collection) else { return };
    let total = op_data(op).len();
    let more = end < total;
    let sized = more && start == 0;
    let cmd_id = r.cmd_id();
    let cid: u64 = cmd_id.parse().unwrap_or(0);
    let chunked = start > 0 || more;
    let piece = |data: &[u8]| -> Data<'static> {
        let bytes = &data[start.min(data.len())..end.min(data.len())];
        match std::str::from_utf8(bytes) {
            Ok(text) if !chunked => Data::Text(Cow::Owned(text.to_string())),
            // Text or binary is decided on the whole object, so that all its
            // pieces are of one kind (see `Data::Chunk`).
            Ok(text) if std::str::from_utf8(data).is_ok() => Data::Chunk(Cow::Owned(text.to_string())),
            _ => Data::Binary(Cow::Owned(bytes.to_vec())),
        }
    };
    let item_meta = || sized.then(|| Meta { size: Some(t(total.to_string())), ..Default::default() });
    let cmd = match &op.kind {
        OutKind::Add { server_id, content_type, data } => {
            if start == 0 {
                ds.counts.to_client_add += 1;
            }
            let gid = guid_for_client(ds, &s.caps, *server_id, &mut s.next_temp_id);
            s.sent.insert((s.out_msg_id, cid), SentCmd::Item { collection: op.collection });
            Command::Add(ItemCommand {
                cmd_id,
                meta: Some(type_meta(content_type)),
                items: vec![Item {
                    source: Some(Location::uri(t(gid))),
                    meta: item_meta(),
                    data: Some(piece(data)),
                    more_data: more,
                    ..Default::default()
                }],
                ..Default::default()
            })
        }
        OutKind::Replace { client_id, content_type, data, .. } => {
            if start == 0 {
                ds.counts.to_client_replace += 1;
            }
            s.sent.insert((s.out_msg_id, cid), SentCmd::Item { collection: op.collection });
            Command::Replace(ItemCommand {
                cmd_id,
                meta: Some(type_meta(content_type)),
                items: vec![Item {
                    target: Some(Location::uri(t(client_id.clone()))),
                    meta: item_meta(),
                    data: Some(piece(data)),
                    more_data: more,
                    ..Default::default()
                }],
                ..Default::default()
            })
        }
        OutKind::Delete { server_id, client_id } => {
            ds.counts.to_client_delete += 1;
            let sent = SentCmd::Delete {
                collection: op.collection,
                server_id: *server_id,
                client_id: client_id.clone(),
            };
            s.sent.insert((s.out_msg_id, cid), sent);
            Command::Delete(ItemCommand {
                cmd_id,
                items: vec![Item { target: Some(Location::uri(t(client_id.clone()))), ..Default::default() }],
                ..Default::default()
            })
        }
    };
    syncs[pos].1.commands.push(cmd);
}

/// The id a server Add carries: the server id, or a short temporary id when
/// the client's MaxGUIDSize is smaller than that.
fn guid_for_client(ds: &mut DsSession, caps: &ClientCaps, server_id: u64, next: &mut u64) -> String {
    let id = server_id.to_string();
    let max = caps.datastore(&ds.client_uri).and_then(|d| d.max_guid_size).unwrap_or(usize::MAX);
    if id.len() <= max {
        return id;
    }
    let tmp = format!("#{}", *next);
    *next += 1;
    ds.temp_ids.insert(tmp.clone(), server_id);
    tmp
}

/// The session finished: store anchors and the change sequence reached.
fn complete(s: &mut Session, batch: &mut WriteBatch) {
    s.phase = Phase::Done;
    let user = s.user.clone().unwrap_or_default();
    for ds in &s.stores {
        let seq_reached = if ds.mode == 202 || ds.failed { ds.prev_seq } else { ds.max_seq };
        let (client_anchor, server_anchor) = if ds.failed {
            (String::new(), String::new())
        } else {
            (ds.client_next.clone(), ds.server_next.clone())
        };
        batch.ops.push(WriteOp::PutSyncState {
            user: user.clone(),
            device_id: s.device_id.clone(),
            collection: ds.collection,
            state: SyncState {
                client_anchor,
                server_anchor,
                seq_reached,
                client_uri: ds.client_uri.clone(),
                last_sync_type: ds.mode,
            },
        });
        tracing::debug!(
            device = %s.device_id,
            collection = ds.collection.as_str(),
            mode = ds.mode,
            "datastore sync complete"
        );
    }
}

/// Builds the twin indexes over the server items that no client item has
/// claimed yet: by content (slow sync only) and by (UID, RECURRENCE-ID)
/// (slow and two-way syncs; a two-way sync's snapshot holds whole only the
/// items changed since the device's last sync, which are the ones it would
/// otherwise send as new, and bare items have no UID to index).
fn index_twins(ds: &mut DsSession) {
    ds.twins.clear();
    ds.uids.clear();
    let by_content = ds.mode == 201;
    for item in ds.items.values() {
        if item.deleted || ds.rmap.contains_key(&item.server_id) || ds.handled.contains(&item.server_id) {
            continue;
        }
        if by_content {
            ds.twins.entry(twin_key_of(&item.content_type, &item.data)).or_default().push(item.server_id);
        }
        if let Some(key) = content::uid_key(&item.data) {
            ds.uids.insert(key, item.server_id);
        }
    }
}

/// Refills what a restored session keeps only in memory (items, mappings,
/// twin indexes) from a fresh snapshot of the store.
///
/// The snapshot may be newer than the one the session started with. Items
/// the session itself wrote are mapped or `handled`, so they are not sent
/// back; changes other devices made since are newer than `max_seq`: they
/// count as conflicts where the client touches them, and are otherwise left
/// for the device's next sync (its `seq_reached` stays at `max_seq`).
pub(super) fn reload_datastore(ds: &mut DsSession, snap: crate::store::DatastoreSnapshot) {
    ds.items = Items::new(snap.items);
    ds.map.clear();
    ds.rmap.clear();
    ds.map.reserve(snap.mappings.len());
    ds.rmap.reserve(snap.mappings.len());
    for (luid, guid) in snap.mappings {
        ds.rmap.insert(guid, luid.clone());
        ds.map.insert(luid, guid);
    }
    if matches!(ds.mode, 200 | 201) {
        index_twins(ds);
    }
    ds.loaded = true;
}
