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
            orch_providers::pricing::Price::new(p.input, p.output, p.cached_input.unwrap_or(p.input)),
        );
    }
    table
}

pub fn build_provider(
    config: &Config,
    name: &str,
    pc: &ProviderConfig,
) -> Result<Arc<dyn Provider>> {
    match pc.kind {
        ProviderKind::Openai => {
            let base_url = pc.base_url.as_deref().ok_or_else(|| {
                EngineError::Config(format!(
                    "providers.{name}.base_url is required for kind = \"openai\""
                ))
            })?;
            let key = config.api_key(pc);
            if let Some(k) = &key {
                orch_core::redact::register(k);
            }
            let p = OpenAiProvider::new(
                name,
                base_url,
                key,
                Duration::from_secs(pc.request_timeout_seconds),
            )
            .map_err(|e| EngineError::Provider(e.to_string()))?;
            Ok(Arc::new(p))
        }
        ProviderKind::Simulated => Ok(Arc::new(orch_providers::simulated::SimulatedProvider::new(name))),
        ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Ollama => Err(EngineError::Config(format!(
            "providers.{name}: kind = \"{}\" is not available in this build",
            pc.kind.as_str()
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
