#!/usr/bin/env bash
# Per-number settings in the stack's DynamoDB table: the item pk = "n#<phone_number_id>" with
# `settings` (the JSON of the contract, compact) and `updated_at`. Lists them, shows one, puts
# one after checking its file against the contract, or deletes one (the number then uses the
# stack's defaults). The processor re-reads a number's item at most once a minute. See --help.
set -euo pipefail

prog=numbers.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

usage() {
  case "${1:-}" in
    list)
      cat <<'EOF'
Usage: infra/numbers.sh list [options]

Lists every number that has settings: phone_number_id, name, enabled, the handoff agent's
number (last 4 digits only) and when the settings were last put. Numbers without settings use
the stack's defaults and are not listed. Reads the table with Scan (all pages).
EOF
      ;;
    show)
      cat <<'EOF'
Usage: infra/numbers.sh show PHONE_NUMBER_ID [options]

Prints the number's settings JSON, pretty-printed, on standard output (when they were put goes
to standard error), so that `show ID > FILE`, an edit and `put ID FILE` round-trip. Exits 1
when the number has no settings (it uses the stack's defaults).
EOF
      ;;
    put)
      cat <<'EOF'
Usage: infra/numbers.sh put PHONE_NUMBER_ID FILE.json [options]

Checks FILE against the settings contract (infra/README.md, "Per-number settings"): a JSON
object, every field optional, unknown fields refused, each field's type, length, range and form.
Every problem is printed as `FILE: field.path: what is wrong` (never a value of the file) and
the script exits 2 before any AWS call. A valid file is written, compact, as the number's item
(replacing any earlier one); the processors pick it up within a minute.
EOF
      ;;
    delete)
      cat <<'EOF'
Usage: infra/numbers.sh delete PHONE_NUMBER_ID [--yes] [options]

Deletes the number's settings: it falls back to the stack's defaults (within a minute). Asks
for confirmation on a terminal; --yes skips the question (needed without a terminal).
EOF
      ;;
    *)
      cat <<'EOF'
Usage: infra/numbers.sh list [options]
       infra/numbers.sh show PHONE_NUMBER_ID [options]
       infra/numbers.sh put PHONE_NUMBER_ID FILE.json [options]
       infra/numbers.sh delete PHONE_NUMBER_ID [--yes] [options]

Per-number settings (name, enabled, persona, model, knowledge and tools files, handoff, keywords,
limits, texts) in the stack's DynamoDB table, item pk = "n#<PHONE_NUMBER_ID>". A number without
settings uses the stack's defaults. PHONE_NUMBER_ID is Meta's id of the business number (1 to
20 digits), not the phone number itself. `infra/numbers.sh COMMAND --help` for each command.
EOF
      ;;
  esac
  cat <<'EOF'

Options:
  --table NAME         the DynamoDB table [the stack's output TableName]
  --yes                delete without asking
EOF
  common_opts_help
  cat <<'EOF'
  -h, --help           this text

Needs the AWS CLI and python3. AWS permissions: cloudformation:DescribeStacks (without --table);
dynamodb:Scan (list), GetItem (show), PutItem (put), DeleteItem (delete) on the table.
EOF
}

command=""
args=()
yes=0
help=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) help=1; shift ;;
    --yes) yes=1; shift ;;
    --table)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "--table needs a value (see --help)"; fi
      opt_table=$2
      shift 2
      ;;
    --config-env | --config-file | --stack-name | --region | --profile)
      set_common_opt "$@"
      shift 2
      ;;
    -*) die "unknown argument: $1 (see --help)" ;;
    *)
      if [ -z "$command" ]; then
        case "$1" in
          list | show | put | delete) command=$1 ;;
          *) die "unknown command: $1 (list, show, put or delete; see --help)" ;;
        esac
      else
        args+=("$1")
      fi
      shift
      ;;
  esac
done

if [ "$help" = 1 ]; then
  usage "$command"
  exit 0
fi
case "$command" in
  list) want=0 shape="list" ;;
  show) want=1 shape="show PHONE_NUMBER_ID" ;;
  put) want=2 shape="put PHONE_NUMBER_ID FILE.json" ;;
  delete) want=1 shape="delete PHONE_NUMBER_ID" ;;
  *) die "which command: list, show, put or delete? (see --help)" ;;
esac
if [ "${#args[@]}" -ne "$want" ]; then
  die "usage: infra/numbers.sh $shape (see infra/numbers.sh $command --help)"
fi
if [ "$yes" = 1 ] && [ "$command" != delete ]; then die "--yes goes with delete only"; fi
number_id=""
if [ "$want" -ge 1 ]; then
  number_id=${args[0]}
  if [[ ! "$number_id" =~ ^[0-9]{1,20}$ ]]; then
    die "PHONE_NUMBER_ID must be 1 to 20 digits (Meta's id of the business number, e.g. 106540352242922)"
  fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/numbers.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"

# The check of a settings file against the contract (SETTINGS.md of issue 15, infra/README.md
# "Per-number settings"). argv: the file. Prints every problem as `FILE: path: what` and exits 2,
# else exits 0. Never prints a value of the file: only field paths, and unknown field names when
# they are short plain names.
settings_check_py=$(
  cat <<'PY'
import json
import re
import sys
from urllib.parse import urlsplit

path = sys.argv[1]
problems = []

KEYWORDS = {"max_items": 20, "max_len": 40}
TEXT_KEYS = ("fallback", "unsupported", "handoff", "rate_limited", "opted_out", "opted_in",
             "reset", "budget_reached", "maintenance")
PROVIDERS = ("openai", "gemini", "bedrock")
SECRET_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")
BUCKET = re.compile(r"[a-z0-9.-]{3,63}")


def problem(field, what):
    problems.append(f"{path}: {field}: {what}")


def shown(key):
    """A field's name as a message may show it: a short plain name, else not at all."""
    return f"`{key}`" if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key) else "(a name not shown)"


def type_name(value):
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


def text(field, value, low, high):
    """A non-blank string of low..high characters."""
    if not isinstance(value, str):
        problem(field, f"must be a string, not {type_name(value)}")
        return False
    if not value.strip():
        problem(field, "must not be empty or blank")
        return False
    if not low <= len(value) <= high:
        problem(field, f"must be {low} to {high} characters long (it has {len(value)})")
        return False
    return True


def integer(field, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        problem(field, f"must be an integer, not {type_name(value)}")
    elif not low <= value <= high:
        problem(field, f"must be from {low} to {high}")


def boolean(field, value):
    if not isinstance(value, bool):
        problem(field, f"must be true or false, not {type_name(value)}")


def unknown(field_prefix, obj, known):
    for key in obj:
        if key not in known:
            where = f"{field_prefix}{key}" if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key) else f"{field_prefix}(a name not shown)"
            problem(where, "unknown field (a typo?); the fields are: " + ", ".join(known))


def s3_uri(field, value):
    if not text(field, value, 1, 2048):
        return
    rest = value[len("s3://"):] if value.startswith("s3://") else None
    bucket, _, key = (rest or "").partition("/")
    if rest is None or not BUCKET.fullmatch(bucket) or not key:
        problem(field, "must be s3://<bucket>/<key>: a bucket of 3 to 63 characters a-z 0-9 . - and a non-empty key")


def url(field, value):
    if not text(field, value, 1, 2048):
        return
    parts = urlsplit(value) if not re.search(r"\s", value) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        problem(field, "must be an http:// or https:// URL with a host, without spaces")


def keywords(field, value):
    if not isinstance(value, list):
        problem(field, f"must be a list of strings, not {type_name(value)}")
        return
    if not 1 <= len(value) <= KEYWORDS["max_items"]:
        problem(field, f"must hold 1 to {KEYWORDS['max_items']} keywords (it holds {len(value)})")
    for index, item in enumerate(value):
        text(f"{field}[{index}]", item, 1, KEYWORDS["max_len"])


def agent_number(field, value):
    if not isinstance(value, str):
        problem(field, f"must be a string of 8 to 15 digits, not {type_name(value)}")
    elif value.startswith("+"):
        problem(field, "must be digits only: drop the leading '+' (country code first, e.g. 34600111222)")
    elif not re.fullmatch(r"[0-9]{8,15}", value):
        problem(field, "must be 8 to 15 digits (country code first, no '+', spaces or dashes)")


def llm(field, value):
    if not isinstance(value, dict):
        problem(field, f"must be an object, not {type_name(value)}")
        return
    unknown(f"{field}.", value, ("provider", "model", "base_url", "api_key_secret"))
    provider = value.get("provider")
    if "provider" not in value:
        problem(f"{field}.provider", "missing (required in llm): one of " + ", ".join(PROVIDERS))
    elif provider not in PROVIDERS or not isinstance(provider, str):
        problem(f"{field}.provider", "must be one of " + ", ".join(PROVIDERS))
    if "model" not in value:
        problem(f"{field}.model", "missing (required in llm)")
    else:
        text(f"{field}.model", value["model"], 1, 200)
    if "base_url" in value:
        if provider == "bedrock":
            problem(f"{field}.base_url", "not for provider bedrock (Bedrock is reached in the stack's own account)")
        else:
            url(f"{field}.base_url", value["base_url"])
    if "api_key_secret" in value:
        secret = value["api_key_secret"]
        if provider == "bedrock":
            problem(f"{field}.api_key_secret", "not for provider bedrock (it takes no API key)")
        elif not isinstance(secret, str):
            problem(f"{field}.api_key_secret", f"must be a string, not {type_name(secret)}")
        elif not SECRET_KEY.fullmatch(secret):
            problem(f"{field}.api_key_secret", "must be 1 to 64 letters, digits or _ (a key of the stack's secret)")


def texts(field, value):
    if not isinstance(value, dict):
        problem(field, f"must be an object, not {type_name(value)}")
        return
    unknown(f"{field}.", value, TEXT_KEYS)
    for key in TEXT_KEYS:
        if key in value:
            text(f"{field}.{key}", value[key], 1, 1000)


FIELDS = {
    "name": lambda f, v: text(f, v, 1, 80),
    "enabled": boolean,
    "system_prompt": lambda f, v: text(f, v, 1, 20000),
    "llm": llm,
    "knowledge_uri": s3_uri,
    "tools_uri": s3_uri,
    "handoff_agent_number": agent_number,
    "handoff_keywords": keywords,
    "stop_keywords": keywords,
    "start_keywords": keywords,
    "rate_limit_per_minute": lambda f, v: integer(f, v, 0, 1000),
    "daily_token_budget": lambda f, v: integer(f, v, 0, 1_000_000_000),
    "texts": texts,
}


class Duplicate(ValueError):
    pass


def no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise Duplicate(shown(key))
        seen[key] = value
    return seen


def refuse_constant(name):
    raise ValueError(f"{name} is not a JSON value")


def load():
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        problem("(file)", f"cannot be read: {err.strerror}")
        return None
    try:
        body = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        problem("(file)", f"not UTF-8 text (an invalid byte at offset {err.start})")
        return None
    try:
        return json.loads(body, object_pairs_hook=no_duplicates, parse_constant=refuse_constant)
    except Duplicate as err:
        problem("(file)", f"the field {err} is given twice in one object")
    except json.JSONDecodeError as err:  # its msg holds what was expected, not the contents
        problem("(file)", f"not JSON: {err.msg} at line {err.lineno} column {err.colno}")
    except (ValueError, RecursionError) as err:
        problem("(file)", f"not JSON: {err}")
    return None


doc = load()
if not problems:
    if not isinstance(doc, dict):
        problem("(top level)", f"must be a JSON object {{...}}, not {type_name(doc)}")
    else:
        unknown("", doc, tuple(FIELDS))
        for name, check in FIELDS.items():
            if name in doc:
                check(name, doc[name])
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(2)
PY
)

# check_settings FILE: exits 2 with every problem of FILE (see settings_check_py); calls nothing
# but python3.
check_settings() {
  need_cmd python3 "it checks the settings file"
  if [ -d "$1" ]; then
    printf '%s: (file): a directory, not a file\n' "$1" >&2
    exit 2
  fi
  set +e
  python3 -c "$settings_check_py" "$1"
  local status=$?
  set -e
  if [ "$status" = 2 ]; then
    printf '%s: the settings were not written (nothing was sent to AWS)\n' "$prog" >&2
    exit 2
  fi
  [ "$status" = 0 ] || die "could not check $1"
}

# key_file: writes the number's key as DynamoDB JSON to a file and prints its path.
key_file() {
  printf '{"pk": {"S": "n#%s"}}\n' "$number_id" >"$work/key.json"
  printf '%s\n' "$work/key.json"
}

list_numbers() {
  local pages
  printf '{"#pk": "pk"}\n' >"$work/names.json"
  printf '{":n": {"S": "n#"}}\n' >"$work/values.json"
  pages=$(scan_pages "$work" "begins_with(#pk, :n)" "$work/names.json" "$work/values.json")
  plain_py - "$work" "$pages" "$(table_description)" <<'PY' || die "the table's answer was not understood"
import json
import sys
import time

work, pages, where = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
for n in range(1, pages + 1):
    with open(f"{work}/page.{n}", encoding="utf-8") as f:
        items = json.load(f).get("Items", [])
    for item in map(plain_item, items):
        pk = str(item.get("pk", ""))
        if not pk.startswith("n#"):
            continue
        try:
            settings = json.loads(item.get("settings", ""))
            if not isinstance(settings, dict):
                raise ValueError
        except ValueError:
            settings = None
        updated = item.get("updated_at")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(updated)) if isinstance(updated, (int, float)) else "-"
        if settings is None:
            rows.append((pk[2:], "(settings not JSON)", "-", "-", when))
            continue
        agent = settings.get("handoff_agent_number")
        masked = ("*" * max(len(agent) - 4, 0) + agent[-4:]) if isinstance(agent, str) and len(agent) > 4 else ("****" if agent else "-")
        enabled = settings.get("enabled")
        rows.append((pk[2:], str(settings.get("name", "-")), "-" if enabled is None else str(enabled).lower(), masked, when))
if not rows:
    print(f"No number has settings in {where}: every number uses the stack's defaults.")
    sys.exit(0)
rows.sort(key=lambda r: (len(r[0]), r[0]))
head = ("phone_number_id", "name", "enabled", "agent", "updated_at")
widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
for row in [head] + rows:
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
PY
}

show_number() {
  local key
  key=$(key_file)
  aws dynamodb get-item --table-name "$table" --key "file://$key" --consistent-read --output json >"$work/item.json" ||
    die "cannot read $(table_description): does it exist, and may you dynamodb:GetItem it?"
  plain_py - "$work/item.json" "$number_id" <<'PY'
import json
import sys
import time

with open(sys.argv[1], encoding="utf-8") as f:
    answer = json.loads(f.read() or "{}")  # the AWS CLI prints nothing when there is no item
item = plain_item(answer.get("Item") or {})
if "settings" not in item:
    sys.exit(f"numbers.sh: number {sys.argv[2]} has no settings: it uses the stack's defaults")
updated = item.get("updated_at")
if isinstance(updated, (int, float)):
    print("# updated_at " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(updated)), file=sys.stderr)
try:
    print(json.dumps(json.loads(item["settings"]), indent=2, ensure_ascii=False))
except ValueError:
    sys.exit(f"numbers.sh: number {sys.argv[2]}: its settings are not JSON; put them again")
PY
}

put_number() {
  local file=${args[1]}
  check_settings "$file"
  need_cmd aws "install the AWS CLI, see infra/README.md"
  resolve_table
  python3 - "$file" "$number_id" "$work/item.json" <<'PY' || die "could not prepare the item"
import json
import os
import sys
import time

path, number_id, out = sys.argv[1:4]
with open(path, encoding="utf-8-sig") as f:
    settings = json.load(f)
item = {
    "pk": {"S": f"n#{number_id}"},
    "settings": {"S": json.dumps(settings, separators=(",", ":"), ensure_ascii=False)},
    "updated_at": {"N": str(int(time.time()))},
}
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump(item, f, ensure_ascii=False)
PY
  aws dynamodb put-item --table-name "$table" --item "file://$work/item.json" >/dev/null ||
    die "could not write the settings of number $number_id to $(table_description) (you need dynamodb:PutItem)"
  echo "Saved the settings of number $number_id in $(table_description)."
  echo "The processors pick them up within a minute."
}

delete_number() {
  local key answer
  if [ "$yes" != 1 ]; then
    [ -t 0 ] || die "delete asks for confirmation: run it on a terminal, or pass --yes"
    printf 'Delete the settings of number %s (it falls back to the stack defaults)? [y/N] ' "$number_id" >&2
    read -r answer || answer=""
    case "$answer" in
      y | Y | yes | YES) ;;
      *) echo "Nothing deleted." >&2; exit 1 ;;
    esac
  fi
  key=$(key_file)
  aws dynamodb delete-item --table-name "$table" --key "file://$key" --return-values ALL_OLD \
    --output json >"$work/old.json" ||
    die "could not delete the settings of number $number_id from $(table_description) (you need dynamodb:DeleteItem)"
  if python3 -c 'import json, sys; sys.exit(0 if json.loads(open(sys.argv[1]).read() or "{}").get("Attributes") else 1)' "$work/old.json" 2>/dev/null; then
    echo "Deleted the settings of number $number_id from $(table_description)."
    echo "It uses the stack's defaults again within a minute."
  else
    echo "Number $number_id had no settings in $(table_description); nothing was deleted."
  fi
}

case "$command" in
  list) need_cmd python3 "it reads the table's answers"; need_cmd aws "install the AWS CLI, see infra/README.md"; resolve_table; list_numbers ;;
  show) need_cmd python3 "it reads the table's answers"; need_cmd aws "install the AWS CLI, see infra/README.md"; resolve_table; show_number ;;
  put) put_number ;;
  delete) need_cmd python3 "it reads the table's answers"; need_cmd aws "install the AWS CLI, see infra/README.md"; resolve_table; delete_number ;;
esac
