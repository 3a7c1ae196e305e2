#!/bin/bash
# Entrypoint of the nginx stand-in, compatible with the official image's: when
# the command is nginx, render /etc/nginx/templates/*.template with envsubst
# into /etc/nginx/conf.d (only variables that are set are replaced), run the
# hooks in /docker-entrypoint.d (*.sh executed, *.envsh sourced), then exec.
# Honours NGINX_ENVSUBST_TEMPLATE_DIR/_SUFFIX/_OUTPUT_DIR/_FILTER and
# NGINX_ENTRYPOINT_QUIET_LOGS.
set -Eeuo pipefail

entrypoint_log() { [[ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]] || echo "$0: $*"; }

render_templates() {
  local template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
  local suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
  local output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
  local filter="${NGINX_ENVSUBST_FILTER:-}"
  local defined_envs template relative output
  [[ -d "$template_dir" ]] || return 0
  if [[ ! -w "$output_dir" ]]; then
    entrypoint_log "ERROR: $template_dir exists, but $output_dir is not writable"
    return 0
  fi
  # shellcheck disable=SC2016,SC2046  # literal ${NAME} list for envsubst, one word per name
  defined_envs=$(printf '${%s} ' $(compgen -e | grep -E -- "${filter:-.}" || true))
  while IFS= read -r template; do
    relative="${template#"$template_dir/"}"
    output="$output_dir/${relative%"$suffix"}"
    mkdir -p "$(dirname "$output")"
    entrypoint_log "Running envsubst on $template to $output"
    envsubst "$defined_envs" <"$template" >"$output"
  done < <(find "$template_dir" -follow -type f -name "*$suffix" -print | sort)
}

if [[ "${1:-}" == nginx || "${1:-}" == nginx-debug ]]; then
  render_templates
  while IFS= read -r hook; do
    case "$hook" in
      *.envsh)
        if [[ -x "$hook" ]]; then
          entrypoint_log "Sourcing $hook"
          # shellcheck disable=SC1090  # the user's hook
          . "$hook"
        else entrypoint_log "Ignoring $hook, not executable"; fi ;;
      *.sh)
        if [[ -x "$hook" ]]; then entrypoint_log "Launching $hook"; "$hook"
        else entrypoint_log "Ignoring $hook, not executable"; fi ;;
      *) entrypoint_log "Ignoring $hook" ;;
    esac
  done < <(find /docker-entrypoint.d/ -follow -type f -print 2>/dev/null | sort -V)
fi

exec "$@"
