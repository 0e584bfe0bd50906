//! Open-loop send schedules and loopback source addresses: pure arithmetic.
//!
//! An open-loop load sends request `i` at `start + i / rate` whatever happened to the
//! requests before it, and measures each latency from that intended time. A stalled
//! server therefore shows up as latency instead of fewer samples (no coordinated
//! omission, as in wrk2).

use std::net::Ipv4Addr;
use std::time::Duration;

/// Most loopback source addresses used; `127.0.0.1 ..= 127.0.0.(1 + this - 1)`.
pub const MAX_SOURCES: usize = 250;

/// When request `index` is due, counted from the start of the schedule.
pub fn intended_offset(index: u64, rate_per_sec: f64) -> Duration {
    if rate_per_sec <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(index as f64 / rate_per_sec)
}

/// How many requests are due once `elapsed` has passed (request 0 is due at 0), never
/// more than `total`.
pub fn due_count(elapsed: Duration, rate_per_sec: f64, total: u64) -> u64 {
    if rate_per_sec <= 0.0 {
        return total;
    }
    let due = (elapsed.as_secs_f64() * rate_per_sec).floor() as u64 + 1;
    due.min(total)
}

/// Number of requests an open-loop load of `rate_per_sec` sends in `duration`.
pub fn total_requests(duration: Duration, rate_per_sec: f64) -> u64 {
    (duration.as_secs_f64() * rate_per_sec).round().max(0.0) as u64
}

/// The loopback source address of connection `index` when `sources` addresses are used
/// in turn. Each address has its own ephemeral-port space, so many connections to one
/// server port do not run out of ports.
pub fn source_addr(index: usize, sources: usize) -> Ipv4Addr {
    let n = sources.clamp(1, MAX_SOURCES);
    Ipv4Addr::new(127, 0, 0, 1 + (index % n) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_the_rate() {
        assert_eq!(intended_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(intended_offset(1000, 1000.0), Duration::from_secs(1));
        assert_eq!(intended_offset(5, 10_000.0), Duration::from_micros(500));
        assert_eq!(intended_offset(5, 0.0), Duration::ZERO);
    }

    #[test]
    fn due_counts_include_the_request_at_zero_and_cap_at_total() {
        assert_eq!(due_count(Duration::ZERO, 100.0, 50), 1);
        assert_eq!(due_count(Duration::from_millis(99), 100.0, 50), 10);
        assert_eq!(due_count(Duration::from_millis(100), 100.0, 50), 11);
        assert_eq!(due_count(Duration::from_secs(10), 100.0, 50), 50);
        assert_eq!(due_count(Duration::ZERO, 0.0, 7), 7);
    }

    #[test]
    fn totals_round() {
        assert_eq!(total_requests(Duration::from_secs(5), 1000.0), 5000);
        assert_eq!(total_requests(Duration::from_millis(1500), 3.0), 5);
    }

    #[test]
    fn sources_rotate_over_loopback() {
        assert_eq!(source_addr(0, 4), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_addr(3, 4), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(source_addr(4, 4), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_addr(9, 0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_addr(300, 1000), Ipv4Addr::new(127, 0, 0, 51));
    }
}
