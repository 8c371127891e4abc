//! What the panic-hunting fuzz targets run, shared with
//! tests/fuzz_regressions.rs so that every finding replays exactly.
//! Each function must return normally for every input: a panic is a finding.

#![allow(dead_code)]

use std::collections::HashMap;

use shardsync::convert::{self, Format};
use shardsync::engine::{content, endpoint, EngineConfig, Outcome, Session};
use shardsync::http::request::{ChunkedDecoder, RequestReader};
use shardsync::http::Limits;
use shardsync::model::{Encoding, SyncMl};
use shardsync::store::memory::MemoryBackend;
use shardsync::store::{Backend, ReadRequest, ReadResponse, UserRecord, WriteBatch, WriteOp};

/// Small limits so that the fuzzer reaches the "too large" paths too.
fn small_limits() -> Limits {
    Limits { max_header_bytes: 512, max_headers: 8, max_body: 4096 }
}

/// The framer fed `data` in pieces whose sizes come from the input itself
/// (first byte), polled as the connection loop polls it; then the chunked
/// decoder alone on the rest, in the same pieces.
pub fn http_framing(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else { return };
    let piece = usize::from(split % 64) + 1;
    for limits in [Limits::default(), small_limits()] {
        let mut reader = RequestReader::new(limits);
        let mut fed = 0;
        'conn: while fed < rest.len() {
            let spare = reader.spare();
            let n = spare.len().min(piece).min(rest.len() - fed);
            spare[..n].copy_from_slice(&rest[fed..fed + n]);
            reader.commit(n);
            fed += n;
            loop {
                let _ = reader.phase();
                match reader.poll_head() {
                    Ok(Some(head)) => {
                        let _ = (head.method(), head.path(), head.target(), head.content_type());
                        let _ = (head.framing(), head.keep_alive(), head.expects_continue());
                        let _ = head.has_unknown_expectation();
                        let _ = head.headers().count();
                        // The body may need more bytes: keep feeding until it is complete.
                        loop {
                            match reader.poll_body() {
                                Ok(Some(_)) => break,
                                Ok(None) if fed < rest.len() => {
                                    let spare = reader.spare();
                                    let n = spare.len().min(piece).min(rest.len() - fed);
                                    spare[..n].copy_from_slice(&rest[fed..fed + n]);
                                    reader.commit(n);
                                    fed += n;
                                }
                                Ok(None) => {
                                    let _ = reader.eof();
                                    break 'conn;
                                }
                                Err(_) => break 'conn,
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) => break 'conn,
                }
            }
        }
        let _ = reader.eof();

        let mut dec = ChunkedDecoder::default();
        let mut body = Vec::new();
        for chunk in rest.chunks(piece) {
            let mut at = 0;
            while at < chunk.len() {
                match dec.decode(&chunk[at..], &mut body, &limits) {
                    Ok((used, done)) => {
                        assert!(used <= chunk.len() - at, "decoder used more than it was given");
                        assert!(body.len() <= limits.max_body, "body over its limit");
                        at += used;
                        if done || used == 0 {
                            break;
                        }
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

/// The balancer's routing-key scan on `data` as XML and as WBXML, and with
/// the first line as the request target (a `?s=` token).
pub fn balancer_key(data: &[u8]) {
    use shardsync::balancer::key;
    let _ = key::scan(Encoding::Xml, data);
    let _ = key::scan(Encoding::Wbxml, data);
    if let Some(nl) = data.iter().position(|&b| b == b'\n') {
        let (target, body) = (&data[..nl], &data[nl + 1..]);
        if let Ok(target) = std::str::from_utf8(target) {
            for ct in [Some("application/vnd.syncml+xml"), Some("application/vnd.syncml+wbxml"), None] {
                let _ = key::request_key(target, ct, body);
            }
        }
    }
}

/// Separates messages in an engine_messages input.
pub const MESSAGE_SEPARATOR: &[u8] = b"--MSG--\n";

/// Most messages replayed from one input.
const MAX_MESSAGES: usize = 12;

/// A one-node server on the in-memory store: sessions are stored after each
/// message and restored from the store on the next one (as a node that
/// did not see the previous message would), exactly like the engine tests'
/// harness but without a temp dir.
pub struct EngineHarness {
    cfg: EngineConfig,
    backend: MemoryBackend,
    sessions: HashMap<u64, Session>,
    now: u64,
    /// Basic-auth verdicts already computed: (password, PHC string) → verified.
    verdicts: HashMap<(String, String), bool>,
}

impl Default for EngineHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineHarness {
    /// User `test`, password `test` (as in the captures).
    pub fn new() -> EngineHarness {
        let backend = MemoryBackend::new();
        if let Ok(user) = UserRecord::new("test", "test") {
            let _ = backend.commit(&[WriteBatch { ops: vec![WriteOp::PutUser(user)] }]);
        }
        EngineHarness {
            cfg: EngineConfig::default(),
            backend,
            sessions: HashMap::new(),
            now: 1_700_000_000,
            verdicts: HashMap::new(),
        }
    }

    /// Handles one encoded message (WBXML if it starts with a WBXML version
    /// byte, else XML); the reply, or `None` when it did not decode.
    pub fn send(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let enc = match bytes.first() {
            Some(1..=3) => Encoding::Wbxml,
            _ => Encoding::Xml,
        };
        let msg = shardsync::codec::decode(enc, bytes).ok()?;
        Some(self.send_msg(&msg, enc))
    }

    /// The shell's argon2id check of a basic password, remembered per
    /// (password, hash) so the fuzzer does not spend its time hashing.
    fn check_basic(&mut self, s: &mut Session, msg: &SyncMl<'_>) {
        if let Some((password, phc)) = s.basic_to_verify(msg) {
            let ok = match phc {
                Some(phc) => *self.verdicts.entry((password.clone(), phc.clone())).or_insert_with(|| {
                    UserRecord { name: String::new(), md5_b64: String::new(), password_hash: phc }
                        .verify_basic(&password)
                }),
                None => false,
            };
            s.basic_verified(msg, ok);
        }
    }

    fn read(&self, r: &ReadRequest) -> Option<ReadResponse> {
        self.backend.read(r).ok()
    }

    fn send_msg(&mut self, msg: &SyncMl<'_>, enc: Encoding) -> Vec<u8> {
        self.now += 7;
        let key = shardsync::routing::session_key(msg.hdr.source.loc_uri.trim(), msg.hdr.session_id.trim());
        if let Some(ReadResponse::Session(Some(rec))) = self.read(&ReadRequest::Session { key }) {
            match Session::from_record(&rec) {
                Ok(s) => {
                    self.sessions.insert(key, s);
                }
                Err(_) => {
                    self.sessions.remove(&key);
                }
            }
        }
        // A well-behaved client: it presents the secret of the session it is in.
        let existing = self.sessions.remove(&key);
        let secret = existing.as_ref().map(|s| *s.secret());
        let mut body = Vec::new();
        shardsync::codec::encode(enc, msg, &mut body);
        let mut s = match (
            endpoint::admit(existing.as_ref(), msg, &endpoint::Entry { secret, body: &body }),
            existing,
        ) {
            (endpoint::Admission::Resend, Some(s)) => {
                let reply = s.stored_reply().to_vec();
                self.sessions.insert(key, s);
                return reply;
            }
            (endpoint::Admission::Continue, Some(s)) => s,
            (endpoint::Admission::Start | endpoint::Admission::Restart, _) => {
                let secret = endpoint::SessionSecret((u128::from(self.now)).to_le_bytes());
                let mut s = Session::new(key, msg, enc, self.now, secret);
                for r in s.pending_reads(&self.cfg, msg) {
                    if let Some(resp) = self.read(&r) {
                        s.provide(&r, resp);
                    }
                }
                self.check_basic(&mut s, msg);
                for r in s.speculative_reads(&self.cfg, msg) {
                    if let Some(resp) = self.read(&r) {
                        s.provide_if_authentic(&self.cfg, msg, &r, resp);
                    }
                }
                s
            }
            // Refused (a gap, a collision, not a resend): the server answers with an HTTP error.
            (_, existing) => {
                if let Some(s) = existing {
                    self.sessions.insert(key, s);
                }
                return Vec::new();
            }
        };
        for _ in 0..4 {
            self.check_basic(&mut s, msg);
            let reads = s.pending_reads(&self.cfg, msg);
            if reads.is_empty() {
                break;
            }
            for r in reads {
                if let Some(resp) = self.read(&r) {
                    s.provide(&r, resp);
                }
            }
        }
        self.check_basic(&mut s, msg);
        let before = s.last_msg_in();
        let mut step = s.handle(&self.cfg, msg, self.now, 0x5eed ^ self.now);
        s.set_last_body(&body);
        if !s.is_authenticated() {
            // A failed login: the server stores and keeps nothing of it.
            assert!(step.writes.ops.is_empty(), "an unauthenticated message wrote to the store");
            return step.reply;
        }
        let mut ops = Vec::new();
        if before > 0 {
            ops.push(WriteOp::ExpectSession { key, last_msg_id: before });
        }
        ops.append(&mut step.writes.ops);
        match step.outcome {
            Outcome::Aborted => ops.push(WriteOp::DeleteSession { key }),
            _ => match s.to_record(self.now + 900) {
                Ok(rec) if step.outcome == Outcome::Complete => ops.push(WriteOp::FinishSession(rec)),
                Ok(rec) => ops.push(WriteOp::PutSession(rec)),
                // A state that does not encode is not stored; the session lives in memory only.
                Err(_) => {}
            },
        }
        step.writes.ops = ops;
        match self.backend.commit(std::slice::from_ref(&step.writes)) {
            Ok(info) if info.first().is_some_and(|i| !i.session_conflict) => {
                s.committed(&info[0]);
                if step.outcome != Outcome::Aborted {
                    self.sessions.insert(key, s);
                }
            }
            _ => s.commit_failed(),
        }
        step.reply
    }
}

/// Up to [`MAX_MESSAGES`] messages separated by [`MESSAGE_SEPARATOR`],
/// each handled in turn by one [`EngineHarness`].
pub fn engine_messages(data: &[u8]) {
    let mut h = EngineHarness::new();
    let mut rest = data;
    for _ in 0..MAX_MESSAGES {
        let (msg, next) = match find(rest, MESSAGE_SEPARATOR) {
            Some(at) => (&rest[..at], &rest[at + MESSAGE_SEPARATOR.len()..]),
            None => (rest, &[][..]),
        };
        let _ = h.send(msg);
        if next.is_empty() {
            break;
        }
        rest = next;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

const FORMATS: [Format; 5] =
    [Format::VCard21, Format::VCard30, Format::VCalendar10, Format::ICalendar20, Format::PlainText];

/// Content helpers and every conversion on `data`; when it holds a NUL, the
/// text after it is the "other" item for merges.
pub fn content_convert(data: &[u8]) {
    let (a, b) = match data.iter().position(|&x| x == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let _ = content::twin_key(a);
    let _ = content::uid_key(a);
    let _ = content::merge(a, b);
    if let Ok(text) = std::str::from_utf8(a) {
        let _ = content::unfold(text);
        for line in content::lines(text) {
            let _ = content::prop_name(&line);
        }
    }
    let _ = convert::normalize_line_ends(a);
    for ct in
        ["text/x-vcard", "text/vcard", "text/x-vcalendar", "text/calendar", "text/plain", "text/directory"]
    {
        let _ = Format::from_type(ct, None, Some(a));
    }
    for from in FORMATS {
        for to in FORMATS {
            if let Ok(out) = convert::convert(a, from, to) {
                // What a conversion produced is stored and compared again.
                let _ = content::twin_key(&out);
                let _ = content::uid_key(&out);
            }
        }
    }
}
