//! The HTTP client under every S3 client (unless a proxy or a caller's own client is configured).
//!
//! It is the stack the SDK builds by default (hyper 1, hyper-util's pooled client, rustls with aws-lc
//! and the system's root certificates), built here because the SDK does not expose two settings that
//! matter for bulk transfers:
//!
//! - **ACK a response at once.** Servers that write a response's headers and its body in two writes
//!   with Nagle's algorithm on (Garage, for one) hold the body back until the headers are acknowledged,
//!   and Linux delays that acknowledgement by 40 ms on a connection that takes turns, as HTTP/1.1 does.
//!   Every small GET then took 44 ms however idle both ends were. The socket is put in quick-ACK mode
//!   (`TCP_QUICKACK`) each time it is read after a request was written: one `setsockopt` per turn.
//! - **A bounded read buffer per connection** ([`READ_BUFFER_MAX`]), so 64 ranged GETs in flight hold
//!   a few MiB of socket buffers instead of tens.
//!
//! Timeouts (connect, and read up to the response headers), error classes for the retry policy, and
//! connection poisoning behave as in the SDK's client.

use crate::error::{Error, Result};
use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{capture_connection, CaptureConnection, Connected, Connection, HttpInfo};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The most a connection buffers of a response before the body reader takes it (hyper's floor is 8 KiB;
/// its default, about 400 KiB, is what made each ranged GET in flight cost close to 1 MiB).
pub const READ_BUFFER_MAX: usize = 64 * 1024;

/// A new HTTP client for the S3 clients of one run; fails only if TLS cannot be set up.
///
/// One hyper client (and so one connection pool) is built for each distinct pair of connect and read
/// timeouts the SDK asks for, and shared by every request with those settings.
pub fn http_client() -> Result<SharedHttpClient> {
    Ok(http_client_and_connections()?.0)
}

/// Like [`http_client`], with a handle on its connection pools for requests that the SDK does not send
/// (see [`super::direct`]).
pub fn http_client_and_connections() -> Result<(SharedHttpClient, Connections)> {
    let connectors = Connections::default();
    let client = SharedHttpClient::new(S3HttpClient {
        tls: tls_config()?,
        connectors: connectors.clone(),
    });
    Ok((client, connectors))
}

/// The connectors an [`http_client`] built for the SDK, one per pair of timeouts it asked for.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<Mutex<HashMap<Timeouts, SharedHttpConnector>>>);

impl Connections {
    /// The connector the SDK's requests go through, with its timeouts and its pool of connections;
    /// `None` until the SDK has sent a request. A client used by one S3 client alone is asked for one
    /// pair of timeouts (the S3 client's); should it be asked for more, any of them serves.
    pub fn connector(&self) -> Option<SharedHttpConnector> {
        let connectors = self.0.lock().unwrap_or_else(|e| e.into_inner());
        connectors.values().next().cloned()
    }
}

/// The connect and read timeouts one connector was built for.
type Timeouts = (Option<Duration>, Option<Duration>);

#[derive(Debug)]
struct S3HttpClient {
    tls: rustls::ClientConfig,
    connectors: Connections,
}

impl HttpClient for S3HttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self.connectors.0.lock().unwrap_or_else(|e| e.into_inner());
        connectors
            .entry(key)
            .or_insert_with(|| SharedHttpConnector::new(S3Connector::new(self.tls.clone(), key.0, key.1)))
            .clone()
    }
}

/// Requests over one pool of connections, with the read timeout applied up to the response headers.
#[derive(Debug, Clone)]
struct S3Connector {
    client: Client<HttpsConnector<TcpConnector>, SdkBody>,
    read_timeout: Option<Duration>,
}

impl S3Connector {
    fn new(tls: rustls::ClientConfig, connect_timeout: Option<Duration>, read_timeout: Option<Duration>) -> Self {
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(TcpConnector::new(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .http1_max_buf_size(READ_BUFFER_MAX)
            .build(tls);
        Self { client, read_timeout }
    }
}

/// rustls with aws-lc (as the SDK's default client) trusting the system's root certificates
/// (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured). Loading them takes milliseconds, so it is done
/// once per process, as the SDK does, not once for each client of a run.
fn tls_config() -> Result<rustls::ClientConfig> {
    static CONFIG: OnceLock<std::result::Result<rustls::ClientConfig, rustls::Error>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("loading the system's root certificates: {e}");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::debug!("no root certificate found: only http:// endpoints can be reached");
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let builder =
                rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
            Ok(builder.with_root_certificates(roots).with_no_client_auth())
        })
        .clone()
        .map_err(|e| Error::Internal(format!("setting up TLS: {e}")))
}

impl HttpConnector for S3Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let capture = capture_connection(&mut request);
        if let Some(smithy) = request.extensions().get::<CaptureSmithyConnection>() {
            smithy.set_connection_retriever(move || connection_metadata(&capture));
        }
        let response = self.client.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let response = match read_timeout {
                None => response.await,
                Some(limit) => match tokio::time::timeout(limit, response).await {
                    Ok(r) => r,
                    Err(_) => return Err(ConnectorError::timeout(Box::new(TimedOut("response", limit)))),
                },
            };
            match response {
                Ok(r) => HttpResponse::try_from(r.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                Err(e) => Err(classify(Box::new(e))),
            }
        })
    }
}

/// What the SDK's retry policy needs to know of the connection a request used: where it went, and how
/// to keep it from being reused after a failure.
fn connection_metadata(capture: &CaptureConnection) -> Option<ConnectionMetadata> {
    let connected = capture.connection_metadata();
    let connected = connected.as_ref()?;
    let mut extras = hyper::http::Extensions::new();
    connected.get_extras(&mut extras);
    let info = extras.get::<HttpInfo>();
    let poison = capture.clone();
    let mut b = ConnectionMetadata::builder().proxied(false).poison_fn(move || {
        if let Some(c) = poison.connection_metadata().as_ref() {
            c.poison();
        }
    });
    b.set_local_addr(info.map(|i| i.local_addr()));
    b.set_remote_addr(info.map(|i| i.remote_addr()));
    Some(b.build())
}

/// A wait that ran out: connecting, or waiting for a response's headers.
#[derive(Debug)]
struct TimedOut(&'static str, Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no {} within {:?}", self.0, self.1)
    }
}

impl StdError for TimedOut {}

/// The errors in `error`'s chain, `io::Error` payloads included (`io::Error::source` skips them).
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| match e.downcast_ref::<io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => e.source(),
    })
}

/// Sorts a failed request into the classes the SDK's retry policy acts on.
fn classify(error: BoxError) -> ConnectorError {
    if chain(error.as_ref()).any(|e| e.is::<TimedOut>()) {
        return ConnectorError::timeout(error);
    }
    let io = chain(error.as_ref()).any(|e| e.is::<io::Error>());
    let hyper = chain(error.as_ref()).find_map(|e| e.downcast_ref::<hyper::Error>());
    if let Some(h) = hyper {
        if h.is_timeout() {
            return ConnectorError::timeout(error);
        }
        if h.is_user() {
            return ConnectorError::user(error);
        }
        if h.is_closed() || h.is_canceled() || io {
            return ConnectorError::io(error);
        }
        if h.is_incomplete_message() {
            return ConnectorError::other(error, Some(ErrorKind::TransientError));
        }
    }
    let connect = chain(error.as_ref())
        .find_map(|e| e.downcast_ref::<hyper_util::client::legacy::Error>())
        .is_some_and(|e| e.is_connect());
    if connect || io {
        return ConnectorError::io(error);
    }
    ConnectorError::other(error, None)
}

/// Opens TCP connections (no Nagle on our side), within the connect timeout, as [`QuickAck`] streams.
#[derive(Debug, Clone)]
struct TcpConnector {
    inner: hyper_util::client::legacy::connect::HttpConnector,
    timeout: Option<Duration>,
}

impl TcpConnector {
    fn new(timeout: Option<Duration>) -> Self {
        let mut inner = hyper_util::client::legacy::connect::HttpConnector::new();
        inner.enforce_http(false);
        inner.set_nodelay(true);
        Self { inner, timeout }
    }
}

impl tower_service::Service<Uri> for TcpConnector {
    type Response = QuickAck;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAck, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            let io = match timeout {
                None => connecting.await?,
                Some(limit) => match tokio::time::timeout(limit, connecting).await {
                    Ok(io) => io?,
                    Err(_) => return Err(Box::new(TimedOut("connection", limit)) as BoxError),
                },
            };
            Ok(QuickAck { io, wrote: false })
        })
    }
}

/// A TCP stream that acknowledges what it receives at once when it reads after writing (see the module
/// comment).
#[derive(Debug)]
struct QuickAck {
    io: TokioIo<TcpStream>,
    wrote: bool,
}

impl QuickAck {
    /// Remembers that bytes went out, so the next read acknowledges at once; passes `written` on.
    fn note_write(&mut self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote = true;
        }
        written
    }
}

impl Read for QuickAck {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        if self.wrote {
            self.wrote = false;
            quick_ack(self.io.inner());
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

/// Leaves delayed-ACK mode until the kernel enters it again (Linux's `TCP_QUICKACK`). Best effort: a socket
/// that refuses it only acknowledges later.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn quick_ack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

/// Other systems have no such switch: their delayed ACKs stay as they are.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn quick_ack(_: &TcpStream) {}

impl Write for QuickAck {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note_write(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note_write(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tower_service::Service;

    /// Whether `stream` would acknowledge the next segment at once (Linux reports "not in ping-pong mode").
    #[cfg(target_os = "linux")]
    fn acks_at_once(stream: &TcpStream) -> bool {
        socket2::SockRef::from(stream).tcp_quickack().unwrap()
    }

    /// Three request/response turns between `client` and `server`.
    #[cfg(target_os = "linux")]
    async fn turns<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(client: &mut S, server: &mut TcpStream) {
        let mut buf = [0u8; 4];
        for _ in 0..3 {
            client.write_all(b"ping").await.unwrap();
            client.flush().await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
            server.write_all(b"pong").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong");
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_response_read_after_a_request_is_acknowledged_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        // Without QuickAck the kernel delays ACKs on a connection that takes turns (what made each small GET
        // from Garage wait 40 ms): the test sees that state, so it can tell the two apart.
        let (plain, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut plain, (mut server, _)) = (plain.unwrap(), accepted.unwrap());
        turns(&mut plain, &mut server).await;
        assert!(!acks_at_once(&plain), "this kernel does not delay ACKs between turns");

        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let (ours, accepted) = tokio::join!(TcpConnector::new(None).call(uri), listener.accept());
        let (ours, (mut server, _)) = (ours.unwrap(), accepted.unwrap());
        let mut io = TokioIo::new(ours);
        turns(&mut io, &mut server).await;
        assert!(acks_at_once(io.inner().io.inner()));
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_io_error_and_a_silent_server_a_timeout() {
        // Both are what the SDK's retry policy retries.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connector = S3Connector::new(
            tls_config().unwrap(),
            Some(Duration::from_secs(5)),
            Some(Duration::from_millis(200)),
        );

        let silent = connector.call(HttpRequest::get(format!("http://{addr}/b/k")).unwrap());
        let (result, _accepted) = tokio::join!(silent, listener.accept());
        let err = result.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");

        drop(listener);
        let err = connector
            .call(HttpRequest::get(format!("http://{addr}/b/k")).unwrap())
            .await
            .unwrap_err();
        assert!(err.is_io(), "{err:?}");
    }

    #[tokio::test]
    async fn a_response_comes_back_with_its_status_headers_and_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /b/k HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\netag: \"x\"\r\n\r\n")
                .await
                .unwrap();
            s.write_all(b"hello").await.unwrap();
        });
        let connector = S3Connector::new(tls_config().unwrap(), None, None);
        let response = connector
            .call(HttpRequest::get(format!("http://{addr}/b/k")).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers().get("etag"), Some("\"x\""));
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"hello");
        server.await.unwrap();
    }
}
