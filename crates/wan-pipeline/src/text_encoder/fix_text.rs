//! The part of `ftfy.fix_text` (ftfy 6, default `TextFixerConfig`) that the Wan pipelines' prompt
//! cleaning relies on, so that a prompt reaches the tokenizer as it does in diffusers.
//!
//! Implemented, in ftfy's order and repeated until the text stops changing: HTML entity
//! unescaping (ftfy's own strict form, only while no `<` has been seen), C1 controls read as
//! Windows-1252, Latin ligatures split, full/half-width forms to normal width, curly quotes to
//! straight ones, line breaks to `\n`, ANSI terminal escapes removed, stray control characters
//! removed, NFC normalisation.
//!
//! Not implemented: ftfy's mojibake repair (`fix_encoding`: re-decoding text that went through the
//! wrong code page, guided by its "badness" heuristic). Text that is not mojibake passes it
//! unchanged, which is the case for every prompt of the reference fixtures.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::{Captures, Regex};
use tokenizers::NormalizedString;

use super::html_unescape::{html5_entities, html_unescape, windows_1252_c1};

/// ftfy's `max_decode_length`: longer lines are fixed in pieces of this many characters.
const MAX_DECODE_LENGTH: usize = 1_000_000;

fn constant_regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).unwrap_or_else(|e| unreachable!("constant regex: {e}")))
}

/// ftfy's entity table: every `;`-terminated HTML5 name, plus the upper-cased spelling of the
/// lower-case names where that spelling means nothing else (`&NTILDE;` -> `Ñ`).
fn ftfy_entities() -> &'static HashMap<String, String> {
    static MAP: OnceLock<HashMap<String, String>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::new();
        for (name, chars) in html5_entities() {
            if !name.ends_with(';') {
                continue;
            }
            map.insert(format!("&{name}"), chars.to_string());
            if *name == name.to_lowercase() {
                let upper = format!("&{}", name.to_uppercase());
                if html_unescape(&upper) == upper {
                    map.insert(upper, chars.to_uppercase());
                }
            }
        }
        map
    })
}

/// ftfy's `unescape_html`: only complete `&name;` / `&#num;` references are decoded.
fn unescape_html(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = constant_regex(&RE, r"&#?[0-9A-Za-z]{1,24};");
    re.replace_all(text, |caps: &Captures| {
        let whole = &caps[0];
        if let Some(chars) = ftfy_entities().get(whole) {
            return chars.clone();
        }
        if whole.starts_with("&#") {
            let decoded = html_unescape(whole);
            // Only a reference that consumed its `;` counts as decoded.
            if !decoded.contains(';') {
                return decoded;
            }
        }
        whole.to_string()
    })
    .into_owned()
}

fn fix_c1_controls(text: &str) -> String {
    text.chars()
        .map(|c| windows_1252_c1(c as u32).unwrap_or(c))
        .collect()
}

fn fix_latin_ligatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let replacement = match c {
            'Ĳ' => "IJ",
            'ĳ' => "ij",
            'ŉ' => "ʼn",
            'Ǳ' => "DZ",
            'ǲ' => "Dz",
            'ǳ' => "dz",
            'Ǆ' => "DŽ",
            'ǅ' => "Dž",
            'ǆ' => "dž",
            'Ǉ' => "LJ",
            'ǈ' => "Lj",
            'ǉ' => "lj",
            'Ǌ' => "NJ",
            'ǋ' => "Nj",
            'ǌ' => "nj",
            'ﬀ' => "ff",
            'ﬁ' => "fi",
            'ﬂ' => "fl",
            'ﬃ' => "ffi",
            'ﬄ' => "ffl",
            'ﬅ' => "ſt",
            'ﬆ' => "st",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(replacement);
    }
    out
}

/// Full- and half-width forms (U+FF01..U+FFEF) become their NFKC form, U+3000 a space.
fn fix_character_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{3000}' => out.push(' '),
            '\u{FF01}'..='\u{FFEF}' => {
                let mut n = NormalizedString::from(c.to_string());
                n.nfkc();
                out.push_str(n.get());
            }
            _ => out.push(c),
        }
    }
    out
}

fn uncurl_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{02BC}' | '\u{2018}'..='\u{201B}' => '\'',
            '\u{201C}'..='\u{201F}' => '"',
            _ => c,
        })
        .collect()
}

fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{0085}'], "\n")
}

fn remove_terminal_escapes(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    // `\d` is Unicode-aware in both Python's `re` and the regex crate.
    constant_regex(&RE, "\x1b\\[((?:\\d|;)*)([a-zA-Z])").replace_all(text, "").into_owned()
}

fn remove_control_chars(text: &str) -> String {
    text.chars()
        .filter(|c| {
            !matches!(*c as u32,
                0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
        })
        .collect()
}

fn nfc(text: &str) -> String {
    let mut n = NormalizedString::from(text);
    n.nfc();
    n.get().to_string()
}

/// ftfy's `fix_and_explain` on one segment: all fixes, repeated until nothing changes.
fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_string();
    loop {
        let before = text.clone();
        if unescape {
            text = unescape_html(&text);
        }
        text = fix_c1_controls(&text);
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = uncurl_quotes(&text);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text = remove_control_chars(&text);
        text = nfc(&text);
        if text == before {
            return text;
        }
    }
}

/// `ftfy.fix_text(text)` with the default configuration, minus the mojibake repair (see the
/// module documentation). Lines are fixed one at a time; HTML unescaping ("auto") stops for good
/// at the first line that contains a `<`, as in ftfy.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        if let Some((byte, _)) = rest[..end].char_indices().nth(MAX_DECODE_LENGTH) {
            end = byte;
        }
        let (segment, tail) = rest.split_at(end);
        if segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
        rest = tail;
    }
    out
}
