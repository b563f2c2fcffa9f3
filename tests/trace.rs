//! The protocol trace (`-vvv`) through the binary against a real Dovecot: it shows the whole
//! dialogue (logins, APPEND, server answers), bodies as `{N bytes}`, and never a password, a
//! SASL PLAIN message or a token, neither on stdout/stderr nor in any file the run writes.

mod support;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use support::{Dovecot, mailferry, password};

/// What must never be written: each password, and the base64 SASL PLAIN messages made of it.
struct Secrets(Vec<String>);

impl Secrets {
    /// `(authorization id, authentication id, password)` of each login the run makes.
    fn of(logins: &[(&str, &str, &str)]) -> Secrets {
        let mut secrets = Vec::new();
        for (authz, authn, password) in logins {
            secrets.push(password.to_string());
            secrets.push(STANDARD.encode(format!("{authz}\0{authn}\0{password}")));
        }
        Secrets(secrets)
    }

    fn assert_absent(&self, what: &str, text: &str) {
        for secret in &self.0 {
            assert!(
                !text.contains(secret.as_str()),
                "{what} contains the secret {secret:?}:\n{text}"
            );
        }
    }
}

/// Runs mailferry with `args`; returns its exit code and stdout followed by stderr.
fn run(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = mailferry(args[0]);
    command.args(&args[1..]);
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// The text of every file under `dir`, with its path.
fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            files.push((path.display().to_string(), text));
        }
    }
    files
}

fn assert_shows(text: &str, expected: &[&str]) {
    for line in expected {
        assert!(text.contains(line), "the trace lacks {line:?}:\n{text}");
    }
}

const BODY_MARKER: &str = "only-in-the-body-7f3a";

fn deliver_three(server: &Dovecot, user: &str, folder: &str) {
    for i in 0..3 {
        let raw = format!("Message-ID: <{i}.trace@x>\r\nSubject: {i}\r\n\r\n{BODY_MARKER}\r\n");
        server.deliver(user, folder, raw.as_bytes());
    }
}

#[test]
fn pop3_to_imap_at_vvv_shows_the_dialogue_and_no_secret() {
    let server = Dovecot::start();
    deliver_three(&server, "carol", "INBOX");
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report.json");
    let (carol, alice) = (password("carol"), password("alice"));
    let (code, text) = run(
        &[
            "migrate",
            "--from",
            &format!("pop3s://carol@127.0.0.1:{}", server.pop3s_port()),
            // STARTTLS, so the upgrade shows too.
            "--to",
            &format!("imap://alice@127.0.0.1:{}/INBOX", server.imap_port()),
            "--tls-ca",
            server.cert_path().to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
            "-vvv",
        ],
        &[
            ("MAILFERRY_FROM_PASSWORD", &carol),
            ("MAILFERRY_TO_PASSWORD", &alice),
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(server.messages("alice", "INBOX").len(), 3);
    let secrets = Secrets::of(&[("", "carol", &carol), ("", "alice", &alice)]);
    secrets.assert_absent("the output", &text);
    for (path, file) in files_under(out.path()) {
        secrets.assert_absent(&path, &file);
    }
    assert_shows(
        &text,
        &[
            "* connected, TLSv1_",
            "* connected, no TLS yet",
            "* upgraded to TLSv1_",
            " S: +OK",
            " C: AUTH PLAIN <redacted>",
            " C: TOP 1 0",
            " C: RETR 1",
            " C: m1 STARTTLS",
            "AUTHENTICATE PLAIN <redacted>",
            " APPEND INBOX",
            " bytes}",
            " S: m",
        ],
    );
    assert!(!text.contains(BODY_MARKER), "a body was dumped:\n{text}");
}

/// Dovecot's master passdb: "admin" may log in as anyone with `admin-master-pw`.
const MASTER_CONF: &str = "auth_master_user_separator = *\npassdb {\n  driver = passwd-file\n  master = yes\n  args = scheme=PLAIN MASTERS\n  pass = yes\n}\n";

#[test]
fn imap_mirror_with_a_master_user_at_vvv_writes_no_secret() {
    let files = tempfile::tempdir().unwrap();
    // Dovecot's auth process reads the master passdb as an unprivileged user.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let masters = files.path().join("masters");
    std::fs::write(&masters, "admin:{PLAIN}admin-master-pw::::::\n").unwrap();
    let admin_file = files.path().join("admin.pw");
    std::fs::write(&admin_file, "admin-master-pw\n").unwrap();
    let conf = MASTER_CONF.replace("MASTERS", masters.to_str().unwrap());
    let server = Dovecot::start_custom(&conf, true, &[]);
    deliver_three(&server, "alice", "INBOX");
    deliver_three(&server, "alice", "Archive");

    let out = tempfile::tempdir().unwrap();
    let dave = password("dave");
    let (code, text) = run(
        &[
            "mirror",
            "--from",
            &format!("imaps://alice@127.0.0.1:{}", server.imaps_port()),
            "--from-auth",
            "master:admin",
            "--from-password-file",
            admin_file.to_str().unwrap(),
            "--to",
            &format!("imaps://dave@127.0.0.1:{}", server.imaps_port()),
            "--tls-ca",
            server.cert_path().to_str().unwrap(),
            "--state",
            out.path().join("state").to_str().unwrap(),
            "--report",
            out.path().join("report.json").to_str().unwrap(),
            "-vvv",
        ],
        &[("MAILFERRY_TO_PASSWORD", &dave)],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(server.messages("dave", "Archive").len(), 3);
    let secrets = Secrets::of(&[("alice", "admin", "admin-master-pw"), ("", "dave", &dave)]);
    secrets.assert_absent("the output", &text);
    let written = files_under(out.path());
    assert!(written.len() >= 2, "report and state: {written:?}");
    for (path, file) in written {
        secrets.assert_absent(&path, &file);
    }
    assert_shows(
        &text,
        &[
            "AUTHENTICATE PLAIN <redacted>",
            " APPEND ",
            " UID FETCH ",
            " bytes}",
        ],
    );
    assert!(!text.contains(BODY_MARKER), "a body was dumped:\n{text}");
}

/// Over a slow link every round trip before the plan is waited for twice (source and target
/// side by side): the plan's sessions ask for their folders behind the login, not after it.
#[test]
fn the_plans_logins_carry_the_folder_listing_in_their_round_trip() {
    let server = Dovecot::start();
    deliver_three(&server, "alice", "INBOX");
    let out = tempfile::tempdir().unwrap();
    let (alice, bob) = (password("alice"), password("bob"));
    let (code, text) = run(
        &[
            "migrate",
            "--from",
            &format!("imaps://alice@127.0.0.1:{}", server.imaps_port()),
            "--to",
            &format!("imaps://bob@127.0.0.1:{}", server.imaps_port()),
            "--tls-ca",
            server.cert_path().to_str().unwrap(),
            "--report",
            out.path().join("report.json").to_str().unwrap(),
            "-vvv",
        ],
        &[
            ("MAILFERRY_FROM_PASSWORD", &alice),
            ("MAILFERRY_TO_PASSWORD", &bob),
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(server.messages("bob", "INBOX").len(), 3);
    for connection in ["[#1 ", "[#2 "] {
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(connection)).collect();
        let at = |what: &str| {
            lines
                .iter()
                .position(|l| l.contains(what))
                .unwrap_or_else(|| panic!("{connection}: no {what:?} in:\n{text}"))
        };
        assert!(
            at("C: m3 LIST ") < at("S: m1 OK"),
            "{connection}: the LIST waited for the login's answer:\n{}",
            lines.join("\n")
        );
    }
}
