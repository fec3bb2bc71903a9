//! The pod's annotations as the kubelet writes them into a Kubernetes
//! downward-API volume (`fieldRef: metadata.annotations`).
//!
//! The kubelet writes one `key="value"` per annotation, sorted by key and
//! separated by `\n`, the value quoted as Go's `%q` does (`strconv.Quote`),
//! so a value never spans lines. For example:
//!
//! ```text
//! kubernetes.io/config.seen="2025-01-01T00:00:00.000000000Z"
//! note="two\nlines, a \"quote\" and \u00e9"
//! serving.openmodel.dev/weights-entry="42"
//! ```
//!
//! It replaces the file atomically (a symbolic-link swap) when the
//! annotations change, so a reader sees either the old or the new content.
//! [`parse_annotations`] turns the content into a map; the server reads the
//! `weights.verified` ledger index from it (see [`crate::provenance`]).

use std::collections::BTreeMap;

use crate::{Error, Result};

/// Parses a downward-API annotations file into key → value.
///
/// Empty lines are skipped. A line without `=`, with an empty key, with a
/// value that is not one Go double-quoted string, or a key given twice is an
/// error naming the line (1-based); bad input never panics.
pub fn parse_annotations(text: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (number, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |why: String| Error::BadAnnotations(format!("line {}: {why}", number + 1));
        let (key, quoted) = line
            .split_once('=')
            .ok_or_else(|| bad("expected key=\"value\", found no '='".into()))?;
        if key.is_empty() {
            return Err(bad("the key before '=' is empty".into()));
        }
        let value = unquote(quoted).map_err(|why| bad(format!("the value of {key:?} {why}")))?;
        if out.insert(key.to_owned(), value).is_some() {
            return Err(bad(format!("the key {key:?} is given twice")));
        }
    }
    Ok(out)
}

/// Undoes Go's `strconv.Quote`: accepts exactly one double-quoted Go string
/// literal (escapes `\a \b \f \n \r \t \v \\ \"`, `\xHH` and octal `\OOO`
/// bytes, `\uHHHH` and `\UHHHHHHHH` code points); escaped bytes that do not
/// form UTF-8 become U+FFFD. The error completes the sentence "the value … ".
fn unquote(quoted: &str) -> Result<String, String> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .ok_or_else(|| format!("is not a double-quoted string: {quoted}"))?;
    let mut bytes = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err(format!("has an unescaped '\"' inside: {quoted}")),
            '\\' => {
                let escape = chars
                    .next()
                    .ok_or_else(|| format!("ends in a lone backslash: {quoted}"))?;
                let byte = match escape {
                    'a' => 0x07,
                    'b' => 0x08,
                    'f' => 0x0c,
                    'n' => b'\n',
                    'r' => b'\r',
                    't' => b'\t',
                    'v' => 0x0b,
                    '\\' => b'\\',
                    '"' => b'"',
                    'x' => digits(&mut chars, 2, 16, quoted)? as u8,
                    '0'..='7' => {
                        let first = escape.to_digit(8).unwrap_or_default();
                        let value = first * 64 + digits(&mut chars, 2, 8, quoted)?;
                        u8::try_from(value)
                            .map_err(|_| format!("has an octal escape above \\377: {quoted}"))?
                    }
                    'u' | 'U' => {
                        let count = if escape == 'u' { 4 } else { 8 };
                        let code = digits(&mut chars, count, 16, quoted)?;
                        let c = char::from_u32(code).ok_or_else(|| {
                            format!("escapes U+{code:04X}, which is not a Unicode scalar value: {quoted}")
                        })?;
                        bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        continue;
                    }
                    other => return Err(format!("has an unknown escape \\{other}: {quoted}")),
                };
                bytes.push(byte);
            }
            c => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    // A Go string may hold any bytes; those that are not UTF-8 become U+FFFD.
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Reads `count` digits in `radix` from an escape sequence.
fn digits(
    chars: &mut std::str::Chars,
    count: usize,
    radix: u32,
    quoted: &str,
) -> Result<u32, String> {
    let mut value = 0;
    for _ in 0..count {
        let digit = chars
            .next()
            .and_then(|c| c.to_digit(radix))
            .ok_or_else(|| {
                format!("has an escape cut short (expected {count} base-{radix} digits): {quoted}")
            })?;
        value = value * radix + digit;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the kubelet writes for a pod applied with kubectl and annotated
    /// by the operator.
    const KUBELET: &str = concat!(
        "kubectl.kubernetes.io/last-applied-configuration=\"{\\\"apiVersion\\\":\\\"v1\\\",",
        "\\\"kind\\\":\\\"Pod\\\"}\\n\"\n",
        "kubernetes.io/config.seen=\"2025-01-01T00:00:00.000000000Z\"\n",
        "kubernetes.io/config.source=\"api\"\n",
        "note=\"tab\\there, bell\\a, caf\\u00e9 \\U0001F600 \\xc3\\xa9 \\303\\251 na\u{ef}ve\"\n",
        "serving.openmodel.dev/weights-entry=\"42\"",
    );

    #[test]
    fn reads_what_the_kubelet_writes() {
        let map = parse_annotations(KUBELET).unwrap();
        assert_eq!(map.len(), 5);
        assert_eq!(
            map["kubectl.kubernetes.io/last-applied-configuration"],
            "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}\n"
        );
        assert_eq!(map["kubernetes.io/config.source"], "api");
        assert_eq!(
            map["note"],
            "tab\there, bell\u{7}, café \u{1F600} é é naïve"
        );
        assert_eq!(map["serving.openmodel.dev/weights-entry"], "42");
    }

    /// Go 1.26's own output for `fmt.Sprintf("%v=%q\n", key, value)` over
    /// sorted keys, as the kubelet writes it, for values full of escapes.
    const GO_QUOTED: &str = concat!(
        r#"a="tab\there \"q\" back\\slash \x00 \x7f é \u200b 😀 \xff\xfe bell\a nl\n cr\r""#,
        "\n",
        r#"kubectl.kubernetes.io/last-applied-configuration="{\"apiVersion\":\"v1\"}\n""#,
        "\n",
        r#"serving.openmodel.dev/weights-entry="42""#,
        "\n",
        r#"z="\ufeff\u2028\U000e0001 ok""#,
    );

    #[test]
    fn reads_what_go_quotes() {
        let map = parse_annotations(GO_QUOTED).unwrap();
        assert_eq!(
            map["a"],
            "tab\there \"q\" back\\slash \0 \u{7f} é \u{200b} 😀 \u{fffd}\u{fffd} bell\u{7} nl\n cr\r"
        );
        assert_eq!(
            map["kubectl.kubernetes.io/last-applied-configuration"],
            "{\"apiVersion\":\"v1\"}\n"
        );
        assert_eq!(map["serving.openmodel.dev/weights-entry"], "42");
        assert_eq!(map["z"], "\u{feff}\u{2028}\u{e0001} ok");
    }

    #[test]
    fn empty_lines_and_an_empty_file_are_fine() {
        assert!(parse_annotations("").unwrap().is_empty());
        let map = parse_annotations("\na=\"1\"\n\nb=\"\"\n").unwrap();
        assert_eq!(map["a"], "1");
        assert_eq!(map["b"], "");
    }

    #[test]
    fn malformed_lines_are_errors_that_name_the_line() {
        for (text, needle) in [
            ("a=\"1\"\nno equals sign", "line 2: expected key=\"value\""),
            ("=\"1\"", "line 1: the key before '=' is empty"),
            ("a=1", "is not a double-quoted string"),
            ("a=\"1", "is not a double-quoted string"),
            ("a=\"", "is not a double-quoted string"),
            ("a=\"x\"y\"", "unescaped '\"'"),
            ("a=\"x\\\"", "lone backslash"),
            ("a=\"x\\\\\\\"", "lone backslash"),
            ("a=\"\\q\"", "unknown escape \\q"),
            ("a=\"\\'\"", "unknown escape \\'"),
            ("a=\"\\x4\"", "cut short"),
            ("a=\"\\u12\"", "cut short"),
            ("a=\"\\400\"", "above \\377"),
            ("a=\"\\ud800\"", "not a Unicode scalar value"),
            ("a=\"\\U00110000\"", "not a Unicode scalar value"),
            ("a=\"1\"\na=\"2\"", "line 2: the key \"a\" is given twice"),
        ] {
            let err = parse_annotations(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    /// Quotes `value` as a Go double-quoted string literal, each character
    /// written in the way `style` picks: as is (when allowed), as a `\u` or
    /// `\U` code point, or byte by byte in `\x` hex or octal.
    fn go_quote(value: &str, style: &[u8]) -> String {
        let mut out = String::from("\"");
        for (i, c) in value.chars().enumerate() {
            let pick = style.get(i % style.len().max(1)).copied().unwrap_or(0) % 4;
            let named = match c {
                '\u{7}' => Some("\\a"),
                '\u{8}' => Some("\\b"),
                '\u{c}' => Some("\\f"),
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                '\u{b}' => Some("\\v"),
                '\\' => Some("\\\\"),
                '"' => Some("\\\""),
                _ => None,
            };
            match (pick, named) {
                (0, Some(escape)) => out.push_str(escape),
                (0, None) => out.push(c),
                (1, _) if u32::from(c) <= 0xffff => {
                    out.push_str(&format!("\\u{:04x}", u32::from(c)))
                }
                (1 | 2, _) => out.push_str(&format!("\\U{:08X}", u32::from(c))),
                _ => {
                    for b in c.encode_utf8(&mut [0; 4]).bytes() {
                        if i % 2 == 0 {
                            out.push_str(&format!("\\x{b:02x}"));
                        } else {
                            out.push_str(&format!("\\{b:03o}"));
                        }
                    }
                }
            }
        }
        out.push('"');
        out
    }

    proptest! {
        #[test]
        fn never_panics(text in any::<String>()) {
            let _ = parse_annotations(&text);
        }

        #[test]
        fn never_panics_on_near_misses(text in "[a=\"\\\\xuU0-9a-f\n]{0,40}") {
            let _ = parse_annotations(&text);
        }

        #[test]
        fn quoted_values_round_trip(
            entries in proptest::collection::btree_map("[a-z0-9./-]{1,20}", any::<String>(), 0..6),
            style in proptest::collection::vec(any::<u8>(), 1..16),
        ) {
            let text: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{k}={}", go_quote(v, &style)))
                .collect();
            prop_assert_eq!(parse_annotations(&text.join("\n")).unwrap(), entries);
        }
    }
}
