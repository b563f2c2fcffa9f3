//! Verification: after a copy, re-index the target and check that every source message is
//! there, by the same identity rules the planner used.

use crate::error::Error;
use crate::index::{SourceMessage, TargetIndex};
use crate::plan;
use crate::transfer::Target;

/// The source messages the target still lacks after a copy (empty when the copy is complete).
pub fn missing_after_copy(
    source_index: &[SourceMessage],
    target: &mut dyn Target,
    target_folder: &str,
) -> Result<Vec<SourceMessage>, Error> {
    Ok(missing(source_index, &target.index(target_folder)?))
}

/// The source messages `target_index` lacks.
pub fn missing(source_index: &[SourceMessage], target_index: &TargetIndex) -> Vec<SourceMessage> {
    plan::diff("", "", source_index.to_vec(), target_index).to_copy
}
