//! The portfolio file: `orch.toml` (or `.yaml` / `.json` with the same schema).
//!
//! Loading interpolates `${VAR}` from the environment and from a `.env` file
//! beside the config, then validates. A validation error names the file, the
//! key, what was expected and what was found, so the user can fix it without
//! reading source.

mod load;
mod model;

pub use load::{load, load_str, ConfigError, ConfigFormat};
pub use model::{Config, ModelRef, ProjectConfig, ProviderConfig, ProviderKind, SandboxKind};
