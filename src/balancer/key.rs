//! Routing key of a request (DESIGN §6): the `s` token of the URL when
//! present, else the session key of the SyncHdr's (Source/LocURI, SessionID),
//! read from an XML or WBXML body without decoding past `</SyncHdr>`.
//!
//! The header scanners produce the same strings as the full decoders
//! (texts as written, no trimming; text chunks concatenated, entities
//! resolved), so the key equals [`crate::server::route_key`] for every
//! message; the tests check that against the captured sessions.
//!
//! The scan is bounded like the decoders: the ids may not be longer than
//! the decoders' caps ([`IdLimits`]: device id 256, SessionID 64, MsgID 32
//! bytes), and WBXML string-table references spend the same budget
//! ([`crate::codec::DecodeLimits`]), so a header cannot make the balancer
//! build a large string.

use std::borrow::Cow;

use quick_xml::events::Event;

use crate::codec::IdLimits;
use crate::model::Encoding;
use crate::routing;
use crate::wbxml::reader::{Event as WEvent, Reader as WReader};
use crate::wbxml::tokens::syncml as tok;

/// Deepest element nesting the scanners follow inside the header.
const MAX_DEPTH: usize = 32;

/// Why a request has no routing key (the balancer answers 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No token, and the content type is not a SyncML one.
    #[error("no session token and the content type is not SyncML XML or WBXML")]
    NotSyncMl,
    /// The body is not well-formed up to the end of its SyncHdr.
    #[error("unreadable SyncHdr: {0}")]
    Malformed(String),
    /// The body ends before `</SyncHdr>`, or has no SyncHdr.
    #[error("no complete SyncHdr in the body")]
    NoHeader,
    /// The SyncHdr has no Source/LocURI (device id).
    #[error("the SyncHdr has no Source/LocURI")]
    NoDeviceId,
    /// A header id is longer than the decoders accept.
    #[error("SyncHdr {field} longer than {limit} bytes")]
    TooLong {
        /// Which id.
        field: &'static str,
        /// Its cap.
        limit: usize,
    },
}

/// The identifiers the router needs from a SyncHdr.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderIds<'a> {
    /// `SyncHdr/Source/LocURI`.
    pub device_id: Cow<'a, str>,
    /// `SyncHdr/SessionID`.
    pub session_id: Cow<'a, str>,
    /// `SyncHdr/MsgID`.
    pub msg_id: Cow<'a, str>,
}

impl HeaderIds<'_> {
    /// The session key of these ids ([`routing::session_key`]).
    pub fn key(&self) -> u64 {
        routing::session_key(&self.device_id, &self.session_id)
    }
}

/// A request's routing key and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKey {
    /// The 64-bit session key.
    pub key: u64,
    /// Taken from the `?s=` token (the client follows RespURI).
    pub from_token: bool,
    /// No token and `MsgID` 1: the first message of a new session, which a
    /// draining member no longer receives.
    pub new_session: bool,
}

/// The routing key of a request: a valid `s` token in `target`, else the
/// SyncHdr of `body` in the encoding named by `content_type`.
pub fn request_key(target: &str, content_type: Option<&str>, body: &[u8]) -> Result<RouteKey, KeyError> {
    if let Some(key) = routing::token_from_target(target).and_then(routing::parse_token) {
        return Ok(RouteKey { key, from_token: true, new_session: false });
    }
    let encoding = content_type.and_then(Encoding::from_content_type).ok_or(KeyError::NotSyncMl)?;
    let ids = scan(encoding, body)?;
    Ok(RouteKey { key: ids.key(), from_token: false, new_session: ids.msg_id.trim() == "1" })
}

/// Reads the SyncHdr ids of a body in `encoding`.
pub fn scan(encoding: Encoding, body: &[u8]) -> Result<HeaderIds<'_>, KeyError> {
    let ids = match encoding {
        Encoding::Xml => scan_xml(body)?,
        Encoding::Wbxml => scan_wbxml(body)?,
    };
    if ids.device_id.is_empty() {
        return Err(KeyError::NoDeviceId);
    }
    Ok(ids)
}

/// Which header field a text belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Device,
    Session,
    Msg,
}

/// Appends a text piece to a header id, refusing to grow it past its cap.
fn push<'a>(ids: &mut HeaderIds<'a>, field: Field, piece: Cow<'a, str>) -> Result<(), KeyError> {
    let caps = IdLimits::default();
    let (slot, name, limit) = match field {
        Field::Device => (&mut ids.device_id, "Source/LocURI", caps.device_id),
        Field::Session => (&mut ids.session_id, "SessionID", caps.session_id),
        Field::Msg => (&mut ids.msg_id, "MsgID", caps.msg_id),
    };
    if slot.len().saturating_add(piece.len()) > limit {
        return Err(KeyError::TooLong { field: name, limit });
    }
    if slot.is_empty() {
        *slot = piece;
    } else {
        slot.to_mut().push_str(&piece);
    }
    Ok(())
}

/// Scans an XML message up to `</SyncHdr>` with quick-xml events.
pub fn scan_xml(body: &[u8]) -> Result<HeaderIds<'_>, KeyError> {
    // A declared non-UTF-8 charset is converted first (rare; then texts are owned).
    let converted = crate::xml::charset::to_utf8(body).map_err(|e| KeyError::Malformed(e.to_string()))?;
    match converted {
        Cow::Borrowed(b) => scan_utf8_xml(b),
        Cow::Owned(v) => scan_utf8_xml(&v).map(|ids| HeaderIds {
            device_id: Cow::Owned(ids.device_id.into_owned()),
            session_id: Cow::Owned(ids.session_id.into_owned()),
            msg_id: Cow::Owned(ids.msg_id.into_owned()),
        }),
    }
}

fn local(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

fn scan_utf8_xml(body: &[u8]) -> Result<HeaderIds<'_>, KeyError> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let cfg = reader.config_mut();
    cfg.trim_text(false);
    cfg.check_end_names = false;
    let bad = |e: &dyn std::fmt::Display| KeyError::Malformed(e.to_string());
    // Element names from SyncML down; only the header's are kept.
    let mut stack: Vec<&'static [u8]> = Vec::with_capacity(8);
    let mut ids = HeaderIds::default();
    let field = |stack: &[&'static [u8]]| -> Option<Field> {
        match stack {
            [_, b"SyncHdr", b"SessionID"] => Some(Field::Session),
            [_, b"SyncHdr", b"MsgID"] => Some(Field::Msg),
            [_, b"SyncHdr", b"Source", b"LocURI"] => Some(Field::Device),
            _ => None,
        }
    };
    loop {
        match reader.read_event().map_err(|e| bad(&e))? {
            Event::Start(e) => {
                // Only the names the header fields need are kept (as statics).
                let name: &'static [u8] = match local(e.name().as_ref()) {
                    b"SyncML" => b"SyncML",
                    b"SyncHdr" => b"SyncHdr",
                    b"SessionID" => b"SessionID",
                    b"MsgID" => b"MsgID",
                    b"Source" => b"Source",
                    b"LocURI" => b"LocURI",
                    _ => b"",
                };
                if stack.is_empty() && name != b"SyncML" {
                    return Err(KeyError::NoHeader);
                }
                if stack.len() == 1 && name != b"SyncHdr" {
                    // The first child of SyncML must be the header.
                    return Err(KeyError::NoHeader);
                }
                stack.push(name);
                if stack.len() > MAX_DEPTH {
                    return Err(KeyError::Malformed("SyncHdr nested too deeply".into()));
                }
            }
            Event::End(_) => {
                if stack.len() == 2 {
                    return Ok(ids);
                }
                stack.pop();
            }
            Event::Text(t) => {
                if let Some(f) = field(&stack) {
                    let raw = std::str::from_utf8(t.into_inner_cow()).map_err(|e| bad(&e))?;
                    push(&mut ids, f, unescape(raw))?;
                }
            }
            Event::CData(t) => {
                if let Some(f) = field(&stack) {
                    let s = std::str::from_utf8(t.into_inner_cow()).map_err(|e| bad(&e))?;
                    push(&mut ids, f, Cow::Borrowed(s))?;
                }
            }
            // An empty <SyncHdr/> has no ids (NoDeviceId follows).
            Event::Empty(e) if stack.len() == 1 && local(e.name().as_ref()) == b"SyncHdr" => return Ok(ids),
            Event::Eof => return Err(KeyError::NoHeader),
            _ => {}
        }
    }
}

/// Bytes of a quick-xml text event, borrowed from the input where possible.
trait IntoInnerCow<'a> {
    fn into_inner_cow(self) -> &'a [u8];
}

impl<'a> IntoInnerCow<'a> for quick_xml::events::BytesText<'a> {
    fn into_inner_cow(self) -> &'a [u8] {
        match self.into_inner() {
            Cow::Borrowed(b) => b,
            // Never produced for a slice reader; refuse rather than leak.
            Cow::Owned(_) => b"",
        }
    }
}

impl<'a> IntoInnerCow<'a> for quick_xml::events::BytesCData<'a> {
    fn into_inner_cow(self) -> &'a [u8] {
        match self.into_inner() {
            Cow::Borrowed(b) => b,
            Cow::Owned(_) => b"",
        }
    }
}

/// Resolves the predefined entities and character references (unknown ones stay literal).
fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let resolved = after
            .bytes()
            .take(12)
            .position(|b| b == b';')
            .and_then(|semi| entity(&after[..semi]).map(|c| (c, semi)));
        match resolved {
            Some((c, semi)) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let n = name.strip_prefix('#')?;
            let code = match n.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => n.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// Walks WBXML tokens up to the SyncHdr's END.
pub fn scan_wbxml(body: &[u8]) -> Result<HeaderIds<'_>, KeyError> {
    let bad = |e: crate::wbxml::WbxmlError| KeyError::Malformed(e.to_string());
    let mut r = WReader::new(body).map_err(bad)?;
    // Token ids on the SyncML page (0) of open elements; 0 for others.
    let mut stack: Vec<u8> = Vec::with_capacity(8);
    let mut ids = HeaderIds::default();
    loop {
        match r.next().map_err(bad)? {
            WEvent::Start(t) => {
                let id = if t.page == 0 && t.literal.is_none() { t.id } else { 0 };
                if stack.is_empty() && id != tok::SYNC_ML {
                    return Err(KeyError::NoHeader);
                }
                if stack.len() == 1 && id != tok::SYNC_HDR {
                    return Err(KeyError::NoHeader);
                }
                if !t.content {
                    if stack.len() == 1 {
                        return Ok(ids);
                    }
                    continue;
                }
                stack.push(id);
                if stack.len() > MAX_DEPTH {
                    return Err(KeyError::Malformed("SyncHdr nested too deeply".into()));
                }
            }
            WEvent::End => {
                if stack.len() == 2 {
                    return Ok(ids);
                }
                stack.pop();
            }
            WEvent::Str(s) => {
                if let Some(f) = wbxml_field(&stack) {
                    push(&mut ids, f, s)?;
                }
            }
            WEvent::Opaque(b) => {
                if let Some(f) = wbxml_field(&stack) {
                    push(&mut ids, f, String::from_utf8_lossy(b))?;
                }
            }
            WEvent::Eof => return Err(KeyError::NoHeader),
        }
    }
}

fn wbxml_field(stack: &[u8]) -> Option<Field> {
    match stack {
        [_, tok::SYNC_HDR, tok::SESSION_ID] => Some(Field::Session),
        [_, tok::SYNC_HDR, tok::MSG_ID] => Some(Field::Msg),
        [_, tok::SYNC_HDR, tok::SOURCE, tok::LOC_URI] => Some(Field::Device),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every client message of every capture, with its encoding.
    fn captures() -> Vec<(std::path::PathBuf, Encoding)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures");
        let mut out = Vec::new();
        let mut dirs = vec![root];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                if p.is_dir() {
                    dirs.push(p);
                } else if name.ends_with("-c2s.xml") {
                    out.push((p, Encoding::Xml));
                } else if name.ends_with("-c2s.wbxml") {
                    out.push((p, Encoding::Wbxml));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn matches_the_full_decoder_on_every_capture() {
        let all = captures();
        assert!(all.len() > 30, "captures found: {}", all.len());
        for (path, enc) in all {
            let body = std::fs::read(&path).unwrap();
            let ids = scan(enc, &body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let msg = crate::server::decode(enc, &body).unwrap();
            assert_eq!(ids.device_id, msg.hdr.source.loc_uri, "{}", path.display());
            assert_eq!(ids.session_id, msg.hdr.session_id, "{}", path.display());
            assert_eq!(ids.msg_id, msg.hdr.msg_id, "{}", path.display());
            assert_eq!(Some(ids.key()), crate::server::route_key(enc, &body), "{}", path.display());
        }
    }

    #[test]
    fn stops_at_the_header() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/captures/xml/02-two-way-add-replace-delete/0003-c2s.xml");
        let body = std::fs::read(path).unwrap();
        let end = body.windows(10).position(|w| w == b"</SyncHdr>").unwrap() + 10;
        // A body cut right after the header (or followed by garbage) still routes.
        let mut cut = body[..end].to_vec();
        cut.extend_from_slice(b"<<<garbage");
        let ids = scan_xml(&cut).unwrap();
        assert_eq!(ids.key(), routing::session_key("sc-harness-capture-xml", "10"));
        assert!(scan_xml(&body[..end - 3]).is_err());
    }

    #[test]
    fn token_wins_and_errors() {
        let xml = b"<SyncML><SyncHdr><SessionID>7</SessionID><MsgID>1</MsgID>\
            <Target><LocURI>http://x/sync</LocURI></Target>\
            <Source><LocURI>dev&amp;1</LocURI></Source></SyncHdr><SyncBody/></SyncML>";
        let ct = Some("application/vnd.syncml+xml; charset=UTF-8");
        let k = request_key("/sync", ct, xml).unwrap();
        assert_eq!(
            k,
            RouteKey { key: routing::session_key("dev&1", "7"), from_token: false, new_session: true }
        );
        let k = request_key("/sync?s=00000000000000ff", None, b"").unwrap();
        assert_eq!(k, RouteKey { key: 255, from_token: true, new_session: false });
        assert_eq!(request_key("/sync?s=bad", None, xml), Err(KeyError::NotSyncMl));
        assert_eq!(request_key("/sync", ct, b"<SyncML><SyncBody/></SyncML>"), Err(KeyError::NoHeader));
        assert!(matches!(request_key("/sync", ct, b"garbage"), Err(KeyError::NoHeader)));
        let no_dev = b"<SyncML><SyncHdr><SessionID>7</SessionID></SyncHdr></SyncML>";
        assert_eq!(request_key("/sync", ct, no_dev), Err(KeyError::NoDeviceId));
        let wb = Some("application/vnd.syncml+wbxml");
        assert!(matches!(request_key("/sync", wb, b"\x02\x00"), Err(KeyError::Malformed(_))));
        assert!(matches!(request_key("/sync", wb, b""), Err(KeyError::Malformed(_))));
    }

    #[test]
    fn header_ids_and_string_table_references_are_bounded() {
        let xml = |dev: &str| {
            format!(
                "<SyncML><SyncHdr><SessionID>7</SessionID><MsgID>1</MsgID>\
                 <Source><LocURI>{dev}</LocURI></Source></SyncHdr><SyncBody/></SyncML>"
            )
        };
        assert!(scan_xml(xml(&"d".repeat(256)).as_bytes()).is_ok());
        assert_eq!(
            scan_xml(xml(&"d".repeat(4 << 20)).as_bytes()),
            Err(KeyError::TooLong { field: "Source/LocURI", limit: 256 })
        );
        // Split into chunks (CDATA + text), the sum counts.
        let split = xml(&format!("<![CDATA[{}]]>{}", "d".repeat(200), "d".repeat(100)));
        assert!(matches!(scan_xml(split.as_bytes()), Err(KeyError::TooLong { .. })));
        // WBXML: a SessionID made of string-table references stops at its cap…
        let mut tbl = vec![b'7'; 60_000];
        tbl.push(0);
        let wbxml = |field: u8, refs: usize| {
            let mut doc = vec![0x02, 0xA4, 0x01, 0x6A];
            // mb_u_int32 of the table length (60,001: three 7-bit groups).
            let n = tbl.len();
            doc.extend_from_slice(&[
                0x80 | (n >> 14) as u8,
                0x80 | ((n >> 7) & 0x7F) as u8,
                (n & 0x7F) as u8,
            ]);
            doc.extend_from_slice(&tbl);
            doc.extend_from_slice(&[0x6D, 0x6C, field]); // SyncML, SyncHdr, field
            for _ in 0..refs {
                doc.extend_from_slice(&[0x83, 0x00]);
            }
            doc.extend_from_slice(&[0x01, 0x01, 0x01]);
            doc
        };
        assert_eq!(
            scan_wbxml(&wbxml(0x40 | tok::SESSION_ID, 1)),
            Err(KeyError::TooLong { field: "SessionID", limit: 64 })
        );
        // …and references in fields the scan does not keep spend the budget.
        match scan_wbxml(&wbxml(0x40 | tok::VER_DTD, 1_000)) {
            Err(KeyError::Malformed(m)) => assert!(m.contains("string-table bytes"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
