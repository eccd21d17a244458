#!/usr/bin/env bash
# bench/profile.sh BUILD_DIR fetch|fetch-uncached|create|relay|sim [SECONDS] —
# where twigate's CPU goes under one of the benchmark loads, with perf
# (software clock: no hardware counters are needed, so it works in VMs).
# fetch: one call, again and again (the call cache answers); fetch-uncached:
# a random one of 100,000 each time, as run.sh's uncached row. sim: the create load
# again, but twigate dials a kaphila-sim process, and that process is the
# one sampled (the simulator's cost per call, as bench/cpuops.sh counts it).
#
# Build with symbols and frame pointers first, outside the tree, e.g.
#   make BUILD=/tmp/twigate-prof OPT="-O2 -g -fno-omit-frame-pointer -DNDEBUG" all
#   bench/profile.sh /tmp/twigate-prof create
# Prints the busiest threads, the top functions by self time, and the top
# twigate functions by inclusive time (DWARF call graphs). Everything it
# starts is stopped at exit; the perf data is kept with BENCH_KEEP=1.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bench/profile.sh BUILD_DIR fetch|fetch-uncached|create|relay|sim [SECONDS]" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init "$1"
SC=$2
SECS=${3:-5}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
command -v perf >/dev/null || { echo "profile: perf missing (apt-get install linux-perf)" >&2; exit 2; }
cd "$ROOT"

case "$SC" in
fetch)
  make_db prof 100000
  start_twigate prof "$WORK/prof.db"
  SID=$(sql "$WORK/prof.db" "SELECT sid FROM calls ORDER BY id LIMIT 1 OFFSET 50000")
  load=(env BENCH_DIR="$BENCH" BENCH_AUTH="$AUTH" wrk -t2 -c50 -d"$((SECS + 1))s" -s "$BENCH/wrk/fetch.lua"
        "http://127.0.0.1:$TW_PORT$API/Calls/$SID.json")
  ;;
fetch-uncached)
  make_db prof 100000
  start_twigate prof "$WORK/prof.db"
  sql "$WORK/prof.db" "SELECT sid FROM calls" > "$WORK/sids.txt"
  load=(env BENCH_DIR="$BENCH" BENCH_AUTH="$AUTH" BENCH_SIDS="$WORK/sids.txt" BENCH_PREFIX="$API/Calls/"
        wrk -t2 -c50 -d"$((SECS + 1))s" -s "$BENCH/wrk/fetch_random.lua" "http://127.0.0.1:$TW_PORT$API/Calls/x.json")
  ;;
create)
  start_twigate prof "$WORK/prof.db"
  load=(env BENCH_DIR="$BENCH" BENCH_AUTH="$AUTH" BENCH_BODY="$FORM_HANGUP" wrk -t2 -c50 -d"$((SECS + 1))s"
        -s "$BENCH/wrk/create.lua" "http://127.0.0.1:$TW_PORT$API/Calls.json")
  ;;
sim)
  spawn "$WORK/sim.out" "$WORK/sim.log" "$SIMBIN" --key ak_live_demo --port 0 --fast
  SIM_PID=$SPAWNED
  for ((i = 0; i < 100; i++)); do grep -q listening "$WORK/sim.out" 2>/dev/null && break; sleep 0.05; done
  SIM_PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/sim.out")
  [ -n "$SIM_PORT" ] || { echo "profile: kaphila-sim did not start" >&2; exit 1; }
  start_twigate prof "$WORK/prof.db" --set "kaphila.url=http://127.0.0.1:$SIM_PORT"
  load=(env BENCH_DIR="$BENCH" BENCH_AUTH="$AUTH" BENCH_BODY="$FORM_HANGUP" wrk -t2 -c50 -d"$((SECS + 1))s"
        -s "$BENCH/wrk/create.lua" "http://127.0.0.1:$TW_PORT$API/Calls.json")
  ;;
relay)
  start_twigate prof "$WORK/prof.db" --set sim.ring_ms=600000 --set sim.answer_ms=600000 --set sim.fast=false
  RP=$(free_port)
  form="To=%2B14155550100&From=%2B14155550199&Timeout=300&Twiml=%3CResponse%3E%3CPause%20length%3D%22600%22%2F%3E%3C%2FResponse%3E&StatusCallback=http%3A%2F%2F127.0.0.1%3A$RP%2Fcb&StatusCallbackEvent=ringing&StatusCallbackEvent=answered&StatusCallbackEvent=completed"
  "$LOADGEN" load -u "http://127.0.0.1:$TW_PORT$API/Calls.json" -X POST \
    -H "Authorization: Basic $(printf %s "$AUTH" | base64 -w0)" -b "$form" -r 0 -c 50 -n 6000 -d 120 >/dev/null
  sql "$WORK/prof.db" "SELECT token, sid, kaphila_id FROM calls WHERE status = 'queued'" > "$WORK/tokens"
  load=("$LOADGEN" relay -u "http://127.0.0.1:$TW_PORT" -f "$WORK/tokens" -l "$RP" -r 0 -c 32 -d "$SECS" -D 5)
  ;;
*) echo "profile: unknown scenario $SC" >&2; exit 2 ;;
esac

"${load[@]}" > "$WORK/load.out" 2>&1 &
PROF_PID=$TW_PID PROF_BIN=$BIN
[ "$SC" != sim ] || PROF_PID=$SIM_PID PROF_BIN=$SIMBIN
LOAD_PID=$!
sleep 0.5
c0=$(cpu_snap "$PROF_PID")
perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$PROF_PID" -o "$WORK/perf.data" -- sleep "$SECS" 2>/dev/null
c1=$(cpu_snap "$PROF_PID")
wait "$LOAD_PID" || true
echo "== load: $(grep -E '^(WRK|events=|due=)' "$WORK/load.out" || tail -2 "$WORK/load.out")"
echo "== CPU by thread over ${SECS}s (ms): $(cpu_diff "$c0" "$c1" 1000 | sed 's/µs//g')"
echo "== top functions, self time"
perf report -i "$WORK/perf.data" --no-children --sort comm,dso,sym -g none --stdio 2>/dev/null |
  grep -E '^ +[0-9]' | head -30 || true   # head closes the pipe early
echo "== twigate functions, inclusive time (by thread)"
perf report -i "$WORK/perf.data" --children --sort comm,dso,sym -g none --stdio 2>/dev/null |
  grep -E '^ +[0-9]' | awk -v b="$(basename "$PROF_BIN")" '$4 == b' | head -40 || true
[ "${BENCH_KEEP:-0}" != 1 ] || echo "perf data: $WORK/perf.data"
exit 0
