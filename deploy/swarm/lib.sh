# Shell helpers of the Swarm scripts (up, down, deploy in this folder), sourced after lib.sh.
# shellcheck shell=bash

STACK=${SWARM_STACK:-channels-kit}

require_manager() {
  have docker || die "docker is not installed (scripts/install-docker)"
  [[ "$(docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" == true ]] ||
    die "the docker CLI does not talk to a swarm manager: run \`docker swarm init\` on one host, or set
       DOCKER_HOST to a manager (on one machine: deploy/swarm/nodes up; docs/several-machines.md)"
}

# require_label LABEL WHAT: some node carries LABEL=true, else die saying how to add it.
require_label() {
  local node
  for node in $(docker node ls --format '{{.ID}}'); do
    [[ "$(docker node inspect -f "{{index .Spec.Labels \"$1\"}}" "$node")" == true ]] && return 0
  done
  die "no node is labelled $1=true ($2): docker node update --label-add $1=true NODE"
}

# render_stack FILE [SERVICE...]: the stack file of the configured mode (all services, or these).
render_stack() {
  local file=$1 mode
  shift
  mode=$(setting ASGI_MODE direct)
  local -a files=(-f compose.yaml)
  [[ "$mode" != relay ]] || files+=(-f compose/relay.yaml)
  files+=(-f deploy/swarm/compose.yaml)
  (cd "$KIT_ROOT" && env -u COMPOSE_FILE -u COMPOSE_ENV_FILES COMPOSE_PROFILES="$(setting COMPOSE_PROFILES redis)" \
    docker compose --env-file "$ENV_FILE" "${files[@]}" config --format json) |
    python3 "$KIT_ROOT/deploy/swarm/stack.py" "$STACK" "$@" >"$file"
}

# services_converged: true when every service of the stack runs its desired tasks (a job: all
# of them completed; a global service: at least one, as it reads 0/0 until Swarm places its
# tasks). Prints the ones that do not.
services_converged() {
  docker service ls --filter "label=com.docker.stack.namespace=$STACK" --format '{{.Name}} {{.Mode}} {{.Replicas}}' |
    awk '{
      if (match($0, /[0-9]+\/[0-9]+ completed/)) {  # a job: "0/1 (1/1 completed)"
        split(substr($0, RSTART, RLENGTH - 10), r, "/")
      } else split($3, r, "/")  # "3/3", or "3/3 (max 1 per node)"
      if (r[1] != r[2] || ($2 == "global" && r[2] == 0)) { print $1 " " $3; bad = 1 }
    } END { exit bad }'
}

# wait_services TIMEOUT: wait until services_converged; false (and what is missing) on timeout.
wait_services() {
  local deadline=$((SECONDS + $1)) missing
  while ! missing=$(services_converged); do
    if ((SECONDS >= deadline)); then
      warn "not running after $1 s: $missing"
      return 1
    fi
    sleep 2
  done
}
