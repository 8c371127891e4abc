//! XML → model. A recursive-descent walk over quick-xml's borrowing event
//! stream: every element function is entered just after its start tag and
//! returns after its end tag. Depth is bounded, so hostile input cannot
//! exhaust the stack, and every element, command, list entry and owned text
//! is spent from the message's [`Budget`], so it cannot exhaust memory
//! either (see [`crate::codec::limits`]).

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::{charset, XmlError};
use crate::codec::limits::{Budget, DecodeLimits, Exceeded};
use crate::model::*;

/// Maximum element nesting of a document; deeper input is rejected with
/// [`XmlError::TooDeep`].
pub const MAX_DEPTH: usize = 64;

/// Maximum nesting of Sync/Atomic/Sequence commands.
pub const MAX_COMMAND_DEPTH: usize = 32;

type Result<T> = std::result::Result<T, XmlError>;

/// Decodes an XML SyncML message.
///
/// Texts borrow from `input` unless unescaping, concatenating several
/// text/CDATA chunks or a non-UTF-8 declared charset (converted to UTF-8,
/// after which every text is owned) required a copy. Text content is taken
/// exactly as written (no trimming, no line-end normalisation). A `<Data>`
/// holding an embedded `DevInf` or MetInf `Anchor` element (or a DevInf
/// document wrapped in CDATA / escaped) becomes [`Data::DevInf`] /
/// [`Data::Anchor`].
///
/// Runs under the default [`DecodeLimits`]; see [`decode_with`].
pub fn decode(input: &[u8]) -> std::result::Result<SyncMl<'_>, XmlError> {
    decode_with(input, &DecodeLimits::default())
}

/// [`decode`] under `limits`: over a cap it fails with
/// [`XmlError::TooLarge`]. (Identifiers are checked by
/// [`crate::codec::decode_with`], not here.)
pub fn decode_with<'b>(input: &'b [u8], limits: &DecodeLimits) -> std::result::Result<SyncMl<'b>, XmlError> {
    let budget = Budget::new(limits, input.len());
    match charset::to_utf8(input)? {
        Cow::Borrowed(bytes) => Parser::new(bytes, budget).syncml(),
        Cow::Owned(bytes) => {
            let budget = converted(budget, &bytes)?;
            Parser::new(&bytes, budget).syncml().map(SyncMl::into_owned)
        }
    }
}

/// Decodes a standalone DevInf document (root element `DevInf`) under the
/// default [`DecodeLimits`].
pub fn decode_devinf(input: &[u8]) -> std::result::Result<DevInf<'_>, XmlError> {
    let budget = Budget::new(&DecodeLimits::default(), input.len());
    match charset::to_utf8(input)? {
        Cow::Borrowed(bytes) => Parser::new(bytes, budget).devinf_root(),
        Cow::Owned(bytes) => {
            let budget = converted(budget, &bytes)?;
            Parser::new(&bytes, budget).devinf_root().map(DevInf::into_owned)
        }
    }
}

/// Charges a charset-converted copy of the input, and the copies
/// `into_owned` later makes of the texts borrowed from it.
fn converted(mut budget: Budget, bytes: &[u8]) -> Result<Budget> {
    let over = |e: Exceeded| XmlError::TooLarge { cap: e.cap, limit: e.limit, offset: 0 };
    budget.charge(bytes.len()).map_err(over)?;
    budget.charge(bytes.len()).map_err(over)?;
    Ok(budget)
}

/// One simplified tokenizer event.
enum Tok<'a> {
    Start(&'a [u8]),
    Empty(&'a [u8]),
    End,
    /// Escaped character data.
    Text(Cow<'a, [u8]>),
    /// CDATA content (taken literally).
    CData(Cow<'a, [u8]>),
    Eof,
}

struct Parser<'a> {
    input: &'a [u8],
    /// The whole input as text when it is valid UTF-8 (checked once, which is
    /// much cheaper than checking every chunk); text chunks are then sliced
    /// out of it. `None`: chunks are checked one by one, so an error can name
    /// the element holding the bad bytes.
    text_src: Option<&'a str>,
    reader: Reader<&'a [u8]>,
    /// Local names of the open elements, for depth limiting and error paths.
    stack: Vec<&'a [u8]>,
    /// Open Sync/Atomic/Sequence commands.
    cmd_depth: usize,
    /// Inside a `Filter` (nested Filters are skipped).
    in_filter: bool,
    /// What this message (and documents nested in it) may still spend.
    budget: Budget,
    /// Command slots [`Parser::reserve_commands`] may still reserve: one per
    /// 200 input bytes in all, so many small Syncs cannot each reserve 128.
    reserve_left: usize,
}

/// Resets `x` to its default (a repeated element replaces the earlier one).
fn reset<T: Default>(x: &mut T) -> &mut T {
    *x = T::default();
    x
}

/// The longest element name an error message quotes (names are untrusted).
const NAME_IN_ERROR: usize = 64;

/// An element name for an error message, cut at [`NAME_IN_ERROR`] bytes.
fn name_for_error(n: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(n.get(..NAME_IN_ERROR).unwrap_or(n))
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], budget: Budget) -> Self {
        let mut reader = Reader::from_reader(input);
        let cfg = reader.config_mut();
        // Texts are significant to the byte (vCard CRLF, leading blanks).
        cfg.trim_text(false);
        // Tolerance and speed: structure comes from our own element stack.
        cfg.check_end_names = false;
        cfg.expand_empty_elements = false;
        Parser {
            input,
            text_src: std::str::from_utf8(input).ok(),
            reader,
            stack: Vec::with_capacity(16),
            cmd_depth: 0,
            in_filter: false,
            budget,
            reserve_left: input.len() / 200,
        }
    }

    // ----- errors -----------------------------------------------------------

    fn path(&self) -> String {
        let mut p = String::new();
        for (i, n) in self.stack.iter().enumerate() {
            if i > 0 {
                p.push('/');
            }
            p.push_str(&name_for_error(n));
        }
        p
    }

    fn syntax(&self, e: quick_xml::Error) -> XmlError {
        XmlError::Syntax { path: self.path(), offset: self.reader.error_position(), message: e.to_string() }
    }

    fn truncated(&self) -> XmlError {
        XmlError::Truncated { path: self.path(), offset: self.reader.buffer_position() }
    }

    fn bad_utf8(&self) -> XmlError {
        XmlError::InvalidUtf8 { path: self.path(), offset: self.reader.buffer_position() }
    }

    fn too_deep(&self) -> XmlError {
        XmlError::TooDeep { path: self.path(), offset: self.reader.buffer_position() }
    }

    fn over(&self, e: Exceeded) -> XmlError {
        XmlError::TooLarge { cap: e.cap, limit: e.limit, offset: self.reader.buffer_position() }
    }

    // ----- spending ---------------------------------------------------------

    /// Charges `bytes` of decoded memory (one allocation).
    fn charge(&mut self, bytes: usize) -> Result<()> {
        self.budget.charge(bytes).map_err(|e| self.over(e))
    }

    /// Appends `x` to a list of the model (counted against `max_items`).
    fn push<'v, T>(&mut self, v: &'v mut Vec<T>, x: T) -> Result<&'v mut T> {
        self.budget.grow(v, true).map_err(|e| self.over(e))?;
        let n = v.len();
        v.push(x);
        Ok(&mut v[n])
    }

    /// Appends a default entry and returns it, so big structs are decoded
    /// in place instead of being moved through return values.
    fn push_default<'v, T: Default>(&mut self, v: &'v mut Vec<T>) -> Result<&'v mut T> {
        self.push(v, T::default())
    }

    /// The entry at the end of `v`, created if `v` is empty.
    fn last<'v, T: Default>(&mut self, v: &'v mut Vec<T>) -> Result<&'v mut T> {
        if v.is_empty() {
            return self.push_default(v);
        }
        let n = v.len() - 1;
        Ok(&mut v[n])
    }

    /// Appends a command (counted against `max_commands`) and returns it.
    fn push_command<'v>(
        &mut self,
        v: &'v mut Vec<Command<'a>>,
        c: Command<'a>,
    ) -> Result<&'v mut Command<'a>> {
        self.budget.command().map_err(|e| self.over(e))?;
        self.budget.grow(v, false).map_err(|e| self.over(e))?;
        let n = v.len();
        v.push(c);
        Ok(&mut v[n])
    }

    /// Appends a text chunk; the first chunk stays borrowed.
    fn push_text(&mut self, acc: &mut Option<Cow<'a, str>>, t: Cow<'a, str>) -> Result<()> {
        match acc {
            None => *acc = Some(t),
            Some(prev) => self.budget.append_text(prev, &t).map_err(|e| self.over(e))?,
        }
        Ok(())
    }

    // ----- tokens -----------------------------------------------------------

    /// The local name of a start tag, borrowed from the input: with a slice
    /// reader the tag name points into the input, so its offset gives an
    /// `'a` slice (`BytesStart` does not hand out its `'a` buffer).
    #[inline(always)]
    fn local_name(&self, e: &BytesStart<'a>) -> Result<&'a [u8]> {
        let qname = e.name();
        let q = qname.as_ref();
        let at = (q.as_ptr() as usize).wrapping_sub(self.input.as_ptr() as usize);
        let q = match at.checked_add(q.len()).and_then(|end| self.input.get(at..end)) {
            Some(s) if s.as_ptr() == q.as_ptr() => s,
            _ => {
                return Err(XmlError::Syntax {
                    path: self.path(),
                    offset: self.reader.buffer_position(),
                    message: "tag name not found in the input".into(),
                })
            }
        };
        Ok(match q.iter().rposition(|&b| b == b':') {
            Some(i) => q.get(i + 1..).unwrap_or(q),
            None => q,
        })
    }

    #[inline(always)]
    fn next(&mut self) -> Result<Tok<'a>> {
        loop {
            let ev = match self.reader.read_event() {
                Ok(ev) => ev,
                Err(e) => return Err(self.syntax(e)),
            };
            return Ok(match ev {
                Event::Start(e) => {
                    self.budget.element().map_err(|x| self.over(x))?;
                    Tok::Start(self.local_name(&e)?)
                }
                Event::Empty(e) => {
                    self.budget.element().map_err(|x| self.over(x))?;
                    Tok::Empty(self.local_name(&e)?)
                }
                Event::End(_) => Tok::End,
                Event::Text(t) => Tok::Text(t.into_inner()),
                Event::CData(t) => Tok::CData(t.into_inner()),
                Event::Eof => Tok::Eof,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => continue,
            });
        }
    }

    #[inline(always)]
    fn open(&mut self, name: &'a [u8]) -> Result<()> {
        self.stack.push(name);
        if self.stack.len() > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(())
    }

    #[inline(always)]
    fn close(&mut self) {
        self.stack.pop();
    }

    /// UTF-8 checks (and unescapes, for `escaped` text) one text chunk.
    #[inline]
    fn chunk(&mut self, raw: Cow<'a, [u8]>, escaped: bool) -> Result<Cow<'a, str>> {
        let s: Cow<'a, str> = match raw {
            Cow::Borrowed(b) => Cow::Borrowed(self.str_of(b)?),
            Cow::Owned(v) => {
                // Not produced by a slice reader; charged all the same.
                self.charge(v.capacity())?;
                Cow::Owned(String::from_utf8(v).map_err(|_| self.bad_utf8())?)
            }
        };
        if escaped && s.as_bytes().contains(&b'&') {
            // Unescaping never lengthens a text: a capacity of its length.
            self.charge(s.len())?;
            Ok(Cow::Owned(unescape(&s)))
        } else {
            Ok(s)
        }
    }

    /// `b` (a slice of the input) as text.
    #[inline]
    fn str_of(&self, b: &'a [u8]) -> Result<&'a str> {
        if let Some(src) = self.text_src {
            let at = (b.as_ptr() as usize).wrapping_sub(src.as_ptr() as usize);
            if let Some(s) = at.checked_add(b.len()).and_then(|end| src.get(at..end)) {
                if s.as_ptr() == b.as_ptr() {
                    return Ok(s);
                }
            }
        }
        std::str::from_utf8(b).map_err(|_| self.bad_utf8())
    }

    /// The next child of the open element, or `None` after its end tag.
    /// A returned non-empty child is open and must be consumed to its end.
    #[inline]
    fn child(&mut self) -> Result<Option<(&'a [u8], bool)>> {
        loop {
            match self.next()? {
                Tok::Start(n) => {
                    self.open(n)?;
                    return Ok(Some((n, false)));
                }
                Tok::Empty(n) => return Ok(Some((n, true))),
                Tok::End => {
                    self.close();
                    return Ok(None);
                }
                // Whitespace between elements (or stray text) is not content.
                Tok::Text(_) | Tok::CData(_) => {}
                Tok::Eof => return Err(self.truncated()),
            }
        }
    }

    /// Skips the rest of an element (iteratively, whatever its depth).
    fn skip(&mut self, empty: bool) -> Result<()> {
        if empty {
            return Ok(());
        }
        let base = self.stack.len();
        loop {
            match self.next()? {
                Tok::Start(n) => self.open(n)?,
                Tok::End => {
                    self.close();
                    if self.stack.len() < base {
                        return Ok(());
                    }
                }
                Tok::Eof => return Err(self.truncated()),
                Tok::Empty(_) | Tok::Text(_) | Tok::CData(_) => {}
            }
        }
    }

    fn flag(&mut self, empty: bool) -> Result<bool> {
        self.skip(empty)?;
        Ok(true)
    }

    /// The text content of a leaf element (child elements are ignored).
    fn text(&mut self, empty: bool) -> Result<Text<'a>> {
        if empty {
            return Ok(Cow::Borrowed(""));
        }
        // Fast path: one text chunk, then the end tag.
        let first = match self.next()? {
            Tok::Text(raw) => self.chunk(raw, true)?,
            Tok::CData(raw) => self.chunk(raw, false)?,
            Tok::End => {
                self.close();
                return Ok(Cow::Borrowed(""));
            }
            tok => return self.text_slow(None, tok),
        };
        match self.next()? {
            Tok::End => {
                self.close();
                Ok(first)
            }
            tok => self.text_slow(Some(first), tok),
        }
    }

    /// The general case of [`Parser::text`], starting with a pending token.
    #[inline(never)]
    fn text_slow(&mut self, mut acc: Option<Cow<'a, str>>, mut tok: Tok<'a>) -> Result<Text<'a>> {
        loop {
            match tok {
                Tok::Text(raw) => {
                    let t = self.chunk(raw, true)?;
                    self.push_text(&mut acc, t)?;
                }
                Tok::CData(raw) => {
                    let t = self.chunk(raw, false)?;
                    self.push_text(&mut acc, t)?;
                }
                Tok::Start(n) => {
                    self.open(n)?;
                    self.skip(false)?;
                }
                Tok::Empty(_) => {}
                Tok::End => {
                    self.close();
                    return Ok(acc.unwrap_or(Cow::Borrowed("")));
                }
                Tok::Eof => return Err(self.truncated()),
            }
            tok = self.next()?;
        }
    }

    fn some_text(&mut self, empty: bool) -> Result<Option<Text<'a>>> {
        self.text(empty).map(Some)
    }

    /// The first element of the document (opened).
    fn root(&mut self, expected: &'static str) -> Result<bool> {
        loop {
            match self.next()? {
                Tok::Start(n) | Tok::Empty(n) if n != expected.as_bytes() => {
                    return Err(XmlError::WrongRoot {
                        found: name_for_error(n).into_owned(),
                        expected,
                        offset: self.reader.buffer_position(),
                    })
                }
                Tok::Start(n) => {
                    self.open(n)?;
                    return Ok(false);
                }
                Tok::Empty(_) => return Ok(true),
                Tok::Text(_) | Tok::CData(_) | Tok::End => {}
                Tok::Eof => return Err(XmlError::NoRoot),
            }
        }
    }

    // ----- SyncML -----------------------------------------------------------

    fn syncml(mut self) -> Result<SyncMl<'a>> {
        let mut m = SyncMl::default();
        if self.root("SyncML")? {
            return Ok(m);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"SyncHdr" => self.hdr(e, reset(&mut m.hdr))?,
                b"SyncBody" => self.body(e, &mut m)?,
                _ => self.skip(e)?,
            }
        }
        Ok(m)
    }

    fn hdr(&mut self, empty: bool, h: &mut SyncHdr<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"VerDTD" => h.ver_dtd = self.text(e)?,
                b"VerProto" => h.ver_proto = self.text(e)?,
                b"SessionID" => h.session_id = self.text(e)?,
                b"MsgID" => h.msg_id = self.text(e)?,
                b"Target" => self.location(e, reset(&mut h.target))?,
                b"Source" => self.location(e, reset(&mut h.source))?,
                b"RespURI" => h.resp_uri = self.some_text(e)?,
                b"NoResp" => h.no_resp = self.flag(e)?,
                b"Cred" => self.cred(e, h.cred.insert(Default::default()))?,
                b"Meta" => self.meta_into(e, h.meta.insert(Meta::default()))?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn body(&mut self, empty: bool, m: &mut SyncMl<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        self.reserve_commands(&mut m.body)?;
        while let Some((n, e)) = self.child()? {
            match n {
                b"Final" => m.final_ = self.flag(e)?,
                _ => self.command(n, e, &mut m.body)?,
            }
        }
        Ok(())
    }

    /// Any element in a command position (SyncBody, Sync, Atomic, Sequence),
    /// decoded in place at the end of `out`.
    ///
    /// Only the nesting commands are handled in this (recursive) frame; the
    /// others go through [`Parser::flat_command`] so that the stack used per
    /// nesting level stays small even in unoptimised builds.
    fn command(&mut self, name: &'a [u8], e: bool, out: &mut Vec<Command<'a>>) -> Result<()> {
        match name {
            b"Sync" => {
                if let Command::Sync(c) = self.push_command(out, Command::Sync(Sync::default()))? {
                    self.sync(e, c)?;
                }
            }
            b"Atomic" | b"Sequence" => {
                let c = Container::default();
                let c = if name == b"Atomic" { Command::Atomic(c) } else { Command::Sequence(c) };
                if let Command::Atomic(c) | Command::Sequence(c) = self.push_command(out, c)? {
                    self.container(e, c)?;
                }
            }
            _ => self.flat_command(name, e, out)?,
        }
        Ok(())
    }

    #[inline(never)]
    fn flat_command(&mut self, name: &'a [u8], e: bool, out: &mut Vec<Command<'a>>) -> Result<()> {
        // A `Command` is over a kilobyte: create it in the Vec, then fill it.
        macro_rules! in_place {
            ($variant:ident($ty:ident), $fill:ident) => {{
                if let Command::$variant(c) = self.push_command(out, Command::$variant($ty::default()))? {
                    self.$fill(e, c)?;
                }
            }};
        }
        match name {
            b"Alert" => in_place!(Alert(Alert), alert),
            b"Add" => in_place!(Add(ItemCommand), item_command),
            b"Replace" => in_place!(Replace(ItemCommand), item_command),
            b"Delete" => in_place!(Delete(ItemCommand), item_command),
            b"Copy" => in_place!(Copy(ItemCommand), item_command),
            b"Move" => in_place!(Move(ItemCommand), item_command),
            b"Status" => in_place!(Status(Status), status),
            b"Put" => in_place!(Put(PutGet), put_get),
            b"Get" => in_place!(Get(PutGet), put_get),
            b"Results" => in_place!(Results(Results), results),
            b"Map" => in_place!(Map(Map), map),
            b"Exec" => in_place!(Exec(Exec), exec),
            b"Search" => in_place!(Search(Search), search),
            _ => {
                let u = self.unknown(name, e)?;
                self.push_command(out, Command::Unknown(u))?;
            }
        }
        Ok(())
    }

    fn unknown(&mut self, name: &'a [u8], empty: bool) -> Result<UnknownCommand<'a>> {
        let name = self.str_of(name)?;
        let mut u = UnknownCommand { name: Cow::Borrowed(name), cmd_id: Cow::Borrowed("") };
        if empty {
            return Ok(u);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => u.cmd_id = self.text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(u)
    }

    /// Growing a Vec of kilobyte-sized commands one doubling at a time copies
    /// and touches about twice the final memory; SyncBody and Sync (the
    /// long lists) start with a guess from the bytes left to parse (a
    /// command rarely takes under ~200 bytes), capped at 128, at the
    /// commands the budget still allows and at what the message as a whole
    /// may reserve ([`Parser::reserve_left`]), and charged.
    fn reserve_commands(&mut self, v: &mut Vec<Command<'a>>) -> Result<()> {
        let pos = usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX);
        let left = self.input.len().saturating_sub(pos);
        let guess = (left / 200).clamp(4, 128).min(self.budget.commands_left()).min(self.reserve_left);
        self.reserve_left -= guess;
        self.budget.reserve(v, guess).map_err(|e| self.over(e))
    }

    fn enter_command(&mut self) -> Result<()> {
        self.cmd_depth += 1;
        if self.cmd_depth > MAX_COMMAND_DEPTH {
            return Err(self.too_deep());
        }
        Ok(())
    }

    fn alert(&mut self, empty: bool, c: &mut Alert<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"NoResp" => c.no_resp = self.flag(e)?,
                b"Cred" => self.cred(e, c.cred.insert(Default::default()))?,
                b"Data" => c.data = self.some_text(e)?,
                b"Correlator" => c.correlator = self.some_text(e)?,
                b"Item" => {
                    let x = self.push_default(&mut c.items)?;
                    self.item(e, x)?
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn item_command(&mut self, empty: bool, c: &mut ItemCommand<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"NoResp" => c.no_resp = self.flag(e)?,
                b"Archive" => c.archive = self.flag(e)?,
                b"SftDel" => c.sft_del = self.flag(e)?,
                b"Cred" => self.cred(e, c.cred.insert(Default::default()))?,
                b"Meta" => self.meta_into(e, c.meta.insert(Meta::default()))?,
                b"Item" => {
                    let x = self.push_default(&mut c.items)?;
                    self.item(e, x)?
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn sync(&mut self, empty: bool, c: &mut Sync<'a>) -> Result<()> {
        // Counted even when empty: re-encoded, an empty command gets content.
        self.enter_command()?;
        if empty {
            self.cmd_depth -= 1;
            return Ok(());
        }
        self.reserve_commands(&mut c.commands)?;
        while let Some((n, e)) = self.child()? {
            if !self.sync_field(n, e, c)? {
                self.command(n, e, &mut c.commands)?;
            }
        }
        self.cmd_depth -= 1;
        Ok(())
    }

    /// A non-command child of Sync; false if `n` is a command.
    #[inline(never)]
    fn sync_field(&mut self, n: &'a [u8], e: bool, c: &mut Sync<'a>) -> Result<bool> {
        match n {
            b"CmdID" => c.cmd_id = self.text(e)?,
            b"NoResp" => c.no_resp = self.flag(e)?,
            b"Cred" => self.cred(e, c.cred.insert(Default::default()))?,
            b"Target" => self.location(e, c.target.insert(Default::default()))?,
            b"Source" => self.location(e, c.source.insert(Default::default()))?,
            b"Meta" => self.meta_into(e, c.meta.insert(Meta::default()))?,
            b"NumberOfChanges" => c.number_of_changes = self.some_text(e)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn container(&mut self, empty: bool, c: &mut Container<'a>) -> Result<()> {
        // Counted even when empty: re-encoded, an empty command gets content.
        self.enter_command()?;
        if empty {
            self.cmd_depth -= 1;
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            if !self.container_field(n, e, c)? {
                self.command(n, e, &mut c.commands)?;
            }
        }
        self.cmd_depth -= 1;
        Ok(())
    }

    /// A non-command child of Atomic/Sequence; false if `n` is a command.
    #[inline(never)]
    fn container_field(&mut self, n: &'a [u8], e: bool, c: &mut Container<'a>) -> Result<bool> {
        match n {
            b"CmdID" => c.cmd_id = self.text(e)?,
            b"NoResp" => c.no_resp = self.flag(e)?,
            b"Meta" => self.meta_into(e, c.meta.insert(Meta::default()))?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn status(&mut self, empty: bool, c: &mut Status<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"MsgRef" => c.msg_ref = self.some_text(e)?,
                b"CmdRef" => c.cmd_ref = self.text(e)?,
                b"Cmd" => c.cmd = self.text(e)?,
                b"TargetRef" => {
                    let t = self.text(e)?;
                    self.push(&mut c.target_refs, t)?;
                }
                b"SourceRef" => {
                    let t = self.text(e)?;
                    self.push(&mut c.source_refs, t)?;
                }
                b"Cred" => self.cred(e, c.cred.insert(Default::default()))?,
                b"Chal" => self.chal(e, c.chal.insert(Default::default()))?,
                b"Data" => c.data = self.text(e)?,
                b"Item" => {
                    let x = self.push_default(&mut c.items)?;
                    self.item(e, x)?
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn put_get(&mut self, empty: bool, c: &mut PutGet<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"NoResp" => c.no_resp = self.flag(e)?,
                b"Lang" => c.lang = self.some_text(e)?,
                b"Cred" => self.cred(e, c.cred.insert(Default::default()))?,
                b"Meta" => self.meta_into(e, c.meta.insert(Meta::default()))?,
                b"Item" => {
                    let x = self.push_default(&mut c.items)?;
                    self.item(e, x)?
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn results(&mut self, empty: bool, c: &mut Results<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"MsgRef" => c.msg_ref = self.some_text(e)?,
                b"CmdRef" => c.cmd_ref = self.text(e)?,
                b"Meta" => self.meta_into(e, c.meta.insert(Meta::default()))?,
                b"TargetRef" => c.target_ref = self.some_text(e)?,
                b"SourceRef" => c.source_ref = self.some_text(e)?,
                b"Item" => {
                    let x = self.push_default(&mut c.items)?;
                    self.item(e, x)?
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn map(&mut self, empty: bool, c: &mut Map<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"Target" => self.location(e, reset(&mut c.target))?,
                b"Source" => self.location(e, reset(&mut c.source))?,
                b"Cred" => self.cred(e, c.cred.insert(Default::default()))?,
                b"Meta" => self.meta_into(e, c.meta.insert(Meta::default()))?,
                b"MapItem" => {
                    let x = self.push_default(&mut c.map_items)?;
                    self.map_item(e, x)?
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn map_item(&mut self, empty: bool, c: &mut MapItem<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Target" => self.location(e, reset(&mut c.target))?,
                b"Source" => self.location(e, reset(&mut c.source))?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn exec(&mut self, empty: bool, c: &mut Exec<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"NoResp" => c.no_resp = self.flag(e)?,
                b"Cred" => self.cred(e, c.cred.insert(Default::default()))?,
                b"Meta" => self.meta_into(e, c.meta.insert(Meta::default()))?,
                b"Correlator" => c.correlator = self.some_text(e)?,
                b"Item" => self.item(e, reset(&mut c.item))?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn search(&mut self, empty: bool, c: &mut Search<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"NoResp" => c.no_resp = self.flag(e)?,
                b"NoResults" => c.no_results = self.flag(e)?,
                b"Cred" => self.cred(e, c.cred.insert(Default::default()))?,
                b"Target" => self.location(e, c.target.insert(Default::default()))?,
                b"Source" => {
                    let x = self.push_default(&mut c.sources)?;
                    self.location(e, x)?
                }
                b"Lang" => c.lang = self.some_text(e)?,
                b"Meta" => self.meta_into(e, c.meta.insert(Meta::default()))?,
                b"Data" => c.data = Some(self.data(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    // ----- common elements --------------------------------------------------

    fn location(&mut self, empty: bool, l: &mut Location<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"LocURI" => l.loc_uri = self.text(e)?,
                b"LocName" => l.loc_name = self.some_text(e)?,
                // A Filter inside a Filter's Field/Record item is meaningless
                // and the only unbounded nesting below a command: skipped.
                b"Filter" if self.in_filter => self.skip(e)?,
                b"Filter" => {
                    self.in_filter = true;
                    let r = match self.charge(std::mem::size_of::<Filter>()) {
                        Ok(()) => self.filter(e, l.filter.insert(Box::default())),
                        Err(x) => Err(x),
                    };
                    self.in_filter = false;
                    r?
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn filter(&mut self, empty: bool, f: &mut Filter<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Meta" => self.meta_into(e, f.meta.insert(Meta::default()))?,
                b"Field" => self.item_wrapper(e, f.field.insert(Default::default()))?,
                b"Record" => self.item_wrapper(e, f.record.insert(Default::default()))?,
                b"FilterType" => f.filter_type = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    /// `Field` / `Record`: a wrapper around one `Item`.
    fn item_wrapper(&mut self, empty: bool, it: &mut Item<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Item" => self.item(e, reset(it))?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn cred(&mut self, empty: bool, c: &mut Cred<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Meta" => self.meta_into(e, c.meta.insert(Meta::default()))?,
                b"Data" => c.data = self.data(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    /// `Chal`: only its `Meta` is kept.
    fn chal(&mut self, empty: bool, m: &mut Meta<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Meta" => self.meta_into(e, reset(m))?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn item(&mut self, empty: bool, it: &mut Item<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Target" => self.location(e, it.target.insert(Default::default()))?,
                b"Source" => self.location(e, it.source.insert(Default::default()))?,
                b"SourceParent" => self.location(e, it.source_parent.insert(Default::default()))?,
                b"TargetParent" => self.location(e, it.target_parent.insert(Default::default()))?,
                b"Meta" => self.meta_into(e, it.meta.insert(Meta::default()))?,
                b"Data" => it.data = Some(self.data(e)?),
                b"MoreData" => it.more_data = self.flag(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    /// MetInf children, matched by local name whatever their namespace.
    fn meta_into(&mut self, empty: bool, m: &mut Meta<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Format" => m.format = self.some_text(e)?,
                b"Type" => m.type_ = self.some_text(e)?,
                b"Mark" => m.mark = self.some_text(e)?,
                b"Size" => m.size = self.some_text(e)?,
                b"Anchor" => self.anchor(e, m.anchor.insert(Default::default()))?,
                b"Version" => m.version = self.some_text(e)?,
                b"NextNonce" => m.next_nonce = self.some_text(e)?,
                b"MaxMsgSize" => m.max_msg_size = self.some_text(e)?,
                b"MaxObjSize" => m.max_obj_size = self.some_text(e)?,
                b"EMI" => {
                    let t = self.text(e)?;
                    self.push(&mut m.emi, t)?;
                }
                b"Mem" => self.mem(e, m.mem.insert(Default::default()))?,
                b"FieldLevel" => m.field_level = self.flag(e)?,
                // SyncML 1.0 senders may wrap the MetInf elements.
                b"MetInf" => self.meta_into(e, m)?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn anchor(&mut self, empty: bool, a: &mut Anchor<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Last" => a.last = self.some_text(e)?,
                b"Next" => a.next = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn mem(&mut self, empty: bool, m: &mut Mem<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"SharedMem" => m.shared_mem = self.flag(e)?,
                b"FreeMem" => m.free_mem = self.some_text(e)?,
                b"FreeID" => m.free_id = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    /// `Data`: text/CDATA, or an embedded DevInf / MetInf Anchor element.
    fn data(&mut self, empty: bool) -> Result<Data<'a>> {
        if empty {
            return Ok(Data::Text(Cow::Borrowed("")));
        }
        let mut acc = None;
        let mut embedded = None;
        loop {
            match self.next()? {
                Tok::Text(raw) => {
                    let t = self.chunk(raw, true)?;
                    self.push_text(&mut acc, t)?;
                }
                Tok::CData(raw) => {
                    let t = self.chunk(raw, false)?;
                    self.push_text(&mut acc, t)?;
                }
                Tok::Start(n) => {
                    self.open(n)?;
                    match n {
                        b"DevInf" => {
                            self.charge(std::mem::size_of::<DevInf>())?;
                            let mut d = Box::<DevInf>::default();
                            self.devinf(false, &mut d)?;
                            embedded = Some(Data::DevInf(d));
                        }
                        b"Anchor" => {
                            let mut a = Anchor::default();
                            self.anchor(false, &mut a)?;
                            embedded = Some(Data::Anchor(a));
                        }
                        _ => self.skip(false)?,
                    }
                }
                Tok::Empty(n) => match n {
                    b"DevInf" => {
                        self.charge(std::mem::size_of::<DevInf>())?;
                        embedded = Some(Data::DevInf(Box::default()))
                    }
                    b"Anchor" => embedded = Some(Data::Anchor(Anchor::default())),
                    _ => {}
                },
                Tok::End => {
                    self.close();
                    break;
                }
                Tok::Eof => return Err(self.truncated()),
            }
        }
        if let Some(d) = embedded {
            return Ok(d);
        }
        let text = acc.unwrap_or(Cow::Borrowed(""));
        // A DevInf document wrapped in CDATA or escaped (digest §11.1).
        if looks_like_markup(&text) {
            // The nested document spends from this message's budget; over
            // a cap the message fails, any other error keeps the text.
            match &text {
                Cow::Borrowed(s) => {
                    if let Some(d) = self.nested_devinf(s.as_bytes())? {
                        self.charge(std::mem::size_of::<DevInf>())?;
                        return Ok(Data::DevInf(Box::new(d)));
                    }
                }
                Cow::Owned(s) => {
                    if let Some(d) = self.nested_devinf(s.as_bytes())? {
                        // `into_owned` copies at most the text's bytes.
                        self.charge(s.len())?;
                        self.charge(std::mem::size_of::<DevInf>())?;
                        return Ok(Data::DevInf(Box::new(d.into_owned())));
                    }
                }
            }
        }
        Ok(Data::Text(text))
    }

    // ----- DevInf -----------------------------------------------------------

    /// A DevInf document inside a text, decoded on this message's budget:
    /// `None` if it is not one, an error only over a cap.
    fn nested_devinf<'s>(&mut self, s: &'s [u8]) -> Result<Option<DevInf<'s>>> {
        let mut sub = Parser::new(s, self.budget.clone());
        let r = sub.devinf_doc();
        self.budget = sub.budget;
        match r {
            Ok(d) => Ok(Some(d)),
            Err(e @ XmlError::TooLarge { .. }) => Err(e),
            Err(_) => Ok(None),
        }
    }

    fn devinf_root(mut self) -> Result<DevInf<'a>> {
        self.devinf_doc()
    }

    fn devinf_doc(&mut self) -> Result<DevInf<'a>> {
        let empty = self.root("DevInf")?;
        let mut d = DevInf::default();
        self.devinf(empty, &mut d)?;
        Ok(d)
    }

    fn devinf(&mut self, empty: bool, d: &mut DevInf<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"VerDTD" => d.ver_dtd = self.text(e)?,
                b"Man" => d.man = self.some_text(e)?,
                b"Mod" => d.model = self.some_text(e)?,
                b"OEM" => d.oem = self.some_text(e)?,
                b"FwV" => d.fw_v = self.some_text(e)?,
                b"SwV" => d.sw_v = self.some_text(e)?,
                b"HwV" => d.hw_v = self.some_text(e)?,
                b"DevID" => d.dev_id = self.text(e)?,
                b"DevTyp" => d.dev_typ = self.text(e)?,
                b"UTC" => d.utc = self.flag(e)?,
                b"SupportLargeObjs" => d.support_large_objs = self.flag(e)?,
                b"SupportNumberOfChanges" => d.support_number_of_changes = self.flag(e)?,
                b"DataStore" => {
                    let x = self.push_default(&mut d.data_stores)?;
                    self.data_store(e, x)?
                }
                b"CTCap" => self.ct_cap(e, &mut d.ct_caps)?,
                b"Ext" => {
                    let x = self.push_default(&mut d.exts)?;
                    self.ext(e, x)?
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn data_store(&mut self, empty: bool, s: &mut DataStore<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"SourceRef" => s.source_ref = self.text(e)?,
                b"DisplayName" => s.display_name = self.some_text(e)?,
                b"MaxGUIDSize" => s.max_guid_size = self.some_text(e)?,
                b"Rx-Pref" => self.ctv(e, s.rx_pref.insert(Default::default()))?,
                b"Rx" => {
                    let x = self.push_default(&mut s.rx)?;
                    self.ctv(e, x)?
                }
                b"Tx-Pref" => self.ctv(e, s.tx_pref.insert(Default::default()))?,
                b"Tx" => {
                    let x = self.push_default(&mut s.tx)?;
                    self.ctv(e, x)?
                }
                b"CTCap" => self.ct_cap(e, &mut s.ct_caps)?,
                b"DSMem" => self.ds_mem(e, s.ds_mem.insert(Default::default()))?,
                b"SupportHierarchicalSync" => s.support_hierarchical_sync = self.flag(e)?,
                b"SyncCap" => self.sync_cap(e, &mut s.sync_cap)?,
                b"Filter-Rx" => {
                    let x = self.push_default(&mut s.filter_rx)?;
                    self.ctv(e, x)?
                }
                b"FilterCap" => {
                    let x = self.push_default(&mut s.filter_caps)?;
                    self.filter_cap(e, x)?
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn ctv(&mut self, empty: bool, c: &mut ContentTypeVersion<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CTType" => c.ct_type = self.text(e)?,
                b"VerCT" => c.ver_ct = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn sync_cap(&mut self, empty: bool, out: &mut Vec<Text<'a>>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"SyncType" => {
                    let t = self.text(e)?;
                    self.push(out, t)?;
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn ds_mem(&mut self, empty: bool, m: &mut DsMem<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"SharedMem" => m.shared_mem = self.flag(e)?,
                b"MaxMem" => m.max_mem = self.some_text(e)?,
                b"MaxID" => m.max_id = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn filter_cap(&mut self, empty: bool, f: &mut FilterCap<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CTType" => f.ct_type = self.text(e)?,
                b"VerCT" => f.ver_ct = self.some_text(e)?,
                b"FilterKeyword" => {
                    let t = self.text(e)?;
                    self.push(&mut f.filter_keywords, t)?;
                }
                b"PropName" => {
                    let t = self.text(e)?;
                    self.push(&mut f.prop_names, t)?;
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn ext(&mut self, empty: bool, x: &mut Ext<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"XNam" => x.x_nam = self.text(e)?,
                b"XVal" => {
                    let t = self.text(e)?;
                    self.push(&mut x.x_vals, t)?;
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    /// One `CTCap` element, in either form: DevInf 1.2 (one content type,
    /// `Property` elements) or DevInf 1.0/1.1 (flat: several `CTType`s, each
    /// followed by `PropName`s, each followed by its values and `ParamName`s).
    /// The flat sequence is grouped into the 1.2 shape.
    fn ct_cap(&mut self, empty: bool, out: &mut Vec<CtCap<'a>>) -> Result<()> {
        self.push_default(out)?;
        if empty {
            return Ok(());
        }
        let mut seen_type = false;
        // Flat form: values after a ParamName belong to that parameter.
        let mut in_param = false;
        while let Some((n, e)) = self.child()? {
            let cap = self.last(out)?;
            match n {
                b"CTType" => {
                    let t = self.text(e)?;
                    if seen_type {
                        self.push_default(out)?;
                    }
                    self.last(out)?.ct_type = t;
                    seen_type = true;
                    in_param = false;
                }
                b"VerCT" => cap.ver_ct = self.some_text(e)?,
                b"FieldLevel" => cap.field_level = self.flag(e)?,
                b"Property" => {
                    let p = self.push_default(&mut cap.properties)?;
                    self.property(e, p)?;
                    in_param = false;
                }
                b"PropName" => {
                    let name = self.text(e)?;
                    self.push(&mut cap.properties, Property { prop_name: name, ..Property::default() })?;
                    in_param = false;
                }
                b"ParamName" => {
                    let name = self.text(e)?;
                    let prop = self.last(&mut cap.properties)?;
                    self.push(&mut prop.prop_params, PropParam { param_name: name, ..PropParam::default() })?;
                    in_param = true;
                }
                b"ValEnum" | b"DataType" | b"DisplayName" if in_param => {
                    let v = self.text(e)?;
                    let prop = self.last(&mut cap.properties)?;
                    let param = self.last(&mut prop.prop_params)?;
                    match n {
                        b"ValEnum" => {
                            self.push(&mut param.val_enums, v)?;
                        }
                        b"DataType" => param.data_type = Some(v),
                        _ => param.display_name = Some(v),
                    }
                }
                b"ValEnum" | b"DataType" | b"DisplayName" | b"Size" | b"MaxSize" | b"MaxOccur" => {
                    let v = self.text(e)?;
                    let prop = self.last(&mut cap.properties)?;
                    match n {
                        b"ValEnum" => {
                            self.push(&mut prop.val_enums, v)?;
                        }
                        b"DataType" => prop.data_type = Some(v),
                        b"DisplayName" => prop.display_name = Some(v),
                        b"MaxOccur" => prop.max_occur = Some(v),
                        _ => prop.max_size = Some(v),
                    }
                }
                b"NoTruncate" => {
                    let on = self.flag(e)?;
                    self.last(&mut cap.properties)?.no_truncate = on;
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn property(&mut self, empty: bool, p: &mut Property<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"PropName" => p.prop_name = self.text(e)?,
                b"DataType" => p.data_type = self.some_text(e)?,
                b"MaxOccur" => p.max_occur = self.some_text(e)?,
                // DevInf 1.1 calls it Size (same WBXML token).
                b"MaxSize" | b"Size" => p.max_size = self.some_text(e)?,
                b"NoTruncate" => p.no_truncate = self.flag(e)?,
                b"ValEnum" => {
                    let t = self.text(e)?;
                    self.push(&mut p.val_enums, t)?;
                }
                b"DisplayName" => p.display_name = self.some_text(e)?,
                b"PropParam" => {
                    let x = self.push_default(&mut p.prop_params)?;
                    self.prop_param(e, x)?
                }
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn prop_param(&mut self, empty: bool, p: &mut PropParam<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"ParamName" => p.param_name = self.text(e)?,
                b"DataType" => p.data_type = self.some_text(e)?,
                b"ValEnum" => {
                    let t = self.text(e)?;
                    self.push(&mut p.val_enums, t)?;
                }
                b"DisplayName" => p.display_name = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }
}

/// Whether Data text could be a wrapped XML document (starts with `<`).
fn looks_like_markup(s: &str) -> bool {
    s.trim_start().starts_with('<')
}

/// Resolves the predefined entities and character references. Unknown or
/// malformed references are kept literally (tolerance beats rejection here).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        // Entity names are short; do not scan far for a ';'.
        let resolved = after
            .as_bytes()
            .iter()
            .take(12)
            .position(|&b| b == b';')
            .and_then(|semi| resolve_entity(&after[..semi]).map(|c| (c, semi)));
        match resolved {
            Some((c, semi)) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn resolve_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse::<u32>().ok()?,
            };
            char::from_u32(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_entities() {
        assert_eq!(unescape("a&lt;b&gt;&amp;&#13;&#x41;&quot;&apos;"), "a<b>&\rA\"'");
        assert_eq!(unescape("a & b &nbsp; &#xZZ; &"), "a & b &nbsp; &#xZZ; &");
        assert_eq!(unescape("&#1114112;é"), "&#1114112;é");
    }

    use crate::codec::{Cap, DecodeLimits};

    /// A message whose SyncBody holds `body`.
    fn msg(body: &str) -> String {
        format!(
            "<SyncML><SyncHdr><VerDTD>1.2</VerDTD><SessionID>1</SessionID><MsgID>1</MsgID>\
             <Target><LocURI>http://x/sync</LocURI></Target><Source><LocURI>dev</LocURI></Source>\
             </SyncHdr><SyncBody>{body}<Final/></SyncBody></SyncML>"
        )
    }

    fn cap_of(r: std::result::Result<SyncMl<'_>, XmlError>) -> Option<Cap> {
        match r {
            Err(XmlError::TooLarge { cap, .. }) => Some(cap),
            _ => None,
        }
    }

    #[test]
    fn four_megabytes_of_empty_unknown_elements_stop_at_the_command_cap() {
        let doc = msg(&"<a/>".repeat(1 << 20));
        let t = std::time::Instant::now();
        let e = decode(doc.as_bytes()).unwrap_err();
        assert!(
            matches!(e, XmlError::TooLarge { cap: Cap::Commands, limit: 10_000, offset } if offset < 50_000),
            "{e}"
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "{:?}", t.elapsed());
        // Inside an Item they are skipped, yet count as elements.
        let doc = msg(&format!("<Add><Item>{}</Item></Add>", "<a/>".repeat(1 << 20)));
        assert_eq!(cap_of(decode(doc.as_bytes())), Some(Cap::Elements));
        let small = DecodeLimits { max_elements: 100, ..DecodeLimits::default() };
        // 11 elements of header and body structure (Final included), 2 of Add/Item.
        let n = |k: usize| msg(&format!("<Add><Item>{}</Item></Add>", "<a/>".repeat(k)));
        assert!(decode_with(n(87).as_bytes(), &small).is_ok());
        assert_eq!(cap_of(decode_with(n(88).as_bytes(), &small)), Some(Cap::Elements));
    }

    #[test]
    fn commands_items_and_memory_are_capped() {
        let limits = DecodeLimits { max_commands: 50, max_items: 20, ..DecodeLimits::default() };
        let adds = |n: usize| msg(&"<Add><Item/></Add>".repeat(n));
        assert_eq!(decode_with(adds(50).as_bytes(), &limits).map(|m| m.body.len()), Ok(50));
        assert_eq!(cap_of(decode_with(adds(51).as_bytes(), &limits)), Some(Cap::Commands));
        // Nested commands count too.
        let nested = msg(&format!("<Sync>{}</Sync>", "<Add/>".repeat(50)));
        assert_eq!(cap_of(decode_with(nested.as_bytes(), &limits)), Some(Cap::Commands));
        let items = |n: usize| msg(&format!("<Add>{}</Add>", "<Item/>".repeat(n)));
        assert!(decode_with(items(20).as_bytes(), &limits).is_ok());
        assert_eq!(cap_of(decode_with(items(21).as_bytes(), &limits)), Some(Cap::Items));
        // Any list: Status refs, Map items.
        let refs = msg(&format!("<Status>{}</Status>", "<SourceRef>1</SourceRef>".repeat(21)));
        assert_eq!(cap_of(decode_with(refs.as_bytes(), &limits)), Some(Cap::Items));
        let map = msg(&format!("<Map>{}</Map>", "<MapItem/>".repeat(21)));
        assert_eq!(cap_of(decode_with(map.as_bytes(), &limits)), Some(Cap::Items));
        // Memory: 5,000 one-item Adds fit the default, not a 1 MiB budget.
        let doc = adds(5_000);
        assert_eq!(decode(doc.as_bytes()).map(|m| m.body.len()), Ok(5_000));
        let tight = DecodeLimits { memory_max: 1 << 20, ..DecodeLimits::default() };
        assert_eq!(cap_of(decode_with(doc.as_bytes(), &tight)), Some(Cap::Memory));
    }

    #[test]
    fn nested_devinf_spends_the_message_budget() {
        // A DevInf wrapped in CDATA is decoded on the message's budget.
        let devinf = format!("<DevInf><DataStore>{}</DataStore></DevInf>", "<Rx/>".repeat(30));
        let doc = msg(&format!("<Put><Item><Data><![CDATA[{devinf}]]></Data></Item></Put>"));
        let m = decode(doc.as_bytes()).expect("decodes");
        match &m.body[0] {
            Command::Put(p) => assert!(matches!(p.items[0].data, Some(Data::DevInf(_)))),
            other => panic!("{other:?}"),
        }
        let limits = DecodeLimits { max_items: 20, ..DecodeLimits::default() };
        assert_eq!(cap_of(decode_with(doc.as_bytes(), &limits)), Some(Cap::Items));
    }

    #[test]
    fn long_names_are_cut_in_errors() {
        let name = "n".repeat(100_000);
        let e = decode(format!("<{name}/>").as_bytes()).unwrap_err();
        assert!(e.to_string().len() < 200, "{}", e.to_string().len());
        let deep = format!("<SyncML>{}", format!("<{name}>").repeat(70));
        let e = decode(deep.as_bytes()).unwrap_err();
        assert!(matches!(e, XmlError::TooDeep { .. }), "{e}");
        assert!(e.to_string().len() < 64 * 70, "{}", e.to_string().len());
    }
}
