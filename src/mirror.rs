//! The `mirror` job, for cron: the same copy as `migrate`, then the source's flag changes and
//! (with `--delete`) its deletions applied to the target, with state kept between runs.
//!
//! The state makes an unchanged account cheap (one STATUS per folder and side instead of two
//! indexes, when both servers have CONDSTORE) and remembers which copies the mirror made:
//! `--delete` removes only those, never anything else on the target.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::deletion::{self, CopyRecord, SourceRef};
use crate::error::Error;
use crate::folders::FolderMapping;
use crate::identity::Identity;
use crate::index::{FlagSets, KnownMessages, SourceMessage, SourceView, TargetIndex};
use crate::migrate::{self, AfterCopy, MigrateJob, PlanHooks, PlannedFolder, Summaries};
use crate::parallel::both;
use crate::report::{Report, ReportBuilder};
use crate::state::{FolderState, MirrorState, StateStore};
use crate::store::FolderStatus;
use crate::store::{DeletionEvidence, Source, Target, UidChange};
use crate::transfer::Observer;
use crate::verify;

/// How long a run waits before looking at the target when the last one was killed during its
/// copy: long enough for a server to store a batch it had received whole (a few MB).
const SETTLE_AFTER_KILLED_COPY: Duration = Duration::from_secs(5);

/// Everything a `mirror` run needs.
pub struct MirrorJob {
    /// The copy, as for `migrate`.
    pub copy: MigrateJob,
    /// Where the state lives.
    pub state_dir: PathBuf,
    /// Remove from the target the copies whose message left the source.
    pub delete: bool,
    /// Delete from a POP3 source the messages first seen this many days ago, once the target
    /// is verified to hold them.
    pub delete_source_after_days: Option<u32>,
}

/// Runs a mirror. The error beside the report is one that ended the run early; the outer
/// error is one that kept it from starting (lock held, servers unreachable).
pub fn run(
    job: &MirrorJob,
    observer: &dyn Observer,
    before_copy: impl FnOnce(u64, u64),
) -> Result<(Report, Option<Error>), Error> {
    let store = StateStore::open(
        &job.state_dir,
        &job.copy.from.endpoint.to_string(),
        &job.copy.to.endpoint.to_string(),
    )?;
    let (mut previous, warning) = store.load();
    if previous.copying {
        // A run killed while uploading may have sent whole batches the server has not stored
        // yet; indexing the target before it has would send them again.
        std::thread::sleep(SETTLE_AFTER_KILLED_COPY);
    }
    let mut planning = MirrorPlanning {
        previous: &previous,
        delete: job.delete,
        considered: Vec::new(),
        unchanged: BTreeSet::new(),
        known: BTreeMap::new(),
        views: BTreeMap::new(),
        indexed_status: BTreeMap::new(),
    };
    let planned = migrate::plan_with(&job.copy, &mut planning)?;
    let MirrorPlanning {
        considered,
        unchanged,
        mut known,
        views,
        indexed_status,
        ..
    } = planning;
    let (messages, bytes) = planned.totals();
    if messages > 0 {
        previous.copying = true;
        store.save(&mut previous)?;
    }
    before_copy(messages, bytes);
    let targets: Vec<(String, String)> = planned
        .folders
        .iter()
        .map(|f| (f.plan.source_folder.clone(), f.plan.target_folder.clone()))
        .collect();

    // A run that found every folder it remembers unchanged, and no other, leaves the state as
    // it found it: not rewriting tens of MB of it is most of what such a run costs.
    let untouched = warning.is_none()
        && previous.is_current()
        && !previous.copying
        && previous.deleted_gone == job.delete
        && considered.iter().all(|folder| unchanged.contains(folder))
        && previous.folders.keys().eq(unchanged.iter());
    let copied = verify::Receipts::default();
    let mut state = MirrorState {
        deleted_gone: job.delete,
        copying: false,
        ..previous
    };
    // Folders gone from the source (or now excluded) are forgotten.
    state
        .folders
        .retain(|folder, _| considered.contains(folder));
    let mut recorded = false;
    let mut sync = |mut after: AfterCopy<'_>| {
        if let Some(warning) = &warning {
            after.report.warn(warning.clone());
        }
        for folder in after.folders {
            let known = folder_state(
                &mut state,
                &folder.plan.target_folder,
                &folder.plan.source_folder,
            );
            let flags_updated = sync_flags(folder, known, after.target, after.report)?;
            let deleted = if job.delete {
                let view = views.get(&folder.plan.source_folder).copied();
                delete_departed(folder, known, view.unwrap_or_default(), &mut after)?
            } else {
                0
            };
            after.report.synced(flags_updated, deleted);
        }
        if let Some(days) = job.delete_source_after_days {
            // The state saved before anything is deleted must hold this run's copies. Without
            // deletions they are recorded after verification, whose peak memory they would
            // otherwise add to.
            record_run(&mut state, &targets, &copied, &mut known, &views);
            recorded = true;
            let deleted = delete_from_source(after.folders, &mut state, &store, &mut after, days)?;
            after.report.source_deleted(deleted);
        }
        // The source's summaries are the ones taken before its index (a message arriving
        // during the run must make the next run look); the target's describe it as this
        // run leaves it. An unchanged folder's are the ones just compared, and still true:
        // the run did nothing there.
        let (source_folders, target_folders): (Vec<&String>, Vec<String>) = state
            .folders
            .iter()
            .filter(|(source_folder, _)| !unchanged.contains(*source_folder))
            .map(|(source_folder, known)| (source_folder, known.target_folder.clone()))
            .unzip();
        let target_statuses: BTreeMap<String, Option<FolderStatus>> = source_folders
            .into_iter()
            .cloned()
            .zip(after.target.statuses(&target_folders)?)
            .collect();
        for (source_folder, known) in &mut state.folders {
            if let Some(status) = indexed_status.get(source_folder) {
                known.source_status = *status;
            }
            if let Some(status) = target_statuses.get(source_folder) {
                known.target_status = *status;
            }
        }
        Ok(())
    };
    let (report, error) = planned.execute(observer, &copied, Some(&mut sync));
    if !recorded {
        record_run(&mut state, &targets, &copied, &mut known, &views);
    }
    if error.is_some() || report.exit_code() != 0 {
        // What this run did is kept (its copies, for a later --delete); what may have misled
        // it is not: the next run indexes everything and reads POP3 headers again (their
        // ages are kept).
        for folder in state.folders.values_mut() {
            folder.source_status = None;
            for message in folder.known.values_mut() {
                message.identity = None;
            }
        }
    }
    let saved = if untouched && error.is_none() && report.exit_code() == 0 {
        Ok(())
    } else {
        store.save(&mut state)
    };
    Ok((report, error.or(saved.err())))
}

/// The state of a source folder mirrored into `target_folder`; a folder mirrored somewhere
/// else before starts afresh (what was copied there is not here).
fn folder_state<'s>(
    state: &'s mut MirrorState,
    target_folder: &str,
    source_folder: &str,
) -> &'s mut FolderState {
    let known = state.folders.entry(source_folder.to_owned()).or_default();
    if known.target_folder != target_folder {
        *known = FolderState {
            target_folder: target_folder.to_owned(),
            known: std::mem::take(&mut known.known),
            ..FolderState::default()
        };
    }
    known
}

/// Adds this run's copies and what the source's index learnt to the state. A source folder
/// indexed under a new UIDVALIDITY first loses the records naming its old UIDs.
fn record_run(
    state: &mut MirrorState,
    targets: &[(String, String)],
    copied: &verify::Receipts,
    known: &mut BTreeMap<String, KnownMessages>,
    views: &BTreeMap<String, SourceView>,
) {
    for (source_folder, target_folder) in targets {
        let folder = folder_state(state, target_folder, source_folder);
        let Some(view) = views.get(source_folder) else {
            continue;
        };
        if folder.source_uid_validity != view.uid_validity {
            folder
                .copies
                .retain(|record| matches!(record.source, SourceRef::Uidl(_)));
            folder.source_uid_validity = view.uid_validity;
        }
        let copies = copied.copies_from(source_folder);
        // Exactly: a large first run's records would otherwise take up to twice their room.
        folder.copies.reserve_exact(copies.len());
        for (message, target) in copies {
            if let Some(source) = SourceRef::of(&message, view.uid_validity) {
                folder.copies.push(CopyRecord {
                    identity: message.identity.clone(),
                    source,
                    size: message.size,
                    target,
                    source_deleted: false,
                });
            }
        }
        if let Some(fresh) = known.remove(source_folder) {
            folder.known = fresh;
        }
    }
}

/// Planning for a mirror: folders unchanged since the last run are not indexed, and a POP3
/// source reads only the headers of UIDLs it has not seen.
struct MirrorPlanning<'s> {
    previous: &'s MirrorState,
    delete: bool,
    /// Every source folder looked at (the others are forgotten).
    considered: Vec<String>,
    /// The source folders found unchanged since the last run, on both sides.
    unchanged: BTreeSet<String>,
    /// What the source knows after this run's index, per source folder.
    known: BTreeMap<String, KnownMessages>,
    /// What the source said about each folder it indexed.
    views: BTreeMap<String, SourceView>,
    /// The source folders' summaries, taken just before their index.
    indexed_status: BTreeMap<String, Option<FolderStatus>>,
}

impl PlanHooks for MirrorPlanning<'_> {
    fn summarise_at_login(&mut self) -> Summaries {
        let (source, target) = self
            .previous
            .folders
            .iter()
            .filter(|(_, known)| known.source_status.is_some() && known.target_status.is_some())
            .map(|(source, known)| (source.clone(), known.target_folder.clone()))
            .unzip();
        Summaries { source, target }
    }

    fn unchanged(
        &mut self,
        mappings: &[&FolderMapping],
        source: &mut dyn Source,
        target: &mut dyn Target,
    ) -> Result<Vec<Option<usize>>, Error> {
        self.considered
            .extend(mappings.iter().map(|m| m.source.clone()));
        let mut unchanged = vec![None; mappings.len()];
        // A --delete run after one without must look at every folder once.
        if self.delete && !self.previous.deleted_gone {
            return Ok(unchanged);
        }
        // Both sides must have had a summary: without one, a change there goes unseen.
        let candidates: Vec<(usize, &FolderState)> = mappings
            .iter()
            .enumerate()
            .filter_map(|(i, mapping)| {
                let known = self.previous.folders.get(&mapping.source)?;
                let summarised = known.source_status.is_some() && known.target_status.is_some();
                (known.target_folder == mapping.target && summarised).then_some((i, known))
            })
            .collect();
        let sources: Vec<String> = candidates
            .iter()
            .map(|(i, _)| mappings[*i].source.clone())
            .collect();
        let targets: Vec<String> = candidates
            .iter()
            .map(|(i, _)| mappings[*i].target.clone())
            .collect();
        let (now_source, now_target) =
            both(|| source.statuses(&sources), || target.statuses(&targets));
        for (((i, known), now_source), now_target) in
            candidates.into_iter().zip(now_source?).zip(now_target?)
        {
            if now_source == known.source_status && now_target == known.target_status {
                self.unchanged.insert(mappings[i].source.clone());
                unchanged[i] = Some(known.source_status.map_or(0, |s| s.messages as usize));
            }
        }
        Ok(unchanged)
    }

    fn index_sources(
        &mut self,
        mappings: &[&FolderMapping],
        source: &mut dyn Source,
    ) -> Result<Vec<Vec<SourceMessage>>, Error> {
        self.considered
            .extend(mappings.iter().map(|m| m.source.clone()));
        let folders: Vec<String> = mappings.iter().map(|m| m.source.clone()).collect();
        // Taken before the index: a message arriving during the run makes the next run look.
        for (folder, status) in folders.iter().zip(source.statuses(&folders)?) {
            self.indexed_status.insert(folder.clone(), status);
        }
        let empty = KnownMessages::new();
        let known: Vec<&KnownMessages> = folders
            .iter()
            .map(|folder| {
                self.previous
                    .folders
                    .get(folder)
                    .map_or(&empty, |f| &f.known)
            })
            .collect();
        let indexed = source.index_known(&folders, &known)?;
        let mut indexes = Vec::with_capacity(mappings.len());
        for (folder, indexed) in folders.into_iter().zip(indexed) {
            self.known.insert(folder.clone(), indexed.known);
            self.views.insert(folder, indexed.view);
            indexes.push(indexed.messages);
        }
        Ok(indexes)
    }
}

/// `--delete-source-after-days`: deletes from a POP3 source the messages first seen at least
/// `days` ago that this mirror copied, in folders where a fresh index of the target finds
/// every source message and still holds each such copy. The source finds each message again
/// on the session that deletes it (see [`Source::delete`]). The records are marked, and the
/// state saved, before anything is deleted: a run killed in between must not take a later
/// `--delete` to remove the copy of a message the source no longer has.
fn delete_from_source(
    folders: &[PlannedFolder],
    state: &mut MirrorState,
    store: &StateStore,
    after: &mut AfterCopy<'_>,
    days: u32,
) -> Result<usize, Error> {
    let cutoff = chrono::Utc::now().timestamp() - i64::from(days) * 86_400;
    let mut wanted: Vec<(&PlannedFolder, Vec<DeletionEvidence>)> = Vec::new();
    for folder in folders {
        let fresh = after.target.index(&folder.plan.target_folder)?;
        let missing = verify::missing(&folder.source_index, &fresh);
        if !missing.is_empty() {
            after.report.warn(format!(
                "{}: {} message(s) not verified on the target; nothing deleted from the source",
                folder.plan.source_folder,
                missing.len()
            ));
            continue;
        }
        let Some(known) = state.folders.get_mut(&folder.plan.source_folder) else {
            continue;
        };
        let mut evidence = Vec::new();
        for record in &mut known.copies {
            let old_enough = match &record.source {
                SourceRef::Uidl(uidl) => known
                    .known
                    .get(uidl)
                    .is_some_and(|k| k.first_seen <= cutoff),
                SourceRef::Uid(_) => false,
            };
            if old_enough
                && copy_still_there(record, &fresh)
                && let Some(found) = DeletionEvidence::of(record)
            {
                record.source_deleted = true;
                evidence.push(found);
            }
        }
        if !evidence.is_empty() {
            wanted.push((folder, evidence));
        }
    }
    if wanted.is_empty() {
        return Ok(0);
    }
    store.save(state)?;
    let mut deleted = 0;
    for (folder, evidence) in wanted {
        let source_folder = &folder.plan.source_folder;
        let outcome = after.source.delete(source_folder, &evidence)?;
        for reason in outcome.kept {
            after
                .report
                .warn(format!("{source_folder}: kept on the source: {reason}"));
        }
        deleted += outcome.deleted.len();
        if let Some(known) = state.folders.get_mut(source_folder) {
            let gone: HashSet<&String> = outcome.deleted.iter().collect();
            known.known.retain(|uidl, _| !gone.contains(uidl));
            known.copies.retain(
                |record| !matches!(&record.source, SourceRef::Uidl(uidl) if gone.contains(uidl)),
            );
        }
    }
    Ok(deleted)
}

/// Whether the target, freshly indexed, still holds this copy: at its UID with its identity,
/// or, when the target never said where it went, some message with its identity.
fn copy_still_there(record: &CopyRecord, fresh: &TargetIndex) -> bool {
    match record.target {
        Some(at) => {
            fresh.uid_validity == Some(at.uid_validity)
                && fresh
                    .copies(&record.identity)
                    .iter()
                    .any(|c| c.uid == at.uid)
        }
        None => fresh.count(&record.identity) > 0,
    }
}

/// Applies the source's flag changes since the last run to the target's copies, as flags
/// added and removed: flags set only on the target stay. Only identities that occur once on
/// the source take part (with duplicates, which source message a copy stands for is
/// unknowable), and only those the last run saw (a first look changes nothing).
fn sync_flags(
    folder: &PlannedFolder,
    known: &mut FolderState,
    target: &mut dyn Target,
    report: &ReportBuilder,
) -> Result<usize, Error> {
    type Change = (Vec<String>, Vec<String>);
    let mut updates: BTreeMap<Change, Vec<u32>> = BTreeMap::new();
    let mut flags_now = BTreeMap::new();
    // Shared: a large folder's messages carry a handful of different flag sets between them.
    let mut flag_sets = FlagSets::default();
    let mut occurrences: HashMap<&Identity, u32> =
        HashMap::with_capacity(folder.source_index.len());
    for message in &folder.source_index {
        *occurrences.entry(&message.identity).or_default() += 1;
    }
    for message in &folder.source_index {
        let identity = &message.identity;
        if occurrences[identity] > 1 {
            continue;
        }
        let now = flag_sets.intern(canonical_flags(
            message
                .flags
                .iter()
                .filter(|f| folder.target_index.keywords.accepts(f)),
        ));
        if let Some(before) = known.flags.get(identity)
            && before != &now
        {
            let add: Vec<String> = now
                .iter()
                .filter(|f| !before.contains(f))
                .cloned()
                .collect();
            let remove: Vec<String> = before
                .iter()
                .filter(|f| !now.contains(f))
                .cloned()
                .collect();
            for copy in folder.target_index.copies(identity) {
                let changes = add.iter().any(|f| !copy.flags.contains(f))
                    || remove.iter().any(|f| copy.flags.contains(f));
                if changes {
                    updates
                        .entry((add.clone(), remove.clone()))
                        .or_default()
                        .push(copy.uid);
                }
            }
        }
        flags_now.insert(identity.clone(), now);
    }
    let before = std::mem::replace(&mut known.flags, flags_now);
    let (source_folder, target_folder) = (&folder.plan.source_folder, &folder.plan.target_folder);
    let unapplied: usize = updates.values().map(Vec::len).sum();
    if unapplied == 0 {
        return Ok(0);
    }
    let Some(uid_validity) = folder.target_index.uid_validity else {
        report.warn(format!(
            "{source_folder} → {target_folder}: {unapplied} flag change(s) on the source not \
             applied: the target keeps no UIDs to change flags by"
        ));
        return Ok(0);
    };
    let mut updated = 0;
    for ((add, remove), uids) in updates {
        let change = target.change_flags(target_folder, uid_validity, &uids, &add, &remove)?;
        if change == UidChange::UidValidityChanged {
            // The next run, on the new UIDs, applies them.
            known.flags = before;
            report.warn(format!(
                "{source_folder} → {target_folder}: the target folder's UIDVALIDITY changed \
                 during the run; its flag changes are applied by the next run"
            ));
            break;
        }
        updated += uids.len();
    }
    Ok(updated)
}

/// `--delete`: removes the copies this mirror made of messages that have left the source,
/// as [`deletion::departures`] decides from the records and both indexes, and says why any
/// were held back.
fn delete_departed(
    folder: &PlannedFolder,
    known: &mut FolderState,
    view: SourceView,
    after: &mut AfterCopy<'_>,
) -> Result<usize, Error> {
    let decision = deletion::departures(
        std::mem::take(&mut known.copies),
        known.source_uid_validity,
        view,
        &folder.source_index,
        &folder.target_index,
    );
    let (source_folder, target_folder) = (&folder.plan.source_folder, &folder.plan.target_folder);
    for reason in decision.held_back {
        after.report.warn(format!(
            "{source_folder} → {target_folder}: --delete: {reason}"
        ));
    }
    known.copies = decision.kept;
    let Some(uid_validity) = decision
        .uid_validity
        .filter(|_| !decision.doomed.is_empty())
    else {
        return Ok(0);
    };
    match after
        .target
        .delete(target_folder, uid_validity, &decision.doomed)?
    {
        UidChange::Applied => Ok(decision.doomed.len()),
        // The doomed records go anyway: their UIDs name nothing in the folder now.
        UidChange::UidValidityChanged => {
            after.report.warn(format!(
                "{source_folder} → {target_folder}: --delete: the target folder's UIDVALIDITY \
                 changed during the run; nothing deleted"
            ));
            Ok(0)
        }
    }
}

/// Flags in a form two lists compare equal in: sorted, without `\Recent`.
fn canonical_flags<'a>(flags: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut flags: Vec<String> = flags
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .cloned()
        .collect();
    flags.sort();
    flags
}
