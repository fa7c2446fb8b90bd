#!/bin/sh
# http, wrk: the ceiling (what nginx itself can serve here): wrk -t1 -c64 -d3s URL.
# Prints a RESULT line; fails when wrk reports non-2xx answers or socket errors.
#   bench/wrk_http.sh http://127.0.0.1:PORT/1k
set -eu
out=$(wrk -t1 -c64 -d3s "$1")
if printf '%s\n' "$out" | grep -qE 'Non-2xx|Socket errors'; then printf '%s\n' "$out"; exit 1; fi
printf '%s\n' "$out" | awk '/^Requests\/sec:/ { rps = $2 }
  / requests in / { n = $1 }
  END { if (rps == "") exit 1; printf "RESULT name=http impl=wrk req_per_s=%s n=%s\n", rps, n }'
