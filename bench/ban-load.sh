#!/usr/bin/env bash
# ban-load.sh - the master's VRRP advert gaps while operators ban addresses and reload.
#
# Builds the lab's pair (conf/lab) with VRRPv3 at 20 ms in network namespaces, then on the
# master runs N `fwlb ctl ban IP 1h` from four control clients at once and a SIGHUP whose
# configuration adds an `allow` entry (the ruleset is reinstalled with the bans), while tcpdump
# on the backup times the master's adverts. Prints how long the bans took, how many are listed,
# the largest gap between adverts and the backup's transition counts before and after; then
# removes the lab. tests/control_plane_netns.rs asserts the same on every CI run.
#
# Usage (root): bench/ban-load.sh [FWLB_BINARY]   (default: target/release/fwlb)
# Env: N=200 (bans). Needs iproute2, nftables, tcpdump, bc, python3. Traffic stays in the lab's
# namespaces; every loop is bounded by N.
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$(realpath "${1:-$REPO/target/release/fwlb}")
N=${N:-200}
d=$(mktemp -d /tmp/fwlb-ban-load.XXXXXX)
trap '"$BIN" lab --clean >/dev/null 2>&1; rm -rf "$d"' EXIT
cp "$REPO"/conf/lab/*.toml "$d"/
sed -i 's/"100ms"/"20ms"/' "$d"/*.toml
"$BIN" lab "$d" --keep --drill none >/dev/null 2>&1 || { echo "fwlb lab failed"; exit 1; }
parent=$(awk '$1=="pid" && $4=="fwlb-a"{print $2}' /run/fwlb-lab/state)
transitions() {
  ip netns exec fwlab-fwlb-b "$BIN" ctl --json show vrrp |
    python3 -c 'import json,sys; print([i["transitions"] for i in json.load(sys.stdin)["vrrp"]])'
}
sleep 1
before=$(transitions)
ip netns exec fwlab-fwlb-b timeout 60 tcpdump -i eth0 -n -tt -l 'ip proto 112 and src 192.0.2.2' \
  > "$d/adverts.txt" 2>/dev/null &
capture=$!
sleep 1
t0=$(date +%s.%N)
clients=()
for k in 0 1 2 3; do
  ( for i in $(seq 1 $((N / 4))); do
      ip netns exec fwlab-fwlb-a "$BIN" ctl ban "198.51.$((100 + k)).$i" 1h >/dev/null || echo "ban failed"
    done ) &
  clients+=($!)
done
sleep 0.1
sed -i 's/^\[firewall\]$/[firewall]\nallow = ["tcp\/2222"]/' "$d/fwlb-a.toml"
kill -HUP "$parent"
wait "${clients[@]}"
t1=$(date +%s.%N)
sleep 1
kill "$capture"; wait "$capture" 2>/dev/null
echo "bans took $(echo "$t1 - $t0" | bc) s"
echo "bans listed: $(ip netns exec fwlab-fwlb-a "$BIN" ctl --json show bans | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["bans"]))')"
echo "ruleset reinstalled: $(grep -c 'firewall replaced' /run/fwlb-lab/logs/fwlb-a.log || true)"
awk '{print $1}' "$d/adverts.txt" |
  awk 'NR>1{g=($1-p)*1000; if(g>m)m=g; n++} {p=$1} END{printf "adverts %d, largest gap %.1f ms (interval 20 ms)\n", n+1, m}'
echo "backup transitions before: $before"
echo "backup transitions after:  $(transitions)"
