#!/usr/bin/env bash
# Uploads the knowledge document (FAQs, policies, a catalogue, in Markdown or text), or with
# --tools the tools file (JSON), to the stack's bucket (output KnowledgeBucketName) and says how
# to point the processor at it (parameter KnowledgeUri, or ToolsUri), or shows the one the stack
# uses. Both kinds take the same path; the kind_* variables say what differs. A file's contents
# are never printed. See --help.
set -euo pipefail

prog=knowledge.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

# The processor reads KNOWLEDGE_MAX_TOKENS at about 4 bytes a token (template default 8000).
bytes_per_token=4
default_max_tokens=8000
refresh_seconds=300

usage() {
  cat <<'EOF'
Usage: infra/knowledge.sh put [--tools] FILE [--key KEY] [options]
       infra/knowledge.sh show [--tools] [options]

put FILE   checks that FILE is non-empty UTF-8 text, warns when it is over the stack's budget
           (KnowledgeMaxTokens, about 4 bytes a token), uploads it to the stack's bucket
           (output KnowledgeBucketName) as KEY, and prints the KnowledgeUri to deploy with. When
           the stack already uses that URI, no deploy is needed: the processor reads the new
           version within 5 minutes (KNOWLEDGE_REFRESH_SECONDS), by its ETag.
show       prints the stack's KnowledgeUri and its object's size, ETag and LastModified.

--tools    the same for the tools file, the business's HTTP APIs the model may call: parameter
           ToolsUri, key tools/<FILE's name>, Content-Type application/json, no budget. Before
           any AWS call, put --tools checks that FILE is UTF-8 JSON {"tools": [...]} with 1 to
           32 tools, each an object with a unique name of 1 to 64 letters, digits, _ or -, and
           with description, parameters, method, url and side_effects. The processor checks
           the rest when it reads the file (the parameters' JSON Schema, the method, the URL's
           rules, the headers, timeout_seconds, unknown fields): a bad file is an ERROR
           tools_file_invalid naming the tool (counted from #0) and the field, and the bot
           answers without tools, or with the last valid version. The format: README.md,
           "The tools file"; an example: infra/examples/shop/tools.json.

Options:
  --tools              the tools file instead of the knowledge document
  --key KEY            the object's key [knowledge/ or tools/<FILE's name>]; letters, digits
                       and . _ - /
  --dry-run            check the file and print what would be done; writes nothing (it still
                       reads the stack's outputs and parameters)
EOF
  common_opts_help
  cat <<'EOF'
  -h, --help           this text

The file's contents are never printed (a tools file's header values may be literal keys).
Markdown (.md) goes up as text/markdown, .txt as text/plain, both with charset=utf-8.

Examples:
  infra/knowledge.sh put FAQ.md --dry-run
  infra/knowledge.sh put FAQ.md                        # dev: s3://<bucket>/knowledge/FAQ.md
  infra/knowledge.sh put FAQ.md --config-env prod
  infra/knowledge.sh show
  infra/knowledge.sh put --tools tools.json            # s3://<bucket>/tools/tools.json
  infra/knowledge.sh show --tools

Needs the AWS CLI and python3. AWS permissions: cloudformation:DescribeStacks; s3:PutObject on
the bucket (put); s3:GetObject on the object (show).
EOF
}

command=""
file=""
key=""
dry_run=0
kind=knowledge
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry_run=1; shift ;;
    --tools) kind=tools; shift ;;
    --key)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "--key needs a value (see --help)"; fi
      key=$2
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
          put | show) command=$1 ;;
          *) die "unknown command: $1 (put FILE, or show; see --help)" ;;
        esac
      elif [ "$command" = put ] && [ -z "$file" ]; then
        file=$1
      else
        die "unexpected argument: $1 (see --help)"
      fi
      shift
      ;;
  esac
done

case "$command" in
  put) [ -n "$file" ] || die "put needs a file: infra/knowledge.sh put [--tools] FILE (see --help)" ;;
  show) [ -z "$key" ] || die "--key goes with put only" ;;
  *) die "which command: put FILE, or show? (see --help)" ;;
esac

# What differs between the two kinds of file: the template parameter, the default key's prefix,
# what to call it, what the processor logs when it cannot read it, and the flag that commands
# repeat. The check and the Content-Type go by $kind too (check_file, content_type).
case "$kind" in
  knowledge)
    kind_param=KnowledgeUri kind_prefix=knowledge kind_what="knowledge document"
    kind_unavailable="knowledge_unavailable and answers without it" kind_flag=""
    ;;
  tools)
    kind_param=ToolsUri kind_prefix=tools kind_what="tools file"
    kind_unavailable="tools_unavailable and answers without tools" kind_flag=" --tools"
    ;;
esac

# stack_parameter NAME: prints the stack's current value of the template parameter NAME, or
# nothing when it is empty or the stack does not have it.
stack_parameter() {
  local out
  out=$(aws cloudformation describe-stacks --stack-name "$stack_name" \
    --query "Stacks[0].Parameters[?ParameterKey=='$1'].ParameterValue | [0]" --output text) ||
    die "cannot read the parameters of $(target_description): is it deployed, in that region, and are your AWS credentials valid?"
  if [ "$out" != "None" ]; then
    printf '%s\n' "$out"
  fi
}

# budget_tokens: the stack's KnowledgeMaxTokens, else the template's default.
budget_tokens() {
  local tokens
  tokens=$(stack_parameter KnowledgeMaxTokens)
  case "$tokens" in
    '' | *[!0-9]*) echo "$default_max_tokens" ;;
    *) echo "$tokens" ;;
  esac
}

# The check of a file, in python3: argv is the script's name, the file and the kind. Fails with a
# message naming what is wrong (for a tools file, the tool, counted from #0 as the processor's
# tools_file_invalid does, and the field), else prints the file's size in bytes as the processor
# counts them (without a leading byte-order mark). Prints nothing of the file's contents: only
# positions, tool names that passed the name rule, and short plain field names.
file_check_py=$(
  cat <<'PY'
import json
import re
import sys

prog, path, kind = sys.argv[1:4]
MAX_TOOLS = 32  # shared/src/tools/file.rs, MAX_TOOLS
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
REQUIRED = ("description", "parameters", "method", "url", "side_effects")


def fail(reason):
    sys.exit(f"{prog}: {path}: {reason}")


def read_text():
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        fail("UTF-16 text, not UTF-8: save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        fail(f"not UTF-8 text (an invalid byte at offset {err.start}): save it as UTF-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        fail("empty (nothing but white space)")
    return text


def shown(key):
    """A field's name as a message may show it: a short plain name, else not at all."""
    return f"`{key}`" if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key) else "(a name not shown)"


def refuse_constant(name):
    raise ValueError(f"{name} is not a JSON value")


def check_tools(text):
    try:
        doc = json.loads(text, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as err:  # its message holds positions, not contents
        fail(f"not JSON: {err}")
    if not isinstance(doc, dict):
        fail('not {"tools": [...]}: the top level is not an object')
    for key in doc:
        if key != "tools":
            fail(f'unknown top-level field {shown(key)}: the file is {{"tools": [...]}} and nothing else')
    if "tools" not in doc:
        fail('no "tools" field: the file is {"tools": [...]}')
    tools = doc["tools"]
    if not isinstance(tools, list):
        fail('"tools" is not a list')
    if not tools:
        fail('"tools" is empty: for no tools, deploy with ToolsUri empty instead')
    if len(tools) > MAX_TOOLS:
        fail(f"declares {len(tools)} tools; at most {MAX_TOOLS} are allowed")
    seen = {}
    for index, tool in enumerate(tools):
        check_tool(index, tool, seen)


def check_tool(index, tool, seen):
    if not isinstance(tool, dict):
        fail(f"tool #{index}: not an object")
    if "name" not in tool:
        fail(f"tool #{index} (unnamed): missing field `name`")
    name = tool["name"]
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        fail(f"tool #{index}: name must be a string of 1 to 64 letters, digits, `_` or `-`")
    label = f'tool #{index} "{name}"'
    if name in seen:
        fail(f"{label}: the name is already used by tool #{seen[name]}")
    seen[name] = index
    missing = [f"`{field}`" for field in REQUIRED if field not in tool]
    if missing:
        fail(f"{label}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")


text = read_text()
if kind == "tools":
    check_tools(text)
elif "\x00" in text:
    fail("holds NUL bytes, so it is not a text document")
print(len(text.encode("utf-8")))
PY
)

# check_file FILE: fails with a clear message unless FILE is a valid file of this kind: for the
# knowledge document non-empty UTF-8 text, for the tools file what file_check_py checks. Prints
# its size in bytes. Calls nothing but python3.
check_file() {
  [ -e "$1" ] || die "$1: no such file"
  [ -f "$1" ] || die "$1: not a regular file"
  [ -r "$1" ] || die "$1: not readable"
  need_cmd python3 "it checks the $kind_what"
  python3 -c "$file_check_py" "$prog" "$1" "$kind" || die "$1 was not uploaded"
}

# content_type FILE: the object's Content-Type: JSON for the tools file, else by the file's
# extension.
content_type() {
  if [ "$kind" = tools ]; then
    echo "application/json"
    return
  fi
  case "$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" in
    *.txt | *.text) echo "text/plain; charset=utf-8" ;;
    *) echo "text/markdown; charset=utf-8" ;;
  esac
}

# object_key FILE: --key, checked, or <kind_prefix>/<FILE's name> with other characters as "-".
# The key is used as it is in the s3:// URI and in the processor's IAM grant, where "*" and "?"
# would be wildcards, so it keeps to characters that need no escaping anywhere.
object_key() {
  local name
  if [ -n "$key" ]; then
    if [[ ! "$key" =~ ^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$ ]] || [[ "/$key/" == */./* ]] || [[ "/$key/" == */../* ]]; then
      die "--key $key: use letters, digits and . _ - in names separated by single /, with no . or .. name"
    fi
    printf '%s\n' "$key"
    return
  fi
  name=$(basename "$1" | LC_ALL=C tr -c 'A-Za-z0-9._\n-' '-')
  case "$name" in
    . | .. | '') die "$1: pass a key with --key" ;;
  esac
  printf '%s/%s\n' "$kind_prefix" "$name"
}

# sam_flags: the options a sam command needs to reach the same stack as this script did.
sam_flags() {
  local flags=""
  if [ "$opt_config_env" != default ]; then flags+=" --config-env $opt_config_env"; fi
  if [ "$opt_config_file" != "$infra_dir/../samconfig.toml" ]; then flags+=" --config-file $opt_config_file"; fi
  if [ -n "$opt_stack_name" ]; then flags+=" --stack-name $opt_stack_name"; fi
  if [ -n "$opt_region" ]; then flags+=" --region $opt_region"; fi
  if [ -n "$opt_profile" ]; then flags+=" --profile $opt_profile"; fi
  printf '%s' "$flags"
}

# warn_budget BYTES TOKENS: a warning when BYTES is over the budget of TOKENS.
warn_budget() {
  local budget=$(($2 * bytes_per_token))
  if [ "$1" -gt "$budget" ]; then
    warn "the document is $1 bytes (about $(($1 / bytes_per_token)) tokens), over the budget of KnowledgeMaxTokens=$2 (about $budget bytes): the processor leaves out its end beyond that (WARN knowledge_truncated). Shorten it, or raise KnowledgeMaxTokens."
  fi
}

# refresh_note: how a new version under the same URI reaches the processor.
refresh_note() {
  echo "no deploy is needed. The processor reads the new version within ${refresh_seconds} s"
  echo "(KNOWLEDGE_REFRESH_SECONDS), when it sees its ETag change."
  if [ "$kind" = tools ]; then
    echo "It checks the whole file then: if it is not valid, it logs an ERROR tools_file_invalid"
    echo "naming the tool and field, and keeps the last valid version until the file is fixed."
  fi
}

# how_to_use URI CURRENT: what to do for the stack to read URI, whose kind_param is CURRENT.
how_to_use() {
  local uri=$1 current=$2 configured others flags config=samconfig.toml
  flags=$(sam_flags)
  if [ "$opt_config_file" != "$infra_dir/../samconfig.toml" ]; then config=$opt_config_file; fi
  configured=$(samconfig_query parameter "$kind_param") || die "cannot read $opt_config_file"
  if [ "$current" = "$uri" ]; then
    echo "The stack already uses $kind_param=$uri:"
    refresh_note
    if [ -n "$configured" ] && [ "$configured" != "$uri" ]; then
      warn "$config sets $kind_param=$configured for '$opt_config_env': the next sam deploy would switch to that one"
    fi
    return
  fi
  if [ -n "$current" ]; then
    echo "The stack uses $kind_param=$current now."
  else
    echo "The stack uses no $kind_what now ($kind_param is empty)."
  fi
  echo "To use this one, set $kind_param (once) and deploy:"
  if [ "$configured" = "$uri" ]; then
    echo "  $config already sets it ([$opt_config_env.deploy.parameters]); deploy with:"
  elif [ -n "$configured" ]; then
    echo "  in $config, [$opt_config_env.deploy.parameters] parameter_overrides, replace"
    echo "  \"$kind_param=$configured\" with \"$kind_param=$uri\", then:"
  else
    echo "  in $config, add to [$opt_config_env.deploy.parameters] parameter_overrides:"
    echo "    \"$kind_param=$uri\","
    echo "  then:"
  fi
  echo "    sam build$flags && sam deploy$flags"
  others=$(samconfig_query overrides-except "$kind_param") || die "cannot read $opt_config_file"
  echo "  or, for one deploy (--parameter-overrides replaces the file's list, so it repeats it):"
  echo "    sam deploy$flags --parameter-overrides ${others:+$others }$kind_param=$uri"
  echo "Later versions of the $kind_what need no deploy: put them again under the same key."
}

# put_file: the put command. The file is checked before any AWS call.
put_file() {
  local size bucket current object_name type uri etag
  size=$(check_file "$file")
  object_name=$(object_key "$file")
  type=$(content_type "$file")
  need_cmd aws "install the AWS CLI, see infra/README.md"
  resolve_target 1
  bucket=$(stack_output KnowledgeBucketName)
  if [ "$kind" = knowledge ]; then
    warn_budget "$size" "$(budget_tokens)"
  fi
  current=$(stack_parameter "$kind_param")
  uri="s3://$bucket/$object_name"
  if [ "$dry_run" = 1 ]; then
    echo "Dry run: nothing is written."
    echo "Would upload: $file ($size bytes, $type)"
    echo "          to: $uri ($(target_description))"
    echo
    how_to_use "$uri" "$current"
    return
  fi
  etag=$(aws s3api put-object --bucket "$bucket" --key "$object_name" --body "$file" \
    --content-type "$type" --query ETag --output text) ||
    die "could not upload $file to $uri (you need s3:PutObject on the bucket $bucket)"
  echo "Uploaded $file ($size bytes, $type)"
  echo "      to $uri (ETag $etag)"
  echo
  how_to_use "$uri" "$current"
}

# show_file: the show command.
show_file() {
  local uri bucket object_name head size etag modified type size_is_bytes
  need_cmd aws "install the AWS CLI, see infra/README.md"
  resolve_target 1
  uri=$(stack_parameter "$kind_param")
  if [ -z "$uri" ]; then
    echo "$(target_description): no $kind_what ($kind_param is empty)."
    echo "Upload one with: infra/knowledge.sh put$kind_flag FILE$(sam_flags)"
    return
  fi
  case "$uri" in
    s3://*/?*) ;;
    *) die "the stack's $kind_param $uri is not s3://bucket/key" ;;
  esac
  bucket=${uri#s3://}
  bucket=${bucket%%/*}
  object_name=${uri#s3://"$bucket"/}
  head=$(aws s3api head-object --bucket "$bucket" --key "$object_name" \
    --query '[ContentLength, ETag, LastModified, ContentType]' --output text) ||
    die "cannot read $uri: it is missing, or you lack s3:GetObject on it. The processor then logs $kind_unavailable; put it with infra/knowledge.sh put$kind_flag FILE"
  IFS=$'\t' read -r size etag modified type <<<"$head"
  echo "The $kind_what of $(target_description):"
  printf '  %-15s%s\n' "$kind_param:" "$uri"
  case "$size" in
    '' | *[!0-9]*) size_is_bytes=0 ;;
    *) size_is_bytes=1 ;;
  esac
  if [ "$size_is_bytes" = 0 ]; then
    echo "  size:          $size"
  elif [ "$kind" = knowledge ]; then
    echo "  size:          $size bytes (about $((size / bytes_per_token)) tokens)"
  else
    echo "  size:          $size bytes"
  fi
  echo "  ETag:          $etag"
  echo "  LastModified:  $modified"
  echo "  Content-Type:  $type"
  if [ "$size_is_bytes" = 1 ] && [ "$kind" = knowledge ]; then
    warn_budget "$size" "$(budget_tokens)"
  fi
}

case "$command" in
  put) put_file ;;
  show) show_file ;;
esac
