#!/bin/sh
# Entrypoint of the redis stand-in, with the official image's behaviour.
set -eu

# `docker run IMAGE --port 7000` or `... /path/redis.conf`: run redis-server.
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

# Started as root (e.g. `user: root` or a bind mount owned by root): make /data
# redis's and drop privileges.
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# Like the official image: without a config file that sets protected-mode,
# allow connections from other containers (no password configured by default).
case "${2:-}" in -v | --version | -h | --help | --test-memory) do_protected_mode= ;; *) do_protected_mode=1 ;; esac
if [ "$1" = redis-server ] && [ -n "$do_protected_mode" ]; then
  config_file=
  if [ -f "${2:-}" ]; then
    config_file=$2
    if grep -q '^protected-mode' "$config_file"; then do_protected_mode=; fi
  fi
  if [ -n "$do_protected_mode" ]; then
    shift # redis-server
    if [ -n "$config_file" ]; then shift; fi
    set -- --protected-mode no "$@"
    if [ -n "$config_file" ]; then set -- "$config_file" "$@"; fi
    set -- redis-server "$@"
  fi
fi

um=$(umask)
if [ "$um" = 0022 ]; then umask 0077; fi

exec "$@"
