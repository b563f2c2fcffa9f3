//! `mailferry migrate` from POP3 to IMAP, end to end through the binary, against a real Dovecot
//! started by the test (`support`). Source and target are two users of one server: carol's POP3
//! maildrop is copied into alice's IMAP account.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use assert_cmd::Command;
use serde_json::Value;
use support::{Accounts, Dovecot, mailferry, normalize_crlf, password};

/// A `mailferry migrate` command from carol's POP3S maildrop to alice's IMAPS `folder` on the
/// same server, with the server's self-signed certificate pinned and both passwords in the
/// environment.
fn migrate(server: &Dovecot, folder: &str) -> Command {
    migrate_across(server, server, folder, &server.cert_path())
}

/// [`migrate`] from carol on `from` to alice on `to`, trusting the certificates in `ca`.
fn migrate_across(from: &Dovecot, to: &Dovecot, folder: &str, ca: &Path) -> Command {
    let mut cmd = mailferry("migrate");
    cmd.source_account("pop3s", "carol", from.pop3s_port())
        .target_account("imaps", "alice", to.imaps_port(), folder)
        .arg("--tls-ca")
        .arg(ca)
        .args(["--timeout", "30"]);
    cmd
}

fn read_report(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn utc(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The run's whole visible output, to search for leaked secrets.
fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn copies_every_fixture_exactly_once_and_a_rerun_copies_nothing() {
    let server = Dovecot::start();
    let mut source = support::fixtures();
    source.push(("big-20MB".into(), support::big_message(20 << 20, 7)));
    for (_, raw) in &source {
        server.deliver("carol", "INBOX", raw);
    }
    let tmp = tempfile::tempdir().unwrap();
    let report_path = tmp.path().join("report.json");

    let first = migrate(&server, "INBOX")
        .arg("--report")
        .arg(&report_path)
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", output_text(&first));
    let report = read_report(&report_path);
    assert_eq!(report["schema"], 1);
    assert_eq!(report["source_messages"], source.len());
    assert_eq!(report["copied"], source.len());
    assert_eq!(report["already_present"], 0);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["verified"], true);
    assert!(report["bytes_copied"].as_u64().unwrap() > 20 << 20);
    assert!(report["duration_s"].as_f64().unwrap() > 0.0);
    assert_eq!(report["errors"], Value::Array(vec![]));

    // Every source message is on the target exactly once, byte for byte (after Dovecot's own
    // normalisation), unread, with no header added.
    let copies = server.messages("alice", "INBOX");
    let mut expected: HashMap<Vec<u8>, usize> = HashMap::new();
    for (_, raw) in &source {
        *expected.entry(normalize_crlf(raw)).or_default() += 1;
    }
    let mut got: HashMap<Vec<u8>, usize> = HashMap::new();
    for copy in &copies {
        *got.entry(normalize_crlf(&copy.raw)).or_default() += 1;
        assert!(copy.flags.is_empty(), "flags {:?}", copy.flags);
    }
    assert_eq!(copies.len(), source.len());
    for (name, raw) in &source {
        assert_eq!(
            got.get(&normalize_crlf(raw)),
            expected.get(&normalize_crlf(raw)),
            "{name} is not on the target byte for byte, exactly once"
        );
    }

    // INTERNALDATE: the topmost Received, else Date, else the time of the copy.
    let date_of = |needle: &[u8]| {
        copies
            .iter()
            .find(|c| c.raw.windows(needle.len()).any(|w| w == needle))
            .unwrap_or_else(|| panic!("no copy holds {}", String::from_utf8_lossy(needle)))
            .internal_date
    };
    // 06 Jan 2020 09:15:27 +0000 (the topmost Received; Date says 2004).
    assert_eq!(
        date_of(b"<wrongclock.1072915392@laptop.example.com>"),
        utc(1_578_302_127)
    );
    // Sat, 11 Jul 2020 18:30:00 +0200.
    assert_eq!(
        date_of(b"<note.20200711183000@example.net>"),
        utc(1_594_485_000)
    );
    let fallback = date_of(b"<draft.shopping@example.net>");
    let age = SystemTime::now()
        .duration_since(fallback)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(3600), "{fallback:?}");

    let secret_free = |text: &str| {
        for user in ["carol", "alice"] {
            assert!(!text.contains(&password(user)), "a password leaked: {text}");
        }
    };
    secret_free(&output_text(&first));
    secret_free(&std::fs::read_to_string(&report_path).unwrap());

    let second = migrate(&server, "INBOX")
        .arg("--report")
        .arg(&report_path)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", output_text(&second));
    let report = read_report(&report_path);
    assert_eq!(report["copied"], 0);
    assert_eq!(report["already_present"], source.len());
    assert_eq!(report["verified"], true);
    assert_eq!(server.messages("alice", "INBOX").len(), source.len());
    secret_free(&output_text(&second));
}

#[test]
fn mark_seen_flags_the_copies() {
    let server = Dovecot::start();
    server.deliver(
        "carol",
        "INBOX",
        b"Message-ID: <a@x>\r\nSubject: a\r\n\r\nbody\r\n",
    );
    migrate(&server, "INBOX")
        .arg("--mark-seen")
        .assert()
        .code(0);
    let copies = server.messages("alice", "INBOX");
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].flags, vec!["\\Seen".to_string()]);
}

#[test]
fn a_message_already_on_the_target_is_not_copied_again() {
    let server = Dovecot::start();
    let shared = b"Message-ID: <shared@x>\r\nSubject: one\r\n\r\nbody\r\n";
    server.deliver("carol", "INBOX", shared);
    server.deliver("carol", "INBOX", b"Message-ID: <new@x>\r\n\r\nnew\r\n");
    // The target's copy differs in content but has the same Message-ID: it counts as present.
    server.deliver(
        "alice",
        "Archive",
        b"Message-ID: <shared@x>\r\nSubject: other\r\n\r\nx\r\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    let report_path = tmp.path().join("r.json");
    migrate(&server, "Archive")
        .arg("--report")
        .arg(&report_path)
        .assert()
        .code(0);
    let report = read_report(&report_path);
    assert_eq!(
        (
            report["copied"].as_u64(),
            report["already_present"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(server.messages("alice", "Archive").len(), 2);
}

#[test]
fn dry_run_lists_and_writes_nothing() {
    let server = Dovecot::start();
    for (_, raw) in support::fixtures() {
        server.deliver("carol", "INBOX", &raw);
    }
    let output = migrate(&server, "Migrated/From%20POP")
        .arg("--dry-run")
        .arg("-v")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", output_text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let n = support::fixtures().len();
    assert!(
        stdout.contains(&format!("would copy {n} of {n} messages")),
        "{stdout}"
    );
    assert!(
        stdout.contains("<first.20200109083001@origin.example.com>"),
        "{stdout}"
    );
    assert!(stdout.contains("sha256:"), "{stdout}");
    assert_eq!(server.folders("alice"), vec!["INBOX".to_string()]);
    assert!(server.messages("alice", "INBOX").is_empty());
    assert_eq!(server.messages("carol", "INBOX").len(), n);
}

#[test]
fn the_created_folder_receives_the_mail_and_the_source_keeps_it() {
    let server = Dovecot::start();
    server.deliver("carol", "INBOX", b"Message-ID: <keep@x>\r\n\r\nbody\r\n");
    migrate(&server, "Old%20POP/2019").assert().code(0);
    assert_eq!(server.messages("alice", "Old POP/2019").len(), 1);
    assert_eq!(
        server.messages("carol", "INBOX").len(),
        1,
        "POP3 mail must never be deleted"
    );
}

#[test]
fn starttls_on_the_plain_ports() {
    let server = Dovecot::start();
    server.deliver("carol", "INBOX", b"Message-ID: <tls@x>\r\n\r\nbody\r\n");
    mailferry("migrate")
        .source_account("pop3", "carol", server.pop3_port())
        .target_account("imap", "alice", server.imap_port(), "")
        .arg("--tls-ca")
        .arg(server.cert_path())
        .assert()
        .code(0);
    assert_eq!(server.messages("alice", "INBOX").len(), 1);
}

#[test]
fn a_message_the_target_refuses_is_reported_and_the_rest_arrive() {
    // The target's quota plugin refuses any message over 100 KB.
    let source = Dovecot::start();
    let target = Dovecot::start_with(
        "mail_plugins = $mail_plugins quota\n\
         plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=1G\n  quota_max_mail_size = 100k\n}\n",
    );
    source.deliver("carol", "INBOX", b"Message-ID: <small@x>\r\n\r\nsmall\r\n");
    source.deliver("carol", "INBOX", &support::big_message(300_000, 1));
    source.deliver(
        "carol",
        "INBOX",
        b"Message-ID: <small2@x>\r\n\r\nsmall too\r\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    let report_path = tmp.path().join("r.json");
    let both = tmp.path().join("both.pem");
    let pems = [source.cert_path(), target.cert_path()].map(|p| std::fs::read(p).unwrap());
    std::fs::write(&both, pems.concat()).unwrap();
    let output = migrate_across(&source, &target, "INBOX", &both)
        .arg("--report")
        .arg(&report_path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    let report = read_report(&report_path);
    assert_eq!(report["copied"], 2);
    assert_eq!(report["failed"], 1);
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "one entry per failed message: {errors:?}");
    assert_eq!(errors[0]["message"], "<big-1-300000@mailferry.test>");
    let reason = report["errors"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("Mail size is larger"), "{reason}");
    assert_eq!(target.messages("alice", "INBOX").len(), 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("big-1-300000"));
}

#[test]
fn wrong_password_exits_3_naming_the_server() {
    let server = Dovecot::start();
    let output = migrate(&server, "INBOX")
        .env("MAILFERRY_TO_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: could not log in to imaps://alice@127.0.0.1:{}",
            server.imaps_port()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");
}

#[test]
fn a_closed_port_exits_4() {
    let port = support::free_port();
    let output = mailferry("migrate")
        .source_account("pop3s", "carol", port)
        .target_account("imaps", "alice", 1, "INBOX")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("pop3s://carol@127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn an_untrusted_certificate_exits_4_with_a_hint() {
    let server = Dovecot::start();
    let mut cmd = migrate(&server, "INBOX");
    // Same command without --tls-ca: the self-signed certificate is not trusted.
    let output = mailferry("migrate")
        .source_account("pop3s", "carol", server.pop3s_port())
        .target_account("imaps", "alice", server.imaps_port(), "")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TLS"), "{stderr}");
    assert!(stderr.contains("--tls-ca"), "{stderr}");
    // And with the certificate pinned, the same servers are fine.
    cmd.assert().code(0);
}

#[test]
fn usage_errors_exit_2() {
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut cmd = mailferry(args[0]);
        cmd.args(&args[1..]);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.timeout(Duration::from_secs(30)).output().unwrap()
    };
    let pw = [
        ("MAILFERRY_FROM_PASSWORD", "x"),
        ("MAILFERRY_TO_PASSWORD", "y"),
    ];
    for (args, envs, needle) in [
        (
            &["migrate", "--from", "mail.example", "--to", "imaps://a@h"][..],
            &pw[..],
            "invalid server URL",
        ),
        (
            &[
                "migrate",
                "--from",
                "pop3s://a@h",
                "--to",
                "imaps://a:secret@h",
            ],
            &pw,
            "contains a password",
        ),
        (
            &["migrate", "--from", "pop3s://a@h", "--to", "imaps://a@h"],
            &[],
            "no password for pop3s://a@h:995",
        ),
        (&["migrate", "--from", "pop3s://a@h"], &pw, "--to"),
        (
            &[
                "migrate",
                "--from",
                "pop3s://a@h",
                "--to",
                "imaps://a@h",
                "--tls-ca",
                "/nonexistent.pem",
            ],
            &pw,
            "/nonexistent.pem",
        ),
        (
            &[
                "migrate",
                "--from",
                "pop3s://a@h",
                "--to",
                "imaps://a@h",
                "--report",
                "/nonexistent/dir/r.json",
            ],
            &pw,
            "cannot write the report",
        ),
    ] {
        let output = run(args, envs);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("secret"), "{stderr}");
    }
}

#[test]
fn a_server_without_tls_gets_no_password_unless_plaintext_is_allowed() {
    let server = Dovecot::start_custom("", false, &[]);
    server.deliver("carol", "INBOX", b"Message-ID: <clear@x>\r\n\r\nbody\r\n");
    let plain = |allow: bool| {
        let mut cmd = mailferry("migrate");
        cmd.source_account("pop3", "carol", server.pop3_port())
            .target_account("imap", "alice", server.imap_port(), "");
        if allow {
            cmd.arg("--allow-plaintext");
        }
        cmd.output().unwrap()
    };
    let refused = plain(false);
    assert_eq!(refused.status.code(), Some(4), "{}", output_text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("STLS") && stderr.contains("--allow-plaintext"),
        "{stderr}"
    );
    assert!(
        !server.log().contains("Login: user=<carol>"),
        "no login may happen without TLS"
    );
    assert!(server.messages("alice", "INBOX").is_empty());

    let allowed = plain(true);
    assert_eq!(allowed.status.code(), Some(0), "{}", output_text(&allowed));
    assert_eq!(server.messages("alice", "INBOX").len(), 1);
    // The log check above can fail: this run logged in, and the log says so.
    assert!(server.log().contains("Login: user=<carol>"));
}

#[test]
fn passwords_from_a_file_and_from_a_command() {
    let server = Dovecot::start();
    server.deliver("carol", "INBOX", b"Message-ID: <pw@x>\r\n\r\nbody\r\n");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("carol.pw");
    std::fs::write(&file, format!("{}\n", password("carol"))).unwrap();
    let output = migrate(&server, "INBOX")
        .env_remove("MAILFERRY_FROM_PASSWORD")
        .env_remove("MAILFERRY_TO_PASSWORD")
        .arg("--from-password-file")
        .arg(&file)
        .arg("--to-password-command")
        .arg(format!("printf '%s\\n' '{}'", password("alice")))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", output_text(&output));
    assert_eq!(server.messages("alice", "INBOX").len(), 1);

    let failing = migrate(&server, "INBOX")
        .env_remove("MAILFERRY_TO_PASSWORD")
        .args(["--to-password-command", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(failing.status.code(), Some(2), "{}", output_text(&failing));
    assert!(
        String::from_utf8_lossy(&failing.stderr)
            .contains("the to password or token command failed")
    );
}

#[test]
fn a_per_user_connection_limit_leaves_the_work_to_the_connections_it_allows() {
    // Dovecot refuses a third IMAP login of alice with NO [LIMIT]; mailferry asks for six.
    let source = Dovecot::start();
    let target = Dovecot::start_with("protocol imap {\n  mail_max_userip_connections = 2\n}\n");
    for n in 0..600 {
        let raw = format!("Message-ID: <limit-{n}@x>\r\nSubject: {n}\r\n\r\nbody {n}\r\n");
        source.deliver("carol", "INBOX", raw.as_bytes());
    }
    let tmp = tempfile::tempdir().unwrap();
    let both = tmp.path().join("both.pem");
    let pems = [source.cert_path(), target.cert_path()].map(|p| std::fs::read(p).unwrap());
    std::fs::write(&both, pems.concat()).unwrap();
    let output = migrate_across(&source, &target, "INBOX", &both)
        .args(["--connections", "6"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", output_text(&output));
    assert_eq!(target.messages("alice", "INBOX").len(), 600);
    assert!(
        target.log().contains("Maximum number of connections"),
        "the limit was never hit, so this test proves nothing"
    );
}

#[test]
fn tls_on_a_plain_port_and_plain_on_a_tls_port_exit_4() {
    let server = Dovecot::start();
    let run = |from: String| {
        mailferry("migrate")
            .args(["--from", &from])
            .env("MAILFERRY_FROM_PASSWORD", password("carol"))
            .target_account("imaps", "alice", server.imaps_port(), "")
            .arg("--tls-ca")
            .arg(server.cert_path())
            .args(["--timeout", "3"])
            .output()
            .unwrap()
    };
    // TLS spoken to the plain POP3 port: the server's plaintext greeting is no TLS record.
    let output = run(format!("pop3s://carol@127.0.0.1:{}", server.pop3_port()));
    assert_eq!(output.status.code(), Some(4), "{}", output_text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("TLS"));
    // Plain POP3 spoken to the TLS port: the server waits for a handshake that never comes.
    let output = run(format!("pop3://carol@127.0.0.1:{}", server.pop3s_port()));
    assert_eq!(output.status.code(), Some(4), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("timed out"), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        2,
        "one error line and one hint: {stderr}"
    );
}

#[test]
fn a_pop3_maildrop_in_use_exits_4_with_the_servers_reason() {
    use std::io::{BufRead, BufReader, Write};
    let server = Dovecot::start_with("pop3_lock_session = yes\n");
    server.deliver("carol", "INBOX", b"Message-ID: <busy@x>\r\n\r\nbody\r\n");
    // Another client holds carol's maildrop (plain POP3 on loopback, as a mail client would).
    let holder = std::net::TcpStream::connect(("127.0.0.1", server.pop3_port())).unwrap();
    holder
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(holder.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    for command in [
        "USER carol\r\n".to_string(),
        format!("PASS {}\r\n", password("carol")),
    ] {
        (&holder).write_all(command.as_bytes()).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("+OK"), "{line}");
    }
    let output = migrate(&server, "INBOX").output().unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[IN-USE]"), "{stderr}");
    assert!(
        !stderr.contains("could not log in"),
        "not a password problem: {stderr}"
    );
    assert!(server.messages("alice", "INBOX").is_empty());
}
