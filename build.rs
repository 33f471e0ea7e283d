//! Build script of the s3sync package: records which local I/O backend this build selects (io_uring
//! on Linux, the portable tokio backend elsewhere or when `S3SYNC_BUILD_IO_BACKEND=tokio`), so the
//! binary can report it. The I/O crate's own build script compiles the backend in.

fn main() {
    println!("cargo:rerun-if-env-changed=S3SYNC_BUILD_IO_BACKEND");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let forced = std::env::var("S3SYNC_BUILD_IO_BACKEND").is_ok_and(|v| v.eq_ignore_ascii_case("tokio"));
    let backend = if linux && !forced { "io_uring" } else { "tokio" };
    println!("cargo:rustc-env=S3SYNC_BUILD_BACKEND={backend}");
}
