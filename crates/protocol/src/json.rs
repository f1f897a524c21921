//! JSON strings on the data plane's hot path: written from a database's
//! text and read back as text, a word at a time.
//!
//! A record is mostly string bytes, and serde_json looks at a string one
//! byte at a time. These functions look at eight: a word with no quote, no
//! backslash and no control byte is copied as it is.

use std::borrow::Cow;

use serde_json::value::RawValue;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of the word is zero (exact: borrows only ever flag a
/// byte above one that is truly zero).
fn has_zero(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGHS != 0
}

/// Whether any byte of the word must be escaped in a JSON string: `"`,
/// `\` or a byte below 0x20.
fn needs_escape(word: u64) -> bool {
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    below_space || has_zero(word ^ (ONES * b'"' as u64)) || has_zero(word ^ (ONES * b'\\' as u64))
}

/// Appends `text` as a JSON string. Bytes that are not UTF-8 become
/// U+FFFD, as `String::from_utf8_lossy` makes them: a database's text in
/// another encoding is read rather than failing the sync.
pub fn write_string(text: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(text) {
        Ok(_) => write_utf8(text, out),
        Err(_) => write_utf8(String::from_utf8_lossy(text).as_bytes(), out),
    }
}

/// Appends UTF-8 `text` as a JSON string, escaped as serde_json escapes it.
fn write_utf8(text: &[u8], out: &mut Vec<u8>) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        if let Some(chunk) = text.get(i..i + 8) {
            if !needs_escape(u64::from_le_bytes(chunk.try_into().expect("eight bytes"))) {
                i += 8;
                continue;
            }
        }
        let byte = text[i];
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&text[copied..i]);
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(byte >> 4) as usize], HEX[(byte & 0xf) as usize]]);
        } else {
            out.extend_from_slice(escaped);
        }
        i += 1;
        copied = i;
    }
    out.extend_from_slice(&text[copied..]);
    out.push(b'"');
}

/// The text of a JSON string as written (`"..."`, quotes included, already
/// checked to be JSON): borrowed when it has no escape, which is the rule.
/// None when `raw` is not a string.
pub fn string_text(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim_ascii();
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if memchr_backslash(inner.as_bytes()) {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// A JSON object's values for `names`, as written (None where the object
/// has no such key); an error if `data` is not an object. Keys are matched
/// in place, the next name tried first: a record's keys mostly come in its
/// schema's order.
pub fn fields_by_name<'a, 'n>(data: &'a str, names: impl ExactSizeIterator<Item = &'n str> + Clone) -> Result<Vec<Option<&'a RawValue>>, serde_json::Error> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    #[derive(serde::Deserialize)]
    struct Key<'k>(#[serde(borrow)] Cow<'k, str>);

    struct Names<I>(I);
    impl<'de, 'n, I: ExactSizeIterator<Item = &'n str> + Clone> DeserializeSeed<'de> for Names<I> {
        type Value = Vec<Option<&'de RawValue>>;
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_map(self)
        }
    }
    impl<'de, 'n, I: ExactSizeIterator<Item = &'n str> + Clone> Visitor<'de> for Names<I> {
        type Value = Vec<Option<&'de RawValue>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let names: Vec<&str> = self.0.collect();
            let mut values = vec![None; names.len()];
            let mut next = 0;
            while let Some(Key(key)) = map.next_key()? {
                let at = if names.get(next) == Some(&key.as_ref()) { Some(next) } else { names.iter().position(|n| *n == key) };
                match at {
                    Some(i) => {
                        values[i] = Some(map.next_value()?);
                        next = i + 1;
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(values)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_str(data);
    let values = Names(names).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(values)
}

fn memchr_backslash(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        if has_zero(u64::from_le_bytes(chunk.try_into().expect("eight bytes")) ^ (ONES * b'\\' as u64)) {
            return true;
        }
    }
    words.remainder().contains(&b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(text: &[u8]) -> String {
        let mut out = Vec::new();
        write_string(text, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "exactly8".into(),
            "a \"quoted\" word and a \\ backslash, past eight bytes".into(),
            "tab\there, newline\nthere, nul\0 and \u{1f} and \u{7f}".into(),
            "snowman ☃ and emoji 🦀 between words of ascii text".into(),
            (0u8..=127).map(char::from).collect(),
        ];
        // Every escape at every offset in a word.
        for offset in 0..17 {
            for special in ['"', '\\', '\n', '\u{1}', 'é'] {
                let mut s = "x".repeat(offset);
                s.push(special);
                s.push_str(&"y".repeat(20 - offset));
                cases.push(s);
            }
        }
        for case in cases {
            assert_eq!(written(case.as_bytes()), serde_json::to_string(&case).expect("serializes"), "{case:?}");
            let text = serde_json::to_string(&case).expect("serializes");
            assert_eq!(string_text(&text).as_deref(), Some(case.as_str()), "{case:?} read back");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters() {
        assert_eq!(written(b"caf\xe9 au lait"), "\"caf\u{fffd} au lait\"");
    }

    #[test]
    fn an_objects_fields_are_found_by_name_in_any_order() {
        let data = r#"{"b": "x\"y", "a": 12.50, "skip": {"n": [1]}, "c": null}"#;
        let found = fields_by_name(data, ["a", "b", "c", "d"].into_iter()).unwrap();
        let texts: Vec<Option<&str>> = found.iter().map(|v| v.map(RawValue::get)).collect();
        assert_eq!(texts, [Some("12.50"), Some("\"x\\\"y\""), Some("null"), None], "as written: every digit, every escape");
        assert!(fields_by_name("[1, 2]", ["a"].into_iter()).is_err(), "an array is no record");
        assert!(fields_by_name("{\"a\": 1} trailing", ["a"].into_iter()).is_err());
    }

    #[test]
    fn only_strings_have_string_text() {
        assert_eq!(string_text("12"), None);
        assert_eq!(string_text("null"), None);
        assert_eq!(string_text("\"a\\u00e9\"").as_deref(), Some("aé"));
    }
}
