#!/usr/bin/env bash
# The library's documentation builds without a warning, and both crates package and build as they
# would be published (`cargo publish --dry-run`: metadata, readme, license, include lists).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace
cargo publish --dry-run --workspace --allow-dirty
