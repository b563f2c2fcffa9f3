//! IMAP4rev1 client: a sans-I/O codec (command encoding in [`command`], response framing and
//! parsing in [`response`], with the index's FETCH lines read quickly in [`fetch_line`],
//! mailbox names in [`mutf7`], NAMESPACE answers in [`namespace`]) and a blocking
//! [`ImapClient`] over a [`crate::net::Connection`].
//!
//! Our own client rather than a crate because none offers MULTIAPPEND with LITERAL+ (3–6×
//! faster uploads), reports the server's reason for a refused APPEND, or streams a bulk FETCH;
//! `imap-proto` 0.17 parses the responses because it tolerates the 8-bit text real servers send.

mod client;
pub mod command;
pub mod fetch_line;
pub mod mutf7;
pub mod namespace;
pub mod response;

pub use client::{
    AppendMessage, FetchedMessage, FolderStatus, ImapClient, IndexItems, IndexRecord, Mailbox,
    MailboxList, MailboxStatus, MessageUid, SentAppend,
};
pub use response::StorageQuota;
