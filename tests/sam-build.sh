#!/usr/bin/env bash
# Runs the `sam build` that README tells users to run (samconfig.toml's build settings,
# template.yaml's rust-cargolambda build method), offline, and checks that every function's
# `bootstrap` was built. It builds for this machine's architecture (x86_64 in CI) through the
# template's Architecture parameter, because Lambda's arm64 needs the aarch64 Rust target, which
# only rustup can install; with it installed, `tests/sam-build.sh arm64` builds what deploys.
# The build folder is $CARGO_TARGET_DIR/sam-build (SAM_BUILD_DIR to change it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/sam-offline.sh
source "$root/tests/sam-offline.sh"
cd "$root"
# sam finds cargo-lambda on PATH; cargo-zigbuild finds zig through `python3 -m ziglang`.
export PATH="$venv/bin:$PATH"

case "${1:-$(uname -m)}" in
  x86_64 | amd64) architecture=x86_64 ;;
  arm64 | aarch64) architecture=arm64 ;;
  *) echo "sam-build: unknown architecture ${1:-$(uname -m)}" >&2; exit 2 ;;
esac
target_dir="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
build_dir="${SAM_BUILD_DIR:-$target_dir/sam-build}"
rm -rf "$build_dir"

echo "sam-build: sam build --parameter-overrides Architecture=$architecture into $build_dir" >&2
"$venv/bin/sam" build --build-dir "$build_dir" --cache-dir "$target_dir/sam-cache" \
  --parameter-overrides "Architecture=$architecture"

status=0
for function in WebhookFunction ProcessorFunction AlerterFunction; do
  bootstrap="$build_dir/$function/bootstrap"
  if [ -x "$bootstrap" ]; then
    echo "sam-build: $bootstrap ($(stat -c %s "$bootstrap") bytes)" >&2
  else
    echo "sam-build: $bootstrap was not built" >&2
    status=1
  fi
done
exit "$status"
