"""Barriers: events that are guaranteed to come after something would have
happened, so that a test can assert that it did NOT happen without sleeping.

A fixed sleep before an absence check passes whenever the behaviour is merely
slow (the machine is loaded, the check runs first).  Each helper here waits
for an observable that the daemon can only produce once it is past the point
where the unwanted thing would have happened:

* ``outbox_drained(tg)``: ``twigate_outbox_pending`` on ``/metrics`` is 0.
  Every webhook a call causes (status callbacks, recording callbacks,
  retries) is an outbox row written in the same commit as the state change
  that causes it, and stays ``pending`` until its delivery is done or given
  up - retries included.  So once a call is terminal (the REST API reads
  committed rows) and the outbox is empty, every callback of that call has
  reached the receiver, and no more will come.
* ``engine_barrier(tg)``: a fresh call on the same daemon, created now, with
  ``<Pause length=pause/>`` then ``<Hangup/>``, waited on until it is
  terminal and the simulator has its ``/hangup``.  The engine is one thread
  that serves events, timers and Kaphila commands in order, so by then it has
  handled everything queued before the barrier call was created, every timer
  armed before it that is no longer than ``pause`` has fired, and every
  Kaphila command it had sent before has had the barrier's whole life (several
  round trips through the same simulator) to arrive.
* ``sim_ended(tg, sid)``: the simulator's transcript of the call holds its
  ``call.ended`` event (Kaphila's side of the call is over).
* ``settle_call(tg, sid)``: all of the above for one call: after it, the
  simulator's transcript and the receiver's recorded requests of that call are
  final.

Each returns as soon as its event is seen; none sleeps a fixed time."""

import requests

from .daemon import DEFAULT_FROM
from .util import fresh_number, wait_for

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


def _session():
    s = requests.Session()
    s.trust_env = False
    return s


def metric_value(tg, name, labels=None):
    """The value of one sample on twigate's /metrics (labels: a substring of
    the label set, e.g. 'kind="status"'), 0.0 when absent."""
    headers = {}
    token = getattr(tg, "settings", {}).get("metrics.token")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    text = _session().get(tg.base_url + "/metrics", headers=headers, timeout=5).text
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if labels is None:
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def outbox_drained(tg, timeout=30):
    """Waits until no webhook delivery is pending (see the module doc)."""
    wait_for(lambda: metric_value(tg, "twigate_outbox_pending") == 0, timeout,
             interval=0.05, message="webhook outbox never drained")


def sim_ended(tg, sid, timeout=15):
    """Waits until the simulator's transcript of sid holds call.ended;
    returns the transcript."""
    def ended():
        t = tg.sim_get(sid)
        return t if any(e.get("event") == "call.ended" for e in t.get("events", [])) else None
    return wait_for(ended, timeout, interval=0.05,
                    message=f"the simulator never ended {sid}")


def engine_barrier(tg, pause=0, account="a", timeout=30):
    """Runs one barrier call through the engine (see the module doc) and
    returns its sid.  pause: seconds of <Pause> before its <Hangup/>, as long
    as the longest timer the caller needs to have fired."""
    twiml = (f'<?xml version="1.0" encoding="UTF-8"?><Response>'
             + (f'<Pause length="{int(pause)}"/>' if pause else "")
             + "<Hangup/></Response>")
    client = tg.client(account)
    sid = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=twiml).sid
    tg.wait_for_status(client, sid, TERMINAL, timeout=timeout)
    wait_for(lambda: any(q["path"] == "/hangup" for q in tg.sim_get(sid)["requests"]),
             timeout, interval=0.05, message=f"barrier call {sid} never hung up")
    return sid


def settle_call(tg, sid, pause=0, account="a", timeout=30):
    """Waits until everything call sid will ever cause has been seen: the
    call is terminal in twigate, ended in the simulator, an engine barrier
    (with pause) has passed and the webhook outbox is empty.  Returns the
    call's final JSON."""
    def terminal():
        r = tg.http("GET", f"{tg.account_uri(account)}/Calls/{sid}.json", account=account)
        assert r.status_code == 200, r.text
        body = r.json()
        return body if body["status"] in TERMINAL else None
    wait_for(terminal, timeout, interval=0.03, message=f"{sid} never terminal")
    sim_ended(tg, sid, timeout)
    engine_barrier(tg, pause=pause, account=account, timeout=timeout)
    outbox_drained(tg, timeout)
    return terminal()
