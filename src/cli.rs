//! The command line: clap types, turning arguments into a job, and what the user sees.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use regex::Regex;

use crate::endpoint::{Endpoint, PasswordSource, Protocol, Side};
use crate::error::Error;
use crate::folders::FolderRules;
use crate::index::SourceMessage;
use crate::migrate::{self, Account, ConnectOptions, MigrateJob, Planned};
use crate::mirror::{self, MirrorJob};
use crate::net::{TlsConfig, TlsTrust};
use crate::plan::FolderPlan;
use crate::progress::ProgressBars;
use crate::report::{Report, ReportBuilder};
use crate::transfer::{Observer, TransferSettings};

const EXIT_CODES: &str = "\
Exit codes:
  0  every source message is on the target
  1  the run finished, but some messages failed (listed in the report)
  2  usage or configuration error (bad URL, missing password, unwritable report path)
  3  a server refused the login
  4  a server could not be reached, TLS failed, or a connection broke (nothing is lost:
     re-run to copy what is still missing)
  5  mirror: another run of the same mirror holds the lock";

/// Move mail between servers: POP3 or IMAP in, IMAP out, deduplicated by Message-ID.
#[derive(Debug, Parser)]
#[command(name = "mailferry", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy every message the target is missing, once.
    #[command(after_help = EXIT_CODES)]
    Migrate(MigrateArgs),
    /// Copy what is missing, then apply the source's flag changes (and with --delete its
    /// deletions) to the target; for cron, with state and a lock in --state DIR.
    #[command(after_help = EXIT_CODES)]
    Mirror(MirrorArgs),
}

/// Arguments of `mailferry mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Everything `migrate` takes.
    #[command(flatten)]
    pub copy: MigrateArgs,
    /// Directory for the mirror's state and lock (created if missing)
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Remove from the target the copies this mirror made of messages that have left the
    /// source (never anything else)
    #[arg(long)]
    pub delete: bool,
    /// POP3 source: delete from the POP3 server the messages first seen D days ago or more,
    /// once the target is verified to hold every message (like getmail's delete_after)
    #[arg(long, value_name = "D")]
    pub delete_source_after_days: Option<u32>,
}

/// Arguments of `mailferry migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Source server: pop3s://USER@HOST[:PORT], imaps://USER@HOST[:PORT][/FOLDER], or pop3:// /
    /// imap:// (STLS / STARTTLS); an IMAP source copies every folder, or only FOLDER
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Target server: imaps://USER@HOST[:PORT][/FOLDER] or imap://… (STARTTLS). From POP3,
    /// FOLDER (default INBOX) receives the mail; from IMAP, the folders are copied below FOLDER
    /// (default: at the top). Missing folders are created.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// IMAP source: copy only folders whose name (with / as separator) matches REGEX
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,
    /// IMAP source: skip folders whose name (with / as separator) matches REGEX
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,
    /// IMAP source: copy folder OLD (and its subfolders) to NEW; names with / as separator
    #[arg(long, value_name = "OLD=NEW")]
    pub map: Vec<String>,
    /// IMAP source: put every folder below P on the target
    #[arg(long, value_name = "P")]
    pub target_prefix: Option<String>,
    /// IMAP source: do not map special-use folders (Sent, Drafts, Trash, Junk, Archive) onto
    /// the target's folders of the same role
    #[arg(long)]
    pub no_special_use_map: bool,
    /// Upload connections to the target
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,
    /// Show what would be copied; write nothing to either server
    #[arg(long)]
    pub dry_run: bool,
    /// Write a JSON report to FILE
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Trust the PEM certificate(s) in FILE (a CA, or the server's own self-signed certificate)
    #[arg(long, value_name = "FILE", conflicts_with = "tls_insecure")]
    pub tls_ca: Option<PathBuf>,
    /// Do not check server certificates (prints a warning on every run)
    #[arg(long)]
    pub tls_insecure: bool,
    /// Allow sending passwords unencrypted when a pop3:// or imap:// server offers no STLS/STARTTLS
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Give the copies the \Seen flag (POP3 has no flags; by default copies arrive unread)
    #[arg(long)]
    pub mark_seen: bool,
    /// Seconds to wait for a server before giving up
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Read the source password from the first line of FILE
    #[arg(long, value_name = "FILE", conflicts_with = "from_password_command")]
    pub from_password_file: Option<PathBuf>,
    /// Run CMD (with sh -c) and use the first line it prints as the source password
    #[arg(long, value_name = "CMD")]
    pub from_password_command: Option<String>,
    /// Read the target password from the first line of FILE
    #[arg(long, value_name = "FILE", conflicts_with = "to_password_command")]
    pub to_password_file: Option<PathBuf>,
    /// Run CMD (with sh -c) and use the first line it prints as the target password
    #[arg(long, value_name = "CMD")]
    pub to_password_command: Option<String>,
    /// More output: with --dry-run, list every message to copy
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No output unless something failed (for cron)
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Runs a parsed command line; returns the exit code of a run that finished.
pub fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Migrate(args) => run_migrate(&args),
        Command::Mirror(args) if args.copy.dry_run => run_migrate(&args.copy),
        Command::Mirror(args) => run_mirror(&args),
    }
}

fn run_migrate(args: &MigrateArgs) -> Result<i32, Error> {
    let job = migrate_job(args)?;
    if let Some(path) = &args.report {
        check_writable(path)?;
    }
    let planned = match migrate::plan(&job) {
        Ok(planned) => planned,
        Err(error) => {
            // A monitor reading the report must see this run failed, not last run's success.
            let report = ReportBuilder::new(
                job.from.endpoint.to_string(),
                job.to.endpoint.to_string(),
                job.dry_run,
            );
            report.fatal(&error.to_string());
            write_report(args, &report.finish());
            return Err(error);
        }
    };
    if args.dry_run {
        print_dry_run(&planned, args.verbose);
        let report = planned.dry_run_report();
        write_report(args, &report);
        return Ok(report.exit_code());
    }
    let (messages, bytes) = planned.totals();
    let bars = ProgressBars::new(messages, bytes, bars_visible(args, messages));
    let (report, error) = planned.execute(&bars, None);
    bars.finish();
    conclude(args, &report, error)
}

fn run_mirror(args: &MirrorArgs) -> Result<i32, Error> {
    let job = MirrorJob {
        copy: migrate_job(&args.copy)?,
        state_dir: args.state.clone(),
        delete: args.delete,
        delete_source_after_days: args.delete_source_after_days,
    };
    if args.delete_source_after_days.is_some() && job.copy.from.endpoint.protocol != Protocol::Pop3
    {
        return Err(Error::Usage {
            message: "--delete-source-after-days works only with a POP3 source".into(),
            hint: Some("IMAP sources are never written to".into()),
        });
    }
    if let Some(path) = &args.copy.report {
        check_writable(path)?;
    }
    let bars = OnceLock::new();
    let (report, error) = mirror::run(&job, &LazyBars(&bars), |messages, bytes| {
        let visible = bars_visible(&args.copy, messages);
        let _ = bars.set(ProgressBars::new(messages, bytes, visible));
    })?;
    if let Some(bars) = bars.get() {
        bars.finish();
    }
    conclude(&args.copy, &report, error)
}

/// Progress bars that exist only once the plan has sized them.
struct LazyBars<'a>(&'a OnceLock<ProgressBars>);

impl Observer for LazyBars<'_> {
    fn folder_started(&self, plan: &FolderPlan) {
        if let Some(bars) = self.0.get() {
            bars.folder_started(plan);
        }
    }
    fn message_copied(&self, folder: &str, message: &SourceMessage) {
        if let Some(bars) = self.0.get() {
            bars.message_copied(folder, message);
        }
    }
    fn message_failed(&self, folder: &str, message: &SourceMessage, reason: &str) {
        if let Some(bars) = self.0.get() {
            bars.message_failed(folder, message, reason);
        }
    }
}

fn bars_visible(args: &MigrateArgs, messages: u64) -> bool {
    messages > 0 && !args.quiet && std::io::stderr().is_terminal()
}

/// Writes the report, prints the summary (unless quiet and all went well) and picks the exit.
fn conclude(args: &MigrateArgs, report: &Report, error: Option<Error>) -> Result<i32, Error> {
    write_report(args, report);
    if !args.quiet || report.exit_code() != 0 || error.is_some() {
        print_summary(report);
    }
    match error {
        Some(error) => Err(error),
        None => Ok(report.exit_code()),
    }
}

fn migrate_job(args: &MigrateArgs) -> Result<MigrateJob, Error> {
    let from = Endpoint::parse(&args.from)?;
    let to = Endpoint::parse(&args.to)?;
    let trust = match (&args.tls_ca, args.tls_insecure) {
        (Some(path), _) => TlsTrust::CaFile(path.clone()),
        (None, true) => {
            eprintln!("warning: --tls-insecure: server certificates are not checked");
            TlsTrust::Insecure
        }
        (None, false) => TlsTrust::System,
    };
    let tls = TlsConfig::new(&trust).map_err(|message| Error::Usage {
        message,
        hint: Some("--tls-ca takes a PEM file with one or more certificates".into()),
    })?;
    let from_password = PasswordSource {
        file: args.from_password_file.clone(),
        command: args.from_password_command.clone(),
    }
    .resolve(Side::From, &from)?;
    let to_password = PasswordSource {
        file: args.to_password_file.clone(),
        command: args.to_password_command.clone(),
    }
    .resolve(Side::To, &to)?;
    Ok(MigrateJob {
        from: Account {
            endpoint: from,
            password: from_password,
        },
        to: Account {
            endpoint: to,
            password: to_password,
        },
        connect: ConnectOptions {
            tls,
            allow_plaintext: args.allow_plaintext,
            timeout: Duration::from_secs(args.timeout),
        },
        transfer: TransferSettings {
            connections: usize::from(args.connections),
            ..TransferSettings::default()
        },
        mark_seen: args.mark_seen,
        dry_run: args.dry_run,
        folders: folder_rules(args)?,
    })
}

fn folder_rules(args: &MigrateArgs) -> Result<FolderRules, Error> {
    let regexes = |patterns: &[String], option: &str| {
        patterns
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| Error::Usage {
                    message: format!("--{option} {p}: not a valid regular expression: {e}"),
                    hint: None,
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let renames = args
        .map
        .iter()
        .map(|m| match m.split_once('=') {
            Some((old, new)) if !old.is_empty() && !new.is_empty() => {
                Ok((old.to_owned(), new.to_owned()))
            }
            _ => Err(Error::Usage {
                message: format!("--map {m}: expected OLD=NEW"),
                hint: Some("for example --map 'Sent Items=Sent'".into()),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FolderRules {
        include: regexes(&args.include, "include")?,
        exclude: regexes(&args.exclude, "exclude")?,
        renames,
        prefix: args.target_prefix.clone(),
        special_use_map: !args.no_special_use_map,
    })
}

/// Fails early, before any server is touched, when the report could not be written.
fn check_writable(path: &std::path::Path) -> Result<(), Error> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map(drop)
        .map_err(|e| Error::Usage {
            message: format!("cannot write the report to {}: {e}", path.display()),
            hint: Some("--report takes the path of a file in a writable directory".into()),
        })
}

/// Writes the report if one was asked for. A failure here is only a warning: the run's own
/// outcome (and exit code) matters more than its paperwork.
fn write_report(args: &MigrateArgs, report: &Report) {
    if let Some(path) = &args.report
        && let Err(e) = report.write(path)
    {
        eprintln!(
            "warning: cannot write the report to {}: {e}",
            path.display()
        );
    }
}

fn print_dry_run(planned: &Planned<'_>, verbose: u8) {
    for folder in &planned.folders {
        let plan = &folder.plan;
        println!(
            "dry run: {} → {}: would copy {} of {} messages ({}), {} already on the target",
            plan.source_folder,
            plan.target_folder,
            plan.to_copy.len(),
            plan.source_messages,
            human_bytes(plan.bytes_to_copy()),
            plan.already_present,
        );
        if verbose > 0 {
            for message in &plan.to_copy {
                println!("  {:>10}  {}", message.size, message.identity);
            }
        }
    }
}

fn print_summary(report: &Report) {
    let verified = match report.verified {
        Some(true) => "verified: every source message is on the target",
        Some(false) => "verification FAILED: some source messages are not on the target",
        None => "not verified",
    };
    println!(
        "{} messages on the source, {} already on the target, {} copied ({}), {} failed in {:.1} s; {verified}",
        report.source_messages,
        report.already_present,
        report.copied,
        human_bytes(report.bytes_copied),
        report.failed,
        report.duration_s,
    );
    if report.flags_updated + report.deleted + report.source_deleted > 0 {
        println!(
            "mirror: flags updated on {} message(s), {} copy(ies) deleted from the target, {} message(s) deleted from the source",
            report.flags_updated, report.deleted, report.source_deleted
        );
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for failed in &report.errors {
        eprintln!(
            "failed: {} in {}: {}",
            failed.message, failed.folder, failed.reason
        );
    }
}

fn human_bytes(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
