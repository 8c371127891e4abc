//! Format conversion on realistic items: vCard 2.1 ↔ 3.0 and
//! vCalendar 1.0 ↔ iCalendar 2.0, round trips, and robustness on garbage.

use std::borrow::Cow;

use shardsync::convert::{convert, normalize_line_ends, ConvertError, Format};

fn conv(data: &str, from: Format, to: Format) -> String {
    let out = convert(data.as_bytes(), from, to).unwrap_or_else(|e| panic!("{from:?} -> {to:?}: {e}"));
    let text = String::from_utf8(out.into_owned()).expect("output is UTF-8");
    assert_crlf(&text);
    text
}

fn assert_crlf(text: &str) {
    assert!(
        matches!(normalize_line_ends(text.as_bytes()), Cow::Borrowed(_)),
        "output has bare line ends: {text:?}"
    );
}

/// Content lines with RFC folding and QP soft line breaks undone.
fn lines(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut soft = false;
    for l in text.replace("\r\n ", "").split("\r\n") {
        match out.last_mut() {
            Some(last) if soft => last.push_str(l),
            _ => out.push(l.to_string()),
        }
        let last = out.last().map(String::as_str).unwrap_or("");
        soft = last.contains("QUOTED-PRINTABLE") && last.ends_with('=');
        if soft {
            out.last_mut().map(String::pop);
        }
    }
    out
}

fn has_line(text: &str, line: &str) -> bool {
    lines(text).iter().any(|l| l == line)
}

#[track_caller]
fn assert_line(text: &str, line: &str) {
    assert!(has_line(text, line), "missing line {line:?} in\n{text}");
}

/// A small JPEG-like payload (starts with the JPEG marker, so not UTF-8).
fn photo_b64() -> String {
    use base64::Engine as _;
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00];
    bytes.extend((0u8..=255).cycle().take(300));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn vcard30() -> String {
    format!(
        "BEGIN:VCARD\r\n\
         VERSION:3.0\r\n\
         N:Lefèvre;Jean;Marc;Dr.;\r\n\
         FN:Dr. Jean Marc Lefèvre\r\n\
         ORG:ACME\\, Inc.;R&D\r\n\
         TITLE:Ingénieur\r\n\
         TEL;TYPE=CELL,VOICE:+33612345678\r\n\
         TEL;TYPE=WORK,FAX:+33 1 23 45 67 89\r\n\
         TEL;TYPE=HOME:+33 1 98 76 54 32\r\n\
         EMAIL;TYPE=INTERNET,PREF:jean.lefevre@example.fr\r\n\
         EMAIL;TYPE=INTERNET,HOME:jean@maison.fr\r\n\
         ADR;TYPE=HOME:;;12 rue de l'Église;Paris;;75001;France\r\n\
         ADR;TYPE=WORK:;Bât. B;1 avenue des Champs;Lyon;;69001;France\r\n\
         NOTE:Première ligne\\nSeconde ligne\\, avec virgule\r\n\
         CATEGORIES:Friends,Work\r\n\
         BDAY:1980-01-02\r\n\
         URL:http://example.fr/jean\r\n\
         PHOTO;ENCODING=b;TYPE=JPEG:{}\r\n\
         X-JABBER;TYPE=HOME:jean@jabber.fr\r\n\
         END:VCARD\r\n",
        photo_b64()
    )
}

#[test]
fn vcard30_to_21_uses_legacy_syntax() {
    let out = conv(&vcard30(), Format::VCard30, Format::VCard21);
    assert!(out.starts_with("BEGIN:VCARD\r\nVERSION:2.1\r\n"));
    assert!(out.ends_with("END:VCARD\r\n"));
    assert_line(&out, "N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Lef=C3=A8vre;Jean;Marc;Dr.;");
    assert_line(&out, "TEL;CELL;VOICE:+33612345678");
    assert_line(&out, "TEL;WORK;FAX:+33 1 23 45 67 89");
    assert_line(&out, "EMAIL;INTERNET;PREF:jean.lefevre@example.fr");
    assert_line(&out, "ORG:ACME, Inc.;R&D");
    assert_line(&out, "BDAY:19800102");
    assert_line(&out, "CATEGORIES:Friends,Work");
    assert_line(&out, "URL:http://example.fr/jean");
    assert_line(&out, "X-JABBER;HOME:jean@jabber.fr");
    assert_line(
        &out,
        "NOTE;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Premi=C3=A8re ligne=0D=0ASeconde ligne, avec virgule",
    );
    // PHOTO: base64 on folded lines, ended by an empty line.
    let photo = out.find("PHOTO;ENCODING=BASE64;TYPE=JPEG:\r\n ").expect("photo line");
    let rest = &out[photo..];
    let end = rest.find("\r\n\r\n").expect("blank line after base64");
    let b64: String = rest[..end].split("\r\n").skip(1).map(|l| l.trim_start()).collect();
    assert_eq!(b64, photo_b64());
    // No line of a QP value exceeds 76 characters.
    for l in out.split("\r\n") {
        if !l.starts_with(' ') {
            assert!(l.len() <= 76 || !l.contains("QUOTED-PRINTABLE"), "{l}");
        }
    }
}

#[test]
fn vcard_round_trip_30_21_30() {
    let input = vcard30();
    let v21 = conv(&input, Format::VCard30, Format::VCard21);
    let back = conv(&v21, Format::VCard21, Format::VCard30);
    for line in [
        "VERSION:3.0",
        "N:Lefèvre;Jean;Marc;Dr.;",
        "FN:Dr. Jean Marc Lefèvre",
        "ORG:ACME\\, Inc.;R&D",
        "TITLE:Ingénieur",
        "TEL;TYPE=CELL,VOICE:+33612345678",
        "TEL;TYPE=WORK,FAX:+33 1 23 45 67 89",
        "TEL;TYPE=HOME:+33 1 98 76 54 32",
        "EMAIL;TYPE=INTERNET,PREF:jean.lefevre@example.fr",
        "EMAIL;TYPE=INTERNET,HOME:jean@maison.fr",
        "ADR;TYPE=HOME:;;12 rue de l'Église;Paris;;75001;France",
        "ADR;TYPE=WORK:;Bât. B;1 avenue des Champs;Lyon;;69001;France",
        "NOTE:Première ligne\\nSeconde ligne\\, avec virgule",
        "CATEGORIES:Friends,Work",
        "BDAY:1980-01-02",
        "URL:http://example.fr/jean",
        &format!("PHOTO;ENCODING=b;TYPE=JPEG:{}", photo_b64()),
        "X-JABBER;TYPE=HOME:jean@jabber.fr",
    ] {
        assert_line(&back, line);
    }
    assert_eq!(lines(&back).len(), lines(&input).len(), "{back}");
    // Converting again is a fixed point.
    assert_eq!(conv(&back, Format::VCard30, Format::VCard21), v21);
}

/// What a Nokia/Sony Ericsson phone sends.
const PHONE_VCARD21: &str = "BEGIN:VCARD\r\n\
VERSION:2.1\r\n\
N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:M=C3=BCller;J=C3=BCrgen\r\n\
TEL;CELL;VOICE:+49 171 1234567\r\n\
TEL;WORK;VOICE:+49 30 123456\r\n\
TEL;PREF;HOME:+49 30 654321\r\n\
EMAIL;INTERNET:juergen@example.de\r\n\
ADR;HOME;CHARSET=ISO-8859-1;ENCODING=QUOTED-PRINTABLE:;;Stra=DFe 1;K=F6ln;;50667;Deutschland\r\n\
NOTE;ENCODING=QUOTED-PRINTABLE:Erste Zeile=0D=0AZweite =\r\n\
Zeile\r\n\
ORG:Firma GmbH\r\n\
TITLE:Leiter\r\n\
BDAY:19750315\r\n\
PHOTO;ENCODING=BASE64;TYPE=JPEG:\r\n\
 /9j/4AAQSkZJRgABAQEASABIAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgK\r\n\
 CgkICQkKDA8MCgsOCwkJDRENDg8QEBEQCgwSExIQEw8QEBD/\r\n\
\r\n\
X-IRMC-LUID:000200000123\r\n\
END:VCARD\r\n";

#[test]
fn phone_vcard21_to_30() {
    let out = conv(PHONE_VCARD21, Format::VCard21, Format::VCard30);
    assert!(out.starts_with("BEGIN:VCARD\r\nVERSION:3.0\r\n"));
    assert_line(&out, "N:Müller;Jürgen;;;");
    // FN is mandatory in 3.0 and made from N.
    assert_line(&out, "FN:Jürgen Müller");
    assert_line(&out, "TEL;TYPE=CELL,VOICE:+49 171 1234567");
    assert_line(&out, "TEL;TYPE=WORK,VOICE:+49 30 123456");
    assert_line(&out, "TEL;TYPE=PREF,HOME:+49 30 654321");
    assert_line(&out, "EMAIL;TYPE=INTERNET:juergen@example.de");
    assert_line(&out, "ADR;TYPE=HOME:;;Straße 1;Köln;;50667;Deutschland");
    assert_line(&out, "NOTE:Erste Zeile\\nZweite Zeile");
    assert_line(&out, "ORG:Firma GmbH");
    assert_line(&out, "BDAY:1975-03-15");
    assert_line(&out, "X-IRMC-LUID:000200000123");
    assert_line(
        &out,
        "PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgKCgkICQkKDA8MCgsOCwkJDRENDg8QEBEQCgwSExIQEw8QEBD/",
    );
    assert!(!out.contains("CHARSET") && !out.contains("QUOTED-PRINTABLE"));
    for l in out.split("\r\n") {
        assert!(l.len() <= 75, "unfolded line {l}");
    }
    // And back: same content in 2.1 syntax.
    let v21 = conv(&out, Format::VCard30, Format::VCard21);
    assert_line(&v21, "TEL;PREF;HOME:+49 30 654321");
    assert_line(
        &v21,
        "ADR;HOME;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:;;Stra=C3=9Fe 1;K=C3=B6ln;;50667;Deutschland",
    );
    assert_line(&v21, "X-IRMC-LUID:000200000123");
}

#[test]
fn vcard21_8bit_latin1_and_lf_only() {
    // Raw ISO-8859-1 bytes and LF line ends, as some clients deliver.
    let mut data =
        b"BEGIN:VCARD\nVERSION:2.1\nN;CHARSET=ISO-8859-1:Ch\xe2teau;Ren\xe9\nTEL;FAX:+331\nEND:VCARD\n"
            .to_vec();
    let out = convert(&data, Format::VCard21, Format::VCard30).unwrap();
    let out = String::from_utf8(out.into_owned()).unwrap();
    assert_line(&out, "N:Château;René;;;");
    assert_line(&out, "FN:René Château");
    assert_line(&out, "TEL;TYPE=FAX:+331");
    // Truncated mid-line still converts what is there.
    data.truncate(40);
    assert!(convert(&data, Format::VCard21, Format::VCard30).is_ok());
}

#[test]
fn vcard21_utf8_qp_without_charset() {
    let data = "BEGIN:VCARD\r\nVERSION:2.1\r\nN;ENCODING=QUOTED-PRINTABLE:Lef=C3=A8vre;Anne\r\nEND:VCARD\r\n";
    let out = conv(data, Format::VCard21, Format::VCard30);
    assert_line(&out, "N:Lefèvre;Anne;;;");
}

#[test]
fn same_format_is_borrowed() {
    let data = vcard30();
    let out = convert(data.as_bytes(), Format::VCard30, Format::VCard30).unwrap();
    assert!(matches!(out, Cow::Borrowed(_)));
}

#[test]
fn cross_kind_is_an_error() {
    assert_eq!(
        convert(b"", Format::VCard30, Format::VCalendar10),
        Err(ConvertError::Unsupported { from: Format::VCard30, to: Format::VCalendar10 })
    );
    assert!(convert(b"note", Format::PlainText, Format::VCard21).is_err());
    assert!(convert(b"", Format::VCard21, Format::VCard30).is_err());
    assert!(convert(b"", Format::ICalendar20, Format::VCalendar10).is_err());
}

const ICAL_MEETING: &str = "BEGIN:VCALENDAR\r\n\
VERSION:2.0\r\n\
PRODID:-//Synthesis AG//NONSGML SyncML Engine V3.4//EN\r\n\
BEGIN:VTIMEZONE\r\n\
TZID:Europe/Paris\r\n\
BEGIN:STANDARD\r\n\
DTSTART:19701025T030000\r\n\
TZOFFSETFROM:+0200\r\n\
TZOFFSETTO:+0100\r\n\
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n\
END:STANDARD\r\n\
BEGIN:DAYLIGHT\r\n\
DTSTART:19700329T020000\r\n\
TZOFFSETFROM:+0100\r\n\
TZOFFSETTO:+0200\r\n\
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n\
END:DAYLIGHT\r\n\
END:VTIMEZONE\r\n\
BEGIN:VEVENT\r\n\
UID:20240601-meeting@example.fr\r\n\
DTSTAMP:20240601T120000Z\r\n\
SUMMARY:Réunion d'équipe\r\n\
DESCRIPTION:Ordre du jour:\\n1. budget\\; 2. planning\r\n\
LOCATION:Salle 3\\, bâtiment B\r\n\
DTSTART;TZID=Europe/Paris:20240610T090000\r\n\
DTEND;TZID=Europe/Paris:20240610T100000\r\n\
RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;UNTIL=20241231T230000Z\r\n\
EXDATE;TZID=Europe/Paris:20240624T090000\r\n\
CATEGORIES:Work,Meeting\r\n\
CLASS:PRIVATE\r\n\
X-MOZ-GENERATION:3\r\n\
BEGIN:VALARM\r\n\
ACTION:DISPLAY\r\n\
DESCRIPTION:Bientôt\r\n\
TRIGGER;RELATED=START:-PT15M\r\n\
END:VALARM\r\n\
END:VEVENT\r\n\
END:VCALENDAR\r\n";

#[test]
fn ical_event_to_vcal10() {
    let out = conv(ICAL_MEETING, Format::ICalendar20, Format::VCalendar10);
    assert!(out.starts_with("BEGIN:VCALENDAR\r\nVERSION:1.0\r\n"));
    assert!(!out.contains("VTIMEZONE") && !out.contains("TZID"));
    // 09:00 Paris summer time is 07:00 UTC.
    assert_line(&out, "DTSTART:20240610T070000Z");
    assert_line(&out, "DTEND:20240610T080000Z");
    assert_line(&out, "EXDATE:20240624T070000Z");
    assert_line(&out, "RRULE:W2 MO WE 20241231T230000Z");
    assert_line(&out, "CATEGORIES:Work;Meeting");
    assert_line(&out, "CLASS:PRIVATE");
    assert_line(&out, "UID:20240601-meeting@example.fr");
    assert_line(&out, "X-MOZ-GENERATION:3");
    assert_line(&out, "SUMMARY;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:R=C3=A9union d'=C3=A9quipe");
    assert_line(
        &out,
        "DALARM:20240610T064500Z;;;Bient=C3=B4t"
            .replace("DALARM:", "DALARM;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:")
            .as_str(),
    );
    assert_line(&out, "AALARM:20240610T064500Z;;;");
    assert!(!out.contains("VALARM"));
}

#[test]
fn ical_round_trip_20_10_20() {
    let v10 = conv(ICAL_MEETING, Format::ICalendar20, Format::VCalendar10);
    let back = conv(&v10, Format::VCalendar10, Format::ICalendar20);
    for line in [
        "VERSION:2.0",
        "SUMMARY:Réunion d'équipe",
        "DESCRIPTION:Ordre du jour:\\n1. budget\\; 2. planning",
        "LOCATION:Salle 3\\, bâtiment B",
        "DTSTART:20240610T070000Z",
        "DTEND:20240610T080000Z",
        "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;UNTIL=20241231T230000Z",
        "EXDATE:20240624T070000Z",
        "CATEGORIES:Work,Meeting",
        "CLASS:PRIVATE",
        "UID:20240601-meeting@example.fr",
        "BEGIN:VALARM",
        "ACTION:DISPLAY",
        "TRIGGER:-PT15M",
        "DESCRIPTION:Bientôt",
        "END:VALARM",
    ] {
        assert_line(&back, line);
    }
    // One alarm only: the AALARM companion merges with its DALARM.
    assert_eq!(back.matches("BEGIN:VALARM").count(), 1);
    // A second trip is a fixed point.
    assert_eq!(conv(&back, Format::ICalendar20, Format::VCalendar10), v10);
}

#[test]
fn all_day_event_round_trip() {
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:hol\r\n\
SUMMARY:Vacances\r\nDTSTART;VALUE=DATE:20240805\r\nDTEND;VALUE=DATE:20240810\r\n\
RRULE:FREQ=YEARLY;COUNT=3\r\nBEGIN:VALARM\r\nACTION:AUDIO\r\nTRIGGER:-P1D\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let v10 = conv(ics, Format::ICalendar20, Format::VCalendar10);
    assert_line(&v10, "DTSTART:20240805T000000");
    assert_line(&v10, "DTEND:20240809T235900");
    assert_line(&v10, "RRULE:YM1 #3");
    assert_line(&v10, "AALARM:20240804T000000;;;");
    let back = conv(&v10, Format::VCalendar10, Format::ICalendar20);
    assert_line(&back, "DTSTART;VALUE=DATE:20240805");
    assert_line(&back, "DTEND;VALUE=DATE:20240810");
    assert_line(&back, "RRULE:FREQ=YEARLY;COUNT=3");
    assert_line(&back, "ACTION:AUDIO");
    assert_line(&back, "TRIGGER:-P1D");
}

#[test]
fn p800_all_day_and_date_only_vcal() {
    let vcs = "BEGIN:VCALENDAR\r\nVERSION:1.0\r\nBEGIN:VEVENT\r\nSUMMARY:A\r\n\
DTSTART:20240301T000000Z\r\nDTEND:20240301T240000Z\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nSUMMARY:B\r\n\
DTSTART:20240302\r\nDTEND:20240302\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let out = conv(vcs, Format::VCalendar10, Format::ICalendar20);
    assert_line(&out, "DTSTART;VALUE=DATE:20240301");
    assert_line(&out, "DTEND;VALUE=DATE:20240302");
    assert_line(&out, "DTSTART;VALUE=DATE:20240302");
    assert_line(&out, "DTEND;VALUE=DATE:20240303");
}

#[test]
fn vtodo_round_trip() {
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTODO\r\nUID:t1\r\n\
SUMMARY:Rapport trimestriel\r\nDESCRIPTION:Chiffres Q2\r\nDUE:20240705T150000Z\r\nPRIORITY:1\r\n\
STATUS:NEEDS-ACTION\r\nCATEGORIES:Work\r\nCLASS:CONFIDENTIAL\r\nEND:VTODO\r\n\
BEGIN:VTODO\r\nUID:t2\r\nSUMMARY:Done\r\nDUE;VALUE=DATE:20240701\r\nCOMPLETED:20240630T101500Z\r\n\
PRIORITY:9\r\nSTATUS:COMPLETED\r\nEND:VTODO\r\n\
BEGIN:VTODO\r\nUID:t3\r\nSUMMARY:Doing\r\nPRIORITY:5\r\nSTATUS:IN-PROCESS\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
    let v10 = conv(ics, Format::ICalendar20, Format::VCalendar10);
    assert_line(&v10, "DUE:20240705T150000Z");
    assert_line(&v10, "PRIORITY:1");
    assert_line(&v10, "STATUS:NEEDS ACTION");
    assert_line(&v10, "COMPLETED:20240630T101500Z");
    assert_line(&v10, "PRIORITY:3");
    assert_line(&v10, "PRIORITY:2");
    assert_line(&v10, "CLASS:CONFIDENTIAL");
    let back = conv(&v10, Format::VCalendar10, Format::ICalendar20);
    for line in [
        "SUMMARY:Rapport trimestriel",
        "DESCRIPTION:Chiffres Q2",
        "DUE:20240705T150000Z",
        "PRIORITY:1",
        "STATUS:NEEDS-ACTION",
        "CATEGORIES:Work",
        "CLASS:CONFIDENTIAL",
        "COMPLETED:20240630T101500Z",
        "PRIORITY:9",
        "STATUS:COMPLETED",
        "PRIORITY:5",
        "STATUS:IN-PROCESS",
    ] {
        assert_line(&back, line);
    }
}

/// A Nokia-style combined calendar item with an event and a todo.
const VCAL10: &str = "BEGIN:VCALENDAR\r\n\
VERSION:1.0\r\n\
BEGIN:VEVENT\r\n\
SUMMARY;ENCODING=QUOTED-PRINTABLE;CHARSET=UTF-8:R=C3=A9union budget\r\n\
DESCRIPTION;ENCODING=QUOTED-PRINTABLE;CHARSET=UTF-8:Pr=C3=A9parer=0D=0Ales chiffres\r\n\
LOCATION:Bureau 12\r\n\
DTSTART:20240115T090000Z\r\n\
DTEND:20240115T103000Z\r\n\
RRULE:MP1 2+ TU #10\r\n\
AALARM:20240115T085000Z;PT5M;2;\r\n\
CATEGORIES:MEETING;X-WORK\r\n\
CLASS:PUBLIC\r\n\
TRANSP:0\r\n\
X-EPOCAGENDAENTRYTYPE:APPOINTMENT\r\n\
END:VEVENT\r\n\
BEGIN:VTODO\r\n\
SUMMARY:Appeler Luc\r\n\
DUE:20240120T170000Z\r\n\
PRIORITY:2\r\n\
STATUS:NEEDS ACTION\r\n\
DALARM:20240120T160000Z\r\n\
END:VTODO\r\n\
END:VCALENDAR\r\n";

#[test]
fn vcal10_to_ical() {
    let out = conv(VCAL10, Format::VCalendar10, Format::ICalendar20);
    assert!(out.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:"));
    for line in [
        "SUMMARY:Réunion budget",
        "DESCRIPTION:Préparer\\nles chiffres",
        "LOCATION:Bureau 12",
        "DTSTART:20240115T090000Z",
        "DTEND:20240115T103000Z",
        "RRULE:FREQ=MONTHLY;BYDAY=2TU;COUNT=10",
        "CATEGORIES:MEETING,X-WORK",
        "CLASS:PUBLIC",
        "TRANSP:OPAQUE",
        "X-EPOCAGENDAENTRYTYPE:APPOINTMENT",
        "ACTION:AUDIO",
        "TRIGGER:-PT10M",
        "DURATION:PT5M",
        "REPEAT:2",
        "SUMMARY:Appeler Luc",
        "DUE:20240120T170000Z",
        "PRIORITY:5",
        "STATUS:NEEDS-ACTION",
        "ACTION:DISPLAY",
        "TRIGGER;RELATED=END:-PT1H",
        "DESCRIPTION:Appeler Luc",
    ] {
        assert_line(&out, line);
    }
    assert!(!out.contains("AALARM") && !out.contains("DALARM"));
    // And back to 1.0.
    let v10 = conv(&out, Format::ICalendar20, Format::VCalendar10);
    for line in [
        "RRULE:MP1 2+ TU #10",
        "AALARM:20240115T085000Z;PT5M;2;",
        "CATEGORIES:MEETING;X-WORK",
        "TRANSP:0",
        "PRIORITY:2",
        "STATUS:NEEDS ACTION",
        "DALARM:20240120T160000Z;;;",
    ] {
        assert_line(&v10, line);
    }
}

#[test]
fn unconvertible_rrule_is_kept() {
    let ics =
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:u\r\nSUMMARY:Thanksgiving\r\n\
DTSTART;VALUE=DATE:20241128\r\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let v10 = conv(ics, Format::ICalendar20, Format::VCalendar10);
    assert!(!has_line(&v10, "RRULE:"));
    // (calcard writes the rule parts in its own order.)
    assert_line(&v10, "X-ICAL20-RRULE:FREQ=YEARLY;BYDAY=4TH;BYMONTH=11");
    let back = conv(&v10, Format::VCalendar10, Format::ICalendar20);
    assert_line(&back, "RRULE:FREQ=YEARLY;BYDAY=4TH;BYMONTH=11");

    let vcs = "BEGIN:VCALENDAR\r\nVERSION:1.0\r\nBEGIN:VEVENT\r\nDTSTART:20240101T090000\r\n\
RRULE:D1 0900 1700 #4\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let ics = conv(vcs, Format::VCalendar10, Format::ICalendar20);
    assert_line(&ics, "X-VCAL10-RRULE:D1 0900 1700 #4");
    let v10 = conv(&ics, Format::ICalendar20, Format::VCalendar10);
    assert_line(&v10, "RRULE:D1 0900 1700 #4");
}

#[test]
fn custom_vtimezone_is_applied() {
    // A TZID that is no IANA name, with US rules.
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTIMEZONE\r\nTZID:My Office Time\r\n\
BEGIN:STANDARD\r\nDTSTART:20071104T020000\r\nTZOFFSETFROM:-0400\r\nTZOFFSETTO:-0500\r\n\
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\r\nEND:STANDARD\r\nBEGIN:DAYLIGHT\r\nDTSTART:20070311T020000\r\n\
TZOFFSETFROM:-0500\r\nTZOFFSETTO:-0400\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\r\nEND:DAYLIGHT\r\n\
END:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTART;TZID=My Office Time:20240115T090000\r\n\
DTEND;TZID=My Office Time:20240715T090000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let v10 = conv(ics, Format::ICalendar20, Format::VCalendar10);
    assert_line(&v10, "DTSTART:20240115T140000Z");
    assert_line(&v10, "DTEND:20240715T130000Z");
}

#[test]
fn alarm_without_base_time_is_kept() {
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTODO\r\nUID:a\r\nSUMMARY:No dates\r\n\
BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Hey\r\nTRIGGER;RELATED=END:-PT5M\r\nEND:VALARM\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
    let v10 = conv(ics, Format::ICalendar20, Format::VCalendar10);
    assert_line(&v10, "X-ICAL20-VALARM;RELATED=END:DISPLAY;-PT5M;Hey");
    let back = conv(&v10, Format::VCalendar10, Format::ICalendar20);
    assert_line(&back, "BEGIN:VALARM");
    assert_line(&back, "TRIGGER;RELATED=END:-PT5M");
    assert_line(&back, "DESCRIPTION:Hey");
}

#[test]
fn all_day_exdate_round_trip() {
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:a\r\nSUMMARY:Standup\r\n\
DTSTART;VALUE=DATE:20240101\r\nDTEND;VALUE=DATE:20240102\r\nRRULE:FREQ=DAILY;UNTIL=20240110\r\n\
EXDATE;VALUE=DATE:20240103,20240104\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let v10 = conv(ics, Format::ICalendar20, Format::VCalendar10);
    assert_line(&v10, "EXDATE:20240103T000000;20240104T000000");
    assert_line(&v10, "RRULE:D1 20240110T235959");
    let back = conv(&v10, Format::VCalendar10, Format::ICalendar20);
    assert_line(&back, "EXDATE;VALUE=DATE:20240103,20240104");
    assert_line(&back, "RRULE:FREQ=DAILY;UNTIL=20240110");
    assert_line(&back, "DTSTART;VALUE=DATE:20240101");
}

#[test]
fn photo_urls_and_pref_numbers() {
    let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Doe;John;;;\r\nFN:John Doe\r\n\
PHOTO;VALUE=uri:http://example.com/j.jpg\r\nEMAIL;TYPE=internet;PREF=1:j@d.com\r\nEND:VCARD\r\n";
    let v21 = conv(card, Format::VCard30, Format::VCard21);
    assert_line(&v21, "PHOTO;VALUE=URL:http://example.com/j.jpg");
    assert_line(&v21, "EMAIL;INTERNET;PREF:j@d.com");
    let back = conv(&v21, Format::VCard21, Format::VCard30);
    assert_line(&back, "PHOTO;VALUE=uri:http://example.com/j.jpg");
    assert_line(&back, "EMAIL;TYPE=INTERNET,PREF:j@d.com");
}

#[test]
fn empty_properties_are_not_sent_to_phones() {
    let card =
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Doe;John;;;\r\nFN:John Doe\r\nTITLE:\r\nNOTE:\r\nEND:VCARD\r\n";
    let v21 = conv(card, Format::VCard30, Format::VCard21);
    assert!(!v21.contains("TITLE") && !v21.contains("NOTE"));
    assert_line(&v21, "N:Doe;John;;;");
}

#[test]
fn windows_tzid_is_resolved() {
    // Exchange/Outlook style: a Windows zone name with a VTIMEZONE from 1601.
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:Microsoft Exchange Server 2010\r\n\
BEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\nBEGIN:STANDARD\r\nDTSTART:16010101T030000\r\n\
TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10\r\n\
END:STANDARD\r\nBEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n\
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n\
BEGIN:VEVENT\r\nUID:x\r\nDTSTART;TZID=W. Europe Standard Time:20240110T090000\r\n\
DTEND;TZID=W. Europe Standard Time:20240710T090000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    for tzid in ["W. Europe Standard Time", "Some Custom Zone"] {
        let item = ics.replace("W. Europe Standard Time", tzid);
        let v10 = conv(&item, Format::ICalendar20, Format::VCalendar10);
        assert_line(&v10, "DTSTART:20240110T080000Z");
        assert_line(&v10, "DTEND:20240710T070000Z");
    }
}

#[test]
fn local_time_alarm_becomes_relative() {
    let vcs = "BEGIN:VCALENDAR\r\nVERSION:1.0\r\nBEGIN:VEVENT\r\nSUMMARY:Dentist\r\n\
DTSTART:20240301T143000\r\nDTEND:20240301T150000\r\nAALARM:20240301T140000;;;\r\n\
DALARM:20240301T140000;;;Dentist soon\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let ics = conv(vcs, Format::VCalendar10, Format::ICalendar20);
    assert_line(&ics, "DTSTART:20240301T143000");
    assert_line(&ics, "TRIGGER:-PT30M");
    assert_line(&ics, "DESCRIPTION:Dentist soon");
    assert_eq!(ics.matches("BEGIN:VALARM").count(), 1);
    let v10 = conv(&ics, Format::ICalendar20, Format::VCalendar10);
    assert_line(&v10, "DALARM:20240301T140000;;;Dentist soon");
    assert_line(&v10, "AALARM:20240301T140000;;;");
}

#[test]
fn floating_times_stay_local() {
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:a\r\nSUMMARY:Local\r\n\
DTSTART:20240115T090000\r\nDURATION:PT1H30M\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let v10 = conv(ics, Format::ICalendar20, Format::VCalendar10);
    assert_line(&v10, "DTSTART:20240115T090000");
    assert_line(&v10, "DTEND:20240115T103000");
    assert!(!v10.contains("DURATION"));
}

#[test]
fn bare_vevent_and_lf_input() {
    let data = "BEGIN:VEVENT\nSUMMARY:Bare\nDTSTART:20240101T100000Z\nEND:VEVENT\n";
    let out = conv(data, Format::ICalendar20, Format::VCalendar10);
    assert!(out.starts_with("BEGIN:VCALENDAR\r\nVERSION:1.0\r\nBEGIN:VEVENT\r\n"));
    assert_line(&out, "SUMMARY:Bare");
}

/// xorshift64*: deterministic pseudo-random bytes without extra crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PAIRS: [(Format, Format); 4] = [
    (Format::VCard21, Format::VCard30),
    (Format::VCard30, Format::VCard21),
    (Format::VCalendar10, Format::ICalendar20),
    (Format::ICalendar20, Format::VCalendar10),
];

fn must_not_fail_hard(data: &[u8]) {
    for (from, to) in PAIRS {
        match convert(data, from, to) {
            Ok(out) => {
                assert!(std::str::from_utf8(&out).is_ok());
                assert!(
                    matches!(normalize_line_ends(&out), Cow::Borrowed(_)),
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
            }
            Err(ConvertError::Invalid { reason, .. }) => assert_ne!(reason, "parser failure", "{data:?}"),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn garbage_and_truncated_items_never_panic() {
    let samples = [vcard30(), PHONE_VCARD21.to_string(), ICAL_MEETING.to_string(), VCAL10.to_string()];
    // Every truncation of every sample.
    for s in &samples {
        let b = s.as_bytes();
        for cut in (0..b.len()).step_by(3) {
            must_not_fail_hard(&b[..cut]);
        }
    }
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let alphabet: &[u8] = b"BEGIN:VCARDENDVCALENDARVEVENTVTODOVALARM;=,:\\\r\n \t\"QUOTED-PRINTABLEBASE64CHARSET0123456789TZRRULE#+-\xff\xc3\xa9";
    for _ in 0..400 {
        // Random bytes from a content-line-ish alphabet, some inside a frame.
        let len = rng.below(300);
        let body: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        must_not_fail_hard(&body);
        for frame in [
            ("BEGIN:VCARD\r\nVERSION:2.1\r\n", "END:VCARD\r\n"),
            ("BEGIN:VCALENDAR\r\nVERSION:1.0\r\nBEGIN:VEVENT\r\n", "END:VEVENT\r\nEND:VCALENDAR\r\n"),
        ] {
            let mut item = frame.0.as_bytes().to_vec();
            item.extend_from_slice(&body);
            item.extend_from_slice(frame.1.as_bytes());
            must_not_fail_hard(&item);
        }
        // Byte flips in real items.
        for s in &samples {
            let mut b = s.as_bytes().to_vec();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] = alphabet[rng.below(alphabet.len())];
            }
            must_not_fail_hard(&b);
        }
    }
    // Fully random bytes.
    for _ in 0..200 {
        let len = rng.below(512);
        let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        must_not_fail_hard(&b);
    }
}
