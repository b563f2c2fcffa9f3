//! Faults: target (and source) connections that break mid-transfer or stall, injected by
//! `support::relay` between mailferry and a real Dovecot. Whatever breaks, each message must
//! end up on the target exactly once: within the run when `--retries` lets the upload workers
//! reconnect, or by re-running when it does not.
//!
//! Carol's POP3 maildrop is copied into one fresh folder of alice's per trial, so one Dovecot
//! serves many trials. The mailbox holds 150 messages with identities that occur more than
//! once across the two batches they are uploaded in (see [`mailbox`]), and each target folder
//! already holds one copy of a repeated identity, so 149 are copied, in batches of 100 and 49:
//! a recovery that miscounts any of these duplicates or loses a message.

mod support;

use std::collections::HashMap;
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use support::relay::{ConnectionLog, Fault, Relay};
use support::{Accounts, Dovecot, SplitMix64, account_url, mailferry, normalize_crlf, password};

/// Dovecot's capabilities after login without MULTIAPPEND, so mailferry uploads one message per
/// APPEND: a connection that breaks mid-batch leaves the first part of the batch stored.
const NO_MULTIAPPEND: &str = "imap_capability = IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE \
                              UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED CONDSTORE \
                              SPECIAL-USE\n";

/// How long a test waits for one mailferry run before killing it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Messages the source holds: index → what is special about it.
const TWIN: [usize; 2] = [10, 120];
const TRIPLET: [usize; 3] = [20, 60, 140];
const NO_ID: [usize; 2] = [30, 130];
/// The triplet member the target folder holds before each trial.
const ALREADY_THERE: usize = TRIPLET[0];

/// Carol's maildrop: `messages` messages (at least 150) of 1–4 KB. Two pairs share an identity (a Message-ID, and
/// the fingerprint of two messages without one) and three messages share another, each time
/// across both batches, with different bodies.
fn mailbox(messages: usize) -> Vec<Vec<u8>> {
    let mut rng = SplitMix64(0x6d61_696c);
    let mailbox: Vec<Vec<u8>> = (0..messages)
        .map(|i| {
            // Same headers and size: the two messages without a Message-ID share a fingerprint.
            let (subject, len) = if NO_ID.contains(&i) {
                ("no id".to_string(), 2000)
            } else {
                (format!("message {i}"), 1000 + (rng.next() % 3000) as usize)
            };
            let body = rng.text(len);
            let id = if TWIN.contains(&i) {
                "Message-ID: <twin@mailferry.test>\r\n".to_string()
            } else if TRIPLET.contains(&i) {
                "Message-ID: <triplet@mailferry.test>\r\n".to_string()
            } else if NO_ID.contains(&i) {
                String::new()
            } else {
                format!("Message-ID: <fault-{i}@mailferry.test>\r\n")
            };
            format!(
                "From: Fault Test <faults@example.org>\r\nTo: carol@example.net\r\n\
                 Date: Mon, 6 Jan 2020 09:15:27 +0000\r\nSubject: {subject}\r\n{id}\r\n{body}\r\n"
            )
            .into_bytes()
        })
        .collect();
    let identity = |i: usize| {
        let raw = &mailbox[i];
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        mailferry::identity::identify(&raw[..end])
    };
    for group in [&TWIN[..], &TRIPLET[..], &NO_ID[..]] {
        assert!(group.iter().all(|&i| identity(i) == identity(group[0])));
        assert!(
            group
                .iter()
                .skip(1)
                .all(|&i| mailbox[i] != mailbox[group[0]])
        );
    }
    mailbox
}

/// Dovecot's default, an fsync per stored message, would make one APPEND per message slow.
const NO_FSYNC: &str = "mail_fsync = never\n";

/// A Dovecot with carol's maildrop of 150 messages loaded (and MULTIAPPEND hidden unless
/// `multiappend`): two batches.
fn server(multiappend: bool) -> (Dovecot, Vec<Vec<u8>>) {
    server_holding(multiappend, 150)
}

/// [`server`] with a maildrop of `messages` messages.
fn server_holding(multiappend: bool, messages: usize) -> (Dovecot, Vec<Vec<u8>>) {
    let server = Dovecot::start_with(&if multiappend {
        NO_FSYNC.to_string()
    } else {
        format!("{NO_FSYNC}{NO_MULTIAPPEND}")
    });
    let mailbox = mailbox(messages);
    server.append_many("carol", "INBOX", &mailbox);
    (server, mailbox)
}

/// A fresh target folder holding one copy of a triplet member, as the trials start from.
fn prepare_folder(server: &Dovecot, folder: &str, mailbox: &[Vec<u8>]) {
    server.append_many("alice", folder, &[mailbox[ALREADY_THERE].clone()]);
}

/// `mailferry migrate` from carol's POP3S maildrop (at `pop3s_port`) to alice's `folder` over
/// IMAPS at `imaps_port` (a relay's, usually), trusting the server's certificate, with one
/// upload connection and a 10 s `--timeout`.
fn migrate(server: &Dovecot, pop3s_port: u16, imaps_port: u16, folder: &str) -> Command {
    migrate_with(server, pop3s_port, imaps_port, folder, 10, 1)
}

/// [`migrate`] with `--timeout SECS` and `--connections N`.
fn migrate_with(
    server: &Dovecot,
    pop3s_port: u16,
    imaps_port: u16,
    folder: &str,
    secs: u64,
    connections: u16,
) -> Command {
    let mut cmd = mailferry("migrate");
    cmd.source_account("pop3s", "carol", pop3s_port)
        .target_account("imaps", "alice", imaps_port, folder)
        .arg("--tls-ca")
        .arg(server.cert_path())
        .args(["--connections", &connections.to_string()])
        .args(["--timeout", &secs.to_string()])
        .timeout(RUN_LIMIT);
    cmd
}

/// Asserts the run's exit code, showing its output (after `trial`) when it differs.
fn assert_exit(output: &Output, code: i32, trial: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{trial}: {}",
        output_text(output)
    );
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts that `folder` holds each message of the mailbox exactly once (byte for byte, after
/// Dovecot's normalisation) and nothing else.
fn assert_exactly_once(server: &Dovecot, folder: &str, mailbox: &[Vec<u8>], trial: &str) {
    let count = |messages: &mut dyn Iterator<Item = &[u8]>| {
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        for raw in messages {
            *counts.entry(normalize_crlf(raw)).or_default() += 1;
        }
        counts
    };
    let want = count(&mut mailbox.iter().map(Vec::as_slice));
    let stored = server.messages("alice", folder);
    let got = count(&mut stored.iter().map(|m| m.raw.as_slice()));
    if want == got {
        return;
    }
    let subject = |raw: &[u8]| {
        let text = String::from_utf8_lossy(raw);
        text.lines()
            .find(|l| l.starts_with("Subject:"))
            .unwrap_or("?")
            .to_string()
    };
    let mut wrong = Vec::new();
    for (raw, n) in &want {
        let have = got.get(raw).copied().unwrap_or(0);
        if have != *n {
            wrong.push(format!("{}: {have} copies, want {n}", subject(raw)));
        }
    }
    for raw in got.keys().filter(|raw| !want.contains_key(*raw)) {
        wrong.push(format!("{}: not from the source", subject(raw)));
    }
    panic!(
        "{trial}: {folder} holds {} messages, want {}: {}",
        stored.len(),
        mailbox.len(),
        wrong.join("; ")
    );
}

/// `n` distinct offsets in `range`, the same for the same seed.
fn offsets(seed: u64, n: usize, range: std::ops::Range<u64>) -> Vec<u64> {
    let mut rng = SplitMix64(seed);
    let mut picked = Vec::new();
    while picked.len() < n {
        let offset = range.start + rng.next() % (range.end - range.start);
        if !picked.contains(&offset) {
            picked.push(offset);
        }
    }
    picked
}

/// Trial `i`'s folder. Every folder of a test has a name of the same length: the client's
/// bytes (APPEND names the folder) then line up with the calibration's.
fn trial_folder(prefix: &str, i: usize) -> String {
    assert!(i < 100);
    format!("{prefix}{i:02}")
}

/// A clean run through the relay into a folder of its own (trial 99 of `prefix`): the relay's
/// log of the upload worker's connection. With `--connections 1` the target has one
/// connection: it plans, then uploads, then verifies.
fn calibrate(server: &Dovecot, relay: &Relay, mailbox: &[Vec<u8>], prefix: &str) -> ConnectionLog {
    let folder = trial_folder(prefix, 99);
    prepare_folder(server, &folder, mailbox);
    relay.set_faults(&[]);
    let output = migrate(server, server.pop3s_port(), relay.port(), &folder)
        .output()
        .unwrap();
    assert_exit(&output, 0, "");
    assert_exactly_once(server, &folder, mailbox, "calibration");
    let connections = relay.connections();
    assert_eq!(connections.len(), 1, "{connections:?}");
    connections[0].clone()
}

/// How many bytes the client of `worker` (a calibration) had sent when the planning's last
/// answer came: the uploads start after. Planning sends well under 10,000 bytes and the first
/// upload more than that, so the last answer before 10,000 is the index's (or, one message
/// per APPEND, an early upload's, which only moves the start a little later).
fn uploads_from(worker: &ConnectionLog) -> u64 {
    let planned = worker.replies.iter().map(|reply| reply.sent);
    planned
        .filter(|sent| *sent < 10_000)
        .max()
        .expect("planning answers")
}

/// Runs one trial per fault on the upload worker's connection (the planning one, the only one
/// until a fault) into a fresh folder, with the default `--retries`: each run must exit 0 with
/// every message there once.
fn retried_trials(
    server: &Dovecot,
    relay: &Relay,
    mailbox: &[Vec<u8>],
    name: &str,
    faults: &[Fault],
) {
    for (i, fault) in faults.iter().enumerate() {
        let folder = trial_folder(name, i);
        let trial = format!("{fault:?} into {folder}");
        prepare_folder(server, &folder, mailbox);
        relay.set_faults(&[*fault]);
        let output = migrate(server, server.pop3s_port(), relay.port(), &folder)
            .output()
            .unwrap();
        assert_exit(&output, 0, &trial);
        let connections = relay.connections();
        assert!(
            connections[0].fired,
            "{trial}: the fault never fired: {connections:?}"
        );
        // The faulty one and at least one reconnection (verification uses the last).
        assert!(
            connections.len() >= 2,
            "{trial}: no reconnection: {connections:?}"
        );
        assert_exactly_once(server, &folder, mailbox, &trial);
    }
}

/// 20 cut points on the upload worker's connection of `worker` (a calibration): 3 in the TLS
/// handshake (before the server's first answer) and 17 in the APPEND commands, between the
/// planning's last answer and the last upload's answer (mostly inside literals: a message is
/// 1–4 KB, its command line some 50 bytes). Not while planning (a break there is not retried,
/// exit 4), nor in the verification or LOGOUT that follow the uploads (a cut there tests no
/// upload).
fn cut_offsets(seed: u64, worker: &ConnectionLog) -> Vec<u64> {
    let handshake = worker.replies.first().expect("the server answered").sent;
    let uploads = uploads_from(worker)..uploads_until(worker);
    assert!(
        uploads.end - uploads.start > 10_000,
        "no upload phase in {worker:?}"
    );
    let mut picked = offsets(seed, 3, 1..handshake);
    picked.extend(offsets(seed + 1, 17, uploads));
    picked
}

/// How many bytes the client of `worker` (a calibration) had sent when the verification's
/// answer came: the verification follows the uploads on the same connection (all of it,
/// pipelined), and the answers after it are to LOGOUT (or the TLS close_notify Dovecot sends
/// when the client hangs up).
fn verification_sent(worker: &ConnectionLog) -> u64 {
    (worker.replies.iter().map(|reply| reply.sent))
        .filter(|sent| *sent < worker.to_server)
        .max()
        .expect("the verification's answer")
}

/// How many bytes the client of `worker` (a calibration) had sent when the last answer to an
/// upload came: the end of the last APPEND it waited for.
fn uploads_until(worker: &ConnectionLog) -> u64 {
    let verification = verification_sent(worker);
    (worker.replies.iter().map(|reply| reply.sent))
        .filter(|sent| *sent < verification)
        .max()
        .expect("an answer to an upload")
}

/// Faults losing the server's answers to uploads on the worker's connection of `worker` (a
/// calibration): its APPEND answers, one per batch with MULTIAPPEND, one per message without,
/// are the records that arrived after the upload began, and each came when the client had sent
/// its APPEND up to the end. At most `n` of them, seeded. The last records are not: they
/// answer the verification or LOGOUT (see [`verification_sent`]).
fn answer_losses(seed: u64, n: usize, worker: &ConnectionLog) -> Vec<Fault> {
    let verification = verification_sent(worker);
    let mut ends: Vec<u64> = worker
        .replies
        .iter()
        .map(|reply| reply.sent)
        .filter(|sent| *sent > uploads_from(worker) && *sent < verification)
        .collect();
    assert!(ends.len() >= 2, "no answers to uploads in {worker:?}");
    if ends.len() > n {
        let picked = offsets(seed, n, 0..ends.len() as u64);
        ends = picked.into_iter().map(|i| ends[i as usize]).collect();
    }
    ends.into_iter().map(Fault::LoseAnswer).collect()
}

/// (a), within the run: one APPEND per message, so a cut leaves the first part of the batch
/// on the target, and the batch's first messages were stored while the rest was not. A retry
/// that sent the whole batch again would duplicate them.
#[test]
fn retries_complete_uploads_cut_at_20_offsets_without_duplicates() {
    let (server, mailbox) = server(false);
    let relay = Relay::start(server.imaps_port());
    let worker = calibrate(&server, &relay, &mailbox, "Cut");
    let cuts: Vec<Fault> = cut_offsets(0xc0ffee, &worker)
        .into_iter()
        .map(Fault::Cut)
        .collect();
    retried_trials(&server, &relay, &mailbox, "Cut", &cuts);
}

/// The server stored an upload but its answer is lost with the connection: the retry must find
/// those messages on the target and not send them again. Without MULTIAPPEND (one answer per
/// message) and with it (one per batch: the whole batch was stored).
#[test]
fn retries_find_uploads_whose_answer_was_lost() {
    lost_answer_trials(false);
}

#[test]
fn retries_find_multiappends_whose_answer_was_lost() {
    lost_answer_trials(true);
}

fn lost_answer_trials(multiappend: bool) {
    let (server, mailbox) = server(multiappend);
    let relay = Relay::start(server.imaps_port());
    let worker = calibrate(&server, &relay, &mailbox, "Lost");
    retried_trials(
        &server,
        &relay,
        &mailbox,
        "Lost",
        &answer_losses(0xa11ce, 6, &worker),
    );
}

/// A connection lost while verifying, with verification's answer (or its second half) lost, is
/// opened again and the copy verified: the run exits 0, not 4, and copies nothing twice.
#[test]
fn a_connection_lost_while_verifying_is_opened_again() {
    let (server, mailbox) = server(true);
    let relay = Relay::start(server.imaps_port());
    let worker = calibrate(&server, &relay, &mailbox, "Verify");
    let verification = verification_sent(&worker);
    // Cut halfway through the verification's answer: its length varies by some bytes from
    // run to run (the answer's TLS records), so a cut near either end may miss it.
    let answer_ends = |before: bool| {
        (worker.replies.iter())
            .filter(|reply| (reply.sent < verification) == before && reply.sent <= verification)
            .map(|reply| reply.end)
            .max()
            .expect("answers before and to the verification")
    };
    let halfway = (answer_ends(true) + answer_ends(false)) / 2;
    retried_trials(
        &server,
        &relay,
        &mailbox,
        "Verify",
        &[Fault::LoseAnswer(verification), Fault::CutAnswer(halfway)],
    );
}

/// Both upload workers (MULTIAPPEND) are cut, each once; the batches share identities, so their
/// recoveries must not count each other's copies. Six batches: with two, the first worker, on
/// the connection planning left logged in, would often send both before the second one has
/// logged in.
#[test]
fn retries_recover_two_workers_cut_in_the_same_run() {
    let (server, mailbox) = server_holding(true, 600);
    let relay = Relay::start(server.imaps_port());
    let mut both_cut = 0;
    // Past 10,000 bytes: the first connection plans before it uploads (see `uploads_from`).
    for (i, cut) in offsets(0xd0d0, 24, 10_000..100_000).chunks(2).enumerate() {
        let folder = trial_folder("Two", i);
        let trial = format!("cuts at {cut:?} into {folder}");
        prepare_folder(&server, &folder, &mailbox);
        relay.set_faults(&[Fault::Cut(cut[0]), Fault::Cut(cut[1])]);
        let output = migrate_with(&server, server.pop3s_port(), relay.port(), &folder, 10, 2)
            .output()
            .unwrap();
        assert_exit(&output, 0, &trial);
        let connections = relay.connections();
        assert!(
            connections[0].fired || connections[1].fired,
            "{trial}: no fault fired: {connections:?}"
        );
        // A worker may send both batches before the other one asks for one (it does not wait
        // for an answer before sending the next): then only its cut fires.
        both_cut += usize::from(connections[0].fired && connections[1].fired);
        assert_exactly_once(&server, &folder, &mailbox, &trial);
    }
    assert!(
        both_cut >= 1,
        "both workers were cut in none of the 12 trials"
    );
}

/// (a), across runs: with `--retries 0` a cut ends the run with exit 4 and one error line
/// naming the target; a re-run completes the copy without duplicates.
#[test]
fn without_retries_a_cut_run_exits_4_and_a_rerun_completes_it() {
    let (server, mailbox) = server(true);
    let relay = Relay::start(server.imaps_port());
    let worker = calibrate(&server, &relay, &mailbox, "Rerun");
    for (i, offset) in cut_offsets(0xbeef, &worker).into_iter().enumerate() {
        let folder = trial_folder("Rerun", i);
        let trial = format!("cut at {offset} into {folder}");
        prepare_folder(&server, &folder, &mailbox);
        relay.set_faults(&[Fault::Cut(offset)]);
        let first = migrate(&server, server.pop3s_port(), relay.port(), &folder)
            .args(["--retries", "0"])
            .output()
            .unwrap();
        assert_exit(&first, 4, &trial);
        assert_one_error(
            &first,
            &format!("imaps://alice@127.0.0.1:{}/{folder}: ", relay.port()),
            &trial,
        );
        let connections = relay.connections();
        assert!(
            connections[0].fired,
            "{trial}: the fault never fired: {connections:?}"
        );
        assert_eq!(
            connections.len(),
            1,
            "{trial}: retried with --retries 0: {connections:?}"
        );

        relay.set_faults(&[]);
        let rerun = migrate(&server, server.pop3s_port(), relay.port(), &folder)
            .args(["--retries", "0"])
            .output()
            .unwrap();
        assert_exit(&rerun, 0, &trial);
        assert_exactly_once(&server, &folder, &mailbox, &trial);
    }
}

/// Exactly one `error:` line, starting with `prefix` (after `error: `), and a `hint:` line.
fn assert_one_error(output: &Output, prefix: &str, trial: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{trial}: {stderr}");
    assert!(
        errors[0].starts_with(&format!("error: {prefix}")),
        "{trial}: {stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.starts_with("hint: ")),
        "{trial}: {stderr}"
    );
    errors[0].to_string()
}

/// (b) A target that stops answering mid-upload, or before the TLS handshake, ends the run
/// after `--timeout` with exit 4 and a one-line error, not a hang; with a retry, a target that
/// stalled once is reconnected and the run completes.
#[test]
fn a_stalled_target_times_out_with_exit_4() {
    let (server, mailbox) = server(true);
    let relay = Relay::start(server.imaps_port());
    let stalling = |folder: &str| {
        let mut cmd = migrate_with(&server, server.pop3s_port(), relay.port(), folder, 2, 1);
        cmd.timeout(Duration::from_secs(30));
        cmd
    };
    let cases = [
        ("Upload", vec![Fault::Stall(100_000)], "0"),
        // The planning connection: --retries would open another one (see
        // `a_target_that_refuses_or_drops_connections_at_the_start`).
        ("Handshake", vec![Fault::Stall(0)], "0"),
    ];
    for (folder, faults, retries) in cases {
        prepare_folder(&server, folder, &mailbox);
        relay.set_faults(&faults);
        let started = Instant::now();
        let output = stalling(folder)
            .args(["--retries", retries])
            .output()
            .unwrap();
        let took = started.elapsed();
        assert_exit(&output, 4, folder);
        let error = assert_one_error(
            &output,
            &format!("imaps://alice@127.0.0.1:{}/{folder}: ", relay.port()),
            folder,
        );
        assert!(
            error.ends_with("timed out waiting for the server"),
            "{folder}: {error}"
        );
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(15),
            "{folder}: took {took:?}"
        );
        assert!(relay.connections()[faults.len() - 1].fired, "{folder}");
    }

    prepare_folder(&server, "Retried", &mailbox);
    relay.set_faults(&[Fault::Stall(100_000)]);
    let started = Instant::now();
    let output = stalling("Retried").output().unwrap();
    assert_exit(&output, 0, "");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(relay.connections()[0].fired);
    assert_exactly_once(&server, "Retried", &mailbox, "stalled once, retried");
}

/// The source's connection (POP3S) cut at seeded offsets, with `--retries 0`: the run ends with
/// exit 4 naming the source, and a re-run completes the copy without duplicates. With retries,
/// a source connection cut before it was logged in is opened again within the run.
#[test]
fn a_cut_source_exits_4_and_a_rerun_completes_it() {
    let (server, mailbox) = server(true);
    let relay = Relay::start(server.pop3s_port());
    prepare_folder(&server, "Calibration", &mailbox);
    let clean = migrate(&server, relay.port(), server.imaps_port(), "Calibration")
        .output()
        .unwrap();
    assert_exit(&clean, 0, "");
    let pop3 = relay.connections();
    assert_eq!(pop3.len(), 1, "a POP3 maildrop is opened once: {pop3:?}");
    for (i, offset) in offsets(0x9093, 6, 1..pop3[0].to_server)
        .into_iter()
        .enumerate()
    {
        let folder = trial_folder("Source", i);
        let trial = format!("source cut at {offset} into {folder}");
        prepare_folder(&server, &folder, &mailbox);
        relay.set_faults(&[Fault::Cut(offset)]);
        let first = migrate(&server, relay.port(), server.imaps_port(), &folder)
            .args(["--retries", "0"])
            .output()
            .unwrap();
        assert_exit(&first, 4, &trial);
        assert_one_error(
            &first,
            &format!("pop3s://carol@127.0.0.1:{}: ", relay.port()),
            &trial,
        );
        assert!(relay.connections()[0].fired, "{trial}");
        relay.set_faults(&[]);
        let rerun = migrate(&server, relay.port(), server.imaps_port(), &folder)
            .output()
            .unwrap();
        assert_exit(&rerun, 0, &trial);
        assert_exactly_once(&server, &folder, &mailbox, &trial);
    }

    // Cut while the messages are read (RETR), with the default retries: a new session is
    // opened, the messages not yet read are found again by UIDL, and the run completes.
    for (i, offset) in fetch_phase_offsets(&pop3[0], 6).into_iter().enumerate() {
        let folder = trial_folder("Resumed", i);
        let trial = format!("source cut at answer byte {offset} (reading) into {folder}");
        prepare_folder(&server, &folder, &mailbox);
        relay.set_faults(&[Fault::CutAnswer(offset)]);
        let output = migrate(&server, relay.port(), server.imaps_port(), &folder)
            .output()
            .unwrap();
        assert_exit(&output, 0, &trial);
        let connections = relay.connections();
        assert!(
            connections[0].fired && connections.len() == 2,
            "{trial}: {connections:?}"
        );
        assert_exactly_once(&server, &folder, &mailbox, &trial);
    }

    // Cut inside the TLS handshake, with the default retries: reconnected, completed.
    prepare_folder(&server, "SourceRetried", &mailbox);
    relay.set_faults(&[Fault::Cut(100)]);
    let output = migrate(&server, relay.port(), server.imaps_port(), "SourceRetried")
        .output()
        .unwrap();
    assert_exit(&output, 0, "");
    let connections = relay.connections();
    assert!(
        connections[0].fired && connections.len() == 2,
        "{connections:?}"
    );
    assert_exactly_once(
        &server,
        "SourceRetried",
        &mailbox,
        "source cut at setup, retried",
    );
}

/// `n` seeded offsets into what the server sent on the POP3 connection `clean` (a
/// calibration), between 20 % and 90 % of it: the message bodies are nearly all of it, so a
/// cut there falls while the messages are read.
fn fetch_phase_offsets(clean: &ConnectionLog, n: usize) -> Vec<u64> {
    let total = clean.to_client;
    offsets(0x7e7, n, total / 5..total / 10 * 9)
}

/// A target that refuses connections when the run starts (its listener not up yet), or that
/// accepts and drops them in the middle of the TLS handshake: the planning connection is
/// retried with backoff and the run completes, each message once. With `--retries 0` the run
/// exits 4 with one error line and writes nothing, and a re-run completes. A wrong password
/// is never retried.
#[test]
fn a_target_that_refuses_or_drops_connections_at_the_start() {
    let (server, mailbox) = server(true);
    let relay = Relay::start(server.imaps_port());
    let target = |folder: &str| format!("imaps://alice@127.0.0.1:{}/{folder}: ", relay.port());

    // Refused, no retries: exit 4 naming the target, nothing written.
    prepare_folder(&server, "Refused", &mailbox);
    relay.refuse_for(RUN_LIMIT);
    let output = migrate(&server, server.pop3s_port(), relay.port(), "Refused")
        .args(["--retries", "0"])
        .output()
        .unwrap();
    assert_exit(&output, 4, "");
    let error = assert_one_error(&output, &target("Refused"), "refused");
    assert!(
        error.contains("cannot connect") && error.contains("refused"),
        "{error}"
    );
    assert_eq!(server.messages("alice", "Refused").len(), 1);

    // Refused for 3 s, far longer than mailferry takes to start, so its first attempts are
    // refused for sure (without retries it would exit 4 at once): six retries outlast it
    // (waits of 0.2, 0.4, 0.8, 1.6, 3.2, 6.4 s, each jittered down to as little as half: at
    // least 6.3 s in all), and the run ends after the window.
    relay.refuse_for(Duration::from_secs(3));
    let started = Instant::now();
    let output = migrate(&server, server.pop3s_port(), relay.port(), "Refused")
        .args(["--retries", "6"])
        .output()
        .unwrap();
    assert_exit(&output, 0, "");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_exactly_once(&server, "Refused", &mailbox, "refused for 3 s, retried");

    // Accepted, then closed during the TLS handshake: a connection problem (exit 4, no
    // certificate hint), retried like a refusal.
    prepare_folder(&server, "Dropped", &mailbox);
    relay.set_faults(&[Fault::Cut(0)]);
    let output = migrate(&server, server.pop3s_port(), relay.port(), "Dropped")
        .args(["--retries", "0"])
        .output()
        .unwrap();
    assert_exit(&output, 4, "");
    let error = assert_one_error(&output, &target("Dropped"), "dropped");
    assert!(
        error.ends_with("the connection closed during the TLS handshake"),
        "{error}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("--tls-ca"),
        "not a certificate problem: {stderr}"
    );
    assert_eq!(server.messages("alice", "Dropped").len(), 1);
    relay.set_faults(&[Fault::Cut(0), Fault::Cut(0)]);
    let output = migrate(&server, server.pop3s_port(), relay.port(), "Dropped")
        .output()
        .unwrap();
    assert_exit(&output, 0, "");
    let connections = relay.connections();
    assert!(
        connections[0].fired && connections[1].fired,
        "{connections:?}"
    );
    assert_exactly_once(&server, "Dropped", &mailbox, "dropped twice, retried");

    // A wrong password: exit 3 after one connection, whatever --retries says.
    relay.set_faults(&[]);
    let output = migrate(&server, server.pop3s_port(), relay.port(), "Dropped")
        .env("MAILFERRY_TO_PASSWORD", "not-the-password")
        .args(["--retries", "5"])
        .output()
        .unwrap();
    assert_exit(&output, 3, "");
    assert_eq!(relay.connections().len(), 1, "a refused login was retried");
}

/// An IMAP source cut while it sends the messages (the answer to the bulk UID FETCH): an IMAP
/// fetch is not resumed on a new connection (nothing would tell a UIDVALIDITY change there),
/// so even with retries the run exits 4 with one line naming the source, having duplicated
/// nothing, and a re-run completes the copy.
#[test]
fn a_cut_imap_source_exits_4_and_a_rerun_completes_it() {
    let (server, mailbox) = server(true);
    let relay = Relay::start(server.imaps_port());
    let imap_migrate = |folder: &str| {
        let mut cmd = mailferry("migrate");
        cmd.arg("--from")
            .arg(account_url("imaps", "carol", relay.port(), "INBOX"))
            .env("MAILFERRY_FROM_PASSWORD", password("carol"))
            .target_account("imaps", "alice", server.imaps_port(), "")
            .args(["--map", &format!("INBOX={folder}"), "--connections", "1"])
            .arg("--tls-ca")
            .arg(server.cert_path())
            .args(["--timeout", "10"])
            .timeout(RUN_LIMIT);
        cmd
    };
    prepare_folder(&server, "ImapCalibration", &mailbox);
    let clean = imap_migrate("ImapCalibration").output().unwrap();
    assert_exit(&clean, 0, "");
    let source = relay.connections();
    assert_eq!(source.len(), 1, "one source connection: {source:?}");
    // The command after which the server sent the bulk of the bytes: the UID FETCH of bodies.
    let half = source[0].to_client / 2;
    let fetch_sent = source[0]
        .replies
        .iter()
        .find(|r| r.end > half)
        .expect("the bodies came")
        .sent;

    prepare_folder(&server, "ImapCut", &mailbox);
    relay.set_faults(&[Fault::LoseAnswer(fetch_sent)]);
    let first = imap_migrate("ImapCut").output().unwrap();
    assert_exit(&first, 4, "");
    assert_one_error(
        &first,
        &format!("imaps://carol@127.0.0.1:{}/INBOX: ", relay.port()),
        "IMAP source cut",
    );
    assert!(relay.connections()[0].fired);
    relay.set_faults(&[]);
    let rerun = imap_migrate("ImapCut").output().unwrap();
    assert_exit(&rerun, 0, "");
    assert_exactly_once(&server, "ImapCut", &mailbox, "IMAP source cut, re-run");
}
