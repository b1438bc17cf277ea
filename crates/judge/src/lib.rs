//! The judge: decides whether an attempt's change should be merged.
//!
//! Deterministic gates come first (non-empty diff, setup/format/lint, no new
//! test failures, verification passed). If any gate fails the model is not
//! called at all, so a model can never overrule a failed gate. When every
//! gate passes and a judge model is configured, the model scores the change
//! against a rubric through structured output (`verdict` schema), with one
//! repair round for an unreadable answer. A readable verdict that
//! contradicts itself (passed with a score under the minimum, failed with no
//! issues, no reasoning) gets one more round that names the contradiction;
//! if it still contradicts itself the verdict fails closed, saying why, so a
//! blank or self-refuting verdict never passes work or leaves the next
//! attempt without feedback.

mod answer;
mod prompt;
pub mod ranking;
mod render;

pub use answer::{parse_answer, ModelAnswer};
pub use prompt::{system_prompt, user_message};
pub use ranking::{rank, RankCandidate, RankMethod, Ranked, Ranking};
pub use render::render_markdown;

use orch_core::{GateResult, StepKind, StepResult, Task, Usage, Verdict, VerificationReport};
use orch_providers::structured::{structured, StructuredError};
use orch_providers::{ChatRequest, Message, Provider, ProviderError, ResponseFormat};
use orch_verify::{classify_tests, counts_text, TestOutcome};
use serde_json::json;

/// Bytes of an unreadable judge answer kept in the verdict's issue.
const RAW_ANSWER_CAP: usize = 2000;
/// Test names listed in a gate's detail before "and N more".
const MAX_LISTED: usize = 20;
/// Bounds of the `verdict` schema, so a local model cannot ramble until its
/// context runs out.
pub const MAX_REASONING_CHARS: u64 = 4000;
pub const MAX_ISSUES: u64 = 20;
pub const MAX_ISSUE_CHARS: u64 = 500;

/// Everything the judge looks at.
#[derive(Debug, Clone, Copy)]
pub struct JudgeInput<'a> {
    pub task: &'a Task,
    /// The attempt's diff against its base commit, already capped.
    pub diff: &'a str,
    pub diff_stat: &'a str,
    pub report: &'a VerificationReport,
}

#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// The judge model could not be asked at all.
    #[error("judge model call failed: {0}")]
    Provider(#[from] ProviderError),
}

/// The deterministic gates, in a fixed order: `non_empty_diff`, then
/// `setup`/`format`/`lint` for the steps that ran, `tests`, `verification`.
pub fn gates(report: &VerificationReport) -> Vec<GateResult> {
    let mut gates = vec![if report.empty_diff {
        gate("non_empty_diff", false, "the attempt changed no files")
    } else {
        gate("non_empty_diff", true, "the attempt changed files")
    }];
    for step in report.steps.iter().filter(|s| s.kind != StepKind::Test) {
        let detail = if step.succeeded() {
            format!("`{}` succeeded", step.command)
        } else {
            format!("`{}` {}", step.command, how_it_ended(step))
        };
        gates.push(gate(step.kind.as_str(), step.succeeded(), &detail));
    }
    gates.push(tests_gate(report));
    gates.push(gate("verification", report.passed, &report.summary));
    gates
}

fn tests_gate(report: &VerificationReport) -> GateResult {
    let test = report.steps.iter().find(|s| s.kind == StepKind::Test);
    let setup_failed = report
        .steps
        .iter()
        .any(|s| s.kind == StepKind::Setup && !s.succeeded());
    if test.is_none() && setup_failed {
        return gate("tests", false, "not run because the setup step failed");
    }
    let outcome = classify_tests(test, Some(&report.preexisting_failures));
    let detail = match (&outcome, test) {
        (TestOutcome::NotConfigured, _) | (_, None) => "no test command configured".to_string(),
        (TestOutcome::Passed, Some(t)) => match &t.counts {
            Some(c) => format!("`{}` passed: {}", t.command, counts_text(c)),
            None => format!("`{}` passed", t.command),
        },
        (TestOutcome::TimedOut, Some(t)) => format!("`{}` {}", t.command, how_it_ended(t)),
        (TestOutcome::OnlyPreexisting { preexisting }, Some(_)) => format!(
            "no new failures; only tests that already fail on the base commit: {}",
            list(preexisting)
        ),
        (TestOutcome::NewFailures { new, .. }, Some(_)) => {
            format!("new failing tests: {}", list(new))
        }
        (TestOutcome::Unattributable { reason }, Some(t)) => format!(
            "`{}` {} and {reason}; the failures could not be told apart from pre-existing ones",
            t.command,
            how_it_ended(t)
        ),
    };
    gate("tests", outcome.accepted(), &detail)
}

/// Names joined with commas, at most `MAX_LISTED` of them.
fn list(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_LISTED {
        s.push_str(&format!(" and {} more", names.len() - MAX_LISTED));
    }
    s
}

fn gate(name: &str, passed: bool, detail: &str) -> GateResult {
    GateResult {
        name: name.to_string(),
        passed,
        detail: detail.to_string(),
    }
}

fn how_it_ended(step: &StepResult) -> String {
    if step.timed_out {
        format!("timed out after {}s", step.duration_ms.div_ceil(1000))
    } else {
        match step.exit_code {
            Some(code) => format!("exited with code {code}"),
            None => "was killed by a signal".to_string(),
        }
    }
}

/// JSON schema of the model's answer, used as the `verdict` response format.
pub fn verdict_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "passed": {
                "type": "boolean",
                "description": "true only if the change should be merged as it is"
            },
            "score": {
                "type": "number",
                "minimum": 0,
                "maximum": 10,
                "description": "overall quality, 0 (wrong or harmful) to 10 (exactly what was asked, clean)"
            },
            "reasoning": {
                "type": "string",
                "maxLength": MAX_REASONING_CHARS,
                "description": "a short paragraph explaining the decision"
            },
            "issues": {
                "type": "array",
                "maxItems": MAX_ISSUES,
                "items": { "type": "string", "maxLength": MAX_ISSUE_CHARS },
                "description": "concrete problems to fix; empty when there are none"
            }
        },
        "required": ["passed", "score", "reasoning", "issues"],
        "additionalProperties": false
    })
}

/// Judges an attempt. Gates first; the model (when given) only when every
/// gate passed. `passed` = model passed and score ≥ `min_score`. Usage is
/// summed over the model calls (zero when the model was not called).
pub async fn judge(
    provider: Option<(&dyn Provider, &str)>,
    input: &JudgeInput<'_>,
    min_score: f64,
) -> Result<(Verdict, Usage), JudgeError> {
    let gates = gates(input.report);
    let failed: Vec<&GateResult> = gates.iter().filter(|g| !g.passed).collect();
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|g| g.name.as_str()).collect();
        let issues = failed
            .iter()
            .map(|g| format!("{}: {}", g.name, g.detail))
            .collect();
        let verdict = Verdict {
            passed: false,
            score: None,
            reasoning: format!(
                "deterministic gates failed ({}); the judge model was not consulted",
                names.join(", ")
            ),
            issues,
            gates,
        };
        return Ok((verdict, Usage::default()));
    }
    let Some((provider, model)) = provider else {
        let verdict = Verdict {
            passed: true,
            score: None,
            reasoning: "no judge model configured; deterministic gates only".to_string(),
            issues: Vec::new(),
            gates,
        };
        return Ok((verdict, Usage::default()));
    };

    let mut request = ChatRequest::new(
        model,
        vec![
            Message::system(system_prompt()),
            Message::user(user_message(input)),
        ],
    );
    request.response_format = Some(ResponseFormat {
        name: "verdict".to_string(),
        schema: verdict_schema(),
    });
    let (first, mut usage) = ask(provider, request.clone()).await?;
    let verdict = match first {
        Err((error, raw)) => unreadable(&error, &raw, gates),
        Ok((first, text)) => {
            let problems = contradictions(&first, min_score);
            if problems.is_empty() {
                consistent(first, gates)
            } else {
                tracing::info!(
                    problems = %problems.join("; "),
                    "judge verdict contradicts itself; one repair round"
                );
                let mut repair = request;
                repair.messages.push(Message::assistant(text));
                repair
                    .messages
                    .push(Message::user(contradiction_prompt(&problems)));
                let (second, more) = ask(provider, repair).await?;
                usage += more;
                match second {
                    Ok((second, _)) => {
                        let again = contradictions(&second, min_score);
                        if again.is_empty() {
                            consistent(second, gates)
                        } else {
                            contradicted(&second, &again, None, gates)
                        }
                    }
                    Err((error, _)) => contradicted(&first, &problems, Some(&error), gates),
                }
            }
        }
    };
    Ok((verdict, usage))
}

/// A readable answer with its JSON text, or why it is unreadable with the
/// raw text.
type Asked = Result<(ModelAnswer, String), (String, String)>;

/// One question through the shared structured-output layer: native schema
/// where the API has it, else the schema in the prompt; validation; one
/// repair round for an answer that does not match the schema.
async fn ask(provider: &dyn Provider, request: ChatRequest) -> Result<(Asked, Usage), JudgeError> {
    match structured(provider, request).await {
        Ok((value, _, usage)) => {
            let text = value.to_string();
            let answer = parse_answer(&text).map_err(|e| (e, text.clone()));
            Ok((answer.map(|a| (a, text)), usage))
        }
        Err(StructuredError::Invalid {
            problems,
            raw,
            usage,
            ..
        }) => Ok((Err((problems.join("; "), raw)), usage)),
        Err(StructuredError::Provider { source, .. }) => Err(JudgeError::Provider(source)),
        Err(e @ StructuredError::MissingFormat) => Err(JudgeError::Provider(
            orch_providers::ProviderError::Config(e.to_string()),
        )),
    }
}

/// How a readable verdict contradicts itself, each in words meant for the
/// model; empty when it is consistent. Blank issues do not count as issues.
pub fn contradictions(a: &ModelAnswer, min_score: f64) -> Vec<String> {
    let mut out = Vec::new();
    if a.passed && a.score < min_score {
        out.push(format!(
            "`passed` is true but `score` {} is below the minimum passing score of {}: raise the \
             score if the change should be merged as it is, otherwise set `passed` to false and \
             list the issues",
            a.score, min_score
        ));
    }
    if !a.passed && a.issues.iter().all(|i| i.trim().is_empty()) {
        out.push(
            "`passed` is false but `issues` is empty: list the concrete problems that stop the \
             merge (file, what is wrong, what to do instead), or set `passed` to true if there \
             are none"
                .to_string(),
        );
    }
    if a.reasoning.trim().is_empty() {
        out.push("`reasoning` is empty: explain the decision in a short paragraph".to_string());
    }
    out
}

fn contradiction_prompt(problems: &[String]) -> String {
    format!(
        "Your verdict contradicts itself: {}. Answer again with only the corrected `verdict` \
         JSON, no prose and no code fence.",
        problems.join("; ")
    )
}

/// The verdict of a consistent answer.
fn consistent(a: ModelAnswer, gates: Vec<GateResult>) -> Verdict {
    Verdict {
        passed: a.passed,
        score: Some(a.score),
        reasoning: a.reasoning,
        issues: a
            .issues
            .into_iter()
            .filter(|i| !i.trim().is_empty())
            .collect(),
        gates,
    }
}

/// Fails closed on a verdict still contradicting itself after the repair
/// round, keeping whatever the model did say as feedback.
fn contradicted(
    a: &ModelAnswer,
    problems: &[String],
    repair_error: Option<&str>,
    gates: Vec<GateResult>,
) -> Verdict {
    let mut how = problems.join("; ");
    if let Some(error) = repair_error {
        how.push_str(&format!(
            "; the answer to the repair request was unreadable ({error})"
        ));
    }
    let said = if a.reasoning.trim().is_empty() {
        "The model gave no reasoning.".to_string()
    } else {
        format!("The model's reasoning: {}", a.reasoning.trim())
    };
    let mut issues = vec![format!(
        "the judge's verdict contradicted itself even after one repair round (passed: {}, \
         score: {}): {how}",
        a.passed, a.score
    )];
    issues.extend(a.issues.iter().filter(|i| !i.trim().is_empty()).cloned());
    Verdict {
        passed: false,
        score: None,
        reasoning: format!(
            "The judge's verdict contradicted itself even after one repair round, so orch \
             failed it closed: {how}. {said}"
        ),
        issues,
        gates,
    }
}

fn unreadable(error: &str, raw: &str, gates: Vec<GateResult>) -> Verdict {
    Verdict {
        passed: false,
        score: None,
        reasoning: "the judge model's answer could not be read, even after one repair round"
            .to_string(),
        issues: vec![format!(
            "the judge's output was unreadable ({error}); raw output: {}",
            cap(raw, RAW_ANSWER_CAP)
        )],
        gates,
    }
}

/// The first `max` bytes of `s` (at a char boundary), marked when cut.
pub(crate) fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}[… {} more bytes]", &s[..end], s.len() - end)
}

/// Wraps text in a code fence longer than any backtick run inside it.
pub(crate) fn fenced(info: &str, text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let body = text.trim_end_matches('\n');
    format!("{fence}{info}\n{body}\n{fence}")
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use orch_providers::{ChatRequest, Role};
    use orch_testkit::scripted::{answer, ScriptedProvider};

    #[test]
    fn gates_cover_present_steps_in_order() {
        let report = report_with(
            vec![
                step(StepKind::Setup, 0),
                step(StepKind::Lint, 0),
                test_step(0, "3 passed in 0.1s\n"),
            ],
            true,
            "Verification passed.",
        );
        let names: Vec<_> = gates(&report).into_iter().map(|g| g.name).collect();
        assert_eq!(
            names,
            vec!["non_empty_diff", "setup", "lint", "tests", "verification"]
        );
        assert!(gates(&report).iter().all(|g| g.passed));
    }

    #[test]
    fn tests_gate_accepts_only_preexisting_failures() {
        let out =
            "=========================== short test summary info ============================\n\
                   FAILED t.py::test_old - x\n1 failed, 2 passed in 0.1s\n";
        let mut report = report_with(vec![test_step(1, out)], true, "Verification passed.");
        report.preexisting_failures = vec!["t.py::test_old".into()];
        let g = gates(&report)
            .into_iter()
            .find(|g| g.name == "tests")
            .unwrap();
        assert!(g.passed, "{}", g.detail);
        assert!(g.detail.contains("t.py::test_old"), "{}", g.detail);

        report.preexisting_failures.clear();
        report.new_failures = vec!["t.py::test_old".into()];
        let g = gates(&report)
            .into_iter()
            .find(|g| g.name == "tests")
            .unwrap();
        assert!(!g.passed);
        assert_eq!(g.detail, "new failing tests: t.py::test_old");
    }

    #[test]
    fn schema_is_strict() {
        let s = verdict_schema();
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(
            s["required"],
            json!(["passed", "score", "reasoning", "issues"])
        );
        assert_eq!(s["properties"]["score"]["minimum"], 0);
        assert_eq!(s["properties"]["score"]["maximum"], 10);
        assert_eq!(s["properties"]["issues"]["items"]["type"], "string");
        assert_eq!(s["properties"]["issues"]["items"]["maxLength"], 500);
        assert_eq!(s["properties"]["issues"]["maxItems"], 20);
        assert_eq!(s["properties"]["reasoning"]["maxLength"], 4000);
    }

    #[tokio::test]
    async fn failed_gate_never_calls_the_model() {
        let task = task();
        let report = report_with(
            vec![step(StepKind::Lint, 2), test_step(0, "3 passed in 0.1s\n")],
            false,
            "Verification failed. The lint step (`lint`) exited with code 2.",
        );
        let input = JudgeInput {
            task: &task,
            diff: "diff",
            diff_stat: "1 file",
            report: &report,
        };
        let provider = ScriptedProvider::new(vec![answer(
            r#"{"passed":true,"score":10,"reasoning":"great","issues":[]}"#,
        )]);
        let (v, usage) = judge(Some((&provider, "m")), &input, 5.0).await.unwrap();
        assert!(!v.passed);
        assert_eq!(v.score, None);
        assert_eq!(provider.requests().len(), 0, "the model must not be asked");
        assert_eq!(usage, Usage::default());
        assert!(
            v.issues
                .iter()
                .any(|i| i.starts_with("lint: `lint` exited with code 2")),
            "{:?}",
            v.issues
        );
        assert!(
            v.issues.iter().any(|i| i.starts_with("verification: ")),
            "{:?}",
            v.issues
        );
        assert!(v.reasoning.contains("lint"), "{}", v.reasoning);
    }

    #[tokio::test]
    async fn empty_diff_fails_the_first_gate() {
        let task = task();
        let mut report = report_with(vec![], false, "the attempt changed no files");
        report.empty_diff = true;
        let input = JudgeInput {
            task: &task,
            diff: "",
            diff_stat: "",
            report: &report,
        };
        let (v, _) = judge(None, &input, 5.0).await.unwrap();
        assert!(!v.passed);
        assert_eq!(v.gates[0].name, "non_empty_diff");
        assert!(!v.gates[0].passed);
        assert!(v.issues[0].contains("changed no files"));
    }

    #[tokio::test]
    async fn no_provider_means_gates_only() {
        let task = task();
        let report = green_report();
        let input = JudgeInput {
            task: &task,
            diff: "d",
            diff_stat: "s",
            report: &report,
        };
        let (v, usage) = judge(None, &input, 5.0).await.unwrap();
        assert!(v.passed);
        assert_eq!(v.score, None);
        assert_eq!(
            v.reasoning,
            "no judge model configured; deterministic gates only"
        );
        assert_eq!(usage.total_tokens(), 0);
    }

    #[tokio::test]
    async fn model_is_asked_with_schema_rubric_and_context() {
        let task = task();
        let report = green_report();
        let input = JudgeInput {
            task: &task,
            diff: "+fn add() {}",
            diff_stat: " src/lib.rs | 1 +",
            report: &report,
        };
        let provider = ScriptedProvider::new(vec![answer("```json\n{\"passed\":true,\"score\":8.5,\"reasoning\":\"does it\",\"issues\":[\"nit: naming\"]}\n```")]);
        let (v, usage) = judge(Some((&provider, "judge-model")), &input, 7.0)
            .await
            .unwrap();
        assert!(v.passed);
        assert_eq!(v.score, Some(8.5));
        assert_eq!(v.reasoning, "does it");
        assert_eq!(v.issues, vec!["nit: naming"]);
        assert_eq!(usage.input_tokens, 100);

        let reqs = provider.requests();
        assert_eq!(reqs.len(), 1);
        let req = &reqs[0];
        assert_eq!(req.model, "judge-model");
        let rf = req.response_format.as_ref().unwrap();
        assert_eq!(rf.name, "verdict");
        assert_eq!(rf.schema, verdict_schema());
        assert_eq!(req.messages[0].role, Role::System);
        let system = &req.messages[0].content;
        assert!(system.contains("unrelated"), "{system}");
        assert!(system.contains("hard-coded"), "{system}");
        let user = &req.messages[1].content;
        assert!(user.contains(&task.title), "{user}");
        assert!(user.contains(&task.description), "{user}");
        assert!(user.contains(" src/lib.rs | 1 +"), "{user}");
        assert!(user.contains("+fn add() {}"), "{user}");
        assert!(user.contains(&report.summary), "{user}");
    }

    /// Runs the judge over a green report with scripted answers.
    async fn judged(answers: &[&str], min_score: f64) -> (Verdict, Usage, Vec<ChatRequest>) {
        let task = task();
        let report = green_report();
        let input = JudgeInput {
            task: &task,
            diff: "d",
            diff_stat: "s",
            report: &report,
        };
        let provider = ScriptedProvider::new(answers.iter().map(|a| answer(a)).collect());
        let (v, usage) = judge(Some((&provider, "m")), &input, min_score)
            .await
            .unwrap();
        (v, usage, provider.requests())
    }

    fn repair_message(req: &ChatRequest) -> &str {
        let last = req.messages.last().unwrap();
        assert_eq!(last.role, Role::User);
        &last.content
    }

    #[tokio::test]
    async fn a_pass_under_the_minimum_score_is_repaired_then_fails_closed() {
        let low = r#"{"passed":true,"score":6,"reasoning":"meh","issues":[]}"#;
        let (v, usage, reqs) = judged(&[low, low], 7.0).await;
        assert!(!v.passed);
        assert_eq!(v.score, None);
        assert_eq!(reqs.len(), 2, "exactly one repair round");
        assert_eq!(usage.input_tokens, 200, "both calls are charged");
        let repair = repair_message(&reqs[1]);
        assert!(
            repair.starts_with("Your verdict contradicts itself: `passed` is true but `score` 6"),
            "{repair}"
        );
        assert!(
            repair.contains("below the minimum passing score of 7"),
            "{repair}"
        );
        // The contradictory answer is quoted back as the assistant's turn.
        assert_eq!(reqs[1].messages[2].role, Role::Assistant);
        assert!(reqs[1].messages[2].content.contains("\"score\":6"));
        assert!(reqs[1].response_format.is_some());
        assert!(
            v.issues[0].starts_with("the judge's verdict contradicted itself"),
            "{:?}",
            v.issues
        );
        assert!(v.issues[0].contains("below the minimum"), "{:?}", v.issues);
        assert!(
            v.reasoning.contains("contradicted itself"),
            "{}",
            v.reasoning
        );
        assert!(v.reasoning.contains("meh"), "{}", v.reasoning);
    }

    #[tokio::test]
    async fn a_failure_without_issues_is_repaired() {
        let (v, usage, reqs) = judged(
            &[
                r#"{"passed":false,"score":3,"reasoning":"not done","issues":["  "]}"#,
                r#"{"passed":false,"score":3,"reasoning":"not done","issues":["calc.py: add() multiplies; return a + b"]}"#,
            ],
            5.0,
        )
        .await;
        assert_eq!(reqs.len(), 2);
        let repair = repair_message(&reqs[1]);
        assert!(
            repair.contains("`passed` is false but `issues` is empty"),
            "{repair}"
        );
        assert!(!v.passed);
        assert_eq!(v.score, Some(3.0));
        assert_eq!(v.issues, vec!["calc.py: add() multiplies; return a + b"]);
        assert_eq!(v.reasoning, "not done");
        assert_eq!(usage.input_tokens, 200);
    }

    #[tokio::test]
    async fn empty_reasoning_is_repaired_and_the_repair_can_pass() {
        let (v, _, reqs) = judged(
            &[
                r#"{"passed":true,"score":9,"reasoning":" \n ","issues":[]}"#,
                r#"{"passed":true,"score":9,"reasoning":"adds add() with a test","issues":[]}"#,
            ],
            7.0,
        )
        .await;
        assert_eq!(reqs.len(), 2);
        assert!(
            repair_message(&reqs[1]).contains("`reasoning` is empty"),
            "{}",
            repair_message(&reqs[1])
        );
        assert!(v.passed);
        assert_eq!(v.score, Some(9.0));
        assert_eq!(v.reasoning, "adds add() with a test");
    }

    #[tokio::test]
    async fn the_blank_failed_verdict_fails_closed_with_feedback() {
        // The verdict from the issue: failed, top score, nothing said.
        let blank = r#"{"passed": false, "score": 10, "reasoning": "", "issues": []}"#;
        let (v, _, reqs) = judged(&[blank, blank], 5.0).await;
        assert_eq!(reqs.len(), 2);
        let repair = repair_message(&reqs[1]);
        assert!(repair.contains("`issues` is empty"), "{repair}");
        assert!(repair.contains("`reasoning` is empty"), "{repair}");
        assert!(!v.passed);
        assert_eq!(v.score, None);
        assert!(
            v.reasoning.contains("contradicted itself"),
            "{}",
            v.reasoning
        );
        assert!(v.reasoning.contains("no reasoning"), "{}", v.reasoning);
        assert_eq!(v.issues.len(), 1, "{:?}", v.issues);
        assert!(
            v.issues[0].contains("passed: false, score: 10"),
            "{:?}",
            v.issues
        );
        assert!(v.issues[0].contains("`issues` is empty"), "{:?}", v.issues);
        assert!(
            v.issues[0].contains("`reasoning` is empty"),
            "{:?}",
            v.issues
        );
    }

    #[tokio::test]
    async fn an_unreadable_repair_fails_closed_naming_both() {
        let blank = r#"{"passed": false, "score": 2, "reasoning": "bad", "issues": []}"#;
        // The repair's answer is unreadable twice (its own schema repair).
        let (v, _, reqs) = judged(&[blank, "no idea", "still no idea"], 5.0).await;
        assert_eq!(reqs.len(), 3);
        assert!(!v.passed);
        assert!(v.issues[0].contains("`issues` is empty"), "{:?}", v.issues);
        assert!(v.issues[0].contains("unreadable"), "{:?}", v.issues);
    }

    #[tokio::test]
    async fn a_consistent_verdict_is_not_questioned() {
        let (v, _, reqs) = judged(
            &[r#"{"passed":true,"score":7,"reasoning":"fine","issues":[]}"#],
            7.0,
        )
        .await;
        assert_eq!(reqs.len(), 1);
        assert!(v.passed);
    }

    #[test]
    fn contradictions_are_named_one_by_one() {
        let a = |passed, score, reasoning: &str, issues: &[&str]| ModelAnswer {
            passed,
            score,
            reasoning: reasoning.into(),
            issues: issues.iter().map(|s| s.to_string()).collect(),
        };
        assert!(contradictions(&a(true, 7.0, "ok", &[]), 7.0).is_empty());
        assert!(contradictions(&a(false, 9.0, "ok", &["x"]), 7.0).is_empty());
        assert_eq!(contradictions(&a(true, 6.9, "ok", &[]), 7.0).len(), 1);
        assert_eq!(contradictions(&a(false, 1.0, "ok", &[""]), 7.0).len(), 1);
        assert_eq!(contradictions(&a(true, 9.0, "\t", &[]), 7.0).len(), 1);
        assert_eq!(contradictions(&a(false, 10.0, "", &[]), 7.0).len(), 2);
    }

    #[tokio::test]
    async fn oversized_answers_get_the_schema_repair() {
        let long = format!(
            r#"{{"passed":true,"score":9,"reasoning":"{}","issues":[]}}"#,
            "x".repeat(MAX_REASONING_CHARS as usize + 1)
        );
        let (v, _, reqs) = judged(
            &[
                &long,
                r#"{"passed":true,"score":9,"reasoning":"short","issues":[]}"#,
            ],
            5.0,
        )
        .await;
        assert_eq!(reqs.len(), 2);
        assert!(
            repair_message(&reqs[1]).contains("does not match the `verdict` JSON schema"),
            "{}",
            repair_message(&reqs[1])
        );
        assert!(v.passed);
        assert_eq!(v.reasoning, "short");
    }

    #[tokio::test]
    async fn model_rejection_fails() {
        let task = task();
        let report = green_report();
        let input = JudgeInput {
            task: &task,
            diff: "d",
            diff_stat: "s",
            report: &report,
        };
        let provider = ScriptedProvider::new(vec![answer(
            r#"{"passed":false,"score":9,"reasoning":"disables a test","issues":["tests/x.py: test skipped"]}"#,
        )]);
        let (v, _) = judge(Some((&provider, "m")), &input, 5.0).await.unwrap();
        assert!(!v.passed);
        assert_eq!(v.issues, vec!["tests/x.py: test skipped"]);
    }

    #[tokio::test]
    async fn one_repair_round_then_success() {
        let task = task();
        let report = green_report();
        let input = JudgeInput {
            task: &task,
            diff: "d",
            diff_stat: "s",
            report: &report,
        };
        let provider = ScriptedProvider::new(vec![
            answer(r#"{"passed":true,"score":42,"reasoning":"x","issues":[]}"#),
            answer(r#"{"passed":true,"score":9,"reasoning":"fixed","issues":[]}"#),
        ]);
        let (v, usage) = judge(Some((&provider, "m")), &input, 5.0).await.unwrap();
        assert!(v.passed);
        assert_eq!(v.score, Some(9.0));
        assert_eq!(usage.input_tokens, 200, "usage is summed over both calls");
        let reqs = provider.requests();
        assert_eq!(reqs.len(), 2);
        let repair = reqs[1].messages.last().unwrap();
        assert_eq!(repair.role, Role::User);
        assert!(
            repair
                .content
                .starts_with("Your answer does not match the `verdict` JSON schema:"),
            "{}",
            repair.content
        );
        assert!(repair.content.contains("score"), "{}", repair.content);
        assert!(repair
            .content
            .contains("Answer again with only the corrected JSON"));
        assert_eq!(reqs[1].messages[2].role, Role::Assistant);
        assert!(reqs[1].response_format.is_some());
    }

    #[tokio::test]
    async fn unreadable_twice_gives_a_failed_verdict() {
        let task = task();
        let report = green_report();
        let input = JudgeInput {
            task: &task,
            diff: "d",
            diff_stat: "s",
            report: &report,
        };
        let long_garbage = format!("I think it is fine. {}", "blah ".repeat(1000));
        let provider =
            ScriptedProvider::new(vec![answer("looks good to me"), answer(&long_garbage)]);
        let (v, _) = judge(Some((&provider, "m")), &input, 5.0).await.unwrap();
        assert!(!v.passed);
        assert_eq!(v.score, None);
        assert_eq!(v.issues.len(), 1);
        assert!(
            v.issues[0].starts_with("the judge's output was unreadable"),
            "{}",
            v.issues[0]
        );
        assert!(
            v.issues[0].contains("I think it is fine."),
            "{}",
            v.issues[0]
        );
        assert!(
            v.issues[0].len() < 2300,
            "raw output is capped: {}",
            v.issues[0].len()
        );
        assert_eq!(provider.requests().len(), 2, "exactly one repair round");
    }

    #[tokio::test]
    async fn provider_error_is_an_error() {
        let task = task();
        let report = green_report();
        let input = JudgeInput {
            task: &task,
            diff: "d",
            diff_stat: "s",
            report: &report,
        };
        let provider = ScriptedProvider::new(vec![]);
        let err = judge(Some((&provider, "m")), &input, 5.0)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("judge model call failed"), "{err}");
    }

    #[test]
    fn cap_and_fence() {
        assert_eq!(cap("abcdef", 3), "abc[… 3 more bytes]");
        assert_eq!(cap("abc", 3), "abc");
        assert_eq!(fenced("diff", "a ```` b\n"), "`````diff\na ```` b\n`````");
    }
}
