//! Prices per million tokens, shipped for common hosted models and
//! overridable in config (`[prices."model"]`). A model matches the entry
//! with the longest prefix of its name, so `gpt-4o-2024-08-06` finds
//! `gpt-4o`. Unknown and local models cost 0 and say so.

use orch_core::Usage;
use std::collections::BTreeMap;

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cached_input: f64,
}

impl Price {
    pub const fn new(input: f64, output: f64, cached_input: f64) -> Self {
        Price {
            input,
            output,
            cached_input,
        }
    }

    /// Cost of one call. Cached input tokens are part of `input_tokens` and
    /// are billed at the cached price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        (fresh as f64 * self.input
            + cached as f64 * self.cached_input
            + usage.output_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

/// List prices at the time of writing; override them in config when they
/// change or when your contract differs.
const SHIPPED: &[(&str, Price)] = &[
    // OpenAI
    ("gpt-4o-mini", Price::new(0.15, 0.60, 0.075)),
    ("gpt-4o", Price::new(2.50, 10.00, 1.25)),
    ("gpt-4.1-nano", Price::new(0.10, 0.40, 0.025)),
    ("gpt-4.1-mini", Price::new(0.40, 1.60, 0.10)),
    ("gpt-4.1", Price::new(2.00, 8.00, 0.50)),
    ("o4-mini", Price::new(1.10, 4.40, 0.275)),
    ("o3-mini", Price::new(1.10, 4.40, 0.55)),
    ("o3", Price::new(2.00, 8.00, 0.50)),
    // Anthropic
    ("claude-3-5-haiku", Price::new(0.80, 4.00, 0.08)),
    ("claude-3-5-sonnet", Price::new(3.00, 15.00, 0.30)),
    ("claude-3-7-sonnet", Price::new(3.00, 15.00, 0.30)),
    ("claude-sonnet-4", Price::new(3.00, 15.00, 0.30)),
    ("claude-opus-4", Price::new(15.00, 75.00, 1.50)),
    ("claude-haiku-4", Price::new(1.00, 5.00, 0.10)),
    // Google
    ("gemini-2.5-pro", Price::new(1.25, 10.00, 0.31)),
    ("gemini-2.5-flash", Price::new(0.30, 2.50, 0.075)),
    ("gemini-2.0-flash", Price::new(0.10, 0.40, 0.025)),
    ("gemini-1.5-pro", Price::new(1.25, 5.00, 0.3125)),
    ("gemini-1.5-flash", Price::new(0.075, 0.30, 0.01875)),
    // Others
    ("deepseek-chat", Price::new(0.27, 1.10, 0.07)),
    ("deepseek-reasoner", Price::new(0.55, 2.19, 0.14)),
    ("grok-3", Price::new(3.00, 15.00, 0.75)),
    ("mistral-large", Price::new(2.00, 6.00, 2.00)),
    ("codestral", Price::new(0.30, 0.90, 0.30)),
    ("llama-3.3-70b-versatile", Price::new(0.59, 0.79, 0.59)),
    ("llama-3.1-8b-instant", Price::new(0.05, 0.08, 0.05)),
];

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// model-name prefix → price; config entries replace shipped ones.
    entries: BTreeMap<String, Price>,
}

impl PriceTable {
    /// The shipped prices.
    pub fn shipped() -> Self {
        let entries = SHIPPED.iter().map(|(m, p)| (m.to_string(), *p)).collect();
        PriceTable { entries }
    }

    /// Adds or replaces a model's price.
    pub fn set(&mut self, model: &str, price: Price) {
        self.entries.insert(model.to_string(), price);
    }

    /// The price of `model` (the entry with the longest matching prefix).
    /// Provider prefixes like `openai/` (OpenRouter style) are ignored.
    pub fn price(&self, model: &str) -> Option<Price> {
        let name = model.rsplit('/').next().unwrap_or(model);
        self.entries
            .iter()
            .filter(|(prefix, _)| {
                name.starts_with(prefix.as_str()) || model.starts_with(prefix.as_str())
            })
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, p)| *p)
    }

    /// Cost of a call to `model`; 0 when the model has no price.
    pub fn cost(&self, model: &str, usage: &Usage) -> f64 {
        self.price(model).map(|p| p.cost(usage)).unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, cached: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cached_tokens: cached,
            cost_usd: 0.0,
        }
    }

    #[test]
    fn longest_prefix_wins_and_unknown_models_are_free() {
        let t = PriceTable::shipped();
        assert_eq!(
            t.price("gpt-4o-mini-2024-07-18"),
            Some(Price::new(0.15, 0.60, 0.075))
        );
        assert_eq!(
            t.price("gpt-4o-2024-08-06"),
            Some(Price::new(2.50, 10.00, 1.25))
        );
        assert_eq!(
            t.price("openai/gpt-4o"),
            Some(Price::new(2.50, 10.00, 1.25))
        );
        assert_eq!(t.price("qwen2.5-coder:7b"), None);
        assert_eq!(t.cost("qwen2.5-coder:7b", &usage(1000, 1000, 0)), 0.0);
    }

    #[test]
    fn cached_tokens_are_billed_at_the_cached_price() {
        let t = PriceTable::shipped();
        // 1M input of which 400k cached, 100k output on gpt-4o:
        // 600k × 2.50 + 400k × 1.25 + 100k × 10 = 1.5 + 0.5 + 1.0 = $3.00
        let c = t.cost("gpt-4o", &usage(1_000_000, 100_000, 400_000));
        assert!((c - 3.0).abs() < 1e-9, "{c}");
    }

    #[test]
    fn config_overrides_replace_shipped_prices() {
        let mut t = PriceTable::shipped();
        t.set("gpt-4o", Price::new(1.0, 1.0, 1.0));
        t.set("my-local", Price::new(0.0, 0.0, 0.0));
        assert_eq!(
            t.price("gpt-4o-2024-08-06"),
            Some(Price::new(1.0, 1.0, 1.0))
        );
        assert_eq!(t.price("my-local-7b"), Some(Price::new(0.0, 0.0, 0.0)));
    }
}
