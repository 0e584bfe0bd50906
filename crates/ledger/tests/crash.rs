//! Crash durability: a child process records usage and prints each record's id once it
//! is acknowledged durable; the test SIGKILLs it at a random moment, several times over
//! the same spool and database, then reopens them and checks that every acknowledged
//! record is in the sink exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tollgate_core::Usage;
use tollgate_ledger::{CacheStatus, Decimal, Ledger, LedgerOptions, SqliteSink, UsageRecord};

/// Set in the child's environment to the directory it works in.
const CHILD_DIR: &str = "TOLLGATE_LEDGER_CRASH_DIR";
const CHILD_ROUND: &str = "TOLLGATE_LEDGER_CRASH_ROUND";
const CHILD_THREADS: usize = 4;
/// The child stops by itself after this many records per thread or this long, in case
/// the parent is gone.
const CHILD_MAX_PER_THREAD: usize = 20_000;
const CHILD_MAX_TIME: Duration = Duration::from_secs(60);
const ROUNDS: usize = 4;

fn record(id: String) -> UsageRecord {
    UsageRecord {
        record_id: id.clone(),
        request_id: id,
        time_ms: 1_714_521_600_000,
        key: Some("crash".to_owned()),
        team: Some("crash".to_owned()),
        user: None,
        tags: BTreeMap::new(),
        route: None,
        requested_model: "m".to_owned(),
        served_model: None,
        provider: None,
        endpoint: None,
        attempts: Vec::new(),
        status: 200,
        error: None,
        stream: true,
        usage: Usage::default(),
        cost: Decimal::ZERO,
        latency_ms: 1,
        ttft_ms: None,
        cache: CacheStatus::Off,
        saved_cost: Decimal::ZERO,
        guardrails: Vec::new(),
    }
}

fn open(dir: &Path) -> Ledger {
    let sink = Arc::new(SqliteSink::open(dir.join("usage.db")).unwrap());
    let options = LedgerOptions {
        segment_bytes: 16 * 1024,
        ship_batch_records: 64,
        ..LedgerOptions::default()
    };
    Ledger::open_with(dir.join("spool"), sink, options).unwrap()
}

/// The child's work; a no-op in an ordinary test run.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND).unwrap();
    let ledger = Arc::new(open(Path::new(&dir)));
    let started = Instant::now();
    let threads: Vec<_> = (0..CHILD_THREADS)
        .map(|t| {
            let ledger = Arc::clone(&ledger);
            let round = round.clone();
            std::thread::spawn(move || {
                for i in 0..CHILD_MAX_PER_THREAD {
                    if started.elapsed() > CHILD_MAX_TIME {
                        break;
                    }
                    let id = format!("{round}-{t}-{i}");
                    ledger
                        .record_blocking(record(id.clone()))
                        .unwrap()
                        .wait()
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {id}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// The id in a whole output line; the harness may have put its own text before it.
fn ack_id(line: &str) -> Option<&str> {
    let (_, id) = line.strip_suffix('\n')?.rsplit_once("ACK ")?;
    Some(id)
}

#[test]
fn sigkill_loses_no_acknowledged_record_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut acked: HashSet<String> = HashSet::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let kill_after = rng.random_range(20..600);
        let mut line = String::new();
        let mut seen = 0;
        while seen < kill_after {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                panic!("child ended before being killed: {:?}", child.wait());
            }
            if let Some(id) = ack_id(&line) {
                acked.insert(id.to_owned());
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..3_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acknowledgements printed before the kill count too; a cut last line does not.
        loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if let Some(id) = ack_id(&line) {
                acked.insert(id.to_owned());
            }
        }
    }

    let ledger = open(dir.path());
    ledger.sync(Duration::from_secs(60)).unwrap();
    drop(ledger);
    let conn = rusqlite::Connection::open(dir.path().join("usage.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT request_id FROM usage_records")
        .unwrap();
    let stored: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "duplicate rows");
    let missing: Vec<&String> = acked.iter().filter(|id| !unique.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // Records durable but not yet acknowledged at the kill may be there too: at most the
    // one in flight per child thread and round.
    let mut extra: Vec<&String> = stored.iter().filter(|id| !acked.contains(*id)).collect();
    extra.sort();
    assert!(
        stored.len() - acked.len() <= ROUNDS * CHILD_THREADS,
        "{} stored, {} acked: {extra:?}",
        stored.len(),
        acked.len()
    );
    assert!(acked.len() >= ROUNDS * 20);
}
