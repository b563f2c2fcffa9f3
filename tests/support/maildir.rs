//! Reading a Dovecot maildir straight from the file system: each message's bytes, flags (from
//! the file name and `dovecot-keywords`) and INTERNALDATE (the mtime), in UID order.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// One message as Dovecot stored it in a maildir, read from the file system (no IMAP involved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The file's bytes: LF line endings (see the module documentation).
    pub raw: Vec<u8>,
    /// IMAP flags from the file name's `:2,` suffix, in the suffix's order (Maildir keeps the
    /// letters sorted): `D`→`\Draft`, `F`→`\Flagged`, `R`→`\Answered`, `S`→`\Seen`,
    /// `T`→`\Deleted`, then keywords (`a`, `b`, … looked up in the folder's `dovecot-keywords`,
    /// e.g. `$Label1`). `\Recent` is never stored.
    pub flags: Vec<String>,
    /// The file's mtime, which Dovecot's maildir uses as INTERNALDATE.
    pub internal_date: SystemTime,
}

/// The messages of the maildir folder `dir` (one with `cur/` and `new/`), in delivery order.
pub fn read_maildir(dir: &Path) -> io::Result<Vec<StoredMessage>> {
    let keywords = read_keywords(dir);
    let uids = read_uidlist(dir);
    let mut found = Vec::new();
    for sub in ["cur", "new"] {
        // A mailbox that was only ever opened, never written to, may lack cur/ and new/.
        let Ok(entries) = fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let raw = fs::read(&path)?;
            let internal_date = fs::metadata(&path)?.modified()?;
            let (base, info) = match file_name.split_once(':') {
                Some((base, info)) => (base.to_string(), info.to_string()),
                None => (file_name.clone(), String::new()),
            };
            let flags = info
                .strip_prefix("2,")
                .unwrap_or("")
                .chars()
                .filter_map(|letter| maildir_flag(letter, &keywords))
                .collect();
            // Names begin "SECONDS.M<microseconds>P<pid>"; the microseconds are not zero-padded,
            // so plain string order is wrong within one second. Dovecot's UID is the real order.
            let order = (
                uids.get(&base).copied().unwrap_or(u32::MAX),
                delivery_time(&base),
                file_name,
            );
            found.push((
                order,
                StoredMessage {
                    raw,
                    flags,
                    internal_date,
                },
            ));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found.into_iter().map(|(_, message)| message).collect())
}

fn maildir_flag(letter: char, keywords: &HashMap<char, String>) -> Option<String> {
    let system = match letter {
        'D' => "\\Draft",
        'F' => "\\Flagged",
        'R' => "\\Answered",
        'S' => "\\Seen",
        'T' => "\\Deleted",
        _ => return keywords.get(&letter).cloned(),
    };
    Some(system.to_string())
}

/// `dovecot-keywords` lines are "INDEX NAME"; index 0 is the letter `a` in file names.
fn read_keywords(dir: &Path) -> HashMap<char, String> {
    let text = fs::read_to_string(dir.join("dovecot-keywords")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (index, name) = line.split_once(' ')?;
            let index: u8 = index.parse().ok().filter(|i| *i < 26)?;
            Some((char::from(b'a' + index), name.to_string()))
        })
        .collect()
}

/// `dovecot-uidlist`: a header line, then "UID [EXTENSIONS] :BASENAME" per message.
fn read_uidlist(dir: &Path) -> HashMap<String, u32> {
    let text = fs::read_to_string(dir.join("dovecot-uidlist")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let (fields, base) = line.split_once(':')?;
            let uid = fields.split_whitespace().next()?.parse().ok()?;
            Some((base.to_string(), uid))
        })
        .collect()
}

fn delivery_time(base: &str) -> (u64, u64) {
    let mut parts = base.split('.');
    let seconds = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    let micros = parts
        .next()
        .and_then(|s| s.strip_prefix('M'))
        .map(|s| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    (seconds, micros)
}
