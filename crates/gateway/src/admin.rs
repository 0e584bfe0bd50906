//! The admin listener: `/healthz` (liveness) and `/readyz` (readiness) for probes,
//! `/admin/upstreams` for the state of every provider endpoint (health, circuit, load, key
//! cool-downs; never a secret), `/admin/config` and `POST /admin/reload` for the config.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::reload::{Readiness, Reloader};
use crate::snapshot::Snapshot;

pub struct Admin {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub ledger: Arc<tollgate_ledger::Ledger>,
    pub reloader: Arc<Reloader>,
    pub readiness: Arc<Readiness>,
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
    pub policy: crate::policy::PolicyHandles,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        let query = session.req_header().uri.query().unwrap_or("").to_owned();
        let mut content_type = "application/json";
        let mut actor = String::new();
        if path.starts_with("/admin/") {
            match crate::admin_policy::authorize(&self.snapshot.load(), &self.policy, session) {
                Ok(name) => actor = name,
                Err((status, body)) => return answer(status, content_type, body),
            }
        }
        if let Some((status, body)) =
            crate::admin_policy::handle(&self.policy, session, &path, &query, &actor).await
        {
            return answer(status, content_type, body);
        }
        let (status, body) = match path.as_str() {
            "/healthz" => (StatusCode::OK, br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => self.readyz(),
            "/admin/config" => json(StatusCode::OK, &self.reloader.loaded()),
            "/admin/reload" => self.reload(session, &actor).await,
            "/metrics" => {
                content_type = "text/plain; version=0.0.4";
                let snap = self.snapshot.load();
                let mut body = self.metrics.render(&snap.upstreams);
                body.extend(self.reloader.render_metrics());
                (StatusCode::OK, body)
            }
            "/admin/usage" => self.usage(&query).await,
            "/admin/cache/purge" => self.purge_cache(session, &actor).await,
            "/admin/upstreams" => {
                let snap = self.snapshot.load();
                let status = snap.upstreams.status(Instant::now());
                match serde_json::to_vec(&status) {
                    Ok(body) => (StatusCode::OK, body),
                    Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
                }
            }
            _ => (
                StatusCode::NOT_FOUND,
                tollgate_core::GatewayError::new(
                    tollgate_core::ErrorKind::NotFound,
                    format!("no admin endpoint at {path}"),
                )
                .openai_body(),
            ),
        };
        answer(status, content_type, body)
    }
}

fn answer(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

/// Largest admin request body read (a purge names one route, tag or key).
const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;

fn json(status: StatusCode, value: &impl serde::Serialize) -> (StatusCode, Vec<u8>) {
    (status, serde_json::to_vec(value).unwrap_or_default())
}

impl Admin {
    /// `GET /readyz`: 200 while this process should get traffic, 503 while it starts or
    /// drains; the body names the state and the config version serving.
    fn readyz(&self) -> (StatusCode, Vec<u8>) {
        let status = if self.readiness.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = serde_json::json!({
            "status": self.readiness.state(),
            "config": self.reloader.loaded(),
        });
        json(status, &body)
    }

    /// `POST /admin/reload`: re-reads the config file; 400 with every problem when the
    /// file is refused (the running config stays).
    async fn reload(&self, session: &ServerSession, actor: &str) -> (StatusCode, Vec<u8>) {
        if session.req_header().method != http::Method::POST {
            let err = tollgate_core::GatewayError::invalid_request("POST to reload the config");
            return (StatusCode::METHOD_NOT_ALLOWED, err.openai_body());
        }
        let reloader = self.reloader.clone();
        let reloaded = tokio::task::spawn_blocking(move || reloader.reload()).await;
        let outcome = match &reloaded {
            Ok(Ok(done)) => serde_json::json!({ "applied": done }),
            Ok(Err(problems)) => serde_json::json!({ "refused": problems }),
            Err(_) => serde_json::json!({ "failed": true }),
        };
        crate::admin_policy::record(
            &self.policy,
            actor,
            tollgate_policy::AuditAction::Reloaded,
            "config",
            outcome,
        )
        .await;
        match reloaded {
            Ok(Ok(done)) => json(StatusCode::OK, &done),
            Ok(Err(problems)) => {
                let body = serde_json::json!({
                    "error": {
                        "message": "the config file was refused; the running config stays",
                        "type": "invalid_request_error",
                        "code": "invalid_config",
                        "problems": problems,
                    }
                });
                json(StatusCode::BAD_REQUEST, &body)
            }
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
        }
    }
}

/// How long `/admin/usage` waits for spooled records to reach the sink.
const USAGE_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Admin {
    /// `POST /admin/cache/purge` with `{"route": …}`, `{"tag": "name=value"}` or
    /// `{"key": "<hex>"}`: removes those entries; answers how many.
    async fn purge_cache(&self, session: &mut ServerSession, actor: &str) -> (StatusCode, Vec<u8>) {
        let bad = |message: &str| {
            let err = tollgate_core::GatewayError::invalid_request(message);
            (StatusCode::BAD_REQUEST, err.openai_body())
        };
        if session.req_header().method != http::Method::POST {
            return bad("POST a JSON object naming one route, tag or key");
        }
        let Some(cache) = &self.cache else {
            return bad("no cache is configured");
        };
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = session.read_request_body().await {
            if body.len() + chunk.len() > MAX_ADMIN_BODY_BYTES {
                return bad("the request body is too large");
            }
            body.extend_from_slice(&chunk);
        }
        let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return bad("the body must be a JSON object");
        };
        let text = |name: &str| {
            request
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let purge = match (text("route"), text("tag"), text("key")) {
            (Some(route), None, None) => tollgate_cache::Purge::Route(route),
            (None, Some(tag), None) => tollgate_cache::Purge::Tag(tag),
            (None, None, Some(key)) => match tollgate_cache::CacheKey::from_hex(&key) {
                Some(key) => tollgate_cache::Purge::Key(key),
                None => return bad("key must be a cache key in hex"),
            },
            _ => return bad("name exactly one of route, tag or key"),
        };
        match cache.purge(&purge).await {
            Ok(removed) => {
                let target = match (text("route"), text("tag"), text("key")) {
                    (Some(route), _, _) => format!("route:{route}"),
                    (_, Some(tag), _) => format!("tag:{tag}"),
                    (_, _, key) => format!("key:{}", key.unwrap_or_default()),
                };
                crate::admin_policy::record(
                    &self.policy,
                    actor,
                    tollgate_policy::AuditAction::CachePurged,
                    &target,
                    serde_json::json!({ "purged": removed }),
                )
                .await;
                (
                    StatusCode::OK,
                    serde_json::to_vec(&serde_json::json!({ "purged": removed }))
                        .unwrap_or_default(),
                )
            }
            Err(message) => {
                let err = tollgate_core::GatewayError::new(
                    tollgate_core::ErrorKind::Unavailable,
                    message,
                );
                (StatusCode::SERVICE_UNAVAILABLE, err.openai_body())
            }
        }
    }

    /// `GET /admin/usage?by=team&since=2026-11-01&until=2026-12-01`: totals per group
    /// (`by=tag:<name>` totals by the value of that request tag).
    async fn usage(&self, query: &str) -> (StatusCode, Vec<u8>) {
        let mut by = "team".to_owned();
        let (mut since, mut until) = (None, None);
        // Decoded, since clients may send `tag:name` as `tag%3Aname`.
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "by" => by = value.into_owned(),
                "since" => since = Some(value.into_owned()),
                "until" => until = Some(value.into_owned()),
                _ => {}
            }
        }
        let query = match crate::usage::usage_query(&by, since.as_deref(), until.as_deref()) {
            Ok(q) => q,
            Err(message) => {
                let err = tollgate_core::GatewayError::invalid_request(message);
                return (StatusCode::BAD_REQUEST, err.openai_body());
            }
        };
        let ledger = self.ledger.clone();
        let rows = tokio::task::spawn_blocking(move || {
            ledger.sync(USAGE_SYNC_WAIT)?;
            ledger.aggregate(&query)
        })
        .await;
        match rows {
            Ok(Ok(rows)) => {
                let body = serde_json::json!({ "by": by, "rows": rows });
                (
                    StatusCode::OK,
                    serde_json::to_vec(&body).unwrap_or_default(),
                )
            }
            Ok(Err(err)) => {
                let err = tollgate_core::GatewayError::new(
                    tollgate_core::ErrorKind::Unavailable,
                    format!("the usage ledger is not available: {err}"),
                );
                (StatusCode::SERVICE_UNAVAILABLE, err.openai_body())
            }
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
        }
    }
}
