//! Model → WBXML, in DTD order, as SyncML clients and servers write it:
//! numeric public id, UTF-8, an empty string table, STR_I for short texts,
//! OPAQUE for item payloads and for embedded DevInf documents.

use super::tokens::{charset, devinf as di, global, metinf as mi, public_id, syncml as sm, CONTENT};
use crate::model::*;

/// WBXML version we emit (1.2, like Synthesis).
const WBXML_VERSION: u8 = 0x02;

/// `Data` texts longer than this go out as OPAQUE (no NUL scan, no
/// terminator), like real clients send item payloads.
const INLINE_MAX: usize = 64;

/// Appends an mb_u_int32.
pub(crate) fn mb_u32(out: &mut Vec<u8>, v: u32) {
    let mut buf = [0u8; 5];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = (v & 0x7F) as u8 | if i == buf.len() - 1 { 0 } else { 0x80 };
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn header(out: &mut Vec<u8>, public_id: u32) {
    out.push(WBXML_VERSION);
    mb_u32(out, public_id);
    mb_u32(out, charset::UTF_8);
    out.push(0); // empty string table
}

/// Encodes a SyncML message.
pub(crate) fn syncml(msg: &SyncMl<'_>, out: &mut Vec<u8>) {
    let id = match msg.version() {
        Some(Version::V1_0) => public_id::SYNCML_10,
        Some(Version::V1_1) => public_id::SYNCML_11,
        Some(Version::V1_2) | None => public_id::SYNCML_12,
    };
    header(out, id);
    let mut w = W { out, page: 0 };
    w.open(0, sm::SYNC_ML);
    w.hdr(&msg.hdr);
    if msg.body.is_empty() && !msg.final_ {
        w.bare(0, sm::SYNC_BODY);
    } else {
        w.open(0, sm::SYNC_BODY);
        for c in &msg.body {
            w.command(c);
        }
        w.flag(0, sm::FINAL, msg.final_);
        w.end();
    }
    w.end();
}

/// Encodes a DevInf document.
pub(crate) fn devinf(d: &DevInf<'_>, out: &mut Vec<u8>) {
    let id = match d.ver_dtd.trim() {
        "1.0" => public_id::DEVINF_10,
        "1.1" => public_id::DEVINF_11,
        _ => public_id::DEVINF_12,
    };
    header(out, id);
    let mut w = W { out, page: 0 };
    w.devinf(d);
}

/// Writes a bare tag (no content) when `v` is its type's default, so that an
/// element decoded from a bare tag goes out bare again: re-encoding never
/// nests deeper than the input (the decoder's depth limit must hold for our
/// own output).
fn bare_if_default<T: Default + PartialEq>(w: &mut W<'_>, v: &T, (page, id): (u8, u8)) -> bool {
    let bare = *v == T::default();
    if bare {
        w.bare(page, id);
    }
    bare
}

/// Token writer that tracks the current code page.
struct W<'o> {
    out: &'o mut Vec<u8>,
    page: u8,
}

impl W<'_> {
    fn tag(&mut self, page: u8, id: u8, content: bool) {
        if self.page != page {
            self.out.extend_from_slice(&[global::SWITCH_PAGE, page]);
            self.page = page;
        }
        self.out.push(if content { id | CONTENT } else { id });
    }

    fn open(&mut self, page: u8, id: u8) {
        self.tag(page, id, true);
    }

    fn bare(&mut self, page: u8, id: u8) {
        self.tag(page, id, false);
    }

    fn end(&mut self) {
        self.out.push(global::END);
    }

    /// Inline string(s); a NUL (impossible inside STR_I) becomes ENTITY 0.
    fn str_i(&mut self, s: &str) {
        for (i, part) in s.split('\0').enumerate() {
            if i > 0 {
                self.out.extend_from_slice(&[global::ENTITY, 0]);
            }
            if !part.is_empty() {
                self.out.push(global::STR_I);
                self.out.extend_from_slice(part.as_bytes());
                self.out.push(0);
            }
        }
    }

    fn opaque(&mut self, b: &[u8]) {
        self.out.push(global::OPAQUE);
        // Lengths above u32 cannot be expressed; a model that large cannot
        // come from a decoded message. Truncating would corrupt, so cap the
        // header only in that unreachable case.
        mb_u32(self.out, u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.out.extend_from_slice(b);
    }

    fn leaf(&mut self, page: u8, id: u8, s: &str) {
        if s.is_empty() {
            self.bare(page, id);
        } else {
            self.open(page, id);
            self.str_i(s);
            self.end();
        }
    }

    fn opt(&mut self, page: u8, id: u8, s: &Option<Text<'_>>) {
        if let Some(s) = s {
            self.leaf(page, id, s);
        }
    }

    fn flag(&mut self, page: u8, id: u8, on: bool) {
        if on {
            self.bare(page, id);
        }
    }

    // ----- SyncML --------------------------------------------------------

    fn hdr(&mut self, h: &SyncHdr<'_>) {
        self.open(0, sm::SYNC_HDR);
        self.leaf(0, sm::VER_DTD, &h.ver_dtd);
        self.leaf(0, sm::VER_PROTO, &h.ver_proto);
        self.leaf(0, sm::SESSION_ID, &h.session_id);
        self.leaf(0, sm::MSG_ID, &h.msg_id);
        self.location(sm::TARGET, &h.target);
        self.location(sm::SOURCE, &h.source);
        self.opt(0, sm::RESP_URI, &h.resp_uri);
        self.flag(0, sm::NO_RESP, h.no_resp);
        self.opt_cred(&h.cred);
        self.opt_meta(&h.meta);
        self.end();
    }

    fn command(&mut self, c: &Command<'_>) {
        match c {
            Command::Alert(a) => self.alert(a),
            Command::Add(ic) => self.item_command(sm::ADD, ic),
            Command::Replace(ic) => self.item_command(sm::REPLACE, ic),
            Command::Delete(ic) => self.item_command(sm::DELETE, ic),
            Command::Copy(ic) => self.item_command(sm::COPY, ic),
            Command::Move(ic) => self.item_command(sm::MOVE, ic),
            Command::Sync(s) => self.sync(s),
            Command::Atomic(k) => self.container(sm::ATOMIC, k),
            Command::Sequence(k) => self.container(sm::SEQUENCE, k),
            Command::Status(s) => self.status(s),
            Command::Put(pg) => self.put_get(sm::PUT, pg),
            Command::Get(pg) => self.put_get(sm::GET, pg),
            Command::Results(r) => self.results(r),
            Command::Map(m) => self.map(m),
            Command::Exec(e) => self.exec(e),
            Command::Search(s) => self.search(s),
            // Unknown commands were only kept so the engine can answer them.
            Command::Unknown(_) => {}
        }
    }

    fn location(&mut self, id: u8, l: &Location<'_>) {
        if bare_if_default(self, l, (0, id)) {
            return;
        }
        self.open(0, id);
        self.leaf(0, sm::LOC_URI, &l.loc_uri);
        self.opt(0, sm::LOC_NAME, &l.loc_name);
        if let Some(f) = &l.filter {
            self.filter(f);
        }
        self.end();
    }

    fn opt_location(&mut self, id: u8, l: &Option<Location<'_>>) {
        if let Some(l) = l {
            self.location(id, l);
        }
    }

    fn filter(&mut self, f: &Filter<'_>) {
        if bare_if_default(self, f, (0, sm::FILTER)) {
            return;
        }
        self.open(0, sm::FILTER);
        self.opt_meta(&f.meta);
        for (id, item) in [(sm::FIELD, &f.field), (sm::RECORD, &f.record)] {
            if let Some(item) = item {
                if !bare_if_default(self, item, (0, id)) {
                    self.open(0, id);
                    self.item(item);
                    self.end();
                }
            }
        }
        self.opt(0, sm::FILTER_TYPE, &f.filter_type);
        self.end();
    }

    fn opt_cred(&mut self, c: &Option<Cred<'_>>) {
        if let Some(c) = c {
            if bare_if_default(self, c, (0, sm::CRED)) {
                return;
            }
            self.open(0, sm::CRED);
            self.opt_meta(&c.meta);
            self.data(&c.data);
            self.end();
        }
    }

    fn opt_meta(&mut self, m: &Option<Meta<'_>>) {
        if let Some(m) = m {
            self.meta(m);
        }
    }

    fn meta(&mut self, m: &Meta<'_>) {
        if *m == Meta::default() {
            self.bare(0, sm::META);
            return;
        }
        self.open(0, sm::META);
        let p = mi::PAGE;
        self.opt(p, mi::FORMAT, &m.format);
        self.opt(p, mi::TYPE, &m.type_);
        self.opt(p, mi::MARK, &m.mark);
        self.opt(p, mi::SIZE, &m.size);
        if let Some(a) = &m.anchor {
            self.anchor(a);
        }
        self.opt(p, mi::VERSION, &m.version);
        self.opt(p, mi::NEXT_NONCE, &m.next_nonce);
        self.opt(p, mi::MAX_MSG_SIZE, &m.max_msg_size);
        self.opt(p, mi::MAX_OBJ_SIZE, &m.max_obj_size);
        for e in &m.emi {
            self.leaf(p, mi::EMI, e);
        }
        if let Some(mem) = m.mem.as_ref().filter(|mem| !bare_if_default(self, *mem, (p, mi::MEM))) {
            self.open(p, mi::MEM);
            self.flag(p, mi::SHARED_MEM, mem.shared_mem);
            self.opt(p, mi::FREE_MEM, &mem.free_mem);
            self.opt(p, mi::FREE_ID, &mem.free_id);
            self.end();
        }
        self.flag(p, mi::FIELD_LEVEL, m.field_level);
        self.end();
    }

    fn anchor(&mut self, a: &Anchor<'_>) {
        if bare_if_default(self, a, (mi::PAGE, mi::ANCHOR)) {
            return;
        }
        self.open(mi::PAGE, mi::ANCHOR);
        self.opt(mi::PAGE, mi::LAST, &a.last);
        self.opt(mi::PAGE, mi::NEXT, &a.next);
        self.end();
    }

    fn data(&mut self, d: &Data<'_>) {
        match d {
            Data::Text(t) if t.is_empty() => self.bare(0, sm::DATA),
            Data::Text(t) => {
                self.open(0, sm::DATA);
                let b = t.as_bytes();
                // Opaque text starting with a WBXML version byte would be
                // taken for an embedded document: keep such text inline.
                if b.len() > INLINE_MAX && !matches!(b[0], 0x01..=0x03) {
                    self.opaque(b);
                } else {
                    self.str_i(t);
                }
                self.end();
            }
            Data::Binary(b) => {
                self.open(0, sm::DATA);
                self.opaque(b);
                self.end();
            }
            // Every piece of a split object OPAQUE, however short: a short
            // last piece as STR_I would be another PCDATA kind (see Data::Chunk).
            Data::Chunk(t) => {
                self.open(0, sm::DATA);
                self.opaque(t.as_bytes());
                self.end();
            }
            Data::DevInf(di) => {
                let mut doc = Vec::with_capacity(1024);
                devinf(di, &mut doc);
                self.open(0, sm::DATA);
                self.opaque(&doc);
                self.end();
            }
            Data::Anchor(a) => {
                self.open(0, sm::DATA);
                self.anchor(a);
                self.end();
            }
        }
    }

    fn item(&mut self, it: &Item<'_>) {
        if *it == Item::default() {
            self.bare(0, sm::ITEM);
            return;
        }
        self.open(0, sm::ITEM);
        self.opt_location(sm::TARGET, &it.target);
        self.opt_location(sm::SOURCE, &it.source);
        self.opt_location(sm::SOURCE_PARENT, &it.source_parent);
        self.opt_location(sm::TARGET_PARENT, &it.target_parent);
        self.opt_meta(&it.meta);
        if let Some(d) = &it.data {
            self.data(d);
        }
        self.flag(0, sm::MORE_DATA, it.more_data);
        self.end();
    }

    fn items(&mut self, items: &[Item<'_>]) {
        for it in items {
            self.item(it);
        }
    }

    fn alert(&mut self, a: &Alert<'_>) {
        if bare_if_default(self, a, (0, sm::ALERT)) {
            return;
        }
        self.open(0, sm::ALERT);
        self.leaf(0, sm::CMD_ID, &a.cmd_id);
        self.flag(0, sm::NO_RESP, a.no_resp);
        self.opt_cred(&a.cred);
        self.opt(0, sm::DATA, &a.data);
        self.opt(0, sm::CORRELATOR, &a.correlator);
        self.items(&a.items);
        self.end();
    }

    fn item_command(&mut self, id: u8, ic: &ItemCommand<'_>) {
        if bare_if_default(self, ic, (0, id)) {
            return;
        }
        self.open(0, id);
        self.leaf(0, sm::CMD_ID, &ic.cmd_id);
        self.flag(0, sm::NO_RESP, ic.no_resp);
        self.flag(0, sm::ARCHIVE, ic.archive);
        self.flag(0, sm::SFT_DEL, ic.sft_del);
        self.opt_cred(&ic.cred);
        self.opt_meta(&ic.meta);
        self.items(&ic.items);
        self.end();
    }

    fn sync(&mut self, s: &Sync<'_>) {
        if bare_if_default(self, s, (0, sm::SYNC)) {
            return;
        }
        self.open(0, sm::SYNC);
        self.leaf(0, sm::CMD_ID, &s.cmd_id);
        self.flag(0, sm::NO_RESP, s.no_resp);
        self.opt_cred(&s.cred);
        self.opt_location(sm::TARGET, &s.target);
        self.opt_location(sm::SOURCE, &s.source);
        self.opt_meta(&s.meta);
        self.opt(0, sm::NUMBER_OF_CHANGES, &s.number_of_changes);
        for c in &s.commands {
            self.command(c);
        }
        self.end();
    }

    fn container(&mut self, id: u8, k: &Container<'_>) {
        if bare_if_default(self, k, (0, id)) {
            return;
        }
        self.open(0, id);
        self.leaf(0, sm::CMD_ID, &k.cmd_id);
        self.flag(0, sm::NO_RESP, k.no_resp);
        self.opt_meta(&k.meta);
        for c in &k.commands {
            self.command(c);
        }
        self.end();
    }

    fn status(&mut self, s: &Status<'_>) {
        if bare_if_default(self, s, (0, sm::STATUS)) {
            return;
        }
        self.open(0, sm::STATUS);
        self.leaf(0, sm::CMD_ID, &s.cmd_id);
        self.opt(0, sm::MSG_REF, &s.msg_ref);
        self.leaf(0, sm::CMD_REF, &s.cmd_ref);
        self.leaf(0, sm::CMD, &s.cmd);
        for t in &s.target_refs {
            self.leaf(0, sm::TARGET_REF, t);
        }
        for t in &s.source_refs {
            self.leaf(0, sm::SOURCE_REF, t);
        }
        self.opt_cred(&s.cred);
        if let Some(m) = s.chal.as_ref().filter(|m| !bare_if_default(self, *m, (0, sm::CHAL))) {
            self.open(0, sm::CHAL);
            self.meta(m);
            self.end();
        }
        self.leaf(0, sm::DATA, &s.data);
        self.items(&s.items);
        self.end();
    }

    fn put_get(&mut self, id: u8, pg: &PutGet<'_>) {
        if bare_if_default(self, pg, (0, id)) {
            return;
        }
        self.open(0, id);
        self.leaf(0, sm::CMD_ID, &pg.cmd_id);
        self.flag(0, sm::NO_RESP, pg.no_resp);
        self.opt(0, sm::LANG, &pg.lang);
        self.opt_cred(&pg.cred);
        self.opt_meta(&pg.meta);
        self.items(&pg.items);
        self.end();
    }

    fn results(&mut self, r: &Results<'_>) {
        if bare_if_default(self, r, (0, sm::RESULTS)) {
            return;
        }
        self.open(0, sm::RESULTS);
        self.leaf(0, sm::CMD_ID, &r.cmd_id);
        self.opt(0, sm::MSG_REF, &r.msg_ref);
        self.leaf(0, sm::CMD_REF, &r.cmd_ref);
        self.opt_meta(&r.meta);
        self.opt(0, sm::TARGET_REF, &r.target_ref);
        self.opt(0, sm::SOURCE_REF, &r.source_ref);
        self.items(&r.items);
        self.end();
    }

    fn map(&mut self, m: &Map<'_>) {
        if bare_if_default(self, m, (0, sm::MAP)) {
            return;
        }
        self.open(0, sm::MAP);
        self.leaf(0, sm::CMD_ID, &m.cmd_id);
        self.location(sm::TARGET, &m.target);
        self.location(sm::SOURCE, &m.source);
        self.opt_cred(&m.cred);
        self.opt_meta(&m.meta);
        for mi in &m.map_items {
            if bare_if_default(self, mi, (0, sm::MAP_ITEM)) {
                continue;
            }
            self.open(0, sm::MAP_ITEM);
            self.location(sm::TARGET, &mi.target);
            self.location(sm::SOURCE, &mi.source);
            self.end();
        }
        self.end();
    }

    fn exec(&mut self, e: &Exec<'_>) {
        if bare_if_default(self, e, (0, sm::EXEC)) {
            return;
        }
        self.open(0, sm::EXEC);
        self.leaf(0, sm::CMD_ID, &e.cmd_id);
        self.flag(0, sm::NO_RESP, e.no_resp);
        self.opt_cred(&e.cred);
        self.opt_meta(&e.meta);
        self.opt(0, sm::CORRELATOR, &e.correlator);
        self.item(&e.item);
        self.end();
    }

    fn search(&mut self, s: &Search<'_>) {
        if bare_if_default(self, s, (0, sm::SEARCH)) {
            return;
        }
        self.open(0, sm::SEARCH);
        self.leaf(0, sm::CMD_ID, &s.cmd_id);
        self.flag(0, sm::NO_RESP, s.no_resp);
        self.flag(0, sm::NO_RESULTS, s.no_results);
        self.opt_cred(&s.cred);
        self.opt_location(sm::TARGET, &s.target);
        for l in &s.sources {
            self.location(sm::SOURCE, l);
        }
        self.opt(0, sm::LANG, &s.lang);
        self.opt_meta(&s.meta);
        if let Some(d) = &s.data {
            self.data(d);
        }
        self.end();
    }

    // ----- DevInf --------------------------------------------------------

    fn devinf(&mut self, d: &DevInf<'_>) {
        self.open(0, di::DEV_INF);
        self.leaf(0, di::VER_DTD, &d.ver_dtd);
        self.opt(0, di::MAN, &d.man);
        self.opt(0, di::MOD, &d.model);
        self.opt(0, di::OEM, &d.oem);
        self.opt(0, di::FW_V, &d.fw_v);
        self.opt(0, di::SW_V, &d.sw_v);
        self.opt(0, di::HW_V, &d.hw_v);
        self.leaf(0, di::DEV_ID, &d.dev_id);
        self.leaf(0, di::DEV_TYP, &d.dev_typ);
        self.flag(0, di::UTC, d.utc);
        self.flag(0, di::SUPPORT_LARGE_OBJS, d.support_large_objs);
        self.flag(0, di::SUPPORT_NUMBER_OF_CHANGES, d.support_number_of_changes);
        let legacy = legacy_devinf(d);
        for ds in &d.data_stores {
            self.data_store(ds, legacy);
        }
        if legacy {
            // DevInf 1.0/1.1: one global, flat CTCap holding the global and
            // every per-datastore CTCap, as the XML encoder writes it.
            let caps: Vec<&CtCap<'_>> =
                d.ct_caps.iter().chain(d.data_stores.iter().flat_map(|ds| ds.ct_caps.iter())).collect();
            if !caps.is_empty() {
                self.flat_ct_cap(&caps);
            }
        } else {
            // Not in the 1.2 DTD, but keeps a model with global CTCaps lossless.
            for c in &d.ct_caps {
                self.ct_cap(c);
            }
        }
        for e in &d.exts {
            self.open(0, di::EXT);
            self.leaf(0, di::X_NAM, &e.x_nam);
            for v in &e.x_vals {
                self.leaf(0, di::X_VAL, v);
            }
            self.end();
        }
        self.end();
    }

    fn ctv(&mut self, id: u8, v: &ContentTypeVersion<'_>) {
        self.open(0, id);
        self.leaf(0, di::CT_TYPE, &v.ct_type);
        self.opt(0, di::VER_CT, &v.ver_ct);
        self.end();
    }

    fn data_store(&mut self, ds: &DataStore<'_>, legacy: bool) {
        self.open(0, di::DATA_STORE);
        self.leaf(0, di::SOURCE_REF, &ds.source_ref);
        self.opt(0, di::DISPLAY_NAME, &ds.display_name);
        self.opt(0, di::MAX_GUID_SIZE, &ds.max_guid_size);
        if let Some(v) = &ds.rx_pref {
            self.ctv(di::RX_PREF, v);
        }
        for v in &ds.rx {
            self.ctv(di::RX, v);
        }
        if let Some(v) = &ds.tx_pref {
            self.ctv(di::TX_PREF, v);
        }
        for v in &ds.tx {
            self.ctv(di::TX, v);
        }
        if !legacy {
            for c in &ds.ct_caps {
                self.ct_cap(c);
            }
        }
        if let Some(m) = &ds.ds_mem {
            self.open(0, di::DS_MEM);
            self.flag(0, di::SHARED_MEM, m.shared_mem);
            self.opt(0, di::MAX_MEM, &m.max_mem);
            self.opt(0, di::MAX_ID, &m.max_id);
            self.end();
        }
        self.flag(0, di::SUPPORT_HIERARCHICAL_SYNC, ds.support_hierarchical_sync);
        self.open(0, di::SYNC_CAP);
        for t in &ds.sync_cap {
            self.leaf(0, di::SYNC_TYPE, t);
        }
        self.end();
        for v in &ds.filter_rx {
            self.ctv(di::FILTER_RX, v);
        }
        for f in &ds.filter_caps {
            self.open(0, di::FILTER_CAP);
            self.leaf(0, di::CT_TYPE, &f.ct_type);
            self.opt(0, di::VER_CT, &f.ver_ct);
            for k in &f.filter_keywords {
                self.leaf(0, di::FILTER_KEYWORD, k);
            }
            for n in &f.prop_names {
                self.leaf(0, di::PROP_NAME, n);
            }
            self.end();
        }
        self.end();
    }

    /// DevInf 1.2 `CTCap` with `Property` elements.
    fn ct_cap(&mut self, c: &CtCap<'_>) {
        self.open(0, di::CT_CAP);
        self.leaf(0, di::CT_TYPE, &c.ct_type);
        self.opt(0, di::VER_CT, &c.ver_ct);
        self.flag(0, di::FIELD_LEVEL, c.field_level);
        for p in &c.properties {
            self.open(0, di::PROPERTY);
            self.leaf(0, di::PROP_NAME, &p.prop_name);
            self.opt(0, di::DATA_TYPE, &p.data_type);
            self.opt(0, di::MAX_OCCUR, &p.max_occur);
            self.opt(0, di::MAX_SIZE, &p.max_size);
            self.flag(0, di::NO_TRUNCATE, p.no_truncate);
            for v in &p.val_enums {
                self.leaf(0, di::VAL_ENUM, v);
            }
            self.opt(0, di::DISPLAY_NAME, &p.display_name);
            for pp in &p.prop_params {
                self.open(0, di::PROP_PARAM);
                self.leaf(0, di::PARAM_NAME, &pp.param_name);
                self.opt(0, di::DATA_TYPE, &pp.data_type);
                for v in &pp.val_enums {
                    self.leaf(0, di::VAL_ENUM, v);
                }
                self.opt(0, di::DISPLAY_NAME, &pp.display_name);
                self.end();
            }
            self.end();
        }
        self.end();
    }

    /// DevInf 1.0/1.1 global `CTCap`: one flat element for all types; the
    /// 1.2-only VerCT, FieldLevel, MaxOccur and NoTruncate have no 1.1 form.
    fn flat_ct_cap(&mut self, caps: &[&CtCap<'_>]) {
        self.open(0, di::CT_CAP);
        for c in caps {
            self.leaf(0, di::CT_TYPE, &c.ct_type);
            for p in &c.properties {
                self.leaf(0, di::PROP_NAME, &p.prop_name);
                self.opt(0, di::DATA_TYPE, &p.data_type);
                self.opt(0, di::MAX_SIZE, &p.max_size);
                for v in &p.val_enums {
                    self.leaf(0, di::VAL_ENUM, v);
                }
                self.opt(0, di::DISPLAY_NAME, &p.display_name);
                for pp in &p.prop_params {
                    self.leaf(0, di::PARAM_NAME, &pp.param_name);
                    self.opt(0, di::DATA_TYPE, &pp.data_type);
                    for v in &pp.val_enums {
                        self.leaf(0, di::VAL_ENUM, v);
                    }
                    self.opt(0, di::DISPLAY_NAME, &pp.display_name);
                }
            }
        }
        self.end();
    }
}

/// DevInf 1.0/1.1 documents use the flat global CTCap (like the XML codec).
fn legacy_devinf(d: &DevInf<'_>) -> bool {
    matches!(d.ver_dtd.trim(), "1.0" | "1.1")
}
