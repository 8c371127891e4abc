//! Tests of the XML codec: captured sessions, targeted tolerance cases,
//! error reporting, and property-based round trips.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use shardsync::model::*;
use shardsync::xml::{decode, decode_devinf, encode, encode_devinf, XmlError};

fn fixture_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "xml") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures"), &mut v);
    v.sort();
    v
}

fn reencode(m: &SyncMl) -> Vec<u8> {
    let mut out = Vec::new();
    encode(m, &mut out);
    out
}

#[test]
fn captures_round_trip() {
    let files = fixture_files();
    assert!(files.len() >= 100, "fixtures missing: {}", files.len());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let m = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(m.version().is_some(), "{}", f.display());
        let out = reencode(&m);
        let m2 = decode(&out).unwrap_or_else(|e| panic!("{} re-encoded: {e}", f.display()));
        assert_eq!(m, m2, "{}", f.display());
        // Encoding is deterministic.
        assert_eq!(reencode(&m2), out, "{}", f.display());
    }
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures").join(rel)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn message_round_trip(m in common::gen::arb_message()) {
        let out = reencode(&m);
        let back = decode(&out).map_err(|e| TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&out))))?;
        prop_assert_eq!(back, m);
    }

    #[test]
    fn devinf_round_trip(d in common::gen::arb_devinf()) {
        let mut out = Vec::new();
        encode_devinf(&d, &mut out);
        let back = decode_devinf(&out).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(back, d);
    }

    /// Never panics, whatever the bytes (mutated real messages).
    #[test]
    fn garbage_never_panics(cut in 0usize..4000, flips in proptest::collection::vec((0usize..4000, any::<u8>()), 0..8)) {
        let mut bytes = fixture("xml/01-slow-sync/0002-c2s.xml");
        for (pos, b) in flips {
            if let Some(x) = bytes.get_mut(pos) {
                *x = b;
            }
        }
        bytes.truncate(cut.min(bytes.len()));
        let _ = decode(&bytes);
        let _ = decode_devinf(&bytes);
    }
}

#[test]
fn captured_content_is_decoded() {
    // Package 1: DevInf 1.2 inline in Put/Item/Data.
    let bytes = fixture("xml/01-slow-sync/0001-c2s.xml");
    let m = decode(&bytes).unwrap();
    assert_eq!(m.version(), Some(Version::V1_2));
    assert_eq!(m.hdr.meta.as_ref().unwrap().max_msg_size.as_deref(), Some("150000"));
    assert_eq!(m.hdr.cred.as_ref().unwrap().meta.as_ref().unwrap().type_.as_deref(), Some("syncml:auth-md5"));
    let Command::Put(put) = &m.body[0] else { panic!("{:?}", m.body[0]) };
    let Some(Data::DevInf(d)) = &put.items[0].data else { panic!("no devinf") };
    assert_eq!(d.man.as_deref(), Some("Patrick Ohly"));
    assert!(d.utc && d.support_large_objs && d.support_number_of_changes);
    let ds = &d.data_stores[0];
    assert_eq!(ds.source_ref, "./addressbook");
    let tel = ds.ct_caps[0].properties.iter().find(|p| p.prop_name == "TEL").unwrap();
    assert!(tel.prop_params[0].val_enums.iter().any(|v| v == "CELL"));
    // Untouched texts borrow from the input.
    assert!(matches!(m.hdr.session_id, Cow::Borrowed(_)));

    // Package 3: echoed anchor in a Status item, vCards in CDATA with CRLF.
    let bytes = fixture("xml/01-slow-sync/0002-c2s.xml");
    let m = decode(&bytes).unwrap();
    let anchor = m.body.iter().find_map(|c| match c {
        Command::Status(s) => s.items.first().and_then(|i| match &i.data {
            Some(Data::Anchor(a)) => Some(a.clone()),
            _ => None,
        }),
        _ => None,
    });
    assert!(anchor.unwrap().next.is_some());
    let sync = m.body.iter().find_map(|c| if let Command::Sync(s) = c { Some(s) } else { None }).unwrap();
    let Command::Add(add) = &sync.commands[0] else { panic!() };
    let text = add.items[0].data.as_ref().unwrap().as_text().unwrap();
    assert!(text.starts_with("BEGIN:VCARD\r\n") && text.contains("END:VCARD"), "{text:?}");
    assert!(matches!(add.items[0].data, Some(Data::Text(Cow::Borrowed(_)))));

    // SyncML 1.1 with a DevInf 1.1 global flat CTCap.
    let bytes = fixture("extra/12-syncml-1.1/0001-c2s.xml");
    let m = decode(&bytes).unwrap();
    assert_eq!(m.version(), Some(Version::V1_1));
    let Command::Put(put) = &m.body[0] else { panic!() };
    let Some(Data::DevInf(d)) = &put.items[0].data else { panic!("no devinf") };
    assert!(!d.ct_caps.is_empty());
    let tel = d.ct_caps[0].properties.iter().find(|p| p.prop_name == "TEL").unwrap();
    assert_eq!(tel.prop_params[0].param_name, "TYPE");
    assert!(tel.prop_params[0].val_enums.iter().any(|v| v == "CELL"));
    let begin = &d.ct_caps[0].properties[0];
    assert_eq!((begin.prop_name.as_ref(), begin.val_enums.len()), ("BEGIN", 1));
}

const HDR: &str = "<SyncHdr><VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto><SessionID>1</SessionID>\
<MsgID>1</MsgID><Target><LocURI>srv</LocURI></Target><Source><LocURI>dev</LocURI></Source></SyncHdr>";

fn msg(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><SyncML xmlns=\"SYNCML:SYNCML1.2\">{HDR}<SyncBody>{body}</SyncBody></SyncML>"
    )
}

fn first_item_text(m: &SyncMl) -> String {
    let Command::Add(a) = &m.body[0] else { panic!("{:?}", m.body) };
    a.items[0].data.as_ref().unwrap().as_text().unwrap().to_string()
}

#[test]
fn cdata_and_escaped_text_are_equal() {
    let a = msg("<Add><CmdID>2</CmdID><Item><Data><![CDATA[a<b>&c\r\nd]]></Data></Item></Add>");
    let b = msg("<Add><CmdID>2</CmdID><Item><Data>a&lt;b&gt;&amp;c&#13;\nd</Data></Item></Add>");
    let c = msg("<Add><CmdID>2</CmdID><Item><Data>a&lt;<![CDATA[b>&c]]>&#xD;\nd</Data></Item></Add>");
    let (ma, mb, mc) =
        (decode(a.as_bytes()).unwrap(), decode(b.as_bytes()).unwrap(), decode(c.as_bytes()).unwrap());
    assert_eq!(first_item_text(&ma), "a<b>&c\r\nd");
    assert_eq!(ma, mb);
    assert_eq!(ma, mc);
    // Raw CR/LF survive as written, no normalisation, no trimming.
    let d = msg("<Add><CmdID>2</CmdID><Item><Data> x\r\ny\r </Data></Item></Add>");
    assert_eq!(first_item_text(&decode(d.as_bytes()).unwrap()), " x\r\ny\r ");
}

#[test]
fn namespace_prefixes_and_case_are_ignored() {
    let doc = "<s:SyncML xmlns:s='syncml:SYNCML1.2'><s:SyncHdr><s:VerDTD>1.2</s:VerDTD>\
<s:Meta><mi:MaxMsgSize xmlns:mi='syncml:metinf'>4000</mi:MaxMsgSize><MaxObjSize>99</MaxObjSize>\
<Type xmlns='SYNCML:METINF'>t</Type></s:Meta></s:SyncHdr><s:SyncBody><s:Final/></s:SyncBody></s:SyncML>";
    let m = decode(doc.as_bytes()).unwrap();
    let meta = m.hdr.meta.unwrap();
    assert_eq!(meta.max_msg_size.as_deref(), Some("4000"));
    assert_eq!(meta.max_obj_size.as_deref(), Some("99"));
    assert_eq!(meta.type_.as_deref(), Some("t"));
    assert!(m.final_);
    // No namespace at all, lower-case SyncML namespace.
    let doc = "<SyncML><SyncHdr><VerDTD>1.1</VerDTD></SyncHdr><SyncBody/></SyncML>";
    assert_eq!(decode(doc.as_bytes()).unwrap().version(), Some(Version::V1_1));
    let doc = "<SyncML xmlns='syncml:syncml1.0'><SyncHdr><VerProto>SyncML/1.0</VerProto></SyncHdr></SyncML>";
    assert_eq!(decode(doc.as_bytes()).unwrap().version(), Some(Version::V1_0));
}

#[test]
fn unknown_elements_and_commands() {
    let doc = msg("<Vendor><X>1</X></Vendor><Alert><CmdID>1</CmdID><Foo a='1'><Bar/>text</Foo><Data>200</Data></Alert>\
<Sync><CmdID>2</CmdID><Frobnicate><CmdID>3</CmdID><Item/></Frobnicate><Add><CmdID>4</CmdID></Add></Sync><Final/>");
    let m = decode(doc.as_bytes()).unwrap();
    assert!(m.final_);
    let Command::Unknown(u) = &m.body[0] else { panic!("{:?}", m.body[0]) };
    assert_eq!((u.name.as_ref(), u.cmd_id.as_ref()), ("Vendor", ""));
    let Command::Alert(a) = &m.body[1] else { panic!() };
    assert_eq!((a.cmd_id.as_ref(), a.data.as_deref()), ("1", Some("200")));
    let Command::Sync(s) = &m.body[2] else { panic!() };
    let Command::Unknown(u) = &s.commands[0] else { panic!() };
    assert_eq!((u.name.as_ref(), u.cmd_id.as_ref()), ("Frobnicate", "3"));
    assert_eq!(s.commands[1].cmd_id(), "4");
    // Encoders skip unknown commands.
    let out = reencode(&m);
    let back = decode(&out).unwrap();
    assert_eq!(back.body.len(), 2);
    let Command::Sync(s) = &back.body[1] else { panic!() };
    assert_eq!(s.commands.len(), 1);
}

#[test]
fn any_element_order() {
    let doc =
        msg("<Status><Data>200</Data><Cmd>Sync</Cmd><CmdRef>3</CmdRef><MsgRef>1</MsgRef><CmdID>9</CmdID>\
<SourceRef>a</SourceRef><TargetRef>b</TargetRef><SourceRef>c</SourceRef></Status>");
    let m = decode(doc.as_bytes()).unwrap();
    let Command::Status(s) = &m.body[0] else { panic!() };
    assert_eq!(
        (s.cmd_id.as_ref(), s.cmd_ref.as_ref(), s.cmd.as_ref(), s.data.as_ref()),
        ("9", "3", "Sync", "200")
    );
    assert_eq!(s.source_refs, vec!["a", "c"]);
    assert_eq!(s.target_refs, vec!["b"]);
}

#[test]
fn devinf_wrapped_in_cdata_or_escaped() {
    let inner =
        "<DevInf xmlns='syncml:devinf'><VerDTD>1.2</VerDTD><DevID>x</DevID><DevTyp>phone</DevTyp></DevInf>";
    for data in [format!("<![CDATA[{inner}]]>"), inner.replace('<', "&lt;").replace('>', "&gt;")] {
        let doc = msg(&format!("<Put><CmdID>1</CmdID><Item><Data>{data}</Data></Item></Put>"));
        let m = decode(doc.as_bytes()).unwrap();
        let Command::Put(p) = &m.body[0] else { panic!() };
        let Some(Data::DevInf(d)) = &p.items[0].data else { panic!("{:?}", p.items[0].data) };
        assert_eq!((d.dev_id.as_ref(), d.dev_typ.as_ref()), ("x", "phone"));
    }
}

#[test]
fn devinf_11_size_and_standalone() {
    let doc = "<?xml version='1.0'?><DevInf><VerDTD>1.1</VerDTD><DevID>d</DevID><DevTyp>phone</DevTyp>\
<DataStore><SourceRef>c</SourceRef><SyncCap><SyncType>1</SyncType></SyncCap></DataStore>\
<CTCap><CTType>text/x-vcard</CTType><PropName>N</PropName><DataType>chr</DataType><Size>40</Size>\
<PropName>TEL</PropName><ParamName>TYPE</ParamName><ValEnum>HOME</ValEnum><ValEnum>CELL</ValEnum>\
<CTType>text/x-vcalendar</CTType><PropName>BEGIN</PropName><ValEnum>VCALENDAR</ValEnum></CTCap></DevInf>";
    let d = decode_devinf(doc.as_bytes()).unwrap();
    assert_eq!(d.ct_caps.len(), 2);
    let n = &d.ct_caps[0].properties[0];
    assert_eq!(
        (n.prop_name.as_ref(), n.data_type.as_deref(), n.max_size.as_deref()),
        ("N", Some("chr"), Some("40"))
    );
    let tel = &d.ct_caps[0].properties[1];
    assert_eq!(tel.prop_params[0].val_enums, vec!["HOME", "CELL"]);
    assert!(tel.val_enums.is_empty());
    assert_eq!(d.ct_caps[1].properties[0].val_enums, vec!["VCALENDAR"]);
    // Re-encoded as 1.1 (flat, Size) and decoded equal.
    let mut out = Vec::new();
    encode_devinf(&d, &mut out);
    let s = String::from_utf8(out.clone()).unwrap();
    assert!(s.contains("<Size>40</Size>") && !s.contains("<Property>"), "{s}");
    assert_eq!(decode_devinf(&out).unwrap(), d);
    // `Size` accepted for MaxSize in 1.2 Property form too.
    let doc =
        "<DevInf><VerDTD>1.2</VerDTD><DataStore><CTCap><CTType>t</CTType><Property><PropName>N</PropName>\
<Size>7</Size></Property></CTCap></DataStore></DevInf>";
    let d = decode_devinf(doc.as_bytes()).unwrap();
    assert_eq!(d.data_stores[0].ct_caps[0].properties[0].max_size.as_deref(), Some("7"));
    assert!(matches!(decode_devinf(b"<SyncML/>"), Err(XmlError::WrongRoot { .. })));
}

#[test]
fn errors_carry_offset_and_element() {
    let doc = msg("<Add><CmdID>2</CmdID><Item><Data>x</Item></Add>");
    let cut = doc.find("</Add>").unwrap();
    // Truncated input.
    let err = decode(&doc.as_bytes()[..cut]).unwrap_err();
    match &err {
        XmlError::Truncated { path, offset } => {
            assert!(path.starts_with("SyncML/SyncBody/Add"), "{path}");
            assert!(*offset > 0);
        }
        e => panic!("{e:?}"),
    }
    // A broken tag.
    let doc = msg("<Add><CmdID>2</CmdID><Item><Data x='>y</Data></Item></Add>");
    let err = decode(doc.as_bytes()).unwrap_err();
    assert!(err.offset().is_some() && err.path().unwrap().contains("Item"), "{err:?}");
    // Invalid UTF-8 in text.
    let mut bytes = msg("<Alert><CmdID>1</CmdID><Data>20@</Data></Alert>").into_bytes();
    let at = bytes.iter().position(|&b| b == b'@').unwrap();
    bytes[at] = 0xFF;
    let err = decode(&bytes).unwrap_err();
    match &err {
        XmlError::InvalidUtf8 { path, offset } => {
            assert_eq!(path, "SyncML/SyncBody/Alert/Data");
            assert!(*offset as usize >= at, "{offset} < {at}");
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(decode(b""), Err(XmlError::NoRoot)));
    assert!(matches!(decode(b"<html/>"), Err(XmlError::WrongRoot { .. })));
    // Every prefix of a real message is an error, never a panic.
    let bytes = fixture("xml/01-slow-sync/0001-c2s.xml");
    for n in (0..bytes.len()).step_by(97) {
        assert!(decode(&bytes[..n]).is_err(), "prefix {n}");
    }
}

#[test]
fn deep_nesting_is_rejected() {
    let n = 40;
    let body = format!("{}{}", "<Sequence><CmdID>1</CmdID>".repeat(n), "</Sequence>".repeat(n));
    assert!(matches!(decode(msg(&body).as_bytes()), Err(XmlError::TooDeep { .. })));
    let n = 10_000;
    let body = format!("{}{}", "<X>".repeat(n), "</X>".repeat(n));
    assert!(matches!(decode(msg(&body).as_bytes()), Err(XmlError::TooDeep { .. })));
    let body = format!("<Alert>{}{}</Alert>", "<Item><Target><Filter><Field>".repeat(n), "</X>".repeat(n));
    assert!(matches!(decode(msg(&body).as_bytes()), Err(XmlError::TooDeep { .. })));
    // Within limits it decodes.
    let n = 20;
    let body = format!("{}{}", "<Atomic><CmdID>1</CmdID>".repeat(n), "</Atomic>".repeat(n));
    assert!(decode(msg(&body).as_bytes()).is_ok());
}

#[test]
fn latin1_declaration_is_converted() {
    let doc = msg("<Add><CmdID>2</CmdID><Item><Data>M\u{1}ller \u{2}</Data></Item></Add>")
        .replace("<?xml version=\"1.0\"?>", "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>");
    // Real latin1 / windows-1252 bytes: ü = 0xFC, € = 0x80.
    let bytes: Vec<u8> = doc
        .bytes()
        .map(|b| match b {
            1 => 0xFC,
            2 => 0x80,
            b => b,
        })
        .collect();
    assert!(std::str::from_utf8(&bytes).is_err());
    let m = decode(&bytes).unwrap();
    assert_eq!(first_item_text(&m), "Müller €");
}

#[test]
fn binary_data_is_base64() {
    let mut m = decode(msg("<Add><CmdID>2</CmdID><Item><Data>x</Data></Item></Add>").as_bytes())
        .unwrap()
        .into_owned();
    let Command::Add(a) = &mut m.body[0] else { panic!() };
    a.items[0].data = Some(Data::Binary(Cow::Owned(vec![0, 1, 2, 250, 255])));
    let out = reencode(&m);
    assert_eq!(first_item_text(&decode(&out).unwrap()), "AAEC+v8=");
}

#[test]
fn encoder_writes_namespaces() {
    let bytes = fixture("extra/12-syncml-1.1/0001-c2s.xml");
    let m = decode(&bytes).unwrap();
    let out = String::from_utf8(reencode(&m)).unwrap();
    assert!(out.starts_with(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><SyncML xmlns=\"SYNCML:SYNCML1.1\"><SyncHdr>"
    ));
    assert!(out.contains("<Meta><MaxMsgSize xmlns=\"syncml:metinf\">150000</MaxMsgSize>"));
    assert!(out.contains("<DevInf xmlns=\"syncml:devinf\"><VerDTD>1.1</VerDTD>"));
    let mut cmd_total = 0;
    let mut empty = m.clone();
    empty.body.clear();
    empty.final_ = false;
    for c in &m.body {
        let mut buf = Vec::new();
        shardsync::xml::encode_command(c, &mut buf);
        cmd_total += buf.len();
    }
    let fin = if m.final_ { shardsync::xml::FINAL_LEN } else { 0 };
    assert_eq!(reencode(&empty).len() + cmd_total + fin, out.len());
}

#[test]
fn worst_case_nesting_fits_a_small_stack() {
    // The deepest accepted shape: commands nested to the command limit with
    // an item structure at the bottom, decoded on a 1 MiB stack (debug build).
    let n = shardsync::xml::MAX_COMMAND_DEPTH - 1;
    let inner = "<Add><CmdID>9</CmdID><Item><Target><LocURI>u</LocURI><Filter><Field><Item><Meta><Anchor>\
<Next>1</Next></Anchor></Meta><Data>d</Data></Item></Field></Filter></Target></Item></Add>";
    let body = format!("{}{inner}{}", "<Sync><CmdID>1</CmdID>".repeat(n), "</Sync>".repeat(n));
    let doc = msg(&body);
    let handle = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            // (Not `into_owned()`: the model's iterator chains are deep in
            // debug builds; this test is about the codec's own recursion.)
            let m = decode(doc.as_bytes());
            let ok = m.is_ok();
            if let Ok(m) = m {
                let out = reencode(&m);
                assert!(decode(&out).unwrap() == m);
            }
            ok
        })
        .unwrap();
    assert!(handle.join().unwrap());
}

#[test]
fn doctype_comments_and_pretty_printing() {
    let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<!DOCTYPE SyncML PUBLIC \"-//SYNCML//DTD SyncML 1.1//EN\" \"http://www.syncml.org/docs/syncml_represent_v11_20020213.dtd\">\n\
<SyncML xmlns=\"SYNCML:SYNCML1.1\">\n  <!-- header -->\n  <SyncHdr>\n    <VerDTD>1.1</VerDTD>\n    <?pi x?>\n\
    <MsgID>1</MsgID>\n  </SyncHdr>\n  <SyncBody>\n    <Alert>\n      <CmdID>1</CmdID>\n      <Data>200</Data>\n\
      <Item>\n        <Target><LocURI>./contacts</LocURI></Target>\n        <Meta>\n          <Anchor xmlns=\"syncml:metinf\">\n\
            <Last></Last>\n            <Next>42</Next>\n          </Anchor>\n        </Meta>\n      </Item>\n    </Alert>\n\
    <Final/>\n  </SyncBody>\n</SyncML>\n";
    let m = decode(doc.as_bytes()).unwrap();
    assert_eq!(m.version(), Some(Version::V1_1));
    assert_eq!(m.hdr.msg_id, "1");
    assert!(m.final_);
    let Command::Alert(a) = &m.body[0] else { panic!() };
    assert_eq!(a.data.as_deref(), Some("200"));
    let anchor = a.items[0].meta.as_ref().unwrap().anchor.as_ref().unwrap();
    assert_eq!((anchor.last.as_deref(), anchor.next.as_deref()), (Some(""), Some("42")));
    assert_eq!(a.items[0].target.as_ref().unwrap().loc_uri, "./contacts");
}
