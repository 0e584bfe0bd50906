//! Resident memory and CPU time of a process under test, from `/proc/<pid>/status` and
//! `/proc/<pid>/stat`, and what a series of samples says about a load.

use serde::Serialize;

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat`. Linux fixes this
/// user-visible `USER_HZ` at 100 on every architecture the bench runs on.
pub const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds since the load started.
    pub t_ms: u64,
    /// Resident set size, KiB.
    pub rss_kb: u64,
    /// User + system CPU time so far, in ticks of [`TICKS_PER_SEC`].
    pub cpu_ticks: u64,
    /// Streams (or requests) open on the load generator's side at that moment.
    pub open: u64,
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime` in ticks from the text of `/proc/<pid>/stat`. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), ppid (4) … utime is field 14 and stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Reads both for `pid`; `None` once the process is gone.
pub fn read(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some((parse_rss_kb(&status)?, parse_cpu_ticks(&stat)?))
}

/// What the samples of one load say about the process.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// RSS before the load, KiB.
    pub rss_idle_kb: u64,
    /// Highest RSS seen, KiB.
    pub rss_peak_kb: u64,
    /// RSS after the load had ended and the process had settled, KiB.
    pub rss_after_kb: u64,
    /// CPU used while the load ran, in seconds.
    pub cpu_seconds: f64,
    /// That CPU time over the load's wall time (1.0 = one core busy).
    pub cpu_share: f64,
    /// Most streams open at once.
    pub open_peak: u64,
    /// Highest RSS while `open_peak` streams were open, KiB (0 when not sampled).
    pub rss_at_open_peak_kb: u64,
    /// CPU share while `open_peak` streams were open.
    pub cpu_share_at_open_peak: f64,
    /// The steady part of the load (after the warm-up, before the drain): its first and
    /// last RSS sample, highest RSS, and the least-squares RSS slope over it, KiB per
    /// minute (memory that keeps growing under a constant load shows here).
    pub steady_rss_first_kb: u64,
    pub steady_rss_last_kb: u64,
    pub steady_rss_max_kb: u64,
    pub steady_rss_slope_kb_per_min: Option<f64>,
}

/// Sums up `samples` (in time order) taken from `idle` (before the load) to `after`
/// (after it settled); `load_end_ms` marks where the load stopped, `steady` the part of
/// it after the warm-up and before the drain (ms from the start, inclusive).
pub fn usage(
    idle: Sample,
    samples: &[Sample],
    after: Sample,
    load_end_ms: u64,
    steady: (u64, u64),
) -> Usage {
    let steady: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_ms >= steady.0 && s.t_ms <= steady.1)
        .collect();
    let during: Vec<&Sample> = samples.iter().filter(|s| s.t_ms <= load_end_ms).collect();
    let open_peak = samples.iter().map(|s| s.open).max().unwrap_or(0);
    let at_peak: Vec<&Sample> = samples
        .iter()
        .filter(|s| open_peak > 0 && s.open == open_peak)
        .collect();
    let share = |a: &Sample, b: &Sample| {
        let secs = b.t_ms.saturating_sub(a.t_ms) as f64 / 1000.0;
        if secs <= 0.0 {
            0.0
        } else {
            b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / TICKS_PER_SEC / secs
        }
    };
    let end = during.last().copied().unwrap_or(&idle);
    let cpu_seconds = end.cpu_ticks.saturating_sub(idle.cpu_ticks) as f64 / TICKS_PER_SEC;
    Usage {
        rss_idle_kb: idle.rss_kb,
        rss_peak_kb: samples
            .iter()
            .map(|s| s.rss_kb)
            .chain([idle.rss_kb, after.rss_kb])
            .max()
            .unwrap_or(0),
        rss_after_kb: after.rss_kb,
        cpu_seconds,
        cpu_share: share(&idle, end),
        open_peak,
        rss_at_open_peak_kb: at_peak.iter().map(|s| s.rss_kb).max().unwrap_or(0),
        cpu_share_at_open_peak: match (at_peak.first(), at_peak.last()) {
            (Some(a), Some(b)) => share(a, b),
            _ => 0.0,
        },
        steady_rss_first_kb: steady.first().map_or(0, |s| s.rss_kb),
        steady_rss_last_kb: steady.last().map_or(0, |s| s.rss_kb),
        steady_rss_max_kb: steady.iter().map(|s| s.rss_kb).max().unwrap_or(0),
        steady_rss_slope_kb_per_min: slope_per_min(&steady),
    }
}

/// Least-squares slope of RSS over time, KiB per minute; `None` under two samples.
fn slope_per_min(samples: &[&Sample]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let mean_t = samples.iter().map(|s| s.t_ms as f64).sum::<f64>() / n;
    let mean_r = samples.iter().map(|s| s.rss_kb as f64).sum::<f64>() / n;
    let (mut cov, mut var) = (0.0, 0.0);
    for s in samples {
        let dt = s.t_ms as f64 - mean_t;
        cov += dt * (s.rss_kb as f64 - mean_r);
        var += dt * dt;
    }
    (var > 0.0).then(|| cov / var * 60_000.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\ttollgate\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kb(status), Some(12345));
        assert_eq!(parse_rss_kb("Name: x\n"), None);
        let stat = "4242 (tollgate (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(320));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let (rss, _) = read(std::process::id()).unwrap();
        assert!(rss > 0);
    }

    #[test]
    fn usage_over_a_ramp() {
        let s = |t_ms, rss_kb, cpu_ticks, open| Sample {
            t_ms,
            rss_kb,
            cpu_ticks,
            open,
        };
        let idle = s(0, 1000, 0, 0);
        let samples = [
            s(1000, 2000, 50, 50),
            s(2000, 5000, 100, 100),
            s(3000, 5100, 150, 100),
            s(4000, 5200, 160, 0),
        ];
        let after = s(9000, 1100, 160, 0);
        let u = usage(idle, &samples, after, 4000, (1000, 3000));
        assert_eq!(u.rss_idle_kb, 1000);
        assert_eq!(u.rss_peak_kb, 5200);
        assert_eq!(u.rss_after_kb, 1100);
        assert!((u.cpu_seconds - 1.6).abs() < 1e-9);
        assert!((u.cpu_share - 0.4).abs() < 1e-9);
        assert_eq!(u.open_peak, 100);
        assert_eq!(u.rss_at_open_peak_kb, 5100);
        assert!((u.cpu_share_at_open_peak - 0.5).abs() < 1e-9);
        assert_eq!(
            (
                u.steady_rss_first_kb,
                u.steady_rss_last_kb,
                u.steady_rss_max_kb
            ),
            (2000, 5100, 5100)
        );
        // (2000, 5000, 5100) KiB at 1, 2, 3 s: 1550 KiB/s.
        let slope = u.steady_rss_slope_kb_per_min.unwrap();
        assert!((slope - 1550.0 * 60.0).abs() < 1e-6, "{slope}");
        let flat = usage(idle, &samples, after, 4000, (3000, 3000));
        assert_eq!(flat.steady_rss_slope_kb_per_min, None);
    }
}
