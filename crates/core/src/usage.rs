//! Token usage of one request, as reported by a provider or estimated by the gateway.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache (a subset of `input_tokens`).
    pub cached_input_tokens: u64,
    /// Output tokens spent on hidden reasoning (a subset of `output_tokens`).
    pub reasoning_tokens: u64,
    /// True when some count came from the gateway's tokenizer, not from the provider.
    pub estimated: bool,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}
