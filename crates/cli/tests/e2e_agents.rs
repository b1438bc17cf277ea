//! End-to-end: agent CLIs as workers. Each installed CLI (Claude Code,
//! Codex, aider, mini-swe-agent; `scripts/install-agents.sh` puts them in
//! ~/.cache/orch-agents) runs for real, in the bwrap sandbox, in the task's
//! worktree, on the calc repository whose `add` subtracts. Only the model
//! is replaced: orch's configured provider is the replay script, and the
//! CLI reaches it through orch's metering proxy in its own wire format
//! (Anthropic Messages, OpenAI Responses, OpenAI Chat Completions), via the
//! relay on the sandbox's loopback. Checked for each CLI:
//! - the fix goes through commit → verify → judge → merge, its calls and
//!   cost are in `model_calls` with role `worker` (`orch cost --json`), its
//!   tool calls are events;
//! - a tiny `max_budget_per_task_usd` stops it: the task fails saying
//!   budget and never spends past it;
//! - `worker_timeout_seconds` and `orch cancel` kill its whole tree (no
//!   process of the run is left);
//! - a final `ORCH_ASK_HUMAN:` line puts the task in `needs_human`.
//!
//! And a task's own worker: in a project whose worker is the built-in one,
//! a task added with `--worker claude-code` is worked by Claude Code while
//! another task is worked by the built-in worker; a worker that is unknown
//! or not installed is refused when the task is added (exit 2).
//!
//! A CLI that is not installed is skipped with a note, except under CI,
//! where the test fails and says how to install it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use orch_testkit::procs::processes_matching;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The marker the scripted fix prints once the tests pass; the answer
/// after it matches on it.
const FIXED: &str = "ORCH-FIXED-MARK";
/// Price of the worker model: output only, $10 per million tokens.
const PRICES: &str = "[prices.worker]\ninput = 0.0\noutput = 10.0\n";
/// What each scripted worker reply reports: 1000 output tokens = $0.01.
const CALL_COST: f64 = 0.01;
/// A budget the first call fits under and the second does not (every
/// call is estimated at its 4096-token cap, $0.041, before it is sent).
const BUDGET: f64 = 0.045;

/// How to drive one CLI with scripted replies.
struct Agent {
    /// The `worker` value.
    name: &'static str,
    /// Its line in `scripts/install-agents.sh --print`.
    key: &'static str,
    /// How long its endless command sleeps: a number nothing else on the
    /// machine sleeps, so the process is found by it.
    sleep: u32,
}

/// Which scenario sleeps: the timeout and the cancel tests of one agent
/// may run at once, so each has its own number to be found by.
#[derive(Clone, Copy)]
enum Sleeper {
    Timeout = 0,
    Cancel = 1,
}

impl Agent {
    /// What finds `who`'s endless command in a process list.
    fn sleep_mark(&self, who: Sleeper) -> String {
        format!("time.sleep({})", self.sleep * 10 + who as u32)
    }

    /// A long sleep (Claude Code refuses a bare `sleep N`).
    fn sleep_command(&self, who: Sleeper) -> String {
        format!("python3 -c 'import time; {}'", self.sleep_mark(who))
    }
}

const CLAUDE_CODE: Agent = Agent {
    name: "claude-code",
    key: "ORCH_AGENT_CLAUDE_CODE",
    sleep: 314151,
};
const CODEX: Agent = Agent {
    name: "codex",
    key: "ORCH_AGENT_CODEX",
    sleep: 314152,
};
const AIDER: Agent = Agent {
    name: "aider",
    key: "ORCH_AGENT_AIDER",
    sleep: 314153,
};
const MINI: Agent = Agent {
    name: "mini-swe-agent",
    key: "ORCH_AGENT_MINI_SWE_AGENT",
    sleep: 314154,
};

fn usage() -> Value {
    json!({"input_tokens": 1000, "output_tokens": 1000})
}

fn reply(mut entry: Value) -> Value {
    entry["model"] = json!("worker");
    entry["usage"] = usage();
    entry
}

/// A call of the agent's shell tool running `command`.
fn shell(agent: &Agent, command: &str) -> Value {
    match agent.name {
        "claude-code" => json!({"name": "Bash", "arguments": {
            "command": command, "description": "run it", "timeout": 600000}}),
        "codex" => json!({"name": "exec_command", "arguments": {
            "cmd": command, "yield_time_ms": 600000}}),
        _ => json!({"name": "bash", "arguments": {"command": command}}),
    }
}

const SED: &str = "sed -i 's/a - b/a + b/' calc.py && python3 -m pytest -q";

/// aider's edit block for the fix.
fn aider_edit(search: &str) -> String {
    format!(
        "calc.py\n```python\n<<<<<<< SEARCH\n{search}\n=======\n    return a + b\n>>>>>>> REPLACE\n```\n\
         Fixed add() to return the sum."
    )
}

/// The replies that fix calc, and how many worker calls they take.
fn fix_script(agent: &Agent) -> (Vec<Value>, u64) {
    let fixed = format!("{SED} && echo {FIXED}");
    match agent.name {
        "aider" => (
            vec![reply(json!({"content": aider_edit("    return a - b")}))],
            1,
        ),
        "mini-swe-agent" => (
            vec![
                reply(
                    json!({"when": FIXED, "content": "Fixed add() to return a + b.",
                             "tool_calls": [shell(agent, "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")]}),
                ),
                reply(json!({"content": "Fix the sign in add().",
                             "tool_calls": [shell(agent, &fixed)]})),
            ],
            2,
        ),
        _ => (
            vec![
                reply(
                    json!({"when": FIXED, "content": "Fixed add() to return a + b; the tests pass."}),
                ),
                reply(json!({"tool_calls": [shell(agent, &fixed)]})),
            ],
            2,
        ),
    }
}

/// A first reply that costs $0.01 and makes the agent call again.
fn budget_script(agent: &Agent) -> Vec<Value> {
    match agent.name {
        // An edit that does not apply: aider sends the error back.
        "aider" => vec![reply(json!({"content": aider_edit("    return a ** b")}))],
        _ => vec![reply(json!({"content": "Checking first.",
                               "tool_calls": [shell(agent, "ls")]}))],
    }
}

/// Replies that keep the agent busy past any deadline.
fn endless_script(agent: &Agent, who: Sleeper) -> Vec<Value> {
    let mut entry = match agent.name {
        // aider runs no commands: its model never answers instead.
        "aider" => json!({"content": "thinking", "delay_ms": 600000}),
        _ => {
            json!({"content": "Waiting.", "tool_calls": [shell(agent, &agent.sleep_command(who))]})
        }
    };
    entry["times"] = json!(0);
    vec![reply(entry)]
}

/// A final answer that asks a person.
fn ask_script(agent: &Agent) -> Vec<Value> {
    let ask = "ORCH_ASK_HUMAN: Should add() saturate at the int limits?";
    match agent.name {
        "mini-swe-agent" => vec![reply(json!({"content": ask,
            "tool_calls": [shell(agent, "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")]}))],
        _ => vec![reply(json!({"content": ask}))],
    }
}

/// `scripts/install-agents.sh --print`, once: agent key → binary.
fn installed() -> &'static Vec<(String, String)> {
    static FOUND: OnceLock<Vec<(String, String)>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-agents.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg("--print")
            .output();
        let stdout = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// The agent's binary, or None (skip) when it is not installed here.
fn binary(agent: &Agent) -> Option<String> {
    let found = installed()
        .iter()
        .find(|(k, _)| k == agent.key)
        .map(|(_, v)| v.clone());
    if found.is_none() {
        let msg = format!(
            "the {} CLI is not installed: run scripts/install-agents.sh",
            agent.name
        );
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("skipped: {msg}");
    }
    found
}

/// At most this many agent runs at once: each agent CLI is a heavy
/// process tree, and on a 2-core machine twenty of them at once starve one
/// another past the deadlines the tests check.
const AT_ONCE: usize = 3;

/// A slot among [`AT_ONCE`], held for a test's whole run.
struct Slot;

static SLOTS: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

impl Slot {
    fn take() -> Slot {
        let (busy, freed) = &SLOTS;
        let mut n = busy.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= AT_ONCE {
            n = freed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (busy, freed) = &SLOTS;
        let mut n = busy.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        freed.notify_one();
    }
}

/// The calc repository with `agent` as its worker on `script`.
fn fixture(agent: &Agent, binary: &str, mut script: Vec<Value>, extra: &str) -> Fixture {
    let f = Fixture::new();
    script.push(judge_pass());
    f.with_replay(
        json!({ "responses": script }),
        &format!(
            "worker = \"{}\"\nmax_infra_failures = 1\n{extra}",
            agent.name
        ),
    );
    f.append_config(&format!(
        "[projects.agents.{}]\nbinary = \"{binary}\"\n\n{PRICES}",
        agent.name
    ));
    f
}

fn add_fix_task(f: &Fixture) -> String {
    f.add_task(
        "Fix add",
        "add() in calc.py subtracts; make test_calc.py::test_add pass",
    )
}

/// The worker role's row of `orch cost --json`.
fn worker_cost(f: &Fixture) -> Value {
    let cost: Value = serde_json::from_str(&f.orch_ok(&["cost", "--json"], 0)).unwrap();
    cost["by_role"]["worker"].clone()
}

/// Live processes of the run: sandboxed ones work in the fixture's
/// worktrees, bwrap names them on its command line, and the agent's
/// endless command has its own mark.
/// Processes of this fixture still alive: in its directories, or (for the
/// scenarios that sleep) its own endless command.
fn leftovers(root: &Path, agent: &Agent, sleeper: Option<Sleeper>) -> Vec<String> {
    let root = root.to_string_lossy().to_string();
    let marks = sleeper
        .map(|who| processes_matching(&agent.sleep_mark(who)))
        .unwrap_or_default();
    let mut found: Vec<String> = processes_matching(&root)
        .into_iter()
        .chain(marks)
        .map(|pid| format!("{pid}: {}", cmdline(pid)))
        .collect();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if cwd.starts_with(&root) && !zombie {
            found.push(format!("{pid} (in {}): {}", cwd.display(), cmdline(pid)));
        }
    }
    found
}

/// `leftovers`, asked again for up to 2 s while any are found: a process
/// orch killed can still be on its way out (not yet a zombie) the instant
/// orch exits; one that was missed lives on far longer than that.
fn settled_leftovers(root: &Path, agent: &Agent, sleeper: Option<Sleeper>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let found = leftovers(root, agent, sleeper);
        if found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live processes working in one of the fixture's worktrees.
fn in_worktrees(root: &Path) -> Vec<i32> {
    let worktrees = root.join(".orch/worktrees");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        if cwd.starts_with(&worktrees) {
            found.push(pid);
        }
    }
    found
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn fixes_calc(agent: &Agent) {
    let _slot = Slot::take();
    let Some(binary) = binary(agent) else { return };
    let (script, calls) = fix_script(agent);
    let f = fixture(agent, &binary, script, "");
    let id = add_fix_task(&f);
    let out = f.orch(&["run", "--project", "calc"]);
    let task = f.task(&id);
    assert_eq!(
        task["task"]["status"],
        "merged",
        "{}\nstderr:\n{}\ntask: {task:#}",
        agent.name,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    assert_eq!(f.main_file("calc.py"), CALC_FIXED.trim_end());
    assert!(f.main_is_green());

    let attempt = &task["attempts"][0];
    assert_eq!(attempt["turns"], calls, "{attempt:#}");
    assert!(!attempt["summary"].as_str().unwrap_or_default().is_empty());
    let worker = worker_cost(&f);
    assert_eq!(worker["calls"], calls, "{worker:#}");
    assert_eq!(worker["failed_calls"], 0);
    let cost = worker["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - calls as f64 * CALL_COST).abs() < 1e-9,
        "each call is priced: {cost}"
    );
    assert!((task["task"]["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-9);

    let events = f.events(&id);
    let started = events
        .iter()
        .find(|e| e["kind"] == "stage_started" && e["data"]["stage"] == "work")
        .unwrap();
    assert_eq!(started["data"]["worker"], agent.name);
    let tools: Vec<&Value> = events.iter().filter(|e| e["kind"] == "tool_call").collect();
    assert!(
        tools.iter().any(|e| e["data"]["ok"] == true),
        "the agent's tool calls are events: {tools:#?}"
    );
    let left = settled_leftovers(f.root(), agent, None);
    assert!(left.is_empty(), "{left:?}");
}

fn stops_at_the_budget(agent: &Agent) {
    let _slot = Slot::take();
    let Some(binary) = binary(agent) else { return };
    let f = fixture(
        agent,
        &binary,
        budget_script(agent),
        &format!("max_budget_per_task_usd = {BUDGET}"),
    );
    let id = add_fix_task(&f);
    let started = Instant::now();
    f.orch(&["run", "--project", "calc"]);
    let task = f.task(&id);
    assert_eq!(task["task"]["status"], "failed", "{task:#}");
    let reason = task["task"]["failure_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("budget"), "{reason}");
    let worker = worker_cost(&f);
    assert_eq!(
        worker["calls"], 1,
        "the second call was not sent: {worker:#}"
    );
    let spent = worker["cost_usd"].as_f64().unwrap();
    assert!(spent <= BUDGET, "spent {spent} of {BUDGET}");
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the refusal ended the run: {:?}",
        started.elapsed()
    );
    let left = settled_leftovers(f.root(), agent, None);
    assert!(left.is_empty(), "{left:?}");
}

fn timeout_kills_the_tree(agent: &Agent) {
    let _slot = Slot::take();
    let Some(binary) = binary(agent) else { return };
    let f = fixture(
        agent,
        &binary,
        endless_script(agent, Sleeper::Timeout),
        "worker_timeout_seconds = 20\nmax_attempts = 1",
    );
    let id = add_fix_task(&f);
    let started = Instant::now();
    f.orch(&["run", "--project", "calc"]);
    let took = started.elapsed();
    let task = f.task(&id);
    assert_eq!(task["task"]["status"], "failed", "{task:#}");
    let error = task["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("ran out of time"), "{error}");
    assert!(took < Duration::from_secs(90), "took {took:?}");
    if agent.name != "aider" {
        // The call that started the endless command was made and metered.
        assert!(worker_cost(&f)["calls"].as_u64().unwrap() >= 1);
    }
    assert!(
        leftovers(f.root(), agent, Some(Sleeper::Timeout)).is_empty(),
        "the deadline killed the whole tree: {:?}",
        leftovers(f.root(), agent, Some(Sleeper::Timeout))
    );
}

fn cancel_kills_the_tree(agent: &Agent) {
    let _slot = Slot::take();
    let Some(binary) = binary(agent) else { return };
    let f = fixture(
        agent,
        &binary,
        endless_script(agent, Sleeper::Cancel),
        "worker_timeout_seconds = 300",
    );
    let id = add_fix_task(&f);
    let mut run = f
        .orch_cmd(&["run", "--project", "calc"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the agent runs its endless command (aider: until it
    // waits on its model call).
    let started = Instant::now();
    let running = || match agent.name {
        "aider" => !in_worktrees(f.root()).is_empty(),
        _ => !processes_matching(&agent.sleep_mark(Sleeper::Cancel)).is_empty(),
    };
    while !running() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the agent never got going"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(if agent.name == "aider" {
        15
    } else {
        1
    }));
    assert!(!in_worktrees(f.root()).is_empty(), "the agent still runs");
    f.orch_ok(&["cancel", &id], 0);
    let cancelled = Instant::now();
    let status = run.wait().unwrap();
    assert!(status.success() || status.code() == Some(1), "{status:?}");
    assert!(
        cancelled.elapsed() < Duration::from_secs(30),
        "a cancel stops the run at once: {:?}",
        cancelled.elapsed()
    );
    let task = f.task(&id);
    assert_eq!(task["task"]["status"], "cancelled", "{task:#}");
    assert_eq!(task["attempts"][0]["status"], "cancelled");
    assert!(
        leftovers(f.root(), agent, Some(Sleeper::Cancel)).is_empty(),
        "the cancel killed the whole tree: {:?}",
        leftovers(f.root(), agent, Some(Sleeper::Cancel))
    );
}

fn asks_a_person(agent: &Agent) {
    let _slot = Slot::take();
    let Some(binary) = binary(agent) else { return };
    let f = fixture(agent, &binary, ask_script(agent), "");
    let id = add_fix_task(&f);
    f.orch(&["run", "--project", "calc"]);
    let task = f.task(&id);
    assert_eq!(task["task"]["status"], "needs_human", "{task:#}");
    assert_eq!(
        task["task"]["question"],
        "Should add() saturate at the int limits?"
    );
}

#[test]
fn claude_code_fixes_calc_behind_the_proxy() {
    fixes_calc(&CLAUDE_CODE);
}

#[test]
fn claude_code_stops_at_the_task_budget() {
    stops_at_the_budget(&CLAUDE_CODE);
}

#[test]
fn claude_code_timeout_kills_its_tree() {
    timeout_kills_the_tree(&CLAUDE_CODE);
}

#[test]
fn claude_code_cancel_kills_its_tree() {
    cancel_kills_the_tree(&CLAUDE_CODE);
}

#[test]
fn claude_code_asks_a_person() {
    asks_a_person(&CLAUDE_CODE);
}

#[test]
fn codex_fixes_calc_behind_the_proxy() {
    fixes_calc(&CODEX);
}

#[test]
fn codex_stops_at_the_task_budget() {
    stops_at_the_budget(&CODEX);
}

#[test]
fn codex_timeout_kills_its_tree() {
    timeout_kills_the_tree(&CODEX);
}

#[test]
fn codex_cancel_kills_its_tree() {
    cancel_kills_the_tree(&CODEX);
}

#[test]
fn codex_asks_a_person() {
    asks_a_person(&CODEX);
}

#[test]
fn aider_fixes_calc_behind_the_proxy() {
    fixes_calc(&AIDER);
}

#[test]
fn aider_stops_at_the_task_budget() {
    stops_at_the_budget(&AIDER);
}

#[test]
fn aider_timeout_kills_its_tree() {
    timeout_kills_the_tree(&AIDER);
}

#[test]
fn aider_cancel_kills_its_tree() {
    cancel_kills_the_tree(&AIDER);
}

#[test]
fn aider_asks_a_person() {
    asks_a_person(&AIDER);
}

#[test]
fn mini_swe_agent_fixes_calc_behind_the_proxy() {
    fixes_calc(&MINI);
}

#[test]
fn mini_swe_agent_stops_at_the_task_budget() {
    stops_at_the_budget(&MINI);
}

#[test]
fn mini_swe_agent_timeout_kills_its_tree() {
    timeout_kills_the_tree(&MINI);
}

#[test]
fn mini_swe_agent_cancel_kills_its_tree() {
    cancel_kills_the_tree(&MINI);
}

#[test]
fn mini_swe_agent_asks_a_person() {
    asks_a_person(&MINI);
}

/// In the agent's task description: its replies answer only its requests.
const AGENT_TASK: &str = "AGENT-TASK-MARK";
/// In the other task's description, for the built-in worker's reply.
const BUILTIN_TASK: &str = "BUILTIN-TASK-MARK";

/// The work stage's `stage_started` event of task `id`.
fn work_started(f: &Fixture, id: &str) -> Value {
    f.events(id)
        .into_iter()
        .find(|e| e["kind"] == "stage_started" && e["data"]["stage"] == "work")
        .unwrap_or_else(|| panic!("no work stage for {id}"))
}

/// A project whose worker is the built-in one: one task names `agent`
/// with `--worker`, the other names none; both run at once and merge,
/// each worked by its own worker.
fn a_task_picks_its_own_worker(agent: &Agent) {
    let _slot = Slot::take();
    let Some(binary) = binary(agent) else { return };
    let (agent_replies, calls) = fix_script(agent);
    let mut script: Vec<Value> = agent_replies
        .into_iter()
        .map(|mut e| {
            if e.get("when").is_none() {
                e["when"] = json!(AGENT_TASK);
            }
            e
        })
        .collect();
    script.push(reply(json!({"when": BUILTIN_TASK, "tool_calls": [
        {"name": "write_file", "arguments": {"path": "NOTES.md", "content": "add() returns the sum.\n"}},
        {"name": "finish", "arguments": {"summary": "wrote NOTES.md"}}
    ]})));
    script.push(judge_pass());
    let f = Fixture::new();
    f.with_replay(
        json!({ "responses": script }),
        "worker = \"builtin\"\nmax_workers = 2\nmax_infra_failures = 1",
    );
    f.append_config(&format!(
        "[projects.agents.{}]\nbinary = \"{binary}\"\n\n{PRICES}",
        agent.name
    ));
    let added = f.orch_ok(
        &[
            "add-task",
            "--project",
            "calc",
            "--title",
            "Fix add",
            "--desc",
            &format!("add() in calc.py subtracts; make test_calc.py::test_add pass ({AGENT_TASK})"),
            "--worker",
            agent.name,
        ],
        0,
    );
    assert!(
        added.contains(&format!("  worker: {}", agent.name)),
        "{added}"
    );
    let by_agent = added.split_whitespace().nth(2).unwrap().to_string();
    let by_builtin = f.add_task(
        "Write the notes",
        &format!("Write NOTES.md saying what add() does ({BUILTIN_TASK})"),
    );
    let out = f.orch(&["run", "--project", "calc"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for id in [&by_agent, &by_builtin] {
        let task = f.task(id);
        assert_eq!(task["task"]["status"], "merged", "{stderr}\ntask: {task:#}");
    }
    assert_eq!(f.main_file("calc.py"), CALC_FIXED.trim_end());
    assert_eq!(f.main_file("NOTES.md"), "add() returns the sum.");

    // Each worked by its own worker, as the events and documents say.
    assert_eq!(work_started(&f, &by_agent)["data"]["worker"], agent.name);
    assert_eq!(work_started(&f, &by_builtin)["data"]["worker"], "builtin");
    let agent_task = f.task(&by_agent);
    assert_eq!(agent_task["task"]["worker"], agent.name);
    assert_eq!(agent_task["attempts"][0]["turns"], calls);
    assert_eq!(f.task(&by_builtin)["task"]["worker"], Value::Null);
    let shown = f.orch_ok(&["show", &by_agent], 0);
    assert!(
        shown.contains(&format!("  worker: {} (the task's own", agent.name)),
        "{shown}"
    );
    // The agent's calls went through the proxy, the built-in one's direct:
    // all metered under role `worker`.
    assert_eq!(worker_cost(&f)["calls"], calls + 1);
}

#[test]
fn a_task_s_own_worker_does_its_work_beside_the_builtin() {
    a_task_picks_its_own_worker(&CLAUDE_CODE);
}

/// Refused when the task is added, whatever installs: an unknown worker,
/// and one whose CLI is not there (as the project's own would be refused
/// when the engine starts). Nothing is written. A CLI that goes away
/// after the task was added fails it as infrastructure, saying so.
#[test]
fn an_unknown_or_missing_task_worker_is_refused_with_exit_2() {
    let f = Fixture::new();
    f.with_replay(
        json!({ "responses": [judge_pass()] }),
        "max_infra_failures = 1",
    );
    f.append_config(
        "[projects.agents.codex]\nbinary = \"no/such/codex\"\n\n\
         [projects.agents.aider]\nbinary = \"./fake-aider\"\n",
    );
    let add = |extra: &[&str]| {
        let mut args = vec!["add-task", "--project", "calc"];
        args.extend_from_slice(extra);
        let out = f.orch(&args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = add(&["--title", "x", "--worker", "cursor"]);
    assert!(
        err.contains("--worker: unknown worker `cursor`")
            && err.contains("builtin, claude-code, codex, aider, mini-swe-agent"),
        "{err}"
    );
    let err = add(&["--title", "x", "--worker", "codex"]);
    assert!(
        err.contains("--worker: worker = \"codex\"")
            && err.contains("no/such/codex")
            && err.contains("scripts/install-agents.sh")
            && err.contains("nothing was written"),
        "{err}"
    );
    std::fs::write(f.root().join("task.yaml"), "title: x\nworker: cursor\n").unwrap();
    let err = add(&["--file", "task.yaml"]);
    assert!(err.contains("`worker`: unknown variant `cursor`"), "{err}");
    std::fs::write(f.root().join("task.yaml"), "title: x\nworker: codex\n").unwrap();
    let err = add(&["--file", "task.yaml"]);
    assert!(
        err.contains("task file task.yaml: `worker`") && err.contains("no/such/codex"),
        "{err}"
    );
    std::fs::write(f.root().join("m1.md"), "## Task 1: a\nWorker: codex\n").unwrap();
    let out = f.orch(&["plan", "import", "m1.md", "--project", "calc"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1: task 1's worker") && err.contains("no/such/codex"),
        "{err}"
    );
    let tasks = f.orch_ok(&["tasks", "--project", "calc", "--json"], 0);
    assert_eq!(tasks.trim(), "[]", "nothing was written");

    // Installed when the task is added, gone when it is worked.
    let fake = f.root().join("fake-aider");
    std::fs::write(&fake, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = f.orch_ok(
        &[
            "add-task",
            "--project",
            "calc",
            "--title",
            "x",
            "--worker",
            "aider",
            "--json",
        ],
        0,
    );
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(&fake).unwrap();
    f.orch(&["run", "--project", "calc"]);
    let task = f.task(&id);
    assert_eq!(task["task"]["status"], "failed", "{task:#}");
    let reason = task["task"]["failure_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("infrastructure")
            && reason.contains("the task's `worker`: worker = \"aider\"")
            && reason.contains("scripts/install-agents.sh"),
        "{reason}"
    );
    assert_eq!(task["attempts"][0]["status"], "error", "{task:#}");
}
