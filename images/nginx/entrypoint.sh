#!/bin/bash
# Renders nginx's configuration for the routing mode (kit-nginx-render), writes the
# first upstream lists, starts the upstream watcher in the background where nginx needs
# it, then runs nginx.
#
# Following Daphne (and uWSGI) replicas: nginx >= 1.27.3 (the official image's default)
# re-resolves the service names itself (`server daphne:8000 resolve` in a `zone`, with a
# `resolver` taken from /etc/resolv.conf, valid=UPSTREAM_REFRESH_SECONDS) and no watcher
# runs. Older nginx (Debian's 1.22 stand-in) resolves names only at start and reload, so
# kit-watch-upstreams rewrites the lists and reloads it. Decided at start from `nginx -v`;
# UPSTREAM_RESOLVE=on|off overrides (kit-nginx-render). Either way, kit-nginx-upstreams
# daphne|uwsgi prints the replicas nginx routes to now.
#
# Two drains: a reload (the watcher's, on an upstream change) lets old workers keep their
# WebSockets for NGINX_RELOAD_DRAIN (worker_shutdown_timeout, an hour by default), so
# adding or replacing a Daphne replica drops no socket; a stop (SIGQUIT, Docker's stop
# signal) lets open requests and sockets finish for NGINX_SHUTDOWN_TIMEOUT (whole
# seconds, e.g. 25s), then stops nginx at once, before Docker's grace period runs out.
set -Eeuo pipefail

kit-nginx-render
kit-watch-upstreams --once
while read -r name; do
  echo "channels-kit nginx: upstream $name -> $(tr '\n' ' ' <"/run/nginx/upstream-$name.conf")"
done </run/nginx/upstreams
[[ "$(cat /run/nginx/upstream-mode)" == resolve ]] || kit-watch-upstreams &
[[ "${1:-}" == nginx ]] || exec "$@"

timeout="${NGINX_SHUTDOWN_TIMEOUT:-25s}"
timeout="${timeout%s}"
[[ "$timeout" =~ ^[0-9]+$ ]] || { echo "NGINX_SHUTDOWN_TIMEOUT must be whole seconds (25s), not '$timeout'" >&2; exit 2; }

"$@" &
nginx_pid=$!

stop() {
  kill -QUIT "$nginx_pid" 2>/dev/null || return 0 # graceful: no new connections, open ones finish
  for ((tenth = 0; tenth < timeout * 10; tenth++)); do
    kill -0 "$nginx_pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "channels-kit nginx: connections still open after ${timeout}s; stopping now" >&2
  kill -TERM "$nginx_pid" 2>/dev/null || true
}
trap stop QUIT TERM INT

set +e
wait "$nginx_pid"
status=$?
# A trapped signal ends that wait early (status above 128): nginx's own exit status then.
if ((status > 128)); then
  wait "$nginx_pid"
  status=$?
fi
exit "$status"
