#!/usr/bin/env bash
# Speed and size of the functions as Lambda runs them: builds the release binaries exactly as
# they ship (`cargo lambda build --release`, tests/lambda-build.sh) and the `speed` tool (crate
# local-stack, tests/src/bin/speed/), then runs the tool against a fresh moto server
# (tests/with-moto.sh). Prints figures; README's "Speed and size" has them and how to read them.
#
# Usage: tests/bench/speed.sh [COMMAND [OPTIONS]]     (default: all)
#   webhook-cpu [--invocations N] [--warmup N] [--perf FILE]   the webhook's CPU per invocation
#   rss                                                      each function's peak RSS, worst input
#   pipeline [--messages N] [--users N] [--warmup N]         webhook in → reply out, less the LLM
#   cold-start [--runs N]                                    process start → first poll, per function
#   SKIP_BUILD=1   measure the binaries already in $CARGO_TARGET_DIR/lambda
# Timing figures belong here, never in the tests: they vary with the machine and its load.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/whatsapp-llm-assistant/target}"
if [ "${SKIP_BUILD:-}" != 1 ]; then
  tests/lambda-build.sh >&2
  # The tool itself is a dev build (quick, and what README's figures were taken with): only the
  # functions' processes are measured; its own work (API Gateway's events, the SQS poll, the
  # stand-ins) counts only in the pipeline's wall-clock legs.
  cargo build -p local-stack --bin speed >&2
fi
[ $# -gt 0 ] || set -- all
exec tests/with-moto.sh "$CARGO_TARGET_DIR/debug/speed" --binaries "$CARGO_TARGET_DIR/lambda" "$@"
