//! OAuth 2.0 logins (XOAUTH2, OAUTHBEARER) against a real Dovecot whose oauth2 passdb asks a
//! token-introspection endpoint; the endpoint is a few lines of HTTP in this test, standing in
//! for the identity provider (not for a mail server).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use assert_cmd::Command;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use support::{Dovecot, password};

/// Answers `GET` with `Authorization: Bearer tok-USER` with an active token of USER, anything
/// else with an inactive one, until dropped.
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
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .unwrap();
                        answer(stream);
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

fn answer(stream: std::net::TcpStream) {
    let mut reader = BufReader::new(&stream);
    let mut user = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(token) = line.trim_end().strip_prefix("Authorization: Bearer tok-") {
            user = Some(token.to_owned());
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
    Command::cargo_bin("mailferry")
        .unwrap()
        .arg("migrate")
        .arg("--from")
        .arg(format!("pop3s://carol@127.0.0.1:{}", server.pop3s_port()))
        .arg("--to")
        .arg(format!("imaps://alice@127.0.0.1:{}", server.imaps_port()))
        .arg("--tls-ca")
        .arg(server.cert_path())
        .args(extra)
        .env_remove("MAILFERRY_FROM_PASSWORD")
        .env("MAILFERRY_TO_PASSWORD", password("alice"))
        .timeout(Duration::from_secs(120))
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
