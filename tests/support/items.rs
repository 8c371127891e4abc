//! Realistic, deterministic PIM items for the real-client tests: vCard 3.0 and 2.1 contacts,
//! iCalendar 2.0 and vCalendar 1.0 events and tasks, and plain-text notes, written as one file
//! per item into a SyncEvolution `file` backend directory, plus helpers to edit and delete them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;

use super::syncevo::Kind;

const GIVEN: &[&str] = &[
    "José", "Zoë", "Łukasz", "Ørjan", "Amélie", "Jürgen", "Siobhán", "Ana", "Håkon", "Chloé", "Miguel",
    "Ilse", "Noël", "Dmitri", "Aiko", "Çağla", "Renée", "Tomás", "Ingrid", "Fatima",
];
const FAMILY: &[&str] = &[
    "Müller",
    "Ångström",
    "Żółkiewski",
    "Ó Briain",
    "Dubois",
    "García-Núñez",
    "Østergaard",
    "Nakamura",
    "Šimůnek",
    "Fernández",
    "van der Berg",
    "Kowalczyk",
    "Björklund",
    "Papadopoulos",
    "O'Neill",
    "Weiß",
    "Smith",
    "Yılmaz",
    "Rossi",
    "Novák",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("München", "80331", "Germany"),
    ("Zürich", "8001", "Switzerland"),
    ("Kraków", "30-001", "Poland"),
    ("Malmö", "211 20", "Sweden"),
    ("São Paulo", "01000-000", "Brazil"),
    ("Besançon", "25000", "France"),
    ("Reykjavík", "101", "Iceland"),
    ("Tromsø", "9008", "Norway"),
];
const STREETS: &[&str] =
    &["Hauptstraße", "Rue de la Paix", "Ulica Długa", "Storgatan", "Avenida Paulista", "Bahnhofplatz"];
const ORGS: &[&str] = &["Ærø Consulting", "Brøderbund AG", "Café Müller GmbH", "Niño & Co", "Acme Ltd"];
const TOPICS: &[&str] = &[
    "Budget review",
    "Café with Zoë",
    "Sprint planning",
    "Dentist (Dr. Müller)",
    "Release shardsync",
    "Läuft: Team-Frühstück",
    "Call São Paulo office",
    "Piano lesson",
];

/// Options for generated items.
#[derive(Clone, Copy, Debug, Default)]
pub struct GenOptions {
    /// Add a PHOTO of this many bytes (base64-encoded in the vCard) to contacts.
    pub photo_bytes: Option<usize>,
}

/// A tiny deterministic PRNG (splitmix64), so that generated data is reproducible.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn seed_of(tag: &str, index: usize) -> u64 {
    tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
        ^ (index as u64).wrapping_mul(0x9e37_79b9)
}

/// Folds a content line at 75 octets (RFC 6350 / 5545), never inside a UTF-8 sequence.
pub fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / 70 * 3);
    let mut width = 0;
    let mut limit = 75;
    for ch in line.chars() {
        let w = ch.len_utf8();
        if width + w > limit {
            out.push_str("\r\n ");
            width = 0;
            limit = 74; // the leading space counts
        }
        out.push(ch);
        width += w;
    }
    out.push_str("\r\n");
    out
}

/// Escapes a text value for vCard 3.0 / iCalendar (backslash, comma, semicolon, newline).
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

/// Quoted-printable encoding (vCard 2.1 / vCalendar 1.0) of UTF-8 text; CRLF line breaks.
pub fn quoted_printable(s: &str) -> String {
    let mut out = String::new();
    for b in s.replace('\n', "\r\n").bytes() {
        if (b.is_ascii_graphic() && b != b'=') || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

fn photo_base64(bytes: usize, rng: &mut Rng) -> String {
    let mut data = Vec::with_capacity(bytes);
    data.extend_from_slice(&[0xff, 0xd8, 0xff, 0xe0]);
    while data.len() < bytes {
        data.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    data.truncate(bytes.max(4));
    base64::engine::general_purpose::STANDARD.encode(&data)
}

struct Person {
    given: &'static str,
    family: &'static str,
    middle: &'static str,
    suffix: &'static str,
    org: &'static str,
    street: String,
    city: (&'static str, &'static str, &'static str),
    mobile: String,
    work: String,
    email: String,
    bday: String,
    note: String,
}

/// Middle names and suffixes widen the name space: every (set, index) below 2,000 gets a full name
/// of its own, so that no two generated contacts look like twins to a slow sync's matching.
const MIDDLE: &[&str] = &["", "Maria", "J.", "Anne", "Luis", "K.", "Sofie", "Émile", "Björn", "Inés"];
const SUFFIX: &[&str] = &["", "Jr.", "Sr.", "II", "III"];

/// Set tags the scenarios use, each with a residue class of its own; other tags share class 9.
const KNOWN_SETS: &[&str] = &["a", "b", "p", "r1", "r2", "r3", "junk", "s", "t"];

/// Index into the 20,000 name combinations: set `tag` uses one residue class mod 10.
fn name_slot(tag: &str, index: usize) -> usize {
    let residue = KNOWN_SETS.iter().position(|t| *t == tag).unwrap_or(9);
    (index * 10 + residue) % (GIVEN.len() * FAMILY.len() * MIDDLE.len() * SUFFIX.len())
}

fn person(tag: &str, index: usize, revision: u32) -> (Person, Rng) {
    let mut rng = Rng::new(seed_of(tag, index));
    let slot = name_slot(tag, index);
    let given = GIVEN[slot % GIVEN.len()];
    let family = FAMILY[(slot / GIVEN.len()) % FAMILY.len()];
    let middle = MIDDLE[(slot / (GIVEN.len() * FAMILY.len())) % MIDDLE.len()];
    let suffix = SUFFIX[(slot / (GIVEN.len() * FAMILY.len() * MIDDLE.len())) % SUFFIX.len()];
    let org = *rng.pick(ORGS);
    let street = format!("{} {}", rng.pick(STREETS), 1 + rng.below(200));
    let city = *rng.pick(CITIES);
    let mobile = format!("+49 170 {:07}", (rng.next_u64() % 10_000_000 + u64::from(revision)) % 10_000_000);
    let work = format!("+41 44 {:03} {:02} {:02}", rng.below(1000), rng.below(100), rng.below(100));
    let ascii: String = format!("{given}.{family}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect::<String>()
        .to_lowercase();
    let email = format!("{ascii}.{index}@example.org");
    let bday = format!("{}-{:02}-{:02}", 1950 + rng.below(55), 1 + rng.below(12), 1 + rng.below(28));
    let note = format!(
        "Contact #{index} ({tag}), revision {revision}.\nMet at the Café Ümlaut; prefers e-mail, not phone."
    );
    (Person { given, family, middle, suffix, org, street, city, mobile, work, email, bday, note }, rng)
}

impl Person {
    fn full_name(&self) -> String {
        let parts = [self.given, self.middle, self.family, self.suffix];
        parts.iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join(" ")
    }
}

/// vCard 3.0 contact number `index` of the set `tag`; `revision` > 0 gives an edited version.
pub fn vcard30(tag: &str, index: usize, revision: u32, opts: GenOptions) -> String {
    let (p, mut rng) = person(tag, index, revision);
    let fn_ = p.full_name();
    let mut v = String::new();
    v.push_str("BEGIN:VCARD\r\nVERSION:3.0\r\n");
    v.push_str(&fold(&format!(
        "N:{};{};{};;{}",
        escape_text(p.family),
        escape_text(p.given),
        escape_text(p.middle),
        p.suffix
    )));
    v.push_str(&fold(&format!("FN:{}", escape_text(&fn_))));
    v.push_str(&fold(&format!("ORG:{}", escape_text(p.org))));
    v.push_str(&fold(&format!("TEL;TYPE=CELL:{}", p.mobile)));
    v.push_str(&fold(&format!("TEL;TYPE=WORK:{}", p.work)));
    v.push_str(&fold(&format!("EMAIL;TYPE=INTERNET:{}", p.email)));
    v.push_str(&fold(&format!(
        "ADR;TYPE=HOME:;;{};{};;{};{}",
        escape_text(&p.street),
        escape_text(p.city.0),
        p.city.1,
        p.city.2
    )));
    v.push_str(&fold(&format!("BDAY:{}", p.bday)));
    v.push_str(&fold(&format!("NOTE:{}", escape_text(&p.note))));
    if let Some(bytes) = opts.photo_bytes {
        v.push_str(&fold(&format!("PHOTO;ENCODING=b;TYPE=JPEG:{}", photo_base64(bytes, &mut rng))));
    }
    v.push_str("END:VCARD\r\n");
    v
}

/// vCard 2.1 contact (8-bit UTF-8 with CHARSET, quoted-printable for the multi-line note).
pub fn vcard21(tag: &str, index: usize, revision: u32, opts: GenOptions) -> String {
    let (p, mut rng) = person(tag, index, revision);
    let mut v = String::new();
    v.push_str("BEGIN:VCARD\r\nVERSION:2.1\r\n");
    v.push_str(&format!("N;CHARSET=UTF-8:{};{};{};;{}\r\n", p.family, p.given, p.middle, p.suffix));
    v.push_str(&format!("FN;CHARSET=UTF-8:{}\r\n", p.full_name()));
    v.push_str(&format!("ORG;CHARSET=UTF-8:{}\r\n", p.org));
    v.push_str(&format!("TEL;CELL:{}\r\n", p.mobile));
    v.push_str(&format!("TEL;WORK:{}\r\n", p.work));
    v.push_str(&format!("EMAIL;INTERNET:{}\r\n", p.email));
    v.push_str(&format!("ADR;HOME;CHARSET=UTF-8:;;{};{};;{};{}\r\n", p.street, p.city.0, p.city.1, p.city.2));
    v.push_str(&format!("BDAY:{}\r\n", p.bday));
    v.push_str(&format!("NOTE;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:{}\r\n", quoted_printable(&p.note)));
    if let Some(bytes) = opts.photo_bytes {
        let b64 = photo_base64(bytes, &mut rng);
        v.push_str("PHOTO;ENCODING=BASE64;TYPE=JPEG:\r\n");
        for chunk in b64.as_bytes().chunks(72) {
            v.push_str("  ");
            v.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            v.push_str("\r\n");
        }
        v.push_str("\r\n");
    }
    v.push_str("END:VCARD\r\n");
    v
}

/// UTC date-time `YYYYMMDDTHHMMSSZ` for the generated items (2026/2027, whole hours).
fn utc(day_of_year: usize, hour: usize) -> String {
    const DAYS: [usize; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let year = 2026 + day_of_year / 365;
    let mut d = day_of_year % 365;
    let mut month = 0;
    while d >= DAYS[month] {
        d -= DAYS[month];
        month += 1;
    }
    format!("{year}{:02}{:02}T{:02}0000Z", month + 1, d + 1, hour)
}

struct Event {
    uid: String,
    summary: String,
    location: String,
    description: String,
    start: String,
    end: String,
    due: String,
    priority: usize,
}

fn event(tag: &str, index: usize, revision: u32) -> Event {
    let mut rng = Rng::new(seed_of(tag, index) ^ 0x5555);
    let day = rng.below(600);
    let hour = 7 + rng.below(10);
    let city = rng.pick(CITIES).0;
    let topic = rng.pick(TOPICS);
    let summary = if revision == 0 {
        format!("{topic} #{index}")
    } else {
        format!("{topic} #{index} (moved, rev {revision})")
    };
    Event {
        uid: format!("{tag}-{index:05}@shardsync.test"),
        summary,
        location: format!("Raum {}, {city}", rng.below(40)),
        description: format!("Agenda for #{index}:\n1. Überblick\n2. Next steps; owners, dates"),
        start: utc(day, hour),
        end: utc(day, hour + 1),
        due: utc(day, 17),
        priority: 1 + rng.below(9),
    }
}

/// iCalendar 2.0 VEVENT.
pub fn ical_event(tag: &str, index: usize, revision: u32) -> String {
    let e = event(tag, index, revision);
    let mut v = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//shardsync//tests//EN\r\n");
    v.push_str("BEGIN:VEVENT\r\n");
    v.push_str(&fold(&format!("UID:{}", e.uid)));
    v.push_str("DTSTAMP:20260101T000000Z\r\n");
    v.push_str(&format!("DTSTART:{}\r\nDTEND:{}\r\n", e.start, e.end));
    v.push_str(&fold(&format!("SUMMARY:{}", escape_text(&e.summary))));
    v.push_str(&fold(&format!("LOCATION:{}", escape_text(&e.location))));
    v.push_str(&fold(&format!("DESCRIPTION:{}", escape_text(&e.description))));
    v.push_str("CATEGORIES:BUSINESS\r\n");
    v.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
    v
}

/// vCalendar 1.0 VEVENT.
pub fn vcal_event(tag: &str, index: usize, revision: u32) -> String {
    let e = event(tag, index, revision);
    let mut v = String::from("BEGIN:VCALENDAR\r\nVERSION:1.0\r\n");
    v.push_str("BEGIN:VEVENT\r\n");
    v.push_str(&format!("UID:{}\r\n", e.uid));
    v.push_str(&format!("DTSTART:{}\r\nDTEND:{}\r\n", e.start, e.end));
    v.push_str(&format!("SUMMARY;CHARSET=UTF-8:{}\r\n", e.summary));
    v.push_str(&format!("LOCATION;CHARSET=UTF-8:{}\r\n", e.location));
    v.push_str(&format!(
        "DESCRIPTION;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:{}\r\n",
        quoted_printable(&e.description)
    ));
    v.push_str("CATEGORIES:BUSINESS\r\n");
    v.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
    v
}

/// iCalendar 2.0 VTODO.
pub fn ical_task(tag: &str, index: usize, revision: u32) -> String {
    let e = event(tag, index, revision);
    let mut v = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//shardsync//tests//EN\r\n");
    v.push_str("BEGIN:VTODO\r\n");
    v.push_str(&fold(&format!("UID:{}", e.uid)));
    v.push_str("DTSTAMP:20260101T000000Z\r\n");
    v.push_str(&format!("DUE:{}\r\n", e.due));
    v.push_str(&fold(&format!("SUMMARY:{}", escape_text(&e.summary))));
    v.push_str(&fold(&format!("DESCRIPTION:{}", escape_text(&e.description))));
    v.push_str(&format!("PRIORITY:{}\r\nSTATUS:NEEDS-ACTION\r\n", e.priority));
    v.push_str("END:VTODO\r\nEND:VCALENDAR\r\n");
    v
}

/// vCalendar 1.0 VTODO.
pub fn vcal_task(tag: &str, index: usize, revision: u32) -> String {
    let e = event(tag, index, revision);
    let mut v = String::from("BEGIN:VCALENDAR\r\nVERSION:1.0\r\n");
    v.push_str("BEGIN:VTODO\r\n");
    v.push_str(&format!("UID:{}\r\n", e.uid));
    v.push_str(&format!("DUE:{}\r\n", e.due));
    v.push_str(&format!("SUMMARY;CHARSET=UTF-8:{}\r\n", e.summary));
    // vCalendar 1.0 priorities are 1 (high), 2 (medium), 3 (low)
    v.push_str(&format!("PRIORITY:{}\r\nSTATUS:NEEDS ACTION\r\n", 1 + e.priority % 3));
    v.push_str("END:VTODO\r\nEND:VCALENDAR\r\n");
    v
}

/// Plain-text note: a title line and a body.
pub fn note(tag: &str, index: usize, revision: u32) -> String {
    let mut rng = Rng::new(seed_of(tag, index) ^ 0xaaaa);
    let topic = rng.pick(TOPICS);
    let mut text = format!("{topic} — note #{index}\n");
    text.push_str(&format!("Revision {revision} of set {tag}.\n"));
    text.push_str("Things to remember: Grüße an Zoë, 3 × Kaffee, ½ kg Äpfel.\n");
    text
}

/// Item `index` of set `tag` in the format of `kind`.
pub fn generate(kind: Kind, tag: &str, index: usize, revision: u32, opts: GenOptions) -> String {
    match kind {
        Kind::Contacts => vcard30(tag, index, revision, opts),
        Kind::Contacts21 => vcard21(tag, index, revision, opts),
        Kind::Calendar => ical_event(tag, index, revision),
        Kind::Calendar10 => vcal_event(tag, index, revision),
        Kind::Tasks => ical_task(tag, index, revision),
        Kind::Tasks10 => vcal_task(tag, index, revision),
        Kind::Notes => note(tag, index, revision),
    }
}

/// File name of generated item `index` of set `tag`.
pub fn file_name(tag: &str, index: usize) -> String {
    format!("{tag}-{index:05}")
}

/// Writes `content` to `dir/name` and makes sure its modification time (whole seconds, which is
/// what SyncEvolution's file backend compares) differs from the previous version's.
pub fn write_item(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    let previous = fs::metadata(&path).and_then(|m| m.modified()).ok();
    fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    if let Some(prev) = previous {
        let now = SystemTime::now();
        let bumped = prev + Duration::from_secs(2);
        let mtime = if now > bumped { now } else { bumped };
        let file = fs::File::options().write(true).open(&path).expect("reopen item");
        file.set_modified(mtime).expect("set mtime");
    }
    path
}

/// Writes items `range` of set `tag` into `dir`; returns their file names.
pub fn write_items(
    dir: &Path,
    kind: Kind,
    tag: &str,
    range: std::ops::Range<usize>,
    opts: GenOptions,
) -> Vec<String> {
    fs::create_dir_all(dir).expect("create data dir");
    range
        .map(|i| {
            let name = file_name(tag, i);
            write_item(dir, &name, &generate(kind, tag, i, 0, opts));
            name
        })
        .collect()
}

/// The item files in a data dir, sorted by name (hidden files skipped).
pub fn list_items(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Edits an existing item in place, whatever wrote it: contacts get a new NOTE and mobile number,
/// events and tasks a new SUMMARY, notes an extra line. Returns the new content.
pub fn modify_item(dir: &Path, name: &str, kind: Kind, revision: u32) -> String {
    let path = dir.join(name);
    let old = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let new = modify_content(kind, &old, &format!("{name} rev {revision}"));
    write_item(dir, name, &new);
    new
}

/// Content-level edit used by [`modify_item`].
pub fn modify_content(kind: Kind, old: &str, marker: &str) -> String {
    if kind == Kind::Notes {
        return format!("{}\nEdited: {marker}\n", old.trim_end());
    }
    let eol = if old.contains("\r\n") { "\r\n" } else { "\n" };
    // Unfold, so that a replaced property does not leave continuation lines behind.
    let unfolded = old.replace("\r\n ", "").replace("\n ", "").replace("\r\n\t", "").replace("\n\t", "");
    let (prop, value) = match kind {
        Kind::Contacts => ("NOTE", format!("NOTE:Edited: {}", escape_text(marker))),
        Kind::Contacts21 => ("NOTE", format!("NOTE;CHARSET=UTF-8:Edited: {marker}")),
        Kind::Calendar | Kind::Tasks => ("SUMMARY", format!("SUMMARY:Edited: {}", escape_text(marker))),
        Kind::Calendar10 | Kind::Tasks10 => ("SUMMARY", format!("SUMMARY;CHARSET=UTF-8:Edited: {marker}")),
        Kind::Notes => unreachable!(),
    };
    let mut out = Vec::new();
    let mut replaced = false;
    for line in unfolded.lines() {
        let name = line.split([':', ';']).next().unwrap_or("").to_ascii_uppercase();
        if name == prop {
            if !replaced {
                out.push(value.clone());
                replaced = true;
            }
            continue;
        }
        if !replaced
            && (line.eq_ignore_ascii_case("END:VCARD")
                || line.eq_ignore_ascii_case("END:VEVENT")
                || line.eq_ignore_ascii_case("END:VTODO"))
        {
            out.push(value.clone());
            replaced = true;
        }
        out.push(line.to_owned());
    }
    let mut s = out.join(eol);
    s.push_str(eol);
    s
}

/// Deletes items from a data dir.
pub fn delete_items(dir: &Path, names: &[String]) {
    for name in names {
        let path = dir.join(name);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("delete {}: {e}", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sets the scenarios use never share a full name (a slow sync would take two such
    /// contacts for twins).
    #[test]
    fn generated_names_are_unique() {
        let sets: &[(&str, usize)] =
            &[("a", 2000), ("b", 10), ("p", 2), ("r1", 5), ("r2", 5), ("r3", 5), ("junk", 5), ("s", 2)];
        let mut seen = std::collections::HashMap::new();
        for (tag, n) in sets {
            for i in 0..*n {
                let name = person(tag, i, 0).0.full_name();
                if let Some(prev) = seen.insert(name.clone(), format!("{tag}#{i}")) {
                    panic!("{name}: {prev} and {tag}#{i}");
                }
            }
        }
    }
}
