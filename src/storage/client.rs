//! Building an `aws-sdk-s3` client for one end from its [`ClientConfig`] and the shared retry settings.

use crate::config::{ClientConfig, RetryConfig};
use crate::error::{Error, Result};
use aws_config::retry::RetryConfig as SdkRetry;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_runtime::env_config::file::{EnvConfigFileKind as ProfileFileKind, EnvConfigFiles as ProfileFiles};
use aws_sdk_s3::config::{Credentials, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::Client;

use super::direct::Direct;
use super::endpoint::RememberingResolver;
use super::http::Connections;
use super::sdk::SdkClient;

/// An HTTP client that sends every S3 request through `proxy` (`http(s)://[user:password@]host:port`).
fn proxied_http_client(proxy: &str) -> Result<aws_smithy_runtime_api::client::http::SharedHttpClient> {
    use aws_smithy_http_client::{proxy::ProxyConfig, tls, Connector};
    let invalid = |m: String| Error::InvalidArgument(format!("invalid --https-proxy: {m}"));
    let (scheme, rest) = proxy
        .split_once("://")
        .ok_or_else(|| invalid("expected http(s)://host:port".into()))?;
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let mut config = ProxyConfig::all(format!("{scheme}://{host}")).map_err(|e| invalid(e.to_string()))?;
    if let Some((user, password)) = auth.and_then(|a| a.split_once(':')) {
        config = config.with_basic_auth(user, password);
    }
    Ok(
        aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
            let mut b = Connector::builder().proxy_config(config.clone());
            b.set_connector_settings(settings.cloned());
            if let Some(rc) = components {
                b.set_sleep_impl(rc.sleep_impl());
            }
            b.tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                .build()
        }),
    )
}

/// Creates the S3 client of one end.
pub async fn build_client(c: &ClientConfig, retry: &RetryConfig) -> Result<Client> {
    Ok(build(c, retry).await?.0)
}

/// Creates the [`SdkClient`] of one end, which sends GetObject and small PutObject requests without
/// the SDK's orchestrator where it can ([`super::direct`]): with our own HTTP client, credentials, at
/// least two attempts per request (the SDK's retries take over after a failed direct one), and no
/// per-operation timeouts (which only the SDK enforces), unless `S3SYNC_DIRECT_REQUESTS=off`.
pub async fn build_object_client(c: &ClientConfig, retry: &RetryConfig, payload_signing: bool) -> Result<SdkClient> {
    let (client, connections, endpoints, credentials) = build(c, retry).await?;
    let direct_ok = !super::direct::turned_off()
        && retry.aws_max_attempts >= 2
        && retry.operation_timeout.is_none()
        && retry.operation_attempt_timeout.is_none();
    let sdk = SdkClient::new(client, payload_signing);
    Ok(match (connections, credentials) {
        (Some(connections), Some(credentials)) if direct_ok => {
            let direct = Direct::new(
                connections,
                endpoints,
                credentials,
                payload_signing,
                retry.stalled_stream_protection,
                retry.initial_backoff,
            );
            let after = SdkRetry::standard()
                .with_max_attempts(retry.aws_max_attempts - 1)
                .with_initial_backoff(retry.initial_backoff);
            sdk.with_direct(direct, after)
        }
        _ => sdk,
    })
}

/// What [`build`] makes: the S3 client of one end, the connection pools of our HTTP client (when it is
/// the one used), the client's endpoint resolver and its credentials (none for anonymous requests).
type Built = (
    Client,
    Option<Connections>,
    RememberingResolver,
    Option<aws_sdk_s3::config::SharedCredentialsProvider>,
);

/// The S3 client of one end and what requests sent without the SDK need of it.
async fn build(c: &ClientConfig, retry: &RetryConfig) -> Result<Built> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if c.aws_config_file.is_some() || c.aws_shared_credentials_file.is_some() {
        let mut files = ProfileFiles::builder().include_default_config_file(c.aws_config_file.is_none());
        files = files.include_default_credentials_file(c.aws_shared_credentials_file.is_none());
        if let Some(p) = &c.aws_config_file {
            files = files.with_file(ProfileFileKind::Config, p);
        }
        if let Some(p) = &c.aws_shared_credentials_file {
            files = files.with_file(ProfileFileKind::Credentials, p);
        }
        loader = loader.profile_files(files.build());
    }
    if let Some(p) = &c.profile {
        loader = loader.profile_name(p);
    }
    if c.no_sign_request {
        loader = loader.no_credentials();
    } else if let (Some(ak), Some(sk)) = (&c.access_key, &c.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(ak, sk, c.session_token.clone(), None, "s3sync-cli"));
    }
    if let Some(r) = &c.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(u) = &c.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    // The S3 client gets an HTTP client of its own, so that its pools hold S3's connections alone
    // (with S3's timeouts), not the credential providers' (IMDS, ECS), which share the loader's.
    let mut s3_http = None;
    if let Some(http) = &c.http_client {
        loader = loader.http_client(http.clone());
    } else if let Some(proxy) = &c.https_proxy {
        loader = loader.http_client(proxied_http_client(proxy)?);
    } else {
        loader = loader.http_client(super::http::http_client()?);
        s3_http = Some(super::http::http_client_and_connections()?);
    }
    let mut timeouts = TimeoutConfig::builder();
    if let Some(d) = retry.connect_timeout {
        timeouts = timeouts.connect_timeout(d);
    }
    if let Some(d) = retry.read_timeout {
        timeouts = timeouts.read_timeout(d);
    }
    if let Some(d) = retry.operation_timeout {
        timeouts = timeouts.operation_timeout(d);
    }
    if let Some(d) = retry.operation_attempt_timeout {
        timeouts = timeouts.operation_attempt_timeout(d);
    }
    loader = loader
        .timeout_config(timeouts.build())
        .retry_config(
            SdkRetry::standard()
                .with_max_attempts(retry.aws_max_attempts.max(1))
                .with_initial_backoff(retry.initial_backoff),
        )
        .stalled_stream_protection(if retry.stalled_stream_protection {
            StalledStreamProtectionConfig::enabled().build()
        } else {
            StalledStreamProtectionConfig::disabled()
        });
    let shared = loader.load().await;
    let endpoints = RememberingResolver::default();
    let mut b = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(c.force_path_style)
        .accelerate(c.accelerate)
        // s3sync computes and checks digests itself, in the same pass as the transfer.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        // The endpoint rules run once per bucket, not once per request.
        .endpoint_resolver(endpoints.clone());
    if shared.region().is_none() {
        b = b.region(Region::new("us-east-1"));
    }
    let connections = s3_http.map(|(http, connections)| {
        b.set_http_client(Some(http));
        connections
    });
    let credentials = shared.credentials_provider();
    Ok((Client::from_conf(b.build()), connections, endpoints, credentials))
}
