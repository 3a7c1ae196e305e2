#!/bin/sh
# Entrypoint of the app image. The first argument picks the role:
#   daphne   the interface server running the project (HTTP + WebSocket) on port 8000
#            (ASGI_MODE=direct; in relay mode Daphne runs images/relay instead)
#   uwsgi    the same project under uWSGI (the optional WSGI tier): uwsgi protocol
#            on 3031 for nginx, plain HTTP on 8000 for healthchecks and benchmarks
#   worker   a runworker process; further arguments go to it (--only-channels=...); with
#            ASGI_MODE=relay it also serves the relayed HTTP and WebSocket traffic
#   migrate  apply database migrations and create the demo user, then exit
# Anything else is run as given (e.g. `python manage.py shell`).
set -eu

print_settings() {
  # Resolved settings, one line of JSON, secrets left out.
  python - "$@" <<'PY'
import json, os, sys
keys = ["SERVER_ROLE", "ASGI_MODE", "DJANGO_ALLOWED_HOSTS", "DJANGO_DEBUG", "POSTGRES_HOST", "POSTGRES_DB",
        "REDIS_URLS", "REDIS_SOCKET_TIMEOUT", "LOG_LEVEL", "WORKER_CONCURRENCY", "WORKER_HTTP_CONCURRENCY",
        "WORKER_WEBSOCKET_CONCURRENCY", "WORKER_GRACE_PERIOD_SECONDS",
        "UWSGI_PROCESSES", "UWSGI_THREADS", "UWSGI_WORKER_RELOAD_MERCY", "LONGPOLL_TIMEOUT", "CHAT_SOCKET_HOST"]
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
  uwsgi)
    shift
    export SERVER_ROLE="${SERVER_ROLE:-uwsgi}"
    # uWSGI reads every UWSGI_<OPTION> variable as an option (and --strict refuses
    # unknown ones), so these defaults are also what it runs with.
    export UWSGI_PROCESSES="${UWSGI_PROCESSES:-2}" UWSGI_THREADS="${UWSGI_THREADS:-4}"
    export UWSGI_WORKER_RELOAD_MERCY="${UWSGI_WORKER_RELOAD_MERCY:-25}"
    # uWSGI 2.0 takes SIGTERM as "brutal reload" and SIGINT/SIGQUIT as "kill now":
    # the hook makes SIGTERM (Docker's stop signal) a graceful shutdown, in which
    # workers finish their requests (for up to UWSGI_WORKER_RELOAD_MERCY seconds).
    # Its own log lines go to stderr: send them to stdout with the app's.
    exec 2>&1
    set -- uwsgi \
      --strict --master --need-app --single-interpreter \
      --module chatdemo.wsgi:application \
      --uwsgi-socket 0.0.0.0:3031 \
      --http-socket 0.0.0.0:8000 \
      --processes "$UWSGI_PROCESSES" --threads "$UWSGI_THREADS" \
      --worker-reload-mercy "$UWSGI_WORKER_RELOAD_MERCY" \
      --hook-master-start "unix_signal:15 gracefully_kill_them_all" \
      --limit-post "${MAX_REQUEST_BYTES:-1048576}" \
      --buffer-size 32768 \
      --ignore-sigpipe --ignore-write-errors --disable-write-exception \
      --log-format '%(addr) "%(method) %(uri)" %(status) %(size)B %(msecs)ms pid=%(pid)' \
      "$@"
    ;;
  worker)
    shift
    export SERVER_ROLE="${SERVER_ROLE:-worker}"
    set -- python manage.py runworker "$@"
    ;;
  migrate)
    shift
    python manage.py migrate --noinput "$@"
    set -- python manage.py ensure_demo_user
    ;;
esac

print_settings "$@"
exec "$@"
