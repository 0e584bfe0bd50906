//! The governance part of the admin API: who may call it, managed keys and the kill
//! switch.
//!
//! Once any admin key exists (a config key with `role: admin`, or a managed one), every
//! `/admin/*` endpoint requires one, presented like a gateway key; until then the admin
//! listener (loopback by default) is open, so a first admin key can be created.
//!
//! - `GET /admin/keys`, `POST /admin/keys` (`{name, team, user?, models?, routes?,
//!   expires_at?, max_requests?, role?}`; the answer holds the secret, once)
//! - `POST /admin/keys/<id>/rotate` (a new secret; the old one stops working),
//!   `DELETE /admin/keys/<id>` (revoke)
//! - `GET /admin/audit?limit=100` (also `/admin/keys/audit`): who changed what, when
//! - `GET /admin/kill`, `POST /admin/kill` `{"scope": "team:billing", "killed": true}`:
//!   blocks a key (`key:<name>`), user, team or tag at once, whatever limits and budgets
//!   the config has.
//!
//! Every change through the admin API (keys, the kill switch, a reload, a cache purge) is
//! recorded with who made it (the admin key's name), what it was and when: as a log line
//! with target `audit`, and in the key store's audit trail when managed keys are on.

use std::sync::Arc;

use chrono::Utc;
use http::{Method, StatusCode};
use pingora_core::protocols::http::ServerSession;
use tollgate_core::{ErrorKind, GatewayError};
use tollgate_policy::{AuditAction, Keys, NewKey, PolicyError, Role, Scope};

use crate::auth::presented_secret;
use crate::policy::PolicyHandles;
use crate::snapshot::Snapshot;

/// Largest admin request body read; a key definition is a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Most audit entries one call returns.
const MAX_AUDIT_ENTRIES: usize = 10_000;

type Answer = (StatusCode, Vec<u8>);

fn error(kind: ErrorKind, message: impl Into<String>) -> Answer {
    let err = GatewayError::new(kind, message);
    (
        StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        err.openai_body(),
    )
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Answer {
    (status, serde_json::to_vec(value).unwrap_or_default())
}

/// Who is calling: the admin key's name, `anonymous` while no admin key exists; an
/// answer when the call is refused.
pub fn authorize(
    snap: &Snapshot,
    policy: &PolicyHandles,
    session: &ServerSession,
) -> Result<String, Answer> {
    let managed_admins = policy.keys.as_ref().is_some_and(|keys| {
        let now = Utc::now();
        keys.list()
            .iter()
            .any(|k| k.role == Role::Admin && k.is_active(now))
    });
    if !snap.keys.has_admin() && !managed_admins {
        return Ok("anonymous".to_owned());
    }
    let Some(secret) = presented_secret(&session.req_header().headers) else {
        return Err(error(
            ErrorKind::Authentication,
            "the admin API needs an admin key: send it as 'Authorization: Bearer <key>'",
        ));
    };
    let key = snap
        .keys
        .authenticate(secret)
        .or_else(|| policy.managed_key(secret));
    match key {
        Some(key) if key.admin => Ok(key.name.to_string()),
        Some(_) => Err(error(
            ErrorKind::PermissionDenied,
            "this key may not call the admin API",
        )),
        None => Err(error(ErrorKind::Authentication, "invalid API key")),
    }
}

/// Answers a governance endpoint; `None` when `path` is not one.
pub async fn handle(
    policy: &PolicyHandles,
    session: &mut ServerSession,
    path: &str,
    query: &str,
    actor: &str,
) -> Option<Answer> {
    let method = session.req_header().method.clone();
    if path == "/admin/kill" {
        return Some(kill(policy, session, &method, actor).await);
    }
    if path == "/admin/audit" {
        return Some(audit_trail(policy, query, &method).await);
    }
    let rest = path.strip_prefix("/admin/keys")?;
    let Some(keys) = policy.keys.clone() else {
        return Some(error(
            ErrorKind::NotFound,
            "managed keys are off: add `managed_keys:` to the config",
        ));
    };
    let logged = |answer: Answer, action: &str, target: &str| {
        // The store wrote the audit row in the change's own transaction.
        if answer.0.is_success() {
            tracing::info!(target: "audit", actor = %actor, action, target = %target,
                "admin change");
        }
        answer
    };
    let actor = actor.to_owned();
    Some(match (method.clone(), rest) {
        (Method::GET, "" | "/") => {
            let list: Vec<serde_json::Value> = keys
                .list()
                .iter()
                .map(|key| {
                    let mut entry = serde_json::to_value(key.as_ref()).unwrap_or_default();
                    if key.max_requests.is_some() {
                        entry["requests_used"] = keys.requests_used(&key.id).into();
                    }
                    entry
                })
                .collect();
            json(StatusCode::OK, &list)
        }
        (Method::POST, "" | "/") => {
            let body = match read_body(session).await {
                Ok(body) => body,
                Err(answer) => return Some(answer),
            };
            match serde_json::from_slice::<NewKey>(&body) {
                Ok(new) => {
                    let name = new.name.clone();
                    let answer =
                        blocking(keys, move |k| k.create(new, &actor), StatusCode::CREATED).await;
                    logged(answer, "created", &name)
                }
                Err(err) => error(ErrorKind::InvalidRequest, format!("invalid key: {err}")),
            }
        }
        (Method::GET, "/audit") => audit_trail(policy, query, &method).await,
        (Method::POST, id) if id.ends_with("/rotate") => {
            let id = id
                .trim_start_matches('/')
                .trim_end_matches("/rotate")
                .to_owned();
            let target = id.clone();
            let answer = blocking(keys, move |k| k.rotate(&id, &actor), StatusCode::OK).await;
            logged(answer, "rotated", &target)
        }
        (Method::DELETE, id) if id.len() > 1 => {
            let id = id.trim_start_matches('/').to_owned();
            let target = id.clone();
            let answer = blocking(
                keys,
                move |k| {
                    k.revoke(&id, &actor)
                        .map(|()| serde_json::json!({ "revoked": id }))
                },
                StatusCode::OK,
            )
            .await;
            logged(answer, "revoked", &target)
        }
        _ => error(
            ErrorKind::MethodNotAllowed,
            format!("{method} is not supported on {path}"),
        ),
    })
}

/// Runs a blocking key-store call off the async workers and answers its result.
async fn blocking<T: serde::Serialize + Send + 'static>(
    keys: Arc<Keys>,
    call: impl FnOnce(&Keys) -> Result<T, PolicyError> + Send + 'static,
    ok: StatusCode,
) -> Answer {
    match tokio::task::spawn_blocking(move || call(&keys)).await {
        Ok(Ok(value)) => json(ok, &value),
        Ok(Err(PolicyError::KeyNotFound(id))) => {
            error(ErrorKind::NotFound, format!("no managed key '{id}'"))
        }
        Ok(Err(err @ (PolicyError::InvalidKey(_) | PolicyError::KeyRevoked(_)))) => {
            error(ErrorKind::InvalidRequest, err.to_string())
        }
        Ok(Err(err)) => {
            tracing::error!(error = %err, "managed key store failed");
            error(
                ErrorKind::Unavailable,
                "the managed key store is unavailable",
            )
        }
        Err(_) => error(ErrorKind::Internal, "the key store call did not finish"),
    }
}

/// Records an admin change: a log line with target `audit` always, and a row in the key
/// store's audit trail when managed keys are on (a store that fails is logged; the change
/// itself stands).
pub async fn record(
    policy: &PolicyHandles,
    actor: &str,
    action: AuditAction,
    target: &str,
    detail: serde_json::Value,
) {
    tracing::info!(target: "audit", actor = %actor, action = action.as_str(),
        target = %target, detail = %detail, "admin change");
    let Some(keys) = policy.keys.clone() else {
        return;
    };
    let (actor, target) = (actor.to_owned(), target.to_owned());
    let stored =
        tokio::task::spawn_blocking(move || keys.record(&actor, action, &target, detail)).await;
    if !matches!(stored, Ok(Ok(()))) {
        tracing::error!(
            action = action.as_str(),
            "the audit trail could not be written"
        );
    }
}

/// `GET /admin/audit?limit=100`: the newest admin changes, newest first.
async fn audit_trail(policy: &PolicyHandles, query: &str, method: &Method) -> Answer {
    if *method != Method::GET {
        return error(ErrorKind::MethodNotAllowed, "GET the audit trail");
    }
    let Some(keys) = policy.keys.clone() else {
        return error(
            ErrorKind::NotFound,
            "the audit trail is kept in the managed key store: add `managed_keys:` to the \
             config (admin changes are logged with target 'audit' meanwhile)",
        );
    };
    let limit = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("limit="))
        .find_map(|v| v.parse::<usize>().ok())
        .unwrap_or(100)
        .min(MAX_AUDIT_ENTRIES);
    blocking(keys, move |k| k.audit(limit), StatusCode::OK).await
}

async fn kill(
    policy: &PolicyHandles,
    session: &mut ServerSession,
    method: &Method,
    actor: &str,
) -> Answer {
    let governance = policy.current();
    match *method {
        Method::GET => match governance.killed().await {
            Ok(scopes) => json(
                StatusCode::OK,
                &scopes.iter().map(Scope::to_string).collect::<Vec<_>>(),
            ),
            Err(err) => error(err.kind, err.message),
        },
        Method::POST => {
            let body = match read_body(session).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return error(ErrorKind::InvalidRequest, "the body must be a JSON object");
            };
            let scope = request
                .get("scope")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<Scope>().ok());
            let Some(scope) = scope else {
                return error(
                    ErrorKind::InvalidRequest,
                    "scope must be key:<name>, user:<name>, team:<name> or tag:<name>=<value>",
                );
            };
            let killed = request
                .get("killed")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(true);
            match governance.set_killed(&scope, killed).await {
                Ok(()) => {
                    let action = if killed {
                        AuditAction::Killed
                    } else {
                        AuditAction::Unkilled
                    };
                    let target = scope.to_string();
                    record(policy, actor, action, &target, serde_json::json!({})).await;
                    json(
                        StatusCode::OK,
                        &serde_json::json!({ "scope": target, "killed": killed }),
                    )
                }
                Err(err) => error(err.kind, err.message),
            }
        }
        _ => error(ErrorKind::MethodNotAllowed, "GET or POST /admin/kill"),
    }
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Answer> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(error(
                        ErrorKind::PayloadTooLarge,
                        "the request body is too large",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(error(
                    ErrorKind::InvalidRequest,
                    "could not read the request body",
                ))
            }
        }
    }
}
