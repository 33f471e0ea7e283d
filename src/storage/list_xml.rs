//! ListObjectsV2 pages read straight from the response body, as it arrives. A listing of millions
//! of objects spent about half of its client CPU in the SDK's generic XML decoder (a scoped decoder
//! per element and a `String` per field of every object); this reads the four fields a sync needs in
//! one pass over the bytes, and keeps only the bytes of the element not yet complete, so a chain of
//! requests holds parsed objects, not a buffered body beside them.
//!
//! It is installed per request by [`FastList`], an interceptor that wraps the body of a successful
//! response: when the body has ended and the reader accepted all of it, the page is left in a slot
//! for the caller and the SDK is handed a body with only the truncation and the token. Whatever it
//! does not expect (an encoding type, CDATA, a comment, an unknown entity, a carriage return, a
//! missing key) makes it decline: the bytes are gone by then, so the slot says so and the caller asks
//! again with the SDK's own decoder, and keeps to it for every later page listed through that end.
//! The fast path accepts nothing the SDK would read differently; errors never pass through it.

use super::Entry;
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
use std::time::{Duration, SystemTime};

/// A page as the fast reader read it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ListedPage {
    /// The objects as the server wrote them: full keys, ETags with their quotes.
    pub objects: Vec<Entry>,
    pub is_truncated: bool,
    pub next_token: Option<String>,
}

/// What the fast reader made of one response body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// The whole page, read.
    Page(ListedPage),
    /// Not a page it reads: the body is consumed, so the page must be asked for again.
    Declined,
}

/// Where [`FastList`] leaves what it read, for the caller of the request (empty: the SDK has the body).
pub(crate) type Slot = Arc<Mutex<Option<Read>>>;

/// The interceptor that puts the fast reader in front of the SDK's decoder for one request.
#[derive(Debug)]
pub(crate) struct FastList {
    slot: Slot,
}

impl FastList {
    /// Reads the successful response of the request it is installed on into `slot`.
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
                reader: Stream::default(),
                slot: self.slot.clone(),
                done: false,
            });
        }
        Ok(())
    }
}

/// A response body fed to the streaming reader frame by frame; the SDK sees only [`stub`].
struct Filter {
    inner: SdkBody,
    reader: Stream,
    slot: Slot,
    done: bool,
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
                        self.reader.feed(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    self.done = true;
                    let read = std::mem::take(&mut self.reader).finish();
                    #[cfg(test)]
                    if matches!(read, Read::Page(_)) {
                        tests::FAST_PAGES.with(|n| n.set(n.get() + 1));
                    }
                    let out = stub(&read);
                    if let Ok(mut slot) = self.slot.lock() {
                        *slot = Some(read);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
            }
        }
    }
}

/// The body the SDK decodes instead of the page: its truncation and token (a declined page: an empty,
/// final page, which the caller does not use).
fn stub(read: &Read) -> String {
    let Read::Page(page) = read else {
        return "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>".into();
    };
    let mut xml = format!("<ListBucketResult><IsTruncated>{}</IsTruncated>", page.is_truncated);
    if let Some(token) = &page.next_token {
        let token = token.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        xml.push_str(&format!("<NextContinuationToken>{token}</NextContinuationToken>"));
    }
    xml.push_str("</ListBucketResult>");
    xml
}

/// Reads a whole ListObjectsV2 body (`None`: declined).
#[cfg(test)]
pub(crate) fn parse(body: &[u8]) -> Option<ListedPage> {
    let mut s = Stream::default();
    s.feed(body);
    match s.finish() {
        Read::Page(p) => Some(p),
        Read::Declined => None,
    }
}

/// An element not complete after this many unread bytes is not one the reader expects (a key is at
/// most 1,024 bytes): it declines rather than hold the body.
const MAX_UNREAD: usize = 1 << 20;

/// The most objects room is made for ahead of a page (a page holds at most 1,000 on S3).
const MAX_KEYS_RESERVED: usize = 10_000;

/// Where the streaming reader is in the document.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the root element's start tag.
    #[default]
    Start,
    /// Among the root element's children.
    Inside,
    /// Past the root element's end tag: only white space may follow.
    Closed,
}

/// A ListObjectsV2 body read as it arrives. Each step reads one whole element (or the prolog and the
/// root's start tag) and only succeeds when the bytes that end it are there, so a step that cannot
/// finish is an element not yet complete: it is tried again when more bytes came, and at the end of
/// the body a step that still cannot finish declines the page.
#[derive(Debug, Default)]
struct Stream {
    unread: Vec<u8>,
    at: At,
    page: ListedPage,
    declined: bool,
}

/// What one step of the reader did.
enum Step {
    Read,
    Decline,
}

impl Stream {
    /// Reads what `data` completes. Bytes are copied only when an element is split between frames.
    fn feed(&mut self, data: &[u8]) {
        if self.declined {
            return;
        }
        let read = if self.unread.is_empty() {
            self.read(data).map(|used| self.unread.extend_from_slice(&data[used..]))
        } else {
            self.unread.extend_from_slice(data);
            let unread = std::mem::take(&mut self.unread);
            let read = self.read(&unread);
            self.unread = unread;
            read.map(|used| drop(self.unread.drain(..used)))
        };
        if read.is_none() || self.unread.len() > MAX_UNREAD {
            self.decline();
        }
    }

    /// Takes every step the whole characters of `bytes` complete (a frame may end inside one); how
    /// many bytes were read, `None` to decline.
    fn read(&mut self, bytes: &[u8]) -> Option<usize> {
        let text = match std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) if e.error_len().is_none() => std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()?,
            Err(_) => return None,
        };
        self.advance(text)
    }

    fn decline(&mut self) {
        *self = Stream {
            declined: true,
            ..Stream::default()
        };
    }

    /// Takes every step `text` completes; how many bytes were read, `None` to decline.
    fn advance(&mut self, text: &str) -> Option<usize> {
        let mut r = Reader { s: text, pos: 0 };
        while !r.end() {
            let mark = r.pos;
            match self.step(&mut r) {
                Some(Step::Read) => {}
                Some(Step::Decline) => return None,
                None => return Some(mark),
            }
        }
        Some(r.pos)
    }

    /// Reads the next element; `None`: not complete yet (or never: then the body's end declines).
    fn step(&mut self, r: &mut Reader<'_>) -> Option<Step> {
        match self.at {
            At::Start => {
                r.prolog()?;
                let (root, empty) = r.open()?;
                if root != "ListBucketResult" {
                    return Some(Step::Decline);
                }
                self.at = if empty { At::Closed } else { At::Inside };
            }
            At::Inside => {
                r.space()?;
                match r.tag()? {
                    Tag::Close("ListBucketResult") => self.at = At::Closed,
                    Tag::Close(_) | Tag::Open("EncodingType", _) | Tag::Open("Contents", true) => {
                        return Some(Step::Decline)
                    }
                    Tag::Open("Contents", false) => {
                        let object = r.contents()?;
                        self.page.objects.push(object);
                    }
                    Tag::Open("KeyCount", empty) => {
                        // Room for the page's objects at once (S3 writes the count before them).
                        let count = r.text_element("KeyCount", empty)?.trim().parse::<i32>().ok()?;
                        let room = usize::try_from(count).unwrap_or(0).min(MAX_KEYS_RESERVED);
                        self.page
                            .objects
                            .reserve_exact(room.saturating_sub(self.page.objects.len()));
                    }
                    Tag::Open("IsTruncated", empty) => {
                        self.page.is_truncated = boolean(&r.text_element("IsTruncated", empty)?)?;
                    }
                    Tag::Open("NextContinuationToken", empty) => {
                        self.page.next_token = Some(r.text_element("NextContinuationToken", empty)?.into_owned());
                    }
                    Tag::Open(name, empty) => r.skip(name, empty)?,
                }
            }
            At::Closed => {
                r.space()?;
                if !r.end() {
                    return Some(Step::Decline);
                }
            }
        }
        Some(Step::Read)
    }

    /// The page, when the body ended after the root element with every byte read.
    fn finish(self) -> Read {
        if self.declined || self.at != At::Closed || !self.unread.iter().all(|b| b" \t\n".contains(b)) {
            return Read::Declined;
        }
        Read::Page(self.page)
    }
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
        let bytes = self.rest().as_bytes();
        let n = bytes
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\n'))
            .unwrap_or(bytes.len());
        self.pos += n;
        (n == bytes.len() || bytes[n] == b'<').then_some(())
    }

    /// The tag at the position (which must be `<`), past its `>`.
    fn tag(&mut self) -> Option<Tag<'a>> {
        let rest = self.rest();
        let bytes = rest.as_bytes();
        if bytes.first() != Some(&b'<') {
            return None;
        }
        match bytes.get(1)? {
            b'?' | b'!' => return None, // comments, CDATA, processing instructions: leave them to the SDK
            b'/' => {
                let end = 2 + memchr::memchr(b'>', &bytes[2..])?;
                self.pos += end + 1;
                return Some(Tag::Close(rest[2..end].trim_end()));
            }
            _ => {}
        }
        // Every index below is at an ASCII byte, so a character boundary.
        let name_end = 1 + bytes[1..]
            .iter()
            .position(|&c| c.is_ascii_whitespace() || c == b'/' || c == b'>')?;
        let name = &rest[1..name_end];
        if name.is_empty() {
            return None;
        }
        if bytes[name_end] == b'>' {
            self.pos += name_end + 1;
            return Some(Tag::Open(name, false));
        }
        // Attributes (e.g. xmlns) are skipped; a quoted value may hold `>`.
        let mut quote: Option<u8> = None;
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
        if i == bytes.len() {
            return None;
        }
        let empty = bytes[i - 1] == b'/';
        self.pos += i + 1;
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
        let bytes = rest.as_bytes();
        // One scan in the common case: plain text up to the end tag.
        let first = memchr::memchr3(b'<', b'&', b'\r', bytes)?;
        let text = match bytes[first] {
            b'<' => {
                self.pos += first;
                Cow::Borrowed(&rest[..first])
            }
            b'&' => {
                let end = first + memchr::memchr(b'<', &bytes[first..])?;
                self.pos += end;
                unescape(&rest[..end])?
            }
            _ => return None, // a raw CR: XML would turn it into LF, the SDK knows how
        };
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
            self.pos += memchr::memchr(b'<', self.rest().as_bytes())?;
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
    fn contents(&mut self) -> Option<Entry> {
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
                    mtime = Some(timestamp(&self.text_element("LastModified", empty)?)?);
                }
                Tag::Open(name, empty) => self.skip(name, empty)?,
            }
        }
        Some(Entry {
            key: key?,
            size: size.unwrap_or(0),
            mtime: mtime.unwrap_or(SystemTime::UNIX_EPOCH),
            etag,
            version_id: None,
        })
    }
}

/// XML character data with its references resolved; `None` for an unknown entity or a raw carriage
/// return (which an XML reader would normalize: the SDK is left to decide).
fn unescape(s: &str) -> Option<Cow<'_, str>> {
    let bytes = s.as_bytes();
    if memchr::memchr(b'\r', bytes).is_some() {
        return None;
    }
    let Some(mut at) = memchr::memchr(b'&', bytes) else {
        return Some(Cow::Borrowed(s));
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = memchr::memchr(b';', after.as_bytes())?;
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
        match memchr::memchr(b'&', rest.as_bytes()) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

/// A LastModified value: `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the form S3 writes, is read here;
/// anything else by the SDK's RFC 3339 reader.
fn timestamp(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Some(t) = plain_timestamp(text.as_bytes()) {
        return Some(t);
    }
    let dt = aws_smithy_types::DateTime::from_str(text, aws_smithy_types::date_time::Format::DateTime).ok()?;
    SystemTime::try_from(dt).ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.f…]Z` (1 to 9 fraction digits, a valid date, no leap second) as a time.
fn plain_timestamp(b: &[u8]) -> Option<SystemTime> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let number = |digits: &[u8]| {
        digits
            .iter()
            .try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let (year, month, day) = (number(&b[0..4])?, number(&b[5..7])?, number(&b[8..10])?);
    let (hour, minute, second) = (number(&b[11..13])?, number(&b[14..16])?, number(&b[17..19])?);
    let nanos = match &b[19..] {
        [b'Z'] => 0,
        [b'.', fraction @ .., b'Z'] if (1..=9).contains(&fraction.len()) => {
            number(fraction)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let secs = days_since_epoch(i64::from(year), month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    let whole = match u64::try_from(secs) {
        Ok(s) => SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s))?,
        Err(_) => SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?,
    };
    whole.checked_add(Duration::from_nanos(u64::from(nanos)))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (month 1–12), counting years
/// from March so that the leap day comes last.
fn days_since_epoch(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
        assert_eq!(page.objects.capacity(), 3, "room made from KeyCount");
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
            with("<KeyCount>many</KeyCount><Contents><Key>k</Key></Contents>"),
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

    /// A bucket whose every ListObjectsV2 answer is `body` with `status`, and the count of requests.
    fn answering(
        status: u16,
        body: &'static str,
    ) -> (crate::storage::s3::S3Storage, Arc<std::sync::atomic::AtomicUsize>) {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = requests.clone();
        let http = aws_smithy_http_client::test_util::infallible_client_fn(move |_req| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            hyper::http::Response::builder().status(status).body(body).unwrap()
        });
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .http_client(http)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        (
            crate::storage::s3::S3Storage::new(client, "b".into(), "p/".into(), true, None),
            requests,
        )
    }

    /// Through the SDK: a page the fast reader takes and the same page it declines (a comment in it)
    /// give the same entries and the same next page; an error answer stays an error.
    #[tokio::test]
    async fn the_fast_and_the_sdk_reader_agree() {
        use crate::storage::s3::Page;
        use std::sync::atomic::Ordering::SeqCst;
        let (fast, fast_requests) = answering(200, PAGE);
        let (declined, declined_requests) = answering(
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
        assert_eq!(fast_requests.load(SeqCst), 1);
        let (b, next_b) = declined.list_page(1000, Page::first(None)).await.unwrap();
        assert_eq!(
            FAST_PAGES.with(|n| n.get()),
            before + 1,
            "the SDK read the declined page"
        );
        assert_eq!(declined_requests.load(SeqCst), 2, "a declined page is asked for again");
        assert_eq!(a.len(), 3);
        assert_eq!(a, b);
        assert_eq!(format!("{next_a:?}"), format!("{next_b:?}"));
        assert!(format!("{next_a:?}").contains("tok/+="));
        assert_eq!(a[0].key, "a & b<c>\r\u{1F600}");
        assert_eq!(a[0].etag.as_deref(), Some("0cc175b9c0f1b6a831c399e269772661"));
        // Later pages of that listing go to the SDK at once.
        let (c, _) = declined.list_page(1000, Page::first(None)).await.unwrap();
        assert_eq!((c, declined_requests.load(SeqCst)), (a, 3));
        let (denied, denied_requests) = answering(403, "<Error><Code>AccessDenied</Code><Message>no</Message></Error>");
        let err = denied.list_page(1000, Page::first(None)).await.unwrap_err();
        assert!(
            err.to_string().contains("AccessDenied") || err.to_string().contains("denied"),
            "{err}"
        );
        assert_eq!(denied_requests.load(SeqCst), 1);
    }

    /// Read frame by frame, however the body is cut (inside a tag, an entity or a character), a
    /// page gives what it gives in one piece; what is declined whole is declined in pieces.
    #[test]
    fn reads_a_body_cut_anywhere() {
        let whole = parse(PAGE.as_bytes()).expect("parsed");
        let bytes = PAGE.as_bytes();
        let read = |frames: &mut dyn Iterator<Item = &[u8]>| {
            let mut s = Stream::default();
            frames.for_each(|f| s.feed(f));
            match s.finish() {
                Read::Page(p) => Some(p),
                Read::Declined => None,
            }
        };
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(read(&mut [a, b].into_iter()).as_ref(), Some(&whole), "cut at {cut}");
        }
        for size in [1, 2, 3, 7, 64] {
            assert_eq!(read(&mut bytes.chunks(size)).as_ref(), Some(&whole), "frames of {size}");
        }
        for body in [
            "<ListBucketResult><EncodingType>url</EncodingType></ListBucketResult>",
            "<ListBucketResult><!-- c --><Contents><Key>k</Key></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>k</Key>",
            "<ListBucketResult></ListBucketResult><trailing/>",
            "<ListBucketResult></ListBucketResult>text",
        ] {
            assert_eq!(parse(body.as_bytes()), None, "{body}");
            assert_eq!(read(&mut body.as_bytes().chunks(1)), None, "{body} in frames of 1");
        }
    }

    /// An element that never ends is not held: past a bound the reader declines and lets go.
    #[test]
    fn an_element_that_never_ends_is_not_held() {
        let mut s = Stream::default();
        s.feed(b"<ListBucketResult><Contents><Key>");
        let frame = vec![b'a'; 64 * 1024];
        for _ in 0..(2 * MAX_UNREAD / frame.len()) {
            s.feed(&frame);
        }
        assert!(s.declined);
        assert!(s.unread.capacity() == 0 && s.page.objects.is_empty());
        assert_eq!(s.finish(), Read::Declined);
    }

    /// The direct reading of S3's timestamps agrees with the SDK's, and leaves other forms to it.
    #[test]
    fn timestamps_agree_with_the_sdk() {
        use aws_smithy_types::date_time::Format;
        let sdk = |t: &str| SystemTime::try_from(aws_smithy_types::DateTime::from_str(t, Format::DateTime).ok()?).ok();
        let mut checked = 0;
        for year in [
            0, 1, 4, 100, 1600, 1899, 1900, 1969, 1970, 1972, 2000, 2024, 2025, 2100, 2400, 9999,
        ] {
            for month in 1..=12 {
                for day in [1, 15, 28, 29, 30, 31] {
                    for (time, fraction) in [
                        ("00:00:00", ""),
                        ("23:59:59", ".999"),
                        ("12:34:56", ".5"),
                        ("01:02:03", ".123456789"),
                    ] {
                        let text = format!("{year:04}-{month:02}-{day:02}T{time}{fraction}Z");
                        let plain = plain_timestamp(text.as_bytes());
                        assert_eq!(plain.is_some(), day <= days_in_month(year, month), "{text}");
                        if plain.is_some() {
                            assert_eq!(plain, sdk(&text), "{text}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 3000);
        for other in [
            "2024-01-02T03:04:05+00:00",
            "2024-01-02t03:04:05z",
            "2024-01-02T03:04:60Z",
            "2024-01-02T03:04:05.1234567891Z",
            "2024-01-02T03:04:05.Z",
            "2024-13-02T03:04:05Z",
            "2024-1-02T03:04:05Z",
        ] {
            assert_eq!(plain_timestamp(other.as_bytes()), None, "{other}");
            assert_eq!(timestamp(other), sdk(other), "{other}");
        }
        assert_eq!(
            timestamp(" 1969-12-31T23:59:59.5Z "),
            Some(SystemTime::UNIX_EPOCH - Duration::from_millis(500))
        );
    }
}
