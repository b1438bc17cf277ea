//! Presets for well-known OpenAI-compatible services: base URL, the
//! environment variable that conventionally holds the key, and what the
//! service can do natively.
//!
//! `json_schema` is claimed only where the service enforces a JSON schema
//! for the models it serves; where support depends on the model (Groq,
//! Together, OpenRouter, DeepSeek, Ollama's `/v1`) it is off, so the
//! structured-output layer puts the schema in the prompt and validates —
//! that works with every model, and validation runs either way.
//!
//! Local servers (vLLM, llama.cpp, LM Studio, Ollama) use their documented
//! default ports on 127.0.0.1 and need no key; set `base_url` in the
//! provider config to point elsewhere.

use crate::openai::{OpenAiProvider, SchemaStyle};
use crate::{Capabilities, ProviderError};
use std::time::Duration;

/// A known OpenAI-compatible service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The canonical name used in config (`preset = "groq"`).
    pub name: &'static str,
    /// The API root; the client appends `/chat/completions`.
    pub base_url: &'static str,
    /// The variable the service's own docs and SDKs read the key from;
    /// `None` for local servers that need no key.
    pub api_key_env: Option<&'static str>,
    pub capabilities: Capabilities,
    /// How `response_format` is written for this server.
    pub schema_style: SchemaStyle,
    /// Runs on this machine (no key, no cost by default).
    pub local: bool,
}

const ALL: Capabilities = Capabilities {
    tools: true,
    json_schema: true,
    streaming: true,
};

/// Tools and streaming; structured output through the prompt.
const NO_SCHEMA: Capabilities = Capabilities {
    tools: true,
    json_schema: false,
    streaming: true,
};

const PRESETS: [Preset; 11] = [
    Preset {
        name: "openai",
        base_url: "https://api.openai.com/v1",
        api_key_env: Some("OPENAI_API_KEY"),
        capabilities: ALL,
        schema_style: SchemaStyle::JsonSchema,
        local: false,
    },
    Preset {
        name: "groq",
        base_url: "https://api.groq.com/openai/v1",
        api_key_env: Some("GROQ_API_KEY"),
        capabilities: NO_SCHEMA,
        schema_style: SchemaStyle::JsonSchema,
        local: false,
    },
    Preset {
        name: "together",
        base_url: "https://api.together.xyz/v1",
        api_key_env: Some("TOGETHER_API_KEY"),
        capabilities: NO_SCHEMA,
        schema_style: SchemaStyle::JsonSchema,
        local: false,
    },
    Preset {
        name: "openrouter",
        base_url: "https://openrouter.ai/api/v1",
        api_key_env: Some("OPENROUTER_API_KEY"),
        capabilities: NO_SCHEMA,
        schema_style: SchemaStyle::JsonSchema,
        local: false,
    },
    Preset {
        name: "xai",
        base_url: "https://api.x.ai/v1",
        api_key_env: Some("XAI_API_KEY"),
        capabilities: ALL,
        schema_style: SchemaStyle::JsonSchema,
        local: false,
    },
    Preset {
        name: "deepseek",
        // DeepSeek documents the root; `/v1` is an alias of it.
        base_url: "https://api.deepseek.com",
        api_key_env: Some("DEEPSEEK_API_KEY"),
        // JSON mode only (`json_object`), no schema.
        capabilities: NO_SCHEMA,
        schema_style: SchemaStyle::JsonSchema,
        local: false,
    },
    Preset {
        name: "mistral",
        base_url: "https://api.mistral.ai/v1",
        api_key_env: Some("MISTRAL_API_KEY"),
        capabilities: ALL,
        schema_style: SchemaStyle::JsonSchema,
        local: false,
    },
    Preset {
        name: "vllm",
        // `vllm serve` listens on 8000; schemas go to guided decoding.
        base_url: "http://127.0.0.1:8000/v1",
        api_key_env: None,
        capabilities: ALL,
        schema_style: SchemaStyle::JsonSchema,
        local: true,
    },
    Preset {
        name: "llamacpp",
        // `llama-server` listens on 8080; schemas become a grammar.
        base_url: "http://127.0.0.1:8080/v1",
        api_key_env: None,
        capabilities: ALL,
        // The form both llama.cpp's server and llama-cpp-python's read.
        schema_style: SchemaStyle::JsonObjectSchema,
        local: true,
    },
    Preset {
        name: "lmstudio",
        base_url: "http://127.0.0.1:1234/v1",
        api_key_env: None,
        capabilities: ALL,
        schema_style: SchemaStyle::JsonSchema,
        local: true,
    },
    Preset {
        name: "ollama",
        // Ollama's OpenAI-compatible endpoint; its native API is `ollama`.
        base_url: "http://127.0.0.1:11434/v1",
        api_key_env: None,
        capabilities: NO_SCHEMA,
        schema_style: SchemaStyle::JsonSchema,
        local: true,
    },
];

/// Other spellings people use for the same services.
const ALIASES: [(&str, &str); 6] = [
    ("grok", "xai"),
    ("x.ai", "xai"),
    ("llama.cpp", "llamacpp"),
    ("llama-cpp", "llamacpp"),
    ("lm-studio", "lmstudio"),
    ("togetherai", "together"),
];

/// The preset called `name` (case-insensitive; aliases such as `grok` and
/// `llama.cpp` work too).
pub fn preset(name: &str) -> Option<Preset> {
    let wanted = name.trim().to_ascii_lowercase();
    let canonical = ALIASES
        .iter()
        .find(|(alias, _)| *alias == wanted)
        .map_or(wanted.as_str(), |(_, c)| c);
    PRESETS.iter().find(|p| p.name == canonical).copied()
}

/// The canonical preset names, in a stable order (for help texts and
/// "unknown preset" errors).
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

/// The error for an unknown preset name, listing the known ones.
pub fn unknown_preset(name: &str) -> ProviderError {
    ProviderError::Config(format!(
        "unknown preset {name:?}; use one of {} (or leave preset out and set base_url)",
        preset_names().join(", ")
    ))
}

impl Preset {
    /// The key from the preset's variable in the process environment, if
    /// set and not empty.
    pub fn api_key_from_env(&self) -> Option<String> {
        self.api_key_env
            .and_then(|var| std::env::var(var).ok())
            .filter(|k| !k.trim().is_empty())
    }

    /// A client for this service. `base_url` overrides the preset's (a
    /// local server on another port, a proxy). A hosted service without a
    /// key is refused here, naming the variable to set.
    pub fn client(
        &self,
        provider_name: &str,
        base_url: Option<&str>,
        api_key: Option<String>,
        request_timeout: Duration,
    ) -> Result<OpenAiProvider, ProviderError> {
        let api_key = api_key.filter(|k| !k.trim().is_empty());
        if let (Some(var), None) = (self.api_key_env, &api_key) {
            return Err(ProviderError::Config(format!(
                "provider {provider_name} (preset {}) needs an API key: set {var} in the \
                 environment or in .env beside orch.toml",
                self.name
            )));
        }
        let url = base_url.unwrap_or(self.base_url);
        Ok(
            OpenAiProvider::new(provider_name, url, api_key, request_timeout)?
                .with_capabilities(self.capabilities)
                .with_schema_style(self.schema_style),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Provider;

    #[test]
    fn every_named_service_has_a_preset() {
        let names = preset_names();
        assert_eq!(
            names,
            vec![
                "openai",
                "groq",
                "together",
                "openrouter",
                "xai",
                "deepseek",
                "mistral",
                "vllm",
                "llamacpp",
                "lmstudio",
                "ollama"
            ]
        );
        for name in &names {
            let p = preset(name).unwrap();
            assert_eq!(p.name, *name);
            assert!(reqwest::Url::parse(p.base_url).is_ok(), "{}", p.base_url);
            assert!(p.capabilities.streaming && p.capabilities.tools);
            // Hosted services use TLS and a key; local ones neither.
            if p.local {
                assert!(
                    p.base_url.starts_with("http://127.0.0.1:"),
                    "{}",
                    p.base_url
                );
                assert_eq!(p.api_key_env, None);
            } else {
                assert!(p.base_url.starts_with("https://"), "{}", p.base_url);
                assert!(p.api_key_env.unwrap().ends_with("_API_KEY"));
            }
        }
    }

    #[test]
    fn documented_urls_and_key_variables() {
        let check = |name: &str, url: &str, key: Option<&str>| {
            let p = preset(name).unwrap();
            assert_eq!((p.base_url, p.api_key_env), (url, key), "{name}");
        };
        check(
            "openai",
            "https://api.openai.com/v1",
            Some("OPENAI_API_KEY"),
        );
        check(
            "groq",
            "https://api.groq.com/openai/v1",
            Some("GROQ_API_KEY"),
        );
        check(
            "together",
            "https://api.together.xyz/v1",
            Some("TOGETHER_API_KEY"),
        );
        check(
            "openrouter",
            "https://openrouter.ai/api/v1",
            Some("OPENROUTER_API_KEY"),
        );
        check("xai", "https://api.x.ai/v1", Some("XAI_API_KEY"));
        check(
            "deepseek",
            "https://api.deepseek.com",
            Some("DEEPSEEK_API_KEY"),
        );
        check(
            "mistral",
            "https://api.mistral.ai/v1",
            Some("MISTRAL_API_KEY"),
        );
        check("vllm", "http://127.0.0.1:8000/v1", None);
        check("llamacpp", "http://127.0.0.1:8080/v1", None);
        check("lmstudio", "http://127.0.0.1:1234/v1", None);
        check("ollama", "http://127.0.0.1:11434/v1", None);
    }

    #[test]
    fn aliases_and_case_resolve() {
        assert_eq!(preset("grok").unwrap().name, "xai");
        assert_eq!(preset("Llama.CPP").unwrap().name, "llamacpp");
        assert_eq!(preset(" OpenAI ").unwrap().name, "openai");
        assert!(preset("anthropic").is_none());
        let err = unknown_preset("anthropc").to_string();
        assert!(
            err.contains("anthropc") && err.contains("openrouter"),
            "{err}"
        );
    }

    #[test]
    fn client_needs_the_key_of_a_hosted_service() {
        let groq = preset("groq").unwrap();
        let err = groq
            .client("fast", None, None, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("GROQ_API_KEY"), "{err}");
        let client = groq
            .client(
                "fast",
                None,
                Some("gsk-test".into()),
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(
            client.endpoint(),
            "https://api.groq.com/openai/v1/chat/completions"
        );
        assert!(!client.capabilities().json_schema);

        let local = preset("llamacpp")
            .unwrap()
            .client(
                "llama",
                Some("http://127.0.0.1:9999/v1"),
                None,
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(
            local.endpoint(),
            "http://127.0.0.1:9999/v1/chat/completions"
        );
        assert!(local.capabilities().json_schema && local.capabilities().streaming);
    }
}
