//! Prices from the config's model catalog, in exact decimal arithmetic. The config holds
//! prices as f64; each is read back through its shortest decimal form, so `0.15` is
//! exactly 0.15 and not the binary fraction nearest to it.

use std::collections::HashMap;

use rust_decimal::Decimal;
use tollgate_config::{Config, PriceConfig};
use tollgate_core::Usage;

use crate::error::MeteringError;

const TOKENS_PER_PRICE_UNIT: i64 = 1_000_000;

/// USD per 1M tokens of one catalog model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    pub input: Decimal,
    pub output: Decimal,
    /// Equal to `input` when the config gives no cached-input price.
    pub cached_input: Decimal,
}

impl ModelPrice {
    pub fn from_config(model: &str, price: &PriceConfig) -> Result<Self, MeteringError> {
        let exact = |field: &'static str, value: f64| {
            price_decimal(value).ok_or_else(|| MeteringError::InvalidPrice {
                model: model.to_owned(),
                field,
                value: value.to_string(),
            })
        };
        let input = exact("input", price.input)?;
        Ok(Self {
            input,
            output: exact("output", price.output)?,
            cached_input: match price.cached_input {
                Some(value) => exact("cached_input", value)?,
                None => input,
            },
        })
    }

    /// Cost in USD: cached input at the cached price, the rest of the input at the input
    /// price, all output (reasoning included) at the output price. `None` on overflow.
    pub fn cost(&self, usage: &Usage) -> Option<Decimal> {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let uncached = usage.input_tokens - cached;
        let input = Decimal::from(uncached).checked_mul(self.input)?;
        let cached = Decimal::from(cached).checked_mul(self.cached_input)?;
        let output = Decimal::from(usage.output_tokens).checked_mul(self.output)?;
        let per_million = input.checked_add(cached)?.checked_add(output)?;
        Some(
            per_million
                .checked_div(Decimal::from(TOKENS_PER_PRICE_UNIT))?
                .normalize(),
        )
    }
}

/// The price of every catalog model that has one.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
}

impl PriceTable {
    /// Reads every `models.<name>.price`; models without a price are left out (see
    /// [`missing_prices`]), a price that is not an exact non-negative decimal is an error.
    pub fn from_config(config: &Config) -> Result<Self, MeteringError> {
        let mut models = HashMap::with_capacity(config.models.len());
        for (name, model) in &config.models {
            if let Some(price) = &model.price {
                models.insert(name.clone(), ModelPrice::from_config(name, price)?);
            }
        }
        Ok(Self { models })
    }

    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        self.models.get(model)
    }

    /// Cost in USD of `usage` on the catalog model `model`.
    pub fn cost(&self, model: &str, usage: &Usage) -> Result<Decimal, MeteringError> {
        let price = self
            .models
            .get(model)
            .ok_or_else(|| MeteringError::NoPrice(model.to_owned()))?;
        price
            .cost(usage)
            .ok_or_else(|| MeteringError::CostOverflow(model.to_owned()))
    }
}

/// Catalog models without a price, sorted; `tollgate check` reports each as an error so
/// that no request is ever served at an unknown price.
pub fn missing_prices(config: &Config) -> Vec<String> {
    config
        .models
        .iter()
        .filter(|(_, model)| model.price.is_none())
        .map(|(name, _)| name.clone())
        .collect()
}

/// The decimal an operator wrote: the shortest text that reads back as this f64. `None`
/// for negative, non-finite, or too finely divided values.
pub fn price_decimal(value: f64) -> Option<Decimal> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    // `Display` for f64 prints the shortest round-tripping digits, never an exponent.
    Decimal::from_str_exact(&value.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn usage(input: u64, cached: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: cached,
            reasoning_tokens: 0,
            estimated: false,
        }
    }

    const CONFIG: &str = r#"
providers:
  openai: { kind: openai, endpoints: ["https://api.openai.com"] }
models:
  gpt-4o-mini:
    provider: openai
    model: gpt-4o-mini
    price: { input: 0.15, output: 0.6, cached_input: 0.075 }
  gpt-4o: { provider: openai, model: gpt-4o, price: { input: 2.5, output: 10 } }
  local: { provider: openai, model: llama }
"#;

    #[test]
    fn prices_are_the_decimals_written() {
        assert_eq!(price_decimal(0.15), Some(dec("0.15")));
        assert_eq!(price_decimal(0.1 + 0.2), Some(dec("0.30000000000000004")));
        assert_eq!(price_decimal(1e-7), Some(dec("0.0000001")));
        assert_eq!(price_decimal(60.0), Some(dec("60")));
        assert_eq!(price_decimal(-1.0), None);
        assert_eq!(price_decimal(f64::NAN), None);
        assert_eq!(price_decimal(1e-40), None);
    }

    #[test]
    fn cost_is_exact() {
        let price = ModelPrice {
            input: dec("0.15"),
            output: dec("0.6"),
            cached_input: dec("0.15"),
        };
        assert_eq!(price.cost(&usage(1_234_567, 0, 0)), Some(dec("0.18518505")));
        assert_eq!(
            price.cost(&usage(1_234_567, 0, 7_654_321)),
            Some(dec("4.77777765"))
        );
        // A million one-token requests cost exactly what one million-token request does.
        let one = price.cost(&usage(1, 0, 0)).unwrap();
        assert_eq!(one, dec("0.00000015"));
        assert_eq!(one * Decimal::from(1_000_000), dec("0.15"));
    }

    #[test]
    fn cached_input_and_reasoning_are_priced_right() {
        let config = tollgate_config::parse(CONFIG, "test.yaml").unwrap();
        let table = PriceTable::from_config(&config).unwrap();
        // 1M input of which 400k cached, 100k output (20k of it reasoning).
        let mut seen = usage(1_000_000, 400_000, 100_000);
        seen.reasoning_tokens = 20_000;
        // 600k * 0.15 + 400k * 0.075 + 100k * 0.6 = 0.09 + 0.03 + 0.06
        assert_eq!(table.cost("gpt-4o-mini", &seen), Ok(dec("0.18")));
        // Without a cached price, cached input costs the input price.
        assert_eq!(table.cost("gpt-4o", &seen), Ok(dec("3.5")));
        assert_eq!(
            table.cost("local", &seen),
            Err(MeteringError::NoPrice("local".to_owned()))
        );
        assert_eq!(
            table.cost("gpt-4o", &usage(u64::MAX, 0, u64::MAX)),
            Ok(dec("230584300921369.3951875"))
        );
    }

    #[test]
    fn missing_prices_are_listed_for_check() {
        let config = tollgate_config::parse(CONFIG, "test.yaml").unwrap();
        assert_eq!(missing_prices(&config), vec!["local".to_owned()]);
    }
}
