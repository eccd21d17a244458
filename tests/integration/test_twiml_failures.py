"""The TwiML executor when a document cannot run as given (contract §8,
§10.3; docs/twiml.md; docs/compatibility.md, "TwiML documents"): a failed
fetch and the FallbackUrl with ErrorCode / ErrorUrl, a fallback failing too,
XML that is not well formed (12100) or whose root is not <Response> (12102),
schema warnings that do not stop the call (12200), answers by content type
(XML, HTML, plain text, audio; anything else is 12300), and a verb Kaphila
cannot do reported and skipped.

As in test_twiml.py, every test checks both sides with the helpers of
harness/ivr.py: the receiver's requests and the call's notifications, and
the simulator's transcript of what twigate asked Kaphila to do."""

import pytest

from harness.ivr import (APP_ERROR, assert_in_progress_request, create, event_urls, finish,
                         kaphila_requests, notes, routes, spoken, twiml)


def test_fallback_url_on_500(twigate, client, receiver):
    receiver.set("/broken", "<Response><Say>never</Say></Response>", status=500)
    receiver.set("/fallback", twiml(lambda r: r.say("Fallback speaking.")))
    call = create(client, receiver, "/broken", fallback_url=receiver.url("/fallback"))
    finish(twigate, client, call.sid)
    assert routes(receiver, call.sid) == ["/broken", "/fallback"]
    fb = receiver.requests("/fallback", call_sid=call.sid)[0]
    assert_in_progress_request(fb, call.sid)
    assert fb.params["ErrorCode"] == "11200"
    assert fb.params["ErrorUrl"] == receiver.url("/broken")
    assert kaphila_requests(twigate, call.sid) == [
        ("/voice", {"text": "Fallback speaking."}), ("/hangup", {})]
    got = notes(twigate, call.sid)
    assert [n["error_code"] for n in got] == ["11200"], got
    assert got[0]["request_url"] == receiver.url("/broken")


def test_fallback_failing_too_gives_application_error(twigate, client, receiver):
    receiver.set("/broken", "x", status=503)
    receiver.set("/fb", "<Response><Say>unclosed</Response>")
    call = create(client, receiver, "/broken", fallback_url=receiver.url("/fb"),
                  fallback_method="GET")
    finish(twigate, client, call.sid)
    assert [(r.route, r.method) for r in receiver.requests(call_sid=call.sid)] == [
        ("/broken", "POST"), ("/fb", "GET")]
    assert kaphila_requests(twigate, call.sid) == [
        ("/voice", {"text": APP_ERROR}), ("/hangup", {})]
    assert [n["error_code"] for n in notes(twigate, call.sid)] == ["11200", "12100"]


def test_invalid_twiml_without_fallback(twigate, client, receiver):
    receiver.set("/bad", "<Response><Say>Hello</Say><Pause></Response>")
    call = create(client, receiver, "/bad")
    done = finish(twigate, client, call.sid)
    assert done.status == "completed"
    assert kaphila_requests(twigate, call.sid) == [
        ("/voice", {"text": APP_ERROR}), ("/hangup", {})]
    got = notes(twigate, call.sid)
    assert [n["error_code"] for n in got] == ["12100"], got
    assert got[0]["log"] == "0"
    assert got[0]["request_url"] == receiver.url("/bad")


def test_wrong_root_is_12102(twigate, client, receiver):
    receiver.set("/bad", "<Reply><Say>Hello</Say></Reply>")
    call = create(client, receiver, "/bad")
    finish(twigate, client, call.sid)
    assert spoken(twigate, call.sid) == [APP_ERROR]
    assert [n["error_code"] for n in notes(twigate, call.sid)] == ["12102"]


def test_schema_warnings_do_not_stop_the_call(twigate, client, receiver):
    receiver.set("/voice", '<Response><Say colour="blue">Still spoken</Say><Bogus/></Response>')
    call = create(client, receiver, "/voice")
    finish(twigate, client, call.sid)
    assert spoken(twigate, call.sid) == ["Still spoken"]
    got = notes(twigate, call.sid)
    assert [n["error_code"] for n in got] == ["12200", "12200"], got
    assert all(n["log"] == "1" for n in got)


@pytest.mark.parametrize("ctype,body,expect", [
    ("text/plain; charset=utf-8", "Thanks for calling.\nGoodbye.",
     [("/voice", {"text": "Thanks for calling. Goodbye."}), ("/hangup", {})]),
    ("audio/mpeg", "ID3...", [("/play", {"file": "custom/hold"}), ("/hangup", {})]),
    ("application/xml", "<Response><Say>xml</Say></Response>",
     [("/voice", {"text": "xml"}), ("/hangup", {})]),
    ("text/html", "<Response><Say>html</Say></Response>",
     [("/voice", {"text": "html"}), ("/hangup", {})]),
])
def test_content_types(twigate, client, receiver, ctype, body, expect):
    receiver.set("/media/hold.mp3", body, content_type=ctype)
    call = create(client, receiver, "/media/hold.mp3")
    finish(twigate, client, call.sid)
    assert kaphila_requests(twigate, call.sid) == expect
    assert notes(twigate, call.sid) == []


@pytest.mark.parametrize("ctype", ["application/json", None])
def test_unusable_content_type_is_12300(twigate, client, receiver, ctype):
    receiver.set("/voice", "<Response><Say>never</Say></Response>", content_type=ctype)
    call = create(client, receiver, "/voice")
    finish(twigate, client, call.sid)
    assert spoken(twigate, call.sid) == [APP_ERROR]
    assert [n["error_code"] for n in notes(twigate, call.sid)] == ["12300"]


def test_unsupported_verb_is_reported_and_skipped(twigate, client, receiver):
    def build(r):
        r.say("Before")
        r.dial("+15558675310")
        r.say("After")
    receiver.set("/voice", twiml(build))
    call = create(client, receiver, "/voice")
    finish(twigate, client, call.sid)
    assert kaphila_requests(twigate, call.sid) == [
        ("/voice", {"text": "Before"}), ("/voice", {"text": "After"}), ("/hangup", {})]
    got = notes(twigate, call.sid)
    assert [n["error_code"] for n in got] == ["12200"], got
    assert got[0]["log"] == "0"
    assert "<Dial>" in got[0]["message"] and "not supported on Kaphila" in got[0]["message"]
    assert got[0]["request_url"] == receiver.url("/voice")
    assert ("TWIGATE", "twiml/unsupported/verb") in event_urls(twigate, call.sid)

