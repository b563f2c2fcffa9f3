// TODO(harness): switch to tests/support once it lands
//! The POP3 client against a real Dovecot (bytes compared exactly), plus a scripted fake server
//! for what Dovecot can't be made to do (no CAPA, USER/PASS only, `[IN-USE]`, no STLS).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use mailferry::error::SessionError;
use mailferry::net::{Address, TlsConfig, TlsTrust};
use mailferry::pop3::{FetchError, Pop3Client, TlsMode};

const KIT: &str = "/work/shared/bench-kit";

/// A private Dovecot, stopped when dropped.
struct Dovecot {
    dir: tempfile::TempDir,
    pop3: u16,
    pop3s: u16,
}

impl Dovecot {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mfp3")
            .tempdir_in("/tmp")
            .unwrap();
        let ports = free_ports();
        // Dovecot daemonises holding the script's stdout and stderr, so pipes would never
        // reach EOF: send them to a file.
        let log = File::create(dir.path().join("up.log")).unwrap();
        let status = Command::new(format!("{KIT}/dovecot-up.sh"))
            .arg(dir.path())
            .envs(
                [("IMAP_PORT", ports[0]), ("IMAPS_PORT", ports[1])]
                    .map(|(k, p)| (k, p.to_string())),
            )
            .envs(
                [("POP3_PORT", ports[2]), ("POP3S_PORT", ports[3])]
                    .map(|(k, p)| (k, p.to_string())),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .unwrap();
        let dovecot = Dovecot {
            dir,
            pop3: ports[2],
            pop3s: ports[3],
        };
        let log = std::fs::read_to_string(dovecot.path("up.log")).unwrap_or_default();
        assert!(status.success(), "dovecot-up.sh failed: {log}");
        dovecot
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn save(&self, user: &str, message: &[u8]) {
        let mut child = Command::new("doveadm")
            .arg("-c")
            .arg(self.path("dovecot.conf"))
            .args(["save", "-u", user])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(message).unwrap();
        assert!(child.wait().unwrap().success(), "doveadm save failed");
    }

    fn tls(&self) -> TlsConfig {
        TlsConfig::new(&TlsTrust::CaFile(self.path("cert.pem"))).unwrap()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new(format!("{KIT}/dovecot-down.sh"))
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .status();
    }
}

fn free_ports() -> Vec<u16> {
    let listeners: Vec<_> = (0..4)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn address(port: u16) -> Address {
    Address {
        host: "127.0.0.1".into(),
        port,
        timeout: Duration::from_secs(10),
    }
}

/// CRLF messages that stress byte fidelity: dot lines, 8-bit, 3 MB with a 1 MB line.
fn test_messages() -> Vec<Vec<u8>> {
    let dots = b"From: a@example.org\r\nSubject: dots\r\n\r\n.\r\n..\r\n.lead\r\nend.\r\n...\r\n";
    let eight_bit = b"From: b@example.org\r\nSubject: caf\xe9\r\n\r\n\xff\xfe\x80 \xc3\x28 raw\r\n";
    let mut big = b"From: c@example.org\r\nSubject: big\r\n\r\n".to_vec();
    big.extend(vec![b'L'; 1 << 20]);
    big.extend_from_slice(b"\r\n");
    while big.len() < 3 << 20 {
        big.extend_from_slice(b".line of a big message, starting with a dot, 60 bytes long\r\n");
    }
    let mut messages = vec![dots.to_vec(), eight_bit.to_vec(), big];
    for i in 0..67 {
        messages.push(format!("From: f@example.org\r\nSubject: filler {i}\r\n\r\nfill\r\n").into());
    }
    messages
}

/// A callback that keeps whatever it is given.
fn keep(into: &mut Vec<(u32, Vec<u8>)>) -> impl FnMut(u32, Vec<u8>) -> Result<(), ()> + '_ {
    move |n, bytes| {
        into.push((n, bytes));
        Ok(())
    }
}

fn headers_of(message: &[u8]) -> &[u8] {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &message[..end + 4]
}

#[test]
fn pop3s_fetches_exact_bytes() {
    let dovecot = Dovecot::start();
    let messages = test_messages();
    for message in &messages {
        dovecot.save("carol", message);
    }
    let mut client =
        Pop3Client::connect(&address(dovecot.pop3s), TlsMode::Implicit, &dovecot.tls()).unwrap();
    assert!(client.is_tls());
    client.login("carol", "carolpass").unwrap();
    assert!(client.capabilities().has("PIPELINING"));

    let total: u64 = messages.iter().map(|m| m.len() as u64).sum();
    assert_eq!(client.stat().unwrap(), (messages.len() as u32, total));
    let sizes: Vec<_> = (1..).zip(messages.iter().map(|m| m.len() as u64)).collect();
    assert_eq!(client.list().unwrap(), sizes);
    let uidl = client.uidl().unwrap();
    assert_eq!(uidl.len(), messages.len());
    let mut ids: Vec<_> = uidl.iter().map(|(_, id)| id).collect();
    ids.dedup();
    assert_eq!(ids.len(), messages.len());

    // More messages than either window, so batches are refilled mid-stream.
    let all: Vec<u32> = (1..=messages.len() as u32).collect();
    let mut headers = Vec::new();
    let refused = client.top_headers(&all, keep(&mut headers)).unwrap();
    assert!(refused.is_empty());
    for ((n, got), message) in headers.iter().zip(&messages) {
        assert_eq!(got, headers_of(message), "TOP {n} 0");
    }
    let mut fetched = Vec::new();
    let refused = client.retr(&all, 8 << 20, keep(&mut fetched)).unwrap();
    assert!(refused.is_empty());
    assert_eq!(fetched.len(), messages.len());
    for ((n, got), message) in fetched.iter().zip(&messages) {
        assert!(
            got == message,
            "RETR {n}: {} bytes, expected {}",
            got.len(),
            message.len()
        );
    }

    // A missing message is reported and the rest still arrive.
    let mut seen = Vec::new();
    let refused = client.retr(&[1, 999, 2], 1 << 20, keep(&mut seen)).unwrap();
    assert_eq!(seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, 999);

    // The caller stops early: the error comes back as is, and the client is done.
    let mut count = 0;
    let stopped = client.retr(&all, 8 << 20, |_, _| {
        count += 1;
        if count == 3 {
            Err("receiver gone")
        } else {
            Ok(())
        }
    });
    assert!(matches!(stopped, Err(FetchError::Stopped("receiver gone"))));
    assert!(matches!(client.stat(), Err(SessionError::Io(_))));
    client.quit().unwrap();
}

#[test]
fn stls_plain_and_refused_login() {
    let dovecot = Dovecot::start();
    dovecot.save("dave", test_messages()[1].as_slice());
    let tls = dovecot.tls();

    let mut client = Pop3Client::connect(&address(dovecot.pop3), TlsMode::StartTls, &tls).unwrap();
    assert!(client.is_tls());
    match client.login("dave", "Wrong-Secret-42") {
        Err(err @ SessionError::LoginRefused(_)) => {
            assert!(!format!("{err} {err:?} {client:?}").contains("Wrong-Secret-42"));
        }
        other => panic!("expected LoginRefused, got {other:?}"),
    }
    // A refusal leaves the session in step: the right password works on the same connection.
    client.login("dave", "davepass").unwrap();
    let mut got = Vec::new();
    client.retr(&[1], 1 << 20, keep(&mut got)).unwrap();
    assert_eq!(got, [(1, test_messages()[1].clone())]);
    client.quit().unwrap();

    let mut plain = Pop3Client::connect(&address(dovecot.pop3), TlsMode::Plain, &tls).unwrap();
    assert!(!plain.is_tls());
    plain.login("dave", "davepass").unwrap();
    assert_eq!(plain.stat().unwrap().0, 1);
    plain.quit().unwrap();
}

/// Serves one connection: sends `greeting`, then for each expected command line its reply.
/// Returns the command lines received.
fn fake_server(
    greeting: &'static str,
    script: Vec<(&'static str, &'static str)>,
) -> (u16, thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        writer.write_all(greeting.as_bytes()).unwrap();
        let mut received = Vec::new();
        for (expected, reply) in script {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            assert_eq!(line.trim_end(), expected);
            received.push(line.trim_end().to_owned());
            writer.write_all(reply.as_bytes()).unwrap();
        }
        received
    });
    (port, handle)
}

#[test]
fn old_server_user_pass_in_use_and_no_pipelining() {
    let (port, server) = fake_server(
        "+OK ready <1896.697170952@fake>\r\n",
        vec![
            ("CAPA", "-ERR what?\r\n"),
            ("USER carol", "+OK\r\n"),
            ("PASS s3cret", "-ERR [IN-USE] mailbox locked\r\n"),
            ("USER carol", "+OK\r\n"),
            ("PASS s3cret", "+OK\r\n"),
            ("CAPA", "-ERR what?\r\n"),
            ("RETR 1", "+OK\r\n..x\r\né\r\n.\r\n"),
            ("RETR 2", "-ERR no such message\r\n"),
            ("QUIT", "+OK bye\r\n"),
        ],
    );
    let tls = TlsConfig::new(&TlsTrust::Insecure).unwrap();
    let mut client = Pop3Client::connect(&address(port), TlsMode::Plain, &tls).unwrap();
    assert_eq!(client.apop_timestamp(), Some("<1896.697170952@fake>"));
    let err = client.login("carol", "s3cret").unwrap_err();
    assert!(
        matches!(&err, SessionError::Refused(text) if text.contains("IN-USE")),
        "{err:?}"
    );
    client.login("carol", "s3cret").unwrap();
    let mut got = Vec::new();
    let refused = client.retr(&[1, 2], 100, keep(&mut got)).unwrap();
    assert_eq!(got, [(1, ".x\r\né\r\n".as_bytes().to_vec())]);
    assert_eq!(refused, [(2, "no such message".to_owned())]);
    client.quit().unwrap();
    assert_eq!(server.join().unwrap().len(), 9);
}

#[test]
fn starttls_refused_is_unsupported() {
    let (port, server) = fake_server(
        "+OK ready\r\n",
        vec![
            ("CAPA", "+OK\r\nUSER\r\n.\r\n"),
            ("STLS", "-ERR not here\r\n"),
        ],
    );
    let tls = TlsConfig::new(&TlsTrust::Insecure).unwrap();
    let err = Pop3Client::connect(&address(port), TlsMode::StartTls, &tls).unwrap_err();
    assert!(
        matches!(&err, SessionError::Unsupported(text) if text.contains("STLS")),
        "{err:?}"
    );
    server.join().unwrap();
}

#[test]
fn long_credentials_go_after_a_sasl_continuation() {
    let password = "p".repeat(200);
    let response = mailferry::pop3::codec::sasl_plain("erin", &password);
    let script = vec![
        ("CAPA", "+OK\r\nSASL PLAIN\r\n.\r\n"),
        ("AUTH PLAIN", "+ \r\n"),
        (response.clone().leak() as &str, "-ERR [AUTH] bad\r\n"),
    ];
    let (port, server) = fake_server("+OK ready\r\n", script);
    let tls = TlsConfig::new(&TlsTrust::Insecure).unwrap();
    let mut client = Pop3Client::connect(&address(port), TlsMode::Plain, &tls).unwrap();
    let err = client.login("erin", &password).unwrap_err();
    assert!(
        matches!(&err, SessionError::LoginRefused(text) if text == "[AUTH] bad"),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains(&response));
    server.join().unwrap();
}
