//! The target Dovecot killed in the middle of a migration (SIGKILL to every process of the
//! instance, so each session breaks at once), then started again on the same ports with the
//! same mail: with `--retries` the run logs in again and finishes with exit 0; without, it
//! exits 4 and a re-run completes. Either way the target holds every message exactly once, byte
//! for byte.

mod support;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{Accounts, Dovecot, SplitMix64, mailferry_process, normalize_crlf};

/// Messages in the source maildrop: enough that the upload takes a while with fsync on.
const MESSAGES: usize = 500;
/// The target is killed once it holds this many of them.
const KILL_AFTER: usize = 100;
/// The longest a mailferry run may take here.
const RUN_LIMIT: Duration = Duration::from_secs(180);
/// Dovecot's default, an fsync per stored message, is what slows the target down; the source
/// does not need it.
const NO_FSYNC: &str = "mail_fsync = never\n";
/// The target's capabilities after login without MULTIAPPEND: one APPEND (and fsync) per
/// message keeps the upload going long enough to restart the server in the middle, and a
/// break then leaves a batch half stored.
const NO_MULTIAPPEND: &str = "imap_capability = IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE \
                              UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED CONDSTORE \
                              SPECIAL-USE\n";

fn mailbox() -> Vec<Vec<u8>> {
    let mut rng = SplitMix64(0x7265_7374);
    (0..MESSAGES)
        .map(|i| {
            let len = 2000 + (rng.next() % 4000) as usize;
            let body = rng.text(len);
            format!(
                "From: Restart Test <restart@example.org>\r\nSubject: restart {i}\r\n\
                 Message-ID: <restart-{i}@mailferry.test>\r\n\r\n{body}\r\n"
            )
            .into_bytes()
        })
        .collect()
}

/// Files in a maildir's `new` and `cur`: how many messages the folder holds, cheaply.
fn stored_count(maildir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(maildir.join(sub)).ok())
        .map(Iterator::count)
        .sum()
}

struct Setup {
    source: Dovecot,
    target: Dovecot,
    mailbox: Vec<Vec<u8>>,
    files: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let source = Dovecot::start_with(NO_FSYNC);
        let target = Dovecot::start_with(NO_MULTIAPPEND);
        let mailbox = mailbox();
        source.append_many("carol", "INBOX", &mailbox);
        let files = tempfile::tempdir().unwrap();
        let pems = [source.cert_path(), target.cert_path()].map(|p| std::fs::read(p).unwrap());
        std::fs::write(files.path().join("ca.pem"), pems.concat()).unwrap();
        Setup {
            source,
            target,
            mailbox,
            files,
        }
    }

    fn command(&self, folder: &str, retries: u32) -> std::process::Command {
        let mut cmd = mailferry_process("migrate");
        cmd.source_account("pop3s", "carol", self.source.pop3s_port())
            .target_account("imaps", "alice", self.target.imaps_port(), folder)
            .arg("--tls-ca")
            .arg(self.files.path().join("ca.pem"))
            .args(["--connections", "2", "--timeout", "30"])
            .args(["--retries", &retries.to_string()]);
        cmd
    }

    /// Starts a run, kills the target once it holds [`KILL_AFTER`] messages, starts it again
    /// half a second later, and returns the run's exit code, its output, and how many times
    /// alice logged in to the target after the restart.
    fn run_through_a_restart(&self, folder: &str, retries: u32) -> (Option<i32>, String, usize) {
        let log = self.files.path().join(format!("{folder}.log"));
        let mut child = self
            .command(folder, retries)
            .stdout(Stdio::from(File::create(&log).unwrap()))
            .stderr(Stdio::from(File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let maildir = self.target.maildir_path("alice", folder);
        let deadline = Instant::now() + RUN_LIMIT;
        while stored_count(&maildir) < KILL_AFTER {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{folder}: the run ended ({status}) before {KILL_AFTER} messages were stored: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{folder}: nothing stored in time"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "{folder}: the run was over before the kill"
        );
        self.target.kill();
        let stored = stored_count(&maildir);
        assert!(
            stored < MESSAGES,
            "{folder}: all was stored before the kill"
        );
        std::thread::sleep(Duration::from_millis(500));
        let logins_before = self.target_logins();
        self.target.start_again();
        let code = wait_bounded(&mut child, deadline);
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        eprintln!("{folder} (--retries {retries}): restarted with {stored} stored; exit {code:?}");
        (code, output, self.target_logins() - logins_before)
    }

    /// alice's successful logins in the target's log so far.
    fn target_logins(&self) -> usize {
        self.target
            .log()
            .lines()
            .filter(|line| line.contains("imap-login") && line.contains("Login: user=<alice>"))
            .count()
    }

    fn rerun(&self, folder: &str) {
        let output = assert_cmd::Command::from_std(self.command(folder, 3))
            .timeout(RUN_LIMIT)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{folder}: re-run: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn assert_exactly_once(&self, folder: &str) {
        let mut want: HashMap<Vec<u8>, usize> = HashMap::new();
        for raw in &self.mailbox {
            *want.entry(normalize_crlf(raw)).or_default() += 1;
        }
        let mut got: HashMap<Vec<u8>, usize> = HashMap::new();
        for message in self.target.messages("alice", folder) {
            *got.entry(normalize_crlf(&message.raw)).or_default() += 1;
        }
        let wrong = want
            .iter()
            .filter(|(raw, n)| got.get(*raw) != Some(n))
            .count()
            + got.keys().filter(|raw| !want.contains_key(*raw)).count();
        assert_eq!(
            wrong, 0,
            "{folder}: {wrong} messages are missing, doubled or foreign"
        );
    }
}

/// Waits for the child until `deadline`, then kills it (and fails).
fn wait_bounded(child: &mut Child, deadline: Instant) -> Option<i32> {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mailferry did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_target_restarted_mid_run_loses_and_doubles_nothing() {
    let setup = Setup::new();

    // Retries outlast the restart (about 1.5 s down): the run logs in again and finishes.
    let (code, output, logins_after_restart) = setup.run_through_a_restart("Retried", 8);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        logins_after_restart >= 1,
        "the run finished without logging in to the restarted target: {output}"
    );
    setup.assert_exactly_once("Retried");

    // Without retries the break ends the run with exit 4 and one error line naming the
    // target; a re-run copies the rest.
    let (code, output, _) = setup.run_through_a_restart("Stopped", 0);
    assert_eq!(code, Some(4), "{output}");
    let errors: Vec<&str> = output.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{output}");
    assert!(
        errors[0].starts_with(&format!(
            "error: imaps://alice@127.0.0.1:{}/Stopped: ",
            setup.target.imaps_port()
        )),
        "{output}"
    );
    setup.rerun("Stopped");
    setup.assert_exactly_once("Stopped");
}
