//! Integration-test harness: a real, private Dovecot per test, and the `fixtures/` mailbox.
//! One job per module: [`dovecot`] (a server's lifecycle and doveadm), [`maildir`] (reading
//! what Dovecot stored), [`imap_session`] (a tiny IMAP client for the harnesses), [`mutf7`]
//! (folder names), [`process`] (bounded child processes), [`ports`], [`mail`] (test messages),
//! [`binary`] (mailferry's command line), [`mailutils`], [`relay`] and [`quirks`]. Every public
//! name is re-exported here, so tests say `support::Dovecot`, `support::mailferry`, ...
//!
//! Include it with `mod support;` from a file under `tests/`. Each test binary uses a subset, so
//! dead-code warnings are off for the module.
//!
//! ```ignore
//! mod support;
//! use support::{Dovecot, normalize_crlf};
//!
//! let dovecot = Dovecot::start();
//! dovecot.deliver("alice", "INBOX", b"Subject: hi\r\n\r\nbody\r\n");
//! // ... run mailferry from alice's POP3S (127.0.0.1:dovecot.pop3s_port(), password
//! //     support::password("alice"), pinned cert dovecot.cert_path()) to bob's IMAPS ...
//! let copies = dovecot.messages("bob", "INBOX");
//! assert_eq!(normalize_crlf(&copies[0].raw), normalize_crlf(b"Subject: hi\r\n\r\nbody\r\n"));
//! ```
//!
//! What Dovecot 2.3.19 does to a message (checked over raw sockets against this configuration;
//! note that Python's `imaplib.append` rewrites line endings itself and hides all this):
//! - On disk a message is stored with **LF** line endings (`mail_save_crlf = no`, the default):
//!   IMAP APPEND and `doveadm save` store the same bytes, CRLF turned into LF. IMAP FETCH and
//!   POP3 RETR serve LF as CRLF again (an LF already preceded by a CR is left alone).
//! - **Lone CR** (not before LF) is kept on disk and served as is. In a run of CRs before an LF
//!   one CR is lost (`a\r\r\nb` comes back as `a\r\nb`), and one CR at the very end of the
//!   message is dropped.
//! - **NUL** is stored as NUL, served as 0x80 over IMAP and as NUL over POP3.
//! - A missing final line ending stays missing on disk and over IMAP. POP3 RETR cannot show it:
//!   Dovecot adds a CRLF before the terminating `.` line, while its `+OK N octets` and LIST
//!   sizes still count the message without it.
//! - 8-bit bytes are kept.
//! - The maildir file's **mtime is the INTERNALDATE**: `APPEND ... "05-Mar-2019 08:52:37 +0200"`
//!   gave a file with mtime 2019-03-05 06:52:37 UTC, and FETCH INTERNALDATE returned that
//!   instant (written in UTC). `doveadm save` gives the time of delivery.
//! - Folders use the Maildir++ layout: folder `A/B` is `Maildir/.A.B`, non-ASCII names are
//!   modified UTF-7 on disk (`Entwürfe/2019` is `Maildir/.Entw&APw-rfe.2019`), and a `.` inside
//!   a folder name is refused ("Character not allowed in mailbox name: '.'").
#![allow(dead_code)]

pub mod binary;
pub mod captured;
pub mod dovecot;
pub mod imap_session;
pub mod mail;
pub mod maildir;
pub mod mailutils;
pub mod mirror_pair;
pub mod mutf7;
pub mod ports;
pub mod process;
pub mod quirks;
pub mod relay;

// Each test binary uses a subset of these.
#[allow(unused_imports)]
pub use binary::{Accounts, RUN_LIMIT, account_url, mailferry, mailferry_process};
#[allow(unused_imports)]
pub use captured::Captured;
#[allow(unused_imports)]
pub use dovecot::{Dovecot, INBOX_PREFIXED};
#[allow(unused_imports)]
pub use mail::{SplitMix64, big_message, fixtures, normalize_crlf};
#[allow(unused_imports)]
pub use maildir::{StoredMessage, read_maildir};
#[allow(unused_imports)]
pub use mirror_pair::MirrorPair;
#[allow(unused_imports)]
pub use ports::free_port;

// The sibling harnesses (`mailutils`) reach these through `super::`.
use imap_session::{IMAP_TIMEOUT, ImapSession, Untagged, imap_date, imap_mailbox};
use mutf7::mutf7_decode;
use process::run_bounded;

/// The users every [`Dovecot`] knows; each one's password is [`password`]`(user)`.
pub const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// The password of a test user.
pub fn password(user: &str) -> String {
    format!("{user}-Tr0ub4dor-pw")
}
