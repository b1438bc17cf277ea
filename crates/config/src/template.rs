//! `[new_projects]`: the settings a project created by `orch new` (or by a
//! requirements file dropped into `orch serve`'s folder) starts from. The
//! table takes any `[[projects]]` key except `name` and `path`, which each
//! new project gets for itself; its worker, judge and architect models,
//! test command, `refine` table and the rest are copied into the new
//! `[[projects]]` entry as written.
//!
//! The template is kept as a plain TOML table rather than a second copy of
//! [`ProjectConfig`]'s fields, so every project setting — including ones
//! added later — is a template setting too. It is checked at load by
//! building the project it would make (with the config's directory as a
//! stand-in path) and validating that like any project.

use crate::model::{Config, ProjectConfig};

/// Keys each new project gets for itself, never from the template.
pub const PER_PROJECT_KEYS: [&str; 2] = ["name", "path"];

impl Config {
    /// The project `[new_projects]` makes for `name` at `path`, or what is
    /// wrong with the template (a message naming the key and the fix).
    pub fn project_from_template(
        &self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<ProjectConfig, String> {
        let Some(template) = &self.new_projects else {
            return Err(format!(
                "{} has no [new_projects] table: add one with the settings new projects start from, at least `worker_model = \"provider:model\"` (see the README's configuration reference)",
                self.source.display()
            ));
        };
        from_template(template, name, path)
    }
}

/// `template` plus `name` and `path`, as a project.
pub(crate) fn from_template(
    template: &toml::Table,
    name: &str,
    path: &std::path::Path,
) -> Result<ProjectConfig, String> {
    if let Some(key) = PER_PROJECT_KEYS.iter().find(|k| template.contains_key(**k)) {
        return Err(format!(
            "new_projects.{key}: remove it; each new project gets its own {key} from `orch new`"
        ));
    }
    let mut table = template.clone();
    table.insert("name".into(), toml::Value::String(name.to_string()));
    table.insert(
        "path".into(),
        toml::Value::String(path.display().to_string()),
    );
    if !table.contains_key("worker_model") {
        return Err(
            "new_projects: missing required key `worker_model`; name the model new projects' workers use, e.g. `worker_model = \"local:qwen2.5-coder\"`".into(),
        );
    }
    toml::Value::Table(table)
        .try_into::<ProjectConfig>()
        .map_err(|e| format!("new_projects: {}", one_line(&e.to_string())))
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::path::Path;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn a_template_makes_a_project_with_its_own_name_and_path() {
        let t = table(
            "worker_model = \"p:w\"\njudge_model = \"p:j\"\ntest_command = \"pytest\"\nmax_workers = 1\n",
        );
        let p = from_template(&t, "todo", Path::new("/data/projects/todo")).unwrap();
        assert_eq!(p.name, "todo");
        assert_eq!(p.path, Path::new("/data/projects/todo"));
        assert_eq!(p.worker_model.to_string(), "p:w");
        assert_eq!(p.judge_model.unwrap().to_string(), "p:j");
        assert_eq!(p.test_command, "pytest");
        assert_eq!(p.max_workers, 1);
    }

    #[test]
    fn name_path_unknown_keys_and_a_missing_worker_model_are_refused() {
        let err = from_template(
            &table("name = \"x\"\nworker_model = \"p:w\"\n"),
            "a",
            Path::new("/a"),
        )
        .unwrap_err();
        assert!(err.contains("new_projects.name: remove it"), "{err}");
        let err =
            from_template(&table("test_command = \"x\"\n"), "a", Path::new("/a")).unwrap_err();
        assert!(err.contains("worker_model"), "{err}");
        let err = from_template(
            &table("worker_model = \"p:w\"\nmax_wrokers = 2\n"),
            "a",
            Path::new("/a"),
        )
        .unwrap_err();
        assert!(err.contains("max_wrokers"), "{err}");
    }

    #[test]
    fn the_template_is_checked_when_the_config_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orch.toml");
        let load = |template: &str| {
            let text = format!(
                "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\n[new_projects]\n{template}"
            );
            crate::load_str(&text, crate::ConfigFormat::Toml, &path)
        };
        let ok =
            load("worker_model = \"local:w\"\njudge_model = \"local:j\"\n[new_projects.refine]\nthreshold = 8.0\n").unwrap();
        let made = ok
            .project_from_template("todo", Path::new("/p/todo"))
            .unwrap();
        assert_eq!(made.worker_model.to_string(), "local:w");
        let err = load("worker_model = \"nowhere:w\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("new_projects.worker_model"), "{err}");
        let err = load("worker_model = \"local:w\"\nmax_workers = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("new_projects.max_workers"), "{err}");
        let err = load("path = \"x\"\nworker_model = \"local:w\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("new_projects.path: remove it"), "{err}");
    }

    #[test]
    fn without_a_template_the_message_says_what_to_add() {
        let c = Config {
            source: "/etc/orch.toml".into(),
            ..Default::default()
        };
        let err = c.project_from_template("a", Path::new("/a")).unwrap_err();
        assert!(
            err.contains("[new_projects]") && err.contains("worker_model"),
            "{err}"
        );
    }
}
