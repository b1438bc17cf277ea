//! End-to-end loading: real files in temporary directories, all three
//! formats, interpolation, validation messages and writing back.
//!
//! The process environment is never modified here (tests run on threads);
//! `load_str_with_env` stands in for it. tests/process_env.rs covers the real
//! environment in a process of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_config::{
    load, load_str, load_str_with_env, Config, ConfigError, ConfigFormat, ModelRef, ProjectConfig,
    ProviderKind, ResolveConflicts, SandboxKind,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct Fixture {
    dir: tempfile::TempDir,
    repo: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        Fixture { dir, repo }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    /// Load `text` as TOML from `orch.toml` in the fixture, with `env` as
    /// the process environment.
    fn toml(&self, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.get(k).cloned();
        load_str_with_env(text, ConfigFormat::Toml, &self.path("orch.toml"), &lookup)
    }
    fn err(&self, text: &str) -> String {
        match self.toml(text, &[]) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }
    /// The example from the spec, pointing at the fixture's repo, with
    /// `project_extra` appended to the project table.
    fn example(&self, project_extra: &str) -> String {
        format!(
            r#"data_dir = ".orch"
[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:8080/v1"
api_key_env = "LOCAL_API_KEY"
[[projects]]
name = "demo"
path = "{}"   # a temporary directory
test_command = "python -m pytest -q"
lint_command = ""
worker_model = "local:any-model"
planner_model = "local:any-model"
judge_model = "local:any-model"
max_workers = 3
max_attempts = 3
max_turns = 50
worker_timeout_seconds = 600
sandbox = "bwrap"
{project_extra}
"#,
            self.repo.display()
        )
    }
}

fn assert_contains(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "`{n}` not in:\n{haystack}");
    }
}

#[test]
fn all_three_formats_give_the_same_config() {
    let fx = Fixture::new();
    let repo = fx.repo.display().to_string();
    let toml_path = fx.write("orch.toml", &fx.example(""));
    let yaml_path = fx.write(
        "orch.yaml",
        &format!(
            r#"# same schema as orch.toml
data_dir: .orch
providers:
  local:
    kind: openai
    base_url: "http://127.0.0.1:8080/v1"
    api_key_env: LOCAL_API_KEY
projects:
  - name: demo
    path: "{repo}"
    test_command: python -m pytest -q
    lint_command: ""
    worker_model: "local:any-model"
    planner_model: "local:any-model"
    judge_model: "local:any-model"
    max_workers: 3
    max_attempts: 3
    max_turns: 50
    worker_timeout_seconds: 600
    sandbox: bwrap
"#
        ),
    );
    let json_path = fx.write(
        "orch.json",
        &format!(
            r#"{{
  "data_dir": ".orch",
  "providers": {{
    "local": {{
      "kind": "openai",
      "base_url": "http://127.0.0.1:8080/v1",
      "api_key_env": "LOCAL_API_KEY"
    }}
  }},
  "projects": [
    {{
      "name": "demo",
      "path": "{repo}",
      "test_command": "python -m pytest -q",
      "lint_command": "",
      "worker_model": "local:any-model",
      "planner_model": "local:any-model",
      "judge_model": "local:any-model",
      "max_workers": 3,
      "max_attempts": 3,
      "max_turns": 50,
      "worker_timeout_seconds": 600,
      "sandbox": "bwrap"
    }}
  ]
}}
"#
        ),
    );
    // `.YML` also picks YAML: the extension is case-insensitive.
    let yml_path = fx.path("ORCH.YML");
    std::fs::copy(&yaml_path, &yml_path).unwrap();

    let from_toml = load(&toml_path).unwrap();
    assert_eq!(from_toml.source, toml_path);
    assert_eq!(
        from_toml.base_dir,
        fx.dir.path().canonicalize().unwrap(),
        "base_dir is the config file's absolute directory"
    );
    for p in [&yaml_path, &yml_path, &json_path] {
        let mut other = load(p).unwrap();
        assert_eq!(other.source, *p);
        other.source = toml_path.clone();
        assert_eq!(other, from_toml, "{} differs from orch.toml", p.display());
    }

    // Spot-check the values themselves, not just that the formats agree.
    let local = &from_toml.providers["local"];
    assert_eq!(local.kind, ProviderKind::Openai);
    assert_eq!(local.base_url.as_deref(), Some("http://127.0.0.1:8080/v1"));
    let demo = from_toml.project("demo").unwrap();
    assert_eq!(demo.worker_model, ModelRef::new("local", "any-model"));
    assert_eq!(demo.test_command, "python -m pytest -q");
    assert_eq!(demo.sandbox, SandboxKind::Bwrap);
    assert_eq!(from_toml.project_path(demo), fx.repo);
}

#[test]
fn defaults_are_applied() {
    let fx = Fixture::new();
    let cfg = fx
        .toml(
            "[providers.local]\nkind = \"openai\"\nbase_url = \"http://localhost:1/v1\"\n\
             [[projects]]\nname = \"p\"\npath = \"repo\"\nworker_model = \"local:m\"\n",
            &[],
        )
        .unwrap();
    assert_eq!(cfg.data_dir, PathBuf::from(".orch"));
    assert_eq!(cfg.data_dir_abs(), cfg.base_dir.join(".orch"));
    assert_eq!(cfg.providers["local"].request_timeout_seconds, 300);
    assert_eq!(cfg.providers["local"].api_key_env, None);
    let p = &cfg.projects[0];
    // Everything not written takes the same defaults ProjectConfig::new uses.
    let expected = ProjectConfig::new("p", "repo", ModelRef::new("local", "m"));
    assert_eq!(*p, expected);
    assert_eq!(p.max_workers, 3);
    assert_eq!(p.max_attempts, 3);
    assert_eq!(p.max_turns, 50);
    assert_eq!(p.worker_timeout_seconds, 600);
    assert_eq!(p.command_timeout_seconds, 600);
    assert_eq!(p.output_limit_bytes, 64 * 1024);
    assert_eq!(p.sandbox, SandboxKind::Bwrap);
    assert!(!p.network);
    assert!(p.auto_plan);
    assert_eq!(p.judge_min_score, 6.0);
    assert_eq!(p.planner_model, None);
    assert_eq!(p.main_branch, "");
    // A relative project path resolves against the config's directory.
    assert_eq!(cfg.project_path(p), fx.repo.canonicalize().unwrap());
}

#[test]
fn empty_config_is_valid_in_every_format() {
    let fx = Fixture::new();
    for (name, text) in [
        ("a.toml", ""),
        ("b.yaml", "# nothing yet\n"),
        ("c.json", "{}"),
    ] {
        let cfg = load(&fx.write(name, text)).unwrap();
        assert!(
            cfg.projects.is_empty() && cfg.providers.is_empty(),
            "{name}"
        );
        assert_eq!(cfg.data_dir, PathBuf::from(".orch"));
    }
}

#[test]
fn missing_file_says_how_to_create_one() {
    let fx = Fixture::new();
    let p = fx.path("orch.toml");
    let e = load(&p).unwrap_err();
    assert!(matches!(e, ConfigError::NotFound { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: no such config file; create one with `orch init PATH`, or pass --config",
            p.display()
        )
    );
}

#[test]
fn a_directory_is_an_io_error_naming_it() {
    let fx = Fixture::new();
    let p = fx.path("dir.toml");
    std::fs::create_dir(&p).unwrap();
    let e = load(&p).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
    assert!(e
        .to_string()
        .starts_with(&format!("{}: cannot read", p.display())));
}

#[test]
fn unknown_extension_is_rejected_before_reading() {
    let fx = Fixture::new();
    let e = load(&fx.path("orch.ini")).unwrap_err();
    assert_contains(
        &e.to_string(),
        &["orch.ini: file extension: expected one of `.toml`, `.yaml`, `.yml` or `.json`, found `.ini`"],
    );
}

// ---- interpolation ----

#[test]
fn interpolates_from_environment_and_dotenv() {
    let fx = Fixture::new();
    fx.write(
        ".env",
        "# local settings\nexport LLM_URL='http://127.0.0.1:9000/v1'\nWORKERS=5\nMODEL=\"from-dotenv\"\n",
    );
    let text = r#"
[providers.local]
kind = "openai"
base_url = "${LLM_URL}"
[[projects]]
name = "demo"
path = "${REPO_DIR}"
worker_model = "local:${MODEL}"
max_workers = ${WORKERS}
max_turns = ${TURNS:-77}
test_command = "echo $${NOT_A_VAR} costs $5"
"#;
    let repo = fx.repo.display().to_string();
    let cfg = fx
        .toml(text, &[("REPO_DIR", &repo), ("MODEL", "from-env")])
        .unwrap();
    let p = &cfg.projects[0];
    assert_eq!(
        cfg.providers["local"].base_url.as_deref(),
        Some("http://127.0.0.1:9000/v1"),
        "from .env"
    );
    assert_eq!(p.path, fx.repo, "from the environment");
    assert_eq!(
        p.worker_model.model, "from-env",
        "the environment wins over .env"
    );
    assert_eq!(p.max_workers, 5, "a variable can fill a number");
    assert_eq!(p.max_turns, 77, "default when unset");
    assert_eq!(
        p.test_command, "echo ${NOT_A_VAR} costs $5",
        "`$${{` escapes"
    );
    // The .env values are kept, for api_key().
    assert_eq!(cfg.dotenv.get("WORKERS").map(String::as_str), Some("5"));
}

#[test]
fn undefined_variable_error_names_var_file_line_and_fix() {
    let fx = Fixture::new();
    let e = fx
        .toml(
            "data_dir = \".orch\"\n\n[providers.x]\nkind = \"openai\"\nbase_url = \"${LLM_URL}\"\n",
            &[],
        )
        .unwrap_err();
    match &e {
        ConfigError::Interpolation { line, var, .. } => {
            assert_eq!((*line, var.as_str()), (5, "LLM_URL"));
        }
        other => panic!("wrong error: {other:?}"),
    }
    let dir = fx.dir.path().canonicalize().unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:5: undefined variable `LLM_URL`: set LLM_URL in the environment or in {}, \
             or give a default with `${{LLM_URL:-value}}`",
            fx.path("orch.toml").display(),
            dir.join(".env").display()
        )
    );
}

#[test]
fn commented_out_lines_need_no_variables() {
    let fx = Fixture::new();
    let cfg = fx
        .toml(
            "# base_url = \"${UNSET_IN_COMMENT}\"\ndata_dir = \"d\"\n",
            &[],
        )
        .unwrap();
    assert_eq!(cfg.data_dir, PathBuf::from("d"));
}

#[test]
fn malformed_dotenv_is_reported_with_its_own_path() {
    let fx = Fixture::new();
    let env = fx.write(".env", "GOOD=1\nthis line is wrong\n");
    let e = fx.toml("", &[]).unwrap_err();
    assert_contains(
        &e.to_string(),
        &[
            &format!("{}:2: ", env.canonicalize().unwrap().display()),
            "expected `KEY=VALUE`",
        ],
    );
}

// ---- parse errors ----

#[test]
fn malformed_toml_reports_line_and_column() {
    let fx = Fixture::new();
    let e = fx
        .toml(
            "data_dir = \".orch\"\n\n[providers.local\nkind = \"openai\"\n",
            &[],
        )
        .unwrap_err();
    match &e {
        ConfigError::Parse { line, column, .. } => {
            assert_eq!(*line, Some(3));
            assert!(column.is_some());
        }
        other => panic!("wrong error: {other:?}"),
    }
    let msg = e.to_string();
    assert_contains(&msg, &[&format!("{}:3:", fx.path("orch.toml").display())]);
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn type_errors_name_the_key_and_line() {
    let fx = Fixture::new();
    let e = fx.err(
        &fx.example("")
            .replace("max_workers = 3", "max_workers = \"three\""),
    );
    assert_contains(
        &e,
        &[
            "orch.toml:14:",
            "projects[0].max_workers: invalid type: string \"three\", expected u32",
        ],
    );
}

#[test]
fn yaml_and_json_errors_carry_positions_and_key_paths() {
    let fx = Fixture::new();
    let y = fx.write(
        "orch.yaml",
        "providers:\n  local:\n    kind: openai\n    base_url: http://x/v1\n    colour: blue\n",
    );
    let e = load(&y).unwrap_err();
    match &e {
        ConfigError::Parse { line, message, .. } => {
            assert_eq!(*line, Some(5), "{message}");
            assert_eq!(
                message,
                "providers.local: unknown key `colour`; valid keys: `kind`, `base_url`, \
                 `api_key_env`, `script`, `request_timeout_seconds`, `preset`, `fallback`"
            );
        }
        other => panic!("wrong error: {other:?}"),
    }
    let j = fx.write(
        "orch.json",
        "{\n  \"data_dir\": \"d\",\n  \"projects\": 5\n}\n",
    );
    let e = load(&j).unwrap_err();
    let msg = e.to_string();
    assert_contains(
        &msg,
        &[
            &format!("{}:3:", j.display()),
            "projects: invalid type: integer `5`, expected a sequence",
        ],
    );
    assert!(
        !msg.contains(" at line "),
        "position is not repeated: {msg}"
    );

    let y = fx.write(
        "bad.yaml",
        "providers:\n  l:\n    kind: openai\n   bad: indent\n",
    );
    let e = load(&y).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:4:4: providers: did not find expected key, while parsing a block mapping",
            y.display()
        )
    );

    let j = fx.write("trailing.json", "{} x");
    let e = load(&j).unwrap_err();
    assert!(
        matches!(e, ConfigError::Parse { line: Some(1), .. }),
        "{e:?}"
    );
}

#[test]
fn unknown_key_lists_valid_keys() {
    let fx = Fixture::new();
    let e = fx.err(&fx.example("max_worker = 4"));
    assert_contains(
        &e,
        &[
            "orch.toml:",
            "projects[0]: unknown key `max_worker`; valid keys: `name`, `path`",
            "`max_workers`",
            "`judge_min_score`",
        ],
    );
    let e = fx.err("colour = \"blue\"\n");
    assert_contains(
        &e,
        &["unknown key `colour`; valid keys: `data_dir`, `providers`, `projects`"],
    );
}

#[test]
fn a_literal_api_key_is_rejected_without_echoing_it() {
    let fx = Fixture::new();
    let e = fx.err(
        "[providers.cloud]\nkind = \"openai\"\nbase_url = \"https://api.example.com/v1\"\napi_key = \"sk-live-0123456789abcdef\"\n",
    );
    assert_contains(
        &e,
        &[
            "orch.toml:4:",
            "providers.cloud: unknown key `api_key`",
            "environment variable",
            "api_key_env",
        ],
    );
    assert!(
        !e.contains("0123456789abcdef"),
        "the secret leaked into: {e}"
    );
}

#[test]
fn bad_model_ref_is_a_parse_error_at_the_key() {
    let fx = Fixture::new();
    let e = fx.err(&fx.example("").replace(
        "worker_model = \"local:any-model\"",
        "worker_model = \"any-model\"",
    ));
    assert_contains(
        &e,
        &[
            "orch.toml:11:",
            "projects[0].worker_model: expected `provider:model` (for example `local:qwen2.5-coder`), found `any-model`",
        ],
    );
}

#[test]
fn unknown_enum_value_lists_choices() {
    let fx = Fixture::new();
    let e = fx.err(
        &fx.example("")
            .replace("sandbox = \"bwrap\"", "sandbox = \"firejail\""),
    );
    assert_contains(
        &e,
        &["projects[0].sandbox: unknown variant `firejail`, expected one of `bwrap`, `docker`, `auto`, `none`"],
    );
}

#[test]
fn resolve_conflicts_defaults_to_agent_and_takes_feedback() {
    let fx = Fixture::new();
    let cfg = fx.toml(&fx.example(""), &[]).unwrap();
    assert_eq!(cfg.projects[0].resolve_conflicts, ResolveConflicts::Agent);
    let cfg = fx
        .toml(&fx.example("resolve_conflicts = \"feedback\""), &[])
        .unwrap();
    assert_eq!(
        cfg.projects[0].resolve_conflicts,
        ResolveConflicts::Feedback
    );
    let e = fx.err(&fx.example("resolve_conflicts = \"rebase\""));
    assert_contains(
        &e,
        &["resolve_conflicts: unknown variant `rebase`, expected `agent` or `feedback`"],
    );
}

// ---- validation ----

/// Each (edit to the example, expected full message after "orch.toml: ").
#[test]
fn each_range_error_names_key_expected_and_found() {
    let fx = Fixture::new();
    let cases: &[(&str, &str, &str)] = &[
        ("max_workers = 3", "max_workers = 0", "projects[0].max_workers: expected an integer from 1 to 64, found 0"),
        ("max_workers = 3", "max_workers = 65", "projects[0].max_workers: expected an integer from 1 to 64, found 65"),
        ("max_attempts = 3", "max_attempts = 101", "projects[0].max_attempts: expected an integer from 1 to 100, found 101"),
        ("max_turns = 50", "max_turns = 0", "projects[0].max_turns: expected an integer from 1 to 10000, found 0"),
        ("worker_timeout_seconds = 600", "worker_timeout_seconds = 86401", "projects[0].worker_timeout_seconds: expected an integer from 1 to 86400, found 86401"),
        ("sandbox = \"bwrap\"", "sandbox = \"bwrap\"\ncommand_timeout_seconds = 0", "projects[0].command_timeout_seconds: expected an integer from 1 to 86400, found 0"),
        ("sandbox = \"bwrap\"", "sandbox = \"bwrap\"\noutput_limit_bytes = 1023", "projects[0].output_limit_bytes: expected an integer from 1024 (1 KiB) to 67108864 (64 MiB), found 1023"),
        ("sandbox = \"bwrap\"", "sandbox = \"bwrap\"\noutput_limit_bytes = 67108865", "projects[0].output_limit_bytes: expected an integer from 1024 (1 KiB) to 67108864 (64 MiB), found 67108865"),
        ("sandbox = \"bwrap\"", "sandbox = \"bwrap\"\njudge_min_score = 10.5", "projects[0].judge_min_score: expected a number from 0 to 10, found 10.5"),
        ("sandbox = \"bwrap\"", "sandbox = \"bwrap\"\njudge_min_score = -1", "projects[0].judge_min_score: expected a number from 0 to 10, found -1"),
        ("sandbox = \"bwrap\"", "sandbox = \"bwrap\"\npass_env = [\"HOME\", \"MY-VAR\"]", "projects[0].pass_env[1]: expected an environment variable name"),
        ("api_key_env = \"LOCAL_API_KEY\"", "api_key_env = \"LOCAL_API_KEY\"\nrequest_timeout_seconds = 0", "providers.local.request_timeout_seconds: expected an integer from 1 to 86400, found 0"),
    ];
    let file = fx.path("orch.toml").display().to_string();
    for (from, to, want) in cases {
        let text = fx.example("");
        assert!(text.contains(from), "{from}");
        let e = fx.err(&text.replacen(from, to, 1));
        assert!(
            e.starts_with(&format!("{file}: {want}")),
            "want `{want}`, got:\n{e}"
        );
    }
    // The boundaries themselves are accepted.
    let ok = fx
        .example("output_limit_bytes = 1024\njudge_min_score = 0\ncommand_timeout_seconds = 86400")
        .replace("max_workers = 3", "max_workers = 64")
        .replace("max_attempts = 3", "max_attempts = 100")
        .replace("max_turns = 50", "max_turns = 10000")
        .replace("worker_timeout_seconds = 600", "worker_timeout_seconds = 1");
    fx.toml(&ok, &[]).unwrap();
}

#[test]
fn the_example_message_from_the_spec_reads_exactly() {
    let fx = Fixture::new();
    let text = fx.example("").replace("max_workers = 3", "max_workers = 0");
    let e = load_str_with_env(&text, ConfigFormat::Toml, Path::new("orch.toml"), &|_| None)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "orch.toml: projects[0].max_workers: expected an integer from 1 to 64, found 0"
    );
    match e {
        ConfigError::Invalid {
            key,
            expected,
            found,
            path,
        } => {
            assert_eq!(path, PathBuf::from("orch.toml"));
            assert_eq!(key, "projects[0].max_workers");
            assert_eq!(expected, "an integer from 1 to 64");
            assert_eq!(found, "0");
        }
        other => panic!("wrong error: {other:?}"),
    }
}

#[test]
fn project_names_must_be_unique_nonempty_and_simple() {
    let fx = Fixture::new();
    let second = format!(
        "[[projects]]\nname = \"demo\"\npath = \"{}\"\nworker_model = \"local:m\"\n",
        fx.repo.display()
    );
    let e = fx.err(&format!("{}\n{second}", fx.example("")));
    assert_contains(&e, &["projects[1].name: expected a name no other project uses, found `demo`, already used by projects[0]"]);

    let e = fx.err(&fx.example("").replace("name = \"demo\"", "name = \"\""));
    assert_contains(&e, &["projects[0].name: expected a non-empty name of letters, digits, `_`, `.` and `-`, found an empty name"]);

    let e = fx.err(
        &fx.example("")
            .replace("name = \"demo\"", "name = \"my demo\""),
    );
    assert_contains(&e, &["projects[0].name: expected a non-empty name of letters, digits, `_`, `.` and `-`, found `my demo` (contains ' ')"]);
}

#[test]
fn project_path_must_be_an_existing_directory() {
    let fx = Fixture::new();
    let missing = fx.dir.path().join("nowhere");
    let e = fx.err(&fx.example("").replace(
        &fx.repo.display().to_string(),
        &missing.display().to_string(),
    ));
    assert_contains(
        &e,
        &[&format!(
            "projects[0].path: expected an existing git repository directory, found {} (does not exist)",
            missing.display()
        )],
    );
    let file = fx.write("file.txt", "x");
    let e = fx.err(
        &fx.example("")
            .replace(&fx.repo.display().to_string(), &file.display().to_string()),
    );
    assert_contains(&e, &["(not a directory)"]);
}

#[test]
fn model_provider_must_be_declared() {
    let fx = Fixture::new();
    let e = fx.err(&fx.example("").replace(
        "judge_model = \"local:any-model\"",
        "judge_model = \"replay:x\"",
    ));
    assert_contains(
        &e,
        &["projects[0].judge_model: expected `provider:model` with a provider declared in [providers] (declared: `local`), found `replay:x` (no provider `replay`)"],
    );
    let e = fx.err("[[projects]]\nname = \"p\"\npath = \"repo\"\nworker_model = \"local:m\"\n");
    assert_contains(&e, &["projects[0].worker_model: expected `provider:model` with a provider declared in [providers] (none are declared: add a [providers.NAME] section), found `local:m`"]);
}

#[test]
fn provider_rules() {
    let fx = Fixture::new();
    let e = fx.err("[providers.local]\nkind = \"openai\"\n");
    assert_contains(&e, &["providers.local.base_url: expected an http:// or https:// URL (required when kind = \"openai\")", "found nothing"]);

    let e = fx.err("[providers.local]\nkind = \"openai\"\nbase_url = \"localhost:8080\"\n");
    assert_contains(
        &e,
        &[
            "providers.local.base_url: expected an http:// or https:// URL",
            "found `localhost:8080`",
        ],
    );

    let e = fx.err("[providers.r]\nkind = \"replay\"\n");
    assert_contains(
        &e,
        &[
            "providers.r.script: expected a path to an existing replay script file",
            "found nothing",
        ],
    );

    let e = fx.err("[providers.r]\nkind = \"replay\"\nscript = \"missing.jsonl\"\n");
    let dir = fx.dir.path().canonicalize().unwrap();
    assert_contains(
        &e,
        &[&format!(
            "found {} (does not exist)",
            dir.join("missing.jsonl").display()
        )],
    );

    fx.write("script.jsonl", "[]");
    let cfg = fx
        .toml(
            "[providers.r]\nkind = \"replay\"\nscript = \"script.jsonl\"\n",
            &[],
        )
        .unwrap();
    assert_eq!(
        cfg.provider_script_path(&cfg.providers["r"]),
        Some(dir.join("script.jsonl"))
    );

    let e = fx.err("[providers.local]\nkind = \"openai\"\nbase_url = \"http://h/v1\"\napi_key_env = \"MY-KEY\"\n");
    assert_contains(&e, &["providers.local.api_key_env: expected the name of the environment variable that holds the key", "found `MY-KEY`"]);

    // The key itself pasted where its variable's name belongs is not echoed.
    let e = fx.err("[providers.local]\nkind = \"openai\"\nbase_url = \"http://h/v1\"\napi_key_env = \"sk-proj-abcdef0123456789\"\n");
    assert_contains(&e, &["providers.local.api_key_env", "looks like a secret"]);
    assert!(!e.contains("abcdef0123456789"), "{e}");

    let e = fx.err("[providers.\"my provider\"]\nkind = \"openai\"\nbase_url = \"http://h/v1\"\n");
    assert_contains(
        &e,
        &["providers.my provider: expected a non-empty provider name of letters, digits"],
    );

    let e = fx.err("[providers.local]\nkind = \"cohere\"\n");
    assert_contains(
        &e,
        &["providers.local.kind: unknown variant `cohere`, expected one of `openai`, `anthropic`, `gemini`, `ollama`, `replay`, `simulated`"],
    );
    // The other APIs have a default base URL; a bad one is still refused.
    let e = fx.err("[providers.local]\nkind = \"anthropic\"\nbase_url = \"ftp://x\"\n");
    assert_contains(
        &e,
        &["providers.local.base_url: expected an http:// or https:// URL"],
    );
    // A preset supplies the base URL of an OpenAI-compatible service.
    fx.toml(
        "[providers.groq]\nkind = \"openai\"\npreset = \"groq\"\n",
        &[],
    )
    .unwrap();
}

// ---- secrets ----

#[test]
fn api_key_falls_back_to_dotenv_and_debug_redacts_it() {
    let fx = Fixture::new();
    fx.write(
        ".env",
        "ORCH_TEST_KEY_ONLY_IN_DOTENV=sk-dotenv-secret-value\n",
    );
    let cfg = fx
        .toml(
            "[providers.local]\nkind = \"openai\"\nbase_url = \"http://h/v1\"\napi_key_env = \"ORCH_TEST_KEY_ONLY_IN_DOTENV\"\n\
             [providers.nokey]\nkind = \"openai\"\nbase_url = \"http://h/v1\"\n\
             [providers.unset]\nkind = \"openai\"\nbase_url = \"http://h/v1\"\napi_key_env = \"ORCH_TEST_KEY_SET_NOWHERE\"\n",
            &[],
        )
        .unwrap();
    assert_eq!(
        cfg.providers["local"].api_key().as_deref(),
        Some("sk-dotenv-secret-value")
    );
    assert_eq!(
        cfg.api_key(&cfg.providers["local"]).as_deref(),
        Some("sk-dotenv-secret-value")
    );
    // A provider built in code has no .env values of its own; the Config's
    // copy still finds the key.
    let built = orch_config::ProviderConfig {
        api_key_env: Some("ORCH_TEST_KEY_ONLY_IN_DOTENV".to_string()),
        ..Default::default()
    };
    assert_eq!(built.api_key(), None);
    assert_eq!(
        cfg.api_key(&built).as_deref(),
        Some("sk-dotenv-secret-value")
    );
    assert_eq!(cfg.providers["nokey"].api_key(), None);
    assert_eq!(cfg.providers["unset"].api_key(), None);

    let debug = format!("{cfg:?}");
    assert!(
        debug.contains("ORCH_TEST_KEY_ONLY_IN_DOTENV"),
        "names are shown: {debug}"
    );
    assert!(
        !debug.contains("sk-dotenv-secret-value"),
        "value leaked: {debug}"
    );
    let debug = format!("{:?}", cfg.providers["local"]);
    assert!(
        !debug.contains("sk-dotenv-secret-value"),
        "value leaked: {debug}"
    );
}

// ---- writing back ----

#[test]
fn to_toml_round_trips() {
    let fx = Fixture::new();
    fx.write("script.jsonl", "[]");
    let mut cfg = fx
        .toml(
            &fx.example(
                "pass_env = [\"HOME\"]\njudge_min_score = 7.5\nsetup_command = \"echo $${HOME}\"",
            )
            .replace(
                "[[projects]]",
                "[providers.r]\nkind = \"replay\"\nscript = \"script.jsonl\"\n[[projects]]",
            ),
            &[],
        )
        .unwrap();
    assert_eq!(cfg.projects[0].setup_command, "echo ${HOME}");
    let text = cfg.to_toml().unwrap();
    assert!(
        text.contains("$${HOME}"),
        "`${{` is escaped on the way out:\n{text}"
    );
    let again = fx.toml(&text, &[]).unwrap();
    assert_eq!(again, cfg);

    // A config built in code (what `orch init` does) also round-trips.
    cfg.projects.push(ProjectConfig::new(
        "second",
        "repo",
        ModelRef::new("r", "m"),
    ));
    let again = fx.toml(&cfg.to_toml().unwrap(), &[]).unwrap();
    assert_eq!(again.projects[1], cfg.projects[1]);
    assert_eq!(again.projects[1].planner_model, None);
}

#[test]
fn load_str_uses_path_for_base_dir_and_messages() {
    let fx = Fixture::new();
    let path = fx.path("sub/orch.toml");
    // The file need not exist; its directory is still the base.
    let e = load_str(
        "[[projects]]\nname = \"p\"\npath = \"repo\"\nworker_model = \"x:y\"\n",
        ConfigFormat::Toml,
        &path,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert_contains(
        &msg,
        &[&format!(
            "{} (does not exist)",
            fx.path("sub/repo").display()
        )],
    );
}

#[test]
fn retry_prices_and_budgets_are_validated() {
    let fx = Fixture::new();
    let e = fx.err("[retry]\nschedule_seconds = []\n");
    assert_contains(
        &e,
        &["retry.schedule_seconds: expected 1 to 20 waits in seconds"],
    );
    let e = fx.err("[retry]\njitter = 2.0\n");
    assert_contains(
        &e,
        &["retry.jitter: expected a fraction from 0 to 1, found 2"],
    );
    let e = fx.err("[prices.gpt-4o]\ninput = -1.0\noutput = 1.0\n");
    assert_contains(
        &e,
        &["prices.gpt-4o: expected non-negative US dollars per million tokens"],
    );
    let e = fx.err(&fx.example("max_budget_per_task_usd = 0.0"));
    assert_contains(&e, &["projects[0].max_budget_per_task_usd: expected a positive number of US dollars, found 0"]);
    let e = fx.err(&fx.example("strategy = \"cheapest\""));
    assert_contains(
        &e,
        &[
            "unknown variant `cheapest`",
            "`cost-first`",
            "`quality-first`",
        ],
    );
    let ok = fx
        .toml(
            &fx.example("strategy = \"quality-first\"\ndaily_budget_usd = 5.0"),
            &[],
        )
        .unwrap();
    assert_eq!(ok.projects[0].daily_budget_usd, Some(5.0));
    assert_eq!(ok.retry.schedule_seconds, vec![2, 30, 60, 120, 300, 600]);
}

#[test]
fn refine_takes_its_defaults_and_needs_a_judge_and_ranges() {
    let fx = Fixture::new();
    let cfg = fx.toml(&fx.example(""), &[]).unwrap();
    assert_eq!(cfg.projects[0].refine, None);
    let cfg = fx
        .toml(&fx.example("[projects.refine]\nthreshold = 8.5"), &[])
        .unwrap();
    let r = cfg.projects[0].refine.unwrap();
    assert_eq!((r.threshold, r.max_iterations, r.plateau), (8.5, 10, 3));

    let no_judge = fx
        .example("[projects.refine]\nthreshold = 8.0")
        .replace("judge_model = \"local:any-model\"\n", "");
    assert_contains(
        &fx.err(&no_judge),
        &["projects[0].judge_model", "[projects.refine]", "none"],
    );
    for (edit, key, found) in [
        ("threshold = 11", "projects[0].refine.threshold", "11"),
        (
            "max_iterations = 0",
            "projects[0].refine.max_iterations",
            "0",
        ),
        ("plateau = 0", "projects[0].refine.plateau", "0"),
    ] {
        let e = fx.err(&fx.example(&format!("[projects.refine]\n{edit}")));
        assert_contains(&e, &[key, found]);
    }
    let e = fx.err(&fx.example("[projects.refine]\nscore = 8"));
    assert_contains(&e, &["score"]);
}

#[test]
fn candidates_default_to_one_and_are_checked() {
    let fx = Fixture::new();
    let cfg = fx.toml(&fx.example(""), &[]).unwrap();
    let p = &cfg.projects[0];
    assert_eq!(p.candidates, 1);
    assert!(p.candidate_models.is_empty() && p.candidate_workers.is_empty());
    let cfg = fx
        .toml(
            &fx.example(
                "candidates = 3\ncandidate_models = [\"local:a\", \"local:b\"]\ncandidate_workers = [\"builtin\", \"aider\"]",
            ),
            &[],
        )
        .unwrap();
    let p = &cfg.projects[0];
    assert_eq!(p.candidates, 3);
    assert_eq!(p.candidate_models[1].to_string(), "local:b");
    assert_eq!(p.candidate_workers[1].as_str(), "aider");
    let e = fx.err(&fx.example("candidates = 9"));
    assert_contains(
        &e,
        &["projects[0].candidates: expected an integer from 1 to 8, found 9"],
    );
    let e = fx.err(&fx.example("candidates = 0"));
    assert_contains(&e, &["projects[0].candidates", "found 0"]);
    let e = fx.err(&fx.example("candidate_models = [\"nowhere:x\"]"));
    assert_contains(&e, &["candidate_models[0]", "nowhere"]);
    let e = fx.err(&fx.example("candidate_workers = [\"cursor\"]"));
    assert_contains(&e, &["candidate_workers", "cursor"]);
    let docker = fx
        .example("candidate_workers = [\"builtin\", \"codex\"]")
        .replace("sandbox = \"bwrap\"", "sandbox = \"docker\"");
    let e = fx.err(&docker);
    assert_contains(&e, &["projects[0].candidate_workers[1]", "bwrap", "codex"]);
}
