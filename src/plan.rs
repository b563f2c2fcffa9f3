//! The planner: which source messages the target is missing. Pure: no I/O of any kind.
//!
//! Identities are counted as a multiset: when the source holds k messages with one identity
//! and the target j of them, the last k − j (in source order) are copied. So two different
//! messages that share a Message-ID both arrive, and a re-run copies nothing.
//!
//! Messages are shared with the source index, not copied: a plan of a large mailbox costs a
//! pointer per message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::identity::Identity;
use crate::index::{SourceMessage, TargetIndex};

/// What to do for one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderPlan {
    /// The folder on the source.
    pub source_folder: String,
    /// The folder on the target.
    pub target_folder: String,
    /// How many messages the source folder holds.
    pub source_messages: usize,
    /// Messages to copy, in source order.
    pub to_copy: Vec<Arc<SourceMessage>>,
    /// Source messages the target already holds.
    pub already_present: usize,
    /// Keywords the target folder refuses, with how many copies lose each.
    pub dropped_keywords: BTreeMap<String, usize>,
    /// For identities among `to_copy` that the target folder already held some copies of (the
    /// source holds more), how many it held when planned. The upload workers need it to tell,
    /// after a broken connection, which copies the target stored meanwhile.
    pub target_copies: BTreeMap<Identity, usize>,
}

impl FolderPlan {
    /// Total size of the messages to copy.
    pub fn bytes_to_copy(&self) -> u64 {
        self.to_copy.iter().map(|m| m.size).sum()
    }
}

/// The plan of a folder known to be complete on the target without indexing it (a mirror
/// whose folders did not change since its last run).
pub fn unchanged(source_folder: &str, target_folder: &str, source_messages: usize) -> FolderPlan {
    FolderPlan {
        source_folder: source_folder.to_owned(),
        target_folder: target_folder.to_owned(),
        source_messages,
        to_copy: Vec::new(),
        already_present: source_messages,
        dropped_keywords: BTreeMap::new(),
        target_copies: BTreeMap::new(),
    }
}

/// Compares a source folder's index with the target folder's and plans the copy.
pub fn diff(
    source_folder: &str,
    target_folder: &str,
    source: &[Arc<SourceMessage>],
    target: &TargetIndex,
) -> FolderPlan {
    let mut dropped_keywords = BTreeMap::new();
    let to_copy: Vec<Arc<SourceMessage>> = absent(source, target)
        .map(|message| {
            let refused = |flag: &String| !target.keywords.accepts(flag);
            if !message.flags.iter().any(refused) {
                return Arc::clone(message);
            }
            let mut message = SourceMessage::clone(message);
            message.flags = message
                .flags
                .iter()
                .filter(|flag| {
                    let keep = !refused(flag);
                    if !keep {
                        *dropped_keywords.entry(flag.to_string()).or_default() += 1;
                    }
                    keep
                })
                .cloned()
                .collect();
            Arc::new(message)
        })
        .collect();
    let target_copies = to_copy
        .iter()
        .map(|m| (m.identity.clone(), target.count(&m.identity)))
        .filter(|(_, held)| *held > 0)
        .collect();
    FolderPlan {
        source_folder: source_folder.to_owned(),
        target_folder: target_folder.to_owned(),
        source_messages: source.len(),
        already_present: source.len() - to_copy.len(),
        to_copy,
        dropped_keywords,
        target_copies,
    }
}

/// The source messages `target` lacks, in source order: of k messages with one identity
/// when the target holds j, the last k − j.
pub fn absent<'s>(
    source: &'s [Arc<SourceMessage>],
    target: &TargetIndex,
) -> impl Iterator<Item = &'s Arc<SourceMessage>> {
    let mut seen: HashMap<&Identity, usize> = HashMap::new();
    source.iter().filter(move |message| {
        let n = seen.entry(&message.identity).or_default();
        *n += 1;
        *n > target.count(&message.identity)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(key: u32, id: &str) -> Arc<SourceMessage> {
        Arc::new(SourceMessage::with_id(key, id))
    }

    fn keys(plan: &FolderPlan) -> Vec<u32> {
        plan.to_copy.iter().map(|m| m.key).collect()
    }

    #[test]
    fn copies_what_the_target_lacks() {
        let target: TargetIndex = [Identity::MessageId("b".into())].into_iter().collect();
        let plan = diff(
            "INBOX",
            "INBOX",
            &[msg(1, "a"), msg(2, "b"), msg(3, "c")],
            &target,
        );
        assert_eq!(keys(&plan), vec![1, 3]);
        assert_eq!((plan.source_messages, plan.already_present), (3, 1));
        assert_eq!(plan.bytes_to_copy(), 20);
    }

    #[test]
    fn duplicates_are_counted_not_collapsed() {
        let source = vec![msg(1, "a"), msg(2, "a"), msg(3, "a")];
        let plan = diff("I", "I", &source, &TargetIndex::default());
        assert_eq!(keys(&plan), vec![1, 2, 3]);
        let one_there: TargetIndex = [Identity::MessageId("a".into())].into_iter().collect();
        let plan = diff("I", "I", &source, &one_there);
        assert_eq!(keys(&plan), vec![2, 3]);
        assert_eq!(
            plan.target_copies,
            BTreeMap::from([(Identity::MessageId("a".into()), 1)])
        );
    }

    #[test]
    fn extra_copies_on_the_target_are_left_alone() {
        let target: TargetIndex = std::iter::repeat_n(Identity::MessageId("a".into()), 5).collect();
        let plan = diff("I", "I", &[msg(1, "a")], &target);
        assert!(plan.to_copy.is_empty());
        assert_eq!(plan.already_present, 1);
    }

    #[test]
    fn keywords_the_target_refuses_are_dropped_and_counted() {
        let mut flagged = SourceMessage::with_id(1, "a");
        flagged.flags = ["\\Seen".into(), "$Label1".into(), "custom".into()].into();
        let mut target = TargetIndex::default();
        target.keywords =
            crate::index::KeywordPolicy::from_permanent_flags(&["\\Seen".into(), "$Label1".into()]);
        let plan = diff("I", "I", &[Arc::new(flagged)], &target);
        assert_eq!(*plan.to_copy[0].flags, ["\\Seen", "$Label1"]);
        assert_eq!(plan.dropped_keywords.get("custom"), Some(&1));
    }

    #[test]
    fn flags_imap_cannot_write_are_dropped_where_any_keyword_is_stored() {
        let mut flagged = SourceMessage::with_id(1, "a");
        flagged.flags = [
            "\\Seen".into(),
            "odd]".into(),
            "\\*".into(),
            "$Label1".into(),
        ]
        .into();
        let plan = diff("I", "I", &[Arc::new(flagged)], &TargetIndex::default());
        assert_eq!(*plan.to_copy[0].flags, ["\\Seen", "$Label1"]);
        assert_eq!(plan.dropped_keywords.get("odd]"), Some(&1));
        assert_eq!(plan.dropped_keywords.get("\\*"), Some(&1));
    }

    #[test]
    fn the_plan_shares_the_source_messages_and_leaves_their_flags_alone() {
        let mut flagged = SourceMessage::with_id(2, "b");
        flagged.flags = ["\\Seen".into(), "custom".into()].into();
        let source = [msg(1, "a"), Arc::new(flagged)];
        let mut target = TargetIndex::default();
        target.keywords = crate::index::KeywordPolicy::from_permanent_flags(&["\\Seen".into()]);
        let plan = diff("I", "I", &source, &target);
        assert!(Arc::ptr_eq(&plan.to_copy[0], &source[0]));
        assert_eq!(*plan.to_copy[1].flags, ["\\Seen"]);
        assert_eq!(*source[1].flags, ["\\Seen", "custom"]);
    }

    proptest! {
        /// The plan copies, of every identity k, exactly max(0, source_k - target_k) messages:
        /// all but the first target_k of k, in source order. After they are copied, a second
        /// plan is empty.
        #[test]
        fn copying_the_plan_converges(source_ids in prop::collection::vec(0u8..6, 0..40),
                                      target_ids in prop::collection::vec(0u8..6, 0..40)) {
            let source: Vec<_> = source_ids.iter().enumerate()
                .map(|(i, id)| msg(i as u32, &id.to_string())).collect();
            let mut target: TargetIndex = target_ids.iter()
                .map(|id| Identity::MessageId(id.to_string().into())).collect();
            let plan = diff("I", "I", &source, &target);
            let expected: Vec<u32> = source_ids.iter().enumerate()
                .filter(|&(i, id)| {
                    let earlier = source_ids[..i].iter().filter(|s| *s == id).count();
                    let held = target_ids.iter().filter(|t| *t == id).count();
                    earlier + 1 > held
                })
                .map(|(i, _)| i as u32)
                .collect();
            prop_assert_eq!(keys(&plan), expected);
            for m in &plan.to_copy {
                target.add(m.identity.clone(), crate::index::TargetCopy::default());
            }
            prop_assert!(diff("I", "I", &source, &target).to_copy.is_empty());
        }
    }
}
