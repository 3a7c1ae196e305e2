# Shell helpers of the load-test and benchmark scripts of loadtest/bin, sourced after
# scripts/lib.sh. Locust runs in the loadtest image on the compose network of the project
# named by COMPOSE_PROJECT_NAME (else compose.yaml's), aimed at that project's nginx. The
# benchmarks' own stacks (a compose project each, removed at exit) are set up and cleaned up
# by the helpers at the end (bench_project, use_mode, bench_up, ...).
# shellcheck shell=bash

# The stack's files (relay mode adds compose/relay.yaml) plus the load-test overlay.
mapfile -t LOADTEST_COMPOSE < <(stack_files)
LOADTEST_COMPOSE+=(-f compose/loadtest.yaml)
REPORTS_ROOT="$KIT_ROOT/loadtest/reports"

# duration_seconds SPEC: 90 | 90s | 2m | 1h -> seconds on stdout (nothing when SPEC is none of those).
duration_seconds() {
  [[ "$1" =~ ^([0-9]+)([smh]?)$ ]] || return 0
  case "${BASH_REMATCH[2]}" in
    h) echo $((BASH_REMATCH[1] * 3600)) ;;
    m) echo $((BASH_REMATCH[1] * 60)) ;;
    *) echo "${BASH_REMATCH[1]}" ;;
  esac
}

# stack_healthy: true when the project's nginx answers its healthcheck.
stack_healthy() {
  docker info >/dev/null 2>&1 || return 1
  [[ "$(compose ps --format '{{.Health}}' nginx 2>/dev/null | head -n1)" == healthy ]]
}

# build_loadtest_image: the Locust image (pip gets the CA bundle as a build secret, as the app's).
build_loadtest_image() {
  log "building the loadtest image"
  compose "${LOADTEST_COMPOSE[@]}" build --quiet locust
}

# report_path DIR: DIR's path inside the container (it must be under loadtest/reports).
report_path() {
  local dir
  dir=$(cd "$1" && pwd)
  case "$dir/" in
    "$REPORTS_ROOT/"*) echo "/loadtest/reports/${dir#"$REPORTS_ROOT/"}" ;;
    *) die "$1 is not under $REPORTS_ROOT (the directory mounted into the container)" ;;
  esac
}

# run_locust LIMIT_SECONDS ARGS...: one container of the `locust` service, as the invoking user
# (so report files are theirs), with no TTY; `timeout` is the last resort should it hang.
run_locust() {
  local limit=$1
  shift
  (cd "$KIT_ROOT" && timeout "$limit" docker compose "${LOADTEST_COMPOSE[@]}" \
    run --rm --no-deps -T --user "$(id -u):$(id -g)" locust "$@")
}

# locust_point DIR SECONDS USERS SPAWN_RATE [locust options...]: one bounded headless run writing
# DIR/report.html, DIR/stats_*.csv, DIR/stats_summary.json and DIR/locust.log. SCENARIO and the
# scenario settings come from the environment. Returns Locust's exit status (1: some failures).
locust_point() {
  local dir=$1 seconds=$2 users=$3 spawn_rate=$4 inside status=0
  shift 4
  mkdir -p "$dir"
  inside=$(report_path "$dir")
  run_locust $((seconds + 120)) locust --headless \
    --users "$users" --spawn-rate "$spawn_rate" --run-time "${seconds}s" --stop-timeout 5 \
    --csv "$inside/stats" --csv-full-history --html "$inside/report.html" --only-summary "$@" \
    >"$dir/locust.log" 2>&1 || status=$?
  if [[ ! -s "$dir/stats_summary.json" ]]; then
    tail -n 30 "$dir/locust.log" >&2
    die "Locust did not finish (exit $status); its log: $dir/locust.log"
  fi
  return "$status"
}

# select_loadtest_spec: what Locust runs. LOADTEST_SPEC (environment, else .env; a path relative
# to the kit or absolute): the generic scenarios from that description. No LOADTEST_SPEC while the
# stack runs a project other than the demo (PROJECT_DIR): loadtest/project-default.toml (GET /
# only), with a note on describing more. Else the demo's scenarios. Exports LOADTEST_SPEC_FILE
# (absolute; compose/loadtest.yaml mounts it) and LOADTEST_SPEC_DISPLAY, or unsets them.
select_loadtest_spec() {
  local spec project
  unset LOADTEST_SPEC_FILE LOADTEST_SPEC_DISPLAY
  spec=$(setting LOADTEST_SPEC)
  project=$(setting PROJECT_DIR)
  if [[ -n "$spec" ]]; then
    LOADTEST_SPEC_DISPLAY=$spec
    [[ "$spec" == /* ]] || spec="$KIT_ROOT/$spec"
    [[ -f "$spec" && -r "$spec" ]] \
      || die "LOADTEST_SPEC=$LOADTEST_SPEC_DISPLAY: no readable file at $spec (a TOML description," \
        "relative to $KIT_ROOT or absolute; format: loadtest/README.md)"
  elif [[ -n "$project" && "$(cd "$KIT_ROOT" && realpath -m "$project")" != "$KIT_ROOT/app/demo" ]]; then
    spec="$KIT_ROOT/loadtest/project-default.toml"
    LOADTEST_SPEC_DISPLAY=${spec#"$KIT_ROOT/"}
    log "PROJECT_DIR=$project and no LOADTEST_SPEC: fetching / only ($LOADTEST_SPEC_DISPLAY)." \
      "Describe your pages and WebSocket in a TOML file (loadtest/README.md, \"Your project's load" \
      "test\"; tests/projects/mysite-loadtest.toml is one) and run LOADTEST_SPEC=that-file make loadtest"
  else
    return 0
  fi
  export LOADTEST_SPEC_FILE="$spec" LOADTEST_SPEC_DISPLAY
}

# check_loadtest_spec: with a description selected, validate it and SCENARIO in the loadtest
# image before Locust starts, and print what it runs; dies with the file, key and value at fault.
check_loadtest_spec() {
  [[ -n "${LOADTEST_SPEC_FILE:-}" ]] || return 0
  local out
  out=$(run_locust 60 python spec.py check /loadtest/spec/spec.toml \
    --display "$LOADTEST_SPEC_DISPLAY" --scenario "${SCENARIO:-mixed}" 2>&1) \
    || die "$(sed -n 's/^error: //p' <<<"$out" | grep . || echo "$out")"
  log "generic scenarios from $LOADTEST_SPEC_DISPLAY:"
  sed 's/^/    /' <<<"$out" >&2
}

# wrk_figures: read `wrk --latency` output on stdin, print "rps p99_ms errors" (non-2xx/3xx
# responses plus socket errors).
wrk_figures() {
  awk '
    /^ +99%/ { v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
               p99 = (unit == "us") ? v / 1000 : (unit == "s") ? v * 1000 : (unit == "m") ? v * 60000 : v }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { errors += $NF }
    /Socket errors:/ { gsub(/,/, ""); errors += $4 + $6 + $8 + $10 }
    END { printf "%.1f %.2f %d\n", rps, p99, errors }
  '
}

# loadtest_preflight: what Locust runs (select_loadtest_spec), the stack (`make up` when its
# nginx is not healthy), the loadtest image, then the selected description checked in it.
loadtest_preflight() {
  select_loadtest_spec
  if ! stack_healthy; then
    log "the stack is not running: starting it (make up)"
    "$KIT_ROOT/scripts/up"
  fi
  build_loadtest_image
  check_loadtest_spec
}

# ---- the benchmarks' own stacks (bench-broadcast, bench-sockets, bench-relay, scaling)

# bench_on_demo ARGS...: --help (-h) prints the script's header and exits; else the benchmark
# measures the kit's demo from here on (use_demo_project: a copy of .env, .env.bench).
bench_on_demo() {
  [[ "${1:-}" == --help || "${1:-}" == -h ]] && { usage_from_header; exit 0; }
  use_demo_project
}

# whole_numbers VALUE...: each a whole number >= 1, else the benchmark stops.
whole_numbers() {
  local value
  for value in "$@"; do
    [[ "$value" =~ ^[0-9]+$ && "$value" -ge 1 ]] || die "benchmark settings are whole numbers >= 1, not '$value'"
  done
}

# peer_settings STEPS_VAR DEFAULT MAX: the settings of a benchmark beside the Node reference
# peer, checked: STEPS (whole numbers up to MAX, from $STEPS_VAR, else DEFAULT), TARGETS
# (BENCH_TARGETS: reference, direct, relay), SERVER_CPUS and CLIENT_CPUS (BENCH_SERVER_CPUS,
# 0, and BENCH_CLIENT_CPUS, 1: apart, on a machine of 2 cores at least).
peer_settings() {
  local n target
  read -ra STEPS <<<"${!1:-$2}"
  read -ra TARGETS <<<"${BENCH_TARGETS:-reference direct relay}"
  SERVER_CPUS=${BENCH_SERVER_CPUS:-0} CLIENT_CPUS=${BENCH_CLIENT_CPUS:-1}
  whole_numbers "${STEPS[@]}"
  for n in "${STEPS[@]}"; do
    ((n <= $3)) || die "$1: at most $3, not $n"
  done
  for target in "${TARGETS[@]}"; do
    [[ "$target" =~ ^(reference|direct|relay)$ ]] || die "BENCH_TARGETS: reference, direct or relay, not '$target'"
  done
  [[ "$SERVER_CPUS" != "$CLIENT_CPUS" ]] || die "BENCH_SERVER_CPUS and BENCH_CLIENT_CPUS must differ"
  (($(nproc) >= 2)) || die "the benchmark pins the server and the client to different cores: it needs 2"
}

# build_stack_images: the app image and the relay image (both modes), as `make build` builds
# them but leaving .env's mode, routing and shards alone (each benchmark sets its own).
build_stack_images() {
  env -u REDIS_SHARDS -u REDIS_URLS -u ROUTING -u ASGI_DOMAIN -u WSGI_DOMAIN -u COMPOSE_PROFILES \
    -u ASGI_MODE -u COMPOSE_FILE "$KIT_ROOT/scripts/build"
  log "building the relay image"
  compose -f compose.yaml -f compose/relay.yaml build --quiet daphne
}

# bench_project NAME PORT LABEL: from here on the benchmark's own compose project,
# channels-kit-NAME, published on 127.0.0.1:PORT, ROUTING=asgi with the channel layer on two
# Redis shards whatever .env says. At exit: the project removed with its volumes (unless
# KEEP_STACK=1), a reference peer still running stopped, "LABEL finished in N s" logged.
bench_project() {
  export COMPOSE_PROJECT_NAME=channels-kit-$1 HTTP_PORT=$2
  export CHANNEL_BACKEND=redis REDIS_URLS=redis://redis-1:6379/0,redis://redis-2:6379/0 COMPOSE_PROFILES=redis
  export ROUTING=asgi
  # Every client of a benchmark comes from one address: nginx's per-client limits off.
  export NGINX_LIMIT_CONN=0 NGINX_LIMIT_REQ_RATE=0
  BENCH_LABEL=$3 BENCH_STARTED=$(date +%s) REFERENCE_PID=""
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local status=$?
  [[ -z "$REFERENCE_PID" ]] || kill "$REFERENCE_PID" 2>/dev/null || true
  if [[ "${KEEP_STACK:-0}" != 1 ]] && docker info >/dev/null 2>&1; then
    COMPOSE_FILE=$(compose_files_for relay) compose --profile '*' down --volumes --remove-orphans \
      --timeout 10 >/dev/null 2>&1 || true
  fi
  log "$BENCH_LABEL finished in $(($(date +%s) - BENCH_STARTED)) s (exit $status)"
}

# bench_report NAME: the run's folder, OUT=loadtest/reports/<UTC timestamp>-NAME (created),
# and RESULTS, its results.jsonl.
bench_report() {
  OUT="$REPORTS_ROOT/$(date -u +%Y%m%dT%H%M%SZ)-$1"
  RESULTS="$OUT/results.jsonl"
  mkdir -p "$OUT"
}

# use_mode MODE: ASGI_MODE=MODE from here on, with its compose files, for the stack and Locust.
use_mode() {
  export ASGI_MODE=$1
  COMPOSE_FILE=$(compose_files_for "$1")
  export COMPOSE_FILE
  mapfile -t LOADTEST_COMPOSE < <(stack_files)
  LOADTEST_COMPOSE+=(-f compose/loadtest.yaml)
}

# bench_up [compose up options...]: the benchmark stack up and healthy (at most 300 s), then
# nginx routing requests to every Daphne replica (wait_upstreams, at most 60 s); NGINX_IP is
# nginx's container address.
bench_up() {
  compose up --detach --wait --wait-timeout 300 --remove-orphans "$@" >/dev/null 2>&1 \
    || { compose ps --all >&2; die "the benchmark stack ($COMPOSE_PROJECT_NAME) did not become healthy in $ASGI_MODE mode"; }
  wait_upstreams daphne 60 || die "nginx of $COMPOSE_PROJECT_NAME does not route to every Daphne replica"
  NGINX_IP=$(container_ips "$(compose ps --quiet nginx)")
  NGINX_IP=${NGINX_IP%% *}
}

# pin_stack CPUS: every running container of the stack on these cores, apart from the client.
pin_stack() {
  # shellcheck disable=SC2046  # one argument per container id
  docker update --cpuset-cpus "$1" $(compose ps --quiet) >/dev/null
}

# reference_start PORT CPUS LOG: the Node reference peer (loadtest/node/reference-server.js) on
# port PORT, pinned to CPUS, its output in LOG; ready ("server on") within 5 s, or the benchmark
# stops. REFERENCE_PID is its process; reference_stop ends it.
reference_start() {
  taskset -c "$2" node "$KIT_ROOT/loadtest/node/reference-server.js" "$1" >>"$3" 2>&1 &
  REFERENCE_PID=$!
  for _ in $(seq 50); do
    grep -q "server on" "$3" && return 0
    sleep 0.1
  done
  die "the reference server did not say \"server on\" within 5 s on port $1 (its log: $3)"
}

reference_stop() {
  kill "$REFERENCE_PID" 2>/dev/null || true
  wait "$REFERENCE_PID" 2>/dev/null || true
  REFERENCE_PID=""
}
