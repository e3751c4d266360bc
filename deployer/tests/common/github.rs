//! A loopback fake of the GitHub REST API's pull-request comments (there is no GitHub
//! here): it keeps one pull request's comments as GitHub would, and counts requests.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The comments of one pull request (`(id, body)`, in creation order) and the number
/// of requests the fake has answered.
#[derive(Clone, Default)]
pub struct Comments(pub Arc<Mutex<Vec<(u64, String)>>>, pub Arc<Mutex<usize>>);

impl Respond for Comments {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        *self.1.lock().expect("lock") += 1;
        let mut comments = self.0.lock().expect("lock");
        let body = || -> String {
            serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v["body"].as_str().map(str::to_string))
                .unwrap_or_default()
        };
        let as_json = |id: u64, b: &str| json!({ "id": id, "body": b, "user": { "login": "github-actions[bot]" } });
        let path = req.url.path().to_string();
        match (req.method.as_str(), path.contains("/issues/comments/")) {
            ("GET", false) => ResponseTemplate::new(200).set_body_json(
                comments
                    .iter()
                    .map(|(i, b)| as_json(*i, b))
                    .collect::<Vec<_>>(),
            ),
            ("POST", false) => {
                let id = 1000 + comments.len() as u64;
                comments.push((id, body()));
                ResponseTemplate::new(201)
                    .set_body_json(as_json(id, &comments[comments.len() - 1].1))
            }
            ("PATCH", true) => {
                let id: u64 = path
                    .rsplit('/')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                match comments.iter_mut().find(|(i, _)| *i == id) {
                    Some(c) => {
                        c.1 = body();
                        ResponseTemplate::new(200).set_body_json(as_json(id, &c.1))
                    }
                    None => {
                        ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"}))
                    }
                }
            }
            _ => ResponseTemplate::new(405).set_body_json(json!({"message": "unexpected"})),
        }
    }
}

/// Starts the fake for the repository `acme/shop`: its issue endpoints answer from one
/// [`Comments`].
pub async fn start() -> (MockServer, Comments) {
    let server = MockServer::start().await;
    let c = Comments::default();
    Mock::given(wiremock::matchers::path_regex(
        r"^/repos/acme/shop/issues/.*",
    ))
    .respond_with(c.clone())
    .mount(&server)
    .await;
    (server, c)
}
