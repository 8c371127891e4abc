//! Item content helpers: twin matching keys for slow syncs and field-level
//! merging of vCard / iCalendar items for conflict resolution.
//!
//! Items are treated as "content lines" (RFC 6350 / RFC 5545 / vCard 2.1
//! syntax): `NAME;PARAMS:VALUE`, folded with CRLF + white space. Plain-text
//! notes are compared as whole texts.

use std::borrow::Cow;

use xxhash_rust::xxh64::{xxh64, Xxh64};

/// Properties that change on every save without changing the item's meaning.
const VOLATILE: &[&str] = &["REV", "PRODID", "DTSTAMP", "LAST-MODIFIED", "X-EVOLUTION-FILE-AS", "SEQUENCE"];

/// The logical lines of a content-line text, borrowed where no unfolding
/// was needed: CRLF/LF followed by a space or tab continues a line, a vCard
/// 2.1 quoted-printable line ending in `=` continues on the next, and blank
/// lines are skipped. Line ends are not part of the lines.
pub fn lines(text: &str) -> Lines<'_> {
    Lines { physical: text.split('\n').peekable() }
}

/// Iterator of [`lines`].
pub struct Lines<'a> {
    physical: std::iter::Peekable<std::str::Split<'a, char>>,
}

impl<'a> Lines<'a> {
    /// The next line with its folded continuations joined.
    fn unfolded(&mut self) -> Option<Cow<'a, str>> {
        let raw = self.physical.next()?;
        let mut line = Cow::Borrowed(raw.strip_suffix('\r').unwrap_or(raw));
        while let Some(next) = self.physical.peek() {
            let next = next.strip_suffix('\r').unwrap_or(next);
            match next.strip_prefix([' ', '\t']) {
                Some(rest) => {
                    line.to_mut().push_str(rest);
                    self.physical.next();
                }
                None => break,
            }
        }
        Some(line)
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Cow<'a, str>;

    fn next(&mut self) -> Option<Cow<'a, str>> {
        loop {
            let mut line = self.unfolded()?;
            // Quoted-printable soft line breaks (rare: only checked on a trailing '=').
            while line.ends_with('=') && contains_ignore_case(&line, "QUOTED-PRINTABLE") {
                let Some(next) = self.unfolded() else { break };
                let joined = line.to_mut();
                joined.pop();
                joined.push_str(&next);
            }
            if !line.trim().is_empty() {
                return Some(line);
            }
        }
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Unfolds content lines (see [`lines`]) into owned strings.
pub fn unfold(text: &str) -> Vec<String> {
    lines(text).map(Cow::into_owned).collect()
}

/// The property name of a content line as written (without group prefix).
fn raw_prop_name(line: &str) -> &str {
    let end = line.find([';', ':']).unwrap_or(line.len());
    let name = &line[..end];
    name.rsplit('.').next().unwrap_or(name)
}

/// The property name of a content line (upper-cased, without group prefix).
pub fn prop_name(line: &str) -> String {
    raw_prop_name(line).to_ascii_uppercase()
}

/// Properties left out of twin matching.
fn is_volatile(name: &str) -> bool {
    const EVOLUTION: &[u8] = b"X-EVOLUTION";
    VOLATILE.iter().any(|v| v.eq_ignore_ascii_case(name))
        || name.as_bytes().get(..EVOLUTION.len()).is_some_and(|p| p.eq_ignore_ascii_case(EVOLUTION))
}

fn is_structured(text: &str) -> bool {
    // Compared as bytes: the 6th byte may sit inside a multi-byte character
    // (a note starting "Hello😀"), where slicing the str would panic.
    text.trim_start().as_bytes().get(..6).is_some_and(|p| p.eq_ignore_ascii_case(b"BEGIN:"))
}

/// A hash of the item's normalized content: equal for two copies of the same
/// contact or event even if folding, line ends, property order or volatile
/// properties (REV, PRODID, ...) differ. Computed for every item of a slow
/// sync, so it hashes borrowed lines and allocates only the per-line hashes.
pub fn twin_key(data: &[u8]) -> u64 {
    let text = match std::str::from_utf8(data) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(data),
    };
    if !is_structured(&text) {
        return match text.contains("\r\n") {
            true => xxh64(text.replace("\r\n", "\n").trim_end().as_bytes(), 1),
            false => xxh64(text.trim_end().as_bytes(), 1),
        };
    }
    let mut normalized = String::new();
    let mut hashes: Vec<u64> = Vec::with_capacity(32);
    for line in lines(&text) {
        if is_volatile(raw_prop_name(&line)) {
            continue;
        }
        // Property names and parameters are case-insensitive; values are not.
        normalized.clear();
        match line.split_once(':') {
            Some((head, value)) => {
                normalized.push_str(head);
                normalized.make_ascii_uppercase();
                normalized.push(':');
                normalized.push_str(value.trim_end());
            }
            None => {
                normalized.push_str(&line);
                normalized.make_ascii_uppercase();
            }
        }
        hashes.push(xxh64(normalized.as_bytes(), 2));
    }
    // Order-independent: the sorted multiset of line hashes.
    hashes.sort_unstable();
    let mut h = Xxh64::new(2);
    for x in &hashes {
        h.update(&x.to_le_bytes());
    }
    h.digest()
}

/// What identifies an item across devices for twin matching: its `UID` and,
/// for an exception of a recurring event, its `RECURRENCE-ID`, so that an
/// exception is never taken for its master (they share the UID).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UidKey {
    /// The `UID` value.
    pub uid: String,
    /// The `RECURRENCE-ID` value of the same component, if any.
    pub recurrence_id: Option<String>,
}

/// The properties of one component (`BEGIN:` .. `END:`) that identify it.
#[derive(Default)]
struct Identity {
    uid: Option<String>,
    recurrence_id: Option<String>,
    modified: Option<String>,
}

/// The identity of the first component of an item that has a `UID` (the
/// VEVENT/VTODO of a calendar, the VCARD of a contact); `None` for plain
/// text and items without a UID.
fn identity(data: &[u8]) -> Option<Identity> {
    let text = std::str::from_utf8(data).ok()?;
    if !is_structured(text) {
        return None;
    }
    let value =
        |line: &str| line.split_once(':').map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty());
    // One frame per open component: properties belong to the innermost one.
    let mut stack: Vec<Identity> = Vec::new();
    for line in lines(text) {
        let name = raw_prop_name(&line);
        if name.eq_ignore_ascii_case("BEGIN") {
            stack.push(Identity::default());
        } else if name.eq_ignore_ascii_case("END") {
            if let Some(done) = stack.pop().filter(|f| f.uid.is_some()) {
                return Some(done);
            }
        } else if let Some(top) = stack.last_mut() {
            if name.eq_ignore_ascii_case("UID") {
                top.uid = top.uid.take().or_else(|| value(&line));
            } else if name.eq_ignore_ascii_case("RECURRENCE-ID") {
                top.recurrence_id = top.recurrence_id.take().or_else(|| value(&line));
            } else if name.eq_ignore_ascii_case("LAST-MODIFIED")
                || (name.eq_ignore_ascii_case("REV") && top.modified.is_none())
            {
                top.modified = value(&line);
            }
        }
    }
    // Unterminated components: the innermost one with a UID.
    stack.into_iter().rev().find(|f| f.uid.is_some())
}

/// The twin-matching key of an item: (UID, RECURRENCE-ID) of its first
/// component with a UID.
pub fn uid_key(data: &[u8]) -> Option<UidKey> {
    let id = identity(data)?;
    Some(UidKey { uid: id.uid?, recurrence_id: id.recurrence_id })
}

/// Which of two versions of one item was modified later, by the
/// `LAST-MODIFIED` (vCard: `REV`) of the component carrying the UID,
/// compared as UTC timestamps (digits only, so `20240101T100000Z` and
/// `2024-01-01T10:00:00Z` compare equal). `None` when either lacks it or
/// the two are not comparable.
pub fn newer(a: &[u8], b: &[u8]) -> Option<std::cmp::Ordering> {
    let stamp = |data: &[u8]| -> Option<String> {
        let m = identity(data)?.modified?;
        // Only UTC stamps compare across devices.
        m.ends_with(['Z', 'z']).then(|| m.chars().filter(char::is_ascii_digit).collect())
    };
    let (a, b) = (stamp(a)?, stamp(b)?);
    (a.len() == b.len()).then(|| a.cmp(&b))
}

/// Merges two versions of a structured item field by field: the client's
/// version is the base; properties the server version has and the client's
/// lacks are added. Returns `None` when the items cannot be merged (plain
/// text, different object kinds, or nested components on both sides that
/// differ), in which case the caller falls back to server-wins.
pub fn merge(client: &[u8], server: &[u8]) -> Option<Vec<u8>> {
    let c = std::str::from_utf8(client).ok()?;
    let s = std::str::from_utf8(server).ok()?;
    if !is_structured(c) || !is_structured(s) {
        return None;
    }
    let cl = unfold(c);
    let sl = unfold(s);
    // Only merge single-component items: a vCard, or a calendar with one
    // VEVENT/VTODO and no further nested components that differ.
    let kinds = |ls: &[String]| -> Vec<String> {
        ls.iter().filter(|l| prop_name(l) == "BEGIN").map(|l| l.to_ascii_uppercase()).collect()
    };
    if kinds(&cl) != kinds(&sl) {
        return None;
    }
    let depth_props = |ls: &[String]| -> Vec<(usize, String)> {
        let mut depth = 0usize;
        let mut out = Vec::new();
        for l in ls {
            let n = prop_name(l);
            if n == "BEGIN" {
                depth += 1;
            }
            out.push((depth, n.clone()));
            if n == "END" {
                depth = depth.saturating_sub(1);
            }
        }
        out
    };
    let cd = depth_props(&cl);
    let sd = depth_props(&sl);
    let innermost = cd.iter().map(|(d, _)| *d).max().unwrap_or(0);
    let present: std::collections::HashSet<&str> =
        cd.iter().filter(|(d, _)| *d == innermost).map(|(_, n)| n.as_str()).collect();
    let additions: Vec<&String> = sl
        .iter()
        .zip(sd.iter())
        .filter(|(_, (d, n))| *d == innermost && n != "BEGIN" && n != "END" && !present.contains(n.as_str()))
        .map(|(l, _)| l)
        .filter(|l| !VOLATILE.contains(&prop_name(l).as_str()))
        .collect();
    // Insert the additions before the END of the innermost component.
    let mut out = Vec::with_capacity(cl.len() + additions.len());
    let mut inserted = false;
    for (line, (d, n)) in cl.iter().zip(cd.iter()) {
        if !inserted && n == "END" && *d == innermost {
            for a in &additions {
                out.push((*a).clone());
            }
            inserted = true;
        }
        out.push(line.clone());
    }
    let mut text = out.join("\r\n");
    text.push_str("\r\n");
    Some(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_ignore_order_folding_and_rev() {
        let a = b"BEGIN:VCARD\r\nVERSION:3.0\r\nREV:1\r\nN:Doe;John\r\nTEL:123\r\nEND:VCARD\r\n";
        let b = b"BEGIN:VCARD\nVERSION:3.0\nTEL:1\n 23\nN:Doe;John\nREV:2\nEND:VCARD\n";
        assert_eq!(twin_key(a), twin_key(b));
        let c = b"BEGIN:VCARD\nVERSION:3.0\nTEL:124\nN:Doe;John\nEND:VCARD\n";
        assert_ne!(twin_key(a), twin_key(c));
    }

    #[test]
    fn merge_adds_missing_fields() {
        let client = b"BEGIN:VCARD\r\nVERSION:3.0\r\nN:Doe;John\r\nTEL:1\r\nEND:VCARD\r\n";
        let server = b"BEGIN:VCARD\r\nVERSION:3.0\r\nN:Doe;Johnny\r\nEMAIL:j@x\r\nEND:VCARD\r\n";
        let m = String::from_utf8(merge(client, server).unwrap()).unwrap();
        assert!(m.contains("N:Doe;John\r\n"));
        assert!(m.contains("EMAIL:j@x\r\nEND:VCARD"));
        assert!(merge(b"note", b"other").is_none());
    }

    #[test]
    fn lines_unfold_folding_quoted_printable_and_blank_lines() {
        let text = " lead\r\nN:Doe;\r\n  John\r\n\r\nNOTE;ENCODING=QUOTED-PRINTABLE:a=\r\nb=\r\nc\r\nTEL:1\n\t2\nEND";
        let got: Vec<String> = unfold(text);
        assert_eq!(got, vec![" lead", "N:Doe; John", "NOTE;ENCODING=QUOTED-PRINTABLE:abc", "TEL:12", "END"]);
        assert!(
            matches!(lines("A:1\r\nB:2").next(), Some(Cow::Borrowed("A:1"))),
            "unfolded lines are borrowed"
        );
        // A QP soft break at the very end stays as written.
        assert_eq!(unfold("X;QUOTED-PRINTABLE:a="), vec!["X;QUOTED-PRINTABLE:a="]);
        assert_eq!(unfold("X:a="), vec!["X:a="]);
    }

    #[test]
    fn twin_keys_normalize_case_groups_and_volatile_properties() {
        let a = b"BEGIN:VCARD\r\nVERSION:3.0\r\nitem1.X-EVOLUTION-FOO:1\r\nPRODID:x\r\ntel;type=cell:123 \r\nEND:VCARD\r\n";
        let b = b"BEGIN:VCARD\nTEL;TYPE=CELL:123\nVERSION:3.0\nEND:VCARD";
        assert_eq!(twin_key(a), twin_key(b));
        // Values stay case-sensitive, and a line counts as often as it occurs.
        let c = b"BEGIN:VCARD\nTEL;TYPE=CELL:123\nVERSION:3.0\nEND:vcard";
        assert_ne!(twin_key(b), twin_key(c));
        let d = b"BEGIN:VCARD\nTEL;TYPE=CELL:123\nTEL;TYPE=CELL:123\nVERSION:3.0\nEND:VCARD";
        assert_ne!(twin_key(b), twin_key(d));
        // Plain text: line ends and trailing white space do not matter.
        assert_eq!(twin_key(b"note\r\ntwo\r\n"), twin_key(b"note\ntwo"));
        assert_ne!(twin_key(b"note two"), twin_key(b"note\ntwo"));
        // Invalid UTF-8 is compared lossily, never rejected.
        assert_eq!(twin_key(b"BEGIN:VCARD\nN:\xff\nEND:VCARD"), twin_key(b"BEGIN:VCARD\nN:\xfe\nEND:VCARD"));
    }

    #[test]
    fn multi_byte_text_at_every_boundary_never_panics() {
        // Each prefix length puts a cut inside an emoji or a CJK character
        // somewhere, including at byte 6 where `is_structured` looks.
        let samples = [
            "Hello😀 world",
            "😀😀😀",
            "日本語のメモ",
            "BEGIN:😀\nEND:😀",
            "BEGIN:VCARD\nN:山田;太郎\nNOTE:😀\nEND:VCARD",
        ];
        for s in samples {
            for end in 0..=s.len() {
                let Some(t) = s.get(..end) else { continue };
                let _ = twin_key(t.as_bytes());
                let _ = uid_key(t.as_bytes());
                let _ = uid_key(t.as_bytes());
                let _ = newer(t.as_bytes(), s.as_bytes());
                let _ = merge(t.as_bytes(), s.as_bytes());
                let _ = unfold(t);
                let _ = prop_name(t);
            }
            // Also cut as raw bytes (invalid UTF-8 at the end).
            for end in 0..=s.len() {
                let _ = twin_key(&s.as_bytes()[..end]);
                let _ = uid_key(&s.as_bytes()[..end]);
            }
        }
        assert!(!is_structured("Hello😀"));
        assert!(!is_structured("日本語"));
        assert!(is_structured("  begin:VCARD"));
        assert_eq!(twin_key("Hello😀\r\n".as_bytes()), twin_key("Hello😀".as_bytes()));
        assert_eq!(
            uid_key("BEGIN:VCALENDAR\nUID:日本😀\nEND:VCALENDAR".as_bytes()).map(|k| k.uid),
            Some("日本😀".into())
        );
    }

    #[test]
    fn uid_keys_tell_exceptions_from_their_master() {
        let master = b"BEGIN:VCALENDAR\r\nBEGIN:VTIMEZONE\r\nTZID:X\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:u1\r\nRRULE:FREQ=WEEKLY\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:u1\r\nRECURRENCE-ID:20240108T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let exception = b"BEGIN:VCALENDAR\nBEGIN:VEVENT\nRECURRENCE-ID;TZID=X:20240108T110000\nUID:u1\nEND:VEVENT\nEND:VCALENDAR\n";
        // A master with its exceptions in one item is keyed by the master.
        assert_eq!(uid_key(master), Some(UidKey { uid: "u1".into(), recurrence_id: None }));
        assert_eq!(
            uid_key(exception),
            Some(UidKey { uid: "u1".into(), recurrence_id: Some("20240108T110000".into()) })
        );
        assert_eq!(
            uid_key(b"BEGIN:VCARD\nUID:c1\nEND:VCARD"),
            Some(UidKey { uid: "c1".into(), recurrence_id: None })
        );
        assert_eq!(uid_key(b"BEGIN:VCARD\nN:x\nEND:VCARD"), None);
        assert_eq!(uid_key(b"UID:plain text"), None);
        // Unterminated: still found.
        assert_eq!(uid_key(b"BEGIN:VTODO\nUID:t").map(|k| k.uid), Some("t".into()));
    }

    #[test]
    fn newer_compares_utc_modification_stamps() {
        use std::cmp::Ordering::*;
        let ev = |m: &str| format!("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:u\n{m}\nEND:VEVENT\nEND:VCALENDAR\n");
        let (a, b) = (ev("LAST-MODIFIED:20260101T100000Z"), ev("LAST-MODIFIED:20260101T100001Z"));
        assert_eq!(newer(a.as_bytes(), b.as_bytes()), Some(Less));
        assert_eq!(newer(b.as_bytes(), a.as_bytes()), Some(Greater));
        assert_eq!(newer(a.as_bytes(), a.as_bytes()), Some(Equal));
        let card = |rev: &str| format!("BEGIN:VCARD\nUID:u\nREV:{rev}\nEND:VCARD\n");
        assert_eq!(newer(card("2026-01-01T10:00:00Z").as_bytes(), a.as_bytes()), Some(Equal));
        // Floating times and missing stamps do not compare.
        assert_eq!(newer(ev("LAST-MODIFIED:20260101T100000").as_bytes(), b.as_bytes()), None);
        assert_eq!(newer(ev("SUMMARY:x").as_bytes(), b.as_bytes()), None);
    }

    #[test]
    fn uid_found() {
        assert_eq!(
            uid_key(b"BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:abc\nEND:VEVENT\nEND:VCALENDAR\n").map(|k| k.uid),
            Some("abc".into())
        );
    }
}
