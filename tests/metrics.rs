//! `mailferry batch --metrics ADDR`, end to end through the binary, against a real Dovecot:
//! the metrics are scraped over HTTP while a batch runs (one account is held up by a relay
//! that stalls its source), checked against the summary the batch writes, and gone when the
//! batch ends; a bad ADDR is a usage error.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::relay::{Fault, Relay};
use support::{Dovecot, password};

/// Longest wait for the batch to reach a state the test looks for.
const PATIENCE: Duration = Duration::from_secs(120);

/// `GET /metrics` on `address`; `None` when nothing answers there.
fn scrape(address: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    Some(body.to_owned())
}

/// The value of one sample (`name` with its labels, as written), if the text has it.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (bounded) for the child to exit; its exit code.
fn wait_for_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the batch did not end within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_running_batch_serves_its_counters_and_they_match_the_summary() {
    let server = Dovecot::start();
    for (user, count) in [("alice", 3), ("carol", 2)] {
        for i in 0..count {
            server.deliver(
                user,
                "INBOX",
                format!(
                    "Message-ID: <{user}-{i}@metrics.test>\r\nSubject: {i}\r\n\r\nbody {i}\r\n"
                )
                .as_bytes(),
            );
        }
    }
    // The third account's source answers nothing until the relay goes: the batch stays up
    // with two accounts done and one running.
    let relay = Relay::start(server.pop3s_port());
    relay.set_faults(&[Fault::Stall(0)]);
    let dir = tempfile::tempdir().unwrap();
    let pop3s = |user: &str, port: u16| format!("pop3s://{user}@127.0.0.1:{port}");
    let imaps = |user: &str| format!("imaps://{user}@127.0.0.1:{}/INBOX", server.imaps_port());
    let accounts = [
        (pop3s("alice", server.pop3s_port()), "alice", "bob"),
        (pop3s("carol", server.pop3s_port()), "carol", "dave"),
        (pop3s("dave", relay.port()), "dave", "alice"),
    ];
    let mut csv = String::from("from,to,from_password_file,to_password_file\n");
    for (from, source, target) in &accounts {
        for user in [source, target] {
            std::fs::write(dir.path().join(format!("{user}.pw")), password(user)).unwrap();
        }
        csv.push_str(&format!(
            "{from},{},{source}.pw,{target}.pw\n",
            imaps(target)
        ));
    }
    let accounts_file = dir.path().join("accounts.csv");
    std::fs::write(&accounts_file, csv).unwrap();
    let reports = dir.path().join("reports");
    let address: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();

    let mut batch = support::mailferry_process("batch")
        .arg(&accounts_file)
        .arg("--report-dir")
        .arg(&reports)
        .arg("--tls-ca")
        .arg(server.cert_path())
        .args(["--jobs", "3", "--timeout", "120", "--retries", "0"])
        .arg("--metrics")
        .arg(address.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + PATIENCE;
    let during = loop {
        if let Some(text) = scrape(address)
            && sample(&text, "mailferry_accounts_finished_total{outcome=\"ok\"}") == Some(2)
            && sample(&text, "mailferry_accounts_running") == Some(1)
        {
            break text;
        }
        if Instant::now() > deadline {
            batch.kill().unwrap();
            panic!(
                "the metrics never showed two accounts ok and one running: {:?}",
                scrape(address)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for family in [
        "# TYPE mailferry_accounts gauge",
        "# TYPE mailferry_accounts_running gauge",
        "# TYPE mailferry_accounts_finished counter",
        "# TYPE mailferry_messages_copied counter",
        "# TYPE mailferry_messages_copied_bytes counter",
        "# TYPE mailferry_messages_failed counter",
        "# TYPE mailferry_messages_failed_bytes counter",
        "# TYPE mailferry_retries counter",
        "# TYPE mailferry_throttles counter",
        "# TYPE mailferry_connections_open gauge",
    ] {
        assert!(during.contains(family), "{family} missing:\n{during}");
    }
    assert_eq!(sample(&during, "mailferry_accounts"), Some(3), "{during}");
    assert_eq!(
        sample(&during, "mailferry_messages_copied_total"),
        Some(5),
        "{during}"
    );
    assert_eq!(
        sample(&during, "mailferry_messages_failed_total"),
        Some(0),
        "{during}"
    );
    // The finished accounts closed theirs; the stalled account holds its two planning
    // connections, opened at once: its source (stalled) and its target (waiting for it).
    assert_eq!(
        sample(&during, "mailferry_connections_open{host=\"127.0.0.1\"}"),
        Some(2),
        "{during}"
    );

    // The stalled connection breaks; with --retries 0 its account fails, and the batch ends.
    drop(relay);
    assert_eq!(wait_for_exit(&mut batch), 1, "one account failed");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(reports.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        (
            summary["ok"].as_u64(),
            summary["failed"].as_u64(),
            summary["copied"].as_u64(),
            summary["bytes_copied"].as_u64(),
        ),
        (
            Some(2),
            Some(1),
            sample(&during, "mailferry_messages_copied_total"),
            sample(&during, "mailferry_messages_copied_bytes_total"),
        ),
        "the summary and the metrics disagree: {summary:#}\n{during}"
    );
    assert!(
        scrape(address).is_none(),
        "the metrics listener outlived the batch"
    );
}

fn accounts_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("accounts.csv");
    std::fs::write(
        &path,
        "from,to\npop3s://a@127.0.0.1:1,imaps://b@127.0.0.1:1\n",
    )
    .unwrap();
    path
}

#[test]
fn a_metrics_address_in_use_or_unparsable_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = accounts_file(dir.path());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = support::mailferry("batch")
        .arg(&accounts)
        .arg("--report-dir")
        .arg(dir.path().join("reports"))
        .args(["--metrics", &address])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("cannot serve --metrics on {address}")),
        "{stderr}"
    );
    assert!(
        !dir.path()
            .join("reports")
            .join("0000-a@127.0.0.1_1.json")
            .exists(),
        "an account ran although the metrics could not be served"
    );

    for bad in ["localhost", "127.0.0.1", "9898", "127.0.0.1:99999"] {
        let output = support::mailferry("batch")
            .arg(&accounts)
            .args(["--metrics", bad])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr
                .lines()
                .next()
                .is_some_and(|l| l.starts_with("error:") && l.contains("--metrics")),
            "{bad}: {stderr}"
        );
    }
}
