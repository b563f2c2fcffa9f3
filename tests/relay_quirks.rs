//! The relay's quirks (`support::quirks`): the rewriter on its own, fed in every split, and
//! the relay in front of a real Dovecot, whose plain IMAP and POP3 answers are compared with
//! the same conversation without quirks.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use regex::bytes::Regex;
use support::quirks::{FOLD_WIDTH, Quirks, Rewriter, added_fields};
use support::relay::Relay;
use support::{Dovecot, password};

const ALL: Quirks = Quirks {
    bare_lf: true,
    refold_headers: true,
    added_fields: true,
};
const BARE_LF: Quirks = Quirks {
    bare_lf: true,
    refold_headers: false,
    added_fields: false,
};
const REFOLD: Quirks = Quirks {
    bare_lf: false,
    refold_headers: true,
    added_fields: false,
};
const ADDED: Quirks = Quirks {
    bare_lf: false,
    refold_headers: false,
    added_fields: true,
};

fn crlf_to_lf(bytes: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .into_bytes()
}

/// A rewriter fed `client` first, then `server` in pieces of the given lengths (the rest in
/// one), as a relay would: what the client gets.
fn rewrite(quirks: Quirks, client: &[u8], server: &[u8], splits: &[usize]) -> Vec<u8> {
    let mut rewriter = Rewriter::new(quirks);
    rewriter.client_sent(client);
    let mut out = Vec::new();
    let mut rest = server;
    for &len in splits {
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        out.extend(rewriter.server_sent(piece));
        rest = tail;
    }
    out.extend(rewriter.server_sent(rest));
    out.extend(rewriter.finish());
    out
}

fn byte_by_byte(quirks: Quirks, client: &[u8], server: &[u8]) -> Vec<u8> {
    rewrite(quirks, client, server, &vec![1; server.len()])
}

/// `Subject:` and ten words: 108 characters, which fold after the seventh word (78).
fn long_subject() -> (String, String) {
    let word = " aaaaaaaaa";
    (
        format!("Subject:{}", word.repeat(10)),
        format!("Subject:{}\r\n{}", word.repeat(7), word.repeat(3)),
    )
}

/// The two long literals of [`imap_sample`] as the server sends them: a header field, and a
/// message with that field and a body line just as long.
fn sample_literals() -> (String, String) {
    let (subject, _) = long_subject();
    (
        format!("{subject}\r\n\r\n"),
        format!("{subject}\r\nX: y\r\n\r\nbody {subject}\r\n"),
    )
}

/// An IMAP conversation's server side, with literals of every kind, and what the client gets
/// for it with all quirks on (derived by hand, not by the rewriter's code).
fn imap_sample() -> (Vec<u8>, Vec<u8>) {
    let (subject, folded) = long_subject();
    let folded = folded.replace("\r\n", "\n");
    let (fields, message) = sample_literals();
    let server = format!(
        "* OK ready\r\n\
         * 3 FETCH (UID 7 BODY[HEADER.FIELDS (SUBJECT)] {{{}}}\r\n{fields} BODY[] {{{}}}\r\n{message})\r\n\
         * 4 FETCH (BODY[TEXT] {{6}}\r\nx\r\ny\r\n BODY[] {{0}}\r\n RFC822.HEADER {{5}}\r\nA: b\n)\r\n\
         a OK done\r\n",
        fields.len(),
        message.len()
    );
    let fields = format!("{folded}\n\n");
    let message = format!("Status: RO\nX-UID: 3\n{folded}\nX: y\n\nbody {subject}\n");
    let client = format!(
        "* OK ready\n\
         * 3 FETCH (UID 7 BODY[HEADER.FIELDS (SUBJECT)] {{{}}}\n{fields} BODY[] {{{}}}\n{message})\n\
         * 4 FETCH (BODY[TEXT] {{4}}\nx\ny\n BODY[] {{0}}\n RFC822.HEADER {{25}}\nStatus: RO\nX-UID: 4\nA: b\n)\n\
         a OK done\n",
        fields.len(),
        message.len()
    );
    (server.into_bytes(), client.into_bytes())
}

/// A pipelined POP3 conversation (client side, server side), and what the client gets with
/// all quirks on.
fn pop3_sample() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (subject, folded) = long_subject();
    let client = b"CAPA\r\nRETR 2\r\nLIST 1\r\nTOP 2 0\r\nRETR 9\r\nUIDL\r\n".to_vec();
    let server = format!(
        "+OK hi\r\n\
         +OK\r\nTOP\r\nUIDL\r\n.\r\n\
         +OK 40 octets\r\n{subject}\r\n\r\n..dot\r\n.. {subject}\r\n.\r\n\
         +OK 1 40\r\n\
         +OK\r\n{subject}\r\n\r\n.\r\n\
         -ERR no such message\r\n\
         +OK\r\n1 x\r\n.\r\n"
    );
    let expected = format!(
        "+OK hi\n\
         +OK\nTOP\nUIDL\n.\n\
         +OK 40 octets\nStatus: RO\nX-UID: 2\n{folded}\n\n..dot\n.. {subject}\n.\n\
         +OK 1 40\n\
         +OK\nStatus: RO\nX-UID: 2\n{folded}\n\n.\n\
         -ERR no such message\n\
         +OK\n1 x\n.\n"
    )
    .replace("\r\n", "\n");
    (client, server.into_bytes(), expected.into_bytes())
}

#[test]
fn imap_rewriting_matches_the_hand_derived_answer_in_one_piece_and_byte_by_byte() {
    let (server, expected) = imap_sample();
    assert_eq!(
        String::from_utf8_lossy(&rewrite(ALL, b"", &server, &[])),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(byte_by_byte(ALL, b"", &server), expected);
}

#[test]
fn pop3_rewriting_follows_pipelined_commands_in_one_piece_and_byte_by_byte() {
    let (client, server, expected) = pop3_sample();
    assert_eq!(
        String::from_utf8_lossy(&rewrite(ALL, &client, &server, &[])),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(byte_by_byte(ALL, &client, &server), expected);
}

#[test]
fn each_quirk_alone_changes_only_its_part() {
    let (server, _) = imap_sample();
    let (fields, message) = sample_literals();
    let to_lf = |text: &str| text.replace("\r\n", "\n");
    let announced = |text: &str| format!("{{{}}}", text.len());
    let lf = rewrite(BARE_LF, b"", &server, &[]);
    let expected = to_lf(&String::from_utf8_lossy(&server))
        .replace("{6}", "{4}")
        .replace(&announced(&fields), &announced(&to_lf(&fields)))
        .replace(&announced(&message), &announced(&to_lf(&message)));
    assert_eq!(String::from_utf8_lossy(&lf), expected);

    let folded = String::from_utf8_lossy(&rewrite(REFOLD, b"", &server, &[])).into_owned();
    let (subject, folded_subject) = long_subject();
    assert_eq!(folded.matches(&folded_subject).count(), 2, "{folded}");
    assert!(folded.contains(&format!("body {subject}\r\n")), "{folded}");
    assert!(!folded.contains("Status: RO"));

    let added = String::from_utf8_lossy(&rewrite(ADDED, b"", &server, &[])).into_owned();
    let with_fields = format!("Status: RO\r\nX-UID: 3\r\n{message}");
    assert!(added.contains(&format!("{}\r\n{with_fields}", announced(&with_fields))));
    assert!(added.contains(&format!("{}\r\n{fields} BODY[]", announced(&fields))));
    assert!(
        added.contains("BODY[] {0}\r\n RFC822.HEADER {27}\r\nStatus: RO\r\nX-UID: 4\r\nA: b\n")
    );
    assert!(!added.contains(&folded_subject));

    let (client, server, _) = pop3_sample();
    assert_eq!(
        rewrite(BARE_LF, &client, &server, &[]),
        crlf_to_lf(&server),
        "POP3 keeps its dot-stuffing"
    );
}

#[test]
fn other_streams_and_unfinished_input_pass_unchanged() {
    // A TLS ClientHello-like start, and a `* PREAUTH` greeting: not parsed.
    for stream in [
        &b"\x16\x03\x01{5}\r\nabc\r\n"[..],
        b"* PREAUTH hi\r\n* 1 FETCH (BODY[] {2}\r\n\r\n)\r\n",
    ] {
        assert_eq!(rewrite(ALL, b"", stream, &[]), stream);
        assert_eq!(byte_by_byte(ALL, b"", stream), stream);
    }
    // The server's stream ends inside a literal: what came is passed on as it came.
    let cut = b"* OK hi\r\n* 1 FETCH (BODY[] {20}\r\nSubject: a\r\n";
    let mut rewriter = Rewriter::new(ALL);
    assert_eq!(rewriter.server_sent(cut), b"* OK hi\n");
    assert_eq!(rewriter.finish(), &cut[9..]);
}

proptest! {
    #[test]
    fn output_does_not_depend_on_how_the_input_is_split(
        splits in proptest::collection::vec(0usize..40, 0..40),
        bare_lf: bool,
        refold_headers: bool,
        added_fields: bool,
    ) {
        let quirks = Quirks { bare_lf, refold_headers, added_fields };
        let (imap, _) = imap_sample();
        prop_assert_eq!(rewrite(quirks, b"", &imap, &splits), rewrite(quirks, b"", &imap, &[]));
        let (client, pop3, _) = pop3_sample();
        prop_assert_eq!(
            rewrite(quirks, &client, &pop3, &splits),
            rewrite(quirks, &client, &pop3, &[])
        );
    }
}

// Against Dovecot.

const TIMEOUT: Duration = Duration::from_secs(30);

/// Two messages for alice's INBOX: long header lines with whitespace to fold at, a long body
/// line no quirk may fold, and lines POP3 dot-stuffs.
fn mailbox() -> Vec<Vec<u8>> {
    let references = (1..=4)
        .map(|i| format!("<a-rather-long-message-id-{i}@mailferry.test>"))
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        format!(
            "From: Quirk Test <quirks@example.org>\r\nTo: alice@example.net\r\n\
             Subject: A subject long enough to be folded by a server that folds header lines\r\n\
             Message-ID: <quirk-1@mailferry.test>\r\nReferences: {references}\r\n\
             Date: Mon, 6 Jan 2020 09:15:27 +0000\r\n\r\n\
             A body line longer than seventy-eight characters, which no quirk may fold at all.\r\n\
             .a line that starts with a dot\r\n.\r\nlast line\r\n"
        )
        .into_bytes(),
        b"From: b@example.org\r\nSubject: short\r\nMessage-ID: <quirk-2@mailferry.test>\r\n\r\nhi\r\n"
            .to_vec(),
    ]
}

/// A plaintext Dovecot with [`mailbox`] in alice's INBOX.
fn server() -> Dovecot {
    let dovecot = Dovecot::start_custom("", false, &[]);
    dovecot.append_many("alice", "INBOX", &mailbox());
    dovecot
}

/// Sends `script` at once to 127.0.0.1:`port` and returns everything the server sends until
/// it closes the connection (the script ends with a logout).
fn converse(port: u16, script: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    stream.write_all(script).expect("send the script");
    let deadline = Instant::now() + TIMEOUT;
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "no end of stream; so far: {}",
            String::from_utf8_lossy(&received)
        );
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn imap_script() -> Vec<u8> {
    format!(
        "a LOGIN alice {}\r\nb SELECT INBOX\r\n\
         c UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT REFERENCES)] \
         BODY.PEEK[HEADER] BODY.PEEK[])\r\nd LOGOUT\r\n",
        password("alice")
    )
    .into_bytes()
}

/// POP3 commands, each with whether its answer is multi-line.
fn pop3_commands() -> Vec<(String, bool)> {
    [
        ("USER alice".to_string(), false),
        (format!("PASS {}", password("alice")), false),
        ("LIST".to_string(), true),
        ("UIDL".to_string(), true),
        ("RETR 1".to_string(), true),
        ("TOP 1 0".to_string(), true),
        ("LIST 2".to_string(), false),
        ("RETR 2".to_string(), true),
        ("QUIT".to_string(), false),
    ]
    .into()
}

fn pop3_script() -> Vec<u8> {
    pop3_commands()
        .iter()
        .flat_map(|(command, _)| format!("{command}\r\n").into_bytes())
        .collect()
}

/// What differs between two IMAP sessions alike: Dovecot's tagged answers say how long a
/// command took, and a login process may greet before its auth process is ready.
fn without_timings(transcript: &[u8]) -> Vec<u8> {
    let timing = Regex::new(r"\(\d+\.\d+(?: \+ \d+\.\d+)* secs\)").unwrap();
    let waiting =
        Regex::new(r"^\* OK Waiting for authentication process to respond\.\.\r?\n").unwrap();
    let transcript = waiting.replace(transcript, &b""[..]);
    timing
        .replace_all(&transcript, &b"(T secs)"[..])
        .into_owned()
}

/// An IMAP transcript cut into lines (line ending included) and the literals they announce.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Line(String),
    /// What the literal holds, the item that announced it, and the `* n FETCH` it is in.
    Literal(Vec<u8>, Item, u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Fields,
    Header,
    Message,
}

/// The transcript's pieces, each literal as long as announced; the `{n}` of the lines is left
/// out, the literal's length stands for it.
fn imap_pieces(transcript: &[u8]) -> Vec<Piece> {
    let announcement = Regex::new(r"\{(\d+)\}\r?\n$").unwrap();
    let size_left_out = regex::Regex::new(r"\{\d+\}(\r?\n)$").unwrap();
    let fetch = regex::Regex::new(r"^\* (\d+) FETCH").unwrap();
    let mut pieces = Vec::new();
    let mut rest = transcript;
    let mut number = 0;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = &rest[end..];
        if let Some(found) = fetch.captures(&line) {
            number = found[1].parse().unwrap();
        }
        let Some(found) = announcement.captures(line.as_bytes()) else {
            pieces.push(Piece::Line(line));
            continue;
        };
        let size: usize = String::from_utf8_lossy(&found[1]).parse().unwrap();
        let item = if line.contains("HEADER.FIELDS") {
            Item::Fields
        } else if line.contains("BODY[HEADER]") {
            Item::Header
        } else {
            assert!(line.contains("BODY[]"), "unexpected literal after {line:?}");
            Item::Message
        };
        pieces.push(Piece::Line(
            size_left_out.replace(&line, "{}$1").into_owned(),
        ));
        assert!(size <= rest.len(), "literal {{{size}}} runs past the end");
        let (literal, tail) = rest.split_at(size);
        pieces.push(Piece::Literal(literal.to_vec(), item, number));
        rest = tail;
    }
    pieces
}

/// A POP3 transcript as answers to [`pop3_commands`] (the greeting first): each one's status
/// line and, when multi-line, its other lines (line endings included, terminator left out).
fn pop3_answers(transcript: &[u8]) -> Vec<(String, Vec<String>)> {
    let text = String::from_utf8_lossy(transcript);
    let mut lines = text.split_inclusive('\n');
    let mut answers = Vec::new();
    for (_, multi) in [(String::new(), false)].into_iter().chain(pop3_commands()) {
        let status = lines.next().expect("an answer").to_string();
        let mut body = Vec::new();
        if multi && status.starts_with("+OK") {
            loop {
                let line = lines.next().expect("the terminating line");
                if line.trim_end_matches(['\r', '\n']) == "." {
                    break;
                }
                body.push(line.to_string());
            }
        }
        answers.push((status, body));
    }
    assert_eq!(lines.next(), None, "more than the answers");
    answers
}

/// The header part of a message or header literal: up to and with the first empty line.
fn header(message: &[u8]) -> &[u8] {
    let mut end = 0;
    for line in message.split_inclusive(|&b| b == b'\n') {
        end += line.len();
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    &message[..end]
}

/// Both conversations, straight from Dovecot and through a relay with `quirks`.
struct Conversations {
    imap: Vec<u8>,
    quirky_imap: Vec<u8>,
    pop3: Vec<u8>,
    quirky_pop3: Vec<u8>,
}

fn conversations(dovecot: &Dovecot, quirks: Quirks) -> Conversations {
    let imap_relay = Relay::start(dovecot.imap_port());
    imap_relay.set_quirks(quirks);
    let pop3_relay = Relay::start(dovecot.pop3_port());
    pop3_relay.set_quirks(quirks);
    // The first SELECT takes the messages' \Recent flag, which later sessions then lack.
    converse(dovecot.imap_port(), &imap_script());
    let conversations = Conversations {
        imap: without_timings(&converse(dovecot.imap_port(), &imap_script())),
        quirky_imap: without_timings(&converse(imap_relay.port(), &imap_script())),
        pop3: converse(dovecot.pop3_port(), &pop3_script()),
        quirky_pop3: converse(pop3_relay.port(), &pop3_script()),
    };
    // The conversations really fetched the messages.
    let literals = imap_pieces(&conversations.imap)
        .into_iter()
        .filter(|piece| matches!(piece, Piece::Literal(..)))
        .count();
    assert_eq!(
        literals,
        6,
        "{}",
        String::from_utf8_lossy(&conversations.imap)
    );
    assert_eq!(pop3_answers(&conversations.pop3)[5].1.len(), 11);
    conversations
}

/// [`imap_pieces`] of `transcript` with `literal` applied to each literal and `line` to each
/// line.
fn map_pieces(
    transcript: &[u8],
    line: impl Fn(&str) -> String,
    literal: impl Fn(&[u8], Item, u32) -> Vec<u8>,
) -> Vec<Piece> {
    imap_pieces(transcript)
        .into_iter()
        .map(|piece| match piece {
            Piece::Line(text) => Piece::Line(line(&text)),
            Piece::Literal(bytes, item, number) => {
                Piece::Literal(literal(&bytes, item, number), item, number)
            }
        })
        .collect()
}

#[test]
fn without_quirks_the_relay_passes_every_byte() {
    let dovecot = server();
    let conversations = conversations(&dovecot, Quirks::default());
    assert_eq!(
        String::from_utf8_lossy(&conversations.quirky_imap),
        String::from_utf8_lossy(&conversations.imap)
    );
    assert_eq!(conversations.quirky_pop3, conversations.pop3);
    // What the other tests rely on: Dovecot serves CRLF and the long header lines unchanged.
    assert!(!crlf_to_lf(&conversations.imap).contains(&b'\r'));
    let first = &mailbox()[0];
    assert!(
        conversations
            .imap
            .windows(first.len())
            .any(|window| window == first)
    );
}

#[test]
fn bare_lf_turns_every_crlf_into_lf_and_announces_the_new_literal_lengths() {
    let dovecot = server();
    let conversations = conversations(&dovecot, BARE_LF);
    for quirky in [&conversations.quirky_imap, &conversations.quirky_pop3] {
        assert!(
            !quirky.windows(2).any(|w| w == b"\r\n"),
            "{}",
            String::from_utf8_lossy(quirky)
        );
    }
    assert_eq!(
        imap_pieces(&conversations.quirky_imap),
        map_pieces(
            &conversations.imap,
            |line| line.replace("\r\n", "\n"),
            |bytes, _, _| crlf_to_lf(bytes),
        )
    );
    let expected: Vec<_> = pop3_answers(&conversations.pop3)
        .into_iter()
        .map(|(status, body)| {
            let body = body.iter().map(|line| line.replace("\r\n", "\n")).collect();
            (status.replace("\r\n", "\n"), body)
        })
        .collect();
    let quirky = pop3_answers(&conversations.quirky_pop3);
    assert_eq!(quirky, expected);
    // Dot-stuffing survives, and the terminating lines are `.\n`.
    let retr = &quirky[5].1;
    assert!(retr.contains(&"..a line that starts with a dot\n".to_string()));
    assert!(retr.contains(&"..\n".to_string()));
    assert_eq!(
        String::from_utf8_lossy(&conversations.quirky_pop3)
            .matches("\n.\n")
            .count(),
        5
    );
}

/// Checks that `quirky` is `plain` with its header lines refolded; returns whether any was.
fn assert_refolded(quirky: &[u8], plain: &[u8]) -> bool {
    let unfold = Regex::new(r"\r\n([ \t])").unwrap();
    let (quirky_header, plain_header) = (header(quirky), header(plain));
    assert_eq!(
        String::from_utf8_lossy(&unfold.replace_all(quirky_header, &b"$1"[..])),
        String::from_utf8_lossy(plain_header)
    );
    for line in String::from_utf8_lossy(quirky_header).lines() {
        assert!(line.len() <= FOLD_WIDTH, "not folded: {line:?}");
    }
    assert_eq!(
        quirky[quirky_header.len()..],
        plain[plain_header.len()..],
        "the body changed"
    );
    quirky_header != plain_header
}

#[test]
fn refold_headers_folds_long_header_lines_and_nothing_else() {
    let dovecot = server();
    let conversations = conversations(&dovecot, REFOLD);
    let (quirky, plain) = (
        imap_pieces(&conversations.quirky_imap),
        imap_pieces(&conversations.imap),
    );
    assert_eq!(quirky.len(), plain.len());
    let mut folded = Vec::new();
    for (quirky, plain) in quirky.iter().zip(&plain) {
        match (quirky, plain) {
            (Piece::Literal(quirky, ..), Piece::Literal(plain, item, number)) => {
                if assert_refolded(quirky, plain) {
                    folded.push((*item, *number));
                }
            }
            _ => assert_eq!(quirky, plain),
        }
    }
    let first = [Item::Fields, Item::Header, Item::Message].map(|item| (item, 1));
    assert_eq!(folded, first, "message 1's long lines in each literal");

    let (quirky, plain) = (
        pop3_answers(&conversations.quirky_pop3),
        pop3_answers(&conversations.pop3),
    );
    for (index, (quirky, plain)) in quirky.iter().zip(&plain).enumerate() {
        assert_eq!(quirky.0, plain.0);
        let was_folded = assert_refolded(quirky.1.concat().as_bytes(), plain.1.concat().as_bytes());
        // RETR 1 and TOP 1 0.
        assert_eq!(was_folded, [5, 6].contains(&index), "answer {index}");
    }
}

#[test]
fn added_fields_top_whole_messages_and_headers_only() {
    let dovecot = server();
    let conversations = conversations(&dovecot, ADDED);
    assert_eq!(
        imap_pieces(&conversations.quirky_imap),
        map_pieces(
            &conversations.imap,
            str::to_owned,
            |bytes, item, number| match item {
                Item::Fields => bytes.to_vec(),
                Item::Header | Item::Message => [added_fields(number).as_bytes(), bytes].concat(),
            },
        )
    );
    let mut expected = pop3_answers(&conversations.pop3);
    // RETR 1, TOP 1 0, RETR 2.
    for (index, number) in [(5, 1), (6, 1), (8, 2)] {
        let fields = added_fields(number);
        let lines = fields.split_inclusive('\n').map(str::to_owned);
        expected[index].1.splice(0..0, lines);
    }
    assert_eq!(pop3_answers(&conversations.quirky_pop3), expected);
}

#[test]
fn all_quirks_through_the_relay_equal_the_rewriter_fed_byte_by_byte() {
    let dovecot = server();
    let conversations = conversations(&dovecot, ALL);
    assert_ne!(conversations.quirky_imap, conversations.imap);
    assert_eq!(
        String::from_utf8_lossy(&conversations.quirky_imap),
        String::from_utf8_lossy(&byte_by_byte(ALL, &imap_script(), &conversations.imap))
    );
    assert_ne!(conversations.quirky_pop3, conversations.pop3);
    assert_eq!(
        String::from_utf8_lossy(&conversations.quirky_pop3),
        String::from_utf8_lossy(&byte_by_byte(ALL, &pop3_script(), &conversations.pop3))
    );
}
