//! The run's report: counts, failures and timing, built from the engine's events and written as
//! JSON for monitors (`--report FILE`). It never holds a secret: endpoints appear as URLs
//! without passwords, messages by identity.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::error::{EXIT_OK, EXIT_PARTIAL};
use crate::index::SourceMessage;
use crate::plan::FolderPlan;
use crate::preflight::Preflight;
use crate::store::MessageUid;
use crate::transfer::Observer;
use crate::verify::Missing;

/// The report's format version; bumped when a key changes meaning or disappears.
pub const SCHEMA: u32 = 1;

/// One message that did not make it, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FailedMessage {
    /// The message's identity (`<message-id>` or `sha256:…`).
    pub message: String,
    /// The source folder it is in.
    pub folder: String,
    /// The server's reason, or what went wrong.
    pub reason: String,
}

/// Per-folder counts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FolderReport {
    /// Folder on the source.
    pub source_folder: String,
    /// Folder on the target.
    pub target_folder: String,
    /// Messages in the source folder.
    pub source_messages: usize,
    /// Messages the target already held.
    pub already_present: usize,
    /// Messages planned for copying.
    pub to_copy: usize,
    /// Messages copied in this run.
    pub copied: usize,
    /// Messages that failed.
    pub failed: usize,
    /// Why the folder could not be copied at all (the target would not create or open it),
    /// in the server's words; its messages count as not attempted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a run did. Serialises to the documented JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Format version ([`SCHEMA`]).
    pub schema: u32,
    /// The source URL (no secrets).
    pub source: String,
    /// The target URL (no secrets).
    pub target: String,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// Messages on the source.
    pub source_messages: usize,
    /// Messages copied in this run (in a dry run: 0).
    pub copied: usize,
    /// Source messages the target already held before the run.
    pub already_present: usize,
    /// Messages that could not be copied.
    pub failed: usize,
    /// Messages planned but neither copied nor failed (a run cut short by a connection error).
    pub not_attempted: usize,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Mirror: target messages whose flags were updated to the source's.
    pub flags_updated: usize,
    /// Mirror `--delete`: copies removed from the target because they left the source.
    pub deleted: usize,
    /// Mirror `--delete-source-after-days`: messages deleted from the POP3 source.
    pub source_deleted: usize,
    /// Bytes a dry run would copy (0 otherwise).
    pub bytes_to_copy: u64,
    /// Wall-clock seconds of the whole run.
    pub duration_s: f64,
    /// Whether a re-index of the target after the copy found every source message.
    pub verified: Option<bool>,
    /// Per-folder counts.
    pub folders: Vec<FolderReport>,
    /// The failed messages.
    pub errors: Vec<FailedMessage>,
    /// Things the user should know that did not fail a message (e.g. a dropped keyword).
    pub warnings: Vec<String>,
    /// A fatal error that ended the run early, if any.
    pub fatal: Option<String>,
    /// A dry run's preflight: what the run would meet, and what would fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preflight: Option<Preflight>,
}

impl Report {
    /// The exit code for a run that finished: 0 when everything is on the target (a dry run:
    /// when its preflight found nothing that would fail), else 1.
    pub fn exit_code(&self) -> i32 {
        let complete = self.failed == 0
            && self.not_attempted == 0
            && self.folders.iter().all(|f| f.error.is_none())
            && self.verified != Some(false)
            && self.fatal.is_none()
            && self.preflight.as_ref().is_none_or(|p| p.ready);
        if complete { EXIT_OK } else { EXIT_PARTIAL }
    }

    /// Writes the report as pretty JSON, atomically (a monitor never reads half a file),
    /// readable by its owner only.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::private_file::write_atomically(path, &json)
    }
}

/// Builds a [`Report`] from the plan and the engine's events.
pub struct ReportBuilder {
    started: Instant,
    state: Mutex<Report>,
}

impl ReportBuilder {
    /// Starts the clock for a run between these endpoints.
    pub fn new(source: String, target: String, dry_run: bool) -> Self {
        ReportBuilder {
            started: Instant::now(),
            state: Mutex::new(Report {
                schema: SCHEMA,
                source,
                target,
                dry_run,
                source_messages: 0,
                copied: 0,
                already_present: 0,
                failed: 0,
                not_attempted: 0,
                bytes_copied: 0,
                flags_updated: 0,
                deleted: 0,
                source_deleted: 0,
                bytes_to_copy: 0,
                duration_s: 0.0,
                verified: None,
                folders: Vec::new(),
                errors: Vec::new(),
                warnings: Vec::new(),
                fatal: None,
                preflight: None,
            }),
        }
    }

    /// Records a folder's plan (before any copy).
    pub fn planned(&self, plan: &FolderPlan) {
        let mut report = self.state.lock().unwrap();
        report.source_messages += plan.source_messages;
        report.already_present += plan.already_present;
        report.bytes_to_copy += plan.bytes_to_copy();
        report.folders.push(FolderReport {
            source_folder: plan.source_folder.clone(),
            target_folder: plan.target_folder.clone(),
            source_messages: plan.source_messages,
            already_present: plan.already_present,
            to_copy: plan.to_copy.len(),
            copied: 0,
            failed: 0,
            error: None,
        });
        for (keyword, count) in &plan.dropped_keywords {
            report.warnings.push(format!(
                "the target folder {} does not store the keyword {keyword}: dropped from {count} message(s)",
                plan.target_folder
            ));
        }
    }

    /// Records a folder that cannot be copied at all: its `source_messages` are not attempted.
    pub fn folder_failed(
        &self,
        source_folder: &str,
        target_folder: &str,
        source_messages: usize,
        reason: &str,
    ) {
        let mut report = self.state.lock().unwrap();
        report.source_messages += source_messages;
        report.folders.push(FolderReport {
            source_folder: source_folder.to_owned(),
            target_folder: target_folder.to_owned(),
            source_messages,
            already_present: 0,
            to_copy: source_messages,
            copied: 0,
            failed: 0,
            error: Some(reason.to_owned()),
        });
    }

    /// Records a mirror's flag updates and deletions.
    pub fn synced(&self, flags_updated: usize, deleted: usize) {
        let mut report = self.state.lock().unwrap();
        report.flags_updated += flags_updated;
        report.deleted += deleted;
    }

    /// Records messages deleted from the source.
    pub fn source_deleted(&self, deleted: usize) {
        self.state.lock().unwrap().source_deleted += deleted;
    }

    /// Records a warning for the user.
    pub fn warn(&self, warning: String) {
        self.state.lock().unwrap().warnings.push(warning);
    }

    /// Records the outcome of the verification pass.
    pub fn verified(&self, complete: bool) {
        self.state.lock().unwrap().verified = Some(complete);
    }

    /// Records source messages that verification did not find whole on the target, except
    /// those already reported failed in this run: one `errors` entry per message. Messages of
    /// one identity are look-alikes, so they are told apart by count, not by which is which.
    pub fn missing_after_copy(&self, folder: &str, missing: &[Missing]) {
        let mut report = self.state.lock().unwrap();
        let mut failed_before: HashMap<String, usize> = HashMap::new();
        for error in report.errors.iter().filter(|e| e.folder == folder) {
            *failed_before.entry(error.message.clone()).or_default() += 1;
        }
        for missing in missing {
            let identity = missing.message.identity.to_string();
            if let Some(failed) = failed_before.get_mut(&identity).filter(|n| **n > 0) {
                *failed -= 1;
                continue;
            }
            report.errors.push(FailedMessage {
                message: identity,
                folder: folder.to_owned(),
                reason: missing.reason(),
            });
        }
    }

    /// Records a dry run's preflight.
    pub fn preflight(&self, preflight: Preflight) {
        self.state.lock().unwrap().preflight = Some(preflight);
    }

    /// Records the error that ended the run early.
    pub fn fatal(&self, error: &str) {
        self.state.lock().unwrap().fatal = Some(error.to_owned());
    }

    /// The finished report.
    pub fn finish(self) -> Report {
        let mut report = self.state.into_inner().unwrap();
        report.duration_s = self.started.elapsed().as_secs_f64();
        let planned: usize = report.folders.iter().map(|f| f.to_copy).sum();
        if !report.dry_run {
            report.bytes_to_copy = 0;
            report.not_attempted = planned - report.copied - report.failed;
        }
        report
    }

    fn folder<'r>(report: &'r mut Report, folder: &str) -> Option<&'r mut FolderReport> {
        report
            .folders
            .iter_mut()
            .find(|f| f.source_folder == folder)
    }
}

impl Observer for ReportBuilder {
    fn message_copied(&self, folder: &str, message: &Arc<SourceMessage>, _uid: Option<MessageUid>) {
        let mut report = self.state.lock().unwrap();
        report.copied += 1;
        report.bytes_copied += message.size;
        if let Some(f) = Self::folder(&mut report, folder) {
            f.copied += 1;
        }
    }

    fn message_failed(&self, folder: &str, message: &SourceMessage, reason: &str) {
        let mut report = self.state.lock().unwrap();
        report.failed += 1;
        report.errors.push(FailedMessage {
            message: message.identity.to_string(),
            folder: folder.to_owned(),
            reason: reason.to_owned(),
        });
        if let Some(f) = Self::folder(&mut report, folder) {
            f.failed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::TargetIndex;

    fn message(key: u32, id: &str) -> Arc<SourceMessage> {
        Arc::new(SourceMessage::with_id(key, id))
    }

    /// INBOX with messages a, b, c, d of which the target holds d: three to copy.
    fn planned(dry_run: bool) -> (ReportBuilder, Vec<Arc<SourceMessage>>) {
        let source: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .zip(1..)
            .map(|(id, key)| message(key, id))
            .collect();
        let target: TargetIndex = [crate::identity::Identity::MessageId("d".into())]
            .into_iter()
            .collect();
        let builder = ReportBuilder::new(
            "pop3s://carol@old.example:995".into(),
            "imaps://alice@new.example:993/INBOX".into(),
            dry_run,
        );
        builder.planned(&crate::plan::diff("INBOX", "INBOX", &source, &target));
        (builder, source)
    }

    #[test]
    fn counts_add_up_per_run_and_per_folder() {
        let (builder, source) = planned(false);
        builder.message_copied("INBOX", &source[0], None);
        builder.message_failed("INBOX", &source[1], "[OVERQUOTA] full");
        let report = builder.finish();
        assert_eq!(
            (
                report.source_messages,
                report.already_present,
                report.copied,
                report.failed,
                report.not_attempted
            ),
            (4, 1, 1, 1, 1)
        );
        assert_eq!((report.bytes_copied, report.bytes_to_copy), (10, 0));
        let inbox = &report.folders[0];
        assert_eq!(
            (inbox.to_copy, inbox.copied, inbox.failed),
            (3, 1, 1),
            "{inbox:?}"
        );
        assert_eq!(
            report.errors,
            [FailedMessage {
                message: source[1].identity.to_string(),
                folder: "INBOX".into(),
                reason: "[OVERQUOTA] full".into(),
            }]
        );
    }

    #[test]
    fn a_dry_run_keeps_the_bytes_it_would_copy_and_attempts_nothing() {
        let (builder, _) = planned(true);
        let report = builder.finish();
        assert_eq!((report.bytes_to_copy, report.not_attempted), (30, 0));
        assert_eq!(report.exit_code(), EXIT_OK);
    }

    #[test]
    fn exit_code_is_0_only_when_everything_is_on_the_target() {
        let complete = || {
            let (builder, source) = planned(false);
            for message in &source[..3] {
                builder.message_copied("INBOX", message, None);
            }
            builder
        };
        let finished = |builder: ReportBuilder| builder.finish().exit_code();
        assert_eq!(finished(complete()), EXIT_OK);
        let verified = complete();
        verified.verified(true);
        assert_eq!(finished(verified), EXIT_OK);

        let unverified = complete();
        unverified.verified(false);
        let fatal = complete();
        fatal.fatal("the target closed the connection");
        let folder_failed = complete();
        folder_failed.folder_failed("Spam", "Spam", 2, "NO [CANNOT] refused");
        let (not_attempted, source) = planned(false);
        not_attempted.message_copied("INBOX", &source[0], None);
        let (failed, source) = planned(false);
        failed.message_copied("INBOX", &source[0], None);
        failed.message_copied("INBOX", &source[1], None);
        failed.message_failed("INBOX", &source[2], "too big");
        for builder in [unverified, fatal, folder_failed, not_attempted, failed] {
            assert_eq!(finished(builder), EXIT_PARTIAL);
        }
    }

    #[test]
    fn the_json_has_the_documented_keys_and_replaces_the_file_whole() {
        let (builder, source) = planned(false);
        builder.message_copied("INBOX", &source[0], None);
        builder.fatal("cut short");
        let report = builder.finish();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, "{\"fatal\": null, \"old\": true}").unwrap();
        report.write(&path).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["fatal"], "cut short");
        assert!(json.get("old").is_none(), "{json:#}");
        for key in [
            "source",
            "target",
            "dry_run",
            "source_messages",
            "copied",
            "already_present",
            "failed",
            "not_attempted",
            "bytes_copied",
            "duration_s",
            "verified",
            "folders",
            "errors",
            "warnings",
        ] {
            assert!(json.get(key).is_some(), "no {key:?} in {json:#}");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["report.json"], "a temporary file was left");
    }

    fn missing(message: &Arc<SourceMessage>) -> Missing {
        Missing {
            message: Arc::clone(message),
            truncated_copy: None,
        }
    }

    #[test]
    fn a_failed_message_that_verification_misses_is_one_error() {
        let report = ReportBuilder::new("from".into(), "to".into(), false);
        let (refused, lost) = (message(1, "refused@x"), message(2, "lost@x"));
        let (look_alike, copied_look_alike) = (message(3, "twin@x"), message(4, "twin@x"));
        report.message_failed("INBOX", &refused, "the server said: too big");
        report.message_failed("INBOX", &look_alike, "the server said: no");
        report.message_copied("INBOX", &copied_look_alike, None);
        // Both twins missing: one failed, the other's copy is gone too.
        let missed = [&refused, &lost, &look_alike, &copied_look_alike].map(missing);
        report.missing_after_copy("INBOX", &missed);
        report.missing_after_copy("Sent", &[missing(&refused)]);
        let errors: Vec<(String, String)> = report
            .state
            .into_inner()
            .unwrap()
            .errors
            .into_iter()
            .map(|e| (e.folder, e.message))
            .collect();
        let expected = [
            ("INBOX", "<refused@x>"),
            ("INBOX", "<twin@x>"),
            ("INBOX", "<lost@x>"),
            ("INBOX", "<twin@x>"),
            ("Sent", "<refused@x>"),
        ]
        .map(|(f, m)| (f.to_owned(), m.to_owned()));
        assert_eq!(errors, expected);
    }
}
