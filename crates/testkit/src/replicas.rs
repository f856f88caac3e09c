//! N real `portcullis` processes on port 0, sharing whatever store and database their settings
//! name; their JSON logs are kept, so tests can count what each replica did.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::process::ChildGuard;

/// One running replica.
struct Replica {
    address: String,
    logs: Arc<Mutex<Vec<Value>>>,
    _child: ChildGuard,
}

/// Several replicas of one deployment.
pub struct Replicas {
    replicas: Vec<Replica>,
}

impl Replicas {
    /// Starts `count` replicas of the binary at `bin` with `env` on top of test defaults
    /// (port 0, JSON logs, cheap Argon2) and waits until each logs its address.
    pub async fn spawn(bin: &Path, count: usize, env: &[(&str, String)]) -> Self {
        let mut replicas = Vec::new();
        for _ in 0..count {
            replicas.push(spawn_one(bin, env).await);
        }
        Self { replicas }
    }

    /// `http://host:port` of replica `i`.
    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.replicas[i].address)
    }

    /// How many replicas run.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Whether none run.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// The JSON log lines every replica wrote so far.
    pub fn logs(&self) -> Vec<Value> {
        self.replicas
            .iter()
            .flat_map(|r| r.logs.lock().unwrap().clone())
            .collect()
    }

    /// Finished requests, across replicas, whose span recorded `outcome` (`success`,
    /// `failure`: the password was verified; `denied`: refused before verification).
    pub fn requests_with_outcome(&self, outcome: &str) -> usize {
        self.logs()
            .iter()
            .filter(|line| line["message"] == "request finished")
            .filter(|line| line["span"]["outcome"] == outcome)
            .count()
    }
}

/// The log filter that keeps a line for every request, refused ones included.
pub const REQUEST_LINES: &str = "info,portcullis_server::request_span=debug";

async fn spawn_one(bin: &Path, env: &[(&str, String)]) -> Replica {
    let mut command = Command::new(bin);
    for (key, _) in std::env::vars() {
        if key.starts_with("PORTCULLIS__") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
        .env("PORTCULLIS__SERVER__PORT", "0")
        .env("PORTCULLIS__SERVER__WORKERS", "1")
        .env("PORTCULLIS__LOG_FORMAT", "json")
        // Tests read every request's line, refusals' too (summarised at INFO, their own at DEBUG).
        .env("PORTCULLIS__LOG_LEVEL", REQUEST_LINES)
        .env("PORTCULLIS__ARGON2__MEMORY_KIB", "256")
        .env("PORTCULLIS__ARGON2__ITERATIONS", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portcullis");
    let stderr = child.stderr.take().expect("stderr");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (address_tx, address_rx) = tokio::sync::oneshot::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        let mut address_tx = Some(address_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let address: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                if let Some(tx) = address_tx.take() {
                    let _ = tx.send(address);
                }
            }
            let parsed = serde_json::from_str(&line).unwrap_or(Value::String(line));
            sink.lock().unwrap().push(parsed);
        }
    });
    let child = ChildGuard(child);
    let address = tokio::time::timeout(Duration::from_secs(30), address_rx)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("replica did not start: {:?}", logs.lock().unwrap()));
    Replica {
        address,
        logs,
        _child: child,
    }
}
