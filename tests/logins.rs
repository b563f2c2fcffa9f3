//! Login mechanisms, against a real Dovecot: CRAM-MD5 for IMAP and POP3 when chosen, and
//! master-user logins as `user*admin` over IMAP LOGIN and POP3 USER/PASS where the server
//! offers no SASL PLAIN.

mod support;

use std::time::Duration;

use support::relay::{Fault, Relay};
use support::{Dovecot, account_url, mailferry, password};

/// Copies carol's POP3 maildrop into alice's INBOX with these passwords.
fn migrate(
    server: &Dovecot,
    [from_password, to_password]: [&str; 2],
    extra: &[&str],
) -> std::process::Output {
    mailferry("migrate")
        .arg("--from")
        .arg(account_url("pop3s", "carol", server.pop3s_port(), ""))
        .arg("--to")
        .arg(account_url("imaps", "alice", server.imaps_port(), ""))
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

/// A plaintext-only Dovecot with a master user "admin" (password `admin-master-pw`).
fn server_with_master(files: &std::path::Path) -> Dovecot {
    use std::os::unix::fs::PermissionsExt;
    // Dovecot's auth process reads the master passdb as an unprivileged user.
    std::fs::set_permissions(files, std::fs::Permissions::from_mode(0o755)).unwrap();
    let masters = files.join("masters");
    std::fs::write(&masters, "admin:{PLAIN}admin-master-pw::::::\n").unwrap();
    Dovecot::start_custom(
        &format!(
            "auth_master_user_separator = *\npassdb {{\n  driver = passwd-file\n  master = yes\n  args = scheme=PLAIN {}\n  pass = yes\n}}\n",
            masters.display()
        ),
        false,
        &[],
    )
}

#[test]
fn master_logins_fall_back_to_user_star_admin_without_sasl_plain() {
    let files = tempfile::tempdir().unwrap();
    let server = server_with_master(files.path());
    server.deliver("carol", "INBOX", b"Message-ID: <master@x>\r\n\r\nbody\r\n");
    // Dovecot always offers SASL PLAIN (its LOGIN and USER/PASS go through PLAIN inside), so
    // the relay hides it, as a server that offers only LOGIN and USER/PASS would.
    let pop3 = Relay::start(server.pop3_port());
    let imap = Relay::start(server.imap_port());
    // The relay hides it on the first HIDDEN connections; the run must open no more.
    const HIDDEN: usize = 8;
    pop3.set_faults(&[Fault::HideSaslPlain; HIDDEN]);
    imap.set_faults(&[Fault::HideSaslPlain; HIDDEN]);
    let output = mailferry("migrate")
        .arg("--from")
        .arg(account_url("pop3", "carol", pop3.port(), ""))
        .arg("--to")
        .arg(account_url("imap", "alice", imap.port(), ""))
        .args(["--allow-plaintext", "--connections", "1"])
        .args(["--from-auth", "master:admin", "--to-auth", "master:admin"])
        .env("MAILFERRY_FROM_PASSWORD", "admin-master-pw")
        .env("MAILFERRY_TO_PASSWORD", "admin-master-pw")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(server.messages("alice", "INBOX").len(), 1);

    let sent = |relay: &Relay| -> Vec<String> {
        relay
            .connections()
            .iter()
            .map(|c| String::from_utf8_lossy(&c.from_client).into_owned())
            .collect()
    };
    // Every session that logged in did so with the fallback (with pop3:// and imap://, the
    // first session of each side only learns that the server offers no STLS/STARTTLS).
    for (relay, login, sasl) in [
        (&pop3, "USER carol*admin\r\n", "AUTH"),
        (&imap, " LOGIN \"alice*admin\" ", "AUTHENTICATE"),
    ] {
        let sessions = sent(relay);
        assert!(
            sessions.len() <= HIDDEN,
            "{} connections, SASL PLAIN shown to the last ones: {sessions:?}",
            sessions.len()
        );
        assert!(sessions.iter().any(|s| s.contains(login)), "{sessions:?}");
        assert!(!sessions.iter().any(|s| s.contains(sasl)), "{sessions:?}");
    }
    // Logged in as the users, not as the administrator.
    let log = server.log();
    for user in ["carol", "alice"] {
        assert!(log.contains(&format!("Login: user=<{user}>")), "{log}");
    }
}
