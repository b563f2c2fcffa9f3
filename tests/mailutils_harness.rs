//! Tests of the GNU Mailutils harness (tests/support/mailutils.rs) with both mailbox types: if
//! these fail, every Mailutils-backed test would be testing the harness instead of mailferry.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use mailferry::net::{Address, Connection, TlsConfig, TlsTrust};
use support::mailutils::{MailboxType, Mailutils, getent, without_status_headers};
use support::{USERS, password};

const TIMEOUT: Duration = Duration::from_secs(10);

/// How a test connection gets its TLS.
#[derive(Debug, Clone, Copy)]
enum Tls {
    Off,
    Upgrade,
    Implicit,
}

fn read_line(connection: &mut Connection) -> String {
    let mut line = String::new();
    connection.read_line(&mut line).expect("read a line");
    line
}

/// Connected and greeted, with TLS as asked (verified against the pinned certificate).
fn open(port: u16, imap: bool, tls: Tls, config: &TlsConfig) -> Connection {
    let address = Address {
        host: "127.0.0.1".into(),
        port,
        timeout: TIMEOUT,
        trace: Default::default(),
    };
    let mut connection = match tls {
        Tls::Implicit => Connection::connect_tls(&address, config),
        Tls::Off | Tls::Upgrade => Connection::connect_plain(&address),
    }
    .unwrap_or_else(|e| panic!("connect to port {port} ({tls:?}): {e}"));
    let greeting = read_line(&mut connection);
    assert!(
        greeting.starts_with(if imap { "* OK" } else { "+OK" }),
        "greeting on port {port}: {greeting}"
    );
    if let Tls::Upgrade = tls {
        let (command, ok) = if imap {
            ("S STARTTLS\r\n", "S OK")
        } else {
            ("STLS\r\n", "+OK")
        };
        connection.write_all(command.as_bytes()).unwrap();
        let answer = read_line(&mut connection);
        assert!(answer.starts_with(ok), "{command:?} answered {answer}");
        connection = connection
            .start_tls("127.0.0.1", config)
            .unwrap_or_else(|e| panic!("TLS upgrade on port {port}: {e}"));
    }
    assert_eq!(connection.is_tls(), !matches!(tls, Tls::Off));
    connection
}

/// IMAP LOGIN or POP3 USER/PASS; whether the server accepted `secret`.
fn log_in(connection: &mut Connection, imap: bool, user: &str, secret: &str) -> bool {
    if imap {
        write!(connection, "L LOGIN {user} \"{secret}\"\r\n").unwrap();
        loop {
            let line = read_line(connection);
            if let Some(status) = line.strip_prefix("L ") {
                return status.starts_with("OK");
            }
        }
    }
    write!(connection, "USER {user}\r\n").unwrap();
    let answer = read_line(connection);
    assert!(answer.starts_with("+OK"), "USER {user}: {answer}");
    write!(connection, "PASS {secret}\r\n").unwrap();
    read_line(connection).starts_with("+OK")
}

/// `From:` and `Date:` headers, a dot line and 8-bit text: one of three test messages.
fn message(n: usize) -> Vec<u8> {
    format!(
        "From: Sender <sender@example.org>\r\nTo: carol@example.net\r\nSubject: message {n}\r\n\
         Date: Tue, 1 Jun 2021 10:20:3{n} +0200\r\nMessage-ID: <{n}@mailutils.test>\r\n\r\n\
         body {n}\r\n.leading dot\r\ncaf\u{e9}\r\n"
    )
    .into_bytes()
}

/// Every entry below `dir` belongs to nobody:mail.
fn assert_owned_by_nobody_mail(dir: &Path) {
    let (uid, gid) = (getent("passwd", "nobody"), getent("group", "mail"));
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{}", path.display());
        if meta.is_dir() {
            assert_owned_by_nobody_mail(&path);
        }
    }
}

fn logins_mail_and_folders(mailbox_type: MailboxType) {
    let server = Mailutils::start(mailbox_type);
    assert_eq!(server.mailbox_type(), mailbox_type);
    let config = TlsConfig::new(&TlsTrust::CaFile(server.cert_path())).unwrap();

    // Every way in, each on its own connection.
    let ways = [
        (server.imap_port(), true, Tls::Off),
        (server.imap_port(), true, Tls::Upgrade),
        (server.imaps_port(), true, Tls::Implicit),
        (server.pop3_port(), false, Tls::Off),
        (server.pop3_port(), false, Tls::Upgrade),
        (server.pop3s_port(), false, Tls::Implicit),
    ];
    for (port, imap, tls) in ways {
        let mut connection = open(port, imap, tls, &config);
        assert!(
            log_in(&mut connection, imap, "bob", &password("bob")),
            "bob refused on port {port} ({tls:?})"
        );
        let mut refused = open(port, imap, tls, &config);
        assert!(
            !log_in(&mut refused, imap, "bob", "Wrong-Secret-42"),
            "a wrong password got in on port {port} ({tls:?})"
        );
    }
    // Every user logs in and finds an INBOX.
    for user in USERS {
        assert_eq!(server.folders(user), ["INBOX"], "{user}");
    }
    assert!(server.log().contains("user `bob' logged in"));

    // Three messages in, read back over IMAP and POP3.
    let originals: Vec<Vec<u8>> = (1..=3).map(message).collect();
    let old_date = "05-Mar-2019 08:52:37 +0000";
    server.append(
        "carol",
        "INBOX",
        &originals[0],
        &["\\Seen", "\\Flagged"],
        Some(old_date),
    );
    server.append("carol", "INBOX", &originals[1], &[], None);
    server.deliver("carol", &originals[2]);
    let stored = server.messages("carol", "INBOX");
    assert_eq!(stored.len(), 3);
    assert!(stored.windows(2).all(|pair| pair[0].uid < pair[1].uid));
    for (n, (message, original)) in stored.iter().zip(&originals).enumerate() {
        let served = match mailbox_type {
            MailboxType::Mbox => without_status_headers(&message.raw),
            MailboxType::Maildir => message.raw.clone(),
        };
        assert!(
            served == *original,
            "message {n} served as:\n{}",
            String::from_utf8_lossy(&message.raw)
        );
    }
    let mut first_flags = stored[0].flags.clone();
    first_flags.sort();
    match mailbox_type {
        MailboxType::Mbox => {
            assert_eq!(first_flags, ["\\Flagged", "\\Seen"]);
            assert_eq!(stored[0].internal_date, old_date);
            // Without a date, the Date: header (in UTC).
            assert_eq!(stored[1].internal_date, "01-Jun-2021 08:20:32 +0000");
        }
        MailboxType::Maildir => {
            assert!(first_flags.is_empty(), "{first_flags:?}");
            assert_ne!(stored[0].internal_date, old_date);
        }
    }
    assert!(stored[1].flags.is_empty() && stored[2].flags.is_empty());

    let listing = server.pop3_uidls("carol");
    let numbers: Vec<u32> = listing.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3]);
    let mut uidls: Vec<&str> = listing.iter().map(|(_, uidl, _)| uidl.as_str()).collect();
    uidls.sort();
    uidls.dedup();
    assert_eq!(uidls.len(), 3, "{listing:?}");
    // pop3d wrote each UIDL into its message as an X-UIDL header and LIST counts it. (In an
    // mbox pop3d also marks the messages old in their Status headers as it closes the mailbox,
    // after LIST; so the sizes are compared with the messages as served before.)
    let after_pop3 = server.messages("carol", "INBOX");
    assert_eq!(after_pop3.len(), 3);
    let before_pop3 = stored.iter().zip(&originals);
    for ((_, uidl, size), (message, (before, original))) in
        listing.iter().zip(after_pop3.iter().zip(before_pop3))
    {
        let header = format!("X-UIDL: {uidl}\r\n");
        assert!(
            message
                .raw
                .windows(header.len())
                .any(|w| w == header.as_bytes())
        );
        assert_eq!(without_status_headers(&message.raw), *original);
        let listed = before.raw.len() + header.len();
        assert_eq!(*size, listed as u64, "{listing:?}");
    }
    assert_owned_by_nobody_mail(&server.dir().join("mail"));

    // Folders, nested and non-ASCII.
    server.create_folder("dave", "Archive/2019");
    server.create_folder("dave", "Entwürfe");
    server.create_folder("dave", "Entwürfe");
    server.create_folder("dave", "INBOX");
    server.append("dave", "Archive/2019", &originals[0], &[], Some(old_date));
    server.append("dave", "Sent items", &originals[1], &[], Some(old_date));
    assert_eq!(
        server.folders("dave"),
        ["INBOX", "Archive/2019", "Entwürfe", "Sent items"]
    );
    assert_eq!(server.messages("dave", "Archive/2019").len(), 1);
    assert_eq!(server.messages("dave", "Sent items").len(), 1);
    assert!(server.messages("dave", "Entwürfe").is_empty());
    assert!(server.messages("dave", "INBOX").is_empty());
    assert!(server.messages("dave", "Nowhere").is_empty());
    let on_disk = server.dir().join("mail/dave/Archive/2019");
    assert_eq!(on_disk.is_dir(), mailbox_type == MailboxType::Maildir);
    assert!(on_disk.exists());
}

#[test]
fn mbox_logins_mail_and_folders() {
    logins_mail_and_folders(MailboxType::Mbox);
}

#[test]
fn maildir_logins_mail_and_folders() {
    logins_mail_and_folders(MailboxType::Maildir);
}

#[test]
fn drop_closes_ports_and_ends_sessions() {
    let server = Mailutils::start(MailboxType::Maildir);
    let ports = [
        server.imap_port(),
        server.imaps_port(),
        server.pop3_port(),
        server.pop3s_port(),
    ];
    let dir = server.dir().to_owned();
    let session = TcpStream::connect((Ipv4Addr::LOCALHOST, server.imap_port())).unwrap();
    session.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = BufReader::new(session.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    write!(&session, "L LOGIN alice \"{}\"\r\n", password("alice")).unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("L OK"), "{line}");

    drop(server);
    // The logged-in imap4d was killed: the session ends (a read timeout would mean it lives).
    line.clear();
    match reader.read_line(&mut line) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("session still open after drop: {other:?} {line:?}"),
    }
    for port in ports {
        let refused = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "port {port}");
    }
    assert!(!dir.exists());
}
