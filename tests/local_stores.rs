//! Backups to local disk and back: an IMAP account copied into a Maildir and into a directory
//! of mbox files, a re-run copying nothing, Dovecot serving the Maildir backup as it is, and
//! each backup restored into a fresh IMAP account with every message byte for byte (and, from
//! the Maildir, with its flags, keywords and internal date).

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use support::{Dovecot, StoredMessage, fixtures, mailferry, normalize_crlf, password};

/// A date each message keeps across the round trip (whole seconds: IMAP has no finer).
fn date(days: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000 + days * 86_400)
}

/// alice's account: the fixtures in INBOX, two flagged messages in Archive/2020.
fn source() -> Dovecot {
    let server = Dovecot::start();
    for (i, (_, raw)) in fixtures().iter().enumerate() {
        server.append("alice", "INBOX", raw, &[], Some(date(i as u64)));
    }
    server.append(
        "alice",
        "Archive/2020",
        b"Message-ID: <old@backup.test>\r\nSubject: old\r\n\r\nkept\r\n",
        &["\\Seen", "\\Flagged", "$Label1"],
        Some(date(100)),
    );
    server.append(
        "alice",
        "Archive/2020",
        b"Subject: no id\r\nFrom: x@backup.test\r\n\r\nalso kept\r\n",
        &["\\Answered"],
        Some(date(101)),
    );
    server
}

/// `mailferry migrate --from FROM --to TO`, which must exit 0; its report.
fn migrate(server: &Dovecot, from: &str, to: &str, dir: &Path) -> Value {
    let report = dir.join("report.json");
    let output = mailferry("migrate")
        .arg("--from")
        .arg(from)
        .arg("--to")
        .arg(to)
        .arg("--tls-ca")
        .arg(server.cert_path())
        .arg("--report")
        .arg(&report)
        .env("MAILFERRY_FROM_PASSWORD", password("alice"))
        .env("MAILFERRY_TO_PASSWORD", password("carol"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
}

fn imaps(server: &Dovecot, user: &str) -> String {
    format!("imaps://{user}@127.0.0.1:{}", server.imaps_port())
}

/// A folder's messages as a user would compare them: bytes (CRLF), flags, date.
fn contents(server: &Dovecot, user: &str, folder: &str) -> Vec<(Vec<u8>, Vec<String>, SystemTime)> {
    let mut messages: Vec<_> = server
        .messages(user, folder)
        .into_iter()
        .map(
            |StoredMessage {
                 raw,
                 mut flags,
                 internal_date,
             }| {
                flags.sort();
                (normalize_crlf(&raw), flags, internal_date)
            },
        )
        .collect();
    messages.sort();
    messages
}

#[test]
fn an_account_backed_up_to_a_maildir_is_served_by_dovecot_and_restored_whole() {
    let server = source();
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("alice-backup");
    let url = format!("maildir://{}", backup.display());
    let messages = fixtures().len() + 2;
    let first = migrate(&server, &imaps(&server, "alice"), &url, dir.path());
    assert_eq!(first["copied"], messages);
    assert_eq!(first["verified"], true);
    let again = migrate(&server, &imaps(&server, "alice"), &url, dir.path());
    assert_eq!(again["copied"], 0);

    // Dovecot serves the backup as it is: it becomes bob's Maildir.
    let bob = server.maildir_path("bob", "INBOX");
    let _ = std::fs::remove_dir_all(&bob);
    std::fs::create_dir_all(bob.parent().unwrap()).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&backup)
        .arg(&bob)
        .status()
        .unwrap();
    assert!(copied.success());
    let chowned = std::process::Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&bob)
        .status()
        .unwrap();
    assert!(chowned.success());
    assert_eq!(server.imap_folders("bob"), server.imap_folders("alice"));
    for folder in ["INBOX", "Archive/2020"] {
        assert_eq!(
            contents(&server, "bob", folder),
            contents(&server, "alice", folder)
        );
    }

    // Restored from the Maildir into carol's account: the same messages, flags and dates.
    let restored = migrate(&server, &url, &imaps(&server, "carol"), dir.path());
    assert_eq!(restored["copied"], messages);
    for folder in ["INBOX", "Archive/2020"] {
        assert_eq!(
            contents(&server, "carol", folder),
            contents(&server, "alice", folder)
        );
    }
}

#[test]
fn an_account_backed_up_to_mbox_files_is_restored_byte_for_byte_with_its_dates() {
    let server = source();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mbox://{}/mbox/", dir.path().display());
    let messages = fixtures().len() + 2;
    let first = migrate(&server, &imaps(&server, "alice"), &url, dir.path());
    assert_eq!(first["copied"], messages);
    assert_eq!(first["verified"], true);
    assert!(dir.path().join("mbox/INBOX").is_file());
    assert!(dir.path().join("mbox/Archive.2020").is_file());
    let again = migrate(&server, &imaps(&server, "alice"), &url, dir.path());
    assert_eq!(again["copied"], 0);

    let restored = migrate(&server, &url, &imaps(&server, "carol"), dir.path());
    assert_eq!(restored["copied"], messages);
    // mbox keeps no flags: bytes and dates only.
    let without_flags = |user| {
        let mut all = Vec::new();
        for folder in ["INBOX", "Archive/2020"] {
            all.extend(
                contents(&server, user, folder)
                    .into_iter()
                    .map(|(raw, _, date)| (folder, raw, date)),
            );
        }
        all
    };
    // mbox cannot keep the absence of a final line end: such a message gains one.
    let mut original = without_flags("alice");
    for (_, raw, _) in &mut original {
        if !raw.ends_with(b"\n") {
            raw.extend_from_slice(b"\r\n");
        }
    }
    let mut restored = without_flags("carol");
    restored.sort();
    original.sort();
    assert_eq!(restored, original);
}

#[test]
fn a_mirror_from_a_maildir_deletes_the_copy_of_a_message_whose_file_left() {
    let server = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    for id in ["stays", "leaves"] {
        std::fs::write(
            maildir.join(format!("cur/{id}.M1P1.host:2,S")),
            format!("Message-ID: <{id}@backup.test>\r\nSubject: {id}\r\n\r\nbody\r\n"),
        )
        .unwrap();
    }
    let mirror = || {
        let report = dir.path().join("report.json");
        let output = mailferry("mirror")
            .arg("--from")
            .arg(format!("maildir://{}", maildir.display()))
            .arg("--to")
            .arg(imaps(&server, "carol"))
            .arg("--tls-ca")
            .arg(server.cert_path())
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--report")
            .arg(&report)
            .arg("--delete")
            .env("MAILFERRY_TO_PASSWORD", password("carol"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        serde_json::from_slice::<Value>(&std::fs::read(report).unwrap()).unwrap()
    };
    assert_eq!(mirror()["copied"], 2);
    let carol = server.messages("carol", "INBOX");
    assert_eq!(carol.len(), 2);
    assert!(carol.iter().all(|m| m.flags == ["\\Seen"]));
    std::fs::remove_file(maildir.join("cur/leaves.M1P1.host:2,S")).unwrap();
    let report = mirror();
    assert_eq!(report["deleted"], 1, "{report}");
    let left = server.messages("carol", "INBOX");
    assert_eq!(left.len(), 1);
    assert!(String::from_utf8_lossy(&left[0].raw).contains("<stays@backup.test>"));
}

#[test]
fn a_mirror_into_a_maildir_says_it_cannot_apply_a_flag_change() {
    let server = Dovecot::start();
    server.append(
        "alice",
        "INBOX",
        b"Message-ID: <f@backup.test>\r\nSubject: f\r\n\r\nbody\r\n",
        &[],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mirror = || {
        let output = mailferry("mirror")
            .arg("--from")
            .arg(imaps(&server, "alice"))
            .arg("--to")
            .arg(format!("maildir://{}/backup", dir.path().display()))
            .arg("--tls-ca")
            .arg(server.cert_path())
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--report")
            .arg(&report)
            .env("MAILFERRY_FROM_PASSWORD", password("alice"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        serde_json::from_slice::<Value>(&std::fs::read(&report).unwrap()).unwrap()
    };
    assert_eq!(mirror()["copied"], 1);
    let flagged = std::process::Command::new("doveadm")
        .arg("-c")
        .arg(server.conf_path())
        .args([
            "flags",
            "add",
            "-u",
            "alice",
            "\\Flagged",
            "mailbox",
            "INBOX",
            "ALL",
        ])
        .status()
        .unwrap();
    assert!(flagged.success());
    let report = mirror();
    assert_eq!(report["flags_updated"], 0);
    assert!(
        report["warnings"]
            .to_string()
            .contains("1 flag change(s) on the source not applied"),
        "{report}"
    );
}
