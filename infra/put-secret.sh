#!/usr/bin/env bash
# Stores the Meta and LLM credentials in the stack's Secrets Manager secret, merged into its
# current value. The values come from environment variables and are never printed, traced or
# put on a command line: they reach the AWS CLI through a temporary file of mode 600 that is
# removed on exit. See --help.
set -euo pipefail
# Never trace this script (even under `bash -x`): it handles secret values.
set +x

prog=put-secret.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

# LLM_API_KEY is dropped from the required keys by --no-llm-key.
required_keys=(META_APP_SECRET META_ACCESS_TOKEN LLM_API_KEY)
optional_keys=(META_VERIFY_TOKEN META_APP_SECRET_PREVIOUS TRANSCRIPTION_API_KEY)
placeholder=REPLACE_ME

usage() {
  cat <<'EOF'
Usage: infra/put-secret.sh [options]

Stores credentials in the stack's secret (the stack output SecretArn, or --secret-id), merged
into its current value: keys you do not give keep their value, so the META_VERIFY_TOKEN that
the stack generated stays unless you set one. Values are read from environment variables and
never printed.

Required environment variables (all three, unless --only-given or --no-llm-key):
  META_APP_SECRET           Meta app dashboard > App settings > Basic > App secret
  META_ACCESS_TOKEN         a permanent system-user token with whatsapp_business_messaging
  LLM_API_KEY               the LLM provider's key (may be set to "" for a server without keys);
                            not with --no-llm-key
Optional:
  META_VERIFY_TOKEN         replaces the generated verify token (then re-enter it in Meta)
  META_APP_SECRET_PREVIOUS  the old app secret, still accepted while you rotate it
  TRANSCRIPTION_API_KEY     the key of the server that transcribes voice notes, when it is not
                            LLM_API_KEY; with --no-llm-key, voice notes need it (or a keyless
                            TranscriptionBaseUrl), else they get the could-not-listen reply

Options:
  --secret-id ID       the secret's name or ARN, instead of the stack output SecretArn
  --only-given         set only the variables that are set (at least one), e.g. to rotate one
  --no-llm-key         for LlmProvider=bedrock, which calls Amazon Bedrock with the
                       processor's role and reads no LLM key: LLM_API_KEY is not asked for,
                       and removed from the secret if it still holds the placeholder
  --rotate-app-secret  with a new META_APP_SECRET: keep the current one as
                       META_APP_SECRET_PREVIOUS, so both are accepted during the rotation
  --remove-previous    remove META_APP_SECRET_PREVIOUS (the end of an app secret rotation)
  --tool-key NAME      also set the key NAME from the environment variable NAME: a key the
                       tools file's headers read ({"secret": "NAME"}), e.g. SHOP_API_KEY;
                       upper-case letters, digits and _; repeatable
  --app-secret-for APP also set META_APP_SECRET_APP from the variable of that name: the app
                       secret of another Meta app whose numbers this stack serves (its
                       webhooks are accepted too); APP is upper-case letters, digits and _,
                       e.g. SHOP2; repeatable
  --token-for PHONE_NUMBER_ID
                       also set META_ACCESS_TOKEN_<PHONE_NUMBER_ID> from the variable of that
                       name: the Graph API token used for that business number instead of
                       META_ACCESS_TOKEN (a number of another app or business); digits only,
                       as on Meta's API setup page; repeatable
  --dry-run            print which keys would be set or removed (names only); calls nothing
EOF
  common_opts_help
  cat <<'EOF'
  -h, --help           this text

Type values without leaving them in your shell history, for example:
  read -rs META_APP_SECRET && export META_APP_SECRET

Examples:
  infra/put-secret.sh --dry-run             # which keys would be set in dev's secret
  infra/put-secret.sh                       # dev: the three required values
  infra/put-secret.sh --config-env prod     # the same for prod
  infra/put-secret.sh --no-llm-key          # LlmProvider=bedrock: the two Meta values only
  infra/put-secret.sh --only-given          # only the variables that are exported
  infra/put-secret.sh --only-given --rotate-app-secret   # META_APP_SECRET is the new one
  infra/put-secret.sh --only-given --tool-key SHOP_API_KEY  # a business API's key, for tools
  infra/put-secret.sh --only-given --app-secret-for SHOP2   # reads META_APP_SECRET_SHOP2
  infra/put-secret.sh --only-given --token-for 106540352242922
                                            # reads META_ACCESS_TOKEN_106540352242922

Needs the AWS CLI and python3. AWS permissions: cloudformation:DescribeStacks (unless
--secret-id), secretsmanager:GetSecretValue and secretsmanager:PutSecretValue on the secret.
EOF
}

secret_id=""
dry_run=0
only_given=0
no_llm_key=0
remove_previous=0
rotate=0
tool_keys=()
# Keys named by --app-secret-for and --token-for, and the option that named each.
number_keys=()
number_key_opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry_run=1; shift ;;
    --only-given) only_given=1; shift ;;
    --no-llm-key) no_llm_key=1; shift ;;
    --remove-previous) remove_previous=1; shift ;;
    --rotate-app-secret) rotate=1; shift ;;
    --tool-key)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "--tool-key needs a key name (see --help)"; fi
      if [[ ! "$2" =~ ^[A-Z][A-Z0-9_]{0,63}$ ]]; then
        die "--tool-key $2: a key name is an upper-case letter, then upper-case letters, digits and _"
      fi
      case " ${required_keys[*]} ${optional_keys[*]} " in
        *" $2 "*) die "--tool-key $2: that key is set by its own variable, not as a tool key" ;;
      esac
      tool_keys+=("$2")
      shift 2
      ;;
    --app-secret-for)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "--app-secret-for needs an app name (see --help)"; fi
      if [[ ! "$2" =~ ^[A-Z0-9][A-Z0-9_]{0,39}$ ]] || [ "$2" = PREVIOUS ]; then
        die "--app-secret-for $2: an app name is upper-case letters, digits and _ (and not PREVIOUS, which is META_APP_SECRET_PREVIOUS's own variable)"
      fi
      number_keys+=("META_APP_SECRET_$2")
      number_key_opts+=("--app-secret-for $2")
      shift 2
      ;;
    --token-for)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "--token-for needs a phone number id (see --help)"; fi
      if [[ ! "$2" =~ ^[0-9]{1,30}$ ]]; then
        die "--token-for $2: a phone number id is digits only (Meta's API setup page, Phone number ID)"
      fi
      number_keys+=("META_ACCESS_TOKEN_$2")
      number_key_opts+=("--token-for $2")
      shift 2
      ;;
    --secret-id)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "--secret-id needs a value (see --help)"; fi
      secret_id=$2
      shift 2
      ;;
    --config-env | --config-file | --stack-name | --region | --profile)
      set_common_opt "$@"
      shift 2
      ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# ------------------------------------------------------------------ which keys, and checks
if [ "$no_llm_key" = 1 ]; then
  if is_set LLM_API_KEY; then
    die "--no-llm-key and LLM_API_KEY contradict each other: unset one (a transcription key goes in TRANSCRIPTION_API_KEY)"
  fi
  required_keys=(META_APP_SECRET META_ACCESS_TOKEN)
fi
to_set=()
missing=()
for key in "${required_keys[@]}"; do
  if is_set "$key"; then
    to_set+=("$key")
  else
    missing+=("$key")
  fi
done
for key in "${optional_keys[@]}"; do
  if is_set "$key"; then
    to_set+=("$key")
  fi
done
for key in ${tool_keys[@]+"${tool_keys[@]}"}; do
  is_set "$key" || die "--tool-key $key: export $key first (its value is read from there, never shown)"
  to_set+=("$key")
done
for i in ${number_keys[@]+"${!number_keys[@]}"}; do
  key=${number_keys[$i]}
  is_set "$key" || die "${number_key_opts[$i]}: export $key first (its value is read from there, never shown)"
  case " ${to_set[*]-} " in
    *" $key "*) ;;
    *) to_set+=("$key") ;;
  esac
done

if [ "$only_given" = 1 ]; then
  if [ ${#to_set[@]} -eq 0 ] && [ "$remove_previous" = 0 ] && [ "$no_llm_key" = 0 ]; then
    die "--only-given, but none of ${required_keys[*]} ${optional_keys[*]} is set"
  fi
elif [ ${#missing[@]} -gt 0 ]; then
  die "missing environment variable(s): ${missing[*]}. Export them first (see --help), or use --only-given to change only some keys."
fi

for key in ${to_set[@]+"${to_set[@]}"}; do
  value=${!key}
  if [ -z "$value" ]; then
    if [ "$key" = LLM_API_KEY ]; then
      warn "LLM_API_KEY is empty: the processor will call the LLM without an Authorization header"
      continue
    fi
    if [ "$key" = META_APP_SECRET_PREVIOUS ]; then
      die "META_APP_SECRET_PREVIOUS is empty: unset it, and use --remove-previous to drop the old app secret"
    fi
    die "$key is empty"
  fi
  if [ "$value" = "$placeholder" ]; then
    die "$key is still the placeholder $placeholder"
  fi
  case "$value" in
    [[:space:]]* | *[[:space:]])
      die "$key starts or ends with whitespace (a copy-paste slip?); its value is not shown"
      ;;
  esac
done
unset value

if [ "$remove_previous" = 1 ] && is_set META_APP_SECRET_PREVIOUS; then
  die "--remove-previous and META_APP_SECRET_PREVIOUS contradict each other: unset one"
fi
if [ "$rotate" = 1 ]; then
  is_set META_APP_SECRET || die "--rotate-app-secret needs the new META_APP_SECRET"
  if is_set META_APP_SECRET_PREVIOUS || [ "$remove_previous" = 1 ]; then
    die "--rotate-app-secret sets META_APP_SECRET_PREVIOUS itself: unset META_APP_SECRET_PREVIOUS and drop --remove-previous"
  fi
fi

if [ -n "$secret_id" ]; then
  resolve_target 0
  target="secret $secret_id"
else
  resolve_target 1
  target="the secret of $(target_description) (its output SecretArn)"
fi

# ------------------------------------------------------------------ dry run
if [ "$dry_run" = 1 ]; then
  echo "Dry run: nothing is read or written."
  echo "Target: $target"
  echo "Would set: ${to_set[*]:-(nothing)}"
  if [ "$remove_previous" = 1 ]; then
    echo "Would remove: META_APP_SECRET_PREVIOUS"
  fi
  if [ "$no_llm_key" = 1 ]; then
    echo "Would remove: LLM_API_KEY, if it still holds the placeholder $placeholder"
  fi
  if [ "$rotate" = 1 ]; then
    echo "Would copy: the current META_APP_SECRET to META_APP_SECRET_PREVIOUS"
  fi
  echo "Would keep: every other key of the current value"
  exit 0
fi

# ------------------------------------------------------------------ read, merge, write
need_cmd aws "install the AWS CLI, see infra/README.md"
need_cmd python3 "it merges the JSON value"

if [ -z "$secret_id" ]; then
  secret_id=$(stack_output SecretArn)
fi

umask 077
workdir=$(mktemp -d "${TMPDIR:-/tmp}/put-secret.XXXXXX")
chmod 700 "$workdir"
cleanup() { rm -rf "$workdir"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --query SecretString --output json prints the value as one JSON string literal: no text-mode
# mangling, and it goes straight to a file.
aws secretsmanager get-secret-value --secret-id "$secret_id" \
  --query SecretString --output json >"$workdir/current" ||
  die "cannot read the current value of $secret_id"

# The merge reads the values from the environment, writes the new value to a file, and prints
# only key names: those still holding the placeholder. With --rotate-app-secret it also leaves
# a file named "rotated" when it kept the old app secret; with --no-llm-key, "llm-key-removed"
# when it removed the placeholder LLM_API_KEY, and "no-transcription-key" when the value holds
# no key for transcribing voice notes.
remove=""
if [ "$remove_previous" = 1 ]; then
  remove=META_APP_SECRET_PREVIOUS
fi
still_placeholder=$(
  python3 - "$workdir" "$placeholder" "$remove" "$rotate" "$no_llm_key" ${to_set[@]+"${to_set[@]}"} <<'PY'
import json
import os
import sys

workdir, placeholder, remove, rotate, no_llm_key, *keys = sys.argv[1:]
current_path, new_path = os.path.join(workdir, "current"), os.path.join(workdir, "new")
try:
    with open(current_path, encoding="utf-8") as f:
        value = json.loads(json.load(f))
except (ValueError, TypeError):
    sys.exit("the secret's current value is not JSON (its content is not shown)")
if not isinstance(value, dict):
    sys.exit("the secret's current value is not a JSON object (its content is not shown)")
if rotate == "1":
    old = value.get("META_APP_SECRET")
    # Run twice with the same new secret, it must not replace the old one with the new one.
    if isinstance(old, str) and old not in ("", placeholder, os.environ["META_APP_SECRET"]):
        value["META_APP_SECRET_PREVIOUS"] = old
        open(os.path.join(workdir, "rotated"), "w").close()
for key in keys:
    value[key] = os.environ[key]
if remove:
    value.pop(remove, None)
if no_llm_key == "1":
    # LlmProvider=bedrock reads no LLM key; a placeholder left there would be sent to the
    # transcription server as if it were a key.
    if value.get("LLM_API_KEY") == placeholder:
        del value["LLM_API_KEY"]
        open(os.path.join(workdir, "llm-key-removed"), "w").close()
    if not any(value.get(k) not in (None, "", placeholder) for k in ("TRANSCRIPTION_API_KEY", "LLM_API_KEY")):
        open(os.path.join(workdir, "no-transcription-key"), "w").close()
fd = os.open(new_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump(value, f, separators=(",", ":"))
print(" ".join(sorted(k for k, v in value.items() if v == placeholder)))
PY
) || die "nothing was written"

version=$(aws secretsmanager put-secret-value --secret-id "$secret_id" \
  --secret-string "file://$workdir/new" --query VersionId --output text) ||
  die "could not write $secret_id; its value is unchanged"

echo "Stored in $secret_id (version $version):"
echo "  set: ${to_set[*]:-(nothing)}"
if [ "$remove_previous" = 1 ]; then
  echo "  removed: META_APP_SECRET_PREVIOUS"
fi
if [ -e "$workdir/llm-key-removed" ]; then
  echo "  removed: LLM_API_KEY (it held the placeholder; LlmProvider=bedrock reads no LLM key)"
fi
if [ -e "$workdir/rotated" ]; then
  echo "  kept the former META_APP_SECRET as META_APP_SECRET_PREVIOUS (remove it later with"
  echo "  --only-given --remove-previous, once Meta signs with the new one only)"
elif [ "$rotate" = 1 ]; then
  warn "--rotate-app-secret: the current META_APP_SECRET was a placeholder or already the new one; META_APP_SECRET_PREVIOUS is unchanged"
fi
echo "The functions read the new value within SECRETS_REFRESH_SECONDS (300 s)."
if [ -n "$still_placeholder" ]; then
  warn "still set to the placeholder $placeholder: $still_placeholder"
fi
if [ -e "$workdir/no-transcription-key" ]; then
  warn "no TRANSCRIPTION_API_KEY: voice notes get the could-not-listen reply unless TranscriptionBaseUrl is a server without keys (infra/README.md, Amazon Bedrock)"
fi
