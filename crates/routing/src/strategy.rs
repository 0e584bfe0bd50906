//! How a route picks its primary target among the targets that are available and fit the
//! prompt. Weights only matter to the `weighted` strategy; the others break ties uniformly
//! at random so equal targets share traffic.

use std::time::Instant;

use rand::Rng;
use tollgate_config::Strategy;

use crate::pool::Upstreams;
use crate::router::Target;

pub(crate) fn select<'t>(
    strategy: Strategy,
    targets: &[&'t Target],
    upstreams: &Upstreams,
    now: Instant,
    rng: &mut impl Rng,
) -> Option<&'t Target> {
    match strategy {
        Strategy::Weighted => weighted(targets, rng),
        Strategy::Latency => two_choices(targets, rng, |t| {
            upstreams
                .provider(&t.model.provider)
                .map_or(u128::MAX, |p| p.best_ttfb(now).as_micros())
        }),
        Strategy::LeastBusy => lowest(targets, rng, |t| {
            upstreams
                .provider(&t.model.provider)
                .map_or(u64::MAX, |p| p.in_flight())
        }),
        Strategy::Cost => lowest(targets, rng, |t| {
            let price = t
                .model
                .price
                .as_ref()
                .map_or(f64::INFINITY, |p| p.input + p.output);
            // NaN would make every comparison false; an unusable price ranks last.
            if price.is_nan() {
                f64::INFINITY
            } else {
                price
            }
        }),
    }
}

/// Random by weight; targets of weight 0 never win.
fn weighted<'t>(targets: &[&'t Target], rng: &mut impl Rng) -> Option<&'t Target> {
    let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut draw = rng.random_range(0..total);
    for t in targets {
        let w = u64::from(t.weight);
        if draw < w {
            return Some(t);
        }
        draw -= w;
    }
    None
}

/// The power of two random choices: the better of two distinct random targets. Cheaper than
/// a full scan and avoids herding every request onto one momentarily-best target.
fn two_choices<'t, K: PartialOrd>(
    targets: &[&'t Target],
    rng: &mut impl Rng,
    score: impl Fn(&Target) -> K,
) -> Option<&'t Target> {
    match targets {
        [] => None,
        [only] => Some(only),
        _ => {
            let n = targets.len();
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (targets[a], targets[b]);
            Some(if score(b) < score(a) { b } else { a })
        }
    }
}

/// The lowest-scoring target, ties broken uniformly at random (reservoir sampling).
fn lowest<'t, K: PartialOrd + Copy>(
    targets: &[&'t Target],
    rng: &mut impl Rng,
    score: impl Fn(&Target) -> K,
) -> Option<&'t Target> {
    let mut best: Option<(K, &'t Target)> = None;
    let mut ties = 0u32;
    for &t in targets {
        let k = score(t);
        match best {
            Some((b, _)) if k > b => {}
            Some((b, _)) if k == b => {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = Some((k, t));
                }
            }
            _ => {
                best = Some((k, t));
                ties = 1;
            }
        }
    }
    best.map(|(_, t)| t)
}
