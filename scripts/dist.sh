#!/usr/bin/env bash
# Builds what is shipped into target/dist/: the stripped `s3sync` binary (profile `dist`: release
# without debug information), its man page and shell completions, all generated from the binary's own
# clap definitions.
#
# Usage: scripts/dist.sh            then e.g.: sudo install -m755 target/dist/s3sync /usr/local/bin/
#                                              sudo install -m644 target/dist/s3sync.1 /usr/local/share/man/man1/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --locked --profile dist --bin s3sync
out=target/dist
mkdir -p "$out/completions"
bin="$out/s3sync"
"$bin" --generate-man-page >"$out/s3sync.1"
for shell in bash zsh fish powershell elvish; do
  "$bin" --auto-complete-shell "$shell" >"$out/completions/s3sync.$shell"
done
ls -l "$out" "$out/completions"
