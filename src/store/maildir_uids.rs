//! The UIDs mailferry gives the messages of a Maildir folder it writes to, kept in the
//! folder's `mailferry-uidlist` file, so that a mirror into a Maildir changes the flags of,
//! and `--delete`s, exactly the copies it made, as it does on an IMAP server.
//!
//! Maildir has no UIDs of its own. Dovecot's `dovecot-uidlist` belongs to Dovecot, which
//! rewrites it under a locking protocol of its own, and a Dovecot serving the backup must stay
//! free to; so mailferry keeps a file of its own beside it, which Dovecot ignores:
//!
//! ```text
//! mailferry-uidlist 1 V1765080000
//! 1 1765080000.M123P45Q0.host,S=2048
//! ```
//!
//! The first line gives the folder's UIDVALIDITY (the time the file was made); each other
//! line gives a message file's base name (its name before `:2,`, which stays while the file
//! lives) its UID. Lines are only ever appended and UIDs only grow, so a line whose file is
//! gone names nothing and its UID is never given again. A folder whose file was removed gets
//! a new one under a new UIDVALIDITY, so the records a mirror kept name nothing there. The
//! caller holds the folder's lock around every use.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The file's name in a folder's directory.
const FILE_NAME: &str = "mailferry-uidlist";
/// The start of its first line, before the UIDVALIDITY.
const HEADER: &str = "mailferry-uidlist 1 V";

/// One folder's UIDs, as far as its file has been read.
#[derive(Debug)]
pub(super) struct UidList {
    path: PathBuf,
    validity: u32,
    next: u32,
    by_base: HashMap<String, u32>,
    /// The file read (device and inode) and how many bytes of it.
    file: (u64, u64),
    read: u64,
    /// The file ends inside a line, which a writer killed in the middle of it left (writers
    /// hold the folder's lock, so no live one is writing): the next append ends it first.
    unfinished: bool,
}

impl UidList {
    /// The folder's UIDVALIDITY.
    pub(super) fn validity(&self) -> u32 {
        self.validity
    }

    /// The UID of the message file with this base name, if it has one.
    pub(super) fn uid_of(&self, base: &str) -> Option<u32> {
        self.by_base.get(base).copied()
    }

    /// The base names these UIDs were given (every one, should a damaged list have given a
    /// UID twice: the caller then finds no single file for it by identity either).
    pub(super) fn bases_of(&self, uids: &[u32]) -> impl Iterator<Item = &str> {
        let wanted: HashSet<u32> = uids.iter().copied().collect();
        self.by_base
            .iter()
            .filter(move |(_, uid)| wanted.contains(uid))
            .map(|(base, _)| base.as_str())
    }

    /// The UIDs the next `count` files would get, without giving them.
    pub(super) fn next_uids(&self, count: usize) -> Vec<u32> {
        (self.next..).take(count).collect()
    }

    /// Gives each of these base names the next UID, on disk (synced) before they are
    /// returned: a copy's UID is reported only once no later run can give it to another.
    pub(super) fn assign(&mut self, bases: &[String]) -> io::Result<Vec<u32>> {
        if bases.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.next;
        let last = u32::try_from(bases.len())
            .ok()
            .and_then(|n| first.checked_add(n))
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{}: the folder's UIDs are used up; move the file away to start new ones",
                    self.path.display()
                ))
            })?;
        let mut lines = String::from(if self.unfinished { "\n" } else { "" });
        lines.extend(
            bases
                .iter()
                .zip(first..)
                .map(|(base, uid)| format!("{uid} {base}\n")),
        );
        let mut file = OpenOptions::new().append(true).open(&self.path)?;
        file.write_all(lines.as_bytes())?;
        file.sync_data()?;
        self.read += lines.len() as u64;
        self.unfinished = false;
        self.next = last;
        self.by_base.extend(bases.iter().cloned().zip(first..));
        Ok((first..last).collect())
    }
}

/// The UID lists of the folders one target has used, each read once and then only for what
/// other writers appended since.
#[derive(Debug, Default)]
pub(super) struct UidLists {
    read: HashMap<PathBuf, UidList>,
}

impl UidLists {
    /// The list of the folder in `dir` as its file now stands; `None` when it has none. What
    /// was read before is kept only while the file is the same one, by device, inode, first
    /// line and a length not shorter: otherwise it is read anew.
    pub(super) fn current(&mut self, dir: &Path) -> io::Result<Option<&mut UidList>> {
        let path = dir.join(FILE_NAME);
        let mut file = match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.read.remove(&path);
                return Ok(None);
            }
            file => file?,
        };
        let meta = file.metadata()?;
        let id = (meta.dev(), meta.ino());
        let mut first = String::new();
        BufReader::new(&file).read_line(&mut first)?;
        let validity = parse_header(&first).ok_or_else(|| corrupt(&path))?;
        let list = match self.read.remove(&path) {
            Some(list)
                if list.file == id && list.validity == validity && list.read <= meta.len() =>
            {
                list
            }
            _ => UidList {
                path: path.clone(),
                validity,
                next: 1,
                by_base: HashMap::new(),
                file: id,
                read: first.len() as u64,
                unfinished: !first.ends_with('\n'),
            },
        };
        let list = self.read.entry(path).or_insert(list);
        file.seek(SeekFrom::Start(list.read))?;
        let mut appended = String::new();
        file.read_to_string(&mut appended)?;
        // A line a killed writer left unfinished may name a cut base, which names no file;
        // its UID is passed over all the same, so no UID is ever written twice.
        for line in appended.lines() {
            if let Some((uid, base)) = line.split_once(' ')
                && let Ok(uid) = uid.parse::<u32>()
                && uid > 0
            {
                list.next = list.next.max(uid.saturating_add(1));
                list.by_base.insert(base.to_owned(), uid);
            }
        }
        list.read += appended.len() as u64;
        if !appended.is_empty() {
            list.unfinished = !appended.ends_with('\n');
        }
        Ok(Some(list))
    }

    /// The list of the folder in `dir`, made when it has none, under a new UIDVALIDITY: the
    /// time, as Dovecot chooses one.
    pub(super) fn current_or_new(&mut self, dir: &Path) -> io::Result<&mut UidList> {
        if self.current(dir)?.is_none() {
            let validity = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .and_then(|t| u32::try_from(t.as_secs()).ok())
                .unwrap_or(1);
            let tmp = dir.join(format!("{FILE_NAME}.tmp"));
            let mut file = File::create(&tmp)?;
            file.write_all(format!("{HEADER}{validity}\n").as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, dir.join(FILE_NAME))?;
            File::open(dir)?.sync_all()?;
        }
        self.current(dir)?
            .ok_or_else(|| io::Error::other("the UID list vanished while it was made"))
    }
}

fn parse_header(line: &str) -> Option<u32> {
    line.trim_end()
        .strip_prefix(HEADER)?
        .parse()
        .ok()
        .filter(|v| *v > 0)
}

fn corrupt(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} does not start as mailferry writes it; move it away to give the folder new UIDs",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bases(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn uids_grow_survive_a_reread_and_are_seen_by_another_reader() {
        let dir = tempfile::tempdir().unwrap();
        let mut mine = UidLists::default();
        let mut theirs = UidLists::default();
        assert!(mine.current(dir.path()).unwrap().is_none());
        let list = mine.current_or_new(dir.path()).unwrap();
        let validity = list.validity();
        assert_eq!(list.assign(&bases(&["a", "b"])).unwrap(), [1, 2]);
        let other = theirs.current(dir.path()).unwrap().unwrap();
        assert_eq!(other.validity(), validity);
        assert_eq!(other.assign(&bases(&["c"])).unwrap(), [3]);
        let list = mine.current(dir.path()).unwrap().unwrap();
        assert_eq!(list.uid_of("c"), Some(3));
        assert_eq!(list.assign(&bases(&["d"])).unwrap(), [4]);
        let mut reader = UidLists::default();
        let fresh = reader.current(dir.path()).unwrap().unwrap();
        let found: Vec<Option<u32>> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|b| fresh.uid_of(b))
            .collect();
        let mut named: Vec<&str> = fresh.bases_of(&[2, 4, 9]).collect();
        named.sort_unstable();
        assert_eq!(found, [Some(1), Some(2), Some(3), Some(4), None]);
        assert_eq!(named, ["b", "d"]);
    }

    #[test]
    fn a_half_written_line_is_ended_and_its_uid_never_given_again_and_a_replaced_file_is_read_anew()
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, "mailferry-uidlist 1 V77\n5 a\n6 b").unwrap();
        let mut lists = UidLists::default();
        let list = lists.current(dir.path()).unwrap().unwrap();
        assert_eq!(list.uid_of("a"), Some(5));
        assert_eq!(list.assign(&bases(&["c"])).unwrap(), [7]);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "mailferry-uidlist 1 V77\n5 a\n6 b\n7 c\n"
        );
        let replacement = dir.path().join("new list");
        fs::write(&replacement, "mailferry-uidlist 1 V88\n1 z\n").unwrap();
        fs::rename(&replacement, &path).unwrap();
        let list = lists.current(dir.path()).unwrap().unwrap();
        assert_eq!(
            (list.validity(), list.uid_of("a"), list.uid_of("z")),
            (88, None, Some(1))
        );
    }

    #[test]
    fn a_list_rewritten_in_place_is_read_anew_and_a_header_without_its_line_end_is_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, "mailferry-uidlist 1 V5\n1 a\n").unwrap();
        let mut lists = UidLists::default();
        assert_eq!(
            lists.current(dir.path()).unwrap().unwrap().uid_of("a"),
            Some(1)
        );
        // The same inode and length, other contents (`rsync --inplace` of another copy).
        fs::write(&path, "mailferry-uidlist 1 V6\n1 b\n").unwrap();
        let list = lists.current(dir.path()).unwrap().unwrap();
        assert_eq!(
            (list.validity(), list.uid_of("a"), list.uid_of("b")),
            (6, None, Some(1))
        );
        fs::write(&path, "mailferry-uidlist 1 V7").unwrap();
        let list = lists.current(dir.path()).unwrap().unwrap();
        assert_eq!(list.assign(&bases(&["c"])).unwrap(), [1]);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "mailferry-uidlist 1 V7\n1 c\n"
        );
    }

    #[test]
    fn a_file_that_is_not_a_uid_list_is_an_error_not_new_uids() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "garbage\n").unwrap();
        let err = UidLists::default().current(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("move it away"), "{err}");
    }
}
