//! The attributes of a target object (system and user metadata, tagging, storage class, ACL, SSE) are
//! decided in one place, [`AttributeOptions::for_target`], from the source object's attributes and the
//! user's overrides; and turned into request headers in one place, `apply_attributes!` (in `storage/sdk.rs`).

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// User metadata key that records the source's last-modified time (as the reference names it).
pub const LAST_MODIFIED_METADATA: &str = "s3sync_origin_last_modified";
/// User metadata key that records the source's version id in versioned syncs.
pub const VERSION_ID_METADATA: &str = "s3sync_origin_version_id";

/// The attribute options of a run (CLI overrides and switches).
#[derive(Debug, Clone, Default)]
pub struct AttributeOptions {
    /// `--cache-control`.
    pub cache_control: Option<String>,
    /// `--content-disposition`.
    pub content_disposition: Option<String>,
    /// `--content-encoding`.
    pub content_encoding: Option<String>,
    /// `--content-language`.
    pub content_language: Option<String>,
    /// `--content-type`.
    pub content_type: Option<String>,
    /// `--expires`.
    pub expires: Option<SystemTime>,
    /// `--metadata` (replaces the source's user metadata).
    pub metadata: Option<BTreeMap<String, String>>,
    /// `--website-redirect`.
    pub website_redirect: Option<String>,
    /// `--no-sync-system-metadata`.
    pub no_sync_system_metadata: bool,
    /// `--no-sync-user-defined-metadata`.
    pub no_sync_user_defined_metadata: bool,
    /// `--no-guess-mime-type`.
    pub no_guess_mime_type: bool,
    /// `--put-last-modified-metadata`.
    pub put_last_modified_metadata: bool,
    /// `--storage-class`.
    pub storage_class: Option<String>,
    /// `--acl`.
    pub acl: Option<String>,
    /// `--tagging` (replaces the source's tags).
    pub tagging: Option<String>,
    /// `--disable-tagging`.
    pub disable_tagging: bool,
    /// `--sse`.
    pub sse: Option<String>,
    /// `--sse-kms-key-id`.
    pub sse_kms_key_id: Option<String>,
}

/// The attributes of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectAttributes {
    /// Content-Type.
    pub content_type: Option<String>,
    /// Cache-Control.
    pub cache_control: Option<String>,
    /// Content-Disposition.
    pub content_disposition: Option<String>,
    /// Content-Encoding.
    pub content_encoding: Option<String>,
    /// Content-Language.
    pub content_language: Option<String>,
    /// Expires.
    pub expires: Option<SystemTime>,
    /// x-amz-website-redirect-location.
    pub website_redirect: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Tag set, URL-query encoded (`k=v&k2=v2`).
    pub tagging: Option<String>,
    /// Storage class.
    pub storage_class: Option<String>,
    /// Canned ACL.
    pub acl: Option<String>,
    /// Server-side encryption.
    pub sse: Option<String>,
    /// KMS key id.
    pub sse_kms_key_id: Option<String>,
    /// Pay for the write as the requester (set by a preprocess callback; the end's
    /// `--target-request-payer` applies to every request anyway).
    pub request_payer: bool,
    /// Preconditions of the write (optimistic locking).
    pub preconditions: Preconditions,
}

/// Preconditions of one object's write, decided from [`crate::config::WriteConditions`] and the
/// ETags the listings showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match` on PutObject, CompleteMultipartUpload (the target's ETag as listed).
    pub if_match: Option<String>,
    /// `If-None-Match: *` on PutObject, CompleteMultipartUpload.
    pub if_none_match: bool,
    /// `x-amz-copy-source-if-match` on CopyObject, UploadPartCopy (the source's ETag as listed).
    pub copy_source_if_match: Option<String>,
}

impl Preconditions {
    /// The `If-Match` header value (quoted ETag).
    pub fn if_match_header(&self) -> Option<String> {
        self.if_match.as_deref().map(quote)
    }

    /// The `If-None-Match` header value.
    pub fn if_none_match_header(&self) -> Option<String> {
        self.if_none_match.then(|| "*".to_string())
    }

    /// The `x-amz-copy-source-if-match` header value (quoted ETag).
    pub fn copy_source_if_match_header(&self) -> Option<String> {
        self.copy_source_if_match.as_deref().map(quote)
    }
}

/// An ETag as headers carry it: in double quotes.
pub fn quote(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

/// The attributes a HEAD or GET response reports: both carry the same headers under the same getters.
macro_rules! attributes_of {
    ($h:expr) => {{
        let h = $h;
        ObjectAttributes {
            content_type: h.content_type().map(str::to_string),
            cache_control: h.cache_control().map(str::to_string),
            content_disposition: h.content_disposition().map(str::to_string),
            content_encoding: h.content_encoding().map(str::to_string),
            content_language: h.content_language().map(str::to_string),
            expires: h
                .expires_string()
                .and_then(|s| chrono::DateTime::parse_from_rfc2822(s).ok())
                .map(|d| d.with_timezone(&chrono::Utc).into()),
            website_redirect: h.website_redirect_location().map(str::to_string),
            metadata: h
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            ..Default::default()
        }
    }};
}

impl ObjectAttributes {
    /// The attributes a HEAD of the source reports (tagging is read separately).
    pub fn from_head(h: &HeadObjectOutput) -> Self {
        attributes_of!(h)
    }

    /// The attributes a GET of the source reports: the same as its HEAD's.
    pub fn from_get(g: &GetObjectOutput) -> Self {
        attributes_of!(g)
    }
}

impl AttributeOptions {
    /// Decides the target object's attributes from the source's (`None` for a local file) and the
    /// options. `key` is used to guess the content type of local files; `mtime` is the source's
    /// last-modified time.
    pub fn for_target(&self, source: Option<ObjectAttributes>, key: &str, mtime: SystemTime) -> ObjectAttributes {
        let local = source.is_none();
        let src = source.unwrap_or_default();
        let mut a = ObjectAttributes::default();
        if !self.no_sync_system_metadata {
            a.content_type = src.content_type;
            a.cache_control = src.cache_control;
            a.content_disposition = src.content_disposition;
            a.content_encoding = src.content_encoding;
            a.content_language = src.content_language;
            a.expires = src.expires;
            a.website_redirect = src.website_redirect;
        }
        if local && !self.no_guess_mime_type {
            a.content_type = mime_guess::from_path(key).first().map(|m| m.essence_str().to_string());
        }
        if !self.no_sync_user_defined_metadata {
            a.metadata = src.metadata;
        }
        if !self.disable_tagging {
            a.tagging = src.tagging;
        }
        let or = |v: &Option<String>, cur: Option<String>| v.clone().or(cur);
        a.content_type = or(&self.content_type, a.content_type);
        a.cache_control = or(&self.cache_control, a.cache_control);
        a.content_disposition = or(&self.content_disposition, a.content_disposition);
        a.content_encoding = or(&self.content_encoding, a.content_encoding);
        a.content_language = or(&self.content_language, a.content_language);
        a.website_redirect = or(&self.website_redirect, a.website_redirect);
        a.expires = self.expires.or(a.expires);
        if let Some(m) = &self.metadata {
            a.metadata = m.clone();
        }
        if self.put_last_modified_metadata {
            let t: chrono::DateTime<chrono::Utc> = mtime.into();
            a.metadata.insert(
                LAST_MODIFIED_METADATA.into(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
        }
        a.tagging = self.tagging.clone().or(a.tagging);
        a.storage_class = self.storage_class.clone();
        a.acl = self.acl.clone();
        a.sse = self.sse.clone();
        a.sse_kms_key_id = self.sse_kms_key_id.clone();
        a
    }

    /// Whether the source's own attributes are needed (an S3 source copied to S3).
    pub fn needs_source_attributes(&self) -> bool {
        !(self.no_sync_system_metadata && self.no_sync_user_defined_metadata)
    }
}

/// Parses `--metadata key1=value1,key2=value2`.
pub fn parse_metadata(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("invalid --metadata entry '{p}': expected key=value")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_and_switches_drop() {
        let src = ObjectAttributes {
            content_type: Some("text/plain".into()),
            cache_control: Some("no-cache".into()),
            metadata: [("a".to_string(), "1".to_string())].into(),
            tagging: Some("t=1".into()),
            ..Default::default()
        };
        let opts = AttributeOptions {
            cache_control: Some("max-age=1".into()),
            ..Default::default()
        };
        let a = opts.for_target(Some(src.clone()), "k", SystemTime::UNIX_EPOCH);
        assert_eq!(a.content_type.as_deref(), Some("text/plain"));
        assert_eq!(a.cache_control.as_deref(), Some("max-age=1"));
        assert_eq!(a.metadata.get("a").map(String::as_str), Some("1"));
        assert_eq!(a.tagging.as_deref(), Some("t=1"));

        let opts = AttributeOptions {
            no_sync_system_metadata: true,
            no_sync_user_defined_metadata: true,
            disable_tagging: true,
            put_last_modified_metadata: true,
            ..Default::default()
        };
        let a = opts.for_target(Some(src), "k", SystemTime::UNIX_EPOCH);
        assert_eq!(a.content_type, None);
        assert_eq!(a.tagging, None);
        assert_eq!(
            a.metadata.get(LAST_MODIFIED_METADATA).map(String::as_str),
            Some("1970-01-01T00:00:00.000Z")
        );
    }

    #[test]
    fn guesses_local_content_type() {
        let a = AttributeOptions::default().for_target(None, "dir/page.html", SystemTime::UNIX_EPOCH);
        assert_eq!(a.content_type.as_deref(), Some("text/html"));
        let a = AttributeOptions {
            no_guess_mime_type: true,
            ..Default::default()
        }
        .for_target(None, "x.html", SystemTime::UNIX_EPOCH);
        assert_eq!(a.content_type, None);
    }

    #[test]
    fn metadata_option() {
        assert_eq!(
            parse_metadata("a=1,b=x=y").unwrap(),
            [("a".to_string(), "1".to_string()), ("b".to_string(), "x=y".to_string())].into()
        );
        assert!(parse_metadata("novalue").is_err());
    }
}
