//! Maildir on local disk, as a source and as a target, laid out as Dovecot and Courier use it
//! (Maildir++), so Dovecot can serve a backup as it is:
//!
//! - the account's root holds `INBOX` (`cur/ new/ tmp/`); each other folder is a directory
//!   `.Name` beside them, its hierarchy joined with `.` (`.Parent.Child`), named in modified
//!   UTF-7 as Dovecot names them, with an empty `maildirfolder` file;
//! - a message is one file, named `<time>.M<µs>P<pid>Q<n>.<host>,S=<size>:2,<flags>`: the
//!   flags are letters (`D`raft, `F`lagged, `R` answered, `S`een, `T` deleted) and keywords
//!   `a`–`z`, each standing for a line of the folder's `dovecot-keywords` file (`0 $Label1`);
//! - INTERNALDATE is the file's modification time.
//!
//! Reading also takes the nested layout `mbsync SubFolders Verbatim` writes (`Parent/Child`,
//! each with `cur/ new/ tmp/`, a parent without mail having none; INBOX in `INBOX/` beside
//! the folders), and files in `new/` (no flags yet).
//!
//! A message is written to `tmp/`, synced, given its date, and renamed into `cur/`, and `cur/`
//! is synced: a killed run leaves no half message in the folder, and the next run, which
//! finds by identity what arrived, completes it without duplicates. Maildir has no UIDs; as a
//! target, each folder gets mailferry's own (see [`super::maildir_uids`]), so that a mirror
//! changes flags by renaming, and deletes, exactly the files its UIDs name.
//!
//! Hand-written: the Maildir crates read and write the basic layout only, without Maildir++
//! folders, Dovecot's keyword file or the size in the name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, FixedOffset, Utc};

use crate::error::Error;
use crate::folders::FolderList;
use crate::identity::{self, Identity};
use crate::imap::mutf7;
use crate::index::{
    FlagSets, IndexedFolder, KeywordPolicy, KnownMessages, SourceMessage, SourceView, TargetCopy,
    TargetIndex,
};
use crate::store::identity_cache::IdentityCache;
use crate::store::maildir_uids::UidLists;
use crate::store::{
    Fetched, FolderRefused, MessageUid, Outcome, Outgoing, Source, Target, UidChange, Unreadable,
    local_folder_list,
};

/// The folder separator of Maildir++.
const SEPARATOR: char = '.';
/// Dovecot's file of keyword names, one per letter.
const KEYWORDS_FILE: &str = "dovecot-keywords";
/// Keywords a folder can name: the letters `a` to `z`.
const MAX_KEYWORDS: usize = 26;
/// The most of a file read for its header when indexing.
const MAX_HEADER: usize = 256 * 1024;
/// How much of a file indexing reads at a time, looking for the end of its header: most
/// headers are shorter.
const HEADER_CHUNK: usize = 4 * 1024;
/// System flags and their letters, in the order the letters are written (ASCII).
const SYSTEM_FLAGS: [(char, &str); 5] = [
    ('D', "\\Draft"),
    ('F', "\\Flagged"),
    ('R', "\\Answered"),
    ('S', "\\Seen"),
    ('T', "\\Deleted"),
];

/// A Maildir account: a root directory and its folders.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

/// One message file of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    path: PathBuf,
    /// The name before the `:2,` info: the message's id for as long as the file lives.
    base: String,
    /// The info letters after `:2,`.
    info: String,
    flags: Vec<String>,
    /// Whether the name is UTF-8 without line ends, so that its base names this file alone
    /// and fits a line of the UID list: only such a file gets a UID.
    plain: bool,
}

impl Maildir {
    /// The Maildir at `root` (not created until a folder is).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Maildir { root: root.into() }
    }

    /// The directory of a folder: INBOX is the root; another is `.Name` in it, or the nested
    /// `Parent/Child` when that exists. A name that would leave the root (it holds `/`; the
    /// names come from the source server) has none.
    fn dir(&self, folder: &str) -> Result<PathBuf, Error> {
        if folder.eq_ignore_ascii_case("INBOX") {
            // mbsync keeps INBOX in a folder of its own (its `Inbox` setting) beside the rest.
            let own = self.root.join("INBOX");
            let beside = !self.root.join("cur").is_dir() && own.join("cur").is_dir();
            return Ok(if beside { own } else { self.root.clone() });
        }
        if folder.contains(['/', '\0']) {
            return Err(Error::usage(format!(
                "folder {folder:?}: a Maildir folder name cannot hold '/'"
            )));
        }
        let components: Vec<&str> = folder.split(SEPARATOR).collect();
        let plain = components.iter().all(|c| !["", ".", ".."].contains(c));
        let nested = self.root.join(components.join("/"));
        Ok(if plain && nested.join("cur").is_dir() {
            nested
        } else {
            self.root.join(format!(".{}", mutf7::encode(folder)))
        })
    }

    fn failed(&self, path: &Path, err: io::Error) -> Error {
        Error::usage(format!("maildir {}: {err}", path.display()))
    }

    /// Every folder: INBOX (the root, or `INBOX/` in the nested layout), the Maildir++ folders
    /// (`.Name`), and nested ones (`Name/cur`, also below a directory that is no folder).
    fn list(&self) -> Result<FolderList, Error> {
        let mut names = vec!["INBOX".to_owned()];
        match fs::read_dir(&self.root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.failed(&self.root, e)),
            Ok(entries) => {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !entry.path().is_dir() {
                        continue;
                    }
                    match name.strip_prefix('.') {
                        Some(encoded)
                            if !encoded.is_empty()
                                && encoded != "."
                                && entry.path().join("cur").is_dir() =>
                        {
                            names
                                .push(mutf7::decode(encoded).unwrap_or_else(|| encoded.to_owned()));
                        }
                        Some(_) => {}
                        None if !["cur", "new", "tmp"].contains(&name.as_str()) => {
                            self.nested(&entry.path(), &name, &mut names);
                        }
                        None => {}
                    }
                }
            }
        }
        Ok(local_folder_list(names, SEPARATOR))
    }

    /// A nested folder (`Parent/Child`, a folder when it has `cur/`; mbsync leaves a parent
    /// that is no folder without one) and those below it, named with the separator.
    fn nested(&self, dir: &Path, name: &str, names: &mut Vec<String>) {
        if dir.join("cur").is_dir() {
            names.push(name.to_owned());
        }
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let child = entry.file_name().to_string_lossy().into_owned();
            if !["cur", "new", "tmp"].contains(&child.as_str())
                && !child.starts_with('.')
                && entry.path().is_dir()
            {
                self.nested(&entry.path(), &format!("{name}{SEPARATOR}{child}"), names);
            }
        }
    }

    /// The message files of a folder (`new/` then `cur/`), in name order, and the folder's
    /// keyword names they were read with; none when the folder does not exist.
    fn entries(&self, folder: &str) -> Result<(Vec<Entry>, Vec<Option<String>>), Error> {
        let dir = self.dir(folder)?;
        let keywords = self.keywords(&dir)?;
        let mut entries = Vec::new();
        for sub in ["new", "cur"] {
            let path = dir.join(sub);
            let listing = match fs::read_dir(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.failed(&path, e)),
                Ok(listing) => listing,
            };
            for entry in listing {
                let entry = entry.map_err(|e| self.failed(&path, e))?;
                let file_name = entry.file_name();
                let name = file_name.to_string_lossy();
                if name.starts_with('.') {
                    continue;
                }
                let (base, info) = name.split_once(":2,").unwrap_or((&name, ""));
                entries.push(Entry {
                    path: entry.path(),
                    base: base.to_owned(),
                    info: info.to_owned(),
                    flags: flags_of(info, &keywords),
                    plain: file_name.to_str().is_some() && !name.contains(['\n', '\r']),
                });
            }
        }
        entries.sort_by(|a, b| a.base.cmp(&b.base));
        Ok((entries, keywords))
    }

    /// What indexing needs of a message file: its identity from `cache` when recorded for a
    /// file of its size, else from its header (then recorded in `cache`). A name that is not
    /// [`plain`](Entry::plain) may stand for another file in the record, so such a file is
    /// always read.
    fn indexed(&self, entry: &Entry, cache: &mut IdentityCache) -> Result<Known, Error> {
        let failed = |e| self.failed(&entry.path, e);
        let metadata = fs::metadata(&entry.path).map_err(failed)?;
        let recorded = entry
            .plain
            .then(|| cache.get(&entry.base, metadata.len()))
            .flatten();
        if let Some(identity) = recorded {
            return Ok(Known {
                identity,
                size: metadata.len(),
                internal_date: date_of(&metadata),
            });
        }
        let head = read_head(&entry.path).map_err(failed)?;
        let identity = identity::identify(&head.header);
        if entry.plain {
            cache.learn(&entry.base, head.size, identity.clone());
        }
        Ok(Known {
            identity,
            size: head.size,
            internal_date: head.internal_date,
        })
    }

    /// The keyword names of a folder, by letter position.
    fn keywords(&self, dir: &Path) -> Result<Vec<Option<String>>, Error> {
        let path = dir.join(KEYWORDS_FILE);
        let text = match fs::read_to_string(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.failed(&path, e)),
            Ok(text) => text,
        };
        let mut keywords = vec![None; MAX_KEYWORDS];
        for line in text.lines() {
            if let Some((n, name)) = line.split_once(' ')
                && let Ok(n) = n.parse::<usize>()
                && n < MAX_KEYWORDS
                && !name.is_empty()
            {
                keywords[n] = Some(name.to_owned());
            }
        }
        Ok(keywords)
    }

    /// Creates a folder's directories (and marks a subfolder as one).
    fn create(&self, folder: &str) -> Result<PathBuf, Error> {
        let dir = self.dir(folder)?;
        let made = ["cur", "new", "tmp"]
            .iter()
            .try_for_each(|sub| fs::create_dir_all(dir.join(sub)))
            .and_then(|()| match dir == self.root {
                true => Ok(()),
                false => File::create(dir.join("maildirfolder")).map(drop),
            });
        made.map_err(|e| self.failed(&dir, e))?;
        Ok(dir)
    }

    /// Writes one message into `folder` under the base name `base`: `tmp/`, synced, dated,
    /// renamed into `cur/`. The caller syncs `cur/` once for a batch.
    fn store(&self, dir: &Path, outgoing: &Outgoing, base: &str, letters: &str) -> io::Result<()> {
        let tmp = dir.join("tmp").join(base);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let written = file
            .write_all(&outgoing.raw)
            .and_then(|()| file.sync_all())
            .and_then(|()| match outgoing.message.internal_date.get() {
                Some(date) => file.set_modified(SystemTime::from(date)),
                None => Ok(()),
            });
        if let Err(err) = written {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        fs::rename(&tmp, dir.join("cur").join(format!("{base}:2,{letters}")))
    }

    /// The info letters of each of these flag lists, adding the keywords the folder has no
    /// letter for yet to its keyword file: one read and at most one write of it. The caller
    /// holds the folder's [`lock`], as several writers may add keywords to it at once.
    fn letters<'a>(
        &self,
        dir: &Path,
        flags: impl Iterator<Item = &'a [String]>,
    ) -> io::Result<Vec<String>> {
        let mut keywords = self.keywords(dir).map_err(io::Error::other)?;
        keywords.resize(MAX_KEYWORDS, None);
        let known = keywords.clone();
        let letters = flags
            .map(|flags| letters_of(flags, &mut keywords))
            .collect();
        if keywords != known {
            write_keywords(dir, &keywords)?;
        }
        Ok(letters)
    }
}

/// Locks a folder's directory against the other writers (other workers of this run, another
/// mailferry) until the returned handle is dropped.
fn lock(dir: &Path) -> io::Result<File> {
    let folder = File::open(dir)?;
    folder.lock()?;
    Ok(folder)
}

/// Syncs a folder's `cur/` and `new/` (those it has), so that what was renamed or removed
/// there stays so.
fn sync_dirs(dir: &Path) -> io::Result<()> {
    ["cur", "new"]
        .iter()
        .try_for_each(|sub| match File::open(dir.join(sub)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            opened => opened?.sync_all(),
        })
}

/// Renames `from` to `to` unless `to` exists (a link, then an unlink), in which case `from`
/// stays as it is: a rename would replace another message of the same name (the same base
/// name twice, which only another program makes).
fn rename_unless_taken(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        linked => linked.and_then(|()| fs::remove_file(from)),
    }
}

/// Whether a folder exists as a Maildir folder: `cur/` or `new/` is there.
fn is_folder(dir: &Path) -> bool {
    dir.join("cur").is_dir() || dir.join("new").is_dir()
}

/// The info letters for `flags`, giving a keyword without a letter the first free one in
/// `keywords`; a keyword beyond the 26 letters is left out.
fn letters_of(flags: &[String], keywords: &mut [Option<String>]) -> String {
    let mut letters: Vec<char> = SYSTEM_FLAGS
        .iter()
        .filter(|(_, flag)| flags.iter().any(|f| f.eq_ignore_ascii_case(flag)))
        .map(|(letter, _)| *letter)
        .collect();
    for keyword in flags.iter().filter(|f| !f.starts_with('\\')) {
        let at = keywords
            .iter()
            .position(|k| k.as_ref() == Some(keyword))
            .or_else(|| {
                let free = keywords.iter().position(Option::is_none)?;
                keywords[free] = Some(keyword.clone());
                Some(free)
            });
        if let Some(at) = at {
            letters.push(char::from(b'a' + at as u8));
        }
    }
    letters.sort_unstable();
    letters.into_iter().collect()
}

/// A name no other writer picks: the time, the process, and a counter within it.
fn unique_name(size: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // The process and host stay for the run: looked up once, not for every message.
    static PROCESS_AND_HOST: OnceLock<(u32, String)> = OnceLock::new();
    let (pid, host) = PROCESS_AND_HOST.get_or_init(|| {
        let host = hostname().replace('/', "\\057").replace(':', "\\072");
        (std::process::id(), host)
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{pid}Q{}.{host},S={size}",
        now.as_secs(),
        now.subsec_micros(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The flags an info string (`DFRS` after `:2,`) stands for.
fn flags_of(info: &str, keywords: &[Option<String>]) -> Vec<String> {
    info.chars()
        .filter_map(|letter| match letter {
            'a'..='z' => keywords
                .get(usize::from(letter as u8 - b'a'))
                .cloned()
                .flatten(),
            _ => SYSTEM_FLAGS
                .iter()
                .find(|(l, _)| *l == letter)
                .map(|(_, flag)| (*flag).to_owned()),
        })
        .collect()
}

/// Rewrites a keyword file, atomically.
fn write_keywords(dir: &Path, keywords: &[Option<String>]) -> io::Result<()> {
    let text: String = keywords
        .iter()
        .enumerate()
        .filter_map(|(n, k)| Some(format!("{n} {}\n", k.as_ref()?)))
        .collect();
    let tmp = dir.join(format!("{KEYWORDS_FILE}.tmp"));
    fs::write(&tmp, text)?;
    fs::rename(tmp, dir.join(KEYWORDS_FILE))
}

/// What indexing knows of a message file.
struct Known {
    identity: Identity,
    size: u64,
    internal_date: Option<DateTime<FixedOffset>>,
}

/// What indexing reads of a message file: its header, size and date.
struct Head {
    header: Vec<u8>,
    size: u64,
    internal_date: Option<DateTime<FixedOffset>>,
}

/// The header of a message file (or its first [`MAX_HEADER`] bytes), read a few KiB at a time
/// up to the empty line that ends it: most headers fit in the first read, and a re-run that
/// indexes thousands of files must not read their bodies.
fn read_head(path: &Path) -> io::Result<Head> {
    let mut file = File::open(path)?;
    let metadata = file.metadata()?;
    let mut header = Vec::new();
    loop {
        let start = header.len();
        let want = HEADER_CHUNK.min(MAX_HEADER - start);
        header.resize(start + want, 0);
        let read = file.read(&mut header[start..])?;
        header.truncate(start + read);
        // The empty line may straddle the previous read: look from three bytes before it.
        let from = start.saturating_sub(3);
        if let Some(end) = header_end(&header[from..]) {
            header.truncate(from + end);
            break;
        }
        if read == 0 || header.len() >= MAX_HEADER {
            break;
        }
    }
    Ok(Head {
        header,
        size: metadata.len(),
        internal_date: date_of(&metadata),
    })
}

/// INTERNALDATE: the file's modification time.
fn date_of(metadata: &fs::Metadata) -> Option<DateTime<FixedOffset>> {
    let modified = metadata.modified().ok()?;
    Some(DateTime::<Utc>::from(modified).fixed_offset())
}

/// Where a header ends in `bytes`, just after the line end that precedes the empty line.
fn header_end(bytes: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', bytes)
        .map(|at| at + 1)
        .find(|&next| matches!(&bytes[next..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// A Maildir as a [`Source`]: read-only.
pub struct MaildirSource {
    maildir: Maildir,
}

impl MaildirSource {
    /// Reads the Maildir at `root`, which must exist.
    pub fn open(maildir: Maildir) -> Result<Self, Error> {
        if !maildir.root.is_dir() {
            return Err(Error::Usage {
                message: format!("maildir {}: no such directory", maildir.root.display()),
                hint: Some("give the directory that holds cur/, new/ and tmp/".into()),
            });
        }
        Ok(MaildirSource { maildir })
    }
}

impl Source for MaildirSource {
    fn folders(&mut self) -> Result<FolderList, Error> {
        self.maildir.list()
    }

    /// Takes the identities a backup mailferry wrote recorded (see [`IdentityCache`]), but
    /// never records any: a source is only read.
    fn index(&mut self, folder: &str) -> Result<Vec<SourceMessage>, Error> {
        let (entries, _) = self.maildir.entries(folder)?;
        let mut cache = IdentityCache::load(&self.maildir.dir(folder)?);
        let mut flag_sets = FlagSets::default();
        let mut index = Vec::with_capacity(entries.len());
        for (key, entry) in entries.iter().enumerate() {
            let known = self.maildir.indexed(entry, &mut cache)?;
            index.push(SourceMessage {
                key: key as u32,
                stable_id: Some(entry.base.clone()),
                identity: known.identity,
                identity_remembered: false,
                size: known.size,
                added: 0,
                flags: flag_sets.intern(entry.flags.clone()),
                internal_date: known.internal_date.into(),
            });
        }
        Ok(index)
    }

    /// A directory listing holds every message, and each file's base name stays while the
    /// file does: a message absent from it has left the folder (so a mirror may `--delete`
    /// its copy).
    fn index_known(
        &mut self,
        folders: &[String],
        _known: &[&KnownMessages],
    ) -> Result<Vec<IndexedFolder>, Error> {
        folders
            .iter()
            .map(|folder| {
                Ok(IndexedFolder {
                    messages: self.index(folder)?,
                    known: KnownMessages::new(),
                    view: SourceView {
                        uid_validity: None,
                        complete: true,
                    },
                })
            })
            .collect()
    }

    /// Another connection's index may have been taken: each message is found by its file's
    /// base name (its flags, and so its full name, may have changed since).
    fn fetch(
        &mut self,
        folder: &str,
        messages: Vec<Arc<SourceMessage>>,
        deliver: &mut dyn FnMut(Result<Fetched<'_>, Unreadable>) -> bool,
    ) -> Result<(), Error> {
        let (entries, _) = self.maildir.entries(folder)?;
        let by_base: HashMap<&str, &Path> = entries
            .iter()
            .map(|e| (e.base.as_str(), e.path.as_path()))
            .collect();
        for message in messages {
            let read = message
                .stable_id
                .as_deref()
                .and_then(|base| by_base.get(base))
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
                .and_then(fs::read);
            let delivered = match read {
                Ok(raw) => deliver(Ok(Fetched {
                    message,
                    raw: raw.into(),
                })),
                Err(e) => {
                    let reason = if e.kind() == io::ErrorKind::NotFound {
                        "deleted from the source during the run".to_owned()
                    } else {
                        format!("cannot read the file: {e}")
                    };
                    deliver(Err(Unreadable { message, reason }))
                }
            };
            if !delivered {
                break;
            }
        }
        Ok(())
    }
}

/// A Maildir as a [`Target`].
pub struct MaildirTarget {
    maildir: Maildir,
    uids: UidLists,
    /// Whether indexing may record UIDs (not in a dry run, which writes nothing).
    records: bool,
}

impl MaildirTarget {
    /// Writes into `maildir` (created with its first folder).
    pub fn open(maildir: Maildir) -> Self {
        MaildirTarget {
            maildir,
            uids: UidLists::default(),
            records: true,
        }
    }

    /// Indexes `maildir` for a dry run: files without a UID are numbered after
    /// the others without recording it, so nothing is written. Nothing may be changed through
    /// it.
    pub fn open_read_only(maildir: Maildir) -> Self {
        MaildirTarget {
            records: false,
            ..MaildirTarget::open(maildir)
        }
    }

    /// Indexes a folder, giving each file without a UID (written by another program, or by
    /// a run killed before it could record one) the next one; a file whose name is not
    /// [`plain`](Entry::plain) has none (UID 0, which names nothing). A folder that does not
    /// exist holds nothing, and is not made; a read-only target records nothing. The folder
    /// is locked while its UIDs are read and given, not while the headers are. Identities
    /// come from the record beside the folder, and only the files it lacks are read; the
    /// record is updated for the next run (see [`IdentityCache`]), except in a dry run.
    fn index_folder(&mut self, folder: &str) -> Result<TargetIndex, Error> {
        let mut index = TargetIndex::default();
        let dir = self.maildir.dir(folder)?;
        if !is_folder(&dir) {
            return Ok(index);
        }
        let failed = |e| self.maildir.failed(&dir, e);
        let locked = lock(&dir).map_err(failed)?;
        let mut flag_sets = FlagSets::default();
        let (entries, keywords) = self.maildir.entries(folder)?;
        let list = match self.records {
            true => Some(self.uids.current_or_new(&dir).map_err(failed)?),
            false => self.uids.current(&dir).map_err(failed)?,
        };
        let uids: Vec<u32> = match list {
            Some(list) => {
                let unlisted: Vec<String> = entries
                    .iter()
                    .filter(|entry| entry.plain && list.uid_of(&entry.base).is_none())
                    .map(|entry| entry.base.clone())
                    .collect();
                let mut fresh = match self.records {
                    true => list.assign(&unlisted).map_err(failed)?,
                    false => list.next_uids(unlisted.len()),
                }
                .into_iter();
                index.uid_validity = Some(list.validity());
                entries
                    .iter()
                    .map(|entry| match entry.plain {
                        true => list.uid_of(&entry.base).or_else(|| fresh.next()),
                        false => Some(0),
                    })
                    .collect::<Option<_>>()
                    .expect("a UID for every plain file")
            }
            // A dry run's folder that mailferry never wrote to: no UIDVALIDITY, so nothing
            // will be asked of it by these.
            None => (1..).take(entries.len()).collect(),
        };
        drop(locked);
        let mut cache = IdentityCache::load(&dir);
        let full = keywords.iter().flatten().count() >= MAX_KEYWORDS;
        index.keywords = if full {
            KeywordPolicy::Only(keywords.into_iter().flatten().collect())
        } else {
            KeywordPolicy::Any
        };
        for (entry, uid) in entries.into_iter().zip(uids) {
            let known = self.maildir.indexed(&entry, &mut cache)?;
            index.add(
                known.identity,
                TargetCopy {
                    uid,
                    size: known.size,
                    flags: flag_sets.intern(entry.flags),
                    internal_date: known.internal_date,
                },
            );
        }
        if self.records {
            cache.save();
        }
        Ok(index)
    }

    /// Applies `change` to the file of each of these UIDs that is still there, under the
    /// folder's lock, when the folder is still under `uid_validity`; otherwise changes
    /// nothing. A file another program renamed meanwhile (Dovecot, serving the backup, marks
    /// a message read) is found again by its base name; one it removed is gone already.
    fn change_by_uid(
        &mut self,
        folder: &str,
        uid_validity: u32,
        uids: &[u32],
        mut change: impl FnMut(&Maildir, &Path, &Entry) -> io::Result<()>,
    ) -> Result<UidChange, Error> {
        let dir = self.maildir.dir(folder)?;
        if !is_folder(&dir) {
            return Ok(UidChange::UidValidityChanged);
        }
        let failed = |e| self.maildir.failed(&dir, e);
        let _locked = lock(&dir).map_err(failed)?;
        let bases: HashSet<String> = match self.uids.current(&dir).map_err(failed)? {
            Some(list) if list.validity() == uid_validity => {
                list.bases_of(uids).map(str::to_owned).collect()
            }
            _ => return Ok(UidChange::UidValidityChanged),
        };
        let (entries, _) = self.maildir.entries(folder)?;
        let chosen = entries
            .into_iter()
            .filter(|entry| entry.plain && bases.contains(&entry.base));
        for entry in chosen {
            let changed = match change(&self.maildir, &dir, &entry) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let (now, _) = self.maildir.entries(folder)?;
                    match now.into_iter().find(|now| now.base == entry.base) {
                        Some(renamed) => change(&self.maildir, &dir, &renamed),
                        None => Ok(()),
                    }
                }
                changed => changed,
            };
            changed.map_err(|e| self.maildir.failed(&entry.path, e))?;
        }
        sync_dirs(&dir).map_err(failed)?;
        Ok(UidChange::Applied)
    }
}

impl Target for MaildirTarget {
    fn folders(&mut self) -> Result<FolderList, Error> {
        self.maildir.list()
    }

    fn create_and_index(
        &mut self,
        create: &[String],
        folders: &[String],
    ) -> Result<Vec<Result<TargetIndex, FolderRefused>>, Error> {
        let mut refused: BTreeMap<&str, String> = BTreeMap::new();
        for folder in create {
            if let Err(e) = self.maildir.create(folder) {
                refused.insert(folder, e.to_string());
            }
        }
        folders
            .iter()
            .map(|folder| match refused.get(folder.as_str()) {
                Some(reason) => Ok(Err(FolderRefused(format!(
                    "cannot create the folder ({reason})"
                )))),
                None => match self.maildir.dir(folder) {
                    Err(e) => Ok(Err(FolderRefused(e.to_string()))),
                    Ok(_) => self.index_folder(folder).map(Ok),
                },
            })
            .collect()
    }

    fn index(&mut self, folder: &str) -> Result<TargetIndex, Error> {
        self.index_folder(folder)
    }

    /// Renames each file for its new flags (a file in `new/` moves to `cur/`), as an IMAP
    /// server changes the flags of every message named, whoever stored it; info letters
    /// mailferry does not know (`P`assed, a keyword the folder has no name for) stay. A
    /// file is never renamed over another (see [`rename_unless_taken`]).
    fn change_flags(
        &mut self,
        folder: &str,
        uid_validity: u32,
        uids: &[u32],
        add: &[String],
        remove: &[String],
    ) -> Result<UidChange, Error> {
        self.change_by_uid(folder, uid_validity, uids, |maildir, dir, entry| {
            let mut flags = entry.flags.clone();
            flags.retain(|flag| !remove.iter().any(|r| r.eq_ignore_ascii_case(flag)));
            for flag in add {
                if !flags.iter().any(|f| f.eq_ignore_ascii_case(flag)) {
                    flags.push(flag.clone());
                }
            }
            let mut letters: Vec<char> = maildir
                .letters(dir, std::iter::once(&flags[..]))?
                .concat()
                .chars()
                .collect();
            let keywords = maildir.keywords(dir).map_err(io::Error::other)?;
            let unknown = |letter: &char| flags_of(&letter.to_string(), &keywords).is_empty();
            letters.extend(entry.info.chars().filter(unknown));
            letters.sort_unstable();
            letters.dedup();
            let info: String = letters.into_iter().collect();
            let renamed = dir.join("cur").join(format!("{}:2,{info}", entry.base));
            match renamed == entry.path {
                true => Ok(()),
                false => rename_unless_taken(&entry.path, &renamed),
            }
        })
    }

    fn delete(
        &mut self,
        folder: &str,
        uid_validity: u32,
        uids: &[u32],
    ) -> Result<UidChange, Error> {
        self.change_by_uid(folder, uid_validity, uids, |_, _, entry| {
            fs::remove_file(&entry.path)
        })
    }

    /// Each message is its own file: writers never meet.
    fn concurrent_writers(&self) -> bool {
        true
    }

    /// The batch's keywords and UIDs are recorded under the folder's lock, before its files
    /// are written (outside it, so that writers overlap): a UID whose file a killed run never
    /// wrote names nothing, and is never given again.
    fn append(&mut self, folder: &str, batch: &[Outgoing]) -> Result<Vec<Outcome>, Error> {
        let dir = self.maildir.create(folder)?;
        let cannot_write = |e: io::Error| format!("cannot write it to {}: {e}", dir.display());
        let bases: Vec<String> = batch
            .iter()
            .map(|outgoing| unique_name(outgoing.raw.len()))
            .collect();
        let reserved = lock(&dir).and_then(|_locked| {
            let flags = batch.iter().map(|outgoing| &outgoing.message.flags[..]);
            let letters = self.maildir.letters(&dir, flags)?;
            let uids = self.uids.current_or_new(&dir)?;
            let uid_validity = uids.validity();
            let uids = uids.assign(&bases)?;
            Ok((letters, uid_validity, uids))
        });
        let (letters, uid_validity, uids) = match reserved {
            Ok(reserved) => reserved,
            Err(e) => return Ok(vec![Err(cannot_write(e)); batch.len()]),
        };
        let outcomes: Vec<Outcome> = batch
            .iter()
            .zip(bases.iter().zip(letters).zip(uids))
            .map(|(outgoing, ((base, letters), uid))| {
                self.maildir
                    .store(&dir, outgoing, base, &letters)
                    .map(|()| Some(MessageUid { uid_validity, uid }))
                    .map_err(cannot_write)
            })
            .collect();
        // The renames must reach the disk before the copies count as made.
        File::open(dir.join("cur"))
            .and_then(|d| d.sync_all())
            .map_err(|e| self.maildir.failed(&dir, e))?;
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Flags;
    use crate::store::identity_cache;
    use std::os::unix::ffi::OsStrExt;

    fn outgoing(raw: &[u8], flags: &[&str]) -> Outgoing {
        let mut message = SourceMessage::with_id(1, "");
        message.identity = identity::identify(raw);
        message.size = raw.len() as u64;
        message.flags = Flags::from(flags.iter().map(|f| f.to_string()).collect::<Vec<_>>());
        message.internal_date = DateTime::parse_from_rfc3339("2020-02-03T04:05:06+01:00")
            .ok()
            .into();
        Outgoing {
            message: Arc::new(message),
            raw: raw.to_vec(),
        }
    }

    #[test]
    fn info_letters_and_keywords_read_back_as_flags() {
        let keywords = vec![Some("$Label1".to_owned()), None, Some("work".to_owned())];
        assert_eq!(
            flags_of("FSac", &keywords),
            ["\\Flagged", "\\Seen", "$Label1", "work"]
        );
        assert!(flags_of("b", &keywords).is_empty());
    }

    #[test]
    fn what_is_written_reads_back_byte_for_byte_with_flags_keywords_and_date() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = Maildir::new(dir.path().join("backup"));
        let mut target = MaildirTarget::open(maildir.clone());
        let raw = b"Message-ID: <a@x>\r\nSubject: hi\r\n\r\nbody\r\n";
        let folders = ["INBOX".to_owned(), "Archive.2020".to_owned()];
        let indexes = target.create_and_index(&[], &folders).unwrap();
        assert!(indexes.iter().all(|i| {
            i.as_ref()
                .is_ok_and(|i| i.count(&identity::identify(raw)) == 0)
        }));
        for folder in &folders {
            let outcomes = target
                .append(
                    folder,
                    &[outgoing(raw, &["\\Seen", "\\Answered", "$Label1"])],
                )
                .unwrap();
            assert!(
                matches!(outcomes[..], [Ok(Some(MessageUid { uid: 1, .. }))]),
                "{outcomes:?}"
            );
        }
        assert!(
            dir.path()
                .join("backup/.Archive.2020/maildirfolder")
                .exists()
        );
        assert!(dir.path().join("backup/cur").is_dir());
        let listed: Vec<String> = target
            .folders()
            .unwrap()
            .folders
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(listed, ["Archive.2020", "INBOX"]);

        let mut source = MaildirSource::open(maildir).unwrap();
        for folder in &folders {
            let index = source.index(folder).unwrap();
            assert_eq!(index.len(), 1);
            let message = &index[0];
            assert_eq!(message.identity, identity::identify(raw));
            assert_eq!(message.size, raw.len() as u64);
            assert_eq!(*message.flags, ["\\Answered", "\\Seen", "$Label1"]);
            assert_eq!(
                message.internal_date.get().unwrap().timestamp(),
                DateTime::parse_from_rfc3339("2020-02-03T04:05:06+01:00")
                    .unwrap()
                    .timestamp()
            );
            let mut fetched = Vec::new();
            source
                .fetch(
                    folder,
                    index.into_iter().map(Arc::new).collect(),
                    &mut |f| {
                        fetched.push(f.unwrap().raw.into_owned());
                        true
                    },
                )
                .unwrap();
            assert_eq!(fetched, [raw.to_vec()]);
        }
        let name = fs::read_dir(dir.path().join("backup/cur"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name();
        let name = name.to_string_lossy();
        assert!(name.ends_with(&format!(",S={}:2,RSa", raw.len())), "{name}");
        assert_eq!(
            fs::read_to_string(dir.path().join("backup/dovecot-keywords")).unwrap(),
            "0 $Label1\n"
        );
    }

    #[test]
    fn indexing_reads_a_long_header_to_its_end_and_no_body() {
        let dir = tempfile::tempdir().unwrap();
        // The empty line straddles the first read, and the body looks like a header.
        let mut header = format!("Subject: {}\r\n", "s".repeat(HEADER_CHUNK)).into_bytes();
        header.extend_from_slice(b"Message-ID: <long@x>\r\n");
        header.resize(2 * HEADER_CHUNK - 3, b'x');
        header.extend_from_slice(b"\r\n");
        let mut raw = header.clone();
        raw.extend_from_slice(b"\r\nMessage-ID: <body@x>\r\n\r\n");
        raw.extend(std::iter::repeat_n(b'b', 100_000));
        let path = dir.path().join("1.M1P1.h,S=1");
        fs::write(&path, &raw).unwrap();
        let head = read_head(&path).unwrap();
        assert!(
            head.header == header,
            "read {} bytes as the header, not its {}",
            head.header.len(),
            header.len()
        );
        assert_eq!(head.size, raw.len() as u64);
        assert_eq!(
            identity::identify(&head.header),
            identity::identify(b"Message-ID: <long@x>\r\n\r\n")
        );
        assert_eq!(
            head.internal_date.map(|d| d.timestamp()),
            modified_secs(&path)
        );
    }

    fn modified_secs(path: &Path) -> Option<i64> {
        let modified = fs::metadata(path).ok()?.modified().ok()?;
        Some(DateTime::<Utc>::from(modified).timestamp())
    }

    /// The file of the INBOX message whose header names `id`.
    fn file_of(dir: &Path, id: &str) -> PathBuf {
        fs::read_dir(dir.join("cur"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                fs::read(p)
                    .unwrap()
                    .windows(id.len())
                    .any(|w| w == id.as_bytes())
            })
            .unwrap()
    }

    #[test]
    fn a_re_run_takes_identities_from_the_record_and_reads_a_file_whose_size_changed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("backup");
        let mut target = MaildirTarget::open(Maildir::new(&root));
        let inbox = ["INBOX".to_owned()];
        target.create_and_index(&[], &inbox).unwrap();
        let (a, b) = (b"Message-ID: <a@x>\n\none\n", b"Message-ID: <b@x>\n\ntwo\n");
        target
            .append("INBOX", &[outgoing(a, &[]), outgoing(b, &["\\Seen"])])
            .unwrap();
        let count = |target: &mut MaildirTarget, raw: &[u8]| {
            target
                .index("INBOX")
                .unwrap()
                .count(&identity::identify(raw))
        };
        assert_eq!(count(&mut target, a), 1);
        assert!(root.join(identity_cache::FILE_NAME).is_file());

        // Same name and size: the record answers, the file is not opened.
        let same_size = b"Message-ID: <c@x>\n\none\n";
        fs::write(file_of(&root, "<a@x>"), same_size).unwrap();
        // Another size: the file is read again.
        let longer = b"Message-ID: <bb@x>\n\ntwo\n";
        fs::write(file_of(&root, "<b@x>"), longer).unwrap();
        assert_eq!(count(&mut target, a), 1);
        assert_eq!(count(&mut target, same_size), 0);
        assert_eq!(count(&mut target, b), 0);
        assert_eq!(count(&mut target, longer), 1);
    }

    #[test]
    fn a_source_reads_the_record_but_never_writes_one() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        fs::write(
            dir.path().join("cur/1.M1P1.h:2,S"),
            b"Message-ID: <r@x>\n\nhi\n",
        )
        .unwrap();
        let mut source = MaildirSource::open(Maildir::new(dir.path())).unwrap();
        assert_eq!(source.index("INBOX").unwrap().len(), 1);
        assert!(!dir.path().join(identity_cache::FILE_NAME).exists());
    }

    #[test]
    fn uids_name_the_same_files_across_targets_and_change_only_those_under_their_validity() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = Maildir::new(dir.path().join("backup"));
        let mut target = MaildirTarget::open(maildir.clone());
        let first = b"Message-ID: <1@x>\r\n\r\none\r\n";
        let second = b"Message-ID: <2@x>\r\n\r\ntwo\r\n";
        let outcomes = target
            .append(
                "INBOX",
                &[outgoing(first, &["\\Seen"]), outgoing(second, &[])],
            )
            .unwrap();
        let validity = outcomes[0].clone().unwrap().unwrap().uid_validity;
        let foreign = dir.path().join("backup/new/1.other.host");
        fs::write(&foreign, "Message-ID: <3@x>\r\n\r\nthree\r\n").unwrap();
        let uids = |target: &mut MaildirTarget| {
            let index = target.index("INBOX").unwrap();
            assert_eq!(index.uid_validity, Some(validity));
            let mut uids: Vec<(u32, Vec<String>)> = index
                .identities()
                .flat_map(|id| index.copies(id))
                .map(|copy| (copy.uid, copy.flags.to_vec()))
                .collect();
            uids.sort();
            uids
        };
        let seen = || vec!["\\Seen".to_owned()];
        let before = [(1, seen()), (2, vec![]), (3, vec![])];
        let list = dir.path().join("backup/mailferry-uidlist");
        let recorded = fs::read(&list).unwrap();
        assert_eq!(
            uids(&mut MaildirTarget::open_read_only(maildir.clone())),
            before
        );
        assert_eq!(
            fs::read(&list).unwrap(),
            recorded,
            "a dry run records nothing"
        );
        assert_eq!(uids(&mut target), before);
        assert_eq!(uids(&mut MaildirTarget::open(maildir.clone())), before);

        let mut other = MaildirTarget::open(maildir.clone());
        let stale = other.delete("INBOX", validity + 1, &[1, 2, 3]).unwrap();
        assert_eq!(stale, UidChange::UidValidityChanged);
        let changed = other
            .change_flags("INBOX", validity, &[1, 3], &seen(), &["\\SEEN".to_owned()])
            .unwrap();
        assert_eq!(changed, UidChange::Applied);
        assert_eq!(
            other.delete("INBOX", validity, &[2]).unwrap(),
            UidChange::Applied
        );
        assert_eq!(uids(&mut target), [(1, seen()), (3, seen())]);
        assert!(dir.path().join("backup/cur/1.other.host:2,S").exists());
    }

    #[test]
    fn a_flag_change_keeps_unknown_letters_and_never_renames_over_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = Maildir::new(dir.path().join("m"));
        let mut target = MaildirTarget::open(maildir.clone());
        target.create_and_index(&["INBOX".to_owned()], &[]).unwrap();
        let cur = dir.path().join("m/cur");
        fs::write(cur.join("1.a.host:2,PS"), "Message-ID: <a@x>\r\n\r\na\r\n").unwrap();
        // The same message twice under one base name: renaming one must not replace the other.
        fs::write(cur.join("2.b.host:2,"), "Message-ID: <b@x>\r\n\r\nb\r\n").unwrap();
        fs::write(cur.join("2.b.host:2,F"), "Message-ID: <b@x>\r\n\r\nb\r\n").unwrap();
        // A name that is not UTF-8: no UID, so never named.
        let odd = std::ffi::OsStr::from_bytes(b"3.\xe9.host:2,");
        fs::write(cur.join(odd), "Message-ID: <c@x>\r\n\r\nc\r\n").unwrap();
        let index = target.index("INBOX").unwrap();
        let validity = index.uid_validity.unwrap();
        let uid_of = |id: &str| {
            let copies = index.copies(&identity::identify(
                format!("Message-ID: <{id}@x>\r\n\r\n").as_bytes(),
            ));
            copies.iter().map(|c| c.uid).collect::<Vec<u32>>()
        };
        assert_eq!(uid_of("c"), [0]);
        let mut all: Vec<u32> = ["a", "b"].iter().flat_map(|id| uid_of(id)).collect();
        all.push(0);
        let seen = ["\\Seen".to_owned()];
        let flagged = ["\\Flagged".to_owned()];
        target
            .change_flags("INBOX", validity, &all, &flagged, &seen)
            .unwrap();
        let mut names: Vec<Vec<u8>> = fs::read_dir(&cur)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_encoded_bytes())
            .collect();
        names.sort();
        let expected: [&[u8]; 4] = [
            b"1.a.host:2,FP",
            b"2.b.host:2,",
            b"2.b.host:2,F",
            b"3.\xe9.host:2,",
        ];
        assert_eq!(names, expected);
    }

    #[test]
    fn a_file_renamed_by_another_program_meanwhile_is_changed_under_its_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut target = MaildirTarget::open(Maildir::new(dir.path().join("m")));
        let outcomes = target
            .append("INBOX", &[outgoing(b"Message-ID: <a@x>\r\n\r\na\r\n", &[])])
            .unwrap();
        let MessageUid { uid_validity, uid } = outcomes[0].clone().unwrap().unwrap();
        let mut seen = Vec::new();
        target
            .change_by_uid("INBOX", uid_validity, &[uid], |_, _, entry| {
                seen.push(entry.info.clone());
                if seen.len() == 1 {
                    // Dovecot marks it read just before mailferry gets to it.
                    let read = format!("{}S", entry.path.display());
                    fs::rename(&entry.path, read).unwrap();
                    return Err(io::ErrorKind::NotFound.into());
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, ["", "S"]);
    }

    #[test]
    fn indexing_a_folder_that_is_not_there_makes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut target = MaildirTarget::open(Maildir::new(dir.path().join("m")));
        let indexes = target
            .create_and_index(&[], &["INBOX".to_owned(), "Sent".to_owned()])
            .unwrap();
        assert!(
            indexes
                .iter()
                .all(|i| i.as_ref().is_ok_and(|i| i.uid_validity.is_none()))
        );
        assert!(!dir.path().join("m").exists());
    }

    #[test]
    fn a_folder_name_that_would_leave_the_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut target = MaildirTarget::open(Maildir::new(dir.path().join("m")));
        let indexes = target
            .create_and_index(&[], &["../../escaped".to_owned()])
            .unwrap();
        assert!(matches!(&indexes[0], Err(FolderRefused(reason)) if reason.contains("'/'")));
        assert!(!dir.path().join("escaped").exists());
        assert!(target.append("../x", &[]).is_err());
    }

    #[test]
    fn nested_folders_and_new_mail_are_read_too() {
        let dir = tempfile::tempdir().unwrap();
        for sub in [
            "cur",
            "new",
            "tmp",
            "Lists/cur",
            "Lists/new",
            "Lists/Rust/cur",
        ] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        fs::write(
            dir.path().join("Lists/Rust/cur/1.M1P1.h:2,S"),
            b"Message-ID: <r@x>\n\nhi\n",
        )
        .unwrap();
        fs::write(dir.path().join("new/2.M2P2.h"), b"Subject: new\n\nhi\n").unwrap();
        let mut source = MaildirSource::open(Maildir::new(dir.path())).unwrap();
        let names: Vec<String> = source
            .folders()
            .unwrap()
            .folders
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["INBOX", "Lists", "Lists.Rust"]);
        let rust = source.index("Lists.Rust").unwrap();
        assert_eq!(rust.len(), 1);
        assert_eq!(*rust[0].flags, ["\\Seen"]);
        let inbox = source.index("INBOX").unwrap();
        assert_eq!(inbox.len(), 1);
        assert!(inbox[0].flags.is_empty());
    }

    #[test]
    fn mbsyncs_inbox_beside_the_folders_and_parents_without_mail_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for sub in [
            "INBOX/cur",
            "INBOX/new",
            "Archive/2020/cur",
            "Archive/2020/new",
        ] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let message = b"Message-ID: <a@x>\n\nhi\n";
        fs::write(dir.path().join("INBOX/cur/1.M1P1.h,U=1:2,S"), message).unwrap();
        fs::write(dir.path().join("Archive/2020/cur/2.M1P1.h,U=1:2,"), message).unwrap();
        let mut source = MaildirSource::open(Maildir::new(dir.path())).unwrap();
        let folders = source.folders().unwrap().folders;
        let names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["Archive.2020", "INBOX"]);
        assert_eq!(source.index("INBOX").unwrap().len(), 1);
        assert_eq!(source.index("Archive.2020").unwrap().len(), 1);
    }
}
