//! The library's error types and the exit codes they map to.
//!
//! Two levels: [`SessionError`] says what went wrong on one connection (the protocol clients
//! return it and know nothing of the job), and [`Error`] says what that means for the user's
//! job, which server it concerns and what to do about it. The binary prints an [`Error`] as
//! one line plus an optional hint, and exits with [`Error::exit_code`].

use std::io;

use crate::auth::AuthMode;
use crate::endpoint::{Endpoint, Side};

/// Exit code: every message is present on the target.
pub const EXIT_OK: i32 = 0;
/// Exit code: the run finished, but some messages failed (they are listed in the report).
pub const EXIT_PARTIAL: i32 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: a server refused the login.
pub const EXIT_AUTH: i32 = 3;
/// Exit code: a server could not be reached, TLS failed, or the connection broke.
pub const EXIT_CONNECTION: i32 = 4;
/// Exit code: another mirror run of the same accounts holds the state lock.
pub const EXIT_LOCKED: i32 = 5;
/// Exit code: mailferry failed internally (a bug): a panic, caught instead of Rust's 101.
pub const EXIT_INTERNAL: i32 = 6;

/// What went wrong on one connection to one server.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The host name did not resolve.
    #[error("cannot resolve the host name: {0}")]
    Resolve(io::Error),
    /// The TCP connection could not be opened.
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The TLS handshake failed (untrusted certificate, wrong name, not a TLS port, ...).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The connection ended in the middle of the TLS handshake, before any certificate was
    /// checked: a server restarting or overloaded, something in between, or a port that
    /// does not speak TLS from the first byte. Not a certificate problem.
    #[error("the connection closed during the TLS handshake")]
    HandshakeCut,
    /// The server sent nothing for longer than the I/O timeout.
    #[error("timed out waiting for the server")]
    Timeout,
    /// The connection broke.
    #[error("connection lost: {0}")]
    Io(io::Error),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server ended the session with an untagged BYE, in the middle of it: usually a
    /// server shedding load, so the next connection waits on the throttle schedule. The text
    /// is the server's.
    #[error("the server ended the session: {0}")]
    Bye(String),
    /// The server refused the credentials (as opposed to being busy or broken).
    #[error("the server refused the login: {0}")]
    LoginRefused(String),
    /// The server answered a command with NO / BAD / -ERR; the text is the server's.
    #[error("the server said: {0}")]
    Refused(String),
    /// The server refused a command because the client is too fast or the server too busy
    /// (`NO [THROTTLED]`, `NO [UNAVAILABLE]`): try again later, on a new connection.
    #[error("the server asks to slow down: {0}")]
    Throttled(String),
    /// The server sent bytes that do not parse as the protocol.
    #[error("the server sent an answer that does not parse: {0}")]
    Protocol(String),
    /// The server lacks something mailferry needs to proceed safely.
    #[error("{0}")]
    Unsupported(String),
    /// The server did not answer commands sent behind another without waiting (pipelined),
    /// as some do not behind a login: the session is to be opened again without.
    #[error("the server does not take pipelined commands here: {0}")]
    NotPipelined(String),
}

impl From<io::Error> for SessionError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => SessionError::Timeout,
            io::ErrorKind::UnexpectedEof => SessionError::Closed,
            _ => match err
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
            {
                Some(tls) => SessionError::Tls(tls.to_string()),
                None => SessionError::Io(err),
            },
        }
    }
}

/// The step at which a session failed while being opened ([`Error::opening`]).
#[derive(Debug, Clone, Copy)]
pub enum Opening<'a> {
    /// Connecting: TCP, TLS, the greeting, STARTTLS.
    Connect,
    /// Logging in, in this mode.
    Login(&'a AuthMode),
}

/// A failure of the whole job, in the user's terms.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or configuration is wrong.
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// What to do about it.
        hint: Option<String>,
    },
    /// A server refused the credentials.
    #[error("could not log in to {server}: {reason}")]
    Auth {
        /// The server as the user named it (URL without secrets).
        server: String,
        /// The server's reason.
        reason: String,
        /// What to do about it.
        hint: Option<String>,
    },
    /// Both servers failed at once (e.g. both refused the login): each is reported, so that
    /// a preflight finds both wrong passwords in one run.
    #[error("{from}; and {to}")]
    BothSides {
        /// The source's failure.
        from: Box<Error>,
        /// The target's failure.
        to: Box<Error>,
        /// Both hints, source first.
        hint: Option<String>,
    },
    /// Another run holds the mirror state's lock.
    #[error("another mailferry mirror of these accounts is running (lock {})", path.display())]
    Locked {
        /// The lock file.
        path: std::path::PathBuf,
    },
    /// The mirror state directory cannot be used.
    #[error("mirror state {}: {reason}", path.display())]
    State {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A server could not be reached or the connection failed.
    #[error("{server}: {source}")]
    Connection {
        /// The server as the user named it (URL without secrets).
        server: String,
        /// What went wrong on the connection.
        source: SessionError,
        /// What to do about it.
        hint: Option<String>,
    },
}

impl Error {
    /// A usage error without a hint.
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: None,
        }
    }

    /// One error for two sides that may each have failed; `None` when neither did.
    pub fn of_sides(from: Option<Error>, to: Option<Error>) -> Option<Error> {
        match (from, to) {
            (Some(from), Some(to)) => {
                let hint = match (from.hint(), to.hint()) {
                    (Some(a), Some(b)) if a == b => Some(a.to_owned()),
                    (Some(a), Some(b)) => Some(format!("source: {a}; target: {b}")),
                    (a, b) => a.or(b).map(str::to_owned),
                };
                Some(Error::BothSides {
                    from: Box::new(from),
                    to: Box::new(to),
                    hint,
                })
            }
            (from, to) => from.or(to),
        }
    }

    /// The server an error concerns (its URL without secrets), for a connection or login
    /// failure.
    pub fn server(&self) -> Option<&str> {
        match self {
            Error::Auth { server, .. } | Error::Connection { server, .. } => Some(server),
            _ => None,
        }
    }

    /// Whether the error is a connection that could not be opened or broke (refused, reset,
    /// closed, timed out, cut during the TLS handshake): what trying again may cure. A
    /// refused login, an untrusted certificate, an unknown host or a refusal by the server
    /// is not: trying again would only repeat it (or, for a password, risk a lockout).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connection {
                source: SessionError::Connect(_)
                    | SessionError::Io(_)
                    | SessionError::Closed
                    | SessionError::Bye(_)
                    | SessionError::Timeout
                    | SessionError::HandshakeCut,
                ..
            }
        )
    }

    /// The documented exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } => EXIT_USAGE,
            Error::Auth { .. } => EXIT_AUTH,
            Error::Connection { .. } => EXIT_CONNECTION,
            Error::Locked { .. } => EXIT_LOCKED,
            Error::State { .. } => EXIT_USAGE,
            // The lower code is the one to act on first: a password before a network.
            Error::BothSides { from, to, .. } => from.exit_code().min(to.exit_code()),
        }
    }

    /// A line telling the user what to do, when there is one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::Usage { hint, .. }
            | Error::Auth { hint, .. }
            | Error::Connection { hint, .. }
            | Error::BothSides { hint, .. } => hint.as_deref(),
            Error::Locked { .. } => Some(
                "nothing to do: the running one will finish the job; if no run is active, the lock is released by itself",
            ),
            Error::State { .. } => Some("--state needs a writable directory"),
        }
    }

    /// [`from_session`](Self::from_session) for a session that failed while being opened,
    /// with the hint that fits that step: an answer that does not parse at the greeting is
    /// most likely another protocol or TLS mode on that port, and a refused login names the
    /// secret that the login mode used.
    pub fn opening(endpoint: &Endpoint, side: Side, err: SessionError, step: Opening<'_>) -> Self {
        let word = side.word();
        let secret = format!(
            "MAILFERRY_{}_PASSWORD, --{word}-password-file or --{word}-password-command",
            word.to_ascii_uppercase()
        );
        let hint = match (&err, step) {
            (SessionError::Protocol(_), Opening::Connect) => {
                "check that the port speaks the URL's protocol (POP3 or IMAP) and its TLS mode (pop3s/imaps: TLS from the start)".to_owned()
            }
            (SessionError::LoginRefused(_), Opening::Login(AuthMode::OAuth2(_))) => format!(
                "check that --{word}-oauth2-token-command (or MAILFERRY_{}_PASSWORD) gives a current access token for this user, with the mail scope",
                word.to_ascii_uppercase()
            ),
            (SessionError::LoginRefused(_), Opening::Login(AuthMode::Master { admin })) => {
                format!(
                    "check the administrator {admin:?} and its password in {secret}, and that the server lets it log in for other users"
                )
            }
            (SessionError::LoginRefused(_), Opening::Login(AuthMode::CramMd5)) => format!(
                "check the user name and the password in {secret}; CRAM-MD5 also needs the server to keep the plaintext password"
            ),
            _ => return Error::from_session(endpoint, side, err),
        };
        let mut error = Error::from_session(endpoint, side, err);
        if let Error::Auth { hint: slot, .. } | Error::Connection { hint: slot, .. } = &mut error {
            *slot = Some(hint);
        }
        error
    }

    /// Puts a connection-level failure in the user's terms: which server, and what to try.
    pub fn from_session(endpoint: &Endpoint, side: Side, err: SessionError) -> Self {
        let word = side.word();
        let server = endpoint.to_string();
        match err {
            SessionError::LoginRefused(reason) => Error::Auth {
                server,
                reason,
                hint: Some(format!(
                    "check the user name and the password in MAILFERRY_{}_PASSWORD, --{word}-password-file or --{word}-password-command",
                    word.to_ascii_uppercase()
                )),
            },
            SessionError::Tls(_) => {
                let hint = Some(format!(
                    "if the server uses a self-signed certificate or a private CA, pass it with --{word}-tls-ca FILE (--tls-ca FILE for both sides); check that the port speaks TLS (imaps/pop3s) or STARTTLS (imap/pop3)"
                ));
                Error::Connection { server, source: err, hint }
            }
            SessionError::HandshakeCut => Error::Connection {
                server,
                source: err,
                hint: Some(
                    "check that the server is up and that the port speaks TLS from the first byte (imaps, pop3s) or STARTTLS (imap, pop3), then re-run; --retries N tries again within the run"
                        .into(),
                ),
            },
            SessionError::Resolve(_) | SessionError::Connect(_) => Error::Connection {
                server,
                source: err,
                hint: Some("check the host name and port, and that the server is up".into()),
            },
            SessionError::Unsupported(ref what)
                if what.contains("STARTTLS") || what.contains("STLS") =>
            {
                Error::Connection {
                    server,
                    source: err,
                    hint: Some(
                        "use the TLS scheme (imaps:// or pop3s://), or --allow-plaintext to send the password unencrypted"
                            .into(),
                    ),
                }
            }
            SessionError::Unsupported(_) => Error::Connection {
                server,
                source: err,
                hint: Some("the server cannot do what this run needs; see the reason above".into()),
            },
            // Past the greeting the port speaks the protocol: the answer itself is odd.
            SessionError::Protocol(_) => Error::Connection {
                server,
                source: err,
                hint: Some(
                    "the server sent an answer mailferry cannot read; -vvv shows the exchange (passwords redacted): please report it with that trace"
                        .into(),
                ),
            },
            SessionError::Refused(_) => Error::Connection {
                server,
                source: err,
                hint: Some(
                    "the server's reason is above; if the server is busy or locked, re-run later (mailferry copies only what is missing)"
                        .into(),
                ),
            },
            SessionError::Throttled(_) => Error::Connection {
                server,
                source: err,
                hint: Some(
                    "the server still asked to slow down after --retries back-offs; re-run later, or with fewer --connections (and --jobs), or more --retries"
                        .into(),
                ),
            },
            SessionError::Timeout => Error::Connection {
                server,
                source: err,
                hint: Some("the server did not answer in time; raise --timeout or try later".into()),
            },
            _ => Error::Connection {
                server,
                source: err,
                hint: Some("re-run mailferry: it copies only what is still missing".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::OAuthMechanism;

    fn hint(err: SessionError, step: Option<Opening<'_>>) -> String {
        let endpoint = Endpoint::parse("imaps://alice@mail.example").unwrap();
        let error = match step {
            Some(step) => Error::opening(&endpoint, Side::From, err, step),
            None => Error::from_session(&endpoint, Side::From, err),
        };
        error.hint().unwrap().to_owned()
    }

    #[test]
    fn an_answer_that_does_not_parse_blames_the_port_only_at_the_greeting() {
        let garbled = || SessionError::Protocol("x".into());
        assert!(hint(garbled(), Some(Opening::Connect)).contains("port speaks"));
        let at_login = hint(garbled(), Some(Opening::Login(&AuthMode::User)));
        let later = hint(garbled(), None);
        for hint in [at_login, later] {
            assert!(!hint.contains("port speaks"), "{hint}");
            assert!(hint.contains("-vvv"), "{hint}");
        }
    }

    #[test]
    fn a_refused_login_names_what_its_mode_logs_in_with() {
        let refused = || SessionError::LoginRefused("NO".into());
        let user = hint(refused(), Some(Opening::Login(&AuthMode::User)));
        assert!(user.contains("MAILFERRY_FROM_PASSWORD"), "{user}");
        let oauth = AuthMode::OAuth2(OAuthMechanism::XOAuth2);
        let token = hint(refused(), Some(Opening::Login(&oauth)));
        assert!(token.contains("--from-oauth2-token-command"), "{token}");
        assert!(!token.contains("password-file"), "{token}");
        let master = AuthMode::Master {
            admin: "admin".into(),
        };
        let admin = hint(refused(), Some(Opening::Login(&master)));
        assert!(admin.contains("\"admin\""), "{admin}");
    }
}
