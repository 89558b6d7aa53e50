//! Per tenant, slot and component version: how calls went (counts by
//! outcome, fuel, latency percentiles), and the plugin's own log lines,
//! bounded. Kept in memory by each host, which writes them to the database
//! in the background ([`PluginStats::snapshot`], [`PluginStats::take_new_logs`]);
//! the API reads every host's and merges them ([`merge`]).

use super::{CallStats, PluginError, Slot};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Log lines kept per tenant and slot; older ones are dropped.
const LOG_LINES: usize = 500;
/// Longest line kept; the rest is cut.
const LOG_LINE_BYTES: usize = 1_000;
/// Lines kept from one call, so one chatty call cannot evict everyone else's.
const LOG_LINES_PER_CALL: usize = 20;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionStats {
    pub version: String,
    pub calls: u64,
    pub succeeded: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub out_of_fuel: u64,
    pub output_too_large: u64,
    /// Answers outside the slot's contract: over a list cap, out of range.
    pub invalid_answers: u64,
    pub other_failures: u64,
    pub fuel_used_total: u64,
    pub latency_us: Latency,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub at: i64,
    pub version: String,
    pub line: String,
}

struct Entry {
    stats: VersionStats,
    latency: Option<Histogram<u64>>,
    metrics: CallMetrics,
}

impl Entry {
    fn new(tenant: &str, slot: Slot, version: &str) -> Self {
        Self {
            stats: VersionStats {
                version: version.to_string(),
                calls: 0,
                succeeded: 0,
                traps: 0,
                timeouts: 0,
                out_of_fuel: 0,
                output_too_large: 0,
                invalid_answers: 0,
                other_failures: 0,
                fuel_used_total: 0,
                latency_us: Latency::default(),
            },
            latency: Histogram::new_with_bounds(1, 60_000_000, 2).ok(),
            metrics: CallMetrics::new(tenant, slot, version),
        }
    }
}

/// The version's `/metrics` handles, registered once: `metrics::histogram!`
/// with labels allocates each label and looks the key up in the recorder's
/// registry on every call.
struct CallMetrics {
    duration: metrics::Histogram,
    fuel: metrics::Histogram,
    /// `oms_plugin_calls_total` by outcome.
    calls: HashMap<&'static str, metrics::Counter>,
}

impl CallMetrics {
    fn labels(tenant: &str, slot: Slot, version: &str) -> [(&'static str, String); 3] {
        [
            ("tenant", tenant.to_string()),
            ("slot", slot.as_str().to_string()),
            ("version", version.to_string()),
        ]
    }

    fn new(tenant: &str, slot: Slot, version: &str) -> Self {
        let labels = Self::labels(tenant, slot, version);
        Self {
            duration: metrics::histogram!("oms_plugin_call_duration_seconds", &labels),
            fuel: metrics::histogram!("oms_plugin_call_fuel", &labels),
            calls: HashMap::new(),
        }
    }

    fn record(
        &mut self,
        tenant: &str,
        slot: Slot,
        version: &str,
        outcome: &'static str,
        stats: &CallStats,
    ) {
        self.duration.record(stats.duration.as_secs_f64());
        self.fuel.record(stats.fuel_used as f64);
        self.calls
            .entry(outcome)
            .or_insert_with(|| {
                let mut labels = Self::labels(tenant, slot, version).to_vec();
                labels.push(("outcome", outcome.to_string()));
                metrics::counter!("oms_plugin_calls_total", &labels)
            })
            .increment(1);
    }
}

#[derive(Default)]
pub struct PluginStats {
    entries: Mutex<HashMap<(String, Slot, String), Entry>>,
    logs: Mutex<HashMap<(String, Slot), VecDeque<LogLine>>>,
    /// Lines not yet written to the database, with their tenant and slot.
    new_logs: Mutex<VecDeque<(String, Slot, LogLine)>>,
}

/// Lines waiting to be written at most; past it the oldest are dropped
/// (the database being down must not grow the host's memory).
const NEW_LOGS_MAX: usize = 10_000;

/// One version's counts on this host, with its latencies serialized for
/// merging with other hosts'.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub tenant: String,
    pub slot: Slot,
    pub stats: VersionStats,
    /// The latency histogram (µs), HDR V2 serialization, hex.
    pub latency: Option<String>,
}

/// Serializes a latency histogram for the database.
fn encode(h: &Histogram<u64>) -> Option<String> {
    use hdrhistogram::serialization::Serializer as _;
    let mut bytes = Vec::new();
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(h, &mut bytes)
        .ok()?;
    Some(hex::encode(bytes))
}

/// Reads a histogram [`encode`] wrote; `None` for one that does not read.
pub fn decode(text: &str) -> Option<Histogram<u64>> {
    let bytes = hex::decode(text).ok()?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .ok()
}

/// Merges the counts of one version from several hosts (each with its
/// latency histogram, if any): counts add up, percentiles come from the
/// merged histogram. Sorted by version.
pub fn merge(
    parts: impl IntoIterator<Item = (VersionStats, Option<Histogram<u64>>)>,
) -> Vec<VersionStats> {
    let mut merged: std::collections::BTreeMap<String, (VersionStats, Option<Histogram<u64>>)> =
        Default::default();
    for (s, h) in parts {
        match merged.get_mut(&s.version) {
            None => {
                merged.insert(s.version.clone(), (s, h));
            }
            Some((m, mh)) => {
                m.calls += s.calls;
                m.succeeded += s.succeeded;
                m.traps += s.traps;
                m.timeouts += s.timeouts;
                m.out_of_fuel += s.out_of_fuel;
                m.output_too_large += s.output_too_large;
                m.invalid_answers += s.invalid_answers;
                m.other_failures += s.other_failures;
                m.fuel_used_total += s.fuel_used_total;
                match (mh.as_mut(), h) {
                    (Some(mh), Some(h)) => {
                        // Same bounds everywhere; a histogram that does not
                        // fit is left out of the percentiles, not the counts.
                        let _ = mh.add(&h);
                    }
                    (None, Some(h)) => *mh = Some(h),
                    _ => {}
                }
            }
        }
    }
    merged
        .into_values()
        .map(|(mut s, h)| {
            if let Some(h) = h {
                s.latency_us = Latency {
                    p50: h.value_at_quantile(0.5),
                    p99: h.value_at_quantile(0.99),
                    max: h.max(),
                };
            }
            s
        })
        .collect()
}

impl PluginStats {
    pub(crate) fn observe(
        &self,
        tenant: &str,
        slot: Slot,
        version: &str,
        outcome: Result<(), &PluginError>,
        stats: &CallStats,
    ) {
        let outcome_label = match outcome {
            Ok(()) => "ok",
            Err(e) => e.code(),
        };
        {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let entry = entries
                .entry((tenant.to_string(), slot, version.to_string()))
                .or_insert_with(|| Entry::new(tenant, slot, version));
            let s = &mut entry.stats;
            s.calls += 1;
            s.fuel_used_total += stats.fuel_used;
            match outcome {
                Ok(()) => s.succeeded += 1,
                Err(PluginError::Trap(_)) => s.traps += 1,
                Err(PluginError::Timeout) => s.timeouts += 1,
                Err(PluginError::OutOfFuel) => s.out_of_fuel += 1,
                Err(PluginError::OutputTooLarge(_)) => s.output_too_large += 1,
                Err(PluginError::InvalidAnswer(_)) => s.invalid_answers += 1,
                Err(_) => s.other_failures += 1,
            }
            if let Some(h) = &mut entry.latency {
                let _ = h.record((stats.duration.as_micros() as u64).max(1));
            }
            entry
                .metrics
                .record(tenant, slot, version, outcome_label, stats);
        }
        if !stats.log.is_empty() {
            let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
            let lines = logs.entry((tenant.to_string(), slot)).or_default();
            let at = oms_clock::now_ms();
            let all: Vec<&str> = stats.log.lines().filter(|l| !l.trim().is_empty()).collect();
            let dropped = all.len().saturating_sub(LOG_LINES_PER_CALL);
            let marker = (dropped > 0)
                .then(|| format!("[oms] {dropped} more lines from this call were dropped"));
            let cut = (stats.log_dropped > 0).then(|| {
                format!(
                    "[oms] log cut off: {} bytes over the budget",
                    stats.log_dropped
                )
            });
            for line in all
                .into_iter()
                .take(LOG_LINES_PER_CALL)
                .map(str::to_string)
                .chain(marker)
                .chain(cut)
            {
                if lines.len() == LOG_LINES {
                    lines.pop_front();
                }
                let mut line = line;
                if line.len() > LOG_LINE_BYTES {
                    let mut cut = LOG_LINE_BYTES;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.truncate(cut);
                }
                let line = LogLine {
                    at,
                    version: version.to_string(),
                    line,
                };
                let mut new = self.new_logs.lock().unwrap_or_else(|p| p.into_inner());
                if new.len() == NEW_LOGS_MAX {
                    new.pop_front();
                }
                new.push_back((tenant.to_string(), slot, line.clone()));
                lines.push_back(line);
            }
        }
    }

    /// Every version of every slot that ran on this host, for the database.
    pub fn snapshot(&self) -> Vec<Snapshot> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .map(|((tenant, slot, _), e)| Snapshot {
                tenant: tenant.clone(),
                slot: *slot,
                stats: e.stats.clone(),
                latency: e.latency.as_ref().and_then(encode),
            })
            .collect()
    }

    /// The lines logged since the last call, oldest first.
    pub fn take_new_logs(&self) -> Vec<(String, Slot, LogLine)> {
        std::mem::take(&mut *self.new_logs.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect()
    }

    /// Lines taken but not written: back in front of the queue.
    pub fn put_back_logs(&self, lines: Vec<(String, Slot, LogLine)>) {
        let mut new = self.new_logs.lock().unwrap_or_else(|p| p.into_inner());
        for line in lines.into_iter().rev() {
            if new.len() == NEW_LOGS_MAX {
                break;
            }
            new.push_front(line);
        }
    }

    /// This host's latency histogram of a version, for merging.
    pub fn histogram(&self, tenant: &str, slot: Slot, version: &str) -> Option<Histogram<u64>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&(tenant.to_string(), slot, version.to_string()))
            .and_then(|e| e.latency.clone())
    }

    /// Every version of a tenant's slot that ran on this host.
    pub fn stats(&self, tenant: &str, slot: Slot) -> Vec<VersionStats> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<VersionStats> = entries
            .iter()
            .filter(|((t, s, _), _)| t == tenant && *s == slot)
            .map(|(_, e)| {
                let mut stats = e.stats.clone();
                if let Some(h) = &e.latency {
                    stats.latency_us = Latency {
                        p50: h.value_at_quantile(0.5),
                        p99: h.value_at_quantile(0.99),
                        max: h.max(),
                    };
                }
                stats
            })
            .collect();
        out.sort_by(|a, b| a.version.cmp(&b.version));
        out
    }

    /// The newest `limit` log lines of a tenant's slot, oldest first.
    pub fn logs(&self, tenant: &str, slot: Slot, limit: usize) -> Vec<LogLine> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.get(&(tenant.to_string(), slot))
            .map(|l| {
                l.iter()
                    .skip(l.len().saturating_sub(limit))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}
