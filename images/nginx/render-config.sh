#!/bin/bash
# Renders nginx's configuration for the routing mode into /run/nginx:
#   nginx.conf     from templates/nginx.conf.template (global settings, the daphne upstream)
#   snippets/*     from templates/snippets/ (proxy settings per tier, static files, health)
#   routing.conf   from templates/routing/$ROUTING.conf.template (the servers of the mode)
#   upstreams      the upstream names the mode uses, one a line, for kit-watch-upstreams
#   upstream-mode  how the upstream lists follow the replicas: `resolve` or `watch` (below)
#   resolver.conf  nginx's `resolver` line in resolve mode (empty in watch mode)
#
#   ROUTING         asgi (default) | path | upgrade | domain | inverted
#   ASGI_PATHS      prefixes sent to Daphne in `path` mode (default /ws/,/poll/)
#   LONGPOLL_PATHS  long-poll prefixes sent to Daphne in `upgrade` mode (default /poll/)
#   ASGI_DOMAIN     the WebSocket host of `domain` mode (default ws.localhost)
#   WSGI_PATHS      prefixes sent back to uWSGI in `inverted` mode (default /accounts/,/admin/)
#   WSGI_DOMAIN     a host sent entirely to uWSGI in `inverted` mode (default: none)
#   STATIC_URL_PATH where the project's static files are served from /srv/static (default
#                   /static/; empty: none, the project's STATIC_URL is on another host)
#   UPSTREAM_RESOLVE auto (default) | on | off: nginx re-resolves the replicas itself
#                   (`server daphne:8000 resolve`, open-source nginx >= 1.27.3) or
#                   kit-watch-upstreams rewrites the lists and reloads nginx (older nginx,
#                   e.g. Debian's 1.22 stand-in). auto: resolve when `nginx -v` is >= 1.27.3.
#   UPSTREAM_REFRESH_SECONDS how stale a replica list may get (default 5): the resolver's
#                   valid= in resolve mode, the watcher's interval in watch mode
#   NGINX_LIMIT_CONN requests and sockets each client address may have open at once through
#                   the proxied locations (WebSockets and long-polls count for as long as they
#                   last; default 256; 0: no limit)
#   NGINX_LIMIT_REQ_RATE requests per second each client address may make, sustained (a
#                   WebSocket handshake is one; default 100; 0: no limit)
#   NGINX_LIMIT_REQ_BURST requests above that rate taken at once before the excess is
#                   refused (default 200). Over either limit: 429 with Retry-After. The client
#                   address is the real one behind TRUSTED_PROXIES.
#   TRUSTED_PROXIES the proxies in front whose X-Forwarded-Proto and X-Forwarded-For are
#                   believed: comma-separated IPv4/IPv6 addresses or CIDR ranges, e.g. a TLS
#                   ingress controller's pod range 10.244.0.0/16 (default empty: nobody, nginx
#                   sends $scheme and the peer's address, whatever the client claims)
# Every value is checked before anything is written; a bad one stops the container
# with the reason.
set -Eeuo pipefail

templates=/etc/nginx/kit-templates
out=/run/nginx

die() {
  echo "kit-nginx-render: $*" >&2
  exit 1
}

export ROUTING="${ROUTING:-asgi}"
export ASGI_PATHS="${ASGI_PATHS-/ws/,/poll/}"
export LONGPOLL_PATHS="${LONGPOLL_PATHS-/poll/}"
export ASGI_DOMAIN="${ASGI_DOMAIN:-ws.localhost}"
export WSGI_PATHS="${WSGI_PATHS-/accounts/,/admin/}"
export WSGI_DOMAIN="${WSGI_DOMAIN:-}"
export NGINX_WORKER_PROCESSES="${NGINX_WORKER_PROCESSES:-2}"
export NGINX_WORKER_CONNECTIONS="${NGINX_WORKER_CONNECTIONS:-16384}"
export NGINX_SHUTDOWN_TIMEOUT="${NGINX_SHUTDOWN_TIMEOUT:-25s}"
export NGINX_RELOAD_DRAIN="${NGINX_RELOAD_DRAIN:-${WS_READ_TIMEOUT:-3600s}}"
export MAX_REQUEST_BYTES="${MAX_REQUEST_BYTES:-1048576}"
export WS_READ_TIMEOUT="${WS_READ_TIMEOUT:-3600s}"
export HTTP_READ_TIMEOUT="${HTTP_READ_TIMEOUT:-130s}"
export STATIC_URL_PATH="${STATIC_URL_PATH-/static/}"
TRUSTED_PROXIES="${TRUSTED_PROXIES:-}"
NGINX_LIMIT_CONN="${NGINX_LIMIT_CONN:-256}"
NGINX_LIMIT_REQ_RATE="${NGINX_LIMIT_REQ_RATE:-100}"
NGINX_LIMIT_REQ_BURST="${NGINX_LIMIT_REQ_BURST:-200}"
for name in NGINX_LIMIT_CONN NGINX_LIMIT_REQ_RATE NGINX_LIMIT_REQ_BURST; do
  [[ "${!name}" =~ ^(0|[1-9][0-9]{0,8})$ ]] || die "$name must be a whole number >= 0 (0: no limit), not '${!name}'"
done
UPSTREAM_RESOLVE="${UPSTREAM_RESOLVE:-auto}"
UPSTREAM_REFRESH_SECONDS="${UPSTREAM_REFRESH_SECONDS:-5}"
[[ "$UPSTREAM_RESOLVE" =~ ^(auto|on|off)$ ]] || die "UPSTREAM_RESOLVE must be auto, on or off, not '$UPSTREAM_RESOLVE'"
[[ "$UPSTREAM_REFRESH_SECONDS" =~ ^[1-9][0-9]*$ ]] \
  || die "UPSTREAM_REFRESH_SECONDS must be whole seconds >= 1, not '$UPSTREAM_REFRESH_SECONDS'"

# nginx_has_resolve: true when this nginx takes `resolve` on upstream servers (open source
# since 1.27.3). Prints the version found.
nginx_has_resolve() {
  local version
  version=$(nginx -v 2>&1 | sed -n 's|^nginx version: nginx/\([0-9][0-9.]*\).*|\1|p')
  echo "${version:-unknown}"
  [[ -n "$version" ]] && [[ "$(printf '%s\n' 1.27.3 "$version" | sort -V | head -n 1)" == 1.27.3 ]]
}

# resolvers: the IPv4 name servers of /etc/resolv.conf (Docker's 127.0.0.11 on compose networks).
resolvers() {
  awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ { printf "%s%s", sep, $2; sep = " " }' /etc/resolv.conf 2>/dev/null || true
}

# prefixes NAME: the comma-separated path prefixes in $NAME, one a line, each checked
# (only characters that cannot break out of a `location` line).
prefixes() {
  local name=$1 item items
  IFS=, read -ra items <<<"${!name}"
  for item in "${items[@]}"; do
    item="${item//[[:space:]]/}"
    [[ -n "$item" ]] || continue
    [[ "$item" =~ ^/[A-Za-z0-9._~/-]*$ ]] || die "$name: '$item' is not a path prefix such as /ws/"
    echo "$item"
  done
}

# check_domain NAME: $NAME must be a plain host name (no port, no scheme).
check_domain() {
  local name=$1
  [[ "${!name}" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] \
    || die "$name: '${!name}' is not a host name such as ws.localhost"
}

# locations SNIPPET PREFIX...: one `location ^~ PREFIX` block per prefix, using the snippet.
locations() {
  local snippet=$1 prefix
  shift
  for prefix in "$@"; do
    printf '    location ^~ %s {\n        include /run/nginx/snippets/%s.conf;\n    }\n\n' "$prefix" "$snippet"
  done
}

# read_prefixes ARRAY NAME: the checked prefixes of $NAME into ARRAY (a bad one stops here).
# shellcheck disable=SC2034  # `into` is a nameref: it fills the caller's array
read_prefixes() {
  local -n into=$1
  local list
  list=$(prefixes "$2")
  into=()
  [[ -z "$list" ]] || mapfile -t into <<<"$list"
}

# cidr ITEM: true when ITEM is an IPv4 or IPv6 address, or one with a /prefix length.
cidr() {
  local address=${1%/*} bits= octet octets
  [[ "$1" != */* ]] || bits=${1##*/}
  if [[ "$address" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]]; then
    IFS=. read -ra octets <<<"$address"
    for octet in "${octets[@]}"; do ((10#$octet <= 255)) || return 1; done
    [[ -z "$bits" && "$1" != */ ]] || { [[ "$bits" =~ ^[0-9]{1,2}$ ]] && ((10#$bits <= 32)); }
  elif [[ "$address" == *:* && "$address" =~ ^[0-9A-Fa-f:.]+$ ]]; then
    [[ -z "$bits" && "$1" != */ ]] || { [[ "$bits" =~ ^[0-9]{1,3}$ ]] && ((10#$bits <= 128)); }
  else
    return 1
  fi
}

# Forwarded headers: the trusted ranges as nginx.conf's realip lines and geo entries.
KIT_REAL_IP_FROM="" KIT_TRUSTED_PROXY_RANGES="" trusted=()
IFS=, read -ra items <<<"$TRUSTED_PROXIES"
for item in "${items[@]}"; do
  item="${item//[[:space:]]/}"
  [[ -n "$item" ]] || continue
  cidr "$item" || die "TRUSTED_PROXIES: '$item' is not an address or CIDR range such as 10.244.0.0/16"
  trusted+=("$item")
  KIT_REAL_IP_FROM+="    set_real_ip_from $item;"$'\n'
  KIT_TRUSTED_PROXY_RANGES+="        $item 1;"$'\n'
done
export KIT_REAL_IP_FROM KIT_TRUSTED_PROXY_RANGES

# Per-client limits (keyed on \$binary_remote_addr: the real client behind a trusted proxy):
# the zones in nginx.conf, the limits in each proxied location (the snippets).
KIT_LIMIT_ZONES="" KIT_LIMITS="" limits_summary=()
if ((NGINX_LIMIT_CONN > 0)); then
  KIT_LIMIT_ZONES+="    limit_conn_zone \$binary_remote_addr zone=kit_conn_per_client:10m;"$'\n'
  KIT_LIMITS+="limit_conn kit_conn_per_client $NGINX_LIMIT_CONN;"$'\n'
  limits_summary+=("$NGINX_LIMIT_CONN open at once")
fi
if ((NGINX_LIMIT_REQ_RATE > 0)); then
  KIT_LIMIT_ZONES+="    limit_req_zone \$binary_remote_addr zone=kit_req_per_client:10m rate=${NGINX_LIMIT_REQ_RATE}r/s;"$'\n'
  KIT_LIMITS+="limit_req zone=kit_req_per_client burst=$NGINX_LIMIT_REQ_BURST nodelay;"$'\n'
  limits_summary+=("$NGINX_LIMIT_REQ_RATE requests/s (burst $NGINX_LIMIT_REQ_BURST)")
fi
export KIT_LIMIT_ZONES KIT_LIMITS

static_paths=() asgi_paths=() longpoll_paths=() wsgi_paths=()
read_prefixes static_paths STATIC_URL_PATH
((${#static_paths[@]} <= 1)) || die "STATIC_URL_PATH: one path prefix such as /static/, not '$STATIC_URL_PATH'"
read_prefixes asgi_paths ASGI_PATHS
read_prefixes longpoll_paths LONGPOLL_PATHS
read_prefixes wsgi_paths WSGI_PATHS
# Sockets and long-poll both get the streaming settings wherever Daphne serves them.
mapfile -t stream_paths < <(printf '%s\n' "${asgi_paths[@]}" "${longpoll_paths[@]}" | awk 'NF && !seen[$0]++')
upstreams=(daphne uwsgi)
case "$ROUTING" in
  asgi)
    upstreams=(daphne)
    summary="everything -> daphne"
    ;;
  path)
    ((${#asgi_paths[@]})) || die "ROUTING=path needs ASGI_PATHS (e.g. /ws/,/poll/)"
    summary="${asgi_paths[*]} -> daphne; the rest -> uwsgi"
    ;;
  upgrade)
    summary="Upgrade: websocket${longpoll_paths[*]:+ and ${longpoll_paths[*]}} -> daphne; the rest -> uwsgi"
    ;;
  domain)
    check_domain ASGI_DOMAIN
    summary="host $ASGI_DOMAIN -> daphne; other hosts -> uwsgi"
    ;;
  inverted)
    [[ -z "$WSGI_DOMAIN" ]] || check_domain WSGI_DOMAIN
    ((${#wsgi_paths[@]})) || [[ -n "$WSGI_DOMAIN" ]] \
      || die "ROUTING=inverted needs WSGI_PATHS or WSGI_DOMAIN (what goes back to uWSGI)"
    for prefix in "${wsgi_paths[@]}"; do
      for stream in "${stream_paths[@]}"; do
        [[ "$prefix" != "$stream" ]] || die "$prefix is in WSGI_PATHS and in ASGI_PATHS/LONGPOLL_PATHS"
      done
    done
    summary="${wsgi_paths[*]:-nothing}${WSGI_DOMAIN:+ and host $WSGI_DOMAIN} -> uwsgi; the rest -> daphne"
    ;;
  *)
    die "ROUTING must be asgi, path, upgrade, domain or inverted, not '$ROUTING'"
    ;;
esac

KIT_STATIC_LOCATION=""
if ((${#static_paths[@]})); then
  KIT_STATIC_LOCATION=$(printf '%s\n' \
    "location ^~ ${static_paths[0]%/}/ {" \
    "    alias /srv/static/;" \
    "    expires 1h;" \
    "    access_log off;" \
    "}")
fi
KIT_STREAM_LOCATIONS=$(locations proxy-daphne-stream "${stream_paths[@]}")
KIT_ASGI_PATH_LOCATIONS=$(locations proxy-daphne-stream "${asgi_paths[@]}")
KIT_LONGPOLL_LOCATIONS=$(locations proxy-daphne-stream "${longpoll_paths[@]}")
KIT_WSGI_PATH_LOCATIONS=$(locations proxy-uwsgi "${wsgi_paths[@]}")
KIT_WSGI_DOMAIN_SERVER=""
if [[ -n "$WSGI_DOMAIN" ]]; then
  KIT_WSGI_DOMAIN_SERVER=$(printf '%s\n' \
    "" \
    "server {" \
    "    listen 8080;" \
    "    server_name $WSGI_DOMAIN;" \
    "    include /run/nginx/snippets/edge.conf;" \
    "" \
    "    location / {" \
    "        include /run/nginx/snippets/proxy-uwsgi.conf;" \
    "    }" \
    "}" \
    "")
fi
# Command substitution drops trailing newlines: end each list with one, as a template line.
for block in KIT_STREAM_LOCATIONS KIT_ASGI_PATH_LOCATIONS KIT_LONGPOLL_LOCATIONS KIT_WSGI_PATH_LOCATIONS; do
  [[ -z "${!block}" ]] || printf -v "$block" '%s\n' "${!block}"
done
export KIT_STATIC_LOCATION KIT_STREAM_LOCATIONS KIT_ASGI_PATH_LOCATIONS KIT_LONGPOLL_LOCATIONS KIT_WSGI_PATH_LOCATIONS \
  KIT_WSGI_DOMAIN_SERVER

# Only these are substituted: nginx's own $variables stay as they are. (The forwarded
# headers' two, computed above from TRUSTED_PROXIES, are named the other way envsubst takes.)
# shellcheck disable=SC2016  # envsubst's list of names, not an expansion
vars='${NGINX_WORKER_PROCESSES} ${NGINX_WORKER_CONNECTIONS} ${NGINX_RELOAD_DRAIN} ${MAX_REQUEST_BYTES}
      ${WS_READ_TIMEOUT} ${HTTP_READ_TIMEOUT} ${ROUTING} ${ASGI_DOMAIN} ${KIT_STREAM_LOCATIONS}
      ${KIT_ASGI_PATH_LOCATIONS} ${KIT_LONGPOLL_LOCATIONS} ${KIT_WSGI_PATH_LOCATIONS} ${KIT_WSGI_DOMAIN_SERVER} ${KIT_STATIC_LOCATION}
      $KIT_REAL_IP_FROM $KIT_TRUSTED_PROXY_RANGES $KIT_LIMIT_ZONES $KIT_LIMITS'
render() {
  envsubst "$vars" <"$1" >"$2"
}

# How the upstream lists follow the replicas: nginx's own resolver where it can, else the watcher.
upstream_mode=watch
nginx_version=$(nginx_has_resolve) && has_resolve=1 || has_resolve=0
name_servers=$(resolvers)
case "$UPSTREAM_RESOLVE" in
  on)
    ((has_resolve)) || die "UPSTREAM_RESOLVE=on needs nginx >= 1.27.3 (\`resolve\` on upstream servers); this is $nginx_version"
    [[ -n "$name_servers" ]] || die "UPSTREAM_RESOLVE=on: no IPv4 nameserver in /etc/resolv.conf"
    upstream_mode=resolve
    ;;
  auto)
    if ((has_resolve)) && [[ -n "$name_servers" ]]; then upstream_mode=resolve; fi
    ;;
esac

mkdir -p "$out/snippets"
render "$templates/nginx.conf.template" "$out/nginx.conf"
for template in "$templates"/snippets/*.conf.template; do
  name=${template##*/}
  render "$template" "$out/snippets/${name%.template}"
done
render "$templates/routing/$ROUTING.conf.template" "$out/routing.conf"
printf '%s\n' "${upstreams[@]}" >"$out/upstreams"
echo "channels-kit nginx: ROUTING=$ROUTING: $summary"
if ((${#trusted[@]})); then
  echo "channels-kit nginx: forwarded headers believed from ${trusted[*]} (TRUSTED_PROXIES)"
else
  echo "channels-kit nginx: no trusted proxy: \$scheme and the peer's address go to the upstreams"
fi

if ((${#limits_summary[@]})); then
  echo "channels-kit nginx: per client address: $(IFS=,; echo "${limits_summary[*]}" | sed 's/,/, /g'); beyond: 429"
else
  echo "channels-kit nginx: no per-client limit (NGINX_LIMIT_CONN=0, NGINX_LIMIT_REQ_RATE=0)"
fi

echo "$upstream_mode" >"$out/upstream-mode"
if [[ "$upstream_mode" == resolve ]]; then
  printf 'resolver %s valid=%ss ipv6=off;\nresolver_timeout 5s;\n' "$name_servers" "$UPSTREAM_REFRESH_SECONDS" \
    >"$out/resolver.conf"
  echo "channels-kit nginx: nginx $nginx_version re-resolves the replicas itself (resolve, every ${UPSTREAM_REFRESH_SECONDS}s)"
else
  : >"$out/resolver.conf"
  echo "channels-kit nginx: nginx $nginx_version: kit-watch-upstreams follows the replicas (every ${UPSTREAM_REFRESH_SECONDS}s)"
fi
