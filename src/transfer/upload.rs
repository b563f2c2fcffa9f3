//! An upload worker: batches of any folders onto one target connection, which is re-opened
//! when it breaks, with a re-index of the folders it was writing to so that nothing the server
//! already stored is sent twice, and the `Ledger` that keeps that count exact when one
//! identity is in several batches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::budget::Charge;
use super::{Observer, TargetPool, TransferSettings, lost};
use crate::error::{Error, SessionError};
use crate::header;
use crate::identity::{self, Identity};
use crate::index::TargetIndex;
use crate::plan::FolderPlan;
use crate::store::MessageUid;
use crate::store::{Outcome, Outgoing, Started, Target};

/// Batches sent on one connection before the first of them is answered, at most: enough to
/// keep a slow link busy while answers travel back. The bytes they hold for a resend are
/// bounded by the memory budget (`TransferSettings::memory_budget`), not by this count.
const UPLOAD_WINDOW: usize = 8;

/// One upload worker: its target connection, re-opened when it breaks, and the batches sent
/// on it whose answer has not been read yet, of any folders.
pub(super) struct Uploader<'a> {
    targets: &'a TargetPool<'a>,
    settings: TransferSettings,
    observer: &'a dyn Observer,
    ledger: &'a Ledger,
    /// `None` between a break and the next connection.
    target: Option<Box<dyn Target>>,
    /// Sent and not yet answered, oldest first.
    in_flight: VecDeque<InFlight<'a>>,
}

/// A batch sent and not yet settled, with its claim on the ledger.
struct InFlight<'a> {
    plan: &'a FolderPlan,
    batch: Vec<Outgoing>,
    /// `None` once the connection it was sent on broke.
    started: Option<Started>,
    claim: Claim<'a>,
    _memory: Charge<'a>,
}

impl<'a> Uploader<'a> {
    /// A worker, not connected yet.
    pub(super) fn new(
        targets: &'a TargetPool<'a>,
        settings: TransferSettings,
        observer: &'a dyn Observer,
        ledger: &'a Ledger,
    ) -> Self {
        Uploader {
            targets,
            settings,
            observer,
            ledger,
            target: None,
            in_flight: VecDeque::new(),
        }
    }

    /// Takes `given`, or an idle connection from the pool, or opens the worker's first
    /// connection, trying again (`settings.retries` times) when it could not be opened, broke
    /// or timed out. The planning connection got through with the same settings, so a TLS or
    /// protocol failure here is a broken connection too. A refusal by the server is final: a
    /// worker beyond a per-user connection limit gives up at once and leaves the batches to
    /// the others.
    pub(super) fn connect(&mut self, given: Option<Box<dyn Target>>) -> Result<(), Error> {
        if let Some(target) = given.or_else(|| self.targets.take()) {
            self.target = Some(target);
            return Ok(());
        }
        let connected = self.settings.retry(
            self.observer,
            None,
            |err| {
                matches!(err, Error::Connection { source, .. }
                    if !matches!(source, SessionError::Refused(_) | SessionError::Unsupported(_)))
            },
            || self.targets.connect(),
        )?;
        self.target = Some(connected);
        Ok(())
    }

    /// Sends a batch, without waiting for the answers to the batches sent before it (at most
    /// [`UPLOAD_WINDOW`] unanswered). See [`Uploader::recover`] for a connection that breaks.
    pub(super) fn upload(
        &mut self,
        plan: &'a FolderPlan,
        batch: Vec<Outgoing>,
        memory: Charge<'a>,
    ) -> Result<(), Error> {
        let folder = plan.target_folder.as_str();
        let claim = match self.claim(folder, &batch) {
            Ok(claim) => claim,
            Err(err) => {
                lost(plan, &batch, self.observer);
                return Err(err);
            }
        };
        let target = self
            .target
            .as_mut()
            .expect("an uploader uploads only while connected");
        let (started, broke) = match target.start_append(folder, &batch) {
            Ok(started) => (Some(started), None),
            Err(err) => (None, Some(err)),
        };
        self.in_flight.push_back(InFlight {
            plan,
            batch,
            started,
            claim,
            _memory: memory,
        });
        if let Some(err) = broke {
            return self.recover(err);
        }
        while self.in_flight.len() > UPLOAD_WINDOW {
            self.settle_oldest()?;
        }
        Ok(())
    }

    /// Claims the batch's repeated identities (see `Ledger`). This worker's own batches that
    /// hold any are settled first: the claim would wait for them. Only when another worker
    /// holds some does it settle every batch of its own that holds a claim, and wait: a worker
    /// that waits holds no claim, so no two wait for each other. Settling every batch in
    /// flight each time would cost a round trip.
    fn claim(&mut self, folder: &'a str, batch: &[Outgoing]) -> Result<Claim<'a>, Error> {
        let repeated = self.ledger.repeated(folder, batch);
        self.settle_while(|sent| sent.claim.holds_any(folder, &repeated))?;
        if let Some(claim) = self.ledger.try_claim(folder, &repeated) {
            return Ok(claim);
        }
        self.settle_while(|sent| sent.claim.holds_some())?;
        Ok(self.ledger.claim(folder, repeated))
    }

    /// Settles the oldest batches while any batch in flight is `unsettled`.
    fn settle_while(&mut self, unsettled: impl Fn(&InFlight<'a>) -> bool) -> Result<(), Error> {
        while self.in_flight.iter().any(&unsettled) {
            self.settle_oldest()?;
        }
        Ok(())
    }

    /// Whether another worker waits for a claim while this one holds claims in flight, whose
    /// answers it would otherwise read only when it next has to.
    pub(super) fn claims_wanted(&self) -> bool {
        self.ledger.is_waited_for() && self.in_flight.iter().any(|sent| sent.claim.holds_some())
    }

    /// Reads the answers to the batches in flight until none holds a claim.
    pub(super) fn settle_claims(&mut self) -> Result<(), Error> {
        self.settle_while(|sent| sent.claim.holds_some())
    }

    /// Leaves the connection, with nothing in flight, for the next worker.
    pub(super) fn release(mut self) {
        debug_assert!(self.in_flight.is_empty(), "finished first");
        if let Some(target) = self.target.take() {
            self.targets.put(target);
        }
    }

    /// Waits for the answers to every batch sent.
    pub(super) fn finish(&mut self) -> Result<(), Error> {
        while !self.in_flight.is_empty() {
            self.settle_oldest()?;
        }
        Ok(())
    }

    /// Whether batches sent wait for their answer.
    pub(super) fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Reads the answer to the oldest batch sent and reports its messages: copied or refused.
    pub(super) fn settle_oldest(&mut self) -> Result<(), Error> {
        let oldest = self.in_flight.front_mut().expect("a batch in flight");
        let plan = oldest.plan;
        let started = oldest
            .started
            .take()
            .expect("sent on the current connection");
        let target = self
            .target
            .as_mut()
            .expect("an uploader uploads only while connected");
        match target.finish_append(started, &plan.target_folder, &oldest.batch) {
            Ok(outcomes) => {
                let settled = self.in_flight.pop_front().expect("the oldest");
                self.report(plan, &settled.batch, outcomes);
                Ok(())
            }
            Err(err) => self.recover(err),
        }
    }

    fn report(&self, plan: &FolderPlan, batch: &[Outgoing], outcomes: Vec<Outcome>) {
        for (outgoing, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Ok(uid) => self.copied(plan, outgoing, uid),
                Err(reason) => {
                    self.observer
                        .message_failed(&plan.source_folder, &outgoing.message, &reason)
                }
            }
        }
    }

    /// After the connection broke (`err`) with batches in flight, any of which the server may
    /// have stored, wholly or in part: opens a new connection (up to `settings.retries` times,
    /// waiting longer each time), finds out from a fresh index which of their messages the
    /// target holds, and uploads only the others, one batch at a time. Reports every message
    /// to the observer: copied, refused, or lost with the connection when it gives up.
    fn recover(&mut self, mut err: Error) -> Result<(), Error> {
        let mut attempt = 0;
        'reconnect: loop {
            // The broken connection goes first: a server that limits connections per user
            // must see it closed before the next one logs in.
            self.target = None;
            // Any connection failure is retried here, a refused login too: a server may count
            // the broken session against a connection limit for a moment.
            let indexes = loop {
                if !matches!(err, Error::Connection { .. }) || attempt >= self.settings.retries {
                    for unsettled in self.in_flight.drain(..) {
                        lost(unsettled.plan, &unsettled.batch, self.observer);
                    }
                    return Err(err);
                }
                attempt += 1;
                self.settings
                    .wait_before_retry(attempt, &err, self.observer);
                match self.reopen() {
                    Ok(indexes) => break indexes,
                    Err(again) => err = again,
                }
            };
            // No two batches in flight hold one identity of one folder (see `upload`), so one
            // index of each folder answers for each of them.
            let mut in_flight = std::mem::take(&mut self.in_flight);
            for unsettled in &mut in_flight {
                let folder = unsettled.plan.target_folder.as_str();
                let batch = std::mem::take(&mut unsettled.batch);
                unsettled.batch = self.keep_missing(unsettled.plan, batch, &indexes[folder]);
            }
            in_flight.retain(|unsettled| !unsettled.batch.is_empty());
            self.in_flight = in_flight;
            while let Some(oldest) = self.in_flight.front() {
                let target = self.target.as_mut().expect("connected above");
                match target.append(&oldest.plan.target_folder, &oldest.batch) {
                    Ok(outcomes) => {
                        let settled = self.in_flight.pop_front().expect("the oldest");
                        self.report(settled.plan, &settled.batch, outcomes);
                    }
                    Err(again) => {
                        err = again;
                        continue 'reconnect;
                    }
                }
            }
            return Ok(());
        }
    }

    /// A new connection, and on it a fresh index of each folder with batches in flight.
    fn reopen(&mut self) -> Result<HashMap<String, TargetIndex>, Error> {
        let mut folders: Vec<String> = self
            .in_flight
            .iter()
            .map(|unsettled| unsettled.plan.target_folder.clone())
            .collect();
        folders.sort();
        folders.dedup();
        let mut target = self.targets.connect()?;
        let indexes = target.index_all(&folders)?;
        self.target = Some(target);
        Ok(folders.into_iter().zip(indexes).collect())
    }

    /// Reports as copied the messages of `pending` (a batch whose upload broke off) that the
    /// freshly indexed target holds, and returns the others.
    ///
    /// For an identity X of the batch, the folder held B(X) copies when planned
    /// (`plan.target_copies`), and this run's uploads have stored C(X) more since, as
    /// confirmed by the server or found by an earlier recovery (the ledger). No other upload
    /// of X can be under way: an identity planned once into the folder is in this batch only,
    /// and a batch holding an identity planned more than once has claimed it in the ledger,
    /// so every other batch holding X is settled. The index's count N(X) is therefore B(X) +
    /// C(X) + what this batch's attempts stored, and N(X) − B(X) − C(X) of the batch's copies
    /// of X are on the target, the first ones in batch order: MULTIAPPEND stores a batch
    /// whole or not at all, single APPENDs store it from the front. The difference is clamped
    /// at 0 (a copy deleted meanwhile is sent again) and at the batch's count.
    ///
    /// Two things can still fool it, both outside mailferry's control: another client storing
    /// X in the folder during the run (the copy is then skipped, and the folder still holds
    /// X as often as the source), and a server that commits the broken session's upload only
    /// after the new session indexed the folder (the delay before a retry leaves it time).
    fn keep_missing(
        &self,
        plan: &FolderPlan,
        pending: Vec<Outgoing>,
        index: &TargetIndex,
    ) -> Vec<Outgoing> {
        let (stored, missing) = split_stored(pending, |identity| {
            index
                .count(identity)
                .saturating_sub(self.ledger.stored_before(&plan.target_folder, identity))
        });
        // Counted from the index, not from the server's word on each message: where each
        // went is unknown.
        stored
            .iter()
            .for_each(|outgoing| self.copied(plan, outgoing, None));
        missing
    }

    /// Counts and reports a stored message, with its UID only when the bytes sent carry the
    /// identity it was planned under: the target indexes the copy by those bytes, while the
    /// plan may have used an identity remembered from an earlier run (a POP3 mirror), which
    /// is checked against them here. A UID under the wrong identity would let the
    /// verification find what the target's index would not; without one, the verification
    /// indexes the folder.
    fn copied(&self, plan: &FolderPlan, outgoing: &Outgoing, uid: Option<MessageUid>) {
        self.ledger
            .record_stored(&plan.target_folder, &outgoing.message.identity);
        let message = &outgoing.message;
        let uid = uid.filter(|_| {
            !message.identity_remembered
                || identity::identify(header::header_block(&outgoing.raw)) == message.identity
        });
        self.observer
            .message_copied(&plan.source_folder, message, uid);
    }
}

/// Splits a batch into the messages the target stored and the others: of each identity, the
/// first `stored(identity)` in batch order count as stored.
pub(super) fn split_stored(
    batch: Vec<Outgoing>,
    mut stored: impl FnMut(&Identity) -> usize,
) -> (Vec<Outgoing>, Vec<Outgoing>) {
    let mut left: HashMap<Identity, usize> = HashMap::new();
    let (mut done, mut missing) = (Vec::new(), Vec::new());
    for outgoing in batch {
        let left = left
            .entry(outgoing.message.identity.clone())
            .or_insert_with_key(|identity| stored(identity));
        if *left > 0 {
            *left -= 1;
            done.push(outgoing);
        } else {
            missing.push(outgoing);
        }
    }
    (done, missing)
}

/// What the upload workers of every folder lane have stored, as far as recovering from a
/// broken connection needs it (see [`Uploader::keep_missing`]): per target folder, the copies
/// the folder held when planned, and for each identity planned into the folder more than
/// once, how many copies this run stored and whether a batch holding it is being uploaded.
/// Identities planned once need no entry, so the ledger stays small whatever the mailbox size.
/// Kept for the whole job, because two source folders may be copied into one target folder.
pub(super) struct Ledger {
    folders: Mutex<HashMap<String, FolderLedger>>,
    /// Signalled whenever a batch releases its claims.
    released: Condvar,
    /// Workers waiting in [`Ledger::claim`].
    waiting: AtomicUsize,
}

#[derive(Default)]
struct FolderLedger {
    /// Copies the folder held when planned, of identities it held some of.
    planned: BTreeMap<Identity, usize>,
    /// Identities planned into the folder more than once.
    repeated: HashMap<Identity, Repeated>,
}

#[derive(Default)]
struct Repeated {
    /// Copies this run stored.
    stored: usize,
    /// Whether a batch holding the identity is being uploaded.
    claimed: bool,
}

impl Ledger {
    pub(super) fn new(plans: &[&FolderPlan]) -> Self {
        let mut planned: HashMap<&str, HashMap<&Identity, usize>> = HashMap::new();
        let mut folders: HashMap<String, FolderLedger> = HashMap::new();
        for plan in plans {
            let folder = folders.entry(plan.target_folder.clone()).or_default();
            for (identity, held) in &plan.target_copies {
                folder.planned.insert(identity.clone(), *held);
            }
            let counts = planned.entry(&plan.target_folder).or_default();
            for message in &plan.to_copy {
                *counts.entry(&message.identity).or_default() += 1;
            }
        }
        for (folder, counts) in planned {
            let repeated = &mut folders.get_mut(folder).expect("added above").repeated;
            for (identity, _) in counts.into_iter().filter(|(_, n)| *n > 1) {
                repeated.insert(identity.clone(), Repeated::default());
            }
        }
        Ledger {
            folders: Mutex::new(folders),
            released: Condvar::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, FolderLedger>> {
        self.folders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The batch's identities planned into the folder more than once, sorted, which
    /// [`Ledger::claim`] may have to wait for.
    fn repeated(&self, folder: &str, batch: &[Outgoing]) -> Vec<Identity> {
        let folders = self.lock();
        let Some(ledger) = folders.get(folder) else {
            return Vec::new();
        };
        let mut identities: Vec<Identity> = batch
            .iter()
            .map(|outgoing| &outgoing.message.identity)
            .filter(|identity| ledger.repeated.contains_key(*identity))
            .cloned()
            .collect();
        identities.sort();
        identities.dedup();
        identities
    }

    /// Waits until no other batch holds any of these repeated identities of the folder (see
    /// [`Ledger::repeated`]), then claims them until the returned guard is dropped. Waits
    /// only for batches being uploaded, whose workers hold no claim while they wait
    /// themselves (see `Uploader::upload`), so it cannot deadlock.
    fn claim<'l>(&'l self, folder: &'l str, identities: Vec<Identity>) -> Claim<'l> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let folders = self
            .released
            .wait_while(self.lock(), |folders| {
                Self::busy(folders, folder, &identities)
            })
            .unwrap_or_else(PoisonError::into_inner);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.take(folders, folder, identities)
    }

    /// Whether a worker waits for a claim.
    fn is_waited_for(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// [`Ledger::claim`] when no other batch holds any of the identities; `None` otherwise.
    fn try_claim<'l>(&'l self, folder: &'l str, identities: &[Identity]) -> Option<Claim<'l>> {
        let folders = self.lock();
        (!Self::busy(&folders, folder, identities))
            .then(|| self.take(folders, folder, identities.to_vec()))
    }

    fn busy(
        folders: &HashMap<String, FolderLedger>,
        folder: &str,
        identities: &[Identity],
    ) -> bool {
        identities
            .iter()
            .any(|identity| folders[folder].repeated[identity].claimed)
    }

    /// Claims the identities, under the lock `folders` holds on this ledger.
    fn take<'l>(
        &'l self,
        mut folders: MutexGuard<'_, HashMap<String, FolderLedger>>,
        folder: &'l str,
        identities: Vec<Identity>,
    ) -> Claim<'l> {
        if let Some(entry) = folders.get_mut(folder) {
            for identity in &identities {
                entry
                    .repeated
                    .get_mut(identity)
                    .expect("a repeated identity")
                    .claimed = true;
            }
        }
        Claim {
            ledger: self,
            folder,
            identities,
        }
    }

    /// Copies of `identity` in `folder` before the batch being recovered: held when planned,
    /// plus stored by this run's other uploads.
    fn stored_before(&self, folder: &str, identity: &Identity) -> usize {
        let folders = self.lock();
        folders.get(folder).map_or(0, |ledger| {
            ledger.planned.get(identity).copied().unwrap_or(0)
                + ledger.repeated.get(identity).map_or(0, |r| r.stored)
        })
    }

    /// Counts a copy this run stored.
    fn record_stored(&self, folder: &str, identity: &Identity) {
        let mut folders = self.lock();
        if let Some(repeated) = folders
            .get_mut(folder)
            .and_then(|ledger| ledger.repeated.get_mut(identity))
        {
            repeated.stored += 1;
        }
    }
}

/// A batch's claim on its repeated identities; released on drop.
struct Claim<'l> {
    ledger: &'l Ledger,
    folder: &'l str,
    identities: Vec<Identity>,
}

impl<'l> Claim<'l> {
    /// Whether the claim holds any identity.
    fn holds_some(&self) -> bool {
        !self.identities.is_empty()
    }

    /// Whether the claim holds any of these identities (sorted) of `folder`.
    fn holds_any(&self, folder: &str, identities: &[Identity]) -> bool {
        self.folder == folder
            && identities
                .iter()
                .any(|identity| self.identities.binary_search(identity).is_ok())
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.identities.is_empty() {
            return;
        }
        let mut folders = self.ledger.lock();
        if let Some(ledger) = folders.get_mut(self.folder) {
            for identity in &self.identities {
                if let Some(repeated) = ledger.repeated.get_mut(identity) {
                    repeated.claimed = false;
                }
            }
        }
        drop(folders);
        self.ledger.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::index::SourceMessage;

    /// The source messages as batched, by key: a1, a2, a3 share identity `a`; b is alone.
    fn batch(keys: &[u32]) -> Vec<Outgoing> {
        keys.iter()
            .map(|&key| Outgoing {
                message: Arc::new(SourceMessage::with_id(
                    key,
                    if key == 4 { "b" } else { "a" },
                )),
                raw: Vec::new(),
            })
            .collect()
    }

    fn identity(id: &str) -> Identity {
        Identity::MessageId(id.into())
    }

    /// Source a1 a2 a3 b into folder T, which holds one `a`: a2, a3 and b to copy.
    fn plan() -> FolderPlan {
        let source: Vec<_> = batch(&[1, 2, 3, 4])
            .into_iter()
            .map(|outgoing| outgoing.message)
            .collect();
        let target: TargetIndex = [identity("a")].into_iter().collect();
        crate::plan::diff("S", "T", &source, &target)
    }

    fn keys(batch: &[Outgoing]) -> Vec<u32> {
        batch.iter().map(|outgoing| outgoing.message.key).collect()
    }

    #[derive(Default)]
    struct Copied(Mutex<Vec<u32>>);

    impl Observer for Copied {
        fn message_copied(&self, _: &str, message: &Arc<SourceMessage>, _: Option<MessageUid>) {
            self.0.lock().unwrap().push(message.key);
        }
    }

    #[test]
    fn the_ledger_counts_planned_copies_and_stored_repeats_only() {
        let plan = plan();
        let ledger = Ledger::new(&[&plan]);
        assert_eq!(ledger.stored_before("T", &identity("a")), 1);
        ledger.record_stored("T", &identity("a"));
        ledger.record_stored("T", &identity("b"));
        assert_eq!(ledger.stored_before("T", &identity("a")), 2);
        // b is planned once: nothing to keep count of.
        assert_eq!(ledger.stored_before("T", &identity("b")), 0);
        assert_eq!(ledger.stored_before("Elsewhere", &identity("a")), 0);
    }

    #[test]
    fn a_claimed_identity_cannot_be_claimed_again_until_released() {
        let plan = plan();
        let ledger = Ledger::new(&[&plan]);
        let repeated = ledger.repeated("T", &batch(&[2, 4]));
        assert_eq!(repeated, [identity("a")]);
        let claim = ledger
            .try_claim("T", &repeated)
            .expect("nothing claimed yet");
        assert!(claim.holds_any("T", &repeated) && !claim.holds_any("U", &repeated));
        assert!(ledger.try_claim("T", &repeated).is_none());
        drop(claim);
        assert!(ledger.try_claim("T", &repeated).is_some());
    }

    #[test]
    fn after_a_break_only_what_the_target_lacks_is_sent_again() {
        let plan = plan();
        let connect = || -> Result<Box<dyn Target>, Error> { unreachable!("no connection") };
        let targets = TargetPool::new(&connect);
        let copied = Copied::default();
        let resend = |index: &[&str], stored_elsewhere: usize| {
            let ledger = Ledger::new(&[&plan]);
            for _ in 0..stored_elsewhere {
                ledger.record_stored("T", &identity("a"));
            }
            let uploader = Uploader::new(&targets, TransferSettings::default(), &copied, &ledger);
            let index: TargetIndex = index.iter().map(|id| identity(id)).collect();
            keys(&uploader.keep_missing(&plan, batch(&[2, 3, 4]), &index))
        };
        // The target holds two a: the one planned and the broken batch's first.
        assert_eq!(resend(&["a", "a"], 0), [3, 4]);
        assert_eq!(*copied.0.lock().unwrap(), [2]);
        // The same two a, when another batch stored the second: this batch stored nothing.
        assert_eq!(resend(&["a", "a"], 1), [2, 3, 4]);
        // Everything there: nothing to send; a copy deleted meanwhile is sent again.
        assert_eq!(resend(&["a", "a", "a", "b"], 0), Vec::<u32>::new());
        assert_eq!(resend(&[], 0), [2, 3, 4]);
    }
}
