//! Item content helpers: twin matching keys for slow syncs and field-level
//! merging of vCard / iCalendar items for conflict resolution.
//!
//! Items are treated as "content lines" (RFC 6350 / RFC 5545 / vCard 2.1
//! syntax): `NAME;PARAMS:VALUE`, folded with CRLF + white space. Plain-text
//! notes are compared as whole texts.

use xxhash_rust::xxh64::xxh64;

/// Properties that change on every save without changing the item's meaning.
const VOLATILE: &[&str] = &["REV", "PRODID", "DTSTAMP", "LAST-MODIFIED", "X-EVOLUTION-FILE-AS", "SEQUENCE"];

/// Unfolds content lines (CRLF/LF followed by space or tab continues a line)
/// and returns the logical lines without line ends.
pub fn unfold(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = line.strip_prefix([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.push_str(rest);
                continue;
            }
        }
        out.push(line.to_string());
    }
    // vCard 2.1 quoted-printable soft line breaks: a line ending in '=' continues.
    let mut merged: Vec<String> = Vec::with_capacity(out.len());
    let mut qp_continue = false;
    for line in out {
        if qp_continue {
            if let Some(last) = merged.last_mut() {
                last.pop(); // the '='
                last.push_str(&line);
                qp_continue = last.ends_with('=') && last.to_ascii_uppercase().contains("QUOTED-PRINTABLE");
                continue;
            }
        }
        qp_continue = line.ends_with('=') && line.to_ascii_uppercase().contains("QUOTED-PRINTABLE");
        merged.push(line);
    }
    merged.retain(|l| !l.trim().is_empty());
    merged
}

/// The property name of a content line (upper-cased, without group prefix).
pub fn prop_name(line: &str) -> String {
    let end = line.find([';', ':']).unwrap_or(line.len());
    let name = &line[..end];
    let name = name.rsplit('.').next().unwrap_or(name);
    name.to_ascii_uppercase()
}

fn is_structured(text: &str) -> bool {
    let t = text.trim_start();
    t.len() >= 6 && t[..6].eq_ignore_ascii_case("BEGIN:")
}

/// A hash of the item's normalized content: equal for two copies of the same
/// contact or event even if folding, line ends, property order or volatile
/// properties (REV, PRODID, ...) differ.
pub fn twin_key(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    if !is_structured(&text) {
        let norm: String = text.replace("\r\n", "\n");
        return xxh64(norm.trim_end().as_bytes(), 1);
    }
    let mut lines: Vec<String> = unfold(&text)
        .into_iter()
        .filter(|l| {
            let n = prop_name(l);
            !VOLATILE.contains(&n.as_str()) && !n.starts_with("X-EVOLUTION")
        })
        .map(|l| {
            // Property names and parameters are case-insensitive; values are not.
            match l.find(':') {
                Some(i) => format!("{}:{}", l[..i].to_ascii_uppercase(), l[i + 1..].trim_end()),
                None => l.to_ascii_uppercase(),
            }
        })
        .collect();
    lines.sort();
    xxh64(lines.join("\n").as_bytes(), 2)
}

/// The `UID` of an iCalendar/vCalendar/vCard item, if any.
pub fn uid(data: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    if !is_structured(text) {
        return None;
    }
    unfold(text)
        .into_iter()
        .find(|l| prop_name(l) == "UID")
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        .filter(|v| !v.is_empty())
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
    fn uid_found() {
        assert_eq!(
            uid(b"BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:abc\nEND:VEVENT\nEND:VCALENDAR\n"),
            Some("abc".into())
        );
    }
}
