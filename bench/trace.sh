#!/usr/bin/env bash
# trace.sh - how fast `fwlb trace` reads a capture, side by side with the other ways to find a
# client's requests behind the balancer:
#   fwlb trace FILE --client IP      conversations with 5-tuples, times, request lines
#   grep -a -c (LC_ALL=C)            matching lines only: no 5-tuples, no times
#   python3 regex over lines         a script like the write-up's: matching lines, no 5-tuples
#   tshark -Y (display filter)       packets with 5-tuples; run on the first SAMPLE_MB only and
#                                    extrapolated (it is ~100x slower), marked as such
# on a generated pcap of HTTP/1.1 traffic behind a balancer: many concurrent keep-alive flows,
# X-Forwarded-For on every request (from a pool of client addresses), a few flows from
# $CLIENT (one of them with the header split across two segments), decoys such as
# "$CLIENT"0. Responses are cut into 1448-byte segments (MSS; no TSO coalescing, so more
# packets per byte than a capture taken on the sending host), ACKed every second segment.
# The file is generated once and cached; the page cache is warmed before timing, so the
# figures are CPU figures. GB/s = 10^9 bytes of capture per second of wall time, best of REPS.
#
# Usage: bench/trace.sh        (from any directory)
# Env:   SIZE_GB=2             capture size (generation: ~20 s per GB, once; the flows still
#                              open at SIZE_GB are finished, which adds ~0.25 GB)
#        CLIENT=10.9.8.7       the address looked for
#        REPS=3                runs per tool (the best one counts)
#        SAMPLE_MB=200         tshark's share of the capture
#        CACHE=/tmp/fwlb-trace-bench   where the capture and its sample live
#        NO_BUILD=1            skip `cargo build --release`
#        FWLB=path             the fwlb binary to run (default target/release/fwlb)
#        NO_INSTALL=1          do not apt-get install tshark when missing (then skip it)
# Needs: python3, grep, cargo (unless NO_BUILD), and ~SIZE_GB of free space under CACHE.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
SIZE_GB=${SIZE_GB:-2}
CLIENT=${CLIENT:-10.9.8.7}
REPS=${REPS:-3}
SAMPLE_MB=${SAMPLE_MB:-200}
CACHE=${CACHE:-/tmp/fwlb-trace-bench}
FWLB=${FWLB:-$REPO/target/release/fwlb}
GEN_VERSION=4

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 is needed (apt-get install python3)"
mkdir -p "$CACHE"
CAP=$CACHE/http-${SIZE_GB}g-$CLIENT-v$GEN_VERSION.pcap
SAMPLE=$CACHE/http-${SIZE_GB}g-$CLIENT-v$GEN_VERSION.first${SAMPLE_MB}m.pcap

# ---- build ------------------------------------------------------------------------------------
if [[ -z "${NO_BUILD:-}" ]]; then
  log "building fwlb (cargo build --release in $REPO)"
  (cd "$REPO" && cargo build --release --bin fwlb) || die "cargo build --release failed"
fi
[[ -x "$FWLB" ]] || die "$FWLB missing (build failed, or NO_BUILD without a build)"
"$FWLB" trace --help >/dev/null 2>&1 \
  || die "$FWLB has no 'trace' subcommand (the CLI is not wired to fwlb::trace::run yet)"

# ---- the capture ------------------------------------------------------------------------------
if [[ ! -s $CAP || ! -s $CAP.truth ]]; then
  log "generating $CAP (${SIZE_GB} GB, once; cached)"
  python3 - "$CAP.tmp" "$SIZE_GB" "$CLIENT" >"$CAP.truth.tmp" <<'PY'
import random, struct, sys

path, size_gb, target = sys.argv[1], float(sys.argv[2]), sys.argv[3]
LIMIT = int(size_gb * 1e9)
rnd = random.Random(42)
MSS = 1448
CONCURRENT = 400
OPTS = b"\x01\x01\x08\x0a" + b"\x00" * 8           # NOP NOP timestamps: 32-byte TCP header
ETH_C2S = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
ETH_S2C = ETH_C2S[6:12] + ETH_C2S[0:6] + b"\x08\x00"
pack_ip = struct.Struct("!BBHHHBBH4s4s").pack
pack_tcp = struct.Struct("!HHIIBBHHH").pack
pack_rec = struct.Struct("<IIII").pack

def ip(s):
    return bytes(int(x) for x in s.split("."))

# Bodies: slices of one text blob (HTML/JSON/CSS-like lines) and one random blob (images, gzip).
words = ("div class span href font-family margin padding json value items data-id "
         "content-type user account order total price name description created updated").split()
text = bytearray()
while len(text) < 4 << 20:
    line = " ".join(rnd.choice(words) for _ in range(rnd.randint(3, 16)))
    text += ("<p class=\"%s\">%s</p>\n" % (rnd.choice(words), line)).encode()
text = bytes(text)
binary = rnd.randbytes(4 << 20)

pool = ["%d.%d.%d.%d" % (rnd.randint(1, 223), rnd.randint(0, 255), rnd.randint(0, 255),
                         rnd.randint(1, 254)) for _ in range(50000)]
pool = [p for p in pool if p != target]
balancers = [ip("10.0.0.%d" % i) for i in range(1, 5)]
backends = [ip("10.0.1.%d" % i) for i in range(1, 9)]
paths = ["/", "/index.html", "/api/v1/orders", "/api/v1/users/%d", "/static/app.%d.js",
         "/static/style.%d.css", "/img/photo-%d.jpg", "/search?q=item%d&page=2"]
agents = ["Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/126.0.0.0 Safari/537.36", "curl/8.5.0", "okhttp/4.12.0"]

def body(n, textual):
    blob = text if textual else binary
    at = rnd.randrange(0, len(blob) - n)
    return blob[at:at + n]

def resp_size():
    r = rnd.random()
    if r < 0.55:
        return rnd.randint(200, 5000)
    if r < 0.93:
        return rnd.randint(5000, 100000)
    return rnd.randint(100000, 1500000)

flow_no = 0

def flow(kind):
    """One TCP connection as (direction, flags, seq offset, payload) steps; seq absolute."""
    global flow_no
    flow_no += 1
    c, s = rnd.choice(balancers), rnd.choice(backends)
    cport, sport = 1024 + flow_no % 60000, rnd.choice((80, 8080))
    ipid = [rnd.randrange(65536), rnd.randrange(65536)]
    cseq, sseq = rnd.getrandbits(32), rnd.getrandbits(32)
    state = {"c": cseq, "s": sseq}

    def frame(c2s, flags, payload):
        if c2s:
            src, dst, sp, dp, seq, ack, k = c, s, cport, sport, state["c"], state["s"], 0
        else:
            src, dst, sp, dp, seq, ack, k = s, c, sport, cport, state["s"], state["c"], 1
        ipid[k] = (ipid[k] + 1) & 0xffff
        t = pack_tcp(sp, dp, seq & 0xffffffff, ack & 0xffffffff, 0x80, flags, 502, 0, 0) + OPTS
        i = pack_ip(0x45, 0, 52 + len(payload), ipid[k], 0x4000, 64, 6, 0, src, dst)
        step = len(payload) + (1 if flags & 0x03 else 0)
        state["c" if c2s else "s"] += step
        return (ETH_C2S if c2s else ETH_S2C) + i + t + payload

    yield frame(True, 0x02, b"")
    yield frame(False, 0x12, b"")
    yield frame(True, 0x10, b"")
    nreq = rnd.choice((1, 1, 2, 3, 4, 6, 10))
    hit_at = rnd.randrange(min(nreq, 3)) if kind else -1
    for r in range(nreq):
        p = rnd.choice(paths)
        if "%d" in p:
            p = p % rnd.randint(1, 99999)
        xff = rnd.choice(pool)
        if rnd.random() < 0.2:
            xff = rnd.choice(pool) + ", " + xff
        if r == hit_at:
            xff = {"match": target, "list": "198.51.100.23, " + target,
                   "split": target, "decoy": target + "0"}[kind]
        method = "POST" if rnd.random() < 0.1 else "GET"
        extra = "Content-Length: 512\r\nContent-Type: application/json\r\n" if method == "POST" else ""
        head = ("%s %s HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: %s\r\n"
                "Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\nAccept-Encoding: gzip, br\r\n"
                "Accept-Language: en-US,en;q=0.5\r\nCookie: session=%032x; theme=dark\r\n%s"
                "X-Forwarded-For: %s\r\nX-Forwarded-Proto: https\r\nX-Real-IP: %s\r\n\r\n"
                % (method, p, rnd.choice(agents), rnd.getrandbits(128), extra, xff,
                   xff.split(", ")[-1])).encode()
        if method == "POST":
            head += body(512, True)
        if r == hit_at and kind == "split":
            cut = head.index(b"X-Forwarded-For:") + 8
            yield frame(True, 0x18, head[:cut])
            yield frame(True, 0x18, head[cut:])
        else:
            yield frame(True, 0x18, head)
        n = resp_size()
        textual = rnd.random() < 0.4
        rh = ("HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
              "Cache-Control: max-age=600\r\n\r\n" % ("text/html" if textual else "image/jpeg", n)).encode()
        data = rh + body(n, textual)
        segs = 0
        for off in range(0, len(data), MSS):
            yield frame(False, 0x18 if off + MSS >= len(data) else 0x10, data[off:off + MSS])
            segs += 1
            if segs % 2 == 0:
                yield frame(True, 0x10, b"")
        yield frame(True, 0x10, b"")
    yield frame(True, 0x11, b"")
    yield frame(False, 0x11, b"")
    yield frame(True, 0x10, b"")

# A few target flows spread over the file (by position; the first within tshark's sample),
# and as many decoys.
marks = [(int(LIMIT * at), kind) for at, kind in zip(
    (0.02, 0.12, 0.24, 0.36, 0.48, 0.60, 0.72, 0.84),
    ("match", "decoy", "list", "split", "decoy", "match", "list", "decoy"))]

out = open(path, "wb", buffering=0)
out.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 262144, 1))
written, started = 24, 0
ts = 1714564800 * 1_000_000
matches = 0          # flows whose requests carry the target as a list element
active = []
chunk = []
chunk_len = 0
while written < LIMIT:
    while len(active) < CONCURRENT:
        started += 1
        kind = None
        if marks and written >= marks[0][0]:
            kind = marks.pop(0)[1]
            matches += kind != "decoy"
        active.append(flow(kind))
    i = rnd.randrange(len(active))
    g = active[i]
    for _ in range(rnd.randint(1, 6)):
        f = next(g, None)
        if f is None:
            active[i] = active[-1]
            active.pop()
            break
        ts += rnd.randint(1, 6)
        rec = pack_rec(ts // 1_000_000, ts % 1_000_000, len(f), len(f))
        chunk.append(rec)
        chunk.append(f)
        chunk_len += 16 + len(f)
    if chunk_len >= 8 << 20:
        out.write(b"".join(chunk))
        written += chunk_len
        chunk, chunk_len = [], 0
# Let the open flows finish so that every counted match is complete.
for g in active:
    for f in g:
        ts += 1
        chunk.append(pack_rec(ts // 1_000_000, ts % 1_000_000, len(f), len(f)))
        chunk.append(f)
out.write(b"".join(chunk))
out.close()
print(matches)
PY
  mv "$CAP.truth.tmp" "$CAP.truth"
  mv "$CAP.tmp" "$CAP"
fi
TRUTH=$(cat "$CAP.truth")
BYTES=$(stat -c %s "$CAP")
log "capture: $CAP, $BYTES bytes, $TRUTH conversations from $CLIENT"

# ---- timing helpers ---------------------------------------------------------------------------
warm() { cat "$1" >/dev/null; }
# best_of CMD...: runs REPS times, prints the best wall time in seconds; stdout of the last run
# goes to $OUT.
OUT=$CACHE/out.txt
best_of() {
  local best="" t0 t1 dt
  for ((r = 1; r <= REPS; r++)); do
    t0=$(date +%s.%N)
    "$@" >"$OUT" 2>"$OUT.err" || { [[ $? -eq 1 ]] || { cat "$OUT.err" >&2; return 1; }; }
    t1=$(date +%s.%N)
    dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    if [[ -z $best ]] || awk -v d="$dt" -v b="$best" 'BEGIN { exit !(d < b) }'; then best=$dt; fi
  done
  echo "$best"
}
gbps() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.2f", n / t / 1e9 }'; }

RESULTS=()
row() { RESULTS+=("$(printf '%-28s %8s %8s  %s' "$1" "$2" "$3" "$4")"); }

warm "$CAP"

# ---- fwlb trace -------------------------------------------------------------------------------
log "fwlb trace"
t=$(best_of "$FWLB" trace "$CAP" --client "$CLIENT")
got=$(grep -c ' -> ' "$OUT" || true)
[[ $got == "$TRUTH" ]] || log "WARNING: fwlb found $got conversations, the generator made $TRUTH"
row "fwlb trace" "$t" "$(gbps "$BYTES" "$t")" "$got conversations (5-tuple, times, request lines)"

# ---- grep -------------------------------------------------------------------------------------
log "grep -a -c"
t=$(best_of env LC_ALL=C grep -a -c "X-Forwarded-For: $CLIENT" "$CAP")
row "LC_ALL=C grep -a -c" "$t" "$(gbps "$BYTES" "$t")" "$(cat "$OUT") lines (no 5-tuples; decoys count too)"

# ---- python regex over lines ------------------------------------------------------------------
log "python3 regex over lines"
PYRE=$CACHE/xff_lines.py
cat >"$PYRE" <<'PY'
import re, sys
# Every line of the capture against a case-insensitive header regex, the address a whole word.
ip = re.escape(sys.argv[2].encode())
pat = re.compile(rb"^x-forwarded-for:.*(?<![\w.])" + ip + rb"(?![\w.])", re.I)
n = 0
with open(sys.argv[1], "rb", buffering=1 << 20) as f:
    for line in f:
        if pat.search(line):
            n += 1
print(n)
PY
t=$(REPS=1 best_of python3 "$PYRE" "$CAP" "$CLIENT")
row "python3 re over lines" "$t" "$(gbps "$BYTES" "$t")" "$(cat "$OUT") lines (no 5-tuples)"

# ---- tshark -----------------------------------------------------------------------------------
if ! command -v tshark >/dev/null && [[ -z "${NO_INSTALL:-}" ]]; then
  log "installing tshark"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null 2>&1 \
    || log "apt-get install tshark failed"
fi
if command -v tshark >/dev/null; then
  if [[ ! -s $SAMPLE ]]; then
    # The first SAMPLE_MB, cut at a record boundary.
    python3 - "$CAP" "$SAMPLE" "$SAMPLE_MB" <<'PY'
import struct, sys
src, dst, mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(src, "rb") as f, open(dst, "wb") as o:
    o.write(f.read(24))
    n = 24
    while n < mb * 1_000_000:
        h = f.read(16)
        if len(h) < 16:
            break
        cap = struct.unpack("<IIII", h)[2]
        o.write(h + f.read(cap))
        n += 16 + cap
PY
  fi
  SBYTES=$(stat -c %s "$SAMPLE")
  warm "$SAMPLE"
  log "tshark on the first $SBYTES bytes"
  t=$(REPS=1 best_of tshark -n -r "$SAMPLE" -Y "http.x_forwarded_for contains \"$CLIENT\"" \
        -T fields -e frame.time_epoch -e ip.src -e tcp.srcport -e ip.dst -e tcp.dstport)
  row "tshark -Y (first ${SAMPLE_MB} MB)" "$t" "$(gbps "$SBYTES" "$t")" \
    "$(wc -l <"$OUT") packets (5-tuples); whole file: ~$(awk -v t="$t" -v a="$BYTES" -v b="$SBYTES" 'BEGIN { printf "%.0f", t * a / b }') s extrapolated"
else
  log "tshark not installed: skipped"
fi

# ---- report -----------------------------------------------------------------------------------
echo
echo "capture: $BYTES bytes ($SIZE_GB GB), page-cached; best of $REPS (python, tshark: 1 run)"
printf '%-28s %8s %8s  %s\n' "tool" "seconds" "GB/s" "found"
printf '%s\n' "${RESULTS[@]}"
