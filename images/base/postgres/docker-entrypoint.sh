#!/usr/bin/env bash
# Entrypoint of the postgres stand-in, with the official image's contract.
# When the command is `postgres` and PGDATA holds no cluster yet:
#   - POSTGRES_PASSWORD is required (unless POSTGRES_HOST_AUTH_METHOD=trust);
#   - initdb with superuser POSTGRES_USER (default postgres) and that password,
#     trust on the local socket, POSTGRES_HOST_AUTH_METHOD (default
#     scram-sha-256) for every TCP connection, plus POSTGRES_INITDB_ARGS;
#   - a temporary socket-only server creates POSTGRES_DB (default: the user)
#     and runs /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz, then stops.
# Every POSTGRES_* setting may come from a file instead (VAR_FILE, for secrets).
# Started as root, it fixes ownership of PGDATA and drops to postgres.
# Then: exec "$@" (CMD ["postgres"]; a first argument `-c ...` means postgres).
set -Eeuo pipefail

die() { printf '%s\n' "$@" >&2; exit 1; }

# file_env VAR [DEFAULT]: VAR, or the contents of the file named by VAR_FILE.
file_env() {
  local var=$1 file_var="${1}_FILE" default=${2:-} value
  if [[ -n "${!var:-}" && -n "${!file_var:-}" ]]; then
    die "error: both $var and $file_var are set (but are exclusive)"
  fi
  value=$default
  if [[ -n "${!var:-}" ]]; then
    value=${!var}
  elif [[ -n "${!file_var:-}" ]]; then
    value=$(<"${!file_var}")
  fi
  export "$var=$value"
  unset "$file_var"
}

# psql on the local socket as the superuser, stopping at the first error.
process_sql() {
  PGHOST=/var/run/postgresql PGPORT=5432 psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password \
    --username "$POSTGRES_USER" --dbname "${PGDB_OVERRIDE:-$POSTGRES_DB}" "$@"
}

init_cluster() {
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"

  if [[ -z "$POSTGRES_PASSWORD" && "$POSTGRES_HOST_AUTH_METHOD" != trust ]]; then
    die 'Error: Database is uninitialized and superuser password is not specified.' \
      '       You must specify POSTGRES_PASSWORD to a non-empty value for the' \
      '       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".' \
      '' \
      '       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all' \
      '       connections without a password. This is *not* recommended.'
  fi

  local -a initdb_args=(--username="$POSTGRES_USER" --auth-local=trust
    --auth-host="$POSTGRES_HOST_AUTH_METHOD")
  set -f
  # shellcheck disable=SC2206  # POSTGRES_INITDB_ARGS is a list of words, as upstream
  initdb_args+=($POSTGRES_INITDB_ARGS)
  set +f
  if [[ -n "$POSTGRES_PASSWORD" ]]; then
    # The password goes through a pipe: never in argv, never on disk.
    initdb "${initdb_args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD")
  else
    initdb "${initdb_args[@]}"
  fi
  printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w -t 60 start

  if [[ "$POSTGRES_DB" != postgres ]] &&
    [[ -z "$(PGDB_OVERRIDE=postgres process_sql --set db="$POSTGRES_DB" --tuples-only \
      <<<"SELECT 1 FROM pg_database WHERE datname = :'db' ;")" ]]; then
    PGDB_OVERRIDE=postgres process_sql --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db" ;'
    echo "created database $POSTGRES_DB"
  fi

  local f
  for f in /docker-entrypoint-initdb.d/*; do
    [[ -e "$f" ]] || continue
    case "$f" in
      *.sh)
        if [[ -x "$f" ]]; then echo "$0: running $f"; "$f"
        else
          echo "$0: sourcing $f"
          # shellcheck disable=SC1090  # the user's init script
          . "$f"
        fi ;;
      *.sql) echo "$0: running $f"; process_sql -f "$f" ;;
      *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | process_sql ;;
      *) echo "$0: ignoring $f" ;;
    esac
  done

  pg_ctl -D "$PGDATA" -m fast -w -t 60 stop
  unset PGPASSWORD
  echo
  echo 'PostgreSQL init process complete; ready for start up.'
  echo
}

if [[ "${1:0:1}" == - ]]; then
  set -- postgres "$@"
fi

if [[ "$1" == postgres ]] && [[ "$(id -u)" == 0 ]]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
  chown postgres:postgres /var/run/postgresql
  chmod 3777 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ "$1" == postgres ]]; then
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA" 2>/dev/null || :
  if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    init_cluster
  else
    echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
  fi
fi

exec "$@"
