//! Token usage and cost of model calls, summed per call, attempt and task.

use serde::{Deserialize, Serialize};
use std::ops::AddAssign;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from a provider-side prompt cache.
    pub cached_tokens: u64,
    /// Cost in US dollars; 0 when the model has no known price.
    pub cost_usd: f64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        self.input_tokens += rhs.input_tokens;
        self.output_tokens += rhs.output_tokens;
        self.cached_tokens += rhs.cached_tokens;
        self.cost_usd += rhs.cost_usd;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_up() {
        let mut u = Usage {
            input_tokens: 3,
            output_tokens: 4,
            cached_tokens: 1,
            cost_usd: 0.5,
        };
        u += Usage {
            input_tokens: 1,
            output_tokens: 1,
            cached_tokens: 0,
            cost_usd: 0.25,
        };
        assert_eq!(u.total_tokens(), 9);
        assert_eq!(u.cached_tokens, 1);
        assert!((u.cost_usd - 0.75).abs() < 1e-9);
    }
}
