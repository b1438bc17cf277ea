//! Reading the judge model's answer: JSON, possibly inside a ```json fence
//! or surrounded by prose, checked field by field so a repair request can
//! say exactly what was wrong.

use serde_json::{Map, Value};

/// The model's answer, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelAnswer {
    pub passed: bool,
    pub score: f64,
    pub reasoning: String,
    pub issues: Vec<String>,
}

/// Parses and validates an answer against the `verdict` schema. The error
/// names the problem in words meant to be sent back to the model.
pub fn parse_answer(content: &str) -> Result<ModelAnswer, String> {
    let value = extract_json(content)?;
    let obj = value
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, got {}", kind(&value)))?;
    let passed = field(obj, "passed")?
        .as_bool()
        .ok_or_else(|| wrong_type(obj, "passed", "a boolean"))?;
    let score = field(obj, "score")?
        .as_f64()
        .ok_or_else(|| wrong_type(obj, "score", "a number"))?;
    if !(0.0..=10.0).contains(&score) {
        return Err(format!("`score` must be between 0 and 10, got {score}"));
    }
    let reasoning = field(obj, "reasoning")?
        .as_str()
        .ok_or_else(|| wrong_type(obj, "reasoning", "a string"))?
        .to_string();
    let issues = field(obj, "issues")?
        .as_array()
        .ok_or_else(|| wrong_type(obj, "issues", "an array of strings"))?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`issues[{i}]` must be a string, got {}", kind(v)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ModelAnswer {
        passed,
        score,
        reasoning,
        issues,
    })
}

/// Finds the JSON value in `content`: the whole text, the inside of a code
/// fence, or the outermost `{…}`.
pub(crate) fn extract_json(content: &str) -> Result<Value, String> {
    let text = content.trim();
    if text.is_empty() {
        return Err("the answer was empty; expected a JSON object".to_string());
    }
    let first_error = match serde_json::from_str::<Value>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    if let Some(inner) = strip_fence(text) {
        if let Ok(v) = serde_json::from_str::<Value>(inner) {
            return Ok(v);
        }
    }
    if let (Some(start), Some(end)) = (text.find('{'), text.rfind('}')) {
        if start < end {
            if let Ok(v) = serde_json::from_str::<Value>(&text[start..=end]) {
                return Ok(v);
            }
        }
    }
    Err(format!("the answer is not valid JSON ({first_error})"))
}

/// The body of a ```…``` block in `text`, if there is one.
fn strip_fence(text: &str) -> Option<&str> {
    let open = text.find("```")?;
    let after_ticks = &text[open..];
    let body_start = after_ticks.find('\n')? + 1;
    let body = &after_ticks[body_start..];
    let close = body.rfind("```")?;
    Some(body[..close].trim())
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Value, String> {
    obj.get(name)
        .ok_or_else(|| format!("missing required field `{name}`"))
}

fn wrong_type(obj: &Map<String, Value>, name: &str, want: &str) -> String {
    let got = obj.get(name).map(kind).unwrap_or("nothing");
    format!("`{name}` must be {want}, got {got}")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"passed": true, "score": 7, "reasoning": "ok", "issues": ["a", "b"]}"#;

    #[test]
    fn plain_fenced_and_wrapped_json() {
        let want = ModelAnswer {
            passed: true,
            score: 7.0,
            reasoning: "ok".into(),
            issues: vec!["a".into(), "b".into()],
        };
        assert_eq!(parse_answer(GOOD).unwrap(), want);
        assert_eq!(
            parse_answer(&format!("```json\n{GOOD}\n```")).unwrap(),
            want
        );
        assert_eq!(parse_answer(&format!("```\n{GOOD}\n```\n")).unwrap(), want);
        assert_eq!(
            parse_answer(&format!("Here is my verdict:\n{GOOD}\nThanks.")).unwrap(),
            want
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_answer(r#"{"passed": "yes", "score": 7, "reasoning": "", "issues": []}"#)
            .unwrap_err();
        assert_eq!(e, "`passed` must be a boolean, got a string");
        let e = parse_answer(r#"{"passed": true, "reasoning": "", "issues": []}"#).unwrap_err();
        assert_eq!(e, "missing required field `score`");
        let e = parse_answer(r#"{"passed": true, "score": 11, "reasoning": "", "issues": []}"#)
            .unwrap_err();
        assert_eq!(e, "`score` must be between 0 and 10, got 11");
        let e = parse_answer(r#"{"passed": true, "score": -1, "reasoning": "", "issues": []}"#)
            .unwrap_err();
        assert!(e.contains("between 0 and 10"), "{e}");
        let e = parse_answer(r#"{"passed": true, "score": 1, "reasoning": "", "issues": [3]}"#)
            .unwrap_err();
        assert_eq!(e, "`issues[0]` must be a string, got a number");
        let e = parse_answer("[1, 2]").unwrap_err();
        assert_eq!(e, "expected a JSON object, got an array");
    }

    #[test]
    fn not_json_at_all() {
        let e = parse_answer("The change looks good.").unwrap_err();
        assert!(e.starts_with("the answer is not valid JSON"), "{e}");
        assert!(parse_answer("   ").unwrap_err().contains("empty"));
    }
}
