//! Normalized comparison of PIM items (vCard 2.1/3.0, iCalendar 2.0, vCalendar 1.0, text).
//!
//! Two renderings of the same item differ in ways that do not matter: line endings and folding,
//! property and parameter order, case of names, `CHARSET`/`ENCODING` (quoted-printable and base64
//! are decoded), vCard 2.1 bare parameters (`TEL;CELL` = `TEL;TYPE=CELL`), trailing empty
//! components of structured values, text escaping, and properties a server or client adds or
//! rewrites on every write (`REV`, `PRODID`, `DTSTAMP`, `LAST-MODIFIED`, `CREATED`, `X-*`).
//! Everything else must match. `UID` is kept for iCalendar items (it is their identity) and
//! dropped for vCards (SyncEvolution's engine adds or drops it on its own).
//!
//! Comparison is for items of the same version; directories are compared as multisets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;

use super::items::list_items;
use super::syncevo::Kind;

/// Properties that say nothing about the content.
const VOLATILE: &[&str] = &["REV", "PRODID", "DTSTAMP", "LAST-MODIFIED", "CREATED", "X-", "SEQUENCE"];

/// An item in normalized form: sorted, canonical content lines.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NormItem {
    pub lines: Vec<String>,
}

impl NormItem {
    /// A short label (FN / SUMMARY / first text line) for messages.
    pub fn label(&self) -> String {
        for want in ["FN", "VEVENT/SUMMARY", "VTODO/SUMMARY", "TEXT"] {
            if let Some(l) = self.lines.iter().find(|l| l.starts_with(&format!("{want}:"))) {
                return clip(l, 80);
            }
        }
        self.lines.first().map(|l| clip(l, 80)).unwrap_or_default()
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}… ({} chars)", s.chars().count())
    }
}

/// Normalizes one item of `kind`.
pub fn normalize(kind: Kind, content: &str) -> NormItem {
    match kind {
        Kind::Notes => normalize_text(content),
        Kind::Contacts | Kind::Contacts21 => normalize_directory(content, false),
        _ => normalize_directory(content, true),
    }
}

fn normalize_text(content: &str) -> NormItem {
    let text = content.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end()).collect();
    let joined = lines.join("\n");
    NormItem { lines: vec![format!("TEXT:{}", joined.trim_end())] }
}

/// Joins folded lines (RFC 2425 folding, and vCard 2.1 quoted-printable soft line breaks).
fn unfold(content: &str) -> Vec<String> {
    let text = content.replace("\r\n", "\n").replace('\r', "\n");
    let mut out: Vec<String> = Vec::new();
    let mut qp_continues = false;
    for raw in text.split('\n') {
        if qp_continues {
            let last = out.last_mut().expect("continuation after a line");
            last.pop(); // the soft-break '='
            last.push_str(raw);
        } else if (raw.starts_with(' ') || raw.starts_with('\t')) && !out.is_empty() {
            let last = out.last_mut().expect("continuation after a line");
            last.push_str(&raw[1..]);
        } else if raw.trim().is_empty() {
            continue;
        } else {
            out.push(raw.to_owned());
        }
        let last = out.last().map(String::as_str).unwrap_or("");
        let is_qp = last.split(':').next().unwrap_or("").to_ascii_uppercase().contains("QUOTED-PRINTABLE");
        qp_continues = is_qp && last.ends_with('=');
    }
    out
}

/// Splits `name;params:value` at the first colon outside double quotes.
fn split_line(line: &str) -> (&str, &str) {
    let mut in_quotes = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ':' if !in_quotes => return (&line[..i], &line[i + 1..]),
            _ => {}
        }
    }
    (line, "")
}

fn decode_qp(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() + 1 {
            let hex = value.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unescape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') | Some('N') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn normalize_value(name: &str, value: &str) -> String {
    let v = value.replace("\r\n", "\n");
    let v = match name {
        // structured values: drop trailing empty components
        "N" | "ADR" | "ORG" => {
            let trimmed = v.trim_end_matches(';');
            trimmed.to_owned()
        }
        _ => v,
    };
    let v = unescape_text(&v);
    let v = v.trim();
    if DATES.contains(&name) && v.chars().all(|c| c.is_ascii_digit() || "-:TZ".contains(c)) {
        // 1970-03-28 == 19700328, 2026-01-01T10:00:00Z == 20260101T100000Z
        return v.replace(['-', ':'], "");
    }
    v.to_owned()
}

/// vCalendar 1.0 time-zone properties that only restate UTC.
fn is_utc_only_timezone(name: &str, value: &str) -> bool {
    match name {
        "TZ" => matches!(value, "+00:00" | "+0000" | "Z" | "+00" | "-00:00"),
        "DAYLIGHT" => value.eq_ignore_ascii_case("FALSE"),
        _ => false,
    }
}

/// Properties whose values are dates or date-times.
const DATES: &[&str] =
    &["BDAY", "ANNIVERSARY", "DTSTART", "DTEND", "DUE", "COMPLETED", "RECURRENCE-ID", "EXDATE"];

fn normalize_directory(content: &str, keep_uid: bool) -> NormItem {
    let mut lines = Vec::new();
    let mut path: Vec<String> = Vec::new();
    for line in unfold(content) {
        let (head, value) = split_line(&line);
        let mut parts = head.split(';');
        let mut name = parts.next().unwrap_or("").trim().to_ascii_uppercase();
        if let Some((_, n)) = name.split_once('.') {
            name = n.to_owned(); // drop vCard groups (item1.TEL)
        }
        match name.as_str() {
            "BEGIN" => {
                let comp = value.trim().to_ascii_uppercase();
                if !(path.is_empty() && matches!(comp.as_str(), "VCARD" | "VCALENDAR")) {
                    path.push(comp);
                }
                continue;
            }
            "END" => {
                if !path.is_empty() {
                    path.pop();
                }
                continue;
            }
            _ => {}
        }
        if VOLATILE.iter().any(|v| if v.ends_with('-') { name.starts_with(v) } else { name == *v }) {
            continue;
        }
        if name == "UID" && !keep_uid {
            continue;
        }
        let mut types: Vec<String> = Vec::new();
        let mut params: Vec<String> = Vec::new();
        let mut encoding = String::new();
        for p in parts {
            let (pname, pval) = match p.split_once('=') {
                Some((n, v)) => (n.trim().to_ascii_uppercase(), v.trim().trim_matches('"').to_owned()),
                None => ("TYPE".to_owned(), p.trim().to_owned()),
            };
            match pname.as_str() {
                "CHARSET" => {}
                "ENCODING" => encoding = pval.to_ascii_uppercase(),
                "TYPE" => types
                    .extend(pval.split(',').map(|t| t.trim().to_ascii_uppercase()).filter(|t| !t.is_empty())),
                "VALUE" if pval.eq_ignore_ascii_case("DATE-TIME") || pval.eq_ignore_ascii_case("TEXT") => {}
                _ => params.push(format!("{pname}={}", pval)),
            }
        }
        // encodings (quoted-printable decoded; base64 canonicalized)
        let raw_value;
        let value = match encoding.as_str() {
            "QUOTED-PRINTABLE" => {
                raw_value = decode_qp(value);
                raw_value.as_str()
            }
            "B" | "BASE64" => {
                let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
                let decoded = base64::engine::general_purpose::STANDARD.decode(compact.as_bytes());
                raw_value = match decoded {
                    Ok(bytes) => format!(
                        "base64[{}]:{}",
                        bytes.len(),
                        base64::engine::general_purpose::STANDARD.encode(bytes)
                    ),
                    Err(_) => format!("bad-base64:{compact}"),
                };
                raw_value.as_str()
            }
            _ => value,
        };
        let value = if matches!(encoding.as_str(), "B" | "BASE64") {
            value.to_owned()
        } else {
            normalize_value(&name, value)
        };
        if value.trim_matches(';').is_empty() {
            continue; // an empty property is the same as none
        }
        if path.is_empty() && is_utc_only_timezone(&name, &value) {
            continue; // vCalendar 1.0 "TZ:+00:00" / "DAYLIGHT:FALSE" with UTC times says nothing
        }
        types.sort();
        types.dedup();
        params.sort();
        let mut out = String::new();
        for comp in &path {
            out.push_str(comp);
            out.push('/');
        }
        out.push_str(&name);
        if !types.is_empty() {
            let _ = write!(out, ";TYPE={}", types.join(","));
        }
        for p in &params {
            out.push(';');
            out.push_str(p);
        }
        out.push(':');
        out.push_str(&value);
        lines.push(out);
    }
    lines.sort();
    NormItem { lines }
}

/// Normalizes an item for comparison with the same item in the other version of its format
/// (vCard 2.1 with 3.0, vCalendar 1.0 with iCalendar 2.0): on top of [`normalize`], the
/// `VERSION` is dropped and values that the two versions spell differently are mapped to one
/// spelling (vCalendar's `NEEDS ACTION` status, and priorities, which vCalendar 1.0 only knows
/// as 1 high, 2 normal, 3 low).
pub fn normalize_across(kind: Kind, content: &str) -> NormItem {
    let item = normalize(kind, content);
    let ical = matches!(kind, Kind::Calendar | Kind::Tasks);
    let mut lines: Vec<String> = item
        .lines
        .into_iter()
        .filter(|l| !(l.starts_with("VERSION:") || l.starts_with("VERSION;")))
        .map(|l| {
            let (head, value) = l.split_once(':').unwrap_or((&l, ""));
            let prop = head.rsplit('/').next().unwrap_or(head).split(';').next().unwrap_or("");
            match prop {
                "STATUS" => format!("{head}:{}", value.replace(' ', "-")),
                "PRIORITY" if ical => {
                    let class = match value.parse::<u32>() {
                        Ok(1..=4) => "1",
                        Ok(5) => "2",
                        Ok(6..=9) => "3",
                        _ => value,
                    };
                    format!("{head}:{class}")
                }
                _ => l,
            }
        })
        .collect();
    lines.sort();
    NormItem { lines }
}

/// Compares two data dirs holding the same items in different versions of a format.
pub fn compare_dirs_across(
    left_kind: Kind,
    left: &Path,
    right_kind: Kind,
    right: &Path,
) -> Result<(), String> {
    let load = |kind: Kind, dir: &Path| -> Vec<(String, NormItem)> {
        list_items(dir)
            .into_iter()
            .map(|name| {
                let bytes = std::fs::read(dir.join(&name)).expect("read item");
                let item = normalize_across(kind, &String::from_utf8_lossy(&bytes));
                (name, item)
            })
            .collect()
    };
    let l = load(left_kind, left);
    let r = load(right_kind, right);
    compare_sets(
        left_kind,
        &format!("{} ({})", left.display(), left_kind.name()),
        &l,
        &format!("{} ({})", right.display(), right_kind.name()),
        &r,
    )
}

/// Reads and normalizes every item in a data dir.
pub fn load_dir(kind: Kind, dir: &Path) -> Vec<(String, NormItem)> {
    list_items(dir)
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let item = normalize(kind, &String::from_utf8_lossy(&bytes));
            (name, item)
        })
        .collect()
}

/// Compares two sets of named items as multisets; `Err` holds a readable report.
pub fn compare_sets(
    kind: Kind,
    left_label: &str,
    left: &[(String, NormItem)],
    right_label: &str,
    right: &[(String, NormItem)],
) -> Result<(), String> {
    for (name, item) in left.iter().chain(right) {
        // an item that normalizes to nothing would compare equal to any other
        assert!(!item.lines.is_empty(), "{name}: item has no content after normalization");
    }
    let mut counts: BTreeMap<&NormItem, i64> = BTreeMap::new();
    for (_, item) in left {
        *counts.entry(item).or_default() += 1;
    }
    for (_, item) in right {
        *counts.entry(item).or_default() -= 1;
    }
    if counts.values().all(|c| *c == 0) {
        return Ok(());
    }
    let only_left: Vec<&(String, NormItem)> =
        left.iter().filter(|(_, it)| counts.get(it).copied().unwrap_or(0) > 0).collect();
    let only_right: Vec<&(String, NormItem)> =
        right.iter().filter(|(_, it)| counts.get(it).copied().unwrap_or(0) < 0).collect();
    let mut report = format!(
        "{} items differ: {left_label} has {} items, {right_label} has {}; {} only in {left_label}, {} only in {right_label}\n",
        kind.name(),
        left.len(),
        right.len(),
        only_left.len(),
        only_right.len()
    );
    const MAX_SHOWN: usize = 8;
    for (name, item) in only_left.iter().take(MAX_SHOWN) {
        describe(&mut report, '<', left_label, name, item, right_label, right);
    }
    for (name, item) in only_right.iter().take(MAX_SHOWN) {
        describe(&mut report, '>', right_label, name, item, left_label, left);
    }
    if only_left.len() > MAX_SHOWN || only_right.len() > MAX_SHOWN {
        let _ = writeln!(report, "\n(first {MAX_SHOWN} differences shown)");
    }
    Err(report)
}

/// One unmatched item: an extra copy of an item the other side has, or a line diff against the
/// most similar item on the other side.
fn describe(
    report: &mut String,
    mark: char,
    label: &str,
    name: &str,
    item: &NormItem,
    other_label: &str,
    others: &[(String, NormItem)],
) {
    if others.iter().any(|(_, o)| o == item) {
        let _ = writeln!(report, "\n{mark} extra copy in {label}: {name}: {} (duplicated)", item.label());
        return;
    }
    let _ = writeln!(report, "\n{mark} only in {label}: {name}: {}", item.label());
    let best = others.iter().max_by_key(|(_, o)| o.lines.iter().filter(|l| item.lines.contains(l)).count());
    match best {
        Some((other_name, other)) => {
            let _ = writeln!(report, "  closest in {other_label}: {other_name}");
            for l in item.lines.iter().filter(|l| !other.lines.contains(l)) {
                let _ = writeln!(report, "  {mark} {}", clip(l, 160));
            }
            let back = if mark == '<' { '>' } else { '<' };
            for l in other.lines.iter().filter(|l| !item.lines.contains(l)) {
                let _ = writeln!(report, "  {back} {}", clip(l, 160));
            }
        }
        None => {
            for l in &item.lines {
                let _ = writeln!(report, "    {}", clip(l, 160));
            }
        }
    }
}

/// Compares the items of two data dirs as multisets (file names do not matter).
pub fn compare_dirs(kind: Kind, left: &Path, right: &Path) -> Result<(), String> {
    let l = load_dir(kind, left);
    let r = load_dir(kind, right);
    compare_sets(kind, &left.display().to_string(), &l, &right.display().to_string(), &r)
}

/// Compares a data dir with expected item contents.
pub fn compare_with(kind: Kind, expected: &[String], dir: &Path) -> Result<(), String> {
    let e: Vec<(String, NormItem)> =
        expected.iter().enumerate().map(|(i, c)| (format!("expected#{i}"), normalize(kind, c))).collect();
    let d = load_dir(kind, dir);
    compare_sets(kind, "expected", &e, &dir.display().to_string(), &d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_order_and_case_do_not_matter() {
        let a = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Zoë Müller\r\nTEL;TYPE=CELL,VOICE:+1\r\nN:Müller;Zoë;;;\r\nEND:VCARD\r\n";
        let b = "begin:vcard\nversion:3.0\nn:Müller;Zoë\ntel;type=voice;type=cell:+1\nFN:Zo\n ë Müller\nREV:2026\nEND:VCARD\n";
        assert_eq!(normalize(Kind::Contacts, a), normalize(Kind::Contacts, b));
    }

    #[test]
    fn vcard21_qp_and_bare_params() {
        let a = "BEGIN:VCARD\r\nVERSION:2.1\r\nNOTE;ENCODING=QUOTED-PRINTABLE;CHARSET=UTF-8:a=C3=BC=\r\nb\r\nTEL;CELL:1\r\nEND:VCARD\r\n";
        let b = "BEGIN:VCARD\r\nVERSION:2.1\r\nTEL;TYPE=CELL:1\r\nNOTE;CHARSET=UTF-8:aüb\r\nEND:VCARD\r\n";
        assert_eq!(normalize(Kind::Contacts21, a), normalize(Kind::Contacts21, b));
    }

    #[test]
    fn generated_items_keep_their_content() {
        use crate::support::items::{generate, GenOptions};
        for kind in Kind::ALL {
            let a = normalize(kind, &generate(kind, "t", 0, 0, GenOptions::default()));
            let b = normalize(kind, &generate(kind, "t", 1, 0, GenOptions::default()));
            let a2 = normalize(kind, &generate(kind, "t", 0, 2, GenOptions::default()));
            assert_ne!(a, b, "{kind:?}: different items compare equal");
            assert_ne!(a, a2, "{kind:?}: an edit is invisible");
            let min = if kind == Kind::Notes { 1 } else { 5 };
            assert!(a.lines.len() >= min, "{kind:?}: {:?}", a.lines);
        }
        let with_photo = GenOptions { photo_bytes: Some(1000) };
        let p = normalize(Kind::Contacts, &generate(Kind::Contacts, "t", 0, 0, with_photo));
        assert!(p.lines.iter().any(|l| l.starts_with("PHOTO;TYPE=JPEG:base64[1000]:")), "{:?}", p.lines);
    }

    #[test]
    fn differences_are_reported() {
        let a = vec![("a".to_string(), normalize(Kind::Notes, "x\n"))];
        let b = vec![("b".to_string(), normalize(Kind::Notes, "y\n"))];
        let err = compare_sets(Kind::Notes, "L", &a, "R", &b).unwrap_err();
        assert!(err.contains("only in L"), "{err}");
    }
}
