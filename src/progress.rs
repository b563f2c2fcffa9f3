//! Progress bars on the terminal, fed by the engine's events. Hidden when stderr is not a
//! terminal (cron) or with `--quiet`; the engine itself never touches the terminal.

use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::index::SourceMessage;
use crate::plan::FolderPlan;
use crate::store::MessageUid;
use crate::transfer::Observer;

/// Two bars: messages (with rate and ETA) and bytes (with throughput).
pub struct ProgressBars {
    messages: ProgressBar,
    bytes: ProgressBar,
}

impl ProgressBars {
    /// Bars sized for the whole job; drawn on stderr only when `visible` and stderr is a TTY.
    pub fn new(total_messages: u64, total_bytes: u64, visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let messages = multi.add(ProgressBar::new(total_messages).with_style(style(
            "{prefix:>8} [{bar:40.cyan/blue}] {pos}/{len} msgs  {per_sec:.green}  ETA {eta}",
        )));
        let bytes = multi.add(ProgressBar::new(total_bytes).with_style(style(
            "{prefix:>8} [{bar:40.cyan/blue}] {bytes}/{total_bytes}  {binary_bytes_per_sec:.green}",
        )));
        messages.set_prefix("copying");
        bytes.set_prefix("");
        ProgressBars { messages, bytes }
    }

    /// Removes the bars from the screen.
    pub fn finish(&self) {
        self.messages.finish_and_clear();
        self.bytes.finish_and_clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("progress templates are constants")
        .progress_chars("=> ")
}

impl Observer for ProgressBars {
    fn folder_started(&self, plan: &FolderPlan) {
        self.messages.set_prefix(plan.target_folder.clone());
    }

    fn message_copied(
        &self,
        _folder: &str,
        message: &Arc<SourceMessage>,
        _uid: Option<MessageUid>,
    ) {
        self.messages.inc(1);
        self.bytes.inc(message.size);
    }

    fn message_failed(&self, _folder: &str, message: &SourceMessage, _reason: &str) {
        self.messages.inc(1);
        self.bytes.inc(message.size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::TargetIndex;

    #[test]
    fn copies_and_failures_each_advance_both_bars() {
        let bars = ProgressBars::new(3, 30, false);
        let source: Vec<_> = (1..=3)
            .map(|key| Arc::new(SourceMessage::with_id(key, &format!("m{key}"))))
            .collect();
        let plan = crate::plan::diff("INBOX", "Archive", &source, &TargetIndex::default());
        bars.folder_started(&plan);
        assert_eq!(bars.messages.prefix(), "Archive");
        bars.message_copied("INBOX", &source[0], None);
        bars.message_failed("INBOX", &source[1], "too big");
        assert_eq!((bars.messages.position(), bars.bytes.position()), (2, 20));
        assert_eq!(
            (bars.messages.length(), bars.bytes.length()),
            (Some(3), Some(30))
        );
        bars.finish();
        assert!(bars.messages.is_finished() && bars.bytes.is_finished());
    }

    #[test]
    fn bars_asked_to_hide_draw_nothing() {
        let bars = ProgressBars::new(3, 30, false);
        assert!(bars.messages.is_hidden() && bars.bytes.is_hidden());
    }
}
