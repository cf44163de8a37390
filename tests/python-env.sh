#!/usr/bin/env bash
# Creates (once) the project's Python virtual environment with the tools in
# tests/requirements.txt, and prints its path. The environment lives outside the clone, keyed by
# the requirements' hash, so that fresh clones on the same machine reuse it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
requirements="$here/requirements.txt"
hash="$(sha256sum "$requirements" | cut -c1-16)"
venv="${WA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/whatsapp-llm-assistant/venv-$hash}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "python-env: creating $venv" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet -r "$requirements" >&2
  touch "$venv/.complete"
fi
echo "$venv"
