#!/usr/bin/env bash
# Stop everything up.sh started, by PID only (never pkill/killall): SIGTERM, wait, then SIGKILL.
# Services first, then Redis, then PostgreSQL (pg_ctl stop). Safe to run when nothing is running.
# Exits non-zero if one of the stack's ports is still listening afterwards.
#
# Environment: PACIFICA_STACK_DIR (default /tmp/pacifica-stack),
#              PACIFICA_STACK_STOP_GRACE seconds to wait after SIGTERM (default 15)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

GRACE=${PACIFICA_STACK_STOP_GRACE:-15}
T0=$SECONDS

# ours PID: the PID still runs one of our programs (guards against a reused PID)
ours() {
  local cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$PS_ROOT"* || $cmdline == *redis-server*":$REDIS_PORT"* ]]
}

# stop NAME...: TERM the processes in run/NAME.pid, wait up to GRACE s, KILL the rest
stop() {
  local name pidfile pid deadline
  local -a pids=() alive=()
  for name in "$@"; do
    pidfile=$PS_RUN/$name.pid
    [[ -f $pidfile ]] || continue
    pid=$(<"$pidfile")
    rm -f "$pidfile"
    if ! [[ $pid =~ ^[0-9]+$ ]] || ! ps_alive "$pid"; then continue; fi
    if ! ours "$pid"; then
      echo "down.sh: PID $pid ($name) no longer runs a stack program; leaving it alone" >&2
      continue
    fi
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  ((${#pids[@]})) || return 0
  deadline=$((SECONDS + GRACE))
  while :; do
    alive=()
    for pid in "${pids[@]}"; do
      if ps_alive "$pid"; then alive+=("$pid"); fi
    done
    ((${#alive[@]} && SECONDS < deadline)) || break
    sleep 0.1
  done
  for pid in "${alive[@]}"; do
    echo "down.sh: PID $pid ignored SIGTERM for ${GRACE}s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + 5))
  for pid in "${alive[@]}"; do
    while ps_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  done
}

stop cart-worker ingest-worker cartd ingest policy metadata uniqueid archive
stop redis

pgdata=$PS_ROOT/pg/data
if [[ -f $pgdata/postmaster.pid && -n $PG_BIN ]] \
  && ps_as_postgres "$PG_BIN/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
  if ! ps_as_postgres "$PG_BIN/pg_ctl" -D "$pgdata" -m fast -w -t "$GRACE" stop >/dev/null; then
    echo "down.sh: PostgreSQL did not stop in ${GRACE}s; immediate shutdown" >&2
    ps_as_postgres "$PG_BIN/pg_ctl" -D "$pgdata" -m immediate -w -t 10 stop >/dev/null || true
  fi
fi

busy=()
for port in "${PS_ALL_PORTS[@]}"; do
  if ps_port_busy "$port"; then busy+=("$port"); fi
done
if ((${#busy[@]})); then
  echo "down.sh: still listening on 127.0.0.1 port(s) ${busy[*]}:" >&2
  ss -ltnp 2>/dev/null | grep -E ":($(IFS='|'; echo "${busy[*]}"))\b" >&2 || true
  exit 1
fi
echo "down.sh: Pacifica stack down in $((SECONDS - T0))s"
