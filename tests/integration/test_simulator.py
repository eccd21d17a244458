"""The built-in simulator's memory of ended calls (docs/simulator.md):
`sim.kept_calls` / `--kept-calls` bound how many it remembers, the oldest
are forgotten first, and forgetting a call never drops one of its events."""
import os
import subprocess

import requests

from harness import DEFAULT_FROM, build_dir, fresh_number, wait_for

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
HANGUP = "<Response><Hangup/></Response>"
# Every event the simulator posts for an answered call that ends by itself.
CALL_EVENTS = ["call.initiated", "call.answered", "recording.started",
               "call.ended", "recording.completed"]


def _sim_status(tg, sid):
    return requests.get(f"{tg.sim_url}/sim/calls/{sid}", timeout=5).status_code


def _place(tg, receiver, path, n, **kw):
    c = tg.client("a")
    sids = [c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP,
                           status_callback=receiver.url(path),
                           status_callback_event=["completed"], **kw).sid
            for _ in range(n)]
    for sid in sids:
        tg.wait_for_status(c, sid, TERMINAL, timeout=15)
        receiver.wait_for_requests(path, call_sid=sid, timeout=10)
    return c, sids


def test_oldest_ended_calls_are_forgotten_beyond_kept_calls(make_twigate, receiver):
    tg = make_twigate(overrides={"sim.kept_calls": 2})
    _, sids = _place(tg, receiver, "/kept", 5)
    # The newest two are remembered with their whole transcript ...
    for sid in sids[-2:]:
        got = tg.sim_get(sid)
        assert got["status"] == "completed"
        assert [e["event"] for e in got["events"]] == CALL_EVENTS
    # ... the three before them are forgotten, like calls the sim never had.
    wait_for(lambda: all(_sim_status(tg, sid) == 404 for sid in sids[:3]), 5,
             message="the oldest ended calls were kept beyond sim.kept_calls")


def test_kept_calls_zero_still_delivers_every_event(make_twigate, receiver):
    """A call forgotten as soon as it ends still posts its events: twigate
    sees each call complete and each recording arrive."""
    tg = make_twigate(overrides={"sim.kept_calls": 0})
    c, sids = _place(tg, receiver, "/kept0", 3, record=True)
    for sid in sids:
        wait_for(lambda: len(c.recordings.list(call_sid=sid)) == 1
                 and c.recordings.list(call_sid=sid)[0].status == "completed", 10,
                 message=f"recording.completed of {sid} never arrived")
        wait_for(lambda: _sim_status(tg, sid) == 404, 5,
                 message=f"{sid} was kept with sim.kept_calls = 0")
    assert "event post to call" not in tg.log_text()


def test_kaphila_sim_kept_calls_option():
    """The standalone binary documents --kept-calls and refuses a value
    outside 0..200000 with exit status 2."""
    sim = os.path.join(build_dir(), "kaphila-sim")
    for bad in ("-1", "200001", "x"):
        r = subprocess.run([sim, "--key", "k", "--kept-calls", bad],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and "bad value" in r.stderr, (bad, r.returncode, r.stderr)
    r = subprocess.run([sim, "--help"], capture_output=True, text=True, timeout=10)
    assert "--kept-calls N" in r.stdout


def test_twigate_refuses_kept_calls_out_of_range():
    """sim.kept_calls beyond 200,000 is one clear line at start-up (0 is
    accepted: test_kept_calls_zero_still_delivers_every_event)."""
    tg = os.path.join(build_dir(), "twigate")
    r = subprocess.run([tg, "--set", "sim.kept_calls=200001", "--print-config"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert r.stderr.strip() == "twigate: sim.kept_calls: 200001 is out of range (0..200000)"
