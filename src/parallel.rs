//! Running two independent steps at once.

/// Runs `a` on this thread and `b` on another, at once, and returns both results. Over a slow
/// link, two servers' round trips then overlap instead of adding up.
pub fn both<A, B: Send>(a: impl FnOnce() -> A, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|scope| {
        let b = scope.spawn(b);
        let a = a();
        (
            a,
            b.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        )
    })
}
