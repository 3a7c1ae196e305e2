#!/bin/sh
# Healthcheck of the app image, by role: Daphne must answer /healthz; a worker
# must have touched its heartbeat file recently (it opens no port).
set -eu
case "${SERVER_ROLE:-daphne}" in
  worker)
    exec python -m channels_kit.probe heartbeat \
      "${WORKER_HEARTBEAT_FILE:-/tmp/channels-kit/worker.heartbeat}" \
      --max-age "${WORKER_HEARTBEAT_MAX_AGE:-30}"
    ;;
  *)
    exec python -m channels_kit.probe http "http://127.0.0.1:8000/healthz"
    ;;
esac
