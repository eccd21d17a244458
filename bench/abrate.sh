#!/usr/bin/env bash
# bench/abrate.sh BUILD BASE_BUILD [ROUNDS RATE CALLS] — CPU per create of two
# builds, alternated, at a fixed rate: CALLS <Hangup/> creates at RATE/s (open
# loop, loadgen) to each build's twigate in turn, each dialling its own
# kaphila-sim process, until no call is live; prints µs per call of twigate
# (total, http = MHD-* and http-*, engine) and of the simulator, one line per
# build and round. A fixed rate keeps the batching the same for both builds,
# which section 10's closed loop (wrk, as fast as it goes) does not when the
# machine is loaded (docs/performance.md, issue 22's work side).
# Defaults: 6 rounds, 500 calls/s, 2000 calls. BASE_BUILD is a build
# directory of another tree (its twigate and kaphila-sim are used).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bench/abrate.sh BUILD BASE_BUILD [ROUNDS RATE CALLS]" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init "$1"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
cd "$ROOT"
ROUNDS=${3:-6} RATE=${4:-500} N=${5:-2000}
declare -A TWP TWPORT SIMP
# shellcheck disable=SC2034 # BIN is read by start_twigate
for tag in tree base; do
  b=$1; [ "$tag" = base ] && b=$2
  spawn "$WORK/sim-$tag.out" "$WORK/sim-$tag.log" "$b/kaphila-sim" --key ak_live_demo --port 0 --fast
  SIMP[$tag]=$SPAWNED
  for ((i = 0; i < 100; i++)); do grep -q listening "$WORK/sim-$tag.out" 2>/dev/null && break; sleep 0.05; done
  sp=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/sim-$tag.out")
  BIN=$b/twigate   # start_twigate's binary (bench/lib.sh)
  start_twigate "ab-$tag" "$WORK/ab-$tag.db" --set "kaphila.url=http://127.0.0.1:$sp"
  # shellcheck disable=SC2153 # TW_PORT is set by start_twigate
  TWP[$tag]=$TW_PID TWPORT[$tag]=$TW_PORT
done
hdr="Authorization: Basic $(printf %s "$AUTH" | base64 -w0)"
body="To=%2B14155550100&From=%2B14155550199&Twiml=%3CResponse%3E%3CHangup%2F%3E%3C%2FResponse%3E"
ticks() { cpu_snap "$1" | awk '{s += $2} END {print s + 0}'; }
grp() { cpu_snap "$1" | awk -v p="$2" '$1 ~ p {s += $2} END {print s + 0}'; }
simt() { cut -d')' -f2 "/proc/$1/stat" | awk '{print $12 + $13}'; }
HZ=$(getconf CLK_TCK)
for ((r = 1; r <= ROUNDS; r++)); do
  for tag in tree base; do
    p=${TWP[$tag]}
    t0=$(ticks "$p") h0=$(grp "$p" '^(MHD|http)') e0=$(grp "$p" '^engine$') s0=$(simt "${SIMP[$tag]}")
    "$LOADGEN" load -u "http://127.0.0.1:${TWPORT[$tag]}$API/Calls.json" -X POST -H "$hdr" -b "$body" -r "$RATE" -c 50 -n "$N" -d 60 > "$WORK/lg.out" 2>&1
    wait_drained "$WORK/ab-$tag.db" 30 || echo "$tag: still live"
    t1=$(ticks "$p") h1=$(grp "$p" '^(MHD|http)') e1=$(grp "$p" '^engine$') s1=$(simt "${SIMP[$tag]}")
    awk -v n="$N" -v hz="$HZ" -v t="$((t1-t0))" -v h="$((h1-h0))" -v e="$((e1-e0))" -v s="$((s1-s0))" -v tag="$tag" -v r="$r" \
      'BEGIN {k = 1e6 / hz / n; printf "%s %d total %.0f http %.0f engine %.0f sim %.0f\n", tag, r, t*k, h*k, e*k, s*k}'
  done
done
