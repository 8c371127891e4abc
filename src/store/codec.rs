//! A small, versioned binary encoding for stored records.
//!
//! Records are length-prefixed fields in a fixed order behind a version byte,
//! so a later version can add trailing fields. It is hand-written (rather than
//! JSON) because item data and session state are bytes and must stay compact.

use super::{DeviceRecord, ItemRecord, SessionRecord, StoreError, SyncState, UserRecord};

const VERSION: u8 = 1;

/// Appends fields to a record buffer.
pub(crate) struct Enc(Vec<u8>);

impl Enc {
    fn new(capacity: usize) -> Enc {
        let mut v = Vec::with_capacity(capacity + 1);
        v.push(VERSION);
        Enc(v)
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // u64 lengths: never truncated, and 4 bytes more per field is noise.
        self.0.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
    fn done(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Reads fields back; any truncation or bad UTF-8 is a corrupt record.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Dec<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Result<Dec<'a>, StoreError> {
        match buf.split_first() {
            Some((&VERSION, rest)) => Ok(Dec { buf: rest, what }),
            _ => Err(corrupt(what)),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(corrupt(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = usize::try_from(self.u64()?).map_err(|_| corrupt(self.what))?;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, StoreError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt(self.what))
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("corrupt {what} record in the store"))
}

pub(crate) fn enc_user(u: &UserRecord) -> Vec<u8> {
    Enc::new(64 + u.password_hash.len()).str(&u.name).str(&u.md5_b64).str(&u.password_hash).done()
}

pub(crate) fn dec_user(b: &[u8]) -> Result<UserRecord, StoreError> {
    let mut d = Dec::new(b, "user")?;
    Ok(UserRecord { name: d.string()?, md5_b64: d.string()?, password_hash: d.string()? })
}

pub(crate) fn enc_device(r: &DeviceRecord) -> Vec<u8> {
    Enc::new(64 + r.devinf_xml.len())
        .str(&r.device_id)
        .bytes(&r.devinf_xml)
        .bytes(&r.nonce)
        .u64(r.first_seen)
        .u64(r.last_seen)
        .done()
}

pub(crate) fn dec_device(b: &[u8]) -> Result<DeviceRecord, StoreError> {
    let mut d = Dec::new(b, "device")?;
    Ok(DeviceRecord {
        device_id: d.string()?,
        devinf_xml: d.bytes()?.to_vec(),
        nonce: d.bytes()?.to_vec(),
        first_seen: d.u64()?,
        last_seen: d.u64()?,
    })
}

#[cfg(test)]
pub(crate) fn enc_item(r: &ItemRecord) -> Vec<u8> {
    enc_item_fields(r.server_id, r.seq, &r.content_type, &r.data, &r.origin_device, r.deleted)
}

/// Encodes an item from borrowed fields (the writer avoids copying item data).
pub(crate) fn enc_item_fields(
    server_id: u64,
    seq: u64,
    content_type: &str,
    data: &[u8],
    origin_device: &str,
    deleted: bool,
) -> Vec<u8> {
    Enc::new(48 + data.len() + content_type.len() + origin_device.len())
        .u64(server_id)
        .u64(seq)
        .str(content_type)
        .bytes(data)
        .str(origin_device)
        .u64(u64::from(deleted))
        .done()
}

pub(crate) fn dec_item(b: &[u8]) -> Result<ItemRecord, StoreError> {
    let mut d = Dec::new(b, "item")?;
    Ok(ItemRecord {
        server_id: d.u64()?,
        seq: d.u64()?,
        content_type: d.string()?,
        data: d.bytes()?.to_vec(),
        origin_device: d.string()?,
        deleted: d.u64()? != 0,
    })
}

/// Encodes a block of item records (each from [`enc_item_fields`]), in order.
pub(crate) fn enc_item_block<'r>(records: impl Iterator<Item = &'r [u8]>, capacity: usize) -> Vec<u8> {
    let mut e = Enc::new(capacity);
    for r in records {
        e.bytes(r);
    }
    e.done()
}

/// The item records of a block, borrowed from it, in stored (server id) order.
pub(crate) fn item_block_records(b: &[u8]) -> Result<Vec<&[u8]>, StoreError> {
    let mut d = Dec::new(b, "item block")?;
    let mut out = Vec::new();
    while !d.buf.is_empty() {
        out.push(d.bytes()?);
    }
    Ok(out)
}

/// Reads only the server id of an item record.
pub(crate) fn dec_item_id(b: &[u8]) -> Result<u64, StoreError> {
    Dec::new(b, "item")?.u64()
}

/// Bytes of one entry of an item meta block: server id, seq, tombstone flag.
const META_ENTRY: usize = 17;

/// Encodes an item block's meta: (server id, seq, tombstone) of each of its
/// records, in server id order (see the embedded store's `item_meta`).
pub(crate) fn enc_item_meta(entries: impl Iterator<Item = (u64, u64, bool)>, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + count * META_ENTRY);
    out.push(VERSION);
    for (sid, seq, deleted) in entries {
        out.extend_from_slice(&sid.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.push(u8::from(deleted));
    }
    out
}

/// The entries of an item meta block, checked whole first.
pub(crate) fn item_meta_entries(b: &[u8]) -> Result<impl Iterator<Item = (u64, u64, bool)> + '_, StoreError> {
    let body = match b.split_first() {
        Some((&VERSION, rest)) if rest.len() % META_ENTRY == 0 => rest,
        _ => return Err(corrupt("item meta")),
    };
    Ok(body.chunks_exact(META_ENTRY).map(|e| {
        let mut sid = [0u8; 8];
        let mut seq = [0u8; 8];
        sid.copy_from_slice(&e[..8]);
        seq.copy_from_slice(&e[8..16]);
        (u64::from_le_bytes(sid), u64::from_le_bytes(seq), e[16] != 0)
    }))
}

/// One bucket of a device's mappings for a collection: (client id, server id)
/// entries sorted by client id bytes, kept encoded (`[u32 len][id][u64 sid]`
/// each, behind the version byte) so changing one entry allocates nothing per
/// entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapBucket(Vec<u8>);

/// The entry at `at`: (client id, server id, end offset).
fn map_entry(buf: &[u8], at: usize) -> Option<(&[u8], u64, usize)> {
    let len = u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize;
    let id = buf.get(at + 4..at + 4 + len)?;
    let sid = u64::from_le_bytes(buf.get(at + 4 + len..at + 12 + len)?.try_into().ok()?);
    Some((id, sid, at + 12 + len))
}

/// Walks a stored bucket, checking it whole: the version byte, every entry
/// well formed, client ids UTF-8 and strictly increasing. Calls `each` with
/// every (client id, server id).
fn walk_map_bucket<'b>(b: &'b [u8], mut each: impl FnMut(&'b str, u64)) -> Result<(), StoreError> {
    if b.first() != Some(&VERSION) {
        return Err(corrupt("mapping bucket"));
    }
    let mut at = 1;
    let mut last: Option<&[u8]> = None;
    while at < b.len() {
        let (id, sid, end) = map_entry(b, at).ok_or_else(|| corrupt("mapping bucket"))?;
        let text = std::str::from_utf8(id).map_err(|_| corrupt("mapping bucket"))?;
        if last.is_some_and(|l| l >= id) {
            return Err(corrupt("mapping bucket"));
        }
        last = Some(id);
        each(text, sid);
        at = end;
    }
    Ok(())
}

/// Appends the (client id, server id) pairs of a stored bucket to `out`,
/// checking it as [`MapBucket::decode`] does, without copying the bucket.
pub(crate) fn read_map_pairs(b: &[u8], out: &mut Vec<(String, u64)>) -> Result<(), StoreError> {
    walk_map_bucket(b, |id, sid| out.push((id.to_owned(), sid)))
}

impl MapBucket {
    /// An empty bucket.
    pub(crate) fn new() -> MapBucket {
        MapBucket(vec![VERSION])
    }

    /// Checks a stored bucket whole, so later walks cannot fail.
    pub(crate) fn decode(b: &[u8]) -> Result<MapBucket, StoreError> {
        walk_map_bucket(b, |_, _| {})?;
        Ok(MapBucket(b.to_vec()))
    }

    /// The encoded bucket.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// (offset, client id, server id, end) of each entry, in order.
    fn entries(&self) -> impl Iterator<Item = (usize, &[u8], u64, usize)> {
        let mut at = 1;
        std::iter::from_fn(move || {
            let (id, sid, end) = map_entry(&self.0, at)?;
            let start = at;
            at = end;
            Some((start, id, sid, end))
        })
    }

    /// Whether the bucket has no entries.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.len() <= 1
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries().count()
    }

    /// The server id `client_id` maps to.
    pub(crate) fn get(&self, client_id: &str) -> Option<u64> {
        self.entries().find(|(_, id, _, _)| *id == client_id.as_bytes()).map(|(_, _, sid, _)| sid)
    }

    /// Maps `client_id` to `sid`, replacing its old server id.
    pub(crate) fn set(&mut self, client_id: &str, sid: u64) {
        let key = client_id.as_bytes();
        let mut insert_at = self.0.len();
        let mut existing = None;
        for (start, id, _, end) in self.entries() {
            if id == key {
                existing = Some(end);
                break;
            }
            if id > key {
                insert_at = start;
                break;
            }
        }
        if let Some(end) = existing {
            self.0[end - 8..end].copy_from_slice(&sid.to_le_bytes());
            return;
        }
        let mut entry = Vec::with_capacity(12 + key.len());
        entry.extend_from_slice(&(key.len() as u32).to_le_bytes());
        entry.extend_from_slice(key);
        entry.extend_from_slice(&sid.to_le_bytes());
        self.0.splice(insert_at..insert_at, entry);
    }

    /// Drops `client_id`'s entry; whether there was one.
    pub(crate) fn remove(&mut self, client_id: &str) -> bool {
        let found = self.entries().find(|(_, id, _, _)| *id == client_id.as_bytes());
        match found.map(|(start, _, _, end)| (start, end)) {
            Some((start, end)) => {
                self.0.drain(start..end);
                true
            }
            None => false,
        }
    }

    /// Drops every entry that maps to `sid`; whether any did.
    pub(crate) fn remove_server_id(&mut self, sid: u64) -> bool {
        let mut kept = Vec::with_capacity(self.0.len());
        kept.push(VERSION);
        let mut changed = false;
        for (start, _, entry_sid, end) in self.entries() {
            if entry_sid == sid {
                changed = true;
            } else {
                kept.extend_from_slice(&self.0[start..end]);
            }
        }
        if changed {
            self.0 = kept;
        }
        changed
    }

    /// The entries as owned (client id, server id) pairs, through
    /// [`read_map_pairs`] as the store reads them.
    #[cfg(test)]
    pub(crate) fn pairs(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        read_map_pairs(&self.0, &mut out).expect("a bucket built by set() reads back");
        out
    }
}

/// Reads only the sequence number and tombstone flag of an item (no data copy).
pub(crate) fn dec_item_seq(b: &[u8]) -> Result<(u64, bool), StoreError> {
    let (_, seq, deleted) = dec_item_meta(b)?;
    Ok((seq, deleted))
}

/// Reads an item record's server id, seq and tombstone flag, skipping (not
/// copying) its content type, data and origin device.
pub(crate) fn dec_item_meta(b: &[u8]) -> Result<(u64, u64, bool), StoreError> {
    let mut d = Dec::new(b, "item")?;
    let server_id = d.u64()?;
    let seq = d.u64()?;
    d.bytes()?;
    d.bytes()?;
    d.bytes()?;
    Ok((server_id, seq, d.u64()? != 0))
}

pub(crate) fn enc_state(s: &SyncState) -> Vec<u8> {
    Enc::new(64)
        .str(&s.client_anchor)
        .str(&s.server_anchor)
        .u64(s.seq_reached)
        .str(&s.client_uri)
        .u64(u64::from(s.last_sync_type))
        .done()
}

pub(crate) fn dec_state(b: &[u8]) -> Result<SyncState, StoreError> {
    let mut d = Dec::new(b, "sync state")?;
    Ok(SyncState {
        client_anchor: d.string()?,
        server_anchor: d.string()?,
        seq_reached: d.u64()?,
        client_uri: d.string()?,
        last_sync_type: u16::try_from(d.u64()?).map_err(|_| corrupt("sync state"))?,
    })
}

pub(crate) fn enc_session(s: &SessionRecord) -> Vec<u8> {
    Enc::new(32 + s.state.len() + s.last_reply.len())
        .u64(s.key)
        .bytes(&s.state)
        .u64(s.last_msg_id)
        .bytes(&s.last_reply)
        .u64(s.expires_at)
        .done()
}

pub(crate) fn dec_session(b: &[u8]) -> Result<SessionRecord, StoreError> {
    let mut d = Dec::new(b, "session")?;
    Ok(SessionRecord {
        key: d.u64()?,
        state: d.bytes()?.to_vec(),
        last_msg_id: d.u64()?,
        last_reply: d.bytes()?.to_vec(),
        expires_at: d.u64()?,
    })
}

/// `(last_msg_id, expires_at)` of an encoded session, without copying its blobs.
pub(crate) fn dec_session_meta(b: &[u8]) -> Result<(u64, u64), StoreError> {
    let mut d = Dec::new(b, "session")?;
    d.u64()?;
    d.bytes()?;
    let last = d.u64()?;
    d.bytes()?;
    Ok((last, d.u64()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn map_buckets_keep_entries_sorted_and_unique() {
        let mut b = MapBucket::new();
        for (id, sid) in [("b", 2u64), ("a", 1), ("c", 3), ("b", 20), ("ab", 4)] {
            b.set(id, sid);
        }
        let want: Vec<(String, u64)> =
            [("a", 1), ("ab", 4), ("b", 20), ("c", 3)].iter().map(|(i, s)| (i.to_string(), *s)).collect();
        assert_eq!(b.pairs(), want);
        let again = MapBucket::decode(b.bytes()).expect("round trip");
        assert_eq!(again, b);
        assert_eq!(b.get("b"), Some(20));
        assert!(b.remove("ab"));
        assert!(!b.remove("ab"));
        b.set("d", 3);
        assert!(b.remove_server_id(3));
        assert_eq!(b.pairs(), vec![("a".to_string(), 1), ("b".to_string(), 20)]);
        assert_eq!(b.len(), 2);
        assert!(b.remove("a") && b.remove("b") && b.is_empty());
    }

    #[test]
    fn corrupt_map_buckets_are_refused() {
        let mut b = MapBucket::new();
        b.set("x", 1);
        b.set("y", 2);
        let bytes = b.bytes();
        assert!(MapBucket::decode(&bytes[..bytes.len() - 1]).is_err(), "truncated");
        assert!(MapBucket::decode(&[]).is_err(), "empty");
        let mut swapped = MapBucket::new().bytes().to_vec();
        for id in ["y", "x"] {
            swapped.extend_from_slice(&1u32.to_le_bytes());
            swapped.extend_from_slice(id.as_bytes());
            swapped.extend_from_slice(&5u64.to_le_bytes());
        }
        assert!(MapBucket::decode(&swapped).is_err(), "out of order");
        let mut not_utf8 = MapBucket::new().bytes().to_vec();
        not_utf8.extend_from_slice(&1u32.to_le_bytes());
        not_utf8.push(0xff);
        not_utf8.extend_from_slice(&5u64.to_le_bytes());
        assert!(MapBucket::decode(&not_utf8).is_err(), "not UTF-8");
        // The read path refuses the same buckets.
        let mut out = Vec::new();
        for bad in [&bytes[..bytes.len() - 1], &[][..], &swapped, &not_utf8] {
            assert!(read_map_pairs(bad, &mut out).is_err());
        }
        read_map_pairs(bytes, &mut out).expect("a good bucket reads");
        assert_eq!(out.last(), Some(&("y".to_string(), 2)));
    }

    use super::*;

    #[test]
    fn records_round_trip() {
        let item = ItemRecord {
            server_id: 7,
            seq: 9,
            content_type: "text/vcard".into(),
            data: b"BEGIN:VCARD".to_vec(),
            origin_device: "dev".into(),
            deleted: true,
        };
        assert_eq!(dec_item(&enc_item(&item)).unwrap(), item);
        assert_eq!(dec_item_seq(&enc_item(&item)).unwrap(), (9, true));
        let st = SyncState {
            client_anchor: "a".into(),
            server_anchor: "b".into(),
            seq_reached: 3,
            client_uri: "card".into(),
            last_sync_type: 201,
        };
        assert_eq!(dec_state(&enc_state(&st)).unwrap(), st);
        let s =
            SessionRecord { key: 1, state: vec![1, 2], last_msg_id: 4, last_reply: vec![5], expires_at: 6 };
        assert_eq!(dec_session(&enc_session(&s)).unwrap(), s);
        let dv = DeviceRecord {
            device_id: "d".into(),
            devinf_xml: b"<x/>".to_vec(),
            nonce: vec![0; 16],
            first_seen: 1,
            last_seen: 2,
        };
        assert_eq!(dec_device(&enc_device(&dv)).unwrap(), dv);
        let u = UserRecord { name: "n".into(), md5_b64: "m".into(), password_hash: "p".into() };
        assert_eq!(dec_user(&enc_user(&u)).unwrap(), u);
        assert!(dec_item(&enc_item(&item)[..10]).is_err());
        assert!(dec_user(&[]).is_err());
    }
}
