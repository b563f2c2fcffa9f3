//! Mail targets. [`ImapTarget`] writes to an IMAP server: folders created on demand, indexed
//! with one bulk `UID FETCH` of the identity header fields, messages uploaded with MULTIAPPEND
//! when offered (one server transaction per batch) and single APPENDs otherwise.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;

use crate::endpoint::Side;
use crate::error::{Error, SessionError};
use crate::folders::FolderList;
use crate::identity;
use crate::imap::{
    AppendMessage, FolderStatus, ImapClient, IndexItems, IndexRecord, MailboxStatus, MessageUid,
    SentAppend, StorageQuota, response,
};
use crate::index::{FlagSets, KeywordPolicy, TargetCopy, TargetIndex};
use crate::store::session;
use crate::store::{Account, ConnectOptions};
use crate::store::{
    FolderRefused, FoundCopy, FoundUids, Outcome, Outgoing, Started, Target, UidChange, UidCheck,
};
use crate::store::{IMAP_INDEX, IMAP_VERIFYING};

/// An IMAP account as a [`Target`]; one per connection.
pub struct ImapTarget {
    client: ImapClient,
    account: Account,
    /// Uploads sent and not yet answered, by the number [`Started::Pending`] carries.
    pending: HashMap<u64, SentAppend>,
    next_upload: u64,
}

impl ImapTarget {
    /// Connects and logs in.
    pub fn connect(account: &Account, options: &ConnectOptions) -> Result<Self, Error> {
        Ok(ImapTarget {
            client: session::open_imap(account, Side::To, options)?,
            account: account.clone(),
            pending: HashMap::new(),
            next_upload: 0,
        })
    }

    fn failed(&self, err: SessionError) -> Error {
        Error::from_session(&self.account.endpoint, Side::To, err)
    }

    /// Selects `folder` read-write, even when it is selected already, for what SELECT says:
    /// a change by UID checks there that the UIDVALIDITY its UIDs belong to still holds.
    fn select(&mut self, folder: &str) -> Result<MailboxStatus, Error> {
        self.client
            .select(folder, false)
            .map_err(|e| self.failed(e))
    }

    /// Uploads one message; `Ok(Err(reason))` when the server refused it.
    fn append_one(&mut self, folder: &str, outgoing: &Outgoing) -> Result<Outcome, Error> {
        match self
            .client
            .append(folder, &append_message(outgoing))
            .map_err(throttled)
        {
            Ok(uid) => Ok(Ok(uid)),
            Err(SessionError::Refused(reason)) => Ok(Err(reason)),
            Err(err) => Err(self.failed(err)),
        }
    }
}

impl Drop for ImapTarget {
    fn drop(&mut self) {
        self.client.say_goodbye();
    }
}

/// A refusal that asks to slow down is no verdict on the message: it becomes
/// [`SessionError::Throttled`], which the upload worker answers by backing off and resending
/// on a new connection (see `transfer::upload`).
fn throttled(err: SessionError) -> SessionError {
    match err {
        SessionError::Refused(reason) if response::asks_to_slow_down(&reason) => {
            SessionError::Throttled(reason)
        }
        other => other,
    }
}

/// The APPEND of one message, always with a date: the source's, else now. Without one the
/// server picks its own: most take now, GNU Mailutils mbox the `Date:` header or else 1970,
/// and it refuses a message without `From:` (`NO [TRYCREATE]`).
fn append_message(outgoing: &Outgoing) -> AppendMessage<'_> {
    AppendMessage {
        raw: &outgoing.raw,
        flags: &outgoing.message.flags,
        internal_date: Some(
            outgoing
                .message
                .internal_date
                .get()
                .unwrap_or_else(|| Utc::now().fixed_offset()),
        ),
    }
}

impl Target for ImapTarget {
    fn folders(&mut self) -> Result<FolderList, Error> {
        Ok(self
            .client
            .list()
            .map_err(|e| self.failed(e))?
            .into_folder_list())
    }

    fn index(&mut self, folder: &str) -> Result<TargetIndex, Error> {
        let mut indexes = self.index_all(std::slice::from_ref(&folder.to_owned()))?;
        Ok(indexes.pop().expect("one index per folder"))
    }

    fn index_all(&mut self, folders: &[String]) -> Result<Vec<TargetIndex>, Error> {
        self.index_folders(&[], folders, IMAP_VERIFYING)?
            .into_iter()
            .map(|index| index.map_err(|refused| self.failed(SessionError::Refused(refused.0))))
            .collect()
    }

    fn create_and_index(
        &mut self,
        create: &[String],
        folders: &[String],
    ) -> Result<Vec<Result<TargetIndex, FolderRefused>>, Error> {
        self.index_folders(create, folders, IMAP_INDEX)
    }

    fn find_uids(&mut self, folders: &[UidCheck]) -> Result<Vec<Option<FoundUids>>, Error> {
        // Sized up front: a list grown while the answers come holds its old room and the new
        // at once, and the answers to a large folder make verification's peak memory.
        let mut found: Vec<FoundUids> = folders
            .iter()
            .map(|check| FoundUids {
                uid_validity: None,
                copies: Vec::with_capacity(check.uids.len() + check.identify.len()),
            })
            .collect();
        let asked: Vec<(&str, &[u32], &[u32])> = folders
            .iter()
            .map(|check| (check.folder.as_str(), &check.uids[..], &check.identify[..]))
            .collect();
        let mut flag_sets = FlagSets::default();
        let opened = self
            .client
            .uid_records(&asked, IMAP_VERIFYING, |i, record| {
                let identified = folders[i].identify.binary_search(&record.uid).is_ok();
                found[i].copies.push(FoundCopy {
                    identity: identified.then(|| identity::identify(record.header).digest()),
                    copy: target_copy(record, &mut flag_sets),
                });
            })
            .map_err(|e| self.failed(e))?;
        Ok(found
            .into_iter()
            .zip(opened)
            .map(|(mut found, opened)| {
                let status = opened.ok()?;
                found.uid_validity = status.uid_validity;
                // Servers answer in UID order, but need not; of a UID named twice, the last
                // answer (the freshest flags) counts.
                found.copies.reverse();
                found.copies.sort_by_key(|found| found.copy.uid);
                found.copies.dedup_by_key(|found| found.copy.uid);
                Some(found)
            })
            .collect())
    }

    fn statuses(&mut self, folders: &[String]) -> Result<Vec<Option<FolderStatus>>, Error> {
        self.client
            .change_summaries(folders)
            .map_err(|e| self.failed(e))
    }

    fn change_flags(
        &mut self,
        folder: &str,
        uid_validity: u32,
        uids: &[u32],
        add: &[String],
        remove: &[String],
    ) -> Result<UidChange, Error> {
        if self.select(folder)?.uid_validity != Some(uid_validity) {
            return Ok(UidChange::UidValidityChanged);
        }
        for (sign, flags) in [('+', add), ('-', remove)] {
            if !flags.is_empty() {
                self.client
                    .change_flags(uids, sign, flags)
                    .map_err(|e| self.failed(e))?;
            }
        }
        Ok(UidChange::Applied)
    }

    fn delete(
        &mut self,
        folder: &str,
        uid_validity: u32,
        uids: &[u32],
    ) -> Result<UidChange, Error> {
        if self.select(folder)?.uid_validity != Some(uid_validity) {
            return Ok(UidChange::UidValidityChanged);
        }
        self.client
            .delete_messages(uids)
            .map_err(|e| self.failed(e))?;
        Ok(UidChange::Applied)
    }

    fn append_limit(&self) -> Option<u64> {
        self.client.append_limit()
    }

    fn login_took(&self) -> Option<Duration> {
        self.client.login_took()
    }

    fn storage_quota(&mut self) -> Result<Option<StorageQuota>, Error> {
        match self.client.storage_quota("INBOX") {
            Ok(quota) => Ok(quota),
            // A server that lists QUOTA yet refuses to say (no quota set up for this user)
            // leaves the room unknown; that is no reason to fail a preflight.
            Err(SessionError::Refused(_)) => Ok(None),
            Err(err) => Err(self.failed(err)),
        }
    }

    fn capabilities(&self) -> Vec<String> {
        self.client.capabilities().to_vec()
    }

    /// Only servers offering UIDPLUS are trusted with several writers per folder: GNU
    /// Mailutils (mbox), which has none, loses messages when two sessions APPEND into one
    /// mailbox at once. UIDPLUS marks the servers built for concurrent clients (Dovecot,
    /// Cyrus, Exchange, Gmail).
    fn concurrent_writers(&self) -> bool {
        self.client.has_capability("UIDPLUS")
    }

    fn append(&mut self, folder: &str, batch: &[Outgoing]) -> Result<Vec<Outcome>, Error> {
        if batch.len() > 1 && self.client.supports_multiappend() {
            let messages: Vec<_> = batch.iter().map(append_message).collect();
            let stored = self.client.multiappend(folder, &messages);
            return self.settle(stored, folder, batch);
        }
        batch.iter().map(|m| self.append_one(folder, m)).collect()
    }

    fn start_append(&mut self, folder: &str, batch: &[Outgoing]) -> Result<Started, Error> {
        let whole = batch.len() == 1 || self.client.supports_multiappend();
        if !(whole && self.client.can_pipeline_appends()) {
            return Ok(Started::Done(self.append(folder, batch)?));
        }
        let messages: Vec<_> = batch.iter().map(append_message).collect();
        let sent = self
            .client
            .append_send(folder, &messages)
            .map_err(|e| self.failed(e))?;
        self.next_upload += 1;
        self.pending.insert(self.next_upload, sent);
        Ok(Started::Pending(self.next_upload))
    }

    fn finish_append(
        &mut self,
        started: Started,
        folder: &str,
        batch: &[Outgoing],
    ) -> Result<Vec<Outcome>, Error> {
        let number = match started {
            Started::Done(outcome) => return Ok(outcome),
            Started::Pending(number) => number,
        };
        let sent = self
            .pending
            .remove(&number)
            .expect("finished once, on the connection that started it");
        let stored = self.client.append_wait(sent);
        self.settle(stored, folder, batch)
    }
}

impl ImapTarget {
    /// [`Target::create_and_index`], asking `items` of each message.
    fn index_folders(
        &mut self,
        create: &[String],
        folders: &[String],
        items: IndexItems<'_>,
    ) -> Result<Vec<Result<TargetIndex, FolderRefused>>, Error> {
        // SELECT, not EXAMINE: only a read-write session learns which keywords the folder
        // stores (PERMANENTFLAGS). The client deselects afterwards: nothing stays selected.
        let mut indexes = vec![Ok(TargetIndex::default()); folders.len()];
        let mut flag_sets = FlagSets::default();
        let opened = self
            .client
            .create_and_index_mailboxes(create, folders, items, |i, record| {
                // Records come only for folders that opened, whose entry is still `Ok`.
                let Ok(index) = &mut indexes[i] else { return };
                index.add(
                    identity::identify(record.header),
                    target_copy(record, &mut flag_sets),
                );
            })
            .map_err(|e| self.failed(e))?;
        // Listed once, and only when some folder could not be opened.
        let mut listed: Option<FolderList> = None;
        for ((folder, entry), opened) in folders.iter().zip(&mut indexes).zip(opened) {
            match (opened, entry) {
                (Ok(status), Ok(index)) => {
                    index.keywords = KeywordPolicy::from_permanent_flags(&status.permanent_flags);
                    index.uid_validity = status.uid_validity;
                }
                (Ok(_), Err(_)) => unreachable!("only a refusal makes an entry an error"),
                // A folder that does not exist yet (a dry run creates nothing) holds nothing,
                // whatever a server that kept the previous folder selected answered. One
                // that exists, or was to be created, and cannot be opened fails alone.
                (Err(SessionError::Refused(reason)), entry) => {
                    let listed = match listed {
                        Some(ref listed) => listed,
                        None => listed.insert(self.folders()?),
                    };
                    let exists = folder.eq_ignore_ascii_case("INBOX")
                        || create.contains(folder)
                        || listed.folders.iter().any(|f| &f.name == folder);
                    *entry = if exists {
                        Err(FolderRefused(reason))
                    } else {
                        Ok(TargetIndex::default())
                    };
                }
                (Err(err), _) => return Err(self.failed(err)),
            }
        }
        Ok(indexes)
    }

    /// The outcome of an APPEND of the whole batch: every message stored, or, when the server
    /// refused it, each message tried alone. A MULTIAPPEND is all-or-nothing (RFC 3502): on a
    /// refusal nothing was stored, so the retry one by one is safe and tells which message
    /// the server refuses.
    fn settle(
        &mut self,
        stored: Result<Vec<MessageUid>, SessionError>,
        folder: &str,
        batch: &[Outgoing],
    ) -> Result<Vec<Outcome>, Error> {
        match stored.map_err(throttled) {
            // Without UIDPLUS (or with a UID set that does not match) the server said nothing
            // of where it stored them.
            Ok(uids) if uids.len() == batch.len() => {
                Ok(uids.into_iter().map(|u| Ok(Some(u))).collect())
            }
            Ok(_) => Ok(vec![Ok(None); batch.len()]),
            Err(SessionError::Refused(reason)) if batch.len() == 1 => Ok(vec![Err(reason)]),
            Err(SessionError::Refused(_)) => {
                batch.iter().map(|m| self.append_one(folder, m)).collect()
            }
            Err(err) => Err(self.failed(err)),
        }
    }
}

/// A message of an index FETCH, its flags shared through `flag_sets`.
fn target_copy(record: IndexRecord<'_>, flag_sets: &mut FlagSets) -> TargetCopy {
    TargetCopy {
        uid: record.uid,
        size: record.size,
        flags: flag_sets.intern(record.flags),
        internal_date: record.internal_date,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slow_down_refusals_become_throttles() {
        assert!(matches!(
            throttled(SessionError::Refused("[THROTTLED] easy".into())),
            SessionError::Throttled(_)
        ));
        assert!(matches!(
            throttled(SessionError::Refused("[LIMIT] too large".into())),
            SessionError::Refused(_)
        ));
        assert!(matches!(
            throttled(SessionError::Closed),
            SessionError::Closed
        ));
    }
}
