//! The ingest library (`s3sync::ingest::Engine`) against the real server: streams of unknown length,
//! files, downloads to files and writers, cancellation, verification errors, many objects at once.

use crate::common;

use common::fault_proxy::{Fault, FaultProxy, Op, Rule, When};
use common::*;
use s3sync::ingest::{Engine, GetOptions, PutOptions};
use s3sync::{ClientConfig, Error};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};

/// An engine on the test server with 5 MiB parts (so a few MiB cross the multipart threshold).
fn engine(srv: &Server) -> Engine {
    Engine::builder()
        .multipart(5 * MIB as u64, 5 * MIB as u64)
        .build_with_client(srv.client.clone())
        .expect("engine")
}

/// An engine reaching the server through `endpoint` (a fault proxy), built from a `ClientConfig`.
async fn engine_via(endpoint: &str) -> Engine {
    let client = ClientConfig {
        endpoint_url: Some(endpoint.to_string()),
        force_path_style: true,
        ..Default::default()
    };
    Engine::builder()
        .client(client)
        .multipart(5 * MIB as u64, 5 * MIB as u64)
        .build()
        .await
        .expect("engine")
}

/// A reader that hands out `data` in uneven pieces (1 byte to 100 KiB), as a pipe or socket does,
/// then either ends or, with `hang`, never yields again.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
    hang: bool,
}

impl Trickle {
    fn new(data: Vec<u8>) -> Self {
        Trickle {
            data,
            pos: 0,
            step: 0,
            hang: false,
        }
    }
}

impl AsyncRead for Trickle {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.pos >= self.data.len() && self.hang {
            return Poll::Pending;
        }
        self.step += 1;
        let want = [1, 4096, 100_000, 777, 65_536][self.step % 5];
        let n = want.min(buf.remaining()).min(self.data.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_stream_of_unknown_length_crosses_the_multipart_threshold() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let e = engine(&srv);
    let big = data(21 * MIB + 3, 1);
    let put = e
        .put_stream(&bucket, "big", Trickle::new(big.clone()), &PutOptions::default())
        .await
        .expect("put_stream");
    assert_eq!(put.parts, 5);
    assert_eq!(put.size, big.len() as u64);
    assert_eq!(put.etag, multipart_etag(&big, 5 * MIB));
    assert!(put.etag_verified);
    assert_eq!(srv.etag(&bucket, "big").await, put.etag);
    assert_eq!(srv.get(&bucket, "big").await, big);

    // Exactly one part: the stream's end is only seen by the next read.
    let exact = data(5 * MIB, 2);
    let put = e
        .put_stream(&bucket, "exact", Trickle::new(exact.clone()), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(put.parts, 1);
    assert_eq!(srv.get(&bucket, "exact").await, exact);

    for (key, len) in [("small", 10_240usize), ("empty", 0)] {
        let d = data(len, 3);
        let put = e
            .put_stream(&bucket, key, Trickle::new(d.clone()), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(put.parts, 0, "{key} is one PutObject");
        assert_eq!(put.etag, md5_hex(&d));
        assert_eq!(srv.get(&bucket, key).await, d);
    }
    assert_eq!(srv.open_uploads(&bucket).await, 0);
}

#[tokio::test]
async fn files_round_trip_with_attributes_and_progress() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let e = engine(&srv);
    let dir = tmpdir();
    let big = data(12 * MIB + 1, 4);
    let src = path(dir.path(), "big.bin");
    std::fs::write(&src, &big).unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen2 = seen.clone();
    let mut opts = PutOptions {
        progress: Some(std::sync::Arc::new(move |p: s3sync::ingest::Progress| {
            assert_eq!(p.total, Some(12 * MIB as u64 + 1));
            seen2.fetch_max(p.bytes, std::sync::atomic::Ordering::Relaxed);
        })),
        ..Default::default()
    };
    opts.attributes.content_type = Some("application/x-test".into());
    opts.attributes.metadata.insert("origin".into(), "ingest".into());
    let put = e.put_file(&src, &bucket, "dir/big.bin", &opts).await.expect("put_file");
    assert_eq!(put.parts, 3);
    assert_eq!(put.etag, multipart_etag(&big, 5 * MIB));
    assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), big.len() as u64);
    let head = srv
        .client
        .head_object()
        .bucket(&bucket)
        .key("dir/big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/x-test"));
    assert_eq!(
        head.metadata().and_then(|m| m.get("origin")).map(String::as_str),
        Some("ingest")
    );

    let out_dir = tmpdir();
    let dst = path(out_dir.path(), "copy.bin");
    std::fs::write(&dst, b"an older version").unwrap();
    let got = e
        .get_to_file(&bucket, "dir/big.bin", &dst, &GetOptions::default())
        .await
        .expect("get_to_file");
    assert!(got.etag_verified);
    assert_eq!(got.size, big.len() as u64);
    assert_eq!(std::fs::read(&dst).unwrap(), big);
    let names: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("copy.bin")],
        "no temporary file is left"
    );

    // A small file is one PutObject.
    let small = data(1000, 5);
    let src = path(dir.path(), "small");
    std::fs::write(&src, &small).unwrap();
    let put = e
        .put_file(&src, &bucket, "small", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!((put.parts, put.etag.as_str()), (0, md5_hex(&small).as_str()));
}

#[tokio::test]
async fn downloads_verify_objects_written_by_others() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let e = engine(&srv);
    // Parts of 6 MiB, not the engine's 5 MiB: the ETag is still recomputed part by part.
    let big = data(20 * MIB + 7, 6);
    put_multipart(&srv, &bucket, "mp", &big, 6 * MIB).await;
    let single = data(11 * MIB, 7);
    srv.put(&bucket, "single", &single).await;
    for (key, want) in [("mp", &big), ("single", &single)] {
        let mut out = Vec::new();
        let got = e
            .get_stream(&bucket, key, &mut out, &GetOptions::default())
            .await
            .expect("get_stream");
        assert_eq!(&out, want, "{key}");
        assert!(got.etag_verified, "{key}");
        assert_eq!(got.etag, srv.etag(&bucket, key).await);
    }
}

#[tokio::test]
async fn a_missing_object_is_a_not_found_error_and_leaves_no_file() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let e = engine(&srv);
    let err = e
        .get_stream(&bucket, "absent", Vec::new(), &GetOptions::default())
        .await
        .unwrap_err();
    assert!(err.s3_kind() == Some(s3sync::error::S3ErrorKind::NotFound), "{err:?}");
    let dir = tmpdir();
    let err = e
        .get_to_file(&bucket, "absent", path(dir.path(), "f"), &GetOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::S3(_)), "{err:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn cancelling_a_stream_mid_upload_leaves_no_multipart_upload() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let e = engine(&srv);
    let cancel = s3sync::CancellationToken::new();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (sent2, cancel2) = (sent.clone(), cancel.clone());
    let opts = PutOptions {
        cancel: Some(cancel.clone()),
        progress: Some(std::sync::Arc::new(move |p: s3sync::ingest::Progress| {
            sent2.store(p.bytes, std::sync::atomic::Ordering::Relaxed);
            // Two parts are up and the stream is still open: stop.
            if p.bytes >= 10 * MIB as u64 {
                cancel2.cancel();
            }
        })),
        ..Default::default()
    };
    let mut reader = Trickle::new(data(11 * MIB, 8));
    reader.hang = true;
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        e.put_stream(&bucket, "cancelled", reader, &opts),
    )
    .await
    .expect("the upload stops when cancelled");
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(sent.load(std::sync::atomic::Ordering::Relaxed) >= 10 * MIB as u64);
    assert_eq!(srv.open_uploads(&bucket).await, 0, "the multipart upload was aborted");
    assert!(srv.keys(&bucket).await.is_empty());
}

#[tokio::test]
async fn corrupted_bytes_surface_as_a_verification_error() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let big = data(7 * MIB, 9);
    put_multipart(&srv, &bucket, "mp", &big, 5 * MIB).await;
    srv.put(&bucket, "single", &data(300_000, 10)).await;
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::FlipByte, When::Probability(1.0)).ops(&[Op::GetObject])],
    )
    .await;
    let e = engine_via(&proxy.url()).await;
    for key in ["mp", "single"] {
        let dir = tmpdir();
        let dst = path(dir.path(), key);
        let err = e
            .get_to_file(&bucket, key, &dst, &GetOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Verification { what: "ETag", .. }),
            "{key}: {err:?}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{key}: nothing is left"
        );
    }
    proxy.assert_injected();
}

#[tokio::test]
async fn an_additional_checksum_is_sent_and_verified_both_ways() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let algo = s3sync::checksum::additional::ChecksumAlgorithm::Crc32c;
    let e = Engine::builder()
        .multipart(5 * MIB as u64, 5 * MIB as u64)
        .checksum(algo, false)
        .unwrap()
        .build_with_client(srv.client.clone())
        .unwrap();
    for (key, len) in [("mp", 11 * MIB + 5), ("single", 4000)] {
        if key == "mp" && !srv.is_garage() {
            eprintln!("moto mis-stores multipart checksums; garage covers the multipart case");
            continue;
        }
        let d = data(len, 11);
        let put = e
            .put_stream(&bucket, key, Trickle::new(d.clone()), &PutOptions::default())
            .await
            .expect("put");
        assert!(put.checksum.is_some(), "{key}: the server reports the checksum");
        let mut out = Vec::new();
        let got = e
            .get_stream(&bucket, key, &mut out, &GetOptions::default())
            .await
            .expect("get");
        assert_eq!(out, d);
        assert!(got.checksum_verified, "{key}");
    }
}

#[tokio::test]
async fn many_objects_share_one_small_engine() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    // A pool of 3 parts for 40 streams of up to 11 MiB at once: waiting for memory must not deadlock.
    let e = Engine::builder()
        .multipart(5 * MIB as u64, 5 * MIB as u64)
        .pool_size(15 * MIB as u64)
        .build_with_client(srv.client.clone())
        .unwrap();
    let sizes: Vec<usize> = (0..40)
        .map(|i| [10_240, 300_000, 6 * MIB, 11 * MIB + 1][i % 4])
        .collect();
    let puts = sizes.iter().enumerate().map(|(i, &len)| {
        let (e, bucket) = (e.clone(), bucket.clone());
        tokio::spawn(async move {
            let d = data(len, 100 + i as u64);
            let put = e
                .put_stream(
                    &bucket,
                    &format!("k{i:02}"),
                    Trickle::new(d.clone()),
                    &PutOptions::default(),
                )
                .await
                .expect("put");
            assert_eq!(put.size, len as u64);
        })
    });
    tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(puts))
        .await
        .expect("no deadlock")
        .into_iter()
        .for_each(|r| r.unwrap());
    let gets = sizes.iter().enumerate().map(|(i, &len)| {
        let (e, bucket) = (e.clone(), bucket.clone());
        tokio::spawn(async move {
            let mut out = Vec::new();
            e.get_stream(&bucket, &format!("k{i:02}"), &mut out, &GetOptions::default())
                .await
                .expect("get");
            assert_eq!(out, data(len, 100 + i as u64));
        })
    });
    tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(gets))
        .await
        .expect("no deadlock")
        .into_iter()
        .for_each(|r| r.unwrap());
    assert_eq!(srv.keys(&bucket).await.len(), 40);
}

#[tokio::test]
async fn a_failed_part_fails_the_upload_while_the_stream_is_silent() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::Status500, When::Probability(1.0)).ops(&[Op::UploadPart])],
    )
    .await;
    let retry = s3sync::RetryConfig {
        aws_max_attempts: 1,
        force_retry_count: 0,
        ..Default::default()
    };
    let client = ClientConfig {
        endpoint_url: Some(proxy.url()),
        force_path_style: true,
        ..Default::default()
    };
    let e = Engine::builder()
        .client(client)
        .retry(retry)
        .multipart(5 * MIB as u64, 5 * MIB as u64)
        .build()
        .await
        .unwrap();
    let mut reader = Trickle::new(data(6 * MIB, 12));
    reader.hang = true;
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        e.put_stream(&bucket, "k", reader, &PutOptions::default()),
    )
    .await
    .expect("the failed part ends the upload although the stream never ends");
    assert!(matches!(&r, Err(Error::S3(e)) if e.operation == "UploadPart"), "{r:?}");
    proxy.assert_injected();
    assert_eq!(srv.open_uploads(&bucket).await, 0, "the multipart upload was aborted");
}

#[tokio::test]
async fn a_wrong_stored_checksum_is_a_typed_error_and_leaves_no_file() {
    let srv = server().await;
    if srv.is_garage() {
        eprintln!("garage refuses wrong checksums on upload; moto stores them, so moto covers this test");
        return;
    }
    let bucket = srv.bucket().await;
    use base64::Engine as _;
    use sha2::Digest as _;
    let wrong = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b"other bytes"));
    srv.client
        .put_object()
        .bucket(&bucket)
        .key("liar")
        .body(aws_sdk_s3::primitives::ByteStream::from(b"actual bytes".to_vec()))
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .checksum_sha256(&wrong)
        .send()
        .await
        .unwrap();
    let head = srv
        .client
        .head_object()
        .bucket(&bucket)
        .key("liar")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    if head.checksum_sha256() != Some(wrong.as_str()) {
        eprintln!("this moto did not keep the wrong checksum; nothing to catch");
        return;
    }
    let e = engine(&srv);
    let dir = tmpdir();
    let err = e
        .get_to_file(&bucket, "liar", path(dir.path(), "liar"), &GetOptions::default())
        .await
        .unwrap_err();
    match err {
        Error::Verification {
            what: "additional checksum",
            expected,
            ..
        } => assert_eq!(expected, wrong),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_and_gets_at_once_with_failing_ranges_never_deadlock() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::Status500, When::Probability(0.3)).ops(&[Op::GetObject])],
    )
    .await;
    let retry = s3sync::RetryConfig {
        aws_max_attempts: 1,
        force_retry_count: 20,
        force_retry_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let client = ClientConfig {
        endpoint_url: Some(proxy.url()),
        force_path_style: true,
        ..Default::default()
    };
    // Three parts of memory for a dozen downloads of three ranges each and a dozen uploads.
    let e = Engine::builder()
        .client(client)
        .retry(retry)
        .multipart(5 * MIB as u64, 5 * MIB as u64)
        .pool_size(15 * MIB as u64)
        .build()
        .await
        .unwrap();
    let existing: Vec<Vec<u8>> = (0..6).map(|i| data(11 * MIB + i, 200 + i as u64)).collect();
    for (i, d) in existing.iter().enumerate() {
        srv.put(&bucket, &format!("old{i}"), d).await;
    }
    let mut tasks = Vec::new();
    for i in 0..12usize {
        let (e2, bucket2, want) = (e.clone(), bucket.clone(), existing[i % 6].clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            e2.get_stream(&bucket2, &format!("old{}", i % 6), &mut out, &GetOptions::default())
                .await
                .expect("get");
            assert_eq!(out, want);
        }));
        let (e, bucket) = (e.clone(), bucket.clone());
        tasks.push(tokio::spawn(async move {
            let d = data(6 * MIB + i * 100_000, 300 + i as u64);
            e.put_stream(&bucket, &format!("new{i:02}"), Trickle::new(d), &PutOptions::default())
                .await
                .expect("put");
        }));
    }
    tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(tasks))
        .await
        .expect("no deadlock")
        .into_iter()
        .for_each(|r| r.unwrap());
    proxy.assert_injected();
    assert_eq!(srv.keys(&bucket).await.len(), 18);
}
