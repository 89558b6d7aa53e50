//! When the SQLite writer waits a moment before committing, to gather more
//! writes into the batch.
//!
//! Every commit costs the same whatever it carries: SQLite writes each page
//! a batch touched to the log (about 24 pages, the same few of each table
//! and index) and flushes it. The writer takes whatever is queued the moment
//! it is free, so at a steady 1,000 orders/s, with a commit taking about a
//! millisecond, batches held two or three writes and the writer committed
//! 1.7-2.0 times per saga; the writer used over a third of the host's CPU, and
//! the host's CPU per saga was 1.7 times its figure saturated (README, the
//! twenty-first session). Waiting 1.5 ms when writes are arriving faster
//! than they commit holds about ten writes a batch there, a fifth of the
//! commits, and more than a quarter less of the host's CPU per saga, for
//! about 1.5 ms more on each order's answer (`OMS_WRITER_LINGER_US=0` for
//! the answer first).
//!
//! A lone saga never waits: its next write comes only after its last one
//! committed, so the writer finds one write at a time and a wait would
//! gather nothing. The writer waits only when [`START`] or more writes were
//! queued when it took the batch (they arrived while it was committing the
//! last), or its last wait gathered [`KEEP`] or more; never for a batch of
//! [`FILL`] or more, whose commit is shared widely enough already (under
//! saturation batches are larger, and unchanged).

use std::time::Duration;

/// Writes found queued that start a wait.
const START: usize = 3;
/// Writes the last wait must have gathered for the next batch to wait too.
const KEEP: usize = 2;
/// A batch this large commits at once.
const FILL: usize = 16;
/// The wait by default (`OMS_WRITER_LINGER_US`).
const DEFAULT_WAIT: Duration = Duration::from_micros(1_500);

/// The writer's policy, and what its last wait gathered.
#[derive(Debug)]
pub(super) struct Linger {
    wait: Duration,
    gathered: usize,
}

impl Linger {
    /// Waiting `wait` when it pays; `Duration::ZERO` never waits.
    pub(super) fn new(wait: Duration) -> Self {
        Self { wait, gathered: 0 }
    }

    /// From `OMS_WRITER_LINGER_US` (microseconds; `0` turns waiting off),
    /// or the default. A value that is not a number is logged and the
    /// default used.
    pub(super) fn from_env() -> Self {
        Self::from_setting(std::env::var("OMS_WRITER_LINGER_US").ok().as_deref())
    }

    /// [`Linger::from_env`] given the variable's value, if set.
    fn from_setting(value: Option<&str>) -> Self {
        let wait = match value {
            None => DEFAULT_WAIT,
            Some(v) => match v.parse::<u64>() {
                Ok(us) => Duration::from_micros(us.min(100_000)),
                Err(_) => {
                    tracing::warn!(value = %v, default_us = DEFAULT_WAIT.as_micros() as u64, "OMS_WRITER_LINGER_US is not a number of microseconds; using the default");
                    DEFAULT_WAIT
                }
            },
        };
        Self::new(wait)
    }

    /// How long to wait before committing a batch of `taken` writes (all
    /// that were queued when the writer took it), if at all.
    pub(super) fn wait_for(&self, taken: usize) -> Option<Duration> {
        let busy = taken >= START || self.gathered >= KEEP;
        (!self.wait.is_zero() && taken < FILL && busy).then_some(self.wait)
    }

    /// What the batch's wait gathered (0 when it did not wait).
    pub(super) fn gathered(&mut self, writes: usize) {
        self.gathered = writes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_micros(1_500);

    /// One write at a time (a lone saga, each write after the last
    /// committed) never waits, however fast the commits come.
    #[test]
    fn one_write_at_a_time_never_waits() {
        let mut l = Linger::new(WAIT);
        for _ in 0..1_000 {
            assert_eq!(l.wait_for(1), None);
            l.gathered(0);
        }
        // Two sagas in step: two at a time, still no wait.
        assert_eq!(l.wait_for(2), None);
    }

    /// Writes piling up while the writer commits start a wait, and waits
    /// go on while they gather; one that gathers nothing ends them.
    #[test]
    fn waits_while_they_gather() {
        let mut l = Linger::new(WAIT);
        assert_eq!(l.wait_for(3), Some(WAIT));
        l.gathered(6);
        assert_eq!(l.wait_for(1), Some(WAIT), "the last wait gathered six");
        l.gathered(1);
        assert_eq!(l.wait_for(1), None, "the last wait gathered one");
        l.gathered(0);
        assert_eq!(l.wait_for(2), None);
    }

    /// The setting: unset is the default, `0` never waits, microseconds
    /// otherwise (at most 100 ms), and what is not a number falls back to
    /// the default (logged) rather than to no wait or a failure.
    #[test]
    fn the_setting_reads_microseconds_and_falls_back_to_the_default() {
        assert_eq!(Linger::from_setting(None).wait, DEFAULT_WAIT);
        assert_eq!(Linger::from_setting(Some("0")).wait, Duration::ZERO);
        assert_eq!(
            Linger::from_setting(Some("800")).wait,
            Duration::from_micros(800)
        );
        assert_eq!(
            Linger::from_setting(Some("9999999")).wait,
            Duration::from_millis(100)
        );
        assert_eq!(Linger::from_setting(Some("1.5ms")).wait, DEFAULT_WAIT);
    }

    /// A batch large enough already commits at once, and a zero wait (the
    /// operator's "off") never waits.
    #[test]
    fn a_full_batch_or_no_wait_commits_at_once() {
        let mut l = Linger::new(WAIT);
        l.gathered(10);
        assert_eq!(l.wait_for(FILL), None);
        assert_eq!(l.wait_for(FILL - 1), Some(WAIT));
        let mut off = Linger::new(Duration::ZERO);
        off.gathered(10);
        assert_eq!(off.wait_for(8), None);
    }
}
