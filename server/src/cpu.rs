//! How many CPU threads the server may use: the container's CPU limit, not
//! the node's core count. A pod with `cpu: 2` on a 64-core node must not
//! start 64 compute threads (it would be throttled by the CFS quota and get
//! slower, not faster).
//!
//! Reads the cgroup v2 `cpu.max` (`"<quota> <period>"` or `"max <period>"`),
//! falling back to cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
//!
//! Why not `std::thread::available_parallelism` alone: it applies the same
//! quota but rounds a fractional limit down (`cpu: 1.5` gives one thread,
//! which can never use the half CPU the pod pays for); this module rounds
//! it up. The cores it is clamped to are those this process may run on
//! (`Cpus_allowed_list` in `/proc/self/status`), not std's answer, which
//! would bring the rounding down back.

use std::path::Path;

/// CPUs allowed by a cgroup v2 `cpu.max` line, `None` when unlimited.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period: f64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(100_000.0);
    if quota == "max" || period <= 0.0 {
        return None;
    }
    let quota: f64 = quota.parse().ok()?;
    (quota > 0.0).then_some(quota / period)
}

/// CPUs allowed by cgroup v1 quota and period files, `None` when unlimited.
pub fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.trim().parse().ok()?;
    let period: f64 = period.trim().parse().ok()?;
    (quota > 0.0 && period > 0.0).then_some(quota / period)
}

/// The CPU limit of this process's cgroup, if any.
pub fn cgroup_cpu_limit() -> Option<f64> {
    let read = |p: &str| std::fs::read_to_string(Path::new(p)).ok();
    if let Some(max) = read("/sys/fs/cgroup/cpu.max") {
        return parse_cpu_max(&max);
    }
    parse_cfs(
        &read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?,
        &read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?,
    )
}

/// Threads to use: the CPU limit rounded up, at most the cores present, at least one.
pub fn threads(limit: Option<f64>, cores: usize) -> usize {
    let cores = cores.max(1);
    match limit {
        Some(l) => (l.ceil() as usize).clamp(1, cores),
        None => cores,
    }
}

/// The number of CPUs in a `Cpus_allowed_list` (`0-3,8,10-11`), `None`
/// when it does not parse.
pub fn parse_cpu_list(text: &str) -> Option<usize> {
    text.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a).map(|d| d + 1)
            }
            None => range.parse::<usize>().ok().map(|_| 1),
        })
        .sum()
}

/// The CPUs this process may run on (its affinity), ignoring any quota.
fn allowed_cpus() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(list)
}

/// [`threads`] for this process.
pub fn default_threads() -> usize {
    let cores = allowed_cpus()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    threads(cgroup_cpu_limit(), cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_become_thread_counts() {
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_cfs("-1", "100000"), None);
        assert_eq!(parse_cfs("50000\n", "100000\n"), Some(0.5));
        assert_eq!(threads(Some(2.0), 64), 2);
        assert_eq!(threads(Some(1.5), 64), 2);
        assert_eq!(threads(Some(0.5), 64), 1);
        assert_eq!(threads(Some(8.0), 4), 4);
        assert_eq!(threads(None, 16), 16);
        assert_eq!(threads(None, 0), 1);
    }

    #[test]
    fn affinity_lists_count_their_cpus() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Some(7));
        assert_eq!(parse_cpu_list("5"), Some(1));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert!(
            allowed_cpus().is_some_and(|n| n >= 1),
            "this Linux has /proc/self/status"
        );
    }
}
