//! README promises that span commands, each checked as a user (or a cron job, or a monitor)
//! would: `--quiet` still says what failed, the report's `fatal` after a failed run,
//! `--tls-insecure` warning on every run, an untrusted certificate never retried, exit 5 doing
//! nothing, and `--dry-run` of `mirror` and `batch` changing nothing.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::relay::Relay;
use support::{Accounts, Dovecot, MirrorPair, StoredMessage, mailferry, password};

fn message(id: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nSubject: {id}\r\nMessage-ID: <{id}@promises.test>\r\n\r\nbody {id}\r\n")
        .into_bytes()
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// (text, flags) of every message of `user`'s `folder`: what a user would compare.
fn contents(server: &Dovecot, user: &str, folder: &str) -> Vec<(String, Vec<String>)> {
    server
        .messages(user, folder)
        .into_iter()
        .map(|StoredMessage { raw, flags, .. }| (String::from_utf8_lossy(&raw).into_owned(), flags))
        .collect()
}

/// Every file under `dir` with its text, sorted: a directory's whole content.
fn files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            found.push((path, text));
        }
    }
    found.sort();
    found
}

/// The mirror's pair of servers; the runs below are this file's own.
type Mirror = MirrorPair;

impl Mirror {
    fn run(&self, extra: &[&str]) -> std::process::Output {
        self.command(extra).output().unwrap()
    }

    /// What a mirror run may change on the servers and in its state: the target's and the
    /// source's messages (with flags), and the state directory.
    fn snapshot(&self) -> impl PartialEq + std::fmt::Debug {
        (
            contents(&self.target, "bob", "INBOX"),
            contents(&self.source, "alice", "INBOX"),
            files(&self.state()),
        )
    }

    fn report_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.report()).unwrap()).into_owned()
    }
}

#[test]
fn quiet_runs_that_fail_still_say_what_failed() {
    let server = Dovecot::start();
    server.deliver("carol", "INBOX", &message("quiet"));
    let dir = tempfile::tempdir().unwrap();
    let wrong_password = |output: std::process::Output, what: &str| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.lines().any(|line| line.starts_with("error:")),
            "{what}: a quiet failure must still say what failed: {}",
            text(&output)
        );
        output.status.code()
    };

    let migrate = mailferry("migrate")
        .source_account("pop3s", "carol", server.pop3s_port())
        .target_account("imaps", "alice", server.imaps_port(), "")
        .arg("--tls-ca")
        .arg(server.cert_path())
        .env("MAILFERRY_TO_PASSWORD", "wrong")
        .arg("--quiet")
        .output()
        .unwrap();
    assert_eq!(wrong_password(migrate, "migrate"), Some(3));

    let mirror = mailferry("mirror")
        .source_account("imaps", "carol", server.imaps_port())
        .target_account("imaps", "alice", server.imaps_port(), "")
        .arg("--tls-ca")
        .arg(server.cert_path())
        .arg("--state")
        .arg(dir.path().join("state"))
        .env("MAILFERRY_FROM_PASSWORD", "wrong")
        .arg("--quiet")
        .output()
        .unwrap();
    assert_eq!(wrong_password(mirror, "mirror"), Some(3));

    let accounts = dir.path().join("accounts.csv");
    std::fs::write(
        &accounts,
        format!(
            "from,to\npop3s://carol@127.0.0.1:{},imaps://alice@127.0.0.1:{}/INBOX\n",
            server.pop3s_port(),
            server.imaps_port()
        ),
    )
    .unwrap();
    let batch = mailferry("batch")
        .arg(&accounts)
        .arg("--report-dir")
        .arg(dir.path().join("reports"))
        .arg("--tls-ca")
        .arg(server.cert_path())
        .env("MAILFERRY_FROM_PASSWORD", password("carol"))
        .env("MAILFERRY_TO_PASSWORD", "wrong")
        .arg("--quiet")
        .output()
        .unwrap();
    let output = text(&batch);
    assert_eq!(batch.status.code(), Some(1), "{output}");
    assert!(
        output.contains("carol@127.0.0.1") && output.contains("failed"),
        "a quiet batch must still name the failed account: {output}"
    );
    assert!(!output.contains("wrong"), "a password leaked: {output}");
}

#[test]
fn the_reports_fatal_replaces_a_previous_success() {
    let server = Dovecot::start();
    server.deliver("carol", "INBOX", &message("fatal"));
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let run = |to_password: &str, to_port: u16| {
        let output = mailferry("migrate")
            .source_account("pop3s", "carol", server.pop3s_port())
            .target_account("imaps", "alice", to_port, "")
            .env("MAILFERRY_TO_PASSWORD", to_password)
            .arg("--tls-ca")
            .arg(server.cert_path())
            .args(["--retries", "0", "--report"])
            .arg(&report_path)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap())
            .unwrap_or_else(|e| panic!("no report after {}: {e}", text(&output)));
        (output.status.code(), report)
    };

    let (code, report) = run(&password("alice"), server.imaps_port());
    assert_eq!((code, &report["fatal"]), (Some(0), &Value::Null));

    let (code, report) = run("wrong", server.imaps_port());
    assert_eq!(code, Some(3));
    let fatal = report["fatal"]
        .as_str()
        .expect("a fatal error after exit 3");
    assert!(fatal.contains("alice@127.0.0.1"), "{fatal}");

    run(&password("alice"), server.imaps_port());
    let (code, report) = run(&password("alice"), support::free_port());
    assert_eq!(code, Some(4));
    assert!(
        report["fatal"].is_string(),
        "no fatal error after exit 4: {report:#}"
    );
}

#[test]
fn tls_insecure_warns_on_every_run_and_an_untrusted_certificate_is_never_retried() {
    let server = Dovecot::start();
    server.deliver("carol", "INBOX", &message("insecure"));
    for run in 1..=2 {
        let output = mailferry("migrate")
            .source_account("pop3s", "carol", server.pop3s_port())
            .target_account("imaps", "alice", server.imaps_port(), "")
            .arg("--tls-insecure")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "run {run}: {stderr}");
        assert!(
            stderr.contains("warning: --tls-insecure"),
            "run {run} did not warn: {stderr}"
        );
    }

    // Without --tls-ca the test server's certificate is not trusted: exit 4 after one try on
    // either side, --retries notwithstanding.
    let (from, to) = (
        Relay::start(server.pop3s_port()),
        Relay::start(server.imaps_port()),
    );
    let output = mailferry("migrate")
        .source_account("pop3s", "carol", from.port())
        .target_account("imaps", "alice", to.port(), "")
        .args(["--retries", "5"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(text(&output).contains("--tls-ca"), "{}", text(&output));
    let tries = [from.connections().len(), to.connections().len()];
    assert!(
        tries.iter().all(|n| *n <= 1) && tries.iter().sum::<usize>() >= 1,
        "connections (source, target): {tries:?}"
    );
}

#[test]
fn exit_5_does_nothing() {
    let m = Mirror::new();
    m.source
        .append("alice", "INBOX", &message("first"), &[], None);
    let output = m.run(&[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    // Something for the next run to do, so that "nothing" shows.
    m.source
        .append("alice", "INBOX", &message("second"), &[], None);
    let lock = std::fs::read_dir(m.state())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "lock"))
        .expect("the first run made a lock file");
    let held = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
    held.lock().unwrap();
    let (before, report) = (m.snapshot(), m.report_text());
    let output = m.run(&[]);
    assert_eq!(output.status.code(), Some(5), "{}", text(&output));
    assert_eq!(m.snapshot(), before, "a locked-out run changed something");
    assert_eq!(m.report_text(), report, "a locked-out run wrote the report");
    held.unlock().unwrap();
    assert_eq!(m.run(&[]).status.code(), Some(0));
    assert_eq!(m.target.messages("bob", "INBOX").len(), 2);
}

#[test]
fn mirror_dry_run_changes_nothing() {
    let m = Mirror::new();
    let output = m.run(&["--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(files(&m.state()).is_empty(), "a first dry run left state");

    m.source
        .append("alice", "INBOX", &message("kept"), &[], None);
    m.source
        .append("alice", "INBOX", &message("gone"), &[], None);
    assert_eq!(m.run(&[]).status.code(), Some(0));
    // A real run now would copy one, update a flag and (with --delete) delete one.
    m.source
        .append("alice", "INBOX", &message("new"), &[], None);
    m.source.expunge("alice", "INBOX", "<gone@promises.test>");
    let mut flag = std::process::Command::new("doveadm");
    flag.arg("-c").arg(m.source.conf_path()).args([
        "flags",
        "add",
        "-u",
        "alice",
        "\\Flagged",
        "mailbox",
        "INBOX",
        "all",
    ]);
    assert!(flag.status().unwrap().success());
    let before = m.snapshot();
    let output = m.run(&["--dry-run", "--delete"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(m.snapshot(), before, "a dry run changed something");
    assert!(m.report_text().contains("\"dry_run\": true"));
}

#[test]
fn batch_dry_run_changes_nothing() {
    let server = Dovecot::start();
    server.append("carol", "INBOX", &message("batch"), &[], None);
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.csv");
    std::fs::write(
        &accounts,
        format!(
            "from,to\nimaps://carol@127.0.0.1:{0},imaps://alice@127.0.0.1:{0}\n",
            server.imaps_port()
        ),
    )
    .unwrap();
    let snapshot = || {
        (
            contents(&server, "alice", "INBOX"),
            contents(&server, "carol", "INBOX"),
            server.folders("alice"),
        )
    };
    let before = snapshot();
    let output = mailferry("batch")
        .arg(&accounts)
        .arg("--report-dir")
        .arg(dir.path().join("reports"))
        .arg("--tls-ca")
        .arg(server.cert_path())
        .args(["--dry-run", "--mark-seen"])
        .env("MAILFERRY_FROM_PASSWORD", password("carol"))
        .env("MAILFERRY_TO_PASSWORD", password("alice"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(snapshot(), before, "a dry run changed a mailbox");
}

/// Progress bars appear when stderr is a terminal (a pseudo-terminal from util-linux's
/// `script`), and not one escape sequence reaches stderr when it is a pipe.
#[test]
fn progress_bars_only_on_a_terminal() {
    let server = Dovecot::start();
    let messages: Vec<Vec<u8>> = (0..200)
        .map(|i| support::big_message(10_000, 500 + i))
        .collect();
    server.append_many("carol", "INBOX", &messages);
    let arguments = |folder: &str| {
        vec![
            "migrate".to_owned(),
            "--from".to_owned(),
            support::account_url("imaps", "carol", server.imaps_port(), ""),
            "--to".to_owned(),
            support::account_url("imaps", "alice", server.imaps_port(), folder),
            "--tls-ca".to_owned(),
            server.cert_path().display().to_string(),
        ]
    };
    let passwords = [
        ("MAILFERRY_FROM_PASSWORD", password("carol")),
        ("MAILFERRY_TO_PASSWORD", password("alice")),
    ];

    let piped = mailferry("migrate")
        .args(&arguments("Piped")[1..])
        .envs(passwords.clone())
        .output()
        .unwrap();
    assert_eq!(piped.status.code(), Some(0), "{}", text(&piped));
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains("msgs"),
        "progress on a pipe: {stderr:?}"
    );

    let binary = assert_cmd::cargo::cargo_bin!("mailferry")
        .display()
        .to_string();
    let command_line = std::iter::once(binary)
        .chain(arguments("Terminal"))
        .map(|word| format!("'{word}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let on_terminal = assert_cmd::Command::new("script")
        .args([
            "--quiet",
            "--return",
            "--command",
            &command_line,
            "/dev/null",
        ])
        .envs(passwords)
        .timeout(support::RUN_LIMIT)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert_eq!(on_terminal.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("msgs"),
        "no progress bar on a terminal: {shown:?}"
    );
}
