//! The POP3 wire format without a socket: status lines (RFC 1939, with RFC 2449 response codes),
//! multi-line responses with dot-stuffing undone byte for byte, and the parsers for CAPA, STAT,
//! LIST and UIDL. Readers take any [`BufRead`], so tests and fuzzers feed byte slices cut anywhere.
//!
//! Mail is never decoded: a multi-line body comes back as the exact bytes the server meant,
//! with its own line endings (8-bit, NUL, bare CR and megabyte lines included). Only status and
//! CAPA text, which is meant for humans, is decoded (lossily) to a `String`.

use std::io::{self, BufRead};

use crate::error::SessionError;

/// Longest status line accepted. RFC 2449 allows 512 octets, but some servers put long
/// explanations in `-ERR`; past this the peer is not speaking POP3.
pub const MAX_STATUS_LINE: usize = 64 * 1024;

/// A `+OK` or `-ERR` status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `true` for `+OK`, `false` for `-ERR`.
    pub ok: bool,
    /// The RFC 2449 response code without brackets, upper-cased: `IN-USE`, `SYS/TEMP`, `AUTH`, ...
    pub code: Option<String>,
    /// The text after the indicator, response code included: what the user should see.
    pub text: String,
}

impl Status {
    /// Parses one status line, with or without its line ending.
    pub fn parse(line: &[u8]) -> Result<Self, SessionError> {
        let line = strip_eol(line);
        let (ok, rest) = if starts_with_ignore_case(line, b"+OK") {
            (true, &line[3..])
        } else if starts_with_ignore_case(line, b"-ERR") {
            (false, &line[4..])
        } else {
            return Err(SessionError::Protocol(format!(
                "expected +OK or -ERR, got {:?}",
                preview(line)
            )));
        };
        if !matches!(rest.first(), None | Some(b' ' | b'\t')) {
            return Err(SessionError::Protocol(format!(
                "expected +OK or -ERR, got {:?}",
                preview(line)
            )));
        }
        let text = String::from_utf8_lossy(rest).trim().to_owned();
        let code = text
            .strip_prefix('[')
            .and_then(|t| t.split_once(']'))
            .map(|(code, _)| code)
            .filter(|code| !code.is_empty() && !code.contains(char::is_whitespace))
            .map(str::to_ascii_uppercase);
        Ok(Status { ok, code, text })
    }

    /// Whether the response code says the refusal is about the server's state (mailbox locked,
    /// temporary failure, login too soon) rather than about the credentials.
    pub fn is_transient_refusal(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("IN-USE" | "SYS/TEMP" | "SYS/PERM" | "LOGIN-DELAY")
        )
    }
}

/// The capabilities a server listed in answer to CAPA (RFC 2449); empty for pre-CAPA servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities(Vec<String>);

impl Capabilities {
    /// Parses the body of a CAPA response.
    pub fn parse(body: &[u8]) -> Self {
        let lines = body.split(|&b| b == b'\n');
        let lines = lines.map(|l| String::from_utf8_lossy(l).trim().to_owned());
        Capabilities(lines.filter(|l| !l.is_empty()).collect())
    }

    /// Whether a capability (first word of a line, e.g. `PIPELINING`, `STLS`) is listed.
    pub fn has(&self, name: &str) -> bool {
        self.words()
            .any(|mut w| w.next().is_some_and(|w| w.eq_ignore_ascii_case(name)))
    }

    /// Whether the `SASL` line lists this mechanism.
    pub fn has_sasl(&self, mechanism: &str) -> bool {
        self.words().any(|mut w| {
            w.next().is_some_and(|w| w.eq_ignore_ascii_case("SASL"))
                && w.any(|m| m.eq_ignore_ascii_case(mechanism))
        })
    }

    /// The lines as the server sent them.
    pub fn lines(&self) -> &[String] {
        &self.0
    }

    fn words(&self) -> impl Iterator<Item = std::str::SplitWhitespace<'_>> {
        self.0.iter().map(|l| l.split_whitespace())
    }
}

// `BufRead::fill_buf` inside a loop, retrying EINTR. A macro rather than a function because a
// function returning the borrowed buffer from a loop trips the borrow checker.
macro_rules! fill {
    ($reader:expr) => {
        match $reader.fill_buf() {
            Ok(buf) if buf.is_empty() => return Err(SessionError::Closed),
            Ok(buf) => buf,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        }
    };
}

/// Reads one line through its LF (included). More than `max` bytes is a protocol error, so a
/// peer that never sends LF cannot make us grow without bound.
pub fn read_line(reader: &mut impl BufRead, max: usize) -> Result<Vec<u8>, SessionError> {
    let mut line = Vec::new();
    loop {
        let buf = fill!(reader);
        let (take, done) = match find_lf(buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            return Err(SessionError::Protocol(format!(
                "a line is longer than {max} bytes"
            )));
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            return Ok(line);
        }
    }
}

/// Reads and parses a status line.
pub fn read_status(reader: &mut impl BufRead) -> Result<Status, SessionError> {
    Status::parse(&read_line(reader, MAX_STATUS_LINE)?)
}

/// Where the multi-line reader stands in the current line.
#[derive(Clone, Copy)]
enum At {
    LineStart,
    /// A `.` began the line; it is either stuffing or the start of the terminator.
    Dot,
    /// `.` CR began the line: the terminator if LF follows.
    DotCr,
    Body,
}

/// Reads the body of a multi-line response (after its `+OK` line) up to and excluding the
/// terminating `.` line, undoing dot-stuffing: one leading `.` is removed from every other line
/// that starts with one (RFC 1939 §3). Line endings are kept as sent; LF alone also ends a line,
/// for servers that send bare LF. A body can't lack a final line ending, since the terminator
/// only counts at the start of a line.
///
/// A body larger than `cap` bytes is a protocol error; EOF before the terminator is
/// [`SessionError::Closed`].
pub fn read_multiline(reader: &mut impl BufRead, cap: usize) -> Result<Vec<u8>, SessionError> {
    let mut out = Vec::new();
    let mut at = At::LineStart;
    loop {
        let buf = fill!(reader);
        let mut i = 0;
        while i < buf.len() {
            match at {
                At::Body => {
                    // Only a line that starts with a dot needs a look (stuffing, or the end),
                    // so everything up to the next "\n." goes over in one copy.
                    let end =
                        memchr::memmem::find(&buf[i..], b"\n.").map_or(buf.len(), |lf| i + lf + 1);
                    push(&mut out, &buf[i..end], cap)?;
                    if buf[end - 1] == b'\n' {
                        at = At::LineStart;
                    }
                    i = end;
                }
                At::LineStart if buf[i] == b'.' => (at, i) = (At::Dot, i + 1),
                At::LineStart => at = At::Body,
                At::Dot | At::DotCr if buf[i] == b'\n' => {
                    reader.consume(i + 1);
                    return Ok(out);
                }
                At::Dot if buf[i] == b'\r' => (at, i) = (At::DotCr, i + 1),
                At::Dot => at = At::Body,
                At::DotCr => {
                    // `.` CR then not LF: the dot was stuffing and the CR is data.
                    push(&mut out, b"\r", cap)?;
                    at = At::Body;
                }
            }
        }
        let len = buf.len();
        reader.consume(len);
    }
}

/// Dot-stuffs a body and appends the terminator, as a server does: the inverse of
/// [`read_multiline`] for a body that is empty or ends with LF (otherwise CRLF is added first).
/// The client never sends multi-line data; this exists for tests, fuzzing and fake servers.
pub fn encode_multiline(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 5);
    let mut line_start = true;
    for &b in body {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Parses the text of a `+OK` answer to STAT: message count and total size.
pub fn parse_stat(text: &str) -> Result<(u32, u64), SessionError> {
    let mut words = text.split_whitespace();
    match (words.next().map(str::parse), words.next().map(str::parse)) {
        (Some(Ok(count)), Some(Ok(size))) => Ok((count, size)),
        _ => Err(SessionError::Protocol(format!("bad STAT answer {text:?}"))),
    }
}

/// Parses a LIST body: `msgno size` per line (RFC 1939 lets servers append more, ignored).
pub fn parse_list(body: &[u8]) -> Result<Vec<(u32, u64)>, SessionError> {
    scan_pairs(body, "LIST", |size| {
        std::str::from_utf8(size).ok()?.parse().ok()
    })
}

/// Parses a UIDL body: `msgno unique-id` per line. A unique-id that is not UTF-8 is refused
/// rather than decoded lossily, which could make two different ids equal.
pub fn parse_uidl(body: &[u8]) -> Result<Vec<(u32, String)>, SessionError> {
    scan_pairs(body, "UIDL", |uid| String::from_utf8(uid.to_vec()).ok())
}

fn scan_pairs<T>(
    body: &[u8],
    what: &str,
    second: impl Fn(&[u8]) -> Option<T>,
) -> Result<Vec<(u32, T)>, SessionError> {
    let mut pairs = Vec::new();
    for line in body.split(|&b| b == b'\n').map(strip_eol) {
        if line.is_empty() {
            continue;
        }
        let mut words = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        let msgno = words
            .next()
            .and_then(|w| std::str::from_utf8(w).ok()?.parse().ok());
        match (msgno, words.next().and_then(&second)) {
            (Some(msgno), Some(value)) => pairs.push((msgno, value)),
            _ => {
                let line = preview(line);
                return Err(SessionError::Protocol(format!("bad {what} line {line:?}")));
            }
        }
    }
    Ok(pairs)
}

/// Whether a line is a SASL continuation (`+ ` or a lone `+`), as opposed to `+OK`.
pub fn is_continuation(line: &[u8]) -> bool {
    let line = strip_eol(line);
    line == b"+" || line.starts_with(b"+ ")
}

fn push(out: &mut Vec<u8>, bytes: &[u8], cap: usize) -> Result<(), SessionError> {
    if out.len() + bytes.len() > cap {
        return Err(SessionError::Protocol(format!(
            "a multi-line response is larger than {cap} bytes"
        )));
    }
    out.extend_from_slice(bytes);
    Ok(())
}

fn find_lf(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The start of a line for an error message: enough to recognise, never a whole response.
fn preview(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;

    /// Hands out the input in chunks whose sizes cycle through `sizes`, like a slow socket.
    struct Chunked<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        turn: usize,
    }

    impl<'a> Chunked<'a> {
        fn new(data: &'a [u8], sizes: &[usize]) -> Self {
            Chunked {
                data,
                sizes: sizes.to_vec(),
                turn: 0,
            }
        }
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let buf = self.fill_buf()?;
            let n = buf.len().min(out.len());
            out[..n].copy_from_slice(&buf[..n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Chunked<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            let size = self.sizes[self.turn % self.sizes.len()];
            Ok(&self.data[..size.min(self.data.len())])
        }

        fn consume(&mut self, amount: usize) {
            self.data = &self.data[amount..];
            if amount > 0 {
                self.turn += 1;
            }
        }
    }

    fn unstuff(wire: &[u8]) -> Result<Vec<u8>, SessionError> {
        read_multiline(&mut Chunked::new(wire, &[1, 2, 3]), usize::MAX)
    }

    #[test]
    fn status_lines() {
        let ok = Status::parse(b"+OK Dovecot ready.\r\n").unwrap();
        assert_eq!(
            (ok.ok, ok.code, ok.text.as_str()),
            (true, None, "Dovecot ready.")
        );
        assert!(Status::parse(b"+OK").unwrap().ok);
        assert!(Status::parse(b"+ok\n").unwrap().ok);
        let err = Status::parse(b"-ERR [IN-USE] Mailbox locked\r\n").unwrap();
        assert_eq!(err.code.as_deref(), Some("IN-USE"));
        assert_eq!(err.text, "[IN-USE] Mailbox locked");
        assert!(err.is_transient_refusal());
        let err = Status::parse(b"-ERR [sys/temp] try later").unwrap();
        assert_eq!(err.code.as_deref(), Some("SYS/TEMP"));
        let auth = Status::parse(b"-ERR [AUTH] Authentication failed.").unwrap();
        assert!(!auth.ok && !auth.is_transient_refusal());
        assert_eq!(Status::parse(b"-ERR [not a code] x").unwrap().code, None);
        assert_eq!(Status::parse(b"-ERR").unwrap().text, "");
        for bad in [&b"+OKAY"[..], b"* OK", b"", b"\xff\xfe"] {
            assert!(matches!(Status::parse(bad), Err(SessionError::Protocol(_))));
        }
    }

    #[test]
    fn dot_unstuffing() {
        assert_eq!(unstuff(b"..x\r\n.\r\n").unwrap(), b".x\r\n");
        assert_eq!(unstuff(b"..\r\n.\r\n").unwrap(), b".\r\n");
        assert_eq!(
            unstuff(b"a\r\n...\r\nb.\r\n.\r\n").unwrap(),
            b"a\r\n..\r\nb.\r\n"
        );
        assert_eq!(unstuff(b".\r\n").unwrap(), b"");
        assert_eq!(unstuff(b"\r\n.\r\n").unwrap(), b"\r\n");
        // Bare CR is data, never a line end; bare LF is a line end.
        assert_eq!(unstuff(b"a\r.b\r\n.\r\n").unwrap(), b"a\r.b\r\n");
        assert_eq!(unstuff(b"..\rx\r\n.\r\n").unwrap(), b".\rx\r\n");
        assert_eq!(unstuff(b"a\n..b\n.\n").unwrap(), b"a\n.b\n");
        let eight_bit = b"caf\xe9 \x00\xff\x80\r\n.\r\n";
        assert_eq!(
            unstuff(eight_bit).unwrap(),
            &eight_bit[..eight_bit.len() - 3]
        );
    }

    #[test]
    fn leaves_what_follows_the_terminator() {
        let mut wire = &b"x\r\n.\r\n+OK next\r\n"[..];
        assert_eq!(read_multiline(&mut wire, 100).unwrap(), b"x\r\n");
        assert_eq!(wire, b"+OK next\r\n");
    }

    #[test]
    fn split_at_every_position() {
        let wire = b"Subject: x\r\n\r\n..a\r\n..\r\n.b\r\n\xe9\r\n.\r\n";
        let expected = b"Subject: x\r\n\r\n.a\r\n.\r\nb\r\n\xe9\r\n";
        for cut in 0..=wire.len() {
            let sizes = [cut.max(1), wire.len()];
            let mut reader = Chunked::new(wire, &sizes);
            assert_eq!(
                read_multiline(&mut reader, 1000).unwrap(),
                expected,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn long_line_passes_through() {
        let mut body = vec![b'a'; 1 << 20];
        body.extend_from_slice(b"\r\n");
        let wire = encode_multiline(&body);
        let mut reader = io::BufReader::with_capacity(4096, &wire[..]);
        assert_eq!(read_multiline(&mut reader, 2 << 20).unwrap(), body);
    }

    #[test]
    fn oversize_and_eof() {
        let err = read_multiline(&mut &b"12345\r\n.\r\n"[..], 6).unwrap_err();
        assert!(matches!(err, SessionError::Protocol(_)));
        assert_eq!(
            read_multiline(&mut &b"1234\r\n.\r\n"[..], 6).unwrap(),
            b"1234\r\n"
        );
        let endless = vec![b'x'; MAX_STATUS_LINE + 1];
        assert!(matches!(
            read_status(&mut &endless[..]),
            Err(SessionError::Protocol(_))
        ));
        for cut in [&b""[..], b"abc", b"abc\r\n", b"abc\r\n.", b"abc\r\n.\r"] {
            assert!(matches!(unstuff(cut), Err(SessionError::Closed)), "{cut:?}");
        }
        assert!(matches!(
            read_status(&mut &b"+OK"[..]),
            Err(SessionError::Closed)
        ));
    }

    #[test]
    fn listings() {
        assert_eq!(parse_stat("2 320").unwrap(), (2, 320));
        assert!(parse_stat("2").is_err());
        assert_eq!(
            parse_list(b"1 120\r\n2 200 extra\r\n").unwrap(),
            [(1, 120), (2, 200)]
        );
        assert!(parse_list(b"1 x\r\n").is_err());
        let uidl = parse_uidl(b"1 000001a2\r\n2 QhdPYR:\"\r\n").unwrap();
        assert_eq!(uidl, [(1, "000001a2".into()), (2, "QhdPYR:\"".into())]);
        assert!(parse_uidl(b"1 \xff\r\n").is_err());
    }

    #[test]
    fn capabilities_and_continuations() {
        let caps = Capabilities::parse(b"TOP\r\nUIDL\r\nSASL PLAIN LOGIN\r\npipelining\r\n");
        assert!(caps.has("PIPELINING") && caps.has("top") && !caps.has("STLS"));
        assert!(caps.has_sasl("plain") && !caps.has_sasl("XOAUTH2") && !caps.has("PLAIN"));
        assert!(is_continuation(b"+ \r\n") && is_continuation(b"+\r\n"));
        assert!(!is_continuation(b"+OK\r\n"));
    }

    proptest! {
        #[test]
        fn stuffing_round_trips(lines in prop::collection::vec(
            (prop::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), any::<u8>()], 0..40)
                .prop_map(|l| l.into_iter().filter(|&b| b != b'\n').collect::<Vec<u8>>()),
             any::<bool>()),
            0..20,
        ), sizes in prop::collection::vec(1usize..4, 1..4)) {
            let mut body = Vec::new();
            for (line, bare_lf) in lines {
                body.extend_from_slice(&line);
                body.extend_from_slice(if bare_lf { b"\n" } else { b"\r\n" });
            }
            let wire = encode_multiline(&body);
            let mut reader = Chunked::new(&wire, &sizes);
            prop_assert_eq!(read_multiline(&mut reader, usize::MAX).unwrap(), body);
            prop_assert!(reader.data.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            wire in prop::collection::vec(prop_oneof![Just(b'.'), Just(b'\n'), any::<u8>()], 0..200),
            cap in 0usize..300,
        ) {
            let _ = read_multiline(&mut Chunked::new(&wire, &[1, 3, 2]), cap);
            let _ = read_status(&mut Chunked::new(&wire, &[2]));
            let _ = parse_list(&wire);
            let _ = parse_uidl(&wire);
            let _ = Capabilities::parse(&wire);
        }
    }
}
