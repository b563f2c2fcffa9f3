//! What the planner reads: a source folder's messages and a target folder's identities.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset};

use crate::identity::Identity;

/// One message as a source indexed it (headers only; the body is fetched later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMessage {
    /// How the source finds the message again: the POP3 message number or the IMAP UID.
    pub key: u32,
    /// What the message is, for deduplication.
    pub identity: Identity,
    /// Size in octets as the server reports it (CRLF line ends).
    pub size: u64,
    /// IMAP flags to set on the copy.
    pub flags: Vec<String>,
    /// INTERNALDATE to give the copy, when known.
    pub internal_date: Option<DateTime<FixedOffset>>,
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

    /// Whether a copy may carry this flag; system flags always may.
    pub fn accepts(&self, flag: &str) -> bool {
        match self {
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
    /// Its flags.
    pub flags: Vec<String>,
}

/// The messages of each identity a target folder holds, and which keywords it takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetIndex {
    copies: HashMap<Identity, Vec<TargetCopy>>,
    /// The keywords the folder stores.
    pub keywords: KeywordPolicy,
}

impl TargetIndex {
    /// Records one more message with this identity.
    pub fn add(&mut self, identity: Identity, copy: TargetCopy) {
        self.copies.entry(identity).or_default().push(copy);
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
