#!/bin/sh
# Entrypoint of the relay image. The first argument picks the role:
#   relay   Daphne on port 8000 serving channels_kit.relay.asgi:application: every
#           request and WebSocket event goes over the channel layer to the workers
# Anything else is run as given (e.g. `python -c ...`).
set -eu
. /usr/local/lib/channels-kit/entrypoint-lib.sh
load_secret_files

# What print_settings shows (never a secret).
export KIT_SETTINGS_KEYS="SERVER_ROLE REDIS_URLS REDIS_SOCKET_TIMEOUT REDIS_COMMAND_TIMEOUT RELAY_TIMEOUT MAX_REQUEST_BYTES
  WS_MAX_MESSAGE_BYTES WS_MAX_MESSAGES_PER_SECOND RELAY_MAX_QUEUED_EVENTS RELAY_GROUP_REFRESH_SECONDS LOG_LEVEL"

case "${1:-relay}" in
  relay)
    shift || true
    exec_relay "$@"
    ;;
esac

print_settings "$@"
exec "$@"
