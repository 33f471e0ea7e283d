//! Whole syncs in-process, against the in-memory S3 service and with failures injected into it: what a
//! user would see (bytes and ETags on the target, counts, what is left behind) without a server.

use crate::storage::failing::{FailingClient, Fault};
use crate::storage::memory::MemoryClient;
use crate::storage::object_client::ObjectClient;
use crate::{Config, ConfigBuilder, Location, Stats, Sync};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

fn s3(bucket: &str, prefix: &str) -> Location {
    Location::S3 {
        bucket: bucket.into(),
        prefix: prefix.into(),
    }
}

fn local(p: &Path) -> Location {
    Location::Local(p.to_path_buf())
}

/// A configuration with quick engine retries (the SDK's are not involved in memory).
fn config(source: Location, target: Location) -> ConfigBuilder {
    Config::builder(source, target).with(|c| {
        c.retry.force_retry_interval = Duration::from_millis(1);
        c.fsync = false;
    })
}

async fn run(cfg: ConfigBuilder, client: Arc<dyn ObjectClient>) -> Stats {
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

/// Every file under `root`, relative, sorted.
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
    hex::encode(crate::checksum::md5_of(data))
}

#[tokio::test]
async fn upload_writes_every_file_and_a_second_run_moves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        ("a.txt", bytes(1, 10)),
        ("d/e/f.bin", bytes(2, 70_000)),
        ("empty", Vec::new()),
    ];
    for (k, d) in &files {
        write(dir.path(), k, d);
    }
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    let stats = run(config(local(dir.path()), s3("b", "p/")), mem.clone()).await;
    assert_eq!((stats.transferred, stats.failed), (3, 0));
    for (k, d) in &files {
        let key = format!("p/{k}");
        assert_eq!(mem.object("b", &key).as_deref(), Some(&d[..]), "{key}");
        assert_eq!(mem.etag("b", &key), Some(md5_hex(d)), "{key}");
    }
    let puts = mem.calls("PutObject");
    let again = run(config(local(dir.path()), s3("b", "p/")), mem.clone()).await;
    assert_eq!((again.transferred, again.skipped, again.failed), (0, 3, 0));
    assert_eq!(mem.calls("PutObject"), puts, "an unchanged file is not sent again");
}

#[tokio::test]
async fn multipart_upload_has_the_multipart_etag_and_the_same_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bytes(3, (12 * MIB) as usize);
    write(dir.path(), "big", &data);
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    let cfg = config(local(dir.path()), s3("b", "")).multipart(5 * MIB, 5 * MIB);
    let stats = run(cfg, mem.clone()).await;
    assert_eq!((stats.transferred, stats.failed), (1, 0));
    assert_eq!(mem.object("b", "big").as_deref(), Some(&data[..]));
    let parts: Vec<[u8; 16]> = data.chunks((5 * MIB) as usize).map(crate::checksum::md5_of).collect();
    assert_eq!(
        mem.etag("b", "big"),
        Some(crate::checksum::etag_from_parts(&parts, true))
    );
    assert_eq!(mem.calls("UploadPart"), 3);
    assert_eq!(mem.open_uploads("b"), 0);
}

#[tokio::test]
async fn download_writes_verified_files_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    let small = bytes(4, 1000);
    let big = bytes(5, (11 * MIB) as usize);
    mem.insert("b", "x/small", small.clone());
    mem.insert("b", "x/sub/big", big.clone());
    let cfg = config(s3("b", "x/"), local(dir.path())).multipart(5 * MIB, 5 * MIB);
    let stats = run(cfg, mem.clone()).await;
    assert_eq!((stats.transferred, stats.failed), (2, 0));
    assert_eq!(files(dir.path()), ["small", "sub/big"]);
    assert_eq!(std::fs::read(dir.path().join("small")).expect("read"), small);
    assert_eq!(std::fs::read(dir.path().join("sub/big")).expect("read"), big);
}

#[tokio::test]
async fn s3_to_s3_copies_with_one_get_and_one_put_per_object() {
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("src", false);
    mem.create_bucket("dst", false);
    for i in 0..5u8 {
        mem.insert("src", &format!("k{i}"), bytes(i, 100 + i as usize));
    }
    let cfg = config(s3("src", ""), s3("dst", "")).worker_size(1);
    let stats = run(cfg, mem.clone()).await;
    assert_eq!((stats.transferred, stats.failed), (5, 0));
    for i in 0..5u8 {
        let k = format!("k{i}");
        assert_eq!(mem.object("dst", &k), mem.object("src", &k));
        assert_eq!(mem.etag("dst", &k), mem.etag("src", &k));
    }
    assert_eq!(
        (mem.calls("GetObject"), mem.calls("PutObject"), mem.calls("HeadObject")),
        (5, 5, 0)
    );
}

#[tokio::test]
async fn delete_removes_only_what_the_source_lacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "keep", b"1");
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    mem.insert("b", "gone", b"x".to_vec());
    mem.insert("other", "outside-the-prefix", b"y".to_vec());
    let stats = run(config(local(dir.path()), s3("b", "")).delete(true), mem.clone()).await;
    assert_eq!((stats.transferred, stats.deleted, stats.failed), (1, 1, 0));
    assert_eq!(mem.keys("b"), ["keep"]);
    assert_eq!(mem.keys("other"), ["outside-the-prefix"]);
}

#[tokio::test]
async fn a_failed_source_listing_deletes_nothing() {
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("src", false);
    mem.create_bucket("dst", false);
    for i in 0..10 {
        mem.insert("src", &format!("k{i:02}"), vec![i]);
    }
    mem.insert("dst", "zz-only-in-target", b"t".to_vec());
    // Every listing request fails.
    let failing = Arc::new(
        FailingClient::new(mem.clone()).fail_every("ListObjectsV2", Fault::Error(crate::error::S3ErrorKind::Other)),
    );
    let cfg = config(s3("src", ""), s3("dst", ""))
        .delete(true)
        .with(|c| c.max_keys = 3);
    let result = Sync::new(cfg.build().expect("config"))
        .with_object_client(failing)
        .run()
        .await;
    let deleted = result.as_ref().map_or(0, |s| s.deleted);
    assert!(
        result.is_err() || result.as_ref().is_ok_and(|s| s.failed > 0),
        "the failure is reported"
    );
    assert_eq!(deleted, 0);
    assert!(mem.keys("dst").contains(&"zz-only-in-target".to_string()));
    assert_eq!(mem.calls("DeleteObject"), 0);
}

#[tokio::test]
async fn a_corrupted_download_fails_and_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    mem.insert("b", "obj", bytes(6, 4096));
    let failing = Arc::new(FailingClient::new(mem.clone()).fail_every("GetObject", Fault::Corrupt));
    let stats = run(config(s3("b", ""), local(dir.path())), failing).await;
    assert_eq!((stats.transferred, stats.failed), (0, 1));
    assert!(files(dir.path()).is_empty(), "left behind: {:?}", files(dir.path()));
}

#[tokio::test]
async fn a_truncated_download_is_retried_and_ends_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    let data = bytes(7, 100_000);
    mem.insert("b", "obj", data.clone());
    let failing = Arc::new(FailingClient::new(mem.clone()).fail_call("GetObject", 1, Fault::Truncate(10)));
    let stats = run(config(s3("b", ""), local(dir.path())), failing).await;
    assert_eq!((stats.transferred, stats.failed), (1, 0));
    assert_eq!(std::fs::read(dir.path().join("obj")).expect("read"), data);
    assert_eq!(mem.calls("GetObject"), 2);
}

#[tokio::test]
async fn a_failing_multipart_upload_is_aborted() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "big", &bytes(8, (11 * MIB) as usize));
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    let failing = Arc::new(
        FailingClient::new(mem.clone()).fail_every("UploadPart", Fault::Error(crate::error::S3ErrorKind::Other)),
    );
    let cfg = config(local(dir.path()), s3("b", "")).multipart(5 * MIB, 5 * MIB);
    let stats = run(cfg, failing).await;
    assert_eq!((stats.transferred, stats.failed), (0, 1));
    assert!(mem.keys("b").is_empty());
    assert_eq!(mem.calls("CreateMultipartUpload"), mem.calls("AbortMultipartUpload"));
    assert_eq!(mem.open_uploads("b"), 0);
}

#[tokio::test]
async fn an_unordered_listing_still_syncs_every_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    let keys = ["a/1", "a/2", "b", "ba", "c/d/e", "z"];
    for (i, k) in keys.iter().enumerate() {
        mem.insert("b", k, bytes(i as u8, 10 + i));
    }
    mem.list_unordered();
    let stats = run(
        config(s3("b", ""), local(dir.path())).with(|c| c.max_keys = 2),
        mem.clone(),
    )
    .await;
    assert_eq!((stats.transferred, stats.failed), (6, 0));
    assert_eq!(files(dir.path()), keys);
}

#[tokio::test]
async fn an_object_replaced_during_the_download_is_not_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    mem.insert("b", "obj", bytes(9, 5000));
    // The GET finds another ETag than the listing's: the server answers 412.
    let failing = Arc::new(
        FailingClient::new(mem.clone())
            .fail_every("GetObject", Fault::Error(crate::error::S3ErrorKind::PreconditionFailed)),
    );
    let stats = run(config(s3("b", ""), local(dir.path())), failing).await;
    assert_eq!(stats.transferred, 0);
    assert!(stats.failed + stats.warnings >= 1);
    assert!(files(dir.path()).is_empty());
}
