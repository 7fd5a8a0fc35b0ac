#!/usr/bin/env bash
# failover.sh - VRRP failover of fwlb and keepalived, side by side, in a network-namespace lab.
#
# Usage (as root):
#   bench/failover.sh              the failover table: fwlb-vs-fwlb and keepalived-vs-keepalived at
#                                  v2 1 s, v3 100 ms, v3 20 ms; crash (kill -9 + cable pull) and
#                                  planned (SIGTERM); REPS runs per cell -> printed + bench/FAILOVER.md
#   SOAK=600 bench/failover.sh soak   fwlb pair at v3 20 ms for SOAK s under client load through
#                                  fwlb's balancer; fails if a VRRP transition happens
#   bench/failover.sh report       print the table of the last bench again (from $WORKDIR/results.json)
#   bench/failover.sh cleanup      remove namespaces (fob<pid>n*) and processes of dead earlier runs
# Env: REPS=5 IMPLS SETTINGS FAULTS SOAK=600 LOAD_RATE=200 LOAD_CONC=50 WORKDIR=/tmp/fwlb-failover
#      OUT=bench/FAILOVER.md ("" = don't write) NO_BUILD=1 (use target/release/fwlb as is)
#      NO_INSTALL=1 (don't apt-get keepalived). See bench/failover.py for the method.
# Runtime with the defaults: bench ~8 min; soak SOAK s + ~15 s.
# Traffic stays inside the namespaces it creates; every process it starts runs in one of them and
# is killed, and every namespace deleted, at the end, on error and on Ctrl-C/SIGTERM.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
MODE=${1:-bench}
export WORKDIR=${WORKDIR:-/tmp/fwlb-failover}
export FWLB=$WORKDIR/fwlb

case $MODE in bench|soak|report|cleanup) ;; *) echo "usage: $0 [bench|soak|report|cleanup]" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "failover.sh: needs root (network namespaces, raw sockets)" >&2; exit 1; }
command -v ip >/dev/null || { echo "failover.sh: needs iproute2 (ip)" >&2; exit 1; }

if [ "$MODE" = cleanup ] || [ "$MODE" = report ]; then
    exec python3 "$BENCH_DIR/failover.py" "$MODE"
fi

if [ "$MODE" = bench ] && ! command -v keepalived >/dev/null; then
    if [ "${NO_INSTALL:-}" = 1 ]; then
        echo "failover.sh: keepalived missing (apt-get install keepalived)" >&2; exit 1
    fi
    echo "installing keepalived ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y keepalived >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y keepalived >/dev/null; }
    # The package's service must not run on the host: only the lab's instances are wanted.
    if command -v systemctl >/dev/null && systemctl is-active --quiet keepalived 2>/dev/null; then
        systemctl stop keepalived || true
    fi
fi

if [ "${NO_BUILD:-}" != 1 ]; then
    (cd "$REPO" && cargo build --release)
fi
mkdir -p "$WORKDIR"
# A copy: a rebuild while the bench runs must not change the binary under test.
cp "$REPO/target/release/fwlb" "$FWLB.tmp" && mv "$FWLB.tmp" "$FWLB"

export CMDLINE=${CMDLINE:-"$( [ -n "${REPS:-}" ] && printf 'REPS=%s ' "$REPS")$( [ "$MODE" = soak ] && printf 'SOAK=%s ' "${SOAK:-600}")bench/failover.sh $MODE"}

PY=
cleanup() {
    trap - INT TERM HUP EXIT
    if [ -n "$PY" ] && kill -0 "$PY" 2>/dev/null; then
        kill -TERM "$PY" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PY" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PY" 2>/dev/null || true
    fi
    python3 "$BENCH_DIR/failover.py" cleanup || true
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM HUP
trap cleanup EXIT

python3 "$BENCH_DIR/failover.py" "$MODE" &
PY=$!
set +e
wait "$PY"
rc=$?
set -e
PY=
exit $rc
