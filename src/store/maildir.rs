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
//! finds by identity what arrived, completes it without duplicates. Maildir has no UIDs (and
//! mailferry does not write Dovecot's `dovecot-uidlist`), so a copy's place is not reported:
//! verification indexes the folder, and a mirror never deletes from a Maildir target.
//!
//! Hand-written: the Maildir crates read and write the basic layout only, without Maildir++
//! folders, Dovecot's keyword file or the size in the name.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, FixedOffset, Utc};

use crate::error::Error;
use crate::folders::FolderList;
use crate::identity;
use crate::imap::mutf7;
use crate::index::{
    FlagSets, IndexedFolder, KeywordPolicy, KnownMessages, SourceMessage, SourceView, TargetCopy,
    TargetIndex,
};
use crate::store::{
    Fetched, FolderRefused, Outcome, Outgoing, Source, Target, Unreadable, local_folder_list,
};

/// The folder separator of Maildir++.
const SEPARATOR: char = '.';
/// Dovecot's file of keyword names, one per letter.
const KEYWORDS_FILE: &str = "dovecot-keywords";
/// Keywords a folder can name: the letters `a` to `z`.
const MAX_KEYWORDS: usize = 26;
/// The most of a file read for its header when indexing.
const MAX_HEADER: usize = 256 * 1024;
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
    flags: Vec<String>,
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
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let (base, info) = name.split_once(":2,").unwrap_or((&name, ""));
                entries.push(Entry {
                    path: entry.path(),
                    base: base.to_owned(),
                    flags: flags_of(info, &keywords),
                });
            }
        }
        entries.sort_by(|a, b| a.base.cmp(&b.base));
        Ok((entries, keywords))
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

    /// Writes one message into `folder`: `tmp/`, synced, dated, renamed into `cur/`. The
    /// caller syncs `cur/` once for a batch.
    fn store(&self, dir: &Path, outgoing: &Outgoing, letters: &str) -> io::Result<()> {
        let base = unique_name(outgoing.raw.len());
        let tmp = dir.join("tmp").join(&base);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let written = file
            .write_all(&outgoing.raw)
            .and_then(|()| file.sync_all())
            .and_then(|()| match outgoing.message.internal_date {
                Some(date) => file.set_modified(SystemTime::from(date)),
                None => Ok(()),
            });
        if let Err(err) = written {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        fs::rename(&tmp, dir.join("cur").join(format!("{base}:2,{letters}")))
    }

    /// The info letters of each message of `batch`, adding the keywords the folder has no
    /// letter for yet to its keyword file: one read and at most one write of it per batch,
    /// under a lock on the folder, as several writers may add keywords to it at once.
    fn letters(&self, dir: &Path, batch: &[Outgoing]) -> io::Result<Vec<String>> {
        let folder = File::open(dir)?;
        folder.lock()?;
        let mut keywords = self.keywords(dir).map_err(io::Error::other)?;
        keywords.resize(MAX_KEYWORDS, None);
        let known = keywords.clone();
        let letters = batch
            .iter()
            .map(|outgoing| letters_of(&outgoing.message.flags, &mut keywords))
            .collect();
        if keywords != known {
            write_keywords(dir, &keywords)?;
        }
        Ok(letters)
    }
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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = hostname().replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{host},S={size}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
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

/// The header of a message file (or all of it, when shorter than [`MAX_HEADER`]).
fn read_header(path: &Path) -> io::Result<(Vec<u8>, u64)> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut header = Vec::new();
    file.take(MAX_HEADER as u64).read_to_end(&mut header)?;
    if let Some(end) = header
        .windows(2)
        .position(|w| w == b"\n\n")
        .or_else(|| header.windows(4).position(|w| w == b"\r\n\r\n"))
    {
        header.truncate(end + 2);
    }
    Ok((header, size))
}

fn modified(path: &Path) -> Option<DateTime<FixedOffset>> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    Some(DateTime::<Utc>::from(modified).fixed_offset())
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

    fn index(&mut self, folder: &str) -> Result<Vec<SourceMessage>, Error> {
        let (entries, _) = self.maildir.entries(folder)?;
        let mut flag_sets = FlagSets::default();
        let mut index = Vec::with_capacity(entries.len());
        for (key, entry) in entries.iter().enumerate() {
            let (header, size) =
                read_header(&entry.path).map_err(|e| self.maildir.failed(&entry.path, e))?;
            index.push(SourceMessage {
                key: key as u32,
                stable_id: Some(entry.base.clone()),
                identity: identity::identify(&header),
                identity_remembered: false,
                size,
                added: 0,
                flags: flag_sets.intern(entry.flags.clone()),
                internal_date: modified(&entry.path),
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
}

impl MaildirTarget {
    /// Writes into the Maildir at `root` (created with its first folder).
    pub fn open(maildir: Maildir) -> Self {
        MaildirTarget { maildir }
    }

    fn index_folder(&self, folder: &str) -> Result<TargetIndex, Error> {
        let mut index = TargetIndex::default();
        let mut flag_sets = FlagSets::default();
        let (entries, keywords) = self.maildir.entries(folder)?;
        let full = keywords.iter().flatten().count() >= MAX_KEYWORDS;
        index.keywords = if full {
            KeywordPolicy::Only(keywords.into_iter().flatten().collect())
        } else {
            KeywordPolicy::Any
        };
        for (n, entry) in entries.into_iter().enumerate() {
            let (header, size) =
                read_header(&entry.path).map_err(|e| self.maildir.failed(&entry.path, e))?;
            index.add(
                identity::identify(&header),
                TargetCopy {
                    // Positions, not UIDs: nothing is asked of the folder by them, as it has
                    // no UIDVALIDITY.
                    uid: n as u32 + 1,
                    size,
                    flags: flag_sets.intern(entry.flags),
                    internal_date: modified(&entry.path),
                },
            );
        }
        Ok(index)
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
        for folder in create.iter().chain(folders) {
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
                None => self.index_folder(folder).map(Ok),
            })
            .collect()
    }

    fn index(&mut self, folder: &str) -> Result<TargetIndex, Error> {
        self.index_folder(folder)
    }

    /// Each message is its own file: writers never meet.
    fn concurrent_writers(&self) -> bool {
        true
    }

    fn append(&mut self, folder: &str, batch: &[Outgoing]) -> Result<Vec<Outcome>, Error> {
        let dir = self.maildir.create(folder)?;
        let cannot_write = |e: io::Error| format!("cannot write it to {}: {e}", dir.display());
        let letters = match self.maildir.letters(&dir, batch) {
            Ok(letters) => letters,
            Err(e) => return Ok(vec![Err(cannot_write(e)); batch.len()]),
        };
        let outcomes: Vec<Outcome> = batch
            .iter()
            .zip(letters)
            .map(|(outgoing, letters)| {
                self.maildir
                    .store(&dir, outgoing, &letters)
                    .map(|()| None)
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

    fn outgoing(raw: &[u8], flags: &[&str]) -> Outgoing {
        let mut message = SourceMessage::with_id(1, "");
        message.identity = identity::identify(raw);
        message.size = raw.len() as u64;
        message.flags = Flags::from(flags.iter().map(|f| f.to_string()).collect::<Vec<_>>());
        message.internal_date = DateTime::parse_from_rfc3339("2020-02-03T04:05:06+01:00").ok();
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
            assert_eq!(outcomes, [Ok(None)]);
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
                message.internal_date.unwrap().timestamp(),
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
