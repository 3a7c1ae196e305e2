# Shell helpers of the load-test scripts (loadtest, loadtest-ui, scaling, bench), sourced
# after lib.sh. Locust runs in the loadtest image on the compose network of the project
# named by COMPOSE_PROJECT_NAME (else compose.yaml's), aimed at that project's nginx.
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
