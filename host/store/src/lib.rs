//! Persistence for orders, saga state, commands, outbox, payments and stock.
//!
//! One contract, two backends: SQLite (embedded default) and PostgreSQL. Each
//! query is written once and compiled for both through [`on_pool!`]; the
//! schemas in `migrations/{sqlite,postgres}` keep the same tables and columns
//! and use only types both map to `i64`/`String`, so no query needs a dialect
//! branch.

mod access;
mod canary;
mod checkpoint;
pub mod contract;
mod counted;
mod direct;
mod dispatch;
mod group_commit;
mod inventory;
mod orders;
mod outbox;
mod plugin_telemetry;
mod plugin_upload;
mod plugins;
mod readers;
mod reconciliation;
mod recorded;
mod step_state;
mod tenants;
mod transition;
mod webhooks;

pub use access::{ApiKeyRecord, NewApiKey, OperatorAuditRecord, OperatorRecord};
pub use canary::{CanaryCall, CanaryRecord, CanaryWindow};
pub use checkpoint::{CheckpointCounts, checkpoint_counts};
pub use contract::{
    ApiKeys, Canaries, Database, IDEMPOTENCY_KEY_TTL_MS, Inventory, Operators, Orders, Outbox,
    PluginTelemetry, PluginUploads, PluginVersions, Reconciliation, Recordings, SagaLog, Store,
    TenantConfigs,
};
pub use counted::{DbCounts, db_counts};
pub use group_commit::{arrays::UPDATE_ORDERS, pg_writer_options};
pub use inventory::{InventoryOp, StockLevel};
pub use orders::{
    ALLOCATE_NUMBERS_LAZY, CUSTOMER_HISTORY, CustomerHistory, IdempotencyBegin, NewOrder,
    OrderEventRecord, OrderFilter, OrderRecord, PaymentRecord,
};
pub use outbox::{DELETE_PUBLISHED_LAZY, OutboxClaim, OutboxListener, OutboxMessage, OutboxRecord};
pub use plugin_telemetry::{PluginLogRecord, PluginStatsRecord};
pub use plugin_upload::PluginQuota;
pub use plugins::{
    ActivationChange, ActivationRecord, AuditRecord, PluginVersionRecord, ShadowResult,
};
pub use reconciliation::{Mismatch, UNRECONCILED, Unreconciled};
pub use recorded::RecordedCall;
pub use step_state::{StepStateOp, StepStateRecord, StepStateWrite, StepStates};
pub use tenants::{TenantRecord, TenantWrite, TenantWritten};
pub use transition::{CommandRecord, NewCommand, OrderPatch, Transition};
pub use webhooks::{Attempt, WebhookDelivery, WebhookEndpoint, Webhooks};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// Another writer changed the order first (optimistic concurrency).
    #[error("the order changed concurrently")]
    Conflict,
    /// The command was already consumed: a redelivery, to be dropped.
    #[error("the command was already applied")]
    Duplicate,
    #[error("not enough stock of {sku}")]
    InsufficientStock { sku: String },
    #[error("not found")]
    NotFound,
    /// The store cannot take writes now (its writer stopped, or the batch
    /// a write was in failed as a whole): nothing was written; try again.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The implementation does not keep this area (the in-memory store
    /// keeps orders, sagas, stock, outbox and recordings only).
    #[error("{0} is not kept by this store")]
    Unsupported(&'static str),
    /// A tenant's stored plugins would exceed its quota.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone)]
pub(crate) enum Backend {
    /// SQLite allows one writer at a time. The group-commit writer has a
    /// connection of its own (`group_commit::own`); every other write goes
    /// through a one-connection pool. Both take `turn` for each transaction
    /// (the pool's users for the whole of their statements), so they queue
    /// in-process, first come first served, instead of meeting SQLITE_BUSY.
    Sqlite {
        write: SqlitePool,
        /// Whose turn it is to write: see [`on_pool!`].
        turn: Arc<tokio::sync::Mutex<()>>,
        read: SqlitePool,
        /// Short indexed reads, on this thread (see [`readers`]).
        readers: Arc<readers::Readers>,
        /// The write-ahead log's checkpoints, off the writer's thread.
        checkpoints: Arc<checkpoint::Checkpointer>,
    },
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool. The body is compiled
/// once per backend, so it must only use what both sqlx drivers support.
///
/// On SQLite a write body runs holding the write turn, which the
/// group-commit writer takes for each of its batches: the two connections
/// that write never meet in SQLite's lock (where a transaction that read
/// before another's commit fails at its first write, `SQLITE_BUSY_SNAPSHOT`,
/// with no retry, and one that waits polls at growing intervals). A body
/// must not call another write of the store: the turn is not re-entrant.
macro_rules! on_pool {
    ($store:expr, write, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite {
                write: $pool, turn, ..
            } => {
                let _turn = turn.lock().await;
                $body
            }
            $crate::Backend::Postgres($pool) => $body,
        }
    };
    ($store:expr, read, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite { read: $pool, .. } => $body,
            $crate::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

pub struct SqlStore {
    pub(crate) backend: Backend,
    /// Saga commands also travel as outbox messages (Kafka).
    commands_in_outbox: Arc<AtomicBool>,
    /// Writes saga transitions and new orders, many to a transaction.
    pub(crate) writer: group_commit::Writer,
    /// SQLite: each tenant's next order number, handed out without a write
    /// (see `allocate_order_numbers`).
    pub(crate) next_numbers: tokio::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// PostgreSQL: the connections of `readers::on_reader!` (unused on SQLite).
    pub(crate) pg_readers: readers::PgReaders,
}

/// The few statements whose text differs between the backends.
pub(crate) struct Dialect {
    /// Deletes a consumed command's outbox message unless a relay holds it.
    pub unpublish_command: &'static str,
    /// The same for a list of commands: the text before and after `($1, …)`.
    pub unpublish_commands: (&'static str, &'static str),
    /// Written with a new order where its number was handed out from
    /// memory (SQLite): the tenant's stored counter moved past it.
    pub advance_numbers: Option<&'static str>,
    /// Deletes up to `$4` of tenant `$1`'s recorded calls in slot `$2` no
    /// newer than `$3`, oldest first (PostgreSQL: skipping any another
    /// host's pruning holds, so two never wait on each other).
    pub prune_recorded: &'static str,
}

const SQLITE: Dialect = Dialect {
    unpublish_command: "DELETE FROM outbox WHERE id = $1",
    unpublish_commands: ("DELETE FROM outbox WHERE id IN ", ""),
    advance_numbers: Some(
        "INSERT INTO order_numbers (tenant_id, last) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET last = MAX(order_numbers.last, excluded.last)",
    ),
    prune_recorded: "DELETE FROM plugin_calls WHERE id IN (
        SELECT id FROM plugin_calls WHERE tenant_id = $1 AND slot = $2 AND id <= $3
        ORDER BY id LIMIT $4)",
};

const POSTGRES: Dialect = Dialect {
    unpublish_command: "DELETE FROM outbox WHERE id IN
        (SELECT id FROM outbox WHERE id = $1 FOR UPDATE SKIP LOCKED)",
    unpublish_commands: (
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE id IN ",
        " FOR UPDATE SKIP LOCKED)",
    ),
    // Hosts share the counter: every number is taken from it durably.
    advance_numbers: None,
    prune_recorded: "DELETE FROM plugin_calls WHERE id IN (
        SELECT id FROM plugin_calls WHERE tenant_id = $1 AND slot = $2 AND id <= $3
        ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)",
};

impl Backend {
    pub(crate) fn dialect(&self) -> &'static Dialect {
        match self {
            Backend::Sqlite { .. } => &SQLITE,
            Backend::Postgres(_) => &POSTGRES,
        }
    }
}

impl SqlStore {
    /// Connects to `postgres://…` or `sqlite://…` and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(32)
                // sqlx pings every connection it is given back (a round
                // trip to the server per release); pinging again at every
                // acquire doubles that. Only a connection idle a while is
                // pinged before use: the server may have gone meanwhile.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for > Duration::from_secs(5) {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            sqlx::migrate!("../../migrations/postgres")
                .run(&pool)
                .await?;
            Self::with_writer(Backend::Postgres(pool), None)
        } else {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: every commit is on disk before it is acknowledged, so
                // an order answered 201 survives power loss, not only a
                // process crash (NORMAL may lose the last commits then).
                // Group commit (`group_commit`) makes that one fsync per
                // batch of writes, not per write.
                .synchronous(SqliteSynchronous::Full)
                // A multi-row write inside a transaction keeps a statement
                // journal (to undo just that statement); on the default
                // temp store it is a file opened and written per batch
                // (about 4 % of the host's CPU in a profile). Temp tables
                // and sorts go to memory too: none is large here.
                .pragma("temp_store", "memory")
                // Checkpoints run on a thread of their own after the
                // writer's commits (`checkpoint`), not inside one of them;
                // a connection checkpoints itself only past a longer log.
                .pragma("wal_autocheckpoint", checkpoint::BACKSTOP_PAGES.to_string())
                .busy_timeout(Duration::from_secs(10));
            // No ping before each acquire: sqlx pings a connection again
            // when it is released anyway (a crashed worker thread is found
            // then), and on SQLite a ping is a round trip to that thread
            // for every statement run on a pool.
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect_with(options.clone())
                .await?;
            sqlx::migrate!("../../migrations/sqlite")
                .run(&write)
                .await?;
            // After the migrations: the writer's statements are prepared
            // against the schema they made.
            let own = group_commit::own::open(options.get_filename())?;
            let readers = Arc::new(readers::Readers::new(options.get_filename().to_path_buf()));
            let checkpoints = Arc::new(checkpoint::Checkpointer::start(
                options.get_filename().to_path_buf(),
            ));
            let read = SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            Self::with_writer(
                Backend::Sqlite {
                    write,
                    turn: Default::default(),
                    read,
                    readers,
                    checkpoints,
                },
                Some(own),
            )
        };
        Ok(store)
    }

    /// `backend`'s store and its group-commit writer, which on SQLite
    /// writes on `own`, its connection.
    fn with_writer(backend: Backend, own: Option<rusqlite::Connection>) -> Self {
        let commands_in_outbox = Arc::new(AtomicBool::new(false));
        Self {
            writer: group_commit::Writer::start(backend.clone(), own, commands_in_outbox.clone()),
            backend,
            commands_in_outbox,
            next_numbers: Default::default(),
            pg_readers: Default::default(),
        }
    }

    /// The embedded default: a SQLite file in `data_dir`.
    pub async fn open_embedded(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", data_dir.display())))?;
        Self::connect(&format!("sqlite://{}", data_dir.join("oms.db").display())).await
    }

    /// Closes the store: the writes already queued are written, the writer
    /// stops (on SQLite finalizing the statements it keeps on the write
    /// connection), then the pools close. Dropping the store instead is
    /// safe too, but leaves the connections to close on their own time.
    pub async fn close(self) {
        let Self {
            backend, writer, ..
        } = self;
        writer.stop().await;
        match backend {
            Backend::Sqlite { write, read, .. } => {
                write.close().await;
                read.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

#[async_trait::async_trait]
impl Database for SqlStore {
    fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    async fn ping(&self) -> Result<()> {
        on_pool!(self, read, |pool| {
            sqlx::query("SELECT 1")
                .execute(crate::counted::stmt(pool))
                .await?;
        });
        Ok(())
    }

    fn set_commands_in_outbox(&self, on: bool) {
        self.commands_in_outbox.store(on, Ordering::Relaxed);
    }
}

/// Reads a JSON column, a corrupt one as [`StoreError::Corrupt`] naming it.
pub fn json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
