//! The dashboard over real HTTP, without JavaScript: pages render from a
//! real store, every form posts and redirects, a refused form comes back
//! with the API's message beside its field and writes nothing, a POST
//! without its CSRF token is refused, and with a token the pages ask for
//! it. (The browser test, crates/cli/tests/e2e_dashboard.rs, covers the
//! live updates.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use orch_core::TaskStatus;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{redirect, Response, StatusCode};

/// A browser without JavaScript: keeps its session cookie (and the token
/// cookie once logged in), follows no redirects by itself.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<String>,
}

impl Browser {
    fn new(s: &Server) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(redirect::Policy::none())
                .build()
                .unwrap(),
            base: s.base.clone(),
            cookies: Vec::new(),
        }
    }

    fn keep_cookies(&mut self, resp: &Response) {
        for v in resp.headers().get_all(SET_COOKIE) {
            let pair = v.to_str().unwrap().split(';').next().unwrap().to_string();
            let name = pair.split('=').next().unwrap().to_string();
            self.cookies.retain(|c| !c.starts_with(&format!("{name}=")));
            self.cookies.push(pair);
        }
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String, Option<String>) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookies.join("; "))
            .send()
            .await
            .unwrap();
        self.finish(resp).await
    }

    async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String, Option<String>) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookies.join("; "))
            .form(form)
            .send()
            .await
            .unwrap();
        self.finish(resp).await
    }

    async fn finish(&mut self, resp: Response) -> (StatusCode, String, Option<String>) {
        self.keep_cookies(&resp);
        let status = resp.status();
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        if status.is_success() || status.is_client_error() {
            assert!(
                resp.headers()[CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"),
                "{status} is HTML"
            );
        }
        (status, resp.text().await.unwrap(), location)
    }
}

/// The CSRF token of the page's forms.
fn csrf(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn every_form_works_without_javascript_and_refusals_write_nothing() {
    let s = Server::start(None).await;
    let mut b = Browser::new(&s);
    let (status, page, _) = b.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-project="calc""#) && page.contains(r#"data-project="busy""#));
    assert!(page.contains(r#"<label for="f-title">"#), "labelled form");
    assert!(b.cookies.iter().any(|c| c.starts_with("orch_session=")));
    let token = csrf(&page);

    // Refused by the API's own checks: the page again, the message at the
    // field, the typed values kept, nothing written.
    let before = s.written();
    let (status, page, _) = b
        .post(
            "/actions/tasks",
            &[
                ("csrf", &token),
                ("project", "calc"),
                ("title", "Fix add"),
                ("allowed_files", "calc.py\n../etc/passwd"),
            ],
        )
        .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("The task was not added"), "{page}");
    assert!(page.contains("allowed_files[1]"), "{page}");
    assert!(page.contains(r#"aria-invalid="true""#), "{page}");
    assert!(page.contains("../etc/passwd"), "the typed value is kept");
    assert_eq!(s.written(), before);

    // Without the CSRF token: refused, nothing written.
    let (status, page, _) = b
        .post(
            "/actions/tasks",
            &[("project", "calc"), ("title", "Fix add")],
        )
        .await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("security token"), "{page}");
    assert_eq!(s.written(), before);

    // Accepted: a redirect to the overview, which names the task.
    let (status, _, location) = b
        .post(
            "/actions/tasks",
            &[
                ("csrf", &token),
                ("project", "calc"),
                ("title", "Fix add"),
                ("type", "fix"),
                ("acceptance_tests", "test_calc.py::test_add"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let location = location.unwrap();
    let id = location
        .split("task=")
        .nth(1)
        .unwrap()
        .split('#')
        .next()
        .unwrap()
        .to_string();
    let task = s.store.task(&id).unwrap();
    assert_eq!(task.acceptance_tests, ["test_calc.py::test_add"]);
    assert_eq!(
        s.control.calls.lock().unwrap().as_slice(),
        ["calc"],
        "work starts"
    );
    let (_, page, _) = b.get(&location).await;
    assert!(page.contains("Task <a href") && page.contains(&format!(r#"data-task="{id}""#)));

    // The task page and its fragment.
    let (status, page, _) = b.get(&format!("/tasks/{id}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("<h1>Fix add") && page.contains("test_calc.py::test_add"));
    assert!(page.contains(&format!(r#"data-live="/fragments/tasks/{id}""#)));
    let (status, frag, _) = b.get(&format!("/fragments/tasks/{id}")).await;
    assert_eq!(status, 200);
    assert!(!frag.contains("<html") && frag.contains("<h1>Fix add"));

    // Answering a task that asked nothing: the store's refusal, shown.
    let (status, page, _) = b
        .post(
            &format!("/actions/tasks/{id}/answer"),
            &[("csrf", &token), ("answer", "sum")],
        )
        .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("pending"), "{page}");
    assert_eq!(s.store.task(&id).unwrap().answer, None);

    // Cancel, then retry.
    let (status, _, location) = b
        .post(&format!("/actions/tasks/{id}/cancel"), &[("csrf", &token)])
        .await;
    assert_eq!(
        (status.as_u16(), location.as_deref()),
        (303, Some(format!("/tasks/{id}?done=cancelled").as_str()))
    );
    assert_eq!(s.store.task(&id).unwrap().status, TaskStatus::Cancelled);
    let (status, _, _) = b
        .post(&format!("/actions/tasks/{id}/retry"), &[("csrf", &token)])
        .await;
    assert_eq!(status, 303);
    assert_eq!(s.store.task(&id).unwrap().status, TaskStatus::Pending);

    // Pause with a reason, resume, start work now (refused for `busy`).
    let (status, _, _) = b
        .post(
            "/actions/projects/calc/pause",
            &[("csrf", &token), ("reason", "lunch")],
        )
        .await;
    assert_eq!(status, 303);
    let row = s.store.project("calc").unwrap();
    assert!(row.paused);
    assert_eq!(row.pause_reason.as_deref(), Some("lunch"));
    let (_, page, _) = b.get("/?done=paused&project=calc").await;
    assert!(
        page.contains("Paused: lunch") && page.contains("Project calc paused"),
        "{page}"
    );
    let (status, _, _) = b
        .post("/actions/projects/calc/resume", &[("csrf", &token)])
        .await;
    assert_eq!(status, 303);
    assert!(!s.store.project("calc").unwrap().paused);
    let (status, page, _) = b
        .post("/actions/projects/busy/run", &[("csrf", &token)])
        .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("resume it first"), "{page}");

    // Unknown task: a 404 page.
    let (status, page, _) = b.get("/tasks/ffffffffffff").await;
    assert_eq!(status, 404);
    assert!(page.contains("orch tasks"), "{page}");
    // The plots are drawn even with nothing to show.
    let (status, plots, _) = b.get("/fragments/overview/plots").await;
    assert_eq!(status, 200);
    assert!(plots.contains(r#"id="plot-cost""#) && plots.contains("Nothing to show yet"));
    // The assets are served from the binary.
    let js = reqwest::get(s.url("/assets/dashboard.js")).await.unwrap();
    assert!(js.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.text().await.unwrap().contains("EventSource"));
}

#[tokio::test]
async fn with_a_token_the_pages_ask_for_it_and_the_cookie_reads_the_events() {
    let s = Server::start(Some("tok-123")).await;
    let mut b = Browser::new(&s);
    let (status, _, location) = b.get("/tasks/abcd?x=1").await;
    assert_eq!(status, 303);
    assert_eq!(location.as_deref(), Some("/login?next=/tasks/abcd%3Fx%3D1"));
    let (status, _, _) = b.get("/fragments/overview").await;
    assert_eq!(status, 401);
    let (status, page, _) = b.get("/login?next=/tasks/abcd").await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"<label for="token">"#), "{page}");
    let token = csrf(&page);
    let (status, page, _) = b
        .post(
            "/login",
            &[
                ("csrf", &token),
                ("token", "wrong"),
                ("next", "/tasks/abcd"),
            ],
        )
        .await;
    assert_eq!(status, 401);
    assert!(page.contains("not the server's token"), "{page}");
    // A login from another site is refused even with the right token.
    let resp = b
        .http
        .post(s.url("/login"))
        .header(COOKIE, b.cookies.join("; "))
        .header("origin", "http://evil.example")
        .form(&[("csrf", token.as_str()), ("token", "tok-123")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let (status, _, location) = b
        .post(
            "/login",
            &[
                ("csrf", &token),
                ("token", "tok-123"),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!((status.as_u16(), location.as_deref()), (303, Some("/")));
    assert!(b.cookies.iter().any(|c| c.starts_with("orch_token=")));
    let (status, page, _) = b.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("Log out"), "{page}");
    // The cookie reads the event stream (as the page's script does).
    let resp = b
        .http
        .get(s.url("/api/v1/events?follow=false"))
        .header(COOKIE, b.cookies.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Logging out forgets the token.
    let (status, _, _) = b.post("/logout", &[("csrf", &csrf(&page))]).await;
    assert_eq!(status, 303);
    let (status, _, location) = b.get("/").await;
    assert_eq!(
        (status.as_u16(), location.as_deref()),
        (303, Some("/login?next=/"))
    );
}

/// A verdict as the judge records it.
fn verdict(passed: bool, score: f64) -> serde_json::Value {
    serde_json::json!({
        "passed": passed, "score": score, "reasoning": "read it", "issues": [],
        "gates": [{"name": "tests", "passed": passed, "detail": "pytest"}]
    })
}

fn iteration(
    n: u32,
    score: f64,
    outcome: orch_core::IterationOutcome,
    best: (u32, f64),
    commit: &str,
) -> orch_core::RefineIteration {
    orch_core::RefineIteration {
        iteration: n,
        score: Some(score),
        commit: Some(commit.to_string()),
        tests_passed: true,
        verdict_passed: score >= 7.0,
        outcome,
        best_score: Some(best.1),
        best_iteration: best.0,
        note: None,
    }
}

/// The HTML of the element whose opening tag contains `marker`, up to the
/// next `</tr>` (one table row).
fn row<'a>(html: &'a str, marker: &str) -> &'a str {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {html}"));
    let end = html[at..].find("</tr>").unwrap() + at;
    &html[at..end]
}

#[tokio::test]
async fn the_task_page_marks_candidates_resolutions_and_refinement_iterations() {
    use orch_core::{AttemptKind, AttemptStatus, IterationOutcome, TaskId};
    use orch_state::{AttemptFinish, CandidateStart};
    let s = Server::start(None).await;
    let id = TaskId::from(s.add_task("Fix add").await["id"].as_str().unwrap());
    let store = &s.store;

    // A best-of-N round: c1 failed, c3 ranked above c2.
    let branch = |k: u32| format!("orch/{id}-c{k}");
    let mut candidates = Vec::new();
    for k in 1..=3 {
        let b = branch(k);
        let slot = CandidateStart {
            candidate: k,
            round: 1,
            branch: &b,
        };
        candidates.push(store.start_candidate(&id, "base0000", &slot).unwrap());
    }
    let finish = |a: &orch_core::Attempt, status, score, rank: Option<(u32, &str)>, counted| {
        let mut f = AttemptFinish::new(status);
        f.verdict = Some(verdict(status == AttemptStatus::Passed, score));
        f.rank = rank.map(|r| r.0);
        f.rank_reason = rank.map(|r| r.1.to_string());
        f.counted = counted;
        store.finish_attempt(a.id, &f).unwrap();
    };
    finish(&candidates[0], AttemptStatus::Failed, 3.0, None, false);
    finish(
        &candidates[1],
        AttemptStatus::Passed,
        6.5,
        Some((2, "special-cases the tested input")),
        false,
    );
    finish(
        &candidates[2],
        AttemptStatus::Passed,
        9.0,
        Some((1, "adds any two numbers")),
        true,
    );

    // A refining attempt: kept, reverted, kept.
    let refining = store.start_attempt(&id, "base0000").unwrap();
    for it in [
        iteration(1, 6.0, IterationOutcome::Kept, (1, 6.0), "aaaaaaaaaaaa1111"),
        iteration(
            2,
            5.0,
            IterationOutcome::Reverted,
            (1, 6.0),
            "bbbbbbbbbbbb2222",
        ),
        iteration(3, 8.5, IterationOutcome::Kept, (3, 8.5), "cccccccccccc3333"),
    ] {
        store.record_iteration(refining.id, &it).unwrap();
    }
    finish(&refining, AttemptStatus::Passed, 8.5, None, true);

    // The merge queue's resolver.
    let resolver = store
        .start_attempt_of_kind(&id, "main0000", AttemptKind::Resolve)
        .unwrap();
    finish(&resolver, AttemptStatus::Passed, 8.0, None, true);

    let mut b = Browser::new(&s);
    let (status, page, _) = b.get(&format!("/tasks/{id}")).await;
    assert_eq!(status, 200, "{page}");

    // The attempts table: each candidate with its number, round, rank,
    // reason and branch; the resolver marked as not counted.
    let c3 = row(&page, r#"<tr data-attempt="3" data-kind="work">"#);
    for needle in [
        r#"<span class="candidate" data-candidate="3">c3</span>"#,
        " · round 1",
        "ranked 1 (chosen)",
        "adds any two numbers",
        &format!(r#"<code class="branch">{}</code>"#, branch(3)),
    ] {
        assert!(c3.contains(needle), "{needle:?} in {c3}");
    }
    let c2 = row(&page, r#"<tr data-attempt="2" data-kind="work">"#);
    assert!(
        c2.contains(r#"data-rank="2">ranked 2<"#) && c2.contains("special-cases"),
        "{c2}"
    );
    let c1 = row(&page, r#"<tr data-attempt="1" data-kind="work">"#);
    assert!(c1.contains("c1") && c1.contains("not ranked"), "{c1}");
    let r = row(&page, r#"<tr data-attempt="5" data-kind="resolve">"#);
    assert!(r.contains("conflict resolution, not counted"), "{r}");
    let refined = row(&page, r#"<tr data-attempt="4" data-kind="work">"#);
    assert!(
        refined.contains(r##"href="#refine-4">3 refinement iterations"##),
        "{refined}"
    );

    // The attempts' own sections say the same in words.
    assert!(
        page.contains("Attempt 3 ") && page.contains(" · candidate c3"),
        "{page}"
    );
    assert!(page.contains("does not count against max_attempts"));
    assert!(page.contains("not ranked (it did not pass)"));

    // The refinement section: one row per iteration, its score, outcome
    // and commit's short id.
    let at = page.find(r#"id="refine-4""#).expect("a refinement section");
    let section = &page[at..at + page[at..].find("</section>").unwrap()];
    assert!(section.contains("3 iterations"), "{section}");
    assert!(
        section.contains("Best: iteration 3, score 8.5"),
        "{section}"
    );
    let it2 = row(section, r#"data-iteration="2""#);
    assert!(
        it2.contains(r#"data-outcome="reverted""#)
            && it2.contains("<td>5.0</td>")
            && it2.contains("reverted to iteration 1")
            && it2.contains("<code>bbbbbbbbbb</code>"),
        "{it2}"
    );
    let it3 = row(section, r#"data-iteration="3""#);
    assert!(
        it3.contains(r#"data-outcome="kept""#) && it3.contains("<code>cccccccccc</code>"),
        "{it3}"
    );

    // The score plot: a bar per plain attempt and per iteration, coloured
    // by what became of it.
    let at = page.find(r#"id="plot-attempt-scores""#).unwrap();
    let plot = &page[at..at + page[at..].find("</figure>").unwrap()];
    for title in [
        "<title>attempt 3, attempt: 9.0</title>",
        "<title>attempt 4, iteration 1, iteration kept: 6.0</title>",
        "<title>attempt 4, iteration 2, iteration reverted: 5.0</title>",
        "<title>attempt 4, iteration 3, iteration kept: 8.5</title>",
        "<title>attempt 5, attempt: 8.0</title>",
    ] {
        assert!(plot.contains(title), "{title} in {plot}");
    }
    assert_eq!(plot.matches(r#"<rect class="bar""#).count(), 7, "{plot}");
    assert!(plot.contains("4 · it 2") && plot.contains("iteration reverted"));
    assert!(
        !plot.contains("attempt 4, attempt"),
        "a refined attempt is drawn by its iterations"
    );
}

#[tokio::test]
async fn the_overview_says_a_worker_resolves_a_conflict_and_names_new_event_kinds() {
    use orch_core::{AttemptKind, TaskId};
    let s = Server::start(None).await;
    let id = TaskId::from(s.add_task("Fix add").await["id"].as_str().unwrap());
    assert!(s
        .store
        .transition(&id, &[TaskStatus::Pending], TaskStatus::Merging, "t")
        .unwrap());
    let resolver = s
        .store
        .start_attempt_of_kind(&id, "main0000", AttemptKind::Resolve)
        .unwrap();
    let ev = orch_protocol::Event::new(
        "calc",
        orch_protocol::ConflictResolving {
            attempt_id: resolver.id,
            number: resolver.number,
            files: vec!["calc.py".into()],
            onto: "main0000".into(),
            model: Some("sim:any".into()),
            worker: Some("builtin".into()),
        },
        "attempt 1: sim:any resolves the merge conflict in calc.py",
    )
    .task(id.as_str());
    s.store.record(&ev).unwrap();

    let mut b = Browser::new(&s);
    let (_, page, _) = b.get("/").await;
    let at = page.find(r#"<section id="workers""#).unwrap();
    let workers = &page[at..at + page[at..].find("</section>").unwrap()];
    let r = row(workers, &format!(r#"<tr data-task="{id}">"#));
    for needle in [
        "merge (resolving a conflict)",
        "1 (conflict resolution)",
        r#"<small class="event-kind" data-kind="conflict_resolving">merge conflict</small>"#,
        "resolves the merge conflict in calc.py",
    ] {
        assert!(r.contains(needle), "{needle:?} in {r}");
    }
}
