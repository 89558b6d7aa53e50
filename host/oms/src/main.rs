//! The `oms` binary: `serve` runs the platform, `sandbox-psp` runs the sandbox
//! payment provider alone, `bench` drives load at a running host.

mod allocator;
mod cli;
mod http_server;
mod huge_pages;

use anyhow::Context;
use clap::{Parser, Subcommand};
use oms_engine::Platform;
use oms_engine::tenants::{LoadOptions, Tenants};
use oms_engine::transport::kafka::KafkaTransport;
use oms_engine::transport::{InProcess, Transport};
use oms_plugin_host::PluginHost;
use oms_sandbox_psp::Sandbox;
use oms_store::SqlStore;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "oms",
    version,
    about = "Multi-tenant order management with tenant logic in sandboxed Wasm"
)]
struct Cli {
    /// `json` (one object per line, with the request's and saga's fields)
    /// or `text`; JSON by default when stderr is not a terminal.
    #[arg(long, global = true, env = "OMS_LOG_FORMAT", value_parser = ["json", "text"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform. With no options: SQLite in ./data, the demo tenants
    /// and plugins, and the sandbox payment provider on loopback.
    Serve(ServeArgs),
    /// Run the sandbox payment service provider alone.
    SandboxPsp {
        #[arg(long, default_value = "127.0.0.1:8090", env = "OMS_SANDBOX_PSP_LISTEN")]
        listen: SocketAddr,
        /// Once serving, write `{"sandboxPsp": "http://…"}` here.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Keep payment intents, stored answers and the ledger in this
        /// directory (`sandbox-psp.jsonl`), so a restart forgets nothing;
        /// without it, they live in memory only.
        #[arg(long, env = "OMS_SANDBOX_PSP_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Drive orders at a running host over HTTP and report throughput and latency.
    Bench(oms_bench::BenchArgs),
    /// Upload, list, activate and roll back tenant plugin versions.
    Plugin(cli::plugin::PluginArgs),
    /// List and replay saga command messages no host could read (Kafka).
    Dlq(cli::dlq::DlqArgs),
    /// Sagas that need an operator: list, show, retry, compensate, resolve.
    Saga(cli::saga::SagaArgs),
    /// Tenants and their API keys: list, show, create, update, suspend, keys.
    Tenant(cli::tenant::TenantArgs),
    /// Named operator tokens and the audit log.
    Operator(cli::operator::OperatorArgs),
    /// Internal: compiles a component from stdin to native code on stdout
    /// under the given limits (how `serve` compiles tenants' uploads).
    #[command(hide = true)]
    CompilePlugin {
        #[arg(long)]
        cpu_seconds: u64,
        #[arg(long)]
        memory_bytes: u64,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080", env = "OMS_LISTEN")]
    listen: SocketAddr,
    /// Where the embedded SQLite database lives, and the demo sandbox
    /// provider's journal (on PostgreSQL too).
    #[arg(long, default_value = "./data", env = "OMS_DATA_DIR")]
    data_dir: PathBuf,
    /// `postgres://…` to run on PostgreSQL instead of embedded SQLite.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Directory of tenant manifests; default `./tenants` if it exists, else the built-in demo tenants.
    #[arg(long, env = "OMS_TENANTS_DIR")]
    tenants_dir: Option<PathBuf>,
    /// Production mode: ignore dev API keys, seed no demo stock, start no sandbox provider.
    #[arg(long)]
    no_demo: bool,
    /// Where demo mode starts the sandbox payment provider.
    #[arg(long, default_value = "127.0.0.1:8090", env = "OMS_SANDBOX_PSP_LISTEN")]
    sandbox_psp_listen: SocketAddr,
    /// Use a sandbox provider that is already running instead of starting one.
    #[arg(long, env = "OMS_SANDBOX_PSP_URL")]
    sandbox_psp_url: Option<String>,
    /// Once serving, write the bound addresses here as JSON
    /// (`{"api": "http://…", "sandboxPsp": "http://…"}`); with port 0 in
    /// `--listen`, this is how a supervisor or test learns the port.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Publish the outbox to Kafka (`HOST:PORT,…`) instead of in-process.
    #[arg(long, env = "KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Partitions for topics the host creates.
    #[arg(long, default_value_t = 12, env = "OMS_KAFKA_PARTITIONS")]
    kafka_partitions: i32,
    /// After HTTP has drained: how long the steps in flight may take to
    /// finish, the Kafka consumer to commit and the relay to flush.
    #[arg(long, default_value_t = 10_000, env = "OMS_SHUTDOWN_DEADLINE_MS")]
    shutdown_deadline_ms: u64,
    /// Threads answering HTTP, apart from the saga work's (default: half
    /// the CPUs, at least one). The front door runs on a runtime of its
    /// own, so a request is not queued behind a saturated host's steps.
    #[arg(long, env = "OMS_HTTP_THREADS")]
    http_threads: Option<usize>,
    /// Connections served at once; past it, new ones wait to be accepted.
    #[arg(long, default_value_t = 4096, env = "OMS_MAX_CONNECTIONS")]
    max_connections: usize,
    /// How long a client has to send a request's headers, and how long a
    /// connection may sit idle between requests.
    #[arg(long, default_value_t = 10_000, env = "OMS_HTTP_HEADER_TIMEOUT_MS")]
    http_header_timeout_ms: u64,
    /// How long a request's body may pause between two pieces.
    #[arg(long, default_value_t = 10_000, env = "OMS_HTTP_BODY_TIMEOUT_MS")]
    http_body_timeout_ms: u64,
    /// At SIGTERM, how long `/readyz` says "draining" while requests are
    /// still served (for a balancer to stop sending any), before the host
    /// stops accepting connections and lets those in flight finish (a
    /// second SIGTERM cuts it short).
    #[arg(long, default_value_t = 0, env = "OMS_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: u64,
    /// Failed authentications one client address may make per minute;
    /// past it the address is refused (429) until its minute is over.
    #[arg(long, default_value_t = 100, env = "OMS_AUTH_FAILURES_PER_MINUTE")]
    auth_failures_per_minute: u32,
    /// The bootstrap operator token (an admin) for the operator API under
    /// /admin/v1; named operators are made with `oms operator create`.
    #[arg(long, env = "OMS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Non-public addresses tenants' webhooks may reach: `loopback`,
    /// `private` (comma-separated). Default: none, only public addresses.
    #[arg(long, default_value = "", env = "OMS_WEBHOOKS_ALLOW")]
    webhooks_allow: String,
    /// A failed webhook delivery is tried again after about this long,
    /// doubling each time (at most an hour apart).
    #[arg(long, default_value_t = 10_000, env = "OMS_WEBHOOK_RETRY_BASE_MS")]
    webhook_retry_base_ms: u64,
    /// A webhook delivery not made this long after its event is given up on
    /// (three days).
    #[arg(long, default_value_t = 259_200_000, env = "OMS_WEBHOOK_GIVE_UP_MS")]
    webhook_give_up_ms: i64,
    /// An endpoint whose every delivery failed this long is disabled (three days).
    #[arg(
        long,
        default_value_t = 259_200_000,
        env = "OMS_WEBHOOK_DISABLE_AFTER_MS"
    )]
    webhook_disable_after_ms: i64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    use std::io::IsTerminal;
    let json = match cli.log_format.as_deref() {
        Some(format) => format == "json",
        None => !std::io::stderr().is_terminal(),
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // Each JSON line carries the fields of the spans it is logged in
    // (request_id, tenant, order_id, trace_id, …) beside its own.
    let json_logs = json.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .with_current_span(true)
            // Every enclosing span's fields too: a line logged in a plugin
            // call still carries its step's order_id and trace_id.
            .with_span_list(true)
            .flatten_event(true)
    });
    let text_logs = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    // Traces leave the process only when an OTLP endpoint is configured;
    // otherwise no OpenTelemetry layer exists and spans cost what they did.
    let (exporter, traces) = match std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some(_) => {
            let (exporter, layer) = oms_trace::Exporter::otlp("oms")?;
            (Some(exporter), Some(layer))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(json_logs)
        .with(text_logs)
        .with(traces)
        .init();
    // A panic is a log line like any other (JSON in production), with the
    // span it happened in. The process never panics by design; the one
    // panic it expects is a plugin's first inline call that writes to its
    // log (oms_plugin_host::invoke), caught and run again on a thread.
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        // Captured when RUST_BACKTRACE asks for it, as the default hook does.
        let backtrace = std::backtrace::Backtrace::capture();
        tracing::error!(%location, panic = %info.payload_as_str().unwrap_or("(not text)"), %backtrace, "panicked");
    }));
    // Before any runtime starts: the compiler process is single-purpose.
    if let Command::CompilePlugin {
        cpu_seconds,
        memory_bytes,
    } = cli.command
    {
        std::process::exit(oms_plugin_host::compiler::child_main(
            cpu_seconds,
            memory_bytes,
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::SandboxPsp { listen, ready_file, data_dir } => {
                let sandbox = match &data_dir {
                    Some(dir) => Sandbox::open(dir).with_context(|| format!("reading the sandbox provider's journal in {}", dir.display()))?,
                    None => Sandbox::default(),
                };
                let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
                if let Some(path) = &ready_file {
                    let url = format!("http://{}", listener.local_addr()?);
                    write_ready(path, &serde_json::json!({ "sandboxPsp": url }))?;
                }
                tracing::info!(addr = %listener.local_addr()?, "sandbox payment provider listening");
                axum::serve(listener, sandbox.router()).with_graceful_shutdown(shutdown()).await?;
                Ok(())
            }
            Command::Bench(args) => oms_bench::run(args).await,
            Command::Plugin(args) => cli::plugin::run(args).await,
            Command::Dlq(args) => cli::dlq::run(args).await,
            Command::Saga(args) => cli::saga::run(args).await,
            Command::Tenant(args) => cli::tenant::run(args).await,
            Command::Operator(args) => cli::operator::run(args).await,
            Command::CompilePlugin { .. } => Ok(()),
        }
    });
    // The spans of the last moments (the drain, the last relay flush) too.
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    // Blocking work still running has a deadline, not a wait without end:
    // with the broker gone, the Kafka consumer's close (its drop, on a
    // blocking thread) waits for a group coordinator that never answers,
    // and a host given SIGTERM stayed up for half an hour. What matters was
    // done with deadlines of its own (the drain, the steps, the offsets).
    let closing = std::time::Instant::now();
    runtime.shutdown_timeout(EXIT_DEADLINE);
    if closing.elapsed() >= EXIT_DEADLINE {
        tracing::warn!(deadline = ?EXIT_DEADLINE, "blocking work still running at exit was left behind (a Kafka consumer's close with the broker gone)");
    }
    result
}

/// How long the process waits at exit for blocking work still running.
const EXIT_DEADLINE: Duration = Duration::from_secs(5);

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before the load's first allocations; without it the host still
    // works, with the accept tail and memory the module names.
    match huge_pages::disable() {
        Ok(()) => tracing::info!("the heap takes no transparent huge pages"),
        Err(e) => tracing::warn!(error = %e, "transparent huge pages stay on for the heap"),
    }
    tracing::info!(
        options = allocator::options(),
        "jemalloc allocates for the whole process, SQLite included"
    );
    // First, so nothing measured while starting is lost.
    let exporter = oms_api::metrics::install().context("installing the metrics recorder")?;
    let upkeep = exporter.clone();
    tokio::spawn(async move {
        // Histograms are drained at each scrape; upkeep bounds them between.
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let demo = !args.no_demo;
    let psp_url = match (&args.sandbox_psp_url, demo) {
        (Some(url), _) => Some(url.trim_end_matches('/').to_string()),
        (None, true) => {
            let listener = TcpListener::bind(args.sandbox_psp_listen)
                .await
                .with_context(|| {
                    format!(
                        "binding the sandbox payment provider to {}",
                        args.sandbox_psp_listen
                    )
                })?;
            let addr = listener.local_addr()?;
            // It remembers what it did across restarts, as a real provider
            // does: a saga killed mid-payment finds its intent again.
            let sandbox = Sandbox::open(&args.data_dir).with_context(|| {
                format!(
                    "reading the sandbox provider's journal in {}",
                    args.data_dir.display()
                )
            })?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, sandbox.router()).await {
                    tracing::error!(error = %e, "sandbox payment provider stopped");
                }
            });
            tracing::info!(%addr, "sandbox payment provider listening");
            Some(format!("http://{addr}"))
        }
        (None, false) => None,
    };

    let psp_url_for_ready = psp_url.clone();
    let plugins = PluginHost::new().context("starting the Wasm plugin host")?;
    // Tenants' uploads are compiled by this same binary in a child process.
    let exe =
        std::env::current_exe().context("locating the oms binary for its compiler process")?;
    plugins.compile_out_of_process(oms_plugin_host::compiler::CompilerProcess::new(
        exe,
        oms_plugin_host::compiler::CompileBudget::from_env(),
    ));
    let tenants_dir = args.tenants_dir.or_else(|| {
        let local = PathBuf::from("tenants");
        local.is_dir().then_some(local)
    });
    let tenant_options = LoadOptions {
        demo,
        sandbox_psp_url: psp_url.clone(),
    };

    let store = match &args.database_url {
        Some(url) => SqlStore::connect(url)
            .await
            .context("connecting to the database")?,
        None => SqlStore::open_embedded(&args.data_dir)
            .await
            .context("opening the embedded database")?,
    };
    let transport = match &args.kafka_brokers {
        Some(brokers) => Transport::Kafka(std::sync::Arc::new(
            KafkaTransport::new(brokers, args.kafka_partitions)
                .context("setting up the Kafka producer")?,
        )),
        None => Transport::InProcess(InProcess::new()),
    };
    let platform = Platform::new(
        std::sync::Arc::new(store),
        plugins,
        Tenants::default(),
        tenant_options,
        args.admin_token.clone(),
        transport,
    );
    let allow = oms_engine::webhooks::Allow::parse(&args.webhooks_allow)
        .map_err(|e| anyhow::anyhow!("--webhooks-allow: {e}"))?;
    let webhooks = oms_engine::webhooks::Options {
        allow,
        retry_base_ms: args.webhook_retry_base_ms,
        give_up_after_ms: args.webhook_give_up_ms,
        disable_after_ms: args.webhook_disable_after_ms,
    };
    if platform.configure_webhooks(webhooks).is_err() {
        anyhow::bail!("the webhook options were set twice");
    }
    // Tenants live in the database; the manifest files are imported into it
    // (new tenants created, changed files applied, unchanged ones left to
    // what operators did through the API), then every tenant is built.
    oms_engine::tenants::sync::import_manifests(&platform, tenants_dir.as_deref())
        .await
        .context("importing tenant manifests")?;
    oms_engine::tenants::sync::refresh(&platform)
        .await
        .context("loading tenants")?;
    if let Transport::Kafka(_) = platform.transport {
        // Topics are created in the background: a broker that is down at
        // start delays publishing (the outbox keeps everything), not serving.
        let p = platform.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(200);
            loop {
                if let Transport::Kafka(k) = &p.transport {
                    match k.ensure_topics().await {
                        Ok(()) => break,
                        Err(e) => tracing::warn!(error = %e, "kafka topics not ready; retrying"),
                    }
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        });
    }
    oms_engine::rollout::register_manifest_plugins(&platform)
        .await
        .context("registering the manifests' plugins")?;
    if demo {
        platform
            .seed_demo_stock()
            .await
            .context("seeding demo stock")?;
    }
    let workers = platform.start();

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    if let Some(path) = &args.ready_file {
        let api = format!("http://{}", listener.local_addr()?);
        write_ready(
            path,
            &serde_json::json!({ "api": api, "sandboxPsp": psp_url_for_ready }),
        )?;
    }
    tracing::info!(
        addr = %listener.local_addr()?,
        database = platform.store.backend_name(),
        tenants = platform.tenants.all().len(),
        demo,
        "oms listening"
    );
    let limits = http_server::Limits {
        max_connections: args.max_connections.max(1),
        header_timeout: Duration::from_millis(args.http_header_timeout_ms.max(1)),
        body_timeout: Duration::from_millis(args.http_body_timeout_ms.max(1)),
        drain: Duration::from_secs(30),
    };
    let edge = oms_api::EdgeOptions {
        auth_failures_per_minute: args.auth_failures_per_minute,
        metrics: Some(exporter),
    };
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    let draining = platform.clone();
    let stop = async move {
        shutdown().await;
        draining
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(?grace, "draining: /readyz answers 503");
        // A second signal ends the grace at once.
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            () = shutdown() => tracing::info!("second signal: grace cut short"),
        }
    };
    // The front door on a runtime of its own: with the host saturated, the
    // main runtime's queues hold hundreds of sagas' steps, and a request
    // read there waited behind them (tens of milliseconds at 1,000 orders/s
    // here). Sagas a request starts still run on the main runtime
    // (`Platform::spawn_work`).
    let threads = args
        .http_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() / 2));
    let front = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("oms-http")
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let listener = listener
        .into_std()
        .context("handing the listener to the HTTP runtime")?;
    let router = oms_api::router(platform.clone(), edge);
    let served = front
        .spawn(async move {
            let listener = TcpListener::from_std(listener)?;
            http_server::serve(listener, router, limits, stop).await
        })
        .await;
    // HTTP is drained; the saga work stops next. Whatever step is still
    // running at the deadline is in the database, resumed by the next host
    // to start (or another host, with Kafka).
    platform
        .stop(workers, Duration::from_millis(args.shutdown_deadline_ms))
        .await;
    // Last: database connections a request opened are driven by this
    // runtime, and the saga work's stop may still have used them.
    front.shutdown_background();
    served.context("the HTTP server's task")??;
    tracing::info!("stopped");
    Ok(())
}

/// Writes the ready file whole, then renames it into place, so a reader
/// never sees half of it.
fn write_ready(path: &std::path::Path, content: &serde_json::Value) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content.to_string())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
