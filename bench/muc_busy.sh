#!/usr/bin/env bash
# Issue 9: one busy MUC room (1,000 occupants) and whether it slows chat in
# other rooms. Runs xmppload's `muc` scenario (../shared/bench/xmppload)
# against ONE running server:
#
#   bench/muc_busy.sh NAME PORT PIDFILE-or-PID [PARTS]
#
# PARTS (default "busy small both"), each once per REPEAT (1):
#   busy   one room of BUSY_OCC occupants (users BUSY_FIRST..), one sender at
#          BUSY_RATE msg/s for BUSY_T s: server CPU µs/delivery, latency.
#   small  SMALL_N clients in rooms of 10 (users 1..SMALL_N), SMALL_RATE msg/s
#          aggregate for SMALL_T s, alone (the harness's `muc` phase shape).
#   both   `small` again while a second xmppload process drives the busy room
#          (started first; its sending window covers the small run's).
#          Only the small rooms' figures are comparable with `small`.
#
# xmppload names rooms bench0, bench1, … per process, so two processes would
# share room bench0. The busy room therefore runs from a copy of xmppload whose
# room names take a prefix from XMPPLOAD_ROOM_PREFIX (a one-line change,
# default "bench" = unchanged); built once into $WORK/xmppload-rooms.
#
# Env: WORK (/tmp/starling-muc-work), OUT ($WORK/results/muc_busy),
#      BUSY_OCC (1000) BUSY_RATE (4) BUSY_T (20) BUSY_FIRST (1001),
#      SMALL_N (500) SMALL_RATE (100) SMALL_T (10), REPEAT (1), DOMAIN (bench.local).
# The server must allow BUSY_OCC occupants per room and BUSY_RATE*60 messages
# per occupant per minute (Starling: [modules.muc] max_occupants,
# max_messages_per_minute; ejabberd: mod_muc max_users + default_room_options).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="$root/../shared/bench"
[ $# -ge 3 ] || { sed -n '2,28p' "$0"; exit 2; }
NAME="$1" PORT="$2" PIDARG="$3" PARTS="${4:-busy small both}"
WORK="${WORK:-/tmp/starling-muc-work}"
OUT="${OUT:-$WORK/results/muc_busy}"
BUSY_OCC="${BUSY_OCC:-1000}" BUSY_RATE="${BUSY_RATE:-4}" BUSY_T="${BUSY_T:-20}" BUSY_FIRST="${BUSY_FIRST:-1001}"
SMALL_N="${SMALL_N:-500}" SMALL_RATE="${SMALL_RATE:-100}" SMALL_T="${SMALL_T:-10}"
REPEAT="${REPEAT:-1}" DOMAIN="${DOMAIN:-bench.local}"
if [ -f "$PIDARG" ]; then PID="$(cat "$PIDARG")"; else PID="$PIDARG"; fi
kill -0 "$PID" 2>/dev/null || { echo "server pid $PID not running" >&2; exit 1; }
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

X="$WORK/xmppload-rooms/target/release/xmppload"
if [ ! -x "$X" ]; then
  rm -rf "$WORK/xmppload-rooms" && cp -r "$shared/xmppload" "$WORK/xmppload-rooms"
  # the one change: room name prefix from the environment
  sed -i 's|format!("bench{}@conference.{}", room, sh.ctx.o.domain)|format!("{}{}@conference.{}", std::env::var("XMPPLOAD_ROOM_PREFIX").unwrap_or_else(\|_\| "bench".into()), room, sh.ctx.o.domain)|' \
    "$WORK/xmppload-rooms/src/main.rs"
  grep -q XMPPLOAD_ROOM_PREFIX "$WORK/xmppload-rooms/src/main.rs" || { echo "patch did not apply" >&2; exit 1; }
  # reuse the harness copy's build if there is one
  [ -d "$WORK/xmppload/target" ] && cp -r "$WORK/xmppload/target" "$WORK/xmppload-rooms/target"
  (cd "$WORK/xmppload-rooms" && CARGO_TARGET_DIR="$WORK/xmppload-rooms/target" cargo build --release -q)
fi

COMMON=(--host 127.0.0.1 --port "$PORT" --domain "$DOMAIN" --label "$NAME" --server-pid "$PID" --src-addrs 4 --concurrency 100)
# Wait until the server is idle (< 20 ms CPU per s, 3 s in a row, at most 120 s):
# a 1,000-occupant room's joins and leaves are ~n² presence stanzas, and
# their tail would otherwise land in the next part's measurement.
settle() {
  local hz prev cur calm=0
  hz="$(getconf CLK_TCK)"
  prev="$(awk '{print $14+$15}' "/proc/$PID/stat")"
  for _ in $(seq 120); do
    sleep 1
    cur="$(awk '{print $14+$15}' "/proc/$PID/stat")"
    if [ $(( (cur - prev) * 1000 / hz )) -lt 20 ]; then calm=$((calm + 1)); else calm=0; fi
    prev="$cur"
    [ "$calm" -ge 3 ] && return 0
  done
  echo "server did not settle" >&2
}
tag() { sed "s/^{/{\"part\":\"$1\",\"rep\":$2,/" | tee -a "$OUT/results.jsonl"; }
busy_cmd() { # duration
  XMPPLOAD_ROOM_PREFIX=busy "$X" muc -n "$BUSY_OCC" --occupants "$BUSY_OCC" --first-user "$BUSY_FIRST" \
    -t "$1" --rate "$BUSY_RATE" "${COMMON[@]}"
}
small_cmd() {
  XMPPLOAD_ROOM_PREFIX=small "$X" muc -n "$SMALL_N" --occupants 10 --first-user 1 \
    -t "$SMALL_T" --rate "$SMALL_RATE" "${COMMON[@]}"
}
for rep in $(seq 1 "$REPEAT"); do
  for part in $PARTS; do
    settle
    echo "== $NAME $part #$rep $(date +%T)" >&2
    case "$part" in
      busy)  busy_cmd "$BUSY_T" 2> "$OUT/$NAME.busy.$rep.log" | tag "busy" "$rep" ;;
      small) small_cmd 2> "$OUT/$NAME.small.$rep.log" | tag "small" "$rep" ;;
      both)
        # the busy room sends long enough to cover the small run's logins, sending and drain
        log="$OUT/$NAME.both-busy.$rep.log"
        busy_cmd "$((SMALL_T + 30))" 2> "$log" > "$OUT/$NAME.both-busy.$rep.json" &
        bpid=$!
        until grep -q 'sending for' "$log" 2>/dev/null; do
          kill -0 "$bpid" 2>/dev/null || { echo "busy process ended early; see $log" >&2; exit 1; }
          sleep 0.2
        done
        sleep 5 # the tail of the busy room's joins
        small_cmd 2> "$OUT/$NAME.both-small.$rep.log" | tag "both_small" "$rep"
        wait "$bpid"
        tag "both_busy" "$rep" < "$OUT/$NAME.both-busy.$rep.json" ;;
      *) echo "unknown part $part" >&2 ;;
    esac
  done
done
