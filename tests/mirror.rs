//! `mailferry mirror`, end to end through the binary, against two real Dovecot servers: the
//! copy, source flag changes applied, `--delete` removing only the mirror's own copies, the
//! lock against overlapping runs, and a run killed half-way.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;
use support::relay::{Fault, Relay};
use support::{Dovecot, MirrorPair, big_message, password};

/// The mirror's pair of servers; the runs below are this file's own.
type Mirror = MirrorPair;

impl Mirror {
    /// Runs the mirror quietly, expects exit 0 and no output at all, returns the report.
    fn run(&self, extra: &[&str]) -> Value {
        let output = self.command(extra).arg("--quiet").output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(0), "{text}");
        assert_eq!(text, "", "--quiet must print nothing when all is well");
        serde_json::from_slice(&std::fs::read(self.report()).unwrap()).unwrap()
    }

    fn doveadm(&self, server: &Dovecot, args: &[&str]) {
        let out = std::process::Command::new("doveadm")
            .arg("-c")
            .arg(server.conf_path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn message(id: &str) -> Vec<u8> {
    format!("Message-ID: <{id}@mirror.test>\r\nSubject: {id}\r\nFrom: a@example.org\r\n\r\nbody of {id}\r\n")
        .into_bytes()
}

fn flags_of(server: &Dovecot, user: &str, folder: &str, id: &str) -> Vec<String> {
    let needle = format!("<{id}@mirror.test>");
    let messages = server.messages(user, folder);
    let found: Vec<_> = messages
        .iter()
        .filter(|m| String::from_utf8_lossy(&m.raw).contains(&needle))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{id} should be in {user}'s {folder} exactly once"
    );
    found[0].flags.clone()
}

#[test]
fn copies_then_applies_source_flag_changes_and_an_idle_rerun_does_nothing() {
    let m = Mirror::new();
    m.source.append("alice", "INBOX", &message("a"), &[], None);
    m.source
        .append("alice", "INBOX", &message("b"), &["\\Seen"], None);
    m.source
        .append("alice", "Lists/dev", &message("c"), &["$Label1"], None);

    let first = m.run(&[]);
    assert_eq!(first["copied"], 3);
    assert_eq!(flags_of(&m.target, "bob", "INBOX", "b"), ["\\Seen"]);

    // On the source: a read and flagged, b unread again.
    m.doveadm(
        &m.source,
        &[
            "flags",
            "add",
            "-u",
            "alice",
            "\\Seen \\Flagged",
            "mailbox",
            "INBOX",
            "HEADER",
            "Message-ID",
            "a@mirror.test",
        ],
    );
    m.doveadm(
        &m.source,
        &[
            "flags",
            "remove",
            "-u",
            "alice",
            "\\Seen",
            "mailbox",
            "INBOX",
            "HEADER",
            "Message-ID",
            "b@mirror.test",
        ],
    );
    // On the target only: c gets flagged by its reader; the mirror leaves that alone.
    m.doveadm(
        &m.target,
        &[
            "flags",
            "add",
            "-u",
            "bob",
            "\\Flagged",
            "mailbox",
            "Lists/dev",
            "all",
        ],
    );

    let second = m.run(&[]);
    assert_eq!(second["copied"], 0);
    assert_eq!(second["flags_updated"], 2);
    assert_eq!(
        flags_of(&m.target, "bob", "INBOX", "a"),
        ["\\Flagged", "\\Seen"]
    );
    assert!(flags_of(&m.target, "bob", "INBOX", "b").is_empty());
    assert_eq!(
        flags_of(&m.target, "bob", "Lists/dev", "c"),
        ["\\Flagged", "$Label1"]
    );

    let third = m.run(&[]);
    assert_eq!(
        (third["copied"].as_u64(), third["flags_updated"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(third["source_messages"], 3);
    assert_eq!(third["verified"], true);
}

#[test]
fn delete_removes_only_the_copies_the_mirror_made() {
    let m = Mirror::new();
    // Already on the target before any mirror ran: not the mirror's to delete.
    m.source
        .append("alice", "INBOX", &message("preexisting"), &[], None);
    m.target
        .append("bob", "INBOX", &message("preexisting"), &[], None);
    m.target
        .append("bob", "INBOX", &message("target-only"), &[], None);
    for id in ["keep", "gone"] {
        m.source.append("alice", "INBOX", &message(id), &[], None);
    }
    assert_eq!(m.run(&["--delete"])["copied"], 2);

    for id in ["gone@mirror.test", "preexisting@mirror.test"] {
        m.doveadm(
            &m.source,
            &[
                "expunge",
                "-u",
                "alice",
                "mailbox",
                "INBOX",
                "HEADER",
                "Message-ID",
                id,
            ],
        );
    }
    // Without --delete nothing is removed.
    assert_eq!(m.run(&[])["deleted"], 0);
    assert_eq!(m.target.messages("bob", "INBOX").len(), 4);

    // A reader files a second copy of "keep" on the target: the source did not change, so it
    // is not the mirror's to delete.
    m.target.append("bob", "INBOX", &message("keep"), &[], None);
    let report = m.run(&["--delete"]);
    assert_eq!(report["deleted"], 1);
    let left: Vec<String> = m
        .target
        .messages("bob", "INBOX")
        .iter()
        .map(|msg| {
            String::from_utf8_lossy(&msg.raw)
                .lines()
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        left,
        [
            "Message-ID: <preexisting@mirror.test>",
            "Message-ID: <target-only@mirror.test>",
            "Message-ID: <keep@mirror.test>",
            "Message-ID: <keep@mirror.test>",
        ]
    );
}

/// The first line of each message in `user`'s `folder`, in UID order.
fn first_lines(server: &Dovecot, user: &str, folder: &str) -> Vec<String> {
    server
        .messages(user, folder)
        .iter()
        .map(|msg| {
            let raw = String::from_utf8_lossy(&msg.raw);
            raw.lines().next().unwrap().to_string()
        })
        .collect()
}

#[test]
fn delete_removes_the_mirrors_own_copy_not_a_later_one_with_the_same_message_id() {
    let m = Mirror::new();
    m.source.append("alice", "INBOX", &message("x"), &[], None);
    assert_eq!(m.run(&["--delete"])["copied"], 1);
    // The same Message-ID reaches the target another way, after the mirror's copy.
    let other = b"Subject: delivered another way\r\nMessage-ID: <x@mirror.test>\r\n\r\nhi\r\n";
    m.target.append("bob", "INBOX", other, &[], None);
    m.source.expunge("alice", "INBOX", "x@mirror.test");
    assert_eq!(m.run(&["--delete"])["deleted"], 1);
    assert_eq!(
        first_lines(&m.target, "bob", "INBOX"),
        ["Subject: delivered another way"],
        "the mirror's copy goes, the other stays"
    );
}

#[test]
fn delete_removes_nothing_when_either_folder_was_renumbered() {
    let m = Mirror::new();
    for id in ["a", "b", "c"] {
        m.source.append("alice", "INBOX", &message(id), &[], None);
    }
    assert_eq!(m.run(&["--delete"])["copied"], 3);
    let renumber = |server: &Dovecot, user: &str, validity: &str| {
        m.doveadm(
            server,
            &[
                "mailbox",
                "update",
                "-u",
                user,
                "--uid-validity",
                validity,
                "INBOX",
            ],
        )
    };
    // A --delete run that deletes nothing, says why, and leaves `left` messages on the target.
    let held_back = |why: &str, left: usize| {
        let output = m.command(&["--delete"]).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let report: Value = serde_json::from_slice(&std::fs::read(m.report()).unwrap()).unwrap();
        assert_eq!(report["deleted"], 0);
        assert!(report["warnings"].to_string().contains(why), "{report}");
        assert_eq!(m.target.messages("bob", "INBOX").len(), left);
    };
    // The target folder renumbered: the copies' UIDs name nothing any more.
    renumber(&m.target, "bob", "1000");
    m.source.expunge("alice", "INBOX", "a@mirror.test");
    held_back("target folder's UIDVALIDITY changed", 3);

    // A copy made under the new UIDVALIDITY, then the source folder renumbered: its source
    // UIDs name nothing any more either.
    m.source.append("alice", "INBOX", &message("d"), &[], None);
    assert_eq!(m.run(&["--delete"])["copied"], 1);
    renumber(&m.source, "alice", "2000");
    m.source.expunge("alice", "INBOX", "d@mirror.test");
    held_back("source folder's UIDVALIDITY changed", 4);
}

#[test]
fn a_second_run_while_one_holds_the_lock_exits_5() {
    let m = Mirror::new();
    m.source.append("alice", "INBOX", &message("x"), &[], None);
    m.run(&[]);
    let lock = std::fs::read_dir(m.state())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "lock"))
        .expect("the first run made a lock file");
    // Hold the lock as a running mirror would.
    let held = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
    held.lock().unwrap();
    let output = m.command(&[]).output().unwrap();
    assert_eq!(output.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: another mailferry mirror"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        2,
        "one error line and one hint: {stderr}"
    );
    held.unlock().unwrap();
    m.run(&[]);
}

#[test]
fn a_run_killed_half_way_is_completed_by_the_next_without_duplicates() {
    let m = Mirror::new();
    let count = 400;
    for n in 0..count {
        let folder = if n % 2 == 0 { "INBOX" } else { "Archive" };
        m.source
            .deliver("alice", folder, &support::big_message(150_000, n));
    }
    let copies =
        || m.target.messages("bob", "INBOX").len() + m.target.messages("bob", "Archive").len();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("mailferry"))
        .args(m.command(&["--connections", "1"]).get_args())
        .env("MAILFERRY_FROM_PASSWORD", password("alice"))
        .env("MAILFERRY_TO_PASSWORD", password("bob"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL as soon as the first copies have landed (bounded: 60 s).
    let started = Instant::now();
    while copies() == 0 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = copies();
    assert!(
        0 < at_kill && at_kill < count as usize,
        "{at_kill} copies when killed: not half-way, so this run proves nothing"
    );

    let report = m.run(&[]);
    assert_eq!(report["verified"], true);
    assert_eq!(
        copies(),
        count as usize,
        "every message exactly once after the re-run"
    );
}

/// carol's POP3 maildrop on `m.source` mirrored into bob's INBOX on `m.target`.
fn pop3_mirror(m: &Mirror, extra: &[&str]) -> std::process::Output {
    pop3_mirror_via(m, m.source.pop3s_port(), extra)
}

/// [`pop3_mirror`] reaching the source's POP3S on `port` (a relay in front of it).
fn pop3_mirror_via(m: &Mirror, port: u16, extra: &[&str]) -> std::process::Output {
    Command::cargo_bin("mailferry")
        .unwrap()
        .arg("mirror")
        .arg("--from")
        .arg(format!("pop3s://carol@127.0.0.1:{port}"))
        .arg("--to")
        .arg(format!("imaps://bob@127.0.0.1:{}", m.target.imaps_port()))
        .arg("--tls-ca")
        .arg(m.ca())
        .arg("--state")
        .arg(m.state())
        .arg("--report")
        .arg(m.report())
        .args(extra)
        .env("MAILFERRY_FROM_PASSWORD", password("carol"))
        .env("MAILFERRY_TO_PASSWORD", password("bob"))
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap()
}

fn report_of(m: &Mirror, output: &std::process::Output) -> Value {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(m.report()).unwrap()).unwrap()
}

#[test]
fn a_pop3_mirror_rereads_only_new_uidls_and_deletes_from_the_source_only_when_told() {
    let m = Mirror::new();
    m.source.deliver("carol", "INBOX", &message("one"));
    m.source.deliver("carol", "INBOX", &message("two"));
    assert_eq!(report_of(&m, &pop3_mirror(&m, &[]))["copied"], 2);

    // The state remembers each UIDL's identity; a re-run trusts it instead of reading the
    // headers again. Proof: with an identity changed in the state, the message looks new
    // (copied again) and then missing on the target (exit 1); the run after that reads the
    // headers again and all is well.
    let state_file = std::fs::read_dir(m.state())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let state = std::fs::read_to_string(&state_file).unwrap();
    assert!(state.contains("one@mirror.test"), "{state}");
    std::fs::write(
        &state_file,
        state.replace("one@mirror.test", "changed@mirror.test"),
    )
    .unwrap();
    m.source.deliver("carol", "INBOX", &message("three"));
    let misled = pop3_mirror(&m, &[]);
    assert_eq!(misled.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&std::fs::read(m.report()).unwrap()).unwrap();
    assert_eq!(
        report["copied"], 2,
        "three, and one under its remembered identity"
    );
    assert_eq!(report["errors"][0]["message"], "<changed@mirror.test>");
    let report = report_of(&m, &pop3_mirror(&m, &[]));
    assert_eq!(report["copied"], 0);
    assert_eq!(m.source.messages("carol", "INBOX").len(), 3);

    // Seen less than a day ago: kept.
    let report = report_of(&m, &pop3_mirror(&m, &["--delete-source-after-days", "1"]));
    assert_eq!(report["source_deleted"], 0);
    assert_eq!(m.source.messages("carol", "INBOX").len(), 3);
    // Zero days: what the mirror copied and the target is verified to hold goes. "one" stays:
    // the tampered state lost the record that the mirror copied it, and without that record
    // a copy on the target is no proof (it might be someone else's message with that id).
    let report = report_of(&m, &pop3_mirror(&m, &["--delete-source-after-days", "0"]));
    assert_eq!(report["source_deleted"], 2);
    let left = m.source.messages("carol", "INBOX");
    assert_eq!(left.len(), 1);
    assert!(String::from_utf8_lossy(&left[0].raw).contains("<one@mirror.test>"));
    assert_eq!(m.target.messages("bob", "INBOX").len(), 4);
}

#[test]
fn the_pop3_source_keeps_mail_the_target_does_not_verifiably_hold() {
    let m = Mirror::with_target(Dovecot::start_with(
        "mail_plugins = $mail_plugins quota\nplugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=1G\n  quota_max_mail_size = 100k\n}\n",
    ));
    m.source.deliver("carol", "INBOX", &message("small"));
    m.source
        .deliver("carol", "INBOX", &support::big_message(300_000, 9));
    let output = pop3_mirror(&m, &["--delete-source-after-days", "0"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(m.report()).unwrap()).unwrap();
    assert_eq!(report["source_deleted"], 0);
    assert_eq!(m.source.messages("carol", "INBOX").len(), 2);
}

/// A POP3 session breaks while messages are read and is opened again; meanwhile another
/// client removes the first message and a new one arrives, so every message number changes.
/// `--delete-source-after-days 0` deletes exactly the two messages the mirror copied that are
/// still there, found again by UIDL on the session that deletes, and never the new one.
#[test]
fn pop3_deletion_finds_each_message_again_after_a_break_and_spares_the_new_one() {
    let m = Mirror::new();
    let relay = Relay::start(m.source.pop3s_port());
    // Big messages, so a cut at a byte count lands in the second RETR's answer.
    const SIZE: usize = 64 * 1024;
    let mailbox: Vec<Vec<u8>> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut raw = format!("Message-ID: <{id}@mirror.test>\r\n").into_bytes();
            raw.extend(big_message(SIZE, i as u64));
            raw
        })
        .collect();
    for raw in &mailbox {
        m.source.deliver("carol", "INBOX", raw);
    }
    // A clean read of the maildrop through the relay, to learn where its answers end.
    let dry = pop3_mirror_via(&m, relay.port(), &["--dry-run"]);
    assert_eq!(dry.status.code(), Some(0));
    let listing_end = relay.connections()[0].to_client;
    // Past the listing and the header reads, the answers are the three RETRs in order.
    let into_second = listing_end + (SIZE as u64) * 3 / 2;
    relay.set_faults(&[Fault::CutAnswer(into_second)]);
    let changer = std::thread::scope(|scope| {
        let changer = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !relay.connections().first().is_some_and(|c| c.fired) {
                assert!(Instant::now() < deadline, "the cut never fired");
                std::thread::sleep(Duration::from_millis(2));
            }
            // Down while the maildrop changes, so the new session sees the change.
            relay.refuse_for(Duration::from_secs(2));
            m.source.expunge("carol", "INBOX", "a@mirror.test");
            m.source
                .deliver("carol", "INBOX", &message("d-arrived-meanwhile"));
        });
        let output = pop3_mirror_via(
            &m,
            relay.port(),
            &["--delete-source-after-days", "0", "--retries", "8"],
        );
        changer.join().unwrap();
        output
    });
    let report = report_of(&m, &changer);
    assert!(relay.connections().len() >= 2, "a new session was opened");
    assert_eq!(report["copied"], 3);
    assert_eq!(report["source_deleted"], 2, "{report}");
    assert_eq!(
        first_lines(&m.source, "carol", "INBOX"),
        ["Message-ID: <d-arrived-meanwhile@mirror.test>"]
    );
    let target = first_lines(&m.target, "bob", "INBOX");
    assert_eq!(
        target,
        ["a", "b", "c"].map(|id| format!("Message-ID: <{id}@mirror.test>"))
    );
}

/// A cron mirror with nothing to do must cost the source one login: the connections a copy
/// of several folders reads with are opened only when some folder has changed.
#[test]
fn an_idle_rerun_logs_in_to_the_source_once() {
    let m = Mirror::new();
    for folder in ["INBOX", "Archive"] {
        m.source
            .append("alice", folder, &message(folder), &[], None);
    }
    let relay = Relay::start(m.source.imaps_port());
    let run = || {
        let output = Command::cargo_bin("mailferry")
            .unwrap()
            .arg("mirror")
            .arg("--from")
            .arg(format!("imaps://alice@127.0.0.1:{}", relay.port()))
            .arg("--to")
            .arg(format!("imaps://bob@127.0.0.1:{}", m.target.imaps_port()))
            .arg("--tls-ca")
            .arg(m.ca())
            .arg("--state")
            .arg(m.state())
            .arg("--report")
            .arg(m.report())
            .args(["--connections", "2"])
            .env("MAILFERRY_FROM_PASSWORD", password("alice"))
            .env("MAILFERRY_TO_PASSWORD", password("bob"))
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        report_of(&m, &output)
    };
    assert_eq!(run()["copied"], 2);
    let copying = relay.connections().len();
    assert_eq!(
        copying, 2,
        "a lane per folder, each with its own source connection"
    );
    assert_eq!(run()["copied"], 0);
    assert_eq!(
        relay.connections().len() - copying,
        1,
        "the idle run's source connections"
    );
}
