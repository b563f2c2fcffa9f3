//! A quick reader for the FETCH responses an index receives by the hundred thousand:
//! `* N FETCH (UID … RFC822.SIZE … FLAGS (…) INTERNALDATE "…" BODY[HEADER.FIELDS (…)] {n})`.
//!
//! Why not imap-proto alone: its parser (nom, trying each alternative in turn) took two fifths
//! of the CPU of a no-op re-run over 100,000 messages, where the servers' own work is the
//! floor. This reader takes only the one shape servers send for those requests, written the
//! way they write it (upper-case names, single spaces, plain quoted strings, `{n}` literals),
//! and gives exactly what imap-proto would give for it; anything else (another attribute, an
//! escape in a quoted string, a NIL date, lower case, a second space) is `None`, and imap-proto
//! reads it as before. The tests hold the two to the same answer.

use std::borrow::Cow;

use imap_proto::{AttributeValue, MessageSection, Response, SectionPath};

/// The FETCH response in `bytes` (a whole response, ending with CRLF), when it has the
/// shape this reader takes.
pub fn parse(bytes: &[u8]) -> Option<Response<'_>> {
    let mut at = Cursor { rest: bytes };
    at.tag(b"* ")?;
    let number = at.number()?;
    at.tag(b" FETCH (")?;
    let mut attributes = Vec::with_capacity(5);
    loop {
        attributes.push(at.attribute()?);
        if at.tag(b" ").is_none() {
            break;
        }
    }
    at.tag(b")\r\n")?;
    at.rest
        .is_empty()
        .then_some(Response::Fetch(number, attributes))
}

/// What is left of the response.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Steps over `expected`, if the response goes on with it.
    fn tag(&mut self, expected: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(expected)?;
        Some(())
    }

    /// Takes the bytes up to the first one `keep` refuses; `None` when there are none.
    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> Option<&'a [u8]> {
        let len = self
            .rest
            .iter()
            .position(|&b| !keep(b))
            .unwrap_or(self.rest.len());
        (len > 0).then(|| {
            let (taken, rest) = self.rest.split_at(len);
            self.rest = rest;
            taken
        })
    }

    /// Digits as a number of type `N`; `None` when they overflow it, as imap-proto refuses.
    fn digits<N: std::str::FromStr>(&mut self) -> Option<N> {
        let digits = self.take_while(|b| b.is_ascii_digit())?;
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    fn number(&mut self) -> Option<u32> {
        self.digits()
    }

    fn attribute(&mut self) -> Option<AttributeValue<'a>> {
        let name =
            self.take_while(|b| b.is_ascii_uppercase() || b == b'.' || b.is_ascii_digit())?;
        match name {
            b"UID" => {
                self.tag(b" ")?;
                Some(AttributeValue::Uid(self.number()?))
            }
            b"RFC822.SIZE" => {
                self.tag(b" ")?;
                Some(AttributeValue::Rfc822Size(self.number()?))
            }
            b"MODSEQ" => {
                self.tag(b" (")?;
                let modseq = self.digits()?;
                self.tag(b")")?;
                Some(AttributeValue::ModSeq(modseq))
            }
            b"FLAGS" => {
                self.tag(b" (")?;
                let mut flags = Vec::new();
                if self.tag(b")").is_none() {
                    loop {
                        flags.push(Cow::Borrowed(self.flag()?));
                        if self.tag(b" ").is_none() {
                            break;
                        }
                    }
                    self.tag(b")")?;
                }
                Some(AttributeValue::Flags(flags))
            }
            b"INTERNALDATE" => {
                self.tag(b" ")?;
                Some(AttributeValue::InternalDate(Cow::Borrowed(self.quoted()?)))
            }
            b"BODY" => {
                self.tag(b"[HEADER.FIELDS (")?;
                loop {
                    self.take_while(is_atom_char)?;
                    if self.tag(b" ").is_none() {
                        break;
                    }
                }
                self.tag(b")] ")?;
                let data = if self.tag(b"NIL").is_some() {
                    None
                } else if self.rest.first() == Some(&b'"') {
                    Some(self.quoted()?.as_bytes())
                } else {
                    Some(self.literal()?)
                };
                Some(AttributeValue::BodySection {
                    section: Some(SectionPath::Full(MessageSection::Header)),
                    index: None,
                    data: data.map(Cow::Borrowed),
                })
            }
            _ => None,
        }
    }

    /// A flag: a keyword, or `\` and a name.
    fn flag(&mut self) -> Option<&'a str> {
        let start = self.rest;
        let backslash = usize::from(self.tag(b"\\").is_some());
        let name = self.take_while(is_atom_char)?;
        std::str::from_utf8(&start[..backslash + name.len()]).ok()
    }

    /// A quoted string of printable ASCII without escapes, without its quotes.
    fn quoted(&mut self) -> Option<&'a str> {
        self.tag(b"\"")?;
        let text = self
            .take_while(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
            .unwrap_or_default();
        self.tag(b"\"")?;
        std::str::from_utf8(text).ok()
    }

    /// A `{n}` literal's bytes.
    fn literal(&mut self) -> Option<&'a [u8]> {
        self.tag(b"{")?;
        let len: usize = self.digits::<u32>()?.try_into().ok()?;
        self.tag(b"}\r\n")?;
        if self.rest.len() < len {
            return None;
        }
        let (data, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(data)
    }
}

/// RFC 3501's ATOM-CHAR: printable ASCII but the atom-specials.
fn is_atom_char(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && !b"(){%*\"\\]".contains(&b)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DOVECOT: &[u8] = b"* 7 FETCH (UID 12 RFC822.SIZE 3886 FLAGS (\\Seen $Label1) \
        INTERNALDATE \"06-Dec-2026 07:30:25 +0000\" BODY[HEADER.FIELDS (MESSAGE-ID DATE FROM)] \
        {32}\r\nMessage-ID: <a@b>\r\nFrom: x@y\r\n\r\n)\r\n";

    fn reference(bytes: &[u8]) -> Option<Response<'_>> {
        match Response::parse(bytes) {
            Ok((&[], response)) => Some(response),
            _ => None,
        }
    }

    #[test]
    fn reads_an_index_record_as_imap_proto_does() {
        let quick = parse(DOVECOT).expect("the shape servers send");
        assert_eq!(Some(&quick), reference(DOVECOT).as_ref());
        let Response::Fetch(7, attributes) = quick else {
            panic!("a FETCH of message 7: {quick:?}");
        };
        assert_eq!(attributes.len(), 5);
    }

    #[test]
    fn leaves_other_shapes_to_imap_proto() {
        for other in [
            &b"* 7 FETCH (uid 12)\r\n"[..],
            b"* 7 FETCH (UID  12)\r\n",
            b"* 7 FETCH (UID 12 X-GM-MSGID 5)\r\n",
            b"* 7 FETCH (INTERNALDATE NIL)\r\n",
            b"* 7 FETCH (INTERNALDATE \"a\\\"b\")\r\n",
            b"* 7 FETCH (BODY[] {3}\r\nabc)\r\n",
            b"* 7 FETCH (BODY[HEADER.FIELDS (A)] {9}\r\nabc)\r\n",
            b"* 7 FETCH (UID 99999999999)\r\n",
            b"* 7 FETCH (UID 12)\r\n* 8 FETCH (UID 13)\r\n",
            b"* 7 FETCH ()\r\n",
            b"* 7 EXPUNGE\r\n",
        ] {
            assert_eq!(parse(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    /// A number as a server writes it, now and then one past what the attribute holds.
    fn number(max: u64) -> impl Strategy<Value = (String, bool)> {
        prop_oneof![
            4 => (0..=max).prop_map(|n| (n.to_string(), true)),
            1 => (max as u128 + 1..=u128::from(u64::MAX) + 1).prop_map(|n| (n.to_string(), false)),
        ]
    }

    /// A text as a quoted string; in the shape taken when printable and free of `"` and `\`.
    fn quoted(text: Vec<u8>) -> (Vec<u8>, bool) {
        let taken = text
            .iter()
            .all(|&b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        let mut out = vec![b'"'];
        out.extend(text);
        out.push(b'"');
        (out, taken)
    }

    /// One attribute as a server might write it, and whether it has the shape this reader
    /// takes.
    fn attribute() -> impl Strategy<Value = (Vec<u8>, bool)> {
        let flag = prop_oneof![
            3 => "\\\\?[A-Za-z$][A-Za-z0-9$_.-]{0,8}".prop_map(|f| (f, true)),
            1 => "\\\\\\*".prop_map(|f| (f, false)),
            1 => "[A-Za-z]{1,3}\\]".prop_map(|f| (f, false)),
        ];
        let text =
            || proptest::collection::vec(prop_oneof![4 => b' '..=b'~', 1 => any::<u8>()], 0..24);
        let with = |name: &'static str| {
            move |(value, taken): (String, bool)| (format!("{name}{value}").into_bytes(), taken)
        };
        prop_oneof![
            number(u64::from(u32::MAX)).prop_map(with("UID ")),
            number(u64::from(u32::MAX)).prop_map(with("RFC822.SIZE ")),
            number(u64::MAX).prop_map(|(n, taken)| (format!("MODSEQ ({n})").into_bytes(), taken)),
            proptest::collection::vec(flag, 0..4).prop_map(|flags| {
                let taken = flags.iter().all(|(_, taken)| *taken);
                let names: Vec<String> = flags.into_iter().map(|(f, _)| f).collect();
                (format!("FLAGS ({})", names.join(" ")).into_bytes(), taken)
            }),
            text().prop_map(|date| {
                let (quoted, taken) = quoted(date);
                let mut out = b"INTERNALDATE ".to_vec();
                out.extend(quoted);
                (out, taken)
            }),
            Just((b"INTERNALDATE NIL".to_vec(), false)),
            (
                proptest::collection::vec("[A-Za-z-]{1,12}", 1..4),
                text(),
                0..3u8
            )
                .prop_map(|(names, data, form)| {
                    let mut out =
                        format!("BODY[HEADER.FIELDS ({})] ", names.join(" ")).into_bytes();
                    let taken = match form {
                        0 => {
                            out.extend(format!("{{{}}}\r\n", data.len()).into_bytes());
                            out.extend(data);
                            true
                        }
                        1 => {
                            let (quoted, taken) = quoted(data);
                            out.extend(quoted);
                            taken
                        }
                        _ => {
                            out.extend(b"NIL");
                            true
                        }
                    };
                    (out, taken)
                }),
            "[A-Za-z.\\[\\]() ]{1,16}".prop_map(|other| (other.into_bytes(), false)),
        ]
    }

    proptest! {
        /// Whatever this reader takes, imap-proto reads the same way; and it takes every
        /// response of the shape it is for.
        #[test]
        fn agrees_with_imap_proto(
            number in any::<u32>(),
            attributes in proptest::collection::vec(attribute(), 1..6),
            single_spaced in any::<bool>(),
        ) {
            let mut line = format!("* {number} FETCH (").into_bytes();
            for (i, (attribute, _)) in attributes.iter().enumerate() {
                if i > 0 {
                    line.extend(if single_spaced { &b" "[..] } else { b"  " });
                }
                line.extend(attribute);
            }
            line.extend(b")\r\n");
            let shaped = (single_spaced || attributes.len() == 1)
                && attributes.iter().all(|(_, taken)| *taken);
            let quick = parse(&line);
            prop_assert_eq!(quick.is_some(), shaped, "{}", String::from_utf8_lossy(&line));
            if let Some(quick) = quick {
                prop_assert_eq!(Some(quick), reference(&line));
            }
        }
    }
}
