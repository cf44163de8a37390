#!/usr/bin/env bash
# infra/numbers.sh and infra/user-data.sh against a moto server, with the real AWS CLI of the
# project's virtual environment (tests/requirements.txt): a table like template.yaml's (pk S),
# then round trips through the scripts, checked by reading the table back.
# Usage: tests/with-moto.sh infra/test-against-moto.sh   (or: make infra-moto-test)
# The checks handed to `expect ... eval '...'` are single-quoted on purpose: eval expands them.
# shellcheck disable=SC2016,SC2034
set -euo pipefail

infra="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$infra/.." && pwd)"
: "${AWS_ENDPOINT_URL:?run me through tests/with-moto.sh}"
case "$AWS_ENDPOINT_URL" in
  http://127.0.0.1:* | http://localhost:*) ;;
  *) echo "test-against-moto: AWS_ENDPOINT_URL is not a local moto server" >&2; exit 1 ;;
esac
venv="$("$root/tests/python-env.sh")"
export PATH="$venv/bin:$PATH"
work="$(mktemp -d "${TMPDIR:-/tmp}/infra-moto.XXXXXX")"
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
status=0
out=""
err=""
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() {
  failed=$((failed + 1))
  echo "not ok - $1"
  if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/#   /'; fi
}
run() {
  set +e
  "$@" >"$work/out" 2>"$work/err" </dev/null
  status=$?
  set -e
  out=$(cat "$work/out")
  err=$(cat "$work/err")
}
expect() { # expect DESCRIPTION CONDITION...
  local what=$1
  shift
  if "$@"; then ok "$what"; else not_ok "$what" "status=$status
stdout: $out
stderr: $err"; fi
}
contains() { case "$1" in *"$2"*) return 0 ;; *) return 1 ;; esac }

table="infra-moto-$$"
aws dynamodb create-table --table-name "$table" --attribute-definitions AttributeName=pk,AttributeType=S \
  --key-schema AttributeName=pk,KeyType=HASH --billing-mode PAY_PER_REQUEST >/dev/null
opts=(--table "$table" --region "$AWS_REGION")
numbers=("$infra/numbers.sh")
userdata=("$infra/user-data.sh")

# pks: every pk in the table, sorted, one a line.
pks() {
  aws dynamodb scan --table-name "$table" --output json |
    python3 -c 'import json, sys; print("\n".join(sorted(i["pk"]["S"] for i in json.load(sys.stdin)["Items"])))'
}
# item PK: the item as DynamoDB JSON, or {} when there is none.
item() {
  python3 -c 'import json, sys; print(json.dumps({"pk": {"S": sys.argv[1]}}))' "$1" >"$work/key.json"
  aws dynamodb get-item --table-name "$table" --key "file://$work/key.json" --output json |
    python3 -c 'import json, sys; text = sys.stdin.read(); print(json.dumps(json.loads(text or "{}").get("Item", {}), sort_keys=True))'
}

# put_items FILE: writes each line of FILE (an item as DynamoDB JSON) into the table.
put_items() {
  while IFS= read -r line; do
    printf '%s\n' "$line" >"$work/item.json"
    aws dynamodb put-item --table-name "$table" --item "file://$work/item.json"
  done <"$1"
}

# ------------------------------------------------------------------ numbers.sh round trip
example="$infra/examples/shop/number-settings.json"
run "${numbers[@]}" put 106540352242922 "$example" "${opts[@]}"
expect "numbers put: writes the item" eval 'test "$status" = 0 && contains "$out" "within a minute"'
expect "numbers put: the item holds the compact settings and updated_at, no expires_at" \
  eval 'python3 - "$(item n#106540352242922)" "$example" <<"PY"
import json, sys, time
item = json.loads(sys.argv[1])
want = json.load(open(sys.argv[2], encoding="utf-8"))
assert json.loads(item["settings"]["S"]) == want, "settings differ"
assert item["settings"]["S"] == json.dumps(want, separators=(",", ":"), ensure_ascii=False), "not compact"
assert abs(int(item["updated_at"]["N"]) - time.time()) < 600, "updated_at"
assert set(item) == {"pk", "settings", "updated_at"}, sorted(item)
PY'
printf '{"name": "Second shop", "enabled": false}\n' >"$work/second.json"
run "${numbers[@]}" put 2002 "$work/second.json" "${opts[@]}"
run "${numbers[@]}" list "${opts[@]}"
expect "numbers list: both numbers, names, enabled, the agent masked" \
  eval 'test "$status" = 0 && contains "$out" "106540352242922  Tienda Sol" && contains "$out" "*******1222" &&
        ! contains "$out" 34600111222 && contains "$out" "2002" && contains "$out" "Second shop  false"'
run "${numbers[@]}" list "${opts[@]}"
run "${numbers[@]}" show 106540352242922 "${opts[@]}"
expect "numbers show: prints the settings JSON as put" \
  eval 'test "$status" = 0 && python3 -c "import json, sys; assert json.loads(sys.argv[1]) == json.load(open(sys.argv[2]))" "$out" "$example"'
run "${numbers[@]}" show 999 "${opts[@]}"
expect "numbers show: a number without settings -> exit 1, says so" \
  eval 'test "$status" = 1 && contains "$err" "number 999 has no settings"'
run "${numbers[@]}" delete 2002 --yes "${opts[@]}"
expect "numbers delete: deletes the item, leaves the other" \
  eval 'test "$status" = 0 && contains "$out" "Deleted the settings of number 2002" && test "$(item n#2002)" = "{}" &&
        test "$(item n#106540352242922)" != "{}"'
run "${numbers[@]}" delete 2002 --yes "${opts[@]}"
expect "numbers delete: again -> says there was nothing" eval 'test "$status" = 0 && contains "$out" "had no settings"'
run "${numbers[@]}" delete 106540352242922 --yes "${opts[@]}"
run "${numbers[@]}" list "${opts[@]}"
expect "numbers list: none left" eval 'test "$status" = 0 && contains "$out" "No number has settings"'

# ------------------------------------------------------------------ user-data.sh
# Two users, A and B, on two numbers. B's number begins with A's, so that only the exact user
# part keeps B out of A's data. A opted out on number 111 only; C never opted out.
a=34600111222
b=346001112229
python3 - "$work/seed" "$a" "$b" <<'PY'
import json
import sys

out, a, b = sys.argv[1:4]
now = 1_780_000_000
items = []
for user in (a, b):
    for number in ("111", "222"):
        conv = f"{number}:{user}"
        for slot in range(3):
            items.append({"pk": {"S": f"h#{conv}#{slot}"}, "expires_at": {"N": str(now)},
                          "turns": {"L": [{"M": {"role": {"S": "user"}, "text": {"S": f"secret words {user}"}}}]}})
        items.append({"pk": {"S": f"r#{conv}#29666666"}, "n": {"N": "3"}, "expires_at": {"N": str(now)}})
        items.append({"pk": {"S": f"b#{conv}#20601"}, "n": {"N": "1200"}, "noticed": {"BOOL": False}, "expires_at": {"N": str(now)}})
        items.append({"pk": {"S": f"id#wamid.{number}.{user}"}, "s": {"S": "d"}, "k": {"S": "tok"}, "at": {"N": str(now)},
                      "c": {"S": conv}, "expires_at": {"N": str(now)}})
    items.append({"pk": {"S": f"ho#111:{user}"}, "ref": {"S": "0427" if user == a else "0428"}, "agent": {"S": "34600999888"},
                  "since": {"N": str(now)}, "by": {"S": "user"}, "expires_at": {"N": str(now)},
                  "turns": {"L": [{"M": {"role": {"S": "agent"}, "text": {"S": "agent words"}, "at": {"N": str(now)}}}]}})
    items.append({"pk": {"S": f"hr#111#{'0427' if user == a else '0428'}"}, "conv": {"S": f"111:{user}"}, "expires_at": {"N": str(now)}})
    items.append({"pk": {"S": f"conv#222:{user}"}, "turns": {"L": []}, "expires_at": {"N": str(now)}})
items.append({"pk": {"S": f"u#111:{a}"}, "opted_out": {"BOOL": True}, "at": {"N": str(now)}, "note": {"S": "extra"}})
items.append({"pk": {"S": f"u#222:{b}"}, "opted_out": {"BOOL": True}, "at": {"N": str(now)}})
# An unrelated claim without `c`, and a number's settings item.
items.append({"pk": {"S": "id#wamid.old"}, "s": {"S": "d"}, "at": {"N": str(now)}})
items.append({"pk": {"S": "n#111"}, "settings": {"S": "{}"}, "updated_at": {"N": str(now)}})
with open(out, "w", encoding="utf-8") as f:
    for item in items:
        f.write(json.dumps(item) + "\n")
PY
put_items "$work/seed"
seeded=$(wc -l <"$work/seed" | tr -d ' ')
expect "user-data: the table is seeded ($seeded items)" test "$(pks | wc -l | tr -d ' ')" = "$seeded"

# every_a_item / every_b_item: the pks of the seed that are A's or B's.
seed_pks() { python3 -c 'import json, sys; [print(json.loads(l)["pk"]["S"]) for l in open(sys.argv[1])]' "$work/seed" | sort; }
a_pks=$(seed_pks | grep -E "(:$a(#|$)|#0427$|^id#wamid\.[0-9]+\.$a$)" || true)
b_pks=$(seed_pks | grep -E "(:$b(#|$)|#0428$|^id#wamid\.[0-9]+\.$b$)" || true)

run "${userdata[@]}" export "+$a" --out "$work/a.json" --page-size 3 "${opts[@]}"
expect "user-data export: exits 0, writes a file of mode 600, says counts with the user masked" \
  eval 'test "$status" = 0 && test "$(stat -c %a "$work/a.json")" = 600 && contains "$err" "*******1222" &&
        ! contains "$err" "$a" && test -z "$out"'
expect "user-data export: every item of A (in pages of 3), none of B, grouped by conversation" \
  eval 'python3 - "$work/a.json" "$a" "$a_pks" <<"PY"
import json, sys
doc = json.load(open(sys.argv[1]))
a, want = sys.argv[2], set(sys.argv[3].split())
assert doc["user"] == a and doc["exported_at"].endswith("Z")
assert sorted(doc["conversations"]) == [f"111:{a}", f"222:{a}"], sorted(doc["conversations"])
got = set()
for conv, data in doc["conversations"].items():
    assert set(data) == {"history", "legacy", "opt_out", "handoff", "counters", "claims", "references"}, sorted(data)
    assert [h["pk"] for h in data["history"]] == [f"h#{conv}#{s}" for s in range(3)]
    assert data["history"][0]["turns"][0]["text"] == f"secret words {a}"  # plain JSON, not typed
    assert data["history"][0]["expires_at"] == 1780000000
    for kind in ("history", "counters", "claims", "references"):
        got.update(i["pk"] for i in data[kind])
    for kind in ("legacy", "opt_out", "handoff"):
        if data[kind] is not None:
            got.add(data[kind]["pk"])
one = doc["conversations"][f"111:{a}"]
assert one["opt_out"] == {"pk": f"u#111:{a}", "opted_out": True, "at": 1780000000, "note": "extra"}
assert one["handoff"]["turns"][0]["role"] == "agent" and one["references"][0]["conv"] == f"111:{a}"
assert doc["conversations"][f"222:{a}"]["opt_out"] is None
assert got == want, (sorted(got - want), sorted(want - got))
PY'

run "${userdata[@]}" export "$b" "${opts[@]}"
expect "user-data export: to standard output; B's export has B's items only" \
  eval 'test "$status" = 0 && python3 -c "
import json, sys
doc = json.loads(sys.argv[1])
assert sorted(doc[\"conversations\"]) == [\"111:$b\", \"222:$b\"]
" "$out"'

before_b=$(for pk in $b_pks; do item "$pk"; done)
run "${userdata[@]}" delete "$a" --yes --page-size 4 "${opts[@]}"
expect "user-data delete: exits 0, prints counts and masked keys, no number, no text" \
  eval 'test "$status" = 0 && contains "$out" "111:*******1222" && contains "$out" "6 history slots" &&
        contains "$out" "1 opt-out records kept" && ! contains "$out" "$a" && ! contains "$out" "secret words"'
expect "user-data delete: of A only the minimal opt-out record is left" \
  eval 'test "$(pks | grep -xF "$a_pks" || true)" = "u#111:$a" &&
        test "$(item "u#111:$a")" = "{\"at\": {\"N\": \"1780000000\"}, \"opted_out\": {\"BOOL\": true}, \"pk\": {\"S\": \"u#111:$a\"}}"'
expect "user-data delete: B untouched, and the unrelated items too" \
  eval 'test "$(for pk in $b_pks; do item "$pk"; done)" = "$before_b" && pks | grep -qx "id#wamid.old" && pks | grep -qx "n#111"'

# C: never opted out (a u# record with opted_out false, as after an opt-in that left one).
c=US.AbC.123
python3 - "$work/c-seed" "$c" <<'PY'
import json
import sys

out, c = sys.argv[1:3]
items = [
    {"pk": {"S": f"h#111:{c}#0"}, "expires_at": {"N": "1780000000"}},
    {"pk": {"S": f"u#111:{c}"}, "opted_out": {"BOOL": False}, "at": {"N": "1780000000"}},
    {"pk": {"S": f"id#wamid.c"}, "c": {"S": f"111:{c}"}, "s": {"S": "d"}},
]
with open(out, "w", encoding="utf-8") as f:
    for item in items:
        f.write(json.dumps(item) + "\n")
PY
put_items "$work/c-seed"
run "${userdata[@]}" delete "$c" --yes "${opts[@]}"
expect "user-data delete: a user not opted out -> nothing of theirs left" \
  eval 'test "$status" = 0 && test -z "$(pks | grep -F "$c" || true)" && ! pks | grep -qx id#wamid.c && contains "$out" "0 opt-out records kept"'
run "${userdata[@]}" delete "$c" --yes "${opts[@]}"
expect "user-data delete: again -> nothing to delete" eval 'test "$status" = 0 && contains "$out" "nothing to delete"'

aws dynamodb delete-table --table-name "$table" >/dev/null
echo "infra-moto: $passed passed, $failed failed"
[ "$failed" = 0 ]
