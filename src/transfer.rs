//! The transfer engine: streams planned messages from the source to the target.
//!
//! One thread (the caller's) fetches from the source, which is read over a single connection
//! (POP3 maildrops are often locked to one session, and pipelined reads are far faster than
//! the target's writes anyway). Messages are grouped into batches bounded by bytes and count
//! and handed over a bounded channel to upload workers, each owning its own target
//! connection. The channel's bound is the back-pressure that keeps memory flat whatever the
//! mailbox size. The engine reports what happens to an [`Observer`] and prints nothing.

use std::sync::Mutex;

use crossbeam_channel::bounded;

use crate::error::Error;
use crate::index::SourceMessage;
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
pub trait Source {
    /// The folders to copy (a POP3 maildrop has one: `INBOX`).
    fn folders(&mut self) -> Result<Vec<String>, Error>;
    /// Indexes a folder: identity, size, flags and date of every message, from headers only.
    fn index(&mut self, folder: &str) -> Result<Vec<SourceMessage>, Error>;
    /// Fetches the given messages, in order, handing each to `deliver`. Stops early, without
    /// error, when `deliver` returns `false`.
    fn fetch(
        &mut self,
        folder: &str,
        messages: Vec<SourceMessage>,
        deliver: &mut dyn FnMut(Outgoing) -> bool,
    ) -> Result<(), Error>;
}

/// An IMAP-like target: folders, an index of what it holds, and batched uploads.
pub trait Target: Send {
    /// Creates the folder if it does not exist.
    fn ensure_folder(&mut self, folder: &str) -> Result<(), Error>;
    /// Counts the identities of the messages in a folder.
    fn index(&mut self, folder: &str) -> Result<crate::index::TargetIndex, Error>;
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

/// An observer that ignores everything.
pub struct Ignore;

impl Observer for Ignore {}

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

/// Copies one folder's plan. Returns the first connection error, if any worker or the source
/// failed; messages the target refused are reported to the observer and do not stop the copy.
pub fn copy_folder(
    plan: &FolderPlan,
    source: &mut dyn Source,
    connect_target: &TargetConnector<'_>,
    settings: TransferSettings,
    observer: &dyn Observer,
) -> Result<(), Error> {
    observer.folder_started(plan);
    if plan.to_copy.is_empty() {
        observer.folder_finished(&plan.source_folder);
        return Ok(());
    }
    let workers = settings.connections.clamp(1, plan.to_copy.len());
    let (batches_tx, batches_rx) = bounded::<Vec<Outgoing>>(workers);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let folder = plan.target_folder.as_str();

    std::thread::scope(|scope| {
        for _ in 0..workers {
            let batches = batches_rx.clone();
            let first_error = &first_error;
            scope.spawn(move || {
                let result = connect_target().and_then(|mut target| {
                    for batch in batches.iter() {
                        upload(target.as_mut(), folder, plan, batch, observer)?;
                    }
                    Ok(())
                });
                if let Err(err) = result {
                    first_error.lock().unwrap().get_or_insert(err);
                }
                // Dropping the receiver when every worker is gone makes the fetcher's next
                // send fail, which stops the source promptly.
            });
        }
        drop(batches_rx);

        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let fetched = source.fetch(
            &plan.source_folder,
            plan.to_copy.clone(),
            &mut |outgoing: Outgoing| {
                batch_bytes += outgoing.raw.len() as u64;
                batch.push(outgoing);
                if batch_bytes >= settings.batch_bytes || batch.len() >= settings.batch_messages {
                    batch_bytes = 0;
                    batches_tx.send(std::mem::take(&mut batch)).is_ok()
                } else {
                    true
                }
            },
        );
        if !batch.is_empty() {
            let _ = batches_tx.send(batch);
        }
        drop(batches_tx);
        if let Err(err) = fetched {
            first_error.lock().unwrap().get_or_insert(err);
        }
    });
    observer.folder_finished(&plan.source_folder);
    match first_error.into_inner().unwrap() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

fn upload(
    target: &mut dyn Target,
    folder: &str,
    plan: &FolderPlan,
    batch: Vec<Outgoing>,
    observer: &dyn Observer,
) -> Result<(), Error> {
    let outcomes = target.append(folder, &batch)?;
    for (outgoing, outcome) in batch.iter().zip(outcomes) {
        match outcome {
            Ok(()) => observer.message_copied(&plan.source_folder, &outgoing.message),
            Err(reason) => observer.message_failed(&plan.source_folder, &outgoing.message, &reason),
        }
    }
    Ok(())
}
