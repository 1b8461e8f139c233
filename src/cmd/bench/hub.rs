//! The hub under test: a `dip-hub serve` child process on 127.0.0.1, with a
//! temporary PKI, registry and database of its own.
//!
//! Owns: the benchmark's organisations and certificates, starting the child on
//! an ephemeral loopback port, waiting until it answers, reading its peak memory
//! (so the figure is the hub's alone, not the load generator's), and stopping it
//! (SIGTERM, then SIGKILL after a deadline). Must never listen beyond loopback
//! nor leave the child running: dropping a [`ChildHub`] kills it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::transport::Channel;

use anyhow::{Result, anyhow};
use dip_hub::client::{self, ClientCerts};

use crate::cmd::io_error;
use dip_hub::pki;
use dip_hub::proto;
use dip_hub::proto::indicator_hub_service_client::IndicatorHubServiceClient;
use dip_hub::server::LISTENING_PREFIX;

/// How long a stopping hub may take to drain before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The organisation id of publisher `n` (1-based): law enforcement, may publish anything.
pub fn publisher_org(n: usize) -> String {
    format!("bench-pub-{n}")
}

/// The organisation id of subscriber `n` (1-based): a bank.
pub fn subscriber_org(n: usize) -> String {
    format!("bench-sub-{n:03}")
}

/// The benchmark measures the hub's capacity, not its per-organisation limits:
/// every benchmark organisation may use far more than a role's default.
const BENCH_LIMITS: &str = "limits = { connections = 10000, subscribe_streams = 10000, \
    snapshots = 100, publishes_in_flight = 100000, publish_events_per_second = 10000000, \
    publish_burst = 10000000, lookups_per_second = 10000000 }\n";

/// A registry listing `publishers` law-enforcement and `subscribers` bank
/// organisations, with limits far above the roles' defaults.
pub fn registry_toml(publishers: usize, subscribers: usize) -> String {
    let mut text = String::from("# Written by `dip-hub bench`.\n");
    for n in 1..=publishers {
        let id = publisher_org(n);
        text.push_str(&format!(
            "\n[[org]]\nid = \"{id}\"\nname = \"Benchmark publisher {n}\"\nrole = \"LAW_ENFORCEMENT\"\n{BENCH_LIMITS}"
        ));
    }
    for n in 1..=subscribers {
        let id = subscriber_org(n);
        text.push_str(&format!(
            "\n[[org]]\nid = \"{id}\"\nname = \"Benchmark subscriber {n}\"\nrole = \"BANK\"\n{BENCH_LIMITS}"
        ));
    }
    text
}

/// A temporary directory with the PKI and registry every hub of the run uses;
/// removed when dropped.
pub struct BenchDir {
    dir: TempDir,
}

impl BenchDir {
    /// Writes a registry and issues a certificate for each organisation.
    pub fn new(publishers: usize, subscribers: usize) -> Result<BenchDir> {
        let dir = tempfile::Builder::new()
            .prefix("dip-bench-")
            .tempdir()
            .map_err(|e| io_error("creating the benchmark's temporary directory", e))?;
        let registry = dir.path().join("orgs.toml");
        std::fs::write(&registry, registry_toml(publishers, subscribers))
            .map_err(|e| io_error(format!("writing {}", registry.display()), e))?;
        let orgs: Vec<String> = (1..=publishers)
            .map(publisher_org)
            .chain((1..=subscribers).map(subscriber_org))
            .collect();
        pki::init_dev_pki(&dir.path().join("pki"), &orgs, &["localhost", "127.0.0.1"])?;
        // For profiling a loaded database afterwards (e.g. the hub's start-up).
        let mut dir = dir;
        if std::env::var_os("DIP_BENCH_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!(
                "DIP_BENCH_KEEP: keeping {} (delete it yourself)",
                dir.path().display()
            );
        }
        Ok(BenchDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub fn certs(&self, org: &str) -> ClientCerts {
        ClientCerts::dev(&self.pki_dir(), org)
    }
}

/// A running hub child process.
pub struct ChildHub {
    child: Child,
    pid: u32,
    url: String,
    log_path: PathBuf,
    data_dir: PathBuf,
}

impl ChildHub {
    /// Starts `dip-hub serve` (this very executable) on a fresh database under
    /// `bench`, and waits until it answers a request, for at most `startup`.
    pub async fn start(bench: &BenchDir, name: &str, startup: Duration) -> Result<ChildHub> {
        ChildHub::start_with(bench, name, startup, &[]).await
    }

    /// [`ChildHub::start`] with more `serve` arguments (e.g. `--cluster`).
    pub async fn start_with(
        bench: &BenchDir,
        name: &str,
        startup: Duration,
        extra: &[String],
    ) -> Result<ChildHub> {
        let exe =
            std::env::current_exe().map_err(|e| io_error("finding the dip-hub executable", e))?;
        let data_dir = bench.path().join(format!("{name}-data"));
        let log_path = bench.path().join(format!("{name}-hub.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| io_error(format!("creating {}", log_path.display()), e))?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--certs-dir")
            .arg(bench.pki_dir())
            .arg("--registry")
            .arg(bench.path().join("orgs.toml"))
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("DIP_BENCH_HUB_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io_error("starting the hub child process", e))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the hub child process exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("the hub child process has no stdout"))?;
        let mut hub = ChildHub {
            child,
            pid,
            url: String::new(),
            log_path,
            data_dir,
        };
        let (found, address) = tokio::sync::oneshot::channel();
        tokio::spawn(read_stdout(stdout, found));
        let addr = tokio::time::timeout(startup, address)
            .await
            .map_err(|_| hub.failed(&format!("did not listen within {startup:?}")))?
            .unwrap_or_else(|_| Err("stopped reading its stdout".into()))
            .map_err(|e| hub.failed(&e))?;
        hub.url = format!("https://localhost:{}", addr.port());
        tokio::time::timeout(startup, hub.wait_ready(bench))
            .await
            .map_err(|_| hub.failed(&format!("did not answer within {startup:?}")))?;
        Ok(hub)
    }

    /// Retries connecting and one lookup until the hub answers.
    async fn wait_ready(&self, bench: &BenchDir) {
        let certs = bench.certs(&subscriber_org(1));
        loop {
            if let Ok(mut client) = client::connect(&self.url, &certs).await {
                let probe = client
                    .lookup(proto::LookupRequest {
                        kind: proto::IndicatorKind::PhoneNumber as i32,
                        value: "+919000000000".into(),
                    })
                    .await;
                if probe.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// An error naming what went wrong, with the end of the hub's log.
    fn failed(&mut self, what: &str) -> anyhow::Error {
        let exited = match self.child.try_wait() {
            Ok(Some(status)) => format!(" (it exited: {status})"),
            _ => String::new(),
        };
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow!(
            "the hub {what}{exited}; its log ({}) ends:\n{}",
            self.log_path.display(),
            tail.join("\n")
        )
    }

    /// The hub's gRPC address (`https://localhost:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// kill -9, and reap it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// A client acting as `org`, on a connection of its own.
    pub async fn client(
        &self,
        bench: &BenchDir,
        org: &str,
    ) -> Result<IndicatorHubServiceClient<Channel>> {
        Ok(client::connect(&self.url, &bench.certs(org)).await?)
    }

    /// A raw channel acting as `org`, on a connection of its own.
    pub async fn channel(&self, bench: &BenchDir, org: &str) -> Result<Channel> {
        Ok(client::channel(&self.url, &bench.certs(org)).await?)
    }

    /// The hub's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status_kib(&status, "VmHWM:").map(|kib| kib * 1024)
    }

    /// The hub's resident memory now (VmRSS), in bytes.
    pub fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status_kib(&status, "VmRSS:").map(|kib| kib * 1024)
    }

    /// Bytes the hub's database takes on disk (blocks allocated to its files).
    pub fn disk_bytes(&self) -> Result<u64> {
        fn walk(dir: &Path) -> std::io::Result<u64> {
            use std::os::unix::fs::MetadataExt;
            let mut total = 0;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let metadata = entry.metadata()?;
                total += if metadata.is_dir() {
                    walk(&entry.path())?
                } else {
                    metadata.blocks() * 512
                };
            }
            Ok(total)
        }
        walk(&self.data_dir).map_err(|e| io_error("measuring the hub's database on disk", e))
    }

    /// A meter of the CPU time the hub and this load generator use from now on.
    pub fn cpu_meter(&self) -> CpuMeter {
        CpuMeter {
            pid: self.pid,
            started: Instant::now(),
            hub: cpu_seconds(&self.pid.to_string()),
            bench: cpu_seconds("self"),
        }
    }

    /// Asks the hub to stop (SIGTERM) and waits for it, killing it after a
    /// deadline; then deletes its database and syncs the disk, so that data still
    /// being written back does not slow the fsyncs of the next run.
    pub async fn stop(self) -> Result<()> {
        let data_dir = self.data_dir.clone();
        let stopped = self.terminate().await;
        if std::env::var_os("DIP_BENCH_KEEP").is_some() {
            return stopped;
        }
        let removed = tokio::task::spawn_blocking(move || {
            let removed = std::fs::remove_dir_all(&data_dir);
            // SAFETY: sync(2) takes no arguments and has no memory effects; it
            // writes back what the machine has dirty, so the next run starts settled.
            unsafe { libc::sync() };
            removed
        })
        .await
        .map_err(|e| anyhow!("removing the hub's database: {e}"))?;
        stopped?;
        removed.map_err(|e| io_error("removing the hub's database", e))
    }

    /// Asks the hub to stop (SIGTERM) and waits for it, keeping its database.
    pub async fn terminate(mut self) -> Result<()> {
        if let Ok(Some(_)) = self.child.try_wait() {
            return Err(self.failed("had already exited"));
        }
        let pid = libc::pid_t::try_from(self.pid)
            .map_err(|_| anyhow!("hub pid {} out of range", self.pid))?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped: try_wait
        // above saw it running) and a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        match tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(self.failed(&format!("stopped with {status}"))),
            Ok(Err(e)) => Err(io_error("waiting for the hub to stop", e)),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(self.failed(&format!("did not stop within {STOP_DEADLINE:?}; killed")))
            }
        }
    }
}

/// Reads the child's stdout, sends where `serve` says it listens, then drains
/// the rest (so the child never writes into a closed pipe).
async fn read_stdout(
    stdout: tokio::process::ChildStdout,
    found: tokio::sync::oneshot::Sender<std::result::Result<std::net::SocketAddr, String>>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let mut found = Some(found);
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                if let Some(found) = found.take() {
                    let _ = found.send(Err(format!("stdout could not be read: {e}")));
                }
                return;
            }
        };
        if let Some(addr) = line.strip_prefix(LISTENING_PREFIX)
            && let Some(found) = found.take()
        {
            let _ =
                found.send(addr.trim().parse().map_err(|e| {
                    format!("printed an address that does not parse ({line:?}): {e}")
                }));
        }
    }
    if let Some(found) = found.take() {
        let _ = found.send(Err(
            "closed its stdout without saying where it listens".into()
        ));
    }
}

/// CPU time used by the hub and by the load generator over a measurement, to
/// show which side of the shared machine is busy.
pub struct CpuMeter {
    pid: u32,
    started: Instant,
    hub: Option<f64>,
    bench: Option<f64>,
}

impl CpuMeter {
    /// "CPU: hub 0.58 cores, load generator 0.26 cores", averaged since the start.
    pub fn note(&self) -> String {
        let wall = self.started.elapsed().as_secs_f64().max(f64::EPSILON);
        let cores = |before: Option<f64>, now: Option<f64>| match (before, now) {
            (Some(before), Some(now)) => format!("{:.2}", (now - before) / wall),
            _ => "?".into(),
        };
        format!(
            "CPU while measuring: hub {} cores, load generator {} cores",
            cores(self.hub, cpu_seconds(&self.pid.to_string())),
            cores(self.bench, cpu_seconds("self")),
        )
    }
}

/// User plus system CPU seconds of process `pid` ("self" for this one), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no memory effects; _SC_CLK_TCK is a valid name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then_some(())?;
    let ticks_used = stat_ticks(&stat)?;
    Some(ticks_used as f64 / ticks as f64)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; fields after it follow its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state), so utime (14) is index 11 and stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_lists_publishers_and_subscribers() {
        let registry = dip_hub::registry::Registry::parse(&registry_toml(2, 3)).expect("parses");
        let orgs = registry.all();
        assert_eq!(orgs.len(), 5);
        assert_eq!(
            registry.active("bench-pub-2").expect("publisher").role,
            dip_hub::registry::Role::LawEnforcement
        );
        assert_eq!(
            registry.active("bench-sub-003").expect("subscriber").role,
            dip_hub::registry::Role::Bank
        );
    }

    #[test]
    fn reads_cpu_ticks_from_proc_stat() {
        let stat = "4242 (dip hub (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 6 0";
        assert_eq!(stat_ticks(stat), Some(300));
        assert_eq!(stat_ticks("garbage"), None);
        assert!(
            cpu_seconds("self").is_some(),
            "this process has a stat file"
        );
    }

    #[test]
    fn reads_peak_memory_from_proc_status() {
        let status =
            "Name:\tdip-hub\nVmPeak:\t  200000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(51_234));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }
}
