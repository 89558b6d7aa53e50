//! How many statements and transactions this process sends its databases,
//! for `/metrics` (`oms_db_statements_total`, `oms_db_transactions_total`):
//! divided by the sagas finished, they say what a saga costs the database.
//!
//! Every statement the store runs passes its executor through [`stmt`] (or
//! [`auto`] when the statement is a write committed on its own), and every
//! transaction it begins through [`tx`]: identity functions that count, so
//! the count cannot drift from the statements actually sent.

use std::sync::atomic::{AtomicU64, Ordering};

static STATEMENTS: AtomicU64 = AtomicU64::new(0);
static TRANSACTIONS: AtomicU64 = AtomicU64::new(0);
static BATCHES: AtomicU64 = AtomicU64::new(0);
static BATCHED_WRITES: AtomicU64 = AtomicU64::new(0);
static CAREFUL: AtomicU64 = AtomicU64::new(0);
static LINGERS: AtomicU64 = AtomicU64::new(0);
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

/// A write handed to the group-commit writer and not yet answered: counted
/// while the guard lives.
pub(crate) struct InFlight(());

impl InFlight {
    pub(crate) fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One statement on `executor`: inside a transaction, or a read.
#[inline]
pub(crate) fn stmt<E>(executor: E) -> E {
    STATEMENTS.fetch_add(1, Ordering::Relaxed);
    executor
}

/// One write statement outside a transaction: it commits on its own.
#[inline]
pub(crate) fn auto<E>(executor: E) -> E {
    STATEMENTS.fetch_add(1, Ordering::Relaxed);
    TRANSACTIONS.fetch_add(1, Ordering::Relaxed);
    executor
}

/// A transaction just begun (its BEGIN and COMMIT count as statements).
#[inline]
pub(crate) fn tx<T>(transaction: T) -> T {
    STATEMENTS.fetch_add(2, Ordering::Relaxed);
    TRANSACTIONS.fetch_add(1, Ordering::Relaxed);
    transaction
}

/// A batch of `writes` taken by the group-commit writer.
pub(crate) fn batch(writes: usize) {
    BATCHES.fetch_add(1, Ordering::Relaxed);
    BATCHED_WRITES.fetch_add(writes as u64, Ordering::Relaxed);
}

/// A batch written again member by member after its fast path failed.
pub(crate) fn careful() {
    CAREFUL.fetch_add(1, Ordering::Relaxed);
}

/// A batch the SQLite writer held back a moment to gather more writes.
pub(crate) fn linger() {
    LINGERS.fetch_add(1, Ordering::Relaxed);
}

/// Statements and transactions sent so far by this process, over every store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbCounts {
    pub statements: u64,
    pub transactions: u64,
    /// Group-commit batches, the writes in them, and the batches that
    /// failed their fast path and were written member by member.
    pub batches: u64,
    pub batched_writes: u64,
    pub careful_batches: u64,
    /// Batches the SQLite writer waited a moment to fill.
    pub lingered_batches: u64,
    /// Writes queued for or being written by the group-commit writer now.
    pub writes_in_flight: u64,
}

pub fn db_counts() -> DbCounts {
    DbCounts {
        statements: STATEMENTS.load(Ordering::Relaxed),
        transactions: TRANSACTIONS.load(Ordering::Relaxed),
        batches: BATCHES.load(Ordering::Relaxed),
        batched_writes: BATCHED_WRITES.load(Ordering::Relaxed),
        careful_batches: CAREFUL.load(Ordering::Relaxed),
        lingered_batches: LINGERS.load(Ordering::Relaxed),
        writes_in_flight: IN_FLIGHT.load(Ordering::Relaxed),
    }
}
