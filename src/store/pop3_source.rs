//! [`Pop3Source`]: a POP3 maildrop, the one folder `INBOX`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{MAX_MESSAGE_SIZE, deliver_too_large};
use crate::endpoint::Side;
use crate::error::{Error, SessionError};
use crate::folders::{FolderInfo, FolderList};
use crate::identity;
use crate::index::{Flags, IndexedFolder, KnownMessage, KnownMessages, SourceMessage, SourceView};
use crate::pop3::{FetchError, Listing, Pop3Client};
use crate::store::session;
use crate::store::{Account, ConnectOptions};
use crate::store::{DeletionEvidence, Fetched, Relocated, Source, SourceDeletion, Unreadable};

/// The one folder a POP3 maildrop has.
pub const POP3_FOLDER: &str = "INBOX";

/// A POP3 maildrop as a [`Source`].
pub struct Pop3Source {
    /// `None` once the session has ended to commit deletions.
    client: Option<Pop3Client>,
    account: Account,
    /// What every message's copy gets, one list shared by all.
    flags: Flags,
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
            client: Some(session::open_pop3(account, Side::From, options)?),
            account: account.clone(),
            flags: if mark_seen {
                Flags::from(["\\Seen".to_owned()])
            } else {
                Flags::default()
            },
        })
    }

    /// The session, and a function putting its errors in the user's terms.
    fn session(&mut self) -> Result<(&mut Pop3Client, impl Fn(SessionError) -> Error + '_), Error> {
        let endpoint = &self.account.endpoint;
        let failed = move |err| Error::from_session(endpoint, Side::From, err);
        match &mut self.client {
            Some(client) => Ok((client, failed)),
            None => Err(failed(SessionError::Closed)),
        }
    }

    /// Indexes the maildrop, reading the headers only of messages whose UIDL `known` does
    /// not hold. With `still_known`, records there what is known after it, for the next run.
    /// The flag says whether every listed message had a UIDL.
    fn index_maildrop(
        &mut self,
        known: &KnownMessages,
        mut still_known: Option<&mut KnownMessages>,
    ) -> Result<(Vec<SourceMessage>, bool), Error> {
        let flags = self.flags.clone();
        let (client, failed) = self.session()?;
        let Listing { sizes, uidls } = client.listing().map_err(&failed)?;
        let complete = uidls.as_ref().is_some_and(|u| u.len() == sizes.len());
        // Without UIDL (an old server) nothing is known across sessions: every header is read.
        let mut uidls: HashMap<u32, String> = uidls.unwrap_or_default().into_iter().collect();
        let now = unix_now();
        let mut index = Vec::with_capacity(sizes.len());
        let mut unknown = HashMap::new();
        for &(msgno, size) in &sizes {
            // Moved, not copied, into the index: a copy per message, freed after the index,
            // would leave the heap full of holes for the rest of the run.
            let uidl = uidls.remove(&msgno);
            let remembered = uidl
                .as_ref()
                .and_then(|u| known.get(u))
                .filter(|k| k.size == size);
            match remembered.and_then(|k| k.to_source_message(msgno, uidl.clone(), flags.clone())) {
                Some(message) => {
                    index.push(message);
                    if let Some(still_known) = still_known.as_deref_mut() {
                        still_known.insert(uidl.unwrap_or_default(), remembered.unwrap().clone());
                    }
                }
                None => {
                    // Its headers are read again, but its age counts from when it was first seen.
                    let first_seen = remembered.map_or(now, |k| k.first_seen);
                    unknown.insert(msgno, (size, uidl, first_seen));
                }
            }
        }
        let mut to_read: Vec<u32> = unknown.keys().copied().collect();
        to_read.sort_unstable();
        let refused = client
            .top_headers(&to_read, |msgno, header| {
                let (size, uidl, first_seen) =
                    unknown.remove(&msgno).expect("TOP answers what was asked");
                let message = SourceMessage {
                    key: msgno,
                    stable_id: uidl,
                    identity: identity::identify(&header),
                    identity_remembered: false,
                    size,
                    added: 0,
                    flags: flags.clone(),
                    internal_date: identity::arrival_date(&header).into(),
                };
                if let (Some(still_known), Some(uidl)) =
                    (still_known.as_deref_mut(), &message.stable_id)
                {
                    still_known.insert(uidl.clone(), KnownMessage::new(&message, first_seen));
                }
                index.push(message);
                Ok::<(), Stop>(())
            })
            .map_err(|e| match e {
                FetchError::Session(err) => failed(err),
                FetchError::Stopped(Stop) => unreachable!("the index callback never stops"),
            })?;
        if let Some((msgno, reason)) = refused.first() {
            return Err(failed(SessionError::Refused(format!(
                "TOP {msgno} 0 refused ({reason}); the server may not support TOP"
            ))));
        }
        index.sort_by_key(|m| m.key);
        Ok((index, complete))
    }
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

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Drop for Pop3Source {
    fn drop(&mut self) {
        if let Some(client) = &mut self.client {
            client.say_goodbye();
        }
    }
}

impl Source for Pop3Source {
    fn folders(&mut self) -> Result<FolderList, Error> {
        Ok(FolderList {
            folders: vec![FolderInfo::from_list(POP3_FOLDER.to_owned(), None, &[])],
            personal: Default::default(),
        })
    }

    fn index(&mut self, _folder: &str) -> Result<Vec<SourceMessage>, Error> {
        Ok(self.index_maildrop(&KnownMessages::new(), None)?.0)
    }

    fn index_known(
        &mut self,
        folders: &[String],
        known: &[&KnownMessages],
    ) -> Result<Vec<IndexedFolder>, Error> {
        // One maildrop, however often it is asked for.
        folders
            .iter()
            .zip(known)
            .map(|(_, known)| {
                let mut still_known = KnownMessages::new();
                let (messages, complete) = self.index_maildrop(known, Some(&mut still_known))?;
                Ok(IndexedFolder {
                    messages,
                    known: still_known,
                    view: SourceView {
                        uid_validity: None,
                        complete,
                    },
                })
            })
            .collect()
    }

    fn fetch(
        &mut self,
        _folder: &str,
        messages: Vec<Arc<SourceMessage>>,
        deliver: &mut dyn FnMut(Result<Fetched<'_>, Unreadable>) -> bool,
    ) -> Result<(), Error> {
        let Some(mut planned) = deliver_too_large(messages, deliver) else {
            return Ok(());
        };
        let mut msgnos: Vec<u32> = planned.keys().copied().collect();
        msgnos.sort_unstable();
        let (client, failed) = self.session()?;
        // The cap leaves room for the line end a server adds (see strip_added_line_end).
        let result = client.retr(&msgnos, MAX_MESSAGE_SIZE + 2, |msgno, mut raw| {
            let message = planned
                .remove(&msgno)
                .expect("RETR answers only what was asked");
            strip_added_line_end(&mut raw, message.size);
            if deliver(Ok(Fetched {
                message,
                raw: raw.into(),
            })) {
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
            Err(FetchError::Session(err)) => Err(failed(err)),
        }
    }

    fn abandon(&mut self) {
        // QUIT commits no deletion, as fetching marks none (see `Pop3Client::say_goodbye`).
        if let Some(mut client) = self.client.take() {
            client.say_goodbye();
        }
    }

    /// Message numbers are valid in one session only: each message is found again by its
    /// UIDL, with the size this session lists (GNU Mailutils rewrites the `Status:` field it
    /// adds after every session, so a size may change by a few bytes under one UIDL; reads
    /// are checked against the new one). Without UIDLs nothing can be found safely.
    fn relocate(
        &mut self,
        _folder: &str,
        messages: Vec<Arc<SourceMessage>>,
    ) -> Result<Option<Relocated>, Error> {
        if messages.iter().any(|m| m.stable_id.is_none()) {
            return Ok(None);
        }
        let (client, failed) = self.session()?;
        let Listing { sizes, uidls } = client.listing().map_err(&failed)?;
        let Some(uidls) = uidls else {
            return Ok(None);
        };
        let by_uidl: HashMap<String, u32> = uidls
            .into_iter()
            .map(|(msgno, uidl)| (uidl, msgno))
            .collect();
        let sizes: HashMap<u32, u64> = sizes.into_iter().collect();
        let mut relocated = Relocated::default();
        for mut message in messages {
            let uidl = message.stable_id.as_deref().unwrap_or_default();
            match by_uidl
                .get(uidl)
                .and_then(|msgno| Some((msgno, sizes.get(msgno)?)))
            {
                Some((&msgno, &size)) => {
                    let found = Arc::make_mut(&mut message);
                    found.key = msgno;
                    found.size = size;
                    relocated.found.push(message);
                }
                _ => relocated.gone.push(Unreadable {
                    message,
                    reason: "deleted from the source during the run".to_owned(),
                }),
            }
        }
        Ok(Some(relocated))
    }

    fn delete(
        &mut self,
        _folder: &str,
        evidence: &[DeletionEvidence],
    ) -> Result<SourceDeletion, Error> {
        let outcome = self.mark_deleted(evidence)?;
        if !outcome.deleted.is_empty() {
            // Only QUIT makes a POP3 server remove what DELE marked.
            let client = self.client.take().expect("the session was open");
            client
                .quit()
                .map_err(|e| Error::from_session(&self.account.endpoint, Side::From, e))?;
        }
        Ok(outcome)
    }
}

impl Pop3Source {
    /// Marks with DELE the messages that still match their evidence, on this session:
    /// message numbers from another session name other messages, so each is found again by
    /// its UIDL, must have the size it was copied with, and has its header read again here,
    /// so a UIDL the server gave to another message is not trusted.
    fn mark_deleted(&mut self, evidence: &[DeletionEvidence]) -> Result<SourceDeletion, Error> {
        let mut outcome = SourceDeletion::default();
        let (client, failed) = self.session()?;
        let Listing { sizes, uidls } = client.listing().map_err(&failed)?;
        let Some(uidls) = uidls else {
            outcome
                .kept
                .push("the server no longer lists UIDLs: nothing deleted".to_owned());
            return Ok(outcome);
        };
        let sizes: HashMap<u32, u64> = sizes.into_iter().collect();
        let by_uidl: HashMap<&str, u32> = uidls.iter().map(|(n, u)| (u.as_str(), *n)).collect();
        let mut candidates: HashMap<u32, &DeletionEvidence> = HashMap::new();
        for wanted in evidence {
            // A message gone already needs nothing.
            let Some(&msgno) = by_uidl.get(wanted.uidl.as_str()) else {
                continue;
            };
            match sizes.get(&msgno) {
                Some(&size) if size == wanted.size => {
                    candidates.insert(msgno, wanted);
                }
                size => outcome.kept.push(format!(
                    "UIDL {}: {} bytes now, {} when copied",
                    wanted.uidl,
                    size.map_or("no".to_owned(), |s| s.to_string()),
                    wanted.size
                )),
            }
        }
        let mut to_read: Vec<u32> = candidates.keys().copied().collect();
        to_read.sort_unstable();
        let mut confirmed = Vec::with_capacity(to_read.len());
        let refused = client
            .top_headers(&to_read, |msgno, header| {
                let wanted = candidates[&msgno];
                if identity::identify(&header) == wanted.identity {
                    confirmed.push(msgno);
                } else {
                    outcome.kept.push(format!(
                        "UIDL {}: its header is not the one copied",
                        wanted.uidl
                    ));
                }
                Ok::<(), Stop>(())
            })
            .map_err(|e| match e {
                FetchError::Session(err) => failed(err),
                FetchError::Stopped(Stop) => unreachable!("the check never stops"),
            })?;
        for (msgno, reason) in refused {
            let uidl = &candidates[&msgno].uidl;
            outcome
                .kept
                .push(format!("UIDL {uidl}: TOP refused ({reason})"));
        }
        if confirmed.is_empty() {
            return Ok(outcome);
        }
        confirmed.sort_unstable();
        let refused = client.dele(&confirmed).map_err(&failed)?;
        for (msgno, reason) in &refused {
            let uidl = &candidates[msgno].uidl;
            outcome
                .kept
                .push(format!("UIDL {uidl}: DELE refused ({reason})"));
        }
        outcome.deleted = confirmed
            .iter()
            .filter(|msgno| !refused.iter().any(|(n, _)| n == *msgno))
            .map(|msgno| candidates[msgno].uidl.clone())
            .collect();
        Ok(outcome)
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
