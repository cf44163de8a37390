# shellcheck shell=bash
# Helpers shared by the infra/ scripts; sourced by them, not run. Each script sets `prog` first.
#
# Options every script takes, with the same meaning as in the SAM CLI:
#   --config-env ENV     environment of samconfig.toml to read (default: default, i.e. dev)
#   --config-file PATH   samconfig file (default: samconfig.toml at the repository's root)
#   --stack-name NAME    the stack (default: stack_name of that environment)
#   --region REGION      the region (default: region of that environment, else the AWS CLI's own)
#   --profile PROFILE    the AWS CLI profile (default: the AWS CLI's own)

infra_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
opt_config_env="default"
opt_config_file="$infra_dir/../samconfig.toml"
opt_stack_name=""
opt_region=""
opt_profile=""
# Set by resolve_target.
stack_name=""
# The AWS CLI v2 would page long output through `less`; these scripts read it themselves.
export AWS_PAGER=""

die() {
  printf '%s: %s\n' "${prog:-infra}" "$*" >&2
  exit 1
}

warn() {
  printf '%s: warning: %s\n' "${prog:-infra}" "$*" >&2
}

need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH ($2)"
}

# True when the environment variable named $1 is set (possibly to the empty string).
is_set() {
  [ -n "${!1+x}" ]
}

# set_common_opt OPTION VALUE: stores one of the shared options. The caller shifts 2.
set_common_opt() {
  if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi
  case "$1" in
    --config-env) opt_config_env=$2 ;;
    --config-file) opt_config_file=$2 ;;
    --stack-name) opt_stack_name=$2 ;;
    --region) opt_region=$2 ;;
    --profile) opt_profile=$2 ;;
    *) die "internal error: $1 is not a shared option" ;;
  esac
}

common_opts_help() {
  cat <<'EOF'
  --config-env ENV     samconfig.toml environment to read: default (dev) or prod [default]
  --config-file PATH   samconfig file [samconfig.toml at the repository's root]
  --stack-name NAME    the stack [stack_name of that environment]
  --region REGION      the AWS region [region of that environment, else the AWS CLI's]
  --profile PROFILE    the AWS CLI profile [the AWS CLI's default]
EOF
}

# samconfig_query KIND NAME: prints a value of the chosen samconfig environment, or nothing.
#   KIND=setting: NAME is a key of [ENV.deploy.parameters], else of [ENV.global.parameters]
#   KIND=parameter: NAME is a template parameter in that environment's parameter_overrides
#   KIND=overrides-except: that environment's parameter_overrides but NAME, as shell words for
#     `sam deploy --parameter-overrides` (a value with spaces or quotes is written Key="value")
# A missing file or environment prints nothing. Needs python3.
samconfig_query() {
  [ -f "$opt_config_file" ] || return 0
  need_cmd python3 "it reads $opt_config_file"
  python3 - "$opt_config_file" "$opt_config_env" "$1" "$2" <<'PY'
import ast
import re
import shlex
import sys

path, env, kind, name = sys.argv[1:5]


def load(text):
    try:
        import tomllib  # Python 3.11 and later
    except ModuleNotFoundError:
        return load_simple(text)
    return tomllib.loads(text)


def load_simple(text):
    """Enough TOML for samconfig files: [a.b.c] tables, strings, booleans, numbers, arrays."""
    doc = {}
    table = doc
    pending = None  # (table, key, text so far) of an array spread over several lines
    for line in text.splitlines():
        line = strip_comment(line)
        if pending is not None:
            target, key, raw = pending
            raw += "\n" + line
            if depth(raw) > 0:
                pending = (target, key, raw)
            else:
                target[key] = value(raw)
                pending = None
            continue
        line = line.strip()
        if not line:
            continue
        header = re.fullmatch(r"\[([^\[\]]+)\]", line)
        if header:
            table = doc
            for part in header.group(1).split("."):
                table = table.setdefault(part.strip(), {})
            continue
        match = re.fullmatch(r"([A-Za-z0-9_-]+)\s*=\s*(.*)", line)
        if not match:
            continue
        key, raw = match.groups()
        if depth(raw) > 0:
            pending = (table, key, raw)
        else:
            table[key] = value(raw)
    return doc


def scan(text):
    """Yields (character, inside a string) for each character of a TOML line."""
    quote, escaped = None, False
    for ch in text:
        if quote:
            yield ch, True
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = None
        else:
            if ch in "\"'":
                quote = ch
                yield ch, True
            else:
                yield ch, False


def strip_comment(line):
    out = []
    for ch, quoted in scan(line):
        if ch == "#" and not quoted:
            break
        out.append(ch)
    return "".join(out)


def depth(text):
    level = 0
    for ch, quoted in scan(text):
        if not quoted:
            level += {"[": 1, "]": -1}.get(ch, 0)
    return level


def value(raw):
    raw = raw.strip()
    if raw in ("true", "false"):
        return raw == "true"
    return ast.literal_eval(raw)


try:
    with open(path, encoding="utf-8") as f:
        doc = load(f.read())
except Exception as err:  # a broken file must not look like an empty one
    sys.exit(f"cannot read {path}: {err}")

tables = doc.get(env, {})
deploy = tables.get("deploy", {}).get("parameters", {})
common = tables.get("global", {}).get("parameters", {})

if kind == "setting":
    found = deploy.get(name, common.get(name))
    if found is not None:
        print(found)
elif kind == "parameter":
    overrides = deploy.get("parameter_overrides", common.get("parameter_overrides", []))
    if isinstance(overrides, str):
        overrides = [overrides]
    for item in overrides:
        for word in shlex.split(item):
            key, sep, val = word.partition("=")
            if sep and key == name:
                print(val)
                sys.exit(0)
elif kind == "overrides-except":
    overrides = deploy.get("parameter_overrides", common.get("parameter_overrides", []))
    if isinstance(overrides, str):
        overrides = [overrides]
    words = []
    for item in overrides:
        for word in shlex.split(item):
            key, sep, val = word.partition("=")
            if not sep or key == name:
                continue
            if not re.fullmatch(r"[A-Za-z0-9@._:/+=-]*", val):
                word = f'{key}="{val}"'
            words.append(shlex.quote(word))
    print(" ".join(words))
else:
    sys.exit(f"unknown query kind {kind}")
PY
}

# resolve_target [need_stack]: settles the stack name and region from the options and
# samconfig, and exports the region and profile for the AWS CLI (so that no script has to pass
# them on each call). With need_stack=1, a missing stack name is an error.
resolve_target() {
  local need_stack=${1:-0} region
  if [ ! -f "$opt_config_file" ] && [ "$opt_config_file" != "$infra_dir/../samconfig.toml" ]; then
    die "config file $opt_config_file does not exist"
  fi
  if [ -n "$opt_stack_name" ]; then
    stack_name=$opt_stack_name
  else
    stack_name=$(samconfig_query setting stack_name) || die "cannot read $opt_config_file"
  fi
  if [ "$need_stack" = 1 ] && [ -z "$stack_name" ]; then
    die "no stack name: pass --stack-name, or set stack_name for environment '$opt_config_env' in $opt_config_file"
  fi
  region=$opt_region
  if [ -z "$region" ]; then
    region=$(samconfig_query setting region) || die "cannot read $opt_config_file"
  fi
  if [ -n "$region" ]; then
    # AWS CLI v2 reads AWS_REGION, v1 only AWS_DEFAULT_REGION.
    export AWS_REGION="$region" AWS_DEFAULT_REGION="$region"
  fi
  if [ -n "$opt_profile" ]; then
    export AWS_PROFILE="$opt_profile"
  fi
}

# Describes where the commands go, for messages.
target_description() {
  printf 'stack %s, region %s' "${stack_name:-?}" "${AWS_REGION:-${AWS_DEFAULT_REGION:-of the AWS CLI config}}"
}

# stack_output KEY: prints the value of the stack's output KEY, or fails with a clear message.
stack_output() {
  local out
  out=$(aws cloudformation describe-stacks --stack-name "$stack_name" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue | [0]" --output text) ||
    die "cannot read the outputs of $(target_description): is it deployed, in that region, and are your AWS credentials valid?"
  if [ -z "$out" ] || [ "$out" = "None" ]; then
    die "$(target_description) has no output $1: deploy the current template.yaml first"
  fi
  printf '%s\n' "$out"
}

# The stack's DynamoDB table (numbers.sh, user-data.sh). Scripts that take --table set it; else
# resolve_table reads the stack's output TableName.
opt_table=""
table=""

# resolve_table: settles $table from --table, else from the stack's output TableName (one
# describe-stacks call). Exports the region and profile as resolve_target does.
resolve_table() {
  if [ -n "$opt_table" ]; then
    resolve_target 0
    table=$opt_table
  else
    resolve_target 1
    table=$(stack_output TableName)
  fi
}

# table_description: where the table commands go, for messages.
table_description() {
  if [ -n "$opt_table" ]; then
    printf 'table %s, region %s' "$table" "${AWS_REGION:-${AWS_DEFAULT_REGION:-of the AWS CLI config}}"
  else
    printf 'table %s of %s' "$table" "$(target_description)"
  fi
}

# scan_pages DIR FILTER NAMES_FILE VALUES_FILE [LIMIT]: scans $table with the filter expression
# FILTER (attribute names and values from the JSON files NAMES_FILE and VALUES_FILE, passed as
# file:// so that no value is on a command line), one request per page (--no-paginate, following
# LastEvaluatedKey), and writes each page's JSON output to DIR/page.N (N from 1). LIMIT, when
# given, is the number of items each request reads. Prints the number of pages.
scan_pages() {
  local dir=$1 filter=$2 names=$3 values=$4 limit=${5:-} n=0 start=()
  local extra=()
  if [ -n "$limit" ]; then extra=(--limit "$limit"); fi
  while :; do
    n=$((n + 1))
    aws dynamodb scan --table-name "$table" --filter-expression "$filter" \
      --expression-attribute-names "file://$names" --expression-attribute-values "file://$values" \
      --consistent-read --no-paginate --output json "${extra[@]}" "${start[@]}" >"$dir/page.$n" ||
      die "cannot scan $(table_description): does it exist, and may you dynamodb:Scan it?"
    python3 - "$dir/page.$n" "$dir/start.$n" <<'PY' || die "the scan's answer was not understood"
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    page = json.load(f)
last = page.get("LastEvaluatedKey")
if last:
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(last, f)
PY
    if [ ! -f "$dir/start.$n" ]; then break; fi
    start=(--exclusive-start-key "file://$dir/start.$n")
  done
  echo "$n"
}

# Python that turns DynamoDB's typed JSON into plain JSON: `plain(value)` for one attribute
# value, `plain_item(item)` for an item. Numbers become int when whole, else float.
dynamodb_plain_py=$(
  cat <<'PY'
import base64
from decimal import Decimal


def number(text):
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() else float(value)


def plain(value):
    (kind, inner), = value.items()
    if kind == "S":
        return inner
    if kind == "N":
        return number(inner)
    if kind in ("BOOL", "NULL"):
        return inner if kind == "BOOL" else None
    if kind == "B":
        return inner if isinstance(inner, str) else base64.b64encode(inner).decode()
    if kind == "M":
        return {k: plain(v) for k, v in inner.items()}
    if kind == "L":
        return [plain(v) for v in inner]
    if kind == "SS" or kind == "BS":
        return list(inner)
    if kind == "NS":
        return [number(v) for v in inner]
    raise ValueError(f"unknown DynamoDB type {kind}")


def plain_item(item):
    return {k: plain(v) for k, v in item.items()}
PY
)

# plain_py - ARGS... <<'PY' ... PY: runs the Python program on standard input with
# dynamodb_plain_py's plain() and plain_item() defined first.
plain_py() {
  local code
  code=$(cat)
  shift
  python3 -c "$dynamodb_plain_py"$'\n'"$code" "$@"
}
