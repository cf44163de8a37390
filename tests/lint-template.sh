#!/usr/bin/env bash
# Lints template.yaml with cfn-lint and `sam validate --lint`, both pinned in
# tests/requirements.txt. Works offline: neither needs AWS, and nothing is let reach it (dummy
# credentials, AWS clients pointed at a closed loopback port, SAM CLI's telemetry and its weekly
# version check turned off). Exits non-zero on any error or warning.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
template="${1:-$root/template.yaml}"
# shellcheck source=tests/sam-offline.sh
source "$root/tests/sam-offline.sh"

echo "lint-template: cfn-lint $template" >&2
"$venv/bin/cfn-lint" -- "$template"
echo "lint-template: sam validate --lint $template" >&2
"$venv/bin/sam" validate --lint --template "$template"
