//! Building the upstream request of one attempt: path, headers (credentials included) and
//! body for the target provider, from the client's request in either dialect.

use std::time::SystemTime;

use crate::sigv4::{self, AwsCredentials, SignableRequest};
use crate::{
    anthropic, azure, bedrock, gemini, openai, IngressRequest, ProviderError, ProviderKind,
    UpstreamRequest,
};

/// The `api-version` sent to Azure OpenAI when the provider config names none: the latest
/// generally available version when this was written, which accepts `stream_options`.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// The credentials of one attempt.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// No authentication (local servers).
    None,
    /// The provider's API key: a bearer token (openai), `api-key` (azure_openai),
    /// `x-api-key` (anthropic) or `x-goog-api-key` (gemini).
    ApiKey(&'a str),
    /// AWS credentials for SigV4 (bedrock); the region comes from the endpoint's host
    /// (`bedrock-runtime.<region>.amazonaws.com`) when not given.
    Aws {
        credentials: &'a AwsCredentials,
        region: Option<&'a str>,
    },
}

/// Where and how one attempt goes.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: ProviderKind,
    /// The provider's model id (Azure: the deployment name; Bedrock: a model id or ARN).
    pub upstream_model: &'a str,
    /// The endpoint URL's path, kept as a prefix (`/openai` for `https://host/openai`).
    pub path_prefix: &'a str,
    /// The `Host` header exactly as the transport sends it (with the port when it is not
    /// the scheme's default): SigV4 signs it.
    pub host: &'a str,
    pub credentials: Credentials<'a>,
    /// Azure's `api-version`; [`DEFAULT_AZURE_API_VERSION`] when `None`.
    pub api_version: Option<&'a str>,
    /// Operator-configured headers, sent as they are (and not signed).
    pub extra_headers: &'a [(String, String)],
}

/// The upstream request for `ingress` on `target`. `now` is the signing time of SigV4.
///
/// When the target speaks the client's dialect the body passes through with only `model`
/// rewritten (and, for an OpenAI stream, `stream_options.include_usage` set so the stream
/// can be metered); otherwise it is translated through the canonical form.
pub fn upstream_request(
    ingress: &IngressRequest,
    target: &Target<'_>,
    now: SystemTime,
) -> Result<UpstreamRequest, ProviderError> {
    let kind = target.kind;
    let model = target.upstream_model;
    let prefix = target.path_prefix;
    let stream = ingress.stream();
    let op = ingress.operation();
    let (path, body) = match (ingress, kind) {
        (IngressRequest::Embeddings(req), ProviderKind::OpenAi) => (
            format!("{prefix}/v1/embeddings"),
            req.to_upstream_body(model),
        ),
        (IngressRequest::Embeddings(req), ProviderKind::AzureOpenAi) => (
            azure::path(prefix, model, op, api_version(target)),
            req.to_upstream_body(model),
        ),
        (IngressRequest::Embeddings(req), ProviderKind::Gemini) => (
            gemini::path(prefix, model, "batchEmbedContents"),
            to_vec(&gemini::encode_embeddings(req, model)?),
        ),
        (IngressRequest::Embeddings(_), _) => {
            return Err(ProviderError::unsupported(
                "an embeddings request",
                kind.name(),
            ))
        }
        (IngressRequest::Chat(req), ProviderKind::OpenAi) => (
            format!("{prefix}/v1/chat/completions"),
            req.to_metered_upstream_body(model),
        ),
        (IngressRequest::Chat(req), ProviderKind::AzureOpenAi) => (
            azure::path(prefix, model, op, api_version(target)),
            req.to_metered_upstream_body(model),
        ),
        (IngressRequest::Messages(req), ProviderKind::Anthropic) => {
            (format!("{prefix}/v1/messages"), req.to_upstream_body(model))
        }
        (IngressRequest::Chat(_) | IngressRequest::Messages(_), _) => {
            let mut canonical = ingress.to_canonical()?;
            canonical.model = model.to_owned();
            canonical.stream = stream;
            match kind {
                ProviderKind::OpenAi => (
                    format!("{prefix}/v1/chat/completions"),
                    to_vec(&openai::encode_request(&canonical, model)?),
                ),
                ProviderKind::AzureOpenAi => (
                    azure::path(prefix, model, op, api_version(target)),
                    to_vec(&openai::encode_request(&canonical, model)?),
                ),
                ProviderKind::Anthropic => (
                    format!("{prefix}/v1/messages"),
                    to_vec(&anthropic::encode_request(&canonical, model)?),
                ),
                ProviderKind::Gemini => {
                    let method = if stream {
                        "streamGenerateContent"
                    } else {
                        "generateContent"
                    };
                    (
                        gemini::path(prefix, model, method),
                        to_vec(&gemini::encode_request(&canonical)?),
                    )
                }
                ProviderKind::Bedrock => (
                    bedrock::path(prefix, model, stream),
                    to_vec(&bedrock::encode_request(&canonical)?),
                ),
            }
        }
    };
    let mut headers: Vec<(&'static str, String)> =
        vec![("content-type", "application/json".to_owned())];
    let api_key = match target.credentials {
        Credentials::ApiKey(key) => Some(key),
        Credentials::None | Credentials::Aws { .. } => None,
    };
    match kind {
        ProviderKind::OpenAi => {
            if let Some(key) = api_key {
                headers.push(("authorization", format!("Bearer {key}")));
            }
        }
        ProviderKind::AzureOpenAi => {
            if let Some(key) = api_key {
                headers.push(("api-key", key.to_owned()));
            }
        }
        ProviderKind::Anthropic => {
            if let Some(key) = api_key {
                headers.push(("x-api-key", key.to_owned()));
            }
            headers.push(("anthropic-version", anthropic::API_VERSION.to_owned()));
        }
        ProviderKind::Gemini => {
            if let Some(key) = api_key {
                headers.push(("x-goog-api-key", key.to_owned()));
            }
        }
        ProviderKind::Bedrock => {
            let Credentials::Aws {
                credentials,
                region,
            } = target.credentials
            else {
                return Err(ProviderError::MissingCredentials {
                    provider: kind.name(),
                    what: "AWS credentials",
                });
            };
            let region = region
                .or_else(|| sigv4::region_from_host(target.host))
                .ok_or(ProviderError::MissingCredentials {
                    provider: kind.name(),
                    what: "an AWS region",
                })?;
            let accept = if stream {
                "application/vnd.amazon.eventstream"
            } else {
                "application/json"
            };
            headers.push(("accept", accept.to_owned()));
            let (path_only, query) = path.split_once('?').unwrap_or((&path, ""));
            let signed = sigv4::sign(
                &SignableRequest {
                    method: "POST",
                    host: target.host,
                    path: path_only,
                    query,
                    headers: &[("content-type", "application/json")],
                    body: &body,
                },
                credentials,
                region,
                bedrock::SIGNING_SERVICE,
                now,
            );
            headers.extend(signed);
        }
    }
    Ok(UpstreamRequest {
        path,
        headers,
        extra: target.extra_headers.to_vec(),
        body,
    })
}

fn api_version<'a>(target: &Target<'a>) -> &'a str {
    target.api_version.unwrap_or(DEFAULT_AZURE_API_VERSION)
}

fn to_vec(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
