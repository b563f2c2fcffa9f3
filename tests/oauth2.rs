//! OAuth 2.0 logins (XOAUTH2, OAUTHBEARER) against a real Dovecot whose oauth2 passdb asks a
//! token-introspection endpoint; the endpoint is a few lines of HTTP in this test, standing in
//! for the identity provider (not for a mail server).

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use support::relay::{Fault, Relay};
use support::{Accounts, Dovecot, account_url, mailferry};

/// Answers `GET` with `Authorization: Bearer tok-USER` with an active token of USER, anything
/// else with an inactive one, until dropped. A token `tok-USER-N` is active once only, as an
/// expired token would be on its next use.
struct Introspection {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Introspection {
    fn start() -> Introspection {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let mut used = HashSet::new();
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .unwrap();
                        answer(stream, &mut used);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Introspection { port, stop }
    }
}

impl Drop for Introspection {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn answer(stream: std::net::TcpStream, used: &mut HashSet<String>) {
    let mut reader = BufReader::new(&stream);
    let mut user = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(token) = line.trim_end().strip_prefix("Authorization: Bearer tok-") {
            user = match token.rsplit_once('-') {
                Some((user, n)) if n.parse::<u64>().is_ok() => {
                    used.insert(token.to_owned()).then(|| user.to_owned())
                }
                _ => Some(token.to_owned()),
            };
        }
    }
    // As RFC 7662 introspection does: an unknown token is inactive, not an HTTP error
    // (which Dovecot reports as a temporary failure).
    let status = "200 OK";
    let body = match user {
        Some(user) => format!("{{\"username\":\"{user}\",\"active\":\"true\"}}"),
        None => "{\"username\":\"-\",\"active\":\"false\"}".to_owned(),
    };
    let _ = write!(
        &stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn server(introspection: &Introspection, dir: &std::path::Path) -> Dovecot {
    let conf = dir.join("oauth2.conf.ext");
    std::fs::write(
        &conf,
        format!(
            "introspection_mode = auth\nintrospection_url = http://127.0.0.1:{}/introspect\nusername_attribute = username\nactive_attribute = active\nactive_value = true\nforce_introspection = yes\n",
            introspection.port
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Dovecot::start_with(&format!(
        "auth_mechanisms = plain login xoauth2 oauthbearer\npassdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n",
        conf.display()
    ))
}

fn migrate(server: &Dovecot, extra: &[&str]) -> std::process::Output {
    mailferry("migrate")
        .arg("--from")
        .arg(account_url("pop3s", "carol", server.pop3s_port(), ""))
        .target_account("imaps", "alice", server.imaps_port(), "")
        .arg("--tls-ca")
        .arg(server.cert_path())
        .args(extra)
        .output()
        .unwrap()
}

fn stdout_has(output: &std::process::Output, text: &str) -> bool {
    String::from_utf8_lossy(&output.stdout).contains(text)
}

#[test]
fn xoauth2_and_oauthbearer_logins_and_a_refused_token() {
    let introspection = Introspection::start();
    let dir = tempfile::tempdir().unwrap();
    let server = server(&introspection, dir.path());
    server.deliver("carol", "INBOX", b"Message-ID: <oauth@x>\r\n\r\nbody\r\n");

    // POP3 with XOAUTH2 (implied by the token command), IMAP with OAUTHBEARER.
    let output = migrate(
        &server,
        &[
            "--from-oauth2-token-command",
            "printf 'tok-carol\\n'",
            "--to-auth",
            "oauthbearer",
            "--to-oauth2-token-command",
            "printf 'tok-alice\\n'",
            "-vvv",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(server.messages("alice", "INBOX").len(), 1);
    // The full trace shows both SASL exchanges, and neither token.
    assert!(stderr.contains(" C: AUTH XOAUTH2 <redacted>"), "{stderr}");
    assert!(
        stderr.contains(" AUTHENTICATE OAUTHBEARER <redacted>"),
        "{stderr}"
    );
    let sent = [
        STANDARD.encode("user=carol\x01auth=Bearer tok-carol\x01\x01"),
        STANDARD.encode("n,a=alice,\x01auth=Bearer tok-alice\x01\x01"),
        "tok-".to_owned(),
    ];
    for secret in &sent {
        assert!(
            !stderr.contains(secret.as_str()) && !stdout_has(&output, secret),
            "{secret}: {stderr}"
        );
    }

    let refused = migrate(
        &server,
        &["--from-oauth2-token-command", "printf 'expired-token\\n'"],
    );
    assert_eq!(
        refused.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("could not log in to pop3s://carol@"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: check that --from-oauth2-token-command"),
        "the hint is about the token, not a password: {stderr}"
    );
    assert!(!stderr.contains("expired-token"), "{stderr}");
}

/// The token command runs for every connection, each token is good for one login (the
/// introspection endpoint treats a used one as expired), and the upload connection is cut
/// mid-copy: the run must still finish, with a fresh token for each login.
#[test]
fn the_token_command_runs_afresh_for_every_connection() {
    let introspection = Introspection::start();
    let dir = tempfile::tempdir().unwrap();
    let server = server(&introspection, dir.path());
    let messages: Vec<Vec<u8>> = (0..20)
        .map(|i| support::big_message(20_000, 100 + i))
        .collect();
    server.append_many("carol", "INBOX", &messages);
    let runs = dir.path().join("runs");
    // Each run appends a line (atomic for a short line) and prints a token no run printed before.
    let command = format!("sh -c 'echo $$ >> {0}; echo tok-alice-$$'", runs.display());
    let relay = Relay::start(server.imaps_port());
    // Planning sends well under 20,000 bytes; the cut falls in the uploads.
    relay.set_faults(&[Fault::Cut(20_000)]);
    let output = mailferry("migrate")
        .source_account("imaps", "carol", server.imaps_port())
        .arg("--to")
        .arg(account_url("imaps", "alice", relay.port(), ""))
        .args(["--to-oauth2-token-command", &command, "--connections", "3"])
        .arg("--tls-ca")
        .arg(server.cert_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(server.messages("alice", "INBOX").len(), messages.len());
    assert!(relay.connections()[0].fired, "the cut never came");
    let logins = server
        .log()
        .lines()
        .filter(|line| line.contains("imap-login") && line.contains("Login: user=<alice>"))
        .count();
    let token_runs = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert!(logins >= 2, "no login after the cut: {logins}");
    assert!(
        token_runs >= logins,
        "{token_runs} tokens for {logins} logins"
    );
}
