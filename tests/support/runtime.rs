//! A function binary under an implementation of the Lambda runtime API that
//! this project did not write: `cargo lambda watch` (PyPI `cargo-lambda`,
//! installed by `make test`) serves the runtime API and the invoke API; the
//! real binary polls it as it does in Lambda, and stays warm across
//! invocations, as Lambda keeps it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, workspace_binary, TestEnv};

fn cargo_lambda() -> PathBuf {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.local/venv/bin/cargo-lambda"
    ));
    assert!(
        path.is_file(),
        "{} is missing: `make test` installs it (infra/local/requirements-runtime.txt)",
        path.display()
    );
    path
}

/// One function under `cargo lambda watch`: the emulator, and the function
/// process polling it. Both stop when this is dropped.
pub struct UnderRuntime {
    port: u16,
    emulator: Child,
    function: Child,
}

impl Drop for UnderRuntime {
    fn drop(&mut self) {
        let _ = self.function.kill();
        let _ = self.emulator.kill();
        let _ = self.function.wait();
        let _ = self.emulator.wait();
    }
}

pub async fn start(env: &TestEnv, binary: &str) -> UnderRuntime {
    let port = free_port();
    let emulator = Command::new(cargo_lambda())
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting cargo lambda watch");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cargo lambda watch did not open its port"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What Lambda gives a function process, pointed at the emulator.
    let function = Command::new(workspace_binary(binary))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env.vars)
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{port}/.rt"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the function");
    UnderRuntime {
        port,
        emulator,
        function,
    }
}

/// Invokes the function through the emulator's invoke API, as
/// `cargo lambda invoke` does; returns the payload the function returned.
pub async fn invoke(runtime: &UnderRuntime, event: &str) -> serde_json::Value {
    let url = format!(
        "http://127.0.0.1:{}/2015-03-31/functions/_/invocations",
        runtime.port
    );
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(event.to_string())
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("invoking through the runtime API emulator");
    let text = response.text().await.expect("the invocation's payload");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}
