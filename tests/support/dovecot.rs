//! A private Dovecot per test: start, crash, restart and stop it, store mail in it (doveadm or
//! IMAP APPEND), and read back what it stored (straight from its maildirs, see
//! [`super::maildir`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::imap_session::{ImapSession, imap_date, listed_name};
use super::maildir::{StoredMessage, read_maildir};
use super::mutf7::{mutf7_decode, mutf7_encode};
use super::ports::free_ports;
use super::process::run_bounded;
use super::{USERS, password};

/// Configuration for [`Dovecot::start_with`] that puts every folder under the personal
/// namespace prefix `INBOX.` with `.` as separator (NAMESPACE `(("INBOX." "."))`), as Courier
/// and Cyrus without altnamespace do; it overrides the settings of dovecot.sh's own `inbox`
/// namespace block. On disk nothing changes: `INBOX.Archive` is `Maildir/.Archive`, which
/// [`Dovecot::folders`] reports as `Archive`.
pub const INBOX_PREFIXED: &str = "namespace inbox {\n  prefix = INBOX.\n  separator = .\n}\n";

/// Ports picked from the kernel may be taken again before Dovecot binds them.
const START_ATTEMPTS: usize = 5;
/// `dovecot.sh up` waits at most 10 s for the listeners; key generation comes on top.
const UP_TIMEOUT: Duration = Duration::from_secs(30);
/// `dovecot.sh down` gives Dovecot 5 s before SIGKILL.
const DOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Generous because a 20 MB message through a debug build on a busy 2-core machine is slow.
const DOVEADM_TIMEOUT: Duration = Duration::from_secs(120);

/// A private Dovecot (IMAP, IMAPS, POP3, POP3S on 127.0.0.1) in its own temporary directory,
/// started by `tests/support/dovecot.sh`. Dropping it stops that Dovecot (and no other) and
/// deletes the directory.
pub struct Dovecot {
    dir: tempfile::TempDir,
    imap_port: u16,
    imaps_port: u16,
    pop3_port: u16,
    pop3s_port: u16,
    /// The environment `dovecot.sh up` was started with, to start the same instance again.
    up_env: Vec<(&'static str, String)>,
}

impl Dovecot {
    /// Starts a Dovecot with the users in [`USERS`]. Panics (with Dovecot's log) if it cannot.
    pub fn start() -> Dovecot {
        Dovecot::start_with("")
    }

    /// Like [`Dovecot::start`], with `extra_conf` appended to `dovecot.conf`; a setting given
    /// there overrides the default one, e.g. `"imap_capability = IMAP4rev1"`.
    pub fn start_with(extra_conf: &str) -> Dovecot {
        Dovecot::start_custom(extra_conf, true, &[])
    }

    /// The most general start: `extra_conf` as in [`Dovecot::start_with`]; `tls: false` gives a
    /// plaintext-only server (no STARTTLS/STLS, IMAPS and POP3S ports refuse connections);
    /// `extra_users` are (user, password) pairs added to [`USERS`] (no spaces or colons).
    pub fn start_custom(extra_conf: &str, tls: bool, extra_users: &[(&str, &str)]) -> Dovecot {
        let users = USERS
            .iter()
            .map(|user| format!("{user}:{}", password(user)))
            .chain(extra_users.iter().map(|(user, pw)| format!("{user}:{pw}")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            // Unix socket paths are limited to 108 bytes and Dovecot's live in DIR/run, so the
            // directory must stay short whatever TMPDIR says.
            let dir = tempfile::Builder::new()
                .prefix("mf")
                .tempdir_in("/tmp")
                .expect("create a temporary directory in /tmp");
            let [imap_port, imaps_port, pop3_port, pop3s_port] = free_ports::<4>();
            let up_env = vec![
                ("IMAP_PORT", imap_port.to_string()),
                ("IMAPS_PORT", imaps_port.to_string()),
                ("POP3_PORT", pop3_port.to_string()),
                ("POP3S_PORT", pop3s_port.to_string()),
                ("MAILFERRY_TEST_USERS", users.clone()),
                ("DOVECOT_EXTRA_CONF", extra_conf.to_owned()),
                ("DOVECOT_TLS", if tls { "yes" } else { "no" }.to_owned()),
                // If this test process is killed (e.g. by a runner's timeout), Drop never runs;
                // the script's watcher then stops Dovecot instead.
                ("MAILFERRY_TEST_OWNER_PID", std::process::id().to_string()),
            ];
            let mut up = script("up", dir.path());
            up.envs(up_env.iter().map(|(k, v)| (k, v)));
            let dovecot = Dovecot {
                dir,
                imap_port,
                imaps_port,
                pop3_port,
                pop3s_port,
                up_env,
            };
            match run_bounded(up, None, UP_TIMEOUT) {
                Ok(out) if out.status.success() => return dovecot,
                Ok(out) => {
                    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                    let port_taken = stderr.contains("Address already in use");
                    failures.push(format!(
                        "dovecot.sh up exited with {}:\n{stderr}",
                        out.status
                    ));
                    if !port_taken {
                        break;
                    }
                }
                Err(timeout) => failures.push(timeout),
            }
            // Dropping `dovecot` runs `down`, which also stops a half-started instance.
        }
        panic!(
            "could not start Dovecot ({} attempts):\n{}",
            failures.len(),
            failures.join("\n---\n")
        );
    }

    /// Crashes this Dovecot: SIGKILL to its master and every child, so each open session
    /// breaks at once (a graceful stop lets sessions finish their work). Its directory, mail
    /// and ports stay, for [`Dovecot::start_again`].
    pub fn kill(&self) {
        let out = run_bounded(script("kill", self.dir()), None, DOWN_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "dovecot.sh kill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a killed Dovecot again with the same configuration, ports and mail; returns
    /// once every port accepts connections. The killed sessions' `dovecot-uidlist.lock` files
    /// are removed first, as an admin restarting a crashed server would: Dovecot breaks such a
    /// lock only once it is old (up to two minutes) or its pid is seen dead, and a session
    /// waiting for it looked, on a busy machine, like a server that never answers.
    pub fn start_again(&self) {
        remove_files_named(&self.dir().join("mail"), "dovecot-uidlist.lock");
        let mut up = script("up", self.dir());
        up.envs(self.up_env.iter().map(|(k, v)| (k, v)));
        let out = run_bounded(up, None, UP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "dovecot.sh up (again) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Plain IMAP port (STARTTLS offered).
    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    /// Implicit-TLS IMAP port.
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port
    }

    /// Plain POP3 port (STLS offered).
    pub fn pop3_port(&self) -> u16 {
        self.pop3_port
    }

    /// Implicit-TLS POP3 port.
    pub fn pop3s_port(&self) -> u16 {
        self.pop3s_port
    }

    /// The server's self-signed certificate (PEM, CN and SAN `localhost`, SAN IP `127.0.0.1`).
    /// openssl marks it CA:TRUE, so webpki-based verification refuses it as an end-entity
    /// certificate; pin it instead.
    pub fn cert_path(&self) -> PathBuf {
        self.dir().join("cert.pem")
    }

    /// The instance's directory (configuration, certificate, mail, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `dovecot.conf`; pass it to doveadm as `doveadm -c PATH ...`.
    pub fn conf_path(&self) -> PathBuf {
        self.dir().join("dovecot.conf")
    }

    /// Dovecot's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("dovecot.log")
    }

    /// Dovecot's log so far (logins, disconnect reasons, errors), for assertions and failure
    /// messages.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// The maildir directory of `folder` (`"INBOX"` or a `/`-separated name such as
    /// `"Archive/2019"`), whether it exists or not.
    pub fn maildir_path(&self, user: &str, folder: &str) -> PathBuf {
        let root = self.dir().join("mail").join(user).join("Maildir");
        if folder.eq_ignore_ascii_case("INBOX") {
            return root;
        }
        assert!(
            !folder.contains('.'),
            "Dovecot's Maildir++ layout refuses '.' in folder names: {folder:?}"
        );
        root.join(format!(".{}", mutf7_encode(folder).replace('/', ".")))
    }

    /// Creates `folder` for `user` unless it is INBOX or exists already.
    pub fn create_folder(&self, user: &str, folder: &str) {
        if folder.eq_ignore_ascii_case("INBOX") || self.maildir_path(user, folder).is_dir() {
            return;
        }
        let mut create = self.doveadm();
        create.args(["mailbox", "create", "-u", user, folder]);
        let out = run_bounded(create, None, DOVEADM_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !stderr.contains("already exists") {
            panic!(
                "doveadm mailbox create {user} {folder:?} failed ({}): {stderr}",
                out.status
            );
        }
    }

    /// Stores `raw` as is in `user`'s `folder` (created if missing) with `doveadm save`: no
    /// flags, INTERNALDATE = now. Panics with doveadm's stderr if that fails.
    pub fn deliver(&self, user: &str, folder: &str, raw: &[u8]) {
        self.create_folder(user, folder);
        let mut save = self.doveadm();
        save.args(["save", "-u", user, "-m", folder]);
        let out = run_bounded(save, Some(raw), DOVEADM_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        if !out.status.success() {
            panic!(
                "doveadm save -u {user} -m {folder:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Stores `raw` in `user`'s `folder` (created if missing) through an IMAP APPEND on the
    /// plain IMAP port, with `flags` (e.g. `["\\Seen", "$Label1"]`) and, if given, that
    /// INTERNALDATE (whole seconds, from 1970 on). The bytes end up on disk as with
    /// [`Dovecot::deliver`]. Panics if the server refuses.
    pub fn append(
        &self,
        user: &str,
        folder: &str,
        raw: &[u8],
        flags: &[&str],
        internal_date: Option<SystemTime>,
    ) {
        self.create_folder(user, folder);
        let mut imap = ImapSession::login(self.imap_port, user);
        let date = internal_date.map(imap_date);
        imap.append(folder, flags, date.as_deref(), raw);
        imap.logout();
    }

    /// Stores every message of `raws`, in order, in `user`'s `folder` (created if missing,
    /// not subscribed) through one IMAP session on the plain IMAP port: no flags,
    /// INTERNALDATE = now. Much faster than [`Dovecot::deliver`] (one doveadm run each) for
    /// many messages. Panics if the server refuses one.
    pub fn append_many(&self, user: &str, folder: &str, raws: &[Vec<u8>]) {
        let mut imap = ImapSession::login(self.imap_port, user);
        imap.create(folder);
        for raw in raws {
            imap.append(folder, &[], None, raw);
        }
        imap.logout();
    }

    /// The messages in `user`'s `folder`, read straight from the maildir files, in UID order
    /// (delivery order). Empty if the folder does not exist; see [`Dovecot::folders`].
    pub fn messages(&self, user: &str, folder: &str) -> Vec<StoredMessage> {
        let dir = self.maildir_path(user, folder);
        // An IMAP session may move a file from new/ to cur/ (or rename it for a flag change)
        // between listing and reading; a fresh listing sees the new name.
        let mut last_error = None;
        for _ in 0..10 {
            match read_maildir(&dir) {
                Ok(messages) => return messages,
                Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_dir() => {
                    last_error = Some(e);
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
                Err(e) => panic!("read maildir {}: {e}", dir.display()),
            }
        }
        panic!("read maildir {}: {last_error:?}", dir.display());
    }

    /// `user`'s folders as the server lists them (`LIST "" "*"` on the plain IMAP port): whole
    /// names, with the namespace prefix and separator of the configuration (`INBOX.Archive`
    /// under [`INBOX_PREFIXED`]), decoded, sorted. Names sent as literals are not supported.
    pub fn imap_folders(&self, user: &str) -> Vec<String> {
        let mut imap = ImapSession::login(self.imap_port, user);
        let listed = imap
            .command("LIST \"\" \"*\"")
            .unwrap_or_else(|done| panic!("LIST as {user}: {done}"));
        imap.logout();
        let mut names: Vec<String> = listed
            .iter()
            .filter(|response| response.text.starts_with("* LIST "))
            .map(|response| {
                listed_name(&response.text)
                    .unwrap_or_else(|| panic!("unreadable LIST line: {}", response.text))
            })
            .collect();
        names.sort();
        names
    }

    /// `user`'s folders as IMAP names (`"INBOX"`, `"Archive/2019"`, `"Entwürfe"`), decoded from
    /// the directory names on disk, sorted.
    pub fn folders(&self, user: &str) -> Vec<String> {
        let root = self.maildir_path(user, "INBOX");
        let mut names = vec!["INBOX".to_string()];
        let Ok(entries) = fs::read_dir(&root) else {
            return names;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(on_disk) = name.strip_prefix('.')
                && !on_disk.is_empty()
                && on_disk != "."
                && entry.path().is_dir()
            {
                names.push(mutf7_decode(&on_disk.replace('.', "/")));
            }
        }
        names[1..].sort();
        names
    }

    /// Removes from `user`'s `folder` the messages whose Message-ID header contains
    /// `message_id` (`doveadm expunge`), as another client deleting them would. Panics with
    /// doveadm's stderr if that fails.
    pub fn expunge(&self, user: &str, folder: &str, message_id: &str) {
        let mut expunge = self.doveadm();
        expunge.args([
            "expunge",
            "-u",
            user,
            "mailbox",
            folder,
            "header",
            "Message-ID",
            message_id,
        ]);
        let out = run_bounded(expunge, None, DOVEADM_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        if !out.status.success() {
            panic!(
                "doveadm expunge -u {user} {folder:?} {message_id} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Ends every session of `user` (`doveadm kick`): each gets an untagged BYE ("Server
    /// shutting down."). Returns whether doveadm found a session to end.
    pub fn kick(&self, user: &str) -> bool {
        let mut kick = self.doveadm();
        kick.args(["kick", user]);
        let out = run_bounded(kick, None, DOVEADM_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        // Dovecot 2.3 prints "USER kicked connections from the following users:" or
        // "no users kicked".
        out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("no users kicked")
    }

    /// Waits (at most `timeout`, else panics) until no IMAP or POP3 session is logged in, as
    /// `doveadm who` sees it. A client killed mid-command can leave its session working on
    /// what was already sent (a whole MULTIAPPEND in the socket buffer) for a while.
    pub fn wait_until_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut who = self.doveadm();
            who.arg("who");
            let out = run_bounded(who, None, DOVEADM_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
            let listing = String::from_utf8_lossy(&out.stdout).into_owned();
            // The first line is a header; any further line is a session.
            if out.status.success() && listing.lines().nth(1).is_none() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sessions still open after {timeout:?}:\n{listing}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn doveadm(&self) -> Command {
        let mut doveadm = Command::new("doveadm");
        doveadm.arg("-c").arg(self.conf_path());
        doveadm
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} ---", self.log_path().display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        // No panic here: a panic while already unwinding would abort the whole test binary.
        match run_bounded(script("down", self.dir()), None, DOWN_TIMEOUT) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "dovecot.sh down {} failed ({}): {}",
                self.dir().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("{e}"),
        }
    }
}

fn script(action: &str, dir: &Path) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/dovecot.sh");
    let mut command = Command::new("bash");
    command.arg(script).arg(action).arg(dir);
    command
}

/// Removes every file called `name` below `dir`.
fn remove_files_named(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_files_named(&path, name);
        } else if entry.file_name() == name {
            std::fs::remove_file(&path).unwrap();
        }
    }
}
