//! One entry point over both wire encodings of SyncML, and the decode caps
//! both share ([`limits`]).

pub mod limits;

pub use limits::{check_ids, Cap, DecodeLimits, IdError, IdLimits};

use crate::model::{DevInf, Encoding, SyncMl};

/// A decode failure of either codec.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The XML body could not be decoded.
    #[error("XML: {0}")]
    Xml(#[from] crate::xml::XmlError),
    /// The WBXML body could not be decoded.
    #[error("WBXML: {0}")]
    Wbxml(#[from] crate::wbxml::WbxmlError),
    /// The message decoded but an identifier is refused ([`check_ids`]).
    #[error("{0}")]
    Id(#[from] IdError),
}

impl DecodeError {
    /// The decode cap the message went over, if that is why it failed
    /// (the HTTP answer is then 413 rather than 400).
    pub fn cap(&self) -> Option<Cap> {
        match self {
            DecodeError::Xml(crate::xml::XmlError::TooLarge { cap, .. }) => Some(*cap),
            DecodeError::Wbxml(crate::wbxml::WbxmlError::TooLarge { cap, .. }) => Some(*cap),
            _ => None,
        }
    }
}

/// Decodes a message body in the given encoding under the default
/// [`DecodeLimits`]; texts borrow from `body`.
pub fn decode(encoding: Encoding, body: &[u8]) -> Result<SyncMl<'_>, DecodeError> {
    decode_with(encoding, body, &DecodeLimits::default())
}

/// Decodes a message body under `limits`: the caps bound the decode's work
/// and memory, then [`check_ids`] refuses oversized identifiers and control
/// characters in them.
pub fn decode_with<'b>(
    encoding: Encoding,
    body: &'b [u8],
    limits: &DecodeLimits,
) -> Result<SyncMl<'b>, DecodeError> {
    let msg = match encoding {
        Encoding::Xml => crate::xml::decode_with(body, limits)?,
        Encoding::Wbxml => crate::wbxml::decode_with(body, limits)?,
    };
    check_ids(&msg, &limits.ids)?;
    Ok(msg)
}

/// Encodes a message in the given encoding, appending to `out`.
pub fn encode(encoding: Encoding, msg: &SyncMl<'_>, out: &mut Vec<u8>) {
    match encoding {
        Encoding::Xml => crate::xml::encode(msg, out),
        Encoding::Wbxml => crate::wbxml::encode(msg, out),
    }
}

/// Decodes a DevInf document given as XML text (e.g. CDATA-wrapped in a Put).
pub fn decode_devinf_xml(input: &[u8]) -> Option<DevInf<'static>> {
    crate::xml::decode_devinf(input).ok().map(DevInf::into_owned)
}

/// Decodes a DevInf document given as WBXML bytes.
pub fn decode_devinf_wbxml(input: &[u8]) -> Option<DevInf<'static>> {
    crate::wbxml::decode_devinf(input).ok().map(DevInf::into_owned)
}

/// Encodes a DevInf document as XML (how the store keeps a client's DevInf).
pub fn encode_devinf_xml(devinf: &DevInf<'_>, out: &mut Vec<u8>) {
    crate::xml::encode_devinf(devinf, out)
}
