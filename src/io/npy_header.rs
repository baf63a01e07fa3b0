//! The header of a `.npy` array: the Python dictionary literal NumPy writes after the magic
//! string, parsed and formatted here.
//!
//! The format (NumPy's `numpy.lib.format`, versions 1.0–3.0): `\x93NUMPY`, two version bytes,
//! the header length (u16 little-endian in 1.0, u32 in 2.0 and 3.0), then the header itself,
//! `{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }`, padded with spaces and a
//! final newline so that the data starts at a multiple of 64 bytes.
//!
//! The parser accepts exactly what such a dictionary can hold for a plain array: the three keys
//! (each once, in any order, single- or double-quoted), a dtype string, `True`/`False`, and a
//! tuple of non-negative integers, with Python's whitespace and trailing commas. Anything else
//! (a structured dtype's list, unknown keys, expressions) is refused with a reason. It never
//! recurses, so no header can exhaust the stack, and it allocates at most the header's length.

/// The three fields of a `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// The dtype string (`'<f8'`, `'|b1'`, …).
    pub descr: String,
    /// Whether the data is stored in column-major (Fortran) order.
    pub fortran_order: bool,
    /// The array's shape.
    pub shape: Vec<usize>,
}

/// The `.npy` magic string.
pub(crate) const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Alignment of the data section NumPy writes (and this module writes).
const ALIGN: usize = 64;

impl Header {
    /// Parse the header dictionary (the bytes after the length field, padding included).
    pub(crate) fn parse(text: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(text)
            .map_err(|_| "invalid .npy header: it is not ASCII text".to_string())?;
        Parser { s: text, at: 0 }
            .header()
            .map_err(|e| format!("invalid .npy header: {e}"))
    }

    /// The complete prefix of a `.npy` file for this header: magic string, version, header
    /// length and the padded dictionary, so that the data starts at a multiple of 64 bytes.
    /// Version 1.0 when the header fits its 16-bit length, 2.0 otherwise.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let shape = match self.shape.as_slice() {
            [n] => format!("({n},)"),
            dims => {
                let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
                format!("({})", dims.join(", "))
            }
        };
        let order = if self.fortran_order { "True" } else { "False" };
        let dict = format!(
            "{{'descr': '{}', 'fortran_order': {order}, 'shape': {shape}, }}",
            self.descr
        );
        // Magic (6) + version (2) + length (2 or 4) + dictionary + padding + '\n'.
        let unpadded = |len_bytes: usize| MAGIC.len() + 2 + len_bytes + dict.len() + 1;
        let (version, len_bytes) = if unpadded(2).next_multiple_of(ALIGN) - 8 - 2 <= 0xFFFF {
            (1u8, 2)
        } else {
            (2u8, 4)
        };
        let total = unpadded(len_bytes).next_multiple_of(ALIGN);
        let header_len = total - MAGIC.len() - 2 - len_bytes;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[version, 0]);
        if len_bytes == 2 {
            // Checked above: the padded header fits in 16 bits.
            out.extend_from_slice(&(header_len as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header_len as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out.resize(total - 1, b' ');
        out.push(b'\n');
        out
    }
}

/// A cursor over the header text; every method consumes what it recognises.
struct Parser<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Consume `c` (after whitespace) if it is next.
    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.rest().starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {what} at byte {}", self.at))
        }
    }

    /// A quoted string without escapes (NumPy's dtype strings and keys never hold any).
    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        let quote = match self.rest().chars().next() {
            Some(q @ ('\'' | '"')) => q,
            Some('[') => return Err("structured arrays are not supported".into()),
            _ => return Err(format!("expected a quoted string at byte {}", self.at)),
        };
        let body = &self.rest()[1..];
        let end = body
            .find(quote)
            .ok_or_else(|| "unterminated string".to_string())?;
        let value = &body[..end];
        if value.contains('\\') {
            return Err("escape sequences in strings are not supported".into());
        }
        self.at += end + 2;
        Ok(value.to_string())
    }

    fn boolean(&mut self) -> Result<bool, String> {
        self.skip_space();
        for (word, value) in [("True", true), ("False", false)] {
            if self.rest().starts_with(word) {
                self.at += word.len();
                return Ok(value);
            }
        }
        Err(format!("expected True or False at byte {}", self.at))
    }

    /// A tuple of non-negative integers: `()`, `(3,)`, `(2, 3)`, `(2, 3,)`.
    fn shape(&mut self) -> Result<Vec<usize>, String> {
        self.expect('(', "a shape tuple `(…)`")?;
        let mut dims = Vec::new();
        loop {
            if self.eat(')') {
                // `(3)` is the integer 3 in Python, not a tuple.
                if dims.len() == 1 && !self.s[..self.at - 1].trim_end().ends_with(',') {
                    return Err("the shape `(n)` is not a tuple (write `(n,)`)".into());
                }
                return Ok(dims);
            }
            if !dims.is_empty() {
                self.expect(',', "`,` or `)` in the shape")?;
                if self.eat(')') {
                    return Ok(dims);
                }
            }
            self.skip_space();
            let digits = self.rest().len()
                - self
                    .rest()
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .len();
            if digits == 0 {
                return Err(format!("expected a dimension at byte {}", self.at));
            }
            let dim = self.rest()[..digits]
                .parse::<usize>()
                .map_err(|_| format!("the dimension {} overflows", &self.rest()[..digits]))?;
            self.at += digits;
            dims.push(dim);
        }
    }

    fn header(&mut self) -> Result<Header, String> {
        self.expect('{', "`{`")?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        loop {
            if self.eat('}') {
                break;
            }
            let key = self.string()?;
            self.expect(':', "`:`")?;
            let seen = match key.as_str() {
                "descr" => descr.replace(self.string()?).is_some(),
                "fortran_order" => fortran.replace(self.boolean()?).is_some(),
                "shape" => shape.replace(self.shape()?).is_some(),
                other => return Err(format!("unexpected key `{other}`")),
            };
            if seen {
                return Err(format!("the key `{key}` appears twice"));
            }
            if !self.eat(',') {
                self.expect('}', "`,` or `}`")?;
                break;
            }
        }
        if !self.rest().trim().is_empty() {
            return Err(format!(
                "unexpected text after the dictionary at byte {}",
                self.at
            ));
        }
        match (descr, fortran, shape) {
            (Some(descr), Some(fortran_order), Some(shape)) => Ok(Header {
                descr,
                fortran_order,
                shape,
            }),
            _ => Err("the keys `descr`, `fortran_order` and `shape` are required".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(descr: &str, fortran_order: bool, shape: &[usize]) -> Header {
        Header {
            descr: descr.into(),
            fortran_order,
            shape: shape.to_vec(),
        }
    }

    /// What NumPy 2.4 writes (`numpy.lib.format.write_array_header_1_0`), byte for byte, is the
    /// reference for the formatter: these prefixes were produced by
    /// `np.save(f, np.zeros(shape, dtype))` and copied here as text.
    #[test]
    fn the_prefix_is_numpys() {
        let cases = [
            (
                header("<f8", false, &[2, 3]),
                "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
            ),
            (
                header("<f4", false, &[5]),
                "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }",
            ),
            (
                header("|b1", true, &[]),
                "{'descr': '|b1', 'fortran_order': True, 'shape': (), }",
            ),
        ];
        for (h, dict) in cases {
            let bytes = h.to_bytes();
            // NumPy's header length field for all three is 118 (0x76): 128 bytes in all.
            assert_eq!(bytes.len(), 128);
            assert_eq!(&bytes[..6], MAGIC);
            assert_eq!(&bytes[6..8], &[1, 0]);
            let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
            assert_eq!(len, bytes.len() - 10);
            let text = std::str::from_utf8(&bytes[10..]).unwrap();
            assert_eq!(text.trim_end_matches('\n').trim_end(), dict);
            assert!(text.ends_with('\n'));
            assert_eq!(Header::parse(&bytes[10..]), Ok(h));
        }
    }

    #[test]
    fn a_header_past_64_kib_uses_version_2() {
        // 30 000 dimensions of "1, ": about 90 kB of dictionary, past the 16-bit length field.
        let h = header("<f8", false, &vec![1; 30_000]);
        let bytes = h.to_bytes();
        assert_eq!(&bytes[6..8], &[2, 0]);
        assert_eq!(bytes.len() % 64, 0);
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 12);
        assert_eq!(Header::parse(&bytes[12..]), Ok(h));
    }

    #[test]
    fn python_spellings_are_accepted() {
        let parsed =
            Header::parse(b" { \"shape\" :(4 ,5 ,) ,'fortran_order':True,\n 'descr':'>i8'}   \n");
        assert_eq!(parsed, Ok(header(">i8", true, &[4, 5])));
        assert_eq!(
            Header::parse(b"{'descr': '<f8', 'fortran_order': False, 'shape': ()}"),
            Ok(header("<f8", false, &[]))
        );
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        let cases: [(&[u8], &str); 12] = [
            (b"", "expected `{`"),
            (b"{'descr': '<f8', 'fortran_order': False}", "are required"),
            (
                b"{'descr': '<f8', 'descr': '<f4', 'fortran_order': False, 'shape': ()}",
                "appears twice",
            ),
            (
                b"{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': ()}",
                "structured arrays are not supported",
            ),
            (
                b"{'descr': '<f8', 'fortran_order': False, 'shape': (3), }",
                "not a tuple",
            ),
            (
                b"{'descr': '<f8', 'fortran_order': 0, 'shape': (3,), }",
                "True or False",
            ),
            (
                b"{'descr': '<f8', 'fortran_order': False, 'shape': (-3,), }",
                "expected a dimension",
            ),
            (
                b"{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
                "overflows",
            ),
            (
                b"{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'x': 1}",
                "unexpected key",
            ),
            (
                b"{'descr': '<f8', 'fortran_order': False, 'shape': (3,)} junk",
                "unexpected text",
            ),
            (b"{'descr: '<f8'}", "expected `:`"),
            (b"{'descr': '<\\x66'}", "escape sequences"),
        ];
        for (text, want) in cases {
            let err = Header::parse(text).unwrap_err();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        assert!(Header::parse(b"\xff").unwrap_err().contains("not ASCII"));
    }
}
