//! Decides at build time whether the io_uring backend is compiled in.
//!
//! `cfg(s3sync_uring)` is set when the target OS is Linux, unless the build environment has
//! `S3SYNC_BUILD_IO_BACKEND=tokio` (which compiles only the portable tokio backend). The run-time
//! switch `S3SYNC_IO_BACKEND=tokio` is separate, so tests can use both backends of one build.

use std::env;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(s3sync_uring)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=S3SYNC_BUILD_IO_BACKEND");

    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let forced_tokio = env::var("S3SYNC_BUILD_IO_BACKEND")
        .map(|v| v.trim().eq_ignore_ascii_case("tokio"))
        .unwrap_or(false);

    if target_os == "linux" && !forced_tokio {
        println!("cargo:rustc-cfg=s3sync_uring");
    }
}
