//! Token metering: what one response cost, measured inline on the stream.
//!
//! [`StreamMeter`] takes the usage a provider reports (via the [`wire`] readers or as plain
//! [`UsageObservation`]s) and the generated text, and at the end of the response yields a
//! [`Usage`](tollgate_core::Usage): the provider's counts when they are complete, o200k
//! estimates marked `estimated` when the provider said nothing or the stream was cut.
//! [`PriceTable`] prices it exactly from the config. Everything here is CPU-only and
//! synchronous, fit for Pingora's body filters.
//!
//! ```
//! use serde_json::json;
//! use tollgate_metering::{wire, StreamEnd, StreamMeter};
//!
//! let events = [
//!     json!({"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}}),
//!     json!({"type": "message_delta", "usage": {"output_tokens": 30}}),
//! ];
//! let mut meter = StreamMeter::new();
//! for event in &events {
//!     if let Some(seen) = wire::anthropic_event_usage(event) {
//!         meter.observe_usage(seen);
//!     }
//! }
//! meter.observe_output_text("Hello there");
//! // The client left before `message_stop`: the output count may be short.
//! let usage = meter.finish(StreamEnd::Cut, || 0);
//! assert_eq!((usage.input_tokens, usage.output_tokens), (12, 30));
//! assert!(usage.estimated);
//! ```

mod error;
mod meter;
mod price;
mod tokens;
pub mod wire;

pub use error::MeteringError;
pub use meter::{StreamEnd, StreamMeter, UsageObservation, UsageSemantics};
pub use price::{missing_prices, price_decimal, ModelPrice, PriceTable};
pub use rust_decimal::Decimal;
pub use tokens::{estimate_tokens, warm_up, TokenCounter, PENDING_TEXT_CAP};
