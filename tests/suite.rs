//! The integration suite against a real S3 server, as one test binary.
//!
//! Each module was its own `tests/*.rs` target; eleven targets meant eleven links of the SDK and
//! eleven ~450 MB debug binaries, which filled a CI disk. One binary builds once and runs its tests
//! on one thread pool. `tests/bench_mode.rs` stays a binary of its own because it compares its
//! figures with the server's global request counters, which no other test may touch meanwhile.
//!
//! Filter by module as usual: `cargo test --test suite faults::`.

#[path = "common/mod.rs"]
mod common;

#[path = "annotations.rs"]
mod annotations;
#[path = "attributes.rs"]
mod attributes;
#[path = "callbacks.rs"]
mod callbacks;
#[path = "checksums.rs"]
mod checksums;
#[path = "conformance.rs"]
mod conformance;
#[path = "faults.rs"]
mod faults;
#[path = "ingest.rs"]
mod ingest;
#[path = "integration.rs"]
mod integration;
#[path = "safety.rs"]
mod safety;
#[path = "sharding.rs"]
mod sharding;
#[path = "soak.rs"]
mod soak;
#[path = "versioning.rs"]
mod versioning;
