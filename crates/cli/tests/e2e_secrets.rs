//! End-to-end: secrets stay out of the sandbox. The real binary, bwrap, a
//! real git repository and an OpenAI-compatible server (the testkit's, which
//! records every request) whose scripted worker tries to read the config,
//! the `.env` beside it (plain and base64) and the database in data_dir
//! through the `run` tool. The reads fail inside the sandbox, and no byte of
//! the key, plain or encoded, reaches the model, the database, the audit
//! trail or the logs — including the encodings a worker can make of a key
//! it was deliberately given (`pass_env`).
//!
//! The fixture lives outside /tmp: the sandbox's private /tmp would hide a
//! data_dir under /tmp anyway and prove nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use orch_providers::replay::Script;
use orch_testkit::FakeOpenAi;
use serde_json::{json, Value};
use std::path::Path;

const KEY: &str = "sk-e2e-never-in-the-sandbox-5150";
const KEY_VAR: &str = "E2E_SECRET_KEY";

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// What must never appear: the key, and its base64 at every alignment
/// (the characters that depend only on the key), its hex, and the base64
/// of the whole `.env`.
fn forbidden(env_file: &str) -> Vec<String> {
    let mut f = vec![KEY.to_string(), base64(env_file.as_bytes())];
    for offset in 0..3 {
        let mut data = vec![b'x'; offset];
        data.extend_from_slice(KEY.as_bytes());
        let encoded = base64(&data);
        let start = (8 * offset).div_ceil(6);
        let end = 8 * (offset + KEY.len()) / 6;
        f.push(encoded[start..end].to_string());
    }
    f.push(KEY.bytes().map(|b| format!("{b:02x}")).collect());
    f
}

/// The usual calc repository, but outside /tmp.
fn fixture_outside_tmp() -> Fixture {
    Fixture::in_dir(dir_outside_tmp())
}

fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else {
            files.push(p);
        }
    }
    files
}

#[test]
fn the_sandbox_cannot_read_the_config_env_or_database_and_no_encoding_of_the_key_leaks() {
    if sandbox() != "bwrap" {
        eprintln!(
            "skipped: hidden paths are a sandbox guarantee; ORCH_TEST_SANDBOX={}",
            sandbox()
        );
        return;
    }
    let fx = fixture_outside_tmp();
    let root = fx.root().canonicalize().unwrap();
    let env_file = format!("# local secrets\nOTHER_SETTING=1\n{KEY_VAR}={KEY}\n");
    std::fs::write(root.join(".env"), &env_file).unwrap();
    let config = root.join("orch.toml");
    let data = root.join(".orch");
    let db = data.join("orch.db");
    let probe = format!(
        "cat {config} >/dev/null; echo cat-config=$?; \
         cat {env} >/dev/null; echo cat-env=$?; \
         base64 {env}; echo base64-env=$?; \
         head -c 64 {db} >/dev/null; echo head-db=$?; \
         python3 -c \"import sqlite3,sys; print(sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True).execute('select title from tasks').fetchall())\" {db}; echo sqlite-db=$?; \
         ls -A {data}; \
         grep -rl {KEY_VAR} {root} 2>/dev/null | grep -v /calc/ ; echo grep-done; \
         env | grep -c '^ORCH_'",
        config = config.display(),
        env = root.join(".env").display(),
        db = db.display(),
        data = data.display(),
        root = root.display(),
    );
    // The key the worker was given on purpose, encoded every common way.
    let encode = format!(
        "printf %s \"${KEY_VAR}\" | base64; printf 'k=%s;' \"${KEY_VAR}\" | base64 -w0; echo; \
         printf %s \"${KEY_VAR}\" | od -An -tx1 | tr -d ' \\n'; echo; \
         python3 -c \"import os,urllib.parse,base64; k=os.environ['{KEY_VAR}']; print(urllib.parse.quote(k, safe='')); print(base64.urlsafe_b64encode(b'xy'+k.encode()).decode())\""
    );
    let script: Script = serde_json::from_value(json!({"responses": [
        worker_call(None, json!([
            {"name": "run", "arguments": {"command": probe}},
            {"name": "run", "arguments": {"command": encode}},
            {"name": "read_file", "arguments": {"path": config.display().to_string()}},
            {"name": "read_file", "arguments": {"path": "../../../../orch.toml"}}
        ])),
        worker_call(None, json!([
            {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
            {"name": "finish", "arguments": {"summary": "add returns the sum"}}
        ])),
        judge_pass(),
    ]}))
    .unwrap();
    let server = FakeOpenAi::start(script);
    server.set_api_key(KEY);
    std::fs::write(
        &config,
        format!(
            "data_dir = \".orch\"\n\n[providers.local]\nkind = \"openai\"\nbase_url = \"{}\"\n\
             api_key_env = \"{KEY_VAR}\"\n\n[[projects]]\nname = \"calc\"\npath = \"calc\"\n\
             test_command = \"python3 -m pytest -q\"\nworker_model = \"local:worker\"\n\
             judge_model = \"local:judge\"\nmax_workers = 1\nmax_turns = 20\nauto_plan = false\n\
             sandbox = \"bwrap\"\npass_env = [\"{KEY_VAR}\"]\n",
            server.base_url()
        ),
    )
    .unwrap();
    let id = fx.add_task("Fix add", "");
    let out = fx
        .orch_cmd(&["run", "--project", "calc"])
        .env(KEY_VAR, KEY)
        .env("ORCH_LOG", "debug")
        .output()
        .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{logs}");
    // The worktree inside data_dir still worked: the fix landed.
    assert_eq!(fx.task(&id)["task"]["status"], "merged", "{logs}");

    let requests = server.requests();
    let bodies: Vec<String> = requests.iter().map(Value::to_string).collect();
    // The tool results the model saw, in the second request.
    let second = &requests[1];
    let results: Vec<String> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(results.len(), 4, "{second}");
    let probed = &results[0];
    for failed in ["cat-config=1", "cat-env=1", "base64-env=1", "head-db=1"] {
        assert!(probed.contains(failed), "{failed} in {probed}");
    }
    assert!(!probed.contains("sqlite-db=0"), "{probed}");
    assert!(probed.contains("Permission denied"), "{probed}");
    // data_dir shows only the way to the worktree.
    assert!(probed.contains("worktrees"), "{probed}");
    for private in ["orch.db", "audit", "locks"] {
        assert!(
            !probed.contains(&format!("\n{private}\n")),
            "{private} listed: {probed}"
        );
    }
    // Only the repository mentions the variable's name; no ORCH_ variable
    // of orch's own environment reached the sandbox.
    assert!(probed.contains("grep-done\n0"), "{probed}");
    // The config's text never came back (only it says `api_key_env`).
    for r in &results {
        assert!(!r.contains("api_key_env"), "config leaked: {r}");
    }
    assert!(results[1].contains("[redacted]"), "{}", results[1]);
    assert!(
        results[2].contains("refused") || results[2].contains("outside"),
        "{}",
        results[2]
    );

    let forbidden = forbidden(&env_file);
    for body in &bodies {
        for f in &forbidden {
            assert!(!body.contains(f.as_str()), "{f} reached the model: {body}");
        }
    }
    // Nothing under data_dir holds it either: database, events, audit.
    for file in all_files(&data) {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        for f in &forbidden {
            assert!(!text.contains(f.as_str()), "{f} in {}", file.display());
        }
    }
    for f in &forbidden {
        assert!(!logs.contains(f.as_str()), "{f} in the logs");
    }
}
