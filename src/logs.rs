//! Untrusted text in log lines: client-chosen strings (device ids, user
//! names, URIs) are logged through [`Trunc`], so a request cannot make a log
//! line as long as its body, nor break a line with control characters.

use std::fmt;

/// Characters of an untrusted string kept in a log line.
pub const LOG_CHARS: usize = 64;

/// Displays at most [`LOG_CHARS`] characters of a string (cut on a character
/// boundary, control characters escaped), then the original length in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Trunc<'a>(pub &'a str);

impl fmt::Display for Trunc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = 0;
        for c in self.0.chars().take(LOG_CHARS) {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
            shown += c.len_utf8();
        }
        if shown < self.0.len() {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_multibyte_text_is_cut_on_a_char_boundary() {
        assert_eq!(Trunc("dev-1").to_string(), "dev-1");
        let long = "é".repeat(100);
        let shown = Trunc(&long).to_string();
        assert!(shown.starts_with(&"é".repeat(64)));
        assert!(shown.ends_with("…(200 bytes)"), "{shown}");
        assert_eq!(Trunc("a\nb\0").to_string(), "a\\nb\\u{0}");
    }
}
