# Shell functions shared by the entrypoints of the app and relay images (POSIX sh, sourced).

# print_settings COMMAND...: the settings named in KIT_SETTINGS_KEYS (space-separated) as one
# line of JSON, with the command about to run. Never name a secret in KIT_SETTINGS_KEYS.
print_settings() {
  python - "$@" <<'PY'
import json, os, sys
keys = os.environ.get("KIT_SETTINGS_KEYS", "").split()
print("channels-kit settings:", json.dumps({k: os.environ.get(k, "") for k in keys} | {"command": sys.argv[1:]}))
PY
}

# whole_seconds NAME VALUE: VALUE, or exit 2 with a clear message when it is not a whole number.
whole_seconds() {
  case "$2" in
    '' | *[!0-9]*) echo "$1 must be a whole number of seconds, not '$2'" >&2; exit 2 ;;
  esac
  echo "$2"
}

# exec_daphne APPLICATION HTTP_TIMEOUT CONNECT_TIMEOUT [DAPHNE-ARGS...]: Daphne on port
# 8000 behind nginx (client address from its proxy headers), with the kit's WebSocket
# message limit and pings. Everything it logs goes to stdout.
exec_daphne() {
  application=$1 http_timeout=$2 connect_timeout=$3
  shift 3
  set -- daphne \
    --bind 0.0.0.0 --port 8000 \
    --proxy-headers \
    --http-timeout "$http_timeout" \
    --websocket_connect_timeout "$connect_timeout" \
    --websocket-max-message-size "${WS_MAX_MESSAGE_BYTES:-65536}" \
    --application-close-timeout "${DAPHNE_APPLICATION_CLOSE_TIMEOUT:-10}" \
    --ping-interval "${DAPHNE_PING_INTERVAL:-20}" \
    --ping-timeout "${DAPHNE_PING_TIMEOUT:-30}" \
    "$@" "$application"
  print_settings "$@"
  exec 2>&1
  exec "$@"
}
