#!/usr/bin/env bash
# Start the real upstream Pacifica stack on 127.0.0.1 (ports 19xxx), always from a wiped state:
# a throwaway PostgreSQL cluster, Redis, archiveinterface, uniqueid, metadata, policy, ingest (+ Celery
# worker) and cartd (+ Celery worker), then the five metadata fixture records the policy gate needs.
#
# Environment:
#   PACIFICA_STACK_DIR      state directory (default /tmp/pacifica-stack; install.sh must have run)
#   PACIFICA_NOTIFY_URL     where metadata POSTs its CloudEvents (default http://127.0.0.1:19070/receive);
#                           nothing is started there: the test suite or the dispatcher under test listens
#   PACIFICA_STACK_TIMEOUT  seconds to wait for each service to become ready (default 120)
#   PACIFICA_STACK_KEEP_ON_FAILURE=1  leave the processes running when start-up fails (default: down.sh)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

TIMEOUT=${PACIFICA_STACK_TIMEOUT:-120}
((TIMEOUT >= 10)) || TIMEOUT=10  # pg_ctl must outlast the postmaster's first steps, or down.sh misses it
V=$PS_VENV/bin
T0=$SECONDS

# fail MESSAGE [LOGFILE...]: report loudly (with the logs' tails) and exit; the EXIT trap runs down.sh
fail() {
  local log
  echo "up.sh: ERROR: $1" >&2
  shift
  for log in "$@"; do
    if [[ -s $log ]]; then
      echo "---- last 40 lines of $log ----" >&2
      tail -n 40 "$log" >&2
      echo "---- end of $log ----" >&2
    fi
  done
  exit 1
}

on_exit() {
  local rc=$?
  if ((rc != 0)); then
    if [[ ${PACIFICA_STACK_KEEP_ON_FAILURE:-0} == 1 ]]; then
      echo "up.sh: start-up failed; processes left running (PACIFICA_STACK_KEEP_ON_FAILURE=1), logs in $PS_LOG" >&2
    else
      echo "up.sh: start-up failed; stopping what was started (logs kept in $PS_LOG)" >&2
      bash "$PS_HERE/down.sh" >&2 || true
    fi
  fi
}

[[ $(id -u) == 0 ]] || fail "must run as root (PostgreSQL is run as the postgres user via runuser)"
[[ -x $V/pacifica-ingest ]] || fail "no upstream venv at $PS_VENV: run $PS_HERE/install.sh first"
[[ -n $PG_BIN && -x $PG_BIN/initdb ]] || fail "no PostgreSQL server binaries found: run $PS_HERE/install.sh first"
command -v redis-server >/dev/null || fail "no redis-server: run $PS_HERE/install.sh first"

# ------------------------------------------------------------------ wiped state
# Stop whatever a previous up.sh left behind (by PID only), then throw all its state away.
bash "$PS_HERE/down.sh" >/dev/null || true  # a busy port is reported just below
for port in "${PS_ALL_PORTS[@]}"; do
  if ps_port_busy "$port"; then
    fail "127.0.0.1:$port is already in use by a process up.sh did not start: $(ss -ltnpH "sport = :$port" 2>/dev/null || true)"
  fi
done
trap on_exit EXIT
rm -rf "${PS_ROOT:?}/pg" "$PS_ROOT/archive" "$PS_ROOT/ingest-vol" "$PS_ROOT/cart-vol" "$PS_ROOT/redis" "$PS_RUN" "$PS_LOG"
mkdir -p "$PS_ROOT/pg" "$PS_ROOT/archive" "$PS_ROOT/ingest-vol" "$PS_ROOT/cart-vol" "$PS_ROOT/redis" "$PS_RUN" "$PS_LOG"
chmod 755 "$PS_ROOT"
chown postgres:postgres "$PS_ROOT/pg"

# start NAME CMD...: run CMD in the background with its own log and PID file
start() {
  local name=$1
  shift
  (cd "$PS_RUN" && exec "$@") </dev/null >"$PS_LOG/$name.log" 2>&1 &
  echo "$!" >"$PS_RUN/$name.pid"
}

# check_alive NAME: fail (with its log) if NAME has exited
check_alive() {
  ps_alive "$(<"$PS_RUN/$1.pid")" || fail "$1 exited during start-up" "$PS_LOG/$1.log"
}

# wait_http NAME URL [STATUS]: poll until URL answers (with STATUS if given), NAME stays alive
wait_http() {
  local name=$1 url=$2 want=${3:-} code deadline=$((SECONDS + TIMEOUT))
  while :; do
    code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' "$url" || true)
    if [[ $code != 000 && ( -z $want || $code == "$want" ) ]]; then
      return 0
    fi
    check_alive "$name"
    ((SECONDS < deadline)) || fail "$name not ready after ${TIMEOUT}s (GET $url -> $code)" "$PS_LOG/$name.log"
    sleep 0.2
  done
}

# wait_log NAME REGEX: poll NAME's log until REGEX shows up (Celery workers print "<name>@<host> ready.")
wait_log() {
  local name=$1 regex=$2 deadline=$((SECONDS + TIMEOUT))
  until grep -qE "$regex" "$PS_LOG/$name.log"; do
    check_alive "$name"
    ((SECONDS < deadline)) || fail "$name not ready after ${TIMEOUT}s (no /$regex/ in its log)" "$PS_LOG/$name.log"
    sleep 0.2
  done
}

# ------------------------------------------------------------------ PostgreSQL
# Throwaway cluster: trust auth, TCP on 127.0.0.1 only, socket in our dir, durability off.
ps_as_postgres "$PG_BIN/initdb" -D "$PS_ROOT/pg/data" -A trust -U postgres --no-sync >"$PS_LOG/initdb.log" 2>&1 \
  || fail "initdb failed" "$PS_LOG/initdb.log"
ps_as_postgres "$PG_BIN/pg_ctl" -D "$PS_ROOT/pg/data" -l "$PS_ROOT/pg/postgresql.log" -w -t "$TIMEOUT" \
  -o "-p $PG_PORT -k $PS_ROOT/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >"$PS_LOG/pg_ctl.log" 2>&1 \
  || fail "PostgreSQL did not start" "$PS_LOG/pg_ctl.log" "$PS_ROOT/pg/postgresql.log"
"$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qX -v ON_ERROR_STOP=1 \
  -c 'CREATE DATABASE pacifica_metadata' -c 'CREATE DATABASE pacifica_uniqueid' \
  -c 'CREATE DATABASE pacifica_ingest' -c 'CREATE DATABASE pacifica_cartd' >"$PS_LOG/createdb.log" 2>&1 \
  || fail "CREATE DATABASE failed" "$PS_LOG/createdb.log"

# ------------------------------------------------------------------ schemas (in parallel)
declare -A dbsync_pid=()
for svc in metadata uniqueid ingest cartd; do
  PEEWEE_URL=$PG_URL/pacifica_$svc "$V/pacifica-$svc-cmd" dbsync </dev/null >"$PS_LOG/dbsync-$svc.log" 2>&1 &
  dbsync_pid[$svc]=$!
done

# Services without a database can start meanwhile.
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no --dir "$PS_ROOT/redis"
start archive "$V/pacifica-archiveinterface" -a 127.0.0.1 -p "$AI_PORT" -t posix --prefix "$PS_ROOT/archive"
start policy "$V/pacifica-policy" -a 127.0.0.1 -p "$POL_PORT"

for svc in "${!dbsync_pid[@]}"; do
  wait "${dbsync_pid[$svc]}" || fail "dbsync of pacifica-$svc failed" "$PS_LOG/dbsync-$svc.log"
done

# ------------------------------------------------------------------ DB-backed services and workers
ingest_env=(env "BROKER_URL=$ING_BROKER" "BACKEND_URL=$ING_BACKEND" "PEEWEE_URL=$PG_URL/pacifica_ingest"
  "VOLUME_PATH=$PS_ROOT/ingest-vol/")
cart_env=(env "BROKER_URL=$CART_BROKER" "BACKEND_URL=$CART_BACKEND" "PEEWEE_URL=$PG_URL/pacifica_cartd"
  "VOLUME_PATH=$PS_ROOT/cart-vol/" LRU_BUFFER_TIME=0)
start uniqueid env "PEEWEE_URL=$PG_URL/pacifica_uniqueid" "$V/pacifica-uniqueid" -a 127.0.0.1 -p "$UID_PORT"
start metadata env "PEEWEE_URL=$PG_URL/pacifica_metadata" "$V/pacifica-metadata" -a 127.0.0.1 -p "$MD_PORT"
start ingest "${ingest_env[@]}" "$V/pacifica-ingest" -a 127.0.0.1 -p "$ING_PORT"
start ingest-worker "${ingest_env[@]}" "$V/celery" -A pacifica.ingest.tasks worker --loglevel=info -c 1 -P solo -n ingest@%h
start cartd "${cart_env[@]}" "$V/pacifica-cartd" -a 127.0.0.1 -p "$CART_PORT"
start cart-worker "${cart_env[@]}" "$V/celery" -A pacifica.cartd.tasks worker --loglevel=info -c 1 -P solo -n cart@%h

# ------------------------------------------------------------------ readiness (polling, no fixed sleeps)
redis_deadline=$((SECONDS + TIMEOUT))
until [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; do
  check_alive redis
  ((SECONDS < redis_deadline)) || fail "redis not ready after ${TIMEOUT}s" "$PS_LOG/redis.log"
  sleep 0.2
done
wait_http archive "$ARCHIVEINTERFACE_BASE_URL/"
wait_http policy "$POLICY_BASE_URL/"
wait_http uniqueid "$UNIQUEID_BASE_URL/getid?range=1&mode=readiness" 200
wait_http metadata "$METADATA_BASE_URL/users" 200
wait_http ingest "$INGEST_URL/" 200
wait_http cartd "$CARTD_URL/" 200
wait_log ingest-worker '@[^ ]* ready\.'
wait_log cart-worker '@[^ ]* ready\.'

# ------------------------------------------------------------------ fixtures for the policy gate
"$V/python" "$PS_HERE/load_fixtures.py" >"$PS_LOG/load_fixtures.log" 2>&1 \
  || fail "loading the metadata fixtures failed" "$PS_LOG/load_fixtures.log"

trap - EXIT
echo "up.sh: Pacifica stack up in $((SECONDS - T0))s (state in $PS_ROOT, logs in $PS_LOG," \
  "CloudEvents to $NOTIFICATIONS_URL)"
