//! The shared backend: every counter in Redis, so all nodes enforce one limit and one
//! budget. Admitting a request is one Lua script (atomic on the server, one round trip):
//! it checks every rate and concurrency counter of the request, then the kill switch and
//! every budget counter, and charges them all only when all pass; a reservation that
//! fails leaves the admission undone (nothing is written). Rate counters use the Redis
//! server's clock (`TIME`), so node clocks do not matter. Standalone Redis (or a primary with replicas); not Redis Cluster,
//! since one script touches keys of several hash slots.
//!
//! Local batching, and what it costs in accuracy:
//! - Give-backs (a finished request's concurrency slot, a token correction, a dropped
//!   reservation) and spend that could not be written are queued in this process,
//!   aggregated per counter, and written by one script every [`FLUSH_INTERVAL`] (sooner
//!   once [`FLUSH_BATCH`] are queued). A give-back that arrives late only makes a limit
//!   stricter for that long; a token correction upward (a request used more tokens than
//!   estimated) reaches the shared counter up to [`FLUSH_INTERVAL`] late, so other nodes may
//!   admit up to that interval's under-counted tokens more.
//! - Admission with its reservation is never batched: one round trip per request.
//!
//! Failure handling: a command that fails or takes longer than the configured timeout marks
//! Redis down. Then `on_failure: open` uses a per-node [`Memory`] backend (rate and
//! concurrency limits per node; budgets seeded from the spend last seen in Redis; the kill
//! switch as last read), and `closed` answers [`PolicyError::StateUnavailable`]. Settles
//! never fail: spend is kept and written when Redis answers again. Reconnects are tried
//! every [`RECONNECT_INTERVAL`] by requests and by the heartbeat; after reconnecting, this
//! node first writes its exact in-flight counts (Redis may have restarted empty) and then
//! serves from Redis again.
//!
//! Concurrency slots are kept per node (a hash field per node id) next to a liveness key
//! the node refreshes every [`HEARTBEAT_INTERVAL`]; slots of a node whose liveness key
//! expired ([`NODE_TTL`]) stop counting, so a crashed node cannot hold slots forever.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};
use rust_decimal::Decimal;
use tokio::sync::Notify;

use super::{
    from_nanos, to_nanos, Admitted, Backend, BudgetLine, Check, Crossed, Deferred, Memory, Outcome,
    Reserve, Reserved, StateHealth,
};
use crate::config::OnFailure;
use crate::error::PolicyError;

/// How often queued give-backs are written.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// Queued give-backs that trigger a write before [`FLUSH_INTERVAL`] is up.
pub(crate) const FLUSH_BATCH: usize = 256;

/// Most counters written by one give-back script; larger batches take several calls so no
/// single script blocks Redis for long.
const MAX_KEYS_PER_SCRIPT: usize = 512;

/// Most distinct counters with queued give-backs (per kind) while Redis is unreachable;
/// beyond it new ones are dropped with a warning. A dropped rate give-back or unreserve
/// only leaves a counter stricter than it should be until it expires.
const MAX_PENDING_KEYS: usize = 65_536;

/// Most budget counters whose last seen spend is remembered to seed the local fallback;
/// the memory is cleared when full.
const MAX_SEEN_KEYS: usize = 65_536;

/// How long after a failure the next connection attempt is made.
pub(crate) const RECONNECT_INTERVAL: Duration = Duration::from_millis(250);

/// How often a node refreshes its liveness key and rereads the kill switch.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a node's concurrency slots count after its last heartbeat.
pub(crate) const NODE_TTL: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Pending {
    /// Rate counter -> (limit, units to add).
    rate: HashMap<String, (u64, i64)>,
    /// Concurrency counter -> change of this node's in-flight count.
    conc: HashMap<String, i64>,
    /// Budget counter -> (reserved nano-USD to release, spent to add, expiry).
    budget: HashMap<String, (i64, i64, i64)>,
    /// This node's in-flight requests per concurrency counter, charged in Redis.
    in_flight: HashMap<String, u64>,
    queued: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.rate.is_empty() && self.conc.is_empty() && self.budget.is_empty()
    }

    fn add_rate(&mut self, key: String, limit: u64, delta: i64) {
        if let Some(entry) = self.rate.get_mut(&key) {
            entry.1 += delta;
        } else if self.rate.len() < MAX_PENDING_KEYS {
            self.rate.insert(key, (limit, delta));
        } else {
            tracing::warn!(counter = %key, "give-back queue full; dropping a token correction");
        }
    }

    fn add_conc(&mut self, key: String, delta: i64) {
        // Never dropped: reconnecting rewrites exact counts from `in_flight`, and the map
        // is bounded by the counters this node has requests in flight on.
        *self.conc.entry(key).or_default() += delta;
    }

    fn add_budget(&mut self, key: String, release: i64, spend: i64, expires_at_ms: i64) {
        if let Some(entry) = self.budget.get_mut(&key) {
            entry.0 += release;
            entry.1 += spend;
            entry.2 = entry.2.max(expires_at_ms);
        } else if self.budget.len() < MAX_PENDING_KEYS || spend != 0 {
            // Spend is money: it is kept even past the bound.
            self.budget.insert(key, (release, spend, expires_at_ms));
        } else {
            tracing::warn!(counter = %key, "give-back queue full; dropping a reservation release");
        }
    }
}

struct Scripts {
    admit: Script,
    giveback: Script,
    settle: Script,
    rebuild: Script,
}

pub(crate) struct RedisBackend {
    client: redis::Client,
    prefix: String,
    node_id: String,
    on_failure: OnFailure,
    timeout: Duration,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// While Redis is down: when the next connection attempt may be made.
    retry_at: Mutex<Option<Instant>>,
    connecting: tokio::sync::Mutex<()>,
    local: Memory,
    pending: Mutex<Pending>,
    flush_now: Arc<Notify>,
    seen: Mutex<HashMap<String, Decimal>>,
    scripts: Scripts,
}

impl RedisBackend {
    pub(crate) async fn connect(
        url: &str,
        prefix: String,
        on_failure: OnFailure,
        timeout: Duration,
    ) -> Result<Arc<Self>, PolicyError> {
        let client = redis::Client::open(url)?;
        let backend = Arc::new(Self {
            client,
            local: Memory::new(&prefix),
            prefix,
            node_id: uuid::Uuid::new_v4().simple().to_string(),
            on_failure,
            timeout,
            conn: Mutex::new(None),
            retry_at: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            pending: Mutex::new(Pending::default()),
            flush_now: Arc::new(Notify::new()),
            seen: Mutex::new(HashMap::new()),
            scripts: Scripts {
                admit: Script::new(include_str!("lua/admit.lua")),
                giveback: Script::new(include_str!("lua/giveback.lua")),
                settle: Script::new(include_str!("lua/settle.lua")),
                rebuild: Script::new(include_str!("lua/rebuild.lua")),
            },
        });
        if backend.connection().await.is_none() {
            tracing::warn!(on_failure = ?on_failure, "redis unreachable at start-up");
        }
        tokio::spawn(flusher(
            Arc::downgrade(&backend),
            Arc::clone(&backend.flush_now),
        ));
        tokio::spawn(heartbeat(Arc::downgrade(&backend)));
        Ok(backend)
    }

    fn node_key(&self) -> String {
        format!("{}node:{}", self.prefix, self.node_id)
    }

    fn kill_key(&self) -> String {
        format!("{}kill", self.prefix)
    }

    /// The live connection, or a new one when a reconnect is due; `None` while down.
    async fn connection(&self) -> Option<MultiplexedConnection> {
        if let Some(conn) = self.conn.lock().clone() {
            return Some(conn);
        }
        if self.retry_at.lock().is_some_and(|at| Instant::now() < at) {
            return None;
        }
        // One connection attempt at a time; others fall back instead of queueing behind it.
        let Ok(_connecting) = self.connecting.try_lock() else {
            return None;
        };
        if let Some(conn) = self.conn.lock().clone() {
            return Some(conn);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let attempt = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            self.reconcile(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        match tokio::time::timeout(self.timeout * 4, attempt).await {
            Ok(Ok(conn)) => {
                let was_down = self.retry_at.lock().take().is_some();
                *self.conn.lock() = Some(conn.clone());
                if was_down {
                    tracing::info!("redis reachable again; shared limits and budgets resume");
                }
                self.flush_now.notify_one();
                Some(conn)
            }
            Ok(Err(err)) => {
                self.broken(&err.to_string());
                None
            }
            Err(_) => {
                self.broken("connect timed out");
                None
            }
        }
    }

    fn broken(&self, why: &str) {
        let was_up = self.conn.lock().take().is_some();
        let mut retry_at = self.retry_at.lock();
        if was_up || retry_at.is_none() {
            tracing::warn!(error = %why, on_failure = ?self.on_failure, "redis unreachable");
        }
        *retry_at = Some(Instant::now() + RECONNECT_INTERVAL);
    }

    /// Writes this node's exact in-flight counts (Redis may have lost them) and replaces
    /// the queued changes of them, before the connection serves anything else.
    async fn reconcile(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let (counts, replaced) = {
            let mut pending = self.pending.lock();
            let mut counts: Vec<(String, u64)> = pending
                .in_flight
                .iter()
                .map(|(key, n)| (key.clone(), *n))
                .collect();
            for key in pending.conc.keys() {
                if !pending.in_flight.contains_key(key) {
                    counts.push((key.clone(), 0));
                }
            }
            (counts, std::mem::take(&mut pending.conc))
        };
        // Liveness first: other nodes drop the slots of nodes without it.
        let alive = redis::cmd("SET")
            .arg(self.node_key())
            .arg(1)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .query_async::<()>(conn)
            .await;
        let written = async {
            alive?;
            for chunk in counts.chunks(MAX_KEYS_PER_SCRIPT) {
                let mut call = self.scripts.giveback.prepare_invoke();
                call.arg(&self.node_id);
                for (key, count) in chunk {
                    call.key(key).arg("h").arg(*count).arg(0).arg(0);
                }
                call.invoke_async::<i64>(conn).await?;
            }
            Ok(())
        }
        .await;
        if written.is_err() {
            // Not reconciled: keep the changes for the next attempt.
            let mut pending = self.pending.lock();
            for (key, delta) in replaced {
                pending.add_conc(key, delta);
            }
        }
        written
    }

    fn fallback<T>(&self, local: impl FnOnce() -> T) -> Result<T, PolicyError> {
        match self.on_failure {
            OnFailure::Open => Ok(local()),
            OnFailure::Closed => Err(PolicyError::StateUnavailable),
        }
    }

    async fn run_admit(
        &self,
        conn: &mut MultiplexedConnection,
        checks: &[Check],
        reserve: Option<Reserve<'_>>,
    ) -> redis::RedisResult<Vec<i64>> {
        let mut call = self.scripts.admit.prepare_invoke();
        call.key(self.node_key())
            .key(self.kill_key())
            .arg(&self.node_id)
            .arg(NODE_TTL.as_millis() as u64)
            .arg(format!("{}node:", self.prefix))
            .arg(checks.len());
        for check in checks {
            match check {
                Check::Rate { key, limit, cost } => call.key(key).arg("r").arg(*limit).arg(*cost),
                Check::Concurrency { key, max } => call.key(key).arg("c").arg(*max).arg(1),
            };
        }
        match reserve {
            None => {
                call.arg(0).arg(0).arg(0);
            }
            Some(reserve) => {
                call.arg(1)
                    .arg(to_nanos(reserve.amount))
                    .arg(reserve.kill.len());
                for entry in reserve.kill {
                    call.arg(entry);
                }
                for line in reserve.lines {
                    call.key(&line.key)
                        .arg(to_nanos(line.limit))
                        .arg(u8::from(line.enforce))
                        .arg(line.expires_at_ms);
                }
            }
        }
        call.invoke_async(conn).await
    }

    async fn run_settle(
        &self,
        conn: &mut MultiplexedConnection,
        lines: &[BudgetLine],
        reserved: Decimal,
        actual: Decimal,
    ) -> redis::RedisResult<Vec<String>> {
        let mut call = self.scripts.settle.prepare_invoke();
        call.arg(-to_nanos(reserved)).arg(to_nanos(actual));
        for line in lines {
            call.key(&line.key)
                .arg(line.expires_at_ms)
                .arg(line.alerts.len());
            for threshold in &line.alerts {
                call.arg(to_nanos(*threshold));
            }
        }
        call.invoke_async(conn).await
    }

    /// Starts local enforcement of these counters from the spend last seen in Redis.
    fn seed_local(&self, lines: &[BudgetLine]) {
        let seen = self.seen.lock();
        for line in lines {
            if let Some(spent) = seen.get(&line.key) {
                self.local.seed(&line.key, *spent, line.expires_at_ms);
            }
        }
    }

    fn remember(&self, lines: &[BudgetLine], spent: &[i64]) {
        let mut seen = self.seen.lock();
        if seen.len() + lines.len() > MAX_SEEN_KEYS {
            seen.clear();
        }
        for (line, nanos) in lines.iter().zip(spent) {
            seen.insert(line.key.clone(), from_nanos(*nanos));
        }
    }

    fn queue_spend(&self, lines: &[BudgetLine], release: Decimal, spend: Decimal) {
        let mut pending = self.pending.lock();
        for line in lines {
            pending.add_budget(
                line.key.clone(),
                -to_nanos(release),
                to_nanos(spend),
                line.expires_at_ms,
            );
        }
        pending.queued += 1;
    }

    /// Writes queued give-backs; on failure they stay queued.
    async fn flush(&self) {
        let batch = {
            let mut pending = self.pending.lock();
            if pending.is_empty() {
                return;
            }
            pending.queued = 0;
            (
                std::mem::take(&mut pending.rate),
                std::mem::take(&mut pending.conc),
                std::mem::take(&mut pending.budget),
            )
        };
        let mut ops: Vec<(String, [String; 4])> = Vec::new();
        for (key, (limit, delta)) in &batch.0 {
            ops.push((
                key.clone(),
                ["r".into(), limit.to_string(), delta.to_string(), "0".into()],
            ));
        }
        for (key, delta) in &batch.1 {
            ops.push((
                key.clone(),
                ["c".into(), delta.to_string(), "0".into(), "0".into()],
            ));
        }
        for (key, (release, spend, expires)) in &batch.2 {
            ops.push((
                key.clone(),
                [
                    "b".into(),
                    release.to_string(),
                    spend.to_string(),
                    expires.to_string(),
                ],
            ));
        }
        let written = match self.connection().await {
            Some(mut conn) => {
                let mut result = Ok(());
                for chunk in ops.chunks(MAX_KEYS_PER_SCRIPT) {
                    let mut call = self.scripts.giveback.prepare_invoke();
                    call.arg(&self.node_id);
                    for (key, args) in chunk {
                        call.key(key);
                        for arg in args {
                            call.arg(arg);
                        }
                    }
                    if let Err(err) = call.invoke_async::<i64>(&mut conn).await {
                        result = Err(err);
                        break;
                    }
                }
                match result {
                    Ok(()) => true,
                    Err(err) => {
                        self.broken(&err.to_string());
                        false
                    }
                }
            }
            None => false,
        };
        if !written {
            // A failed script call may have applied a prefix of the batch; queueing all
            // of it again repeats that prefix, which only makes counters stricter (a
            // repeated release would not: releases are rewritten exactly on reconnect).
            let mut pending = self.pending.lock();
            for (key, (limit, delta)) in batch.0 {
                pending.add_rate(key, limit, delta);
            }
            for (key, delta) in batch.1 {
                pending.add_conc(key, delta);
            }
            for (key, (release, spend, expires)) in batch.2 {
                pending.add_budget(key, release, spend, expires);
            }
        }
    }

    /// Refreshes this node's liveness and the local copy of the kill switch; also the way
    /// an idle node notices that Redis is back.
    async fn beat(&self) {
        let Some(mut conn) = self.connection().await else {
            return;
        };
        let result: redis::RedisResult<Vec<String>> = async {
            redis::cmd("SET")
                .arg(self.node_key())
                .arg(1)
                .arg("PX")
                .arg(NODE_TTL.as_millis() as u64)
                .query_async::<()>(&mut conn)
                .await?;
            redis::cmd("SMEMBERS")
                .arg(self.kill_key())
                .query_async(&mut conn)
                .await
        }
        .await;
        match result {
            Ok(killed) => self.local.replace_killed(killed),
            Err(err) => self.broken(&err.to_string()),
        }
    }
}

async fn flusher(backend: Weak<RedisBackend>, wake: Arc<Notify>) {
    loop {
        let _ = tokio::time::timeout(FLUSH_INTERVAL, wake.notified()).await;
        let Some(backend) = backend.upgrade() else {
            return;
        };
        backend.flush().await;
    }
}

async fn heartbeat(backend: Weak<RedisBackend>) {
    let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(backend) = backend.upgrade() else {
            return;
        };
        backend.beat().await;
    }
}

/// The admit script's answer: the outcome of every check, the reservation's answer (when
/// it was tried) and the spend of every budget counter (when it was granted).
fn parse_admit(raw: &[i64], count: usize) -> Option<(Vec<Outcome>, Option<Reserved>, &[i64])> {
    let (head, rest) = raw.split_at_checked(3)?;
    let (checks, spent) = rest.split_at_checked(4 * count)?;
    let outcomes = checks
        .chunks_exact(4)
        .map(|c| Outcome {
            allowed: c[0] == 1,
            remaining: c[1].max(0).unsigned_abs(),
            reset: Duration::from_millis(c[2].max(0).unsigned_abs()),
            retry_after: (c[3] >= 0).then(|| Duration::from_millis(c[3].unsigned_abs())),
        })
        .collect();
    let index = usize::try_from(head[2]).ok();
    let reserved = match head[1] {
        -1 => None,
        0 => Some(Reserved::Granted),
        1 => Some(Reserved::Exhausted { index: index? }),
        2 => Some(Reserved::Killed { index: index? }),
        _ => return None,
    };
    Some((outcomes, reserved, spent))
}

fn unexpected(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Parse,
        "unexpected script answer",
        what.to_owned(),
    ))
}

#[async_trait]
impl Backend for RedisBackend {
    async fn admit(
        &self,
        checks: &[Check],
        reserve: Option<Reserve<'_>>,
    ) -> Result<Admitted, PolicyError> {
        if checks.is_empty() && reserve.is_none() {
            return Ok(Admitted {
                outcomes: Vec::new(),
                reserved: None,
                local: false,
            });
        }
        let local = || {
            if let Some(reserve) = reserve {
                self.seed_local(reserve.lines);
            }
            self.local.admit_now(checks, reserve)
        };
        let Some(mut conn) = self.connection().await else {
            return self.fallback(local);
        };
        let raw = match self.run_admit(&mut conn, checks, reserve).await {
            Ok(raw) => raw,
            Err(err) => {
                self.broken(&err.to_string());
                return self.fallback(local);
            }
        };
        let Some((outcomes, reserved, spent)) = parse_admit(&raw, checks.len()) else {
            self.broken(&unexpected("admit").to_string());
            return self.fallback(local);
        };
        let charged = outcomes.iter().all(|o| o.allowed)
            && reserved.as_ref().is_none_or(|r| *r == Reserved::Granted);
        if charged {
            if let Some(reserve) = reserve {
                self.remember(reserve.lines, spent);
            }
            let mut pending = self.pending.lock();
            for check in checks {
                if let Check::Concurrency { key, .. } = check {
                    *pending.in_flight.entry(key.clone()).or_default() += 1;
                }
            }
        }
        Ok(Admitted {
            outcomes,
            reserved,
            local: false,
        })
    }

    fn defer(&self, op: Deferred, local: bool) {
        if local {
            self.local.apply(op);
            return;
        }
        let mut pending = self.pending.lock();
        match op {
            Deferred::RateAdjust { key, limit, delta } => pending.add_rate(key, limit, delta),
            Deferred::Release { key } => {
                if let Some(n) = pending.in_flight.get_mut(&key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        pending.in_flight.remove(&key);
                    }
                }
                pending.add_conc(key, -1);
            }
            Deferred::Unreserve { key, amount } => {
                // The expiry is only refreshed by give-backs; zero keeps Redis's own.
                pending.add_budget(key, -to_nanos(amount), 0, 0);
            }
        }
        pending.queued += 1;
        if pending.queued >= FLUSH_BATCH {
            self.flush_now.notify_one();
        }
    }

    async fn settle(
        &self,
        lines: &[BudgetLine],
        reserved: Decimal,
        actual: Decimal,
        local: bool,
    ) -> Vec<Crossed> {
        if local {
            // Reserved and spent on this node during an outage: Redis never saw the
            // reservation, but must learn the spend.
            self.queue_spend(lines, Decimal::ZERO, actual);
            return self.local.settle_now(lines, reserved, actual);
        }
        if let Some(mut conn) = self.connection().await {
            match self.run_settle(&mut conn, lines, reserved, actual).await {
                Ok(raw) => {
                    return raw
                        .chunks_exact(3)
                        .filter_map(|c| {
                            Some(Crossed {
                                line: c[0].parse().ok()?,
                                threshold: from_nanos(c[1].parse().ok()?),
                                spent: from_nanos(c[2].parse().ok()?),
                            })
                        })
                        .collect();
                }
                Err(err) => self.broken(&err.to_string()),
            }
        }
        // Redis is down: write it later, and let local enforcement count it meanwhile.
        self.queue_spend(lines, reserved, actual);
        self.seed_local(lines);
        self.local.settle_now(lines, Decimal::ZERO, actual);
        Vec::new()
    }

    async fn rebuild(&self, line: &BudgetLine, spent: Decimal) -> Result<(), PolicyError> {
        let Some(mut conn) = self.connection().await else {
            return self.fallback(|| self.local.rebuild_now(line, spent));
        };
        let mut call = self.scripts.rebuild.prepare_invoke();
        call.key(&line.key)
            .arg(to_nanos(spent))
            .arg(line.expires_at_ms);
        for threshold in &line.alerts {
            call.arg(to_nanos(*threshold));
        }
        match call.invoke_async::<i64>(&mut conn).await {
            Ok(_) => Ok(()),
            Err(err) => {
                self.broken(&err.to_string());
                self.fallback(|| self.local.rebuild_now(line, spent))
            }
        }
    }

    async fn budget(&self, key: &str) -> Result<(Decimal, Decimal), PolicyError> {
        let Some(mut conn) = self.connection().await else {
            return self.fallback(|| self.local.budget_now(key));
        };
        let answer: redis::RedisResult<(Option<i64>, Option<i64>)> = redis::cmd("HMGET")
            .arg(key)
            .arg("spent")
            .arg("reserved")
            .query_async(&mut conn)
            .await;
        match answer {
            Ok((spent, reserved)) => Ok((
                from_nanos(spent.unwrap_or(0)),
                from_nanos(reserved.unwrap_or(0)),
            )),
            Err(err) => {
                self.broken(&err.to_string());
                self.fallback(|| self.local.budget_now(key))
            }
        }
    }

    async fn set_killed(&self, entry: &str, killed: bool) -> Result<(), PolicyError> {
        // The kill switch is an operator action: it must reach every node, so it is
        // refused rather than applied to this node alone while Redis is down.
        let mut conn = self
            .connection()
            .await
            .ok_or(PolicyError::StateUnavailable)?;
        let command = if killed { "SADD" } else { "SREM" };
        let result = redis::cmd(command)
            .arg(self.kill_key())
            .arg(entry)
            .query_async::<()>(&mut conn)
            .await;
        if let Err(err) = result {
            self.broken(&err.to_string());
            return Err(PolicyError::StateUnavailable);
        }
        self.local.set_killed_now(entry, killed);
        Ok(())
    }

    async fn killed(&self) -> Result<Vec<String>, PolicyError> {
        let Some(mut conn) = self.connection().await else {
            return self.fallback(|| self.local.killed_now());
        };
        let answer: redis::RedisResult<Vec<String>> = redis::cmd("SMEMBERS")
            .arg(self.kill_key())
            .query_async(&mut conn)
            .await;
        match answer {
            Ok(mut entries) => {
                entries.sort();
                Ok(entries)
            }
            Err(err) => {
                self.broken(&err.to_string());
                self.fallback(|| self.local.killed_now())
            }
        }
    }

    fn health(&self) -> StateHealth {
        if self.conn.lock().is_some() {
            return StateHealth::Ok;
        }
        match self.on_failure {
            OnFailure::Open => StateHealth::Degraded,
            OnFailure::Closed => StateHealth::Unavailable,
        }
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }
}
