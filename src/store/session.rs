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
    /// The folders whose summaries (STATUS) such a login asks for too, for a plan that
    /// compares them with a previous run's next (a mirror). The planning source and target
    /// connections each have their own.
    pub summarise_at_login: Vec<String>,
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
    if options.list_at_login {
        let mut not_pipelined = false;
        let opened = open(
            account,
            side,
            options,
            ImapClient::connect,
            |client, login| {
                let logged_in = client.login_and_list(login, &options.summarise_at_login);
                not_pipelined = matches!(logged_in, Err(SessionError::NotPipelined(_)));
                logged_in
            },
        );
        if !not_pipelined {
            return opened;
        }
        // The server took the login but not what was sent behind it: a session of its own,
        // without.
    }
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;
    use crate::net::TlsTrust;
    use crate::trace::Verbosity;

    /// A server on loopback whose first session answers only the login of what is sent
    /// with it (as a server that hands the session over without what came behind the login)
    /// and whose later sessions answer every command OK. Returns its port and how many
    /// sessions it had.
    fn dropping_after_login() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sessions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&sessions);
        std::thread::spawn(move || {
            for stream in listener.incoming().take(3) {
                let stream = stream.unwrap();
                let first = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                std::thread::spawn(move || {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut writer = stream.try_clone().unwrap();
                    let _ = write!(
                        writer,
                        "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] hi\r\n"
                    );
                    let mut answered = 0;
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { return };
                        let tag = line.split(' ').next().unwrap_or("*").to_owned();
                        answered += 1;
                        if first && answered > 1 {
                            continue;
                        }
                        let data = match line.ends_with("LIST \"\" \"*\"") {
                            true => "* LIST () \"/\" INBOX\r\n",
                            false => "",
                        };
                        let _ = write!(writer, "{data}{tag} OK [CAPABILITY IMAP4rev1] done\r\n");
                    }
                });
            }
        });
        (port, sessions)
    }

    #[test]
    fn a_server_that_drops_commands_behind_the_login_gets_a_session_without_them() {
        let (port, sessions) = dropping_after_login();
        let endpoint = Endpoint::parse(&format!("imap://alice@127.0.0.1:{port}")).unwrap();
        let account = Account {
            endpoint,
            tls: TlsConfig::new(&TlsTrust::System).unwrap(),
            password: Password::given("pw"),
            auth: AuthMode::User,
            token_command: None,
        };
        let options = ConnectOptions {
            allow_plaintext: true,
            timeout: Duration::from_secs(10),
            trace: Trace::new(Verbosity::Off),
            list_at_login: true,
            summarise_at_login: Vec::new(),
        };
        let mut client = open_imap(&account, Side::From, &options).unwrap();
        let names: Vec<String> = client
            .list()
            .unwrap()
            .mailboxes
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["INBOX"]);
        assert_eq!(sessions.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
