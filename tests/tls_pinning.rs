//! `--tls-ca` against a real Dovecot serving certificates made here with openssl: the exact
//! certificate of an old server is trusted whatever its names and dates say, with one warning
//! line; a CA in the file keeps every check on what it signed; `--from-tls-ca` and
//! `--to-tls-ca` give each side its own.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use support::{Dovecot, password};

/// Runs openssl in `dir`; key generation is quick, but every wait is bounded.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What an old server presents: self-signed and CA:TRUE (as `openssl req -x509` makes them),
/// `CN=old.example` without a subjectAltName, expired on 2024-01-01. `openssl req` of
/// OpenSSL 3.0 cannot back-date, `openssl ca -startdate/-enddate` can. Returns (cert, key).
fn old_server_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = old\n\
         [old]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\n\
         policy = any\nunique_subject = no\n\
         [any]\ncommonName = supplied\n\
         [self_signed]\nbasicConstraints = critical,CA:TRUE\nsubjectKeyIdentifier = hash\n",
    )
    .unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "01\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=old.example",
            "-keyout",
            "old.key",
            "-out",
            "old.csr",
        ],
    );
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-selfsign",
            "-keyfile",
            "old.key",
            "-in",
            "old.csr",
            "-extensions",
            "self_signed",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20240101000000Z",
            "-notext",
            "-out",
            "old.pem",
        ],
    );
    (dir.join("old.pem"), dir.join("old.key"))
}

/// A CA (`ca.pem`) and a certificate it signed for `subject_alt_name` only (as openssl
/// writes it: `DNS:old.example`, `IP:127.0.0.1`), valid now. Returns (CA, cert, key).
fn ca_signed_certificate(dir: &Path, subject_alt_name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let san = format!("subjectAltName={subject_alt_name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=Test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=old.example",
            "-addext",
            &san,
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-copy_extensions",
            "copy",
            "-out",
            "leaf.pem",
        ],
    );
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// A Dovecot presenting this certificate (read as root before it drops privileges).
fn serving(cert: &Path, key: &Path) -> Dovecot {
    Dovecot::start_with(&format!(
        "ssl_cert = <{}\nssl_key = <{}\n",
        cert.display(),
        key.display()
    ))
}

/// Copies carol's POP3 maildrop into alice's INBOX, both over TLS on 127.0.0.1.
fn migrate(server: &Dovecot, tls_ca: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::cargo_bin("mailferry").unwrap();
    cmd.arg("migrate")
        .arg("--from")
        .arg(format!("pop3s://carol@127.0.0.1:{}", server.pop3s_port()))
        .arg("--to")
        .arg(format!("imaps://alice@127.0.0.1:{}", server.imaps_port()))
        .args(["--timeout", "30"])
        .env("MAILFERRY_FROM_PASSWORD", password("carol"))
        .env("MAILFERRY_TO_PASSWORD", password("alice"))
        .timeout(Duration::from_secs(120));
    if let Some(ca) = tls_ca {
        cmd.arg("--tls-ca").arg(ca);
    }
    cmd.output().unwrap()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn warnings(output: &std::process::Output) -> Vec<String> {
    stderr(output)
        .lines()
        .filter(|line| line.starts_with("warning:"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_old_servers_pinned_certificate_is_trusted_with_one_warning() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = old_server_certificate(certs.path());
    let server = serving(&cert, &key);
    server.deliver("carol", "INBOX", b"Message-ID: <old@x>\r\n\r\nbody\r\n");

    let pinned = migrate(&server, Some(&cert));
    assert_eq!(pinned.status.code(), Some(0), "{}", stderr(&pinned));
    assert_eq!(server.messages("alice", "INBOX").len(), 1);
    // One line for the run, though both sides and every upload connection met it.
    assert_eq!(
        warnings(&pinned),
        [
            "warning: 127.0.0.1: trusting the pinned certificate (--tls-ca) although it names \
             \"old.example\" not \"127.0.0.1\", and expired on 2024-01-01"
        ],
        "{}",
        stderr(&pinned)
    );

    // Not pinned: refused as before, and no warning.
    let unpinned = migrate(&server, None);
    let text = stderr(&unpinned);
    assert_eq!(unpinned.status.code(), Some(4), "{text}");
    assert!(text.contains("TLS handshake failed"), "{text}");
    assert!(warnings(&unpinned).is_empty(), "{text}");
}

#[test]
fn a_ca_keeps_every_check_on_what_it_signed() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_signed_certificate(certs.path(), "DNS:old.example");
    let server = serving(&cert, &key);
    server.deliver("carol", "INBOX", b"Message-ID: <ca@x>\r\n\r\nbody\r\n");

    // The CA signed a certificate for old.example; the server is reached as 127.0.0.1.
    let through_ca = migrate(&server, Some(&ca));
    let text = stderr(&through_ca);
    assert_eq!(through_ca.status.code(), Some(4), "{text}");
    assert!(text.contains("not valid for name"), "{text}");
    assert!(warnings(&through_ca).is_empty(), "{text}");
    assert!(server.messages("alice", "INBOX").is_empty());

    // The same certificate pinned itself is the user's word for this server.
    let pinned = migrate(&server, Some(&cert));
    assert_eq!(pinned.status.code(), Some(0), "{}", stderr(&pinned));
    assert_eq!(
        warnings(&pinned),
        [
            "warning: 127.0.0.1: trusting the pinned certificate (--tls-ca) although it names \
             \"old.example\" not \"127.0.0.1\""
        ],
        "{}",
        stderr(&pinned)
    );
}

#[test]
fn each_side_trusts_its_own_ca_and_only_its_own() {
    let certs = tempfile::tempdir().unwrap();
    let (private_ca, cert, key) = ca_signed_certificate(certs.path(), "IP:127.0.0.1");
    let source = serving(&cert, &key);
    source.deliver("carol", "INBOX", b"Message-ID: <sides@x>\r\n\r\nbody\r\n");
    let target = Dovecot::start();
    let run = |args: &[&Path]| {
        let mut cmd = Command::cargo_bin("mailferry").unwrap();
        cmd.arg("migrate")
            .arg("--from")
            .arg(format!("pop3s://carol@127.0.0.1:{}", source.pop3s_port()))
            .arg("--to")
            .arg(format!("imaps://alice@127.0.0.1:{}", target.imaps_port()))
            .args(["--timeout", "30", "--retries", "0"])
            .args(args)
            .env("MAILFERRY_FROM_PASSWORD", password("carol"))
            .env("MAILFERRY_TO_PASSWORD", password("alice"))
            .timeout(Duration::from_secs(120));
        cmd.output().unwrap()
    };
    let from_ca = Path::new("--from-tls-ca");
    let to_ca = Path::new("--to-tls-ca");

    // The source's CA is not the target's: the target still needs a trust of its own.
    let source_only = run(&[from_ca, &private_ca]);
    let text = stderr(&source_only);
    assert_eq!(source_only.status.code(), Some(4), "{text}");
    assert!(
        text.contains(&format!("imaps://alice@127.0.0.1:{}", target.imaps_port())),
        "{text}"
    );
    assert!(text.contains("TLS handshake failed"), "{text}");

    let target_cert = target.cert_path();
    let target_only = run(&[to_ca, &target_cert]);
    let text = stderr(&target_only);
    assert_eq!(target_only.status.code(), Some(4), "{text}");
    assert!(
        text.contains(&format!("pop3s://carol@127.0.0.1:{}", source.pop3s_port())),
        "{text}"
    );

    let both = run(&[from_ca, &private_ca, to_ca, &target_cert]);
    assert_eq!(both.status.code(), Some(0), "{}", stderr(&both));
    assert_eq!(target.messages("alice", "INBOX").len(), 1);
}
