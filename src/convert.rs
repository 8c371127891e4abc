//! Content format conversion between the PIM formats SyncML clients use.
//!
//! The server stores what a client sent together with its content type and
//! converts on the way out when a device wants another version (issue 4):
//! vCard 2.1 ↔ vCard 3.0 for contacts and vCalendar 1.0 ↔ iCalendar 2.0 for
//! events and tasks (VEVENT, VTODO, also several in one item as Nokia sends).
//!
//! Parsing is done by the `calcard` crate (maintained, used by Stalwart; it
//! reads vCard 2.1–4.0 and iCalendar/vCalendar 1.0 including
//! QUOTED-PRINTABLE, CHARSET, BASE64 and folding, and maps IANA, Windows and
//! Olson-path TZIDs to chrono-tz zones). calcard only writes vCard 3.0/4.0 and
//! iCalendar 2.0, and its 3.0 writer adds 2.1 artefacts (`CHARSET=`), so this
//! module maps calcard's parse into a small neutral model of content lines
//! and writes all four formats itself.
//!
//! What converts:
//! * vCard: parameters (`TEL;CELL;VOICE` ↔ `TEL;TYPE=CELL,VOICE`), QP and
//!   CHARSET (UTF-8, ISO-8859-1, raw 8-bit) → UTF-8 and back to
//!   `CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE` with soft line breaks, binary
//!   `ENCODING=BASE64;TYPE=JPEG` ↔ `ENCODING=b;TYPE=JPEG`, BDAY basic ↔
//!   extended form, `VALUE=URL` ↔ `VALUE=uri`, FN/N added for 3.0, empty
//!   properties left out for phones.
//! * Calendar: TZID times → UTC (`…Z`) for 1.0 (VTIMEZONE dropped), all-day
//!   DATE ↔ `T000000`..`T235900` local (also the P800 `T240000Z` form),
//!   DURATION → DTEND, RRULE 2.0 ↔ 1.0 for DAILY/WEEKLY/MONTHLY/YEARLY with
//!   interval and COUNT/UNTIL, VALARM ↔ AALARM/DALARM/MALARM with absolute
//!   times, STATUS, PRIORITY (1–9 ↔ 1/2/3), TRANSP, ';'-lists of 1.0.
//! * Properties without a mapping pass unchanged (X- ones too). A rule or an
//!   alarm the target cannot express is kept in `X-ICAL20-RRULE`,
//!   `X-VCAL10-RRULE` or `X-ICAL20-VALARM` and restored on the way back.
//!
//! Known limits: 1.0 rules with time lists or nested rules, and 2.0 rules
//! with BYHOUR/BYWEEKNO/yearly BYDAY/several BYSETPOS are kept as X- lines,
//! not converted; times go to UTC, so a recurring event with a TZID shifts by
//! the DST difference on a 1.0 device; floating (local) times stay local;
//! per-device quirks (local time instead of UTC, field lengths, `X-`
//! categories) are the caller's rules, not applied here.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine as _;
use calcard::common::timezone::Tz;
use calcard::common::{IanaString, PartialDateTime};
use calcard::icalendar::{ICalendar, ICalendarComponentType, ICalendarParameterValue, ICalendarValue, Uri};
use calcard::vcard::{VCard, VCardParameterName, VCardParameterValue, VCardValue};
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};

/// A content format of a PIM item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// vCard 2.1 (`text/x-vcard`), as virtually all phones send contacts.
    VCard21,
    /// vCard 3.0 (`text/vcard`, RFC 2426).
    VCard30,
    /// vCalendar 1.0 (`text/x-vcalendar`), events and todos of phones.
    VCalendar10,
    /// iCalendar 2.0 (`text/calendar`, RFC 5545).
    ICalendar20,
    /// Plain text notes (`text/plain`).
    PlainText,
}

/// Which family of items a format holds; conversion only happens within one.
#[derive(PartialEq, Eq)]
enum Kind {
    Contact,
    Calendar,
    Note,
}

impl Format {
    /// From a MIME type and version as used in SyncML Meta/Type and DevInf CTType/VerCT
    /// ("text/x-vcard" 2.1, "text/vcard" 3.0 (also "text/directory"), "text/x-vcalendar" 1.0,
    ///  "text/calendar" 2.0, "text/plain"); when the version is missing, infer from the data
    /// (VERSION: line) if given.
    pub fn from_type(content_type: &str, version: Option<&str>, data: Option<&[u8]>) -> Option<Format> {
        // Meta/Type may carry parameters ("text/plain; charset=utf-8").
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let version = version
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .or_else(|| data.and_then(version_in_data));
        match mime.as_str() {
            "text/x-vcard" | "text/vcard" | "text/directory" => match version.as_deref() {
                Some("2.1") => Some(Format::VCard21),
                Some("3.0") => Some(Format::VCard30),
                Some(_) => None,
                None if mime == "text/x-vcard" => Some(Format::VCard21),
                None => Some(Format::VCard30),
            },
            "text/x-vcalendar" | "text/calendar" => match version.as_deref() {
                Some("1.0") => Some(Format::VCalendar10),
                Some("2.0") => Some(Format::ICalendar20),
                Some(_) => None,
                None if mime == "text/x-vcalendar" => Some(Format::VCalendar10),
                None => Some(Format::ICalendar20),
            },
            "text/plain" => Some(Format::PlainText),
            _ => None,
        }
    }

    /// MIME type and version string of this format.
    pub fn content_type(self) -> (&'static str, &'static str) {
        match self {
            Format::VCard21 => ("text/x-vcard", "2.1"),
            Format::VCard30 => ("text/vcard", "3.0"),
            Format::VCalendar10 => ("text/x-vcalendar", "1.0"),
            Format::ICalendar20 => ("text/calendar", "2.0"),
            Format::PlainText => ("text/plain", "1.0"),
        }
    }

    fn kind(self) -> Kind {
        match self {
            Format::VCard21 | Format::VCard30 => Kind::Contact,
            Format::VCalendar10 | Format::ICalendar20 => Kind::Calendar,
            Format::PlainText => Kind::Note,
        }
    }
}

/// The first `VERSION:` value in the item, if any.
fn version_in_data(data: &[u8]) -> Option<String> {
    data.split(|&b| b == b'\n').find_map(|line| {
        let line = std::str::from_utf8(line).ok()?.trim();
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("VERSION").then(|| value.trim().to_string())
    })
}

/// Why an item could not be converted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    /// The two formats hold different kinds of items, or one is plain text.
    #[error("cannot convert {from:?} to {to:?}")]
    Unsupported {
        /// Format of the input.
        from: Format,
        /// Requested format.
        to: Format,
    },
    /// The input is not an item of the stated format.
    #[error("invalid {format:?} item: {reason}")]
    Invalid {
        /// The stated format of the input.
        format: Format,
        /// What is wrong.
        reason: String,
    },
}

/// Converts an item between formats of the same kind (contact ↔ contact, calendar ↔ calendar).
/// Same format → returned unchanged (borrowed). Unsupported pairs → error.
pub fn convert<'a>(data: &'a [u8], from: Format, to: Format) -> Result<Cow<'a, [u8]>, ConvertError> {
    if from == to {
        return Ok(Cow::Borrowed(data));
    }
    if from.kind() != to.kind() || from.kind() == Kind::Note {
        return Err(ConvertError::Unsupported { from, to });
    }
    let text = decode_input(data);
    let invalid = |reason: &str| ConvertError::Invalid { format: from, reason: reason.to_string() };
    let out = match from.kind() {
        Kind::Contact => {
            // calcard is written not to panic; catch_unwind is a second line of
            // defence because items come from arbitrary clients.
            let parsed = std::panic::catch_unwind(|| VCard::parse(text.as_str()))
                .map_err(|_| invalid("parser failure"))?
                .map_err(|_| invalid("no BEGIN:VCARD"))?;
            let mut card = vcard_from_calcard(&parsed, from == Format::VCard21);
            if to == Format::VCard30 {
                vcard_to_30(&mut card);
            } else {
                vcard_to_21(&mut card);
            }
            write_vcard(&card, to == Format::VCard21)
        }
        _ => {
            let text = if from == Format::VCalendar10 { vcal_date_lists(&text) } else { text };
            let parsed = std::panic::catch_unwind(|| ICalendar::parse(text.as_str()))
                .map_err(|_| invalid("parser failure"))?
                .map_err(|_| invalid("no BEGIN:VCALENDAR"))?;
            let mut cal = ical_from_calcard(&parsed, from == Format::VCalendar10)
                .ok_or_else(|| invalid("no calendar component"))?;
            if to == Format::VCalendar10 {
                let tz = TzContext::new(&parsed, &cal);
                cal_to_10(&mut cal, &tz);
            } else {
                cal_to_20(&mut cal);
            }
            write_ical(&cal, to == Format::VCalendar10)
        }
    };
    Ok(Cow::Owned(out.into_bytes()))
}

/// Makes line ends CRLF (lone LF or lone CR become CRLF), as vCard and
/// iCalendar require; XML parsers on the way in may have turned them into LF.
pub fn normalize_line_ends(data: &[u8]) -> Cow<'_, [u8]> {
    let ok = data.iter().enumerate().all(|(i, &b)| match b {
        b'\n' => i > 0 && data[i - 1] == b'\r',
        b'\r' => data.get(i + 1) == Some(&b'\n'),
        _ => true,
    });
    if ok {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Bytes to text: each line that is not UTF-8 is taken as ISO-8859-1, which
/// is what 8-bit vCard 2.1 / vCalendar 1.0 senders use without QP.
fn decode_input(data: &[u8]) -> String {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    if let Ok(s) = std::str::from_utf8(data) {
        return s.to_string();
    }
    let mut out = String::with_capacity(data.len() + 16);
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match std::str::from_utf8(line) {
            Ok(s) => out.push_str(s),
            Err(_) => out.extend(line.iter().map(|&b| b as char)),
        }
    }
    out
}

/// vCalendar 1.0 separates EXDATE/RDATE values with ';', which calcard
/// (reading them as iCalendar) would cut at the first one: use ','.
fn vcal_date_lists(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let upper = line.get(..6).unwrap_or("").to_ascii_uppercase();
        match line.find(':') {
            Some(colon) if upper == "EXDATE" || upper.starts_with("RDATE") => {
                out.push_str(&line[..=colon]);
                out.push_str(&line[colon + 1..].replace(';', ","));
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// Repairs UTF-8 that a QP decoder read as ISO-8859-1 ("LefÃ¨vre"), which
/// happens when a phone sends UTF-8 QUOTED-PRINTABLE without CHARSET.
fn repair_mojibake(s: String) -> String {
    if s.is_ascii() || s.chars().any(|c| c as u32 > 0xFF) {
        return s;
    }
    let bytes: Vec<u8> = s.chars().map(|c| c as u32 as u8).collect();
    match String::from_utf8(bytes) {
        Ok(fixed) => fixed,
        Err(_) => s,
    }
}

// ---------------------------------------------------------------------------
// Neutral model: content lines with unescaped values.

#[derive(Debug, Clone, PartialEq)]
struct Param {
    name: String,
    /// Empty for a bare parameter.
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// `;`-separated components, each a `,`-separated list; unescaped.
    Text(Vec<Vec<String>>),
    /// Inline binary (vCard PHOTO/LOGO/SOUND/KEY, iCalendar ATTACH).
    Binary(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
struct Prop {
    group: Option<String>,
    name: String,
    params: Vec<Param>,
    value: Value,
}

#[derive(Debug, Clone, PartialEq)]
struct Comp {
    name: String,
    props: Vec<Prop>,
    subs: Vec<Comp>,
}

impl Prop {
    fn new(name: &str, value: &str) -> Prop {
        Prop {
            group: None,
            name: name.to_string(),
            params: Vec::new(),
            value: Value::Text(vec![vec![value.to_string()]]),
        }
    }

    fn with_comps(name: &str, comps: Vec<String>) -> Prop {
        Prop {
            group: None,
            name: name.to_string(),
            params: Vec::new(),
            value: Value::Text(comps.into_iter().map(|c| vec![c]).collect()),
        }
    }

    /// The first item of the first component, or "".
    fn first(&self) -> &str {
        match &self.value {
            Value::Text(c) => c.first().and_then(|i| i.first()).map(String::as_str).unwrap_or(""),
            Value::Binary(_) => "",
        }
    }

    /// Component `i` as one string (items joined by ',').
    fn comp(&self, i: usize) -> String {
        match &self.value {
            Value::Text(c) => c.get(i).map(|items| items.join(",")).unwrap_or_default(),
            Value::Binary(_) => String::new(),
        }
    }

    /// The whole value: components joined by ';', items by ','.
    fn joined(&self) -> String {
        match &self.value {
            Value::Text(c) => c.iter().map(|i| i.join(",")).collect::<Vec<_>>().join(";"),
            Value::Binary(_) => String::new(),
        }
    }

    /// All items of all components.
    fn items(&self) -> Vec<String> {
        match &self.value {
            Value::Text(c) => c.iter().flatten().cloned().collect(),
            Value::Binary(_) => Vec::new(),
        }
    }

    fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    fn param_value(&self, name: &str) -> Option<&str> {
        self.param(name).and_then(|p| p.values.first()).map(String::as_str)
    }

    fn remove_param(&mut self, name: &str) {
        self.params.retain(|p| !p.name.eq_ignore_ascii_case(name));
    }

    fn set_param(&mut self, name: &str, value: &str) {
        self.remove_param(name);
        self.params.push(Param { name: name.to_string(), values: vec![value.to_string()] });
    }

    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

impl Comp {
    fn prop(&self, name: &str) -> Option<&Prop> {
        self.props.iter().find(|p| p.is(name))
    }

    fn has(&self, name: &str) -> bool {
        self.prop(name).is_some()
    }
}

// ---------------------------------------------------------------------------
// Dates and durations.

/// A date or date-time value as found in vCalendar/iCalendar items.
#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    Date(NaiveDate),
    Floating(NaiveDateTime),
    Utc(NaiveDateTime),
}

impl When {
    /// Parses `YYYYMMDD`, `YYYY-MM-DD`, `YYYYMMDDTHHMMSS[Z]` (also with `:`/`-`).
    /// Hour 24 (P800 all-day quirk) becomes midnight of the next day.
    fn parse(s: &str) -> Option<When> {
        let s = s.trim();
        let utc = s.ends_with('Z') || s.ends_with('z');
        let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
        let has_time = s.contains('T') || s.contains('t');
        let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|d| d.parse::<u32>().ok());
        let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(4..6)?, num(6..8)?)?;
        if !has_time {
            return (digits.len() == 8).then_some(When::Date(date));
        }
        let (h, m) = (num(8..10)?, num(10..12)?);
        let sec = num(12..14).unwrap_or(0);
        let dt = if h == 24 && m == 0 && sec == 0 {
            date.succ_opt()?.and_hms_opt(0, 0, 0)?
        } else {
            date.and_hms_opt(h, m, sec.min(59))?
        };
        Some(if utc { When::Utc(dt) } else { When::Floating(dt) })
    }

    fn format(&self) -> String {
        match self {
            When::Date(d) => d.format("%Y%m%d").to_string(),
            When::Floating(t) => t.format("%Y%m%dT%H%M%S").to_string(),
            When::Utc(t) => t.format("%Y%m%dT%H%M%SZ").to_string(),
        }
    }

    fn naive(&self) -> NaiveDateTime {
        match self {
            When::Date(d) => d.and_time(chrono::NaiveTime::MIN),
            When::Floating(t) | When::Utc(t) => *t,
        }
    }

    /// `secs` later; an offset past chrono's range (a DURATION of 10^15 s
    /// in an item) leaves the value as it is instead of panicking.
    fn add(&self, secs: i64) -> When {
        let Some(d) = Duration::try_seconds(secs) else { return *self };
        match self {
            When::Date(day) => match day.and_time(chrono::NaiveTime::MIN).checked_add_signed(d) {
                Some(t) if t.time() == chrono::NaiveTime::MIN => When::Date(t.date()),
                Some(t) => When::Floating(t),
                None => *self,
            },
            When::Floating(t) => When::Floating(t.checked_add_signed(d).unwrap_or(*t)),
            When::Utc(t) => When::Utc(t.checked_add_signed(d).unwrap_or(*t)),
        }
    }
}

fn format_pdt(p: &PartialDateTime) -> String {
    if let (None, None, None, None, Some(th)) = (p.year, p.month, p.day, p.hour, p.tz_hour) {
        // A UTC offset (TZOFFSETFROM/TZOFFSETTO).
        let sign = if p.tz_minus { '-' } else { '+' };
        return format!("{sign}{th:02}{:02}", p.tz_minute.unwrap_or(0));
    }
    let mut s = match (p.year, p.month, p.day) {
        (Some(y), Some(m), Some(d)) => format!("{y:04}{m:02}{d:02}"),
        (None, Some(m), Some(d)) => format!("--{m:02}{d:02}"),
        (Some(y), Some(m), None) => format!("{y:04}-{m:02}"),
        (Some(y), None, None) => format!("{y:04}"),
        _ => String::new(),
    };
    if let Some(h) = p.hour {
        s.push_str(&format!("T{:02}{:02}{:02}", h, p.minute.unwrap_or(0), p.second.unwrap_or(0)));
        match (p.tz_hour, p.tz_minute) {
            (Some(0), None | Some(0)) => s.push('Z'),
            (Some(th), tm) => {
                // A numeric offset is not valid iCalendar: normalise to UTC.
                if let Some(r) = p.to_date_time() {
                    // Checked: a date at the end of chrono's range would overflow.
                    let utc = r.offset.and_then(|off| {
                        r.date_time.checked_sub_signed(Duration::seconds(i64::from(off.local_minus_utc())))
                    });
                    if let Some(utc) = utc {
                        return utc.format("%Y%m%dT%H%M%SZ").to_string();
                    }
                }
                s.push_str(&format!("{}{:02}{:02}", if p.tz_minus { '-' } else { '+' }, th, tm.unwrap_or(0)));
            }
            _ => {}
        }
    }
    s
}

/// Parses an RFC 5545 duration ("-PT15M", "P1DT2H", "P1W") into seconds.
fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let rest = rest.strip_prefix(['P', 'p'])?;
    let mut total: i64 = 0;
    let mut num: Option<i64> = None;
    let mut in_time = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            '0'..='9' => {
                let d = c.to_digit(10)? as i64;
                num = Some(num.unwrap_or(0).checked_mul(10)?.checked_add(d)?);
            }
            'T' => in_time = true,
            unit => {
                let n = num.take()?;
                let mult = match (unit, in_time) {
                    ('W', false) => 604_800,
                    ('D', false) => 86_400,
                    ('H', true) => 3_600,
                    ('M', true) => 60,
                    ('S', true) => 1,
                    _ => return None,
                };
                total = total.checked_add(n.checked_mul(mult)?)?;
            }
        }
    }
    if num.is_some() {
        return None;
    }
    // `total` is never i64::MIN (it is a sum of non-negative values).
    Some(if neg { -total } else { total })
}

fn format_duration(secs: i64) -> String {
    let mut s = String::new();
    if secs < 0 {
        s.push('-');
    }
    let mut n = secs.unsigned_abs();
    s.push('P');
    if n == 0 {
        s.push_str("T0S");
        return s;
    }
    if n % 604_800 == 0 {
        return format!("{s}{}W", n / 604_800);
    }
    let days = n / 86_400;
    n %= 86_400;
    if days > 0 {
        s.push_str(&format!("{days}D"));
    }
    if n > 0 {
        s.push('T');
        let (h, m, sec) = (n / 3600, (n % 3600) / 60, n % 60);
        if h > 0 {
            s.push_str(&format!("{h}H"));
        }
        if m > 0 {
            s.push_str(&format!("{m}M"));
        }
        if sec > 0 {
            s.push_str(&format!("{sec}S"));
        }
    }
    s
}

// ---------------------------------------------------------------------------
// vCard.

/// Properties whose values are comma-separated lists.
const VCARD_LIST_PROPS: &[&str] = &["CATEGORIES", "NICKNAME"];
/// Properties whose values must not be backslash-escaped (URIs, dates, binary).
const VCARD_RAW_PROPS: &[&str] =
    &["URL", "BDAY", "REV", "GEO", "TZ", "PHOTO", "LOGO", "SOUND", "KEY", "VERSION", "AGENT", "ANNIVERSARY"];

fn is_x_or_unknown(name: &str) -> bool {
    name.len() > 2 && name.as_bytes()[..2].eq_ignore_ascii_case(b"X-")
}

fn vcard_param_text(v: &VCardParameterValue) -> Option<String> {
    Some(match v {
        VCardParameterValue::Text(t) => t.clone(),
        VCardParameterValue::Integer(i) => i.to_string(),
        VCardParameterValue::Timestamp(t) => t.to_string(),
        VCardParameterValue::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        VCardParameterValue::ValueType(t) => t.as_str().to_string(),
        VCardParameterValue::Type(t) => t.as_str().to_string(),
        VCardParameterValue::Calscale(t) => t.as_str().to_string(),
        VCardParameterValue::Level(t) => t.as_str().to_string(),
        VCardParameterValue::Phonetic(t) => t.as_str().to_string(),
        VCardParameterValue::Jscomps(_) | VCardParameterValue::Null => return None,
    })
}

/// Maps calcard's parse into the neutral model. Bare 2.1 parameters
/// (`TEL;CELL`), `PREF` and `TYPE=` values all become one `TYPE` list.
fn vcard_from_calcard(card: &VCard, legacy: bool) -> Comp {
    let mut props = Vec::new();
    for entry in &card.entries {
        let name = entry.name.as_str().to_ascii_uppercase();
        if matches!(name.as_str(), "BEGIN" | "END" | "VERSION") {
            continue;
        }
        let mut types: Vec<String> = Vec::new();
        let mut params: Vec<Param> = Vec::new();
        for p in &entry.params {
            let value = vcard_param_text(&p.value);
            match (&p.name, value) {
                (VCardParameterName::Type, Some(v)) => types.push(v),
                // vCard 4.0 style PREF=n has no 2.1/3.0 form but TYPE=PREF.
                (VCardParameterName::Pref, _) => types.push("PREF".into()),
                (VCardParameterName::Other(n), None) => types.push(n.to_ascii_uppercase()),
                (n, None) => params.push(Param { name: n.as_str().to_ascii_uppercase(), values: Vec::new() }),
                (n, Some(v)) => {
                    let pname = n.as_str().to_ascii_uppercase();
                    match params.iter_mut().find(|p| p.name == pname) {
                        Some(existing) => existing.values.push(v),
                        None => params.push(Param { name: pname, values: vec![v] }),
                    }
                }
            }
        }
        let mut comps: Vec<Vec<String>> = Vec::new();
        let mut binary = None;
        for v in &entry.values {
            let text = match v {
                VCardValue::Text(t) => t.clone(),
                VCardValue::Integer(i) => i.to_string(),
                VCardValue::Float(f) => f.to_string(),
                VCardValue::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
                VCardValue::PartialDateTime(p) => format_pdt(p),
                VCardValue::Binary(d) => {
                    if !types.iter().any(|t| !t.eq_ignore_ascii_case("PREF")) {
                        if let Some(ct) = &d.content_type {
                            let sub = ct.rsplit('/').next().unwrap_or(ct);
                            types.push(sub.to_ascii_uppercase());
                        }
                    }
                    binary = Some(d.data.clone());
                    continue;
                }
                VCardValue::Sex(s) => s.as_str().to_string(),
                VCardValue::GramGender(g) => g.as_str().to_string(),
                VCardValue::Kind(k) => k.as_str().to_string(),
                VCardValue::Component(items) => {
                    comps.push(items.clone());
                    continue;
                }
            };
            comps.push(vec![text]);
        }
        if legacy {
            for items in &mut comps {
                for item in items.iter_mut() {
                    *item = repair_mojibake(std::mem::take(item));
                }
            }
        }
        if VCARD_LIST_PROPS.contains(&name.as_str()) {
            // One list: "A,B" parsed as two values, or 2.1 phones' "A;B".
            let items: Vec<String> =
                comps
                    .into_iter()
                    .flatten()
                    .flat_map(|s| {
                        if legacy {
                            s.split(';').map(str::to_string).collect::<Vec<_>>()
                        } else {
                            vec![s]
                        }
                    })
                    .filter(|s| !s.is_empty())
                    .collect();
            comps = vec![items];
        }
        if !types.is_empty() {
            let mut seen: Vec<String> = Vec::new();
            for t in types {
                if !seen.iter().any(|s| s.eq_ignore_ascii_case(&t)) {
                    seen.push(t);
                }
            }
            params.insert(0, Param { name: "TYPE".into(), values: seen });
        }
        let value = match binary {
            Some(b) => Value::Binary(b),
            None => Value::Text(comps),
        };
        props.push(Prop { group: entry.group.clone(), name, params, value });
    }
    Comp { name: "VCARD".into(), props, subs: Vec::new() }
}

/// Rewrites `YYYYMMDD` dates as `YYYY-MM-DD` (extended form, RFC 2426) or back.
fn vcard_dates(card: &mut Comp, extended: bool) {
    for p in card.props.iter_mut().filter(|p| p.is("BDAY") || p.is("ANNIVERSARY")) {
        if let Value::Text(c) = &mut p.value {
            for item in c.iter_mut().flatten() {
                if let Some(When::Date(d)) = When::parse(item) {
                    *item = if extended {
                        d.format("%Y-%m-%d").to_string()
                    } else {
                        d.format("%Y%m%d").to_string()
                    };
                }
            }
        }
    }
}

/// 2.1 → 3.0 fix-ups: FN and N are mandatory in 3.0; `VALUE=URL` is `uri`.
fn vcard_to_30(card: &mut Comp) {
    vcard_dates(card, true);
    for p in &mut card.props {
        if p.param_value("VALUE").is_some_and(|v| v.eq_ignore_ascii_case("URL")) {
            p.set_param("VALUE", "uri");
        }
        // 2.1 phones mark e-mail kinds and unknown flags as bare params; only
        // keep them as TYPE values (done at parse time).
    }
    if !card.has("FN") {
        let fn_text = card
            .prop("N")
            .map(|n| {
                let parts = [n.comp(3), n.comp(1), n.comp(2), n.comp(0), n.comp(4)];
                parts.iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join(" ")
            })
            .filter(|s| !s.is_empty())
            .or_else(|| card.prop("ORG").map(|o| o.comp(0)))
            .unwrap_or_default();
        card.props.insert(0, Prop::new("FN", &fn_text));
    }
    // RFC 2426 N and ADR have a fixed number of components; phones drop trailing ones.
    for p in &mut card.props {
        let want = if p.is("N") {
            5
        } else if p.is("ADR") {
            7
        } else {
            continue;
        };
        if let Value::Text(c) = &mut p.value {
            while c.len() < want {
                c.push(vec![String::new()]);
            }
        }
    }
    if !card.has("N") {
        card.props.insert(0, Prop::with_comps("N", vec![String::new(); 5]));
    }
}

/// 3.0 → 2.1 fix-ups.
fn vcard_to_21(card: &mut Comp) {
    vcard_dates(card, false);
    for p in &mut card.props {
        if p.param_value("VALUE").is_some_and(|v| v.eq_ignore_ascii_case("uri")) {
            p.set_param("VALUE", "URL");
        }
    }
}

fn write_vcard(card: &Comp, legacy: bool) -> String {
    let mut out = String::new();
    out.push_str("BEGIN:VCARD\r\nVERSION:");
    out.push_str(if legacy { "2.1" } else { "3.0" });
    out.push_str("\r\n");
    for p in &card.props {
        // Some phones (Siemens SX1) crash on empty properties; N stays as 2.1 requires it.
        let empty = matches!(&p.value, Value::Text(c) if c.iter().flatten().all(|i| i.is_empty()));
        if legacy && empty && !p.is("N") {
            continue;
        }
        let raw = VCARD_RAW_PROPS.contains(&p.name.as_str());
        let x = is_x_or_unknown(&p.name);
        write_prop(&mut out, p, legacy, Escape::for_prop(raw, x), true);
    }
    out.push_str("END:VCARD\r\n");
    out
}

// ---------------------------------------------------------------------------
// Writing content lines.

/// How values of a property are escaped.
#[derive(Clone, Copy, PartialEq)]
enum Escape {
    /// Text: `\`, `;`, `,` and newlines (legacy: only `;`, newlines via QP).
    Text,
    /// X- and unknown properties: only backslash and newlines (legacy: none).
    Minimal,
    /// URIs, dates, recurrence rules: nothing.
    None,
}

impl Escape {
    fn for_prop(raw: bool, x: bool) -> Escape {
        if raw {
            Escape::None
        } else if x {
            Escape::Minimal
        } else {
            Escape::Text
        }
    }
}

fn escape_item(s: &str, legacy: bool, esc: Escape, out: &mut String) {
    for c in s.chars() {
        match (c, esc, legacy) {
            // A line break can only be carried by escaping (modern) or QP (legacy).
            ('\r' | '\n', Escape::None, false) => {}
            (_, Escape::None, _) => out.push(c),
            ('\\', _, false) => out.push_str("\\\\"),
            ('\n', _, false) => out.push_str("\\n"),
            ('\r', _, false) => {}
            (';', Escape::Text, _) => out.push_str("\\;"),
            (',', Escape::Text, false) => out.push_str("\\,"),
            _ => out.push(c),
        }
    }
}

fn write_param_value(out: &mut String, v: &str) {
    // Quote values with separators (RFC 2425/5545); legacy formats have no quoting.
    if v.contains([';', ':', ',']) {
        out.push('"');
        out.push_str(&v.replace('"', "'"));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

/// Writes one property. Legacy (2.1 / 1.0) style: bare TYPE values, QP for
/// non-ASCII or multi-line values, `ENCODING=BASE64` with a blank line after.
/// Modern (3.0 / 2.0): `TYPE=a,b`, backslash escapes, `ENCODING=b` (vCard)
/// or `ENCODING=BASE64;VALUE=BINARY` (iCalendar), lines folded at 75 octets.
fn write_prop(out: &mut String, p: &Prop, legacy: bool, esc: Escape, vcard: bool) {
    let mut line = String::new();
    if let Some(g) = &p.group {
        line.push_str(g);
        line.push('.');
    }
    line.push_str(&p.name);
    let binary = matches!(p.value, Value::Binary(_));
    for param in &p.params {
        if param.name.eq_ignore_ascii_case("ENCODING")
            || param.name.eq_ignore_ascii_case("CHARSET")
            || (binary && vcard && param.name == "TYPE")
            || (binary && !vcard && param.name == "VALUE")
        {
            continue;
        }
        if param.values.is_empty() {
            line.push(';');
            line.push_str(&param.name);
        } else if legacy && param.name == "TYPE" {
            for v in &param.values {
                line.push(';');
                line.push_str(&v.to_ascii_uppercase());
            }
        } else {
            line.push(';');
            line.push_str(&param.name);
            line.push('=');
            for (i, v) in param.values.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                write_param_value(&mut line, v);
            }
        }
    }
    // Names and parameters never carry line breaks (garbage input).
    line.retain(|c| c != '\r' && c != '\n');
    match &p.value {
        Value::Binary(data) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(data);
            // Media type after the encoding, as phones write it (`;ENCODING=BASE64;TYPE=JPEG`).
            let media: String = p
                .param("TYPE")
                .filter(|_| vcard)
                .map(|t| {
                    t.values.iter().map(|v| format!(";TYPE={}", v.to_ascii_uppercase())).collect::<String>()
                })
                .unwrap_or_default()
                .replace(['\r', '\n'], "");
            if legacy {
                line.push_str(";ENCODING=BASE64");
                line.push_str(&media);
                line.push(':');
                out.push_str(&line);
                out.push_str("\r\n");
                // Folded base64 followed by an empty line, as 2.1 requires.
                for chunk in b64.as_bytes().chunks(72) {
                    out.push(' ');
                    out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
                    out.push_str("\r\n");
                }
                out.push_str("\r\n");
            } else {
                if vcard {
                    line.push_str(";ENCODING=b");
                    line.push_str(&media);
                    line.push(':');
                } else {
                    line.push_str(";ENCODING=BASE64;VALUE=BINARY:");
                }
                line.push_str(&b64);
                fold_line(out, &line);
            }
        }
        Value::Text(comps) => {
            let mut value = String::new();
            for (i, items) in comps.iter().enumerate() {
                if i > 0 {
                    value.push(';');
                }
                for (j, item) in items.iter().enumerate() {
                    if j > 0 {
                        value.push(',');
                    }
                    escape_item(item, legacy, esc, &mut value);
                }
            }
            if legacy && (!value.is_ascii() || value.contains(['\r', '\n']) || value.ends_with(' ')) {
                if !value.is_ascii() {
                    line.push_str(";CHARSET=UTF-8");
                }
                line.push_str(";ENCODING=QUOTED-PRINTABLE:");
                write_qp(out, line, &value);
            } else {
                line.push(':');
                line.push_str(&value);
                if legacy {
                    // Some phones break on folded lines: legacy lines stay whole.
                    out.push_str(&line);
                    out.push_str("\r\n");
                } else {
                    fold_line(out, &line);
                }
            }
        }
    }
}

/// Folds at 75 octets without splitting UTF-8 sequences (RFC 5545 3.1).
fn fold_line(out: &mut String, line: &str) {
    let mut len = 0;
    for c in line.chars() {
        let w = c.len_utf8();
        if len + w > 75 {
            out.push_str("\r\n ");
            len = 1;
        }
        out.push(c);
        len += w;
    }
    out.push_str("\r\n");
}

/// QUOTED-PRINTABLE with `=` soft line breaks keeping lines at most 76 chars.
/// Line breaks in the value are encoded as `=0D=0A`.
fn write_qp(out: &mut String, head: String, value: &str) {
    let mut line = head;
    let mut value_bytes: Vec<u8> = Vec::with_capacity(value.len());
    // Normalise newlines to CRLF before encoding.
    let vb = value.as_bytes();
    for (i, &b) in vb.iter().enumerate() {
        if b == b'\n' && (i == 0 || vb[i - 1] != b'\r') {
            value_bytes.push(b'\r');
        }
        value_bytes.push(b);
    }
    let n = value_bytes.len();
    for (i, &b) in value_bytes.iter().enumerate() {
        let last = i + 1 == n;
        let tok = if (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=' {
            (b as char).to_string()
        } else {
            format!("={b:02X}")
        };
        if line.len() + tok.len() > 75 {
            out.push_str(&line);
            out.push_str("=\r\n");
            line.clear();
        }
        line.push_str(&tok);
    }
    out.push_str(&line);
    out.push_str("\r\n");
}

// ---------------------------------------------------------------------------
// iCalendar / vCalendar.

/// Properties whose several values form one comma-separated list.
const ICAL_LIST_PROPS: &[&str] = &["CATEGORIES", "RESOURCES", "EXDATE", "RDATE", "FREEBUSY"];
/// Properties that are escaped as TEXT.
const ICAL_TEXT_PROPS: &[&str] = &[
    "SUMMARY",
    "DESCRIPTION",
    "LOCATION",
    "COMMENT",
    "CATEGORIES",
    "RESOURCES",
    "CONTACT",
    "UID",
    "PRODID",
    "TZNAME",
    "RELATED-TO",
    "STATUS",
    "CLASS",
    "TRANSP",
    "ACTION",
];
/// Date-time properties converted between time zone forms.
const ICAL_DATE_PROPS: &[&str] = &[
    "DTSTART",
    "DTEND",
    "DUE",
    "COMPLETED",
    "RECURRENCE-ID",
    "EXDATE",
    "RDATE",
    "DTSTAMP",
    "CREATED",
    "LAST-MODIFIED",
];
/// Where a recurrence rule without 1.0 (or 2.0) equivalent is kept.
const X_ICAL_RRULE: &str = "X-ICAL20-RRULE";
const X_VCAL_RRULE: &str = "X-VCAL10-RRULE";
/// Where an alarm that vCalendar 1.0 cannot express is kept.
const X_ICAL_VALARM: &str = "X-ICAL20-VALARM";
/// Where an iCalendar alarm without 1.0 equivalent is kept is not needed:
/// AUDIO/DISPLAY/EMAIL all map. Limit on component nesting from input.
const MAX_DEPTH: usize = 8;

fn ical_param_text(v: &ICalendarParameterValue) -> Option<String> {
    Some(match v {
        ICalendarParameterValue::Text(t) => t.clone(),
        ICalendarParameterValue::Integer(i) => i.to_string(),
        ICalendarParameterValue::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        ICalendarParameterValue::Uri(u) => uri_text(u),
        ICalendarParameterValue::Cutype(x) => x.as_str().to_string(),
        ICalendarParameterValue::Fbtype(x) => x.as_str().to_string(),
        ICalendarParameterValue::Partstat(x) => x.as_str().to_string(),
        ICalendarParameterValue::Related(x) => x.as_str().to_string(),
        ICalendarParameterValue::Reltype(x) => x.as_str().to_string(),
        ICalendarParameterValue::Role(x) => x.as_str().to_string(),
        ICalendarParameterValue::ScheduleAgent(x) => x.as_str().to_string(),
        ICalendarParameterValue::ScheduleForceSend(x) => x.as_str().to_string(),
        ICalendarParameterValue::Value(x) => x.as_str().to_string(),
        ICalendarParameterValue::Display(x) => x.as_str().to_string(),
        ICalendarParameterValue::Feature(x) => x.as_str().to_string(),
        ICalendarParameterValue::Duration(d) => d.to_string(),
        ICalendarParameterValue::Linkrel(x) => x.as_str().to_string(),
        ICalendarParameterValue::Null => return None,
    })
}

fn uri_text(u: &Uri) -> String {
    match u {
        Uri::Location(s) => s.clone(),
        Uri::Data(d) => format!(
            "data:{};base64,{}",
            d.content_type.as_deref().unwrap_or("application/octet-stream"),
            base64::engine::general_purpose::STANDARD.encode(&d.data)
        ),
    }
}

/// Maps calcard's flat component list (children by index) into a tree.
fn ical_from_calcard(cal: &ICalendar, legacy: bool) -> Option<Comp> {
    let root = cal.components.first()?;
    let mut comp = ical_comp(cal, 0, legacy, 0)?;
    if root.component_type != ICalendarComponentType::VCalendar {
        // A bare VEVENT/VTODO: wrap it.
        comp = Comp { name: "VCALENDAR".into(), props: Vec::new(), subs: vec![comp] };
    }
    Some(comp)
}

fn ical_comp(cal: &ICalendar, idx: usize, legacy: bool, depth: usize) -> Option<Comp> {
    if depth > MAX_DEPTH {
        return None;
    }
    let c = cal.components.get(idx)?;
    let name = c.component_type.as_str().to_ascii_uppercase();
    let mut props = Vec::new();
    for e in &c.entries {
        let pname = e.name.as_str().to_ascii_uppercase();
        if matches!(pname.as_str(), "BEGIN" | "END") || (pname == "VERSION" && name == "VCALENDAR") {
            continue;
        }
        let mut params: Vec<Param> = Vec::new();
        for p in &e.params {
            let n = p.name.as_str().to_ascii_uppercase();
            let v = ical_param_text(&p.value);
            match params.iter_mut().find(|x| x.name == n) {
                Some(existing) => existing.values.extend(v),
                None => params.push(Param { name: n, values: v.into_iter().collect() }),
            }
        }
        let mut comps: Vec<Vec<String>> = Vec::new();
        let mut binary = None;
        for v in &e.values {
            let text = match v {
                ICalendarValue::Binary(b) => {
                    binary = Some(b.clone());
                    continue;
                }
                ICalendarValue::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
                ICalendarValue::Uri(u) => uri_text(u),
                ICalendarValue::PartialDateTime(p) => format_pdt(p),
                ICalendarValue::Duration(d) => d.to_string(),
                ICalendarValue::RecurrenceRule(r) => r.to_string(),
                ICalendarValue::Period(p) => p.to_string(),
                ICalendarValue::Float(f) => f.to_string(),
                ICalendarValue::Integer(i) => i.to_string(),
                ICalendarValue::Text(t) => {
                    if legacy {
                        repair_mojibake(t.clone())
                    } else {
                        t.clone()
                    }
                }
                ICalendarValue::CalendarScale(x) => x.as_str().to_string(),
                ICalendarValue::Method(x) => x.as_str().to_string(),
                ICalendarValue::Classification(x) => x.as_str().to_string(),
                ICalendarValue::Status(x) => x.as_str().to_string(),
                ICalendarValue::Transparency(x) => x.as_str().to_string(),
                ICalendarValue::Action(x) => x.as_str().to_string(),
                ICalendarValue::BusyType(x) => x.as_str().to_string(),
                ICalendarValue::ParticipantType(x) => x.as_str().to_string(),
                ICalendarValue::ResourceType(x) => x.as_str().to_string(),
                ICalendarValue::Proximity(x) => x.as_str().to_string(),
            };
            comps.push(vec![text]);
        }
        if ICAL_LIST_PROPS.contains(&pname.as_str()) {
            let items: Vec<String> = comps
                .into_iter()
                .flatten()
                .flat_map(|s| {
                    // vCalendar 1.0 separates list values with ';'.
                    if legacy && pname != "FREEBUSY" {
                        s.split(';').map(str::to_string).collect::<Vec<_>>()
                    } else {
                        vec![s]
                    }
                })
                .filter(|s| !s.is_empty())
                .collect();
            comps = vec![items];
        }
        props.push(Prop {
            group: None,
            name: pname,
            params,
            value: match binary {
                Some(b) => Value::Binary(b),
                None => Value::Text(comps),
            },
        });
    }
    let mut subs = Vec::new();
    for &id in &c.component_ids {
        let id = id as usize;
        if id != idx {
            subs.extend(ical_comp(cal, id, legacy, depth + 1));
        }
    }
    Some(Comp { name, props, subs })
}

/// Resolves TZID-qualified local times to UTC: IANA/Windows names through
/// calcard (chrono-tz), other VTIMEZONEs through their STANDARD/DAYLIGHT
/// offsets and yearly rules.
struct TzContext {
    known: HashMap<String, Tz>,
    custom: HashMap<String, Vec<Observance>>,
}

/// One STANDARD or DAYLIGHT part of a VTIMEZONE.
struct Observance {
    start: NaiveDateTime,
    offset_to: i64,
    /// Month and BYDAY ordinal/weekday of a yearly rule, if any.
    rule: Option<(u32, i32, chrono::Weekday)>,
}

impl TzContext {
    fn new(parsed: &ICalendar, cal: &Comp) -> TzContext {
        let resolver = parsed.build_owned_tz_resolver();
        let mut known = HashMap::new();
        let mut custom = HashMap::new();
        for vtz in cal.subs.iter().filter(|c| c.name == "VTIMEZONE") {
            let Some(id) = vtz.prop("TZID").map(|p| p.first().to_string()) else {
                continue;
            };
            if let Some(tz) = resolver.resolve(&id) {
                known.insert(id, tz);
                continue;
            }
            let obs = vtz
                .subs
                .iter()
                .filter_map(|o| {
                    let start = When::parse(o.prop("DTSTART")?.first())?.naive();
                    let offset_to = parse_utc_offset(o.prop("TZOFFSETTO")?.first())?;
                    let rule = o.prop("RRULE").and_then(|r| yearly_rule(&r.items().join(";")));
                    Some(Observance { start, offset_to, rule })
                })
                .collect::<Vec<_>>();
            if !obs.is_empty() {
                custom.insert(id, obs);
            }
        }
        TzContext { known, custom }
    }

    /// Local time in zone `tzid` → UTC.
    fn to_utc(&self, tzid: &str, local: NaiveDateTime) -> Option<NaiveDateTime> {
        let tz = self.known.get(tzid).copied().or_else(|| tzid.parse::<Tz>().ok());
        if let Some(tz) = tz {
            if !matches!(tz, Tz::Floating) {
                let dt = tz.from_local_datetime(&local).earliest()?;
                return Some(dt.with_timezone(&Utc).naive_utc());
            }
        }
        let obs = self.custom.get(tzid)?;
        // The observance with the latest onset not after `local` applies.
        let mut best: Option<(NaiveDateTime, i64)> = None;
        for o in obs {
            let onsets = match o.rule {
                Some((month, ord, wd)) => [local.year() - 1, local.year()]
                    .iter()
                    .filter_map(|&y| {
                        let d = nth_weekday(y, month, ord, wd)?;
                        Some(d.and_time(o.start.time()))
                    })
                    .filter(|d| *d >= o.start)
                    .collect::<Vec<_>>(),
                None => vec![o.start],
            };
            for on in onsets.into_iter().filter(|d| *d <= local) {
                if best.is_none_or(|(b, _)| on > b) {
                    best = Some((on, o.offset_to));
                }
            }
        }
        let offset = best.map(|b| b.1).or_else(|| obs.first().map(|o| o.offset_to))?;
        local.checked_sub_signed(Duration::seconds(offset))
    }
}

fn parse_utc_offset(s: &str) -> Option<i64> {
    let s = s.trim();
    let (sign, rest) = match s.as_bytes().first()? {
        b'-' => (-1, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    let h: i64 = rest.get(0..2)?.parse().ok()?;
    let m: i64 = rest.get(2..4).unwrap_or("00").parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

/// `FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU` → (3, -1, Sunday).
fn yearly_rule(rule: &str) -> Option<(u32, i32, chrono::Weekday)> {
    let kv = rrule_pairs(rule);
    if kv.get("FREQ").map(String::as_str) != Some("YEARLY") {
        return None;
    }
    let month = kv.get("BYMONTH")?.parse().ok()?;
    let byday = kv.get("BYDAY")?;
    let (ord, wd) = split_ordinal_day(byday)?;
    let ord = match (ord, kv.get("BYSETPOS")) {
        (Some(o), _) => o,
        (None, Some(p)) => p.parse().ok()?,
        (None, None) => return None,
    };
    Some((month, ord, wd))
}

fn weekday(code: &str) -> Option<chrono::Weekday> {
    use chrono::Weekday::*;
    Some(match code.to_ascii_uppercase().as_str() {
        "MO" => Mon,
        "TU" => Tue,
        "WE" => Wed,
        "TH" => Thu,
        "FR" => Fri,
        "SA" => Sat,
        "SU" => Sun,
        _ => return None,
    })
}

/// "-1SU" → (Some(-1), Sunday); "MO" → (None, Monday).
fn split_ordinal_day(s: &str) -> Option<(Option<i32>, chrono::Weekday)> {
    let s = s.trim();
    let split = s.len().checked_sub(2)?;
    let (ord, day) = (s.get(..split)?, s.get(split..)?);
    let ord = if ord.is_empty() { None } else { Some(ord.parse().ok()?) };
    Some((ord, weekday(day)?))
}

/// The `ord`-th (negative: from the end) weekday of a month.
fn nth_weekday(year: i32, month: u32, ord: i32, wd: chrono::Weekday) -> Option<NaiveDate> {
    if ord == 0 || !(-5..=5).contains(&ord) {
        return None;
    }
    if ord > 0 {
        NaiveDate::from_weekday_of_month_opt(year, month, wd, ord as u8)
    } else {
        let first_next = if month == 12 {
            NaiveDate::from_ymd_opt(year.checked_add(1)?, 1, 1)?
        } else {
            // Checked: BYMONTH comes from the item and may be any u32.
            NaiveDate::from_ymd_opt(year, month.checked_add(1)?, 1)?
        };
        let last = first_next.pred_opt()?;
        let back = (last.weekday().num_days_from_monday() + 7 - wd.num_days_from_monday()) % 7;
        let d = last - Duration::days(back as i64 + 7 * (-ord as i64 - 1));
        (d.month() == month).then_some(d)
    }
}

fn rrule_pairs(rule: &str) -> HashMap<String, String> {
    rule.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_uppercase(), v.trim().to_ascii_uppercase()))
        .collect()
}

/// iCalendar 2.0 RRULE → vCalendar 1.0 basic rule for the common cases:
/// DAILY, WEEKLY (BYDAY), MONTHLY (BYMONTHDAY, or BYDAY with ordinals or
/// with one BYSETPOS), YEARLY (BYMONTH or BYYEARDAY), each with INTERVAL and
/// COUNT or UNTIL. Anything else (BYHOUR, BYWEEKNO, WKST other than MO,
/// several BYSETPOS, yearly BYDAY, …) gives `None`.
fn rrule_20_to_10(rule: &str, tz: &TzContext, tzid: Option<&str>) -> Option<String> {
    let kv = rrule_pairs(rule);
    let allowed = [
        "FREQ",
        "INTERVAL",
        "COUNT",
        "UNTIL",
        "BYDAY",
        "BYMONTHDAY",
        "BYMONTH",
        "BYYEARDAY",
        "BYSETPOS",
        "WKST",
    ];
    if kv.keys().any(|k| !allowed.contains(&k.as_str())) || kv.get("WKST").is_some_and(|w| w != "MO") {
        return None;
    }
    let interval: u32 = match kv.get("INTERVAL") {
        Some(i) => i.parse().ok().filter(|&i| i > 0)?,
        None => 1,
    };
    let list = |k: &str| -> Vec<String> {
        kv.get(k)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    };
    let (byday, bymonthday, bymonth, byyearday, bysetpos) =
        (list("BYDAY"), list("BYMONTHDAY"), list("BYMONTH"), list("BYYEARDAY"), list("BYSETPOS"));
    let only = |present: &[&Vec<String>]| {
        [&byday, &bymonthday, &bymonth, &byyearday, &bysetpos]
            .iter()
            .all(|l| l.is_empty() || present.iter().any(|p| std::ptr::eq(*p, *l)))
    };
    let mut out = match kv.get("FREQ")?.as_str() {
        "DAILY" if only(&[]) => format!("D{interval}"),
        "WEEKLY" if only(&[&byday]) => {
            let mut s = format!("W{interval}");
            for d in &byday {
                let (ord, wd) = split_ordinal_day(d)?;
                if ord.is_some() {
                    return None;
                }
                s.push(' ');
                s.push_str(&wd_code(wd));
            }
            s
        }
        "MONTHLY" if only(&[&bymonthday]) => {
            let mut s = format!("MD{interval}");
            for d in &bymonthday {
                let n: i32 = d.parse().ok()?;
                s.push(' ');
                s.push_str(&if n < 0 { format!("{}-", n.unsigned_abs()) } else { n.to_string() });
            }
            s
        }
        "MONTHLY" if only(&[&byday, &bysetpos]) && !byday.is_empty() => {
            let setpos: Option<i32> = match bysetpos.as_slice() {
                [] => None,
                [p] => Some(p.parse().ok()?),
                _ => return None,
            };
            let mut s = format!("MP{interval}");
            for d in &byday {
                let (ord, wd) = split_ordinal_day(d)?;
                let ord = ord.or(setpos)?;
                if ord == 0 {
                    return None;
                }
                s.push_str(&if ord < 0 { format!(" {}- ", ord.unsigned_abs()) } else { format!(" {ord}+ ") });
                s.push_str(&wd_code(wd));
            }
            s
        }
        "YEARLY" if only(&[&bymonth]) => {
            let mut s = format!("YM{interval}");
            for m in &bymonth {
                let m: u32 = m.parse().ok()?;
                s.push_str(&format!(" {m}"));
            }
            s
        }
        "YEARLY" if only(&[&byyearday]) && !byyearday.is_empty() => {
            let mut s = format!("YD{interval}");
            for d in &byyearday {
                let n: i32 = d.parse().ok()?;
                s.push_str(&if n < 0 { format!(" {}-", n.unsigned_abs()) } else { format!(" {n}") });
            }
            s
        }
        _ => return None,
    };
    match (kv.get("COUNT"), kv.get("UNTIL")) {
        (Some(c), None) => out.push_str(&format!(" #{}", c.parse::<u32>().ok()?)),
        (None, Some(u)) => {
            let until = match When::parse(u)? {
                // An end date includes that whole day.
                When::Date(d) => When::Floating(d.and_hms_opt(23, 59, 59)?),
                When::Floating(t) => match tzid.and_then(|z| tz.to_utc(z, t)) {
                    Some(u) => When::Utc(u),
                    None => When::Floating(t),
                },
                w => w,
            };
            out.push(' ');
            out.push_str(&until.format());
        }
        (None, None) => out.push_str(" #0"),
        _ => return None,
    }
    Some(out)
}

fn wd_code(wd: chrono::Weekday) -> String {
    wd.to_string().to_ascii_uppercase()[..2].to_string()
}

/// vCalendar 1.0 rule → iCalendar 2.0 RRULE for the same cases as
/// [`rrule_20_to_10`]; rules with time lists or nested rules give `None`.
/// `all_day` makes UNTIL a DATE as RFC 5545 requires.
fn rrule_10_to_20(rule: &str, all_day: bool) -> Option<String> {
    let mut tokens: Vec<&str> = rule.split_whitespace().collect();
    let first = tokens.first()?.to_ascii_uppercase();
    let (freq, rest) = if let Some(r) = first.strip_prefix("MP") {
        ("MP", r)
    } else if let Some(r) = first.strip_prefix("MD") {
        ("MD", r)
    } else if let Some(r) = first.strip_prefix("YM") {
        ("YM", r)
    } else if let Some(r) = first.strip_prefix("YD") {
        ("YD", r)
    } else if let Some(r) = first.strip_prefix('W') {
        ("W", r)
    } else if let Some(r) = first.strip_prefix('D') {
        ("D", r)
    } else {
        return None;
    };
    let interval: u32 = if rest.is_empty() { 1 } else { rest.parse().ok().filter(|&i| i > 0)? };
    tokens.remove(0);
    // The end: "#n" (0 = forever) or an end date; the spec's default is #2.
    let mut end = String::from(";COUNT=2");
    if let Some(last) = tokens.last().copied() {
        if let Some(n) = last.strip_prefix('#') {
            let n: u32 = n.parse().ok()?;
            end = if n == 0 { String::new() } else { format!(";COUNT={n}") };
            tokens.pop();
        } else if last.len() >= 8 && last.as_bytes().iter().take(8).all(u8::is_ascii_digit) {
            let w = When::parse(last)?;
            let w = if all_day { When::Date(w.naive().date()) } else { w };
            end = format!(";UNTIL={}", w.format());
            tokens.pop();
        }
    }
    let mut out = String::from("FREQ=");
    out.push_str(match freq {
        "D" => "DAILY",
        "W" => "WEEKLY",
        "MP" | "MD" => "MONTHLY",
        _ => "YEARLY",
    });
    if interval > 1 {
        out.push_str(&format!(";INTERVAL={interval}"));
    }
    // "n+" / "n-" occurrence or day numbers; "LD" is the last day.
    let number = |t: &str| -> Option<i32> {
        if t.eq_ignore_ascii_case("LD") {
            return Some(-1);
        }
        if let Some(n) = t.strip_suffix('-') {
            return n.parse::<i32>().ok().and_then(i32::checked_neg);
        }
        t.strip_suffix('+').unwrap_or(t).parse().ok()
    };
    match freq {
        "D" if tokens.is_empty() => {}
        "W" => {
            let days = tokens.iter().map(|t| weekday(t).map(wd_code)).collect::<Option<Vec<_>>>()?;
            if !days.is_empty() {
                out.push_str(&format!(";BYDAY={}", days.join(",")));
            }
        }
        "MP" => {
            let mut ords = Vec::new();
            let mut days = Vec::new();
            for t in &tokens {
                match weekday(t) {
                    Some(wd) => days.push(wd_code(wd)),
                    None => ords.push(number(t)?),
                }
            }
            if ords.is_empty() || days.is_empty() {
                return None;
            }
            let byday: Vec<String> =
                ords.iter().flat_map(|o| days.iter().map(move |d| format!("{o}{d}"))).collect();
            out.push_str(&format!(";BYDAY={}", byday.join(",")));
        }
        "MD" | "YM" | "YD" => {
            let nums = tokens.iter().map(|t| number(t)).collect::<Option<Vec<_>>>()?;
            if nums.iter().any(|&n| n == 0 || n.abs() > 366) {
                return None;
            }
            if !nums.is_empty() {
                let key = match freq {
                    "MD" => "BYMONTHDAY",
                    "YM" => "BYMONTH",
                    _ => "BYYEARDAY",
                };
                let v: Vec<String> = nums.iter().map(i32::to_string).collect();
                out.push_str(&format!(";{key}={}", v.join(",")));
            }
        }
        _ => return None,
    }
    out.push_str(&end);
    Some(out)
}

/// A date-time property as a [`When`], resolving TZID to UTC where possible.
fn prop_when(p: &Prop, tz: &TzContext) -> Option<When> {
    let w = When::parse(p.first())?;
    match (w, p.param_value("TZID")) {
        (When::Floating(t), Some(z)) => Some(tz.to_utc(z, t).map(When::Utc).unwrap_or(w)),
        _ => Some(w),
    }
}

/// iCalendar 2.0 → vCalendar 1.0.
fn cal_to_10(cal: &mut Comp, tz: &TzContext) {
    cal.props.retain(|p| !p.is("CALSCALE") && !p.is("VERSION"));
    cal.subs.retain(|c| c.name != "VTIMEZONE");
    for c in &mut cal.subs {
        if c.name == "VEVENT" || c.name == "VTODO" {
            item_to_10(c, tz);
        }
    }
}

fn item_to_10(c: &mut Comp, tz: &TzContext) {
    let start = c.prop("DTSTART").and_then(|p| prop_when(p, tz));
    let all_day = matches!(start, Some(When::Date(_)));
    let end = c.prop("DTEND").and_then(|p| prop_when(p, tz));
    let due = c.prop("DUE").and_then(|p| prop_when(p, tz));
    let start_tzid = c.prop("DTSTART").and_then(|p| p.param_value("TZID")).map(str::to_string);

    // DURATION → DTEND (1.0 events have no DURATION).
    if c.name == "VEVENT" && end.is_none() {
        if let (Some(s), Some(d)) = (start, c.prop("DURATION").and_then(|p| parse_duration(p.first()))) {
            let mut p = Prop::new("DTEND", &s.add(d).format());
            if let Some(z) = &start_tzid {
                p.set_param("TZID", z);
            }
            if all_day {
                p.set_param("VALUE", "DATE");
            }
            c.props.retain(|p| !p.is("DURATION"));
            c.props.push(p);
        }
    }

    let mut out = Vec::with_capacity(c.props.len());
    for mut p in std::mem::take(&mut c.props) {
        let name = p.name.clone();
        match name.as_str() {
            n if ICAL_DATE_PROPS.contains(&n) => {
                let tzid = p.param_value("TZID").map(str::to_string);
                let is_end = n == "DTEND" && all_day;
                let items: Vec<String> = p
                    .items()
                    .iter()
                    .map(|s| match When::parse(s) {
                        Some(When::Date(d)) if is_end => {
                            // Exclusive DATE end → inclusive local end of last day.
                            let last = match (start, d.pred_opt()) {
                                (Some(When::Date(s)), Some(l)) if l >= s => l,
                                _ => d,
                            };
                            last.format("%Y%m%dT235900").to_string()
                        }
                        Some(When::Date(d)) => d.format("%Y%m%dT000000").to_string(),
                        Some(When::Floating(t)) => match tzid.as_deref().and_then(|z| tz.to_utc(z, t)) {
                            Some(u) => When::Utc(u).format(),
                            None => When::Floating(t).format(),
                        },
                        Some(w) => w.format(),
                        None => s.clone(),
                    })
                    .collect();
                p.remove_param("TZID");
                p.remove_param("VALUE");
                // 1.0 lists (EXDATE, RDATE) are ';'-separated.
                p.value = Value::Text(items.into_iter().map(|i| vec![i]).collect());
                out.push(p);
            }
            "RRULE" => {
                let full = p.joined();
                match rrule_20_to_10(&full, tz, start_tzid.as_deref()) {
                    Some(r) => out.push(Prop::new("RRULE", &r)),
                    None => out.push(Prop::new(X_ICAL_RRULE, &full)),
                }
            }
            X_VCAL_RRULE => out.push(Prop::new("RRULE", &p.joined())),
            "STATUS" if p.first().eq_ignore_ascii_case("NEEDS-ACTION") => {
                out.push(Prop::new("STATUS", "NEEDS ACTION"))
            }
            "PRIORITY" => {
                // 2.0: 1 (high) … 9 (low), 0 undefined; 1.0 phones use 1/2/3.
                let v = match p.first().trim().parse::<i64>() {
                    Ok(0) => "0".to_string(),
                    Ok(1..=4) => "1".to_string(),
                    Ok(5) => "2".to_string(),
                    Ok(6..=9) => "3".to_string(),
                    _ => p.first().to_string(),
                };
                out.push(Prop::new("PRIORITY", &v));
            }
            "TRANSP" => {
                let v = if p.first().eq_ignore_ascii_case("TRANSPARENT") { "1" } else { "0" };
                out.push(Prop::new("TRANSP", v));
            }
            "CATEGORIES" | "RESOURCES" => {
                // 1.0 lists are ';'-separated.
                p.value = Value::Text(p.items().into_iter().map(|i| vec![i]).collect());
                out.push(p);
            }
            "DURATION" => out.push(p),
            _ => out.push(p),
        }
    }
    c.props = out;

    // VALARM → AALARM / DALARM / MALARM with absolute times.
    let summary = c.prop("SUMMARY").map(|p| p.first().to_string()).unwrap_or_default();
    for alarm in std::mem::take(&mut c.subs) {
        if alarm.name != "VALARM" {
            c.subs.push(alarm);
            continue;
        }
        // An alarm 1.0 cannot express (no trigger, or relative to a time the
        // item lacks) is kept whole in an X- property and restored on the way back.
        let keep = |c: &mut Comp, alarm: &Comp| {
            let get = |n: &str| alarm.prop(n).map(|p| p.first().to_string()).unwrap_or_default();
            let mut p =
                Prop::with_comps(X_ICAL_VALARM, vec![get("ACTION"), get("TRIGGER"), get("DESCRIPTION")]);
            if let Some(r) = alarm.prop("TRIGGER").and_then(|t| t.param_value("RELATED")) {
                p.set_param("RELATED", r);
            }
            c.props.push(p);
        };
        let Some(trigger) = alarm.prop("TRIGGER") else {
            keep(c, &alarm);
            continue;
        };
        let when = match parse_duration(trigger.first()) {
            Some(off) => {
                let related_end =
                    trigger.param_value("RELATED").is_some_and(|r| r.eq_ignore_ascii_case("END"));
                let base = if related_end { end.or(due) } else { start.or(due) };
                base.map(|b| match b {
                    When::Date(d) => When::Floating(d.and_time(chrono::NaiveTime::MIN)).add(off),
                    w => w.add(off),
                })
            }
            None => prop_when(trigger, tz),
        };
        let Some(when) = when else {
            keep(c, &alarm);
            continue;
        };
        let time = when.format();
        let snooze = alarm.prop("DURATION").map(|p| p.first().to_string()).unwrap_or_default();
        let repeat = alarm.prop("REPEAT").map(|p| p.first().to_string()).unwrap_or_default();
        let action = alarm.prop("ACTION").map(|p| p.first().to_ascii_uppercase()).unwrap_or_default();
        let desc = alarm
            .prop("DESCRIPTION")
            .map(|p| p.first().to_string())
            .filter(|d| !d.is_empty() && *d != summary)
            .unwrap_or_default();
        match action.as_str() {
            "EMAIL" => {
                let to = alarm
                    .prop("ATTENDEE")
                    .map(|p| {
                        p.first().trim_start_matches("mailto:").trim_start_matches("MAILTO:").to_string()
                    })
                    .unwrap_or_default();
                c.props.push(Prop::with_comps("MALARM", vec![time, snooze, repeat, to, desc]));
            }
            "DISPLAY" => {
                // Most phones only read AALARM: give both, merged again on the way back.
                c.props.push(Prop::with_comps(
                    "DALARM",
                    vec![time.clone(), snooze.clone(), repeat.clone(), desc],
                ));
                c.props.push(Prop::with_comps("AALARM", vec![time, snooze, repeat, String::new()]));
            }
            _ => {
                let sound = alarm.prop("ATTACH").map(|p| p.first().to_string()).unwrap_or_default();
                c.props.push(Prop::with_comps("AALARM", vec![time, snooze, repeat, sound]));
            }
        }
    }
}

/// vCalendar 1.0 → iCalendar 2.0.
fn cal_to_20(cal: &mut Comp) {
    cal.props.retain(|p| !p.is("VERSION"));
    if !cal.has("PRODID") {
        cal.props.insert(0, Prop::new("PRODID", "-//shardsync//convert//EN"));
    }
    for c in &mut cal.subs {
        if c.name == "VEVENT" || c.name == "VTODO" {
            item_to_20(c);
        }
    }
}

/// Whether a 1.0 start/end pair is an all-day event: date-only values, or
/// local midnight to 23:59 / midnight, or the P800's T000000Z..T240000Z.
fn all_day_span(start: &str, end: Option<&str>) -> Option<(NaiveDate, NaiveDate)> {
    let s = When::parse(start)?;
    let e = end.and_then(When::parse);
    let midnight = |t: &NaiveDateTime| t.time() == chrono::NaiveTime::MIN;
    let p800 = end.is_some_and(|e| e.to_ascii_uppercase().ends_with("T240000Z"));
    match (s, e) {
        (When::Date(sd), None) => Some((sd, sd.succ_opt()?)),
        (When::Date(sd), Some(When::Date(ed))) => Some((sd, if ed > sd { ed } else { sd.succ_opt()? })),
        (When::Floating(st), Some(When::Floating(et))) | (When::Utc(st), Some(When::Utc(et)))
            if midnight(&st) && (matches!(s, When::Floating(_)) || p800) =>
        {
            let sd = st.date();
            if midnight(&et) && et.date() > sd {
                Some((sd, et.date()))
            } else if et.hour() == 23 && et.minute() == 59 && et.date() >= sd {
                Some((sd, et.date().succ_opt()?))
            } else {
                None
            }
        }
        _ => None,
    }
}

fn item_to_20(c: &mut Comp) {
    let start_raw = c.prop("DTSTART").map(|p| p.first().to_string());
    let end_raw = c.prop("DTEND").map(|p| p.first().to_string());
    let span = if c.name == "VEVENT" {
        start_raw.as_deref().and_then(|s| all_day_span(s, end_raw.as_deref()))
    } else {
        None
    };
    let start = start_raw.as_deref().and_then(When::parse);
    let due = c.prop("DUE").and_then(|p| When::parse(p.first()));

    let mut alarms: Vec<(String, Prop)> = Vec::new();
    let mut restored: Vec<Comp> = Vec::new();
    let mut out = Vec::with_capacity(c.props.len());
    for mut p in std::mem::take(&mut c.props) {
        let name = p.name.clone();
        match name.as_str() {
            "DTSTART" if span.is_some() => {
                if let Some((sd, _)) = span {
                    let mut np = Prop::new("DTSTART", &When::Date(sd).format());
                    np.set_param("VALUE", "DATE");
                    out.push(np);
                }
            }
            "DTEND" if span.is_some() => {
                if let Some((_, ed)) = span {
                    let mut np = Prop::new("DTEND", &When::Date(ed).format());
                    np.set_param("VALUE", "DATE");
                    out.push(np);
                }
            }
            n if ICAL_DATE_PROPS.contains(&n) => {
                // In an all-day event, exceptions and extra dates are dates too.
                let as_date = span.is_some() && matches!(n, "EXDATE" | "RDATE" | "RECURRENCE-ID");
                let items: Vec<String> = p
                    .items()
                    .iter()
                    .map(|s| match When::parse(s) {
                        Some(w) if as_date => When::Date(w.naive().date()).format(),
                        Some(w) => w.format(),
                        None => s.clone(),
                    })
                    .collect();
                if items.iter().all(|s| matches!(When::parse(s), Some(When::Date(_)))) && !items.is_empty() {
                    p.set_param("VALUE", "DATE");
                }
                p.value = Value::Text(vec![items]);
                out.push(p);
            }
            "RRULE" => {
                let rule = p.items().join(" ");
                match rrule_10_to_20(&rule, span.is_some()) {
                    Some(r) => out.push(Prop::new("RRULE", &r)),
                    None => out.push(Prop::new(X_VCAL_RRULE, &rule)),
                }
            }
            X_ICAL_RRULE => out.push(Prop::new("RRULE", &p.joined())),
            "STATUS" => {
                let v = p.first().trim().to_ascii_uppercase();
                let v = match (c.name.as_str(), v.as_str()) {
                    (_, "NEEDS ACTION") => "NEEDS-ACTION".to_string(),
                    ("VTODO", "ACCEPTED") => "IN-PROCESS".to_string(),
                    (_, "DECLINED") => "CANCELLED".to_string(),
                    _ => v,
                };
                out.push(Prop::new("STATUS", &v));
            }
            "PRIORITY" => {
                let v = match p.first().trim().parse::<i64>() {
                    Ok(1) => "1".to_string(),
                    Ok(2) => "5".to_string(),
                    Ok(3) => "9".to_string(),
                    Ok(n) => n.clamp(0, 9).to_string(),
                    Err(_) => p.first().to_string(),
                };
                out.push(Prop::new("PRIORITY", &v));
            }
            "TRANSP" => {
                let v = match p.first().trim() {
                    "0" => "OPAQUE".to_string(),
                    "1" => "TRANSPARENT".to_string(),
                    other => other.to_ascii_uppercase(),
                };
                out.push(Prop::new("TRANSP", &v));
            }
            "AALARM" | "DALARM" | "MALARM" => alarms.push((name, p)),
            X_ICAL_VALARM => {
                let mut trigger = Prop::new("TRIGGER", &p.comp(1));
                if let Some(r) = p.param_value("RELATED") {
                    trigger.set_param("RELATED", r);
                }
                let mut props = vec![Prop::new("ACTION", &p.comp(0)), trigger];
                if !p.comp(2).is_empty() {
                    props.push(Prop::new("DESCRIPTION", &p.comp(2)));
                }
                restored.push(Comp { name: "VALARM".into(), props, subs: Vec::new() });
            }
            _ => out.push(p),
        }
    }
    c.props = out;
    c.subs.extend(restored);

    // AALARM/DALARM/MALARM → VALARM; an AALARM at the same time as a DALARM
    // is the companion written by `item_to_10` (or by phones) and merges.
    let dalarm_times: Vec<String> =
        alarms.iter().filter(|(n, _)| n == "DALARM").map(|(_, p)| p.comp(0)).collect();
    let summary = c.prop("SUMMARY").map(|p| p.first().to_string()).unwrap_or_default();
    for (name, p) in alarms {
        let time = p.comp(0);
        if name == "AALARM" && dalarm_times.contains(&time) {
            continue;
        }
        let Some(at) = When::parse(&time) else {
            // Unusable time: keep the line as an X- property.
            let mut keep = p.clone();
            keep.name = format!("X-VCAL10-{name}");
            c.props.push(keep);
            continue;
        };
        let mut alarm = Comp { name: "VALARM".into(), props: Vec::new(), subs: Vec::new() };
        let action = match name.as_str() {
            "DALARM" => "DISPLAY",
            "MALARM" => "EMAIL",
            _ => "AUDIO",
        };
        alarm.props.push(Prop::new("ACTION", action));
        // Relative to the start (or due) when both are of the same kind,
        // else an absolute UTC trigger.
        let trigger = match (start, due) {
            (Some(s), _) if same_kind(s, at) => Some((false, s)),
            (None, Some(d)) if same_kind(d, at) => Some((true, d)),
            _ => None,
        };
        match trigger {
            Some((related_end, base)) => {
                let secs = (at.naive() - base.naive()).num_seconds();
                let mut t = Prop::new("TRIGGER", &format_duration(secs));
                if related_end {
                    t.set_param("RELATED", "END");
                }
                alarm.props.push(t);
            }
            None => {
                let mut t = Prop::new("TRIGGER", &at.format());
                t.set_param("VALUE", "DATE-TIME");
                alarm.props.push(t);
            }
        }
        let (snooze, repeat) = (p.comp(1), p.comp(2));
        if parse_duration(&snooze).is_some() && repeat.parse::<u32>().is_ok_and(|r| r > 0) {
            alarm.props.push(Prop::new("DURATION", &snooze));
            alarm.props.push(Prop::new("REPEAT", &repeat));
        }
        match action {
            "DISPLAY" => {
                let text = p.comp(3);
                let text = if text.is_empty() { summary.clone() } else { text };
                alarm.props.push(Prop::new("DESCRIPTION", &text));
            }
            "EMAIL" => {
                let to = p.comp(3);
                if !to.is_empty() {
                    alarm.props.push(Prop::new("ATTENDEE", &format!("mailto:{to}")));
                }
                alarm.props.push(Prop::new("SUMMARY", &summary));
                alarm.props.push(Prop::new("DESCRIPTION", &p.comp(4)));
            }
            _ => {
                let sound = p.comp(3);
                if !sound.is_empty() {
                    alarm.props.push(Prop::new("ATTACH", &sound));
                }
            }
        }
        c.subs.push(alarm);
    }
}

fn same_kind(a: When, b: When) -> bool {
    matches!(
        (a, b),
        (When::Utc(_), When::Utc(_)) | (When::Floating(_) | When::Date(_), When::Floating(_) | When::Date(_))
    )
}

fn write_ical(cal: &Comp, legacy: bool) -> String {
    let mut out = String::new();
    out.push_str("BEGIN:VCALENDAR\r\nVERSION:");
    out.push_str(if legacy { "1.0" } else { "2.0" });
    out.push_str("\r\n");
    write_ical_body(&mut out, cal, legacy);
    out.push_str("END:VCALENDAR\r\n");
    out
}

fn write_ical_body(out: &mut String, c: &Comp, legacy: bool) {
    for p in &c.props {
        let text = ICAL_TEXT_PROPS.contains(&p.name.as_str());
        let x = is_x_or_unknown(&p.name);
        // Legacy alarm components and categories are ';'-separated lists.
        let esc = if text {
            Escape::Text
        } else if x {
            Escape::Minimal
        } else {
            Escape::None
        };
        write_prop(out, p, legacy, esc, false);
    }
    for sub in &c.subs {
        let name: String = sub.name.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        out.push_str("BEGIN:");
        out.push_str(&name);
        out.push_str("\r\n");
        write_ical_body(out, sub, legacy);
        out.push_str("END:");
        out.push_str(&name);
        out.push_str("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_type_and_version() {
        assert_eq!(Format::from_type("text/x-vcard", Some("2.1"), None), Some(Format::VCard21));
        assert_eq!(Format::from_type("text/x-vcard", None, None), Some(Format::VCard21));
        assert_eq!(Format::from_type("TEXT/VCARD", None, None), Some(Format::VCard30));
        assert_eq!(Format::from_type("text/directory", Some("3.0"), None), Some(Format::VCard30));
        assert_eq!(
            Format::from_type("text/x-vcard", None, Some(b"BEGIN:VCARD\nVERSION:3.0\nEND:VCARD")),
            Some(Format::VCard30)
        );
        assert_eq!(
            Format::from_type("text/calendar", None, Some(b"BEGIN:VCALENDAR\r\nVERSION:1.0\r\n")),
            Some(Format::VCalendar10)
        );
        assert_eq!(Format::from_type("text/x-vcalendar", None, None), Some(Format::VCalendar10));
        assert_eq!(Format::from_type("text/calendar", Some(""), None), Some(Format::ICalendar20));
        assert_eq!(Format::from_type("text/plain; charset=utf-8", None, None), Some(Format::PlainText));
        assert_eq!(Format::from_type("text/vcard", Some("4.0"), None), None);
        assert_eq!(Format::from_type("application/xml", None, None), None);
        for f in
            [Format::VCard21, Format::VCard30, Format::VCalendar10, Format::ICalendar20, Format::PlainText]
        {
            let (t, v) = f.content_type();
            assert_eq!(Format::from_type(t, Some(v), None), Some(f));
        }
    }

    #[test]
    fn line_ends() {
        assert!(matches!(normalize_line_ends(b"A\r\nB\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*normalize_line_ends(b"A\nB\rC\r\n"), b"A\r\nB\r\nC\r\n");
        assert_eq!(&*normalize_line_ends(b"\n"), b"\r\n");
        assert_eq!(&*normalize_line_ends(b"x\r"), b"x\r\n");
    }

    #[test]
    fn when_parsing() {
        let d = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
        assert_eq!(When::parse("20240102"), Some(When::Date(d)));
        assert_eq!(When::parse("2024-01-02"), Some(When::Date(d)));
        assert_eq!(When::parse("20240102T030405Z"), Some(When::Utc(d.and_hms_opt(3, 4, 5).unwrap())));
        assert_eq!(When::parse("20240102T0304"), Some(When::Floating(d.and_hms_opt(3, 4, 0).unwrap())));
        // P800 all-day end.
        assert_eq!(When::parse("20240101T240000Z"), Some(When::Utc(d.and_hms_opt(0, 0, 0).unwrap())));
        assert_eq!(When::parse("2024"), None);
        assert_eq!(When::parse("20241341"), None);
        assert_eq!(When::parse("garbage"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("-PT15M"), Some(-900));
        assert_eq!(parse_duration("P1DT2H"), Some(93_600));
        assert_eq!(parse_duration("P1W"), Some(604_800));
        assert_eq!(parse_duration("PT"), Some(0));
        assert_eq!(parse_duration("P1"), None);
        assert_eq!(parse_duration("P99999999999999999999D"), None);
        assert_eq!(format_duration(-900), "-PT15M");
        assert_eq!(format_duration(93_600), "P1DT2H");
        assert_eq!(format_duration(604_800), "P1W");
        assert_eq!(format_duration(0), "PT0S");
    }

    fn no_tz() -> TzContext {
        TzContext { known: HashMap::new(), custom: HashMap::new() }
    }

    #[test]
    fn rrule_to_10() {
        let tz = no_tz();
        let c = |r: &str| rrule_20_to_10(r, &tz, None);
        assert_eq!(c("FREQ=DAILY;COUNT=5").as_deref(), Some("D1 #5"));
        assert_eq!(c("FREQ=DAILY;INTERVAL=3").as_deref(), Some("D3 #0"));
        assert_eq!(c("FREQ=WEEKLY;BYDAY=MO,TU;COUNT=10").as_deref(), Some("W1 MO TU #10"));
        assert_eq!(
            c("FREQ=WEEKLY;INTERVAL=2;UNTIL=20241231T230000Z").as_deref(),
            Some("W2 20241231T230000Z")
        );
        assert_eq!(c("FREQ=MONTHLY;BYMONTHDAY=1,-1").as_deref(), Some("MD1 1 1- #0"));
        assert_eq!(c("FREQ=MONTHLY;BYDAY=2TU,-1FR").as_deref(), Some("MP1 2+ TU 1- FR #0"));
        assert_eq!(c("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1").as_deref(), Some("MP1 1+ MO #0"));
        assert_eq!(c("FREQ=YEARLY;BYMONTH=6;COUNT=3").as_deref(), Some("YM1 6 #3"));
        assert_eq!(c("FREQ=YEARLY;BYYEARDAY=100").as_deref(), Some("YD1 100 #0"));
        assert_eq!(c("FREQ=YEARLY;UNTIL=20301231").as_deref(), Some("YM1 20301231T235959"));
        // Not expressible in the basic 1.0 grammar.
        assert_eq!(c("FREQ=HOURLY"), None);
        assert_eq!(c("FREQ=DAILY;BYHOUR=9"), None);
        assert_eq!(c("FREQ=YEARLY;BYMONTH=11;BYDAY=4TH"), None);
        assert_eq!(c("FREQ=WEEKLY;WKST=SU;BYDAY=MO"), None);
        assert_eq!(c("FREQ=DAILY;COUNT=x"), None);
    }

    #[test]
    fn rrule_to_20() {
        let c = |r: &str| rrule_10_to_20(r, false);
        assert_eq!(c("D1 #5").as_deref(), Some("FREQ=DAILY;COUNT=5"));
        assert_eq!(c("D2 #0").as_deref(), Some("FREQ=DAILY;INTERVAL=2"));
        assert_eq!(c("W1 MO TU #10").as_deref(), Some("FREQ=WEEKLY;BYDAY=MO,TU;COUNT=10"));
        assert_eq!(
            c("W2 MO 20241231T230000Z").as_deref(),
            Some("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO;UNTIL=20241231T230000Z")
        );
        assert_eq!(c("MD1 1 1- #0").as_deref(), Some("FREQ=MONTHLY;BYMONTHDAY=1,-1"));
        assert_eq!(c("MD1 LD #0").as_deref(), Some("FREQ=MONTHLY;BYMONTHDAY=-1"));
        assert_eq!(c("MP1 2+ TU #0").as_deref(), Some("FREQ=MONTHLY;BYDAY=2TU"));
        assert_eq!(c("MP1 1- FR #3").as_deref(), Some("FREQ=MONTHLY;BYDAY=-1FR;COUNT=3"));
        assert_eq!(c("YM1 6 #0").as_deref(), Some("FREQ=YEARLY;BYMONTH=6"));
        assert_eq!(c("YD1 100 #0").as_deref(), Some("FREQ=YEARLY;BYYEARDAY=100"));
        // The 1.0 default duration is two occurrences.
        assert_eq!(c("D1").as_deref(), Some("FREQ=DAILY;COUNT=2"));
        assert_eq!(rrule_10_to_20("D1 20240110T000000", true).as_deref(), Some("FREQ=DAILY;UNTIL=20240110"));
        // Time lists and junk are not converted.
        assert_eq!(c("D1 1200 1300 #2"), None);
        assert_eq!(c("X1 #2"), None);
        assert_eq!(c(""), None);
        assert_eq!(c("MP1 MO #1"), None);
    }

    #[test]
    fn custom_vtimezone_rules() {
        let d = nth_weekday(2024, 3, -1, chrono::Weekday::Sun).unwrap();
        assert_eq!(d, NaiveDate::from_ymd_opt(2024, 3, 31).unwrap());
        let d = nth_weekday(2024, 11, 1, chrono::Weekday::Sun).unwrap();
        assert_eq!(d, NaiveDate::from_ymd_opt(2024, 11, 3).unwrap());
        assert_eq!(yearly_rule("FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU"), Some((10, -1, chrono::Weekday::Sun)));
        assert_eq!(parse_utc_offset("-0500"), Some(-18_000));
        assert_eq!(parse_utc_offset("+0530"), Some(19_800));
    }

    #[test]
    fn qp_soft_breaks_and_newlines() {
        let mut out = String::new();
        let value = "é".repeat(40) + "\nend ";
        write_qp(&mut out, "NOTE;ENCODING=QUOTED-PRINTABLE:".into(), &value);
        for line in out.split("\r\n") {
            assert!(line.len() <= 76, "{line}");
        }
        assert!(out.contains("=0D=0Aend=20\r\n"));
        // calcard decodes what we wrote back to the same text.
        let card = format!("BEGIN:VCARD\r\nVERSION:2.1\r\n{out}END:VCARD\r\n");
        let parsed = VCard::parse(&card).unwrap();
        let comp = vcard_from_calcard(&parsed, true);
        assert_eq!(comp.prop("NOTE").unwrap().first(), value.replace('\n', "\r\n"));
    }

    #[test]
    fn folding_keeps_utf8_whole() {
        let mut out = String::new();
        fold_line(&mut out, &format!("NOTE:{}", "ü".repeat(100)));
        for line in out.split("\r\n") {
            assert!(line.len() <= 75);
        }
        assert_eq!(out.replace("\r\n ", ""), format!("NOTE:{}\r\n", "ü".repeat(100)));
    }

    #[test]
    fn mojibake_repair() {
        assert_eq!(repair_mojibake("LefÃ¨vre".into()), "Lefèvre");
        assert_eq!(repair_mojibake("Lefèvre".into()), "Lefèvre");
        assert_eq!(repair_mojibake("Köln".into()), "Köln");
    }

    #[test]
    fn latin1_bytes_are_decoded() {
        assert_eq!(decode_input(b"N:M\xfcller\nFN:ok"), "N:Müller\nFN:ok");
        assert_eq!(decode_input("\u{feff}N:x".as_bytes()), "N:x");
    }

    #[test]
    fn unsupported_pairs() {
        let e = convert(b"x", Format::VCard21, Format::ICalendar20).unwrap_err();
        assert!(matches!(e, ConvertError::Unsupported { .. }));
        assert!(convert(b"x", Format::PlainText, Format::VCard30).is_err());
        assert!(matches!(convert(b"x", Format::PlainText, Format::PlainText), Ok(Cow::Borrowed(_))));
        assert!(matches!(
            convert(b"hello", Format::VCard21, Format::VCard30),
            Err(ConvertError::Invalid { .. })
        ));
    }

    /// Every pair of formats on `text`, plus its cuts at every byte: no panic.
    fn convert_all_ways(text: &str) {
        const ALL: [Format; 5] =
            [Format::VCard21, Format::VCard30, Format::VCalendar10, Format::ICalendar20, Format::PlainText];
        for from in ALL {
            for to in ALL {
                let _ = convert(text.as_bytes(), from, to);
            }
        }
    }

    #[test]
    fn multi_byte_items_convert_without_panics() {
        let card =
            "BEGIN:VCARD\r\nVERSION:3.0\r\nN:山田;太郎;;;\r\nFN:山田 太郎 😀\r\nNOTE:メモ😀\r\nEND:VCARD\r\n";
        let out = convert(card.as_bytes(), Format::VCard30, Format::VCard21).unwrap();
        let back = convert(&out, Format::VCard21, Format::VCard30).unwrap();
        assert!(String::from_utf8_lossy(&back).contains("山田"), "{}", String::from_utf8_lossy(&back));
        let event = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:😀\r\nSUMMARY:会議😀\r\nDTSTART:20240102T030405Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let note = "Hello😀 日本語";
        for text in [card, event, note] {
            for end in (0..=text.len()).filter(|&e| text.is_char_boundary(e)) {
                convert_all_ways(&text[..end]);
            }
        }
        assert_eq!(
            &*convert(note.as_bytes(), Format::PlainText, Format::PlainText).unwrap(),
            note.as_bytes()
        );
    }

    #[test]
    fn out_of_range_numbers_in_items_do_not_panic() {
        let cal = |body: &str| {
            format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1\r\n{body}END:VEVENT\r\nEND:VCALENDAR\r\n")
        };
        let vcal = |body: &str| {
            format!("BEGIN:VCALENDAR\r\nVERSION:1.0\r\nBEGIN:VEVENT\r\n{body}END:VEVENT\r\nEND:VCALENDAR\r\n")
        };
        for body in [
            // Durations past chrono's range (TimeDelta::seconds panics there).
            "DTSTART:20240102T030405Z\r\nDURATION:PT9223372036854775807S\r\n",
            "DTSTART;VALUE=DATE:20240102\r\nDURATION:P15250284452471W\r\n",
            "DTSTART:20240102T030405Z\r\nBEGIN:VALARM\r\nTRIGGER:-PT9223372036854775807S\r\nEND:VALARM\r\n",
            // i32::MIN has no positive counterpart.
            "DTSTART:20240102T030405Z\r\nRRULE:FREQ=MONTHLY;BYMONTHDAY=-2147483648\r\n",
            "DTSTART:20240102T030405Z\r\nRRULE:FREQ=MONTHLY;BYDAY=-2147483648SU\r\n",
            "DTSTART:20240102T030405Z\r\nRRULE:FREQ=MONTHLY;BYDAY=SU;BYSETPOS=-2147483648\r\n",
            "DTSTART:20240102T030405Z\r\nRRULE:FREQ=YEARLY;BYYEARDAY=-2147483648\r\n",
            // A date at the end of chrono's range with a numeric offset.
            "DTSTART:+2623470101T000000-0100\r\n",
        ] {
            let _ = convert(cal(body).as_bytes(), Format::ICalendar20, Format::VCalendar10);
        }
        for body in
            ["DTSTART:20240102T030405Z\r\nRRULE:MD1 2147483648- #0\r\n", "RRULE:MD1 -2147483648- #0\r\n"]
        {
            let _ = convert(vcal(body).as_bytes(), Format::VCalendar10, Format::ICalendar20);
        }
        // A time zone rule with a BYMONTH of u32::MAX.
        let tz = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTIMEZONE\r\nTZID:X\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=4294967295;BYDAY=-1SU\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:1\r\nDTSTART;TZID=X:20240102T030405\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let _ = convert(tz.as_bytes(), Format::ICalendar20, Format::VCalendar10);
        assert_eq!(nth_weekday(2024, u32::MAX, -1, chrono::Weekday::Sun), None);
        let d = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
        assert_eq!(When::Date(d).add(i64::MAX), When::Date(d));
        assert_eq!(When::Date(d).add(86_400), When::Date(d.succ_opt().unwrap()));
    }
}
