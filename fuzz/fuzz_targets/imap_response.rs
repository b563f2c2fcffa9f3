//! The IMAP response framer and parser over arbitrary server bytes.
//!
//! Input: byte 0 picks the literal cap, byte 1 the read size; the rest is what the server sent,
//! fed to the framer in reads of that size. Every complete response is parsed, as the client
//! does, until the input runs out or the framer refuses it. Checked: nothing panics, hangs or
//! allocates past the caps; the framer always takes at least one byte of a non-empty read; a
//! complete response ends with LF; and framing does not depend on how the bytes are cut.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use mailferry::imap::response::{Framer, status_text};

/// Small caps so the refusals are hit often, the client's two real ones, and "no cap".
const CAPS: [usize; 8] = [0, 1, 16, 100, 1000, 1 << 20, 8 << 20, usize::MAX];

/// `Framer::parse` catches panics inside `imap-proto` (0.17 has known ones) and turns them into
/// protocol errors, but libFuzzer's panic hook aborts before any unwinding. Let panics raised in
/// `imap-proto` unwind to that `catch_unwind` quietly; any other panic still goes to libFuzzer's
/// hook and is a crash.
fn tolerate_parser_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let libfuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parser = info
                .location()
                .is_some_and(|l| l.file().contains("/imap-proto-"));
            if !in_parser {
                libfuzzer_hook(info);
            }
        }));
    });
}

/// Frames `wire` in reads of `chunk` bytes, parsing each response; returns the responses' bytes
/// and whether the framer refused the input.
fn frame(wire: &[u8], chunk: usize, cap: usize) -> (Vec<Vec<u8>>, bool) {
    let mut framer = Framer::new(cap);
    let mut responses = Vec::new();
    for mut read in wire.chunks(chunk) {
        while !read.is_empty() {
            let used = match framer.push(read) {
                Ok(used) => used,
                Err(_) => return (responses, true),
            };
            assert!(
                used > 0 && used <= read.len(),
                "push took {used} of {}",
                read.len()
            );
            read = &read[used..];
            if framer.is_complete() {
                let bytes = framer.bytes();
                assert!(bytes.ends_with(b"\n"));
                let _ = framer.parse();
                let _ = status_text(bytes);
                responses.push(bytes.to_vec());
                framer.clear();
            } else {
                assert!(read.is_empty(), "an incomplete response left input unread");
            }
        }
    }
    (responses, false)
}

fuzz_target!(|data: &[u8]| {
    tolerate_parser_panics();
    let [cap_pick, chunk_pick, wire @ ..] = data else {
        return;
    };
    let cap = CAPS[usize::from(*cap_pick) % CAPS.len()];
    let chunk = usize::from(*chunk_pick) + 1;

    let (whole, refused) = frame(wire, wire.len().max(1), cap);
    let (cut, cut_refused) = frame(wire, chunk, cap);
    assert_eq!(cut, whole);
    assert_eq!(cut_refused, refused);
});
