//! Test messages: the `fixtures/` mailbox, generated big messages and random text, and the
//! canonical form under which a message and Dovecot's copy of it are equal.

use std::fs;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};

/// The canonical form under which a message and Dovecot's copy of it are equal: every line
/// ending (an LF with any number of CRs before it) becomes CRLF, CRs at the very end are
/// dropped, NUL becomes 0x80; a lone CR elsewhere is kept, since Dovecot keeps it. It holds for
/// the file on disk ([`StoredMessage::raw`]) and for what IMAP FETCH serves, and is idempotent.
/// Compare `normalize_crlf(source) == normalize_crlf(copy)` to mean "byte-exact after
/// Dovecot's normalisation". Not covered: the CRLF that POP3 RETR adds to a message without a
/// final line ending.
pub fn normalize_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    // CRs are held back until the next byte says whether they belong to a line ending.
    let mut pending_crs = 0;
    for &byte in raw {
        match byte {
            b'\r' => pending_crs += 1,
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                pending_crs = 0;
            }
            _ => {
                out.resize(out.len() + pending_crs, b'\r');
                pending_crs = 0;
                out.push(if byte == 0 { 0x80 } else { byte });
            }
        }
    }
    out
}

/// Every `fixtures/*` file but `README.md`, as (file name, bytes), sorted by name.
pub fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read fixtures/ entry").path())
        .filter(|path| path.is_file() && path.file_name().is_some_and(|n| n != "README.md"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let raw = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (name, raw)
        })
        .collect();
    files.sort();
    files
}

/// A multipart/mixed message of about `size_bytes` (within 100 bytes; at least ~1 KB) with a
/// text part and a base64 attachment of random bytes, CRLF line endings, a Date and a unique
/// Message-ID (`<big-SEED-SIZE@mailferry.test>`). The same arguments give the same bytes.
pub fn big_message(size_bytes: usize, seed: u64) -> Vec<u8> {
    let boundary = format!("=_mailferry_{seed:016x}");
    // A date derived from the seed keeps messages with different seeds distinguishable.
    let date = rfc2822_date(1_577_836_800 + seed % (365 * 86_400));
    let head = format!(
        "From: Big Sender <big.sender@example.org>\r\n\
         To: Carol Smith <carol@example.net>\r\n\
         Subject: Big attachment (seed {seed}, {size_bytes} bytes)\r\n\
         Date: {date}\r\n\
         Message-ID: <big-{seed}-{size_bytes}@mailferry.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\
         \r\n\
         This is a multi-part message in MIME format.\r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         The attached file holds pseudo-random data generated from seed {seed}.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: application/octet-stream; name=\"data-{seed}.bin\"\r\n\
         Content-Disposition: attachment; filename=\"data-{seed}.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n"
    );
    let tail = format!("--{boundary}--\r\n");
    let budget = size_bytes.saturating_sub(head.len() + tail.len());
    // A full base64 line carries 57 bytes in 76 characters plus CRLF.
    let mut data_len = budget / 78 * 57;
    let rest = budget % 78;
    if rest > 6 {
        data_len += (rest - 2) / 4 * 3;
    }
    let mut rng = SplitMix64(seed);
    let mut data = Vec::with_capacity(data_len + 8);
    while data.len() < data_len {
        data.extend_from_slice(&rng.next().to_le_bytes());
    }
    data.truncate(data_len);

    let mut message = Vec::with_capacity(size_bytes + 128);
    message.extend_from_slice(head.as_bytes());
    for line in data.chunks(57) {
        message.extend_from_slice(STANDARD.encode(line).as_bytes());
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(tail.as_bytes());
    message
}

/// A small deterministic generator (SplitMix64): the same seed gives the same test data.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next pseudo-random number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `len` random lowercase letters in CRLF lines of 71: a message body that differs from
    /// seed to seed.
    pub fn text(&mut self, len: usize) -> String {
        (0..len)
            .map(|k| {
                if k % 72 == 71 {
                    '\n'
                } else {
                    char::from(b'a' + (self.next() % 26) as u8)
                }
            })
            .collect::<String>()
            .replace('\n', "\r\n")
    }
}

/// RFC 5322 date, in UTC: `Wed, 01 Jan 2020 00:00:00 +0000`.
fn rfc2822_date(seconds: u64) -> String {
    let seconds = i64::try_from(seconds).expect("a date within chrono's range");
    DateTime::<Utc>::from_timestamp(seconds, 0)
        .expect("a date within chrono's range")
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}
