//! The conformance suite (`src/pipeline/conformance.rs`, which `cargo test` also runs in-process
//! against the in-memory service) against the server under test, through the SDK client.

use crate::common;

#[path = "../src/pipeline/conformance.rs"]
mod scenarios;

use s3sync::storage::client::build_client;
use s3sync::storage::sdk::SdkClient;
use scenarios::World;
use std::sync::Arc;

/// The server under test with two new buckets, through an SDK client built as the CLI builds it.
async fn world() -> World {
    let srv = common::server().await;
    let buckets = [srv.bucket().await, srv.bucket().await];
    let settings = s3sync::ClientConfig {
        endpoint_url: Some(srv.endpoint.clone()),
        force_path_style: true,
        ..Default::default()
    };
    let client = build_client(&settings, &s3sync::RetryConfig::default())
        .await
        .expect("client");
    World {
        client: Arc::new(SdkClient::new(client, true)),
        buckets,
    }
}
