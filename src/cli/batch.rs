//! `mailferry batch`: every account of an accounts file run as a `migrate`, several at once,
//! each with its own report, then a summary.

use std::path::Path;
use std::sync::Arc;

use super::{AccountSettings, BatchArgs, Overrides, SideLogin, build_job, failed_report, output};
use crate::batch::{self, AccountEntry, AccountResult, Outcome, Summary};
use crate::endpoint::Side;
use crate::error::Error;
use crate::metrics::{Metrics, MetricsServer};
use crate::migrate;
use crate::preset::Preset;
use crate::private_file;
use crate::verify;

/// Runs the batch; the exit code is 0 when every account is ok.
pub(super) fn run(args: &BatchArgs) -> Result<i32, Error> {
    let accounts = batch::read_accounts(&args.accounts)?;
    std::fs::create_dir_all(&args.report_dir).map_err(|e| Error::Usage {
        message: format!("cannot create {}: {e}", args.report_dir.display()),
        hint: Some("--report-dir needs a writable directory".into()),
    })?;
    let selected: Vec<(usize, &AccountEntry)> = accounts
        .iter()
        .enumerate()
        .filter(|(i, _)| args.shard.is_none_or(|shard| shard.takes(*i)))
        .collect();
    // Counted whether served or not: one code path, and a count is an atomic add.
    let metrics = Arc::new(Metrics::new(selected.len()));
    let _server = args
        .metrics
        .map(|address| MetricsServer::start(address, Arc::clone(&metrics)))
        .transpose()?;
    let jobs = usize::from(args.jobs);
    // Each account has its upload connections plus one to plan on; share the per-host budget.
    let connections = args
        .max_connections_per_host
        .map(|max| (usize::from(max) / jobs).saturating_sub(1).max(1));
    let results = batch::run_all(
        &selected,
        jobs,
        |&(index, entry)| run_account(args, index, entry, connections, &metrics),
        |result| {
            metrics.account_finished(result.outcome);
            if !args.options.quiet {
                println!("{:<8} {}", outcome_word(result.outcome), describe(result));
            }
        },
    );
    let summary = Summary::of(&results);
    let summary_path = args.report_dir.join("summary.json");
    let written = serde_json::to_vec_pretty(&summary)
        .map_err(std::io::Error::other)
        .and_then(|json| private_file::write_atomically(&summary_path, &json));
    if let Err(e) = written {
        eprintln!("warning: cannot write {}: {e}", summary_path.display());
    }
    if !args.options.quiet || summary.exit_code() != 0 {
        print_table(&summary, &args.report_dir);
    }
    Ok(summary.exit_code())
}

fn run_account(
    args: &BatchArgs,
    index: usize,
    entry: &AccountEntry,
    connections: Option<usize>,
    metrics: &Arc<Metrics>,
) -> AccountResult {
    let name = batch::account_name(index, entry);
    if args.resume && batch::already_ok(&args.report_dir, &name) {
        return AccountResult {
            schema: 1,
            account: name,
            outcome: Outcome::Skipped,
            exit_code: 0,
            error: None,
            report: None,
        };
    }
    let _running = metrics.account_running();
    let result = match job_for(args, entry, connections, metrics) {
        Err(error) => AccountResult::failed(name, &error),
        Ok(job) => match migrate::plan(&job) {
            // A preflight's report says which side failed.
            Err(error) if job.dry_run => {
                AccountResult::finished(name, &failed_report(&job, &error), Some(&error))
            }
            Err(error) => AccountResult::failed(name, &error),
            Ok(planned) if job.dry_run => {
                AccountResult::finished(name, &planned.dry_run_report(), None)
            }
            Ok(planned) => {
                let (report, error) =
                    planned.execute(metrics.as_ref(), &verify::Receipts::default(), None);
                AccountResult::finished(name, &report, error.as_ref())
            }
        },
    };
    write_result(&args.report_dir, &result);
    result
}

/// The account's own settings over the command line's.
fn job_for(
    args: &BatchArgs,
    entry: &AccountEntry,
    connections: Option<usize>,
    metrics: &Arc<Metrics>,
) -> Result<migrate::MigrateJob, Error> {
    let credentials = &args.credentials;
    // Nobody answers a prompt in the middle of a batch.
    let settings = AccountSettings {
        from: entry.from.clone(),
        to: entry.to.clone(),
        from_login: SideLogin::new(
            Side::From,
            entry.from_password_file.as_deref(),
            entry.from_auth.as_deref(),
            credentials,
            false,
        )?,
        to_login: SideLogin::new(
            Side::To,
            entry.to_password_file.as_deref(),
            entry.to_auth.as_deref(),
            credentials,
            false,
        )?,
    };
    let own = &entry.overrides;
    let preset = |text: &Option<String>, column: &str| {
        text.as_deref()
            .map(str::parse::<Preset>)
            .transpose()
            .map_err(|why| Error::Usage {
                message: format!("{column}: {why}"),
                hint: None,
            })
    };
    let mut job = build_job(
        &settings,
        &args.options,
        Overrides {
            from_preset: preset(&entry.from_preset, "from_preset")?,
            to_preset: preset(&entry.to_preset, "to_preset")?,
            connections: own.connections,
            tls_ca: own.tls_ca.as_deref(),
            include: &own.include,
            exclude: &own.exclude,
            map: &own.map,
        },
    )?;
    if let Some(cap) = connections {
        job.transfer.connections = job.transfer.connections.min(cap);
    }
    job.connect.trace = job
        .connect
        .trace
        .clone()
        .watched_by(Arc::clone(metrics) as _);
    Ok(job)
}

fn write_result(dir: &Path, result: &AccountResult) {
    let path = dir.join(format!("{}.json", result.account));
    let written = serde_json::to_vec_pretty(result)
        .map_err(std::io::Error::other)
        .and_then(|json| private_file::write_atomically(&path, &json));
    if let Err(e) = written {
        eprintln!("warning: cannot write {}: {e}", path.display());
    }
}

fn outcome_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Partial => "PARTIAL",
        Outcome::Failed => "FAILED",
        Outcome::Skipped => "skipped",
    }
}

fn describe(result: &AccountResult) -> String {
    let count = |key: &str| result.count(key);
    let dry_run = result
        .report
        .as_ref()
        .is_some_and(|report| report["dry_run"] == true);
    match (&result.error, result.outcome) {
        (Some(error), _) => format!("{}: {error}", result.account),
        (None, Outcome::Skipped) => format!("{}: ok in an earlier run", result.account),
        (None, _) if dry_run => format!(
            "{}: would copy {}, {} message(s) already there; {} preflight problem(s)",
            result.account,
            output::human_bytes(count("bytes_to_copy")),
            count("already_present"),
            result.preflight_problems().len(),
        ),
        (None, _) => format!(
            "{}: {} copied ({}), {} already there, {} failed",
            result.account,
            count("copied"),
            output::human_bytes(count("bytes_copied")),
            count("already_present"),
            count("failed"),
        ),
    }
}

/// A preflight's table of the accounts that need attention, every one of them, on stderr:
/// each problem on a line of its own.
fn print_attention(summary: &Summary) {
    let attention: Vec<_> = summary
        .results
        .iter()
        .filter(|r| !r.attention.is_empty())
        .collect();
    if attention.is_empty() {
        return;
    }
    eprintln!(
        "{} account(s) need attention before the run:",
        attention.len()
    );
    for line in attention {
        for problem in &line.attention {
            eprintln!("  {:<40} {problem}", line.account);
        }
    }
}

fn print_table(summary: &Summary, dir: &Path) {
    println!();
    println!(
        "{} accounts: {} ok, {} partial, {} failed, {} skipped; {} messages copied ({}), {} failed",
        summary.accounts,
        summary.ok,
        summary.partial,
        summary.failed,
        summary.skipped,
        summary.copied,
        output::human_bytes(summary.bytes_copied),
        summary.failed_messages,
    );
    let troubled: Vec<_> = summary
        .results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Partial | Outcome::Failed))
        .collect();
    for line in troubled.iter().take(20) {
        println!(
            "  {:<8} {:<40} {}",
            outcome_word(line.outcome),
            line.account,
            line.error
                .clone()
                .unwrap_or_else(|| match line.attention.len() {
                    0 => format!("{} message(s) failed", line.failed),
                    problems => format!("{problems} preflight problem(s), below"),
                })
        );
    }
    if troubled.len() > 20 {
        println!("  … and {} more", troubled.len() - 20);
    }
    print_attention(summary);
    println!(
        "reports: {}  (summary.json and one file per account)",
        dir.display()
    );
}
