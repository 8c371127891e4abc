//! Unit tests of the WBXML codec on hand-made byte sequences.

use super::*;
use crate::model::*;

/// The worked example of digest §13.7.
const MINIMAL: &[u8] = &[
    0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0x6C, 0x71, 0x03, b'1', b'.', b'2', 0x00, 0x01, 0x72, 0x03, b'S',
    b'y', b'n', b'c', b'M', b'L', b'/', b'1', b'.', b'2', 0x00, 0x01, 0x65, 0x03, b'1', 0x00, 0x01, 0x5B,
    0x03, b'1', 0x00, 0x01, 0x6E, 0x57, 0x03, b'h', b't', b't', b'p', b':', b'/', b'/', b'x', b'/', b's',
    0x00, 0x01, 0x01, 0x67, 0x57, 0x03, b'I', b'M', b'E', b'I', b':', b'1', 0x00, 0x01, 0x01, 0x5A, 0x00,
    0x01, 0x4C, 0x03, b'2', b'0', b'0', b'0', b'0', 0x00, 0x01, 0x00, 0x00, 0x01, 0x01, 0x6B, 0x12, 0x01,
    0x01,
];

#[test]
fn decodes_worked_example() {
    let m = decode(MINIMAL).expect("decodes");
    assert_eq!(m.hdr.ver_dtd, "1.2");
    assert_eq!(m.hdr.ver_proto, "SyncML/1.2");
    assert_eq!(m.hdr.target.loc_uri, "http://x/s");
    assert_eq!(m.hdr.source.loc_uri, "IMEI:1");
    assert_eq!(m.hdr.meta.as_ref().and_then(|m| m.max_msg_size.as_deref()), Some("20000"));
    assert!(m.final_);
    assert!(m.body.is_empty());
    assert!(matches!(m.hdr.ver_dtd, std::borrow::Cow::Borrowed(_)), "zero-copy");
    let mut out = Vec::new();
    encode(&m, &mut out);
    assert_eq!(decode(&out).expect("re-decodes"), m);
}

#[test]
fn mb_u_int32_examples() {
    for (v, bytes) in
        [(0x1201u32, &[0xA4, 0x01][..]), (0x0FD3, &[0x9F, 0x53]), (300, &[0x82, 0x2C]), (0, &[0])]
    {
        let mut out = Vec::new();
        encode::mb_u32(&mut out, v);
        assert_eq!(out, bytes);
    }
}

#[test]
fn string_table_public_id_and_str_t() {
    let fpi = b"-//SYNCML//DTD SyncML 1.2//EN\0";
    let mut doc = vec![0x03, 0x00, 0x00, 0x6A, fpi.len() as u8 + 4];
    doc.extend_from_slice(fpi);
    doc.extend_from_slice(b"abc\0");
    // SyncML, SyncHdr, VerDTD STR_T "abc"
    doc.extend_from_slice(&[0x6D, 0x6C, 0x71, 0x83, fpi.len() as u8, 0x01, 0x01, 0x01]);
    let m = decode(&doc).expect("decodes");
    assert_eq!(m.hdr.ver_dtd, "abc");
}

#[test]
fn latin1_is_converted() {
    let doc = [0x02, 0xA4, 0x01, 0x04, 0x00, 0x6D, 0x6C, 0x71, 0x03, 0xE9, 0x00, 0x01, 0x01, 0x01];
    let m = decode(&doc).expect("decodes");
    assert_eq!(m.hdr.ver_dtd, "é");
}

#[test]
fn errors_name_offsets() {
    assert_eq!(decode(&[]), Err(WbxmlError::UnexpectedEof { offset: 0, context: "WBXML version" }));
    assert_eq!(decode(&[0x09]), Err(WbxmlError::UnsupportedVersion { version: 9 }));
    // String table length larger than the input: no allocation, an error.
    let e = decode(&[0x02, 0xA4, 0x01, 0x6A, 0x8F, 0xFF, 0xFF, 0xFF, 0x7F]).unwrap_err();
    assert!(matches!(e, WbxmlError::LengthOutOfBounds { offset: 9, .. }), "{e}");
    // Opaque longer than the input.
    let e = decode(&[0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0xC3, 0x10]).unwrap_err();
    assert!(matches!(e, WbxmlError::LengthOutOfBounds { offset: 8, .. }), "{e}");
    // Wrong root.
    let e = decode(&[0x02, 0xA4, 0x01, 0x6A, 0x00, 0x4A, 0x01]).unwrap_err();
    assert_eq!(e, WbxmlError::UnexpectedToken { offset: 5, token: 0x4A, expected: "SyncML" });
    // Unclosed.
    let e = decode(&[0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0x6C]).unwrap_err();
    assert!(matches!(e, WbxmlError::Unclosed { offset: 6, token: 0x6C, .. }), "{e}");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut doc = vec![0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0x6B];
    doc.extend(std::iter::repeat_n(0x48, 100_000)); // Atomic in Atomic ...
    let e = decode(&doc).unwrap_err();
    assert!(matches!(e, WbxmlError::TooDeep { .. }), "{e}");
    // Unknown elements are skipped iteratively: deep nesting is fine there.
    let mut doc = vec![0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0x7F];
    doc.extend(std::iter::repeat_n(0x7F, 100_000));
    doc.extend(std::iter::repeat_n(0x01, 100_002));
    assert!(decode(&doc).is_ok());
}

#[test]
fn attributes_and_extensions_are_skipped() {
    // SyncML with an attribute list (attr 0x05 = STR_I "x", END), then an
    // EXT_0, a PI, and a SyncHdr with VerDTD.
    let doc = [
        0x02, 0xA4, 0x01, 0x6A, 0x00, 0xED, 0x05, 0x03, b'x', 0x00, 0x01, 0xC0, 0x43, 0x05, 0x01, 0x6C, 0x71,
        0x03, b'1', 0x00, 0x40, b'e', 0x00, 0x01, 0x01, 0x01,
    ];
    let m = decode(&doc).expect("decodes");
    assert_eq!(m.hdr.ver_dtd, "1");
}

fn sample() -> SyncMl<'static> {
    let devinf = DevInf {
        ver_dtd: "1.1".into(),
        man: Some("ACME".into()),
        dev_id: "IMEI:1".into(),
        dev_typ: "phone".into(),
        utc: true,
        data_stores: vec![DataStore {
            source_ref: "./contacts".into(),
            rx_pref: Some(ContentTypeVersion { ct_type: "text/x-vcard".into(), ver_ct: Some("2.1".into()) }),
            sync_cap: vec!["1".into(), "2".into()],
            ..Default::default()
        }],
        ct_caps: vec![
            CtCap {
                ct_type: "text/x-vcard".into(),
                properties: vec![
                    Property {
                        prop_name: "BEGIN".into(),
                        val_enums: vec!["VCARD".into()],
                        ..Default::default()
                    },
                    Property {
                        prop_name: "TEL".into(),
                        data_type: Some("chr".into()),
                        max_size: Some("40".into()),
                        prop_params: vec![PropParam {
                            param_name: "TYPE".into(),
                            val_enums: vec!["HOME".into(), "WORK".into()],
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            CtCap { ct_type: "text/plain".into(), ..Default::default() },
        ],
        ..Default::default()
    };
    SyncMl {
        hdr: SyncHdr {
            ver_dtd: "1.1".into(),
            ver_proto: "SyncML/1.1".into(),
            session_id: "7".into(),
            msg_id: "1".into(),
            target: Location::uri("http://x"),
            source: Location { loc_uri: "IMEI:1".into(), loc_name: Some("alice".into()), filter: None },
            cred: Some(Cred {
                meta: Some(Meta { type_: Some("syncml:auth-md5".into()), ..Default::default() }),
                data: Data::Binary(vec![0xFF, 0x00, 0x80].into()),
            }),
            ..Default::default()
        },
        body: vec![
            Command::Put(PutGet {
                cmd_id: "1".into(),
                items: vec![Item {
                    source: Some(Location::uri("./devinf11")),
                    data: Some(Data::DevInf(Box::new(devinf))),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            Command::Status(Status {
                cmd_id: "2".into(),
                data: "200".into(),
                items: vec![Item {
                    data: Some(Data::Anchor(Anchor { last: None, next: Some("42".into()) })),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            Command::Sync(Sync {
                cmd_id: "3".into(),
                commands: vec![Command::Add(ItemCommand {
                    cmd_id: "4".into(),
                    items: vec![Item {
                        data: Some(Data::Text("BEGIN:VCARD\r\nN:a\0b\r\nEND:VCARD\r\n".repeat(5).into())),
                        ..Default::default()
                    }],
                    ..Default::default()
                })],
                ..Default::default()
            }),
        ],
        final_: true,
    }
}

#[test]
fn round_trips_sample_with_flat_ctcap_anchor_binary_and_nul() {
    let m = sample();
    let mut out = Vec::new();
    encode(&m, &mut out);
    assert_eq!(&out[..5], &[0x02, 0x9F, 0x53, 0x6A, 0x00]);
    let back = decode(&out).expect("decodes");
    assert_eq!(back, m);
}

#[test]
fn unknown_command_is_kept_with_cmd_id() {
    // SyncBody with token 0x30 (reserved) containing CmdID 9.
    let doc =
        [0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0x6B, 0x70, 0x4B, 0x03, b'9', 0x00, 0x01, 0x01, 0x01, 0x01];
    let m = decode(&doc).expect("decodes");
    assert_eq!(
        m.body,
        vec![Command::Unknown(UnknownCommand { name: "Reserved".into(), cmd_id: "9".into() })]
    );
}

#[test]
fn bare_elements_at_the_depth_limit_round_trip() {
    // SyncML, SyncBody, 61 Atomics, an Alert at depth 64 holding a bare
    // Cred and a bare Item: re-encoding must not nest any deeper.
    let mut doc = vec![0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0x6B];
    doc.extend(std::iter::repeat_n(0x48, 61));
    doc.extend_from_slice(&[0x46, 0x0E, 0x14, 0x01]);
    doc.extend(std::iter::repeat_n(0x01, 63));
    let m = decode(&doc).expect("decodes at the limit");
    let mut out = Vec::new();
    encode(&m, &mut out);
    assert_eq!(decode(&out).expect("our encoding stays within the limit"), m);
}

// ----- decode caps ------------------------------------------------------

use crate::codec::{Cap, DecodeLimits};

/// A WBXML 1.2 SyncML 1.2 document head with string table `strtbl`, then
/// `<SyncML>` open.
fn head(strtbl: &[u8]) -> Vec<u8> {
    let mut doc = vec![0x02, 0xA4, 0x01, 0x6A];
    encode::mb_u32(&mut doc, strtbl.len() as u32);
    doc.extend_from_slice(strtbl);
    doc.push(0x6D); // SyncML, with content
    doc
}

/// The cap a decode failed on.
fn cap_of(r: Result<SyncMl<'_>, WbxmlError>) -> Option<Cap> {
    match r {
        Err(WbxmlError::TooLarge { cap, .. }) => Some(cap),
        _ => None,
    }
}

#[test]
fn a_megabyte_of_empty_commands_stops_at_the_command_cap() {
    let mut doc = head(&[]);
    doc.push(0x6B); // SyncBody
    let start = doc.len();
    doc.resize(start + (1 << 20), 0x05); // empty <Add/>, one byte each
    doc.extend_from_slice(&[0x01, 0x01]);
    let t = std::time::Instant::now();
    let e = decode(&doc).unwrap_err();
    // Stopped at the 10,001st command, not at the end of the body.
    assert_eq!(e, WbxmlError::TooLarge { cap: Cap::Commands, limit: 10_000, offset: start + 10_000 });
    assert!(t.elapsed() < std::time::Duration::from_secs(2), "{:?}", t.elapsed());
    // Just under the cap it decodes.
    let mut ok = head(&[]);
    ok.push(0x6B);
    ok.resize(ok.len() + 10_000, 0x05);
    ok.extend_from_slice(&[0x01, 0x01]);
    assert_eq!(decode(&ok).expect("10,000 commands decode").body.len(), 10_000);
}

#[test]
fn items_of_one_command_are_capped() {
    let body = |n: usize| {
        let mut doc = head(&[]);
        doc.extend_from_slice(&[0x6B, 0x45]); // SyncBody, Add
        doc.resize(doc.len() + n, 0x14); // empty <Item/>
        doc.extend_from_slice(&[0x01, 0x01, 0x01]);
        doc
    };
    let limits = DecodeLimits { max_items: 100, ..DecodeLimits::default() };
    assert!(decode_with(&body(100), &limits).is_ok());
    assert_eq!(cap_of(decode_with(&body(101), &limits)), Some(Cap::Items));
    assert_eq!(cap_of(decode(&body(10_001))), Some(Cap::Items));
}

#[test]
fn skipped_and_unknown_elements_count_against_the_element_cap() {
    // Empty CmdIDs inside an Item are skipped, yet each is an element.
    let body = |n: usize| {
        let mut doc = head(&[]);
        doc.extend_from_slice(&[0x6B, 0x45, 0x54]); // SyncBody, Add, Item
        doc.resize(doc.len() + n, 0x0B);
        doc.extend_from_slice(&[0x01, 0x01, 0x01, 0x01]);
        doc
    };
    let limits = DecodeLimits { max_elements: 1_000, ..DecodeLimits::default() };
    // 4 elements of structure plus the skipped ones.
    assert!(decode_with(&body(996), &limits).is_ok());
    assert_eq!(cap_of(decode_with(&body(997), &limits)), Some(Cap::Elements));
    assert_eq!(cap_of(decode(&body(600_000))), Some(Cap::Elements));
}

#[test]
fn string_table_references_are_budgeted() {
    // One 60,000-byte entry, referenced from Data again and again.
    let mut tbl = vec![b'x'; 60_000];
    tbl.push(0);
    let body = |refs: usize| {
        let mut doc = head(&tbl);
        doc.extend_from_slice(&[0x6B, 0x45, 0x54, 0x4F]); // SyncBody, Add, Item, Data
        for _ in 0..refs {
            doc.extend_from_slice(&[0x83, 0x00]);
        }
        doc.extend_from_slice(&[0x01, 0x01, 0x01, 0x01, 0x01]);
        doc
    };
    // Budget: 2 × ~60 KB body + 64 KiB ≈ 185 KB, i.e. three references.
    let three = body(3);
    let m = decode(&three).expect("three references fit");
    match &m.body[0] {
        Command::Add(a) => {
            assert_eq!(a.items[0].data.as_ref().and_then(Data::as_text).map(str::len), Some(180_000))
        }
        other => panic!("{other:?}"),
    }
    let e = decode(&body(1_000)).unwrap_err();
    assert!(matches!(e, WbxmlError::TooLarge { cap: Cap::StringTable, .. }), "{e}");
    // LITERAL tag names are string-table references too.
    let mut doc = head(&tbl);
    doc.push(0x6B);
    for _ in 0..1_000 {
        doc.extend_from_slice(&[0x04, 0x00]); // LITERAL "xxx…", empty: an unknown command
    }
    doc.extend_from_slice(&[0x01, 0x01]);
    assert_eq!(cap_of(decode(&doc)), Some(Cap::StringTable));
}

#[test]
fn decoded_memory_is_budgeted() {
    // 5,000 Adds of one Item each: ~12 MB of decoded structs from ~15 KB.
    let mut doc = head(&[]);
    doc.push(0x6B);
    for _ in 0..5_000 {
        doc.extend_from_slice(&[0x45, 0x14, 0x01]); // <Add><Item/></Add>
    }
    doc.extend_from_slice(&[0x01, 0x01]);
    assert_eq!(decode(&doc).expect("within the default budget").body.len(), 5_000);
    let tight = DecodeLimits { memory_base: 1 << 20, memory_per_byte: 16, ..DecodeLimits::default() };
    assert_eq!(cap_of(decode_with(&doc, &tight)), Some(Cap::Memory));
    let capped = DecodeLimits { memory_max: 1 << 20, ..DecodeLimits::default() };
    assert_eq!(cap_of(decode_with(&doc, &capped)), Some(Cap::Memory));
}

#[test]
fn entity_zero_decodes_but_codec_refuses_it_in_ids() {
    // SyncHdr with Source/LocURI = "dev" ENTITY 0.
    let mut doc = head(&[]);
    doc.extend_from_slice(&[0x6C, 0x67, 0x57, 0x03, b'd', b'e', b'v', 0x00, 0x02, 0x00, 0x01, 0x01, 0x01]);
    doc.extend_from_slice(&[0x6B, 0x01, 0x01]);
    let m = decode(&doc).expect("the codec itself keeps the text");
    assert_eq!(m.hdr.source.loc_uri, "dev\0");
    let e = crate::codec::decode(Encoding::Wbxml, &doc).unwrap_err();
    assert!(
        matches!(e, crate::codec::DecodeError::Id(crate::codec::IdError::ControlChar { code: 0, .. })),
        "{e}"
    );
    assert_eq!(e.cap(), None);
    // OPAQUE bytes with a control character in an item id: refused too.
    let mut doc = head(&[]);
    doc.extend_from_slice(&[0x6B, 0x45, 0x54, 0x67, 0x57, 0xC3, 0x02, b'a', 0x1B]);
    doc.extend_from_slice(&[0x01, 0x01, 0x01, 0x01, 0x01, 0x01]);
    let e = crate::codec::decode(Encoding::Wbxml, &doc).unwrap_err();
    assert!(matches!(
        e,
        crate::codec::DecodeError::Id(crate::codec::IdError::ControlChar { code: 0x1B, .. })
    ));
}

/// Every piece of a split object goes OPAQUE, a short last piece too (as
/// STR_I it would be another PCDATA kind, which libsynthesis refuses to
/// join: 400); a short whole text stays inline.
#[test]
fn object_pieces_are_opaque_however_short() {
    let msg = |data: Data<'static>| SyncMl {
        hdr: SyncHdr { msg_id: "1".into(), ..Default::default() },
        body: vec![Command::Add(ItemCommand {
            cmd_id: "1".into(),
            items: vec![Item { data: Some(data), ..Default::default() }],
            ..Default::default()
        })],
        ..Default::default()
    };
    let (mut piece, mut whole) = (Vec::new(), Vec::new());
    encode(&msg(Data::Chunk("tail\r\n".into())), &mut piece);
    encode(&msg(Data::Text("tail\r\n".into())), &mut whole);
    let opaque = [&[0xC3, 6][..], b"tail\r\n"].concat();
    let inline = [&[0x03][..], b"tail\r\n", &[0x00]].concat();
    assert!(piece.windows(opaque.len()).any(|w| w == opaque), "{piece:02x?}");
    assert!(whole.windows(inline.len()).any(|w| w == inline), "{whole:02x?}");
    // Both decode to the same text.
    let text = |b: &[u8]| match decode(b).map(|m| m.body[0].clone().into_owned()) {
        Ok(Command::Add(a)) => a.items[0].data.as_ref().and_then(|d| d.as_text()).map(str::to_string),
        _ => None,
    };
    assert_eq!(text(&piece), Some("tail\r\n".to_string()));
    assert_eq!(text(&whole), text(&piece));
}
