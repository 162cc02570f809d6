//! What the audit log counts as it appends, for the runtime's metrics: entries by kind,
//! governed decisions by verdict and policy (read from the decision entries themselves, so
//! every decision the log holds is counted, whoever made it), bytes appended, and the append
//! latency (to durable) as a histogram. Counting never fails an append; under the log's lock it
//! is atomics only (decision entries are read before the lock, counted once durable).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::entry::{Entry, EntryKind};

/// The latency histogram's upper bounds, seconds (Prometheus `le`), before `+Inf`.
pub const LATENCY_BOUNDS_S: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0];
/// The most (verdict, policy) pairs counted apart; beyond it, under policy `other`.
pub const MAX_POLICIES: usize = 256;

/// The counters.
#[derive(Debug, Default)]
pub struct AppendStats {
    by_kind: [AtomicU64; EntryKind::ALL.len()],
    bytes: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BOUNDS_S.len() + 1],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    decisions: Mutex<BTreeMap<(String, String), u64>>,
    /// Decision entries whose payload is not a decision's evidence (counted without a lock).
    unreadable_decisions: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Entries appended since the log was opened, by kind name.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Encoded entry bytes appended since the log was opened.
    pub bytes: u64,
    /// Cumulative histogram counts, one per bound of [`LATENCY_BOUNDS_S`] then `+Inf`.
    pub latency_cumulative: Vec<u64>,
    /// Sum of append latencies, microseconds.
    pub latency_sum_us: u64,
    /// Appends timed (a batch counts once).
    pub latency_count: u64,
    /// Decisions by (verdict, policy).
    pub decisions: BTreeMap<(String, String), u64>,
}

impl AppendStats {
    /// Counts an entry being appended (under the log's lock: atomics only).
    pub(crate) fn entry(&self, kind: EntryKind, encoded_len: usize) {
        if let Some(i) = EntryKind::ALL.iter().position(|k| *k == kind) {
            self.by_kind[i].fetch_add(1, Ordering::Relaxed);
        }
        self.bytes.fetch_add(encoded_len as u64, Ordering::Relaxed);
    }

    /// The (verdict, policy) labels of the decision entries among `entries`, read before the
    /// log's lock is taken; `None` for one whose payload is not a decision's evidence.
    pub(crate) fn decision_labels(entries: &[Entry]) -> Vec<Option<(String, String)>> {
        entries.iter().filter(|e| e.kind == EntryKind::PolicyDecision).map(|e| decision_labels(&e.payload)).collect()
    }

    /// Counts decisions once their entries are durable.
    pub(crate) fn decisions(&self, labels: Vec<Option<(String, String)>>) {
        let (readable, unreadable): (Vec<_>, Vec<_>) = labels.into_iter().partition(Option::is_some);
        self.unreadable_decisions.fetch_add(unreadable.len() as u64, Ordering::Relaxed);
        if readable.is_empty() {
            return;
        }
        let mut decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        for (verdict, policy) in readable.into_iter().flatten() {
            let key = if decisions.len() >= MAX_POLICIES && !decisions.contains_key(&(verdict.clone(), policy.clone()))
            {
                (verdict, "other".to_string())
            } else {
                (verdict, policy)
            };
            *decisions.entry(key).or_default() += 1;
        }
    }

    /// Times one append (to durable).
    pub(crate) fn latency(&self, micros: u64) {
        let seconds = micros as f64 / 1e6;
        let bucket = LATENCY_BOUNDS_S.iter().position(|b| seconds <= *b).unwrap_or(LATENCY_BOUNDS_S.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut cumulative = Vec::with_capacity(self.latency_buckets.len());
        let mut running = 0;
        for b in &self.latency_buckets {
            running += b.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        StatsSnapshot {
            by_kind: EntryKind::ALL
                .iter()
                .zip(&self.by_kind)
                .map(|(k, n)| (k.name(), n.load(Ordering::Relaxed)))
                .collect(),
            bytes: self.bytes.load(Ordering::Relaxed),
            latency_cumulative: cumulative,
            latency_sum_us: self.latency_sum_us.load(Ordering::Relaxed),
            latency_count: self.latency_count.load(Ordering::Relaxed),
            decisions: {
                let mut d = self.decisions.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let unreadable = self.unreadable_decisions.load(Ordering::Relaxed);
                if unreadable > 0 {
                    *d.entry(("unknown".into(), "unknown".into())).or_default() += unreadable;
                }
                d
            },
        }
    }
}

/// A decision entry's verdict and policy (its payload is the decision's evidence, JSON:
/// `{"record": {"verdict": …, "policy": …}, …}`); `None` for anything else (counted as
/// `unknown`; only a JSON object is parsed at all).
fn decision_labels(payload: &[u8]) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Evidence {
        record: Record,
    }
    #[derive(serde::Deserialize)]
    struct Record {
        verdict: serde_json::Value,
        policy: String,
    }
    if payload.first() != Some(&b'{') {
        return None;
    }
    let e = serde_json::from_slice::<Evidence>(payload).ok()?;
    let verdict = e.record.verdict.as_str().unwrap_or("unknown").to_ascii_lowercase();
    let mut policy = e.record.policy;
    if policy.len() > 128 {
        let mut cut = 128;
        while !policy.is_char_boundary(cut) {
            cut -= 1;
        }
        policy.truncate(cut);
    }
    Some((verdict, policy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Severity;

    fn decision(payload: &str) -> Entry {
        Entry::new(EntryKind::PolicyDecision, 1, Severity::Info, vec![], payload.as_bytes().to_vec())
    }

    #[test]
    fn decisions_are_counted_by_verdict_and_policy_and_odd_payloads_never_panic() {
        let stats = AppendStats::default();
        let long = "é".repeat(100); // 200 bytes: cut at a character boundary, not at byte 128
        let entries = vec![
            decision(r#"{"record":{"verdict":"allow","policy":"iron-path@1"}}"#),
            decision(r#"{"record":{"verdict":"deny","policy":"iron-path@1"}}"#),
            decision(r#"{"record":{"verdict":"allow","policy":"iron-path@1"}}"#),
            decision(&format!(r#"{{"record":{{"verdict":"deny","policy":"{long}"}}}}"#)),
            decision("decision 7: allow"),
            decision("{not json"),
        ];
        stats.decisions(AppendStats::decision_labels(&entries));
        let d = stats.snapshot().decisions;
        assert_eq!(d[&("allow".to_string(), "iron-path@1".to_string())], 2);
        assert_eq!(d[&("deny".to_string(), "iron-path@1".to_string())], 1);
        assert_eq!(d[&("deny".to_string(), "é".repeat(64))], 1);
        assert_eq!(d[&("unknown".to_string(), "unknown".to_string())], 2);
    }
}
