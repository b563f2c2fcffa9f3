//! The IMAP client against a real, private Dovecot on 127.0.0.1.

mod support;

use std::borrow::Cow;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::DateTime;
use mailferry::auth::Login;
use mailferry::error::SessionError;
use mailferry::imap::{AppendMessage, ImapClient, IndexItems, IndexRecord, MailboxStatus};
use mailferry::net::{Address, TlsConfig, TlsMode, TlsTrust};
use mailferry::trace::{Trace, Verbosity};
use support::{Captured, Dovecot, password};

fn address(port: u16) -> Address {
    Address {
        host: "127.0.0.1".into(),
        port,
        timeout: Duration::from_secs(20),
        trace: Default::default(),
    }
}

fn tls(dovecot: &Dovecot) -> TlsConfig {
    TlsConfig::new(&TlsTrust::CaFile(dovecot.cert_path())).unwrap()
}

/// Logged in as `user` over implicit TLS.
fn session(dovecot: &Dovecot, user: &str) -> ImapClient {
    let mut client = ImapClient::connect(
        &address(dovecot.imaps_port()),
        TlsMode::Implicit,
        &tls(dovecot),
    )
    .unwrap();
    client.login(&Login::plain(user, &password(user))).unwrap();
    client
}

/// Opens `folder` (read-only or not) and indexes it with `header_fields`, and the dates when
/// `dates`, passing each record to `on_each`; its status.
fn index(
    client: &mut ImapClient,
    folder: &str,
    read_only: bool,
    (header_fields, dates): (&[&str], bool),
    mut on_each: impl FnMut(IndexRecord<'_>),
) -> MailboxStatus {
    let items = IndexItems {
        header_fields,
        internal_date: dates,
    };
    let mut opened = client
        .index_mailboxes(&[folder.to_owned()], read_only, items, |_, record| {
            on_each(record)
        })
        .unwrap();
    opened.pop().unwrap().unwrap()
}

fn message(n: usize, extra_header: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "From: Sender <sender@example.com>\r\nTo: alice@example.com\r\nSubject: message {n}\r\n\
         {extra_header}Message-ID: <{n}.test@mailferry.example>\r\n\
         Date: Tue, 1 Jun 2021 10:20:30 +0200\r\n\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

#[test]
fn implicit_tls_with_pinned_certificate() {
    let dovecot = Dovecot::start();
    let mut client = session(&dovecot, "alice");
    assert!(client.is_tls());
    assert!(client.has_capability("imap4rev1"));
    // Dovecot adds MULTIAPPEND only after login: the capabilities were re-read.
    assert!(client.supports_multiappend());
    let list = client.list().unwrap();
    assert!(list.mailboxes.iter().any(|m| m.name == "INBOX"), "{list:?}");
    // Dovecot's default namespace, read from its NAMESPACE answer.
    assert_eq!(list.personal.prefix, "");
    assert_eq!(list.personal.delimiter, Some('/'));
    assert!(!format!("{client:?}").contains(&password("alice")));
    client.logout().unwrap();
}

#[test]
fn starttls_plain_and_refusals() {
    let dovecot = Dovecot::start();
    let address = address(dovecot.imap_port());
    let mut client = ImapClient::connect(&address, TlsMode::StartTls, &tls(&dovecot)).unwrap();
    assert!(client.is_tls());
    client
        .login(&Login::plain("bob", &password("bob")))
        .unwrap();
    client.logout().unwrap();

    let client = ImapClient::connect(&address, TlsMode::Plain, &tls(&dovecot)).unwrap();
    assert!(!client.is_tls());
    assert!(client.has_capability("STARTTLS"));

    let mut client = ImapClient::connect(&address, TlsMode::StartTls, &tls(&dovecot)).unwrap();
    match client.login(&Login::plain("bob", "wrong-secret")) {
        Err(SessionError::LoginRefused(text)) => {
            assert!(text.contains("AUTHENTICATIONFAILED"), "{text}");
            assert!(!text.contains("wrong-secret"));
        }
        other => panic!("expected LoginRefused, got {other:?}"),
    }
    // The session survives a refused login.
    client
        .login(&Login::plain("bob", &password("bob")))
        .unwrap();
    client.list().unwrap();
}

#[test]
fn starttls_required_but_not_offered() {
    let dovecot = Dovecot::start_custom("", false, &[]);
    let address = address(dovecot.imap_port());
    match ImapClient::connect(&address, TlsMode::StartTls, &tls(&dovecot)) {
        Err(SessionError::Unsupported(text)) => assert!(text.contains("STARTTLS"), "{text}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn eight_bit_password() {
    let dovecot = Dovecot::start_custom("", true, &[("erin", "pä\"ss\\wörd")]);
    let address = address(dovecot.imap_port());
    let mut client = ImapClient::connect(&address, TlsMode::StartTls, &tls(&dovecot)).unwrap();
    let refused = client.login(&Login::plain("erin", "pä\"ss\\wörX"));
    assert!(
        matches!(refused, Err(SessionError::LoginRefused(_))),
        "{refused:?}"
    );
    client.login(&Login::plain("erin", "pä\"ss\\wörd")).unwrap();
}

#[test]
fn dovecot_without_plain_disables_login() {
    // Dovecot's LOGIN command runs through the PLAIN mechanism: without it, it advertises
    // LOGINDISABLED, so the LOGIN fallback cannot be reached on Dovecot.
    let dovecot = Dovecot::start_with("auth_mechanisms = login");
    let mut client = ImapClient::connect(
        &address(dovecot.imaps_port()),
        TlsMode::Implicit,
        &tls(&dovecot),
    )
    .unwrap();
    assert!(client.has_capability("LOGINDISABLED"));
    assert!(matches!(
        client.login(&Login::plain("alice", &password("alice"))),
        Err(SessionError::Unsupported(_))
    ));
}

#[test]
fn synchronizing_literals_under_literal_minus() {
    // With LITERAL- a literal over 4096 bytes must wait for the server's `+`.
    let dovecot = Dovecot::start_with("imap_literal_minus = yes");
    let mut client = session(&dovecot, "bob");
    assert!(
        client.has_capability("LITERAL-"),
        "{:?}",
        client.capabilities()
    );
    assert!(!client.has_capability("LITERAL+"));
    let small = message(1, "", b"Small.\r\n");
    let large = message(2, "", &b"0123456789abcdef\r\n".repeat(1000));
    let messages = [&small, &large, &small].map(|raw| AppendMessage {
        raw,
        flags: &[],
        internal_date: None,
    });
    assert_eq!(client.multiappend("INBOX", &messages).unwrap().len(), 3);
    assert!(client.append("INBOX", &messages[1]).unwrap().is_some());
    match client.append("Missing", &messages[1]) {
        Err(SessionError::Refused(text)) => assert!(text.contains("[TRYCREATE]"), "{text}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(client.select("INBOX", true).unwrap().exists, 4);
}

/// Creates and subscribes to these mailboxes, indexing none.
/// The names LIST gives.
fn mailbox_names(client: &mut ImapClient) -> Vec<String> {
    let listed = client.list().unwrap();
    listed.mailboxes.into_iter().map(|m| m.name).collect()
}

fn create(client: &mut ImapClient, names: &[String]) -> Result<(), SessionError> {
    client
        .create_and_index_mailboxes(names, &[], IndexItems::default(), |_, _| {})
        .map(drop)
}

#[test]
fn create_nested_and_non_ascii_folders() {
    let dovecot = Dovecot::start();
    let mut client = session(&dovecot, "carol");
    for name in ["Archive/2024/Q1", "Données & Entwürfe", "日本語/😀"] {
        create(&mut client, &[name.to_owned()]).unwrap();
        // A second CREATE meets [ALREADYEXISTS], which counts as success.
        create(&mut client, &[name.to_owned()]).unwrap();
    }
    let names = mailbox_names(&mut client);
    for name in ["Archive/2024/Q1", "Données & Entwürfe", "日本語/😀"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    let mut records = 0;
    let status = index(
        &mut client,
        "Données & Entwürfe",
        false,
        (&["MESSAGE-ID"], false),
        |_| records += 1,
    );
    assert_eq!(status.exists, 0);
    assert!(status.uid_validity.is_some());
    assert!(status.permanent_flags.iter().any(|f| f == "\\Seen"));
    assert_eq!(records, 0);
    client.logout().unwrap();
}

#[test]
fn append_with_flags_and_date_reads_back() {
    let dovecot = Dovecot::start();
    let mut client = session(&dovecot, "dave");
    create(&mut client, &["Kept".into()]).unwrap();
    let raw = message(1, "", b"Hello.\r\n");
    let flags = ["\\Seen", "\\Flagged", "$Label1"].map(String::from);
    let date = DateTime::parse_from_rfc3339("2019-03-05T08:52:37+02:00").unwrap();
    let uid = client
        .append(
            "Kept",
            &AppendMessage {
                raw: &raw,
                flags: &flags,
                internal_date: Some(date),
            },
        )
        .unwrap()
        .expect("APPENDUID under UIDPLUS");

    // The date only when asked for.
    let mut dates = Vec::new();
    index(&mut client, "Kept", true, (&[], false), |record| {
        dates.push(record.internal_date)
    });
    assert_eq!(dates, [None]);
    let mut seen = Vec::new();
    let status = index(
        &mut client,
        "Kept",
        true,
        (&["MESSAGE-ID", "DATE"], true),
        |record| {
            seen.push((
                record.uid,
                record.size,
                record.flags.clone(),
                record.internal_date,
                record.header.to_vec(),
            ));
        },
    );
    assert_eq!(status.exists, 1);
    assert_eq!(seen.len(), 1);
    let (got_uid, size, got_flags, got_date, header) = &seen[0];
    assert_eq!(*got_uid, uid.uid);
    assert_eq!(status.uid_validity, Some(uid.uid_validity));
    assert_eq!(*size, raw.len() as u64);
    for flag in &flags {
        assert!(got_flags.contains(flag), "{flag} not in {got_flags:?}");
    }
    // Dovecot answers in its own zone: compare instants.
    assert_eq!(got_date.map(|d| d.timestamp()), Some(date.timestamp()));
    let header = String::from_utf8(header.clone()).unwrap();
    assert!(
        header.contains("Message-ID: <1.test@mailferry.example>\r\n"),
        "{header}"
    );
    assert!(header.ends_with("\r\n\r\n"));
}

#[test]
fn multiappend_fifty_messages_and_fetch_them_back() {
    let dovecot = Dovecot::start();
    let mut client = session(&dovecot, "dave");
    create(&mut client, &["Bulk".into()]).unwrap();
    let mut raws: Vec<Vec<u8>> = (0..48)
        .map(|n| message(n, "", format!("Body of message {n}.\r\n").as_bytes()))
        .collect();
    let line = [b'x'; 76]
        .iter()
        .chain(b"\r\n")
        .copied()
        .collect::<Vec<u8>>();
    raws.push(message(48, "", &line.repeat(3_000_000 / line.len())));
    raws.push(message(
        49,
        "Subject: Grüße aus Köln\r\n",
        b"Latin-1 \xe9t\xe9, UTF-8 \xc3\xa9t\xc3\xa9.\r\n",
    ));
    let flags = [vec![], vec!["\\Seen".to_owned()]];
    let messages: Vec<AppendMessage<'_>> = raws
        .iter()
        .enumerate()
        .map(|(n, raw)| AppendMessage {
            raw,
            flags: &flags[n % 2],
            internal_date: None,
        })
        .collect();
    let uids: Vec<u32> = client
        .multiappend("Bulk", &messages)
        .unwrap()
        .iter()
        .map(|stored| stored.uid)
        .collect();
    assert_eq!(uids.len(), 50);

    let mut sizes = HashMap::new();
    let status = index(&mut client, "Bulk", true, (&["MESSAGE-ID"], false), |r| {
        sizes.insert(r.uid, r.size);
    });
    assert_eq!(status.exists, 50);
    let by_uid: HashMap<u32, &Vec<u8>> = uids.iter().copied().zip(&raws).collect();
    for (uid, raw) in &by_uid {
        assert_eq!(sizes[uid], raw.len() as u64);
    }

    let mut fetched = 0;
    client
        .fetch_messages(None, &uids, 8 << 20, None, |m| {
            assert_eq!(
                m.raw,
                by_uid[&m.uid].as_slice(),
                "message with UID {}",
                m.uid
            );
            assert!(m.internal_date.is_some());
            // The 3 MB message is handed over in a buffer of its own, not lent by the client's
            // read buffer for a copy: it is in memory once.
            if m.raw.len() > 1_000_000 {
                assert!(matches!(m.raw, Cow::Owned(_)), "UID {} lent", m.uid);
            }
            fetched += 1;
        })
        .unwrap();
    assert_eq!(fetched, 50);

    // Sizes by UID from the index, with the header fields for the second list only: a UID that
    // does not exist is left out, a mailbox that does not exist is refused alone.
    let mut found = HashMap::new();
    let asked: [(&str, &[u32], &[u32]); 3] = [
        ("Bulk", &[uids[0], 999_999], &[uids[48]]),
        ("Nowhere", &[1], &[]),
        ("Bulk", &[uids[49]], &[]),
    ];
    let opened = client
        .uid_records(
            &asked,
            IndexItems {
                header_fields: &["Message-ID"],
                internal_date: true,
            },
            |i, record| {
                let answer = (record.size, !record.header.is_empty());
                assert!(found.insert((i, record.uid), answer).is_none());
            },
        )
        .unwrap();
    assert_eq!(
        opened[0].as_ref().unwrap().uid_validity,
        status.uid_validity
    );
    assert!(matches!(opened[1], Err(SessionError::Refused(_))));
    assert!(opened[2].is_ok());
    let expected: HashMap<(usize, u32), (u64, bool)> =
        [(0, 0, false), (0, 48, true), (2, 49, false)]
            .into_iter()
            .map(|(i, n, header)| ((i, uids[n]), (raws[n].len() as u64, header)))
            .collect();
    assert_eq!(found, expected);

    // A cap below the 3 MB message is a protocol error, not unbounded memory.
    let big = uids[48];
    assert!(matches!(
        client.fetch_messages(None, &[big], 1 << 20, None, |_| {}),
        Err(SessionError::Protocol(_))
    ));
}

#[test]
fn append_to_a_missing_mailbox_says_trycreate() {
    let dovecot = Dovecot::start();
    let mut client = session(&dovecot, "alice");
    let raw = message(1, "", b"Hi.\r\n");
    let message = AppendMessage {
        raw: &raw,
        flags: &[],
        internal_date: None,
    };
    for result in [
        client.append("Nowhere", &message).map(|_| ()),
        client
            .multiappend("Nowhere", &[message, message])
            .map(|_| ()),
    ] {
        match result {
            Err(SessionError::Refused(text)) => assert!(text.contains("[TRYCREATE]"), "{text}"),
            other => panic!("expected Refused, got {other:?}"),
        }
    }
    // The literals were consumed: the session is still in step.
    create(&mut client, &["Nowhere".into()]).unwrap();
    assert!(client.append("Nowhere", &message).unwrap().is_some());
    client.logout().unwrap();
}

#[test]
fn untagged_bye_ends_the_session_with_its_text() {
    let dovecot = Dovecot::start();
    let mut client = session(&dovecot, "carol");
    client.select("INBOX", true).unwrap();
    let conf = dovecot.conf_path();
    let kicked = Command::new("doveadm")
        .arg("-c")
        .arg(&conf)
        .args(["kick", "carol"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(kicked.status.success(), "{kicked:?}");
    // The BYE is in our receive buffer before we write; Linux hands queued data to a read
    // even after the peer's reset. One command, written alone: the second write of a
    // pipeline (LIST after NAMESPACE) would meet that reset as a broken pipe before anything
    // is read.
    std::thread::sleep(Duration::from_millis(300));
    match client.select("INBOX", true) {
        Err(SessionError::Bye(said)) => {
            assert!(said.contains("Server shutting down"), "{said}");
        }
        other => panic!("expected the BYE as its own error, got {other:?}"),
    }
}

/// Over a slow link each small folder costs a round trip of waiting: a lane asks for its next
/// folder behind the current one. That answer must reach the fetch it was asked for, and
/// nothing else: any other command first reads it and drops it.
#[test]
fn a_fetch_asked_for_ahead_goes_to_its_own_fetch_and_no_other_command() {
    let dovecot = Dovecot::start();
    let trace = Captured::default();
    let mut client = ImapClient::connect(
        &Address {
            trace: Trace::to_writer(Verbosity::Commands, trace.clone()),
            ..address(dovecot.imaps_port())
        },
        TlsMode::Implicit,
        &tls(&dovecot),
    )
    .unwrap();
    client
        .login(&Login::plain("carol", &password("carol")))
        .unwrap();
    let no_flags: Vec<String> = Vec::new();
    let mut folders: HashMap<&str, (Vec<u32>, Vec<Vec<u8>>)> = HashMap::new();
    for folder in ["Ahead/A", "Ahead/B", "Ahead/C"] {
        create(&mut client, &[folder.to_owned()]).unwrap();
        let raws: Vec<Vec<u8>> = (0..3)
            .map(|i| format!("Message-ID: <{i}@{folder}>\r\n\r\nin {folder}\r\n").into_bytes())
            .collect();
        let messages: Vec<AppendMessage<'_>> = raws
            .iter()
            .map(|raw| AppendMessage {
                raw,
                flags: &no_flags,
                internal_date: None,
            })
            .collect();
        let uids = client.multiappend(folder, &messages).unwrap();
        folders.insert(folder, (uids.iter().map(|s| s.uid).collect(), raws));
    }
    let (a_uids, a_raws) = &folders["Ahead/A"];
    let (b_uids, b_raws) = &folders["Ahead/B"];
    let fetch = |client: &mut ImapClient, folder, uids: &[u32], then| {
        let mut got = Vec::new();
        client
            .fetch_messages(Some(folder), uids, 1 << 20, then, |m| {
                got.push(m.raw.into_owned())
            })
            .unwrap();
        got.sort();
        got
    };
    let sorted = |raws: &[Vec<u8>]| {
        let mut raws = raws.to_vec();
        raws.sort();
        raws
    };

    // B asked for behind A, then fetched: its answer, without asking again.
    let ahead = Some(("Ahead/B", b_uids.as_slice()));
    assert_eq!(fetch(&mut client, "Ahead/A", a_uids, ahead), sorted(a_raws));
    assert_eq!(fetch(&mut client, "Ahead/B", b_uids, None), sorted(b_raws));
    assert_eq!(trace.commands_with("EXAMINE "), 2, "B's EXAMINE sent once");

    // B asked for behind A, then another command: B's answer is dropped, the command gets
    // its own, and B fetched afterwards is asked for anew.
    assert_eq!(fetch(&mut client, "Ahead/A", a_uids, ahead), sorted(a_raws));
    let names = mailbox_names(&mut client);
    assert!(names.iter().any(|n| n == "Ahead/B"), "{names:?}");
    assert_eq!(fetch(&mut client, "Ahead/B", b_uids, None), sorted(b_raws));
    assert_eq!(trace.commands_with("EXAMINE "), 5);

    // Asked for ahead with other UIDs than fetched: only what the fetch asks for.
    assert_eq!(fetch(&mut client, "Ahead/A", a_uids, ahead), sorted(a_raws));
    assert_eq!(
        fetch(&mut client, "Ahead/B", &b_uids[..1], None),
        sorted(&b_raws[..1])
    );
    assert_eq!(trace.commands_with("EXAMINE "), 8);

    // Folder after folder: each asked for behind the one before, whether that one's answer
    // was asked for ahead or not.
    let (c_uids, c_raws) = &folders["Ahead/C"];
    let then_c = Some(("Ahead/C", c_uids.as_slice()));
    assert_eq!(fetch(&mut client, "Ahead/A", a_uids, ahead), sorted(a_raws));
    assert_eq!(
        fetch(&mut client, "Ahead/B", b_uids, then_c),
        sorted(b_raws)
    );
    assert_eq!(
        trace.commands_with("EXAMINE Ahead/C"),
        1,
        "C asked for behind B, before C's own fetch"
    );
    assert_eq!(fetch(&mut client, "Ahead/C", c_uids, None), sorted(c_raws));
    assert_eq!(
        trace.commands_with("EXAMINE "),
        11,
        "each folder's EXAMINE once"
    );
}
