//! The preflight of a dry run: what tomorrow's run would meet, found today. Logins on both
//! sides, the target capabilities that matter, its quota room against the bytes to copy,
//! messages over its size limit, where each folder goes, and the keywords it drops. Whatever
//! would fail is a [`Problem`] with what to do, and makes the account not [`Preflight::ready`].
//!
//! Pure: built from what planning found, it touches no socket.

use std::collections::BTreeMap;

use indicatif::HumanBytes;
use serde::Serialize;

use crate::error::Error;
use crate::migrate::SizeLimit;
use crate::plan::FolderPlan;
use crate::store::StorageQuota;

/// The target capabilities a preflight reports: each changes how (or how fast) a run goes.
pub const CAPABILITIES: [&str; 7] = [
    "MULTIAPPEND",
    "LITERAL+",
    "UIDPLUS",
    "CONDSTORE",
    "APPENDLIMIT",
    "QUOTA",
    "SPECIAL-USE",
];

/// What the preflight found for one account.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Preflight {
    /// Whether the run would complete: no problem found.
    pub ready: bool,
    /// How each side's login went.
    pub logins: Logins,
    /// Whether the target advertises each of [`CAPABILITIES`]; empty when it was not reached
    /// or advertises none (a local store).
    pub target_capabilities: BTreeMap<String, bool>,
    /// The target's storage quota against the bytes to copy; `None` when it does not say.
    pub quota: Option<QuotaCheck>,
    /// The largest message the target takes, in bytes; `None` when nobody says.
    pub size_limit: Option<u64>,
    /// The messages over the size limit: they would fail.
    pub too_large: Vec<TooLarge>,
    /// Where each source folder goes, and whether it exists there.
    pub folders: Vec<FolderCheck>,
    /// Keywords the target folders do not store: dropped from the copies, not a failure.
    pub dropped_keywords: Vec<DroppedKeyword>,
    /// What would fail, each with what to do.
    pub problems: Vec<Problem>,
}

/// Each side's login: `"ok"`, or the error that ended it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Logins {
    /// The source's.
    pub source: String,
    /// The target's.
    pub target: String,
}

/// The target's storage quota against what the copy adds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuotaCheck {
    /// Bytes used now.
    pub used: u64,
    /// Bytes allowed.
    pub limit: u64,
    /// Bytes the copy would add (the messages over the size limit left out).
    pub needed: u64,
    /// How many bytes the copy would go over the quota; 0 when it fits.
    pub short_by: u64,
}

/// A message over the target's size limit.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TooLarge {
    /// The source folder.
    pub folder: String,
    /// The message's identity.
    pub message: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What becomes of a folder on the target.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FolderAction {
    /// It exists already.
    Exists,
    /// The run would create it.
    Create,
    /// The target would not open (or create) it.
    Refused,
}

/// One source folder and where it goes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FolderCheck {
    /// The folder on the source.
    pub source: String,
    /// The folder on the target.
    pub target: String,
    /// Whether it exists there.
    pub action: FolderAction,
}

/// A keyword a target folder does not store.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DroppedKeyword {
    /// The target folder.
    pub folder: String,
    /// The keyword.
    pub keyword: String,
    /// How many copies lose it.
    pub messages: usize,
}

/// Something that would fail, and what to do about it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// What would fail.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

/// What planning found, for [`check`].
pub struct Findings<'a> {
    /// The target's capabilities, as it spells them.
    pub capabilities: &'a [String],
    /// The target's storage quota, when it says.
    pub quota: Option<StorageQuota>,
    /// The size limit the run would apply.
    pub size_limit: Option<&'a SizeLimit>,
    /// The plans of the folders the target opened.
    pub plans: Vec<&'a FolderPlan>,
    /// Every folder mapping; refused ones with the target's reason.
    pub folders: Vec<(FolderCheck, Option<String>)>,
}

/// The preflight of an account whose both sides logged in and were planned.
pub fn check(findings: Findings<'_>) -> Preflight {
    let mut problems = Vec::new();
    let mut too_large = Vec::new();
    let mut dropped_keywords = Vec::new();
    let mut needed = 0;
    for plan in &findings.plans {
        for message in &plan.to_copy {
            match findings.size_limit {
                Some(limit) if limit.refuses(message.size).is_some() => too_large.push(TooLarge {
                    folder: plan.source_folder.clone(),
                    message: message.identity.to_string(),
                    size: message.size,
                }),
                _ => needed += message.size,
            }
        }
        dropped_keywords.extend(plan.dropped_keywords.iter().map(|(keyword, messages)| {
            DroppedKeyword {
                folder: plan.target_folder.clone(),
                keyword: keyword.clone(),
                messages: *messages,
            }
        }));
    }
    if let (Some(limit), Some(largest)) =
        (findings.size_limit, too_large.iter().map(|m| m.size).max())
    {
        problems.push(Problem {
            problem: format!(
                "{} message(s) are larger than the {} bytes {} allows (the largest has {largest} bytes): they would fail",
                too_large.len(),
                limit.bytes,
                limit.set_by
            ),
            fix: "move them another way (or shrink their attachments); the report's preflight.too_large lists them".into(),
        });
    }
    let quota = findings.quota.map(|quota| {
        let short_by = needed.saturating_sub(quota.room());
        if short_by > 0 {
            problems.push(Problem {
                problem: format!(
                    "the copy would not fit in the target's quota: it needs {} ({needed} bytes) and {} of {} is free; short by {} ({short_by} bytes)",
                    HumanBytes(needed),
                    HumanBytes(quota.room()),
                    HumanBytes(quota.limit),
                    HumanBytes(short_by),
                ),
                fix: format!(
                    "raise the target's quota by at least {}, or leave folders out (--exclude)",
                    HumanBytes(short_by)
                ),
            });
        }
        QuotaCheck {
            used: quota.used,
            limit: quota.limit,
            needed,
            short_by,
        }
    });
    let mut folders = Vec::new();
    for (folder, refusal) in findings.folders {
        if let Some(reason) = refusal {
            problems.push(Problem {
                problem: format!("the target refuses the folder {}: {reason}", folder.target),
                fix: format!(
                    "create {} on the target by hand, or --map {} to another name",
                    folder.target, folder.source
                ),
            });
        }
        folders.push(folder);
    }
    Preflight {
        ready: problems.is_empty(),
        logins: Logins {
            source: "ok".into(),
            target: "ok".into(),
        },
        // A store that advertises nothing is no IMAP server: a row of "no" would only alarm.
        target_capabilities: CAPABILITIES
            .iter()
            .filter(|_| !findings.capabilities.is_empty())
            .map(|name| (name.to_string(), advertises(findings.capabilities, name)))
            .collect(),
        quota,
        size_limit: findings.size_limit.map(|limit| limit.bytes),
        too_large,
        folders,
        dropped_keywords,
        problems,
    }
}

/// The preflight of an account that could not be planned: `error` says which side failed
/// (one or both), the other logged in.
pub fn not_connected(source: &str, target: &str, error: &Error) -> Preflight {
    let sides: Vec<&Error> = match error {
        Error::BothSides { from, to, .. } => vec![from, to],
        other => vec![other],
    };
    let login = |server: &str| {
        sides
            .iter()
            .find(|e| e.server() == Some(server))
            .map_or_else(|| "ok".to_owned(), |e| e.to_string())
    };
    let problems = sides
        .iter()
        .map(|e| Problem {
            problem: e.to_string(),
            fix: e.hint().unwrap_or("see the error above").to_owned(),
        })
        .collect();
    Preflight {
        ready: false,
        logins: Logins {
            source: login(source),
            target: login(target),
        },
        target_capabilities: BTreeMap::new(),
        quota: None,
        size_limit: None,
        too_large: Vec::new(),
        folders: Vec::new(),
        dropped_keywords: Vec::new(),
        problems,
    }
}

/// Whether `name` is among `capabilities`, alone or with a value (`APPENDLIMIT=1000`).
fn advertises(capabilities: &[String], name: &str) -> bool {
    capabilities.iter().any(|c| {
        let bare = c.split_once('=').map_or(c.as_str(), |(bare, _)| bare);
        bare.eq_ignore_ascii_case(name)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::index::{SourceMessage, TargetIndex};
    use crate::plan;

    /// A plan copying messages of these sizes into `INBOX`.
    fn plan_of(sizes: &[u64]) -> FolderPlan {
        let source: Vec<Arc<SourceMessage>> = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let mut message = SourceMessage::with_id(i as u32 + 1, &format!("m{i}"));
                message.size = *size;
                Arc::new(message)
            })
            .collect();
        plan::diff("INBOX", "INBOX", &source, &TargetIndex::default())
    }

    fn findings<'a>(
        plan: &'a FolderPlan,
        quota: Option<StorageQuota>,
        limit: Option<&'a SizeLimit>,
    ) -> Findings<'a> {
        Findings {
            capabilities: &[],
            quota,
            size_limit: limit,
            plans: vec![plan],
            folders: Vec::new(),
        }
    }

    #[test]
    fn a_copy_over_the_quota_says_by_how_much() {
        let plan = plan_of(&[600, 500]);
        let quota = StorageQuota {
            used: 200,
            limit: 1000,
        };
        let preflight = check(findings(&plan, Some(quota), None));
        assert!(!preflight.ready);
        assert_eq!(
            preflight.quota,
            Some(QuotaCheck {
                used: 200,
                limit: 1000,
                needed: 1100,
                short_by: 300
            })
        );
        assert!(
            preflight.problems[0]
                .problem
                .contains("short by 300 B (300 bytes)"),
            "{:?}",
            preflight.problems
        );

        let fits = check(findings(
            &plan,
            Some(StorageQuota {
                used: 0,
                limit: 1100,
            }),
            None,
        ));
        assert!(fits.ready, "{:?}", fits.problems);
        assert_eq!(fits.quota.unwrap().short_by, 0);
    }

    #[test]
    fn messages_over_the_limit_are_listed_and_left_out_of_the_quota() {
        let plan = plan_of(&[100, 5000]);
        let limit = SizeLimit {
            bytes: 1000,
            set_by: "the target's APPENDLIMIT".into(),
        };
        let quota = StorageQuota {
            used: 0,
            limit: 100,
        };
        let preflight = check(findings(&plan, Some(quota), Some(&limit)));
        assert_eq!(
            preflight.too_large,
            [TooLarge {
                folder: "INBOX".into(),
                message: "<m1>".into(),
                size: 5000
            }]
        );
        assert_eq!(preflight.quota.unwrap().short_by, 0);
        assert_eq!(preflight.problems.len(), 1);
        assert!(
            preflight.problems[0]
                .problem
                .contains("1000 bytes the target's APPENDLIMIT allows"),
            "{:?}",
            preflight.problems
        );
    }

    #[test]
    fn dropped_keywords_are_listed_and_a_refused_folder_is_a_problem() {
        let mut flagged = SourceMessage::with_id(1, "k");
        flagged.flags = vec!["$Label1".to_owned()].into();
        let mut target = TargetIndex::default();
        target.keywords = crate::index::KeywordPolicy::Only(Vec::new());
        let plan = plan::diff("INBOX", "INBOX", &[Arc::new(flagged)], &target);
        let refused = FolderCheck {
            source: "Old".into(),
            target: "Old".into(),
            action: FolderAction::Refused,
        };
        let preflight = check(Findings {
            folders: vec![(refused, Some("[CANNOT] no".into()))],
            ..findings(&plan, None, None)
        });
        assert_eq!(
            preflight.dropped_keywords,
            [DroppedKeyword {
                folder: "INBOX".into(),
                keyword: "$Label1".into(),
                messages: 1
            }]
        );
        assert!(!preflight.ready);
        assert_eq!(
            preflight.problems.len(),
            1,
            "a dropped keyword is no problem"
        );
        assert!(
            preflight.problems[0]
                .problem
                .contains("refuses the folder Old: [CANNOT] no")
        );
    }

    #[test]
    fn capabilities_are_found_with_or_without_a_value() {
        let caps = [
            "IMAP4rev1".to_owned(),
            "APPENDLIMIT=5".into(),
            "uidplus".into(),
        ];
        assert!(advertises(&caps, "APPENDLIMIT"));
        assert!(advertises(&caps, "UIDPLUS"));
        assert!(!advertises(&caps, "QUOTA"));
        assert!(!advertises(&caps, "IMAP4"));

        let plan = plan_of(&[1]);
        let imap = check(Findings {
            capabilities: &caps,
            ..findings(&plan, None, None)
        });
        assert_eq!(imap.target_capabilities.len(), CAPABILITIES.len());
        assert!(imap.target_capabilities["UIDPLUS"]);
        assert!(!imap.target_capabilities["QUOTA"]);
        let local = check(findings(&plan, None, None));
        assert!(local.target_capabilities.is_empty());
    }

    #[test]
    fn both_failed_logins_are_reported_each_on_its_side() {
        let refused = |server: &str| Error::Auth {
            server: server.into(),
            reason: "wrong".into(),
            hint: None,
        };
        let both =
            Error::of_sides(Some(refused("imap://a@old")), Some(refused("imap://b@new"))).unwrap();
        let preflight = not_connected("imap://a@old", "imap://b@new", &both);
        assert!(!preflight.ready);
        assert!(preflight.logins.source.contains("a@old"));
        assert!(preflight.logins.target.contains("b@new"));
        assert_eq!(preflight.problems.len(), 2);

        let one = not_connected("imap://a@old", "imap://b@new", &refused("imap://b@new"));
        assert_eq!(one.logins.source, "ok");
        assert!(one.logins.target.contains("wrong"));
    }
}
