//! Opening a logged-in protocol session for an endpoint: address, TLS mode, the plaintext
//! fallback the user allowed, login, and errors put in the user's terms.

use crate::auth::{AuthMode, Login};
use crate::endpoint::{Side, run_secret_command};
use crate::error::{Error, Opening, SessionError};
use crate::imap::ImapClient;
use crate::migrate::{Account, ConnectOptions};
use crate::net::{Address, TlsConfig, TlsMode};
use crate::pop3::Pop3Client;

/// Opens a POP3 session and logs in.
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
        Pop3Client::login,
    )
}

/// Opens an IMAP session and logs in.
pub fn open_imap(
    account: &Account,
    side: Side,
    options: &ConnectOptions,
) -> Result<ImapClient, Error> {
    open(
        account,
        side,
        options,
        ImapClient::connect,
        ImapClient::login,
    )
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
