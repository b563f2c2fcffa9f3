//! Provider presets and message size limits, against a real Dovecot: APPENDLIMIT (RFC 7889)
//! and `--max-message-size` keep oversized messages from being sent, Gmail's label views are
//! skipped, and preset folder names stand in for missing special-use attributes.

mod support;

use serde_json::Value;
use support::{Accounts, Dovecot, mailferry};

/// Dovecot 2.3 refuses messages over 100 KiB (`NO [LIMIT]`) through its quota plugin; with
/// `advertise` it also says so in its capabilities, as APPENDLIMIT (which 2.3 never does by
/// itself).
fn limited_server(advertise: bool) -> Dovecot {
    let mut conf = String::from(
        "mail_plugins = quota\nplugin {\n  quota = count:User quota\n  quota_rule = *:storage=1G\n  quota_vsizes = yes\n  quota_max_mail_size = 100k\n}\n",
    );
    if advertise {
        conf.push_str("imap_capability = +APPENDLIMIT=102400\n");
    }
    Dovecot::start_with(&conf)
}

fn message(id: &str) -> Vec<u8> {
    format!("Message-ID: <{id}@presets.test>\r\nSubject: {id}\r\n\r\nbody\r\n").into_bytes()
}

/// Copies `from`'s IMAP account into `to`'s on the same server.
fn migrate(server: &Dovecot, from: &str, to: &str, extra: &[&str]) -> (i32, Value, String) {
    migrate_between(server, from, server, to, extra)
}

/// Copies `from`'s IMAP account into `to`'s; returns the exit code, the report and stderr.
fn migrate_between(
    source: &Dovecot,
    from: &str,
    target: &Dovecot,
    to: &str,
    extra: &[&str],
) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = mailferry("migrate")
        .source_account("imaps", from, source.imaps_port())
        .target_account("imaps", to, target.imaps_port(), "")
        // Both test servers' certificates, in one file.
        .arg("--tls-ca")
        .arg(certificates(&dir, &[source, target]))
        .arg("--report")
        .arg(&report)
        .args(extra)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (
        output.status.code().unwrap(),
        report,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn certificates(dir: &tempfile::TempDir, servers: &[&Dovecot]) -> std::path::PathBuf {
    let path = dir.path().join("certificates.pem");
    let pem: Vec<u8> = servers
        .iter()
        .flat_map(|server| std::fs::read(server.cert_path()).unwrap())
        .collect();
    std::fs::write(&path, pem).unwrap();
    path
}

/// The reasons of the report's failed messages.
fn reasons(report: &Value) -> Vec<String> {
    report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn oversized_messages_fail_alone_and_are_not_sent_when_the_limit_is_known() {
    let source = Dovecot::start();
    for raw in [
        message("small-1"),
        support::big_message(200_000, 7),
        message("small-2"),
    ] {
        source.append("alice", "INBOX", &raw, &[], None);
    }
    let advertised = limited_server(true);

    let (code, report, stderr) = migrate_between(&source, "alice", &advertised, "bob", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        (report["copied"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(advertised.messages("bob", "INBOX").len(), 2);
    let why = reasons(&report);
    assert!(
        why.iter()
            .any(|r| r.contains("the target's APPENDLIMIT") && r.contains("not sent")),
        "{why:?}"
    );
    // Never sent: Dovecot saw no APPEND of it, so it logged no refusal either.
    assert!(!advertised.log().contains("larger than the maximum"));

    // The user's own limit, when tighter, is the one named.
    let (code, report, stderr) = migrate_between(
        &source,
        "alice",
        &advertised,
        "carol",
        &["--max-message-size", "50K"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        reasons(&report)
            .iter()
            .any(|r| r.contains("--max-message-size")),
        "{report:#}"
    );
    assert_eq!(advertised.messages("carol", "INBOX").len(), 2);

    // A server that does not advertise its limit refuses the message with NO [LIMIT]: that
    // message fails with the server's reason, the others are copied, nothing is retried.
    let silent = limited_server(false);
    let (code, report, stderr) = migrate_between(&source, "alice", &silent, "bob", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        (report["copied"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        reasons(&report).iter().any(|r| r.contains("[LIMIT]")),
        "{report:#}"
    );
}

#[test]
fn gmail_label_views_add_only_archived_mail_and_preset_names_map_the_roles() {
    let server = Dovecot::start();
    let deliver = |folder: &str, ids: &[&str]| {
        for id in ids {
            server.deliver("alice", folder, &message(id));
        }
    };
    // Gmail shows each message in INBOX or under its labels, and again in the views; "e" is
    // archived: in All Mail only.
    deliver("INBOX", &["a"]);
    deliver("Work", &["b"]);
    deliver("[Gmail]/Sent Mail", &["c"]);
    deliver("[Gmail]/Drafts", &["d"]);
    deliver("[Gmail]/All Mail", &["a", "b", "c", "d", "e"]);
    deliver("[Gmail]/Starred", &["b"]);
    deliver("[Gmail]/Important", &["a", "e"]);

    let (code, report, stderr) = migrate(
        &server,
        "alice",
        "bob",
        &["--from-preset", "gmail", "--to-preset", "office365"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["copied"], 5, "{report:#}");
    let expected = [
        ("INBOX", "a"),
        ("Archive", "e"),
        ("Drafts", "d"),
        ("Sent Items", "c"),
        ("Work", "b"),
    ];
    assert_eq!(server.folders("bob"), expected.map(|(folder, _)| folder));
    for (folder, id) in expected {
        let held = server.messages("bob", folder);
        assert_eq!(held.len(), 1, "{folder}");
        assert!(held[0].raw.starts_with(&message(id)[..20]), "{folder}");
    }

    // And back: Office 365's names on the source, Gmail's on the target, where archived
    // mail goes into All Mail.
    let (code, _, stderr) = migrate(
        &server,
        "bob",
        "carol",
        &["--from-preset", "office365", "--to-preset", "gmail"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        server.folders("carol"),
        [
            "INBOX",
            "Work",
            "[Gmail]/All Mail",
            "[Gmail]/Drafts",
            "[Gmail]/Sent Mail"
        ]
    );
}

/// The presets' documented size limits: Gmail takes up to 25 MiB, Office 365 up to 35 MiB; a
/// bigger message is listed failed with the preset named, and never sent.
#[test]
fn preset_size_limits_fail_bigger_messages_unsent() {
    let source = Dovecot::start();
    let (over_gmail, over_office) = (26 << 20, 36 << 20);
    for raw in [
        message("small"),
        support::big_message(over_gmail, 26),
        support::big_message(over_office, 36),
    ] {
        source.append("alice", "INBOX", &raw, &[], None);
    }
    let target = Dovecot::start();
    // Each unsent message is listed with its reason (and again by the verification, as not
    // found on the target).
    let failed_sizes = |report: &Value, preset: &str, limit: u64| {
        let unsent: Vec<String> = reasons(report)
            .into_iter()
            .filter(|r| r.contains("not sent"))
            .collect();
        let named = format!("larger than the {limit} bytes --to-preset {preset} allows; not sent");
        assert!(unsent.iter().all(|r| r.contains(&named)), "{unsent:?}");
        assert_eq!(report["failed"], unsent.len(), "{report:#}");
        unsent.len()
    };

    let (code, report, stderr) =
        migrate_between(&source, "alice", &target, "bob", &["--to-preset", "gmail"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(failed_sizes(&report, "gmail", 25 << 20), 2, "{report:#}");
    assert_eq!(report["copied"], 1, "{report:#}");

    let (code, report, stderr) = migrate_between(
        &source,
        "alice",
        &target,
        "carol",
        &["--to-preset", "office365"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        failed_sizes(&report, "office365", 35 << 20),
        1,
        "{report:#}"
    );
    assert_eq!(report["copied"], 2, "{report:#}");
    assert_eq!(target.messages("carol", "INBOX").len(), 2);
}
