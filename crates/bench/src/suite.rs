//! Runs scenario files: starts the mock and every system, runs every load on every
//! system `runs` times (interleaved, so slow drifts of a shared machine hit all systems
//! alike), and writes one JSON file per scenario.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::conn::Target;
use crate::error::BenchError;
use crate::load::{self, LoadResult, RequestTemplate};
use crate::scenario::{MockSpec, Scenario, SystemKind, SystemOptions};
use crate::systems::{self, Env, Running, BENCH_MODEL};

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub loadavg: String,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_owned()),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            loadavg: read_trimmed("/proc/loadavg"),
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The `model name` line of `/proc/cpuinfo`.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

#[derive(Debug, Serialize)]
struct SystemStatus {
    name: String,
    kind: SystemKind,
    /// `ok`, or why the system was not measured.
    status: String,
}

#[derive(Debug, Serialize)]
struct RunRecord {
    system: String,
    load: String,
    run: usize,
    result: LoadResult,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'a str,
    description: &'a str,
    notes: Option<&'a str>,
    /// The system "added" figures are taken against, besides `direct`.
    baseline: Option<&'a str>,
    /// A Redis server ran beside the systems.
    redis: bool,
    quick: bool,
    runs: usize,
    mock: &'a MockSpec,
    command: &'a str,
    machine_before: &'a Machine,
    machine_after: Option<Machine>,
    started_unix: u64,
    finished_unix: Option<u64>,
    systems: &'a [SystemStatus],
    /// Loads skipped on a system, with the reason.
    skipped: &'a [(String, String, String)],
    results: &'a [RunRecord],
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the scenario at `path`; writes `<out_dir>/<name>.json` after every load.
pub async fn run_scenario(
    path: &Path,
    env: &Env,
    out_dir: &Path,
    quick: bool,
    command: &str,
) -> Result<PathBuf, BenchError> {
    let mut scenario = Scenario::load(path)?;
    if quick {
        scenario.quicken();
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| BenchError::io(format!("create {}", out_dir.display()), e))?;
    let out = out_dir.join(format!("{}.json", scenario.name));
    let machine = Machine::read();
    let started = unix_now();
    eprintln!(
        "== {} ({}), load average {}",
        scenario.name, scenario.description, machine.loadavg
    );

    let (mock, mock_addr) = systems::start_mock(env, &scenario.mock)?;
    let redis = if scenario.redis {
        Some(systems::start_redis(env)?)
    } else {
        None
    };
    let env = &Env {
        redis_url: redis.as_ref().map(|r| r.url.clone()),
        ..env.clone()
    };
    let mock_pid = mock.pid();
    let options: Vec<SystemOptions> = scenario.systems.iter().map(|s| s.options()).collect();
    let mut statuses: Vec<SystemStatus> = options
        .iter()
        .map(|o| SystemStatus {
            name: o.name(),
            kind: o.kind,
            status: "ok".to_owned(),
        })
        .collect();
    let mut results: Vec<RunRecord> = Vec::new();
    let mut skipped: Vec<(String, String, String)> = Vec::new();

    let write = |statuses: &[SystemStatus],
                 results: &[RunRecord],
                 skipped: &[(String, String, String)],
                 done: bool|
     -> Result<(), BenchError> {
        let report = Report {
            scenario: &scenario.name,
            description: &scenario.description,
            notes: scenario.notes.as_deref(),
            baseline: scenario.baseline.as_deref(),
            redis: scenario.redis,
            quick,
            runs: scenario.runs,
            mock: &scenario.mock,
            command,
            machine_before: &machine,
            machine_after: done.then(Machine::read),
            started_unix: started,
            finished_unix: done.then(unix_now),
            systems: statuses,
            skipped,
            results,
        };
        let text = serde_json::to_string_pretty(&report).map_err(|e| BenchError::Encode {
            what: "results",
            message: e.to_string(),
        })?;
        std::fs::write(&out, text)
            .map_err(|e| BenchError::io(format!("write {}", out.display()), e))
    };

    // Systems that stay up for the whole scenario, started once.
    let mut running: Vec<Option<Running>> = Vec::new();
    if !scenario.restart_per_load {
        for (i, o) in options.iter().enumerate() {
            running.push(start_or_note(env, o, mock_addr, mock_pid, &mut statuses[i]).await);
        }
    }

    for run in 1..=scenario.runs {
        for load in &scenario.loads {
            for (i, o) in options.iter().enumerate() {
                let name = o.name();
                if load.only.as_ref().is_some_and(|only| !only.contains(&name)) {
                    continue;
                }
                if statuses[i].status != "ok" {
                    continue;
                }
                let mut fresh = None;
                let system = if scenario.restart_per_load {
                    fresh = start_or_note(env, o, mock_addr, mock_pid, &mut statuses[i]).await;
                    fresh.as_mut()
                } else {
                    running.get_mut(i).and_then(Option::as_mut)
                };
                let Some(system) = system else {
                    continue;
                };
                if !system.alive() {
                    statuses[i].status = format!("exited during run {run}");
                    continue;
                }
                let url = if load.http == 2 {
                    system.h2_url.clone()
                } else {
                    Some(system.url.clone())
                };
                let Some(url) = url else {
                    if run == 1 {
                        skipped.push((
                            name.clone(),
                            load.name.clone(),
                            "no cleartext HTTP/2 listener".to_owned(),
                        ));
                    }
                    continue;
                };
                let template = RequestTemplate::chat(
                    Target::parse(&url)?,
                    BENCH_MODEL,
                    Some(system.key.to_owned()),
                    load,
                );
                let sent_tokens = scenario.mock.reply_tokens();
                let expected = load.max_tokens.map_or(sent_tokens, |m| m.min(sent_tokens));
                let result = load::run(load, template, expected, Some(system.pid())).await?;
                eprintln!("   {}", progress_line(&name, &load.name, run, &result));
                results.push(RunRecord {
                    system: name,
                    load: load.name.clone(),
                    run,
                    result,
                });
                drop(fresh);
                write(&statuses, &results, &skipped, false)?;
            }
        }
    }
    drop(running);
    drop(redis);
    drop(mock);
    write(&statuses, &results, &skipped, true)?;
    Ok(out)
}

async fn start_or_note(
    env: &Env,
    o: &SystemOptions,
    mock: std::net::SocketAddr,
    mock_pid: u32,
    status: &mut SystemStatus,
) -> Option<Running> {
    match systems::start(env, o, mock, mock_pid).await {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("   {} not measured: {e}", o.name());
            status.status = format!("not started: {e}");
            None
        }
    }
}

/// One line of progress for the terminal.
pub fn progress_line(system: &str, load: &str, run: usize, r: &LoadResult) -> String {
    let mut line = format!(
        "{system:<16} {load:<14} run {run}: {:>9.0} req/s  p50 {:>7} µs  p99 {:>8} µs  ok {} failed {}",
        r.throughput_rps, r.latency_us.p50, r.latency_us.p99, r.ok, r.failed
    );
    if let Some(s) = &r.stream {
        line.push_str(&format!(
            "  ttft p99 {} µs  gap p99 {} µs  clean {}/{}",
            s.ttft_us.p99, s.gap_us.p99, s.clean, s.streams
        ));
    }
    if let Some(u) = &r.usage {
        line.push_str(&format!(
            "  rss {}→{}→{} KiB  cpu {:.0}%",
            u.rss_idle_kb,
            u.rss_peak_kb,
            u.rss_after_kb,
            u.cpu_share * 100.0
        ));
    }
    if !r.errors.is_empty() {
        line.push_str(&format!("  errors {:?}", r.errors));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cpu_model() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model(""), None);
    }
}
