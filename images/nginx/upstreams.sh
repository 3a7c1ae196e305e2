#!/bin/bash
# kit-nginx-upstreams NAME [REQUESTS]: the replicas nginx sends NAME's requests to now
# (NAME: daphne or uwsgi), one address a line, sorted: learnt from REQUESTS requests
# (default 8, at most 64) through the probe server of 127.0.0.1 (8081 daphne, 8082
# uwsgi; nginx.conf), whose answers name the replica that took them ($upstream_addr).
# What nginx does, whichever keeps its lists (its own `resolve`, or kit-watch-upstreams);
# nginx's round robin is shared by its workers (zone), so N requests reach N replicas.
# Exits 2 when the routing mode does not use NAME (/run/nginx/upstreams), 1 when nothing
# answered. The scripts' wait for new replicas runs it (wait_upstreams, scripts/lib.sh).
set -euo pipefail

name=${1:-}
requests=${2:-8}
case "$name" in
  daphne) port=8081 ;;
  uwsgi) port=8082 ;;
  *) echo "usage: kit-nginx-upstreams daphne|uwsgi [REQUESTS]" >&2; exit 2 ;;
esac
[[ "$requests" =~ ^[0-9]+$ ]] && ((requests >= 1 && requests <= 64)) \
  || { echo "kit-nginx-upstreams: REQUESTS must be 1-64, not '$requests'" >&2; exit 2; }
grep -qx "$name" /run/nginx/upstreams || exit 2

# probe: one request; prints the address(es) in its X-Kit-Upstream header (bounded: 15 s).
probe() {
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 0
  printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  while IFS= read -r -t 15 line <&3; do
    line=${line%$'\r'}
    [[ -n "$line" ]] || break
    [[ "${line,,}" == x-kit-upstream:* ]] && printf '%s\n' "${line#*:}"
  done
  exec 3<&-
}

seen=$(for ((i = 0; i < requests; i++)); do probe; done | tr ', ' '\n\n' | grep . | sort -u || true)
[[ -n "$seen" ]] || { echo "kit-nginx-upstreams: no answer from nginx's $name probe (127.0.0.1:$port)" >&2; exit 1; }
echo "$seen"
