//! The identities of a local folder's message files, kept beside them between runs, so that a
//! re-run indexes a folder of thousands of messages from one small file instead of opening
//! every message: a Maildir message file never changes its bytes under its name (only its
//! flags, which are not part of the name it is kept by), so an identity read once stays true
//! while a file of that name and size exists. A file whose size differs from the one recorded
//! is read again. The file is only ever a shortcut: missing, unreadable or from another
//! version, it is ignored and the messages are read.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::Identity;
use crate::private_file::write_atomically;

/// The name of the file in a folder's directory. Dovecot and Courier ignore a file they do not
/// know there.
pub const FILE_NAME: &str = "mailferry-identities";
/// Bumped whenever the identity rules or this format change: an older file is then ignored.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// By the file's name without its flags: its size and identity.
    messages: HashMap<String, (u64, Identity)>,
}

/// A folder's recorded identities, and those learnt while indexing it.
pub struct IdentityCache {
    path: PathBuf,
    known: HashMap<String, (u64, Identity)>,
    /// What this index found, to record for the next one.
    seen: HashMap<String, (u64, Identity)>,
    learnt: bool,
}

impl IdentityCache {
    /// The identities recorded in the folder directory `dir` (none when there is no usable
    /// record).
    pub fn load(dir: &Path) -> Self {
        let path = dir.join(FILE_NAME);
        let known = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Stored>(&bytes).ok())
            .filter(|stored| stored.version == VERSION)
            .map(|stored| stored.messages)
            .unwrap_or_default();
        IdentityCache {
            path,
            known,
            seen: HashMap::new(),
            learnt: false,
        }
    }

    /// The identity recorded for the file `name` of `size` bytes, if any.
    pub fn get(&mut self, name: &str, size: u64) -> Option<Identity> {
        let (known_size, identity) = self.known.get(name)?;
        if *known_size != size {
            return None;
        }
        self.seen.insert(name.to_owned(), (size, identity.clone()));
        Some(identity.clone())
    }

    /// Records the identity read from the file `name` of `size` bytes.
    pub fn learn(&mut self, name: &str, size: u64, identity: Identity) {
        self.seen.insert(name.to_owned(), (size, identity));
        self.learnt = true;
    }

    /// Writes what this index saw, when it learnt something or files have gone since the
    /// record was written. A failure to write only costs the next run its shortcut.
    pub fn save(self) {
        if !self.learnt && self.seen.len() == self.known.len() {
            return;
        }
        let stored = Stored {
            version: VERSION,
            messages: self.seen,
        };
        if let Ok(bytes) = serde_json::to_vec(&stored) {
            let _ = write_atomically(&self.path, &bytes);
        }
    }
}
