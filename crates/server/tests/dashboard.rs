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
