//! The WBXML codec for SyncML 1.1/1.2, MetInf and DevInf 1.1/1.2
//! (`application/vnd.syncml+wbxml`, digest §13).
//!
//! Decoding accepts WBXML 1.1–1.3, numeric or string-table public ids,
//! UTF-8 (borrowed) and ISO-8859-1 (converted), inline strings, string-table
//! references, entities, OPAQUE data, the SyncML (0) and MetInf (1) code
//! pages, and skips attributes, extensions and processing instructions.
//! Inline strings and OPAQUE data borrow from the input. An OPAQUE `Data`
//! payload that is itself a WBXML DevInf document becomes [`Data::DevInf`];
//! other OPAQUE bytes become [`Data::Text`] when they are UTF-8, else
//! [`Data::Binary`]. A MetInf `Anchor` inside `Data` becomes
//! [`Data::Anchor`].
//!
//! Decoding never panics, checks every length against the remaining input
//! before using it, stops nesting at [`MAX_DEPTH`] elements, and spends the
//! message's decode budget ([`crate::codec::limits`]): elements, commands,
//! list entries, string-table bytes and memory are capped, and over a cap
//! it fails with [`WbxmlError::TooLarge`].
//!
//! Encoding writes WBXML 1.2, public id `-//SYNCML//DTD SyncML 1.x//EN`
//! (numeric, from the message version), UTF-8, an empty string table; short
//! texts as STR_I, long `Data` texts and binary data as OPAQUE, embedded
//! DevInf as an OPAQUE nested document. [`Command::Unknown`] is not written.
//! Meta `Type` values are written as they are (the engine chooses
//! `application/vnd.syncml-devinf+wbxml` vs `+xml`).
//!
//! A DevInf whose `VerDTD` is 1.0/1.1 is written in the 1.1 form, as the XML
//! codec writes it: one global, flat `CTCap` holding the global and all
//! per-datastore CTCaps, without the 1.2-only VerCT, FieldLevel, MaxOccur
//! and NoTruncate.
//!
//! Known, documented differences of `decode(encode(m))` from `m`:
//! [`Data::Binary`] bytes that are valid UTF-8 come back as [`Data::Text`]
//! (WBXML OPAQUE does not say which it was), [`Command::Unknown`] is
//! dropped, and a DevInf 1.0/1.1 comes back in the 1.1 shape just described.

use thiserror::Error;

use crate::codec::DecodeLimits;
use crate::model::{DevInf, SyncMl};

mod decode;
mod encode;
pub(crate) mod reader;
pub(crate) mod tokens;

pub use decode::MAX_DEPTH;

/// A WBXML decoding error; every variant names the byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WbxmlError {
    /// The input ended inside a header field, token or element.
    #[error("unexpected end of input at byte {offset} (reading {context})")]
    UnexpectedEof {
        /// Byte offset where more input was needed.
        offset: usize,
        /// What was being read.
        context: &'static str,
    },
    /// The version byte is not WBXML 1.1, 1.2 or 1.3.
    #[error("unsupported WBXML version byte 0x{version:02X} at byte 0")]
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
    /// The charset is neither UTF-8, US-ASCII nor ISO-8859-1.
    #[error("unsupported charset MIBenum {charset} at byte {offset}")]
    UnsupportedCharset {
        /// Byte offset of the charset field.
        offset: usize,
        /// The IANA MIBenum.
        charset: u32,
    },
    /// An mb_u_int32 longer than 5 bytes or above `u32::MAX`.
    #[error("malformed mb_u_int32 at byte {offset}")]
    BadMbUint {
        /// Byte offset of its first byte.
        offset: usize,
    },
    /// A length field (string table, OPAQUE) larger than the remaining input.
    #[error("{context} length {len} at byte {offset} exceeds the remaining {remaining} bytes")]
    LengthOutOfBounds {
        /// Byte offset of the data the length announces.
        offset: usize,
        /// The announced length.
        len: u32,
        /// Bytes left in the input.
        remaining: usize,
        /// What the length was for.
        context: &'static str,
    },
    /// A string-table reference past the end of the string table.
    #[error("string table reference {index} at byte {offset} is outside the {len}-byte string table")]
    BadStringRef {
        /// Byte offset of the token that holds the reference.
        offset: usize,
        /// The reference.
        index: u32,
        /// String table length.
        len: usize,
    },
    /// An inline string without its NUL terminator.
    #[error("inline string at byte {offset} is not NUL-terminated")]
    UnterminatedString {
        /// Byte offset of the string.
        offset: usize,
    },
    /// A token that cannot appear here (e.g. a wrong root element).
    #[error("unexpected token 0x{token:02X} at byte {offset}, expected {expected}")]
    UnexpectedToken {
        /// Byte offset of the token.
        offset: usize,
        /// The token.
        token: u8,
        /// What was expected instead.
        expected: &'static str,
    },
    /// The input ended before an element's END.
    #[error(
        "element token 0x{token:02X} at byte {offset} is not closed before the end of input at byte {eof}"
    )]
    Unclosed {
        /// Byte offset of the element's start token.
        offset: usize,
        /// The start token.
        token: u8,
        /// Where the input ended.
        eof: usize,
    },
    /// Elements nested deeper than [`MAX_DEPTH`].
    #[error("element token 0x{token:02X} at byte {offset} nests deeper than {limit} elements")]
    TooDeep {
        /// Byte offset of the element's start token.
        offset: usize,
        /// The start token.
        token: u8,
        /// The nesting limit.
        limit: usize,
    },
    /// The message went over a decode cap ([`DecodeLimits`]).
    #[error("message too large at byte {offset}: over the limit of {limit} {cap}")]
    TooLarge {
        /// Which cap.
        cap: crate::codec::Cap,
        /// The cap's value for this message.
        limit: usize,
        /// Byte offset where it was reached.
        offset: usize,
    },
}

/// Decodes a WBXML SyncML message under the default [`DecodeLimits`]; texts
/// borrow from `input` where possible.
pub fn decode(input: &[u8]) -> Result<SyncMl<'_>, WbxmlError> {
    decode::syncml(input, &DecodeLimits::default())
}

/// [`decode`] under `limits`. (Identifiers are checked by
/// [`crate::codec::decode_with`], not here.)
pub fn decode_with<'b>(input: &'b [u8], limits: &DecodeLimits) -> Result<SyncMl<'b>, WbxmlError> {
    decode::syncml(input, limits)
}

/// Appends the WBXML encoding of `msg` to `out`.
pub fn encode(msg: &SyncMl<'_>, out: &mut Vec<u8>) {
    encode::syncml(msg, out)
}

/// Decodes a stand-alone WBXML DevInf document (as embedded in `Data`).
pub fn decode_devinf(input: &[u8]) -> Result<DevInf<'_>, WbxmlError> {
    decode::devinf(input)
}

/// Appends the WBXML encoding of a DevInf document to `out`.
pub fn encode_devinf(devinf: &DevInf<'_>, out: &mut Vec<u8>) {
    encode::devinf(devinf, out)
}

#[cfg(test)]
mod tests;
