#!/bin/sh
# Entrypoint of the app image, and the launcher of the Procfile's process types (run from
# the project's directory: /app/project in the image, PROJECT_DIR or app/demo on a host).
# The project runs under the kit's settings (DJANGO_SETTINGS_MODULE=channels_kit.project.settings)
# over its own (KIT_PROJECT_SETTINGS; found in manage.py when unset). The first argument
# picks the role:
#   daphne   the interface server running the project (HTTP + WebSocket) on SERVER_BIND:PORT
#            (ASGI_MODE=direct; in relay mode the stack's Daphne runs images/relay instead)
#   web      the Procfile's web process: `daphne`, or with ASGI_MODE=relay the kit's relay
#   all      one-process mode: Daphne and the workers in one process (manage.py runall)
#   uwsgi    the same project under uWSGI (the optional WSGI tier): uwsgi protocol
#            on 3031 for nginx, plain HTTP on SERVER_BIND:PORT for healthchecks and benchmarks
#   worker   a runworker process; further arguments go to it (--only-channels=...); with
#            ASGI_MODE=relay it also serves the relayed HTTP and WebSocket traffic
#   migrate  the release step: apply database migrations, then publish the static files to
#            STATIC_PUBLISH_DIR when set (nginx's volume), then exit (also: release)
#   describe what the kit found in the project (manage.py kit_project; --json for scripts)
# Anything else is run as given (e.g. `python manage.py shell`).
set -eu
# The image installs the shared functions; a checkout (the Procfile) has them beside this file.
lib=/usr/local/lib/channels-kit/entrypoint-lib.sh
[ -f "$lib" ] || lib="$(dirname "$0")/../common/entrypoint-lib.sh"
. "$lib"
load_secret_files
# A DJANGO_SETTINGS_MODULE other than the kit's names the project's own settings.
overlay=channels_kit.project.settings
if [ -n "${DJANGO_SETTINGS_MODULE:-}" ] && [ "$DJANGO_SETTINGS_MODULE" != "$overlay" ]; then
  export KIT_PROJECT_SETTINGS="$DJANGO_SETTINGS_MODULE"
fi
export DJANGO_SETTINGS_MODULE="$overlay"
if [ -z "${KIT_PROJECT_SETTINGS:-}" ]; then
  KIT_PROJECT_SETTINGS=$(python -c 'from pathlib import Path
from channels_kit.project.discover import find_settings
print(find_settings(Path("."))[0])') || exit 2
  export KIT_PROJECT_SETTINGS
fi

# What print_settings shows (never a secret).
export KIT_SETTINGS_KEYS="SERVER_ROLE KIT_PROJECT_SETTINGS ASGI_MODE DJANGO_ALLOWED_HOSTS DJANGO_DEBUG POSTGRES_HOST POSTGRES_DB
  REDIS_URLS REDIS_SOCKET_TIMEOUT REDIS_COMMAND_TIMEOUT LOG_LEVEL WORKER_CONCURRENCY WORKER_HTTP_CONCURRENCY
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
    exec_daphne channels_kit.project.asgi:application "$timeout" "${DAPHNE_WEBSOCKET_CONNECT_TIMEOUT:-20}" "$@"
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
      --module channels_kit.project.wsgi:application \
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
    print_settings python manage.py migrate --noinput "$@"
    python manage.py migrate --noinput "$@"
    if [ -n "${STATIC_PUBLISH_DIR:-}" ] && [ -d "${STATIC_ROOT:-}" ]; then
      [ -w "$STATIC_PUBLISH_DIR" ] || {
        echo "STATIC_PUBLISH_DIR=$STATIC_PUBLISH_DIR is not writable by $(id -un) (uid $(id -u)): its volume was made by another user; remove it (docker volume rm <project>_static-files) and start again" >&2
        exit 1
      }
      # Added beside what earlier releases published: pages of the old code still being
      # served during a rollout keep finding their (hashed) files.
      cp -R "${STATIC_ROOT:?}/." "$STATIC_PUBLISH_DIR/"
      echo "channels-kit release: $(find "$STATIC_ROOT" -type f | wc -l) static file(s) published to $STATIC_PUBLISH_DIR"
    fi
    exit 0
    ;;
  describe)
    exec python manage.py kit_project "$@"
    ;;
  *)
    set -- "$role" "$@"
    ;;
esac

print_settings "$@"
exec "$@"
