//! A small blocking IMAP client: one command at a time over a [`Connection`], encoding with
//! [`super::command`] and reading with [`super::response`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use imap_proto::rfc4315::UidSetMember;
use imap_proto::{
    AttributeValue, MailboxDatum, MailboxListData, NameAttribute, Outcome, Response, ResponseCode,
    Status, StatusAttribute,
};

use super::command::{
    CommandBuilder, LiteralMode, Segment, flag_list, format_internal_date, parse_internal_date,
    uid_sets,
};
use super::response::{
    Framer, StorageQuota, asks_to_slow_down, has_code, status_text, storage_quota,
};
use super::{mutf7, namespace};
use crate::auth::{Login, Mechanism};
use crate::error::SessionError;
use crate::folders::{FolderInfo, FolderList, Namespace};
use crate::net::{Address, Connection, TlsConfig, TlsMode};
use crate::trace::Verbosity;

/// A mailbox as LIST reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The full name in UTF-8 (decoded from modified UTF-7; kept as sent when it is not valid
    /// modified UTF-7).
    pub name: String,
    /// The hierarchy delimiter, if the server has one.
    pub delimiter: Option<char>,
    /// Attributes such as `\Noselect`, `\HasChildren`, `\Sent`.
    pub attributes: Vec<String>,
}

/// What [`ImapClient::list`] finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxList {
    /// Every mailbox.
    pub mailboxes: Vec<Mailbox>,
    /// The user's own namespace (RFC 2342); the empty one when the server does not say.
    pub personal: Namespace,
}

impl MailboxList {
    /// The folders as [`crate::folders`] maps them.
    pub fn into_folder_list(self) -> FolderList {
        FolderList {
            folders: self
                .mailboxes
                .into_iter()
                .map(|m| FolderInfo::from_list(m.name, m.delimiter, &m.attributes))
                .collect(),
            personal: self.personal,
        }
    }
}

/// What STATUS says about a mailbox without selecting it: enough to tell that nothing
/// changed since the last look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FolderStatus {
    /// Number of messages.
    pub messages: u32,
    /// The next UID the server will assign.
    pub uid_next: u32,
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// HIGHESTMODSEQ (RFC 7162) when the server has CONDSTORE: it grows with every flag change.
    pub highest_modseq: Option<u64>,
}

/// What SELECT or EXAMINE says about a mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxStatus {
    /// Number of messages.
    pub exists: u32,
    /// UIDVALIDITY; `None` only from servers that break RFC 3501 by omitting it.
    pub uid_validity: Option<u32>,
    /// The predicted next UID, when the server says.
    pub uid_next: Option<u32>,
    /// Flags that can be stored permanently (`\*` means any keyword).
    pub permanent_flags: Vec<String>,
}

/// What an index FETCH asks of each message besides its UID, size and flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexItems<'a> {
    /// Header fields to read (`BODY.PEEK[HEADER.FIELDS (…)]`); none, no header.
    pub header_fields: &'a [&'a str],
    /// Whether to ask for INTERNALDATE. Only when it is needed: Dovecot, for one, checks the
    /// system's time zone file for every date it formats, which took half of a 100,000-message
    /// index's time.
    pub internal_date: bool,
}

/// One message of a [`ImapClient::index_mailboxes`] answer.
#[derive(Debug)]
pub struct IndexRecord<'a> {
    /// The message's UID.
    pub uid: u32,
    /// RFC822.SIZE in bytes.
    pub size: u64,
    /// Flags and keywords, e.g. `\Seen`, `$Label1`.
    pub flags: Vec<String>,
    /// INTERNALDATE, in the server's zone; `None` unless asked for
    /// ([`IndexItems::internal_date`]).
    pub internal_date: Option<DateTime<FixedOffset>>,
    /// The requested header fields as the server sent them (CRLF lines and a blank line).
    pub header: &'a [u8],
}

/// One message of a [`ImapClient::fetch_messages`] answer.
#[derive(Debug)]
pub struct FetchedMessage<'a> {
    /// The message's UID.
    pub uid: u32,
    /// The whole message, byte for byte (BODY[]): borrowed from the read buffer, or, from
    /// [`OWN_BUFFER_BODY`] bytes on, moved out of it, so `into_owned` does not copy it.
    pub raw: Cow<'a, [u8]>,
    /// Flags and keywords.
    pub flags: Vec<String>,
    /// INTERNALDATE, in the server's zone; `None` unless asked for
    /// ([`IndexItems::internal_date`]).
    pub internal_date: Option<DateTime<FixedOffset>>,
}

/// Where a server says it stored a message (UIDPLUS `APPENDUID`): the UID, valid for as long as
/// the mailbox keeps this UIDVALIDITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageUid {
    /// The mailbox's UIDVALIDITY when the message was stored.
    pub uid_validity: u32,
    /// The message's UID.
    pub uid: u32,
}

/// A message to upload.
#[derive(Debug, Clone, Copy)]
pub struct AppendMessage<'a> {
    /// The message bytes, written to the server straight from this slice.
    pub raw: &'a [u8],
    /// Flags to set (`\Recent` is dropped: only servers set it).
    pub flags: &'a [String],
    /// INTERNALDATE to keep; `None` lets the server use the time of upload.
    pub internal_date: Option<DateTime<FixedOffset>>,
}

/// Literal cap outside [`ImapClient::fetch_messages`]: header fields, names, texts are small.
const DEFAULT_MAX_LITERAL: usize = 8 << 20;
/// The largest literal accepted while connecting (before STARTTLS, anyone on the path could
/// send it): no greeting or capability list needs one.
const PRE_TLS_MAX_LITERAL: usize = 64 * 1024;

/// From this size on, a FETCH's body section is moved out of the read buffer into a buffer of
/// its own instead of being lent: a large message then exists once, not in the read buffer and
/// again in the copy taken for the upload, and the read buffer does not keep its size. A
/// smaller one costs less to copy than a buffer of its own for each response.
pub const OWN_BUFFER_BODY: usize = 64 * 1024;

/// Keeps UID FETCH lines well under common server limits (Dovecot: 64 KiB).
const MAX_UID_SET: usize = 8 * 1024;

/// A blocking IMAP session. The password is never stored, so it cannot show in `Debug` or in
/// an error.
pub struct ImapClient {
    conn: Connection,
    framer: Framer,
    state: State,
    next_tag: u32,
    preauthenticated: bool,
    /// Tags of commands sent with [`ImapClient::send`] and not yet answered.
    in_flight: HashSet<String>,
    /// Completions that arrived while waiting for another command's.
    answered: HashMap<String, Completion>,
    /// Whether LOGOUT was sent: dropping the client then says nothing more.
    logged_out: bool,
    /// A fetch asked for ahead, its answer not read yet.
    ahead: Option<Ahead>,
    /// How long the login took to be answered, once logged in.
    login_took: Option<Duration>,
}

/// How long the server's last words are read for after a write failed: they were sent before
/// it closed, so they are there already or not at all.
const LAST_WORDS_WAIT: Duration = Duration::from_millis(300);

/// How long a LOGOUT sent by [`ImapClient::say_goodbye`] may take to write.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// A pipelined command: sent, its completion still to be collected with [`ImapClient::wait`].
#[derive(Debug)]
#[must_use = "a sent command's completion must be collected"]
struct Sent {
    tag: String,
    /// The command's length on the wire.
    bytes: usize,
}

/// An APPEND sent without waiting for its completion ([`ImapClient::append_send`]).
#[derive(Debug)]
#[must_use = "a sent APPEND's completion must be collected"]
pub struct SentAppend {
    sent: Sent,
    messages: usize,
}

/// A fetch sent behind another without waiting for it ([`ImapClient::fetch_messages`]):
/// the commands (EXAMINE, then the UID FETCHes) whose answers are still to be read.
#[derive(Debug)]
struct Ahead {
    mailbox: String,
    uids: Vec<u32>,
    max_size: u64,
    sent: Vec<Sent>,
}

impl Ahead {
    fn new(mailbox: &str, uids: &[u32], max_size: u64, sent: Vec<Sent>) -> Self {
        Ahead {
            mailbox: mailbox.to_owned(),
            uids: uids.to_vec(),
            max_size,
            sent,
        }
    }

    fn is_for(&self, examine: Option<&str>, uids: &[u32], max_size: u64) -> bool {
        examine == Some(self.mailbox.as_str()) && uids == self.uids && max_size == self.max_size
    }
}

/// The most UID FETCH commands a fetch asked for ahead may take: a few short lines, so what
/// is sent before its answer is read never fills the server's receive buffer.
const AHEAD_SETS: usize = 2;

/// A fetch to ask for ahead, with its UID sets, when they are few enough ([`AHEAD_SETS`]).
fn short_fetch<'t>(
    then: Option<(&'t str, &'t [u32])>,
) -> Option<(&'t str, &'t [u32], Vec<String>)> {
    let (mailbox, uids) = then?;
    let sets = uid_sets(uids, MAX_UID_SET);
    (sets.len() <= AHEAD_SETS).then_some((mailbox, uids, sets))
}

/// Commands sent ahead of their answers at most. Enough to hide round trips.
const PIPELINE_WINDOW: usize = 32;

/// Bytes of commands sent ahead of their answers at most. A server blocked writing an answer nobody reads (message bodies, say) stops reading
/// commands too; this much always fits in its receive buffer, so our writes never block
/// while its answers wait.
const PIPELINE_BYTES: usize = 16 * 1024;

/// What untagged data tells us along the way.
#[derive(Debug, Default)]
struct State {
    capabilities: Vec<String>,
    /// The personal namespace, once a NAMESPACE answer (or its absence) told it.
    personal_namespace: Option<Namespace>,
    /// The mailboxes listed in the login's round trip, until [`ImapClient::list`] takes them.
    listed: Option<Vec<Mailbox>>,
    /// The summaries asked for in the login's round trip, by mailbox, until
    /// [`ImapClient::change_summaries`] takes them or another command is sent.
    summarised: HashMap<String, FolderStatus>,
}

/// How long at least a server that took a login may take to answer the NAMESPACE and LIST
/// sent behind it.
const LISTING_PATIENCE: Duration = Duration::from_secs(3);

/// Every mailbox.
const LIST_ALL: &str = "LIST \"\" \"*\"";

/// What a STATUS asks for to tell that nothing changed, with CONDSTORE.
const SUMMARY_ITEMS: &str = " (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)";

/// How a command ended.
#[derive(Debug)]
struct Completion {
    status: Status,
    /// The server's text, response code included.
    text: String,
    /// APPENDUID's UIDVALIDITY and UID set.
    append_uid: Option<(u32, Vec<UidSetMember>)>,
}

impl Completion {
    fn ok(self) -> Result<Self, SessionError> {
        match self.status {
            Status::Ok => Ok(self),
            _ => Err(SessionError::Refused(self.text)),
        }
    }
}

impl fmt::Debug for ImapClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapClient")
            .field("tls", &self.conn.is_tls())
            .field("capabilities", &self.state.capabilities)
            .field("next_tag", &self.next_tag)
            .finish_non_exhaustive()
    }
}

impl ImapClient {
    /// Connects, reads the greeting, upgrades with STARTTLS when asked, and learns the
    /// capabilities.
    pub fn connect(
        address: &Address,
        mode: TlsMode,
        tls: &TlsConfig,
    ) -> Result<Self, SessionError> {
        let conn = match mode {
            TlsMode::Implicit => Connection::connect_tls(address, tls)?,
            TlsMode::StartTls | TlsMode::StartTlsIfOffered | TlsMode::Plain => {
                Connection::connect_plain(address)?
            }
        };
        let mut client = Self::greet(conn)?;
        // STARTTLS is not allowed once authenticated (RFC 9051 §6.2.1), and anyone on the path
        // can forge a plaintext PREAUTH: a run that needs TLS stops here rather than carry on
        // unencrypted, and one that allows plaintext goes on without TLS (and never sends a
        // password, there being no login).
        let upgrade = match mode {
            TlsMode::StartTls if client.preauthenticated => {
                return Err(SessionError::Unsupported(
                    "the server greeted with PREAUTH before TLS, so STARTTLS is impossible; use \
                     implicit TLS (imaps) or, on a trusted network only, plain IMAP"
                        .into(),
                ));
            }
            TlsMode::StartTls => true,
            TlsMode::StartTlsIfOffered => !client.preauthenticated,
            TlsMode::Implicit | TlsMode::Plain => false,
        };
        if upgrade {
            if client.state.capabilities.is_empty() {
                client.refresh_capabilities()?;
            }
            let offered = client.has_capability("STARTTLS");
            if !offered && mode == TlsMode::StartTlsIfOffered {
                return Ok(client);
            }
            if !offered {
                return Err(SessionError::Unsupported(
                    "the server does not offer STARTTLS; use implicit TLS (imaps) or, on a \
                     trusted network only, plain IMAP"
                        .into(),
                ));
            }
            client.run(|b| b.text("STARTTLS"), |_| Ok(()))?.ok()?;
            let conn = client.conn.start_tls(&address.host, tls)?;
            client = ImapClient { conn, ..client };
            // Capabilities seen before TLS may have been forged (RFC 3501 §6.2.1).
            client.state.capabilities.clear();
        }
        if client.state.capabilities.is_empty() {
            client.refresh_capabilities()?;
        }
        client.framer.set_max_literal(DEFAULT_MAX_LITERAL);
        Ok(client)
    }

    fn greet(conn: Connection) -> Result<Self, SessionError> {
        let mut client = ImapClient {
            conn,
            framer: Framer::new(PRE_TLS_MAX_LITERAL),
            state: State::default(),
            next_tag: 0,
            preauthenticated: false,
            in_flight: HashSet::new(),
            answered: HashMap::new(),
            logged_out: false,
            ahead: None,
            login_took: None,
        };
        let status = loop {
            client.read_response()?;
            let Some(response) = client.framer.parse()? else {
                continue;
            };
            observe(&mut client.state, &response, client.framer.bytes())?;
            match response {
                Response::Data { status, .. } => break status,
                _ => {
                    return Err(SessionError::Protocol(format!(
                        "expected a greeting, got: {}",
                        status_text(client.framer.bytes())
                    )));
                }
            }
        };
        client.preauthenticated = status == Status::PreAuth;
        Ok(client)
    }

    /// The server's capabilities, as it spelled them.
    pub fn capabilities(&self) -> &[String] {
        &self.state.capabilities
    }

    /// Whether the server advertises `name` (case-insensitive, e.g. `"AUTH=PLAIN"`).
    pub fn has_capability(&self, name: &str) -> bool {
        self.state
            .capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case(name))
    }

    /// The largest message the server takes by APPEND, when it advertises one for every
    /// mailbox (`APPENDLIMIT=N`, RFC 7889).
    pub fn append_limit(&self) -> Option<u64> {
        self.state.capabilities.iter().find_map(|c| {
            let (name, value) = c.split_once('=')?;
            name.eq_ignore_ascii_case("APPENDLIMIT")
                .then(|| value.parse().ok())
                .flatten()
        })
    }

    /// The storage quota a message delivered to `mailbox` counts against (`GETQUOTAROOT`,
    /// RFC 2087/9208): the one with the least room when it is under several. `None` when the
    /// server has no QUOTA capability, or no root of the mailbox limits bytes.
    pub fn storage_quota(&mut self, mailbox: &str) -> Result<Option<StorageQuota>, SessionError> {
        if !self.state.capabilities.iter().any(|c| {
            c.eq_ignore_ascii_case("QUOTA") || c.to_ascii_uppercase().starts_with("QUOTA=")
        }) {
            return Ok(None);
        }
        let mut tightest = None;
        self.run(
            |b| b.text("GETQUOTAROOT ").mailbox(mailbox),
            |response| {
                tightest = StorageQuota::tightest(tightest, storage_quota(response));
                Ok(())
            },
        )?
        .ok()?;
        Ok(tightest)
    }

    /// Whether [`ImapClient::multiappend`] can be used (RFC 3502).
    pub fn supports_multiappend(&self) -> bool {
        self.has_capability("MULTIAPPEND")
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    fn refresh_capabilities(&mut self) -> Result<(), SessionError> {
        self.run(|b| b.text("CAPABILITY"), |_| Ok(()))?.ok()?;
        Ok(())
    }

    /// How long a login with commands sent behind it ([`login_and_list`](Self::login_and_list)
    /// with SASL-IR) took to be answered: a round trip over the network and the server's check
    /// of the credentials, which over a slow link is mostly the round trip. `None` for any
    /// other login, which may take more round trips than one.
    pub fn login_took(&self) -> Option<Duration> {
        self.login_took
    }

    /// Logs in: AUTHENTICATE PLAIN (with SASL-IR when offered; with an authorization id for a
    /// master-user login) when the server offers it, else LOGIN (as `user*admin` for a master
    /// user); AUTHENTICATE CRAM-MD5, XOAUTH2 or OAUTHBEARER when chosen, which the server must
    /// offer. A refusal of the credentials is [`SessionError::LoginRefused`]; `[UNAVAILABLE]`,
    /// `[LIMIT]` and kin (the server cannot or will not check them now) are
    /// [`SessionError::Refused`]. Does nothing after a PREAUTH greeting.
    pub fn login(&mut self, login: &Login<'_>) -> Result<(), SessionError> {
        self.login_listing(login, None)
    }

    /// [`login`](Self::login), with NAMESPACE and LIST sent right behind a login that is one
    /// line (AUTHENTICATE PLAIN with SASL-IR): the next [`list`](Self::list) then answers
    /// from what came back in the login's round trip, which over a slow link is one round
    /// trip less before the plan. A server that refuses commands before the login completes
    /// only costs that round trip again.
    ///
    /// The summaries of `summarise` are asked for too, before the LIST: the next
    /// [`change_summaries`](Self::change_summaries) answers from them, unless another command
    /// came first. Before the LIST, since Dovecot answers a STATUS of a large Maildir in
    /// 2 ms before any LIST in the session and in about 60 ms after one.
    pub fn login_and_list(
        &mut self,
        login: &Login<'_>,
        summarise: &[String],
    ) -> Result<(), SessionError> {
        self.login_listing(login, Some(summarise))
    }

    /// Logs in; with `behind`, lists and summarises those mailboxes in the same round trip
    /// where it can ([`login_and_list`](Self::login_and_list)).
    fn login_listing(
        &mut self,
        login: &Login<'_>,
        behind: Option<&[String]>,
    ) -> Result<(), SessionError> {
        if self.preauthenticated {
            return Ok(());
        }
        if let Some(required) = login.required_mechanism()
            && !self.has_capability(&format!("AUTH={required}"))
        {
            return Err(SessionError::Unsupported(format!(
                "the server does not offer AUTH={required}"
            )));
        }
        let (mechanism, credentials) = login.sasl();
        let plain = login.is_oauth() || self.has_capability("AUTH=PLAIN");
        let initial_response = self.has_capability("SASL-IR");
        let login_disabled = self.has_capability("LOGINDISABLED");
        if !plain && login.mechanism == Mechanism::Plain && login_disabled {
            return Err(SessionError::Unsupported(
                "the server disables LOGIN (LOGINDISABLED) and offers no AUTH=PLAIN".into(),
            ));
        }
        // An authenticated session may have other capabilities; only the fresh list counts.
        let before = std::mem::take(&mut self.state.capabilities);
        let completion = if login.mechanism == Mechanism::CramMd5 {
            self.authenticate_cram_md5(login)
        } else if plain {
            // Only a command that waits for no continuation can have others sent behind it.
            let one_line = initial_response && !login.is_oauth();
            let completion = self.login_line(behind.filter(|_| one_line), |b| {
                b.text("AUTHENTICATE ").text(mechanism);
                if initial_response {
                    b.text(" ")
                } else {
                    b.await_continuation()
                }
                .secret(|b| b.text(&credentials));
                if login.is_oauth() {
                    // A refused token comes back as a `+` challenge carrying the error;
                    // the client's answer (RFC 7628 §3.2.3: a lone %x01 for
                    // OAUTHBEARER; an empty line for XOAUTH2) brings the NO. Not a
                    // secret, but no line of a SASL exchange is ever shown.
                    b.await_continuation()
                        .secret(|b| b.text(login.error_answer()));
                }
                b
            });
            // BAD says the server did not take the command, not that the password is wrong
            // (a NO, which LOGIN would only repeat: no password is tried twice, as servers
            // lock accounts out by failed tries). LOGIN sends the same password as PLAIN, on
            // the same connection, so it is no weaker than what the user chose.
            let bad = matches!(&completion, Ok(c) if c.status == Status::Bad);
            if bad && login.mechanism == Mechanism::Plain && !login_disabled {
                self.login_command(login)
            } else {
                completion
            }
        } else {
            self.login_command(login)
        };
        match completion {
            Ok(c) if c.status == Status::Ok => {}
            other => {
                self.state.capabilities = before;
                let c = other?;
                // RFC 5530: these codes say the server is busy or limited, not that the
                // credentials are wrong; "check your password" would send the user astray.
                let not_credentials = ["UNAVAILABLE", "LIMIT", "INUSE", "SERVERBUG"]
                    .iter()
                    .any(|code| has_code(&c.text, code));
                return Err(if c.status == Status::No && !not_credentials {
                    SessionError::LoginRefused(c.text)
                } else {
                    SessionError::Refused(c.text)
                });
            }
        }
        if self.state.capabilities.is_empty() {
            // Asking for capabilities changes no mailbox: the summaries stay true.
            let summarised = std::mem::take(&mut self.state.summarised);
            self.refresh_capabilities()?;
            self.state.summarised = summarised;
        }
        // Asked behind the login before the server said whether it has NAMESPACE: a server
        // that does not say so is read as before, whatever it answered.
        if !self.has_capability("NAMESPACE") {
            self.state.personal_namespace = None;
        }
        Ok(())
    }

    /// Runs the login command `build`; with `behind`, sends STATUS of those mailboxes,
    /// NAMESPACE and LIST behind it and keeps their answers for
    /// [`change_summaries`](Self::change_summaries) and [`list`](Self::list) when the login
    /// succeeded. After a refused login they are left unread: the next command's wait sets
    /// their completions aside. A server that took the login but does not answer them within
    /// [`LISTING_PATIENCE`] (or four times the login's round trip, if longer) is
    /// [`SessionError::NotPipelined`]: some hand a session over after the login without what
    /// was sent behind it, and such a session cannot be trusted with another command.
    fn login_line<'a>(
        &mut self,
        behind: Option<&[String]>,
        build: impl for<'b> FnOnce(&'b mut CommandBuilder<'a>) -> &'b mut CommandBuilder<'a>,
    ) -> Result<Completion, SessionError> {
        let Some(summarise) = behind else {
            return self.run(build, |_| Ok(()));
        };
        let started = Instant::now();
        let login = self.send(build)?;
        // Whether the server has CONDSTORE shows only once logged in: a server without it
        // refuses these, and the summaries are asked for again later.
        let summaries = summarise
            .iter()
            .map(|name| self.send(|b| b.text("STATUS ").mailbox(name).text(SUMMARY_ITEMS)))
            .collect::<Result<Vec<Sent>, SessionError>>()?;
        let namespace = self.send(|b| b.text("NAMESPACE"))?;
        let list = self.send(|b| b.text(LIST_ALL))?;
        // A server may answer pipelined commands at once: a LIST or STATUS line can come
        // before the login's completion.
        let mut mailboxes = Vec::new();
        let mut summarised = HashMap::new();
        let mut listing = |response: &mut Response<'_>| {
            if let Response::MailboxData(MailboxDatum::List(data)) = response {
                mailboxes.push(to_mailbox(data));
            } else if let Some((name, status)) = status_answer(response) {
                note_status(summarised.entry(name).or_default(), status);
            }
            Ok(())
        };
        let logged_in = self.answer_to(&login, &mut listing)?;
        if logged_in.status != Status::Ok {
            return Ok(logged_in);
        }
        self.login_took = Some(started.elapsed());
        let timeout = self.conn.timeout();
        let patience = LISTING_PATIENCE.max(started.elapsed() * 4).min(timeout);
        self.conn.set_timeout(patience)?;
        let mut refused = Vec::new();
        let answers = summaries
            .iter()
            .zip(summarise)
            .try_for_each(|(sent, name)| {
                if self.answer_to(sent, &mut listing)?.status != Status::Ok {
                    refused.push(name);
                }
                Ok(())
            })
            .and_then(|()| self.answer_to(&namespace, &mut listing))
            .and_then(|_| self.answer_to(&list, &mut listing));
        self.conn.set_timeout(timeout)?;
        let listed = answers.map_err(|err| match err {
            SessionError::Timeout => {
                SessionError::NotPipelined("no answer to the commands sent behind the login".into())
            }
            other => other,
        })?;
        if listed.status == Status::Ok {
            self.state.listed = Some(mailboxes);
        }
        for name in refused {
            summarised.remove(name);
        }
        self.state.summarised = summarised;
        Ok(logged_in)
    }

    /// Collects the completion of `sent`, with its untagged data to `on_data`.
    fn answer_to(
        &mut self,
        sent: &Sent,
        on_data: &mut impl FnMut(&mut Response<'_>) -> Result<(), SessionError>,
    ) -> Result<Completion, SessionError> {
        self.read_until(&sent.tag, false, on_data)?
            .ok_or_else(|| SessionError::Protocol("unexpected continuation request".into()))
    }

    /// The LOGIN command (as `user*admin` for a master user).
    fn login_command(&mut self, login: &Login<'_>) -> Result<Completion, SessionError> {
        self.run(
            |b| {
                b.text("LOGIN ")
                    .astring(login.login_name().as_bytes())
                    .text(" ")
                    .secret(|b| b.astring(login.password.as_bytes()))
            },
            |_| Ok(()),
        )
    }

    /// AUTHENTICATE CRAM-MD5: the answer depends on the server's challenge, so it cannot be
    /// built ahead like the other commands.
    fn authenticate_cram_md5(&mut self, login: &Login<'_>) -> Result<Completion, SessionError> {
        let tag = self.tag();
        self.write_part(&tag, format!("{tag} AUTHENTICATE CRAM-MD5\r\n").as_bytes())?;
        self.flush_command(&tag)?;
        let mut ignore = |_: &mut Response<'_>| Ok(());
        if let Some(done) = self.read_until(&tag, true, &mut ignore)? {
            return Ok(done);
        }
        // The framer still holds the `+ CHALLENGE` line just read.
        let challenge = self.framer.bytes().strip_prefix(b"+").unwrap_or_default();
        let answer = match login.cram_md5_answer(challenge) {
            Some(answer) => answer,
            // `*` cancels the exchange (RFC 3501 §6.2.2); the server then says NO.
            None => "*".to_owned(),
        };
        self.write_part(&tag, format!("{answer}\r\n").as_bytes())?;
        self.flush_command(&tag)?;
        self.read_until(&tag, false, &mut ignore)?
            .ok_or_else(|| SessionError::Protocol("unexpected continuation request".into()))
    }

    /// Lists every mailbox (`LIST "" "*"`), and the personal namespace (RFC 2342) of a server
    /// with the NAMESPACE capability: asked once a session, in the same round trip.
    pub fn list(&mut self) -> Result<MailboxList, SessionError> {
        let mailboxes = match self.state.listed.take() {
            Some(listed) => listed,
            None => self.list_now()?,
        };
        // A refused NAMESPACE (or none offered) leaves names as they are, as before
        // namespaces were read.
        let personal = self
            .state
            .personal_namespace
            .get_or_insert_with(Namespace::default)
            .clone();
        Ok(MailboxList {
            mailboxes,
            personal,
        })
    }

    fn list_now(&mut self) -> Result<Vec<Mailbox>, SessionError> {
        let ask_namespace =
            self.state.personal_namespace.is_none() && self.has_capability("NAMESPACE");
        let mut mailboxes = Vec::new();
        let mut completions = self.pipeline(
            1 + usize::from(ask_namespace),
            |i, b| {
                if ask_namespace && i == 0 {
                    b.text("NAMESPACE")
                } else {
                    b.text(LIST_ALL)
                }
            },
            |_, response| {
                if let Response::MailboxData(MailboxDatum::List(data)) = response {
                    mailboxes.push(to_mailbox(data));
                }
                Ok(())
            },
        )?;
        completions.pop().expect("the LIST's completion").ok()?;
        Ok(mailboxes)
    }

    /// STATUS of each of these mailboxes (HIGHESTMODSEQ too when the server has CONDSTORE),
    /// pipelined: one round trip for all.
    pub fn statuses(&mut self, names: &[String]) -> Result<Vec<FolderStatus>, SessionError> {
        let items = if self.has_capability("CONDSTORE") {
            SUMMARY_ITEMS
        } else {
            " (MESSAGES UIDNEXT UIDVALIDITY)"
        };
        let mut statuses = vec![FolderStatus::default(); names.len()];
        let completions = self.pipeline(
            names.len(),
            |i, b| b.text("STATUS ").mailbox(&names[i]).text(items),
            |i, response| {
                if let Some((named, status)) = status_answer(response) {
                    // The answer names its mailbox: a server may run pipelined STATUS
                    // commands at once and answer them in any order.
                    let at = names.iter().position(|n| *n == named).unwrap_or(i);
                    note_status(&mut statuses[at], status);
                }
                Ok(())
            },
        )?;
        for completion in completions {
            completion.ok()?;
        }
        Ok(statuses)
    }

    /// Adds flags to (`+`) or removes them from (`-`) these messages in the selected
    /// (read-write) mailbox, leaving their other flags as they are.
    pub fn change_flags(
        &mut self,
        uids: &[u32],
        sign: char,
        flags: &[String],
    ) -> Result<(), SessionError> {
        let list = flag_list(flags)?;
        let item = format!(" {sign}FLAGS.SILENT ");
        uid_sets(uids, MAX_UID_SET).iter().try_for_each(|set| {
            self.run(
                |b| b.text("UID STORE ").text(set).text(&item).text(&list),
                |_| Ok(()),
            )?
            .ok()
            .map(drop)
        })
    }

    /// [`statuses`](Self::statuses) as summaries that change whenever a mailbox's messages or
    /// flags do: only with CONDSTORE (HIGHESTMODSEQ), since without it a flag change leaves
    /// STATUS as it was; `None` otherwise.
    pub fn change_summaries(
        &mut self,
        names: &[String],
    ) -> Result<Vec<Option<FolderStatus>>, SessionError> {
        let mut summarised = std::mem::take(&mut self.state.summarised);
        if !self.has_capability("CONDSTORE") {
            return Ok(vec![None; names.len()]);
        }
        let mut unasked: Vec<String> = names
            .iter()
            .filter(|name| !summarised.contains_key(*name))
            .cloned()
            .collect();
        // Several folders may be summarised into one (two source folders mirrored into one).
        unasked.sort_unstable();
        unasked.dedup();
        if !unasked.is_empty() {
            let asked = self.statuses(&unasked)?;
            summarised.extend(unasked.into_iter().zip(asked));
        }
        Ok(names
            .iter()
            .map(|name| {
                summarised
                    .get(name)
                    .copied()
                    .filter(|status| status.highest_modseq.is_some())
            })
            .collect())
    }

    /// Removes exactly these messages from the selected mailbox: `\Deleted` then
    /// `UID EXPUNGE` (UIDPLUS), which leaves other messages marked `\Deleted` alone. Without
    /// UIDPLUS a plain EXPUNGE could remove messages mailferry never touched, so it refuses.
    pub fn delete_messages(&mut self, uids: &[u32]) -> Result<(), SessionError> {
        if !self.has_capability("UIDPLUS") {
            return Err(SessionError::Unsupported(
                "the server lacks UIDPLUS, so mailferry cannot delete only its own copies".into(),
            ));
        }
        uid_sets(uids, MAX_UID_SET).iter().try_for_each(|set| {
            self.run(
                |b| {
                    b.text("UID STORE ")
                        .text(set)
                        .text(" +FLAGS.SILENT (\\Deleted)")
                },
                |_| Ok(()),
            )?
            .ok()?;
            self.run(|b| b.text("UID EXPUNGE ").text(set), |_| Ok(()))?
                .ok()
                .map(drop)
        })
    }

    /// Selects a mailbox, with EXAMINE when `read_only` so flags (`\Seen`) stay untouched.
    pub fn select(&mut self, name: &str, read_only: bool) -> Result<MailboxStatus, SessionError> {
        let verb = if read_only { "EXAMINE " } else { "SELECT " };
        let mut status = MailboxStatus::default();
        self.run(
            |b| b.text(verb).mailbox(name),
            |response| {
                note_selected(&mut status, response);
                Ok(())
            },
        )?
        .ok()?;
        Ok(status)
    }

    /// [`select`](Self::select) of several mailboxes, each followed by one `UID FETCH 1:*` of
    /// UID, size, flags and the given [`IndexItems`], pipelined: one round trip for all instead
    /// of two per mailbox. Records are streamed: `on_each` gets the number of the mailbox with
    /// each, and only one response is held in memory at a time. Returns, per mailbox, its
    /// status or the server's refusal to open it (a mailbox that does not exist). Read-only,
    /// the last one stays selected; read-write, none does (see `create_then_index`).
    pub fn index_mailboxes(
        &mut self,
        names: &[String],
        read_only: bool,
        items: IndexItems<'_>,
        on_each: impl FnMut(usize, IndexRecord<'_>),
    ) -> Result<Vec<Result<MailboxStatus, SessionError>>, SessionError> {
        self.create_then_index(&[], names, read_only, items, on_each)
    }

    /// Creates and subscribes to each mailbox of `create` (parents before children as listed;
    /// one that exists already is what was asked for), then
    /// [`index_mailboxes`](Self::index_mailboxes) of `names` (read-write), all in one
    /// pipeline: a folder created for a copy is indexed in the same round trip. The first
    /// refusal to create is the error.
    pub fn create_and_index_mailboxes(
        &mut self,
        create: &[String],
        names: &[String],
        items: IndexItems<'_>,
        on_each: impl FnMut(usize, IndexRecord<'_>),
    ) -> Result<Vec<Result<MailboxStatus, SessionError>>, SessionError> {
        self.create_then_index(create, names, false, items, on_each)
    }

    fn create_then_index(
        &mut self,
        create: &[String],
        names: &[String],
        read_only: bool,
        items: IndexItems<'_>,
        mut on_each: impl FnMut(usize, IndexRecord<'_>),
    ) -> Result<Vec<Result<MailboxStatus, SessionError>>, SessionError> {
        let verb = if read_only { "EXAMINE " } else { "SELECT " };
        let creating = create.len() * 2;
        let indexing = names.len() * 2;
        // A mailbox left selected read-write while this session APPENDs to it is a stale view:
        // GNU Mailutils (mbox) writes that view back when it is closed, losing every message
        // appended meanwhile. So the index ends deselected, never expunging (CLOSE would).
        let deselect = usize::from(!read_only && !names.is_empty());
        let unselect = self.has_capability("UNSELECT");
        let mut statuses = vec![MailboxStatus::default(); names.len()];
        let mut indexed = vec![0usize; names.len()];
        let completions = self.pipeline(
            creating + indexing + deselect,
            |i, b| match i.checked_sub(creating) {
                None if i % 2 == 0 => b.text("CREATE ").mailbox(&create[i / 2]),
                None => b.text("SUBSCRIBE ").mailbox(&create[i / 2]),
                Some(j) if j == indexing && unselect => b.text("UNSELECT"),
                // Without UNSELECT, opening a mailbox read-only deselects the read-write one.
                Some(j) if j == indexing => b.text("EXAMINE ").mailbox(&names[j / 2 - 1]),
                Some(j) if j % 2 == 0 => b.text(verb).mailbox(&names[j / 2]),
                Some(_) => index_fetch(b, "1:*", items),
            },
            |i, response| {
                match i.checked_sub(creating) {
                    Some(j) if j == indexing => {}
                    Some(j) if j % 2 == 0 => note_selected(&mut statuses[j / 2], response),
                    Some(j) => {
                        let status = &mut statuses[j / 2];
                        // Mail arriving meanwhile is announced before its FETCH response.
                        note_selected(status, response);
                        if let Some(record) = index_record(response) {
                            indexed[j / 2] += 1;
                            within_due(indexed[j / 2], status.exists as usize, "EXISTS")?;
                            on_each(j / 2, record);
                        }
                    }
                    None => {}
                }
                Ok(())
            },
        )?;
        let mut completions = completions.into_iter();
        // A refused CREATE is told with the folder's SELECT: that folder fails, not the run
        // (GNU Mailutils' mbox folders cannot hold both messages and subfolders). A mailbox
        // that exists already is what was asked for; a refused SUBSCRIBE costs nothing.
        let mut not_created = HashMap::new();
        for name in create {
            let (Some(created), Some(_subscribed)) = (completions.next(), completions.next())
            else {
                unreachable!("two completions per mailbox created")
            };
            let exists_already =
                created.status == Status::No && has_code(&created.text, "ALREADYEXISTS");
            if created.status != Status::Ok && !exists_already {
                not_created.insert(name.as_str(), created.text);
            }
        }
        let mut outcomes = Vec::with_capacity(names.len());
        for (name, status) in names.iter().zip(statuses) {
            let (Some(select), Some(fetch)) = (completions.next(), completions.next()) else {
                unreachable!("two completions per mailbox")
            };
            // A failed SELECT leaves no mailbox selected, so its FETCH failed harmlessly; a
            // FETCH of `1:*` in an empty mailbox is refused by some servers.
            outcomes.push(match (select.ok(), fetch.ok()) {
                (Err(SessionError::Refused(opening)), _) => Err(SessionError::Refused(
                    match not_created.get(name.as_str()) {
                        Some(creating) => {
                            format!("cannot create the folder ({creating}) nor open it ({opening})")
                        }
                        None => opening,
                    },
                )),
                (Err(refused), _) => Err(refused),
                (Ok(_), Err(_)) if status.exists == 0 => Ok(status),
                (Ok(_), Err(refused)) => return Err(refused),
                (Ok(_), Ok(_)) => Ok(status),
            });
        }
        Ok(outcomes)
    }

    /// Opens each mailbox read-only and asks for the size and flags of the given UIDs, and for
    /// the second list `items` too (`EXAMINE`, then the FETCH of
    /// [`index_mailboxes`](Self::index_mailboxes) for those UIDs), pipelined: one round trip
    /// for all. A server answers the first from its index without opening a message, and
    /// leaves out UIDs that no longer exist. `on_each` gets the number of the mailbox with each
    /// UID found (with an empty header for the first list). Returns, per mailbox, its status
    /// (UIDVALIDITY) or the server's refusal to open it or to answer. The last mailbox stays
    /// selected read-only.
    pub fn uid_records(
        &mut self,
        mailboxes: &[(&str, &[u32], &[u32])],
        items: IndexItems<'_>,
        mut on_each: impl FnMut(usize, IndexRecord<'_>),
    ) -> Result<Vec<Result<MailboxStatus, SessionError>>, SessionError> {
        // Per command: its mailbox, and the UID set it fetches with `items` or with the
        // default's none (`None`: the EXAMINE).
        type UidFetch<'f> = Option<(String, IndexItems<'f>)>;
        let mut commands: Vec<(usize, UidFetch<'_>)> = Vec::new();
        for (j, (_, plain, with_header)) in mailboxes.iter().enumerate() {
            commands.push((j, None));
            for (uids, items) in [(plain, IndexItems::default()), (with_header, items)] {
                commands.extend(
                    uid_sets(uids, MAX_UID_SET)
                        .into_iter()
                        .map(|set| (j, Some((set, items)))),
                );
            }
        }
        let mut statuses = vec![MailboxStatus::default(); mailboxes.len()];
        let mut found = vec![0usize; mailboxes.len()];
        let completions = self.pipeline(
            commands.len(),
            |i, b| match &commands[i] {
                (j, None) => b.text("EXAMINE ").mailbox(mailboxes[*j].0),
                (_, Some((set, items))) => index_fetch(b, set, *items),
            },
            |i, response| {
                match &commands[i] {
                    (j, None) => note_selected(&mut statuses[*j], response),
                    (j, Some(_)) => {
                        if let Some(record) = index_record(response) {
                            found[*j] += 1;
                            let (_, plain, with_header) = mailboxes[*j];
                            within_due(
                                found[*j],
                                plain.len() + with_header.len(),
                                "UIDs asked for",
                            )?;
                            on_each(*j, record);
                        }
                    }
                }
                Ok(())
            },
        )?;
        let mut outcomes: Vec<Result<MailboxStatus, SessionError>> =
            statuses.into_iter().map(Ok).collect();
        for ((j, _), completion) in commands.iter().zip(completions) {
            if outcomes[*j].is_ok()
                && let Err(refused) = completion.ok()
            {
                outcomes[*j] = Err(refused);
            }
        }
        Ok(outcomes)
    }

    /// Fetches whole messages by UID (`UID FETCH … (UID FLAGS INTERNALDATE BODY.PEEK[])`),
    /// calling `on_each` per message; each is held in memory only during its call. UIDs that no
    /// longer exist are simply not reported. With `examine`, that mailbox is opened read-only
    /// first, in the same round trip. A message larger than `max_size` bytes ends the session
    /// with [`SessionError::Protocol`]: leave such UIDs out (see [`IndexRecord::size`]).
    ///
    /// With `then` (a mailbox and UIDs), the fetch that comes next is asked for behind this
    /// one, when its commands are short: over a slow link a small folder costs a round trip
    /// of waiting, and this way the next one's answer is already on its way. Its answer is
    /// read by the call that asks for exactly that; any other command first reads it and
    /// drops it.
    pub fn fetch_messages(
        &mut self,
        examine: Option<&str>,
        uids: &[u32],
        max_size: u64,
        then: Option<(&str, &[u32])>,
        mut on_each: impl FnMut(FetchedMessage<'_>),
    ) -> Result<(), SessionError> {
        let previous = self.framer.max_literal();
        self.framer
            .set_max_literal(usize::try_from(max_size).unwrap_or(usize::MAX));
        let fetched = match self
            .ahead
            .take_if(|ahead| ahead.is_for(examine, uids, max_size))
        {
            Some(ahead) => self.read_ahead(ahead, uids.len(), max_size, then, &mut on_each),
            None => self.fetch_now(examine, uids, max_size, then, &mut on_each),
        };
        self.framer.set_max_literal(previous);
        fetched
    }

    fn fetch_now(
        &mut self,
        examine: Option<&str>,
        uids: &[u32],
        max_size: u64,
        then: Option<(&str, &[u32])>,
        on_each: &mut impl FnMut(FetchedMessage<'_>),
    ) -> Result<(), SessionError> {
        let sets = uid_sets(uids, MAX_UID_SET);
        let first_fetch = usize::from(examine.is_some());
        let now = first_fetch + sets.len();
        let then = short_fetch(then);
        let ahead_count = then.as_ref().map_or(0, |(_, _, sets)| 1 + sets.len());
        let mut fetched = 0;
        let (completions, ahead) = self.pipeline_leaving(
            now + ahead_count,
            ahead_count,
            |i, b| match i.checked_sub(now) {
                Some(0) => {
                    let (mailbox, _, _) = then.as_ref().expect("asked ahead");
                    b.text("EXAMINE ").mailbox(mailbox)
                }
                Some(k) => {
                    let (_, _, sets) = then.as_ref().expect("asked ahead");
                    fetch_bodies(b, &sets[k - 1])
                }
                None => match (i.checked_sub(first_fetch), examine) {
                    (Some(set), _) => fetch_bodies(b, &sets[set]),
                    (None, Some(mailbox)) => b.text("EXAMINE ").mailbox(mailbox),
                    (None, None) => unreachable!("EXAMINE only when asked"),
                },
            },
            |i, response| {
                if i >= first_fetch
                    && let Some(message) = fetched_message(response)
                {
                    fetched += 1;
                    within_due(fetched, uids.len(), "UIDs asked for")?;
                    on_each(message);
                }
                Ok(())
            },
        )?;
        if let Some((mailbox, uids, _)) = then {
            self.ahead = Some(Ahead::new(mailbox, uids, max_size, ahead));
        }
        completions
            .into_iter()
            .try_for_each(|completion| completion.ok().map(drop))
    }

    /// Reads the answer to a fetch asked for ahead (its EXAMINE, then its FETCHes), with
    /// `then` asked for behind it first, as [`fetch_now`](Self::fetch_now) does: the answer
    /// already on its way comes before that one's.
    fn read_ahead(
        &mut self,
        ahead: Ahead,
        asked: usize,
        max_size: u64,
        then: Option<(&str, &[u32])>,
        on_each: &mut impl FnMut(FetchedMessage<'_>),
    ) -> Result<(), SessionError> {
        let behind = match short_fetch(then) {
            Some((mailbox, uids, sets)) => {
                let mut sent = vec![self.send(|b| b.text("EXAMINE ").mailbox(mailbox))?];
                for set in &sets {
                    sent.push(self.send(|b| fetch_bodies(b, set))?);
                }
                Some(Ahead::new(mailbox, uids, max_size, sent))
            }
            None => None,
        };
        let read = self.read_fetch_answers(&ahead.sent, asked, on_each);
        self.ahead = behind;
        read?
            .into_iter()
            .try_for_each(|completion| completion.ok().map(drop))
    }

    /// The completions of a fetch's commands (an EXAMINE, then UID FETCHes), each message
    /// fetched to `on_each`.
    fn read_fetch_answers(
        &mut self,
        sent: &[Sent],
        asked: usize,
        on_each: &mut impl FnMut(FetchedMessage<'_>),
    ) -> Result<Vec<Completion>, SessionError> {
        let mut fetched = 0;
        let mut completions = Vec::with_capacity(sent.len());
        for (i, sent) in sent.iter().enumerate() {
            completions.push(self.answer_to(sent, &mut |response| {
                if i > 0
                    && let Some(message) = fetched_message(response)
                {
                    fetched += 1;
                    within_due(fetched, asked, "UIDs asked for")?;
                    on_each(message);
                }
                Ok(())
            })?);
        }
        Ok(completions)
    }

    /// What comes before every command: the answer to a fetch asked for ahead is read (see
    /// [`drop_ahead`](Self::drop_ahead)), and the summaries asked for at the login are
    /// forgotten, as they may be out of date after it.
    fn before_command(&mut self) -> Result<(), SessionError> {
        self.drop_ahead()?;
        self.state.summarised.clear();
        Ok(())
    }

    /// Reads and drops the answer to a fetch asked for ahead that nobody asked for after all,
    /// so the next command's answer is its own.
    fn drop_ahead(&mut self) -> Result<(), SessionError> {
        let Some(ahead) = self.ahead.take() else {
            return Ok(());
        };
        let previous = self.framer.max_literal();
        self.framer
            .set_max_literal(usize::try_from(ahead.max_size).unwrap_or(usize::MAX));
        let read = ahead
            .sent
            .into_iter()
            .try_for_each(|sent| self.wait(sent).map(drop));
        self.framer.set_max_literal(previous);
        read
    }

    /// Appends one message. Returns its UID when the server reports it (UIDPLUS). A refusal is
    /// [`SessionError::Refused`] with the server's text, code included (`[TRYCREATE] …`,
    /// `[OVERQUOTA] …`).
    pub fn append(
        &mut self,
        mailbox: &str,
        message: &AppendMessage<'_>,
    ) -> Result<Option<MessageUid>, SessionError> {
        let uids = self.append_all(mailbox, std::slice::from_ref(message))?;
        Ok(uids.first().copied())
    }

    /// Appends several messages in one command (MULTIAPPEND, RFC 3502): the server stores all
    /// or none, so on a refusal the caller may retry them one by one to find the culprit.
    /// Returns their UIDs in order under UIDPLUS, else an empty list.
    pub fn multiappend(
        &mut self,
        mailbox: &str,
        messages: &[AppendMessage<'_>],
    ) -> Result<Vec<MessageUid>, SessionError> {
        if !self.supports_multiappend() {
            return Err(SessionError::Unsupported(
                "the server does not offer MULTIAPPEND".into(),
            ));
        }
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        self.append_all(mailbox, messages)
    }

    fn append_all(
        &mut self,
        mailbox: &str,
        messages: &[AppendMessage<'_>],
    ) -> Result<Vec<MessageUid>, SessionError> {
        let flags = flag_lists(messages)?;
        let completion = self.run(|b| append_command(b, mailbox, messages, &flags), |_| Ok(()))?;
        uids_of(completion, messages.len(), self.has_capability("UIDPLUS"))
    }

    /// Whether APPENDs can be pipelined: only when every literal goes without waiting for
    /// the server's `+` (LITERAL+).
    pub fn can_pipeline_appends(&self) -> bool {
        self.has_capability("LITERAL+")
    }

    /// Sends an APPEND of one message, or of several (MULTIAPPEND, which the server must
    /// offer), without waiting for its completion, so that the next can follow at once; the
    /// answers are collected in any order with [`ImapClient::append_wait`]. Needs
    /// [`ImapClient::can_pipeline_appends`].
    pub fn append_send(
        &mut self,
        mailbox: &str,
        messages: &[AppendMessage<'_>],
    ) -> Result<SentAppend, SessionError> {
        if !self.can_pipeline_appends() || (messages.len() > 1 && !self.supports_multiappend()) {
            return Err(SessionError::Unsupported(
                "pipelined APPEND needs LITERAL+ (and MULTIAPPEND for several messages)".into(),
            ));
        }
        let flags = flag_lists(messages)?;
        let sent = self.send(|b| append_command(b, mailbox, messages, &flags))?;
        Ok(SentAppend {
            sent,
            messages: messages.len(),
        })
    }

    /// The answer to an [`ImapClient::append_send`]: the UIDs as [`ImapClient::multiappend`]
    /// returns them, or the server's refusal.
    pub fn append_wait(&mut self, sent: SentAppend) -> Result<Vec<MessageUid>, SessionError> {
        let completion = self.wait(sent.sent)?;
        uids_of(completion, sent.messages, self.has_capability("UIDPLUS"))
    }

    /// Ends the session politely and waits for the server to agree. The server's BYE is
    /// expected here, not an error.
    pub fn logout(mut self) -> Result<(), SessionError> {
        self.send_logout()?;
        loop {
            match self.read_response() {
                Ok(()) => {}
                Err(SessionError::Closed) => return Ok(()),
                Err(err) => return Err(err),
            }
            if let Ok(Some(Response::Done { .. })) = self.framer.parse() {
                return Ok(());
            }
        }
    }

    /// Sends LOGOUT, without waiting for the answer (a round trip at the end of every
    /// connection), when the session is between commands: the server then ends the session
    /// cleanly instead of finding the connection gone. A session left mid-command (by an
    /// error), or logged out already, says nothing. For a store's `Drop`.
    pub fn say_goodbye(&mut self) {
        if !self.logged_out && self.in_flight.is_empty() {
            let _ = self.conn.set_timeout(GOODBYE_TIMEOUT);
            let _ = self.send_logout();
        }
    }

    fn send_logout(&mut self) -> Result<(), SessionError> {
        self.logged_out = true;
        let tag = self.tag();
        let line = format!("{tag} LOGOUT\r\n");
        self.conn.trace().sent(line.as_bytes());
        self.conn.write_all(line.as_bytes())?;
        Ok(self.conn.flush()?)
    }

    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("m{}", self.next_tag)
    }

    fn literal_mode(&self) -> LiteralMode {
        if self.has_capability("LITERAL+") {
            LiteralMode::NonSync
        } else if self.has_capability("LITERAL-") {
            LiteralMode::NonSyncUpTo4096
        } else {
            LiteralMode::Synchronizing
        }
    }

    /// Sends one command built by `build` and reads until its tagged completion, passing each
    /// untagged response to `on_data`. A NO or BAD is returned as a completion, not an error.
    fn run<'a>(
        &mut self,
        build: impl for<'b> FnOnce(&'b mut CommandBuilder<'a>) -> &'b mut CommandBuilder<'a>,
        mut on_data: impl FnMut(&Response<'_>) -> Result<(), SessionError>,
    ) -> Result<Completion, SessionError> {
        self.before_command()?;
        let tag = self.tag();
        let mut builder = CommandBuilder::new(&tag, self.literal_mode());
        build(&mut builder);
        let (segments, shown) = builder.finish_shown();
        let mut shown = shown.iter();
        let mut trace_next_piece = |conn: &Connection| {
            if let Some(piece) = shown.next() {
                conn.trace().sent(piece);
            }
        };
        for segment in segments {
            match segment {
                Segment::Bytes(bytes) => self.write_part(&tag, &bytes)?,
                Segment::Slice(bytes) => self.write_part(&tag, bytes)?,
                Segment::AwaitContinuation => {
                    trace_next_piece(&self.conn);
                    self.flush_command(&tag)?;
                    // A tagged answer instead of `+` means the server refused early (e.g.
                    // APPEND to a missing mailbox): the rest must not be sent.
                    if let Some(done) = self.read_until(&tag, true, &mut |r| on_data(r))? {
                        return Ok(done);
                    }
                }
            }
        }
        trace_next_piece(&self.conn);
        self.flush_command(&tag)?;
        self.read_until(&tag, false, &mut |r| on_data(r))?
            .ok_or_else(|| SessionError::Protocol("unexpected continuation request".into()))
    }

    /// Sends a command without waiting for its answer (pipelining, RFC 3501 §5.5). The
    /// command must need no `+` from the server on the way: with synchronizing literals use
    /// [`ImapClient::run`].
    fn send<'a>(
        &mut self,
        build: impl for<'b> FnOnce(&'b mut CommandBuilder<'a>) -> &'b mut CommandBuilder<'a>,
    ) -> Result<Sent, SessionError> {
        self.before_command()?;
        let tag = self.tag();
        let mut builder = CommandBuilder::new(&tag, self.literal_mode());
        build(&mut builder);
        let (segments, shown) = builder.finish_shown();
        let mut bytes_sent = 0;
        for segment in segments {
            match segment {
                Segment::Bytes(bytes) => {
                    bytes_sent += bytes.len();
                    self.write_part(&tag, &bytes)?;
                }
                Segment::Slice(bytes) => {
                    bytes_sent += bytes.len();
                    self.write_part(&tag, bytes)?;
                }
                Segment::AwaitContinuation => {
                    return Err(SessionError::Protocol(
                        "a pipelined command cannot wait for a continuation".into(),
                    ));
                }
            }
        }
        shown.iter().for_each(|piece| self.conn.trace().sent(piece));
        self.flush_command(&tag)?;
        self.in_flight.insert(tag.clone());
        Ok(Sent {
            tag,
            bytes: bytes_sent,
        })
    }

    /// Writes part of the command tagged `tag`.
    fn write_part(&mut self, tag: &str, bytes: &[u8]) -> Result<(), SessionError> {
        self.conn
            .write_all(bytes)
            .map_err(|err| self.write_failed(tag, err))
    }

    /// Sends what was written of the command tagged `tag`.
    fn flush_command(&mut self, tag: &str) -> Result<(), SessionError> {
        self.conn.flush().map_err(|err| self.write_failed(tag, err))
    }

    /// What a failed write of the command tagged `tag` means. A server that ends the session
    /// says why first (a BYE, or a NO asking to slow down) and closes; a long command being
    /// written (an APPEND) then fails with a broken pipe before that answer is read, and the
    /// answer, which decides how long to wait before coming back, would be lost with it.
    fn write_failed(&mut self, tag: &str, err: io::Error) -> SessionError {
        if !self.conn.stop_writing(LAST_WORDS_WAIT) {
            return err.into();
        }
        let last_words = self.read_until(tag, false, &mut |_| Ok(()));
        after_failed_write(last_words, err)
    }

    /// Collects the completion of a command sent with [`ImapClient::send`]; untagged data on
    /// the way is only observed.
    fn wait(&mut self, sent: Sent) -> Result<Completion, SessionError> {
        self.answer_to(&sent, &mut |_| Ok(()))
    }

    /// Sends `count` commands, built by `build(i)`, each without waiting for the answers to
    /// the ones before (at most [`PIPELINE_WINDOW`] commands and [`PIPELINE_BYTES`] bytes of
    /// them unanswered), and returns their
    /// completions in order. Untagged data goes to `on_data` with the number of the oldest
    /// unanswered command: the one it belongs to whenever each command waits for the
    /// previous one to finish, as SELECT, and anything after a SELECT, does.
    fn pipeline<'a>(
        &mut self,
        count: usize,
        build: impl for<'b> FnMut(usize, &'b mut CommandBuilder<'a>) -> &'b mut CommandBuilder<'a>,
        on_data: impl FnMut(usize, &mut Response<'_>) -> Result<(), SessionError>,
    ) -> Result<Vec<Completion>, SessionError> {
        Ok(self.pipeline_leaving(count, 0, build, on_data)?.0)
    }

    /// [`pipeline`](Self::pipeline), leaving the last `leave` commands unanswered: returned
    /// sent, their answers unread (see [`Ahead`]).
    fn pipeline_leaving<'a>(
        &mut self,
        count: usize,
        leave: usize,
        mut build: impl for<'b> FnMut(usize, &'b mut CommandBuilder<'a>) -> &'b mut CommandBuilder<'a>,
        mut on_data: impl FnMut(usize, &mut Response<'_>) -> Result<(), SessionError>,
    ) -> Result<(Vec<Completion>, Vec<Sent>), SessionError> {
        let mut completions = Vec::with_capacity(count);
        let mut unanswered: VecDeque<(usize, Sent)> = VecDeque::new();
        let mut unanswered_bytes = 0;
        for i in 0..count {
            let sent = self.send(|b| build(i, b))?;
            unanswered_bytes += sent.bytes;
            unanswered.push_back((i, sent));
            while let Some(&(oldest, _)) = unanswered.front() {
                let due = unanswered.len() >= PIPELINE_WINDOW
                    || unanswered_bytes > PIPELINE_BYTES
                    || i + 1 == count;
                if !due || oldest + leave >= count {
                    break;
                }
                let (oldest, sent) = unanswered.pop_front().expect("not empty");
                unanswered_bytes -= sent.bytes;
                let completion = self.read_until(&sent.tag, false, &mut |r| on_data(oldest, r))?;
                completions.push(completion.ok_or_else(|| {
                    SessionError::Protocol("unexpected continuation request".into())
                })?);
            }
        }
        Ok((
            completions,
            unanswered.into_iter().map(|(_, sent)| sent).collect(),
        ))
    }

    /// Reads until the completion of `tag` (`Some`) or, when `continuation` is set, a `+`
    /// (`None`). Completions of other pipelined commands are kept for their own wait. A FETCH
    /// body of [`OWN_BUFFER_BODY`] bytes or more reaches `on_data` owned, to be taken.
    fn read_until(
        &mut self,
        tag: &str,
        continuation: bool,
        on_data: &mut impl FnMut(&mut Response<'_>) -> Result<(), SessionError>,
    ) -> Result<Option<Completion>, SessionError> {
        if let Some(done) = self.answered.remove(tag) {
            return Ok(Some(done));
        }
        loop {
            self.read_response()?;
            let Some(response) = self.framer.parse()? else {
                // imap-proto skips NAMESPACE answers; the raw bytes are read here.
                if let Some(personal) = namespace::personal(self.framer.bytes())? {
                    self.state.personal_namespace = Some(personal);
                }
                continue;
            };
            let raw = self.framer.bytes();
            observe(&mut self.state, &response, raw)?;
            match response {
                Response::Continue(_) if continuation => return Ok(None),
                Response::Continue(_) => {
                    return Err(SessionError::Protocol(
                        "unexpected continuation request".into(),
                    ));
                }
                Response::Done {
                    tag: done,
                    status,
                    outcome,
                } => {
                    let done: &str = &done.0;
                    if done != tag && !self.in_flight.contains(done) {
                        return Err(SessionError::Protocol(format!(
                            "answer to a command never sent (tag {done})"
                        )));
                    }
                    let completion = Completion {
                        status,
                        text: status_text(raw),
                        append_uid: match outcome.code {
                            Some(ResponseCode::AppendUid(validity, set)) => Some((validity, set)),
                            _ => None,
                        },
                    };
                    let done = done.to_owned();
                    self.in_flight.remove(&done);
                    if done == tag {
                        return Ok(Some(completion));
                    }
                    self.answered.insert(done, completion);
                }
                mut other => {
                    let large = body_section(&mut other)
                        .and_then(|body| body.as_deref())
                        .and_then(|body| self.framer.literal_of(body))
                        .filter(|&i| self.framer.literal_len(i) >= OWN_BUFFER_BODY);
                    let Some(literal) = large else {
                        on_data(&mut other)?;
                        continue;
                    };
                    // The rest of the response is copied (a few short fields), so that it no
                    // longer borrows the buffer the body is moved out of.
                    *body_section(&mut other).expect("found above") = None;
                    let mut owned = other.into_owned();
                    *body_section(&mut owned).expect("kept by into_owned") =
                        Some(Cow::Owned(self.framer.take_literal(literal)));
                    on_data(&mut owned)?;
                }
            }
        }
    }

    /// Reads one whole response into the framer.
    fn read_response(&mut self) -> Result<(), SessionError> {
        self.framer.clear();
        loop {
            let available = match self.conn.fill_buf() {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err.into()),
            };
            if available.is_empty() {
                return Err(SessionError::Closed);
            }
            let used = self.framer.push(available)?;
            self.conn.consume(used);
            if self.framer.is_complete() {
                let trace = self.conn.trace();
                if trace.shows(Verbosity::Everything) {
                    trace.received(&self.framer.shown());
                }
                return Ok(());
            }
        }
    }
}

/// FETCH records accepted beyond the messages due: those a mailbox announced (EXISTS), or
/// the UIDs asked for.
const FETCH_SLACK: usize = 16;

/// Refuses the `count`th FETCH record when only `due` were (plus a little), `why` saying
/// where that number comes from: a server sending records without end would otherwise fill
/// the memory with them.
fn within_due(count: usize, due: usize, why: &str) -> Result<(), SessionError> {
    if count > due.saturating_add(FETCH_SLACK) {
        return Err(SessionError::Protocol(format!(
            "the server sent {count} FETCH records where {due} were due ({why})"
        )));
    }
    Ok(())
}

/// Notes what a SELECT / EXAMINE response says about the mailbox.
fn note_selected(status: &mut MailboxStatus, response: &Response<'_>) {
    match response {
        Response::MailboxData(MailboxDatum::Exists(n)) => status.exists = *n,
        Response::Data {
            outcome: Outcome {
                code: Some(code), ..
            },
            ..
        } => match code {
            ResponseCode::UidValidity(v) => status.uid_validity = Some(*v),
            ResponseCode::UidNext(n) => status.uid_next = Some(*n),
            ResponseCode::PermanentFlags(flags) => status.permanent_flags = strings(flags),
            _ => {}
        },
        _ => {}
    }
}

/// The index FETCH of [`ImapClient::index_mailboxes`] and [`ImapClient::uid_records`]: UID,
/// size, flags and `items` of the messages of a UID set.
fn index_fetch<'a, 'b>(
    b: &'b mut CommandBuilder<'a>,
    set: &str,
    items: IndexItems<'_>,
) -> &'b mut CommandBuilder<'a> {
    b.text("UID FETCH ")
        .text(set)
        .text(" (UID RFC822.SIZE FLAGS");
    if items.internal_date {
        b.text(" INTERNALDATE");
    }
    if !items.header_fields.is_empty() {
        b.text(" BODY.PEEK[HEADER.FIELDS (");
        for (i, field) in items.header_fields.iter().enumerate() {
            if i > 0 {
                b.text(" ");
            }
            b.astring(field.as_bytes());
        }
        b.text(")]");
    }
    b.text(")")
}

/// A UID FETCH of whole messages.
fn fetch_bodies<'a, 'b>(b: &'b mut CommandBuilder<'a>, set: &str) -> &'b mut CommandBuilder<'a> {
    b.text("UID FETCH ")
        .text(set)
        .text(" (UID FLAGS INTERNALDATE BODY.PEEK[])")
}

/// Each message's flag list, as APPEND sends it.
fn flag_lists(messages: &[AppendMessage<'_>]) -> Result<Vec<String>, SessionError> {
    messages.iter().map(|m| flag_list(m.flags)).collect()
}

/// The APPEND command for `messages` (several make a MULTIAPPEND), with their
/// [`flag_lists`].
fn append_command<'a, 'b>(
    b: &'b mut CommandBuilder<'a>,
    mailbox: &str,
    messages: &[AppendMessage<'a>],
    flags: &[String],
) -> &'b mut CommandBuilder<'a> {
    b.text("APPEND ").mailbox(mailbox);
    for (message, flags) in messages.iter().zip(flags) {
        if flags != "()" {
            b.text(" ").text(flags);
        }
        if let Some(date) = &message.internal_date {
            b.text(" ").text(&format_internal_date(date));
        }
        b.text(" ").literal(message.raw);
    }
    b
}

/// The UIDs an APPEND's completion reports (UIDPLUS), or its refusal. Only a server that
/// offers UIDPLUS vouches for them (Dovecot sends APPENDUID even with UIDPLUS hidden).
fn uids_of(
    completion: Completion,
    messages: usize,
    uidplus: bool,
) -> Result<Vec<MessageUid>, SessionError> {
    // A UID set that does not match the upload is the server's bug; the messages are stored
    // all the same, so report no UIDs rather than an error the caller would retry.
    Ok(completion
        .ok()?
        .append_uid
        .filter(|_| uidplus)
        .and_then(|(uid_validity, set)| {
            let uids = expand_uid_set(&set, messages)?;
            Some(
                uids.into_iter()
                    .map(|uid| MessageUid { uid_validity, uid })
                    .collect(),
            )
        })
        .unwrap_or_default())
}

/// Tracks what any response may carry: capabilities, and BYE, which ends the
/// session whatever the command.
/// The mailbox a STATUS answer names, and what it says.
fn status_answer<'r>(response: &'r Response<'_>) -> Option<(String, &'r [StatusAttribute])> {
    let Response::MailboxData(MailboxDatum::Status { mailbox, status }) = response else {
        return None;
    };
    let named = mutf7::decode(mailbox).unwrap_or_else(|| mailbox.to_string());
    Some((named, status))
}

/// Adds what a STATUS answer says to `summary` (a server may split it over several lines).
fn note_status(summary: &mut FolderStatus, status: &[StatusAttribute]) {
    for item in status {
        match *item {
            StatusAttribute::Messages(n) => summary.messages = n,
            StatusAttribute::UidNext(n) => summary.uid_next = n,
            StatusAttribute::UidValidity(n) => summary.uid_validity = n,
            StatusAttribute::HighestModSeq(n) => summary.highest_modseq = Some(n),
            _ => {}
        }
    }
}

fn observe(state: &mut State, response: &Response<'_>, raw: &[u8]) -> Result<(), SessionError> {
    match response {
        Response::Data {
            status: Status::Bye,
            ..
        } => {
            // The connection is gone, so this is a connection error (retry on a new one) and
            // not a refusal of the command; the text says why.
            return Err(SessionError::Bye(status_text(raw)));
        }
        Response::Capabilities(caps) => state.capabilities = capability_names(caps),
        Response::Data { outcome, .. } | Response::Done { outcome, .. } => {
            if let Some(ResponseCode::Capabilities(caps)) = &outcome.code {
                state.capabilities = capability_names(caps);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The error for a write that failed (`write`), given what reading on after it gave
/// (`last_words`): the server's BYE, as [`observe`] reports one, or its refusal asking to slow
/// down ([`SessionError::Throttled`]), tells more than a broken pipe; anything else does not.
fn after_failed_write(
    last_words: Result<Option<Completion>, SessionError>,
    write: io::Error,
) -> SessionError {
    match last_words {
        Err(bye @ SessionError::Bye(_)) => bye,
        Ok(Some(done)) if done.status != Status::Ok && asks_to_slow_down(&done.text) => {
            SessionError::Throttled(done.text)
        }
        _ => write.into(),
    }
}

fn capability_names(caps: &[imap_proto::Capability<'_>]) -> Vec<String> {
    caps.iter()
        .map(|c| match c {
            imap_proto::Capability::Imap4rev1 => "IMAP4rev1".to_owned(),
            imap_proto::Capability::Auth(mech) => format!("AUTH={mech}"),
            imap_proto::Capability::Atom(atom) => atom.to_string(),
        })
        .collect()
}

fn strings(items: &[std::borrow::Cow<'_, str>]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn to_mailbox(data: &MailboxListData<'_>) -> Mailbox {
    Mailbox {
        name: mutf7::decode(&data.name).unwrap_or_else(|| data.name.to_string()),
        delimiter: data.delimiter.as_ref().and_then(|d| d.chars().next()),
        attributes: data
            .name_attributes
            .iter()
            .map(|a| match a {
                NameAttribute::NoInferiors => "\\Noinferiors".to_owned(),
                NameAttribute::NoSelect => "\\Noselect".to_owned(),
                NameAttribute::Marked => "\\Marked".to_owned(),
                NameAttribute::Unmarked => "\\Unmarked".to_owned(),
                NameAttribute::All => "\\All".to_owned(),
                NameAttribute::Archive => "\\Archive".to_owned(),
                NameAttribute::Drafts => "\\Drafts".to_owned(),
                NameAttribute::Flagged => "\\Flagged".to_owned(),
                NameAttribute::Junk => "\\Junk".to_owned(),
                NameAttribute::Sent => "\\Sent".to_owned(),
                NameAttribute::Trash => "\\Trash".to_owned(),
                NameAttribute::Extension(name) => name.to_string(),
                other => format!("{other:?}"),
            })
            .collect(),
    }
}

/// The parts of a FETCH response both index and message fetches read.
struct FetchParts<'a> {
    uid: Option<u32>,
    size: Option<u32>,
    flags: Vec<String>,
    internal_date: Option<DateTime<FixedOffset>>,
    body: Option<&'a [u8]>,
}

fn fetch_parts<'a>(response: &'a Response<'_>) -> Option<FetchParts<'a>> {
    let Response::Fetch(_, attributes) = response else {
        return None;
    };
    let mut parts = FetchParts {
        uid: None,
        size: None,
        flags: Vec::new(),
        internal_date: None,
        body: None,
    };
    for attribute in attributes {
        match attribute {
            AttributeValue::Uid(uid) => parts.uid = Some(*uid),
            AttributeValue::Rfc822Size(size) => parts.size = Some(*size),
            AttributeValue::Flags(flags) => parts.flags = strings(flags),
            AttributeValue::InternalDate(date) => parts.internal_date = parse_internal_date(date),
            AttributeValue::BodySection { data, .. } => {
                parts.body = Some(data.as_deref().unwrap_or_default());
            }
            _ => {}
        }
    }
    Some(parts)
}

/// A FETCH without RFC822.SIZE is an unsolicited flag update, not part of the index.
fn index_record<'a>(response: &'a Response<'_>) -> Option<IndexRecord<'a>> {
    let parts = fetch_parts(response)?;
    Some(IndexRecord {
        uid: parts.uid?,
        size: u64::from(parts.size?),
        flags: parts.flags,
        internal_date: parts.internal_date,
        header: parts.body.unwrap_or_default(),
    })
}

/// A FETCH without a body is an unsolicited flag update, not a fetched message; nor is one
/// whose body is NIL, which some servers send for a message expunged meanwhile: uploading it
/// would store an empty message. The body is taken out of the response: moved when the
/// response owns it.
fn fetched_message<'a>(response: &mut Response<'a>) -> Option<FetchedMessage<'a>> {
    let parts = fetch_parts(response)?;
    let (uid, flags, internal_date) = (parts.uid?, parts.flags, parts.internal_date);
    let raw = body_section(response)?.take()?;
    Some(FetchedMessage {
        uid,
        raw,
        flags,
        internal_date,
    })
}

/// The data of a FETCH's body section (`BODY[…]`), when the response has one.
fn body_section<'r, 'a>(response: &'r mut Response<'a>) -> Option<&'r mut Option<Cow<'a, [u8]>>> {
    let Response::Fetch(_, attributes) = response else {
        return None;
    };
    attributes.iter_mut().find_map(|attribute| match attribute {
        AttributeValue::BodySection { data, .. } => Some(data),
        _ => None,
    })
}

/// The UIDs of an APPENDUID set, when it names exactly `expected` of them.
fn expand_uid_set(set: &[UidSetMember], expected: usize) -> Option<Vec<u32>> {
    let mut uids = Vec::with_capacity(expected);
    for member in set {
        // A range may come in either order (RFC 4315: "regardless of order").
        let (first, last) = match member {
            UidSetMember::Uid(uid) => (*uid, *uid),
            UidSetMember::UidRange(range) => {
                let (a, b) = (*range.start(), *range.end());
                (a.min(b), a.max(b))
            }
        };
        // Checked before expanding: a hostile `1:4294967295` must not allocate.
        if uids.len() + (last - first) as usize >= expected {
            return None;
        }
        uids.extend(first..=last);
    }
    (uids.len() == expected).then_some(uids)
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;
    use crate::trace::Captured;

    /// A one-connection IMAP server on loopback greeting with `capabilities` and accepting
    /// any login: `+` to AUTHENTICATE and to a synchronizing literal, OK to the rest.
    fn fake_server(capabilities: &'static str) -> u16 {
        fake_server_answering(capabilities, "+ ")
    }

    /// [`fake_server`] answering `AUTHENTICATE PLAIN` with `authenticate`: a continuation
    /// (`+ `), or a completion (`BAD …`, `NO …`) under the command's tag.
    fn fake_server_answering(capabilities: &'static str, authenticate: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut writer = stream.try_clone().unwrap();
            let _ = write!(writer, "* OK [CAPABILITY {capabilities}] hi\r\n");
            let mut reader = BufReader::new(stream);
            let mut tag = String::new();
            loop {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                let starts_command = line.starts_with('m') && line.contains(' ');
                if starts_command {
                    tag = line.split(' ').next().unwrap().to_owned();
                }
                let answer = if line.contains(" AUTHENTICATE PLAIN") {
                    match authenticate.strip_prefix('+') {
                        Some(_) if !line.ends_with(" AUTHENTICATE PLAIN") => {
                            format!("{tag} OK [CAPABILITY IMAP4rev1] done\r\n")
                        }
                        Some(_) => format!("{authenticate}\r\n"),
                        None => format!("{tag} {authenticate}\r\n"),
                    }
                } else if line.ends_with('}') {
                    "+ \r\n".to_owned()
                } else {
                    format!("{tag} OK [CAPABILITY IMAP4rev1] done\r\n")
                };
                let _ = writer.write_all(answer.as_bytes());
            }
        });
        port
    }

    fn traced_login(capabilities: &'static str, login: &Login<'_>) -> String {
        let (address, captured) = Captured::loopback(fake_server(capabilities));
        let tls = TlsConfig::new(&Default::default()).unwrap();
        let mut client = ImapClient::connect(&address, TlsMode::Plain, &tls).unwrap();
        client.login(login).unwrap();
        captured.text()
    }

    #[test]
    fn the_trace_shows_login_and_authenticate_without_secrets() {
        let password = "pw-secret-2";
        let plain = Login::plain("alice", password);
        let text = traced_login("IMAP4rev1", &plain);
        assert!(text.contains(" C: m1 LOGIN alice <redacted>\n"), "{text}");
        assert!(text.contains(" S: m1 OK "), "{text}");
        assert!(!text.contains(password), "{text}");

        // An 8-bit password goes as a synchronizing literal: neither it nor its length shows.
        let text = traced_login("IMAP4rev1", &Login::plain("alice", "pässwörd-3"));
        assert!(text.contains(" C: m1 LOGIN alice \n"), "{text}");
        assert!(text.contains(" C: <redacted>\n"), "{text}");
        assert!(
            !text.contains("pässwörd") && !text.contains("{12}"),
            "{text}"
        );

        // AUTHENTICATE without SASL-IR: the response follows the server's `+`.
        let text = traced_login("IMAP4rev1 AUTH=PLAIN", &plain);
        assert!(text.contains(" C: m1 AUTHENTICATE PLAIN\n"), "{text}");
        assert!(text.contains(" C: <redacted>\n"), "{text}");
        assert!(!text.contains(&plain.sasl_plain()), "{text}");
        let text = traced_login("IMAP4rev1 SASL-IR AUTH=PLAIN", &plain);
        assert!(
            text.contains(" C: m1 AUTHENTICATE PLAIN <redacted>\n"),
            "{text}"
        );
        assert!(!text.contains(&plain.sasl_plain()), "{text}");
    }

    /// Logs in as alice on a server answering AUTHENTICATE PLAIN with `authenticate`, with the
    /// listing behind the login or without: the outcome and the trace.
    fn login_answered(
        capabilities: &'static str,
        authenticate: &'static str,
        list_too: bool,
    ) -> (Result<(), SessionError>, String) {
        let port = fake_server_answering(capabilities, authenticate);
        let (address, captured) = Captured::loopback(port);
        let tls = TlsConfig::new(&Default::default()).unwrap();
        let mut client = ImapClient::connect(&address, TlsMode::Plain, &tls).unwrap();
        let login = Login::plain("alice", "pw-secret-4");
        let outcome = match list_too {
            true => client.login_and_list(&login, &[]),
            false => client.login(&login),
        };
        (outcome, captured.text())
    }

    #[test]
    fn authenticate_plain_refused_as_a_command_falls_back_to_login_and_a_no_does_not() {
        for list_too in [false, true] {
            let bad = "BAD [CLIENTBUG] Unsupported mechanism";
            let (outcome, text) = login_answered("IMAP4rev1 SASL-IR AUTH=PLAIN", bad, list_too);
            assert!(outcome.is_ok(), "{outcome:?}");
            assert!(text.contains(" LOGIN alice <redacted>\n"), "{text}");
            assert!(!text.contains("pw-secret-4"), "{text}");

            // The server's verdict on the password is final: it is not tried again.
            let no = "NO [AUTHENTICATIONFAILED] Authentication failed";
            let (outcome, text) = login_answered("IMAP4rev1 SASL-IR AUTH=PLAIN", no, list_too);
            assert!(
                matches!(outcome, Err(SessionError::LoginRefused(_))),
                "{outcome:?}"
            );
            assert!(!text.contains("LOGIN alice"), "{text}");

            // Nor is LOGIN sent where the server disabled it.
            let caps = "IMAP4rev1 SASL-IR AUTH=PLAIN LOGINDISABLED";
            let (outcome, text) = login_answered(caps, bad, list_too);
            assert!(outcome.is_err(), "{outcome:?}");
            assert!(!text.contains("LOGIN alice"), "{text}");
        }
    }

    /// A one-connection server on loopback greeting with SASL-IR and AUTH=PLAIN that answers
    /// each burst of command lines it reads with `answer(lines)`, once those are all in (or,
    /// after a 300 ms pause, what came).
    fn scripted_server(answer: fn(&[String]) -> String) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut writer = stream.try_clone().unwrap();
            let _ = write!(
                writer,
                "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] hi\r\n"
            );
            let mut reader = BufReader::new(stream);
            let started = std::time::Instant::now();
            let mut burst = Vec::new();
            while started.elapsed() < Duration::from_secs(20) {
                let mut line = String::new();
                match std::io::BufRead::read_line(&mut reader, &mut line) {
                    Ok(0) => return,
                    Ok(_) => burst.push(line.trim_end().to_owned()),
                    Err(_) if burst.is_empty() => {}
                    Err(_) => {
                        let _ = writer.write_all(answer(&std::mem::take(&mut burst)).as_bytes());
                    }
                }
            }
        });
        port
    }

    fn listed_at_login(
        answer: fn(&[String]) -> String,
    ) -> (Result<MailboxList, SessionError>, String) {
        let (address, captured) = Captured::loopback(scripted_server(answer));
        let tls = TlsConfig::new(&Default::default()).unwrap();
        let mut client = ImapClient::connect(&address, TlsMode::Plain, &tls).unwrap();
        let listed = client
            .login_and_list(&Login::plain("alice", "pw"), &[])
            .and_then(|()| client.list());
        (listed, captured.text())
    }

    /// The tag of the command on a line.
    fn tag(line: &str) -> &str {
        line.split(' ').next().unwrap()
    }

    /// A server that answers STATUS asked behind the login (in one burst with it) with other
    /// numbers than STATUS asked later, and refuses the login burst's STATUS of Sent.
    fn summarising_server(lines: &[String]) -> String {
        let mut out = String::new();
        for line in lines {
            let tag = tag(line);
            let answer = match line.split_once(' ').unwrap().1 {
                command if command.starts_with("AUTHENTICATE") => {
                    "OK [CAPABILITY IMAP4rev1 CONDSTORE] in"
                }
                // Asked at the login: INBOX is answered, Sent refused.
                command if command.starts_with("STATUS INBOX") && lines.len() > 1 => {
                    "* STATUS INBOX (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 7 HIGHESTMODSEQ 9)\r\nOK"
                }
                // Asked later: INBOX has changed since.
                command if command.starts_with("STATUS INBOX") => {
                    "* STATUS INBOX (MESSAGES 4 UIDNEXT 5 UIDVALIDITY 7 HIGHESTMODSEQ 10)\r\nOK"
                }
                command if command.starts_with("STATUS Sent") && lines.len() > 1 => "NO busy",
                command if command.starts_with("STATUS Sent") => {
                    "* STATUS Sent (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 5 HIGHESTMODSEQ 6)\r\nOK"
                }
                command if command.starts_with("LIST") => "* LIST () \".\" INBOX\r\nOK",
                _ => "OK",
            };
            match answer.rsplit_once("\r\n") {
                Some((data, status)) => out.push_str(&format!("{data}\r\n{tag} {status}\r\n")),
                None => out.push_str(&format!("{tag} {answer}\r\n")),
            }
        }
        out
    }

    /// A session logged in to [`summarising_server`] with INBOX and Sent summarised at login.
    fn summarised_at_login() -> (ImapClient, Captured, [String; 2]) {
        let (address, captured) = Captured::loopback(scripted_server(summarising_server));
        let tls = TlsConfig::new(&Default::default()).unwrap();
        let mut client = ImapClient::connect(&address, TlsMode::Plain, &tls).unwrap();
        let folders = ["INBOX".to_owned(), "Sent".to_owned()];
        client
            .login_and_list(&Login::plain("alice", "pw"), &folders)
            .unwrap();
        (client, captured, folders)
    }

    fn summary(
        messages: u32,
        uid_next: u32,
        uid_validity: u32,
        modseq: u64,
    ) -> Option<FolderStatus> {
        Some(FolderStatus {
            messages,
            uid_next,
            uid_validity,
            highest_modseq: Some(modseq),
        })
    }

    #[test]
    fn summaries_asked_behind_the_login_answer_the_next_summaries_and_nothing_later() {
        let (mut client, captured, folders) = summarised_at_login();
        let first = client.change_summaries(&folders).unwrap();
        assert_eq!(first, [summary(3, 4, 7, 9), summary(1, 2, 5, 6)]);
        let again = client.change_summaries(&folders[..1]).unwrap();
        assert_eq!(again, [summary(4, 5, 7, 10)]);
        let text = captured.text();
        let sent: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split_once("] C: ").map(|(_, command)| command))
            .collect();
        let asked = |what: &str| sent.iter().filter(|c| c.contains(what)).count();
        assert_eq!(asked(" STATUS INBOX "), 2, "{text}");
        assert_eq!(asked(" STATUS Sent "), 2, "{text}");
        let at = |what: &str| sent.iter().position(|c| c.contains(what)).unwrap();
        assert!(at(" STATUS INBOX ") < at(" LIST "), "{text}");
    }

    #[test]
    fn summaries_asked_behind_the_login_are_forgotten_once_another_command_is_sent() {
        // A command waited for, and one pipelined.
        let others: [fn(&mut ImapClient); 2] = [
            |client| drop(client.select("INBOX", true).unwrap()),
            |client| {
                drop(client.uid_records(&[("INBOX", &[1], &[])], IndexItems::default(), |_, _| {}))
            },
        ];
        for other in others {
            let (mut client, _captured, folders) = summarised_at_login();
            other(&mut client);
            let after = client.change_summaries(&folders[..1]).unwrap();
            assert_eq!(after, [summary(4, 5, 7, 10)]);
        }
    }

    #[test]
    fn a_folder_named_twice_gets_its_summary_twice() {
        let (mut client, _captured, _) = summarised_at_login();
        let names = ["Sent", "INBOX", "Sent"].map(String::from);
        let sent = summary(1, 2, 5, 6);
        let summaries = client.change_summaries(&names).unwrap();
        assert_eq!(summaries, [sent, summary(3, 4, 7, 9), sent]);
    }

    #[test]
    fn a_listing_behind_the_login_is_taken_whatever_order_the_answers_come_in() {
        // All three at once, the LIST's lines first (RFC 3501 §5.5 allows it), and a
        // NAMESPACE answer from a server whose capabilities after the login do not have it.
        let (listed, text) = listed_at_login(|lines| {
            let mut out = String::new();
            if lines.len() == 3 {
                out.push_str("* LIST () \".\" INBOX\r\n* LIST () \".\" INBOX.Sent\r\n");
                out.push_str("* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\n");
            }
            for line in lines {
                out.push_str(&format!(
                    "{} OK [CAPABILITY IMAP4rev1 SASL-IR] done\r\n",
                    tag(line)
                ));
            }
            out
        });
        let listed = listed.unwrap_or_else(|e| panic!("{e}:\n{text}"));
        let names: Vec<&str> = listed.mailboxes.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["INBOX", "INBOX.Sent"], "{text}");
        assert_eq!(
            listed.personal,
            Namespace::default(),
            "not advertised: {text}"
        );
        let asked = text
            .lines()
            .filter(|l| l.contains(" C: ") && l.contains(" LIST "));
        assert_eq!(asked.count(), 1, "listed once: {text}");
    }

    #[test]
    fn a_server_that_drops_what_came_behind_the_login_is_not_pipelined() {
        let (listed, text) = listed_at_login(|lines| {
            format!(
                "{} OK [CAPABILITY IMAP4rev1 NAMESPACE] done\r\n",
                tag(&lines[0])
            )
        });
        assert!(
            matches!(listed, Err(SessionError::NotPipelined(_))),
            "{listed:?}:\n{text}"
        );
    }

    #[test]
    fn uid_sets_expand_only_when_they_match() {
        let set = [UidSetMember::UidRange(3..=5), UidSetMember::Uid(9)];
        assert_eq!(expand_uid_set(&set, 4), Some(vec![3, 4, 5, 9]));
        assert_eq!(expand_uid_set(&set, 3), None);
        assert_eq!(
            expand_uid_set(&[UidSetMember::UidRange(1..=u32::MAX)], 2),
            None
        );
        let reversed = UidSetMember::UidRange(std::ops::RangeInclusive::new(5, 3));
        assert_eq!(expand_uid_set(&[reversed], 3), Some(vec![3, 4, 5]));
    }

    #[test]
    fn index_records_need_uid_and_size() {
        let raw = b"* 1 FETCH (FLAGS (\\Seen) UID 4)\r\n";
        let (_, response) = Response::parse(raw).unwrap();
        assert!(index_record(&response).is_none());
        let raw = b"* 1 FETCH (UID 4 RFC822.SIZE 10 FLAGS () INTERNALDATE \"01-Jan-2020 00:00:00 +0000\")\r\n";
        let (_, response) = Response::parse(raw).unwrap();
        let record = index_record(&response).unwrap();
        assert_eq!((record.uid, record.size, record.header), (4, 10, &b""[..]));
        assert!(record.internal_date.is_some());
    }

    #[test]
    fn only_a_fetch_with_body_bytes_is_a_fetched_message() {
        let fetched = |raw: &[u8]| {
            let (_, mut response) = Response::parse(raw).unwrap();
            fetched_message(&mut response).map(|m| (m.uid, m.raw.into_owned()))
        };
        assert_eq!(
            fetched(b"* 1 FETCH (UID 4 BODY[] {2}\r\nhi)\r\n"),
            Some((4, b"hi".to_vec()))
        );
        assert_eq!(fetched(b"* 1 FETCH (UID 4 BODY[] NIL)\r\n"), None);
        assert_eq!(fetched(b"* 1 FETCH (UID 4 FLAGS (\\Seen))\r\n"), None);
    }

    #[test]
    fn an_untagged_bye_ends_the_session_as_a_broken_connection() {
        let raw = b"* BYE Too many connections from your IP\r\n";
        let (_, response) = Response::parse(raw).unwrap();
        let mut state = State::default();
        match observe(&mut state, &response, raw) {
            Err(SessionError::Bye(said)) => {
                assert!(said.contains("Too many connections"), "{said}");
            }
            other => panic!("a BYE must break the session: {other:?}"),
        }
    }

    #[test]
    fn a_failed_write_is_what_the_server_said_before_closing() {
        let broken_pipe = || io::Error::new(io::ErrorKind::BrokenPipe, "Broken pipe");
        let answered = |status, text: &str| {
            Ok(Some(Completion {
                status,
                text: text.into(),
                append_uid: None,
            }))
        };

        let raw = b"* BYE Server shutting down.\r\n";
        let (_, response) = Response::parse(raw).unwrap();
        let bye = observe(&mut State::default(), &response, raw).unwrap_err();
        match after_failed_write(Err(bye), broken_pipe()) {
            SessionError::Bye(said) => assert!(said.contains("Server shutting down."), "{said}"),
            other => panic!("a BYE read after a failed write must count as one: {other:?}"),
        }

        for text in ["[UNAVAILABLE] Try again later", "[THROTTLED] Slow down"] {
            match after_failed_write(answered(Status::No, text), broken_pipe()) {
                SessionError::Throttled(said) => assert_eq!(said, text),
                other => panic!("{text}: {other:?}"),
            }
        }

        // Anything else says no more than the broken pipe: a refusal that no wait changes,
        // nothing at all, or a connection that ends without a word.
        for last_words in [
            answered(Status::No, "[OVERQUOTA] Quota exceeded"),
            Err(SessionError::Timeout),
            Err(SessionError::Closed),
        ] {
            match after_failed_write(last_words, broken_pipe()) {
                SessionError::Io(err) => assert_eq!(err.kind(), io::ErrorKind::BrokenPipe),
                other => panic!("{other:?}"),
            }
        }
    }
}
