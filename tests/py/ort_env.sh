#!/usr/bin/env bash
# Prints the absolute path of the ONNX Runtime shared library (libonnxruntime.so.1.32.0) from the
# PyPI `onnxruntime==1.32.0` wheel, creating a virtual environment with only that package on
# first use. Idempotent and safe to call from parallel tests (flock). Use it as
#   export ORT_DYLIB_PATH="$(bash tests/py/ort_env.sh)"
# The venv lives in $IDFLOW_ORT_VENV, default <cargo target dir>/ort-venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/venv_lib.sh"
version="1.32.0"
venv="${IDFLOW_ORT_VENV:-$(default_venv ort-venv)}"
lock_venv "$venv"
find_lib() {
  "$venv/bin/python" - "$version" <<'PY'
import pathlib, sys, sysconfig
lib = pathlib.Path(sysconfig.get_paths()["purelib"]) / "onnxruntime" / "capi" / f"libonnxruntime.so.{sys.argv[1]}"
print(lib.resolve() if lib.is_file() else "")
PY
}
if ! venv_is_current "$venv" .onnxruntime-version "$version" || [ -z "$(find_lib)" ]; then
  install_venv "$venv" .onnxruntime-version "$version" --no-deps "onnxruntime==$version"
fi
lib="$(find_lib)"
if [ -z "$lib" ]; then
  echo "onnxruntime $version is installed in $venv but onnxruntime/capi/libonnxruntime.so.$version is missing" >&2
  exit 1
fi
echo "$lib"
