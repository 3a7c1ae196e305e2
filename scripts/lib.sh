# Shared shell helpers, sourced by every script in scripts/.
# shellcheck shell=bash
set -Eeuo pipefail
[[ "${DEBUG:-0}" == 1 ]] && set -x

KIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KIT_ROOT
ENV_FILE="${ENV_FILE:-$KIT_ROOT/.env}"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[1;33mwarning:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# usage_from_header: print the comment block at the top of the calling script.
usage_from_header() {
  sed -n '2,/^[^#]/{/^#/!q;s/^# \{0,1\}//;p}' "$0"
}

# env_get KEY [FILE]: print the value of KEY from a dotenv file (empty if unset).
env_get() {
  local key=$1 file=${2:-$ENV_FILE}
  [[ -f "$file" ]] || return 0
  sed -n "s/^${key}=//p" "$file" | tail -n 1
}

# setting KEY [DEFAULT]: KEY from the environment, else from the dotenv file, else DEFAULT.
setting() {
  local value="${!1:-}"
  [[ -n "$value" ]] || value=$(env_get "$1")
  echo "${value:-${2:-}}"
}

# project_dir: the directory of the project the kit deploys, absolute: PROJECT_DIR (the
# environment, else .env), relative to the kit's root unless absolute; default app/demo.
project_dir() {
  local dir
  dir=$(setting PROJECT_DIR app/demo)
  [[ "$dir" == /* ]] || dir="$KIT_ROOT/$dir"
  if [[ -d "$dir" ]]; then (cd "$dir" && pwd); else echo "$dir"; fi
}

# use_demo_project: the benchmarks measure the kit on its demo (its endpoints), whatever
# project .env names: from here on this script reads and writes a copy of the env file
# (.env.bench), which points at the demo, so the user's .env and its PROJECT_DIR stay.
use_demo_project() {
  local copy="$KIT_ROOT/.env.bench"
  if [[ -f "$ENV_FILE" ]]; then cp "$ENV_FILE" "$copy"; else : >"$copy"; fi
  chmod 600 "$copy"
  export ENV_FILE="$copy" COMPOSE_ENV_FILES="$copy" PROJECT_DIR=app/demo
  unset DJANGO_SETTINGS_MODULE PROJECT_REQUIREMENTS SLOW_CHANNELS
}

# env_set KEY VALUE [FILE]: set KEY=VALUE in a dotenv file, in place when KEY is
# already there (the first line wins, later duplicates are dropped), else appended.
env_set() {
  local key=$1 value=$2 file=${3:-$ENV_FILE} tmp
  touch "$file"
  tmp=$(mktemp "${file}.XXXXXX")
  KEY="$key" VALUE="$value" awk '
    index($0, ENVIRON["KEY"] "=") == 1 { if (!done) print ENVIRON["KEY"] "=" ENVIRON["VALUE"]; done = 1; next }
    { print }
    END { if (!done) print ENVIRON["KEY"] "=" ENVIRON["VALUE"] }
  ' "$file" >"$tmp"
  cat "$tmp" >"$file"
  rm -f "$tmp"
}

# The kit's secrets, one file each in the secrets directory of the env file in use
# (secrets_dir), mounted into the containers as compose secrets (/run/secrets/NAME):
# NAME and the variable an older .env held it in (scripts/init-env moves it from there),
# or - when it never was in .env.
KIT_SECRETS=(
  django_secret_key:DJANGO_SECRET_KEY
  postgres_password:POSTGRES_PASSWORD
  rabbitmq_password:RABBITMQ_PASSWORD
  demo_password:DEMO_PASSWORD
  redis_admin_password:REDIS_PASSWORD
  redis_worker_password:-
  redis_relay_password:-
  redis_replica_password:-
  redis_sentinel_password:-
  sentinel_admin_password:-
  sentinel_layer_password:-
)

# secrets_dir: the directory of the secrets of ENV_FILE, absolute: SECRETS_DIR (the
# environment, else the env file), else the env file's path with `.secrets` appended
# (.env.secrets beside .env, .env.test.secrets beside .env.test).
secrets_dir() {
  local dir
  dir=$(setting SECRETS_DIR "${ENV_FILE}.secrets")
  [[ "$dir" == /* ]] || dir="$KIT_ROOT/$dir"
  echo "$dir"
}

# secret_get NAME: the secret NAME (a file of secrets_dir), empty when there is none.
secret_get() {
  local file
  file="$(secrets_dir)/$1"
  [[ -r "$file" ]] && cat "$file"
  return 0
}

# secret_set NAME VALUE: write the secret file NAME. The directory is its owner's alone (0700);
# the file itself is readable by all (0644) because compose bind-mounts it as it is on the
# host (owner and mode included) into containers whose processes run as other users.
secret_set() {
  local dir file
  dir=$(secrets_dir)
  file="$dir/$1"
  mkdir -p "$dir"
  chmod 700 "$dir"
  (umask 077 && printf '%s' "$2" >"$file.tmp")
  chmod 644 "$file.tmp"
  mv -f "$file.tmp" "$file"
}

# env_unset KEY [FILE]: remove KEY's lines from a dotenv file.
env_unset() {
  local key=$1 file=${2:-$ENV_FILE} tmp
  [[ -f "$file" ]] || return 0
  tmp=$(mktemp "${file}.XXXXXX")
  KEY="$key" awk 'index($0, ENVIRON["KEY"] "=") != 1' "$file" >"$tmp"
  cat "$tmp" >"$file"
  rm -f "$tmp"
}

# compose: docker compose run from the repository root, so the root .env applies.
compose() {
  (cd "$KIT_ROOT" && docker compose "$@")
}

# compose_files_for MODE: the compose files of ASGI_MODE=MODE, as COMPOSE_FILE lists them:
# compose.yaml, compose/relay.yaml in relay mode, compose.override.yaml when it exists.
compose_files_for() {
  local files=(compose.yaml)
  [[ "$1" == relay ]] && files+=(compose/relay.yaml)
  [[ -f "$KIT_ROOT/compose.override.yaml" ]] && files+=(compose.override.yaml)
  (IFS=:; echo "${files[*]}")
}

# stack_files: the stack's compose files as -f options (COMPOSE_FILE from the environment,
# else from .env, else compose.yaml), for commands that add an overlay with -f of their own.
stack_files() {
  local files="${COMPOSE_FILE:-$(env_get COMPOSE_FILE)}" file
  local -a list
  IFS=: read -ra list <<<"${files:-compose.yaml}"
  for file in "${list[@]}"; do printf -- '-f\n%s\n' "$file"; done
}

# have CMD: true when CMD is on PATH.
have() { command -v "$1" >/dev/null 2>&1; }

# apt_install [apt-get install options] PKG...: install Debian packages; runs
# apt-get update only when a package has no install candidate yet, and once
# more (then retries) when an install fails on stale package lists.
apt_install() {
  local arg policy need_update=0
  export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
  for arg in "$@"; do
    [[ "$arg" == -* ]] && continue
    policy=$(apt-cache policy "$arg" 2>/dev/null || true)
    [[ "$policy" == *"Candidate: "[!\(]* ]] || need_update=1
  done
  if ((need_update)); then
    log "apt-get update"
    timeout 600 apt-get update -q || die "apt-get update failed"
  fi
  if ! timeout 1200 apt-get install -y -q -o Dpkg::Use-Pty=0 "$@"; then
    warn "apt-get install $* failed; refreshing package lists and retrying once"
    timeout 600 apt-get update -q || die "apt-get update failed"
    timeout 1200 apt-get install -y -q -o Dpkg::Use-Pty=0 "$@" || die "apt-get install $* failed"
  fi
}

# container_ips ID: the container's addresses on its networks, space-separated.
container_ips() {
  docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" 2>/dev/null | xargs
}

# nginx_upstreams NGINX SERVICE REQUESTS: the addresses (IP:PORT, one a line) the nginx
# container NGINX routes SERVICE's requests to now, as its probe sees them
# (kit-nginx-upstreams: REQUESTS requests through nginx); an nginx image older than that
# command: the servers of its rendered upstream list. Exit 2: nginx's routing mode does not
# use SERVICE.
nginx_upstreams() {
  local nginx=$1 service=$2 requests=$3 status=0
  docker exec "$nginx" kit-nginx-upstreams "$service" "$requests" 2>/dev/null || status=$?
  case "$status" in
    0 | 1 | 2) return "$status" ;;
  esac
  docker exec "$nginx" grep -qx "$service" /run/nginx/upstreams 2>/dev/null || return 2
  docker exec "$nginx" cat "/run/nginx/upstream-$service.conf" 2>/dev/null \
    | awk '$1 == "server" && !/ down;/ { sub(/;$/, "", $2); print $2 }'
}

# wait_upstreams SERVICE [SECONDS]: until the stack's nginx routes requests to every running
# replica of SERVICE (daphne or uwsgi), polled each second for at most SECONDS (default 60).
# Whichever way nginx follows replicas (its own `resolve`, or the kit's watcher reloading it
# every UPSTREAM_REFRESH_SECONDS), this asks nginx what it does (nginx_upstreams). True at once
# when nginx does not run or its routing mode does not use SERVICE; false, saying which
# replicas nginx still does not route to, when the time runs out.
wait_upstreams() {
  local service=$1 limit=${2:-60} nginx deadline ids id ips ip seen found status count
  local -a missing
  nginx=$(compose ps --quiet --status running nginx 2>/dev/null | awk 'NR == 1')
  [[ -n "$nginx" ]] || return 0
  deadline=$((SECONDS + limit))
  while :; do
    ids=$(compose ps --quiet --status running "$service" 2>/dev/null || true)
    count=$(grep -c . <<<"$ids" || true)
    status=0
    seen=$(nginx_upstreams "$nginx" "$service" $((count * 2 + 2 > 64 ? 64 : count * 2 + 2))) || status=$?
    ((status != 2)) || return 0
    missing=()
    for id in $ids; do
      ips=$(container_ips "$id")
      found=0
      for ip in $ips; do
        [[ $'\n'"$seen"$'\n' == *$'\n'"$ip:"* ]] && found=1
      done
      ((found)) || missing+=("$(docker inspect --format '{{.Name}}' "$id" 2>/dev/null | tr -d /) (${ips:-no address})")
    done
    ((${#missing[@]} == 0 && count > 0)) && return 0
    if ((SECONDS >= deadline)); then
      ((count > 0)) || missing=("none runs")
      warn "after ${limit}s nginx still routes no request to $service replica(s) ${missing[*]};" \
        "it routes to: $(tr '\n' ' ' <<<"${seen:-nothing}")(docker exec ${nginx:0:12} kit-nginx-upstreams $service)"
      return 1
    fi
    sleep 1
  done
}
