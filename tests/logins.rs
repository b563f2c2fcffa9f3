//! Login mechanisms chosen explicitly, against a real Dovecot: CRAM-MD5 for IMAP and POP3.

mod support;

use std::time::Duration;

use assert_cmd::Command;
use support::{Dovecot, password};

/// Copies carol's POP3 maildrop into alice's INBOX with these passwords.
fn migrate(
    server: &Dovecot,
    [from_password, to_password]: [&str; 2],
    extra: &[&str],
) -> std::process::Output {
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
        .env("MAILFERRY_FROM_PASSWORD", from_password)
        .env("MAILFERRY_TO_PASSWORD", to_password)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn cram_md5_for_imap_and_pop3_and_a_wrong_password() {
    let server = Dovecot::start_with("auth_mechanisms = plain login cram-md5");
    server.deliver("carol", "INBOX", b"Message-ID: <cram@x>\r\n\r\nbody\r\n");
    let cram = ["--from-auth", "cram-md5", "--to-auth", "cram-md5"];

    let right = [password("carol"), password("alice")];
    let output = migrate(&server, [&right[0], &right[1]], &cram);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(server.messages("alice", "INBOX").len(), 1);
    let log = server.log();
    for service in ["pop3-login", "imap-login"] {
        assert!(
            log.lines().any(|line| line.contains(service)
                && line.contains("Login:")
                && line.contains("method=CRAM-MD5")),
            "no CRAM-MD5 login by {service}:\n{log}"
        );
    }

    for (passwords, side) in [
        ([right[0].as_str(), "wrong-pw-1"], "imaps://alice@"),
        (["wrong-pw-2", right[1].as_str()], "pop3s://carol@"),
    ] {
        let refused = migrate(&server, passwords, &cram);
        let text = stderr(&refused);
        assert_eq!(refused.status.code(), Some(3), "{text}");
        assert!(
            text.contains(&format!("could not log in to {side}")),
            "{text}"
        );
        assert!(!text.contains("wrong-pw"), "{text}");
    }
}

#[test]
fn cram_md5_is_never_used_unless_the_server_offers_it() {
    let server = Dovecot::start();
    let output = migrate(
        &server,
        [&password("carol"), &password("alice")],
        &["--from-auth", "cram-md5"],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("does not offer SASL CRAM-MD5"),
        "{}",
        stderr(&output)
    );
}
