#!/usr/bin/env bash
# A user's data in the stack's DynamoDB table, on the user's request: export it as plain JSON,
# or delete it (keeping a minimal opt-out record when the user opted out, so that the bot stays
# silent). Covers every business number. Prints counts and masked keys, never message texts.
# See --help.
set -euo pipefail

prog="user-data.sh"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

usage() {
  cat <<'EOF'
Usage: infra/user-data.sh export USER [--out FILE] [options]
       infra/user-data.sh delete USER [--yes] [options]

USER is the user's WhatsApp number (digits; a leading + is dropped) or business-scoped user id
(US.…). Both commands scan the whole table (every business number) for the items of USER's
conversations: history slots (h#), the first layout's conversation item (conv#), the opt-out
record (u#), rate and token counters (r#, b#), message claims that name the conversation (id#
with c), the handoff (ho#) and its reference (hr#).

export   writes {"user", "exported_at", "conversations": {"<phone_number_id>:<user>": {"history",
         "legacy", "opt_out", "handoff", "counters", "claims", "references"}}} as plain JSON to
         FILE (created with mode 600) or standard output.
delete   deletes all of them, except the opt-out record of a user who opted out: it is rewritten
         to pk, opted_out and at only, so that the bot stays silent to them. Prints the counts
         per kind.

Options:
  --out FILE           export: write to FILE (mode 600) instead of standard output
  --yes                delete: do not ask for confirmation (needed without a terminal)
  --page-size N        items read per Scan request [DynamoDB's 1 MB pages]
  --table NAME         the DynamoDB table [the stack's output TableName]
EOF
  common_opts_help
  cat <<'EOF'
  -h, --help           this text

Claims written before conversation keys were recorded on them (no `c`) cannot be attributed to a
user; they expire 8 days after their last write. A message being answered while this runs may
write again: run it when the user is not writing.

Needs the AWS CLI and python3. AWS permissions: cloudformation:DescribeStacks (without --table);
dynamodb:Scan; for delete also dynamodb:BatchWriteItem and PutItem on the table.
EOF
}

command=""
user=""
out_file=""
yes=0
page_size=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --yes) yes=1; shift ;;
    --out | --table | --page-size)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi
      case "$1" in
        --out) out_file=$2 ;;
        --table) opt_table=$2 ;;
        --page-size) page_size=$2 ;;
      esac
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
          export | delete) command=$1 ;;
          *) die "unknown command: $1 (export USER, or delete USER; see --help)" ;;
        esac
      elif [ -z "$user" ]; then
        user=${1#+}
        [ -n "$user" ] || die "USER is empty"
      else
        die "unexpected argument: $1 (see --help)"
      fi
      shift
      ;;
  esac
done

case "$command" in
  export | delete) ;;
  *) die "which command: export USER, or delete USER? (see --help)" ;;
esac
[ -n "$user" ] || die "$command needs a user: infra/user-data.sh $command USER (see --help)"
if [[ ! "$user" =~ ^[0-9]{1,20}$ ]] && [[ ! "$user" =~ ^US\.[A-Za-z0-9.]{1,120}$ ]]; then
  die "USER must be a phone number (digits, country code first) or a business-scoped user id (US.…)"
fi
if [ -n "$out_file" ] && [ "$command" != export ]; then die "--out goes with export only"; fi
if [ "$yes" = 1 ] && [ "$command" != delete ]; then die "--yes goes with delete only"; fi
if [ -n "$page_size" ] && [[ ! "$page_size" =~ ^[1-9][0-9]{0,3}$ ]]; then die "--page-size must be 1 to 9999"; fi
if [ -n "$out_file" ] && [ -d "$out_file" ]; then die "--out $out_file is a directory"; fi

# The user, masked as the functions' logs mask it: only the last 4 characters.
masked=$(python3 -c 'import sys; u = sys.argv[1]; print("*" * max(len(u) - 4, 0) + u[-4:] if len(u) > 4 else "*" * len(u))' "$user")

work=$(mktemp -d "${TMPDIR:-/tmp}/user-data.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"

# collect_py: reads the scan pages, keeps the items of USER's conversations (the user part of
# their conversation key equal to USER, whichever business number) and writes them, plain and
# typed, grouped by conversation, to WORK/found.json. Prints nothing of the items.
collect_py=$(
  cat <<'PY'
import json
import re
import sys

work, pages, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
NUMBER = re.compile(r"[0-9]{1,20}")


def conversation_of(item):
    """(kind, conversation key) of an item about a conversation, else None."""
    pk = item.get("pk", {}).get("S", "")
    if pk.startswith("h#"):
        return "history", pk[2:].rpartition("#")[0]
    if pk.startswith("conv#"):
        return "legacy", pk[5:]
    if pk.startswith("u#"):
        return "opt_out", pk[2:]
    if pk.startswith("r#") or pk.startswith("b#"):
        return "counters", pk[2:].rpartition("#")[0]
    if pk.startswith("ho#"):
        return "handoff", pk[3:]
    if pk.startswith("hr#"):
        return "references", item.get("conv", {}).get("S", "")
    if pk.startswith("id#"):
        return "claims", item.get("c", {}).get("S", "")
    return None


found = {}
for n in range(1, pages + 1):
    with open(f"{work}/page.{n}", encoding="utf-8") as f:
        items = json.load(f).get("Items", [])
    for item in items:
        kind_conv = conversation_of(item)
        if kind_conv is None:
            continue
        kind, conv = kind_conv
        number, sep, who = conv.partition(":")
        if not sep or who != user or not NUMBER.fullmatch(number):
            continue
        found.setdefault(conv, []).append({"kind": kind, "item": item})
with open(f"{work}/found.json", "w", encoding="utf-8") as f:
    json.dump(found, f)
PY
)

# scan_user: scans the table for items that may be USER's and keeps those that are.
scan_user() {
  local pages
  printf '{"#pk": "pk", "#c": "c", "#conv": "conv"}\n' >"$work/names.json"
  python3 -c 'import json, sys; json.dump({":u": {"S": ":" + sys.argv[1]}}, open(sys.argv[2], "w"))' \
    "$user" "$work/values.json"
  pages=$(scan_pages "$work" "contains(#pk, :u) OR contains(#c, :u) OR contains(#conv, :u)" \
    "$work/names.json" "$work/values.json" "$page_size")
  python3 -c "$collect_py" "$work" "$pages" "$user" || die "the table's answer was not understood"
}

export_user() {
  plain_py - "$work/found.json" "$user" "${out_file:--}" "$masked" <<'PY' || die "could not write the export"
import json
import os
import sys
import time

found_path, user, out, masked = sys.argv[1:5]
with open(found_path, encoding="utf-8") as f:
    found = json.load(f)


def slot(entry):
    pk = entry["item"]["pk"]["S"]
    tail = pk.rpartition("#")[2]
    return (0, int(tail), "") if tail.isdigit() else (1, 0, pk)


conversations = {}
total = 0
for conv in sorted(found):
    entries = found[conv]
    total += len(entries)
    by_kind = {}
    for entry in entries:
        by_kind.setdefault(entry["kind"], []).append(entry)
    one = lambda kind: plain_item(by_kind[kind][0]["item"]) if kind in by_kind else None
    many = lambda kind: [plain_item(e["item"]) for e in sorted(by_kind.get(kind, []), key=lambda e: e["item"]["pk"]["S"])]
    conversations[conv] = {
        "history": [plain_item(e["item"]) for e in sorted(by_kind.get("history", []), key=slot)],
        "legacy": one("legacy"),
        "opt_out": one("opt_out"),
        "handoff": one("handoff"),
        "counters": many("counters"),
        "claims": many("claims"),
        "references": many("references"),
    }
doc = {
    "user": user,
    "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "conversations": conversations,
}
text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
if out == "-":
    sys.stdout.write(text)
else:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
where = "standard output" if out == "-" else out
print(f"user-data.sh: exported {total} items of {len(conversations)} conversations of user {masked} to {where}", file=sys.stderr)
PY
}

# plan_py: from WORK/found.json, writes the delete batches (WORK/batch.N, 25 keys each, as
# BatchWriteItem request files), the minimal opt-out records to put (WORK/keep.N), and prints
# the counts per kind and the conversations with the user masked.
plan_py=$(
  cat <<'PY'
import json
import sys

work, table, masked = sys.argv[1:4]
with open(f"{work}/found.json", encoding="utf-8") as f:
    found = json.load(f)
counts = {k: 0 for k in ("history", "legacy", "opt_out", "handoff", "references", "counters", "claims")}
deletes, keeps = [], []
for conv, entries in sorted(found.items()):
    for entry in entries:
        item, kind = entry["item"], entry["kind"]
        if kind == "opt_out" and item.get("opted_out", {}).get("BOOL") is True:
            keep = {"pk": item["pk"], "opted_out": {"BOOL": True}}
            if "at" in item:
                keep["at"] = item["at"]
            keeps.append(keep)
            continue
        counts[kind] += 1
        deletes.append({"DeleteRequest": {"Key": {"pk": item["pk"]}}})
for n, start in enumerate(range(0, len(deletes), 25), 1):
    with open(f"{work}/batch.{n}", "w", encoding="utf-8") as f:
        json.dump({table: deletes[start:start + 25]}, f)
for n, keep in enumerate(keeps, 1):
    with open(f"{work}/keep.{n}", "w", encoding="utf-8") as f:
        json.dump(keep, f)
names = {"history": "history slots (h#)", "legacy": "first-layout conversation items (conv#)",
         "opt_out": "opt-out records, not opted out (u#)", "handoff": "handoffs (ho#)",
         "references": "handoff references (hr#)", "counters": "rate and token counters (r#, b#)",
         "claims": "message claims (id#)"}
for conv in sorted(found):
    number = conv.partition(":")[0]
    print(f"  conversation {number}:{masked}")
for kind, count in counts.items():
    print(f"  {count:6d} {names[kind]}")
print(f"  {len(keeps):6d} opt-out records kept, reduced to pk, opted_out, at (u#)")
print(f"total: {len(deletes)} to delete, {len(keeps)} to keep minimal")
PY
)

# write_batch FILE: one BatchWriteItem of FILE's requests, again with what DynamoDB left
# unprocessed (a few times, waiting longer each time).
write_batch() {
  local file=$1 try
  for try in 1 2 3 4 5 6; do
    aws dynamodb batch-write-item --request-items "file://$file" --output json >"$work/answer.json" ||
      die "could not delete from $(table_description) (you need dynamodb:BatchWriteItem); run delete again to finish"
    python3 - "$work/answer.json" "$file" <<'PY' || return 0
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    left = json.loads(f.read() or "{}").get("UnprocessedItems") or {}
if not any(left.values()):
    sys.exit(1)
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(left, f)
PY
    sleep "$try"
  done
  die "DynamoDB kept refusing some deletes (throttled?); run delete again to finish"
}

delete_user() {
  local answer file
  python3 -c "$plan_py" "$work" "$table" "$masked" >"$work/plan.txt" || die "could not plan the deletes"
  if ! compgen -G "$work/batch.*" >/dev/null && ! compgen -G "$work/keep.*" >/dev/null; then
    echo "No item of user $masked in $(table_description); nothing to delete."
    return
  fi
  echo "Items of user $masked in $(table_description):"
  cat "$work/plan.txt"
  if [ "$yes" != 1 ]; then
    [ -t 0 ] || die "delete asks for confirmation: run it on a terminal, or pass --yes"
    printf 'Delete them? [y/N] ' >&2
    read -r answer || answer=""
    case "$answer" in
      y | Y | yes | YES) ;;
      *) echo "Nothing deleted." >&2; exit 1 ;;
    esac
  fi
  for file in "$work"/keep.*; do
    [ -f "$file" ] || continue
    aws dynamodb put-item --table-name "$table" --item "file://$file" >/dev/null ||
      die "could not rewrite an opt-out record in $(table_description) (you need dynamodb:PutItem)"
  done
  for file in "$work"/batch.*; do
    [ -f "$file" ] || continue
    write_batch "$file"
  done
  echo "Done: the items above are deleted; opt-out records of users who opted out are kept, minimal."
}

need_cmd python3 "it reads the table's answers"
need_cmd aws "install the AWS CLI, see infra/README.md"
resolve_table
scan_user
case "$command" in
  export) export_user ;;
  delete) delete_user ;;
esac
