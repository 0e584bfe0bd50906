//! Crash durability at load: the gateway is SIGKILLed at random moments while clients keep
//! calling it, restarted on the same spool and ledger each time, and in the end every
//! answer a client saw complete has exactly one usage record. `CRASH_REQUESTS` sets the
//! requests (default 600 for CI; the README's figures use 10000), `CRASH_SEED` replays a
//! run's kill moments.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_tests::*;

use crate::providers;

/// Requests when `CRASH_REQUESTS` is not set.
const DEFAULT_REQUESTS: usize = 600;
/// Clients calling at once.
const CLIENTS: usize = 16;
/// A round is killed once it has issued this share (in percent, picked at random in the
/// range) of all requests or of [`KILL_SHARE_OF_AT_MOST`], whichever is fewer, so every run
/// has several kills however fast the machine is, and long runs have dozens.
const KILL_AFTER_PERCENT: std::ops::Range<u64> = 8..25;
const KILL_SHARE_OF_AT_MOST: usize = 1000;
/// Then a random pause, so the kill lands at any phase of the requests in flight.
const KILL_JITTER_US: std::ops::Range<u64> = 0..20_000;
/// A round that issues no request for this long means the gateway hangs.
const ROUND_STALL: Duration = Duration::from_secs(60);

fn requests() -> usize {
    env_count("CRASH_REQUESTS", DEFAULT_REQUESTS)
}

/// xorshift64: enough randomness for kill moments, and replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, range: &std::ops::Range<u64>) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        range.start + self.0 % (range.end - range.start)
    }
}

/// Calls request `i` and returns whether the client saw its answer complete.
async fn call(client: &reqwest::Client, url: &str, i: usize) -> bool {
    let stream = i.is_multiple_of(3);
    let mut body = chat_body(if i.is_multiple_of(2) {
        "m-openai"
    } else {
        "m-anthropic"
    });
    body["stream"] = json!(stream);
    let Ok(resp) = client
        .post(url)
        .bearer_auth(TEST_KEY)
        .header("x-request-id", format!("crash-{i}"))
        .json(&body)
        .send()
        .await
    else {
        return false;
    };
    if resp.status() != 200 {
        return false;
    }
    let Ok(text) = resp.text().await else {
        return false;
    };
    if stream {
        text.ends_with("data: [DONE]\n\n")
    } else {
        text.contains("\"usage\"")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_no_usage_record() {
    let n = requests();
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let mut rng = Rng(seed);
    let mock = Mock::start(&["--tokens", "5", "--token-delay", "1ms"]);
    let dir = TempDir::new();
    let config = format!(
        "{}ledger:\n  path: {}\n  spool: {}\n",
        providers::config(&mock),
        dir.0.join("usage.db").display(),
        dir.0.join("spool").display()
    );
    let next = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut kills = Vec::new();
    // Every round ends in SIGKILL, the last one too: its records survive only in the spool.
    while next.load(Ordering::Relaxed) < n {
        let gw = Gateway::start(&config).await;
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (next, completed, stop) = (next.clone(), completed.clone(), stop.clone());
                let url = gw.chat_url();
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        if call(&client, &url, i).await {
                            completed.lock().unwrap().push(i);
                        }
                    }
                })
            })
            .collect();
        let round_start = next.load(Ordering::Relaxed).min(n);
        let share = n.min(KILL_SHARE_OF_AT_MOST) * rng.below(&KILL_AFTER_PERCENT) as usize / 100;
        let kill_at = (round_start + share).min(n);
        let issued = eventually(ROUND_STALL, || {
            let next = next.clone();
            async move { next.load(Ordering::Relaxed) >= kill_at }
        })
        .await;
        assert!(
            issued,
            "no progress towards request {kill_at} in {ROUND_STALL:?}"
        );
        let jitter = Duration::from_micros(rng.below(&KILL_JITTER_US));
        tokio::time::sleep(jitter).await;
        let at = next.load(Ordering::Relaxed).min(n);
        stop.store(true, Ordering::Relaxed);
        drop(gw); // SIGKILL
        kills.push((jitter, at));
        for worker in workers {
            worker.await.unwrap();
        }
    }
    let load_took = started.elapsed();
    let completed = completed.lock().unwrap().clone();

    // The last restart replays the spool into the ledger.
    let gw = Gateway::start(&config).await;
    let db = dir.0.join("usage.db");
    let all_there = eventually(Duration::from_secs(120), || async {
        gw.usage("team").await;
        let rows = ledger_rows(&db);
        completed
            .iter()
            .all(|i| rows.contains_key(&format!("crash-{i}")))
    })
    .await;
    let rows = ledger_rows(&db);
    let lost: Vec<usize> = completed
        .iter()
        .copied()
        .filter(|i| !rows.contains_key(&format!("crash-{i}")))
        .collect();
    // Rows are keyed by the record id the gateway minted; every request id was sent once,
    // so a record replayed under another key would show as a second record of its request.
    let by_request = record_ids_by_request(&db);
    let total: usize = by_request.values().map(Vec::len).sum();
    let duplicated = duplicated_requests(&db);
    println!(
        "crash: {n} requests, {} SIGKILLs (seed {seed}) in {load_took:?}; {} answers completed, \
         {} lost, {} duplicated; {total} records in all ({} for answers the client did not see \
         complete)",
        kills.len(),
        completed.len(),
        lost.len(),
        duplicated.len(),
        total - completed.len()
    );
    println!("kills (jitter, requests issued so far): {kills:?}");
    assert!(
        kills.len() >= 2,
        "only {} kills: the load ended too soon",
        kills.len()
    );
    assert!(
        completed.len() * 2 > n,
        "only {} of {n} answers completed",
        completed.len()
    );
    assert!(
        all_there && lost.is_empty(),
        "{} of {} completed answers have no record: {:?}",
        lost.len(),
        completed.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        duplicated.is_empty(),
        "requests recorded more than once: {:?}",
        &duplicated[..duplicated.len().min(10)]
    );
}
