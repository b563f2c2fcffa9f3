//! Message identity, arrival date and header-field scanning over arbitrary message bytes.
//!
//! Input: the first 8 bytes are the size passed to `identify`; the rest is the message. Besides
//! "never panics", checked are the properties deduplication relies on:
//! - only the header counts: a message and its header block alone (as a header-only fetch
//!   returns it) have the same identity, arrival date and fields, and so does the header block
//!   followed by an empty line and any body;
//! - line ends do not count: turning CRLF into LF changes neither (with the same size passed;
//!   the size is the caller's, already counted with CRLF). Not for inputs containing `\r\r\n`,
//!   where the rewrite itself can turn a non-empty line `\r\r\n` into the empty line `\r\n`;
//! - the scanned fields are well-formed (a name with no whitespace, a value that is a slice of
//!   the input after it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry::header::{self, Field};
use mailferry::identity::{arrival_date, identify};

fn field_list(raw: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    header::fields(raw)
        .map(|f| (f.name.to_vec(), f.value()))
        .collect()
}

fn check_fields(raw: &[u8]) {
    let range = raw.as_ptr_range();
    for Field { name, folded_value } in header::fields(raw) {
        assert!(!name.is_empty() && !name.iter().any(u8::is_ascii_whitespace));
        assert!(range.contains(&name.as_ptr()));
        let value = Field { name, folded_value }.value();
        assert!(!value.starts_with(b" ") && !value.ends_with(b" "));
        assert!(!value.windows(2).any(|w| w == b"  "));
    }
}

fn crlf_to_lf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with(b"\r\n") {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((size, raw)) = data.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_le_bytes(*size);

    let id = identify(raw, size);
    let _ = id.to_string();
    let date = arrival_date(raw);
    let fields = field_list(raw);
    check_fields(raw);

    // Only the header block counts.
    let block = header::header_block(raw);
    assert!(raw.starts_with(block));
    assert_eq!(identify(block, size), id);
    assert_eq!(arrival_date(block), date);
    assert_eq!(field_list(block), fields);
    if block.is_empty() || block.ends_with(b"\n") {
        // A body after the empty line is invisible, whatever it holds.
        for separator in [&b"\r\n"[..], b"\n"] {
            let message = [block, separator, raw].concat();
            assert_eq!(identify(&message, size), id);
            assert_eq!(arrival_date(&message), date);
            assert_eq!(field_list(&message), fields);
        }
    }

    // Line ends do not count.
    if !raw.windows(3).any(|w| w == b"\r\r\n") {
        let lf = crlf_to_lf(raw);
        assert_eq!(identify(&lf, size), id);
        assert_eq!(arrival_date(&lf), date);
    }
});
