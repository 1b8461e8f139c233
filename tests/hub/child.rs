//! `ChildHub`: the real `dip-hub serve` binary as a child process, for the tests
//! that need a process (kill -9, signals, the command line's settings).
//!
//! Address contract (the same as the benchmark's): the hub prints
//! `server::LISTENING_PREFIX` and its bound address on stdout once it answers
//! (database open, state view replayed).
//! Its JSON log lines (stderr) are kept, so a test can wait for one by message.
//! Must never leave the child running: dropping a `ChildHub` kills it.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dip_hub::server::LISTENING_PREFIX;
use tokio::sync::{mpsc, oneshot};

/// Upper bound for the hub to start, log a line or stop.
const WITHIN: Duration = Duration::from_secs(30);
/// Log lines kept for failure messages.
const TAIL: usize = 50;

pub struct ChildHub {
    /// `None` once [`ChildHub::exited`] took it to wait for it.
    child: Option<Child>,
    /// Where the hub listens, from its stdout line.
    pub addr: SocketAddr,
    lines: mpsc::UnboundedReceiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl ChildHub {
    /// Runs `dip-hub --log-json serve ARGS` with `env` added, and waits (bounded)
    /// for the line that gives its address.
    pub async fn start(args: &[OsString], env: &[(&str, OsString)]) -> ChildHub {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dip-hub"));
        command
            .args(["--log-json", "serve"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the dip-hub binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (address_tx, address) = oneshot::channel::<SocketAddr>();
        // Reads stdout to its end, so the pipe never fills.
        std::thread::spawn(move || {
            let mut address_tx = Some(address_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line
                    .strip_prefix(LISTENING_PREFIX)
                    .and_then(|a| a.trim().parse().ok())
                    && let Some(tx) = address_tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (lines_tx, lines) = mpsc::unbounded_channel();
        let kept = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(value) = serde_json::from_str(&line) {
                    let _ = lines_tx.send(value);
                }
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() == TAIL {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let mut hub = ChildHub {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
            seen: Vec::new(),
            tail,
        };
        match tokio::time::timeout(WITHIN, address).await {
            Ok(Ok(addr)) => hub.addr = addr,
            _ => panic!(
                "the hub did not print its address within {WITHIN:?}; its log:\n{}",
                hub.log_tail()
            ),
        }
        hub
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the hub process")
    }

    pub fn id(&mut self) -> u32 {
        self.child().id()
    }

    /// The fields of the first log line with this message (logged before or
    /// arriving within the bound).
    pub async fn logged(&mut self, message: &str) -> serde_json::Value {
        if let Some(found) = self
            .seen
            .iter()
            .find(|line| line["fields"]["message"] == message)
        {
            return found["fields"].clone();
        }
        let (lines, seen) = (&mut self.lines, &mut self.seen);
        let found = tokio::time::timeout(WITHIN, async {
            while let Some(line) = lines.recv().await {
                let fields = line["fields"].clone();
                seen.push(line);
                if fields["message"] == message {
                    return Some(fields);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(fields)) => fields,
            Ok(None) => panic!(
                "the hub exited before logging {message:?}; its log:\n{}",
                self.log_tail()
            ),
            Err(_) => panic!(
                "no {message:?} within {WITHIN:?}; its log:\n{}",
                self.log_tail()
            ),
        }
    }

    /// The log lines at `level` (`"ERROR"`, `"WARN"` ...) the hub wrote so far.
    pub fn lines_at(&mut self, level: &str) -> Vec<serde_json::Value> {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        (self.seen.iter())
            .filter(|line| line["level"] == level)
            .cloned()
            .collect()
    }

    /// kill -9, and wait until the process is gone (its database lock with it).
    pub fn kill(&mut self) {
        self.child().kill().expect("SIGKILL the hub");
        self.child().wait().expect("the killed hub is reaped");
    }

    /// Waits (bounded) for the hub to exit by itself; its exit status.
    pub async fn exited(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the hub process");
        let pid = child.id();
        let waited =
            tokio::time::timeout(WITHIN, tokio::task::spawn_blocking(move || child.wait())).await;
        match waited {
            Ok(status) => status.expect("join").expect("exit status"),
            Err(_) => {
                // SAFETY: kill(2) on the child's pid; the waiting thread reaps it.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                panic!(
                    "the hub did not exit within {WITHIN:?}; its log:\n{}",
                    self.log_tail()
                )
            }
        }
    }

    pub fn log_tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for ChildHub {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
