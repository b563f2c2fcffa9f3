//! Who logs in, and on whose behalf: plain logins and master-user (proxy) logins, and the
//! SASL messages both protocols send (PLAIN, RFC 4616; CRAM-MD5, RFC 2195; the OAuth ones).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;

/// How one side logs in (`--from-auth`, `--to-auth`, the `from_auth`/`to_auth` columns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// As the URL's user, with that user's password.
    #[default]
    User,
    /// As an administrator on behalf of the URL's user (`master:ADMIN`): the password is the
    /// administrator's.
    Master {
        /// The administrator's login name.
        admin: String,
    },
    /// With an OAuth 2.0 access token instead of a password (`xoauth2`, `oauthbearer`).
    OAuth2(OAuthMechanism),
    /// As the URL's user with CRAM-MD5 (`cram-md5`): the password never crosses the wire,
    /// which matters only without TLS. Used only when chosen, since it needs the server to
    /// keep plaintext passwords.
    CramMd5,
}

/// The SASL mechanism a login uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN when the server offers it, else IMAP LOGIN or POP3 USER/PASS.
    Plain,
    /// CRAM-MD5, which the server must offer.
    CramMd5,
    /// An OAuth bearer token, with a mechanism the server must offer.
    OAuth(OAuthMechanism),
}

/// The SASL mechanisms that carry an OAuth 2.0 bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthMechanism {
    /// Google's and Microsoft's `XOAUTH2`.
    XOAuth2,
    /// RFC 7628 `OAUTHBEARER`.
    OAuthBearer,
}

impl OAuthMechanism {
    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            OAuthMechanism::XOAuth2 => "XOAUTH2",
            OAuthMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

impl AuthMode {
    /// Parses `user` (or nothing), `master:ADMIN`, `cram-md5`, `xoauth2` and `oauthbearer`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" | "user" => Ok(AuthMode::User),
            "xoauth2" => Ok(AuthMode::OAuth2(OAuthMechanism::XOAuth2)),
            "oauthbearer" => Ok(AuthMode::OAuth2(OAuthMechanism::OAuthBearer)),
            "cram-md5" => Ok(AuthMode::CramMd5),
            other => match other.strip_prefix("master:") {
                Some(admin) if !admin.is_empty() => Ok(AuthMode::Master {
                    admin: admin.to_owned(),
                }),
                _ => Err(format!(
                    "unknown login mode {other:?}: use user, master:ADMIN, cram-md5, xoauth2 or \
                     oauthbearer"
                )),
            },
        }
    }
}

/// The credentials of one login.
#[derive(Clone, Copy)]
pub struct Login<'a> {
    /// The mailbox owner.
    pub user: &'a str,
    /// The administrator logging in on the owner's behalf, if any.
    pub admin: Option<&'a str>,
    /// The password of whoever authenticates (the administrator when there is one), or the
    /// access token for an OAuth mechanism.
    pub password: &'a str,
    /// How the credentials are sent.
    pub mechanism: Mechanism,
}

impl<'a> Login<'a> {
    /// A plain login: the user with the user's own password.
    pub fn plain(user: &'a str, password: &'a str) -> Self {
        Login {
            user,
            admin: None,
            password,
            mechanism: Mechanism::Plain,
        }
    }

    /// A login for a mode.
    pub fn new(user: &'a str, mode: &'a AuthMode, password: &'a str) -> Self {
        let (admin, mechanism) = match mode {
            AuthMode::User => (None, Mechanism::Plain),
            AuthMode::Master { admin } => (Some(admin.as_str()), Mechanism::Plain),
            AuthMode::OAuth2(oauth) => (None, Mechanism::OAuth(*oauth)),
            AuthMode::CramMd5 => (None, Mechanism::CramMd5),
        };
        Login {
            user,
            admin,
            password,
            mechanism,
        }
    }

    /// Whether `password` is an OAuth bearer token.
    pub fn is_oauth(&self) -> bool {
        matches!(self.mechanism, Mechanism::OAuth(_))
    }

    /// The mechanism the server must offer, when it is not up to the client to choose.
    pub fn required_mechanism(&self) -> Option<&'static str> {
        match self.mechanism {
            Mechanism::Plain => None,
            Mechanism::CramMd5 => Some("CRAM-MD5"),
            Mechanism::OAuth(oauth) => Some(oauth.name()),
        }
    }

    /// The SASL mechanism and its base64 initial response, for the mechanisms that have one:
    /// the OAuth mechanism's message when there is a token, PLAIN otherwise (CRAM-MD5 has
    /// none: see [`Login::cram_md5_answer`]).
    pub fn sasl(&self) -> (&'static str, String) {
        let (user, token) = (self.user, self.password);
        match self.mechanism {
            Mechanism::Plain | Mechanism::CramMd5 => ("PLAIN", self.sasl_plain()),
            Mechanism::OAuth(OAuthMechanism::XOAuth2) => (
                "XOAUTH2",
                STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01")),
            ),
            // RFC 7628 §3.1: a GS2 header naming the user, then the token.
            Mechanism::OAuth(OAuthMechanism::OAuthBearer) => (
                "OAUTHBEARER",
                STANDARD.encode(format!(
                    "n,a={},\x01auth=Bearer {token}\x01\x01",
                    user.replace('=', "=3D").replace(',', "=2C")
                )),
            ),
        }
    }

    /// The base64 SASL PLAIN message: authorization id (the owner, when an administrator
    /// authenticates), authentication id, password.
    pub fn sasl_plain(&self) -> String {
        let message = match self.admin {
            Some(admin) => format!("{}\0{admin}\0{}", self.user, self.password),
            None => format!("\0{}\0{}", self.user, self.password),
        };
        STANDARD.encode(message)
    }

    /// The base64 answer to a base64 CRAM-MD5 challenge (RFC 2195): the login name, a space,
    /// and the HMAC-MD5 of the challenge keyed with the password, in lowercase hex. `None`
    /// when the challenge is not base64.
    pub fn cram_md5_answer(&self, challenge: &[u8]) -> Option<String> {
        let challenge = STANDARD.decode(challenge.trim_ascii()).ok()?;
        let mut mac = Hmac::<Md5>::new_from_slice(self.password.as_bytes()).ok()?;
        mac.update(&challenge);
        let digest: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(STANDARD.encode(format!("{} {digest}", self.login_name())))
    }

    /// What a client answers to a server's error challenge during an OAuth exchange.
    pub fn error_answer(&self) -> &'static str {
        match self.mechanism {
            Mechanism::OAuth(OAuthMechanism::OAuthBearer) => "AQ==",
            _ => "",
        }
    }

    /// The name for commands without an authorization id (IMAP LOGIN, POP3 USER): for a
    /// master login, Dovecot's `user*admin` form.
    pub fn login_name(&self) -> String {
        match self.admin {
            Some(admin) => format!("{}*{admin}", self.user),
            None => self.user.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_plain_matches_rfc_4616() {
        let plain = Login {
            user: "tim",
            admin: None,
            password: "tanstaaftanstaaf",
            mechanism: Mechanism::Plain,
        };
        assert_eq!(plain.sasl_plain(), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        let master = Login {
            admin: Some("admin"),
            ..plain
        };
        assert_eq!(
            STANDARD.decode(master.sasl_plain()).unwrap(),
            b"tim\0admin\0tanstaaftanstaaf"
        );
        assert_eq!(master.login_name(), "tim*admin");
    }

    #[test]
    fn oauth_messages() {
        let login = Login {
            user: "a,b=c@x",
            admin: None,
            password: "tok",
            mechanism: Mechanism::OAuth(OAuthMechanism::OAuthBearer),
        };
        let (name, message) = login.sasl();
        assert_eq!(name, "OAUTHBEARER");
        assert_eq!(
            STANDARD.decode(message).unwrap(),
            b"n,a=a=2Cb=3Dc@x,\x01auth=Bearer tok\x01\x01"
        );
        let xoauth2 = Login {
            mechanism: Mechanism::OAuth(OAuthMechanism::XOAuth2),
            ..login
        };
        assert_eq!(
            STANDARD.decode(xoauth2.sasl().1).unwrap(),
            b"user=a,b=c@x\x01auth=Bearer tok\x01\x01"
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!(AuthMode::parse(""), Ok(AuthMode::User));
        assert_eq!(
            AuthMode::parse("master:root"),
            Ok(AuthMode::Master {
                admin: "root".into()
            })
        );
        assert!(AuthMode::parse("master:").is_err());
        assert_eq!(
            AuthMode::parse("xoauth2"),
            Ok(AuthMode::OAuth2(OAuthMechanism::XOAuth2))
        );
        assert_eq!(AuthMode::parse("cram-md5"), Ok(AuthMode::CramMd5));
        assert!(AuthMode::parse("digest-md5").is_err());
    }

    #[test]
    fn cram_md5_matches_rfc_2195() {
        let login = Login::new("tim", &AuthMode::CramMd5, "tanstaaftanstaaf");
        let challenge = STANDARD.encode("<1896.697170952@postoffice.reston.mci.net>");
        let answer = login.cram_md5_answer(challenge.as_bytes()).unwrap();
        assert_eq!(
            STANDARD.decode(answer).unwrap(),
            b"tim b913a602c7eda7a495b4e6e7334d3890"
        );
        assert_eq!(login.cram_md5_answer(b"not base64!"), None);
    }
}
