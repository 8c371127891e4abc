//! What one message may cost the decoders, and which identifiers they let through.
//!
//! Both decoders run a [`Budget`] made from [`DecodeLimits`] and the body's
//! length: every start tag (known, unknown, skipped or empty) spends one
//! element, every command one command, every WBXML string-table reference
//! (STR_T, LITERAL) the bytes it produces, and every heap allocation the
//! decoded message makes (list growth by capacity, boxes, owned texts) its
//! bytes plus [`ALLOC_OVERHEAD`]. A growing buffer is charged its whole new
//! size, which also covers the old buffer a reallocation holds for a moment
//! (it is at most half the new one, and was charged before). Charges are
//! never refunded, so the memory the decode holds at any time is at most
//! what was charged:
//!
//! ```text
//! decoded memory ≤ min(memory_per_byte × body + memory_base, memory_max)
//! ```
//!
//! (defaults: 64 × body + 48 MiB, at most 128 MiB). Not in the budget: the
//! input itself and the parser's element stack (64 entries). Conversions
//! whose size is only known once made (an XML document's charset
//! conversion, ≤ 2× body; a WBXML text piece's ISO-8859-1 conversion or
//! UTF-8 repair, ≤ 3× the piece; an entity, ≤ 4 bytes) are charged right
//! after they are made, so one of them can overshoot the budget once
//! before the decode fails. Any list of the model
//! (items of a command, MapItems, Status refs, DevInf lists) holds at most
//! `max_items` entries. Over a cap the decoders fail with a `TooLarge` error
//! naming the [`Cap`]; the server answers 413.
//!
//! [`check_ids`] is the identifier policy applied after a message decoded:
//! the ids that are echoed in replies or reach the store (device id,
//! SessionID, MsgID, CmdIDs, LocURIs, Status refs, Meta Type and anchors)
//! are bounded in length and may not hold control characters (C0 other than
//! TAB, CR and LF, and DEL), which PostgreSQL `text` rejects (NUL) and logs
//! and replies should not carry. Such a message is refused whole (400).

use crate::model::*;

/// Bytes charged per heap allocation on top of its size: the allocator's
/// header and rounding (glibc: 8-16 bytes, 32-byte minimum chunk).
pub const ALLOC_OVERHEAD: usize = 16;

const MIB: usize = 1 << 20;

/// Caps on decoding one message. `Default` gives the documented defaults,
/// which every legitimate client passes with room to spare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Commands per message, nested ones included (default 10,000; a
    /// SyncEvolution message at a 4 MiB MaxMsgSize holds a few thousand).
    pub max_commands: usize,
    /// Entries of any one list: Items of a command, MapItems of a Map,
    /// refs of a Status, entries of a DevInf list (default 10,000).
    pub max_items: usize,
    /// Start tags per message, unknown, skipped and empty ones included
    /// (default 500,000; ~6 per command in real traffic).
    pub max_elements: usize,
    /// Decoded-memory bytes allowed per body byte (default 64: a command
    /// is ~1.4 KB in memory, a WBXML Delete ~20 bytes on the wire).
    pub memory_per_byte: usize,
    /// Decoded-memory bytes allowed on top of that (default 48 MiB: 10,000
    /// one-item commands take ~51 MB with list growth).
    pub memory_base: usize,
    /// Absolute cap on decoded memory (default 128 MiB).
    pub memory_max: usize,
    /// WBXML string-table bytes (STR_T, LITERAL) allowed per body byte (default 2).
    pub strtbl_per_byte: usize,
    /// String-table bytes allowed on top of that (default 64 KiB).
    pub strtbl_base: usize,
    /// Absolute cap on string-table bytes produced (default 16 MiB).
    pub strtbl_max: usize,
    /// Length caps of identifiers ([`check_ids`]).
    pub ids: IdLimits,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_commands: 10_000,
            max_items: 10_000,
            max_elements: 500_000,
            memory_per_byte: 64,
            memory_base: 48 * MIB,
            memory_max: 128 * MIB,
            strtbl_per_byte: 2,
            strtbl_base: 64 << 10,
            strtbl_max: 16 * MIB,
            ids: IdLimits::default(),
        }
    }
}

impl DecodeLimits {
    /// The decoded-memory budget of a body of `body_len` bytes.
    pub fn memory_budget(&self, body_len: usize) -> usize {
        self.memory_per_byte.saturating_mul(body_len).saturating_add(self.memory_base).min(self.memory_max)
    }

    /// The string-table budget of a body of `body_len` bytes.
    pub fn strtbl_budget(&self, body_len: usize) -> usize {
        self.strtbl_per_byte.saturating_mul(body_len).saturating_add(self.strtbl_base).min(self.strtbl_max)
    }
}

/// Length caps (in bytes) of the identifiers [`check_ids`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdLimits {
    /// `SyncHdr/Source/LocURI`, the device id (default 256).
    pub device_id: usize,
    /// `LocName` of a location, the user name in the header (default 256).
    pub loc_name: usize,
    /// `SyncHdr/SessionID` (default 64).
    pub session_id: usize,
    /// `MsgID`, `CmdID`, `MsgRef`, `CmdRef` (default 32).
    pub msg_id: usize,
    /// `SyncHdr/Target/LocURI` and `RespURI`, the server URL (default 2048).
    pub server_uri: usize,
    /// Any other `LocURI`, `SourceRef`, `TargetRef` (default 1024).
    pub loc_uri: usize,
    /// Meta `Type` and anchors (`Last`, `Next`), which the store keeps (default 1024).
    pub meta_value: usize,
}

impl Default for IdLimits {
    fn default() -> Self {
        IdLimits {
            device_id: 256,
            loc_name: 256,
            session_id: 64,
            msg_id: 32,
            server_uri: 2048,
            loc_uri: 1024,
            meta_value: 1024,
        }
    }
}

/// Which decode cap a message went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// [`DecodeLimits::max_commands`].
    Commands,
    /// [`DecodeLimits::max_items`].
    Items,
    /// [`DecodeLimits::max_elements`].
    Elements,
    /// The string-table budget ([`DecodeLimits::strtbl_budget`]).
    StringTable,
    /// The decoded-memory budget ([`DecodeLimits::memory_budget`]).
    Memory,
}

impl std::fmt::Display for Cap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cap::Commands => "commands per message",
            Cap::Items => "entries of one list",
            Cap::Elements => "elements per message",
            Cap::StringTable => "string-table bytes",
            Cap::Memory => "decoded memory bytes",
        })
    }
}

/// A cap that was reached, with its value for this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exceeded {
    /// Which cap.
    pub cap: Cap,
    /// Its value for this message.
    pub limit: usize,
}

/// The spending state of one message's decode (and of documents nested in
/// it, which spend from the same budget).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Budget {
    elements_left: usize,
    commands_left: usize,
    strtbl_left: usize,
    memory_left: usize,
    max_items: usize,
    /// The caps as computed for this message, for error reports.
    max_elements: usize,
    max_commands: usize,
    strtbl: usize,
    memory: usize,
}

impl Budget {
    /// The budget of a message of `body_len` bytes under `limits`.
    pub fn new(limits: &DecodeLimits, body_len: usize) -> Budget {
        let memory = limits.memory_budget(body_len);
        let strtbl = limits.strtbl_budget(body_len);
        Budget {
            elements_left: limits.max_elements,
            commands_left: limits.max_commands,
            strtbl_left: strtbl,
            memory_left: memory,
            max_items: limits.max_items,
            max_elements: limits.max_elements,
            max_commands: limits.max_commands,
            strtbl,
            memory,
        }
    }

    /// Spends one start tag.
    #[inline(always)]
    pub fn element(&mut self) -> Result<(), Exceeded> {
        match self.elements_left.checked_sub(1) {
            Some(left) => {
                self.elements_left = left;
                Ok(())
            }
            None => Err(Exceeded { cap: Cap::Elements, limit: self.max_elements }),
        }
    }

    /// Spends one command.
    #[inline]
    pub fn command(&mut self) -> Result<(), Exceeded> {
        match self.commands_left.checked_sub(1) {
            Some(left) => {
                self.commands_left = left;
                Ok(())
            }
            None => Err(Exceeded { cap: Cap::Commands, limit: self.max_commands }),
        }
    }

    /// Commands still allowed (for reservations).
    pub fn commands_left(&self) -> usize {
        self.commands_left
    }

    /// Spends `n` bytes produced from the string table.
    #[inline]
    pub fn strtbl(&mut self, n: usize) -> Result<(), Exceeded> {
        match self.strtbl_left.checked_sub(n) {
            Some(left) => {
                self.strtbl_left = left;
                Ok(())
            }
            None => Err(Exceeded { cap: Cap::StringTable, limit: self.strtbl }),
        }
    }

    /// Spends `bytes` of decoded memory (one allocation of that size).
    #[inline]
    pub fn charge(&mut self, bytes: usize) -> Result<(), Exceeded> {
        match self.memory_left.checked_sub(bytes.saturating_add(ALLOC_OVERHEAD)) {
            Some(left) => {
                self.memory_left = left;
                Ok(())
            }
            None => Err(Exceeded { cap: Cap::Memory, limit: self.memory }),
        }
    }

    /// Charges what a heap-owned text holds (nothing for a borrowed one).
    #[inline]
    // The `Cow` itself is the question (owned or borrowed), not its text.
    #[allow(clippy::ptr_arg)]
    pub fn charge_text(&mut self, t: &std::borrow::Cow<'_, str>) -> Result<(), Exceeded> {
        match t {
            std::borrow::Cow::Borrowed(_) => Ok(()),
            std::borrow::Cow::Owned(s) => self.charge(s.capacity()),
        }
    }

    /// Appends `t` to an accumulated text, charging any growth before it
    /// happens (a borrowed first chunk is copied into an owned string).
    pub fn append_text(&mut self, prev: &mut std::borrow::Cow<'_, str>, t: &str) -> Result<(), Exceeded> {
        let cap = match prev {
            std::borrow::Cow::Owned(s) => s.capacity(),
            std::borrow::Cow::Borrowed(_) => 0,
        };
        let need = prev.len().saturating_add(t.len());
        if need > cap {
            // Doubling keeps a text of many chunks linear in time.
            let new_cap = need.max(cap.saturating_mul(2));
            self.charge(new_cap)?;
            match prev {
                std::borrow::Cow::Owned(s) => s.reserve_exact(new_cap - s.len()),
                std::borrow::Cow::Borrowed(b) => {
                    let mut s = String::with_capacity(new_cap);
                    s.push_str(b);
                    *prev = std::borrow::Cow::Owned(s);
                }
            }
        }
        prev.to_mut().push_str(t);
        Ok(())
    }

    /// Makes room for one more entry in `v` and charges the growth; the
    /// first entry gets an exact allocation (most lists hold one), later
    /// growth is amortised. Fails when `v` already holds `max_items`
    /// entries (`items`) or the memory budget is spent.
    #[inline]
    pub fn grow<T>(&mut self, v: &mut Vec<T>, items: bool) -> Result<(), Exceeded> {
        if items && v.len() >= self.max_items {
            return Err(Exceeded { cap: Cap::Items, limit: self.max_items });
        }
        if v.len() < v.capacity() {
            return Ok(());
        }
        let before = v.capacity();
        // Charge before allocating, so an over-budget list never grows.
        let want = if before == 0 { 1 } else { before.saturating_mul(2).max(4) };
        self.charge(want.saturating_mul(std::mem::size_of::<T>()))?;
        v.reserve_exact(want - v.len());
        Ok(())
    }

    /// Reserves `extra` more entries in `v` (a size guess), charged.
    pub fn reserve<T>(&mut self, v: &mut Vec<T>, extra: usize) -> Result<(), Exceeded> {
        let free = v.capacity() - v.len();
        if extra <= free {
            return Ok(());
        }
        self.charge(v.len().saturating_add(extra).saturating_mul(std::mem::size_of::<T>()))?;
        v.reserve_exact(extra);
        Ok(())
    }
}

/// An identifier [`check_ids`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is longer than its cap.
    #[error("{field} is {len} bytes long, over the limit of {limit}")]
    TooLong {
        /// Where it was (element path).
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The cap.
        limit: usize,
    },
    /// The identifier holds a control character (not TAB, CR or LF).
    #[error("{field} holds the control character U+{code:04X}")]
    ControlChar {
        /// Where it was (element path).
        field: &'static str,
        /// The character's code point.
        code: u32,
    },
}

/// Whether `c` is refused in an identifier: C0 controls other than TAB,
/// CR and LF (which formatted XML puts around texts), and DEL.
fn refused(c: u8) -> bool {
    (c < 0x20 && !matches!(c, b'\t' | b'\r' | b'\n')) || c == 0x7F
}

/// Checks one identifier's length and characters.
fn id(field: &'static str, value: &str, limit: usize) -> Result<(), IdError> {
    if value.len() > limit {
        return Err(IdError::TooLong { field, len: value.len(), limit });
    }
    // Control characters are ASCII, so a byte scan finds exactly them.
    match value.bytes().find(|&b| refused(b)) {
        Some(b) => Err(IdError::ControlChar { field, code: u32::from(b) }),
        None => Ok(()),
    }
}

fn opt_id(field: &'static str, value: &Option<Text<'_>>, limit: usize) -> Result<(), IdError> {
    match value {
        Some(v) => id(field, v, limit),
        None => Ok(()),
    }
}

/// Checks the identifiers of a decoded message (see the module doc).
pub fn check_ids(msg: &SyncMl<'_>, limits: &IdLimits) -> Result<(), IdError> {
    let h = &msg.hdr;
    id("SyncHdr/Source/LocURI", &h.source.loc_uri, limits.device_id)?;
    opt_id("SyncHdr/Source/LocName", &h.source.loc_name, limits.loc_name)?;
    id("SyncHdr/Target/LocURI", &h.target.loc_uri, limits.server_uri)?;
    opt_id("SyncHdr/Target/LocName", &h.target.loc_name, limits.loc_name)?;
    id("SyncHdr/SessionID", &h.session_id, limits.session_id)?;
    id("SyncHdr/MsgID", &h.msg_id, limits.msg_id)?;
    opt_id("SyncHdr/RespURI", &h.resp_uri, limits.server_uri)?;
    meta(h.meta.as_ref(), limits)?;
    if let Some(c) = &h.cred {
        meta(c.meta.as_ref(), limits)?;
    }
    // An explicit stack instead of recursion: nesting is bounded by the
    // decoders, but a model built elsewhere need not be.
    let mut lists: Vec<&[Command<'_>]> = vec![&msg.body];
    while let Some(list) = lists.pop() {
        for c in list {
            if let Some(nested) = command(c, limits)? {
                lists.push(nested);
            }
        }
    }
    Ok(())
}

/// Checks one command's ids; returns the commands nested in it.
fn command<'c, 'a>(c: &'c Command<'a>, l: &IdLimits) -> Result<Option<&'c [Command<'a>]>, IdError> {
    let cmd_id = |v: &Text<'_>| id("CmdID", v, l.msg_id);
    match c {
        Command::Sync(s) => {
            cmd_id(&s.cmd_id)?;
            opt_location("Sync/Target", s.target.as_ref(), l)?;
            opt_location("Sync/Source", s.source.as_ref(), l)?;
            meta(s.meta.as_ref(), l)?;
            return Ok(Some(&s.commands));
        }
        Command::Atomic(k) | Command::Sequence(k) => {
            cmd_id(&k.cmd_id)?;
            meta(k.meta.as_ref(), l)?;
            return Ok(Some(&k.commands));
        }
        Command::Alert(a) => {
            cmd_id(&a.cmd_id)?;
            items(&a.items, l)?;
        }
        Command::Add(ic)
        | Command::Replace(ic)
        | Command::Delete(ic)
        | Command::Copy(ic)
        | Command::Move(ic) => {
            cmd_id(&ic.cmd_id)?;
            meta(ic.meta.as_ref(), l)?;
            items(&ic.items, l)?;
        }
        Command::Status(s) => {
            cmd_id(&s.cmd_id)?;
            opt_id("Status/MsgRef", &s.msg_ref, l.msg_id)?;
            id("Status/CmdRef", &s.cmd_ref, l.msg_id)?;
            for r in &s.target_refs {
                id("Status/TargetRef", r, l.loc_uri)?;
            }
            for r in &s.source_refs {
                id("Status/SourceRef", r, l.loc_uri)?;
            }
            items(&s.items, l)?;
        }
        Command::Put(pg) | Command::Get(pg) => {
            cmd_id(&pg.cmd_id)?;
            meta(pg.meta.as_ref(), l)?;
            items(&pg.items, l)?;
        }
        Command::Results(r) => {
            cmd_id(&r.cmd_id)?;
            opt_id("Results/MsgRef", &r.msg_ref, l.msg_id)?;
            id("Results/CmdRef", &r.cmd_ref, l.msg_id)?;
            opt_id("Results/TargetRef", &r.target_ref, l.loc_uri)?;
            opt_id("Results/SourceRef", &r.source_ref, l.loc_uri)?;
            meta(r.meta.as_ref(), l)?;
            items(&r.items, l)?;
        }
        Command::Map(m) => {
            cmd_id(&m.cmd_id)?;
            location("Map/Target", &m.target, l)?;
            location("Map/Source", &m.source, l)?;
            meta(m.meta.as_ref(), l)?;
            for mi in &m.map_items {
                location("MapItem/Target", &mi.target, l)?;
                location("MapItem/Source", &mi.source, l)?;
            }
        }
        Command::Exec(e) => {
            cmd_id(&e.cmd_id)?;
            meta(e.meta.as_ref(), l)?;
            item(&e.item, l)?;
        }
        Command::Search(s) => {
            cmd_id(&s.cmd_id)?;
            opt_location("Search/Target", s.target.as_ref(), l)?;
            for src in &s.sources {
                location("Search/Source", src, l)?;
            }
            meta(s.meta.as_ref(), l)?;
        }
        Command::Unknown(u) => cmd_id(&u.cmd_id)?,
    }
    Ok(None)
}

fn location(field: &'static str, loc: &Location<'_>, l: &IdLimits) -> Result<(), IdError> {
    id(field, &loc.loc_uri, l.loc_uri)?;
    opt_id(field, &loc.loc_name, l.loc_name)
}

fn opt_location(field: &'static str, loc: Option<&Location<'_>>, l: &IdLimits) -> Result<(), IdError> {
    match loc {
        Some(loc) => location(field, loc, l),
        None => Ok(()),
    }
}

fn items(list: &[Item<'_>], l: &IdLimits) -> Result<(), IdError> {
    list.iter().try_for_each(|it| item(it, l))
}

fn item(it: &Item<'_>, l: &IdLimits) -> Result<(), IdError> {
    opt_location("Item/Target", it.target.as_ref(), l)?;
    opt_location("Item/Source", it.source.as_ref(), l)?;
    opt_location("Item/SourceParent", it.source_parent.as_ref(), l)?;
    opt_location("Item/TargetParent", it.target_parent.as_ref(), l)?;
    meta(it.meta.as_ref(), l)
}

fn meta(m: Option<&Meta<'_>>, l: &IdLimits) -> Result<(), IdError> {
    let Some(m) = m else { return Ok(()) };
    opt_id("Meta/Type", &m.type_, l.meta_value)?;
    if let Some(a) = &m.anchor {
        opt_id("Meta/Anchor/Last", &a.last, l.meta_value)?;
        opt_id("Meta/Anchor/Next", &a.next, l.meta_value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, DecodeError};
    use crate::model::Encoding;

    /// A message with header ids `dev`, `session`, `msg` and SyncBody `body`.
    fn msg(dev: &str, session: &str, msg: &str, body: &str) -> String {
        format!(
            "<SyncML><SyncHdr><VerDTD>1.2</VerDTD><SessionID>{session}</SessionID><MsgID>{msg}</MsgID>\
             <Target><LocURI>http://x/sync</LocURI></Target><Source><LocURI>{dev}</LocURI></Source>\
             </SyncHdr><SyncBody>{body}<Final/></SyncBody></SyncML>"
        )
    }

    fn refused(doc: &str) -> Option<IdError> {
        match decode(Encoding::Xml, doc.as_bytes()) {
            Err(DecodeError::Id(e)) => Some(e),
            Ok(_) => None,
            Err(e) => panic!("not an id error: {e}"),
        }
    }

    #[test]
    fn control_characters_in_header_ids_are_refused() {
        assert_eq!(refused(&msg("dev", "1", "1", "")), None);
        assert_eq!(
            refused(&msg("dev&#0;", "1", "1", "")),
            Some(IdError::ControlChar { field: "SyncHdr/Source/LocURI", code: 0 })
        );
        assert_eq!(
            refused(&msg("dev", "1&#1;", "1", "")),
            Some(IdError::ControlChar { field: "SyncHdr/SessionID", code: 1 })
        );
        assert_eq!(
            refused(&msg("dev", "1", "1&#127;", "")),
            Some(IdError::ControlChar { field: "SyncHdr/MsgID", code: 0x7F })
        );
        // TAB, CR and LF (formatting around texts) pass.
        assert_eq!(refused(&msg("&#9;dev&#13;&#10;", "1\n", "\t1", "")), None);
        // U+0080..U+009F are not C0 controls: text, not refused.
        assert_eq!(refused(&msg("dev\u{85}", "1", "1", "")), None);
    }

    #[test]
    fn control_characters_in_item_ids_are_refused() {
        let cases = [
            ("<Add><CmdID>1&#0;</CmdID></Add>", "CmdID"),
            ("<Sync><Add><Item><Source><LocURI>a&#0;b</LocURI></Source></Item></Add></Sync>", "Item/Source"),
            ("<Replace><Item><Target><LocURI>&#27;</LocURI></Target></Item></Replace>", "Item/Target"),
            ("<Atomic><Delete><Item><SourceParent><LocURI>&#8;</LocURI></SourceParent></Item></Delete></Atomic>", "Item/SourceParent"),
            ("<Map><MapItem><Source><LocURI>x&#0;</LocURI></Source></MapItem></Map>", "MapItem/Source"),
            ("<Map><MapItem><Target><LocURI>&#31;</LocURI></Target></MapItem></Map>", "MapItem/Target"),
            ("<Status><SourceRef>&#0;</SourceRef></Status>", "Status/SourceRef"),
            ("<Status><TargetRef>&#0;</TargetRef></Status>", "Status/TargetRef"),
            ("<Alert><Item><Meta><Anchor><Next>&#0;</Next></Anchor></Meta></Item></Alert>", "Meta/Anchor/Next"),
            ("<Add><Meta><Type>text/x-vcard&#0;</Type></Meta></Add>", "Meta/Type"),
            ("<Sync><Target><LocURI>card&#0;</LocURI></Target></Sync>", "Sync/Target"),
        ];
        for (body, field) in cases {
            match refused(&msg("dev", "1", "1", body)) {
                Some(IdError::ControlChar { field: f, .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        // Item data is content, not an id: a NUL there is the store's bytes.
        assert_eq!(refused(&msg("dev", "1", "1", "<Add><Item><Data>a&#0;b</Data></Item></Add>")), None);
    }

    #[test]
    fn header_id_lengths_are_capped() {
        let l = IdLimits::default();
        assert_eq!(refused(&msg(&"d".repeat(l.device_id), "1", "1", "")), None);
        assert_eq!(
            refused(&msg(&"d".repeat(l.device_id + 1), "1", "1", "")),
            Some(IdError::TooLong { field: "SyncHdr/Source/LocURI", len: 257, limit: 256 })
        );
        assert!(matches!(
            refused(&msg("dev", &"1".repeat(l.session_id + 1), "1", "")),
            Some(IdError::TooLong { field: "SyncHdr/SessionID", .. })
        ));
        assert!(matches!(
            refused(&msg("dev", "1", &"1".repeat(l.msg_id + 1), "")),
            Some(IdError::TooLong { field: "SyncHdr/MsgID", .. })
        ));
        let long_luid =
            format!("<Add><Item><Source><LocURI>{}</LocURI></Source></Item></Add>", "x".repeat(1025));
        assert!(matches!(refused(&msg("dev", "1", "1", &long_luid)), Some(IdError::TooLong { .. })));
        // A 4 MB device id is refused without being copied anywhere.
        let e = refused(&msg(&"d".repeat(4 << 20), "1", "1", "")).expect("refused");
        assert!(e.to_string().len() < 100, "the error does not quote the id");
    }

    #[test]
    fn the_server_maps_caps_to_too_large_and_ids_to_invalid() {
        use crate::server::{decode as server_decode, DecodeError as Server};
        let many = msg("dev", "1", "1", &"<a/>".repeat(20_000));
        assert!(matches!(server_decode(Encoding::Xml, many.as_bytes()), Err(Server::TooLarge(_))));
        let nul = msg("dev&#0;", "1", "1", "");
        assert!(matches!(server_decode(Encoding::Xml, nul.as_bytes()), Err(Server::Invalid(_))));
        assert!(matches!(server_decode(Encoding::Xml, b"<SyncML><"), Err(Server::Invalid(_))));
    }

    #[test]
    fn budget_growth_is_charged_before_it_happens() {
        let limits = DecodeLimits { memory_base: 1000, memory_per_byte: 0, ..DecodeLimits::default() };
        let mut b = Budget::new(&limits, 0);
        let mut v: Vec<u64> = Vec::new();
        b.grow(&mut v, true).expect("8 bytes");
        assert_eq!(v.capacity(), 1, "the first entry gets an exact allocation");
        v.push(1);
        b.grow(&mut v, true).expect("32 bytes");
        assert_eq!(v.capacity(), 4);
        let mut big: Vec<[u8; 1024]> = Vec::new();
        assert_eq!(b.grow(&mut big, true), Err(Exceeded { cap: Cap::Memory, limit: 1000 }));
        assert_eq!(big.capacity(), 0, "nothing allocated over the budget");
        let mut t = std::borrow::Cow::Borrowed("abc");
        b.append_text(&mut t, "def").expect("6 bytes");
        assert_eq!(t, "abcdef");
        assert_eq!(b.append_text(&mut t, &"x".repeat(2000)), Err(Exceeded { cap: Cap::Memory, limit: 1000 }));
        assert_eq!(t, "abcdef");
    }
}
