#!/bin/bash
# Keeps nginx's list of Daphne replicas equal to what Docker's DNS says, so that
# `docker compose scale daphne=N` and replaced replicas are picked up. A change
# triggers `nginx -s reload`, which lets old workers finish open connections.
#   kit-watch-upstreams --once   write the list once (waits up to 60 s for DNS)
#   kit-watch-upstreams          watch forever, every UPSTREAM_REFRESH_SECONDS
set -Eeuo pipefail

host="${DAPHNE_HOST:-daphne}"
port="${DAPHNE_PORT:-8000}"
out=/run/nginx/upstream-daphne.conf
interval="${UPSTREAM_REFRESH_SECONDS:-5}"

resolve() {
  getent ahostsv4 "$host" 2>/dev/null | awk '{print $1}' | sort -u
}

render() {
  local addresses=$1
  printf '%s\n' "$addresses" | awk -v port="$port" 'NF {printf "server %s:%s max_fails=2 fail_timeout=5s;\n", $1, port}'
}

if [[ "${1:-}" == --once ]]; then
  for _ in $(seq 60); do
    addresses=$(resolve)
    if [[ -n "$addresses" ]]; then
      render "$addresses" >"$out"
      exit 0
    fi
    sleep 1
  done
  echo "kit-watch-upstreams: $host does not resolve after 60 s" >&2
  exit 1
fi

current=$(cat "$out")
while sleep "$interval"; do
  addresses=$(resolve)
  # No replica at all (all restarting): keep the last list rather than break nginx.
  [[ -n "$addresses" ]] || continue
  wanted=$(render "$addresses")
  if [[ "$wanted" != "$current" ]]; then
    printf '%s\n' "$wanted" >"$out"
    current="$wanted"
    echo "kit-watch-upstreams: daphne replicas now $(echo "$addresses" | tr '\n' ' '); reloading nginx"
    nginx -e stderr -c /run/nginx/nginx.conf -s reload || echo "kit-watch-upstreams: reload failed" >&2
  fi
done
