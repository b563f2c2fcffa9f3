//! What the engine tells the rest of the program: events, never output (progress bars, the
//! report, the metrics and the mirror's receipts each observe).

use std::sync::Arc;

use crate::index::SourceMessage;
use crate::plan::FolderPlan;
use crate::store::MessageUid;

/// Receives the engine's events. Every method has a default that ignores the event.
pub trait Observer: Sync {
    /// A folder's copy begins.
    fn folder_started(&self, _plan: &FolderPlan) {}
    /// A message was stored on the target, under this UID when the target said so (and the
    /// bytes sent carry the message's planned identity).
    fn message_copied(
        &self,
        _folder: &str,
        _message: &Arc<SourceMessage>,
        _uid: Option<MessageUid>,
    ) {
    }
    /// The target refused a message, or it could not be transferred.
    fn message_failed(&self, _folder: &str, _message: &SourceMessage, _reason: &str) {}
    /// A connection failed and is about to be opened again, after a wait; `slowed_down` when
    /// the server had asked to slow down (a throttle).
    fn retrying(&self, _slowed_down: bool) {}
}

/// Sees nothing: for work outside a copy (planning) whose retries nobody counts.
pub struct Unobserved;

impl Observer for Unobserved {}

/// Passes every event to each of several observers.
pub struct Fanout<'a>(pub Vec<&'a dyn Observer>);

impl Observer for Fanout<'_> {
    fn folder_started(&self, plan: &FolderPlan) {
        self.0.iter().for_each(|o| o.folder_started(plan));
    }
    fn message_copied(&self, folder: &str, message: &Arc<SourceMessage>, uid: Option<MessageUid>) {
        self.0
            .iter()
            .for_each(|o| o.message_copied(folder, message, uid));
    }
    fn message_failed(&self, folder: &str, message: &SourceMessage, reason: &str) {
        self.0
            .iter()
            .for_each(|o| o.message_failed(folder, message, reason));
    }
    fn retrying(&self, slowed_down: bool) {
        self.0.iter().for_each(|o| o.retrying(slowed_down));
    }
}
