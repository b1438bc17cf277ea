//! Builds providers from the config and hands out `provider:model` pairs.

use crate::{EngineError, Result};
use orch_config::{Config, ModelRef, ProviderConfig, ProviderKind};
use orch_providers::openai::OpenAiProvider;
use orch_providers::replay::ReplayProvider;
use orch_providers::Provider;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Every configured provider, built once per run.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl ProviderRegistry {
    /// Builds every configured provider. With `dry_run`, each one is
    /// replaced by the simulated provider, so a config can be tried end to
    /// end without sending a request or spending anything.
    pub fn from_config(config: &Config, dry_run: bool) -> Result<Self> {
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        for (name, pc) in &config.providers {
            // Known before any request is made, so it is redacted everywhere.
            if let Some(key) = config.api_key(pc) {
                orch_core::redact::register(&key);
            }
            let provider: Arc<dyn Provider> = if dry_run {
                Arc::new(orch_providers::simulated::SimulatedProvider::new(name))
            } else {
                build_provider(config, name, pc)?
            };
            providers.insert(name.clone(), provider);
        }
        Ok(ProviderRegistry { providers })
    }

    /// The same providers behind the one retry policy from `[retry]`, a
    /// circuit breaker each, and their configured fallbacks. `observer`
    /// hears every try, breaker change and fallback.
    pub fn with_resilience(
        &self,
        config: &Config,
        observer: orch_providers::resilient::Observer,
    ) -> Result<Self> {
        use orch_providers::resilient::{BreakerConfig, CircuitBreaker, ResilientProvider};
        use orch_providers::retry::RetryPolicy;
        let r = &config.retry;
        let policy = RetryPolicy::from_schedule_seconds(
            &r.schedule_seconds,
            r.jitter,
            r.max_retry_after_seconds,
        );
        let mut providers = BTreeMap::new();
        for (name, raw) in &self.providers {
            let breaker = Arc::new(CircuitBreaker::new(
                name,
                BreakerConfig {
                    failures: r.breaker_failures,
                    cool_down: Duration::from_secs(r.breaker_cooldown_seconds),
                },
                policy.timer.clone(),
            ));
            let mut wrapped = ResilientProvider::new(raw.clone(), policy.clone())
                .with_breaker(breaker)
                .with_observer(observer.clone());
            if let Some(fb) = config
                .providers
                .get(name)
                .and_then(|pc| pc.fallback.as_ref())
            {
                let fallback = self.providers.get(&fb.provider).ok_or_else(|| {
                    EngineError::Config(format!(
                        "providers.{name}.fallback names provider `{}`, which is not configured",
                        fb.provider
                    ))
                })?;
                wrapped = wrapped.with_fallback(fallback.clone(), fb.model.clone());
            }
            providers.insert(name.clone(), Arc::new(wrapped) as Arc<dyn Provider>);
        }
        Ok(ProviderRegistry { providers })
    }

    pub fn insert(&mut self, name: &str, provider: Arc<dyn Provider>) {
        self.providers.insert(name.to_string(), provider);
    }

    /// The provider behind a model reference, and the model name it knows.
    pub fn resolve(&self, model: &ModelRef) -> Result<(Arc<dyn Provider>, String)> {
        let provider = self.providers.get(&model.provider).ok_or_else(|| {
            EngineError::Config(format!(
                "model `{model}` names provider `{}`, which is not configured; add a [providers.{}] section",
                model.provider, model.provider
            ))
        })?;
        Ok((provider.clone(), model.model.clone()))
    }
}

/// The shipped prices with the config's `[prices]` on top.
pub fn price_table(config: &Config) -> orch_providers::pricing::PriceTable {
    let mut table = orch_providers::pricing::PriceTable::shipped();
    for (model, p) in &config.prices {
        table.set(
            model,
            orch_providers::pricing::Price::new(
                p.input,
                p.output,
                p.cached_input.unwrap_or(p.input),
            ),
        );
    }
    table
}

/// The API key for a provider: its `api_key_env` (environment, then the
/// `.env` beside the config), else the preset's usual variable.
fn api_key_for(config: &Config, pc: &ProviderConfig) -> Option<String> {
    if pc.api_key_env.is_some() {
        return config.api_key(pc);
    }
    let var = pc
        .preset
        .as_deref()
        .and_then(orch_providers::presets::preset)?
        .api_key_env?;
    std::env::var(var)
        .ok()
        .or_else(|| config.dotenv.get(var).cloned())
        .filter(|k| !k.trim().is_empty())
}

pub fn build_provider(
    config: &Config,
    name: &str,
    pc: &ProviderConfig,
) -> Result<Arc<dyn Provider>> {
    let key = api_key_for(config, pc);
    if let Some(k) = &key {
        orch_core::redact::register(k);
    }
    let timeout = Duration::from_secs(pc.request_timeout_seconds);
    let base = pc.base_url.as_deref().unwrap_or("");
    let provider_err =
        |e: orch_providers::ProviderError| EngineError::Config(format!("providers.{name}: {e}"));
    match pc.kind {
        ProviderKind::Openai => {
            if let Some(preset_name) = &pc.preset {
                let preset = orch_providers::presets::preset(preset_name).ok_or_else(|| {
                    provider_err(orch_providers::presets::unknown_preset(preset_name))
                })?;
                let p = preset
                    .client(name, pc.base_url.as_deref(), key, timeout)
                    .map_err(provider_err)?;
                return Ok(Arc::new(p));
            }
            let base_url = pc.base_url.as_deref().ok_or_else(|| {
                EngineError::Config(format!(
                    "providers.{name}.base_url is required for kind = \"openai\" (or set preset = \"groq\", \"openai\", …)"
                ))
            })?;
            Ok(Arc::new(
                OpenAiProvider::new(name, base_url, key, timeout).map_err(provider_err)?,
            ))
        }
        ProviderKind::Anthropic => Ok(Arc::new(
            orch_providers::anthropic::AnthropicProvider::new(name, base, key, timeout)
                .map_err(provider_err)?,
        )),
        ProviderKind::Gemini => Ok(Arc::new(
            orch_providers::gemini::GeminiProvider::new(name, base, key, timeout)
                .map_err(provider_err)?,
        )),
        ProviderKind::Ollama => Ok(Arc::new(
            orch_providers::ollama::OllamaProvider::new(name, base, timeout)
                .map_err(provider_err)?,
        )),
        ProviderKind::Simulated => Ok(Arc::new(orch_providers::simulated::SimulatedProvider::new(
            name,
        ))),
        ProviderKind::Replay => {
            let script = pc.script.as_ref().ok_or_else(|| {
                EngineError::Config(format!(
                    "providers.{name}.script is required for kind = \"replay\""
                ))
            })?;
            let path = if script.is_absolute() {
                script.clone()
            } else {
                config.base_dir.join(script)
            };
            let p = ReplayProvider::from_file(name, &path)
                .map_err(|e| EngineError::Provider(e.to_string()))?;
            Ok(Arc::new(p))
        }
    }
}
