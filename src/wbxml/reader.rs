//! The WBXML tokenizer: header, string table and a flat stream of events.
//!
//! Everything here is bounds-checked against the input: lengths are compared
//! with the remaining bytes before slicing, so a hostile length field can
//! neither panic nor make us allocate. The reader spends the message's
//! [`Budget`]: one element per start tag, the bytes of every string-table
//! reference (STR_T, LITERAL), and the memory of every text it has to own
//! (entities, ISO-8859-1 conversions, repaired UTF-8).

use std::borrow::Cow;

use super::tokens::{charset, global, public_id, ATTRS, CONTENT};
use super::WbxmlError;
use crate::codec::limits::{Budget, DecodeLimits, Exceeded};

/// Borrowed UTF-8 text; invalid sequences (only then) are replaced in a copy.
pub(crate) fn utf8(bytes: &[u8]) -> Cow<'_, str> {
    // `from_utf8` is much faster than `from_utf8_lossy` on valid input.
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Text encodings we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    /// UTF-8 (and US-ASCII, and "unknown"): borrowed, lossy on invalid bytes.
    Utf8,
    /// ISO-8859-1: converted to UTF-8 (borrowed when pure ASCII).
    Latin1,
}

/// A start tag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tag<'a> {
    /// Code page the tag was read in.
    pub page: u8,
    /// Tag id (0x05..=0x3F), or 0x04 for a LITERAL tag.
    pub id: u8,
    /// The raw token byte (for error messages).
    pub token: u8,
    /// Whether content (closed by END) follows.
    pub content: bool,
    /// Byte offset of the token.
    pub offset: usize,
    /// The name of a LITERAL tag (from the string table).
    pub literal: Option<&'a [u8]>,
}

/// One tokenizer event.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// A start tag (its attributes already skipped).
    Start(Tag<'a>),
    /// END of the innermost open element.
    End,
    /// Character data: STR_I, STR_T or ENTITY.
    Str(Cow<'a, str>),
    /// OPAQUE bytes.
    Opaque(&'a [u8]),
    /// End of input.
    Eof,
}

/// Cursor over one WBXML document.
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    page: u8,
    strtbl: &'a [u8],
    charset: Charset,
    /// What this document (and the message it belongs to) may still spend.
    pub budget: Budget,
}

impl<'a> Reader<'a> {
    /// Reads the header and string table, with the budget of the default
    /// [`DecodeLimits`] for this input.
    pub fn new(input: &'a [u8]) -> Result<Reader<'a>, WbxmlError> {
        Reader::with_budget(input, Budget::new(&DecodeLimits::default(), input.len()))
    }

    /// Reads the header and string table; reading spends `budget`.
    pub fn with_budget(input: &'a [u8], budget: Budget) -> Result<Reader<'a>, WbxmlError> {
        let mut r = Reader { input, pos: 0, page: 0, strtbl: &[], charset: Charset::Utf8, budget };
        let version = r.byte("WBXML version")?;
        // WBXML 1.0 has no charset field; SyncML needs 1.1 or later. Accept
        // any minor of major 1 from 1.1 up to 1.3 (Synthesis does the same).
        if !(0x01..=0x03).contains(&version) {
            return Err(WbxmlError::UnsupportedVersion { version });
        }
        // The public id is informational: the root element decides.
        let public_id = r.mb_u32("public id")?;
        let mut public_index = None;
        if public_id == public_id::IN_STRTBL {
            public_index = Some((r.pos, r.mb_u32("public id string index")?));
        }
        let cs_offset = r.pos;
        let cs = r.mb_u32("charset")?;
        r.charset = match cs {
            charset::UTF_8 | charset::US_ASCII | charset::UNKNOWN => Charset::Utf8,
            charset::ISO_8859_1 => Charset::Latin1,
            other => return Err(WbxmlError::UnsupportedCharset { offset: cs_offset, charset: other }),
        };
        let len = r.mb_u32("string table length")?;
        r.strtbl = r.take(len, "string table")?;
        if let Some((offset, index)) = public_index {
            // A reference must point into the string table.
            r.strtbl_bytes(index, offset)?;
        }
        Ok(r)
    }

    /// Current byte offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    fn eof(&self, context: &'static str) -> WbxmlError {
        WbxmlError::UnexpectedEof { offset: self.pos, context }
    }

    /// The error for a spent budget, at `offset`.
    pub fn over(e: Exceeded, offset: usize) -> WbxmlError {
        WbxmlError::TooLarge { cap: e.cap, limit: e.limit, offset }
    }

    /// Charges a text the reader produced if it had to own it.
    fn owned(&mut self, t: Cow<'a, str>, offset: usize) -> Result<Cow<'a, str>, WbxmlError> {
        self.budget.charge_text(&t).map_err(|e| Self::over(e, offset))?;
        Ok(t)
    }

    fn byte(&mut self, context: &'static str) -> Result<u8, WbxmlError> {
        let b = *self.input.get(self.pos).ok_or_else(|| self.eof(context))?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads an mb_u_int32 (at most 5 bytes, value within u32).
    fn mb_u32(&mut self, context: &'static str) -> Result<u32, WbxmlError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for _ in 0..5 {
            let b = self.byte(context)?;
            value = (value << 7) | u64::from(b & 0x7F);
            if b & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| WbxmlError::BadMbUint { offset: start });
            }
        }
        Err(WbxmlError::BadMbUint { offset: start })
    }

    /// Takes `len` bytes, checking the length against what is left first.
    fn take(&mut self, len: u32, context: &'static str) -> Result<&'a [u8], WbxmlError> {
        let remaining = self.input.len() - self.pos;
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        if n > remaining {
            return Err(WbxmlError::LengthOutOfBounds { offset: self.pos, len, remaining, context });
        }
        let s = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads a NUL-terminated inline string (without the NUL).
    fn cstr(&mut self, context: &'static str) -> Result<&'a [u8], WbxmlError> {
        let rest = &self.input[self.pos..];
        let n =
            rest.iter().position(|&b| b == 0).ok_or(WbxmlError::UnterminatedString { offset: self.pos })?;
        let _ = context;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    /// The NUL-terminated string at `index` in the string table.
    fn strtbl_bytes(&self, index: u32, offset: usize) -> Result<&'a [u8], WbxmlError> {
        let tbl = self.strtbl;
        let start = usize::try_from(index).unwrap_or(usize::MAX);
        if start >= tbl.len() {
            return Err(WbxmlError::BadStringRef { offset, index, len: tbl.len() });
        }
        let rest = &tbl[start..];
        let n = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        Ok(&rest[..n])
    }

    /// Converts document-charset bytes to text.
    fn text(&self, bytes: &'a [u8]) -> Cow<'a, str> {
        match self.charset {
            Charset::Utf8 => utf8(bytes),
            Charset::Latin1 => {
                if bytes.is_ascii() {
                    // ASCII is the same in both: no copy needed.
                    utf8(bytes)
                } else {
                    Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())
                }
            }
        }
    }

    /// Skips an attribute list (or PI body) up to and including its END.
    fn skip_attributes(&mut self) -> Result<(), WbxmlError> {
        loop {
            let tok = self.byte("attribute list")?;
            match tok {
                global::END => return Ok(()),
                // Attribute code pages are separate from tag code pages.
                global::SWITCH_PAGE => {
                    self.byte("attribute code page")?;
                }
                global::STR_I | global::EXT_I_0..=global::EXT_I_2 => {
                    self.cstr("attribute string")?;
                }
                global::ENTITY | global::LITERAL | global::STR_T | global::EXT_T_0..=global::EXT_T_2 => {
                    self.mb_u32("attribute reference")?;
                }
                global::OPAQUE => {
                    let len = self.mb_u32("opaque length")?;
                    self.take(len, "opaque attribute value")?;
                }
                _ => {}
            }
        }
    }

    /// Reads the next event.
    pub fn next(&mut self) -> Result<Event<'a>, WbxmlError> {
        loop {
            let offset = self.pos;
            let Some(&tok) = self.input.get(self.pos) else {
                return Ok(Event::Eof);
            };
            self.pos += 1;
            match tok {
                global::SWITCH_PAGE => self.page = self.byte("code page")?,
                global::END => return Ok(Event::End),
                global::ENTITY => {
                    let cp = self.mb_u32("entity")?;
                    let c = char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER);
                    return Ok(Event::Str(self.owned(Cow::Owned(c.to_string()), offset)?));
                }
                global::STR_I => {
                    let s = self.cstr("inline string")?;
                    let t = self.text(s);
                    return Ok(Event::Str(self.owned(t, offset)?));
                }
                global::STR_T => {
                    let index = self.mb_u32("string table reference")?;
                    let s = self.strtbl_bytes(index, offset)?;
                    // A reference costs 2 bytes and may stand for the whole
                    // table: what references produce is budgeted.
                    self.budget.strtbl(s.len()).map_err(|e| Self::over(e, offset))?;
                    let t = self.text(s);
                    return Ok(Event::Str(self.owned(t, offset)?));
                }
                global::OPAQUE => {
                    let len = self.mb_u32("opaque length")?;
                    return Ok(Event::Opaque(self.take(len, "opaque data")?));
                }
                // Extensions carry no SyncML meaning: skip them.
                global::EXT_I_0..=global::EXT_I_2 => {
                    self.cstr("extension string")?;
                }
                global::EXT_T_0..=global::EXT_T_2 => {
                    self.mb_u32("extension reference")?;
                }
                global::EXT_0..=global::EXT_2 => {}
                global::PI => self.skip_attributes()?,
                _ => {
                    self.budget.element().map_err(|e| Self::over(e, offset))?;
                    let id = tok & 0x3F;
                    let mut literal = None;
                    if id == global::LITERAL {
                        let index = self.mb_u32("literal tag name")?;
                        let name = self.strtbl_bytes(index, offset)?;
                        self.budget.strtbl(name.len()).map_err(|e| Self::over(e, offset))?;
                        literal = Some(name);
                    }
                    if tok & ATTRS != 0 {
                        self.skip_attributes()?;
                    }
                    return Ok(Event::Start(Tag {
                        page: self.page,
                        id,
                        token: tok,
                        content: tok & CONTENT != 0,
                        offset,
                        literal,
                    }));
                }
            }
        }
    }

    /// The byte at `offset` (0 past the end), for error messages.
    pub fn byte_at(&self, offset: usize) -> u8 {
        self.input.get(offset).copied().unwrap_or(0)
    }

    /// Decodes the name of a LITERAL tag (charged if it had to be converted).
    pub fn literal_name(&mut self, bytes: &'a [u8]) -> Result<Cow<'a, str>, WbxmlError> {
        let t = self.text(bytes);
        let at = self.pos;
        self.owned(t, at)
    }
}
