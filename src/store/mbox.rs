//! mbox files on local disk, as a source and as a target: one file (the folder `INBOX`), or a
//! directory with one file per folder (named by the folder, hierarchy joined with `.`).
//!
//! Writing is mboxrd: each message follows a `From MAILER-DAEMON <date>` line carrying its
//! INTERNALDATE (UTC, asctime form), its lines that start with `>*From ` get one more `>`,
//! and a blank line ends it. The message's bytes are otherwise as the source served them (a
//! message without a final line end gains one: mbox cannot keep its absence). mbox keeps no
//! flags. Reading takes mboxrd and mboxo as Thunderbird, mutt and Google Takeout write them: a
//! message starts at a `From ` line at the top of the file or after a blank line; one `>` is
//! taken off `>From ` lines; the `Status:`/`X-Status:` fields give the flags.
//!
//! Appending cannot be atomic, so before a batch is written a record of it is saved
//! (`.<file>.mailferry-batch`: where it starts, its length, its first bytes) and removed once
//! the batch is synced. A file that ends inside the batch so recorded holds a half batch a
//! killed run left: reading ignores it and the next append cuts it off. Nothing else is ever
//! cut: mail another program appended, after a batch of ours or instead of it, stays. Each
//! batch is written under an exclusive `flock`.
//!
//! Hand-written: the mbox crates parse only, without mboxrd quoting or a writer.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};

use crate::error::Error;
use crate::folders::FolderList;
use crate::header;
use crate::identity;
use crate::index::{FlagSets, Flags, KeywordPolicy, SourceMessage, TargetCopy, TargetIndex};
use crate::store::gmail_labels;
use crate::store::{
    Fetched, FolderRefused, Outcome, Outgoing, Source, Target, Unreadable, local_folder_list,
};

/// The separator of folder names in a directory of mbox files.
const SEPARATOR: char = '.';
/// The suffix of the file recording the batch being written to a file.
const BATCH_SUFFIX: &str = ".mailferry-batch";
/// How many of a batch's first bytes its record keeps, to recognise it.
const BATCH_HEAD: usize = 64;
/// The asctime form of the `From ` line's date.
const FROM_DATE: &str = "%a %b %e %H:%M:%S %Y";

/// An mbox account: one file, or a directory of them.
#[derive(Debug, Clone)]
pub struct Mbox {
    path: PathBuf,
    /// Whether `path` is a directory with one file per folder.
    directory: bool,
}

/// Where one message's bytes lie in its file: after the `From ` line, before the blank line
/// that ends it (still quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    path: Arc<Path>,
    start: u64,
    end: u64,
}

/// One message [`scan`] found: where it lies, its envelope date, its header (unquoted; all of
/// it, as the identity is taken from all of it when the message is read again) and its size
/// once unquoted.
struct Scanned {
    place: Place,
    date: Option<DateTime<FixedOffset>>,
    header: Vec<u8>,
    size: u64,
}

impl Mbox {
    /// The mbox at `path`: a directory when it is one, or when its name ends in `/`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path: PathBuf = path.into();
        let directory = path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/');
        Mbox { path, directory }
    }

    fn failed(&self, path: &Path, err: io::Error) -> Error {
        Error::usage(format!("mbox {}: {err}", path.display()))
    }

    /// The file of a folder. A name that would leave the directory (the names come from the
    /// source server) has none.
    fn file(&self, folder: &str) -> Result<PathBuf, Error> {
        if !self.directory {
            return match folder.eq_ignore_ascii_case("INBOX") {
                true => Ok(self.path.clone()),
                false => Err(Error::usage(format!(
                    "folder {folder:?}: {} is one mbox file, which holds INBOX only; give a \
                     directory (ending in /) for several folders",
                    self.path.display()
                ))),
            };
        }
        if folder.contains(['/', '\0']) || folder.starts_with('.') {
            return Err(Error::usage(format!(
                "folder {folder:?}: an mbox file name cannot hold '/' or start with '.'"
            )));
        }
        Ok(self.path.join(folder))
    }

    fn list(&self) -> Result<FolderList, Error> {
        let mut names = vec!["INBOX".to_owned()];
        if self.directory {
            let listing = match fs::read_dir(&self.path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(self.failed(&self.path, e)),
                Ok(listing) => Some(listing),
            };
            for entry in listing.into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_file() && !name.starts_with('.') && !name.ends_with(BATCH_SUFFIX)
                {
                    names.push(name);
                }
            }
        }
        Ok(local_folder_list(names, SEPARATOR))
    }

    /// The messages of a folder's file, in order, read a line at a time (a file may be far
    /// larger than memory); a half batch a killed run left at its end holds none, and a
    /// folder without a file holds none.
    fn scan(&self, folder: &str, found: impl FnMut(Scanned)) -> Result<(), Error> {
        let path = self.file(folder)?;
        scan(&path, found).map_err(|e| self.failed(&path, e))
    }
}

fn scan(path: &Path, mut found: impl FnMut(Scanned)) -> io::Result<()> {
    let file = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        file => file?,
    };
    let len = file.metadata()?.len();
    let limit = unfinished_batch(path, len as usize, |at, n| {
        let mut head = vec![0; n];
        let read = file.read_at(&mut head, at as u64)?;
        head.truncate(read);
        Ok(head)
    })?
    .map_or(len, |start| start as u64);
    let path: Arc<Path> = Arc::from(path);
    let mut reader = BufReader::with_capacity(1 << 16, (&file).take(limit));
    let mut line = Vec::new();
    let (mut at, mut after_blank) = (0, true);
    let mut message: Option<Scanning> = None;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)? as u64;
        if n == 0 {
            break;
        }
        if after_blank && line.starts_with(b"From ") {
            if let Some(done) = message.take() {
                found(done.finish());
            }
            message = Some(Scanning::new(
                Place {
                    path: path.clone(),
                    start: at + n,
                    end: at + n,
                },
                envelope_date(&line),
            ));
        } else if let Some(message) = &mut message {
            message.push(&line);
        }
        after_blank = is_blank(&line);
        at += n;
    }
    found(match message {
        Some(done) => done.finish(),
        None => return Ok(()),
    });
    Ok(())
}

fn is_blank(line: &[u8]) -> bool {
    matches!(line, b"\n" | b"\r\n")
}

/// A message [`scan`] is reading, line by line.
struct Scanning {
    scanned: Scanned,
    in_header: bool,
    /// Its last bytes so far, to tell the blank line that ends it.
    tail: Vec<u8>,
}

impl Scanning {
    fn new(place: Place, date: Option<DateTime<FixedOffset>>) -> Self {
        Scanning {
            scanned: Scanned {
                place,
                date,
                header: Vec::new(),
                size: 0,
            },
            in_header: true,
            tail: Vec::new(),
        }
    }

    fn push(&mut self, line: &[u8]) {
        let scanned = &mut self.scanned;
        scanned.place.end += line.len() as u64;
        let line = unquoted_line(line);
        scanned.size += line.len() as u64;
        if self.in_header {
            scanned.header.extend_from_slice(line);
            self.in_header = !is_blank(line);
        }
        self.tail.extend_from_slice(line);
        let extra = self.tail.len().saturating_sub(4);
        self.tail.drain(..extra);
    }

    /// The message, without the blank line before the next `From ` (or at the end), which
    /// is the separator.
    fn finish(self) -> Scanned {
        let mut scanned = self.scanned;
        let separator = if self.tail.ends_with(b"\n\n") {
            1
        } else if self.tail.ends_with(b"\r\n\r\n") {
            2
        } else {
            0
        };
        scanned.place.end -= separator;
        scanned.size -= separator;
        scanned.header.truncate(scanned.size as usize);
        scanned
    }
}

/// A message's bytes as its [`Place`] holds them, unquoted; an [`io::ErrorKind::InvalidData`]
/// error when the file no longer has a message there: the message must still follow a line
/// end and be followed by the end of the file or a blank line and the next `From ` line, so
/// a file rewritten since it was scanned (a mail reader saving a changed `Status:`) is not
/// read one byte short or long.
fn read_at(file: &File, place: &Place) -> io::Result<Vec<u8>> {
    const AFTER: usize = b"\r\nFrom ".len();
    let before = u64::from(place.start > 0);
    let mut bytes = vec![0; (place.end - place.start + before) as usize + AFTER];
    let mut read = 0;
    while read < bytes.len() {
        match file.read_at(&mut bytes[read..], place.start - before + read as u64)? {
            0 => break,
            n => read += n,
        }
    }
    bytes.truncate(read);
    let length = (place.end - place.start + before) as usize;
    if bytes.len() < length {
        return Err(moved());
    }
    let after = &bytes[length..];
    let follows = after.is_empty()
        || [&b"\n"[..], b"\r\n"].iter().any(|blank| {
            after
                .strip_prefix(*blank)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"From "))
        });
    if !follows || (before == 1 && bytes[0] != b'\n') {
        return Err(moved());
    }
    Ok(bytes[before as usize..length]
        .split_inclusive(|&b| b == b'\n')
        .flat_map(unquoted_line)
        .copied()
        .collect())
}

fn moved() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "no longer in the file where it was indexed (the file changed during the run)",
    )
}

/// The date of a `From sender Tue Feb  3 03:05:06 2020` line (UTC), or of the form a Google
/// Takeout writes, with its zone before the year (`Thu Apr 07 14:09:04 +0000 2022`).
fn envelope_date(line: &[u8]) -> Option<DateTime<FixedOffset>> {
    let text = String::from_utf8_lossy(line);
    let words: Vec<&str> = text.split_whitespace().collect();
    let last = |n: usize| Some(words.get(words.len().checked_sub(n)?..)?.join(" "));
    let asctime = last(5).and_then(|date| {
        NaiveDateTime::parse_from_str(&date, "%a %b %d %H:%M:%S %Y")
            .ok()
            .map(|d| d.and_utc().fixed_offset())
    });
    asctime.or_else(|| DateTime::parse_from_str(&last(6)?, "%a %b %d %H:%M:%S %z %Y").ok())
}

/// A line with one `>` taken off when it is a `>+From ` line (mboxrd; on mboxo it turns back
/// the lines a writer quoted, which is all it can do).
fn unquoted_line(line: &[u8]) -> &[u8] {
    let quotes = line.iter().take_while(|&&b| b == b'>').count();
    match quotes > 0 && line[quotes..].starts_with(b"From ") {
        true => &line[1..],
        false => line,
    }
}

/// The mboxrd form of a message: `From ` line, quoted lines, a final line end, a blank line.
fn quoted(raw: &[u8], date: Option<DateTime<FixedOffset>>) -> Vec<u8> {
    let date = date.map_or_else(Utc::now, |d| d.with_timezone(&Utc));
    let mut out = format!("From MAILER-DAEMON {}\n", date.format(FROM_DATE)).into_bytes();
    out.reserve(raw.len() + raw.len() / 1000 + 2);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        if line[quotes..].starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !raw.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// The flags `Status:` (`R` read) and `X-Status:` (`A`nswered, `F`lagged, `T` draft, `D`eleted)
/// give a message.
fn flags_of(header: &[u8]) -> Vec<String> {
    let value = |name| header::first(header, name).map(|f| f.value().to_vec());
    let mut flags = Vec::new();
    let status = value("Status").unwrap_or_default();
    let x_status = value("X-Status").unwrap_or_default();
    for (field, letter, flag) in [
        (&x_status, b'A', "\\Answered"),
        (&x_status, b'T', "\\Draft"),
        (&x_status, b'F', "\\Flagged"),
        (&status, b'R', "\\Seen"),
        (&x_status, b'D', "\\Deleted"),
    ] {
        if field.contains(&letter) {
            flags.push(flag.to_owned());
        }
    }
    flags
}

/// An mbox as a [`Source`]: read-only.
pub struct MboxSource {
    mbox: Mbox,
    /// Where the messages indexed lie, per folder, by index key.
    indexed: HashMap<String, Vec<Place>>,
    /// For a Google Takeout: every message of every file, by the folders its Gmail labels
    /// give it (see [`gmail_labels`]); `None` when folders are files.
    labelled: Option<BTreeMap<String, Vec<Labelled>>>,
}

/// A message of a Google Takeout, as indexed once for each folder its labels name.
#[derive(Debug, Clone)]
struct Labelled {
    place: Place,
    identity: identity::Identity,
    size: u64,
    date: Option<DateTime<FixedOffset>>,
    flags: Vec<String>,
}

impl MboxSource {
    /// Reads the mbox at `mbox`'s path, which must exist.
    pub fn open(mbox: Mbox) -> Result<Self, Error> {
        if !mbox.path.exists() {
            return Err(Error::Usage {
                message: format!("mbox {}: no such file or directory", mbox.path.display()),
                hint: Some("give an mbox file, or a directory of them ending in /".into()),
            });
        }
        Ok(MboxSource {
            mbox,
            indexed: HashMap::new(),
            labelled: None,
        })
    }

    /// Reads the mbox as a Google Takeout: each message is in the folders its
    /// `X-Gmail-Labels` field names, wherever it lies in the file (or files). Only where
    /// each message lies is kept, not the message.
    pub fn by_gmail_labels(mut self) -> Result<Self, Error> {
        let mut labelled: BTreeMap<String, Vec<Labelled>> = BTreeMap::new();
        for file in self.mbox.list()?.folders {
            self.mbox.scan(&file.name, |scanned| {
                let header = header::header_block(&scanned.header);
                let placement = gmail_labels::placement(header);
                let message = Labelled {
                    identity: identity::identify(header),
                    size: scanned.size,
                    date: scanned.date.or_else(|| identity::arrival_date(header)),
                    flags: placement.flags,
                    place: scanned.place,
                };
                for folder in placement.folders {
                    labelled.entry(folder).or_default().push(message.clone());
                }
            })?;
        }
        self.labelled = Some(labelled);
        Ok(self)
    }
}

impl Source for MboxSource {
    fn folders(&mut self) -> Result<FolderList, Error> {
        match &self.labelled {
            Some(labelled) => Ok(gmail_labels::folder_list(labelled.keys())),
            None => self.mbox.list(),
        }
    }

    fn index(&mut self, folder: &str) -> Result<Vec<SourceMessage>, Error> {
        let messages = match &self.labelled {
            Some(labelled) => labelled.get(folder).cloned().unwrap_or_default(),
            None => {
                let mut messages = Vec::new();
                self.mbox.scan(folder, |scanned| {
                    let header = header::header_block(&scanned.header);
                    messages.push(Labelled {
                        identity: identity::identify(header),
                        size: scanned.size,
                        date: scanned.date.or_else(|| identity::arrival_date(header)),
                        flags: flags_of(header),
                        place: scanned.place,
                    });
                })?;
                messages
            }
        };
        let mut flag_sets = FlagSets::default();
        let mut index = Vec::with_capacity(messages.len());
        let mut places = Vec::with_capacity(messages.len());
        for (key, message) in messages.into_iter().enumerate() {
            index.push(SourceMessage {
                key: key as u32,
                stable_id: None,
                identity: message.identity,
                identity_remembered: false,
                size: message.size,
                added: 0,
                flags: flag_sets.intern(message.flags),
                internal_date: message.date.into(),
            });
            places.push(message.place);
        }
        self.indexed.insert(folder.to_owned(), places);
        Ok(index)
    }

    /// Another connection's index may have been taken: a folder this source has not indexed
    /// is indexed first. Each message is read from its place and checked to be the one
    /// indexed there (see [`read_at`]) with the same identity.
    fn fetch(
        &mut self,
        folder: &str,
        messages: Vec<Arc<SourceMessage>>,
        deliver: &mut dyn FnMut(Result<Fetched<'_>, Unreadable>) -> bool,
    ) -> Result<(), Error> {
        if !self.indexed.contains_key(folder) {
            self.index(folder)?;
        }
        let places = self.indexed.get(folder).map_or(&[][..], Vec::as_slice);
        let mut files: HashMap<Arc<Path>, File> = HashMap::new();
        for message in messages {
            let read = places
                .get(message.key as usize)
                .ok_or_else(moved)
                .and_then(|place| {
                    let file = match files.entry(place.path.clone()) {
                        Entry::Occupied(open) => open.into_mut(),
                        Entry::Vacant(new) => new.insert(File::open(&place.path)?),
                    };
                    read_at(file, place)
                });
            let delivered = match read {
                Ok(raw) if identity::identify(header::header_block(&raw)) == message.identity => {
                    deliver(Ok(Fetched {
                        message,
                        raw: raw.into(),
                    }))
                }
                Ok(_) => deliver(Err(Unreadable {
                    message,
                    reason: moved().to_string(),
                })),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => deliver(Err(Unreadable {
                    message,
                    reason: e.to_string(),
                })),
                Err(e) => deliver(Err(Unreadable {
                    message,
                    reason: format!("cannot read it from the file: {e}"),
                })),
            };
            if !delivered {
                break;
            }
        }
        Ok(())
    }
}

/// An mbox as a [`Target`].
pub struct MboxTarget {
    mbox: Mbox,
}

impl MboxTarget {
    /// Writes into the mbox at `mbox`'s path (created with its first message).
    pub fn open(mbox: Mbox) -> Self {
        MboxTarget { mbox }
    }

    fn index_folder(&self, folder: &str) -> Result<TargetIndex, Error> {
        let mut index = TargetIndex::default();
        index.keywords = KeywordPolicy::Only(Vec::new());
        let mut position = 0;
        self.mbox.scan(folder, |scanned| {
            position += 1;
            index.add(
                identity::identify(header::header_block(&scanned.header)),
                TargetCopy {
                    // Positions, not UIDs: nothing is asked of the file by them.
                    uid: position,
                    size: scanned.size,
                    flags: Flags::default(),
                    // In the `From ` line, which the index does not read.
                    internal_date: None,
                },
            );
        })?;
        Ok(index)
    }

    /// Appends `bytes` to `path` under an exclusive lock, first cutting off a half batch a
    /// killed run left, with a record of the batch kept while it is written.
    fn append_bytes(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        // Held until the batch is written and its record gone; released when dropped.
        let locked = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        locked.lock()?;
        // Only the file's length and the bytes where a recorded batch starts are needed: a
        // large mbox is not read for every batch.
        let len = locked.metadata()?.len() as usize;
        let start = match unfinished_batch(path, len, |at, n| {
            let mut head = vec![0; n];
            let read = locked.read_at(&mut head, at as u64)?;
            head.truncate(read);
            Ok(head)
        })? {
            Some(start) => {
                locked.set_len(start as u64)?;
                start
            }
            None => len,
        };
        let head = &bytes[..bytes.len().min(BATCH_HEAD)];
        let record = format!("{start} {} {}\n", bytes.len(), hex(head));
        write_synced(&batch_record(path), record.as_bytes())?;
        let mut appending = OpenOptions::new().append(true).open(path)?;
        appending.write_all(bytes)?;
        appending.sync_all()?;
        fs::remove_file(batch_record(path))
    }
}

/// Where the half batch a killed run left at the end of `path` starts: when a batch record
/// says one was being written from there, the file (of `file_len` bytes) ends before the
/// batch's end, and the bytes there (`read_at(offset, count)`) are the batch's first ones.
/// `None` otherwise.
fn unfinished_batch(
    path: &Path,
    file_len: usize,
    read_at: impl FnOnce(usize, usize) -> io::Result<Vec<u8>>,
) -> io::Result<Option<usize>> {
    let Ok(record) = fs::read_to_string(batch_record(path)) else {
        return Ok(None);
    };
    let mut fields = record.split_whitespace();
    let (Some(start), Some(len)) = (
        fields.next().and_then(|f| f.parse::<usize>().ok()),
        fields.next().and_then(|f| f.parse::<usize>().ok()),
    ) else {
        return Ok(None);
    };
    let head = fields.next().unwrap_or_default();
    let Some(written) = file_len.checked_sub(start).filter(|&w| w < len) else {
        return Ok(None);
    };
    // As much of the head as was written must be there.
    let compared = written.min(head.len() / 2);
    let ours = hex(&read_at(start, compared)?) == head[..compared * 2];
    Ok(ours.then_some(start))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` and syncs it, through a temporary file renamed over it.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(tmp, path)
}

/// Where the record of the batch being written to `path` is kept.
fn batch_record(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let name = name.strip_prefix('.').unwrap_or(&name);
    path.with_file_name(format!(".{name}{BATCH_SUFFIX}"))
}

impl Target for MboxTarget {
    fn folders(&mut self) -> Result<FolderList, Error> {
        self.mbox.list()
    }

    fn create_and_index(
        &mut self,
        _create: &[String],
        folders: &[String],
    ) -> Result<Vec<Result<TargetIndex, FolderRefused>>, Error> {
        // A folder is a file, created with its first message.
        Ok(folders
            .iter()
            .map(|folder| {
                self.index_folder(folder)
                    .map_err(|e| FolderRefused(e.to_string()))
            })
            .collect())
    }

    fn index(&mut self, folder: &str) -> Result<TargetIndex, Error> {
        self.index_folder(folder)
    }

    fn append(&mut self, folder: &str, batch: &[Outgoing]) -> Result<Vec<Outcome>, Error> {
        let path = self.mbox.file(folder)?;
        let bytes: Vec<u8> = batch
            .iter()
            .flat_map(|o| quoted(&o.raw, o.message.internal_date.get()))
            .collect();
        self.append_bytes(&path, &bytes)
            .map_err(|e| self.mbox.failed(&path, e))?;
        Ok(vec![Ok(None); batch.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Flags;

    fn outgoing(raw: &[u8]) -> Outgoing {
        let mut message = SourceMessage::with_id(1, "");
        message.identity = identity::identify(raw);
        message.size = raw.len() as u64;
        message.flags = Flags::default();
        message.internal_date = DateTime::parse_from_rfc3339("2020-02-03T04:05:06+01:00")
            .ok()
            .into();
        Outgoing {
            message: Arc::new(message),
            raw: raw.to_vec(),
        }
    }

    #[test]
    fn messages_round_trip_byte_for_byte_through_mboxrd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.mbox");
        let messages: [&[u8]; 3] = [
            b"Message-ID: <a@x>\r\n\r\nFrom here\r\n>From there\r\n\r\nFrom the end\r\n",
            b"Message-ID: <b@x>\n\nlf only\n",
            b"Message-ID: <c@x>\r\n\r\nends with a blank line\r\n\r\n",
        ];
        let mut target = MboxTarget::open(Mbox::new(&path));
        let batch: Vec<Outgoing> = messages.iter().map(|m| outgoing(m)).collect();
        assert_eq!(
            target.append("INBOX", &batch).unwrap(),
            [Ok(None), Ok(None), Ok(None)]
        );
        let file = fs::read(&path).unwrap();
        assert!(file.starts_with(b"From MAILER-DAEMON Mon Feb  3 03:05:06 2020\n"));
        assert!(file.windows(9).any(|w| w == b"\n>From he"));
        assert!(file.windows(11).any(|w| w == b"\n>>From the"));

        let mut source = MboxSource::open(Mbox::new(&path)).unwrap();
        let index = source.index("INBOX").unwrap();
        assert_eq!(index.len(), 3);
        assert_eq!(
            index[0].internal_date.get().unwrap().timestamp(),
            DateTime::parse_from_rfc3339("2020-02-03T04:05:06+01:00")
                .unwrap()
                .timestamp()
        );
        let mut fetched = Vec::new();
        source
            .fetch(
                "INBOX",
                index.into_iter().map(Arc::new).collect(),
                &mut |f| {
                    fetched.push(f.unwrap().raw.into_owned());
                    true
                },
            )
            .unwrap();
        assert_eq!(fetched, messages.map(<[u8]>::to_vec));
        assert_eq!(
            target
                .index("INBOX")
                .unwrap()
                .count(&identity::identify(messages[1])),
            1
        );
    }

    /// What a run killed half-way through writing `raw` as its batch leaves: the batch's
    /// record and the first half of its bytes.
    fn killed_while_writing(path: &Path, raw: &[u8]) {
        let bytes = quoted(raw, None);
        let start = fs::metadata(path).unwrap().len();
        let record = format!("{start} {} {}\n", bytes.len(), hex(&bytes[..BATCH_HEAD]));
        fs::write(batch_record(path), record).unwrap();
        let mut file = OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(&bytes[..bytes.len() / 2]).unwrap();
    }

    #[test]
    fn a_killed_batch_is_no_message_and_is_cut_off_but_other_programs_mail_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut target = MboxTarget::open(Mbox::new(&path));
        let message = |id: &str| format!("Message-ID: <{id}@x>\n\n{}\n", id.repeat(50));
        let count = |target: &mut MboxTarget, id: &str| {
            let index = target.index("INBOX").unwrap();
            index.count(&identity::identify(message(id).as_bytes()))
        };
        target
            .append("INBOX", &[outgoing(message("a").as_bytes())])
            .unwrap();
        let whole = fs::read(&path).unwrap();
        killed_while_writing(&path, message("b").as_bytes());
        assert_eq!(count(&mut target, "b"), 0, "half a batch holds no message");
        let mut source = MboxSource::open(Mbox::new(&path)).unwrap();
        assert_eq!(source.index("INBOX").unwrap().len(), 1);

        target
            .append("INBOX", &[outgoing(message("c").as_bytes())])
            .unwrap();
        let file = fs::read(&path).unwrap();
        assert!(file.starts_with(&whole));
        assert_eq!(
            file.len(),
            whole.len() + quoted(message("c").as_bytes(), None).len()
        );
        assert!(!batch_record(&path).exists());

        // Another program's mail after ours (no record of it) is never cut off.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(
            format!("From someone Sun Jan  5 10:11:12 2020\n{}\n", message("d")).as_bytes(),
        )
        .unwrap();
        target
            .append("INBOX", &[outgoing(message("e").as_bytes())])
            .unwrap();
        for id in ["a", "c", "d", "e"] {
            assert_eq!(count(&mut target, id), 1, "{id}");
        }
    }

    #[test]
    fn a_scan_line_by_line_gives_each_message_its_unquoted_size_and_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.mbox");
        let file: &[u8] = b"stray text before any message\n\n\
            From a Sat Jan  4 10:11:12 2020\r\nSubject: crlf\r\n\r\n>From quoted\r\n\r\n\
            From b Sat Jan  4 10:11:12 2020\nSubject: header only\n\n\
            From c Sat Jan  4 10:11:12 2020\nSubject: no end\n\n>>From twice\nlast";
        fs::write(&path, file).unwrap();
        let mut scanned = Vec::new();
        scan(&path, |s| scanned.push(s)).unwrap();
        let opened = File::open(&path).unwrap();
        let read: Vec<Vec<u8>> = scanned
            .iter()
            .map(|s| read_at(&opened, &s.place).unwrap())
            .collect();
        let expected: [&[u8]; 3] = [
            b"Subject: crlf\r\n\r\nFrom quoted\r\n",
            b"Subject: header only\n",
            b"Subject: no end\n\n>From twice\nlast",
        ];
        assert_eq!(read, expected);
        for (s, raw) in scanned.iter().zip(&read) {
            assert_eq!(s.size, raw.len() as u64);
            assert_eq!(header::header_block(&s.header), header::header_block(raw));
        }
    }

    /// What fetching every indexed message of `path` gives: each one's bytes, or why not.
    fn fetch_all(path: &Path, change: impl FnOnce()) -> Vec<Result<Vec<u8>, String>> {
        let mut source = MboxSource::open(Mbox::new(path)).unwrap();
        let index = source.index("INBOX").unwrap();
        change();
        let mut fetched = Vec::new();
        source
            .fetch(
                "INBOX",
                index.into_iter().map(Arc::new).collect(),
                &mut |f| {
                    fetched.push(f.map(|f| f.raw.into_owned()).map_err(|u| u.reason));
                    true
                },
            )
            .unwrap();
        fetched
    }

    #[test]
    fn a_message_whose_file_was_rewritten_after_the_index_is_not_read_short_or_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let file = |status: &str| {
            format!(
                "From a Sat Jan  4 10:11:12 2020\nMessage-ID: <1@x>\n\none\n\n\
                 From b Sat Jan  4 10:11:12 2020\nMessage-ID: <2@x>\nStatus: {status}\n\ntwo\n\n\
                 From c Sat Jan  4 10:11:12 2020\nMessage-ID: <3@x>\n\nthree\n"
            )
        };
        fs::write(&path, file("O")).unwrap();
        // A mail reader saves the second message as read: one byte more from there on.
        let fetched = fetch_all(&path, || fs::write(&path, file("RO")).unwrap());
        assert_eq!(fetched[0], Ok(b"Message-ID: <1@x>\n\none\n".to_vec()));
        for failed in &fetched[1..] {
            assert!(
                failed.as_ref().is_err_and(|e| e.contains("changed")),
                "{fetched:?}"
            );
        }
        let untouched = fetch_all(&path, || ());
        assert!(untouched.iter().all(Result::is_ok), "{untouched:?}");
    }

    #[test]
    fn a_header_far_longer_than_usual_is_read_back_as_the_message_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let long = "x".repeat(100);
        let fields: String = (0..3000).map(|n| format!("X-Long-{n}: {long}\n")).collect();
        let raw = format!("{fields}Message-ID: <late@x>\n\nbody\n");
        fs::write(&path, format!("From a Sat Jan  4 10:11:12 2020\n{raw}")).unwrap();
        assert_eq!(fetch_all(&path, || ()), [Ok(raw.into_bytes())]);
    }

    #[test]
    fn mboxo_with_status_fields_reads_flags_and_both_forms_of_envelope_date() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("takeout.mbox");
        fs::write(
            &path,
            b"From 1234@xxx Sat Jan  4 10:11:12 2020\nMessage-ID: <t@x>\nStatus: RO\nX-Status: AF\n\nhi\n\nFrom someone Sun Jan  5 10:11:12 2020\nSubject: two\n\nbye\n\nFrom 1611@xxx Thu Apr 07 14:09:04 +0200 2022\nSubject: three\n\nhi\n",
        )
        .unwrap();
        let mut source = MboxSource::open(Mbox::new(&path)).unwrap();
        let index = source.index("INBOX").unwrap();
        assert_eq!(index.len(), 3);
        assert_eq!(
            index[2].internal_date.get().unwrap().to_rfc3339(),
            "2022-04-07T14:09:04+02:00",
            "a Takeout's envelope date"
        );
        assert_eq!(*index[0].flags, ["\\Answered", "\\Flagged", "\\Seen"]);
        assert_eq!(
            index[1].internal_date.get().unwrap().to_rfc3339(),
            "2020-01-05T10:11:12+00:00"
        );
    }
}
