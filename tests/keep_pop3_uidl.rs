//! `--keep-pop3-uidl`: after a POP3 -> IMAP migration into a Dovecot configured with
//! `pop3_reuse_xuidl = yes`, the new server's POP3 lists exactly the old server's UIDLs, message
//! for message, so a POP3 client that leaves mail on the server downloads nothing again; a
//! second run copies nothing; the map file names each copy.

mod support;

use std::time::Duration;

use assert_cmd::Command;
use mailferry::auth::Login;
use mailferry::net::{Address, TlsConfig, TlsMode, TlsTrust};
use mailferry::pop3::Pop3Client;
use serde_json::Value;
use support::{Dovecot, normalize_crlf, password};

/// `user`'s UIDLs on `server`, in message-number order.
fn uidls(server: &Dovecot, user: &str) -> Vec<String> {
    let address = Address {
        host: "127.0.0.1".into(),
        port: server.pop3s_port(),
        timeout: Duration::from_secs(10),
        trace: Default::default(),
    };
    let tls = TlsConfig::new(&TlsTrust::CaFile(server.cert_path())).unwrap();
    let mut client = Pop3Client::connect(&address, TlsMode::Implicit, &tls).unwrap();
    client.login(&Login::plain(user, &password(user))).unwrap();
    let uidls = client.listing().unwrap().uidls.expect("Dovecot has UIDL");
    client.quit().unwrap();
    uidls.into_iter().map(|(_, uidl)| uidl).collect()
}

#[test]
fn the_new_server_serves_the_old_uidls_and_a_rerun_copies_nothing() {
    let old = Dovecot::start();
    // UIDLs of another format than the old server's, so they cannot match by chance.
    let new = Dovecot::start_with("pop3_reuse_xuidl = yes\npop3_uidl_format = %08Xv%08Xu-new");
    let dir = tempfile::tempdir().unwrap();
    let messages: [&[u8]; 3] = [
        b"Message-ID: <one@uidl.test>\r\nSubject: one\r\n\r\nfirst\r\n",
        b"Subject: no Message-ID\r\nFrom: a@uidl.test\r\n\r\nsecond\r\n",
        b"Message-ID: <three@uidl.test>\r\nSubject: three\r\n\r\nthird\r\n",
    ];
    for raw in messages {
        old.deliver("carol", "INBOX", raw);
    }
    let old_uidls = uidls(&old, "carol");
    assert_eq!(old_uidls.len(), 3);
    // What the new server would serve without the field: its own UIDLs, not the old ones.
    new.deliver("bob", "INBOX", messages[0]);
    assert_ne!(uidls(&new, "bob")[0], old_uidls[0]);

    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        [old.cert_path(), new.cert_path()]
            .map(|p| std::fs::read(p).unwrap())
            .concat(),
    )
    .unwrap();
    let map = dir.path().join("uidls.csv");
    let report = dir.path().join("report.json");
    let run = || {
        let output = Command::cargo_bin("mailferry")
            .unwrap()
            .args(["migrate", "--from"])
            .arg(format!("pop3s://carol@127.0.0.1:{}", old.pop3s_port()))
            .arg("--to")
            .arg(format!(
                "imaps://alice@127.0.0.1:{}/INBOX",
                new.imaps_port()
            ))
            .arg("--tls-ca")
            .arg(&ca)
            .args(["--keep-pop3-uidl", "header", "--keep-pop3-uidl"])
            .arg(format!("map={}", map.display()))
            .arg("--report")
            .arg(&report)
            .env("MAILFERRY_FROM_PASSWORD", password("carol"))
            .env("MAILFERRY_TO_PASSWORD", password("alice"))
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        serde_json::from_slice::<Value>(&std::fs::read(&report).unwrap()).unwrap()
    };
    let first = run();
    assert_eq!(first["copied"], 3);
    assert_eq!(first["verified"], true);
    assert_eq!(uidls(&new, "alice"), old_uidls);
    // Each copy is its source message with one field added first.
    let stored = new.messages("alice", "INBOX");
    for ((copy, raw), uidl) in stored.iter().zip(messages).zip(&old_uidls) {
        let expected = [format!("X-UIDL: {uidl}\r\n").as_bytes(), raw].concat();
        assert_eq!(normalize_crlf(&copy.raw), expected);
    }

    let again = run();
    assert_eq!(again["copied"], 0);
    assert_eq!(new.messages("alice", "INBOX").len(), 3);

    let rows = std::fs::read_to_string(&map).unwrap();
    let rows: Vec<Vec<&str>> = rows.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows[0],
        [
            "target_account",
            "target_folder",
            "uidvalidity",
            "uid",
            "uidl",
            "size"
        ]
    );
    let account = format!("imaps://alice@127.0.0.1:{}/INBOX", new.imaps_port());
    assert_eq!(
        rows.len(),
        4,
        "one row per copy, none from the re-run: {rows:?}"
    );
    for ((row, uidl), raw) in rows[1..].iter().zip(&old_uidls).zip(messages) {
        assert_eq!(row[..2], [account.as_str(), "INBOX"]);
        assert!(
            row[2].parse::<u32>().is_ok() && row[3].parse::<u32>().is_ok(),
            "{row:?}"
        );
        assert_eq!(row[4], uidl);
        assert_eq!(row[5], raw.len().to_string());
    }
}
