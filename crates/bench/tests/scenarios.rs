//! Every scenario end to end at a tiny scale: the real bench binary (which
//! runs itself again as workers) against a real hub, either one it spawns
//! or one served in this process. Only counts are asserted, never timings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_passerelle-bench");

/// Runs the bench with `args` plus `--out` and returns the report.
fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let chart = dir.path().join("chart.svg");
    let output = Command::new(BENCH)
        .args(args)
        .args(["--quiet", "--out"])
        .arg(&out)
        .arg("--chart")
        .arg(&chart)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains(args[0]), "no summary: {stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    if report["timeline"].as_array().is_some_and(|t| !t.is_empty()) {
        check_chart(&chart);
    }
    report
}

fn check_chart(path: &Path) {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "{}",
        &svg[..80.min(svg.len())]
    );
    assert!(
        svg.contains("<polyline") || svg.contains("<path"),
        "no lines drawn"
    );
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Every planned message was accepted by the hub and received exactly once.
fn assert_exactly_once(report: &Value, planned: u64) {
    let m = &report["messages"];
    assert_eq!(u(&m["scheduled"]), planned, "{m}");
    assert_eq!(u(&m["acknowledged"]), planned, "{m}");
    assert_eq!(u(&m["received"]), planned, "{m}");
    assert_eq!(u(&m["failed"]), 0, "{m}");
    assert_eq!(u(&m["duplicates"]), 0, "{m}");
    assert_eq!(u(&m["lost"]), 0, "{m}");
    assert_eq!(u(&m["foreign"]), 0, "{m}");
    assert_eq!(m["exactly_once"], Value::Bool(true));
    assert!(
        report["errors"].as_object().unwrap().is_empty(),
        "{}",
        report["errors"]
    );
}

#[test]
fn steady_over_two_workers_delivers_every_message_once() {
    let report = bench(&[
        "steady",
        "--spawn-hub",
        "--pairs",
        "12",
        "--rate",
        "200",
        "--duration",
        "1",
        "--per-worker",
        "5",
        "--size",
        "300",
    ]);
    assert_eq!(report["scenario"], "steady");
    // 12 pairs, at most 5 sockets a worker: 3 workers.
    assert_eq!(u(&report["setup"]["workers"]), 3);
    assert_eq!(u(&report["setup"]["devices"]), 24);
    assert_eq!(u(&report["registration"]["count"]), 24);
    assert_eq!(u(&report["connections"]["ok"]), 12);
    assert_exactly_once(&report, 200);
    let latency = &report["latency_us"];
    assert_eq!(u(&latency["count"]), 200);
    assert!(u(&latency["p50"]) <= u(&latency["p99"]));
    assert!(u(&latency["p99"]) <= u(&latency["max"]));
    let timeline = report["timeline"].as_array().unwrap();
    let received: u64 = timeline.iter().map(|s| u(&s["received"])).sum();
    assert_eq!(received, 200);
    // The spawned hub's memory was read.
    assert!(u(&report["memory"]["after"]["rss_kib"]) > 0);
}

#[test]
fn bursts_deliver_every_message_once() {
    let report = bench(&[
        "burst",
        "--spawn-hub",
        "--pairs",
        "10",
        "--burst",
        "50",
        "--bursts",
        "3",
        "--interval-ms",
        "100",
        "--workers",
        "2",
    ]);
    assert_eq!(u(&report["setup"]["workers"]), 2);
    assert_exactly_once(&report, 150);
}

#[test]
fn drain_delivers_every_queued_message_once() {
    let report = bench(&["drain", "--spawn-hub", "--pairs", "10", "--messages", "300"]);
    assert_exactly_once(&report, 300);
    let drain = &report["drain"];
    assert_eq!(u(&drain["queued"]), 300);
    assert_eq!(u(&report["connections"]["ok"]), 10);
}

#[test]
fn idle_against_a_hub_in_this_process_measures_its_memory() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    // The default configuration: development mode and the demo apps, with
    // its default rate limits; registration by phone number uses the code
    // a development-mode hub returns.
    let config = passerelle_server::Config {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        data_dir: dir.path().to_owned(),
        ..passerelle_server::Config::default()
    };
    let store = passerelle_store::sqlite::SqliteStore::open(dir.path()).unwrap();
    let state = passerelle_server::AppState::new(config, Arc::new(store));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(passerelle_server::serve_on(listener, state, async {
        let _ = stopped.await;
    }));

    let pid = std::process::id().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let report = bench(&[
        "idle",
        "--hub",
        &url,
        "--hub-pid",
        &pid,
        "--app",
        "chime",
        "--connections",
        "8",
        "--hold",
        "0.2",
        "--per-worker",
        "3",
    ]);
    assert_eq!(u(&report["setup"]["workers"]), 3);
    assert_eq!(report["hub"]["spawned"], Value::Bool(false));
    assert_eq!(u(&report["registration"]["count"]), 8);
    let c = &report["connections"];
    assert_eq!(u(&c["ok"]), 8, "{c}");
    assert_eq!(u(&c["failed"]), 0, "{c}");
    assert_eq!(u(&c["alive_at_end"]), 8, "{c}");
    let memory = &report["memory"];
    assert_eq!(u(&memory["connections"]), 8);
    assert!(memory["rss_bytes_per_connection"].is_number(), "{memory}");
    assert!(report.get("messages").is_none());

    stop.send(()).unwrap();
    runtime.block_on(server).unwrap().unwrap();
}

#[test]
fn hub_config_is_printed() {
    let output = Command::new(BENCH).args(["hub-config"]).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        passerelle_server::Config::from_toml(&text).is_ok(),
        "{text}"
    );
}
