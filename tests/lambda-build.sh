#!/usr/bin/env bash
# Builds every function as Lambda runs it: `cargo lambda build --release` (cargo-lambda and the
# zig it links with come from tests/requirements.txt), for this machine's architecture unless
# arguments say otherwise (e.g. --arm64). Leaves $CARGO_TARGET_DIR/lambda/<function>/bootstrap
# and fails unless every function's binary was written by this build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$("$root/tests/python-env.sh")"
# cargo finds `cargo-lambda` on PATH; cargo-zigbuild finds zig through `python3 -m ziglang`.
export PATH="$venv/bin:$PATH"

target_dir="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
stamp="$(mktemp)"
trap 'rm -f "$stamp"' EXIT

cargo lambda build --release "$@"

status=0
for manifest in functions/*/Cargo.toml; do
  name="$(basename "$(dirname "$manifest")")"
  bootstrap="$target_dir/lambda/$name/bootstrap"
  if [ ! "$bootstrap" -nt "$stamp" ]; then
    echo "lambda-build: $bootstrap was not built" >&2
    status=1
  else
    echo "lambda-build: $bootstrap ($(stat -c %s "$bootstrap") bytes)" >&2
  fi
done
exit "$status"
