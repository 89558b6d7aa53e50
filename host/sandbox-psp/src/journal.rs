//! The provider's memory on disk: every change (an intent created or
//! updated, an answer stored under an idempotency key, a ledger entry) is
//! appended to a journal as one JSON line, and an answer is sent only once
//! the line is flushed to disk. A real provider that answered "captured" has
//! not forgotten it after a crash; neither does this one, so a host killed
//! with SIGKILL and restarted finds every payment intent its sagas made.
//!
//! Flushes are shared: a request whose line is already covered by another's
//! `fdatasync` does not issue its own (group commit), so the provider's
//! throughput is not one flush per request. On start the journal is read
//! back, a torn last line (a crash mid-write) is dropped, and the file is
//! rewritten compacted (the current intents, answers and ledger).

use crate::{Intent, LedgerEntry, Psp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The journal's file name inside the data directory.
pub const FILE: &str = "sandbox-psp.jsonl";

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub(crate) enum Change {
    Intent(Intent),
    Reply {
        account: String,
        key: String,
        status: u16,
        body: Value,
    },
    Ledger(LedgerEntry),
    /// How often `tok_flaky` was tried under an idempotency key: kept, so a
    /// restart does not make it fail twice more (a saga's retry budget
    /// counts every attempt).
    Attempts {
        account: String,
        key: String,
        count: u32,
    },
}

pub(crate) struct Journal {
    file: Arc<File>,
    /// Lines written (not necessarily on disk yet).
    written: AtomicU64,
    /// Lines known to be on disk; held while a flush runs, so concurrent
    /// requests wait for it instead of flushing again.
    synced: tokio::sync::Mutex<u64>,
}

impl Journal {
    /// Reads the journal in `dir` into `psp`, rewrites it compacted and
    /// opens it for appending.
    pub(crate) fn open(dir: &Path, psp: &mut Psp) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        if path.exists() {
            replay(&path, psp)?;
        }
        compact(dir, &path, psp)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(Self {
            file: Arc::new(file),
            written: AtomicU64::new(0),
            synced: tokio::sync::Mutex::new(0),
        })
    }

    /// Appends `changes` (called under the provider's lock, so the journal's
    /// order is the order the changes were made in); the line's number, to
    /// wait for with [`Journal::sync`].
    pub(crate) fn append(&self, changes: &[Change]) -> std::io::Result<u64> {
        let mut buf = Vec::new();
        for c in changes {
            serde_json::to_writer(&mut buf, c).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        // One write for the whole operation: a crash tears at most the last
        // line, which replay drops.
        (&*self.file).write_all(&buf)?;
        Ok(self.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Returns once line `seq` is on disk.
    pub(crate) async fn sync(&self, seq: u64) -> std::io::Result<()> {
        let mut synced = self.synced.lock().await;
        if *synced >= seq {
            return Ok(());
        }
        // Everything written so far is covered by this flush.
        let through = self.written.load(Ordering::SeqCst);
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(std::io::Error::other)??;
        *synced = through;
        Ok(())
    }
}

fn replay(path: &Path, psp: &mut Psp) -> std::io::Result<()> {
    let lines: Vec<String> = BufReader::new(File::open(path)?)
        .lines()
        .collect::<Result<_, _>>()?;
    let last = lines.len().saturating_sub(1);
    for (n, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Change>(line) {
            Ok(change) => psp.apply(change),
            // A crash mid-write leaves a torn last line: that operation was
            // never answered, so forgetting it is right.
            Err(e) if n == last => {
                tracing::warn!(error = %e, "dropping the sandbox provider journal's torn last line")
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} line {}: {e}", path.display(), n + 1),
                ));
            }
        }
    }
    Ok(())
}

/// Rewrites the journal as the current state, atomically (a temporary file
/// renamed over it).
fn compact(dir: &Path, path: &PathBuf, psp: &Psp) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut out = std::io::BufWriter::new(File::create(&tmp)?);
    for change in psp.snapshot() {
        serde_json::to_writer(&mut out, &change).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}
