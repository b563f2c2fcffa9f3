//! The store layer: where mail is read from and written to, below the transfer engine. The
//! [`Source`] and [`Target`] traits and the types they speak in know no protocol and nothing
//! of plans; each store implements them beside the others, and none imports the engine, the
//! jobs or the command line (the mbsync driver model):
//!
//! - [`Pop3Source`]: a POP3 maildrop, indexed with pipelined `TOP n 0` (only for UIDLs not seen
//!   before, when the caller remembers them), fetched with pipelined `RETR`;
//! - [`ImapSource`]: every folder of an IMAP account, read with EXAMINE and `BODY.PEEK`, so not
//!   even `\Seen` changes; [`ImapTarget`]: an IMAP account written with (MULTI)APPEND;
//! - [`maildir`] and [`mbox`]: stores on local disk, both ways.
//!
//! A capability a store may lack (flag changes, deletion, STATUS shortcuts, pipelined
//! uploads) has a default that says so, never a stub that panics.

mod gmail_labels;
mod identity_cache;
mod imap_source;
mod imap_target;
pub mod maildir;
mod maildir_uids;
pub mod mbox;
mod pop3_source;
pub mod session;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use crate::imap::{FolderStatus, MessageUid, StorageQuota};
pub use imap_source::ImapSource;
pub use imap_target::ImapTarget;
pub use pop3_source::{POP3_FOLDER, Pop3Source};
pub use session::{Account, ConnectOptions};

use crate::error::Error;
use crate::folders::{FolderInfo, FolderList, Namespace};
use crate::identity::{IDENTITY_FIELDS, Identity};
use crate::imap::IndexItems;
use crate::index::{IndexedFolder, KnownMessages, SourceMessage, TargetCopy, TargetIndex};

/// What an IMAP index asks of each message, source or target: the identity's header fields,
/// and not the date, which a copy gets when its message is read
/// ([`ArrivalDate`](crate::index::ArrivalDate)) and only verification compares.
const IMAP_INDEX: IndexItems<'static> = IndexItems {
    header_fields: &IDENTITY_FIELDS,
    internal_date: false,
};

/// What verification asks of an IMAP target's copies (and a re-index for it): the date too,
/// to tell which copies the server stored with another date than the one sent.
const IMAP_VERIFYING: IndexItems<'static> = IndexItems {
    internal_date: true,
    ..IMAP_INDEX
};

/// A message on its way to the target.
#[derive(Debug)]
pub struct Outgoing {
    /// What the source index said about it.
    pub message: Arc<SourceMessage>,
    /// The message bytes exactly as the source served them.
    pub raw: Vec<u8>,
}

/// A message as a source hands it over. Its bytes may still sit in the source's read buffer
/// (an IMAP response): they are copied out only once the memory budget has room for them, so
/// a fetch waiting for memory holds one copy of the message, not two.
#[derive(Debug)]
pub struct Fetched<'a> {
    /// What the source index said about it.
    pub message: Arc<SourceMessage>,
    /// The message bytes exactly as the source served them.
    pub raw: Cow<'a, [u8]>,
}

/// What a source message must still show, on the session that deletes it, for a deletion: the
/// POP3 UIDL, size and identity of the message a verified copy was made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeletionEvidence {
    /// The message's UIDL.
    pub uidl: String,
    /// Its size as listed when it was copied.
    pub size: u64,
    /// The identity its bytes had.
    pub identity: Identity,
}

/// What a source deletion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceDeletion {
    /// The UIDLs of the messages that went.
    pub deleted: Vec<String>,
    /// Why others were kept, one line each (a UIDL gone, a size or header that changed, a
    /// refused DELE).
    pub kept: Vec<String>,
}

/// What a change to messages named by UID (flags, deletion) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidChange {
    /// The messages were changed.
    Applied,
    /// The folder's UIDVALIDITY is no longer the one asked for: nothing was changed.
    UidValidityChanged,
}

/// A mail source: lists folders, indexes them from headers, streams message bodies.
pub trait Source: Send {
    /// The source's folders (a POP3 maildrop has one: `INBOX`) and its personal namespace.
    fn folders(&mut self) -> Result<FolderList, Error>;
    /// Indexes a folder: identity, size and flags of every message, from headers only, and its
    /// date where that costs nothing more (an IMAP source gives it when the message is read:
    /// [`ArrivalDate`](crate::index::ArrivalDate)).
    fn index(&mut self, folder: &str) -> Result<Vec<SourceMessage>, Error>;
    /// [`index`](Self::index) of several folders; a source that can pipeline does them in
    /// one round trip.
    fn index_all(&mut self, folders: &[String]) -> Result<Vec<Vec<SourceMessage>>, Error> {
        folders.iter().map(|folder| self.index(folder)).collect()
    }
    /// [`index_all`](Self::index_all), reusing what `known` (one per folder) says of messages
    /// by their stable id and returning, per folder, what is known after this index (for the
    /// next run) and what the source said while indexing. Sources without stable ids (the
    /// default) read every header and return nothing to keep; the default's view vouches for
    /// nothing, so a mirror deletes nothing on its word.
    fn index_known(
        &mut self,
        folders: &[String],
        _known: &[&KnownMessages],
    ) -> Result<Vec<IndexedFolder>, Error> {
        Ok(self
            .index_all(folders)?
            .into_iter()
            .map(|messages| IndexedFolder {
                messages,
                ..IndexedFolder::default()
            })
            .collect())
    }
    /// Deletes the messages that still match their evidence, found again on the session that
    /// deletes; the others are kept. Only POP3 sources can, for a mirror's
    /// `--delete-source-after-days`; the session ends with it.
    fn delete(
        &mut self,
        folder: &str,
        _messages: &[DeletionEvidence],
    ) -> Result<SourceDeletion, Error> {
        Err(Error::usage(format!(
            "{folder}: this source does not delete messages"
        )))
    }
    /// For each folder, a cheap summary that changes whenever its messages or flags do, when
    /// the source has one (IMAP with CONDSTORE); `None` otherwise. All in one round trip where
    /// the protocol allows.
    fn statuses(&mut self, folders: &[String]) -> Result<Vec<Option<FolderStatus>>, Error> {
        Ok(vec![None; folders.len()])
    }
    /// Fetches the given messages, handing each to `deliver`, or the reason it cannot be read
    /// (refused by the server, too large, gone). Stops early, without error, when `deliver`
    /// returns `false`. The error is for the connection as a whole.
    fn fetch(
        &mut self,
        folder: &str,
        messages: Vec<Arc<SourceMessage>>,
        deliver: &mut dyn FnMut(Result<Fetched<'_>, Unreadable>) -> bool,
    ) -> Result<(), Error>;
    /// Says which fetch comes after the next [`fetch`](Self::fetch), so a source may ask for
    /// it in the same round trip; one that cannot ignores it (the default). Only a hint: the
    /// fetch itself is still asked for, and gets what was asked for ahead only when it is
    /// exactly that.
    fn fetch_next(&mut self, _folder: &str, _messages: &[Arc<SourceMessage>]) {}
    /// Lets go of the connection before a new one is opened, after a break or to read
    /// messages again (a POP3 server may lock the maildrop to one session: a sound session is
    /// ended properly, so the lock goes with it). Later calls fail.
    fn abandon(&mut self) {}
    /// Called on a fresh connection after the one fetching `folder` broke: finds `messages`
    /// again, by an id that outlives the session, and returns them with keys valid on this
    /// connection. `None` when this source cannot find messages again safely (the default):
    /// the fetch is then not resumed, and the break ends the run.
    fn relocate(
        &mut self,
        _folder: &str,
        _messages: Vec<Arc<SourceMessage>>,
    ) -> Result<Option<Relocated>, Error> {
        Ok(None)
    }
}

/// Messages found again on a fresh source connection ([`Source::relocate`]).
#[derive(Debug, Default)]
pub struct Relocated {
    /// The messages still there, with their keys on the new connection.
    pub found: Vec<Arc<SourceMessage>>,
    /// Those that are gone, or changed, with the reason.
    pub gone: Vec<Unreadable>,
}

/// A source message that cannot be read, and why.
#[derive(Debug)]
pub struct Unreadable {
    /// What the source index said about it.
    pub message: Arc<SourceMessage>,
    /// Why it cannot be read.
    pub reason: String,
}

/// What became of one message of an upload: stored (with its UID when the target says where:
/// IMAP UIDPLUS), or refused, with the server's reason.
pub type Outcome = Result<Option<MessageUid>, String>;

/// A folder the target would not create or open, in the server's words: that folder fails,
/// the others are copied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FolderRefused(pub String);

/// The UIDs of a folder a target found when asked ([`Target::find_uids`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundUids {
    /// The folder's UIDVALIDITY, when the server says.
    pub uid_validity: Option<u32>,
    /// The UIDs asked about that exist, with their size (IMAP RFC822.SIZE) and flags, and for
    /// those asked to identify their date and identity; sorted by UID, each once.
    pub copies: Vec<FoundCopy>,
}

/// What [`Target::find_uids`] asks about one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidCheck {
    /// The folder.
    pub folder: String,
    /// UIDs whose size and flags are wanted.
    pub uids: Vec<u32>,
    /// UIDs whose date and identity are wanted too, sorted.
    pub identify: Vec<u32>,
}

/// A message [`Target::find_uids`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCopy {
    /// Its UID, size, flags and date.
    pub copy: TargetCopy,
    /// When asked for, [`Identity::digest`] of the identity its header fields give: the
    /// identity itself would be a good part of a large verification's memory.
    pub identity: Option<u64>,
}

/// An IMAP-like target: folders, an index of what it holds, and batched uploads.
pub trait Target: Send {
    /// The folders that exist on the target, and its personal namespace.
    fn folders(&mut self) -> Result<FolderList, Error>;
    /// Creates (and subscribes to) the folders of `create`, parents listed before their
    /// children (one that exists already is no error; INBOX, which always exists and some
    /// servers refuse to create, is never among them), then indexes `folders` as
    /// [`index_all`](Self::index_all) does, for a plan: a target may leave out what only
    /// verification compares (an IMAP target, the copies' dates). A folder the target refuses
    /// to create or open fails alone ([`FolderRefused`]); the outer error means the connection
    /// failed.
    fn create_and_index(
        &mut self,
        create: &[String],
        folders: &[String],
    ) -> Result<Vec<Result<TargetIndex, FolderRefused>>, Error>;
    /// Counts the identities of the messages in a folder; a folder that does not exist holds
    /// nothing.
    fn index(&mut self, folder: &str) -> Result<TargetIndex, Error>;
    /// [`index`](Self::index) of several folders; a target that can pipeline does them in
    /// one round trip.
    fn index_all(&mut self, folders: &[String]) -> Result<Vec<TargetIndex>, Error> {
        folders.iter().map(|folder| self.index(folder)).collect()
    }
    /// For each folder, which of the UIDs asked about it holds, with their sizes and flags and,
    /// where asked, dates and identities: cheaper than [`index_all`](Self::index_all), which reads
    /// every message's header; all in one round trip where the protocol allows. `None` for a
    /// folder the target could not answer for (the default: every folder).
    fn find_uids(&mut self, folders: &[UidCheck]) -> Result<Vec<Option<FoundUids>>, Error> {
        Ok(vec![None; folders.len()])
    }
    /// Summaries of the folders, as [`Source::statuses`]; `None` each from a target that has
    /// none (the default).
    fn statuses(&mut self, folders: &[String]) -> Result<Vec<Option<FolderStatus>>, Error> {
        Ok(vec![None; folders.len()])
    }
    /// Adds some flags to these messages and removes others, leaving the rest alone, after
    /// opening the folder and finding it still under `uid_validity`. Only a target whose
    /// index gives a UIDVALIDITY is asked; the default refuses.
    fn change_flags(
        &mut self,
        folder: &str,
        _uid_validity: u32,
        _uids: &[u32],
        _add: &[String],
        _remove: &[String],
    ) -> Result<UidChange, Error> {
        Err(Error::usage(format!(
            "{folder}: this target keeps no UIDs to change flags by"
        )))
    }
    /// Removes these messages (and only these), after opening the folder and finding it still
    /// under `uid_validity`; when it is not, removes nothing and says so. Only a target whose
    /// index gives a UIDVALIDITY is asked; the default refuses.
    fn delete(
        &mut self,
        folder: &str,
        _uid_validity: u32,
        _uids: &[u32],
    ) -> Result<UidChange, Error> {
        Err(Error::usage(format!(
            "{folder}: this target keeps no UIDs to delete by"
        )))
    }
    /// The largest message the server says it takes (IMAP APPENDLIMIT), if it says.
    fn append_limit(&self) -> Option<u64> {
        None
    }
    /// The storage quota the target's INBOX counts against, for a preflight. `None`: the
    /// target does not say (the default), so nobody knows whether the copy fits.
    fn storage_quota(&mut self) -> Result<Option<StorageQuota>, Error> {
        Ok(None)
    }
    /// The capabilities the target advertises, as it spells them, for a preflight; empty for
    /// a store without any (the default).
    fn capabilities(&self) -> Vec<String> {
        Vec::new()
    }
    /// How long the server took to answer the login, when it was asked over a network: about
    /// one round trip, which sizes how much the copy keeps in flight. `None` (the default)
    /// for a store that is not across a network.
    fn login_took(&self) -> Option<Duration> {
        None
    }
    /// Whether several sessions may upload into one folder at once without losing a message.
    /// A store that does not say so gets one writer per folder.
    fn concurrent_writers(&self) -> bool {
        false
    }
    /// Uploads a batch. The outer error means the connection failed; otherwise there is one
    /// [`Outcome`] per message.
    fn append(&mut self, folder: &str, batch: &[Outgoing]) -> Result<Vec<Outcome>, Error>;
    /// Starts uploading a batch, so that the next can be sent before the server answered
    /// this one (over a slow link that answer is a round trip away); the outcome comes from
    /// [`finish_append`](Self::finish_append), in any order. A target that cannot pipeline
    /// uploads the batch at once (the default).
    fn start_append(&mut self, folder: &str, batch: &[Outgoing]) -> Result<Started, Error> {
        Ok(Started::Done(self.append(folder, batch)?))
    }
    /// The outcome of a [`start_append`](Self::start_append) of `batch` into `folder`, as
    /// [`append`](Self::append) returns it.
    fn finish_append(
        &mut self,
        started: Started,
        _folder: &str,
        _batch: &[Outgoing],
    ) -> Result<Vec<Outcome>, Error> {
        match started {
            Started::Done(outcome) => Ok(outcome),
            Started::Pending(_) => unreachable!("only a pipelining target starts uploads"),
        }
    }
}

/// A batch handed to [`Target::start_append`].
#[derive(Debug)]
pub enum Started {
    /// Already uploaded, with this outcome.
    Done(Vec<Outcome>),
    /// Sent; the target knows it by this number until it is finished.
    Pending(u64),
}

/// Largest message mailferry will read from a server (a bound against a runaway server).
const MAX_MESSAGE_SIZE: u64 = 1 << 30;

/// Reports the messages over [`MAX_MESSAGE_SIZE`] as unreadable and returns the others by
/// key, or `None` when `deliver` asked to stop.
fn deliver_too_large(
    messages: Vec<Arc<SourceMessage>>,
    deliver: &mut dyn FnMut(Result<Fetched<'_>, Unreadable>) -> bool,
) -> Option<HashMap<u32, Arc<SourceMessage>>> {
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

/// The folder list of a store on local disk: `names` (INBOX among them), sorted and each once,
/// all at the top of one personal namespace with `separator` between levels.
fn local_folder_list(mut names: Vec<String>, separator: char) -> FolderList {
    names.sort();
    names.dedup();
    FolderList {
        folders: names
            .into_iter()
            .map(|name| FolderInfo::from_list(name, Some(separator), &[]))
            .collect(),
        personal: Namespace {
            prefix: String::new(),
            delimiter: Some(separator),
        },
    }
}
