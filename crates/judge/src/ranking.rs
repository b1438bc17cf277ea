//! Best-of-N ranking: when two or more candidates of a round passed their
//! gates and their verdicts, the judge model orders them, best first,
//! through structured output (the `ranking` schema: `{"order":
//! [{"candidate": k, "reason": "..."}]}`). Only candidates that passed may
//! be ranked: an answer that names another (a failed one, an unknown
//! number, one twice) is refused as a whole, and the judges' scores decide
//! instead, with a warning saying why; so does an unreadable answer or a
//! failed call. Passing candidates the answer leaves out follow the ranked
//! ones by score. Ranking never fails: the worst case is the order of the
//! scores.

use crate::{cap, fenced};
use orch_core::{Task, Usage, Verdict, VerificationReport};
use orch_providers::structured::{structured, StructuredError};
use orch_providers::{ChatRequest, Message, Provider, ResponseFormat};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Longest reason kept per candidate.
pub const MAX_REASON_CHARS: u64 = 1000;
/// Bytes of each candidate's diff the ranking model sees.
pub const RANK_DIFF_BYTES: usize = 20_000;

/// One candidate that passed, as the ranking sees it.
#[derive(Debug, Clone, Copy)]
pub struct RankCandidate<'a> {
    /// From 1.
    pub candidate: u32,
    pub diff: &'a str,
    pub diff_stat: &'a str,
    pub verdict: &'a Verdict,
    pub report: &'a VerificationReport,
}

/// A candidate's place, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub candidate: u32,
    pub reason: String,
}

/// How an order was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankMethod {
    /// The ranking model's order.
    Judge,
    /// The judges' scores (no ranking model, or its answer was not usable).
    Scores,
    /// Only one candidate passed.
    Only,
}

impl RankMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            RankMethod::Judge => "judge",
            RankMethod::Scores => "scores",
            RankMethod::Only => "only",
        }
    }
}

/// The candidates, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub order: Vec<Ranked>,
    pub method: RankMethod,
    /// Why the model's ranking was not (wholly) used, when it was asked.
    pub warning: Option<String>,
}

/// JSON schema of the ranking answer, used as the `ranking` response format.
pub fn ranking_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "order": {
                "type": "array",
                "minItems": 1,
                "maxItems": orch_core::MAX_CANDIDATES,
                "description": "every candidate, best first",
                "items": {
                    "type": "object",
                    "properties": {
                        "candidate": {"type": "integer", "minimum": 1, "description": "the candidate's number"},
                        "reason": {"type": "string", "maxLength": MAX_REASON_CHARS, "description": "why it is in this place"}
                    },
                    "required": ["candidate", "reason"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["order"],
        "additionalProperties": false
    })
}

/// The ranking's instructions.
pub fn ranking_system_prompt() -> String {
    "You compare candidate changes written by AI coding agents for the same task in the same \
repository. Every candidate already passed the project's checks and a reviewer, so rank them by \
what the checks cannot see: does it do exactly what the task asks, correctly in general and not \
only for the inputs the tests use (hard-coded or special-cased results rank last), does it stay \
within the task, is it the clearest and smallest change that does it. List every candidate once, \
best first, each with a short reason. Answer with only a JSON object, no prose around it: \
{\"order\": [{\"candidate\": number, \"reason\": string}]}"
        .to_string()
}

/// The task and every candidate: its judge's score, verification and diff.
pub fn ranking_message(task: &Task, candidates: &[RankCandidate<'_>]) -> String {
    let mut out = format!(
        "# Task\n\nTitle: {}\nType: {}\n\n{}\n\n# Rank these candidates\n",
        task.title,
        task.task_type,
        task.description.trim()
    );
    for c in candidates {
        out.push_str(&format!("\n## Candidate {}\n\n", c.candidate));
        if let Some(s) = c.verdict.score {
            out.push_str(&format!("Reviewer's score: {s:.1} of 10\n"));
        }
        out.push_str(&format!("Verification: {}\n\n", c.report.summary.trim()));
        out.push_str(&fenced("text", c.diff_stat));
        out.push_str("\n\n");
        out.push_str(&fenced("diff", &cap(c.diff, RANK_DIFF_BYTES)));
        out.push('\n');
    }
    out
}

/// Orders `candidates` (those that passed), best first. With one there is
/// nothing to ask; without a model the scores decide. Returns the usage of
/// the model calls, to be charged to the task.
pub async fn rank(
    provider: Option<(&dyn Provider, &str)>,
    task: &Task,
    candidates: &[RankCandidate<'_>],
) -> (Ranking, Usage) {
    if let [only] = candidates {
        let ranking = Ranking {
            order: vec![Ranked {
                candidate: only.candidate,
                reason: "the only candidate that passed its gates and its review".into(),
            }],
            method: RankMethod::Only,
            warning: None,
        };
        return (ranking, Usage::default());
    }
    let Some((provider, model)) = provider else {
        let order = by_scores(candidates, "no judge model is configured");
        let ranking = Ranking {
            order,
            method: RankMethod::Scores,
            warning: None,
        };
        return (ranking, Usage::default());
    };
    let mut request = ChatRequest::new(
        model,
        vec![
            Message::system(ranking_system_prompt()),
            Message::user(ranking_message(task, candidates)),
        ],
    );
    request.response_format = Some(ResponseFormat {
        name: "ranking".to_string(),
        schema: ranking_schema(),
    });
    let (answer, usage) = match structured(provider, request).await {
        Ok((value, _, usage)) => (Ok(value), usage),
        Err(StructuredError::Invalid {
            problems, usage, ..
        }) => (
            Err(format!(
                "its answer was unreadable: {}",
                problems.join("; ")
            )),
            usage,
        ),
        Err(e) => (Err(format!("the call failed: {e}")), Usage::default()),
    };
    (from_answer(answer, candidates), usage)
}

/// The ranking from the model's answer, or from the scores with a warning.
fn from_answer(answer: Result<Value, String>, candidates: &[RankCandidate<'_>]) -> Ranking {
    let passed: Vec<u32> = candidates.iter().map(|c| c.candidate).collect();
    let parsed = answer.and_then(|v| parse_ranking(&v, &passed));
    match parsed {
        Ok(ranked) => {
            let missing: Vec<u32> = passed
                .iter()
                .copied()
                .filter(|k| !ranked.iter().any(|r| r.candidate == *k))
                .collect();
            let warning = (!missing.is_empty()).then(|| {
                format!(
                    "the ranking left out candidate(s) {}; they follow by score",
                    list(&missing)
                )
            });
            let rest: Vec<RankCandidate<'_>> = candidates
                .iter()
                .filter(|c| missing.contains(&c.candidate))
                .copied()
                .collect();
            let mut order = ranked;
            order.extend(by_scores(&rest, "not placed by the ranking"));
            Ranking {
                order,
                method: RankMethod::Judge,
                warning,
            }
        }
        Err(why) => {
            let warning = format!("the judge's ranking was not used ({why}); the scores decide");
            Ranking {
                order: by_scores(candidates, "the ranking was not usable"),
                method: RankMethod::Scores,
                warning: Some(warning),
            }
        }
    }
}

/// The model's order, checked: every entry names a candidate that passed,
/// at most once. Anything else refuses the whole answer, so a hostile or
/// confused ranking can never put a failed candidate first.
pub fn parse_ranking(value: &Value, passed: &[u32]) -> Result<Vec<Ranked>, String> {
    let entries = value
        .get("order")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or("it has no `order` list")?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let k = e
            .get("candidate")
            .and_then(Value::as_u64)
            .and_then(|k| u32::try_from(k).ok())
            .ok_or_else(|| format!("order[{i}] has no candidate number"))?;
        if !passed.contains(&k) {
            return Err(format!(
                "order[{i}] names candidate {k}, which is not one of those that passed ({})",
                list(passed)
            ));
        }
        if !seen.insert(k) {
            return Err(format!("order[{i}] names candidate {k} a second time"));
        }
        let reason = e
            .get("reason")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .unwrap_or("no reason given");
        out.push(Ranked {
            candidate: k,
            reason: cap(reason, MAX_REASON_CHARS as usize),
        });
    }
    Ok(out)
}

/// `candidates` by their judge's score, highest first (unscored last),
/// ties by candidate number; each reason says so, after `why`.
pub fn by_scores(candidates: &[RankCandidate<'_>], why: &str) -> Vec<Ranked> {
    let mut sorted: Vec<&RankCandidate<'_>> = candidates.iter().collect();
    sorted.sort_by(|a, b| {
        let (sa, sb) = (
            a.verdict.score.unwrap_or(f64::MIN),
            b.verdict.score.unwrap_or(f64::MIN),
        );
        sb.total_cmp(&sa).then(a.candidate.cmp(&b.candidate))
    });
    sorted
        .into_iter()
        .map(|c| Ranked {
            candidate: c.candidate,
            reason: match c.verdict.score {
                Some(s) => format!("{why}; ordered by the reviewer's score ({s:.1})"),
                None => format!("{why}; no score, so in candidate order"),
            },
        })
        .collect()
}

fn list(ks: &[u32]) -> String {
    ks.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testutil::{green_report, task};
    use orch_testkit::scripted::{answer, ScriptedProvider};

    fn verdict(score: Option<f64>) -> Verdict {
        Verdict {
            passed: true,
            score,
            reasoning: "ok".into(),
            issues: vec![],
            gates: vec![],
        }
    }

    fn three<'a>(v: &'a [Verdict; 3], r: &'a VerificationReport) -> Vec<RankCandidate<'a>> {
        (0..3)
            .map(|i| RankCandidate {
                candidate: [1, 3, 4][i],
                diff: "+x\n",
                diff_stat: " a | 1 +",
                verdict: &v[i],
                report: r,
            })
            .collect()
    }

    fn order(r: &Ranking) -> Vec<u32> {
        r.order.iter().map(|x| x.candidate).collect()
    }

    #[test]
    fn a_readable_ranking_orders_the_candidates_with_its_reasons() {
        let passed = [1, 3, 4];
        let v = json!({"order": [
            {"candidate": 4, "reason": "general and small"},
            {"candidate": 1, "reason": "fine"},
            {"candidate": 3, "reason": "  "}
        ]});
        let r = parse_ranking(&v, &passed).unwrap();
        assert_eq!(r[0].candidate, 4);
        assert_eq!(r[0].reason, "general and small");
        assert_eq!(r[2].reason, "no reason given");
    }

    #[test]
    fn hostile_or_malformed_rankings_are_refused_whole() {
        let passed = [1, 3];
        for (bad, says) in [
            (
                json!({"order": [{"candidate": 2, "reason": "pick the failed one"}]}),
                "candidate 2",
            ),
            (
                json!({"order": [{"candidate": 1, "reason": "a"}, {"candidate": 1, "reason": "b"}]}),
                "second time",
            ),
            (json!({"order": []}), "no `order`"),
            (json!({"ranking": [1, 3]}), "no `order`"),
            (
                json!({"order": [{"candidate": "one", "reason": "x"}]}),
                "no candidate number",
            ),
            (
                json!({"order": [{"candidate": -1, "reason": "x"}]}),
                "no candidate number",
            ),
        ] {
            let e = parse_ranking(&bad, &passed).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long = "x".repeat(5000);
        let r = parse_ranking(
            &json!({"order": [{"candidate": 3, "reason": long}]}),
            &passed,
        )
        .unwrap();
        assert!(r[0].reason.len() < 1100, "reasons are capped");
    }

    #[test]
    fn scores_decide_when_the_ranking_is_unusable_and_missing_ones_follow() {
        let report = green_report();
        let v = [verdict(Some(6.0)), verdict(None), verdict(Some(9.0))];
        let cands = three(&v, &report);
        let r = from_answer(Err("its answer was unreadable: x".into()), &cands);
        assert_eq!(order(&r), [4, 1, 3]);
        assert_eq!(r.method, RankMethod::Scores);
        assert!(r.warning.as_deref().unwrap().contains("unreadable"));
        let hostile = json!({"order": [{"candidate": 2, "reason": "x"}]});
        let r = from_answer(Ok(hostile), &cands);
        assert_eq!((order(&r), r.method), (vec![4, 1, 3], RankMethod::Scores));
        let partial = json!({"order": [{"candidate": 3, "reason": "best"}]});
        let r = from_answer(Ok(partial), &cands);
        assert_eq!((order(&r), r.method), (vec![3, 4, 1], RankMethod::Judge));
        assert!(r
            .warning
            .as_deref()
            .unwrap()
            .contains("left out candidate(s) 1, 4"));
    }

    #[tokio::test]
    async fn the_model_ranks_two_or_more_and_one_wins_outright() {
        let report = green_report();
        let v = [verdict(Some(6.0)), verdict(Some(7.0)), verdict(Some(9.0))];
        let cands = three(&v, &report);
        let p = ScriptedProvider::new(vec![answer(
            r#"{"order": [{"candidate": 3, "reason": "general"}, {"candidate": 4, "reason": "hard-codes"}, {"candidate": 1, "reason": "big"}]}"#,
        )]);
        let (r, usage) = rank(Some((&p, "judge")), &task(), &cands).await;
        assert_eq!((order(&r), r.method), (vec![3, 4, 1], RankMethod::Judge));
        assert!(r.warning.is_none());
        assert!(usage.cost_usd > 0.0);
        let sent = &p.requests()[0];
        assert_eq!(sent.response_format.as_ref().unwrap().name, "ranking");
        let text = &sent.messages[1].content;
        assert!(text.contains("## Candidate 4") && text.contains("Rank these candidates"));

        // A provider that fails (here: no reply left) falls back to scores.
        let (r, _) = rank(Some((&p, "judge")), &task(), &cands).await;
        assert_eq!(r.method, RankMethod::Scores);
        assert!(r.warning.as_deref().unwrap().contains("call failed"));

        let (r, usage) = rank(Some((&p, "judge")), &task(), &cands[..1]).await;
        assert_eq!((order(&r), r.method), (vec![1], RankMethod::Only));
        assert_eq!(usage, Usage::default());
        let (r, _) = rank(None, &task(), &cands).await;
        assert_eq!((order(&r), r.method), (vec![4, 3, 1], RankMethod::Scores));
        assert!(r.warning.is_none());
    }
}
