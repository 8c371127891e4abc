//! The SyncML XML codec: a borrowing decoder and a direct-to-buffer encoder.
//!
//! * [`decode`] turns an XML SyncML message (1.0–1.2) into the shared
//!   [`model`](crate::model). Element texts borrow from the input and are
//!   owned only where entity unescaping, text/CDATA concatenation or a
//!   charset conversion required a copy. The decoder is tolerant the way real
//!   clients need (digest §14): elements are matched by their local name
//!   (namespace prefixes and URIs are ignored), any child order is accepted,
//!   unknown elements are skipped, unknown commands become
//!   [`Command::Unknown`](crate::model::Command::Unknown). Text content is
//!   never trimmed or line-end normalised, so CR/LF survive exactly.
//! * [`encode`] writes DTD order straight into a `Vec<u8>`.
//!
//! Budgeting a reply against the client's MaxMsgSize: encoding is cheap (a
//! few hundred MB/s), so the engine can simply encode and look at the length.
//! For incremental filling use [`encode_command`]:
//! the size of a message is the size of the same message with an empty body
//! plus the sizes of its commands (plus [`FINAL_LEN`] for `<Final/>`).
//!
//! Performance (benches/codec_xml.rs, examples/xml_ratio.rs): typed decode
//! runs at about 0.65x a bare quick-xml event scan of the same bytes, encode
//! at several GB/s. A decoded `Command` is over a kilobyte, so a big Sync
//! (100 Adds) allocates ~250 KB; with glibc's default heap trimming
//! (M_TRIM_THRESHOLD 128 KB) every such message then pays page faults on
//! allocation and a trim on drop, which triples decode time. The server
//! process should raise the trim threshold (`mallopt(M_TRIM_THRESHOLD, ..)`
//! or `MALLOC_TRIM_THRESHOLD_`) or use an allocator that keeps memory.

pub(crate) mod charset;
mod decode;
mod encode;

pub use decode::{decode, decode_devinf, decode_with, MAX_COMMAND_DEPTH, MAX_DEPTH};
pub use encode::{encode, encode_command, encode_devinf, FINAL_LEN};

/// Why an XML message could not be decoded.
///
/// `path` is the slash-separated chain of local element names that were open
/// at the failure (e.g. `SyncML/SyncBody/Sync/Add`), `offset` the byte offset
/// in the input (after a charset conversion: in the UTF-8 converted copy).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// The XML is not well-formed (reported by the tokenizer).
    #[error("malformed XML at byte {offset} in <{path}>: {message}")]
    Syntax {
        /// Open elements at the failure.
        path: String,
        /// Byte offset of the error.
        offset: u64,
        /// The tokenizer's description.
        message: String,
    },
    /// The input ended before the open elements were closed.
    #[error("truncated XML at byte {offset}: <{path}> not closed")]
    Truncated {
        /// Open elements at the end of the input.
        path: String,
        /// Byte offset of the end.
        offset: u64,
    },
    /// Text or a name is not valid UTF-8.
    #[error("invalid UTF-8 at byte {offset} in <{path}>")]
    InvalidUtf8 {
        /// Open elements at the failure.
        path: String,
        /// Byte offset of the event holding the bad bytes.
        offset: u64,
    },
    /// Elements are nested deeper than [`MAX_DEPTH`] (or commands deeper than
    /// [`MAX_COMMAND_DEPTH`]).
    #[error("elements nested too deeply at byte {offset} in <{path}>")]
    TooDeep {
        /// Open elements at the failure.
        path: String,
        /// Byte offset of the element that exceeded the limit.
        offset: u64,
    },
    /// The document has no root element.
    #[error("no root element in the document")]
    NoRoot,
    /// The root element is not the expected one (`SyncML` or `DevInf`).
    #[error("root element <{found}> at byte {offset}, expected <{expected}>")]
    WrongRoot {
        /// The root element's local name.
        found: String,
        /// What the caller asked for.
        expected: &'static str,
        /// Byte offset of the root element.
        offset: u64,
    },
    /// The XML declaration names a character encoding this codec cannot read.
    #[error("unsupported XML encoding {0:?}")]
    UnsupportedEncoding(String),
    /// The message went over a decode cap ([`crate::codec::DecodeLimits`]).
    #[error("message too large at byte {offset}: over the limit of {limit} {cap}")]
    TooLarge {
        /// Which cap.
        cap: crate::codec::Cap,
        /// The cap's value for this message.
        limit: usize,
        /// Byte offset where it was reached.
        offset: u64,
    },
}

impl XmlError {
    /// The byte offset of the failure, if the error has one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            XmlError::Syntax { offset, .. }
            | XmlError::Truncated { offset, .. }
            | XmlError::InvalidUtf8 { offset, .. }
            | XmlError::TooDeep { offset, .. }
            | XmlError::WrongRoot { offset, .. }
            | XmlError::TooLarge { offset, .. } => Some(*offset),
            XmlError::NoRoot | XmlError::UnsupportedEncoding(_) => None,
        }
    }

    /// The element path (or name) of the failure, if the error has one.
    pub fn path(&self) -> Option<&str> {
        match self {
            XmlError::Syntax { path, .. }
            | XmlError::Truncated { path, .. }
            | XmlError::InvalidUtf8 { path, .. }
            | XmlError::TooDeep { path, .. } => Some(path),
            XmlError::WrongRoot { found, .. } => Some(found),
            XmlError::NoRoot | XmlError::UnsupportedEncoding(_) | XmlError::TooLarge { .. } => None,
        }
    }
}
