//! What the planner reads: a source folder's messages and a target folder's identities.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, FixedOffset};

use crate::identity::Identity;
use crate::imap::command::is_writable_flag;

/// One message as a source indexed it (headers only; the body is fetched later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMessage {
    /// How the source finds the message again: the POP3 message number or the IMAP UID.
    pub key: u32,
    /// An id that stays the same across sessions, when the source has one (POP3 UIDL).
    pub stable_id: Option<String>,
    /// What the message is, for deduplication.
    pub identity: Identity,
    /// Whether `identity` was remembered from an earlier run (a POP3 mirror's state) instead
    /// of read from the message in this one: then the bytes sent may carry another.
    pub identity_remembered: bool,
    /// Size in octets as the server reports it (CRLF line ends): what a read of the message
    /// must give ([`read_matches_announced`]).
    pub size: u64,
    /// Octets mailferry adds to the copy (the `X-UIDL` field of `--keep-pop3-uidl header`):
    /// the copy it sends has [`copy_size`](Self::copy_size).
    pub added: u32,
    /// IMAP flags to set on the copy.
    pub flags: Flags,
    /// INTERNALDATE to give the copy, when known.
    pub internal_date: ArrivalDate,
}

/// A message's arrival date (IMAP INTERNALDATE), as its index knew it or as the source said
/// when the message was read. An IMAP source's index does not ask for it: the copies need it,
/// the plan does not, and it is a good part of what a large folder's index costs the server
/// (see [`IndexItems::internal_date`](crate::imap::IndexItems::internal_date)). The index
/// entry is shared by the copy, its receipt and verification, so the date learnt when the
/// message is read is set on it once, for all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArrivalDate(OnceLock<DateTime<FixedOffset>>);

impl ArrivalDate {
    /// The date, when known.
    pub fn get(&self) -> Option<DateTime<FixedOffset>> {
        self.0.get().copied()
    }

    /// Sets the date the source said when the message was read, unless one is known already.
    pub fn learn(&self, date: DateTime<FixedOffset>) {
        // A date already known came from the same source: keeping it changes nothing.
        let _ = self.0.set(date);
    }
}

impl From<Option<DateTime<FixedOffset>>> for ArrivalDate {
    fn from(date: Option<DateTime<FixedOffset>>) -> Self {
        ArrivalDate(date.map(OnceLock::from).unwrap_or_default())
    }
}

/// Whether `raw`, the bytes a source served for a message, is the whole message whose size it
/// announced (POP3 LIST, IMAP RFC822.SIZE). Sizes count line ends as CRLF, so every bare LF
/// read counts as two octets; a server that stores bare LF and counts it as one octet is
/// taken at its word too. Anything else is a wrong read: a server that cut the message short
/// (GNU Mailutils pop3d after `TOP`) or sent more than it said. The CRLF a POP3 server adds
/// to a message without a final line end is the POP3 source's to drop before this check.
pub fn read_matches_announced(announced: u64, raw: &[u8]) -> bool {
    let read = raw.len() as u64;
    // Most reads match exactly: only the others are scanned for line ends (every message
    // passes here, so a byte-by-byte scan of each is a good part of a copy's CPU).
    if read == announced {
        return true;
    }
    let bare_lfs = memchr::memchr_iter(b'\n', raw)
        .filter(|&i| i == 0 || raw[i - 1] != b'\r')
        .count();
    read + bare_lfs as u64 == announced
}

/// A message's flags, shared by the messages that have the same: a mailbox holds only a few
/// distinct sets, and a list of its own would be a good part of each index entry's memory.
pub type Flags = Arc<[String]>;

/// Hands out one [`Flags`] per distinct set of flags, to the messages of one index.
#[derive(Debug, Default)]
pub struct FlagSets(HashSet<Flags>);

impl FlagSets {
    /// The shared form of `flags`.
    pub fn intern(&mut self, flags: Vec<String>) -> Flags {
        if let Some(shared) = self.0.get(flags.as_slice()) {
            return Arc::clone(shared);
        }
        let shared = Flags::from(flags);
        self.0.insert(Arc::clone(&shared));
        shared
    }
}

impl SourceMessage {
    /// The size of the copy mailferry sends: the message and what it adds.
    pub fn copy_size(&self) -> u64 {
        self.size + u64::from(self.added)
    }
}

#[cfg(test)]
impl SourceMessage {
    /// A 10-byte message with this Message-ID and no flags or date, for unit tests.
    pub(crate) fn with_id(key: u32, id: &str) -> Self {
        SourceMessage {
            key,
            stable_id: None,
            identity: Identity::MessageId(id.into()),
            identity_remembered: false,
            size: 10,
            added: 0,
            flags: Flags::default(),
            internal_date: ArrivalDate::default(),
        }
    }
}

/// A source folder's index as a mirror reads it: the messages, what is known of them for the
/// next run, and what the source said about the folder while indexing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexedFolder {
    /// The folder's messages.
    pub messages: Vec<SourceMessage>,
    /// What is known after this index, by stable id (POP3 UIDL), for the next run.
    pub known: KnownMessages,
    /// What the source said about the folder.
    pub view: SourceView,
}

/// What a source said about a folder while indexing it: whether a message absent from the
/// index has left the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceView {
    /// The folder's UIDVALIDITY at the index (IMAP); `None` for POP3, whose UIDLs need none.
    pub uid_validity: Option<u32>,
    /// Whether the index holds every message the source announced (EXISTS, LIST): a message
    /// missing from a short index has not left the source.
    pub complete: bool,
}

/// Which keywords (flags without a leading `\\`) a target folder can store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KeywordPolicy {
    /// Any keyword (`\\*` in PERMANENTFLAGS, or the server did not say).
    #[default]
    Any,
    /// Only these.
    Only(Vec<String>),
}

impl KeywordPolicy {
    /// The policy a SELECT's PERMANENTFLAGS announce.
    pub fn from_permanent_flags(flags: &[String]) -> Self {
        if flags.is_empty() || flags.iter().any(|f| f == "\\*") {
            KeywordPolicy::Any
        } else {
            KeywordPolicy::Only(flags.to_vec())
        }
    }

    /// Whether a copy may carry this flag: system flags always may, and no flag IMAP cannot
    /// write ([`is_writable_flag`]) ever may.
    pub fn accepts(&self, flag: &str) -> bool {
        is_writable_flag(flag)
            && match self {
                KeywordPolicy::Any => true,
                KeywordPolicy::Only(flags) => {
                    flag.starts_with('\\') || flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
                }
            }
    }
}

/// One message in a target folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetCopy {
    /// Its UID in the folder.
    pub uid: u32,
    /// Its size (RFC822.SIZE), which verification compares with the source's.
    pub size: u64,
    /// Its flags, shared with the copies that have the same ([`FlagSets`]).
    pub flags: Flags,
    /// Its INTERNALDATE, when the server said.
    pub internal_date: Option<DateTime<FixedOffset>>,
}

/// The messages of each identity a target folder holds, and which keywords it takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetIndex {
    copies: HashMap<Identity, Vec<TargetCopy>>,
    /// The keywords the folder stores.
    pub keywords: KeywordPolicy,
    /// The folder's UIDVALIDITY when indexed, when the server said: the copies' UIDs hold
    /// only as long as it does not change.
    pub uid_validity: Option<u32>,
}

impl TargetIndex {
    /// An empty index with room for this many identities.
    pub fn with_capacity(identities: usize) -> Self {
        TargetIndex {
            copies: HashMap::with_capacity(identities),
            ..TargetIndex::default()
        }
    }

    /// Records one more message with this identity.
    pub fn add(&mut self, identity: Identity, copy: TargetCopy) {
        // Most identities have one copy, and a Vec's first push makes room for four.
        self.copies
            .entry(identity)
            .or_insert_with(|| Vec::with_capacity(1))
            .push(copy);
    }

    /// How many messages with this identity the folder holds.
    pub fn count(&self, identity: &Identity) -> usize {
        self.copies(identity).len()
    }

    /// Every identity in the folder.
    pub fn identities(&self) -> impl Iterator<Item = &Identity> {
        self.copies.keys()
    }

    /// The messages with this identity, in UID order.
    pub fn copies(&self, identity: &Identity) -> &[TargetCopy] {
        self.copies.get(identity).map_or(&[], Vec::as_slice)
    }
}

impl FromIterator<Identity> for TargetIndex {
    fn from_iter<I: IntoIterator<Item = Identity>>(iter: I) -> Self {
        let mut index = TargetIndex::default();
        iter.into_iter()
            .for_each(|identity| index.add(identity, TargetCopy::default()));
        index
    }
}

/// What an earlier run learnt about a message from its headers, kept by a source's stable id
/// (POP3 UIDL) so a later run need not read them again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownMessage {
    /// The message's identity; `None` when it must be read again (a run failed to verify).
    pub identity: Option<Identity>,
    /// Its size; a different size under the same id means the headers are read again.
    pub size: u64,
    /// Its arrival date (RFC 3339), when it has one.
    pub internal_date: Option<String>,
    /// When mailferry first saw it (Unix seconds): the clock of `--delete-source-after-days`.
    pub first_seen: i64,
}

/// Known messages by stable id.
pub type KnownMessages = BTreeMap<String, KnownMessage>;

impl KnownMessage {
    /// Remembers an indexed message, first seen at `first_seen`.
    pub fn new(message: &SourceMessage, first_seen: i64) -> Self {
        KnownMessage {
            identity: Some(message.identity.clone()),
            size: message.size,
            internal_date: message.internal_date.get().map(|d| d.to_rfc3339()),
            first_seen,
        }
    }

    /// The index entry for this message under its current key, when its identity is known.
    pub fn to_source_message(
        &self,
        key: u32,
        stable_id: Option<String>,
        flags: Flags,
    ) -> Option<SourceMessage> {
        Some(SourceMessage {
            key,
            stable_id,
            identity: self.identity.clone()?,
            identity_remembered: true,
            size: self.size,
            added: 0,
            flags,
            internal_date: self
                .internal_date
                .as_deref()
                .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_index_keeps_every_copy_of_an_identity_in_the_order_added() {
        let copy = |uid| TargetCopy {
            uid,
            ..TargetCopy::default()
        };
        let (once, thrice) = (
            Identity::MessageId("a".into()),
            Identity::MessageId("b".into()),
        );
        let mut index = TargetIndex::default();
        for (identity, uid) in [(&thrice, 1), (&once, 2), (&thrice, 3), (&thrice, 4)] {
            index.add(identity.clone(), copy(uid));
        }
        let uids =
            |identity| -> Vec<u32> { index.copies(identity).iter().map(|c| c.uid).collect() };
        assert_eq!(uids(&once), [2]);
        assert_eq!(uids(&thrice), [1, 3, 4]);
        assert_eq!(index.count(&Identity::MessageId("c".into())), 0);
        assert_eq!(index.identities().count(), 2);
    }

    #[test]
    fn a_read_matches_its_announced_size_counting_line_ends_as_crlf() {
        let crlf = b"Subject: x\r\n\r\nbody\r\n";
        let lf = b"Subject: x\n\nbody\n";
        let size = crlf.len() as u64;
        assert!(read_matches_announced(size, crlf));
        // Bare LF served for a size counted with CRLF, or counted as served.
        assert!(read_matches_announced(size, lf));
        assert!(read_matches_announced(lf.len() as u64, lf));
        // A header-only read, a byte missing or extra, a CRLF too many.
        assert!(!read_matches_announced(size, b"Subject: x\r\n\r\n"));
        assert!(!read_matches_announced(size, &crlf[..crlf.len() - 1]));
        assert!(!read_matches_announced(
            size,
            b"Subject: x\r\n\r\nbody!\r\n"
        ));
        assert!(!read_matches_announced(
            size,
            b"Subject: x\r\n\r\nbody\r\n\r\n"
        ));
        assert!(read_matches_announced(0, b""));
        assert!(!read_matches_announced(10, b""));
    }

    #[test]
    fn equal_flag_sets_share_one_list() {
        let mut sets = FlagSets::default();
        let seen = || vec!["\\Seen".to_owned()];
        let first = sets.intern(seen());
        let again = sets.intern(seen());
        let other = sets.intern(vec!["\\Seen".to_owned(), "$Label1".to_owned()]);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(*again, ["\\Seen"]);
        assert_eq!(*other, ["\\Seen", "$Label1"]);
    }
}
