//! The keys of a JSON object as written, to refuse duplicates: `serde_json` (like most JSON
//! readers) silently keeps the last of two equal keys, which would drop a tensor or a spec
//! entry without a word.

use std::collections::HashSet;
use std::ops::ControlFlow;

/// What [`walk`] reports: a bracket opening (`true` for an object) or closing, or an object
/// key as written (still escaped).
#[cfg_attr(not(feature = "serde"), allow(dead_code))] // `Open`'s kind: spec JSON only
enum Event<'a> {
    Open(bool),
    Close,
    Key(&'a str),
}

/// Report the brackets and object keys of `text` in order, until `on` breaks; meant for text
/// that already parsed as JSON (it does not validate).
fn walk<'a, B>(text: &'a str, mut on: impl FnMut(Event<'a>) -> ControlFlow<B>) -> Option<B> {
    let bytes = text.as_bytes();
    let mut i = 0usize;
    while i < bytes.len() {
        let event = match bytes[i] {
            b'{' => Some(Event::Open(true)),
            b'[' => Some(Event::Open(false)),
            b'}' | b']' => Some(Event::Close),
            b'"' => {
                let start = i + 1;
                i = start;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let end = i.min(bytes.len());
                let next = bytes[end.saturating_add(1).min(bytes.len())..]
                    .iter()
                    .find(|b| !b.is_ascii_whitespace());
                (next == Some(&b':')).then(|| Event::Key(text.get(start..end).unwrap_or_default()))
            }
            _ => None,
        };
        if let Some(event) = event
            && let ControlFlow::Break(b) = on(event)
        {
            return Some(b);
        }
        i += 1;
    }
    None
}

/// The raw (still escaped) keys of the top-level object of `text`, in order, if `text` is an
/// object; meant for text that already parsed as JSON (it does not validate).
pub(crate) fn top_level_keys(text: &str) -> Vec<&str> {
    let (mut keys, mut depth) = (Vec::new(), 0usize);
    walk::<()>(text, |event| {
        match event {
            Event::Open(_) => depth += 1,
            Event::Close => depth = depth.saturating_sub(1),
            Event::Key(key) if depth == 1 => keys.push(key),
            Event::Key(_) => {}
        }
        ControlFlow::Continue(())
    });
    keys
}

/// The first key of the top-level object of `text` written twice, if any (as written).
pub(crate) fn duplicate_key(text: &str) -> Option<&str> {
    let mut seen = HashSet::new();
    top_level_keys(text).into_iter().find(|k| !seen.insert(*k))
}

/// A JSON string's contents (between the quotes) with its escapes decoded, so that `"w"` and
/// `"\u0077"` compare equal; `None` for a malformed escape.
#[cfg(feature = "serde")]
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    let hex4 = |chars: &mut std::str::Chars<'_>| -> Option<u32> {
        let digits: String = chars.take(4).collect();
        (digits.len() == 4).then_some(())?;
        u32::from_str_radix(&digits, 16).ok()
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hi = hex4(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    // A surrogate pair: `\uD83D\uDE00`.
                    (chars.next()? == '\\' && chars.next()? == 'u').then_some(())?;
                    let lo = hex4(&mut chars)?;
                    0x10000 + ((hi - 0xD800) << 10) + (lo.checked_sub(0xDC00)? & 0x3FF)
                } else {
                    hi
                };
                char::from_u32(code)?
            }
            _ => return None,
        });
    }
    Some(out)
}

/// The first key written twice in the same object anywhere in `text` (at any depth, escapes
/// decoded before comparing), as written; meant for text that already parsed as JSON (it does
/// not validate).
#[cfg(feature = "serde")]
pub(crate) fn duplicate_key_anywhere(text: &str) -> Option<&str> {
    // One entry per open bracket: the keys seen so far if it is an object, `None` if an array.
    let mut open: Vec<Option<HashSet<String>>> = Vec::new();
    walk(text, |event| {
        match event {
            Event::Open(object) => open.push(object.then(HashSet::new)),
            Event::Close => {
                open.pop();
            }
            Event::Key(key) => {
                if let Some(Some(keys)) = open.last_mut()
                    && !keys.insert(unescape(key).unwrap_or_else(|| key.to_string()))
                {
                    return ControlFlow::Break(key);
                }
            }
        }
        ControlFlow::Continue(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_at_the_top_level_only() {
        let text = r#" {"a": {"b": 1, "c": [{"d": 2}]}, "e\"f": "g:h", "i" : [1, 2]} "#;
        assert_eq!(top_level_keys(text), ["a", r#"e\"f"#, "i"]);
        assert_eq!(duplicate_key(text), None);
        assert_eq!(
            duplicate_key(r#"{"w": 1, "x": {"w": 2}, "w": 3}"#),
            Some("w")
        );
        assert!(top_level_keys("[1, 2]").is_empty());
    }

    #[test]
    #[cfg(feature = "serde")]
    fn duplicates_at_any_depth() {
        // Equal keys in different objects are fine; in one object, at any depth, they are not.
        let fine = r#"{"a": {"w": 1}, "b": {"w": 2}, "c": [{"w": 3}, {"w": 4}], "w": "x:y"}"#;
        assert_eq!(duplicate_key_anywhere(fine), None);
        assert_eq!(
            duplicate_key_anywhere(r#"{"params": {"w": [null], "v": [], "w": ["P"]}}"#),
            Some("w")
        );
        assert_eq!(
            duplicate_key_anywhere(r#"{"x": [{"a": 1}, {"b": {"q\"": 1, "q\"": 2}}]}"#),
            Some(r#"q\""#)
        );
        assert_eq!(duplicate_key_anywhere(r#"{"k": 1, "k": 2}"#), Some("k"));
        // Escapes are decoded before comparing: `w` written as `\u0077`, `😀` as a pair.
        assert_eq!(
            duplicate_key_anywhere(r#"{"p": {"w": 1, "\u0077": 2}}"#),
            Some(r"\u0077")
        );
        assert_eq!(
            duplicate_key_anywhere(r#"{"😀\n": 1, "\ud83d\ude00\u000a": 2}"#),
            Some(r"\ud83d\ude00\u000a")
        );
        assert_eq!(
            duplicate_key_anywhere(r#"{"a\/b": 1, "a/b": 2}"#),
            Some("a/b")
        );
    }
}
