//! What `deploy/` ships for operators, checked against the real hub: the alert
//! rules pass `promtool check rules` and their unit tests (`promtool test
//! rules`), the alerts and the Grafana dashboard name only metrics a running
//! hub exports, and the production config and systemd unit are what the binary
//! accepts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{TestHub, TestPki, phone_indicator, publish};
use crate::operations::OpsHub as _;
use crate::provision;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `dip_...` metric name in a text (PromQL, YAML, JSON).
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("dip_") {
        if text[..start].chars().next_back().is_some_and(is_name) {
            continue;
        }
        let name: String = text[start..].chars().take_while(|c| is_name(*c)).collect();
        names.insert(name);
    }
    names
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = provision::promtool();
    let dir = deploy("prometheus");
    for args in [
        ["check", "rules", "dip-hub.rules.yml"],
        ["test", "rules", "dip-hub.rules.test.yml"],
    ] {
        let output = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        assert!(
            output.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn the_alerts_and_the_dashboard_name_only_metrics_the_hub_exports() {
    let hub = TestHub::start_ops(
        TestPki::new(),
        std::sync::Arc::new(tempfile::tempdir().expect("temp dir")),
        |_| {},
    )
    .await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![phone_indicator(1)]).await;
    let (status, text) = hub.http_get("/metrics").await;
    assert!(status.contains("200"), "{status}");
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    assert!(exported.contains("dip_disk_available_bytes"), "{text}");
    assert!(exported.contains("dip_publishes_in_flight"), "{text}");

    let dashboard: serde_json::Value = serde_json::from_str(&read(&deploy("grafana/dip-hub.json")))
        .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut dashboard_names = BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"]
            .as_array()
            .expect("every panel has targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let names = metric_names(expr);
            assert!(!names.is_empty() || expr.starts_with("up{"), "{expr}");
            dashboard_names.extend(names);
        }
    }
    let rules = metric_names(&read(&deploy("prometheus/dip-hub.rules.yml")));
    for (file, names) in [("dashboard", &dashboard_names), ("alert rules", &rules)] {
        let unknown: Vec<_> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "the {file} name metrics the hub does not export: {unknown:?}"
        );
    }
    // Every metric family the hub exports is on the dashboard.
    let families: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_string)
        .collect();
    let shown: Vec<_> = families
        .iter()
        .filter(|family| {
            !dashboard_names
                .iter()
                .any(|name| name.starts_with(family.as_str()))
        })
        .collect();
    assert!(
        shown.is_empty(),
        "metrics missing from the dashboard: {shown:?}"
    );
}

#[test]
fn the_production_config_and_the_systemd_unit_are_what_the_binary_accepts() {
    // The unit's ExecStart line is parsed by the command line itself in the
    // binary's own tests (src/cmd/serve.rs), since the CLI is not the library.
    let config = dip_hub::config::ServeFile::load(&deploy("hub.production.toml"))
        .expect("the production config parses with no unknown key");
    assert_eq!(
        config.metrics_listen.map(|a| a.ip().is_loopback()),
        Some(true)
    );
    let unit = read(&deploy("systemd/dip-hub.service"));
    assert!(
        unit.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "reload is SIGHUP"
    );
}
