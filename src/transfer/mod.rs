//! The transfer engine: streams planned messages from the source to the target.
//!
//! Work is sharded by folder, because several connections into one mailbox are no faster on
//! a server that locks the mailbox per write (Dovecot), while separate mailboxes scale. Up to
//! `connections` folder lanes run at once, each with its own source connection; the first
//! lane reuses the connection the plan was made on (a POP3 maildrop, with its single folder,
//! is never opened twice: servers often lock it to one session).
//!
//! Each lane's thread fetches its folders one after the other (behind a small folder, the
//! next one is asked for at once, [`Source::fetch_next`], so a slow link does not cost a
//! round trip of waiting per folder), groups their messages into
//! batches bounded by bytes and count, and hands them over a bounded channel to the lane's
//! upload workers, each owning its own target connection and serving the lane's folders in
//! turn, without a pause between them. The channel's
//! bound, and a byte budget over every body in memory, are the back-pressure that keeps
//! memory flat whatever the mailbox size. The engine reports what happens to an [`Observer`]
//! and prints nothing.
//!
//! A worker sends its next batch without waiting for the server's answer to the previous
//! ones (a few batches in flight when the target takes LITERAL+): over a slow link each
//! answer is a round trip away, and waiting for it would leave the link idle.
//!
//! An upload worker whose connection breaks opens a new one (`TransferSettings::retries` times
//! per break, with exponential backoff), re-indexes the folder to learn which messages of the
//! batches in flight the server stored before the break, and sends only the others; a
//! `Ledger` shared by every worker keeps that count exact when one identity occurs in several
//! batches.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use crate::error::Error;
use crate::plan::FolderPlan;
use crate::store::{Fetched, Outgoing, Source, Target, Unreadable};
use crate::uidl_keeping;

mod budget;
mod fetch;
mod observer;
mod pool;
mod settings;
mod upload;

use budget::{ByteBudget, Charge};
use fetch::fetch_resuming;
pub use observer::{Fanout, Observer, Unobserved};
pub use pool::{SourceConnector, TargetConnector, TargetPool};
use settings::Retries;
pub use settings::{MAX_RETRY_DELAY, MAX_THROTTLE_DELAY, TransferSettings};
use upload::{Ledger, Uploader};

/// Messages of one folder uploaded together, and the memory they hold.
struct Batch<'b> {
    plan: &'b FolderPlan,
    messages: Vec<Outgoing>,
    charge: Charge<'b>,
}

/// Copies every folder's plan. Returns the first connection error of any lane or worker (an
/// upload worker first retries a broken target connection, see [`TransferSettings::retries`]);
/// messages the target refused are reported to the observer and do not stop the copy.
pub fn copy_folders(
    plans: &[&FolderPlan],
    source: &mut Box<dyn Source>,
    connect_source: &SourceConnector<'_>,
    targets: &TargetPool<'_>,
    settings: TransferSettings,
    observer: &dyn Observer,
) -> Result<(), Error> {
    let (empty, mut busy): (Vec<&FolderPlan>, Vec<&FolderPlan>) = plans
        .iter()
        .copied()
        .partition(|plan| plan.to_copy.is_empty());
    empty
        .into_iter()
        .for_each(|plan| observer.folder_started(plan));
    if busy.is_empty() {
        return Ok(());
    }
    // The biggest folders first: a big folder started last would keep one lane busy long
    // after the others ran out of work.
    busy.sort_by_key(|plan| std::cmp::Reverse(plan.bytes_to_copy()));
    // Filled before any lane starts: a lane finding it empty has nothing left to take. The
    // sender stays, for a lane that must give back a folder it took ahead.
    let (queue_tx, queue) = crossbeam_channel::unbounded();
    busy.iter()
        .for_each(|plan| queue_tx.send(*plan).expect("open"));
    let lanes = settings.connections.clamp(1, busy.len());
    // Each lane has upload workers of its own, so that a connection writes into the lane's
    // folder only: a server that locks a mailbox per write (Dovecot) makes the sessions
    // writing into one mailbox wait for each other. A worker without a batch to upload would
    // only hold a login open.
    let most_batches = busy.iter().map(|plan| settings.batches_of(plan)).max();
    let workers = if settings.concurrent_writers {
        (settings.connections / lanes).clamp(1, most_batches.unwrap_or(1))
    } else {
        1
    };
    let ledger = Ledger::new(plans);
    let budget = ByteBudget::new(settings.memory_budget);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |err| {
        first_error.lock().unwrap().get_or_insert(err);
    };
    let connect_error: Mutex<Option<Error>> = Mutex::new(None);
    let connected = AtomicUsize::new(0);
    // Set when an upload worker gives up: the batches it leaves queued hold memory nobody
    // will give back, so the fetchers must not wait for it.
    let failed = AtomicBool::new(false);

    std::thread::scope(|scope| {
        // A lane's workers serve each of its folders in turn: a worker goes on to the next
        // folder's batches without waiting for the answers to the last folder's, so a folder
        // boundary costs no round trip.
        let open_lane = |mut logged_in: Option<Box<dyn Target>>| {
            let (batches_tx, batches_rx) = bounded::<Batch>(workers);
            for _ in 0..workers {
                let batches = batches_rx.clone();
                let given = logged_in.take();
                let (ledger, budget, failed) = (&ledger, &budget, &failed);
                let (connect_error, connected, fail) = (&connect_error, &connected, &fail);
                scope.spawn(move || {
                    let mut uploader = Uploader::new(targets, settings, observer, ledger);
                    // A worker that cannot log in (a server's per-user connection limit, say)
                    // leaves the batches to the others; only when none connects is it fatal.
                    if let Err(err) = uploader.connect(given) {
                        connect_error.lock().unwrap().get_or_insert(err);
                        return;
                    }
                    connected.fetch_add(1, Ordering::SeqCst);
                    match upload_all(&mut uploader, &batches, budget) {
                        Ok(()) => uploader.release(),
                        Err(err) => {
                            fail(err);
                            failed.store(true, Ordering::SeqCst);
                            budget.wake();
                        }
                    }
                    // When every worker of the lane is gone, its receiver with it, the lane's
                    // next send fails, which stops its source promptly.
                    drop(batches);
                });
            }
            Lane {
                queue: &queue,
                give_back: &queue_tx,
                connect_source,
                settings,
                observer,
                budget: &budget,
                failed: &failed,
                batches: batches_tx,
                first_error: &first_error,
            }
        };
        // A connection left in the pool (the planning one) goes to this lane, which reads on
        // the planning source connection: its messages come first, while every other lane
        // has yet to log in to both servers. Taken by whichever worker started first, it
        // went to another lane half the time, and this one waited for a new login.
        let first_lane = open_lane(targets.take());
        for _ in 1..lanes {
            let (lane, fail) = (open_lane(None), &fail);
            scope.spawn(move || match connect_source() {
                Ok(mut source) => lane.run(&mut source),
                Err(err) => fail(err),
            });
        }
        // Each lane's sender goes with it, and its workers then finish.
        first_lane.run(source);
    });
    let no_worker = connected.into_inner() == 0;
    match (
        first_error.into_inner().unwrap(),
        connect_error.into_inner().unwrap(),
    ) {
        (Some(err), _) => Err(err),
        (None, Some(err)) if no_worker => Err(err),
        _ => Ok(()),
    }
}

/// A folder lane: one source connection that reads folder after folder from the queue and
/// hands their messages, in batches, to the lane's upload workers.
struct Lane<'a, 'p> {
    queue: &'a Receiver<&'p FolderPlan>,
    give_back: &'a Sender<&'p FolderPlan>,
    connect_source: &'a SourceConnector<'a>,
    settings: TransferSettings,
    observer: &'a dyn Observer,
    budget: &'a ByteBudget,
    failed: &'a AtomicBool,
    batches: Sender<Batch<'a>>,
    first_error: &'a Mutex<Option<Error>>,
}

impl<'a, 'p: 'a> Lane<'a, 'p> {
    /// Reads folders until the queue is empty or the copy failed.
    fn run(self, source: &mut Box<dyn Source>) {
        let mut next = self.queue.try_recv().ok();
        while let Some(plan) = next.take() {
            if self.first_error.lock().unwrap().is_some() {
                break;
            }
            // A small folder is read in about a round trip, which the lane would then wait
            // again for the next one: the next is taken now and asked for behind it. Only
            // behind a small one, so a lane never holds a folder another lane could have
            // started long before it gets to it.
            if plan.bytes_to_copy() <= LOOKAHEAD_BYTES {
                next = self.queue.try_recv().ok();
                if let Some(after) = next {
                    source.fetch_next(&after.source_folder, &after.to_copy);
                }
            }
            match self.read_folder(plan, source) {
                Ok(true) => {}
                // Every upload worker of this lane is gone (the one that gave up said why, or
                // none could log in): the folder taken ahead goes to another lane.
                Ok(false) => {
                    if let Some(after) = next {
                        self.give_back
                            .send(after)
                            .expect("the queue outlives the lanes");
                    }
                    break;
                }
                Err(err) => {
                    self.first_error.lock().unwrap().get_or_insert(err);
                    break;
                }
            }
            if next.is_none() {
                next = self.queue.try_recv().ok();
            }
        }
    }

    /// Fetches one folder's messages into batches bounded by bytes and count (and by the
    /// memory budget). Returns whether the upload workers are still there.
    fn read_folder(
        &self,
        plan: &'a FolderPlan,
        source: &mut Box<dyn Source>,
    ) -> Result<bool, Error> {
        let (settings, observer, budget) = (self.settings, self.observer, self.budget);
        observer.folder_started(plan);
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let mut charge = budget.nothing();
        let mut workers_there = true;
        let mut send = |messages, charge| {
            workers_there = match self.batches.send(Batch {
                plan,
                messages,
                charge,
            }) {
                Ok(()) => true,
                Err(unsent) => {
                    lost(plan, &unsent.0.messages, observer);
                    false
                }
            };
            workers_there
        };
        let fetched = fetch_resuming(
            plan,
            source,
            self.connect_source,
            settings,
            observer,
            &mut |fetched: Result<Fetched<'_>, Unreadable>| {
                // An upload worker gave up: the run ends with its error, and the budget no
                // longer bounds what would still be read.
                if self.failed.load(Ordering::SeqCst) {
                    return false;
                }
                let Fetched { message, raw } = match fetched {
                    Ok(fetched) => fetched,
                    Err(unreadable) => {
                        let Unreadable { message, reason } = unreadable;
                        observer.message_failed(&plan.source_folder, &message, &reason);
                        return true;
                    }
                };
                let (message, raw) = if settings.add_uidl_field {
                    uidl_keeping::stamped(message, raw)
                } else {
                    (message, raw)
                };
                let bytes = raw.len() as u64;
                // Waiting for memory with a batch unsent may wait for itself: it waits a
                // little, as answers give bytes back all the time while uploads run, and
                // then sends the batch. Sent at the first wait instead, batches shrank to a
                // message or two whenever the budget was full, each its own APPEND.
                let charged = match batch.is_empty() {
                    true => Some(budget.charge(bytes, self.failed)),
                    false => budget.charge_within(bytes, self.failed, Some(BATCH_PATIENCE)),
                };
                let charged = match charged {
                    Some(charged) => charged,
                    None => {
                        batch_bytes = 0;
                        let full = std::mem::take(&mut batch);
                        if !send(full, std::mem::replace(&mut charge, budget.nothing())) {
                            return false;
                        }
                        budget.charge(bytes, self.failed)
                    }
                };
                charge.absorb(charged);
                batch_bytes += bytes;
                batch.push(Outgoing {
                    message,
                    raw: raw.into_owned(),
                });
                if batch_bytes >= settings.batch_bytes || batch.len() >= settings.batch_messages {
                    batch_bytes = 0;
                    let full = std::mem::take(&mut batch);
                    send(full, std::mem::replace(&mut charge, budget.nothing()))
                } else {
                    true
                }
            },
        );
        if !batch.is_empty() {
            send(batch, charge);
        }
        fetched.map(|()| workers_there)
    }
}

/// The largest folder (bytes to copy) behind which a lane asks for its next folder at once.
const LOOKAHEAD_BYTES: u64 = 16 << 20;

/// How long a fetcher holding an unsent batch waits for memory before it sends the batch:
/// about the time an APPEND batch takes to be answered on loopback.
const BATCH_PATIENCE: Duration = Duration::from_millis(5);

/// How often a worker with answers owed and nothing to send looks whether the fetcher waits
/// for the memory those answers would give back.
const IDLE_CHECK: Duration = Duration::from_millis(1);

/// Uploads every batch from `batches`, then waits for the last answers. A worker with nothing
/// to send reads the answers it is owed as soon as the fetcher waits for the memory they
/// hold, and not before: over a slow link, waiting for an answer is a round trip in which the
/// worker sends nothing.
fn upload_all<'a>(
    uploader: &mut Uploader<'a>,
    batches: &Receiver<Batch<'a>>,
    budget: &ByteBudget,
) -> Result<(), Error> {
    loop {
        let next = if uploader.has_in_flight() {
            batches.recv_timeout(IDLE_CHECK)
        } else {
            batches.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match next {
            Ok(batch) => uploader.upload(batch.plan, batch.messages, batch.charge)?,
            Err(RecvTimeoutError::Timeout) if budget.is_wanted() => uploader.settle_oldest()?,
            Err(RecvTimeoutError::Timeout) if uploader.claims_wanted() => {
                uploader.settle_claims()?;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    uploader.finish()
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

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Condvar};

    use proptest::prelude::*;

    use super::upload::split_stored;
    use super::*;
    use crate::error::SessionError;
    use crate::folders::FolderList;
    use crate::identity::Identity;
    use crate::index::{SourceMessage, TargetIndex};
    use crate::plan;
    use crate::store::{FolderRefused, MessageUid, Outcome, Relocated, Started};

    /// What the fake server does with one message of an upload.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Upload {
        Store,
        /// Refuses the message (NO); only without MULTIAPPEND.
        Refuse,
        /// The connection breaks before the message is stored.
        Break,
        /// The message (with MULTIAPPEND: the batch) is stored, then the connection breaks
        /// before the answer arrives.
        AnswerLost,
        /// The message is stored, and the answer comes once the folder was indexed (or after
        /// 300 ms); only without MULTIAPPEND.
        StoreSlowly,
        /// Nothing is stored: the server answers `NO [THROTTLED]` (with MULTIAPPEND: to the
        /// batch).
        Throttle,
    }

    /// Decides, per message and attempt (from 1), what the server does.
    type Behaviour = dyn Fn(&Server, &SourceMessage, usize) -> Upload + Send + Sync;

    struct Server {
        state: Mutex<ServerState>,
        changed: Condvar,
        multiappend: bool,
        /// Whether its connections take a batch before the previous one was answered.
        pipelined: bool,
        behaviour: Box<Behaviour>,
    }

    #[derive(Default)]
    struct ServerState {
        stored: Vec<Arc<SourceMessage>>,
        /// The folder of each stored message, by key; the ones missing are in INBOX.
        folder_of: HashMap<u32, String>,
        attempts: HashMap<u32, usize>,
        connections: usize,
        /// Connections to refuse (as broken) before the next one succeeds.
        failing_connects: usize,
        indexes: usize,
    }

    impl Server {
        fn new(
            multiappend: bool,
            behaviour: impl Fn(&Server, &SourceMessage, usize) -> Upload + Send + Sync + 'static,
        ) -> Arc<Self> {
            Arc::new(Server {
                state: Mutex::new(ServerState::default()),
                changed: Condvar::new(),
                multiappend,
                pipelined: false,
                behaviour: Box::new(behaviour),
            })
        }

        /// [`Server::new`], pipelining.
        fn pipelined(
            behaviour: impl Fn(&Server, &SourceMessage, usize) -> Upload + Send + Sync + 'static,
        ) -> Arc<Self> {
            let server = Arc::into_inner(Server::new(true, behaviour)).expect("just made");
            Arc::new(Server {
                pipelined: true,
                ..server
            })
        }

        /// Waits (at most `limit`) until `done` holds; whether it does.
        fn wait_until(&self, limit: Duration, done: impl Fn(&ServerState) -> bool) -> bool {
            let state = self.state.lock().unwrap();
            let (state, _) = self
                .changed
                .wait_timeout_while(state, limit, |state| !done(state))
                .unwrap();
            done(&state)
        }

        fn decide(&self, message: &SourceMessage) -> Upload {
            let attempt = {
                let mut state = self.state.lock().unwrap();
                let attempt = state.attempts.entry(message.key).or_default();
                *attempt += 1;
                *attempt
            };
            (self.behaviour)(self, message, attempt)
        }

        fn store(&self, folder: &str, messages: &[&Outgoing]) {
            let mut state = self.state.lock().unwrap();
            for outgoing in messages {
                let message = outgoing.message.clone();
                state.folder_of.insert(message.key, folder.to_owned());
                state.stored.push(message);
            }
            self.changed.notify_all();
        }

        fn connect(server: &Arc<Server>) -> Result<Box<dyn Target>, Error> {
            let mut state = server.state.lock().unwrap();
            state.connections += 1;
            if state.failing_connects > 0 {
                state.failing_connects -= 1;
                return Err(broken());
            }
            Ok(Box::new(FakeTarget {
                server: Arc::clone(server),
                sent: HashMap::new(),
                broken: false,
            }))
        }

        fn stored_keys(&self) -> Vec<u32> {
            let mut keys: Vec<u32> = self
                .state
                .lock()
                .unwrap()
                .stored
                .iter()
                .map(|m| m.key)
                .collect();
            keys.sort_unstable();
            keys
        }
    }

    fn broken() -> Error {
        Error::Connection {
            server: "imaps://fake".into(),
            source: SessionError::Closed,
            hint: None,
        }
    }

    fn throttled() -> Error {
        Error::Connection {
            server: "imaps://fake".into(),
            source: SessionError::Throttled("[THROTTLED] slow down".into()),
            hint: None,
        }
    }

    struct FakeTarget {
        server: Arc<Server>,
        /// Pipelined batches: what the server did with each, by number.
        sent: HashMap<u64, Result<Vec<Outcome>, Error>>,
        /// A pipelined connection that broke takes nothing more.
        broken: bool,
    }

    impl Target for FakeTarget {
        fn folders(&mut self) -> Result<FolderList, Error> {
            Ok(FolderList::default())
        }
        fn create_and_index(
            &mut self,
            _create: &[String],
            folders: &[String],
        ) -> Result<Vec<Result<TargetIndex, FolderRefused>>, Error> {
            Ok(self.index_all(folders)?.into_iter().map(Ok).collect())
        }
        fn index(&mut self, folder: &str) -> Result<TargetIndex, Error> {
            let mut state = self.server.state.lock().unwrap();
            state.indexes += 1;
            self.server.changed.notify_all();
            let in_folder = |m: &&Arc<SourceMessage>| {
                state.folder_of.get(&m.key).map_or("INBOX", String::as_str) == folder
            };
            Ok(state
                .stored
                .iter()
                .filter(in_folder)
                .map(|m| m.identity.clone())
                .collect())
        }
        fn append(&mut self, folder: &str, batch: &[Outgoing]) -> Result<Vec<Outcome>, Error> {
            let server = &self.server;
            if server.multiappend && batch.len() > 1 {
                // All or nothing; the first message that breaks decides.
                let decisions: Vec<Upload> =
                    batch.iter().map(|o| server.decide(&o.message)).collect();
                assert!(
                    !decisions.contains(&Upload::Refuse)
                        && !decisions.contains(&Upload::StoreSlowly),
                    "only for single APPENDs"
                );
                if decisions.contains(&Upload::Break) {
                    return Err(broken());
                }
                if decisions.contains(&Upload::Throttle) {
                    return Err(throttled());
                }
                server.store(folder, &batch.iter().collect::<Vec<_>>());
                if decisions.contains(&Upload::AnswerLost) {
                    return Err(broken());
                }
                return Ok(vec![Ok(None); batch.len()]);
            }
            let mut outcomes = Vec::new();
            for outgoing in batch {
                match server.decide(&outgoing.message) {
                    Upload::Store => {
                        server.store(folder, &[outgoing]);
                        outcomes.push(Ok(None));
                    }
                    Upload::StoreSlowly => {
                        server.store(folder, &[outgoing]);
                        server.wait_until(Duration::from_millis(300), |s| s.indexes > 0);
                        outcomes.push(Ok(None));
                    }
                    Upload::Refuse => outcomes.push(Err("NO [OVERQUOTA] full".into())),
                    Upload::Break => return Err(broken()),
                    Upload::Throttle => return Err(throttled()),
                    Upload::AnswerLost => {
                        server.store(folder, &[outgoing]);
                        return Err(broken());
                    }
                }
            }
            Ok(outcomes)
        }

        /// The server acts on a pipelined batch as it arrives; its answer comes later.
        fn start_append(&mut self, folder: &str, batch: &[Outgoing]) -> Result<Started, Error> {
            if !self.server.pipelined {
                return Ok(Started::Done(self.append(folder, batch)?));
            }
            if self.broken {
                return Err(broken());
            }
            let outcome = self.append(folder, batch);
            self.broken = outcome.is_err();
            let number = self.sent.len() as u64;
            self.sent.insert(number, outcome);
            Ok(Started::Pending(number))
        }

        fn finish_append(
            &mut self,
            started: Started,
            _folder: &str,
            _batch: &[Outgoing],
        ) -> Result<Vec<Outcome>, Error> {
            match started {
                Started::Done(outcome) => Ok(outcome),
                Started::Pending(number) => self.sent.remove(&number).expect("sent once"),
            }
        }
    }

    /// A source serving each message as its key in digits, padded to its size. With
    /// `breaks_at`, its connection breaks before delivering message number `breaks_at` (from
    /// 0) of a fetch; a fresh connection finds the rest again under keys 1000 higher, except
    /// key 7, which is gone. The messages with a key in `cuts` it serves a byte short.
    #[derive(Default)]
    struct FakeSource {
        breaks_at: Option<usize>,
        cuts: HashSet<u32>,
    }

    impl Source for FakeSource {
        fn folders(&mut self) -> Result<FolderList, Error> {
            unimplemented!()
        }
        fn index(&mut self, _folder: &str) -> Result<Vec<SourceMessage>, Error> {
            unimplemented!()
        }
        fn fetch(
            &mut self,
            _folder: &str,
            messages: Vec<Arc<SourceMessage>>,
            deliver: &mut dyn FnMut(Result<Fetched<'_>, Unreadable>) -> bool,
        ) -> Result<(), Error> {
            for (i, message) in messages.into_iter().enumerate() {
                if self.breaks_at == Some(i) {
                    return Err(broken());
                }
                let size = message.size as usize - usize::from(self.cuts.contains(&message.key));
                let raw = format!("{:>size$}", message.key).into_bytes();
                if !deliver(Ok(Fetched {
                    message,
                    raw: raw.into(),
                })) {
                    break;
                }
            }
            Ok(())
        }
        fn relocate(
            &mut self,
            _folder: &str,
            messages: Vec<Arc<SourceMessage>>,
        ) -> Result<Option<Relocated>, Error> {
            let mut relocated = Relocated::default();
            for mut message in messages {
                if message.key == 7 {
                    let reason = "deleted from the source during the run".to_owned();
                    relocated.gone.push(Unreadable { message, reason });
                } else {
                    Arc::make_mut(&mut message).key += 1000;
                    relocated.found.push(message);
                }
            }
            Ok(Some(relocated))
        }
    }

    #[derive(Default)]
    struct Events {
        copied: Mutex<Vec<u32>>,
        failed: Mutex<Vec<(u32, String)>>,
        retries: Mutex<Vec<bool>>,
    }

    impl Observer for Events {
        fn message_copied(
            &self,
            _folder: &str,
            message: &Arc<SourceMessage>,
            _: Option<MessageUid>,
        ) {
            self.copied.lock().unwrap().push(message.key);
        }
        fn message_failed(&self, _folder: &str, message: &SourceMessage, reason: &str) {
            self.failed
                .lock()
                .unwrap()
                .push((message.key, reason.to_owned()));
        }
        fn retrying(&self, slowed_down: bool) {
            self.retries.lock().unwrap().push(slowed_down);
        }
    }

    impl Events {
        fn copied(&self) -> Vec<u32> {
            let mut keys = self.copied.lock().unwrap().clone();
            keys.sort_unstable();
            keys
        }
        fn failed(&self) -> Vec<u32> {
            let mut keys: Vec<u32> = self.failed.lock().unwrap().iter().map(|f| f.0).collect();
            keys.sort_unstable();
            keys
        }
    }

    fn message(key: u32, id: &str) -> Arc<SourceMessage> {
        Arc::new(SourceMessage::with_id(key, id))
    }

    /// Messages 1..=n, each with its own identity.
    fn distinct(n: u32) -> Vec<Arc<SourceMessage>> {
        (1..=n)
            .map(|key| message(key, &format!("m{key}")))
            .collect()
    }

    fn settings(connections: usize, batch_messages: usize, retries: u32) -> TransferSettings {
        TransferSettings {
            connections,
            batch_messages,
            retries,
            retry_delay: Duration::ZERO,
            throttle_delay: Duration::ZERO,
            ..TransferSettings::default()
        }
    }

    /// Copies `source` into a target holding `held`, with the fake server; returns the result.
    fn copy(
        server: &Arc<Server>,
        source: Vec<Arc<SourceMessage>>,
        held: &[Arc<SourceMessage>],
        settings: TransferSettings,
        events: &Events,
    ) -> Result<(), Error> {
        server.state.lock().unwrap().stored = held.to_vec();
        let index: TargetIndex = held.iter().map(|m| m.identity.clone()).collect();
        let plan = plan::diff("INBOX", "INBOX", &source, &index);
        copy_folders(
            &[&plan],
            &mut (Box::new(FakeSource::default()) as Box<dyn Source>),
            &|| unreachable!("one folder needs one source connection"),
            &TargetPool::new(&|| Server::connect(server)),
            settings,
            events,
        )
    }

    fn identities(messages: &[Arc<SourceMessage>]) -> Vec<Identity> {
        let mut ids: Vec<Identity> = messages.iter().map(|m| m.identity.clone()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn split_stored_takes_the_first_copies_of_each_identity() {
        let batch: Vec<Outgoing> = [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "a")]
            .into_iter()
            .map(|(key, id)| Outgoing {
                message: message(key, id),
                raw: Vec::new(),
            })
            .collect();
        let (stored, missing) = split_stored(batch, |identity| match identity {
            Identity::MessageId(id) if &**id == "a" => 2,
            Identity::MessageId(id) if &**id == "c" => 7,
            _ => 0,
        });
        let keys = |v: &[Outgoing]| v.iter().map(|o| o.message.key).collect::<Vec<_>>();
        assert_eq!(keys(&stored), [1, 3, 4]);
        assert_eq!(keys(&missing), [2, 5]);
    }

    #[test]
    fn delays_before_retries_double_up_to_the_cap_with_jitter() {
        let settings = TransferSettings::default();
        let throttled = Error::Connection {
            server: "imaps://fake".into(),
            source: SessionError::Throttled("[THROTTLED] slow down".into()),
            hint: None,
        };
        for (cause, full) in [
            (broken(), [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]),
            (
                throttled,
                [2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000],
            ),
        ] {
            let mut delays = std::collections::HashSet::new();
            for (attempt, full) in (1..=8).zip(full) {
                for _ in 0..20 {
                    let delay = settings.delay_before_retry(attempt, &cause).as_millis();
                    assert!(
                        (full / 2..=full).contains(&delay),
                        "attempt {attempt}: {delay} ms"
                    );
                    delays.insert(delay);
                }
            }
            assert!(delays.len() > 8, "no jitter: {delays:?}");
        }
        assert!(settings.delay_before_retry(u32::MAX, &broken()) <= MAX_RETRY_DELAY);
    }

    #[test]
    fn an_untagged_bye_waits_on_the_throttle_schedule() {
        // How the IMAP client reports an untagged BYE in the middle of a session.
        let bye = Error::Connection {
            server: "imaps://fake".into(),
            source: SessionError::Bye("Too many connections".into()),
            hint: None,
        };
        let settings = TransferSettings::default();
        for (attempt, full) in [(1, 2000), (2, 4000), (6, 60_000)] {
            let delay = settings.delay_before_retry(attempt, &bye).as_millis();
            assert!(
                (full / 2..=full).contains(&delay),
                "attempt {attempt}: {delay} ms"
            );
        }
    }

    #[test]
    fn a_throttled_upload_backs_off_and_is_sent_again() {
        let server = Server::new(true, |_, m, attempt| {
            if m.key == 2 && attempt <= 2 {
                Upload::Throttle
            } else {
                Upload::Store
            }
        });
        let events = Events::default();
        let throttle_delay = Duration::from_millis(100);
        let settings = TransferSettings {
            throttle_delay,
            ..settings(1, 10, 3)
        };
        let started = std::time::Instant::now();
        copy(&server, distinct(4), &[], settings, &events).unwrap();
        // Two back-offs, of at least half of 100 ms and of 200 ms (the jitter only shortens).
        let least = throttle_delay / 2 + throttle_delay;
        assert!(
            started.elapsed() >= least,
            "no back-off: {:?}",
            started.elapsed()
        );
        assert_eq!(server.stored_keys(), [1, 2, 3, 4]);
        assert_eq!(events.copied(), [1, 2, 3, 4]);
        assert!(events.failed().is_empty());
        assert_eq!(
            *events.retries.lock().unwrap(),
            [true, true],
            "two throttles"
        );
        let state = server.state.lock().unwrap();
        assert_eq!((state.connections, state.attempts[&2]), (3, 3));
    }

    #[test]
    fn a_batch_cut_after_some_single_appends_sends_only_the_rest() {
        let server = Server::new(false, |_, m, attempt| {
            if m.key == 4 && attempt == 1 {
                Upload::Break
            } else {
                Upload::Store
            }
        });
        let events = Events::default();
        copy(&server, distinct(6), &[], settings(1, 10, 3), &events).unwrap();
        assert_eq!(server.stored_keys(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(events.copied(), [1, 2, 3, 4, 5, 6]);
        assert!(events.failed().is_empty());
        let state = server.state.lock().unwrap();
        assert_eq!((state.connections, state.indexes), (2, 1));
        // 1–3 were stored before the break and not sent again.
        assert_eq!(state.attempts[&1], 1);
    }

    #[test]
    fn batches_in_flight_when_the_connection_breaks_are_each_checked_before_a_resend() {
        // Batch 2's answer is lost, batch 3 is sent on the dead connection, batch 1 is
        // still unanswered: after the reconnect, 1 and 2 are found stored, 3 is sent again.
        let server = Server::pipelined(|_, m, attempt| {
            if m.key == 15 && attempt == 1 {
                Upload::AnswerLost
            } else {
                Upload::Store
            }
        });
        let events = Events::default();
        copy(&server, distinct(40), &[], settings(1, 10, 3), &events).unwrap();
        assert_eq!(server.stored_keys(), (1..=40).collect::<Vec<_>>());
        assert_eq!(events.copied(), (1..=40).collect::<Vec<_>>());
        assert_eq!(server.state.lock().unwrap().connections, 2);
        assert_eq!(*events.retries.lock().unwrap(), [false], "one plain retry");
    }

    /// One worker with batches of two folders in flight when its connection breaks: each
    /// folder is indexed again, and a copy in one is not taken for the other's.
    #[test]
    fn batches_of_two_folders_in_flight_are_each_checked_in_their_own_folder() {
        let server = Server::pipelined(|_, m, attempt| match (m.key, attempt) {
            (3, 1) => Upload::AnswerLost,
            _ => Upload::Store,
        });
        // The same identities in both folders.
        let folder = |name: &str, first: u32| {
            let messages: Vec<Arc<SourceMessage>> = (first..first + 4)
                .map(|key| message(key, &format!("m{}", key % 10)))
                .collect();
            plan::diff(name, name, &messages, &TargetIndex::default())
        };
        let (a, b) = (folder("A", 1), folder("B", 11));
        let events = Events::default();
        copy_folders(
            &[&a, &b],
            &mut (Box::new(FakeSource::default()) as Box<dyn Source>),
            &|| unreachable!("one connection, one lane"),
            &TargetPool::new(&|| Server::connect(&server)),
            settings(1, 2, 3),
            &events,
        )
        .unwrap();
        assert_eq!(server.stored_keys(), [1, 2, 3, 4, 11, 12, 13, 14]);
        assert_eq!(events.copied(), [1, 2, 3, 4, 11, 12, 13, 14]);
        // One recovery, with batches of both folders in flight: each folder indexed once.
        assert_eq!(server.state.lock().unwrap().indexes, 2);
    }

    #[test]
    fn a_broken_source_is_reopened_and_the_rest_found_again() {
        let fetch = |retries: u32, events: &Events| {
            let server = Server::new(false, |_, _, _| Upload::Store);
            let plan = plan::diff("INBOX", "INBOX", &distinct(10), &TargetIndex::default());
            let opened = AtomicUsize::new(0);
            let result = copy_folders(
                &[&plan],
                &mut (Box::new(FakeSource {
                    breaks_at: Some(4),
                    ..FakeSource::default()
                }) as Box<dyn Source>),
                &|| {
                    opened.fetch_add(1, Ordering::SeqCst);
                    Ok(Box::new(FakeSource::default()))
                },
                &TargetPool::new(&|| Server::connect(&server)),
                settings(1, 3, retries),
                events,
            );
            (result, opened.into_inner(), server.stored_keys())
        };
        let events = Events::default();
        let (result, opened, stored) = fetch(2, &events);
        assert!(result.is_ok());
        assert_eq!(opened, 1);
        assert_eq!(events.copied(), [1, 2, 3, 4, 1005, 1006, 1008, 1009, 1010]);
        assert_eq!(stored, [1, 2, 3, 4, 1005, 1006, 1008, 1009, 1010]);
        assert_eq!(events.failed(), [7]);

        let events = Events::default();
        let (result, opened, _) = fetch(0, &events);
        assert!(result.is_err());
        assert_eq!(opened, 0);
        assert_eq!(events.copied(), [1, 2, 3, 4]);
    }

    #[test]
    fn a_message_read_short_is_read_again_on_a_fresh_connection_and_else_fails() {
        let server = Server::new(false, |_, _, _| Upload::Store);
        let plan = plan::diff("INBOX", "INBOX", &distinct(5), &TargetIndex::default());
        let opened = AtomicUsize::new(0);
        let events = Events::default();
        copy_folders(
            &[&plan],
            &mut (Box::new(FakeSource {
                cuts: [2, 3].into(),
                ..FakeSource::default()
            }) as Box<dyn Source>),
            &|| {
                opened.fetch_add(1, Ordering::SeqCst);
                // Message 3, found again as 1003, is short on this connection too.
                Ok(Box::new(FakeSource {
                    cuts: [1003].into(),
                    ..FakeSource::default()
                }))
            },
            &TargetPool::new(&|| Server::connect(&server)),
            settings(1, 10, 0),
            &events,
        )
        .unwrap();
        assert_eq!(opened.into_inner(), 1);
        assert_eq!(server.stored_keys(), [1, 4, 5, 1002]);
        assert_eq!(events.copied(), [1, 4, 5, 1002]);
        assert_eq!(
            *events.failed.lock().unwrap(),
            [(
                1003,
                "the server sent 9 bytes for a message it listed as 10; not copied".to_owned()
            )]
        );
    }

    #[test]
    fn a_multiappend_whose_answer_was_lost_is_not_sent_again() {
        let server = Server::new(true, |_, m, attempt| {
            if m.key == 2 && attempt == 1 {
                Upload::AnswerLost
            } else {
                Upload::Store
            }
        });
        let events = Events::default();
        copy(&server, distinct(5), &[], settings(1, 10, 3), &events).unwrap();
        assert_eq!(server.stored_keys(), [1, 2, 3, 4, 5]);
        assert_eq!(events.copied(), [1, 2, 3, 4, 5]);
        assert!(
            server
                .state
                .lock()
                .unwrap()
                .attempts
                .values()
                .all(|n| *n == 1)
        );
    }

    #[test]
    fn refused_messages_are_reported_once_and_not_retried() {
        let server = Server::new(false, |_, m, attempt| match (m.key, attempt) {
            (2, _) => Upload::Refuse,
            (4, 1) => Upload::Break,
            _ => Upload::Store,
        });
        let events = Events::default();
        copy(&server, distinct(5), &[], settings(1, 10, 3), &events).unwrap();
        assert_eq!(server.stored_keys(), [1, 3, 4, 5]);
        assert_eq!(events.copied(), [1, 3, 4, 5]);
        assert_eq!(events.failed(), [2]);
        // Sent again after the break, since a refused message is not on the target.
        assert_eq!(server.state.lock().unwrap().attempts[&2], 2);
    }

    #[test]
    fn when_retries_run_out_the_rest_of_the_batch_is_reported_lost() {
        let server = Server::new(false, |_, m, _| {
            if m.key == 3 {
                Upload::Break
            } else {
                Upload::Store
            }
        });
        let events = Events::default();
        let err = copy(&server, distinct(5), &[], settings(1, 10, 2), &events).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::EXIT_CONNECTION);
        assert_eq!(server.stored_keys(), [1, 2]);
        assert_eq!(events.copied(), [1, 2]);
        assert_eq!(events.failed(), [3, 4, 5]);
        let state = server.state.lock().unwrap();
        assert_eq!((state.attempts[&3], state.connections), (3, 3));
    }

    #[test]
    fn without_retries_the_first_break_ends_the_copy() {
        let server = Server::new(true, |_, m, _| {
            if m.key == 3 {
                Upload::Break
            } else {
                Upload::Store
            }
        });
        let events = Events::default();
        assert!(copy(&server, distinct(5), &[], settings(1, 10, 0), &events).is_err());
        assert!(server.stored_keys().is_empty());
        assert_eq!(events.failed(), [1, 2, 3, 4, 5]);
        assert_eq!(server.state.lock().unwrap().connections, 1);
    }

    #[test]
    fn a_worker_that_gives_up_does_not_leave_the_fetcher_waiting_for_memory() {
        // Budget 5: message 1 (1 byte) is being uploaded, message 1000 (4 bytes) waits in the
        // queue, message 1001 waits for room. The upload of 1 breaks and the worker gives up;
        // 1000's bytes, queued with nobody left to take them, would never come back.
        let server = Server::new(false, |_, m, _| {
            if m.key == 1 {
                std::thread::sleep(Duration::from_millis(200));
                Upload::Break
            } else {
                Upload::Store
            }
        });
        let events = Arc::new(Events::default());
        let source: Vec<Arc<SourceMessage>> = [1, 1000, 1001, 1002]
            .into_iter()
            .map(|key| message(key, &format!("m{key}")))
            .collect();
        let settings = TransferSettings {
            memory_budget: 5,
            ..settings(1, 1, 0)
        };
        // On its own thread, left behind if it hangs: the test fails instead of hanging too.
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let (copying_server, copying_events) = (Arc::clone(&server), Arc::clone(&events));
        std::thread::spawn(move || {
            let result = copy(&copying_server, source, &[], settings, &copying_events);
            done_tx.send(result.is_err()).unwrap();
        });
        let failed = done.recv_timeout(Duration::from_secs(10));
        assert_eq!(failed, Ok(true), "the copy hangs or succeeds");
        assert!(server.stored_keys().is_empty());
        assert!(events.failed().contains(&1));
    }

    #[test]
    fn a_first_login_that_breaks_is_retried() {
        let server = Server::new(true, |_, _, _| Upload::Store);
        server.state.lock().unwrap().failing_connects = 2;
        let events = Events::default();
        copy(&server, distinct(3), &[], settings(1, 10, 2), &events).unwrap();
        assert_eq!(server.stored_keys(), [1, 2, 3]);
        assert_eq!(server.state.lock().unwrap().connections, 3);
    }

    /// Two batches hold one identity each; the second is uploaded while the first recovers
    /// from a break that stored nothing. Were both uploaded at once, the first's recovery
    /// would count the second's copy as its own and skip it: the claim on the identity makes
    /// the second wait.
    #[test]
    fn a_recovery_does_not_count_another_batch_s_copy_of_the_same_identity() {
        let server = Server::new(false, |server, m, attempt| match (m.key, attempt) {
            (1, 1) => {
                // Gives the other batch, if it may run, the time to store its copy.
                server.wait_until(Duration::from_millis(300), |s| {
                    s.stored.iter().any(|m| m.key == 2)
                });
                Upload::Break
            }
            (2, _) => Upload::StoreSlowly,
            _ => Upload::Store,
        });
        let events = Events::default();
        let source = vec![message(1, "x"), message(2, "x")];
        copy(&server, source, &[], settings(2, 1, 3), &events).unwrap();
        assert_eq!(server.stored_keys(), [1, 2]);
        assert_eq!(events.copied(), [1, 2]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever breaks (before a message is stored, or after with the answer lost; each
        /// message at most on its first attempt, so enough retries always get through), with
        /// any number of workers, batch sizes, repeated identities and copies already on the
        /// target, every identity ends up on the target as often as the source holds it, or
        /// as the target already did.
        #[test]
        fn breaks_never_lose_or_duplicate(
            ids in prop::collection::vec(0u8..5, 1..30),
            held in prop::collection::vec(0u8..5, 0..4),
            faults in prop::collection::vec(0u8..6, 30),
            connections in 1usize..4,
            batch_messages in 1usize..5,
            multiappend: bool,
            failing_connects in 0usize..3,
        ) {
            let source: Vec<Arc<SourceMessage>> = ids.iter().enumerate()
                .map(|(i, id)| message(i as u32 + 1, &id.to_string())).collect();
            let held: Vec<Arc<SourceMessage>> = held.iter().enumerate()
                .map(|(i, id)| message(1000 + i as u32, &id.to_string())).collect();
            let server = Server::new(multiappend, move |_, m, attempt| {
                match (attempt, faults[m.key as usize - 1]) {
                    (1, 0) => Upload::Break,
                    (1, 1) => Upload::AnswerLost,
                    _ => Upload::Store,
                }
            });
            server.state.lock().unwrap().failing_connects = failing_connects;
            let events = Events::default();
            copy(&server, source.clone(), &held, settings(connections, batch_messages, 10), &events)
                .unwrap();
            let stored = server.state.lock().unwrap().stored.clone();
            let mut want = identities(&held);
            let index: TargetIndex = held.iter().map(|m| m.identity.clone()).collect();
            let plan = plan::diff("INBOX", "INBOX", &source, &index);
            want.extend(plan.to_copy.iter().map(|m| m.identity.clone()));
            want.sort();
            prop_assert_eq!(identities(&stored), want);
            let mut copied: Vec<u32> = plan.to_copy.iter().map(|m| m.key).collect();
            copied.sort_unstable();
            prop_assert_eq!(events.copied(), copied);
            prop_assert!(events.failed().is_empty());
        }
    }
}
