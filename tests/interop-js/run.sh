#!/usr/bin/env bash
# xmpp.js (@xmpp/client) and converse.js (in Chromium, through
# puppeteer-core) scenarios from npm against the built starling
# binary: each test file starts its own server (temp dir, free ports).
#   tests/interop-js/run.sh            Env: STARLING_BIN (default target/debug/starling),
#                                      CHROMIUM (default /usr/bin/chromium)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export STARLING_BIN="${STARLING_BIN:-target/debug/starling}"
case "$STARLING_BIN" in /*) ;; *) STARLING_BIN="$root/$STARLING_BIN" ;; esac
command -v node >/dev/null || { echo "interop-js: node not found (apt-get install nodejs npm)" >&2; exit 1; }
cd "$here"
# package-lock.json pins every package; npm ci reinstalls only when it changed.
if [ ! -d node_modules ] || ! cmp -s package-lock.json node_modules/.package-lock.json; then
  npm ci --no-audit --no-fund --loglevel=error
fi
exec timeout --kill-after=10 "${INTEROP_TIMEOUT:-300}" node --test --test-concurrency=1 ./*.test.js
