#!/usr/bin/env bash
# Makes sure RabbitMQ and Redis answer on 127.0.0.1 (the integration tests need both).
# Starts them when they are not answering; installs them from Debian's packages when
# they are missing and we are root. Waits until both answer, or fails loudly.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need_pkg() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-services: installing $2"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "ensure-services: $1 is missing; install $2 (e.g. apt-get install $2) or set AMQP_URL/REDIS_URL" >&2
    exit 1
  fi
}

wait_for() { # name port seconds
  local i
  for i in $(seq 1 "$3"); do
    if port_open "$2"; then echo "ensure-services: $1 answers on 127.0.0.1:$2"; return 0; fi
    sleep 1
  done
  echo "ensure-services: $1 did not answer on 127.0.0.1:$2 within $3 s" >&2
  exit 1
}

if ! port_open 6379; then
  need_pkg redis-server redis-server
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/warmlane-redis.log"
fi
wait_for Redis 6379 30

if ! port_open 5672; then
  need_pkg rabbitmq-server rabbitmq-server
  rabbitmq-server -detached
fi
wait_for RabbitMQ 5672 120
# The port opens before the broker accepts logins; wait for the node to be fully booted.
if command -v rabbitmqctl >/dev/null 2>&1; then
  timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
