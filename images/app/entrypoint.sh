#!/bin/sh
# Entrypoint of the app image. The first argument picks the role:
#   daphne   the interface server (HTTP + WebSocket) on port 8000
#   worker   a runworker process; further arguments go to it (--only-channels=...)
#   migrate  apply database migrations, then exit
# Anything else is run as given (e.g. `python manage.py shell`).
set -eu

print_settings() {
  # Resolved settings, one line of JSON, secrets left out.
  python - "$@" <<'PY'
import json, os, sys
keys = ["SERVER_ROLE", "DJANGO_ALLOWED_HOSTS", "DJANGO_DEBUG", "POSTGRES_HOST", "POSTGRES_DB",
        "REDIS_URLS", "REDIS_SOCKET_TIMEOUT", "LOG_LEVEL", "WORKER_CONCURRENCY", "WORKER_GRACE_PERIOD_SECONDS"]
print("channels-kit settings:", json.dumps({k: os.environ.get(k, "") for k in keys} | {"command": sys.argv[1:]}))
PY
}

case "${1:-daphne}" in
  daphne)
    shift || true
    export SERVER_ROLE="${SERVER_ROLE:-daphne}"
    set -- daphne \
      --bind 0.0.0.0 --port 8000 \
      --proxy-headers \
      --http-timeout "${DAPHNE_HTTP_TIMEOUT:-120}" \
      --websocket_connect_timeout "${DAPHNE_WEBSOCKET_CONNECT_TIMEOUT:-20}" \
      --websocket-max-message-size "${WS_MAX_MESSAGE_BYTES:-65536}" \
      --application-close-timeout "${DAPHNE_APPLICATION_CLOSE_TIMEOUT:-10}" \
      --ping-interval "${DAPHNE_PING_INTERVAL:-20}" \
      --ping-timeout "${DAPHNE_PING_TIMEOUT:-30}" \
      "$@" chatdemo.asgi:application
    ;;
  worker)
    shift
    export SERVER_ROLE="${SERVER_ROLE:-worker}"
    set -- python manage.py runworker "$@"
    ;;
  migrate)
    shift
    set -- python manage.py migrate --noinput "$@"
    ;;
esac

print_settings "$@"
exec "$@"
