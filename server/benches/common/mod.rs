//! What the benchmarks share: timing a closure by wall and CPU time.

use std::time::{Duration, Instant};

/// Timings of a repeated closure.
#[derive(Clone, Copy)]
pub struct Timing {
    /// Median wall time of one run.
    pub wall: Duration,
    /// Mean CPU time (all threads) of one run: unlike wall time, it does not
    /// grow when other processes share the cores.
    pub cpu: Duration,
}

/// CPU time used by this process so far (user + system, from /proc).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Runs `f` until `budget` has passed (at least 5 times, after one warm-up).
pub fn time(budget: Duration, mut f: impl FnMut()) -> Timing {
    f();
    let (start, cpu_start) = (Instant::now(), cpu_time());
    let mut samples = Vec::new();
    while samples.len() < 5 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    let cpu = (cpu_time() - cpu_start) / samples.len() as u32;
    samples.sort();
    Timing {
        wall: samples[samples.len() / 2],
        cpu,
    }
}
