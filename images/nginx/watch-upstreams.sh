#!/bin/bash
# Keeps nginx's upstream lists equal to what Docker's DNS says, so that
# `docker compose scale daphne=N` (or uwsgi=N) and replaced replicas are picked up.
# Needed only where nginx cannot re-resolve upstream names itself (before 1.27.3, e.g.
# Debian's 1.22 stand-in): kit-nginx-render decides (/run/nginx/upstream-mode). In
# `resolve` mode --once writes `server NAME:PORT resolve ...;` (nginx's own resolver
# follows the replicas) and the entrypoint starts no watcher.
# The upstreams are those the routing mode uses, listed in /run/nginx/upstreams by
# kit-nginx-render: `daphne` always, `uwsgi` when the mode has a WSGI tier. Each
# NAME resolves as ${NAME}_HOST (default: the name) on ${NAME}_PORT (daphne 8000,
# uwsgi 3031). A change triggers one `nginx -s reload`, which lets old workers
# finish open connections.
#   kit-watch-upstreams --once   write every list once (see below), then exit
#   kit-watch-upstreams          watch forever, every UPSTREAM_REFRESH_SECONDS
# --once waits up to 60 s for daphne and fails without it. The uwsgi tier is
# optional: after UWSGI_WAIT_SECONDS (default 20) without it, its list holds a
# placeholder (nginx answers 502 for its routes) until a replica appears.
set -Eeuo pipefail

names_file=/run/nginx/upstreams
interval="${UPSTREAM_REFRESH_SECONDS:-5}"
mode=$(cat /run/nginx/upstream-mode 2>/dev/null || echo watch)

host_of() {
  local var="${1^^}_HOST"
  echo "${!var:-$1}"
}

port_of() {
  local var="${1^^}_PORT" default=8000
  [[ "$1" != uwsgi ]] || default=3031
  echo "${!var:-$default}"
}

file_of() {
  echo "/run/nginx/upstream-$1.conf"
}

resolve() {
  # Nothing (getent fails) while no replica runs: an empty list, not an error under pipefail.
  { getent ahostsv4 "$(host_of "$1")" 2>/dev/null || true; } | awk '{print $1}' | sort -u
}

render() {
  local name=$1 addresses=$2
  printf '%s\n' "$addresses" | awk -v port="$(port_of "$name")" \
    'NF {printf "server %s:%s max_fails=2 fail_timeout=5s;\n", $1, port}'
}

mapfile -t names <"$names_file"

if [[ "${1:-}" == --once ]]; then
  for name in "${names[@]}"; do
    wait_seconds=60
    [[ "$name" == daphne ]] || wait_seconds="${UWSGI_WAIT_SECONDS:-20}"
    addresses=""
    for ((second = 0; second < wait_seconds; second++)); do
      addresses=$(resolve "$name")
      [[ -z "$addresses" ]] || break
      sleep 1
    done
    if [[ -z "$addresses" && "$name" == daphne ]]; then
      echo "kit-watch-upstreams: $(host_of daphne) does not resolve after $wait_seconds s" >&2
      exit 1
    elif [[ "$mode" == resolve ]]; then
      # nginx resolves the name itself, now and whenever its answer is older than valid=.
      echo "server $(host_of "$name"):$(port_of "$name") resolve max_fails=2 fail_timeout=5s;" >"$(file_of "$name")"
      [[ -n "$addresses" ]] || echo "kit-watch-upstreams: WARNING: $(host_of "$name") does not resolve yet;" \
        "its routes answer 502 until it does (is the wsgi profile on?)" >&2
    elif [[ -n "$addresses" ]]; then
      render "$name" "$addresses" >"$(file_of "$name")"
    else
      echo "kit-watch-upstreams: WARNING: $(host_of "$name") does not resolve after $wait_seconds s;" \
        "its routes answer 502 until it does. Is the wsgi profile on (COMPOSE_PROFILES=wsgi;" \
        "\`make up\` sets it from ROUTING)?" >&2
      # An upstream needs a server: a placeholder marked down, replaced once replicas resolve.
      echo "server 127.0.0.1:9 down;" >"$(file_of "$name")"
    fi
  done
  exit 0
fi

if [[ "$mode" == resolve ]]; then
  echo "kit-watch-upstreams: nginx re-resolves the upstream names itself (resolve): nothing to watch"
  exit 0
fi

while sleep "$interval"; do
  changed=()
  for name in "${names[@]}"; do
    addresses=$(resolve "$name")
    # No replica at all (all restarting): keep the last list rather than break nginx.
    [[ -n "$addresses" ]] || continue
    wanted=$(render "$name" "$addresses")
    if [[ "$wanted" != "$(cat "$(file_of "$name")")" ]]; then
      printf '%s\n' "$wanted" >"$(file_of "$name")"
      changed+=("$name: $(echo "$addresses" | tr '\n' ' ')")
    fi
  done
  if ((${#changed[@]})); then
    echo "kit-watch-upstreams: replicas now ${changed[*]}; reloading nginx"
    nginx -e stderr -c /run/nginx/nginx.conf -s reload || echo "kit-watch-upstreams: reload failed" >&2
  fi
done
