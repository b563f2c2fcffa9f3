//! Hardening from the review of issue 14, end to end through the binary against a real
//! Dovecot: what mailferry writes is private and never written through a planted link, a
//! loosely readable password file is warned about, a password command sees no other side's
//! password, a greeting that makes the IMAP parser panic is one clean error, a forged
//! plaintext PREAUTH does not let a run that needs TLS carry on, a server trickling its
//! bytes cannot hold a run beyond the timeout, and a listing longer than the server announced
//! is refused.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use support::relay::{Fault, Relay};
use support::{Dovecot, password};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
        .mode()
        & 0o777
}

fn url(server: &Dovecot, user: &str) -> String {
    format!("imaps://{user}@127.0.0.1:{}/INBOX", server.imaps_port())
}

/// `mailferry COMMAND --from FROM --to bob` with the test CA and neither password variable.
fn mailferry(server: &Dovecot, command: &str, from: &str) -> Command {
    let mut cmd = Command::cargo_bin("mailferry").unwrap();
    cmd.arg(command)
        .arg("--from")
        .arg(from)
        .arg("--to")
        .arg(url(server, "bob"))
        .arg("--tls-ca")
        .arg(server.cert_path())
        .env_remove("MAILFERRY_FROM_PASSWORD")
        .env_remove("MAILFERRY_TO_PASSWORD")
        .timeout(Duration::from_secs(120));
    cmd
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn server() -> Dovecot {
    let server = Dovecot::start();
    server.deliver(
        "alice",
        "INBOX",
        b"Message-ID: <h1@hardening.test>\r\nSubject: one\r\n\r\nbody\r\n",
    );
    server
}

#[test]
fn reports_state_and_summaries_are_private_and_never_written_through_a_link() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Links planted where the report and its temporary file will go.
    let report = dir.path().join("report.json");
    symlink(&victim, dir.path().join("report.json.tmp")).unwrap();

    let output = mailferry(&server, "migrate", &url(&server, "alice"))
        .arg("--report")
        .arg(&report)
        .env("MAILFERRY_FROM_PASSWORD", password("alice"))
        .env("MAILFERRY_TO_PASSWORD", password("bob"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(mode(&report), 0o600);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");

    symlink(&victim, dir.path().join("mirror.json")).unwrap();
    let state = dir.path().join("state");
    let output = mailferry(&server, "mirror", &url(&server, "alice"))
        .arg("--state")
        .arg(&state)
        .arg("--report")
        .arg(dir.path().join("mirror.json"))
        .env("MAILFERRY_FROM_PASSWORD", password("alice"))
        .env("MAILFERRY_TO_PASSWORD", password("bob"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let written: Vec<PathBuf> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(written.len(), 2, "a state file and its lock: {written:?}");
    for path in written.iter().chain([&dir.path().join("mirror.json")]) {
        assert_eq!(mode(path), 0o600, "{path:?}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");

    let pw = dir.path().join("pw");
    std::fs::create_dir(&pw).unwrap();
    for user in ["alice", "bob"] {
        std::fs::write(pw.join(user), password(user)).unwrap();
        std::fs::set_permissions(pw.join(user), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let accounts = dir.path().join("accounts.csv");
    std::fs::write(
        &accounts,
        format!(
            "from,to,from_password_file,to_password_file\n{},{},pw/alice,pw/bob\n",
            url(&server, "alice"),
            url(&server, "bob")
        ),
    )
    .unwrap();
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    symlink(&victim, reports.join("summary.json")).unwrap();
    let output = Command::cargo_bin("mailferry")
        .unwrap()
        .arg("batch")
        .arg(&accounts)
        .arg("--report-dir")
        .arg(&reports)
        .arg("--tls-ca")
        .arg(server.cert_path())
        .env_remove("MAILFERRY_FROM_PASSWORD")
        .env_remove("MAILFERRY_TO_PASSWORD")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let written: Vec<PathBuf> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        written.len(),
        2,
        "the account's report and the summary: {written:?}"
    );
    for path in &written {
        assert_eq!(mode(path), 0o600, "{path:?}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn a_password_command_sees_no_other_sides_password_and_a_loose_password_file_is_warned_about() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let to_file = dir.path().join("bob.pw");
    std::fs::write(&to_file, password("bob")).unwrap();
    std::fs::set_permissions(&to_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The command gives alice's password only when it cannot see the target's variable.
    let command = format!(
        "test -z \"${{MAILFERRY_TO_PASSWORD+set}}\" && echo {}",
        password("alice")
    );

    let output = mailferry(&server, "migrate", &url(&server, "alice"))
        .arg("--from-password-command")
        .arg(&command)
        .arg("--to-password-file")
        .arg(&to_file)
        .env("MAILFERRY_TO_PASSWORD", "the target's secret")
        .output()
        .unwrap();
    let said = text(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!(
            "warning: the to password file {} is readable by others (mode 644); run chmod 600 on it",
            to_file.display()
        )),
        "{said}"
    );
    assert!(!said.contains(&password("bob")), "{said}");
    assert!(said.contains(" 1 copied "), "{said}");
}

/// Migrates alice → bob with the source behind `relay` (plain IMAP with STARTTLS).
fn through_relay(server: &Dovecot, relay: &Relay) -> std::process::Output {
    let from = format!("imap://alice@127.0.0.1:{}/INBOX", relay.port());
    let mut cmd = mailferry(server, "migrate", &from);
    cmd.env("MAILFERRY_FROM_PASSWORD", password("alice"))
        .env("MAILFERRY_TO_PASSWORD", password("bob"));
    cmd.output().unwrap()
}

#[test]
fn a_greeting_the_parser_chokes_on_is_one_error_line_and_no_panic_message() {
    let server = server();
    let relay = Relay::start(server.imap_port());
    // imap-proto 0.17 panics on a response code followed by a multi-byte character.
    relay.set_faults(&[Fault::Greet("* OK [ALERT]é\r\n".as_bytes())]);
    let output = through_relay(&server, &relay);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(4), "{said}");
    assert!(said.contains("does not parse"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    assert!(relay.connections()[0].fired);
}

#[test]
fn a_huge_literal_before_login_is_refused_not_buffered() {
    let server = server();
    let relay = Relay::start(server.imap_port());
    // 1 MiB in a literal of the greeting, far over what a session not yet set up may send.
    let mut greeting = b"* OK [ALERT] {1048576}\r\n".to_vec();
    greeting.extend(std::iter::repeat_n(b'x', 1 << 20));
    greeting.extend_from_slice(b"\r\n");
    relay.set_faults(&[Fault::Greet(greeting.leak())]);
    let output = through_relay(&server, &relay);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(4), "{said}");
    assert_eq!(
        said.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{said}"
    );
    // Refused when announced, before a byte of it is read.
    assert!(
        said.contains("a literal of 1048576 bytes, more than the 65536 allowed"),
        "{said}"
    );
    assert!(relay.connections()[0].fired);
    assert_eq!(relay.connections()[0].to_server, 0, "nothing was sent");
}

#[test]
fn a_pop3_capability_list_past_its_cap_is_refused() {
    let server = server();
    server.deliver(
        "carol",
        "INBOX",
        b"Message-ID: <c@hardening.test>\r\n\r\nhi\r\n",
    );
    let relay = Relay::start(server.pop3_port());
    // About 1 MiB of capability lines where Dovecot sends PIPELINING.
    let line = format!("X-PADDING {}\r\n", "x".repeat(1000));
    let padding = format!("{}PIPELINING\r\n", line.repeat(1024));
    relay.set_faults(&[Fault::Replace(b"PIPELINING\r\n", padding.leak().as_bytes())]);
    let output = mailferry(
        &server,
        "migrate",
        &format!("pop3://carol@127.0.0.1:{}", relay.port()),
    )
    .env("MAILFERRY_FROM_PASSWORD", password("carol"))
    .env("MAILFERRY_TO_PASSWORD", password("bob"))
    .output()
    .unwrap();
    let said = text(&output);
    assert_eq!(output.status.code(), Some(4), "{said}");
    assert!(said.contains("65536"), "{said}");
    assert!(relay.connections()[0].fired);
}

#[test]
fn a_plaintext_preauth_greeting_stops_a_run_that_needs_tls() {
    let server = server();
    let relay = Relay::start(server.imap_port());
    relay.set_faults(&[Fault::Greet(
        b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] logged in\r\n",
    )]);
    let output = through_relay(&server, &relay);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(4), "{said}");
    assert!(
        said.contains("the server greeted with PREAUTH before TLS, so STARTTLS is impossible"),
        "{said}"
    );
    assert!(relay.connections()[0].fired);
    assert_eq!(
        relay.connections()[0].to_server,
        0,
        "nothing was sent to the server"
    );
}

#[test]
fn a_server_trickling_its_greeting_or_handshake_times_out_as_a_whole() {
    let server = server();
    // A byte every 300 ms never lets a 2 s read timeout fire; the greeting alone would take
    // about a minute, the TLS handshake far longer, and the run is killed after 40 s.
    let pause = Duration::from_millis(300);
    for (port, scheme) in [(server.imap_port(), "imap"), (server.imaps_port(), "imaps")] {
        let relay = Relay::start(port);
        relay.set_faults(&[Fault::Trickle(pause)]);
        let from = format!("{scheme}://alice@127.0.0.1:{}/INBOX", relay.port());
        let output = mailferry(&server, "migrate", &from)
            .args(["--timeout", "2", "--retries", "0"])
            .env("MAILFERRY_FROM_PASSWORD", password("alice"))
            .env("MAILFERRY_TO_PASSWORD", password("bob"))
            .timeout(Duration::from_secs(40))
            .output()
            .unwrap();
        let said = text(&output);
        assert_eq!(output.status.code(), Some(4), "{scheme}: {said}");
        assert!(
            said.contains("timed out waiting for the server"),
            "{scheme}: {said}"
        );
        assert!(relay.connections()[0].fired, "{scheme}");
    }
}

#[test]
fn a_listing_longer_than_the_server_announced_is_refused() {
    // Plaintext, so that the relay can change what the server announces.
    let server = Dovecot::start_custom("", false, &[]);
    let messages: Vec<Vec<u8>> = (0..20)
        .map(|n| format!("Message-ID: <{n}@announced.test>\r\n\r\nbody\r\n").into_bytes())
        .collect();
    server.append_many("alice", "INBOX", &messages);
    for (scheme, port, fault) in [
        (
            "pop3",
            server.pop3_port(),
            Fault::Replace(b"+OK 20 ", b"+OK 2 "),
        ),
        (
            "imap",
            server.imap_port(),
            Fault::Replace(b"* 20 EXISTS", b"* 2 EXISTS"),
        ),
    ] {
        let relay = Relay::start(port);
        relay.set_faults(&[fault]);
        let output = Command::cargo_bin("mailferry")
            .unwrap()
            .arg("migrate")
            .arg("--from")
            .arg(format!("{scheme}://alice@127.0.0.1:{}", relay.port()))
            .arg("--to")
            .arg(format!("imap://bob@127.0.0.1:{}/INBOX", server.imap_port()))
            .args(["--allow-plaintext", "--retries", "0"])
            .env("MAILFERRY_FROM_PASSWORD", password("alice"))
            .env("MAILFERRY_TO_PASSWORD", password("bob"))
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        let said = text(&output);
        assert!(relay.connections()[0].fired, "{scheme}: {said}");
        assert_eq!(output.status.code(), Some(4), "{scheme}: {said}");
        let refusal = match scheme {
            "pop3" => "the server listed 20 messages after announcing 2 (STAT)",
            _ => "the server sent 19 FETCH records where 2 were due (EXISTS)",
        };
        assert!(said.contains(refusal), "{scheme}: {said}");
    }
}
