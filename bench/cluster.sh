# shellcheck shell=bash disable=SC2153  # (SECS, RUNS, SUSTAIN… are run.sh's)
# bench/cluster.sh — section 11 of bench/run.sh (BENCH_ONLY=cluster): twigate
# on PostgreSQL, two instances on one database (issue 21, docs/scale-out.md
# §12), beside one instance on PostgreSQL and one on SQLite in the same run,
# so every figure is a same-run ratio. Sourced by run.sh after lib.sh.
#
# PostgreSQL 15 from Debian (scripts/install-deps.sh bench) runs from a fresh
# initdb under WORK, as the `postgres` system user when we are root (postgres
# refuses root; setpriv execs it, so the pid we hold is the postmaster's),
# on 127.0.0.1 and a free port, trust authentication (loopback, throwaway),
# fsync on and synchronous_commit off: like twigate's SQLite (WAL,
# synchronous=NORMAL) a power cut may lose the last commits, never the
# database; pg_stat_statements loaded, to count statements per operation.
#
# The load is spread by the load generators themselves — two wrk processes
# (one thread and half the connections each) or loadgen's -U (odd
# connections to the second instance) — not by HAProxy: on this 2-core
# machine a balancer would take CPU from the instances that a production
# balancer takes on its own host, and what is measured is twigate and
# PostgreSQL. Each instance has its built-in simulator in fast mode, as the
# SQLite figures do, so the create run's Kaphila events go back to the
# instance that dialled; the relay run is where events land on either
# instance (loadgen alternates connections, as a round-robin balancer would,
# so half of them reach the instance that does not own the call and go
# through the inbox: docs/scale-out.md §5).
#
# Per-operation database cost: pg_stat_statements (statements, execution
# time), pg_stat_database (commits, blocks), pg_stat_wal (WAL bytes) and the
# CPU of every postgres process from /proc, before and after each run.
#
# Order: postgres; per configuration (sqlite, pg1, pg2) its instances on a
# fresh database for the sustained create, then the fetch runs on what it
# wrote (and 5 s idle on PostgreSQL; nginx after pg2's, for the baseline);
# then per configuration (and pg2p) fresh instances for the relay. Every
# process goes through lib.sh's spawn, so bench_cleanup stops what an early
# exit leaves; postgres is stopped last with a fast shutdown (pg_stop).

PG_BIN=${TWIGATE_PG_BIN:-/usr/lib/postgresql/15/bin}
# cluster.poll_ms of the relay's second two-instance run (pg2p; the others
# run with twigate's default, 200): how often an owner reads its inbox.
CL_POLL_MS=${BENCH_CLUSTER_POLL_MS:-10}

# ---- the server ------------------------------------------------------------

pg_start() {
  local d=$WORK/pg i as=()
  mkdir -p "$d/sock"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$d"
    as=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  "${as[@]}" "$PG_BIN/initdb" -D "$d/data" -U postgres --auth=trust -E UTF8 --locale=C -N \
    > "$d/initdb.log" 2>&1 || { cat "$d/initdb.log" >&2; echo "bench: initdb failed" >&2; exit 1; }
  PG_PORT=$(free_port)
  PG_OPTS=(-c listen_addresses=127.0.0.1 -c "port=$PG_PORT" -c "unix_socket_directories=$d/sock"
           -c synchronous_commit=off -c max_connections=200 -c shared_buffers=256MB
           -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top
           -c logging_collector=off -c log_min_messages=warning)
  spawn "$d/out" "$d/log" "${as[@]}" "$PG_BIN/postgres" -D "$d/data" "${PG_OPTS[@]}"
  PG_PID=$SPAWNED
  printf '# PostgreSQL: initdb -D pg/data -U postgres --auth=trust -E UTF8 --locale=C -N; postgres -D pg/data %s   (as the postgres user)\n' "${PG_OPTS[*]}" >> "$CMDS"
  for ((i = 0; i < 200; i++)); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 1 && break
    kill -0 "$PG_PID" 2>/dev/null || { cat "$d/log" >&2; echo "bench: postgres died" >&2; exit 1; }
    sleep 0.05
  done
  sql pg:postgres "CREATE ROLE twigate LOGIN; CREATE EXTENSION pg_stat_statements" >/dev/null
}

# pg_newdb NAME: an empty database owned by twigate; prints twigate's db.url.
pg_newdb() {
  sql pg:postgres "CREATE DATABASE $1 OWNER twigate" >/dev/null
  echo "postgresql://twigate@127.0.0.1:$PG_PORT/$1"
}

# CPU ticks of the postmaster and every process it forked (backends, WAL
# writer, checkpointer, autovacuum workers): the live ones' own, plus the
# postmaster's cutime + cstime, where an exited child's ticks go once reaped.
pg_ticks() {
  # cat, not awk's own file list: a process that exits after the glob makes
  # mawk stop at once, before its END.
  cat /proc/[0-9]*/stat 2>/dev/null |
    awk -v p="$PG_PID" '$1 == p {t += $14 + $15 + $16 + $17} $4 == p {t += $14 + $15} END {printf "%d\n", t}'
}

# pg_snap DB: "stmts=N exec_ms=N xact=N blks=N wal=N cpu=N" (statements of
# DB's twigate role and their execution time; commits; blocks read + hit;
# WAL bytes of the whole server; postgres CPU ticks).
pg_snap() {
  local q
  q="SELECT 'stmts=' || coalesce(sum(s.calls), 0) || ' exec_ms=' || round(coalesce(sum(s.total_exec_time), 0)::numeric, 1)
            || ' xact=' || (SELECT xact_commit FROM pg_stat_database WHERE datname = '$1')
            || ' blks=' || (SELECT blks_read + blks_hit FROM pg_stat_database WHERE datname = '$1')
            || ' wal=' || (SELECT wal_bytes FROM pg_stat_wal)
       FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.userid
      WHERE d.datname = '$1' AND r.rolname = 'twigate'"
  echo "$(sql pg:postgres "$q") cpu=$(pg_ticks)"
}
# pg_cost BEFORE AFTER OPS → "stmts=N exec_us=N xact=N blks=N wal_b=N cpu_us=N" per op.
pg_cost() {
  awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(a, A, "[ =]"); split(b, B, " "); n = n > 0 ? n : 1
    for (i = 1; i < length(A); i += 2) va[A[i]] = A[i + 1]
    for (i in B) { split(B[i], kv, "="); vb[kv[1]] = kv[2] }
    printf "stmts=%.1f exec_us=%.0f xact=%.2f blks=%.0f wal_b=%.0f cpu_us=%.0f",
      (vb["stmts"] - va["stmts"]) / n, (vb["exec_ms"] - va["exec_ms"]) * 1000 / n,
      (vb["xact"] - va["xact"]) / n, (vb["blks"] - va["blks"]) / n,
      (vb["wal"] - va["wal"]) / n, (vb["cpu"] - va["cpu"]) * 1e6 / hz / n }'
}
# pg_top DB OPS: the statements with the most execution time since the last
# reset, per operation (calls, µs), for the details.
pg_top() {
  sql pg:postgres "SELECT round(s.calls::numeric / $2, 2) || ' × ' || round((s.total_exec_time * 1000 / s.calls)::numeric, 0) || ' µs: ' || regexp_replace(left(s.query, 70), '\s+', ' ', 'g')
      FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.userid
     WHERE d.datname = '$1' AND r.rolname = 'twigate' ORDER BY s.total_exec_time DESC LIMIT 8" | sed 's/^/    - /'
}
pg_stop() { # a fast shutdown (SIGINT to the postmaster alone), then stop() for the rest
  local i
  kill -INT "$PG_PID" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
  stop "$PG_PID"
}
pg_reset() { sql pg:postgres "SELECT pg_stat_statements_reset()" >/dev/null; }

# ---- instances -------------------------------------------------------------

# cl_start CONF NAME [--set ...]: CONF sqlite|pg1|pg2; CL_PORTS, CL_PIDS, CL_DB
# (the sql() spec: a file or pg:NAME) for a fresh database.
cl_start() {
  local conf=$1 name=$2 url i; shift 2
  CL_PORTS=() CL_PIDS=()
  local poll=()
  [ "$conf" != pg2p ] || poll=(--set "cluster.poll_ms=$CL_POLL_MS")
  case $conf in
    sqlite)
      CL_DB=$WORK/$name.db
      start_twigate "$name" "$CL_DB" "$@"; CL_PORTS=("$TW_PORT"); CL_PIDS=("$TW_PID") ;;
    pg1|pg2|pg2p)
      url=$(pg_newdb "$name"); CL_DB=pg:$name
      for ((i = 1; i <= ${conf:2:1}; i++)); do
        start_twigate "$name-$i" "$WORK/$name-$i.db" --set "db.url=$url" \
          --set "cluster.instance_id=$name-$i" "${poll[@]}" "$@"
        CL_PORTS+=("$TW_PORT"); CL_PIDS+=("$TW_PID")
      done ;;
  esac
}
cl_stop() { local p; for p in "${CL_PIDS[@]}"; do stop "$p"; done; }
tw_ticks() { local p t=0; for p in "${CL_PIDS[@]}"; do t=$((t + $(proc_ticks "$p"))); done; echo "$t"; }

# wrk_spread SECONDS SCRIPT PATH: wrk on every instance of CL_PORTS at once,
# 2 threads and 50 connections in all; one WRK line (counts summed, the
# longest duration, the worst p50/p99 of the processes).
wrk_spread() {
  local secs=$1 script=$2 path=$3 n=${#CL_PORTS[@]} i pids=()
  for ((i = 0; i < n; i++)); do
    wrk_run "http://127.0.0.1:${CL_PORTS[$i]}$path" -t$((2 / n)) -c$((50 / n)) -d"${secs}s" --timeout 10s \
      -s "$script" > "$WORK/wrk.$i" &
    pids+=($!)
  done
  wait "${pids[@]}"
  cat "$WORK"/wrk.[0-9]* | awk '{for (i = 2; i <= NF; i++) {split($i, kv, "="); k[i] = kv[1]
      if (kv[1] ~ /^(duration_us|p50_us|p99_us|max_us)$/) { if (kv[2] + 0 > v[i] + 0) v[i] = kv[2] + 0 } else v[i] += kv[2] } }
    END {printf "WRK"; for (i = 2; i in k; i++) printf " %s=%d", k[i], v[i]; print ""}'
  rm -f "$WORK"/wrk.[0-9]*
}
cl_urls() { # PATH → loadgen's -u URL [-U URL2]
  printf -- '-u\nhttp://127.0.0.1:%s%s\n' "${CL_PORTS[0]}" "$1"
  [ ${#CL_PORTS[@]} -lt 2 ] || printf -- '-U\nhttp://127.0.0.1:%s%s\n' "${CL_PORTS[1]}" "$1"
}

# ---- the runs --------------------------------------------------------------

# BENCH_CLUSTER_CONFS: a subset while developing (details only: the rows need
# all three); BENCH_CLUSTER_NO_RELAY=1 skips the relay runs (details only too).
CONFS=${BENCH_CLUSTER_CONFS:-sqlite pg1 pg2}
declare -A CL_LABEL=([sqlite]="SQLite, 1 instance" [pg1]="PostgreSQL, 1 instance" [pg2]="PostgreSQL, 2 instances"
                     [pg2p]="PostgreSQL, 2 instances, cluster.poll_ms=$CL_POLL_MS")
declare -A CR_RATE CR_ROWS CR_OK CR_LIVE CR_SID CR_COST RL_THR RL_P99 RL_P50 RL_COST FE_RPS FE_COST IDLE_COST

# cl_create CONF: sustained creates on a fresh database; the same database
# then serves the fetch runs (CR_SID: a completed call).
cl_create() {
  local conf=$1 o rows0 rows1 ok s0 s1 t0 t1
  cl_start "$conf" "cl_create_$conf"
  export BENCH_AUTH=$AUTH BENCH_BODY=$FORM_HANGUP
  wrk_spread 1 "$BENCH/wrk/create.lua" "$API/Calls.json" >/dev/null
  wait_drained "$CL_DB" 20 || true
  log "cluster: create sustained ${SUSTAIN}s, ${CL_LABEL[$conf]}"
  rows0=$(sql "$CL_DB" "SELECT count(*) FROM calls")
  [ "$conf" = sqlite ] || { pg_reset; s0=$(pg_snap "cl_create_$conf"); }
  t0=$(tw_ticks)
  o=$(wrk_spread "$SUSTAIN" "$BENCH/wrk/create.lua" "$API/Calls.json")
  ok=$(( $(kv "$o" requests) - $(kv "$o" non2xx) ))
  CR_RATE[$conf]=$(wrk_rps "$o")
  wait_drained "$CL_DB" 60 || detail "- cluster create (${CL_LABEL[$conf]}): calls still live after the drain; twigate's warnings: $(grep -h -v ' INFO ' "$WORK"/cl_create_"$conf"*.log | sed 's/^[^ ]* //; s/CA[0-9a-f]\{32\}/CA…/g; s/RQ[0-9a-f]*/RQ…/g' | sort | uniq -c | sort -rn | head -3 | tr -s ' ' | tr '\n' ';')"
  CR_LIVE[$conf]=$(live_count "$CL_DB")
  t1=$(tw_ticks)
  rows1=$(sql "$CL_DB" "SELECT count(*) FROM calls")
  CR_ROWS[$conf]=$((rows1 - rows0)) CR_OK[$conf]=$ok
  detail "- cluster create sustained (${CL_LABEL[$conf]}): $o; rows added $((rows1 - rows0)), 201s $ok; completed $(sql "$CL_DB" "SELECT count(*) FROM calls WHERE status = 'completed'") of $rows1; twigate CPU per call (all instances, the call's whole life) $(calc "($t1 - $t0) * 1e6 / $(getconf CLK_TCK) / ($ok > 0 ? $ok : 1)" 0) µs"
  if [ "$conf" != sqlite ]; then
    s1=$(pg_snap "cl_create_$conf")
    CR_COST[$conf]=$(pg_cost "$s0" "$s1" "$ok")
    detail "- cluster create (${CL_LABEL[$conf]}): PostgreSQL per call (its whole life): ${CR_COST[$conf]}; the statements with the most time, per call:"
    detail "$(pg_top "cl_create_$conf" "$ok")"
  fi
  CR_SID[$conf]=$(sql "$CL_DB" "SELECT sid FROM calls WHERE status = 'completed' ORDER BY id LIMIT 1 OFFSET $((rows1 / 2))")
  # Updates of a calls row that change an indexed column cannot be HOT (heap
  # only): each writes an entry in every index of the table.
  [ "$conf" = sqlite ] || detail "- cluster create (${CL_LABEL[$conf]}): calls table after the run: $(sql "$CL_DB" "SELECT 'updates ' || n_tup_upd || ', HOT ' || n_tup_hot_upd || ', ' || (SELECT count(*) FROM pg_indexes WHERE tablename = 'calls') || ' indexes, ' || pg_size_pretty(pg_total_relation_size('calls')) FROM pg_stat_user_tables WHERE relname = 'calls'")"
  unset BENCH_BODY
}

# cl_fetch CONF: fetch one ended call (the call cache's path) from every
# instance at once, RUNS times; FE_RPS. Needs cl_create's instances.
cl_fetch() {
  local conf=$1 r rs=() o
  local fpath=$API/Calls/${CR_SID[$conf]}.json s0 s1
  for ((r = 1; r <= RUNS; r++)); do
    [ "$conf" = sqlite ] || { pg_reset; s0=$(pg_snap "cl_create_$conf"); }
    o=$(wrk_spread "$SECS" "$BENCH/wrk/fetch.lua" "$fpath")
    rs+=("$(wrk_rps "$o")")
    detail "- cluster fetch of one ended call (${CL_LABEL[$conf]}), run $r: $o"
    if [ "$conf" != sqlite ]; then
      s1=$(pg_snap "cl_create_$conf")
      FE_COST[$conf]=$(pg_cost "$s0" "$s1" "$(kv "$o" requests)")
      detail "- cluster fetch (${CL_LABEL[$conf]}), run $r: PostgreSQL per fetch ${FE_COST[$conf]}$([ "$r" -lt "$RUNS" ] || printf '; the statements with the most time, per fetch:\n%s' "$(pg_top "cl_create_$conf" "$(kv "$o" requests)")")"
    fi
  done
  FE_RPS[$conf]=$(median "${rs[@]}")
}

# cl_idle CONF: the database's cost of instances doing nothing (leases,
# adoption passes, inbox polls, the reconciler), per instance and second.
cl_idle() { # CONF DB
  local conf=$1 db=$2 s0 s1 n=${#CL_PORTS[@]} secs=5
  s0=$(pg_snap "$db"); sleep "$secs"; s1=$(pg_snap "$db")
  IDLE_COST[$conf]=$(pg_cost "$s0" "$s1" "$((n * secs))")
  detail "- cluster idle (${CL_LABEL[$conf]}, $secs s, no request, $(sql "pg:$db" "SELECT count(*) FROM calls") calls stored): PostgreSQL per instance and second: ${IDLE_COST[$conf]}"
}

# cl_relay CONF: twigates whose simulator never rings; loadgen's events are
# the only thing moving the calls (as section 4).
cl_relay() {
  local conf=$1 r o thr=() lat=() p50s=() s0 s1 c0 c1 t0 t1 recv form
  recv=$(free_port)
  cl_start "$conf" "cl_relay_$conf" --set sim.ring_ms=600000 --set sim.answer_ms=600000 --set sim.fast=false
  form="To=%2B14155550100&From=%2B14155550199&Timeout=300&Twiml=%3CResponse%3E%3CPause%20length%3D%22600%22%2F%3E%3C%2FResponse%3E&StatusCallback=http%3A%2F%2F127.0.0.1%3A$recv%2Fcb&StatusCallbackEvent=ringing&StatusCallbackEvent=answered&StatusCallbackEvent=completed"
  cl_relay_calls() { # n: created on every instance, all dialled, then their tokens
    local i
    mapfile -t u < <(cl_urls "$API/Calls.json")
    run "$LOADGEN" load "${u[@]}" -X POST -H "Authorization: Basic $(printf %s "$AUTH" | base64 -w0)" \
      -b "$form" -r 0 -c 50 -n "$1" -d 120 >/dev/null
    for ((i = 0; i < 100; i++)); do
      [ "$(sql "$CL_DB" "SELECT count(*) FROM calls WHERE status = 'queued' AND kaphila_id = ''")" = 0 ] && break
      sleep 0.1
    done
    sql "$CL_DB" "SELECT token, sid, kaphila_id FROM calls WHERE status = 'queued' AND kaphila_id != ''" > "$WORK/cl-tokens"
  }
  mapfile -t ev < <(cl_urls "")
  for ((r = 1; r <= RUNS; r++)); do
    log "cluster: relay throughput, ${CL_LABEL[$conf]}, run $r/$RUNS"
    cl_relay_calls "$RELAY_EVENTS"
    [ "$conf" = sqlite ] || { pg_reset; s0=$(pg_snap "cl_relay_$conf"); }
    c0=$(cpu_snap "${CL_PIDS[0]}"); t0=$(date +%s.%N)
    o=$(run "$LOADGEN" relay "${ev[@]}" -f "$WORK/cl-tokens" -l "$recv" -r 0 -c 32 -d 60 -D 10)
    c1=$(cpu_snap "${CL_PIDS[0]}"); t1=$(date +%s.%N)
    thr+=("$(kv "$o" e2e_rate)")
    # The engine thread's share of a core: well under 100 % while the
    # throughput is capped means it waits (for the database), not computes.
    detail "- cluster relay closed loop (${CL_LABEL[$conf]}, 32 connections), run $r: $o; first instance's threads (one core = 100 %): $(cpu_util "$c0" "$c1" "$(calc "$t1 - $t0" 3)")"
    if [ "$conf" != sqlite ]; then
      s1=$(pg_snap "cl_relay_$conf")
      RL_COST[$conf]=$(pg_cost "$s0" "$s1" "$(kv "$o" ok)")
    fi
  done
  if [ "$conf" != sqlite ]; then
    detail "- cluster relay (${CL_LABEL[$conf]}): PostgreSQL per event (last run): ${RL_COST[$conf]}; the statements with the most time, per event:"
    detail "$(pg_top "cl_relay_$conf" "$(kv "$o" ok)")"
  fi
  for ((r = 1; r <= RUNS; r++)); do
    log "cluster: relay at 1,000 events/s, ${CL_LABEL[$conf]}, run $r/$RUNS"
    cl_relay_calls 1000
    o=$(run "$LOADGEN" relay "${ev[@]}" -f "$WORK/cl-tokens" -l "$recv" -r 1000 -c 64 -d 60 -D 10)
    lat+=("$(kv "$o" p99)"); p50s+=("$(kv "$o" p50)")
    detail "- cluster relay at 1,000 events/s (${CL_LABEL[$conf]}), run $r: $o"
  done
  RL_THR[$conf]=$(median "${thr[@]}") RL_P99[$conf]=$(median "${lat[@]}") RL_P50[$conf]=$(median "${p50s[@]}")
  [ "$conf" != pg2p ] || cl_idle "$conf" "cl_relay_$conf"
  # The owner's inbox poll (pg_cluster.c), as the server plans it once the
  # prepared statement goes generic: its cost grows with the calls table.
  [ "$conf" != pg2 ] || detail "- cluster relay: the inbox poll's generic plan ($(sql "$CL_DB" "SELECT count(*) FROM calls") calls stored): $(sql "$CL_DB" "SET plan_cache_mode = force_generic_plan; PREPARE q(text, bigint) AS SELECT i.id, i.call_sid, i.kind, i.body FROM call_inbox i JOIN calls c ON c.sid = i.call_sid WHERE c.owner = \$1 ORDER BY i.id LIMIT \$2::bigint; EXPLAIN EXECUTE q('cl_relay_pg2-1', 256)" | sed 's/  */ /g; s/(cost=[^)]*)//' | tr '\n' ';')"
  cl_stop
}

ratio() { if ge "$2" 1; then calc "$1 / $2" 2; else echo "n/a"; fi; }   # A B → A/B, n/a when B is 0

cluster_section() {
  local c o ng=() r fpath
  section "11. cluster: two twigates on one PostgreSQL (and one on PostgreSQL, one on SQLite)"
  [ -x "$PG_BIN/postgres" ] || { echo "bench: PostgreSQL 15 missing ($PG_BIN); run scripts/install-deps.sh bench" >&2; exit 2; }
  pg_start
  detail "- cluster: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), ${PG_OPTS[*]}; instances' cluster.poll_ms ${CL_POLL_MS:-default}; load average before the section: $(cut -d' ' -f1-3 /proc/loadavg)"
  for c in $CONFS; do
    cl_create "$c"
    cl_fetch "$c"
    [ "$c" = sqlite ] || cl_idle "$c" "cl_create_$c"
    if [ "$c" = pg2 ]; then
      # nginx serving the bytes twigate answers for the same call, same run
      fpath=$API/Calls/${CR_SID[$c]}.json
      mkdir -p "$WORK/cl-www$(dirname "$fpath")"
      curl -sf -u "$AUTH" "http://127.0.0.1:${CL_PORTS[0]}$fpath" -o "$WORK/cl-www$fpath"
      start_nginx "$WORK/cl-www" "$fpath"
      cmp -s "$WORK/cl-www$fpath" <(curl -s -u "$AUTH" "http://127.0.0.1:${CL_PORTS[1]}$fpath") ||
        { echo "bench: the two instances answer different bytes for $fpath" >&2; exit 1; }
      for ((r = 1; r <= RUNS; r++)); do
        o=$(wrk_run "http://127.0.0.1:$NGINX_PORT$fpath" -t2 -c50 -d"${SECS}s" -s "$BENCH/wrk/fetch.lua")
        ng+=("$(wrk_rps "$o")")
      done
      stop "$NGINX_PID"
      detail "- cluster fetch: nginx serving the same $(wc -c < "$WORK/cl-www$fpath") bytes, req/s per run: ${ng[*]}"
    fi
    cl_stop
    unset BENCH_AUTH
  done
  # pg2p: the two instances again, polling their inboxes every CL_POLL_MS
  [ -n "${BENCH_CLUSTER_NO_RELAY:-}" ] || for c in $CONFS $([[ " $CONFS " != *" pg2 "* ]] || echo pg2p); do cl_relay "$c"; done
  # The rows compare all three configurations; a subset leaves its details only.
  if [ "$CONFS" != "sqlite pg1 pg2" ] || [ -n "${BENCH_CLUSTER_NO_RELAY:-}" ]; then pg_stop; return 0; fi
  NG=$(median "${ng[@]}")
  local S=${CR_RATE[sqlite]}
  row "Cluster: create sustained ${SUSTAIN} s, 2 instances on PostgreSQL (calls/s)" "${CR_RATE[pg2]}" \
    "1 on PostgreSQL ${CR_RATE[pg1]}; 1 on SQLite $S" "$(ratio "${CR_RATE[pg2]}" "$S") × SQLite" "≥ 1000" "$(yesno ge "${CR_RATE[pg2]}" 1000)"
  for c in $CONFS; do
    row "Cluster: rows stored / 201s, ${CL_LABEL[$c]}" "${CR_ROWS[$c]} / ${CR_OK[$c]}" "create ${CR_RATE[$c]}/s; calls live after the drain ${CR_LIVE[$c]}" "—" \
      "rows ≥ 201s (≤ +50 in flight), all ended" \
      "$(yesno test "${CR_ROWS[$c]}" -ge "${CR_OK[$c]}" -a "$((CR_ROWS[$c] - CR_OK[$c]))" -le 50 -a "${CR_LIVE[$c]}" = 0)"
  done
  row "Cluster: event relay, 2 instances on PostgreSQL (events/s)" "${RL_THR[pg2]}" \
    "1 on PostgreSQL ${RL_THR[pg1]}; 1 on SQLite ${RL_THR[sqlite]}" "$(ratio "${RL_THR[pg2]}" "${RL_THR[sqlite]}") × SQLite" "≥ 3000" "$(yesno ge "${RL_THR[pg2]}" 3000)"
  row "Cluster: relay p99 at 1,000 events/s, 2 instances on PostgreSQL (ms)" "${RL_P99[pg2]}" \
    "p50 ${RL_P50[pg2]}; 1 on PostgreSQL ${RL_P99[pg1]}; 1 on SQLite ${RL_P99[sqlite]}" "—" "< 20" "$(yesno le "${RL_P99[pg2]}" 20)"
  row "Cluster: relay, 2 instances on PostgreSQL, cluster.poll_ms=$CL_POLL_MS (events/s; p99 at 1,000/s, ms)" "${RL_THR[pg2p]}; ${RL_P99[pg2p]}" \
    "p50 at 1,000/s ${RL_P50[pg2p]}" "—" "≥ 3000; < 20" "$(if ge "${RL_THR[pg2p]}" 3000 && le "${RL_P99[pg2p]}" 20; then echo yes; else echo NO; fi)"
  row "Cluster: fetch a call, 2 instances on PostgreSQL (req/s)" "${FE_RPS[pg2]}" \
    "nginx $NG; 1 on PostgreSQL ${FE_RPS[pg1]}; 1 on SQLite ${FE_RPS[sqlite]}" "$(calc "${FE_RPS[pg2]} / ($NG > 0 ? $NG : 1)" 2) × nginx" "≥ 0.50 × nginx" \
    "$(yesno ge "$(calc "${FE_RPS[pg2]} / ($NG > 0 ? $NG : 1)" 4)" 0.5)"
  for c in pg1 pg2 pg2p; do
    [ "$c" != pg2p ] || { row "Cluster: PostgreSQL per relayed event, ${CL_LABEL[$c]}" "$(kv " ${RL_COST[$c]}" stmts) statements, $(kv " ${RL_COST[$c]}" cpu_us) µs CPU" \
      "$(kv " ${RL_COST[$c]}" xact) commits, $(kv " ${RL_COST[$c]}" wal_b) B WAL, $(kv " ${RL_COST[$c]}" exec_us) µs executing" "—" "(docs/scale-out.md §12)" "—"; continue; }
    row "Cluster: PostgreSQL per fetch of an ended call, ${CL_LABEL[$c]}" "$(kv " ${FE_COST[$c]}" stmts) statements, $(kv " ${FE_COST[$c]}" cpu_us) µs CPU" \
      "$(kv " ${FE_COST[$c]}" exec_us) µs executing" "—" "(docs/scale-out.md §12)" "—"
    row "Cluster: PostgreSQL per create, ${CL_LABEL[$c]}" "$(kv " ${CR_COST[$c]}" stmts) statements, $(kv " ${CR_COST[$c]}" cpu_us) µs CPU" \
      "$(kv " ${CR_COST[$c]}" xact) commits, $(kv " ${CR_COST[$c]}" wal_b) B WAL, $(kv " ${CR_COST[$c]}" exec_us) µs executing" "—" "(docs/scale-out.md §12)" "—"
    row "Cluster: PostgreSQL per relayed event, ${CL_LABEL[$c]}" "$(kv " ${RL_COST[$c]}" stmts) statements, $(kv " ${RL_COST[$c]}" cpu_us) µs CPU" \
      "$(kv " ${RL_COST[$c]}" xact) commits, $(kv " ${RL_COST[$c]}" wal_b) B WAL, $(kv " ${RL_COST[$c]}" exec_us) µs executing" "—" "(docs/scale-out.md §12)" "—"
  done
  for c in pg2 pg2p; do
    row "Cluster: PostgreSQL per idle instance and second, ${CL_LABEL[$c]}" "$(kv " ${IDLE_COST[$c]}" stmts) statements, $(kv " ${IDLE_COST[$c]}" cpu_us) µs CPU" \
      "$(kv " ${IDLE_COST[$c]}" xact) commits, $(kv " ${IDLE_COST[$c]}" exec_us) µs executing" "—" "(docs/scale-out.md §12)" "—"
  done
  detail "- cluster: load average after the section: $(cut -d' ' -f1-3 /proc/loadavg)"
  pg_stop
}
