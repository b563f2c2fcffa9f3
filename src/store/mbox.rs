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

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
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

/// One message of a file: where its bytes lie (after the `From ` line, before the blank line
/// that ends it) and its envelope date.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    date: Option<DateTime<FixedOffset>>,
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

    /// A folder's file without a half batch a killed run left at its end (it holds no
    /// message); empty when it does not exist.
    fn read(&self, folder: &str) -> Result<Vec<u8>, Error> {
        let path = self.file(folder)?;
        match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.failed(&path, e)),
            Ok(mut bytes) => {
                let in_memory =
                    |at: usize, n: usize| Ok(bytes[at..(at + n).min(bytes.len())].to_vec());
                if let Some(start) = unfinished_batch(&path, bytes.len(), in_memory)
                    .map_err(|e| self.failed(&path, e))?
                {
                    bytes.truncate(start);
                }
                Ok(bytes)
            }
        }
    }
}

/// Where each message of an mbox file lies.
fn spans(file: &[u8]) -> Vec<Span> {
    let mut starts = Vec::new();
    let mut at = 0;
    let mut after_blank = true;
    while at < file.len() {
        let end = file[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(file.len(), |i| at + i + 1);
        let line = &file[at..end];
        if after_blank && line.starts_with(b"From ") {
            starts.push((at, end));
        }
        after_blank = matches!(line, b"\n" | b"\r\n");
        at = end;
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &(line, start))| {
            let next = starts.get(i + 1).map_or(file.len(), |&(next, _)| next);
            // The blank line before the next `From ` (or at the end) is the separator.
            let end = if file[start..next].ends_with(b"\n\n") {
                next - 1
            } else if file[start..next].ends_with(b"\r\n\r\n") {
                next - 2
            } else {
                next
            };
            Span {
                start,
                end: end.max(start),
                date: envelope_date(&file[line..start]),
            }
        })
        .collect()
}

/// The date of a `From sender Tue Feb  3 03:05:06 2020` line (UTC).
fn envelope_date(line: &[u8]) -> Option<DateTime<FixedOffset>> {
    let text = String::from_utf8_lossy(line);
    let words: Vec<&str> = text.split_whitespace().collect();
    let date = words.get(words.len().checked_sub(5)?..)?.join(" ");
    NaiveDateTime::parse_from_str(&date, "%a %b %d %H:%M:%S %Y")
        .ok()
        .map(|d| d.and_utc().fixed_offset())
}

/// A message's bytes with one `>` taken off each `>+From ` line (mboxrd; on mboxo it turns
/// back the lines a writer quoted, which is all it can do).
fn unquoted(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        if quotes > 0 && line[quotes..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
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

/// The messages of a file: header, size and date of each, as the source index and the target
/// index both need them.
fn messages(file: &[u8]) -> impl Iterator<Item = (Vec<u8>, Span)> + '_ {
    spans(file)
        .into_iter()
        .map(|span| (unquoted(&file[span.start..span.end]), span))
}

/// An mbox as a [`Source`]: read-only.
pub struct MboxSource {
    mbox: Mbox,
    /// The messages indexed, per folder, by index key.
    indexed: std::collections::HashMap<String, Vec<Vec<u8>>>,
    /// For a Google Takeout: every message of every file, by the folders its Gmail labels
    /// give it (see [`gmail_labels`]); `None` when folders are files.
    labelled: Option<BTreeMap<String, Vec<Message>>>,
}

/// A message read from a file: bytes, envelope date, flags.
#[derive(Debug, Clone)]
struct Message {
    raw: Vec<u8>,
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
            indexed: Default::default(),
            labelled: None,
        })
    }

    /// Reads the mbox as a Google Takeout: each message is in the folders its
    /// `X-Gmail-Labels` field names, wherever it lies in the file (or files).
    pub fn by_gmail_labels(mut self) -> Result<Self, Error> {
        let mut labelled: BTreeMap<String, Vec<Message>> = BTreeMap::new();
        for file in self.mbox.list()?.folders {
            for message in self.read_messages(&file.name)? {
                let placement = gmail_labels::placement(header::header_block(&message.raw));
                for folder in placement.folders {
                    let message = Message {
                        flags: placement.flags.clone(),
                        ..message.clone()
                    };
                    labelled.entry(folder).or_default().push(message);
                }
            }
        }
        self.labelled = Some(labelled);
        Ok(self)
    }

    /// The messages of a file, with the flags their `Status:` fields give.
    fn read_messages(&self, folder: &str) -> Result<Vec<Message>, Error> {
        let file = self.mbox.read(folder)?;
        Ok(messages(&file)
            .map(|(raw, span)| Message {
                flags: flags_of(header::header_block(&raw)),
                date: span.date,
                raw,
            })
            .collect())
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
            None => self.read_messages(folder)?,
        };
        let mut flag_sets = FlagSets::default();
        let mut index = Vec::new();
        let mut bodies = Vec::new();
        for (key, Message { raw, date, flags }) in messages.into_iter().enumerate() {
            let header = header::header_block(&raw);
            index.push(SourceMessage {
                key: key as u32,
                stable_id: None,
                identity: identity::identify(header),
                identity_remembered: false,
                size: raw.len() as u64,
                added: 0,
                flags: flag_sets.intern(flags),
                internal_date: date.or_else(|| identity::arrival_date(header)),
            });
            bodies.push(raw);
        }
        self.indexed.insert(folder.to_owned(), bodies);
        Ok(index)
    }

    /// Another connection's index may have been taken: the file is read again, and each
    /// message is found at its place and checked to be the one indexed there.
    fn fetch(
        &mut self,
        folder: &str,
        messages: Vec<Arc<SourceMessage>>,
        deliver: &mut dyn FnMut(Result<Fetched<'_>, Unreadable>) -> bool,
    ) -> Result<(), Error> {
        if !self.indexed.contains_key(folder) {
            self.index(folder)?;
        }
        let bodies = self.indexed.get(folder).map_or(&[][..], Vec::as_slice);
        for message in messages {
            let found = bodies
                .get(message.key as usize)
                .filter(|raw| identity::identify(header::header_block(raw)) == message.identity);
            let delivered = match found {
                Some(raw) => deliver(Ok(Fetched {
                    message,
                    raw: raw.as_slice().into(),
                })),
                None => deliver(Err(Unreadable {
                    message,
                    reason: "no longer in the file where it was indexed".to_owned(),
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
        let file = self.mbox.read(folder)?;
        let mut index = TargetIndex::default();
        index.keywords = KeywordPolicy::Only(Vec::new());
        for (n, (raw, _)) in messages(&file).enumerate() {
            let header = header::header_block(&raw);
            index.add(
                identity::identify(header),
                TargetCopy {
                    // Positions, not UIDs: nothing is asked of the file by them.
                    uid: n as u32 + 1,
                    size: raw.len() as u64,
                    flags: Flags::default(),
                    // In the `From ` line, which the index does not read.
                    internal_date: None,
                },
            );
        }
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
            .flat_map(|o| quoted(&o.raw, o.message.internal_date))
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
        message.internal_date = DateTime::parse_from_rfc3339("2020-02-03T04:05:06+01:00").ok();
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
            index[0].internal_date.unwrap().timestamp(),
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
    fn mboxo_with_status_fields_reads_flags_and_dates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("takeout.mbox");
        fs::write(
            &path,
            b"From 1234@xxx Sat Jan  4 10:11:12 2020\nMessage-ID: <t@x>\nStatus: RO\nX-Status: AF\n\nhi\n\nFrom someone Sun Jan  5 10:11:12 2020\nSubject: two\n\nbye\n",
        )
        .unwrap();
        let mut source = MboxSource::open(Mbox::new(&path)).unwrap();
        let index = source.index("INBOX").unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(*index[0].flags, ["\\Answered", "\\Flagged", "\\Seen"]);
        assert_eq!(
            index[1].internal_date.unwrap().to_rfc3339(),
            "2020-01-05T10:11:12+00:00"
        );
    }
}
