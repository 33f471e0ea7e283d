//! The conformance suite: whole syncs every S3 implementation must get right, written once and run
//! against each. `cargo test` runs them in-process against the in-memory service
//! (`src/pipeline/in_memory.rs`); the integration suite runs the same file against moto and Garage
//! through the SDK (`tests/conformance.rs`). The includer provides `world()`: a client and two empty
//! buckets. Failures are injected by wrapping the client, so every case runs on every implementation.
//!
//! Only the public API is used (`s3sync::…`), so the file compiles inside the crate and outside it.

use bytes::Bytes;
use s3sync::error::S3ErrorKind;
use s3sync::storage::failing::{FailingClient, Fault};
use s3sync::storage::object_client::{GetRequest, ObjectClient, Scope};
use s3sync::{Config, ConfigBuilder, Location, Stats, Sync};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// What a scenario runs against: a client and two empty buckets of its own.
pub struct World {
    /// The implementation under test.
    pub client: Arc<dyn ObjectClient>,
    /// Two empty buckets, unique to the scenario.
    pub buckets: [String; 2],
}

impl World {
    fn scope(bucket: &str) -> Scope {
        Scope {
            bucket: bucket.to_string(),
            ..Default::default()
        }
    }

    /// Stores an object; returns its ETag.
    pub async fn put(&self, bucket: &str, key: &str, data: Vec<u8>) -> String {
        let (attrs, scope) = (Default::default(), Self::scope(bucket));
        let body = vec![Bytes::from(data)];
        let written = self.client.put_object(&scope, key, body, None, &None, &attrs);
        written.await.expect("put").etag
    }

    /// The bytes of an object, `None` when it does not exist.
    pub async fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        match self
            .client
            .get_object(&Self::scope(bucket), key, Default::default())
            .await
        {
            Ok((ranged, _)) => Some(ranged.body.collect().await.expect("body").to_vec()),
            Err(e) if e.s3_kind() == Some(S3ErrorKind::NotFound) => None,
            Err(e) => panic!("get {key}: {e}"),
        }
    }

    /// The ETag of an object.
    pub async fn etag(&self, bucket: &str, key: &str) -> Option<String> {
        let head = self.client.head_object(&Self::scope(bucket), key, None, None).await;
        head.expect("head").and_then(|h| h.entry.etag)
    }

    /// Every key of a bucket, in key order.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let (mut keys, mut token, scope) = (Vec::new(), None, Self::scope(bucket));
        loop {
            let page = self.client.list_objects(&scope, "", 1000, None, token.take());
            let page = page.await.expect("list");
            keys.extend(page.entries.into_iter().map(|e| e.key));
            match page.next_token {
                Some(t) if page.truncated => token = Some(t),
                _ => break,
            }
        }
        keys.sort();
        keys
    }

    /// The client wrapped to count calls and inject `faults`.
    fn failing(&self, faults: impl FnOnce(FailingClient) -> FailingClient) -> Arc<FailingClient> {
        Arc::new(faults(FailingClient::new(self.client.clone())))
    }
}

fn s3(bucket: &str, prefix: &str) -> Location {
    Location::S3 {
        bucket: bucket.into(),
        prefix: prefix.into(),
    }
}

fn local(p: &Path) -> Location {
    Location::Local(p.to_path_buf())
}

/// A configuration with quick engine retries.
fn config(source: Location, target: Location) -> ConfigBuilder {
    Config::builder(source, target).with(|c| {
        c.retry.force_retry_interval = Duration::from_millis(1);
        c.fsync = false;
    })
}

async fn run(cfg: ConfigBuilder, client: Arc<FailingClient>) -> Stats {
    let cfg = cfg.build().expect("a valid configuration");
    Sync::new(cfg)
        .with_object_client(client)
        .run()
        .await
        .expect("the run starts")
}

/// A byte pattern that differs between objects and offsets.
fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
}

/// Every file under `root` (temporary files included), relative, sorted.
fn files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).expect("under root").to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(s3sync::checksum::md5_of(data))
}

#[tokio::test]
async fn upload_writes_every_file_and_a_second_run_moves_nothing() {
    let w = super::world().await;
    let b = &w.buckets[0];
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        ("a.txt", bytes(1, 10)),
        ("d/e/f.bin", bytes(2, 70_000)),
        ("empty", Vec::new()),
    ];
    for (k, d) in &files {
        write(dir.path(), k, d);
    }
    let stats = run(config(local(dir.path()), s3(b, "p/")), w.failing(|f| f)).await;
    assert_eq!((stats.transferred, stats.failed), (3, 0));
    for (k, d) in &files {
        let key = format!("p/{k}");
        assert_eq!(w.get(b, &key).await.as_ref(), Some(d), "{key}");
        assert_eq!(w.etag(b, &key).await, Some(md5_hex(d)), "{key}");
    }
    let counted = w.failing(|f| f);
    let again = run(config(local(dir.path()), s3(b, "p/")), counted.clone()).await;
    assert_eq!((again.transferred, again.skipped, again.failed), (0, 3, 0));
    assert_eq!(counted.calls("PutObject"), 0, "an unchanged file is not sent again");
}

#[tokio::test]
async fn multipart_upload_has_the_multipart_etag_and_the_same_bytes() {
    let w = super::world().await;
    let b = &w.buckets[0];
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bytes(3, (12 * MIB) as usize);
    write(dir.path(), "big", &data);
    let counted = w.failing(|f| f);
    let cfg = config(local(dir.path()), s3(b, "")).multipart(5 * MIB, 5 * MIB);
    let stats = run(cfg, counted.clone()).await;
    assert_eq!((stats.transferred, stats.failed), (1, 0));
    assert_eq!(w.get(b, "big").await, Some(data.clone()));
    let parts: Vec<[u8; 16]> = data.chunks((5 * MIB) as usize).map(s3sync::checksum::md5_of).collect();
    assert_eq!(
        w.etag(b, "big").await,
        Some(s3sync::checksum::etag_from_parts(&parts, true))
    );
    assert_eq!(counted.calls("UploadPart"), 3);
}

#[tokio::test]
async fn download_writes_verified_files_and_leaves_no_temporary_file() {
    let w = super::world().await;
    let b = &w.buckets[0];
    let dir = tempfile::tempdir().expect("tempdir");
    let small = bytes(4, 1000);
    let big = bytes(5, (11 * MIB) as usize);
    w.put(b, "x/small", small.clone()).await;
    w.put(b, "x/sub/big", big.clone()).await;
    let cfg = config(s3(b, "x/"), local(dir.path())).multipart(5 * MIB, 5 * MIB);
    let stats = run(cfg, w.failing(|f| f)).await;
    assert_eq!((stats.transferred, stats.failed), (2, 0));
    assert_eq!(files(dir.path()), ["small", "sub/big"]);
    assert_eq!(std::fs::read(dir.path().join("small")).expect("read"), small);
    assert_eq!(std::fs::read(dir.path().join("sub/big")).expect("read"), big);
}

#[tokio::test]
async fn s3_to_s3_copies_with_one_get_and_one_put_per_object() {
    let w = super::world().await;
    let (src, dst) = (&w.buckets[0], &w.buckets[1]);
    for i in 0..5u8 {
        w.put(src, &format!("k{i}"), bytes(i, 100 + i as usize)).await;
    }
    let counted = w.failing(|f| f);
    let stats = run(config(s3(src, ""), s3(dst, "")).worker_size(1), counted.clone()).await;
    assert_eq!((stats.transferred, stats.failed), (5, 0));
    for i in 0..5u8 {
        let k = format!("k{i}");
        assert_eq!(w.get(dst, &k).await, w.get(src, &k).await);
        assert_eq!(w.etag(dst, &k).await, w.etag(src, &k).await);
    }
    let calls = ["GetObject", "PutObject", "HeadObject"].map(|op| counted.calls(op));
    assert_eq!(calls, [5, 5, 0]);
}

#[tokio::test]
async fn delete_removes_only_what_the_source_lacks() {
    let w = super::world().await;
    let (b, other) = (&w.buckets[0], &w.buckets[1]);
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "keep", b"1");
    w.put(b, "gone", b"x".to_vec()).await;
    w.put(other, "another-bucket", b"y".to_vec()).await;
    let stats = run(config(local(dir.path()), s3(b, "")).delete(true), w.failing(|f| f)).await;
    assert_eq!((stats.transferred, stats.deleted, stats.failed), (1, 1, 0));
    assert_eq!(w.keys(b).await, ["keep"]);
    assert_eq!(w.keys(other).await, ["another-bucket"]);
}

#[tokio::test]
async fn a_failed_listing_deletes_nothing() {
    let w = super::world().await;
    let (src, dst) = (&w.buckets[0], &w.buckets[1]);
    for i in 0..10u8 {
        w.put(src, &format!("k{i:02}"), vec![i]).await;
    }
    w.put(dst, "zz-only-in-target", b"t".to_vec()).await;
    // From the third listing request on (a page of the source's), every one fails.
    let failing = w.failing(|f| f.fail_from("ListObjectsV2", 3, Fault::Error(S3ErrorKind::Other)));
    let cfg = config(s3(src, ""), s3(dst, "")).delete(true).with(|c| c.max_keys = 3);
    let result = Sync::new(cfg.build().expect("config"))
        .with_object_client(failing.clone())
        .run()
        .await;
    assert!(
        result.as_ref().map_or(true, |s| s.failed > 0),
        "the failure is reported"
    );
    assert_eq!(failing.calls("DeleteObject"), 0);
    assert!(w.keys(dst).await.contains(&"zz-only-in-target".to_string()));
}

#[tokio::test]
async fn a_corrupted_download_fails_and_leaves_no_file() {
    let w = super::world().await;
    let b = &w.buckets[0];
    let dir = tempfile::tempdir().expect("tempdir");
    w.put(b, "obj", bytes(6, 4096)).await;
    let failing = w.failing(|f| f.fail_every("GetObject", Fault::Corrupt));
    let stats = run(config(s3(b, ""), local(dir.path())), failing).await;
    assert_eq!((stats.transferred, stats.failed), (0, 1));
    assert!(files(dir.path()).is_empty(), "left behind: {:?}", files(dir.path()));
}

#[tokio::test]
async fn a_truncated_download_is_retried_and_ends_complete() {
    let w = super::world().await;
    let b = &w.buckets[0];
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bytes(7, 100_000);
    w.put(b, "obj", data.clone()).await;
    let failing = w.failing(|f| f.fail_call("GetObject", 1, Fault::Truncate(10)));
    let stats = run(config(s3(b, ""), local(dir.path())), failing.clone()).await;
    assert_eq!((stats.transferred, stats.failed), (1, 0));
    assert_eq!(std::fs::read(dir.path().join("obj")).expect("read"), data);
    assert_eq!(failing.calls("GetObject"), 2);
}

#[tokio::test]
async fn a_failing_multipart_upload_is_aborted() {
    let w = super::world().await;
    let b = &w.buckets[0];
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "big", &bytes(8, (11 * MIB) as usize));
    let failing = w.failing(|f| f.fail_every("UploadPart", Fault::Error(S3ErrorKind::Other)));
    let cfg = config(local(dir.path()), s3(b, "")).multipart(5 * MIB, 5 * MIB);
    let stats = run(cfg, failing.clone()).await;
    assert_eq!((stats.transferred, stats.failed), (0, 1));
    assert!(w.keys(b).await.is_empty());
    assert!(failing.calls("CreateMultipartUpload") >= 1);
    assert_eq!(
        failing.calls("CreateMultipartUpload"),
        failing.calls("AbortMultipartUpload")
    );
}

#[tokio::test]
async fn an_object_replaced_during_the_download_is_not_written() {
    let w = super::world().await;
    let b = &w.buckets[0];
    let dir = tempfile::tempdir().expect("tempdir");
    w.put(b, "obj", bytes(9, 5000)).await;
    // The GET finds another ETag than the listing's: the server answers 412.
    let failing = w.failing(|f| f.fail_every("GetObject", Fault::Error(S3ErrorKind::PreconditionFailed)));
    let stats = run(config(s3(b, ""), local(dir.path())), failing).await;
    assert_eq!(stats.transferred, 0);
    assert!(stats.failed + stats.warnings >= 1);
    assert!(files(dir.path()).is_empty());
}

/// Every implementation answers as S3 does: a missing object is a typed error that keeps the HTTP
/// status and the S3 code; a GET gives the object's information only when asked, and a range of it.
#[tokio::test]
async fn answers_are_typed_and_a_get_builds_only_what_is_asked() {
    let w = super::world().await;
    let b = &w.buckets[0];
    let scope = Scope {
        bucket: b.clone(),
        ..Default::default()
    };
    let err = match w.client.get_object(&scope, "absent", Default::default()).await {
        Err(e) => e,
        Ok(_) => panic!("a GET of a missing key succeeded"),
    };
    let s3sync::Error::S3(e) = &err else {
        panic!("not an S3 error: {err:?}")
    };
    assert_eq!(
        (e.kind, e.status, e.code.as_deref(), e.operation),
        (S3ErrorKind::NotFound, Some(404), Some("NoSuchKey"), "GetObject")
    );
    assert_eq!(err.exit_code(), s3sync::error::EXIT_ERROR);
    w.put(b, "k", bytes(3, 1000)).await;
    let ranged = GetRequest {
        range: Some((10, 100)),
        ..Default::default()
    };
    let (body, info) = w.client.get_object(&scope, "k", ranged).await.expect("GET of a range");
    assert!(info.is_none(), "no object information unless asked");
    assert_eq!(
        body.body.collect().await.expect("body").to_vec(),
        bytes(3, 1000)[10..110].to_vec()
    );
    let whole = GetRequest {
        head: true,
        ..Default::default()
    };
    let (_, info) = w.client.get_object(&scope, "k", whole).await.expect("GET");
    assert_eq!(info.map(|h| h.entry.size), Some(1000));
}
