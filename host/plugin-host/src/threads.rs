//! The threads a plugin call runs on when it cannot run inline (it makes
//! provider requests, reads a step's state, writes to its log, or needs
//! more than the inline fuel).
//!
//! Why not Tokio's blocking pool: it starts a new thread for work submitted
//! while none of its threads is idle, and a thread is idle again only after
//! its answer has woken the caller, who by then may have submitted the
//! next call. At a few thousand calls a second it kept about twice as many
//! threads as calls ever ran at once (76 Tokio threads with acme allowed 32
//! calls), idle ones left after ten seconds and new ones came, and each
//! kept allocator pages of its own: the host's memory followed its thread
//! count (README, the memory bar). Here a thread counts as free the moment
//! its work is done, before its answer is handed back, so the pool holds as
//! many threads as calls ever ran at once; a call holds one of the host's
//! permits first, so that is never more than `MAX_CONCURRENT_CALLS`, and
//! no call waits for a thread while it holds a permit (unless the system
//! refuses a new thread, logged). Threads stay until the pool is dropped.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// A unit of work; it returns what hands its answer back, which the
/// thread runs only after counting itself free.
type Job = Box<dyn FnOnce() -> Box<dyn FnOnce() + Send> + Send>;

pub(crate) struct CallThreads {
    shared: Arc<Shared>,
    max: usize,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads started and not yet ended.
    threads: usize,
    /// Threads not running a job: each job queued is taken by one of them.
    free: usize,
    stopping: bool,
}

/// Why work handed to the pool has no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ThreadError {
    #[error("the call's thread panicked")]
    Panicked,
    #[error("no thread for the call: {0}")]
    NoThread(String),
}

impl CallThreads {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::default(),
                wake: Condvar::new(),
            }),
            max: max.max(1),
        }
    }

    /// Threads the pool has now.
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        self.shared.lock().threads
    }

    /// Runs `work` on one of the pool's threads, inside the caller's Tokio
    /// runtime (WASI's synchronous streams and a step's state reads block on
    /// it), and returns its answer.
    pub(crate) async fn run<R, W>(&self, work: W) -> Result<R, ThreadError>
    where
        R: Send + 'static,
        W: FnOnce() -> R + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let job: Job = Box::new(move || {
            let result = {
                let _entered = runtime.as_ref().map(|r| r.enter());
                catch_unwind(AssertUnwindSafe(work)).map_err(|_| ThreadError::Panicked)
            };
            Box::new(move || {
                // A caller that stopped waiting (its request was dropped)
                // does not need the answer.
                let _ = answer.send(result);
            })
        });
        self.submit(job)?;
        answered
            .await
            .map_err(|_| ThreadError::NoThread("the pool stopped".into()))?
    }

    fn submit(&self, job: Job) -> Result<(), ThreadError> {
        let mut state = self.shared.lock();
        state.jobs.push_back(job);
        if state.jobs.len() > state.free && state.threads < self.max {
            state.threads += 1;
            state.free += 1;
            let shared = self.shared.clone();
            let started = std::thread::Builder::new()
                .name("oms-plugin".into())
                .spawn(move || shared.work());
            if let Err(e) = started {
                state.threads -= 1;
                state.free -= 1;
                metrics::counter!("oms_plugin_thread_start_failures_total").increment(1);
                tracing::warn!(error = %e, threads = state.threads, "could not start a plugin call thread");
                if state.threads == 0 {
                    // Nothing would ever take the job: it was the last pushed.
                    state.jobs.pop_back();
                    return Err(ThreadError::NoThread(e.to_string()));
                }
                // Otherwise a running thread takes it when its call ends.
            }
            metrics::gauge!("oms_plugin_call_threads").set(state.threads as f64);
        }
        drop(state);
        self.shared.wake.notify_one();
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock guards counters and a queue, never user code: a panic
        // cannot leave them half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn work(&self) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if let Some(job) = state.jobs.pop_front() {
                        state.free -= 1;
                        break job;
                    }
                    if state.stopping {
                        state.threads -= 1;
                        state.free -= 1;
                        metrics::gauge!("oms_plugin_call_threads").set(state.threads as f64);
                        return;
                    }
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
            };
            let deliver = job();
            // Free before the answer goes back: the caller's next call then
            // finds this thread and starts no other.
            self.lock().free += 1;
            deliver();
        }
    }
}

impl Drop for CallThreads {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_one_after_another_share_one_thread() {
        let pool = CallThreads::new(8);
        for i in 0..1000 {
            assert_eq!(pool.run(move || i * 2).await.expect("answer"), i * 2);
        }
        assert_eq!(pool.threads(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_grows_to_the_most_calls_at_once_and_no_further() {
        let pool = Arc::new(CallThreads::new(64));
        for _round in 0..20 {
            // Six calls that can only end together: six threads at once.
            let barrier = Arc::new(Barrier::new(6));
            let calls: Vec<_> = (0..6)
                .map(|_| {
                    let (pool, barrier) = (pool.clone(), barrier.clone());
                    tokio::spawn(async move { pool.run(move || barrier.wait()).await })
                })
                .collect();
            for call in calls {
                call.await.expect("task").expect("answer");
            }
            assert_eq!(pool.threads(), 6);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_its_maximum_work_waits_for_a_thread() {
        let pool = Arc::new(CallThreads::new(2));
        let calls: Vec<_> = (0..16)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(move || i).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.expect("task").expect("answer"));
        }
        assert_eq!(answers, (0..16).collect::<Vec<_>>());
        assert!(pool.threads() <= 2, "{} threads", pool.threads());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_is_an_error_and_the_thread_goes_on() {
        let pool = CallThreads::new(1);
        let result = pool.run(|| -> u32 { panic!("guest bug") }).await;
        assert!(matches!(result, Err(ThreadError::Panicked)), "{result:?}");
        assert_eq!(pool.run(|| 7).await.expect("answer"), 7);
        assert_eq!(pool.threads(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_runs_inside_the_callers_runtime() {
        let pool = CallThreads::new(1);
        let value = pool
            .run(|| tokio::runtime::Handle::current().block_on(async { 5 }))
            .await
            .expect("answer");
        assert_eq!(value, 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_pool_ends_its_threads() {
        let pool = CallThreads::new(4);
        pool.run(|| ()).await.expect("answer");
        let shared = pool.shared.clone();
        drop(pool);
        // Wait for the condition itself: the thread leaves when it wakes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while shared.lock().threads > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread never ended"
            );
            tokio::task::yield_now().await;
        }
    }
}
