//! A private GNU Mailutils 3.15 `imap4d` + `pop3d` (Debian packages `mailutils-imap4d`,
//! `mailutils-pop3d`) on 127.0.0.1, for tests against a server that is not Dovecot.
//!
//! ```ignore
//! let server = Mailutils::start(MailboxType::Maildir);
//! server.deliver("alice", b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n");
//! let copies = server.messages("alice", "INBOX");
//! ```
//!
//! The harness itself is the inetd: Mailutils' virtdomain authentication only resolves a bare
//! user name (`alice`, not `alice@localhost`) in `--inetd` mode, where it picks the passwd file
//! named after the local address of the socket on fd 0 (`virt/localhost`, or `virt/127.0.0.1`
//! when that does not resolve). Each connection gets its own `imap4d`/`pop3d` as `nobody:mail`:
//! virtdomain never switches uid after login, so a root server would store mail as root, and
//! `pop3d` exits unless it can `setgid(mail)`.
//!
//! What imap4d 3.15 does (checked over raw sockets against this configuration):
//! - Lines may end in a bare LF; LIST shows INBOX with a NIL delimiter and parents of nested
//!   folders as `\NoSelect`; no MULTIAPPEND, no UIDPLUS; CREATE of an existing folder answers
//!   `NO CREATE already exists` (no `[ALREADYEXISTS]`).
//! - APPEND with a keyword flag (`$Label1`) is refused with `BAD APPEND Unrecognized flag`.
//! - **mbox**: flags and INTERNALDATE of an APPEND are kept, but the date's zone is dropped
//!   (`08:52:37 +0200` comes back as `08:52:37 +0000`). An APPEND without a date needs a `From:`
//!   header (for the `From ` line), else `NO APPEND [TRYCREATE] failed`; its INTERNALDATE is
//!   then the `Date:` header, or 1970 without one. BODY[] serves the message with `X-IMAPbase`,
//!   `X-UID` and `Status` headers added; see [`without_status_headers`].
//! - **maildir**: an APPEND's flags and date are ignored (no flags, INTERNALDATE = now); BODY[]
//!   serves the bytes appended.
//! - pop3d, listing UIDs the first time, writes each one into its message as an `X-UIDL`
//!   header (both types): LIST sizes and every later BODY[] or RETR include that line.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use mailferry::net::{Address, Connection, TlsConfig, TlsTrust};

use super::{IMAP_TIMEOUT, ImapSession, USERS, imap_date, mutf7_decode, password, run_bounded};

/// Bounds `openssl` and `--config-lint` runs.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `start` waits for each port's greeting.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a listener thread looks at the stop flag while no client connects.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// How the server stores mail: `DIR/mail/USER/INBOX` is an mbox file or a maildir, and so is
/// every other folder beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxType {
    /// Mailutils' default: one file per folder, flags in `Status:` headers.
    Mbox,
    /// One file per message in `cur/`, `new/`, `tmp/`.
    Maildir,
}

/// One message as imap4d serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMessage {
    /// BODY.PEEK[] as served (for mbox with Mailutils' own headers, see the module docs).
    pub raw: Vec<u8>,
    /// FLAGS without `\Recent`, which says who looked first rather than what is stored.
    pub flags: Vec<String>,
    /// INTERNALDATE as the server wrote it, e.g. `05-Mar-2019 08:52:37 +0000`.
    pub internal_date: String,
    /// The message's UID.
    pub uid: u32,
}

/// A private Mailutils (IMAP with STARTTLS, IMAPS, POP3 with STLS, POP3S on 127.0.0.1) in its
/// own temporary directory, with the users in [`USERS`](super::USERS). Dropping it closes the
/// listeners, kills the server processes it started that still run, and deletes the directory.
/// Nothing outlives a killed test process: the listeners are its own sockets, and a session's
/// server ends when its client (in that process) is gone.
pub struct Mailutils {
    dir: tempfile::TempDir,
    mailbox_type: MailboxType,
    /// imap, imaps, pop3, pop3s: the order of [`SERVICES`].
    ports: [u16; 4],
    inetd: Arc<Inetd>,
    listeners: Vec<JoinHandle<()>>,
}

/// A listener: its name (and configuration file `DIR/NAME.conf`), program and `tls-mode`.
const SERVICES: [(&str, &str, &str); 4] = [
    ("imap", "/usr/sbin/imap4d", "ondemand"),
    ("imaps", "/usr/sbin/imap4d", "connection"),
    ("pop3", "/usr/sbin/pop3d", "ondemand"),
    ("pop3s", "/usr/sbin/pop3d", "connection"),
];

/// What the listener threads share with [`Mailutils`].
struct Inetd {
    stop: AtomicBool,
    /// Every server process started and not yet reaped.
    children: Mutex<Vec<Child>>,
    log: File,
    uid: u32,
    gid: u32,
}

impl Mailutils {
    /// Starts a server storing mail as `mailbox_type`; returns once every port has greeted.
    /// Panics (with the server's log) if it cannot.
    pub fn start(mailbox_type: MailboxType) -> Mailutils {
        let dir = tempfile::Builder::new()
            .prefix("mu")
            .tempdir_in("/tmp")
            .expect("create a temporary directory in /tmp");
        let root = dir.path();
        let (uid, gid) = (getent("passwd", "nobody"), getent("group", "mail"));
        // The servers run as nobody and must reach their configuration in DIR (created 0700).
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
        make_certificate(root, uid, gid);
        write_users(root, mailbox_type, uid, gid);
        write_configs(root, mailbox_type, uid, gid);

        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("mailutils.log"))
            .expect("create mailutils.log");
        let inetd = Arc::new(Inetd {
            stop: AtomicBool::new(false),
            children: Mutex::new(Vec::new()),
            log,
            uid,
            gid,
        });
        let mut ports = [0; 4];
        let mut listeners = Vec::new();
        for (port, (name, program, _)) in ports.iter_mut().zip(SERVICES) {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
            // Nonblocking so the thread sees the stop flag even when no client comes.
            listener.set_nonblocking(true).unwrap();
            *port = listener.local_addr().unwrap().port();
            let config = root.join(format!("{name}.conf"));
            let inetd = Arc::clone(&inetd);
            listeners.push(thread::spawn(move || {
                inetd.serve(&listener, program, &config)
            }));
        }
        let server = Mailutils {
            dir,
            mailbox_type,
            ports,
            inetd,
            listeners,
        };
        server.await_greetings();
        server
    }

    /// Plain IMAP port (STARTTLS offered).
    pub fn imap_port(&self) -> u16 {
        self.ports[0]
    }

    /// Implicit-TLS IMAP port.
    pub fn imaps_port(&self) -> u16 {
        self.ports[1]
    }

    /// Plain POP3 port (STLS offered).
    pub fn pop3_port(&self) -> u16 {
        self.ports[2]
    }

    /// Implicit-TLS POP3 port.
    pub fn pop3s_port(&self) -> u16 {
        self.ports[3]
    }

    /// The server's self-signed certificate (PEM, CN and SAN `localhost`, SAN IP `127.0.0.1`,
    /// CA:TRUE as with Dovecot: pin it).
    pub fn cert_path(&self) -> PathBuf {
        self.dir().join("cert.pem")
    }

    /// The instance's directory: configuration, certificate, `virt/` passwd files,
    /// `mail/USER/` mailboxes, log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The servers' stderr so far (logins, errors), for assertions and failure messages.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir().join("mailutils.log")).unwrap_or_default())
            .into_owned()
    }

    /// How this server stores mail.
    pub fn mailbox_type(&self) -> MailboxType {
        self.mailbox_type
    }

    /// Stores `raw` in `user`'s `folder` (created if missing) with an IMAP APPEND on the plain
    /// port, with `flags` (no keywords: imap4d refuses them) and, if given, that INTERNALDATE
    /// (IMAP date-time). See the module docs for what each mailbox type keeps. Panics if the
    /// server refuses.
    pub fn append(&self, user: &str, folder: &str, raw: &[u8], flags: &[&str], date: Option<&str>) {
        let mut imap = ImapSession::login(self.imap_port(), user);
        imap.create(folder);
        imap.append(folder, flags, date, raw);
        imap.logout();
    }

    /// Puts `raw` into `user`'s INBOX (an APPEND dated now: without a date, mbox would need
    /// a `From:` header in `raw`).
    pub fn deliver(&self, user: &str, raw: &[u8]) {
        let now = imap_date(SystemTime::now());
        self.append(user, "INBOX", raw, &[], Some(&now));
    }

    /// Creates `user`'s `folder` unless it is INBOX or exists already.
    pub fn create_folder(&self, user: &str, folder: &str) {
        let mut imap = ImapSession::login(self.imap_port(), user);
        imap.create(folder);
        imap.logout();
    }

    /// `user`'s selectable folders (LIST `*` without `\NoSelect` parents), decoded: INBOX first,
    /// then the others sorted.
    pub fn folders(&self, user: &str) -> Vec<String> {
        let mut imap = ImapSession::login(self.imap_port(), user);
        let listing = imap
            .command("LIST \"\" \"*\"")
            .unwrap_or_else(|done| panic!("LIST as {user}: {done}"));
        imap.logout();
        let mut names: Vec<String> = listing
            .iter()
            .filter_map(|response| list_entry(&response.text))
            .collect();
        names.sort_by_key(|name| (name != "INBOX", name.clone()));
        names
    }

    /// The messages in `user`'s `folder` in UID order, read with EXAMINE (nothing changes);
    /// empty if the folder does not exist.
    pub fn messages(&self, user: &str, folder: &str) -> Vec<FetchedMessage> {
        let mut imap = ImapSession::login(self.imap_port(), user);
        let examine = format!("EXAMINE {}", super::imap_mailbox(folder));
        let fetched = match imap.command(&examine) {
            Err(done) if done.contains(" NO ") => Vec::new(),
            Err(done) => panic!("EXAMINE {folder:?} as {user}: {done}"),
            Ok(_) => imap
                .command("UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])")
                .unwrap_or_else(|done| panic!("FETCH in {folder:?} as {user}: {done}")),
        };
        imap.logout();
        let mut messages: Vec<FetchedMessage> = fetched
            .into_iter()
            // Skips untagged EXISTS and the like that a server may send at any time.
            .filter(|response| response.text.contains(" FETCH ("))
            .map(fetched_message)
            .collect();
        messages.sort_by_key(|message| message.uid);
        messages
    }

    /// `user`'s INBOX as plain POP3 lists it: (message number, UIDL, LIST size) per message.
    pub fn pop3_uidls(&self, user: &str) -> Vec<(u32, String, u64)> {
        let stream = TcpStream::connect_timeout(
            &(Ipv4Addr::LOCALHOST, self.pop3_port()).into(),
            IMAP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("connect to POP3 port {}: {e}", self.pop3_port()));
        stream.set_read_timeout(Some(IMAP_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IMAP_TIMEOUT)).unwrap();
        let mut pop3 = Pop3 {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        pop3.expect_ok("greeting");
        pop3.command(&format!("USER {user}"), false);
        pop3.command(&format!("PASS {}", password(user)), false);
        let uidls = pop3.command("UIDL", true);
        let sizes = pop3.command("LIST", true);
        pop3.command("QUIT", false);
        assert_eq!(
            uidls.len(),
            sizes.len(),
            "UIDL {uidls:?} but LIST {sizes:?}"
        );
        uidls
            .iter()
            .zip(&sizes)
            .map(|(uidl, size)| {
                let (number, uidl) = uidl.split_once(' ').expect("UIDL line: N UIDL");
                let (same, size) = size.split_once(' ').expect("LIST line: N SIZE");
                assert_eq!(number, same, "UIDL and LIST disagree");
                let number = number.parse().expect("message number");
                (number, uidl.to_owned(), size.parse().expect("LIST size"))
            })
            .collect()
    }

    /// Connects to every port (TLS ones verified against the pinned certificate) and reads the
    /// greeting: the listeners are bound already, this proves the servers behind them work.
    fn await_greetings(&self) {
        let tls = TlsConfig::new(&TlsTrust::CaFile(self.cert_path())).unwrap();
        for ((name, _, _), port) in SERVICES.iter().zip(self.ports) {
            let address = Address {
                host: "127.0.0.1".into(),
                port,
                timeout: GREETING_TIMEOUT,
                trace: Default::default(),
            };
            let connected = if name.ends_with('s') {
                Connection::connect_tls(&address, &tls)
            } else {
                Connection::connect_plain(&address)
            };
            let greeting = connected.map_err(|e| e.to_string()).and_then(|mut c| {
                let mut line = String::new();
                c.read_line(&mut line).map_err(|e| e.to_string())?;
                Ok(line)
            });
            let expected = if name.starts_with("imap") {
                "* OK"
            } else {
                "+OK"
            };
            match greeting {
                Ok(line) if line.starts_with(expected) => {}
                // Drop prints the log.
                other => panic!("no {name} greeting on port {port}: {other:?}"),
            }
        }
    }
}

impl Drop for Mailutils {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- {} ---\n{}",
                self.dir().join("mailutils.log").display(),
                self.log()
            );
        }
        self.inetd.stop.store(true, Ordering::Relaxed);
        for listener in self.listeners.drain(..) {
            // No panic here: a panic while already unwinding would abort the test binary.
            if listener.join().is_err() {
                eprintln!("a Mailutils listener thread panicked");
            }
        }
        let mut children = self
            .inetd
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for child in children.iter_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Inetd {
    /// Accepts connections until stopped, each served by `program` (`--inetd`) on its socket.
    fn serve(&self, listener: &TcpListener, program: &str, config: &Path) {
        while !self.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => self.spawn(stream, program, config),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
                Err(e) => self.note(&format!("accept on {}: {e}", config.display())),
            }
            // Reaped as they end, so a long test does not pile up zombies.
            let mut children = self.children.lock().unwrap();
            children.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        }
    }

    fn spawn(&self, stream: TcpStream, program: &str, config: &Path) {
        let started = stream
            .set_nonblocking(false)
            .and_then(|()| {
                let socket = OwnedFd::from(stream);
                Command::new(program)
                    .arg("--inetd")
                    .arg(format!("--config-file={}", config.display()))
                    .stdout(Stdio::from(socket.try_clone()?))
                    .stdin(Stdio::from(socket))
                    .stderr(self.log.try_clone()?)
                    .uid(self.uid)
                    .gid(self.gid)
                    .spawn()
            })
            // Our copies of the socket are closed here, so the client sees the server's EOF.
            .map(|child| self.children.lock().unwrap().push(child));
        if let Err(e) = started {
            self.note(&format!("cannot start {program}: {e}"));
        }
    }

    fn note(&self, line: &str) {
        let _ = writeln!(&self.log, "mailutils harness: {line}");
    }
}

/// Plain POP3 for [`Mailutils::pop3_uidls`].
struct Pop3 {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Pop3 {
    fn read_line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("POP3 server closed the connection"),
            Ok(_) => line.trim_end_matches(['\r', '\n']).to_owned(),
            Err(e) => panic!("read from POP3 server: {e}"),
        }
    }

    fn expect_ok(&mut self, what: &str) {
        let line = self.read_line();
        assert!(line.starts_with("+OK"), "POP3 {what}: {line}");
    }

    /// Sends `command`; the lines of its multi-line answer (none unless `multiline`).
    fn command(&mut self, command: &str, multiline: bool) -> Vec<String> {
        self.writer
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("write to POP3 server: {e}"));
        let verb = command.split(' ').next().unwrap_or_default();
        self.expect_ok(verb);
        let mut lines = Vec::new();
        if multiline {
            loop {
                let line = self.read_line();
                if line == "." {
                    break;
                }
                lines.push(line);
            }
        }
        lines
    }
}

/// `raw` without the header lines Mailutils adds to a message (`X-IMAPbase`, `X-UID`, `Status`
/// in an mbox, `X-UIDL` once pop3d listed it): what was appended, for a message that had none.
pub fn without_status_headers(raw: &[u8]) -> Vec<u8> {
    const ADDED: [&[u8]; 4] = [b"x-imapbase:", b"x-uid:", b"status:", b"x-uidl:"];
    let body_at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |at| at + 2);
    let mut out: Vec<u8> = raw[..body_at]
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| {
            !ADDED.iter().any(|name| {
                line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name)
            })
        })
        .flatten()
        .copied()
        .collect();
    out.extend_from_slice(&raw[body_at..]);
    out
}

/// The folder name of an untagged `LIST (ATTRIBUTES) DELIMITER NAME` response, decoded; `None`
/// for other responses and for `\NoSelect` entries.
fn list_entry(text: &str) -> Option<String> {
    let rest = text.strip_prefix("* LIST (")?;
    let (attributes, rest) = rest.split_once(") ")?;
    if attributes.to_ascii_lowercase().contains("\\noselect") {
        return None;
    }
    // The delimiter is NIL (imap4d's INBOX) or a quoted character.
    let name = match rest.strip_prefix("NIL ") {
        Some(name) => name,
        None => rest.get(4..)?,
    };
    let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => name.to_owned(),
    };
    Some(mutf7_decode(&name))
}

/// A `* N FETCH (UID u FLAGS (...) INTERNALDATE "..." BODY[] {n})` response, items in any order.
fn fetched_message(response: super::Untagged) -> FetchedMessage {
    let text = &response.text;
    let item = |name: &str| {
        let at = text
            .find(name)
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        &text[at + name.len()..]
    };
    let uid = item("UID ");
    let uid = uid[..uid.find([' ', ')']).unwrap_or(uid.len())]
        .parse()
        .unwrap_or_else(|e| panic!("UID in {text}: {e}"));
    let flags = item("FLAGS (");
    let flags = flags[..flags.find(')').expect("FLAGS list ends")]
        .split_whitespace()
        .filter(|flag| !flag.eq_ignore_ascii_case("\\Recent"))
        .map(str::to_owned)
        .collect();
    let date = item("INTERNALDATE \"");
    let internal_date = date[..date.find('"').expect("INTERNALDATE ends")].to_owned();
    let raw = response
        .literals
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no BODY[] literal in {text}"));
    FetchedMessage {
        raw,
        flags,
        internal_date,
        uid,
    }
}

/// The numeric id of `name` in the `passwd` or `group` database (as `getent` looks it up).
pub fn getent(database: &str, name: &str) -> u32 {
    let mut command = Command::new("getent");
    command.args([database, name]);
    let out = run_bounded(command, None, SETUP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let entry = String::from_utf8_lossy(&out.stdout);
    entry
        .split(':')
        .nth(2)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("getent {database} {name}: {entry:?}"))
}

/// Runs `command`, panicking with its stderr unless it succeeds; its stdout.
fn run(command: Command, stdin: Option<&[u8]>) -> Vec<u8> {
    let describe = format!("{command:?}");
    let out = run_bounded(command, stdin, SETUP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{describe} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// DIR/cert.pem and DIR/key.pem, the key 0600 and owned by the server's account: Mailutils'
/// TLS file checks refuse a key others can read.
fn make_certificate(root: &Path, uid: u32, gid: u32) {
    let (cert, key) = (root.join("cert.pem"), root.join("key.pem"));
    let mut req = Command::new("openssl");
    req.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
    ])
    .args(["-subj", "/CN=localhost"])
    .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    run(req, None);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&cert, fs::Permissions::from_mode(0o644)).unwrap();
    for file in [&key, &cert] {
        chown(file, Some(uid), Some(gid)).unwrap();
    }
}

/// The virtdomain passwd files (`name:crypt:uid:gid:gecos:home:shell`, SHA-512 crypt) and each
/// user's home `DIR/mail/USER` with an empty INBOX: imap4d answers APPEND to a missing INBOX
/// with `NO [TRYCREATE]`.
fn write_users(root: &Path, mailbox_type: MailboxType, uid: u32, gid: u32) {
    let mut hash = Command::new("openssl");
    hash.args(["passwd", "-6", "-stdin"]);
    let passwords: String = USERS.iter().map(|user| password(user) + "\n").collect();
    let hashes = String::from_utf8(run(hash, Some(passwords.as_bytes()))).unwrap();
    let mail = root.join("mail");
    owned_dir(&mail, uid, gid);
    let mut passwd = String::new();
    for (user, hash) in USERS.iter().zip(hashes.lines()) {
        let home = mail.join(user);
        passwd.push_str(&format!(
            "{user}:{hash}:{uid}:{gid}:{user}:{}:/bin/false\n",
            home.display()
        ));
        owned_dir(&home, uid, gid);
        let inbox = home.join("INBOX");
        match mailbox_type {
            MailboxType::Mbox => {
                File::create(&inbox).unwrap();
                chown(&inbox, Some(uid), Some(gid)).unwrap();
            }
            MailboxType::Maildir => {
                owned_dir(&inbox, uid, gid);
                for sub in ["cur", "new", "tmp"] {
                    owned_dir(&inbox.join(sub), uid, gid);
                }
            }
        }
    }
    let virt = root.join("virt");
    owned_dir(&virt, uid, gid);
    for domain in ["localhost", "127.0.0.1"] {
        let file = virt.join(domain);
        fs::write(&file, &passwd).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        chown(&file, Some(uid), Some(gid)).unwrap();
    }
}

/// DIR/common.conf and one file per listener (it includes common.conf and sets `tls-mode`),
/// each checked with `--config-lint`. /etc/mailutils.conf is never read.
fn write_configs(root: &Path, mailbox_type: MailboxType, uid: u32, gid: u32) {
    let dir = root.display();
    // pop3d locks a maildir INBOX with "mandatory locking" files; their default directory
    // /var/lock/subsys/mail does not exist here ("-ERR [IN-USE] Mailbox in use").
    owned_dir(&root.join("lock"), uid, gid);
    let mailbox_type = match mailbox_type {
        MailboxType::Mbox => "mbox",
        MailboxType::Maildir => "maildir",
    };
    let common = format!(
        "# Written by tests/support/mailutils.rs: private test instance, loopback only.\n\
         logging {{ syslog false; print-severity true; }};\n\
         auth {{ authorization virtdomain; authentication generic; }};\n\
         virtdomain {{ passwd-dir {dir}/virt; }};\n\
         mailbox {{ mailbox-type {mailbox_type}; mail-spool {dir}/mail; }};\n\
         mandatory-locking {{ lock-directory {dir}/lock; }};\n\
         tls {{ ssl-certificate-file {dir}/cert.pem; ssl-key-file {dir}/key.pem; }};\n"
    );
    fs::write(root.join("common.conf"), common).unwrap();
    for (name, program, tls_mode) in SERVICES {
        let config = root.join(format!("{name}.conf"));
        fs::write(
            &config,
            format!("include {dir}/common.conf;\ntls-mode {tls_mode};\n"),
        )
        .unwrap();
        let mut lint = Command::new(program);
        lint.arg(format!("--config-file={}", config.display()))
            .arg("--config-lint");
        run(lint, None);
    }
}

fn owned_dir(path: &Path, uid: u32, gid: u32) {
    fs::create_dir(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    chown(path, Some(uid), Some(gid)).unwrap();
}
