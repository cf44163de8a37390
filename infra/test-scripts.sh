#!/usr/bin/env bash
# Offline tests of the infra/ scripts and of samconfig.toml. A fake `aws` first on PATH records
# every call (its arguments, its stdin, and a copy and the mode of each file:// argument) and
# answers like the AWS CLI would; nothing reaches AWS. Exits non-zero when a check fails.
# Usage: infra/test-scripts.sh
# The checks handed to `expect ... eval '...'` are single-quoted on purpose: eval expands them.
# shellcheck disable=SC2016
set -euo pipefail

infra="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$infra/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/infra-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
skipped=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() {
  failed=$((failed + 1))
  echo "not ok - $1"
  if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/#   /'; fi
}
skip() { skipped=$((skipped + 1)); echo "skip - $1"; }

# ------------------------------------------------------------------ the fake AWS CLI
mkdir -p "$work/bin"
cat >"$work/bin/aws" <<'FAKE'
#!/usr/bin/env bash
# Fake AWS CLI for infra/test-scripts.sh.
set -euo pipefail
dir=${FAKE_AWS_DIR:?}
n=$(($(cat "$dir/count" 2>/dev/null || echo 0) + 1))
echo "$n" >"$dir/count"
printf '%s\n' "$*" >>"$dir/calls"
printf '%s|%s|%s\n' "${AWS_REGION:-}" "${AWS_DEFAULT_REGION:-}" "${AWS_PROFILE:-}" >>"$dir/env"
cat >"$dir/stdin.$n"
prev=""
for arg in "$@"; do
  if [ "$prev" = --body ]; then
    printf '%s\n' "$arg" >>"$dir/body-paths"
    cp "$arg" "$dir/body.$n"
  fi
  prev=$arg
  case "$arg" in
    file://*)
      path=${arg#file://}
      printf '%s\n' "$path" >>"$dir/file-paths"
      cp "$path" "$dir/file.$n"
      stat -c %a "$path" 2>/dev/null >"$dir/mode.$n" || stat -f %Lp "$path" >"$dir/mode.$n"
      ;;
  esac
done
case "$1 $2" in
  "cloudformation describe-stacks")
    if [ -n "${FAKE_NO_STACK:-}" ]; then
      echo "An error occurred (ValidationError) when calling the DescribeStacks operation: Stack does not exist" >&2
      exit 254
    fi
    case "$*" in
      *"'SecretArn'"*) echo "${FAKE_SECRET_ARN:-None}" ;;
      *"'WebhookUrl'"*) echo "${FAKE_WEBHOOK_URL:-None}" ;;
      *"'KnowledgeBucketName'"*) echo "${FAKE_KNOWLEDGE_BUCKET:-None}" ;;
      # A parameter's value; None when the stack does not have the parameter.
      *"'KnowledgeUri'"*) echo "${FAKE_KNOWLEDGE_URI-None}" ;;
      *"'ToolsUri'"*) echo "${FAKE_TOOLS_URI-None}" ;;
      *"'KnowledgeMaxTokens'"*) echo "${FAKE_KNOWLEDGE_MAX_TOKENS:-8000}" ;;
      *) echo None ;;
    esac
    ;;
  "secretsmanager get-secret-value")
    cat "$dir/secret-value.json"
    ;;
  "secretsmanager put-secret-value")
    echo "fake-version-2"
    ;;
  "sesv2 create-email-identity")
    case "$*" in
      *"${FAKE_SES_EXISTING:-no-such-identity}"*)
        echo "An error occurred (AlreadyExistsException) when calling the CreateEmailIdentity operation: exists" >&2
        exit 254
        ;;
      *@*) echo None ;;
      *) printf 'tok1\ttok2\ttok3\n' ;;
    esac
    ;;
  "sesv2 get-email-identity") echo True ;;
  "s3api put-object") echo '"9b2cf535f27731c974343645a3985328"' ;;
  "s3api head-object")
    if [ -n "${FAKE_HEAD_DENIED:-}" ]; then
      echo "An error occurred (403) when calling the HeadObject operation: Forbidden" >&2
      exit 254
    fi
    printf '%s\t%s\t%s\t%s\n' 1234 '"9b2cf535f27731c974343645a3985328"' 2026-03-01T10:20:30+00:00 "${FAKE_HEAD_TYPE:-text/markdown; charset=utf-8}"
    ;;
  "sesv2 get-account") echo False ;;
  *)
    echo "fake aws: unexpected call: $*" >&2
    exit 99
    ;;
esac
FAKE
chmod +x "$work/bin/aws"

export PATH="$work/bin:$PATH"
# Belt and braces: were the real CLI ever reached, it would find no credentials or endpoint.
export AWS_ACCESS_KEY_ID=fake AWS_SECRET_ACCESS_KEY=fake AWS_ENDPOINT_URL=http://127.0.0.1:9
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_REGION AWS_DEFAULT_REGION
unset META_APP_SECRET META_ACCESS_TOKEN LLM_API_KEY META_VERIFY_TOKEN META_APP_SECRET_PREVIOUS TRANSCRIPTION_API_KEY

# Obviously fake values, distinct enough to be searched for in every output.
app_secret="fake-app-secret-7f3a"
access_token="fake-access-token-91bc"
llm_key="fake-llm-key-55d2"
verify_token="fake-verify-token-c0de"
previous_secret="fake-previous-secret-e4e4"
transcription_key="fake-transcription-key-3a9f"
generated_token="generatedVerifyToken0123456789ab"
all_values=("$app_secret" "$access_token" "$llm_key" "$verify_token" "$previous_secret" "$transcription_key")

# reset [SECRET_JSON]: a fresh fake state; the secret's current value defaults to what the
# template creates.
reset() {
  export FAKE_AWS_DIR="$work/aws"
  rm -rf "$FAKE_AWS_DIR"
  mkdir -p "$FAKE_AWS_DIR"
  : >"$FAKE_AWS_DIR/calls"
  local value=${1:-"{\"META_APP_SECRET\":\"REPLACE_ME\",\"META_ACCESS_TOKEN\":\"REPLACE_ME\",\"LLM_API_KEY\":\"REPLACE_ME\",\"META_VERIFY_TOKEN\":\"$generated_token\"}"}
  # What `--query SecretString --output json` prints: the value as a JSON string literal.
  python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$value" >"$FAKE_AWS_DIR/secret-value.json"
  export FAKE_SECRET_ARN="arn:aws:secretsmanager:us-east-1:123456789012:secret:whatsapp-assistant-dev/app-AbCdEf"
  export FAKE_WEBHOOK_URL="https://abc123.execute-api.us-east-1.amazonaws.com/webhook"
  export FAKE_KNOWLEDGE_BUCKET="whatsapp-assistant-dev-knowledgebucket-1a2b3c4d5e6f"
  unset FAKE_NO_STACK FAKE_SES_EXISTING FAKE_KNOWLEDGE_URI FAKE_KNOWLEDGE_MAX_TOKENS FAKE_HEAD_DENIED
  unset FAKE_TOOLS_URI FAKE_HEAD_TYPE
}

# run CMD...: runs with no stdin; leaves out, err and status.
run() {
  set +e
  "$@" >"$work/out" 2>"$work/err" </dev/null
  status=$?
  set -e
  out=$(cat "$work/out")
  err=$(cat "$work/err")
}

calls() { cat "$FAKE_AWS_DIR/calls"; }
ncalls() { wc -l <"$FAKE_AWS_DIR/calls" | tr -d ' '; }

# written KEY: a key of the value put by the last put-secret-value call.
written() {
  local n
  n=$(cat "$FAKE_AWS_DIR/count")
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], "<absent>"))' \
    "$FAKE_AWS_DIR/file.$n" "$1" 2>/dev/null || echo "<no value written>"
}

# leaks: prints every fake value found in the outputs, the recorded calls and their stdin.
leaks() {
  local value
  for value in "${all_values[@]}"; do
    if grep -rqF -- "$value" "$work/out" "$work/err" "$FAKE_AWS_DIR/calls" "$FAKE_AWS_DIR"/stdin.* 2>/dev/null; then
      echo "$value"
    fi
  done
}

expect() { # expect DESCRIPTION CONDITION...
  local what=$1
  shift
  if "$@"; then ok "$what"; else not_ok "$what" "status=$status
stdout: $out
stderr: $err"; fi
}
contains() { case "$1" in *"$2"*) return 0 ;; *) return 1 ;; esac }

put=("$infra/put-secret.sh")
show=("$infra/show-webhook-setup.sh")
ses=("$infra/verify-ses-sender.sh")
knowledge=("$infra/knowledge.sh")

# ------------------------------------------------------------------ static checks
for script in "$infra"/*.sh; do
  if bash -n "$script"; then ok "bash -n $(basename "$script")"; else not_ok "bash -n $(basename "$script")"; fi
done
if command -v shellcheck >/dev/null 2>&1; then
  if sc=$(shellcheck -x "$infra"/*.sh 2>&1); then ok "shellcheck infra/*.sh"; else not_ok "shellcheck infra/*.sh" "$sc"; fi
else
  skip "shellcheck infra/*.sh (shellcheck is not installed)"
fi
for script in put-secret.sh show-webhook-setup.sh verify-ses-sender.sh knowledge.sh; do
  reset
  run "$infra/$script" --help
  expect "$script --help exits 0 and calls nothing" test "$status" = 0 -a "$(ncalls)" = 0 -a -n "$out"
done

# ------------------------------------------------------------------ put-secret.sh: refusals
reset
run "${put[@]}"
expect "put-secret: no variables -> fails" test "$status" != 0
expect "put-secret: names all three missing variables" \
  eval 'contains "$err" META_APP_SECRET && contains "$err" META_ACCESS_TOKEN && contains "$err" LLM_API_KEY'
expect "put-secret: missing variables -> no AWS call" test "$(ncalls)" = 0

reset
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token run "${put[@]}"
expect "put-secret: one missing -> fails, naming it only" \
  eval 'test "$status" != 0 && contains "$err" LLM_API_KEY && ! contains "$err" META_ACCESS_TOKEN'
expect "put-secret: the error shows no value" test -z "$(leaks)"
expect "put-secret: one missing -> no AWS call" test "$(ncalls)" = 0

reset
META_APP_SECRET=REPLACE_ME META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key run "${put[@]}"
expect "put-secret: the placeholder as a value is refused" \
  eval 'test "$status" != 0 && contains "$err" "META_APP_SECRET is still the placeholder"'

reset
META_APP_SECRET="$app_secret " META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key run "${put[@]}"
expect "put-secret: trailing whitespace is refused without showing the value" \
  eval 'test "$status" != 0 && contains "$err" "META_APP_SECRET starts or ends with whitespace" && test -z "$(leaks)"'

reset
META_APP_SECRET="" META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key run "${put[@]}"
expect "put-secret: an empty META_APP_SECRET is refused" eval 'test "$status" != 0 && contains "$err" "META_APP_SECRET is empty"'

reset
run "${put[@]}" --only-given
expect "put-secret: --only-given with nothing set fails" test "$status" != 0 -a "$(ncalls)" = 0

reset
META_APP_SECRET_PREVIOUS=$previous_secret run "${put[@]}" --only-given --remove-previous
expect "put-secret: --remove-previous with META_APP_SECRET_PREVIOUS set is refused" test "$status" != 0 -a "$(ncalls)" = 0

reset
run "${put[@]}" --bogus
expect "put-secret: an unknown option fails" eval 'test "$status" != 0 && contains "$err" "unknown argument"'

# ------------------------------------------------------------------ put-secret.sh: dry run
reset
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key \
  META_VERIFY_TOKEN=$verify_token run "${put[@]}" --dry-run
expect "put-secret --dry-run: exits 0" test "$status" = 0
expect "put-secret --dry-run: calls nothing" test "$(ncalls)" = 0
expect "put-secret --dry-run: lists the key names" \
  eval 'contains "$out" "Would set: META_APP_SECRET META_ACCESS_TOKEN LLM_API_KEY META_VERIFY_TOKEN"'
expect "put-secret --dry-run: names the dev stack from samconfig.toml" \
  eval 'contains "$out" "stack whatsapp-assistant-dev, region us-east-1"'
expect "put-secret --dry-run: prints no value" test -z "$(leaks)"

reset
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key \
  run "${put[@]}" --dry-run --config-env prod
expect "put-secret --dry-run --config-env prod: names the prod stack" \
  eval 'test "$status" = 0 && contains "$out" "stack whatsapp-assistant-prod"'

reset
LLM_API_KEY=$llm_key run "${put[@]}" --dry-run --only-given --secret-id my/secret --remove-previous
expect "put-secret --dry-run --only-given: one key, an explicit secret, a removal" \
  eval 'test "$status" = 0 && contains "$out" "Would set: LLM_API_KEY" && contains "$out" "secret my/secret" && contains "$out" "Would remove: META_APP_SECRET_PREVIOUS"'

# ------------------------------------------------------------------ put-secret.sh: real run
reset
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key run "${put[@]}"
expect "put-secret: exits 0" test "$status" = 0
expect "put-secret: finds the secret through the stack output SecretArn" \
  eval 'calls | grep -q "^cloudformation describe-stacks --stack-name whatsapp-assistant-dev .*SecretArn"'
expect "put-secret: reads the current value, then writes the new one from a file" \
  eval 'calls | sed -n 2p | grep -q "^secretsmanager get-secret-value --secret-id $FAKE_SECRET_ARN" &&
        calls | sed -n 3p | grep -q "^secretsmanager put-secret-value --secret-id $FAKE_SECRET_ARN --secret-string file://"'
expect "put-secret: the region of samconfig.toml reaches the AWS CLI" \
  eval 'test "$(sort -u "$FAKE_AWS_DIR/env")" = "us-east-1|us-east-1|"'
expect "put-secret: writes the three values" \
  eval 'test "$(written META_APP_SECRET)" = "$app_secret" && test "$(written META_ACCESS_TOKEN)" = "$access_token" && test "$(written LLM_API_KEY)" = "$llm_key"'
expect "put-secret: keeps the generated verify token" test "$(written META_VERIFY_TOKEN)" = "$generated_token"
expect "put-secret: no value on any command line, in any output or on stdin" test -z "$(leaks)"
expect "put-secret: the value file had mode 600" test "$(cat "$FAKE_AWS_DIR/mode.3")" = 600
value_file=$(cat "$FAKE_AWS_DIR/file-paths" 2>/dev/null || echo "(no file:// argument)")
expect "put-secret: the value file and its folder are removed on exit" \
  test ! -e "$value_file" -a ! -e "$(dirname "$value_file")"
expect "put-secret: reports the key names and the version" \
  eval 'contains "$out" "set: META_APP_SECRET META_ACCESS_TOKEN LLM_API_KEY" && contains "$out" fake-version-2'

reset
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key \
  META_VERIFY_TOKEN=$verify_token META_APP_SECRET_PREVIOUS=$previous_secret \
  run "${put[@]}" --secret-id my/secret
expect "put-secret --secret-id: no stack lookup" \
  eval 'test "$status" = 0 && ! calls | grep -q cloudformation && calls | grep -q "put-secret-value --secret-id my/secret "'
expect "put-secret: a given verify token and previous app secret are written" \
  eval 'test "$(written META_VERIFY_TOKEN)" = "$verify_token" && test "$(written META_APP_SECRET_PREVIOUS)" = "$previous_secret"'
expect "put-secret: optional values do not leak either" test -z "$(leaks)"

reset '{"META_APP_SECRET":"old","META_ACCESS_TOKEN":"tok","LLM_API_KEY":"key","META_VERIFY_TOKEN":"vt","META_APP_SECRET_PREVIOUS":"older","EXTRA":"kept"}'
LLM_API_KEY=$llm_key run "${put[@]}" --only-given --remove-previous
expect "put-secret --only-given --remove-previous: changes one key, drops the old app secret, keeps the rest" \
  eval 'test "$status" = 0 && test "$(written LLM_API_KEY)" = "$llm_key" && test "$(written META_APP_SECRET_PREVIOUS)" = "<absent>" &&
        test "$(written META_APP_SECRET)" = old && test "$(written EXTRA)" = kept && test "$(written META_VERIFY_TOKEN)" = vt'

reset '{"META_APP_SECRET":"'"$previous_secret"'","META_ACCESS_TOKEN":"tok","LLM_API_KEY":"key","META_VERIFY_TOKEN":"vt"}'
META_APP_SECRET=$app_secret run "${put[@]}" --only-given --rotate-app-secret
expect "put-secret --rotate-app-secret: the current app secret becomes META_APP_SECRET_PREVIOUS" \
  eval 'test "$status" = 0 && test "$(written META_APP_SECRET)" = "$app_secret" && test "$(written META_APP_SECRET_PREVIOUS)" = "$previous_secret" && test -z "$(leaks)"'

reset '{"META_APP_SECRET":"'"$app_secret"'","META_APP_SECRET_PREVIOUS":"'"$previous_secret"'"}'
META_APP_SECRET=$app_secret run "${put[@]}" --only-given --rotate-app-secret
expect "put-secret --rotate-app-secret twice: the old app secret is not overwritten by the new one" \
  eval 'test "$status" = 0 && test "$(written META_APP_SECRET_PREVIOUS)" = "$previous_secret" && contains "$err" "unchanged"'

reset
LLM_API_KEY=$llm_key run "${put[@]}" --only-given --rotate-app-secret
expect "put-secret --rotate-app-secret without META_APP_SECRET is refused" test "$status" != 0 -a "$(ncalls)" = 0

reset
LLM_API_KEY=$llm_key run "${put[@]}" --only-given
expect "put-secret: warns about keys still holding the placeholder (names only)" \
  eval 'test "$status" = 0 && contains "$err" "still set to the placeholder REPLACE_ME: META_ACCESS_TOKEN META_APP_SECRET"'

reset '["not", "an", "object"]'
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key run "${put[@]}"
expect "put-secret: a current value that is not a JSON object -> fails, writes nothing" \
  eval 'test "$status" != 0 && contains "$err" "not a JSON object" && ! calls | grep -q put-secret-value'

reset
export FAKE_NO_STACK=1
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key run "${put[@]}"
expect "put-secret: a missing stack -> a clear error, nothing written" \
  eval 'test "$status" != 0 && contains "$err" "cannot read the outputs of stack whatsapp-assistant-dev" && ! calls | grep -q secretsmanager'

reset
export FAKE_SECRET_ARN=None
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key run "${put[@]}"
expect "put-secret: a stack without the output SecretArn -> a clear error" \
  eval 'test "$status" != 0 && contains "$err" "has no output SecretArn"'

reset
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key \
  run bash -x "${put[@]}"
expect "put-secret under bash -x: still traces no value" eval 'test "$status" = 0 && test -z "$(leaks)"'

# ------------------------------------------------------------------ put-secret.sh: --no-llm-key
reset
run "${put[@]}" --help
expect "put-secret --help: --no-llm-key is for LlmProvider=bedrock" \
  eval 'contains "$out" "--no-llm-key" && contains "$out" "LlmProvider=bedrock"'

reset
run "${put[@]}" --no-llm-key
expect "put-secret --no-llm-key: names the two missing Meta values, not LLM_API_KEY" \
  eval 'test "$status" != 0 && contains "$err" META_APP_SECRET && contains "$err" META_ACCESS_TOKEN && ! contains "$err" LLM_API_KEY && test "$(ncalls)" = 0'

reset
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token LLM_API_KEY=$llm_key run "${put[@]}" --no-llm-key
expect "put-secret --no-llm-key with LLM_API_KEY set is refused, without showing it" \
  eval 'test "$status" != 0 && contains "$err" "contradict" && test "$(ncalls)" = 0 && test -z "$(leaks)"'

reset
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token run "${put[@]}" --no-llm-key --dry-run
expect "put-secret --no-llm-key --dry-run: the two Meta keys, and the placeholder's removal" \
  eval 'test "$status" = 0 && test "$(ncalls)" = 0 && contains "$out" "Would set: META_APP_SECRET META_ACCESS_TOKEN" &&
        contains "$out" "Would remove: LLM_API_KEY, if it still holds the placeholder REPLACE_ME"'

reset
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token run "${put[@]}" --no-llm-key
expect "put-secret --no-llm-key: writes the two Meta values and keeps the verify token" \
  eval 'test "$status" = 0 && test "$(written META_APP_SECRET)" = "$app_secret" && test "$(written META_ACCESS_TOKEN)" = "$access_token" &&
        test "$(written META_VERIFY_TOKEN)" = "$generated_token"'
expect "put-secret --no-llm-key: removes the placeholder LLM_API_KEY and says so" \
  eval 'test "$(written LLM_API_KEY)" = "<absent>" && contains "$out" "removed: LLM_API_KEY" && ! contains "$err" "still set to the placeholder"'
expect "put-secret --no-llm-key: warns that voice notes have no transcription key" \
  eval 'contains "$err" "no TRANSCRIPTION_API_KEY"'
expect "put-secret --no-llm-key: no value leaks" test -z "$(leaks)"

reset
META_APP_SECRET=$app_secret META_ACCESS_TOKEN=$access_token TRANSCRIPTION_API_KEY=$transcription_key \
  run "${put[@]}" --no-llm-key
expect "put-secret --no-llm-key: a TRANSCRIPTION_API_KEY is written, without a warning or a leak" \
  eval 'test "$status" = 0 && test "$(written TRANSCRIPTION_API_KEY)" = "$transcription_key" && ! contains "$err" "no TRANSCRIPTION_API_KEY" && test -z "$(leaks)"'

reset '{"META_APP_SECRET":"old","META_ACCESS_TOKEN":"tok","LLM_API_KEY":"'"$llm_key"'","META_VERIFY_TOKEN":"vt"}'
META_ACCESS_TOKEN=$access_token run "${put[@]}" --only-given --no-llm-key
expect "put-secret --no-llm-key: a real LLM_API_KEY (say, for transcription) is kept" \
  eval 'test "$status" = 0 && test "$(written LLM_API_KEY)" = "$llm_key" && ! contains "$out" "removed: LLM_API_KEY" && ! contains "$err" "no TRANSCRIPTION_API_KEY"'

reset
run "${put[@]}" --only-given --no-llm-key
expect "put-secret --only-given --no-llm-key: only removes the placeholder LLM_API_KEY" \
  eval 'test "$status" = 0 && test "$(written LLM_API_KEY)" = "<absent>" && test "$(written META_APP_SECRET)" = REPLACE_ME'

reset
SHOP_API_KEY=shop-key-not-to-be-seen run "${put[@]}" --only-given --tool-key SHOP_API_KEY
expect "put-secret --tool-key: sets that key from its variable, keeps the others, shows no value" \
  eval 'test "$status" = 0 && test "$(written SHOP_API_KEY)" = shop-key-not-to-be-seen && test "$(written META_APP_SECRET)" = REPLACE_ME &&
        ! grep -rqF shop-key-not-to-be-seen "$work/out" "$work/err" "$FAKE_AWS_DIR/calls"'

reset
run "${put[@]}" --only-given --tool-key SHOP_API_KEY
expect "put-secret --tool-key: an unset variable is refused before any call" \
  eval 'test "$status" != 0 && contains "$err" "export SHOP_API_KEY first" && test "$(ncalls)" = 0'
for bad in shop_key 9KEY "A B" LLM_API_KEY; do
  reset
  SHOP_API_KEY=x run "${put[@]}" --only-given --tool-key "$bad"
  expect "put-secret --tool-key '$bad': refused before any call" eval 'test "$status" != 0 && test "$(ncalls)" = 0'
done

reset
META_APP_SECRET_SHOP2=second-app-secret-not-to-be-seen META_ACCESS_TOKEN_106540352242922=second-token-not-to-be-seen \
  run "${put[@]}" --only-given --app-secret-for SHOP2 --token-for 106540352242922
expect "put-secret --app-secret-for/--token-for: set META_APP_SECRET_<APP> and META_ACCESS_TOKEN_<id>, keep the others, show no value" \
  eval 'test "$status" = 0 && test "$(written META_APP_SECRET_SHOP2)" = second-app-secret-not-to-be-seen &&
        test "$(written META_ACCESS_TOKEN_106540352242922)" = second-token-not-to-be-seen && test "$(written META_APP_SECRET)" = REPLACE_ME &&
        contains "$out" "META_APP_SECRET_SHOP2 META_ACCESS_TOKEN_106540352242922" &&
        ! grep -rqF -e second-app-secret-not-to-be-seen -e second-token-not-to-be-seen "$work/out" "$work/err" "$FAKE_AWS_DIR/calls" "$FAKE_AWS_DIR"/stdin.*'

reset
META_ACCESS_TOKEN_106540352242922=x run "${put[@]}" --dry-run --only-given --token-for 106540352242922
expect "put-secret --token-for --dry-run: names the key, calls nothing" \
  eval 'test "$status" = 0 && contains "$out" "Would set: META_ACCESS_TOKEN_106540352242922" && test "$(ncalls)" = 0'

reset
run "${put[@]}" --only-given --app-secret-for SHOP2
expect "put-secret --app-secret-for: an unset variable is refused before any call" \
  eval 'test "$status" != 0 && contains "$err" "export META_APP_SECRET_SHOP2 first" && test "$(ncalls)" = 0'
reset
META_ACCESS_TOKEN_123=" padded " run "${put[@]}" --only-given --token-for 123
expect "put-secret --token-for: a value with whitespace is refused without showing it" \
  eval 'test "$status" != 0 && contains "$err" "META_ACCESS_TOKEN_123 starts or ends with whitespace" && ! contains "$err" padded && test "$(ncalls)" = 0'
for bad in "--app-secret-for shop2" "--app-secret-for PREVIOUS" "--app-secret-for A-B" "--app-secret-for" \
  "--token-for 12a" "--token-for +15551234567" "--token-for"; do
  reset
  # shellcheck disable=SC2086 # split on purpose: the option and its value
  META_APP_SECRET_shop2=x META_ACCESS_TOKEN_12a=x run "${put[@]}" --only-given $bad
  expect "put-secret $bad: refused before any call" eval 'test "$status" != 0 && test "$(ncalls)" = 0'
done

# ------------------------------------------------------------------ show-webhook-setup.sh
reset
run "${show[@]}"
expect "show-webhook-setup: exits 0" test "$status" = 0
expect "show-webhook-setup: prints the callback URL and the verify token" \
  eval 'contains "$out" "Callback URL:  $FAKE_WEBHOOK_URL" && contains "$out" "Verify token:  $generated_token"'
expect "show-webhook-setup: says to subscribe to messages" eval 'contains "$out" "subscribe to: messages"'
expect "show-webhook-setup: names API Gateway as the front door" \
  eval 'contains "$out" "served by API Gateway (WebhookFrontDoor=ApiGateway)"'

reset
export FAKE_WEBHOOK_URL="https://x7kq2m4pz5vbn3rj6ltc8dyh0wfs1aeu.lambda-url.us-east-1.on.aws/webhook"
run "${show[@]}"
expect "show-webhook-setup: with WebhookFrontDoor=FunctionUrl, prints the function URL's callback" \
  eval 'test "$status" = 0 && contains "$out" "Callback URL:  $FAKE_WEBHOOK_URL" && contains "$out" "served by a Lambda function URL (WebhookFrontDoor=FunctionUrl)"'

reset '{"META_APP_SECRET":"'"$app_secret"'","META_ACCESS_TOKEN":"'"$access_token"'","LLM_API_KEY":"'"$llm_key"'","META_VERIFY_TOKEN":"'"$verify_token"'"}'
run "${show[@]}" --config-env prod
expect "show-webhook-setup: prints the verify token and no other value" \
  eval 'test "$status" = 0 && contains "$out" "$verify_token" && test "$(leaks)" = "$verify_token"'
expect "show-webhook-setup --config-env prod: asks about the prod stack" \
  eval 'calls | grep -q "describe-stacks --stack-name whatsapp-assistant-prod "'

reset '{"META_APP_SECRET":"x"}'
run "${show[@]}"
expect "show-webhook-setup: a secret without META_VERIFY_TOKEN -> a clear error" \
  eval 'test "$status" != 0 && contains "$err" "has no META_VERIFY_TOKEN"'

# ------------------------------------------------------------------ verify-ses-sender.sh
reset
run "${ses[@]}"
expect "verify-ses-sender: refuses samconfig's example.com placeholder" \
  eval 'test "$status" != 0 && contains "$err" "alerts@example.com is a placeholder" && test "$(ncalls)" = 0'

reset
run "${ses[@]}" alerts@acme.test
expect "verify-ses-sender: starts the verification of the address" \
  eval 'test "$status" = 0 && calls | grep -q "^sesv2 create-email-identity --email-identity alerts@acme.test "'
expect "verify-ses-sender: explains the sandbox" \
  eval 'contains "$out" "in the SES sandbox" && contains "$out" "verify every recipient" && contains "$out" "production access"'

reset
run "${ses[@]}" acme.test
expect "verify-ses-sender: a domain gets its DKIM records" \
  eval 'test "$status" = 0 && contains "$out" "tok1._domainkey.acme.test  CNAME  tok1.dkim.amazonses.com"'

reset
export FAKE_SES_EXISTING=old@acme.test
run "${ses[@]}" old@acme.test
expect "verify-ses-sender: an existing identity shows its status" \
  eval 'test "$status" = 0 && contains "$out" "old@acme.test: already created earlier: verified"'

reset
run "${ses[@]}" --status alerts@acme.test
expect "verify-ses-sender --status: creates nothing" \
  eval 'test "$status" = 0 && ! calls | grep -q create-email-identity && contains "$out" "alerts@acme.test: verified"'

reset
cat >"$work/samconfig.toml" <<'EOF'
version = 0.1
[default.deploy.parameters]
stack_name = "guided-stack"
region = "eu-west-1"
parameter_overrides = "Stage=\"dev\" AlertEmail=\"a@acme.test, b@acme.test\" AlertFromEmail=\"bot@acme.test\""
EOF
run "${ses[@]}" --recipients --config-file "$work/samconfig.toml"
expect "verify-ses-sender: reads the addresses of a samconfig written by sam deploy --guided" \
  eval 'test "$status" = 0 && calls | grep -q "identity bot@acme.test " && calls | grep -q "identity a@acme.test " && calls | grep -q "identity b@acme.test " && contains "$out" eu-west-1'

reset
run "${ses[@]}" "not an address"
expect "verify-ses-sender: rejects what is neither an address nor a domain" test "$status" != 0 -a "$(ncalls)" = 0

# ------------------------------------------------------------------ knowledge.sh
docs="$work/docs"
mkdir -p "$docs"
# A marker that must never leave the document: not in any output, nor on a command line.
doc_marker="FAQ-BODY-MARKER-b7e1"
printf '# Opening hours\n\nMonday to Friday, 9 to 18. %s\n\nCafé open on Sundays.\n' "$doc_marker" >"$docs/FAQ.md"
printf 'Returns within 30 days. %s\n' "$doc_marker" >"$docs/policies.txt"
: >"$docs/empty.md"
printf ' \n\t\n' >"$docs/blank.md"
printf 'Caf\xe9 %s\n' "$doc_marker" >"$docs/latin1.md"
printf '\xff\xfeH\x00i\x00\n\x00' >"$docs/utf16.md"
cp "$docs/FAQ.md" "$docs/My FAQ (v2).md"
bucket=whatsapp-assistant-dev-knowledgebucket-1a2b3c4d5e6f
doc_leaks() { grep -rlF -- "$doc_marker" "$work/out" "$work/err" "$FAKE_AWS_DIR/calls" 2>/dev/null || true; }

reset
run "${knowledge[@]}" put "$docs/FAQ.md"
expect "knowledge put: exits 0" test "$status" = 0
expect "knowledge put: reads the stack's bucket, budget and current KnowledgeUri" \
  eval 'calls | grep -q "describe-stacks --stack-name whatsapp-assistant-dev .*KnowledgeBucketName" &&
        calls | grep -q "KnowledgeMaxTokens" && calls | grep -q "ParameterKey==.KnowledgeUri."'
expect "knowledge put: uploads to the output bucket as knowledge/FAQ.md, Markdown in UTF-8" \
  eval 'calls | grep -qxF "s3api put-object --bucket $bucket --key knowledge/FAQ.md --body $docs/FAQ.md --content-type text/markdown; charset=utf-8 --query ETag --output text"'
expect "knowledge put: the uploaded body is the file" \
  eval 'cmp -s "$docs/FAQ.md" "$FAKE_AWS_DIR/body.$(cat "$FAKE_AWS_DIR/count")"'
expect "knowledge put: prints the KnowledgeUri, the samconfig.toml line and the deploy commands" \
  eval 'contains "$out" "\"KnowledgeUri=s3://$bucket/knowledge/FAQ.md\"," && contains "$out" "sam build && sam deploy" &&
        contains "$out" "sam deploy --parameter-overrides Stage=dev AlertEmail=oncall@example.com AlertFromEmail=alerts@example.com LlmProvider=openai LogRetentionDays=14 WebhookFrontDoor=ApiGateway KnowledgeUri=s3://$bucket/knowledge/FAQ.md"'
expect "knowledge put: the ETag is shown, no budget warning" eval 'contains "$out" 9b2cf535f27731c974343645a3985328 && ! contains "$err" budget'
expect "knowledge put: prints nothing of the document" test -z "$(doc_leaks)"

reset
export FAKE_KNOWLEDGE_URI="s3://$bucket/knowledge/FAQ.md"
run "${knowledge[@]}" put "$docs/FAQ.md"
expect "knowledge put: the same URI as the stack's -> no deploy needed, the refresh explained" \
  eval 'test "$status" = 0 && contains "$out" "no deploy is needed" && contains "$out" KNOWLEDGE_REFRESH_SECONDS && ! contains "$out" "sam deploy"'

reset
export FAKE_KNOWLEDGE_URI="s3://$bucket/knowledge/old.md"
run "${knowledge[@]}" put "$docs/policies.txt" --key docs/policies-2026.txt --config-env prod
expect "knowledge put --key, .txt, prod: text/plain under that key, the prod stack and its deploy" \
  eval 'test "$status" = 0 && calls | grep -q "describe-stacks --stack-name whatsapp-assistant-prod " &&
        calls | grep -qF "put-object --bucket $bucket --key docs/policies-2026.txt --body $docs/policies.txt --content-type text/plain; charset=utf-8 " &&
        contains "$out" "uses KnowledgeUri=s3://$bucket/knowledge/old.md now" &&
        contains "$out" "sam deploy --config-env prod --parameter-overrides Stage=prod" && contains "$out" "[prod.deploy.parameters]"'

reset
run "${knowledge[@]}" put "$docs/My FAQ (v2).md"
expect "knowledge put: a file name with spaces gets a key without them" \
  eval 'test "$status" = 0 && calls | grep -qF -- "--key knowledge/My-FAQ--v2-.md --body $docs/My FAQ (v2).md "'

reset
export FAKE_KNOWLEDGE_MAX_TOKENS=100
head -c 1000 /dev/zero | tr '\0' 'a' >"$docs/long.md"
run "${knowledge[@]}" put "$docs/long.md"
expect "knowledge put: over KnowledgeMaxTokens -> a warning naming knowledge_truncated, still uploaded" \
  eval 'test "$status" = 0 && contains "$err" "1000 bytes" && contains "$err" "KnowledgeMaxTokens=100 (about 400 bytes)" &&
        contains "$err" knowledge_truncated && calls | grep -q "s3api put-object"'

reset
cat >"$work/samconfig.toml" <<'TOML'
version = 0.1
[default.deploy.parameters]
stack_name = "guided-stack"
region = "eu-west-1"
parameter_overrides = "Stage=\"dev\" AlertEmail=\"a@acme.test, b@acme.test\" KnowledgeUri=\"s3://elsewhere/faq.md\""
TOML
run "${knowledge[@]}" put "$docs/FAQ.md" --config-file "$work/samconfig.toml"
expect "knowledge put: a guided samconfig's KnowledgeUri is to be replaced; its values with spaces stay quoted" \
  eval 'test "$status" = 0 && contains "$out" "replace" && contains "$out" "\"KnowledgeUri=s3://elsewhere/faq.md\"" &&
        contains "$out" "--parameter-overrides Stage=dev '"'"'AlertEmail=\"a@acme.test, b@acme.test\"'"'"' KnowledgeUri=s3://$bucket/" &&
        calls | grep -q "describe-stacks --stack-name guided-stack "'

for case in "a missing file:$docs/nope.md:no such file" "an empty file:$docs/empty.md:empty" \
  "a blank file:$docs/blank.md:empty" "a latin-1 file:$docs/latin1.md:not UTF-8 text" \
  "a UTF-16 file:$docs/utf16.md:UTF-16 text, not UTF-8" "a folder:$docs:not a regular file"; do
  IFS=: read -r what path message <<<"$case"
  reset
  run "${knowledge[@]}" put "$path"
  expect "knowledge put: $what fails ($message) and calls nothing" \
    eval 'test "$status" != 0 && contains "$err" "$message" && test "$(ncalls)" = 0 && test -z "$(doc_leaks)"'
done

reset
run "${knowledge[@]}" put "$docs/FAQ.md" --key 'knowledge/*.md'
expect "knowledge put: a key with a wildcard is refused before any call" \
  eval 'test "$status" != 0 && contains "$err" "--key" && test "$(ncalls)" = 0'
reset
run "${knowledge[@]}" put "$docs/FAQ.md" --key '../FAQ.md'
expect "knowledge put: a key with .. is refused" eval 'test "$status" != 0 && test "$(ncalls)" = 0'
reset
run "${knowledge[@]}" put
expect "knowledge put: no file -> fails, calls nothing" eval 'test "$status" != 0 && contains "$err" "put needs a file" && test "$(ncalls)" = 0'
reset
run "${knowledge[@]}" upload "$docs/FAQ.md"
expect "knowledge: an unknown command fails" eval 'test "$status" != 0 && contains "$err" "unknown command" && test "$(ncalls)" = 0'

reset
run "${knowledge[@]}" put "$docs/FAQ.md" --dry-run
expect "knowledge put --dry-run: exits 0 and calls no put-object" \
  eval 'test "$status" = 0 && ! calls | grep -q put-object && ! calls | grep -qv "^cloudformation describe-stacks "'
expect "knowledge put --dry-run: says what it would upload where, and how to deploy" \
  eval 'contains "$out" "Would upload: $docs/FAQ.md" && contains "$out" "to: s3://$bucket/knowledge/FAQ.md" && contains "$out" "KnowledgeUri=s3://$bucket/knowledge/FAQ.md"'
expect "knowledge put --dry-run: prints nothing of the document" test -z "$(doc_leaks)"

reset
export FAKE_NO_STACK=1
run "${knowledge[@]}" put "$docs/FAQ.md"
expect "knowledge put: a missing stack -> a clear error, nothing uploaded" \
  eval 'test "$status" != 0 && contains "$err" "cannot read the outputs of stack whatsapp-assistant-dev" && ! calls | grep -q s3api'

reset
export FAKE_KNOWLEDGE_URI=""
run "${knowledge[@]}" show
expect "knowledge show: an empty KnowledgeUri -> says there is none, reads no object" \
  eval 'test "$status" = 0 && contains "$out" "no knowledge document (KnowledgeUri is empty)" && ! calls | grep -q s3api'

reset
run "${knowledge[@]}" show
expect "knowledge show: a stack without the parameter -> says there is none" \
  eval 'test "$status" = 0 && contains "$out" "no knowledge document" && ! calls | grep -q s3api'

reset
export FAKE_KNOWLEDGE_URI="s3://shop-docs/faq/2026/FAQ.md"
run "${knowledge[@]}" show
expect "knowledge show: heads the object of the stack's KnowledgeUri, in any bucket" \
  eval 'test "$status" = 0 && calls | grep -q "^s3api head-object --bucket shop-docs --key faq/2026/FAQ.md "'
expect "knowledge show: prints the URI, size, ETag and LastModified" \
  eval 'contains "$out" "KnowledgeUri:  s3://shop-docs/faq/2026/FAQ.md" && contains "$out" "1234 bytes" &&
        contains "$out" "\"9b2cf535f27731c974343645a3985328\"" && contains "$out" "2026-03-01T10:20:30+00:00"'

reset
export FAKE_KNOWLEDGE_URI="s3://shop-docs/faq.md" FAKE_HEAD_DENIED=1
run "${knowledge[@]}" show
expect "knowledge show: an unreadable object -> fails, naming knowledge_unavailable" \
  eval 'test "$status" != 0 && contains "$err" "cannot read s3://shop-docs/faq.md" && contains "$err" knowledge_unavailable'

# ------------------------------------------------------------------ knowledge.sh --tools
tools_dir="$work/tools"
mkdir -p "$tools_dir"
# A literal header value (as a key would be) that must never leave the file: not in any output,
# nor on a command line.
tools_marker="TOOLS-LITERAL-KEY-4d9a"
python3 - "$infra/examples/shop/tools.json" "$tools_dir/shop.json" "$tools_marker" <<'PY'
import json
import sys

src, dst, marker = sys.argv[1:4]
with open(src, encoding="utf-8") as f:
    doc = json.load(f)
doc["tools"][0]["headers"]["X-Literal-Key"] = marker
with open(dst, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=2)
PY
# tools_variant NAME CODE: tools/NAME.json, the shop file changed by the Python statements CODE
# (on `doc` and its list `tools`).
tools_variant() {
  python3 - "$tools_dir/shop.json" "$tools_dir/$1.json" "$2" <<'PY'
import json
import sys

src, dst, code = sys.argv[1:4]
with open(src, encoding="utf-8") as f:
    doc = json.load(f)
tools = doc["tools"]
exec(code)
with open(dst, "w", encoding="utf-8") as f:
    json.dump(doc, f)
PY
}
tools_leaks() { grep -rlF -- "$tools_marker" "$work/out" "$work/err" "$FAKE_AWS_DIR/calls" 2>/dev/null || true; }

reset
run "${knowledge[@]}" --help
expect "knowledge --help: explains --tools and that the processor checks the rest (tools_file_invalid)" \
  eval 'contains "$out" "put [--tools] FILE" && contains "$out" ToolsUri && contains "$out" tools_file_invalid'

reset
export FAKE_KNOWLEDGE_MAX_TOKENS=1
run "${knowledge[@]}" put --tools "$tools_dir/shop.json"
expect "knowledge put --tools: exits 0" test "$status" = 0
expect "knowledge put --tools: uploads to the output bucket as tools/shop.json, application/json" \
  eval 'calls | grep -qxF "s3api put-object --bucket $bucket --key tools/shop.json --body $tools_dir/shop.json --content-type application/json --query ETag --output text"'
expect "knowledge put --tools: the uploaded body is the file" \
  eval 'cmp -s "$tools_dir/shop.json" "$FAKE_AWS_DIR/body.$(cat "$FAKE_AWS_DIR/count")"'
expect "knowledge put --tools: reads ToolsUri, neither KnowledgeUri nor the budget; no budget warning" \
  eval 'calls | grep -q "ParameterKey==.ToolsUri." && ! calls | grep -q KnowledgeUri && ! calls | grep -q KnowledgeMaxTokens &&
        ! contains "$err" budget'
expect "knowledge put --tools: prints the ToolsUri, the samconfig.toml line and the deploy commands" \
  eval 'contains "$out" "uses no tools file now (ToolsUri is empty)" && contains "$out" "\"ToolsUri=s3://$bucket/tools/shop.json\"," &&
        contains "$out" "sam build && sam deploy" &&
        contains "$out" "sam deploy --parameter-overrides Stage=dev AlertEmail=oncall@example.com AlertFromEmail=alerts@example.com LlmProvider=openai LogRetentionDays=14 WebhookFrontDoor=ApiGateway ToolsUri=s3://$bucket/tools/shop.json" &&
        contains "$out" "Later versions of the tools file need no deploy"'
expect "knowledge put --tools: prints nothing of the file (not its literal header value)" test -z "$(tools_leaks)"

reset
export FAKE_TOOLS_URI="s3://$bucket/tools/shop.json"
run "${knowledge[@]}" put "$tools_dir/shop.json" --tools
expect "knowledge put --tools: the same URI as the stack's ToolsUri -> no deploy needed, refresh and tools_file_invalid explained" \
  eval 'test "$status" = 0 && contains "$out" "already uses ToolsUri=s3://$bucket/tools/shop.json" && contains "$out" "no deploy is needed" &&
        contains "$out" KNOWLEDGE_REFRESH_SECONDS && contains "$out" tools_file_invalid && ! contains "$out" "sam deploy" &&
        test -z "$(tools_leaks)"'

reset
export FAKE_KNOWLEDGE_URI="s3://$bucket/tools/shop.json"
run "${knowledge[@]}" put --tools "$tools_dir/shop.json"
expect "knowledge put --tools: compares with ToolsUri, not KnowledgeUri" \
  eval 'test "$status" = 0 && ! contains "$out" "no deploy is needed" && contains "$out" "ToolsUri is empty"'

reset
cat >"$work/samconfig.toml" <<'TOML'
version = 0.1
[default.deploy.parameters]
stack_name = "guided-stack"
region = "eu-west-1"
parameter_overrides = "Stage=\"dev\" KnowledgeUri=\"s3://shop-docs/faq.md\" ToolsUri=\"s3://shop-docs/tools-old.json\""
TOML
run "${knowledge[@]}" put --tools "$tools_dir/shop.json" --config-file "$work/samconfig.toml"
expect "knowledge put --tools: samconfig's ToolsUri is to be replaced; the one-off deploy keeps KnowledgeUri" \
  eval 'test "$status" = 0 && contains "$out" "replace" && contains "$out" "\"ToolsUri=s3://shop-docs/tools-old.json\" with \"ToolsUri=s3://$bucket/tools/shop.json\"" &&
        contains "$out" "--parameter-overrides Stage=dev KnowledgeUri=s3://shop-docs/faq.md ToolsUri=s3://$bucket/tools/shop.json" &&
        calls | grep -q "describe-stacks --stack-name guided-stack "'

reset
{ printf '\xef\xbb\xbf'; cat "$tools_dir/shop.json"; } >"$tools_dir/bom.json"
run "${knowledge[@]}" put --tools "$tools_dir/bom.json" --key tools/v3.json --dry-run
expect "knowledge put --tools --dry-run --key: a byte-order mark is accepted; nothing written; the ToolsUri shown" \
  eval 'test "$status" = 0 && ! calls | grep -qv "^cloudformation describe-stacks " &&
        contains "$out" "Would upload: $tools_dir/bom.json ($(($(wc -c <"$tools_dir/bom.json") - 3)) bytes, application/json)" &&
        contains "$out" "to: s3://$bucket/tools/v3.json" && contains "$out" "ToolsUri=s3://$bucket/tools/v3.json" && test -z "$(tools_leaks)"'

printf '{"tools": [{"name": "order_status", "headers": {"X-Literal-Key": "%s"}' "$tools_marker" >"$tools_dir/not-json.json"
printf 'Caf\xe9 %s\n' "$tools_marker" >"$tools_dir/latin1.json"
tools_variant no-tools 'doc = {}'
tools_variant unknown-key 'doc["version"] = 2'
tools_variant not-a-list 'doc["tools"] = {"order_status": tools[0]}'
tools_variant empty-list 'doc["tools"] = []'
tools_variant too-many 'doc["tools"] = [dict(tools[0], name=f"t{i}") for i in range(33)]'
tools_variant not-an-object 'tools[1] = "search_products"'
tools_variant duplicate 'tools[2]["name"] = "order_status"'
tools_variant bad-name 'tools[1]["name"] = "search products"'
tools_variant long-name 'tools[1]["name"] = "x" * 65'
tools_variant no-name 'del tools[1]["name"]'
tools_variant number-name 'tools[1]["name"] = 7'
tools_variant no-url 'del tools[1]["url"]'
tools_variant no-method-no-effects 'del tools[2]["method"]; del tools[2]["side_effects"]'
for case in "not JSON:not-json:not JSON: Expecting" "not UTF-8:latin1:not UTF-8 text" \
  "no tools:no-tools:no \"tools\" field" "an unknown top-level key:unknown-key:unknown top-level field \`version\`" \
  "tools not a list:not-a-list:\"tools\" is not a list" "an empty list:empty-list:for no tools, deploy with ToolsUri empty" \
  "33 tools:too-many:declares 33 tools; at most 32" "a tool not an object:not-an-object:tool #1: not an object" \
  "duplicate names:duplicate:tool #2 \"order_status\": the name is already used by tool #0" \
  "a name with a space:bad-name:tool #1: name must be" "a 65-character name:long-name:tool #1: name must be" \
  "no name:no-name:tool #1 (unnamed): missing field \`name\`" "a number as name:number-name:tool #1: name must be a string" \
  "a missing url:no-url:tool #1 \"search_products\": missing field \`url\`" \
  "two missing fields:no-method-no-effects:tool #2 \"add_to_cart\": missing fields \`method\`, \`side_effects\`"; do
  IFS=: read -r what name message <<<"$case"
  reset
  run "${knowledge[@]}" put --tools "$tools_dir/$name.json"
  expect "knowledge put --tools: $what is refused ($message) before any call, showing nothing of the file" \
    eval 'test "$status" != 0 && contains "$err" "$message" && contains "$err" "was not uploaded" && test "$(ncalls)" = 0 && test -z "$(tools_leaks)"'
done

reset
run "${knowledge[@]}" put --tools "$docs/FAQ.md"
expect "knowledge put --tools: a Markdown file is not a tools file" \
  eval 'test "$status" != 0 && contains "$err" "not JSON" && test "$(ncalls)" = 0 && test -z "$(doc_leaks)"'

reset
run "${knowledge[@]}" show --tools
expect "knowledge show --tools: no ToolsUri -> says there is none and how to put one, reads no object" \
  eval 'test "$status" = 0 && contains "$out" "no tools file (ToolsUri is empty)" && contains "$out" "infra/knowledge.sh put --tools FILE" &&
        ! calls | grep -q s3api && ! calls | grep -q KnowledgeUri'

reset
export FAKE_TOOLS_URI="s3://shop-docs/tools/v3.json" FAKE_KNOWLEDGE_URI="s3://shop-docs/faq.md" FAKE_HEAD_TYPE=application/json
run "${knowledge[@]}" show --tools
expect "knowledge show --tools: heads the object of the stack's ToolsUri" \
  eval 'test "$status" = 0 && calls | grep -q "^s3api head-object --bucket shop-docs --key tools/v3.json " && ! calls | grep -q "key faq.md"'
expect "knowledge show --tools: prints the ToolsUri, size in bytes (no tokens), ETag, LastModified and type" \
  eval 'contains "$out" "tools file of stack whatsapp-assistant-dev" && contains "$out" "ToolsUri:      s3://shop-docs/tools/v3.json" &&
        contains "$out" "size:          1234 bytes" && ! contains "$out" tokens && ! contains "$err" budget &&
        contains "$out" "2026-03-01T10:20:30+00:00" && contains "$out" "Content-Type:  application/json"'

reset
export FAKE_TOOLS_URI="s3://shop-docs/tools.json" FAKE_HEAD_DENIED=1
run "${knowledge[@]}" show --tools
expect "knowledge show --tools: an unreadable object -> fails, naming tools_unavailable and put --tools" \
  eval 'test "$status" != 0 && contains "$err" "cannot read s3://shop-docs/tools.json" && contains "$err" tools_unavailable &&
        contains "$err" "put --tools FILE"'

# ------------------------------------------------------------------ samconfig.toml and template.yaml
if python3 -c 'import tomllib' 2>/dev/null; then
  if msg=$(python3 - "$root/samconfig.toml" "$root/template.yaml" <<'PY' 2>&1
import re
import sys
import tomllib

config_path, template_path = sys.argv[1:3]
with open(config_path, "rb") as f:
    config = tomllib.load(f)
template = open(template_path, encoding="utf-8").read()

# The template's parameters: two-space-indented names under the top-level Parameters key.
section = re.search(r"^Parameters:\n(.*?)^\S", template, re.S | re.M).group(1)
names = set(re.findall(r"^  (\w+):\s*$", section, re.M))
required = {n for n in names if not re.search(rf"^  {n}:\n(?:    .*\n)*?    Default:", section, re.M)}

problems = []
if config.get("version") != 0.1:
    problems.append("version is not 0.1")
for env, stage, confirm in (("default", "dev", False), ("prod", "prod", True)):
    tables = config.get(env, {})
    deploy = tables.get("deploy", {}).get("parameters", {})
    common = tables.get("global", {}).get("parameters", {})
    build = tables.get("build", {}).get("parameters", {})
    if not common.get("stack_name", "").endswith("-" + stage):
        problems.append(f"{env}: stack_name does not end in -{stage}")
    if not common.get("region"):
        problems.append(f"{env}: no region")
    for key, want in (("capabilities", "CAPABILITY_IAM"), ("resolve_s3", True), ("confirm_changeset", confirm)):
        if deploy.get(key) != want:
            problems.append(f"{env}: deploy {key} is {deploy.get(key)!r}, not {want!r}")
    for key in ("cached", "beta_features"):
        if build.get(key) is not True:
            problems.append(f"{env}: build {key} is not true")
    # Parallel builds race to install the arm64 Rust target on a fresh machine.
    if build.get("parallel") is not False:
        problems.append(f"{env}: build parallel is not false")
    if "LlmModel" in dict(item.split("=", 1) for item in deploy.get("parameter_overrides", [])):
        problems.append(f"{env}: LlmModel is set, so a change of LlmProvider keeps the other provider's model")
    if tables.get("validate", {}).get("parameters", {}).get("lint") is not True:
        problems.append(f"{env}: validate lint is not true")
    overrides = dict(item.split("=", 1) for item in deploy.get("parameter_overrides", []))
    for name in sorted(set(overrides) - names):
        problems.append(f"{env}: parameter_overrides sets {name}, which template.yaml does not declare")
    for name in sorted(required - set(overrides)):
        problems.append(f"{env}: template parameter {name} has no default and is not set")
    if overrides.get("Stage") != stage:
        problems.append(f"{env}: Stage is {overrides.get('Stage')!r}, not {stage!r}")

# CAPABILITY_IAM covers IAM resources without custom names; named ones need CAPABILITY_NAMED_IAM,
# nested applications CAPABILITY_AUTO_EXPAND.
for prop in ("RoleName", "ManagedPolicyName", "UserName", "GroupName", "InstanceProfileName"):
    if re.search(rf"^\s+{prop}:", template, re.M):
        problems.append(f"template.yaml names an IAM resource ({prop}): CAPABILITY_IAM no longer suffices")
if "AWS::Serverless::Application" in template:
    problems.append("template.yaml has a nested application: CAPABILITY_AUTO_EXPAND is needed")
for output in ("SecretArn", "WebhookUrl", "KnowledgeBucketName"):
    if not re.search(rf"^  {output}:", template, re.M):
        problems.append(f"template.yaml has no output {output}, which the infra scripts read")

for name in ("KnowledgeUri", "KnowledgeMaxTokens", "ToolsUri"):
    if name not in names:
        problems.append(f"template.yaml has no parameter {name}, which infra/knowledge.sh reads")

print("\n".join(problems))
sys.exit(1 if problems else 0)
PY
  ); then
    ok "samconfig.toml: both environments complete and consistent with template.yaml"
  else
    not_ok "samconfig.toml: both environments complete and consistent with template.yaml" "$msg"
  fi
else
  skip "samconfig.toml checks (they need Python 3.11's tomllib)"
fi

echo "infra-scripts: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
