//! Outside programs the tests need, provisioned into the build directory.
//!
//! Owns: installing Python packages with `pip install --target target/py-deps`
//! when they are missing (saying so on stderr), once per package, safely when
//! several tests (or test processes) ask at the same time. Never skips: if
//! Python or pip is missing, the test that asked fails and says why.

#![allow(dead_code)]

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Serialises provisioning within this test process (the file lock below
/// serialises it between processes).
static PROVISIONING: Mutex<()> = Mutex::new(());

/// The directory to put on PYTHONPATH so that `packages` (pip requirement
/// specifiers) import; installs the missing ones first.
pub fn python_packages(packages: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("py-deps");
    let markers = dir.join(".installed");
    let _in_process = PROVISIONING.lock().unwrap_or_else(|e| e.into_inner());
    fs::create_dir_all(&markers).expect("create target/py-deps");
    let lock = File::create(dir.join(".lock")).expect("create the py-deps lock file");
    // SAFETY: flock on a file descriptor we own; released when `lock` closes.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "locking {}", dir.join(".lock").display());
    let marker = |package: &str| markers.join(package.replace(['/', '\\', ' '], "_"));
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !marker(p).exists())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "provisioning Python packages {missing:?}: pip install --target {}",
            dir.display()
        );
        let output = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--target")
            .arg(&dir)
            .args(&missing)
            .output()
            .unwrap_or_else(|e| panic!("running python3 -m pip (is Python 3 installed?): {e}"));
        assert!(
            output.status.success(),
            "pip install {missing:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        for package in missing {
            fs::write(marker(package), b"").expect("write the installed marker");
        }
    }
    dir
}
