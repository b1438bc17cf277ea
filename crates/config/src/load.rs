//! Reading, interpolating and validating the config file.
use crate::model::Config;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    Toml,
    Yaml,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let _ = path;
    todo!()
}

pub fn load_str(text: &str, format: ConfigFormat, path: &Path) -> Result<Config, ConfigError> {
    let _ = (text, format, path);
    todo!()
}
