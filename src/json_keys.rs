//! The keys of a JSON object as written, to refuse duplicates: `serde_json` (like most JSON
//! readers) silently keeps the last of two equal keys, which would drop a tensor or a spec
//! entry without a word.

/// The raw (still escaped) keys of the top-level object of `text`, in order, if `text` is an
/// object; meant for text that already parsed as JSON (it does not validate).
pub(crate) fn top_level_keys(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut keys = Vec::new();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
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
                if depth == 1 && next == Some(&b':') {
                    keys.push(text.get(start..end).unwrap_or_default());
                }
            }
            _ => {}
        }
        i += 1;
    }
    keys
}

/// The first key of the top-level object of `text` written twice, if any (as written).
pub(crate) fn duplicate_key(text: &str) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    top_level_keys(text).into_iter().find(|k| !seen.insert(*k))
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
}
