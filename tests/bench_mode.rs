//! `s3sync-bench` against the real server: figures checked against the requests the server received
//! (counted by a pass-through proxy), clean-up, the non-empty guard, Ctrl-C.

mod common;

use common::fault_proxy::{FaultProxy, Op};
use common::*;
use std::process::Command;
use std::time::Duration;

/// The tests of this file run one at a time: the Garage test reads the server's own request counters,
/// which requests of a concurrent test would disturb.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn bench(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3sync-bench"));
    cmd.args(["--endpoint-url", endpoint, "--force-path-style"]);
    cmd.args(args);
    cmd
}

/// Runs the benchmark with `--json` and returns its exit code and report (without blocking the
/// runtime, which also serves the proxy).
async fn run_json(endpoint: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let cmd = bench(endpoint, &[args, &["--json"]].concat());
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (out.status.code().unwrap_or(-1), report)
}

fn ops_of(report: &serde_json::Value, op: &str) -> u64 {
    report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["op"] == op)
        .map_or(0, |o| o["ops"].as_u64().unwrap() + o["errors"].as_u64().unwrap())
}

#[tokio::test]
async fn each_workload_matches_the_requests_the_server_received_and_cleans_up() {
    let _serial = SERIAL.lock().await;
    let srv = server().await;
    let bucket = srv.bucket().await;
    let target = format!("s3://{bucket}/bench/");
    let cases: [(&str, &[(&str, Op)]); 6] = [
        ("put", &[("PUT", Op::PutObject)]),
        ("get", &[("GET", Op::GetObject)]),
        ("stat", &[("STAT", Op::HeadObject)]),
        ("list", &[("LIST", Op::ListObjectsV2)]),
        ("delete", &[("DELETE", Op::DeleteObject)]),
        (
            "mixed",
            &[
                ("GET", Op::GetObject),
                ("STAT", Op::HeadObject),
                ("PUT", Op::PutObject),
                ("DELETE", Op::DeleteObject),
            ],
        ),
    ];
    for (workload, ops) in cases {
        let proxy = FaultProxy::start(&srv.endpoint, vec![]).await;
        let (code, r) = run_json(
            &proxy.url(),
            &[
                workload,
                &target,
                "--size",
                "8KiB",
                "--count",
                "120",
                "--concurrency",
                "8",
            ],
        )
        .await;
        assert_eq!(code, 0, "{workload}: {r}");
        assert_eq!(r["workload"], workload);
        let prepared = r["prepared_objects"].as_u64().unwrap();
        assert_eq!(prepared, if workload == "put" { 0 } else { 120 }, "{workload}");
        let mut measured = 0;
        for (name, op) in ops {
            let reported = ops_of(&r, name);
            measured += reported;
            // What the server saw: the measured requests, plus the preparation's PUTs, the clean-up's
            // listing and DELETEs, and the guard's one listing.
            let cleaned = r["cleaned_up"].as_u64().unwrap();
            let extra = match op {
                Op::PutObject => prepared,
                Op::DeleteObject => cleaned,
                Op::ListObjectsV2 => 1 + cleaned.div_ceil(1000).max(1),
                _ => 0,
            };
            assert_eq!(
                proxy.requests_of(*op) as u64,
                reported + extra,
                "{workload} {name}: {r}"
            );
        }
        assert_eq!(measured, 120, "{workload}: --count operations");
        for o in r["operations"].as_array().unwrap() {
            let ops = o["ops"].as_f64().unwrap();
            let secs = o["seconds"].as_f64().unwrap();
            let rate = o["ops_per_sec"].as_f64().unwrap();
            assert!((rate - ops / secs).abs() < 1e-6 * rate.max(1.0), "{workload}: {o}");
            let l = &o["latency_ms"];
            let (p50, p90, p99, max) = (
                l["p50"].as_f64().unwrap(),
                l["p90"].as_f64().unwrap(),
                l["p99"].as_f64().unwrap(),
                l["max"].as_f64().unwrap(),
            );
            assert!(0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{workload}: {o}");
            // No request can take longer than the whole phase.
            assert!(max <= secs * 1000.0 + 1.0, "{workload}: {o}");
            if o["op"] == "PUT" || o["op"] == "GET" {
                let mib = o["mib_per_sec"].as_f64().unwrap();
                assert!(
                    (mib - rate * 8.0 / 1024.0).abs() < 1e-6 * mib.max(1.0),
                    "{workload}: {o}"
                );
            }
        }
        assert!(
            srv.keys(&bucket).await.is_empty(),
            "{workload}: everything was cleaned up"
        );
    }
}

#[tokio::test]
async fn a_non_empty_prefix_is_refused_unless_allowed_and_never_touched() {
    let _serial = SERIAL.lock().await;
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "data/keep-me", b"precious").await;
    let target = format!("s3://{bucket}/data/");
    let out = bench(&srv.endpoint, &["put", &target, "--count", "10", "--size", "1KiB"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not empty") && err.lines().count() == 1, "{err}");
    let (code, r) = run_json(
        &srv.endpoint,
        &["mixed", &target, "--count", "40", "--size", "1KiB", "--allow-non-empty"],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(srv.keys(&bucket).await, vec!["data/keep-me".to_string()]);
    assert_eq!(srv.get(&bucket, "data/keep-me").await, b"precious");
}

#[tokio::test]
async fn a_timed_run_measures_for_its_duration() {
    let _serial = SERIAL.lock().await;
    let srv = server().await;
    let bucket = srv.bucket().await;
    let (code, r) = run_json(
        &srv.endpoint,
        &[
            "stat",
            &format!("s3://{bucket}/"),
            "--count",
            "20",
            "--size",
            "1KiB",
            "--duration",
            "1s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    let stat = &r["operations"][0];
    assert_eq!(stat["op"], "STAT");
    assert!(stat["ops"].as_u64().unwrap() > 0);
    // Ends at the deadline, give or take the requests in flight.
    let secs = stat["seconds"].as_f64().unwrap();
    assert!(secs >= 1.0, "{stat}");
    assert!(srv.keys(&bucket).await.is_empty());
}

#[tokio::test]
async fn ctrl_c_stops_the_run_and_cleans_up() {
    let _serial = SERIAL.lock().await;
    let srv = server().await;
    let bucket = srv.bucket().await;
    let cmd = bench(
        &srv.endpoint,
        &[
            "put",
            &format!("s3://{bucket}/"),
            "--duration",
            "5m",
            "--size",
            "4KiB",
            "--concurrency",
            "4",
        ],
    );
    let probe = srv.client.clone();
    let b = bucket.clone();
    let started = move || {
        let (probe, b) = (probe.clone(), b.clone());
        async move {
            probe
                .list_objects_v2()
                .bucket(&b)
                .send()
                .await
                .map(|r| r.contents().len() >= 20)
                .unwrap_or(false)
        }
    };
    let (run, took) = interrupt_when(cmd, "-INT", false, started)
        .await
        .expect("the benchmark was running");
    run.expect(130);
    assert!(took < Duration::from_secs(30), "stopped and cleaned up in {took:?}");
    assert!(srv.keys(&bucket).await.is_empty(), "the objects written were deleted");
}

/// Garage's own request counters (`api_s3_request_counter` of its admin port's `/metrics`).
fn garage_counters(srv: &Server) -> std::collections::HashMap<String, u64> {
    use std::io::{Read, Write};
    let port: u16 = srv
        .endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port + 3)).expect("garage admin port");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let mut out = std::collections::HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("api_s3_request_counter{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(op) = labels.split("api_endpoint=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        *out.entry(op.to_string()).or_insert(0) += value.parse::<f64>().unwrap_or(0.0) as u64;
    }
    out
}

#[tokio::test]
async fn the_figures_match_garages_own_request_counters() {
    let _serial = SERIAL.lock().await;
    let srv = server().await;
    if !srv.is_garage() {
        eprintln!("moto keeps no request counters; the proxy-counted test covers it");
        return;
    }
    let bucket = srv.bucket().await;
    let target = format!("s3://{bucket}/own/");
    for workload in ["put", "get", "stat", "list", "delete", "mixed"] {
        let before = garage_counters(&srv);
        let (code, r) = run_json(
            &srv.endpoint,
            &[
                workload,
                &target,
                "--size",
                "4KiB",
                "--count",
                "80",
                "--concurrency",
                "8",
            ],
        )
        .await;
        assert_eq!(code, 0, "{workload}: {r}");
        let after = garage_counters(&srv);
        let delta = |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
        let prepared = r["prepared_objects"].as_u64().unwrap();
        let cleaned = r["cleaned_up"].as_u64().unwrap();
        assert_eq!(delta("PutObject"), ops_of(&r, "PUT") + prepared, "{workload}: {r}");
        assert_eq!(delta("GetObject"), ops_of(&r, "GET"), "{workload}: {r}");
        assert_eq!(delta("HeadObject"), ops_of(&r, "STAT"), "{workload}: {r}");
        assert_eq!(delta("DeleteObject"), ops_of(&r, "DELETE") + cleaned, "{workload}: {r}");
        assert_eq!(
            delta("ListObjectsV2"),
            ops_of(&r, "LIST") + 1 + cleaned.div_ceil(1000).max(1),
            "{workload}: {r}"
        );
    }
}
