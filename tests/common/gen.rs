//! proptest strategies for the SyncML message model, shared by the codec
//! tests (XML and WBXML): `arb_message()` and `arb_devinf()`.
//!
//! What is generated round-trips through a lossless codec:
//! * texts are arbitrary (markup characters, `]]>`, CR, LF, non-ASCII,
//!   leading/trailing blanks) except NUL and other C0 controls besides
//!   TAB/CR/LF, which XML cannot carry;
//! * no [`Data::Binary`] (XML turns it into base64 text) and no
//!   [`Command::Unknown`] (encoders skip it);
//! * DevInf 1.1 documents only use what the flat 1.1 CTCap can express
//!   (global CTCaps, no VerCT/FieldLevel/MaxOccur/NoTruncate, no 1.2-only
//!   datastore fields); DevInf 1.2 ones have per-datastore CTCaps only;
//! * `Filter` only appears in Alert item targets, as in the DTD.

use std::borrow::Cow;

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use shardsync::model::*;

/// Arbitrary text as described in the module doc.
pub fn arb_text() -> impl Strategy<Value = Text<'static>> {
    let ch = prop_oneof![
        6 => proptest::char::range('a', 'z'),
        2 => proptest::char::range('0', '9'),
        3 => prop::sample::select(vec!['&', '<', '>', ']', '\r', '\n', ' ', '\t', ';', '#', '"', '\'', '=', ':']),
        1 => any::<char>().prop_filter("XML-representable", |c| !c.is_control()),
    ];
    prop_oneof![
        8 => vec(ch, 0..12).prop_map(|v| v.into_iter().collect::<String>()),
        1 => Just("]]>".to_string()),
        1 => Just("&amp;&#13;".to_string()),
    ]
    .prop_map(Cow::Owned)
    .boxed()
}

/// Short, identifier-like text (CmdIDs, numbers): keeps cases readable.
pub fn arb_id() -> impl Strategy<Value = Text<'static>> {
    "[0-9]{1,4}".prop_map(Cow::Owned)
}

fn opt_text() -> impl Strategy<Value = Option<Text<'static>>> {
    of(arb_text())
}

fn texts(max: usize) -> impl Strategy<Value = Vec<Text<'static>>> {
    vec(arb_text(), 0..max)
}

/// MetInf `Anchor`.
pub fn arb_anchor() -> impl Strategy<Value = Anchor<'static>> {
    (opt_text(), opt_text()).prop_map(|(last, next)| Anchor { last, next }).boxed()
}

/// MetInf `Meta` with every field.
pub fn arb_meta() -> impl Strategy<Value = Meta<'static>> {
    let mem = (any::<bool>(), opt_text(), opt_text()).prop_map(|(shared_mem, free_mem, free_id)| Mem {
        shared_mem,
        free_mem,
        free_id,
    });
    (
        (opt_text(), opt_text(), opt_text(), opt_text(), of(arb_anchor()), opt_text()),
        (opt_text(), opt_text(), opt_text(), texts(3), of(mem), any::<bool>()),
    )
        .prop_map(
            |(
                (format, type_, mark, size, anchor, version),
                (next_nonce, max_msg_size, max_obj_size, emi, mem, field_level),
            )| Meta {
                format,
                type_,
                mark,
                size,
                anchor,
                version,
                next_nonce,
                max_msg_size,
                max_obj_size,
                emi,
                mem,
                field_level,
            },
        )
        .boxed()
}

/// `Target`/`Source` without a filter.
pub fn arb_location() -> impl Strategy<Value = Location<'static>> {
    (arb_text(), opt_text())
        .prop_map(|(loc_uri, loc_name)| Location { loc_uri, loc_name, filter: None })
        .boxed()
}

/// DS 1.2 `Filter` (its items carry no nested filters).
pub fn arb_filter() -> impl Strategy<Value = Filter<'static>> {
    (of(arb_meta()), of(arb_item_plain()), of(arb_item_plain()), opt_text())
        .prop_map(|(meta, field, record, filter_type)| Filter { meta, field, record, filter_type })
        .boxed()
}

/// An Alert item target: a location that may carry a Filter.
fn arb_filtered_location() -> impl Strategy<Value = Location<'static>> {
    (arb_location(), of(arb_filter()))
        .prop_map(|(mut l, f)| {
            l.filter = f.map(Box::new);
            l
        })
        .boxed()
}

/// `Data` content: text, an embedded DevInf or an Anchor (never Binary).
pub fn arb_data() -> impl Strategy<Value = Data<'static>> {
    prop_oneof![
        6 => arb_text().prop_map(Data::Text),
        1 => arb_devinf().prop_map(|d| Data::DevInf(Box::new(d))),
        1 => arb_anchor().prop_map(Data::Anchor),
    ]
    .boxed()
}

fn arb_item_with(target: BoxedStrategy<Location<'static>>) -> impl Strategy<Value = Item<'static>> {
    (
        of(target),
        of(arb_location()),
        of(arb_location()),
        of(arb_location()),
        of(arb_meta()),
        of(arb_data()),
        any::<bool>(),
    )
        .prop_map(|(target, source, source_parent, target_parent, meta, data, more_data)| Item {
            target,
            source,
            source_parent,
            target_parent,
            meta,
            data,
            more_data,
        })
        .boxed()
}

fn arb_item_plain() -> impl Strategy<Value = Item<'static>> {
    (
        of(arb_location()),
        of(arb_location()),
        of(arb_meta()),
        of(arb_text().prop_map(Data::Text)),
        any::<bool>(),
    )
        .prop_map(|(target, source, meta, data, more_data)| Item {
            target,
            source,
            meta,
            data,
            more_data,
            ..Item::default()
        })
        .boxed()
}

/// `Item` with every field (no Filter in its locations).
pub fn arb_item() -> impl Strategy<Value = Item<'static>> {
    arb_item_with(arb_location().boxed())
}

/// `Cred`.
pub fn arb_cred() -> impl Strategy<Value = Cred<'static>> {
    (of(arb_meta()), arb_data()).prop_map(|(meta, data)| Cred { meta, data }).boxed()
}

fn items() -> impl Strategy<Value = Vec<Item<'static>>> {
    vec(arb_item(), 0..3)
}

fn arb_alert() -> impl Strategy<Value = Alert<'static>> {
    (
        arb_id(),
        any::<bool>(),
        of(arb_cred()),
        opt_text(),
        opt_text(),
        vec(arb_item_with(arb_filtered_location().boxed()), 0..3),
    )
        .prop_map(|(cmd_id, no_resp, cred, data, correlator, items)| Alert {
            cmd_id,
            no_resp,
            cred,
            data,
            correlator,
            items,
        })
        .boxed()
}

fn arb_item_command() -> impl Strategy<Value = ItemCommand<'static>> {
    (arb_id(), any::<bool>(), any::<bool>(), any::<bool>(), of(arb_cred()), of(arb_meta()), items())
        .prop_map(|(cmd_id, no_resp, archive, sft_del, cred, meta, items)| ItemCommand {
            cmd_id,
            no_resp,
            archive,
            sft_del,
            cred,
            meta,
            items,
        })
        .boxed()
}

fn arb_status() -> impl Strategy<Value = Status<'static>> {
    (
        (arb_id(), opt_text(), arb_text(), arb_text(), texts(3), texts(3)),
        (of(arb_cred()), of(arb_meta()), arb_text(), items()),
    )
        .prop_map(|((cmd_id, msg_ref, cmd_ref, cmd, target_refs, source_refs), (cred, chal, data, items))| {
            Status { cmd_id, msg_ref, cmd_ref, cmd, target_refs, source_refs, cred, chal, data, items }
        })
        .boxed()
}

fn arb_put_get() -> impl Strategy<Value = PutGet<'static>> {
    (arb_id(), any::<bool>(), opt_text(), of(arb_cred()), of(arb_meta()), items())
        .prop_map(|(cmd_id, no_resp, lang, cred, meta, items)| PutGet {
            cmd_id,
            no_resp,
            lang,
            cred,
            meta,
            items,
        })
        .boxed()
}

fn arb_results() -> impl Strategy<Value = Results<'static>> {
    (arb_id(), opt_text(), arb_text(), of(arb_meta()), opt_text(), opt_text(), items())
        .prop_map(|(cmd_id, msg_ref, cmd_ref, meta, target_ref, source_ref, items)| Results {
            cmd_id,
            msg_ref,
            cmd_ref,
            meta,
            target_ref,
            source_ref,
            items,
        })
        .boxed()
}

fn arb_map() -> impl Strategy<Value = Map<'static>> {
    let map_item = (arb_location(), arb_location()).prop_map(|(target, source)| MapItem { target, source });
    (arb_id(), arb_location(), arb_location(), of(arb_cred()), of(arb_meta()), vec(map_item, 0..3))
        .prop_map(|(cmd_id, target, source, cred, meta, map_items)| Map {
            cmd_id,
            target,
            source,
            cred,
            meta,
            map_items,
        })
        .boxed()
}

fn arb_exec() -> impl Strategy<Value = Exec<'static>> {
    (arb_id(), any::<bool>(), of(arb_cred()), of(arb_meta()), opt_text(), arb_item())
        .prop_map(|(cmd_id, no_resp, cred, meta, correlator, item)| Exec {
            cmd_id,
            no_resp,
            cred,
            meta,
            correlator,
            item,
        })
        .boxed()
}

fn arb_search() -> impl Strategy<Value = Search<'static>> {
    (
        (arb_id(), any::<bool>(), any::<bool>(), of(arb_cred()), of(arb_location())),
        (vec(arb_location(), 0..3), opt_text(), of(arb_meta()), of(arb_data())),
    )
        .prop_map(|((cmd_id, no_resp, no_results, cred, target), (sources, lang, meta, data))| Search {
            cmd_id,
            no_resp,
            no_results,
            cred,
            target,
            sources,
            lang,
            meta,
            data,
        })
        .boxed()
}

/// Any command, with Sync/Atomic/Sequence nested a few levels deep.
pub fn arb_command() -> impl Strategy<Value = Command<'static>> {
    let leaf = prop_oneof![
        arb_alert().prop_map(Command::Alert),
        arb_item_command().prop_map(Command::Add),
        arb_item_command().prop_map(Command::Replace),
        arb_item_command().prop_map(Command::Delete),
        arb_item_command().prop_map(Command::Copy),
        arb_item_command().prop_map(Command::Move),
        arb_status().prop_map(Command::Status),
        arb_put_get().prop_map(Command::Put),
        arb_put_get().prop_map(Command::Get),
        arb_results().prop_map(Command::Results),
        arb_map().prop_map(Command::Map),
        arb_exec().prop_map(Command::Exec),
        arb_search().prop_map(Command::Search),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        let sync = (
            (arb_id(), any::<bool>(), of(arb_cred()), of(arb_location()), of(arb_location())),
            (of(arb_meta()), opt_text(), vec(inner.clone(), 0..3)),
        )
            .prop_map(
                |((cmd_id, no_resp, cred, target, source), (meta, number_of_changes, commands))| {
                    Command::Sync(Sync {
                        cmd_id,
                        no_resp,
                        cred,
                        target,
                        source,
                        meta,
                        number_of_changes,
                        commands,
                    })
                },
            );
        let container = (arb_id(), any::<bool>(), of(arb_meta()), vec(inner, 0..3))
            .prop_map(|(cmd_id, no_resp, meta, commands)| Container { cmd_id, no_resp, meta, commands })
            .boxed();
        prop_oneof![sync, container.clone().prop_map(Command::Atomic), container.prop_map(Command::Sequence),]
    })
}

/// A SyncHdr with a consistent VerDTD/VerProto pair.
pub fn arb_hdr() -> impl Strategy<Value = SyncHdr<'static>> {
    let version = prop::sample::select(vec![Version::V1_0, Version::V1_1, Version::V1_2]);
    (
        (version, arb_text(), arb_id(), arb_location(), arb_location()),
        (opt_text(), any::<bool>(), of(arb_cred()), of(arb_meta())),
    )
        .prop_map(|((v, session_id, msg_id, target, source), (resp_uri, no_resp, cred, meta))| SyncHdr {
            ver_dtd: Cow::Borrowed(v.ver_dtd()),
            ver_proto: Cow::Borrowed(v.ver_proto()),
            session_id,
            msg_id,
            target,
            source,
            resp_uri,
            no_resp,
            cred,
            meta,
        })
        .boxed()
}

/// A whole message.
pub fn arb_message() -> impl Strategy<Value = SyncMl<'static>> {
    (arb_hdr(), vec(arb_command(), 0..5), any::<bool>()).prop_map(|(hdr, body, final_)| SyncMl {
        hdr,
        body,
        final_,
    })
}

fn arb_ctv() -> impl Strategy<Value = ContentTypeVersion<'static>> {
    (arb_text(), opt_text()).prop_map(|(ct_type, ver_ct)| ContentTypeVersion { ct_type, ver_ct }).boxed()
}

fn arb_prop_param() -> impl Strategy<Value = PropParam<'static>> {
    (arb_text(), opt_text(), texts(3), opt_text())
        .prop_map(|(param_name, data_type, val_enums, display_name)| PropParam {
            param_name,
            data_type,
            val_enums,
            display_name,
        })
        .boxed()
}

fn arb_property(v12: bool) -> impl Strategy<Value = Property<'static>> {
    (
        (arb_text(), opt_text(), opt_text(), opt_text(), any::<bool>()),
        (texts(3), opt_text(), vec(arb_prop_param(), 0..3)),
    )
        .prop_map(
            move |(
                (prop_name, data_type, max_occur, max_size, no_truncate),
                (val_enums, display_name, prop_params),
            )| {
                Property {
                    prop_name,
                    data_type,
                    max_occur: max_occur.filter(|_| v12),
                    max_size,
                    no_truncate: no_truncate && v12,
                    val_enums,
                    display_name,
                    prop_params,
                }
            },
        )
        .boxed()
}

fn arb_ct_cap(v12: bool) -> impl Strategy<Value = CtCap<'static>> {
    (arb_text(), opt_text(), any::<bool>(), vec(arb_property(v12), 0..4))
        .prop_map(move |(ct_type, ver_ct, field_level, properties)| CtCap {
            ct_type,
            ver_ct: ver_ct.filter(|_| v12),
            field_level: field_level && v12,
            properties,
        })
        .boxed()
}

fn arb_data_store(v12: bool) -> impl Strategy<Value = DataStore<'static>> {
    let ds_mem = (any::<bool>(), opt_text(), opt_text()).prop_map(|(shared_mem, max_mem, max_id)| DsMem {
        shared_mem,
        max_mem,
        max_id,
    });
    let filter_cap = (arb_text(), opt_text(), texts(3), texts(3)).prop_map(
        |(ct_type, ver_ct, filter_keywords, prop_names)| FilterCap {
            ct_type,
            ver_ct,
            filter_keywords,
            prop_names,
        },
    );
    (
        (arb_text(), opt_text(), opt_text(), of(arb_ctv()), vec(arb_ctv(), 0..3), of(arb_ctv())),
        (vec(arb_ctv(), 0..3), vec(arb_ct_cap(true), 0..3), of(ds_mem), any::<bool>(), texts(4)),
        (vec(arb_ctv(), 0..2), vec(filter_cap, 0..2)),
    )
        .prop_map(
            move |(
                (source_ref, display_name, max_guid_size, rx_pref, rx, tx_pref),
                (tx, ct_caps, ds_mem, support_hierarchical_sync, sync_cap),
                (filter_rx, filter_caps),
            )| DataStore {
                source_ref,
                display_name,
                max_guid_size,
                rx_pref,
                rx,
                tx_pref,
                tx,
                ct_caps: if v12 { ct_caps } else { Vec::new() },
                ds_mem,
                support_hierarchical_sync: support_hierarchical_sync && v12,
                sync_cap,
                filter_rx: if v12 { filter_rx } else { Vec::new() },
                filter_caps: if v12 { filter_caps } else { Vec::new() },
            },
        )
        .boxed()
}

fn arb_devinf_version(v12: bool) -> impl Strategy<Value = DevInf<'static>> {
    let ext = (arb_text(), texts(3)).prop_map(|(x_nam, x_vals)| Ext { x_nam, x_vals });
    (
        (opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        (arb_text(), arb_text(), any::<bool>(), any::<bool>(), any::<bool>()),
        (vec(arb_data_store(v12), 0..3), vec(arb_ct_cap(false), 0..3), vec(ext, 0..2)),
    )
        .prop_map(
            move |(
                (man, model, oem, fw_v, sw_v, hw_v),
                (dev_id, dev_typ, utc, support_large_objs, support_number_of_changes),
                (data_stores, ct_caps, exts),
            )| DevInf {
                ver_dtd: Cow::Borrowed(if v12 { "1.2" } else { "1.1" }),
                man,
                model,
                oem,
                fw_v,
                sw_v,
                hw_v,
                dev_id,
                dev_typ,
                utc,
                support_large_objs,
                support_number_of_changes,
                data_stores,
                ct_caps: if v12 { Vec::new() } else { ct_caps },
                exts,
            },
        )
        .boxed()
}

/// A DevInf document: 1.2 (per-datastore CTCaps) or 1.1 (global flat CTCap).
pub fn arb_devinf() -> impl Strategy<Value = DevInf<'static>> {
    prop_oneof![arb_devinf_version(true), arb_devinf_version(false)]
}
