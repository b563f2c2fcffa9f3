//! The POP3 multi-line reader and status-line reader over arbitrary server bytes.
//!
//! Input: byte 0 picks the body cap, byte 1 the read size of a second, chunked pass; the rest is
//! what the server sent. Checked:
//! - nothing panics, hangs or grows past the cap;
//! - the result does not depend on how the bytes are cut into reads (same body, same kind of
//!   error, same bytes left unread after the terminator);
//! - `read_multiline(encode_multiline(body)) == body` for any body that is empty or ends with
//!   LF (the documented domain), the wire input itself being used as the body.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use mailferry::error::SessionError;
use mailferry::pop3::codec::{encode_multiline, read_multiline, read_status};

/// Small caps so the cap paths are hit often; `usize::MAX` for "no cap".
const CAPS: [usize; 8] = [0, 1, 2, 5, 16, 64, 1024, usize::MAX];

/// What a read came to, comparable across reads: the body, or which kind of error.
#[derive(Debug, PartialEq, Eq)]
enum Outcome<T> {
    Ok(T),
    Closed,
    Protocol,
}

fn outcome<T>(result: Result<T, SessionError>) -> Outcome<T> {
    match result {
        Ok(value) => Outcome::Ok(value),
        Err(SessionError::Closed) => Outcome::Closed,
        Err(SessionError::Protocol(_)) => Outcome::Protocol,
        Err(other) => panic!("unexpected error from a byte slice: {other:?}"),
    }
}

/// The bytes a `BufReader` over a slice has not handed out yet.
fn unread(reader: BufReader<&[u8]>) -> Vec<u8> {
    let mut rest = reader.buffer().to_vec();
    rest.extend_from_slice(reader.into_inner());
    rest
}

fuzz_target!(|data: &[u8]| {
    let [cap_pick, chunk_pick, wire @ ..] = data else {
        return;
    };
    let cap = CAPS[usize::from(*cap_pick) % CAPS.len()];
    let chunk = usize::from(*chunk_pick % 16) + 1;

    // The whole input in one read.
    let mut whole = wire;
    let body = outcome(read_multiline(&mut whole, cap));
    if let Outcome::Ok(body) = &body {
        assert!(body.len() <= cap);
    }
    // What follows a multi-line response is the next status line (pipelining).
    let status = outcome(read_status(&mut whole));

    // The same bytes in reads of `chunk` bytes.
    let mut chunked = BufReader::with_capacity(chunk, wire);
    assert_eq!(outcome(read_multiline(&mut chunked, cap)), body);
    if matches!(body, Outcome::Ok(_)) {
        let status_chunked = outcome(read_status(&mut chunked));
        assert_eq!(status_chunked, status);
        assert_eq!(unread(chunked), whole);
    }

    // Round trip, over the documented domain: a body that is empty or ends with LF.
    if wire.is_empty() || wire.ends_with(b"\n") {
        let encoded = encode_multiline(wire);
        let mut reader = &encoded[..];
        assert_eq!(read_multiline(&mut reader, usize::MAX).unwrap(), wire);
        assert!(reader.is_empty(), "bytes left after the terminator");
        let mut reader = BufReader::with_capacity(chunk, &encoded[..]);
        assert_eq!(read_multiline(&mut reader, wire.len()).unwrap(), wire);
        assert!(unread(reader).is_empty());
    }
    // And for bodies of CRLF-terminated lines built from the input (any bytes but LF in a line).
    let mut crlf_body = Vec::with_capacity(wire.len() + 2);
    for line in wire.split(|&b| b == b'\n') {
        crlf_body.extend_from_slice(line);
        crlf_body.extend_from_slice(b"\r\n");
    }
    let encoded = encode_multiline(&crlf_body);
    assert_eq!(
        read_multiline(
            &mut BufReader::with_capacity(chunk, &encoded[..]),
            crlf_body.len()
        )
        .unwrap(),
        crlf_body
    );
});
