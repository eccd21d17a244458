#!/usr/bin/env bash
# bench/run.sh BUILD_DIR — every benchmark of docs/performance.md, on loopback.
#
# Runs each figure BENCH_RUNS times (median), next to its baseline measured in
# the same run (nginx serving the same bytes, the Prism mock of Twilio's
# OpenAPI document, or twigate itself in the reference condition), prints one
# table and writes it with the exact commands to bench/results/latest.md.
# `make bench` builds BUILD_DIR with -O2 -DNDEBUG first; this script builds
# only its own driver (bench/loadgen*.c) and starts nothing it does not stop.
#
# Knobs (environment): BENCH_RUNS (3; section 0: 5), BENCH_CPU_RUNS (section
# 0's runs, over BENCH_RUNS), BENCH_SECONDS per throughput run (5),
# BENCH_SUSTAIN_SECONDS (30), BENCH_LIVE_CALLS (10000), BENCH_LIVE_RATE (calls
# / 20: creates/s of the spread live run), BENCH_FETCH_ROWS
# (100000), BENCH_GROWTH_ROWS (1000000), BENCH_ONLY (comma list of fetch,
# create,slow,relay,live,growth,footprint,mp3,budget), BENCH_MP3_SECONDS of
# audio per encode (600), BENCH_KEEP=1 keeps the work dir, BENCH_RELAY_CONSOLE=1
# runs the relay with one console event stream open (docs/console.md),
# BENCH_RELAY_EVENTS per closed-loop relay run (3000: a fraction of a second;
# more to see a small cost), BENCH_BUDGET_CALLS per scenario of the budget run
# (10), BENCH_BUDGET_BURST calls created at once against the small limit (60),
# BENCH_CEIL_BATCH creates per transaction of the storage ceiling (50: the
# create run's connections), BENCH_BASELINE=<rev> also builds that revision
# and reports CPU per operation as ratios to it, BENCH_CPU_ROWS seeded for the
# CPU fetch runs (BENCH_FETCH_ROWS), BENCH_STEP_CALLS per TwiML-step run (500).
# BENCH_ONLY also takes cpu (CPU per operation: bench/cpuops.sh) and cluster
# (two instances on one PostgreSQL: bench/cluster.sh; BENCH_CLUSTER_POLL_MS).
set -euo pipefail

BUILD=${1:-build-bench}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
# The MP3 section alone needs only a compiler (no wrk, nginx or Prism).
[ "${BENCH_ONLY:-}" != mp3 ] || BENCH_TOOLS="sqlite3 curl cc"
bench_init "$BUILD"
cd "$ROOT"
RUNS=${BENCH_RUNS:-3}
# Section 0's alternated runs: five by default (issue 22: CPU per operation as
# the median of at least five), BENCH_RUNS when given, BENCH_CPU_RUNS above both.
CPU_RUNS=${BENCH_CPU_RUNS:-${BENCH_RUNS:-5}}
SECS=${BENCH_SECONDS:-5}
SUSTAIN=${BENCH_SUSTAIN_SECONDS:-30}
LIVE_CALLS=${BENCH_LIVE_CALLS:-10000}
LIVE_RATE=${BENCH_LIVE_RATE:-$((LIVE_CALLS / 20))}   # creates/s: one 20 s loop period
FETCH_ROWS=${BENCH_FETCH_ROWS:-100000}
GROWTH_ROWS=${BENCH_GROWTH_ROWS:-1000000}
ONLY=${BENCH_ONLY:-fetch,create,slow,relay,live,growth,footprint,mp3,budget,cpu}
RELAY_CONSOLE=${BENCH_RELAY_CONSOLE:-}   # 1: the relay runs with a console stream open
RELAY_EVENTS=${BENCH_RELAY_EVENTS:-3000}
MP3_SECONDS=${BENCH_MP3_SECONDS:-600}
BUDGET_CALLS=${BENCH_BUDGET_CALLS:-10}
BUDGET_BURST=${BENCH_BUDGET_BURST:-60}
CEIL_BATCH=${BENCH_CEIL_BATCH:-50}
# shellcheck source=bench/cpuops.sh
. "$BENCH/cpuops.sh"
# shellcheck source=bench/cluster.sh
. "$BENCH/cluster.sh"

OAI=$ROOT/tests/data/twilio-oai/twilio_api_v2010.json
RESULTS=$BENCH/results
mkdir -p "$RESULTS"
DETAILS=$WORK/details.md
TABLE=$WORK/table.tsv
: > "$DETAILS"; : > "$TABLE"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
# CPU time the hypervisor gave to others while this run wanted it (steal, in
# /proc/stat): on a shared virtual machine it moves every figure, tails most
# (with 10 % stolen, eight relay runs read p99 3-26 ms at 1,000 events/s, on
# the same tree and machine that read 0.6-1.3 ms in earlier sessions).
STAT0=$(head -1 /proc/stat)
steal_pct() { # /proc/stat's cpu line at the start → % of all CPU time stolen since
  awk -v a="$STAT0" -v b="$(head -1 /proc/stat)" 'BEGIN {
    n = split(a, x, " "); split(b, y, " "); t = 0
    for (i = 2; i <= 9 && i <= n; i++) t += y[i] - x[i]   # guest time is in user already
    printf "%.1f", (t > 0 ? 100 * (y[9] - x[9]) / t : 0) }'
}
# The tree as it is when the run starts (make bench has just built it).
REV0="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src include 2>/dev/null || echo ' with uncommitted changes in src/ or include/')"
BUILT0=$(date -u -r "$BIN" '+%H:%M:%S UTC' 2>/dev/null || echo '?')
REPORTED=0

cleanup() {
  local rc=$?
  if [ "$REPORTED" = 0 ] && [ -s "$TABLE" ]; then write_report "Incomplete run (exit status $rc): the figures measured before it stopped."; fi
  bench_cleanup
}
trap cleanup EXIT
trap 'exit 130' INT TERM

detail() { printf '%s\n' "$*" >> "$DETAILS"; }
# row figure value baseline ratio target met
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$TABLE"; }
yesno() { if "$@"; then echo yes; else echo NO; fi; }

# ---- the table ------------------------------------------------------------

write_report() { # [note]
  REPORTED=1
  {
    echo "| figure | median | baseline (same run) | ratio | target | met? |"
    echo "| --- | --- | --- | --- | --- | --- |"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$TABLE"
  } > "$WORK/table.md"
  echo
  column -t -s $'\t' -N figure,median,baseline,ratio,target,met "$TABLE" 2>/dev/null || cat "$TABLE"
  echo
  ELAPSED=$(($(date +%s) - T_START))
  {
    echo "# twigate benchmarks — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    [ -z "${1:-}" ] || { echo "**$1**"; echo; }
    echo "Build \`$BUILD\` (binary of $BUILT0; tree at the start: $REV0), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), load average at the start: $LOAD0, CPU steal over the run: $(steal_pct) %."
    echo "Runs per figure: $RUNS (median; CPU per operation: $CPU_RUNS), $SECS s each; sustained create $SUSTAIN s once; whole run ${ELAPSED} s."
    echo "wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), $(nginx -v 2>&1 | sed 's/.*: //'), Prism $(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$BENCH/node_modules/@stoplight/prism-cli/package.json" 2>/dev/null | head -1), node $(node --version)."
    echo
    cat "$WORK/table.md"
    echo
    echo "## Details"
    echo
    cat "$DETAILS"
    echo
    echo "## Commands"
    echo
    echo '```sh'
    cat "$CMDS"
    echo '```'
  } > "$RESULTS/latest.md"
  echo "bench: ${ELAPSED} s; results and commands in bench/results/latest.md"
}

want() { [[ ",$ONLY," == *",$1,"* ]]; }


# ---- Prism, started early: it takes a few seconds --------------------------

PRISM_PID=
if want fetch; then
  if [ ! -x "$BENCH/node_modules/.bin/prism" ]; then
    log "installing the Prism baseline (npm ci in bench/)"
    (cd "$BENCH" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  PRISM_PORT=$(free_port)
  spawn "$WORK/prism.out" "$WORK/prism.log" "$BENCH/node_modules/.bin/prism" mock -h 127.0.0.1 \
    -p "$PRISM_PORT" "$OAI"
  PRISM_PID=$SPAWNED
  printf '# Prism: %s mock -h 127.0.0.1 -p %s %s\n' "bench/node_modules/.bin/prism" "$PRISM_PORT" "$OAI" >> "$CMDS"
fi

# =============================================================================
# 1. Fetch a call from FETCH_ROWS calls: twigate vs nginx (same bytes) vs Prism
# =============================================================================
if want fetch; then
  log "fetch: seeding $FETCH_ROWS calls"
  make_db fetch "$FETCH_ROWS"
  section "1. fetch"
  start_twigate fetch "$WORK/fetch.db"
  F_PID=$TW_PID F_PORT=$TW_PORT
  SID=$(sql "$WORK/fetch.db" "SELECT sid FROM calls ORDER BY id LIMIT 1 OFFSET $((FETCH_ROWS / 2))")
  FPATH=$API/Calls/$SID.json
  # nginx serves the very bytes twigate answers, as a static file, same Content-Type.
  mkdir -p "$WORK/www$(dirname "$FPATH")"
  curl -sf -u "$AUTH" "http://127.0.0.1:$F_PORT$FPATH" -o "$WORK/www$FPATH"
  start_nginx "$WORK/www" "$FPATH"
  for ((i = 0; i < 600; i++)); do curl -s -o /dev/null -u "$AUTH" "http://127.0.0.1:$PRISM_PORT$FPATH" && break; sleep 0.1; done
  cmp -s <(curl -s -u "$AUTH" "http://127.0.0.1:$F_PORT$FPATH") <(curl -s "http://127.0.0.1:$NGINX_PORT$FPATH") ||
    { echo "bench: nginx does not serve twigate's bytes" >&2; exit 1; }
  detail "- fetch: $(wc -c < "$WORK/www$FPATH")-byte body, Content-Type $(curl -s -o /dev/null -w '%{content_type}' -u "$AUTH" "http://127.0.0.1:$F_PORT$FPATH") from twigate and nginx; Prism answers its own example ($(curl -s -u "$AUTH" "http://127.0.0.1:$PRISM_PORT$FPATH" | wc -c) bytes)"
  export BENCH_AUTH=$AUTH
  # warm-up: caches, connections, JIT
  for u in "http://127.0.0.1:$F_PORT$FPATH" "http://127.0.0.1:$NGINX_PORT$FPATH" "http://127.0.0.1:$PRISM_PORT$FPATH"; do
    BENCH_DIR=$BENCH wrk -t2 -c50 -d1s -s "$BENCH/wrk/fetch.lua" "$u" >/dev/null
  done
  # Every stored SID, for the random-call runs (the uncached fetch path).
  sql "$WORK/fetch.db" "SELECT sid FROM calls" > "$WORK/fetch-sids.txt"
  tw=() ng=() pr=() tw_p99=() ng_p99=() pr_p99=() rnd=() rnd_p99=() ngr=()
  for ((r = 1; r <= RUNS; r++)); do
    log "fetch: run $r/$RUNS"
    o=$(wrk_run "http://127.0.0.1:$F_PORT$FPATH" -t2 -c50 -d"${SECS}s" -s "$BENCH/wrk/fetch.lua")
    tw+=("$(wrk_rps "$o")"); tw_p99+=("$(kv "$o" p99_us)")
    o=$(BENCH_SIDS=$WORK/fetch-sids.txt BENCH_PREFIX=$API/Calls/ wrk_run "http://127.0.0.1:$F_PORT$FPATH" -t2 -c50 -d"${SECS}s" -s "$BENCH/wrk/fetch_random.lua")
    rnd+=("$(wrk_rps "$o")"); rnd_p99+=("$(kv "$o" p99_us)")
    o=$(BENCH_SIDS=$WORK/fetch-sids.txt BENCH_PREFIX=$API/Calls/ wrk_run "http://127.0.0.1:$NGINX_PORT$FPATH" -t2 -c50 -d"${SECS}s" -s "$BENCH/wrk/fetch_random.lua")
    ngr+=("$(wrk_rps "$o")")
    o=$(wrk_run "http://127.0.0.1:$NGINX_PORT$FPATH" -t2 -c50 -d"${SECS}s" -s "$BENCH/wrk/fetch.lua")
    ng+=("$(wrk_rps "$o")"); ng_p99+=("$(kv "$o" p99_us)")
    o=$(wrk_run "http://127.0.0.1:$PRISM_PORT$FPATH" -t2 -c50 -d"${SECS}s" -s "$BENCH/wrk/fetch.lua")
    pr+=("$(wrk_rps "$o")"); pr_p99+=("$(kv "$o" p99_us)")
  done
  TW=$(median "${tw[@]}") NG=$(median "${ng[@]}") PR=$(median "${pr[@]}") RND=$(median "${rnd[@]}") NGR=$(median "${ngr[@]}")
  detail "- fetch req/s per run: twigate ${tw[*]}; nginx ${ng[*]}; Prism ${pr[*]} (p99 µs: twigate ${tw_p99[*]}; nginx ${ng_p99[*]}; Prism ${pr_p99[*]})"
  detail "- fetch of a random call among the $(wc -l < "$WORK/fetch-sids.txt") stored (bench/wrk/fetch_random.lua; uncached path), req/s per run: ${rnd[*]} (p99 µs ${rnd_p99[*]}); nginx driven by the same script (same bytes for every call's URI): ${ngr[*]}; ratio to the plain nginx figure $(calc "$RND / $NG" 2)"
  detail "- fetch: twigate RSS after the runs $(($(rss_kb "$F_PID") / 1024)) MB (50 keep-alive connections)"
  row "Fetch a call, ${FETCH_ROWS} calls stored (req/s)" "$TW" "nginx $NG" "$(calc "$TW / $NG" 2)" "≥ 1.00 × nginx" \
    "$(yesno ge "$(calc "$TW / $NG" 4)" 1)"
  row "Fetch a call vs Prism (req/s)" "$TW" "Prism $PR" "$(calc "$TW / ($PR > 0 ? $PR : 1)" 0)×" "≥ 100 × Prism" \
    "$(yesno ge "$(calc "$TW / ($PR > 0 ? $PR : 1)" 4)" 100)"
  row "Fetch a random one of the ${FETCH_ROWS} calls, uncached (req/s)" "$RND" "nginx, same wrk script $NGR" "$(calc "$RND / $NGR" 2)" \
    "(same targets)" "$(yesno ge "$(calc "$RND / $NGR" 4)" 1) / $(yesno ge "$(calc "$RND / ($PR > 0 ? $PR : 1)" 4)" 100)"
  stop "$F_PID"; stop "$NGINX_PID"; stop "$PRISM_PID"
  unset BENCH_AUTH
fi

# =============================================================================
# 2. Create on the simulator (fast mode): sustained, durable, p99 at 1,000/s
# 3. Create with a slow Kaphila (+100 ms per response), 500 clients
# =============================================================================
if want create || want slow; then
  start_twigate create "$WORK/create.db"
  C_PID=$TW_PID C_PORT=$TW_PORT C_SIM=$TW_SIM
  CURL_CREATE="http://127.0.0.1:$C_PORT$API/Calls.json"
  export BENCH_AUTH=$AUTH BENCH_BODY=$FORM_HANGUP
  section "2. create (simulator in fast mode, Twiml <Response><Hangup/></Response>)"
  BENCH_DIR=$BENCH wrk -t2 -c50 -d1s -s "$BENCH/wrk/create.lua" "$CURL_CREATE" >/dev/null
  wait_drained "$WORK/create.db" 20 || true
  # The simulator charges a credit per answered call and starts each key with
  # 100,000 (docs/simulator.md); a key out of credits is refused (402, which
  # fails the call with 20005 and pauses the key's queue: docs/kaphila.md). The
  # create runs together place more than that,
  # so each section starts from full credits (the simulator has no live call
  # then: every call has drained).
  sim_refill() { run curl -sf -X POST "http://127.0.0.1:$C_SIM/sim/reset" -o /dev/null; }
fi
if want create; then
  log "create: sustained ${SUSTAIN}s"
  sim_refill
  rows0=$(sql "$WORK/create.db" "SELECT count(*) FROM calls")
  c0=$(cpu_snap "$C_PID")
  # A 201 now leaves before the dial (Twilio's queue, docs/kaphila.md): the
  # dials are counted apart, at the simulator, over the same seconds.
  k0=$(kv "$(sim_key_summary "$(curl -sf "http://127.0.0.1:$C_SIM/sim/keys/1")")" makecall)
  o=$(wrk_run "$CURL_CREATE" -t2 -c50 -d"${SUSTAIN}s" --timeout 10s -s "$BENCH/wrk/create.lua")
  k1=$(kv "$(sim_key_summary "$(curl -sf "http://127.0.0.1:$C_SIM/sim/keys/1")")" makecall)
  queued_end=$(sql "$WORK/create.db" "SELECT count(*) FROM calls WHERE status = 'queued'")
  c1=$(cpu_snap "$C_PID")
  ok=$(( $(kv "$o" requests) - $(kv "$o" non2xx) ))
  CREATE_RATE=$(wrk_rps "$o")
  drained=yes; wait_drained "$WORK/create.db" 30 || drained=no
  rows1=$(sql "$WORK/create.db" "SELECT count(*) FROM calls")
  done1=$(sql "$WORK/create.db" "SELECT count(*) FROM calls WHERE id > (SELECT max(id) FROM calls) - $((rows1 - rows0)) AND status = 'completed'")
  added=$((rows1 - rows0))
  stuck=$(live_count "$WORK/create.db")
  [ "$stuck" = 0 ] || detail "- create: $stuck calls still live after the drain: $(sql "$WORK/create.db" "SELECT status || ' ' || count(*) FROM calls WHERE status IN ('queued','ringing','in-progress') GROUP BY status" | tr '\n' ' '); twigate's log says: $(grep -v ' INFO ' "$WORK/create.log" | sed 's/^[^ ]* //; s/CA[0-9a-f]\{32\}/CA…/g' | sort | uniq -c | sort -rn | head -3 | tr -s ' ' | tr '\n' ';')"
  detail "- create sustained: $(kv "$o" requests) responses, $ok × 201, non-2xx $(kv "$o" non2xx), socket errors connect/read/write/timeout $(kv "$o" connect)/$(kv "$o" read)/$(kv "$o" write)/$(kv "$o" timeout); p50 $(calc "$(kv "$o" p50_us) / 1000") ms, p99 $(calc "$(kv "$o" p99_us) / 1000") ms; rows added $added (completed $done1; all calls ended: $drained)"
  detail "- create sustained, CPU per call by thread: $(cpu_diff "$c0" "$c1" "$ok")"
  row "Create, sustained ${SUSTAIN} s, 50 clients (calls/s)" "$CREATE_RATE" "—" "—" "≥ 2000" "$(yesno ge "$CREATE_RATE" 2000)"
  DIAL_RATE=$(calc "($k1 - $k0) / $SUSTAIN" 0)
  detail "- create sustained: /makecall accepted by the simulator during the run $((k1 - k0)) ($DIAL_RATE/s); calls still queued when wrk stopped $queued_end"
  row "Create: dial rate during the sustained run (/makecall/s)" "$DIAL_RATE" "201s $CREATE_RATE/s" "$(calc "$DIAL_RATE / ($CREATE_RATE > 0 ? $CREATE_RATE : 1)" 2)" \
    "≥ 0.9 × 201s (unlimited key)" "$(yesno ge "$(calc "$DIAL_RATE / ($CREATE_RATE > 0 ? $CREATE_RATE : 1)" 4)" 0.9)"
  # Every 201 is a stored row; rows beyond the 201s are requests still in
  # flight when wrk stopped (at most one per connection).
  row "Create: rows stored / 201s answered" "$added / $ok" "—" "—" "rows ≥ 201s (≤ +50 in flight)" \
    "$(yesno test "$added" -ge "$ok" -a "$((added - ok))" -le 50)"
  # The storage ceiling: SQLite alone doing what these creates wrote, with
  # twigate's settings, CEIL_BATCH creates per transaction (bench/storeceil.c).
  STORECEIL=$BDIR/bench/storeceil
  run cc -std=c11 -O2 -Wall -Wextra -o "$STORECEIL" "$BENCH/storeceil.c" -lsqlite3 -lpthread >&2
  make_db ceil 0
  CEIL_SID=$(sql "$WORK/ceil.db" "SELECT sid FROM calls ORDER BY id LIMIT 1")
  CEIL_N=$(calc "($CREATE_RATE > 1000 ? $CREATE_RATE : 1000) * 10" 0)   # about 10 s of twigate's creates
  ce=() ce1=
  for ((r = 1; r <= RUNS; r++)); do
    o=$(run "$STORECEIL" "$WORK/ceil.db" "$CEIL_SID" "$CEIL_N" "$CEIL_BATCH")
    ce+=("$(kv "$o" rate)"); detail "- storage ceiling, run $r: $o"
  done
  o=$(run "$STORECEIL" "$WORK/ceil.db" "$CEIL_SID" 2000 1); ce1=$(kv "$o" rate)
  detail "- storage ceiling with one create per transaction: $o"
  CEIL=$(median "${ce[@]}")
  row "Create vs storage ceiling (calls/s)" "$CREATE_RATE" "bench/storeceil, $CEIL_BATCH per commit: $CEIL (1 per commit: $ce1)" \
    "$(calc "$CREATE_RATE / $CEIL" 2)" "≥ 0.50 × ceiling" "$(yesno ge "$(calc "$CREATE_RATE / $CEIL" 4)" 0.5)"
  # Open loop at half of the rate this machine sustained just above.
  OPEN_RATE=$(calc "($CREATE_RATE >= 2 ? $CREATE_RATE : 2) / 2" 0)   # never 0: loadgen's closed loop
  p99s=() rates=()
  sim_refill
  for ((r = 1; r <= RUNS; r++)); do
    log "create: $OPEN_RATE calls/s open loop (half the sustained rate), run $r/$RUNS"
    o=$(run "$LOADGEN" load -u "$CURL_CREATE" -X POST -H "Authorization: Basic $(printf %s "$AUTH" | base64 -w0)" \
        -b "$FORM_HANGUP" -r "$OPEN_RATE" -d "$SECS" -c 256 -D 20)
    p99s+=("$(kv "$o" p99)"); rates+=("$(kv "$o" ok_rate)")
    detail "- create at $OPEN_RATE/s, run $r: $o"
    wait_drained "$WORK/create.db" 30 || true
  done
  P99=$(median "${p99s[@]}")
  row "Create p99 at 50 % of the sustained rate ($OPEN_RATE calls/s), open loop (ms)" "$P99" "achieved $(median "${rates[@]}")/s" "—" "< 10" "$(yesno le "$P99" 10)"
fi
if want slow; then
  section "3. create with a slow Kaphila (+100 ms on every simulator response)"
  [ -n "${CREATE_RATE:-}" ] || {
    o=$(wrk_run "$CURL_CREATE" -t2 -c50 -d"${SECS}s" -s "$BENCH/wrk/create.lua"); CREATE_RATE=$(wrk_rps "$o")
    wait_drained "$WORK/create.db" 30 || true; }
  sim_refill
  run curl -sf -X POST "http://127.0.0.1:$C_SIM/sim/latency" -d '{"ms":100}' -o /dev/null
  detail "- slow Kaphila: one create alone takes $(curl -s -o /dev/null -w '%{time_total}' -u "$AUTH" "$CURL_CREATE" -d "$FORM_HANGUP") s with the +100 ms latency on"
  wait_drained "$WORK/create.db" 10 || true
  sl=()
  for ((r = 1; r <= RUNS; r++)); do
    log "slow Kaphila: run $r/$RUNS"
    o=$(wrk_run "$CURL_CREATE" -t2 -c500 -d"${SECS}s" --timeout 10s -s "$BENCH/wrk/create.lua")
    sl+=("$(wrk_rps "$o")")
    detail "- slow Kaphila run $r: $o"
    [ "$(kv "$o" non2xx)" = 0 ] || detail "- slow Kaphila run $r: $(kv "$o" non2xx) answers were not 201 (not counted); twigate's log says: $(grep -E ' (WARN|ERROR) ' "$WORK/create.log" | sed 's/^[^ ]* //; s/CA[0-9a-f]\{32\}/CA…/g' | sort | uniq -c | sort -rn | head -2 | tr -s ' ' | tr '\n' ';')"
    wait_drained "$WORK/create.db" 30 || true
  done
  run curl -sf -X POST "http://127.0.0.1:$C_SIM/sim/latency" -d '{"ms":0}' -o /dev/null
  SL=$(median "${sl[@]}")
  row "Create, Kaphila +100 ms, 500 clients (calls/s)" "$SL" "fast Kaphila $CREATE_RATE" "$(calc "$SL / $CREATE_RATE" 2)" "≥ 1500" "$(yesno ge "$SL" 1500)"
fi
if want create || want slow; then
  stop "$C_PID"
  unset BENCH_AUTH BENCH_BODY
fi

# =============================================================================
# 4. Event relay: Kaphila events in → signed status callbacks out
# =============================================================================
if want relay; then
  section "4. event relay (the simulator rings after 10 min, so only our events move the calls)"
  start_twigate relay "$WORK/relay.db" --set sim.ring_ms=600000 --set sim.answer_ms=600000 --set sim.fast=false \
    ${RELAY_CONSOLE:+--set console.enabled=true}
  R_PID=$TW_PID R_PORT=$TW_PORT
  if [ -n "$RELAY_CONSOLE" ]; then
    # One browser's console open on the account for the whole section: its event
    # stream (docs/console.md) read by curl as a browser would.
    spawn "$WORK/console-stream.out" "$WORK/console-stream.err" curl -sN -u "$AUTH" \
      "http://127.0.0.1:$R_PORT/console/api/stream"
    detail "- relay with one console event stream open (BENCH_RELAY_CONSOLE=1)"
  fi
  RECV_PORT=$(free_port)
  RELAY_FORM="To=%2B14155550100&From=%2B14155550199&Timeout=300&Twiml=%3CResponse%3E%3CPause%20length%3D%22600%22%2F%3E%3C%2FResponse%3E&StatusCallback=http%3A%2F%2F127.0.0.1%3A$RECV_PORT%2Fcb&StatusCallbackEvent=ringing&StatusCallbackEvent=answered&StatusCallbackEvent=completed"
  relay_calls() { # n → tokens file
    run "$LOADGEN" load -u "http://127.0.0.1:$R_PORT$API/Calls.json" -X POST \
      -H "Authorization: Basic $(printf %s "$AUTH" | base64 -w0)" -b "$RELAY_FORM" -r 0 -c 50 -n "$1" -d 120 >/dev/null
    sql "$WORK/relay.db" "SELECT token, sid, kaphila_id FROM calls WHERE status = 'queued' AND kaphila_id != ''" > "$WORK/tokens"
  }
  thr=() ins=() lat=() p50s=() cpu=
  for ((r = 1; r <= RUNS; r++)); do
    log "relay: throughput run $r/$RUNS"
    relay_calls "$RELAY_EVENTS"
    c0=$(cpu_snap "$R_PID")
    o=$(run "$LOADGEN" relay -u "http://127.0.0.1:$R_PORT" -f "$WORK/tokens" -l "$RECV_PORT" -r 0 -c 32 -d 60 -D 20)
    c1=$(cpu_snap "$R_PID")
    thr+=("$(kv "$o" e2e_rate)"); ins+=("$(kv "$o" in_rate)")
    detail "- relay closed loop (32 connections), run $r: $o"
    cpu=$(cpu_diff "$c0" "$c1" "$(kv "$o" matched)")
  done
  detail "- relay, CPU per event by thread (last run): $cpu"
  for ((r = 1; r <= RUNS; r++)); do
    log "relay: latency at 1,000 events/s, run $r/$RUNS"
    relay_calls 1000
    o=$(run "$LOADGEN" relay -u "http://127.0.0.1:$R_PORT" -f "$WORK/tokens" -l "$RECV_PORT" -r 1000 -c 64 -d 60 -D 20)
    lat+=("$(kv "$o" p99)"); p50s+=("$(kv "$o" p50)")
    detail "- relay at 1,000 events/s, run $r: $o"
  done
  THR=$(median "${thr[@]}") INS=$(median "${ins[@]}") LAT=$(median "${lat[@]}")
  row "Event relay, events in → callbacks received (events/s)" "$THR" "ingest only $INS" "$(calc "$THR / ($INS > 0 ? $INS : 1)" 2)" "≥ 5000" "$(yesno ge "$THR" 5000)"
  row "Event relay p99, event sent → callback received, at 1,000/s (ms)" "$LAT" "p50 $(median "${p50s[@]}")" "—" "< 2" "$(yesno le "$LAT" 2)"
  if [ -n "$RELAY_CONSOLE" ]; then
    detail "- the console stream received $(wc -c < "$WORK/console-stream.out") bytes ($(grep -c '^event: call' "$WORK/console-stream.out" || true) call events)"
  fi
  stop "$R_PID"
fi

# =============================================================================
# 5. Live calls: LIVE_CALLS calls looping Say/Gather/Pause, sim out of process
# =============================================================================
if want live; then
  section "5. live calls (kaphila-sim standalone, fast mode; TwiML served by loadgen)"
  # live_run RATE LABEL: a fresh simulator and twigate, LIVE_CALLS calls
  # created at RATE/s (0: as fast as twigate takes them), then a 22 s watch;
  # adds the rows.
  live_run() {
    local rate=$1 label=$2 o TL PER c0 c1 t0 t1 h0
    spawn "$WORK/sim-$rate.out" "$WORK/sim-$rate.log" "$SIMBIN" --key ak_live_demo --port 0 --fast
    SIM_PID=$SPAWNED
    printf '# %s --key ak_live_demo --port 0 --fast\n' "$SIMBIN" >> "$CMDS"
    for ((i = 0; i < 100; i++)); do grep -q listening "$WORK/sim-$rate.out" 2>/dev/null && break; sleep 0.05; done
    SIM_PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/sim-$rate.out")
    start_twigate "live-$rate" "$WORK/live-$rate.db" --set "kaphila.url=http://127.0.0.1:$SIM_PORT"
    L_PID=$TW_PID L_PORT=$TW_PORT
    sleep 1
    log "live: $LIVE_CALLS calls, created at ${rate}/s ($label)"
    c0=$(cpu_snap "$L_PID"); t0=$(date +%s.%N); h0=$(timer_snap "$L_PORT")
    o=$(run "$LOADGEN" live -u "http://127.0.0.1:$L_PORT$API/" -a "$AUTH" -l "$(free_port)" -n "$LIVE_CALLS" \
        -r "$rate" -c 64 -d 40 -h 22 -p 10 -g 10 -P "$L_PID")
    c1=$(cpu_snap "$L_PID"); t1=$(date +%s.%N); TL=$(timer_diff "$h0" "$(timer_snap "$L_PORT")")
    detail "- live calls ($label): $o"
    detail "- live calls ($label): twigate's own timers over the whole run (due → fired, /metrics twigate_timer_lateness_seconds): $TL"
    detail "- live calls ($label): twigate CPU over the whole run (one core = 100%): $(cpu_util "$c0" "$c1" "$(calc "$t1 - $t0" 3)")"
    detail "- live calls ($label): twigate threads $(find /proc/"$L_PID"/task -mindepth 1 -maxdepth 1 | wc -l), open fds $(find /proc/"$L_PID"/fd -mindepth 1 -maxdepth 1 | wc -l), kaphila-sim RSS $(($(rss_kb "$SIM_PID") / 1024)) MB"
    PER=$(kv "$o" per_call_kb)
    row "Live calls ($label): RSS per live call, $(kv "$o" alive_at_end) of $LIVE_CALLS looping (KB)" "$PER" "RSS $(($(kv "$o" rss0_kb) / 1024)) → $(($(kv "$o" rss_peak_kb) / 1024)) MB" "—" "< 20" \
      "$(if [ "$(kv "$o" alive_at_end)" -ge "$LIVE_CALLS" ] && le "$PER" 20; then echo yes; else echo NO; fi)"
    row "Live calls ($label): twigate's timers, due → fired, whole run (p99 / max bucket, ms)" \
      "≤ $(kv "$TL" p99_le_ms) / ≤ $(kv "$TL" max_le_ms)" "$(kv "$TL" fired) timers, $(kv "$TL" over_50ms) over 50 ms" "—" "all ≤ 50" \
      "$(yesno test "$(kv "$TL" over_50ms)" = 0 -a "$(kv "$TL" fired)" -gt 0)"
    row "Live calls ($label): Pause → next TwiML fetch, lateness p99 / max (ms)" "$(kv "$o" late_p99) / $(kv "$o" late_max)" "$(kv "$o" pauses) pauses, ramp $(kv "$o" ramp_s) s" "—" "all ≤ 50" \
      "$(yesno test "$(kv "$o" late_over_50)" = 0 -a "$(kv "$o" pauses)" -gt 0)"
    stop "$L_PID" 3; stop "$SIM_PID"
  }
  # 500 creates/s spreads the 10,000 calls' 20-second loops evenly (500
  # loops/s), as independent calls would be; the second run creates them
  # as fast as twigate takes them, so their loops run in step (bursts).
  live_run "$LIVE_RATE" "spread"
  live_run 0 "burst"
fi

# =============================================================================
# 6. Growth: 1M calls vs an empty database; list pages at 1M
# =============================================================================
if want growth; then
  log "growth: seeding $GROWTH_ROWS calls"
  make_db empty 0
  make_db big "$GROWTH_ROWS"
  section "6. growth"
  start_twigate empty "$WORK/empty.db"; E_PID=$TW_PID E_PORT=$TW_PORT
  start_twigate big "$WORK/big.db"; B_PID=$TW_PID B_PORT=$TW_PORT
  E_SID=$(sql "$WORK/empty.db" "SELECT sid FROM calls ORDER BY id LIMIT 1")
  B_SID=$(sql "$WORK/big.db" "SELECT sid FROM calls ORDER BY id LIMIT 1 OFFSET $((GROWTH_ROWS / 2))")
  export BENCH_AUTH=$AUTH BENCH_BODY=$FORM_HANGUP
  for p in "$E_PORT" "$B_PORT"; do
    BENCH_DIR=$BENCH wrk -t2 -c50 -d1s -s "$BENCH/wrk/fetch.lua" "http://127.0.0.1:$p$API/Calls/$E_SID.json" >/dev/null || true
  done
  ef=() bf=() ec=() bc=()
  for ((r = 1; r <= RUNS; r++)); do
    log "growth: run $r/$RUNS"
    ef+=("$(wrk_rps "$(wrk_run "http://127.0.0.1:$E_PORT$API/Calls/$E_SID.json" -t2 -c50 -d"${SECS}s" -s "$BENCH/wrk/fetch.lua")")")
    bf+=("$(wrk_rps "$(wrk_run "http://127.0.0.1:$B_PORT$API/Calls/$B_SID.json" -t2 -c50 -d"${SECS}s" -s "$BENCH/wrk/fetch.lua")")")
    ec+=("$(wrk_rps "$(wrk_run "http://127.0.0.1:$E_PORT$API/Calls.json" -t2 -c50 -d"${SECS}s" --timeout 10s -s "$BENCH/wrk/create.lua")")")
    wait_drained "$WORK/empty.db" 30 || true
    bc+=("$(wrk_rps "$(wrk_run "http://127.0.0.1:$B_PORT$API/Calls.json" -t2 -c50 -d"${SECS}s" --timeout 10s -s "$BENCH/wrk/create.lua")")")
    wait_drained "$WORK/big.db" 30 || true
  done
  detail "- growth fetch req/s: empty ${ef[*]}; $GROWTH_ROWS ${bf[*]}. create calls/s: empty ${ec[*]}; $GROWTH_ROWS ${bc[*]}"
  EF=$(median "${ef[@]}") BF=$(median "${bf[@]}") EC=$(median "${ec[@]}") BC=$(median "${bc[@]}")
  row "Fetch with $GROWTH_ROWS calls (req/s)" "$BF" "empty DB $EF" "$(calc "$BF / $EF" 2)" "≥ 0.80 × empty" "$(yesno ge "$(calc "$BF / $EF" 4)" 0.8)"
  row "Create with $GROWTH_ROWS calls (calls/s)" "$BC" "empty DB $EC" "$(calc "$BC / $EC" 2)" "≥ 0.80 × empty" "$(yesno ge "$(calc "$BC / $EC" 4)" 0.8)"
  # List pages: 50 calls with Status=busy (10% of the rows). Page 1,000 by the
  # PageToken twigate puts in next_page_uri (PA + the SID of the previous
  # page's last call; checked below against page 0's own next_page_uri), and
  # by Page=1000 alone (the offset fallback).
  L=http://127.0.0.1:$B_PORT$API/Calls.json
  next0=$(curl -sf -u "$AUTH" "$L?Status=busy&PageSize=50" | sed -n 's/.*"next_page_uri": *"\([^"]*\)".*/\1/p')
  tok0=PA$(sql "$WORK/big.db" "SELECT sid FROM calls WHERE account_sid = '$AC' AND status = 'busy' ORDER BY id DESC LIMIT 1 OFFSET 49")
  [[ "$next0" == *"PageToken=$tok0"* ]] || { echo "bench: page token scheme changed: $next0" >&2; exit 1; }
  tok999=PA$(sql "$WORK/big.db" "SELECT sid FROM calls WHERE account_sid = '$AC' AND status = 'busy' ORDER BY id DESC LIMIT 1 OFFSET $((999 * 50 - 1))")
  authh="Authorization: Basic $(printf %s "$AUTH" | base64 -w0)"
  list() { run "$LOADGEN" load -u "$1" -H "$authh" -r 0 -c 1 -n 300 -d 60; }
  o1=$(list "$L?Status=busy&PageSize=50")
  o2=$(list "$L?Status=busy&PageSize=50&Page=1000&PageToken=$tok999")
  o3=$(list "$L?Status=busy&PageSize=50&Page=1000")
  for o in "$o1" "$o2" "$o3"; do [ "$(kv "$o" ok)" = 300 ] || { echo "bench: list failed: $o" >&2; exit 1; }; done
  detail "- list, 300 sequential requests each: first page: $o1"
  detail "- list page 1000 by PageToken: $o2"
  detail "- list page 1000 by Page only (offset): $o3"
  row "List page 0, PageSize=50 Status=busy, $GROWTH_ROWS calls (p50 / p99 ms)" "$(kv "$o1" p50) / $(kv "$o1" p99)" "—" "—" "< 5" "$(yesno le "$(kv "$o1" p50)" 5)"
  row "List page 1,000 via next_page_uri token (p50 / p99 ms)" "$(kv "$o2" p50) / $(kv "$o2" p99)" "—" "—" "< 5" "$(yesno le "$(kv "$o2" p50)" 5)"
  row "List page 1,000 via Page=1000 only, offset (p50 / p99 ms)" "$(kv "$o3" p50) / $(kv "$o3" p99)" "—" "—" "< 5" "$(yesno le "$(kv "$o3" p50)" 5)"
  stop "$E_PID"; stop "$B_PID"
  unset BENCH_AUTH BENCH_BODY
fi

# =============================================================================
# 7. Footprint: idle RSS, start-up to serving
# =============================================================================
if want footprint; then
  section "7. footprint"
  # Production shape: an external Kaphila (nothing is asked of it while idle).
  make_db foot 0
  start_twigate idle "$WORK/foot.db" --set kaphila.url=http://127.0.0.1:9
  sleep 1
  IDLE=$(rss_kb "$TW_PID")
  stop "$TW_PID"
  start_twigate idlesim "$WORK/foot-sim.db"
  sleep 1
  IDLE_SIM=$(rss_kb "$TW_PID")
  stop "$TW_PID"
  row "Idle RSS, external Kaphila (MB)" "$(calc "$IDLE / 1024" 1)" "with built-in sim $(calc "$IDLE_SIM / 1024" 1)" "—" "< 20" "$(yesno le "$IDLE" 20480)"
  SP=$(free_port)
  o=$(run "$LOADGEN" startup -u "http://127.0.0.1:$SP/healthz" -n 20 -- "$BIN" --config "$WORK/idle.conf" \
      --set "listen.port=$SP" --set kaphila.url=http://127.0.0.1:9)
  detail "- start-up, exec → first 200 from /healthz, 20 runs, existing empty database: $o"
  row "Start-up to serving /healthz (ms, median of 20)" "$(kv "$o" p50)" "—" "—" "< 100" "$(yesno le "$(kv "$o" p50)" 100)"
fi

# =============================================================================
# 8. MP3 encoding of recording media (src/mp3.c on LAME, what rec-mp3 runs)
# =============================================================================
if want mp3; then
  section "8. mp3"
  MP3BENCH=$BDIR/bench/mp3bench
  run cc -std=c11 -O2 -Wall -Wextra -I"$ROOT/include" -o "$MP3BENCH" "$BENCH/mp3bench.c" \
    "$BDIR/libtwigate.a" -lmp3lame -lm >&2
  R=() S=()
  for ((i = 0; i < RUNS; i++)); do
    o=$(run "$MP3BENCH" "$MP3_SECONDS" 8000 1)
    R+=("$(kv "$o" ratio)")
    o2=$(run "$MP3BENCH" 60 44100 2)
    S+=("$(kv "$o2" ratio)")
  done
  detail "- MP3 encode (mp3_encode_wav, a generated WAV in /tmp → MP3 in /tmp): 8 kHz mono $MP3_SECONDS s of audio, $RUNS runs: ${R[*]} s of audio per CPU second (last: $o); 44.1 kHz stereo 60 s: ${S[*]} (last: $o2)"
  M=$(median "${R[@]}")
  row "MP3 encode, 8 kHz mono (s of audio per CPU s)" "$M" "44.1 kHz stereo $(median "${S[@]}")" "—" "> 300 (1 h in < 12 s)" "$(yesno ge "$M" 300)"
fi

# =============================================================================
# 9. Kaphila's request budget: requests per call, and a run against the limit
# =============================================================================
if want budget; then
  section "9. budget (Kaphila requests per call; the scheduler against a small limit)"
  # TwiML for the actions, served by python3's static server (GET only: the
  # documents ask for method="GET").
  mkdir -p "$WORK/twiml"
  echo '<Response><Say>Thank you.</Say><Hangup/></Response>' > "$WORK/twiml/ivr-action.xml"
  echo '<Response><Hangup/></Response>' > "$WORK/twiml/hangup.xml"
  TWIML_PORT=$(free_port)
  spawn "$WORK/twiml.out" "$WORK/twiml.log" python3 -m http.server --bind 127.0.0.1 \
    --directory "$WORK/twiml" "$TWIML_PORT"
  TWIML_PID=$SPAWNED
  printf '# TwiML actions: python3 -m http.server --bind 127.0.0.1 --directory twiml %s\n' "$TWIML_PORT" >> "$CMDS"
  for ((i = 0; i < 100; i++)); do curl -sf "http://127.0.0.1:$TWIML_PORT/hangup.xml" -o /dev/null && break; sleep 0.05; done
  TW_URL=http://127.0.0.1:$TWIML_PORT
  start_twigate budget "$WORK/budget.db"
  U_PID=$TW_PID U_PORT=$TW_PORT U_SIM=$TW_SIM
  U_CREATE="http://127.0.0.1:$U_PORT$API/Calls.json"
  # budget_scenario NAME MINIMUM TWIML [digits]: BUDGET_CALLS calls of TWIML,
  # the simulator's per-key counters reset before; with digits, each call
  # gets them once its <Gather> has reached the simulator.
  budget_scenario() {
    local name=$1 min=$2 twiml=$3 digits=${4:-} sids=() sid i k o per pressed='' n0
    run curl -sf -X POST "http://127.0.0.1:$U_SIM/sim/keys/reset" -o /dev/null
    n0=$(sql "$WORK/budget.db" "SELECT coalesce(max(id), 0) FROM calls")
    for ((i = 0; i < BUDGET_CALLS; i++)); do
      sid=$(curl -sf -u "$AUTH" "$U_CREATE" --data-urlencode "To=+1415555$(printf %04d $((1000 + i)))" \
        --data-urlencode From=+14155550199 --data-urlencode "Twiml=$twiml" |
        sed -n 's/.*"sid": *"\(CA[0-9a-f]*\)".*/\1/p')
      [ -z "$sid" ] || sids+=("$sid")
    done
    printf '# %s calls: POST Calls.json Twiml=%q\n' "$BUDGET_CALLS" "$twiml" >> "$CMDS"
    if [ -n "$digits" ]; then
      # Press the key once the Gather's prompt has reached the simulator
      # (/gather, or /voice for a nested <Say>): keys pressed before the
      # Gather listens are ignored (docs/twiml.md). Bounded wait per call.
      pressed=0
      for sid in "${sids[@]}"; do
        for ((k = 0; k < 100; k++)); do
          curl -sf "http://127.0.0.1:$U_SIM/sim/calls/$sid" | grep -q '"path":"/\(gather\|voice\)"' && break
          sleep 0.05
        done
        curl -sf -X POST "http://127.0.0.1:$U_SIM/sim/calls/$sid/digits" -d "Digits=$digits" -o /dev/null &&
          pressed=$((pressed + 1))
      done
      printf '# each call: POST /sim/calls/{CallSid}/digits Digits=%s once its prompt (/gather or /voice) is in its transcript\n' "$digits" >> "$CMDS"
    fi
    wait_drained "$WORK/budget.db" 30 || detail "- budget $name: calls still live after 30 s"
    o=$(curl -sf "http://127.0.0.1:$U_SIM/sim/keys/1")
    k=$(sim_key_summary "$o")
    done1=$(sql "$WORK/budget.db" "SELECT count(*) FROM calls WHERE id > $n0 AND status = 'completed'")
    per=$(calc "$(kv "$k" limited) / ${#sids[@]}" 2)
    detail "- budget $name: ${#sids[@]} calls created, $done1 completed${digits:+, $pressed pressed $digits}; Kaphila requests: $k"
    # Met: no more than the minimum, and every call went all the way (a call
    # that skipped a step would cost less).
    row "Kaphila requests per call, $name" "$per" "minimum $min" "$(calc "$per / $min" 2)" "= minimum" \
      "$(yesno test "$(calc "$per * 100" 0)" -le "$((min * 100))" -a "$done1" = "$BUDGET_CALLS" -a "${pressed:-$BUDGET_CALLS}" = "$BUDGET_CALLS" -a "$(kv "$k" limited)" -ge "$((min * BUDGET_CALLS))")"
  }
  log "budget: requests per call, $BUDGET_CALLS calls per scenario"
  # Minimum of each: /makecall to dial; one /voice per <Say> (Kaphila speaks
  # a text per request); a <Gather> with a nested <Say> is one /gather with
  # that prompt; the <Record> beep is one /play (playBeep defaults to true;
  # Kaphila records the whole call, so the window needs no request); <Hangup/>
  # is one /hangup. Status reads (GET /calls/…) are not rate limited.
  budget_scenario "Say+Hangup" 3 '<Response><Say>Hello from the budget run.</Say><Hangup/></Response>'
  budget_scenario "Gather IVR" 4 "<Response><Gather numDigits=\"1\" timeout=\"10\" method=\"GET\" action=\"$TW_URL/ivr-action.xml\"><Say>Press one.</Say></Gather></Response>" 1
  budget_scenario "Record" 3 "<Response><Record maxLength=\"1\" method=\"GET\" action=\"$TW_URL/hangup.xml\"/></Response>"
  stop "$U_PID"

  # The scheduler against the limit: BUDGET_BURST Say+Hangup calls created at
  # once on a key allowed 60 requests per 5 s (3 requests a call: far more
  # than one window allows).
  LIM=60 WIN_MS=5000
  TWSET=(--set "sim.rate_limit=$LIM" --set "sim.rate_window_ms=$WIN_MS")
  # kaphila.rate_window_ms is twigate's side of the budget (issue 19); a tree
  # without it runs without (its 429s are then the figure).
  if "$BIN" --config "$WORK/budget.conf" --set "kaphila.rate_window_ms=$WIN_MS" --print-config >/dev/null 2>&1; then
    TWSET+=(--set "kaphila.rate_window_ms=$WIN_MS"); TWWIN="kaphila.rate_window_ms=$WIN_MS"
  else
    TWWIN="kaphila.rate_window_ms: n/a (not in this tree)"
  fi
  start_twigate budget-limit "$WORK/budget-limit.db" "${TWSET[@]}"
  U_PID=$TW_PID U_PORT=$TW_PORT U_SIM=$TW_SIM
  log "budget: $BUDGET_BURST calls at once, limit $LIM per $WIN_MS ms"
  SAY_FORM="To=%2B14155550100&From=%2B14155550199&Twiml=%3CResponse%3E%3CSay%3EHello.%3C%2FSay%3E%3CHangup%2F%3E%3C%2FResponse%3E"
  t0=$(date +%s.%N)
  o=$(run "$LOADGEN" load -u "http://127.0.0.1:$U_PORT$API/Calls.json" -X POST \
      -H "Authorization: Basic $(printf %s "$AUTH" | base64 -w0)" -b "$SAY_FORM" -r 0 -c "$BUDGET_BURST" \
      -n "$BUDGET_BURST" -d 30)
  # Until no call is live, 45 s at most; a queue waiting for the window may
  # stand still for a whole window, so a stall is 2 windows (wait_drained's 3 s
  # would end the run early), and stuck calls end it then.
  drained=no last=-1 still0=$t0
  while :; do
    n=$(live_count "$WORK/budget-limit.db"); now=$(date +%s.%N)
    [ "$n" = 0 ] && { drained=yes; break; }
    [ "$n" = "$last" ] || { last=$n; still0=$now; }
    ge "$now - $still0" "2 * $WIN_MS / 1000" && break
    ge "$now - $t0" 45 && break
    sleep 0.2
  done
  t1=$(date +%s.%N)
  [ "$drained" = yes ] || t1=$still0   # stalled: the run is the time until the last change
  T=$(calc "$t1 - $t0" 2)
  k=$(sim_key_summary "$(curl -sf "http://127.0.0.1:$U_SIM/sim/keys/1")")
  used=$(kv "$k" limited)
  # A sliding window lets LIM through at once and LIM more each WIN_MS.
  allowed=$(awk -v t="$T" -v w="$WIN_MS" -v l="$LIM" 'BEGIN {printf "%d", l * (int(t * 1000 / w) + 1)}')
  ideal=$(awk -v n="$BUDGET_BURST" -v w="$WIN_MS" -v l="$LIM" 'BEGIN {r = 3 * n; printf "%.1f", (r > l ? int((r - 1) / l) : 0) * w / 1000}')
  completed=$(sql "$WORK/budget-limit.db" "SELECT count(*) FROM calls WHERE status = 'completed'")
  statuses=$(sql "$WORK/budget-limit.db" "SELECT status || ' ' || count(*) FROM calls GROUP BY status" | tr '\n' ' ')
  detail "- budget run ($TWWIN, sim.rate_limit=$LIM, sim.rate_window_ms=$WIN_MS): $BUDGET_BURST creates at once: $o"
  detail "- budget run: ${T} s from the first create until no call was live (all ended: $drained); the budget allows the $((3 * BUDGET_BURST)) requests in ${ideal} s at best; calls by status: $statuses; Kaphila requests: $k"
  row "Budget run: Kaphila requests used / allowed, $BUDGET_BURST calls at once, $LIM per $((WIN_MS / 1000)) s" "$used / $allowed" \
    "$completed of $BUDGET_BURST completed, $(kv "$k" voice) said their <Say>, in $T s (best ${ideal} s)" "$(calc "$used / $allowed" 2)" \
    "0 × 429, all completed" \
    "$(yesno test "$(kv "$k" rate_limited)" = 0 -a "$completed" = "$BUDGET_BURST" -a "$(kv "$k" voice)" = "$BUDGET_BURST")"
  row "Budget run: 429s from the simulator" "$(kv "$k" rate_limited)" "$TWWIN" "—" "0" "$(yesno test "$(kv "$k" rate_limited)" = 0)"
  stop "$U_PID"; stop "$TWIML_PID"
fi

# =============================================================================
# 10. CPU per operation by thread group, alternated with BENCH_BASELINE
# =============================================================================
if want cpu; then cpu_section; fi

# =============================================================================
# 11. Two twigates on one PostgreSQL, beside one on PostgreSQL and one on SQLite
# =============================================================================
if want cluster; then cluster_section; fi

write_report
