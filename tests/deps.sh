#!/usr/bin/env bash
# The Debian packages the test suite uses (real peers and tools), installed when missing.
# Run by tests/run.sh, so the README's test command works on a fresh Debian machine; as root
# it installs with apt-get, otherwise through sudo when there is one, else it says what to
# install and stops.
set -euo pipefail

need=()
want() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || need+=("$2"); }
want ip iproute2
want pkill procps
want penctl pen            # the real penctl, for the control tests
want tcpdump tcpdump       # captures for the trace tests
want python3 python3       # namespace test clients and odd servers
want keepalived keepalived # the VRRP interoperability peer
want nft nftables          # the firewall tests
want dnsmasq dnsmasq-base  # the DNS server of the servers-by-name tests
want runsv runit           # supervise/ under the real runsv
want svscan daemontools    # ... and svscan/supervise
want systemd-analyze systemd   # verifying the unit (not booted)
want slowhttptest slowhttptest # slowloris against the HTTP mode
((${#need[@]})) || exit 0

echo "== installing the packages the tests use: ${need[*]}"
sudo=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "tests/deps.sh: not root and no sudo: install ${need[*]} (apt-get install), or run as root" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
