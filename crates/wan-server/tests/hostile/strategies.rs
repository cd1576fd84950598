//! Generators of hostile requests: a route of the server (or none), a path whose `{id}` and
//! `{filename}` are traversal attempts, junk or huge, a query of wrong types and huge numbers, and
//! a body that is malformed JSON, a JSON object with wrong types, huge values, unicode and missing
//! fields, raw bytes, or a multipart form with odd parts.

use proptest::prelude::*;

/// A request as sent.
#[derive(Debug, Clone)]
pub struct HostileRequest {
    pub method: String,
    /// Path and query, as written on the request line (percent-escapes kept).
    pub path: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Boundary of every generated multipart body.
pub const BOUNDARY: &str = "hostileBoundary7MA4YWxk";

/// Every field any route reads, plus names no route knows.
const FIELDS: &[&str] = &[
    "prompt", "prompts", "negative_prompt", "num_frames", "fps", "width", "height", "seed", "guidance_scale",
    "num_inference_steps", "strength", "priority", "user_id", "callback_url", "image_start", "image_key",
    "video_key", "model_id", "role", "revision", "__proto__", "", "prompt\u{0}",
];

/// Numbers JSON parsers and range checks trip on, written as JSON text.
const WEIRD_NUMBERS: &[&str] = &[
    "0", "-1", "1", "16", "64", "-0", "1e309", "-1e309", "1e-400", "18446744073709551616", "-9223372036854775809",
    "9223372036854775807", "4294967296", "2147483648", "0.5", "1.0000000000000002", "3.4e38", "99999999999999999999999999999",
];

/// Text a handler might treat specially.
const WEIRD_STRINGS: &[&str] = &[
    "", " ", "..", "../../etc/passwd", "/etc/passwd", "%2e%2e%2f", "uploads/../../x", "uploads/up_0123456789abcdef01234567.png",
    "wan-tiny-t2v/../../..", "org/name", "http://127.0.0.1:9/hook", "file:///etc/passwd", "high", "urgent", "t2v", "x2v",
    "data:image/png;base64,iVBORw0KGgo=", "NaN", "Infinity", "null", "\u{202e}\u{1F600}\u{0}", "\u{FEFF}prompt", "ñ日本語",
];

/// Path segments for `{id}` and `{filename}`.
const WEIRD_SEGMENTS: &[&str] = &[
    "job_1_abcdef123456", "..", "%2e%2e", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "..%2f..%2fsecret.txt", "%2fetc%2fpasswd",
    "..%5c..%5cwin.ini", ".partial%2fjob.mp4", ".hidden.mp4", "%00", "%ff%fe", "%F0%9F%98%80", "job_1_abcdef123456%00.mp4",
    "x.mp4", "job_%2e%2e_1", "%25%32%65%25%32%65", "CON", "a;b=c", "~root", "*",
];

pub fn json_string_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WEIRD_STRINGS).prop_map(|s| serde_json::to_string(s).unwrap()),
        3 => any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        // Huge strings (the generation routes allow 32 MiB of JSON, the others 1 MiB).
        1 => (prop::sample::select(&[1_000usize, 70_000, 1_100_000][..]), any::<char>())
            .prop_map(|(n, c)| serde_json::to_string(&c.to_string().repeat(n)).unwrap()),
        // Escapes serde must refuse or handle: lone surrogates, bad escapes.
        1 => prop::sample::select(&[r#""\ud800""#, r#""\udc00x""#, r#""\x41""#, r#""\u00""#, "\"unterminated"][..]).prop_map(str::to_string),
    ]
}

/// One JSON value as text (some of them not valid JSON at all).
pub fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => prop::sample::select(WEIRD_NUMBERS).prop_map(str::to_string),
        3 => json_string_literal(),
        1 => prop::sample::select(&["null", "true", "false", "[]", "{}", "NaN", "-Infinity", "0x10", "01"][..]).prop_map(str::to_string),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|x| format!("{x:e}")),
        // Nesting past serde_json's recursion limit.
        1 => (1usize..3000).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((json_string_literal(), inner), 0..3)
                .prop_map(|kv| format!("{{{}}}", kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(","))),
        ]
    })
}

/// A plausible valid value for `field`, so that objects get past the first check sometimes.
fn plausible(field: &str) -> String {
    match field {
        "prompt" | "negative_prompt" | "user_id" => "\"a cat\"".into(),
        "prompts" => "[\"a\",\"b\"]".into(),
        "num_frames" => "5".into(),
        "fps" => "8".into(),
        "width" | "height" => "64".into(),
        "seed" => "7".into(),
        "guidance_scale" => "5.0".into(),
        "num_inference_steps" => "2".into(),
        "strength" => "0.5".into(),
        "priority" => "\"low\"".into(),
        "role" => "\"t2v\"".into(),
        _ => "\"x\"".into(),
    }
}

/// A JSON object over [`FIELDS`]: each field missing, plausible, or replaced by a hostile value.
pub fn json_object() -> impl Strategy<Value = String> {
    let field = (prop::sample::select(FIELDS), 0u8..3, json_value()).prop_map(|(name, how, value)| match how {
        0 => None,
        1 => Some(format!("{}:{}", serde_json::to_string(name).unwrap(), plausible(name))),
        _ => Some(format!("{}:{value}", serde_json::to_string(name).unwrap())),
    });
    prop::collection::vec(field, 0..8).prop_map(|fs| format!("{{{}}}", fs.into_iter().flatten().collect::<Vec<_>>().join(",")))
}

/// A body: a JSON object (whole or cut anywhere), any JSON value, or raw bytes.
pub fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        5 => json_object().prop_map(String::into_bytes),
        2 => (json_object(), any::<prop::sample::Index>()).prop_map(|(o, cut)| o.as_bytes()[..cut.index(o.len() + 1)].to_vec()),
        2 => json_value().prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), 0..600),
        1 => Just(Vec::new()),
    ]
}

/// A multipart form: text parts with hostile values and file parts of random or truncated bytes,
/// sometimes without its closing boundary or with broken part headers.
pub fn multipart_body() -> impl Strategy<Value = Vec<u8>> {
    let file_names = prop::sample::select(&["image", "video", "file", "prompt", "image_key", "video_key", "strength", "x"][..]);
    let part = (file_names, any::<bool>(), prop::option::of(json_string_literal()), prop::collection::vec(any::<u8>(), 0..400), 0u8..4).prop_map(
        |(name, is_file, filename, bytes, header_kind)| {
            let mut out = format!("--{BOUNDARY}\r\n").into_bytes();
            let disposition = match header_kind {
                0 => format!("Content-Disposition: form-data; name=\"{name}\""),
                1 => format!("Content-Disposition: form-data; name={name}; filename={}", filename.unwrap_or_default()),
                2 => "Content-Disposition: attachment".to_string(),
                _ => format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"../../{name}.png\"\r\nContent-Type: image/png"),
            };
            out.extend_from_slice(disposition.as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            if is_file {
                out.extend_from_slice(&bytes);
            } else {
                out.extend_from_slice(String::from_utf8_lossy(&bytes).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out
        },
    );
    (prop::collection::vec(part, 0..5), any::<bool>()).prop_map(|(parts, close)| {
        let mut out: Vec<u8> = parts.concat();
        if close {
            out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        }
        out
    })
}

/// A path segment for `{id}` / `{filename}`.
pub fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WEIRD_SEGMENTS).prop_map(str::to_string),
        2 => "[A-Za-z0-9._~%-]{0,40}",
        1 => (1usize..6000).prop_map(|n| "a".repeat(n)),
        1 => any::<String>().prop_map(|s| percent_encode(&s)),
    ]
}

/// A query string (without `?`): known and unknown keys with wrong types, huge numbers, unicode.
pub fn query() -> impl Strategy<Value = String> {
    let key = prop::sample::select(&["limit", "offset", "status", "file_type", "width", "user_id", "x", "limit[]", ""][..]);
    let value = prop_oneof![
        prop::sample::select(WEIRD_NUMBERS).prop_map(str::to_string),
        prop::sample::select(WEIRD_STRINGS).prop_map(percent_encode),
        prop::sample::select(&["completed", "video", "image", "%", "%zz", "a&b", "1;2"][..]).prop_map(str::to_string),
    ];
    prop::collection::vec((key, value), 0..5).prop_map(|kv| kv.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"))
}

/// Percent-encodes everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A whole request: one of `routes` (method, template) or a made-up path, with the template's
/// parameters filled by [`segment`], a query, a content type and a body.
pub fn request(routes: &'static [(&'static str, &'static str)]) -> impl Strategy<Value = HostileRequest> {
    let route = prop_oneof![
        9 => prop::sample::select(routes).prop_map(|(m, p)| (m.to_string(), p.to_string())),
        1 => (prop::sample::select(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"][..]), "(/[a-z0-9.%{}]{0,12}){1,4}")
            .prop_map(|(m, p)| (m.to_string(), p)),
    ];
    let method_swap = prop::option::weighted(0.1, prop::sample::select(&["GET", "POST", "PUT", "DELETE", "PATCH"][..]));
    let content_type = prop::option::weighted(
        0.9,
        prop::sample::select(
            &["application/json", "application/json; charset=utf-16", "multipart/form-data", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=", "application/json;;;==="][..],
        ),
    );
    let multipart = any::<bool>();
    (route, method_swap, segment(), segment(), prop::option::of(query()), content_type, multipart, body(), multipart_body()).prop_map(
        |((method, template), swap, id, filename, query, content_type, use_multipart, body, form)| {
            let mut path = template.replace("{id}", &id).replace("{filename}", &filename);
            if let Some(q) = query {
                path = format!("{path}?{q}");
            }
            let (content_type, body) = if use_multipart && method == "POST" {
                (Some(format!("multipart/form-data; boundary={BOUNDARY}")), form)
            } else {
                (content_type.map(str::to_string), body)
            };
            HostileRequest { method: swap.unwrap_or(&method).to_string(), path, content_type, body }
        },
    )
}
