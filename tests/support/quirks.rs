//! Server quirks for the relay ([`Relay::set_quirks`](super::relay::Relay::set_quirks)): the
//! server-to-client stream of a plaintext IMAP or POP3 connection rewritten the way servers
//! that rewrite the bytes they store serve mail (an mbox server such as GNU Mailutils refolds
//! headers and adds `Status:`/`X-UID:` fields; others store and serve bare LF).
//!
//! [`Rewriter`] is a streaming state machine: bytes may arrive split anywhere, and the output
//! does not depend on where. The greeting says which protocol it parses (`* OK` IMAP, `+OK`
//! POP3); any other stream (a `* PREAUTH` greeting, TLS) passes unchanged. A connection that
//! switches to TLS (STARTTLS, STLS) must not be given quirks: its records would be parsed as
//! text.
//!
//! - IMAP: responses are read as lines, and a line ending in a literal announcement (`{n}` or
//!   `{n+}`) is followed by exactly n literal bytes; a rewritten literal is announced again
//!   with its new length. Which literals hold a message, its header or some of its header
//!   fields is told by the fetch item before the announcement (`BODY[]`, `RFC822`,
//!   `BODY[HEADER]`, `RFC822.HEADER`; `BODY[HEADER.FIELDS (…)]` and `.NOT`).
//! - POP3: which answers are multi-line depends on the commands, so the client's commands are
//!   queued as they pass ([`Rewriter::client_sent`]), pipelined ones too: RETR and TOP answer
//!   with a message, LIST, UIDL, CAPA and AUTH without an argument with a listing; a `-ERR`
//!   answer is one line whatever the command.
//!
//! Sizes the server states (IMAP `RFC822.SIZE`, POP3 `LIST` and `+OK n octets`) are left as
//! they are: servers that rewrite mail disagree with themselves there too.

use std::collections::VecDeque;

/// Which rewrites a quirky server applies; any combination. All off (the default) is a server
/// without quirks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quirks {
    /// Every CRLF becomes LF: in response lines, in IMAP literals of any kind and in POP3
    /// multi-line answers (whose dot-stuffing stays: a `..` line is still `..`, and the
    /// terminating line becomes `.\n`). A lone CR or LF is left alone.
    pub bare_lf: bool,
    /// Header lines longer than [`FOLD_WIDTH`] are folded before whitespace (in messages,
    /// message headers and header fields; never in a body): each piece ends before a run of
    /// spaces or tabs, which starts the next line, and is at most [`FOLD_WIDTH`] long unless a
    /// single word is longer. Unfolding gives back the original line.
    pub refold_headers: bool,
    /// [`added_fields`] are inserted at the top of every non-empty IMAP message or message
    /// header literal and of every POP3 RETR and TOP answer; header fields asked for by name
    /// are left alone, as a server returns only the fields asked for.
    pub added_fields: bool,
}

impl Quirks {
    /// Whether any quirk is on.
    pub fn any(self) -> bool {
        self.bare_lf || self.refold_headers || self.added_fields
    }
}

/// The longest header line [`Quirks::refold_headers`] leaves unfolded, without its line ending
/// (RFC 5322's recommended limit, which GNU Mailutils folds at).
pub const FOLD_WIDTH: usize = 78;

/// The fields [`Quirks::added_fields`] inserts into message number `number` (the POP3 message
/// number, the IMAP message sequence number), as an mbox server adds them; with CRLF line
/// endings, which [`Quirks::bare_lf`] turns into LF as everything else.
pub fn added_fields(number: u32) -> String {
    format!("Status: RO\r\nX-UID: {number}\r\n")
}

/// Rewrites one connection's server output with [`Quirks`]; see the module documentation.
#[derive(Debug)]
pub struct Rewriter {
    quirks: Quirks,
    protocol: Protocol,
    /// The server's unfinished line (before detection: the greeting so far).
    line: Vec<u8>,
    /// POP3: the client's unfinished command line.
    command: Vec<u8>,
    /// POP3: the answer each command sent and not yet answered gets, in order.
    expected: VecDeque<Answer>,
}

#[derive(Debug)]
enum Protocol {
    /// Until the greeting says which.
    Greeting,
    /// Neither IMAP nor POP3: passed through.
    Opaque,
    Imap(Imap),
    Pop3(Pop3),
}

#[derive(Debug, Default)]
struct Imap {
    /// The literal being read.
    literal: Option<Literal>,
    /// The message sequence number of the `* n FETCH` response being read (0 for others).
    number: u32,
    /// Whether the next line continues the response of the last literal.
    continues: bool,
}

#[derive(Debug)]
struct Literal {
    /// The announcing line as the server sent it, line ending included.
    line: Vec<u8>,
    /// Where its `{` is.
    brace: usize,
    /// `{n+}` rather than `{n}`.
    plus: bool,
    /// Bytes still to come.
    remaining: usize,
    bytes: Vec<u8>,
    content: Content,
}

#[derive(Debug)]
enum Pop3 {
    /// The next line is an answer's status line.
    Status,
    /// Inside a multi-line answer.
    Body(Editor),
}

/// How a POP3 command is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Single,
    Listing,
    /// A message (RETR) or its top (TOP), with its number.
    Message(u32),
}

/// What an IMAP literal or POP3 multi-line answer holds, as far as quirks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// A whole message or its header: fields are added, the header refolded.
    Message,
    /// Header fields asked for by name: refolded.
    Fields,
    /// Anything else: only line endings change.
    Text,
}

const IMAP_GREETING: &[u8] = b"* OK";
const POP3_GREETING: &[u8] = b"+OK";

impl Rewriter {
    /// A rewriter for a new connection.
    pub fn new(quirks: Quirks) -> Rewriter {
        Rewriter {
            quirks,
            protocol: Protocol::Greeting,
            line: Vec::new(),
            command: Vec::new(),
            expected: VecDeque::new(),
        }
    }

    /// Notes bytes the client sends, before they reach the server: POP3 commands decide which
    /// answers are multi-line.
    pub fn client_sent(&mut self, bytes: &[u8]) {
        if matches!(self.protocol, Protocol::Imap(_) | Protocol::Opaque) {
            return;
        }
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            self.command.extend_from_slice(piece);
            if piece.ends_with(b"\n") {
                let answer = expected_answer(&self.command);
                self.expected.push_back(answer);
                self.command.clear();
            }
        }
    }

    /// What the client gets for `bytes` from the server; bytes of an unfinished line or
    /// literal are held back until it is complete.
    pub fn server_sent(&mut self, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while !input.is_empty() {
            match &mut self.protocol {
                Protocol::Opaque => {
                    out.extend_from_slice(input);
                    break;
                }
                Protocol::Greeting => {
                    self.line.extend_from_slice(input);
                    return match detect(&self.line) {
                        None => out,
                        Some(protocol) => {
                            self.start(protocol);
                            let greeting = std::mem::take(&mut self.line);
                            self.server_sent(&greeting)
                        }
                    };
                }
                Protocol::Imap(imap) if imap.literal.is_some() => {
                    imap.take_literal(self.quirks, &mut input, &mut out);
                    continue;
                }
                Protocol::Imap(_) | Protocol::Pop3(_) => {}
            }
            let Some(end) = input.iter().position(|&b| b == b'\n') else {
                self.line.extend_from_slice(input);
                break;
            };
            self.line.extend_from_slice(&input[..=end]);
            input = &input[end + 1..];
            let line = std::mem::take(&mut self.line);
            match &mut self.protocol {
                Protocol::Imap(imap) => imap.line(self.quirks, line, &mut out),
                Protocol::Pop3(pop3) => {
                    pop3.line(self.quirks, &mut self.expected, &line, &mut out);
                }
                Protocol::Greeting | Protocol::Opaque => unreachable!("handled above"),
            }
        }
        out
    }

    /// Whatever is held back, unchanged: for the end of the server's stream, which leaves a
    /// line or literal unfinished for good.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Protocol::Imap(Imap {
            literal: Some(literal),
            ..
        }) = &mut self.protocol
        {
            out.append(&mut literal.line);
            out.append(&mut literal.bytes);
        }
        out.append(&mut self.line);
        out
    }

    fn start(&mut self, protocol: Protocol) {
        match protocol {
            Protocol::Pop3(_) => self.expected.push_front(Answer::Single),
            // Only POP3 answers depend on the commands.
            _ => {
                self.expected.clear();
                self.command.clear();
            }
        }
        self.protocol = protocol;
    }
}

/// The protocol a greeting starting with `start` belongs to; `None` while that may still
/// change.
fn detect(start: &[u8]) -> Option<Protocol> {
    if start.starts_with(IMAP_GREETING) {
        Some(Protocol::Imap(Imap::default()))
    } else if start.starts_with(POP3_GREETING) {
        Some(Protocol::Pop3(Pop3::Status))
    } else if IMAP_GREETING.starts_with(start) || POP3_GREETING.starts_with(start) {
        None
    } else {
        Some(Protocol::Opaque)
    }
}

/// How the POP3 command `line` is answered.
fn expected_answer(line: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_ascii_whitespace();
    let command = words.next().unwrap_or_default().to_ascii_uppercase();
    match (command.as_str(), words.next()) {
        // A number that does not parse is refused by the server anyway.
        ("RETR" | "TOP", Some(number)) => Answer::Message(number.parse().unwrap_or(0)),
        ("LIST" | "UIDL" | "CAPA" | "AUTH", None) => Answer::Listing,
        _ => Answer::Single,
    }
}

impl Imap {
    /// One line (or the part of a response between two literals), line ending included.
    fn line(&mut self, quirks: Quirks, line: Vec<u8>, out: &mut Vec<u8>) {
        let (content, ending) = split_ending(&line);
        if !self.continues {
            self.number = fetch_number(content);
        }
        let Some((brace, size, plus)) = literal_announcement(content) else {
            self.continues = false;
            out.extend_from_slice(content);
            out.extend_from_slice(quirks.ending(ending));
            return;
        };
        self.continues = true;
        self.literal = Some(Literal {
            content: section_content(&content[..brace]),
            line,
            brace,
            plus,
            remaining: size,
            bytes: Vec::new(),
        });
        // A `{0}` literal is complete already.
        self.take_literal(quirks, &mut &[][..], out);
    }

    /// Takes what belongs to the literal being read from `input`, and writes the literal once
    /// it is complete.
    fn take_literal(&mut self, quirks: Quirks, input: &mut &[u8], out: &mut Vec<u8>) {
        let literal = self.literal.as_mut().expect("a literal is being read");
        let (taken, rest) = input.split_at(literal.remaining.min(input.len()));
        literal.bytes.extend_from_slice(taken);
        literal.remaining -= taken.len();
        *input = rest;
        if literal.remaining > 0 {
            return;
        }
        let literal = self.literal.take().expect("a literal is being read");
        let mut body = Vec::with_capacity(literal.bytes.len());
        if !literal.bytes.is_empty() {
            let mut editor = Editor::new(quirks, literal.content, self.number, &mut body);
            for line in literal.bytes.split_inclusive(|&b| b == b'\n') {
                editor.line(line, &mut body);
            }
        }
        let (_, ending) = split_ending(&literal.line);
        out.extend_from_slice(&literal.line[..literal.brace]);
        let plus = if literal.plus { "+" } else { "" };
        out.extend_from_slice(format!("{{{}{plus}}}", body.len()).as_bytes());
        out.extend_from_slice(quirks.ending(ending));
        out.append(&mut body);
    }
}

impl Pop3 {
    /// One line, line ending included; `expected` holds the answers still to come.
    fn line(
        &mut self,
        quirks: Quirks,
        expected: &mut VecDeque<Answer>,
        line: &[u8],
        out: &mut Vec<u8>,
    ) {
        let (content, ending) = split_ending(line);
        match self {
            Pop3::Status => {
                out.extend_from_slice(content);
                out.extend_from_slice(quirks.ending(ending));
                // A line no command asked for (there should be none) is taken as one-line.
                let answer = expected.pop_front().unwrap_or(Answer::Single);
                if content.starts_with(POP3_GREETING) {
                    let body = match answer {
                        Answer::Single => return,
                        Answer::Listing => Editor::new(quirks, Content::Text, 0, out),
                        Answer::Message(number) => {
                            Editor::new(quirks, Content::Message, number, out)
                        }
                    };
                    *self = Pop3::Body(body);
                }
            }
            Pop3::Body(_) if content == b"." => {
                out.extend_from_slice(content);
                out.extend_from_slice(quirks.ending(ending));
                *self = Pop3::Status;
            }
            Pop3::Body(editor) => editor.line(line, out),
        }
    }
}

/// Rewrites one message, header or text line by line (POP3 answers come line by line, IMAP
/// literals whole; both go through here).
#[derive(Debug)]
struct Editor {
    quirks: Quirks,
    /// Whether the lines so far were header lines (no empty line yet) that are refolded.
    refolding: bool,
}

impl Editor {
    /// Starts rewriting `content` of message `number`, writing what goes before its first
    /// line to `out`.
    fn new(quirks: Quirks, content: Content, number: u32, out: &mut Vec<u8>) -> Editor {
        if quirks.added_fields && content == Content::Message {
            let fields = added_fields(number);
            for line in fields.as_bytes().split_inclusive(|&b| b == b'\n') {
                let (field, ending) = split_ending(line);
                out.extend_from_slice(field);
                out.extend_from_slice(quirks.ending(ending));
            }
        }
        Editor {
            quirks,
            refolding: quirks.refold_headers && content != Content::Text,
        }
    }

    /// One line, with its line ending if it has one.
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let (content, ending) = split_ending(line);
        self.refolding &= !content.is_empty();
        let ending = self.quirks.ending(ending);
        if self.refolding {
            // A last line without an ending is folded with the server's usual one.
            let fold = if ending.is_empty() {
                self.quirks.ending(b"\r\n")
            } else {
                ending
            };
            refold(content, fold, out);
        } else {
            out.extend_from_slice(content);
        }
        out.extend_from_slice(ending);
    }
}

impl Quirks {
    /// The line ending sent for one the server sent.
    fn ending(self, ending: &[u8]) -> &[u8] {
        if self.bare_lf && ending == b"\r\n" {
            b"\n"
        } else {
            ending
        }
    }
}

/// A line without and its line ending (CRLF, LF or nothing).
fn split_ending(line: &[u8]) -> (&[u8], &[u8]) {
    let cut = if line.ends_with(b"\r\n") {
        line.len() - 2
    } else if line.ends_with(b"\n") {
        line.len() - 1
    } else {
        line.len()
    };
    line.split_at(cut)
}

fn is_wsp(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// Writes the header line `content` folded as [`Quirks::refold_headers`] says, with `ending`
/// between the pieces.
fn refold(mut content: &[u8], ending: &[u8], out: &mut Vec<u8>) {
    while content.len() > FOLD_WIDTH {
        // Each piece keeps a word, and so does the rest: a line of whitespace alone could end
        // the header for a reader.
        let Some(first_word) = content.iter().position(|&b| !is_wsp(b)) else {
            break;
        };
        let last_word = content.iter().rposition(|&b| !is_wsp(b)).unwrap_or(0);
        let mut breaks = (first_word + 1..last_word)
            .filter(|&at| is_wsp(content[at]) && !is_wsp(content[at - 1]))
            .peekable();
        let Some(&first_break) = breaks.peek() else {
            break;
        };
        let at = breaks
            .take_while(|&at| at <= FOLD_WIDTH)
            .last()
            .unwrap_or(first_break);
        out.extend_from_slice(&content[..at]);
        out.extend_from_slice(ending);
        content = &content[at..];
    }
    out.extend_from_slice(content);
}

/// The number n of a `* n FETCH` line, 0 for other lines.
fn fetch_number(line: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some("*"), Some(number), Some(fetch)) if fetch.eq_ignore_ascii_case("FETCH") => {
            number.parse().unwrap_or(0)
        }
        _ => 0,
    }
}

/// Where a line (without its ending) announces a literal: the position of its `{`, the size,
/// and whether it is `{n+}`.
fn literal_announcement(line: &[u8]) -> Option<(usize, usize, bool)> {
    let inside = line.strip_suffix(b"}")?;
    let brace = inside.iter().rposition(|&b| b == b'{')?;
    let (digits, plus) = match inside[brace + 1..].strip_suffix(b"+") {
        Some(digits) => (digits, true),
        None => (&inside[brace + 1..], false),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((brace, size, plus))
}

/// What the literal announced after `head` (the response so far on its line) holds, told by
/// the fetch item right before the announcement.
fn section_content(head: &[u8]) -> Content {
    let head = head.trim_ascii_end().to_ascii_uppercase();
    if let Some(section) = head.strip_suffix(b"]") {
        let Some(open) = section.windows(5).rposition(|w| w == b"BODY[") else {
            return Content::Text;
        };
        return match &section[open + 5..] {
            b"" | b"HEADER" => Content::Message,
            fields if fields.starts_with(b"HEADER.FIELDS") => Content::Fields,
            _ => Content::Text,
        };
    }
    let item = head.rsplit(|&b| b == b' ' || b == b'(').next();
    match item {
        Some(b"RFC822" | b"RFC822.HEADER") => Content::Message,
        _ => Content::Text,
    }
}
