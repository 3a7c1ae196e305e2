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
