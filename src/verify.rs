//! Verification: after a copy, re-index the target and check that every source message is
//! there, by the same identity rules the planner used.

use std::sync::Arc;

use crate::error::Error;
use crate::index::{SourceMessage, TargetIndex};
use crate::plan;
use crate::transfer::Target;

/// The source messages the target still lacks after a copy (empty when the copy is complete).
pub fn missing_after_copy(
    source_index: &[Arc<SourceMessage>],
    target: &mut dyn Target,
    target_folder: &str,
) -> Result<Vec<Arc<SourceMessage>>, Error> {
    Ok(missing(source_index, &target.index(target_folder)?))
}

/// The source messages `target_index` lacks.
pub fn missing(
    source_index: &[Arc<SourceMessage>],
    target_index: &TargetIndex,
) -> Vec<Arc<SourceMessage>> {
    plan::absent(source_index, target_index).cloned().collect()
}
