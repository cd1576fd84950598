//! Python's `html.unescape`, exactly: the prompt cleaning of the diffusers Wan pipelines calls it
//! twice, and a prompt must tokenize to the same ids as it does there.
//!
//! Semantics kept from CPython's `html/__init__.py`: the HTML5 named references (with and without
//! `;` where the standard allows it), the longest-prefix rule for names that run into other text
//! (`&ampxyz` -> `&xyz`), numeric references with the Windows-1252 remapping of 0x80-0x9F,
//! U+FFFD for NUL, surrogates and out-of-range numbers, and silent removal of the code points the
//! standard forbids.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::{Captures, Regex};

/// The HTML5 named references keyed by their name without the leading `&`
/// (`"amp;"`, `"amp"`, `"AElig;"`...), as Python's `html.entities.html5`.
pub(crate) fn html5_entities() -> &'static HashMap<&'static str, &'static str> {
    static MAP: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    MAP.get_or_init(|| {
        entities::ENTITIES
            .iter()
            .map(|e| (e.entity.trim_start_matches('&'), e.characters))
            .collect()
    })
}

fn charref_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // The same pattern as CPython's `html._charref`; `{1,32}` counts characters, as in Python.
    RE.get_or_init(|| {
        Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
            .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
    })
}

/// What a numeric reference 0x80..=0x9F (and NUL, CR) stands for: browsers read these bytes as
/// Windows-1252; the five bytes that code page leaves undefined map to themselves.
pub(crate) fn windows_1252_c1(code: u32) -> Option<char> {
    const TABLE: [u32; 32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013,
        0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
    ];
    match code {
        0x80..=0x9F => char::from_u32(TABLE[(code - 0x80) as usize]),
        _ => None,
    }
}

/// Code points that a numeric reference may not produce; Python drops the reference entirely.
fn is_invalid_codepoint(code: u32) -> bool {
    matches!(code, 0x1..=0x8 | 0xB | 0xE..=0x1F | 0x7F..=0x9F | 0xFDD0..=0xFDEF)
        || ((code & 0xFFFE) == 0xFFFE && code <= 0x10FFFF)
}

/// Parses the digits of a numeric reference, saturating instead of overflowing: every number
/// past U+10FFFF is treated alike.
fn parse_saturating(digits: &str, radix: u32) -> u32 {
    digits.chars().filter_map(|c| c.to_digit(radix)).fold(0u32, |acc, d| {
        acc.saturating_mul(radix).saturating_add(d).min(0x0011_0000)
    })
}

fn replace_numeric(body: &str) -> String {
    let body = body.trim_end_matches(';');
    let code = match body.strip_prefix(['x', 'X']) {
        Some(hex) => parse_saturating(hex, 16),
        None => parse_saturating(body, 10),
    };
    match code {
        0x00 => "\u{FFFD}".to_string(),
        0x0D => "\r".to_string(),
        0x80..=0x9F => windows_1252_c1(code).map(String::from).unwrap_or_default(),
        0xD800..=0xDFFF => "\u{FFFD}".to_string(),
        c if c > 0x10FFFF => "\u{FFFD}".to_string(),
        c if is_invalid_codepoint(c) => String::new(),
        c => char::from_u32(c).map(String::from).unwrap_or_else(|| "\u{FFFD}".to_string()),
    }
}

fn replace_named(name: &str) -> String {
    let table = html5_entities();
    if let Some(chars) = table.get(name) {
        return (*chars).to_string();
    }
    // Longest prefix of at least two characters that is a known name (legacy references such as
    // `&copy` are allowed to run into the following text).
    let boundaries: Vec<usize> = name.char_indices().map(|(i, _)| i).collect();
    for &end in boundaries.iter().skip(2).rev() {
        if let Some(chars) = table.get(&name[..end]) {
            return format!("{chars}{}", &name[end..]);
        }
    }
    format!("&{name}")
}

/// Python's `html.unescape(s)`.
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    charref_regex()
        .replace_all(text, |caps: &Captures| {
            let body = &caps[1];
            match body.strip_prefix('#') {
                Some(numeric) => replace_numeric(numeric),
                None => replace_named(body),
            }
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::html_unescape;

    // Every expected string below was printed by CPython 3.11's `html.unescape` on the input.
    #[test]
    fn named_references_with_and_without_semicolon() {
        assert_eq!(html_unescape("&amp; &lt;b&gt; &quot;x&quot;"), "& <b> \"x\"");
        assert_eq!(html_unescape("&copy 2024 &eacute;t&eacute;"), "© 2024 été");
        assert_eq!(html_unescape("&ampxyz &notit; &notin;"), "&xyz ¬it; ∉");
        assert_eq!(html_unescape("&NotAnEntity; & &;"), "&NotAnEntity; & &;");
        assert_eq!(html_unescape("&amp;lt;"), "&lt;");
    }

    #[test]
    fn numeric_references() {
        assert_eq!(html_unescape("&#65;&#x42;&#X43 &#0;"), "ABC \u{FFFD}");
        assert_eq!(html_unescape("&#150;&#x80;&#129;"), "\u{2013}\u{20AC}\u{81}");
        assert_eq!(html_unescape("a&#1;b&#xFFFF;c&#x110000;d&#xD800;e"), "abc\u{FFFD}d\u{FFFD}e");
        assert_eq!(html_unescape("&#99999999999999999999999;"), "\u{FFFD}");
        assert_eq!(html_unescape("&#x;&#;&#12a"), "&#x;&#;\u{C}a");
    }
}
