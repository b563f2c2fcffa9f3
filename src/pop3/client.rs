//! The blocking POP3 client: one [`Connection`], commands written in batches, responses read
//! through the [`codec`](super::codec).

use std::fmt;
use std::io::Write;

use super::codec::{self, Capabilities, Status};
use crate::auth::{Login, Mechanism};
use crate::error::SessionError;
use crate::net::{Address, Connection, TlsConfig, TlsMode};

/// Commands in flight at most. Each is a dozen bytes, so even a full window never fills the
/// socket buffers while the answers wait to be read (the answers themselves cost no memory
/// here: a server that runs ahead of the reader blocks on its own socket). Over a slow link
/// the window is what keeps the server busy: at 50 ms RTT, 64 TOPs in flight meant a round
/// trip per 64 messages, and 16 RETRs about 20 MB/s.
const TOP_WINDOW: usize = 1024;
/// See [`TOP_WINDOW`]: RETR answers are bigger, so fewer already fill the link.
const RETR_WINDOW: usize = 256;
/// Largest header block [`Pop3Client::top_headers`] accepts.
pub const MAX_HEADER_SIZE: usize = 8 << 20;
/// Largest LIST/UIDL/CAPA body accepted: millions of messages, yet bounded.
const MAX_LISTING: usize = 256 << 20;
/// RFC 5034 §4: a command with its initial response must fit in 255 octets.
const MAX_AUTH_LINE: usize = 255;

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
        let greeting = codec::read_status(&mut conn)?;
        if !greeting.ok {
            return Err(SessionError::Refused(greeting.text));
        }
        let mut caps = capa(&mut conn)?;
        if matches!(mode, TlsMode::StartTls | TlsMode::StartTlsIfOffered) {
            // Some servers offer STLS without listing it (or have no CAPA), so always try.
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
        })
    }

    /// What the server said it can do (after STLS and after login, the latest answer).
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
    pub fn login(&mut self, login: &Login<'_>) -> Result<(), SessionError> {
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
        self.run(|conn| {
            if login.mechanism == Mechanism::CramMd5 {
                auth_cram_md5(conn, login)
            } else if sasl_plain {
                auth_sasl(conn, login)
            } else {
                let user = login.login_name();
                let answer = command(conn, format!("USER {user}\r\n").as_bytes())?;
                ok_or_login_refused(answer)?;
                let password = login.password;
                ok_or_login_refused(command(conn, format!("PASS {password}\r\n").as_bytes())?)
            }
        })?;
        // RFC 2449 §5: more capabilities may appear once authenticated (PIPELINING, say).
        self.caps = self.run(capa)?;
        Ok(())
    }

    /// STAT: the number of messages and their total size in bytes.
    pub fn stat(&mut self) -> Result<(u32, u64), SessionError> {
        self.run(|conn| codec::parse_stat(&ok_or_refused(command(conn, b"STAT\r\n")?)?))
    }

    /// LIST: every message number with its size in bytes.
    pub fn list(&mut self) -> Result<Vec<(u32, u64)>, SessionError> {
        self.run(|conn| codec::parse_list(&multiline(conn, b"LIST\r\n", MAX_LISTING)?))
    }

    /// UIDL: every message number with its unique id, stable across sessions.
    pub fn uidl(&mut self) -> Result<Vec<(u32, String)>, SessionError> {
        self.run(|conn| codec::parse_uidl(&multiline(conn, b"UIDL\r\n", MAX_LISTING)?))
    }

    /// `TOP n 0` for each message: its header block, blank line included, exactly as stored.
    /// See [`retr`](Self::retr) for the callback, pipelining and the result.
    pub fn top_headers<E>(
        &mut self,
        msgnos: &[u32],
        on_each: impl FnMut(u32, Vec<u8>) -> Result<(), E>,
    ) -> Result<Vec<(u32, String)>, FetchError<E>> {
        self.fetch_each(msgnos, " 0", TOP_WINDOW, MAX_HEADER_SIZE, "TOP", on_each)
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
        self.fetch_each(msgnos, "", RETR_WINDOW, cap, "RETR", on_each)
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

    fn fetch_each<E>(
        &mut self,
        msgnos: &[u32],
        suffix: &str,
        window: usize,
        cap: usize,
        verb: &str,
        mut on_each: impl FnMut(u32, Vec<u8>) -> Result<(), E>,
    ) -> Result<Vec<(u32, String)>, FetchError<E>> {
        self.usable()?;
        self.broken = true;
        let window = if self.caps.has("PIPELINING") {
            window
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
                self.conn.write_all(&batch).map_err(SessionError::from)?;
                self.conn.flush().map_err(SessionError::from)?;
                sent = end;
            }
            let answer = codec::read_status(&mut self.conn)?;
            if answer.ok {
                let bytes = codec::read_multiline(&mut self.conn, cap)?;
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
    conn.write_all(line)?;
    conn.flush()?;
    codec::read_status(conn)
}

fn multiline(conn: &mut Connection, line: &[u8], cap: usize) -> Result<Vec<u8>, SessionError> {
    ok_or_refused(command(conn, line)?)?;
    codec::read_multiline(conn, cap)
}

/// CAPA, or no capabilities from a server that predates it (RFC 1939 only).
fn capa(conn: &mut Connection) -> Result<Capabilities, SessionError> {
    if !command(conn, b"CAPA\r\n")?.ok {
        return Ok(Capabilities::default());
    }
    Ok(Capabilities::parse(&codec::read_multiline(
        conn,
        MAX_LISTING,
    )?))
}

/// SASL AUTH (RFC 5034) with the login's mechanism and initial response.
fn auth_sasl(conn: &mut Connection, login: &Login<'_>) -> Result<(), SessionError> {
    let (mechanism, response) = login.sasl();
    let send = |conn: &mut Connection, line: String| -> Result<Vec<u8>, SessionError> {
        conn.write_all(line.as_bytes())?;
        conn.flush()?;
        codec::read_line(conn, codec::MAX_STATUS_LINE)
    };
    let with_response = format!("AUTH {mechanism} {response}\r\n");
    let mut answer = if with_response.len() <= MAX_AUTH_LINE {
        send(conn, with_response)?
    } else {
        // Too long for one line: the response goes after the server's `+`.
        let first = send(conn, format!("AUTH {mechanism}\r\n"))?;
        if !codec::is_continuation(&first) {
            return ok_or_login_refused(Status::parse(&first)?);
        }
        send(conn, format!("{response}\r\n"))?
    };
    if codec::is_continuation(&answer) {
        // A refused OAuth token comes back as a challenge carrying the error; the client's
        // answer ends the exchange and brings the -ERR.
        answer = send(conn, format!("{}\r\n", login.error_answer()))?;
    }
    ok_or_login_refused(Status::parse(&answer)?)
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
