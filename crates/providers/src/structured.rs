//! The shared structured-output layer: a JSON answer that matches a
//! schema, from any provider.
//!
//! [`structured`] sends the request natively (`response_format`) when the
//! provider can enforce a JSON schema, and otherwise puts the schema in the
//! system prompt. Either way the answer is then parsed (tolerating a
//! ```` ```json ```` fence or prose around the JSON), validated against the
//! schema, and on failure the model gets ONE repair round that quotes the
//! validation errors. A second failure is a [`StructuredError::Invalid`]
//! naming every problem. Usage is summed over both calls, and errors carry
//! the usage spent so far: every call is charged, even a failed one.
//!
//! The validator ([`validate`]) covers the JSON-schema subset orch's own
//! schemas use: `type` (also a list; `integer` accepts whole numbers),
//! `enum`, `const`, `properties`, `required`, `additionalProperties`
//! (`false` or a schema), `items`, `minItems`/`maxItems`,
//! `minLength`/`maxLength`, `minimum`/`maximum`,
//! `exclusiveMinimum`/`exclusiveMaximum`, and `allOf`/`anyOf`/`oneOf`.
//! Other keywords (`pattern`, `format`, `$ref`, ...) are not checked; keep
//! schemas given to this layer within the subset.

use crate::chat::{ChatRequest, ChatResponse, Message, Role};
use crate::{Provider, ProviderError};
use orch_core::Usage;
use serde_json::Value;

/// Problems listed in an error or a repair prompt, at most.
const MAX_PROBLEMS: usize = 20;

/// Candidate JSON starts tried in a prose answer before giving up.
const MAX_JSON_CANDIDATES: usize = 64;

/// Why no valid structured answer came back.
#[derive(Debug, thiserror::Error)]
pub enum StructuredError {
    /// The request has no `response_format` to validate against.
    #[error(
        "a structured-output request needs response_format (a schema name and a JSON schema); \
         set ChatRequest::response_format"
    )]
    MissingFormat,
    /// A model call failed; `usage` is what earlier calls cost.
    #[error("{source}")]
    Provider {
        #[source]
        source: ProviderError,
        usage: Usage,
    },
    /// Even after the repair round the answer does not match the schema.
    #[error(
        "the model's answer does not match the `{schema}` schema even after a repair round: {}",
        problems.join("; ")
    )]
    Invalid {
        schema: String,
        problems: Vec<String>,
        /// The last answer as the model wrote it.
        raw: String,
        usage: Usage,
    },
}

impl StructuredError {
    /// Tokens and cost spent before the failure (to be charged anyway).
    pub fn usage(&self) -> Usage {
        match self {
            StructuredError::MissingFormat => Usage::default(),
            StructuredError::Provider { usage, .. } | StructuredError::Invalid { usage, .. } => {
                *usage
            }
        }
    }
}

/// Ask for a JSON answer matching `request.response_format`. Returns the
/// parsed value, the last response (the repair's when there was one) and
/// the usage summed over the calls.
pub async fn structured(
    provider: &dyn Provider,
    request: ChatRequest,
) -> Result<(Value, ChatResponse, Usage), StructuredError> {
    let Some(format) = request.response_format.clone() else {
        return Err(StructuredError::MissingFormat);
    };
    let mut request = request;
    if !provider.capabilities().json_schema {
        schema_in_prompt(&mut request);
    }
    let mut usage = Usage::default();
    let first = call(provider, &request, &mut usage).await?;
    let problems = match check_answer(&first.message.content, &format.schema) {
        Ok(value) => return Ok((value, first, usage)),
        Err(problems) => problems,
    };
    tracing::info!(
        provider = provider.name(),
        schema = %format.name,
        problems = %problems.join("; "),
        "structured answer invalid; one repair round"
    );
    request
        .messages
        .push(Message::assistant(first.message.content.clone()));
    request.messages.push(Message::user(format!(
        "Your answer does not match the `{}` JSON schema: {}. Answer again with only the \
         corrected JSON, no prose and no code fence.",
        format.name,
        problems.join("; ")
    )));
    let second = call(provider, &request, &mut usage).await?;
    match check_answer(&second.message.content, &format.schema) {
        Ok(value) => Ok((value, second, usage)),
        Err(problems) => Err(StructuredError::Invalid {
            schema: format.name,
            problems,
            raw: second.message.content,
            usage,
        }),
    }
}

async fn call(
    provider: &dyn Provider,
    request: &ChatRequest,
    usage: &mut Usage,
) -> Result<ChatResponse, StructuredError> {
    match provider.chat(request).await {
        Ok(response) => {
            *usage += response.usage;
            Ok(response)
        }
        Err(source) => Err(StructuredError::Provider {
            source,
            usage: *usage,
        }),
    }
}

/// Parse and validate one answer; the error lists the problems.
fn check_answer(text: &str, schema: &Value) -> Result<Value, Vec<String>> {
    let value = extract_json(text).map_err(|e| vec![e])?;
    let problems = validate(schema, &value);
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(problems)
    }
}

/// For providers that cannot enforce a schema: drop `response_format` and
/// tell the model the schema in the system prompt instead. Does nothing
/// to a request without `response_format`.
pub fn schema_in_prompt(request: &mut ChatRequest) {
    let Some(format) = request.response_format.take() else {
        return;
    };
    let schema =
        serde_json::to_string_pretty(&format.schema).unwrap_or_else(|_| format.schema.to_string());
    let instruction = format!(
        "Answer with only JSON matching this JSON schema (named `{}`), with no prose and no \
         code fence:\n{schema}",
        format.name
    );
    match request.messages.first_mut() {
        Some(first) if first.role == Role::System => {
            if !first.content.is_empty() {
                first.content.push_str("\n\n");
            }
            first.content.push_str(&instruction);
        }
        _ => request.messages.insert(0, Message::system(instruction)),
    }
}

/// The JSON in a model's answer: the whole text, else the body of a
/// ```` ``` ```` fence, else the first object or array that parses inside
/// surrounding prose.
pub fn extract_json(text: &str) -> Result<Value, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the answer is empty; it must be JSON".to_string());
    }
    if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
        return Ok(v);
    }
    if let Some(body) = fence_body(trimmed) {
        if let Ok(v) = serde_json::from_str::<Value>(body.trim()) {
            return Ok(v);
        }
    }
    let starts = trimmed
        .char_indices()
        .filter(|(_, c)| *c == '{' || *c == '[')
        .take(MAX_JSON_CANDIDATES);
    for (i, _) in starts {
        let mut values = serde_json::Deserializer::from_str(&trimmed[i..]).into_iter::<Value>();
        if let Some(Ok(v)) = values.next() {
            return Ok(v);
        }
    }
    let preview: String = trimmed.chars().take(120).collect();
    Err(format!(
        "the answer is not JSON and contains no JSON object (it starts with {preview:?})"
    ))
}

/// The text between the first ```` ``` ```` (after its language tag) and
/// the next one.
fn fence_body(text: &str) -> Option<&str> {
    let open = text.find("```")?;
    let after = &text[open + 3..];
    // Skip a language tag such as `json` up to the end of its line.
    let body_start = after.find('\n').map_or(0, |i| i + 1);
    let body = &after[body_start..];
    let close = body.find("```")?;
    Some(&body[..close])
}

/// Problems with `value` against `schema` (the subset in the module doc),
/// each naming where (a JSON pointer) and what; empty when it matches.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    check(schema, value, "", &mut problems);
    if problems.len() > MAX_PROBLEMS {
        let more = problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
        problems.push(format!("... and {more} more"));
    }
    problems
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "the answer".to_string()
    } else {
        format!("`{path}`")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        // An unknown type name cannot be checked; do not invent failures.
        _ => true,
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let obj = match schema {
        Value::Object(o) => o,
        Value::Bool(false) => {
            out.push(format!("{} is not allowed here", at(path)));
            return;
        }
        _ => return,
    };

    if let Some(t) = obj.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
            out.push(format!(
                "{} must be {}, not {}",
                at(path),
                types.join(" or "),
                kind(value)
            ));
            // Deeper checks would only repeat the same mistake.
            return;
        }
    }
    if let Some(Value::Array(allowed)) = obj.get("enum") {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(short).collect();
            out.push(format!(
                "{} is {}, which is not one of {}",
                at(path),
                short(value),
                list.join(", ")
            ));
        }
    }
    if let Some(c) = obj.get("const") {
        if c != value {
            out.push(format!("{} must be {}", at(path), short(c)));
        }
    }

    if let Some(n) = value.as_f64() {
        let bound = |k: &str| obj.get(k).and_then(Value::as_f64);
        if let Some(min) = bound("minimum").filter(|m| n < *m) {
            out.push(format!("{} is {n}, below the minimum {min}", at(path)));
        }
        if let Some(max) = bound("maximum").filter(|m| n > *m) {
            out.push(format!("{} is {n}, above the maximum {max}", at(path)));
        }
        if let Some(min) = bound("exclusiveMinimum").filter(|m| n <= *m) {
            out.push(format!("{} is {n}, must be above {min}", at(path)));
        }
        if let Some(max) = bound("exclusiveMaximum").filter(|m| n >= *m) {
            out.push(format!("{} is {n}, must be below {max}", at(path)));
        }
    }

    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = obj
            .get("minLength")
            .and_then(Value::as_u64)
            .filter(|m| len < *m)
        {
            out.push(format!(
                "{} has {len} characters, fewer than {min}",
                at(path)
            ));
        }
        if let Some(max) = obj
            .get("maxLength")
            .and_then(Value::as_u64)
            .filter(|m| len > *m)
        {
            out.push(format!(
                "{} has {len} characters, more than {max}",
                at(path)
            ));
        }
    }

    if let Some(items) = value.as_array() {
        let len = items.len() as u64;
        if let Some(min) = obj
            .get("minItems")
            .and_then(Value::as_u64)
            .filter(|m| len < *m)
        {
            out.push(format!("{} has {len} items, fewer than {min}", at(path)));
        }
        if let Some(max) = obj
            .get("maxItems")
            .and_then(Value::as_u64)
            .filter(|m| len > *m)
        {
            out.push(format!("{} has {len} items, more than {max}", at(path)));
        }
        if let Some(item_schema) = obj.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}/{i}"), out);
            }
        }
    }

    if let Some(map) = value.as_object() {
        if let Some(Value::Array(required)) = obj.get("required") {
            for key in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(key) {
                    out.push(format!(
                        "{} is missing the required property `{key}`",
                        at(path)
                    ));
                }
            }
        }
        let props = obj.get("properties").and_then(Value::as_object);
        for (key, v) in map {
            let child = format!("{path}/{}", escape_pointer(key));
            match props.and_then(|p| p.get(key)) {
                Some(prop_schema) => check(prop_schema, v, &child, out),
                None => match obj.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        out.push(format!(
                            "{} has the property `{key}`, which the schema does not allow \
                             (allowed: {})",
                            at(path),
                            known.join(", ")
                        ));
                    }
                    Some(extra) => check(extra, v, &child, out),
                    None => {}
                },
            }
        }
    }

    if let Some(Value::Array(all)) = obj.get("allOf") {
        for sub in all {
            check(sub, value, path, out);
        }
    }
    for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
        if let Some(Value::Array(alternatives)) = obj.get(keyword) {
            let mut first_problems = Vec::new();
            let mut matching = 0;
            for (i, sub) in alternatives.iter().enumerate() {
                let mut p = Vec::new();
                check(sub, value, path, &mut p);
                if p.is_empty() {
                    matching += 1;
                } else if i == 0 {
                    first_problems = p;
                }
            }
            if matching == 0 {
                out.push(format!(
                    "{} matches none of the {keyword} alternatives (the first says: {})",
                    at(path),
                    first_problems.join("; ")
                ));
            } else if exactly_one && matching > 1 {
                out.push(format!(
                    "{} matches {matching} of the oneOf alternatives; it must match exactly one",
                    at(path)
                ));
            }
        }
    }
}

/// A key as a JSON-pointer segment.
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ResponseFormat;
    use crate::Capabilities;
    use async_trait::async_trait;
    use serde_json::json;
    use std::sync::Mutex;

    fn verdict_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "passed": {"type": "boolean"},
                "score": {"type": "number", "minimum": 0, "maximum": 10},
                "issues": {"type": "array", "items": {"type": "string"}},
                "kind": {"type": "string", "enum": ["code", "test"]},
                "priority": {"type": "integer"}
            },
            "required": ["passed", "score", "issues"],
            "additionalProperties": false
        })
    }

    #[test]
    fn valid_values_have_no_problems() {
        let s = verdict_schema();
        assert!(validate(&s, &json!({"passed": true, "score": 7.5, "issues": []})).is_empty());
        assert!(validate(
            &s,
            &json!({"passed": false, "score": 0, "issues": ["a"], "kind": "test", "priority": 3.0})
        )
        .is_empty());
    }

    #[test]
    fn problems_name_the_place_and_the_rule() {
        let s = verdict_schema();
        let p = validate(
            &s,
            &json!({"passed": "yes", "score": 11, "issues": ["ok", 3], "kind": "docs",
                    "priority": 1.5, "extra": 1}),
        );
        let text = p.join("\n");
        assert!(
            text.contains("`/passed` must be boolean, not a string"),
            "{text}"
        );
        assert!(
            text.contains("`/score` is 11, above the maximum 10"),
            "{text}"
        );
        assert!(
            text.contains("`/issues/1` must be string, not an integer"),
            "{text}"
        );
        assert!(
            text.contains("`/kind` is \"docs\", which is not one of \"code\", \"test\""),
            "{text}"
        );
        assert!(
            text.contains("`/priority` must be integer, not a number"),
            "{text}"
        );
        assert!(
            text.contains("property `extra`, which the schema does not allow"),
            "{text}"
        );
        assert_eq!(p.len(), 6, "{text}");

        let p = validate(&s, &json!({"score": 1}));
        assert_eq!(
            p,
            vec![
                "the answer is missing the required property `passed`",
                "the answer is missing the required property `issues`"
            ]
        );
        assert_eq!(
            validate(&s, &json!([1])),
            vec!["the answer must be object, not an array"]
        );
    }

    #[test]
    fn less_common_keywords() {
        let s = json!({"type": ["string", "null"], "minLength": 2, "maxLength": 3});
        assert!(validate(&s, &Value::Null).is_empty());
        assert_eq!(validate(&s, &json!("a")).len(), 1);
        assert_eq!(validate(&s, &json!("abcd")).len(), 1);
        let s = json!({"type": "array", "minItems": 1, "maxItems": 2});
        assert_eq!(validate(&s, &json!([])).len(), 1);
        assert_eq!(validate(&s, &json!([1, 2, 3])).len(), 1);
        let s = json!({"exclusiveMinimum": 0, "exclusiveMaximum": 1});
        assert_eq!(validate(&s, &json!(0)).len(), 1);
        assert!(validate(&s, &json!(0.5)).is_empty());
        let s = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
        assert!(validate(&s, &json!(3)).is_empty());
        assert!(validate(&s, &json!(true))[0].contains("none of the anyOf"));
        let s = json!({"oneOf": [{"type": "number"}, {"type": "integer"}]});
        assert!(validate(&s, &json!(3))[0].contains("exactly one"));
        let s = json!({"additionalProperties": {"type": "integer"}});
        assert_eq!(
            validate(&s, &json!({"a/b": "x"})),
            vec!["`/a~1b` must be integer, not a string"]
        );
        let s = json!({"const": "x", "allOf": [{"type": "string"}]});
        assert_eq!(validate(&s, &json!("y")).len(), 1);
        // Huge answers produce a bounded list.
        let s = json!({"type": "array", "items": {"type": "string"}});
        let many: Vec<i32> = (0..100).collect();
        let p = validate(&s, &json!(many));
        assert_eq!(p.len(), MAX_PROBLEMS + 1);
        assert!(p.last().unwrap().contains("80 more"));
    }

    #[test]
    fn json_is_found_in_fences_and_prose() {
        let want = json!({"a": [1, 2]});
        assert_eq!(extract_json(" {\"a\": [1, 2]} ").unwrap(), want);
        assert_eq!(extract_json("```json\n{\"a\": [1, 2]}\n```").unwrap(), want);
        assert_eq!(
            extract_json("Sure!\n```\n{\"a\": [1, 2]}\n```\nHope it helps.").unwrap(),
            want
        );
        assert_eq!(
            extract_json("Here it is: {\"a\": [1, 2]} — as asked {not json}").unwrap(),
            want
        );
        // A brace in prose before the JSON is skipped.
        assert_eq!(
            extract_json("Use {curly} braces: {\"a\": [1, 2]}").unwrap(),
            want
        );
        let err = extract_json("I cannot help with that.").unwrap_err();
        assert!(
            err.contains("not JSON") && err.contains("I cannot"),
            "{err}"
        );
        assert!(extract_json("  ").unwrap_err().contains("empty"));
    }

    #[test]
    fn schema_goes_into_the_system_prompt() {
        let mut req =
            ChatRequest::new("m", vec![Message::system("You judge."), Message::user("x")]);
        req.response_format = Some(ResponseFormat {
            name: "verdict".into(),
            schema: json!({"type": "object"}),
        });
        schema_in_prompt(&mut req);
        assert!(req.response_format.is_none());
        assert_eq!(req.messages.len(), 2);
        assert!(req.messages[0]
            .content
            .starts_with("You judge.\n\nAnswer with only JSON"));
        assert!(req.messages[0].content.contains("`verdict`"));
        assert!(req.messages[0].content.contains("\"type\": \"object\""));

        let mut req = ChatRequest::new("m", vec![Message::user("x")]);
        req.response_format = Some(ResponseFormat {
            name: "plan".into(),
            schema: json!({}),
        });
        schema_in_prompt(&mut req);
        assert_eq!(req.messages[0].role, Role::System);
        assert_eq!(req.messages.len(), 2);
    }

    /// Answers from a list and records the requests (a unit-test mock).
    struct Canned {
        schema_native: bool,
        answers: Mutex<Vec<Result<String, ProviderError>>>,
        seen: Mutex<Vec<ChatRequest>>,
    }

    impl Canned {
        fn new(schema_native: bool, answers: Vec<Result<&str, ProviderError>>) -> Self {
            Canned {
                schema_native,
                answers: Mutex::new(
                    answers
                        .into_iter()
                        .rev()
                        .map(|a| a.map(str::to_string))
                        .collect(),
                ),
                seen: Mutex::new(Vec::new()),
            }
        }
    }

    #[async_trait]
    impl Provider for Canned {
        fn name(&self) -> &str {
            "canned"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                json_schema: self.schema_native,
                ..Capabilities::default()
            }
        }
        async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            self.seen.lock().unwrap().push(request.clone());
            let content = self.answers.lock().unwrap().pop().unwrap()?;
            Ok(ChatResponse {
                message: Message::assistant(content),
                usage: Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    cached_tokens: 0,
                    cost_usd: 0.01,
                },
                finish_reason: "stop".into(),
                model: request.model.clone(),
            })
        }
    }

    fn request() -> ChatRequest {
        let mut req = ChatRequest::new(
            "judge",
            vec![Message::system("sys"), Message::user("judge it")],
        );
        req.response_format = Some(ResponseFormat {
            name: "verdict".into(),
            schema: verdict_schema(),
        });
        req
    }

    #[tokio::test]
    async fn native_schema_is_sent_as_is() {
        let p = Canned::new(
            true,
            vec![Ok(r#"{"passed": true, "score": 9, "issues": []}"#)],
        );
        let (value, last, usage) = structured(&p, request()).await.unwrap();
        assert_eq!(value["score"], 9);
        assert_eq!(last.usage.input_tokens, 10);
        assert_eq!(usage.input_tokens, 10);
        let seen = p.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].response_format.is_some());
        assert_eq!(seen[0].messages[0].content, "sys");
    }

    #[tokio::test]
    async fn without_native_schema_the_prompt_carries_it_and_one_repair_fixes_it() {
        let p = Canned::new(
            false,
            vec![
                Ok("Here you go:\n```json\n{\"passed\": true, \"score\": 12, \"issues\": []}\n```"),
                Ok("{\"passed\": true, \"score\": 10, \"issues\": []}"),
            ],
        );
        let (value, _, usage) = structured(&p, request()).await.unwrap();
        assert_eq!(value["score"], 10);
        assert_eq!(usage.input_tokens, 20, "both calls are counted");
        assert!((usage.cost_usd - 0.02).abs() < 1e-9);
        let seen = p.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen[0].response_format.is_none());
        assert!(seen[0].messages[0].content.contains("\"maximum\": 10"));
        let repair = &seen[1].messages;
        assert_eq!(repair.len(), 4);
        assert_eq!(repair[2].role, Role::Assistant);
        assert!(
            repair[3]
                .content
                .contains("`/score` is 12, above the maximum 10"),
            "{}",
            repair[3].content
        );
    }

    #[tokio::test]
    async fn a_second_bad_answer_is_an_error_naming_the_problems() {
        let p = Canned::new(
            true,
            vec![
                Ok("no JSON here"),
                Ok(r#"{"passed": 1, "score": 1, "issues": []}"#),
            ],
        );
        let err = structured(&p, request()).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`verdict` schema") && text.contains("`/passed` must be boolean"),
            "{text}"
        );
        assert_eq!(err.usage().input_tokens, 20);
        match err {
            StructuredError::Invalid { raw, problems, .. } => {
                assert!(raw.contains("\"passed\": 1"));
                assert_eq!(problems.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn provider_errors_and_missing_format() {
        let p = Canned::new(
            true,
            vec![
                Ok("nope"),
                Err(ProviderError::Http {
                    provider: "canned".into(),
                    status: 400,
                    body: "context too long".into(),
                    retry_after: None,
                }),
            ],
        );
        let err = structured(&p, request()).await.unwrap_err();
        assert!(err.to_string().contains("context too long"));
        assert_eq!(
            err.usage().input_tokens,
            10,
            "the first call is still charged"
        );

        let mut req = request();
        req.response_format = None;
        let err = structured(&p, req).await.unwrap_err();
        assert!(matches!(err, StructuredError::MissingFormat));
        assert!(err.to_string().contains("response_format"));
    }
}
