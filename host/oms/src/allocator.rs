//! The process's allocator: jemalloc, for Rust's allocations and, through
//! its unprefixed `malloc`, for the C libraries' too (SQLite, librdkafka).
//!
//! Why jemalloc (README, the memory bar of issue 14): under mimalloc the
//! host's resident memory followed how long it had run, not what it held.
//! Its live heap is about 12 MB whether it has stored 10,000 orders or
//! 100,000 (a heap profile), but mimalloc keeps pages per thread (the host
//! has 46: plugin call threads, SQLite's workers, the runtimes), each
//! pinned by whatever small block is still live in it, and its arena grew
//! from 62 to 76 MiB between those two points. jemalloc's threads share a
//! few arenas, and a background thread hands dirty pages back on a decay
//! curve, busy or quiet. Measured side by side (`tests/bench-memory`):
//! +0.8 to +1.3 % from 10,000 to 100,000 orders against +7.3 to +10.7 %,
//! 19 MiB less resident, the same sagas per second and host CPU per saga.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, built in; `MALLOC_CONF` in the environment is read
/// after them and so overrides them.
/// - `background_thread`: purging runs on jemalloc's own thread on time,
///   not in whichever allocation happens next (a quiet host kept what it
///   freed in its busiest second);
/// - `dirty_decay_ms:1000`: pages freed go back within about a second
///   (jemalloc's default is ten): a burst's pages do not outlive it long;
/// - `muzzy_decay_ms:0`: purged means handed back (`MADV_DONTNEED`), not
///   kept lazily freeable and still counted resident until the kernel wants it.
const OPTIONS: &CStr = c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";

/// Read by jemalloc at its start, before `main`: the symbol's name is
/// jemalloc's API (unprefixed, as its `malloc` is).
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static malloc_conf: Option<&'static c_char> = Some(
    // SAFETY: points at the first byte of a NUL-terminated string that
    // lives as long as the program.
    unsafe { &*OPTIONS.as_ptr() },
);

/// The options built in, for the host's log at start.
pub fn options() -> &'static str {
    OPTIONS.to_str().expect("the options are ASCII")
}
