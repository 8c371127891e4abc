//! Charset handling for XML input: the BOM and the `encoding` pseudo-attribute
//! of the XML declaration. Old phones declare ISO-8859-1 (digest §1.4); such
//! documents are converted to UTF-8 before tokenizing.

use std::borrow::Cow;

use super::XmlError;

/// What the document's bytes must be converted from before decoding.
#[derive(Debug, PartialEq, Eq)]
enum Charset {
    /// UTF-8 (or ASCII, its subset): decode the bytes as they are.
    Utf8,
    /// ISO-8859-1 / windows-1252 (treated alike, as browsers do: real
    /// "latin1" senders use the 0x80–0x9F range for windows-1252 characters).
    Latin1,
    /// A label we do not know; used as-is if it happens to be valid UTF-8.
    Other(String),
}

/// Strips a UTF-8 BOM and converts a non-UTF-8 document to UTF-8.
///
/// Returns the input itself (borrowed) for UTF-8 and pure-ASCII documents.
pub(crate) fn to_utf8(input: &[u8]) -> Result<Cow<'_, [u8]>, XmlError> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    match declared_charset(input) {
        Charset::Utf8 => Ok(Cow::Borrowed(input)),
        Charset::Latin1 if input.is_ascii() => Ok(Cow::Borrowed(input)),
        Charset::Latin1 => Ok(Cow::Owned(latin1_to_utf8(input))),
        Charset::Other(label) => {
            if std::str::from_utf8(input).is_ok() {
                Ok(Cow::Borrowed(input))
            } else {
                Err(XmlError::UnsupportedEncoding(label))
            }
        }
    }
}

/// Reads the `encoding` pseudo-attribute of a leading XML declaration.
fn declared_charset(input: &[u8]) -> Charset {
    if !input.starts_with(b"<?xml") {
        return Charset::Utf8;
    }
    // The declaration is short; bound the search so a huge malformed
    // document does not get scanned twice.
    let head = &input[..input.len().min(256)];
    let end = match find(head, b"?>") {
        Some(e) => e,
        None => return Charset::Utf8,
    };
    let decl = &head[..end];
    let Some(pos) = find(decl, b"encoding") else {
        return Charset::Utf8;
    };
    let rest = &decl[pos + b"encoding".len()..];
    let rest = trim_ascii_start(rest);
    let Some(rest) = rest.strip_prefix(b"=") else {
        return Charset::Utf8;
    };
    let rest = trim_ascii_start(rest);
    let Some((&quote, rest)) = rest.split_first() else {
        return Charset::Utf8;
    };
    if quote != b'"' && quote != b'\'' {
        return Charset::Utf8;
    }
    let label = match rest.iter().position(|&b| b == quote) {
        Some(n) => &rest[..n],
        None => return Charset::Utf8,
    };
    let label = String::from_utf8_lossy(label).trim().to_ascii_lowercase();
    match label.as_str() {
        "utf-8" | "utf8" | "us-ascii" | "ascii" | "" => Charset::Utf8,
        "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "latin1" | "latin-1" | "l1" | "iso-8859-15"
        | "iso8859-15" | "latin9" | "windows-1252" | "cp1252" | "x-cp1252" | "ansi" => Charset::Latin1,
        _ => Charset::Other(label),
    }
}

fn trim_ascii_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// windows-1252 code points for bytes 0x80–0x9F (undefined ones map to the
/// C1 control of the same value, like ISO-8859-1).
const CP1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}',
    '\u{0090}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
];

fn latin1_to_utf8(input: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(input.len() + input.len() / 8);
    for &b in input {
        let c = match b {
            0x80..=0x9F => CP1252_HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        };
        out.push(c);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_declaration_is_converted() {
        let doc = b"<?xml version='1.0' encoding='ISO-8859-1'?><a>\xE9\x80</a>";
        let out = to_utf8(doc).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "<?xml version='1.0' encoding='ISO-8859-1'?><a>é€</a>"
        );
    }

    #[test]
    fn utf8_and_bom_stay_borrowed() {
        let doc = b"\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"UTF-8\"?><a/>";
        assert!(matches!(
            to_utf8(doc).unwrap(),
            Cow::Borrowed(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><a/>")
        ));
        assert!(matches!(to_utf8(b"<a/>").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn unknown_label_needs_utf8() {
        assert!(to_utf8(b"<?xml version='1.0' encoding='koi8-r'?><a>x</a>").is_ok());
        assert_eq!(
            to_utf8(b"<?xml version='1.0' encoding='koi8-r'?><a>\xC1</a>").unwrap_err(),
            XmlError::UnsupportedEncoding("koi8-r".into())
        );
    }
}
