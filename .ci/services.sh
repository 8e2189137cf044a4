#!/usr/bin/env bash
# Start or stop the real services the integration tests use, on loopback only:
# Redis 16390, PostgreSQL 15499, RabbitMQ 15690. Prints the URLs as shell exports on start.
# Usage: .ci/services.sh start|stop       (state in $SERVICES_DIR, default /tmp/pacifica-dispatcher-ci)
set -euo pipefail
STATE=${SERVICES_DIR:-/tmp/pacifica-dispatcher-ci}
REDIS_PORT=${REDIS_PORT:-16390}
PG_PORT=${PG_PORT:-15499}
export RABBITMQ_NODENAME=${RABBITMQ_NODENAME:-pdci@localhost}
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=${RABBITMQ_NODE_PORT:-15690}
export RABBITMQ_DIST_PORT=$((RABBITMQ_NODE_PORT + 20000))
export ERL_EPMD_ADDRESS=127.0.0.1
export ERL_EPMD_PORT=${ERL_EPMD_PORT:-14390}
export RABBITMQ_MNESIA_BASE=$STATE/rabbitmq/mnesia
export RABBITMQ_LOG_BASE=$STATE/rabbitmq/log
export RABBITMQ_PID_FILE=$STATE/rabbitmq/rabbit.pid
export RABBITMQ_ENABLED_PLUGINS_FILE=$STATE/rabbitmq/enabled_plugins
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

start() {
  mkdir -p "$STATE/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --databases 1024 --daemonize yes --save '' --appendonly no \
    --dir "$STATE/redis" --pidfile "$STATE/redis/redis.pid" --logfile "$STATE/redis/redis.log"
  if command -v rabbitmq-server >/dev/null; then
    install -d -o rabbitmq -g rabbitmq "$STATE/rabbitmq"
    rabbitmq-server -detached
  fi
  install -d -o postgres -g postgres "$STATE/pg" "$STATE/pgsock"
  if [ ! -s "$STATE/pg/data/PG_VERSION" ]; then
    su postgres -c "$PGBIN/initdb -D $STATE/pg/data -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" >"$STATE/pg/initdb.log"
  fi
  su postgres -c "$PGBIN/pg_ctl -D $STATE/pg/data -l $STATE/pg/server.log -w -t 60 \
    -o '-p $PG_PORT -c listen_addresses=127.0.0.1 -k $STATE/pgsock -c fsync=off -c max_connections=200' start" >/dev/null
  until redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; do sleep 0.1; done
  until pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; do sleep 0.1; done
  echo "export TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  echo "export TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
  if command -v rabbitmq-server >/dev/null; then
    rabbitmqctl -n "$RABBITMQ_NODENAME" wait "$RABBITMQ_PID_FILE" --timeout 90 >/dev/null
    echo "export TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:$RABBITMQ_NODE_PORT//"
  fi
}

stop() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave 2>/dev/null || true
  if [ -f "$RABBITMQ_PID_FILE" ]; then
    rabbitmqctl -n "$RABBITMQ_NODENAME" stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || true
  fi
  epmd -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1 || true
  if [ -f "$STATE/pg/data/postmaster.pid" ]; then
    su postgres -c "$PGBIN/pg_ctl -D $STATE/pg/data -m fast -w stop" >/dev/null || true
  fi
}

"${1:-start}"
