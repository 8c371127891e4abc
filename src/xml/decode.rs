//! XML → model. A recursive-descent walk over quick-xml's borrowing event
//! stream: every element function is entered just after its start tag and
//! returns after its end tag. Depth is bounded, so hostile input cannot
//! exhaust the stack.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::{charset, XmlError};
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
pub fn decode(input: &[u8]) -> std::result::Result<SyncMl<'_>, XmlError> {
    match charset::to_utf8(input)? {
        Cow::Borrowed(bytes) => Parser::new(bytes).syncml(),
        Cow::Owned(bytes) => Parser::new(&bytes).syncml().map(SyncMl::into_owned),
    }
}

/// Decodes a standalone DevInf document (root element `DevInf`).
pub fn decode_devinf(input: &[u8]) -> std::result::Result<DevInf<'_>, XmlError> {
    match charset::to_utf8(input)? {
        Cow::Borrowed(bytes) => Parser::new(bytes).devinf_root(),
        Cow::Owned(bytes) => Parser::new(&bytes).devinf_root().map(DevInf::into_owned),
    }
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
    reader: Reader<&'a [u8]>,
    /// Local names of the open elements, for depth limiting and error paths.
    stack: Vec<&'a [u8]>,
    /// Open Sync/Atomic/Sequence commands.
    cmd_depth: usize,
}

/// Appends a text chunk; the first chunk stays borrowed.
fn push_text<'a>(acc: &mut Option<Cow<'a, str>>, t: Cow<'a, str>) {
    match acc {
        None => *acc = Some(t),
        Some(prev) => prev.to_mut().push_str(&t),
    }
}

/// The element at the end of `v`, created if `v` is empty.
fn last<T: Default>(v: &mut Vec<T>) -> &mut T {
    if v.is_empty() {
        v.push(T::default());
    }
    let n = v.len() - 1;
    &mut v[n]
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Self {
        let mut reader = Reader::from_reader(input);
        let cfg = reader.config_mut();
        // Texts are significant to the byte (vCard CRLF, leading blanks).
        cfg.trim_text(false);
        // Tolerance and speed: structure comes from our own element stack.
        cfg.check_end_names = false;
        cfg.expand_empty_elements = false;
        Parser { input, reader, stack: Vec::with_capacity(16), cmd_depth: 0 }
    }

    // ----- errors -----------------------------------------------------------

    fn path(&self) -> String {
        let mut p = String::new();
        for (i, n) in self.stack.iter().enumerate() {
            if i > 0 {
                p.push('/');
            }
            p.push_str(&String::from_utf8_lossy(n));
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

    // ----- tokens -----------------------------------------------------------

    /// The local name of a start tag, borrowed from the input. quick-xml's
    /// `BytesStart` does not hand out its `'a` buffer, so the name is located
    /// in the input from the reader position (the tag ends just before it).
    fn local_name(&self, e: &BytesStart<'a>, empty: bool) -> Result<&'a [u8]> {
        let qname = e.name();
        let qname = qname.as_ref();
        let end = usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX);
        // `>` or `/>` closes the tag; the content precedes it.
        let content_end = end.saturating_sub(if empty { 2 } else { 1 });
        let start = content_end.saturating_sub(e.len());
        let q = match self.input.get(start..start + qname.len()) {
            Some(q) if q == qname => q,
            _ => {
                return Err(XmlError::Syntax {
                    path: self.path(),
                    offset: self.reader.buffer_position(),
                    message: "cannot locate tag name in input".into(),
                })
            }
        };
        Ok(match q.iter().rposition(|&b| b == b':') {
            Some(i) => q.get(i + 1..).unwrap_or(q),
            None => q,
        })
    }

    fn next(&mut self) -> Result<Tok<'a>> {
        loop {
            let ev = match self.reader.read_event() {
                Ok(ev) => ev,
                Err(e) => return Err(self.syntax(e)),
            };
            return Ok(match ev {
                Event::Start(e) => Tok::Start(self.local_name(&e, false)?),
                Event::Empty(e) => Tok::Empty(self.local_name(&e, true)?),
                Event::End(_) => Tok::End,
                Event::Text(t) => Tok::Text(t.into_inner()),
                Event::CData(t) => Tok::CData(t.into_inner()),
                Event::Eof => Tok::Eof,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => continue,
            });
        }
    }

    fn open(&mut self, name: &'a [u8]) -> Result<()> {
        self.stack.push(name);
        if self.stack.len() > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(())
    }

    fn close(&mut self) {
        self.stack.pop();
    }

    /// UTF-8 checks (and unescapes, for `escaped` text) one text chunk.
    fn chunk(&self, raw: Cow<'a, [u8]>, escaped: bool) -> Result<Cow<'a, str>> {
        let s: Cow<'a, str> = match raw {
            Cow::Borrowed(b) => Cow::Borrowed(std::str::from_utf8(b).map_err(|_| self.bad_utf8())?),
            Cow::Owned(v) => Cow::Owned(String::from_utf8(v).map_err(|_| self.bad_utf8())?),
        };
        if escaped && s.as_bytes().contains(&b'&') {
            Ok(Cow::Owned(unescape(&s)))
        } else {
            Ok(s)
        }
    }

    /// The next child of the open element, or `None` after its end tag.
    /// A returned non-empty child is open and must be consumed to its end.
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
        let mut acc = None;
        loop {
            match self.next()? {
                Tok::Text(raw) => {
                    let t = self.chunk(raw, true)?;
                    push_text(&mut acc, t);
                }
                Tok::CData(raw) => {
                    let t = self.chunk(raw, false)?;
                    push_text(&mut acc, t);
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
                        found: String::from_utf8_lossy(n).into_owned(),
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
                b"SyncHdr" => m.hdr = self.hdr(e)?,
                b"SyncBody" => self.body(e, &mut m)?,
                _ => self.skip(e)?,
            }
        }
        Ok(m)
    }

    fn hdr(&mut self, empty: bool) -> Result<SyncHdr<'a>> {
        let mut h = SyncHdr::default();
        if empty {
            return Ok(h);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"VerDTD" => h.ver_dtd = self.text(e)?,
                b"VerProto" => h.ver_proto = self.text(e)?,
                b"SessionID" => h.session_id = self.text(e)?,
                b"MsgID" => h.msg_id = self.text(e)?,
                b"Target" => h.target = self.location(e)?,
                b"Source" => h.source = self.location(e)?,
                b"RespURI" => h.resp_uri = self.some_text(e)?,
                b"NoResp" => h.no_resp = self.flag(e)?,
                b"Cred" => h.cred = Some(self.cred(e)?),
                b"Meta" => h.meta = Some(self.meta(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(h)
    }

    fn body(&mut self, empty: bool, m: &mut SyncMl<'a>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Final" => m.final_ = self.flag(e)?,
                _ => {
                    let c = self.command(n, e)?;
                    m.body.push(c);
                }
            }
        }
        Ok(())
    }

    /// Any element in a command position (SyncBody, Sync, Atomic, Sequence).
    ///
    /// Only the nesting commands are handled in this (recursive) frame; the
    /// others go through [`Parser::flat_command`] so that the stack used per
    /// nesting level stays small even in unoptimised builds (a `Command` is
    /// over a kilobyte and every match arm would otherwise keep its own
    /// temporaries here).
    fn command(&mut self, name: &'a [u8], e: bool) -> Result<Command<'a>> {
        match name {
            b"Sync" => Ok(Command::Sync(self.sync(e)?)),
            b"Atomic" => Ok(Command::Atomic(self.container(e)?)),
            b"Sequence" => Ok(Command::Sequence(self.container(e)?)),
            _ => self.flat_command(name, e),
        }
    }

    #[inline(never)]
    fn flat_command(&mut self, name: &'a [u8], e: bool) -> Result<Command<'a>> {
        Ok(match name {
            b"Alert" => Command::Alert(self.alert(e)?),
            b"Add" => Command::Add(self.item_command(e)?),
            b"Replace" => Command::Replace(self.item_command(e)?),
            b"Delete" => Command::Delete(self.item_command(e)?),
            b"Copy" => Command::Copy(self.item_command(e)?),
            b"Move" => Command::Move(self.item_command(e)?),
            b"Status" => Command::Status(self.status(e)?),
            b"Put" => Command::Put(self.put_get(e)?),
            b"Get" => Command::Get(self.put_get(e)?),
            b"Results" => Command::Results(self.results(e)?),
            b"Map" => Command::Map(self.map(e)?),
            b"Exec" => Command::Exec(self.exec(e)?),
            b"Search" => Command::Search(self.search(e)?),
            _ => Command::Unknown(self.unknown(name, e)?),
        })
    }

    fn unknown(&mut self, name: &'a [u8], empty: bool) -> Result<UnknownCommand<'a>> {
        let name = std::str::from_utf8(name).map_err(|_| self.bad_utf8())?;
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

    fn enter_command(&mut self) -> Result<()> {
        self.cmd_depth += 1;
        if self.cmd_depth > MAX_COMMAND_DEPTH {
            return Err(self.too_deep());
        }
        Ok(())
    }

    fn alert(&mut self, empty: bool) -> Result<Alert<'a>> {
        let mut c = Alert::default();
        if empty {
            return Ok(c);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"NoResp" => c.no_resp = self.flag(e)?,
                b"Cred" => c.cred = Some(self.cred(e)?),
                b"Data" => c.data = self.some_text(e)?,
                b"Correlator" => c.correlator = self.some_text(e)?,
                b"Item" => c.items.push(self.item(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(c)
    }

    fn item_command(&mut self, empty: bool) -> Result<ItemCommand<'a>> {
        let mut c = ItemCommand::default();
        if empty {
            return Ok(c);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"NoResp" => c.no_resp = self.flag(e)?,
                b"Archive" => c.archive = self.flag(e)?,
                b"SftDel" => c.sft_del = self.flag(e)?,
                b"Cred" => c.cred = Some(self.cred(e)?),
                b"Meta" => c.meta = Some(self.meta(e)?),
                b"Item" => c.items.push(self.item(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(c)
    }

    fn sync(&mut self, empty: bool) -> Result<Sync<'a>> {
        let mut c = Sync::default();
        if empty {
            return Ok(c);
        }
        self.enter_command()?;
        while let Some((n, e)) = self.child()? {
            if !self.sync_field(n, e, &mut c)? {
                let cmd = self.command(n, e)?;
                c.commands.push(cmd);
            }
        }
        self.cmd_depth -= 1;
        Ok(c)
    }

    /// A non-command child of Sync; false if `n` is a command.
    #[inline(never)]
    fn sync_field(&mut self, n: &'a [u8], e: bool, c: &mut Sync<'a>) -> Result<bool> {
        match n {
            b"CmdID" => c.cmd_id = self.text(e)?,
            b"NoResp" => c.no_resp = self.flag(e)?,
            b"Cred" => c.cred = Some(self.cred(e)?),
            b"Target" => c.target = Some(self.location(e)?),
            b"Source" => c.source = Some(self.location(e)?),
            b"Meta" => c.meta = Some(self.meta(e)?),
            b"NumberOfChanges" => c.number_of_changes = self.some_text(e)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn container(&mut self, empty: bool) -> Result<Container<'a>> {
        let mut c = Container::default();
        if empty {
            return Ok(c);
        }
        self.enter_command()?;
        while let Some((n, e)) = self.child()? {
            if !self.container_field(n, e, &mut c)? {
                let cmd = self.command(n, e)?;
                c.commands.push(cmd);
            }
        }
        self.cmd_depth -= 1;
        Ok(c)
    }

    /// A non-command child of Atomic/Sequence; false if `n` is a command.
    #[inline(never)]
    fn container_field(&mut self, n: &'a [u8], e: bool, c: &mut Container<'a>) -> Result<bool> {
        match n {
            b"CmdID" => c.cmd_id = self.text(e)?,
            b"NoResp" => c.no_resp = self.flag(e)?,
            b"Meta" => c.meta = Some(self.meta(e)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn status(&mut self, empty: bool) -> Result<Status<'a>> {
        let mut c = Status::default();
        if empty {
            return Ok(c);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"MsgRef" => c.msg_ref = self.some_text(e)?,
                b"CmdRef" => c.cmd_ref = self.text(e)?,
                b"Cmd" => c.cmd = self.text(e)?,
                b"TargetRef" => c.target_refs.push(self.text(e)?),
                b"SourceRef" => c.source_refs.push(self.text(e)?),
                b"Cred" => c.cred = Some(self.cred(e)?),
                b"Chal" => c.chal = Some(self.chal(e)?),
                b"Data" => c.data = self.text(e)?,
                b"Item" => c.items.push(self.item(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(c)
    }

    fn put_get(&mut self, empty: bool) -> Result<PutGet<'a>> {
        let mut c = PutGet::default();
        if empty {
            return Ok(c);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"NoResp" => c.no_resp = self.flag(e)?,
                b"Lang" => c.lang = self.some_text(e)?,
                b"Cred" => c.cred = Some(self.cred(e)?),
                b"Meta" => c.meta = Some(self.meta(e)?),
                b"Item" => c.items.push(self.item(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(c)
    }

    fn results(&mut self, empty: bool) -> Result<Results<'a>> {
        let mut c = Results::default();
        if empty {
            return Ok(c);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"MsgRef" => c.msg_ref = self.some_text(e)?,
                b"CmdRef" => c.cmd_ref = self.text(e)?,
                b"Meta" => c.meta = Some(self.meta(e)?),
                b"TargetRef" => c.target_ref = self.some_text(e)?,
                b"SourceRef" => c.source_ref = self.some_text(e)?,
                b"Item" => c.items.push(self.item(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(c)
    }

    fn map(&mut self, empty: bool) -> Result<Map<'a>> {
        let mut c = Map::default();
        if empty {
            return Ok(c);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"Target" => c.target = self.location(e)?,
                b"Source" => c.source = self.location(e)?,
                b"Cred" => c.cred = Some(self.cred(e)?),
                b"Meta" => c.meta = Some(self.meta(e)?),
                b"MapItem" => c.map_items.push(self.map_item(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(c)
    }

    fn map_item(&mut self, empty: bool) -> Result<MapItem<'a>> {
        let mut c = MapItem::default();
        if empty {
            return Ok(c);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Target" => c.target = self.location(e)?,
                b"Source" => c.source = self.location(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(c)
    }

    fn exec(&mut self, empty: bool) -> Result<Exec<'a>> {
        let mut c = Exec::default();
        if empty {
            return Ok(c);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"NoResp" => c.no_resp = self.flag(e)?,
                b"Cred" => c.cred = Some(self.cred(e)?),
                b"Meta" => c.meta = Some(self.meta(e)?),
                b"Correlator" => c.correlator = self.some_text(e)?,
                b"Item" => c.item = self.item(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(c)
    }

    fn search(&mut self, empty: bool) -> Result<Search<'a>> {
        let mut c = Search::default();
        if empty {
            return Ok(c);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CmdID" => c.cmd_id = self.text(e)?,
                b"NoResp" => c.no_resp = self.flag(e)?,
                b"NoResults" => c.no_results = self.flag(e)?,
                b"Cred" => c.cred = Some(self.cred(e)?),
                b"Target" => c.target = Some(self.location(e)?),
                b"Source" => c.sources.push(self.location(e)?),
                b"Lang" => c.lang = self.some_text(e)?,
                b"Meta" => c.meta = Some(self.meta(e)?),
                b"Data" => c.data = Some(self.data(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(c)
    }

    // ----- common elements --------------------------------------------------

    fn location(&mut self, empty: bool) -> Result<Location<'a>> {
        let mut l = Location::default();
        if empty {
            return Ok(l);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"LocURI" => l.loc_uri = self.text(e)?,
                b"LocName" => l.loc_name = self.some_text(e)?,
                b"Filter" => l.filter = Some(Box::new(self.filter(e)?)),
                _ => self.skip(e)?,
            }
        }
        Ok(l)
    }

    fn filter(&mut self, empty: bool) -> Result<Filter<'a>> {
        let mut f = Filter::default();
        if empty {
            return Ok(f);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Meta" => f.meta = Some(self.meta(e)?),
                b"Field" => f.field = Some(self.item_wrapper(e)?),
                b"Record" => f.record = Some(self.item_wrapper(e)?),
                b"FilterType" => f.filter_type = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(f)
    }

    /// `Field` / `Record`: a wrapper around one `Item`.
    fn item_wrapper(&mut self, empty: bool) -> Result<Item<'a>> {
        let mut it = Item::default();
        if empty {
            return Ok(it);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Item" => it = self.item(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(it)
    }

    fn cred(&mut self, empty: bool) -> Result<Cred<'a>> {
        let mut c = Cred::default();
        if empty {
            return Ok(c);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Meta" => c.meta = Some(self.meta(e)?),
                b"Data" => c.data = self.data(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(c)
    }

    /// `Chal`: only its `Meta` is kept.
    fn chal(&mut self, empty: bool) -> Result<Meta<'a>> {
        let mut m = Meta::default();
        if empty {
            return Ok(m);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Meta" => m = self.meta(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(m)
    }

    fn item(&mut self, empty: bool) -> Result<Item<'a>> {
        let mut it = Item::default();
        if empty {
            return Ok(it);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Target" => it.target = Some(self.location(e)?),
                b"Source" => it.source = Some(self.location(e)?),
                b"SourceParent" => it.source_parent = Some(self.location(e)?),
                b"TargetParent" => it.target_parent = Some(self.location(e)?),
                b"Meta" => it.meta = Some(self.meta(e)?),
                b"Data" => it.data = Some(self.data(e)?),
                b"MoreData" => it.more_data = self.flag(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(it)
    }

    fn meta(&mut self, empty: bool) -> Result<Meta<'a>> {
        let mut m = Meta::default();
        self.meta_into(empty, &mut m)?;
        Ok(m)
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
                b"Anchor" => m.anchor = Some(self.anchor(e)?),
                b"Version" => m.version = self.some_text(e)?,
                b"NextNonce" => m.next_nonce = self.some_text(e)?,
                b"MaxMsgSize" => m.max_msg_size = self.some_text(e)?,
                b"MaxObjSize" => m.max_obj_size = self.some_text(e)?,
                b"EMI" => m.emi.push(self.text(e)?),
                b"Mem" => m.mem = Some(self.mem(e)?),
                b"FieldLevel" => m.field_level = self.flag(e)?,
                // SyncML 1.0 senders may wrap the MetInf elements.
                b"MetInf" => self.meta_into(e, m)?,
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn anchor(&mut self, empty: bool) -> Result<Anchor<'a>> {
        let mut a = Anchor::default();
        if empty {
            return Ok(a);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"Last" => a.last = self.some_text(e)?,
                b"Next" => a.next = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(a)
    }

    fn mem(&mut self, empty: bool) -> Result<Mem<'a>> {
        let mut m = Mem::default();
        if empty {
            return Ok(m);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"SharedMem" => m.shared_mem = self.flag(e)?,
                b"FreeMem" => m.free_mem = self.some_text(e)?,
                b"FreeID" => m.free_id = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(m)
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
                    push_text(&mut acc, t);
                }
                Tok::CData(raw) => {
                    let t = self.chunk(raw, false)?;
                    push_text(&mut acc, t);
                }
                Tok::Start(n) => {
                    self.open(n)?;
                    match n {
                        b"DevInf" => embedded = Some(Data::DevInf(Box::new(self.devinf(false)?))),
                        b"Anchor" => embedded = Some(Data::Anchor(self.anchor(false)?)),
                        _ => self.skip(false)?,
                    }
                }
                Tok::Empty(n) => match n {
                    b"DevInf" => embedded = Some(Data::DevInf(Box::default())),
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
            match &text {
                Cow::Borrowed(s) => {
                    if let Ok(d) = Parser::new(s.as_bytes()).devinf_root() {
                        return Ok(Data::DevInf(Box::new(d)));
                    }
                }
                Cow::Owned(s) => {
                    if let Ok(d) = Parser::new(s.as_bytes()).devinf_root() {
                        return Ok(Data::DevInf(Box::new(d.into_owned())));
                    }
                }
            }
        }
        Ok(Data::Text(text))
    }

    // ----- DevInf -----------------------------------------------------------

    fn devinf_root(mut self) -> Result<DevInf<'a>> {
        let empty = self.root("DevInf")?;
        self.devinf(empty)
    }

    fn devinf(&mut self, empty: bool) -> Result<DevInf<'a>> {
        let mut d = DevInf::default();
        if empty {
            return Ok(d);
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
                b"DataStore" => d.data_stores.push(self.data_store(e)?),
                b"CTCap" => self.ct_cap(e, &mut d.ct_caps)?,
                b"Ext" => d.exts.push(self.ext(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(d)
    }

    fn data_store(&mut self, empty: bool) -> Result<DataStore<'a>> {
        let mut s = DataStore::default();
        if empty {
            return Ok(s);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"SourceRef" => s.source_ref = self.text(e)?,
                b"DisplayName" => s.display_name = self.some_text(e)?,
                b"MaxGUIDSize" => s.max_guid_size = self.some_text(e)?,
                b"Rx-Pref" => s.rx_pref = Some(self.ctv(e)?),
                b"Rx" => s.rx.push(self.ctv(e)?),
                b"Tx-Pref" => s.tx_pref = Some(self.ctv(e)?),
                b"Tx" => s.tx.push(self.ctv(e)?),
                b"CTCap" => self.ct_cap(e, &mut s.ct_caps)?,
                b"DSMem" => s.ds_mem = Some(self.ds_mem(e)?),
                b"SupportHierarchicalSync" => s.support_hierarchical_sync = self.flag(e)?,
                b"SyncCap" => self.sync_cap(e, &mut s.sync_cap)?,
                b"Filter-Rx" => s.filter_rx.push(self.ctv(e)?),
                b"FilterCap" => s.filter_caps.push(self.filter_cap(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(s)
    }

    fn ctv(&mut self, empty: bool) -> Result<ContentTypeVersion<'a>> {
        let mut c = ContentTypeVersion::default();
        if empty {
            return Ok(c);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CTType" => c.ct_type = self.text(e)?,
                b"VerCT" => c.ver_ct = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(c)
    }

    fn sync_cap(&mut self, empty: bool, out: &mut Vec<Text<'a>>) -> Result<()> {
        if empty {
            return Ok(());
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"SyncType" => out.push(self.text(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(())
    }

    fn ds_mem(&mut self, empty: bool) -> Result<DsMem<'a>> {
        let mut m = DsMem::default();
        if empty {
            return Ok(m);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"SharedMem" => m.shared_mem = self.flag(e)?,
                b"MaxMem" => m.max_mem = self.some_text(e)?,
                b"MaxID" => m.max_id = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(m)
    }

    fn filter_cap(&mut self, empty: bool) -> Result<FilterCap<'a>> {
        let mut f = FilterCap::default();
        if empty {
            return Ok(f);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"CTType" => f.ct_type = self.text(e)?,
                b"VerCT" => f.ver_ct = self.some_text(e)?,
                b"FilterKeyword" => f.filter_keywords.push(self.text(e)?),
                b"PropName" => f.prop_names.push(self.text(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(f)
    }

    fn ext(&mut self, empty: bool) -> Result<Ext<'a>> {
        let mut x = Ext::default();
        if empty {
            return Ok(x);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"XNam" => x.x_nam = self.text(e)?,
                b"XVal" => x.x_vals.push(self.text(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(x)
    }

    /// One `CTCap` element, in either form: DevInf 1.2 (one content type,
    /// `Property` elements) or DevInf 1.0/1.1 (flat: several `CTType`s, each
    /// followed by `PropName`s, each followed by its values and `ParamName`s).
    /// The flat sequence is grouped into the 1.2 shape.
    fn ct_cap(&mut self, empty: bool, out: &mut Vec<CtCap<'a>>) -> Result<()> {
        out.push(CtCap::default());
        if empty {
            return Ok(());
        }
        let start = out.len() - 1;
        let mut seen_type = false;
        // Flat form: values after a ParamName belong to that parameter.
        let mut in_param = false;
        while let Some((n, e)) = self.child()? {
            let cap = last(out);
            match n {
                b"CTType" => {
                    let t = self.text(e)?;
                    if seen_type {
                        out.push(CtCap::default());
                    }
                    last(out).ct_type = t;
                    seen_type = true;
                    in_param = false;
                }
                b"VerCT" => cap.ver_ct = self.some_text(e)?,
                b"FieldLevel" => cap.field_level = self.flag(e)?,
                b"Property" => {
                    let p = self.property(e)?;
                    cap.properties.push(p);
                    in_param = false;
                }
                b"PropName" => {
                    let name = self.text(e)?;
                    cap.properties.push(Property { prop_name: name, ..Property::default() });
                    in_param = false;
                }
                b"ParamName" => {
                    let name = self.text(e)?;
                    let prop = last(&mut cap.properties);
                    prop.prop_params.push(PropParam { param_name: name, ..PropParam::default() });
                    in_param = true;
                }
                b"ValEnum" | b"DataType" | b"DisplayName" if in_param => {
                    let v = self.text(e)?;
                    let param = last(&mut last(&mut cap.properties).prop_params);
                    match n {
                        b"ValEnum" => param.val_enums.push(v),
                        b"DataType" => param.data_type = Some(v),
                        _ => param.display_name = Some(v),
                    }
                }
                b"ValEnum" | b"DataType" | b"DisplayName" | b"Size" | b"MaxSize" | b"MaxOccur" => {
                    let v = self.text(e)?;
                    let prop = last(&mut cap.properties);
                    match n {
                        b"ValEnum" => prop.val_enums.push(v),
                        b"DataType" => prop.data_type = Some(v),
                        b"DisplayName" => prop.display_name = Some(v),
                        b"MaxOccur" => prop.max_occur = Some(v),
                        _ => prop.max_size = Some(v),
                    }
                }
                b"NoTruncate" => last(&mut cap.properties).no_truncate = self.flag(e)?,
                _ => self.skip(e)?,
            }
        }
        debug_assert!(out.len() > start);
        Ok(())
    }

    fn property(&mut self, empty: bool) -> Result<Property<'a>> {
        let mut p = Property::default();
        if empty {
            return Ok(p);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"PropName" => p.prop_name = self.text(e)?,
                b"DataType" => p.data_type = self.some_text(e)?,
                b"MaxOccur" => p.max_occur = self.some_text(e)?,
                // DevInf 1.1 calls it Size (same WBXML token).
                b"MaxSize" | b"Size" => p.max_size = self.some_text(e)?,
                b"NoTruncate" => p.no_truncate = self.flag(e)?,
                b"ValEnum" => p.val_enums.push(self.text(e)?),
                b"DisplayName" => p.display_name = self.some_text(e)?,
                b"PropParam" => p.prop_params.push(self.prop_param(e)?),
                _ => self.skip(e)?,
            }
        }
        Ok(p)
    }

    fn prop_param(&mut self, empty: bool) -> Result<PropParam<'a>> {
        let mut p = PropParam::default();
        if empty {
            return Ok(p);
        }
        while let Some((n, e)) = self.child()? {
            match n {
                b"ParamName" => p.param_name = self.text(e)?,
                b"DataType" => p.data_type = self.some_text(e)?,
                b"ValEnum" => p.val_enums.push(self.text(e)?),
                b"DisplayName" => p.display_name = self.some_text(e)?,
                _ => self.skip(e)?,
            }
        }
        Ok(p)
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
}
