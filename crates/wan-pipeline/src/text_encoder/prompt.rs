//! Prompt cleaning as the diffusers Wan pipelines do it before tokenizing:
//! `prompt_clean(text) = whitespace_clean(basic_clean(text))`, where `basic_clean` is
//! `ftfy.fix_text`, `html.unescape` twice and `strip()`, and `whitespace_clean` collapses every run
//! of whitespace to one space and strips. The tokenizer sees exactly this string, so every step
//! keeps Python's semantics (including what Python counts as whitespace).

use super::fix_text::fix_text;
use super::html_unescape::html_unescape;

/// Python's `str.isspace()` (and `re`'s `\s`): Unicode White_Space plus the four information
/// separators U+001C..U+001F, which Python also treats as whitespace.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

/// `re.sub(r"\s+", " ", text).strip()`.
fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if is_python_space(c) {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

/// The prompt as the Wan pipelines hand it to the tokenizer.
pub fn prompt_clean(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    // basic_clean's own strip() is subsumed by whitespace_clean's.
    whitespace_clean(&unescaped)
}

#[cfg(test)]
mod tests {
    use super::prompt_clean;

    /// Expected values: printed by Python 3.11 with ftfy 6.3.1 running diffusers' definition
    /// `whitespace_clean(basic_clean(text))` on the same inputs.
    #[test]
    fn cleans_like_the_python_pipeline() {
        let cases = [
            ("  Multiple   spaces\tand\nnewlines &amp; HTML &lt;b&gt;entities&lt;/b&gt;  ", "Multiple spaces and newlines & HTML <b>entities</b>"),
            ("A café in Zürich — “smart quotes”, naïve façade, 東京の夜景 🐱 Ωmega", "A café in Zürich — \"smart quotes\", naïve façade, 東京の夜景 🐱 Ωmega"),
            ("it‘s ‚low‛ „double‟ ʼapos", "it's 'low' \"double\" 'apos"),
            ("ﬁne ﬂower ﬀ ﬃ ﬄ ﬅ ﬆ Ĳssel ǆ", "fine flower ff ffi ffl ſt st IJssel dž"),
            ("ＦＵＬＬ　ｗｉｄｔｈ！ ｶﾀｶﾅ ￥５", "FULL width! カタカナ ¥5"),
            ("cafe\u{301} n\u{303}", "café ñ"),
            ("\u{1b}[1;31mred\u{1b}[0m text\u{7}\u{feff}", "red text"),
            ("price \u{80}5 \u{93}q\u{94}", "price €5 \"q\""),
            ("&amp;amp; &amp;lt;x&amp;gt; &NTILDE; &eacute &#233; &#x27;", "& <x> Ñ é é '"),
            ("a < b &amp; c", "a < b & c"),
            ("line1 &lt;\nline2 &amp;amp;\r\nline3\u{2028}\u{1c}end", "line1 < line2 & line3 end"),
            ("\u{a0}\u{3000} nbsp\u{2009}thin ", "nbsp thin"),
            ("", ""),
        ];
        for (raw, expected) in cases {
            assert_eq!(prompt_clean(raw), expected, "prompt_clean({raw:?})");
        }
    }
}
