#!/bin/sh
# Entrypoint of the app image, and the launcher of the Procfile's process types (run from
# the project's directory, app/demo). The first argument picks the role:
#   daphne   the interface server running the project (HTTP + WebSocket) on SERVER_BIND:PORT
#            (ASGI_MODE=direct; in relay mode the stack's Daphne runs images/relay instead)
#   web      the Procfile's web process: `daphne`, or with ASGI_MODE=relay the kit's relay
#   all      one-process mode: Daphne and the workers in one process (manage.py runall)
#   uwsgi    the same project under uWSGI (the optional WSGI tier): uwsgi protocol
#            on 3031 for nginx, plain HTTP on SERVER_BIND:PORT for healthchecks and benchmarks
#   worker   a runworker process; further arguments go to it (--only-channels=...); with
#            ASGI_MODE=relay it also serves the relayed HTTP and WebSocket traffic
#   migrate  apply database migrations and create the demo user, then exit (also: release)
# Anything else is run as given (e.g. `python manage.py shell`).
set -eu
# The image installs the shared functions; a checkout (the Procfile) has them beside this file.
lib=/usr/local/lib/channels-kit/entrypoint-lib.sh
[ -f "$lib" ] || lib="$(dirname "$0")/../common/entrypoint-lib.sh"
. "$lib"
load_secret_files

# What print_settings shows (never a secret).
export KIT_SETTINGS_KEYS="SERVER_ROLE ASGI_MODE DJANGO_ALLOWED_HOSTS DJANGO_DEBUG POSTGRES_HOST POSTGRES_DB
  REDIS_URLS REDIS_SOCKET_TIMEOUT LOG_LEVEL WORKER_CONCURRENCY WORKER_HTTP_CONCURRENCY
  WORKER_WEBSOCKET_CONCURRENCY WORKER_GRACE_PERIOD_SECONDS UWSGI_PROCESSES UWSGI_THREADS
  UWSGI_WORKER_RELOAD_MERCY LONGPOLL_TIMEOUT CHAT_SOCKET_HOST PORT"

role=${1:-daphne}
if [ "$#" -gt 0 ]; then shift; fi
if [ "$role" = web ]; then
  case "${ASGI_MODE:-direct}" in
    relay) exec_relay "$@" ;;
    *) role=daphne ;;
  esac
fi

case "$role" in
  daphne)
    export SERVER_ROLE="${SERVER_ROLE:-daphne}"
    timeout=$(whole_seconds DAPHNE_HTTP_TIMEOUT "${DAPHNE_HTTP_TIMEOUT:-120}")
    exec_daphne chatdemo.asgi:application "$timeout" "${DAPHNE_WEBSOCKET_CONNECT_TIMEOUT:-20}" "$@"
    ;;
  all)
    export SERVER_ROLE="${SERVER_ROLE:-daphne}"
    set -- python manage.py runall "$@"
    exec 2>&1
    ;;
  uwsgi)
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
      --pythonpath "$PWD" \
      --module chatdemo.wsgi:application \
      --uwsgi-socket "${SERVER_BIND:-0.0.0.0}:${WSGI_SOCKET_PORT:-3031}" \
      --http-socket "${SERVER_BIND:-0.0.0.0}:${PORT:-8000}" \
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
    export SERVER_ROLE="${SERVER_ROLE:-worker}"
    set -- python manage.py runworker "$@"
    ;;
  migrate | release)
    python manage.py migrate --noinput "$@"
    set -- python manage.py ensure_demo_user
    ;;
  *)
    set -- "$role" "$@"
    ;;
esac

print_settings "$@"
exec "$@"
