#!/usr/bin/env bash
# Presence benchmark provisioning: gives user1..userN@DOMAIN a roster of CONTACTS contacts,
# all with subscription "both", identical on every server.
#
#   provision.sh SERVER [provision|clear|check]          (default: provision)
#
#   SERVER = starling      Starling, SQLite: writes $STARLING_DB with python sqlite3
#                          (Starling must be stopped; tables must exist, see below)
#            starling-pg   Starling, PostgreSQL: $PG_URL (postgres://...) with psql
#            prosody       Prosody internal storage: roster files under $RUNDIR/prosody/data
#                          (Prosody must be stopped)
#            ejabberd      ejabberd 23.01: mod_admin_extra:add_rosteritem/7 for each item, in a
#                          loop run inside the node over Erlang distribution (started if needed,
#                          left in the state it was found)
#   provision = clear rosters of user1..userN, then add the ring; clear = remove them;
#   check = count what is stored.
#
# Topology (topology.py): ring. user i's contacts are the CONTACTS/2 users before and the
# CONTACTS/2 after it, modulo N, so each of user1..userN has exactly CONTACTS contacts for
# any N > CONTACTS and the relation is symmetric. Items carry no name and no group.
#
# Env: N (2000), CONTACTS (50, even), DOMAIN (bench.local),
#      STARLING_DB (/tmp/starling-bench/starling.db), PG_URL (for starling-pg),
#      RUNDIR (/tmp/xmppbench), SETUP (/work/shared/bench/anchors/setup.sh),
#      EJ_WORKERS (4: parallel in-node loops for ejabberd)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
N="${N:-2000}" CONTACTS="${CONTACTS:-50}" DOMAIN="${DOMAIN:-bench.local}"
STARLING_DB="${STARLING_DB:-/tmp/starling-bench/starling.db}"
RUNDIR="${RUNDIR:-/tmp/xmppbench}"
SETUP="${SETUP:-/work/shared/bench/anchors/setup.sh}"
EJ_NODE="ejabberd_bench@localhost"
EJ_WORKERS="${EJ_WORKERS:-4}"
[ $# -ge 1 ] || { sed -n '2,27p' "$0"; exit 2; }
SERVER="$1" ACTION="${2:-provision}"
case "$ACTION" in provision|clear|check) ;; *) echo "unknown action $ACTION" >&2; exit 2 ;; esac
python3 "$HERE/topology.py" check "$N" "$CONTACTS" >/dev/null
log() { echo "[provision] $*" >&2; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

starling_pg() {
  : "${PG_URL:?set PG_URL=postgres://user:pass@host/db}"
  local ok
  ok="$(psql "$PG_URL" -XtAc "SELECT to_regclass('roster_items') IS NOT NULL AND to_regclass('roster_versions') IS NOT NULL AND to_regclass('subscription_requests') IS NOT NULL")"
  if [ "$ok" != t ]; then
    log "roster tables missing in $PG_URL: start a Starling built from current /work/main once with this"
    log "database (it applies migrations/postgres/0002_im.sql at startup), stop it, and run this again."
    exit 3
  fi
  if [ "$ACTION" = check ]; then
    psql "$PG_URL" -XtAc "SELECT COUNT(*) || ' both items over ' || COUNT(DISTINCT username) || ' users' FROM roster_items
      WHERE host = '$DOMAIN' AND subscription = 'both' AND username ~ '^user[0-9]+$' AND substr(username, 5)::int BETWEEN 1 AND $N"
    return
  fi
  local t0; t0=$(date +%s.%N)
  {
    echo "BEGIN;"
    echo "CREATE TEMP TABLE bench_users ON COMMIT DROP AS SELECT 'user' || g AS username FROM generate_series(1, $N) g;"
    for t in roster_items roster_versions subscription_requests; do
      echo "DELETE FROM $t WHERE host = '$DOMAIN' AND username IN (SELECT username FROM bench_users);"
    done
    if [ "$ACTION" = provision ]; then
      echo "COPY roster_items (host, username, contact, name, subscription, ask, approved, groups) FROM STDIN;"
      python3 "$HERE/topology.py" pairs "$N" "$CONTACTS" "$DOMAIN" | sed "s/^/$DOMAIN\t/; s/\$/\t\\\\N\tboth\t0\t0\t[]/"
      echo '\.'
      echo "INSERT INTO roster_versions (host, username, version) SELECT '$DOMAIN', username, $CONTACTS FROM bench_users;"
    fi
    echo "COMMIT;"
  } | psql "$PG_URL" -X -q -v ON_ERROR_STOP=1 -f -
  log "starling-pg: $ACTION of user1..user$N done in $(printf %.2f "$(echo "$(date +%s.%N) - $t0" | bc)") s"
}

ejabberd() {
  local pid was_running=1
  pid="$("$SETUP" pid ejabberd)"
  alive "$pid" || { was_running=0; "$SETUP" start ejabberd; }
  local cookie; cookie="$(cat /var/lib/ejabberd/.erlang.cookie)"
  # The funs are built here (erl_eval) and executed inside the ejabberd node by rpc, one
  # long-running call per worker, so the per-item cost is ejabberd's own add_rosteritem
  # (a Mnesia transaction on the disc_only_copies 'roster' table + cache invalidation),
  # not a distribution round trip.
  ( cd "$RUNDIR/ejabberd" && su -s /bin/sh ejabberd -c "erl -sname benchroster$$ -hidden -noshell -setcookie '$cookie' -eval '
      Node = list_to_atom(\"$EJ_NODE\"), H = <<\"$DOMAIN\">>, N = $N, K = $CONTACTS, W = $EJ_WORKERS,
      Action = $ACTION,
      U = fun(I) -> <<\"user\", (integer_to_binary(I))/binary>> end,
      Contacts = fun(I) -> [((I - 1 + D) rem N + N) rem N + 1 || D <- lists:seq(-(K div 2), -1) ++ lists:seq(1, K div 2)] end,
      Count = fun() -> lists:sum([length(mod_roster:get_roster(U(I), H)) || I <- lists:seq(1, N)]) end,
      case Action of
        check ->
          Items = rpc:call(Node, erlang, apply, [Count, []], infinity),
          R1 = rpc:call(Node, mod_roster, get_roster, [U(1), H]),
          io:format(\"[ejabberd] ~p items over user1..user~p; user1: ~p items, subscriptions ~p~n\",
                    [Items, N, length(R1), lists:usort([element(6, R) || R <- R1])]);
        _ ->
          T0 = erlang:monotonic_time(millisecond),
          Clear = fun(Is) -> [begin mod_roster_mnesia:remove_user(U(I), H),
                                    mnesia:dirty_delete(roster_version, {U(I), H}) end || I <- Is], ok end,
          ok = rpc:call(Node, erlang, apply, [Clear, [lists:seq(1, N)]], infinity),
          [catch rpc:call(Node, ets_cache, clear, [C]) || C <- [roster_cache, roster_item_cache, roster_version_cache]],
          T1 = erlang:monotonic_time(millisecond),
          io:format(\"[ejabberd] cleared rosters of user1..user~p in ~.2f s~n\", [N, (T1 - T0) / 1000]),
          case Action of
            provision ->
              Add = fun(Is) -> lists:foldl(fun(I, Bad) ->
                        lists:foldl(fun(J, B) ->
                            case mod_admin_extra:add_rosteritem(U(I), H, U(J), H, <<>>, <<>>, <<\"both\">>) of
                              ok -> B; _ -> B + 1 end end, Bad, Contacts(I)) end, 0, Is) end,
              Parent = self(),
              [spawn(fun() -> Parent ! {done, rpc:call(Node, erlang, apply, [Add, [lists:seq(S, N, W)]], infinity)} end)
               || S <- lists:seq(1, W)],
              Errs = [receive {done, E} -> E end || _ <- lists:seq(1, W)],
              T2 = erlang:monotonic_time(millisecond),
              io:format(\"[ejabberd] ~p items for ~p users in ~.2f s (~p workers, ~.1f items/s), failures per worker ~p~n\",
                        [N * K, N, (T2 - T1) / 1000, W, N * K * 1000 / max(1, T2 - T1), Errs]);
            clear -> ok
          end
      end,
      init:stop().'" )
  [ "$was_running" = 1 ] || "$SETUP" stop ejabberd
}

case "$SERVER" in
  starling)
    python3 "$HERE/starling_sqlite.py" "$ACTION" "$STARLING_DB" "$N" "$CONTACTS" "$DOMAIN" ;;
  starling-pg)
    starling_pg ;;
  prosody)
    if [ "$ACTION" != check ] && alive "$("$SETUP" pid prosody)"; then
      log "prosody is running (pid $("$SETUP" pid prosody)): stop it first ($SETUP stop prosody)"; exit 1
    fi
    python3 "$HERE/prosody_rosters.py" "$ACTION" "$RUNDIR/prosody/data" "$N" "$CONTACTS" "$DOMAIN" ;;
  ejabberd)
    ejabberd ;;
  *) echo "unknown server $SERVER (starling|starling-pg|prosody|ejabberd)" >&2; exit 2 ;;
esac
