//! Whole syncs in-process, without a server: the conformance suite against the in-memory S3 service,
//! and the cases only it can produce (a listing out of key order, the uploads left open).

#[path = "conformance.rs"]
mod conformance;

use crate::storage::failing::{FailingClient, Fault};
use crate::storage::memory::MemoryClient;
use crate::{Config, Location, Sync};
use conformance::World;
use std::sync::Arc;
use std::time::Duration;

/// An in-memory service with the two buckets of a scenario.
async fn world() -> World {
    let mem = MemoryClient::new();
    mem.create_bucket("a", false);
    mem.create_bucket("b", false);
    World {
        client: Arc::new(mem),
        buckets: ["a".into(), "b".into()],
    }
}

#[tokio::test]
async fn an_unordered_listing_still_syncs_every_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    let keys = ["a/1", "a/2", "b", "ba", "c/d/e", "z"];
    for (i, k) in keys.iter().enumerate() {
        mem.insert("b", k, vec![i as u8; 10 + i]);
    }
    mem.list_unordered();
    let source = Location::S3 {
        bucket: "b".into(),
        prefix: String::new(),
    };
    let cfg = Config::builder(source, Location::Local(dir.path().to_path_buf()))
        .with(|c| c.max_keys = 2)
        .build()
        .expect("config");
    let stats = Sync::new(cfg).with_object_client(mem).run().await.expect("run");
    assert_eq!((stats.transferred, stats.failed), (6, 0));
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(std::fs::read(dir.path().join(k)).expect("read"), vec![i as u8; 10 + i]);
    }
}

#[tokio::test]
async fn an_aborted_multipart_upload_leaves_no_upload_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("big"), vec![7u8; 11 << 20]).expect("write");
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    // Every part fails: the upload is abandoned after its retries.
    let failing =
        FailingClient::new(mem.clone()).fail_every("UploadPart", Fault::Error(crate::error::S3ErrorKind::Other));
    let target = Location::S3 {
        bucket: "b".into(),
        prefix: String::new(),
    };
    let cfg = Config::builder(Location::Local(dir.path().to_path_buf()), target)
        .multipart(5 << 20, 5 << 20)
        .with(|c| c.retry.force_retry_interval = Duration::from_millis(1))
        .build()
        .expect("config");
    let stats = Sync::new(cfg)
        .with_object_client(Arc::new(failing))
        .run()
        .await
        .expect("run");
    assert_eq!(stats.failed, 1);
    assert!(mem.calls("CreateMultipartUpload") >= 1);
    assert_eq!(mem.open_uploads("b"), 0);
    assert!(mem.keys("b").is_empty());
}

#[tokio::test]
async fn an_object_replaced_between_listing_and_download_is_not_mixed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    mem.insert("b", "p/obj", vec![1u8; 3000]);
    // Another writer replaces the object after the listing, just before the first GET.
    let writer = mem.clone();
    let replace = Fault::Before(Arc::new(move || {
        writer.insert("b", "p/obj", vec![2u8; 5000]);
    }));
    let failing = FailingClient::new(mem.clone()).fail_call("GetObject", 1, replace);
    let source = Location::S3 {
        bucket: "b".into(),
        prefix: "p/".into(),
    };
    let cfg = Config::builder(source, Location::Local(dir.path().to_path_buf()))
        .build()
        .expect("config");
    let mut sync = Sync::new(cfg).with_object_client(Arc::new(failing));
    let mut events = sync.events().expect("events");
    let stats = sync.run().await.expect("run");
    let mut failures = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let crate::SyncEvent::Failed { key, message } = e {
            failures.push((key, message));
        }
    }
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "obj", "the key relative to the prefix");
    assert!(
        failures[0].1.contains("replaced during the transfer"),
        "{}",
        failures[0].1
    );
    assert!(
        !dir.path().join("obj").exists(),
        "neither the old nor the new bytes under the listed ETag"
    );
    assert_eq!((stats.transferred, stats.failed + stats.warnings), (0, 1));
}

/// A multipart object whose server reports its composite CRC32C without the `-N` part count (as
/// MinIO did before 2023) is not taken for a full-object CRC: it is verified by its ETag as before,
/// instead of failing a CRC it was never going to match.
#[tokio::test]
async fn a_composite_crc_without_its_part_count_is_not_taken_for_a_full_object_one() {
    use crate::checksum::additional::{combine_parts, ChecksumAlgorithm, ChecksumHasher, ChecksumType};
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Arc::new(MemoryClient::new());
    mem.create_bucket("b", false);
    let part = 5usize << 20;
    let data: Vec<u8> = (0..(11usize << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let digests: Vec<(Vec<u8>, u64)> = data
        .chunks(part)
        .map(|c| {
            let mut h = ChecksumHasher::new(ChecksumAlgorithm::Crc32c);
            h.update(c);
            (h.finish(), c.len() as u64)
        })
        .collect();
    let composite = combine_parts(ChecksumAlgorithm::Crc32c, ChecksumType::Composite, &digests).expect("combine");
    let bare = composite.split('-').next().expect("value").to_string();
    let md5s: Vec<[u8; 16]> = data
        .chunks(part)
        .map(|c| {
            use md5::Digest;
            md5::Md5::digest(c).into()
        })
        .collect();
    let etag = crate::checksum::etag_from_parts(&md5s, true);
    mem.insert_as("b", "mp", data.clone(), &etag, (ChecksumAlgorithm::Crc32c, bare, false));
    let source = Location::S3 {
        bucket: "b".into(),
        prefix: String::new(),
    };
    let cfg = Config::builder(source, Location::Local(dir.path().to_path_buf()))
        .multipart(part as u64, part as u64)
        .build()
        .expect("config");
    let stats = Sync::new(cfg).with_object_client(mem.clone()).run().await.expect("run");
    assert_eq!((stats.transferred, stats.failed, stats.checksum_verified), (1, 0, 0));
    assert_eq!(std::fs::read(dir.path().join("mp")).expect("read"), data);
    assert_eq!(mem.calls("GetObject"), 3, "each range fetched once: no second look");
}
