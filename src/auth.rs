//! Who logs in, and on whose behalf: plain logins and master-user (proxy) logins, and the
//! SASL PLAIN message both protocols send (RFC 4616).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

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
    /// Parses `user` (or nothing) and `master:ADMIN`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" | "user" => Ok(AuthMode::User),
            "xoauth2" => Ok(AuthMode::OAuth2(OAuthMechanism::XOAuth2)),
            "oauthbearer" => Ok(AuthMode::OAuth2(OAuthMechanism::OAuthBearer)),
            other => match other.strip_prefix("master:") {
                Some(admin) if !admin.is_empty() => Ok(AuthMode::Master {
                    admin: admin.to_owned(),
                }),
                _ => Err(format!(
                    "unknown login mode {other:?}: use user, master:ADMIN, xoauth2 or oauthbearer"
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
    /// The OAuth mechanism, when `password` is a bearer token.
    pub oauth: Option<OAuthMechanism>,
}

impl<'a> Login<'a> {
    /// A plain login: the user with the user's own password.
    pub fn plain(user: &'a str, password: &'a str) -> Self {
        Login {
            user,
            admin: None,
            password,
            oauth: None,
        }
    }

    /// A login for a mode.
    pub fn new(user: &'a str, mode: &'a AuthMode, password: &'a str) -> Self {
        let (admin, oauth) = match mode {
            AuthMode::User => (None, None),
            AuthMode::Master { admin } => (Some(admin.as_str()), None),
            AuthMode::OAuth2(mechanism) => (None, Some(*mechanism)),
        };
        Login {
            user,
            admin,
            password,
            oauth,
        }
    }

    /// The SASL mechanism and its base64 initial response: the OAuth mechanism's message when
    /// there is a token, PLAIN otherwise.
    pub fn sasl(&self) -> (&'static str, String) {
        let (user, token) = (self.user, self.password);
        match self.oauth {
            None => ("PLAIN", self.sasl_plain()),
            Some(OAuthMechanism::XOAuth2) => (
                "XOAUTH2",
                STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01")),
            ),
            // RFC 7628 §3.1: a GS2 header naming the user, then the token.
            Some(OAuthMechanism::OAuthBearer) => (
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

    /// What a client answers to a server's error challenge during an OAuth exchange.
    pub fn error_answer(&self) -> &'static str {
        match self.oauth {
            Some(OAuthMechanism::OAuthBearer) => "AQ==",
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
            oauth: None,
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
            oauth: Some(OAuthMechanism::OAuthBearer),
        };
        let (name, message) = login.sasl();
        assert_eq!(name, "OAUTHBEARER");
        assert_eq!(
            STANDARD.decode(message).unwrap(),
            b"n,a=a=2Cb=3Dc@x,\x01auth=Bearer tok\x01\x01"
        );
        let xoauth2 = Login {
            oauth: Some(OAuthMechanism::XOAuth2),
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
        assert!(AuthMode::parse("cram-md5").is_err());
    }
}
