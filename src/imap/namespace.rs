//! The NAMESPACE response (RFC 2342), which `imap-proto` 0.17 does not parse: read here from
//! the bytes of one framed response, without I/O.

use super::mutf7;
use super::response::excerpt;
use crate::error::SessionError;
use crate::folders::Namespace;

/// The personal namespace a response announces: `Ok(None)` when `raw` is no NAMESPACE
/// response; otherwise the first personal namespace (the one RFC 2342 says the user's folders
/// belong in), or the empty one when the server has none (`NIL`). Other users' and shared
/// namespaces are not kept: their folders are copied under their whole names.
pub fn personal(raw: &[u8]) -> Result<Option<Namespace>, SessionError> {
    let mut cursor = Cursor { raw, at: 0 };
    let named = cursor.word(b"* NAMESPACE");
    if !named || !matches!(raw.get(cursor.at), Some(b' ' | b'\r')) {
        return Ok(None);
    }
    cursor
        .response()
        .map(Some)
        .ok_or_else(|| SessionError::Protocol(format!("unreadable NAMESPACE: {}", excerpt(raw))))
}

/// A position in a response; each method consumes what it reads, `None` when it cannot.
struct Cursor<'a> {
    raw: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    /// `* NAMESPACE` read, the three namespaces (personal, other users', shared) to the end.
    fn response(&mut self) -> Option<Namespace> {
        self.expect(b" ")?;
        let personal = self.namespace()?;
        for _ in 0..2 {
            self.expect(b" ")?;
            self.namespace()?;
        }
        self.word(b"\r\n");
        (self.at == self.raw.len()).then(|| personal.unwrap_or_default())
    }

    /// `NIL` or a parenthesised list of descriptions: the first one.
    fn namespace(&mut self) -> Option<Option<Namespace>> {
        if self.word(b"NIL") {
            return Some(None);
        }
        self.expect(b"(")?;
        let first = self.description()?;
        // RFC 2342 puts nothing between descriptions; some servers put a space.
        while !self.word(b")") {
            self.word(b" ");
            self.description()?;
        }
        Some(Some(first))
    }

    /// `(prefix delimiter *extension)`.
    fn description(&mut self) -> Option<Namespace> {
        self.expect(b"(")?;
        let prefix = String::from_utf8(self.string()?).ok()?;
        self.expect(b" ")?;
        let delimiter = if self.word(b"NIL") {
            None
        } else {
            let delimiter = String::from_utf8(self.string()?).ok()?;
            let mut chars = delimiter.chars();
            let (Some(delimiter), None) = (chars.next(), chars.next()) else {
                return None;
            };
            Some(delimiter)
        };
        // Extensions (RFC 2342 §5): ` name (value *(SP value))`, skipped.
        while self.word(b" ") {
            self.string()?;
            self.expect(b" (")?;
            self.string()?;
            while self.word(b" ") {
                self.string()?;
            }
            self.expect(b")")?;
        }
        self.expect(b")")?;
        Some(Namespace {
            prefix: mutf7::decode(&prefix).unwrap_or(prefix),
            delimiter,
        })
    }

    /// A quoted string (with `\"` and `\\`) or a literal (`{n}\r\n` and n bytes).
    fn string(&mut self) -> Option<Vec<u8>> {
        if self.word(b"{") {
            let digits = self.raw[self.at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let len: usize = std::str::from_utf8(&self.raw[self.at..self.at + digits])
                .ok()?
                .parse()
                .ok()?;
            self.at += digits;
            self.expect(b"}\r\n")?;
            let bytes = self.raw.get(self.at..self.at.checked_add(len)?)?.to_vec();
            self.at += len;
            return Some(bytes);
        }
        self.expect(b"\"")?;
        let mut bytes = Vec::new();
        loop {
            let byte = *self.raw.get(self.at)?;
            self.at += 1;
            match byte {
                b'"' => return Some(bytes),
                b'\\' => {
                    bytes.push(*self.raw.get(self.at)?);
                    self.at += 1;
                }
                b'\r' | b'\n' => return None,
                other => bytes.push(other),
            }
        }
    }

    /// Consumes `token` (ASCII, any case) if it comes next.
    fn word(&mut self, token: &[u8]) -> bool {
        let next = self.raw.get(self.at..self.at + token.len());
        let found = next.is_some_and(|next| next.eq_ignore_ascii_case(token));
        if found {
            self.at += token.len();
        }
        found
    }

    /// Consumes `token`, which must come next.
    fn expect(&mut self, token: &[u8]) -> Option<()> {
        self.word(token).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &str) -> Option<Namespace> {
        personal(raw.as_bytes()).unwrap()
    }

    fn namespace(prefix: &str, delimiter: Option<char>) -> Option<Namespace> {
        Some(Namespace {
            prefix: prefix.into(),
            delimiter,
        })
    }

    #[test]
    fn the_first_personal_namespace_is_kept() {
        // Courier, and Cyrus without altnamespace.
        assert_eq!(
            read("* NAMESPACE ((\"INBOX.\" \".\")) NIL ((\"#shared.\" \".\"))\r\n"),
            namespace("INBOX.", Some('.'))
        );
        // Dovecot's default.
        assert_eq!(
            read("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"),
            namespace("", Some('/'))
        );
        // Two personal namespaces (RFC 2342 §5, example 5.3), the second with a space before it.
        assert_eq!(
            read(
                "* namespace ((\"\" \"/\") (\"#mh/\" \"/\")) ((\"~\" \"/\")) \
                 ((\"#shared/\" \"/\")(\"#public/\" \"/\"))\r\n"
            ),
            namespace("", Some('/'))
        );
    }

    #[test]
    fn no_personal_namespace_and_no_delimiter() {
        assert_eq!(
            read("* NAMESPACE NIL NIL ((\"\" \".\"))\r\n"),
            namespace("", None)
        );
        assert_eq!(
            read("* NAMESPACE ((\"Mail\" NIL)) NIL NIL\r\n"),
            namespace("Mail", None)
        );
    }

    #[test]
    fn escapes_literals_extensions_and_modified_utf7() {
        assert_eq!(
            read("* NAMESPACE ((\"a\\\\b\\\"\" \"\\\\\")) NIL NIL\r\n"),
            namespace("a\\b\"", Some('\\'))
        );
        assert_eq!(
            read("* NAMESPACE (({6}\r\nINBOX. \".\")) NIL NIL\r\n"),
            namespace("INBOX.", Some('.'))
        );
        assert_eq!(
            read(
                "* NAMESPACE ((\"\" \"/\" \"X-PARAM\" (\"FLAG1\" \"FLAG2\"))) NIL \
                 ((\"Public Folders/\" \"/\" \"X-NAME\" (\"x\")))\r\n"
            ),
            namespace("", Some('/'))
        );
        assert_eq!(
            read("* NAMESPACE ((\"Entw&APw-rfe/\" \"/\")) NIL NIL\r\n"),
            namespace("Entwürfe/", Some('/'))
        );
    }

    #[test]
    fn other_responses_are_not_namespaces() {
        assert_eq!(read("* LIST () \"/\" INBOX\r\n"), None);
        assert_eq!(read("* NAMESPACES x\r\n"), None);
        assert_eq!(read("a1 OK NAMESPACE done\r\n"), None);
    }

    #[test]
    fn malformed_namespaces_are_protocol_errors() {
        for raw in [
            "* NAMESPACE\r\n",
            "* NAMESPACE ((\"INBOX.\" \".\")) NIL\r\n",
            "* NAMESPACE ((\"INBOX.\" \"..\")) NIL NIL\r\n",
            "* NAMESPACE ((\"INBOX. \".\")) NIL NIL\r\n",
            "* NAMESPACE ((\"INBOX.\" \".\") NIL NIL\r\n",
            "* NAMESPACE (({99}\r\nINBOX. \".\")) NIL NIL\r\n",
            "* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL trailing\r\n",
        ] {
            assert!(
                matches!(personal(raw.as_bytes()), Err(SessionError::Protocol(_))),
                "{raw:?}"
            );
        }
    }
}
