"""TwiML execution (contract §11), observed from both sides: the requests
twigate makes to Kaphila (the simulator's record of the call) and the
webhook requests the application receives."""

import json

from harness import DEFAULT_FROM, LIVE_TWIML, fresh_number, wait_for

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


def kaphila_requests(tg, sid, path=None):
    reqs = tg.sim_get(sid)["requests"]
    return [r for r in reqs if path is None or r["path"] == path]


def spoken(tg, sid):
    """Text of every /voice (TTS) request of the call, in order."""
    return [json.dumps(r["body"]) for r in kaphila_requests(tg, sid, "/voice")]


def run(tg, client, url, **kw):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=url, **kw)
    return call.sid


def test_gather_num_digits_posts_action(twigate, client, receiver):
    receiver.set("/g1", '<Response><Gather action="/g1-done" numDigits="3" timeout="3">'
                        '<Say>Enter code</Say></Gather><Say>No input</Say></Response>')
    receiver.set("/g1-done", "<Response><Say>Thanks</Say></Response>")
    sid = run(twigate, client, receiver.url("/g1"))
    wait_for(lambda: kaphila_requests(twigate, sid, "/gather"), 10,
             message="no /gather sent to Kaphila")
    twigate.sim_digits(sid, "123")
    r = receiver.wait_for_requests("/g1-done", 1, call_sid=sid)[0]
    assert r.method == "POST"
    assert r.params["Digits"] == "123"
    assert r.params["CallStatus"] == "in-progress"
    assert r.params.get("FinishedOnKey", "") == ""
    assert r.valid
    done = twigate.wait_for_status(client, sid, TERMINAL)
    assert done.status == "completed"
    said = spoken(twigate, sid)
    assert any("Thanks" in s for s in said), said
    assert not any("No input" in s for s in said), said


def test_gather_finish_on_key(twigate, client, receiver):
    receiver.set("/g2", '<Response><Gather action="/g2-done" timeout="3">'
                        '<Say>Enter</Say></Gather></Response>')
    receiver.set("/g2-done", "<Response><Hangup/></Response>")
    sid = run(twigate, client, receiver.url("/g2"))
    wait_for(lambda: kaphila_requests(twigate, sid, "/gather"), 10)
    twigate.sim_digits(sid, "42#")
    r = receiver.wait_for_requests("/g2-done", 1, call_sid=sid)[0]
    assert r.params["Digits"] == "42"
    assert r.params["FinishedOnKey"] == "#"
    twigate.wait_for_status(client, sid, TERMINAL)


def test_gather_without_input_falls_through(twigate, client, receiver):
    receiver.set("/g3", '<Response><Gather action="/g3-never" timeout="1">'
                        '<Say>Anyone</Say></Gather><Say>Fell through</Say></Response>')
    sid = run(twigate, client, receiver.url("/g3"))
    done = twigate.wait_for_status(client, sid, TERMINAL, timeout=15)
    assert done.status == "completed"
    assert receiver.requests("/g3-never") == []
    assert any("Fell through" in s for s in spoken(twigate, sid))


def test_redirect_fetches_new_document(twigate, client, receiver):
    receiver.set("/r1", "<Response><Redirect>/r2?step=2</Redirect>"
                        "<Say>Unreached</Say></Response>")
    receiver.set("/r2", "<Response><Say>Landed</Say></Response>")
    sid = run(twigate, client, receiver.url("/r1"))
    twigate.wait_for_status(client, sid, TERMINAL)
    r = receiver.wait_for_requests("/r2", 1, call_sid=sid)[0]
    assert r.method == "POST" and r.query["step"] == ["2"]
    assert r.params["CallStatus"] == "in-progress"
    assert r.valid
    said = spoken(twigate, sid)
    assert any("Landed" in s for s in said) and not any("Unreached" in s for s in said)


def test_hangup_stops_the_document(twigate, client, receiver):
    receiver.set("/h", "<Response><Hangup/><Say>After hangup</Say></Response>")
    sid = run(twigate, client, receiver.url("/h"))
    done = twigate.wait_for_status(client, sid, TERMINAL)
    assert done.status == "completed"
    assert spoken(twigate, sid) == []
    assert "/hangup" in [r["path"] for r in kaphila_requests(twigate, sid)]


def test_end_of_document_hangs_up(twigate, client, receiver):
    receiver.set("/end", "<Response><Say>Only this</Say></Response>")
    sid = run(twigate, client, receiver.url("/end"))
    done = twigate.wait_for_status(client, sid, TERMINAL)
    assert done.status == "completed"
    paths = [r["path"] for r in kaphila_requests(twigate, sid)]
    assert paths.index("/voice") < paths.index("/hangup"), paths


def test_consecutive_says_are_one_tts_request(twigate, client, receiver):
    # kaphila-api.md: Kaphila rate-limits, merge consecutive <Say> texts.
    receiver.set("/says", "<Response><Say>One</Say><Say>Two</Say></Response>")
    sid = run(twigate, client, receiver.url("/says"))
    twigate.wait_for_status(client, sid, TERMINAL)
    said = spoken(twigate, sid)
    assert len(said) == 1, said
    assert said[0].index("One") < said[0].index("Two")


def test_pause_separates_says(twigate, client, receiver):
    receiver.set("/pause", '<Response><Say>Before</Say><Pause length="1"/>'
                           '<Say>After</Say></Response>')
    sid = run(twigate, client, receiver.url("/pause"))
    twigate.wait_for_status(client, sid, TERMINAL, timeout=15)
    said = spoken(twigate, sid)
    assert len(said) == 2 and "Before" in said[0] and "After" in said[1], said


def test_live_call_redirected_through_rest(twigate, client, receiver):
    receiver.set("/moved", "<Response><Say>Moved</Say></Response>")
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    twigate.wait_for_status(client, call.sid, "in-progress")
    client.calls(call.sid).update(url=receiver.url("/moved"))
    r = receiver.wait_for_requests("/moved", 1, call_sid=call.sid)[0]
    assert r.params["CallStatus"] == "in-progress" and r.valid
    done = twigate.wait_for_status(client, call.sid, TERMINAL)
    assert done.status == "completed"
    assert any("Moved" in s for s in spoken(twigate, call.sid))


def test_live_call_replaced_with_twiml_through_rest(twigate, client):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    twigate.wait_for_status(client, call.sid, "in-progress")
    client.calls(call.sid).update(twiml="<Response><Say>Replaced</Say></Response>")
    done = twigate.wait_for_status(client, call.sid, TERMINAL)
    assert done.status == "completed"
    assert any("Replaced" in s for s in spoken(twigate, call.sid))


def test_far_end_hangup_ends_call(twigate, client, receiver):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML,
                               status_callback=receiver.url("/fe"))
    twigate.wait_for_status(client, call.sid, "in-progress")
    twigate.sim_hangup(call.sid)
    done = twigate.wait_for_status(client, call.sid, TERMINAL)
    assert done.status == "completed"
    r = receiver.wait_for_requests("/fe", 1, call_sid=call.sid)[0]
    assert r.params["CallStatus"] == "completed" and r.valid
