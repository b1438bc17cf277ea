//! End-to-end: a real Prometheus scrapes the real `orch serve`'s
//! `/metrics` every second with the API's bearer token, while a task added
//! over HTTP is worked on (bubblewrap, a real git repository, the model
//! replaced only by the replay provider) and merged. Then Prometheus' own
//! query API must show the figures the store recorded: one task merged, a
//! passed attempt, a work-stage duration, the worker's calls and exactly
//! the tokens metered — and every query of the shipped Grafana dashboard
//! must evaluate on it.
//!
//! Needs Debian's `prometheus` package (`.ci/run` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::serve::{free_port, Logged, Serve};
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN_VAR: &str = "ORCH_E2E_METRICS_TOKEN";

/// Fails with what to install when Prometheus is missing.
fn prometheus_binary() -> &'static str {
    let found = Command::new("prometheus")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "this test needs a real Prometheus: `apt-get install -y prometheus` (Debian's package; .ci/run installs it)"
    );
    "prometheus"
}

/// Starts Prometheus scraping `target`'s /metrics every second with the
/// bearer token in `token_file`; answers on the returned base URL.
async fn start_prometheus(dir: &Path, target: &str, token_file: &Path) -> (Logged, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: orch\n    metrics_path: /metrics\n    static_configs:\n      - targets: [\"{target}\"]\n    authorization:\n      type: Bearer\n      credentials_file: {}\n",
            token_file.display()
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(prometheus_binary());
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .current_dir(dir);
    let prom = Logged::spawn(cmd);
    let base = format!("http://{listen}");
    prom.wait_http_ok(&format!("{base}/-/ready")).await;
    (prom, base)
}

/// The value of an instant query that yields one series, or None when it
/// yields none; panics on a query error or several series.
async fn query(http: &reqwest::Client, prom: &str, q: &str) -> Option<f64> {
    let v = query_raw(http, prom, q).await;
    let result = v["data"]["result"].as_array().unwrap();
    assert!(result.len() <= 1, "{q} gave several series: {v}");
    result
        .first()
        .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
}

async fn query_raw(http: &reqwest::Client, prom: &str, q: &str) -> Value {
    let v: Value = http
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v
}

/// Waits until `q` has the value `want` in Prometheus.
async fn wait_query(http: &reqwest::Client, prom: &str, q: &str, want: f64, logs: &[&Logged]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = query(http, prom, q).await;
        if got == Some(want) {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = logs.iter().map(|p| p.log()).collect();
            panic!(
                "{q} = {got:?}, not {want}, after a minute:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The worker's (input, output) tokens as the store recorded them.
fn worker_tokens(fx: &Fixture) -> (f64, f64) {
    let cost: Value =
        serde_json::from_str(&fx.orch_ok(&["cost", "--project", "calc", "--json"], 0)).unwrap();
    let rows = cost["rows"].as_array().unwrap();
    let sum = |field: &str| -> f64 {
        rows.iter()
            .filter(|r| r["role"] == "worker")
            .map(|r| r[field].as_f64().unwrap())
            .sum()
    };
    (sum("input_tokens"), sum("output_tokens"))
}

/// Every query of the shipped dashboard, its variables filled in.
fn dashboard_queries() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/orch.json"
    );
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            out.push(
                expr.replace("$__rate_interval", "1m")
                    .replace("$project", ".*"),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_orch_serve_and_sees_a_merged_task() {
    prometheus_binary();
    let fx = Fixture::new();
    let fix = json!([
        {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
        {"name": "finish", "arguments": {"summary": "add returns the sum"}}
    ]);
    fx.with_replay(
        json!({"responses": [worker_call(None, fix), judge_pass()]}),
        "",
    );
    fx.append_config(&format!("[server]\ntoken_env = \"{TOKEN_VAR}\"\n"));
    let token = "metrics-e2e-token-4f1c9a";
    let token_file = fx.root().join("orch-token");
    std::fs::write(&token_file, token).unwrap();

    let serve = Serve::listening(&fx, &[(TOKEN_VAR, token)]);
    let http = reqwest::Client::new();
    let (listen, base) = (serve.listen(), serve.base_url());
    serve.wait_healthy().await;

    // The token guards /metrics like the API.
    let bare = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    let scraped = http
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let content_type = scraped.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = scraped.text().await.unwrap();
    assert!(text.contains("orch_tasks{"), "{text}");

    let prom_dir = fx.root().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let (prom, prom_url) = start_prometheus(&prom_dir, &listen, &token_file).await;
    wait_query(&http, &prom_url, "up{job=\"orch\"}", 1.0, &[&prom, &*serve]).await;

    let (status, task) = {
        let r = http
            .post(format!("{base}/api/v1/projects/calc/tasks"))
            .bearer_auth(token)
            .json(&json!({"title": "Fix add", "description": "add() subtracts"}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let shown: Value = http
            .get(format!("{base}/api/v1/tasks/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if shown["task"]["status"] == "merged" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task not merged in time: {}\n{}",
            shown["task"],
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A scrape after the merge, then the figures, from Prometheus.
    let logs = [&prom, &*serve];
    let merged = "orch_tasks_merged_total{project=\"calc\"}";
    wait_query(&http, &prom_url, merged, 1.0, &logs).await;
    wait_query(
        &http,
        &prom_url,
        "orch_tasks{project=\"calc\",status=\"merged\"}",
        1.0,
        &logs,
    )
    .await;
    let q = |s: &'static str| query(&http, &prom_url, s);
    assert_eq!(q("up{job=\"orch\"}").await, Some(1.0));
    assert_eq!(
        q("orch_tasks_created_total{project=\"calc\"}").await,
        Some(1.0)
    );
    assert_eq!(
        q("orch_merge_queue_depth{project=\"calc\"}").await,
        Some(0.0)
    );
    let passed = q("sum(orch_attempts_total{project=\"calc\",outcome=\"passed\"})").await;
    assert!(passed >= Some(1.0), "{passed:?}");
    let work = q("sum(orch_stage_duration_seconds_count{project=\"calc\",stage=\"work\"})").await;
    assert!(work >= Some(1.0), "{work:?}");
    let work_seconds =
        q("sum(orch_stage_duration_seconds_sum{project=\"calc\",stage=\"work\"})").await;
    assert!(work_seconds > Some(0.0), "{work_seconds:?}");
    let calls = q("sum(orch_model_calls_total{project=\"calc\",role=\"worker\"})").await;
    assert!(calls >= Some(1.0), "{calls:?}");
    let (input, output) = worker_tokens(&fx);
    assert!(input > 0.0 && output > 0.0, "{input} {output}");
    let tokens = |kind: &str| {
        format!("sum(orch_model_tokens_total{{project=\"calc\",role=\"worker\",kind=\"{kind}\"}})")
    };
    assert_eq!(query(&http, &prom_url, &tokens("input")).await, Some(input));
    assert_eq!(
        query(&http, &prom_url, &tokens("output")).await,
        Some(output)
    );
    let merged_batch = q("sum(orch_merge_batch_size_count{project=\"calc\"})").await;
    assert_eq!(merged_batch, Some(1.0));

    // Every query the Grafana dashboard makes is valid PromQL on this
    // Prometheus, and the throughput and queue panels have data.
    for expr in dashboard_queries() {
        query_raw(&http, &prom_url, &expr).await;
    }
    // The counter was scraped at 0 before the merge, so the merge is an
    // increase (the panel would miss a series that first appears at 1).
    let deadline = Instant::now() + Duration::from_secs(30);
    let throughput = "sum(increase(orch_tasks_merged_total{project=\"calc\"}[1h]))";
    while query(&http, &prom_url, throughput).await < Some(0.5) {
        assert!(
            Instant::now() < deadline,
            "the throughput panel shows no merge:\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Prometheus' own view of the target: healthy, scraped with the token.
    let targets: Value = http
        .get(format!("{prom_url}/api/v1/targets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let active = &targets["data"]["activeTargets"][0];
    assert_eq!(active["health"], "up", "{targets}");
    assert_eq!(active["lastError"], "", "{targets}");
    drop(prom);
}
