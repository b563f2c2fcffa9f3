//! Mirror state: what the last mirror run of one pair of accounts saw and did, kept as JSON in
//! the `--state` directory, with a lock against overlapping runs.
//!
//! The state only makes runs cheaper and decides what `--delete` may remove: losing it (or a
//! UIDVALIDITY change) leads to a full re-index, which is slower but never wrong, because what
//! to copy is always decided from both servers' contents.

use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::deletion::CopyRecord;
use crate::error::Error;
use crate::identity::Identity;
use crate::index::{Flags, KnownMessages};
use crate::private_file;
use crate::store::FolderStatus;

/// The state file's format version. Version 1 fingerprinted messages without a Message-ID
/// with their size; its fingerprints are forgotten on loading (see [`forget_fingerprints`]).
/// Versions 1 and 2 counted copies per identity instead of recording each (see
/// [`crate::deletion`]): those counts are no evidence, so they are not read.
const SCHEMA: u32 = 3;

/// What a mirror remembers about one source folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderState {
    /// The target folder it is mirrored into.
    pub target_folder: String,
    /// STATUS of the source folder after the last complete run.
    pub source_status: Option<FolderStatus>,
    /// STATUS of the target folder after the last complete run.
    pub target_status: Option<FolderStatus>,
    /// The copies this mirror made, each with the source message it was made of and where
    /// the target stored it: the only messages `--delete` may remove, and the only source
    /// messages `--delete-source-after-days` may delete.
    #[serde(default)]
    pub copies: Vec<CopyRecord>,
    /// The source folder's UIDVALIDITY the copies' source UIDs belong to (IMAP).
    #[serde(default)]
    pub source_uid_validity: Option<u32>,
    /// The source flags of each (unique) identity as last mirrored: a flag change on the source
    /// since then is applied to the target; a change made only on the target is left alone.
    /// Keyed in the file by the identity as shown (`<id>`, `sha256:…`).
    #[serde(with = "flags_by_identity")]
    pub flags: BTreeMap<Identity, Flags>,
    /// A POP3 source's messages by UIDL: only new UIDLs have their headers read.
    #[serde(default)]
    pub known: KnownMessages,
}

/// Everything a mirror remembers, per source folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorState {
    /// The format version.
    pub schema: u32,
    /// Whether the run that wrote this state applied deletions: a `--delete` run after one
    /// that did not must look at every folder, unchanged or not.
    #[serde(default)]
    pub deleted_gone: bool,
    /// Whether the run that wrote this state was uploading: saved before a copy starts and
    /// cleared when the run ends, so the next run knows the last one was killed mid-copy.
    #[serde(default)]
    pub copying: bool,
    /// Per source folder.
    pub folders: BTreeMap<String, FolderState>,
}

impl MirrorState {
    /// Whether it was read from a file in the current format (one in an older format is
    /// read as this one, and written so by the next save).
    pub fn is_current(&self) -> bool {
        self.schema == SCHEMA
    }
}

/// The state of one pair of accounts in a state directory, held under its lock.
pub struct StateStore {
    path: PathBuf,
    // Held for the store's lifetime; the OS releases it when the process ends, however it
    // ends, so a killed run never leaves a stale lock behind.
    _lock: File,
}

impl StateStore {
    /// Locks the state of the mirror `source` → `target` in `dir` (created if missing). Fails
    /// with [`Error::Locked`] at once when another run holds it.
    pub fn open(dir: &Path, source: &str, target: &str) -> Result<Self, Error> {
        let failed = |path: &Path, e: std::io::Error| Error::State {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
        let key = pair_key(source, target);
        let lock_path = dir.join(format!("{key}.lock"));
        let lock = private_file::open_private(&lock_path).map_err(|e| failed(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { path: lock_path }),
            Err(TryLockError::Error(e)) => return Err(failed(&lock_path, e)),
        }
        Ok(StateStore {
            path: dir.join(format!("{key}.json")),
            _lock: lock,
        })
    }

    /// The saved state; an empty one when there is none, or when it cannot be read (a
    /// warning is returned with it then: the run re-indexes everything).
    pub fn load(&self) -> (MirrorState, Option<String>) {
        match std::fs::read(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (MirrorState::default(), None),
            Err(e) => (
                MirrorState::default(),
                Some(self.unreadable(&e.to_string())),
            ),
            Ok(bytes) => match serde_json::from_slice::<MirrorState>(&bytes) {
                Ok(state) if state.schema == SCHEMA => (state, None),
                Ok(mut state) if state.schema < SCHEMA => {
                    if state.schema == 1 {
                        forget_fingerprints(&mut state);
                    }
                    let warning = counted_copies(&bytes).then(|| self.without_evidence());
                    (state, warning)
                }
                Ok(state) => (
                    MirrorState::default(),
                    Some(self.unreadable(&format!("unknown schema {}", state.schema))),
                ),
                Err(e) => (
                    MirrorState::default(),
                    Some(self.unreadable(&e.to_string())),
                ),
            },
        }
    }

    fn without_evidence(&self) -> String {
        format!(
            "the mirror state {} was written by an older mailferry, which did not record where \
             each copy went: the copies it made stay on the target (--delete) and their source \
             messages on the source (--delete-source-after-days); copies made from now on are \
             recorded",
            self.path.display()
        )
    }

    fn unreadable(&self, why: &str) -> String {
        format!(
            "the mirror state {} could not be read ({why}); starting from a full re-index",
            self.path.display()
        )
    }

    /// Saves the state atomically, in the current format: a crash leaves the old file or the
    /// new one, never half. Marks `state` with the format in place, since a copy of a large
    /// mailbox's state would double the run's memory.
    pub fn save(&self, state: &mut MirrorState) -> Result<(), Error> {
        let failed = |e: std::io::Error| Error::State {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        state.schema = SCHEMA;
        // Streamed: a large mailbox's state is tens of MB of JSON.
        private_file::write_atomically_with(&self.path, |file| {
            let mut out = BufWriter::new(file);
            serde_json::to_writer(&mut out, state)?;
            out.flush()
        })
        .map_err(failed)
    }
}

/// Whether an older state counted copies the mirror made (in a `copied` map per folder).
fn counted_copies(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Old {
        folders: BTreeMap<String, OldFolder>,
    }
    #[derive(Deserialize)]
    struct OldFolder {
        #[serde(default)]
        copied: BTreeMap<String, usize>,
    }
    serde_json::from_slice::<Old>(bytes)
        .is_ok_and(|old| old.folders.values().any(|f| !f.copied.is_empty()))
}

/// Forgets what a version-1 state knew by fingerprint, which no longer matches the target's
/// index: a remembered identity would make a copy look missing and send it again. Such a POP3
/// message has its headers read again (keeping its first-seen date), and its flags are
/// mirrored afresh, which is safe either way.
fn forget_fingerprints(state: &mut MirrorState) {
    for folder in state.folders.values_mut() {
        folder
            .flags
            .retain(|key, _| !matches!(key, Identity::Fingerprint(_)));
        for known in folder.known.values_mut() {
            if matches!(known.identity, Some(Identity::Fingerprint(_))) {
                known.identity = None;
            }
        }
    }
}

/// The flags map, as a JSON object keyed by each identity as shown. A key that shows no
/// identity is dropped on reading: all it can cost is a flag change not mirrored. The flag
/// sets read are shared, as an index shares them.
mod flags_by_identity {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serialize, Serializer};

    use crate::identity::Identity;
    use crate::index::{FlagSets, Flags};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<Identity, Flags>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        struct Shown<'a>(&'a Identity);
        impl Serialize for Shown<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self.0)
            }
        }
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for (identity, flags) in map {
            out.serialize_entry(&Shown(identity), flags)?;
        }
        out.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<Identity, Flags>, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = BTreeMap<Identity, Flags>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of flag lists keyed by message identities")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut flag_sets = FlagSets::default();
                let mut read = Vec::with_capacity(entries.size_hint().unwrap_or(0));
                while let Some((shown, flags)) = entries.next_entry::<String, Vec<String>>()? {
                    if let Some(identity) = Identity::from_shown(&shown) {
                        read.push((identity, flag_sets.intern(flags)));
                    }
                }
                // Built in one go: a map collected from a list sorts it once (a file this
                // version wrote lists them in order already) instead of searching for each.
                Ok(read.into_iter().collect())
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// A file name for a pair of accounts: stable, and free of characters a URL may hold.
fn pair_key(source: &str, target: &str) -> String {
    let digest = Sha256::digest(format!("{source}\n{target}").as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("mirror-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deletion::SourceRef;
    use crate::index::KnownMessage;
    use crate::store::MessageUid;

    #[test]
    fn a_second_open_of_the_same_pair_is_locked_out_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateStore::open(dir.path(), "pop3s://a@h:995", "imaps://b@h:993").unwrap();
        let second = StateStore::open(dir.path(), "pop3s://a@h:995", "imaps://b@h:993");
        assert!(matches!(second, Err(Error::Locked { .. })));
        assert!(StateStore::open(dir.path(), "pop3s://c@h:995", "imaps://b@h:993").is_ok());
        drop(first);
        assert!(StateStore::open(dir.path(), "pop3s://a@h:995", "imaps://b@h:993").is_ok());
    }

    #[test]
    fn saved_state_loads_back_and_garbage_means_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "s", "t").unwrap();
        assert_eq!(store.load(), (MirrorState::default(), None));
        let mut state = MirrorState::default();
        state.folders.insert(
            "INBOX".into(),
            FolderState {
                target_folder: "INBOX".into(),
                copies: vec![CopyRecord {
                    identity: Identity::MessageId("a@b".into()),
                    source: SourceRef::Uidl("u1".into()),
                    size: 10,
                    target: Some(MessageUid {
                        uid_validity: 7,
                        uid: 3,
                    }),
                    source_deleted: false,
                }],
                ..FolderState::default()
            },
        );
        store.save(&mut state).unwrap();
        let (loaded, warning) = store.load();
        assert_eq!(loaded.folders, state.folders);
        assert_eq!(warning, None);
        std::fs::write(&store.path, b"{not json").unwrap();
        let (loaded, warning) = store.load();
        assert_eq!(loaded, MirrorState::default());
        assert!(warning.unwrap().contains("full re-index"));
    }

    #[test]
    fn flags_are_kept_under_each_identity_as_shown_and_an_unreadable_key_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "s", "t").unwrap();
        let seen: Flags = vec!["\\Seen".to_owned()].into();
        let fingerprint = Identity::Fingerprint(Box::new([7; 32]));
        let mut state = MirrorState::default();
        state.folders.insert(
            "INBOX".into(),
            FolderState {
                flags: BTreeMap::from([
                    (Identity::MessageId("a@b".into()), seen.clone()),
                    (fingerprint.clone(), seen.clone()),
                ]),
                ..FolderState::default()
            },
        );
        store.save(&mut state).unwrap();
        let mut written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&store.path).unwrap()).unwrap();
        let flags = &mut written["folders"]["INBOX"]["flags"];
        assert_eq!(flags["<a@b>"], serde_json::json!(["\\Seen"]));
        assert_eq!(
            flags[fingerprint.to_string()],
            serde_json::json!(["\\Seen"])
        );
        flags["a@b-without-brackets"] = serde_json::json!([]);
        std::fs::write(&store.path, serde_json::to_vec(&written).unwrap()).unwrap();
        let (loaded, warning) = store.load();
        assert_eq!(warning, None);
        assert_eq!(loaded.folders, state.folders);
    }

    #[test]
    fn an_older_state_forgets_its_fingerprints_and_copy_counts_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "s", "t").unwrap();
        let old_fingerprint = Identity::Fingerprint(Box::new([7; 32]));
        let known = |identity| KnownMessage {
            identity: Some(identity),
            size: 10,
            internal_date: None,
            first_seen: 1_600_000_000,
        };
        let u1 = known(Identity::MessageId("a@b".into()));
        let u2 = known(old_fingerprint.clone());
        let old = serde_json::json!({
            "schema": 1,
            "folders": {"INBOX": {
                "target_folder": "INBOX",
                "source_status": null,
                "target_status": null,
                "copied": {"<a@b>": 1, old_fingerprint.to_string(): 1},
                "flags": {"<a@b>": [], old_fingerprint.to_string(): []},
                "source_counts": {"<a@b>": 1},
                "known": {"u1": u1, "u2": u2},
            }},
        });
        std::fs::write(&store.path, serde_json::to_vec(&old).unwrap()).unwrap();
        let (loaded, warning) = store.load();
        assert!(warning.unwrap().contains("older mailferry"));
        assert!(!loaded.is_current(), "rewritten by the next save");
        let inbox = &loaded.folders["INBOX"];
        assert!(inbox.copies.is_empty());
        assert_eq!(inbox.known["u1"], u1);
        assert_eq!(inbox.known["u2"].identity, None);
        assert_eq!(inbox.known["u2"].first_seen, 1_600_000_000);
        let flagged: Vec<&Identity> = inbox.flags.keys().collect();
        assert_eq!(flagged, [&Identity::MessageId("a@b".into())]);
    }

    #[test]
    fn two_spellings_of_one_account_share_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let key = |url: &str| crate::endpoint::Endpoint::parse(url).unwrap().to_string();
        let _first = StateStore::open(
            dir.path(),
            &key("imaps://alice@Mail.Example:993"),
            &key("imaps://bob@backup.example"),
        )
        .unwrap();
        let second = StateStore::open(
            dir.path(),
            &key("imaps://alice@mail.example"),
            &key("IMAPS://bob@BACKUP.example:993"),
        );
        assert!(matches!(second, Err(Error::Locked { .. })));
    }
}
