//! Token metering: counting tokens where a provider reports none, and pricing usage.
//!
//! Provider-reported usage (each provider's own fields and their cumulative or final
//! semantics) is read where the wire formats are, in `tollgate-providers`; this crate
//! counts what the gateway must count itself with tiktoken's o200k encoding
//! ([`estimate_tokens`] at once, [`TokenCounter`] incrementally over a stream's text), and
//! prices a [`Usage`](tollgate_core::Usage) exactly from the config with [`PriceTable`].
//! Everything here is CPU-only and synchronous.
//!
//! ```
//! use tollgate_metering::TokenCounter;
//!
//! let mut counter = TokenCounter::new();
//! for delta in ["Hello th", "ere, how a", "re you?"] {
//!     counter.push(delta);
//! }
//! assert_eq!(counter.total(), tollgate_metering::estimate_tokens("Hello there, how are you?"));
//! ```

mod error;
mod price;
mod tokens;

pub use error::MeteringError;
pub use price::{missing_prices, price_decimal, ModelPrice, PriceTable};
pub use rust_decimal::Decimal;
pub use tokens::{estimate_tokens, warm_up, TokenCounter, PENDING_TEXT_CAP};
