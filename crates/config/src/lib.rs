//! The portfolio file: `orch.toml` (or `.yaml` / `.json` with the same schema).
//!
//! Loading interpolates `${VAR}` from the environment and from a `.env` file
//! beside the config, then validates. A validation error names the file, the
//! key, what was expected and what was found, so the user can fix it without
//! reading source.

mod dotenv;
mod interpolate;
mod load;
mod model;
mod template;
mod validate;

pub use load::{
    load, load_str, load_str_with_env, resolve_config_path, ConfigError, ConfigFormat,
    NOT_FOUND_HINT,
};
pub use model::{
    AgentConfig, AgentsConfig, Config, DockerConfig, DotEnv, ModelRef, PreexistingPolicy,
    PriceConfig, ProjectConfig, ProviderConfig, ProviderKind, RefineConfig, ResolveConflicts,
    RetryConfig, RoleTokens, SandboxKind, ServerConfig, Strategy, WorkerKind,
};
pub use template::PER_PROJECT_KEYS;
pub use validate::{MAX_OUTPUT_LIMIT, MIN_OUTPUT_LIMIT};
