//! `--keep-pop3-uidl`: POP3 clients that leave mail on the server remember each message's UIDL;
//! after a migration the new server must serve the same UIDLs, or every client downloads every
//! message again. Two ways, opt-in:
//!
//! - `header`: each copy of a message with a UIDL starts with one added field,
//!   `X-UIDL: <the source UIDL>`, which a Dovecot with `pop3_reuse_xuidl = yes` serves as the
//!   message's UIDL. It is the only change mailferry ever makes to a message. Identity ignores
//!   it (the Message-ID, or the fingerprint's fixed fields), so a re-run copies nothing; the
//!   index entry counts the added bytes, so verification expects the copy's size.
//! - `map=FILE`: one CSV row per copy (target account, target folder, UIDVALIDITY, UID, source
//!   UIDL, source size), appended after each run, for servers that import UIDLs by other means;
//!   the account tells apart the rows a batch appends.

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::index::SourceMessage;
use crate::private_file;
use crate::store::MessageUid;

/// What `--keep-pop3-uidl` asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepUidl {
    /// Add the `X-UIDL` field to each copy.
    pub header: bool,
    /// Append a row per copy to this CSV file.
    pub map: Option<PathBuf>,
}

impl KeepUidl {
    /// Reads the option's values (`header`, `map=FILE`; it may be given twice for both).
    pub fn parse(values: &[String]) -> Result<Self, Error> {
        let mut keep = KeepUidl::default();
        for value in values {
            match value.split_once('=') {
                None if value == "header" => keep.header = true,
                Some(("map", file)) if !file.is_empty() => keep.map = Some(file.into()),
                _ => {
                    return Err(Error::Usage {
                        message: format!("--keep-pop3-uidl {value}: not a way to keep UIDLs"),
                        hint: Some(
                            "use --keep-pop3-uidl header or --keep-pop3-uidl map=FILE".into(),
                        ),
                    });
                }
            }
        }
        Ok(keep)
    }

    /// Whether anything was asked for.
    pub fn any(&self) -> bool {
        self.header || self.map.is_some()
    }
}

/// The field added to a copy of the message with this UIDL.
fn field(uidl: &str) -> String {
    format!("X-UIDL: {uidl}\r\n")
}

/// The copy of a message with `X-UIDL` added first, and its index entry counting the added
/// bytes; a message without a UIDL is left as it is.
pub fn stamped<'a>(
    message: Arc<SourceMessage>,
    raw: Cow<'a, [u8]>,
) -> (Arc<SourceMessage>, Cow<'a, [u8]>) {
    let Some(uidl) = &message.stable_id else {
        return (message, raw);
    };
    let field = field(uidl);
    let mut copy = Vec::with_capacity(field.len() + raw.len());
    copy.extend_from_slice(field.as_bytes());
    copy.extend_from_slice(&raw);
    let mut entry = SourceMessage::clone(&message);
    entry.added = u32::try_from(field.len()).unwrap_or(u32::MAX);
    (Arc::new(entry), Cow::Owned(copy))
}

/// Appends one row per copy of a message with a UIDL to the CSV file at `path` (created with
/// a header line when missing): target account, target folder, UIDVALIDITY, UID, UIDL and
/// source size. A copy
/// whose place the target did not say (no UIDPLUS) has empty UIDVALIDITY and UID. The rows of
/// one call go in one write, so runs of a batch appending at once do not interleave lines.
pub fn append_map<'a>(
    path: &Path,
    account: &str,
    copies: impl IntoIterator<Item = (&'a str, &'a SourceMessage, Option<MessageUid>)>,
) -> Result<(), Error> {
    let mut rows = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    for (folder, message, at) in copies {
        let Some(uidl) = &message.stable_id else {
            continue;
        };
        let (validity, uid) = at.map_or((String::new(), String::new()), |at| {
            (at.uid_validity.to_string(), at.uid.to_string())
        });
        rows.write_record([
            account,
            folder,
            &validity,
            &uid,
            uidl,
            &message.size.to_string(),
        ])
        .map_err(|e| map_error(path, &e.to_string()))?;
    }
    let rows = rows
        .into_inner()
        .map_err(|e| map_error(path, &e.to_string()))?;
    if rows.is_empty() {
        return Ok(());
    }
    // Private like the reports: UIDLs and UIDs of someone's mail.
    let mut file = private_file::open_private(path).map_err(|e| map_error(path, &e.to_string()))?;
    let header: &[u8] = if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        b"target_account,target_folder,uidvalidity,uid,uidl,size\n"
    } else {
        b""
    };
    file.write_all(&[header, &rows].concat())
        .map_err(|e| map_error(path, &e.to_string()))
}

fn map_error(path: &Path, reason: &str) -> Error {
    Error::Usage {
        message: format!(
            "--keep-pop3-uidl map={}: cannot write: {reason}",
            path.display()
        ),
        hint: Some("the copies are made; re-running adds no rows for them".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity;

    #[test]
    fn the_option_takes_header_and_map_and_nothing_else() {
        let parse = |values: &[&str]| {
            KeepUidl::parse(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            parse(&["header", "map=uidls.csv"]).unwrap(),
            KeepUidl {
                header: true,
                map: Some("uidls.csv".into()),
            }
        );
        for wrong in ["headers", "map=", "map", "file=x"] {
            assert!(parse(&[wrong]).is_err(), "{wrong}");
        }
    }

    #[test]
    fn a_stamped_copy_has_one_field_more_the_same_identity_and_its_own_size() {
        let raw = b"Subject: no id\r\nFrom: a@x\r\n\r\nbody\r\n";
        let mut message = SourceMessage::with_id(1, "");
        message.identity = identity::identify(raw);
        message.size = raw.len() as u64;
        message.stable_id = Some("UID-17".into());
        let (entry, copy) = stamped(Arc::new(message.clone()), Cow::Borrowed(raw));
        assert_eq!(&copy[..], [&b"X-UIDL: UID-17\r\n"[..], raw].concat());
        assert_eq!(entry.copy_size(), copy.len() as u64);
        assert_eq!(entry.size, message.size);
        assert_eq!(identity::identify(&copy), message.identity);
        message.stable_id = None;
        let (entry, copy) = stamped(Arc::new(message.clone()), Cow::Borrowed(raw));
        assert_eq!((entry.copy_size(), &copy[..]), (message.size, &raw[..]));
    }
}
