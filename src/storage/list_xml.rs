//! ListObjectsV2 pages read straight from the response body. A listing of millions of objects spent
//! about half of its client CPU in the SDK's generic XML decoder (a scoped decoder per element and a
//! `String` per field of every object); this reads the four fields a sync needs in one pass over the
//! bytes. Whatever it does not expect (an encoding type, CDATA, a comment, an unknown entity, a
//! carriage return, a missing key) makes it decline, and the SDK's own decoder reads that page, so
//! the fast path accepts nothing the SDK would read differently.
//!
//! It is installed per request by [`FastList`], an interceptor that wraps the body of a successful
//! response: when the body has arrived and the fast reader accepts it, the page is left in a slot for
//! the caller and the SDK is handed a body with only the truncation and the token; otherwise the SDK
//! gets the body as it came (errors never pass through the fast reader).

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use http_body::{Body, Frame};
use std::borrow::Cow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

/// One object of a listed page, as the server wrote it (full key, ETag with its quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub key: String,
    pub size: u64,
    pub mtime: SystemTime,
    pub etag: Option<String>,
}

/// A page of ListObjectsV2.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ListedPage {
    pub objects: Vec<Listed>,
    pub is_truncated: bool,
    pub next_token: Option<String>,
}

/// Where [`FastList`] leaves the page it read (the last attempt's, when a request was retried).
pub(crate) type Slot = Arc<Mutex<Option<ListedPage>>>;

/// An interceptor for one ListObjectsV2 request that reads a successful page with [`parse`].
#[derive(Debug)]
pub(crate) struct FastList {
    slot: Slot,
}

impl FastList {
    /// An interceptor leaving its page in `slot`.
    pub(crate) fn new(slot: Slot) -> Self {
        FastList { slot }
    }
}

impl Intercept for FastList {
    fn name(&self) -> &'static str {
        "FastListObjectsV2"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        if response.status().is_success() {
            let body = std::mem::replace(response.body_mut(), SdkBody::taken());
            *response.body_mut() = SdkBody::from_body_1_x(Filter {
                inner: body,
                buf: Vec::new(),
                slot: self.slot.clone(),
                done: false,
            });
        }
        Ok(())
    }
}

/// A response body gathered whole, then either read by [`parse`] (the SDK gets a stub with the
/// truncation and token) or passed on as it came.
struct Filter {
    inner: SdkBody,
    buf: Vec<u8>,
    slot: Slot,
    done: bool,
}

impl Filter {
    /// What the SDK reads: a stub when the page was read here, else the body itself.
    fn finish(&mut self) -> Bytes {
        let body = std::mem::take(&mut self.buf);
        match (parse(&body), self.slot.lock()) {
            (Some(page), Ok(mut slot)) => {
                #[cfg(test)]
                tests::FAST_PAGES.with(|n| n.set(n.get() + 1));
                let stub = stub(&page);
                *slot = Some(page);
                Bytes::from(stub)
            }
            _ => Bytes::from(body),
        }
    }
}

impl Body for Filter {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    self.done = true;
                    let out = self.finish();
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }
}

/// The result the SDK is handed for a page read here: only what its paging needs.
fn stub(page: &ListedPage) -> String {
    let mut xml = format!("<ListBucketResult><IsTruncated>{}</IsTruncated>", page.is_truncated);
    if let Some(token) = &page.next_token {
        let token = token.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        xml.push_str(&format!("<NextContinuationToken>{token}</NextContinuationToken>"));
    }
    xml.push_str("</ListBucketResult>");
    xml
}

/// Reads a ListObjectsV2 result, or declines (`None`) for anything unexpected.
pub(crate) fn parse(body: &[u8]) -> Option<ListedPage> {
    let mut r = Reader {
        s: std::str::from_utf8(body).ok()?,
        pos: 0,
    };
    r.prolog()?;
    let (root, empty) = r.open()?;
    if root != "ListBucketResult" {
        return None;
    }
    let mut page = ListedPage::default();
    if empty {
        return r.end().then_some(page);
    }
    loop {
        r.space()?;
        match r.tag()? {
            Tag::Close(name) if name == root => break,
            Tag::Close(_) => return None,
            Tag::Open("Contents", false) => page.objects.push(r.contents()?),
            Tag::Open("IsTruncated", empty) => page.is_truncated = boolean(&r.text_element("IsTruncated", empty)?)?,
            Tag::Open("NextContinuationToken", empty) => {
                page.next_token = Some(r.text_element("NextContinuationToken", empty)?.into_owned())
            }
            Tag::Open("EncodingType" | "Contents", _) => return None,
            Tag::Open(name, empty) => r.skip(name, empty)?,
        }
    }
    r.space()?;
    r.end().then_some(page)
}

fn boolean(s: &str) -> Option<bool> {
    match s.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

enum Tag<'a> {
    /// A start tag (name, whether it is self-closing `<x/>`).
    Open(&'a str, bool),
    Close(&'a str),
}

struct Reader<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn end(&self) -> bool {
        self.pos == self.s.len()
    }

    /// Skips an `<?xml …?>` declaration and white space.
    fn prolog(&mut self) -> Option<()> {
        self.space()?;
        if self.rest().starts_with("<?xml") {
            self.pos += self.rest().find("?>")? + 2;
        }
        self.space()
    }

    /// Skips white space; declines at text that is not (mixed content is not a listing).
    fn space(&mut self) -> Option<()> {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches([' ', '\t', '\n']);
        self.pos += rest.len() - trimmed.len();
        (trimmed.is_empty() || trimmed.starts_with('<')).then_some(())
    }

    /// The tag at the position (which must be `<`), past its `>`.
    fn tag(&mut self) -> Option<Tag<'a>> {
        let rest = self.rest();
        let body = rest.strip_prefix('<')?;
        if body.starts_with(['?', '!']) {
            return None; // comments, CDATA, processing instructions: leave them to the SDK
        }
        if let Some(close) = body.strip_prefix('/') {
            let end = close.find('>')?;
            self.pos += 2 + end + 1;
            return Some(Tag::Close(close[..end].trim_end()));
        }
        let name_end = body.find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')?;
        let name = &body[..name_end];
        // Attributes (e.g. xmlns) are skipped; a quoted value may hold `>`.
        let mut quote: Option<u8> = None;
        let bytes = body.as_bytes();
        let mut i = name_end;
        while i < bytes.len() {
            match (quote, bytes[i]) {
                (None, b'"' | b'\'') => quote = Some(bytes[i]),
                (Some(q), c) if c == q => quote = None,
                (None, b'>') => break,
                _ => {}
            }
            i += 1;
        }
        if i == bytes.len() || name.is_empty() {
            return None;
        }
        let empty = bytes[i - 1] == b'/';
        self.pos += 1 + i + 1;
        Some(Tag::Open(name, empty))
    }

    /// The start tag at the position (`<name …>`).
    fn open(&mut self) -> Option<(&'a str, bool)> {
        match self.tag()? {
            Tag::Open(name, empty) => Some((name, empty)),
            Tag::Close(_) => None,
        }
    }

    /// The text of the element just opened, through its end tag.
    fn text_element(&mut self, name: &str, empty: bool) -> Option<Cow<'a, str>> {
        if empty {
            return Some(Cow::Borrowed(""));
        }
        let rest = self.rest();
        let end = rest.find('<')?;
        let text = unescape(&rest[..end])?;
        self.pos += end;
        match self.tag()? {
            Tag::Close(n) if n == name => Some(text),
            _ => None,
        }
    }

    /// Skips the element just opened, with whatever it contains.
    fn skip(&mut self, name: &'a str, empty: bool) -> Option<()> {
        if empty {
            return Some(());
        }
        // The elements open inside, innermost last; every end tag must close the innermost.
        let mut open: Vec<&'a str> = vec![name];
        loop {
            self.pos += self.rest().find('<')?;
            match self.tag()? {
                Tag::Open(_, true) => {}
                Tag::Open(n, false) => open.push(n),
                Tag::Close(n) => {
                    if open.pop() != Some(n) {
                        return None;
                    }
                    if open.is_empty() {
                        return Some(());
                    }
                }
            }
        }
    }

    /// The fields of one `<Contents>` element, through its end tag.
    fn contents(&mut self) -> Option<Listed> {
        let (mut key, mut size, mut mtime, mut etag) = (None, None, None, None);
        loop {
            self.space()?;
            match self.tag()? {
                Tag::Close("Contents") => break,
                Tag::Close(_) => return None,
                Tag::Open("Key", empty) => key = Some(self.text_element("Key", empty)?.into_owned()),
                Tag::Open("Size", empty) => size = Some(self.text_element("Size", empty)?.trim().parse::<u64>().ok()?),
                Tag::Open("ETag", empty) => etag = Some(self.text_element("ETag", empty)?.into_owned()),
                Tag::Open("LastModified", empty) => {
                    let text = self.text_element("LastModified", empty)?;
                    let dt = aws_smithy_types::DateTime::from_str(
                        text.trim(),
                        aws_smithy_types::date_time::Format::DateTime,
                    )
                    .ok()?;
                    mtime = Some(SystemTime::try_from(dt).ok()?);
                }
                Tag::Open(name, empty) => self.skip(name, empty)?,
            }
        }
        Some(Listed {
            key: key?,
            size: size.unwrap_or(0),
            mtime: mtime.unwrap_or(SystemTime::UNIX_EPOCH),
            etag,
        })
    }
}

/// XML character data with its references resolved; `None` for an unknown entity or a raw carriage
/// return (which an XML reader would normalize: the SDK is left to decide).
fn unescape(s: &str) -> Option<Cow<'_, str>> {
    if s.contains('\r') {
        return None;
    }
    if !s.contains('&') {
        return Some(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find(';')?;
        let entity = &after[..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse::<u32>().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    thread_local! {
        /// Pages the fast reader took on this thread.
        pub(super) static FAST_PAGES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix>
  <KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>
  <Contents><Key>p/a &amp; b&lt;c&gt;&#13;&#x1F600;</Key><LastModified>2024-01-02T03:04:05.678Z</LastModified>
    <ETag>&quot;0cc175b9c0f1b6a831c399e269772661&quot;</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm>
    <Size>1</Size><Owner><ID>x</ID><DisplayName/></Owner><StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>p/ spaced key </Key><LastModified>1969-12-31T23:59:59Z</LastModified><ETag>"e-2"</ETag><Size>5368709120</Size>
    <RestoreStatus><IsRestoreInProgress>false</IsRestoreInProgress></RestoreStatus></Contents>
  <Contents><Key>p/é/ü</Key><Size>0</Size></Contents>
  <NextContinuationToken>tok/+=</NextContinuationToken><StartAfter>p/0</StartAfter>
</ListBucketResult>"#;

    #[test]
    fn reads_the_fields_a_sync_needs() {
        let page = parse(PAGE.as_bytes()).expect("parsed");
        assert!(page.is_truncated);
        assert_eq!(page.next_token.as_deref(), Some("tok/+="));
        let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["p/a & b<c>\r\u{1F600}", "p/ spaced key ", "p/é/ü"]);
        let a = &page.objects[0];
        assert_eq!(a.size, 1);
        assert_eq!(a.etag.as_deref(), Some("\"0cc175b9c0f1b6a831c399e269772661\""));
        assert_eq!(
            a.mtime,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_704_164_645_678)
        );
        let b = &page.objects[1];
        assert_eq!(b.size, 5_368_709_120);
        assert_eq!(b.mtime, SystemTime::UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!((page.objects[2].size, page.objects[2].etag.as_ref()), (0, None));
    }

    #[test]
    fn reads_an_empty_listing() {
        let page = parse(b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>").unwrap();
        assert_eq!(page, ListedPage::default());
        assert_eq!(parse(b"<ListBucketResult/>").unwrap(), ListedPage::default());
    }

    /// What the fast reader does not know, it leaves to the SDK.
    #[test]
    fn declines_what_it_does_not_expect() {
        let with = |inner: &str| format!("<ListBucketResult>{inner}</ListBucketResult>");
        for body in [
            with("<EncodingType>url</EncodingType>"),
            with("<Contents><Key><![CDATA[k]]></Key></Contents>"),
            with("<!-- c --><Contents><Key>k</Key></Contents>"),
            with("<Contents><Key>a&nbsp;b</Key></Contents>"),
            with("<Contents><Key>a\r\nb</Key></Contents>"),
            with("<Contents><Size>1</Size></Contents>"),
            with("<Contents><Key>k</Key><Size>-1</Size></Contents>"),
            with("<Contents><Key>k</Key><LastModified>yesterday</LastModified></Contents>"),
            with("<Contents><Key>k</Key></Contents><IsTruncated>maybe</IsTruncated>"),
            with("<Contents><Key>k</Key>"),
            with("<Owner><ID>x</Owner></ID>"),
            with("text<IsTruncated>false</IsTruncated>"),
            "<Error><Code>AccessDenied</Code></Error>".to_string(),
            with("") + "<trailing/>",
        ] {
            assert_eq!(parse(body.as_bytes()), None, "{body}");
        }
        assert_eq!(parse(&[0xff, 0xfe]), None);
    }

    /// A bucket whose every ListObjectsV2 answer is `body` with `status`.
    fn answering(status: u16, body: &'static str) -> crate::storage::s3::S3Storage {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let http = aws_smithy_http_client::test_util::infallible_client_fn(move |_req| {
            hyper::http::Response::builder().status(status).body(body).unwrap()
        });
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .http_client(http)
            .build();
        crate::storage::s3::S3Storage::new(aws_sdk_s3::Client::from_conf(conf), "b".into(), "p/".into(), true, None)
    }

    /// Through the SDK: a page the fast reader takes and the same page it declines (a comment in it)
    /// give the same entries and the same next page; an error answer stays an error.
    #[tokio::test]
    async fn the_fast_and_the_sdk_reader_agree() {
        use crate::storage::s3::Page;
        let fast = answering(200, PAGE);
        let declined = answering(
            200,
            Box::leak(PAGE.replace("<Contents>", "<!-- c --><Contents>").into_boxed_str()),
        );
        let before = FAST_PAGES.with(|n| n.get());
        let (a, next_a) = fast.list_page(1000, Page::first(None)).await.unwrap();
        assert_eq!(
            FAST_PAGES.with(|n| n.get()),
            before + 1,
            "the fast reader read the page"
        );
        let (b, next_b) = declined.list_page(1000, Page::first(None)).await.unwrap();
        assert_eq!(
            FAST_PAGES.with(|n| n.get()),
            before + 1,
            "the SDK read the declined page"
        );
        assert_eq!(a.len(), 3);
        assert_eq!(a, b);
        assert_eq!(format!("{next_a:?}"), format!("{next_b:?}"));
        assert!(format!("{next_a:?}").contains("tok/+="));
        assert_eq!(a[0].key, "a & b<c>\r\u{1F600}");
        assert_eq!(a[0].etag.as_deref(), Some("0cc175b9c0f1b6a831c399e269772661"));
        let denied = answering(403, "<Error><Code>AccessDenied</Code><Message>no</Message></Error>");
        let err = denied.list_page(1000, Page::first(None)).await.unwrap_err();
        assert!(
            err.to_string().contains("AccessDenied") || err.to_string().contains("denied"),
            "{err}"
        );
    }
}
