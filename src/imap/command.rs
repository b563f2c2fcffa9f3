//! Command encoding: strings as atoms, quoted strings or literals; mailbox names; flag lists;
//! INTERNALDATE; UID sets. No I/O: a command becomes a list of [`Segment`]s the client writes.

use std::sync::LazyLock;

use chrono::format::{self, Item, Parsed, StrftimeItems};
use chrono::{DateTime, FixedOffset};

use super::mutf7;
use crate::error::SessionError;
use crate::trace::REDACTED;

/// Which literals the server lets us send without waiting for its `+` (RFC 7888).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralMode {
    /// Every literal waits for a continuation request.
    Synchronizing,
    /// LITERAL-: literals up to 4096 bytes need no wait.
    NonSyncUpTo4096,
    /// LITERAL+: no literal needs a wait.
    NonSync,
}

impl LiteralMode {
    fn needs_wait(self, len: usize) -> bool {
        match self {
            LiteralMode::Synchronizing => true,
            LiteralMode::NonSyncUpTo4096 => len > 4096,
            LiteralMode::NonSync => false,
        }
    }
}

/// One piece of an encoded command, written in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Protocol text (and small literals we built ourselves).
    Bytes(Vec<u8>),
    /// The caller's literal data, written straight from their slice.
    Slice(&'a [u8]),
    /// Flush, then wait for the server's `+` before writing the rest.
    AwaitContinuation,
}

/// Builds one command. Text accumulates in one buffer so a command without literals is a
/// single write.
///
/// Alongside the bytes it keeps the command's shown form for the protocol trace: the same
/// text, with each [`secret`](Self::secret) as [`REDACTED`] and each [`literal`](Self::literal)
/// as `{N bytes}`, in one piece per wait for a continuation.
pub struct CommandBuilder<'a> {
    segments: Vec<Segment<'a>>,
    current: Vec<u8>,
    literals: LiteralMode,
    shown: Vec<Vec<u8>>,
    hiding: bool,
}

/// Quoted strings longer than this go as literals: some servers cap quoted-string length.
const MAX_QUOTED: usize = 1024;

impl<'a> CommandBuilder<'a> {
    /// Starts a command with its tag.
    pub fn new(tag: &str, literals: LiteralMode) -> Self {
        let mut builder = CommandBuilder {
            segments: Vec::new(),
            current: Vec::with_capacity(128),
            literals,
            shown: vec![Vec::new()],
            hiding: false,
        };
        builder.put(tag.as_bytes()).put(b" ");
        builder
    }

    /// The one way bytes enter the command: they go to the wire, and to the shown form
    /// unless a secret is being written.
    fn put(&mut self, bytes: &[u8]) -> &mut Self {
        self.current.extend_from_slice(bytes);
        if !self.hiding {
            self.show(bytes);
        }
        self
    }

    fn show(&mut self, bytes: &[u8]) {
        self.shown
            .last_mut()
            .expect("a command has a shown piece")
            .extend_from_slice(bytes);
    }

    /// Appends protocol text as it is (keywords, spaces, parentheses).
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.put(text.as_bytes())
    }

    /// Appends whatever `write` appends (a password, a SASL response), shown in the trace as
    /// [`REDACTED`]: the caller knows it is a secret, so the trace never sees it.
    pub fn secret(&mut self, write: impl FnOnce(&mut Self) -> &mut Self) -> &mut Self {
        self.hiding = true;
        write(self);
        self.hiding = false;
        self.show(REDACTED.as_bytes());
        self
    }

    /// Appends an astring: an atom when possible, else a quoted string or a literal.
    pub fn astring(&mut self, value: &[u8]) -> &mut Self {
        if !value.is_empty() && value.iter().all(|&b| is_astring_char(b)) {
            self.put(value)
        } else {
            self.string(value)
        }
    }

    /// Appends a string: quoted when it is short 7-bit text, else a literal.
    pub fn string(&mut self, value: &[u8]) -> &mut Self {
        let quotable = value.len() <= MAX_QUOTED
            && value
                .iter()
                .all(|&b| (1..0x80).contains(&b) && b != b'\r' && b != b'\n');
        if quotable {
            let mut quoted = Vec::with_capacity(value.len() + 2);
            quoted.push(b'"');
            for &b in value {
                if b == b'"' || b == b'\\' {
                    quoted.push(b'\\');
                }
                quoted.push(b);
            }
            quoted.push(b'"');
            self.put(&quoted)
        } else {
            self.literal_header(value.len());
            self.put(value)
        }
    }

    /// Appends a mailbox name, modified-UTF-7 encoded.
    pub fn mailbox(&mut self, name: &str) -> &mut Self {
        self.astring(mutf7::encode(name).as_bytes())
    }

    /// Appends the caller's bytes as a literal, without copying them.
    pub fn literal(&mut self, data: &'a [u8]) -> &mut Self {
        self.literal_header(data.len());
        self.show(format!("{{{} bytes}}", data.len()).as_bytes());
        self.segments
            .push(Segment::Bytes(std::mem::take(&mut self.current)));
        self.segments.push(Segment::Slice(data));
        self
    }

    /// Ends the current line and waits for the server's `+` (an AUTHENTICATE exchange).
    pub fn await_continuation(&mut self) -> &mut Self {
        self.put(b"\r\n");
        self.wait_for_continuation();
        self
    }

    fn wait_for_continuation(&mut self) {
        self.segments
            .push(Segment::Bytes(std::mem::take(&mut self.current)));
        self.segments.push(Segment::AwaitContinuation);
        self.shown.push(Vec::new());
    }

    fn literal_header(&mut self, len: usize) {
        let wait = self.literals.needs_wait(len);
        let plus = if wait { "" } else { "+" };
        self.put(format!("{{{len}{plus}}}\r\n").as_bytes());
        if wait {
            self.wait_for_continuation();
        }
    }

    /// Ends the command line and returns what to write.
    pub fn finish(self) -> Vec<Segment<'a>> {
        self.finish_shown().0
    }

    /// Ends the command line and returns what to write, and its shown form for the trace:
    /// one piece per [`Segment::AwaitContinuation`], and one after the last.
    pub fn finish_shown(mut self) -> (Vec<Segment<'a>>, Vec<Vec<u8>>) {
        self.put(b"\r\n");
        self.segments.push(Segment::Bytes(self.current));
        self.segments
            .retain(|s| !matches!(s, Segment::Bytes(b) if b.is_empty()));
        (self.segments, self.shown)
    }
}

/// ASTRING-CHAR of RFC 3501: atom characters plus `]`.
fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

fn is_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){ %*\"\\]".contains(&b)
}

/// Whether IMAP can write this flag: its name (after the `\\` of a system flag) is an atom.
/// Servers list some that are not (`]`, `\\*`), which no APPEND or STORE can carry.
pub fn is_writable_flag(flag: &str) -> bool {
    let atom = flag.strip_prefix('\\').unwrap_or(flag);
    !atom.is_empty() && atom.bytes().all(is_atom_char)
}

/// Renders a flag list for APPEND, e.g. `(\Seen $Label1)`. `\Recent` is dropped: only the
/// server may set it. A flag that is not an atom cannot be sent at all.
pub fn flag_list(flags: &[String]) -> Result<String, SessionError> {
    let mut out = String::from("(");
    for flag in flags {
        if flag.eq_ignore_ascii_case("\\Recent") {
            continue;
        }
        if !is_writable_flag(flag) {
            return Err(SessionError::Unsupported(format!(
                "the flag {flag:?} cannot be sent over IMAP"
            )));
        }
        if out.len() > 1 {
            out.push(' ');
        }
        out.push_str(flag);
    }
    out.push(')');
    Ok(out)
}

const DATE_FORMAT: &str = "%d-%b-%Y %H:%M:%S %z";

/// Formats an INTERNALDATE as a quoted `"dd-Mon-yyyy hh:mm:ss +zzzz"`.
pub fn format_internal_date(date: &DateTime<FixedOffset>) -> String {
    format!("\"{}\"", date.format(DATE_FORMAT))
}

/// Parses an INTERNALDATE as the server sends it (without quotes; the day may be
/// space-padded).
pub fn parse_internal_date(text: &str) -> Option<DateTime<FixedOffset>> {
    // The format's items are worked out once: an index parses a date per message, and
    // re-reading the format string each time was a twentieth of its CPU.
    static ITEMS: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| {
        StrftimeItems::new(DATE_FORMAT)
            .parse()
            .expect("a valid format")
    });
    let mut parsed = Parsed::new();
    format::parse(&mut parsed, text.trim(), ITEMS.iter()).ok()?;
    parsed.to_datetime().ok()
}

/// Splits UIDs into UID-set strings (`1:5,9`), each short enough for a server's line limit
/// (Dovecot's is 64 KiB).
pub fn uid_sets(uids: &[u32], max_len: usize) -> Vec<String> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut sets = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        let range = if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}:{}", sorted[i])
        };
        if !current.is_empty() && current.len() + 1 + range.len() > max_len {
            sets.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&range);
        i += 1;
    }
    if !current.is_empty() {
        sets.push(current);
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(
        build: impl FnOnce(&mut CommandBuilder<'_>),
        mode: LiteralMode,
    ) -> Vec<Segment<'static>> {
        let mut b = CommandBuilder::new("a1", mode);
        build(&mut b);
        b.finish()
            .into_iter()
            .map(|s| match s {
                Segment::Slice(x) => Segment::Bytes(x.to_vec()),
                Segment::Bytes(x) => Segment::Bytes(x),
                Segment::AwaitContinuation => Segment::AwaitContinuation,
            })
            .collect()
    }

    fn bytes(s: &str) -> Segment<'static> {
        Segment::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn strings_pick_atom_quoted_or_literal() {
        let got = encode(
            |b| {
                b.text("LOGIN ")
                    .astring(b"bob")
                    .text(" ")
                    .astring(br#"p"a\s s"#);
            },
            LiteralMode::Synchronizing,
        );
        assert_eq!(got, [bytes("a1 LOGIN bob \"p\\\"a\\\\s s\"\r\n")]);
        let got = encode(
            |b| {
                b.astring(b"");
            },
            LiteralMode::Synchronizing,
        );
        assert_eq!(got, [bytes("a1 \"\"\r\n")]);
    }

    #[test]
    fn eight_bit_and_crlf_go_as_literals() {
        let got = encode(
            |b| {
                b.text("LOGIN ")
                    .astring("jür".as_bytes())
                    .text(" ")
                    .astring(b"a\r\nb");
            },
            LiteralMode::Synchronizing,
        );
        let expected = [
            bytes("a1 LOGIN {4}\r\n"),
            Segment::AwaitContinuation,
            Segment::Bytes(b"j\xc3\xbcr {4}\r\n".to_vec()),
            Segment::AwaitContinuation,
            bytes("a\r\nb\r\n"),
        ];
        assert_eq!(got, expected);
        let got = encode(
            |b| {
                b.astring("jür".as_bytes());
            },
            LiteralMode::NonSync,
        );
        assert_eq!(got, [Segment::Bytes(b"a1 {4+}\r\nj\xc3\xbcr\r\n".to_vec())]);
        assert_eq!(
            encode(
                |b| {
                    b.string(&[b'x'; 2000]);
                },
                LiteralMode::NonSyncUpTo4096
            )[0],
            Segment::Bytes([&b"a1 {2000+}\r\n"[..], &[b'x'; 2000], b"\r\n"].concat())
        );
    }

    #[test]
    fn literal_borrows_the_callers_bytes() {
        let big = vec![b'm'; 5000];
        let mut b = CommandBuilder::new("a2", LiteralMode::NonSyncUpTo4096);
        b.text("APPEND ").mailbox("Données").text(" ").literal(&big);
        let segments = b.finish();
        assert_eq!(segments.len(), 4);
        assert_eq!(
            segments[0],
            Segment::Bytes(b"a2 APPEND Donn&AOk-es {5000}\r\n".to_vec())
        );
        assert_eq!(segments[1], Segment::AwaitContinuation);
        assert!(matches!(segments[2], Segment::Slice(s) if std::ptr::eq(s, big.as_slice())));
        assert_eq!(segments[3], bytes("\r\n"));
    }

    fn shown(build: impl FnOnce(&mut CommandBuilder<'_>), mode: LiteralMode) -> Vec<String> {
        let mut b = CommandBuilder::new("a1", mode);
        build(&mut b);
        let (_, shown) = b.finish_shown();
        shown
            .iter()
            .map(|piece| String::from_utf8_lossy(piece).into_owned())
            .collect()
    }

    #[test]
    fn secrets_are_sent_but_shown_redacted() {
        let login = |b: &mut CommandBuilder<'_>| {
            b.text("LOGIN ")
                .astring(b"bob")
                .text(" ")
                .secret(|b| b.astring(b"hunter2"));
        };
        assert_eq!(
            encode(login, LiteralMode::NonSync),
            [bytes("a1 LOGIN bob hunter2\r\n")]
        );
        assert_eq!(
            shown(login, LiteralMode::NonSync),
            ["a1 LOGIN bob <redacted>\r\n"]
        );
        // An 8-bit password goes as a literal: its length is hidden too.
        let literal = |b: &mut CommandBuilder<'_>| {
            b.text("LOGIN bob ")
                .secret(|b| b.astring("pässwörd".as_bytes()));
        };
        assert_eq!(
            shown(literal, LiteralMode::Synchronizing),
            ["a1 LOGIN bob ", "<redacted>\r\n"]
        );
        let authenticate = |b: &mut CommandBuilder<'_>| {
            b.text("AUTHENTICATE PLAIN")
                .await_continuation()
                .secret(|b| b.text("AGJvYgBodW50ZXIy"))
                .await_continuation()
                .secret(|b| b.text(""));
        };
        assert_eq!(
            shown(authenticate, LiteralMode::NonSync),
            [
                "a1 AUTHENTICATE PLAIN\r\n",
                "<redacted>\r\n",
                "<redacted>\r\n"
            ]
        );
    }

    #[test]
    fn literals_are_shown_as_their_size() {
        let message = b"Subject: x\r\n\r\nbody\r\n";
        let append = |b: &mut CommandBuilder<'_>| {
            b.text("APPEND INBOX ").literal(message);
        };
        assert_eq!(
            shown(append, LiteralMode::NonSync),
            ["a1 APPEND INBOX {20+}\r\n{20 bytes}\r\n"]
        );
        assert_eq!(
            shown(append, LiteralMode::Synchronizing),
            ["a1 APPEND INBOX {20}\r\n", "{20 bytes}\r\n"]
        );
    }

    #[test]
    fn mailbox_names_are_quoted_when_needed() {
        let got = encode(
            |b| {
                b.mailbox("My Folder")
                    .text(" ")
                    .mailbox("a&b")
                    .text(" ")
                    .mailbox("x\"y");
            },
            LiteralMode::NonSync,
        );
        assert_eq!(got, [bytes("a1 \"My Folder\" a&-b \"x\\\"y\"\r\n")]);
    }

    #[test]
    fn flags() {
        let flags = ["\\Seen", "\\Recent", "$Label1"].map(String::from);
        assert_eq!(flag_list(&flags).unwrap(), "(\\Seen $Label1)");
        assert_eq!(flag_list(&[]).unwrap(), "()");
        assert!(flag_list(&["a b".into()]).is_err());
        assert!(flag_list(&["x)".into()]).is_err());
    }

    #[test]
    fn internal_dates() {
        let date = DateTime::parse_from_rfc3339("2024-03-05T07:08:09+02:00").unwrap();
        assert_eq!(
            format_internal_date(&date),
            "\"05-Mar-2024 07:08:09 +0200\""
        );
        assert_eq!(
            parse_internal_date("05-Mar-2024 07:08:09 +0200"),
            Some(date)
        );
        assert_eq!(
            parse_internal_date(" 5-Mar-2024 05:08:09 +0000"),
            Some(date)
        );
        let west = DateTime::parse_from_rfc3339("1999-12-31T23:59:59-08:00").unwrap();
        assert_eq!(
            parse_internal_date("31-Dec-1999 23:59:59 -0800"),
            Some(west)
        );
        assert_eq!(parse_internal_date("garbage"), None);
    }

    #[test]
    fn uid_sets_compress_and_split() {
        assert_eq!(uid_sets(&[5, 1, 2, 3, 9, 3], 100), ["1:3,5,9"]);
        assert_eq!(uid_sets(&[], 100), Vec::<String>::new());
        assert_eq!(uid_sets(&[1, 3, 5, 7], 3), ["1,3", "5,7"]);
    }
}
