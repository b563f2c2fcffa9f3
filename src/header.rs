//! Reading header fields out of raw message bytes, without decoding them.
//!
//! Mail headers are bytes, not text: 8-bit values, bare LF line ends and messages without a
//! body all occur in real mailboxes. This scanner only splits the header block into fields and
//! unfolds values; it never fails, so every message gets the same treatment on the source side
//! and on the target side.

/// The header block of a message: everything before the first empty line (or the whole message
/// when there is no empty line).
pub fn header_block(raw: &[u8]) -> &[u8] {
    let mut line_start = 0;
    while line_start < raw.len() {
        let line_end = raw[line_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| line_start + i + 1);
        let line = &raw[line_start..line_end];
        if line == b"\r\n" || line == b"\n" {
            return &raw[..line_start];
        }
        line_start = line_end;
    }
    raw
}

/// One header field: its name as written and its value with the folding line breaks removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name, as written (compare with [`Field::is`]).
    pub name: &'a [u8],
    /// The raw value, still folded (line breaks and leading whitespace of continuations kept).
    pub folded_value: &'a [u8],
}

impl Field<'_> {
    /// Whether this field has the given name, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value with line breaks removed, runs of whitespace collapsed to one space and the
    /// ends trimmed: the form in which two copies of one header compare equal however the
    /// server re-folded them.
    pub fn value(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.folded_value.len());
        for &b in self.folded_value {
            if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                if out.last().is_some_and(|&last| last != b' ') {
                    out.push(b' ');
                }
            } else {
                out.push(b);
            }
        }
        if out.last() == Some(&b' ') {
            out.pop();
        }
        out
    }
}

/// The fields of a message's header block, in order. Lines that are neither a field nor a
/// continuation (garbage, an mbox `From ` line) are skipped.
pub fn fields(raw: &[u8]) -> impl Iterator<Item = Field<'_>> {
    let block = header_block(raw);
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < block.len() {
            let start = pos;
            pos = next_line(block, pos);
            // Continuation lines belong to the field before them.
            while pos < block.len() && matches!(block[pos], b' ' | b'\t') {
                pos = next_line(block, pos);
            }
            let field = &block[start..pos];
            if let Some(colon) = field.iter().position(|&b| b == b':') {
                let name = trim_ascii_end(&field[..colon]);
                if !name.is_empty() && !name.iter().any(|b| b.is_ascii_whitespace()) {
                    return Some(Field {
                        name,
                        folded_value: &field[colon + 1..],
                    });
                }
            }
        }
        None
    })
}

/// The first field with this name.
pub fn first<'a>(raw: &'a [u8], name: &str) -> Option<Field<'a>> {
    fields(raw).find(|f| f.is(name))
}

fn next_line(block: &[u8], from: usize) -> usize {
    block[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(block.len(), |i| from + i + 1)
}

fn trim_ascii_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fields_and_unfolds_continuations() {
        let raw = b"From: a@b\r\nSubject: one\r\n two\r\n\tthree\r\n\r\nBody: not a header\r\n";
        let got: Vec<_> = fields(raw).map(|f| (f.name, f.value())).collect();
        assert_eq!(
            got,
            vec![
                (&b"From"[..], b"a@b".to_vec()),
                (&b"Subject"[..], b"one two three".to_vec()),
            ]
        );
    }

    #[test]
    fn bare_lf_and_no_body_are_fine() {
        let raw = b"Subject: x\nMessage-ID: <a@b>\n";
        assert_eq!(first(raw, "message-id").unwrap().value(), b"<a@b>");
        assert_eq!(header_block(raw), raw);
    }

    #[test]
    fn skips_lines_that_are_not_fields() {
        let raw = b"From someone Mon Jan 1\nX-Ok: 1\ngarbage line\n\nbody";
        let names: Vec<_> = fields(raw).map(|f| f.name.to_vec()).collect();
        assert_eq!(names, vec![b"X-Ok".to_vec()]);
    }

    #[test]
    fn eight_bit_values_pass_through() {
        let raw = b"Subject: caf\xe9\r\n\r\n";
        assert_eq!(first(raw, "Subject").unwrap().value(), b"caf\xe9");
    }
}
