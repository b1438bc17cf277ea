//! End-to-end: the web dashboard of the real `orch serve`, driven in a real
//! headless Chromium over WebDriver (chromedriver + fantoccini), on a real
//! git repository with bubblewrap; the model is replaced only by the
//! replay provider. A task added from the form is watched reaching
//! `merged` on the page without a reload (the SSE-driven update writes
//! it); a task that asks a person is answered from its page; the plots
//! have their bars; a best-of-N task's page marks its candidates with
//! their rank and branch; screenshots go to `target/screenshots/`; with a token
//! the dashboard asks for it first, then works, and its forms refuse
//! requests without their CSRF token.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install -y
//! chromium chromium-driver`; CI's .ci/run installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::serve::{free_port, Serve};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A program on PATH (or at a usual place), else None.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Chromium and chromedriver, or a failure that says how to get them.
fn browser_programs() -> (PathBuf, PathBuf) {
    let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_program(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => panic!(
            "the dashboard test drives a real headless Chromium and needs both `chromium` ({}) and \
             `chromedriver` ({}): install them with `apt-get install -y chromium chromium-driver` \
             (CI's .ci/run does)",
            if c.is_some() { "found" } else { "missing" },
            if d.is_some() { "found" } else { "missing" },
        ),
    }
}

/// chromedriver on a free port, and a headless Chromium session through it.
struct Browser {
    driver: Child,
    client: Option<Client>,
}

impl Browser {
    async fn start() -> Browser {
        let (chromium, chromedriver) = browser_programs();
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let mut browser = Browser {
            driver,
            client: None,
        };
        let caps: Value = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1800",
                         "--hide-scrollbars", "--lang=en-US"],
            },
        });
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let attempt = ClientBuilder::new(connector)
                .capabilities(caps.as_object().unwrap().clone())
                .connect(&url)
                .await;
            match attempt {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver at {url}: {e}"),
            }
        };
        browser.client = Some(client);
        browser
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Runs `script` (a function body) in the page.
    async fn js(&self, script: &str) -> Value {
        self.c().execute(script, vec![]).await.unwrap()
    }

    async fn path(&self) -> String {
        let u = self.c().current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// Polls `script` until it returns `want` (a script that fails, as
    /// while a page is replaced, is tried again).
    async fn wait_for(&self, script: &str, want: &Value, within: Duration, serve: &Serve) {
        let deadline = Instant::now() + within;
        loop {
            let got = match self.c().execute(script, vec![]).await {
                Ok(v) => v,
                Err(e) => Value::String(format!("script error: {e}")),
            };
            if &got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page did not show {want} within {within:?} ({script} = {got})\nserve log:\n{}",
                serve.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls until the URL has `needle` (after a form's redirect) and that
    /// page has loaded.
    async fn wait_url(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let p = self.path().await;
            let ready = self
                .c()
                .execute("return document.readyState;", vec![])
                .await;
            if p.contains(needle) && matches!(ready, Ok(Value::String(r)) if r == "complete") {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "the browser is at {p}, not at {needle}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.c().find(Locator::Css(css)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.c().screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// JavaScript that reads a task's status from the overview's row for it.
fn overview_status(id: &str) -> String {
    format!(
        "var e = document.querySelector('#tasks tr[data-task=\"{id}\"] .status'); return e ? e.getAttribute('data-status') : null;"
    )
}

/// JavaScript that reads the task page's status badge.
const PAGE_STATUS: &str =
    "var e = document.querySelector('h1 .task-status .status'); return e ? e.getAttribute('data-status') : null;";

/// Marks the page; a reload would lose the mark.
const MARK: &str = "window.__orchNoReload = 'kept'; return true;";
const MARKED: &str = "return window.__orchNoReload || null;";

fn fix_calls() -> Value {
    json!([
        {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
        {"name": "finish", "arguments": {"summary": "add returns the sum"}}
    ])
}

/// After add() is fixed: a sub() beside it.
fn sub_calls() -> Value {
    let content = format!("{CALC_FIXED}\n\ndef sub(a, b):\n    return a - b\n");
    json!([
        {"name": "read_file", "arguments": {"path": "calc.py"}},
        {"name": "write_file", "arguments": {"path": "calc.py", "content": content}},
        {"name": "finish", "arguments": {"summary": "sub() added, as the person said"}}
    ])
}

/// A best-of-N candidate's one answer (picked by its model): mul() beside
/// add() and sub().
fn mul_answer(model: &str) -> Value {
    let content = format!(
        "{CALC_FIXED}\n\ndef sub(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b  # {model}\n"
    );
    json!({
        "model": model,
        "usage": {"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.01},
        "tool_calls": [
            {"name": "write_file", "arguments": {"path": "calc.py", "content": content}},
            {"name": "finish", "arguments": {"summary": format!("{model}: mul() added")}}
        ]
    })
}

/// Adds a task from the overview's form; returns its id.
async fn add_from_form(b: &Browser, serve: &Serve, title: &str, desc: &str) -> String {
    b.c().goto(&serve.url("/")).await.unwrap();
    b.fill("#f-title", title).await;
    b.fill("#f-description", desc).await;
    b.click("#add-task button[type=submit]").await;
    let p = b.wait_url("done=added").await;
    let id = p
        .split("task=")
        .nth(1)
        .unwrap()
        .split(['&', '#'])
        .next()
        .unwrap()
        .to_string();
    assert!(id.len() >= 8, "a task id in {p}");
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_adds_answers_and_plots_live_in_a_real_browser() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_call(Some("Answer: add sub()"), sub_calls()),
            worker_call(Some("Fix add from the dashboard"), fix_calls()),
            worker_call(Some("Ask a person first"), json!([
                {"name": "ask_human", "arguments": {"question": "Sum or difference?"}}
            ])),
            {"model": "judge", "when": "Rank these candidates", "json": {"order": [
                {"candidate": 2, "reason": "names its author"},
                {"candidate": 1, "reason": "the same, second"}
            ]}},
            judge_pass(),
            mul_answer("alpha"),
            mul_answer("beta"),
        ]}),
        "daily_budget_usd = 5.0\ncandidate_models = [\"replay:alpha\", \"replay:beta\"]",
    );
    fx.append_config(
        "[prices.worker]\ninput = 20.0\noutput = 40.0\n\n[prices.judge]\ninput = 5.0\noutput = 5.0\n",
    );
    let serve = Serve::ready(&fx, &[]).await;
    let b = Browser::start().await;

    // 1. The overview lists the project.
    b.c().goto(&serve.url("/")).await.unwrap();
    let listed = b
        .js("return Array.from(document.querySelectorAll('#projects article[data-project]')).map(a => a.getAttribute('data-project'));")
        .await;
    assert_eq!(listed, json!(["calc"]), "{}", b.c().source().await.unwrap());

    // 2. A task added from the form reaches `merged` on the page, written
    //    by the live update: the page is never reloaded.
    let a = add_from_form(&b, &serve, "Fix add from the dashboard", "add() subtracts").await;
    assert!(b.js(MARK).await.as_bool().unwrap());
    b.wait_for(
        &overview_status(&a),
        &json!("merged"),
        Duration::from_secs(120),
        &serve,
    )
    .await;
    assert_eq!(
        b.js(MARKED).await,
        json!("kept"),
        "the page was not reloaded"
    );
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());

    // 3. A task that asks a person: the question shows on the overview
    //    (live), its page has the answer form, and the answer sends it on
    //    to `merged`, again without a reload.
    let q = add_from_form(&b, &serve, "Ask a person first", "add sub(); ask which").await;
    b.wait_for(
        &format!("return !!document.querySelector('#needs-human li[data-task=\"{q}\"] a[href$=\"#answer\"]');"),
        &json!(true),
        Duration::from_secs(90),
        &serve,
    )
    .await;
    b.click(&format!(
        "#needs-human li[data-task=\"{q}\"] a[href$=\"#answer\"]"
    ))
    .await;
    b.wait_url(&format!("/tasks/{q}")).await;
    b.wait_for(
        "var q = document.querySelector('#question'); return q ? q.textContent : null;",
        &json!("Sum or difference?"),
        Duration::from_secs(10),
        &serve,
    )
    .await;
    b.fill("#f-answer", "add sub()").await;
    b.click("#answer button[type=submit]").await;
    b.wait_url("done=answered").await;
    assert!(b.js(MARK).await.as_bool().unwrap());
    b.wait_for(
        PAGE_STATUS,
        &json!("merged"),
        Duration::from_secs(120),
        &serve,
    )
    .await;
    assert_eq!(
        b.js(MARKED).await,
        json!("kept"),
        "the page was not reloaded"
    );
    assert!(fx.main_file("calc.py").contains("def sub(a, b)"));
    // The page shows both attempts, the diff and the transcript.
    let rows = b
        .js("return document.querySelectorAll('#attempt-table tbody tr').length;")
        .await;
    assert_eq!(rows, json!(2));
    let page = b
        .js("return document.querySelector('main').innerText;")
        .await;
    let page = page.as_str().unwrap();
    for needle in [
        "def sub(a, b)",
        "→ write_file",
        "← result of read_file",
        "sub() added",
        "Gates",
        "score 9.0 of 10",
    ] {
        assert!(
            page.contains(needle),
            "{needle:?} on the task page:\n{page}"
        );
    }
    let added_lines = b
        .js("return document.querySelectorAll('pre.diff .d-add').length;")
        .await;
    assert!(added_lines.as_u64().unwrap() >= 2, "{added_lines}");
    // Tall enough to show the diff and the transcript too.
    b.c().set_window_size(1400, 3400).await.unwrap();
    b.screenshot("task.png").await;
    b.c().set_window_size(1400, 1800).await.unwrap();

    // 3b. A best-of-N task (added through the API): its page, updated live,
    //     marks each candidate with its round, rank, the ranking's reason
    //     and its branch.
    let added: Value = reqwest::Client::new()
        .post(serve.url("/api/v1/projects/calc/tasks"))
        .json(&json!({"title": "Add mul", "description": "add mul(a, b)", "candidates": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let m = added["id"].as_str().unwrap().to_string();
    b.c()
        .goto(&serve.url(&format!("/tasks/{m}")))
        .await
        .unwrap();
    b.wait_for(
        PAGE_STATUS,
        &json!("merged"),
        Duration::from_secs(120),
        &serve,
    )
    .await;
    let kinds = b
        .js("return Array.from(document.querySelectorAll('#attempt-table td.kind')).map(td => td.innerText);")
        .await;
    let kinds: Vec<&str> = kinds
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    let of = |k: &str| *kinds.iter().find(|t| t.starts_with(k)).unwrap_or(&"");
    for (k, needles) in [
        ("c2", ["round 1", "ranked 1 (chosen)", "names its author"]),
        ("c1", ["round 1", "ranked 2", "the same, second"]),
    ] {
        let branch = format!("orch/{m}-{k}");
        for n in needles.into_iter().chain([branch.as_str()]) {
            assert!(of(k).contains(n), "{n:?} in {k}'s cell: {kinds:?}");
        }
    }
    assert!(
        fx.main_file("calc.py").contains("# beta"),
        "the winner landed"
    );

    // 4. The plots have their bars: spending and throughput.
    b.c().goto(&serve.url("/")).await.unwrap();
    for plot in [
        "plot-cost",
        "plot-throughput",
        "plot-stages",
        "plot-attempts",
    ] {
        let n = b
            .js(&format!(
                "return document.querySelectorAll('#{plot} svg rect.bar').length;"
            ))
            .await;
        assert!(n.as_u64().unwrap() >= 1, "{plot} has bars: {n}");
    }
    let merged_bars = b
        .js("return Array.from(document.querySelectorAll('#plot-throughput rect.bar title')).map(t => t.textContent);")
        .await;
    let total: u64 = merged_bars
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t.as_str()
                .unwrap()
                .rsplit(": ")
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 3, "three merges: {merged_bars}");

    // 5. Screenshots, for people (the README links the overview's).
    let shot = b.screenshot("overview.png").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_the_dashboard_asks_for_it_then_works() {
    let fx = Fixture::new();
    fx.with_replay(json!({"responses": [judge_pass()]}), "");
    fx.append_config("[server]\ntoken_env = \"ORCH_E2E_DASH_TOKEN\"\n");
    let token = "dash-token-5150";
    let serve = Serve::ready(&fx, &[("ORCH_E2E_DASH_TOKEN", token)]).await;
    let b = Browser::start().await;

    // The page asks for the token first.
    b.c().goto(&serve.url("/")).await.unwrap();
    assert_eq!(b.path().await, "/login?next=/");
    b.fill("#token", "not-the-token").await;
    b.click("form[action=\"/login\"] button[type=submit]").await;
    b.wait_for(
        "var e = document.querySelector('#login-error'); return e ? e.textContent.includes('not the server') : null;",
        &json!(true),
        Duration::from_secs(10),
        &serve,
    )
    .await;
    b.fill("#token", token).await;
    b.click("form[action=\"/login\"] button[type=submit]").await;
    b.wait_url("/").await;
    b.wait_for(
        "return !!document.querySelector('#projects article[data-project=\"calc\"]');",
        &json!(true),
        Duration::from_secs(10),
        &serve,
    )
    .await;
    // The cookie authenticates the page's event stream.
    b.wait_for(
        "return document.querySelector('#live-status').textContent;",
        &json!("Live: following events."),
        Duration::from_secs(20),
        &serve,
    )
    .await;
    // A form works (pause), and the page shows it, live too.
    b.click("article[data-project=\"calc\"] form[action$=\"/pause\"] button")
        .await;
    b.wait_url("done=paused").await;
    b.wait_for(
        "return !!document.querySelector('article[data-project=\"calc\"] .status-paused');",
        &json!(true),
        Duration::from_secs(10),
        &serve,
    )
    .await;
    let shown = fx.orch_ok(&["status", "--json"], 0);
    assert!(shown.contains("\"paused\": true"), "{shown}");

    // Outside the browser: the cookie alone reads, but does not write
    // through the API, and a form without its CSRF token is refused.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let hex: String = token.bytes().map(|c| format!("{c:02x}")).collect();
    let cookie = format!("orch_token={hex}");
    let r = http
        .get(serve.url("/api/v1/status"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(serve.url("/api/v1/projects/calc/resume"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the cookie is for reads only");
    let r = http
        .post(serve.url("/actions/projects/calc/resume"))
        .header("cookie", &cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(serve.url("/actions/projects/calc/resume"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no token cookie");
    let r = http.get(serve.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(fx
        .orch_ok(&["status", "--json"], 0)
        .contains("\"paused\": true"));
    // The dashboard's routes are not part of the API's description.
    let doc: Value = http
        .get(serve.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("/api/") || p.as_str() == "/healthz"),
        "{paths:?}"
    );
    b.close().await;
}
