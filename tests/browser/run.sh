#!/usr/bin/env bash
# The browser test of the simulator page: installs what it needs (Debian's Chromium, the pinned
# playwright-core from npm), then runs it against the local stack's binary. Run it under
# tests/with-moto.sh after the workspace is built (make test does both).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "browser: installing Debian's chromium" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
  else
    echo "browser: Chromium is missing; install Debian's 'chromium' package" >&2
    exit 1
  fi
fi
(cd "$here" && npm ci --no-audit --no-fund --silent)
mkdir -p "$root/target"
export LOCAL_STACK_BIN="${LOCAL_STACK_BIN:-$target/debug/local-stack}"
export CHROMIUM="${CHROMIUM:-$(command -v chromium)}"
cd "$here" && node --test
