//! The plan file of the audit trail, in Markdown.

use crate::{fenced, Plan, PlanContext};

/// Renders a plan for people: the kept tasks, the dropped ones with their
/// reasons, the model's notes and the context it was given.
pub fn render_markdown(project: &str, plan: &Plan, context: &PlanContext) -> String {
    let mut md = format!("# Plan for {project}\n\n");
    md.push_str(&format!(
        "{} task(s) proposed, {} dropped.\n\n## Tasks\n\n",
        plan.tasks.len(),
        plan.dropped.len()
    ));
    if plan.tasks.is_empty() {
        md.push_str("None.\n\n");
    }
    for (i, t) in plan.tasks.iter().enumerate() {
        let files = if t.allowed_files.is_empty() {
            "any file".to_string()
        } else {
            t.allowed_files
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let tests = if t.acceptance_tests.is_empty() {
            "none named".to_string()
        } else {
            t.acceptance_tests
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        md.push_str(&format!(
            "### {}. {}\n\n- Type: {}\n- Priority: {}\n- Allowed files: {files}\n- Acceptance tests: {tests}\n\n{}\n\n",
            i + 1,
            t.title,
            t.task_type,
            t.priority,
            t.description.trim()
        ));
    }
    md.push_str("## Dropped\n\n");
    if plan.dropped.is_empty() {
        md.push_str("None.\n");
    }
    for (title, reason) in &plan.dropped {
        md.push_str(&format!("- **{title}**: {reason}\n"));
    }
    md.push_str("\n## Notes\n\n");
    md.push_str(if plan.notes.trim().is_empty() {
        "None."
    } else {
        plan.notes.trim()
    });
    md.push_str("\n\n## Context given to the planner\n\n");
    let files = context
        .file_tree
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    md.push_str(&format!("- File list: {files} line(s)\n"));
    if context.docs.is_empty() {
        md.push_str("- Documents: none\n");
    } else {
        let docs: Vec<String> = context
            .docs
            .iter()
            .map(|(n, t)| format!("{n} ({} bytes)", t.len()))
            .collect();
        md.push_str(&format!("- Documents: {}\n", docs.join(", ")));
    }
    md.push_str("\n<details><summary>File list</summary>\n\n");
    md.push_str(&fenced("text", &context.file_tree));
    md.push_str("\n\n</details>\n");
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{validate, PlanInput};
    use serde_json::json;

    #[test]
    fn markdown_lists_tasks_dropped_notes_and_context() {
        let ctx = context();
        let raw = json!({"tasks": [
            {"title": "Fix crash on empty input", "description": "parse('') raises IndexError.\nMake it return [].", "type": "fix", "priority": 9, "allowed_files": ["src/parser.py"], "acceptance_tests": ["tests/test_parser.py::test_empty"]},
            {"title": "Document the API", "description": "Add docs.", "type": "code", "priority": 1, "allowed_files": []},
            {"title": "Escape", "description": "x", "type": "code", "priority": 1, "allowed_files": ["../x"]}
        ], "notes": "Parser is fragile."});
        let input = PlanInput {
            project: "demo",
            context: &ctx,
            open_tasks: &[],
            recent_failures: &[],
            want: 5,
        };
        let plan = validate(&raw, &input).unwrap();
        let md = render_markdown("demo", &plan, &ctx);
        assert!(
            md.starts_with("# Plan for demo\n\n2 task(s) proposed, 1 dropped."),
            "{md}"
        );
        assert!(md.contains("### 1. Fix crash on empty input\n\n- Type: fix\n- Priority: 9\n- Allowed files: `src/parser.py`\n- Acceptance tests: `tests/test_parser.py::test_empty`\n"), "{md}");
        assert!(
            md.contains("parse('') raises IndexError.\nMake it return []."),
            "{md}"
        );
        assert!(md.contains("### 2. Document the API"), "{md}");
        assert!(
            md.contains("- Allowed files: any file\n- Acceptance tests: none named"),
            "{md}"
        );
        assert!(
            md.contains("- **Escape**: allowed_files entry `../x`"),
            "{md}"
        );
        assert!(md.contains("## Notes\n\nParser is fragile."), "{md}");
        assert!(md.contains("- File list: 2 line(s)"), "{md}");
        assert!(md.contains("- Documents: README.md (29 bytes)"), "{md}");
        assert!(
            md.contains("```text\nsrc/parser.py\ntests/test_parser.py\n```"),
            "{md}"
        );
    }

    #[test]
    fn empty_plan_renders() {
        let plan = crate::Plan {
            tasks: vec![],
            notes: String::new(),
            dropped: vec![],
            raw: json!({}),
        };
        let md = render_markdown("p", &plan, &crate::PlanContext::default());
        assert!(md.contains("0 task(s) proposed, 0 dropped."));
        assert!(md.contains("## Tasks\n\nNone."));
        assert!(md.contains("## Notes\n\nNone."));
        assert!(md.contains("- Documents: none"));
    }
}
