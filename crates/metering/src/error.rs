//! The metering crate's one error type.

/// What can go wrong while pricing usage.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MeteringError {
    /// A price in the config is not a finite number >= 0, or has more digits than a
    /// decimal can hold exactly.
    #[error("models.{model}.price.{field}: {value} is not an exact price")]
    InvalidPrice {
        model: String,
        field: &'static str,
        value: String,
    },
    /// The model has no entry in the price table (`missing_prices` reports these at check
    /// time, so at run time this means the catalog and the table disagree).
    #[error("no price for model '{0}'")]
    NoPrice(String),
    /// The cost does not fit a 96-bit decimal; only absurd token counts get here.
    #[error("cost of model '{0}' overflows")]
    CostOverflow(String),
}
