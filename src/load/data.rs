//! Realistic generated PIM items for the load generator: address-book-like
//! vCard 3.0 contacts (some with a base64 JPEG-sized `PHOTO`), iCalendar 2.0
//! events and tasks, and plain-text notes. Everything is a pure function of a
//! seed, so a run can be repeated byte for byte.
//!
//! Every item of a seed carries a unique, pronounceable middle name or
//! summary tag: SyncEvolution's server merges contacts with the same name in
//! a slow sync, so equal names would turn distinct items into twins.

/// The kinds of data a device syncs, one datastore each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataKind {
    /// vCard 3.0 contacts (`addressbook`).
    Contacts,
    /// iCalendar 2.0 events (`calendar`).
    Events,
    /// iCalendar 2.0 tasks (`todo`).
    Tasks,
    /// Plain-text notes (`memo`).
    Notes,
}

impl DataKind {
    /// Parses a datastore kind as given on the command line.
    pub fn parse(s: &str) -> Option<DataKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "contacts" | "addressbook" | "contact" => Some(DataKind::Contacts),
            "events" | "calendar" | "event" => Some(DataKind::Events),
            "tasks" | "todo" | "task" => Some(DataKind::Tasks),
            "notes" | "memo" | "note" => Some(DataKind::Notes),
            _ => None,
        }
    }

    /// The server datastore name the device alerts (what SyncEvolution's
    /// server calls them too; shardsync maps these names by alias).
    pub fn server_uri(self) -> &'static str {
        match self {
            DataKind::Contacts => "addressbook",
            DataKind::Events => "calendar",
            DataKind::Tasks => "todo",
            DataKind::Notes => "memo",
        }
    }

    /// The device's own datastore URI.
    pub fn local_uri(self) -> &'static str {
        match self {
            DataKind::Contacts => "./contacts",
            DataKind::Events => "./calendar",
            DataKind::Tasks => "./tasks",
            DataKind::Notes => "./notes",
        }
    }

    /// MIME type of the items.
    pub fn content_type(self) -> &'static str {
        match self {
            DataKind::Contacts => "text/vcard",
            DataKind::Events | DataKind::Tasks => "text/calendar",
            DataKind::Notes => "text/plain",
        }
    }

    /// Content type version (for DevInf).
    pub fn content_version(self) -> &'static str {
        match self {
            DataKind::Contacts => "3.0",
            DataKind::Events | DataKind::Tasks => "2.0",
            DataKind::Notes => "1.0",
        }
    }

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            DataKind::Contacts => "contacts",
            DataKind::Events => "events",
            DataKind::Tasks => "tasks",
            DataKind::Notes => "notes",
        }
    }
}

/// A small deterministic PRNG (SplitMix64): stable across crate versions, so
/// a seed always yields the same items.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty list.
    pub fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.below(list.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Karla", "Lukas",
    "Mila", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Simon", "Tara", "Uwe", "Vera", "Willem", "Xenia",
    "Yusuf", "Zoe", "Amir", "Bianca", "Carlos", "Daria", "Emil", "Fatima",
];
const LAST: &[&str] = &[
    "Schmidt",
    "Meyer",
    "Nguyen",
    "Garcia",
    "Rossi",
    "Kowalski",
    "Johansson",
    "Dubois",
    "Silva",
    "Okafor",
    "Tanaka",
    "Novak",
    "Andersen",
    "Moreau",
    "Fischer",
    "Kaya",
    "Murphy",
    "Costa",
    "Weber",
    "Jansen",
    "Horvat",
    "Lindqvist",
    "Petrov",
    "Santos",
];
const CITIES: &[&str] =
    &["Berlin", "Lisboa", "Praha", "Wien", "Oslo", "Lyon", "Gent", "Kraków", "Porto", "Zürich", "Bologna"];
const STREETS: &[&str] = &["Hauptstraße", "Rua Augusta", "Long Lane", "Via Roma", "Kungsgatan", "Rue Verte"];
const ORGS: &[&str] =
    &["Acme GmbH", "Northwind Traders", "Blue Harbor Ltd", "Initech", "Globex SA", "Umbrella Labs", "Hooli"];
const TITLES: &[&str] = &["Engineer", "Sales Manager", "Accountant", "Designer", "Nurse", "Teacher", "CTO"];
const SUBJECTS: &[&str] = &[
    "Team meeting",
    "Dentist",
    "Project review",
    "Lunch with",
    "Call",
    "Workshop",
    "Flight to",
    "Birthday of",
    "Quarterly planning",
    "Yoga class",
];
const TASKS: &[&str] = &[
    "Renew passport",
    "Send invoice to",
    "Buy groceries",
    "Book hotel in",
    "Prepare slides for",
    "Call back",
    "Pay rent",
    "Water the plants",
    "Review contract with",
];
const SYLLABLES: &[&str] =
    &["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "da", "fe", "gu", "hi", "jo", "be", "po", "ze"];

/// A pronounceable name that is unique for each value of `tag` (four bits per syllable).
fn tag_name(mut tag: u64) -> String {
    let mut s = String::new();
    loop {
        s.push_str(SYLLABLES[(tag & 15) as usize]);
        tag >>= 4;
        if tag == 0 {
            break;
        }
    }
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
        None => s,
    }
}

/// Folds a content line at 75 octets (RFC 6350/5545 folding: CRLF + space).
fn push_folded(out: &mut String, line: &str) {
    let bytes = line.as_bytes();
    let mut start = 0;
    let mut first = true;
    while start < bytes.len() {
        let room = if first { 75 } else { 74 };
        let mut end = (start + room).min(bytes.len());
        while end < bytes.len() && !line.is_char_boundary(end) {
            end -= 1;
        }
        if !first {
            out.push(' ');
        }
        out.push_str(&line[start..end]);
        out.push_str("\r\n");
        start = end;
        first = false;
    }
}

/// A date-time `YYYYMMDDTHHMMSSZ` some days after 2026-01-01 00:00 UTC.
fn utc_stamp(minutes: u64) -> String {
    let days_in_month = [31u64, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut day = minutes / 1440 % 365;
    let mut month = 0;
    while day >= days_in_month[month] {
        day -= days_in_month[month];
        month += 1;
    }
    let m = minutes % 1440;
    format!("2026{:02}{:02}T{:02}{:02}00Z", month + 1, day + 1, m / 60, m % 60)
}

/// Base64 of `n` pseudo-random bytes that start like a JPEG file.
fn fake_jpeg_b64(rng: &mut Rng, n: usize) -> String {
    use base64::Engine as _;
    let mut bytes = Vec::with_capacity(n);
    bytes.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0]);
    while bytes.len() < n {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    bytes.truncate(n);
    bytes.extend_from_slice(&[0xFF, 0xD9]);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Generates item `index` of kind `kind` for the stream `seed`, at revision
/// `rev` (a Replace bumps it: the same item, a changed field).
pub fn item(kind: DataKind, seed: u64, index: u64, rev: u32) -> String {
    // The content depends on (seed, index) only; rev changes a field.
    let mut rng = Rng::new(seed.wrapping_mul(0x100_0000_01B3) ^ index.wrapping_mul(0x9E37_79B9));
    let tag = tag_name(seed.wrapping_mul(1_000_003).wrapping_add(index));
    match kind {
        DataKind::Contacts => contact(&mut rng, &tag, seed, index, rev),
        DataKind::Events => event(&mut rng, &tag, seed, index, rev),
        DataKind::Tasks => task(&mut rng, &tag, seed, index, rev),
        DataKind::Notes => note(&mut rng, &tag, index, rev),
    }
}

fn contact(rng: &mut Rng, tag: &str, seed: u64, index: u64, rev: u32) -> String {
    let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
    let mut v = String::with_capacity(512);
    v.push_str("BEGIN:VCARD\r\nVERSION:3.0\r\n");
    v.push_str(&format!("UID:load-{seed:x}-{index}\r\n"));
    v.push_str(&format!("N:{last};{first};{tag};;\r\nFN:{first} {tag} {last}\r\n"));
    let phones = 1 + rng.below(3);
    for p in 0..phones {
        let kind = ["CELL", "HOME", "WORK"][p as usize];
        // The last digits carry the revision, so a Replace changes a phone number.
        let number = 100_000 + rng.below(900_000);
        v.push_str(&format!("TEL;TYPE={kind}:+49 30 {number}{:02}\r\n", rev % 100));
    }
    v.push_str(&format!(
        "EMAIL;TYPE=INTERNET:{}.{}@example.{}\r\n",
        first.to_ascii_lowercase(),
        tag.to_ascii_lowercase(),
        ["com", "org", "net", "de"][rng.below(4) as usize]
    ));
    if rng.chance(60) {
        v.push_str(&format!(
            "ADR;TYPE=HOME:;;{} {};{};;{:05};Europe\r\n",
            rng.pick(STREETS),
            1 + rng.below(200),
            rng.pick(CITIES),
            rng.below(100_000)
        ));
    }
    if rng.chance(50) {
        v.push_str(&format!("ORG:{}\r\nTITLE:{}\r\n", rng.pick(ORGS), rng.pick(TITLES)));
    }
    if rng.chance(30) {
        v.push_str(&format!(
            "BDAY:{}-{:02}-{:02}\r\n",
            1950 + rng.below(55),
            1 + rng.below(12),
            1 + rng.below(28)
        ));
    }
    if rng.chance(20) {
        push_folded(
            &mut v,
            &format!("NOTE:Met at the {} conference\\, follow up about the offer.", rng.pick(CITIES)),
        );
    }
    // About one contact in ten has a photo of 3–12 KB.
    if rng.chance(10) {
        let size = 3000 + rng.below(9000) as usize;
        push_folded(&mut v, &format!("PHOTO;ENCODING=b;TYPE=JPEG:{}", fake_jpeg_b64(rng, size)));
    }
    v.push_str("END:VCARD\r\n");
    v
}

fn event(rng: &mut Rng, tag: &str, seed: u64, index: u64, rev: u32) -> String {
    let start = rng.below(365 * 24 * 4) * 15;
    let len = 30 * (1 + rng.below(6));
    let mut v = String::with_capacity(512);
    v.push_str("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//shardsync//load//EN\r\nBEGIN:VEVENT\r\n");
    v.push_str(&format!("UID:load-ev-{seed:x}-{index}\r\nDTSTAMP:{}\r\n", utc_stamp(rev as u64)));
    v.push_str(&format!("DTSTART:{}\r\nDTEND:{}\r\n", utc_stamp(start), utc_stamp(start + len)));
    v.push_str(&format!("SUMMARY:{} {tag}\r\n", rng.pick(SUBJECTS)));
    if rng.chance(50) {
        v.push_str(&format!("LOCATION:{}\\, room {}\r\n", rng.pick(CITIES), rng.below(500)));
    }
    if rng.chance(30) {
        push_folded(
            &mut v,
            &format!(
                "DESCRIPTION:Agenda: item one\\nitem two\\nrevision {rev}\\nbring the {} report",
                rng.pick(ORGS)
            ),
        );
    }
    if rng.chance(15) {
        v.push_str("RRULE:FREQ=WEEKLY;COUNT=10\r\n");
    }
    if rev > 0 {
        v.push_str(&format!("SEQUENCE:{rev}\r\n"));
    }
    v.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
    v
}

fn task(rng: &mut Rng, tag: &str, seed: u64, index: u64, rev: u32) -> String {
    let due = rng.below(365 * 24) * 60;
    let mut v = String::with_capacity(384);
    v.push_str("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//shardsync//load//EN\r\nBEGIN:VTODO\r\n");
    v.push_str(&format!("UID:load-td-{seed:x}-{index}\r\nDTSTAMP:{}\r\n", utc_stamp(rev as u64)));
    v.push_str(&format!("SUMMARY:{} {tag}\r\nDUE:{}\r\n", rng.pick(TASKS), utc_stamp(due)));
    v.push_str(&format!("PRIORITY:{}\r\n", 1 + rng.below(9)));
    let status = if rev % 3 == 2 { "COMPLETED" } else { "NEEDS-ACTION" };
    v.push_str(&format!("STATUS:{status}\r\n"));
    if rev > 0 {
        v.push_str(&format!("SEQUENCE:{rev}\r\n"));
    }
    v.push_str("END:VTODO\r\nEND:VCALENDAR\r\n");
    v
}

fn note(rng: &mut Rng, tag: &str, index: u64, rev: u32) -> String {
    let mut v = format!("Note {tag} {index}\n");
    let lines = 1 + rng.below(6);
    for l in 0..lines {
        v.push_str(&format!("- {} {} (line {l}, revision {rev})\n", rng.pick(TASKS), rng.pick(FIRST)));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_unique() {
        assert_eq!(item(DataKind::Contacts, 7, 3, 0), item(DataKind::Contacts, 7, 3, 0));
        assert_ne!(item(DataKind::Contacts, 7, 3, 0), item(DataKind::Contacts, 7, 3, 1));
        let names: std::collections::HashSet<String> = (0..2000)
            .map(|i| {
                let v = item(DataKind::Contacts, 7, i, 0);
                v.lines().find(|l| l.starts_with("FN:")).unwrap_or_default().to_string()
            })
            .collect();
        assert_eq!(names.len(), 2000, "every contact of a seed has its own name");
    }

    #[test]
    fn some_contacts_have_photos_and_lines_are_folded() {
        let cards: Vec<String> = (0..200).map(|i| item(DataKind::Contacts, 1, i, 0)).collect();
        let photos = cards.iter().filter(|c| c.contains("PHOTO;ENCODING=b")).count();
        assert!((5..=40).contains(&photos), "{photos} photos in 200");
        for c in &cards {
            assert!(c.split("\r\n").all(|l| l.len() <= 75), "folded: {c}");
            assert!(c.starts_with("BEGIN:VCARD\r\n") && c.ends_with("END:VCARD\r\n"));
        }
        let ev = item(DataKind::Events, 1, 1, 0);
        assert!(ev.contains("BEGIN:VEVENT") && ev.contains("DTSTART:2026"));
        assert!(item(DataKind::Tasks, 1, 1, 0).contains("BEGIN:VTODO"));
        assert!(item(DataKind::Notes, 1, 1, 0).starts_with("Note "));
    }
}
