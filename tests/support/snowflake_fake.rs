//! The Snowflake protocol fake (`infra/local/snowflake_fake.py`): a private
//! one for a test ([`SnowflakeFake`], its own emulator behind it, its
//! faults, settings and log the test's alone), or the control of a running
//! one ([`FakeControl`], the stack's, with faults scoped to a database).

use std::ops::Deref;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// The control API of a running fake.
pub struct FakeControl {
    pub url: String,
    http: reqwest::Client,
}

/// A fake of the test's own, stopped when dropped.
pub struct SnowflakeFake {
    child: Child,
    control: FakeControl,
}

impl Deref for SnowflakeFake {
    type Target = FakeControl;
    fn deref(&self) -> &FakeControl {
        &self.control
    }
}

impl SnowflakeFake {
    /// Starts a fake that chunks results over `chunk_rows` rows (0: never).
    pub async fn start(chunk_rows: usize, inline_rows: usize) -> Self {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let python = std::env::var("STACK_VENV")
            .map(|v| format!("{v}/bin/python"))
            .unwrap_or_else(|_| format!("{root}/.local/venv/bin/python"));
        let port = super::free_port();
        let child = Command::new(&python)
            .arg(format!("{root}/infra/local/snowflake_fake.py"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--chunk-rows", &chunk_rows.to_string()])
            .args(["--inline-rows", &inline_rows.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {python} infra/local/snowflake_fake.py: {e}"));
        let fake = Self {
            child,
            control: FakeControl::at(&format!("http://127.0.0.1:{port}")),
        };
        for _ in 0..300 {
            if fake.http.get(fake.control("settings")).send().await.is_ok() {
                return fake;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Snowflake fake did not start on port {port} within 15 s");
    }
}

impl FakeControl {
    /// The fake serving `url` (the stack's `SNOWFLAKE_ENDPOINT_URL`).
    pub fn at(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    fn control(&self, what: &str) -> String {
        format!("{}/fake/{what}", self.url)
    }

    async fn post(&self, what: &str, body: Value) -> Value {
        let reply = self
            .http
            .post(self.control(what))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /fake/{what}: {e}"));
        let status = reply.status();
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST /fake/{what}: {status} {body}");
        body
    }

    /// Appends fault rules (see the fake's module doc).
    pub async fn faults(&self, rules: Value) {
        self.post("faults", json!({ "faults": rules })).await;
    }

    pub async fn settings(&self, settings: Value) {
        self.post("settings", settings).await;
    }

    /// Clears faults and the request log.
    pub async fn reset(&self) {
        self.post("reset", json!({})).await;
    }

    /// Removes the rules scoped to `database` (nothing else).
    pub async fn clear_faults_of(&self, database: &str) {
        self.post(&format!("reset?database={database}"), json!({}))
            .await;
    }

    /// Every protocol request so far.
    pub async fn log(&self) -> Vec<Value> {
        self.log_of(None).await
    }

    /// The protocol requests of the sessions logged into `database` (all
    /// when None).
    pub async fn log_of(&self, database: Option<&str>) -> Vec<Value> {
        let mut url = self.control("log");
        if let Some(db) = database {
            url = format!("{url}?database={db}");
        }
        let log: Value = self
            .http
            .get(url)
            .send()
            .await
            .expect("GET /fake/log")
            .json()
            .await
            .expect("the fake's log is JSON");
        log["requests"].as_array().cloned().unwrap_or_default()
    }

    /// The logged requests of one route.
    pub async fn requests(&self, route: &str) -> Vec<Value> {
        self.log()
            .await
            .into_iter()
            .filter(|r| r["route"] == route)
            .collect()
    }
}

impl Drop for SnowflakeFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
