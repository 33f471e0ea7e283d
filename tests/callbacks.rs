//! Callbacks and the options of s3sync 1.62.4 beyond its README, against the real servers: the Lua
//! example scripts end to end, the Lua sandbox and limits, dry runs, conditional writes.

use crate::common;

use common::fault_proxy::{Fault, FaultProxy, Op, Rule, When};
use common::*;

fn example(name: &str) -> String {
    format!("{}/lua/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn script(dir: &std::path::Path, body: &str) -> String {
    let p = dir.join("script.lua");
    std::fs::write(&p, body).unwrap();
    s(&p)
}

fn s3(bucket: &str) -> String {
    format!("s3://{bucket}/")
}

#[tokio::test]
async fn filter_script_selects_objects_and_reports_them_as_filtered() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(
        src.path(),
        &[
            ("a.txt", b"a".to_vec()),
            ("b.csv", b"b".to_vec()),
            ("c.bin", b"c".to_vec()),
            ("tmp/d.txt", b"d".to_vec()),
        ],
    );
    let events = tmpdir();
    let run = srv.run(&[
        "--filter-callback-lua-script",
        &example("filter_by_key_and_mtime.lua"),
        "--event-callback-lua-script",
        &example("event_log.lua"),
        &s(src.path()),
        &s3(&bucket),
    ]);
    run.expect(0);
    drop(events);
    assert_eq!(srv.keys(&bucket).await, vec!["a.txt", "b.csv"]);
    assert_eq!(run.transferred(), 2);
    let filtered: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("EVENT SYNC_FILTERED"))
        .collect();
    assert_eq!(filtered.len(), 2, "c.bin and tmp/d.txt filtered:\n{}", run.stdout);
    // Deletions ignore the filter callback (as the reference): with --delete a filtered target-only
    // object is still deleted, a filtered source object is not uploaded.
    srv.put(&bucket, "stale.bin", b"x").await;
    srv.run(&[
        "--filter-callback-lua-script",
        &example("filter_by_key_and_mtime.lua"),
        "--delete",
        &s(src.path()),
        &s3(&bucket),
    ])
    .expect(0);
    assert_eq!(srv.keys(&bucket).await, vec!["a.txt", "b.csv"]);
}

#[tokio::test]
async fn preprocess_script_sets_metadata_and_tags_and_cancels() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(
        src.path(),
        &[
            ("doc.json", b"{}".to_vec()),
            ("keep.txt", b"hello".to_vec()),
            ("key.secret", b"s".to_vec()),
        ],
    );
    let run = srv.run(&[
        "--preprocess-callback-lua-script",
        &example("preprocess_add_metadata_and_tags.lua"),
        &s(src.path()),
        &s3(&bucket),
    ]);
    run.expect(0);
    assert_eq!(
        srv.keys(&bucket).await,
        vec!["doc.json", "keep.txt"],
        "key.secret cancelled"
    );
    assert_eq!(run.transferred(), 2);
    assert_eq!(run.skipped(), 1, "a cancelled object counts as skipped");
    let h = srv
        .client
        .head_object()
        .bucket(&bucket)
        .key("doc.json")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_type(), Some("application/json"));
    assert_eq!(h.cache_control(), Some("max-age=60"));
    let md = h.metadata().cloned().unwrap_or_default();
    assert_eq!(md.get("origin-key").map(String::as_str), Some("doc.json"));
    assert_eq!(md.get("origin-size").map(String::as_str), Some("2"));
    if srv.is_garage() {
        eprintln!("garage does not implement object tagging: tags checked on moto");
        return;
    }
    let tags = srv
        .client
        .get_object_tagging()
        .bucket(&bucket)
        .key("keep.txt")
        .send()
        .await
        .unwrap();
    let mut tags: Vec<(String, String)> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        vec![("pipeline".into(), "ingest".into()), ("size".into(), "5".into())]
    );
}

#[tokio::test]
async fn preprocess_script_applies_to_s3_to_s3_copies() {
    let srv = server().await;
    let (b1, b2) = (srv.bucket().await, srv.bucket().await);
    srv.put(&b1, "x.json", b"[1]").await;
    srv.run(&[
        "--preprocess-callback-lua-script",
        &example("preprocess_add_metadata_and_tags.lua"),
        &s3(&b1),
        &s3(&b2),
    ])
    .expect(0);
    let h = srv.client.head_object().bucket(&b2).key("x.json").send().await.unwrap();
    assert_eq!(h.content_type(), Some("application/json"));
    let md = h.metadata().cloned().unwrap_or_default();
    assert_eq!(md.get("origin-size").map(String::as_str), Some("3"));
}

#[tokio::test]
async fn event_script_sees_every_event_in_order() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "gone", b"g").await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec()), ("b", b"bb".to_vec())]);
    let run = srv.run(&[
        "--event-callback-lua-script",
        &example("event_log.lua"),
        "--delete",
        &s(src.path()),
        &s3(&bucket),
    ]);
    run.expect(0);
    let names: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("EVENT "))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    let count = |n: &str| names.iter().filter(|x| **x == n).count();
    assert_eq!(names.first(), Some(&"PIPELINE_START"), "{names:?}");
    assert_eq!(names.last(), Some(&"PIPELINE_END"), "{names:?}");
    assert_eq!(count("SYNC_START"), 2, "{names:?}");
    assert_eq!(count("SYNC_WRITE"), 2, "{names:?}");
    assert_eq!(count("SYNC_COMPLETE"), 2, "{names:?}");
    assert_eq!(count("SYNC_ETAG_VERIFIED"), 2, "{names:?}");
    assert_eq!(count("SYNC_DELETE"), 1, "{names:?}");
    assert_eq!(count("STATS_REPORT"), 1, "{names:?}");
    assert!(
        run.stdout
            .contains("EVENT STATS_REPORT transferred=2 deleted=1 skipped=0 errors=0"),
        "{}",
        run.stdout
    );
}

/// A request payer set by the preprocess callback is sent with every request of that object's
/// upload: CreateMultipartUpload, each UploadPart and the completion (a requester-pays bucket refuses
/// any request without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_payer_from_preprocess_reaches_every_request_of_the_upload() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("big", data(6 * MIB, 7)), ("small", b"s".to_vec())]);
    let dir = tmpdir();
    let script = script(
        dir.path(),
        "function preprocess_callback(source, meta)\n  if source.key == 'big' then meta.request_payer = 'requester' end\n  return true, meta\nend\n",
    );
    let proxy = FaultProxy::start(&srv.endpoint, vec![]).await;
    let cmd = srv.command_via(
        &proxy.url(),
        &[
            "--preprocess-callback-lua-script",
            &script,
            "--multipart-threshold",
            "5MiB",
            "--multipart-chunksize",
            "5MiB",
            &s(src.path()),
            &s3(&bucket),
        ],
    );
    let run = Run::from(tokio::process::Command::from(cmd).output().await.unwrap());
    run.expect(0);
    let mut paid: Vec<Op> = proxy
        .conditions()
        .into_iter()
        .filter(|(_, h)| h == "x-amz-request-payer: requester")
        .map(|(op, _)| op)
        .collect();
    paid.sort_by_key(|op| format!("{op:?}"));
    assert_eq!(
        paid,
        vec![
            Op::CompleteMultipartUpload,
            Op::CreateMultipartUpload,
            Op::UploadPart,
            Op::UploadPart
        ],
        "only big's upload, all of it: {:?}",
        proxy.conditions()
    );
    assert_eq!(srv.get(&bucket, "big").await, data(6 * MIB, 7));
}

/// Ctrl-C stops a run whose filter script loops forever, with the timeout off: the script is
/// interrupted, not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_interrupts_an_endless_script() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec())]);
    let dir = tmpdir();
    let mark = dir.path().join("started");
    let body = format!(
        "function filter(o)\n  local f = io.open({:?}, 'w') f:write('x') f:close()\n  while true do end\nend\n",
        s(&mark)
    );
    let script = script(dir.path(), &body);
    let cmd = srv.command(&[
        "--filter-callback-lua-script",
        &script,
        "--allow-lua-os-library",
        "--lua-callback-timeout-milliseconds",
        "0",
        &s(src.path()),
        &s3(&bucket),
    ]);
    let started = || {
        let m = mark.clone();
        async move { m.exists() }
    };
    let (run, took) = interrupt_when(cmd, "-INT", false, started)
        .await
        .expect("the script started");
    run.expect(130);
    assert!(
        took < std::time::Duration::from_secs(10),
        "stopped {took:?} after SIGINT:\n{}",
        run.stderr
    );
    assert!(srv.keys(&bucket).await.is_empty());
}

/// An additional checksum that was compared and agreed is reported as SYNC_CHECKSUM_VERIFIED, on
/// upload (the server's stored checksum against ours) and on download (the bytes against it).
#[tokio::test]
async fn verified_checksums_are_events() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec()), ("b", b"bb".to_vec())]);
    let names = |run: &Run| -> Vec<String> {
        run.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("EVENT "))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    };
    let count = |names: &[String], n: &str| names.iter().filter(|x| *x == n).count();
    let run = srv.run(&[
        "--event-callback-lua-script",
        &example("event_log.lua"),
        "--additional-checksum-algorithm",
        "CRC32C",
        &s(src.path()),
        &s3(&bucket),
    ]);
    run.expect(0);
    let up = names(&run);
    assert_eq!(count(&up, "SYNC_CHECKSUM_VERIFIED"), 2, "{up:?}");
    let dst = tmpdir();
    let run = srv.run(&[
        "--event-callback-lua-script",
        &example("event_log.lua"),
        "--enable-additional-checksum",
        &s3(&bucket),
        &s(dst.path()),
    ]);
    run.expect(0);
    let down = names(&run);
    assert_eq!(count(&down, "SYNC_CHECKSUM_VERIFIED"), 2, "{down:?}");
    // Without an additional checksum there is nothing to report.
    let run = srv.run(&[
        "--event-callback-lua-script",
        &example("event_log.lua"),
        &s(src.path()),
        &s3(&srv.bucket().await),
    ]);
    run.expect(0);
    assert_eq!(count(&names(&run), "SYNC_CHECKSUM_VERIFIED"), 0);
}

#[tokio::test]
async fn an_event_script_error_is_a_warning_and_the_sync_completes() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec())]);
    let dir = tmpdir();
    let run = srv.run(&[
        "--event-callback-lua-script",
        &script(dir.path(), "function on_event(e) error('boom') end"),
        &s(src.path()),
        &s3(&bucket),
    ]);
    run.expect(0);
    assert!(run.stderr.contains("boom"), "{}", run.stderr);
    assert_eq!(srv.keys(&bucket).await, vec!["a"]);
}

#[tokio::test]
async fn script_errors_stop_the_run_with_exit_1() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec()), ("b", b"b".to_vec())]);
    let dir = tmpdir();
    // A syntax error: refused before any transfer, naming the script and the line.
    let path = script(dir.path(), "function filter(o)\n  return o.key ==\nend\n");
    let run = srv.run(&["--filter-callback-lua-script", &path, &s(src.path()), &s3(&bucket)]);
    run.expect(1);
    assert!(run.stderr.contains(&format!("{path}:3")), "{}", run.stderr);
    assert!(srv.keys(&bucket).await.is_empty());
    // A runtime error in the filter stops the run.
    let path = script(dir.path(), "function filter(o) error('no such thing') end");
    let run = srv.run(&["--filter-callback-lua-script", &path, &s(src.path()), &s3(&bucket)]);
    run.expect(1);
    assert!(
        run.stderr.contains("Lua filter callback error") && run.stderr.contains("no such thing"),
        "{}",
        run.stderr
    );
    // A preprocess script returning an unknown storage class stops the run, nothing written.
    let path = script(
        dir.path(),
        "function preprocess_callback(s, u) u.storage_class = 'COLD' return true, u end",
    );
    let run = srv.run(&["--preprocess-callback-lua-script", &path, &s(src.path()), &s3(&bucket)]);
    run.expect(1);
    assert!(run.stderr.contains("unknown StorageClass"), "{}", run.stderr);
    assert!(srv.keys(&bucket).await.is_empty());
}

#[tokio::test]
async fn the_sandbox_refuses_os_io_and_c_modules_unless_allowed() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec())]);
    let dir = tmpdir();
    let marker = dir.path().join("marker");
    let body = format!(
        "function filter(o) os.execute('touch {}') return true end",
        marker.display()
    );
    let path = script(dir.path(), &body);
    let run = srv.run(&["--filter-callback-lua-script", &path, &s(src.path()), &s3(&bucket)]);
    run.expect(1);
    assert!(run.stderr.contains("os"), "{}", run.stderr);
    assert!(!marker.exists(), "os.execute ran in safe mode");
    let io = script(
        dir.path(),
        "function filter(o) return io.open('/etc/hostname') ~= nil end",
    );
    srv.run(&["--filter-callback-lua-script", &io, &s(src.path()), &s3(&bucket)])
        .expect(1);
    let bytecode = script(
        dir.path(),
        "function filter(o) return load(string.dump(function() return true end))() end",
    );
    let run = srv.run(&["--filter-callback-lua-script", &bytecode, &s(src.path()), &s3(&bucket)]);
    run.expect(1);
    assert!(run.stderr.contains("binary"), "{}", run.stderr);
    let cmod = script(dir.path(), "function filter(o) return require('lfs') ~= nil end");
    let run = srv.run(&["--filter-callback-lua-script", &cmod, &s(src.path()), &s3(&bucket)]);
    run.expect(1);
    assert!(srv.keys(&bucket).await.is_empty());
    // --allow-lua-os-library: os and io work.
    let path = script(dir.path(), &body);
    srv.run(&[
        "--allow-lua-os-library",
        "--filter-callback-lua-script",
        &path,
        &s(src.path()),
        &s3(&bucket),
    ])
    .expect(0);
    assert!(marker.exists(), "os.execute allowed with --allow-lua-os-library");
    // --allow-lua-unsafe-vm: binary chunks load; the two flags conflict (exit 2).
    srv.run(&[
        "--allow-lua-unsafe-vm",
        "--filter-callback-lua-script",
        &bytecode,
        &s(src.path()),
        &s3(&bucket),
    ])
    .expect(0);
    srv.run(&[
        "--allow-lua-unsafe-vm",
        "--allow-lua-os-library",
        "--filter-callback-lua-script",
        &bytecode,
        &s(src.path()),
        &s3(&bucket),
    ])
    .expect(2);
}

#[tokio::test]
async fn memory_limit_and_timeout_stop_a_runaway_script() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec())]);
    let dir = tmpdir();
    let hog = script(
        dir.path(),
        "function filter(o) local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 64) .. i end return true end",
    );
    let run = srv.run(&[
        "--lua-vm-memory-limit",
        "8MiB",
        "--filter-callback-lua-script",
        &hog,
        &s(src.path()),
        &s3(&bucket),
    ]);
    run.expect(1);
    assert!(
        run.stderr.contains("memory limit of 8388608 bytes exceeded"),
        "{}",
        run.stderr
    );
    let spin = script(dir.path(), "function filter(o) while true do end end");
    let started = std::time::Instant::now();
    let run = srv.run(&[
        "--lua-callback-timeout-milliseconds",
        "300",
        "--filter-callback-lua-script",
        &spin,
        &s(src.path()),
        &s3(&bucket),
    ]);
    run.expect(1);
    assert!(
        run.stderr.contains("Lua callback timed out after 300ms"),
        "{}",
        run.stderr
    );
    eprintln!("the endless loop was stopped after {:?}", started.elapsed());
    assert!(srv.keys(&bucket).await.is_empty());
}

#[tokio::test]
async fn dry_run_lists_each_object_and_never_calls_preprocess() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "old", b"o").await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec()), ("b", b"b".to_vec())]);
    let dir = tmpdir();
    let failing = script(dir.path(), "function preprocess_callback(s, u) error('called') end");
    let run = srv.run(&[
        "--dry-run",
        "--delete",
        "--preprocess-callback-lua-script",
        &failing,
        &s(src.path()),
        &s3(&bucket),
    ]);
    run.expect(0);
    let copies = run
        .stderr
        .lines()
        .filter(|l| l.contains("[dry-run] sync completed."))
        .count();
    let deletes = run
        .stderr
        .lines()
        .filter(|l| l.contains("[dry-run] delete completed."))
        .count();
    assert_eq!((copies, deletes), (2, 1), "{}", run.stderr);
    assert!(!run.stderr.contains("called"), "{}", run.stderr);
    assert_eq!(srv.keys(&bucket).await, vec!["old"], "a dry run changes nothing");
    // -q keeps a dry run quiet.
    let run = srv.run(&["--dry-run", "-q", &s(src.path()), &s3(&bucket)]);
    assert!(!run.stderr.contains("[dry-run]"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_send_the_listed_etags_and_a_412_is_an_error() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "a", b"old").await;
    srv.put(&bucket, "gone", b"g").await;
    let listed = srv.etag(&bucket, "a").await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"new content".to_vec()), ("b", b"b".to_vec())]);
    // Newer than the object by more than the servers' one-second granularity.
    let later =
        filetime::FileTime::from_system_time(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
    filetime::set_file_mtime(src.path().join("a"), later).unwrap();
    let proxy = FaultProxy::start(&srv.endpoint, vec![]).await;
    let out = srv
        .command_via(&proxy.url(), &["--if-match", "--delete", &s(src.path()), &s3(&bucket)])
        .output()
        .unwrap();
    let run = Run::from(out);
    run.expect(0);
    let seen = proxy.conditions();
    assert!(
        seen.contains(&(Op::PutObject, format!("if-match: \"{listed}\""))),
        "the overwrite of a carries a's listed ETag: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(op, h)| *op == Op::DeleteObject && h.starts_with("if-match: \"")),
        "the deletion carries the listed ETag: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "b (new) carries no If-Match: {seen:?}");
    // --if-none-match: If-None-Match: * on every write.
    std::fs::write(src.path().join("b"), b"bb").unwrap();
    filetime::set_file_mtime(src.path().join("b"), later).unwrap();
    let proxy = FaultProxy::start(&srv.endpoint, vec![]).await;
    let out = srv
        .command_via(&proxy.url(), &["--if-none-match", &s(src.path()), &s3(&bucket)])
        .output()
        .unwrap();
    let _ = Run::from(out);
    assert!(
        proxy
            .conditions()
            .contains(&(Op::PutObject, "if-none-match: *".to_string())),
        "{:?}",
        proxy.conditions()
    );
    // A 412 (the object changed since it was listed) fails the object: exit 1, named in stderr.
    // (A server that implements If-None-Match refuses that overwrite: b may still be "b".)
    let before = srv.get(&bucket, "b").await;
    std::fs::write(src.path().join("b"), b"bbb").unwrap();
    filetime::set_file_mtime(src.path().join("b"), later).unwrap();
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::Status412, When::Always).ops(&[Op::PutObject])],
    )
    .await;
    let out = srv
        .command_via(&proxy.url(), &["--if-match", &s(src.path()), &s3(&bucket)])
        .output()
        .unwrap();
    let run = Run::from(out);
    run.expect(1);
    proxy.assert_injected();
    assert!(run.stderr.contains("PreconditionFailed"), "{}", run.stderr);
    assert_eq!(srv.get(&bucket, "b").await, before, "unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_source_if_match_sends_the_source_etag() {
    let srv = server().await;
    let (b1, b2) = (srv.bucket().await, srv.bucket().await);
    srv.put(&b1, "k", b"data").await;
    let etag = srv.etag(&b1, "k").await;
    let proxy = FaultProxy::start(&srv.endpoint, vec![]).await;
    let out = srv
        .command_via(
            &proxy.url(),
            &["--server-side-copy", "--copy-source-if-match", &s3(&b1), &s3(&b2)],
        )
        .output()
        .unwrap();
    Run::from(out).expect(0);
    assert!(
        proxy
            .conditions()
            .contains(&(Op::CopyObject, format!("x-amz-copy-source-if-match: \"{etag}\""))),
        "{:?}",
        proxy.conditions()
    );
    assert_eq!(srv.get(&b2, "k").await, b"data");
    // A single-request server-side copy carries the write preconditions too.
    srv.put(&b1, "k2", b"more").await;
    let proxy = FaultProxy::start(&srv.endpoint, vec![]).await;
    let out = srv
        .command_via(
            &proxy.url(),
            &["--server-side-copy", "--if-none-match", &s3(&b1), &s3(&b2)],
        )
        .output()
        .unwrap();
    Run::from(out).expect(0);
    assert_eq!(
        proxy.conditions(),
        vec![(Op::CopyObject, "if-none-match: *".to_string())],
        "only k2 is copied, with If-None-Match"
    );
}

#[tokio::test]
async fn delete_excluded_removes_what_the_exclude_regex_matches() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "keep.log", b"l").await;
    srv.put(&bucket, "other", b"o").await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec())]);
    let args = |extra: &[&'static str]| {
        let mut v: Vec<String> = vec!["--delete".into(), "--filter-exclude-regex".into(), r"\.log$".into()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(s(src.path()));
        v.push(s3(&bucket));
        v
    };
    let a = args(&[]);
    srv.run(&a.iter().map(String::as_str).collect::<Vec<_>>()).expect(0);
    assert_eq!(
        srv.keys(&bucket).await,
        vec!["a", "keep.log"],
        "excluded keys are protected"
    );
    let a = args(&["--delete-excluded"]);
    srv.run(&a.iter().map(String::as_str).collect::<Vec<_>>()).expect(0);
    assert_eq!(srv.keys(&bucket).await, vec!["a"]);
}

#[tokio::test]
async fn show_no_progress_hides_the_summary() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec())]);
    let run = srv.run(&["--show-no-progress", &s(src.path()), &s3(&bucket)]);
    run.expect(0);
    assert!(!run.stderr.contains("transferred"), "{}", run.stderr);
    assert_eq!(srv.keys(&bucket).await, vec!["a"]);
}

mod rust_callbacks {
    use super::*;
    use async_trait::async_trait;
    use s3sync::callback::{
        CallbackError, EventCallback, EventData, EventType, FilterCallback, PreprocessCallback, SourceObject,
        SourceObjectInfo, UploadMetadata,
    };
    use s3sync::{ClientConfig, Config, Location, Sync, SyncEvent};
    use std::sync::{Arc, Mutex};

    struct NoBin;
    #[async_trait]
    impl FilterCallback for NoBin {
        async fn filter(&self, o: &SourceObject) -> Result<bool, CallbackError> {
            Ok(!o.key.ends_with(".bin"))
        }
    }

    struct Stamp;
    #[async_trait]
    impl PreprocessCallback for Stamp {
        async fn preprocess(&self, s: &SourceObjectInfo, u: &mut UploadMetadata) -> Result<bool, CallbackError> {
            u.metadata
                .insert("stamp".into(), format!("{}-{}", s.key, s.content_length));
            Ok(true)
        }
    }

    #[derive(Default)]
    struct Log(Mutex<Vec<EventType>>);
    #[async_trait]
    impl EventCallback for Log {
        async fn on_event(&self, e: &EventData) -> Result<(), CallbackError> {
            self.0.lock().unwrap().push(e.event_type);
            Ok(())
        }
    }

    /// Rust callbacks registered through the library replace the Lua ones the CLI would build, and
    /// the event callback and the `events()` stream report the same run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rust_callbacks_filter_edit_and_observe_a_library_sync() {
        let srv = server().await;
        let bucket = srv.bucket().await;
        let src = tmpdir();
        write_tree(src.path(), &[("a.txt", b"aa".to_vec()), ("b.bin", b"b".to_vec())]);
        let client = ClientConfig {
            endpoint_url: Some(srv.endpoint.clone()),
            force_path_style: true,
            ..Default::default()
        };
        let log = Arc::new(Log::default());
        let cfg = Config::builder(
            Location::parse(&s(src.path())).unwrap(),
            Location::parse(&s3(&bucket)).unwrap(),
        )
        .target_client(client)
        .filter_callback(Arc::new(NoBin))
        .preprocess_callback(Arc::new(Stamp))
        .event_callback(log.clone(), EventType::SYNC_COMPLETE | EventType::SYNC_FILTERED)
        .build()
        .unwrap();
        let mut sync = Sync::new(cfg);
        let mut events = sync.events().unwrap();
        let stats = sync.run().await.unwrap();
        let mut streamed = Vec::new();
        while let Ok(e) = events.try_recv() {
            streamed.push(e);
        }
        assert_eq!(stats.transferred, 1);
        assert_eq!(srv.keys(&bucket).await, vec!["a.txt"]);
        let h = srv
            .client
            .head_object()
            .bucket(&bucket)
            .key("a.txt")
            .send()
            .await
            .unwrap();
        let md = h.metadata().cloned().unwrap_or_default();
        assert_eq!(md.get("stamp").map(String::as_str), Some("a.txt-2"));
        let mut seen: Vec<u64> = log.0.lock().unwrap().iter().map(|t| t.0).collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![EventType::SYNC_COMPLETE.0, EventType::SYNC_FILTERED.0],
            "only the chosen types"
        );
        let transferred = streamed
            .iter()
            .filter(|e| matches!(e, SyncEvent::Transferred { .. }))
            .count();
        let filtered = streamed
            .iter()
            .filter(|e| matches!(e, SyncEvent::Filtered { .. }))
            .count();
        assert_eq!((transferred, filtered), (1, 1), "{streamed:?}");
    }
}
