//! The real process environment: `${VAR}` from it, its precedence over
//! `.env`, `api_key()` and `ORCH_CONFIG`. One test in its own binary so that
//! changing the environment cannot race with other tests' threads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_config::{load, resolve_config_path};
use std::path::{Path, PathBuf};

#[test]
fn process_environment_is_used_and_wins_over_dotenv() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "ORCH_PE_URL=http://from-dotenv/v1\nORCH_PE_KEY=dotenv-key\nORCH_PE_ONLY_DOTENV=http://only-dotenv/v1\n",
    )
    .unwrap();
    let path = dir.path().join("orch.toml");
    std::fs::write(
        &path,
        "[providers.a]\nkind = \"openai\"\nbase_url = \"${ORCH_PE_URL}\"\napi_key_env = \"ORCH_PE_KEY\"\n\
         [providers.b]\nkind = \"openai\"\nbase_url = \"${ORCH_PE_ONLY_DOTENV}\"\napi_key_env = \"ORCH_PE_KEY_B\"\n",
    )
    .unwrap();

    // Changing the environment is sound here: this binary runs no other thread.
    std::env::set_var("ORCH_PE_URL", "http://from-env/v1");
    std::env::set_var("ORCH_PE_KEY", "env-key");
    std::env::set_var("ORCH_PE_KEY_B", "env-key-b");
    let cfg = load(&path).unwrap();
    assert_eq!(
        cfg.providers["a"].base_url.as_deref(),
        Some("http://from-env/v1")
    );
    assert_eq!(
        cfg.providers["b"].base_url.as_deref(),
        Some("http://only-dotenv/v1")
    );
    assert_eq!(cfg.providers["a"].api_key().as_deref(), Some("env-key"));
    assert_eq!(cfg.providers["b"].api_key().as_deref(), Some("env-key-b"));
    std::env::remove_var("ORCH_PE_KEY");
    assert_eq!(
        cfg.providers["a"].api_key().as_deref(),
        Some("dotenv-key"),
        "falls back to .env"
    );

    std::env::remove_var("ORCH_CONFIG");
    assert_eq!(resolve_config_path(None), PathBuf::from("orch.toml"));
    std::env::set_var("ORCH_CONFIG", "/etc/orch/portfolio.yaml");
    assert_eq!(
        resolve_config_path(None),
        PathBuf::from("/etc/orch/portfolio.yaml")
    );
    assert_eq!(
        resolve_config_path(Some(Path::new("cli.toml"))),
        PathBuf::from("cli.toml")
    );
    std::env::set_var("ORCH_CONFIG", "");
    assert_eq!(resolve_config_path(None), PathBuf::from("orch.toml"));
}
