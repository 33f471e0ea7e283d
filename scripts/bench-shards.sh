#!/usr/bin/env bash
# Sharded-run benchmark (see bench/shards.py): builds the release binary when it is missing or older
# than the sources, installs Garage and moto (for the aws CLI) when missing, then runs the benchmark.
#   scripts/bench-shards.sh [--objects N]      Markdown for BENCHMARKS.md on stdout
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-servers.sh moto
scripts/install-servers.sh garage
if [ ! -x target/release/s3sync ] || [ -n "$(find src io/src Cargo.toml -newer target/release/s3sync -print -quit)" ]; then
  cargo build --release --bin s3sync >&2
fi
exec python3 bench/shards.py "$@"
