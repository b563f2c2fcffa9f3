//! Server URLs (`pop3s://user@host:port/Folder`) and where each side's password comes from.

use std::fmt;
use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use percent_encoding::percent_decode_str;

use crate::error::Error;
use crate::net::TlsMode;

/// The mail protocol of an endpoint, or the format of a store on local disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// POP3 (RFC 1939).
    Pop3,
    /// IMAP4rev1 (RFC 3501).
    Imap,
    /// A Maildir on local disk (`maildir:PATH`).
    Maildir,
    /// mbox on local disk (`mbox:FILE`, or `mbox:DIR/` for a file per folder).
    Mbox,
}

impl Protocol {
    /// Whether the store is on local disk: no host, no login.
    pub fn is_local(self) -> bool {
        matches!(self, Protocol::Maildir | Protocol::Mbox)
    }
}

/// Which side of the job an endpoint is on; used to name the right options in hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server mail is read from (`--from`).
    From,
    /// The server mail is written to (`--to`).
    To,
}

impl Side {
    /// `from` or `to`, as in the option names.
    pub fn word(self) -> &'static str {
        match self {
            Side::From => "from",
            Side::To => "to",
        }
    }

    /// The side across the copy.
    pub fn other(self) -> Side {
        match self {
            Side::From => Side::To,
            Side::To => Side::From,
        }
    }
}

/// A parsed server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// POP3 or IMAP.
    pub protocol: Protocol,
    /// Implicit TLS or STARTTLS (the scheme decides; `--allow-plaintext` may relax it later).
    pub tls_mode: TlsMode,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port (the scheme's default when the URL has none).
    pub port: u16,
    /// Login name, percent-decoded.
    pub user: String,
    /// The folder in the URL's path, percent-decoded; `None` when the path is empty.
    pub folder: Option<String>,
    /// A local store's directory or file (`maildir:`, `mbox:`); `None` for a server.
    pub path: Option<PathBuf>,
}

impl Endpoint {
    /// Parses `scheme://user@host[:port][/folder]`, or a local store: `maildir:///abs/path`,
    /// `maildir:relative/path`, `mbox:///file.mbox`, `mbox:///dir/`.
    pub fn parse(url: &str) -> Result<Self, Error> {
        if let Some(local) = Self::parse_local(url)? {
            return Ok(local);
        }
        let bad = |why: &str| {
            Error::Usage {
            message: format!("invalid server URL {}: {why}", redact_url(url)),
            hint: Some("write it as pop3s://USER@HOST[:PORT] or imaps://USER@HOST[:PORT]/FOLDER (user %-encoded, e.g. alice%40example.com; IPv6 in brackets, [::1])".into()),
        }
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (protocol, tls_mode, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "pop3" => (Protocol::Pop3, TlsMode::StartTls, 110),
            "pop3s" => (Protocol::Pop3, TlsMode::Implicit, 995),
            "imap" => (Protocol::Imap, TlsMode::StartTls, 143),
            "imaps" => (Protocol::Imap, TlsMode::Implicit, 993),
            _ => return Err(bad("the scheme must be pop3, pop3s, imap or imaps")),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| bad("no user name (USER@HOST)"))?;
        if userinfo.contains(':') {
            return Err(Error::Usage {
                message: format!(
                    "the URL {} contains a password; mailferry does not take passwords on the command line",
                    redact_url(url)
                ),
                hint: Some("put it in MAILFERRY_FROM_PASSWORD / MAILFERRY_TO_PASSWORD, a --*-password-file or a --*-password-command".into()),
            });
        }
        let user =
            decode(userinfo).ok_or_else(|| bad("the user name is not valid %-encoded UTF-8"))?;
        if user.is_empty() {
            return Err(bad("the user name is empty"));
        }
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("bad host or port"))?;
        let folder = decode(path.trim_end_matches('/'))
            .ok_or_else(|| bad("the folder is not valid %-encoded UTF-8"))?;
        Ok(Endpoint {
            protocol,
            tls_mode,
            host,
            port: port.unwrap_or(default_port),
            user,
            folder: (!folder.is_empty()).then_some(folder),
            path: None,
        })
    }

    /// A `maildir:` or `mbox:` URL; `None` for any other scheme.
    fn parse_local(url: &str) -> Result<Option<Self>, Error> {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Ok(None);
        };
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "maildir" => Protocol::Maildir,
            "mbox" => Protocol::Mbox,
            _ => return Ok(None),
        };
        // `maildir:///abs` names /abs; `maildir:rel` a path relative to the working directory.
        let path = match rest.strip_prefix("//") {
            Some(absolute) if absolute.starts_with('/') => absolute,
            Some(_) => {
                return Err(Error::Usage {
                    message: format!("invalid store URL {url}: a host is not allowed here"),
                    hint: Some(format!(
                        "write {scheme}:///absolute/path or {scheme}:relative/path"
                    )),
                });
            }
            None => rest,
        };
        if path.is_empty() {
            return Err(Error::Usage {
                message: format!("invalid store URL {url}: no path"),
                hint: Some(format!(
                    "write {scheme}:///absolute/path or {scheme}:relative/path"
                )),
            });
        }
        Ok(Some(Endpoint {
            protocol,
            tls_mode: TlsMode::Plain,
            host: String::new(),
            port: 0,
            user: String::new(),
            folder: None,
            path: Some(PathBuf::from(path)),
        }))
    }
}

/// The URL as shown to users: no password, default parts filled in.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (self.protocol, self.tls_mode) {
            (Protocol::Pop3, TlsMode::Implicit) => "pop3s",
            (Protocol::Pop3, _) => "pop3",
            (Protocol::Imap, TlsMode::Implicit) => "imaps",
            (Protocol::Imap, _) => "imap",
            (Protocol::Maildir, _) => "maildir",
            (Protocol::Mbox, _) => "mbox",
        };
        if let Some(path) = &self.path {
            let slashes = if path.is_absolute() { "//" } else { "" };
            return write!(f, "{scheme}:{slashes}{}", path.display());
        }
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{}@{host}:{}", self.user, self.port)?;
        match &self.folder {
            Some(folder) => write!(f, "/{folder}"),
            None => Ok(()),
        }
    }
}

fn decode(text: &str) -> Option<String> {
    percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn split_host_port(hostport: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        // Only `:PORT` may follow the `]`. Anything else used to be dropped silently, so
        // `[::1]993` meant the default port. Found by fuzzing.
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match hostport.rsplit_once(':') {
            // An IPv6 address needs brackets: `u@::1` would otherwise read as host `:`, port 1.
            Some((host, _)) if host.contains(':') => return None,
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    // No brackets in a host name: `u@:0:][14:13` parsed as host `:0:][14`, which displays as
    // `[:0:][14]:13` and so reads back as another endpoint. Found by fuzzing.
    if host.is_empty() || host.contains(['/', ' ', '@', '[', ']']) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0)?),
        None => None,
    };
    Some((canonical_host(host), port))
}

/// One spelling per host, so that two spellings of one account share a mirror's lock and
/// state: names in lower case (DNS and certificate names ignore case), addresses as the
/// standard library writes them (`::0:1` is `::1`).
fn canonical_host(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(address) => address.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

/// Hides whatever follows a `:` in the URL's user part, so a URL with a password can be
/// quoted in an error without leaking it (also when the `@` and host are missing).
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let userinfo_end = authority.rfind('@').unwrap_or(authority.len());
    match authority[..userinfo_end].split_once(':') {
        Some((user, _)) if authority.contains('@') => format!(
            "{}{user}:***{}",
            &url[..scheme_end],
            &url[scheme_end + userinfo_end..]
        ),
        // Without an `@`, `host:993` is a port, but `user:secret` may be a password.
        Some((_, port)) if port.bytes().all(|b| b.is_ascii_digit()) => url.to_owned(),
        Some((user, _)) => format!("{}{user}:***", &url[..scheme_end]),
        None => url.to_owned(),
    }
}

/// A password, kept out of `Debug` output so it cannot end up in a log or a panic message.
/// The default is empty: the password of a store that takes no login.
#[derive(Clone, Default)]
pub struct Password(String);

impl Password {
    /// A password given as it is, for unit tests.
    #[cfg(test)]
    pub(crate) fn given(secret: &str) -> Self {
        Password(secret.to_owned())
    }

    /// The secret itself, for the login command only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Where one side's password comes from, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct PasswordSource {
    /// `--{from,to}-password-file`: the first line of the file.
    pub file: Option<PathBuf>,
    /// `--{from,to}-password-command`: the first line of the command's output (run by `sh -c`).
    pub command: Option<String>,
    /// Whether to ask on the terminal as a last resort (not for batches of accounts).
    pub prompt: bool,
}

impl PasswordSource {
    /// Finds the password: the file, else the command, else `MAILFERRY_{FROM,TO}_PASSWORD`,
    /// else a prompt when allowed and stdin is a terminal.
    pub fn resolve(&self, side: Side, endpoint: &Endpoint) -> Result<Password, Error> {
        let word = side.word();
        let env_var = password_variable(side);
        let missing_hint = format!(
            "set {env_var}, or pass --{word}-password-file FILE or --{word}-password-command CMD"
        );
        let secret = if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Usage {
                message: format!(
                    "cannot read the {word} password file {}: {e}",
                    path.display()
                ),
                hint: None,
            })?;
            first_line(&text)
        } else if let Some(command) = &self.command {
            run_secret_command(command, side)?
        } else if let Ok(value) = std::env::var(&env_var) {
            value
        } else if self.prompt && std::io::stdin().is_terminal() {
            rpassword::prompt_password(format!("Password for {endpoint}: ")).map_err(|e| {
                Error::Usage {
                    message: format!("cannot read the {word} password from the terminal: {e}"),
                    hint: None,
                }
            })?
        } else {
            return Err(Error::Usage {
                message: format!("no password for {endpoint}"),
                hint: Some(missing_hint),
            });
        };
        if secret.is_empty() {
            return Err(Error::Usage {
                message: format!("the password for {endpoint} is empty"),
                hint: Some(missing_hint),
            });
        }
        Ok(Password(secret))
    }

    /// A warning when the password file can be read by others than its owner (any group or
    /// other permission bit), with the command that fixes it.
    pub fn permission_warning(&self, side: Side) -> Option<String> {
        let path = self.file.as_deref()?;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o077 != 0).then(|| {
            format!(
                "the {} password file {} is readable by others (mode {:o}); run chmod 600 on it",
                side.word(),
                path.display(),
                mode & 0o777
            )
        })
    }
}

/// The environment variable holding one side's password.
fn password_variable(side: Side) -> String {
    format!("MAILFERRY_{}_PASSWORD", side.word().to_ascii_uppercase())
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// Runs a password or token command (`sh -c`) and returns the first line it prints. The
/// command does not see the other side's password variable: a helper written for one server
/// has no business with the other server's secret.
pub fn run_secret_command(command: &str, side: Side) -> Result<String, Error> {
    let word = side.word();
    let failed = |why: String| Error::Usage {
        message: format!("the {word} password or token command failed: {why}"),
        hint: Some(
            "run the command by hand; its first output line must be the password or token".into(),
        ),
    };
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env_remove(password_variable(side.other()))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(output.status.to_string()));
    }
    let text =
        String::from_utf8(output.stdout).map_err(|_| failed("its output is not UTF-8".into()))?;
    Ok(first_line(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn local_stores_take_an_absolute_or_a_relative_path_and_print_it_back() {
        let absolute = Endpoint::parse("maildir:///var/backup/alice").unwrap();
        assert_eq!(absolute.protocol, Protocol::Maildir);
        assert_eq!(
            absolute.path.as_deref(),
            Some(Path::new("/var/backup/alice"))
        );
        assert_eq!(absolute.to_string(), "maildir:///var/backup/alice");
        let relative = Endpoint::parse("MBOX:backup/").unwrap();
        assert_eq!(relative.protocol, Protocol::Mbox);
        assert_eq!(relative.to_string(), "mbox:backup/");
        assert!(relative.protocol.is_local());
        for bad in ["maildir:", "maildir://host/path", "mbox://"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_the_issue_examples() {
        let from = Endpoint::parse("pop3s://alice@mail.old.example:995").unwrap();
        assert_eq!(
            from,
            Endpoint {
                protocol: Protocol::Pop3,
                tls_mode: TlsMode::Implicit,
                host: "mail.old.example".into(),
                port: 995,
                user: "alice".into(),
                folder: None,
                path: None,
            }
        );
        let to = Endpoint::parse("imaps://alice%40new.example@mail.new.example:993/INBOX").unwrap();
        assert_eq!(to.user, "alice@new.example");
        assert_eq!(to.folder.as_deref(), Some("INBOX"));
        assert_eq!(
            to.to_string(),
            "imaps://alice@new.example@mail.new.example:993/INBOX"
        );
    }

    #[test]
    fn default_ports_and_starttls_for_plain_schemes() {
        for (url, port, mode) in [
            ("pop3://u@h", 110, TlsMode::StartTls),
            ("pop3s://u@h", 995, TlsMode::Implicit),
            ("imap://u@h", 143, TlsMode::StartTls),
            ("IMAPS://u@h/", 993, TlsMode::Implicit),
        ] {
            let e = Endpoint::parse(url).unwrap();
            assert_eq!((e.port, e.tls_mode, e.folder), (port, mode, None), "{url}");
        }
    }

    #[test]
    fn folders_and_ipv6_hosts() {
        let e = Endpoint::parse("imap://u@[::1]:1143/Archive/2019%20Q1").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.port, 1143);
        assert_eq!(e.folder.as_deref(), Some("Archive/2019 Q1"));
        let e = Endpoint::parse("imaps://u@h/Donn%C3%A9es").unwrap();
        assert_eq!(e.folder.as_deref(), Some("Données"));
    }

    #[test]
    fn rejects_bad_urls_as_usage_errors() {
        for url in [
            "mail.example.com",
            "http://u@h",
            "imaps://h",
            "imaps://@h",
            "imaps://u@h:99999",
            "imaps://u@h:0",
            "imaps://u@h:abc",
            "imaps://u@:993",
            "imaps://u%ff@h",
            "imap://u@::1",
            "imaps://u@fe80::1/INBOX",
            // Found by fuzzing: junk after `]`, and brackets inside a host name.
            "imaps://u@[::1]993",
            "imaps://u@[::1]x:993",
            "imap://u@:0:][14:13/Archive/2019%20Q1",
            "imap://u@[:0:][14]:13",
            "imaps://u@a[b",
            "imaps://u@[[::1]]",
        ] {
            let err = Endpoint::parse(url).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{url}");
        }
    }

    #[test]
    fn display_reads_back_as_the_same_endpoint() {
        for url in [
            "imap://u@[::1]:1143/Archive/2019%20Q1",
            "imaps://alice%40new.example@mail.new.example/INBOX",
            "pop3://u@[localhost]",
            "pop3s://u@h:1",
        ] {
            let endpoint = Endpoint::parse(url).unwrap();
            assert_eq!(Endpoint::parse(&endpoint.to_string()).unwrap(), endpoint);
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_not_echoed() {
        let err = Endpoint::parse("imaps://u:hunter2@h").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(!err.to_string().contains("hunter2"), "{err}");
        for url in [
            "ftp://u:hunter2@h",
            "pop3s://u:hunter2",
            "imaps://u:hunter2@h:99999/x",
        ] {
            let err = Endpoint::parse(url).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = Password("hunter2".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn a_password_file_others_can_read_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "secret\n").unwrap();
        let source = PasswordSource {
            file: Some(path.clone()),
            ..PasswordSource::default()
        };
        for (mode, warned) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let warning = source.permission_warning(Side::From);
            assert_eq!(warning.is_some(), warned, "{mode:o}");
            if let Some(warning) = warning {
                assert!(warning.contains("chmod 600"), "{warning}");
                assert!(!warning.contains("secret"), "{warning}");
            }
        }
        assert_eq!(PasswordSource::default().permission_warning(Side::To), None);
    }

    #[test]
    fn spellings_of_one_account_are_one_endpoint() {
        let written = [
            "imaps://Alice@Mail.Example.ORG/INBOX",
            "IMAPS://Alice@mail.example.org:993/INBOX",
            "imaps://Alice@MAIL.example.org:993/INBOX/",
        ];
        let parsed = written.map(|url| Endpoint::parse(url).unwrap());
        assert!(parsed.iter().all(|e| *e == parsed[0]), "{parsed:?}");
        assert_eq!(
            parsed[0].to_string(),
            "imaps://Alice@mail.example.org:993/INBOX"
        );
        let v6 =
            ["imap://u@[::0:1]", "imap://u@[0:0::1]:143"].map(|url| Endpoint::parse(url).unwrap());
        assert_eq!((v6[0].host.as_str(), &v6[0]), ("::1", &v6[1]));
        // The user name is the server's to compare: it keeps its case.
        assert_ne!(
            Endpoint::parse("imaps://alice@h").unwrap(),
            Endpoint::parse("imaps://Alice@h").unwrap()
        );
    }
}
