//! Delivery of budget alerts to webhooks: JSON POSTs from a bounded queue, retried with
//! exponential backoff and jitter.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, Semaphore};

use super::AlertEvent;

/// Alerts waiting for delivery; more are dropped (and logged) while the queue is full, so
/// a dead webhook cannot grow memory.
pub const MAX_QUEUED_ALERTS: usize = 1024;

/// Deliveries in progress at once (each may be waiting out a backoff).
const MAX_CONCURRENT_DELIVERIES: usize = 16;

/// How alerts are delivered.
#[derive(Debug, Clone, Copy)]
pub struct WebhookOptions {
    /// Tries per alert, the first included. Default 5.
    pub attempts: u32,
    /// Wait before the first retry; doubles per retry (jittered between half and all of
    /// it). Default 500ms.
    pub backoff: Duration,
    /// Longest wait between tries. Default 30s.
    pub max_backoff: Duration,
    /// Per try. Default 10s.
    pub timeout: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

struct Job {
    url: String,
    event: AlertEvent,
}

/// Sends alerts in the background; clones share one queue. The worker starts with the first
/// alert (inside the Tokio runtime that settles budgets).
#[derive(Clone)]
pub struct WebhookNotifier {
    options: WebhookOptions,
    queue: Arc<OnceLock<Option<mpsc::Sender<Job>>>>,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl WebhookNotifier {
    pub fn new(options: WebhookOptions) -> Self {
        Self {
            options,
            queue: Arc::new(OnceLock::new()),
        }
    }

    /// Queues `event` for `url`; `false` when it was dropped (queue full, or no Tokio
    /// runtime to deliver from).
    pub fn notify(&self, url: &str, event: &AlertEvent) -> bool {
        let sender = self.queue.get_or_init(|| self.start());
        let Some(sender) = sender else {
            tracing::error!(budget = %event.budget, "no Tokio runtime: budget alert not sent");
            return false;
        };
        let job = Job {
            url: url.to_owned(),
            event: event.clone(),
        };
        if sender.try_send(job).is_err() {
            tracing::warn!(budget = %event.budget, "alert queue full: budget alert not sent");
            return false;
        }
        true
    }

    fn start(&self) -> Option<mpsc::Sender<Job>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let client = reqwest::Client::builder()
            .timeout(self.options.timeout)
            .build()
            .ok()?;
        let (sender, receiver) = mpsc::channel(MAX_QUEUED_ALERTS);
        runtime.spawn(deliver_all(receiver, client, self.options));
        Some(sender)
    }
}

async fn deliver_all(
    mut jobs: mpsc::Receiver<Job>,
    client: reqwest::Client,
    options: WebhookOptions,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
    while let Some(job) = jobs.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let client = client.clone();
        tokio::spawn(async move {
            deliver(&client, &job, options).await;
            drop(slot);
        });
    }
}

/// Tries until a 2xx, a client error other than 408/429 (which retrying cannot fix), or
/// the last attempt.
async fn deliver(client: &reqwest::Client, job: &Job, options: WebhookOptions) {
    let mut backoff = options.backoff;
    for attempt in 1..=options.attempts.max(1) {
        let outcome = client.post(&job.url).json(&job.event).send().await;
        let retry = match &outcome {
            Ok(response) if response.status().is_success() => {
                tracing::info!(budget = %job.event.budget, attempt, "budget alert delivered");
                return;
            }
            Ok(response) => {
                let status = response.status();
                status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
            }
            Err(_) => true,
        };
        let why = match outcome {
            Ok(response) => format!("status {}", response.status()),
            Err(err) => err.to_string(),
        };
        if !retry || attempt == options.attempts {
            tracing::error!(budget = %job.event.budget, attempt, error = %why, "budget alert webhook failed");
            return;
        }
        tracing::warn!(budget = %job.event.budget, attempt, error = %why, "budget alert webhook failed; retrying");
        let half = backoff / 2;
        let jitter = rand::rng().random_range(Duration::ZERO..=half);
        tokio::time::sleep(half + jitter).await;
        backoff = (backoff * 2).min(options.max_backoff);
    }
}
