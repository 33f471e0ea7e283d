//! Object attributes and selection against the real servers: metadata, tagging, SSE, storage class,
//! filters. Where a server lacks a feature the test says so and the other server covers it.

use crate::common;

use common::*;

const SSE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes, base64

fn sse_key_md5() -> String {
    use base64::Engine as _;
    use md5::Digest;
    let raw = base64::engine::general_purpose::STANDARD.decode(SSE_KEY).unwrap();
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(raw))
}

/// A file whose type is not known is uploaded as `application/octet-stream`, as the SDK sends it (and
/// not as whatever the server picks for a PUT without a type).
#[tokio::test]
async fn a_file_of_no_known_type_is_an_octet_stream() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("noext", b"x".to_vec()), ("page.html", b"<p>".to_vec())]);
    srv.run(&["--no-guess-mime-type", &s(src.path()), &format!("s3://{bucket}/")])
        .expect(0);
    for key in ["noext", "page.html"] {
        let h = srv.client.head_object().bucket(&bucket).key(key).send().await.unwrap();
        assert_eq!(h.content_type(), Some("application/octet-stream"), "{key}");
    }
}

#[tokio::test]
async fn metadata_overrides_are_set_on_upload() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(
        src.path(),
        &[("page.html", b"<p>".to_vec()), ("data.bin", b"x".to_vec())],
    );
    srv.run(&[
        "--cache-control",
        "max-age=60",
        "--content-disposition",
        "attachment",
        "--content-language",
        "en",
        "--content-encoding",
        "identity",
        "--metadata",
        "k1=v1,k2=v2",
        "--website-redirect",
        "/other",
        "--expires",
        "2030-01-02T03:04:05Z",
        "--put-last-modified-metadata",
        &s(src.path()),
        &format!("s3://{bucket}/"),
    ])
    .expect(0);
    let h = srv
        .client
        .head_object()
        .bucket(&bucket)
        .key("page.html")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_type(), Some("text/html"), "guessed from the name");
    assert_eq!(h.cache_control(), Some("max-age=60"));
    assert_eq!(h.content_disposition(), Some("attachment"));
    assert_eq!(h.content_language(), Some("en"));
    let md = h.metadata().cloned().unwrap_or_default();
    assert_eq!(md.get("k1").map(String::as_str), Some("v1"));
    assert_eq!(md.get("k2").map(String::as_str), Some("v2"));
    assert!(md.contains_key("s3sync_origin_last_modified"), "{md:?}");
    if srv.is_garage() {
        eprintln!("garage does not keep Expires / website redirect headers on objects; moto covers them");
    } else {
        assert_eq!(h.website_redirect_location(), Some("/other"));
        assert!(
            h.expires_string().unwrap_or_default().contains("2030"),
            "{:?}",
            h.expires_string()
        );
    }

    // --no-guess-mime-type and --content-type
    let b2 = srv.bucket().await;
    srv.run(&["--no-guess-mime-type", &s(src.path()), &format!("s3://{b2}/")])
        .expect(0);
    let h = srv
        .client
        .head_object()
        .bucket(&b2)
        .key("page.html")
        .send()
        .await
        .unwrap();
    assert_ne!(h.content_type(), Some("text/html"));
    let b3 = srv.bucket().await;
    srv.run(&[
        "--content-type",
        "application/x-test",
        &s(src.path()),
        &format!("s3://{b3}/"),
    ])
    .expect(0);
    let h = srv
        .client
        .head_object()
        .bucket(&b3)
        .key("page.html")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_type(), Some("application/x-test"));
}

/// A small object copied through the client costs one GET and one PUT: its metadata comes from the
/// GET's headers (no HEAD), and its tags are read only when the GET says it has some, once the server
/// showed that it says so (moto), or not at all once the server said it has no tagging (Garage).
#[tokio::test]
async fn s3_to_s3_reads_attributes_from_the_get() {
    use common::fault_proxy::{FaultProxy, Op};
    let srv = server().await;
    let b1 = srv.bucket().await;
    let tagged = !srv.is_garage();
    for key in ["a-tagged", "b-plain", "c-meta"] {
        let mut req = srv
            .client
            .put_object()
            .bucket(&b1)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(key.as_bytes().to_vec()));
        if key == "c-meta" {
            req = req.content_type("text/x-custom").metadata("color", "blue");
        }
        if tagged && key == "a-tagged" {
            req = req.tagging("team=storage");
        }
        req.send().await.unwrap();
    }
    let b2 = srv.bucket().await;
    let proxy = FaultProxy::start(&srv.endpoint, vec![]).await;
    // One worker: the objects are copied in key order, the tagged one first.
    let r = run_via(
        &srv,
        &proxy,
        &["--worker-size", "1", &format!("s3://{b1}/"), &format!("s3://{b2}/")],
    )
    .await;
    r.expect(0);
    assert_eq!(r.transferred(), 3);
    assert_eq!(proxy.requests_of(Op::HeadObject), 0, "{}", proxy.summary());
    assert_eq!(proxy.requests_of(Op::GetObject), 3, "{}", proxy.summary());
    assert_eq!(proxy.requests_of(Op::PutObject), 3, "{}", proxy.summary());
    assert_eq!(
        proxy.requests_of(Op::GetObjectTagging),
        1,
        "only the first object's tags are read: {}",
        proxy.summary()
    );
    assert_eq!(srv.get(&b2, "c-meta").await, b"c-meta");
    let h = srv.client.head_object().bucket(&b2).key("c-meta").send().await.unwrap();
    assert_eq!(h.content_type(), Some("text/x-custom"));
    assert_eq!(
        h.metadata().and_then(|m| m.get("color")).map(String::as_str),
        Some("blue")
    );
    if tagged {
        assert_eq!(
            tags_of(&srv, &b2, "a-tagged").await,
            vec![("team".into(), "storage".into())]
        );
        assert!(tags_of(&srv, &b2, "b-plain").await.is_empty());
    }
}

/// A server that never sends `x-amz-tagging-count` (or a caller not allowed to read tags) says
/// nothing about tags by leaving it out: every object's tags are read, and none is lost.
#[tokio::test]
async fn s3_to_s3_keeps_tags_when_the_server_omits_the_tag_count() {
    use common::fault_proxy::{Fault, FaultProxy, Op, Rule, When};
    let srv = server().await;
    if srv.is_garage() {
        eprintln!("garage has no object tagging; moto covers tags");
        return;
    }
    let b1 = srv.bucket().await;
    srv.put(&b1, "a-plain", b"a").await;
    srv.client
        .put_object()
        .bucket(&b1)
        .key("b-tagged")
        .body(aws_sdk_s3::primitives::ByteStream::from(b"b".to_vec()))
        .tagging("team=storage")
        .send()
        .await
        .unwrap();
    let b2 = srv.bucket().await;
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::NoTagCount, When::Always).ops(&[Op::GetObject])],
    )
    .await;
    let r = run_via(
        &srv,
        &proxy,
        &["--worker-size", "1", &format!("s3://{b1}/"), &format!("s3://{b2}/")],
    )
    .await;
    r.expect(0);
    assert_eq!(r.transferred(), 2);
    assert_eq!(proxy.requests_of(Op::GetObjectTagging), 2, "{}", proxy.summary());
    assert_eq!(
        tags_of(&srv, &b2, "b-tagged").await,
        vec![("team".into(), "storage".into())]
    );
}

async fn tags_of(srv: &Server, bucket: &str, key: &str) -> Vec<(String, String)> {
    let t = srv
        .client
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    t.tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

#[tokio::test]
async fn s3_to_s3_copies_metadata_and_tags() {
    let srv = server().await;
    let b1 = srv.bucket().await;
    let mut req = srv
        .client
        .put_object()
        .bucket(&b1)
        .key("obj")
        .body(aws_sdk_s3::primitives::ByteStream::from(b"hello".to_vec()))
        .content_type("text/x-custom")
        .cache_control("no-store")
        .metadata("color", "blue");
    if !srv.is_garage() {
        req = req.tagging("team=storage&tier=gold");
    }
    req.send().await.unwrap();
    for ssc in [false, true] {
        let b2 = srv.bucket().await;
        let mut args = vec![];
        if ssc {
            args.push("--server-side-copy");
        }
        let src = format!("s3://{b1}/");
        let dst = format!("s3://{b2}/");
        args.extend([src.as_str(), dst.as_str()]);
        srv.run(&args).expect(0);
        let h = srv.client.head_object().bucket(&b2).key("obj").send().await.unwrap();
        assert_eq!(h.content_type(), Some("text/x-custom"), "server-side copy: {ssc}");
        assert_eq!(h.cache_control(), Some("no-store"));
        assert_eq!(
            h.metadata().and_then(|m| m.get("color")).map(String::as_str),
            Some("blue")
        );
        if srv.is_garage() {
            eprintln!("garage has no object tagging; moto covers tags");
        } else {
            let t = srv
                .client
                .get_object_tagging()
                .bucket(&b2)
                .key("obj")
                .send()
                .await
                .unwrap();
            let mut tags: Vec<(String, String)> = t
                .tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect();
            tags.sort();
            assert_eq!(
                tags,
                vec![("team".into(), "storage".into()), ("tier".into(), "gold".into())]
            );
        }
    }
    // Switches drop what they name.
    let b3 = srv.bucket().await;
    srv.run(&[
        "--no-sync-user-defined-metadata",
        "--no-sync-system-metadata",
        "--disable-tagging",
        &format!("s3://{b1}/"),
        &format!("s3://{b3}/"),
    ])
    .expect(0);
    let h = srv.client.head_object().bucket(&b3).key("obj").send().await.unwrap();
    assert_ne!(h.content_type(), Some("text/x-custom"));
    assert!(h.metadata().map(|m| m.is_empty()).unwrap_or(true));
    if !srv.is_garage() {
        let t = srv
            .client
            .get_object_tagging()
            .bucket(&b3)
            .key("obj")
            .send()
            .await
            .unwrap();
        assert!(t.tag_set().is_empty());
        // --tagging replaces the tags.
        let b4 = srv.bucket().await;
        srv.run(&["--tagging", "a=1", &format!("s3://{b1}/"), &format!("s3://{b4}/")])
            .expect(0);
        let t = srv
            .client
            .get_object_tagging()
            .bucket(&b4)
            .key("obj")
            .send()
            .await
            .unwrap();
        assert_eq!(t.tag_set().len(), 1);
        assert_eq!(t.tag_set()[0].key(), "a");
    }
}

#[tokio::test]
async fn sse_and_storage_class_headers_reach_the_server() {
    let srv = server().await;
    if srv.is_garage() {
        eprintln!("garage has no SSE-S3/SSE-KMS and ignores storage classes; moto covers this test");
        return;
    }
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec()), ("big", data(6 * MIB, 1))]);
    let r = srv.run(&[
        "--sse",
        "AES256",
        "--storage-class",
        "STANDARD_IA",
        "--acl",
        "private",
        "--multipart-threshold",
        "5MiB",
        "--multipart-chunksize",
        "5MiB",
        &s(src.path()),
        &format!("s3://{bucket}/"),
    ]);
    r.expect(0);
    for key in ["a", "big"] {
        let h = srv.client.head_object().bucket(&bucket).key(key).send().await.unwrap();
        assert_eq!(h.server_side_encryption().map(|s| s.as_str()), Some("AES256"), "{key}");
        assert_eq!(h.storage_class().map(|s| s.as_str()), Some("STANDARD_IA"), "{key}");
    }
    // SSE-KMS with a key id; the run says why ETags are not verified, and the CRC32C checksum is.
    let b2 = srv.bucket().await;
    let kms = "arn:aws:kms:us-east-1:123456789012:key/s3sync-test";
    let r = srv.run(&[
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        kms,
        "--additional-checksum-algorithm",
        "CRC32C",
        &s(src.path()),
        &format!("s3://{b2}/"),
    ]);
    r.expect(0);
    assert!(r.stderr.contains("not MD5"), "{}", r.stderr);
    let h = srv.client.head_object().bucket(&b2).key("a").send().await.unwrap();
    assert_eq!(h.server_side_encryption().map(|s| s.as_str()), Some("aws:kms"));
    assert_eq!(h.ssekms_key_id(), Some(kms));
    // --acl reaches the object.
    let b3 = srv.bucket().await;
    srv.run(&["--acl", "public-read", &s(src.path()), &format!("s3://{b3}/")])
        .expect(0);
    let acl = srv.client.get_object_acl().bucket(&b3).key("a").send().await.unwrap();
    assert!(
        acl.grants().iter().any(|g| g
            .grantee()
            .and_then(|x| x.uri())
            .is_some_and(|u| u.ends_with("AllUsers"))),
        "{acl:?}"
    );
    // --sse-kms-key-id without --sse aws:kms is refused.
    srv.run(&["--sse-kms-key-id", kms, &s(src.path()), &format!("s3://{b2}/")])
        .expect(2);
}

#[tokio::test]
async fn sse_c_multipart_upload_ranged_download_and_copy() {
    let srv = server().await;
    if !srv.is_garage() {
        eprintln!("moto does not enforce SSE-C; garage covers this test");
        return;
    }
    let md5 = sse_key_md5();
    let bucket = srv.bucket().await;
    let src = tmpdir();
    let big = data(12 * MIB + 3, 8);
    write_tree(src.path(), &[("small", b"secret".to_vec()), ("big", big.clone())]);
    let sse_t = [
        "--target-sse-c",
        "AES256",
        "--target-sse-c-key",
        SSE_KEY,
        "--target-sse-c-key-md5",
        md5.as_str(),
    ];
    let sse_s = [
        "--source-sse-c",
        "AES256",
        "--source-sse-c-key",
        SSE_KEY,
        "--source-sse-c-key-md5",
        md5.as_str(),
    ];
    let mp = ["--multipart-threshold", "5MiB", "--multipart-chunksize", "5MiB"];
    let target = format!("s3://{bucket}/");
    let mut args: Vec<&str> = sse_t.to_vec();
    args.extend(mp);
    let sp = s(src.path());
    args.extend([sp.as_str(), target.as_str()]);
    let r = srv.run(&args);
    r.expect(0);
    assert!(
        r.stderr.contains("not MD5"),
        "the run says why ETags are not verified:\n{}",
        r.stderr
    );
    // Encrypted: a GET without the key fails.
    assert!(srv
        .client
        .get_object()
        .bucket(&bucket)
        .key("small")
        .send()
        .await
        .is_err());
    // Ranged parallel download with the key.
    let dst = tmpdir();
    let mut args: Vec<&str> = sse_s.to_vec();
    args.extend(mp);
    let dp = s(dst.path());
    args.extend([target.as_str(), dp.as_str()]);
    srv.run(&args).expect(0);
    assert_eq!(std::fs::read(dst.path().join("big")).unwrap(), big);
    assert_eq!(std::fs::read(dst.path().join("small")).unwrap(), b"secret");
    // Server-side copy to another bucket under the same key.
    let b2 = srv.bucket().await;
    let t2 = format!("s3://{b2}/");
    let mut args: Vec<&str> = vec!["--server-side-copy"];
    args.extend(sse_s);
    args.extend(sse_t);
    args.extend(mp);
    args.extend([target.as_str(), t2.as_str()]);
    srv.run(&args).expect(0);
    let dst2 = tmpdir();
    let mut args: Vec<&str> = sse_s.to_vec();
    let dp2 = s(dst2.path());
    args.extend([t2.as_str(), dp2.as_str()]);
    srv.run(&args).expect(0);
    assert_eq!(std::fs::read(dst2.path().join("big")).unwrap(), big);
}

#[tokio::test]
async fn filters_select_what_they_should() {
    let srv = server().await;
    let src = tmpdir();
    write_tree(
        src.path(),
        &[
            ("logs/a.log", vec![1; 10]),
            ("logs/b.txt", vec![1; 2000]),
            ("データ/ファイル.log", vec![1; 100]),
            ("keep.txt", vec![1; 500]),
        ],
    );
    let check = |args: Vec<&'static str>, want: Vec<&'static str>| {
        let srv = &srv;
        let src = src.path().to_path_buf();
        async move {
            let b = srv.bucket().await;
            let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            a.push(s(&src));
            a.push(format!("s3://{b}/"));
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            srv.run(&refs).expect(0);
            let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(srv.keys(&b).await, want, "{args:?}");
        }
    };
    check(
        vec!["--filter-include-regex", r"\.log$"],
        vec!["logs/a.log", "データ/ファイル.log"],
    )
    .await;
    check(
        vec!["--filter-exclude-regex", "^logs/"],
        vec!["keep.txt", "データ/ファイル.log"],
    )
    .await;
    check(vec!["--filter-include-regex", "^データ/"], vec!["データ/ファイル.log"]).await;
    check(
        vec!["--filter-smaller-size", "500"],
        vec!["logs/a.log", "データ/ファイル.log"],
    )
    .await;
    check(vec!["--filter-larger-size", "500"], vec!["keep.txt", "logs/b.txt"]).await;
    check(vec!["--filter-mtime-after", "2999-01-01T00:00:00Z"], vec![]).await;
    check(
        vec!["--filter-mtime-before", "2999-01-01T00:00:00Z"],
        vec!["keep.txt", "logs/a.log", "logs/b.txt", "データ/ファイル.log"],
    )
    .await;
}

#[tokio::test]
async fn attribute_filters_select_by_content_type_metadata_and_tags() {
    let srv = server().await;
    let b1 = srv.bucket().await;
    let put = |key: &'static str, ct: &'static str, color: &'static str, tags: &'static str| {
        let srv = &srv;
        let b1 = b1.clone();
        async move {
            let mut r = srv
                .client
                .put_object()
                .bucket(&b1)
                .key(key)
                .body(aws_sdk_s3::primitives::ByteStream::from(key.as_bytes().to_vec()))
                .content_type(ct)
                .metadata("color", color);
            if !srv.is_garage() {
                r = r.tagging(tags);
            }
            r.send().await.unwrap();
        }
    };
    put("a.txt", "text/plain", "red", "env=prod").await;
    put("b.json", "application/json", "blue", "env=dev").await;
    put("c.txt", "text/plain", "blue", "env=dev").await;
    let run = |args: Vec<&'static str>| {
        let srv = &srv;
        let b1 = b1.clone();
        async move {
            let b2 = srv.bucket().await;
            let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            a.push(format!("s3://{b1}/"));
            a.push(format!("s3://{b2}/"));
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            srv.run(&refs).expect(0);
            srv.keys(&b2).await
        }
    };
    assert_eq!(
        run(vec!["--filter-include-content-type-regex", "^text/"]).await,
        vec!["a.txt", "c.txt"]
    );
    assert_eq!(
        run(vec!["--filter-exclude-content-type-regex", "json"]).await,
        vec!["a.txt", "c.txt"]
    );
    assert_eq!(
        run(vec!["--filter-include-metadata-regex", "color=blue"]).await,
        vec!["b.json", "c.txt"]
    );
    assert_eq!(
        run(vec!["--filter-exclude-metadata-regex", "color=(red|green)"]).await,
        vec!["b.json", "c.txt"]
    );
    if srv.is_garage() {
        eprintln!("garage has no tagging; moto covers the tag filters");
    } else {
        assert_eq!(
            run(vec!["--filter-include-tag-regex", "^env=prod$"]).await,
            vec!["a.txt"]
        );
        assert_eq!(
            run(vec!["--filter-exclude-tag-regex", "env=prod"]).await,
            vec!["b.json", "c.txt"]
        );
    }
    // Local sources: the content type is guessed from the name.
    let src = tmpdir();
    write_tree(src.path(), &[("x.html", b"h".to_vec()), ("y.png", b"p".to_vec())]);
    let b3 = srv.bucket().await;
    srv.run(&[
        "--filter-include-content-type-regex",
        "^image/",
        &s(src.path()),
        &format!("s3://{b3}/"),
    ])
    .expect(0);
    assert_eq!(srv.keys(&b3).await, vec!["y.png"]);
}

#[tokio::test]
async fn max_delete_stops_deleting_and_warns() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    for k in ["x1", "x2", "x3"] {
        srv.put(&bucket, k, b"x").await;
    }
    let src = tmpdir();
    write_tree(src.path(), &[("keep", b"k".to_vec())]);
    let r = srv.run(&[
        "--delete",
        "--max-delete",
        "1",
        &s(src.path()),
        &format!("s3://{bucket}/"),
    ]);
    r.expect(3);
    assert_eq!(r.deleted(), 1);
    assert_eq!(srv.keys(&bucket).await.len(), 3, "keep + two of the three extras");
}

#[tokio::test]
async fn rate_limits_shape_the_run() {
    let srv = server().await;
    // Only upper bounds: a limit must never be exceeded (one second of burst credit is allowed for),
    // but how far below the limit a loaded machine runs is not this test's business (benchmarks).
    // Bandwidth: 6 MiB at 1 MiB/s with one second of burst credit takes at least 5 s.
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", data(3 * MIB, 1)), ("b", data(3 * MIB, 2))]);
    let t = std::time::Instant::now();
    srv.run(&[
        "--rate-limit-bandwidth",
        "1MiB",
        &s(src.path()),
        &format!("s3://{bucket}/"),
    ])
    .expect(0);
    let secs = t.elapsed().as_secs_f64();
    let rate = 5.0 / secs; // MiB/s beyond the burst
    assert!(
        rate <= 1.06,
        "upload bandwidth {rate:.3} MiB/s over {secs:.2} s, limit 1 MiB/s"
    );
    // The same limit applies to downloads.
    let dst = tmpdir();
    let t = std::time::Instant::now();
    srv.run(&[
        "--rate-limit-bandwidth",
        "1MiB",
        &format!("s3://{bucket}/"),
        &s(dst.path()),
    ])
    .expect(0);
    let rate = 5.0 / t.elapsed().as_secs_f64();
    assert!(rate <= 1.06, "download bandwidth {rate:.3} MiB/s, limit 1 MiB/s");
    assert_eq!(std::fs::read(dst.path().join("a")).unwrap(), data(3 * MIB, 1));
    // Objects: 30 objects at 10/s with 10 of burst take at least 2 s.
    let b2 = srv.bucket().await;
    let many = tmpdir();
    let files: Vec<(String, Vec<u8>)> = (0..30).map(|i| (format!("f{i:02}"), vec![i as u8])).collect();
    write_tree(many.path(), &files);
    let t = std::time::Instant::now();
    srv.run(&["--rate-limit-objects", "10", &s(many.path()), &format!("s3://{b2}/")])
        .expect(0);
    let rate = 20.0 / t.elapsed().as_secs_f64();
    assert!(rate <= 10.6, "{rate:.2} objects/s, limit 10/s");
}

#[tokio::test]
async fn latest_tagging_and_metadata_tagging_reports() {
    let srv = server().await;
    if srv.is_garage() {
        eprintln!("garage has no tagging; moto covers this test");
        return;
    }
    let b1 = srv.bucket().await;
    let b2 = srv.bucket().await;
    srv.client
        .put_object()
        .bucket(&b1)
        .key("o")
        .body(aws_sdk_s3::primitives::ByteStream::from(b"data".to_vec()))
        .tagging("v=1")
        .metadata("m", "1")
        .send()
        .await
        .unwrap();
    let (src, dst) = (format!("s3://{b1}/"), format!("s3://{b2}/"));
    srv.run(&[&src, &dst]).expect(0);
    let r = srv.run(&[
        "--report-sync-status",
        "--report-metadata-sync-status",
        "--report-tagging-sync-status",
        &src,
        &dst,
    ]);
    r.expect(0);
    assert!(
        r.stdout.contains("MATCH o") && r.stdout.contains("METADATA_MATCH o") && r.stdout.contains("TAGGING_MATCH o"),
        "{}",
        r.stdout
    );
    // Only the tags change at the source.
    srv.client
        .put_object_tagging()
        .bucket(&b1)
        .key("o")
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .tag_set(aws_sdk_s3::types::Tag::builder().key("v").value("2").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let r = srv.run(&["--report-sync-status", "--report-tagging-sync-status", &src, &dst]);
    r.expect(3);
    assert!(r.stdout.contains("TAGGING_MISMATCH o"), "{}", r.stdout);
    let r = srv.run(&["--sync-latest-tagging", &src, &dst]);
    r.expect(0);
    assert_eq!(r.transferred(), 0, "only the tags moved");
    let t = srv
        .client
        .get_object_tagging()
        .bucket(&b2)
        .key("o")
        .send()
        .await
        .unwrap();
    assert_eq!(t.tag_set()[0].value(), "2");
    let r = srv.run(&["--report-sync-status", "--report-tagging-sync-status", &src, &dst]);
    r.expect(0);
}

#[tokio::test]
async fn https_proxy_carries_every_request_with_its_credentials() {
    use std::io::BufRead;
    let srv = server().await;
    let bucket = srv.bucket().await;
    let mut proxy = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/forward_proxy.py"))
        .env("PROXY_AUTH", "user:secret")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 for the test proxy");
    let mut lines = std::io::BufReader::new(proxy.stdout.take().unwrap()).lines();
    let port: u16 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    let log = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<String>>());
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"through the proxy".to_vec())]);
    let r = srv.run(&[
        "--https-proxy",
        &format!("http://user:secret@127.0.0.1:{port}"),
        &s(src.path()),
        &format!("s3://{bucket}/"),
    ]);
    proxy.kill().unwrap();
    let _ = proxy.wait();
    let log = log.join().unwrap();
    r.expect(0);
    assert!(!r.stderr.contains("secret"), "proxy credentials never appear in output");
    assert_eq!(srv.get(&bucket, "a").await, b"through the proxy");
    assert!(
        log.iter().any(|l| l.starts_with("PROXY PUT") && l.ends_with("auth=ok")),
        "{log:?}"
    );
    assert!(log.iter().all(|l| l.ends_with("auth=ok")), "{log:?}");
}
