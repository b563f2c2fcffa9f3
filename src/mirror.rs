//! The `mirror` job, for cron: the same copy as `migrate`, then the source's flag changes and
//! (with `--delete`) its deletions applied to the target, with state kept between runs.
//!
//! The state makes an unchanged account cheap (one STATUS per folder and side instead of two
//! indexes, when both servers have CONDSTORE) and remembers which copies the mirror made:
//! `--delete` removes only those, never anything else on the target.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::error::Error;
use crate::folders::FolderMapping;
use crate::identity::Identity;
use crate::index::{KnownMessages, SourceMessage};
use crate::migrate::{self, AfterCopy, MigrateJob, PlanHooks, PlannedFolder};
use crate::report::Report;
use crate::state::{FolderState, MirrorState, StateStore};
use crate::transfer::{Fanout, Observer, Source, Target};
use crate::verify;

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
    let (previous, warning) = store.load();
    let mut planning = MirrorPlanning {
        previous: &previous,
        delete: job.delete,
        considered: Vec::new(),
        known: BTreeMap::new(),
    };
    let planned = migrate::plan_with(&job.copy, &mut planning)?;
    let MirrorPlanning {
        considered,
        mut known,
        ..
    } = planning;
    let (messages, bytes) = planned.totals();
    before_copy(messages, bytes);

    let copied = CopiedIdentities::default();
    let mut state = previous.clone();
    state.deleted_gone = job.delete;
    // Folders gone from the source (or now excluded) are forgotten.
    state
        .folders
        .retain(|folder, _| considered.contains(folder));
    let mut sync = |mut after: AfterCopy<'_>| {
        if let Some(warning) = &warning {
            after.report.warn(warning.clone());
        }
        let copies = copied.by_folder();
        let known_by_folder = &mut known;
        for folder in after.folders {
            let known = state
                .folders
                .entry(folder.plan.source_folder.clone())
                .or_default();
            if known.target_folder != folder.plan.target_folder {
                // A folder mirrored somewhere else before: what was copied there is not here.
                // (An empty name is an entry a failed run left, about this very folder.)
                if !known.target_folder.is_empty() {
                    *known = FolderState::default();
                }
                known.target_folder = folder.plan.target_folder.clone();
            }
            let flags_updated = sync_flags(folder, known, after.target)?;
            let deleted = if job.delete {
                delete_departed(folder, known, after.target)?
            } else {
                0
            };
            if let Some(fresh) = known_by_folder.remove(&folder.plan.source_folder) {
                known.known = fresh;
            }
            for identity in copies.get(&folder.plan.source_folder).into_iter().flatten() {
                *known.copied.entry(identity.clone()).or_default() += 1;
            }
            after.report.synced(flags_updated, deleted);
        }
        if let Some(days) = job.delete_source_after_days {
            let deleted = delete_from_source(after.folders, &mut state, &mut after, days)?;
            after.report.source_deleted(deleted);
        }
        // Summaries last: they must describe the folders as this run leaves them.
        for (source_folder, known) in &mut state.folders {
            known.source_status = after.source.status(source_folder)?;
            known.target_status = after.target.status(&known.target_folder)?;
        }
        Ok(())
    };
    let events = Fanout(vec![observer, &copied]);
    let (report, error) = planned.execute(&events, Some(&mut sync));
    let saved = if error.is_none() && report.exit_code() == 0 {
        store.save(&state)
    } else {
        // Keep what was learnt about the copies (for a later --delete), but not the
        // summaries: the next run must index everything again.
        let mut partial = previous;
        for (folder, identities) in copied.by_folder() {
            let known = partial.folders.entry(folder).or_default();
            for identity in identities {
                *known.copied.entry(identity).or_default() += 1;
            }
        }
        for (folder, fresh) in known {
            partial.folders.entry(folder).or_default().known = fresh;
        }
        for folder in partial.folders.values_mut() {
            folder.source_status = None;
            // What may have misled this run is read again next time; ages are kept.
            for message in folder.known.values_mut() {
                message.identity = None;
            }
        }
        store.save(&partial)
    };
    Ok((report, error.or(saved.err())))
}

/// Planning for a mirror: folders unchanged since the last run are not indexed, and a POP3
/// source reads only the headers of UIDLs it has not seen.
struct MirrorPlanning<'s> {
    previous: &'s MirrorState,
    delete: bool,
    /// Every source folder looked at (the others are forgotten).
    considered: Vec<String>,
    /// What the source knows after this run's index, per source folder.
    known: BTreeMap<String, KnownMessages>,
}

impl PlanHooks for MirrorPlanning<'_> {
    fn unchanged(
        &mut self,
        mapping: &FolderMapping,
        source: &mut dyn Source,
        target: &mut dyn Target,
    ) -> Result<Option<usize>, Error> {
        self.considered.push(mapping.source.clone());
        let Some(known) = self.previous.folders.get(&mapping.source) else {
            return Ok(None);
        };
        // A --delete run after one without must look at every folder once.
        if self.delete && !self.previous.deleted_gone {
            return Ok(None);
        }
        if known.target_folder != mapping.target || known.source_status.is_none() {
            return Ok(None);
        }
        let unchanged = source.status(&mapping.source)? == known.source_status
            && target.status(&mapping.target)? == known.target_status;
        Ok(unchanged.then(|| known.source_status.map_or(0, |s| s.messages as usize)))
    }

    fn index_source(
        &mut self,
        mapping: &FolderMapping,
        source: &mut dyn Source,
    ) -> Result<Vec<SourceMessage>, Error> {
        let empty = KnownMessages::new();
        let known = self
            .previous
            .folders
            .get(&mapping.source)
            .map_or(&empty, |f| &f.known);
        let (index, fresh) = source.index_known(&mapping.source, known)?;
        self.known.insert(mapping.source.clone(), fresh);
        Ok(index)
    }
}

/// `--delete-source-after-days`: deletes from a POP3 source the messages first seen at least
/// `days` ago, in folders where a fresh index of the target finds every source message.
fn delete_from_source(
    folders: &[PlannedFolder],
    state: &mut MirrorState,
    after: &mut AfterCopy<'_>,
    days: u32,
) -> Result<usize, Error> {
    let cutoff = chrono::Utc::now().timestamp() - i64::from(days) * 86_400;
    let mut deleted = 0;
    for folder in folders {
        let missing = verify::missing_after_copy(
            &folder.source_index,
            &mut *after.target,
            &folder.plan.target_folder,
        )?;
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
        let old: Vec<SourceMessage> = folder
            .source_index
            .iter()
            .filter(|m| {
                m.stable_id
                    .as_ref()
                    .and_then(|id| known.known.get(id))
                    .is_some_and(|k| k.first_seen <= cutoff)
            })
            .cloned()
            .collect();
        if old.is_empty() {
            continue;
        }
        deleted += after.source.delete(&folder.plan.source_folder, &old)?;
        for message in &old {
            if let Some(id) = &message.stable_id {
                known.known.remove(id);
            }
        }
    }
    Ok(deleted)
}

/// Applies source flag changes made since the last run to the target's copies. Only
/// identities that occur once on the source take part: with duplicates, which source
/// message a copy stands for is unknowable.
fn sync_flags(
    folder: &PlannedFolder,
    known: &mut FolderState,
    target: &mut dyn Target,
) -> Result<usize, Error> {
    let mut updates: BTreeMap<Vec<String>, Vec<u32>> = BTreeMap::new();
    let mut flags_now = BTreeMap::new();
    for (identity, messages) in by_identity(&folder.source_index) {
        let [message] = messages.as_slice() else {
            continue;
        };
        let flags = canonical_flags(
            message
                .flags
                .iter()
                .filter(|f| folder.target_index.keywords.accepts(f)),
        );
        let key = identity.to_string();
        if known.flags.get(&key) != Some(&flags) {
            for copy in folder.target_index.copies(identity) {
                if canonical_flags(copy.flags.iter()) != flags {
                    updates.entry(flags.clone()).or_default().push(copy.uid);
                }
            }
        }
        flags_now.insert(key, flags);
    }
    known.flags = flags_now;
    let mut updated = 0;
    for (flags, uids) in updates {
        target.set_flags(&folder.plan.target_folder, &uids, &flags)?;
        updated += uids.len();
    }
    Ok(updated)
}

/// Removes copies this mirror made whose message is gone from the source: of an identity
/// with k copies made by the mirror, at most k, and only as many as the target holds beyond
/// what the source still has.
fn delete_departed(
    folder: &PlannedFolder,
    known: &mut FolderState,
    target: &mut dyn Target,
) -> Result<usize, Error> {
    let on_source = by_identity(&folder.source_index);
    let mut doomed = Vec::new();
    for identity in folder.target_index.identities() {
        let key = identity.to_string();
        let Some(made) = known.copied.get_mut(&key) else {
            continue;
        };
        let copies = folder.target_index.copies(identity);
        let still = on_source.get(identity).map_or(0, Vec::len);
        let remove = copies.len().saturating_sub(still).min(*made);
        // The newest copies go first: they are the likeliest to be the mirror's own.
        doomed.extend(copies.iter().rev().take(remove).map(|c| c.uid));
        *made -= remove;
    }
    known.copied.retain(|_, made| *made > 0);
    if !doomed.is_empty() {
        target.delete(&folder.plan.target_folder, &doomed)?;
    }
    Ok(doomed.len())
}

fn by_identity(index: &[SourceMessage]) -> HashMap<&Identity, Vec<&SourceMessage>> {
    let mut groups: HashMap<&Identity, Vec<&SourceMessage>> = HashMap::new();
    for message in index {
        groups.entry(&message.identity).or_default().push(message);
    }
    groups
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

/// Collects the identities of the messages copied, per source folder.
#[derive(Default)]
struct CopiedIdentities(Mutex<Vec<(String, String)>>);

impl CopiedIdentities {
    fn by_folder(&self) -> BTreeMap<String, Vec<String>> {
        let mut folders: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (folder, identity) in self.0.lock().unwrap().iter() {
            folders
                .entry(folder.clone())
                .or_default()
                .push(identity.clone());
        }
        folders
    }
}

impl Observer for CopiedIdentities {
    fn message_copied(&self, folder: &str, message: &SourceMessage) {
        self.0
            .lock()
            .unwrap()
            .push((folder.to_owned(), message.identity.to_string()));
    }
}
