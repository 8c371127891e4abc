//! Helpers shared by the round-trip fuzz targets and tests/fuzz_regressions.rs:
//! what `decode(encode(m))` is expected to give for a decoded `m`.

#![allow(dead_code)]

use shardsync::model::*;

/// The message as the encoders write it: without `Command::Unknown` (kept
/// only for the engine) and with every DevInf 1.0/1.1 in its 1.1 shape
/// (see [`canonical_devinf`]).
pub fn canonical(mut m: SyncMl<'_>) -> SyncMl<'_> {
    fn cred(c: &mut Option<Cred<'_>>) {
        if let Some(c) = c {
            data(&mut c.data);
        }
    }
    fn data(d: &mut Data<'_>) {
        if let Data::DevInf(di) = d {
            canonical_devinf(di);
        }
    }
    fn location(l: &mut Option<Location<'_>>) {
        if let Some(f) = l.as_mut().and_then(|l| l.filter.as_mut()) {
            for it in [&mut f.field, &mut f.record].into_iter().flatten() {
                item(it);
            }
        }
    }
    fn item(i: &mut Item<'_>) {
        location(&mut i.target);
        location(&mut i.source);
        location(&mut i.source_parent);
        location(&mut i.target_parent);
        if let Some(d) = &mut i.data {
            data(d);
        }
    }
    fn items(v: &mut [Item<'_>]) {
        v.iter_mut().for_each(item);
    }
    fn cmds(cs: &mut Vec<Command<'_>>) {
        cs.retain(|c| !matches!(c, Command::Unknown(_)));
        for c in cs {
            match c {
                Command::Alert(a) => {
                    cred(&mut a.cred);
                    items(&mut a.items);
                }
                Command::Add(x)
                | Command::Replace(x)
                | Command::Delete(x)
                | Command::Copy(x)
                | Command::Move(x) => {
                    cred(&mut x.cred);
                    items(&mut x.items);
                }
                Command::Sync(s) => {
                    cred(&mut s.cred);
                    location(&mut s.target);
                    location(&mut s.source);
                    cmds(&mut s.commands);
                }
                Command::Atomic(k) | Command::Sequence(k) => cmds(&mut k.commands),
                Command::Status(s) => {
                    cred(&mut s.cred);
                    items(&mut s.items);
                }
                Command::Put(p) | Command::Get(p) => {
                    cred(&mut p.cred);
                    items(&mut p.items);
                }
                Command::Results(r) => items(&mut r.items),
                Command::Map(m) => cred(&mut m.cred),
                Command::Exec(e) => {
                    cred(&mut e.cred);
                    item(&mut e.item);
                }
                Command::Search(s) => {
                    cred(&mut s.cred);
                    location(&mut s.target);
                    if let Some(d) = &mut s.data {
                        data(d);
                    }
                }
                Command::Unknown(_) => {}
            }
        }
    }
    cred(&mut m.hdr.cred);
    let mut t = Some(std::mem::take(&mut m.hdr.target));
    location(&mut t);
    m.hdr.target = t.unwrap_or_default();
    let mut s = Some(std::mem::take(&mut m.hdr.source));
    location(&mut s);
    m.hdr.source = s.unwrap_or_default();
    cmds(&mut m.body);
    m
}

/// A DevInf 1.0/1.1 as the encoders write it: one global, flat CTCap list
/// (global first, then each datastore's), without the 1.2-only VerCT,
/// FieldLevel, MaxOccur and NoTruncate. Other versions are unchanged.
pub fn canonical_devinf(d: &mut DevInf<'_>) {
    if !matches!(d.ver_dtd.trim(), "1.0" | "1.1") {
        return;
    }
    for ds in &mut d.data_stores {
        d.ct_caps.append(&mut ds.ct_caps);
    }
    for c in &mut d.ct_caps {
        c.ver_ct = None;
        c.field_level = false;
        for p in &mut c.properties {
            p.max_occur = None;
            p.no_truncate = false;
        }
    }
}
