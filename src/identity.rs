//! Message identity: how mailferry recognises a message on the target that it saw on the
//! source.
//!
//! The identity is the first `Message-ID` header, with comments, whitespace and angle brackets
//! removed and case kept. A message without one gets a fingerprint: SHA-256 over a fixed set of
//! header fields with all whitespace removed. Both are computed from header bytes alone, so the
//! source side (POP3 `TOP n 0`, IMAP header fetch) and the target side (one bulk `UID FETCH` of
//! the same fields) agree without downloading any body.
//!
//! Nothing a server may rewrite goes into a fingerprint: not the size (servers add fields such
//! as `Status:` or `X-UID:`, or serve LF for CRLF), not line ends or folding (GNU Mailutils
//! re-folds long header lines), not the fields' order. Two different messages with the same
//! fingerprint fields are look-alikes, which the plan's multiset keeps apart by count.
//!
//! Why our own code: mail-parser returns the *last* Message-ID when there are several, and
//! mailparse rejects ids without brackets or with comments; both forms occur in real mail.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use sha2::{Digest, Sha256};

use crate::header::{self, Field};

/// Every header field the identity depends on: what a target index must fetch.
pub const IDENTITY_FIELDS: [&str; 8] = [
    "Message-ID",
    "Date",
    "From",
    "To",
    "Cc",
    "Subject",
    "In-Reply-To",
    "References",
];

/// The header fields hashed into a fingerprint, in this order: all but the Message-ID.
pub const FINGERPRINT_FIELDS: &[&str] = IDENTITY_FIELDS.split_at(1).1;

/// What makes two messages "the same message" for deduplication.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Identity {
    /// The normalised first Message-ID; shared, since every index, receipt and check of a
    /// message holds its identity and a clone must not cost an allocation per message.
    MessageId(Arc<str>),
    /// SHA-256 of the canonical header fields, for messages without a Message-ID; boxed, so
    /// that the Message-IDs, most identities, do not each carry its 32 bytes.
    Fingerprint(Box<[u8; 32]>),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::MessageId(id) => write!(f, "<{id}>"),
            Identity::Fingerprint(hash) => {
                f.write_str("sha256:")?;
                hash.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

impl Identity {
    /// A 64-bit digest of the identity, equal for equal identities within a process (it is
    /// never stored): to compare identities without holding them.
    pub fn digest(&self) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        BuildHasherDefault::<DefaultHasher>::default().hash_one(self)
    }

    /// The identity an earlier run displayed as `shown` (`<id>` or `sha256:` and 64 hex
    /// digits), or `None` when `shown` is neither. Unambiguous: a normalised Message-ID holds
    /// no angle brackets.
    pub fn from_shown(shown: &str) -> Option<Identity> {
        if let Some(id) = shown.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
            return (!id.is_empty()).then(|| Identity::MessageId(id.into()));
        }
        let hex = shown.strip_prefix("sha256:")?;
        let mut hash = [0u8; 32];
        if hex.len() != 64 {
            return None;
        }
        for (byte, pair) in hash.iter_mut().zip(hex.as_bytes().chunks(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Identity::Fingerprint(Box::new(hash)))
    }
}

/// The identity of a message from its header bytes (the whole message is fine too).
pub fn identify(header: &[u8]) -> Identity {
    match header::first(header, "Message-ID").and_then(|f| normalize_message_id(&f)) {
        Some(id) => Identity::MessageId(id.into()),
        None => Identity::Fingerprint(Box::new(fingerprint(header))),
    }
}

/// The Message-ID without comments, whitespace or brackets; `None` when nothing is left.
/// Comments are only recognised outside the brackets: `<a(1)@x>` and `<a(2)@x>` differ.
fn normalize_message_id(field: &Field<'_>) -> Option<String> {
    let value = server_form(&field.value());
    let id = match bracketed(&value) {
        Some(inside) => inside.to_vec(),
        None => strip_comments(&value),
    };
    let id: Vec<u8> = id
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'<' && *b != b'>')
        .collect();
    (!id.is_empty()).then(|| text_of(id))
}

/// What stands between the first `<` outside a comment and the next `>`.
fn bracketed(value: &[u8]) -> Option<&[u8]> {
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, &b) in value.iter().enumerate() {
        match (depth, escaped, b) {
            (0, _, b'(') => depth = 1,
            (0, _, b'<') => {
                let len = value[i + 1..].iter().position(|&b| b == b'>')?;
                return Some(&value[i + 1..i + 1 + len]);
            }
            (0, _, _) => {}
            (_, true, _) => escaped = false,
            (_, false, b'\\') => escaped = true,
            (_, false, b'(') => depth += 1,
            (_, false, b')') => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The id as text: UTF-8 as it is, other 8-bit bytes as `\xNN` escapes, so two ids that differ
/// only in invalid bytes stay different (a lossy decoding would make both U+FFFD).
fn text_of(id: Vec<u8>) -> String {
    String::from_utf8(id).unwrap_or_else(|err| {
        let bytes = err.into_bytes();
        let mut text = String::new();
        for chunk in bytes.utf8_chunks() {
            text.push_str(chunk.valid());
            for b in chunk.invalid() {
                text.push_str(&format!("\\x{b:02x}"));
            }
        }
        text
    })
}

/// Dovecot stores NUL as 0x80; map it the same way on both sides so a NUL in a header does not
/// make the copy look like a different message.
fn server_form(value: &[u8]) -> Vec<u8> {
    value
        .iter()
        .map(|&b| if b == 0 { 0x80 } else { b })
        .collect()
}

/// Removes RFC 5322 comments `( ... )`, which nest and may contain quoted pairs.
fn strip_comments(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut depth = 0usize;
    let mut escaped = false;
    for &b in value {
        if depth > 0 {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'(') => depth += 1,
                (false, b')') => depth -= 1,
                _ => {}
            }
        } else if b == b'(' {
            depth = 1;
        } else {
            out.push(b);
        }
    }
    out
}

/// Whitespace is left out altogether, not collapsed: a server that re-folds a long line may
/// break it where there was no blank, and unfolding then adds one.
fn fingerprint(header: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for name in FINGERPRINT_FIELDS {
        hash.update(name.as_bytes());
        hash.update(b":");
        if let Some(field) = header::first(header, name) {
            let value = server_form(&field.value());
            value
                .split(u8::is_ascii_whitespace)
                .for_each(|word| hash.update(word));
        }
        hash.update(b"\n");
    }
    hash.finalize().into()
}

/// The INTERNALDATE to give a message that has none of its own (a POP3 message): the date of
/// the topmost `Received:` header (when the receiving server got it), else `Date:`, else none.
pub fn arrival_date(header: &[u8]) -> Option<DateTime<FixedOffset>> {
    let received = header::first(header, "Received").and_then(|f| {
        let value = f.value();
        let after_semicolon = value.iter().rposition(|&b| b == b';')? + 1;
        parse_rfc5322_date(&value[after_semicolon..])
    });
    received.or_else(|| header::first(header, "Date").and_then(|f| parse_rfc5322_date(&f.value())))
}

/// Parses a date as found in mail, tolerating comments such as `(UTC)` and a missing weekday.
pub fn parse_rfc5322_date(value: &[u8]) -> Option<DateTime<FixedOffset>> {
    let text = String::from_utf8_lossy(&strip_comments(value)).into_owned();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    DateTime::parse_from_rfc2822(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_as_small_as_a_shared_message_id() {
        // Every index entry, receipt and copy record holds one: 100,000 of them add up.
        assert!(std::mem::size_of::<Identity>() <= 16);
    }

    fn id(raw: &[u8]) -> Identity {
        identify(raw)
    }

    #[test]
    fn message_id_is_normalised_with_case_kept() {
        for raw in [
            &b"Message-ID: <Abc.123@Example.COM>\r\n\r\n"[..],
            b"message-id:   <Abc.123@Example.COM>  \r\n\r\n",
            b"Message-Id: (a comment) <Abc.123@Example.COM> (trailing (nested))\r\n\r\n",
            b"Message-ID:\r\n <Abc.123@Example.COM>\r\n\r\n",
            b"Message-ID: Abc.123@Example.COM\n\n",
            b"Message-ID: <Abc.123@\r\n Example.COM>\r\n\r\n",
        ] {
            assert_eq!(id(raw), Identity::MessageId("Abc.123@Example.COM".into()));
        }
    }

    #[test]
    fn parentheses_inside_the_brackets_belong_to_the_id() {
        assert_ne!(
            id(b"Message-ID: <a(1)@x>\r\n\r\n"),
            id(b"Message-ID: <a(2)@x>\r\n\r\n")
        );
        assert_eq!(
            id(b"Message-ID: (see <other@x>) <real@x>\r\n\r\n"),
            Identity::MessageId("real@x".into())
        );
    }

    #[test]
    fn ids_differing_in_invalid_bytes_stay_different() {
        let a = id(b"Message-ID: <caf\xe9@x>\r\n\r\n");
        let b = id(b"Message-ID: <caf\xe8@x>\r\n\r\n");
        assert_ne!(a, b);
        assert_eq!(a, Identity::MessageId("caf\\xe9@x".into()));
    }

    #[test]
    fn the_first_message_id_wins() {
        let raw = b"Message-ID: <first@x>\r\nMessage-ID: <second@x>\r\n\r\n";
        assert_eq!(id(raw), Identity::MessageId("first@x".into()));
    }

    #[test]
    fn empty_message_id_falls_back_to_a_fingerprint() {
        assert!(matches!(
            id(b"Message-ID: <>\r\nSubject: s\r\n\r\n"),
            Identity::Fingerprint(_)
        ));
        assert!(matches!(
            id(b"Message-ID: (only a comment)\r\n\r\n"),
            Identity::Fingerprint(_)
        ));
    }

    #[test]
    fn fingerprint_ignores_folding_line_ends_and_body_but_not_fields() {
        let a = b"From: a@x\r\nSubject: hello\r\n world\r\n\r\nbody one\r\n";
        let refolded = b"From:  a@x\r\nSubject: hello world\r\n\r\n";
        let lf = b"From: a@x\nSubject: hello world\n\nbody two, longer\n";
        assert_eq!(id(a), id(refolded));
        assert_eq!(id(a), id(lf));
        let other = b"From: b@x\r\nSubject: hello world\r\n\r\n";
        assert_ne!(id(a), id(other));
        let moved = b"From: a@x\r\nSubject: hello\r\nTo: world\r\n\r\n";
        assert_ne!(id(a), id(moved));
    }

    #[test]
    fn fingerprint_survives_a_server_refolding_inside_a_word_and_adding_fields() {
        let long = format!("Subject: {}\r\nFrom: a@x\r\n\r\n", "w".repeat(120));
        let refolded = format!(
            "Status: RO\r\nX-UID: 7\r\nSubject: {}\r\n {}\r\nFrom: a@x\r\n\r\n",
            "w".repeat(70),
            "w".repeat(50)
        );
        assert_eq!(id(long.as_bytes()), id(refolded.as_bytes()));
    }

    #[test]
    fn fingerprint_sees_only_its_fields() {
        let source = b"Received: from x by y; Mon, 1 Jan 2024 10:00:00 +0000\r\nX-Spam: yes\r\nFrom: a@x\r\nSubject: s\r\n\r\n";
        let target_fetch = b"From: a@x\r\nSubject: s\r\n\r\n";
        assert_eq!(id(source), id(target_fetch));
    }

    #[test]
    fn nul_in_a_header_matches_the_server_copy() {
        let source = b"Message-ID: <a\0b@x>\r\n\r\n";
        let stored = b"Message-ID: <a\x80b@x>\r\n\r\n";
        assert_eq!(id(source), id(stored));
    }

    #[test]
    fn an_identity_reads_back_from_how_it_is_shown() {
        for identity in [
            id(b"Message-ID: <Abc.123@Example.COM>\r\n\r\n"),
            id(b"Subject: s\r\n\r\n"),
        ] {
            assert_eq!(Identity::from_shown(&identity.to_string()), Some(identity));
        }
        for garbage in [
            "",
            "<>",
            "abc",
            "sha256:12",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert_eq!(Identity::from_shown(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn fingerprint_displays_as_hex() {
        let shown = id(b"Subject: s\r\n\r\n").to_string();
        assert!(
            shown.starts_with("sha256:") && shown.len() == 7 + 64,
            "{shown}"
        );
    }

    #[test]
    fn arrival_date_prefers_the_topmost_received() {
        let raw = b"Received: from a by b; Tue, 2 Jan 2024 10:00:00 +0100 (CET)\r\n\
Received: from c by d; Mon, 1 Jan 2024 09:00:00 +0000\r\n\
Date: Sun, 31 Dec 2023 23:00:00 +0000\r\n\r\n";
        let date = arrival_date(raw).unwrap();
        assert_eq!(date.to_rfc3339(), "2024-01-02T10:00:00+01:00");
    }

    #[test]
    fn arrival_date_falls_back_to_date_then_none() {
        let raw = b"Date: 5 Mar 2019 08:07:06 -0500\r\n\r\n";
        assert_eq!(
            arrival_date(raw).unwrap().to_rfc3339(),
            "2019-03-05T08:07:06-05:00"
        );
        assert_eq!(arrival_date(b"Subject: x\r\n\r\n"), None);
        assert_eq!(
            arrival_date(b"Received: garbage\r\nDate: nonsense\r\n\r\n"),
            None
        );
    }
}
