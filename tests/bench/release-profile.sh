#!/usr/bin/env bash
# Benchmark of release profiles: builds the three functions as Lambda runs them
# (`cargo lambda build --release`, x86_64) once per candidate profile and prints, per function,
# the size of the `bootstrap` binary (and gzipped, close to the zip Lambda downloads) and its
# cold-start init time: from exec to its first `GET /2018-06-01/runtime/invocation/next`, asked
# of a stand-in Runtime API on loopback (median, min and max of RUNS starts). build-s is the
# wall time of that candidate's build in this run, with CARGO_TARGET_DIR as it was found.
#
# Usage: tests/bench/release-profile.sh [CANDIDATE...]    (default: every candidate below)
#   RUNS=N   timed starts per function (default 100; one more untimed start warms the page cache)
# The candidate `manifest` is the root Cargo.toml's [profile.release] built exactly as CI builds
# it; the others override every profile key through CARGO_PROFILE_RELEASE_* and build with
# --disable-optimizations plus the target-cpu cargo-lambda would add, so that they do not depend
# on what Cargo.toml says. A candidate's first build compiles every dependency again (3 to 7
# minutes on 2 cores); later runs reuse CARGO_TARGET_DIR and take seconds.
# No network: the binaries get dummy AWS credentials and do no I/O at start. Timing figures
# belong here, never in the tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/whatsapp-llm-assistant/target}"
venv="$(tests/python-env.sh)"
export PATH="$venv/bin:$PATH"
runs="${RUNS:-100}"

# name  opt-level  lto  codegen-units  panic   (strip = "symbols" for all)
all_candidates=(
  "lambda-default 3 thin 1 abort"   # what cargo-lambda applies when Cargo.toml sets nothing
  "o3-thin 3 thin 1 unwind"
  "o3-fat 3 fat 1 unwind"
  "os-fat s fat 1 unwind"
  "oz-fat z fat 1 unwind"
  "o3-fat-abort 3 fat 1 abort"
  "manifest"
)
selected=("$@")

functions=(webhook processor alerter)
# What each function's Config requires (functions/*/src/config.rs and lib.rs), dummy values.
fn_env() {
  case "$1" in
    webhook) echo "QUEUE_URL=https://sqs.us-east-1.amazonaws.com/1/q.fifo SECRET_ID=x" ;;
    processor) echo "TABLE_NAME=t SECRET_ID=x" ;;
    alerter) echo "TABLE_NAME=t ERROR_LOG_EMAIL=a@b.co ERROR_FROM_EMAIL=c@d.co STACK_NAME=s" ;;
  esac
}

# Starts BINARY RUNS+1 times with AWS_LAMBDA_RUNTIME_API on a loopback stand-in, prints
# "median min max" of exec-to-first-`next` in milliseconds (the first start is not counted).
measure_init() {
  "$venv/bin/python" - "$@" <<'PY'
import http.server, os, statistics, subprocess, sys, tempfile, threading, time

binary, runs, fn_vars = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
NEXT = "/2018-06-01/runtime/invocation/next"
polled = threading.Event()
polled_at = [0.0]

class RuntimeApi(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == NEXT and not polled.is_set():
            polled_at[0] = time.perf_counter()
            polled.set()
        # No event is ever handed out: the binary is stopped once it has asked.
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
home = tempfile.mkdtemp()
env = {
    "PATH": "/usr/bin:/bin",
    "HOME": home,
    "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % server.server_address[1],
    "AWS_LAMBDA_FUNCTION_NAME": "bench",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
    "AWS_LAMBDA_LOG_GROUP_NAME": "bench",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
env.update(v.split("=", 1) for v in fn_vars)

times = []
for i in range(runs + 1):
    polled.clear()
    started = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ok = False
    deadline = started + 10
    while time.perf_counter() < deadline:
        if polled.wait(0.01):
            ok = True
            break
        if proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate()
    if not ok:
        sys.exit("%s never asked for an event; its stderr:\n%s" % (binary, err.decode(errors="replace")))
    if i > 0:
        times.append((polled_at[0] - started) * 1000)
server.shutdown()
print("%.1f %.1f %.1f" % (statistics.median(times), min(times), max(times)))
PY
}

results=()
for spec in "${all_candidates[@]}"; do
  read -r name opt lto cgu panic <<<"$spec"
  if [ "${#selected[@]}" -gt 0 ] && [[ ! " ${selected[*]} " == *" $name "* ]]; then
    continue
  fi
  echo "release-profile: building $name" >&2
  start=$(date +%s)
  if [ "$name" = manifest ]; then
    cargo lambda build --release >&2
  else
    CARGO_PROFILE_RELEASE_OPT_LEVEL="$opt" CARGO_PROFILE_RELEASE_LTO="$lto" \
      CARGO_PROFILE_RELEASE_CODEGEN_UNITS="$cgu" CARGO_PROFILE_RELEASE_PANIC="$panic" \
      CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=false \
      cargo lambda build --release --disable-optimizations \
      --config 'build.rustflags=["-C", "target-cpu=haswell"]' >&2
  fi
  build_s=$(($(date +%s) - start))
  for fn in "${functions[@]}"; do
    bin="$CARGO_TARGET_DIR/lambda/$fn/bootstrap"
    size=$(stat -c %s "$bin")
    # What Lambda downloads is the zipped binary: its deflated size, roughly.
    zipped=$(gzip -6 -c "$bin" | wc -c)
    # shellcheck disable=SC2046
    read -r median min max < <(measure_init "$bin" "$runs" $(fn_env "$fn"))
    results+=("$(printf '%-15s %-10s %10d %8.2f %8.2f %9s %9s %9s %8s' "$name" "$fn" "$size" \
      "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')" \
      "$(awk -v s="$zipped" 'BEGIN { print s / 1048576 }')" "$median" "$min" "$max" "$build_s")")
  done
done

printf '%-15s %-10s %10s %8s %8s %9s %9s %9s %8s\n' candidate function bytes MiB gz-MiB \
  "init-ms" "min-ms" "max-ms" "build-s"
printf '%s\n' "${results[@]}"
