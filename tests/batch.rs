//! `mailferry batch`, end to end through the binary, against a real Dovecot: twenty accounts
//! with some wrong passwords and an unreachable server, the per-account reports and the
//! summary, `--resume`, `--shard`, and master-user logins.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;
use support::{Dovecot, password};

const ACCOUNTS: usize = 20;

fn source_user(n: usize) -> String {
    format!("s{n:02}")
}

fn target_user(n: usize) -> String {
    format!("t{n:02}")
}

/// The harness's own password scheme, so its IMAP helpers can log in as these users too.
fn secret(user: &str) -> String {
    support::password(user)
}

/// A Dovecot with users s00…s19 (two messages each) and t00…t19, and a master user "admin"
/// whose password is in `admin.pw` of the returned directory.
fn server() -> (Dovecot, tempfile::TempDir) {
    server_with(ACCOUNTS, |n| {
        (0..2)
            .map(|i| {
                format!("Message-ID: <{n}-{i}@batch.test>\r\nSubject: {n} {i}\r\n\r\nbody\r\n")
                    .into_bytes()
            })
            .collect()
    })
}

/// Like [`server`], with `accounts` pairs of users and `messages(n)` in s_n's INBOX.
fn server_with(
    accounts: usize,
    messages: impl Fn(usize) -> Vec<Vec<u8>>,
) -> (Dovecot, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    // Dovecot's auth process reads the master passdb as an unprivileged user.
    let world_readable = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    world_readable(files.path());
    let masters = files.path().join("masters");
    std::fs::write(&masters, "admin:{PLAIN}admin-master-pw::::::\n").unwrap();
    std::fs::write(files.path().join("admin.pw"), "admin-master-pw\n").unwrap();
    let users: Vec<(String, String)> = (0..accounts)
        .flat_map(|n| [source_user(n), target_user(n)])
        .map(|u| (u.clone(), secret(&u)))
        .collect();
    let users: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let conf = format!(
        "auth_master_user_separator = *\npassdb {{\n  driver = passwd-file\n  master = yes\n  args = scheme=PLAIN {}\n  pass = yes\n}}\n",
        masters.display()
    );
    let server = Dovecot::start_custom(&conf, true, &users);
    for n in 0..accounts {
        server.append_many(&source_user(n), "INBOX", &messages(n));
    }
    (server, files)
}

/// Writes the accounts CSV: account n reads s_n's POP3 maildrop into t_n's INBOX. `tweak`
/// may change a line's fields (from, to, from_password_file, to_password_file, from_auth).
fn accounts_csv(server: &Dovecot, dir: &Path, tweak: impl Fn(usize, &mut [String; 5])) -> PathBuf {
    accounts_csv_of(ACCOUNTS, server, dir, tweak)
}

/// Like [`accounts_csv`], for the first `accounts` pairs of users.
fn accounts_csv_of(
    accounts: usize,
    server: &Dovecot,
    dir: &Path,
    tweak: impl Fn(usize, &mut [String; 5]),
) -> PathBuf {
    let mut csv = String::from("from,to,from_password_file,to_password_file,from_auth\n");
    for n in 0..accounts {
        let (s, t) = (source_user(n), target_user(n));
        for user in [&s, &t] {
            std::fs::write(dir.join(format!("{user}.pw")), secret(user)).unwrap();
        }
        let mut fields = [
            format!("pop3s://{s}@127.0.0.1:{}", server.pop3s_port()),
            format!("imaps://{t}@127.0.0.1:{}/INBOX", server.imaps_port()),
            format!("{s}.pw"),
            format!("{t}.pw"),
            String::new(),
        ];
        tweak(n, &mut fields);
        csv.push_str(&fields.join(","));
        csv.push('\n');
    }
    let path = dir.join("accounts.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn batch(server: &Dovecot, accounts: &Path, reports: &Path, extra: &[&str]) -> (i32, String) {
    let output = Command::from_std(batch_command(server, accounts, reports, extra))
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap(), text)
}

fn batch_command(
    server: &Dovecot,
    accounts: &Path,
    reports: &Path,
    extra: &[&str],
) -> std::process::Command {
    let mut command = support::mailferry_process("batch");
    command
        .arg(accounts)
        .arg("--report-dir")
        .arg(reports)
        .arg("--tls-ca")
        .arg(server.cert_path())
        .args(["--jobs", "4", "--timeout", "20"])
        .args(extra);
    command
}

fn json(path: PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

/// The account reports in a directory: name → (outcome, exit code).
fn outcomes(reports: &Path) -> Vec<(String, String, i64)> {
    let mut all: Vec<_> = std::fs::read_dir(reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "summary.json")
        .map(|p| {
            let v = json(p);
            (
                v["account"].as_str().unwrap().to_owned(),
                v["outcome"].as_str().unwrap().to_owned(),
                v["exit_code"].as_i64().unwrap(),
            )
        })
        .collect();
    all.sort();
    all
}

#[test]
fn twenty_accounts_with_failures_then_resume_then_shards() {
    let (server, _files) = server();
    let dir = tempfile::tempdir().unwrap();
    let wrong = [3, 8, 15];
    let unreachable = 11;
    let closed = support::free_port();
    let accounts = accounts_csv(&server, dir.path(), |n, fields| {
        if wrong.contains(&n) {
            fields[2] = "wrong.pw".into();
        }
        if n == unreachable {
            fields[1] = format!("imaps://{}@127.0.0.1:{closed}/INBOX", target_user(n));
        }
    });
    std::fs::write(dir.path().join("wrong.pw"), "not-the-password").unwrap();
    let reports = dir.path().join("reports");

    let (code, text) = batch(&server, &accounts, &reports, &[]);
    assert_eq!(code, 1, "{text}");
    let summary = json(reports.join("summary.json"));
    assert_eq!(
        (
            summary["accounts"].as_u64(),
            summary["ok"].as_u64(),
            summary["failed"].as_u64()
        ),
        (Some(20), Some(16), Some(4)),
        "{summary:#}"
    );
    assert_eq!(summary["copied"], 32);
    let results = outcomes(&reports);
    assert_eq!(results.len(), ACCOUNTS);
    for (n, (name, outcome, exit)) in results.iter().enumerate() {
        assert!(
            name.starts_with(&format!("{n:04}-{}@127.0.0.1", source_user(n))),
            "{name}"
        );
        let expected = if wrong.contains(&n) {
            ("failed", 3)
        } else if n == unreachable {
            ("failed", 4)
        } else {
            ("ok", 0)
        };
        assert_eq!((outcome.as_str(), *exit), expected, "{name}");
    }
    assert!(text.contains("16 ok, 0 partial, 4 failed"), "{text}");
    for n in 0..ACCOUNTS {
        let expected = if wrong.contains(&n) || n == unreachable {
            0
        } else {
            2
        };
        assert_eq!(server.messages(&target_user(n), "INBOX").len(), expected);
    }
    assert!(!text.contains(&secret("s00")) && !text.contains("not-the-password"));

    // The passwords are fixed; --resume skips what is done and copies nothing twice.
    let accounts = accounts_csv(&server, dir.path(), |n, fields| {
        if n == unreachable {
            fields[1] = format!("imaps://{}@127.0.0.1:{closed}/INBOX", target_user(n));
        }
    });
    let (code, text) = batch(&server, &accounts, &reports, &["--resume"]);
    assert_eq!(code, 1, "{text}");
    let summary = json(reports.join("summary.json"));
    assert_eq!(
        (
            summary["ok"].as_u64(),
            summary["skipped"].as_u64(),
            summary["failed"].as_u64()
        ),
        (Some(3), Some(16), Some(1)),
        "{summary:#}"
    );
    for n in 0..ACCOUNTS {
        let expected = if n == unreachable { 0 } else { 2 };
        assert_eq!(
            server.messages(&target_user(n), "INBOX").len(),
            expected,
            "account {n}"
        );
    }

    // Two shards together cover every account exactly once.
    // The unreachable account (odd) fails its shard; the other shard has nothing left to copy.
    let halves = [("0/2", 0), ("1/2", 1)].map(|(shard, expected_code)| {
        let reports = dir.path().join(format!("shard{}", &shard[..1]));
        let (code, text) = batch(&server, &accounts, &reports, &["--shard", shard]);
        assert_eq!(code, expected_code, "shard {shard}: {text}");
        outcomes(&reports)
            .into_iter()
            .map(|(name, _, _)| name)
            .collect::<BTreeSet<_>>()
    });
    assert!(halves[0].is_disjoint(&halves[1]));
    assert_eq!(halves[0].len() + halves[1].len(), ACCOUNTS);
    assert!(
        halves[0]
            .iter()
            .all(|name| name[..4].parse::<usize>().unwrap() % 2 == 0)
    );
}

#[test]
fn master_user_logins_and_a_wrong_master_password() {
    let (server, files) = server();
    let dir = tempfile::tempdir().unwrap();
    let admin_pw = files.path().join("admin.pw");
    std::fs::write(dir.path().join("bad-admin.pw"), "not-the-master-pw").unwrap();
    let accounts = accounts_csv(&server, dir.path(), |n, fields| {
        if n == 0 {
            fields[2] = admin_pw.display().to_string();
            fields[4] = "master:admin".into();
        } else if n == 1 {
            fields[2] = "bad-admin.pw".into();
            fields[4] = "master:admin".into();
        }
    });
    let reports = dir.path().join("reports");
    let (code, text) = batch(&server, &accounts, &reports, &["--shard", "0/10"]);
    assert_eq!(code, 0, "{text}");
    let results = outcomes(&reports);
    assert_eq!(results[0].1, "ok", "{text}");
    assert_eq!(server.messages(&target_user(0), "INBOX").len(), 2);
    let (code, text) = batch(&server, &accounts, &reports, &["--shard", "1/10"]);
    assert_eq!(code, 1, "{text}");
    let account_1 = outcomes(&reports)
        .into_iter()
        .find(|(name, _, _)| name.starts_with("0001-"))
        .unwrap();
    assert_eq!((account_1.1.as_str(), account_1.2), ("failed", 3));
}

#[test]
fn resume_after_the_batch_is_killed_mid_run() {
    // Account 0 is tiny and ends at once; accounts 1 to 3 run beside it (--jobs 4) with enough
    // mail to be caught half-way; account 4 has not started when the batch dies.
    const KILLED: usize = 5;
    const BIG: usize = 60;
    let (server, _files) = server_with(KILLED, |n| {
        let count = if n == 0 { 1 } else { BIG };
        (0..count)
            .map(|i| support::big_message(100_000, (n * 1000 + i) as u64))
            .collect()
    });
    let dir = tempfile::tempdir().unwrap();
    let accounts = accounts_csv_of(KILLED, &server, dir.path(), |_, _| {});
    let reports = dir.path().join("reports");
    let first_report = reports.join(format!(
        "0000-{}@127.0.0.1_{}.json",
        source_user(0),
        server.pop3s_port()
    ));

    let mut child = batch_command(&server, &accounts, &reports, &[])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let caught = loop {
        let in_flight = server.messages(&target_user(1), "INBOX").len();
        if first_report.exists() && in_flight > 0 {
            break in_flight;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the batch ended before it could be killed mid-run"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no report within 120 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let written: Vec<_> = outcomes(&reports);
    assert!(
        written.len() < KILLED && caught < BIG,
        "killed too late to test anything: {written:?}, {caught} of {BIG} copied"
    );
    assert_eq!(written[0].1, "ok");
    // What the killed run had sent may still be stored after its death; an admin's re-run
    // comes later than that.
    server.wait_until_idle(Duration::from_secs(60));
    let untouched = std::fs::read(&first_report).unwrap();
    let modified = std::fs::metadata(&first_report)
        .unwrap()
        .modified()
        .unwrap();

    let (code, text) = batch(&server, &accounts, &reports, &["--resume"]);
    assert_eq!(code, 0, "{text}");
    let summary = json(reports.join("summary.json"));
    assert_eq!(
        (summary["skipped"].as_u64(), summary["ok"].as_u64()),
        (
            Some(written.len() as u64),
            Some((KILLED - written.len()) as u64)
        ),
        "{summary:#}"
    );
    assert_eq!(std::fs::read(&first_report).unwrap(), untouched);
    assert_eq!(
        std::fs::metadata(&first_report)
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );
    for n in 0..KILLED {
        let ids: Vec<String> = server
            .messages(&target_user(n), "INBOX")
            .iter()
            .map(|m| message_id(&m.raw))
            .collect();
        let distinct: BTreeSet<&String> = ids.iter().collect();
        let expected = if n == 0 { 1 } else { BIG };
        assert_eq!(
            (ids.len(), distinct.len()),
            (expected, expected),
            "account {n}: every message exactly once"
        );
    }
}

fn message_id(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .lines()
        .find_map(|line| line.strip_prefix("Message-ID: "))
        .unwrap_or_else(|| panic!("no Message-ID"))
        .to_owned()
}

/// `--max-connections-per-host 4` with `--jobs 2` keeps the target's connections from all
/// jobs at 4 or fewer, even when each account asks for 8: the target (both accounts write to
/// bob) refuses a fifth login from the same address, and logs it.
#[test]
fn max_connections_per_host_caps_all_jobs_together() {
    let source = Dovecot::start();
    let target = Dovecot::start_with("protocol imap {\n  mail_max_userip_connections = 4\n}\n");
    // Eight batches per account, so that each would open all its connections.
    for (user, seed) in [("alice", 0), ("carol", 1000)] {
        let raws: Vec<Vec<u8>> = (0..800)
            .map(|i| support::big_message(3_000, seed + i))
            .collect();
        source.append_many(user, "INBOX", &raws);
    }
    let dir = tempfile::tempdir().unwrap();
    let pems = [source.cert_path(), target.cert_path()].map(|p| std::fs::read(p).unwrap());
    std::fs::write(dir.path().join("ca.pem"), pems.concat()).unwrap();
    let accounts = dir.path().join("accounts.csv");
    let url =
        |user: &str, port: u16, folder: &str| support::account_url("imaps", user, port, folder);
    for user in ["alice", "carol"] {
        std::fs::write(dir.path().join(format!("{user}.pw")), password(user)).unwrap();
    }
    std::fs::write(
        &accounts,
        format!(
            "from,to,from_password_file\n{},{},alice.pw\n{},{},carol.pw\n",
            url("alice", source.imaps_port(), ""),
            url("bob", target.imaps_port(), "A"),
            url("carol", source.imaps_port(), ""),
            url("bob", target.imaps_port(), "C"),
        ),
    )
    .unwrap();
    let output = support::mailferry("batch")
        .arg(&accounts)
        .arg("--report-dir")
        .arg(dir.path().join("reports"))
        .arg("--tls-ca")
        .arg(dir.path().join("ca.pem"))
        .args(["--jobs", "2", "--connections", "8"])
        .args(["--max-connections-per-host", "4"])
        .env("MAILFERRY_TO_PASSWORD", password("bob"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        !target.log().contains("Maximum number of connections"),
        "more than 4 connections at once: {}",
        target.log()
    );
    // An IMAP account's folders go below the target URL's folder.
    for folder in ["A/INBOX", "C/INBOX"] {
        assert_eq!(target.messages("bob", folder).len(), 800, "{folder}");
    }
}

#[test]
fn a_batch_backs_accounts_up_to_maildirs_beside_the_accounts_file_and_a_rerun_copies_nothing() {
    let accounts = 3;
    let (server, _files) = server_with(accounts, |n| {
        (0..2)
            .map(|i| format!("Message-ID: <{n}-{i}@local.test>\r\n\r\nbody\r\n").into_bytes())
            .collect()
    });
    let dir = tempfile::tempdir().unwrap();
    let csv = accounts_csv_of(accounts, &server, dir.path(), |n, fields| {
        fields[1] = format!("maildir:backup/{}", source_user(n));
        fields[3] = String::new();
    });
    // Run from elsewhere: the backups must still land beside the accounts file.
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |reports: &str| {
        let output = batch_command(&server, &csv, &dir.path().join(reports), &[])
            .current_dir(elsewhere.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        json(dir.path().join(reports).join("summary.json"))
    };
    assert_eq!(run("first")["copied"], 6);
    for n in 0..accounts {
        let cur = dir.path().join("backup").join(source_user(n)).join("cur");
        let mut ids: Vec<String> = std::fs::read_dir(&cur)
            .unwrap_or_else(|e| panic!("{cur:?}: {e}"))
            .map(|f| message_id(&std::fs::read(f.unwrap().path()).unwrap()))
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            [format!("<{n}-0@local.test>"), format!("<{n}-1@local.test>")]
        );
    }
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none()
    );
    let again = run("again");
    assert_eq!(
        (&again["copied"], &again["ok"]),
        (&0.into(), &3.into()),
        "{again:#}"
    );
}
