//! Integration-test harness: a real, private Dovecot per test, and the `fixtures/` mailbox.
//!
//! Include it with `mod support;` from a file under `tests/`. Each test binary uses a subset, so
//! dead-code warnings are off for the module.
//!
//! ```ignore
//! mod support;
//! use support::{Dovecot, normalize_crlf};
//!
//! let dovecot = Dovecot::start();
//! dovecot.deliver("alice", "INBOX", b"Subject: hi\r\n\r\nbody\r\n");
//! // ... run mailferry from alice's POP3S (127.0.0.1:dovecot.pop3s_port(), password
//! //     support::password("alice"), pinned cert dovecot.cert_path()) to bob's IMAPS ...
//! let copies = dovecot.messages("bob", "INBOX");
//! assert_eq!(normalize_crlf(&copies[0].raw), normalize_crlf(b"Subject: hi\r\n\r\nbody\r\n"));
//! ```
//!
//! What Dovecot 2.3.19 does to a message (checked over raw sockets against this configuration;
//! note that Python's `imaplib.append` rewrites line endings itself and hides all this):
//! - On disk a message is stored with **LF** line endings (`mail_save_crlf = no`, the default):
//!   IMAP APPEND and `doveadm save` store the same bytes, CRLF turned into LF. IMAP FETCH and
//!   POP3 RETR serve LF as CRLF again (an LF already preceded by a CR is left alone).
//! - **Lone CR** (not before LF) is kept on disk and served as is. In a run of CRs before an LF
//!   one CR is lost (`a\r\r\nb` comes back as `a\r\nb`), and one CR at the very end of the
//!   message is dropped.
//! - **NUL** is stored as NUL, served as 0x80 over IMAP and as NUL over POP3.
//! - A missing final line ending stays missing on disk and over IMAP. POP3 RETR cannot show it:
//!   Dovecot adds a CRLF before the terminating `.` line, while its `+OK N octets` and LIST
//!   sizes still count the message without it.
//! - 8-bit bytes are kept.
//! - The maildir file's **mtime is the INTERNALDATE**: `APPEND ... "05-Mar-2019 08:52:37 +0200"`
//!   gave a file with mtime 2019-03-05 06:52:37 UTC, and FETCH INTERNALDATE returned that
//!   instant (written in UTC). `doveadm save` gives the time of delivery.
//! - Folders use the Maildir++ layout: folder `A/B` is `Maildir/.A.B`, non-ASCII names are
//!   modified UTF-7 on disk (`Entwürfe/2019` is `Maildir/.Entw&APw-rfe.2019`), and a `.` inside
//!   a folder name is refused ("Character not allowed in mailbox name: '.'").
#![allow(dead_code)]

pub mod mailutils;
pub mod quirks;
pub mod relay;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Configuration for [`Dovecot::start_with`] that puts every folder under the personal
/// namespace prefix `INBOX.` with `.` as separator (NAMESPACE `(("INBOX." "."))`), as Courier
/// and Cyrus without altnamespace do; it overrides the settings of dovecot.sh's own `inbox`
/// namespace block. On disk nothing changes: `INBOX.Archive` is `Maildir/.Archive`, which
/// [`Dovecot::folders`] reports as `Archive`.
pub const INBOX_PREFIXED: &str = "namespace inbox {\n  prefix = INBOX.\n  separator = .\n}\n";

/// The users every [`Dovecot`] knows; each one's password is [`password`]`(user)`.
pub const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// The password of a test user.
pub fn password(user: &str) -> String {
    format!("{user}-Tr0ub4dor-pw")
}

/// Ports picked from the kernel may be taken again before Dovecot binds them.
const START_ATTEMPTS: usize = 5;
/// `dovecot.sh up` waits at most 10 s for the listeners; key generation comes on top.
const UP_TIMEOUT: Duration = Duration::from_secs(30);
/// `dovecot.sh down` gives Dovecot 5 s before SIGKILL.
const DOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Generous because a 20 MB message through a debug build on a busy 2-core machine is slow.
const DOVEADM_TIMEOUT: Duration = Duration::from_secs(120);
const IMAP_TIMEOUT: Duration = Duration::from_secs(30);

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

/// One message as Dovecot stored it in a maildir, read from the file system (no IMAP involved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The file's bytes: LF line endings (see the module documentation).
    pub raw: Vec<u8>,
    /// IMAP flags from the file name's `:2,` suffix, in the suffix's order (Maildir keeps the
    /// letters sorted): `D`→`\Draft`, `F`→`\Flagged`, `R`→`\Answered`, `S`→`\Seen`,
    /// `T`→`\Deleted`, then keywords (`a`, `b`, … looked up in the folder's `dovecot-keywords`,
    /// e.g. `$Label1`). `\Recent` is never stored.
    pub flags: Vec<String>,
    /// The file's mtime, which Dovecot's maildir uses as INTERNALDATE.
    pub internal_date: SystemTime,
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

/// The canonical form under which a message and Dovecot's copy of it are equal: every line
/// ending (an LF with any number of CRs before it) becomes CRLF, CRs at the very end are
/// dropped, NUL becomes 0x80; a lone CR elsewhere is kept, since Dovecot keeps it. It holds for
/// the file on disk ([`StoredMessage::raw`]) and for what IMAP FETCH serves, and is idempotent.
/// Compare `normalize_crlf(source) == normalize_crlf(copy)` to mean "byte-exact after
/// Dovecot's normalisation". Not covered: the CRLF that POP3 RETR adds to a message without a
/// final line ending.
pub fn normalize_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    // CRs are held back until the next byte says whether they belong to a line ending.
    let mut pending_crs = 0;
    for &byte in raw {
        match byte {
            b'\r' => pending_crs += 1,
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                pending_crs = 0;
            }
            _ => {
                out.resize(out.len() + pending_crs, b'\r');
                pending_crs = 0;
                out.push(if byte == 0 { 0x80 } else { byte });
            }
        }
    }
    out
}

/// A loopback port where nothing listens, for "connection refused" tests.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// Distinct free ports: all are held at once while picking, so the kernel cannot hand out
/// one twice.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local_addr").port())
}

/// Every `fixtures/*` file but `README.md`, as (file name, bytes), sorted by name.
pub fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read fixtures/ entry").path())
        .filter(|path| path.is_file() && path.file_name().is_some_and(|n| n != "README.md"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let raw = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (name, raw)
        })
        .collect();
    files.sort();
    files
}

/// A multipart/mixed message of about `size_bytes` (within 100 bytes; at least ~1 KB) with a
/// text part and a base64 attachment of random bytes, CRLF line endings, a Date and a unique
/// Message-ID (`<big-SEED-SIZE@mailferry.test>`). The same arguments give the same bytes.
pub fn big_message(size_bytes: usize, seed: u64) -> Vec<u8> {
    let boundary = format!("=_mailferry_{seed:016x}");
    // A date derived from the seed keeps messages with different seeds distinguishable.
    let date = rfc2822_date(1_577_836_800 + seed % (365 * 86_400));
    let head = format!(
        "From: Big Sender <big.sender@example.org>\r\n\
         To: Carol Smith <carol@example.net>\r\n\
         Subject: Big attachment (seed {seed}, {size_bytes} bytes)\r\n\
         Date: {date}\r\n\
         Message-ID: <big-{seed}-{size_bytes}@mailferry.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\
         \r\n\
         This is a multi-part message in MIME format.\r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         The attached file holds pseudo-random data generated from seed {seed}.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: application/octet-stream; name=\"data-{seed}.bin\"\r\n\
         Content-Disposition: attachment; filename=\"data-{seed}.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n"
    );
    let tail = format!("--{boundary}--\r\n");
    let budget = size_bytes.saturating_sub(head.len() + tail.len());
    // A full base64 line carries 57 bytes in 76 characters plus CRLF.
    let mut data_len = budget / 78 * 57;
    let rest = budget % 78;
    if rest > 6 {
        data_len += (rest - 2) / 4 * 3;
    }
    let mut rng = SplitMix64(seed);
    let mut data = Vec::with_capacity(data_len + 8);
    while data.len() < data_len {
        data.extend_from_slice(&rng.next().to_le_bytes());
    }
    data.truncate(data_len);

    let mut message = Vec::with_capacity(size_bytes + 128);
    message.extend_from_slice(head.as_bytes());
    for line in data.chunks(57) {
        base64_encode_into(line, &mut message);
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(tail.as_bytes());
    message
}

/// A small deterministic generator (SplitMix64): the same seed gives the same test data.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next pseudo-random number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `len` random lowercase letters in CRLF lines of 71: a message body that differs from
    /// seed to seed.
    pub fn text(&mut self, len: usize) -> String {
        (0..len)
            .map(|k| {
                if k % 72 == 71 {
                    '\n'
                } else {
                    char::from(b'a' + (self.next() % 26) as u8)
                }
            })
            .collect::<String>()
            .replace('\n', "\r\n")
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode_into(input: &[u8], out: &mut Vec<u8>) {
    base64_with_alphabet(input, BASE64, true, out);
}

fn base64_with_alphabet(input: &[u8], alphabet: &[u8; 64], pad: bool, out: &mut Vec<u8>) {
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = chunk.len() + 1;
        for k in 0..4 {
            if k < symbols {
                out.push(alphabet[(n >> (18 - 6 * k)) as usize & 63]);
            } else if pad {
                out.push(b'=');
            }
        }
    }
}

/// Modified UTF-7 (RFC 3501 §5.1.3), the encoding of IMAP mailbox names and of Dovecot's
/// folder directories.
fn mutf7_encode(name: &str) -> String {
    const MUTF7: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
    let mut out = String::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|unit| unit.to_be_bytes()).collect();
        let mut encoded = Vec::new();
        base64_with_alphabet(&bytes, MUTF7, false, &mut encoded);
        out.push('&');
        out.push_str(std::str::from_utf8(&encoded).expect("base64 is ASCII"));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            pending.extend(c.encode_utf16(&mut [0; 2]).iter());
        }
    }
    flush(&mut pending, &mut out);
    out
}

fn mutf7_decode(name: &str) -> String {
    let mut out = String::new();
    let mut rest = name;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find('-').unwrap_or(after.len());
        let encoded = &after[..end];
        if encoded.is_empty() {
            out.push('&');
        } else {
            let mut bits = 0u32;
            let mut nbits = 0;
            let mut bytes = Vec::new();
            for c in encoded.bytes() {
                let value = match c {
                    b'A'..=b'Z' => c - b'A',
                    b'a'..=b'z' => c - b'a' + 26,
                    b'0'..=b'9' => c - b'0' + 52,
                    b'+' => 62,
                    b',' => 63,
                    _ => panic!("invalid modified UTF-7 in {name:?}"),
                };
                bits = (bits << 6) | u32::from(value);
                nbits += 6;
                if nbits >= 8 {
                    nbits -= 8;
                    bytes.push((bits >> nbits) as u8);
                }
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            out.push_str(&String::from_utf16_lossy(&units));
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

fn read_maildir(dir: &Path) -> io::Result<Vec<StoredMessage>> {
    let keywords = read_keywords(dir);
    let uids = read_uidlist(dir);
    let mut found = Vec::new();
    for sub in ["cur", "new"] {
        // A mailbox that was only ever opened, never written to, may lack cur/ and new/.
        let Ok(entries) = fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let raw = fs::read(&path)?;
            let internal_date = fs::metadata(&path)?.modified()?;
            let (base, info) = match file_name.split_once(':') {
                Some((base, info)) => (base.to_string(), info.to_string()),
                None => (file_name.clone(), String::new()),
            };
            let flags = info
                .strip_prefix("2,")
                .unwrap_or("")
                .chars()
                .filter_map(|letter| maildir_flag(letter, &keywords))
                .collect();
            // Names begin "SECONDS.M<microseconds>P<pid>"; the microseconds are not zero-padded,
            // so plain string order is wrong within one second. Dovecot's UID is the real order.
            let order = (
                uids.get(&base).copied().unwrap_or(u32::MAX),
                delivery_time(&base),
                file_name,
            );
            found.push((
                order,
                StoredMessage {
                    raw,
                    flags,
                    internal_date,
                },
            ));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found.into_iter().map(|(_, message)| message).collect())
}

fn maildir_flag(letter: char, keywords: &HashMap<char, String>) -> Option<String> {
    let system = match letter {
        'D' => "\\Draft",
        'F' => "\\Flagged",
        'R' => "\\Answered",
        'S' => "\\Seen",
        'T' => "\\Deleted",
        _ => return keywords.get(&letter).cloned(),
    };
    Some(system.to_string())
}

/// `dovecot-keywords` lines are "INDEX NAME"; index 0 is the letter `a` in file names.
fn read_keywords(dir: &Path) -> HashMap<char, String> {
    let text = fs::read_to_string(dir.join("dovecot-keywords")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (index, name) = line.split_once(' ')?;
            let index: u8 = index.parse().ok().filter(|i| *i < 26)?;
            Some((char::from(b'a' + index), name.to_string()))
        })
        .collect()
}

/// `dovecot-uidlist`: a header line, then "UID [EXTENSIONS] :BASENAME" per message.
fn read_uidlist(dir: &Path) -> HashMap<String, u32> {
    let text = fs::read_to_string(dir.join("dovecot-uidlist")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let (fields, base) = line.split_once(':')?;
            let uid = fields.split_whitespace().next()?.parse().ok()?;
            Some((base.to_string(), uid))
        })
        .collect()
}

fn delivery_time(base: &str) -> (u64, u64) {
    let mut parts = base.split('.');
    let seconds = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    let micros = parts
        .next()
        .and_then(|s| s.strip_prefix('M'))
        .map(|s| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    (seconds, micros)
}

fn script(action: &str, dir: &Path) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/dovecot.sh");
    let mut command = Command::new("bash");
    command.arg(script).arg(action).arg(dir);
    command
}

struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `command` to completion or kills it after `timeout`. Output goes to unnamed files,
/// not pipes: `dovecot.sh up` leaves daemons behind, and a daemon holding a pipe open would
/// make reading it to EOF hang.
fn run_bounded(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Finished, String> {
    let describe = format!("{command:?}");
    let stdout = tempfile::tempfile().expect("create a temporary file");
    let stderr = tempfile::tempfile().expect("create a temporary file");
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(stdout.try_clone().expect("clone file handle"))
        .stderr(stderr.try_clone().expect("clone file handle"));
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {describe}: {e}"))?;
    let status = thread::scope(|scope| {
        if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
            // A child that exits early makes this fail with EPIPE; its exit status tells why.
            scope.spawn(move || {
                let _ = pipe.write_all(input);
            });
        }
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if started.elapsed() < timeout => thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{describe} did not finish within {timeout:?}"));
                }
                Err(e) => return Err(format!("waiting for {describe}: {e}")),
            }
        }
    })?;
    Ok(Finished {
        status,
        stdout: read_all(stdout),
        stderr: read_all(stderr),
    })
}

fn read_all(mut file: File) -> Vec<u8> {
    let mut bytes = Vec::new();
    file.rewind().expect("rewind temporary file");
    file.read_to_end(&mut bytes).expect("read temporary file");
    bytes
}

/// Just enough IMAP for the harnesses to store and inspect mail ([`Dovecot::append`],
/// [`mailutils::Mailutils`]); mailferry's own client is what the tests test. Accepts lines
/// ending in a bare LF, as GNU imap4d sends some.
struct ImapSession {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Commands sent so far; the next tag is `T<sent + 1>`.
    sent: u32,
}

/// One untagged response: its text (every line of it, each literal's bytes left out but its
/// `{N}` announcement kept) and its literals in order.
struct Untagged {
    text: String,
    literals: Vec<Vec<u8>>,
}

impl ImapSession {
    /// Connects to the IMAP port on 127.0.0.1 and logs in as `user` with [`password`]`(user)`.
    fn login(port: u16, user: &str) -> ImapSession {
        let address = (Ipv4Addr::LOCALHOST, port).into();
        let stream = TcpStream::connect_timeout(&address, IMAP_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to IMAP port {port}: {e}"));
        stream.set_read_timeout(Some(IMAP_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IMAP_TIMEOUT)).unwrap();
        let mut session = ImapSession {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            sent: 0,
        };
        let greeting = session.read_response().text;
        assert!(greeting.starts_with("* OK"), "IMAP greeting: {greeting}");
        let login = format!("LOGIN {} {}", imap_quote(user), imap_quote(&password(user)));
        if let Err(done) = session.command(&login) {
            panic!("IMAP LOGIN as {user}: {done}");
        }
        session
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write to IMAP server: {e}"));
    }

    fn next_tag(&mut self) -> String {
        self.sent += 1;
        format!("T{}", self.sent)
    }

    /// Reads one response, with the literals it announces.
    fn read_response(&mut self) -> Untagged {
        let mut response = Untagged {
            text: String::new(),
            literals: Vec::new(),
        };
        loop {
            let mut line = Vec::new();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => panic!("IMAP server closed the connection"),
                Ok(_) => {}
                Err(e) => panic!("read from IMAP server: {e}"),
            }
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            response.text.push_str(line);
            let Some(len) = literal_length(line) else {
                return response;
            };
            let mut literal = vec![0; len];
            self.reader
                .read_exact(&mut literal)
                .unwrap_or_else(|e| panic!("read a {len}-byte literal from IMAP server: {e}"));
            response.literals.push(literal);
        }
    }

    /// Sends `command` under a fresh tag: the untagged responses before its completion if that
    /// is OK, else the completion line.
    fn command(&mut self, command: &str) -> Result<Vec<Untagged>, String> {
        let tag = self.next_tag();
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.finish(&tag)
    }

    fn finish(&mut self, tag: &str) -> Result<Vec<Untagged>, String> {
        let mut untagged = Vec::new();
        loop {
            let response = self.read_response();
            match response
                .text
                .strip_prefix(tag)
                .and_then(|r| r.strip_prefix(' '))
            {
                Some(status) if status.starts_with("OK") => return Ok(untagged),
                Some(_) => return Err(response.text),
                None => untagged.push(response),
            }
        }
    }

    /// Creates `folder` unless it is INBOX or exists already; panics if the server refuses.
    fn create(&mut self, folder: &str) {
        if folder.eq_ignore_ascii_case("INBOX") {
            return;
        }
        match self.command(&format!("CREATE {}", imap_mailbox(folder))) {
            Ok(_) => {}
            // Dovecot answers "[ALREADYEXISTS]", GNU imap4d "NO CREATE already exists".
            Err(done)
                if done.contains("[ALREADYEXISTS]")
                    || done.to_ascii_lowercase().contains("already exists") => {}
            Err(done) => panic!("CREATE {folder:?} failed: {done}"),
        }
    }

    /// APPENDs `raw` to `folder` with `flags` and, if given, that INTERNALDATE (IMAP
    /// date-time, e.g. `05-Mar-2019 06:52:37 +0000`); panics unless `folder` took it.
    fn append(&mut self, folder: &str, flags: &[&str], date: Option<&str>, raw: &[u8]) {
        let tag = self.next_tag();
        let mut command = format!("{tag} APPEND {}", imap_mailbox(folder));
        if !flags.is_empty() {
            command.push_str(&format!(" ({})", flags.join(" ")));
        }
        if let Some(date) = date {
            command.push_str(&format!(" \"{date}\""));
        }
        self.send(format!("{command} {{{}}}\r\n", raw.len()).as_bytes());
        let go_ahead = self.read_response().text;
        assert!(
            go_ahead.starts_with('+'),
            "APPEND to {folder:?} refused: {go_ahead}"
        );
        self.send(raw);
        self.send(b"\r\n");
        if let Err(done) = self.finish(&tag) {
            panic!("APPEND to {folder:?} failed: {done}");
        }
    }

    fn logout(mut self) {
        if let Err(done) = self.command("LOGOUT") {
            panic!("IMAP LOGOUT: {done}");
        }
    }
}

/// The length `N` of the literal a response line announces by ending in `{N}`.
fn literal_length(line: &str) -> Option<usize> {
    let open = line.strip_suffix('}')?.rfind('{')?;
    line[open + 1..line.len() - 1].parse().ok()
}

/// The mailbox name of a `* LIST (attributes) "delimiter" name` line, decoded; the name as an
/// atom or a quoted string.
fn listed_name(line: &str) -> Option<String> {
    let rest = line.strip_prefix("* LIST (")?;
    let rest = &rest[rest.find(") ")? + 2..];
    let rest = match rest.strip_prefix("NIL ") {
        Some(rest) => rest,
        None => {
            let quoted = rest.strip_prefix('"')?;
            let quoted = quoted.strip_prefix('\\').unwrap_or(quoted);
            quoted.get(1..)?.strip_prefix("\" ")?
        }
    };
    let name = match rest.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
        None if !rest.ends_with('}') => rest.to_owned(),
        None => return None,
    };
    Some(mutf7_decode(&name))
}

/// A folder name as an IMAP mailbox argument: modified UTF-7, quoted.
fn imap_mailbox(folder: &str) -> String {
    imap_quote(&mutf7_encode(folder))
}

fn imap_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// IMAP date-time, in UTC: `05-Mar-2019 06:52:37 +0000`.
fn imap_date(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .expect("INTERNALDATE before 1970")
        .as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let clock = seconds % 86_400;
    format!(
        "{day:02}-{}-{year} {:02}:{:02}:{:02} +0000",
        MONTHS[month - 1],
        clock / 3600,
        clock / 60 % 60,
        clock % 60
    )
}

/// RFC 5322 date, in UTC: `Wed, 01 Jan 2020 00:00:00 +0000`.
fn rfc2822_date(seconds: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let days = seconds / 86_400;
    let (year, month, day) = civil_from_days(days);
    let clock = seconds % 86_400;
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[month - 1],
        clock / 3600,
        clock / 60 % 60,
        clock % 60
    )
}

/// Days since 1970-01-01 to (year, month 1–12, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, usize, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month as usize, day)
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
