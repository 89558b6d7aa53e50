//! Several hosts sharing the sagas over Kafka, on one PostgreSQL database:
//! three `oms serve` processes in one consumer group under load, one killed
//! with SIGKILL; and PostgreSQL itself restarted under load. Every accepted
//! order must reach a terminal state, with the sandbox provider's ledger and
//! the stock agreeing with each outcome.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::broker::Broker;
use support::load::{self, Accepted, Psp};
use support::{Db, Server};

async fn kafka_host(db: &Db, broker: &Broker, psp: &Psp) -> Server {
    support::broker::kafka_host(db, broker, &psp.url, 6).await
}

async fn wait_for(accepted: &Accepted, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while accepted.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} orders accepted",
            accepted.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_the_sagas_and_lose_nothing_when_one_is_killed() {
    let broker = Broker::start();
    let psp = Psp::start().await;
    let db = Db::new(support::Kind::Postgres).await;
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(kafka_host(&db, &broker, &psp).await);
    }
    // The group has formed: every host holds a share of the 6 partitions.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut held = Vec::new();
        for h in &hosts {
            held.push(h.metric("consumer_partitions").await);
        }
        if held.iter().all(|n| *n > 0) && held.iter().sum::<u64>() == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions never shared: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let live = load::hosts(&hosts.iter().map(|h| h.url.as_str()).collect::<Vec<_>>());
    let accepted: Accepted = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load::load(live.clone(), accepted.clone(), stop.clone());

    wait_for(&accepted, 150).await;
    // Kill it only once it has taken a share of the sagas: how soon the
    // group hands it partitions depends on the machine, not on the code.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut consumed_before_kill = hosts[1].metric("commands_consumed_total").await;
    while consumed_before_kill == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        consumed_before_kill = hosts[1].metric("commands_consumed_total").await;
    }
    hosts[1].kill();
    let dead = hosts[1].url.clone();
    live.lock().unwrap().retain(|u| *u != dead);
    wait_for(&accepted, 300).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let accepted = accepted.lock().unwrap().clone();
    load::check_books(&hosts[0].url, &psp.url, &accepted).await;
    assert!(
        consumed_before_kill > 0,
        "the killed host had taken a share"
    );
    for h in [&hosts[0], &hosts[2]] {
        assert!(
            h.metric("commands_consumed_total").await > 0,
            "each survivor took a share"
        );
        assert_eq!(h.metric("illegal_transitions_total").await, 0);
    }
}

/// A PostgreSQL server of this test's own, so restarting it disturbs no
/// other test.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn as_postgres(program: PathBuf) -> Command {
    // initdb and postgres refuse to run as root.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PrivatePostgres {
    fn start() -> Self {
        let bin = std::env::var("OMS_PG_BINDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .expect("PostgreSQL server binaries (tests/run installs them)")
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|p| p.join("pg_ctl").exists())
                    .collect();
                versions.sort();
                versions
                    .pop()
                    .expect("no PostgreSQL version under /usr/lib/postgresql")
            });
        let dir = tempfile::tempdir().unwrap();
        let _ = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ok = as_postgres(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "initdb failed");
        let pg = Self { dir, bin, port };
        pg.ctl("start");
        pg
    }

    fn ctl(&self, action: &str) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let mut ctl = as_postgres(self.bin.join("pg_ctl"));
        ctl.args([action, "-w", "-D"])
            .arg(self.dir.path().join("data"));
        if action != "start" {
            ctl.args(["-m", "fast"]);
        }
        let ok = ctl
            .args(["-o", &options, "-l"])
            .arg(self.dir.path().join("log"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "pg_ctl {action} failed");
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres(self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_carry_on_after_postgres_restarts_under_load() {
    let pg = PrivatePostgres::start();
    let broker = Broker::start();
    let psp = Psp::start().await;
    let db = Db::postgres_at(&pg.admin_url()).await;
    let hosts = [
        kafka_host(&db, &broker, &psp).await,
        kafka_host(&db, &broker, &psp).await,
    ];
    let live = load::hosts(&[&hosts[0].url, &hosts[1].url]);
    let accepted: Accepted = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load::load(live, accepted.clone(), stop.clone());

    wait_for(&accepted, 100).await;
    pg.ctl("restart");
    let after_restart = accepted.lock().unwrap().len();
    wait_for(&accepted, after_restart + 100).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let accepted = accepted.lock().unwrap().clone();
    load::check_books(&hosts[0].url, &psp.url, &accepted).await;
    for h in &hosts {
        assert_eq!(h.metric("illegal_transitions_total").await, 0);
    }
}
