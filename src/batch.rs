//! Batches of accounts for admins: the accounts file (CSV or TOML), sharding, resuming, running
//! several accounts at once, and the per-account and summary reports.
//!
//! What one account's run is (a `migrate`) is the caller's business: this module schedules
//! and keeps the books, so it is tested without servers.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;
use crate::error::{EXIT_OK, EXIT_PARTIAL, Error};
use crate::report::Report;

/// The columns of a CSV accounts file, in any order; the first two are required.
pub const COLUMNS: [&str; 8] = [
    "from",
    "to",
    "from_password_file",
    "to_password_file",
    "from_auth",
    "to_auth",
    "from_preset",
    "to_preset",
];

/// Settings a TOML file may give for all accounts (`[defaults]`) or for one; they override
/// the command line's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Upload connections.
    pub connections: Option<u16>,
    /// `--tls-ca`.
    pub tls_ca: Option<PathBuf>,
    /// `--include` patterns.
    #[serde(default)]
    pub include: Vec<String>,
    /// `--exclude` patterns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `--map OLD=NEW` renames.
    #[serde(default)]
    pub map: Vec<String>,
}

/// One account of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountEntry {
    /// Source URL.
    pub from: String,
    /// Target URL.
    pub to: String,
    /// File holding the source password (the administrator's, for a master login).
    pub from_password_file: Option<PathBuf>,
    /// File holding the target password.
    pub to_password_file: Option<PathBuf>,
    /// Source login mode (`user`, `master:ADMIN`).
    pub from_auth: Option<String>,
    /// Target login mode.
    pub to_auth: Option<String>,
    /// The source's provider preset (`gmail`, `office365`).
    pub from_preset: Option<String>,
    /// The target's provider preset.
    pub to_preset: Option<String>,
    /// Settings of this account (TOML only), over `[defaults]`.
    #[serde(flatten)]
    pub overrides: Overrides,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlBatch {
    #[serde(default)]
    defaults: Overrides,
    #[serde(default)]
    accounts: Vec<AccountEntry>,
}

/// Reads an accounts file: TOML when its name ends in `.toml`, CSV otherwise. Paths inside
/// (password files, CA files, local stores such as `maildir:backup/alice`) are taken relative
/// to the file's directory. The overrides of `[defaults]` are applied.
pub fn read_accounts(path: &Path) -> Result<Vec<AccountEntry>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Usage {
        message: format!("cannot read the accounts file {}: {e}", path.display()),
        hint: None,
    })?;
    let mut accounts = if path.extension().is_some_and(|e| e == "toml") {
        let batch: TomlBatch = toml::from_str(&text).map_err(|e| Error::Usage {
            message: format!("{}: {e}", path.display()),
            hint: Some("see README, section Admins, for the TOML format".into()),
        })?;
        batch
            .accounts
            .into_iter()
            .map(|account| with_defaults(account, &batch.defaults))
            .collect()
    } else {
        parse_csv(&text).map_err(|message| Error::Usage {
            message: format!("{}: {message}", path.display()),
            hint: Some(format!(
                "the header row names columns among: {}",
                COLUMNS.join(",")
            )),
        })?
    };
    let base = path.parent().unwrap_or(Path::new("."));
    for account in &mut accounts {
        for url in [&mut account.from, &mut account.to] {
            if let Ok(mut store) = Endpoint::parse(url)
                && let Some(local) = store.path.as_mut()
                && local.is_relative()
            {
                *local = base.join(&*local);
                *url = store.to_string();
            }
        }
        for file in [
            &mut account.from_password_file,
            &mut account.to_password_file,
            &mut account.overrides.tls_ca,
        ]
        .into_iter()
        .flatten()
        {
            *file = base.join(&*file);
        }
    }
    Ok(accounts)
}

fn with_defaults(mut account: AccountEntry, defaults: &Overrides) -> AccountEntry {
    let own = &mut account.overrides;
    own.connections = own.connections.or(defaults.connections);
    if own.tls_ca.is_none() {
        own.tls_ca = defaults.tls_ca.clone();
    }
    for (mine, shared) in [
        (&mut own.include, &defaults.include),
        (&mut own.exclude, &defaults.exclude),
        (&mut own.map, &defaults.map),
    ] {
        if mine.is_empty() {
            mine.clone_from(shared);
        }
    }
    account
}

fn parse_csv(text: &str) -> Result<Vec<AccountEntry>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_owned)
        .collect();
    for name in &header {
        if !COLUMNS.contains(&name.as_str()) {
            return Err(format!("line 1: unknown column {name:?}"));
        }
    }
    for required in ["from", "to"] {
        if !header.iter().any(|h| h == required) {
            return Err(format!(
                "line 1: the header row lacks the column {required:?}"
            ));
        }
    }
    let mut accounts = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| match e.position() {
            Some(p) => format!("line {}: {e}", p.line()),
            None => e.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != header.len() {
            return Err(format!(
                "line {line}: {} fields where the header has {}",
                record.len(),
                header.len()
            ));
        }
        let field = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .map(|i| record[i].to_owned())
                .filter(|v| !v.is_empty())
        };
        let (Some(from), Some(to)) = (field("from"), field("to")) else {
            return Err(format!("line {line}: from and to must not be empty"));
        };
        accounts.push(AccountEntry {
            from,
            to,
            from_password_file: field("from_password_file").map(PathBuf::from),
            to_password_file: field("to_password_file").map(PathBuf::from),
            from_auth: field("from_auth"),
            to_auth: field("to_auth"),
            from_preset: field("from_preset"),
            to_preset: field("to_preset"),
            overrides: Overrides::default(),
        });
    }
    Ok(accounts)
}

/// `--shard K/N`: this machine runs the accounts whose index (from 0, in file order) is K
/// modulo N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parsed = text
            .split_once('/')
            .and_then(|(k, n)| Some((k.parse().ok()?, n.parse().ok()?)));
        match parsed {
            Some((index, count)) if index < count => Ok(Shard { index, count }),
            _ => Err(format!("{text:?}: expected K/N with 0 <= K < N, e.g. 0/4")),
        }
    }
}

impl Shard {
    /// Whether the account at `index` belongs to this shard.
    pub fn takes(&self, index: usize) -> bool {
        index % self.count == self.index
    }
}

/// How one account's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every message is on the target.
    Ok,
    /// The run finished, but some messages failed.
    Partial,
    /// The run could not finish (login refused, server unreachable, ...).
    Failed,
    /// `--resume`: an earlier run of this account ended ok.
    Skipped,
}

/// One account's result, written as `<name>.json` in the report directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountResult {
    /// The report's format version.
    pub schema: u32,
    /// The account's name (the report file's name without `.json`).
    pub account: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The exit code `migrate` would have given.
    pub exit_code: i32,
    /// The error that ended the run, if one did.
    pub error: Option<String>,
    /// The run's report, when it got as far as planning.
    pub report: Option<serde_json::Value>,
}

impl AccountResult {
    /// The result of a run that finished (`error` beside a report: it ended early).
    pub fn finished(account: String, report: &Report, error: Option<&Error>) -> Self {
        let exit_code = error.map_or(report.exit_code(), Error::exit_code);
        AccountResult {
            schema: 1,
            account,
            outcome: match (error, exit_code) {
                (Some(_), _) => Outcome::Failed,
                (None, EXIT_OK) => Outcome::Ok,
                _ => Outcome::Partial,
            },
            exit_code,
            error: error.map(ToString::to_string),
            report: serde_json::to_value(report).ok(),
        }
    }

    /// A count from the run's report (`copied`, `failed`, `bytes_copied`, ...); 0 without one.
    pub fn count(&self, key: &str) -> u64 {
        self.report
            .as_ref()
            .and_then(|report| report[key].as_u64())
            .unwrap_or(0)
    }

    /// A dry run's preflight problems, as `problem (hint: fix)` lines.
    pub fn preflight_problems(&self) -> Vec<String> {
        let problems = self
            .report
            .as_ref()
            .and_then(|report| report["preflight"]["problems"].as_array());
        problems
            .into_iter()
            .flatten()
            .map(|p| {
                let text = |key: &str| p[key].as_str().unwrap_or_default().to_owned();
                format!("{} (hint: {})", text("problem"), text("fix"))
            })
            .collect()
    }

    /// The result of a run that could not start.
    pub fn failed(account: String, error: &Error) -> Self {
        AccountResult {
            schema: 1,
            account,
            outcome: Outcome::Failed,
            exit_code: error.exit_code(),
            error: Some(error.to_string()),
            report: None,
        }
    }
}

/// A file name for an account: its index and source URL's user and host, in characters safe
/// in any file system.
pub fn account_name(index: usize, account: &AccountEntry) -> String {
    let who = account
        .from
        .split_once("://")
        .map_or(account.from.as_str(), |(_, rest)| rest);
    let who = who.split('/').next().unwrap_or(who);
    let safe: String = who
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{index:04}-{safe}")
}

/// Whether an earlier run of this account copied everything and verified it, by its report
/// in `dir` (a dry run's report does not count).
pub fn already_ok(dir: &Path, name: &str) -> bool {
    std::fs::read(dir.join(format!("{name}.json")))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<AccountResult>(&bytes).ok())
        .is_some_and(|result| {
            result.outcome == Outcome::Ok
                && result
                    .report
                    .is_some_and(|r| r["dry_run"] == false && r["verified"] == true)
        })
}

/// Runs `run` for every job, `jobs` at a time, in file order of start; a failing account
/// never stops the others. `done` sees each result as it comes.
pub fn run_all<J: Sync>(
    work: &[J],
    jobs: usize,
    run: impl Fn(&J) -> AccountResult + Sync,
    done: impl Fn(&AccountResult) + Sync,
) -> Vec<AccountResult> {
    let next = Mutex::new(0usize);
    let results = Mutex::new(vec![None; work.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, work.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut next = next.lock().unwrap();
                        let i = *next;
                        *next += 1;
                        i
                    };
                    let Some(job) = work.get(i) else { break };
                    // A panic in one account (a server that confuses a client) must not take
                    // the summary of all the others with it.
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job)))
                            .unwrap_or_else(|_| {
                                AccountResult {
                        schema: 1,
                        account: format!("#{i}"),
                        outcome: Outcome::Failed,
                        exit_code: crate::error::EXIT_INTERNAL,
                        error: Some(
                            "mailferry failed internally on this account (a bug: please report it)"
                                .into(),
                        ),
                        report: None,
                    }
                            });
                    done(&result);
                    results.lock().unwrap()[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .flatten()
        .collect()
}

/// Totals over a batch, written as `summary.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The format version.
    pub schema: u32,
    /// Accounts in this run (this shard).
    pub accounts: usize,
    /// Accounts that ended ok.
    pub ok: usize,
    /// Accounts that finished with failed messages.
    pub partial: usize,
    /// Accounts that could not finish.
    pub failed: usize,
    /// Accounts skipped by `--resume`.
    pub skipped: usize,
    /// Messages copied, all accounts together.
    pub copied: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Messages that failed.
    pub failed_messages: u64,
    /// Each account's name, outcome and error.
    pub results: Vec<SummaryLine>,
}

/// One account in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryLine {
    /// The account's name.
    pub account: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Messages copied.
    pub copied: u64,
    /// Messages failed.
    pub failed: u64,
    /// The error that ended it, if any.
    pub error: Option<String>,
    /// A dry run's preflight problems, each with what to do (omitted when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attention: Vec<String>,
}

impl Summary {
    /// Adds up the results.
    pub fn of(results: &[AccountResult]) -> Self {
        let mut summary = Summary {
            schema: 1,
            accounts: results.len(),
            ..Summary::default()
        };
        for result in results {
            let count = |key: &str| result.count(key);
            *match result.outcome {
                Outcome::Ok => &mut summary.ok,
                Outcome::Partial => &mut summary.partial,
                Outcome::Failed => &mut summary.failed,
                Outcome::Skipped => &mut summary.skipped,
            } += 1;
            summary.copied += count("copied");
            summary.bytes_copied += count("bytes_copied");
            summary.failed_messages += count("failed");
            summary.results.push(SummaryLine {
                account: result.account.clone(),
                outcome: result.outcome,
                copied: count("copied"),
                failed: count("failed"),
                error: result.error.clone(),
                attention: result.preflight_problems(),
            });
        }
        summary
    }

    /// 0 when every account is ok (or was already), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.partial + self.failed == 0 {
            EXIT_OK
        } else {
            EXIT_PARTIAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_in_any_order_with_line_numbers_in_errors() {
        let accounts = parse_csv(
            "to,from,to_password_file\nimaps://b@h,pop3s://a@h,b.pw\n imaps://d@h , pop3s://c@h ,\n",
        )
        .unwrap();
        assert_eq!(accounts.len(), 2);
        assert_eq!(accounts[0].from, "pop3s://a@h");
        assert_eq!(accounts[0].to_password_file, Some(PathBuf::from("b.pw")));
        assert_eq!(accounts[1].to, "imaps://d@h");
        assert_eq!(accounts[1].to_password_file, None);

        let presets =
            parse_csv("from,to,from_preset,to_preset\nimaps://a@h,imaps://b@h,gmail,\n").unwrap();
        assert_eq!(presets[0].from_preset.as_deref(), Some("gmail"));
        assert_eq!(presets[0].to_preset, None);

        let err = parse_csv("from,to,color\npop3s://a@h,imaps://b@h,red\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("color"), "{err}");
        let err = parse_csv("from,to\npop3s://a@h,imaps://b@h\npop3s://c@h,imaps://d@h,extra\n")
            .unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(
            parse_csv("from\npop3s://a@h\n")
                .unwrap_err()
                .contains("\"to\"")
        );
    }

    #[test]
    fn local_stores_in_the_file_are_relative_to_it_and_servers_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.csv");
        std::fs::write(
            &path,
            "from,to\nimaps://a@h/INBOX,maildir:backup/a\nmbox:takeouts/,mbox:///srv/b.mbox\n",
        )
        .unwrap();
        let accounts = read_accounts(&path).unwrap();
        let base = dir.path().display();
        assert_eq!(accounts[0].from, "imaps://a@h/INBOX");
        assert_eq!(accounts[0].to, format!("maildir://{base}/backup/a"));
        assert_eq!(accounts[1].from, format!("mbox://{base}/takeouts/"));
        assert_eq!(accounts[1].to, "mbox:///srv/b.mbox");
    }

    #[test]
    fn toml_defaults_apply_unless_an_account_overrides_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.toml");
        std::fs::write(
            &path,
            r#"
[defaults]
connections = 4
exclude = ["^Spam$"]

[[accounts]]
from = "imaps://a@old"
to = "imaps://a@new"
to_password_file = "a.pw"

[[accounts]]
from = "imaps://b@old"
to = "imaps://b@new"
connections = 1
"#,
        )
        .unwrap();
        let accounts = read_accounts(&path).unwrap();
        assert_eq!(accounts[0].overrides.connections, Some(4));
        assert_eq!(accounts[0].overrides.exclude, ["^Spam$"]);
        assert_eq!(accounts[0].to_password_file, Some(dir.path().join("a.pw")));
        assert_eq!(accounts[1].overrides.connections, Some(1));
        std::fs::write(
            &path,
            "[[accounts]]\nfrom = \"x\"\nto = \"y\"\ncolour = 1\n",
        )
        .unwrap();
        assert_eq!(read_accounts(&path).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn shards_cover_every_index_exactly_once() {
        let shards: Vec<Shard> = ["0/3", "1/3", "2/3"].map(|s| s.parse().unwrap()).into();
        for i in 0..20 {
            assert_eq!(shards.iter().filter(|s| s.takes(i)).count(), 1);
        }
        assert!("3/3".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn names_are_safe_and_distinct() {
        let account = AccountEntry {
            from: "pop3s://alice%40old.example@mail.old:995/x".into(),
            ..AccountEntry::default()
        };
        assert_eq!(
            account_name(7, &account),
            "0007-alice_40old.example@mail.old_995"
        );
    }

    #[test]
    fn run_all_keeps_file_order_and_survives_failures() {
        let work: Vec<usize> = (0..10).collect();
        let done = Mutex::new(Vec::new());
        let results = run_all(
            &work,
            3,
            |&i| {
                // Later accounts finish first, so file order is not finishing order.
                std::thread::sleep(std::time::Duration::from_millis(10 * (10 - i as u64)));
                assert_ne!(i, 5, "account 5 confuses the client");
                AccountResult {
                    schema: 1,
                    account: i.to_string(),
                    outcome: if i % 4 == 0 {
                        Outcome::Failed
                    } else {
                        Outcome::Ok
                    },
                    exit_code: if i % 4 == 0 { 3 } else { 0 },
                    error: None,
                    report: None,
                }
            },
            |result| done.lock().unwrap().push(result.account.clone()),
        );
        let names: Vec<_> = results.iter().map(|r| r.account.as_str()).collect();
        assert_eq!(names, ["0", "1", "2", "3", "4", "#5", "6", "7", "8", "9"]);
        let panicked = &results[5];
        assert_eq!(
            (panicked.outcome, panicked.exit_code),
            (Outcome::Failed, crate::error::EXIT_INTERNAL)
        );
        assert!(panicked.error.as_deref().unwrap().contains("a bug"));
        let mut done = done.into_inner().unwrap();
        assert_ne!(done, names, "every account finished in file order");
        done.sort();
        let mut all: Vec<_> = names.iter().map(|name| name.to_string()).collect();
        all.sort();
        assert_eq!(done, all);
        let summary = Summary::of(&results);
        assert_eq!((summary.ok, summary.failed), (6, 4));
        assert_eq!(summary.exit_code(), 1);
    }
}
