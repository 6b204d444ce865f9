#!/usr/bin/env bash
# Make sure RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379) answer; start them if not.
# PostgreSQL (127.0.0.1:5432) is needed by the inbox (transactional handlers) tests, their docs
# examples and the group directory's PostgreSQL tests: it is started when it is installed here.
# Under CI=true a service that cannot be started fails the run: tests never silently skip.
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

fail_or_warn() {
  if [ "${CI:-}" = "true" ]; then echo "ensure-services: $1" >&2; exit 1; fi
  echo "ensure-services: warning: $1 (tests that need it will be skipped)" >&2
}

if ! up 5672; then
  echo "ensure-services: starting RabbitMQ"
  if command -v rabbitmq-server >/dev/null; then
    rabbitmq-server -detached >/dev/null 2>&1 || true
    timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
  fi
  up 5672 || fail_or_warn "RabbitMQ is not reachable on 127.0.0.1:5672"
fi

if ! up 6379; then
  echo "ensure-services: starting Redis"
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 50); do up 6379 && break; sleep 0.1; done
  fi
  up 6379 || fail_or_warn "Redis is not reachable on 127.0.0.1:6379"
fi
if ! up 5432 && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  echo "ensure-services: starting PostgreSQL"
  for version in /etc/postgresql/*; do
    pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start >/dev/null 2>&1 || true
  done
  for _ in $(seq 50); do up 5432 && break; sleep 0.1; done
fi
echo "ensure-services: RabbitMQ and Redis are up"
