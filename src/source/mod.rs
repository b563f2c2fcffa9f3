//! Mail sources, read-only unless a delete option says otherwise. [`Pop3Source`] reads a POP3
//! maildrop: indexed with pipelined `TOP n 0` (only for UIDLs not seen before, when the caller
//! remembers them), fetched with pipelined `RETR`. [`ImapSource`] reads every folder of an IMAP
//! account with EXAMINE and `BODY.PEEK`, so not even `\Seen` changes.

mod imap;
mod pop3;

use std::collections::HashMap;
use std::sync::Arc;

pub use imap::ImapSource;
pub use pop3::{POP3_FOLDER, Pop3Source};

use crate::index::SourceMessage;
use crate::transfer::{Fetched, Unreadable};

/// Largest message mailferry will read from a server (a bound against a runaway server).
const MAX_MESSAGE_SIZE: u64 = 1 << 30;

/// Reports the messages over [`MAX_MESSAGE_SIZE`] as unreadable and returns the others by
/// key, or `None` when `deliver` asked to stop.
fn deliver_too_large(
    messages: Vec<Arc<SourceMessage>>,
    deliver: &mut dyn FnMut(Result<Fetched<'_>, Unreadable>) -> bool,
) -> Option<HashMap<u32, Arc<SourceMessage>>> {
    let mut readable = HashMap::with_capacity(messages.len());
    for message in messages {
        if message.size > MAX_MESSAGE_SIZE {
            let reason = format!(
                "{} bytes: larger than the {} bytes mailferry reads",
                message.size, MAX_MESSAGE_SIZE
            );
            if !deliver(Err(Unreadable { message, reason })) {
                return None;
            }
        } else {
            readable.insert(message.key, message);
        }
    }
    Some(readable)
}
