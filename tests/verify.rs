//! Verification after a copy, against a real Dovecot, through the library so a test can act
//! between an upload and the check: carol's POP3 maildrop is copied into bob's INBOX on the
//! same server, with the protocol trace captured. The source speaks POP3, so every IMAP
//! command in the trace went to the target.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mailferry::auth::AuthMode;
use mailferry::endpoint::{Endpoint, PasswordSource, Side};
use mailferry::folders::FolderRules;
use mailferry::identity::Identity;
use mailferry::index::SourceMessage;
use mailferry::migrate::{self, MigrateJob};
use mailferry::net::{TlsConfig, TlsTrust};
use mailferry::report::Report;
use mailferry::store::MessageUid;
use mailferry::store::{Account, ConnectOptions};
use mailferry::trace::{Trace, Verbosity};
use mailferry::transfer::{Observer, TransferSettings};
use mailferry::verify::Receipts;
use support::{Captured, Dovecot, fixtures, password};

/// Dovecot's capabilities after login without UIDPLUS: APPEND says nothing of where it stored
/// a message.
const NO_UIDPLUS: &str = "imap_capability = IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE \
                          UNSELECT CHILDREN NAMESPACE MULTIAPPEND LIST-EXTENDED CONDSTORE \
                          SPECIAL-USE\n";

/// The index FETCH of the target: one per indexing of a folder, for the plan or to verify.
const INDEX_FETCH: &str = "UID FETCH 1:* (UID RFC822.SIZE FLAGS";
/// What verification asks of this run's copies, by UID (the cheap way) or in a re-index.
const VERIFYING_ITEMS: &str = " (UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[HEADER";

/// How many times the target was asked about some UIDs only: verification's cheap way.
fn uid_checks(trace: &Captured) -> usize {
    trace.commands_with(VERIFYING_ITEMS)
        - trace.commands_with(&format!("UID FETCH 1:*{VERIFYING_ITEMS}"))
}

fn account(dovecot: &Dovecot, dir: &Path, url: &str, user: &str, side: Side) -> Account {
    let endpoint = Endpoint::parse(url).unwrap();
    let file = dir.join(format!("{user}.password"));
    std::fs::write(&file, password(user)).unwrap();
    Account {
        password: PasswordSource {
            file: Some(file),
            ..PasswordSource::default()
        }
        .resolve(side, &endpoint)
        .unwrap(),
        endpoint,
        tls: TlsConfig::new(&TlsTrust::CaFile(dovecot.cert_path())).unwrap(),
        auth: AuthMode::User,
        token_command: None,
    }
}

/// carol's maildrop (POP3S) into bob's INBOX (IMAPS), tracing every command into `trace`.
fn job(dovecot: &Dovecot, dir: &Path, trace: &Captured) -> MigrateJob {
    let from = format!("pop3s://carol@127.0.0.1:{}", dovecot.pop3s_port());
    let to = format!("imaps://bob@127.0.0.1:{}", dovecot.imaps_port());
    MigrateJob {
        from: account(dovecot, dir, &from, "carol", Side::From),
        to: account(dovecot, dir, &to, "bob", Side::To),
        connect: ConnectOptions {
            allow_plaintext: false,
            timeout: Duration::from_secs(30),
            trace: Trace::to_writer(Verbosity::Commands, trace.clone()),
            list_at_login: false,
            summarise_at_login: Vec::new(),
        },
        transfer: TransferSettings::default(),
        mark_seen: false,
        dry_run: false,
        folders: FolderRules::default(),
        size_limit: None,
        uidl_map: None,
        gmail_labels: false,
    }
}

fn message(id: &str) -> Vec<u8> {
    format!(
        "From: Sender <s@example.org>\r\nTo: bob@example.net\r\nSubject: {id}\r\n\
         Date: Mon, 1 Mar 2010 10:00:00 +0000\r\nMessage-ID: <{id}@verify.test>\r\n\r\n\
         Body of {id}.\r\n"
    )
    .into_bytes()
}

/// Deletes messages from bob's INBOX while the copy runs, as another client might: `copied`
/// right after the server confirmed its upload, `present` (a message the target held before)
/// once the first copy is confirmed.
struct DeleteDuringCopy<'a> {
    dovecot: &'a Dovecot,
    copied: &'a str,
    present: Option<&'a str>,
    started: AtomicBool,
}

impl Observer for DeleteDuringCopy<'_> {
    fn message_copied(
        &self,
        _folder: &str,
        message: &Arc<SourceMessage>,
        _uid: Option<MessageUid>,
    ) {
        if let Some(present) = self.present
            && !self.started.swap(true, Ordering::SeqCst)
        {
            self.dovecot
                .expunge("bob", "INBOX", &format!("<{present}@verify.test>"));
        }
        if message.identity == Identity::MessageId(format!("{}@verify.test", self.copied).into()) {
            self.dovecot
                .expunge("bob", "INBOX", &format!("<{}@verify.test>", self.copied));
        }
    }
}

struct Quiet;

impl Observer for Quiet {}

/// carol's maildrop: `count` plain messages and the fixtures (bare LF, NUL, no Message-ID, …),
/// of which bob's INBOX already holds `m1`.
fn mailboxes(dovecot: &Dovecot, count: usize) -> usize {
    let mut raws: Vec<Vec<u8>> = (0..count).map(|n| message(&format!("m{n}"))).collect();
    raws.extend(fixtures().into_iter().map(|(_, raw)| raw));
    dovecot.append_many("carol", "INBOX", &raws);
    dovecot.append_many("bob", "INBOX", &[message("m1")]);
    raws.len()
}

fn run(dovecot: &Dovecot, trace: &Captured, observer: &dyn Observer) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dovecot, dir.path(), trace);
    let planned = migrate::plan(&job).unwrap();
    let (report, error) = planned.execute(observer, &Receipts::default(), None);
    assert!(error.is_none(), "{error:?}");
    report
}

/// The messages the report lists as not found when verifying.
fn missing(report: &Report) -> Vec<&str> {
    report
        .errors
        .iter()
        .filter(|e| e.reason.contains("verifying"))
        .map(|e| e.message.as_str())
        .collect()
}

#[test]
fn a_copy_is_verified_by_its_uids_without_indexing_the_target_again() {
    let dovecot = Dovecot::start();
    let total = mailboxes(&dovecot, 30);
    let trace = Captured::default();
    let report = run(&dovecot, &trace, &Quiet);
    assert_eq!((report.copied, report.already_present), (total - 1, 1));
    assert_eq!(report.verified, Some(true), "{:?}", report.errors);
    assert_eq!(
        trace.commands_with(INDEX_FETCH),
        1,
        "the target is indexed for the plan only"
    );
    // Without the dates, which Dovecot formats at a cost and only verification compares.
    assert_eq!(
        trace.commands_with("UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER"),
        1
    );
    assert_eq!(uid_checks(&trace), 1);
}

#[test]
fn a_message_deleted_on_the_target_before_verification_is_reported_missing() {
    let dovecot = Dovecot::start();
    mailboxes(&dovecot, 30);
    let trace = Captured::default();
    let deleting = DeleteDuringCopy {
        dovecot: &dovecot,
        copied: "m17",
        present: Some("m1"),
        started: AtomicBool::new(false),
    };
    let report = run(&dovecot, &trace, &deleting);
    assert_eq!(report.verified, Some(false));
    let mut missing = missing(&report);
    missing.sort();
    assert_eq!(missing, ["<m17@verify.test>", "<m1@verify.test>"]);
    assert_eq!(report.exit_code(), 1);
    // The UIDs showed something missing; the index, which decides, agreed.
    assert_eq!(uid_checks(&trace), 1);
    assert_eq!(trace.commands_with(INDEX_FETCH), 2);
}

#[test]
fn without_uidplus_the_target_is_indexed_again_to_verify() {
    let dovecot = Dovecot::start_with(NO_UIDPLUS);
    let total = mailboxes(&dovecot, 30);
    let trace = Captured::default();
    let deleting = DeleteDuringCopy {
        dovecot: &dovecot,
        copied: "m17",
        present: None,
        started: AtomicBool::new(false),
    };
    let report = run(&dovecot, &trace, &deleting);
    assert_eq!(report.copied, total - 1);
    // Every other copy is found, by the index: the server named no UIDs to ask about.
    assert_eq!(missing(&report), ["<m17@verify.test>"]);
    assert_eq!(report.verified, Some(false));
    assert_eq!(uid_checks(&trace), 0);
    assert_eq!(trace.commands_with(INDEX_FETCH), 2);
}
