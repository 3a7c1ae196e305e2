# Shell functions shared by the entrypoints of the app and relay images, and by the
# Procfile through images/app/entrypoint.sh (POSIX sh, sourced).
#
# Every server listens on SERVER_BIND:PORT (0.0.0.0:8000 in the images; a platform
# sets PORT, `make native-up` binds 127.0.0.1).

# load_secret_files: for each secret NAME of the kit, when NAME is unset and NAME_FILE names
# a file (a compose or Swarm secret under /run/secrets, a Kubernetes Secret's volume), NAME
# becomes its content, for the project's own settings and commands (the package reads
# NAME_FILE itself too). In this process's environment only: `docker inspect` never shows it.
load_secret_files() {
  for name in DJANGO_SECRET_KEY POSTGRES_PASSWORD RABBITMQ_PASSWORD REDIS_PASSWORD DEMO_PASSWORD POSTGRES_LAYER_URL; do
    eval "file=\${${name}_FILE:-} value=\${${name}:-}"
    if [ -n "$file" ] && [ -z "$value" ]; then
      [ -r "$file" ] || { echo "${name}_FILE: cannot read $file" >&2; exit 2; }
      eval "export $name=\"\$(cat \"\$file\")\""
    fi
  done
}

# print_settings COMMAND...: the settings named in KIT_SETTINGS_KEYS (space-separated) as one
# line of JSON, with the command about to run. Never name a secret in KIT_SETTINGS_KEYS.
print_settings() {
  python - "$@" <<'PY'
import json, os, re, sys
keys = os.environ.get("KIT_SETTINGS_KEYS", "").split()
# Passwords in URLs (redis://:secret@host) are masked.
settings = {k: re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", os.environ.get(k, "")) for k in keys}
print("channels-kit settings:", json.dumps(settings | {"command": sys.argv[1:]}))
PY
}

# whole_seconds NAME VALUE: VALUE, or exit 2 with a clear message when it is not a whole number.
whole_seconds() {
  case "$2" in
    '' | *[!0-9]*) echo "$1 must be a whole number of seconds, not '$2'" >&2; exit 2 ;;
  esac
  echo "$2"
}

# exec_daphne APPLICATION HTTP_TIMEOUT CONNECT_TIMEOUT [DAPHNE-ARGS...]: Daphne behind a
# proxy (client address from its headers), with the kit's WebSocket message limit and
# pings, as channels_kit.interface_server runs it (a socket over the limit is closed with
# 1009, not dropped). Everything it logs goes to stdout.
exec_daphne() {
  application=$1 http_timeout=$2 connect_timeout=$3
  shift 3
  set -- python -m channels_kit.interface_server \
    --bind "${SERVER_BIND:-0.0.0.0}" --port "${PORT:-8000}" \
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

# exec_relay [DAPHNE-ARGS...]: Daphne serving the kit's relay (relay mode's interface
# server). The relay answers 503 (HTTP) or closes with 4503 (WebSocket) after
# DAPHNE_HTTP_TIMEOUT; Daphne's own timeouts stay a little longer, as a backstop.
exec_relay() {
  timeout=$(whole_seconds DAPHNE_HTTP_TIMEOUT "${DAPHNE_HTTP_TIMEOUT:-120}")
  export SERVER_ROLE="${SERVER_ROLE:-daphne}" RELAY_TIMEOUT="$timeout"
  exec_daphne channels_kit.relay.asgi:application "$((timeout + 5))" "$((timeout + 5))" "$@"
}
