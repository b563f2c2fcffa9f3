//! A server that ends the session in the middle of a copy (an untagged BYE, as servers do when
//! they shed load): the upload waits the throttle schedule's first wait, logs in again,
//! re-indexes and sends only the rest.
//! Dovecot's `doveadm kick` gives the BYE. Refusals that ask to slow down (`[THROTTLED]`,
//! `[UNAVAILABLE]`) take the same path; Dovecot has no way to send them, so their
//! classification and back-off are unit tests (`imap::response`, `transfer`).

mod support;

use std::time::{Duration, Instant};

use support::{Accounts, Dovecot, mailferry_process};

#[test]
fn a_bye_mid_copy_is_survived_without_duplicates() {
    const MESSAGES: usize = 120;
    let server = Dovecot::start();
    let raws: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|i| support::big_message(100_000, i as u64))
        .collect();
    server.append_many("alice", "INBOX", &raws);

    let mut child = mailferry_process("migrate")
        .source_account("imaps", "alice", server.imaps_port())
        .target_account("imaps", "bob", server.imaps_port(), "")
        .arg("--tls-ca")
        .arg(server.cert_path())
        .args(["--connections", "1", "--retries", "3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (kicked, kicked_at, logins_before) = loop {
        let copied = server.messages("bob", "INBOX").len();
        if copied > 0 {
            assert!(copied < MESSAGES, "the copy ended before the kick");
            // Counted before the kick, so that a quick new login cannot be counted as an old one.
            let logins_before = bob_logins(&server.log());
            if server.kick("bob") {
                break (copied, Instant::now(), logins_before);
            }
        }
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            panic!(
                "mailferry ended early: {}\n{}",
                String::from_utf8_lossy(&output.stderr),
                server.log()
            );
        }
        assert!(Instant::now() < deadline, "nothing copied within 60 s");
        std::thread::sleep(Duration::from_millis(1));
    };
    // Dovecot closes right after its BYE, so the APPEND being written usually fails with a
    // broken pipe before the BYE is read; the BYE must still set the wait: the throttle
    // schedule's first (2 s, jittered down to 1 s at least), not the plain break's (0.2 s).
    // Seen from here, the new login comes later than it happened: a lower bound only.
    let relogin_deadline = kicked_at + Duration::from_secs(30);
    while bob_logins(&server.log()) <= logins_before {
        assert!(
            child.try_wait().unwrap().is_none(),
            "mailferry ended without logging in again"
        );
        assert!(
            Instant::now() < relogin_deadline,
            "no new login within 30 s of the kick:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let waited = kicked_at.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "logged in again {waited:?} after the BYE: the plain retry delay, not the throttle schedule"
    );
    let output = wait_bounded(child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "kicked after {kicked}: {stderr}"
    );
    let mut ids: Vec<String> = server
        .messages("bob", "INBOX")
        .iter()
        .map(|m| {
            String::from_utf8_lossy(&m.raw)
                .lines()
                .find(|l| l.starts_with("Message-ID:"))
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), MESSAGES);
    assert_eq!(server.messages("bob", "INBOX").len(), MESSAGES);
    let log = server.log();
    assert!(
        bob_logins(&log) >= 2,
        "the run never logged in again:\n{log}"
    );
}

fn bob_logins(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("imap-login") && line.contains("Login: user=<bob>"))
        .count()
}

fn wait_bounded(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("mailferry did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
