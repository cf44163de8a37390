#!/usr/bin/env bash
# Offline tests of the infra/ scripts and of samconfig.toml. A fake `aws` first on PATH records
# every call (its arguments, its stdin, and a copy and the mode of each file:// argument) and
# answers like the AWS CLI would; nothing reaches AWS. Exits non-zero when a check fails.
# Usage: infra/test-scripts.sh
# The checks handed to `expect ... eval '...'` are single-quoted on purpose: eval expands them.
# shellcheck disable=SC2016,SC2034
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
      *"'TableName'"*) echo "${FAKE_TABLE:-None}" ;;
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
  # DynamoDB: the k-th scan answers scan-page.k (none: an empty last page); get-item and
  # delete-item answer get-item.json and delete-item.json (none: no item, which the CLI prints
  # as nothing).
  "dynamodb scan")
    k=$(($(cat "$dir/scan-count" 2>/dev/null || echo 0) + 1))
    echo "$k" >"$dir/scan-count"
    if [ -f "$dir/scan-page.$k" ]; then cat "$dir/scan-page.$k"; else echo '{"Items": [], "Count": 0}'; fi
    ;;
  "dynamodb get-item") if [ -f "$dir/get-item.json" ]; then cat "$dir/get-item.json"; fi ;;
  "dynamodb delete-item") if [ -f "$dir/delete-item.json" ]; then cat "$dir/delete-item.json"; fi ;;
  "dynamodb put-item") ;;
  "dynamodb batch-write-item") echo '{"UnprocessedItems": {}}' ;;
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
  export FAKE_TABLE="whatsapp-assistant-dev-Table-ABC123"
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
numbers=("$infra/numbers.sh")
userdata=("$infra/user-data.sh")

# ------------------------------------------------------------------ static checks
for script in "$infra"/*.sh; do
  if bash -n "$script"; then ok "bash -n $(basename "$script")"; else not_ok "bash -n $(basename "$script")"; fi
done
if command -v shellcheck >/dev/null 2>&1; then
  if sc=$(shellcheck -x "$infra"/*.sh 2>&1); then ok "shellcheck infra/*.sh"; else not_ok "shellcheck infra/*.sh" "$sc"; fi
else
  skip "shellcheck infra/*.sh (shellcheck is not installed)"
fi
for script in put-secret.sh show-webhook-setup.sh verify-ses-sender.sh knowledge.sh numbers.sh user-data.sh; do
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

# ------------------------------------------------------------------ numbers.sh
num_dir="$work/numbers"
mkdir -p "$num_dir"
# A persona's words that must never leave the file: not in any output, nor on a command line.
num_marker="PRIVATE-PERSONA-9c1e"
num_table="whatsapp-assistant-dev-Table-ABC123"
num_leaks() { grep -rlF -- "$num_marker" "$work/out" "$work/err" "$FAKE_AWS_DIR/calls" 2>/dev/null || true; }
# settings_variant NAME CODE: numbers/NAME.json, the shop's example settings changed by the Python
# statements CODE (on the dict `doc`); each text value carries the marker.
settings_variant() {
  python3 - "$infra/examples/shop/number-settings.json" "$num_dir/$1.json" "$num_marker" "$2" <<'PY'
import json
import sys

src, dst, marker, code = sys.argv[1:5]
with open(src, encoding="utf-8") as f:
    doc = json.load(f)
doc["system_prompt"] += " " + marker
exec(code)
with open(dst, "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False)
PY
}
settings_variant good 'pass'

for args in "" "show" "show 12a" "show 123456789012345678901" "put 123" "list extra" "put 123 x.json --yes" "frob"; do
  reset
  # shellcheck disable=SC2086
  run "${numbers[@]}" $args
  expect "numbers.sh ${args:-(no command)}: refused before any AWS call" eval 'test "$status" != 0 && test -n "$err" && test "$(ncalls)" = 0'
done
reset
run "${numbers[@]}" show 12a
expect "numbers.sh: a phone_number_id that is not 1-20 digits is named as such" eval 'contains "$err" "PHONE_NUMBER_ID must be 1 to 20 digits"'
for cmd in list show put delete; do
  reset
  run "${numbers[@]}" "$cmd" --help
  expect "numbers.sh $cmd --help: its own usage, no call" eval 'test "$status" = 0 && contains "$out" "Usage: infra/numbers.sh $cmd" && test "$(ncalls)" = 0'
done

settings_variant typo 'doc["nmae"] = doc.pop("name")'
settings_variant odd-key 'doc["x y " + "'"$num_marker"'"] = 1'
settings_variant blank-name 'doc["name"] = "   "'
settings_variant long-name 'doc["name"] = "n" * 81'
settings_variant enabled-string 'doc["enabled"] = "true"'
settings_variant long-prompt 'doc["system_prompt"] = doc["system_prompt"] * 1000'
settings_variant no-model 'del doc["llm"]["model"]'
settings_variant no-provider 'del doc["llm"]["provider"]'
settings_variant bad-provider 'doc["llm"]["provider"] = "azure-'"$num_marker"'"'
settings_variant llm-unknown 'doc["llm"]["temperature"] = 0.2'
settings_variant bedrock-url 'doc["llm"]["provider"] = "bedrock"; del doc["llm"]["api_key_secret"]'
settings_variant bedrock-key 'doc["llm"]["provider"] = "bedrock"; del doc["llm"]["base_url"]'
settings_variant ftp-url 'doc["llm"]["base_url"] = "ftp://example.com/'"$num_marker"'"'
settings_variant bad-secret-key 'doc["llm"]["api_key_secret"] = "SHOP-KEY"'
settings_variant upper-bucket 'doc["knowledge_uri"] = "s3://Shop-Docs/faq.md"'
settings_variant no-key 'doc["tools_uri"] = "s3://shop-docs/"'
settings_variant https-uri 'doc["tools_uri"] = "https://shop-docs/tools.json"'
settings_variant plus 'doc["handoff_agent_number"] = "+34600111222"'
settings_variant number-int 'doc["handoff_agent_number"] = 34600111222'
settings_variant short-number 'doc["handoff_agent_number"] = "3460011"'
settings_variant no-keywords 'doc["handoff_keywords"] = []'
settings_variant long-keyword 'doc["stop_keywords"] = ["STOP", "S" * 41]'
settings_variant many-keywords 'doc["start_keywords"] = [f"K{i}" for i in range(21)]'
settings_variant keyword-string 'doc["start_keywords"] = "START"'
settings_variant rate-string 'doc["rate_limit_per_minute"] = "10"'
settings_variant rate-high 'doc["rate_limit_per_minute"] = 1001'
settings_variant rate-bool 'doc["rate_limit_per_minute"] = True'
settings_variant budget-negative 'doc["daily_token_budget"] = -1'
settings_variant budget-float 'doc["daily_token_budget"] = 1.5'
settings_variant text-unknown 'doc["texts"]["welcome"] = "hola"'
settings_variant text-blank 'doc["texts"]["maintenance"] = " \n "'
settings_variant text-long 'doc["texts"]["fallback"] = "f" * 1001'
settings_variant top-list 'doc = [doc]'
printf '{"name": "a", "name": "%s"}' "$num_marker" >"$num_dir/duplicate.json"
printf '{"name": "%s",' "$num_marker" >"$num_dir/not-json.json"
printf '{"name": "Caf\xe9 %s"}' "$num_marker" >"$num_dir/latin1.json"
for case in "an unknown field:typo:nmae: unknown field" "an unknown odd field:odd-key:(a name not shown): unknown field" \
  "a blank name:blank-name:name: must not be empty or blank" "an 81-character name:long-name:name: must be 1 to 80 characters" \
  "enabled as a string:enabled-string:enabled: must be true or false, not a string" \
  "a 20001+ character persona:long-prompt:system_prompt: must be 1 to 20000 characters" \
  "llm without model:no-model:llm.model: missing" "llm without provider:no-provider:llm.provider: missing" \
  "an unknown provider:bad-provider:llm.provider: must be one of openai, gemini, bedrock" \
  "an unknown llm field:llm-unknown:llm.temperature: unknown field" \
  "a base_url for bedrock:bedrock-url:llm.base_url: not for provider bedrock" \
  "an api_key_secret for bedrock:bedrock-key:llm.api_key_secret: not for provider bedrock" \
  "an ftp base_url:ftp-url:llm.base_url: must be an http:// or https:// URL" \
  "a secret key with a dash:bad-secret-key:llm.api_key_secret: must be 1 to 64 letters, digits or _" \
  "an upper-case bucket:upper-bucket:knowledge_uri: must be s3://<bucket>/<key>" \
  "an s3 URI without key:no-key:tools_uri: must be s3://<bucket>/<key>" \
  "an https tools_uri:https-uri:tools_uri: must be s3://<bucket>/<key>" \
  "an agent number with +:plus:handoff_agent_number: must be digits only: drop the leading '+'" \
  "an agent number as integer:number-int:handoff_agent_number: must be a string of 8 to 15 digits, not an integer" \
  "a 7-digit agent number:short-number:handoff_agent_number: must be 8 to 15 digits" \
  "no handoff keywords:no-keywords:handoff_keywords: must hold 1 to 20 keywords (it holds 0)" \
  "a 41-character keyword:long-keyword:stop_keywords[1]: must be 1 to 40 characters" \
  "21 keywords:many-keywords:start_keywords: must hold 1 to 20 keywords (it holds 21)" \
  "keywords as a string:keyword-string:start_keywords: must be a list of strings, not a string" \
  "a rate as a string:rate-string:rate_limit_per_minute: must be an integer, not a string" \
  "a rate over 1000:rate-high:rate_limit_per_minute: must be from 0 to 1000" \
  "a rate as a boolean:rate-bool:rate_limit_per_minute: must be an integer, not a boolean" \
  "a negative budget:budget-negative:daily_token_budget: must be from 0 to 1000000000" \
  "a fractional budget:budget-float:daily_token_budget: must be an integer, not a number with a fraction" \
  "an unknown text:text-unknown:texts.welcome: unknown field" \
  "a blank maintenance text:text-blank:texts.maintenance: must not be empty or blank" \
  "a 1001-character text:text-long:texts.fallback: must be 1 to 1000 characters" \
  "a top-level list:top-list:(top level): must be a JSON object" \
  "a duplicate field:duplicate:(file): the field \`name\` is given twice" \
  "not JSON:not-json:(file): not JSON:" "not UTF-8:latin1:(file): not UTF-8 text"; do
  IFS=: read -r what name message <<<"$case"
  reset
  run "${numbers[@]}" put 106540352242922 "$num_dir/$name.json"
  expect "numbers.sh put: $what is refused (exit 2) naming the field, before any AWS call, showing no value" \
    eval 'test "$status" = 2 && contains "$err" "$num_dir/$name.json: $message" && contains "$err" "nothing was sent to AWS" &&
          test "$(ncalls)" = 0 && test -z "$(num_leaks)"'
done

settings_variant many-problems 'doc["name"] = ""; doc["enabled"] = 1; doc["llm"] = {"provider": "x"}; doc["texts"] = {"reset": 5}'
reset
run "${numbers[@]}" put 106540352242922 "$num_dir/many-problems.json"
expect "numbers.sh put: every problem of a file is printed, one a line" \
  eval 'test "$status" = 2 && test "$(grep -c "^$num_dir/many-problems.json: " "$work/err")" = 5 &&
        contains "$err" "name: must not be empty" && contains "$err" "enabled: must be true or false, not an integer" &&
        contains "$err" "llm.provider: must be one of" && contains "$err" "llm.model: missing" &&
        contains "$err" "texts.reset: must be a string, not an integer" && test "$(ncalls)" = 0'

reset
run "${numbers[@]}" put 106540352242922 "$num_dir/good.json"
n_put=$(cat "$FAKE_AWS_DIR/count" 2>/dev/null || echo 0)
expect "numbers.sh put: finds the table by the stack output TableName, then one put-item of a file" \
  eval 'test "$status" = 0 && test "$(ncalls)" = 2 && calls | head -1 | grep -q "^cloudformation describe-stacks --stack-name whatsapp-assistant-dev .*'"'"'TableName'"'"'" &&
        calls | tail -1 | grep -qE "^dynamodb put-item --table-name $num_table --item file://[^ ]+$"'
expect "numbers.sh put: the item is pk n#ID, the settings compact and equal to the file, updated_at now; mode 600" \
  eval 'test "$(cat "$FAKE_AWS_DIR/mode.$n_put")" = 600 && python3 - "$FAKE_AWS_DIR/file.$n_put" "$num_dir/good.json" <<"PY"
import json, sys, time
item = json.load(open(sys.argv[1], encoding="utf-8"))
want = json.load(open(sys.argv[2], encoding="utf-8"))
assert set(item) == {"pk", "settings", "updated_at"}, sorted(item)
assert item["pk"] == {"S": "n#106540352242922"}
assert item["settings"]["S"] == json.dumps(want, separators=(",", ":"), ensure_ascii=False)
assert abs(int(item["updated_at"]["N"]) - time.time()) < 600
PY'
expect "numbers.sh put: says the processors pick it up within a minute; no persona anywhere but in the file" \
  eval 'contains "$out" "Saved the settings of number 106540352242922" && contains "$out" "within a minute" && test -z "$(num_leaks)"'

reset
run "${numbers[@]}" put 7 "$num_dir/good.json" --table my-table --region eu-west-3 --profile ops
expect "numbers.sh put --table: no stack lookup; the region and profile reach the AWS CLI" \
  eval 'test "$status" = 0 && test "$(ncalls)" = 1 && calls | grep -q "^dynamodb put-item --table-name my-table " &&
        test "$(tail -1 "$FAKE_AWS_DIR/env")" = "eu-west-3|eu-west-3|ops"'

reset
python3 - "$FAKE_AWS_DIR/get-item.json" <<'PY'
import json, sys
settings = {"name": "Tienda Sol", "enabled": False, "llm": {"provider": "gemini", "model": "gemini-2.5-flash"}}
item = {"pk": {"S": "n#123"}, "settings": {"S": json.dumps(settings, separators=(",", ":"))}, "updated_at": {"N": "1780000000"}}
json.dump({"Item": item}, open(sys.argv[1], "w"))
PY
run "${numbers[@]}" show 123 --table t1
expect "numbers.sh show: get-item of the number's key, the settings pretty-printed on stdout, updated_at on stderr" \
  eval 'test "$status" = 0 && calls | grep -qE "^dynamodb get-item --table-name t1 --key file://[^ ]+ --consistent-read --output json$" &&
        test "$(cat "$FAKE_AWS_DIR/file.1")" = "{\"pk\": {\"S\": \"n#123\"}}" &&
        contains "$out" "\"provider\": \"gemini\"" && contains "$out" "  \"enabled\": false," &&
        contains "$err" "updated_at 2026-05-28T20:26:40Z"'
reset
run "${numbers[@]}" show 123 --table t1
expect "numbers.sh show: no item -> exit 1, says it uses the stack defaults" \
  eval 'test "$status" = 1 && contains "$err" "number 123 has no settings: it uses the stack'"'"'s defaults" && test -z "$out"'

reset
python3 - "$FAKE_AWS_DIR" <<'PY'
import json, sys
d = sys.argv[1]
def item(n, settings):
    return {"pk": {"S": f"n#{n}"}, "settings": {"S": json.dumps(settings)}, "updated_at": {"N": "1780000000"}}
json.dump({"Items": [item(222, {"name": "Second", "enabled": False})], "LastEvaluatedKey": {"pk": {"S": "n#222"}}},
          open(f"{d}/scan-page.1", "w"))
json.dump({"Items": [item(106540352242922, {"name": "Tienda Sol", "handoff_agent_number": "34600111222"})]},
          open(f"{d}/scan-page.2", "w"))
PY
run "${numbers[@]}" list --table t1
expect "numbers.sh list: scans n# items page by page (the second from LastEvaluatedKey)" \
  eval 'test "$status" = 0 && test "$(ncalls)" = 2 &&
        calls | head -1 | grep -qE "^dynamodb scan --table-name t1 --filter-expression begins_with\(#pk, :n\) .*--no-paginate" &&
        calls | tail -1 | grep -qE -- "--exclusive-start-key file://" && test "$(cat "$FAKE_AWS_DIR/file.2")" = "{\"pk\": {\"S\": \"n#222\"}}"'
expect "numbers.sh list: one line a number with name, enabled, the agent masked, updated_at" \
  eval 'contains "$out" "phone_number_id" && echo "$out" | grep -qE "^222 +Second +false +- +2026-05-28T20:26:40Z$" &&
        echo "$out" | grep -qE "^106540352242922 +Tienda Sol +- +\*{7}1222 " && ! contains "$out" 34600111222'

reset
run "${numbers[@]}" delete 123 --table t1
expect "numbers.sh delete: without a terminal or --yes -> refused, no call" \
  eval 'test "$status" != 0 && contains "$err" "--yes" && test "$(ncalls)" = 0'
reset
echo '{"Attributes": {"pk": {"S": "n#123"}}}' >"$FAKE_AWS_DIR/delete-item.json"
run "${numbers[@]}" delete 123 --yes --table t1
expect "numbers.sh delete --yes: delete-item of the number's key; says it falls back to the defaults" \
  eval 'test "$status" = 0 && calls | grep -qE "^dynamodb delete-item --table-name t1 --key file://[^ ]+ --return-values ALL_OLD" &&
        test "$(cat "$FAKE_AWS_DIR/file.1")" = "{\"pk\": {\"S\": \"n#123\"}}" && contains "$out" "Deleted the settings of number 123" &&
        contains "$out" "defaults"'

# ------------------------------------------------------------------ user-data.sh
ud_user=34600111222
ud_text="SECRET-MESSAGE-TEXT-77aa"
ud_leaks() { grep -rlF -e "$ud_text" -e "$ud_user" "$work/out" "$work/err" "$FAKE_AWS_DIR/calls" 2>/dev/null || true; }
# ud_pages: two scan pages of items the filter matched: the user's (on numbers 111 and 222) and
# those of a user whose number begins with theirs, which the exact match must leave out.
ud_pages() {
  python3 - "$FAKE_AWS_DIR" "$ud_user" "$ud_text" <<'PY'
import json, sys
d, a, text = sys.argv[1:4]
other = a + "9"
s = lambda v: {"S": v}
page1 = [
    {"pk": s(f"h#111:{a}#1"), "turns": {"L": [{"M": {"role": s("user"), "text": s(text)}}]}, "expires_at": {"N": "1780000000"}},
    {"pk": s(f"h#111:{a}#0"), "turns": {"L": []}, "expires_at": {"N": "1780000000"}},
    {"pk": s(f"h#111:{other}#0"), "turns": {"L": [{"M": {"text": s(text)}}]}},
    {"pk": s(f"u#111:{a}"), "opted_out": {"BOOL": True}, "at": {"N": "1780000000"}, "extra": s("x")},
    {"pk": s(f"r#222:{a}#29666666"), "n": {"N": "2"}},
]
page2 = [
    {"pk": s(f"id#wamid.1"), "c": s(f"222:{a}"), "s": s("d")},
    {"pk": s(f"id#wamid.2"), "c": s(f"222:{other}"), "s": s("d")},
    {"pk": s(f"ho#222:{a}"), "ref": s("0427"), "turns": {"L": [{"M": {"role": s("agent"), "text": s(text)}}]}},
    {"pk": s("hr#222#0427"), "conv": s(f"222:{a}")},
    {"pk": s(f"b#222:{a}#20601"), "n": {"N": "900"}, "noticed": {"BOOL": False}},
    {"pk": s(f"conv#111:{a}"), "turns": {"L": []}},
]
json.dump({"Items": page1, "LastEvaluatedKey": {"pk": s(f"r#222:{a}#29666666")}}, open(f"{d}/scan-page.1", "w"))
json.dump({"Items": page2}, open(f"{d}/scan-page.2", "w"))
PY
}

for args in "" "export" "export abc" "export +" "export US.a-b" "delete 123 --out x.json" "export 123 --yes" "export 123 extra" "export 123 --page-size 0"; do
  reset
  # shellcheck disable=SC2086
  run "${userdata[@]}" $args
  expect "user-data.sh ${args:-(no command)}: refused before any AWS call" eval 'test "$status" != 0 && test -n "$err" && test "$(ncalls)" = 0'
done

reset
ud_pages
run "${userdata[@]}" export "+$ud_user" --out "$work/export.json"
expect "user-data.sh export: finds the table, then scans page by page with the contains filter" \
  eval 'test "$status" = 0 && test "$(ncalls)" = 3 && calls | head -1 | grep -q "'"'"'TableName'"'"'" &&
        calls | sed -n 2p | grep -qF "dynamodb scan --table-name $num_table --filter-expression contains(#pk, :u) OR contains(#c, :u) OR contains(#conv, :u) " &&
        test "$(cat "$FAKE_AWS_DIR/file.2")" = "{\":u\": {\"S\": \":$ud_user\"}}" &&
        calls | sed -n 3p | grep -q -- "--exclusive-start-key file://"'
expect "user-data.sh export: the file has mode 600; only the user's items, as plain JSON, by conversation and kind" \
  eval 'test "$(stat -c %a "$work/export.json" 2>/dev/null || stat -f %Lp "$work/export.json")" = 600 &&
        python3 - "$work/export.json" "$ud_user" "$ud_text" <<"PY"
import json, sys
doc = json.load(open(sys.argv[1], encoding="utf-8"))
a, text = sys.argv[2:4]
assert doc["user"] == a, doc["user"]
c1, c2 = doc["conversations"][f"111:{a}"], doc["conversations"][f"222:{a}"]
assert len(doc["conversations"]) == 2
assert [h["pk"] for h in c1["history"]] == [f"h#111:{a}#0", f"h#111:{a}#1"]
assert c1["history"][1]["turns"][0]["text"] == text and c1["history"][1]["expires_at"] == 1780000000
assert c1["opt_out"] == {"pk": f"u#111:{a}", "opted_out": True, "at": 1780000000, "extra": "x"}
assert c1["legacy"]["pk"] == f"conv#111:{a}" and c1["handoff"] is None and c1["claims"] == []
assert [i["pk"] for i in c2["counters"]] == [f"b#222:{a}#20601", f"r#222:{a}#29666666"]
assert [i["pk"] for i in c2["claims"]] == ["id#wamid.1"] and c2["references"][0]["conv"] == f"222:{a}"
assert c2["handoff"]["ref"] == "0427" and c2["opt_out"] is None and c2["counters"][0]["noticed"] is False
PY'
expect "user-data.sh export: says the counts with the user masked; no number or text printed or on a command line" \
  eval 'contains "$err" "exported 9 items of 2 conversations of user *******1222 to $work/export.json" && test -z "$out" &&
        test -z "$(ud_leaks)"'

reset
ud_pages
run "${userdata[@]}" export "$ud_user" --table t1 --page-size 50
expect "user-data.sh export: to standard output without --out; --page-size is each request's --limit" \
  eval 'test "$status" = 0 && python3 -c "import json, sys; assert len(json.loads(sys.argv[1])[\"conversations\"]) == 2" "$out" &&
        calls | head -1 | grep -q -- "--limit 50" && ! calls | grep -q describe-stacks'

reset
ud_pages
run "${userdata[@]}" delete "$ud_user" --table t1
expect "user-data.sh delete: without a terminal or --yes -> refused after the scan, nothing written" \
  eval 'test "$status" != 0 && contains "$err" "--yes" && ! calls | grep -qE "put-item|batch-write-item|delete-item"'

reset
ud_pages
run "${userdata[@]}" delete "$ud_user" --yes --table t1
n_ud=$(cat "$FAKE_AWS_DIR/count")
expect "user-data.sh delete --yes: rewrites the opted-out record minimal, then one batch of the other 8 keys" \
  eval 'test "$status" = 0 && calls | sed -n 3p | grep -qE "^dynamodb put-item --table-name t1 --item file://" &&
        calls | sed -n 4p | grep -qE "^dynamodb batch-write-item --request-items file://" && test "$n_ud" = 4 &&
        test "$(cat "$FAKE_AWS_DIR/file.3")" = "{\"pk\": {\"S\": \"u#111:$ud_user\"}, \"opted_out\": {\"BOOL\": true}, \"at\": {\"N\": \"1780000000\"}}" &&
        python3 - "$FAKE_AWS_DIR/file.4" "$ud_user" <<"PY"
import json, sys
req = json.load(open(sys.argv[1]))
a = sys.argv[2]
keys = sorted(r["DeleteRequest"]["Key"]["pk"]["S"] for r in req["t1"])
assert list(req) == ["t1"]
assert keys == sorted([f"h#111:{a}#1", f"h#111:{a}#0", f"r#222:{a}#29666666", "id#wamid.1", f"ho#222:{a}",
                       "hr#222#0427", f"b#222:{a}#20601", f"conv#111:{a}"]), keys
PY'
expect "user-data.sh delete: prints counts per kind and masked keys, no number, no text" \
  eval 'contains "$out" "conversation 111:*******1222" && echo "$out" | grep -qE "^ +2 history slots" &&
        echo "$out" | grep -qE "^ +2 rate and token counters" && echo "$out" | grep -qE "^ +1 opt-out records kept" &&
        contains "$out" "total: 8 to delete, 1 to keep minimal" && test -z "$(ud_leaks)"'

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
for output in ("SecretArn", "WebhookUrl", "KnowledgeBucketName", "TableName"):
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
