//! The in-process backend: every counter in one map behind one lock (each operation is a
//! few hash lookups, so the lock is held for microseconds). Also the per-node fallback of
//! the Redis backend under `on_failure: open`.
//!
//! Memory stays bounded by what is live: a rate counter whose bucket is full again, a
//! concurrency counter at zero and a budget counter past its period are dropped by a sweep
//! that runs whenever the map has doubled since the last one.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;
use rust_decimal::Decimal;

use super::{
    gcra, Admitted, Backend, BudgetLine, Check, Crossed, Deferred, Outcome, Reserve, Reserved,
    StateHealth,
};
use crate::error::PolicyError;

/// Entries a map may hold before the first sweep.
const FIRST_SWEEP_AT: usize = 1024;

#[derive(Debug, Default, Clone)]
struct BudgetCell {
    spent: Decimal,
    reserved: Decimal,
    /// Thresholds (amounts) already reported this period.
    fired: Vec<Decimal>,
    expires_at_ms: i64,
}

#[derive(Default)]
struct Maps {
    rates: HashMap<String, f64>,
    in_flight: HashMap<String, u64>,
    budgets: HashMap<String, BudgetCell>,
    killed: HashSet<String>,
    sweep_at: usize,
}

pub(crate) struct Memory {
    prefix: String,
    epoch: Instant,
    maps: Mutex<Maps>,
}

impl Memory {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            epoch: Instant::now(),
            maps: Mutex::new(Maps {
                sweep_at: FIRST_SWEEP_AT,
                ..Maps::default()
            }),
        }
    }

    fn now_ms(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1000.0
    }

    pub(crate) fn admit_now(&self, checks: &[Check], reserve: Option<Reserve<'_>>) -> Admitted {
        let now = self.now_ms();
        let mut maps = self.maps.lock();
        let mut outcomes = Vec::with_capacity(checks.len());
        let mut new_tats = Vec::with_capacity(checks.len());
        for check in checks {
            let (outcome, new_tat) = match check {
                Check::Rate { key, limit, cost } => {
                    let tat = maps.rates.get(key).copied().unwrap_or(0.0);
                    gcra::check(tat, now, *limit, *cost)
                }
                Check::Concurrency { key, max } => {
                    let used = maps.in_flight.get(key).copied().unwrap_or(0);
                    (in_flight(used, *max), None)
                }
            };
            outcomes.push(outcome);
            new_tats.push(new_tat);
        }
        let mut reserved = None;
        if outcomes.iter().all(|o| o.allowed) {
            if let Some(reserve) = reserve {
                let answer = reserve_in(&mut maps, reserve);
                let granted = answer == Reserved::Granted;
                reserved = Some(answer);
                if !granted {
                    return Admitted {
                        outcomes,
                        reserved,
                        local: true,
                    };
                }
            }
            for (check, new_tat) in checks.iter().zip(new_tats) {
                match check {
                    Check::Rate { key, .. } => {
                        if let Some(tat) = new_tat {
                            maps.rates.insert(key.clone(), tat);
                        }
                    }
                    Check::Concurrency { key, .. } => {
                        *maps.in_flight.entry(key.clone()).or_default() += 1;
                    }
                }
            }
            sweep(&mut maps, now);
        }
        Admitted {
            outcomes,
            reserved,
            local: true,
        }
    }

    pub(crate) fn apply(&self, op: Deferred) {
        let now = self.now_ms();
        let mut maps = self.maps.lock();
        match op {
            Deferred::RateAdjust { key, limit, delta } => {
                let tat = maps.rates.get(&key).copied().unwrap_or(0.0);
                let tat = gcra::adjust(tat, now, limit, delta);
                if tat > now {
                    maps.rates.insert(key, tat);
                } else {
                    maps.rates.remove(&key);
                }
            }
            Deferred::Release { key } => {
                if let Some(used) = maps.in_flight.get_mut(&key) {
                    *used = used.saturating_sub(1);
                    if *used == 0 {
                        maps.in_flight.remove(&key);
                    }
                }
            }
            Deferred::Unreserve { key, amount } => {
                if let Some(cell) = maps.budgets.get_mut(&key) {
                    cell.reserved = (cell.reserved - amount).max(Decimal::ZERO);
                }
            }
        }
    }

    pub(crate) fn settle_now(
        &self,
        lines: &[BudgetLine],
        reserved: Decimal,
        actual: Decimal,
    ) -> Vec<Crossed> {
        let mut maps = self.maps.lock();
        let mut crossed = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            let cell = maps.budgets.entry(line.key.clone()).or_default();
            cell.reserved = (cell.reserved - reserved).max(Decimal::ZERO);
            cell.spent += actual;
            cell.expires_at_ms = line.expires_at_ms;
            for threshold in &line.alerts {
                if cell.spent >= *threshold && !cell.fired.contains(threshold) {
                    cell.fired.push(*threshold);
                    crossed.push(Crossed {
                        line: index,
                        threshold: *threshold,
                        spent: cell.spent,
                    });
                }
            }
        }
        crossed
    }

    /// Adds spend that was settled elsewhere (Redis, before an outage) so local
    /// enforcement starts from it; a counter already known here keeps its own value.
    pub(crate) fn seed(&self, key: &str, spent: Decimal, expires_at_ms: i64) {
        let mut maps = self.maps.lock();
        maps.budgets
            .entry(key.to_owned())
            .or_insert_with(|| BudgetCell {
                spent,
                expires_at_ms,
                ..BudgetCell::default()
            });
    }

    pub(crate) fn rebuild_now(&self, line: &BudgetLine, spent: Decimal) {
        let mut maps = self.maps.lock();
        let cell = maps.budgets.entry(line.key.clone()).or_default();
        cell.spent = cell.spent.max(spent);
        cell.expires_at_ms = line.expires_at_ms;
        for threshold in &line.alerts {
            if cell.spent >= *threshold && !cell.fired.contains(threshold) {
                cell.fired.push(*threshold);
            }
        }
    }

    pub(crate) fn budget_now(&self, key: &str) -> (Decimal, Decimal) {
        self.maps
            .lock()
            .budgets
            .get(key)
            .map_or((Decimal::ZERO, Decimal::ZERO), |c| (c.spent, c.reserved))
    }

    pub(crate) fn set_killed_now(&self, entry: &str, killed: bool) {
        let mut maps = self.maps.lock();
        if killed {
            maps.killed.insert(entry.to_owned());
        } else {
            maps.killed.remove(entry);
        }
    }

    /// Takes the kill switch as last read from Redis.
    pub(crate) fn replace_killed(&self, entries: Vec<String>) {
        self.maps.lock().killed = entries.into_iter().collect();
    }

    pub(crate) fn killed_now(&self) -> Vec<String> {
        let mut entries: Vec<String> = self.maps.lock().killed.iter().cloned().collect();
        entries.sort();
        entries
    }
}

/// Kill-switch entries first, then every enforced line; reserves on every line iff all
/// pass.
fn reserve_in(maps: &mut Maps, reserve: Reserve<'_>) -> Reserved {
    if let Some(index) = reserve
        .kill
        .iter()
        .position(|entry| maps.killed.contains(entry))
    {
        return Reserved::Killed { index };
    }
    for (index, line) in reserve.lines.iter().enumerate() {
        let cell = maps.budgets.get(&line.key);
        let committed = cell.map_or(Decimal::ZERO, |c| c.spent + c.reserved);
        if line.enforce && committed >= line.limit {
            return Reserved::Exhausted { index };
        }
    }
    for line in reserve.lines {
        let cell = maps.budgets.entry(line.key.clone()).or_default();
        cell.reserved += reserve.amount;
        cell.expires_at_ms = line.expires_at_ms;
    }
    Reserved::Granted
}

/// The outcome of a concurrency counter at `used` of `max`.
fn in_flight(used: u64, max: u64) -> Outcome {
    let allowed = used < max;
    Outcome {
        allowed,
        remaining: if allowed {
            max - used - 1
        } else {
            max.saturating_sub(used)
        },
        reset: std::time::Duration::ZERO,
        retry_after: None,
    }
}

/// Drops what no longer matters once the maps have doubled since the last sweep.
fn sweep(maps: &mut Maps, now: f64) {
    let size = maps.rates.len() + maps.budgets.len();
    if size < maps.sweep_at {
        return;
    }
    maps.rates.retain(|_, tat| *tat > now);
    let wall_ms = chrono::Utc::now().timestamp_millis();
    maps.budgets.retain(|_, cell| cell.expires_at_ms > wall_ms);
    let size = maps.rates.len() + maps.budgets.len();
    maps.sweep_at = (size * 2).max(FIRST_SWEEP_AT);
}

#[async_trait]
impl Backend for Memory {
    async fn admit(
        &self,
        checks: &[Check],
        reserve: Option<Reserve<'_>>,
    ) -> Result<Admitted, PolicyError> {
        Ok(self.admit_now(checks, reserve))
    }

    fn defer(&self, op: Deferred, _local: bool) {
        self.apply(op);
    }

    async fn settle(
        &self,
        lines: &[BudgetLine],
        reserved: Decimal,
        actual: Decimal,
        _local: bool,
    ) -> Vec<Crossed> {
        self.settle_now(lines, reserved, actual)
    }

    async fn rebuild(&self, line: &BudgetLine, spent: Decimal) -> Result<(), PolicyError> {
        self.rebuild_now(line, spent);
        Ok(())
    }

    async fn budget(&self, key: &str) -> Result<(Decimal, Decimal), PolicyError> {
        Ok(self.budget_now(key))
    }

    async fn set_killed(&self, entry: &str, killed: bool) -> Result<(), PolicyError> {
        self.set_killed_now(entry, killed);
        Ok(())
    }

    async fn killed(&self) -> Result<Vec<String>, PolicyError> {
        Ok(self.killed_now())
    }

    fn health(&self) -> StateHealth {
        StateHealth::Ok
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(key: String) -> Check {
        Check::Rate {
            key,
            limit: 1_000_000,
            cost: 1,
        }
    }

    #[test]
    fn idle_counters_are_swept_once_the_map_has_grown() {
        let memory = Memory::new("");
        for i in 0..FIRST_SWEEP_AT - 1 {
            assert!(memory.admit_now(&[rate(format!("k{i}"))], None).outcomes[0].allowed);
        }
        assert_eq!(memory.maps.lock().rates.len(), FIRST_SWEEP_AT - 1);
        // Each bucket is full again 60 µs after its request.
        std::thread::sleep(std::time::Duration::from_millis(5));
        memory.admit_now(&[rate("last".into())], None);
        let maps = memory.maps.lock();
        assert_eq!(maps.rates.len(), 1, "only the live counter is kept");
        assert_eq!(maps.sweep_at, FIRST_SWEEP_AT);
    }
}
