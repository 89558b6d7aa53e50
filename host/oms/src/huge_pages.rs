//! No transparent huge pages for the host's heap. mimalloc (the allocator
//! before jemalloc, `allocator.rs`) asked the kernel for them on its arenas
//! (`madvise(MADV_HUGEPAGE)`); jemalloc does not by default, but does with
//! `MALLOC_CONF=thp:always`, and a kernel set to `enabled=always` hands them
//! out unasked. With the kernel's usual `defrag=madvise` a fault in such a
//! region may stop to compact memory and then zeroes 2 MiB at once: a new
//! thread's first allocation, or a heap growing under a burst of orders,
//! took one such fault each (with mimalloc, measured:
//! `oms bench --rate 1000 --orders 20000 --concurrency 256`,
//! embedded, three runs each in turn): the first second's accept p99 was
//! 167-190 ms with them (the kernel's `clear_page_erms` 36 % of the host's
//! samples then) and 7.5-10.5 ms without; the run's p99 36-68 ms against
//! 8.8-11.9 ms; host CPU per saga the same. The host's RSS also grew in
//! 2 MiB steps of mostly unused memory).
#![allow(unsafe_code)]

/// Turns transparent huge pages off for this process: the kernel then
/// ignores `MADV_HUGEPAGE` on every mapping, those made before `main`
/// included, whatever the allocator's options or the kernel's setting.
pub fn disable() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
