//! The project's own scripts fail when what they run fails, and clean up
//! after themselves.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::unique;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn executable(path: &Path, script: &str) {
    std::fs::write(path, script).expect("writing a fake tool");
    Command::new("chmod")
        .arg("+x")
        .arg(path)
        .status()
        .expect("chmod");
}

/// `make fuzz` must fail when cargo fuzz fails (it read the wrong exit
/// status and reported success).
#[test]
fn fuzz_sh_fails_when_cargo_fuzz_fails() {
    let dir = scratch("fake-fuzz");
    let bin = dir.join("bin");
    let tools = dir.join("tools");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(tools.join("bin")).unwrap();
    // cargo-fuzz "installed", and a cargo whose fuzz run fails quietly.
    executable(&tools.join("bin/cargo-fuzz"), "#!/bin/sh\nexit 0\n");
    executable(
        &bin.join("cargo"),
        "#!/bin/sh\necho 'error: the build failed' >&2\nexit 101\n",
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(root().join("infra/local/fuzz.sh"))
        .arg("1")
        .env("PATH", path)
        .env("FUZZ_TOOLS", &tools)
        .env("FUZZ_TARGETS", "retry_message")
        .output()
        .expect("running fuzz.sh");
    assert!(
        !out.status.success(),
        "fuzz.sh reported success although cargo fuzz failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `stack.sh down --dir` deletes only a stack the script made: a folder
/// without its marker is refused and left as it was.
#[test]
fn stack_down_refuses_a_folder_it_did_not_make() {
    let folder = scratch("not-a-stack");
    std::fs::write(folder.join("precious.txt"), "keep me").expect("a file");
    let out = Command::new("bash")
        .arg(root().join("infra/local/stack.sh"))
        .args(["down", "--dir"])
        .arg(&folder)
        .output()
        .expect("running stack.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refusing to delete"), "{stderr}");
    assert!(
        folder.join("precious.txt").exists(),
        "the folder was deleted"
    );
    // A folder that does not exist is already down, and is not made.
    let missing = folder.join("missing");
    let out = Command::new("bash")
        .arg(root().join("infra/local/stack.sh"))
        .args(["down", "--dir"])
        .arg(&missing)
        .output()
        .expect("running stack.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!missing.exists(), "down made the folder it was pointed at");
    let _ = std::fs::remove_dir_all(&folder);
}

/// A stack that fails half-way stops what it started (its ERR trap never
/// ran, and a half-started Postgres stayed up).
#[test]
fn a_stack_that_fails_half_way_stops_what_it_started() {
    let state = scratch("stack-fail").join("state");
    let out = Command::new("bash")
        .arg(root().join("infra/local/stack.sh"))
        .args(["up", "--dir"])
        .arg(&state)
        .env("STACK_FAIL_AFTER", "postgres")
        .output()
        .expect("running stack.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("failing after postgres"), "{stderr}");
    assert!(stderr.contains("stopping what was started"), "{stderr}");
    assert!(!state.exists(), "the stack's state was left behind");
    let running = Command::new("pgrep")
        .args(["-f", &state.display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        running.stdout.is_empty(),
        "a Postgres of the failed stack is still running: {}",
        String::from_utf8_lossy(&running.stdout)
    );
}

/// A clone in a folder only its owner may enter (root's home is 0700) brings
/// the stack up: the Postgres server, which runs as the unprivileged
/// `postgres` user, must not need to read anything inside the clone.
#[test]
fn the_stack_starts_from_a_clone_in_a_private_folder() {
    let home = scratch("private-home");
    Command::new("chmod")
        .arg("700")
        .arg(&home)
        .status()
        .expect("chmod");
    let clone = home.join("countries");
    let cloned = Command::new("git")
        .args(["clone", "--quiet", "--local", "--no-hardlinks"])
        .arg(root())
        .arg(&clone)
        .status()
        .expect("git clone");
    assert!(cloned.success(), "git clone");
    let state = clone.join(".local/stack");
    let up = Command::new("bash")
        .arg(clone.join("infra/local/stack.sh"))
        .args(["up", "--dir"])
        .arg(&state)
        // The checkout's Python environment (fakesnow, moto): installing
        // another one would only slow the test down.
        .env("STACK_VENV", root().join(".local/venv"))
        // And the checkout's `countries` build, for the migrations.
        .env("COUNTRIES_BIN", testkit::workspace_binary("countries"))
        .output()
        .expect("stack.sh up");
    let down = || {
        let _ = Command::new("bash")
            .arg(clone.join("infra/local/stack.sh"))
            .args(["down", "--dir"])
            .arg(&state)
            .output();
    };
    let stderr = String::from_utf8_lossy(&up.stderr).into_owned();
    if !up.status.success() {
        down();
        panic!("the stack did not start from a 0700 folder:\n{stderr}");
    }
    assert!(stderr.contains("Postgres 15 on 127.0.0.1"), "{stderr}");
    down();
    assert!(!state.exists(), "stack.sh down leaves nothing");
    let _ = std::fs::remove_dir_all(&home);
}
