//! Response framing: cut the byte stream into whole responses (a line, plus `{n}` literals and
//! the lines after them), then parse each with `imap-proto`. No I/O: the client feeds bytes.
//!
//! Framing is ours rather than re-parsing on `Incomplete`: scanning for line ends and literal
//! lengths is linear and lets us bound memory before the bytes arrive, where retrying the parser
//! on every read would be quadratic on a large literal.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use imap_proto::Response;

use crate::error::SessionError;

/// The longest response line we accept; literals are bounded separately.
pub const MAX_LINE: usize = 1 << 20;

/// Parenthesis nesting beyond this is refused before parsing: the parser recurses on it, and a
/// stack overflow aborts the process (measured: a debug build overflows a 2 MiB thread stack at
/// about 60 levels of BODYSTRUCTURE). What we ask for nests 2 deep.
const MAX_NESTING: usize = 16;

/// Accumulates one response at a time.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where the line being scanned starts in `buf`.
    line_start: usize,
    /// Literal bytes still to come before the next line.
    literal_left: usize,
    complete: bool,
    max_literal: usize,
    /// Where each literal of the response starts in `buf`, and its length (for the trace).
    literals: Vec<(usize, usize)>,
}

/// The buffer a framer starts with: room for any response line but the longest.
const INITIAL_CAPACITY: usize = 16 * 1024;

/// The most buffer reserved ahead for an announced literal.
const MAX_RESERVE: usize = 16 << 20;

/// After a large response, give the memory back rather than keep the peak for the session.
const KEEP_CAPACITY: usize = 1 << 20;

impl Framer {
    /// A framer refusing literals longer than `max_literal` bytes.
    pub fn new(max_literal: usize) -> Self {
        Framer {
            buf: Vec::with_capacity(INITIAL_CAPACITY),
            line_start: 0,
            literal_left: 0,
            complete: false,
            max_literal,
            literals: Vec::new(),
        }
    }

    /// Changes the literal cap for the responses that follow.
    pub fn set_max_literal(&mut self, max_literal: usize) {
        self.max_literal = max_literal;
    }

    /// The current literal cap.
    pub fn max_literal(&self) -> usize {
        self.max_literal
    }

    /// Takes bytes up to the end of the current response and returns how many it took; the rest
    /// belong to the next response. Check [`Framer::is_complete`] afterwards.
    pub fn push(&mut self, input: &[u8]) -> Result<usize, SessionError> {
        let mut used = 0;
        while used < input.len() && !self.complete {
            let rest = &input[used..];
            if self.literal_left > 0 {
                let n = self.literal_left.min(rest.len());
                self.buf.extend_from_slice(&rest[..n]);
                used += n;
                self.literal_left -= n;
                if self.literal_left == 0 {
                    self.line_start = self.buf.len();
                }
                continue;
            }
            let (taken, line_done) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (rest.len(), false),
            };
            if self.buf.len() - self.line_start + taken > MAX_LINE {
                return Err(SessionError::Protocol(format!(
                    "a response line is longer than {MAX_LINE} bytes"
                )));
            }
            self.buf.extend_from_slice(&rest[..taken]);
            used += taken;
            if line_done {
                // Some servers (GNU Mailutils imap4d) end lines with a bare LF; the parser wants
                // CRLF. Literal bytes never pass here, so a message's own line ends stay as sent.
                if !self.buf[self.line_start..self.buf.len() - 1].ends_with(b"\r") {
                    self.buf.insert(self.buf.len() - 1, b'\r');
                }
                self.end_line()?;
            }
        }
        Ok(used)
    }

    fn end_line(&mut self) -> Result<(), SessionError> {
        match literal_length(&self.buf[self.line_start..]) {
            Some(len) => {
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&len| len <= self.max_literal)
                    .ok_or_else(|| {
                        SessionError::Protocol(format!(
                            "the server announced a literal of {len} bytes, more than the \
                             {} allowed here",
                            self.max_literal
                        ))
                    })?;
                // Saturating: with no cap (`usize::MAX`, which `fetch_messages` sets for a
                // `u64::MAX` limit) the sums overflow, which panicked in debug builds and, in
                // release, wrapped the bound to under 1 MiB. Found by fuzzing.
                if self.buf.len().saturating_add(len) > self.max_literal.saturating_add(MAX_LINE) {
                    return Err(SessionError::Protocol(
                        "a response is larger than allowed here".into(),
                    ));
                }
                // Reserve for the announced literal, but only so far: with a large or no cap,
                // reserving all of it let an announcement alone allocate up to the cap, or
                // panic with "capacity overflow" under no cap (found by fuzzing). Past this
                // the buffer grows as the bytes actually arrive.
                self.buf.reserve(len.min(MAX_RESERVE));
                self.literal_left = len;
                self.line_start = self.buf.len();
                self.literals.push((self.buf.len(), len));
            }
            None => self.complete = true,
        }
        Ok(())
    }

    /// Whether a whole response has been taken.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The bytes of the response taken so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Which literal of the response `bytes` is, if it is one: the very bytes of the buffer
    /// (the same address and length), not merely equal ones.
    pub fn literal_of(&self, bytes: &[u8]) -> Option<usize> {
        self.literals.iter().position(|&(start, len)| {
            len == bytes.len() && std::ptr::eq(self.buf[start..].as_ptr(), bytes.as_ptr())
        })
    }

    /// The length of literal `i` of the response.
    pub fn literal_len(&self, i: usize) -> usize {
        self.literals[i].1
    }

    /// Moves literal `i` of the complete response out, as a buffer of its own, and forgets the
    /// response: a large message then exists once, handed over rather than copied, and the
    /// framer does not keep its size for the responses after it.
    pub fn take_literal(&mut self, i: usize) -> Vec<u8> {
        let (start, len) = self.literals[i];
        let mut bytes = std::mem::replace(&mut self.buf, Vec::with_capacity(INITIAL_CAPACITY));
        bytes.truncate(start + len);
        bytes.drain(..start);
        // Past glibc's mmap threshold this is an mremap, not a copy: it only returns the
        // room reserved beyond the literal.
        bytes.shrink_to_fit();
        self.clear();
        bytes
    }

    /// Forgets the current response, ready for the next.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.buf.shrink_to(KEEP_CAPACITY);
        self.line_start = 0;
        self.literal_left = 0;
        self.complete = false;
        self.literals.clear();
    }

    /// The response as the protocol trace shows it: literals replaced by `{N bytes}`.
    pub fn shown(&self) -> Vec<u8> {
        crate::trace::summarise_literals(&self.buf, &self.literals)
    }

    /// Parses the complete response. `Ok(None)` is an untagged response of a kind we never
    /// asked for and `imap-proto` does not know (e.g. `* ESEARCH`): it is skipped. Anything else
    /// that does not parse is an error, so a FETCH or LIST line is never silently lost.
    pub fn parse(&self) -> Result<Option<Response<'_>>, SessionError> {
        debug_assert!(self.complete);
        let bytes = self.buf.as_slice();
        if let Some(fetch) = super::fetch_line::parse(bytes) {
            return Ok(Some(fetch));
        }
        let unparsable = || {
            if is_skippable(bytes) {
                Ok(None)
            } else {
                Err(SessionError::Protocol(excerpt(bytes)))
            }
        };
        if nesting_depth(bytes) > MAX_NESTING {
            return unparsable();
        }
        match parse_without_panicking(bytes) {
            Some(Ok((&[], response))) => Ok(Some(response)),
            _ => unparsable(),
        }
    }
}

thread_local! {
    /// Whether this thread is inside [`parse_without_panicking`].
    static PARSING: Cell<bool> = const { Cell::new(false) };
}

/// Runs imap-proto's parser; `None` when it panicked. imap-proto 0.17 can panic on hostile
/// input (`INTERNALDATE NIL`, a code followed by a multi-byte character): a server's bytes must
/// neither take the process down nor print a panic message and backtrace on the user's
/// terminal, so the panic hook stays silent for panics inside the parser (and only there).
fn parse_without_panicking(bytes: &[u8]) -> Option<imap_proto::ParseResult<'_>> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PARSING.get() {
                previous(info);
            }
        }));
    });
    PARSING.set(true);
    let result = catch_unwind(AssertUnwindSafe(|| Response::parse(bytes)));
    PARSING.set(false);
    result.ok()
}

/// The `n` of a line ending in `{n}\r\n` or `{n+}\r\n`.
fn literal_length(line: &[u8]) -> Option<u64> {
    let inner = line.strip_suffix(b"}\r\n")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Too many digits for u64 is still a literal announcement, just one over any cap.
    Some(
        std::str::from_utf8(digits)
            .ok()?
            .parse()
            .unwrap_or(u64::MAX),
    )
}

/// How deep parentheses nest outside quoted strings and literals (an over-estimate is fine:
/// it only has to catch hostile input).
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut quoted, mut escaped) = (0usize, 0usize, false, false);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                // A quoted string never spans lines; a literal's bytes are data, not syntax.
                (quoted, escaped) = (false, false);
                if let Some(len) = literal_length(&bytes[..=i]) {
                    // Clamped, not just saturating: `i += 1` below overflowed from usize::MAX
                    // (a panic in debug, a wrap to 0 and an endless rescan in release). A `{`
                    // in a literal's data plus digits and `}` on the line after it read as an
                    // announcement here though not to the framer, which ended the response on
                    // that line; so a skip past the end only ends the scan. Found by fuzzing.
                    i = i
                        .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
                        .min(bytes.len());
                }
            }
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'(' if !quoted => {
                depth += 1;
                max = max.max(depth);
            }
            b')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

/// Untagged responses we rely on; a failure to parse one of these is an error.
const NEEDED: &[&str] = &[
    "OK",
    "NO",
    "BAD",
    "BYE",
    "PREAUTH",
    "CAPABILITY",
    "LIST",
    "FLAGS",
    "FETCH",
    "EXISTS",
    "EXPUNGE",
];

fn is_skippable(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"* ") else {
        return false;
    };
    let mut words = rest.split(|&b| b == b' ' || b == b'\r' || b == b'\n');
    let mut keyword = words.next().unwrap_or_default();
    if !keyword.is_empty() && keyword.iter().all(u8::is_ascii_digit) {
        keyword = words.next().unwrap_or_default();
    }
    !keyword.is_empty()
        && keyword.iter().all(u8::is_ascii_alphanumeric)
        && !NEEDED
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(keyword))
}

/// The start of a response, for an error message.
pub(super) fn excerpt(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let shown = &line[..line.len().min(200)];
    let more = if shown.len() < bytes.len().saturating_sub(2) {
        " …"
    } else {
        ""
    };
    format!("{}{more}", String::from_utf8_lossy(shown).escape_debug())
}

/// The text after the status word of a status response, response code included, e.g.
/// `[TRYCREATE] Mailbox doesn't exist: Foo` from `a1 NO [TRYCREATE] Mailbox doesn't exist: Foo`.
pub fn status_text(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let _tag = parts.next();
    let _status = parts.next();
    String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned()
}

/// Whether status text starts with response code `code` (e.g. `ALREADYEXISTS`), including the
/// codes `imap-proto` does not model.
pub fn has_code(text: &str, code: &str) -> bool {
    text.strip_prefix('[')
        .and_then(|t| t.get(..code.len()).map(|head| (head, &t[code.len()..])))
        .is_some_and(|(head, tail)| {
            head.eq_ignore_ascii_case(code) && (tail.starts_with(']') || tail.starts_with(' '))
        })
}

/// Whether a refusal says "not now" rather than "not this": `[THROTTLED]`, `[UNAVAILABLE]`
/// (RFC 5530), or Exchange Online's "Request is throttled" without a code. `[LIMIT]` is not
/// among them: Dovecot answers it to a message over its size limit, which no wait changes.
pub fn asks_to_slow_down(text: &str) -> bool {
    has_code(text, "THROTTLED")
        || has_code(text, "UNAVAILABLE")
        || text.to_ascii_lowercase().contains("throttled")
}

/// A storage quota (RFC 2087/9208 `STORAGE`), in bytes: the protocol counts it in units of
/// 1024 octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StorageQuota {
    /// Bytes counted against the quota now.
    pub used: u64,
    /// The most bytes the quota allows.
    pub limit: u64,
}

impl StorageQuota {
    /// Bytes that still fit.
    pub fn room(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// The tighter (less room) of two quotas: a message counts against every root it is under.
    pub fn tightest(a: Option<StorageQuota>, b: Option<StorageQuota>) -> Option<StorageQuota> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.room() < a.room() { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// The `STORAGE` resource of an untagged `QUOTA` response (an answer to GETQUOTAROOT), if it
/// is one and has that resource; a quota root may limit only the message count.
pub fn storage_quota(response: &Response<'_>) -> Option<StorageQuota> {
    let Response::Quota(quota) = response else {
        return None;
    };
    quota
        .resources
        .iter()
        .find(|r| r.name == imap_proto::rfc2087::QuotaResourceName::Storage)
        .map(|r| StorageQuota {
            used: r.usage.saturating_mul(1024),
            limit: r.limit.saturating_mul(1024),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_proto::{AttributeValue, ResponseCode, Status};

    #[test]
    fn a_quota_answer_gives_its_storage_in_bytes() {
        let quota = parse_one(b"* QUOTA \"User quota\" (STORAGE 10 100 MESSAGE 3 1000)\r\n");
        let storage = storage_quota(&quota).unwrap();
        assert_eq!(
            storage,
            StorageQuota {
                used: 10 * 1024,
                limit: 100 * 1024
            }
        );
        assert_eq!(storage.room(), 90 * 1024);
        // The root list and a count-only root say nothing of bytes.
        assert_eq!(
            storage_quota(&parse_one(b"* QUOTAROOT INBOX \"User quota\"\r\n")),
            None
        );
        assert_eq!(
            storage_quota(&parse_one(b"* QUOTA \"\" (MESSAGE 3 10)\r\n")),
            None
        );
        // Over its limit (a quota lowered after the mail arrived) leaves no room, not a panic.
        let over = storage_quota(&parse_one(b"* QUOTA \"\" (STORAGE 120 100)\r\n")).unwrap();
        assert_eq!(over.room(), 0);
        assert_eq!(
            StorageQuota::tightest(Some(storage), Some(over)),
            Some(over)
        );
        assert_eq!(StorageQuota::tightest(None, Some(storage)), Some(storage));
    }

    #[test]
    fn throttling_is_told_from_refusals() {
        for text in [
            "[THROTTLED] Too many commands",
            "[UNAVAILABLE] Try again later",
            "Request is throttled. Suggested Backoff Time: 92415 milliseconds",
        ] {
            assert!(asks_to_slow_down(text), "{text}");
        }
        for text in [
            "[LIMIT] Mail size is larger than the maximum size allowed by server configuration",
            "[OVERQUOTA] Quota exceeded",
            "[TRYCREATE] Mailbox doesn't exist",
            "[UNAVAILABLEX] odd",
        ] {
            assert!(!asks_to_slow_down(text), "{text}");
        }
    }
    use proptest::prelude::*;

    /// Feeds `chunks` one by one, as separate reads, and returns each whole response's bytes.
    fn frame(chunks: &[&[u8]], max_literal: usize) -> Result<Vec<Vec<u8>>, SessionError> {
        let mut framer = Framer::new(max_literal);
        let mut out = Vec::new();
        for chunk in chunks {
            let mut chunk = *chunk;
            while !chunk.is_empty() {
                let used = framer.push(chunk)?;
                chunk = &chunk[used..];
                if framer.is_complete() {
                    out.push(framer.bytes().to_vec());
                    framer.clear();
                }
            }
        }
        Ok(out)
    }

    fn parse_one(bytes: &[u8]) -> Response<'static> {
        let mut framer = Framer::new(1 << 20);
        assert_eq!(framer.push(bytes).unwrap(), bytes.len());
        assert!(framer.is_complete());
        framer.parse().unwrap().unwrap().into_owned()
    }

    #[test]
    fn literal_split_across_reads() {
        let got = frame(
            &[
                b"* 1 FETCH (UID 7 BODY[HEADER.FIELDS (MESSAGE-ID)] {2",
                b"1}\r\nMessage-ID: <a@b>\r\n",
                b"\r\n)\r\n* 2 FETCH (UID 8 BODY[HEADER.FIELDS (MESSAGE-ID)] {0}\r\n)\r\na1 OK d",
                b"one\r\n",
            ],
            1024,
        )
        .unwrap();
        assert_eq!(got.len(), 3);
        assert!(got[0].ends_with(b"<a@b>\r\n\r\n)\r\n"));
        assert_eq!(got[2], b"a1 OK done\r\n");
    }

    #[test]
    fn bare_lf_line_ends_are_read_as_crlf_and_literals_kept() {
        let got = frame(
            &[
                b"* CAPABILITY IMAP4rev1\n* 1 FETCH (UID 7 BODY[] {6}\n",
                b"a\nb\r\n)\na1 OK done\n",
            ],
            1024,
        )
        .unwrap();
        assert_eq!(got[0], b"* CAPABILITY IMAP4rev1\r\n");
        assert_eq!(got[1], b"* 1 FETCH (UID 7 BODY[] {6}\r\na\nb\r\n)\r\n");
        assert_eq!(got[2], b"a1 OK done\r\n");
        let done = parse_one(b"a1 OK AUTHENTICATE PLAIN authentication successful\n");
        assert!(matches!(done, Response::Done { .. }), "{done:?}");
    }

    #[test]
    fn a_literal_is_moved_out_and_the_framer_starts_afresh() {
        let mut body = vec![b'x'; 100_000];
        body.extend_from_slice(b"\r\n");
        let raw = [
            &b"* 1 FETCH (UID 9 BODY[] {100002}\r\n"[..],
            &body,
            b")\r\na1 OK done\r\n",
        ]
        .concat();
        let mut framer = Framer::new(1 << 20);
        let used = framer.push(&raw).unwrap();
        let Some(Response::Fetch(_, attributes)) = framer.parse().unwrap() else {
            panic!("not a FETCH");
        };
        let data = attributes
            .iter()
            .find_map(|a| match a {
                AttributeValue::BodySection { data, .. } => data.clone(),
                _ => None,
            })
            .unwrap();
        let literal = framer.literal_of(&data).unwrap();
        // Equal bytes elsewhere are not the literal.
        assert_eq!(framer.literal_of(&body), None);
        assert_eq!(framer.literal_len(literal), body.len());
        let taken = framer.take_literal(literal);
        assert_eq!(taken, body);
        assert_eq!(taken.capacity(), body.len());
        assert!(!framer.is_complete() && framer.bytes().is_empty());
        assert!(framer.buf.capacity() <= INITIAL_CAPACITY);
        framer.push(&raw[used..]).unwrap();
        assert_eq!(framer.bytes(), b"a1 OK done\r\n");
    }

    #[test]
    fn fetch_with_header_literal() {
        let raw = b"* 3 FETCH (UID 42 RFC822.SIZE 1234 FLAGS (\\Seen $Label1) INTERNALDATE \
            \" 5-Mar-2024 07:08:09 +0200\" BODY[HEADER.FIELDS (MESSAGE-ID)] {21}\r\n\
            Message-ID: <a@b>\r\n\r\n)\r\n";
        let Response::Fetch(3, attrs) = parse_one(raw) else {
            panic!("not a FETCH");
        };
        assert!(attrs.contains(&AttributeValue::Uid(42)));
        assert!(attrs.contains(&AttributeValue::Rfc822Size(1234)));
        assert!(attrs.iter().any(|a| matches!(a,
            AttributeValue::BodySection { data: Some(d), .. } if &d[..] == b"Message-ID: <a@b>\r\n\r\n")));
        assert!(attrs.iter().any(|a| matches!(a,
            AttributeValue::InternalDate(d) if d == " 5-Mar-2024 07:08:09 +0200")));
    }

    #[test]
    fn empty_literal() {
        let raw = b"* 1 FETCH (UID 1 BODY[] {0}\r\n)\r\n";
        let Response::Fetch(1, attrs) = parse_one(raw) else {
            panic!("not a FETCH");
        };
        assert!(attrs.iter().any(|a| matches!(a,
            AttributeValue::BodySection { data: Some(d), .. } if d.is_empty())));
    }

    #[test]
    fn eight_bit_in_quoted_string_and_text() {
        let raw = "* LIST (\\HasNoChildren) \"/\" \"Entwürfe\"\r\n".as_bytes();
        assert!(matches!(parse_one(raw), Response::MailboxData(_)));
        let raw = "a1 OK Logged in – go ahead!\r\n".as_bytes();
        assert!(matches!(
            parse_one(raw),
            Response::Done {
                status: Status::Ok,
                ..
            }
        ));
    }

    #[test]
    fn untagged_bye() {
        let raw = b"* BYE Server shutting down\r\n";
        assert!(matches!(
            parse_one(raw),
            Response::Data {
                status: Status::Bye,
                ..
            }
        ));
        assert_eq!(status_text(raw), "Server shutting down");
    }

    #[test]
    fn continuation() {
        assert!(matches!(parse_one(b"+ OK\r\n"), Response::Continue(_)));
        assert!(matches!(parse_one(b"+ \r\n"), Response::Continue(_)));
    }

    #[test]
    fn tagged_no_with_code() {
        let raw = b"a7 NO [TRYCREATE] Mailbox doesn't exist: Foo\r\n";
        let Response::Done {
            tag,
            status,
            outcome,
        } = parse_one(raw)
        else {
            panic!("not tagged");
        };
        assert_eq!(tag.0, "a7");
        assert_eq!(status, Status::No);
        assert_eq!(outcome.code, Some(ResponseCode::TryCreate));
        assert_eq!(status_text(raw), "[TRYCREATE] Mailbox doesn't exist: Foo");
        let raw = b"a8 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n";
        assert!(matches!(
            parse_one(raw),
            Response::Done {
                status: Status::No,
                ..
            }
        ));
        let text = status_text(raw);
        assert!(text.starts_with("[OVERQUOTA] Quota exceeded"));
        assert!(has_code(&text, "overquota"));
        assert!(!has_code(&text, "OVER"));
        assert!(has_code("[UNAVAILABLE] try later", "UNAVAILABLE"));
    }

    #[test]
    fn unknown_untagged_is_skipped_but_garbage_is_not() {
        let mut framer = Framer::new(100);
        framer
            .push(b"* ESEARCH (TAG \"a1\") UID ALL 1:3\r\n")
            .unwrap();
        assert!(framer.parse().unwrap().is_none());
        for garbage in [
            &b"* 1 FETCH (UID\r\n"[..],
            b"hello\r\n",
            b"* LIST ((\r\n",
            b"\r\n",
        ] {
            let mut framer = Framer::new(100);
            framer.push(garbage).unwrap();
            assert!(
                matches!(framer.parse(), Err(SessionError::Protocol(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn parser_panics_become_errors() {
        for raw in [
            &b"* 1 FETCH (INTERNALDATE NIL)\r\n"[..],
            "* OK [ALERT]é\r\n".as_bytes(),
        ] {
            let mut framer = Framer::new(100);
            framer.push(raw).unwrap();
            assert!(matches!(framer.parse(), Err(SessionError::Protocol(_))));
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let raw = [&b"* 1 FETCH (BODYSTRUCTURE "[..], &[b'('; 100_000], b"\r\n"].concat();
        let mut framer = Framer::new(100);
        framer.push(&raw).unwrap();
        assert!(matches!(framer.parse(), Err(SessionError::Protocol(_))));
    }

    #[test]
    fn bounds() {
        let err = frame(&[b"* 1 FETCH (BODY[] {101}\r\n"], 100).unwrap_err();
        assert!(matches!(err, SessionError::Protocol(_)));
        let err = frame(&[b"* 1 FETCH (BODY[] {99999999999999999999}\r\n"], 100).unwrap_err();
        assert!(matches!(err, SessionError::Protocol(_)));
        let long = vec![b'x'; MAX_LINE + 1];
        let err = frame(&[b"* OK ", &long], 100).unwrap_err();
        assert!(matches!(err, SessionError::Protocol(_)));
        // Many literals at the cap cannot add up without bound either.
        let many = b"x {100}\r\n"
            .iter()
            .chain([b'y'; 100].iter())
            .copied()
            .collect::<Vec<_>>();
        let chunks: Vec<&[u8]> = std::iter::repeat_n(&many[..], 20_000).collect();
        assert!(frame(&chunks, 100).is_err());
    }

    #[test]
    fn no_cap_means_no_cap() {
        // Fuzzer input: any literal under a `usize::MAX` cap overflowed the size check.
        let raw = b"* 1 FETCH (UID 9 BODY[] {5}\r\nab\r\nc)\r\n";
        let got = frame(&[raw], usize::MAX).unwrap();
        assert_eq!(got, [raw.to_vec()]);
        let big = [
            &b"* 1 FETCH (BODY[] {2000000}\r\n"[..],
            &[b'x'; 2_000_000],
            b")\r\n",
        ]
        .concat();
        assert_eq!(frame(&[&big], usize::MAX).unwrap(), [big]);
    }

    #[test]
    fn an_announcement_alone_allocates_little() {
        // Fuzzer input: a literal of `usize::MAX` bytes under no cap was reserved in full.
        let mut framer = Framer::new(usize::MAX);
        framer
            .push(b"* 1 FETCH (BODY[] {18446744073709551616}\r\n")
            .unwrap();
        assert!(framer.buf.capacity() <= 2 * MAX_RESERVE);
        let mut framer = Framer::new(usize::MAX);
        framer.push(b"* 1 FETCH (BODY[] {99999999999}\r\n").unwrap();
        assert!(framer.buf.capacity() <= 2 * MAX_RESERVE);
        assert!(!framer.is_complete());
    }

    #[test]
    fn a_literal_marker_split_by_a_literal_ends_the_scan() {
        // Fuzzer input: the framer sees a 5-byte literal `{1844` and then a last line
        // `6744073709551616}`; the nesting scan read `{18446744073709551616}` across the two
        // as a literal of u64::MAX bytes and overflowed skipping it (a spin in release).
        let raw = b" {5}\r\n{18446744073709551616}\r\na}";
        let mut framer = Framer::new(1000);
        assert_eq!(framer.push(raw).unwrap(), raw.len() - 2);
        assert!(framer.is_complete());
        assert!(matches!(framer.parse(), Err(SessionError::Protocol(_))));
        assert_eq!(nesting_depth(b"(( {5}\r\n{18446744073709551616}\r\n"), 2);
    }

    #[test]
    fn literal_marker_needs_crlf_and_digits() {
        assert_eq!(literal_length(b"x {12}\r\n"), Some(12));
        assert_eq!(literal_length(b"x {12+}\r\n"), Some(12));
        assert_eq!(literal_length(b"x {}\r\n"), None);
        assert_eq!(literal_length(b"x {1a}\r\n"), None);
        assert_eq!(literal_length(b"x {12}\n"), None);
    }

    const SAMPLES: &[&[u8]] = &[
        b"* 3 FETCH (UID 42 RFC822.SIZE 1234 FLAGS (\\Seen $Label1) INTERNALDATE \" 5-Mar-2024 07:08:09 +0200\" BODY[HEADER.FIELDS (MESSAGE-ID)] {21}\r\nMessage-ID: <a@b>\r\n\r\n)\r\n",
        b"* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent Items\"\r\n",
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n",
        b"a1 OK [APPENDUID 1795389863 1:3,5] Append completed.\r\n",
        b"* OK [PERMANENTFLAGS (\\Answered \\Seen \\*)] Flags permitted.\r\n",
        b"* 1 FETCH (UID 9 FLAGS () INTERNALDATE \"01-Jan-2020 00:00:00 +0000\" BODY[] {5}\r\nab\r\nc)\r\n",
    ];

    #[test]
    fn samples_parse() {
        for sample in SAMPLES {
            let mut framer = Framer::new(1000);
            assert_eq!(framer.push(sample).unwrap(), sample.len());
            assert!(framer.parse().unwrap().is_some(), "{}", excerpt(sample));
        }
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..200), 0..8)) {
            let mut framer = Framer::new(1000);
            'outer: for chunk in &chunks {
                let mut chunk = &chunk[..];
                while !chunk.is_empty() {
                    match framer.push(chunk) {
                        Ok(used) => chunk = &chunk[used..],
                        Err(_) => break 'outer,
                    }
                    if framer.is_complete() {
                        let _ = framer.parse();
                        framer.clear();
                    }
                }
            }
        }

        #[test]
        fn mutated_responses_never_panic(
            pick in 0..SAMPLES.len(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut bytes = SAMPLES[pick].to_vec();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            let mut framer = Framer::new(1000);
            if framer.push(&bytes).is_ok() && framer.is_complete() {
                let _ = framer.parse();
            }
        }

        #[test]
        fn imap_like_bytes_never_panic(body in "[*+a-z0-9 ()\\[\\]{}\"\\\\\r\n]{0,300}") {
            let mut framer = Framer::new(1000);
            let mut bytes = format!("* {body}").into_bytes();
            bytes.extend_from_slice(b"\r\n");
            if framer.push(&bytes).is_ok() && framer.is_complete() {
                let _ = framer.parse();
            }
        }
    }
}
