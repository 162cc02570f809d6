//! Shared by the benchmarks (`harness = false` binaries): sample statistics, the Markdown row
//! they print into `docs/benchmarks.md`, and the one switch between a measurement and a smoke
//! run.
//!
//! `cargo bench` passes `--bench` to a benchmark binary; `cargo test --benches` (CI, through
//! `cargo xtask test`) does not. Without it every benchmark runs each of its rows once — one
//! short iteration, nothing timed or asserted about time — so a broken benchmark fails CI
//! instead of rotting, and CI does not spend minutes measuring.
//!
//! Must never: assert anything about a duration (performance is read by people from
//! `cargo xtask bench`, never gated by a timed test), or shorten a `cargo bench` run.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// True under `cargo bench` (the binary got `--bench`): measure with the full sample counts.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// How many iterations a row runs: `full` when [`measuring`], otherwise one.
pub fn iterations(full: usize) -> usize {
    if measuring() { full } else { 1 }
}

/// The samples of one benchmark row.
#[derive(Debug, Clone)]
pub struct Stats {
    /// What the row measures, as printed.
    pub name: String,
    /// One duration per iteration, in run order.
    pub samples: Vec<Duration>,
}

impl Stats {
    /// The `p` quantile (0.0 ..= 1.0) by nearest rank; zero when there are no samples.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut v = self.samples.clone();
        v.sort_unstable();
        let Some(last) = v.len().checked_sub(1) else { return Duration::ZERO };
        let i = ((last as f64) * p.clamp(0.0, 1.0)).round() as usize;
        v[i.min(last)]
    }

    /// `| name | n | p50 ms | p99 ms | max ms |`, matching [`TABLE_HEADER`].
    pub fn row(&self) -> String {
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
        format!(
            "| {} | {} | {} | {} | {} |",
            self.name,
            self.samples.len(),
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(self.percentile(1.0))
        )
    }
}

/// The header of the table [`Stats::row`] prints rows of.
pub const TABLE_HEADER: &str = "| benchmark | n | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |";

/// Runs `f` [`iterations`]`(full)` times, after a warm-up of a tenth of that (at least one)
/// when measuring, and returns each iteration's duration.
pub fn time<T>(name: &str, full: usize, mut f: impl FnMut() -> T) -> Stats {
    let n = iterations(full);
    if measuring() {
        for _ in 0..(n / 10).max(1) {
            std::hint::black_box(f());
        }
    }
    let samples = (0..n)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    Stats { name: name.to_string(), samples }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ms: &[u64]) -> Stats {
        Stats { name: "x".into(), samples: ms.iter().map(|&m| Duration::from_millis(m)).collect() }
    }

    #[test]
    fn percentiles_are_nearest_rank_over_sorted_samples() {
        let s = stats(&[9, 1, 5, 3, 7]);
        assert_eq!(s.percentile(0.0), Duration::from_millis(1));
        assert_eq!(s.percentile(0.5), Duration::from_millis(5));
        assert_eq!(s.percentile(1.0), Duration::from_millis(9));
        assert_eq!(stats(&[]).percentile(0.5), Duration::ZERO);
        assert_eq!(s.row(), "| x | 5 | 5.000 | 9.000 | 9.000 |");
    }

    #[test]
    fn a_test_run_is_not_a_measurement() {
        // The libtest harness runs this without `--bench`: one iteration, no warm-up.
        assert!(!measuring());
        assert_eq!(iterations(10_000), 1);
        let mut calls = 0;
        let s = time("counted", 500, || calls += 1);
        assert_eq!((calls, s.samples.len()), (1, 1));
    }
}
