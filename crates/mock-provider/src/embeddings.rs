//! `POST /v1/embeddings` in OpenAI's shape (also Azure OpenAI's deployments), with
//! deterministic vectors that are close for texts sharing words and word fragments; Gemini's
//! embedding methods use the same vectors.
//!
//! A vector is a signed hashed bag of features: each lowercase word counts
//! [`WORD_WEIGHT`], each character trigram of a space-padded word [`TRIGRAM_WEIGHT`];
//! the result is L2-normalised. Paraphrases share words and stems, so their cosine is
//! high; unrelated texts land near zero. Semantic-cache tests rely on this.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::dialect::Dialect;
use crate::error::MockError;
use crate::faults::take_fault;
use crate::state::{count_words, App, Recorded};

/// Vector length when the request gives no `dimensions`.
const DEFAULT_DIMENSIONS: usize = 64;

/// Largest `dimensions` accepted, as OpenAI's largest embedding model.
const MAX_DIMENSIONS: usize = 3072;

/// Most inputs in one request, as OpenAI allows; bounds the answer to
/// `MAX_INPUTS * MAX_DIMENSIONS` floats.
const MAX_INPUTS: usize = 2048;

const WORD_WEIGHT: f32 = 1.0;
const TRIGRAM_WEIGHT: f32 = 0.5;

#[derive(Deserialize)]
struct EmbeddingRequest {
    model: Option<String>,
    input: Option<EmbeddingInput>,
    dimensions: Option<u64>,
    encoding_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u64>),
    TokenLists(Vec<Vec<u64>>),
}

impl EmbeddingInput {
    /// Each input as text (token ids become words `#<id>`) with its token count.
    fn into_texts(self) -> Vec<(String, u64)> {
        fn tokens_text(ids: &[u64]) -> (String, u64) {
            let text = ids
                .iter()
                .map(|t| format!("#{t}"))
                .collect::<Vec<_>>()
                .join(" ");
            (text, ids.len() as u64)
        }
        match self {
            Self::Text(text) => {
                let words = count_words(&text);
                vec![(text, words)]
            }
            Self::Texts(texts) => texts
                .into_iter()
                .map(|t| {
                    let words = count_words(&t);
                    (t, words)
                })
                .collect(),
            Self::Tokens(ids) => vec![tokens_text(&ids)],
            Self::TokenLists(lists) => lists.iter().map(|ids| tokens_text(ids)).collect(),
        }
    }
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Floats(Vec<f32>),
    /// Little-endian `f32`s, base64: what `encoding_format: "base64"` asks for.
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Answers an embeddings request; `deployment` is set for Azure OpenAI's deployment URLs,
/// where it names the model.
pub(crate) async fn embeddings(
    app: Arc<App>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    deployment: Option<String>,
) -> Response {
    let dialect = if deployment.is_some() {
        Dialect::Azure
    } else {
        Dialect::OpenAi
    };
    let parsed = serde_json::from_slice::<EmbeddingRequest>(&body);
    let mut rec = Recorded::new(Method::POST, uri, headers, &body);
    if let Ok(req) = &parsed {
        rec.model.clone_from(&req.model);
    }
    if deployment.is_some() {
        rec.model.clone_from(&deployment);
    }
    let model = rec.model.clone();
    app.record(rec);

    if let Err(refused) = dialect.admit(headers, uri) {
        return refused.into_dialect_response(dialect);
    }
    if let Err(forced) = take_fault(&app, dialect, uri.path(), model.as_deref(), true).await {
        return forced;
    }
    let result = match parsed {
        Ok(mut req) => {
            if deployment.is_some() {
                req.model = deployment;
            }
            respond(&app, req, dialect)
        }
        Err(e) => Err(MockError::InvalidJson(e)),
    };
    result.unwrap_or_else(|e| e.into_dialect_response(dialect))
}

/// The vector length a request asks for (`param` names the field), or the default.
pub(crate) fn dimensions(requested: Option<u64>, param: &'static str) -> Result<usize, MockError> {
    match requested {
        None => Ok(DEFAULT_DIMENSIONS),
        Some(d) => usize::try_from(d)
            .ok()
            .filter(|d| (1..=MAX_DIMENSIONS).contains(d))
            .ok_or_else(|| {
                MockError::invalid(param, format!("'{param}' must be 1 to {MAX_DIMENSIONS}"))
            }),
    }
}

fn respond(app: &App, req: EmbeddingRequest, dialect: Dialect) -> Result<Response, MockError> {
    let model = req
        .model
        .ok_or_else(|| MockError::invalid("model", "you must provide a model parameter"))?;
    let inputs = req
        .input
        .ok_or_else(|| MockError::invalid("input", "Missing required parameter: 'input'."))?
        .into_texts();
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(MockError::invalid(
            "input",
            format!("'input' must hold 1 to {MAX_INPUTS} items"),
        ));
    }
    let dims = dimensions(req.dimensions, "dimensions")?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(MockError::invalid(
                "encoding_format",
                format!("'{other}' is not one of ['float', 'base64']"),
            ))
        }
    };
    let prompt_tokens = inputs.iter().map(|(_, n)| n).sum::<u64>().max(1);
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, (text, _))| {
            let vector = embed(text, dims);
            EmbeddingItem {
                object: "embedding",
                index,
                embedding: if base64 {
                    EmbeddingValue::Base64(base64_f32(&vector))
                } else {
                    EmbeddingValue::Floats(vector)
                },
            }
        })
        .collect();
    let model = format!("{}{model}", app.cfg.model_prefix);
    let list = EmbeddingList {
        object: "list",
        data,
        model: &model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    let json = serde_json::to_vec(&list).map_err(MockError::Encode)?;
    Ok(dialect.ok_response(app.next_id(), "application/json", json.into()))
}

/// The embedding of `text` with `dims` components (`dims >= 1`), unit length.
pub(crate) fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; dims.max(1)];
    let lower = text.to_lowercase();
    let mut padded = String::new();
    for word in lower.split(|c: char| !c.is_alphanumeric() && c != '#') {
        if word.is_empty() {
            continue;
        }
        add_feature(&mut v, b'w', word.as_bytes(), WORD_WEIGHT);
        padded.clear();
        padded.push(' ');
        padded.push_str(word);
        padded.push(' ');
        let bounds: Vec<usize> = padded
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(padded.len()))
            .collect();
        for w in bounds.windows(4) {
            if let Some(tri) = padded.get(w[0]..w[3]) {
                add_feature(&mut v, b't', tri.as_bytes(), TRIGRAM_WEIGHT);
            }
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else if let Some(first) = v.first_mut() {
        // A text without words still gets a unit vector, never NaNs.
        *first = 1.0;
    }
    v
}

fn add_feature(v: &mut [f32], kind: u8, bytes: &[u8], weight: f32) {
    let h = feature_hash(kind, bytes);
    let index = (h % v.len() as u64) as usize;
    // The sign, from bits the index barely uses, makes collisions cancel out on
    // average instead of piling up, so unrelated texts stay near cosine zero.
    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
    if let Some(slot) = v.get_mut(index) {
        *slot += sign * weight;
    }
}

/// FNV-1a, then a 64-bit finaliser so that every output bit depends on every input bit.
fn feature_hash(kind: u8, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(&kind).chain(bytes) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Standard base64 (with padding) of the little-endian bytes of `values`.
fn base64_f32(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group.first().copied().unwrap_or(0),
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn embeddings_are_unit_and_deterministic() {
        let a = embed("Hello, world!", 64);
        assert_eq!(a, embed("Hello, world!", 64));
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(embed("", 8), vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn paraphrases_are_closer_than_unrelated_texts() {
        let pairs = [
            (
                "What is the capital of France?",
                "what's the capital city of france",
                "Summarise this quarterly earnings report for investors",
            ),
            (
                "How do I reset my password?",
                "How can I reset my account password",
                "The weather in Lisbon is sunny today",
            ),
        ];
        for (q, paraphrase, unrelated) in pairs {
            let (a, b, c) = (embed(q, 64), embed(paraphrase, 64), embed(unrelated, 64));
            let near = cosine(&a, &b);
            let far = cosine(&a, &c);
            assert!(near > 0.6, "{q:?} vs {paraphrase:?}: {near}");
            assert!(near > far + 0.3, "{near} vs {far}");
        }
    }

    #[test]
    fn base64_matches_known_encoding() {
        // 1.0f32 is 00 00 80 3f little-endian.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 1.0]), "AACAPwAAgD8=");
    }
}
