#!/usr/bin/env bash
# `make run`: starts twigate in the foreground on the built-in Kaphila
# simulator with conf/twigate.conf, and prints what a newcomer needs to place
# a first call: the base URL, the demo credentials, the simulator's control
# API URL, and lines to paste.
#
#   scripts/run-demo.sh [BINARY [twigate arguments...]]
#   make run ARGS='--set listen.port=9011'     (or TWIGATE_LISTEN_PORT=9011 make run)
#
# Every URL in the banner is what the running daemon announces on its first
# two stdout lines ("twigate … listening on … (public URL …)", "Kaphila: …"),
# so the file, the environment and --set all count, and port 0 works too.
# The credentials are those of the first account of the effective
# configuration (twigate --print-config with the same sources); its token,
# a secret that --print-config masks, is taken from the source that sets it.
set -euo pipefail
bin=${1:-build/twigate}
[ $# -gt 0 ] && shift
conf=${TWIGATE_CONF:-conf/twigate.conf}

# Customer URLs may not reach loopback or private addresses by default
# (docs/security.md); the demo's webhook servers are on this machine, so
# open loopback (and only it). TWIGATE_WEBHOOK_ALLOW= (empty) undoes it.
export TWIGATE_WEBHOOK_ALLOW=${TWIGATE_WEBHOOK_ALLOW-127.0.0.0/8}
# The web console (docs/console.md) is off by default; the demo shows it.
# TWIGATE_CONSOLE_ENABLED=0 make run turns it off again.
export TWIGATE_CONSOLE_ENABLED=${TWIGATE_CONSOLE_ENABLED-1}

effective=$("$bin" --config "$conf" "$@" --print-config 2>/dev/null) || {
    "$bin" --config "$conf" "$@" --print-config >/dev/null   # shows the one-line error
    exit 2
}
# The first account: its <name> and SID.
name=$(sed -n 's/^\[account\.\(.*\)\]$/\1/p' <<<"$effective" | head -n 1)
sid=$(awk '/^\[account\./ { n++ } n == 1 && $1 == "sid" { gsub(/"/, "", $3); print $3; exit }' \
      <<<"$effective")

# Its auth token, later source winning: file < environment < --set.
token=$(awk -v want="[account.$name]" '
  /^\[/ { sec = $0; next }
  sec == want && $1 == "auth_token" { sub(/^[^=]*=[ \t]*/, ""); gsub(/"/, ""); print; exit }
' "$conf")
up=$(tr 'a-z-' 'A-Z_' <<<"$name")
for var in "TWIGATE_ACCOUNT_${up}_AUTH_TOKEN" "TWIGATE_ACCOUNT__${up}__AUTH_TOKEN"; do
    if [ -n "${!var+set}" ]; then token=${!var}; fi
done
want="account.$name.auth_token="
after_set=
for arg in "$@"; do
    case "$after_set$arg" in
        set:"$want"*) token=${arg#"$want"} ;;
        --set="$want"*) token=${arg#--set="$want"} ;;
    esac
    case "$arg" in --set|-s) after_set=set: ;; *) after_set= ;; esac
done

# twigate runs as a coprocess so its announcement can be read; its log
# (stderr) goes straight to the terminal.
coproc TWIGATE { exec "$bin" --config "$conf" "$@"; }
pid=$TWIGATE_PID
exec {out}<&"${TWIGATE[0]}"
# Ctrl-C reaches twigate with the rest of the process group; the trap also
# passes it on as SIGTERM (the same drain), for shells that start
# asynchronous commands with SIGINT ignored. Either way this script waits
# for twigate's clean exit instead of leaving it behind.
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM

listen= base= sim=
for _ in 1 2; do
    IFS= read -r line <&"$out" || break
    case "$line" in
        "twigate "*" listening on "*)
            listen=${line#* listening on }; listen=${listen%% *}
            base=${line##*(public URL }; base=${base%)} ;;
        "Kaphila: "*)
            sim=${line#Kaphila: }; sim=${sim%% *} ;;
    esac
done
if [ -z "$base" ]; then
    rc=0; wait "$pid" || rc=$?
    echo "twigate did not start (exit $rc)" >&2
    exit "$((rc ? rc : 1))"
fi

calls="$base/2010-04-01/Accounts/$sid/Calls"
console_line=
case "${TWIGATE_CONSOLE_ENABLED,,}" in 1|true|yes|on)
    console_line="  Console      $base/console/   (log in with the SID and token above)
" ;;
esac
twiml='<Response><Say>Hello from twigate</Say><Pause length="30"/></Response>'
cat <<MSG

  twigate — Twilio's Voice API on Kaphila (built-in simulator)

  Base URL     $base
  Account SID  $sid
  Auth token   $token
  Simulator    $sim   (its control API, docs/simulator.md)
$console_line
  Another port: TWIGATE_LISTEN_PORT=9011 make run, or make run ARGS='--set listen.port=9011'.

  1. Place a call (the simulator answers it after ~4 s; it lasts 30 s more):

    CALL=\$(curl -s -u $sid:$token $calls.json \\
      --data-urlencode To=+14155550100 --data-urlencode From=+14155550199 \\
      --data-urlencode 'Twiml=$twiml' \\
      | sed -n 's/.*"sid": *"\\(CA[0-9a-f]*\\)".*/\\1/p'); echo \$CALL

  2. Once it is answered, press a key on it, as the person called would:

    curl -s -X POST $sim/sim/calls/\$CALL/digits -d Digits=5

  3. Read its transcript (every Kaphila event and request), then the call as Twilio shows it:

    curl -s $sim/sim/calls/\$CALL
    curl -s -u $sid:$token $calls/\$CALL.json

  Python and node examples: README.md. Destinations ending in 0001 are busy,
  0002 don't answer, 0003 fail, 0004 reach an answering machine
  (docs/simulator.md). Ctrl-C stops twigate.

MSG
[ "$listen" = "$base" ] || echo "  (twigate listens on $listen; its public URL is $base)"
# Anything twigate prints later on stdout still reaches the terminal.
cat <&"$out" &

rc=0
while :; do
    wait "$pid" && rc=0 || rc=$?
    kill -0 "$pid" 2>/dev/null || break
done
exit "$rc"
