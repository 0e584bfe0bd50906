//! What a response tells the client about its limits, in OpenAI's header names.

use std::time::Duration;

/// One limit's standing: the numbers behind `x-ratelimit-*-requests` or `-tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Per minute.
    pub limit: u64,
    /// Left now (after this request when it was admitted).
    pub remaining: u64,
    /// Until the limit is back to its full capacity.
    pub reset: Duration,
}

/// The most restrictive request and token limits that applied to a request; `None` when
/// no limit of that kind applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub requests: Option<Quota>,
    pub tokens: Option<Quota>,
}

impl RateHeaders {
    /// `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
    /// `x-ratelimit-reset-requests` and the `-tokens` variants, with resets written like
    /// OpenAI's (`6m0s`, `1.5s`, `120ms`).
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::with_capacity(6);
        if let Some(q) = self.requests {
            pairs.push(("x-ratelimit-limit-requests", q.limit.to_string()));
            pairs.push(("x-ratelimit-remaining-requests", q.remaining.to_string()));
            pairs.push(("x-ratelimit-reset-requests", format_reset(q.reset)));
        }
        if let Some(q) = self.tokens {
            pairs.push(("x-ratelimit-limit-tokens", q.limit.to_string()));
            pairs.push(("x-ratelimit-remaining-tokens", q.remaining.to_string()));
            pairs.push(("x-ratelimit-reset-tokens", format_reset(q.reset)));
        }
        pairs
    }

    /// Keeps whichever quota leaves less (ties: the later reset).
    pub(crate) fn merge(slot: &mut Option<Quota>, quota: Quota) {
        let tighter = match slot {
            None => true,
            Some(old) => {
                (quota.remaining, std::cmp::Reverse(quota.reset))
                    < (old.remaining, std::cmp::Reverse(old.reset))
            }
        };
        if tighter {
            *slot = Some(quota);
        }
    }
}

/// A duration as Go prints it, at millisecond precision: `0s`, `120ms`, `1.5s`, `6m0s`,
/// `1h0m0s`.
pub(crate) fn format_reset(reset: Duration) -> String {
    let ms = reset.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = ms / 60_000 % 60;
    let seconds = ms / 1000 % 60;
    let fraction = ms % 1000;
    let mut seconds_text = seconds.to_string();
    if fraction > 0 {
        let digits = format!("{fraction:03}");
        seconds_text.push('.');
        seconds_text.push_str(digits.trim_end_matches('0'));
    }
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds_text}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds_text}s")
    } else {
        format!("{seconds_text}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_read_like_openais() {
        let cases = [
            (0, "0s"),
            (120, "120ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (17_250, "17.25s"),
            (360_000, "6m0s"),
            (61_001, "1m1.001s"),
            (3_600_000, "1h0m0s"),
        ];
        for (ms, text) in cases {
            assert_eq!(format_reset(Duration::from_millis(ms)), text);
        }
    }

    #[test]
    fn the_tightest_quota_wins() {
        let mut slot = None;
        let q = |remaining, reset| Quota {
            limit: 10,
            remaining,
            reset: Duration::from_secs(reset),
        };
        RateHeaders::merge(&mut slot, q(5, 1));
        RateHeaders::merge(&mut slot, q(7, 9));
        assert_eq!(slot, Some(q(5, 1)));
        RateHeaders::merge(&mut slot, q(5, 3));
        assert_eq!(slot, Some(q(5, 3)));
        let headers = RateHeaders {
            requests: slot,
            tokens: None,
        };
        assert_eq!(
            headers.to_pairs(),
            [
                ("x-ratelimit-limit-requests", "10".to_owned()),
                ("x-ratelimit-remaining-requests", "5".to_owned()),
                ("x-ratelimit-reset-requests", "3s".to_owned()),
            ]
        );
    }
}
