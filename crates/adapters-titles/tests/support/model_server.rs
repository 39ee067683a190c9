//! A scripted OpenAI-compatible model server for tests: a small poem app on
//! 127.0.0.1 answering `POST /v1/chat/completions` with the replies a test
//! queued, in order, and recording every request it received.
//!
//! Shared by this crate's tests and the server's end-to-end tests
//! (`crates/server/tests/e2e`, which include this file by path), so both
//! talk to the same fake.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json};
use poem::{handler, post, EndpointExt, IntoResponse, Response, Route, Server};
use serde_json::{json, Value};
use tokio::sync::Notify;

/// One scripted reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `200` with a chat completion whose answer is this text.
    Answer(String),
    /// Waits, then answers like [`Reply::Answer`].
    Slow(Duration, String),
    /// Says it arrived (`arrived`), waits for `release`, then answers.
    Gated {
        arrived: Arc<Notify>,
        release: Arc<Notify>,
        answer: String,
    },
    /// This status, with an OpenAI error envelope carrying `message`.
    Status(u16, String),
    /// `200` with this exact body (`application/json`).
    Raw(String),
    /// `200` with a chat completion whose `content` is `null` (a refusal).
    NullContent,
}

/// What one request carried.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The JSON body.
    pub body: Value,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl Seen {
    /// The `content` of the turn with `role`.
    pub fn turn(&self, role: &str) -> String {
        self.body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .find(|m| m["role"] == role)
            .and_then(|m| m["content"].as_str())
            .unwrap_or_else(|| panic!("no {role} turn in {}", self.body))
            .to_owned()
    }
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// A running scripted server; stopped when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct InFlight<'a>(&'a State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn completion(model: &Value, content: Value) -> Response {
    Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_764_300_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    }))
    .into_response()
}

#[handler]
async fn chat(
    Data(state): Data<&Arc<State>>,
    headers: &poem::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(state);
    let model = body["model"].clone();
    state.seen.lock().unwrap().push(Seen {
        body,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let next = state.script.lock().unwrap().pop_front();
    match next {
        Some(Reply::Answer(text)) => completion(&model, json!(text)),
        Some(Reply::Slow(delay, text)) => {
            tokio::time::sleep(delay).await;
            completion(&model, json!(text))
        }
        Some(Reply::Gated {
            arrived,
            release,
            answer,
        }) => {
            arrived.notify_one();
            release.notified().await;
            completion(&model, json!(answer))
        }
        Some(Reply::Status(status, message)) => Response::builder()
            .status(StatusCode::from_u16(status).expect("a status code"))
            .content_type("application/json")
            .body(
                json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
                    .to_string(),
            ),
        Some(Reply::Raw(body)) => Response::builder()
            .content_type("application/json")
            .body(body),
        Some(Reply::NullContent) => completion(&model, Value::Null),
        None => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .content_type("application/json")
            .body(r#"{"error": {"message": "no reply scripted for this request"}}"#),
    }
}

impl ModelServer {
    /// Starts an empty-scripted server on 127.0.0.1, on a free port.
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind 127.0.0.1:0");
        let addr = *acceptor.local_addr()[0]
            .as_socket_addr()
            .expect("a TCP address");
        let app = Route::new()
            .at("/v1/chat/completions", post(chat))
            .data(state.clone());
        let task = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self { addr, state, task }
    }

    /// The API base to configure (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues replies, answered in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many requests were received so far.
    pub fn requests(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// The most requests that were being answered at one moment.
    pub fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }
}
