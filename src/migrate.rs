//! The `migrate` job: connect both sides, plan every folder, then copy, verify and report.
//!
//! Split in two phases so the caller can show the plan (a dry run stops there) and size its
//! progress bars before anything is written.

use std::time::Duration;

use crate::auth::AuthMode;
use crate::endpoint::{Endpoint, Password, Protocol};
use crate::error::Error;
use crate::folders::{self, FolderMapping, FolderRules};
use crate::index::{SourceMessage, TargetIndex};
use crate::net::TlsConfig;
use crate::plan::{self, FolderPlan};
use crate::report::{Report, ReportBuilder};
use crate::source::{ImapSource, POP3_FOLDER, Pop3Source};
use crate::target::ImapTarget;
use crate::trace::Trace;
use crate::transfer::{self, Fanout, Observer, Source, Target, TransferSettings};
use crate::verify;

/// How to open connections, shared by both sides.
#[derive(Clone)]
pub struct ConnectOptions {
    /// TLS trust, built once.
    pub tls: TlsConfig,
    /// Whether a password may be sent unencrypted when a server offers no STARTTLS/STLS.
    pub allow_plaintext: bool,
    /// Connect and I/O timeout.
    pub timeout: Duration,
    /// The protocol trace (`-v`…`-vvv`).
    pub trace: Trace,
}

/// One side of a job: where, and how to log in.
#[derive(Clone)]
pub struct Account {
    /// The server URL.
    pub endpoint: Endpoint,
    /// The password (the administrator's, for a master-user login).
    pub password: Password,
    /// How to log in.
    pub auth: AuthMode,
    /// For OAuth logins: the command printing a fresh access token, run for every connection
    /// (tokens expire within the hour; a long migration outlives several).
    pub token_command: Option<String>,
}

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
}

/// A folder to copy: its plan, and both indexes it was made from (kept for verification and
/// for a mirror's flag and deletion sync).
pub struct PlannedFolder {
    /// What to copy.
    pub plan: FolderPlan,
    /// The source folder's messages.
    pub source_index: Vec<SourceMessage>,
    /// The target folder's messages before the copy.
    pub target_index: TargetIndex,
}

/// What a job built on `migrate` (a mirror) may change in planning. The defaults plan as
/// `migrate` does.
pub trait PlanHooks {
    /// Decides, before a folder is indexed, that neither side changed since a previous run;
    /// such a folder is planned as complete without indexing. Returns the source's message
    /// count then.
    fn unchanged(
        &mut self,
        _mapping: &FolderMapping,
        _source: &mut dyn Source,
        _target: &mut dyn Target,
    ) -> Result<Option<usize>, Error> {
        Ok(None)
    }

    /// Indexes a source folder.
    fn index_source(
        &mut self,
        mapping: &FolderMapping,
        source: &mut dyn Source,
    ) -> Result<Vec<SourceMessage>, Error> {
        source.index(&mapping.source)
    }
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

/// The result of the planning phase, with the connections still open.
pub struct Planned<'j> {
    job: &'j MigrateJob,
    source: Box<dyn Source>,
    /// One entry per folder.
    pub folders: Vec<PlannedFolder>,
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
    let mut source = open_source(job)?;
    let mut target = open_target(job)?;
    let mut folders = Vec::new();
    for mapping in folder_mappings(job, source.as_mut(), target.as_mut())? {
        if !job.dry_run {
            target.ensure_folder(&mapping.target)?;
        }
        if !mapping.selectable {
            continue;
        }
        if let Some(messages) = hooks.unchanged(&mapping, source.as_mut(), target.as_mut())? {
            report.planned(&plan::unchanged(&mapping.source, &mapping.target, messages));
            continue;
        }
        let source_index = hooks.index_source(&mapping, source.as_mut())?;
        let target_index = target.index(&mapping.target)?;
        let plan = plan::diff(
            &mapping.source,
            &mapping.target,
            source_index.clone(),
            &target_index,
        );
        report.planned(&plan);
        folders.push(PlannedFolder {
            plan,
            source_index,
            target_index,
        });
    }
    Ok(Planned {
        job,
        source,
        folders,
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

    /// The report of a dry run: the plan's counts, nothing copied.
    pub fn dry_run_report(self) -> Report {
        self.report.finish()
    }

    /// Copies every folder, runs `after_copy` (if any), verifies the target, and returns the
    /// report. A connection failure ends the run early: the report says what was done and the
    /// error is returned beside it.
    pub fn execute(
        mut self,
        observer: &dyn Observer,
        after_copy: Option<&mut AfterCopyStep<'_>>,
    ) -> (Report, Option<Error>) {
        let job = self.job;
        let events = Fanout(vec![&self.report, observer]);
        let plans: Vec<FolderPlan> = self.folders.iter().map(|f| f.plan.clone()).collect();
        let mut error = transfer::copy_folders(
            &plans,
            &mut self.source,
            &|| open_source(job),
            // Upload workers retry on their own, re-indexing after a break.
            &|| open_target_once(job),
            job.transfer,
            &events,
        )
        .err();
        if error.is_none() {
            // A fresh connection: the planning one may have been closed by the server while it
            // sat idle during a long copy.
            let finished = open_target(job).and_then(|mut target| {
                if let Some(after_copy) = after_copy {
                    after_copy(AfterCopy {
                        folders: &self.folders,
                        source: self.source.as_mut(),
                        target: target.as_mut(),
                        report: &self.report,
                    })?;
                }
                self.verify(target.as_mut())
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

    /// Re-indexes every target folder and checks that every source message is there.
    fn verify(&self, target: &mut dyn Target) -> Result<bool, Error> {
        let mut complete = true;
        for folder in &self.folders {
            let missing = verify::missing_after_copy(
                &folder.source_index,
                target,
                &folder.plan.target_folder,
            )?;
            self.report
                .missing_after_copy(&folder.plan.source_folder, &missing);
            complete &= missing.is_empty();
        }
        Ok(complete)
    }
}

/// Where each source folder goes. A POP3 maildrop goes into the target URL's folder (INBOX by
/// default); an IMAP account's folders keep their hierarchy, below the target URL's folder
/// when it names one.
fn folder_mappings(
    job: &MigrateJob,
    source: &mut dyn Source,
    target: &mut dyn Target,
) -> Result<Vec<FolderMapping>, Error> {
    if job.from.endpoint.protocol == Protocol::Pop3 {
        return Ok(vec![FolderMapping {
            source: POP3_FOLDER.to_owned(),
            target: job
                .to
                .endpoint
                .folder
                .clone()
                .unwrap_or_else(|| POP3_FOLDER.to_owned()),
            selectable: true,
        }]);
    }
    let source_folders = source.folders()?;
    let target_folders = target.folders()?;
    let delimiter = target_folders
        .iter()
        .find_map(|f| f.delimiter)
        .unwrap_or('/');
    let mut rules = job.folders.clone();
    if rules.prefix.is_none() {
        rules.prefix = job.to.endpoint.folder.clone();
    }
    Ok(folders::map_folders(
        &source_folders,
        &target_folders,
        delimiter,
        &rules,
    ))
}

/// Opens a connection, trying again after a transient failure ([`Error::is_transient`]: a
/// server not up yet, restarting, or dropping connections) up to `--retries` times, with the
/// upload workers' backoff. A refused login or an untrusted certificate fails at once.
fn retrying<T>(job: &MigrateJob, open: impl Fn() -> Result<T, Error>) -> Result<T, Error> {
    let mut attempt = 0;
    loop {
        match open() {
            Err(err) if err.is_transient() && attempt < job.transfer.retries => {
                attempt += 1;
                std::thread::sleep(job.transfer.delay_before_retry(attempt));
            }
            other => return other,
        }
    }
}

fn open_source(job: &MigrateJob) -> Result<Box<dyn Source>, Error> {
    retrying(job, || -> Result<Box<dyn Source>, Error> {
        match job.from.endpoint.protocol {
            Protocol::Pop3 => Ok(Box::new(Pop3Source::connect(
                &job.from,
                &job.connect,
                job.mark_seen,
            )?)),
            Protocol::Imap => Ok(Box::new(ImapSource::connect(&job.from, &job.connect)?)),
        }
    })
}

fn open_target(job: &MigrateJob) -> Result<Box<dyn Target>, Error> {
    retrying(job, || open_target_once(job))
}

fn open_target_once(job: &MigrateJob) -> Result<Box<dyn Target>, Error> {
    match job.to.endpoint.protocol {
        Protocol::Imap => Ok(Box::new(ImapTarget::connect(&job.to, &job.connect)?)),
        Protocol::Pop3 => Err(Error::Usage {
            message: format!("{}: the target must be an IMAP server", job.to.endpoint),
            hint: Some("write the target as imaps://USER@HOST/FOLDER".into()),
        }),
    }
}
