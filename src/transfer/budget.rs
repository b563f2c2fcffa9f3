//! The memory budget for message bodies on their way from the source to the target.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

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
    /// The tickets of the charges waiting, first come first served: a message bigger than
    /// the room left must not be overtaken, again and again, by smaller ones.
    queue: VecDeque<u64>,
    next_ticket: u64,
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

    /// Whether a charge is waiting for bytes to be given back.
    pub(super) fn is_wanted(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// Wakes the waiting charges, to look at their `abandon` flag.
    pub(super) fn wake(&self) {
        self.freed.notify_all();
    }

    fn spent(held: u64, bytes: u64, limit: u64) -> bool {
        held > 0 && held + bytes > limit
    }

    /// Charges `bytes`, waiting until they fit (or nothing else is held) and every charge
    /// that asked before is served, or until `abandon` is set (see [`wake`](Self::wake)):
    /// the folder failed, and what would give bytes back may never be taken off its queue.
    pub(super) fn charge(&self, bytes: u64, abandon: &AtomicBool) -> Charge<'_> {
        self.charge_within(bytes, abandon, None)
            .expect("a charge without a deadline is always made")
    }

    /// [`charge`](Self::charge), waiting at most `patience` when it is given: `None` then
    /// when the bytes were not charged by then (the charge leaves the queue). A fetcher that
    /// holds an unsent batch waits so: the bytes it waits for may be its own batch's, which
    /// it must then send.
    pub(super) fn charge_within(
        &self,
        bytes: u64,
        abandon: &AtomicBool,
        patience: Option<Duration>,
    ) -> Option<Charge<'_>> {
        let mut held = self.lock();
        let ticket = held.next_ticket;
        held.next_ticket += 1;
        held.queue.push_back(ticket);
        let waiting = |held: &mut Held| {
            !abandon.load(Ordering::SeqCst)
                && (held.queue.front() != Some(&ticket)
                    || Self::spent(held.bytes, bytes, self.limit))
        };
        let mut held = match patience {
            None => self
                .freed
                .wait_while(held, waiting)
                .unwrap_or_else(PoisonError::into_inner),
            Some(patience) => {
                self.freed
                    .wait_timeout_while(held, patience, waiting)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
        let charged = !waiting(&mut held);
        held.queue.retain(|waiting| *waiting != ticket);
        if charged {
            held.bytes += bytes;
        }
        drop(held);
        // The next in line may fit too (or be first now).
        self.freed.notify_all();
        // `then`, not `then_some`: a charge not made must not be built, as dropping it would
        // give back bytes never charged.
        charged.then(|| Charge {
            budget: self,
            bytes,
        })
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

    #[test]
    fn charges_wait_for_room_and_a_big_message_goes_alone() {
        let go_on = AtomicBool::new(false);
        let budget = ByteBudget::new(10);
        let first = budget.charge(6, &go_on);
        let now = Some(Duration::ZERO);
        assert!(budget.charge_within(5, &go_on, now).is_none());
        assert!(!budget.is_wanted(), "a charge that gave up left the queue");
        let mut batch = budget.nothing();
        batch.absorb(budget.charge_within(4, &go_on, now).unwrap());
        std::thread::scope(|scope| {
            let big = scope.spawn(|| budget.charge(100, &go_on).bytes);
            std::thread::sleep(Duration::from_millis(50));
            assert!(!big.is_finished(), "charged while the budget was spent");
            assert!(budget.is_wanted());
            drop(first);
            // A small charge that would fit does not overtake the big one waiting.
            assert!(budget.charge_within(1, &go_on, now).is_none());
            let small = scope.spawn(|| budget.charge(1, &go_on).bytes);
            std::thread::sleep(Duration::from_millis(50));
            assert!(!big.is_finished(), "charged while a batch still held bytes");
            assert!(!small.is_finished(), "overtook a charge waiting before it");
            drop(batch);
            assert_eq!(big.join().unwrap(), 100);
            assert_eq!(small.join().unwrap(), 1);
        });
        assert_eq!(budget.lock().bytes, 0);
    }

    #[test]
    fn an_abandoned_charge_stops_waiting() {
        let abandon = AtomicBool::new(false);
        let budget = ByteBudget::new(10);
        let held = budget.charge(10, &abandon);
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| budget.charge(5, &abandon).bytes);
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiting.is_finished());
            abandon.store(true, Ordering::SeqCst);
            budget.wake();
            assert_eq!(waiting.join().unwrap(), 5);
        });
        drop(held);
        assert_eq!(budget.lock().bytes, 0);
        assert!(!budget.is_wanted());
    }

    #[test]
    fn a_charge_that_runs_out_of_patience_lets_the_next_one_in_line_go_first() {
        let go_on = AtomicBool::new(false);
        let budget = ByteBudget::new(10);
        let unsent = budget.charge(8, &go_on);
        std::thread::scope(|scope| {
            let patient = scope.spawn(|| {
                budget
                    .charge_within(5, &go_on, Some(Duration::from_millis(200)))
                    .map(|c| c.bytes)
            });
            std::thread::sleep(Duration::from_millis(50));
            let behind = scope.spawn(|| budget.charge(2, &go_on).bytes);
            assert_eq!(patient.join().unwrap(), None);
            assert_eq!(
                behind.join().unwrap(),
                2,
                "served once the first in line gave up"
            );
        });
        drop(unsent);
        assert_eq!(budget.lock().bytes, 0);
    }
}
