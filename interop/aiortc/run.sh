#!/usr/bin/env bash
# Runs the aiortc + pymediasoup interop test against a sluice binary.
#
#   interop/aiortc/run.sh [SLUICE_BINARY] [interop_test.py options...]
#
# SLUICE_BINARY defaults to target/debug/sluice of this repository. Creates the virtualenv
# interop/aiortc/.venv if it is missing (installing Debian's python3-venv first when `python3 -m
# venv` cannot work and this runs as root), installs requirements.txt into it when it changed,
# and runs interop_test.py. The exit status is the test's: 0 only when every check passed.
# PYTHON chooses the interpreter (default: python3.11 if on PATH, else python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
sluice="${1:-$repo/target/debug/sluice}"
if [ "$#" -gt 0 ]; then shift; fi

venv="$here/.venv"
if [ -z "${PYTHON:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || { echo "run.sh: $PYTHON not found" >&2; exit 1; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "run.sh: $PYTHON is $("$PYTHON" --version 2>&1); pymediasoup needs Python >= 3.10" >&2
  exit 1
fi

# Debian splits venv/ensurepip into python3-venv (python3.X-venv); without it `-m venv` fails,
# or leaves a venv without pip.
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  minor="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "run.sh: installing python${minor}-venv with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "python${minor}-venv" >/dev/null || apt-get install -y -qq python3-venv >/dev/null
  else
    echo "run.sh: $PYTHON cannot create a virtualenv; install python${minor}-venv (apt-get install python${minor}-venv)" >&2
    exit 1
  fi
fi

# A venv left half-made (no pip) by an earlier failure is made again.
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
fi

stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --only-binary=:all: -r "$here/requirements.txt"
  echo "$want" > "$stamp"
fi

exec "$venv/bin/python" "$here/interop_test.py" --sluice "$sluice" "$@"
