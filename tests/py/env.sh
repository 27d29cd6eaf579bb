#!/usr/bin/env bash
# Prints the path of a Python interpreter that has tests/py/requirements.txt installed,
# creating the virtual environment on first use. Safe to call from parallel tests (flock).
# The venv lives in $IDFLOW_PY_VENV, default <cargo target dir>/py-venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${IDFLOW_PY_VENV:-${CARGO_TARGET_DIR:-$root/target}/py-venv}"
req="$here/requirements.txt"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
