//! The `migrate` job: connect both sides, plan every folder, then copy, verify and report.
//!
//! Split in two phases so the caller can show the plan (a dry run stops there) and size its
//! progress bars before anything is written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::endpoint::Protocol;
use crate::error::Error;
use crate::folders::{self, FolderList, FolderMapping, FolderRules};
use crate::identity::Identity;
use crate::index::{SourceMessage, TargetIndex};
use crate::parallel::both;
use crate::plan::{self, FolderPlan};
use crate::preflight::{self, FolderAction, FolderCheck, Preflight};
use crate::report::{Report, ReportBuilder};
use crate::store::ImapTarget;
use crate::store::maildir::{Maildir, MaildirSource, MaildirTarget};
use crate::store::mbox::{Mbox, MboxSource, MboxTarget};
use crate::store::{Account, ConnectOptions, ImapSource, POP3_FOLDER, Pop3Source};
use crate::store::{Source, Target};
use crate::transfer::{self, Fanout, Observer, TargetPool, TransferSettings, Unobserved};
use crate::uidl_keeping;
use crate::verify;

/// Everything a `migrate` run needs.
#[derive(Clone)]
pub struct MigrateJob {
    /// The server to read from.
    pub from: Account,
    /// The IMAP server to write to.
    pub to: Account,
    /// Connection settings for both sides.
    pub connect: ConnectOptions,
    /// Batching and parallelism.
    pub transfer: TransferSettings,
    /// Give copied POP3 messages the `\Seen` flag.
    pub mark_seen: bool,
    /// Plan only; write nothing to either server.
    pub dry_run: bool,
    /// Which folders of an IMAP source go where.
    pub folders: FolderRules,
    /// The largest message to send, from the user or a preset (the target's APPENDLIMIT is
    /// added when it advertises one).
    pub size_limit: Option<SizeLimit>,
    /// `--keep-pop3-uidl map=FILE`: where to append a row per copy (see
    /// [`crate::uidl_keeping`]; the `header` way is in [`TransferSettings`]).
    pub uidl_map: Option<PathBuf>,
    /// Read an mbox source as a Google Takeout, its messages in the folders their Gmail labels
    /// name (`--from-preset gmail`).
    pub gmail_labels: bool,
}

/// The largest message a target takes, and who says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeLimit {
    /// Bytes.
    pub bytes: u64,
    /// Whose limit it is, for the reason a message fails ("the target's APPENDLIMIT").
    pub set_by: String,
}

impl SizeLimit {
    /// The tighter of two limits.
    pub fn tightest(a: Option<SizeLimit>, b: Option<SizeLimit>) -> Option<SizeLimit> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.bytes < a.bytes { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Why a message of `size` bytes is not sent, or `None` when it fits.
    pub(crate) fn refuses(&self, size: u64) -> Option<String> {
        (size > self.bytes).then(|| {
            format!(
                "{size} bytes: larger than the {} bytes {} allows; not sent",
                self.bytes, self.set_by
            )
        })
    }
}

/// A folder to copy: its plan, and both indexes it was made from (kept for verification and
/// for a mirror's flag and deletion sync).
pub struct PlannedFolder {
    /// What to copy.
    pub plan: FolderPlan,
    /// The source folder's messages, shared with the plan.
    pub source_index: Vec<Arc<SourceMessage>>,
    /// The target folder's messages before the copy.
    pub target_index: TargetIndex,
}

/// What a job built on `migrate` (a mirror) may change in planning. The defaults plan as
/// `migrate` does.
pub trait PlanHooks {
    /// The folders whose summaries [`unchanged`](Self::unchanged) will ask for, when known
    /// before connecting: asked for in the login's round trip.
    fn summarise_at_login(&mut self) -> Summaries {
        Summaries::default()
    }

    /// Decides, before folders are indexed, which ones neither side changed since a previous
    /// run; such a folder is planned as complete without indexing. Returns, per mapping, the
    /// source's message count when unchanged.
    fn unchanged(
        &mut self,
        mappings: &[&FolderMapping],
        _source: &mut dyn Source,
        _target: &mut dyn Target,
    ) -> Result<Vec<Option<usize>>, Error> {
        Ok(vec![None; mappings.len()])
    }

    /// Indexes these source folders.
    fn index_sources(
        &mut self,
        mappings: &[&FolderMapping],
        source: &mut dyn Source,
    ) -> Result<Vec<Vec<SourceMessage>>, Error> {
        let folders: Vec<String> = mappings.iter().map(|m| m.source.clone()).collect();
        source.index_all(&folders)
    }
}

/// Folders to summarise (STATUS) on each side.
#[derive(Debug, Default)]
pub struct Summaries {
    /// Source folders.
    pub source: Vec<String>,
    /// Target folders.
    pub target: Vec<String>,
}

/// The hooks of a plain `migrate`.
struct NoHooks;

impl PlanHooks for NoHooks {}

/// A step run after the copy and before verification (a mirror's flag and deletion sync).
pub type AfterCopyStep<'a> = dyn FnMut(AfterCopy<'_>) -> Result<(), Error> + 'a;

/// What a step run after the copy gets to work with (a mirror's flag and deletion sync).
pub struct AfterCopy<'a> {
    /// The folders as planned.
    pub folders: &'a [PlannedFolder],
    /// The planning source connection.
    pub source: &'a mut dyn Source,
    /// A fresh target connection.
    pub target: &'a mut dyn Target,
    /// The report being built.
    pub report: &'a ReportBuilder,
}

/// Connections opened in the background while planning, for the copy to take: over a slow
/// link a login costs several round trips, which planning then hides.
struct Spares<T>(Mutex<Vec<JoinHandle<Result<T, Error>>>>);

impl<T: Send + 'static> Spares<T> {
    /// `count` connections, each opened once by `open` (no retry: the copy opens its own
    /// when a spare failed).
    fn open(count: usize, open: impl Fn() -> Result<T, Error> + Send + Sync + 'static) -> Self {
        let open = Arc::new(open);
        let opening = (0..count)
            .map(|_| {
                let open = Arc::clone(&open);
                std::thread::spawn(move || open())
            })
            .collect();
        Spares(Mutex::new(opening))
    }

    /// A spare that logged in, else what `open` opens now.
    fn take_or(&self, open: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let spare = self.0.lock().unwrap().pop();
        match spare.map(JoinHandle::join) {
            Some(Ok(Ok(spare))) => Ok(spare),
            // A spare that could not log in says nothing a new connection would not.
            _ => open(),
        }
    }

    /// Waits for the spares nobody took (fewer folders to copy than planned for), which
    /// then log out.
    fn close(&self) {
        for spare in std::mem::take(&mut *self.0.lock().unwrap()) {
            let _ = spare.join();
        }
    }
}

/// The result of the planning phase, with the connections still open.
pub struct Planned<'j> {
    job: &'j MigrateJob,
    source: Box<dyn Source>,
    /// Source connections for the copy's other folder lanes, opened while planning.
    spare_sources: Spares<Box<dyn Source>>,
    /// The planning target connection, handed to the copy as its first upload connection.
    target: Option<Box<dyn Target>>,
    /// One entry per folder.
    pub folders: Vec<PlannedFolder>,
    /// The largest message the copy sends.
    size_limit: Option<SizeLimit>,
    /// Whether the target takes several writers per folder.
    concurrent_writers: bool,
    /// A dry run's preflight.
    preflight: Option<Preflight>,
    report: ReportBuilder,
}

/// Connects to both servers, indexes every folder on both sides and plans the copy. Writes
/// nothing, except creating missing target folders when this is not a dry run.
pub fn plan(job: &MigrateJob) -> Result<Planned<'_>, Error> {
    plan_with(job, &mut NoHooks)
}

/// [`plan`], with the planning steps `hooks` change.
pub fn plan_with<'j>(job: &'j MigrateJob, hooks: &mut dyn PlanHooks) -> Result<Planned<'j>, Error> {
    let report = ReportBuilder::new(
        job.from.endpoint.to_string(),
        job.to.endpoint.to_string(),
        job.dry_run,
    );
    // The two sides are independent until the diff: over a slow link, doing them at once
    // halves the round trips the plan waits for.
    let ((mut source, source_folders), (mut target, target_folders)) =
        open_both(job, hooks.summarise_at_login())?;
    let size_limit = SizeLimit::tightest(
        job.size_limit.clone(),
        target.append_limit().map(|bytes| SizeLimit {
            bytes,
            set_by: "the target's APPENDLIMIT".into(),
        }),
    );
    let concurrent_writers = target.concurrent_writers();
    // One more round trip, for the preflight only: a run finds a full quota by its refusals.
    let quota = if job.dry_run {
        target.storage_quota()?
    } else {
        None
    };
    let mappings = folder_mappings(job, &source_folders, &target_folders);
    // Created in the same round trip as the target's index, below. A folder that only holds
    // others (\Noselect) comes into being with its children.
    let missing: Vec<String> = mappings
        .iter()
        .filter(|m| m.selectable)
        .map(|m| &m.target)
        // INBOX always exists, whatever case the server lists it in (RFC 3501 §5.1).
        .filter(|name| !name.eq_ignore_ascii_case("INBOX"))
        .filter(|name| !target_folders.folders.iter().any(|f| &f.name == *name))
        .cloned()
        .collect();
    // A view's remainder (what no other folder holds) is known once every other folder is
    // indexed: views come last, and no folder may skip its index as unchanged.
    let (views, stored): (Vec<_>, Vec<_>) = mappings
        .iter()
        .filter(|m| m.selectable)
        .partition(|mapping| mapping.remainder);
    let may_skip = views.is_empty();
    let candidates: Vec<&FolderMapping> = stored.into_iter().chain(views).collect();
    // A folder missing on the target has changed, and cannot be asked about yet.
    let exists = |mapping: &FolderMapping| !missing.contains(&mapping.target);
    let unchanged = if may_skip {
        let existing: Vec<&FolderMapping> =
            candidates.iter().copied().filter(|m| exists(m)).collect();
        let mut answers = hooks
            .unchanged(&existing, source.as_mut(), target.as_mut())?
            .into_iter();
        candidates
            .iter()
            .map(|m| {
                if exists(m) {
                    answers.next().flatten()
                } else {
                    None
                }
            })
            .collect()
    } else {
        vec![None; candidates.len()]
    };
    let mut to_index = Vec::new();
    for (mapping, unchanged) in candidates.into_iter().zip(unchanged) {
        match unchanged {
            Some(messages) => {
                report.planned(&plan::unchanged(&mapping.source, &mapping.target, messages));
            }
            None => to_index.push(mapping),
        }
    }
    // Opened now, not at the login: a mirror whose folders are all unchanged copies nothing,
    // and a cron job's every run must not cost the server a login it does not use.
    let spare_sources = {
        let job = job.clone();
        Spares::open(spare_lanes(&job, to_index.len()), move || {
            open_source_once(&job)
        })
    };
    let target_names: Vec<String> = to_index.iter().map(|m| m.target.clone()).collect();
    let create: &[String] = if job.dry_run { &[] } else { &missing };
    let (source_indexes, target_indexes) = both(
        || hooks.index_sources(&to_index, source.as_mut()),
        || target.create_and_index(create, &target_names),
    );
    let mut folders = Vec::new();
    let mut refused_folders = Vec::new();
    let mut elsewhere: HashSet<Identity> = HashSet::new();
    for ((mapping, source_index), target_index) in to_index
        .into_iter()
        .zip(source_indexes?)
        .zip(target_indexes?)
    {
        // Not `collect()`: it would reuse the index's buffer, sized for whole messages, for
        // the much smaller pointers, and keep all of it for the run.
        let mut shared = Vec::with_capacity(source_index.len());
        shared.extend(source_index.into_iter().map(Arc::new));
        let mut source_index = shared;
        if mapping.remainder {
            source_index.retain(|message| !elsewhere.contains(&message.identity));
        } else if !may_skip {
            // Only a view's remainder needs to know what the other folders hold.
            elsewhere.extend(source_index.iter().map(|m| m.identity.clone()));
        }
        let target_index = match target_index {
            Ok(index) => index,
            Err(refused) => {
                refused_folders.push((mapping.target.clone(), refused.0.clone()));
                report.folder_failed(
                    &mapping.source,
                    &mapping.target,
                    source_index.len(),
                    &refused.0,
                );
                continue;
            }
        };
        let plan = plan::diff(
            &mapping.source,
            &mapping.target,
            &source_index,
            &target_index,
        );
        report.planned(&plan);
        folders.push(PlannedFolder {
            plan,
            source_index,
            target_index,
        });
    }
    let preflight = job.dry_run.then(|| {
        preflight::check(preflight::Findings {
            capabilities: &target.capabilities(),
            quota,
            size_limit: size_limit.as_ref(),
            plans: folders.iter().map(|f| &f.plan).collect(),
            folders: mappings
                .iter()
                .filter(|m| m.selectable)
                .map(|m| {
                    let refusal = refused_folders
                        .iter()
                        .find(|(name, _)| *name == m.target)
                        .map(|(_, reason)| reason.clone());
                    let action = match (&refusal, missing.contains(&m.target)) {
                        (Some(_), _) => FolderAction::Refused,
                        (None, true) => FolderAction::Create,
                        (None, false) => FolderAction::Exists,
                    };
                    let check = FolderCheck {
                        source: m.source.clone(),
                        target: m.target.clone(),
                        action,
                    };
                    (check, refusal)
                })
                .collect(),
        })
    });
    Ok(Planned {
        job,
        source,
        spare_sources,
        target: Some(target),
        folders,
        size_limit,
        concurrent_writers,
        preflight,
        report,
    })
}

impl Planned<'_> {
    /// Messages and bytes the plan copies.
    pub fn totals(&self) -> (u64, u64) {
        self.folders.iter().fold((0, 0), |(n, bytes), f| {
            (
                n + f.plan.to_copy.len() as u64,
                bytes + f.plan.bytes_to_copy(),
            )
        })
    }

    /// The report of a dry run: the plan's counts and the preflight, nothing copied.
    pub fn dry_run_report(self) -> Report {
        if let Some(preflight) = self.preflight {
            self.report.preflight(preflight);
        }
        self.report.finish()
    }

    /// Copies every folder, runs `after_copy` (if any), verifies the target, and returns the
    /// report. The copies made are recorded in `receipts` (a caller that needs them afterwards
    /// passes its own, so that a large copy's receipts are held once). A connection failure
    /// ends the run early: the report says what was done and the error is returned beside it.
    pub fn execute(
        mut self,
        observer: &dyn Observer,
        receipts: &verify::Receipts,
        after_copy: Option<&mut AfterCopyStep<'_>>,
    ) -> (Report, Option<Error>) {
        let job = self.job;
        let events = Fanout(vec![&self.report, observer, receipts]);
        let settings = TransferSettings {
            concurrent_writers: self.concurrent_writers,
            ..job.transfer
        }
        .for_round_trip(self.target.as_ref().and_then(|target| target.login_took()));
        drop_too_large(&mut self.folders, self.size_limit.as_ref(), &events);
        let plans: Vec<&FolderPlan> = self.folders.iter().map(|f| &f.plan).collect();
        // Upload workers retry on their own, re-indexing after a break.
        let connect = || open_target_once(job);
        let targets = TargetPool::new(&connect);
        // The planning connection uploads first: over a slow link a new one is several round
        // trips away from its first APPEND.
        if let Some(planning) = self.target.take() {
            targets.put(planning);
        }
        let spares = &self.spare_sources;
        let mut error = transfer::copy_folders(
            &plans,
            &mut self.source,
            &|| spares.take_or(|| open_source(job)),
            &targets,
            settings,
            &events,
        )
        .err();
        self.spare_sources.close();
        if let Some(map) = &job.uidl_map {
            self.append_uidl_map(map, receipts);
        }
        if error.is_none() {
            // The connection an upload worker left last, used a moment ago, or, when nothing
            // was copied, the planning one: not one the server may have closed while it sat
            // idle through a long copy.
            let target = match targets.take() {
                Some(target) => Ok(target),
                None => open_target(job),
            };
            let changed = after_copy.is_some();
            let finished = target
                .and_then(|mut target| {
                    if let Some(after_copy) = after_copy {
                        after_copy(AfterCopy {
                            folders: &self.folders,
                            source: self.source.as_mut(),
                            target: target.as_mut(),
                            report: &self.report,
                        })?;
                    }
                    Ok(target)
                })
                .and_then(|target| {
                    // Verification only reads, so a connection lost while verifying costs a
                    // new one, as an upload worker's does, not the run.
                    let mut first = Some(target);
                    settings.retry(&events, None, Error::is_transient, || {
                        let mut target = match first.take() {
                            Some(target) => target,
                            None => open_target_once(job)?,
                        };
                        self.verify(target.as_mut(), changed, receipts)
                    })
                });
            match finished {
                Ok(complete) => self.report.verified(complete),
                Err(err) => error = Some(err),
            }
        }
        if let Some(err) = &error {
            self.report.fatal(&err.to_string());
        }
        (self.report.finish(), error)
    }

    /// Appends this run's copies to the `--keep-pop3-uidl` map; a file that cannot be written
    /// is a warning, since the copies are made.
    fn append_uidl_map(&self, path: &Path, receipts: &verify::Receipts) {
        let copies: Vec<(&str, verify::Receipt)> = self
            .folders
            .iter()
            .flat_map(|f| {
                let target = f.plan.target_folder.as_str();
                receipts
                    .copies_from(&f.plan.source_folder)
                    .into_iter()
                    .map(move |receipt| (target, receipt))
            })
            .collect();
        let rows = copies
            .iter()
            .map(|(folder, (message, at))| (*folder, message.as_ref(), *at));
        let account = self.job.to.endpoint.to_string();
        if let Err(err) = uidl_keeping::append_map(path, &account, rows) {
            self.report.warn(err.to_string());
        }
    }

    /// Checks that every source message is in the target folders this run wrote to, from the
    /// UIDs the target reported for the copies where it can ([`verify::missing_after_copies`]).
    /// A folder it did not write to (nothing to copy, and no `after_copy` step that changed
    /// the target) was found complete by its plan's index moments ago.
    fn verify(
        &self,
        target: &mut dyn Target,
        after_copy_changed: bool,
        receipts: &verify::Receipts,
    ) -> Result<bool, Error> {
        let checks: Vec<verify::Check<'_>> = self
            .folders
            .iter()
            .filter(|f| after_copy_changed || !f.plan.to_copy.is_empty())
            .map(|f| verify::Check {
                source_folder: &f.plan.source_folder,
                target_folder: &f.plan.target_folder,
                source_index: &f.source_index,
                planned: &f.target_index,
            })
            .collect();
        let verdict = verify::missing_after_copies(&checks, receipts, target)?;
        let mut complete = true;
        for (check, missing) in checks.iter().zip(verdict.missing) {
            self.report
                .missing_after_copy(check.source_folder, &missing);
            complete &= missing.is_empty();
        }
        for (folder, altered) in verdict.altered {
            altered
                .warnings(&folder)
                .into_iter()
                .for_each(|warning| self.report.warn(warning));
        }
        Ok(complete)
    }
}

/// Takes the messages over the size limit out of the plans, each reported failed: a server
/// refuses them anyway, some (Gmail) by dropping the connection mid-upload.
fn drop_too_large(
    folders: &mut [PlannedFolder],
    limit: Option<&SizeLimit>,
    observer: &dyn Observer,
) {
    let Some(limit) = limit else {
        return;
    };
    for folder in folders {
        let plan = &mut folder.plan;
        plan.to_copy
            .retain(|message| match limit.refuses(message.size) {
                Some(reason) => {
                    observer.message_failed(&plan.source_folder, message, &reason);
                    false
                }
                None => true,
            });
    }
}

/// Where each source folder goes. A POP3 maildrop goes into the target URL's folder (INBOX by
/// default); an IMAP account's folders keep their hierarchy, moved from the source's personal
/// namespace into the target's, below the target URL's folder when it names one.
fn folder_mappings(
    job: &MigrateJob,
    source_folders: &FolderList,
    target_folders: &FolderList,
) -> Vec<FolderMapping> {
    if job.from.endpoint.protocol == Protocol::Pop3 {
        return vec![FolderMapping {
            source: POP3_FOLDER.to_owned(),
            target: job
                .to
                .endpoint
                .folder
                .clone()
                .unwrap_or_else(|| POP3_FOLDER.to_owned()),
            selectable: true,
            remainder: false,
        }];
    }
    let mut rules = job.folders.clone();
    if rules.prefix.is_none() {
        rules.prefix = job.to.endpoint.folder.clone();
    }
    folders::map_folders(source_folders, target_folders, &rules)
}

/// Opens a connection, trying again after a transient failure ([`Error::is_transient`]: a
/// server not up yet, restarting, or dropping connections) up to `--retries` times, with the
/// upload workers' backoff. A refused login or an untrusted certificate fails at once.
/// Stops early, without retrying further, once `give_up` is set.
fn retrying<T>(
    job: &MigrateJob,
    give_up: Option<&AtomicBool>,
    open: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    job.transfer
        .retry(&Unobserved, give_up, Error::is_transient, open)
}

/// A logged-in connection to each side, and the folders each side has.
type Connections = ((Box<dyn Source>, FolderList), (Box<dyn Target>, FolderList));

/// Opens both planning connections at once, each listing its folders (and summarising its side
/// of `summarise`) as soon as it is logged in. The first to fail for good makes the other stop
/// retrying (each still tries once): the run ends with the failure of each side that failed,
/// so a wrong password on both sides is found in one run.
fn open_both(job: &MigrateJob, summarise: Summaries) -> Result<Connections, Error> {
    fn settled<T>(opened: Result<T, Error>, give_up: &AtomicBool) -> Result<T, Error> {
        if opened.is_err() {
            give_up.store(true, Ordering::SeqCst);
        }
        opened
    }
    fn listed<T>(
        opened: Result<T, Error>,
        folders: impl FnOnce(&mut T) -> Result<FolderList, Error>,
    ) -> Result<(T, FolderList), Error> {
        let mut side = opened?;
        let folders = folders(&mut side)?;
        Ok((side, folders))
    }
    // Both sessions list their folders next: in the login's round trip, where they can.
    let listing = |summarise_at_login: Vec<String>| MigrateJob {
        connect: ConnectOptions {
            list_at_login: true,
            summarise_at_login,
            ..job.connect.clone()
        },
        ..job.clone()
    };
    let (source_job, target_job) = (listing(summarise.source), listing(summarise.target));
    let give_up = AtomicBool::new(false);
    let (source, target) = both(
        || {
            let opened = open_source_unless(&source_job, Some(&give_up));
            settled(listed(opened, |source| source.folders()), &give_up)
        },
        || {
            let opened = open_target_unless(&target_job, Some(&give_up));
            settled(listed(opened, |target| target.folders()), &give_up)
        },
    );
    match (source, target) {
        (Ok(source), Ok(target)) => Ok((source, target)),
        (source, target) => {
            Err(Error::of_sides(source.err(), target.err()).expect("one side failed"))
        }
    }
}

/// How many source connections beyond the planning one a copy of `folders` folders may use,
/// one per folder lane (see [`transfer::copy_folders`]), at most `--connections` lanes: none
/// for a dry run, which copies nothing, and for a POP3 maildrop, which servers lock to one
/// session.
fn spare_lanes(job: &MigrateJob, folders: usize) -> usize {
    if job.dry_run || job.from.endpoint.protocol != Protocol::Imap {
        return 0;
    }
    job.transfer.connections.min(folders).saturating_sub(1)
}

fn open_source(job: &MigrateJob) -> Result<Box<dyn Source>, Error> {
    open_source_unless(job, None)
}

fn open_source_unless(
    job: &MigrateJob,
    give_up: Option<&AtomicBool>,
) -> Result<Box<dyn Source>, Error> {
    retrying(job, give_up, || open_source_once(job))
}

fn open_source_once(job: &MigrateJob) -> Result<Box<dyn Source>, Error> {
    match job.from.endpoint.protocol {
        Protocol::Pop3 => Ok(Box::new(Pop3Source::connect(
            &job.from,
            &job.connect,
            job.mark_seen,
        )?)),
        Protocol::Imap => Ok(Box::new(ImapSource::connect(&job.from, &job.connect)?)),
        Protocol::Maildir => Ok(Box::new(MaildirSource::open(Maildir::new(local_path(
            &job.from,
        )))?)),
        Protocol::Mbox => {
            let mbox = MboxSource::open(Mbox::new(local_path(&job.from)))?;
            Ok(Box::new(match job.gmail_labels {
                true => mbox.by_gmail_labels()?,
                false => mbox,
            }))
        }
    }
}

/// The directory or file of a local store's account.
fn local_path(account: &Account) -> PathBuf {
    account
        .endpoint
        .path
        .clone()
        .expect("a local store's endpoint has a path")
}

fn open_target(job: &MigrateJob) -> Result<Box<dyn Target>, Error> {
    open_target_unless(job, None)
}

fn open_target_unless(
    job: &MigrateJob,
    give_up: Option<&AtomicBool>,
) -> Result<Box<dyn Target>, Error> {
    retrying(job, give_up, || open_target_once(job))
}

fn open_target_once(job: &MigrateJob) -> Result<Box<dyn Target>, Error> {
    match job.to.endpoint.protocol {
        Protocol::Imap => Ok(Box::new(ImapTarget::connect(&job.to, &job.connect)?)),
        Protocol::Maildir => {
            let maildir = Maildir::new(local_path(&job.to));
            Ok(Box::new(match job.dry_run {
                true => MaildirTarget::open_read_only(maildir),
                false => MaildirTarget::open(maildir),
            }))
        }
        Protocol::Mbox => Ok(Box::new(MboxTarget::open(Mbox::new(local_path(&job.to))))),
        Protocol::Pop3 => Err(Error::Usage {
            message: format!("{}: the target must be an IMAP server", job.to.endpoint),
            hint: Some(
                "write the target as imaps://USER@HOST/FOLDER, maildir:PATH or mbox:PATH".into(),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn limit(bytes: u64, set_by: &str) -> SizeLimit {
        SizeLimit {
            bytes,
            set_by: set_by.into(),
        }
    }

    fn refused() -> Error {
        Error::Usage {
            message: "no".into(),
            hint: None,
        }
    }

    #[test]
    fn spares_are_taken_while_they_last_and_a_failed_one_gives_way_to_a_new_connection() {
        let spares = Spares::open(2, || Ok(1));
        assert_eq!(spares.take_or(|| Ok(2)).unwrap(), 1);
        assert_eq!(spares.take_or(|| Ok(2)).unwrap(), 1);
        assert_eq!(spares.take_or(|| Ok(2)).unwrap(), 2);

        let failing: Spares<u32> = Spares::open(1, || Err(refused()));
        assert_eq!(failing.take_or(|| Ok(2)).unwrap(), 2);

        let unused = Spares::open(3, || Ok(1));
        unused.close();
        assert_eq!(unused.take_or(|| Ok(2)).unwrap(), 2);
    }

    #[test]
    fn the_tightest_limit_wins_and_names_who_set_it() {
        let user = limit(50, "--max-message-size");
        let server = limit(100, "the target's APPENDLIMIT");
        for (a, b) in [
            (Some(user.clone()), Some(server.clone())),
            (Some(server.clone()), Some(user.clone())),
            (Some(user.clone()), None),
            (None, Some(user.clone())),
        ] {
            assert_eq!(SizeLimit::tightest(a, b), Some(user.clone()));
        }
        assert_eq!(SizeLimit::tightest(None, None), None);
        assert_eq!(user.refuses(50), None);
        assert_eq!(
            user.refuses(51).as_deref(),
            Some("51 bytes: larger than the 50 bytes --max-message-size allows; not sent")
        );
    }

    #[derive(Default)]
    struct Failed(Mutex<Vec<(String, u32, String)>>);

    impl Observer for Failed {
        fn message_failed(&self, folder: &str, message: &SourceMessage, reason: &str) {
            self.0
                .lock()
                .unwrap()
                .push((folder.into(), message.key, reason.into()));
        }
    }

    /// Messages of 10 bytes (keys 1, 2) and 20 bytes (key 3) in folder S.
    fn folder() -> PlannedFolder {
        let mut big = SourceMessage::with_id(3, "big");
        big.size = 20;
        let source = vec![
            Arc::new(SourceMessage::with_id(1, "a")),
            Arc::new(SourceMessage::with_id(2, "b")),
            Arc::new(big),
        ];
        let target_index = TargetIndex::default();
        PlannedFolder {
            plan: plan::diff("S", "T", &source, &target_index),
            source_index: source,
            target_index,
        }
    }

    #[test]
    fn messages_over_the_limit_leave_the_plan_reported_failed() {
        let mut folders = [folder()];
        let failed = Failed::default();
        drop_too_large(&mut folders, Some(&limit(10, "--to-preset gmail")), &failed);
        let planned: Vec<u32> = folders[0].plan.to_copy.iter().map(|m| m.key).collect();
        assert_eq!(planned, [1, 2]);
        assert_eq!(
            *failed.0.lock().unwrap(),
            [(
                "S".to_owned(),
                3,
                "20 bytes: larger than the 10 bytes --to-preset gmail allows; not sent".to_owned()
            )]
        );

        let mut folders = [folder()];
        drop_too_large(&mut folders, None, &failed);
        assert_eq!(folders[0].plan.to_copy.len(), 3);
    }
}
