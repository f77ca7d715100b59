#!/usr/bin/env bash
# slixmpp (from PyPI) against the built starling binary: every scenario in
# tests/interop/test_*.py starts its own server (temp dir, free ports), makes
# accounts with the CLI, runs the scenario, stops the server with SIGTERM and
# requires exit code 0. A failing scenario prints the server log.
#
#   tests/interop/run.sh [pytest args...]     e.g. -k direct_tls -x
#
# Env: STARLING_BIN (default target/debug/starling, relative to the repo root),
#      INTEROP_TIMEOUT (seconds for the whole run, default 300),
#      PYTHON (interpreter to make the venv with, default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

export STARLING_BIN="${STARLING_BIN:-target/debug/starling}"
case "$STARLING_BIN" in /*) ;; *) STARLING_BIN="$root/$STARLING_BIN" ;; esac
if [ ! -x "$STARLING_BIN" ]; then
  echo "interop: server binary $STARLING_BIN not found; run 'cargo build --bin starling' first" >&2
  exit 1
fi

venv="$here/.venv"
req="$here/requirements.txt"
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "interop: $python not found; install Python 3 (e.g. apt-get install python3 python3-venv)" >&2
  exit 1
fi
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
  if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    if ! "$python" -m venv "$venv"; then
      rm -rf "$venv"
      echo "interop: '$python -m venv' failed: the venv/ensurepip module is missing." >&2
      echo "interop: on Debian/Ubuntu: apt-get install python3-venv" >&2
      exit 1
    fi
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
fi

cd "$here"
# -p no:cacheprovider: leave no .pytest_cache behind.
exec timeout --kill-after=10 "${INTEROP_TIMEOUT:-300}" \
  "$venv/bin/python" -m pytest -p no:cacheprovider -ra "$@"
