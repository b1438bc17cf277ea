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
    pub fn from_config(config: &Config) -> Result<Self> {
        let mut providers = BTreeMap::new();
        for (name, pc) in &config.providers {
            providers.insert(name.clone(), build_provider(config, name, pc)?);
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
            let p = OpenAiProvider::new(
                name,
                base_url,
                key,
                Duration::from_secs(pc.request_timeout_seconds),
            )
            .map_err(|e| EngineError::Provider(e.to_string()))?;
            Ok(Arc::new(p))
        }
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
