#!/usr/bin/env bash
# `make run`: starts twigate in the foreground on the built-in Kaphila
# simulator with conf/twigate.conf, after printing what a newcomer needs to
# place a first call: the base URL, the demo credentials, and copy-pasteable
# curl, python and node examples.
set -euo pipefail
bin=${1:-build/twigate}
conf=${TWIGATE_CONF:-conf/twigate.conf}

# The demo account's values, read from the sample config itself so the
# banner can never disagree with what the daemon loads.
val() { awk -v want="$1" '
  /^\[/ { sec = $0; next }
  sec == "[account.demo]" && $1 == want { sub(/^[^=]*=[ \t]*/, ""); gsub(/"/, ""); print; exit }
' "$conf"; }
sid=$(val sid)
token=$(val auth_token)
port=$(awk '/^\[listen\]/{s=1;next} /^\[/{s=0} s && $1=="port"{print $3; exit}' "$conf")
base=${TWIGATE_PUBLIC_URL:-http://127.0.0.1:${port:-8080}}

cat <<MSG

  twigate — Twilio's Voice API on Kaphila (built-in simulator)

  Base URL     $base
  Account SID  $sid
  Auth token   $token

  Place a call (it rings, answers, speaks, and hangs up on the simulator):

    curl -u $sid:$token $base/2010-04-01/Accounts/$sid/Calls.json \\
      --data-urlencode To=+14155550100 --data-urlencode From=+14155550199 \\
      --data-urlencode 'Twiml=<Response><Say>Hello from twigate</Say></Response>'

    curl -u $sid:$token $base/2010-04-01/Accounts/$sid/Calls.json

  Python (Debian's python3-twilio):

    /usr/bin/python3 - <<'PY'
from twilio.rest import Client
client = Client("$sid", "$token")
client.api.base_url = "$base"
call = client.calls.create(to="+14155550100", from_="+14155550199",
                           twiml="<Response><Say>Hello</Say></Response>")
print(call.sid, call.status)
PY

  Node (npm twilio):  client.api.baseUrl = "$base";

  Destinations ending in 0001 are busy, 0002 don't answer, 0003 fail, 0004
  reach an answering machine (docs/simulator.md). Ctrl-C stops twigate.

MSG
# Customer URLs may not reach loopback or private addresses by default
# (docs/security.md); the demo's webhook servers are on this machine, so
# open loopback (and only it). TWIGATE_WEBHOOK_ALLOW= (empty) undoes it.
export TWIGATE_WEBHOOK_ALLOW=${TWIGATE_WEBHOOK_ALLOW-127.0.0.0/8}
exec "$bin" --config "$conf"
