#!/bin/sh
# Entrypoint of the relay image. The first argument picks the role:
#   relay   Daphne on port 8000 serving channels_kit.relay.asgi:application: every
#           request and WebSocket event goes over the channel layer to the workers
# Anything else is run as given (e.g. `python -c ...`).
set -eu

case "${1:-relay}" in
  relay)
    shift || true
    timeout="${DAPHNE_HTTP_TIMEOUT:-120}"
    case "$timeout" in
      '' | *[!0-9]*) echo "DAPHNE_HTTP_TIMEOUT must be a whole number of seconds, not '$timeout'" >&2; exit 2 ;;
    esac
    export SERVER_ROLE="${SERVER_ROLE:-daphne}" RELAY_TIMEOUT="$timeout"
    # The relay answers 503 (HTTP) or closes with 1013 (WebSocket) after RELAY_TIMEOUT;
    # Daphne's own timeouts stay a little longer, as a backstop.
    set -- daphne \
      --bind 0.0.0.0 --port 8000 \
      --proxy-headers \
      --http-timeout "$((timeout + 5))" \
      --websocket_connect_timeout "$((timeout + 5))" \
      --websocket-max-message-size "${WS_MAX_MESSAGE_BYTES:-65536}" \
      --application-close-timeout "${DAPHNE_APPLICATION_CLOSE_TIMEOUT:-10}" \
      --ping-interval "${DAPHNE_PING_INTERVAL:-20}" \
      --ping-timeout "${DAPHNE_PING_TIMEOUT:-30}" \
      "$@" channels_kit.relay.asgi:application
    ;;
esac

# Resolved settings, one line of JSON, secrets left out.
python - "$@" <<'PY'
import json, os, sys
keys = ["SERVER_ROLE", "REDIS_URLS", "REDIS_SOCKET_TIMEOUT", "RELAY_TIMEOUT", "MAX_REQUEST_BYTES",
        "WS_MAX_MESSAGE_BYTES", "RELAY_MAX_QUEUED_EVENTS", "RELAY_GROUP_REFRESH_SECONDS", "LOG_LEVEL"]
print("channels-kit settings:", json.dumps({k: os.environ.get(k, "") for k in keys} | {"command": sys.argv[1:]}))
PY
# Daphne logs through the logging module to stderr: keep everything on stdout.
exec 2>&1
exec "$@"
