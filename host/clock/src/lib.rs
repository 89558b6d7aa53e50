//! The one place the host reads the clock or draws randomness: wall-clock
//! milliseconds, ids that sort in the order they were made, and jittered
//! backoff. Everything else takes time and ids from here (the workspace's
//! `clippy.toml` disallows the underlying calls elsewhere), so the saga core
//! stays a pure function of its inputs and a test can see where time enters.
#![allow(clippy::disallowed_methods)]

use rand::Rng;
use std::time::Duration;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Now as RFC 3339 (UTC), for timestamps people read.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// A ULID that sorts after every other this process made, even within the
/// same millisecond: ids double as the order things happened in (newest-first
/// lists, cursors, payment history).
pub fn monotonic_ulid() -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    match GENERATOR.lock().map(|mut g| g.generate()) {
        Ok(Ok(id)) => id,
        // Only on 2^80 ids in one millisecond, or a poisoned lock.
        _ => ulid::Ulid::new(),
    }
}

/// A new order id (`ord_<ULID>`), in the order orders were made.
pub fn new_order_id() -> oms_domain::OrderId {
    oms_domain::OrderId::from_ulid(monotonic_ulid())
}

/// 32 bytes from the operating system's CSPRNG (through `rand`'s thread
/// generator, seeded from it): for secrets such as API keys and tokens.
pub fn secret_bytes() -> [u8; 32] {
    rand::random()
}

/// A uniformly random whole number of milliseconds in `0..=max_ms`.
pub fn jitter_ms(max_ms: u64) -> u64 {
    rand::rng().random_range(0..=max_ms)
}

/// The pause before attempt `failures + 1` of something that keeps failing
/// (the platform's one backoff): between `base_ms` and `base_ms · 2^failures`
/// capped at `cap_ms`, with full jitter, so many waiters coming back from
/// the same outage or conflict do not retry in lockstep.
pub fn backoff(failures: u32, base_ms: u64, cap_ms: u64) -> Duration {
    let ceiling = base_ms
        .saturating_mul(1u64 << failures.min(32))
        .min(cap_ms)
        .max(base_ms);
    Duration::from_millis(rand::rng().random_range(base_ms..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..1000).map(|_| monotonic_ulid().to_string()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        for failures in 0..70 {
            let d = backoff(failures, 100, 5_000);
            assert!(d >= Duration::from_millis(100), "{d:?}");
            assert!(d <= Duration::from_secs(5), "{d:?}");
        }
        assert!(backoff(1, 100, 5_000) <= Duration::from_millis(200));
        assert_eq!(backoff(0, 100, 5_000), Duration::from_millis(100));
    }
}
