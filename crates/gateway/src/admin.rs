//! The admin listener: `/healthz` for probes and `/admin/upstreams` for the state of
//! every provider endpoint (health, circuit, load, key cool-downs; never a secret).

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

pub struct Admin {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        let mut content_type = "application/json";
        let (status, body) = match path.as_str() {
            "/healthz" => (StatusCode::OK, br#"{"status":"ok"}"#.to_vec()),
            "/metrics" => {
                content_type = "text/plain; version=0.0.4";
                let snap = self.snapshot.load();
                (StatusCode::OK, self.metrics.render(&snap.upstreams))
            }
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
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}
