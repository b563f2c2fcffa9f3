//! How the engine sizes its work, and how long it waits before a retry: exponential backoff,
//! longer when the server asked to slow down, jittered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Observer;
use crate::error::{Error, SessionError};
use crate::plan::FolderPlan;

/// How the engine sizes its work.
#[derive(Debug, Clone, Copy)]
pub struct TransferSettings {
    /// Upload connections to the target.
    pub connections: usize,
    /// A batch closes when it reaches this many bytes (a bigger message travels alone).
    pub batch_bytes: u64,
    /// A batch closes when it holds this many messages.
    pub batch_messages: usize,
    /// How many times an upload worker opens a new target connection after one broke, for
    /// one batch (or for its first login), before it gives up.
    pub retries: u32,
    /// The wait before the first retry; each further retry for the same batch waits twice as
    /// long as the one before, up to [`MAX_RETRY_DELAY`].
    pub retry_delay: Duration,
    /// The same after the server asked to slow down (a `[THROTTLED]` or `[UNAVAILABLE]`
    /// refusal, an untagged BYE), up to [`MAX_THROTTLE_DELAY`].
    pub throttle_delay: Duration,
    /// Bytes of message bodies held in memory at once, at most (a bigger message goes
    /// alone): fetched, batched, or sent and not yet answered.
    pub memory_budget: u64,
    /// Whether a folder may have several upload connections at once (see
    /// [`Target::concurrent_writers`](crate::store::Target::concurrent_writers)); otherwise each lane has one.
    pub concurrent_writers: bool,
    /// Start each copy of a message with a UIDL with an `X-UIDL` field
    /// (`--keep-pop3-uidl header`, see [`crate::uidl_keeping`]).
    pub add_uidl_field: bool,
}

/// The longest round trip the default memory budget keeps a target busy over; see
/// [`TransferSettings::for_round_trip`].
pub const BUDGET_ROUND_TRIP: Duration = Duration::from_millis(50);

/// How many times its memory budget a copy over a long round trip may hold, at most.
const MAX_BUDGET_GROWTH: u32 = 4;

/// The longest wait before a retry.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// The longest wait before a retry after the server asked to slow down.
pub const MAX_THROTTLE_DELAY: Duration = Duration::from_secs(60);

impl Default for TransferSettings {
    fn default() -> Self {
        TransferSettings {
            connections: 2,
            batch_bytes: 2 * 1024 * 1024,
            batch_messages: 100,
            retries: 3,
            retry_delay: Duration::from_millis(200),
            throttle_delay: Duration::from_secs(2),
            // Over a 50 ms round trip (BUDGET_ROUND_TRIP), answers free it at about 300 MB/s.
            memory_budget: 16 * 1024 * 1024,
            concurrent_writers: true,
            add_uidl_field: false,
        }
    }
}

impl TransferSettings {
    /// These settings for a target whose login took `round_trip`: over a link slower than
    /// [`BUDGET_ROUND_TRIP`], the memory budget grows with the round trip (up to
    /// [`MAX_BUDGET_GROWTH`] times), since the bytes sent are held until their answer frees
    /// them a round trip later, and a budget smaller than what the link holds in flight
    /// leaves the target waiting.
    pub fn for_round_trip(self, round_trip: Option<Duration>) -> Self {
        let Some(round_trip) = round_trip.filter(|rtt| *rtt > BUDGET_ROUND_TRIP) else {
            return self;
        };
        let growth = round_trip
            .div_duration_f64(BUDGET_ROUND_TRIP)
            .min(f64::from(MAX_BUDGET_GROWTH));
        TransferSettings {
            memory_budget: (self.memory_budget as f64 * growth) as u64,
            ..self
        }
    }

    /// How many batches a plan's messages make, at least (a message bigger than a batch
    /// travels alone).
    pub(super) fn batches_of(&self, plan: &FolderPlan) -> usize {
        plan.to_copy
            .len()
            .div_ceil(self.batch_messages)
            .max(plan.bytes_to_copy().div_ceil(self.batch_bytes) as usize)
            .min(plan.to_copy.len())
    }

    /// Calls `open` until it succeeds, fails with an error `worth_retrying` rejects, or has
    /// failed `retries` times more (waiting [`delay_before_retry`](Self::delay_before_retry)
    /// between tries, each one told to `observer`); stops early once `give_up` is set.
    pub(crate) fn retry<T>(
        &self,
        observer: &dyn Observer,
        give_up: Option<&AtomicBool>,
        worth_retrying: impl Fn(&Error) -> bool,
        mut open: impl FnMut() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut retries = Retries {
            settings: *self,
            observer,
            done: 0,
        };
        loop {
            match open() {
                Err(err)
                    if worth_retrying(&err)
                        && retries.left()
                        && !give_up.is_some_and(|flag| flag.load(Ordering::SeqCst)) =>
                {
                    retries.wait(&err);
                }
                other => return other,
            }
        }
    }

    /// Tells `observer` of retry number `attempt` (from 1) after `cause`, then waits
    /// [`delay_before_retry`](Self::delay_before_retry).
    pub(crate) fn wait_before_retry(&self, attempt: u32, cause: &Error, observer: &dyn Observer) {
        observer.retrying(asks_to_slow_down(cause));
        std::thread::sleep(self.delay_before_retry(attempt, cause));
    }

    /// The wait before retry number `attempt` (from 1) after `cause`: exponential and capped,
    /// longer when the server asked to slow down, and jittered down to half, so workers
    /// throttled together do not come back together.
    pub(crate) fn delay_before_retry(&self, attempt: u32, cause: &Error) -> Duration {
        let (first, cap) = if asks_to_slow_down(cause) {
            (self.throttle_delay, MAX_THROTTLE_DELAY)
        } else {
            (self.retry_delay, MAX_RETRY_DELAY)
        };
        let full = first
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(cap);
        full.mul_f64(1.0 - jitter() / 2.0)
    }
}

/// Whether a failed connection was the server's way of saying "slow down": a throttling
/// refusal, or a BYE in the middle of the session.
fn asks_to_slow_down(err: &Error) -> bool {
    matches!(
        err,
        Error::Connection {
            source: SessionError::Throttled(_) | SessionError::Bye(_),
            ..
        }
    )
}

/// A number in [0, 1), different at every call: std's hasher keys are random per process and
/// change with every `RandomState`.
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(0u8);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The retries of one piece of work (opening a connection, a folder's fetch): how many so
/// far, out of `settings.retries`, each told to the observer.
pub(super) struct Retries<'a> {
    pub(super) settings: TransferSettings,
    pub(super) observer: &'a dyn Observer,
    pub(super) done: u32,
}

impl Retries<'_> {
    /// Whether another retry is allowed.
    pub(super) fn left(&self) -> bool {
        self.done < self.settings.retries
    }

    /// Counts a retry after `cause` and waits its backoff.
    pub(super) fn wait(&mut self, cause: &Error) {
        self.done += 1;
        self.settings
            .wait_before_retry(self.done, cause, self.observer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_budget_grows_with_a_round_trip_beyond_its_own_up_to_four_times() {
        let budget = |ms: Option<u64>| {
            TransferSettings::default()
                .for_round_trip(ms.map(Duration::from_millis))
                .memory_budget
        };
        let default = TransferSettings::default().memory_budget;
        assert_eq!(budget(None), default);
        assert_eq!(budget(Some(1)), default);
        assert_eq!(budget(Some(50)), default);
        assert_eq!(budget(Some(100)), 2 * default);
        assert_eq!(budget(Some(200)), 4 * default);
        assert_eq!(budget(Some(2000)), 4 * default);
    }
}
