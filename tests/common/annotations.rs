//! Object annotations served by the fault proxy, in memory.
//!
//! Neither moto nor Garage implements ListObjectAnnotations, GetObjectAnnotation,
//! PutObjectAnnotation or DeleteObjectAnnotation, so the proxy answers them itself (with the REST
//! shapes the SDK sends and parses) while every other request still reaches the real server. What
//! ties an annotation to an object is kept as S3 does it:
//! - annotations belong to one object version; a request without `versionId` means the latest one,
//!   which the proxy learns from the `x-amz-version-id` of the writes that pass through it
//!   (`"null"` for an unversioned bucket or an object it never saw written);
//! - overwriting or deleting an object of an unversioned bucket drops its annotations (DeleteObjects,
//!   the batch delete, is not followed).
//!
//! The proxy's fault rules see annotation requests like any other (a rule that matches one counts
//! it); faults that act on a forwarded response do nothing to them, since they are not forwarded.
//!
//! Objects must therefore be written through the proxy for versioned tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LAST_MODIFIED};
use hyper::{Method, Request, Response, StatusCode};
use md5::{Digest, Md5};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// One stored annotation.
#[derive(Debug, Clone)]
struct Stored {
    payload: Bytes,
    etag: String,
    last_modified: SystemTime,
}

/// `(bucket, key as in the path)`.
type ObjectId = (String, String);

#[derive(Debug, Default)]
struct Inner {
    /// Per object and version: annotations by name.
    by_version: HashMap<(ObjectId, String), BTreeMap<String, Stored>>,
    /// The latest version of each object written through the proxy.
    latest: HashMap<ObjectId, String>,
}

/// The proxy's annotation store.
#[derive(Debug, Default)]
pub struct AnnotationStore(Mutex<Inner>);

/// `bucket` and `key` of a path-style request path.
fn object_of(path: &str) -> Option<ObjectId> {
    let (b, k) = path.trim_start_matches('/').split_once('/')?;
    (!b.is_empty() && !k.is_empty()).then(|| (b.to_string(), k.to_string()))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Whether a request is one of the four annotation operations.
pub fn is_annotation_request(path: &str, query: &str) -> bool {
    object_of(path).is_some() && query.split('&').any(|kv| kv.split('=').next() == Some("annotation"))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn iso8601(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn http_date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

fn response(status: StatusCode, body: Bytes) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(Full::new(body).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_LENGTH, len.into());
    r.headers_mut().insert(
        "x-amz-request-id",
        "fault-proxy-annotations".parse().expect("header value"),
    );
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut r = response(status, Bytes::from(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, "application/xml".parse().expect("header value"));
    r
}

/// The payload of a PutObjectAnnotation body, undoing `aws-chunked` framing when the SDK used it.
fn decode_payload(headers: &HeaderMap, raw: Bytes) -> Result<Bytes, String> {
    let chunked = headers.contains_key("x-amz-decoded-content-length")
        || headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("aws-chunked"));
    if !chunked {
        return Ok(raw);
    }
    let mut out = Vec::new();
    let mut rest = &raw[..];
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("aws-chunked: no chunk header")?;
        let header = std::str::from_utf8(&rest[..line_end]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(header.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("aws-chunked: chunk size {header:?}: {e}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Bytes::from(out));
        }
        if rest.len() < size + 2 {
            return Err("aws-chunked: short chunk".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

impl AnnotationStore {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The version a request addresses: its `versionId`, else the latest one the proxy saw.
    fn version_of(inner: &Inner, object: &ObjectId, query: &str) -> String {
        query_param(query, "versionId")
            .or_else(|| inner.latest.get(object).cloned())
            .unwrap_or_else(|| "null".to_string())
    }

    /// Answers one annotation request.
    pub async fn serve(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let Some(object) = object_of(parts.uri.path()) else {
            return error(StatusCode::BAD_REQUEST, "InvalidRequest", "no key");
        };
        let query = parts.uri.query().unwrap_or("").to_string();
        let name = query_param(&query, "annotationName");
        let raw = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return error(StatusCode::BAD_REQUEST, "IncompleteBody", &e.to_string()),
        };
        let mut inner = self.inner();
        let version = Self::version_of(&inner, &object, &query);
        let id = (object.clone(), version.clone());
        match (parts.method.clone(), name) {
            (Method::PUT, Some(name)) => {
                let payload = match decode_payload(&parts.headers, raw) {
                    Ok(p) => p,
                    Err(e) => return error(StatusCode::BAD_REQUEST, "InvalidRequest", &e),
                };
                let etag = format!("\"{}\"", hex::encode(Md5::digest(&payload)));
                let name_of_put = &name;
                inner.by_version.entry(id).or_default().insert(
                    name.clone(),
                    Stored {
                        payload,
                        etag: etag.clone(),
                        last_modified: SystemTime::now(),
                    },
                );
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<PutObjectAnnotationOutput><Key>{}</Key><AnnotationName>{}</AnnotationName></PutObjectAnnotationOutput>",
                    xml_escape(&object.1),
                    xml_escape(name_of_put)
                );
                let mut r = response(StatusCode::OK, Bytes::from(xml));
                r.headers_mut()
                    .insert(CONTENT_TYPE, "application/xml".parse().expect("header value"));
                r.headers_mut().insert(ETAG, etag.parse().expect("header value"));
                r.headers_mut()
                    .insert("x-amz-object-version-id", version.parse().expect("header value"));
                r
            }
            (Method::GET, Some(name)) => match inner.by_version.get(&id).and_then(|m| m.get(&name)) {
                None => error(
                    StatusCode::NOT_FOUND,
                    "NoSuchAnnotation",
                    "The specified annotation does not exist.",
                ),
                Some(a) => {
                    let mut r = response(StatusCode::OK, a.payload.clone());
                    r.headers_mut().insert(ETAG, a.etag.parse().expect("header value"));
                    r.headers_mut()
                        .insert(LAST_MODIFIED, http_date(a.last_modified).parse().expect("header value"));
                    r.headers_mut()
                        .insert("x-amz-object-version-id", version.parse().expect("header value"));
                    r
                }
            },
            (Method::GET, None) => {
                let max = query_param(&query, "max-annotation-results")
                    .and_then(|m| m.parse::<usize>().ok())
                    .unwrap_or(1000)
                    .max(1);
                let after = query_param(&query, "continuation-token");
                let all = inner.by_version.get(&id).cloned().unwrap_or_default();
                let page: Vec<(&String, &Stored)> = all
                    .iter()
                    .filter(|(n, _)| after.as_ref().is_none_or(|a| n.as_str() > a.as_str()))
                    .take(max + 1)
                    .collect();
                let more = page.len() > max;
                let page = &page[..page.len().min(max)];
                let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListObjectAnnotationsOutput>");
                xml.push_str(&format!(
                    "<Bucket>{}</Bucket><Key>{}</Key><AnnotationCount>{}</AnnotationCount><MaxAnnotationResults>{max}</MaxAnnotationResults>",
                    xml_escape(&object.0),
                    xml_escape(&object.1),
                    page.len()
                ));
                if more {
                    if let Some((last, _)) = page.last() {
                        xml.push_str(&format!(
                            "<NextContinuationToken>{}</NextContinuationToken>",
                            xml_escape(last)
                        ));
                    }
                }
                xml.push_str("<Annotations>");
                for (n, a) in page {
                    xml.push_str(&format!(
                        "<AnnotationEntry><AnnotationName>{}</AnnotationName><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size></AnnotationEntry>",
                        xml_escape(n),
                        iso8601(a.last_modified),
                        xml_escape(&a.etag),
                        a.payload.len()
                    ));
                }
                xml.push_str("</Annotations></ListObjectAnnotationsOutput>");
                let mut r = response(StatusCode::OK, Bytes::from(xml));
                r.headers_mut()
                    .insert(CONTENT_TYPE, "application/xml".parse().expect("header value"));
                r.headers_mut()
                    .insert("x-amz-object-version-id", version.parse().expect("header value"));
                r
            }
            (Method::DELETE, Some(name)) => {
                if let Some(m) = inner.by_version.get_mut(&id) {
                    m.remove(&name);
                }
                response(StatusCode::NO_CONTENT, Bytes::new())
            }
            _ => error(StatusCode::BAD_REQUEST, "InvalidRequest", "unknown annotation request"),
        }
    }

    /// Learns from a write or delete that passed through: which version is now the latest, and
    /// which annotations went away with an overwritten or deleted object.
    pub fn observe(&self, method: &Method, path: &str, query: &str, status: StatusCode, headers: &HeaderMap) {
        let Some(object) = object_of(path) else {
            return;
        };
        // PutObject, CopyObject and DeleteObject carry no sub-resource (at most the SDK's `x-id`);
        // CompleteMultipartUpload is the POST with an upload id.
        let plain = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .all(|kv| kv.split('=').next() == Some("x-id"));
        let whole_object_write = match *method {
            Method::PUT | Method::DELETE => plain,
            Method::POST => query.contains("uploadId="),
            _ => false,
        };
        if !status.is_success() || !whole_object_write {
            return;
        }
        // moto answers `null` for the (only) version of an unversioned bucket.
        let version = headers
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| *v != "null")
            .map(str::to_string);
        let mut inner = self.inner();
        match version {
            Some(v) if *method != Method::DELETE => {
                inner.latest.insert(object, v);
            }
            // A delete marker, or a write to an unversioned bucket: the unversioned object's
            // annotations are gone.
            _ => {
                inner.latest.remove(&object);
                inner.by_version.remove(&(object, "null".to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_chunked_bodies_are_decoded() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-decoded-content-length", "5".parse().unwrap());
        let raw = Bytes::from_static(b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n");
        assert_eq!(decode_payload(&h, raw).unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(
            decode_payload(&HeaderMap::new(), Bytes::from_static(b"plain")).unwrap(),
            Bytes::from_static(b"plain")
        );
    }
}
