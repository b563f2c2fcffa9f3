//! Verification: after a copy, check that every source message is on the target, by the same
//! identity rules the planner used.
//!
//! The cheap way first: the target is asked only about the UIDs it reported for this run's
//! copies (UIDPLUS) and the UIDs its index held at planning time, for their size and flags, and
//! for this run's copies their date and the identity's header fields too, in one pipelined
//! `UID FETCH` per folder. That evidence can only confirm: the messages it counts are a subset
//! of what a fresh index would find, under the identities that index would give them (each must
//! carry the identity expected at its UID). Whenever it cannot confirm a folder — a UID unknown
//! (no UIDPLUS, a copy counted by a recovery's re-index, bytes sent under another identity than
//! planned), UIDVALIDITY changed, another message at a UID, a size differs, a message seems
//! missing — that folder is re-indexed in full and the index decides, so a message reported
//! missing is one the index did not find. Reading the copies' headers here costs the server
//! what the next run's index would otherwise pay: Dovecot keeps the fields it was asked for in
//! its cache.
//!
//! A copy counts only when it is not [much smaller](much_smaller) than its source message: one
//! with the same header but most of the body gone (a source that served the header only) is
//! no copy, however many the identity has.
//!
//! Either way, the copies as the target holds them say what it changed
//! ([`crate::altered`]): flags or dates not kept, and, where the folder was indexed again,
//! copies beyond those sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::altered::{Alterations, alterations};
use crate::error::Error;
use crate::identity::Identity;
use crate::index::{SourceMessage, TargetIndex};
use crate::store::MessageUid;
use crate::store::{FoundCopy, FoundUids, Target, UidCheck};
use crate::transfer::Observer;

/// A copy is truncated when it is under half its source message's size and more than this
/// many bytes short of it. Servers add header fields and line ends to what they store (a few
/// hundred bytes at most) and some re-encode a body (base64 to 8 bits makes it three
/// quarters), but none halves a message; a small message's copy is not judged by ratio alone.
pub const TRUNCATION_SLACK: u64 = 512;

/// Whether a copy of `stored` bytes is much smaller than its source message of `source` bytes:
/// truncated, not merely rewritten by the target server (see [`TRUNCATION_SLACK`]).
pub fn much_smaller(stored: u64, source: u64) -> bool {
    stored.saturating_mul(2) < source && source - stored > TRUNCATION_SLACK
}

/// A source message that verification did not find whole on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The message.
    pub message: Arc<SourceMessage>,
    /// When the target holds a copy with its identity but much smaller (truncated), the
    /// largest such copy's size.
    pub truncated_copy: Option<u64>,
}

impl Missing {
    /// Why the message fails verification, for the report.
    pub fn reason(&self) -> String {
        match self.truncated_copy {
            None => "not found on the target when verifying after the copy".to_owned(),
            Some(stored) => format!(
                "the copy on the target has {stored} bytes of the source's {}: truncated",
                self.message.size
            ),
        }
    }
}

/// The source messages `target_index` lacks, in source order: as [`crate::plan::absent`]
/// counts them, but a copy counts for a message only when it is not [much
/// smaller](much_smaller) than it. Of the messages with one identity, the biggest are
/// matched first, each with the biggest copy left: since a copy big enough for one message is
/// big enough for any smaller, this matches as many as can be.
pub fn missing(source_index: &[Arc<SourceMessage>], target_index: &TargetIndex) -> Vec<Missing> {
    // The source messages by identity, biggest first: grouped by sorting, not in a map of
    // lists, which for a large folder would be a list per message.
    let mut by_identity: Vec<usize> = (0..source_index.len()).collect();
    by_identity.sort_unstable_by(|&a, &b| {
        let (first, second) = (&source_index[a], &source_index[b]);
        (first.identity.cmp(&second.identity))
            .then(second.size.cmp(&first.size))
            .then(a.cmp(&b))
    });
    // Per source message, when it is missing: the biggest copy too small for it, if any.
    let mut verdicts: Vec<Option<Option<u64>>> = vec![None; source_index.len()];
    let same_identity =
        |a: &usize, b: &usize| source_index[*a].identity == source_index[*b].identity;
    for messages in by_identity.chunk_by(same_identity) {
        let mut copies: Vec<u64> = target_index
            .copies(&source_index[messages[0]].identity)
            .iter()
            .map(|copy| copy.size)
            .collect();
        copies.sort_unstable_by(|a, b| b.cmp(a));
        let mut copies = copies.into_iter().peekable();
        let mut unmatched = Vec::new();
        for &at in messages {
            match copies.peek() {
                Some(&size) if !much_smaller(size, source_index[at].size) => {
                    copies.next();
                }
                _ => unmatched.push(at),
            }
        }
        let biggest_left = copies.next();
        for at in unmatched {
            verdicts[at] = Some(biggest_left);
        }
    }
    source_index
        .iter()
        .zip(verdicts)
        .filter_map(|(message, verdict)| {
            Some(Missing {
                message: Arc::clone(message),
                truncated_copy: verdict?,
            })
        })
        .collect()
}

/// This run's copies, per source folder, and where the target stored each when it said
/// (UIDPLUS), as the upload workers report them: an [`Observer`] of the copy.
#[derive(Debug, Default)]
pub struct Receipts(Mutex<HashMap<String, Vec<Receipt>>>);

/// A copy: the source's index entry, which tells the identity it was stored under and the
/// size the source gave (shared, so no allocation per copy), and its UID when known.
pub type Receipt = (Arc<SourceMessage>, Option<MessageUid>);

impl Receipts {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Receipt>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The messages copied from a source folder, each with where the target stored it when
    /// it said.
    pub fn copies_from(&self, source_folder: &str) -> Vec<Receipt> {
        self.lock().get(source_folder).cloned().unwrap_or_default()
    }
}

impl Observer for Receipts {
    fn message_copied(&self, folder: &str, message: &Arc<SourceMessage>, uid: Option<MessageUid>) {
        let receipt = (Arc::clone(message), uid);
        let mut folders = self.lock();
        // Looked up before inserting: `entry` would take an owned name for every copy.
        match folders.get_mut(folder) {
            Some(receipts) => receipts.push(receipt),
            None => {
                folders.insert(folder.to_owned(), vec![receipt]);
            }
        }
    }
}

/// A folder to verify.
pub struct Check<'a> {
    /// The source folder (copies are reported under its name).
    pub source_folder: &'a str,
    /// Where it was copied to.
    pub target_folder: &'a str,
    /// The source folder's messages.
    pub source_index: &'a [Arc<SourceMessage>],
    /// The target folder's index when planned.
    pub planned: &'a TargetIndex,
}

/// What a target folder must still hold: every UID known, with the identity it holds and, for
/// this run's copies, the size the source gave; sorted by UID, each once (a list, not a map:
/// for a large copy this is a good part of verification's peak memory).
struct Expected {
    uid_validity: u32,
    uids: Vec<(u32, Identity, Option<u64>)>,
}

/// What verification found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Per check, the source messages the target lacks.
    pub missing: Vec<Vec<Missing>>,
    /// Per target folder, what the server changed in this run's copies, when it changed
    /// anything; by folder name.
    pub altered: Vec<(String, Alterations)>,
}

/// Verifies `checks`: the source messages the target lacks, and what it changed in the copies
/// (see the module documentation for how).
pub fn missing_after_copies(
    checks: &[Check<'_>],
    receipts: &Receipts,
    target: &mut dyn Target,
) -> Result<Verdict, Error> {
    // Several source folders may go into one target folder: each is checked against
    // everything the folder is known to hold.
    let mut folders: Vec<&str> = checks.iter().map(|c| c.target_folder).collect();
    folders.sort_unstable();
    folders.dedup();
    let expected: Vec<Option<Expected>> = {
        let receipts = receipts.lock();
        folders
            .iter()
            .map(|folder| {
                let checks: Vec<&Check<'_>> = checks
                    .iter()
                    .filter(|c| c.target_folder == *folder)
                    .collect();
                expected(&checks, &receipts)
            })
            .collect()
    };
    // This run's copies (with a size to check) are identified by their header fields; the
    // messages found when planning were, moments ago.
    let asked: Vec<UidCheck> = folders
        .iter()
        .zip(&expected)
        .filter_map(|(folder, expected)| {
            let (copies, planned): (Vec<_>, Vec<_>) = expected
                .as_ref()?
                .uids
                .iter()
                .partition(|(_, _, size)| size.is_some());
            Some(UidCheck {
                folder: folder.to_string(),
                uids: planned.into_iter().map(|(uid, _, _)| *uid).collect(),
                identify: copies.into_iter().map(|(uid, _, _)| *uid).collect(),
            })
        })
        .collect();
    let mut found = target.find_uids(&asked)?.into_iter();
    let confirmed: HashMap<&str, TargetIndex> = folders
        .iter()
        .zip(expected)
        .filter_map(|(folder, expected)| {
            let expected = expected?;
            let found = found.next().expect("one answer per folder asked")?;
            Some((*folder, confirmed(expected, found)?))
        })
        .collect();
    let mut missing_by_check: Vec<Option<Vec<Missing>>> = checks
        .iter()
        .map(|check| {
            let index = confirmed.get(check.target_folder)?;
            Some(missing(check.source_index, index))
        })
        .collect();
    // A folder is confirmed only when none of its checks misses anything.
    let mut doubtful: Vec<String> = checks
        .iter()
        .zip(&missing_by_check)
        .filter(|(_, missing)| missing.as_ref().is_none_or(|m| !m.is_empty()))
        .map(|(check, _)| check.target_folder.to_owned())
        .collect();
    doubtful.sort_unstable();
    doubtful.dedup();
    let indexes: HashMap<String, TargetIndex> = doubtful
        .iter()
        .cloned()
        .zip(target.index_all(&doubtful)?)
        .collect();
    for (check, missing_here) in checks.iter().zip(&mut missing_by_check) {
        if let Some(index) = indexes.get(check.target_folder) {
            *missing_here = Some(missing(check.source_index, index));
        }
    }
    // Each folder as last seen: indexed again, else its copies found by UID (where copies
    // beyond those sent cannot show).
    let altered = folders
        .iter()
        .filter_map(|&folder| {
            let after = indexes.get(folder).or_else(|| confirmed.get(folder))?;
            let into_folder = || checks.iter().filter(|c| c.target_folder == folder);
            let sent: Vec<Arc<SourceMessage>> = into_folder()
                .flat_map(|check| receipts.copies_from(check.source_folder))
                .map(|(message, _)| message)
                .collect();
            let before = into_folder().next()?.planned;
            let altered = alterations(&sent, before, after);
            altered.changed().then(|| (folder.to_owned(), altered))
        })
        .collect();
    Ok(Verdict {
        missing: missing_by_check
            .into_iter()
            .map(|m| m.expect("every folder confirmed or indexed"))
            .collect(),
        altered,
    })
}

/// The UIDs a target folder must hold for its checks to pass, or `None` when some are
/// unknown: a copy without a UID, or UIDs under another UIDVALIDITY than the planning index's.
fn expected(checks: &[&Check<'_>], receipts: &HashMap<String, Vec<Receipt>>) -> Option<Expected> {
    let uid_validity = checks[0].planned.uid_validity?;
    let mut uids = Vec::new();
    for check in checks {
        if check.planned.uid_validity != Some(uid_validity) {
            return None;
        }
        for message in check.source_index {
            for copy in check.planned.copies(&message.identity) {
                uids.push((copy.uid, message.identity.clone(), None));
            }
        }
        for (message, at) in receipts.get(check.source_folder).into_iter().flatten() {
            let at = (*at)?;
            if at.uid_validity != uid_validity {
                return None;
            }
            uids.push((at.uid, message.identity.clone(), Some(message.copy_size())));
        }
    }
    // A UID named twice (a server that handed out one again) is expected as named last: this
    // run's copy, whose size is checked.
    uids.reverse();
    uids.sort_by_key(|(uid, _, _)| *uid);
    uids.dedup_by_key(|(uid, _, _)| *uid);
    Some(Expected { uid_validity, uids })
}

/// The index of the expected messages the target found, or `None` when what it found does
/// not vouch for them: another UIDVALIDITY, or a copy of this run's without the identity and
/// size of its source message.
fn confirmed(expected: Expected, found: FoundUids) -> Option<TargetIndex> {
    if found.uid_validity != Some(expected.uid_validity) {
        return None;
    }
    let mut index = TargetIndex::with_capacity(expected.uids.len());
    let mut found = found.copies.into_iter().peekable();
    for (uid, identity, size) in expected.uids {
        while found.next_if(|found| found.copy.uid < uid).is_some() {}
        let Some(FoundCopy {
            copy,
            identity: found_identity,
        }) = found.next_if(|found| found.copy.uid == uid)
        else {
            continue;
        };
        if let Some(size) = size
            && (found_identity != Some(identity.digest()) || size != copy.size)
        {
            return None;
        }
        index.add(identity, copy);
    }
    Some(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folders::FolderList;
    use crate::index::{Flags, TargetCopy};
    use crate::store::{FolderRefused, Outcome, Outgoing};

    /// Answers `find_uids` with `found` and indexes with `index`, noting what it was asked.
    struct FakeTarget {
        found: FoundUids,
        index: TargetIndex,
        asked: Vec<UidCheck>,
        indexed: Vec<String>,
    }

    impl Target for FakeTarget {
        fn find_uids(&mut self, folders: &[UidCheck]) -> Result<Vec<Option<FoundUids>>, Error> {
            self.asked.extend_from_slice(folders);
            Ok(vec![Some(self.found.clone()); folders.len()])
        }
        fn index_all(&mut self, folders: &[String]) -> Result<Vec<TargetIndex>, Error> {
            self.indexed.extend_from_slice(folders);
            Ok(vec![self.index.clone(); folders.len()])
        }
        fn index(&mut self, _: &str) -> Result<TargetIndex, Error> {
            unimplemented!()
        }
        fn folders(&mut self) -> Result<FolderList, Error> {
            unimplemented!()
        }
        fn create_and_index(
            &mut self,
            _: &[String],
            _: &[String],
        ) -> Result<Vec<Result<TargetIndex, FolderRefused>>, Error> {
            unimplemented!()
        }
        fn append(&mut self, _: &str, _: &[Outgoing]) -> Result<Vec<Outcome>, Error> {
            unimplemented!()
        }
    }

    const VALIDITY: u32 = 7;

    fn message(id: &str) -> Arc<SourceMessage> {
        Arc::new(SourceMessage::with_id(0, id))
    }

    /// A target folder holding `a` under UID 1 when planned.
    fn planned() -> TargetIndex {
        let mut index = TargetIndex::default();
        index.uid_validity = Some(VALIDITY);
        index.add(
            message("a").identity.clone(),
            TargetCopy {
                uid: 1,
                size: 10,
                flags: Flags::default(),
                internal_date: None,
            },
        );
        index
    }

    /// A copy of `size` bytes under `uid`, without flags or date.
    fn copy(uid: u32, size: u64) -> TargetCopy {
        TargetCopy {
            uid,
            size,
            ..TargetCopy::default()
        }
    }

    /// Found under `uid`: a copy of `size` bytes of the message `id`.
    fn found_copy(uid: u32, id: &str, size: u64) -> FoundCopy {
        FoundCopy {
            copy: copy(uid, size),
            identity: Some(message(id).identity.digest()),
        }
    }

    /// Found: these UIDs, each holding a copy of the 10 bytes `SourceMessage::with_id` has of
    /// the message named beside it.
    fn found(uid_validity: u32, uids: &[(u32, &str)]) -> FoundUids {
        FoundUids {
            uid_validity: Some(uid_validity),
            copies: uids
                .iter()
                .map(|&(uid, id)| found_copy(uid, id, 10))
                .collect(),
        }
    }

    /// Verifies source folders (name, messages) copied into INBOX, whose copies the upload
    /// reported as `copies` (source folder, message, UID).
    fn verify(
        sources: &[(&str, Vec<Arc<SourceMessage>>)],
        copies: &[(&str, &Arc<SourceMessage>, Option<MessageUid>)],
        target: &mut FakeTarget,
    ) -> Vec<Vec<Arc<SourceMessage>>> {
        let receipts = Receipts::default();
        for (folder, message, uid) in copies {
            receipts.message_copied(folder, message, *uid);
        }
        let planned = planned();
        let checks: Vec<Check<'_>> = sources
            .iter()
            .map(|(folder, messages)| Check {
                source_folder: folder,
                target_folder: "INBOX",
                source_index: messages,
                planned: &planned,
            })
            .collect();
        missing_after_copies(&checks, &receipts, target)
            .unwrap()
            .missing
            .into_iter()
            .map(|missing| missing.into_iter().map(|m| m.message).collect())
            .collect()
    }

    fn target(found: FoundUids, index: &[&str]) -> FakeTarget {
        FakeTarget {
            found,
            index: index
                .iter()
                .map(|id| message(id).identity.clone())
                .collect(),
            asked: vec![],
            indexed: vec![],
        }
    }

    /// What verification asks about INBOX.
    fn check(uids: &[u32], identify: &[u32]) -> UidCheck {
        UidCheck {
            folder: "INBOX".into(),
            uids: uids.to_vec(),
            identify: identify.to_vec(),
        }
    }

    fn uid(uid_validity: u32, uid: u32) -> Option<MessageUid> {
        Some(MessageUid { uid_validity, uid })
    }

    #[test]
    fn uids_found_with_the_source_sizes_verify_without_an_index() {
        let (a, b) = (message("a"), message("b"));
        let mut target = target(found(VALIDITY, &[(1, "a"), (2, "b")]), &[]);
        let missing = verify(
            &[("INBOX", vec![a, b.clone()])],
            &[("INBOX", &b, uid(VALIDITY, 2))],
            &mut target,
        );
        assert_eq!(missing, [vec![]]);
        // The copy is identified; the message found when planning is not read again.
        assert_eq!(target.asked, [check(&[1], &[2])]);
        assert!(target.indexed.is_empty());
    }

    #[test]
    fn flags_the_target_did_not_keep_show_in_the_uids_found() {
        let mut flagged = SourceMessage::with_id(0, "b");
        flagged.flags = ["\\Seen".to_owned()].into();
        let (a, b) = (message("a"), Arc::new(flagged));
        let mut target = target(found(VALIDITY, &[(1, "a"), (2, "b")]), &[]);
        let receipts = Receipts::default();
        receipts.message_copied("INBOX", &b, uid(VALIDITY, 2));
        let planned = planned();
        let source_index = [a, Arc::clone(&b)];
        let check = Check {
            source_folder: "INBOX",
            target_folder: "INBOX",
            source_index: &source_index,
            planned: &planned,
        };
        let verdict = missing_after_copies(&[check], &receipts, &mut target).unwrap();
        assert_eq!(verdict.missing, [vec![]]);
        assert!(target.indexed.is_empty());
        let [(folder, altered)] = &verdict.altered[..] else {
            panic!("{:?}", verdict.altered);
        };
        assert_eq!((folder.as_str(), altered.flags_dropped), ("INBOX", 1));
    }

    #[test]
    fn anything_the_uids_cannot_vouch_for_is_decided_by_an_index() {
        let (a, b) = (message("a"), message("b"));
        let sources = [("INBOX", vec![a.clone(), b.clone()])];
        let cases = [
            ("a UID gone", found(VALIDITY, &[(2, "b")]), uid(VALIDITY, 2)),
            (
                "another size",
                FoundUids {
                    copies: vec![found_copy(1, "a", 10), found_copy(2, "b", 11)],
                    ..found(VALIDITY, &[])
                },
                uid(VALIDITY, 2),
            ),
            (
                "another message under the copy's UID",
                found(VALIDITY, &[(1, "a"), (2, "x")]),
                uid(VALIDITY, 2),
            ),
            (
                "UIDVALIDITY changed since",
                found(VALIDITY + 1, &[(1, "a"), (2, "b")]),
                uid(VALIDITY, 2),
            ),
            (
                "a copy under another UIDVALIDITY",
                found(VALIDITY, &[(1, "a"), (2, "b")]),
                uid(VALIDITY + 1, 2),
            ),
            (
                "a copy without a UID",
                found(VALIDITY, &[(1, "a"), (2, "b")]),
                None,
            ),
        ];
        for (case, found, stored) in cases {
            let mut target = target(found, &["b"]);
            let missing = verify(&sources, &[("INBOX", &b, stored)], &mut target);
            assert_eq!(missing, [vec![a.clone()]], "{case}: the index's verdict");
            assert_eq!(target.indexed, ["INBOX"], "{case}");
        }
    }

    #[test]
    fn source_folders_sharing_a_target_folder_count_each_other_s_copies() {
        // Both hold c, copied once by each.
        let c = message("c");
        let sources = [
            ("One", vec![c.clone()]),
            ("Two", vec![c.clone(), c.clone()]),
        ];
        let copies = [("One", &c, uid(VALIDITY, 2)), ("Two", &c, uid(VALIDITY, 3))];
        let mut target = target(found(VALIDITY, &[(2, "c"), (3, "c")]), &[]);
        assert_eq!(verify(&sources, &copies, &mut target), [vec![], vec![]]);
        assert_eq!(target.asked, [check(&[], &[2, 3])]);
        assert!(target.indexed.is_empty());
    }

    #[test]
    fn a_copy_much_smaller_than_its_source_is_no_copy() {
        // Header-only copies of 13126-byte messages, and rewritten ones.
        assert!(much_smaller(1540, 13_126));
        assert!(!much_smaller(13_126 + 300, 13_126));
        assert!(!much_smaller(13_126 * 3 / 4, 13_126));
        // Half of a small message is within what a server may change.
        assert!(!much_smaller(400, 900));
        assert!(much_smaller(400, 1000));

        let big = |id: &str, size| {
            let mut message = SourceMessage::with_id(0, id);
            message.size = size;
            Arc::new(message)
        };
        let (a, b, c) = (big("a", 13_126), big("b", 13_126), big("c", 13_126));
        let mut index = TargetIndex::default();
        for (message, size) in [(&a, 1540), (&b, 13_200), (&c, 1540), (&c, 13_126)] {
            index.add(
                message.identity.clone(),
                TargetCopy {
                    uid: 0,
                    size,
                    flags: Flags::default(),
                    internal_date: None,
                },
            );
        }
        let missing = missing(&[a.clone(), b, c.clone(), c.clone()], &index);
        assert_eq!(
            missing,
            [
                Missing {
                    message: a,
                    truncated_copy: Some(1540)
                },
                Missing {
                    message: c,
                    truncated_copy: Some(1540)
                }
            ]
        );
        assert_eq!(
            missing[0].reason(),
            "the copy on the target has 1540 bytes of the source's 13126: truncated"
        );

        // Messages sharing an identity, of different sizes, each with its own copy (the small
        // copy listed first is not taken for the big message).
        let (small, large) = (big("d", 1200), big("d", 4000));
        let mut index = TargetIndex::default();
        for size in [1200, 4000] {
            index.add(
                small.identity.clone(),
                TargetCopy {
                    uid: 0,
                    size,
                    flags: Flags::default(),
                    internal_date: None,
                },
            );
        }
        assert_eq!(self::missing(&[large, small], &index), []);
    }

    #[test]
    fn a_uid_named_twice_is_expected_as_this_runs_copy() {
        let (a, b) = (message("a"), message("b"));
        let mut planned = planned();
        planned.add(a.identity.clone(), copy(3, 10));
        let receipts = Receipts::default();
        receipts.message_copied("INBOX", &b, uid(VALIDITY, 1));
        let source_index = [a, b];
        let check = Check {
            source_folder: "INBOX",
            target_folder: "INBOX",
            source_index: &source_index,
            planned: &planned,
        };
        let mut target = target(found(VALIDITY, &[(1, "b"), (3, "a")]), &[]);
        let verdict = missing_after_copies(&[check], &receipts, &mut target).unwrap();
        assert_eq!(verdict.missing, [vec![]]);
        assert!(target.indexed.is_empty(), "{:?}", target.indexed);
    }

    #[test]
    fn uids_found_beyond_those_expected_are_passed_over() {
        let (a, b) = (message("a"), message("b"));
        let others = [(0, "x"), (1, "a"), (2, "y"), (4, "z"), (5, "b"), (9, "w")];
        let mut target = target(found(VALIDITY, &others), &[]);
        let missing = verify(
            &[("INBOX", vec![a, b.clone()])],
            &[("INBOX", &b, uid(VALIDITY, 5))],
            &mut target,
        );
        assert_eq!(missing, [vec![]]);
        assert!(target.indexed.is_empty());
    }

    #[test]
    fn a_truncated_copy_found_by_uid_fails_verification() {
        // This run's copy of b has another size than b: the index decides, and finds it short.
        let (a, mut b) = (message("a"), SourceMessage::with_id(0, "b"));
        b.size = 13_126;
        let b = Arc::new(b);
        let mut target = target(found(VALIDITY, &[(1, "a"), (2, "b")]), &[]);
        target.index.add(
            b.identity.clone(),
            TargetCopy {
                uid: 2,
                size: 1540,
                flags: Flags::default(),
                internal_date: None,
            },
        );
        target.index.add(a.identity.clone(), TargetCopy::default());
        let missing = verify(
            &[("INBOX", vec![a, b.clone()])],
            &[("INBOX", &b, uid(VALIDITY, 2))],
            &mut target,
        );
        assert_eq!(missing, [vec![b]]);
        assert_eq!(target.indexed, ["INBOX"]);
    }
}
