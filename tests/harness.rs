//! Tests of the test harness itself (tests/support): if these fail, every Dovecot-backed test
//! would be testing the harness instead of mailferry.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{Dovecot, big_message, fixtures, free_port, normalize_crlf, password};

const TIMEOUT: Duration = Duration::from_secs(10);

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a line");
    line
}

#[test]
fn fixtures_round_trip_through_dovecot_maildir() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 17, "fixtures/ looks incomplete");
    assert!(fixtures.iter().all(|(name, _)| name.ends_with(".eml")));
    let bare_lf = &fixtures.iter().find(|(n, _)| n == "bare-lf.eml").unwrap().1;
    assert!(!bare_lf.contains(&b'\r'), "bare-lf.eml must not contain CR");

    let dovecot = Dovecot::start();
    for (_, raw) in &fixtures {
        dovecot.deliver("carol", "INBOX", raw);
    }
    dovecot.deliver("alice", "Archive/2019", &fixtures[0].1);

    let stored = dovecot.messages("carol", "INBOX");
    assert_eq!(stored.len(), fixtures.len());
    for ((name, raw), message) in fixtures.iter().zip(&stored) {
        assert!(
            normalize_crlf(raw) == normalize_crlf(&message.raw),
            "{name} changed on its way into the maildir"
        );
        assert!(message.flags.is_empty(), "{name}: {:?}", message.flags);
        assert!(!message.raw.contains(&b'\r') || name == "bare-cr.eml");
    }

    let archived = dovecot.messages("alice", "Archive/2019");
    assert_eq!(archived.len(), 1);
    assert_eq!(
        normalize_crlf(&archived[0].raw),
        normalize_crlf(&fixtures[0].1)
    );
    assert!(
        dovecot
            .dir()
            .join("mail/alice/Maildir/.Archive.2019/cur")
            .is_dir()
    );
    assert_eq!(dovecot.folders("alice"), ["INBOX", "Archive/2019"]);
    assert!(dovecot.messages("alice", "INBOX").is_empty());
    assert!(dovecot.messages("alice", "Nowhere").is_empty());

    // The POP3 view of carol's INBOX, through the plain port with the harness's password.
    let stream = connect(dovecot.pop3_port());
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let greeting = read_line(&mut reader);
    assert!(greeting.starts_with("+OK"), "POP3 greeting: {greeting}");
    write!(
        writer,
        "USER carol\r\nPASS {}\r\nSTAT\r\nQUIT\r\n",
        password("carol")
    )
    .unwrap();
    let user = read_line(&mut reader);
    let pass = read_line(&mut reader);
    let stat = read_line(&mut reader);
    assert!(
        user.starts_with("+OK") && pass.starts_with("+OK"),
        "{user}{pass}"
    );
    assert!(
        stat.starts_with(&format!("+OK {} ", fixtures.len())),
        "STAT: {stat}"
    );
}

#[test]
fn tls_ports_serve_the_pinned_certificate() {
    let dovecot = Dovecot::start();
    for (port, greeting) in [
        (dovecot.pop3s_port(), "+OK"),
        (dovecot.imaps_port(), "* OK"),
    ] {
        // `timeout` bounds the TLS client, whose own waits are not bounded.
        let mut client = Command::new("timeout")
            .args([
                "10",
                "openssl",
                "s_client",
                "-quiet",
                "-verify_return_error",
            ])
            .args(["-verify_hostname", "localhost", "-servername", "localhost"])
            .arg("-CAfile")
            .arg(dovecot.cert_path())
            .arg("-connect")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run openssl s_client");
        let logout = if greeting == "+OK" {
            "QUIT\r\n"
        } else {
            "a LOGOUT\r\n"
        };
        client
            .stdin
            .take()
            .unwrap()
            .write_all(logout.as_bytes())
            .unwrap();
        let out = client.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.starts_with(greeting),
            "TLS on port {port}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn append_keeps_flags_date_and_non_ascii_folder_on_disk() {
    let dovecot = Dovecot::start_with("login_greeting = mailferry harness ready");
    let greeting = read_line(&mut BufReader::new(connect(dovecot.imap_port())));
    assert!(greeting.contains("mailferry harness ready"), "{greeting}");

    // 2019-03-05 06:52:37 UTC
    let date = UNIX_EPOCH + Duration::from_secs(1_551_768_757);
    let raw = b"Subject: flagged\r\nMessage-ID: <f@x>\r\n\r\nbody\r\nlone\rcr\r\n";
    dovecot.append(
        "dave",
        "Entw\u{fc}rfe/2019",
        raw,
        &["\\Seen", "\\Flagged", "$Label1"],
        Some(date),
    );
    assert!(
        dovecot
            .dir()
            .join("mail/dave/Maildir/.Entw&APw-rfe.2019")
            .is_dir()
    );
    assert_eq!(dovecot.folders("dave"), ["INBOX", "Entw\u{fc}rfe/2019"]);

    let stored = dovecot.messages("dave", "Entw\u{fc}rfe/2019");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].internal_date, date);
    assert_eq!(stored[0].flags, ["\\Flagged", "\\Seen", "$Label1"]);
    // On disk: CRLF became LF, the lone CR stayed.
    assert_eq!(
        stored[0].raw,
        b"Subject: flagged\nMessage-ID: <f@x>\n\nbody\nlone\rcr\n"
    );
    assert_eq!(normalize_crlf(&stored[0].raw), normalize_crlf(raw));

    let before = SystemTime::now() - Duration::from_secs(5);
    dovecot.deliver("dave", "INBOX", b"Subject: now\r\n\r\n.\r\n");
    let delivered = dovecot.messages("dave", "INBOX");
    assert!(delivered[0].internal_date >= before);

    let imap_port = dovecot.imap_port();
    drop(dovecot);
    let after_drop = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, imap_port).into(), TIMEOUT);
    assert_eq!(
        after_drop.map(|_| ()).unwrap_err().kind(),
        ErrorKind::ConnectionRefused,
        "Dovecot still listens after Drop"
    );
}

/// Line-ending and NUL edge cases: whatever Dovecot does to them, the stored copy must have the
/// same canonical form as the original, through APPEND and through `doveadm save` alike.
const EDGE_CASES: [&[u8]; 9] = [
    b"A: b\r\n\r\nlone\rcr\r\n",
    b"A: b\r\n\r\na\r\r\nb\r\n",
    b"A: b\r\n\r\nx\r\r\r\ny\r\n",
    b"A: b\n\nlf\nonly\n",
    b"A: b\r\n\r\na\n\rb\r\n",
    b"A: b\r\n\r\ncr at end\r",
    b"A: b\r\n\r\nx\r\r",
    b"A: b\r\n\r\nnul\0x\r\n",
    b"A: b\r\n\r\nno final eol",
];

#[test]
fn normalize_crlf_matches_what_dovecot_stores() {
    let dovecot = Dovecot::start();
    for raw in EDGE_CASES {
        dovecot.append("bob", "INBOX", raw, &[], None);
        dovecot.deliver("bob", "Saved", raw);
    }
    let appended = dovecot.messages("bob", "INBOX");
    let saved = dovecot.messages("bob", "Saved");
    assert_eq!(appended.len(), EDGE_CASES.len());
    for ((raw, appended), saved) in EDGE_CASES.iter().zip(&appended).zip(&saved) {
        let shown = String::from_utf8_lossy(raw);
        assert_eq!(
            appended.raw, saved.raw,
            "APPEND and save differ for {shown:?}"
        );
        assert!(
            !appended.raw.windows(2).any(|w| w == b"\r\n")
                || raw.windows(3).any(|w| w == b"\r\r\n")
        );
        assert_eq!(
            normalize_crlf(&appended.raw),
            normalize_crlf(raw),
            "{shown:?}"
        );
    }
}

#[test]
fn normalize_crlf_canonical_form() {
    assert_eq!(normalize_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\rd");
    assert_eq!(normalize_crlf(b"a\r\r\nb"), b"a\r\nb");
    assert_eq!(normalize_crlf(b"a\n\rb\r\r"), b"a\r\n\rb");
    assert_eq!(normalize_crlf(b"nul\0x\xe9"), b"nul\x80x\xe9");
    assert_eq!(normalize_crlf(b"no final eol"), b"no final eol");
    for raw in EDGE_CASES {
        assert_eq!(normalize_crlf(&normalize_crlf(raw)), normalize_crlf(raw));
    }
}

#[test]
fn big_message_is_deterministic_crlf_and_about_the_size_asked() {
    let size = 2_000_000;
    let message = big_message(size, 7);
    assert_eq!(message, big_message(size, 7));
    assert_ne!(message, big_message(size, 8));
    assert!(message.len().abs_diff(size) <= 100, "{}", message.len());
    assert!(message.windows(11).any(|w| w == b"Message-ID:"));
    assert_eq!(
        normalize_crlf(&message),
        message,
        "not CRLF-only or has NUL"
    );
    let longest = message.split(|&b| b == b'\n').map(<[u8]>::len).max();
    assert!(longest.unwrap() <= 200);
    assert!(big_message(100, 1).len() < 1500);
}

#[test]
fn free_port_refuses_connections() {
    let port = free_port();
    let refused = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), TIMEOUT);
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
}

#[test]
fn a_20_mb_message_goes_through_deliver_unchanged() {
    let message = big_message(20_000_000, 1);
    let dovecot = Dovecot::start();
    dovecot.deliver("alice", "INBOX", &message);
    let stored = dovecot.messages("alice", "INBOX");
    assert_eq!(stored.len(), 1);
    assert!(normalize_crlf(&stored[0].raw) == message);
}
