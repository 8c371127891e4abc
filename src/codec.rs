//! One entry point over both wire encodings of SyncML.

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
}

/// Decodes a message body in the given encoding; texts borrow from `body`.
pub fn decode(encoding: Encoding, body: &[u8]) -> Result<SyncMl<'_>, DecodeError> {
    Ok(match encoding {
        Encoding::Xml => crate::xml::decode(body)?,
        Encoding::Wbxml => crate::wbxml::decode(body)?,
    })
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
