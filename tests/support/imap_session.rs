//! Just enough IMAP, over plain TCP, for the harnesses to store and inspect mail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use super::mutf7::{mutf7_decode, mutf7_encode};
use super::password;

pub(super) const IMAP_TIMEOUT: Duration = Duration::from_secs(30);

/// Just enough IMAP for the harnesses to store and inspect mail ([`Dovecot::append`](super::Dovecot::append),
/// [`Mailutils`](super::mailutils::Mailutils)); mailferry's own client is what the tests test. Accepts lines
/// ending in a bare LF, as GNU imap4d sends some.
pub(super) struct ImapSession {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Commands sent so far; the next tag is `T<sent + 1>`.
    sent: u32,
}

/// One untagged response: its text (every line of it, each literal's bytes left out but its
/// `{N}` announcement kept) and its literals in order.
pub(super) struct Untagged {
    pub(super) text: String,
    pub(super) literals: Vec<Vec<u8>>,
}

impl ImapSession {
    /// Connects to the IMAP port on 127.0.0.1 and logs in as `user` with [`password`]`(user)`.
    pub(super) fn login(port: u16, user: &str) -> ImapSession {
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
    pub(super) fn read_response(&mut self) -> Untagged {
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
    pub(super) fn command(&mut self, command: &str) -> Result<Vec<Untagged>, String> {
        let tag = self.next_tag();
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.finish(&tag)
    }

    pub(super) fn finish(&mut self, tag: &str) -> Result<Vec<Untagged>, String> {
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
    pub(super) fn create(&mut self, folder: &str) {
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
    pub(super) fn append(&mut self, folder: &str, flags: &[&str], date: Option<&str>, raw: &[u8]) {
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

    pub(super) fn logout(mut self) {
        if let Err(done) = self.command("LOGOUT") {
            panic!("IMAP LOGOUT: {done}");
        }
    }
}

/// The length `N` of the literal a response line announces by ending in `{N}`.
pub(super) fn literal_length(line: &str) -> Option<usize> {
    let open = line.strip_suffix('}')?.rfind('{')?;
    line[open + 1..line.len() - 1].parse().ok()
}

/// The mailbox name of a `* LIST (attributes) "delimiter" name` line, decoded; the name as an
/// atom or a quoted string.
pub(super) fn listed_name(line: &str) -> Option<String> {
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
pub(super) fn imap_mailbox(folder: &str) -> String {
    imap_quote(&mutf7_encode(folder))
}

pub(super) fn imap_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// IMAP date-time, in UTC: `05-Mar-2019 06:52:37 +0000`.
pub(super) fn imap_date(time: SystemTime) -> String {
    DateTime::<Utc>::from(time)
        .format("%d-%b-%Y %H:%M:%S +0000")
        .to_string()
}
