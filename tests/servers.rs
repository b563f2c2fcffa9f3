//! The promise on servers other than Dovecot: GNU Mailutils imap4d/pop3d (mbox and maildir) as
//! target and as source, and a Dovecot behind a relay that rewrites what it serves (bare LF,
//! re-folded headers, added fields). Every case runs twice, end to end through the binary, and
//! checks what a user would: each source message exactly once on the target, byte for byte up
//! to what the server is known to change, and a second run that copies nothing. What a server
//! refuses (a folder an mbox cannot hold) is named, with exit 1, and the rest is copied.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;
use support::mailutils::{MailboxType, Mailutils, without_status_headers};
use support::quirks::Quirks;
use support::relay::Relay;
use support::{Dovecot, normalize_crlf, password};

/// A run's exit code, its JSON report and its stderr.
struct Run {
    code: i32,
    report: Value,
    stderr: String,
}

/// Runs `mailferry migrate --from FROM --to TO` with the passwords of the URLs' users, TLS
/// trust in `ca` (every server's certificate; none when empty), and plaintext allowed (the
/// quirk relay only rewrites plaintext).
fn migrate(from: &str, to: &str, from_user: &str, to_user: &str, ca: &[u8]) -> Run {
    run(&["migrate"], from, to, from_user, to_user, ca)
}

/// [`migrate`] with another command before the URLs (`mirror --state DIR`).
fn run(command: &[&str], from: &str, to: &str, from_user: &str, to_user: &str, ca: &[u8]) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let (ca_path, report_path) = (tmp.path().join("ca.pem"), tmp.path().join("report.json"));
    let mut cmd = Command::cargo_bin("mailferry").unwrap();
    cmd.args(command)
        .args(["--from", from, "--to", to, "--allow-plaintext"]);
    if !ca.is_empty() {
        std::fs::write(&ca_path, ca).unwrap();
        cmd.arg("--tls-ca").arg(&ca_path);
    }
    let output = cmd
        .args(["--timeout", "30", "--connections", "3"])
        .arg("--report")
        .arg(&report_path)
        .env("MAILFERRY_FROM_PASSWORD", password(from_user))
        .env("MAILFERRY_TO_PASSWORD", password(to_user))
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = std::fs::read(&report_path)
        .map(|bytes| serde_json::from_slice(&bytes).unwrap())
        .unwrap_or_else(|e| panic!("no report ({e}); stderr:\n{stderr}"));
    Run {
        code: output.status.code().unwrap_or(-1),
        report,
        stderr,
    }
}

/// The awkward fixtures, a message without Message-ID whose Subject a server folds, and a few
/// ordinary ones; each with the flags it gets on an IMAP source.
fn corpus() -> Vec<(Vec<u8>, &'static [&'static str])> {
    let mut messages: Vec<(Vec<u8>, &'static [&'static str])> = support::fixtures()
        .into_iter()
        .map(|(_, raw)| (raw, &["\\Seen"][..]))
        .collect();
    let long_subject = format!(
        "From: cron@example.org\r\nTo: ops@example.org\r\nDate: Tue, 2 Jan 2024 03:00:00 +0000\r\n\
         Subject: {}\r\n\r\nnightly report\r\n",
        "backup of /srv/data finished with warnings ".repeat(4)
    );
    messages.push((long_subject.into_bytes(), &["\\Answered", "$Label1"]));
    for n in 0..6 {
        let raw = format!(
            "From: Sender {n} <s{n}@example.org>\r\nTo: alice@example.net\r\n\
             Subject: message {n}\r\nDate: Mon, {} Mar 2010 10:00:00 +0000\r\n\
             Message-ID: <{n}.servers@example.org>\r\n\r\nBody {n}\r\n",
            n + 1
        );
        messages.push((raw.into_bytes(), &["\\Flagged"]));
    }
    messages
}

/// A message as compared across servers, as text with 8-bit bytes escaped: CRLF line ends (NUL as Dovecot serves it), without
/// the fields Mailutils adds, without the line end a server adds to a last line, and with a
/// field whose value starts on the next line written `Name:` (Mailutils stores `Name: `).
fn comparable(raw: &[u8]) -> String {
    let mut out = without_status_headers(&normalize_crlf(raw));
    while out.ends_with(b"\r\n") {
        out.truncate(out.len() - 2);
    }
    out.escape_ascii()
        .to_string()
        .replace(": \\r\\n ", ":\\r\\n ")
}

/// The folder's messages as comparable text, sorted: equal lists mean each message once, and
/// a failed comparison shows which.
fn sorted(raws: impl IntoIterator<Item = Vec<u8>>) -> Vec<String> {
    let mut all: Vec<String> = raws.into_iter().map(|raw| comparable(&raw)).collect();
    all.sort();
    all
}

/// How many messages of each identity `raws` hold.
fn identities(raws: impl IntoIterator<Item = Vec<u8>>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for raw in raws {
        *counts
            .entry(mailferry::identity::identify(&raw).to_string())
            .or_default() += 1;
    }
    counts
}

fn certificates(paths: &[std::path::PathBuf]) -> Vec<u8> {
    paths
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {report}"))
}

/// An IMAP account on Dovecot copied into Mailutils: on mbox, `Archive` holds mail, so
/// `Archive/2019` cannot be created (an mbox folder holds mail or folders): that folder fails
/// with the server's words and exit 1, everything else is copied once; a second run copies
/// nothing. Maildir takes every folder.
fn dovecot_imap_into_mailutils(kind: MailboxType) {
    let source = Dovecot::start();
    let target = Mailutils::start(kind);
    let folders = ["INBOX", "Archive", "Archive/2019", "Sent"];
    let messages = corpus();
    for (i, folder) in folders.iter().enumerate() {
        for (raw, flags) in messages
            .iter()
            .skip(i * 3)
            .take(if i == 0 { 100 } else { 3 })
        {
            source.append("alice", folder, raw, flags, None);
        }
    }
    let ca = certificates(&[source.cert_path(), target.cert_path()]);
    let from = format!("imaps://alice@127.0.0.1:{}", source.imaps_port());
    let to = format!("imap://alice@127.0.0.1:{}", target.imap_port());
    let refused = kind == MailboxType::Mbox;
    for run in 0..2 {
        let done = migrate(&from, &to, "alice", "alice", &ca);
        assert_eq!(done.code, if refused { 1 } else { 0 }, "{}", done.stderr);
        if run == 1 {
            assert_eq!(count(&done.report, "copied"), 0, "{}", done.report);
        }
        assert_eq!(count(&done.report, "failed"), 0, "{}", done.stderr);
        if run == 0 {
            said_what_the_server_changed(&done, kind);
        }
        let failed_folders: Vec<&Value> = done.report["folders"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f.get("error").is_some())
            .collect();
        if refused {
            assert_eq!(failed_folders.len(), 1, "{}", done.report);
            assert_eq!(failed_folders[0]["source_folder"], "Archive/2019");
            assert!(
                done.stderr.contains("Archive/2019") && done.stderr.contains("Cannot create"),
                "the failed folder and the server's words: {}",
                done.stderr
            );
        } else {
            assert!(failed_folders.is_empty(), "{}", done.report);
        }
    }
    for folder in folders {
        let copies = target.messages("alice", folder);
        if refused && folder == "Archive/2019" {
            assert!(copies.is_empty());
            continue;
        }
        let originals = source.messages("alice", folder);
        assert_eq!(
            sorted(copies.into_iter().map(|m| m.raw)),
            sorted(originals.into_iter().map(|m| m.raw)),
            "{folder}: each source message once, byte for byte"
        );
    }
}

/// Mailutils maildir stores an APPEND without its flags and with its own date: the first run
/// says so, once per folder copied into, in the report and on stderr; mbox keeps the flags.
fn said_what_the_server_changed(done: &Run, kind: MailboxType) {
    let warnings: Vec<&str> = done.report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let about = |what: &str| -> Vec<&str> {
        let said: Vec<&str> = warnings
            .iter()
            .copied()
            .filter(|w| w.contains(what))
            .collect();
        for warning in &said {
            assert!(
                done.stderr.contains(warning),
                "{warning} in {}",
                done.stderr
            );
        }
        said
    };
    let (flags, dates) = (about("without flags sent"), about("another date"));
    if kind == MailboxType::Mbox {
        assert_eq!(flags, Vec::<&str>::new());
        return;
    }
    for said in [&flags, &dates] {
        assert_eq!(said.len(), 4, "{warnings:#?}");
        for folder in ["INBOX ", "Archive ", "Sent ", "2019 "] {
            assert!(
                said.iter().any(|w| w.contains(folder)),
                "{folder}: {said:#?}"
            );
        }
    }
}

#[test]
fn dovecot_imap_into_mailutils_mbox() {
    dovecot_imap_into_mailutils(MailboxType::Mbox);
}

#[test]
fn dovecot_imap_into_mailutils_maildir() {
    dovecot_imap_into_mailutils(MailboxType::Maildir);
}

/// A Mailutils account read over POP3 and over IMAP, each into its own Dovecot account: every
/// message once (Mailutils adds status fields to what it serves, which the copy keeps), and a
/// second run copies nothing.
fn mailutils_into_dovecot(kind: MailboxType) {
    let source = Mailutils::start(kind);
    let target = Dovecot::start();
    for (raw, _) in corpus() {
        source.append(
            "alice",
            "INBOX",
            &raw,
            &[],
            Some("05-Mar-2019 06:52:37 +0000"),
        );
    }
    let ca = certificates(&[source.cert_path(), target.cert_path()]);
    let to_bob = format!("imaps://bob@127.0.0.1:{}", target.imaps_port());
    let to_carol = format!("imaps://carol@127.0.0.1:{}", target.imaps_port());
    let pop3 = format!("pop3://alice@127.0.0.1:{}", source.pop3_port());
    let imap = format!("imap://alice@127.0.0.1:{}/INBOX", source.imap_port());
    for (from, to, user) in [(&pop3, &to_bob, "bob"), (&imap, &to_carol, "carol")] {
        for run in 0..2 {
            let done = migrate(from, to, "alice", user, &ca);
            assert_eq!(done.code, 0, "{from} run {run}: {}", done.stderr);
            if run == 1 {
                assert_eq!(count(&done.report, "copied"), 0, "{from}: {}", done.report);
            }
        }
        let served: Vec<Vec<u8>> = source
            .messages("alice", "INBOX")
            .into_iter()
            .map(|m| m.raw)
            .collect();
        let copies: Vec<Vec<u8>> = target
            .messages(user, "INBOX")
            .into_iter()
            .map(|m| m.raw)
            .collect();
        assert_eq!(
            sorted(copies),
            sorted(served),
            "{from}: each message once, as the source holds it"
        );
    }
}

#[test]
fn mailutils_mbox_pop3_and_imap_into_dovecot() {
    mailutils_into_dovecot(MailboxType::Mbox);
}

#[test]
fn mailutils_maildir_pop3_and_imap_into_dovecot() {
    mailutils_into_dovecot(MailboxType::Maildir);
}

/// A target that serves bare LF, re-folds long header lines and adds fields to what it stored
/// still recognises every copy: the second run copies nothing, and the target holds each
/// message once. Likewise a source serving its messages with bare LF.
#[test]
fn servers_that_rewrite_what_they_serve_get_no_duplicates() {
    let every_quirk = Quirks {
        bare_lf: true,
        refold_headers: true,
        added_fields: true,
    };
    let source = Dovecot::start_custom("", false, &[]);
    let target = Dovecot::start_custom("", false, &[]);
    let messages = corpus();
    for (raw, flags) in &messages {
        source.append("alice", "INBOX", raw, flags, None);
    }
    let expected = identities(messages.iter().map(|(raw, _)| raw.clone()));

    let quirky_target = Relay::start(target.imap_port());
    quirky_target.set_quirks(every_quirk);
    // Only line ends from the source: one serving re-folded or added header lines under the
    // size it announced sends a wrong read, which fails the message (see `mailutils_pop3.rs`).
    let quirky_source = Relay::start(source.imap_port());
    quirky_source.set_quirks(Quirks {
        bare_lf: true,
        ..Quirks::default()
    });
    let cases = [
        (
            "quirky target",
            source.imap_port(),
            quirky_target.port(),
            "bob",
        ),
        (
            "quirky source",
            quirky_source.port(),
            target.imap_port(),
            "carol",
        ),
    ];
    for (case, from_port, to_port, user) in cases {
        let from = format!("imap://alice@127.0.0.1:{from_port}/INBOX");
        let to = format!("imap://{user}@127.0.0.1:{to_port}");
        for run in 0..2 {
            let done = migrate(&from, &to, "alice", user, b"");
            assert_eq!(done.code, 0, "{case}, run {run}: {}", done.stderr);
            let copied = if run == 0 { messages.len() as u64 } else { 0 };
            assert_eq!(count(&done.report, "copied"), copied, "{}", done.report);
        }
        let stored = target.messages(user, "INBOX");
        assert_eq!(
            identities(stored.iter().map(|m| m.raw.clone())),
            expected,
            "{case}"
        );
    }
}

/// A Mailutils maildir gives the last message of each folder a new UID at every EXAMINE, so
/// the UIDs an index saw on one connection are not all there on the next, and a `UID FETCH` of
/// such a UID alone is refused (BAD): every folder is still copied whole, without false
/// "deleted from the source" failures. Run 0 copies all, run 1 only a message added to each
/// folder since (the last one, fetched alone), run 2 nothing. Then `mirror --delete` into
/// another account, three times: its index is older than the fetch's EXAMINE, whose whole
/// `UID FETCH` set the server refuses; nothing is deleted, and later runs copy nothing.
#[test]
fn a_source_whose_uids_change_between_sessions_is_copied_whole() {
    let source = Mailutils::start(MailboxType::Maildir);
    let target = Dovecot::start();
    let folders = ["INBOX", "Archive", "Sent", "Drafts"];
    let messages = corpus();
    let date = Some("05-Mar-2019 06:52:37 +0000");
    for (i, folder) in folders.iter().enumerate() {
        for (raw, _) in messages.iter().skip(i * 2).take(4) {
            source.append("alice", folder, raw, &[], date);
        }
    }
    let ca = certificates(&[source.cert_path(), target.cert_path()]);
    let from = format!("imap://alice@127.0.0.1:{}", source.imap_port());
    let to = format!("imaps://bob@127.0.0.1:{}", target.imaps_port());
    for (run, copied) in [4, 1, 0].into_iter().enumerate() {
        let done = migrate(&from, &to, "alice", "bob", &ca);
        assert_eq!(done.code, 0, "run {run}: {}", done.stderr);
        assert_eq!(
            count(&done.report, "failed"),
            0,
            "run {run}: {}",
            done.report
        );
        let copied = copied * folders.len() as u64;
        assert_eq!(
            count(&done.report, "copied"),
            copied,
            "run {run}: {}",
            done.report
        );
        if run == 0 {
            for (i, folder) in folders.iter().enumerate() {
                source.append("alice", folder, &messages[i + 12].0, &[], date);
            }
        }
    }
    for folder in folders {
        let served = source.messages("alice", folder).into_iter().map(|m| m.raw);
        let copies = target.messages("bob", folder).into_iter().map(|m| m.raw);
        assert_eq!(
            sorted(copies),
            sorted(served),
            "{folder}: each message once"
        );
    }
    // A mirror with --delete takes no UID that changed for a message that left the source.
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let to_carol = format!("imaps://carol@127.0.0.1:{}", target.imaps_port());
    for run_number in 0..3 {
        let mirror = ["mirror", "--delete", "--state", state];
        let done = run(&mirror, &from, &to_carol, "alice", "carol", &ca);
        assert_eq!(done.code, 0, "mirror run {run_number}: {}", done.stderr);
        assert_eq!(count(&done.report, "deleted"), 0, "{}", done.report);
        if run_number > 0 {
            assert_eq!(count(&done.report, "copied"), 0, "{}", done.report);
        }
    }
    for folder in folders {
        let served = source.messages("alice", folder).into_iter().map(|m| m.raw);
        let copies = target.messages("carol", folder).into_iter().map(|m| m.raw);
        assert_eq!(
            sorted(copies),
            sorted(served),
            "mirror, {folder}: each message once"
        );
    }
}

/// A POP3 message with neither `Date:`, `Received:` nor `From:` has no date the source can
/// give: it is APPENDed dated now (GNU Mailutils mbox refuses an APPEND without a date-time
/// for a message without `From:`, `NO [TRYCREATE]`), and a second run copies nothing.
#[test]
fn a_message_without_any_date_is_stored_dated_now() {
    let source = Dovecot::start();
    let target = Mailutils::start(MailboxType::Mbox);
    let undated = b"Message-ID: <undated@servers.test>\r\nSubject: no date\r\n\r\nbody\r\n";
    source.deliver("alice", "INBOX", undated);
    let ca = certificates(&[source.cert_path(), target.cert_path()]);
    let from = format!("pop3s://alice@127.0.0.1:{}", source.pop3s_port());
    let to = format!("imap://alice@127.0.0.1:{}", target.imap_port());
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    for (run, copied) in [1, 0].into_iter().enumerate() {
        let done = migrate(&from, &to, "alice", "alice", &ca);
        assert_eq!(done.code, 0, "run {run}: {}", done.stderr);
        assert_eq!(count(&done.report, "copied"), copied, "{}", done.report);
    }
    let stored = target.messages("alice", "INBOX");
    assert_eq!(stored.len(), 1);
    let date =
        chrono::DateTime::parse_from_str(&stored[0].internal_date, "%d-%b-%Y %H:%M:%S %z").unwrap();
    assert!(
        date >= before,
        "dated {date}, the run started after {before}"
    );
}

/// A keyword the source stores but IMAP cannot write (`]` is no atom character) is dropped
/// with one warning, and the message is copied; a second run copies nothing.
#[test]
fn a_keyword_imap_cannot_write_is_dropped_with_a_warning() {
    let source = Dovecot::start_custom("", false, &[]);
    let target = Dovecot::start_custom("", false, &[]);
    let raw = b"Message-ID: <odd-keyword@servers.test>\r\nSubject: odd\r\n\r\nbody\r\n";
    // Dovecot refuses such a keyword over IMAP but reads it from its maildir's keyword file.
    source.append("alice", "INBOX", raw, &["\\Seen", "oddX"], None);
    let keywords = source
        .maildir_path("alice", "INBOX")
        .join("dovecot-keywords");
    let listed = std::fs::read_to_string(&keywords).unwrap();
    std::fs::write(&keywords, listed.replace("oddX", "odd]")).unwrap();
    assert!(
        source.messages("alice", "INBOX")[0]
            .flags
            .iter()
            .any(|f| f == "odd]"),
        "the source keeps the keyword"
    );
    let from = format!("imap://alice@127.0.0.1:{}/INBOX", source.imap_port());
    let to = format!("imap://bob@127.0.0.1:{}", target.imap_port());
    for (run, copied) in [1, 0].into_iter().enumerate() {
        let done = migrate(&from, &to, "alice", "bob", b"");
        assert_eq!(done.code, 0, "run {run}: {}", done.stderr);
        assert_eq!(count(&done.report, "copied"), copied, "{}", done.report);
        if run == 0 {
            let warnings = done.report["warnings"].as_array().unwrap();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].as_str().unwrap().contains("keyword odd]"));
        }
    }
    assert_eq!(target.messages("bob", "INBOX")[0].flags, ["\\Seen"]);
}
