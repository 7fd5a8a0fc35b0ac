#!/usr/bin/env bash
# run.sh - benchmark fwlb side by side with haproxy 2.6, pen 0.34 and a direct connection.
#
# Builds fwlb (release), then runs ./bench.sh (the harness next to this file; see its header for
# the CANDIDATE contract and every knob) with fwlb as the candidate, against the same two nginx
# backends, all targets interleaved (order rotated each rep), medians of REPS runs.
# The summary table is copied to bench/LATEST.md (meant to be committed) and printed.
#
# Usage: bench/run.sh            (from any directory; ~8 min with the defaults)
# Env (all passed through to bench.sh):
#   TARGETS="direct pen-nodelay haproxy haproxy-splice candidate"   (default; add "pen" for plain
#            pen - slow on the 1 MiB file because of Nagle - or "haproxy-mt")
#   REPS=3 (default here)  DUR=6  CONNS=50  LARGE_CONNS=10  TESTS="ka close large"  IDLE_CONNS=400
#   WORKDIR=/tmp/fwlb-bench (default here: config, fwlb binary copy, logs, results-<stamp>/)
#   BASE_PORT=27100 (fwlb listens on BASE_PORT+20)  NO_INSTALL=1  MAX_STEAL_PCT ...
#   NO_BUILD=1   skip `cargo build --release` (use the existing target/release/fwlb)
#   LATEST=<file> where to write the summary (default bench/LATEST.md; empty = don't write)
# Needs: cargo, and the apt packages pen haproxy nginx wrk (bench.sh installs missing ones
# unless NO_INSTALL=1). Traffic is loopback only; every load is bounded by wrk -d.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)

export REPS=${REPS:-3}
export TARGETS=${TARGETS:-"direct pen-nodelay haproxy haproxy-splice candidate"}
export WORKDIR=${WORKDIR:-/tmp/fwlb-bench}
export CANDIDATE_NAME=${CANDIDATE_NAME:-fwlb}
LATEST=${LATEST-$BENCH_DIR/LATEST.md}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- build ------------------------------------------------------------------------------------
if [[ -z "${NO_BUILD:-}" ]]; then
  log "building fwlb (cargo build --release in $REPO)"
  (cd "$REPO" && cargo build --release --bin fwlb) || die "cargo build --release failed"
fi
[[ -x "$REPO/target/release/fwlb" ]] || die "$REPO/target/release/fwlb missing (build failed or NO_BUILD without a build)"

# Bench a private copy: a rebuild in the repo during the run cannot swap the binary under us,
# and the copy records exactly what was measured.
mkdir -p "$WORKDIR"
BIN=$WORKDIR/fwlb
cp -f "$REPO/target/release/fwlb" "$BIN.tmp" && mv -f "$BIN.tmp" "$BIN"
CONF=$WORKDIR/fwlb.toml
REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $REV != unknown ]] && [[ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
  REV="$REV+dirty"
fi

# ---- candidate --------------------------------------------------------------------------------
# bench.sh runs `bash -c "$CANDIDATE"` with LISTEN/BACKEND1/BACKEND2 in the environment: write the
# config from them at launch, then exec fwlb so the harness's PID is fwlb itself (CPU/RSS of the
# process tree, SIGTERM on stop).
read -r -d '' TEMPLATE <<'EOF' || true
printf '[daemon]\nshutdown_timeout = "1s"\n[[balancer]]\nname = "bench"\nlisten = "%s"\nservers = ["%s", "%s"]\nalgorithm = "roundrobin"\nmax_connections = 10000\nconnection_log = false\n' "$LISTEN" "$BACKEND1" "$BACKEND2" > @CONF@ && exec @BIN@ run -c @CONF@
EOF
conf_q=$(printf %q "$CONF"); bin_q=$(printf %q "$BIN")
CANDIDATE=${TEMPLATE//@CONF@/"$conf_q"}
CANDIDATE=${CANDIDATE//@BIN@/"$bin_q"}
export CANDIDATE

# max_connections = 10000 may want ~2 descriptors per connection: raise the soft limit (best effort;
# applies to every target alike).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- run --------------------------------------------------------------------------------------
marker=$WORKDIR/.run-start.$$
: > "$marker"
trap 'rm -f "$marker"' EXIT
log "fwlb $REV ($("$BIN" --version 2>/dev/null || echo '?')); TARGETS='$TARGETS' REPS=$REPS WORKDIR=$WORKDIR"
bash "$BENCH_DIR/bench.sh" || die "bench.sh failed; candidate log: $WORKDIR/candidate.log"

# the results dir bench.sh just created: newest results-* with a summary.md newer than our marker
RES=""
for d in $(ls -1td "$WORKDIR"/results-* 2>/dev/null); do
  [[ -f $d/summary.md && $d/summary.md -nt $marker ]] && { RES=$d; break; }
done
[[ -n $RES ]] || die "no summary.md from this run under $WORKDIR/results-*"

if [[ -n $LATEST ]]; then
  {
    echo "# fwlb benchmark: latest run"
    echo
    echo "Produced by \`bench/run.sh\` (harness \`bench/bench.sh\`); fwlb $REV. Environment and parameters:"
    echo
    echo '```'
    cat "$RES/env.txt"
    echo '```'
    echo
    cat "$RES/summary.md"
  } > "$LATEST.tmp" && mv -f "$LATEST.tmp" "$LATEST"
  log "summary -> $LATEST (raw results: $RES)"
  cat "$LATEST"
else
  cat "$RES/summary.md"
fi
