//! Shared helpers of the integration suite: the real S3 server the scripts started, buckets, trees of
//! files, running the binary, and assertions on what a user would see.
#![allow(dead_code)]

pub mod annotations;
pub mod fault_proxy;
pub mod tls_proxy;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const MIB: usize = 1024 * 1024;

/// The server under test, from the environment `scripts/start-server.sh` exports.
pub struct Server {
    pub name: String,
    pub endpoint: String,
    pub client: Client,
}

/// The server, or a panic that says how to get one: a test never passes without its server.
pub async fn server() -> Server {
    let name = std::env::var("S3SYNC_TEST_SERVER").unwrap_or_default();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        !name.is_empty() && !endpoint.is_empty(),
        "no S3 test server: S3SYNC_TEST_SERVER and AWS_ENDPOINT_URL are unset. Run scripts/test.sh, which installs and starts moto and garage."
    );
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&cfg).force_path_style(true).build();
    Server {
        name,
        endpoint,
        client: Client::from_conf(conf),
    }
}

impl Server {
    pub fn is_garage(&self) -> bool {
        self.name == "garage"
    }

    /// A new empty bucket with a unique name.
    pub async fn bucket(&self) -> String {
        let name = format!("t{:016x}", rand::random::<u64>());
        self.client
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("create bucket");
        name
    }

    pub async fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        put_with(&self.client, bucket, key, data).await;
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let r = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
        r.body.collect().await.unwrap().into_bytes().to_vec()
    }

    pub async fn etag(&self, bucket: &str, key: &str) -> String {
        let h = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("head {key}: {e:?}"));
        h.e_tag().unwrap_or_default().trim_matches('"').to_string()
    }

    /// All keys of a bucket, sorted.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let r = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap();
            keys.extend(r.contents().iter().filter_map(|o| o.key().map(str::to_string)));
            match r.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        keys.sort();
        keys
    }

    /// Multipart uploads still open in a bucket.
    pub async fn open_uploads(&self, bucket: &str) -> usize {
        match self.client.list_multipart_uploads().bucket(bucket).send().await {
            Ok(r) => r.uploads().len(),
            Err(_) => 0,
        }
    }

    /// Runs the binary with endpoint and path-style flags for both sides, and these arguments.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = self.command(args);
        let out = cmd.output().expect("run s3sync");
        Run::from(out)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_via(&self.endpoint, args)
    }

    /// As [`Server::command`], with both endpoints set to `endpoint` (e.g. a fault proxy's URL).
    pub fn command_via(&self, endpoint: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3sync"));
        cmd.args([
            "--source-endpoint-url",
            endpoint,
            "--target-endpoint-url",
            endpoint,
            "--source-force-path-style",
            "--target-force-path-style",
            "--force-retry-interval-milliseconds",
            "100",
        ]);
        cmd.args(args);
        cmd
    }
}

/// Runs the binary with both endpoints set to `proxy` (requests counted, faults injected).
pub async fn run_via(srv: &Server, proxy: &fault_proxy::FaultProxy, args: &[&str]) -> Run {
    let out = tokio::process::Command::from(srv.command_via(&proxy.url(), args))
        .output()
        .await
        .expect("run s3sync");
    Run::from(out)
}

/// PutObject through `client` (the server's, or one whose requests go through a proxy).
pub async fn put_with(client: &Client, bucket: &str, key: &str, data: &[u8]) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

/// Uploads `data` directly to the server as a multipart object with `part`-byte parts, so that its
/// ETag has the `-N` form and a download is made of several ranged GETs.
pub async fn put_multipart(srv: &Server, bucket: &str, key: &str, data: &[u8], part: usize) {
    let c = &srv.client;
    let up = c
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("create multipart upload");
    let id = up.upload_id().expect("upload id").to_string();
    let mut done = Vec::new();
    for (i, chunk) in data.chunks(part).enumerate() {
        let n = i as i32 + 1;
        let r = c
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .body(aws_sdk_s3::primitives::ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload part {n}: {e:?}"));
        done.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .set_e_tag(r.e_tag().map(str::to_string))
                .build(),
        );
    }
    c.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .expect("complete multipart upload");
    assert_eq!(
        srv.etag(bucket, key).await,
        multipart_etag(data, part),
        "setup: multipart ETag of {key}"
    );
}

/// What a run of the binary showed.
pub struct Run {
    pub code: i32,
    pub stderr: String,
    pub stdout: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        }
    }
}

impl Run {
    fn count(&self, what: &str) -> u64 {
        let pat = format!("{what} ");
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| l.contains("transferred") && l.contains("duration"))
            .unwrap_or_else(|| panic!("no summary line in:\n{}", self.stderr));
        let idx = line.find(&pat).unwrap_or_else(|| panic!("no '{what}' in {line}"));
        line[idx + pat.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
    pub fn transferred(&self) -> u64 {
        self.count("transferred")
    }
    pub fn skipped(&self) -> u64 {
        self.count("skipped")
    }
    pub fn deleted(&self) -> u64 {
        self.count("deleted")
    }
    pub fn errors(&self) -> u64 {
        self.count("error")
    }
    pub fn verified(&self) -> u64 {
        self.count("etag verified")
    }
    pub fn checksum_verified(&self) -> u64 {
        self.count("checksum verified")
    }
    /// Asserts the exit code, showing the output when it differs.
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code {} (want {code}); stderr:\n{}",
            self.code, self.stderr
        );
        self
    }
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Writes files (relative path, bytes) under `root`.
pub fn write_tree<K: AsRef<str>>(root: &Path, files: &[(K, Vec<u8>)]) {
    for (rel, bytes) in files {
        let p = root.join(rel.as_ref());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
}

/// Every file under `root` as (relative path, bytes), sorted.
pub fn read_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

pub fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(b))
}

/// The multipart ETag of `b` with `part` byte parts.
pub fn multipart_etag(b: &[u8], part: usize) -> String {
    use md5::Digest;
    let mut cat = Vec::new();
    let chunks: Vec<&[u8]> = b.chunks(part).collect();
    for c in &chunks {
        cat.extend_from_slice(&md5::Md5::digest(c));
    }
    format!("{}-{}", hex::encode(md5::Md5::digest(&cat)), chunks.len())
}

pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub fn path(p: &Path, rel: &str) -> PathBuf {
    p.join(rel)
}

/// Starts the binary, waits until `started` holds (or the run ends), sends `signal`, and returns
/// the run and how long it took to end after the signal.
pub async fn interrupt_when<F, Fut>(cmd: Command, signal: &str, twice: bool, started: F) -> Option<(Run, Duration)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut child = tokio::process::Command::from(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            eprintln!("the run ended before it could be interrupted");
            return None;
        }
        if started().await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run never reached the point to interrupt"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    let sent = Instant::now();
    std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    if twice {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = std::process::Command::new("kill").args([signal, &pid]).status();
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the run did not stop within 60 s of {signal}"))
        .unwrap();
    let took = sent.elapsed();
    eprintln!("the run ended {took:?} after {signal}");
    Some((Run::from(out), took))
}
