#!/usr/bin/env bash
# Uploads the knowledge document (FAQs, policies, a catalogue, in Markdown or text) to the
# stack's bucket (output KnowledgeBucketName) and says how to point the processor at it
# (parameter KnowledgeUri), or shows the document the stack uses. The document's contents are
# never printed. See --help.
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
Usage: infra/knowledge.sh put FILE [--key KEY] [options]
       infra/knowledge.sh show [options]

put FILE   checks that FILE is non-empty UTF-8 text, warns when it is over the stack's budget
           (KnowledgeMaxTokens, about 4 bytes a token), uploads it to the stack's bucket
           (output KnowledgeBucketName) as KEY, and prints the KnowledgeUri to deploy with. When
           the stack already uses that URI, no deploy is needed: the processor reads the new
           version within 5 minutes (KNOWLEDGE_REFRESH_SECONDS), by its ETag.
show       prints the stack's KnowledgeUri and its object's size, ETag and LastModified.

Options:
  --key KEY            the object's key [knowledge/<FILE's name>]; letters, digits and . _ - /
  --dry-run            check the file and print what would be done; writes nothing (it still
                       reads the stack's outputs and parameters)
EOF
  common_opts_help
  cat <<'EOF'
  -h, --help           this text

The document's contents are never printed. Markdown (.md) goes up as text/markdown, .txt as
text/plain, both with charset=utf-8.

Examples:
  infra/knowledge.sh put FAQ.md --dry-run
  infra/knowledge.sh put FAQ.md                        # dev: s3://<bucket>/knowledge/FAQ.md
  infra/knowledge.sh put FAQ.md --config-env prod
  infra/knowledge.sh show

Needs the AWS CLI and python3. AWS permissions: cloudformation:DescribeStacks; s3:PutObject on
the bucket (put); s3:GetObject on the document (show).
EOF
}

command=""
file=""
key=""
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry_run=1; shift ;;
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
  put) [ -n "$file" ] || die "put needs the document: infra/knowledge.sh put FILE (see --help)" ;;
  show) [ -z "$key" ] || die "--key goes with put only" ;;
  *) die "which command: put FILE, or show? (see --help)" ;;
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

# check_document FILE: fails with a clear message unless FILE is non-empty UTF-8 text; prints
# its size in bytes as the processor counts them (without a leading byte-order mark). Reads the
# file in python3 and prints nothing of its contents.
check_document() {
  [ -e "$1" ] || die "$1: no such file"
  [ -f "$1" ] || die "$1: not a regular file"
  [ -r "$1" ] || die "$1: not readable"
  need_cmd python3 "it checks that the document is UTF-8 text"
  python3 - "$prog" "$1" <<'PY' || die "$1 was not uploaded"
import sys

prog, path = sys.argv[1:3]
with open(path, "rb") as f:
    data = f.read()
if data.startswith((b"\xff\xfe", b"\xfe\xff")):
    sys.exit(f"{prog}: {path}: UTF-16 text, not UTF-8: save it as UTF-8")
try:
    text = data.decode("utf-8")
except UnicodeDecodeError as err:
    sys.exit(f"{prog}: {path}: not UTF-8 text (an invalid byte at offset {err.start}): save it as UTF-8")
if text.startswith("\ufeff"):
    text = text[1:]
if "\x00" in text:
    sys.exit(f"{prog}: {path}: holds NUL bytes, so it is not a text document")
if not text.strip():
    sys.exit(f"{prog}: {path}: empty (nothing but white space)")
print(len(text.encode("utf-8")))
PY
}

# content_type FILE: the object's Content-Type, by the file's extension.
content_type() {
  case "$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" in
    *.txt | *.text) echo "text/plain; charset=utf-8" ;;
    *) echo "text/markdown; charset=utf-8" ;;
  esac
}

# object_key FILE: --key, checked, or knowledge/<FILE's name> with other characters as "-".
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
  printf 'knowledge/%s\n' "$name"
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

# how_to_use URI CURRENT: what to do for the stack to read URI, whose KnowledgeUri is CURRENT.
how_to_use() {
  local uri=$1 current=$2 configured others flags config=samconfig.toml
  flags=$(sam_flags)
  if [ "$opt_config_file" != "$infra_dir/../samconfig.toml" ]; then config=$opt_config_file; fi
  configured=$(samconfig_query parameter KnowledgeUri) || die "cannot read $opt_config_file"
  if [ "$current" = "$uri" ]; then
    echo "The stack already uses KnowledgeUri=$uri:"
    echo "no deploy is needed. The processor reads the new version within ${refresh_seconds} s"
    echo "(KNOWLEDGE_REFRESH_SECONDS), when it sees its ETag change."
    if [ -n "$configured" ] && [ "$configured" != "$uri" ]; then
      warn "$config sets KnowledgeUri=$configured for '$opt_config_env': the next sam deploy would switch to that one"
    fi
    return
  fi
  if [ -n "$current" ]; then
    echo "The stack uses KnowledgeUri=$current now."
  else
    echo "The stack uses no knowledge document now (KnowledgeUri is empty)."
  fi
  echo "To use this one, set KnowledgeUri (once) and deploy:"
  if [ "$configured" = "$uri" ]; then
    echo "  $config already sets it ([$opt_config_env.deploy.parameters]); deploy with:"
  elif [ -n "$configured" ]; then
    echo "  in $config, [$opt_config_env.deploy.parameters] parameter_overrides, replace"
    echo "  \"KnowledgeUri=$configured\" with \"KnowledgeUri=$uri\", then:"
  else
    echo "  in $config, add to [$opt_config_env.deploy.parameters] parameter_overrides:"
    echo "    \"KnowledgeUri=$uri\","
    echo "  then:"
  fi
  echo "    sam build$flags && sam deploy$flags"
  others=$(samconfig_query overrides-except KnowledgeUri) || die "cannot read $opt_config_file"
  echo "  or, for one deploy (--parameter-overrides replaces the file's list, so it repeats it):"
  echo "    sam deploy$flags --parameter-overrides ${others:+$others }KnowledgeUri=$uri"
  echo "Later versions of the document need no deploy: put them again under the same key."
}

# put_document: the put command.
put_document() {
  local size bucket tokens current object_name type uri etag
  size=$(check_document "$file")
  object_name=$(object_key "$file")
  type=$(content_type "$file")
  need_cmd aws "install the AWS CLI, see infra/README.md"
  resolve_target 1
  bucket=$(stack_output KnowledgeBucketName)
  tokens=$(budget_tokens)
  current=$(stack_parameter KnowledgeUri)
  uri="s3://$bucket/$object_name"
  warn_budget "$size" "$tokens"
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

# show_document: the show command.
show_document() {
  local uri bucket object_name head size etag modified type tokens
  need_cmd aws "install the AWS CLI, see infra/README.md"
  resolve_target 1
  uri=$(stack_parameter KnowledgeUri)
  if [ -z "$uri" ]; then
    echo "$(target_description): no knowledge document (KnowledgeUri is empty)."
    echo "Upload one with: infra/knowledge.sh put FILE$(sam_flags)"
    return
  fi
  case "$uri" in
    s3://*/?*) ;;
    *) die "the stack's KnowledgeUri $uri is not s3://bucket/key" ;;
  esac
  bucket=${uri#s3://}
  bucket=${bucket%%/*}
  object_name=${uri#s3://"$bucket"/}
  head=$(aws s3api head-object --bucket "$bucket" --key "$object_name" \
    --query '[ContentLength, ETag, LastModified, ContentType]' --output text) ||
    die "cannot read $uri: it is missing, or you lack s3:GetObject on it. The processor then logs knowledge_unavailable and answers without it; put it with infra/knowledge.sh put FILE"
  IFS=$'\t' read -r size etag modified type <<<"$head"
  echo "Knowledge document of $(target_description):"
  echo "  KnowledgeUri:  $uri"
  case "$size" in
    '' | *[!0-9]*) echo "  size:          $size" ;;
    *) echo "  size:          $size bytes (about $((size / bytes_per_token)) tokens)" ;;
  esac
  echo "  ETag:          $etag"
  echo "  LastModified:  $modified"
  echo "  Content-Type:  $type"
  case "$size" in
    '' | *[!0-9]*) ;;
    *)
      tokens=$(budget_tokens)
      warn_budget "$size" "$tokens"
      ;;
  esac
}

case "$command" in
  put) put_document ;;
  show) show_document ;;
esac
