//! The POP3 client against a real Dovecot: exact bytes through TOP and RETR (dot lines, 8-bit,
//! a 3 MB message with a 1 MB line), pipelined windows, STLS, plain POP3 and a refused login.

mod support;

use std::time::Duration;

use mailferry::auth::Login;
use mailferry::error::SessionError;
use mailferry::net::{Address, TlsConfig, TlsMode, TlsTrust};
use mailferry::pop3::{FetchError, Pop3Client};
use support::{Dovecot, password};

fn tls(server: &Dovecot) -> TlsConfig {
    TlsConfig::new(&TlsTrust::CaFile(server.cert_path())).unwrap()
}

fn address(port: u16) -> Address {
    Address {
        host: "127.0.0.1".into(),
        port,
        timeout: Duration::from_secs(10),
        trace: Default::default(),
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
        dovecot.deliver("carol", "INBOX", message);
    }
    let mut client = Pop3Client::connect(
        &address(dovecot.pop3s_port()),
        TlsMode::Implicit,
        &tls(&dovecot),
    )
    .unwrap();
    assert!(client.is_tls());
    client
        .login(&Login::plain("carol", &password("carol")))
        .unwrap();
    assert!(client.capabilities().has("PIPELINING"));

    let total: u64 = messages.iter().map(|m| m.len() as u64).sum();
    assert_eq!(client.stat().unwrap(), (messages.len() as u32, total));
    let sizes: Vec<_> = (1..).zip(messages.iter().map(|m| m.len() as u64)).collect();
    let listing = client.listing().unwrap();
    assert_eq!(listing.sizes, sizes);
    let uidl = listing.uidls.expect("Dovecot has UIDL");
    assert_eq!(uidl.len(), messages.len());
    let numbers: Vec<u32> = uidl.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=messages.len() as u32).collect::<Vec<_>>());
    let ids: std::collections::HashSet<_> = uidl.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), messages.len(), "UIDLs repeat: {uidl:?}");

    // More messages than either window, so batches are refilled mid-stream.
    let all: Vec<u32> = (1..=messages.len() as u32).collect();
    let mut headers = Vec::new();
    let refused = client.top_headers(&all, keep(&mut headers)).unwrap();
    assert!(refused.is_empty());
    let numbers = |got: &[(u32, Vec<u8>)]| got.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    assert_eq!(numbers(&headers), all);
    for ((n, got), message) in headers.iter().zip(&messages) {
        assert_eq!(got, headers_of(message), "TOP {n} 0");
    }
    let mut fetched = Vec::new();
    let refused = client.retr(&all, 8 << 20, keep(&mut fetched)).unwrap();
    assert!(refused.is_empty());
    assert_eq!(numbers(&fetched), all);
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
    dovecot.deliver("dave", "INBOX", test_messages()[1].as_slice());
    let tls = tls(&dovecot);

    let mut client =
        Pop3Client::connect(&address(dovecot.pop3_port()), TlsMode::StartTls, &tls).unwrap();
    assert!(client.is_tls());
    match client.login(&Login::plain("dave", "Wrong-Secret-42")) {
        Err(err @ SessionError::LoginRefused(_)) => {
            assert!(!format!("{err} {err:?} {client:?}").contains("Wrong-Secret-42"));
        }
        other => panic!("expected LoginRefused, got {other:?}"),
    }
    // A refusal leaves the session in step: the right password works on the same connection.
    client
        .login(&Login::plain("dave", &password("dave")))
        .unwrap();
    let mut got = Vec::new();
    client.retr(&[1], 1 << 20, keep(&mut got)).unwrap();
    assert_eq!(got, [(1, test_messages()[1].clone())]);
    client.quit().unwrap();

    let mut plain =
        Pop3Client::connect(&address(dovecot.pop3_port()), TlsMode::Plain, &tls).unwrap();
    assert!(!plain.is_tls());
    plain
        .login(&Login::plain("dave", &password("dave")))
        .unwrap();
    assert_eq!(plain.stat().unwrap().0, 1);
    plain.quit().unwrap();
}
