//! The transfer engine: streams planned messages from the source to the target.
//!
//! Work is sharded by folder, because several connections into one mailbox are no faster on
//! a server that locks the mailbox per write (Dovecot), while separate mailboxes scale. Up to
//! `connections` folder lanes run at once, each with its own source connection; the first
//! lane reuses the connection the plan was made on (a POP3 maildrop, with its single folder,
//! is never opened twice: servers often lock it to one session).
//!
//! Within a folder, the lane's thread fetches and groups messages into batches bounded by
//! bytes and count, and hands them over a bounded channel to upload workers, each owning its
//! own target connection. The channel's bound is the back-pressure that keeps memory flat
//! whatever the mailbox size. The engine reports what happens to an [`Observer`] and prints
//! nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::bounded;

use crate::error::Error;
use crate::folders::FolderInfo;
use crate::imap::FolderStatus;
use crate::index::{KnownMessages, SourceMessage};
use crate::plan::FolderPlan;

/// A message on its way to the target.
#[derive(Debug)]
pub struct Outgoing {
    /// What the source index said about it.
    pub message: SourceMessage,
    /// The message bytes exactly as the source served them.
    pub raw: Vec<u8>,
}

/// A mail source: lists folders, indexes them from headers, streams message bodies.
pub trait Source: Send {
    /// The source's folders (a POP3 maildrop has one: `INBOX`).
    fn folders(&mut self) -> Result<Vec<FolderInfo>, Error>;
    /// Indexes a folder: identity, size, flags and date of every message, from headers only.
    fn index(&mut self, folder: &str) -> Result<Vec<SourceMessage>, Error>;
    /// [`index`](Self::index), reusing what `known` says of messages by their stable id and
    /// returning what is known after this index, for the next run. Sources without stable ids
    /// (the default) read every header and return nothing to keep.
    fn index_known(
        &mut self,
        folder: &str,
        _known: &KnownMessages,
    ) -> Result<(Vec<SourceMessage>, KnownMessages), Error> {
        Ok((self.index(folder)?, KnownMessages::new()))
    }
    /// Deletes these messages from the source, returning how many went. Only POP3 sources
    /// can, for a mirror's `--delete-source-after-days`; the session ends with it.
    fn delete(&mut self, folder: &str, _messages: &[SourceMessage]) -> Result<usize, Error> {
        Err(Error::usage(format!(
            "{folder}: this source does not delete messages"
        )))
    }
    /// A cheap summary of the folder that changes whenever its messages or flags do, when the
    /// source has one (IMAP with CONDSTORE); `None` otherwise.
    fn status(&mut self, _folder: &str) -> Result<Option<FolderStatus>, Error> {
        Ok(None)
    }
    /// Fetches the given messages, handing each to `deliver`, or the reason it cannot be read
    /// (refused by the server, too large, gone). Stops early, without error, when `deliver`
    /// returns `false`. The error is for the connection as a whole.
    fn fetch(
        &mut self,
        folder: &str,
        messages: Vec<SourceMessage>,
        deliver: &mut dyn FnMut(Result<Outgoing, Unreadable>) -> bool,
    ) -> Result<(), Error>;
}

/// A source message that cannot be read, and why.
#[derive(Debug)]
pub struct Unreadable {
    /// What the source index said about it.
    pub message: SourceMessage,
    /// Why it cannot be read.
    pub reason: String,
}

/// An IMAP-like target: folders, an index of what it holds, and batched uploads.
pub trait Target: Send {
    /// The folders that exist on the target.
    fn folders(&mut self) -> Result<Vec<FolderInfo>, Error>;
    /// Creates (and subscribes) the folder if it does not exist.
    fn ensure_folder(&mut self, folder: &str) -> Result<(), Error>;
    /// Counts the identities of the messages in a folder.
    fn index(&mut self, folder: &str) -> Result<crate::index::TargetIndex, Error>;
    /// A cheap summary of the folder, as [`Source::status`].
    fn status(&mut self, folder: &str) -> Result<Option<FolderStatus>, Error>;
    /// Adds some flags to these messages and removes others, leaving the rest alone.
    fn change_flags(
        &mut self,
        folder: &str,
        uids: &[u32],
        add: &[String],
        remove: &[String],
    ) -> Result<(), Error>;
    /// Removes these messages (and only these).
    fn delete(&mut self, folder: &str, uids: &[u32]) -> Result<(), Error>;
    /// Uploads a batch. The outer error means the connection failed; otherwise there is one
    /// result per message, `Err` holding the server's reason for refusing that message.
    fn append(
        &mut self,
        folder: &str,
        batch: &[Outgoing],
    ) -> Result<Vec<Result<(), String>>, Error>;
}

/// Opens a new, logged-in target connection; called once per upload worker.
pub type TargetConnector<'a> = dyn Fn() -> Result<Box<dyn Target>, Error> + Sync + 'a;

/// Opens a new, logged-in source connection; called once per folder lane but the first.
pub type SourceConnector<'a> = dyn Fn() -> Result<Box<dyn Source>, Error> + Sync + 'a;

/// Receives the engine's events. Every method has a default that ignores the event.
pub trait Observer: Sync {
    /// A folder's copy begins.
    fn folder_started(&self, _plan: &FolderPlan) {}
    /// A message was stored on the target.
    fn message_copied(&self, _folder: &str, _message: &SourceMessage) {}
    /// The target refused a message, or it could not be transferred.
    fn message_failed(&self, _folder: &str, _message: &SourceMessage, _reason: &str) {}
    /// A folder's copy ended.
    fn folder_finished(&self, _folder: &str) {}
}

/// Passes every event to each of several observers.
pub struct Fanout<'a>(pub Vec<&'a dyn Observer>);

impl Observer for Fanout<'_> {
    fn folder_started(&self, plan: &FolderPlan) {
        self.0.iter().for_each(|o| o.folder_started(plan));
    }
    fn message_copied(&self, folder: &str, message: &SourceMessage) {
        self.0
            .iter()
            .for_each(|o| o.message_copied(folder, message));
    }
    fn message_failed(&self, folder: &str, message: &SourceMessage, reason: &str) {
        self.0
            .iter()
            .for_each(|o| o.message_failed(folder, message, reason));
    }
    fn folder_finished(&self, folder: &str) {
        self.0.iter().for_each(|o| o.folder_finished(folder));
    }
}

/// How the engine sizes its work.
#[derive(Debug, Clone, Copy)]
pub struct TransferSettings {
    /// Upload connections to the target.
    pub connections: usize,
    /// A batch closes when it reaches this many bytes (a bigger message travels alone).
    pub batch_bytes: u64,
    /// A batch closes when it holds this many messages.
    pub batch_messages: usize,
}

impl Default for TransferSettings {
    fn default() -> Self {
        TransferSettings {
            connections: 2,
            batch_bytes: 2 * 1024 * 1024,
            batch_messages: 100,
        }
    }
}

/// Copies every folder's plan. Returns the first connection error of any lane or worker;
/// messages the target refused are reported to the observer and do not stop the copy.
pub fn copy_folders(
    plans: &[FolderPlan],
    source: &mut dyn Source,
    connect_source: &SourceConnector<'_>,
    connect_target: &TargetConnector<'_>,
    settings: TransferSettings,
    observer: &dyn Observer,
) -> Result<(), Error> {
    let (queue_tx, queue) = crossbeam_channel::unbounded();
    let mut busy = 0;
    for plan in plans {
        if plan.to_copy.is_empty() {
            observer.folder_started(plan);
            observer.folder_finished(&plan.source_folder);
        } else {
            busy += 1;
            queue_tx.send(plan).expect("the queue is open");
        }
    }
    drop(queue_tx);
    let lanes = settings.connections.clamp(1, busy.max(1));
    let lane_settings = TransferSettings {
        connections: (settings.connections / lanes).max(1),
        ..settings
    };
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let run_lane = |source: &mut dyn Source| {
        for plan in queue.iter() {
            if first_error.lock().unwrap().is_some() {
                break;
            }
            if let Err(err) = copy_folder(plan, source, connect_target, lane_settings, observer) {
                first_error.lock().unwrap().get_or_insert(err);
                break;
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..lanes {
            scope.spawn(|| match connect_source() {
                Ok(mut source) => run_lane(source.as_mut()),
                Err(err) => {
                    first_error.lock().unwrap().get_or_insert(err);
                }
            });
        }
        run_lane(source);
    });
    match first_error.into_inner().unwrap() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Copies one folder over up to `settings.connections` upload workers.
fn copy_folder(
    plan: &FolderPlan,
    source: &mut dyn Source,
    connect_target: &TargetConnector<'_>,
    settings: TransferSettings,
    observer: &dyn Observer,
) -> Result<(), Error> {
    observer.folder_started(plan);
    // A worker without a batch to upload would only hold a login open.
    let batches = (plan.to_copy.len().div_ceil(settings.batch_messages))
        .max(plan.bytes_to_copy().div_ceil(settings.batch_bytes) as usize);
    let workers = settings
        .connections
        .clamp(1, batches.clamp(1, plan.to_copy.len()));
    let (batches_tx, batches_rx) = bounded::<Vec<Outgoing>>(workers);
    let upload_error: Mutex<Option<Error>> = Mutex::new(None);
    let connect_error: Mutex<Option<Error>> = Mutex::new(None);
    let connected = AtomicUsize::new(0);
    let folder = plan.target_folder.as_str();

    std::thread::scope(|scope| {
        for _ in 0..workers {
            let batches = batches_rx.clone();
            let (upload_error, connect_error, connected) =
                (&upload_error, &connect_error, &connected);
            scope.spawn(move || {
                // A worker that cannot log in (a server's per-user connection limit, say)
                // leaves the batches to the others; only when none connects is it fatal.
                let mut target = match connect_target() {
                    Ok(target) => target,
                    Err(err) => {
                        connect_error.lock().unwrap().get_or_insert(err);
                        return;
                    }
                };
                connected.fetch_add(1, Ordering::SeqCst);
                for batch in batches.iter() {
                    if let Err(err) = upload(target.as_mut(), folder, plan, &batch, observer) {
                        lost(plan, &batch, observer);
                        upload_error.lock().unwrap().get_or_insert(err);
                        break;
                    }
                }
                // When every worker is gone, its receiver with it, the fetcher's next send
                // fails, which stops the source promptly.
                drop(batches);
            });
        }
        drop(batches_rx);

        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let send = |batch: Vec<Outgoing>| match batches_tx.send(batch) {
            Ok(()) => true,
            Err(unsent) => {
                lost(plan, &unsent.0, observer);
                false
            }
        };
        let fetched = source.fetch(
            &plan.source_folder,
            plan.to_copy.clone(),
            &mut |fetched: Result<Outgoing, Unreadable>| {
                let outgoing = match fetched {
                    Ok(outgoing) => outgoing,
                    Err(unreadable) => {
                        let Unreadable { message, reason } = unreadable;
                        observer.message_failed(&plan.source_folder, &message, &reason);
                        return true;
                    }
                };
                batch_bytes += outgoing.raw.len() as u64;
                batch.push(outgoing);
                if batch_bytes >= settings.batch_bytes || batch.len() >= settings.batch_messages {
                    batch_bytes = 0;
                    send(std::mem::take(&mut batch))
                } else {
                    true
                }
            },
        );
        if !batch.is_empty() {
            send(batch);
        }
        drop(batches_tx);
        if let Err(err) = fetched {
            upload_error.lock().unwrap().get_or_insert(err);
        }
    });
    observer.folder_finished(&plan.source_folder);
    let no_worker = connected.into_inner() == 0;
    match (
        upload_error.into_inner().unwrap(),
        connect_error.into_inner().unwrap(),
    ) {
        (Some(err), _) => Err(err),
        (None, Some(err)) if no_worker => Err(err),
        _ => Ok(()),
    }
}

/// Reports a batch whose upload was cut short by a broken connection.
fn lost(plan: &FolderPlan, batch: &[Outgoing], observer: &dyn Observer) {
    for outgoing in batch {
        observer.message_failed(
            &plan.source_folder,
            &outgoing.message,
            "the connection to the target broke during its upload; a re-run copies it if it is missing",
        );
    }
}

fn upload(
    target: &mut dyn Target,
    folder: &str,
    plan: &FolderPlan,
    batch: &[Outgoing],
    observer: &dyn Observer,
) -> Result<(), Error> {
    let outcomes = target.append(folder, batch)?;
    for (outgoing, outcome) in batch.iter().zip(outcomes) {
        match outcome {
            Ok(()) => observer.message_copied(&plan.source_folder, &outgoing.message),
            Err(reason) => observer.message_failed(&plan.source_folder, &outgoing.message, &reason),
        }
    }
    Ok(())
}
