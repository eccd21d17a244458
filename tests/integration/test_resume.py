"""A restart resumes live calls from their checkpoints (issue 21, step 1;
docs/scale-out.md §3, docs/architecture.md "Recovery").

The standalone simulator runs in its slow mode and outlives twigate, so a
call stays up at Kaphila across twigate's death, as it would in production.
Each test waits on events - the simulator's transcript, the checkpoint row,
the receiver's requests - never on fixed times:

  * a <Gather> IVR, twigate killed (SIGKILL) while the prompt plays: after
    the restart the prompt is said again (at least once), a key pressed then
    reaches the action URL, the call ends `completed`, and each status
    callback has one idempotency token;
  * the same with a graceful restart (SIGTERM);
  * <Pause length="3"> then <Say> (inline Twiml), killed during the pause: the pause keeps
    its wall-clock due time and the <Say> follows; what was said before the
    pause is not said again;
  * a call hung up by the far end while twigate was down: the restart's
    GET /calls/:callId finds it ended, so it ends `completed` with its
    callback, and its checkpoint is gone;
  * <Gather numDigits="3">: two keys before a kill, one after: the action
    gets all three;
  * a live call with no checkpoint (an older row) is ended as before."""

import json
import time

import pytest

from harness import DEFAULT_FROM, KaphilaSim, fresh_number, wait_for
from harness import db
from harness.ivr import create, kaphila_requests, notes, spoken, wait_kaphila

ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]
PROMPT = ("Welcome to the resume test line. Please press one digit on your keypad now,"
          " and we will tell you which one it was.")
IVR = (f'<Response><Gather numDigits="1" action="/resume/done" timeout="20">'
       f'<Say>{PROMPT}</Say></Gather><Say>We did not get a key.</Say></Response>')
DONE = '<Response><Say>Thank you.</Say><Hangup/></Response>'
W_PAUSE = 3


@pytest.fixture
def slow_sim(tmp_path, accounts):
    """Kaphila in slow mode (TTS at 60 ms a character: the prompt plays for
    several seconds), answering quickly, outliving twigate's restarts."""
    sim = KaphilaSim(tmp_path / "sim", [a.kaphila_key for a in accounts.values()], fast=False,
                     extra_args=["--ring-ms", "100", "--answer-ms", "200"]).start()
    yield sim
    sim.stop()


def checkpoint(tg, sid):
    """The call's checkpoint state (a dict), None when it has none."""
    row = db.one(tg, "SELECT state FROM call_checkpoints WHERE call_sid = ?", (sid,))
    return json.loads(row[0]) if row else None


def tokens_by_status(receiver, route, sid):
    """{CallStatus: set of idempotency tokens} of the call's status callbacks."""
    out = {}
    for r in receiver.requests(route, call_sid=sid):
        out.setdefault(r.params["CallStatus"], set()).add(r.header("I-Twilio-Idempotency-Token"))
    return out


def assert_callbacks_once(receiver, route, sid):
    receiver.wait_for_requests(route, 1, call_sid=sid, timeout=20,
                               predicate=lambda r: r.params["CallStatus"] == "completed")
    toks = tokens_by_status(receiver, route, sid)
    assert {"in-progress", "completed"} <= set(toks), toks
    assert all(len(t) == 1 for t in toks.values()), toks


def _gather_ivr_survives(tg, receiver, stop):
    client = tg.client()
    receiver.set("/resume/ivr", twiml=IVR)
    receiver.set("/resume/done", twiml=DONE)
    sid = create(client, receiver, "/resume/ivr", status_callback=receiver.url("/resume/st"),
                 status_callback_event=ALL_EVENTS).sid
    wait_kaphila(tg, sid, lambda reqs: ("/voice", {"text": PROMPT}) in reqs, timeout=20,
                 what="the prompt was never sent")
    # The batch that sent the prompt has committed its checkpoint.
    wait_for(lambda: (checkpoint(tg, sid) or {}).get("mode") == 1, timeout=10,
             message="no <Gather> checkpoint")
    stop()
    tg.start()
    # The restart's GET /calls/:callId found it up and said the prompt again.
    wait_kaphila(tg, sid, lambda reqs: reqs.count(("/voice", {"text": PROMPT})) == 2,
                 timeout=20, what="the prompt was not said again after the restart")
    tg.sim_digits(sid, "7")
    done = receiver.wait_for_requests("/resume/done", 1, call_sid=sid, timeout=20)
    assert done[0].params["Digits"] == "7", done[0].params
    assert tg.wait_for_status(client, sid, {"completed", "failed"}, timeout=20).status == \
        "completed"
    assert spoken(tg, sid)[-1] == "Thank you."
    assert_callbacks_once(receiver, "/resume/st", sid)
    assert checkpoint(tg, sid) is None, "an ended call keeps no checkpoint"
    assert "resuming the call's TwiML after a restart" in tg.log_text()


def test_gather_ivr_survives_kill9(make_twigate, slow_sim, receiver):
    tg = make_twigate(external_sim=slow_sim)
    _gather_ivr_survives(tg, receiver, tg.kill9)


def test_gather_ivr_survives_a_graceful_restart(make_twigate, slow_sim, receiver):
    tg = make_twigate(external_sim=slow_sim)
    _gather_ivr_survives(tg, receiver, tg.stop)


def test_pause_keeps_its_due_time_across_kill9(make_twigate, slow_sim, receiver):
    tg = make_twigate(external_sim=slow_sim)
    client = tg.client()
    # Inline Twiml: the checkpoint's document has no URL and no fetch.
    sid = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                              twiml=f'<Response><Say>Hi.</Say><Pause length="{W_PAUSE}"/>'
                                    '<Say>After the pause.</Say></Response>').sid
    wait_for(lambda: (checkpoint(tg, sid) or {}).get("wait") == W_PAUSE, timeout=20,
             message="no <Pause> checkpoint")
    due = checkpoint(tg, sid)["due"]
    assert due > time.time() * 1000, "the pause's due time is a wall-clock time ahead"
    tg.kill9()
    # Down past the pause's end: its due time is in the past at the restart.
    wait_for(lambda: time.time() * 1000 > due + 200, timeout=W_PAUSE + 5)
    tg.start()
    wait_kaphila(tg, sid, lambda reqs: ("/voice", {"text": "After the pause."}) in reqs,
                 timeout=20, what="the <Say> after the pause never came")
    # The <Say> before the pause had been checkpointed as done: not repeated.
    assert spoken(tg, sid) == ["Hi.", "After the pause."]
    assert tg.wait_for_status(client, sid, {"completed", "failed"}, timeout=20).status == \
        "completed"
    # Re-armed from the stored absolute due time, already past: the <Say>
    # follows the restart's GET /calls/:callId at once, not a whole pause later.
    reqs = tg.sim_get(sid)["requests"]
    check = [q["t_ms"] for q in reqs if q["method"] == "GET"][-1]
    said = [q["t_ms"] for q in reqs if q["path"] == "/voice"][-1]
    assert 0 <= said - check < W_PAUSE * 1000 - 1000, (check, said)


def test_far_end_hangup_while_down_ends_completed(make_twigate, slow_sim, receiver):
    tg = make_twigate(external_sim=slow_sim)
    client = tg.client()
    receiver.set("/resume/long", twiml='<Response><Pause length="60"/></Response>')
    sid = create(client, receiver, "/resume/long", status_callback=receiver.url("/resume/st2"),
                 status_callback_event=ALL_EVENTS).sid
    wait_for(lambda: (checkpoint(tg, sid) or {}).get("wait") == W_PAUSE, timeout=20,
             message="no <Pause> checkpoint")
    tg.kill9()
    tg.sim_hangup(sid)          # its call.ended goes to a dead twigate: lost
    wait_for(lambda: any(e["event"] == "call.ended" for e in tg.sim_get(sid)["events"]),
             timeout=10, message="the simulator never ended the call")
    tg.start()
    assert tg.wait_for_status(client, sid, {"completed", "failed", "busy", "no-answer"},
                              timeout=20).status == "completed"
    assert_callbacks_once(receiver, "/resume/st2", sid)
    assert checkpoint(tg, sid) is None
    assert "resuming the call's TwiML" not in tg.log_text()


def test_a_call_without_checkpoint_is_ended_as_before(make_twigate, slow_sim, receiver):
    """A live row with no checkpoint (an older twigate's, or a first fetch
    that never committed): ended with a notification, never replayed from
    the top."""
    tg = make_twigate(external_sim=slow_sim)
    client = tg.client()
    receiver.set("/resume/old", twiml='<Response><Pause length="60"/></Response>')
    sid = create(client, receiver, "/resume/old").sid
    wait_for(lambda: (checkpoint(tg, sid) or {}).get("wait") == W_PAUSE, timeout=20,
             message="no <Pause> checkpoint")
    tg.kill9()
    assert db.execute(tg, "DELETE FROM call_checkpoints WHERE call_sid = ?", (sid,)) == 1
    tg.start()
    assert tg.wait_for_status(client, sid, {"completed", "failed"}, timeout=20).status == \
        "completed"
    assert any(p == "/hangup" for p, _ in kaphila_requests(tg, sid))
    assert len(receiver.requests("/resume/old", call_sid=sid)) == 1, "fetched again"
    assert any(n["error_code"] == "20500" and "cannot be resumed" in n["message"]
               for n in notes(tg, sid)), notes(tg, sid)


def test_gather_digits_so_far_survive_kill9(make_twigate, slow_sim, receiver):
    """Two keys of three pressed, then the kill: the third after the restart
    completes the entry, and the action gets all three."""
    tg = make_twigate(external_sim=slow_sim)
    client = tg.client()
    receiver.set("/resume/pin", twiml='<Response><Gather numDigits="3" timeout="30"'
                                      ' action="/resume/pin-done"><Say>Enter your PIN.</Say>'
                                      '</Gather></Response>')
    receiver.set("/resume/pin-done", twiml=DONE)
    sid = create(client, receiver, "/resume/pin").sid
    wait_kaphila(tg, sid, lambda reqs: ("/voice", {"text": "Enter your PIN."}) in reqs,
                 timeout=20, what="the prompt was never sent")
    tg.sim_digits(sid, "12")
    wait_for(lambda: (checkpoint(tg, sid) or {}).get("digits") == "12", timeout=10,
             message="the digits never reached the checkpoint")
    tg.kill9()
    tg.start()
    wait_for(lambda: "resuming the call's TwiML after a restart" in tg.log_text(), timeout=20,
             message="the call was not resumed")
    tg.sim_digits(sid, "3")
    done = receiver.wait_for_requests("/resume/pin-done", 1, call_sid=sid, timeout=20)
    assert done[0].params["Digits"] == "123", done[0].params
    assert tg.wait_for_status(client, sid, {"completed", "failed"}, timeout=20).status == \
        "completed"
