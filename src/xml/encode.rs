//! Model → XML, written straight into the caller's buffer in DTD order.
//!
//! Leaf texts are escaped (`&`, `<`, `>`, and CR as `&#13;` so a conforming
//! parser keeps it). Item payloads (`Data` text) that contain markup
//! characters go into one CDATA section instead (unless they contain `]]>`),
//! which is what SyncML peers send and expect; CR/LF are written raw there.

use base64::Engine as _;

use crate::model::*;

/// Length of `<Final/>`, for budgeting a message against MaxMsgSize.
pub const FINAL_LEN: usize = b"<Final/>".len();

/// Writes `<Tag>escaped text</Tag>` for a literal tag name.
macro_rules! leaf {
    ($out:expr, $tag:literal, $text:expr) => {{
        $out.extend_from_slice(concat!("<", $tag, ">").as_bytes());
        escape($out, $text);
        $out.extend_from_slice(concat!("</", $tag, ">").as_bytes());
    }};
}

/// Writes a leaf if the value is present.
macro_rules! opt_leaf {
    ($out:expr, $tag:literal, $text:expr) => {{
        if let Some(t) = $text {
            leaf!($out, $tag, t);
        }
    }};
}

/// Writes `<Tag/>` if the flag is set.
macro_rules! flag {
    ($out:expr, $tag:literal, $on:expr) => {{
        if $on {
            $out.extend_from_slice(concat!("<", $tag, "/>").as_bytes());
        }
    }};
}

/// Writes a MetInf leaf (with its namespace) if present.
macro_rules! metinf_leaf {
    ($out:expr, $tag:literal, $text:expr) => {{
        if let Some(t) = $text {
            $out.extend_from_slice(concat!("<", $tag, " xmlns=\"syncml:metinf\">").as_bytes());
            escape($out, t);
            $out.extend_from_slice(concat!("</", $tag, ">").as_bytes());
        }
    }};
}

/// Encodes a SyncML message as XML, appending to `out`.
///
/// The namespace comes from [`SyncMl::version`] (SyncML 1.2 if unknown).
/// [`Command::Unknown`] is skipped; [`Data::Binary`] is written base64.
/// Encoding is a single pass without intermediate allocations, cheap enough
/// to re-run while filling a reply up to the client's MaxMsgSize.
pub fn encode(msg: &SyncMl, out: &mut Vec<u8>) {
    let version = msg.version().unwrap_or(Version::V1_2);
    out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><SyncML xmlns=\"");
    out.extend_from_slice(version.namespace().as_bytes());
    out.extend_from_slice(b"\">");
    hdr(out, &msg.hdr);
    out.extend_from_slice(b"<SyncBody>");
    for c in &msg.body {
        encode_command(c, out);
    }
    flag!(out, "Final", msg.final_);
    out.extend_from_slice(b"</SyncBody></SyncML>");
}

/// Encodes a standalone DevInf document (with XML declaration).
///
/// DevInf `VerDTD` 1.0/1.1 is written in the 1.1 form: one global, flat
/// `CTCap` (holding the global and all per-datastore CTCaps) with `Size`
/// for MaxSize; otherwise the 1.2 form with per-datastore `CTCap`s.
pub fn encode_devinf(devinf: &DevInf, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    devinf_elem(out, devinf);
}

/// Encodes one command (as it appears in SyncBody), appending to `out`.
///
/// The encoded size of a message is the size of the same message with an
/// empty body plus the encoded size of each command (plus [`FINAL_LEN`]),
/// which lets the engine fill a reply incrementally. Unknown commands write
/// nothing.
pub fn encode_command(cmd: &Command, out: &mut Vec<u8>) {
    match cmd {
        Command::Alert(c) => alert(out, c),
        Command::Add(c) => item_command(out, b"<Add>", b"</Add>", c),
        Command::Replace(c) => item_command(out, b"<Replace>", b"</Replace>", c),
        Command::Delete(c) => item_command(out, b"<Delete>", b"</Delete>", c),
        Command::Copy(c) => item_command(out, b"<Copy>", b"</Copy>", c),
        Command::Move(c) => item_command(out, b"<Move>", b"</Move>", c),
        Command::Sync(c) => sync(out, c),
        Command::Atomic(c) => container(out, b"<Atomic>", b"</Atomic>", c),
        Command::Sequence(c) => container(out, b"<Sequence>", b"</Sequence>", c),
        Command::Status(c) => status(out, c),
        Command::Put(c) => put_get(out, b"<Put>", b"</Put>", c),
        Command::Get(c) => put_get(out, b"<Get>", b"</Get>", c),
        Command::Results(c) => results(out, c),
        Command::Map(c) => map(out, c),
        Command::Exec(c) => exec(out, c),
        Command::Search(c) => search(out, c),
        Command::Unknown(_) => {}
    }
}

/// Appends `s` with `&`, `<`, `>` and CR escaped.
fn escape(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let rep: &[u8] = match c {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\r' => b"&#13;",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
}

/// Appends an item payload: raw if it has no markup characters, else CDATA
/// (CR/LF kept raw, as peers send them), else escaped if it contains `]]>`.
fn payload(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if !b.iter().any(|&c| matches!(c, b'<' | b'>' | b'&')) {
        out.extend_from_slice(b);
    } else if !b.windows(3).any(|w| w == b"]]>") {
        out.extend_from_slice(b"<![CDATA[");
        out.extend_from_slice(b);
        out.extend_from_slice(b"]]>");
    } else {
        escape(out, s);
    }
}

fn hdr(out: &mut Vec<u8>, h: &SyncHdr) {
    out.extend_from_slice(b"<SyncHdr>");
    leaf!(out, "VerDTD", &h.ver_dtd);
    leaf!(out, "VerProto", &h.ver_proto);
    leaf!(out, "SessionID", &h.session_id);
    leaf!(out, "MsgID", &h.msg_id);
    location(out, b"<Target>", b"</Target>", &h.target);
    location(out, b"<Source>", b"</Source>", &h.source);
    opt_leaf!(out, "RespURI", &h.resp_uri);
    flag!(out, "NoResp", h.no_resp);
    if let Some(c) = &h.cred {
        cred(out, c);
    }
    if let Some(m) = &h.meta {
        meta(out, m);
    }
    out.extend_from_slice(b"</SyncHdr>");
}

fn location(out: &mut Vec<u8>, open: &[u8], close: &[u8], l: &Location) {
    out.extend_from_slice(open);
    leaf!(out, "LocURI", &l.loc_uri);
    opt_leaf!(out, "LocName", &l.loc_name);
    if let Some(f) = &l.filter {
        filter(out, f);
    }
    out.extend_from_slice(close);
}

fn opt_location(out: &mut Vec<u8>, open: &[u8], close: &[u8], l: &Option<Location>) {
    if let Some(l) = l {
        location(out, open, close, l);
    }
}

fn filter(out: &mut Vec<u8>, f: &Filter) {
    out.extend_from_slice(b"<Filter>");
    if let Some(m) = &f.meta {
        meta(out, m);
    }
    if let Some(i) = &f.field {
        out.extend_from_slice(b"<Field>");
        item(out, i);
        out.extend_from_slice(b"</Field>");
    }
    if let Some(i) = &f.record {
        out.extend_from_slice(b"<Record>");
        item(out, i);
        out.extend_from_slice(b"</Record>");
    }
    opt_leaf!(out, "FilterType", &f.filter_type);
    out.extend_from_slice(b"</Filter>");
}

fn cred(out: &mut Vec<u8>, c: &Cred) {
    out.extend_from_slice(b"<Cred>");
    if let Some(m) = &c.meta {
        meta(out, m);
    }
    data(out, &c.data);
    out.extend_from_slice(b"</Cred>");
}

fn opt_cred(out: &mut Vec<u8>, c: &Option<Cred>) {
    if let Some(c) = c {
        cred(out, c);
    }
}

fn opt_meta(out: &mut Vec<u8>, m: &Option<Meta>) {
    if let Some(m) = m {
        meta(out, m);
    }
}

fn meta(out: &mut Vec<u8>, m: &Meta) {
    out.extend_from_slice(b"<Meta>");
    metinf_leaf!(out, "Format", &m.format);
    metinf_leaf!(out, "Type", &m.type_);
    metinf_leaf!(out, "Mark", &m.mark);
    metinf_leaf!(out, "Size", &m.size);
    if let Some(a) = &m.anchor {
        anchor(out, a);
    }
    metinf_leaf!(out, "Version", &m.version);
    metinf_leaf!(out, "NextNonce", &m.next_nonce);
    metinf_leaf!(out, "MaxMsgSize", &m.max_msg_size);
    metinf_leaf!(out, "MaxObjSize", &m.max_obj_size);
    for e in &m.emi {
        metinf_leaf!(out, "EMI", Some(e));
    }
    if let Some(mem) = &m.mem {
        out.extend_from_slice(b"<Mem xmlns=\"syncml:metinf\">");
        flag!(out, "SharedMem", mem.shared_mem);
        opt_leaf!(out, "FreeMem", &mem.free_mem);
        opt_leaf!(out, "FreeID", &mem.free_id);
        out.extend_from_slice(b"</Mem>");
    }
    flag!(out, "FieldLevel xmlns=\"syncml:metinf\"", m.field_level);
    out.extend_from_slice(b"</Meta>");
}

fn anchor(out: &mut Vec<u8>, a: &Anchor) {
    out.extend_from_slice(b"<Anchor xmlns=\"syncml:metinf\">");
    opt_leaf!(out, "Last", &a.last);
    opt_leaf!(out, "Next", &a.next);
    out.extend_from_slice(b"</Anchor>");
}

fn data(out: &mut Vec<u8>, d: &Data) {
    out.extend_from_slice(b"<Data>");
    match d {
        Data::Text(t) => payload(out, t),
        // Escaped, never CDATA: the same PCDATA kind for every piece of an
        // object whatever characters a piece holds, and CR as `&#13;`, which
        // even a parser that normalizes line ends keeps, so the pieces add up
        // to the announced Size.
        Data::Chunk(t) => escape(out, t),
        Data::Binary(b) => {
            let start = out.len();
            if let Some(n) = base64::encoded_len(b.len(), true) {
                out.resize(start + n, 0);
                match base64::engine::general_purpose::STANDARD.encode_slice(b, &mut out[start..]) {
                    Ok(written) => out.truncate(start + written),
                    Err(_) => out.truncate(start),
                }
            }
        }
        Data::DevInf(d) => devinf_elem(out, d),
        Data::Anchor(a) => anchor(out, a),
    }
    out.extend_from_slice(b"</Data>");
}

fn item(out: &mut Vec<u8>, i: &Item) {
    out.extend_from_slice(b"<Item>");
    opt_location(out, b"<Target>", b"</Target>", &i.target);
    opt_location(out, b"<Source>", b"</Source>", &i.source);
    opt_location(out, b"<SourceParent>", b"</SourceParent>", &i.source_parent);
    opt_location(out, b"<TargetParent>", b"</TargetParent>", &i.target_parent);
    opt_meta(out, &i.meta);
    if let Some(d) = &i.data {
        data(out, d);
    }
    flag!(out, "MoreData", i.more_data);
    out.extend_from_slice(b"</Item>");
}

fn items(out: &mut Vec<u8>, items: &[Item]) {
    for i in items {
        item(out, i);
    }
}

fn alert(out: &mut Vec<u8>, c: &Alert) {
    out.extend_from_slice(b"<Alert>");
    leaf!(out, "CmdID", &c.cmd_id);
    flag!(out, "NoResp", c.no_resp);
    opt_cred(out, &c.cred);
    opt_leaf!(out, "Data", &c.data);
    opt_leaf!(out, "Correlator", &c.correlator);
    items(out, &c.items);
    out.extend_from_slice(b"</Alert>");
}

fn item_command(out: &mut Vec<u8>, open: &[u8], close: &[u8], c: &ItemCommand) {
    out.extend_from_slice(open);
    leaf!(out, "CmdID", &c.cmd_id);
    flag!(out, "NoResp", c.no_resp);
    flag!(out, "Archive", c.archive);
    flag!(out, "SftDel", c.sft_del);
    opt_cred(out, &c.cred);
    opt_meta(out, &c.meta);
    items(out, &c.items);
    out.extend_from_slice(close);
}

fn sync(out: &mut Vec<u8>, c: &Sync) {
    out.extend_from_slice(b"<Sync>");
    leaf!(out, "CmdID", &c.cmd_id);
    flag!(out, "NoResp", c.no_resp);
    opt_cred(out, &c.cred);
    opt_location(out, b"<Target>", b"</Target>", &c.target);
    opt_location(out, b"<Source>", b"</Source>", &c.source);
    opt_meta(out, &c.meta);
    opt_leaf!(out, "NumberOfChanges", &c.number_of_changes);
    for cmd in &c.commands {
        encode_command(cmd, out);
    }
    out.extend_from_slice(b"</Sync>");
}

fn container(out: &mut Vec<u8>, open: &[u8], close: &[u8], c: &Container) {
    out.extend_from_slice(open);
    leaf!(out, "CmdID", &c.cmd_id);
    flag!(out, "NoResp", c.no_resp);
    opt_meta(out, &c.meta);
    for cmd in &c.commands {
        encode_command(cmd, out);
    }
    out.extend_from_slice(close);
}

fn status(out: &mut Vec<u8>, c: &Status) {
    out.extend_from_slice(b"<Status>");
    leaf!(out, "CmdID", &c.cmd_id);
    opt_leaf!(out, "MsgRef", &c.msg_ref);
    leaf!(out, "CmdRef", &c.cmd_ref);
    leaf!(out, "Cmd", &c.cmd);
    for t in &c.target_refs {
        leaf!(out, "TargetRef", t);
    }
    for s in &c.source_refs {
        leaf!(out, "SourceRef", s);
    }
    opt_cred(out, &c.cred);
    if let Some(m) = &c.chal {
        out.extend_from_slice(b"<Chal>");
        meta(out, m);
        out.extend_from_slice(b"</Chal>");
    }
    leaf!(out, "Data", &c.data);
    items(out, &c.items);
    out.extend_from_slice(b"</Status>");
}

fn put_get(out: &mut Vec<u8>, open: &[u8], close: &[u8], c: &PutGet) {
    out.extend_from_slice(open);
    leaf!(out, "CmdID", &c.cmd_id);
    flag!(out, "NoResp", c.no_resp);
    opt_leaf!(out, "Lang", &c.lang);
    opt_cred(out, &c.cred);
    opt_meta(out, &c.meta);
    items(out, &c.items);
    out.extend_from_slice(close);
}

fn results(out: &mut Vec<u8>, c: &Results) {
    out.extend_from_slice(b"<Results>");
    leaf!(out, "CmdID", &c.cmd_id);
    opt_leaf!(out, "MsgRef", &c.msg_ref);
    leaf!(out, "CmdRef", &c.cmd_ref);
    opt_meta(out, &c.meta);
    opt_leaf!(out, "TargetRef", &c.target_ref);
    opt_leaf!(out, "SourceRef", &c.source_ref);
    items(out, &c.items);
    out.extend_from_slice(b"</Results>");
}

fn map(out: &mut Vec<u8>, c: &Map) {
    out.extend_from_slice(b"<Map>");
    leaf!(out, "CmdID", &c.cmd_id);
    location(out, b"<Target>", b"</Target>", &c.target);
    location(out, b"<Source>", b"</Source>", &c.source);
    opt_cred(out, &c.cred);
    opt_meta(out, &c.meta);
    for mi in &c.map_items {
        out.extend_from_slice(b"<MapItem>");
        location(out, b"<Target>", b"</Target>", &mi.target);
        location(out, b"<Source>", b"</Source>", &mi.source);
        out.extend_from_slice(b"</MapItem>");
    }
    out.extend_from_slice(b"</Map>");
}

fn exec(out: &mut Vec<u8>, c: &Exec) {
    out.extend_from_slice(b"<Exec>");
    leaf!(out, "CmdID", &c.cmd_id);
    flag!(out, "NoResp", c.no_resp);
    opt_cred(out, &c.cred);
    opt_meta(out, &c.meta);
    opt_leaf!(out, "Correlator", &c.correlator);
    item(out, &c.item);
    out.extend_from_slice(b"</Exec>");
}

fn search(out: &mut Vec<u8>, c: &Search) {
    out.extend_from_slice(b"<Search>");
    leaf!(out, "CmdID", &c.cmd_id);
    flag!(out, "NoResp", c.no_resp);
    flag!(out, "NoResults", c.no_results);
    opt_cred(out, &c.cred);
    opt_location(out, b"<Target>", b"</Target>", &c.target);
    for s in &c.sources {
        location(out, b"<Source>", b"</Source>", s);
    }
    opt_leaf!(out, "Lang", &c.lang);
    opt_meta(out, &c.meta);
    if let Some(d) = &c.data {
        data(out, d);
    }
    out.extend_from_slice(b"</Search>");
}

// ----- DevInf -----------------------------------------------------------------

/// DevInf 1.0/1.1 use the flat global CTCap and `Size`.
fn legacy_devinf(d: &DevInf) -> bool {
    matches!(d.ver_dtd.trim(), "1.0" | "1.1")
}

fn devinf_elem(out: &mut Vec<u8>, d: &DevInf) {
    let legacy = legacy_devinf(d);
    out.extend_from_slice(b"<DevInf xmlns=\"syncml:devinf\">");
    leaf!(out, "VerDTD", &d.ver_dtd);
    opt_leaf!(out, "Man", &d.man);
    opt_leaf!(out, "Mod", &d.model);
    opt_leaf!(out, "OEM", &d.oem);
    opt_leaf!(out, "FwV", &d.fw_v);
    opt_leaf!(out, "SwV", &d.sw_v);
    opt_leaf!(out, "HwV", &d.hw_v);
    leaf!(out, "DevID", &d.dev_id);
    leaf!(out, "DevTyp", &d.dev_typ);
    flag!(out, "UTC", d.utc);
    flag!(out, "SupportLargeObjs", d.support_large_objs);
    flag!(out, "SupportNumberOfChanges", d.support_number_of_changes);
    for ds in &d.data_stores {
        data_store(out, ds, legacy);
    }
    if legacy {
        let mut caps =
            d.ct_caps.iter().chain(d.data_stores.iter().flat_map(|ds| ds.ct_caps.iter())).peekable();
        if caps.peek().is_some() {
            out.extend_from_slice(b"<CTCap>");
            for cap in caps {
                ct_cap_flat(out, cap);
            }
            out.extend_from_slice(b"</CTCap>");
        }
    } else {
        // Not in the 1.2 DTD, but keeps a model holding global CTCaps lossless.
        for cap in &d.ct_caps {
            ct_cap(out, cap);
        }
    }
    for x in &d.exts {
        out.extend_from_slice(b"<Ext>");
        leaf!(out, "XNam", &x.x_nam);
        for v in &x.x_vals {
            leaf!(out, "XVal", v);
        }
        out.extend_from_slice(b"</Ext>");
    }
    out.extend_from_slice(b"</DevInf>");
}

fn ctv(out: &mut Vec<u8>, open: &[u8], close: &[u8], c: &ContentTypeVersion) {
    out.extend_from_slice(open);
    leaf!(out, "CTType", &c.ct_type);
    opt_leaf!(out, "VerCT", &c.ver_ct);
    out.extend_from_slice(close);
}

fn data_store(out: &mut Vec<u8>, s: &DataStore, legacy: bool) {
    out.extend_from_slice(b"<DataStore>");
    leaf!(out, "SourceRef", &s.source_ref);
    opt_leaf!(out, "DisplayName", &s.display_name);
    opt_leaf!(out, "MaxGUIDSize", &s.max_guid_size);
    if let Some(c) = &s.rx_pref {
        ctv(out, b"<Rx-Pref>", b"</Rx-Pref>", c);
    }
    for c in &s.rx {
        ctv(out, b"<Rx>", b"</Rx>", c);
    }
    if let Some(c) = &s.tx_pref {
        ctv(out, b"<Tx-Pref>", b"</Tx-Pref>", c);
    }
    for c in &s.tx {
        ctv(out, b"<Tx>", b"</Tx>", c);
    }
    if !legacy {
        for cap in &s.ct_caps {
            ct_cap(out, cap);
        }
    }
    if let Some(m) = &s.ds_mem {
        out.extend_from_slice(b"<DSMem>");
        flag!(out, "SharedMem", m.shared_mem);
        opt_leaf!(out, "MaxMem", &m.max_mem);
        opt_leaf!(out, "MaxID", &m.max_id);
        out.extend_from_slice(b"</DSMem>");
    }
    flag!(out, "SupportHierarchicalSync", s.support_hierarchical_sync);
    out.extend_from_slice(b"<SyncCap>");
    for t in &s.sync_cap {
        leaf!(out, "SyncType", t);
    }
    out.extend_from_slice(b"</SyncCap>");
    for c in &s.filter_rx {
        ctv(out, b"<Filter-Rx>", b"</Filter-Rx>", c);
    }
    for f in &s.filter_caps {
        out.extend_from_slice(b"<FilterCap>");
        leaf!(out, "CTType", &f.ct_type);
        opt_leaf!(out, "VerCT", &f.ver_ct);
        for k in &f.filter_keywords {
            leaf!(out, "FilterKeyword", k);
        }
        for p in &f.prop_names {
            leaf!(out, "PropName", p);
        }
        out.extend_from_slice(b"</FilterCap>");
    }
    out.extend_from_slice(b"</DataStore>");
}

/// DevInf 1.2 CTCap.
fn ct_cap(out: &mut Vec<u8>, c: &CtCap) {
    out.extend_from_slice(b"<CTCap>");
    leaf!(out, "CTType", &c.ct_type);
    opt_leaf!(out, "VerCT", &c.ver_ct);
    flag!(out, "FieldLevel", c.field_level);
    for p in &c.properties {
        out.extend_from_slice(b"<Property>");
        leaf!(out, "PropName", &p.prop_name);
        opt_leaf!(out, "DataType", &p.data_type);
        opt_leaf!(out, "MaxOccur", &p.max_occur);
        opt_leaf!(out, "MaxSize", &p.max_size);
        flag!(out, "NoTruncate", p.no_truncate);
        for v in &p.val_enums {
            leaf!(out, "ValEnum", v);
        }
        opt_leaf!(out, "DisplayName", &p.display_name);
        for pp in &p.prop_params {
            out.extend_from_slice(b"<PropParam>");
            leaf!(out, "ParamName", &pp.param_name);
            opt_leaf!(out, "DataType", &pp.data_type);
            for v in &pp.val_enums {
                leaf!(out, "ValEnum", v);
            }
            opt_leaf!(out, "DisplayName", &pp.display_name);
            out.extend_from_slice(b"</PropParam>");
        }
        out.extend_from_slice(b"</Property>");
    }
    out.extend_from_slice(b"</CTCap>");
}

/// One content type inside the flat DevInf 1.1 CTCap. 1.2-only fields
/// (VerCT, FieldLevel, MaxOccur, NoTruncate) have no 1.1 form and are dropped.
fn ct_cap_flat(out: &mut Vec<u8>, c: &CtCap) {
    leaf!(out, "CTType", &c.ct_type);
    for p in &c.properties {
        leaf!(out, "PropName", &p.prop_name);
        for v in &p.val_enums {
            leaf!(out, "ValEnum", v);
        }
        opt_leaf!(out, "DataType", &p.data_type);
        opt_leaf!(out, "Size", &p.max_size);
        opt_leaf!(out, "DisplayName", &p.display_name);
        for pp in &p.prop_params {
            leaf!(out, "ParamName", &pp.param_name);
            for v in &pp.val_enums {
                leaf!(out, "ValEnum", v);
            }
            opt_leaf!(out, "DataType", &pp.data_type);
            opt_leaf!(out, "DisplayName", &pp.display_name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        let mut out = Vec::new();
        escape(&mut out, "a<b>&c\r\nd");
        assert_eq!(out, b"a&lt;b&gt;&amp;c&#13;\nd");
        out.clear();
        payload(&mut out, "x\r\ny");
        assert_eq!(out, b"x\r\ny");
        out.clear();
        payload(&mut out, "<a>\r\n");
        assert_eq!(out, b"<![CDATA[<a>\r\n]]>");
        out.clear();
        payload(&mut out, "]]>\r");
        assert_eq!(out, b"]]&gt;&#13;");
    }

    /// A piece of a split object is escaped text whatever it holds, never
    /// CDATA or raw CR (see `Data::Chunk`).
    #[test]
    fn object_pieces_are_escaped_text() {
        let mut out = Vec::new();
        for (piece, wire) in [
            ("UID:1<>&\r\n", &b"<Data>UID:1&lt;&gt;&amp;&#13;\n</Data>"[..]),
            ("xx\r\nEND", b"<Data>xx&#13;\nEND</Data>"),
        ] {
            out.clear();
            data(&mut out, &Data::Chunk(piece.into()));
            assert_eq!(out, wire);
        }
    }
}
