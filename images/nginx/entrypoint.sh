#!/bin/bash
# Renders nginx.conf from its template, writes the first upstream list, starts the
# upstream watcher in the background, then runs the command (nginx) in its place.
set -Eeuo pipefail

export NGINX_WORKER_PROCESSES="${NGINX_WORKER_PROCESSES:-2}"
export NGINX_WORKER_CONNECTIONS="${NGINX_WORKER_CONNECTIONS:-4096}"
export NGINX_SHUTDOWN_TIMEOUT="${NGINX_SHUTDOWN_TIMEOUT:-25s}"
export MAX_REQUEST_BYTES="${MAX_REQUEST_BYTES:-1048576}"
export WS_READ_TIMEOUT="${WS_READ_TIMEOUT:-3600s}"
export HTTP_READ_TIMEOUT="${HTTP_READ_TIMEOUT:-130s}"
export DAPHNE_HOST="${DAPHNE_HOST:-daphne}" DAPHNE_PORT="${DAPHNE_PORT:-8000}"

vars='${NGINX_WORKER_PROCESSES} ${NGINX_WORKER_CONNECTIONS} ${NGINX_SHUTDOWN_TIMEOUT} ${MAX_REQUEST_BYTES} ${WS_READ_TIMEOUT} ${HTTP_READ_TIMEOUT}'
envsubst "$vars" </etc/nginx/kit-templates/nginx.conf.template >/run/nginx/nginx.conf

kit-watch-upstreams --once
echo "channels-kit nginx: upstream ${DAPHNE_HOST}:${DAPHNE_PORT} -> $(tr -d '\n' </run/nginx/upstream-daphne.conf)"
kit-watch-upstreams &
exec "$@"
