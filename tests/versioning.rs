//! Versioned syncs against moto (Garage has no versioning): every version in order with its origin
//! metadata, delete markers, incremental reruns, and point-in-time restores.

use crate::common;

use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use common::*;
use std::time::Duration;

async fn versioned_bucket(srv: &Server) -> String {
    let b = srv.bucket().await;
    srv.client
        .put_bucket_versioning()
        .bucket(&b)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    b
}

/// (key, version id, is delete marker, last modified) of a bucket, oldest first per key.
async fn versions(srv: &Server, bucket: &str) -> Vec<(String, String, bool, aws_sdk_s3::primitives::DateTime)> {
    let r = srv.client.list_object_versions().bucket(bucket).send().await.unwrap();
    let mut v: Vec<_> = r
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap().to_string(),
                v.version_id().unwrap().to_string(),
                false,
                *v.last_modified().unwrap(),
            )
        })
        .chain(r.delete_markers().iter().map(|d| {
            (
                d.key().unwrap().to_string(),
                d.version_id().unwrap().to_string(),
                true,
                *d.last_modified().unwrap(),
            )
        }))
        .collect();
    v.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.3.secs().cmp(&b.3.secs()))
            .then(a.3.subsec_nanos().cmp(&b.3.subsec_nanos()))
    });
    v
}

fn rfc3339_between(a: &aws_sdk_s3::primitives::DateTime, b: &aws_sdk_s3::primitives::DateTime) -> String {
    let mid = (a.as_secs_f64() + b.as_secs_f64()) / 2.0;
    let t = chrono::DateTime::from_timestamp(mid.floor() as i64, ((mid.fract()) * 1e9) as u32).unwrap();
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test]
async fn every_version_is_synced_in_order_and_point_in_time_restores() {
    let srv = server().await;
    if srv.is_garage() {
        eprintln!("garage has no versioning; moto covers this test");
        return;
    }
    let src = versioned_bucket(&srv).await;
    srv.put(&src, "k", b"version one").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    srv.put(&src, "k", b"version two").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    srv.put(&src, "j", b"jay").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    srv.client.delete_object().bucket(&src).key("k").send().await.unwrap();
    let sv = versions(&srv, &src).await;
    assert_eq!(sv.len(), 4, "{sv:?}");

    let dst = versioned_bucket(&srv).await;
    let r = srv.run(&["--enable-versioning", &format!("s3://{src}/"), &format!("s3://{dst}/")]);
    r.expect(0);
    assert_eq!(r.transferred(), 3);
    assert_eq!(r.deleted(), 1);
    let dv = versions(&srv, &dst).await;
    let mut shape: Vec<(&str, bool)> = dv.iter().map(|v| (v.0.as_str(), v.2)).collect();
    shape.sort();
    assert_eq!(
        shape,
        vec![("j", false), ("k", false), ("k", false), ("k", true)],
        "{dv:?}"
    );
    // Oldest first, each carrying its origin.
    // ListObjectVersions lists a key's versions newest first.
    let listed = srv.client.list_object_versions().bucket(&dst).send().await.unwrap();
    let mut k_versions: Vec<(String, String)> = listed
        .versions()
        .iter()
        .filter(|v| v.key() == Some("k"))
        .map(|v| (v.key().unwrap().to_string(), v.version_id().unwrap().to_string()))
        .collect();
    k_versions.reverse();
    let bodies: Vec<Vec<u8>> = {
        let mut out = Vec::new();
        for v in &k_versions {
            let o = srv
                .client
                .get_object()
                .bucket(&dst)
                .key("k")
                .version_id(&v.1)
                .send()
                .await
                .unwrap();
            let md = o.metadata().cloned().unwrap_or_default();
            assert!(
                md.contains_key("s3sync_origin_version_id") && md.contains_key("s3sync_origin_last_modified"),
                "{md:?}"
            );
            out.push(o.body.collect().await.unwrap().into_bytes().to_vec());
        }
        out
    };
    assert_eq!(bodies, vec![b"version one".to_vec(), b"version two".to_vec()]);

    // A rerun copies nothing new.
    let r = srv.run(&["--enable-versioning", &format!("s3://{src}/"), &format!("s3://{dst}/")]);
    r.expect(0);
    assert_eq!(r.transferred(), 0, "{}", r.stderr);
    assert_eq!(versions(&srv, &dst).await.len(), 4);

    // Point in time: between the two versions of k (j did not exist yet).
    let k1 = sv.iter().find(|v| v.0 == "k" && !v.2).unwrap();
    let k2 = sv.iter().filter(|v| v.0 == "k" && !v.2).nth(1).unwrap();
    let j1 = sv.iter().find(|v| v.0 == "j").unwrap();
    let kdel = sv.iter().find(|v| v.2).unwrap();
    let local = tmpdir();
    srv.run(&[
        "--point-in-time",
        &rfc3339_between(&k1.3, &k2.3),
        &format!("s3://{src}/"),
        &s(local.path()),
    ])
    .expect(0);
    assert_eq!(
        read_tree(local.path()),
        vec![("k".to_string(), b"version one".to_vec())]
    );
    // After j and k's second version, before k was deleted.
    let local2 = tmpdir();
    srv.run(&[
        "--point-in-time",
        &rfc3339_between(&j1.3, &kdel.3),
        &format!("s3://{src}/"),
        &s(local2.path()),
    ])
    .expect(0);
    assert_eq!(
        read_tree(local2.path()),
        vec![
            ("j".to_string(), b"jay".to_vec()),
            ("k".to_string(), b"version two".to_vec())
        ]
    );
    // Now: k is deleted.
    let b3 = srv.bucket().await;
    srv.run(&[
        "--point-in-time",
        "2999-01-01T00:00:00Z",
        &format!("s3://{src}/"),
        &format!("s3://{b3}/"),
    ])
    .expect(0);
    assert_eq!(srv.keys(&b3).await, vec!["j"]);
}

#[tokio::test]
async fn point_in_time_verifies_the_checksum_of_the_version_it_reads() {
    let srv = server().await;
    if srv.is_garage() {
        eprintln!("garage has no versioning; moto covers this test");
        return;
    }
    let src = versioned_bucket(&srv).await;
    for body in [&b"version one"[..], &b"version two, longer"[..]] {
        srv.client
            .put_object()
            .bucket(&src)
            .key("k")
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .body(aws_sdk_s3::primitives::ByteStream::from(body.to_vec()))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let sv = versions(&srv, &src).await;
    let local = tmpdir();
    let run = srv.run(&[
        "--point-in-time",
        &rfc3339_between(&sv[0].3, &sv[1].3),
        "--enable-additional-checksum",
        "-v",
        &format!("s3://{src}/"),
        &s(local.path()),
    ]);
    run.expect(0);
    assert_eq!(
        read_tree(local.path()),
        vec![("k".to_string(), b"version one".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_a_versioned_run_within_seconds() {
    let srv = server().await;
    if srv.is_garage() {
        eprintln!("garage has no versioning; moto covers this test");
        return;
    }
    let src = versioned_bucket(&srv).await;
    let puts = (0..400).map(|i| {
        let srv = &srv;
        let src = &src;
        async move { srv.put(src, &format!("k{i:04}"), b"v").await }
    });
    futures::future::join_all(puts).await;
    let dst = versioned_bucket(&srv).await;
    let args = [
        "--enable-versioning",
        "--worker-size",
        "1",
        &format!("s3://{src}/"),
        &format!("s3://{dst}/"),
    ];
    let some_copied = || async { !srv.keys(&dst).await.is_empty() };
    let Some((run, took)) = interrupt_when(srv.command(&args), "-INT", false, some_copied).await else {
        return;
    };
    assert!(
        took < Duration::from_secs(5),
        "stopped {took:?} after SIGINT:\n{}",
        run.stderr
    );
    run.expect(130);
    assert!(srv.keys(&dst).await.len() < 400, "the run stopped early");
}

#[tokio::test]
async fn the_filter_callback_sees_each_version_with_is_latest() {
    let srv = server().await;
    if srv.is_garage() {
        eprintln!("garage has no versioning; moto covers this test");
        return;
    }
    let src = versioned_bucket(&srv).await;
    srv.put(&src, "k", b"version one").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    srv.put(&src, "k", b"version two").await;
    srv.put(&src, "j", b"jay").await;
    let dir = tmpdir();
    let script = dir.path().join("latest.lua");
    std::fs::write(
        &script,
        "function filter(o) return o.is_latest and not o.is_delete_marker end",
    )
    .unwrap();
    let dst = versioned_bucket(&srv).await;
    let r = srv.run(&[
        "--enable-versioning",
        "--filter-callback-lua-script",
        &s(&script),
        &format!("s3://{src}/"),
        &format!("s3://{dst}/"),
    ]);
    r.expect(0);
    assert_eq!(r.transferred(), 2, "only the latest versions:\n{}", r.stderr);
    let dv = versions(&srv, &dst).await;
    let keys: Vec<&str> = dv.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(keys, vec!["j", "k"], "{dv:?}");
    assert_eq!(srv.get(&dst, "k").await, b"version two");
}
