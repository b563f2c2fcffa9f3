//! `mailferry migrate` from a real GNU Mailutils pop3d (mbox, `support::mailutils`) into a
//! Dovecot: a server whose `RETR n` after `TOP n 0` in one session sends the header only, once
//! the maildrop has had a POP3 session (see /work/shared/research/servers.md). Every copy
//! must still arrive whole, or not at all.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;
use support::mailutils::{MailboxType, Mailutils, without_status_headers};
use support::{Dovecot, normalize_crlf, password};

/// `mailferry migrate` from alice's POP3S maildrop on `from` to bob's IMAPS INBOX on `to`,
/// trusting both servers' certificates (`ca` holds them), writing its report to `report`.
fn migrate(from: &Mailutils, to: &Dovecot, ca: &Path, report: &Path) -> std::process::Output {
    Command::cargo_bin("mailferry")
        .unwrap()
        .arg("migrate")
        .arg("--from")
        .arg(format!("pop3s://alice@127.0.0.1:{}", from.pop3s_port()))
        .arg("--to")
        .arg(format!("imaps://bob@127.0.0.1:{}", to.imaps_port()))
        .arg("--tls-ca")
        .arg(ca)
        .args(["--timeout", "30", "--report"])
        .arg(report)
        .env("MAILFERRY_FROM_PASSWORD", password("alice"))
        .env("MAILFERRY_TO_PASSWORD", password("bob"))
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap()
}

/// A plain-text letter of about 12 KB, number `n`; with `from_lines`, some of its body lines
/// start with "From ".
fn letter(n: u32, from_lines: bool) -> Vec<u8> {
    let mut raw = format!(
        "From: Dan <dan@example.org>\r\nTo: Alice <alice@example.org>\r\n\
         Subject: Letter {n}\r\nDate: Mon, 02 Mar 2020 10:00:0{n} +0000\r\n\
         Message-ID: <letter-{n}@mailferry.test>\r\n\r\n"
    );
    for paragraph in 0..40 {
        if from_lines && paragraph % 10 == 5 {
            raw.push_str("From what I hear, the plan is still on.\r\n");
        }
        raw.push_str(&format!(
            "Paragraph {paragraph} of letter {n}: the quick brown fox jumps over the lazy dog,\r\n\
             and again, and again, until the line is long enough to fill some bytes.\r\n\
             Nothing here is special; it only makes the body much longer than the header.\r\n\r\n"
        ));
    }
    raw.into_bytes()
}

fn read_report(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_maildrop_that_truncates_retr_after_top_is_copied_whole() {
    let source = Mailutils::start(MailboxType::Mbox);
    // pop3d truncates the messages whose body has a line starting "From " (quoted `>From` in
    // the mbox); the others come whole.
    let sent: Vec<Vec<u8>> = (0..6).map(|n| letter(n, n % 2 == 0)).collect();
    for raw in &sent {
        source.deliver("alice", raw);
    }
    // The session that makes pop3d truncate later ones: it writes X-UIDL into every message.
    assert_eq!(source.pop3_uidls("alice").len(), sent.len());
    let target = Dovecot::start();
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    let mut pems = std::fs::read(source.cert_path()).unwrap();
    pems.extend(std::fs::read(target.cert_path()).unwrap());
    std::fs::write(&ca, pems).unwrap();
    let report_path = tmp.path().join("report.json");

    let first = migrate(&source, &target, &ca, &report_path);
    let output = String::from_utf8_lossy(&first.stderr);
    let report = read_report(&report_path);
    assert_eq!(first.status.code(), Some(0), "{output}\n{report:#}");
    assert_eq!(report["copied"], sent.len());
    assert_eq!(report["failed"], 0);
    assert_eq!(report["verified"], true);

    // Each message once, whole: what was delivered, less the fields Mailutils adds.
    let mut want: HashMap<Vec<u8>, usize> = HashMap::new();
    for raw in &sent {
        *want.entry(normalize_crlf(raw)).or_default() += 1;
    }
    let mut got: HashMap<Vec<u8>, usize> = HashMap::new();
    for copy in target.messages("bob", "INBOX") {
        *got.entry(without_status_headers(&normalize_crlf(&copy.raw)))
            .or_default() += 1;
    }
    let sizes = |copies: &HashMap<Vec<u8>, usize>| {
        let mut sizes: Vec<usize> = copies.keys().map(Vec::len).collect();
        sizes.sort_unstable();
        sizes
    };
    assert!(
        got == want,
        "the copies are not the messages delivered: sizes {:?}, sent {:?}",
        sizes(&got),
        sizes(&want)
    );

    let again = migrate(&source, &target, &ca, &report_path);
    let report = read_report(&report_path);
    assert_eq!(again.status.code(), Some(0), "{report:#}");
    assert_eq!(report["copied"], 0);
    assert_eq!(report["verified"], true);
}
