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
    known: Arc<Mutex<Vec<(Params, Endpoint)>>>,
}

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
    pub fn for_bucket(&self, bucket: &str) -> Option<Endpoint> {
        let known = self.known.lock().ok()?;
        let mut found = known.iter().filter(|(p, _)| p.bucket() == Some(bucket)).map(|(_, e)| e);
        let first = found.next()?;
        found.all(|e| e == first).then(|| first.clone())
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
            .and_then(|known| known.iter().find(|(p, _)| *p == key).map(|(_, e)| e.clone()));
        if let Some(endpoint) = known {
            return EndpointFuture::ready(Ok(endpoint));
        }
        EndpointFuture::new(async move {
            let endpoint = self.rules.resolve_endpoint(params).await?;
            if let Ok(mut known) = self.known.lock() {
                if known.len() >= REMEMBERED {
                    known.remove(0);
                }
                known.push((key, endpoint.clone()));
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
