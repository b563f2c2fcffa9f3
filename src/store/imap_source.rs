//! [`ImapSource`]: every folder of an IMAP account, read with EXAMINE and `BODY.PEEK`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{MAX_MESSAGE_SIZE, deliver_too_large};
use crate::endpoint::Side;
use crate::error::{Error, SessionError};
use crate::folders::FolderList;
use crate::identity::{self, Identity};
use crate::imap::{FolderStatus, ImapClient, MailboxStatus};
use crate::index::{
    ArrivalDate, FlagSets, IndexedFolder, KnownMessages, SourceMessage, SourceView,
};
use crate::store::IMAP_INDEX;
use crate::store::session;
use crate::store::{Account, ConnectOptions};
use crate::store::{Fetched, Source, Unreadable};

/// An IMAP account as a [`Source`]; one per connection.
pub struct ImapSource {
    client: ImapClient,
    account: Account,
    /// The fetch after the next one ([`Source::fetch_next`]): a folder and its UIDs.
    next: Option<(String, Vec<u32>)>,
}

impl ImapSource {
    /// Connects and logs in.
    pub fn connect(account: &Account, options: &ConnectOptions) -> Result<Self, Error> {
        Ok(ImapSource {
            client: session::open_imap(account, Side::From, options)?,
            account: account.clone(),
            next: None,
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
            .index_mailboxes(folders, true, IMAP_INDEX, |i, record| {
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
                    internal_date: ArrivalDate::default(),
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
    fn fetch_next(&mut self, folder: &str, messages: &[Arc<SourceMessage>]) {
        let readable = messages.iter().filter(|m| m.size <= MAX_MESSAGE_SIZE);
        self.next = Some((folder.to_owned(), sorted_uids(readable.map(|m| m.key))));
    }

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
        let Some(by_uid) = deliver_too_large(messages, deliver) else {
            return Ok(());
        };
        let mut sent: HashSet<u32> = by_uid.keys().copied().collect();
        let next = self.next.take();
        let then = next
            .as_ref()
            .map(|(folder, uids)| (folder.as_str(), uids.as_slice()));
        let first = self.fetch_by_uid(Some(folder), by_uid, then, deliver)?;
        if first.messages.is_empty() || !first.receiving {
            return Ok(());
        }
        sent.retain(|uid| !first.messages.contains_key(uid));
        // Not sent, or the FETCH refused (GNU Mailutils maildir gives the last message of a
        // folder a new UID at every EXAMINE, and answers BAD to the old one): the folder as it
        // is now finds them again by identity and size.
        let FoundAgain { found, mut gone } = self.find_again(folder, first.messages, &sent)?;
        if !found.is_empty() {
            let again = self.fetch_by_uid(None, found, None, deliver)?;
            if !again.receiving {
                return Ok(());
            }
            let reason = match again.refusal {
                Some(words) => format!("the server refused to send it: {words}"),
                None => DELETED.to_owned(),
            };
            gone.extend(again.messages.into_values().map(|message| Unreadable {
                message,
                reason: reason.clone(),
            }));
        }
        gone.sort_by_key(|unreadable| unreadable.message.key);
        for unreadable in gone {
            if !deliver(Err(unreadable)) {
                break;
            }
        }
        Ok(())
    }
}

/// UIDs in the order a fetch asks for them, each once.
fn sorted_uids(uids: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut uids: Vec<u32> = uids.collect();
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// Why a message the index saw is not copied when the server no longer has it.
const DELETED: &str = "deleted from the source during the run";

/// What a `UID FETCH` left unsent: the messages (by the UID asked for), the server's words
/// if it refused the command, and whether the receiver still wants more.
struct Unsent {
    messages: HashMap<u32, Arc<SourceMessage>>,
    refusal: Option<String>,
    receiving: bool,
}

/// Messages found again in a fresh index of their folder: by their UID now, and those that
/// cannot be read, with why.
struct FoundAgain {
    found: HashMap<u32, Arc<SourceMessage>>,
    gone: Vec<Unreadable>,
}

impl ImapSource {
    /// Fetches `by_uid` (after EXAMINE of `examine`, else in the folder already open) and
    /// hands each message sent to `deliver`. A refused FETCH fails its messages, not the
    /// connection: they stay unsent, with the server's words.
    fn fetch_by_uid(
        &mut self,
        examine: Option<&str>,
        mut by_uid: HashMap<u32, Arc<SourceMessage>>,
        then: Option<(&str, &[u32])>,
        deliver: &mut dyn FnMut(Result<Fetched<'_>, Unreadable>) -> bool,
    ) -> Result<Unsent, Error> {
        let uids = sorted_uids(by_uid.keys().copied());
        let mut receiving = true;
        let fetched =
            self.client
                .fetch_messages(examine, &uids, MAX_MESSAGE_SIZE, then, |fetched| {
                    // After the receiver has gone, the rest of the answer is only drained.
                    if receiving && let Some(message) = by_uid.remove(&fetched.uid) {
                        if let Some(date) = fetched.internal_date {
                            message.internal_date.learn(date);
                        }
                        receiving = deliver(Ok(Fetched {
                            message,
                            raw: fetched.raw,
                        }));
                    }
                });
        let refusal = match fetched {
            Ok(()) => None,
            Err(SessionError::Refused(words)) => Some(words),
            Err(err) => return Err(self.failed(err)),
        };
        Ok(Unsent {
            messages: by_uid,
            refusal,
            receiving,
        })
    }

    /// Indexes `folder` again, leaving it open, and finds each of `unsent` there by identity
    /// and size under a UID whose message was not `sent` already (a message with its
    /// look-alikes: any of them has the same bytes to copy). A refused FETCH sent nothing, so
    /// its messages may be found under their own UIDs. The messages keep their first key,
    /// which the run knows them by.
    fn find_again(
        &mut self,
        folder: &str,
        unsent: HashMap<u32, Arc<SourceMessage>>,
        sent: &HashSet<u32>,
    ) -> Result<FoundAgain, Error> {
        let mut now: HashMap<(Identity, u64), Vec<u32>> = HashMap::new();
        let opened = self
            .client
            .index_mailboxes(&[folder.to_owned()], true, IMAP_INDEX, |_, record| {
                if !sent.contains(&record.uid) {
                    now.entry((identity::identify(record.header), record.size))
                        .or_default()
                        .push(record.uid);
                }
            })
            .map_err(|e| self.failed(e))?;
        let mut unsent: Vec<Arc<SourceMessage>> = unsent.into_values().collect();
        unsent.sort_by_key(|m| m.key);
        let mut found_again = FoundAgain {
            found: HashMap::new(),
            gone: Vec::new(),
        };
        let status = opened.into_iter().next().expect("one status per folder");
        if let Err(err) = status {
            let SessionError::Refused(words) = err else {
                return Err(self.failed(err));
            };
            let reason = format!("the server would not open the folder again: {words}");
            found_again.gone = unsent
                .into_iter()
                .map(|message| Unreadable {
                    message,
                    reason: reason.clone(),
                })
                .collect();
            return Ok(found_again);
        }
        for message in unsent {
            let uids = now.get_mut(&(message.identity.clone(), message.size));
            match uids.and_then(|uids| uids.pop()) {
                Some(uid) => {
                    found_again.found.insert(uid, message);
                }
                None => found_again.gone.push(Unreadable {
                    message,
                    reason: DELETED.to_owned(),
                }),
            }
        }
        Ok(found_again)
    }
}
