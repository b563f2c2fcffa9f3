//! Which messages a mirror may destroy, decided from evidence alone: the copies it recorded
//! making ([`CopyRecord`]), what the source lists now, and what the target holds now. No
//! socket here; the stores carry the decision out and check it once more on the session that
//! deletes (the UIDVALIDITY at SELECT, the UIDL, size and header at DELE).
//!
//! A copy is removed from the target only when all of this holds:
//! - the mirror made it, and the target said where it stored it (APPENDUID) under the
//!   UIDVALIDITY the target folder still has;
//! - the target still holds, at that UID, a message with the identity the copy was made of;
//! - the source message it was made of is gone from a source index that is complete (it has
//!   every message the source announced) and is read under the UIDVALIDITY the record's
//!   source UID belongs to;
//! - the target keeps at least as many messages of that identity as the source still has.
//!
//! When evidence is missing, nothing is deleted and the reason is given: a guess would be a
//! lost message.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::identity::Identity;
use crate::index::{SourceMessage, SourceView, TargetIndex};
use crate::store::DeletionEvidence;
use crate::store::MessageUid;

/// One copy a mirror made: what it was made of and where the target put it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRecord {
    /// The identity of the source message, as read from its bytes when it was copied.
    pub identity: Identity,
    /// The source message it was made of.
    pub source: SourceRef,
    /// The source message's size in octets (POP3 LIST, IMAP RFC822.SIZE) when it was read.
    pub size: u64,
    /// Where the target stored the copy, when it said (UIDPLUS `APPENDUID`).
    pub target: Option<MessageUid>,
    /// Whether the mirror deletes (or deleted) the source message itself
    /// (`--delete-source-after-days`): then its leaving the source is no reason to remove
    /// the copy, which is now the only one.
    #[serde(default)]
    pub source_deleted: bool,
}

/// How a source message is found again in a later session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceRef {
    /// An IMAP UID, under the folder's recorded UIDVALIDITY.
    Uid(u32),
    /// A POP3 UIDL.
    Uidl(String),
}

impl SourceRef {
    /// How the source calls this indexed message across sessions: its UIDL when it has one
    /// (POP3), else its key as a UID when the folder has a UIDVALIDITY (IMAP); else nothing
    /// does (a POP3 message number names a message for one session only).
    pub fn of(message: &SourceMessage, uid_validity: Option<u32>) -> Option<Self> {
        match &message.stable_id {
            Some(uidl) => Some(SourceRef::Uidl(uidl.clone())),
            None => uid_validity.map(|_| SourceRef::Uid(message.key)),
        }
    }
}

/// The decision for one folder.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Departures {
    /// Target UIDs to remove, under `uid_validity`.
    pub doomed: Vec<u32>,
    /// The target folder's UIDVALIDITY the doomed UIDs belong to.
    pub uid_validity: Option<u32>,
    /// The records to keep for later runs (the doomed ones are not among them).
    pub kept: Vec<CopyRecord>,
    /// Why some copies whose source left were not removed, for the report.
    pub held_back: Vec<String>,
}

/// Decides which of `records` (copies made from a source folder into a target folder) go:
/// see the module documentation for the rule. `recorded_validity` is the source folder's
/// UIDVALIDITY the records' UIDs were read under.
pub fn departures(
    records: Vec<CopyRecord>,
    recorded_validity: Option<u32>,
    view: SourceView,
    source_index: &[Arc<SourceMessage>],
    target_index: &TargetIndex,
) -> Departures {
    let mut out = Departures {
        uid_validity: target_index.uid_validity,
        ..Departures::default()
    };
    // Nothing recorded, nothing to hold back: no warning (a first run into a new folder).
    if records.is_empty() {
        return out;
    }
    if !view.complete {
        out.held_back.push(
            "the source listed fewer messages than it announced; nothing deleted this run"
                .to_owned(),
        );
        out.kept = records;
        return out;
    }
    let Some(target_validity) = target_index.uid_validity else {
        out.held_back
            .push("the target did not say its UIDVALIDITY; nothing deleted this run".to_owned());
        out.kept = records;
        return out;
    };
    let on_source: HashSet<SourceRef> = source_index
        .iter()
        .filter_map(|m| SourceRef::of(m, view.uid_validity))
        .collect();
    let mut source_counts: HashMap<&Identity, usize> = HashMap::new();
    for message in source_index {
        *source_counts.entry(&message.identity).or_default() += 1;
    }
    let at_uid: HashMap<u32, &Identity> = target_index
        .identities()
        .flat_map(|identity| {
            target_index
                .copies(identity)
                .iter()
                .map(move |copy| (copy.uid, identity))
        })
        .collect();
    let source_renumbered = view.uid_validity != recorded_validity;
    let (mut renumbered, mut target_renumbered, mut unlocated) = (0, 0, 0);
    let mut doomed_by_identity: HashMap<Identity, usize> = HashMap::new();
    for record in records {
        // A UID read under another UIDVALIDITY names nothing now: the copy stays, and is no
        // longer the mirror's to delete.
        if matches!(record.source, SourceRef::Uid(_)) && source_renumbered {
            renumbered += 1;
            continue;
        }
        let copy = record
            .target
            .filter(|at| at.uid_validity == target_validity);
        let still_there = copy.is_some_and(|at| at_uid.get(&at.uid) == Some(&&record.identity));
        // The mirror deleted the source message itself: the copy is the one left.
        if record.source_deleted && !on_source.contains(&record.source) {
            continue;
        }
        if on_source.contains(&record.source) {
            // Kept while its copy is there (or cannot be checked); a copy someone else
            // removed or replaced is forgotten.
            if still_there || copy.is_none() && record.target.is_none() {
                out.kept.push(record);
            }
            continue;
        }
        let Some(at) = copy.filter(|_| still_there) else {
            // Else the copy was removed or replaced on the target: nothing of ours is left.
            match record.target {
                None => unlocated += 1,
                Some(at) if at.uid_validity != target_validity => target_renumbered += 1,
                Some(_) => {}
            }
            continue;
        };
        // The target keeps at least as many of the identity as the source still has.
        let on_target = target_index.count(&record.identity);
        let doomed = doomed_by_identity
            .entry(record.identity.clone())
            .or_default();
        let still_on_source = source_counts.get(&record.identity).copied().unwrap_or(0);
        if on_target.saturating_sub(*doomed + 1) < still_on_source {
            out.kept.push(record);
            continue;
        }
        *doomed += 1;
        out.doomed.push(at.uid);
    }
    if renumbered > 0 {
        out.held_back.push(format!(
            "the source folder's UIDVALIDITY changed: {renumbered} earlier cop(ies) can no \
             longer be matched to source messages and will not be deleted"
        ));
    }
    if target_renumbered > 0 {
        out.held_back.push(format!(
            "the target folder's UIDVALIDITY changed: {target_renumbered} earlier cop(ies) \
             can no longer be identified and will not be deleted"
        ));
    }
    if unlocated > 0 {
        out.held_back.push(format!(
            "{unlocated} cop(ies) whose message left the source were kept: the target did not \
             say where it stored them (no UIDPLUS)"
        ));
    }
    out.doomed.sort_unstable();
    out
}

impl DeletionEvidence {
    /// The evidence a record gives, when it names a POP3 message.
    pub fn of(record: &CopyRecord) -> Option<Self> {
        match &record.source {
            SourceRef::Uidl(uidl) => Some(DeletionEvidence {
                uidl: uidl.clone(),
                size: record.size,
                identity: record.identity.clone(),
            }),
            SourceRef::Uid(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::TargetCopy;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn id(n: u8) -> Identity {
        Identity::MessageId(format!("m{n}@x").into())
    }

    fn source_message(uid: u32, identity: u8) -> Arc<SourceMessage> {
        let mut message = SourceMessage::with_id(uid, "");
        message.identity = id(identity);
        Arc::new(message)
    }

    fn target(validity: u32, copies: &[(u32, u8)]) -> TargetIndex {
        let mut index = TargetIndex::default();
        index.uid_validity = Some(validity);
        for &(uid, identity) in copies {
            index.add(
                id(identity),
                TargetCopy {
                    uid,
                    ..TargetCopy::default()
                },
            );
        }
        index
    }

    fn record(source_uid: u32, identity: u8, target: Option<(u32, u32)>) -> CopyRecord {
        CopyRecord {
            identity: id(identity),
            source: SourceRef::Uid(source_uid),
            size: 10,
            target: target.map(|(uid_validity, uid)| MessageUid { uid_validity, uid }),
            source_deleted: false,
        }
    }

    const COMPLETE: SourceView = SourceView {
        uid_validity: Some(1),
        complete: true,
    };

    #[test]
    fn only_the_mirrors_own_copy_goes_not_another_with_the_same_message_id() {
        // The mirror copied m1 (source UID 1) to target UID 1; m1 reached the target another
        // way as UID 2; m1 left the source.
        let decision = departures(
            vec![record(1, 1, Some((9, 1)))],
            Some(1),
            COMPLETE,
            &[],
            &target(9, &[(1, 1), (2, 1)]),
        );
        assert_eq!(decision.doomed, [1]);
        assert!(decision.kept.is_empty());
    }

    #[test]
    fn without_records_nothing_is_held_back_and_nothing_said() {
        let unsaid = departures(
            Vec::new(),
            None,
            SourceView {
                complete: false,
                ..COMPLETE
            },
            &[],
            &TargetIndex::default(),
        );
        assert!(
            unsaid.held_back.is_empty() && unsaid.doomed.is_empty(),
            "{unsaid:?}"
        );
    }

    #[test]
    fn nothing_goes_without_evidence() {
        let gone = || vec![record(1, 1, Some((9, 1)))];
        let held = |d: Departures| {
            assert!(d.doomed.is_empty(), "{d:?}");
            assert!(!d.held_back.is_empty());
        };
        // A short source index, a source renumbered, a target renumbered, no APPENDUID.
        held(departures(
            gone(),
            Some(1),
            SourceView {
                complete: false,
                ..COMPLETE
            },
            &[],
            &target(9, &[(1, 1)]),
        ));
        held(departures(
            gone(),
            Some(2),
            COMPLETE,
            &[],
            &target(9, &[(1, 1)]),
        ));
        held(departures(
            gone(),
            Some(1),
            COMPLETE,
            &[],
            &target(8, &[(1, 1)]),
        ));
        held(departures(
            vec![record(1, 1, None)],
            Some(1),
            COMPLETE,
            &[],
            &target(9, &[(1, 1)]),
        ));
        // The UID now holds another message.
        let replaced = departures(gone(), Some(1), COMPLETE, &[], &target(9, &[(1, 2)]));
        assert!(replaced.doomed.is_empty());
    }

    #[test]
    fn a_copy_whose_source_message_the_mirror_deleted_stays() {
        let mut handed_over = record(1, 1, Some((9, 1)));
        handed_over.source_deleted = true;
        let decision = departures(
            vec![handed_over],
            Some(1),
            COMPLETE,
            &[],
            &target(9, &[(1, 1)]),
        );
        assert!(decision.doomed.is_empty());
        assert!(decision.kept.is_empty());
    }

    #[test]
    fn the_target_keeps_as_many_of_an_identity_as_the_source_still_has() {
        // Two source messages with m1, two copies; source UID 1 left, UID 2 stays.
        let decision = departures(
            vec![record(1, 1, Some((9, 5))), record(2, 1, Some((9, 6)))],
            Some(1),
            COMPLETE,
            &[source_message(2, 1)],
            &target(9, &[(5, 1), (6, 1)]),
        );
        assert_eq!(decision.doomed, [5]);
        assert_eq!(decision.kept, [record(2, 1, Some((9, 6)))]);
        // The source's other m1 was never copied (the target had one): the only copy stays.
        let decision = departures(
            vec![record(1, 1, Some((9, 5)))],
            Some(1),
            COMPLETE,
            &[source_message(2, 1)],
            &target(9, &[(5, 1)]),
        );
        assert!(decision.doomed.is_empty());
        assert_eq!(decision.kept, [record(1, 1, Some((9, 5)))]);
    }

    /// A world of one source folder and one target folder, changed at random between mirror
    /// runs, tracking which target messages are copies of which source message.
    #[derive(Debug, Clone)]
    enum Step {
        /// A new message arrives on the source (identity).
        Arrive(u8),
        /// A source message leaves (position).
        Leave(usize),
        /// A message is delivered to the target another way (identity).
        Deliver(u8),
        /// Someone removes a target message (position).
        Remove(usize),
        /// The target folder is recreated: new UIDVALIDITY, messages renumbered.
        RenumberTarget,
        /// The source folder is rebuilt: new UIDVALIDITY, messages renumbered.
        RenumberSource,
        /// A mirror run with `--delete`; its copy is cut after this many uploads, and its
        /// source index is short of one message when `short`.
        Run { cut: usize, short: bool },
        /// `--delete-source-after-days 0`: the mirror deletes from the source the messages
        /// it holds copies of; with `cut`, the run dies after marking them and before the
        /// source deleted anything.
        DeleteFromSource { cut: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            // Few identities and positions, so duplicates and collisions are common.
            (0u8..2).prop_map(Step::Arrive),
            (0usize..4).prop_map(Step::Leave),
            (0u8..2).prop_map(Step::Deliver),
            (0usize..4).prop_map(Step::Remove),
            Just(Step::RenumberTarget),
            Just(Step::RenumberSource),
            (prop_oneof![Just(1usize), Just(usize::MAX)], any::<bool>())
                .prop_map(|(cut, short)| Step::Run { cut, short }),
            any::<bool>().prop_map(|cut| Step::DeleteFromSource { cut }),
        ]
    }

    /// A target message: its identity and, when a mirror run made it, the source message
    /// (by serial number, which survives renumbering) it is a copy of.
    #[derive(Debug, Clone)]
    struct Stored {
        identity: u8,
        copy_of: Option<u64>,
    }

    #[derive(Debug, Default)]
    struct World {
        serial: u64,
        /// Source messages: serial → (UID, identity).
        source: BTreeMap<u64, (u32, u8)>,
        source_validity: u32,
        source_next_uid: u32,
        target: BTreeMap<u32, Stored>,
        target_validity: u32,
        target_next_uid: u32,
        records: Vec<CopyRecord>,
        recorded_validity: Option<u32>,
        /// Source messages the mirror deleted from the source: their copies must stay.
        handed_over: HashSet<u64>,
    }

    impl World {
        fn source_index(&self, short: bool) -> Vec<Arc<SourceMessage>> {
            let skip = usize::from(short);
            self.source
                .values()
                .skip(skip)
                .map(|&(uid, identity)| source_message(uid, identity))
                .collect()
        }

        fn target_index(&self) -> TargetIndex {
            let copies: Vec<(u32, u8)> = self
                .target
                .iter()
                .map(|(&uid, s)| (uid, s.identity))
                .collect();
            target(self.target_validity, &copies)
        }

        fn store(&mut self, stored: Stored) -> u32 {
            self.target_next_uid += 1;
            self.target.insert(self.target_next_uid, stored);
            self.target_next_uid
        }

        fn renumber_target(&mut self) {
            self.target_validity += 1;
            let old = std::mem::take(&mut self.target);
            self.target_next_uid = 0;
            for stored in old.into_values() {
                self.store(stored);
            }
        }

        /// One mirror run: deletion by the rule, then the copy of what the target lacks
        /// (by multiset), recording each copy with its APPENDUID. Panics when the rule
        /// removes anything but a copy of a message that left the source.
        fn run(&mut self, cut: usize, short: bool) {
            let index = self.source_index(short);
            let view = SourceView {
                uid_validity: Some(self.source_validity),
                complete: !short,
            };
            let decision = departures(
                std::mem::take(&mut self.records),
                self.recorded_validity,
                view,
                &index,
                &self.target_index(),
            );
            for uid in &decision.doomed {
                let stored = self.target.remove(uid).expect("a doomed UID exists");
                let serial = stored
                    .copy_of
                    .unwrap_or_else(|| panic!("deleted UID {uid}, not a mirror copy"));
                assert!(
                    !self.source.contains_key(&serial),
                    "deleted the copy of a message still on the source"
                );
                assert!(
                    !self.handed_over.contains(&serial),
                    "deleted the only copy of a message the mirror deleted from the source"
                );
            }
            self.records = decision.kept;
            if short {
                return;
            }
            self.recorded_validity = Some(self.source_validity);
            let mut on_target: HashMap<u8, usize> = HashMap::new();
            for stored in self.target.values() {
                *on_target.entry(stored.identity).or_default() += 1;
            }
            let mut uploads = 0;
            let source: Vec<(u64, (u32, u8))> = self.source.iter().map(|(&s, &m)| (s, m)).collect();
            for (serial, (uid, identity)) in source {
                let have = on_target.entry(identity).or_default();
                if *have > 0 {
                    *have -= 1;
                    continue;
                }
                if uploads == cut {
                    break;
                }
                uploads += 1;
                let at = self.store(Stored {
                    identity,
                    copy_of: Some(serial),
                });
                self.records.push(CopyRecord {
                    identity: id(identity),
                    source: SourceRef::Uid(uid),
                    size: 10,
                    target: Some(MessageUid {
                        uid_validity: self.target_validity,
                        uid: at,
                    }),
                    source_deleted: false,
                });
            }
        }

        /// Marks (and, unless cut, deletes from the source) the source messages whose
        /// recorded copy is still on the target.
        fn delete_from_source(&mut self, cut: bool) {
            let by_uid: HashMap<u32, u64> = self
                .source
                .iter()
                .map(|(&serial, &(uid, _))| (uid, serial))
                .collect();
            for record in &mut self.records {
                let (SourceRef::Uid(uid), Some(at)) = (&record.source, record.target) else {
                    continue;
                };
                let still_there =
                    at.uid_validity == self.target_validity && self.target.contains_key(&at.uid);
                let serial = by_uid.get(uid).filter(|_| {
                    self.recorded_validity == Some(self.source_validity) && still_there
                });
                if let Some(&serial) = serial {
                    record.source_deleted = true;
                    if !cut {
                        self.source.remove(&serial);
                        self.handed_over.insert(serial);
                    }
                }
            }
        }

        fn apply(&mut self, step: Step) {
            match step {
                Step::Arrive(identity) => {
                    self.serial += 1;
                    self.source_next_uid += 1;
                    self.source
                        .insert(self.serial, (self.source_next_uid, identity));
                }
                Step::Leave(at) => {
                    if let Some(&serial) = self.source.keys().nth(at) {
                        self.source.remove(&serial);
                    }
                }
                Step::Deliver(identity) => {
                    self.store(Stored {
                        identity,
                        copy_of: None,
                    });
                }
                Step::Remove(at) => {
                    if let Some(&uid) = self.target.keys().nth(at)
                        && let Some(Stored {
                            copy_of: Some(serial),
                            ..
                        }) = self.target.remove(&uid)
                    {
                        // Someone else's deletion: no promise broken.
                        self.handed_over.remove(&serial);
                    }
                }
                Step::RenumberTarget => self.renumber_target(),
                Step::RenumberSource => {
                    self.source_validity += 1;
                    self.source_next_uid = 0;
                    for message in self.source.values_mut() {
                        self.source_next_uid += 1;
                        message.0 = self.source_next_uid;
                    }
                }
                Step::Run { cut, short } => self.run(cut, short),
                Step::DeleteFromSource { cut } => self.delete_from_source(cut),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_deletes_what_is_not_a_copy_of_a_departed_message(
            steps in prop::collection::vec(step(), 1..40)
        ) {
            let mut world = World {
                source_validity: 1,
                target_validity: 1,
                ..World::default()
            };
            for step in steps {
                world.apply(step);
            }
            // A final full run leaves the target with every source message.
            world.run(usize::MAX, false);
            let mut on_target: HashMap<u8, usize> = HashMap::new();
            for stored in world.target.values() {
                *on_target.entry(stored.identity).or_default() += 1;
            }
            for &(_, identity) in world.source.values() {
                let have = on_target.entry(identity).or_default();
                prop_assert!(*have > 0, "source message missing on the target");
                *have -= 1;
            }
            for serial in &world.handed_over {
                prop_assert!(
                    world.target.values().any(|s| s.copy_of == Some(*serial)),
                    "a message the mirror deleted from the source is gone from the target"
                );
            }
        }
    }
}
