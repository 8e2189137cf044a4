# shellcheck shell=bash
# Shared environment of the local Pacifica stack; sourced by install.sh, up.sh and down.sh.
# Source it in an interactive shell too, to talk to a running stack by hand:
#   . tests/pacifica_stack/env.sh && curl "$INGEST_URL/"
#
# Everything listens on 127.0.0.1 only, on fixed 19xxx ports. All state (venv, PostgreSQL
# cluster, archive, volumes, logs, PID files) lives in $PACIFICA_STACK_DIR, never in the repo.

PS_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PS_HERE
export PACIFICA_STACK_DIR=${PACIFICA_STACK_DIR:-/tmp/pacifica-stack}
export PS_ROOT=$PACIFICA_STACK_DIR
export PS_VENV=$PS_ROOT/venv
export PS_RUN=$PS_ROOT/run
export PS_LOG=$PS_ROOT/logs

# --- ports (loopback only) ---
export PG_PORT=19432 REDIS_PORT=19379
export AI_PORT=19080 UID_PORT=19051 MD_PORT=19121 POL_PORT=19181 ING_PORT=19066 CART_PORT=19081
# The CloudEvent receiver is NOT started by up.sh: the test suite (or the dispatcher under test) binds it.
export PACIFICA_NOTIFY_URL=${PACIFICA_NOTIFY_URL:-http://127.0.0.1:19070/receive}

# --- public URLs (also what stack.py hands to the tests) ---
export ARCHIVEINTERFACE_BASE_URL=http://127.0.0.1:$AI_PORT
export UNIQUEID_BASE_URL=http://127.0.0.1:$UID_PORT
export METADATA_BASE_URL=http://127.0.0.1:$MD_PORT
export POLICY_BASE_URL=http://127.0.0.1:$POL_PORT
export INGEST_URL=http://127.0.0.1:$ING_PORT
export CARTD_URL=http://127.0.0.1:$CART_PORT

# --- PostgreSQL (metadata needs it; uniqueid, ingest and cartd use it too) ---
export PG_URL=postgresql://postgres@127.0.0.1:$PG_PORT
if [[ -z ${PG_BIN:-} ]]; then
  # newest installed server version, e.g. /usr/lib/postgresql/15/bin
  PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
fi
export PG_BIN

# --- Redis (Celery broker/backends) ---
# ingest and cartd both use Celery's default queue name "celery": they MUST NOT share a broker DB,
# or each worker steals the other's tasks (cart stuck in "staging" forever).
export ING_BROKER=redis://127.0.0.1:$REDIS_PORT/0 ING_BACKEND=redis://127.0.0.1:$REDIS_PORT/1
export CART_BROKER=redis://127.0.0.1:$REDIS_PORT/2 CART_BACKEND=redis://127.0.0.1:$REDIS_PORT/3

# --- upstream service configuration (environment only) ---
# Point every service at a config.ini that never exists so that only environment variables count,
# and at our CherryPy config (no autoreload, no 0.0.0.0 socket_host override).
for _ps_svc in ARCHIVEINTERFACE CARTD UNIQUEID METADATA POLICY INGEST; do
  export "${_ps_svc}_CONFIG=$PS_ROOT/no-such-config.ini"
  export "${_ps_svc}_CPCONFIG=$PS_HERE/cp.ini"
done
unset _ps_svc
export ARCHIVE_INTERFACE_URL=$ARCHIVEINTERFACE_BASE_URL/   # cartd (appends the file id)
export ARCHIVEINTERFACE_URL=$ARCHIVEINTERFACE_BASE_URL     # ingest
export UNIQUEID_URL=$UNIQUEID_BASE_URL                     # ingest
export POLICY_INGEST_URL=$POLICY_BASE_URL/ingest           # ingest
export METADATA_INGEST_URL=$METADATA_BASE_URL/ingest       # ingest
export METADATA_URL=$METADATA_BASE_URL                     # policy, load_fixtures.py
export STATUS_URL=$METADATA_BASE_URL/groups                # policy
export NOTIFICATIONS_URL=$PACIFICA_NOTIFY_URL              # metadata (read once, at start)
export NOTIFICATIONS_DISABLED=False
export DATABASE_CONNECT_WAIT=2

# --- helpers shared by up.sh and down.sh ---
# shellcheck disable=SC2034 # used by up.sh and down.sh
PS_ALL_PORTS=("$PG_PORT" "$REDIS_PORT" "$AI_PORT" "$UID_PORT" "$MD_PORT" "$POL_PORT" "$ING_PORT" "$CART_PORT")

# ps_port_busy PORT: true if something accepts TCP connections on 127.0.0.1:PORT
ps_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ps_alive PID: true if the process exists and is not a zombie
ps_alive() { [[ -e /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# ps_as_postgres CMD...: initdb/pg_ctl refuse to run as root
ps_as_postgres() { (cd / && runuser -u postgres -- "$@"); }
