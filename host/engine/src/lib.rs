//! Carries out what the pure saga core decides: runs steps through tenant
//! plugins, the database and the payment provider, and commits each outcome
//! as one transition. Also owns order commands from the API (place, cancel,
//! ship, deliver), the outbox relay and payment reconciliation, the tenants
//! it serves (`tenants`) and the transports it publishes through
//! (`transport`).

mod breakers;
mod commit;
mod effects;
mod order_numbers;
pub use transport::topics::{
    SAGA_COMMAND, TOPIC_FULFILMENT, TOPIC_NOTIFICATIONS, TOPIC_ORDER_EVENTS, TOPIC_SAGA_COMMANDS,
    TOPIC_SAGA_COMMANDS_DLQ,
};
mod consumer;
pub mod metrics;
pub mod orders;
pub mod plugin_telemetry;
mod reconcile;
mod recorder;
pub use reconcile::{Expected, Reconciled, differences, expected, reconcile_due};
pub mod relay;
pub mod returns;
pub mod rollout;
mod runner;
mod steps;
pub mod tenants;
pub mod transport;
pub mod webhooks;

#[cfg(test)]
mod tests;

use crate::tenants::{LoadOptions, Tenants};
use metrics::Metrics;
use oms_plugin_host::PluginHost;
use oms_store::Store;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Everything a running host shares.
pub struct Platform {
    /// The storage contract; the binary picks the implementation.
    pub store: Arc<dyn Store>,
    pub plugins: Arc<PluginHost>,
    pub tenants: Tenants,
    pub metrics: Metrics,
    /// Poked after a commit that adds saga commands.
    pub(crate) wake: Notify,
    /// Poked after a commit that adds outbox messages.
    pub(crate) outbox_wake: Notify,
    pub transport: crate::transport::Transport,
    pub(crate) runner: runner::Runner,
    pub(crate) recorder: recorder::Recorder,
    /// A circuit breaker per tenant and payment provider.
    pub(crate) breakers: breakers::Breakers,
    /// Each tenant's order numbers.
    pub(crate) order_numbers: Arc<order_numbers::OrderNumbers>,
    /// Held while this host changes what a slot runs: by an operator's
    /// change (written, then applied here) and by the sync (read, then
    /// applied), so a sync that read the database before a change cannot
    /// apply what it read after the change was applied.
    pub(crate) rollout: tokio::sync::Mutex<()>,
    /// The bootstrap operator's token (`OMS_ADMIN_TOKEN`), an admin; named
    /// operators are in the database.
    pub admin_token: Option<String>,
    /// How tenants are built (demo mode, the sandbox provider's address).
    pub tenant_options: LoadOptions,
    /// When each API key was last used, not yet written (batched by the sync).
    pub(crate) key_use: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Set at shutdown: `/readyz` answers 503 so balancers stop sending
    /// requests while the ones in flight finish.
    pub draining: std::sync::atomic::AtomicBool,
    /// Set by [`Platform::stop`]: the saga runner or consumer takes no new
    /// work; `stopped` wakes the loops waiting for some.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    pub(crate) stopped: tokio::sync::Notify,
    /// This process, as the database's per-host rows name it.
    pub host_id: String,
    /// How webhooks are delivered (the defaults unless the binary set them
    /// before starting the background work).
    webhook_options: std::sync::OnceLock<webhooks::Options>,
    /// Poked after the relay wrote webhook deliveries.
    pub(crate) webhook_wake: Notify,
    /// The runtime [`Platform::start`] ran on, where saga work runs even
    /// when an API request on another runtime starts it.
    work_runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl Platform {
    pub fn new(
        store: Arc<dyn Store>,
        plugins: Arc<PluginHost>,
        tenants: Tenants,
        tenant_options: LoadOptions,
        admin_token: Option<String>,
        transport: crate::transport::Transport,
    ) -> Arc<Self> {
        store.set_commands_in_outbox(transport.carries_commands());
        Arc::new(Self {
            store,
            plugins,
            tenants,
            metrics: Metrics::default(),
            wake: Notify::new(),
            outbox_wake: Notify::new(),
            transport,
            runner: runner::Runner::default(),
            recorder: recorder::Recorder::default(),
            breakers: breakers::Breakers::default(),
            order_numbers: Arc::default(),
            rollout: tokio::sync::Mutex::new(()),
            admin_token: admin_token.filter(|t| !t.is_empty()),
            tenant_options,
            key_use: Default::default(),
            draining: Default::default(),
            stopping: Default::default(),
            stopped: Default::default(),
            host_id: format!("host_{}", oms_clock::monotonic_ulid()),
            webhook_options: std::sync::OnceLock::new(),
            webhook_wake: Notify::new(),
            work_runtime: std::sync::OnceLock::new(),
        })
    }

    /// Spawns saga work on the runtime the background work runs on. The
    /// binary answers HTTP on a runtime of its own, so that a request is not
    /// queued behind the steps of hundreds of sagas; a saga an API request
    /// starts must not run on that runtime's thread. Before `start` (tests
    /// that drive the runner themselves), the caller's runtime.
    pub(crate) fn spawn_work<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.work_runtime.get() {
            Some(runtime) => runtime.spawn(work),
            None => tokio::spawn(work),
        }
    }

    /// Sets how webhooks are delivered; once, before the background work
    /// starts (later: refused, the options in force returned).
    pub fn configure_webhooks(&self, options: webhooks::Options) -> Result<(), webhooks::Options> {
        self.webhook_options.set(options)
    }

    pub fn webhook_options(&self) -> webhooks::Options {
        self.webhook_options.get().copied().unwrap_or_default()
    }

    /// Notes that API key `id` was used now (written to the database in
    /// batches, so a request does not wait on a write).
    pub fn key_used(&self, id: &str) {
        self.key_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), oms_clock::now_ms());
    }

    /// Writes the key uses noted since the last call; on failure they are
    /// noted again for the next.
    pub(crate) async fn flush_key_use(&self) -> Result<(), oms_store::StoreError> {
        let used: Vec<(String, i64)> =
            std::mem::take(&mut *self.key_use.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if let Err(e) = self.store.touch_api_keys(&used).await {
            let mut pending = self.key_use.lock().unwrap_or_else(|p| p.into_inner());
            for (id, at) in used {
                let slot = pending.entry(id).or_insert(at);
                *slot = (*slot).max(at);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Starts the saga runner (the command sweeper in-process, the consumer
    /// group with Kafka) and the outbox relay.
    pub fn start(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        if self
            .work_runtime
            .set(tokio::runtime::Handle::current())
            .is_err()
        {
            tracing::warn!("the platform was started twice; its work stays on the first runtime");
        }
        let saga = match &self.transport {
            crate::transport::Transport::Kafka(k) => {
                tokio::spawn(consumer::run(self.clone(), k.clone()))
            }
            crate::transport::Transport::InProcess(_) => tokio::spawn(runner::run(self.clone())),
        };
        vec![
            saga,
            tokio::spawn(relay::run(self.clone())),
            tokio::spawn(webhooks::run(self.clone())),
            tokio::spawn(rollout::run_sync(self.clone())),
            tokio::spawn(recorder::run(self.clone())),
            tokio::spawn(reconcile::run(self.clone())),
        ]
    }

    /// Stops the host's saga work within `deadline`: no new commands are
    /// taken, those in flight finish (or, past the deadline, are left for
    /// the next host to resume from the database), the Kafka consumer
    /// commits the offsets of what it finished, and the relay publishes what
    /// is due, so nothing committed waits for the next start.
    pub async fn stop(
        self: &Arc<Self>,
        workers: Vec<JoinHandle<()>>,
        deadline: std::time::Duration,
    ) {
        let until = tokio::time::Instant::now() + deadline;
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.stopped.notify_waiters();
        let mut workers = workers.into_iter();
        if let Some(saga) = workers.next() {
            match tokio::time::timeout_at(until, saga).await {
                Ok(_) => tracing::info!("saga work stopped; the steps in flight finished"),
                Err(_) => tracing::warn!(
                    ?deadline,
                    "steps still in flight at the deadline; the next host resumes them"
                ),
            }
        }
        match tokio::time::timeout_at(until, relay::flush(self)).await {
            Ok(Ok(n)) => tracing::info!(published = n, "outbox flushed"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the last outbox flush failed; the next host publishes it")
            }
            Err(_) => tracing::warn!("the outbox was still being flushed at the deadline"),
        }
        for w in workers {
            w.abort();
        }
    }

    /// Seeds each tenant's demo stock where none is recorded yet.
    pub async fn seed_demo_stock(&self) -> Result<(), oms_store::StoreError> {
        let now = oms_clock::now_ms();
        for tenant in self.tenants.all() {
            for (sku, warehouse, on_hand) in &tenant.demo_stock {
                self.store
                    .seed_stock(&tenant.id, sku, warehouse, *on_hand, now)
                    .await?;
            }
        }
        Ok(())
    }
}
