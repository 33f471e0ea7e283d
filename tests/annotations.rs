//! Object annotations (`--enable-sync-object-annotations`, `--sync-latest-object-annotations`,
//! `--disable-check-annotation-etag`, `--report-annotations-sync-status`), S3 to S3.
//!
//! No server here implements annotations, so every run goes through the fault proxy, which answers
//! the four annotation operations from memory (`common/annotations.rs`) and forwards the rest to
//! the real server. Objects and annotations are set up through the same proxy. Assertions are on
//! what a user sees: the target's annotations and payloads, exit codes, counts, the report lines,
//! and how many annotation requests a run made.

use crate::common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use common::fault_proxy::{FaultProxy, Op};
use common::*;

fn s3(bucket: &str) -> String {
    format!("s3://{bucket}/")
}

/// An SDK client whose requests go through the proxy.
async fn client_via(url: &str) -> Client {
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .load()
        .await;
    Client::from_conf(aws_sdk_s3::config::Builder::from(&cfg).force_path_style(true).build())
}

async fn annotate(c: &Client, bucket: &str, key: &str, name: &str, payload: &str) {
    c.put_object_annotation()
        .bucket(bucket)
        .key(key)
        .annotation_name(name)
        .annotation_payload(ByteStream::from(payload.as_bytes().to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("annotate {key}/{name}: {e:?}"));
}

async fn unannotate(c: &Client, bucket: &str, key: &str, name: &str) {
    c.delete_object_annotation()
        .bucket(bucket)
        .key(key)
        .annotation_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("delete annotation {key}/{name}: {e:?}"));
}

/// The annotations of an object as `(name, payload)`, sorted by name.
async fn annotations(c: &Client, bucket: &str, key: &str) -> Vec<(String, String)> {
    let list = c
        .list_object_annotations()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("list annotations of {key}: {e:?}"));
    let mut out = Vec::new();
    for a in list.annotations() {
        let got = c
            .get_object_annotation()
            .bucket(bucket)
            .key(key)
            .annotation_name(a.annotation_name())
            .send()
            .await
            .unwrap();
        let payload = got.annotation_payload.collect().await.unwrap().into_bytes();
        out.push((
            a.annotation_name().to_string(),
            String::from_utf8_lossy(&payload).into_owned(),
        ));
    }
    out.sort();
    out
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// Runs the binary through the proxy (without blocking the runtime the proxy serves on).
/// Annotation writes a run made: (PutObjectAnnotation, DeleteObjectAnnotation), since `before`.
fn writes(proxy: &FaultProxy, before: (usize, usize)) -> (usize, usize) {
    (
        proxy.requests_of(Op::PutObjectAnnotation) - before.0,
        proxy.requests_of(Op::DeleteObjectAnnotation) - before.1,
    )
}

fn writes_so_far(proxy: &FaultProxy) -> (usize, usize) {
    writes(proxy, (0, 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_follow_the_objects_and_stay_in_step() {
    let srv = server().await;
    let (b1, b2) = (srv.bucket().await, srv.bucket().await);
    let proxy = FaultProxy::start(&srv.endpoint, vec![]).await;
    let c = client_via(&proxy.url()).await;
    put_with(&c, &b1, "a", b"object a").await;
    put_with(&c, &b1, "b", b"object b").await;
    annotate(&c, &b1, "a", "color", "red").await;
    annotate(&c, &b1, "a", "size", "L").await;

    // Without the option, annotations are not touched (and not even listed).
    run_via(&srv, &proxy, &[&s3(&b1), &s3(&b2)]).await.expect(0);
    assert!(annotations(&c, &b2, "a").await.is_empty());
    assert_eq!(
        proxy.requests_of(Op::ListObjectAnnotations),
        1,
        "only the test's own listing"
    );

    // A copy of each object carries its annotations (b has none).
    let before = writes_so_far(&proxy);
    let r = run_via(
        &srv,
        &proxy,
        &[
            "--enable-sync-object-annotations",
            "--remove-modified-filter",
            &s3(&b1),
            &s3(&b2),
        ],
    )
    .await;
    r.expect(0);
    assert_eq!(r.transferred(), 2);
    assert_eq!(
        annotations(&c, &b2, "a").await,
        pairs(&[("color", "red"), ("size", "L")])
    );
    assert!(annotations(&c, &b2, "b").await.is_empty());
    assert_eq!(writes(&proxy, before), (2, 0));

    // The source's annotations change while the objects do not: --sync-latest-object-annotations
    // brings the target in line without copying any object again.
    annotate(&c, &b1, "a", "color", "blue").await;
    unannotate(&c, &b1, "a", "size").await;
    annotate(&c, &b1, "b", "shape", "round").await;
    let puts = proxy.requests_of(Op::PutObject);
    let before = writes_so_far(&proxy);
    let r = run_via(&srv, &proxy, &["--sync-latest-object-annotations", &s3(&b1), &s3(&b2)]).await;
    r.expect(0);
    assert_eq!(r.transferred(), 0, "{}", r.stderr);
    assert_eq!(proxy.requests_of(Op::PutObject), puts, "no object was copied");
    assert_eq!(annotations(&c, &b2, "a").await, pairs(&[("color", "blue")]));
    assert_eq!(annotations(&c, &b2, "b").await, pairs(&[("shape", "round")]));
    assert_eq!(writes(&proxy, before), (2, 1), "color and shape copied, size deleted");

    // In step: the next run writes nothing.
    let before = writes_so_far(&proxy);
    run_via(&srv, &proxy, &["--sync-latest-object-annotations", &s3(&b1), &s3(&b2)])
        .await
        .expect(0);
    assert_eq!(writes(&proxy, before), (0, 0));

    // The report tells which objects' annotations differ (a warning, exit 3) and writes nothing.
    annotate(&c, &b1, "a", "color", "green").await;
    let before = writes_so_far(&proxy);
    let r = run_via(
        &srv,
        &proxy,
        &[
            "--report-sync-status",
            "--report-annotations-sync-status",
            &s3(&b1),
            &s3(&b2),
        ],
    )
    .await;
    r.expect(3);
    assert!(r.stdout.contains("ANNOTATIONS_MISMATCH a"), "{}", r.stdout);
    assert!(r.stdout.contains("ANNOTATIONS_MATCH b"), "{}", r.stdout);
    assert_eq!(writes(&proxy, before), (0, 0));
    assert_eq!(annotations(&c, &b2, "a").await, pairs(&[("color", "blue")]));

    // A dry run says what it would do and does nothing.
    let r = run_via(
        &srv,
        &proxy,
        &["--dry-run", "--sync-latest-object-annotations", &s3(&b1), &s3(&b2)],
    )
    .await;
    r.expect(0);
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("[dry-run] object annotation copied.") && l.contains("color")),
        "{}",
        r.stderr
    );
    assert_eq!(writes(&proxy, before), (0, 0));
    assert_eq!(annotations(&c, &b2, "a").await, pairs(&[("color", "blue")]));
}

/// `--disable-check-annotation-etag`: an annotation on both sides is copied when its size differs or
/// the source's was written after the target's; equal ETags alone do not decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etags_size_and_age_decide() {
    let srv = server().await;
    let (b1, b2) = (srv.bucket().await, srv.bucket().await);
    let proxy = FaultProxy::start(&srv.endpoint, vec![]).await;
    let c = client_via(&proxy.url()).await;
    put_with(&c, &b1, "o", b"object").await;
    annotate(&c, &b1, "o", "note", "one").await;
    let args = [
        "--sync-latest-object-annotations",
        "--disable-check-annotation-etag",
        &s3(&b1),
        &s3(&b2),
    ];
    run_via(&srv, &proxy, &args).await.expect(0);
    assert_eq!(annotations(&c, &b2, "o").await, pairs(&[("note", "one")]));
    // The target's copy is newer than the source's annotation: nothing to do.
    let before = writes_so_far(&proxy);
    run_via(&srv, &proxy, &args).await.expect(0);
    assert_eq!(writes(&proxy, before), (0, 0));
    // Same size, rewritten at the source after the copy (the proxy's timestamps are in ms).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    annotate(&c, &b1, "o", "note", "two").await;
    run_via(&srv, &proxy, &args).await.expect(0);
    assert_eq!(annotations(&c, &b2, "o").await, pairs(&[("note", "two")]));
}

/// A server-side copy and a copy of a new version of the object both end with the source's
/// annotations, also after the object was overwritten (which drops a target object's annotations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_objects_get_their_annotations_again() {
    let srv = server().await;
    let (b1, b2) = (srv.bucket().await, srv.bucket().await);
    let proxy = FaultProxy::start(&srv.endpoint, vec![]).await;
    let c = client_via(&proxy.url()).await;
    put_with(&c, &b1, "o", b"first").await;
    annotate(&c, &b1, "o", "k", "v1").await;
    let args = |extra: &'static [&'static str]| {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(["--enable-sync-object-annotations".to_string(), s3(&b1), s3(&b2)]);
        v
    };
    let a = args(&["--server-side-copy"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    run_via(&srv, &proxy, &a).await.expect(0);
    assert_eq!(annotations(&c, &b2, "o").await, pairs(&[("k", "v1")]));
    // The source object is rewritten (its annotations go with the old object) and annotated anew.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    put_with(&c, &b1, "o", b"second, longer").await;
    assert!(
        annotations(&c, &b1, "o").await.is_empty(),
        "setup: an overwrite drops annotations"
    );
    annotate(&c, &b1, "o", "k", "v2").await;
    let a = args(&[]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = run_via(&srv, &proxy, &a).await;
    r.expect(0);
    assert_eq!(r.transferred(), 1);
    assert_eq!(srv.get(&b2, "o").await, b"second, longer");
    assert_eq!(annotations(&c, &b2, "o").await, pairs(&[("k", "v2")]));
}

/// A failing annotation request fails that object (exit 1) and names it; the object itself arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_annotation_write_fails_the_object() {
    use common::fault_proxy::{Fault, Rule, When};
    let srv = server().await;
    let (b1, b2) = (srv.bucket().await, srv.bucket().await);
    // The setup's own PutObjectAnnotation is the first; the run's (the second on) get a 412, which
    // is not retried.
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::Status412, When::At((2..100).collect())).ops(&[Op::PutObjectAnnotation])],
    )
    .await;
    let c = client_via(&proxy.url()).await;
    put_with(&c, &b1, "o", b"object").await;
    annotate(&c, &b1, "o", "k", "v").await;
    let r = run_via(&srv, &proxy, &["--enable-sync-object-annotations", &s3(&b1), &s3(&b2)]).await;
    r.expect(1);
    assert!(r.stderr.contains("PutObjectAnnotation"), "{}", r.stderr);
    assert_eq!(srv.get(&b2, "o").await, b"object", "the object itself arrived");
    proxy.assert_injected();
}

/// The options need S3 on both sides: a clear error and exit 2, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotation_options_need_s3_on_both_sides() {
    let srv = server().await;
    let b = srv.bucket().await;
    let dir = tmpdir();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    for flag in ["--enable-sync-object-annotations", "--sync-latest-object-annotations"] {
        let r = srv.run(&[flag, &s(dir.path()), &s3(&b)]);
        r.expect(2);
        assert!(r.stderr.contains("need S3 on both sides"), "{}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.stderr);
    }
    assert!(srv.keys(&b).await.is_empty());
}
