//! Two private Dovecots for `mailferry mirror` tests: alice's account on `source` mirrored into
//! bob's on `target`, with the CA both are trusted through, the state directory and the report
//! in a temp dir of their own.

use std::path::PathBuf;

use super::binary::{Accounts, mailferry};
use super::dovecot::Dovecot;

/// alice on `source` mirrored into bob on `target` (both IMAPS).
pub struct MirrorPair {
    /// The server mail is mirrored from (alice).
    pub source: Dovecot,
    /// The server mail is mirrored into (bob).
    pub target: Dovecot,
    dir: tempfile::TempDir,
}

impl MirrorPair {
    /// Starts both servers and writes the CA file trusting both.
    pub fn new() -> MirrorPair {
        MirrorPair::with_target(Dovecot::start())
    }

    /// Starts the source, takes `target` as it was started, and writes the CA file trusting
    /// both.
    pub fn with_target(target: Dovecot) -> MirrorPair {
        let pair = MirrorPair {
            source: Dovecot::start(),
            target,
            dir: tempfile::tempdir().unwrap(),
        };
        let pems =
            [pair.source.cert_path(), pair.target.cert_path()].map(|p| std::fs::read(p).unwrap());
        std::fs::write(pair.ca(), pems.concat()).unwrap();
        pair
    }

    /// The PEM file trusting both servers.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The mirror's `--state` directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The mirror's `--report` file.
    pub fn report(&self) -> PathBuf {
        self.dir.path().join("report.json")
    }

    /// `mailferry mirror` alice → bob with both passwords, the CA, the state and the report,
    /// then `extra`.
    pub fn command(&self, extra: &[&str]) -> assert_cmd::Command {
        let mut command = mailferry("mirror");
        command
            .source_account("imaps", "alice", self.source.imaps_port())
            .target_account("imaps", "bob", self.target.imaps_port(), "")
            .arg("--tls-ca")
            .arg(self.ca())
            .arg("--state")
            .arg(self.state())
            .arg("--report")
            .arg(self.report())
            .args(extra);
        command
    }
}
