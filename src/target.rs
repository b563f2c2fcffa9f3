//! Mail targets. [`ImapTarget`] writes to an IMAP server: folders created on demand, indexed
//! with one bulk `UID FETCH` of the identity header fields, messages uploaded with MULTIAPPEND
//! when offered (one server transaction per batch) and single APPENDs otherwise.

use crate::endpoint::Side;
use crate::error::{Error, SessionError};
use crate::folders::FolderInfo;
use crate::identity::{self, IDENTITY_FIELDS};
use crate::imap::{AppendMessage, FolderStatus, ImapClient, response};
use crate::index::{KeywordPolicy, TargetCopy, TargetIndex};
use crate::migrate::{Account, ConnectOptions};
use crate::session;
use crate::transfer::{Outgoing, Target};

/// An IMAP account as a [`Target`]; one per connection.
pub struct ImapTarget {
    client: ImapClient,
    account: Account,
    /// The folder selected read-write, if any (flag changes and deletions need one).
    selected: Option<String>,
}

impl ImapTarget {
    /// Connects and logs in.
    pub fn connect(account: &Account, options: &ConnectOptions) -> Result<Self, Error> {
        Ok(ImapTarget {
            client: session::open_imap(account, Side::To, options)?,
            account: account.clone(),
            selected: None,
        })
    }

    fn failed(&self, err: SessionError) -> Error {
        Error::from_session(&self.account.endpoint, Side::To, err)
    }

    fn select(&mut self, folder: &str) -> Result<(), Error> {
        if self.selected.as_deref() != Some(folder) {
            self.selected = None;
            self.client
                .select(folder, false)
                .map_err(|e| self.failed(e))?;
            self.selected = Some(folder.to_owned());
        }
        Ok(())
    }

    fn exists(&mut self, folder: &str) -> Result<bool, Error> {
        if folder.eq_ignore_ascii_case("INBOX") {
            return Ok(true);
        }
        Ok(self.folders()?.iter().any(|f| f.name == folder))
    }

    /// Uploads one message; `Ok(Err(reason))` when the server refused it.
    fn append_one(
        &mut self,
        folder: &str,
        outgoing: &Outgoing,
    ) -> Result<Result<(), String>, Error> {
        match self
            .client
            .append(folder, &append_message(outgoing))
            .map_err(throttled)
        {
            Ok(_) => Ok(Ok(())),
            Err(SessionError::Refused(reason)) => Ok(Err(reason)),
            Err(err) => Err(self.failed(err)),
        }
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

fn append_message(outgoing: &Outgoing) -> AppendMessage<'_> {
    AppendMessage {
        raw: &outgoing.raw,
        flags: &outgoing.message.flags,
        internal_date: outgoing.message.internal_date,
    }
}

impl Target for ImapTarget {
    fn folders(&mut self) -> Result<Vec<FolderInfo>, Error> {
        let listed = self.client.list().map_err(|e| self.failed(e))?;
        Ok(listed
            .into_iter()
            .map(|m| FolderInfo::from_list(m.name, m.delimiter, &m.attributes))
            .collect())
    }

    fn ensure_folder(&mut self, folder: &str) -> Result<(), Error> {
        if self.exists(folder)? {
            return Ok(());
        }
        self.client.create(folder).map_err(|e| self.failed(e))?;
        self.client.subscribe(folder).map_err(|e| self.failed(e))
    }

    fn index(&mut self, folder: &str) -> Result<TargetIndex, Error> {
        // SELECT, not EXAMINE: only a read-write session learns which keywords the folder
        // stores (PERMANENTFLAGS).
        self.selected = None;
        let keywords = match self.client.select(folder, false) {
            Ok(status) => KeywordPolicy::from_permanent_flags(&status.permanent_flags),
            // A folder that does not exist yet (a dry run creates nothing) holds nothing.
            Err(SessionError::Refused(_)) if !self.exists(folder)? => {
                return Ok(TargetIndex::default());
            }
            Err(err) => return Err(self.failed(err)),
        };
        self.selected = Some(folder.to_owned());
        let mut index = TargetIndex::default();
        index.keywords = keywords;
        self.client
            .fetch_index(&IDENTITY_FIELDS, |record| {
                index.add(
                    identity::identify(record.header, record.size),
                    TargetCopy {
                        uid: record.uid,
                        flags: record.flags,
                    },
                );
            })
            .map_err(|e| self.failed(e))?;
        Ok(index)
    }

    fn status(&mut self, folder: &str) -> Result<Option<FolderStatus>, Error> {
        self.client
            .change_summary(folder)
            .map_err(|e| self.failed(e))
    }

    fn change_flags(
        &mut self,
        folder: &str,
        uids: &[u32],
        add: &[String],
        remove: &[String],
    ) -> Result<(), Error> {
        self.select(folder)?;
        for (sign, flags) in [('+', add), ('-', remove)] {
            if !flags.is_empty() {
                self.client
                    .change_flags(uids, sign, flags)
                    .map_err(|e| self.failed(e))?;
            }
        }
        Ok(())
    }

    fn delete(&mut self, folder: &str, uids: &[u32]) -> Result<(), Error> {
        self.select(folder)?;
        self.client
            .delete_messages(uids)
            .map_err(|e| self.failed(e))
    }

    fn append_limit(&self) -> Option<u64> {
        self.client.append_limit()
    }

    fn append(
        &mut self,
        folder: &str,
        batch: &[Outgoing],
    ) -> Result<Vec<Result<(), String>>, Error> {
        if batch.len() > 1 && self.client.supports_multiappend() {
            let messages: Vec<_> = batch.iter().map(append_message).collect();
            match self
                .client
                .multiappend(folder, &messages)
                .map_err(throttled)
            {
                Ok(_) => return Ok(vec![Ok(()); batch.len()]),
                // MULTIAPPEND is all-or-nothing (RFC 3502): nothing was stored, so retrying
                // one by one is safe and tells which message the server refuses.
                Err(SessionError::Refused(_)) => {}
                Err(err) => return Err(self.failed(err)),
            }
        }
        batch.iter().map(|m| self.append_one(folder, m)).collect()
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
