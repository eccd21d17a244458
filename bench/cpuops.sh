# shellcheck shell=bash
# bench/cpuops.sh — section 10 of bench/run.sh (BENCH_ONLY=cpu): CPU per
# operation, by thread group, for the tree under test and, with
# BENCH_BASELINE=<rev>, for that revision built in a temporary git worktree in
# the same run; the two alternate run by run, and the figures are medians.
# Sourced by run.sh after lib.sh (uses its row/detail/median/calc helpers).
#
# Each build gets two twigates, each on its own kaphila-sim *process* (so the
# simulator's CPU is never mixed with twigate's: the built-in one shares
# twigate's HTTP thread names):
#   ops   — database seeded with CPU_ROWS calls; sim in fast mode. Fetch
#           (cached: one call; uncached: a random one), create (wrk, CPU
#           counted until every call has ended: a create's whole life), and
#           the TwiML step: calls of STEP_SAYS (<Say>, <Pause length=0>)
#           minus calls of the Pauses alone, per <Say> (Say → /voice →
#           tts.played → next verb).
#   relay — sim that never rings: only the load generator's events move calls.
# Thread groups of twigate (names set with pthread_setname_np in src/):
# http = MHD-* and http-*, engine = engine, store = engine-bio and store-*,
# other = the rest (main, rec-mp3, console); total = all of twigate's threads.
# sim = the kaphila-sim process; loadgen = wrk or loadgen (user + system,
# from bash's `time`), all per operation in µs.
# The floor (bench/httpfloor.c, once per round): one HTTP exchange with
# libmicrohttpd and libcurl alone, the request handed to another thread and
# resumed as twigate's are; a <Hangup/> call is FLOOR_CREATE_SERVED exchanges
# twigate serves (the create, five Kaphila events) and FLOOR_CREATE_SENT it
# sends (/makecall, /hangup), a relayed event one of each.
FLOOR_CREATE_SERVED=6 FLOOR_CREATE_SENT=2

CPU_ROWS=${BENCH_CPU_ROWS:-$FETCH_ROWS}
STEP_CALLS=${BENCH_STEP_CALLS:-500}
STEP_SAYS=10
BASE_REV=${BENCH_BASELINE:-}
CPU_OPS="fetch_cached fetch_uncached create step relay"
HZ=$(getconf CLK_TCK)

# Twigate's threads in groups: "total http engine store" in clock ticks.
cpu_groups() {
  awk '{t += $2; if ($1 ~ /^(MHD|http)/) h += $2; else if ($1 == "engine") e += $2;
        else if ($1 ~ /(bio|store)/) s += $2}
       END {printf "%d %d %d %d\n", t, h, e, s}' <<< "$1"
}
proc_ticks() { cut -d')' -f2 "/proc/$1/stat" | awk '{print $12 + $13}'; }

# ops_begin TAG / ops_end TAG OP OPS LOADGEN_SECONDS: appends "total http
# engine store sim loadgen" in µs per operation to $WORK/cpu.TAG.OP.
ops_begin() {
  local t=$1
  OB_TW=$(cpu_groups "$(cpu_snap "${CO_TW[$t]}")")
  OB_SIM=$(proc_ticks "${CO_SIM[$t]}")
}
ops_end() {
  local t=$1 op=$2 n=$3 lg=$4 a s
  a=$(cpu_groups "$(cpu_snap "${CO_TW[$t]}")")
  s=$(proc_ticks "${CO_SIM[$t]}")
  awk -v b="$OB_TW" -v a="$a" -v s0="$OB_SIM" -v s1="$s" -v lg="$lg" -v n="$n" -v hz="$HZ" 'BEGIN {
    split(b, B, " "); split(a, A, " "); n = n > 0 ? n : 1; k = 1e6 / hz / n
    printf "%.1f %.1f %.1f %.1f %.1f %.1f\n", (A[1]-B[1])*k, (A[2]-B[2])*k, (A[3]-B[3])*k, (A[4]-B[4])*k,
      (s1-s0)*k, lg * 1e6 / n }' >> "$WORK/cpu.$t.$op"
}
# timed FILE CMD...: runs CMD (stdout kept, stderr dropped) and writes its
# CPU seconds (user + system, children included) to FILE.
timed() {
  local f=$1 TIMEFORMAT='%3U %3S'; shift
  { time "$@" 2>/dev/null; } 2> "$f.raw"
  awk '{print $1 + $2}' "$f.raw" > "$f"
}

# A kaphila-sim process of build TAG's tree; sets SIM_PID SIM_PORT.
cpu_sim() { # tag name [flags]
  local t=$1 name=$2 i; shift 2
  spawn "$WORK/$name.out" "$WORK/$name.log" "${CO_SIMBIN[$t]}" --key ak_live_demo --port 0 "$@"
  SIM_PID=$SPAWNED
  printf '# %s: %s --key ak_live_demo --port 0 %s\n' "$name" "${CO_SIMBIN[$t]#"$ROOT"/}" "$*" >> "$CMDS"
  for ((i = 0; i < 100; i++)); do grep -q listening "$WORK/$name.out" 2>/dev/null && break; sleep 0.05; done
  SIM_PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/$name.out")
  [ -n "$SIM_PORT" ] || { echo "bench: kaphila-sim $name did not start" >&2; exit 1; }
}

# cpu_start TAG BIN SIMBIN: the build's two twigates and their simulators.
declare -A CO_TW CO_SIM CO_PORT CO_SIMPORT CO_SIMBIN CO_RTW CO_RSIM CO_RPORT CO_RECV
cpu_start() {
  local t=$1 bin0=$BIN
  BIN=$2; CO_SIMBIN[$t]=$3
  log "cpu: $t: seeding $CPU_ROWS calls"
  make_db "cpu-$t" "$CPU_ROWS"
  cpu_sim "$t" "sim-ops-$t" --fast
  CO_SIM[$t]=$SIM_PID CO_SIMPORT[$t]=$SIM_PORT
  start_twigate "cpu-$t" "$WORK/cpu-$t.db" --set "kaphila.url=http://127.0.0.1:$SIM_PORT"
  CO_TW[$t]=$TW_PID CO_PORT[$t]=$TW_PORT
  cpu_sim "$t" "sim-relay-$t" --ring-ms 600000 --answer-ms 600000
  CO_RSIM[$t]=$SIM_PID
  start_twigate "cpu-relay-$t" "$WORK/cpu-relay-$t.db" --set "kaphila.url=http://127.0.0.1:$SIM_PORT"
  CO_RTW[$t]=$TW_PID CO_RPORT[$t]=$TW_PORT CO_RECV[$t]=$(free_port)
  BIN=$bin0
  detail "- CPU per operation, $t: twigate's threads $(cat /proc/"${CO_TW[$t]}"/task/*/comm | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')"
}

# BENCH_BASELINE: the revision, built -O2 -DNDEBUG in a git worktree under WORK.
cpu_build_baseline() {
  BASE_TREE=$WORK/baseline-src
  log "cpu: building the baseline $BASE_REV in $BASE_TREE"
  run git -C "$ROOT" worktree add --detach -q "$BASE_TREE" "$BASE_REV" >&2
  run make -C "$BASE_TREE" -j2 BUILD=build-bench OPT="-O2 -DNDEBUG" all >"$WORK/baseline-build.log" 2>&1 ||
    { tail -20 "$WORK/baseline-build.log" >&2; echo "bench: the baseline $BASE_REV does not build" >&2; exit 1; }
  BASE_DESC=$(git -C "$ROOT" rev-parse --short "$BASE_REV")
  [ "$BASE_DESC" = "$BASE_REV" ] || BASE_DESC="$BASE_REV ($BASE_DESC)"
}

cpu_run() { # tag
  local t=$1 hdr fp o n lg sids tw=${CO_PORT[$1]}
  hdr="Authorization: Basic $(printf %s "$AUTH" | base64 -w0)"
  fp=$API/Calls/$(sql "$WORK/cpu-$t.db" "SELECT sid FROM calls ORDER BY id LIMIT 1 OFFSET $((CPU_ROWS / 2))").json
  sids=$WORK/cpu-$t-sids.txt
  [ -s "$sids" ] || sql "$WORK/cpu-$t.db" "SELECT sid FROM calls" > "$sids"
  export BENCH_AUTH=$AUTH
  # fetch, cached (one call) and uncached (a random one of CPU_ROWS)
  ops_begin "$t"
  o=$(timed "$WORK/lg" wrk_run "http://127.0.0.1:$tw$fp" -t2 -c50 -d"${SECS}s" -s "$BENCH/wrk/fetch.lua")
  ops_end "$t" fetch_cached "$(( $(kv "$o" requests) - $(kv "$o" non2xx) ))" "$(cat "$WORK/lg")"
  ops_begin "$t"
  o=$(BENCH_SIDS=$sids BENCH_PREFIX=$API/Calls/ timed "$WORK/lg" wrk_run "http://127.0.0.1:$tw$fp" -t2 -c50 \
      -d"${SECS}s" -s "$BENCH/wrk/fetch_random.lua")
  ops_end "$t" fetch_uncached "$(( $(kv "$o" requests) - $(kv "$o" non2xx) ))" "$(cat "$WORK/lg")"
  # create: the CPU of each call's whole life (until no call is live)
  run curl -sf -X POST "http://127.0.0.1:${CO_SIMPORT[$t]}/sim/reset" -o /dev/null
  ops_begin "$t"
  o=$(BENCH_BODY=$FORM_HANGUP timed "$WORK/lg" wrk_run "http://127.0.0.1:$tw$API/Calls.json" -t2 -c50 \
      -d"${SECS}s" --timeout 10s -s "$BENCH/wrk/create.lua")
  wait_drained "$WORK/cpu-$t.db" 30 || detail "- CPU per operation, $t: creates still live after 30 s"
  n=$(( $(kv "$o" requests) - $(kv "$o" non2xx) ))
  ops_end "$t" create "$n" "$(cat "$WORK/lg")"
  printf '%s\n' "$(wrk_rps "$o")" >> "$WORK/cpu.$t.create_rate"
  # the TwiML step: STEP_CALLS calls of STEP_SAYS × <Say>a</Say><Pause
  # length="0"/>, then as many of STEP_SAYS × <Pause length="0"/>; the
  # difference per <Say> is one step. (The Pauses keep twigate from merging
  # consecutive <Say>s into one /voice: src/engine/exec_speech.c.)
  local says='' pauses='' kind body p0="%3CPause%20length%3D%220%22%2F%3E"
  for ((n = 0; n < STEP_SAYS; n++)); do says+="%3CSay%3Ea%3C%2FSay%3E$p0"; pauses+=$p0; done
  for kind in say hangup; do
    body="To=%2B14155550100&From=%2B14155550199&Twiml=%3CResponse%3E${says}%3CHangup%2F%3E%3C%2FResponse%3E"
    [ "$kind" = say ] || body="To=%2B14155550100&From=%2B14155550199&Twiml=%3CResponse%3E${pauses}%3CHangup%2F%3E%3C%2FResponse%3E"
    ops_begin "$t"
    timed "$WORK/lg" run "$LOADGEN" load -u "http://127.0.0.1:$tw$API/Calls.json" -X POST -H "$hdr" -b "$body" \
      -r 0 -c 50 -n "$STEP_CALLS" -d 60 > "$WORK/step.out"
    wait_drained "$WORK/cpu-$t.db" 30 || detail "- CPU per operation, $t: step calls still live after 30 s"
    ops_end "$t" "step_$kind" "$STEP_CALLS" "$(cat "$WORK/lg")"
  done
  paste -d' ' <(tail -1 "$WORK/cpu.$t.step_say") <(tail -1 "$WORK/cpu.$t.step_hangup") |
    awk -v k="$STEP_SAYS" '{for (i = 1; i <= 6; i++) printf "%.1f%s", ($i - $(i + 6)) / k, i < 6 ? " " : "\n"}' \
    >> "$WORK/cpu.$t.step"
  # relay: RELAY_EVENTS queued calls, then their events as fast as they go
  local rp=${CO_RPORT[$t]} recv=${CO_RECV[$t]} form
  form="To=%2B14155550100&From=%2B14155550199&Timeout=300&Twiml=%3CResponse%3E%3CPause%20length%3D%22600%22%2F%3E%3C%2FResponse%3E&StatusCallback=http%3A%2F%2F127.0.0.1%3A$recv%2Fcb&StatusCallbackEvent=ringing&StatusCallbackEvent=answered&StatusCallbackEvent=completed"
  run "$LOADGEN" load -u "http://127.0.0.1:$rp$API/Calls.json" -X POST -H "$hdr" -b "$form" -r 0 -c 50 \
    -n "$RELAY_EVENTS" -d 120 >/dev/null
  sql "$WORK/cpu-relay-$t.db" "SELECT token, sid, kaphila_id FROM calls WHERE status = 'queued' AND kaphila_id != ''" \
    > "$WORK/tokens-$t"
  CO_TW[r$t]=${CO_RTW[$t]} CO_SIM[r$t]=${CO_RSIM[$t]}
  ops_begin "r$t"
  o=$(timed "$WORK/lg" run "$LOADGEN" relay -u "http://127.0.0.1:$rp" -f "$WORK/tokens-$t" -l "$recv" -r 0 -c 32 -d 60 -D 20)
  ops_end "r$t" relay "$(kv "$o" matched)" "$(cat "$WORK/lg")"
  cat "$WORK/cpu.r$t.relay" > "$WORK/cpu.$t.relay"
  unset BENCH_AUTH
}

# Medians of each column: "total / http / engine / store / sim / loadgen".
cpu_median() { # tag op
  local i col=() v
  for ((i = 1; i <= 6; i++)); do
    mapfile -t v < <(awk -v c="$i" '{print $c}' "$WORK/cpu.$1.$2")
    col+=("$(calc "$(median "${v[@]}")" 0)")
  done
  echo "${col[*]}"
}

# The floor's rows: its medians, and the tree's create and relayed event
# against what their exchanges cost with nothing of twigate's around them.
cpu_floor_rows() {
  local svs sts sv st m fc fr
  mapfile -t svs < <(sed -n 's/.* server_us=\([^ ]*\).*/\1/p' "$WORK/cpu.floor")
  mapfile -t sts < <(sed -n 's/.* client_us=\([^ ]*\).*/\1/p' "$WORK/cpu.floor")
  [ "${#svs[@]}" -gt 0 ] || { detail "- HTTP floor: bench/httpfloor gave no figure"; return 0; }
  sv=$(median "${svs[@]}") st=$(median "${sts[@]}")
  detail "- HTTP floor runs (bench/httpfloor -s -n 20000 -c 32): $(tr '\n' ';' < "$WORK/cpu.floor")"
  row "HTTP floor per exchange, libmicrohttpd + libcurl alone (µs): served / sent" "$(calc "$sv" 1) / $(calc "$st" 1)" \
    "bench/httpfloor -s -c 32" "—" "—" "—"
  m=$(cpu_median tree create)
  fc=$(calc "$FLOOR_CREATE_SERVED * $sv + $FLOOR_CREATE_SENT * $st" 0)
  row "CPU per create vs its HTTP floor ($FLOOR_CREATE_SERVED served + $FLOOR_CREATE_SENT sent) (µs)" "${m%% *}" "floor $fc" \
    "$(calc "${m%% *} / $fc" 2)" "—" "—"
  m=$(cpu_median tree relay)
  fr=$(calc "$sv + $st" 0)
  row "CPU per relayed event vs its HTTP floor (1 served + 1 sent) (µs)" "${m%% *}" "floor $fr" \
    "$(calc "${m%% *} / $fr" 2)" "—" "—"
}

cpu_section() {
  section "0. CPU per operation (twigate and kaphila-sim processes per build; BENCH_BASELINE=${BASE_REV:-none})"
  local tags=(tree) t r op m b label
  cpu_start tree "$BIN" "$SIMBIN"
  if [ -n "$BASE_REV" ]; then
    cpu_build_baseline
    cpu_start base "$BASE_TREE/build-bench/twigate" "$BASE_TREE/build-bench/kaphila-sim"
    tags+=(base)
  fi
  HTTPFLOOR=$BDIR/bench/httpfloor
  run cc -std=c11 -O2 -Wall -Wextra -o "$HTTPFLOOR" "$BENCH/httpfloor.c" -lmicrohttpd -lcurl -lpthread >&2
  : > "$WORK/cpu.floor"
  # shellcheck disable=SC2153 # CPU_RUNS is set by bench/run.sh, which sources this file
  for ((r = 1; r <= CPU_RUNS; r++)); do
    for t in "${tags[@]}"; do
      log "cpu: run $r/$CPU_RUNS, $t"
      cpu_run "$t"
    done
    run "$HTTPFLOOR" -s -n 20000 -c 32 | awk '/^FLOOR/ {print}' >> "$WORK/cpu.floor"
  done
  for op in $CPU_OPS; do
    label=$op
    case $op in
      fetch_cached) label="fetch, cached" ;; fetch_uncached) label="fetch, uncached (random of $CPU_ROWS)" ;;
      create) label="create (a <Hangup/> call's whole life)" ;; step) label="TwiML step (Say → tts.played → next verb)" ;;
      relay) label="relayed event (event in → callback out)" ;;
    esac
    m=$(cpu_median tree "$op")
    for t in "${tags[@]}"; do
      detail "- CPU per $op, $t, runs (total http engine store sim loadgen µs): $(tr '\n' ';' < "$WORK/cpu.$t.$op")"
    done
    if [ -n "$BASE_REV" ]; then
      b=$(cpu_median base "$op")
      local tgt="—" met="—" ratio
      ratio=$(awk -v a="${m%% *}" -v b="${b%% *}" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
      case $op in create | relay) tgt="twigate total ≤ 0.50 × $BASE_REV"; met=$(yesno le "$ratio" 0.5) ;; esac
      row "CPU per $label (µs): twigate total / http / engine / store / sim / loadgen" "${m// / \/ }" \
        "$BASE_DESC: ${b// / \/ }" "$ratio" "$tgt" "$met"
      detail "- CPU per $op, sim ratio to $BASE_REV: $(awk -v a="$(cut -d' ' -f5 <<< "$m")" -v b="$(cut -d' ' -f5 <<< "$b")" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "— (no CPU)"}')"
    else
      row "CPU per $label (µs): twigate total / http / engine / store / sim / loadgen" "${m// / \/ }" "—" "—" \
        "(BENCH_BASELINE for ratios)" "—"
    fi
  done
  cpu_floor_rows
  for t in "${tags[@]}"; do
    detail "- CPU per operation, $t: create rate of the wrk runs $(tr "\n" " " < "$WORK/cpu.$t.create_rate")(calls/s)"
    stop "${CO_TW[$t]}"; stop "${CO_RTW[$t]}"; stop "${CO_SIM[$t]}"; stop "${CO_RSIM[$t]}"
  done
}
