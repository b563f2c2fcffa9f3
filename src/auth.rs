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
}

impl AuthMode {
    /// Parses `user` (or nothing) and `master:ADMIN`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" | "user" => Ok(AuthMode::User),
            other => match other.strip_prefix("master:") {
                Some(admin) if !admin.is_empty() => Ok(AuthMode::Master {
                    admin: admin.to_owned(),
                }),
                _ => Err(format!(
                    "unknown login mode {other:?}: use \"user\" or \"master:ADMIN\""
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
    /// The password of whoever authenticates (the administrator when there is one).
    pub password: &'a str,
}

impl<'a> Login<'a> {
    /// A login for a mode.
    pub fn new(user: &'a str, mode: &'a AuthMode, password: &'a str) -> Self {
        let admin = match mode {
            AuthMode::User => None,
            AuthMode::Master { admin } => Some(admin.as_str()),
        };
        Login {
            user,
            admin,
            password,
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
    fn modes_parse() {
        assert_eq!(AuthMode::parse(""), Ok(AuthMode::User));
        assert_eq!(
            AuthMode::parse("master:root"),
            Ok(AuthMode::Master {
                admin: "root".into()
            })
        );
        assert!(AuthMode::parse("master:").is_err());
        assert!(AuthMode::parse("xoauth2").is_err());
    }
}
