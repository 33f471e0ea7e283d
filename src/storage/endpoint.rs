//! S3 endpoints resolved once per bucket, not once per request.
//!
//! The SDK runs S3's endpoint rules (hundreds of conditions, URL parsing, host-label checks) before
//! every request: about 5 % of a small object's client CPU. The rules read the bucket and the
//! client's settings; the object key, prefix and copy source are passed to them but not read. So
//! the endpoint of a request is the one of the last request to the same bucket with the same
//! settings, and is remembered under those parameters with the key, prefix and copy source left
//! out.

use aws_sdk_s3::config::endpoint::{DefaultResolver, Endpoint, EndpointFuture, Params, ResolveEndpoint};
use std::sync::{Arc, Mutex};

/// How many endpoints a client remembers (one per bucket it addresses; a run addresses one or two).
const REMEMBERED: usize = 16;

/// The SDK's S3 endpoint resolver, with the endpoints it resolved remembered per bucket. Clones share
/// what is remembered.
#[derive(Debug, Clone)]
pub struct RememberingResolver {
    rules: Arc<DefaultResolver>,
    /// Shared, so that a direct request reads its bucket's endpoint without copying its URL and
    /// property maps (see [`RememberingResolver::for_bucket`]).
    known: Arc<Mutex<Vec<Remembered>>>,
}

/// An endpoint the rules gave, under the parameters they were asked with (see `per_bucket`).
type Remembered = (Params, Arc<Endpoint>);

impl Default for RememberingResolver {
    fn default() -> Self {
        RememberingResolver {
            rules: Arc::new(DefaultResolver::new()),
            known: Arc::default(),
        }
    }
}

impl RememberingResolver {
    /// The endpoint the rules gave for `bucket`, when every one remembered for it is the same (a
    /// client's settings are fixed, so there is one per bucket); `None` before the first request.
    pub fn for_bucket(&self, bucket: &str) -> Option<Arc<Endpoint>> {
        let known = self.known.lock().ok()?;
        let mut found = known.iter().filter(|(p, _)| p.bucket() == Some(bucket)).map(|(_, e)| e);
        let first = found.next()?;
        found.all(|e| e == first).then(|| Arc::clone(first))
    }
}

/// `params` without what the rules do not read (key, prefix, copy source).
fn per_bucket(p: &Params) -> Option<Params> {
    Params::builder()
        .set_bucket(p.bucket().map(str::to_string))
        .set_region(p.region().map(str::to_string))
        .set_use_fips(p.use_fips())
        .set_use_dual_stack(p.use_dual_stack())
        .set_endpoint(p.endpoint().map(str::to_string))
        .set_force_path_style(p.force_path_style())
        .set_accelerate(p.accelerate())
        .set_use_global_endpoint(p.use_global_endpoint())
        .set_use_object_lambda_endpoint(p.use_object_lambda_endpoint())
        .set_disable_access_points(p.disable_access_points())
        .set_disable_multi_region_access_points(p.disable_multi_region_access_points())
        .set_use_arn_region(p.use_arn_region())
        .set_use_s3_express_control_endpoint(p.use_s3_express_control_endpoint())
        .set_disable_s3_express_session_auth(p.disable_s3_express_session_auth())
        .build()
        .ok()
}

impl ResolveEndpoint for RememberingResolver {
    fn resolve_endpoint<'a>(&'a self, params: &'a Params) -> EndpointFuture<'a> {
        let Some(key) = per_bucket(params) else {
            return self.rules.resolve_endpoint(params);
        };
        let known = self
            .known
            .lock()
            .ok()
            .and_then(|known| known.iter().find(|(p, _)| *p == key).map(|(_, e)| Endpoint::clone(e)));
        if let Some(endpoint) = known {
            return EndpointFuture::ready(Ok(endpoint));
        }
        EndpointFuture::new(async move {
            let endpoint = self.rules.resolve_endpoint(params).await?;
            if let Ok(mut known) = self.known.lock() {
                if known.len() >= REMEMBERED {
                    known.remove(0);
                }
                known.push((key, Arc::new(endpoint.clone())));
            }
            Ok(endpoint)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(bucket: &str, key: &str, path_style: bool, endpoint: Option<&str>) -> Params {
        Params::builder()
            .bucket(bucket)
            .key(key)
            .region("us-east-1")
            .force_path_style(path_style)
            .set_endpoint(endpoint.map(str::to_string))
            .build()
            .expect("params")
    }

    async fn both(r: &RememberingResolver, p: &Params) -> (String, String) {
        let ours = r.resolve_endpoint(p).await.expect("resolved");
        let rules = DefaultResolver::new().resolve_endpoint(p).await.expect("resolved");
        (format!("{ours:?}"), format!("{rules:?}"))
    }

    #[tokio::test]
    async fn remembered_endpoints_are_the_ones_the_rules_give() {
        let r = RememberingResolver::default();
        let cases = [
            ("a-bucket", "k1", true, Some("http://127.0.0.1:9000")),
            ("a-bucket", "dir/k 2+é", true, Some("http://127.0.0.1:9000")),
            ("a-bucket", "k1", false, Some("http://127.0.0.1:9000")),
            ("other.bucket", "k1", true, Some("http://127.0.0.1:9000/base/")),
            ("a-bucket", "k1", false, None),
            ("a-bucket", "k3", false, None),
            ("dots.in.name", "k", false, None),
            ("a-bucket", "k1", true, None),
        ];
        // Twice: the first pass resolves, the second is answered from what was remembered.
        for _ in 0..2 {
            for (bucket, key, path_style, endpoint) in cases {
                let p = params(bucket, key, path_style, endpoint);
                let (ours, rules) = both(&r, &p).await;
                assert_eq!(ours, rules, "{bucket} {key} {path_style} {endpoint:?}");
            }
        }
        assert_eq!(
            r.known.lock().expect("lock").len(),
            6,
            "one per bucket and settings, not per key"
        );
    }

    /// The names of the fields in a `Params`' debug form (`Params { bucket: Some("b"), … }`).
    fn field_names(p: &Params) -> Vec<String> {
        let text = format!("{p:?}");
        let inner = text.trim_start_matches("Params {").trim_end_matches('}');
        let mut names: Vec<String> = inner
            .split(", ")
            .filter_map(|field| field.split_once(": ").map(|(name, _)| name.trim().to_string()))
            .collect();
        names.sort();
        names
    }

    /// The parameters `per_bucket` carries, each set to something other than its default.
    fn carried() -> aws_sdk_s3::config::endpoint::ParamsBuilder {
        Params::builder()
            .bucket("b")
            .region("eu-west-3")
            .use_fips(true)
            .use_dual_stack(true)
            .endpoint("http://h")
            .force_path_style(true)
            .accelerate(true)
            .use_global_endpoint(true)
            .use_object_lambda_endpoint(true)
            .disable_access_points(true)
            .disable_multi_region_access_points(true)
            .use_arn_region(true)
            .use_s3_express_control_endpoint(true)
            .disable_s3_express_session_auth(true)
    }

    /// `per_bucket` names the SDK's endpoint parameters one by one. One that an SDK upgrade adds
    /// would be left out of what is remembered, and two requests differing only in it would share
    /// an endpoint; so a new one fails here until it is carried (or shown not to be read).
    #[test]
    fn every_endpoint_parameter_but_key_prefix_and_copy_source_is_carried() {
        let all = carried().key("k").prefix("p").copy_source("c").build().expect("params");
        let mut known = [
            "bucket",
            "region",
            "use_fips",
            "use_dual_stack",
            "endpoint",
            "force_path_style",
            "accelerate",
            "use_global_endpoint",
            "use_object_lambda_endpoint",
            "disable_access_points",
            "disable_multi_region_access_points",
            "use_arn_region",
            "use_s3_express_control_endpoint",
            "disable_s3_express_session_auth",
            "key",
            "prefix",
            "copy_source",
        ];
        known.sort_unstable();
        assert_eq!(field_names(&all), known, "the SDK's endpoint parameters changed");
        let kept = per_bucket(&all).expect("kept");
        assert_eq!(kept, carried().build().expect("params"));
        assert_ne!(kept, all, "key, prefix and copy source are left out");
    }

    #[tokio::test]
    async fn a_client_addressing_many_buckets_remembers_a_few() {
        let r = RememberingResolver::default();
        for i in 0..40 {
            let p = params(&format!("bucket-{i}"), "k", true, Some("http://127.0.0.1:9000"));
            let (ours, rules) = both(&r, &p).await;
            assert_eq!(ours, rules);
        }
        assert_eq!(r.known.lock().expect("lock").len(), REMEMBERED);
    }
}
