#!/bin/sh
# Healthcheck of the app and relay images, by role: Daphne (and uWSGI) must answer
# /healthz; a worker must have touched its heartbeat file recently (it opens no port).
set -eu
case "${SERVER_ROLE:-daphne}" in
  worker)
    exec python -m channels_kit.observe.probe heartbeat \
      "${WORKER_HEARTBEAT_FILE:-/tmp/channels-kit/worker.heartbeat}" \
      --max-age "${WORKER_HEARTBEAT_MAX_AGE:-30}"
    ;;
  *)
    exec python -m channels_kit.observe.probe http "http://127.0.0.1:8000/healthz"
    ;;
esac
