//! Text that came out of a plugin, made safe to log or to write into a record.
//!
//! A plugin chooses its name, its error messages and what it prints. Written
//! as they are, a newline in any of them forges a whole log line, a terminal
//! escape rewrites what an operator sees, and a 10 MiB message is copied
//! into every record and warning that quotes it. So every such string goes
//! through [`bounded`] on its way out of the plugin boundary: what comes
//! out is one line of at most a given length that says when it was cut.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Longest plugin name or version the host accepts at load, in bytes.
///
/// Both are quoted in every error a plugin's failure produces; a name is
/// a word, so anything longer is refused rather than cut.
pub const NAME_LIMIT: usize = 128;

/// Whether `c` must not reach a log or a record as it is: control
/// characters (which end lines or drive terminals), the Unicode line and
/// paragraph separators, and the bidirectional-text controls that make text
/// read differently from what it is.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` as one safe line of at most `limit` bytes (plus a marker when cut).
///
/// Characters that [`needs_escape`] are written as `\n`, `\r`, `\t` or
/// `\u{..}`; text longer than `limit` once escaped is cut at a character
/// boundary and ends with ` [cut: N bytes in all]`, `N` being the length of
/// the original. Text that needs neither is returned as it is, without a copy.
pub fn bounded(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(escape_and_cut(text, limit, text.len()))
}

/// Like [`bounded`], for the first part of a text of `total` bytes (the
/// rest was not kept): the marker gives the whole text's length.
pub fn bounded_part(part: &str, limit: usize, total: usize) -> String {
    if total <= part.len() {
        bounded(part, limit).into_owned()
    } else {
        escape_and_cut(part, limit, total)
    }
}

fn escape_and_cut(text: &str, limit: usize, total: usize) -> String {
    let mut out = String::with_capacity(text.len().min(limit) + 32);
    let mut cut = total > text.len();
    let mut escaped = String::new();
    for c in text.chars() {
        escaped.clear();
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
        if out.len() + escaped.len() > limit {
            cut = true;
            break;
        }
        out.push_str(&escaped);
    }
    if cut {
        let _ = write!(out, " [cut: {total} bytes in all]");
    }
    out
}

/// Checks a plugin's name or version (`what`) at load: at most
/// [`NAME_LIMIT`] bytes, not empty. Returns it escaped (see [`bounded`]).
pub fn checked_name(what: &str, text: &str) -> Result<String, String> {
    if text.len() > NAME_LIMIT {
        return Err(format!(
            "declares a {what} of {} bytes ({}), longer than the {NAME_LIMIT} bytes allowed",
            text.len(),
            bounded(text, 40)
        ));
    }
    if text.trim().is_empty() {
        return Err(format!("declares an empty {what}"));
    }
    Ok(bounded(text, NAME_LIMIT * 8).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_within_the_limit_is_not_copied() {
        assert!(matches!(bounded("count 0.1.0", 64), Cow::Borrowed(_)));
        assert!(matches!(bounded("p\u{e9}rcentiles", 64), Cow::Borrowed(_)));
    }

    #[test]
    fn a_newline_cannot_start_a_line_of_its_own() {
        let forged = "zoo\n2025-01-01T00:00:00Z  WARN all is well\r\u{1b}[2K\u{2028}x";
        assert_eq!(
            bounded(forged, 1024),
            "zoo\\n2025-01-01T00:00:00Z  WARN all is well\\r\\u{1b}[2K\\u{2028}x"
        );
        assert!(!bounded(forged, 1024).chars().any(needs_escape));
    }

    #[test]
    fn long_text_is_cut_with_a_marker_giving_the_full_length() {
        let long = "\u{e9}".repeat(1000);
        let cut = bounded(&long, 11);
        assert_eq!(
            cut,
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9} [cut: 2000 bytes in all]"
        );
        // An escape is never split.
        assert_eq!(bounded("ab\n\ncd", 5), "ab\\n [cut: 6 bytes in all]");
        assert_eq!(bounded_part("abc", 10, 70), "abc [cut: 70 bytes in all]");
        assert_eq!(bounded_part("abc", 10, 3), "abc");
    }

    #[test]
    fn names_over_the_limit_are_refused_and_others_escaped() {
        let long = "n".repeat(256 << 10);
        let err = checked_name("name", &long).expect_err("too long");
        assert!(
            err.starts_with("declares a name of 262144 bytes (nnnn"),
            "{err}"
        );
        assert!(err.len() < 200, "{err}");
        assert_eq!(checked_name("name", "a\nb").expect("short"), "a\\nb");
        assert!(checked_name("version", " ").is_err());
    }
}
