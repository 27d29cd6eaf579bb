#!/usr/bin/env bash
# Prints the path of a Python interpreter that has tests/py/requirements.txt installed,
# creating the virtual environment on first use. Safe to call from parallel tests (flock).
# The venv lives in $IDFLOW_PY_VENV, default <cargo target dir>/py-venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/venv_lib.sh"
venv="${IDFLOW_PY_VENV:-$(default_venv py-venv)}"
req="$here/requirements.txt"
lock_venv "$venv"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if ! venv_is_current "$venv" .requirements.sha256 "$want"; then
  install_venv "$venv" .requirements.sha256 "$want" -r "$req"
fi
echo "$venv/bin/python"
