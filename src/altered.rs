//! What a target server changed in the copies it stored, found after verification from a
//! fresh index of the folder: flags or dates it did not keep (GNU Mailutils maildir keeps
//! neither, silently), and more copies than were sent (a server storing a MULTIAPPEND twice).
//! Nothing here fails a message: the copies are there, only not quite as sent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::identity::Identity;
use crate::index::{SourceMessage, TargetCopy, TargetIndex};

/// What a target changed in one folder's copies of this run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alterations {
    /// Copies that this run sent.
    pub sent: usize,
    /// Copies stored without some of the flags sent with them.
    pub flags_dropped: usize,
    /// Copies whose INTERNALDATE is not the date sent with them.
    pub dates_changed: usize,
    /// Copies beyond those the folder held before and those sent.
    pub extra_copies: usize,
}

impl Alterations {
    /// Whether the server changed anything.
    pub fn changed(&self) -> bool {
        self.flags_dropped + self.dates_changed + self.extra_copies > 0
    }

    /// One line per kind of change, naming the target folder, for the report's warnings.
    pub fn warnings(&self, folder: &str) -> Vec<String> {
        let sent = self.sent;
        let mut warnings = Vec::new();
        if self.flags_dropped > 0 {
            warnings.push(format!(
                "the target folder {folder} stored {} of {sent} copies without flags sent with them",
                self.flags_dropped
            ));
        }
        if self.dates_changed > 0 {
            warnings.push(format!(
                "the target folder {folder} stored {} of {sent} copies with another date (INTERNALDATE) than the one sent",
                self.dates_changed
            ));
        }
        if self.extra_copies > 0 {
            warnings.push(format!(
                "the target folder {folder} holds {} more copies than it held before plus the {sent} sent (some stored twice)",
                self.extra_copies
            ));
        }
        warnings
    }
}

/// Compares the copies `sent` to a folder (flags and dates as sent) with what the folder
/// holds `after` the copy, the copies it held `before` set aside. A message is matched with a
/// new copy of its identity that kept everything when there is one, else with any new copy of
/// its identity; look-alikes are told apart only by what they carry.
pub fn alterations(
    sent: &[Arc<SourceMessage>],
    before: &TargetIndex,
    after: &TargetIndex,
) -> Alterations {
    let mut by_identity: HashMap<&Identity, Vec<&SourceMessage>> = HashMap::new();
    for message in sent {
        by_identity
            .entry(&message.identity)
            .or_default()
            .push(message);
    }
    let mut altered = Alterations {
        sent: sent.len(),
        ..Alterations::default()
    };
    for (identity, mut messages) in by_identity {
        // Those carrying most first: the copy that kept more is theirs.
        messages.sort_by_key(|m| std::cmp::Reverse(m.flags.len()));
        let held_before: HashSet<u32> = before.copies(identity).iter().map(|c| c.uid).collect();
        let mut new: Vec<&TargetCopy> = after
            .copies(identity)
            .iter()
            .filter(|copy| !held_before.contains(&copy.uid))
            .collect();
        altered.extra_copies += new.len().saturating_sub(messages.len());
        for message in messages {
            let kept = |copy: &&TargetCopy| keeps_flags(message, copy) && keeps_date(message, copy);
            let Some(at) = new.iter().position(kept).or((!new.is_empty()).then_some(0)) else {
                // Not there at all: verification's to report.
                continue;
            };
            let copy = new.swap_remove(at);
            altered.flags_dropped += usize::from(!keeps_flags(message, copy));
            altered.dates_changed += usize::from(!keeps_date(message, copy));
        }
    }
    altered
}

fn keeps_flags(message: &SourceMessage, copy: &TargetCopy) -> bool {
    message.flags.iter().all(|sent| {
        copy.flags
            .iter()
            .any(|kept| kept.eq_ignore_ascii_case(sent))
    })
}

/// Dates compare as instants: a server may write the same time in another zone. A copy whose
/// date the index does not know (a local mbox's) is not said to have another.
fn keeps_date(message: &SourceMessage, copy: &TargetCopy) -> bool {
    match (message.internal_date.get(), copy.internal_date) {
        (Some(sent), Some(kept)) => sent == kept,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    fn sent(id: &str, flags: &[&str], date: Option<&str>) -> Arc<SourceMessage> {
        let mut message = SourceMessage::with_id(0, id);
        message.flags = flags.iter().map(|f| f.to_string()).collect();
        message.internal_date = date
            .map(|d| DateTime::parse_from_rfc3339(d).unwrap())
            .into();
        Arc::new(message)
    }

    fn copy(uid: u32, flags: &[&str], date: Option<&str>) -> TargetCopy {
        TargetCopy {
            uid,
            size: 10,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            internal_date: date.map(|d| DateTime::parse_from_rfc3339(d).unwrap()),
        }
    }

    const DATE: &str = "2019-03-05T10:00:00+05:30";

    #[test]
    fn copies_as_sent_are_not_altered() {
        let messages = [sent("a", &["\\Seen"], Some(DATE)), sent("b", &[], None)];
        let mut after = TargetIndex::default();
        // The same instant in another zone, and flags in another case.
        let same_instant = Some("2019-03-05T04:30:00+00:00");
        after.add(
            messages[0].identity.clone(),
            copy(1, &["\\SEEN"], same_instant),
        );
        after.add(
            messages[1].identity.clone(),
            copy(2, &["\\Seen"], Some(DATE)),
        );
        let altered = alterations(&messages, &TargetIndex::default(), &after);
        assert_eq!(altered.warnings("INBOX"), Vec::<String>::new());
    }

    #[test]
    fn dropped_flags_other_dates_and_extra_copies_are_counted() {
        let messages = [
            sent("a", &["\\Seen", "\\Flagged"], Some(DATE)),
            sent("b", &["\\Seen"], Some(DATE)),
            sent("c", &[], Some(DATE)),
        ];
        let mut before = TargetIndex::default();
        before.add(messages[2].identity.clone(), copy(1, &[], None));
        let mut after = before.clone();
        // Mailutils mbox keeps the wall-clock time and drops the zone.
        let zone_dropped = Some("2019-03-05T10:00:00+00:00");
        after.add(
            messages[0].identity.clone(),
            copy(2, &["\\Seen"], Some(DATE)),
        );
        after.add(
            messages[1].identity.clone(),
            copy(3, &["\\Seen"], zone_dropped),
        );
        after.add(messages[2].identity.clone(), copy(4, &[], Some(DATE)));
        after.add(messages[2].identity.clone(), copy(5, &[], Some(DATE)));
        let altered = alterations(&messages, &before, &after);
        let expected = Alterations {
            sent: 3,
            flags_dropped: 1,
            dates_changed: 1,
            extra_copies: 1,
        };
        assert_eq!(altered, expected);
        assert_eq!(altered.warnings("Archive").len(), 3);
        assert!(altered.warnings("Archive")[0].contains("Archive stored 1 of 3 copies"));
    }

    #[test]
    fn look_alikes_are_matched_with_the_copy_that_kept_what_they_carry() {
        let messages = [sent("a", &[], None), sent("a", &["\\Answered"], None)];
        let mut after = TargetIndex::default();
        after.add(messages[0].identity.clone(), copy(1, &["\\Answered"], None));
        after.add(messages[0].identity.clone(), copy(2, &[], None));
        let altered = alterations(&messages, &TargetIndex::default(), &after);
        assert_eq!(altered.flags_dropped, 0);
    }
}
