# shellcheck shell=bash disable=SC2034  # (variables used by the sourcing scripts)
# bench/lib.sh — helpers shared by bench/run.sh and bench/profile.sh: the
# processes they start (each in its own process group, stopped by id), twigate
# instances on throwaway databases, seeding, and the load generators' output.
# Sourced after `set -euo pipefail`; bench_init sets the paths.

# The demo account of conf/twigate.conf (public, for the simulator only).
AC=ACde000000000000000000000000000001
TOKEN=de000000000000000000000000000001
AUTH=$AC:$TOKEN
API=/2010-04-01/Accounts/$AC
FORM_HANGUP='To=%2B14155550100&From=%2B14155550199&Twiml=%3CResponse%3E%3CHangup%2F%3E%3C%2FResponse%3E'
PIDS=()
T_START=$(date +%s)

# bench_init BUILD_DIR: ROOT BENCH BIN SIMBIN WORK CMDS LOADGEN; builds loadgen.
bench_init() {
  ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  BENCH=$ROOT/bench
  BUILD=$1
  case "$BUILD" in /*) BDIR=$BUILD ;; *) BDIR=$ROOT/$BUILD ;; esac
  BIN=$BDIR/twigate
  SIMBIN=$BDIR/kaphila-sim
  local f t
  for f in "$BIN" "$SIMBIN"; do
    [ -x "$f" ] || { echo "bench: $f missing; run make bench" >&2; exit 2; }
  done
  # BENCH_TOOLS: a run of sections that need fewer tools (BENCH_ONLY=mp3).
  for t in ${BENCH_TOOLS:-wrk nginx sqlite3 curl cc node}; do
    command -v "$t" >/dev/null || { echo "bench: $t missing; run scripts/install-deps.sh bench" >&2; exit 2; }
  done
  WORK=$(mktemp -d /tmp/twigate-bench.XXXXXX)
  chmod 755 "$WORK"          # nginx workers (user nobody) read the static file
  CMDS=$WORK/commands.md
  : > "$CMDS"
  LOADGEN=$BDIR/bench/loadgen
  mkdir -p "$(dirname "$LOADGEN")"
  # loadgen is one program in several files (bench/loadgen.h says which).
  cc -std=c11 -O2 -Wall -Wextra -o "$LOADGEN" "$BENCH"/loadgen*.c
}

# Stops what is still running; keeps WORK when BENCH_KEEP=1.
bench_cleanup() {
  local p
  [ ${#PIDS[@]} -gt 0 ] || PIDS=()
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done
  [ -n "${WORK:-}" ] || return 0
  # BENCH_BASELINE's temporary worktree (bench/cpuops.sh)
  [ -z "${BASE_TREE:-}" ] || git -C "$ROOT" worktree remove --force "$BASE_TREE" 2>/dev/null || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: work dir kept: $WORK"; else rm -rf "$WORK"; fi
}

# Starts "$@" in its own process group (so its children go with it).
spawn() { # out err cmd...
  local out=$1 err=$2; shift 2
  setsid "$@" >"$out" 2>"$err" &
  SPAWNED=$!
  PIDS+=("$SPAWNED")
}

stop() { # pid [grace seconds]
  local p=$1 g=${2:-5} i keep=()
  for i in "${PIDS[@]}"; do [ "$i" = "$p" ] || keep+=("$i"); done
  PIDS=("${keep[@]}")
  kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || return 0
  for ((i = 0; i < g * 20; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  kill -KILL -- "-$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

# A port nobody listens on, below Linux's ephemeral range (32768+) so that no
# outgoing connection holds it either.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

log() { printf '[%4ds] %s\n' $(($(date +%s) - T_START)) "$*" >&2; }

# Records the exact command in the commands list, then runs it.
run() {
  printf '%q ' "$@" >> "$CMDS"; printf '\n' >> "$CMDS"
  "$@"
}
section() { printf '\n### %s\n\n' "$1" >> "$CMDS"; }

# key=value lookup in a line of loadgen/wrk output.
kv() { sed -n "s/.*[[:space:]]$2=\([^[:space:]]*\).*/\1/p" <<< " $1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
calc() { awk "BEGIN {printf \"%.${2:-1}f\", $1}"; }
ge() { awk "BEGIN {exit !($1 >= $2)}"; }
le() { awk "BEGIN {exit !($1 <= $2)}"; }

# timer_snap PORT: twigate's twigate_timer_lateness_seconds histogram as
# "le=count ..." (cumulative buckets, +Inf included).
timer_snap() {
  curl -s "http://127.0.0.1:$1/metrics" |
    sed -n 's/^twigate_timer_lateness_seconds_bucket{le="\([^"]*\)"} \([0-9]*\).*/\1=\2/p' | tr '\n' ' '
}
# timer_diff BEFORE AFTER → "fired=N over_50ms=N p99_le_ms=N max_le_ms=N": the
# timers fired between the snapshots, how many were over 50 ms late, and
# the bucket bounds (ms, or inf) holding the p99 and the latest one.
timer_diff() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    n = split(b, B, " "); split(a, A, " ")
    for (i = 1; i <= n; i++) { split(B[i], kv, "="); le[i] = kv[1]; cb[i] = kv[2]; ca[i] = 0 }
    for (i in A) { split(A[i], kv, "="); for (j = 1; j <= n; j++) if (le[j] == kv[1]) ca[j] = kv[2] }
    tot = cb[n] - ca[n]; over = 0; p99 = "-"; mx = "-"
    for (j = 1; j <= n; j++) {
      d = cb[j] - ca[j]
      if (le[j] == "0.05") over = tot - d
      ms = le[j] == "+Inf" ? "inf" : le[j] * 1000
      if (p99 == "-" && d >= 0.99 * tot) p99 = ms
      if (mx == "-" && d >= tot) mx = ms
    }
    printf "fired=%d over_50ms=%d p99_le_ms=%s max_le_ms=%s", tot, over, p99, mx
  }'
}

# sql DB [QUERY]: DB is a SQLite file, or pg:NAME, a database of the cluster
# section's PostgreSQL (bench/cluster.sh) as its superuser; unaligned output.
sql() {
  case $1 in
    pg:*) local d=${1#pg:}; shift
          "$PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$d" ${1:+-c "$1"} ;;
    *) sqlite3 -cmd ".timeout 10000" "$@" ;;
  esac
}

# sim_key_summary JSON: the simulator's GET /sim/keys/{id} answer as
# "limited=N makecall=N voice=N gather=N play=N hangup=N other=N rate_limited=N"
# (limited: accepted on the six rate-limited endpoints; docs/simulator.md).
sim_key_summary() {
  python3 -c 'import json, sys
k = json.loads(sys.argv[1])["key"]; q = k["requests"]
print("limited=%d makecall=%d voice=%d gather=%d play=%d hangup=%d other=%d rate_limited=%d" % (
    k["limitedAccepted"], q["makecall"], q["voice"], q["gather"], q["play"], q["hangup"],
    q["other"], k["rateLimited"]))' "$1"
}

# ---- twigate instances -----------------------------------------------------

# start_twigate NAME DB [--set k=v]...: sets TW_PID TW_PORT TW_SIM (sim port or "").
start_twigate() {
  local name=$1 db=$2 i; shift 2
  cat > "$WORK/$name.conf" <<EOF
[listen]
address = 127.0.0.1
port = 0
# the load generators and the built-in simulator's event posts all come from
# 127.0.0.1: as Kaphila's egress addresses would be in production, exempt it
# from listen.max_per_client (docs/security.md §3)
limit_exempt = 127.0.0.1
[db]
path = $db
[kaphila]
url = sim
[sim]
fast = true
[shutdown]
grace_ms = 1000
[webhook]
# the bench's webhook receivers are on loopback (refused by default)
allow = 127.0.0.0/8
[account.demo]
sid = $AC
auth_token = $TOKEN
kaphila_key = ak_live_demo
EOF
  # An older twigate (BENCH_BASELINE) without listen.limit_exempt runs without.
  "$BIN" --config "$WORK/$name.conf" --print-config >/dev/null 2>&1 || sed -i '/^limit_exempt/d' "$WORK/$name.conf"
  if [ -z "${CONF_SHOWN:-}" ]; then
    CONF_SHOWN=1
    { echo "# every twigate's config file (db.path varies):"; sed 's/^/#   /' "$WORK/$name.conf"; } >> "$CMDS"
  fi
  printf '# twigate %s: %s --config %s %s   (db.path=%s)\n' \
    "$name" "${BIN#"$ROOT"/}" "$name.conf" "$*" "$(basename "$db")" >> "$CMDS"
  spawn "$WORK/$name.out" "$WORK/$name.log" "$BIN" --config "$WORK/$name.conf" "$@"
  TW_PID=$SPAWNED
  for ((i = 0; i < 200; i++)); do
    grep -q 'listening on' "$WORK/$name.out" 2>/dev/null && break
    kill -0 "$TW_PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; echo "bench: twigate $name died" >&2; exit 1; }
    sleep 0.05
  done
  TW_PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/$name.out")
  TW_SIM=$(sed -n 's/^Kaphila: http:\/\/127\.0\.0\.1:\([0-9]*\) (built-in.*/\1/p' "$WORK/$name.out")
  [ -n "$TW_PORT" ] || { echo "bench: twigate $name did not start" >&2; exit 1; }
}

# CPU seconds by thread name of a process ("engine 1.23 MHD-worker 2.5 ...").
cpu_snap() {
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(cat "$t/comm" 2>/dev/null)" "$(cut -d')' -f2 "$t/stat" 2>/dev/null | awk '{print $12 + $13}')"
  done | awk '{a[$1] += $2} END {for (k in a) printf "%s %d\n", k, a[k]}' | sort
}
cpu_diff() { # before after ops → "thread=µs/op ..."
  local hz; hz=$(getconf CLK_TCK)
  join <(echo "$1") <(echo "$2") | awk -v n="$3" -v hz="$hz" \
    '{d = ($3 - $2) / hz; if (d > 0) printf "%s=%.0fµs ", $1, d * 1e6 / (n > 0 ? n : 1)}'
}

cpu_util() { # before after seconds → "thread=NN% ..." (of one core)
  local hz; hz=$(getconf CLK_TCK)
  join <(echo "$1") <(echo "$2") | awk -v s="$3" -v hz="$hz" \
    '{d = ($3 - $2) / hz; if (d > 0) printf "%s=%.0f%% ", $1, 100 * d / s}'
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

live_count() { sql "$1" "SELECT count(*) FROM calls WHERE status IN ('queued','ringing','in-progress')"; }
# Waits until no call is live (0), or gives up (1) after max_seconds or when
# the number of live calls has not moved for 3 s (calls stuck: reported).
wait_drained() { # db max_seconds
  local i n last=-1 still=0
  for ((i = 0; i < $2 * 5; i++)); do
    n=$(live_count "$1")
    [ "$n" = 0 ] && return 0
    if [ "$n" = "$last" ]; then still=$((still + 1)); [ $still -ge 15 ] && return 1; else still=0; fi
    last=$n
    sleep 0.2
  done
  return 1
}

# One real call through the simulator, so that seeded rows copy a row twigate wrote.
template_call() { # port db
  curl -sf -u "$AUTH" "http://127.0.0.1:$1$API/Calls.json" --data-urlencode To=+14155550100 \
    --data-urlencode From=+14155550199 --data-urlencode 'Twiml=<Response><Hangup/></Response>' \
    -o /dev/null
  wait_drained "$2" 10 || { echo "bench: template call did not complete" >&2; exit 1; }
}

# seed DB N: N completed/busy/no-answer/failed/canceled calls copied from the
# first row (the template), one transaction, 1 s apart in date_created,
# statuses 70/10/10/5/5 %, 10,000 distinct To numbers.
seed() {
  sql "$1" <<EOF
PRAGMA synchronous=OFF;
PRAGMA cache_size=-262144;
BEGIN;
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < $2),
     t AS (SELECT * FROM calls ORDER BY id LIMIT 1)
INSERT INTO calls(sid, account_sid, parent_call_sid, to_num, from_num, status, direction,
                  answered_by, date_created, date_updated, start_time, end_time, answered_at,
                  duration, queue_time, kaphila_id, token, cb_seq, params)
SELECT printf('CA%08x%024x', (i * 2654435761) % 4294967296, i), t.account_sid, '',
       printf('+1415555%04d', i % 10000), t.from_num,
       CASE WHEN i % 20 < 14 THEN 'completed' WHEN i % 20 < 16 THEN 'busy'
            WHEN i % 20 < 18 THEN 'no-answer' WHEN i % 20 = 18 THEN 'failed' ELSE 'canceled' END,
       t.direction, '', t.date_created - ($2 + 1 - i) * 1000, t.date_created - ($2 + 1 - i) * 1000 + 400,
       t.date_created - ($2 + 1 - i) * 1000 + 50, t.date_created - ($2 + 1 - i) * 1000 + 400,
       t.date_created - ($2 + 1 - i) * 1000 + 200, 0, 0, printf('seed.%d', i),
       printf('seed%040d', i), t.cb_seq, t.params
FROM g, t;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
EOF
}

# make_db NAME ROWS: a database with one real call plus ROWS seeded ones.
make_db() {
  local db=$WORK/$1.db
  start_twigate "$1-seed" "$db"
  template_call "$TW_PORT" "$db"
  stop "$TW_PID"
  section "database $1.db: one call through the simulator, then $2 rows seeded"
  if [ "$2" -gt 0 ]; then
    printf 'sqlite3 %s.db < seed.sql   # INSERT … SELECT from a recursive CTE: bench/lib.sh seed()\n' "$1" >> "$CMDS"
    seed "$db" "$2" >/dev/null
  fi
}

# wrk_run URL [wrk args]: prints the WRK summary line; env BENCH_AUTH/BODY.
wrk_run() {
  local url=$1; shift
  local envs=(BENCH_DIR="$BENCH" BENCH_AUTH="${BENCH_AUTH:-}")
  [ -z "${BENCH_BODY:-}" ] || envs+=(BENCH_BODY="$BENCH_BODY")
  run env "${envs[@]}" wrk "$@" "$url" | grep '^WRK ' || echo "WRK requests=0 duration_us=1 non2xx=0"
}
wrk_rps() { awk -v r="$(kv "$1" requests)" -v s="$(kv "$1" non2xx)" -v d="$(kv "$1" duration_us)" \
  'BEGIN {printf "%.0f", (r - s) / (d / 1e6)}'; }


# start_nginx ROOT FPATH: nginx serving ROOT (the file at FPATH for every
# call's URI: the random-call runs of wrk, fetch_random.lua, get the same
# bytes), two workers; sets NGINX_PORT NGINX_PID once it answers.
start_nginx() {
  local root=$1 fpath=$2 i
  mkdir -p "$WORK/nginx"
  chmod -R a+rX "$root"
  NGINX_PORT=$(free_port)
  cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx/body;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $root;
    default_type application/json;
    types { }
    location ~ ^$API/Calls/[^/]+\\.json\$ { try_files $fpath =404; }
  }
}
EOF
  cp "$WORK/nginx/nginx.conf" "$WORK/nginx.conf.used"
  printf '# nginx: nginx -c nginx.conf (worker_processes 2, access_log off, sendfile, the response file under root, default_type application/json)\n' >> "$CMDS"
  spawn "$WORK/nginx/out" "$WORK/nginx/err" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx"
  NGINX_PID=$SPAWNED
  for ((i = 0; i < 100; i++)); do curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT$fpath" && break; sleep 0.05; done
}
