//! A Kafka-protocol broker for the suites: tansu, started per test on a free
//! loopback port with its data in a temporary SQLite file, so it keeps what
//! it acknowledged across a SIGTERM restart.
#![allow(dead_code, clippy::unwrap_used)]

use super::{Db, Server};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker with its data in a temporary SQLite file, so it keeps
/// what it acknowledged across a SIGTERM restart.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

fn tansu() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let installed = PathBuf::from(home).join(".cargo/bin/tansu");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("tansu")
    }
}

impl Broker {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut broker = Self {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        broker.spawn();
        broker
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .unwrap();
        let child = Command::new(tansu())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--storage-engine",
                "sqlite://tansu.db",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tansu is required for these tests (tests/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, so the broker keeps what it acknowledged.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A host publishing to `broker` and sharing saga work through it, with the
/// sandbox provider at `psp_url`.
pub async fn kafka_host(db: &Db, broker: &Broker, psp_url: &str, partitions: u32) -> Server {
    Server::start_with(
        db,
        vec![
            "--sandbox-psp-url".into(),
            psp_url.into(),
            "--kafka-brokers".into(),
            broker.addr(),
            "--kafka-partitions".into(),
            partitions.to_string(),
        ],
    )
    .await
}
