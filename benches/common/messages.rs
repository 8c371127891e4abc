//! Realistic logical SyncML messages for codec benchmarks, shared by the XML
//! and WBXML benches (`#[path = "common/messages.rs"] mod messages;`).
//!
//! * [`client_sync_adds`]: client package 3 of a slow sync: header Status,
//!   Alert Status and a Sync with 100 Adds of varied ~300-byte vCard 3.0
//!   items (CRLF line ends).
//! * [`server_status_reply`]: a server reply answering such a package: 102
//!   Status commands (header, Sync, 100 item statuses) and a Final.
//! * [`devinf_put`]: a real client message 1 (SyncEvolution 2.0 / Synthesis
//!   3.4): Alert + Put of a full DevInf 1.2, taken from the captured session.
#![allow(dead_code)]

use std::borrow::Cow;

use shardsync::model::*;

/// A named benchmark message and its number of logical units (items,
/// statuses or DevInf properties) for element throughput.
pub struct BenchMessage {
    /// Short name for benchmark ids.
    pub name: &'static str,
    /// The message.
    pub msg: SyncMl<'static>,
    /// Logical units in the message (see each constructor).
    pub units: u64,
}

/// All benchmark messages.
pub fn all() -> Vec<BenchMessage> {
    vec![client_sync_adds(), server_status_reply(), devinf_put()]
}

fn t(s: impl Into<String>) -> Text<'static> {
    Cow::Owned(s.into())
}

fn hdr(msg_id: &str, target: &str, source: &str) -> SyncHdr<'static> {
    SyncHdr {
        ver_dtd: Cow::Borrowed("1.2"),
        ver_proto: Cow::Borrowed("SyncML/1.2"),
        session_id: t("1764058700"),
        msg_id: t(msg_id),
        target: Location::uri(t(target)),
        source: Location { loc_uri: t(source), loc_name: Some(t("alice")), filter: None },
        meta: Some(Meta {
            max_msg_size: Some(t("150000")),
            max_obj_size: Some(t("4000000")),
            ..Meta::default()
        }),
        ..SyncHdr::default()
    }
}

const GIVEN: [&str; 12] = [
    "Anna",
    "Bernd",
    "Chloé",
    "Dmitri",
    "Elif",
    "François",
    "Grete",
    "Hiro",
    "Ingrid",
    "Jürgen",
    "Kai",
    "Lena",
];
const FAMILY: [&str; 10] = [
    "Müller",
    "Schmidt",
    "O'Neil",
    "Nakamura",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Smith",
    "García",
    "Andersson",
];
const ORGS: [&str; 6] =
    ["ACME Corp.", "Example GmbH", "Widgets & Co", "Initech", "Umbrella Ltd", "Stark Industries"];
const CITIES: [&str; 5] = ["Berlin", "Paris", "Osaka", "Milano", "Kraków"];

/// A varied vCard 3.0 of roughly 300 bytes.
pub fn vcard(i: usize) -> String {
    let g = GIVEN[i % GIVEN.len()];
    let f = FAMILY[(i * 7) % FAMILY.len()];
    let org = ORGS[(i * 3) % ORGS.len()];
    let city = CITIES[(i * 5) % CITIES.len()];
    let mut v = format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nPRODID:-//Synthesis AG//NONSGML SyncML Engine V3.4.0.47//EN\r\n\
         REV:20261125T08{:02}{:02}Z\r\nN:{f};{g};;;\r\nFN:{g} {f}\r\nORG:{org}\r\n\
         TEL;TYPE=CELL:+49 170 {:07}\r\nEMAIL;TYPE=INTERNET,HOME:{}.{}@example.org\r\n",
        i % 60,
        (i * 13) % 60,
        1_000_000 + i * 7919 % 9_000_000,
        g.to_lowercase(),
        i
    );
    if i % 3 == 0 {
        v.push_str(&format!(
            "ADR;TYPE=HOME:;;Hauptstraße {};{city};;{:05};\r\n",
            i % 200 + 1,
            10000 + i * 37
        ));
    }
    if i % 4 == 1 {
        v.push_str("NOTE:Met at the conference\\, <ask about> the Q3 offer & follow up\r\n");
    }
    v.push_str("END:VCARD\r\n");
    v
}

/// Client package 3: 100 Adds in one Sync (units: 100 items).
pub fn client_sync_adds() -> BenchMessage {
    let adds = (0..100)
        .map(|i| {
            Command::Add(ItemCommand {
                cmd_id: t((i + 4).to_string()),
                meta: Some(Meta { type_: Some(t("text/vcard")), ..Meta::default() }),
                items: vec![Item {
                    source: Some(Location::uri(t(format!("contact-{i:05}.vcf")))),
                    data: Some(Data::Text(t(vcard(i)))),
                    ..Item::default()
                }],
                ..ItemCommand::default()
            })
        })
        .collect();
    let msg = SyncMl {
        hdr: hdr("2", "http://sync.example.org/sync?sessionid=4185404817955947", "IMEI:490154203237518"),
        body: vec![
            status(1, "1", "0", "SyncHdr", "IMEI:490154203237518", "http://sync.example.org/sync", "200"),
            Command::Status(Status {
                items: vec![Item {
                    data: Some(Data::Anchor(Anchor { last: None, next: Some(t("20261125T081820Z")) })),
                    ..Item::default()
                }],
                ..status_inner(2, "1", "5", "Alert", "./addressbook", "addressbook", "200")
            }),
            Command::Sync(Sync {
                cmd_id: t("3"),
                target: Some(Location::uri(t("addressbook"))),
                source: Some(Location::uri(t("./addressbook"))),
                number_of_changes: Some(t("100")),
                commands: adds,
                ..Sync::default()
            }),
        ],
        final_: true,
    };
    BenchMessage { name: "sync_100_adds", msg, units: 100 }
}

fn status_inner(
    id: usize,
    msg_ref: &str,
    cmd_ref: &str,
    cmd: &str,
    target: &str,
    source: &str,
    code: &str,
) -> Status<'static> {
    Status {
        cmd_id: t(id.to_string()),
        msg_ref: Some(t(msg_ref)),
        cmd_ref: t(cmd_ref),
        cmd: t(cmd),
        target_refs: if target.is_empty() { Vec::new() } else { vec![t(target)] },
        source_refs: if source.is_empty() { Vec::new() } else { vec![t(source)] },
        data: t(code),
        ..Status::default()
    }
}

fn status(
    id: usize,
    msg_ref: &str,
    cmd_ref: &str,
    cmd: &str,
    target: &str,
    source: &str,
    code: &str,
) -> Command<'static> {
    Command::Status(status_inner(id, msg_ref, cmd_ref, cmd, target, source, code))
}

/// Server reply with 102 Status commands (units: 102 statuses).
pub fn server_status_reply() -> BenchMessage {
    let mut body = vec![
        status(1, "2", "0", "SyncHdr", "http://sync.example.org/sync", "IMEI:490154203237518", "200"),
        status(2, "2", "3", "Sync", "addressbook", "./addressbook", "200"),
    ];
    for i in 0..100 {
        let code = if i % 17 == 5 { "418" } else { "201" };
        body.push(status(i + 3, "2", &(i + 4).to_string(), "Add", "", &format!("contact-{i:05}.vcf"), code));
    }
    let mut h = hdr("2", "IMEI:490154203237518", "http://sync.example.org/sync");
    h.resp_uri = Some(t("http://sync.example.org/sync?sessionid=4185404817955947"));
    BenchMessage { name: "status_reply_102", msg: SyncMl { hdr: h, body, final_: true }, units: 102 }
}

/// The captured client message 1 with its full DevInf 1.2 (units: CTCap
/// properties of the DevInf).
pub fn devinf_put() -> BenchMessage {
    let raw = include_bytes!("../../tests/fixtures/captures/xml/01-slow-sync/0001-c2s.xml");
    let msg = match shardsync::xml::decode(raw) {
        Ok(m) => m.into_owned(),
        Err(e) => panic!("captured DevInf message does not decode: {e}"),
    };
    let units = msg
        .body
        .iter()
        .filter_map(|c| match c {
            Command::Put(p) => Some(p),
            _ => None,
        })
        .flat_map(|p| p.items.iter())
        .filter_map(|i| match &i.data {
            Some(Data::DevInf(d)) => {
                Some(d.data_stores.iter().flat_map(|s| &s.ct_caps).map(|c| c.properties.len()).sum::<usize>())
            }
            _ => None,
        })
        .sum::<usize>() as u64;
    BenchMessage { name: "devinf_put", msg, units: units.max(1) }
}
