//! The command line: clap types, turning arguments into a job, and what the user sees.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use regex::Regex;

mod batch;
mod output;

use crate::auth::{AuthMode, OAuthMechanism};
use crate::batch::Shard;
use crate::endpoint::{Endpoint, Password, PasswordSource, Protocol, Side};
use crate::error::{EXIT_INTERNAL, Error};
use crate::folders::{FolderRules, SpecialUse};
use crate::index::SourceMessage;
use crate::migrate::{self, MigrateJob, SizeLimit};
use crate::mirror::{self, MirrorJob};
use crate::net::{TlsConfig, TlsTrust};
use crate::plan::FolderPlan;
use crate::preflight;
use crate::preset::Preset;
use crate::progress::ProgressBars;
use crate::report::{Report, ReportBuilder};
use crate::store::MessageUid;
use crate::store::{Account, ConnectOptions};
use crate::trace::{Trace, Verbosity};
use crate::transfer::{Observer, TransferSettings};
use crate::uidl_keeping::KeepUidl;
use crate::verify;

const AFTER_HELP: &str = "\
Environment:
  MAILFERRY_FROM_PASSWORD, MAILFERRY_TO_PASSWORD  the source's and the target's password, when
     no --from-password-file / --from-password-command (--to-… likewise) is given

Exit codes:
  0  every source message is on the target (--dry-run: the preflight found nothing to fail)
  1  the run finished, but some messages failed (listed in the report); --dry-run: the run
     would not complete
  2  usage or configuration error (bad URL, missing password, unwritable report path)
  3  a server refused the login
  4  a server could not be reached, TLS failed, or a connection broke (nothing is lost:
     re-run to copy what is still missing)
  5  mirror: another run of the same mirror holds the lock
  6  mailferry failed internally (a bug); re-run to finish";

const BATCH_EXIT_CODES: &str = "\
Exit codes:
  0  every account is ok (or was, with --resume)
  1  some accounts are partial or failed (see summary.json and each account's report)
  2  usage error (bad accounts file, bad option, a --metrics address that cannot be served)";

/// Move mail between servers and local stores: POP3, IMAP, Maildir or mbox in; IMAP, Maildir or
/// mbox out; deduplicated by Message-ID.
#[derive(Debug, Parser)]
#[command(name = "mailferry", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy every message the target is missing, once.
    #[command(after_help = AFTER_HELP)]
    Migrate(MigrateArgs),
    /// Copy what is missing, then apply the source's flag changes (and with --delete its
    /// deletions) to the target; for cron, with state and a lock in --state DIR.
    #[command(after_help = AFTER_HELP)]
    Mirror(MirrorArgs),
    /// Migrate many accounts from a CSV or TOML file, several at once, with a report each.
    #[command(after_help = BATCH_EXIT_CODES)]
    Batch(BatchArgs),
    /// Print a completion script for a shell (see README: "Installing").
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. into /usr/local/share/man/man1/mailferry.1.
    Man,
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
    /// Source: pop3s://USER@HOST[:PORT], imaps://USER@HOST[:PORT][/FOLDER], or pop3:// /
    /// imap:// (STLS / STARTTLS); an IMAP source copies every folder, or only FOLDER. Or a
    /// store on local disk: maildir:PATH, mbox:FILE, mbox:DIR/ (maildir:///abs, maildir:rel)
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Target: imaps://USER@HOST[:PORT][/FOLDER] or imap://… (STARTTLS). From POP3, FOLDER
    /// (default INBOX) receives the mail; from IMAP, the folders are copied below FOLDER
    /// (default: at the top). Missing folders are created. Or a store on local disk:
    /// maildir:PATH, mbox:FILE (INBOX only), mbox:DIR/ (a file per folder).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Write a JSON report to FILE
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// How to log in.
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// How to copy.
    #[command(flatten)]
    pub options: CopyArgs,
}

/// Where passwords come from and how to log in; in a batch, for every account that does not
/// say otherwise.
#[derive(Debug, Clone, Args)]
pub struct CredentialArgs {
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
    /// Source login: "user" (default), "master:ADMIN" to log in as ADMIN on behalf of the
    /// URL's user (SASL PLAIN authorization id; the password is ADMIN's), "cram-md5", or
    /// "xoauth2" / "oauthbearer" with an access token as the password
    #[arg(long, value_name = "MODE")]
    pub from_auth: Option<String>,
    /// Target login: "user" (default), "master:ADMIN", "cram-md5", "xoauth2" or "oauthbearer"
    #[arg(long, value_name = "MODE")]
    pub to_auth: Option<String>,
    /// Run CMD (with sh -c) for an OAuth 2.0 access token to the source, afresh for every
    /// connection; implies --from-auth xoauth2 unless it says oauthbearer
    #[arg(long, value_name = "CMD", conflicts_with_all = ["from_password_file", "from_password_command"])]
    pub from_oauth2_token_command: Option<String>,
    /// The same for the target
    #[arg(long, value_name = "CMD", conflicts_with_all = ["to_password_file", "to_password_command"])]
    pub to_oauth2_token_command: Option<String>,
}

/// How to copy: TLS, connections, folders, output.
#[derive(Debug, Clone, Args)]
pub struct CopyArgs {
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
    /// The source is this provider (gmail, office365): its folder names mark Sent, Drafts,
    /// Trash, Junk where the server does not; gmail skips the label views Starred and
    /// Important, and copies of All Mail only what no other folder holds (see README)
    #[arg(long, value_name = "PROVIDER")]
    pub from_preset: Option<Preset>,
    /// The target is this provider (gmail, office365): its folder names for Sent, Drafts,
    /// Trash, Junk (and Archive), and its message size limit (gmail 25 MiB, office365 35 MiB)
    #[arg(long, value_name = "PROVIDER")]
    pub to_preset: Option<Preset>,
    /// Do not send messages larger than this (bytes, or with K, M, G for KiB, MiB, GiB): they
    /// are reported failed. A target's APPENDLIMIT and a --to-preset's limit apply too
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_message_size: Option<u64>,
    /// Upload connections to the target
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,
    /// Show what would be copied; write nothing to either server
    #[arg(long)]
    pub dry_run: bool,
    /// Trust the PEM certificate(s) in FILE (a CA, or the server's own self-signed certificate)
    /// instead of the system's roots, on both sides
    #[arg(long, value_name = "FILE", conflicts_with = "tls_insecure")]
    pub tls_ca: Option<PathBuf>,
    /// The same for the source only (e.g. a private CA), which --tls-ca then leaves alone
    #[arg(long, value_name = "FILE")]
    pub from_tls_ca: Option<PathBuf>,
    /// The same for the target only
    #[arg(long, value_name = "FILE")]
    pub to_tls_ca: Option<PathBuf>,
    /// Do not check server certificates (prints a warning on every run)
    #[arg(long)]
    pub tls_insecure: bool,
    /// Allow sending passwords unencrypted when a pop3:// or imap:// server offers no STLS/STARTTLS
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Give the copies the \Seen flag (POP3 has no flags; by default copies arrive unread)
    #[arg(long)]
    pub mark_seen: bool,
    /// POP3 source: keep its UIDLs for POP3 clients that leave mail on the server. `header`
    /// adds one first field `X-UIDL: <UIDL>` to each copy (for Dovecot's pop3_reuse_xuidl);
    /// `map=FILE` appends a CSV row per copy (target folder, UIDVALIDITY, UID, UIDL, size).
    /// Both may be given
    #[arg(long, value_name = "header|map=FILE")]
    pub keep_pop3_uidl: Vec<String>,
    /// When a target connection breaks during the copy, open a new one up to N times per break
    /// (waiting 0.2 s, 0.4 s, 0.8 s, …; 2 s, 4 s, 8 s, … up to 60 s when the server asked to
    /// slow down with [THROTTLED], [UNAVAILABLE] or a BYE; each wait jittered down to half),
    /// check what arrived, and send only the rest; the same for opening any connection that is
    /// refused, dropped or times out, and for a POP3 source that breaks while messages are read;
    /// never for a refused login. 0: stop at the first break (exit 4)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
    /// Seconds to wait for a server before giving up: for the name lookup, for each answer in
    /// all (and each 64 KiB of a long one), for each step of the TLS handshake
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// More output, on stderr: -v each connection opened, -vv every command sent, -vvv every
    /// server response too (passwords and tokens redacted, message bodies as {N bytes});
    /// with --dry-run, -v also lists every message to copy
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No output unless something failed (for cron)
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Arguments of `mailferry batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The accounts: CSV with a header row (from,to,from_password_file,to_password_file,
    /// from_auth,to_auth) or TOML (*.toml, with [defaults]); see README, section Admins
    #[arg(value_name = "ACCOUNTS")]
    pub accounts: PathBuf,
    /// Accounts copied at once
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Directory for one JSON report per account and summary.json
    #[arg(long, value_name = "DIR", default_value = "mailferry-reports")]
    pub report_dir: PathBuf,
    /// Run only the accounts whose index (from 0, in file order) is K modulo N
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Skip accounts whose report in --report-dir says ok
    #[arg(long)]
    pub resume: bool,
    /// At most this many connections to one server from all jobs together
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_connections_per_host: Option<u16>,
    /// While the batch runs, serve its metrics (accounts, messages, bytes, connections,
    /// retries) in the Prometheus text format at http://ADDR/metrics; ADDR is an IP address
    /// and port, e.g. 127.0.0.1:9898, and nothing else is listened on
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Password sources and login modes for accounts that do not give their own.
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// How to copy, for every account (a TOML file may override some per account).
    #[command(flatten)]
    pub options: CopyArgs,
}

/// Runs a command to its exit code, printing an error as one `error:` line and a `hint:` line.
/// A panic (a bug) ends with [`EXIT_INTERNAL`] instead of Rust's 101, after the panic's own
/// message, so that a monitor reads a documented code.
pub fn exit_code_of(command: impl FnOnce() -> Result<i32, Error>) -> i32 {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(command)) {
        Ok(Ok(code)) => code,
        Ok(Err(error)) => {
            eprintln!("error: {error}");
            if let Some(hint) = error.hint() {
                eprintln!("hint: {hint}");
            }
            error.exit_code()
        }
        Err(_) => {
            eprintln!("error: mailferry failed internally (a bug)");
            eprintln!(
                "hint: what was copied stays copied; re-run to finish, and please report the \
                 panic message above"
            );
            EXIT_INTERNAL
        }
    }
}

/// Runs a parsed command line; returns the exit code of a run that finished.
pub fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Migrate(args) => run_migrate(&args),
        Command::Mirror(args) if args.copy.options.dry_run => run_migrate(&args.copy),
        Command::Mirror(args) => run_mirror(&args),
        Command::Batch(args) => batch::run(&args),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "mailferry", &mut script);
            print_generated(&script, "completion script")
        }
        Command::Man => print_generated(&man_page(), "manual page"),
    }
}

/// The manual page, from the clap definitions: clap_mangen's page of the top-level command,
/// then each subcommand's synopsis, description and options under headings of its own, so
/// one page documents every option.
pub fn man_page() -> Vec<u8> {
    const IN_MEMORY: &str = "rendering into memory cannot fail";
    let cli = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cli.clone())
        .render(&mut page)
        .expect(IN_MEMORY);
    for sub in cli.get_subcommands() {
        let name = sub.get_name().to_uppercase();
        let man = clap_mangen::Man::new(
            sub.clone()
                .bin_name(format!("mailferry {}", sub.get_name())),
        );
        let mut section = Vec::new();
        man.render_synopsis_section(&mut section)
            .and_then(|()| man.render_description_section(&mut section))
            .and_then(|()| man.render_options_section(&mut section))
            .expect(IN_MEMORY);
        let section = String::from_utf8_lossy(&section)
            .replace(".SH SYNOPSIS", &format!(".SH \"{name}\""))
            .replace(".SH DESCRIPTION", &format!(".SS \"{name}: description\""))
            .replace(".SH OPTIONS", &format!(".SS \"{name}: options\""));
        page.extend_from_slice(section.as_bytes());
    }
    page
}

/// Writes a generated text to stdout.
fn print_generated(text: &[u8], what: &str) -> Result<i32, Error> {
    use std::io::Write;
    std::io::stdout()
        .write_all(text)
        .map_err(|e| Error::usage(format!("cannot write the {what}: {e}")))?;
    Ok(0)
}

fn run_migrate(args: &MigrateArgs) -> Result<i32, Error> {
    let job = build_job(&account_of(args)?, &args.options, Overrides::none())?;
    if let Some(path) = &args.report {
        check_writable(path)?;
    }
    let planned = match migrate::plan(&job) {
        Ok(planned) => planned,
        Err(error) => {
            // A monitor reading the report must see this run failed, not last run's success.
            write_report(args.report.as_deref(), &failed_report(&job, &error));
            return Err(error);
        }
    };
    if args.options.dry_run {
        output::print_dry_run(&planned, args.options.verbose);
        let report = planned.dry_run_report();
        if let Some(preflight) = &report.preflight {
            output::print_preflight(preflight, args.options.verbose);
        }
        write_report(args.report.as_deref(), &report);
        return Ok(report.exit_code());
    }
    let (messages, bytes) = planned.totals();
    let bars = ProgressBars::new(messages, bytes, bars_visible(&args.options, messages));
    let (report, error) = planned.execute(&bars, &verify::Receipts::default(), None);
    bars.finish();
    conclude(args, &report, error)
}

fn run_mirror(args: &MirrorArgs) -> Result<i32, Error> {
    let copy = &args.copy;
    if args.delete_source_after_days.is_some()
        && Endpoint::parse(&copy.from)?.protocol != Protocol::Pop3
    {
        return Err(Error::Usage {
            message: "--delete-source-after-days works only with a POP3 source".into(),
            hint: Some("IMAP sources are never written to".into()),
        });
    }
    let job = MirrorJob {
        copy: build_job(&account_of(copy)?, &copy.options, Overrides::none())?,
        state_dir: args.state.clone(),
        delete: args.delete,
        delete_source_after_days: args.delete_source_after_days,
    };
    if let Some(path) = &copy.report {
        check_writable(path)?;
    }
    let bars = OnceLock::new();
    let ran = mirror::run(&job, &LazyBars(&bars), |messages, bytes| {
        let visible = bars_visible(&copy.options, messages);
        let _ = bars.set(ProgressBars::new(messages, bytes, visible));
    });
    let (report, error) = match ran {
        Ok(ran) => ran,
        Err(error) => {
            // A run locked out did nothing: the report is the running mirror's to write.
            if !matches!(error, Error::Locked { .. }) {
                write_report(copy.report.as_deref(), &failed_report(&job.copy, &error));
            }
            return Err(error);
        }
    };
    if let Some(bars) = bars.get() {
        bars.finish();
    }
    conclude(copy, &report, error)
}

/// Progress bars that exist only once the plan has sized them.
struct LazyBars<'a>(&'a OnceLock<ProgressBars>);

impl Observer for LazyBars<'_> {
    fn folder_started(&self, plan: &FolderPlan) {
        if let Some(bars) = self.0.get() {
            bars.folder_started(plan);
        }
    }
    fn message_copied(&self, folder: &str, message: &Arc<SourceMessage>, uid: Option<MessageUid>) {
        if let Some(bars) = self.0.get() {
            bars.message_copied(folder, message, uid);
        }
    }
    fn message_failed(&self, folder: &str, message: &SourceMessage, reason: &str) {
        if let Some(bars) = self.0.get() {
            bars.message_failed(folder, message, reason);
        }
    }
}

/// Bars redraw themselves over stderr, which the `-v` trace writes to: one or the other.
fn bars_visible(options: &CopyArgs, messages: u64) -> bool {
    messages > 0 && !options.quiet && options.verbose == 0 && std::io::stderr().is_terminal()
}

/// Writes the report, prints the summary (unless quiet and all went well) and picks the exit.
fn conclude(args: &MigrateArgs, report: &Report, error: Option<Error>) -> Result<i32, Error> {
    write_report(args.report.as_deref(), report);
    if !args.options.quiet || report.exit_code() != 0 || error.is_some() {
        output::print_summary(report);
    }
    match error {
        Some(error) => Err(error),
        None => Ok(report.exit_code()),
    }
}

/// The report of a run that failed before it could copy anything; a dry run's has a
/// preflight saying which side failed.
fn failed_report(job: &MigrateJob, error: &Error) -> Report {
    let (source, target) = (job.from.endpoint.to_string(), job.to.endpoint.to_string());
    let report = ReportBuilder::new(source.clone(), target.clone(), job.dry_run);
    report.fatal(&error.to_string());
    if job.dry_run {
        report.preflight(preflight::not_connected(&source, &target, error));
    }
    report.finish()
}

/// One account's own settings: the command line's for `migrate`, a line of the accounts file
/// for `batch`.
struct AccountSettings {
    from: String,
    to: String,
    from_login: SideLogin,
    to_login: SideLogin,
}

/// How one side logs in: where the secret comes from, the mode, and for OAuth the command
/// that prints a fresh token.
struct SideLogin {
    password: PasswordSource,
    auth: AuthMode,
    token_command: Option<String>,
}

impl SideLogin {
    /// The side's login from its own password file (a batch line's) over the command line's
    /// credentials.
    fn new(
        side: Side,
        own_file: Option<&std::path::Path>,
        own_auth: Option<&str>,
        credentials: &CredentialArgs,
        prompt: bool,
    ) -> Result<Self, Error> {
        let (file, command, token_command, auth) = match side {
            Side::From => (
                &credentials.from_password_file,
                &credentials.from_password_command,
                &credentials.from_oauth2_token_command,
                &credentials.from_auth,
            ),
            Side::To => (
                &credentials.to_password_file,
                &credentials.to_password_command,
                &credentials.to_oauth2_token_command,
                &credentials.to_auth,
            ),
        };
        let word = side.word();
        let mode = own_auth.or(auth.as_deref());
        let auth = match (mode, token_command) {
            // A token command alone means XOAUTH2, what Gmail and Microsoft 365 speak (unless
            // the account has a password file of its own, which wins).
            (None, Some(_)) if own_file.is_none() => AuthMode::OAuth2(OAuthMechanism::XOAuth2),
            (mode, _) => AuthMode::parse(mode.unwrap_or_default()).map_err(|why| Error::Usage {
                message: format!("--{word}-auth: {why}"),
                hint: None,
            })?,
        };
        let token_command = token_command
            .clone()
            .filter(|_| own_file.is_none() && matches!(auth, AuthMode::OAuth2(_)));
        let password = match own_file {
            Some(file) => PasswordSource {
                file: Some(file.to_owned()),
                command: None,
                prompt,
            },
            None => PasswordSource {
                file: file.clone(),
                command: token_command.clone().or_else(|| command.clone()),
                prompt,
            },
        };
        Ok(SideLogin {
            password,
            auth,
            token_command,
        })
    }

    fn account(&self, endpoint: Endpoint, side: Side, tls: TlsConfig) -> Result<Account, Error> {
        if let Some(warning) = self.password.permission_warning(side) {
            eprintln!("warning: {warning}");
        }
        // A store on local disk has no login.
        let password = match endpoint.protocol.is_local() {
            true => Password::default(),
            false => self.password.resolve(side, &endpoint)?,
        };
        Ok(Account {
            password,
            endpoint,
            tls,
            auth: self.auth.clone(),
            token_command: self.token_command.clone(),
        })
    }
}

fn account_of(args: &MigrateArgs) -> Result<AccountSettings, Error> {
    let credentials = &args.credentials;
    Ok(AccountSettings {
        from: args.from.clone(),
        to: args.to.clone(),
        from_login: SideLogin::new(Side::From, None, None, credentials, true)?,
        to_login: SideLogin::new(Side::To, None, None, credentials, true)?,
    })
}

/// `--max-message-size`: bytes, or a number with K, M or G (binary multiples).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("{text:?}: the unit must be K, M or G")),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?}: expected a size such as 25M or 26214400"))
}

/// Per-account settings that replace the command line's (from an accounts file).
struct Overrides<'a> {
    from_preset: Option<Preset>,
    to_preset: Option<Preset>,
    connections: Option<u16>,
    tls_ca: Option<&'a std::path::Path>,
    include: &'a [String],
    exclude: &'a [String],
    map: &'a [String],
}

impl Overrides<'_> {
    fn none() -> Self {
        Overrides {
            from_preset: None,
            to_preset: None,
            connections: None,
            tls_ca: None,
            include: &[],
            exclude: &[],
            map: &[],
        }
    }
}

/// How one side's certificates are checked: its own CA file, else the shared one (both
/// replace the system's roots), else none at all with `--tls-insecure`, else the system's.
fn side_trust(
    own_ca: Option<&std::path::Path>,
    shared_ca: Option<&std::path::Path>,
    insecure: bool,
) -> TlsTrust {
    match (own_ca.or(shared_ca), insecure) {
        (Some(path), _) => TlsTrust::CaFile(path.to_owned()),
        (None, true) => TlsTrust::Insecure,
        (None, false) => TlsTrust::System,
    }
}

fn build_job(
    account: &AccountSettings,
    options: &CopyArgs,
    overrides: Overrides<'_>,
) -> Result<MigrateJob, Error> {
    let from = Endpoint::parse(&account.from)?;
    let to = Endpoint::parse(&account.to)?;
    let keep_uidl = KeepUidl::parse(&options.keep_pop3_uidl)?;
    if keep_uidl.any() && from.protocol != Protocol::Pop3 {
        return Err(Error::Usage {
            message: "--keep-pop3-uidl works only with a POP3 source".into(),
            hint: Some("an IMAP source has no UIDLs to keep".into()),
        });
    }
    let shared_ca = overrides.tls_ca.or(options.tls_ca.as_deref());
    let source_trust = side_trust(
        options.from_tls_ca.as_deref(),
        shared_ca,
        options.tls_insecure,
    );
    let target_trust = side_trust(
        options.to_tls_ca.as_deref(),
        shared_ca,
        options.tls_insecure,
    );
    if [&source_trust, &target_trust]
        .iter()
        .any(|trust| matches!(trust, TlsTrust::Insecure))
    {
        eprintln!("warning: --tls-insecure: server certificates are not checked");
    }
    let tls = |trust: &TlsTrust| {
        TlsConfig::new(trust).map_err(|message| Error::Usage {
            message,
            hint: Some(
                "--tls-ca, --from-tls-ca and --to-tls-ca take a PEM file with one or more \
                 certificates"
                    .into(),
            ),
        })
    };
    let pick = |own: &'_ [String], shared: &'_ [String]| -> Vec<String> {
        if own.is_empty() { shared } else { own }.to_vec()
    };
    let from_preset = overrides.from_preset.or(options.from_preset);
    let to_preset = overrides.to_preset.or(options.to_preset);
    let mut exclude = pick(overrides.exclude, &options.exclude);
    exclude.extend(
        from_preset
            .iter()
            .flat_map(|p| p.source_excludes())
            .map(|pattern| pattern.to_string()),
    );
    let mut folders = folder_rules(
        &pick(overrides.include, &options.include),
        &exclude,
        &pick(overrides.map, &options.map),
        options,
    )?;
    let roles = |preset: Option<Preset>| -> Vec<(SpecialUse, String)> {
        preset
            .iter()
            .flat_map(|p| p.role_folders())
            .map(|(role, name)| (*role, name.to_string()))
            .collect()
    };
    folders.source_roles = roles(from_preset);
    folders.views = from_preset.and_then(Preset::views);
    folders.target_roles = roles(to_preset);
    let preset_limit = to_preset.map(|p| SizeLimit {
        bytes: p.max_message_size(),
        set_by: format!("--to-preset {}", p.name()),
    });
    let own_limit = options.max_message_size.map(|bytes| SizeLimit {
        bytes,
        set_by: "--max-message-size".into(),
    });
    let source_tls = tls(&source_trust)?;
    // One configuration for one trust: it warns once per server and run about a pinned
    // certificate, however many sides use it.
    let target_tls = if target_trust == source_trust {
        source_tls.clone()
    } else {
        tls(&target_trust)?
    };
    Ok(MigrateJob {
        from: account.from_login.account(from, Side::From, source_tls)?,
        to: account.to_login.account(to, Side::To, target_tls)?,
        connect: ConnectOptions {
            allow_plaintext: options.allow_plaintext,
            timeout: Duration::from_secs(options.timeout),
            trace: Trace::new(Verbosity::from_count(options.verbose)),
            list_at_login: false,
            summarise_at_login: Vec::new(),
        },
        transfer: TransferSettings {
            connections: usize::from(overrides.connections.unwrap_or(options.connections)),
            retries: options.retries,
            add_uidl_field: keep_uidl.header,
            ..TransferSettings::default()
        },
        mark_seen: options.mark_seen,
        dry_run: options.dry_run,
        folders,
        size_limit: SizeLimit::tightest(own_limit, preset_limit),
        uidl_map: keep_uidl.map,
        gmail_labels: from_preset == Some(Preset::Gmail),
    })
}

fn folder_rules(
    include: &[String],
    exclude: &[String],
    map: &[String],
    options: &CopyArgs,
) -> Result<FolderRules, Error> {
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
    let renames = map
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
        include: regexes(include, "include")?,
        exclude: regexes(exclude, "exclude")?,
        renames,
        prefix: options.target_prefix.clone(),
        special_use_map: !options.no_special_use_map,
        source_roles: Vec::new(),
        target_roles: Vec::new(),
        views: None,
    })
}

/// Fails early, before any server is touched, when the report could not be written.
fn check_writable(path: &std::path::Path) -> Result<(), Error> {
    crate::private_file::check_writable(path).map_err(|e| Error::Usage {
        message: format!("cannot write the report to {}: {e}", path.display()),
        hint: Some("--report takes the path of a file in a writable directory".into()),
    })
}

/// Writes the report if one was asked for. A failure here is only a warning: the run's own
/// outcome (and exit code) matters more than its paperwork.
fn write_report(path: Option<&std::path::Path>, report: &Report) {
    if let Some(path) = path
        && let Err(e) = report.write(path)
    {
        eprintln!(
            "warning: cannot write the report to {}: {e}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_ends_with_the_internal_exit_code_and_errors_with_theirs() {
        assert_eq!(exit_code_of(|| panic!("a bug")), EXIT_INTERNAL);
        assert_eq!(
            exit_code_of(|| Err(Error::usage("bad"))),
            crate::error::EXIT_USAGE
        );
        assert_eq!(exit_code_of(|| Ok(1)), 1);
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("26214400"), Ok(26_214_400));
        assert_eq!(parse_size("25M"), Ok(26_214_400));
        assert_eq!(parse_size("50k"), Ok(51_200));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        for wrong in ["", "0", "M", "12T", "-1K", "99999999999999999999G"] {
            assert!(parse_size(wrong).is_err(), "{wrong}");
        }
    }
}
