//! Verification: after a copy, re-index the target and check that every source message is
//! there, by the same identity rules the planner used.

use crate::error::Error;
use crate::index::SourceMessage;
use crate::plan;
use crate::transfer::Target;

/// The source messages the target still lacks after a copy (empty when the copy is complete).
pub fn missing_after_copy(
    source_index: &[SourceMessage],
    target: &mut dyn Target,
    target_folder: &str,
) -> Result<Vec<SourceMessage>, Error> {
    let target_index = target.index(target_folder)?;
    Ok(plan::diff("", target_folder, source_index.to_vec(), &target_index).to_copy)
}
