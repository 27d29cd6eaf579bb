# Shell functions shared by env.sh and ort_env.sh (sourced, not run): their virtual environments
# live in the cargo target folder and are created under a lock, so parallel tests may call them.

# The default path of the venv NAME: <cargo target dir>/NAME.
default_venv() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  echo "${CARGO_TARGET_DIR:-$root/target}/$1"
}

# Takes the lock of the venv VENV (the file VENV.lock, held on fd 9 until the script exits).
lock_venv() {
  mkdir -p "$(dirname "$1")"
  exec 9>"$1.lock"
  flock 9
}

# install_venv VENV STAMP WANT PIP_ARGS...: creates VENV, installs PIP_ARGS into it and records
# WANT in its stamp file VENV/STAMP.
install_venv() {
  local venv="$1" stamp="$2" want="$3"
  shift 3
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2
  echo "$want" > "$venv/$stamp"
}

# venv_is_current VENV STAMP WANT: whether VENV has a Python and VENV/STAMP records WANT.
venv_is_current() {
  [ -x "$1/bin/python" ] && [ "$(cat "$1/$2" 2>/dev/null)" = "$3" ]
}
