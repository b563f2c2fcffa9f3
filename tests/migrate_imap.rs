//! `mailferry migrate` from one IMAP account to another, end to end through the binary,
//! against two real Dovecot servers started by the test: folders with their hierarchy (the
//! source uses `/`, the target `.`), special-use folders under other names, flags, keywords and
//! internal dates spread over years, a non-ASCII folder name; the source is left untouched.
//! Folders move between personal namespaces (`INBOX.` on one side, none on the other).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use assert_cmd::Command;
use serde_json::Value;
use support::{Accounts, Dovecot, INBOX_PREFIXED, StoredMessage, mailferry, normalize_crlf};

/// The source marks "Sent Items" as \Sent; the target calls its \Sent folder "Sent" and uses
/// `.` as hierarchy separator.
const SOURCE_CONF: &str =
    "namespace inbox {\n  mailbox \"Sent Items\" {\n    special_use = \\Sent\n  }\n}\n";
const TARGET_CONF: &str = "namespace inbox {\n  separator = .\n  mailbox Sent {\n    special_use = \\Sent\n    auto = create\n  }\n}\n";

/// (source folder, target folder as mailferry should name it)
const FOLDERS: [(&str, &str); 6] = [
    ("INBOX", "INBOX"),
    ("Archive", "Archive"),
    ("Archive/2019", "Archive.2019"),
    ("Sent Items", "Sent"),
    ("Lists/dev", "Lists.dev"),
    ("Données", "Données"),
];

fn message(folder: &str, n: usize) -> Vec<u8> {
    let id = if n == 2 {
        String::new() // one message per folder without a Message-ID
    } else {
        format!("Message-ID: <{n}.{}@source.example>\r\n", folder.len())
    };
    format!(
        "From: Sender {n} <s{n}@example.org>\r\nTo: alice@example.net\r\n\
         Subject: {folder} message {n}\r\nDate: Mon, {n} Mar 2010 10:00:00 +0000\r\n{id}\r\n\
         Body of message {n} in {folder}, caf\u{e9}.\r\n"
    )
    .into_bytes()
}

fn flags_for(n: usize) -> &'static [&'static str] {
    match n % 4 {
        0 => &["\\Seen"],
        1 => &["\\Seen", "\\Flagged", "$Label1"],
        2 => &[],
        _ => &["\\Answered", "\\Draft"],
    }
}

fn date_for(folder_index: usize, n: usize) -> SystemTime {
    // Spread over 2005-2025.
    UNIX_EPOCH
        + Duration::from_secs(1_104_537_600 + (folder_index * 97 + n * 31) as u64 * 86_400 * 7)
}

fn migrate(source: &Dovecot, target: &Dovecot, ca: &Path) -> Command {
    let mut cmd = mailferry("migrate");
    cmd.source_account("imaps", "alice", source.imaps_port())
        .target_account("imaps", "bob", target.imaps_port(), "")
        .arg("--tls-ca")
        .arg(ca)
        .args(["--timeout", "30", "--connections", "3"]);
    cmd
}

/// (normalised bytes, flags sorted, internal date) of every message, sorted: a folder's
/// content as a user would compare it.
fn content(messages: &[StoredMessage]) -> Vec<(Vec<u8>, Vec<String>, SystemTime)> {
    let mut all: Vec<_> = messages
        .iter()
        .map(|m| {
            let mut flags = m.flags.clone();
            flags.sort();
            (normalize_crlf(&m.raw), flags, m.internal_date)
        })
        .collect();
    all.sort();
    all
}

#[test]
fn copies_every_folder_with_flags_and_dates_and_a_rerun_copies_nothing() {
    let source = Dovecot::start_with(SOURCE_CONF);
    let target = Dovecot::start_with(TARGET_CONF);
    let mut expected_total = 0;
    for (i, (folder, _)) in FOLDERS.iter().enumerate() {
        for n in 0..(3 + i) {
            let date = date_for(i, n);
            source.append(
                "alice",
                folder,
                &message(folder, n),
                flags_for(n),
                Some(date),
            );
            expected_total += 1;
        }
    }
    let source_before: BTreeMap<&str, _> = FOLDERS
        .iter()
        .map(|(f, _)| (*f, content(&source.messages("alice", f))))
        .collect();

    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    let pems = [source.cert_path(), target.cert_path()].map(|p| std::fs::read(p).unwrap());
    std::fs::write(&ca, pems.concat()).unwrap();
    let report_path = tmp.path().join("report.json");

    let output = migrate(&source, &target, &ca)
        .arg("--report")
        .arg(&report_path)
        .output()
        .unwrap();
    let all_output = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{all_output}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["copied"], expected_total);
    assert_eq!(report["verified"], true);
    assert_eq!(report["folders"].as_array().unwrap().len(), FOLDERS.len());

    for (source_folder, target_folder) in FOLDERS {
        let on_disk = target_folder.replace('.', "/");
        assert_eq!(
            content(&target.messages("bob", &on_disk)),
            source_before[source_folder],
            "{source_folder} → {target_folder}: messages, flags or dates differ"
        );
    }
    assert!(
        target.folders("bob").iter().all(|f| f != "Sent Items"),
        "{:?}",
        target.folders("bob")
    );
    // Read with EXAMINE and BODY.PEEK: the source is exactly as it was (no \Seen added).
    for (folder, before) in &source_before {
        assert_eq!(
            &content(&source.messages("alice", folder)),
            before,
            "{folder}"
        );
    }

    let output = migrate(&source, &target, &ca)
        .arg("--report")
        .arg(&report_path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["copied"], 0);
    assert_eq!(report["already_present"], expected_total);
}

#[test]
fn include_exclude_map_and_dry_run() {
    let source = Dovecot::start();
    let target = Dovecot::start();
    for folder in ["INBOX", "Archive/2019", "Spam", "Old Stuff", "Drafts"] {
        source.append("alice", folder, &message(folder, 1), &[], None);
    }
    // Drafts is left out by --include; Spam is included, then excluded.
    let selection = [
        "--include",
        "^(INBOX|Archive|Old Stuff|Spam)",
        "--exclude",
        "^Spam$",
        "--map",
        "Old Stuff=Archive/Old",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    let pems = [source.cert_path(), target.cert_path()].map(|p| std::fs::read(p).unwrap());
    std::fs::write(&ca, pems.concat()).unwrap();
    let dry = migrate(&source, &target, &ca)
        .args(selection)
        .arg("--dry-run")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(dry.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("Old Stuff → Archive/Old: would copy 1 of 1"),
        "{stdout}"
    );
    assert!(!stdout.contains("Spam"), "{stdout}");
    assert!(!stdout.contains("Drafts"), "{stdout}");
    assert_eq!(target.folders("bob"), vec!["INBOX".to_string()]);

    migrate(&source, &target, &ca)
        .args(selection)
        .args(["--target-prefix", "From Old"])
        .assert()
        .code(0);
    assert_eq!(
        target.folders("bob"),
        [
            "INBOX",
            "From Old/Archive/2019",
            "From Old/Archive/Old",
            "From Old/INBOX"
        ]
    );
    assert_eq!(target.messages("bob", "From Old/Archive/Old").len(), 1);
}

/// [`content`] without the dates: a message stored with no INTERNALDATE has a file time finer
/// than IMAP's seconds.
fn undated(messages: &[StoredMessage]) -> Vec<(Vec<u8>, Vec<String>)> {
    content(messages)
        .into_iter()
        .map(|(raw, flags, _)| (raw, flags))
        .collect()
}

/// Runs `migrate` with a report; returns the exit code, the report and everything printed.
fn migrate_reported(source: &Dovecot, target: &Dovecot) -> (Option<i32>, Value, String) {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    let pems = [source.cert_path(), target.cert_path()].map(|p| std::fs::read(p).unwrap());
    std::fs::write(&ca, pems.concat()).unwrap();
    let report_path = tmp.path().join("report.json");
    let output = migrate(source, target, &ca)
        .arg("--report")
        .arg(&report_path)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = std::fs::read(&report_path)
        .map(|json| serde_json::from_slice(&json).unwrap())
        .unwrap_or(Value::Null);
    (output.status.code(), report, printed)
}

/// Copies an account between `source` and `target` twice and checks each folder's messages
/// (`(source folder, target folder)`, as on disk): every message once with its flags, exit 0,
/// nothing copied the second time.
fn copy_twice(source: &Dovecot, target: &Dovecot, folders: &[(&str, &str)], total: usize) {
    let (code, report, printed) = migrate_reported(source, target);
    assert_eq!(code, Some(0), "{printed}");
    assert_eq!(report["copied"], total, "{printed}");
    assert_eq!(report["verified"], true);
    for (source_folder, target_folder) in folders {
        assert_eq!(
            undated(&target.messages("bob", target_folder)),
            undated(&source.messages("alice", source_folder)),
            "{source_folder} → {target_folder}"
        );
    }
    let (code, report, printed) = migrate_reported(source, target);
    assert_eq!(code, Some(0), "{printed}");
    assert_eq!(report["copied"], 0, "{printed}");
    assert_eq!(report["already_present"], total);
}

/// Into a server that keeps every folder under `INBOX.` (Courier, Cyrus without altnamespace),
/// which refuses `CREATE Archive`, the folders go under that prefix, with its separator and
/// no option; special-use folders still meet their counterparts.
#[test]
fn into_a_namespace_prefix_folders_go_under_it() {
    let source = Dovecot::start_with(SOURCE_CONF);
    let target = Dovecot::start_with(&format!(
        "{INBOX_PREFIXED}namespace inbox {{\n  mailbox Sent {{\n    special_use = \\Sent\n    \
         auto = create\n  }}\n}}\n"
    ));
    // (source folder, target folder on disk: Maildir++ leaves the prefix out)
    let folders = [
        ("INBOX", "INBOX"),
        ("Archive", "Archive"),
        ("Sent Items", "Sent"),
        ("Lists/dev", "Lists/dev"),
    ];
    for (i, (folder, _)) in folders.iter().enumerate() {
        for n in 0..2 + i {
            source.append("alice", folder, &message(folder, n), flags_for(n), None);
        }
    }
    copy_twice(&source, &target, &folders, 2 + 3 + 4 + 5);
    assert_eq!(
        target.imap_folders("bob"),
        [
            "INBOX",
            "INBOX.Archive",
            "INBOX.Lists",
            "INBOX.Lists.dev",
            "INBOX.Sent"
        ]
    );
}

/// Out of a server that keeps every folder under `INBOX.`, the folders land at the top of a
/// target without a prefix (`Archive`, not `INBOX/Archive`), with the target's separator.
#[test]
fn out_of_a_namespace_prefix_folders_land_at_the_top() {
    let source = Dovecot::start_with(INBOX_PREFIXED);
    let target = Dovecot::start();
    // (source folder as the server names it, on disk, target folder on disk)
    let folders = [
        ("INBOX", "INBOX", "INBOX"),
        ("INBOX.Archive", "Archive", "Archive"),
        ("INBOX.Lists.dev", "Lists/dev", "Lists/dev"),
    ];
    for (i, (folder, ..)) in folders.iter().enumerate() {
        let raws: Vec<Vec<u8>> = (0..2 + i).map(|n| message(folder, n)).collect();
        source.append_many("alice", folder, &raws);
    }
    let on_disk: Vec<(&str, &str)> = folders.iter().map(|(_, s, t)| (*s, *t)).collect();
    copy_twice(&source, &target, &on_disk, 2 + 3 + 4);
    assert_eq!(
        target.imap_folders("bob"),
        ["Archive", "INBOX", "Lists", "Lists/dev"]
    );
}

/// An unknown host fails at once with exit 4, one error line naming the server and a hint,
/// and is not retried. `.invalid` names never resolve (RFC 6761) and mailferry answers them
/// itself, so no DNS query leaves the machine.
#[test]
fn an_unknown_host_exits_4_at_once_with_a_hint() {
    let started = std::time::Instant::now();
    let output = mailferry("migrate")
        .args(["--from", "imap://alice@nohost.invalid"])
        .args(["--to", "imaps://bob@127.0.0.1:1/INBOX", "--retries", "5"])
        .env("MAILFERRY_FROM_PASSWORD", "x")
        .env("MAILFERRY_TO_PASSWORD", "y")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "error: imap://alice@nohost.invalid:143: cannot resolve the host name: nohost.invalid does not exist (names under .invalid never do, RFC 6761)",
            "hint: check the host name and port, and that the server is up",
        ]
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "retried: {:?}",
        started.elapsed()
    );
}
