//! The README's first command, `dip-hub demo`, run as a user would: the real
//! binary, its own development PKI (made in a temporary directory) and a fresh
//! temporary database.

use std::time::Duration;

use tokio::process::Command;

/// Regression: after the hub learned to answer UNAVAILABLE while it starts
/// (health NOT_SERVING until the database is open), the demo connected at once
/// and failed with "the hub is starting". It now waits until the hub serves.
#[tokio::test]
async fn the_demo_runs_to_the_end_on_a_fresh_machine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/orgs.toml");
    let run = Command::new(env!("CARGO_BIN_EXE_dip-hub"))
        .arg("demo")
        .arg("--certs-dir")
        .arg(dir.path().join("dev"))
        .args(["--registry", registry])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the demo ends within 2 minutes")
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.starts_with("== DIP Hub demo =="), "{stdout}");
    assert!(
        stdout.contains("the hub stopped cleanly; every acknowledged event was on disk"),
        "{stdout}"
    );
    assert!(
        stdout.contains("tsp-one        received"),
        "the TSP's stream reported: {stdout}"
    );
}
