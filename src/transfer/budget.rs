//! The memory budget for message bodies on their way from the source to the target.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Bytes of message bodies the engine holds at once: read from the source, waiting in a
/// batch, or sent and not yet answered (kept for a resend). The fetcher charges each message
/// as it arrives and waits while the budget is spent; a batch gives its charge back once the
/// target answered for it. Memory then stays flat whatever the mailbox size and whatever its
/// mix of big and small messages. A message bigger than the whole budget goes alone.
pub(super) struct ByteBudget {
    held: Mutex<Held>,
    freed: Condvar,
    limit: u64,
}

#[derive(Default)]
struct Held {
    bytes: u64,
    /// Charges waiting for room.
    waiting: usize,
}

impl ByteBudget {
    pub(super) fn new(limit: u64) -> Self {
        ByteBudget {
            held: Mutex::new(Held::default()),
            freed: Condvar::new(),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether charging `bytes` now would wait.
    pub(super) fn would_wait(&self, bytes: u64) -> bool {
        Self::spent(self.lock().bytes, bytes, self.limit)
    }

    /// Whether a charge is waiting for bytes to be given back.
    pub(super) fn is_wanted(&self) -> bool {
        self.lock().waiting > 0
    }

    fn spent(held: u64, bytes: u64, limit: u64) -> bool {
        held > 0 && held + bytes > limit
    }

    /// Charges `bytes`, waiting until they fit (or nothing else is held).
    pub(super) fn charge(&self, bytes: u64) -> Charge<'_> {
        let mut held = self.lock();
        held.waiting += 1;
        let mut held = self
            .freed
            .wait_while(held, |held| Self::spent(held.bytes, bytes, self.limit))
            .unwrap_or_else(PoisonError::into_inner);
        held.waiting -= 1;
        held.bytes += bytes;
        Charge {
            budget: self,
            bytes,
        }
    }

    /// A charge of nothing, to add others to.
    pub(super) fn nothing(&self) -> Charge<'_> {
        Charge {
            budget: self,
            bytes: 0,
        }
    }
}

/// Bytes charged to a [`ByteBudget`]; given back when dropped.
pub(super) struct Charge<'b> {
    budget: &'b ByteBudget,
    bytes: u64,
}

impl Charge<'_> {
    /// Takes over `other`'s bytes.
    pub(super) fn absorb(&mut self, mut other: Charge<'_>) {
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        self.budget.lock().bytes -= self.bytes;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn charges_wait_for_room_and_a_big_message_goes_alone() {
        let budget = ByteBudget::new(10);
        let first = budget.charge(6);
        assert!(!budget.would_wait(4));
        assert!(budget.would_wait(5));
        let mut batch = budget.nothing();
        batch.absorb(budget.charge(4));
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| budget.charge(100).bytes);
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiting.is_finished(), "charged while the budget was spent");
            assert!(budget.is_wanted());
            drop(first);
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !waiting.is_finished(),
                "charged while a batch still held bytes"
            );
            drop(batch);
            assert_eq!(waiting.join().unwrap(), 100);
        });
        assert_eq!(budget.lock().bytes, 0);
    }
}
