//! WBXML → model: a recursive-descent builder over the tokenizer's events.
//!
//! Elements are matched by (code page, token) in context and in any order;
//! unknown elements are skipped (iteratively, so skipping never recurses) or,
//! at command level, kept as [`Command::Unknown`]. Nesting of known elements
//! is bounded by [`MAX_DEPTH`]; commands, list entries and every allocation
//! of the decoded message are spent from the reader's budget
//! ([`crate::codec::limits`]).

use std::borrow::Cow;

use super::reader::{utf8, Event, Reader, Tag};
use super::tokens::{devinf as di, metinf as mi, syncml as sm};
use super::WbxmlError;
use crate::codec::limits::{Budget, DecodeLimits, Exceeded};
use crate::model::*;

/// Deepest element nesting the decoder follows (SyncML needs about 12).
pub const MAX_DEPTH: usize = 64;

type Res<T> = Result<T, WbxmlError>;

/// Decodes a SyncML document under `limits`.
pub(crate) fn syncml<'b>(input: &'b [u8], limits: &DecodeLimits) -> Res<SyncMl<'b>> {
    let r = Reader::with_budget(input, Budget::new(limits, input.len()))?;
    let mut p = Parser { r, depth: 0, in_filter: false };
    let root = p.root("SyncML", 0, sm::SYNC_ML)?;
    p.syncml(root)
}

/// Decodes a DevInf document under the default limits.
pub(crate) fn devinf(input: &[u8]) -> Res<DevInf<'_>> {
    devinf_with(input, Budget::new(&DecodeLimits::default(), input.len())).0
}

/// Decodes a DevInf document spending `budget`; returns what is left of it.
fn devinf_with(input: &[u8], budget: Budget) -> (Res<DevInf<'_>>, Budget) {
    let r = match Reader::with_budget(input, budget.clone()) {
        Ok(r) => r,
        // The header and string table were only looked at: nothing spent.
        Err(e) => return (Err(e), budget),
    };
    let mut p = Parser { r, depth: 0, in_filter: false };
    let d = p.root("DevInf", 0, di::DEV_INF).and_then(|root| p.devinf(root));
    (d, p.r.budget)
}

/// Appends `Command::$variant($ty::default())` to `$out` and parses the
/// element `$c` into it with `$parse`.
macro_rules! fill {
    ($p:expr, $out:expr, $c:expr, $variant:ident, $ty:ident, $parse:ident) => {{
        match $p.push_command($out, Command::$variant($ty::default()), &$c)? {
            Command::$variant(x) => $p.$parse($c, x),
            _ => Ok(()), // just pushed: unreachable
        }
    }};
}

struct Parser<'a> {
    r: Reader<'a>,
    depth: usize,
    /// Inside a `Filter` (nested Filters are skipped).
    in_filter: bool,
}

/// The token id of a tag if it is in `page` (and not a LITERAL), else 0,
/// which matches no known element.
fn id_in(c: &Tag<'_>, page: u8) -> u8 {
    if c.page == page && c.literal.is_none() {
        c.id
    } else {
        0
    }
}

impl<'a> Parser<'a> {
    // ----- spending ------------------------------------------------------

    fn over(&self, e: Exceeded) -> WbxmlError {
        Reader::over(e, self.r.pos())
    }

    /// Charges `bytes` of decoded memory (one allocation).
    fn charge(&mut self, bytes: usize) -> Res<()> {
        self.r.budget.charge(bytes).map_err(|e| self.over(e))
    }

    /// Appends `x` to a list of the model (counted against `max_items`).
    fn push<'v, T>(&mut self, v: &'v mut Vec<T>, x: T) -> Res<&'v mut T> {
        self.r.budget.grow(v, true).map_err(|e| self.over(e))?;
        let n = v.len();
        v.push(x);
        Ok(&mut v[n])
    }

    /// The entry at the end of `v`, created if `v` is empty.
    fn last<'v, T: Default>(&mut self, v: &'v mut Vec<T>) -> Res<&'v mut T> {
        if v.is_empty() {
            return self.push(v, T::default());
        }
        let i = v.len() - 1;
        Ok(&mut v[i])
    }

    /// Appends a command (counted against `max_commands`) and returns it.
    fn push_command<'v>(
        &mut self,
        v: &'v mut Vec<Command<'a>>,
        c: Command<'a>,
        t: &Tag<'_>,
    ) -> Res<&'v mut Command<'a>> {
        let at = |e: Exceeded| Reader::over(e, t.offset);
        self.r.budget.command().map_err(at)?;
        self.r.budget.grow(v, false).map_err(at)?;
        let n = v.len();
        v.push(c);
        Ok(&mut v[n])
    }

    /// Appends a text piece; the first piece stays as it is.
    fn concat(&mut self, acc: &mut Option<Cow<'a, str>>, piece: Cow<'a, str>) -> Res<()> {
        match acc {
            None => *acc = Some(piece),
            Some(prev) => self.r.budget.append_text(prev, &piece).map_err(|e| self.over(e))?,
        }
        Ok(())
    }

    /// Classifies the bytes of a single OPAQUE `Data` payload.
    fn opaque_data<'b>(&mut self, b: &'b [u8]) -> Res<Data<'b>> {
        // An embedded DevInf is a complete WBXML document (version byte
        // 1..=3), decoded on this message's budget: over a cap the message
        // fails, any other error leaves the bytes as they are.
        if matches!(b.first(), Some(0x01..=0x03)) {
            let (d, left) = devinf_with(b, self.r.budget.clone());
            self.r.budget = left;
            match d {
                Ok(d) => {
                    self.charge(std::mem::size_of::<DevInf>())?;
                    return Ok(Data::DevInf(Box::new(d)));
                }
                Err(e @ WbxmlError::TooLarge { .. }) => return Err(e),
                Err(_) => {}
            }
        }
        Ok(match std::str::from_utf8(b) {
            Ok(s) => Data::Text(Cow::Borrowed(s)),
            Err(_) => Data::Binary(Cow::Borrowed(b)),
        })
    }

    fn root(&mut self, name: &'static str, page: u8, id: u8) -> Res<Tag<'a>> {
        let offset = self.r.pos();
        match self.r.next()? {
            Event::Start(t) if id_in(&t, page) == id => Ok(t),
            Event::Start(t) => {
                Err(WbxmlError::UnexpectedToken { offset: t.offset, token: t.token, expected: name })
            }
            Event::Eof => Err(WbxmlError::UnexpectedEof { offset, context: name }),
            _ => Err(WbxmlError::UnexpectedToken { offset, token: self.r.byte_at(offset), expected: name }),
        }
    }

    fn unclosed(&self, t: &Tag<'_>) -> WbxmlError {
        WbxmlError::Unclosed { offset: t.offset, token: t.token, eof: self.r.pos() }
    }

    /// Calls `f` for each child element of `t`; character data between
    /// children is ignored.
    fn children(&mut self, t: Tag<'a>, mut f: impl FnMut(&mut Self, Tag<'a>) -> Res<()>) -> Res<()> {
        if !t.content {
            return Ok(());
        }
        if self.depth >= MAX_DEPTH {
            return Err(WbxmlError::TooDeep { offset: t.offset, token: t.token, limit: MAX_DEPTH });
        }
        self.depth += 1;
        loop {
            match self.r.next()? {
                Event::End => break,
                Event::Start(c) => f(self, c)?,
                Event::Str(_) | Event::Opaque(_) => {}
                Event::Eof => return Err(self.unclosed(&t)),
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// Skips an element with everything inside it, without recursion.
    fn skip(&mut self, t: Tag<'a>) -> Res<()> {
        if !t.content {
            return Ok(());
        }
        let mut open = 1usize;
        while open > 0 {
            match self.r.next()? {
                Event::End => open -= 1,
                Event::Start(c) if c.content => open += 1,
                Event::Eof => return Err(self.unclosed(&t)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Skips a flag element and reports it present.
    fn flag(&mut self, t: Tag<'a>) -> Res<bool> {
        self.skip(t)?;
        Ok(true)
    }

    /// The character content of a leaf element (nested elements skipped).
    fn text(&mut self, t: Tag<'a>) -> Res<Text<'a>> {
        if !t.content {
            return Ok(Cow::Borrowed(""));
        }
        let mut acc = None;
        loop {
            let piece = match self.r.next()? {
                Event::End => break,
                Event::Str(s) => s,
                Event::Opaque(b) => {
                    let s = utf8(b);
                    self.r.budget.charge_text(&s).map_err(|e| self.over(e))?;
                    s
                }
                Event::Start(c) => {
                    self.skip(c)?;
                    continue;
                }
                Event::Eof => return Err(self.unclosed(&t)),
            };
            self.concat(&mut acc, piece)?;
        }
        Ok(acc.unwrap_or(Cow::Borrowed("")))
    }

    fn opt_text(&mut self, t: Tag<'a>) -> Res<Option<Text<'a>>> {
        self.text(t).map(Some)
    }

    // ----- SyncML --------------------------------------------------------

    fn syncml(&mut self, t: Tag<'a>) -> Res<SyncMl<'a>> {
        let mut m = SyncMl::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::SYNC_HDR => m.hdr = p.hdr(c)?,
                sm::SYNC_BODY => p.body(c, &mut m)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(m)
    }

    fn hdr(&mut self, t: Tag<'a>) -> Res<SyncHdr<'a>> {
        let mut h = SyncHdr::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::VER_DTD => h.ver_dtd = p.text(c)?,
                sm::VER_PROTO => h.ver_proto = p.text(c)?,
                sm::SESSION_ID => h.session_id = p.text(c)?,
                sm::MSG_ID => h.msg_id = p.text(c)?,
                sm::TARGET => h.target = p.location(c)?,
                sm::SOURCE => h.source = p.location(c)?,
                sm::RESP_URI => h.resp_uri = p.opt_text(c)?,
                sm::NO_RESP => h.no_resp = p.flag(c)?,
                sm::CRED => h.cred = Some(p.cred(c)?),
                sm::META => p.meta_into(c, h.meta.insert(Meta::default()))?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(h)
    }

    fn body(&mut self, t: Tag<'a>, m: &mut SyncMl<'a>) -> Res<()> {
        self.children(t, |p, c| {
            if id_in(&c, 0) == sm::FINAL {
                m.final_ = p.flag(c)?;
            } else {
                p.command(c, &mut m.body)?;
            }
            Ok(())
        })
    }

    /// Any element at command level: a known command or [`Command::Unknown`],
    /// appended to `out` and filled in place (a `Command` is over a
    /// kilobyte: building it on the stack and moving it costs more than
    /// parsing it).
    ///
    /// Only the containers recurse; every other command is parsed out of
    /// line so this frame, which is on the recursion path, stays small.
    fn command(&mut self, c: Tag<'a>, out: &mut Vec<Command<'a>>) -> Res<()> {
        match id_in(&c, 0) {
            sm::SYNC => fill!(self, out, c, Sync, Sync, sync),
            sm::ATOMIC => fill!(self, out, c, Atomic, Container, container),
            sm::SEQUENCE => fill!(self, out, c, Sequence, Container, container),
            _ => self.simple_command(c, out),
        }
    }

    #[inline(never)]
    fn simple_command(&mut self, c: Tag<'a>, out: &mut Vec<Command<'a>>) -> Res<()> {
        match id_in(&c, 0) {
            sm::ALERT => fill!(self, out, c, Alert, Alert, alert),
            sm::ADD => fill!(self, out, c, Add, ItemCommand, item_command),
            sm::REPLACE => fill!(self, out, c, Replace, ItemCommand, item_command),
            sm::DELETE => fill!(self, out, c, Delete, ItemCommand, item_command),
            sm::COPY => fill!(self, out, c, Copy, ItemCommand, item_command),
            sm::MOVE => fill!(self, out, c, Move, ItemCommand, item_command),
            sm::STATUS => fill!(self, out, c, Status, Status, status),
            sm::PUT => fill!(self, out, c, Put, PutGet, put_get),
            sm::GET => fill!(self, out, c, Get, PutGet, put_get),
            sm::RESULTS => fill!(self, out, c, Results, Results, results),
            sm::MAP => fill!(self, out, c, Map, Map, map),
            sm::EXEC => fill!(self, out, c, Exec, Exec, exec),
            sm::SEARCH => fill!(self, out, c, Search, Search, search),
            _ => {
                let u = self.unknown(c)?;
                self.push_command(out, Command::Unknown(u), &c)?;
                Ok(())
            }
        }
    }

    /// Appends an `Item` to `items` and parses into it in place.
    fn push_item(&mut self, t: Tag<'a>, items: &mut Vec<Item<'a>>) -> Res<()> {
        let it = self.push(items, Item::default())?;
        self.item(t, it)
    }

    #[inline(never)]
    fn unknown(&mut self, t: Tag<'a>) -> Res<UnknownCommand<'a>> {
        let name = match (t.literal, t.page) {
            (Some(lit), _) => self.r.literal_name(lit)?,
            (None, 0) => match sm::name(t.id) {
                Some(n) => Cow::Borrowed(n),
                None => Cow::Owned(format!("Unknown_p0_0x{:02X}", t.id)),
            },
            (None, page) => Cow::Owned(format!("Unknown_p{}_0x{:02X}", page, t.id)),
        };
        if let (None, Cow::Owned(n)) = (t.literal, &name) {
            self.charge(n.capacity())?;
        }
        let mut u = UnknownCommand { name, cmd_id: Cow::Borrowed("") };
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::CMD_ID => u.cmd_id = p.text(c)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(u)
    }

    fn location(&mut self, t: Tag<'a>) -> Res<Location<'a>> {
        let mut l = Location::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::LOC_URI => l.loc_uri = p.text(c)?,
                sm::LOC_NAME => l.loc_name = p.opt_text(c)?,
                // As in the XML codec: a Filter inside a Filter's Field or
                // Record item is meaningless and is skipped.
                sm::FILTER if p.in_filter => p.skip(c)?,
                sm::FILTER => {
                    p.in_filter = true;
                    let f = p.filter(c);
                    p.in_filter = false;
                    let f = f?;
                    p.charge(std::mem::size_of::<Filter>())?;
                    l.filter = Some(Box::new(f));
                }
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(l)
    }

    fn filter(&mut self, t: Tag<'a>) -> Res<Filter<'a>> {
        let mut f = Filter::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::META => p.meta_into(c, f.meta.insert(Meta::default()))?,
                sm::FIELD => f.field = Some(p.wrapped_item(c)?),
                sm::RECORD => f.record = Some(p.wrapped_item(c)?),
                sm::FILTER_TYPE => f.filter_type = p.opt_text(c)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(f)
    }

    /// `Field` / `Record`: an element wrapping one `Item`.
    fn wrapped_item(&mut self, t: Tag<'a>) -> Res<Item<'a>> {
        let mut item = Item::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::ITEM => {
                    item = Item::default(); // the last Item wins
                    p.item(c, &mut item)?
                }
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(item)
    }

    fn cred(&mut self, t: Tag<'a>) -> Res<Cred<'a>> {
        let mut cr = Cred::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::META => p.meta_into(c, cr.meta.insert(Meta::default()))?,
                sm::DATA => cr.data = p.data(c)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(cr)
    }

    /// `Chal`: its `Meta`.
    fn chal(&mut self, t: Tag<'a>) -> Res<Meta<'a>> {
        let mut m = Meta::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::META => m = p.meta(c)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(m)
    }

    fn meta(&mut self, t: Tag<'a>) -> Res<Meta<'a>> {
        let mut m = Meta::default();
        self.meta_into(t, &mut m)?;
        Ok(m)
    }

    fn meta_into(&mut self, t: Tag<'a>, m: &mut Meta<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, mi::PAGE) {
                mi::FORMAT => m.format = p.opt_text(c)?,
                mi::TYPE => m.type_ = p.opt_text(c)?,
                mi::MARK => m.mark = p.opt_text(c)?,
                mi::SIZE => m.size = p.opt_text(c)?,
                mi::ANCHOR => m.anchor = Some(p.anchor(c)?),
                mi::VERSION => m.version = p.opt_text(c)?,
                mi::NEXT_NONCE => m.next_nonce = p.opt_text(c)?,
                mi::MAX_MSG_SIZE => m.max_msg_size = p.opt_text(c)?,
                mi::MAX_OBJ_SIZE => m.max_obj_size = p.opt_text(c)?,
                mi::EMI => {
                    let v = p.text(c)?;
                    p.push(&mut m.emi, v)?;
                }
                mi::MEM => m.mem = Some(p.mem(c)?),
                mi::FIELD_LEVEL => m.field_level = p.flag(c)?,
                // A `MetInf` wrapper: its children are Meta's.
                mi::MET_INF => p.meta_into(c, m)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })
    }

    fn anchor(&mut self, t: Tag<'a>) -> Res<Anchor<'a>> {
        let mut a = Anchor::default();
        self.children(t, |p, c| {
            match id_in(&c, mi::PAGE) {
                mi::LAST => a.last = p.opt_text(c)?,
                mi::NEXT => a.next = p.opt_text(c)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(a)
    }

    fn mem(&mut self, t: Tag<'a>) -> Res<Mem<'a>> {
        let mut m = Mem::default();
        self.children(t, |p, c| {
            match id_in(&c, mi::PAGE) {
                mi::SHARED_MEM => m.shared_mem = p.flag(c)?,
                mi::FREE_MEM => m.free_mem = p.opt_text(c)?,
                mi::FREE_ID => m.free_id = p.opt_text(c)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(m)
    }

    /// `Data`: text, opaque bytes, an embedded DevInf or a MetInf Anchor.
    fn data(&mut self, t: Tag<'a>) -> Res<Data<'a>> {
        if !t.content {
            return Ok(Data::Text(Cow::Borrowed("")));
        }
        if self.depth >= MAX_DEPTH {
            return Err(WbxmlError::TooDeep { offset: t.offset, token: t.token, limit: MAX_DEPTH });
        }
        self.depth += 1;
        let mut single: Option<Data<'a>> = None;
        let mut joined: Option<Vec<u8>> = None;
        let mut anchor = None;
        loop {
            let piece = match self.r.next()? {
                Event::End => break,
                Event::Str(s) => Data::Text(s),
                Event::Opaque(b) => Data::Binary(Cow::Borrowed(b)),
                Event::Start(c) => {
                    if id_in(&c, mi::PAGE) == mi::ANCHOR {
                        anchor = Some(self.anchor(c)?);
                    } else {
                        self.skip(c)?;
                    }
                    continue;
                }
                Event::Eof => return Err(self.unclosed(&t)),
            };
            // Several pieces (rare): concatenate their bytes.
            match (&mut joined, single.take()) {
                (Some(buf), _) => self.append_bytes(buf, piece.as_bytes().unwrap_or_default())?,
                (None, None) => single = Some(piece),
                (None, Some(first)) => {
                    let mut buf = Vec::new();
                    self.append_bytes(&mut buf, first.as_bytes().unwrap_or_default())?;
                    self.append_bytes(&mut buf, piece.as_bytes().unwrap_or_default())?;
                    joined = Some(buf);
                }
            }
        }
        self.depth -= 1;
        if let Some(a) = anchor {
            return Ok(Data::Anchor(a));
        }
        Ok(match (joined, single) {
            // Classified like a single OPAQUE: re-encoded, it becomes one.
            (Some(buf), _) => match self.opaque_data(&buf)? {
                Data::DevInf(d) => {
                    // `into_owned` copies at most the buffer's bytes.
                    self.charge(buf.len())?;
                    Data::DevInf(Box::new(d.into_owned()))
                }
                _ => match String::from_utf8(buf) {
                    Ok(s) => Data::Text(Cow::Owned(s)),
                    Err(e) => Data::Binary(Cow::Owned(e.into_bytes())),
                },
            },
            (None, Some(Data::Binary(Cow::Borrowed(b)))) => self.opaque_data(b)?,
            (None, Some(d)) => d,
            (None, None) => Data::Text(Cow::Borrowed("")),
        })
    }

    /// Appends bytes to a joined `Data` buffer, charging its growth first.
    fn append_bytes(&mut self, buf: &mut Vec<u8>, b: &[u8]) -> Res<()> {
        let need = buf.len().saturating_add(b.len());
        if need > buf.capacity() {
            let new_cap = need.max(buf.capacity().saturating_mul(2));
            self.charge(new_cap)?;
            buf.reserve_exact(new_cap - buf.len());
        }
        buf.extend_from_slice(b);
        Ok(())
    }

    fn item(&mut self, t: Tag<'a>, it: &mut Item<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::TARGET => it.target = Some(p.location(c)?),
                sm::SOURCE => it.source = Some(p.location(c)?),
                sm::SOURCE_PARENT => it.source_parent = Some(p.location(c)?),
                sm::TARGET_PARENT => it.target_parent = Some(p.location(c)?),
                sm::META => p.meta_into(c, it.meta.insert(Meta::default()))?,
                sm::DATA => it.data = Some(p.data(c)?),
                sm::MORE_DATA => it.more_data = p.flag(c)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })
    }

    #[inline(never)]
    fn alert(&mut self, t: Tag<'a>, a: &mut Alert<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::CMD_ID => a.cmd_id = p.text(c)?,
                sm::NO_RESP => a.no_resp = p.flag(c)?,
                sm::CRED => a.cred = Some(p.cred(c)?),
                sm::DATA => a.data = p.opt_text(c)?,
                sm::CORRELATOR => a.correlator = p.opt_text(c)?,
                sm::ITEM => p.push_item(c, &mut a.items)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })
    }

    #[inline(never)]
    fn item_command(&mut self, t: Tag<'a>, ic: &mut ItemCommand<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::CMD_ID => ic.cmd_id = p.text(c)?,
                sm::NO_RESP => ic.no_resp = p.flag(c)?,
                sm::ARCHIVE => ic.archive = p.flag(c)?,
                sm::SFT_DEL => ic.sft_del = p.flag(c)?,
                sm::CRED => ic.cred = Some(p.cred(c)?),
                sm::META => p.meta_into(c, ic.meta.insert(Meta::default()))?,
                sm::ITEM => p.push_item(c, &mut ic.items)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })
    }

    #[inline(never)]
    fn sync(&mut self, t: Tag<'a>, s: &mut Sync<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::CMD_ID => s.cmd_id = p.text(c)?,
                sm::NO_RESP => s.no_resp = p.flag(c)?,
                sm::CRED => s.cred = Some(p.cred(c)?),
                sm::TARGET => s.target = Some(p.location(c)?),
                sm::SOURCE => s.source = Some(p.location(c)?),
                sm::META => p.meta_into(c, s.meta.insert(Meta::default()))?,
                sm::NUMBER_OF_CHANGES => s.number_of_changes = p.opt_text(c)?,
                _ => p.command(c, &mut s.commands)?,
            }
            Ok(())
        })
    }

    #[inline(never)]
    fn container(&mut self, t: Tag<'a>, k: &mut Container<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::CMD_ID => k.cmd_id = p.text(c)?,
                sm::NO_RESP => k.no_resp = p.flag(c)?,
                sm::META => p.meta_into(c, k.meta.insert(Meta::default()))?,
                _ => p.command(c, &mut k.commands)?,
            }
            Ok(())
        })
    }

    #[inline(never)]
    fn status(&mut self, t: Tag<'a>, s: &mut Status<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::CMD_ID => s.cmd_id = p.text(c)?,
                sm::MSG_REF => s.msg_ref = p.opt_text(c)?,
                sm::CMD_REF => s.cmd_ref = p.text(c)?,
                sm::CMD => s.cmd = p.text(c)?,
                sm::TARGET_REF => {
                    let v = p.text(c)?;
                    p.push(&mut s.target_refs, v)?;
                }
                sm::SOURCE_REF => {
                    let v = p.text(c)?;
                    p.push(&mut s.source_refs, v)?;
                }
                sm::CRED => s.cred = Some(p.cred(c)?),
                sm::CHAL => s.chal = Some(p.chal(c)?),
                sm::DATA => s.data = p.text(c)?,
                sm::ITEM => p.push_item(c, &mut s.items)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })
    }

    #[inline(never)]
    fn put_get(&mut self, t: Tag<'a>, pg: &mut PutGet<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::CMD_ID => pg.cmd_id = p.text(c)?,
                sm::NO_RESP => pg.no_resp = p.flag(c)?,
                sm::LANG => pg.lang = p.opt_text(c)?,
                sm::CRED => pg.cred = Some(p.cred(c)?),
                sm::META => p.meta_into(c, pg.meta.insert(Meta::default()))?,
                sm::ITEM => p.push_item(c, &mut pg.items)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })
    }

    #[inline(never)]
    fn results(&mut self, t: Tag<'a>, r: &mut Results<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::CMD_ID => r.cmd_id = p.text(c)?,
                sm::MSG_REF => r.msg_ref = p.opt_text(c)?,
                sm::CMD_REF => r.cmd_ref = p.text(c)?,
                sm::META => p.meta_into(c, r.meta.insert(Meta::default()))?,
                sm::TARGET_REF => r.target_ref = p.opt_text(c)?,
                sm::SOURCE_REF => r.source_ref = p.opt_text(c)?,
                sm::ITEM => p.push_item(c, &mut r.items)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })
    }

    #[inline(never)]
    fn map(&mut self, t: Tag<'a>, m: &mut Map<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::CMD_ID => m.cmd_id = p.text(c)?,
                sm::TARGET => m.target = p.location(c)?,
                sm::SOURCE => m.source = p.location(c)?,
                sm::CRED => m.cred = Some(p.cred(c)?),
                sm::META => p.meta_into(c, m.meta.insert(Meta::default()))?,
                sm::MAP_ITEM => {
                    let v = p.map_item(c)?;
                    p.push(&mut m.map_items, v)?;
                }
                _ => p.skip(c)?,
            }
            Ok(())
        })
    }

    fn map_item(&mut self, t: Tag<'a>) -> Res<MapItem<'a>> {
        let mut mi = MapItem::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::TARGET => mi.target = p.location(c)?,
                sm::SOURCE => mi.source = p.location(c)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(mi)
    }

    #[inline(never)]
    fn exec(&mut self, t: Tag<'a>, e: &mut Exec<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::CMD_ID => e.cmd_id = p.text(c)?,
                sm::NO_RESP => e.no_resp = p.flag(c)?,
                sm::CRED => e.cred = Some(p.cred(c)?),
                sm::META => p.meta_into(c, e.meta.insert(Meta::default()))?,
                sm::CORRELATOR => e.correlator = p.opt_text(c)?,
                sm::ITEM => {
                    e.item = Item::default(); // the last Item wins
                    p.item(c, &mut e.item)?
                }
                _ => p.skip(c)?,
            }
            Ok(())
        })
    }

    #[inline(never)]
    fn search(&mut self, t: Tag<'a>, s: &mut Search<'a>) -> Res<()> {
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                sm::CMD_ID => s.cmd_id = p.text(c)?,
                sm::NO_RESP => s.no_resp = p.flag(c)?,
                sm::NO_RESULTS => s.no_results = p.flag(c)?,
                sm::CRED => s.cred = Some(p.cred(c)?),
                sm::TARGET => s.target = Some(p.location(c)?),
                sm::SOURCE => {
                    let v = p.location(c)?;
                    p.push(&mut s.sources, v)?;
                }
                sm::LANG => s.lang = p.opt_text(c)?,
                sm::META => p.meta_into(c, s.meta.insert(Meta::default()))?,
                sm::DATA => s.data = Some(p.data(c)?),
                _ => p.skip(c)?,
            }
            Ok(())
        })
    }

    // ----- DevInf --------------------------------------------------------

    fn devinf(&mut self, t: Tag<'a>) -> Res<DevInf<'a>> {
        let mut d = DevInf::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                di::VER_DTD => d.ver_dtd = p.text(c)?,
                di::MAN => d.man = p.opt_text(c)?,
                di::MOD => d.model = p.opt_text(c)?,
                di::OEM => d.oem = p.opt_text(c)?,
                di::FW_V => d.fw_v = p.opt_text(c)?,
                di::SW_V => d.sw_v = p.opt_text(c)?,
                di::HW_V => d.hw_v = p.opt_text(c)?,
                di::DEV_ID => d.dev_id = p.text(c)?,
                di::DEV_TYP => d.dev_typ = p.text(c)?,
                di::UTC => d.utc = p.flag(c)?,
                di::SUPPORT_LARGE_OBJS => d.support_large_objs = p.flag(c)?,
                di::SUPPORT_NUMBER_OF_CHANGES => d.support_number_of_changes = p.flag(c)?,
                di::DATA_STORE => {
                    let v = p.data_store(c)?;
                    p.push(&mut d.data_stores, v)?;
                }
                di::CT_CAP => p.ct_cap(c, &mut d.ct_caps)?,
                di::EXT => {
                    let v = p.ext(c)?;
                    p.push(&mut d.exts, v)?;
                }
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(d)
    }

    fn data_store(&mut self, t: Tag<'a>) -> Res<DataStore<'a>> {
        let mut ds = DataStore::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                di::SOURCE_REF => ds.source_ref = p.text(c)?,
                di::DISPLAY_NAME => ds.display_name = p.opt_text(c)?,
                di::MAX_GUID_SIZE => ds.max_guid_size = p.opt_text(c)?,
                di::RX_PREF => ds.rx_pref = Some(p.ctv(c)?),
                di::RX => {
                    let v = p.ctv(c)?;
                    p.push(&mut ds.rx, v)?;
                }
                di::TX_PREF => ds.tx_pref = Some(p.ctv(c)?),
                di::TX => {
                    let v = p.ctv(c)?;
                    p.push(&mut ds.tx, v)?;
                }
                di::CT_CAP => p.ct_cap(c, &mut ds.ct_caps)?,
                di::DS_MEM => ds.ds_mem = Some(p.ds_mem(c)?),
                di::SUPPORT_HIERARCHICAL_SYNC => ds.support_hierarchical_sync = p.flag(c)?,
                di::SYNC_CAP => p.children(c, |p, c| {
                    match id_in(&c, 0) {
                        di::SYNC_TYPE => {
                            let v = p.text(c)?;
                            p.push(&mut ds.sync_cap, v)?;
                        }
                        _ => p.skip(c)?,
                    }
                    Ok(())
                })?,
                di::FILTER_RX => {
                    let v = p.ctv(c)?;
                    p.push(&mut ds.filter_rx, v)?;
                }
                di::FILTER_CAP => {
                    let v = p.filter_cap(c)?;
                    p.push(&mut ds.filter_caps, v)?;
                }
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(ds)
    }

    fn ctv(&mut self, t: Tag<'a>) -> Res<ContentTypeVersion<'a>> {
        let mut v = ContentTypeVersion::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                di::CT_TYPE => v.ct_type = p.text(c)?,
                di::VER_CT => v.ver_ct = p.opt_text(c)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(v)
    }

    fn ds_mem(&mut self, t: Tag<'a>) -> Res<DsMem<'a>> {
        let mut m = DsMem::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                di::SHARED_MEM => m.shared_mem = p.flag(c)?,
                di::MAX_MEM => m.max_mem = p.opt_text(c)?,
                di::MAX_ID => m.max_id = p.opt_text(c)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(m)
    }

    fn filter_cap(&mut self, t: Tag<'a>) -> Res<FilterCap<'a>> {
        let mut f = FilterCap::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                di::CT_TYPE => f.ct_type = p.text(c)?,
                di::VER_CT => f.ver_ct = p.opt_text(c)?,
                di::FILTER_KEYWORD => {
                    let v = p.text(c)?;
                    p.push(&mut f.filter_keywords, v)?;
                }
                di::PROP_NAME => {
                    let v = p.text(c)?;
                    p.push(&mut f.prop_names, v)?;
                }
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(f)
    }

    fn ext(&mut self, t: Tag<'a>) -> Res<Ext<'a>> {
        let mut e = Ext::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                di::X_NAM => e.x_nam = p.text(c)?,
                di::X_VAL => {
                    let v = p.text(c)?;
                    p.push(&mut e.x_vals, v)?;
                }
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(e)
    }

    /// `CTCap`, in either form: DevInf 1.2's (one content type, `Property`
    /// elements) or DevInf 1.0/1.1's flat one, where each `CTType` starts a
    /// new content type, `PropName` a new property and `ParamName` a new
    /// parameter of it; `ValEnum`/`DataType`/`Size`/`DisplayName` belong to
    /// the latest parameter if the property has one, else to the property.
    fn ct_cap(&mut self, t: Tag<'a>, caps: &mut Vec<CtCap<'a>>) -> Res<()> {
        let mut mine: Vec<CtCap<'a>> = Vec::new();
        let mut typed = false;
        let mut in_param = false;
        self.children(t, |p, c| {
            let id = id_in(&c, 0);
            match id {
                di::CT_TYPE => {
                    let v = p.text(c)?;
                    if mine.is_empty() || typed {
                        p.push(&mut mine, CtCap::default())?;
                    }
                    typed = true;
                    in_param = false;
                    p.last(&mut mine)?.ct_type = v;
                }
                di::VER_CT => {
                    let v = p.opt_text(c)?;
                    p.last(&mut mine)?.ver_ct = v;
                }
                di::FIELD_LEVEL => {
                    let on = p.flag(c)?;
                    p.last(&mut mine)?.field_level = on;
                }
                di::PROPERTY => {
                    let prop = p.property(c)?;
                    let cap = p.last(&mut mine)?;
                    p.push(&mut cap.properties, prop)?;
                    in_param = false;
                }
                di::PROP_NAME => {
                    let prop_name = p.text(c)?;
                    let cap = p.last(&mut mine)?;
                    p.push(&mut cap.properties, Property { prop_name, ..Property::default() })?;
                    in_param = false;
                }
                di::PARAM_NAME => {
                    let param_name = p.text(c)?;
                    let cap = p.last(&mut mine)?;
                    let prop = p.last(&mut cap.properties)?;
                    p.push(&mut prop.prop_params, PropParam { param_name, ..PropParam::default() })?;
                    in_param = true;
                }
                // Same grouping as the XML codec: parameter values go to the
                // latest parameter, sizes and flags always to the property
                // (created if the sequence starts without a PropName).
                di::VAL_ENUM | di::DATA_TYPE | di::DISPLAY_NAME if in_param => {
                    let v = p.text(c)?;
                    let cap = p.last(&mut mine)?;
                    let prop = p.last(&mut cap.properties)?;
                    let pp = p.last(&mut prop.prop_params)?;
                    match id {
                        di::VAL_ENUM => {
                            p.push(&mut pp.val_enums, v)?;
                        }
                        di::DATA_TYPE => pp.data_type = Some(v),
                        _ => pp.display_name = Some(v),
                    }
                }
                di::VAL_ENUM | di::DATA_TYPE | di::DISPLAY_NAME | di::MAX_SIZE | di::MAX_OCCUR => {
                    let v = p.text(c)?;
                    let cap = p.last(&mut mine)?;
                    let prop = p.last(&mut cap.properties)?;
                    match id {
                        di::VAL_ENUM => {
                            p.push(&mut prop.val_enums, v)?;
                        }
                        di::DATA_TYPE => prop.data_type = Some(v),
                        di::DISPLAY_NAME => prop.display_name = Some(v),
                        di::MAX_OCCUR => prop.max_occur = Some(v),
                        _ => prop.max_size = Some(v),
                    }
                }
                di::NO_TRUNCATE => {
                    let on = p.flag(c)?;
                    let cap = p.last(&mut mine)?;
                    p.last(&mut cap.properties)?.no_truncate = on;
                }
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        if mine.is_empty() {
            self.push(&mut mine, CtCap::default())?;
        }
        // Moved entry by entry so the shared list is counted and charged.
        for cap in mine {
            self.push(caps, cap)?;
        }
        Ok(())
    }

    fn property(&mut self, t: Tag<'a>) -> Res<Property<'a>> {
        let mut pr = Property::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                di::PROP_NAME => pr.prop_name = p.text(c)?,
                di::DATA_TYPE => pr.data_type = p.opt_text(c)?,
                di::MAX_OCCUR => pr.max_occur = p.opt_text(c)?,
                di::MAX_SIZE => pr.max_size = p.opt_text(c)?,
                di::NO_TRUNCATE => pr.no_truncate = p.flag(c)?,
                di::VAL_ENUM => {
                    let v = p.text(c)?;
                    p.push(&mut pr.val_enums, v)?;
                }
                di::DISPLAY_NAME => pr.display_name = p.opt_text(c)?,
                di::PROP_PARAM => {
                    let v = p.prop_param(c)?;
                    p.push(&mut pr.prop_params, v)?;
                }
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(pr)
    }

    fn prop_param(&mut self, t: Tag<'a>) -> Res<PropParam<'a>> {
        let mut pp = PropParam::default();
        self.children(t, |p, c| {
            match id_in(&c, 0) {
                di::PARAM_NAME => pp.param_name = p.text(c)?,
                di::DATA_TYPE => pp.data_type = p.opt_text(c)?,
                di::VAL_ENUM => {
                    let v = p.text(c)?;
                    p.push(&mut pp.val_enums, v)?;
                }
                di::DISPLAY_NAME => pp.display_name = p.opt_text(c)?,
                _ => p.skip(c)?,
            }
            Ok(())
        })?;
        Ok(pp)
    }
}
