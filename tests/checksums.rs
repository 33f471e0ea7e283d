//! End-to-end integrity with additional checksums against the real servers: Garage checks and stores
//! them (composite and full-object), moto accepts wrong ones (so download verification can be caught
//! in the act).

use crate::common;

use common::*;
use s3sync::checksum::additional::{combine_parts, to_base64, ChecksumAlgorithm, ChecksumHasher, ChecksumType};

const ALGOS: [&str; 5] = ["SHA256", "SHA1", "CRC32", "CRC32C", "CRC64NVME"];

fn digest(algo: ChecksumAlgorithm, data: &[u8]) -> Vec<u8> {
    let mut h = ChecksumHasher::new(algo);
    h.update(data);
    h.finish()
}

/// The checksum S3 should store for `data` written with 5 MiB parts (multipart when >= 5 MiB).
fn expected(algo: ChecksumAlgorithm, kind: ChecksumType, data: &[u8]) -> String {
    if data.len() < 5 * MIB {
        return to_base64(&digest(algo, data));
    }
    let parts: Vec<(Vec<u8>, u64)> = data
        .chunks(5 * MIB)
        .map(|c| (digest(algo, c), c.len() as u64))
        .collect();
    combine_parts(algo, kind, &parts).unwrap()
}

async fn stored_checksum(srv: &Server, bucket: &str, key: &str, algo: ChecksumAlgorithm) -> Option<String> {
    let h = srv
        .client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    match algo {
        ChecksumAlgorithm::Sha256 => h.checksum_sha256(),
        ChecksumAlgorithm::Sha1 => h.checksum_sha1(),
        ChecksumAlgorithm::Crc32 => h.checksum_crc32(),
        ChecksumAlgorithm::Crc32c => h.checksum_crc32_c(),
        ChecksumAlgorithm::Crc64Nvme => h.checksum_crc64_nvme(),
    }
    .map(str::to_string)
}

/// Puts `body` as the object `liar` with `wrong` sent as its `algo` checksum (SHA256 or CRC32);
/// whether the server kept that value (moto does; Garage refuses the upload).
async fn put_a_liar(srv: &Server, bucket: &str, body: Vec<u8>, algo: ChecksumAlgorithm, wrong: &str) -> bool {
    use aws_sdk_s3::types::ChecksumAlgorithm as Sdk;
    let put = srv
        .client
        .put_object()
        .bucket(bucket)
        .key("liar")
        .body(aws_sdk_s3::primitives::ByteStream::from(body));
    let put = match algo {
        ChecksumAlgorithm::Sha256 => put.checksum_algorithm(Sdk::Sha256).checksum_sha256(wrong),
        ChecksumAlgorithm::Crc32 => put.checksum_algorithm(Sdk::Crc32).checksum_crc32(wrong),
        other => panic!("no liar with {other:?}"),
    };
    put.send().await.unwrap();
    stored_checksum(srv, bucket, "liar", algo).await.as_deref() == Some(wrong)
}

#[tokio::test]
async fn every_algorithm_round_trips_and_verifies_on_garage() {
    let srv = server().await;
    if !srv.is_garage() {
        eprintln!("moto does not check checksums and mis-stores multipart ones; garage covers this test");
        return;
    }
    let src = tmpdir();
    let small = data(1000, 1);
    let big = data(11 * MIB + 5, 2);
    write_tree(src.path(), &[("small", small.clone()), ("big", big.clone())]);
    for name in ALGOS {
        let algo = ChecksumAlgorithm::parse(name).unwrap();
        for full in [false, true] {
            let Ok(kind) = ChecksumType::for_algorithm(algo, full) else {
                continue;
            };
            if full && algo == ChecksumAlgorithm::Crc64Nvme {
                continue; // always full-object; covered by full = false
            }
            let bucket = srv.bucket().await;
            let mut args = vec![
                "--multipart-threshold",
                "5MiB",
                "--multipart-chunksize",
                "5MiB",
                "--additional-checksum-algorithm",
                name,
            ];
            if full {
                args.push("--full-object-checksum");
            }
            let sp = s(src.path());
            let target = format!("s3://{bucket}/");
            args.extend([sp.as_str(), target.as_str()]);
            let r = srv.run(&args);
            r.expect(0);
            for (key, bytes) in [("small", &small), ("big", &big)] {
                let got = stored_checksum(&srv, &bucket, key, algo).await;
                assert_eq!(
                    got.as_deref(),
                    Some(expected(algo, kind, bytes).as_str()),
                    "{name} full={full} {key}"
                );
            }
            // Download verifying against the stored checksum.
            let dst = tmpdir();
            let r = srv.run(&[
                "-vvv",
                "--enable-additional-checksum",
                "--multipart-threshold",
                "5MiB",
                "--multipart-chunksize",
                "5MiB",
                &target,
                &s(dst.path()),
            ]);
            r.expect(0);
            assert_eq!(
                r.stderr.matches("additional checksum verified").count(),
                2,
                "{name} full={full}:\n{}",
                r.stderr
                    .lines()
                    .filter(|l| l.contains("checksum"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            assert_eq!(read_tree(dst.path()), read_tree(src.path()));
        }
    }
}

#[tokio::test]
async fn download_with_a_wrong_stored_checksum_fails_on_moto() {
    let srv = server().await;
    if srv.is_garage() {
        eprintln!("garage refuses wrong checksums on upload; moto stores them, so moto covers this test");
        return;
    }
    let bucket = srv.bucket().await;
    let wrong = to_base64(&digest(ChecksumAlgorithm::Sha256, b"other bytes"));
    if !put_a_liar(
        &srv,
        &bucket,
        b"actual bytes".to_vec(),
        ChecksumAlgorithm::Sha256,
        &wrong,
    )
    .await
    {
        eprintln!("this moto did not keep the wrong checksum; nothing to catch");
        return;
    }
    let dst = tmpdir();
    let r = srv.run(&[
        "--enable-additional-checksum",
        "--force-retry-count",
        "1",
        &format!("s3://{bucket}/"),
        &s(dst.path()),
    ]);
    r.expect(1);
    let right = to_base64(&digest(ChecksumAlgorithm::Sha256, b"actual bytes"));
    assert!(
        r.stderr.contains("liar") && r.stderr.contains(&wrong) && r.stderr.contains(&right),
        "{}",
        r.stderr
    );
    assert!(
        read_tree(dst.path()).is_empty(),
        "no file under its final name, no temp file"
    );
    // Without the option the download is verified by ETag and succeeds.
    srv.run(&[&format!("s3://{bucket}/"), &s(dst.path())]).expect(0);
}

#[tokio::test]
async fn check_additional_checksum_skips_identical_and_transfers_changed() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"alpha".to_vec()), ("b", b"bravo".to_vec())]);
    let target = format!("s3://{bucket}/");
    srv.run(&["--additional-checksum-algorithm", "CRC32C", &s(src.path()), &target])
        .expect(0);
    let r = srv.run(&[
        "--check-additional-checksum",
        "CRC32C",
        "--additional-checksum-algorithm",
        "CRC32C",
        &s(src.path()),
        &target,
    ]);
    assert_eq!(r.expect(0).transferred(), 0, "{}", r.stderr);
    assert_eq!(r.skipped(), 2);
    std::fs::write(src.path().join("b"), b"BRAVO").unwrap(); // same size, other bytes
    let r = srv.run(&[
        "--check-additional-checksum",
        "CRC32C",
        "--additional-checksum-algorithm",
        "CRC32C",
        &s(src.path()),
        &target,
    ]);
    assert_eq!(r.expect(0).transferred(), 1);
    assert_eq!(srv.get(&bucket, "b").await, b"BRAVO");
    // S3 -> local compares with the stored checksum too.
    let dst = tmpdir();
    srv.run(&[&target, &s(dst.path())]).expect(0);
    let r = srv.run(&["--check-additional-checksum", "CRC32C", &target, &s(dst.path())]);
    assert_eq!(r.expect(0).transferred(), 0, "{}", r.stderr);
}

#[tokio::test]
async fn report_sync_status_exits_0_when_synced_and_3_after_a_change() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"alpha".to_vec()), ("d/b", data(6 * MIB, 3))]);
    let target = format!("s3://{bucket}/");
    let mp = ["--multipart-threshold", "5MiB", "--multipart-chunksize", "5MiB"];
    let mut args: Vec<&str> = mp.to_vec();
    let sp = s(src.path());
    args.extend([sp.as_str(), target.as_str()]);
    srv.run(&args).expect(0);
    let mut rep: Vec<&str> = vec!["--report-sync-status"];
    rep.extend(mp);
    rep.extend([sp.as_str(), target.as_str()]);
    let r = srv.run(&rep);
    r.expect(0);
    assert!(
        r.stdout.contains("MATCH a") && r.stdout.contains("MATCH d/b"),
        "{}",
        r.stdout
    );
    assert_eq!(srv.keys(&bucket).await.len(), 2, "nothing transferred");
    std::fs::write(src.path().join("a"), b"ALPHA").unwrap();
    write_tree(src.path(), &[("new", b"n".to_vec())]);
    let r = srv.run(&rep);
    r.expect(3);
    assert!(
        r.stdout.contains("MISMATCH a") && r.stdout.contains("MISSING new") && r.stdout.contains("MATCH d/b"),
        "{}",
        r.stdout
    );
    assert_eq!(srv.get(&bucket, "a").await, b"alpha", "report transfers nothing");
}

#[tokio::test]
async fn objects_from_another_client_keep_their_etag_with_auto_chunksize() {
    let srv = server().await;
    let python = std::env::var("S3SYNC_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/s3sync"))
        .join("moto-venv/bin/python");
    assert!(
        python.exists(),
        "boto3 venv missing at {} (scripts/install-servers.sh moto)",
        python.display()
    );
    let b1 = srv.bucket().await;
    let b2 = srv.bucket().await;
    let src = tmpdir();
    let bytes = data(20 * MIB + 11, 4);
    write_tree(src.path(), &[("other", bytes.clone())]);
    // boto3 with a 6 MiB part size: a layout s3sync's defaults (8 MiB) would not reproduce.
    let script = format!(
        "import boto3,os\nfrom boto3.s3.transfer import TransferConfig\nfrom botocore.config import Config\n\
         c=boto3.client('s3',endpoint_url=os.environ['AWS_ENDPOINT_URL'],config=Config(s3={{'addressing_style':'path'}}))\n\
         c.upload_file({:?},{:?},'other',Config=TransferConfig(multipart_threshold=6*1024*1024,multipart_chunksize=6*1024*1024))\n",
        s(&src.path().join("other")),
        b1
    );
    let st = std::process::Command::new(&python)
        .arg("-c")
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success());
    let src_etag = srv.etag(&b1, "other").await;
    assert!(src_etag.ends_with("-4"), "{src_etag}");
    let r = srv.run(&["--auto-chunksize", &format!("s3://{b1}/"), &format!("s3://{b2}/")]);
    r.expect(0);
    if srv.is_garage() {
        assert_eq!(srv.etag(&b2, "other").await, src_etag, "same part layout, same ETag");
        assert_eq!(r.verified(), 1);
    } else {
        eprintln!("moto ignores partNumber, so the layout cannot be learned; garage covers the ETag equality");
    }
    assert_eq!(srv.get(&b2, "other").await, bytes);
    // Downloading it verifies against its own layout (garage) instead of raising a false alarm.
    let dst = tmpdir();
    let r = srv.run(&["--auto-chunksize", &format!("s3://{b1}/"), &s(dst.path())]);
    if srv.is_garage() {
        r.expect(0);
        // By the CRC boto3 stores with it, or by the ETag when it stored none.
        assert_eq!(r.verified() + r.checksum_verified(), 1, "{}", r.stderr);
    } else {
        assert!(r.code == 0 || r.code == 3, "{}", r.stderr);
    }
    assert_eq!(std::fs::read(dst.path().join("other")).unwrap(), bytes);
}

/// A large object that carries a CRC is verified by that CRC, not by the MD5s its ETag needs, and
/// the summary counts it as checksum verified; objects without one keep the ETag. A full-object CRC
/// (CRC64NVME, one PutObject) on both servers, downloaded in two ranges; a composite one (CRC32C,
/// multipart) on Garage, whose part layout the download learns (moto mis-stores multipart checksums).
#[tokio::test]
async fn large_objects_carrying_a_crc_are_verified_by_it() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let mut want = vec![
        ("crc/full".to_string(), data(7 * MIB + 3, 61)),
        ("plain/big".to_string(), data(7 * MIB + 5, 62)),
        ("plain/small".to_string(), data(1000, 63)),
    ];
    let full = tmpdir();
    write_tree(full.path(), &[("full", want[0].1.clone())]);
    srv.run(&[
        "--additional-checksum-algorithm",
        "CRC64NVME",
        &s(full.path()),
        &format!("s3://{bucket}/crc/"),
    ])
    .expect(0);
    let plain = tmpdir();
    write_tree(
        plain.path(),
        &[("big", want[1].1.clone()), ("small", want[2].1.clone())],
    );
    srv.run(&[&s(plain.path()), &format!("s3://{bucket}/plain/")]).expect(0);
    let mut by_crc = 1;
    if srv.is_garage() {
        let comp = tmpdir();
        let bytes = data(12 * MIB + 7, 64);
        write_tree(comp.path(), &[("composite", bytes.clone())]);
        srv.run(&[
            "--additional-checksum-algorithm",
            "CRC32C",
            "--multipart-threshold",
            "5MiB",
            "--multipart-chunksize",
            "5MiB",
            &s(comp.path()),
            &format!("s3://{bucket}/comp/"),
        ])
        .expect(0);
        let stored = stored_checksum(&srv, &bucket, "comp/composite", ChecksumAlgorithm::Crc32c).await;
        assert!(
            stored.is_some_and(|v| v.ends_with("-3")),
            "a composite CRC32C of 3 parts"
        );
        want.push(("comp/composite".to_string(), bytes));
        by_crc += 1;
    }
    let dst = tmpdir();
    let r = srv.run(&[
        "--multipart-threshold",
        "5MiB",
        "--multipart-chunksize",
        "5MiB",
        &format!("s3://{bucket}/"),
        &s(dst.path()),
    ]);
    r.expect(0);
    assert_eq!(r.checksum_verified(), by_crc, "{}", r.stderr);
    assert_eq!(
        r.verified(),
        2,
        "the objects without a CRC, by their ETags: {}",
        r.stderr
    );
    want.sort();
    assert_eq!(read_tree(dst.path()), want);
}

/// A server that keeps a wrong CRC for an object (moto keeps what it is sent): the download finds the
/// mismatch, fetches again comparing the ETag too, keeps the file (its bytes match the ETag) and warns
/// that the stored checksum is wrong (exit 3). Garage refuses wrong checksums, so moto covers this.
#[tokio::test]
async fn a_wrong_stored_crc_is_caught_and_blamed_on_moto() {
    let srv = server().await;
    if srv.is_garage() {
        eprintln!("garage refuses wrong checksums on upload; moto stores them, so moto covers this test");
        return;
    }
    let bucket = srv.bucket().await;
    let body = data(6 * MIB, 65);
    let wrong = to_base64(&digest(ChecksumAlgorithm::Crc32, b"other bytes"));
    if !put_a_liar(&srv, &bucket, body.clone(), ChecksumAlgorithm::Crc32, &wrong).await {
        eprintln!("this moto did not keep the wrong checksum; nothing to catch");
        return;
    }
    let dst = tmpdir();
    let r = srv.run(&[
        "--multipart-threshold",
        "5MiB",
        &format!("s3://{bucket}/"),
        &s(dst.path()),
    ]);
    r.expect(3);
    assert!(
        r.stderr.contains("liar") && r.stderr.contains(&wrong) && r.stderr.contains("match its ETag"),
        "{}",
        r.stderr
    );
    assert_eq!(r.verified(), 1, "verified by its ETag: {}", r.stderr);
    assert_eq!(read_tree(dst.path()), vec![("liar".to_string(), body)]);
}
