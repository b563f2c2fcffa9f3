//! The blocking POP3 client: one [`Connection`], commands written in batches, responses read
//! through the [`codec`](super::codec).

use std::fmt;
use std::io::Write;

use super::codec::{self, Capabilities, Status};
use crate::auth::{Login, Mechanism};
use crate::error::SessionError;
use crate::net::{Address, Connection, TlsConfig, TlsMode};
use crate::trace::REDACTED;

/// Commands (TOP or RETR) in flight at most. Each is a dozen bytes, so even a full window never
/// fills the socket buffers while the answers wait to be read (the answers themselves cost no
/// memory here: a server that runs ahead of the reader blocks on its own socket). Over a slow
/// link the window is what keeps the server busy: at 50 ms RTT, 64 TOPs in flight meant a round
/// trip per 64 messages, and 16 RETRs about 20 MB/s; at 200 ms, 256 RETRs of 60 KB messages
/// (refilled at half) left the link idle for half of every refill's round trip.
const FETCH_WINDOW: usize = 1024;
/// Largest header block [`Pop3Client::top_headers`] accepts.
pub const MAX_HEADER_SIZE: usize = 8 << 20;
/// Largest LIST/UIDL body accepted: millions of messages, yet bounded.
const MAX_LISTING: usize = 256 << 20;
/// Largest CAPA body accepted: a few dozen short lines in practice. Read before TLS too, where
/// anyone on the path could send it.
const MAX_CAPA: usize = 64 * 1024;
/// LIST/UIDL records accepted beyond the count STAT announced (they should match exactly).
const LISTING_SLACK: usize = 16;
/// The longest LIST/UIDL line accounted for in the byte cap: RFC 1939 ids have up to 70
/// characters, and servers may add words after a LIST size.
const MAX_LISTING_LINE: usize = 512;
/// RFC 5034 §4: a command with its initial response must fit in 255 octets.
const MAX_AUTH_LINE: usize = 255;
/// The listing's commands, sent behind a password login when the server pipelines (see
/// [`Pop3Client::login`]).
const LISTING_COMMANDS: &[u8] = b"STAT\r\nLIST\r\nUIDL\r\n";
/// How long a QUIT sent by [`Pop3Client::say_goodbye`] may take, each way.
const GOODBYE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a bulk fetch stopped.
#[derive(Debug, thiserror::Error)]
pub enum FetchError<E> {
    /// The connection failed; the client is unusable afterwards.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The caller's callback returned this error; the client is unusable afterwards, since
    /// answers to pipelined commands are still on their way.
    #[error("stopped: {0}")]
    Stopped(E),
}

/// What [`Pop3Client::listing`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Every message number with its size in bytes.
    pub sizes: Vec<(u32, u64)>,
    /// Every message number with its unique id; `None` from a server without UIDL.
    pub uidls: Option<Vec<(u32, String)>>,
}

/// A logged-in (or about to be) POP3 session.
///
/// After a method fails with anything but [`SessionError::Refused`] or
/// [`SessionError::LoginRefused`], or a fetch stops early, the connection may sit in the middle
/// of a response; every later call then fails and the client should be dropped. Mail is never
/// deleted unless the caller asks for it with [`Pop3Client::dele`].
pub struct Pop3Client {
    conn: Connection,
    caps: Capabilities,
    broken: bool,
    /// The listing read in the login's round trip, for the first [`Pop3Client::listing`].
    listing: Option<Listing>,
}

impl fmt::Debug for Pop3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pop3Client")
            .field("tls", &self.conn.is_tls())
            .field("capabilities", &self.caps)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Pop3Client {
    /// Connects, reads the greeting, asks for capabilities and, for [`TlsMode::StartTls`],
    /// upgrades with STLS and asks again (capabilities sent in clear can't be trusted).
    pub fn connect(
        address: &Address,
        mode: TlsMode,
        tls: &TlsConfig,
    ) -> Result<Self, SessionError> {
        let mut conn = match mode {
            TlsMode::Implicit => Connection::connect_tls(address, tls)?,
            TlsMode::StartTls | TlsMode::StartTlsIfOffered | TlsMode::Plain => {
                Connection::connect_plain(address)?
            }
        };
        let greeting = read_status(&mut conn)?;
        if !greeting.ok {
            return Err(SessionError::Refused(greeting.text));
        }
        let mut caps = capa(&mut conn)?;
        // Some servers offer STLS without listing it (or have no CAPA), so STLS is tried
        // whenever TLS is required. With plaintext allowed, a server whose CAPA answer lists
        // no STLS is taken at its word: asking anyway costs a round trip on every connection.
        let try_stls = match mode {
            TlsMode::StartTls => true,
            TlsMode::StartTlsIfOffered => caps.has("STLS") || caps.lines().is_empty(),
            TlsMode::Implicit | TlsMode::Plain => false,
        };
        if try_stls {
            let answer = command(&mut conn, b"STLS\r\n")?;
            if answer.ok {
                conn = conn.start_tls(&address.host, tls)?;
                caps = capa(&mut conn)?;
            } else if mode == TlsMode::StartTls {
                return Err(SessionError::Unsupported(format!(
                    "the server does not offer STLS; use pop3s (implicit TLS) or allow \
                     plaintext (the server said: {})",
                    answer.text
                )));
            }
        }
        Ok(Pop3Client {
            conn,
            caps,
            broken: false,
            listing: None,
        })
    }

    /// What the server said it can do: its latest CAPA answer (after STLS, and after login
    /// unless PIPELINING was offered before).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// Logs in with SASL (RFC 5034): PLAIN when the server lists it (with an authorization id
    /// for a master-user login), CRAM-MD5 or XOAUTH2 / OAUTHBEARER when chosen; else USER/PASS
    /// (as `user*admin` for a master user).
    ///
    /// A refusal is [`SessionError::LoginRefused`], except when its response code says the
    /// server is busy or the mailbox locked (`[IN-USE]`, `[SYS/TEMP]`, `[SYS/PERM]`,
    /// `[LOGIN-DELAY]`): then [`SessionError::Refused`]. Errors never contain the password.
    /// After a refusal the session can try again.
    pub fn login(&mut self, login: &Login<'_>) -> Result<(), SessionError> {
        self.log_in(login, false)
    }

    /// [`login`](Self::login), and on a server that offers PIPELINING the listing's commands
    /// (STAT, LIST, UIDL) in the same write as a one-line AUTH PLAIN, whose answers the first
    /// [`listing`](Self::listing) returns: over a slow link that saves the round trip the
    /// index would wait for next. They are the session's answers: a maildrop does not change
    /// once logged in (RFC 1939 §4). After a refusal the client is unusable: the commands
    /// behind the login were refused too, and a server may hang up for so many (Dovecot does).
    pub fn login_and_list(&mut self, login: &Login<'_>) -> Result<(), SessionError> {
        let logged_in = self.log_in(login, self.caps.has("PIPELINING"));
        self.broken |= logged_in.is_err();
        logged_in
    }

    fn log_in(&mut self, login: &Login<'_>, list_behind: bool) -> Result<(), SessionError> {
        let admin = login.admin.unwrap_or_default();
        for (what, value) in [
            ("user name", login.user),
            ("administrator name", admin),
            ("password", login.password),
        ] {
            if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
                return Err(SessionError::Unsupported(format!(
                    "the {what} contains a line break or NUL, which POP3 cannot send"
                )));
            }
        }
        if let Some(required) = login.required_mechanism()
            && !self.caps.has_sasl(required)
        {
            return Err(SessionError::Unsupported(format!(
                "the server does not offer SASL {required}"
            )));
        }
        let sasl_plain = login.is_oauth() || self.caps.has_sasl("PLAIN");
        self.listing = self.run(|conn| {
            if login.mechanism == Mechanism::CramMd5 {
                auth_cram_md5(conn, login).map(|()| None)
            } else if sasl_plain {
                auth_sasl(conn, login, list_behind)
            } else {
                let user = login.login_name();
                let answer = command(conn, format!("USER {user}\r\n").as_bytes())?;
                ok_or_login_refused(answer)?;
                let password = login.password;
                let pass = format!("PASS {password}\r\n");
                let shown = format!("PASS {REDACTED}\r\n");
                ok_or_login_refused(command_shown(conn, pass.as_bytes(), shown.as_bytes())?)
                    .map(|()| None)
            }
        })?;
        // RFC 2449 §5: more capabilities may appear once authenticated, and those offered
        // before stay offered. PIPELINING is the only one read after login, so when it was
        // offered already, asking again would only cost a round trip.
        if !self.caps.has("PIPELINING") {
            self.caps = self.run(capa)?;
        }
        Ok(())
    }

    /// STAT: the number of messages and their total size in bytes.
    pub fn stat(&mut self) -> Result<(u32, u64), SessionError> {
        self.run(|conn| codec::parse_stat(&ok_or_refused(command(conn, b"STAT\r\n")?)?))
    }

    /// STAT, LIST and UIDL, in one round trip when the server offers PIPELINING: every
    /// message number with its size in bytes, and with its unique id (stable across sessions),
    /// or `None` for the ids when the server has no UIDL (RFC 1939 makes it optional). A
    /// listing longer than the message count STAT announced (plus a little) is a
    /// [`SessionError::Protocol`]: the count bounds what is read and kept.
    pub fn listing(&mut self) -> Result<Listing, SessionError> {
        if let Some(listing) = self.listing.take() {
            return Ok(listing);
        }
        let pipelined = self.caps.has("PIPELINING");
        self.run(|conn| {
            if pipelined {
                send(conn, LISTING_COMMANDS)?;
            } else {
                send(conn, b"STAT\r\n")?;
            }
            conn.flush()?;
            read_listing(conn, pipelined)
        })
    }

    /// `TOP n 0` for each message: its header block, blank line included, exactly as stored.
    /// See [`retr`](Self::retr) for the callback, pipelining and the result.
    pub fn top_headers<E>(
        &mut self,
        msgnos: &[u32],
        on_each: impl FnMut(u32, Vec<u8>) -> Result<(), E>,
    ) -> Result<Vec<(u32, String)>, FetchError<E>> {
        self.fetch_each(msgnos, " 0", MAX_HEADER_SIZE, "TOP", on_each)
    }

    /// RETR for each message, calling `on_each(msgno, bytes)` in order with the exact bytes.
    ///
    /// With PIPELINING the commands go out in batches (a bounded number in flight), otherwise
    /// one at a time. A message the server refuses (`-ERR`) does not stop the loop: the result
    /// lists those as `(msgno, server text)`. A message larger than `max_size` fails the whole
    /// call with [`SessionError::Protocol`], so check LIST sizes first. A callback error stops
    /// at once with [`FetchError::Stopped`].
    pub fn retr<E>(
        &mut self,
        msgnos: &[u32],
        max_size: u64,
        on_each: impl FnMut(u32, Vec<u8>) -> Result<(), E>,
    ) -> Result<Vec<(u32, String)>, FetchError<E>> {
        let cap = usize::try_from(max_size).unwrap_or(usize::MAX);
        self.fetch_each(msgnos, "", cap, "RETR", on_each)
    }

    /// Marks messages for deletion (DELE). The server removes them only when the session
    /// ends with [`quit`](Self::quit); a connection that breaks first deletes nothing.
    /// Returns the messages the server refused to mark, with its reason.
    pub fn dele(&mut self, msgnos: &[u32]) -> Result<Vec<(u32, String)>, SessionError> {
        self.run(|conn| {
            let mut refused = Vec::new();
            for n in msgnos {
                let answer = command(conn, format!("DELE {n}\r\n").as_bytes())?;
                if !answer.ok {
                    refused.push((*n, answer.text));
                }
            }
            Ok(refused)
        })
    }

    /// Ends the session with QUIT. A client left broken by an error is just closed.
    pub fn quit(mut self) -> Result<(), SessionError> {
        if self.broken {
            return Ok(());
        }
        match command(&mut self.conn, b"QUIT\r\n") {
            Ok(answer) => ok_or_refused(answer).map(drop),
            Err(SessionError::Closed) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Ends a session that is between commands with QUIT, waiting a short while for the
    /// answer: GNU Mailutils pop3d keeps the maildrop locked (`[IN-USE]` for the next run)
    /// while it cleans up after a session that just went away. Nothing is marked deleted
    /// unless the caller sent DELE. For a store's `Drop`; the client is unusable afterwards.
    pub fn say_goodbye(&mut self) {
        if !self.broken {
            self.broken = true;
            let _ = self.conn.set_timeout(GOODBYE_TIMEOUT);
            let _ = command(&mut self.conn, b"QUIT\r\n");
        }
    }

    fn fetch_each<E>(
        &mut self,
        msgnos: &[u32],
        suffix: &str,
        cap: usize,
        verb: &str,
        mut on_each: impl FnMut(u32, Vec<u8>) -> Result<(), E>,
    ) -> Result<Vec<(u32, String)>, FetchError<E>> {
        self.usable()?;
        self.broken = true;
        let window = if self.caps.has("PIPELINING") {
            FETCH_WINDOW
        } else {
            1
        };
        let mut refused = Vec::new();
        let mut sent = 0;
        let mut batch = Vec::new();
        for (done, &msgno) in msgnos.iter().enumerate() {
            // Refill once half the window is answered, so the server never waits on us.
            if sent == done || (sent < msgnos.len() && sent - done <= window / 2) {
                let end = msgnos.len().min(done + window);
                batch.clear();
                for n in &msgnos[sent..end] {
                    batch.extend_from_slice(format!("{verb} {n}{suffix}\r\n").as_bytes());
                }
                self.conn.trace().sent(&batch);
                self.conn.write_all(&batch).map_err(SessionError::from)?;
                self.conn.flush().map_err(SessionError::from)?;
                sent = end;
            }
            let answer = read_status(&mut self.conn)?;
            if answer.ok {
                let bytes = read_body(&mut self.conn, cap)?;
                on_each(msgno, bytes).map_err(FetchError::Stopped)?;
            } else {
                refused.push((msgno, answer.text));
            }
        }
        self.broken = false;
        Ok(refused)
    }

    /// Runs one exchange, marking the client broken unless it ends with a whole answer.
    fn run<T>(
        &mut self,
        exchange: impl FnOnce(&mut Connection) -> Result<T, SessionError>,
    ) -> Result<T, SessionError> {
        self.usable()?;
        let result = exchange(&mut self.conn);
        self.broken = matches!(
            &result,
            Err(err) if !matches!(err, SessionError::Refused(_) | SessionError::LoginRefused(_))
        );
        result
    }

    fn usable(&self) -> Result<(), SessionError> {
        if self.broken {
            return Err(SessionError::Io(std::io::Error::other(
                "the POP3 connection was abandoned after an earlier error",
            )));
        }
        Ok(())
    }
}

fn command(conn: &mut Connection, line: &[u8]) -> Result<Status, SessionError> {
    command_shown(conn, line, line)
}

/// Sends a command line that the trace shows as `shown`: the caller's redacted form of a
/// line carrying a secret.
fn command_shown(conn: &mut Connection, line: &[u8], shown: &[u8]) -> Result<Status, SessionError> {
    Status::parse(&send_shown(conn, line, shown)?)
}

/// Sends a line (traced as `shown`) and reads the answer's first line.
fn send_shown(conn: &mut Connection, line: &[u8], shown: &[u8]) -> Result<Vec<u8>, SessionError> {
    conn.trace().sent(shown);
    conn.write_all(line)?;
    conn.flush()?;
    read_line(conn)
}

fn read_line(conn: &mut Connection) -> Result<Vec<u8>, SessionError> {
    let line = codec::read_line(conn, codec::MAX_STATUS_LINE)?;
    conn.trace().received(&line);
    Ok(line)
}

fn read_status(conn: &mut Connection) -> Result<Status, SessionError> {
    Status::parse(&read_line(conn)?)
}

/// Reads a multi-line body, traced as its size only: it is mail, or a long listing.
fn read_body(conn: &mut Connection, cap: usize) -> Result<Vec<u8>, SessionError> {
    let mut body = codec::read_multiline(conn, cap)?;
    // Read in growing steps; a body is kept until uploaded, so give back the unused room.
    body.shrink_to_fit();
    conn.trace()
        .received(format!("{{{} bytes}}", body.len()).as_bytes());
    Ok(body)
}

/// Writes a command line without waiting for its answer (pipelining).
fn send(conn: &mut Connection, line: &[u8]) -> Result<(), SessionError> {
    conn.trace().sent(line);
    conn.write_all(line)?;
    Ok(())
}

/// Reads the listing's answers, after STAT (and, `pipelined`, LIST and UIDL) went out; without
/// PIPELINING, sends LIST and UIDL each after the answer before.
fn read_listing(conn: &mut Connection, pipelined: bool) -> Result<Listing, SessionError> {
    let stat = read_status(conn)?;
    if !pipelined {
        send(conn, b"LIST\r\n")?;
        conn.flush()?;
    }
    // Every answer is read before any is judged, so that a refusal leaves nothing
    // behind in the stream.
    let announced = stat.ok.then(|| codec::parse_stat(&stat.text)).transpose()?;
    let cap = announced.map_or(MAX_LISTING, |(count, _)| listing_cap(count));
    let sizes = multiline_answer(conn, cap)?;
    if !pipelined {
        send(conn, b"UIDL\r\n")?;
        conn.flush()?;
    }
    let uidls = multiline_answer(conn, cap)?;
    let (count, _) = announced.ok_or(SessionError::Refused(stat.text))?;
    let listing = Listing {
        sizes: codec::parse_list(&sizes.map_err(SessionError::Refused)?)?,
        uidls: uidls
            .ok()
            .map(|body| codec::parse_uidl(&body))
            .transpose()?,
    };
    let longest = listing
        .sizes
        .len()
        .max(listing.uidls.as_ref().map_or(0, Vec::len));
    if longest > count as usize + LISTING_SLACK {
        return Err(SessionError::Protocol(format!(
            "the server listed {longest} messages after announcing {count} (STAT)"
        )));
    }
    Ok(listing)
}

/// Reads the answer to a listing command: its body (at most `cap` bytes), or the server's
/// refusal.
fn multiline_answer(
    conn: &mut Connection,
    cap: usize,
) -> Result<Result<Vec<u8>, String>, SessionError> {
    let status = read_status(conn)?;
    if !status.ok {
        return Ok(Err(status.text));
    }
    read_body(conn, cap).map(Ok)
}

/// The bytes a LIST or UIDL of `announced` messages may take.
fn listing_cap(announced: u32) -> usize {
    (announced as usize + LISTING_SLACK)
        .saturating_mul(MAX_LISTING_LINE)
        .min(MAX_LISTING)
}

/// CAPA, or no capabilities from a server that predates it (RFC 1939 only).
fn capa(conn: &mut Connection) -> Result<Capabilities, SessionError> {
    if !command(conn, b"CAPA\r\n")?.ok {
        return Ok(Capabilities::default());
    }
    // Shown whole: what the server offers (SASL mechanisms, STLS) is what one debugs.
    let body = codec::read_multiline(conn, MAX_CAPA)?;
    conn.trace().received(&body);
    Ok(Capabilities::parse(&body))
}

/// SASL AUTH (RFC 5034) with the login's mechanism and initial response. Every client line
/// after the mechanism is shown redacted: it carries the password or token, or answers a
/// challenge about it. With `list_behind`, a password login that fits on one line has the
/// listing's commands sent behind it and returns their answers (`None` when refused: the
/// caller asks again and hears why).
fn auth_sasl(
    conn: &mut Connection,
    login: &Login<'_>,
    list_behind: bool,
) -> Result<Option<Listing>, SessionError> {
    let (mechanism, response) = login.sasl();
    let secret_line = |conn: &mut Connection, secret: &str| {
        send_shown(
            conn,
            format!("{secret}\r\n").as_bytes(),
            format!("{REDACTED}\r\n").as_bytes(),
        )
    };
    let with_response = format!("AUTH {mechanism} {response}\r\n");
    let one_line = with_response.len() <= MAX_AUTH_LINE;
    // A refused OAuth token comes back as a challenge that the next line would answer, so
    // only a password login, whose one-line AUTH gets a final answer, takes commands behind.
    let listing_behind = list_behind && one_line && !login.is_oauth();
    let mut answer = if one_line {
        let shown = format!("AUTH {mechanism} {REDACTED}\r\n");
        if listing_behind {
            conn.trace().sent(shown.as_bytes());
            conn.write_all(with_response.as_bytes())?;
            send(conn, LISTING_COMMANDS)?;
            conn.flush()?;
            read_line(conn)?
        } else {
            send_shown(conn, with_response.as_bytes(), shown.as_bytes())?
        }
    } else {
        // Too long for one line: the response goes after the server's `+`.
        let first = format!("AUTH {mechanism}\r\n");
        let first = send_shown(conn, first.as_bytes(), first.as_bytes())?;
        if !codec::is_continuation(&first) {
            return ok_or_login_refused(Status::parse(&first)?).map(|()| None);
        }
        secret_line(conn, &response)?
    };
    if !listing_behind {
        if codec::is_continuation(&answer) {
            // A refused OAuth token comes back as a challenge carrying the error; the
            // client's answer ends the exchange and brings the -ERR.
            answer = secret_line(conn, login.error_answer())?;
        }
        return ok_or_login_refused(Status::parse(&answer)?).map(|()| None);
    }
    let status = Status::parse(&answer)?;
    if !status.ok {
        return ok_or_login_refused(status).map(|()| None);
    }
    match read_listing(conn, true) {
        Ok(listing) => Ok(Some(listing)),
        Err(SessionError::Refused(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// SASL AUTH CRAM-MD5 (RFC 2195): the answer is computed from the server's challenge.
fn auth_cram_md5(conn: &mut Connection, login: &Login<'_>) -> Result<(), SessionError> {
    conn.write_all(b"AUTH CRAM-MD5\r\n")?;
    conn.flush()?;
    let challenge = codec::read_line(conn, codec::MAX_STATUS_LINE)?;
    if !codec::is_continuation(&challenge) {
        return ok_or_login_refused(Status::parse(&challenge)?);
    }
    // `*` cancels the exchange (RFC 5034 §4); the server then answers -ERR.
    let answer = login
        .cram_md5_answer(&challenge[1..])
        .unwrap_or_else(|| "*".to_owned());
    conn.write_all(format!("{answer}\r\n").as_bytes())?;
    conn.flush()?;
    ok_or_login_refused(Status::parse(&codec::read_line(
        conn,
        codec::MAX_STATUS_LINE,
    )?)?)
}

fn ok_or_refused(answer: Status) -> Result<String, SessionError> {
    match answer.ok {
        true => Ok(answer.text),
        false => Err(SessionError::Refused(answer.text)),
    }
}

fn ok_or_login_refused(answer: Status) -> Result<(), SessionError> {
    match answer {
        Status { ok: true, .. } => Ok(()),
        refusal if refusal.is_transient_refusal() => Err(SessionError::Refused(refusal.text)),
        refusal => Err(SessionError::LoginRefused(refusal.text)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::trace::Captured;

    /// A one-connection POP3 server on loopback that offers `sasl` (or no SASL) and accepts
    /// any login; returns its port.
    fn fake_server(sasl: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut writer = stream.try_clone().unwrap();
            let _ = writer.write_all(b"+OK ready\r\n");
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                let answer = match line.as_str() {
                    "CAPA" => format!("+OK\r\nUSER\r\n{sasl}\r\n.\r\n"),
                    "QUIT" => "+OK bye\r\n".into(),
                    "AUTH PLAIN" => "+ \r\n".into(),
                    _ => "+OK\r\n".into(),
                };
                let _ = writer.write_all(answer.as_bytes());
            }
        });
        port
    }

    /// What [`pipelining_server`] saw: the lines that came with the AUTH line, before it
    /// answered anything, and every command after those.
    #[derive(Default)]
    struct Seen {
        with_login: Vec<String>,
        later: Vec<String>,
    }

    /// A one-connection POP3 server offering PIPELINING and SASL PLAIN, with a maildrop of two
    /// messages, that refuses the first `refusals` logins. Before answering an AUTH line it
    /// reads whatever else arrives within half a second; a client that waits for the answer
    /// sends nothing more meanwhile.
    fn pipelining_server(mut refusals: usize) -> (u16, Arc<Mutex<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut logged_in = false;
            let answer = |line: &str, logged_in: bool| -> String {
                match (line, logged_in) {
                    ("CAPA", _) => "+OK\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n".into(),
                    ("QUIT", _) => "+OK bye\r\n".into(),
                    (_, false) => "-ERR not logged in\r\n".into(),
                    ("STAT", true) => "+OK 2 30\r\n".into(),
                    ("LIST", true) => "+OK\r\n1 10\r\n2 20\r\n.\r\n".into(),
                    ("UIDL", true) => "+OK\r\n1 a\r\n2 b\r\n.\r\n".into(),
                    _ => "-ERR unknown\r\n".into(),
                }
            };
            let _ = writer.write_all(b"+OK ready\r\n");
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                let command = line.trim_end().to_owned();
                line.clear();
                if !command.starts_with("AUTH PLAIN ") {
                    let reply = answer(&command, logged_in);
                    record.lock().unwrap().later.push(command);
                    let _ = writer.write_all(reply.as_bytes());
                    continue;
                }
                let stream = reader.get_ref();
                stream
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut burst = vec!["AUTH PLAIN".to_owned()];
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    burst.push(line.trim_end().to_owned());
                    line.clear();
                }
                line.clear();
                reader
                    .get_ref()
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                logged_in = refusals == 0;
                refusals = refusals.saturating_sub(1);
                let verdict = if logged_in {
                    "+OK in\r\n"
                } else {
                    "-ERR [AUTH] wrong\r\n"
                };
                let replies: Vec<String> =
                    burst[1..].iter().map(|c| answer(c, logged_in)).collect();
                record.lock().unwrap().with_login = burst;
                let _ = writer.write_all(verdict.as_bytes());
                let _ = writer.write_all(replies.concat().as_bytes());
            }
        });
        (port, seen)
    }

    fn connected(port: u16) -> Pop3Client {
        let (address, _) = Captured::loopback(port);
        Pop3Client::connect(
            &address,
            TlsMode::Plain,
            &TlsConfig::new(&Default::default()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_listing_rides_on_the_login_when_the_server_pipelines() {
        let (port, seen) = pipelining_server(0);
        let mut client = connected(port);
        client.login_and_list(&Login::plain("alice", "pw")).unwrap();
        assert_eq!(
            seen.lock().unwrap().with_login,
            ["AUTH PLAIN", "STAT", "LIST", "UIDL"]
        );
        let listing = client.listing().unwrap();
        assert_eq!(listing.sizes, [(1, 10), (2, 20)]);
        assert_eq!(
            listing.uidls,
            Some(vec![(1, "a".to_owned()), (2, "b".to_owned())])
        );
        // Asked again, the session lists anew.
        assert_eq!(client.listing().unwrap(), listing);
        client.quit().unwrap();
        assert_eq!(
            seen.lock().unwrap().later,
            ["CAPA", "STAT", "LIST", "UIDL", "QUIT"]
        );
    }

    #[test]
    fn a_refused_login_with_the_listing_behind_it_ends_the_session() {
        let (port, seen) = pipelining_server(1);
        let mut client = connected(port);
        let err = client
            .login_and_list(&Login::plain("alice", "wrong"))
            .unwrap_err();
        assert!(
            matches!(&err, SessionError::LoginRefused(text) if text.contains("wrong")),
            "{err:?}"
        );
        assert_eq!(seen.lock().unwrap().with_login.len(), 4);
        // The refusals of the commands behind it are still on their way: no second try.
        let again = client.login_and_list(&Login::plain("alice", "pw"));
        assert!(matches!(again, Err(SessionError::Io(_))), "{again:?}");
    }

    #[test]
    fn a_plain_login_sends_nothing_behind_it() {
        let (port, seen) = pipelining_server(0);
        let mut client = connected(port);
        client.login(&Login::plain("alice", "pw")).unwrap();
        assert_eq!(seen.lock().unwrap().with_login, ["AUTH PLAIN"]);
        assert_eq!(client.listing().unwrap().sizes, [(1, 10), (2, 20)]);
    }

    fn traced_login(sasl: &'static str, login: &Login<'_>) -> String {
        let (address, captured) = Captured::loopback(fake_server(sasl));
        let mut client = Pop3Client::connect(
            &address,
            TlsMode::Plain,
            &TlsConfig::new(&Default::default()).unwrap(),
        )
        .unwrap();
        client.login(login).unwrap();
        client.quit().unwrap();
        captured.text()
    }

    #[test]
    fn the_trace_shows_pass_and_auth_without_secrets() {
        let password = "pw-secret-1";
        let plain = Login::plain("alice", password);
        let text = traced_login("", &plain);
        assert!(text.contains(" C: USER alice\n"), "{text}");
        assert!(text.contains(" C: PASS <redacted>\n"), "{text}");
        assert!(text.contains(" S: +OK ready\n"), "{text}");
        assert!(!text.contains(password), "{text}");

        let text = traced_login("SASL PLAIN", &plain);
        assert!(text.contains(" C: AUTH PLAIN <redacted>\n"), "{text}");
        assert!(
            !text.contains(password) && !text.contains(&plain.sasl_plain()),
            "{text}"
        );

        // Too long for one AUTH line: the response follows the server's `+`, redacted too.
        let long = "t".repeat(300);
        let text = traced_login("SASL PLAIN", &Login::plain("alice", &long));
        assert!(text.contains(" C: AUTH PLAIN\n"), "{text}");
        assert!(text.contains(" C: <redacted>\n"), "{text}");
        assert!(!text.contains(&long[..40]), "{text}");
    }
}
