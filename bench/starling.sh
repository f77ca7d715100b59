#!/usr/bin/env bash
# Runs the shared load harness (../shared/bench, see its README) against a
# release build of Starling, the way the anchors were measured.
#
#   bench/starling.sh [PHASES]        default: "idle login login_tls chat_rate chat_max"
#
# Env: WORK (scratch dir, default /tmp/starling-bench): harness copy, data,
#      results in $WORK/results/starling; REPEAT (1); N_IDLE etc. as run.sh;
#      IDLE_TLS_N (19000): the idle_tls phase runs on a fresh process with
#      this many connections, as the 12 KiB/connection target is stated;
#      CARGO_TARGET_DIR: where the release binary is built (default
#      <repo>/target); STARLING_BIN: run this binary instead of building one
#      (to compare two builds back to back); MODULES: a TOML list of modules
#      to load instead of the defaults.
# Phase "storm" (bench/storm/storm.py: XEP-0198 reconnect storm, STORM_N
# clients, 5000) also runs on a fresh process; its JSON line goes to
# $WORK/results/starling/storm.jsonl. Phase "transports": see below.
# Users user1..user20000 / benchpass on bench.local are imported once.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="$root/../shared/bench"
WORK="${WORK:-/tmp/starling-bench}"
PHASES="${1:-idle login login_tls chat_rate chat_max}"
mkdir -p "$WORK/data"
# The shared tree is read-only: the harness runs from a copy.
for f in run.sh summarize.py; do cp "$shared/$f" "$WORK/$f"; done
# The load generator, unless only the Python phases run.
harness_phases="$(echo "$PHASES" | sed -e 's/storm//' -e 's/transports//')"
if [ -n "${harness_phases// /}" ] && [ ! -x "$WORK/xmppload/target/release/xmppload" ]; then
  rm -rf "$WORK/xmppload" && cp -r "$shared/xmppload" "$WORK/xmppload"
  # Its own target dir: run.sh expects the binary under xmppload/target.
  (cd "$WORK/xmppload" && CARGO_TARGET_DIR="$WORK/xmppload/target" cargo build --release -q)
fi
if [ -n "${STARLING_BIN:-}" ]; then
  bin="$STARLING_BIN"
else
  (cd "$root" && cargo build --release -q --bin starling)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/starling"
fi
config="$WORK/starling.toml"
sed "s|/tmp/starling-bench/data|$WORK/data|" "$root/bench/starling.toml" > "$config"
# MODULES='["disco", …]': run with these modules instead of the defaults
# (e.g. without "mam" to measure what archiving adds to chat).
if [ -n "${MODULES:-}" ]; then
  sed -i "s|^\[server\]\$|[server]\nmodules = $MODULES|" "$config"
fi
if [ ! -f "$WORK/data/starling.db" ]; then
  python3 -c "import sys; sys.stdout.writelines(f'user{i}@bench.local benchpass\n' for i in range(1, 20001))" > "$WORK/users.txt"
  "$bin" --config "$config" user import "$WORK/users.txt"
fi
ulimit -n "$(ulimit -Hn)"

start() {
  rm -f "$WORK/starling.pid"
  "$bin" --config "$config" serve --pidfile "$WORK/starling.pid" 2>> "$WORK/server.log" &
  for _ in $(seq 100); do [ -f "$WORK/starling.pid" ] && return; sleep 0.1; done
  echo "starling did not start; see $WORK/server.log" >&2; exit 1
}
stop() {
  local pid; pid="$(cat "$WORK/starling.pid")"
  kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

cd "$WORK"
main_phases="$(echo "$PHASES" | sed -e 's/idle_tls//' -e 's/storm//' -e 's/transports//')"
if [ -n "${main_phases// /}" ]; then
  start
  REPEAT="${REPEAT:-1}" PHASES="$main_phases" OUT=results/starling ./run.sh starling 127.0.0.1 5224 bench.local "$WORK/starling.pid"
  stop
fi
case " $PHASES " in *" idle_tls "*)
  start
  REPEAT="${REPEAT:-1}" N_IDLE="${IDLE_TLS_N:-19000}" PHASES=idle_tls OUT=results/starling \
    ./run.sh starling 127.0.0.1 5224 bench.local "$WORK/starling.pid"
  stop ;;
esac
case " $PHASES " in *" storm "*)
  start
  mkdir -p results/starling
  python3 "$root/bench/storm/storm.py" --port 5224 --server-pid "$WORK/starling.pid" --label starling \
    -n "${STORM_N:-5000}" 2>> results/starling/storm.log | tee -a results/starling/storm.jsonl
  stop ;;
esac
# Phase "transports" (bench/transports/transports.py: idle KiB per WebSocket
# connection and per BOSH session, chat CPU µs/msg over TCP and WebSocket):
# each of its phases on a fresh process, TRANSPORTS_N idle clients (2000).
case " $PHASES " in *" transports "*)
  mkdir -p results/starling
  for phase in idle_ws idle_bosh chat_tcp chat_ws; do
    start
    python3 "$root/bench/transports/transports.py" --server-pid "$WORK/starling.pid" --phases "$phase" \
      -n "${TRANSPORTS_N:-2000}" 2>> results/starling/transports.log | tee -a results/starling/transports.jsonl
    stop
  done ;;
esac
[ -f results/starling/results.jsonl ] || exit 0
python3 summarize.py results/starling/results.jsonl
