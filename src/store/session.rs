//! Opening a logged-in protocol session for an endpoint: address, TLS mode, the plaintext
//! fallback the user allowed, login, and errors put in the user's terms.

use std::time::Duration;

use crate::auth::{AuthMode, Login};
use crate::endpoint::{Endpoint, Password, Side, run_secret_command};
use crate::error::{Error, Opening, SessionError};
use crate::imap::ImapClient;
use crate::net::{Address, TlsConfig, TlsMode};
use crate::pop3::Pop3Client;
use crate::trace::Trace;

/// How to open connections, shared by both sides.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Whether a password may be sent unencrypted when a server offers no STARTTLS/STLS.
    pub allow_plaintext: bool,
    /// Connect and I/O timeout.
    pub timeout: Duration,
    /// The protocol trace (`-v`…`-vvv`).
    pub trace: Trace,
    /// Whether an IMAP login asks for the mailbox list in its own round trip
    /// ([`ImapClient::login_and_list`]): for the connections a plan lists next.
    pub list_at_login: bool,
}

/// One side of a job: where, and how to log in.
#[derive(Clone)]
pub struct Account {
    /// The server URL.
    pub endpoint: Endpoint,
    /// How its certificate is checked (each side may trust its own CA), built once.
    pub tls: TlsConfig,
    /// The password (the administrator's, for a master-user login).
    pub password: Password,
    /// How to log in.
    pub auth: AuthMode,
    /// For OAuth logins: the command printing a fresh access token, run for every connection
    /// (tokens expire within the hour; a long migration outlives several).
    pub token_command: Option<String>,
}

/// Opens a POP3 session and logs in, with the maildrop's listing in the same round trip when
/// the server pipelines ([`Pop3Client::login_and_list`]).
pub fn open_pop3(
    account: &Account,
    side: Side,
    options: &ConnectOptions,
) -> Result<Pop3Client, Error> {
    open(
        account,
        side,
        options,
        Pop3Client::connect,
        Pop3Client::login_and_list,
    )
}

/// Opens an IMAP session and logs in.
pub fn open_imap(
    account: &Account,
    side: Side,
    options: &ConnectOptions,
) -> Result<ImapClient, Error> {
    let login = match options.list_at_login {
        true => ImapClient::login_and_list,
        false => ImapClient::login,
    };
    open(account, side, options, ImapClient::connect, login)
}

fn open<C>(
    account: &Account,
    side: Side,
    options: &ConnectOptions,
    connect: impl Fn(&Address, TlsMode, &TlsConfig) -> Result<C, SessionError>,
    login: impl FnOnce(&mut C, &Login<'_>) -> Result<(), SessionError>,
) -> Result<C, Error> {
    let endpoint = &account.endpoint;
    let address = Address {
        host: endpoint.host.clone(),
        port: endpoint.port,
        timeout: options.timeout,
        trace: options.trace.clone(),
    };
    let failed = |step| move |err| Error::opening(endpoint, side, err, step);
    let mode = match endpoint.tls_mode {
        // The user allowed plaintext: a server without STARTTLS/STLS is used as it is.
        TlsMode::StartTls if options.allow_plaintext => TlsMode::StartTlsIfOffered,
        mode => mode,
    };
    let mut client = connect(&address, mode, &account.tls).map_err(failed(Opening::Connect))?;
    let fresh_token = match (&account.auth, &account.token_command) {
        (AuthMode::OAuth2(_), Some(command)) => Some(run_secret_command(command, side)?),
        _ => None,
    };
    let secret = fresh_token.as_deref().unwrap_or(account.password.expose());
    let credentials = Login::new(&endpoint.user, &account.auth, secret);
    login(&mut client, &credentials).map_err(failed(Opening::Login(&account.auth)))?;
    Ok(client)
}
