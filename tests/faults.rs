//! Fault tests: the binary talks to the real S3 server (moto or garage) through
//! `common::fault_proxy`, which injects throttling, server errors, connection resets, truncated and
//! corrupted bodies and latency. Assertions are on what a user sees — exit code, stderr, bytes on the
//! target — and on the real server, checked directly (never through the proxy).
//!
//! Every test asserts that its proxy injected at least one fault: a fault test that injected nothing
//! proved nothing. The proxy prints its seed; `S3SYNC_FAULT_SEED` replays the random draws.
//!
//! Retries are made fast (`--force-retry-interval-milliseconds 50 --initial-backoff-milliseconds 10`)
//! so the suite runs in seconds; the unreachable-endpoint test keeps the default retry settings on
//! purpose, since it measures what a user waits.

use crate::common;

use common::fault_proxy::{Fault, FaultProxy, Op, Rule, When};
use common::*;
use std::time::{Duration, Instant};

const MP: [&str; 4] = ["--multipart-threshold", "5MiB", "--multipart-chunksize", "5MiB"];
const FAST: [&str; 4] = [
    "--force-retry-interval-milliseconds",
    "50",
    "--initial-backoff-milliseconds",
    "10",
];

fn with_mp<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = MP.to_vec();
    v.extend_from_slice(args);
    v
}

/// Runs the binary with both endpoints set to `endpoint` and these arguments, without blocking the
/// runtime the proxy runs on; fails the test after two minutes.
async fn run_at(endpoint: &str, args: &[&str]) -> (Run, Duration) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3sync"));
    cmd.args([
        "--source-endpoint-url",
        endpoint,
        "--target-endpoint-url",
        endpoint,
        "--source-force-path-style",
        "--target-force-path-style",
    ]);
    cmd.args(args).kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("s3sync {args:?} did not finish within 120 s"))
        .expect("run s3sync");
    let elapsed = started.elapsed();
    let run = Run::from(out);
    eprintln!(
        "s3sync {args:?}: exit {} in {elapsed:?}; stderr:\n{}",
        run.code, run.stderr
    );
    (run, elapsed)
}

/// Runs the binary through the proxy with the fast retry settings.
async fn run_via(proxy: &FaultProxy, args: &[&str]) -> Run {
    let mut all: Vec<&str> = FAST.to_vec();
    all.extend_from_slice(args);
    let (run, _) = run_at(&proxy.url(), &all).await;
    eprintln!("{}", proxy.summary());
    run
}

/// The names in a directory, sorted (temporary files included).
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Asserts that a download left exactly these files (and so no `.s3sync-tmp.*` file) with these bytes.
fn assert_downloaded(dir: &std::path::Path, want: &[(&str, &[u8])]) {
    let got = read_tree(dir);
    let got_names: Vec<&str> = got.iter().map(|f| f.0.as_str()).collect();
    let mut want_names: Vec<&str> = want.iter().map(|f| f.0).collect();
    want_names.sort();
    assert_eq!(
        got_names, want_names,
        "files in the target directory (no temporary file may remain)"
    );
    for (name, bytes) in want {
        let f = got.iter().find(|f| f.0 == *name).expect("listed above");
        assert!(
            f.1 == *bytes,
            "{name}: downloaded bytes differ from the object ({} vs {} bytes)",
            f.1.len(),
            bytes.len()
        );
    }
}

/// 1. `503 SlowDown` on the first two attempts of every PutObject and UploadPart: the SDK retries, the
/// upload succeeds with exit 0 (not 3) and the bytes on the server are the file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowdown_on_first_two_attempts_of_each_put_is_retried() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::Status503, When::FirstNPerTarget(2)).ops(&[Op::PutObject, Op::UploadPart])],
    )
    .await;
    let src = tmpdir();
    let small = data(100_000, 11);
    let big = data(12 * MIB + 5, 12);
    write_tree(src.path(), &[("small", small.clone()), ("big", big.clone())]);

    let r = run_via(&proxy, &with_mp(&[&s(src.path()), &format!("s3://{bucket}/")])).await;
    proxy.assert_injected();
    r.expect(0);
    assert_eq!(r.transferred(), 2);
    // One PutObject and three UploadParts, each refused twice (more if an object was retried whole).
    assert!(proxy.injected_of(Fault::Status503) >= 8, "{}", proxy.summary());
    assert_eq!(srv.get(&bucket, "small").await, small, "small: bytes on the server");
    assert!(srv.get(&bucket, "big").await == big, "big: bytes on the server differ");
    assert_eq!(srv.etag(&bucket, "small").await, md5_hex(&small));
    assert_eq!(srv.etag(&bucket, "big").await, multipart_etag(&big, 5 * MIB));
    assert_eq!(srv.open_uploads(&bucket).await, 0, "no multipart upload left open");
}

/// 2. `500 InternalError` and connection resets on some of the ranged GETs of a multipart download: the
/// download succeeds with exit 0 and the file is byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_resets_during_multipart_download_are_retried() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let big = data(20 * MIB, 21);
    put_multipart(&srv, &bucket, "big", &big, 5 * MIB).await;
    let get = [Op::GetObject];
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![
            Rule::new(Fault::Status500, When::FirstN(2)).ops(&get),
            Rule::new(Fault::Reset, When::At(vec![3, 5])).ops(&get),
            Rule::new(Fault::Status500, When::Probability(0.1)).ops(&get),
            Rule::new(Fault::Reset, When::Probability(0.1)).ops(&get),
        ],
    )
    .await;
    let dst = tmpdir();
    let r = run_via(&proxy, &with_mp(&[&format!("s3://{bucket}/"), &s(dst.path())])).await;
    proxy.assert_injected();
    assert!(
        proxy.injected_of(Fault::Status500) >= 2 && proxy.injected_of(Fault::Reset) >= 2,
        "{}",
        proxy.summary()
    );
    assert!(
        proxy.requests_of(Op::GetObject) >= 4 + proxy.injected(),
        "four ranged GETs plus one per fault: {}",
        proxy.summary()
    );
    r.expect(0);
    assert_eq!(r.transferred(), 1);
    assert_eq!(r.verified(), 1, "the multipart ETag was verified");
    assert_downloaded(dst.path(), &[("big", &big)]);
}

/// 3. The first response to every GET target is cut after half its body (Content-Length kept): each
/// part is fetched again, exit 0, byte-identical, and no temporary file is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_bodies_are_retried_and_leave_no_temp_files() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let big = data(20 * MIB, 31);
    let small = data(300_000, 32);
    put_multipart(&srv, &bucket, "big", &big, 5 * MIB).await;
    srv.put(&bucket, "small", &small).await;
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::Truncate, When::FirstNPerTarget(1)).ops(&[Op::GetObject])],
    )
    .await;
    let dst = tmpdir();
    let r = run_via(&proxy, &with_mp(&[&format!("s3://{bucket}/"), &s(dst.path())])).await;
    proxy.assert_injected();
    assert!(
        proxy.injected_of(Fault::Truncate) >= 5,
        "four ranges of big and small, each cut once: {}",
        proxy.summary()
    );
    r.expect(0);
    assert_eq!(r.transferred(), 2);
    assert_eq!(r.verified(), 2);
    assert_downloaded(dst.path(), &[("big", &big), ("small", &small)]);
}

/// 4a. One flipped byte in the first GET of each object (an intermittent corruption): the ETag check
/// catches it, the object is fetched again, exit 0, byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_on_first_get_is_caught_and_retried() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let big = data(12 * MIB, 41);
    let small = data(300_000, 42);
    put_multipart(&srv, &bucket, "big", &big, 5 * MIB).await;
    srv.put(&bucket, "small", &small).await;
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::FlipByte, When::FirstNPerObject(1)).ops(&[Op::GetObject])],
    )
    .await;
    let dst = tmpdir();
    let r = run_via(&proxy, &with_mp(&[&format!("s3://{bucket}/"), &s(dst.path())])).await;
    proxy.assert_injected();
    assert_eq!(
        proxy.injected_of(Fault::FlipByte),
        2,
        "one flip per object: {}",
        proxy.summary()
    );
    r.expect(0);
    assert_eq!(r.transferred(), 2);
    assert_eq!(r.verified(), 2);
    assert_downloaded(dst.path(), &[("big", &big), ("small", &small)]);
}

/// 4b. A flipped byte in every GET: the download fails with exit 1, stderr names the key and both
/// ETags (the object's and the one computed from the bytes received), and nothing is left under the
/// final name nor as a temporary file. Both for an object downloaded in ranges into its temporary
/// file and for one smaller than a pool chunk (verified in memory, so it never reaches the disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_on_every_get_fails_and_leaves_nothing() {
    let srv = server().await;
    for (len, seed) in [(300_000, 43), (10_000, 44)] {
        let bucket = srv.bucket().await;
        let body = data(len, seed);
        srv.put(&bucket, "victim", &body).await;
        let expected = md5_hex(&body);
        let proxy = FaultProxy::start(
            &srv.endpoint,
            vec![Rule::new(Fault::FlipByte, When::Always).ops(&[Op::GetObject])],
        )
        .await;
        let dst = tmpdir();
        let r = run_via(&proxy, &[&format!("s3://{bucket}/"), &s(dst.path())]).await;
        proxy.assert_injected();
        r.expect(1);
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains("victim") && l.contains(&expected))
            .unwrap_or_else(|| {
                panic!(
                    "{len} bytes: no stderr line names the key and the expected ETag {expected}:\n{}",
                    r.stderr
                )
            });
        let hex32 = |w: &str| w.len() == 32 && w.bytes().all(|b| b.is_ascii_hexdigit());
        let computed: Vec<&str> = line
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| hex32(w) && *w != expected)
            .collect();
        assert!(!computed.is_empty(), "the line names the computed ETag too: {line}");
        assert!(
            !dst.path().join("victim").exists(),
            "{len} bytes: no file under the final name"
        );
        assert_eq!(
            names(dst.path()),
            Vec::<String>::new(),
            "{len} bytes: no temporary file left"
        );
    }
}

/// 4c. An object verified by its stored CRC, not by MD5: a byte flipped in its first GET is caught by
/// the CRC and the object is fetched again, verified by both the CRC and the ETag (exit 0, the bytes
/// right); flipped in every GET, the download fails with exit 1 and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_an_object_verified_by_its_crc() {
    let srv = server().await;
    let body = data(7 * MIB, 45);
    for (when, code) in [(When::FirstNPerObject(1), 0), (When::Always, 1)] {
        let bucket = srv.bucket().await;
        let src = tmpdir();
        write_tree(src.path(), &[("victim", body.clone())]);
        srv.run(&[
            "--additional-checksum-algorithm",
            "CRC64NVME",
            &s(src.path()),
            &format!("s3://{bucket}/"),
        ])
        .expect(0);
        let proxy = FaultProxy::start(
            &srv.endpoint,
            vec![Rule::new(Fault::FlipByte, when).ops(&[Op::GetObject])],
        )
        .await;
        let dst = tmpdir();
        let r = run_via(&proxy, &with_mp(&[&format!("s3://{bucket}/"), &s(dst.path())])).await;
        proxy.assert_injected();
        r.expect(code);
        if code == 0 {
            assert_eq!(r.checksum_verified(), 1, "{}", r.stderr);
            assert_eq!(r.verified(), 1, "the second look compares the ETag too: {}", r.stderr);
            assert_downloaded(dst.path(), &[("victim", &body)]);
        } else {
            assert!(
                r.stderr.contains("victim") && r.stderr.contains("mismatch"),
                "{}",
                r.stderr
            );
            assert_eq!(names(dst.path()), Vec::<String>::new(), "no file, no temporary file");
        }
    }
}

/// 5. 200 ms of latency on every request, without read or attempt timeouts set: upload and download
/// still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_on_every_request_is_tolerated() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let proxy = FaultProxy::start(&srv.endpoint, vec![Rule::new(Fault::Latency(200), When::Always)]).await;
    let src = tmpdir();
    let a = data(50_000, 51);
    let b = data(6 * MIB, 52);
    write_tree(src.path(), &[("a", a.clone()), ("d/b", b.clone())]);
    let started = Instant::now();
    let r = run_via(&proxy, &with_mp(&[&s(src.path()), &format!("s3://{bucket}/")])).await;
    r.expect(0);
    assert_eq!(r.transferred(), 2);
    assert_eq!(srv.get(&bucket, "a").await, a);
    assert!(srv.get(&bucket, "d/b").await == b, "d/b: bytes on the server differ");
    let dst = tmpdir();
    let r = run_via(&proxy, &with_mp(&[&format!("s3://{bucket}/"), &s(dst.path())])).await;
    proxy.assert_injected();
    eprintln!("with 200 ms per request: {:?} for both runs", started.elapsed());
    r.expect(0);
    assert_eq!(r.transferred(), 2);
    assert_downloaded(dst.path(), &[("a", &a), ("d/b", &b)]);
}

/// 6. An endpoint on a closed port, with the default retry settings: exit 1 within 15 s and one clear
/// line on stderr. (No proxy here: the fault is the refused connection, checked before the run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_fails_fast_with_one_line() {
    let _srv = server().await; // credentials and region come from the server's environment
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "the fault: port {port} must refuse connections, got {refused:?}"
    );
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec())]);
    let endpoint = format!("http://127.0.0.1:{port}");
    let (r, elapsed) = run_at(&endpoint, &[&s(src.path()), "s3://some-bucket/"]).await;
    eprintln!("unreachable endpoint: exit {} after {elapsed:?}", r.code);
    r.expect(1);
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got {}: {lines:#?}", lines.len());
    let line = lines[0].to_lowercase();
    assert!(
        line.contains(&format!("127.0.0.1:{port}"))
            || ["connect", "unreachable", "refused"].iter().any(|w| line.contains(w)),
        "the line says the endpoint could not be reached: {}",
        lines[0]
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "exit 1 only after {elapsed:?} with the default retry settings (want < 15 s): the refused connection of the \
         first request ({}) is retried like a transient error, up to --aws-max-attempts (10) times with jittered \
         exponential backoff from --initial-backoff-milliseconds (100 ms, capped at 20 s), so the wait is random and \
         usually well above 15 s",
        lines[0]
    );
}

/// 7. Every CompleteMultipartUpload is answered by a connection reset: the upload fails with exit 1
/// and no multipart upload stays open on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_complete_multipart_upload_is_aborted() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::Reset, When::Always).ops(&[Op::CompleteMultipartUpload])],
    )
    .await;
    let src = tmpdir();
    write_tree(src.path(), &[("big", data(12 * MIB, 71))]);
    let r = run_via(
        &proxy,
        &with_mp(&[
            "--aws-max-attempts",
            "3",
            "--force-retry-count",
            "1",
            &s(src.path()),
            &format!("s3://{bucket}/"),
        ]),
    )
    .await;
    proxy.assert_injected();
    assert!(proxy.injections().iter().all(|i| i.op == Op::CompleteMultipartUpload));
    r.expect(1);
    assert!(r.stderr.contains("big"), "stderr names the key:\n{}", r.stderr);
    let aborts = proxy.requests_of(Op::AbortMultipartUpload);
    let creates = proxy.requests_of(Op::CreateMultipartUpload);
    eprintln!("{creates} CreateMultipartUpload, {aborts} AbortMultipartUpload through the proxy");
    let listed = srv.client.list_multipart_uploads().bucket(&bucket).send().await;
    assert!(
        listed.is_ok(),
        "ListMultipartUploads must answer for this check to mean anything: {listed:?}"
    );
    assert_eq!(
        srv.open_uploads(&bucket).await,
        0,
        "every multipart upload was aborted ({creates} created, {aborts} abort requests)"
    );
    assert!(srv.keys(&bucket).await.is_empty(), "no object was created");
}

/// The proxy's filters recognise the S3 operations the fault tests aim at (no server needed).
#[test]
fn proxy_recognises_s3_operations() {
    use common::fault_proxy::classify;
    use hyper::{HeaderMap, Method};
    let op = |m: Method, uri: &str, copy: bool| {
        let mut h = HeaderMap::new();
        if copy {
            h.insert("x-amz-copy-source", "b/src".parse().unwrap());
        }
        classify(&m, &uri.parse().unwrap(), &h)
    };
    assert_eq!(op(Method::GET, "/b?list-type=2&prefix=p", false), Op::ListObjectsV2);
    assert_eq!(op(Method::GET, "/b?uploads", false), Op::ListMultipartUploads);
    assert_eq!(op(Method::GET, "/b/k/x.bin?x-id=GetObject", false), Op::GetObject);
    assert_eq!(op(Method::GET, "/b/k?uploadId=u", false), Op::ListParts);
    assert_eq!(op(Method::HEAD, "/b/k?partNumber=1", false), Op::HeadObject);
    assert_eq!(op(Method::HEAD, "/b", false), Op::HeadBucket);
    assert_eq!(op(Method::PUT, "/b/k?x-id=PutObject", false), Op::PutObject);
    assert_eq!(op(Method::PUT, "/b/k?x-id=CopyObject", true), Op::CopyObject);
    assert_eq!(
        op(Method::PUT, "/b/k?x-id=UploadPart&partNumber=2&uploadId=u", false),
        Op::UploadPart
    );
    assert_eq!(
        op(Method::PUT, "/b/k?partNumber=2&uploadId=u", true),
        Op::UploadPartCopy
    );
    assert_eq!(op(Method::POST, "/b/k?uploads", false), Op::CreateMultipartUpload);
    assert_eq!(op(Method::POST, "/b/k?uploadId=u", false), Op::CompleteMultipartUpload);
    assert_eq!(
        op(Method::DELETE, "/b/k?x-id=AbortMultipartUpload&uploadId=u", false),
        Op::AbortMultipartUpload
    );
    assert_eq!(op(Method::DELETE, "/b/k", false), Op::DeleteObject);
    assert_eq!(op(Method::POST, "/b?delete", false), Op::DeleteObjects);
}

/// S3->S3 through the client: bytes corrupted while reading the source are checked against the source's
/// ETag before the target object is committed, so they never land, and the next run converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_source_reads_are_never_committed_s3_to_s3() {
    let srv = server().await;
    let b1 = srv.bucket().await;
    let b2 = srv.bucket().await;
    let small = data(300_000, 61);
    let big = data(11 * MIB + 3, 62);
    let src = tmpdir();
    write_tree(src.path(), &[("small", small.clone()), ("big", big.clone())]);
    srv.run(&with_mp(&[&s(src.path()), &format!("s3://{b1}/")])).expect(0);
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::FlipByte, When::Always).ops(&[Op::GetObject])],
    )
    .await;
    let r = run_via(
        &proxy,
        &with_mp(&[
            "--force-retry-count",
            "1",
            &format!("s3://{b1}/"),
            &format!("s3://{b2}/"),
        ]),
    )
    .await;
    proxy.assert_injected();
    r.expect(1);
    assert!(
        srv.keys(&b2).await.is_empty(),
        "nothing corrupted was committed: {:?}",
        srv.keys(&b2).await
    );
    assert_eq!(srv.open_uploads(&b2).await, 0);
    let r = srv.run(&with_mp(&[&format!("s3://{b1}/"), &format!("s3://{b2}/")]));
    r.expect(0);
    assert_eq!(r.transferred(), 2);
    assert_eq!(srv.get(&b2, "small").await, small);
    assert!(srv.get(&b2, "big").await == big);
}

/// Small GETs and PUTs are sent without the SDK's orchestrator; one that fails is sent again by the
/// SDK with the attempts left, so `--aws-max-attempts` still bounds every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_requests_fall_back_to_the_sdk_with_the_attempts_left() {
    let srv = server().await;
    let (b1, b2, b3) = (srv.bucket().await, srv.bucket().await, srv.bucket().await);
    let objects: Vec<(String, Vec<u8>)> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), data(1000 + i * 7000, 90 + i as u64)))
        .collect();
    for (k, body) in &objects {
        srv.put(&b1, k, body).await;
    }
    // The first GET and the first PUT answer 503: the SDK sends each again, once.
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![
            Rule::new(Fault::Status503, When::FirstN(1)).ops(&[Op::GetObject]),
            Rule::new(Fault::Status503, When::FirstN(1)).ops(&[Op::PutObject]),
        ],
    )
    .await;
    let args = ["-vvv", "--worker-size", "1", "--aws-max-attempts", "2"];
    let r = run_via(
        &proxy,
        &[&args[..], &[&format!("s3://{b1}/"), &format!("s3://{b2}/")]].concat(),
    )
    .await;
    proxy.assert_injected();
    r.expect(0);
    for (k, body) in &objects {
        assert!(srv.get(&b2, k).await == *body, "{k} copied");
    }
    assert_eq!(proxy.requests_of(Op::GetObject), 4, "{}", proxy.summary());
    assert_eq!(proxy.requests_of(Op::PutObject), 4, "{}", proxy.summary());
    let direct = |op: &str| {
        r.stderr
            .lines()
            .filter(|l| l.contains(op) && l.contains("sent without the SDK's orchestrator"))
            .count()
    };
    assert_eq!(
        direct("GetObject"),
        3,
        "every GET was sent directly first:\n{}",
        r.stderr
    );
    assert_eq!(
        direct("PutObject"),
        3,
        "every PUT was sent directly first:\n{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("sent again through the SDK").count(),
        2,
        "{}",
        r.stderr
    );

    // The first object's GET fails twice: with two attempts in all it fails (the SDK had one left);
    // the others are copied.
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::Status503, When::FirstN(2)).ops(&[Op::GetObject])],
    )
    .await;
    let r = run_via(
        &proxy,
        &[
            &args[..],
            &[
                "--force-retry-count",
                "0",
                &format!("s3://{b1}/"),
                &format!("s3://{b3}/"),
            ],
        ]
        .concat(),
    )
    .await;
    proxy.assert_injected();
    r.expect(1);
    assert_eq!(proxy.requests_of(Op::GetObject), 4, "{}", proxy.summary());
    assert_eq!(srv.keys(&b3).await, vec!["b".to_string(), "c".to_string()]);
}
