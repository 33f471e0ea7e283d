//! A fault-injecting HTTP/1.1 reverse proxy that sits between the binary and the real S3 server.
//!
//! The proxy listens on `127.0.0.1:0` and runs as a tokio task of the test's runtime (use a
//! multi-threaded test runtime and run the binary with `tokio::process`, so that the proxy keeps
//! serving while the test waits). Requests are forwarded unchanged — method, URI, every header
//! *including `Host`* (SigV4 signs it: the client signed the proxy's `host:port`, and the upstream
//! server verifies the signature against the `Host` it receives) — and bodies stream both ways.
//!
//! Faults are described by [`Rule`]s: a [`Fault`] kind, a [`When`] schedule (probability drawn from a
//! seeded RNG, first N matching requests, the Nth ones, first N attempts per request target or per
//! object, always) and filters on the HTTP method and the S3 operation ([`Op`], recognised from
//! method, path and query string). The first rule that fires decides what happens to a request.
//! Every injected fault is logged on stderr (seed, request line, operation, kind) and counted; a test
//! asserts [`FaultProxy::injected`] `> 0` so a proxy that injected nothing fails the test.
//!
//! The seed comes from `S3SYNC_FAULT_SEED` (decimal or `0x` hex) when set, else it is random; it is
//! printed when the proxy starts. Requests of a run arrive concurrently, so a seed reproduces the
//! random draws, not necessarily which request got which draw.
#![allow(dead_code)]

use super::annotations::{is_annotation_request, AnnotationStore};
use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// How long a truncated response waits, after its first half, before the connection is closed (so
/// that the half really leaves the proxy's buffers).
const TRUNCATE_FLUSH: Duration = Duration::from_millis(100);

/// What the proxy does to a request a rule picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer `503 SlowDown` (S3 XML error body) without forwarding.
    Status503,
    /// Answer `500 InternalError` (S3 XML error body) without forwarding.
    Status500,
    /// Answer `412 PreconditionFailed` (S3 XML error body) without forwarding, as a server does when
    /// a conditional write's precondition does not hold.
    Status412,
    /// Close the connection abruptly (RST) without any response; nothing is forwarded.
    Reset,
    /// Forward, but send only the first half of the response body, then close the connection. The
    /// upstream `Content-Length` is kept. Applied to non-empty 2xx responses only.
    Truncate,
    /// Forward, but flip (xor 0xff) one byte of the response body at a seeded random position; the
    /// length is kept. Applied to non-empty 2xx responses only.
    FlipByte,
    /// Forward, and hold the response for this many milliseconds.
    Latency(u64),
    /// Forward a listing, but answer as a non-conforming server may: `IsTruncated` true and no
    /// continuation token (or next key marker), as if the listing ended early.
    DropContinuationToken,
    /// Forward, but make the object look SSE-KMS encrypted: the response says
    /// `x-amz-server-side-encryption: aws:kms` and every ETag (headers and listing bodies) becomes
    /// [`KMS_ETAG`], which is 32 hex digits but not the MD5 of the bytes. A request's `If-Match` is
    /// dropped (it names that ETag; use on servers that do not check signatures, i.e. moto).
    KmsEtag,
    /// Forward a listing with its entries in reverse key order (a server that does not sort).
    ReverseListing,
    /// Forward, but without the `x-amz-tagging-count` header (a server that never sends it).
    NoTagCount,
}

/// The ETag [`Fault::KmsEtag`] gives every object.
pub const KMS_ETAG: &str = "0123456789abcdef0123456789abcdef";

impl Fault {
    /// The name of the kind, without parameters (`Latency(200)` is `"Latency"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Status503 => "Status503",
            Fault::Status500 => "Status500",
            Fault::Status412 => "Status412",
            Fault::Reset => "Reset",
            Fault::Truncate => "Truncate",
            Fault::FlipByte => "FlipByte",
            Fault::Latency(_) => "Latency",
            Fault::DropContinuationToken => "DropContinuationToken",
            Fault::KmsEtag => "KmsEtag",
            Fault::ReverseListing => "ReverseListing",
            Fault::NoTagCount => "NoTagCount",
        }
    }

    fn acts_on_body(&self) -> bool {
        matches!(self, Fault::Truncate | Fault::FlipByte)
    }
}

/// The S3 operation of a (path-style) request, recognised from method, path and query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `GET /`.
    ListBuckets,
    /// `HEAD /bucket`.
    HeadBucket,
    /// `PUT /bucket`.
    CreateBucket,
    /// `DELETE /bucket`.
    DeleteBucket,
    /// `GET /bucket?list-type=2`.
    ListObjectsV2,
    /// `GET /bucket?uploads`.
    ListMultipartUploads,
    /// `GET /bucket` with any other query (ListObjects v1, GetBucketLocation, ...).
    OtherBucketGet,
    /// `HEAD /bucket/key` (also with `partNumber=`).
    HeadObject,
    /// `GET /bucket/key` (also ranged, or with `partNumber=`).
    GetObject,
    /// `GET /bucket/key?uploadId=`.
    ListParts,
    /// `GET /bucket/key?tagging`.
    GetObjectTagging,
    /// `PUT /bucket/key?tagging`.
    PutObjectTagging,
    /// `PUT /bucket/key`.
    PutObject,
    /// `PUT /bucket/key` with `x-amz-copy-source`.
    CopyObject,
    /// `PUT /bucket/key?partNumber=&uploadId=`.
    UploadPart,
    /// `PUT /bucket/key?partNumber=&uploadId=` with `x-amz-copy-source`.
    UploadPartCopy,
    /// `POST /bucket/key?uploads`.
    CreateMultipartUpload,
    /// `POST /bucket/key?uploadId=`.
    CompleteMultipartUpload,
    /// `DELETE /bucket/key?uploadId=`.
    AbortMultipartUpload,
    /// `DELETE /bucket/key`.
    DeleteObject,
    /// `POST /bucket?delete`.
    DeleteObjects,
    /// `GET /bucket/key?annotation` (answered by the proxy).
    ListObjectAnnotations,
    /// `GET /bucket/key?annotation&annotationName=` (answered by the proxy).
    GetObjectAnnotation,
    /// `PUT /bucket/key?annotation&annotationName=` (answered by the proxy).
    PutObjectAnnotation,
    /// `DELETE /bucket/key?annotation&annotationName=` (answered by the proxy).
    DeleteObjectAnnotation,
    /// Anything else.
    Other,
}

/// The S3 operation of a path-style request.
pub fn classify(method: &Method, uri: &Uri, headers: &HeaderMap) -> Op {
    let path = uri.path().trim_start_matches('/');
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (b, k),
        None => (path, ""),
    };
    let query = uri.query().unwrap_or("");
    let has = |name: &str| query.split('&').any(|kv| kv.split('=').next() == Some(name));
    let copy = headers.contains_key("x-amz-copy-source");
    if bucket.is_empty() {
        return if method == Method::GET {
            Op::ListBuckets
        } else {
            Op::Other
        };
    }
    if key.is_empty() {
        return match *method {
            Method::GET if has("list-type") => Op::ListObjectsV2,
            Method::GET if has("uploads") => Op::ListMultipartUploads,
            Method::GET => Op::OtherBucketGet,
            Method::HEAD => Op::HeadBucket,
            Method::PUT if query.is_empty() => Op::CreateBucket,
            Method::DELETE if query.is_empty() => Op::DeleteBucket,
            Method::POST if has("delete") => Op::DeleteObjects,
            _ => Op::Other,
        };
    }
    if has("annotation") {
        return match *method {
            Method::GET if has("annotationName") => Op::GetObjectAnnotation,
            Method::GET => Op::ListObjectAnnotations,
            Method::PUT => Op::PutObjectAnnotation,
            Method::DELETE => Op::DeleteObjectAnnotation,
            _ => Op::Other,
        };
    }
    match *method {
        Method::GET if has("uploadId") => Op::ListParts,
        Method::GET if has("tagging") => Op::GetObjectTagging,
        Method::PUT if has("tagging") => Op::PutObjectTagging,
        Method::GET => Op::GetObject,
        Method::HEAD => Op::HeadObject,
        Method::PUT if has("partNumber") && has("uploadId") => {
            if copy {
                Op::UploadPartCopy
            } else {
                Op::UploadPart
            }
        }
        Method::PUT if copy => Op::CopyObject,
        Method::PUT => Op::PutObject,
        Method::POST if has("uploads") => Op::CreateMultipartUpload,
        Method::POST if has("uploadId") => Op::CompleteMultipartUpload,
        Method::DELETE if has("uploadId") => Op::AbortMultipartUpload,
        Method::DELETE => Op::DeleteObject,
        _ => Op::Other,
    }
}

/// When a rule fires, among the requests that pass its filters. Counts are 1-based and include the
/// requests on which another (earlier) rule fired.
#[derive(Debug, Clone)]
pub enum When {
    /// On every matching request.
    Always,
    /// With this probability (0..=1), drawn from the seeded RNG.
    Probability(f64),
    /// On the first N matching requests.
    FirstN(usize),
    /// On the matching requests with these 1-based indices.
    At(Vec<usize>),
    /// On the first N attempts of each request target: same method, path, query and `Range` header
    /// (e.g. one UploadPart of one upload id, or one ranged GET).
    FirstNPerTarget(usize),
    /// On the first N matching requests of each object: same method and path, any query or range.
    FirstNPerObject(usize),
}

/// One fault with its schedule and filters.
#[derive(Debug, Clone)]
pub struct Rule {
    /// What to do.
    pub fault: Fault,
    /// When to do it.
    pub when: When,
    /// Only these S3 operations (empty: any).
    pub ops: Vec<Op>,
    /// Only these HTTP methods (empty: any).
    pub methods: Vec<Method>,
}

impl Rule {
    /// A rule for every request, until narrowed by [`Rule::ops`] or [`Rule::methods`].
    pub fn new(fault: Fault, when: When) -> Self {
        Rule {
            fault,
            when,
            ops: Vec::new(),
            methods: Vec::new(),
        }
    }

    /// Restricts the rule to these S3 operations.
    pub fn ops(mut self, ops: &[Op]) -> Self {
        self.ops = ops.to_vec();
        self
    }

    /// Restricts the rule to these HTTP methods.
    pub fn methods(mut self, methods: &[Method]) -> Self {
        self.methods = methods.to_vec();
        self
    }

    fn matches(&self, method: &Method, op: Op) -> bool {
        (self.ops.is_empty() || self.ops.contains(&op)) && (self.methods.is_empty() || self.methods.contains(method))
    }
}

/// One injected fault, as logged.
#[derive(Debug, Clone)]
pub struct Injection {
    /// The proxy's sequence number of the request (1-based, in arrival order).
    pub seq: usize,
    /// `METHOD /path?query`.
    pub request: String,
    /// The recognised operation.
    pub op: Op,
    /// The fault injected.
    pub fault: Fault,
    /// What exactly was done (e.g. which byte was flipped).
    pub detail: String,
}

/// SplitMix64: small, seedable, good enough to draw fault decisions.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Mutable state of the proxy, behind one lock.
struct State {
    rng: Rng,
    seq: usize,
    /// Per rule: matching requests seen.
    matched: Vec<usize>,
    /// Per rule: matching requests seen per target or object identity.
    per_key: Vec<HashMap<String, usize>>,
    /// Requests seen per operation.
    by_op: HashMap<Op, usize>,
    log: Vec<Injection>,
    /// Conditional and request-payer headers seen (`If-Match`, `If-None-Match`,
    /// `x-amz-copy-source-if-match`, `x-amz-request-payer`), in order.
    conditions: Vec<(Op, String)>,
}

/// What the request handler was told to do with one request.
struct Decision {
    seq: usize,
    fault: Option<Fault>,
}

struct Shared {
    seed: u64,
    upstream: String,
    rules: Vec<Rule>,
    state: Mutex<State>,
    client: Client<HttpConnector, Incoming>,
    /// Object annotations, answered here (see `annotations.rs`).
    annotations: AnnotationStore,
    /// Ranged GETs now in flight (request received, response body not yet done) and the most seen.
    ranged_gets: Arc<Mutex<(usize, usize)>>,
}

/// Counts one ranged GET in flight until dropped (with the response body, or with the request when
/// it fails).
struct RangedGet(Arc<Mutex<(usize, usize)>>);

impl RangedGet {
    fn start(gauge: &Arc<Mutex<(usize, usize)>>) -> RangedGet {
        let mut g = gauge.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        g.1 = g.1.max(g.0);
        RangedGet(gauge.clone())
    }
}

impl Drop for RangedGet {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0 -= 1;
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the request and picks the fault of the first rule that fires, if any.
    fn decide(&self, method: &Method, uri: &Uri, headers: &HeaderMap, op: Op) -> Decision {
        let mut st = self.state();
        st.seq += 1;
        let seq = st.seq;
        *st.by_op.entry(op).or_default() += 1;
        for name in [
            "if-match",
            "if-none-match",
            "x-amz-copy-source-if-match",
            "x-amz-request-payer",
        ] {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                st.conditions.push((op, format!("{name}: {v}")));
            }
        }
        let range = headers.get(RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let target = format!(
            "{method} {} {range}",
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        );
        let object = format!("{method} {}", uri.path());
        let mut chosen = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.matches(method, op) {
                continue;
            }
            st.matched[i] += 1;
            let n = st.matched[i];
            let fires = match &rule.when {
                When::Always => true,
                When::Probability(p) => st.rng.next_f64() < *p,
                When::FirstN(k) => n <= *k,
                When::At(list) => list.contains(&n),
                When::FirstNPerTarget(k) | When::FirstNPerObject(k) => {
                    let id = if matches!(rule.when, When::FirstNPerTarget(_)) {
                        &target
                    } else {
                        &object
                    };
                    let c = st.per_key[i].entry(id.clone()).or_default();
                    *c += 1;
                    *c <= *k
                }
            };
            if fires && chosen.is_none() {
                chosen = Some(rule.fault);
            }
        }
        Decision { seq, fault: chosen }
    }

    /// Logs and counts one injected fault.
    fn record(&self, seq: usize, request: &str, op: Op, fault: Fault, detail: String) {
        eprintln!(
            "[fault_proxy seed={:#x}] #{seq} {request} ({op:?}): injected {fault:?} {detail}",
            self.seed
        );
        self.state().log.push(Injection {
            seq,
            request: request.to_string(),
            op,
            fault,
            detail,
        });
    }

    fn draw(&self, below: u64) -> u64 {
        if below == 0 {
            0
        } else {
            self.state().rng.next_u64() % below
        }
    }
}

/// A running proxy; stops (with all its connections) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (e.g. `http://127.0.0.1:3900`) with these rules, on the
    /// current tokio runtime.
    pub async fn start(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        let seed = match std::env::var("S3SYNC_FAULT_SEED") {
            Ok(s) if !s.trim().is_empty() => {
                let s = s.trim();
                let parsed = match s.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => s.parse(),
                };
                parsed.unwrap_or_else(|e| panic!("S3SYNC_FAULT_SEED={s}: {e}"))
            }
            _ => rand::random::<u64>(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let n = rules.len();
        let shared = Arc::new(Shared {
            seed,
            upstream: upstream.trim_end_matches('/').to_string(),
            rules,
            state: Mutex::new(State {
                rng: Rng(seed),
                seq: 0,
                matched: vec![0; n],
                per_key: vec![HashMap::new(); n],
                by_op: HashMap::new(),
                log: Vec::new(),
                conditions: Vec::new(),
            }),
            client: Client::builder(TokioExecutor::new()).build_http(),
            annotations: AnnotationStore::default(),
            ranged_gets: Default::default(),
        });
        eprintln!(
            "[fault_proxy seed={seed:#x}] listening on http://{addr} in front of {upstream} (replay the draws with S3SYNC_FAULT_SEED={seed:#x}); rules: {:?}",
            shared.rules
        );
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        FaultProxy { addr, shared, task }
    }

    /// The URL to give the binary as endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The seed of the RNG.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> usize {
        self.shared.state().log.len()
    }

    /// How many faults of the kind of `fault` were injected (parameters ignored: any `Latency`).
    pub fn injected_of(&self, fault: Fault) -> usize {
        self.shared
            .state()
            .log
            .iter()
            .filter(|i| i.fault.kind() == fault.kind())
            .count()
    }

    /// Every injected fault, in order.
    pub fn injections(&self) -> Vec<Injection> {
        self.shared.state().log.clone()
    }

    /// The conditional headers the requests carried, with their operation, in order.
    pub fn conditions(&self) -> Vec<(Op, String)> {
        self.shared.state().conditions.clone()
    }

    /// How many requests reached the proxy.
    pub fn requests(&self) -> usize {
        self.shared.state().seq
    }

    /// How many requests of this operation reached the proxy.
    pub fn requests_of(&self, op: Op) -> usize {
        self.shared.state().by_op.get(&op).copied().unwrap_or(0)
    }

    /// The most GETs with a `Range` header that were in flight at once (from the request's arrival
    /// to the end of its response body).
    pub fn peak_ranged_gets(&self) -> usize {
        self.shared.ranged_gets.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// One line: seed, requests, and injected faults per kind.
    pub fn summary(&self) -> String {
        let st = self.shared.state();
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for i in &st.log {
            match kinds.iter_mut().find(|k| k.0 == i.fault.kind()) {
                Some(k) => k.1 += 1,
                None => kinds.push((i.fault.kind(), 1)),
            }
        }
        format!(
            "fault_proxy seed={:#x}: {} requests, {} faults injected {kinds:?}",
            self.shared.seed,
            st.seq,
            st.log.len()
        )
    }

    /// Panics (failing the test) when the proxy injected nothing: such a test proved nothing.
    pub fn assert_injected(&self) {
        assert!(
            self.injected() > 0,
            "the fault proxy injected no fault, so this test proved nothing ({})",
            self.summary()
        );
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping the set (when the task is aborted) aborts every connection.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("[fault_proxy] accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let reset = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(ConnIo {
            stream,
            reset: reset.clone(),
        });
        let shared = shared.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| handle(shared.clone(), reset.clone(), req));
            // Errors here are the injected resets and truncations, or clients going away.
            let _ = http1::Builder::new().serve_connection(io, svc).await;
        });
        while conns.try_join_next().is_some() {}
    }
}

/// Handles one request: decides, then answers, drops the connection, or forwards.
async fn handle(
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, BoxError> {
    let op = classify(req.method(), req.uri(), req.headers());
    let ranged = (req.method() == Method::GET && req.headers().contains_key(RANGE))
        .then(|| RangedGet::start(&shared.ranged_gets));
    let line = match req.headers().get(RANGE).and_then(|v| v.to_str().ok()) {
        Some(range) => format!("{} {} [Range: {range}]", req.method(), req.uri()),
        None => format!("{} {}", req.method(), req.uri()),
    };
    let Decision { seq, fault } = shared.decide(req.method(), req.uri(), req.headers(), op);
    match fault {
        Some(f @ (Fault::Status503 | Fault::Status500 | Fault::Status412)) => {
            // Read the request body first, so the client gets the response rather than a broken pipe.
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
            shared.record(seq, &line, op, f, String::new());
            return Ok(if f == Fault::Status503 {
                s3_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SlowDown",
                    "Please reduce your request rate.",
                )
            } else if f == Fault::Status412 {
                s3_error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold",
                )
            } else {
                s3_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                )
            });
        }
        Some(Fault::Reset) => {
            shared.record(seq, &line, op, Fault::Reset, String::new());
            reset.store(true, Ordering::SeqCst);
            return Err("fault_proxy: injected connection reset".into());
        }
        _ => {}
    }

    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if is_annotation_request(&path, &query) {
        return Ok(shared.annotations.serve(req).await);
    }
    let method = req.method().clone();
    let (mut parts, body) = req.into_parts();
    if fault == Some(Fault::KmsEtag) {
        parts.headers.remove(hyper::header::IF_MATCH);
    }
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = format!("{}{pq}", shared.upstream).parse()?;
    // The Host header (signed by the client) is forwarded as is: the client does not add its own.
    let upstream = match shared.client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("[fault_proxy] #{seq} {line}: upstream request failed: {e:?}");
            return Ok(s3_error(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                &format!("fault_proxy: upstream request failed: {e}"),
            ));
        }
    };
    shared
        .annotations
        .observe(&method, &path, &query, upstream.status(), upstream.headers());
    if let Some(Fault::Latency(ms)) = fault {
        shared.record(seq, &line, op, Fault::Latency(ms), format!("({ms} ms)"));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(f @ (Fault::DropContinuationToken | Fault::KmsEtag | Fault::ReverseListing)) = fault {
        return rewrite(&shared, seq, &line, op, f, upstream).await;
    }
    let (mut parts, body) = upstream.into_parts();
    if fault == Some(Fault::NoTagCount) && parts.headers.remove("x-amz-tagging-count").is_some() {
        shared.record(seq, &line, op, Fault::NoTagCount, String::new());
    }
    let len: Option<u64> = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut mode = Mode::Pass;
    if let Some(f) = fault.filter(Fault::acts_on_body) {
        let has_body = parts.status.is_success() && len != Some(0) && !(len.is_none() && body.is_end_stream());
        if !has_body {
            eprintln!(
                "[fault_proxy seed={:#x}] #{seq} {line} ({op:?}): {f:?} not applied: the response ({}) has no body",
                shared.seed, parts.status
            );
        } else if f == Fault::Truncate {
            let keep = len.map(|l| l / 2);
            let detail = match (keep, len) {
                (Some(k), Some(l)) => format!("(sending {k} of {l} bytes, then closing)"),
                _ => "(sending half of the first chunk, then closing)".to_string(),
            };
            shared.record(seq, &line, op, f, detail);
            mode = Mode::Truncate { keep, tail: None };
        } else {
            let at = shared.draw(len.unwrap_or(1));
            shared.record(
                seq,
                &line,
                op,
                f,
                format!(
                    "(byte {at} of {} bytes)",
                    len.map(|l| l.to_string()).unwrap_or("?".into())
                ),
            );
            mode = Mode::Flip { at };
        }
    }
    let body = FaultBody {
        inner: body,
        mode,
        pos: 0,
        _ranged: ranged,
    };
    Ok(Response::from_parts(parts, body.boxed()))
}

/// Applies a rewriting fault to a whole (buffered) upstream response.
async fn rewrite(
    shared: &Shared,
    seq: usize,
    line: &str,
    op: Op,
    f: Fault,
    upstream: Response<Incoming>,
) -> Result<Response<ProxyBody>, BoxError> {
    let (mut parts, body) = upstream.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    let is_xml = parts.status.is_success() && text.trim_start().starts_with("<?xml");
    match f {
        Fault::DropContinuationToken if is_xml => {
            for tag in ["NextContinuationToken", "NextKeyMarker", "NextVersionIdMarker"] {
                text = strip_element(&text, tag);
            }
            text = text.replace("<IsTruncated>false</IsTruncated>", "<IsTruncated>true</IsTruncated>");
            shared.record(seq, line, op, f, "(truncated, no continuation token)".into());
        }
        Fault::ReverseListing if is_xml => {
            text = reverse_elements(&text, "Contents");
            shared.record(seq, line, op, f, "(entries reversed)".into());
        }
        Fault::KmsEtag => {
            if parts.headers.contains_key(hyper::header::ETAG) {
                parts
                    .headers
                    .insert(hyper::header::ETAG, format!("\"{KMS_ETAG}\"").parse()?);
            }
            if parts.status.is_success() {
                parts.headers.insert("x-amz-server-side-encryption", "aws:kms".parse()?);
            }
            if is_xml {
                text = replace_elements(&text, "ETag", &format!("&quot;{KMS_ETAG}&quot;"));
            }
            shared.record(seq, line, op, f, String::new());
        }
        _ => {}
    }
    let body = if is_xml { Bytes::from(text) } else { bytes };
    parts.headers.insert(CONTENT_LENGTH, body.len().into());
    Ok(Response::from_parts(
        parts,
        Full::new(body).map_err(|never| match never {}).boxed(),
    ))
}

/// `xml` with the `<tag>…</tag>` elements in reverse order (all of them must be consecutive, as the
/// entries of a listing are).
fn reverse_elements(xml: &str, tag: &str) -> String {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let (Some(first), Some(last)) = (xml.find(&open), xml.rfind(&close)) else {
        return xml.to_string();
    };
    let end = last + close.len();
    let mut items: Vec<String> = xml[first..end]
        .split_inclusive(close.as_str())
        .map(|p| p.trim().to_string())
        .collect();
    items.reverse();
    format!("{}{}{}", &xml[..first], items.concat(), &xml[end..])
}

/// `xml` without any `<tag>…</tag>` element.
fn strip_element(xml: &str, tag: &str) -> String {
    replace_elements(xml, tag, "\u{0}").replace(&format!("<{tag}>\u{0}</{tag}>"), "")
}

/// `xml` with the content of every `<tag>…</tag>` element replaced by `value`.
fn replace_elements(xml: &str, tag: &str, value: &str) -> String {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push_str(&rest[..i]);
        out.push_str(&open);
        out.push_str(value);
        out.push_str(&close);
        rest = &after[j + close.len()..];
    }
    out.push_str(rest);
    out
}

/// An S3-style XML error response.
fn s3_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId><HostId>fault-proxy</HostId></Error>"
    );
    let mut resp = Response::new(Full::new(Bytes::from(xml)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, "application/xml".parse().expect("header value"));
    resp.headers_mut()
        .insert("x-amz-request-id", "fault-proxy".parse().expect("header value"));
    resp
}

/// What a [`FaultBody`] does to the bytes passing through.
enum Mode {
    Pass,
    /// Pass `keep` bytes (half of the first frame when unknown), then wait and fail.
    Truncate {
        keep: Option<u64>,
        tail: Option<Pin<Box<tokio::time::Sleep>>>,
    },
    /// Flip the byte at this offset.
    Flip {
        at: u64,
    },
}

/// The upstream response body with a fault applied.
struct FaultBody {
    inner: Incoming,
    mode: Mode,
    pos: u64,
    /// Counts the GET in flight until the body is done.
    _ranged: Option<RangedGet>,
}

impl Body for FaultBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Mode::Truncate { keep: Some(keep), tail } = &mut this.mode {
            if this.pos >= *keep {
                // Give the connection time to flush the half, then fail the body: hyper closes it.
                let t = tail.get_or_insert_with(|| Box::pin(tokio::time::sleep(TRUNCATE_FLUSH)));
                ready!(t.as_mut().poll(cx));
                return Poll::Ready(Some(Err("fault_proxy: injected truncation".into())));
            }
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            Some(Ok(f)) => f,
        };
        let mut data = match frame.into_data() {
            Ok(d) => d,
            Err(other) => return Poll::Ready(Some(Ok(other))),
        };
        let start = this.pos;
        let end = start + data.len() as u64;
        match &mut this.mode {
            Mode::Pass => {}
            Mode::Truncate { keep, .. } => {
                let k = *keep.get_or_insert(start + data.len() as u64 / 2);
                if end > k {
                    data = data.slice(..(k - start) as usize);
                }
            }
            Mode::Flip { at } => {
                if (start..end).contains(at) {
                    let mut m = BytesMut::from(&data[..]);
                    m[(*at - start) as usize] ^= 0xff;
                    data = m.freeze();
                }
            }
        }
        this.pos = start + data.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match self.mode {
            // Never report the end: the body ends with an error instead.
            Mode::Truncate { .. } => false,
            _ => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A proxied client connection; when an injected reset marked it, it is closed with SO_LINGER 0,
/// so the client sees a TCP RST rather than an orderly FIN.
struct ConnIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reset.load(Ordering::SeqCst) {
            // No FIN before the RST of the drop.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}
