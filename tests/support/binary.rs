//! The binary under test, as every test runs it: one builder for the command line, the
//! accounts of the test servers as `--from`/`--to` URLs with their passwords.

use std::time::Duration;

use super::password;

/// The longest one mailferry run may take in a test before it is killed; far above what any
/// run needs, so that only a hang reaches it.
pub const RUN_LIMIT: Duration = Duration::from_secs(300);

/// `mailferry SUBCOMMAND`, killed after [`RUN_LIMIT`], inheriting no password variable from
/// the test's own environment.
pub fn mailferry(subcommand: &str) -> assert_cmd::Command {
    let mut command = assert_cmd::Command::from_std(mailferry_process(subcommand));
    command.timeout(RUN_LIMIT);
    command
}

/// [`mailferry`] as a plain process, for a run the test watches, signals or kills while it
/// works; the test bounds its own wait.
pub fn mailferry_process(subcommand: &str) -> std::process::Command {
    let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin!("mailferry"));
    command
        .arg(subcommand)
        .env_remove("MAILFERRY_FROM_PASSWORD")
        .env_remove("MAILFERRY_TO_PASSWORD");
    command
}

/// `SCHEME://USER@127.0.0.1:PORT`, with `/FOLDER` unless `folder` is empty.
pub fn account_url(scheme: &str, user: &str, port: u16, folder: &str) -> String {
    let url = format!("{scheme}://{user}@127.0.0.1:{port}");
    if folder.is_empty() {
        url
    } else {
        format!("{url}/{folder}")
    }
}

/// `--from` and `--to` a test user's account, each with the user's [`password`] in
/// `MAILFERRY_FROM_PASSWORD` / `MAILFERRY_TO_PASSWORD`.
pub trait Accounts {
    /// `--from SCHEME://USER@127.0.0.1:PORT`.
    fn source_account(&mut self, scheme: &str, user: &str, port: u16) -> &mut Self;
    /// `--to SCHEME://USER@127.0.0.1:PORT[/FOLDER]` (no folder part when `folder` is empty).
    fn target_account(&mut self, scheme: &str, user: &str, port: u16, folder: &str) -> &mut Self;
}

/// Both command types take the same arguments; a macro keeps them from drifting apart.
macro_rules! impl_accounts {
    ($command:ty) => {
        impl Accounts for $command {
            fn source_account(&mut self, scheme: &str, user: &str, port: u16) -> &mut Self {
                self.arg("--from")
                    .arg(account_url(scheme, user, port, ""))
                    .env("MAILFERRY_FROM_PASSWORD", password(user))
            }

            fn target_account(
                &mut self,
                scheme: &str,
                user: &str,
                port: u16,
                folder: &str,
            ) -> &mut Self {
                self.arg("--to")
                    .arg(account_url(scheme, user, port, folder))
                    .env("MAILFERRY_TO_PASSWORD", password(user))
            }
        }
    };
}

impl_accounts!(assert_cmd::Command);
impl_accounts!(std::process::Command);
