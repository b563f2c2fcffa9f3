//! Mail sources, read-only. [`Pop3Source`] reads a POP3 maildrop: indexed with pipelined
//! `TOP n 0`, fetched with pipelined `RETR`, never modified (no DELE). [`ImapSource`] reads
//! every folder of an IMAP account with EXAMINE and `BODY.PEEK`, so not even `\Seen` changes.

use std::collections::HashMap;

use crate::endpoint::Side;
use crate::error::{Error, SessionError};
use crate::folders::FolderInfo;
use crate::identity::{self, IDENTITY_FIELDS};
use crate::imap::{FolderStatus, ImapClient};
use crate::index::SourceMessage;
use crate::migrate::{Account, ConnectOptions};
use crate::pop3::{FetchError, Pop3Client};
use crate::session;
use crate::transfer::{Outgoing, Source, Unreadable};

/// The one folder a POP3 maildrop has.
pub const POP3_FOLDER: &str = "INBOX";

/// Largest message mailferry will read from a POP3 server (a bound against a runaway server).
const MAX_MESSAGE_SIZE: u64 = 1 << 30;

/// A POP3 maildrop as a [`Source`].
pub struct Pop3Source {
    client: Pop3Client,
    account: Account,
    flags: Vec<String>,
}

/// POP3 must end a message with CRLF before its `.` line, so a server adds one to a message that
/// had no final line ending (Dovecot does) while LIST still counts the message without it. When
/// exactly that CRLF is extra, it is not part of the message: drop it, so the copy is exact and
/// its size matches the fingerprint computed from LIST.
fn strip_added_line_end(raw: &mut Vec<u8>, listed_size: u64) {
    if raw.len() as u64 == listed_size + 2 && raw.ends_with(b"\r\n") {
        raw.truncate(raw.len() - 2);
    }
}

/// Why a fetch loop stopped early on the caller's request.
struct Stop;

impl Pop3Source {
    /// Connects and logs in. `mark_seen` gives every copy the `\Seen` flag (POP3 has none).
    pub fn connect(
        account: &Account,
        options: &ConnectOptions,
        mark_seen: bool,
    ) -> Result<Self, Error> {
        Ok(Pop3Source {
            client: session::open_pop3(account, Side::From, options)?,
            account: account.clone(),
            flags: if mark_seen {
                vec!["\\Seen".to_owned()]
            } else {
                Vec::new()
            },
        })
    }

    fn failed(&self, err: SessionError) -> Error {
        Error::from_session(&self.account.endpoint, Side::From, err)
    }
}

impl Source for Pop3Source {
    fn folders(&mut self) -> Result<Vec<FolderInfo>, Error> {
        Ok(vec![FolderInfo::from_list(
            POP3_FOLDER.to_owned(),
            None,
            &[],
        )])
    }

    fn index(&mut self, _folder: &str) -> Result<Vec<SourceMessage>, Error> {
        let sizes = self.client.list().map_err(|e| self.failed(e))?;
        let msgnos: Vec<u32> = sizes.iter().map(|&(n, _)| n).collect();
        let mut index = Vec::with_capacity(sizes.len());
        let mut sizes_in_order = sizes.iter();
        let flags = &self.flags;
        let refused = self
            .client
            .top_headers(&msgnos, |msgno, header| {
                // TOP answers come back in the order asked, which is LIST order.
                let size = sizes_in_order
                    .find(|&&(n, _)| n == msgno)
                    .map_or(0, |&(_, size)| size);
                index.push(SourceMessage {
                    key: msgno,
                    identity: identity::identify(&header, size),
                    size,
                    flags: flags.clone(),
                    internal_date: identity::arrival_date(&header),
                });
                Ok::<(), Stop>(())
            })
            .map_err(|e| match e {
                FetchError::Session(err) => self.failed(err),
                FetchError::Stopped(Stop) => unreachable!("the index callback never stops"),
            })?;
        if let Some((msgno, reason)) = refused.first() {
            return Err(self.failed(SessionError::Refused(format!(
                "TOP {msgno} 0 refused ({reason}); the server may not support TOP"
            ))));
        }
        Ok(index)
    }

    fn fetch(
        &mut self,
        _folder: &str,
        messages: Vec<SourceMessage>,
        deliver: &mut dyn FnMut(Result<Outgoing, Unreadable>) -> bool,
    ) -> Result<(), Error> {
        let Some(mut planned) = deliver_too_large(messages, deliver) else {
            return Ok(());
        };
        let mut msgnos: Vec<u32> = planned.keys().copied().collect();
        msgnos.sort_unstable();
        // The cap leaves room for the line end a server adds (see strip_added_line_end).
        let result = self
            .client
            .retr(&msgnos, MAX_MESSAGE_SIZE + 2, |msgno, mut raw| {
                let message = planned
                    .remove(&msgno)
                    .expect("RETR answers only what was asked");
                strip_added_line_end(&mut raw, message.size);
                if deliver(Ok(Outgoing { message, raw })) {
                    Ok(())
                } else {
                    Err(Stop)
                }
            });
        match result {
            Ok(refused) => {
                for (msgno, reason) in refused {
                    if let Some(message) = planned.remove(&msgno) {
                        let reason = format!("the POP3 server refused to send it: {reason}");
                        if !deliver(Err(Unreadable { message, reason })) {
                            break;
                        }
                    }
                }
                Ok(())
            }
            Err(FetchError::Stopped(Stop)) => Ok(()),
            Err(FetchError::Session(err)) => Err(self.failed(err)),
        }
    }
}

/// Reports the messages over [`MAX_MESSAGE_SIZE`] as unreadable and returns the others by
/// key, or `None` when `deliver` asked to stop.
fn deliver_too_large(
    messages: Vec<SourceMessage>,
    deliver: &mut dyn FnMut(Result<Outgoing, Unreadable>) -> bool,
) -> Option<HashMap<u32, SourceMessage>> {
    let mut readable = HashMap::with_capacity(messages.len());
    for message in messages {
        if message.size > MAX_MESSAGE_SIZE {
            let reason = format!(
                "{} bytes: larger than the {} bytes mailferry reads",
                message.size, MAX_MESSAGE_SIZE
            );
            if !deliver(Err(Unreadable { message, reason })) {
                return None;
            }
        } else {
            readable.insert(message.key, message);
        }
    }
    Some(readable)
}

/// An IMAP account as a [`Source`]; one per connection.
pub struct ImapSource {
    client: ImapClient,
    account: Account,
    selected: Option<String>,
}

impl ImapSource {
    /// Connects and logs in.
    pub fn connect(account: &Account, options: &ConnectOptions) -> Result<Self, Error> {
        Ok(ImapSource {
            client: session::open_imap(account, Side::From, options)?,
            account: account.clone(),
            selected: None,
        })
    }

    fn failed(&self, err: SessionError) -> Error {
        Error::from_session(&self.account.endpoint, Side::From, err)
    }

    /// EXAMINE (read-only) the folder unless it is already open.
    fn open(&mut self, folder: &str) -> Result<(), Error> {
        if self.selected.as_deref() != Some(folder) {
            self.selected = None;
            self.client
                .select(folder, true)
                .map_err(|e| self.failed(e))?;
            self.selected = Some(folder.to_owned());
        }
        Ok(())
    }
}

impl Source for ImapSource {
    fn status(&mut self, folder: &str) -> Result<Option<FolderStatus>, Error> {
        let status = self.client.status(folder).map_err(|e| self.failed(e))?;
        // Without HIGHESTMODSEQ a flag change leaves STATUS as it was: useless as a summary.
        Ok(status.highest_modseq.is_some().then_some(status))
    }

    fn folders(&mut self) -> Result<Vec<FolderInfo>, Error> {
        let listed = self.client.list().map_err(|e| self.failed(e))?;
        let mut folders: Vec<FolderInfo> = listed
            .into_iter()
            .map(|m| FolderInfo::from_list(m.name, m.delimiter, &m.attributes))
            .collect();
        if let Some(only) = &self.account.endpoint.folder {
            folders.retain(|f| &f.name == only);
        }
        Ok(folders)
    }

    fn index(&mut self, folder: &str) -> Result<Vec<SourceMessage>, Error> {
        // Re-select so a second index of the same folder sees new mail.
        self.selected = None;
        self.open(folder)?;
        let mut index = Vec::new();
        self.client
            .fetch_index(&IDENTITY_FIELDS, |record| {
                index.push(SourceMessage {
                    key: record.uid,
                    identity: identity::identify(record.header, record.size),
                    size: record.size,
                    // \Recent belongs to the session that saw the message first; no
                    // server lets a client set it.
                    flags: record
                        .flags
                        .into_iter()
                        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                        .collect(),
                    internal_date: record.internal_date,
                });
            })
            .map_err(|e| self.failed(e))?;
        Ok(index)
    }

    fn fetch(
        &mut self,
        folder: &str,
        messages: Vec<SourceMessage>,
        deliver: &mut dyn FnMut(Result<Outgoing, Unreadable>) -> bool,
    ) -> Result<(), Error> {
        self.open(folder)?;
        let Some(mut by_uid) = deliver_too_large(messages, deliver) else {
            return Ok(());
        };
        let mut uids: Vec<u32> = by_uid.keys().copied().collect();
        uids.sort_unstable();
        let mut receiving = true;
        self.client
            .fetch_messages(&uids, MAX_MESSAGE_SIZE, |fetched| {
                // After the receiver has gone, the rest of the answer is only drained.
                if receiving && let Some(message) = by_uid.remove(&fetched.uid) {
                    receiving = deliver(Ok(Outgoing {
                        message,
                        raw: fetched.raw.to_vec(),
                    }));
                }
            })
            .map_err(|e| self.failed(e))?;
        // What the server did not send was expunged since the index was taken.
        let mut gone: Vec<SourceMessage> = by_uid.into_values().collect();
        gone.sort_by_key(|m| m.key);
        for message in gone {
            let reason = "deleted from the source during the run".to_owned();
            if !receiving || !deliver(Err(Unreadable { message, reason })) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_crlf_beyond_the_listed_size_is_dropped() {
        let mut added = b"Subject: x\r\n\r\nno newline\r\n".to_vec();
        let listed = added.len() as u64 - 2;
        strip_added_line_end(&mut added, listed);
        assert_eq!(added, b"Subject: x\r\n\r\nno newline");
        let mut exact = b"Subject: x\r\n\r\nline\r\n".to_vec();
        let listed = exact.len() as u64;
        strip_added_line_end(&mut exact, listed);
        assert_eq!(exact, b"Subject: x\r\n\r\nline\r\n");
    }
}
