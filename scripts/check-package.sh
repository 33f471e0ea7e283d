#!/usr/bin/env bash
# The library's documentation builds without a warning, and both crates package and build as they
# would be published (`cargo publish --dry-run`: metadata, readme, license, include lists).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace
# Packaging and manifest checks only: the full verification build (`cargo publish --dry-run --workspace`
# without --no-verify) compiles everything once more and costs minutes of CI; run it before a release.
cargo publish --dry-run --workspace --allow-dirty --no-verify
