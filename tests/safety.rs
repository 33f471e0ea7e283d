//! Data safety at the edges: nothing outside the target is written or deleted (symbolic links
//! included), `--delete` runs only after complete listings, Ctrl-C and SIGTERM stop any run within
//! seconds, leftovers of other live runs are never cleaned up, and encrypted or oversized objects do
//! not fail. Every case runs against the real server (moto or Garage); cases no server produces (a
//! listing that ends early, an SSE-KMS ETag) are produced by the fault proxy rewriting responses.

use crate::common;

use common::fault_proxy::{Fault, FaultProxy, Op, Rule, When, KMS_ETAG};
use common::*;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most a run may take to stop after SIGINT or SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(5);

fn s3(bucket: &str) -> String {
    format!("s3://{bucket}/")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn delete_never_follows_a_link_in_the_target() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "a", b"a").await;
    let outside = tmpdir();
    write_tree(
        outside.path(),
        &[("keep", b"precious".to_vec()), ("sub/keep2", b"x".to_vec())],
    );
    let dst = tmpdir();
    symlink(outside.path(), dst.path().join("linked")).unwrap();
    let run = srv.run(&["--delete", &s3(&bucket), &s(dst.path())]);
    run.expect(0);
    assert_eq!(
        read_tree(outside.path()),
        vec![
            ("keep".into(), b"precious".to_vec()),
            ("sub/keep2".into(), b"x".to_vec())
        ],
        "nothing behind the link is deleted"
    );
    assert!(
        std::fs::symlink_metadata(dst.path().join("linked")).is_err(),
        "the extraneous link itself is removed"
    );
    assert_eq!(std::fs::read(dst.path().join("a")).unwrap(), b"a");
}

#[tokio::test]
async fn a_link_in_the_target_is_replaced_never_written_through() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "a", b"from s3").await;
    let outside = tmpdir();
    std::fs::write(outside.path().join("real"), b"outside!").unwrap();
    let dst = tmpdir();
    // Same size as the object and newer: a link must still not count as up to date.
    symlink(outside.path().join("real"), dst.path().join("a")).unwrap();
    srv.run(&[&s3(&bucket), &s(dst.path())]).expect(0);
    assert!(!std::fs::symlink_metadata(dst.path().join("a"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(dst.path().join("a")).unwrap(), b"from s3");
    assert_eq!(std::fs::read(outside.path().join("real")).unwrap(), b"outside!");
}

#[tokio::test]
async fn download_through_a_link_in_the_target_is_refused() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "linked/x", b"x").await;
    srv.put(&bucket, "ok", b"ok").await;
    let outside = tmpdir();
    let dst = tmpdir();
    symlink(outside.path(), dst.path().join("linked")).unwrap();
    let run = srv.run(&[&s3(&bucket), &s(dst.path())]);
    run.expect(1);
    assert!(
        run.stderr.contains("symbolic link") && run.stderr.contains("linked"),
        "the error names the link:\n{}",
        run.stderr
    );
    assert!(read_tree(outside.path()).is_empty(), "nothing written behind the link");
    assert_eq!(std::fs::read(dst.path().join("ok")).unwrap(), b"ok");
}

/// Runs the binary as an unprivileged user (nobody) when the tests run as root, so that file
/// permissions apply; the binary is copied once where that user can execute it.
fn run_unprivileged(srv: &Server, args: &[&str], home: &Path) -> Run {
    let mut cmd = srv.command(args);
    cmd.env("HOME", home).env("S3SYNC_STATE_DIR", home.join("state"));
    if is_root() {
        use std::os::unix::process::CommandExt;
        let mut c2 = std::process::Command::new(unprivileged_binary());
        c2.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                c2.env(k, v);
            }
        }
        c2.uid(65534).gid(65534);
        cmd = c2;
    }
    Run::from(output_retrying_busy(&mut cmd))
}

/// The test binary copied (once per test process) into a directory every user can read.
fn unprivileged_binary() -> &'static Path {
    static BIN: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &BIN.get_or_init(|| {
        let dir = open_dir();
        let bin = dir.path().join("s3sync");
        std::fs::copy(env!("CARGO_BIN_EXE_s3sync"), &bin).unwrap();
        (dir, bin)
    })
    .1
}

/// Runs `cmd`, retrying while exec fails with ETXTBSY: a child forked by a concurrent test can
/// hold the freshly written binary open for a moment between its fork and its exec.
fn output_retrying_busy(cmd: &mut std::process::Command) -> std::process::Output {
    let mut attempts = 0;
    loop {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other.expect("run s3sync"),
        }
    }
}

/// A directory every user may enter and write.
fn open_dir() -> tempfile::TempDir {
    let d = tmpdir();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

#[tokio::test]
async fn unreadable_source_entries_are_errors_and_disable_delete() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "sub/f", b"old").await;
    srv.put(&bucket, "extra", b"e").await;
    let home = open_dir();
    let src = open_dir();
    write_tree(src.path(), &[("a", b"a".to_vec()), ("sub/f", b"new".to_vec())]);
    std::fs::set_permissions(src.path().join("a"), std::fs::Permissions::from_mode(0o644)).unwrap();
    // Listable but not searchable: its entries cannot be stat'ed.
    std::fs::set_permissions(src.path().join("sub"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = run_unprivileged(&srv, &["--delete", &s(src.path()), &s3(&bucket)], home.path());
    std::fs::set_permissions(src.path().join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
    run.expect(1);
    assert!(run.errors() >= 1, "the unreadable entry is counted:\n{}", run.stderr);
    assert!(run.stderr.contains("deletion skipped"), "{}", run.stderr);
    assert_eq!(
        srv.keys(&bucket).await,
        vec!["a", "extra", "sub/f"],
        "nothing deleted after an incomplete walk"
    );
    assert_eq!(srv.get(&bucket, "sub/f").await, b"old");
}

#[tokio::test]
async fn symlink_loops_in_the_source_are_skipped_with_a_warning() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("a", b"a".to_vec()), ("d/b", b"b".to_vec())]);
    symlink(".", src.path().join("loop")).unwrap();
    symlink("..", src.path().join("d/up")).unwrap();
    let run = srv.run(&[&s(src.path()), &s3(&bucket)]);
    run.expect(3);
    assert!(run.stderr.contains("loop"), "{}", run.stderr);
    assert_eq!(srv.keys(&bucket).await, vec!["a", "d/b"]);
}

/// 30,000 small files and one large one.
fn big_tree(root: &Path) {
    for d in 0..30 {
        let dir = root.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            std::fs::write(dir.join(format!("f{f:04}")), format!("{d}/{f}")).unwrap();
        }
    }
    std::fs::write(root.join("large"), data(64 * MIB, 9)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_an_upload_of_30000_files_within_seconds() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    big_tree(src.path());
    let args = ["--multipart-threshold", "8MiB", &s(src.path()), &s3(&bucket)];
    let some_uploaded = || async { !srv.keys(&bucket).await.is_empty() };
    let Some((run, took)) = interrupt_when(srv.command(&args), "-INT", false, some_uploaded).await else {
        return;
    };
    assert!(took < STOP_WITHIN, "stopped {took:?} after SIGINT:\n{}", run.stderr);
    run.expect(130);
    assert!(
        run.stderr.contains("transferred"),
        "the summary is printed:\n{}",
        run.stderr
    );
    assert_eq!(srv.open_uploads(&bucket).await, 0, "no multipart upload left open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_download_within_seconds() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    let files: Vec<(String, Vec<u8>)> = (0..2000).map(|i| (format!("k{i:05}"), data(2000, i))).collect();
    write_tree(src.path(), &files);
    srv.run(&[&s(src.path()), &s3(&bucket)]).expect(0);
    let dst = tmpdir();
    let args = ["--worker-size", "2", &s3(&bucket), &s(dst.path())];
    let dst_path = dst.path().to_path_buf();
    let some_written = || {
        let p = dst_path.clone();
        async move { std::fs::read_dir(&p).map(|d| d.count() > 2).unwrap_or(false) }
    };
    let Some((run, took)) = interrupt_when(srv.command(&args), "-TERM", false, some_written).await else {
        return;
    };
    assert!(took < STOP_WITHIN, "stopped {took:?} after SIGTERM:\n{}", run.stderr);
    run.expect(143);
    let temps = read_tree(dst.path())
        .into_iter()
        .filter(|(n, _)| n.contains(".s3sync-tmp."))
        .count();
    assert_eq!(temps, 0, "no temporary file left");
    for (name, bytes) in read_tree(dst.path()) {
        assert_eq!(bytes, data(2000, name[1..].parse().unwrap()), "{name} is complete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_deletions_stops_and_does_not_exit_0() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    let files: Vec<(String, Vec<u8>)> = (0..3000).map(|i| (format!("k{i:05}"), vec![1])).collect();
    write_tree(src.path(), &files);
    srv.run(&[&s(src.path()), &s3(&bucket)]).expect(0);
    let empty = tmpdir();
    let args = ["--delete", "--worker-size", "1", &s(empty.path()), &s3(&bucket)];
    let some_deleted = || async { srv.keys(&bucket).await.len() < 3000 };
    let Some((run, took)) = interrupt_when(srv.command(&args), "-INT", true, some_deleted).await else {
        return;
    };
    assert!(took < STOP_WITHIN, "stopped {took:?} after SIGINT:\n{}", run.stderr);
    run.expect(130);
    assert!(!srv.keys(&bucket).await.is_empty(), "the deletions stopped");
}

#[tokio::test]
async fn long_multibyte_names_download() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    // 80 CJK characters: 240 bytes, a legal file name that leaves little room for a temporary name.
    let name: String = "語".repeat(80);
    srv.put(&bucket, &format!("d/{name}"), b"cjk").await;
    let dst = tmpdir();
    srv.run(&[&s3(&bucket), &s(dst.path())]).expect(0);
    assert_eq!(std::fs::read(dst.path().join("d").join(&name)).unwrap(), b"cjk");
}

#[tokio::test]
async fn emptied_directories_are_removed_by_delete() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "keep/a", b"a").await;
    let dst = tmpdir();
    write_tree(
        dst.path(),
        &[
            ("keep/a", b"a".to_vec()),
            ("gone/deep/x", b"x".to_vec()),
            ("keep/y", b"y".to_vec()),
        ],
    );
    srv.run(&["--delete", &s3(&bucket), &s(dst.path())]).expect(0);
    assert!(!dst.path().join("gone").exists(), "emptied directories are removed");
    assert_eq!(read_tree(dst.path()), vec![("keep/a".into(), b"a".to_vec())]);
}

/// Runs the binary against `endpoint` without blocking the runtime a proxy runs on.
async fn run_through(proxy: &FaultProxy, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3sync"));
    cmd.args([
        "--source-endpoint-url",
        &proxy.url(),
        "--target-endpoint-url",
        &proxy.url(),
        "--source-force-path-style",
        "--target-force-path-style",
        "--force-retry-interval-milliseconds",
        "50",
    ]);
    cmd.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the run ends within 120 s")
        .expect("run s3sync");
    let run = Run::from(out);
    eprintln!("exit {}; stderr:\n{}\n{}", run.code, run.stderr, proxy.summary());
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_ends_without_a_token_is_an_error_and_deletes_nothing() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let files: Vec<(String, Vec<u8>)> = (0..10).map(|i| (format!("k{i:02}"), vec![i as u8])).collect();
    let dst = tmpdir();
    write_tree(dst.path(), &files);
    let src = tmpdir();
    write_tree(src.path(), &files);
    srv.run(&[&s(src.path()), &s3(&bucket)]).expect(0);
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::DropContinuationToken, When::FirstN(1)).ops(&[Op::ListObjectsV2])],
    )
    .await;
    let run = run_through(&proxy, &["--delete", "--max-keys", "4", &s3(&bucket), &s(dst.path())]).await;
    proxy.assert_injected();
    run.expect(1);
    assert!(run.stderr.contains("deletion skipped"), "{}", run.stderr);
    assert_eq!(read_tree(dst.path()).len(), 10, "no local file deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_etags_are_not_taken_for_md5() {
    let srv = server().await;
    if srv.is_garage() {
        eprintln!("the proxy drops a signed If-Match header: moto (which does not check signatures) covers this test");
        return;
    }
    let bucket = srv.bucket().await;
    // Part ETags stay real: CompleteMultipartUpload is checked against them by the server.
    let ops = [
        Op::PutObject,
        Op::CompleteMultipartUpload,
        Op::GetObject,
        Op::HeadObject,
        Op::ListObjectsV2,
    ];
    let proxy = FaultProxy::start(&srv.endpoint, vec![Rule::new(Fault::KmsEtag, When::Always).ops(&ops)]).await;
    let src = tmpdir();
    write_tree(src.path(), &[("small", data(1000, 1)), ("big", data(12 * MIB, 2))]);
    let mp = ["--multipart-threshold", "5MiB", "--multipart-chunksize", "5MiB"];
    let mut args: Vec<&str> = mp.to_vec();
    let (from, to) = (s(src.path()), s3(&bucket));
    args.extend([from.as_str(), to.as_str()]);
    let up = run_through(&proxy, &args).await;
    up.expect(0);
    assert_eq!(up.transferred(), 2);
    let dst = tmpdir();
    let (from, to) = (s3(&bucket), s(dst.path()));
    let down = run_through(&proxy, &[from.as_str(), to.as_str()]).await;
    proxy.assert_injected();
    down.expect(0);
    assert_eq!(read_tree(dst.path()), read_tree(src.path()));
    // S3 to S3: the small object's metadata and bytes come from one GET whose response says SSE-KMS,
    // so its ETag is not compared with the MD5 of the bytes either.
    let copy = srv.bucket().await;
    let mut args: Vec<&str> = mp.to_vec();
    let (from, to) = (s3(&bucket), s3(&copy));
    args.extend([from.as_str(), to.as_str()]);
    let cp = run_through(&proxy, &args).await;
    cp.expect(0);
    assert_eq!(cp.transferred(), 2, "{}", cp.stderr);
    assert_eq!(srv.get(&copy, "small").await, data(1000, 1));
    assert_eq!(srv.get(&copy, "big").await, data(12 * MIB, 2));
    assert!(KMS_ETAG.len() == 32);
}

/// The owner token of a run on another host (or in another container).
fn foreign_owner() -> String {
    let me = s3sync::owner::Owner::current().token();
    format!("ffffffff{}", &me[8..])
}

/// The owner token of a run of this host that has ended.
fn dead_owner() -> String {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let me = s3sync::owner::Owner::current().token();
    let ids = me.split('-').next().unwrap();
    format!("{ids}-{pid}-1")
}

#[tokio::test]
async fn temp_files_of_live_or_foreign_runs_are_kept() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "a", b"a").await;
    let dst = tmpdir();
    let foreign = format!(".s3sync-tmp.{}.0000000000000001.a", foreign_owner());
    let legacy = ".s3sync-tmp.999999.0000000000000002.a".to_string();
    let dead = format!(".s3sync-tmp.{}.0000000000000003.a", dead_owner());
    for n in [&foreign, &legacy, &dead] {
        std::fs::write(dst.path().join(n), b"partial").unwrap();
    }
    srv.run(&[&s3(&bucket), &s(dst.path())]).expect(0);
    assert!(
        dst.path().join(&foreign).exists(),
        "a run on another host may still write it"
    );
    assert!(
        dst.path().join(&legacy).exists(),
        "an owner that cannot be checked is kept"
    );
    assert!(
        !dst.path().join(&dead).exists(),
        "the leftover of a dead run is removed"
    );
}

#[tokio::test]
async fn multipart_uploads_of_live_runs_are_not_swept() {
    use s3sync::{Journal, UploadRecord};
    let srv = server().await;
    let bucket = srv.bucket().await;
    let state = tmpdir();
    let journal = Journal::open(state.path().to_path_buf()).unwrap();
    let mut ids = Vec::new();
    for (key, owner) in [("live", foreign_owner()), ("dead", dead_owner())] {
        let up = srv
            .client
            .create_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap().to_string();
        let rec = UploadRecord {
            upload_id: id.clone(),
            size: 10,
            source_id: "x".into(),
            part_size: 5,
            bucket: bucket.clone(),
            key: key.into(),
            owner,
        };
        Journal::save(&journal.path_for(&bucket, key), &rec).unwrap();
        ids.push(id);
    }
    let src = tmpdir();
    write_tree(src.path(), &[("other", b"o".to_vec())]);
    let mut cmd = srv.command(&[&s(src.path()), &s3(&bucket)]);
    cmd.env("S3SYNC_STATE_DIR", state.path());
    Run::from(cmd.output().unwrap()).expect(0);
    let open: Vec<String> = srv
        .client
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap()
        .uploads()
        .iter()
        .filter_map(|u| u.upload_id().map(str::to_string))
        .collect();
    assert_eq!(open, vec![ids[0].clone()], "only the dead run's upload is aborted");
}

#[tokio::test]
async fn source_parts_larger_than_the_pool_are_copied() {
    let srv = server().await;
    let b1 = srv.bucket().await;
    let b2 = srv.bucket().await;
    let body = data(13 * MIB, 5);
    put_multipart(&srv, &b1, "big", &body, 6 * MIB).await;
    let run = srv.run(&[
        "--multipart-threshold",
        "5MiB",
        "--multipart-chunksize",
        "5MiB",
        "--io-pool-size",
        "5MiB",
        &s3(&b1),
        &s3(&b2),
    ]);
    assert!(run.code == 0 || run.code == 3, "exit {}:\n{}", run.code, run.stderr);
    assert_eq!(srv.get(&b2, "big").await, body);
}

#[tokio::test]
async fn sdk_tracing_does_not_show_the_sse_c_key() {
    use base64::Engine;
    use md5::Digest;
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    write_tree(src.path(), &[("f", b"secret bytes".to_vec())]);
    let raw = [7u8; 32];
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.encode(raw);
    let key_md5 = b64.encode(md5::Md5::digest(raw));
    let run = srv.run(&[
        "--aws-sdk-tracing",
        "-vvv",
        "--target-sse-c",
        "AES256",
        "--target-sse-c-key",
        &key,
        "--target-sse-c-key-md5",
        &key_md5,
        &s(src.path()),
        &s3(&bucket),
    ]);
    run.expect(0);
    assert!(run.stderr.contains("PutObject"), "the SDK's tracing is on");
    assert!(!run.stderr.contains(&key), "the SSE-C key is shown in clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_slow_listing_stops_within_seconds() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let src = tmpdir();
    let files: Vec<(String, Vec<u8>)> = (0..40).map(|i| (format!("k{i:02}"), vec![i as u8])).collect();
    write_tree(src.path(), &files);
    srv.run(&[&s(src.path()), &s3(&bucket)]).expect(0);
    // Every listing page takes 1.5 s: the listing alone would take 12 s.
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::Latency(1500), When::Always).ops(&[Op::ListObjectsV2])],
    )
    .await;
    let dst = tmpdir();
    let args = ["--max-keys", "5", "--delete", &s3(&bucket), &s(dst.path())];
    let t0 = std::time::Instant::now();
    let listing_underway = || async move { t0.elapsed() > Duration::from_millis(2500) };
    let cmd = srv.command_via(&proxy.url(), &args);
    let Some((run, took)) = interrupt_when(cmd, "-INT", false, listing_underway).await else {
        panic!("the listing ended before it could be interrupted");
    };
    proxy.assert_injected();
    assert!(took < STOP_WITHIN, "stopped {took:?} after SIGINT:\n{}", run.stderr);
    run.expect(130);
}

/// A server that does not sort its listings (here: each page reversed, several pages): the run lists
/// again, sorted on disk, and gives the same result as an ordered listing, `--delete` included, with
/// nothing transferred or counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unordered_source_listing_is_sorted_on_disk_and_delete_still_works() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let files: Vec<(String, Vec<u8>)> = (0..10).map(|i| (format!("k{i:02}"), vec![i as u8])).collect();
    let src = tmpdir();
    write_tree(src.path(), &files);
    srv.run(&[&s(src.path()), &s3(&bucket)]).expect(0);
    let dst = tmpdir();
    write_tree(
        dst.path(),
        &[("zz-extra", b"not in the source".to_vec()), ("k03", b"stale".to_vec())],
    );
    // Older than the object: compared and replaced.
    filetime::set_file_mtime(dst.path().join("k03"), filetime::FileTime::from_unix_time(1, 0)).unwrap();
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::ReverseListing, When::Always).ops(&[Op::ListObjectsV2])],
    )
    .await;
    let args = ["--delete", "--max-keys", "4", &s3(&bucket), &s(dst.path())];
    let run = run_through(&proxy, &args).await;
    proxy.assert_injected();
    run.expect(0);
    assert!(run.stderr.contains("not in key order"), "{}", run.stderr);
    assert_eq!(
        read_tree(dst.path()),
        files,
        "every object synced, the extra file deleted"
    );
    assert_eq!((run.transferred(), run.deleted()), (10, 1), "{}", run.stderr);
    let again = run_through(&proxy, &args).await;
    again.expect(0);
    assert_eq!(
        (again.transferred(), again.skipped(), again.deleted()),
        (0, 10, 0),
        "{}",
        again.stderr
    );
}

/// The same for an unordered target listing: up-to-date objects are not copied again, and the
/// target's extra objects are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unordered_target_listing_is_sorted_on_disk_and_delete_still_works() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    let files: Vec<(String, Vec<u8>)> = (0..9).map(|i| (format!("d{}/k{i}", i % 3), vec![i as u8])).collect();
    let src = tmpdir();
    write_tree(src.path(), &files);
    srv.run(&[&s(src.path()), &s3(&bucket)]).expect(0);
    srv.put(&bucket, "d1/extra", b"not in the source").await;
    srv.put(&bucket, "a-extra", b"not in the source").await;
    std::fs::write(src.path().join("d2/new"), b"new").unwrap();
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::ReverseListing, When::Always).ops(&[Op::ListObjectsV2])],
    )
    .await;
    let run = run_through(&proxy, &["--delete", "--max-keys", "3", &s(src.path()), &s3(&bucket)]).await;
    proxy.assert_injected();
    run.expect(0);
    assert!(
        run.stderr.contains("target listing is not in key order"),
        "{}",
        run.stderr
    );
    assert_eq!(
        (run.transferred(), run.skipped(), run.deleted()),
        (1, 9, 2),
        "{}",
        run.stderr
    );
    let mut want: Vec<String> = files.iter().map(|(k, _)| k.clone()).collect();
    want.push("d2/new".into());
    want.sort();
    assert_eq!(srv.keys(&bucket).await, want);
}

#[tokio::test]
async fn a_key_that_changed_from_directory_to_file_converges_with_delete() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    srv.put(&bucket, "x", b"now a file").await;
    let dst = tmpdir();
    write_tree(dst.path(), &[("x/old", b"was in a directory".to_vec())]);
    let first = srv.run(&["--delete", &s3(&bucket), &s(dst.path())]);
    first.expect(1);
    assert!(first.stderr.contains("directory"), "{}", first.stderr);
    assert_eq!(first.deleted(), 1);
    srv.run(&["--delete", &s3(&bucket), &s(dst.path())]).expect(0);
    assert_eq!(read_tree(dst.path()), vec![("x".into(), b"now a file".to_vec())]);
    // Without --delete a directory that holds files is never removed to make room.
    let other = tmpdir();
    write_tree(other.path(), &[("x/keep", b"k".to_vec())]);
    srv.run(&[&s3(&bucket), &s(other.path())]).expect(1);
    assert_eq!(read_tree(other.path()), vec![("x/keep".into(), b"k".to_vec())]);
    // An empty directory makes room for the file.
    let empty = tmpdir();
    std::fs::create_dir(empty.path().join("x")).unwrap();
    srv.run(&[&s3(&bucket), &s(empty.path())]).expect(0);
    assert_eq!(read_tree(empty.path()), vec![("x".into(), b"now a file".to_vec())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_during_its_download_fails_instead_of_mixing_versions() {
    let srv = server().await;
    let bucket = srv.bucket().await;
    put_multipart(&srv, &bucket, "obj", &data(15 * MIB, 1), 5 * MIB).await;
    // Every GET is held 1 s by the proxy after the server answered: the object is replaced while the
    // first range is held, so the later ranges would read the new object.
    let proxy = FaultProxy::start(
        &srv.endpoint,
        vec![Rule::new(Fault::Latency(1000), When::Always).ops(&[Op::GetObject])],
    )
    .await;
    let dst = tmpdir();
    let args = [
        "--max-parallel-uploads",
        "1",
        "--force-retry-count",
        "1",
        &s3(&bucket),
        &s(dst.path()),
    ];
    let child = tokio::process::Command::from(srv.command_via(&proxy.url(), &args))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while proxy.requests_of(Op::GetObject) == 0 {
        assert!(std::time::Instant::now() < deadline, "no GetObject reached the proxy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    srv.put(&bucket, "obj", &data(15 * MIB, 2)).await;
    let run = Run::from(child.wait_with_output().await.unwrap());
    run.expect(1);
    assert!(run.stderr.contains("replaced during the transfer"), "{}", run.stderr);
    assert!(!dst.path().join("obj").exists(), "nothing under the final name");
}
