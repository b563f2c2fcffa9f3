//! [`ImapSource`]: every folder of an IMAP account, read with EXAMINE and `BODY.PEEK`.

use std::sync::Arc;

use super::{MAX_MESSAGE_SIZE, deliver_too_large};
use crate::endpoint::Side;
use crate::error::{Error, SessionError};
use crate::folders::FolderList;
use crate::identity::{self, IDENTITY_FIELDS};
use crate::imap::{FolderStatus, ImapClient, MailboxStatus};
use crate::index::{FlagSets, IndexedFolder, KnownMessages, SourceMessage, SourceView};
use crate::migrate::{Account, ConnectOptions};
use crate::session;
use crate::transfer::{Fetched, Source, Unreadable};

/// An IMAP account as a [`Source`]; one per connection.
pub struct ImapSource {
    client: ImapClient,
    account: Account,
}

impl ImapSource {
    /// Connects and logs in.
    pub fn connect(account: &Account, options: &ConnectOptions) -> Result<Self, Error> {
        Ok(ImapSource {
            client: session::open_imap(account, Side::From, options)?,
            account: account.clone(),
        })
    }

    fn failed(&self, err: SessionError) -> Error {
        Error::from_session(&self.account.endpoint, Side::From, err)
    }

    /// Indexes folders with what EXAMINE said of each.
    fn index_with_status(
        &mut self,
        folders: &[String],
    ) -> Result<Vec<(Vec<SourceMessage>, MailboxStatus)>, Error> {
        let mut indexes = vec![Vec::new(); folders.len()];
        let mut flag_sets = FlagSets::default();
        let opened = self
            .client
            .index_mailboxes(folders, true, &IDENTITY_FIELDS, |i, record| {
                indexes[i].push(SourceMessage {
                    key: record.uid,
                    stable_id: None,
                    identity: identity::identify(record.header),
                    identity_remembered: false,
                    size: record.size,
                    added: 0,
                    // \Recent belongs to the session that saw the message first; no
                    // server lets a client set it.
                    flags: flag_sets.intern(
                        record
                            .flags
                            .into_iter()
                            .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                            .collect(),
                    ),
                    internal_date: record.internal_date,
                });
            })
            .map_err(|e| self.failed(e))?;
        opened
            .into_iter()
            .zip(indexes)
            .map(|(opened, messages)| Ok((messages, opened.map_err(|e| self.failed(e))?)))
            .collect()
    }
}

impl Drop for ImapSource {
    fn drop(&mut self) {
        self.client.say_goodbye();
    }
}

impl Source for ImapSource {
    fn statuses(&mut self, folders: &[String]) -> Result<Vec<Option<FolderStatus>>, Error> {
        self.client
            .change_summaries(folders)
            .map_err(|e| self.failed(e))
    }

    fn folders(&mut self) -> Result<FolderList, Error> {
        let mut listing = self
            .client
            .list()
            .map_err(|e| self.failed(e))?
            .into_folder_list();
        if let Some(only) = &self.account.endpoint.folder {
            listing.folders.retain(|f| &f.name == only);
        }
        Ok(listing)
    }

    fn index(&mut self, folder: &str) -> Result<Vec<SourceMessage>, Error> {
        let mut indexes = self.index_all(std::slice::from_ref(&folder.to_owned()))?;
        Ok(indexes.pop().expect("one index per folder"))
    }

    fn index_all(&mut self, folders: &[String]) -> Result<Vec<Vec<SourceMessage>>, Error> {
        Ok(self
            .index_with_status(folders)?
            .into_iter()
            .map(|(messages, _)| messages)
            .collect())
    }

    fn index_known(
        &mut self,
        folders: &[String],
        _known: &[&KnownMessages],
    ) -> Result<Vec<IndexedFolder>, Error> {
        Ok(self
            .index_with_status(folders)?
            .into_iter()
            .map(|(messages, status)| IndexedFolder {
                view: SourceView {
                    uid_validity: status.uid_validity,
                    // A FETCH that answered for fewer messages than EXAMINE counted is no
                    // evidence that the others are gone.
                    complete: messages.len() >= status.exists as usize,
                },
                messages,
                known: KnownMessages::new(),
            })
            .collect())
    }

    fn fetch(
        &mut self,
        folder: &str,
        messages: Vec<Arc<SourceMessage>>,
        deliver: &mut dyn FnMut(Result<Fetched<'_>, Unreadable>) -> bool,
    ) -> Result<(), Error> {
        let Some(mut by_uid) = deliver_too_large(messages, deliver) else {
            return Ok(());
        };
        let mut uids: Vec<u32> = by_uid.keys().copied().collect();
        uids.sort_unstable();
        let mut receiving = true;
        self.client
            .fetch_messages(Some(folder), &uids, MAX_MESSAGE_SIZE, |fetched| {
                // After the receiver has gone, the rest of the answer is only drained.
                if receiving && let Some(message) = by_uid.remove(&fetched.uid) {
                    receiving = deliver(Ok(Fetched {
                        message,
                        raw: fetched.raw,
                    }));
                }
            })
            .map_err(|e| self.failed(e))?;
        // What the server did not send, or sent as NIL, was expunged since the index was taken.
        let mut gone: Vec<Arc<SourceMessage>> = by_uid.into_values().collect();
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
