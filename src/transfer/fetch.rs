//! Fetching a folder's planned messages from the source, resumed on a fresh connection after a
//! break, with reads that do not match their announced size read once more.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use super::{Observer, Retries, SourceConnector, TransferSettings};
use crate::error::Error;
use crate::index::{SourceMessage, read_matches_announced};
use crate::plan::FolderPlan;
use crate::store::{Fetched, Relocated, Source, Unreadable};

/// Fetches the plan's messages. When the source connection breaks (a transient failure, see
/// [`Error::is_transient`]), opens a new one, replacing `source`, finds the messages not yet
/// delivered again ([`Source::relocate`]: for POP3, message numbers are valid in one session
/// only) and fetches those, up to `settings.retries` times for the folder, with the upload
/// workers' backoff. A message is never delivered twice: what was delivered before the break
/// is left out of the new fetch.
///
/// A message whose bytes do not match the size the source announced
/// ([`read_matches_announced`]) is never delivered: once the rest is fetched, it is read again
/// on a fresh connection (GNU Mailutils pop3d serves the header only for `RETR` after `TOP` in
/// one session, and whole on a session without), and if still wrong it is unreadable.
pub(super) fn fetch_resuming(
    plan: &FolderPlan,
    source: &mut Box<dyn Source>,
    connect_source: &SourceConnector<'_>,
    settings: TransferSettings,
    observer: &dyn Observer,
    deliver: &mut dyn FnMut(Result<Fetched<'_>, Unreadable>) -> bool,
) -> Result<(), Error> {
    let folder = plan.source_folder.as_str();
    // Borrowed from the plan until a break leaves only some to fetch: the source takes its
    // own list of the messages, which it shares with the plan.
    let mut pending = Cow::Borrowed(plan.to_copy.as_slice());
    let mut retries = Retries {
        settings,
        observer,
        done: 0,
    };
    // Read wrong once, with why, to read again on a fresh connection; `rereading` once that
    // is under way.
    let mut misread: Vec<(Arc<SourceMessage>, String)> = Vec::new();
    let mut rereading = false;
    loop {
        let mut delivered = HashSet::new();
        let mut stopped = false;
        let result = source.fetch(folder, pending.to_vec(), &mut |fetched| {
            let fetched = match fetched {
                Ok(read) if !read_matches_announced(read.message.size, &read.raw) => {
                    let reason = format!(
                        "the server sent {} bytes for a message it listed as {}; not copied",
                        read.raw.len(),
                        read.message.size
                    );
                    if !rereading {
                        delivered.insert(read.message.key);
                        misread.push((read.message, reason));
                        return true;
                    }
                    Err(Unreadable {
                        message: read.message,
                        reason,
                    })
                }
                other => other,
            };
            delivered.insert(match &fetched {
                Ok(outgoing) => outgoing.message.key,
                Err(unreadable) => unreadable.message.key,
            });
            stopped = !deliver(fetched);
            !stopped
        });
        let cause = match result {
            Err(err) if err.is_transient() && !stopped && retries.left() => Some(err),
            Ok(()) if !stopped && !rereading && !misread.is_empty() => None,
            other => return other,
        };
        let again = match cause {
            Some(_) => {
                pending
                    .to_mut()
                    .retain(|message| !delivered.contains(&message.key));
                pending.to_vec()
            }
            None => {
                rereading = true;
                misread
                    .iter()
                    .map(|(message, _)| Arc::clone(message))
                    .collect()
            }
        };
        let relocated = reopen(
            folder,
            again,
            source,
            connect_source,
            &mut retries,
            cause.as_ref(),
        )?;
        let Some(Relocated { found, gone }) = relocated else {
            let Some(err) = cause else {
                // A source that cannot find them again: the first read's verdict stands.
                for (message, reason) in misread {
                    if !deliver(Err(Unreadable { message, reason })) {
                        break;
                    }
                }
                return Ok(());
            };
            return Err(err);
        };
        for unreadable in gone {
            if !deliver(Err(unreadable)) {
                return Ok(());
            }
        }
        pending = Cow::Owned(found);
    }
}

/// Lets go of `source` and opens a new connection in its place, on which it finds `messages`
/// again ([`Source::relocate`]; `None` when this source cannot). After a break (`cause`), and
/// after each failed attempt, the next waits its backoff and counts against
/// `settings.retries`; a connection opened to read messages again, with no break before it,
/// is opened at once.
fn reopen(
    folder: &str,
    messages: Vec<Arc<SourceMessage>>,
    source: &mut Box<dyn Source>,
    connect_source: &SourceConnector<'_>,
    retries: &mut Retries<'_>,
    cause: Option<&Error>,
) -> Result<Option<Relocated>, Error> {
    source.abandon();
    let mut failed: Option<Error> = None;
    loop {
        if let Some(cause) = failed.as_ref().or(cause) {
            retries.wait(cause);
        }
        let reopened = connect_source().and_then(|mut fresh| {
            let relocated = fresh.relocate(folder, messages.clone())?;
            *source = fresh;
            Ok(relocated)
        });
        match reopened {
            Err(again) if again.is_transient() && retries.left() => {
                failed = Some(again);
            }
            other => return other,
        }
    }
}
