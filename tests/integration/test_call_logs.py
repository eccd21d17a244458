"""Logs that tell the story of a call (issue 15, docs/operations.md, Logs):
one info line per lifecycle step with the call's AccountSid and CallSid,
the access log (log.access, off by default), and no line carrying the
context of a call it is not about."""

import re

from harness import DEFAULT_FROM, SHORT_TWIML, fresh_number, wait_for

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
# Plain text: "<ts> INFO [module] [req=RQ… ][AC… ][CA… ]message"
LINE = re.compile(r"^\S+ (?P<level>[A-Z]+) \[(?P<module>[a-z]+)\]"
                  r"(?: req=(?P<req>RQ[0-9a-f]+))?(?: (?P<ac>AC[0-9a-f]{32}))?"
                  r"(?: (?P<ca>CA[0-9a-f]{32}))? (?P<msg>.*)$")


def _lines(tg, module=None):
    out = []
    for text in tg.log_text().splitlines():
        m = LINE.match(text)
        if m and (module is None or m["module"] == module):
            out.append(m)
    return out


def _story(tg, sid):
    """The engine's info lines about call sid, in order, as messages."""
    return [m["msg"] for m in _lines(tg, "engine")
            if m["ca"] == sid and m["level"] == "INFO" and m["msg"].startswith("call ")]


def _wait_story_end(tg, sid, timeout=15):
    wait_for(lambda: any(s.startswith("call ended:") for s in _story(tg, sid)), timeout,
             message=f"no 'call ended' line for {sid}; log tail:\n{tg.log_tail(30)}")
    return _story(tg, sid)


def _unqueued(client, sid, story):
    """The story without its queue line. A call waits in Twilio's queue (a
    line "call leaves the queue after N ms", N its queue_time) whenever its
    key's budget cannot dial it at once, which includes the moment before
    twigate has first heard the key's limit from /api/me at start."""
    qt = int(client.calls(sid).fetch().queue_time or 0)
    if qt:
        assert story[1] == f"call leaves the queue after {qt} ms", story
        return story[:1] + story[2:]
    assert not any("leaves the queue" in line for line in story), story
    return story


def test_a_call_tells_its_story_at_info(make_twigate):
    tg = make_twigate(overrides={"log.level": "info"})
    c = tg.client("a")
    acct = tg.accounts["a"]
    answered = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                              machine_detection="Enable").sid
    busy = c.calls.create(to=fresh_number("0001"), from_=DEFAULT_FROM, twiml=SHORT_TWIML).sid
    plain = tg.client("b").calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                                        twiml=SHORT_TWIML).sid
    for client, sid in ((c, answered), (c, busy), (tg.client("b"), plain)):
        tg.wait_for_status(client, sid, TERMINAL, timeout=15)

    story = _unqueued(c, answered, _wait_story_end(tg, answered))
    kid = tg.sim_get(answered)["callId"]
    assert story == ["call created (queued)", f"call dialled: Kaphila callId {kid}",
                     "call answered (AMD: human)",
                     story[3]], story
    assert re.fullmatch(r"call ended: completed, \d+ s, Kaphila cause 16 \(\w+\)", story[3]), story

    story = _unqueued(c, busy, _wait_story_end(tg, busy))
    assert story[:2] == ["call created (queued)",
                         f"call dialled: Kaphila callId {tg.sim_get(busy)['callId']}"], story
    assert story[2:] == ["call ended: busy, 0 s, Kaphila cause 17 (busy)"], story

    story = _unqueued(tg.client("b"), plain, _wait_story_end(tg, plain))
    assert story[2] == "call answered (AMD: not requested)", story

    # Every line about a call carries that call's account as context.
    for sid, account in ((answered, acct.sid), (busy, acct.sid),
                         (plain, tg.accounts["b"].sid)):
        acs = {m["ac"] for m in _lines(tg) if m["ca"] == sid}
        assert acs == {account}, (sid, acs)


def test_a_rest_hangup_ends_the_story_without_a_kaphila_cause(make_twigate):
    tg = make_twigate(overrides={"log.level": "info"})
    c = tg.client("a")
    sid = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                         twiml='<Response><Pause length="600"/></Response>').sid
    tg.wait_for_status(c, sid, "in-progress", timeout=15)
    c.calls(sid).update(status="completed")
    story = _wait_story_end(tg, sid)
    # Two orders are both right: the answer to twigate's /hangup ends the call
    # (no Kaphila cause to tell), or Kaphila's call.ended for that hang-up,
    # posted while the answer is on its way, is handled first (a loaded
    # machine often does) - then the cause is Kaphila's for an API hang-up,
    # never an invented one.
    assert re.fullmatch(r"call ended: completed, \d+ s, (before any call\.ended from Kaphila"
                        r"|Kaphila cause 16 \(api_hangup\))", story[-1]), story


def test_access_log_is_off_by_default(make_twigate):
    tg = make_twigate(overrides={"log.level": "debug"})
    c = tg.client("a")
    sid = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML).sid
    tg.wait_for_status(c, sid, TERMINAL, timeout=15)
    list(c.calls.list(limit=5))
    assert _story(tg, sid), "the workload did not run"
    assert not _lines(tg, "access"), [m.group(0) for m in _lines(tg, "access")][:3]


def test_access_log_one_line_per_request_without_secrets(make_twigate):
    tg = make_twigate(overrides={"log.level": "info", "log.access": True})
    acct = tg.accounts["a"]
    c = tg.client("a")
    sid = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML).sid
    tg.wait_for_status(c, sid, TERMINAL, timeout=15)
    # A query value that must not reach the log, and a response whose size is known.
    marker = "+1415" + "7654321"
    r = tg.http("GET", tg.account_uri("a") + "/Calls.json",
                params={"To": marker, "PageSize": "7"})
    assert r.status_code == 200, r.text
    bad = tg.http("GET", tg.account_uri("a") + ".json", auth=(acct.sid, "wrong"))
    assert bad.status_code == 401
    token = re.search(r"/kaphila/events/([^?]+)",
                      tg.sim_get(sid)["requests"][0]["body"]["webhookUrl"]).group(1)

    def access():
        return [m for m in _lines(tg, "access")]
    wait_for(lambda: len(access()) >= 4, 10, message="too few access lines")
    log = tg.log_text()
    assert marker not in log and marker.replace("+", "%2B") not in log
    assert token not in log, "the Kaphila event token is in the log"

    shape = re.compile(r"(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) "
                       r"(?P<bytes>\d+) bytes (?P<us>\d+) us")
    seen = []
    for m in access():
        assert m["level"] == "INFO" and m["req"], m.group(0)
        assert not m["ca"] and not m["ac"], f"access line with call context: {m.group(0)}"
        f = shape.fullmatch(m["msg"])
        assert f, f"access line not in the documented shape: {m.group(0)}"
        seen.append(f)
    base = f"/2010-04-01/Accounts/{acct.sid}"
    create = [f for f in seen if f["method"] == "POST" and f["path"] == base + "/Calls.json"]
    assert create and create[0]["status"] == "201", [f.group(0) for f in seen]
    listing = [f for f in seen if f["path"] == base + "/Calls.json?To=*&PageSize=*"]
    assert listing and listing[0]["status"] == "200", [f.group(0) for f in seen]
    assert int(listing[0]["bytes"]) == len(r.content)
    assert any(f["path"] == base + ".json" and f["status"] == "401" for f in seen)
    events = [f for f in seen if f["path"].startswith("/kaphila/events/")]
    assert events and all(f["path"] == "/kaphila/events/*?CallSid=*" for f in events), \
        [f.group(0) for f in events]


def test_kaphila_reachable_line_carries_no_call(kaphila_sim, make_twigate):
    """The health probe's line is about no call. The engine thread last
    worked on a call whose creation failed while Kaphila was down; the
    "reachable" line that follows must not carry that call's context."""
    tg = make_twigate(external_sim=kaphila_sim, overrides={"log.level": "info"})

    def reach(word):
        return [m for m in _lines(tg, "engine") if m["msg"].startswith(f"Kaphila {word} ")]
    wait_for(lambda: reach("reachable"), 10, message="no 'Kaphila reachable' line")
    kaphila_sim.stop()
    wait_for(lambda: reach("unreachable"), 15, message="no 'Kaphila unreachable' line")
    r = tg.create_call_raw(To=fresh_number(), From=DEFAULT_FROM, Twiml=SHORT_TWIML)
    assert r.status_code == 201, r.text   # answered before the dial, which then fails
    failed = wait_for(lambda: [m for m in _lines(tg, "engine")
                               if m["msg"].startswith("origination failed")], 10)
    assert failed[0]["ca"], "the failed creation was logged without its CallSid"
    kaphila_sim.start()
    wait_for(lambda: len(reach("reachable")) >= 2, 15,
             message=f"no second 'Kaphila reachable' line; log:\n{tg.log_tail(20)}")
    for m in reach("reachable") + reach("unreachable"):
        assert not m["ca"] and not m["ac"], f"health line with call context: {m.group(0)}"
