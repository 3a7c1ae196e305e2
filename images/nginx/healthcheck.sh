#!/bin/bash
# nginx answers its own /nginx-health (no upstream involved), with bash alone.
set -euo pipefail
exec 3<>/dev/tcp/127.0.0.1/8080
printf 'GET /nginx-health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r -t 3 status_line <&3
[[ "$status_line" == *" 200 "* ]]
