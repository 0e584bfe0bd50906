//! Translating a complete (non-streamed) upstream answer into the client's dialect, and
//! reading its usage.

use serde_json::Value;
use tollgate_core::Usage;

use crate::canonical::Response;
use crate::{
    anthropic, bedrock, gemini, openai, Dialect, IngressRequest, ProviderError, ProviderKind,
};

/// What the gateway knows of the request a response answers, to fill fields some
/// providers leave out (and the `created` time OpenAI clients get).
#[derive(Debug, Clone, Copy)]
pub struct ResponseMeta<'a> {
    /// The gateway's request id: answers without an id get one made from it.
    pub request_id: &'a str,
    /// Unix seconds, for OpenAI's `created`.
    pub created: u64,
    /// The upstream model, for answers that do not name theirs.
    pub model: &'a str,
}

impl ResponseMeta<'_> {
    /// The id of an answer that has none, in the style of `dialect`.
    pub(crate) fn fallback_id(&self, dialect: Dialect) -> String {
        match dialect {
            Dialect::OpenAi => format!("chatcmpl-{}", self.request_id),
            Dialect::Anthropic => format!("msg_{}", self.request_id),
        }
    }
}

/// The client's body and the usage the provider reported (`None` when it reported none:
/// the gateway estimates then).
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub body: Vec<u8>,
    pub usage: Option<Usage>,
}

/// Translates a successful answer of a `kind` provider for the client of `ingress`.
/// Answers of the client's own dialect pass through unchanged.
pub fn translate_response(
    kind: ProviderKind,
    ingress: &IngressRequest,
    body: &[u8],
    meta: &ResponseMeta<'_>,
) -> Result<Translated, ProviderError> {
    let dialect = ingress.dialect();
    if let IngressRequest::Embeddings(req) = ingress {
        return match kind {
            ProviderKind::OpenAi | ProviderKind::AzureOpenAi => Ok(Translated {
                body: body.to_vec(),
                usage: serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| openai::usage_from(&v)),
            }),
            ProviderKind::Gemini => {
                let value = parse(kind, body)?;
                let out = gemini::decode_embeddings(&value, meta.model, req.wants_base64())?;
                Ok(Translated {
                    body: serde_json::to_vec(&out).unwrap_or_default(),
                    usage: None,
                })
            }
            ProviderKind::Anthropic | ProviderKind::Bedrock => Err(ProviderError::unsupported(
                "an embeddings request",
                kind.name(),
            )),
        };
    }
    if kind.native_dialect() == Some(dialect) {
        let usage = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| native_usage(kind, &v));
        return Ok(Translated {
            body: body.to_vec(),
            usage,
        });
    }
    let value = parse(kind, body)?;
    let mut response = decode(kind, &value, meta, dialect)?;
    if response.id.is_empty() {
        response.id = meta.fallback_id(dialect);
    }
    if response.model.is_empty() {
        response.model = meta.model.to_owned();
    }
    let usage = has_usage(kind, &value).then_some(response.usage);
    let out = match dialect {
        Dialect::OpenAi => openai::encode_response(&response, meta.created),
        Dialect::Anthropic => anthropic::encode_response(&response),
    };
    Ok(Translated {
        body: serde_json::to_vec(&out).unwrap_or_default(),
        usage,
    })
}

fn parse(kind: ProviderKind, body: &[u8]) -> Result<Value, ProviderError> {
    serde_json::from_slice(body).map_err(|e| ProviderError::UpstreamBody {
        provider: kind.name(),
        problem: e.to_string(),
    })
}

/// A `kind` answer in canonical form.
pub(crate) fn decode(
    kind: ProviderKind,
    value: &Value,
    meta: &ResponseMeta<'_>,
    dialect: Dialect,
) -> Result<Response, ProviderError> {
    match kind {
        ProviderKind::OpenAi | ProviderKind::AzureOpenAi => openai::decode_response(value),
        ProviderKind::Anthropic => anthropic::decode_response(value),
        ProviderKind::Gemini => gemini::decode_response(value),
        ProviderKind::Bedrock => {
            bedrock::decode_response(value, &meta.fallback_id(dialect), meta.model)
        }
    }
}

fn native_usage(kind: ProviderKind, value: &Value) -> Option<Usage> {
    match kind {
        ProviderKind::Anthropic => value.get("usage").map(anthropic::usage_from),
        _ => openai::usage_from(value),
    }
}

fn has_usage(kind: ProviderKind, value: &Value) -> bool {
    let key = match kind {
        ProviderKind::Gemini => "usageMetadata",
        _ => "usage",
    };
    value.get(key).is_some_and(Value::is_object)
}
