#!/usr/bin/env bash
# pair.sh - paired A/B of balancers that are already running: CPU per request, cell by cell.
#
# The medians of bench/run.sh mix cells measured minutes apart; on a shared host the hypervisor's
# steal moves between them. This runs the given balancers back to back, REPS rounds, and prints
# every cell with the machine's steal during it, so cells of equal (low) steal can be compared.
#
# Usage: bench/pair.sh [-- WRK_ARGS...] PORT:PID:LABEL ...
#   PID is the process doing the relaying (fwlb: the child, the one that is not `fwlb run`'s
#   first process; pen: its only process). Requests go to http://127.0.0.1:PORT/small.html
#   (bench/bench.sh's document root) and nowhere else.
# Env: REPS=4 DUR=6 CONNS=50.   Example, new connections per request:
#   bench/pair.sh -- -H 'Connection: close' -- 27111:$(pgrep -x pen):pen 27120:$CHILD:fwlb
set -euo pipefail
REPS=${REPS:-4}; DUR=${DUR:-6}; CONNS=${CONNS:-50}
wrk_args=()
if [[ ${1:-} == -- ]]; then
  shift
  while [[ $# -gt 0 && $1 != -- ]]; do wrk_args+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
fi
[[ $# -ge 1 ]] || { echo "usage: $0 [-- WRK_ARGS... --] PORT:PID:LABEL ..." >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk missing (apt-get install wrk)" >&2; exit 1; }

HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
machine() { head -1 /proc/stat; }

for ((r = 1; r <= REPS; r++)); do
  for t in "$@"; do
    IFS=: read -r port pid label <<<"$t"
    [[ -r /proc/$pid/stat ]] || { echo "$label: no process $pid" >&2; exit 1; }
    a=($(machine)); t0=$(ticks "$pid")
    out=$(wrk -t1 -c"$CONNS" -d"${DUR}s" "${wrk_args[@]}" "http://127.0.0.1:$port/small.html")
    t1=$(ticks "$pid"); b=($(machine))
    total=0; for k in 1 2 3 4 5 6 7 8; do total=$((total + b[k] - a[k])); done
    req=$(awk '/requests in/ {print $1}' <<<"$out")
    printf '%s\n' "rep$r $label req=$req ticks=$((t1 - t0)) steal_ticks=$((b[8] - a[8])) total_ticks=$total" |
      awk -v hz="$HZ" '{split($3,q,"="); split($4,c,"="); split($5,s,"=");
            printf "%-5s %-12s req=%8d  CPU-s/100k req=%.3f  steal=%d%%\n", $1, $2, q[2],
                   (q[2] > 0 ? c[2] / hz / q[2] * 1e5 : 0), 100 * s[2] / (substr($6, 13) + 0.001)}'
  done
done
