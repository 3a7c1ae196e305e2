#!/bin/bash
# Renders nginx's configuration for the routing mode (kit-nginx-render), writes the
# first upstream lists, starts the upstream watcher in the background, then runs
# the command (nginx) in its place.
set -Eeuo pipefail

kit-nginx-render
kit-watch-upstreams --once
while read -r name; do
  echo "channels-kit nginx: upstream $name -> $(tr '\n' ' ' <"/run/nginx/upstream-$name.conf")"
done </run/nginx/upstreams
kit-watch-upstreams &
exec "$@"
